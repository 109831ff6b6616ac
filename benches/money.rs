//! The money workload, with each causal scope side by side.
//!
//!   cargo bench --bench money            # 3 x 8 s per setup, 8 wallets, 4 browsers
//!   MONEY_REPS=5 MONEY_SECS=20 MONEY_WALLETS=16 MONEY_BROWSERS=4 cargo bench --bench money
//!
//! Starts the test cluster (scripts/cluster.sh: a primary and two streaming replicas),
//! makes replica 1 apply WAL 2 s late (it stays in rotation: `max_replica_lag = "30s"`)
//! and keeps replica 2 healthy. Then runs the same workload direct to the primary and
//! through pgroute (in this process, on a thread of its own, one event loop as in
//! production), each on its own schema:
//! - `none`: `causal_scope = "none"`, untagged (a naive read/write split: the control,
//!   which must show anomalies);
//! - `default`: the shipped configuration (`instance` scope), untagged: what an
//!   application that never heard of pgroute's tags gets;
//! - `default-0s`: the same with `causal_wait = "0s"` (never wait: the primary instead);
//! - `session+tags`: `causal_scope = "session"` with every money read tagged
//!   `key=...` (read-your-writes per session and per key);
//! - `cluster`: `causal_scope = "cluster"`, untagged (the primary's position at each read).
//!
//! A wallet's teller has three connections and loops over:
//! 1. a deposit on connection A (a transaction), then A reads the balance: it must be
//!    what the deposit's UPDATE returned (else a stale balance);
//! 2. a provider webhook delivered twice, to A and B: each checks whether the provider's
//!    transaction id is already credited (a read, tagged `key=ptx:...` in the tagged
//!    setups) and credits if not (a double credit when B does not see A's credit);
//! 3. a withdrawal created on A (tagged `key=wd:...` likewise), whose status B and C check before
//!    paying it out (a double payout when C does not see B's payout; a stale read when
//!    the withdrawal is missing).
//!
//! Browsers read other wallets' history and a leaderboard, never after their own
//! writes. Every read says which server answered (`inet_server_port()`), so the table
//! gives the replica share of money reads (the checks and balance reads above) and of
//! browsing reads. At the end the books are checked on the primary: double credits and
//! payouts, deposits acknowledged but missing (lost), and the ledger against the
//! balances. Under `cargo test` (no `--bench`) it runs 1 s per setup with fewer clients
//! and fails if any setup other than `none` shows an anomaly; under `--bench` it also
//! fails if `none` shows none (the control could not fail).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

struct Setup {
    name: &'static str,
    /// The `[routing]` lines for pgroute; `None`: direct to the primary.
    routing: Option<&'static str>,
    /// Money reads and writes carry `/* pgroute: key=... */` tags.
    tagged: bool,
}

const SETUPS: [Setup; 6] = [
    Setup { name: "direct", routing: None, tagged: false },
    Setup { name: "none", routing: Some("causal_scope = \"none\""), tagged: false },
    // The test harness's config sets causal_scope = "none" unless the text names the key:
    // the comment names it, so these two run the shipped default.
    Setup { name: "default", routing: Some("# causal_scope: the shipped default"), tagged: false },
    Setup {
        name: "default-0s",
        routing: Some("# causal_scope: the shipped default\ncausal_wait = \"0s\""),
        tagged: false,
    },
    Setup { name: "session+tags", routing: Some("causal_scope = \"session\""), tagged: true },
    Setup { name: "cluster", routing: Some("causal_scope = \"cluster\""), tagged: false },
];

/// Indexes in `SETUPS`: the control and the default.
const NONE: usize = 1;
const DEFAULT: usize = 2;

#[derive(Default)]
struct Tally {
    rounds: AtomicU64,
    statements: AtomicU64,
    deposits_acked: AtomicU64,
    money_reads: AtomicU64,
    money_on_replica: AtomicU64,
    browse_reads: AtomicU64,
    browse_on_replica: AtomicU64,
    stale: AtomicU64,
}

