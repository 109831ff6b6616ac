//! Is a node usable right now? A pure function of its latest sample, the primary's sample
//! from the same round, and the thresholds. Fail closed: no sample, a stale one, a failed
//! probe, an unknown timeline or an unknown lag all mean "not usable".

use std::time::{Duration, Instant};

/// What one probe of a node returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the probe was sent (read-your-writes needs a sample begun after a commit).
    pub started: Instant,
    /// When the probe's answer arrived.
    pub taken: Instant,
    pub in_recovery: bool,
    pub timeline: Option<u32>,
    /// Primary: `pg_current_wal_lsn()`.
    pub current_lsn: Option<u64>,
    /// Replica: `pg_last_wal_receive_lsn()` and `pg_last_wal_replay_lsn()`.
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    /// Replica: `now() - pg_last_xact_replay_timestamp()`, `None` when NULL.
    pub replay_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub max_sample_age: Duration,
    pub max_lag: Duration,
    pub max_lag_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub usable: bool,
    /// `ok`, or why not: `down`, `no_sample`, `stale_sample`, `in_recovery`, ...
    pub why: &'static str,
    pub lag_bytes: Option<u64>,
    pub lag: Option<Duration>,
}

/// Every reason a verdict can give, for metric labels (a fixed set): `ok`, then why not.
pub const REASONS: &[&str] = &[
    "ok",
    "assumed",
    "no_sample",
    "probe_error",
    "probe_timeout",
    "monitor_privilege",
    "monitor_login",
    "stale_sample",
    "down",
    "in_recovery",
    "not_in_recovery",
    "primary_unknown",
    "timeline",
    "timeline_unknown",
    "lsn_unknown",
    "lag_unknown",
    "lag",
    "lag_bytes",
    "fenced",
    "removed",
    "noloadbalance",
    "patroni_not_member",
    "patroni_unknown",
    "patroni_no_leader",
    "patroni_leader_not_running",
    "patroni_leader_unknown",
    "not_patroni_leader",
];

fn no(why: &'static str) -> Verdict {
    Verdict { usable: false, why, lag_bytes: None, lag: None }
}

fn fresh<'a>(s: Option<&'a Sample>, t: &Thresholds, now: Instant) -> Result<&'a Sample, &'static str> {
    let s = s.ok_or("no_sample")?;
    if now.saturating_duration_since(s.taken) > t.max_sample_age {
        return Err("stale_sample");
    }
    Ok(s)
}

/// May writes go to this node (configured as the primary)?
pub fn assess_primary(sample: Option<&Sample>, down: bool, t: &Thresholds, now: Instant) -> Verdict {
    if down {
        return no("down");
    }
    match fresh(sample, t, now) {
        Err(why) => no(why),
        Ok(s) if s.in_recovery => no("in_recovery"),
        Ok(_) => Verdict { usable: true, why: "ok", lag_bytes: Some(0), lag: Some(Duration::ZERO) },
    }
}

