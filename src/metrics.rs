//! Prometheus metrics: process-wide counters and gauges, rendered in the text exposition
//! format by a tiny HTTP endpoint (`[admin] metrics_address`).
//!
//! Counters are plain atomics so that counting on the hot path costs one relaxed add.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::CausalScope;

#[derive(Default)]
struct Registry {
    /// routes by node, then reason (nested so that counting needs no allocation), then
    /// the read's causal scope (`SCOPE_LABELS`)
    routes: DashMap<String, DashMap<String, Arc<RouteCounts>>>,
    /// errors sent to clients, by SQLSTATE
    errors: DashMap<String, AtomicU64>,
    parse_errors: AtomicU64,
    clients: AtomicI64,
    pools: DashMap<String, Arc<PoolGauges>>,
    /// per node: (up, usable, lag seconds, lag bytes, timeline, probe seconds, is primary),
    /// -1 unknown
    nodes: DashMap<String, [f64; 7]>,
    /// per node: the reason of its verdict, one of `reason_set`
    reasons: DashMap<String, &'static str>,
    reason_set: OnceLock<&'static [&'static str]>,
    split_brain: AtomicI64,
    key_map_size: AtomicI64,
    key_evictions: AtomicU64,
    causal_waits: DashMap<String, AtomicU64>,
    replay_polls: AtomicU64,
    /// How long reads waited for a replica (causal_wait), all outcomes: a histogram.
    causal_wait: Histogram,
    writes_refused: DashMap<String, AtomicU64>,
    in_doubt: DashMap<String, AtomicU64>,
    /// per rule with `max_concurrent` (names from the configuration)
    rules: DashMap<String, Arc<RuleGauges>>,
}

/// A write refused because no node is a confirmed primary.
pub fn write_refused(reason: &str) {
    bump(&registry().writes_refused, reason.to_string());
}

/// A COMMIT whose connection died before its answer, resolved: `committed`,
/// `not_committed` or `unknown`.
pub fn in_doubt(outcome: &str) {
    bump(&registry().in_doubt, outcome.to_string());
}

/// The `scope` label of a route: a read's causal scope, or `-` for what is no read placed
/// by the read rules (writes, pins, statements inside a transaction).
const SCOPE_LABELS: [&str; SCOPES] = ["-", "none", "session", "instance", "cluster"];
const SCOPES: usize = 5;

fn scope_index(scope: Option<CausalScope>) -> usize {
    match scope {
        None => 0,
        Some(CausalScope::None) => 1,
        Some(CausalScope::Session) => 2,
        Some(CausalScope::Instance) => 3,
        Some(CausalScope::Cluster) => 4,
    }
}

/// Upper bounds (seconds) of the causal wait histogram's buckets.
const WAIT_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A Prometheus histogram of durations: counts per bucket (not cumulative: rendering
/// adds them up), the sum in microseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = WAIT_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(WAIT_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            let le = WAIT_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// A read waited `took` for a replica to catch up (causal_wait); where it went in the end.
pub fn causal_wait(outcome: &str, took: std::time::Duration) {
    let r = registry();
    bump(&r.causal_waits, outcome.to_string());
    r.causal_wait.observe(took);
}

/// The replay watch asked a replica for its replay position.
pub fn replay_poll() {
    registry().replay_polls.fetch_add(1, Ordering::Relaxed);
}

pub fn key_evicted() {
    registry().key_evictions.fetch_add(1, Ordering::Relaxed);
}

pub fn key_map_size(n: usize) {
    registry().key_map_size.store(n as i64, Ordering::Relaxed);
}

pub fn split_brain(on: bool) {
    registry().split_brain.store(i64::from(on), Ordering::Relaxed);
}

/// Records a probe's duration.
pub fn node_probe(node: &str, took: std::time::Duration) {
    registry().nodes.entry(node.to_string()).or_insert([-1.0; 7])[5] = took.as_secs_f64();
}

/// A node's health verdict, as the monitor records it.
pub struct NodeVerdict {
    pub up: bool,
    pub usable: bool,
    pub lag: Option<std::time::Duration>,
    pub lag_bytes: Option<u64>,
    pub timeline: Option<u32>,
    pub primary: bool,
    /// Why (one of `reasons`).
    pub why: &'static str,
    /// Every reason a verdict can give: one series each, so an alert can say why.
    pub reasons: &'static [&'static str],
}