struct Run {
    schema: String,
    tagged: bool,
    primary_port: u16,
    tally: Tally,
    stop: AtomicBool,
}

impl Run {
    /// The key tag for a money statement, in the tagged setups.
    fn tag(&self, key: &str) -> String {
        if self.tagged {
            format!("/* pgroute: key={key} */ ")
        } else {
            String::new()
        }
    }

    fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `sql` (simple protocol, as an application's query string); the first row's
    /// columns.
    async fn first_row(&self, c: &Client, sql: &str) -> Vec<String> {
        let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        self.add(&self.tally.statements, 1);
        msgs.iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("").to_string()).collect()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// A money read: its value and whether a replica answered (the last column is the
    /// server's port).
    async fn money_read(&self, c: &Client, sql: &str) -> String {
        let row = self.first_row(c, sql).await;
        self.add(&self.tally.money_reads, 1);
        if row.last().is_some_and(|p| p != &self.primary_port.to_string()) {
            self.add(&self.tally.money_on_replica, 1);
        }
        row.into_iter().next().unwrap_or_default()
    }
}

async fn teller(run: Arc<Run>, conns: [Client; 3], wallet: i64) {
    let s = &run.schema;
    let [a, b, c] = &conns;
    let mut round = 0i64;
    while !run.stop.load(Ordering::Relaxed) {
        round += 1;
        // 1. Deposit, then the balance on the same connection.
        let deposit = format!(
            "BEGIN; UPDATE {s}.accounts SET balance = balance + 10 WHERE id = {wallet} RETURNING balance; \
             INSERT INTO {s}.ledger (account_id, kind, amount, provider_tx) VALUES ({wallet}, 'deposit', 10, 'dep-{wallet}-{round}'); \
             COMMIT"
        );
        let balance = run.first_row(a, &deposit).await.into_iter().next().unwrap_or_default();
        run.add(&run.tally.deposits_acked, 1);
        let seen = run
            .money_read(a, &format!("SELECT balance, inet_server_port() FROM {s}.accounts WHERE id = {wallet}"))
            .await;
        if seen != balance {
            run.add(&run.tally.stale, 1);
        }
        // 2. A webhook delivered twice: check, then credit.
        let ptx = format!("ptx-{wallet}-{round}");
        let tag = run.tag(&format!("ptx:{ptx}"));
        for conn in [a, b] {
            let check = format!("{tag}SELECT count(*), inet_server_port() FROM {s}.ledger WHERE provider_tx = '{ptx}'");
            if run.money_read(conn, &check).await == "0" {
                let credit = format!(
                    "{tag}BEGIN; UPDATE {s}.accounts SET balance = balance + 5 WHERE id = {wallet}; \
                     INSERT INTO {s}.ledger (account_id, kind, amount, provider_tx) VALUES ({wallet}, 'webhook', 5, '{ptx}'); COMMIT"
                );
                run.first_row(conn, &credit).await;
            }
        }
        // 3. A withdrawal, checked by two other connections before each pays it out.
        let wd = wallet * 10_000_000 + round;
        let tag = run.tag(&format!("wd:{wd}"));
        let create = format!(
            "{tag}INSERT INTO {s}.withdrawals (id, account_id, amount, status) VALUES ({wd}, {wallet}, 1, 'pending')"
        );
        run.first_row(a, &create).await;
        for conn in [b, c] {
            let check = format!(
                "{tag}SELECT coalesce((SELECT status FROM {s}.withdrawals WHERE id = {wd}), 'missing'), inet_server_port()"
            );
            let status = run.money_read(conn, &check).await;
            if status == "missing" {
                run.add(&run.tally.stale, 1);
            } else if status == "pending" {
                let pay = format!(
                    "{tag}BEGIN; UPDATE {s}.withdrawals SET status = 'paid', payouts = payouts + 1 WHERE id = {wd}; \
                     UPDATE {s}.accounts SET balance = balance - 1 WHERE id = {wallet}; \
                     INSERT INTO {s}.ledger (account_id, kind, amount, provider_tx) VALUES ({wallet}, 'withdrawal', -1, 'wd-{wd}'); COMMIT"
                );
                run.first_row(conn, &pay).await;
            }
        }
        run.add(&run.tally.rounds, 1);
    }
}

async fn browser(run: Arc<Run>, conn: Client, wallets: i64, seed: i64) {
    let s = &run.schema;
    let mut i = seed;
    while !run.stop.load(Ordering::Relaxed) {
        i += 1;
        let sql = if i % 2 == 0 {
            let other = i % wallets + 1;
            format!(
                "SELECT inet_server_port(), coalesce(sum(amount), 0) FROM \
                 (SELECT amount FROM {s}.ledger WHERE account_id = {other} ORDER BY id DESC LIMIT 20) h"
            )
        } else {
            format!(
                "SELECT inet_server_port(), array_agg(id) FROM (SELECT id FROM {s}.accounts ORDER BY balance DESC LIMIT 10) t"
            )
        };
        let row = run.first_row(&conn, &sql).await;
        run.add(&run.tally.browse_reads, 1);
        if row.first().is_some_and(|p| p != &run.primary_port.to_string()) {
            run.add(&run.tally.browse_on_replica, 1);
        }
    }
}

/// The books, on the primary: double credits, double payouts, lost deposits, and whether
/// the ledger sums to the balances.
async fn audit(schema: &str, acked: u64) -> [u64; 4] {
    let primary = common::cluster().direct(0).await;
    let q = |sql: String| {
        let primary = &primary;
        async move { primary.query_one(&sql, &[]).await.expect("audit").get::<_, i64>(0) }
    };
    let double_credit = q(format!(
        "SELECT count(*) FROM (SELECT provider_tx FROM {schema}.ledger WHERE kind = 'webhook' GROUP BY 1 HAVING count(*) > 1) d"
    ))
    .await;
    let double_payout = q(format!("SELECT count(*) FROM {schema}.withdrawals WHERE payouts > 1")).await;
    let deposits = q(format!("SELECT count(DISTINCT provider_tx) FROM {schema}.ledger WHERE kind = 'deposit'")).await;
    let ledger = q(format!("SELECT coalesce(sum(amount), 0)::bigint FROM {schema}.ledger")).await;
    let balances = q(format!("SELECT coalesce(sum(balance), 0)::bigint FROM {schema}.accounts")).await;
    [double_credit as u64, double_payout as u64, acked.saturating_sub(deposits as u64), u64::from(ledger != balances)]
}

/// pgroute on a thread of its own (one event loop, as `[listen] workers = 1` runs it);
/// returns its port, what stops it, and the thread, which ends with pgroute's metrics.
fn start_proxy(routing: &str) -> (u16, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<String>) {
    let text = common::cluster().config(&format!("[routing]\n{routing}\n[health]\nmax_replica_lag = \"30s\"\n"));
    let config = pgroute::config::Config::parse(&text, "money.toml").expect("bench config");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let proxy = pgroute::start(config).await.expect("start pgroute");
            port_tx.send(proxy.addr.port()).expect("report the port");
            let _ = stop_rx.await;
            proxy.shutdown().await;
            pgroute::metrics::render(&proxy.shared.classifier)
        })
    });
    (port_rx.recv().expect("pgroute started"), stop_tx, thread)
}

