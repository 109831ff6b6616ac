//! The routing decision: a pure function of what the statement is, the session's state and
//! a topology snapshot. No I/O, no clock reads, no randomness: the caller passes `now` and
//! a round-robin `ticket`, so every rule is table-tested below.
//!
//! Invariants: a write never goes to a node whose role is not primary; when a read has no
//! usable replica it goes to the primary; with no primary, writes get an error.

use std::time::Instant;

use crate::classify::{Access, Class};
use crate::config::Role;
use crate::protocol::{sqlstate, PgError};
use crate::topology::Snapshot;

/// What the session knows that matters for routing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionView {
    /// The node of the server connection the client is in a transaction on, if any.
    pub in_transaction_on: Option<usize>,
    /// The session is pinned to the primary (LISTEN, temp table, ...).
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node: usize,
    pub reason: String,
}

pub fn decide(
    class: &Class,
    session: SessionView,
    topo: &Snapshot,
    now: Instant,
    ticket: u64,
) -> Result<Decision, PgError> {
    if let Some(node) = session.in_transaction_on {
        return Ok(Decision {
            node,
            reason: "in_transaction".into(),
        });
    }
    let to_primary = |reason: String| match topo.primary() {
        Some(node) => Ok(Decision { node, reason }),
        None => Err(PgError::error(
            sqlstate::CONNECTION_FAILURE,
            "pgroute: no primary node available",
        )
        .with_hint("Check the [[nodes]] roles in the pgroute configuration.")),
    };
    if session.pinned {
        return to_primary("pinned".into());
    }
    if class.access == Access::Write || class.pins.is_some() {
        return to_primary(class.reason.clone());
    }
    match pick_replica(topo, now, ticket) {
        Some(node) => Ok(Decision {
            node,
            reason: class.reason.clone(),
        }),
        None => to_primary("no_replica".into()),
    }
}

/// Weighted round robin over usable replicas: `ticket` walks the weight line.
fn pick_replica(topo: &Snapshot, now: Instant, ticket: u64) -> Option<usize> {
    let usable = || {
        topo.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.role == Role::Replica && n.weight > 0 && n.usable(now))
    };
    let total: u64 = usable().map(|(_, n)| u64::from(n.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = ticket % total;
    for (i, n) in usable() {
        if point < u64::from(n.weight) {
            return Some(i);
        }
        point -= u64::from(n.weight);
    }
    None
}

#[cfg(test)]
mod tests;
