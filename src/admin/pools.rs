//! `SHOW POOLS`: server connection pools per (node, user, database, startup settings),
//! with their size, connections on loan and idle ones.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let snap = c.shared.topology.snapshot();
    let mut rows = Rows::new(&["node", "user", "database", "purpose", "startup", "size", "in_use", "idle"]);
    for p in c.shared.pools.list() {
        rows.push(vec![
            snap.nodes.get(p.node).map(|n| n.name.clone()),
            text(&p.user),
            text(&p.database),
            text(if p.catalog { "catalog" } else { "clients" }),
            text(format!("{:016x}", p.startup_key)),
            text(p.size),
            text(p.in_use),
            text(p.idle.len()),
        ]);
    }
    Reply::Rows(rows)
}
