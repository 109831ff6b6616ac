//! `SHOW CLIENTS`: logged-in clients with the pid pgroute gave them (the one `KILL` and
//! cancel requests use), who they are and whether a statement of theirs is running.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let snap = c.shared.topology.snapshot();
    let mut rows = Rows::new(&["pid", "user", "database", "application_name", "addr", "connected", "state", "node"]);
    for (pid, h) in c.shared.cancels.list() {
        let target = h.target();
        let state = match (h.info.console, target) {
            (true, _) => "console",
            (false, Some(_)) => "active",
            (false, None) => "idle",
        };
        let connected = h.info.connected.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        rows.push(vec![
            text(pid),
            text(&h.info.user),
            text(&h.info.database),
            text(&h.info.application_name),
            h.info.addr.map(|a| a.to_string()),
            text(connected),
            text(state),
            target.and_then(|(node, _, _)| snap.nodes.get(node).map(|n| n.name.clone())),
        ]);
    }
    Reply::Rows(rows)
}
