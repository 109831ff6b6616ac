//! `UNFENCE <node>`: lift the timeline fencing of a node (an old primary the monitor saw
//! claim primary on a lower timeline) after an operator rejoined it deliberately. Logged at
//! WARN with who did it. A node that still claims primary on an old timeline is fenced
//! again at the next probe.

use super::rows::Reply;
use super::Console;
use crate::protocol::sqlstate;

pub fn run(c: &Console, node: &str) -> Reply {
    if !c.shared.topology.request_unfence(node) {
        return Reply::error(sqlstate::UNDEFINED_OBJECT, format!("no fenced node named {node:?}"));
    }
    tracing::warn!(user = %c.user, node, "UNFENCE: timeline fencing lifted by an administrator");
    Reply::done("UNFENCE")
}