/// May reads go to this replica? `primary` is the primary's sample from the same round.
pub fn assess_replica(
    sample: Option<&Sample>,
    primary: Option<&Sample>,
    down: bool,
    t: &Thresholds,
    now: Instant,
) -> Verdict {
    if down {
        return no("down");
    }
    let r = match fresh(sample, t, now) {
        Ok(r) => r,
        Err(why) => return no(why),
    };
    if !r.in_recovery {
        return no("not_in_recovery");
    }
    let p = match fresh(primary, t, now) {
        Ok(p) if !p.in_recovery => p,
        _ => return no("primary_unknown"),
    };
    match (r.timeline, p.timeline) {
        (Some(a), Some(b)) if a == b => {}
        (Some(_), Some(_)) => return no("timeline"),
        _ => return no("timeline_unknown"),
    }
    let (Some(current), Some(replayed)) = (p.current_lsn, r.replay_lsn) else {
        return no("lsn_unknown");
    };
    let lag_bytes = current.saturating_sub(replayed);
    // Time lag counts only while the replica has received WAL it has not applied: an idle
    // primary makes the last replay timestamp old without the replica being behind.
    let applied_all = r.receive_lsn.is_none_or(|received| replayed >= received);
    let lag = if lag_bytes == 0 || applied_all { Some(Duration::ZERO) } else { r.replay_age };
    let Some(lag) = lag else {
        return Verdict { usable: false, why: "lag_unknown", lag_bytes: Some(lag_bytes), lag: None };
    };
    let why = if lag > t.max_lag {
        "lag"
    } else if lag_bytes > t.max_lag_bytes {
        "lag_bytes"
    } else {
        "ok"
    };
    Verdict { usable: why == "ok", why, lag_bytes: Some(lag_bytes), lag: Some(lag) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds { max_sample_age: Duration::from_millis(300), max_lag: Duration::from_secs(1), max_lag_bytes: 1000 }
    }

    fn primary(at: Instant, lsn: u64) -> Sample {
        Sample {
            started: at,
            taken: at,
            in_recovery: false,
            timeline: Some(1),
            current_lsn: Some(lsn),
            receive_lsn: None,
            replay_lsn: None,
            replay_age: None,
        }
    }

    fn replica(at: Instant, received: u64, replayed: u64, age: Option<u64>) -> Sample {
        Sample {
            started: at,
            taken: at,
            in_recovery: true,
            timeline: Some(1),
            current_lsn: None,
            receive_lsn: Some(received),
            replay_lsn: Some(replayed),
            replay_age: age.map(Duration::from_millis),
        }
    }

    #[test]
    fn replica_verdicts() {
        let now = Instant::now();
        let old = now - Duration::from_secs(1);
        let p = primary(now, 5000);
        let mut other_tl = replica(now, 5000, 5000, None);
        other_tl.timeline = Some(2);
        let mut no_tl = replica(now, 5000, 5000, None);
        no_tl.timeline = None;
        let mut promoted = replica(now, 5000, 5000, None);
        promoted.in_recovery = false;
        type Case<'a> = (&'a str, Option<Sample>, Option<Sample>, bool, bool, &'a str);
        let cases: Vec<Case> = vec![
            ("caught up", Some(replica(now, 5000, 5000, Some(60_000))), Some(p.clone()), false, true, "ok"),
            (
                "idle primary, old replay timestamp, all applied",
                Some(replica(now, 4990, 4990, Some(600_000))),
                Some(p.clone()),
                false,
                true,
                "ok",
            ),
            (
                "NULL replay timestamp, caught up",
                Some(replica(now, 5000, 5000, None)),
                Some(p.clone()),
                false,
                true,
                "ok",
            ),
            (
                "NULL replay timestamp, behind",
                Some(replica(now, 5000, 4000, None)),
                Some(p.clone()),
                false,
                false,
                "lag_unknown",
            ),
            ("applying late", Some(replica(now, 5000, 4500, Some(2000))), Some(p.clone()), false, false, "lag"),
            ("small apply lag", Some(replica(now, 5000, 4500, Some(200))), Some(p.clone()), false, true, "ok"),
            (
                "too many bytes behind",
                Some(replica(now, 3000, 3000, Some(10))),
                Some(p.clone()),
                false,
                false,
                "lag_bytes",
            ),
            (
                "stale replica sample",
                Some(replica(old, 5000, 5000, None)),
                Some(p.clone()),
                false,
                false,
                "stale_sample",
            ),
            (
                "stale primary sample",
                Some(replica(now, 5000, 5000, None)),
                Some(primary(old, 5000)),
                false,
                false,
                "primary_unknown",
            ),
            ("no primary sample", Some(replica(now, 5000, 5000, None)), None, false, false, "primary_unknown"),
            ("no sample (failed probe)", None, Some(p.clone()), false, false, "no_sample"),
            ("down", Some(replica(now, 5000, 5000, None)), Some(p.clone()), true, false, "down"),
            ("other timeline", Some(other_tl), Some(p.clone()), false, false, "timeline"),
            ("timeline unknown", Some(no_tl), Some(p.clone()), false, false, "timeline_unknown"),
            ("promoted", Some(promoted), Some(p.clone()), false, false, "not_in_recovery"),
        ];
        for (name, r, p, down, usable, why) in cases {
            let v = assess_replica(r.as_ref(), p.as_ref(), down, &t(), now);
            assert_eq!((v.usable, v.why), (usable, why), "{name}");
        }
    }

    #[test]
    fn primary_verdicts() {
        let now = Instant::now();
        let mut demoted = primary(now, 1);
        demoted.in_recovery = true;
        assert!(assess_primary(Some(&primary(now, 1)), false, &t(), now).usable);
        assert_eq!(assess_primary(Some(&demoted), false, &t(), now).why, "in_recovery");
        assert_eq!(assess_primary(None, false, &t(), now).why, "no_sample");
        assert_eq!(assess_primary(Some(&primary(now, 1)), true, &t(), now).why, "down");
        let old = now - Duration::from_secs(1);
        assert_eq!(assess_primary(Some(&primary(old, 1)), false, &t(), now).why, "stale_sample");
    }
}
