//! `SHOW ROUTES`: routing decisions since start, counted by node, reason and (for reads
//! placed by the read rules) causal scope: the `pgroute_routes_total` counters.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(_: &Console) -> Reply {
    let mut rows = Rows::new(&["node", "reason", "scope", "count"]);
    for (node, reason, scope, count) in crate::metrics::routes() {
        rows.push(vec![text(node), text(reason), text(scope), text(count)]);
    }
    Reply::Rows(rows)
}
