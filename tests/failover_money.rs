//! Failover under a money workload. Clients deposit (unique provider ids), withdraw
//! (never below zero) and read balances through pgroute, against a primary with
//! synchronous replication (`ANY 1` of two standbys). The primary is killed mid-run; the
//! harness promotes the most advanced standby (as an HA engine would) and points the other
//! at it. Then, on the new primary:
//!
//! - every deposit or withdrawal a client was told committed is there (0 lost);
//! - every one reported `not committed` (or that failed before its COMMIT) is not;
//! - every account's balance is its deposits minus its withdrawals, never negative;
//! - the old primary, restarted as a second primary, gets none of the writes made after.
//!
//! Then a replica is killed under load: no write fails, only reads in flight there may.
//! Prints the figures (`cargo test --test failover_money -- --nocapture`;
//! `benches/failover.sh` runs it several times). Own cluster.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, node_ctl};
use tokio_postgres::{Client, NoTls};

const ACCOUNTS: i32 = 16;
const START_BALANCE: i64 = 1_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdrawal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    /// The COMMIT's answer said COMMIT.
    Acknowledged,
    /// pgroute: `08006`, detail `pgroute: transaction committed`.
    ReportedCommitted,
    /// pgroute: `08006`, detail `pgroute: transaction not committed`.
    ReportedNotCommitted,
    /// `40003`.
    Unknown,
    /// Failed before its COMMIT was sent: rolled back.
    FailedBefore,
    /// The withdrawal found too little money and rolled back.
    Declined,
    /// The COMMIT failed with something else (an error the server gave it).
    CommitError,
    /// The connection closed with no error for this request: pgroute's FATAL went to an
    /// earlier request the driver pipelined (tokio_postgres closes the statement of each
    /// `execute` behind it), as a dying server's would. Nothing is claimed.
    Closed,
}

#[derive(Debug, Clone)]
struct Op {
    id: String,
    kind: Kind,
    account: i32,
    amount: i64,
    outcome: Outcome,
    ended: Instant,
}

#[derive(Default)]
struct Log {
    ops: Vec<Op>,
    read_errors: Vec<(Instant, String)>,
    reads: u64,
    negative_reads: u64,
}

async fn connect(port: u16) -> Option<Client> {
    let conninfo = format!("host=127.0.0.1 port={port} user=app password=app dbname=app connect_timeout=2");
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await.ok()?;
    tokio::spawn(conn);
    Some(client)
}

fn commit_outcome(e: &tokio_postgres::Error) -> Outcome {
    match e.as_db_error() {
        Some(db) if db.code().code() == "40003" => Outcome::Unknown,
        Some(db) if db.detail() == Some("pgroute: transaction committed") => Outcome::ReportedCommitted,
        Some(db) if db.detail() == Some("pgroute: transaction not committed") => Outcome::ReportedNotCommitted,
        Some(_) => Outcome::CommitError,
        None => {
            if std::env::var_os("PGROUTE_FAILOVER_VERBOSE").is_some() {
                eprintln!("COMMIT closed: {e:?}");
            }
            Outcome::Closed
        }
    }
}

/// One money operation; `Err` when the connection is unusable afterwards.
async fn run_op(client: &Client, kind: Kind, id: &str, account: i32, amount: i64) -> (Outcome, bool) {
    let before = |e: tokio_postgres::Error| {
        if std::env::var_os("PGROUTE_FAILOVER_VERBOSE").is_some() {
            eprintln!("{id}: failed before its COMMIT: {:?}", e.as_db_error().map(|d| (d.code().code(), d.message())));
        }
        (Outcome::FailedBefore, false)
    };
    if let Err(e) = client.batch_execute("BEGIN").await {
        return before(e);
    }
    match kind {
        Kind::Deposit => {
            let insert = client
                .execute(
                    "INSERT INTO deposits (provider_id, account, amount) VALUES ($1, $2, $3)",
                    &[&id, &account, &amount],
                )
                .await;
            if let Err(e) = insert {
                return before(e);
            }
            if let Err(e) =
                client.execute("UPDATE accounts SET balance = balance + $2 WHERE id = $1", &[&account, &amount]).await
            {
                return before(e);
            }
            // Deposits commit in the simple protocol, withdrawals in the extended one.
            match client.batch_execute("COMMIT").await {
                Ok(()) => (Outcome::Acknowledged, true),
                Err(e) => (commit_outcome(&e), false),
            }
        }
        Kind::Withdrawal => {
            let row = client.query_one("SELECT balance FROM accounts WHERE id = $1 FOR UPDATE", &[&account]).await;
            let balance: i64 = match row {
                Ok(r) => r.get(0),
                Err(e) => return before(e),
            };
            if balance < amount {
                return match client.batch_execute("ROLLBACK").await {
                    Ok(()) => (Outcome::Declined, true),
                    Err(_) => (Outcome::Declined, false),
                };
            }
            let insert = client
                .execute("INSERT INTO withdrawals (id, account, amount) VALUES ($1, $2, $3)", &[&id, &account, &amount])
                .await;
            if let Err(e) = insert {
                return before(e);
            }
            if let Err(e) =
                client.execute("UPDATE accounts SET balance = balance - $2 WHERE id = $1", &[&account, &amount]).await
            {
                return before(e);
            }
            match client.execute("COMMIT", &[]).await {
                Ok(_) => (Outcome::Acknowledged, true),
                Err(e) => (commit_outcome(&e), false),
            }
        }
    }
}