/// A counter from pgroute's metrics text (the registry is per process: cumulative over
/// the setups run so far).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// The counters of pgroute's read-your-writes waits: polls, waits, seconds waited.
fn wait_counters(metrics: &str) -> [f64; 3] {
    [
        counter(metrics, "pgroute_replay_polls_total"),
        counter(metrics, "pgroute_causal_waits_total{outcome=\"replica\"}")
            + counter(metrics, "pgroute_causal_waits_total{outcome=\"primary\"}"),
        counter(metrics, "pgroute_causal_wait_seconds_sum"),
    ]
}

async fn create_schema(schema: &str, wallets: i64) {
    common::cluster()
        .direct(0)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; GRANT ALL ON SCHEMA {schema} TO app;
             CREATE TABLE {schema}.accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE {schema}.ledger (id bigserial PRIMARY KEY, account_id int, kind text, amount bigint, provider_tx text);
             CREATE INDEX ON {schema}.ledger (provider_tx);
             CREATE INDEX ON {schema}.ledger (account_id, id);
             CREATE TABLE {schema}.withdrawals (id bigint PRIMARY KEY, account_id int, amount bigint, status text, payouts int NOT NULL DEFAULT 0);
             INSERT INTO {schema}.accounts SELECT g, 0 FROM generate_series(1, {wallets}) g;
             GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO app; GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO app;"
        ))
        .await
        .expect("create the money schema");
}

