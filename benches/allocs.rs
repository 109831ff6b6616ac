//! Heap allocations pgroute makes per query, counted by a global allocator on pgroute's
//! own thread only (the client and the test cluster's harness run on others).
//!
//!   cargo bench --bench allocs
//!
//! Starts the test cluster (a primary and two replicas, scripts/cluster.sh) and pgroute
//! in this process on a single-threaded runtime (`[listen] workers = 1`, the default),
//! then drives it with tokio-postgres from another thread: pgbench's -S statement in the
//! simple, extended (unnamed statement) and prepared modes, and a TPC-B-like write
//! transaction. Prints allocations and bytes allocated per query, after a warm-up that
//! fills the classification cache and the pools. The health monitor probes every 10 s
//! here, so its allocations stay out of the per-query figures. Last, it opens idle
//! clients and prints the heap pgroute holds for each (the session task included).
//! Beside the allocations it prints the CPU time pgroute's thread spent per call (user and
//! kernel, from the thread's `schedstat`): on this machine `perf` samples too coarsely to
//! attribute a few microseconds per statement.

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio_postgres::types::Type;

struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed on pgroute's thread.
static LIVE: AtomicI64 = AtomicI64::new(0);
/// pgroute's thread id, for its CPU time.
static PROXY_TID: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds pgroute's thread has run (`/proc/self/task/<tid>/schedstat`, first field).
fn proxy_cpu_ns() -> u64 {
    let tid = PROXY_TID.load(Ordering::Relaxed);
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn count(size: usize) {
    if counted() {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        LIVE.fetch_add(size as i64, Ordering::Relaxed);
    }
}

fn uncount(size: usize) {
    if counted() {
        LIVE.fetch_sub(size as i64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches only
// atomics and a const thread-local without a destructor, so it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        uncount(layout.size());
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        uncount(layout.size());
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
/// as a quick check that it still works.
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Starts pgroute on a thread of its own whose allocations are counted; returns its port.
fn start_proxy() -> u16 {
    let text = common::cluster()
        .config("[health]\ninterval = \"10s\"\nmax_sample_age = \"60s\"\n[routing]\ncausal_scope = \"instance\"\n");
    let config = pgroute::config::Config::parse(&text, "allocs.toml").expect("bench config");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .unwrap_or(0);
        PROXY_TID.store(tid, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let proxy = pgroute::start(config).await.expect("start pgroute");
            tx.send(proxy.addr.port()).expect("report the port");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("pgroute started")
}

/// Runs `one` after a warm-up; prints what pgroute allocated per call.
async fn measure<F, Fut>(name: &str, mut one: F)
where
    F: FnMut(i32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (warmup, calls) = if full_run() { (500, 5000) } else { (20, 100) };
    for i in 0..warmup {
        one(i % 1000 + 1).await;
    }
    let (a0, b0, c0) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed), proxy_cpu_ns());
    for i in 0..calls {
        one(i % 1000 + 1).await;
    }
    let (a, b) = (ALLOCS.load(Ordering::Relaxed) - a0, BYTES.load(Ordering::Relaxed) - b0);
    let cpu_us = proxy_cpu_ns().saturating_sub(c0) as f64 / 1000.0 / calls as f64;
    println!(
        "{name:<30} {:>6.2} allocations {:>7.0} bytes {cpu_us:>6.1} us CPU",
        a as f64 / calls as f64,
        b as f64 / calls as f64
    );
}

/// Heap pgroute holds per idle client: logged in, nothing sent since.
async fn idle_clients(port: u16) {
    let n = if full_run() { 1000 } else { 20 };
    let before = LIVE.load(Ordering::Relaxed);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(common::connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=app")).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!("{:<30} {:>6.0} bytes of heap per idle client ({n} clients)", "idle clients", held as f64 / n as f64);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cluster = common::cluster();
    let setup = cluster.direct(0).await;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS alloc_bench;
             CREATE TABLE alloc_bench (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO alloc_bench SELECT g, 0 FROM generate_series(1, 1000) g;",
        )
        .await
        .expect("set up alloc_bench");
    cluster.wait_replicas_caught_up().await;
    let port = start_proxy();
    let client = common::connect(&format!("host=127.0.0.1 port={port} user=app password=app dbname=app")).await;

    println!("pgroute heap allocations per call (pgroute's thread only)");
    measure("select-only simple", |id| {
        let c = &client;
        async move {
            c.simple_query(&format!("SELECT v FROM alloc_bench WHERE id = {id}")).await.expect("select");
        }
    })
    .await;
    measure("select-only extended", |id| {
        let c = &client;
        async move {
            c.query_typed("SELECT v FROM alloc_bench WHERE id = $1", &[(&id, Type::INT4)]).await.expect("select");
        }
    })
    .await;
    let stmt = client.prepare("SELECT v FROM alloc_bench WHERE id = $1").await.expect("prepare");
    measure("select-only prepared", |id| {
        let (c, s) = (&client, &stmt);
        async move {
            c.query(s, &[&id]).await.expect("select");
        }
    })
    .await;
    // Per transaction: four statements, each its own Query message, as pgbench sends them.
    measure("write transaction (4 queries)", |id| {
        let c = &client;
        async move {
            for sql in [
                "BEGIN".to_string(),
                format!("UPDATE alloc_bench SET v = v + 1 WHERE id = {id}"),
                format!("SELECT v FROM alloc_bench WHERE id = {id}"),
                "COMMIT".to_string(),
            ] {
                c.simple_query(&sql).await.expect("transaction");
            }
        }
    })
    .await;
    measure("autocommit update", |id| {
        let c = &client;
        async move {
            c.simple_query(&format!("UPDATE alloc_bench SET v = v + 1 WHERE id = {id}")).await.expect("update");
        }
    })
    .await;
    measure("BEGIN; COMMIT (2 queries)", |_| {
        let c = &client;
        async move {
            c.simple_query("BEGIN").await.expect("begin");
            c.simple_query("COMMIT").await.expect("commit");
        }
    })
    .await;
    idle_clients(port).await;
}
