//! `SHOW RULES`: the `[[routing.rules]]` in force, in evaluation order, with how many reads
//! each has decided since start, and for a rule with `max_concurrent` its sessions running
//! and waiting in line, those refused (`53300`) and the time spent waiting.

use std::sync::atomic::Ordering::Relaxed;

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let config = c.shared.config();
    let routes = crate::metrics::routes();
    let mut rows = Rows::new(&[
        "position",
        "name",
        "route",
        "application_name",
        "user",
        "database",
        "pattern",
        "tables",
        "functions",
        "max_lag_ms",
        "group",
        "fallback",
        "max_concurrent",
        "queue_timeout_ms",
        "statement_timeout_ms",
        "reserve",
        "running",
        "queued",
        "admitted",
        "rejected",
        "wait_ms",
        "matched",
    ]);
    for (i, r) in config.routing.rules.iter().enumerate() {
        let reason = format!("rule:{}", r.name.get_ref());
        let matched: u64 = routes.iter().filter(|(_, why, _, _)| *why == reason).map(|(_, _, _, n)| n).sum();
        let target = match r.route {
            crate::config::Target::Primary => "primary",
            crate::config::Target::Replica => "replica",
        };
        // Only capped rules have gauges (a rule's name is not registered otherwise).
        let capped = r.max_concurrent.map(|_| crate::metrics::rule_gauges(r.name.get_ref()));
        let gauge = |f: fn(&crate::metrics::RuleGauges) -> u64| capped.as_ref().map(|g| f(g).to_string());
        let group = r.group.as_ref().map(|g| g.get_ref().clone());
        let fallback = group.as_ref().map(|_| format!("{:?}", r.fallback.unwrap_or_default()).to_lowercase());
        rows.push(vec![
            text(i + 1),
            text(r.name.get_ref()),
            text(target),
            r.application_name.clone(),
            r.user.clone(),
            r.database.clone(),
            r.pattern.as_ref().map(|p| p.get_ref().clone()),
            (!r.tables.is_empty()).then(|| r.tables.join(",")),
            (!r.functions.is_empty()).then(|| r.functions.join(",")),
            r.max_lag.map(|l| l.as_millis().to_string()),
            group,
            fallback,
            r.max_concurrent.map(|m| m.to_string()),
            r.max_concurrent.map(|_| r.queue_timeout().as_millis().to_string()),
            r.statement_timeout.map(|t| t.as_millis().to_string()),
            text(r.reserve),
            gauge(|g| g.running.load(Relaxed).max(0) as u64),
            gauge(|g| g.queued.load(Relaxed).max(0) as u64),
            gauge(|g| g.admitted.load(Relaxed)),
            gauge(|g| g.rejected.load(Relaxed)),
            gauge(|g| g.wait_micros.load(Relaxed) / 1000),
            text(matched),
        ]);
    }
    Reply::Rows(rows)
}
