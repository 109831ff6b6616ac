use std::time::{Duration, Instant};

use super::*;
use crate::rules::ReadRoute;
use crate::topology::NodeState;

fn node(name: &str, role: Role, weight: u32, down: bool, now: Instant) -> NodeState {
    NodeState {
        name: name.into(),
        role,
        weight,
        down_until: down.then(|| now + Duration::from_secs(1)),
        healthy: true,
        why: "ok",
        fresh_until: Some(now + Duration::from_secs(3600)),
        wal: Default::default(),
        lag: Some(Duration::ZERO),
        drained: false,
        removed: false,
        replay_noted: None,
        groups: crate::rules::DEFAULT_MASK,
    }
}

fn topo(now: Instant, replicas: &[(u32, bool)], with_primary: bool) -> Snapshot {
    let mut nodes = Vec::new();
    if with_primary {
        nodes.push(node("p", Role::Primary, 1, false, now));
    }
    for (i, &(w, down)) in replicas.iter().enumerate() {
        nodes.push(node(&format!("r{i}"), Role::Replica, w, down, now));
    }
    Snapshot { nodes, no_replica_error: false, split_brain: false, least_connections: false }
}

fn default_read() -> ReadRoute {
    ReadRoute { target: Target::Replica, reason: Arc::from("default_read"), max_lag: None, limits: None, scope: None }
}

fn pinned_class() -> Class {
    let mut c = Class::read("pin:listen");
    c.pins = Some("listen".into());
    c
}

#[test]
fn decision_table() {
    let now = Instant::now();
    let read = Class::read("read");
    let write = Class::write("write:update");
    let free = SessionView::default();
    let pinned = SessionView { pinned: true, ..free };
    let serializable = SessionView { serializable: true, ..free };
    let partial = SessionView { partial_unit: true, ..free };
    let partial_in_tx = SessionView { partial_unit: true, in_transaction_on: Some(2), ..free };
    let in_tx_on_0 = SessionView { in_transaction_on: Some(0), ..free };
    let in_tx_on_1 = SessionView { in_transaction_on: Some(1), ..free };
    let healthy = topo(now, &[(1, false), (1, false)], true);
    let one_down = topo(now, &[(1, true), (1, false)], true);
    let all_down = topo(now, &[(1, true), (1, true)], true);
    let zero_weight = topo(now, &[(0, false)], true);
    let no_replicas = topo(now, &[], true);
    let primaryless = topo(now, &[(1, false)], false);
    let nothing_usable = topo(now, &[(1, true)], false);
    let mut first_drained = topo(now, &[(1, false), (1, false)], true);
    first_drained.nodes[1].drained = true;
    let mut first_removed = topo(now, &[(1, false), (1, false)], true);
    first_removed.nodes[1].removed = true;
    let mut primary_drained = topo(now, &[], true);
    primary_drained.nodes[0].drained = true;
    let pins = pinned_class();
    // (name, class, session, topology, ticket, expected node or None for error, reason)
    type Case<'a> = (&'a str, &'a Class, SessionView, &'a Snapshot, u64, Option<usize>, &'a str);
    let cases: Vec<Case> = vec![
        ("partial unit goes to primary", &read, partial, &healthy, 0, Some(0), "partial_unit"),
        ("partial unit in a transaction stays", &read, partial_in_tx, &healthy, 0, Some(2), "in_transaction"),
        ("partial write goes to primary", &write, partial, &healthy, 0, Some(0), "partial_unit"),
        ("read goes to first replica", &read, free, &healthy, 0, Some(1), "default_read"),
        ("read round robins", &read, free, &healthy, 1, Some(2), "default_read"),
        ("read wraps around", &read, free, &healthy, 2, Some(1), "default_read"),
        ("write goes to primary", &write, free, &healthy, 0, Some(0), "write:update"),
        ("a drained replica takes no reads", &read, free, &first_drained, 0, Some(2), "default_read"),
        ("a drained replica takes no reads (other ticket)", &read, free, &first_drained, 1, Some(2), "default_read"),
        ("a removed replica takes no reads", &read, free, &first_removed, 0, Some(2), "default_read"),
        ("draining the primary does not stop writes", &write, free, &primary_drained, 0, Some(0), "write:update"),
        ("a drained transaction's replica keeps it", &read, in_tx_on_1, &first_drained, 0, Some(1), "in_transaction"),
        ("write ignores ticket", &write, free, &healthy, 7, Some(0), "write:update"),
        ("pinning statement goes to primary", &pins, free, &healthy, 1, Some(0), "pin:listen"),
        ("pinned session reads on primary", &read, pinned, &healthy, 1, Some(0), "pinned"),
        ("read-only transaction stays on its replica", &read, in_tx_on_1, &healthy, 0, Some(1), "in_transaction"),
        ("write transaction stays on the primary", &write, in_tx_on_0, &healthy, 3, Some(0), "in_transaction"),
        (
            "transaction beats pin",
            &read,
            SessionView { pinned: true, in_transaction_on: Some(2), ..free },
            &healthy,
            0,
            Some(2),
            "in_transaction",
        ),
        ("down replica skipped", &read, free, &one_down, 0, Some(2), "default_read"),
        ("down replica skipped any ticket", &read, free, &one_down, 1, Some(2), "default_read"),
        ("all replicas down: primary", &read, free, &all_down, 0, Some(0), "no_replica"),
        ("zero weight never chosen", &read, free, &zero_weight, 3, Some(0), "no_replica"),
        ("no replicas configured", &read, free, &no_replicas, 0, Some(0), "no_replica"),
        ("write with no primary errors", &write, free, &primaryless, 0, None, ""),
        ("read with no primary still uses replica", &read, free, &primaryless, 0, Some(0), "default_read"),
        ("read, no replica, no primary errors", &read, free, &nothing_usable, 0, None, ""),
        ("serializable session reads on the primary", &read, serializable, &healthy, 1, Some(0), "serializable"),
        ("serializable read with no primary errors", &read, serializable, &primaryless, 0, None, ""),
        (
            "serializable transaction stays",
            &read,
            SessionView { in_transaction_on: Some(1), ..serializable },
            &healthy,
            0,
            Some(1),
            "in_transaction",
        ),
    ];
    for (name, class, session, t, ticket, want, reason) in cases {
        let got = decide(class, &default_read(), session, t, now, ticket);
        match want {
            Some(node) => {
                let d = got.unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
                assert_eq!((d.node, d.label(class)), (node, reason), "{name}");
            }
            None => {
                let e = got.expect_err(name);
                assert_eq!(e.code, "08006", "{name}");
            }
        }
    }
}

