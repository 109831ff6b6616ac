//! `DRAIN <node>` / `UNDRAIN <node>`: take a replica out of the read rotation for
//! maintenance (new reads go elsewhere at once; transactions already on it finish), and put
//! it back. Writes never depend on it.

use super::rows::Reply;
use super::Console;
use crate::protocol::sqlstate;

pub fn run(c: &Console, node: &str, drained: bool) -> Reply {
    if !c.shared.topology.set_drained(node, drained) {
        return Reply::error(sqlstate::UNDEFINED_OBJECT, format!("no node named {node:?}"));
    }
    let verb = if drained { "DRAIN" } else { "UNDRAIN" };
    tracing::warn!(user = %c.user, node, "{verb}");
    Reply::done(verb)
}
