//! The monitor: one connection per node, probed each interval (replicas first, at once,
//! then the primary, so the primary's LSN is never older than a replica's replay LSN and
//! lag is never under-estimated). A failed probe drops the node's sample at once (unusable now);
//! `failure_threshold` failures in a row mark it down, and it comes back only after
//! `recovery_threshold` good probes in a row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::patroni;
use super::{assess_primary, assess_replica, Sample, Thresholds, Verdict};
use crate::backend::keyring::{Keyring, Secret};
use crate::backend::ServerConn;
use crate::config::{Config, Health, Live, Role, Source};
use crate::metrics;
use crate::protocol::PgError;
use crate::topology::{NodeAddr, NodeChanges, Published, Topology, Wal};
use crate::wal::WalLayout;

/// Works on primaries and replicas alike; LSNs as byte positions.
const PROBE: &str = "SELECT pg_is_in_recovery()::text, \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::text END, \
    (pg_last_wal_receive_lsn() - '0/0')::text, \
    (pg_last_wal_replay_lsn() - '0/0')::text, \
    extract(epoch FROM now() - pg_last_xact_replay_timestamp())::text, \
    CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver)::text \
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text END";

/// Whether the monitor's user may read replication state (a replica's timeline comes from
/// `pg_stat_wal_receiver`, whose columns only `pg_read_all_stats` may see).
const PRIVILEGE: &str = "SELECT pg_has_role('pg_read_all_stats', 'USAGE')::text";

/// The node's WAL page geometry (`wal::WalLayout`), readable by any user.
const LAYOUT: &str = "SELECT max_data_alignment::text, wal_block_size::text, bytes_per_wal_segment::text \
    FROM pg_control_init()";

/// How the monitor logs in.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Login {
    pub user: String,
    /// Its credential, or why it has none yet (a `scram_verifier` user not logged in).
    secret: Result<Option<Secret>, String>,
    pub database: String,
}

#[derive(Default)]
struct NodeProbe {
    conn: Option<ServerConn>,
    sample: Option<Sample>,
    failures: u32,
    successes: u32,
    down: bool,
    alerting: bool,
    /// Why the last probe failed (`probe_error`, `probe_timeout`, or `monitor_login`: no
    /// credential yet) and in the server's or
    /// the network's words; cleared by a good probe.
    failed: Option<(&'static str, String)>,
    /// The monitor's user holds `pg_read_all_stats` there (checked at each connect).
    privileged: Option<bool>,
    /// The node's WAL page geometry (read at each connect).
    layout: Option<WalLayout>,
    /// The verdict reason last published: a change is logged once.
    published: &'static str,
}

pub struct Monitor {
    config: Live,
    /// The configuration of the current round.
    cfg: Arc<Config>,
    topology: Arc<Topology>,
    /// Per node slot (see `Topology`): removed nodes keep theirs, unprobed.
    nodes: Vec<NodeProbe>,
    /// Per slot: the node's name and its configured role (`None`: removed by a reload).
    slots: Vec<(String, Option<Role>)>,
    /// Effective roles from the last round (`auto` nodes resolved).
    roles: Vec<Role>,
    /// The highest timeline seen on an accepted primary: a node claiming to be primary on
    /// a lower one is a stale old primary.
    max_timeline: u32,
    /// Stale old primaries: never accepted as primary again until restart.
    fenced: Vec<bool>,
    split_brain: bool,
    /// Patroni's last answer (`[topology] source = "patroni"`) and when it was asked.
    patroni: Option<(Instant, Result<Vec<patroni::Member>, String>)>,
    /// Why Patroni says a node takes no reads, by node slot (from its last fresh answer).
    read_exclusions: Vec<Option<&'static str>>,
    /// Why there is no Patroni primary, as last logged.
    patroni_published: &'static str,
    /// How the monitor logs in, from the current configuration: connections made with
    /// another login are closed.
    login: Login,
    keyring: Arc<Keyring>,
    /// Told when Patroni's member list changed the node list (pools of removed nodes go).
    on_node_changes: Option<NodeChangesHook>,
}

/// What the monitor calls when Patroni's member list changed the node list.
pub type NodeChangesHook = Box<dyn Fn(&NodeChanges) + Send + Sync>;

fn parse_sample(row: &[Option<String>], started: Instant, taken: Instant) -> Option<Sample> {
    let col = |i: usize| row.get(i).cloned().flatten();
    let num = |i: usize| col(i).and_then(|v| v.split('.').next().and_then(|n| n.parse::<u64>().ok()));
    Some(Sample {
        started,
        taken,
        in_recovery: col(0)? == "true",
        current_lsn: num(1),
        receive_lsn: num(2),
        replay_lsn: num(3),
        replay_age: col(4).and_then(|v| v.parse::<f64>().ok()).map(|s| Duration::from_secs_f64(s.max(0.0))),
        timeline: col(5).and_then(|v| v.parse().ok()),
    })
}

impl Login {
    /// `[health] user` (default: the first user with a password or a `scram_verifier`)
    /// and `database`; its credential from `keyring`.
    pub(super) fn from_config(config: &Config, keyring: &Keyring) -> Login {
        let has_secret = |u: &&crate::config::User| u.password().is_some() || u.scram_verifier.is_some();
        let user = config
            .health
            .user
            .clone()
            .or_else(|| config.users.iter().find(has_secret).map(|u| u.name.get_ref().clone()))
            .unwrap_or_else(|| "postgres".into());
        let secret = keyring.secret(config, &user);
        let database = config.health.database.clone().unwrap_or_else(|| user.clone());
        Login { user, secret, database }
    }

