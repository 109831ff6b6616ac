//! What a read must see (`causal_scope`), and learning positions fast enough that it
//! rarely has to leave the replicas.
//!
//! A requirement is a [`Causal`]: nothing, the primary, or a replica that replayed a WAL
//! position on a timeline. By scope, a read needs:
//! - `none`: only what its causal token names;
//! - `session`: also the session's own last commit (`commit_lsn.rs`: its exact position,
//!   asked behind the commit) and its tagged keys' latest commits through this instance;
//! - `instance`: also every commit this pgroute acknowledged to any client before the
//!   read arrived ([`crate::acked::Acked`], raised before each acknowledgement);
//! - `cluster`: also every commit the primary had made at the read's arrival (through
//!   other instances, or directly): its position from a sample sent after the arrival.
//!
//! A position pgroute knows only as "the primary's, sampled after time T" (a commit whose
//! position was not learned, a token from before a failover, a cluster-scope arrival)
//! comes from the topology's primary sample; when none is recent enough, the session asks
//! the primary ([`Session::ask_primary_position`], one round trip on a pooled connection,
//! one at a time: reads that arrived while one was asked share its answer) rather than
//! send the read to the primary. While a read waits for a replica to reach a position
//! (`causal_wait`), `health::ReplayWatch` asks the replicas for their replay positions
//! back to back.

use std::time::Instant;

use super::commit_lsn::{parse_lsn, QUERY as INSERT_POSITION_QUERY};
use super::Session;
use crate::acked::{Acked, KeyCommit};
use crate::classify::After;
use crate::config::{CausalScope, Role};
use crate::router::Causal;
use crate::topology::Snapshot;

/// A read's requirement, and whether it fell back to the primary only because a primary
/// position it needs is not known yet (asking the primary would settle it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Need {
    pub causal: Causal,
    pub position_unknown: bool,
}

/// What the read brings: when it arrived, the scope it reads in, its tagged keys' latest
/// local commit, and its causal token.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadFacts {
    pub arrived: Instant,
    pub scope: CausalScope,
    pub keys_since: Option<KeyCommit>,
    pub after: Option<After>,
}

/// Read-your-writes: this session's last committed write and what is known of its
/// position.
#[derive(Default)]
pub(super) struct Ryw {
    /// A commit-position query is in flight: reads wait for its answer.
    pub position_pending: bool,
    /// Its answer: the LSN and the node's timeline.
    pub position_answer: Option<(u64, Option<u32>)>,
    /// The unit before it committed a data write: the answer is this session's position.
    pub for_commit: bool,
    /// When the session's last write committed, and the primary LSN known to be at or past
    /// it (from the first probe begun after the commit).
    pub dirty_since: Option<Instant>,
    pub commit_lsn: Option<(u64, Option<u32>)>,
    /// Tagged keys of the commit whose position query is in flight, and the time they
    /// were recorded with.
    pub keys_awaiting_position: Option<(Vec<String>, Instant)>,
}

impl ReadFacts {
    /// `keyed`: the read carries key tags (they count from `session` scope up).
    pub(super) fn new(
        session: &Session,
        arrived: Instant,
        scope: CausalScope,
        keyed: Option<&[String]>,
        after: Option<After>,
    ) -> Self {
        let keys_since = keyed
            .filter(|k| !k.is_empty() && scope != CausalScope::None)
            .and_then(|keys| session.shared.keys.since(keys, arrived));
        ReadFacts { arrived, scope, keys_since, after }
    }
}

impl Session {
    /// What this read needs in its scope: its causal token; from `session` up the
    /// session's own last commit and its keys' commits; from `instance` up every
    /// acknowledged commit; in `cluster` the primary's position at its arrival.
    pub(super) fn causal(&mut self, snap: &Snapshot, now: Instant, facts: ReadFacts) -> Need {
        let mut unknown = false;
        let mut causal = token_causal(snap, now, facts.arrived, facts.after, &mut unknown);
        if facts.scope != CausalScope::None {
            let own = self.own_causal(snap, now, &mut unknown);
            let keyed = match facts.keys_since {
                None => Causal::None,
                Some(k) => match k.position {
                    Some((lsn, timeline)) if timeline == primary_timeline(snap, now) => Causal::Lsn { lsn, timeline },
                    _ => position_after(snap, now, k.at, &mut unknown),
                },
            };
            causal = stricter(stricter(own, keyed), causal);
        }
        if matches!(facts.scope, CausalScope::Instance | CausalScope::Cluster) {
            causal = stricter(causal, acked_causal(&self.shared.acked, snap, now, &mut unknown));
        }
        if facts.scope == CausalScope::Cluster {
            causal = stricter(causal, position_after(snap, now, facts.arrived, &mut unknown));
        }
        Need { causal, position_unknown: unknown && causal == Causal::Primary }
    }

