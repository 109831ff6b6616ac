//! `pgroute explain`: where a statement would go and why, offline, for DBAs testing rules
//! before they reload; and the console's `EXPLAIN`, the same report against the running
//! proxy's rules and node health. The volatility of user functions is not looked up, so
//! such a read is shown as it would be routed if the lookup failed: as a write.

use std::fmt::Write;
use std::time::Instant;

use crate::classify::{hint, Classifier};
use crate::config::{Config, Role};
use crate::router::{self, SessionView};
use crate::rules::{Context, Rules};
use crate::topology::{Snapshot, Topology};

/// Offline: the configuration's rules, every node assumed healthy.
pub fn explain(config: &Config, sql: &str, ctx: &Context) -> String {
    let classifier = Classifier::with_write_functions(0, &config.routing.write_functions);
    let rules = Rules::from_config(&config.routing, &config.groups(), None);
    let topology = Topology::from_config(config, true);
    explain_with(&classifier, &rules, &topology.snapshot(), sql, ctx)
}

/// The report for given rules and topology: the console's `EXPLAIN` passes the running
/// proxy's, so it answers with the nodes' health now.
pub fn explain_with(classifier: &Classifier, rules: &Rules, snapshot: &Snapshot, sql: &str, ctx: &Context) -> String {
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
    match router::decide(&class, &read, SessionView::default(), snapshot, Instant::now(), 0) {
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
        assert_eq!(explain(&cfg, "SELECT 1", &ctx), "route: replica (pg1)\nreason: default_read\n");
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