/// Records a node's health verdict.
pub fn node_state(node: &str, v: NodeVerdict) {
    let r = registry();
    let mut e = r.nodes.entry(node.to_string()).or_insert([-1.0; 7]);
    e[6] = if v.primary { 1.0 } else { 0.0 };
    e[0] = if v.up { 1.0 } else { 0.0 };
    e[1] = if v.usable { 1.0 } else { 0.0 };
    e[2] = v.lag.map_or(-1.0, |l| l.as_secs_f64());
    e[3] = v.lag_bytes.map_or(-1.0, |b| b as f64);
    e[4] = v.timeline.map_or(-1.0, f64::from);
    drop(e);
    r.reasons.insert(node.to_string(), v.why);
    let _ = r.reason_set.set(v.reasons);
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

fn bump<K: std::hash::Hash + Eq>(map: &DashMap<K, AtomicU64>, key: K) {
    map.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
}

/// A routing decision: its node, its reason, and for a read placed by the read rules,
/// its causal scope.
/// One (node, reason) pair's decisions, by causal scope.
type RouteCounts = [AtomicU64; SCOPES];

/// (node, reason) pairs a thread counted lately, with their counters: the labels come from
/// a fixed set (node names, reasons, rule names), so a short list scanned by comparing
/// the strings replaces two hashed map lookups per statement.
type RecentRoutes = Vec<(Box<str>, Box<str>, Arc<RouteCounts>)>;

/// Pairs a thread keeps; past this the list starts over (a reload may rename things).
const RECENT_ROUTES: usize = 64;

thread_local! {
    static RECENT: std::cell::RefCell<RecentRoutes> = const { std::cell::RefCell::new(Vec::new()) };
}

pub fn route(node: &str, reason: &str, scope: Option<CausalScope>) {
    let i = scope_index(scope);
    let counted = RECENT.with(|cell| {
        let Ok(mut recent) = cell.try_borrow_mut() else { return false };
        if let Some((_, _, c)) = recent.iter().find(|(n, r, _)| **n == *node && **r == *reason) {
            c[i].fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let counts = route_counts(node, reason);
        counts[i].fetch_add(1, Ordering::Relaxed);
        if recent.len() >= RECENT_ROUTES {
            recent.clear();
        }
        recent.push((node.into(), reason.into(), counts));
        true
    });
    if !counted {
        route_counts(node, reason)[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The registry's counters for (node, reason), made on first use.
fn route_counts(node: &str, reason: &str) -> Arc<RouteCounts> {
    let r = registry();
    if let Some(c) = r.routes.get(node).and_then(|by_reason| by_reason.get(reason).map(|c| c.clone())) {
        return c;
    }
    r.routes.entry(node.to_string()).or_default().entry(reason.to_string()).or_default().clone()
}

/// Routing decisions so far: (node, reason, scope, count), sorted, counts above zero.
pub fn routes() -> Vec<(String, String, &'static str, u64)> {
    let mut all: Vec<(String, String, &'static str, u64)> = Vec::new();
    for by_node in registry().routes.iter() {
        for e in by_node.value().iter() {
            for (scope, c) in SCOPE_LABELS.iter().zip(e.value().iter()) {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    all.push((by_node.key().clone(), e.key().clone(), scope, n));
                }
            }
        }
    }
    all.sort();
    all
}

pub fn client_error(sqlstate: &str) {
    bump(&registry().errors, sqlstate.to_string());
}

pub fn parse_error() {
    registry().parse_errors.fetch_add(1, Ordering::Relaxed);
}

pub fn clients(delta: i64) {
    registry().clients.fetch_add(delta, Ordering::Relaxed);
}

/// Connections of one pool, by state. A pool holds its handle, so updates cost one
/// atomic add and no lookup.
#[derive(Default)]
pub struct PoolGauges {
    pub in_use: AtomicI64,
    pub idle: AtomicI64,
}

impl PoolGauges {
    pub fn add(&self, in_use: i64, idle: i64) {
        self.in_use.fetch_add(in_use, Ordering::Relaxed);
        self.idle.fetch_add(idle, Ordering::Relaxed);
    }
}

/// The gauges of the pool named `label`, registered on first use.
pub fn pool_gauges(label: &str) -> Arc<PoolGauges> {
    registry().pools.entry(label.to_string()).or_default().clone()
}

/// Forgets the gauges of a pool that never had a connection.
pub fn forget_pool(label: &str) {
    registry().pools.remove(label);
}

/// A rule's concurrency cap: sessions running under it, waiting in line, and totals.
#[derive(Default)]
pub struct RuleGauges {
    pub running: AtomicI64,
    pub queued: AtomicI64,
    pub admitted: AtomicU64,
    pub rejected: AtomicU64,
    pub wait_micros: AtomicU64,
}

/// One series of a rule's gauges.
type RuleValue = fn(&RuleGauges) -> f64;

/// The gauges of the rule named `rule` (kept across reloads), registered on first use.
pub fn rule_gauges(rule: &str) -> Arc<RuleGauges> {
    registry().rules.entry(rule.to_string()).or_default().clone()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One counter family with a single label, e.g. errors by SQLSTATE.
fn labeled_counter(out: &mut String, name: &str, label: &str, values: &DashMap<String, AtomicU64>) {
    let _ = writeln!(out, "# TYPE {name} counter");
    for e in values.iter() {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {}", escape(e.key()), e.value().load(Ordering::Relaxed));
    }
}

/// The whole registry in Prometheus text format.
/// What the classification cache has counted: (hits, misses). The classifier implements it,
/// so that this module depends on nothing it measures.
pub trait CacheStats {
    fn cache_stats(&self) -> (u64, u64);
}

impl<T: CacheStats + ?Sized> CacheStats for Arc<T> {
    fn cache_stats(&self) -> (u64, u64) {
        self.as_ref().cache_stats()
    }
}

pub fn render(classifier: &impl CacheStats) -> String {
    let r = registry();
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE pgroute_routes_total counter");
    for (node, reason, scope, n) in routes() {
        let _ = writeln!(
            out,
            "pgroute_routes_total{{node=\"{}\",reason=\"{}\",scope=\"{scope}\"}} {n}",
            escape(&node),
            escape(&reason)
        );
    }
    labeled_counter(&mut out, "pgroute_client_errors_total", "sqlstate", &r.errors);
    let _ = writeln!(out, "# TYPE pgroute_parse_errors_total counter");
    let _ = writeln!(out, "pgroute_parse_errors_total {}", r.parse_errors.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE pgroute_clients gauge");
    let _ = writeln!(out, "pgroute_clients {}", r.clients.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE pgroute_pool_connections gauge");
    for e in r.pools.iter() {
        let pool = escape(e.key());
        let (used, idle) = (&e.value().in_use, &e.value().idle);
        let _ = writeln!(
            out,
            "pgroute_pool_connections{{pool=\"{pool}\",state=\"in_use\"}} {}",
            used.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "pgroute_pool_connections{{pool=\"{pool}\",state=\"idle\"}} {}",
            idle.load(Ordering::Relaxed)
        );
    }
    let names = [
        ("pgroute_node_up", "gauge"),
        ("pgroute_node_usable", "gauge"),
        ("pgroute_replica_lag_seconds", "gauge"),
        ("pgroute_replica_lag_bytes", "gauge"),
        ("pgroute_node_timeline", "gauge"),
        ("pgroute_probe_duration_seconds", "gauge"),
        ("pgroute_node_is_primary", "gauge"),
    ];
    for (k, (metric, kind)) in names.iter().enumerate() {
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for e in r.nodes.iter() {
            let _ = writeln!(out, "{metric}{{node=\"{}\"}} {}", escape(e.key()), e.value()[k]);
        }
    }
    // One series per node and reason (a fixed set), 1 for the current one: alerts can
    // say why a node left the rotation.
    let _ = writeln!(out, "# TYPE pgroute_node_reason gauge");
    for e in r.reasons.iter() {
        for reason in r.reason_set.get().copied().unwrap_or_default() {
            let on = u8::from(e.value() == reason);
            let _ = writeln!(out, "pgroute_node_reason{{node=\"{}\",reason=\"{reason}\"}} {on}", escape(e.key()));
        }
    }
    labeled_counter(&mut out, "pgroute_writes_refused_total", "reason", &r.writes_refused);
    labeled_counter(&mut out, "pgroute_in_doubt_commits_total", "outcome", &r.in_doubt);
    let rule_series: [(&str, &str, RuleValue); 5] = [
        ("pgroute_rule_running", "gauge", |g| g.running.load(Ordering::Relaxed) as f64),
        ("pgroute_rule_queued", "gauge", |g| g.queued.load(Ordering::Relaxed) as f64),
        ("pgroute_rule_admitted_total", "counter", |g| g.admitted.load(Ordering::Relaxed) as f64),
        ("pgroute_rule_rejected_total", "counter", |g| g.rejected.load(Ordering::Relaxed) as f64),
        ("pgroute_rule_wait_seconds_total", "counter", |g| g.wait_micros.load(Ordering::Relaxed) as f64 / 1e6),
    ];
    for (metric, kind, value) in rule_series {
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for e in r.rules.iter() {
            let _ = writeln!(out, "{metric}{{rule=\"{}\"}} {}", escape(e.key()), value(e.value()));
        }
    }
    let _ = writeln!(out, "# TYPE pgroute_key_map_entries gauge");
    let _ = writeln!(out, "pgroute_key_map_entries {}", r.key_map_size.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE pgroute_key_map_evictions_total counter");
    let _ = writeln!(out, "pgroute_key_map_evictions_total {}", r.key_evictions.load(Ordering::Relaxed));
    labeled_counter(&mut out, "pgroute_causal_waits_total", "outcome", &r.causal_waits);
    r.causal_wait.render(&mut out, "pgroute_causal_wait_seconds");
    let _ = writeln!(out, "# TYPE pgroute_replay_polls_total counter");
    let _ = writeln!(out, "pgroute_replay_polls_total {}", r.replay_polls.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE pgroute_split_brain gauge");
    let _ = writeln!(out, "pgroute_split_brain {}", r.split_brain.load(Ordering::Relaxed));
    let (hits, misses) = classifier.cache_stats();
    let _ = writeln!(out, "# TYPE pgroute_classify_cache_hits_total counter");
    let _ = writeln!(out, "pgroute_classify_cache_hits_total {hits}");
    let _ = writeln!(out, "# TYPE pgroute_classify_cache_misses_total counter");
    let _ = writeln!(out, "pgroute_classify_cache_misses_total {misses}");
    out
}

/// Serves `render()` to any HTTP request on `listener`.
pub async fn serve<C: CacheStats + Send + Sync + 'static>(listener: TcpListener, classifier: Arc<C>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let classifier = classifier.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut buf)).await;
            let body = render(classifier.as_ref());
            http_reply(&mut sock, 200, "text/plain; version=0.0.4", &body).await;
        });
    }
}

/// Writes one HTTP/1.1 answer and lets the connection close (the metrics and health
/// endpoints); a client gone meanwhile is nobody's concern.
pub async fn http_reply(sock: &mut tokio::net::TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
}

#[cfg(test)]
mod route_tests {
    use super::*;

    /// Counting through the thread's recent list adds up exactly as the registry shows
    /// it, past the list's size (it starts over) and for pairs counted again after that.
    #[test]
    fn route_counts_add_up_through_the_recent_list() {
        let pairs = RECENT_ROUTES * 2 + 3;
        for round in 0..3 {
            for k in 0..pairs {
                let node = format!("route-test-node-{}", k % 7);
                route(
                    &node,
                    &format!("route-test-reason-{k}"),
                    if k % 2 == 0 { None } else { Some(CausalScope::Session) },
                );
            }
            let counted: u64 = routes().iter().filter(|(n, ..)| n.starts_with("route-test-node-")).map(|r| r.3).sum();
            assert_eq!(counted, (pairs * (round + 1)) as u64, "round {round}");
        }
        let seen = routes();
        let one = seen.iter().find(|(n, r, ..)| n == "route-test-node-1" && r == "route-test-reason-1").unwrap();
        assert_eq!((one.2, one.3), ("session", 3));
    }
}