#[test]
fn weights_shape_the_share_of_reads() {
    let now = Instant::now();
    let t = topo(now, &[(3, false), (1, false)], true);
    let read = Class::read("read");
    let mut counts = [0usize; 3];
    for ticket in 0..400 {
        counts[decide(&read, &default_read(), SessionView::default(), &t, now, ticket).unwrap().node] += 1;
    }
    assert_eq!(counts, [0, 300, 100]);
}

#[test]
fn backoff_expires_with_time() {
    let now = Instant::now();
    let t = topo(now, &[(1, true)], true);
    let read = Class::read("read");
    assert_eq!(decide(&read, &default_read(), SessionView::default(), &t, now, 0).unwrap().node, 0);
    let later = now + Duration::from_secs(2);
    assert_eq!(decide(&read, &default_read(), SessionView::default(), &t, later, 0).unwrap().node, 1);
}

#[test]
fn read_rules_choose_only_among_places_a_read_may_go() {
    let now = Instant::now();
    let t = topo(now, &[(1, false)], true);
    let to_primary = ReadRoute {
        target: Target::Primary,
        reason: Arc::from("primary_tables:balances"),
        max_lag: None,
        limits: None,
        scope: None,
    };
    let to_replica =
        ReadRoute { target: Target::Replica, reason: Arc::from("hint"), max_lag: None, limits: None, scope: None };
    let read = Class::read("read");
    let write = Class::write("write:update");
    let free = SessionView::default();
    let d = decide(&read, &to_primary, free, &t, now, 0).unwrap();
    assert_eq!((d.node, d.label(&read)), (0, "primary_tables:balances"));
    let d = decide(&read, &to_replica, free, &t, now, 0).unwrap();
    assert_eq!((d.node, d.label(&read)), (1, "hint"));
    let d = decide(&write, &to_replica, free, &t, now, 0).unwrap();
    assert_eq!((d.node, d.label(&write)), (0, "write:update"), "a replica route never moves a write");
}