    /// Opens a connection to node `i` as this login, within `limit`.
    pub(super) async fn connect(&self, addr: &NodeAddr, i: usize, limit: Duration) -> Result<ServerConn, PgError> {
        let secret = self.secret.as_ref().map_err(|why| {
            PgError::error(crate::protocol::sqlstate::CANNOT_CONNECT, format!("the monitor cannot log in yet: {why}"))
        })?;
        ServerConn::connect(addr, i, &self.user, secret.as_ref(), &self.database, &[], limit).await
    }
}

impl NodeProbe {
    /// Probes the node once within `limit`, then counts the outcome towards down/up.
    async fn probe(&mut self, i: usize, addr: &NodeAddr, login: &Login, limit: Duration, h: &Health) {
        if let Err(why) = &login.secret {
            // Not the node's fault: no failure is counted, so the first probe once the
            // monitor's user has logged in through pgroute makes the node usable.
            (self.conn, self.sample, self.failed) = (None, None, Some(("monitor_login", why.clone())));
            return;
        }
        let user = &login.user;
        let started = Instant::now();
        let node = self;
        let result = tokio::time::timeout(limit, async {
            if node.conn.is_none() {
                let mut c = login.connect(addr, i, limit).await?;
                let privileged = c.query_row(PRIVILEGE).await?.and_then(|r| r.into_iter().next().flatten());
                node.privileged = Some(privileged.as_deref() == Some("true"));
                if node.privileged == Some(false) {
                    tracing::error!(node = %addr.name, user = %user, fix = %format!("GRANT pg_monitor TO {user};"),
                        "the health monitor's user lacks pg_read_all_stats: replicas' timelines cannot be read, so no replica is usable");
                }
                let layout = c.query_row(LAYOUT).await.ok().flatten().unwrap_or_default();
                let num = |i: usize| layout.get(i).cloned().flatten().and_then(|v| v.parse::<u64>().ok());
                node.layout = match (num(0), num(1), num(2)) {
                    (Some(align), Some(block), Some(segment)) => WalLayout::new(align, block, segment),
                    _ => None,
                };
                node.conn = Some(c);
            }
            match node.conn.as_mut() {
                Some(c) => c.query_row(PROBE).await,
                None => Ok(None),
            }
        })
        .await;
        let outcome = match result {
            Ok(Ok(Some(row))) => parse_sample(&row, started, Instant::now())
                .ok_or_else(|| ("probe_error", "the probe's answer could not be read".to_string())),
            Ok(Ok(None)) => Err(("probe_error", "the probe returned no row".to_string())),
            Ok(Err(e)) => Err(("probe_error", e.to_string())),
            Err(_) => Err(("probe_timeout", format!("no answer within {limit:?}"))),
        };
        if let Err((_, why)) = &outcome {
            tracing::debug!(node = %addr.name, error = %why, "probe failed");
        }
        let sample = match outcome {
            Ok(s) => {
                node.failed = None;
                Some(s)
            }
            Err(f) => {
                node.failed = Some(f);
                None
            }
        };
        metrics::node_probe(&addr.name, started.elapsed());
        match sample {
            Some(s) => {
                node.sample = Some(s);
                node.failures = 0;
                node.successes += 1;
                if node.down && node.successes >= h.recovery_threshold {
                    node.down = false;
                    tracing::info!(node = %addr.name, "node is up again");
                }
            }
            None => {
                node.conn = None;
                node.sample = None;
                node.successes = 0;
                node.failures += 1;
                if !node.down && node.failures >= h.failure_threshold {
                    node.down = true;
                    tracing::warn!(node = %addr.name, failures = node.failures, "node is down");
                }
            }
        }
    }
}

impl Monitor {
    pub fn new(config: Live, topology: Arc<Topology>, keyring: Arc<Keyring>) -> Monitor {
        let cfg = config.load_full();
        let mut m = Monitor {
            login: Login::from_config(&cfg, &keyring),
            keyring,
            cfg,
            config,
            topology,
            nodes: Vec::new(),
            slots: Vec::new(),
            roles: Vec::new(),
            max_timeline: 0,
            fenced: Vec::new(),
            split_brain: false,
            patroni: None,
            read_exclusions: Vec::new(),
            patroni_published: "",
            on_node_changes: None,
        };
        m.follow_config();
        m
    }

