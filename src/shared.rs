//! What every session shares, built once at start, and the live reload that changes it
//! without dropping sessions.
//!
//! The configuration is held in an [`ArcSwap`]: a session reads the current one for each
//! unit it routes (`Shared::config`), so a reload reaches running sessions at their next
//! statement. What cannot change while running (the listen and metrics addresses, the
//! worker threads, the classification cache's size: the keys `config::reference` marks
//! restart) is reported as needing a restart.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use arc_swap::{ArcSwap, ArcSwapOption, Guard};

use crate::acked::KeyMap;
use crate::auth::scram;
use crate::backend::keyring::Keyring;
use crate::backend::Pools;
use crate::cancel;
use crate::catalog::FunctionCatalog;
use crate::classify::Classifier;
use crate::config::reference::Applies;
use crate::config::{Config, Live};
use crate::rules::Rules;
use crate::topology::{NodeChanges, Topology};

/// Everything sessions share.
pub struct Shared {
    config: Live,
    pub classifier: Arc<Classifier>,
    pub topology: Arc<Topology>,
    pub pools: Pools,
    pub cancels: cancel::Registry,
    /// SCRAM verifiers per user (PBKDF2 is deliberately slow: computed at start and at
    /// each reload, not per login).
    verifiers: ArcSwap<HashMap<String, scram::Verifier>>,
    /// What pgroute logs in to servers with, per user (passwords, and the keys
    /// `scram_verifier` users' logins reveal).
    pub keyring: Arc<Keyring>,
    /// `[auth] query`: verifiers of users not in the file, cached.
    pub auth_lookup: crate::backend::auth_query::AuthLookup,
    /// Round-robin counter for replica choice.
    pub tickets: AtomicU64,
    /// Where reads go: hints, rules, money-critical tables and functions. Swapped whole on
    /// a reload.
    rules: RwLock<Arc<Rules>>,
    pub functions: FunctionCatalog,
    /// Tagged keys for read-your-writes across connections.
    pub keys: KeyMap,
    /// The latest commit acknowledged to a client (`causal_scope = "instance"`).
    pub acked: crate::acked::Acked,
    /// Held while a session asks the primary for its position (one ask at a time).
    pub position_asks: tokio::sync::Mutex<()>,
    /// Reads waiting for a replica to replay a position (`health::ReplayWatch` serves them).
    pub replay_waits: Arc<crate::health::Waits>,
    pub stats: crate::stats::Stats,
    /// `PAUSE`: databases whose new transactions wait (`None`: every database).
    pub pause: tokio::sync::watch::Sender<Option<Paused>>,
    /// Clients logged in and logging in, against the `[listen]` limits.
    pub limits: Arc<crate::limits::ClientLimits>,
    /// `[tls]`: how clients' SSLRequests are answered (`None`: TLS off). Rebuilt from the
    /// files at each reload.
    tls: ArcSwapOption<crate::tls::Acceptor>,
    /// Set once on SIGTERM: stop accepting, and end each session at its next transaction
    /// boundary.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The file the configuration came from, for SIGHUP and the console's `RELOAD`.
    config_path: std::sync::OnceLock<std::path::PathBuf>,
}

/// What `PAUSE` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paused {
    All,
    Databases(Vec<String>),
}

impl Paused {
    pub fn holds(&self, database: &str) -> bool {
        match self {
            Paused::All => true,
            Paused::Databases(d) => d.iter().any(|x| x == database),
        }
    }
}

fn verifiers(config: &Config) -> HashMap<String, scram::Verifier> {
    config
        .users
        .iter()
        .filter_map(|u| {
            let verifier = u.verifier().or_else(|| u.password().map(|p| scram::Verifier::new(&p)))?;
            Some((u.name.get_ref().clone(), verifier))
        })
        .collect()
}

impl Shared {
    /// Fails when the TLS files cannot be loaded.
    pub fn new(config: Live, classifier: Arc<Classifier>) -> Result<Self, String> {
        let cfg = config.load_full();
        let topology = Arc::new(Topology::from_config(&cfg, false));
        let tls = crate::tls::Acceptor::from_config(&cfg.tls)?;
        let keyring = Arc::new(Keyring::default());
        Ok(Shared {
            tls: ArcSwapOption::new(tls),
            pools: Pools::new(config.clone(), topology.clone(), keyring.clone()),
            keyring,
            auth_lookup: Default::default(),
            classifier,
            topology,
            cancels: cancel::Registry::new(cfg.peers.id),
            verifiers: ArcSwap::from_pointee(verifiers(&cfg)),
            tickets: AtomicU64::new(0),
            rules: RwLock::new(Arc::new(Rules::from_config(&cfg.routing, &cfg.groups(), None))),
            functions: FunctionCatalog::new(cfg.routing.function_cache_ttl),
            keys: KeyMap::new(cfg.routing.key_map_size, cfg.routing.key_ttl),
            acked: Default::default(),
            position_asks: Default::default(),
            replay_waits: Arc::default(),
            stats: Default::default(),
            pause: tokio::sync::watch::Sender::new(None),
            limits: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            config_path: Default::default(),
            config,
        })
    }

