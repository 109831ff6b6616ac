//! The routing decision: a pure function of what the statement is, the session's state and
//! a topology snapshot. No I/O, no clock reads, no randomness: the caller passes `now` and
//! a round-robin `ticket`, so every rule is table-tested below.
//!
//! Invariants: a write never goes to a node whose role is not primary; a read goes only to
//! a replica of its group (the default group unless a rule or hint names one); when it has
//! no usable replica it goes to the primary, or for a group read where its `fallback`
//! says; with no primary, writes get an error.

use std::time::Instant;

use std::sync::Arc;

use crate::classify::{Access, Class};
use crate::config::{Fallback, Role, Target};
use crate::protocol::{sqlstate, PgError};
use crate::rules::{ReadRoute, DEFAULT_MASK};
use crate::topology::{NodeState, Snapshot};

/// What the session knows that matters for routing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionView {
    /// The node of the server connection the client is in a transaction on, if any.
    pub in_transaction_on: Option<usize>,
    /// That transaction runs on a connection pgroute chose as a replica for reads (it
    /// began `BEGIN READ ONLY` there): its writes go there too, and the server refuses
    /// them with its own error, as on a direct connection. A node in recovery can write
    /// nothing.
    pub read_only_transaction: bool,
    /// The session is pinned to the primary (LISTEN, temp table, ...).
    pub pinned: bool,
    /// Only part of the unit has arrived (no Sync yet, e.g. Parse/Describe/Flush): what
    /// follows will run on the same server in the same implicit transaction, unseen now.
    pub partial_unit: bool,
    /// Read-your-writes: what this session's reads need after its last committed write.
    pub causal: Causal,
    /// The session's transactions are serializable (its settings, or its login's role
    /// and database defaults): a standby refuses them, so reads go to the primary.
    pub serializable: bool,
}

/// What a session that wrote needs from the node its reads go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Causal {
    /// Never wrote, or every replica has caught up since.
    #[default]
    None,
    /// The primary (window mode, or the commit LSN not known yet).
    Primary,
    /// A replica that has replayed at least this LSN on this timeline.
    Lsn { lsn: u64, timeline: Option<u32> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node: usize,
    pub reason: Reason,
}

/// Why a decision went where it did. Deciding allocates nothing: the text for logs and
/// metrics comes from [`Decision::label`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The statement's own class decided (its `reason` says why: a write, a pin).
    Statement,
    /// A read, placed by the read rules (hint, rule, table/function lists, default).
    Read(Arc<str>),
    InTransaction,
    Pinned,
    NoReplica,
    /// The unit's remaining statements are not known yet: primary, where anything may run.
    PartialUnit,
    /// No replica is known to have the commits the read's causal scope needs yet.
    Causal,
    /// No replica is within the read's `max_lag`.
    MaxLag,
    /// The session's reads run serializable, which only the primary does.
    Serializable,
    /// Set by the session for units with nothing to classify (Sync, Close, ...): they
    /// stay with the server that runs the client's work now.
    FollowsActive,
}

impl Decision {
    /// The reason as a metric label: the same, with statement reasons folded to a fixed
    /// set (`classify::reason_label`).
    pub fn metric_label<'a>(&'a self, class: &'a Class) -> &'a str {
        match &self.reason {
            Reason::Statement => crate::classify::reason_label(&class.reason),
            _ => self.label(class),
        }
    }

    pub fn label<'a>(&'a self, class: &'a Class) -> &'a str {
        match &self.reason {
            Reason::Statement => &class.reason,
            Reason::Read(why) => why,
            Reason::InTransaction => "in_transaction",
            Reason::Pinned => "pinned",
            Reason::NoReplica => "no_replica",
            Reason::PartialUnit => "partial_unit",
            Reason::Causal => "causal",
            Reason::MaxLag => "max_lag",
            Reason::Serializable => "serializable",
            Reason::FollowsActive => "follows_active",
        }
    }
}

/// How to choose among usable replicas: a round-robin ticket, and with
/// `least_connections` the connections in use per node.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick<'a> {
    pub ticket: u64,
    pub loads: Option<&'a [u32]>,
}

impl From<u64> for Pick<'_> {
    fn from(ticket: u64) -> Self {
        Pick { ticket, loads: None }
    }
}