    /// Calls `hook` when Patroni's member list adds, removes or moves nodes.
    pub fn on_node_changes(mut self, hook: NodeChangesHook) -> Self {
        self.on_node_changes = Some(hook);
        self
    }

    /// Takes up the configuration in force: node slots added or removed by a reload, a new
    /// login (connections made with the old one are closed).
    fn follow_config(&mut self) {
        self.cfg = self.config.load_full();
        for i in self.topology.take_unfence_requests() {
            if self.fenced.get(i).copied() == Some(true) {
                self.fenced[i] = false;
                self.nodes[i].published = "";
            }
        }
        let login = Login::from_config(&self.cfg, &self.keyring);
        if login != self.login {
            self.login = login;
            for n in &mut self.nodes {
                n.conn = None;
            }
        }
        let snap = self.topology.snapshot();
        let listed = self.topology.listed();
        self.slots = snap
            .nodes
            .iter()
            .map(|n| {
                let configured = listed.iter().find(|c| *c.name.get_ref() == n.name).map(|c| c.role);
                (n.name.clone(), configured.filter(|_| !n.removed))
            })
            .collect();
        while self.nodes.len() < self.slots.len() {
            let role = self.slots[self.nodes.len()].1;
            self.nodes.push(NodeProbe::default());
            self.roles.push(if role == Some(Role::Primary) { Role::Primary } else { Role::Replica });
            self.fenced.push(false);
        }
        for (i, (_, role)) in self.slots.iter().enumerate() {
            match role {
                None => self.nodes[i] = NodeProbe::default(),
                Some(Role::Primary) => self.roles[i] = Role::Primary,
                Some(Role::Replica) if self.roles[i] == Role::Primary => self.roles[i] = Role::Replica,
                Some(_) => {}
            }
        }
    }