    /// What this session's reads need after its own last committed write.
    fn own_causal(&mut self, snap: &Snapshot, now: Instant, unknown: &mut bool) -> Causal {
        let Some(since) = self.ryw.dirty_since else { return Causal::None };
        // After a failover the old timeline's LSN means nothing: what the new primary has
        // at or after now stands in for it.
        if let (Some((_, Some(tl))), Some(now_tl)) = (self.ryw.commit_lsn, primary_timeline(snap, now)) {
            if tl != now_tl {
                self.ryw.dirty_since = Some(now);
                self.ryw.commit_lsn = None;
                *unknown = true;
                return Causal::Primary;
            }
        }
        if self.ryw.commit_lsn.is_none() {
            self.ryw.commit_lsn = primary_lsn_after(snap, now, since);
        }
        let Some((lsn, timeline)) = self.ryw.commit_lsn else {
            *unknown = true;
            return Causal::Primary;
        };
        let replicas = || snap.nodes.iter().filter(|n| n.role == Role::Replica && n.usable(now));
        let all_caught_up = replicas().count() > 0
            && replicas().all(|n| n.wal.replay_lsn.is_some_and(|r| r >= lsn) && n.wal.timeline == timeline);
        if all_caught_up {
            self.ryw.dirty_since = None;
            self.ryw.commit_lsn = None;
            return Causal::None;
        }
        Causal::Lsn { lsn, timeline }
    }

    /// Asks the primary for its WAL insert position now, on a pooled connection, and
    /// notes it in the topology as a sample sent at the moment the query went out (so
    /// every read that arrived before that can use it).
    /// One ask at a time: a read that waited for another's finds a sample sent after it
    /// arrived (`since`) and asks nothing, so reads arriving together share one ask.
    /// The connection is checked out before the turn is taken: a session waiting for its
    /// own pool (a client holding all of its user's connections) holds up no one else.
    pub(super) async fn ask_primary_position(&mut self, snap: &Snapshot, since: Instant) {
        let answered = |shared: &crate::shared::Shared| {
            primary_sample(&shared.topology.snapshot(), Instant::now()).is_some_and(|(sent, ..)| sent > since)
        };
        let Some(node) = snap.primary(Instant::now()) else { return };
        let Ok(mut conn) = self.checkout(node).await else {
            return;
        };
        let _turn = self.shared.position_asks.lock().await;
        if answered(&self.shared) {
            conn.release(true);
            return;
        }
        let sent = Instant::now();
        let answer = conn.query_text(INSERT_POSITION_QUERY).await;
        conn.release(answer.is_ok());
        let layout = snap.nodes.get(node).and_then(|n| n.wal.layout);
        match answer.ok().flatten().as_deref().and_then(parse_lsn) {
            Some(lsn) => {
                let lsn = layout.map_or(lsn, |l| l.record_end(lsn));
                self.shared.topology.note_primary_position(node, sent, lsn)
            }
            None => tracing::debug!(node, "the primary's position could not be learned: the read goes to the primary"),
        }
    }
}

/// Both requirements at once: the later position on one timeline, else the primary.
fn stricter(a: Causal, b: Causal) -> Causal {
    match (a, b) {
        (Causal::None, x) | (x, Causal::None) => x,
        (Causal::Lsn { lsn: x, timeline: tx }, Causal::Lsn { lsn: y, timeline: ty }) if tx == ty => {
            Causal::Lsn { lsn: x.max(y), timeline: tx }
        }
        _ => Causal::Primary,
    }
}