#[test]
fn health_verdicts_and_stale_samples_decide_usability() {
    let now = Instant::now();
    let read = Class::read("read");
    let write = Class::write("write:insert");
    let free = SessionView::default();
    let mut t = topo(now, &[(1, false), (1, false)], true);
    t.nodes[1].healthy = false;
    t.nodes[1].why = "lag";
    for ticket in 0..4 {
        assert_eq!(decide(&read, &default_read(), free, &t, now, ticket).unwrap().node, 2, "lagging replica skipped");
    }
    // A verdict whose sample went stale is not trusted, even if the monitor is stuck.
    for n in t.nodes.iter_mut() {
        n.fresh_until = Some(now + Duration::from_millis(300));
    }
    let later = now + Duration::from_secs(1);
    let d = decide(&read, &default_read(), free, &t, later, 0).unwrap_err();
    assert_eq!(d.code, "08006", "stale primary: no primary for the read fallback either");
    // A primary reporting in recovery takes no writes; the error names the node states.
    let mut demoted = topo(now, &[(1, false)], true);
    demoted.nodes[0].healthy = false;
    demoted.nodes[0].why = "in_recovery";
    let e = decide(&write, &default_read(), free, &demoted, now, 0).unwrap_err();
    assert_eq!(e.code, "08006");
    assert!(e.hint.as_deref().unwrap_or("").contains("p: in_recovery"), "{:?}", e.hint);
    // when_no_replica = "error": reads fail clearly instead of using the primary.
    let mut strict = topo(now, &[(1, true)], true);
    strict.no_replica_error = true;
    let e = decide(&read, &default_read(), free, &strict, now, 0).unwrap_err();
    assert!(e.message.contains("no replica is usable"), "{}", e.message);
    assert_eq!(decide(&write, &default_read(), free, &strict, now, 0).unwrap().node, 0);
}

#[test]
fn split_brain_and_demotion_refuse_writes_everywhere() {
    let now = Instant::now();
    let read = Class::read("read");
    let write = Class::write("write:insert");
    let free = SessionView::default();
    let mut t = topo(now, &[(1, false)], true);
    t.split_brain = true;
    assert_eq!(decide(&write, &default_read(), free, &t, now, 0).unwrap_err().code, "08006");
    assert_eq!(decide(&read, &default_read(), free, &t, now, 0).unwrap().node, 1, "reads still use replicas");
    let in_tx_on_primary = SessionView { in_transaction_on: Some(0), ..free };
    assert_eq!(decide(&write, &default_read(), in_tx_on_primary, &t, now, 0).unwrap_err().code, "08006");
    // The transaction's node lost its primary role (another node was elected).
    let mut moved = topo(now, &[(1, false)], true);
    moved.nodes[0].role = Role::Replica;
    moved.nodes[1].role = Role::Primary;
    assert!(decide(&write, &default_read(), in_tx_on_primary, &moved, now, 0).is_err());
    assert_eq!(decide(&read, &default_read(), in_tx_on_primary, &moved, now, 0).unwrap().node, 0);
    assert_eq!(decide(&write, &default_read(), free, &moved, now, 0).unwrap().node, 1, "writes follow the new primary");
}

#[test]
fn a_read_only_transactions_writes_reach_its_replica_to_be_refused_there() {
    let now = Instant::now();
    let write = Class::write("write:update");
    let free = SessionView::default();
    let ro = SessionView { in_transaction_on: Some(1), read_only_transaction: true, ..free };
    let t = topo(now, &[(1, false)], true);
    let d = decide(&write, &default_read(), ro, &t, now, 0).unwrap();
    assert_eq!((d.node, d.label(&write)), (1, "in_transaction"));
    // Not when the replica's verdict is unusable (stale, or out of recovery), nor for a
    // transaction that did not begin there as a read.
    let down = topo(now, &[(1, true)], true);
    assert_eq!(decide(&write, &default_read(), ro, &down, now, 0).unwrap_err().code, "08006");
    let rw = SessionView { read_only_transaction: false, ..ro };
    assert_eq!(decide(&write, &default_read(), rw, &t, now, 0).unwrap_err().code, "08006");
    let mut split = topo(now, &[(1, false)], true);
    split.split_brain = true;
    split.nodes[1].role = Role::Primary;
    assert_eq!(decide(&write, &default_read(), ro, &split, now, 0).unwrap_err().code, "08006");
}