/// One setup's figures: summed over repetitions.
#[derive(Default, Clone, Copy)]
struct Figures {
    secs: f64,
    rounds: u64,
    statements: u64,
    money_reads: u64,
    money_on_replica: u64,
    browse_reads: u64,
    browse_on_replica: u64,
    /// stale reads, double credits, double payouts, lost deposits, ledger mismatches
    anomalies: [u64; 5],
    /// pgroute's replay polls, reads that waited, and seconds they waited.
    waits: [f64; 3],
}

impl Figures {
    fn add(&mut self, secs: f64, t: &Tally, audit: [u64; 4]) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.secs += secs;
        self.rounds += get(&t.rounds);
        self.statements += get(&t.statements);
        self.money_reads += get(&t.money_reads);
        self.money_on_replica += get(&t.money_on_replica);
        self.browse_reads += get(&t.browse_reads);
        self.browse_on_replica += get(&t.browse_on_replica);
        self.anomalies[0] += get(&t.stale);
        for (sum, found) in self.anomalies[1..].iter_mut().zip(audit) {
            *sum += found;
        }
    }

    fn rate(&self) -> f64 {
        self.rounds as f64 / self.secs.max(f64::MIN_POSITIVE)
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.2}", part as f64 / whole as f64)
    }
}

/// Runs the workload once against `port` (pgroute, or the primary itself).
async fn run_once(setup: &Setup, schema: &str, port: u16, user: &str, counts: (i64, i64), secs: u64) -> (f64, Tally) {
    let (wallets, browsers) = counts;
    let cluster = common::cluster();
    let conninfo = format!("host=127.0.0.1 port={port} user={user} password={user} dbname=app");
    let run = Arc::new(Run {
        schema: schema.to_string(),
        tagged: setup.tagged,
        primary_port: cluster.primary_port,
        tally: Tally::default(),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for wallet in 1..=wallets {
        let conns =
            [common::connect(&conninfo).await, common::connect(&conninfo).await, common::connect(&conninfo).await];
        tasks.push(tokio::spawn(teller(run.clone(), conns, wallet)));
    }
    for b in 0..browsers {
        tasks.push(tokio::spawn(browser(run.clone(), common::connect(&conninfo).await, wallets, b * 7)));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    run.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("workload task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let run = Arc::into_inner(run).expect("tasks done");
    (elapsed, run.tally)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = env_or("MONEY_SECS", if full { 8 } else { 1 });
    let reps = env_or("MONEY_REPS", if full { 3 } else { 1 }).max(1) as usize;
    let wallets = env_or("MONEY_WALLETS", if full { 8 } else { 3 }) as i64;
    let browsers = env_or("MONEY_BROWSERS", if full { 4 } else { 1 }) as i64;
    let cluster = common::cluster();
    let schema = |rep: usize, setup: &Setup| {
        format!("money_{}_{rep}_{}", setup.name.replace(['+', '-'], "_"), std::process::id())
    };
    for rep in 0..reps {
        for setup in &SETUPS {
            create_schema(&schema(rep, setup), wallets).await;
        }
    }
    // Read replicas as one runs them: without feedback, the primary's cleanup of the
    // hot `accounts` rows cancels replica reads (40001, conflict with recovery).
    for replica in 1..=cluster.replica_ports.len() {
        let r = cluster.direct(replica).await;
        r.batch_execute("ALTER SYSTEM SET hot_standby_feedback = on").await.expect("feedback");
        r.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
    }
    cluster.wait_replicas_caught_up().await;
    let delayed = cluster.delay_replica(1, "2s").await;

    // Setups alternate within each repetition, so drift on this shared machine spreads
    // over all of them.
    let mut figures = [Figures::default(); SETUPS.len()];
    let mut ratios: Vec<f64> = Vec::new();
    let mut waits_so_far = [0.0; 3];
    for rep in 0..reps {
        let mut rates = [0.0; SETUPS.len()];
        for (i, setup) in SETUPS.iter().enumerate() {
            let schema = schema(rep, setup);
            let (elapsed, tally) = match setup.routing {
                Some(routing) => {
                    let (port, stop, thread) = start_proxy(routing);
                    let result = run_once(setup, &schema, port, "app", (wallets, browsers), secs).await;
                    let _ = stop.send(());
                    let waits = wait_counters(&thread.join().expect("pgroute thread"));
                    for ((sum, now), before) in figures[i].waits.iter_mut().zip(waits).zip(waits_so_far) {
                        *sum += now - before;
                    }
                    waits_so_far = waits;
                    result
                }
                None => run_once(setup, &schema, cluster.primary_port, "postgres", (wallets, browsers), secs).await,
            };
            let audit = audit(&schema, tally.deposits_acked.load(Ordering::Relaxed)).await;
            rates[i] = tally.rounds.load(Ordering::Relaxed) as f64 / elapsed;
            figures[i].add(elapsed, &tally, audit);
        }
        ratios.push(rates[DEFAULT] / rates[NONE]);
    }
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.expect("reset");
    delayed.batch_execute("SELECT pg_reload_conf()").await.expect("reload");

    println!(
        "money workload: {wallets} wallets (3 connections each), {browsers} browsers, {reps} x {secs} s per setup; \
         replica 1 applies WAL 2 s late, replica 2 is healthy"
    );
    println!(
        "{:<12} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7} {:>5} {:>8}",
        "setup",
        "rounds/s",
        "stmts/s",
        "vs none",
        "money@r",
        "brows@r",
        "polls/s",
        "wait ms",
        "stale",
        "dblcred",
        "dblpay",
        "lost",
        "mismatch"
    );
    let reference = figures[NONE].rate();
    let mut anomalies_where_none_allowed = Vec::new();
    for (setup, f) in SETUPS.iter().zip(&figures) {
        let [stale, double_credit, double_payout, lost, mismatch] = f.anomalies;
        println!(
            "{:<12} {:>9.1} {:>8.0} {:>7.2} {:>7} {:>7} {:>7.0} {:>7} {:>6} {:>7} {:>7} {:>5} {:>8}",
            setup.name,
            f.rate(),
            f.statements as f64 / f.secs,
            f.rate() / reference,
            share(f.money_on_replica, f.money_reads),
            share(f.browse_on_replica, f.browse_reads),
            f.waits[0] / f.secs,
            if f.waits[1] > 0.0 { format!("{:.2}", f.waits[2] * 1000.0 / f.waits[1]) } else { "-".into() },
            stale,
            double_credit,
            double_payout,
            lost,
            mismatch
        );
        if setup.name != "none" && f.anomalies.iter().sum::<u64>() > 0 {
            anomalies_where_none_allowed.push(setup.name);
        }
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "(money@r, brows@r: share of money and browsing reads a replica answered; polls/s: replay positions \
         pgroute asked replicas for; wait ms: mean wait of a read that waited for a replica; vs none: rounds/s against \
         causal_scope = none; default / none in each repetition: {})",
        each.join(", ")
    );
    assert!(anomalies_where_none_allowed.is_empty(), "anomalies in {anomalies_where_none_allowed:?}");
    if full {
        assert!(
            figures[NONE].anomalies.iter().sum::<u64>() > 0,
            "the control (causal_scope = none) showed no anomaly: the workload cannot tell the scopes apart"
        );
    }
}