    fn thresholds(&self) -> Thresholds {
        let h = &self.cfg.health;
        Thresholds {
            max_sample_age: h.max_sample_age(),
            max_lag: h.max_replica_lag,
            max_lag_bytes: h.max_replica_lag_bytes,
        }
    }

    /// Probes every node once and publishes the verdicts. Replicas (and undecided nodes)
    /// are probed at once, each within half the probe limit; then the primary, so its WAL
    /// position is read after every replica's replay position (lag is never
    /// under-estimated) and at most half a limit late, whatever a replica does: a node
    /// whose connects hang cannot make the primary's sample stale.
    pub async fn round(&mut self) {
        self.round_within(self.probe_limit()).await;
    }

    /// The round before pgroute serves: each probe may take up to `[pool] connect_timeout`
    /// (a first connect on a busy machine can outlast `max_sample_age`), so clients are not
    /// turned away for a primary that is merely slow to answer its first probe.
    /// Nodes Patroni's member list added are probed in a second round at once.
    pub async fn first_round(&mut self) {
        let limit = self.probe_limit().max(self.cfg.pool.connect_timeout);
        if self.round_within(limit).await {
            self.round_within(limit).await;
        }
    }

    /// True when Patroni's member list changed the node list (the new nodes are probed
    /// from the next round).
    async fn round_within(&mut self, limit: Duration) -> bool {
        self.follow_config();
        let (health, login, roles) = (&self.cfg.health, &self.login, &self.roles);
        let mut primaries = Vec::new();
        let mut replicas = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(addr) = self.topology.addr(i).filter(|_| self.slots[i].1.is_some()) else { continue };
            if roles[i] == Role::Primary {
                primaries.push((i, node, addr));
            } else {
                replicas.push(async move { node.probe(i, &addr, login, limit / 2, health).await });
            }
        }
        // Patroni's view is asked alongside the replicas' probes, before the primary's.
        let topology = &self.cfg.topology;
        let patroni = async {
            match topology.source {
                Source::Patroni => Some((Instant::now(), patroni::fetch(&topology.patroni_urls, limit / 2).await)),
                Source::Static => None,
            }
        };
        let (_, asked) = futures_util::future::join(futures_util::future::join_all(replicas), patroni).await;
        for (i, node, addr) in primaries {
            node.probe(i, &addr, login, limit, health).await;
        }
        let mut changed = false;
        if let Some((taken, answer)) = asked {
            match &answer {
                Err(e) => tracing::debug!(error = %e, "Patroni could not be asked"),
                Ok(members) => changed = self.discover(members),
            }
            self.patroni = Some((taken, answer));
        }
        if changed {
            self.follow_config();
        }
        self.publish();
        changed
    }

    /// Makes Patroni's members nodes: those no `[[nodes]]` entry names join, those Patroni
    /// no longer lists leave. True when the node list changed.
    fn discover(&mut self, members: &[patroni::Member]) -> bool {
        let source = &self.cfg.topology;
        let found = members.iter().map(|m| source.member_node(&m.name, &m.host, m.port)).collect();
        match self.topology.discover(&self.cfg, found) {
            Ok(None) => false,
            Ok(Some(changes)) => {
                if let Some(hook) = &self.on_node_changes {
                    hook(&changes);
                }
                !changes.is_empty()
            }
            Err(e) => {
                tracing::error!(error = %e, "Patroni's members cannot all be nodes");
                false
            }
        }
    }

    /// How long one probe may take: a sample older than `max_sample_age` is no use.
    fn probe_limit(&self) -> Duration {
        self.cfg.health.max_sample_age().max(Duration::from_millis(50))
    }

