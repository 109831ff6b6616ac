//! `SHOW ROUTES`: routing decisions since start, counted by node and reason (the same
//! counters as the `pgroute_routes_total` metric).

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(_: &Console) -> Reply {
    let mut rows = Rows::new(&["node", "reason", "count"]);
    for (node, reason, count) in crate::metrics::routes() {
        rows.push(vec![text(node), text(reason), text(count)]);
    }
    Reply::Rows(rows)
}
