//! Replica replay positions at millisecond granularity while reads wait for them.
//!
//! A read that needs a replica at a WAL position none is known to have (read-your-writes
//! within `causal_wait`) registers as a waiter ([`Waits::wait`]). While any read waits,
//! [`ReplayWatch`] asks each usable replica that could catch up in time (last seen at most
//! `causal_wait` + `interval` behind) for `pg_last_wal_replay_lsn()`, back to back (one
//! question in flight per replica), on a connection of its own with the monitor's login,
//! notes the answers in the topology and wakes the waiting reads, which decide again.
//! With no waiter it keeps one connection per usable replica open (a login takes longer
//! than the default `causal_wait`, so the first wait would otherwise miss) and sleeps.
//!
//! At most one question per replica per round trip however many reads wait, and none
//! when no read waits: measured against a check per waiting read and against a poll every
//! millisecond with `benches/money.rs`, see ARCHITECTURE.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::monitor::Login;
use crate::backend::keyring::Keyring;
use crate::backend::ServerConn;
use crate::config::{Config, Live, Role};
use crate::topology::Topology;

/// The pause after a round that reached no replica (none could serve, or none answered),
/// so that waiting reads do not make the watch spin.
const IDLE_ROUND: Duration = Duration::from_millis(1);

const REPLAY_QUERY: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0')::text";

/// The reads waiting for replay positions, shared by sessions and the watch.
pub struct Waits {
    waiters: AtomicUsize,
    arrived: Notify,
    /// Bumped whenever a noted position moved forward.
    moved: watch::Sender<u64>,
}

impl Default for Waits {
    fn default() -> Self {
        Waits { waiters: AtomicUsize::new(0), arrived: Notify::new(), moved: watch::Sender::new(0) }
    }
}

impl Waits {
    /// Registers a waiting read until the returned guard is dropped.
    pub fn wait(self: &Arc<Self>) -> Waiter {
        let moved = self.moved.subscribe();
        self.waiters.fetch_add(1, Ordering::AcqRel);
        self.arrived.notify_one();
        Waiter { waits: self.clone(), moved }
    }

    fn any(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
    }
}

/// A registered waiting read.
pub struct Waiter {
    waits: Arc<Waits>,
    moved: watch::Receiver<u64>,
}

impl Waiter {
    /// Resolves when a replica's noted position has moved since the last call.
    pub async fn moved(&mut self) {
        let _ = self.moved.changed().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waits.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The task asking replicas for their replay positions while reads wait.
pub struct ReplayWatch {
    config: Live,
    /// The configuration its connections were made under (a reload, which may move nodes
    /// or change the monitor's login, closes them), and what it derives from it.
    cfg: Arc<Config>,
    login: Login,
    keyring: Arc<Keyring>,
    topology: Arc<Topology>,
    waits: Arc<Waits>,
    /// Per node slot.
    conns: Vec<Option<ServerConn>>,
}

impl ReplayWatch {
    pub fn new(config: Live, topology: Arc<Topology>, waits: Arc<Waits>, keyring: Arc<Keyring>) -> Self {
        let cfg = config.load_full();
        let login = Login::from_config(&cfg, &keyring);
        ReplayWatch { config, cfg, login, keyring, topology, waits, conns: Vec::new() }
    }

    pub async fn run(mut self) {
        loop {
            while !self.waits.any() {
                // Idle: the connections a first wait would need are opened now (a login
                // takes longer than the default causal_wait), then kept; checked every
                // health interval, so a replica that becomes usable has one soon.
                self.warm().await;
                let every = self.cfg.health.interval;
                let _ = tokio::time::timeout(every, self.waits.arrived.notified()).await;
            }
            if !self.poll().await {
                tokio::time::sleep(IDLE_ROUND).await;
            }
        }
    }

    /// A reload may move nodes or change the monitor's login: the connections made under
    /// the previous configuration are closed.
    fn follow_config(&mut self) {
        let cfg = self.config.load_full();
        let login = Login::from_config(&cfg, &self.keyring);
        // The topology takes a reload's node addresses before the configuration is swapped.
        if !Arc::ptr_eq(&cfg, &self.cfg) || login != self.login {
            self.login = login;
            self.cfg = cfg;
            self.conns.clear();
        }
    }

    /// Opens a connection to every usable replica that has none.
    async fn warm(&mut self) {
        self.follow_config();
        let limit = self.cfg.health.max_sample_age().max(Duration::from_millis(50));
        let snap = self.topology.snapshot();
        let now = Instant::now();
        self.conns.resize_with(snap.nodes.len(), || None);
        let (topology, login) = (&self.topology, &self.login);
        let opens = self.conns.iter_mut().enumerate().filter(|(i, c)| {
            let n = &snap.nodes[*i];
            c.is_none() && n.role == Role::Replica && n.usable(now) && !n.drained
        });
        let opens = opens.map(|(i, conn)| async move {
            let Some(addr) = topology.addr(i) else { return };
            if let Ok(Ok(c)) = tokio::time::timeout(limit, login.connect(&addr, i, limit)).await {
                *conn = Some(c);
            }
        });
        futures_util::future::join_all(opens).await;
    }

    /// Asks every replica that could serve a waiting read soon, all at once. False when
    /// none answered.
    async fn poll(&mut self) -> bool {
        self.follow_config();
        let skip_lag = self.cfg.routing.causal_wait.unwrap_or_default() + self.cfg.health.interval;
        let limit = self.cfg.health.max_sample_age().max(Duration::from_millis(50));
        let snap = self.topology.snapshot();
        let now = Instant::now();
        self.conns.resize_with(snap.nodes.len(), || None);
        let mut asks = Vec::new();
        for (i, conn) in self.conns.iter_mut().enumerate() {
            let n = &snap.nodes[i];
            let candidate =
                n.role == Role::Replica && n.usable(now) && !n.drained && n.lag.is_some_and(|l| l <= skip_lag);
            if !candidate {
                continue;
            }
            let (topology, name) = (&self.topology, &n.name);
            let login = &self.login;
            asks.push(async move {
                crate::metrics::replay_poll();
                let answer = tokio::time::timeout(limit, async {
                    if conn.is_none() {
                        let Some(addr) = topology.addr(i) else { return Ok(None) };
                        *conn = Some(login.connect(&addr, i, limit).await?);
                    }
                    match conn.as_mut() {
                        Some(c) => c.query_text(REPLAY_QUERY).await,
                        None => Ok(None),
                    }
                })
                .await;
                match answer {
                    Ok(Ok(Some(text))) => {
                        text.split('.').next().and_then(|n| n.parse::<u64>().ok()).map(|lsn| (i, lsn))
                    }
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => {
                        tracing::debug!(node = %name, error = %e, "replay position unknown");
                        *conn = None;
                        None
                    }
                    Err(_) => {
                        tracing::debug!(node = %name, "replay position: no answer in time");
                        *conn = None;
                        None
                    }
                }
            });
        }
        let (mut answered, mut moved) = (false, false);
        for (node, lsn) in futures_util::future::join_all(asks).await.into_iter().flatten() {
            answered = true;
            moved |= self.topology.note_replay(node, lsn);
        }
        if moved {
            self.waits.moved.send_modify(|v| *v = v.wrapping_add(1));
        }
        answered
    }
}
