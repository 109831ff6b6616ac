//! `pgroute explain`: where a statement would go and why, offline, for DBAs testing rules
//! before they reload; and the console's `EXPLAIN`, the same report against the running
//! proxy's rules and node health. The volatility of user functions is not looked up, so
//! such a read is shown as it would be routed if the lookup failed: as a write.

use std::fmt::Write;
use std::time::Instant;

use crate::acked::AckedState;
use crate::classify::{hint, Classifier};
use crate::config::{CausalScope, Config, Role, Target};
use crate::router::{self, Causal, SessionView};
use crate::rules::{Context, Rules};
use crate::topology::{Snapshot, Topology};

/// What a read's causal scope is checked against: the configured default, and for the
/// running proxy the commits it acknowledged so far.
pub struct Causality {
    pub default_scope: CausalScope,
    /// `None` offline: nothing is known of acknowledged commits.
    pub acked: Option<AckedState>,
}

/// Offline: the configuration's rules, every node assumed healthy.
pub fn explain(config: &Config, sql: &str, ctx: &Context) -> String {
    let classifier = Classifier::with_write_functions(0, &config.routing.write_functions);
    let rules = Rules::from_config(&config.routing, &config.groups(), None);
    let topology = Topology::from_config(config, true);
    let causality = Causality { default_scope: config.routing.causal_scope, acked: None };
    explain_with(&classifier, &rules, &topology.snapshot(), &causality, sql, ctx)
}

/// The report for given rules and topology: the console's `EXPLAIN` passes the running
/// proxy's, so it answers with the nodes' health and the acknowledged position now.
pub fn explain_with(
    classifier: &Classifier,
    rules: &Rules,
    snapshot: &Snapshot,
    causality: &Causality,
    sql: &str,
    ctx: &Context,
) -> String {
    let mut class = classifier.classify(sql);
    let mut out = String::new();
    if !class.is_write() {
        let unknown: Vec<String> = rules.unknown_functions(&class).map(|f| f.display()).collect();
        if !unknown.is_empty() {
            let _ = writeln!(out, "functions: {}: unknown: treated as write", unknown.join(", "));
            let first = rules.unknown_functions(&class).next().cloned();
            if let Some(f) = first {
                class = std::sync::Arc::new((*class).clone().into_volatile_write(&f));
            }
        }
    }
    let read = rules.route_read(&class, sql, &hint(sql), ctx);
    let mut view = SessionView::default();
    if !class.is_write() && class.pins.is_none() && read.target == Target::Replica {
        let scope = read.scope.unwrap_or(causality.default_scope);
        let chosen = if read.scope.is_some() { "hint or rule" } else { "default" };
        let _ = writeln!(out, "causal scope: {} ({chosen})", scope.label());
        let acked = causality.acked.and_then(|a| a.position);
        let needs = match (scope, causality.acked.is_some(), acked) {
            (CausalScope::None, ..) => "nothing beyond the lag threshold".to_string(),
            (CausalScope::Session, ..) => "the session's own last commit and its tagged keys' commits".to_string(),
            (_, false, _) => "every commit acknowledged through this pgroute before the read arrives".to_string(),
            (_, true, None) => "nothing acknowledged through this pgroute yet".to_string(),
            (_, true, Some((lsn, timeline))) => {
                view.causal = Causal::Lsn { lsn, timeline };
                let tl = timeline.map_or("?".to_string(), |t| t.to_string());
                format!("{tl}/{lsn:X}, the latest commit acknowledged through this pgroute")
            }
        };
        let _ = writeln!(out, "needs: {needs}");
        if scope == CausalScope::Cluster {
            let _ = writeln!(out, "needs: the primary's position when the read arrives (asked of the primary)");
        }
    }
    match router::decide(&class, &read, view, snapshot, Instant::now(), 0) {
        Ok(d) => {
            let node = &snapshot.nodes[d.node];
            let role = if node.role == Role::Primary { "primary" } else { "replica" };
            let _ = writeln!(out, "route: {role} ({})", node.name);
            let _ = writeln!(out, "reason: {}", d.label(&class));
        }
        Err(e) => {
            let _ = writeln!(out, "route: error {}: {}", e.code, e.message);
        }
    }
    if let Some(pin) = &class.pins {
        let _ = writeln!(out, "pins the session to the primary: {pin}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_route_and_reason_offline() {
        let cfg = Config::parse(
            r#"
[routing]
primary_tables = ["balances"]
[[nodes]]
name = "pg0"
host = "h"
port = 1
role = "primary"
[[nodes]]
name = "pg1"
host = "h"
port = 2
role = "replica"
"#,
            "t.toml",
        )
        .unwrap();
        let ctx = Context { application_name: "", user: "app", database: "app" };
        assert_eq!(
            explain(&cfg, "SELECT 1", &ctx),
            "causal scope: instance (default)\n\
             needs: every commit acknowledged through this pgroute before the read arrives\n\
             route: replica (pg1)\nreason: default_read\n"
        );
        assert!(explain(&cfg, "/* pgroute: scope=none */ SELECT 1", &ctx)
            .starts_with("causal scope: none (hint or rule)\nneeds: nothing beyond the lag threshold\n"));
        assert_eq!(
            explain(&cfg, "SELECT * FROM balances", &ctx),
            "route: primary (pg0)\nreason: primary_tables:balances\n"
        );
        assert_eq!(
            explain(&cfg, "SELECT my_fn()", &ctx),
            "functions: my_fn: unknown: treated as write\nroute: primary (pg0)\nreason: write:function my_fn (volatile)\n"
        );
        assert!(explain(&cfg, "LISTEN x", &ctx).ends_with("pins the session to the primary: listen\n"));
    }
}