#[test]
fn least_connections_prefers_the_idlest_replica_per_weight() {
    let now = Instant::now();
    let read = Class::read("read");
    let free = SessionView::default();
    let mut t = topo(now, &[(1, false), (2, false), (1, true)], true);
    t.least_connections = true;
    let pick = |ticket, loads: &[u32]| {
        let p = Pick { ticket, loads: Some(loads) };
        decide(&read, &default_read(), free, &t, now, p).unwrap().node
    };
    assert_eq!(pick(0, &[9, 3, 3, 0]), 2, "3 per weight 2 beats 3 per weight 1");
    assert_eq!(pick(0, &[9, 1, 4, 0]), 1);
    assert_eq!(pick(0, &[9, 0, 0, 0]), 1, "ties rotate by ticket");
    assert_eq!(pick(1, &[9, 0, 0, 0]), 2);
    assert_eq!(pick(5, &[9, 9, 9, 0]), 2, "a down replica is never chosen, however idle");
}

#[test]
fn reads_after_a_write_need_a_replica_that_has_replayed_it() {
    let now = Instant::now();
    let read = Class::read("read");
    let mut t = topo(now, &[(1, false), (1, false)], true);
    t.nodes[1].wal = crate::topology::Wal { replay_lsn: Some(100), timeline: Some(1), ..Default::default() };
    t.nodes[2].wal = crate::topology::Wal { replay_lsn: Some(300), timeline: Some(1), ..Default::default() };
    let view = |causal| SessionView { causal, ..SessionView::default() };
    let label = |causal, ticket| {
        let d = decide(&read, &default_read(), view(causal), &t, now, ticket).unwrap();
        (d.node, d.label(&read).to_string())
    };
    assert_eq!(label(Causal::Primary, 0), (0, "causal".into()), "LSN not known yet: primary");
    let need = |lsn, timeline| Causal::Lsn { lsn, timeline };
    for ticket in 0..4 {
        assert_eq!(label(need(200, Some(1)), ticket).0, 2, "only the replica past the commit");
    }
    assert_eq!(label(need(400, Some(1)), 0), (0, "causal".into()), "none has it yet");
    assert_eq!(label(need(200, Some(2)), 0).0, 0, "never compare LSNs across timelines");
    let mut seen = [0; 3];
    for ticket in 0..4 {
        seen[label(need(50, Some(1)), ticket).0] += 1;
    }
    assert_eq!(seen, [0, 2, 2], "both caught up: both used");
    let write = Class::write("write:insert");
    assert_eq!(decide(&write, &default_read(), view(need(400, Some(1))), &t, now, 0).unwrap().node, 0);
}

/// Found by `benches/compare.sh` with the primary alone: after any write, every read
/// waited `causal_wait` for a replica that did not exist.
#[test]
fn a_read_needing_a_position_goes_to_the_primary_at_once_when_no_replica_could_serve_it() {
    let now = Instant::now();
    let read = Class::read("read");
    let view = SessionView { causal: Causal::Lsn { lsn: 400, timeline: Some(1) }, ..SessionView::default() };
    let unknown = SessionView { causal: Causal::Primary, ..SessionView::default() };
    for t in [topo(now, &[], true), topo(now, &[(1, true), (1, true)], true)] {
        let d = decide(&read, &default_read(), view, &t, now, 0).unwrap();
        assert_eq!((d.node, d.label(&read)), (0, "no_replica"), "no replica to wait for");
        let d = decide(&read, &default_read(), unknown, &t, now, 0).unwrap();
        assert_eq!((d.node, d.label(&read)), (0, "no_replica"), "no position worth asking the primary for");
    }
    let behind = topo(now, &[(1, false)], true);
    let d = decide(&read, &default_read(), view, &behind, now, 0).unwrap();
    assert_eq!((d.node, d.label(&read)), (0, "causal"), "a replica that may yet catch up: worth waiting for");
}

#[test]
fn max_lag_keeps_reads_off_replicas_further_behind() {
    let now = Instant::now();
    let read = Class::read("read");
    let mut t = topo(now, &[(1, false), (1, false)], true);
    t.nodes[1].lag = Some(Duration::from_secs(2));
    t.nodes[2].lag = Some(Duration::from_millis(50));
    let fresh = ReadRoute {
        target: Target::Replica,
        reason: Arc::from("hint"),
        max_lag: Some(Duration::from_millis(200)),
        limits: None,
        scope: None,
    };
    for ticket in 0..4 {
        assert_eq!(decide(&read, &fresh, SessionView::default(), &t, now, ticket).unwrap().node, 2);
    }
    t.nodes[2].lag = None;
    let d = decide(&read, &fresh, SessionView::default(), &t, now, 0).unwrap();
    assert_eq!((d.node, d.label(&read)), (0, "max_lag"), "unknown lag does not qualify");
}

