//! `SHOW NODES`: every node's role and whether it is usable now, or why not, with its lag,
//! timeline and the age of the probe behind the verdict.

use std::time::Instant;

use super::rows::{text, Reply, Rows};
use super::Console;
use crate::config::Role;

pub fn run(c: &Console) -> Reply {
    let snap = c.shared.topology.snapshot();
    let now = Instant::now();
    let primary_lsn = snap.primary(now).and_then(|p| snap.nodes[p].wal.current_lsn);
    let mut rows = Rows::new(&[
        "name",
        "host",
        "port",
        "role",
        "usable",
        "reason",
        "lag_ms",
        "lag_bytes",
        "timeline",
        "fenced",
        "banned",
        "drained",
        "weight",
        "probe_age_ms",
    ]);
    for (i, n) in snap.nodes.iter().enumerate() {
        let addr = c.shared.topology.addr(i);
        let role = match (n.removed, n.role) {
            (true, _) => "removed",
            (false, Role::Primary) => "primary",
            (false, _) => "replica",
        };
        let lag_bytes = match (n.role, primary_lsn, n.wal.replay_lsn) {
            (Role::Replica, Some(p), Some(r)) => text(p.saturating_sub(r)),
            _ => None,
        };
        rows.push(vec![
            text(&n.name),
            addr.as_ref().map(|a| a.host.clone()),
            addr.as_ref().map(|a| a.port.to_string()),
            text(role),
            text(n.usable(now)),
            text(n.why),
            n.lag.map(|l| l.as_millis().to_string()),
            lag_bytes,
            n.wal.timeline.map(|t| t.to_string()),
            text(n.why == "fenced"),
            text(n.down_until.is_some_and(|t| now < t)),
            text(n.drained),
            text(n.weight),
            n.wal.started.map(|t| now.saturating_duration_since(t).as_millis().to_string()),
        ]);
    }
    Reply::Rows(rows)
}
