//! `SHOW STATS`: per node since start: units (queries) answered, transactions ended, bytes
//! each way, and the average time from forwarding a unit to its ReadyForQuery.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let snap = c.shared.topology.snapshot();
    let mut rows = Rows::new(&["node", "queries", "transactions", "bytes_sent", "bytes_received", "avg_query_us"]);
    for (i, n) in snap.nodes.iter().enumerate() {
        let t = c.shared.stats.totals(i);
        rows.push(vec![
            text(&n.name),
            text(t.queries),
            text(t.transactions),
            text(t.bytes_sent),
            text(t.bytes_received),
            text(t.busy_us.checked_div(t.queries).unwrap_or(0)),
        ]);
    }
    Reply::Rows(rows)
}
