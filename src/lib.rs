//! pgroute: a PostgreSQL wire-protocol proxy that sends writes and money-critical reads to
//! the primary and spreads other reads over replicas.
//!
//! # Layout
//!
//! - [`admin`]: the admin console (database `pgroute`), one file per command.
//! - [`config`]: `proxy.toml`, parsed and validated (errors carry file:line:column).
//! - [`protocol`]: the wire format: frame splitting with bounds checks, message builders.
//! - [`auth`]: SCRAM-SHA-256 and md5, both as server (to clients) and client (to servers).
//! - [`classify`]: SQL text to a [`classify::Class`] (read or write, why, session effects).
//! - [`rules`]: where a read goes: hints, DBA rules, money-critical tables and functions.
//! - [`router`]: the routing decision, a pure function of class, read rules, session and
//!   topology.
//! - [`catalog`]: function volatility looked up in the primary's catalog, cached.
//! - [`tls`]: TLS for clients (with SCRAM channel binding) and to servers.
//! - [`topology`]: which node is primary and which replicas may take reads now.
//! - [`health`]: the monitor probing every node, the pure usability verdict, and replica
//!   replay positions every round trip while reads wait for them.
//! - [`acked`]: the commits this instance acknowledged (the highest position, tagged keys), for read-your-writes across connections.
//! - [`wal`]: WAL page geometry, to read commit positions as replicas report replay.
//! - [`backend`]: server connections and the per-(node, user, database) pools.
//! - [`frontend`]: accepting clients, login, and the per-client session loop.
//! - [`cancel`]: mapping the client's cancel key to the server running its query.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
//! - [`endpoints`]: `/live` and `/ready` for orchestrators' probes.
//! - [`explain`]: `pgroute explain`, the offline routing report for DBAs.
//! - [`shared`]: what sessions share, and the live reload that changes it.
//! - [`stats`]: per-node traffic counters for the console's `SHOW STATS`.
//!
//! One query's path: `frontend::session` reads a frame from the client, asks `classify`
//! what it is and `router` where it goes, borrows a connection from `backend`, forwards the
//! frame, and streams the server's reply frames back until ReadyForQuery.

pub mod acked;
pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod classify;
pub mod config;
pub mod endpoints;
pub mod explain;
pub mod frontend;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod prehashed;
pub mod protocol;
pub mod router;
pub mod rules;
pub mod shared;
pub mod stats;
pub mod tls;
pub mod topology;
pub mod wal;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

/// A running proxy: where it listens, and its shared state.
pub struct Proxy {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub health_addr: Option<SocketAddr>,
    pub shared: Arc<frontend::Shared>,
}

impl Proxy {
    /// A smart shutdown (SIGTERM): stop accepting clients, end each session at its next
    /// transaction boundary, and wait up to `[listen] shutdown_timeout` for all to go.
    /// Returns how many clients were still connected when it stopped waiting.
    pub async fn shutdown(&self) -> usize {
        self.shared.begin_shutdown();
        let deadline = tokio::time::Instant::now() + self.shared.config().listen.shutdown_timeout;
        while self.shared.clients() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.shared.clients()
    }
}

/// Binds `address`, when there is one, and serves it with `serve` on a task of its own;
/// returns where it listens.
async fn listen_on<F>(
    address: Option<&str>,
    serve: impl FnOnce(TcpListener) -> F,
) -> std::io::Result<Option<SocketAddr>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(address) = address else { return Ok(None) };
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(Some(bound))
}

/// Binds the listeners and starts serving on the current tokio runtime.
pub async fn start(config: config::Config) -> std::io::Result<Proxy> {
    let config = Arc::new(config);
    let classifier = Arc::new(classify::Classifier::with_write_functions(
        config.routing.cache_size,
        &config.routing.write_functions,
    ));
    let listener = TcpListener::bind(&config.listen.address).await?;
    let addr = listener.local_addr()?;
    let cache = classifier.clone();
    let metrics_addr = listen_on(config.admin.metrics_address.as_deref(), |l| metrics::serve(l, cache)).await?;
    let shared = frontend::Shared::new(Arc::new(arc_swap::ArcSwap::new(config)), classifier)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let shared = Arc::new(shared);
    // Serve only once the first probe round has said which nodes are usable.
    let nodes = shared.clone();
    let mut monitor = health::Monitor::new(shared.live_config(), shared.topology.clone(), shared.keyring.clone())
        .on_node_changes(Box::new(move |changes| {
            nodes.node_changes(changes, "patroni");
        }));
    monitor.first_round().await;
    tokio::spawn(monitor.run());
    let watch = health::ReplayWatch::new(
        shared.live_config(),
        shared.topology.clone(),
        shared.replay_waits.clone(),
        shared.keyring.clone(),
    );
    tokio::spawn(watch.run());
    let served = shared.clone();
    let health_addr =
        listen_on(shared.config().admin.health_address.as_deref(), |l| endpoints::serve(l, served)).await?;
    let reaper = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            reaper.pools.reap();
        }
    });
    tokio::spawn(frontend::serve(listener, shared.clone()));
    Ok(Proxy { addr, metrics_addr, health_addr, shared })
}
