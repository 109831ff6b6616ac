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

use crate::config::{group_mask, Config, Node, Role};

/// How long a replica that refused a connection stays out of the read rotation.
pub const REPLICA_BACKOFF: Duration = Duration::from_secs(2);

/// Node slots over the process's life: a node removed by a reload keeps its slot (sessions
/// and pools refer to nodes by slot), so reloads can add at most this many nodes in all.
pub const MAX_NODE_SLOTS: usize = 64;

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
    /// Taken out of the read rotation by an operator (`DRAIN`); writes are unaffected.
    pub drained: bool,
    /// Removed from the configuration by a reload: never used again.
    pub removed: bool,
    /// When a session last saw this replica's replay position past the monitor's
    /// (`note_replay`): a probe begun before then does not set it back.
    pub replay_noted: Option<Instant>,
    /// The node groups it takes reads for as a replica, by bit (`Config::groups`).
    pub groups: u64,
}

impl NodeState {
    pub fn usable(&self, now: Instant) -> bool {
        self.healthy
            && !self.removed
            && self.fresh_until.is_none_or(|t| now < t)
            && self.down_until.is_none_or(|t| now >= t)
    }

    fn from_config(n: &Node, groups: &[String], assume_healthy: bool) -> Self {
        NodeState {
            groups: group_mask(groups, n.group_names()),
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
            drained: false,
            removed: false,
            replay_noted: None,
        }
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
    /// The node's WAL page geometry, read once per monitor connection.
    pub layout: Option<crate::wal::WalLayout>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: crate::config::ServerTlsMode,
    pub tls_ca_file: Option<String>,
}

impl NodeAddr {
    fn from_config(n: &Node) -> Self {
        NodeAddr {
            name: n.name.get_ref().clone(),
            host: n.host.clone(),
            port: n.port,
            tls: n.tls,
            tls_ca_file: n.tls_ca_file.clone(),
        }
    }
}

/// What a reload or Patroni's member list changed in the node list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeChanges {
    pub added: Vec<String>,
    /// Slots and names of the nodes no longer listed.
    pub removed: Vec<(usize, String)>,
    /// Nodes whose address changed: their pooled connections must go.
    pub moved: Vec<usize>,
}

impl NodeChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty()
    }
}

/// The nodes in force: the configured ones, then the Patroni members no configured node
/// names (by name or by address).
fn listed(cfg: &Config, members: &[Node]) -> Vec<Node> {
    let mut all = cfg.nodes.clone();
    for m in members {
        let named =
            cfg.nodes.iter().any(|c| c.name.get_ref() == m.name.get_ref() || (c.host == m.host && c.port == m.port));
        if !named {
            all.push(m.clone());
        }
    }
    all
}