    /// How clients' SSLRequests are answered now.
    pub fn tls(&self) -> Option<Arc<crate::tls::Acceptor>> {
        self.tls.load_full()
    }

    /// Starts the smart shutdown: no new clients, and every session told to end at its
    /// next transaction boundary (sessions that start later see the flag at login).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.cancels.drain_all();
    }

    /// The configuration in force now.
    pub fn config(&self) -> Guard<Arc<Config>> {
        self.config.load()
    }

    /// The live configuration handle, for the parts that follow reloads themselves (the
    /// health monitor).
    pub fn live_config(&self) -> Live {
        self.config.clone()
    }

    /// Clients logged in now.
    pub fn clients(&self) -> usize {
        self.limits.clients()
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The SCRAM verifier for a configured user with a password or a `scram_verifier`.
    pub fn verifier(&self, user: &str) -> Option<scram::Verifier> {
        self.verifiers.load().get(user).cloned()
    }

    /// Where `reload_file` reads from.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        let _ = self.config_path.set(path);
    }

    /// Reads the configuration file again and applies it (SIGHUP, `RELOAD`). A file that
    /// fails validation changes nothing: the error (file:line:column) is logged and returned.
    pub fn reload_file(&self) -> Result<Vec<String>, String> {
        let Some(path) = self.config_path.get() else {
            return Err("pgroute was started without a configuration file to reload".into());
        };
        let loaded = Config::load(path).map_err(|e| e.to_string()).and_then(|c| self.reload(c));
        if let Err(e) = &loaded {
            tracing::error!(error = %e, "reload refused: nothing changed");
        }
        loaded
    }

    /// Acts on a change of the node list (by a reload, or by Patroni's member list):
    /// the pools of removed and moved nodes are forgotten. Returns what changed, a line
    /// each.
    pub fn node_changes(&self, nodes: &NodeChanges, by: &str) -> Vec<String> {
        for &i in nodes.removed.iter().map(|(i, _)| i).chain(&nodes.moved) {
            self.pools.forget_node(i);
        }
        let mut done = Vec::new();
        for name in &nodes.added {
            tracing::info!(node = %name, by, "node added");
            done.push(format!("node {name} added"));
        }
        for (_, name) in &nodes.removed {
            tracing::warn!(node = %name, by, "node removed: no new work goes to it");
            done.push(format!("node {name} removed"));
        }
        if !nodes.moved.is_empty() {
            tracing::warn!(nodes = nodes.moved.len(), by, "node address changed: pooled connections closed");
            done.push(format!("{} node(s) moved: their pooled connections closed", nodes.moved.len()));
        }
        done
    }

    /// Applies a new configuration to the running proxy, without dropping sessions:
    /// routing (rules, caches cleared, `causal_scope`, `causal_wait`, `balance`),
    /// health thresholds (the monitor reads them each round), users and passwords, nodes
    /// added, removed, moved or re-weighted, pool sizes and timeouts, TLS certificates. Returns what was done,
    /// one line each, including the settings that only a restart applies; an error changes
    /// nothing.
    pub fn reload(&self, new: Config) -> Result<Vec<String>, String> {
        let old = self.config.load_full();
        // Certificates are read again even when the paths did not change (renewed files).
        let tls = crate::tls::Acceptor::from_config(&new.tls)?;
        let nodes = self.topology.reconfigure(&new)?;
        let mut done = Vec::new();
        let (before, after) = (crate::config::reference::settings(&old), crate::config::reference::settings(&new));
        let value = |rows: &[(String, String)], key: &str| rows.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let restart_only = crate::config::reference::KEYS.iter().filter(|k| k.applies == Applies::Restart);
        for key in restart_only {
            if value(&before, key.path) != value(&after, key.path) {
                tracing::warn!(setting = key.path, "changed in the file, applied only at restart");
                done.push(format!("{} changed: applied at the next restart", key.path));
            }
        }
        done.extend(self.node_changes(&nodes, "reload"));
        self.tls.store(tls);
        self.pools.resize(new.pool.size);
        self.verifiers.store(Arc::new(verifiers(&new)));
        self.keyring.retain_matching(&new);
        self.auth_lookup.clear();
        let rules = Rules::from_config(&new.routing, &new.groups(), Some(&self.rules()));
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        self.classifier.reconfigure(&new.routing.write_functions);
        self.functions.clear();
        self.functions.set_ttl(new.routing.function_cache_ttl);
        self.keys.set_limits(new.routing.key_map_size, new.routing.key_ttl);
        self.config.store(Arc::new(new));
        done.push(
            "configuration reloaded: routing, health, users, nodes, pools and TLS certificates; caches cleared".into(),
        );
        tracing::info!("configuration reloaded");
        Ok(done)
    }
}