#[test]
fn group_reads_stay_in_their_group_and_fall_back_as_configured() {
    use crate::config::Fallback;
    use crate::rules::{Group, Limits};
    let now = Instant::now();
    let read = Class::read("read");
    let free = SessionView::default();
    // p, r0 (default group), a (analytics, bit 1).
    let mut t = topo(now, &[(1, false), (1, false)], true);
    t.nodes[2].groups = 0b10;
    let group = |fallback, mask| ReadRoute {
        limits: Some(Arc::new(Limits {
            group: Some(Group { name: Arc::from("analytics"), mask, fallback }),
            ..Limits::default()
        })),
        ..default_read()
    };
    let node = |r: Result<Decision, PgError>| r.map(|d| (d.node, d.reason)).map_err(|e| e.message);
    let report = Reason::Read(Arc::from("default_read"));
    let error = |r: Result<Decision, PgError>| r.map(|_| ()).expect_err("an error").code;

    // Plain reads only ever reach the default group; group reads only theirs.
    for ticket in 0..4 {
        assert_eq!(node(decide(&read, &default_read(), free, &t, now, ticket)), Ok((1, report.clone())));
        assert_eq!(node(decide(&read, &group(Fallback::Error, 0b10), free, &t, now, ticket)), Ok((2, report.clone())));
    }
    // The group's replica is down: each fallback as configured.
    let mut down = t.clone();
    down.nodes[2].healthy = false;
    assert_eq!(error(decide(&read, &group(Fallback::Error, 0b10), free, &down, now, 0)), sqlstate::CONNECTION_FAILURE);
    let e = decide(&read, &group(Fallback::Error, 0b10), free, &down, now, 0).expect_err("error");
    assert!(e.message.contains("group \"analytics\""), "{}", e.message);
    assert_eq!(node(decide(&read, &group(Fallback::Default, 0b10), free, &down, now, 0)), Ok((1, report.clone())));
    assert_eq!(node(decide(&read, &group(Fallback::Primary, 0b10), free, &down, now, 0)), Ok((0, Reason::NoReplica)));
    // A group no node is in (a hint's unknown name) has no replica.
    assert_eq!(error(decide(&read, &group(Fallback::Error, 0), free, &t, now, 0)), sqlstate::CONNECTION_FAILURE);
    // With the default group down too, `default` falls back as a plain read does.
    let mut both = down.clone();
    both.nodes[1].healthy = false;
    assert_eq!(node(decide(&read, &group(Fallback::Default, 0b10), free, &both, now, 0)), Ok((0, Reason::NoReplica)));
    assert_eq!(node(decide(&read, &default_read(), free, &both, now, 0)), Ok((0, Reason::NoReplica)));
    both.no_replica_error = true;
    assert_eq!(
        error(decide(&read, &group(Fallback::Default, 0b10), free, &both, now, 0)),
        sqlstate::CONNECTION_FAILURE
    );
    // The analytics replica never takes plain reads, even with the default group down.
    let mut default_down = t.clone();
    default_down.nodes[1].healthy = false;
    assert_eq!(node(decide(&read, &default_read(), free, &default_down, now, 0)), Ok((0, Reason::NoReplica)));
    // Read-your-writes within the group: a replica of the group that has the write, else
    // the fallback (the primary has it; a default replica must have it too).
    let wal = |lsn| crate::topology::Wal { replay_lsn: Some(lsn), timeline: Some(1), ..Default::default() };
    let mut behind = t.clone();
    behind.nodes[1].wal = wal(500);
    behind.nodes[2].wal = wal(100);
    let wrote = SessionView { causal: Causal::Lsn { lsn: 300, timeline: Some(1) }, ..free };
    assert_eq!(
        error(decide(&read, &group(Fallback::Error, 0b10), wrote, &behind, now, 0)),
        sqlstate::CONNECTION_FAILURE
    );
    assert_eq!(node(decide(&read, &group(Fallback::Primary, 0b10), wrote, &behind, now, 0)), Ok((0, Reason::Causal)));
    assert_eq!(node(decide(&read, &group(Fallback::Default, 0b10), wrote, &behind, now, 0)), Ok((1, report.clone())));
    behind.nodes[2].wal = wal(300);
    assert_eq!(node(decide(&read, &group(Fallback::Error, 0b10), wrote, &behind, now, 0)), Ok((2, report)));
}
