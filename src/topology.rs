//! Topology: which node is the primary, which replicas may take reads right now.
//!
//! Routing reads a [`Snapshot`], an immutable value swapped in whole when something
//! changes, so a decision never sees half an update. Roles come from the configuration;
//! the health monitor (`health`) publishes, every interval, whether each node is usable
//! (a fresh probe, in or out of recovery as its role demands, replicas within the lag
//! thresholds). A replica that refuses a client's connection also leaves the rotation for
//! a short back-off, without waiting for the next probe.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, Role};

/// How long a replica that refused a connection stays out of the read rotation.
pub const REPLICA_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct NodeState {
    pub name: String,
    pub role: Role,
    pub weight: u32,
    /// Not usable before this instant (set after a failed connection).
    pub down_until: Option<Instant>,
    /// The health monitor's verdict: primary fit for writes, replica fit for reads.
    pub healthy: bool,
    /// `ok` or why not (`stale_sample`, `lag`, `in_recovery`, ...).
    pub why: &'static str,
    /// The verdict rests on a sample that goes stale at this instant: past it the node is
    /// unusable even if the monitor has not published again (it may be stuck).
    pub fresh_until: Option<Instant>,
    pub wal: Wal,
    /// Replica lag (time) as of the latest verdict.
    pub lag: Option<std::time::Duration>,
}

impl NodeState {
    pub fn usable(&self, now: Instant) -> bool {
        self.healthy && self.fresh_until.is_none_or(|t| now < t) && self.down_until.is_none_or(|t| now >= t)
    }
}

/// What the monitor publishes for one node.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// The node's effective role (an `auto` node's detected one).
    pub role: Role,
    pub usable: bool,
    pub why: &'static str,
    /// When the sample behind the verdict goes stale.
    pub fresh_until: Option<Instant>,
    pub wal: Wal,
    /// Replica lag (time) from the verdict, if known.
    pub lag: Option<std::time::Duration>,
}

/// WAL positions from a node's latest sample, for read-your-writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wal {
    /// When the probe behind these values was sent.
    pub started: Option<Instant>,
    /// Primary: `pg_current_wal_lsn()`.
    pub current_lsn: Option<u64>,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<u64>,
    pub timeline: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub nodes: Vec<NodeState>,
    /// `[health] when_no_replica = "error"`: refuse reads rather than use the primary.
    pub no_replica_error: bool,
    /// Two nodes report not in recovery: no writes anywhere until one remains.
    pub split_brain: bool,
    /// `[routing] balance = "least_connections"`.
    pub least_connections: bool,
}

impl Snapshot {
    /// The node writes may go to: the configured primary, if its latest probe is fresh
    /// and says it is not in recovery.
    pub fn primary(&self, now: Instant) -> Option<usize> {
        if self.split_brain {
            return None;
        }
        self.nodes.iter().position(|n| n.role == Role::Primary && n.healthy && n.fresh_until.is_none_or(|t| now < t))
    }

    /// "pg0: ok; pg1: lag; ..." for error hints.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.nodes.iter().map(|n| format!("{}: {}", n.name, n.why)).collect();
        parts.join("; ")
    }
}

#[derive(Debug, Clone)]
pub struct NodeAddr {
    pub name: String,
    pub host: String,
    pub port: u16,
}

pub struct Topology {
    addrs: Vec<NodeAddr>,
    current: RwLock<Arc<Snapshot>>,
    /// Server connections in use per node, for `least_connections`.
    loads: Vec<AtomicI64>,
}

impl Topology {
    /// Nodes start unhealthy (`why = "no_sample"`) until the monitor's first round, or
    /// healthy when `assume_healthy` (offline tools such as `pgroute explain`).
    pub fn from_config(cfg: &Config, assume_healthy: bool) -> Self {
        let nodes = cfg
            .nodes
            .iter()
            .map(|n| NodeState {
                name: n.name.get_ref().clone(),
                // `auto` nodes are replicas until the monitor finds one out of recovery.
                role: if n.role == Role::Auto { Role::Replica } else { n.role },
                weight: n.weight,
                down_until: None,
                healthy: assume_healthy,
                why: if assume_healthy { "assumed" } else { "no_sample" },
                fresh_until: None,
                wal: Wal::default(),
                lag: None,
            })
            .collect();
        let addrs = cfg
            .nodes
            .iter()
            .map(|n| NodeAddr { name: n.name.get_ref().clone(), host: n.host.clone(), port: n.port })
            .collect();
        let no_replica_error = cfg.health.when_no_replica == crate::config::WhenNoReplica::Error;
        let least_connections = cfg.routing.balance == crate::config::Balance::LeastConnections;
        let snapshot = Snapshot { nodes, no_replica_error, split_brain: false, least_connections };
        let loads = cfg.nodes.iter().map(|_| AtomicI64::new(0)).collect();
        Topology { addrs, current: RwLock::new(Arc::new(snapshot)), loads }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn addr(&self, node: usize) -> &NodeAddr {
        &self.addrs[node]
    }

    /// A server connection to `node` was borrowed (+1) or returned (-1).
    pub fn add_load(&self, node: usize, delta: i64) {
        if let Some(l) = self.loads.get(node) {
            l.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Connections in use per node, now.
    pub fn loads(&self) -> Vec<u32> {
        self.loads.iter().map(|l| l.load(Ordering::Relaxed).max(0) as u32).collect()
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Publishes the monitor's verdicts, one per node in configuration order.
    pub fn publish_health(&self, verdicts: &[Published], split_brain: bool) {
        self.update(|next| {
            next.split_brain = split_brain;
            for (n, v) in next.nodes.iter_mut().zip(verdicts) {
                n.role = v.role;
                n.healthy = v.usable;
                n.why = v.why;
                n.fresh_until = v.fresh_until;
                n.wal = v.wal;
                n.lag = v.lag;
            }
        });
    }

    fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Takes a node out of the read rotation for [`REPLICA_BACKOFF`].
    pub fn mark_unreachable(&self, node: usize) {
        self.update(|next| {
            if let Some(n) = next.nodes.get_mut(node) {
                n.down_until = Some(Instant::now() + REPLICA_BACKOFF);
            }
        });
    }
}
