//! Topology: which node is the primary, which replicas may take reads right now.
//!
//! Routing reads a [`Snapshot`], an immutable value swapped in whole when something
//! changes, so a decision never sees half an update. In this version roles come from the
//! configuration; a replica that fails to accept a connection is kept out of rotation for
//! a short back-off. (Lag-aware health monitoring replaces the back-off in a later issue.)

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
}

impl NodeState {
    pub fn usable(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub nodes: Vec<NodeState>,
}

impl Snapshot {
    pub fn primary(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.role == Role::Primary)
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
}

impl Topology {
    pub fn from_config(cfg: &Config) -> Self {
        let nodes = cfg
            .nodes
            .iter()
            .map(|n| NodeState {
                name: n.name.get_ref().clone(),
                role: n.role,
                weight: n.weight,
                down_until: None,
            })
            .collect();
        let addrs = cfg
            .nodes
            .iter()
            .map(|n| NodeAddr {
                name: n.name.get_ref().clone(),
                host: n.host.clone(),
                port: n.port,
            })
            .collect();
        Topology {
            addrs,
            current: RwLock::new(Arc::new(Snapshot { nodes })),
        }
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

    /// Takes a node out of the read rotation for [`REPLICA_BACKOFF`].
    pub fn mark_unreachable(&self, node: usize) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = (**guard).clone();
        if let Some(n) = next.nodes.get_mut(node) {
            n.down_until = Some(Instant::now() + REPLICA_BACKOFF);
        }
        *guard = Arc::new(next);
    }
}