    /// Which node is the primary: the configured one, or among `auto` nodes the one whose
    /// fresh sample says it is not in recovery. One on a timeline lower than a primary
    /// already seen is a stale old primary (a promotion happened since it last was one):
    /// fenced for good, never a claim. Two other such nodes are a split brain (no primary).
    fn elect(&mut self, t: &Thresholds, now: Instant) -> Option<usize> {
        if let Some(p) = self.slots.iter().position(|(_, r)| *r == Some(Role::Primary)) {
            return Some(p);
        }
        if self.cfg.topology.source == Source::Patroni {
            return self.elect_patroni(t, now);
        }
        let mut claims = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let fresh = node.sample.as_ref().filter(|s| now.saturating_duration_since(s.taken) <= t.max_sample_age);
            let Some(s) = fresh.filter(|s| !s.in_recovery && self.slots[i].1 == Some(Role::Auto)) else { continue };
            let stale = s.timeline.is_some_and(|tl| tl < self.max_timeline);
            if stale && !self.fenced[i] {
                self.fenced[i] = true;
                tracing::error!(node = %self.slots[i].0, timeline = s.timeline, seen = self.max_timeline,
                    "stale old primary (lower timeline): fenced, never used until restart or UNFENCE");
            }
            if !self.fenced[i] {
                claims.push(i);
            }
        }
        self.note_split_brain(&claims);
        let primary = match claims.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        if let Some(p) = primary {
            if let Some(tl) = self.nodes[p].sample.as_ref().and_then(|s| s.timeline) {
                self.max_timeline = self.max_timeline.max(tl);
            }
        }
        primary
    }

    /// With Patroni: its leader, if its own fresh probe agrees (out of recovery, on the
    /// timeline Patroni reports) and no other node is out of recovery. Anything else is no
    /// primary: writes wait, then fail; they never go to a node Patroni did not choose.
    fn elect_patroni(&mut self, t: &Thresholds, now: Instant) -> Option<usize> {
        let claims: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let fresh = self.nodes[i]
                    .sample
                    .as_ref()
                    .filter(|s| now.saturating_duration_since(s.taken) <= t.max_sample_age);
                fresh.is_some_and(|s| !s.in_recovery) && self.slots[i].1.is_some()
            })
            .collect();
        self.note_split_brain(&claims);
        // By node slot (a reload may leave removed nodes' slots empty).
        let addrs: Vec<(String, u16)> = (0..self.nodes.len())
            .map(|i| {
                let addr = self.topology.addr(i).filter(|_| self.slots[i].1.is_some());
                addr.map_or((String::new(), 0), |a| (a.host, a.port))
            })
            .collect();
        let members = match &self.patroni {
            Some((taken, Ok(m))) if now.saturating_duration_since(*taken) <= t.max_sample_age => Some(m),
            _ => None,
        };
        let verdict = match members.map(|m| patroni::leader(m, &addrs)) {
            None => Err("patroni_unknown"),
            Some(Err(why)) => Err(why),
            Some(Ok((leader, timeline))) => {
                let own = self.nodes[leader].sample.as_ref().and_then(|s| s.timeline);
                let agrees = claims == [leader] && (timeline.is_none() || own.is_none() || own == timeline);
                if agrees {
                    Ok(leader)
                } else {
                    Err("not_patroni_leader")
                }
            }
        };
        self.read_exclusions = members.map_or_else(Vec::new, |m| patroni::read_exclusions(m, &addrs));
        let why = verdict.err().unwrap_or("ok");
        if why != self.patroni_published {
            if why != "ok" {
                tracing::warn!(
                    reason = why,
                    "no primary: Patroni's leader and the nodes' own probes do not agree on one"
                );
            }
            self.patroni_published = why;
        }
        verdict.ok()
    }

    /// Several nodes claim to be primary: a split brain, logged when it starts and ends.
    fn note_split_brain(&mut self, claims: &[usize]) {
        let split = claims.len() > 1;
        if split != self.split_brain {
            self.split_brain = split;
            if split {
                let names: Vec<&str> = claims.iter().map(|&i| self.slots[i].0.as_str()).collect();
                tracing::error!(nodes = ?names, "split brain: several nodes are out of recovery; writes refused");
            } else {
                tracing::warn!("split brain over");
            }
        }
        metrics::split_brain(split);
    }

    fn publish(&mut self) {
        let now = Instant::now();
        let t = self.thresholds();
        let primary = self.elect(&t, now);
        let primary_sample = primary.and_then(|p| self.nodes[p].sample.clone());
        let mut published = Vec::with_capacity(self.nodes.len());
        for i in 0..self.nodes.len() {
            if self.slots[i].1.is_none() {
                let wal = Wal::default();
                published.push(Published {
                    role: Role::Replica,
                    usable: false,
                    why: "removed",
                    fresh_until: None,
                    wal,
                    lag: None,
                });
                continue;
            }
            let name = self.slots[i].0.clone();
            let role = if Some(i) == primary { Role::Primary } else { Role::Replica };
            if role != self.roles[i] {
                tracing::warn!(node = %name, ?role, "role change");
                self.roles[i] = role;
            }
            let node = &mut self.nodes[i];
            let mut v: Verdict = match role {
                Role::Primary => assess_primary(node.sample.as_ref(), node.down, &t, now),
                _ => assess_replica(node.sample.as_ref(), primary_sample.as_ref(), node.down, &t, now),
            };
            if self.fenced[i] {
                v.usable = false;
                v.why = "fenced";
            }
            if let (Role::Replica, Some(Some(why))) = (role, self.read_exclusions.get(i)) {
                v.usable = false;
                v.why = why;
            }
            // The verdict's reason in the monitor's own terms where it knows more.
            match (v.why, &node.failed) {
                ("no_sample", Some((why, _))) => v.why = why,
                ("timeline_unknown", _) if node.privileged == Some(false) => v.why = "monitor_privilege",
                _ => {}
            }
            if v.why != node.published {
                let error = node.failed.as_ref().map(|(_, e)| e.as_str());
                if !v.usable {
                    tracing::warn!(node = %name, reason = v.why, error, "node unusable");
                } else if !node.published.is_empty() {
                    tracing::info!(node = %name, previously = node.published, "node usable again");
                }
                node.published = v.why;
            }
            if let Some(lag) = v.lag {
                let over = lag > self.cfg.health.alert_lag;
                if over && !node.alerting {
                    tracing::warn!(node = %name, lag_ms = lag.as_millis() as u64, "replica lag above alert_lag");
                } else if !over && node.alerting {
                    tracing::info!(node = %name, lag_ms = lag.as_millis() as u64, "replica lag back under alert_lag");
                }
                node.alerting = over;
            }
            let timeline = node.sample.as_ref().and_then(|s| s.timeline);
            let verdict = metrics::NodeVerdict {
                up: !node.down,
                usable: v.usable,
                lag: v.lag,
                lag_bytes: v.lag_bytes,
                timeline,
                primary: role == Role::Primary,
                why: v.why,
                reasons: super::REASONS,
            };
            metrics::node_state(&name, verdict);
            let fresh_until = node.sample.as_ref().map(|s| s.taken + t.max_sample_age);
            let wal = node.sample.as_ref().map_or_else(Wal::default, |s| Wal {
                started: Some(s.started),
                current_lsn: s.current_lsn,
                replay_lsn: s.replay_lsn,
                timeline: s.timeline,
                layout: node.layout,
            });
            published.push(Published { role, usable: v.usable, why: v.why, fresh_until, wal, lag: v.lag });
        }
        self.topology.publish_health(&published, self.split_brain);
    }

    /// Probes forever, once per interval.
    pub async fn run(mut self) {
        loop {
            let started = tokio::time::Instant::now();
            self.round().await;
            // The interval of the configuration in force (a reload may change it), or at
            // once when a server reports a role change.
            tokio::select! {
                _ = tokio::time::sleep_until(started + self.cfg.health.interval) => {}
                _ = self.topology.probe_requested() => {}
            }
        }
    }
}
