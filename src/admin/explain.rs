//! `EXPLAIN <sql>`: where the statement would go now and why, from the same
//! classification, rules and routing decision the sessions use, against the nodes' health
//! now (a fresh session that has written nothing, for the console user's name), with the
//! position its causal scope needs now.

use super::rows::{text, Reply, Rows};
use super::Console;
use crate::rules::Context;

pub fn run(c: &Console, sql: &str) -> Reply {
    let ctx = Context { application_name: "", user: &c.user, database: "" };
    let snapshot = c.shared.topology.snapshot();
    let causality = crate::explain::Causality {
        default_scope: c.shared.config().routing.causal_scope,
        acked: Some(c.shared.acked.get()),
    };
    let rules = c.shared.rules();
    let report = crate::explain::explain_with(&c.shared.classifier, &rules, &snapshot, &causality, sql, &ctx);
    let mut rows = Rows::new(&["explain"]);
    for line in report.lines() {
        rows.push(vec![text(line)]);
    }
    Reply::Rows(rows)
}