/// What the commits acknowledged through this instance require. Those of an older
/// timeline (a failover since) need a position of the new primary's: every commit of the
/// old timeline that survived precedes it. Those whose position was not learned need the
/// primary's position from a sample sent after them. Either, once known, is recorded in
/// their place, so later reads need that fixed position, not each newer sample.
fn acked_causal(acked: &Acked, snap: &Snapshot, now: Instant, unknown: &mut bool) -> Causal {
    let state = acked.get();
    let current = primary_timeline(snap, now);
    let mut causal = match state.position {
        None => Causal::None,
        Some((lsn, timeline)) if timeline.is_none() || current.is_none() || timeline == current => {
            Causal::Lsn { lsn, timeline }
        }
        // A timeline the monitor has not seen the primary on: only the primary is sure.
        Some((_, timeline)) if timeline > current => return Causal::Primary,
        Some(_) => match primary_sample(snap, now) {
            Some((_, lsn, timeline)) => {
                acked.record(lsn, timeline, None);
                Causal::Lsn { lsn, timeline }
            }
            None => {
                *unknown = true;
                return Causal::Primary;
            }
        },
    };
    if let Some(at) = state.unpositioned {
        match primary_sample(snap, now).filter(|(sent, ..)| *sent > at) {
            Some((sent, lsn, timeline)) => {
                acked.record(lsn, timeline, Some(sent));
                causal = stricter(causal, Causal::Lsn { lsn, timeline });
            }
            None => {
                *unknown = true;
                return Causal::Primary;
            }
        }
    }
    causal
}

/// What a causal token requires, whatever the scope: a node that replayed
/// to it on the primary's timeline now. A token from an older timeline (written before a
/// failover) needs the new primary's position at the read's arrival; one from a timeline
/// pgroute has not seen, or a malformed one: the primary.
fn token_causal(snap: &Snapshot, now: Instant, arrived: Instant, after: Option<After>, unknown: &mut bool) -> Causal {
    match after {
        None => Causal::None,
        Some(After::Malformed) => Causal::Primary,
        Some(After::At { timeline, lsn }) => match primary_timeline(snap, now) {
            Some(current) if current == timeline => Causal::Lsn { lsn, timeline: Some(timeline) },
            Some(current) if timeline < current => position_after(snap, now, arrived, unknown),
            _ => Causal::Primary,
        },
    }
}

/// The confirmed primary's timeline as last seen.
fn primary_timeline(snap: &Snapshot, now: Instant) -> Option<u32> {
    snap.primary(now).and_then(|p| snap.nodes[p].wal.timeline)
}

/// A replica at the primary's position from a sample sent after `since`, or the primary
/// while no such sample is known (`unknown` says so).
fn position_after(snap: &Snapshot, now: Instant, since: Instant, unknown: &mut bool) -> Causal {
    match primary_lsn_after(snap, now, since) {
        Some((lsn, timeline)) => Causal::Lsn { lsn, timeline },
        None => {
            *unknown = true;
            Causal::Primary
        }
    }
}

/// The primary's WAL position from the first sample sent after `since` (a probe, or a
/// session's [`Session::ask_primary_position`]): at or past every commit acknowledged
/// before `since`.
fn primary_lsn_after(snap: &Snapshot, now: Instant, since: Instant) -> Option<(u64, Option<u32>)> {
    primary_sample(snap, now).filter(|(sent, ..)| *sent > since).map(|(_, lsn, timeline)| (lsn, timeline))
}