/// Whether two member lists describe the same nodes (name, address, TLS).
fn same_members(a: &[Node], b: &[Node]) -> bool {
    let key = |n: &Node| (n.name.get_ref().clone(), n.host.clone(), n.port, n.tls, n.tls_ca_file.clone());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

pub struct Topology {
    addrs: RwLock<Arc<Vec<NodeAddr>>>,
    current: RwLock<Arc<Snapshot>>,
    /// The Patroni members that are nodes of their own (`discover`). The lock also keeps
    /// a reload and a discovery from changing the node list at once.
    members: std::sync::Mutex<Vec<Node>>,
    /// The nodes in force, configured and discovered, with their configured roles.
    listed: RwLock<Arc<Vec<Node>>>,
    /// Server connections in use per node slot, for `least_connections`.
    loads: Vec<AtomicI64>,
    /// Slots an operator asked to unfence (`UNFENCE`), for the monitor's next round.
    unfence: std::sync::Mutex<Vec<usize>>,
    /// Wakes the monitor for a round now (a server reported a role change).
    probe_now: tokio::sync::Notify,
}

impl Topology {
    /// Nodes start unhealthy (`why = "no_sample"`) until the monitor's first round, or
    /// healthy when `assume_healthy` (offline tools such as `pgroute explain`).
    pub fn from_config(cfg: &Config, assume_healthy: bool) -> Self {
        let groups = cfg.groups();
        let nodes = cfg.nodes.iter().map(|n| NodeState::from_config(n, &groups, assume_healthy)).collect();
        let addrs = cfg.nodes.iter().map(NodeAddr::from_config).collect();
        let no_replica_error = cfg.health.when_no_replica == crate::config::WhenNoReplica::Error;
        let least_connections = cfg.routing.balance == crate::config::Balance::LeastConnections;
        let snapshot = Snapshot { nodes, no_replica_error, split_brain: false, least_connections };
        let loads = (0..MAX_NODE_SLOTS.max(cfg.nodes.len())).map(|_| AtomicI64::new(0)).collect();
        Topology {
            addrs: RwLock::new(Arc::new(addrs)),
            current: RwLock::new(Arc::new(snapshot)),
            members: Default::default(),
            listed: RwLock::new(Arc::new(cfg.nodes.clone())),
            loads,
            unfence: Default::default(),
            probe_now: tokio::sync::Notify::new(),
        }
    }

    /// The nodes in force (configured, then discovered), with their configured roles.
    pub fn listed(&self) -> Arc<Vec<Node>> {
        self.listed.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a reloaded configuration (see `apply`); the Patroni members found so far
    /// stay nodes unless the file now names them.
    pub fn reconfigure(&self, cfg: &Config) -> Result<NodeChanges, String> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        self.apply(cfg, &listed(cfg, &members))
    }

    /// Patroni's member list, as nodes (`TopologySource::member_node`): those no
    /// configured node names become nodes, those gone from the list are removed. `None`
    /// when nothing changed.
    pub fn discover(&self, cfg: &Config, found: Vec<Node>) -> Result<Option<NodeChanges>, String> {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if same_members(&members, &found) {
            return Ok(None);
        }
        let changes = self.apply(cfg, &listed(cfg, &found))?;
        *members = found;
        Ok(Some(changes))
    }

    /// Makes `nodes` the node list: nodes are matched by name; a known node keeps its
    /// slot and health (its role, weight and address follow the list), a new one takes a
    /// fresh slot (unusable until probed), a node no longer listed is marked removed.
    /// Refused, changing nothing, when the slots are used up.
    fn apply(&self, cfg: &Config, nodes: &[Node]) -> Result<NodeChanges, String> {
        let old = self.addrs.read().unwrap_or_else(|p| p.into_inner()).clone();
        let snap = self.snapshot();
        let mut changes = NodeChanges::default();
        let mut addrs = (*old).clone();
        for n in nodes {
            let addr = NodeAddr::from_config(n);
            match addrs.iter().position(|a| a.name == addr.name) {
                Some(i) if addrs[i] != addr => {
                    if snap.nodes.get(i).is_some_and(|n| n.removed) {
                        changes.added.push(addr.name.clone());
                    }
                    changes.moved.push(i);
                    addrs[i] = addr;
                }
                Some(i) if snap.nodes.get(i).is_some_and(|n| n.removed) => changes.added.push(addr.name),
                Some(_) => {}
                None => {
                    changes.added.push(addr.name.clone());
                    addrs.push(addr);
                }
            }
        }
        if addrs.len() > self.loads.len() {
            return Err(format!(
                "more than {} nodes over pgroute's life (removed nodes keep their slot): restart to add more",
                self.loads.len()
            ));
        }
        for (i, a) in addrs.iter().enumerate() {
            let listed = nodes.iter().any(|n| *n.name.get_ref() == a.name);
            if !listed && snap.nodes.get(i).is_some_and(|n| !n.removed) {
                changes.removed.push((i, a.name.clone()));
            }
        }
        *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(addrs.clone());
        *self.listed.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(nodes.to_vec());
        let groups = cfg.groups();
        self.update(|next| {
            next.no_replica_error = cfg.health.when_no_replica == crate::config::WhenNoReplica::Error;
            next.least_connections = cfg.routing.balance == crate::config::Balance::LeastConnections;
            for (i, a) in addrs.iter().enumerate() {
                let configured = nodes.iter().find(|n| *n.name.get_ref() == a.name);
                match (configured, next.nodes.get_mut(i)) {
                    (Some(c), Some(n)) => {
                        n.removed = false;
                        n.weight = c.weight;
                        n.groups = group_mask(&groups, c.group_names());
                        if c.role != Role::Auto {
                            n.role = c.role;
                        }
                    }
                    (Some(c), None) => next.nodes.push(NodeState::from_config(c, &groups, false)),
                    (None, Some(n)) => {
                        n.removed = true;
                        n.healthy = false;
                        n.role = Role::Replica;
                        n.why = "removed";
                    }
                    (None, None) => {}
                }
            }
        });
        Ok(changes)
    }

    /// Takes a replica out of the read rotation (`true`) or puts it back. Unknown or
    /// removed names: false.
    pub fn set_drained(&self, name: &str, drained: bool) -> bool {
        let mut found = false;
        self.update(|next| {
            if let Some(n) = next.nodes.iter_mut().find(|n| n.name == name && !n.removed) {
                n.drained = drained;
                found = true;
            }
        });
        found
    }

    /// A server connection reported `in_hot_standby` (PostgreSQL 14+ sends it when it
    /// changes, e.g. on promotion): if that contradicts the node's role, the monitor probes
    /// at once instead of at its next interval.
    pub fn report_standby(&self, node: usize, standby: bool) {
        let role = self.snapshot().nodes.get(node).map(|n| n.role);
        let contradicts = match role {
            Some(Role::Primary) => standby,
            Some(_) => !standby,
            None => false,
        };
        if contradicts {
            tracing::info!(node, standby, "a server reports in_hot_standby against its role: probing now");
            self.probe_now.notify_one();
        }
    }

    /// Asks the monitor for a round now (the credential it lacked has arrived).
    pub fn request_probe(&self) {
        self.probe_now.notify_one();
    }

    /// Resolves when a round should start before the interval is up.
    pub async fn probe_requested(&self) {
        self.probe_now.notified().await
    }

    /// Asks the monitor to lift a node's timeline fencing (after a deliberate rejoin).
    /// False when no such node is fenced now.
    pub fn request_unfence(&self, name: &str) -> bool {
        let snap = self.snapshot();
        let Some(i) = snap.nodes.iter().position(|n| n.name == name && n.why == "fenced") else { return false };
        self.unfence.lock().unwrap_or_else(|p| p.into_inner()).push(i);
        true
    }

    /// The unfence requests made since the last call.
    pub fn take_unfence_requests(&self) -> Vec<usize> {
        std::mem::take(&mut *self.unfence.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Where a node slot's server listens (not for the per-statement path: it clones).
    pub fn addr(&self, node: usize) -> Option<NodeAddr> {
        self.addrs.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
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

    /// Node slots, removed nodes included.
    pub fn len(&self) -> usize {
        self.addrs.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes the monitor's verdicts, one per node in configuration order.
    pub fn publish_health(&self, verdicts: &[Published], split_brain: bool) {
        self.update(|next| {
            next.split_brain = split_brain;
            for (n, v) in next.nodes.iter_mut().zip(verdicts).filter(|(n, _)| !n.removed) {
                n.role = v.role;
                n.healthy = v.usable;
                n.why = v.why;
                n.fresh_until = v.fresh_until;
                // A position a session saw after this probe began stays (replay only moves
                // forward on one timeline); a probe begun after it is the truth again.
                let noted = n.replay_noted.filter(|at| v.wal.started.is_none_or(|s| s < *at));
                let kept = noted.and(n.wal.replay_lsn).filter(|_| n.wal.timeline == v.wal.timeline);
                // Likewise a primary position a session asked for after this probe began.
                let asked = (n.wal.started, n.wal.current_lsn);
                let asked_later = v.role == Role::Primary
                    && n.wal.timeline == v.wal.timeline
                    && asked.0.zip(v.wal.started).is_some_and(|(mine, probe)| mine > probe);
                n.wal = v.wal;
                if asked_later {
                    (n.wal.started, n.wal.current_lsn) = asked;
                }
                if let Some(lsn) = kept.filter(|k| v.wal.replay_lsn.is_none_or(|r| r < *k)) {
                    n.wal.replay_lsn = Some(lsn);
                } else {
                    n.replay_noted = None;
                }
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

    /// Replica `node`'s replay position `lsn`, read just now (`replay_watch`): past what
    /// the monitor last saw, it stands until a probe begun later. True when it moved the
    /// known position forward.
    pub fn note_replay(&self, node: usize, lsn: u64) -> bool {
        let known = self.snapshot().nodes.get(node).and_then(|n| n.wal.replay_lsn);
        if known.is_some_and(|k| k >= lsn) {
            return false;
        }
        let mut moved = false;
        self.update(|next| {
            if let Some(n) = next.nodes.get_mut(node).filter(|n| n.role == Role::Replica) {
                if n.wal.replay_lsn.is_none_or(|k| k < lsn) {
                    n.wal.replay_lsn = Some(lsn);
                    n.replay_noted = Some(Instant::now());
                    moved = true;
                }
            }
        });
        moved
    }

    /// A session asked the primary `node` for its WAL position, `lsn`, with a query sent
    /// at `sent`: newer than the monitor's sample, it stands in for it (until a probe
    /// begun later), so reads that arrived before `sent` need wait for nothing else.
    pub fn note_primary_position(&self, node: usize, sent: Instant, lsn: u64) {
        self.update(|next| {
            if let Some(n) = next.nodes.get_mut(node).filter(|n| n.role == Role::Primary) {
                if n.wal.started.is_none_or(|s| s < sent) {
                    n.wal.started = Some(sent);
                    n.wal.current_lsn = Some(n.wal.current_lsn.map_or(lsn, |c| c.max(lsn)));
                }
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[[nodes]]\nname = \"pg0\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n\
                          [[nodes]]\nname = \"pg1\"\nhost = \"h\"\nport = 2\nrole = \"replica\"\n\
                          [[users]]\nname = \"app\"\npassword = \"x\"\n";

    fn verdict(role: Role, started: Instant, current: Option<u64>, replay: Option<u64>) -> Published {
        Published {
            role,
            usable: true,
            why: "ok",
            fresh_until: None,
            wal: Wal {
                started: Some(started),
                current_lsn: current,
                replay_lsn: replay,
                timeline: Some(1),
                layout: None,
            },
            lag: None,
        }
    }

    #[test]
    fn positions_sessions_learned_stand_until_a_probe_begun_later() {
        let cfg = Config::parse(CONFIG, "proxy.toml").expect("config");
        let topo = Topology::from_config(&cfg, true);
        // Probes and questions in the past; the replay note is made now.
        let t0 = Instant::now() - Duration::from_secs(1);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let probe = |at: u64, current: u64, replay: u64| {
            topo.publish_health(
                &[
                    verdict(Role::Primary, ms(at), Some(current), None),
                    verdict(Role::Replica, ms(at), None, Some(replay)),
                ],
                false,
            )
        };
        let wal = |node: usize| topo.snapshot().nodes[node].wal;
        probe(0, 100, 90);
        // A session asks the primary at 5 ms (it says 120); a replica is seen at 95.
        topo.note_primary_position(0, ms(5), 120);
        topo.note_replay(1, 95);
        assert_eq!((wal(0).started, wal(0).current_lsn), (Some(ms(5)), Some(120)));
        assert_eq!(wal(1).replay_lsn, Some(95));
        // An answer sent earlier than the sample already there changes nothing.
        topo.note_primary_position(0, ms(1), 500);
        assert_eq!(wal(0).current_lsn, Some(120));
        // A probe begun before the session asked (at 2 ms) publishes older values: the
        // session's stay. The replay note is younger than any probe start, it stays too.
        probe(2, 110, 91);
        assert_eq!((wal(0).started, wal(0).current_lsn), (Some(ms(5)), Some(120)));
        assert_eq!(wal(1).replay_lsn, Some(95));
        // A probe begun later is the truth again.
        std::thread::sleep(Duration::from_millis(2));
        let later = Instant::now().saturating_duration_since(t0).as_millis() as u64;
        probe(later, 130, 125);
        assert_eq!((wal(0).started, wal(0).current_lsn), (Some(ms(later)), Some(130)));
        assert_eq!(wal(1).replay_lsn, Some(125));
    }

    #[test]
    fn patroni_members_no_configured_node_names_become_nodes_and_leave_with_the_list() {
        let cfg = Config::parse(CONFIG, "proxy.toml").expect("config");
        let topo = Topology::from_config(&cfg, false);
        let member = |name: &str, port: u16| cfg.topology.member_node(name, "h", port);
        let names = |t: &Topology| -> Vec<(String, bool)> {
            t.snapshot().nodes.iter().map(|n| (n.name.clone(), n.removed)).collect()
        };
        // pg1's address under another name, and a name taken by a configured node, are
        // the configured nodes; m2 is new.
        let found = vec![member("m1", 2), member("pg0", 9), member("m2", 3)];
        let changes = topo.discover(&cfg, found.clone()).expect("discover").expect("changed");
        assert_eq!(changes.added, vec!["m2".to_string()]);
        assert_eq!(topo.addr(2).map(|a| (a.name, a.port)), Some(("m2".into(), 3)));
        assert_eq!(topo.snapshot().nodes[2].role, Role::Replica, "an auto node is a replica until probed");
        assert_eq!(
            topo.listed().iter().map(|n| n.role).collect::<Vec<_>>(),
            [Role::Primary, Role::Replica, Role::Auto]
        );
        assert_eq!(topo.discover(&cfg, found).expect("discover"), None, "the same list changes nothing");
        // A reload keeps the members found.
        assert!(topo.reconfigure(&cfg).expect("reload").is_empty());
        assert_eq!(names(&topo).len(), 3);
        // m2 leaves the list: removed, its slot kept; back later, it takes the slot again.
        let gone = topo.discover(&cfg, vec![]).expect("discover").expect("changed");
        assert_eq!(gone.removed, vec![(2, "m2".to_string())]);
        assert_eq!(names(&topo)[2], ("m2".to_string(), true));
        let back = topo.discover(&cfg, vec![member("m2", 4)]).expect("discover").expect("changed");
        assert_eq!((back.added, back.moved), (vec!["m2".to_string()], vec![2]), "back at a new address");
        assert_eq!(names(&topo), [("pg0".into(), false), ("pg1".into(), false), ("m2".into(), false)]);
        assert_eq!(topo.addr(2).map(|a| a.port), Some(4));
    }
}
