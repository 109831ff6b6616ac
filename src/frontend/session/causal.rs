//! What a read needs after writes it must see (read-your-writes, tagged keys, causal
//! tokens), and learning positions fast enough that it rarely has to leave the replicas.
//!
//! A requirement is a [`Causal`]: nothing, the primary, or a replica that replayed a WAL
//! position on a timeline. The positions come from:
//! - the session's own commit (`commit_lsn.rs`: exact, asked behind the commit);
//! - a tagged key's latest commit through this instance: the primary's position from the
//!   first probe begun after it;
//! - `key_scope = "cluster"`: the primary's position when the read arrived (a write made
//!   through another instance was acknowledged before that);
//! - a causal token: its own position, or, from an older timeline (a failover since),
//!   the new primary's position when the read arrived, which every surviving commit of
//!   the old timeline precedes.
//!
//! When a needed primary position is not known yet, the session asks the primary for it
//! ([`Session::ask_primary_position`], one round trip on a pooled connection, shared with
//! every session through the topology) rather than send the read to the primary. While a
//! read waits for a replica to reach a position (`causal_wait`), `health::ReplayWatch`
//! asks the replicas for their replay positions back to back.

use std::time::Instant;

use super::commit_lsn::{parse_lsn, QUERY as INSERT_POSITION_QUERY};
use super::Session;
use crate::causal::KeyCommit;
use crate::classify::After;
use crate::config::{KeyScope, ReadYourWrites, Role};
use crate::router::Causal;
use crate::topology::Snapshot;

/// A read's requirement, and whether it fell back to the primary only because a primary
/// position it needs is not known yet (asking the primary would settle it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Need {
    pub causal: Causal,
    pub position_unknown: bool,
}

/// What the read brings: when it arrived, its tagged keys' latest local commit (or, in
/// cluster scope, its arrival), and its causal token.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadFacts {
    pub arrived: Instant,
    pub keys_since: Option<KeyCommit>,
    pub after: Option<After>,
}

impl ReadFacts {
    /// `keyed`: the read carries key tags. Cluster scope needs every commit the primary
    /// had made at arrival, whoever made it; instance scope the keys' local commits.
    pub(super) fn new(session: &Session, arrived: Instant, keyed: Option<&[String]>, after: Option<After>) -> Self {
        let keys_since =
            keyed.filter(|k| !k.is_empty()).and_then(|keys| match session.shared.config().routing.key_scope {
                KeyScope::Cluster => Some(KeyCommit { at: arrived, position: None }),
                KeyScope::Instance => session.shared.keys.since(keys, arrived),
            });
        ReadFacts { arrived, keys_since, after }
    }
}

impl Session {
    /// What this read needs: after the session's own last committed write, after the
    /// commits its key tags stand for, and after its causal token.
    pub(super) fn causal(&mut self, snap: &Snapshot, now: Instant, facts: ReadFacts) -> Need {
        let mut unknown = false;
        let own = self.own_causal(snap, now, &mut unknown);
        let config = self.shared.config();
        let routing = &config.routing;
        let keyed = match (facts.keys_since, routing.read_your_writes) {
            (None, _) | (_, ReadYourWrites::Off) => Causal::None,
            (Some(k), ReadYourWrites::Window) if now < k.at + routing.sticky_window => Causal::Primary,
            (Some(_), ReadYourWrites::Window) => Causal::None,
            (Some(k), ReadYourWrites::Lsn) => match k.position {
                Some((lsn, timeline)) if timeline == primary_timeline(snap, now) => Causal::Lsn { lsn, timeline },
                _ => position_after(snap, now, k.at, &mut unknown),
            },
        };
        let token = token_causal(snap, now, facts.arrived, facts.after, &mut unknown);
        let causal = stricter(stricter(own, keyed), token);
        Need { causal, position_unknown: unknown && causal == Causal::Primary }
    }

    /// What this session's reads need after its own last committed write.
    fn own_causal(&mut self, snap: &Snapshot, now: Instant, unknown: &mut bool) -> Causal {
        let Some(since) = self.dirty_since else { return Causal::None };
        let config = self.shared.config();
        let routing = &config.routing;
        match routing.read_your_writes {
            ReadYourWrites::Off => Causal::None,
            ReadYourWrites::Window if now < since + routing.sticky_window => Causal::Primary,
            ReadYourWrites::Window => {
                self.dirty_since = None;
                Causal::None
            }
            ReadYourWrites::Lsn => {
                // After a failover the old timeline's LSN means nothing: what the new
                // primary has at or after now stands in for it.
                if let (Some((_, Some(tl))), Some(now_tl)) = (self.commit_lsn, primary_timeline(snap, now)) {
                    if tl != now_tl {
                        self.dirty_since = Some(now);
                        self.commit_lsn = None;
                        *unknown = true;
                        return Causal::Primary;
                    }
                }
                if self.commit_lsn.is_none() {
                    self.commit_lsn = primary_lsn_after(snap, now, since);
                }
                let Some((lsn, timeline)) = self.commit_lsn else {
                    *unknown = true;
                    return Causal::Primary;
                };
                let replicas = || snap.nodes.iter().filter(|n| n.role == Role::Replica && n.usable(now));
                let all_caught_up = replicas().count() > 0
                    && replicas().all(|n| n.wal.replay_lsn.is_some_and(|r| r >= lsn) && n.wal.timeline == timeline);
                if all_caught_up {
                    self.dirty_since = None;
                    self.commit_lsn = None;
                    return Causal::None;
                }
                Causal::Lsn { lsn, timeline }
            }
        }
    }

    /// Asks the primary for its WAL insert position now, on a pooled connection, and
    /// notes it in the topology as a sample sent at the moment the query went out (so
    /// every read that arrived before that can use it).
    pub(super) async fn ask_primary_position(&mut self, snap: &Snapshot) {
        let Some(node) = snap.primary(Instant::now()) else { return };
        let (key, startup) = self.settings.startup();
        let Ok(mut conn) = self.shared.pools.checkout(node, &self.user, &self.database, key, startup).await else {
            return;
        };
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

/// What a causal token requires, whatever the read-your-writes mode: a node that replayed
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
    let wal = snap.primary(now).map(|p| snap.nodes[p].wal)?;
    if wal.started.is_some_and(|s| s > since) {
        wal.current_lsn.map(|lsn| (lsn, wal.timeline))
    } else {
        None
    }
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
    fn two_requirements_combine_to_the_later_position_or_the_primary() {
        let lsn = |lsn, tl| Causal::Lsn { lsn, timeline: Some(tl) };
        assert_eq!(stricter(Causal::None, lsn(5, 1)), lsn(5, 1));
        assert_eq!(stricter(lsn(5, 1), lsn(9, 1)), lsn(9, 1));
        assert_eq!(stricter(lsn(9, 1), lsn(5, 1)), lsn(9, 1));
        assert_eq!(stricter(lsn(5, 1), lsn(5, 2)), Causal::Primary, "two timelines: only the primary has both");
        assert_eq!(stricter(Causal::Primary, lsn(5, 1)), Causal::Primary);
    }
}