/// The confirmed primary's latest position sample: when it was sent, the position, the
/// timeline.
fn primary_sample(snap: &Snapshot, now: Instant) -> Option<(Instant, u64, Option<u32>)> {
    let wal = snap.primary(now).map(|p| snap.nodes[p].wal)?;
    Some((wal.started?, wal.current_lsn?, wal.timeline))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::topology::{NodeState, Wal};

    /// A primary on `timeline` whose latest position sample (`lsn`) was sent at `sampled`.
    fn primary(now: Instant, timeline: u32, sampled: Instant, lsn: u64) -> Snapshot {
        let node = NodeState {
            name: "p".into(),
            role: Role::Primary,
            weight: 1,
            down_until: None,
            healthy: true,
            why: "ok",
            fresh_until: Some(now + Duration::from_secs(60)),
            wal: Wal {
                started: Some(sampled),
                current_lsn: Some(lsn),
                replay_lsn: None,
                timeline: Some(timeline),
                layout: None,
            },
            lag: None,
            drained: false,
            removed: false,
            replay_noted: None,
            groups: crate::rules::DEFAULT_MASK,
        };
        Snapshot { nodes: vec![node], no_replica_error: false, split_brain: false, least_connections: false }
    }

    #[test]
    fn tokens_need_their_position_on_the_current_timeline_and_the_new_primarys_after_a_failover() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let at = |timeline, lsn| Some(After::At { timeline, lsn });
        // The primary is on timeline 2; its last sample was sent at 10 ms, at 0x500.
        let snap = primary(ms(20), 2, ms(10), 0x500);
        let check = |arrived, after| {
            let mut unknown = false;
            (token_causal(&snap, ms(20), arrived, after, &mut unknown), unknown)
        };
        assert_eq!(check(ms(5), None), (Causal::None, false));
        assert_eq!(check(ms(5), at(2, 0x42)), (Causal::Lsn { lsn: 0x42, timeline: Some(2) }, false));
        assert_eq!(check(ms(5), Some(After::Malformed)), (Causal::Primary, false), "malformed: the primary");
        assert_eq!(check(ms(5), at(3, 0x42)), (Causal::Primary, false), "a timeline not seen yet: the primary");
        // Older timeline: the new primary's position from a sample sent after arrival.
        assert_eq!(check(ms(5), at(1, 0x9999)), (Causal::Lsn { lsn: 0x500, timeline: Some(2) }, false));
        assert_eq!(check(ms(15), at(1, 0x42)), (Causal::Primary, true), "no sample since arrival: ask the primary");
    }

    #[test]
    fn acknowledged_commits_need_their_position_or_the_primarys_after_them() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The primary is on timeline 2; its last sample was sent at 10 ms, at 0x500.
        let snap = primary(ms(20), 2, ms(10), 0x500);
        let check = |acked: &Acked| {
            let mut unknown = false;
            (acked_causal(acked, &snap, ms(20), &mut unknown), unknown)
        };
        let acked = Acked::default();
        assert_eq!(check(&acked), (Causal::None, false), "nothing acknowledged: nothing needed");
        acked.record(0x400, Some(2), None);
        assert_eq!(check(&acked), (Causal::Lsn { lsn: 0x400, timeline: Some(2) }, false));
        // Acknowledged before a failover: the new primary's position stands in, and is
        // recorded, so later reads need that fixed position.
        let old = Acked::default();
        old.record(0x9999, Some(1), None);
        assert_eq!(check(&old), (Causal::Lsn { lsn: 0x500, timeline: Some(2) }, false));
        assert_eq!(old.get().position, Some((0x500, Some(2))));
        // A timeline the primary has not been seen on: only the primary is sure.
        let newer = Acked::default();
        newer.record(0x10, Some(3), None);
        assert_eq!(check(&newer), (Causal::Primary, false));
        // A commit acknowledged with no position: a sample sent after it covers it.
        let unpositioned = Acked::default();
        unpositioned.record_unpositioned(ms(5));
        assert_eq!(check(&unpositioned), (Causal::Lsn { lsn: 0x500, timeline: Some(2) }, false));
        assert_eq!(
            unpositioned.get(),
            crate::acked::AckedState { position: Some((0x500, Some(2))), unpositioned: None }
        );
        let too_recent = Acked::default();
        too_recent.record(0x400, Some(2), None);
        too_recent.record_unpositioned(ms(15));
        assert_eq!(check(&too_recent), (Causal::Primary, true), "no sample since: ask the primary");
    }

    #[test]
    fn two_requirements_combine_to_the_later_position_or_the_primary() {
        let lsn = |lsn, tl| Causal::Lsn { lsn, timeline: Some(tl) };
        assert_eq!(stricter(Causal::None, lsn(5, 1)), lsn(5, 1));
        assert_eq!(stricter(lsn(5, 1), lsn(9, 1)), lsn(9, 1));
        assert_eq!(stricter(lsn(9, 1), lsn(5, 1)), lsn(9, 1));
        assert_eq!(stricter(lsn(5, 1), lsn(5, 2)), Causal::Primary, "two timelines: only the primary has both");
        assert_eq!(stricter(Causal::Primary, lsn(5, 1)), Causal::Primary);
    }
}