/// A client: deposits, withdrawals and balance reads until `stop`, reconnecting after
/// any error.
async fn worker(port: u16, phase: &'static str, w: usize, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_ref() else {
            client = connect(port).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        n += 1;
        let account = ((w as u64 * 7 + n) % ACCOUNTS as u64) as i32 + 1;
        if n.is_multiple_of(3) {
            let read = c.query_one("SELECT balance FROM accounts WHERE id = $1", &[&account]).await;
            let mut l = log.lock().unwrap();
            l.reads += 1;
            match read {
                Ok(r) => l.negative_reads += u64::from(r.get::<_, i64>(0) < 0),
                Err(e) => {
                    l.read_errors.push((Instant::now(), e.to_string()));
                    client = None;
                }
            }
            continue;
        }
        let kind = if n % 3 == 1 { Kind::Deposit } else { Kind::Withdrawal };
        let amount = if kind == Kind::Deposit { 10 + (n % 7) as i64 } else { 5 + (n % 11) as i64 };
        let id = format!("{phase}-w{w}-{n}");
        let (outcome, usable) = run_op(c, kind, &id, account, amount).await;
        if !usable {
            client = None;
        }
        log.lock().unwrap().ops.push(Op { id, kind, account, amount, outcome, ended: Instant::now() });
    }
}

async fn load(
    port: u16,
    phase: &'static str,
    workers: usize,
    stop: &Arc<AtomicBool>,
    log: &Arc<Mutex<Log>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers).map(|w| tokio::spawn(worker(port, phase, w, stop.clone(), log.clone()))).collect()
}

