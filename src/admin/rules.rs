//! `SHOW RULES`: the `[[routing.rules]]` in force, in evaluation order, with how many reads
//! each has decided since start.

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
        "matched",
    ]);
    for (i, r) in config.routing.rules.iter().enumerate() {
        let reason = format!("rule:{}", r.name.get_ref());
        let matched: u64 = routes.iter().filter(|(_, why, _)| *why == reason).map(|(_, _, n)| n).sum();
        let target = match r.route {
            crate::config::Target::Primary => "primary",
            crate::config::Target::Replica => "replica",
        };
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
            text(matched),
        ]);
    }
    Reply::Rows(rows)
}
