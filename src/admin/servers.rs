//! `SHOW SERVERS`: server connections: those running a client's statements now (with the
//! client's pid) and the idle ones in the pools.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let snap = c.shared.topology.snapshot();
    let name = |node: usize| snap.nodes.get(node).map(|n| n.name.clone());
    let mut rows = Rows::new(&["node", "server_pid", "state", "client_pid", "user", "database"]);
    for (pid, h) in c.shared.cancels.list() {
        if let Some((node, server_pid, _)) = h.target() {
            rows.push(vec![
                name(node),
                text(server_pid),
                text("active"),
                text(pid),
                text(&h.info.user),
                text(&h.info.database),
            ]);
        }
    }
    for p in c.shared.pools.list() {
        for server_pid in &p.idle {
            rows.push(vec![name(p.node), text(server_pid), text("idle"), None, text(&p.user), text(&p.database)]);
        }
    }
    Reply::Rows(rows)
}