async fn wait_sync_standby(primary: &Client) {
    for _ in 0..200 {
        let n: i64 = primary
            .query_one("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')", &[])
            .await
            .unwrap()
            .get(0);
        if n >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no synchronous standby");
}

async fn ids(client: &Client, sql: &str) -> HashMap<String, i64> {
    client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_survives_a_failover_under_load() {
    let workers = env_or("PGROUTE_FAILOVER_WORKERS", 8) as usize;
    let secs = env_or("PGROUTE_FAILOVER_SECS", 3);
    let c = cluster();
    let p = common::proxy_auto("[health]\ninterval = \"100ms\"\nprimary_wait = \"5s\"\n").await;
    let primary = c.direct(0).await;
    primary
        .batch_execute(&format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, {START_BALANCE} FROM generate_series(1, {ACCOUNTS}) g;
             CREATE TABLE deposits (provider_id text PRIMARY KEY, account int NOT NULL, amount bigint NOT NULL);
             CREATE TABLE withdrawals (id text PRIMARY KEY, account int NOT NULL, amount bigint NOT NULL);"
        ))
        .await
        .unwrap();
    primary
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (pgroute_node1, pgroute_node2)'")
        .await
        .unwrap();
    primary.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    wait_sync_standby(&primary).await;
    c.wait_replicas_caught_up().await;

    // Load, then the primary dies; the most advanced standby is promoted.
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks = load(p.port, "failover", workers, &stop, &log).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    node_ctl("node-kill", 0);
    let killed = Instant::now();
    let mut best = (1, 0u64);
    for node in 1..=2 {
        let lsn: String = c
            .direct(node)
            .await
            .query_one("SELECT (coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) - '0/0')::text", &[])
            .await
            .unwrap()
            .get(0);
        let lsn: u64 = lsn.parse().unwrap();
        if lsn > best.1 {
            best = (node, lsn);
        }
    }
    let (new, other) = (best.0, 3 - best.0);
    c.direct(new).await.batch_execute("SELECT pg_promote()").await.unwrap();
    let promoted = killed.elapsed();
    let follower = c.direct(other).await;
    let new_port = c.replica_ports[new - 1];
    for sql in [
        format!("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={new_port} user=postgres'"),
        "ALTER SYSTEM SET primary_slot_name = ''".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        follower.batch_execute(&sql).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // What the clients were told, against what the new primary has.
    let log = std::mem::take(&mut *log.lock().unwrap());
    let newp = c.direct(new).await;
    let deposits = ids(&newp, "SELECT provider_id, amount FROM deposits").await;
    let withdrawals = ids(&newp, "SELECT id, amount FROM withdrawals").await;
    let mut counts: HashMap<Outcome, usize> = HashMap::new();
    let (mut lost, mut wrong_not_committed, mut unknown_present) = (0, 0, 0);
    for op in &log.ops {
        *counts.entry(op.outcome).or_default() += 1;
        let table = if op.kind == Kind::Deposit { &deposits } else { &withdrawals };
        let there = table.get(&op.id);
        assert!(there.is_none_or(|a| *a == op.amount), "{} has another amount", op.id);
        match op.outcome {
            Outcome::Acknowledged | Outcome::ReportedCommitted => lost += usize::from(there.is_none()),
            Outcome::ReportedNotCommitted | Outcome::FailedBefore | Outcome::Declined | Outcome::CommitError => {
                wrong_not_committed += usize::from(there.is_some())
            }
            Outcome::Unknown | Outcome::Closed => unknown_present += usize::from(there.is_some()),
        }
    }
    let balances: Vec<(i32, i64)> = newp
        .query("SELECT id, balance FROM accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut mismatched = 0;
    for (id, balance) in &balances {
        let d: i64 = log
            .ops
            .iter()
            .filter(|o| o.account == *id && o.kind == Kind::Deposit)
            .filter_map(|o| deposits.get(&o.id))
            .sum();
        let w: i64 = log
            .ops
            .iter()
            .filter(|o| o.account == *id && o.kind == Kind::Withdrawal)
            .filter_map(|o| withdrawals.get(&o.id))
            .sum();
        mismatched += usize::from(START_BALANCE + d - w != *balance || *balance < 0);
    }
    let first_write = log
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Acknowledged && o.ended > killed)
        .map(|o| o.ended - killed)
        .min();
    let errors = log.ops.iter().filter(|o| !matches!(o.outcome, Outcome::Acknowledged | Outcome::Declined)).count();
    let count = |o| counts.get(&o).copied().unwrap_or(0);
    eprintln!(
        "FAILOVER workers={workers} ops={} acknowledged={} reported_committed={} reported_not_committed={} unknown={} closed={} (of these two, present {unknown_present}) failed_before_commit={} commit_errors={} lost={lost} wrong_not_committed={wrong_not_committed} balance_mismatches={mismatched} promoted_after_ms={} first_write_after_kill_ms={} client_errors={errors} read_errors={} reads={}",
        log.ops.len(),
        count(Outcome::Acknowledged),
        count(Outcome::ReportedCommitted),
        count(Outcome::ReportedNotCommitted),
        count(Outcome::Unknown),
        count(Outcome::Closed),
        count(Outcome::FailedBefore),
        count(Outcome::CommitError),
        promoted.as_millis(),
        first_write.map_or(-1, |d| d.as_millis() as i64),
        log.read_errors.len(),
        log.reads,
    );
    assert!(count(Outcome::Acknowledged) > 0, "no money moved");
    assert_eq!(lost, 0, "commits the clients were told about are missing");
    assert_eq!(wrong_not_committed, 0, "rows reported not committed are there");
    assert_eq!(mismatched, 0, "balances do not add up");
    assert_eq!(log.negative_reads, 0, "a negative balance was read");
    assert!(first_write.is_some(), "no write was accepted after the failover");

    // The old primary comes back as a second primary: no write reaches it.
    node_ctl("node-start", 0);
    let old = c.direct(0).await;
    let before: i64 = old.query_one("SELECT count(*) FROM deposits", &[]).await.unwrap().get(0);
    let mut accepted = 0;
    for i in 0..20 {
        let client = connect(p.port).await.expect("connect after the failover");
        let (outcome, _) = run_op(&client, Kind::Deposit, &format!("after-{i}"), 1, 1).await;
        accepted += usize::from(outcome == Outcome::Acknowledged);
    }
    let after: i64 = old.query_one("SELECT count(*) FROM deposits", &[]).await.unwrap().get(0);
    assert_eq!(after, before, "a write reached the old primary");
    let on_new: i64 =
        newp.query_one("SELECT count(*) FROM deposits WHERE provider_id LIKE 'after-%'", &[]).await.unwrap().get(0);
    assert_eq!(on_new, accepted as i64, "every accepted write is on the new primary");
    eprintln!("FAILOVER old_primary_back: accepted={accepted} of 20, on_old_primary=0");

    // A replica dies under load: writes go on; only reads in flight there may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks = load(p.port, "replica", workers, &stop, &log).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    node_ctl("node-kill", other);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    let write_errors =
        log.ops.iter().filter(|o| !matches!(o.outcome, Outcome::Acknowledged | Outcome::Declined)).count();
    eprintln!(
        "FAILOVER replica_killed: ops={} write_errors={write_errors} reads={} read_errors={}",
        log.ops.len(),
        log.reads,
        log.read_errors.len()
    );
    assert_eq!(write_errors, 0, "a replica's death failed writes");
    assert!(log.read_errors.len() <= workers, "more read errors than reads in flight: {:?}", log.read_errors);
}