pub fn decide<'a>(
    class: &Class,
    read: &ReadRoute,
    session: SessionView,
    topo: &Snapshot,
    now: Instant,
    pick: impl Into<Pick<'a>>,
) -> Result<Decision, PgError> {
    let pick = pick.into();
    if let Some(node) = session.in_transaction_on {
        let demoted = topo.split_brain || topo.nodes.get(node).is_none_or(|n| n.role != Role::Primary);
        let in_recovery = topo.nodes.get(node).is_some_and(|n| n.role == Role::Replica && n.usable(now));
        if class.is_write() && demoted && !(session.read_only_transaction && in_recovery) {
            return Err(PgError::error(
                sqlstate::CONNECTION_FAILURE,
                "pgroute: the node this transaction runs on is not the confirmed primary; write refused",
            )
            .with_hint(format!("Node states: {}. Roll back and retry.", topo.describe())));
        }
        return Ok(Decision { node, reason: Reason::InTransaction });
    }
    let to_primary = |reason: Reason| match topo.primary(now) {
        Some(node) => Ok(Decision { node, reason }),
        None => Err(PgError::error(sqlstate::CONNECTION_FAILURE, "pgroute: no primary available")
            .with_hint(format!("Node states: {}.", topo.describe()))),
    };
    if session.pinned {
        return to_primary(Reason::Pinned);
    }
    if session.partial_unit {
        return to_primary(Reason::PartialUnit);
    }
    if class.access == Access::Write || class.pins.is_some() {
        return to_primary(Reason::Statement);
    }
    if read.target == Target::Primary {
        return to_primary(Reason::Read(read.reason.clone()));
    }
    if session.serializable {
        return to_primary(Reason::Serializable);
    }
    if session.causal == Causal::Primary {
        // With no usable replica there is no position worth learning (`no_replica`).
        let any_replica = pick_replica_where(topo, now, pick, |_| true).is_some();
        return to_primary(if any_replica { Reason::Causal } else { Reason::NoReplica });
    }
    let no_replica = |why: Reason| {
        if why == Reason::NoReplica && topo.no_replica_error {
            return Err(PgError::error(
                sqlstate::CONNECTION_FAILURE,
                "pgroute: no replica is usable for reads (when_no_replica = \"error\")",
            )
            .with_hint(format!("Node states: {}.", topo.describe())));
        }
        to_primary(why)
    };
    let Some(group) = read.group() else {
        return place_read(read, session, topo, now, pick, DEFAULT_MASK).or_else(no_replica);
    };
    match (place_read(read, session, topo, now, pick, group.mask), group.fallback) {
        (Ok(d), _) => Ok(d),
        (Err(_), Fallback::Default) => place_read(read, session, topo, now, pick, DEFAULT_MASK).or_else(no_replica),
        (Err(why), Fallback::Primary) => to_primary(why),
        (Err(_), Fallback::Error) => Err(PgError::error(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: no replica of group \"{}\" can take this read (fallback = \"error\")", group.name),
        )
        .with_hint(format!("Node states: {}.", topo.describe()))),
    }
}

/// A read on a replica of the groups in `mask` that meets what the session and the rule
/// need (the session's writes replayed, `max_lag`); when none does, why not.
fn place_read(
    read: &ReadRoute,
    session: SessionView,
    topo: &Snapshot,
    now: Instant,
    pick: Pick,
    mask: u64,
) -> Result<Decision, Reason> {
    let fresh_enough =
        |n: &NodeState| n.groups & mask != 0 && read.max_lag.is_none_or(|m| n.lag.is_some_and(|l| l <= m));
    let (found, otherwise) = match session.causal {
        Causal::Lsn { lsn, timeline } => {
            let caught_up = |n: &NodeState| {
                n.wal.replay_lsn.is_some_and(|r| r >= lsn)
                    && (timeline.is_none() || n.wal.timeline == timeline)
                    && fresh_enough(n)
            };
            match pick_replica_where(topo, now, pick, caught_up) {
                Some(node) => (Some(node), Reason::Causal),
                // No replica that could catch up at all (none configured, none usable):
                // nothing to wait for, as for any read without one.
                None if pick_replica_where(topo, now, pick, fresh_enough).is_none() => (None, Reason::NoReplica),
                None => (None, Reason::Causal),
            }
        }
        _ if read.max_lag.is_some() => (pick_replica_where(topo, now, pick, fresh_enough), Reason::MaxLag),
        _ => (pick_replica_where(topo, now, pick, fresh_enough), Reason::NoReplica),
    };
    found.map(|node| Decision { node, reason: Reason::Read(read.reason.clone()) }).ok_or(otherwise)
}

/// Weighted round robin over usable replicas that pass `also` (`ticket` walks the weight
/// line), or with loads, the least loaded per unit of weight (ties rotate by ticket).
fn pick_replica_where(topo: &Snapshot, now: Instant, pick: Pick, also: impl Fn(&NodeState) -> bool) -> Option<usize> {
    let usable = || {
        topo.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == Role::Replica && n.weight > 0 && !n.drained && n.usable(now) && also(n))
    };
    let ticket = pick.ticket;
    if let (true, Some(loads)) = (topo.least_connections, pick.loads) {
        let score = |i: usize, w: u32| u64::from(loads.get(i).copied().unwrap_or(0)) * 1_000_000 / u64::from(w);
        let best = usable().map(|(i, n)| score(i, n.weight)).min()?;
        let ties: Vec<usize> = usable().filter(|&(i, n)| score(i, n.weight) == best).map(|(i, _)| i).collect();
        return ties.get((ticket % ties.len() as u64) as usize).copied();
    }
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
