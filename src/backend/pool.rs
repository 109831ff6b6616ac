//! Connection pools, one per (node, user, database), each with a maximum size.
//!
//! A checkout takes a permit first (waiting up to `checkout_timeout`), then an idle
//! connection that still looks alive, or opens a new one. A connection comes back only
//! when the session says it is clean (idle, outside a transaction, no pinned state);
//! anything else is closed and its permit freed.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limit::NodeLimits;
use super::ServerConn;
use crate::backend::keyring::Keyring;
use crate::config::{Live, Role};
use crate::metrics;
use crate::protocol::{sqlstate, PgError};
use crate::topology::Topology;

pub struct Pool {
    label: String,
    gauges: Arc<metrics::PoolGauges>,
    node: usize,
    user: String,
    database: String,
    /// Boxed: a connection moves between the idle list, a session and back on every
    /// transaction, as a pointer rather than its few hundred bytes (callgrind, pgbench -S
    /// extended: 4.5% fewer instructions per transaction).
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    /// The size now (a reload may change it; `permits` follows).
    size: std::sync::atomic::AtomicUsize,
    /// Startup parameters of every connection this pool opens, and their fingerprint
    /// (`Settings::startup_key`; 0 for none).
    startup: Vec<(String, String)>,
    startup_key: u64,
    permits: Arc<Semaphore>,
    /// A connection has been made: the pool is for a database that exists.
    established: std::sync::atomic::AtomicBool,
    topology: Arc<Topology>,
    /// The node's role when the idle connections were last used: when it changes
    /// (failover), they are closed rather than reused.
    role: Mutex<Option<Role>>,
}

impl Pool {
    /// Closes idle connections made while the node had another role.
    fn drain_on_role_change(&self) {
        let now = self.topology.snapshot().nodes.get(self.node).map(|n| n.role);
        let mut seen = self.role.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != now {
            if seen.is_some() {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                tracing::warn!(pool = %self.label, closed = idle.len(), "node role changed: idle connections closed");
                self.gauges.add(0, -(idle.len() as i64));
                idle.clear();
            }
            *seen = now;
        }
    }
}

/// A connection on loan from a pool; derefs to the connection. Dropping it closes the
/// connection and frees its place in the pool.
pub struct Checked {
    /// Always `Some` until `release` takes it.
    conn: Option<Box<ServerConn>>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
    /// A place among the node's connections on loan (`[pool] node_limit`).
    node_place: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Checked {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn.as_ref().expect("Checked holds its connection until released")
    }
}

impl std::ops::DerefMut for Checked {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("Checked holds its connection until released")
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        self.pool.gauges.add(-1, 0);
        self.pool.topology.add_load(self.pool.node, -1);
    }
}

impl Checked {
    pub fn holds_node_place(&self) -> bool {
        self.node_place.is_some()
    }

    /// Keeps a place among the node's connections (`Pools::node_place`) while on loan.
    pub fn hold_node_place(&mut self, place: OwnedSemaphorePermit) {
        self.node_place = Some(place);
    }

    /// Returns the connection to its pool (when `reusable` and not poisoned) or closes it.
    pub fn release(mut self, reusable: bool) {
        // A connection holding many clients' statements is closed rather than pooled: the
        // server's memory for them is bounded, and the next connection starts with none.
        let keep = |c: &ServerConn| !c.poisoned && c.prepared.len() + c.stray.len() <= MAX_SERVER_STATEMENTS;
        if let (true, Some(mut conn)) = (reusable, self.conn.take().filter(|c| keep(c))) {
            conn.idle_since = std::time::Instant::now();
            self.pool.gauges.add(0, 1);
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(conn);
        }
    }
}

/// Statements (`pgr_<hash>`) a pooled server connection may hold; past this it is closed
/// when given back.
pub const MAX_SERVER_STATEMENTS: usize = 1000;

/// A pool as the console shows it.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub node: usize,
    pub user: String,
    pub database: String,
    /// pgroute's own catalog-lookup pool rather than clients'.
    pub catalog: bool,
    /// Fingerprint of the startup settings its connections are opened with (0: none).
    pub startup_key: u64,
    pub size: usize,
    /// Connections on loan (permits taken; a shrinking pool counts its held-back permits).
    pub in_use: usize,
    /// Server process ids of the idle connections.
    pub idle: Vec<i32>,
}

/// ParameterStatus (name, value) pairs.
/// What a login learns from a primary connection brought to its startup settings.
#[derive(Debug, Clone, Default)]
pub struct LoginParams {
    /// The ParameterStatus reports, in the server's spelling.
    pub reported: Vec<(String, String)>,
    /// `default_transaction_isolation` there: role, database and startup defaults, which
    /// the client's messages never show.
    pub default_isolation: String,
}

/// Distinct startup-settings sets whose login parameters are remembered.
const MAX_LOGIN_PARAM_SETS: usize = 1024;

/// What a pool's connections serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Statements of clients whose startup settings have this fingerprint
    /// (`Settings::startup_key`): `[pool] size` connections, opened with those settings in
    /// their own startup packet, so that RESET and DISCARD ALL return a connection to
    /// exactly what the client's own login set, as on one server.
    Clients(u64),
    /// pgroute's own catalog lookups (function volatility) for that user and database:
    /// two connections of their own, so a client whose pool is full is not made to wait
    /// for itself.
    Catalog,
}

const CATALOG_POOL_SIZE: usize = 2;

/// (node, user, database, purpose).
type PoolKey = (usize, Arc<str>, Arc<str>, Purpose);

pub struct Pools {
    /// Looked up at every checkout: hashed with foldhash (seeded per process), not SipHash,
    /// as its keys are configured or authenticated names, never free client text.
    map: DashMap<PoolKey, Arc<Pool>, foldhash::fast::RandomState>,
    /// ParameterStatus values a primary connection reported once brought to a client's
    /// startup settings, per (user, database, settings fingerprint): what the next client
    /// with the same startup packet is told at login without borrowing a connection.
    login_params: DashMap<(String, String, u64), Arc<LoginParams>>,
    config: Live,
    topology: Arc<Topology>,
    /// The credentials server connections log in with.
    keyring: Arc<Keyring>,
    /// How many client pools (one per node, user, database and startup set) exist.
    client_pools: std::sync::atomic::AtomicUsize,
    /// Moves whenever a pool leaves the map: every session's `PoolCache` is then stale.
    generation: std::sync::atomic::AtomicU64,
    /// `[pool] node_limit` and `reserve`, from the configuration at start.
    node_limits: Option<NodeLimits>,
}

/// The client pools one session has used, by node, as of a generation of the pool map
/// (a pool that left the map is never borrowed from again).
#[derive(Default)]
pub struct PoolCache {
    generation: u64,
    key: u64,
    pools: Vec<Option<Arc<Pool>>>,
}

/// Which client pool a checkout is for: the node, the client's user and database, and
/// its startup settings (fingerprint `key`).
#[derive(Clone, Copy)]
pub struct ClientPool<'a> {
    pub node: usize,
    pub user: &'a Arc<str>,
    pub database: &'a Arc<str>,
    pub key: u64,
    pub startup: &'a [(String, String)],
}

/// Client pools, beyond which clients with yet another startup packet share pools opened
/// with no startup settings (theirs are then replayed with SET, and RESET returns to the
/// server's defaults instead of their login's).
const MAX_CLIENT_POOLS: usize = 256;

/// Does a startup packet set the session's role or authorization (directly or in
/// `options`)? Over-approximates: a value merely mentioning them counts.
fn names_identity(startup: &[(String, String)]) -> bool {
    startup.iter().any(|(n, v)| {
        let mentions = |s: &str| s.contains("role") || s.contains("session_authorization");
        mentions(n) || (n == "options" && mentions(v))
    })
}

impl Pools {
    pub fn new(config: Live, topology: Arc<Topology>, keyring: Arc<Keyring>) -> Self {
        let pool = &config.load().pool;
        let node_limits = pool.node_limit.map(|limit| NodeLimits::new(limit, pool.reserve));
        Pools {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            login_params: DashMap::new(),
            config,
            topology,
            keyring,
            client_pools: Default::default(),
            generation: Default::default(),
            node_limits,
        }
    }

    fn pool(
        &self,
        node: usize,
        user: &Arc<str>,
        database: &Arc<str>,
        purpose: Purpose,
        startup: &[(String, String)],
    ) -> Arc<Pool> {
        // Shared names: building the key allocates nothing.
        let key = (node, user.clone(), database.clone(), purpose);
        if let Some(p) = self.map.get(&key) {
            return p.clone();
        }
        // Past the bound, another startup set shares the pool opened without settings;
        // never one that says who the session is (`RESET ALL` would not undo a replayed
        // role for the pool's next client). Those are as many as the roles there are.
        if matches!(purpose, Purpose::Clients(k) if k != 0)
            && self.client_pools.load(std::sync::atomic::Ordering::Relaxed) >= MAX_CLIENT_POOLS
            && !names_identity(startup)
        {
            tracing::debug!(%user, %database, "too many startup parameter sets: pooled without them");
            return self.pool(node, user, database, Purpose::Clients(0), &[]);
        }
        self.map
            .entry(key)
            .or_insert_with(|| {
                if matches!(purpose, Purpose::Clients(_)) {
                    self.client_pools.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let name = self.topology.addr(node).map(|a| a.name).unwrap_or_default();
                let (label, size) = match purpose {
                    Purpose::Clients(_) => (format!("{name}/{user}/{database}"), self.config.load().pool.size),
                    Purpose::Catalog => (format!("{name}/{user}/{database}/catalog"), CATALOG_POOL_SIZE),
                };
                Arc::new(Pool {
                    gauges: metrics::pool_gauges(&label),
                    label,
                    node,
                    user: user.to_string(),
                    database: database.to_string(),
                    idle: Mutex::new(Vec::new()),
                    size: size.into(),
                    startup: startup.to_vec(),
                    startup_key: match purpose {
                        Purpose::Clients(k) => k,
                        Purpose::Catalog => 0,
                    },
                    permits: Arc::new(Semaphore::new(size)),
                    topology: self.topology.clone(),
                    role: Mutex::new(None),
                    established: Default::default(),
                })
            })
            .clone()
    }

    /// Every pool, for the console (`SHOW POOLS`, `SHOW SERVERS`), ordered by label.
    pub fn list(&self) -> Vec<PoolInfo> {
        let mut all: Vec<PoolInfo> = self
            .map
            .iter()
            .map(|e| {
                let p = e.value();
                let size = p.size.load(std::sync::atomic::Ordering::Relaxed);
                let idle: Vec<i32> = p.idle.lock().unwrap_or_else(|x| x.into_inner()).iter().map(|c| c.pid).collect();
                PoolInfo {
                    node: p.node,
                    user: p.user.clone(),
                    database: p.database.clone(),
                    catalog: e.key().3 == Purpose::Catalog,
                    startup_key: p.startup_key,
                    size,
                    in_use: size.saturating_sub(p.permits.available_permits()),
                    idle,
                }
            })
            .collect();
        all.sort_by(|a, b| {
            (a.node, &a.user, &a.database, a.startup_key).cmp(&(b.node, &b.user, &b.database, b.startup_key))
        });
        all
    }

    /// A reload changed `[pool] size`: client pools grow at once; they shrink as their
    /// connections come back (the permits above the new size are taken and forgotten).
    pub fn resize(&self, size: usize) {
        use std::sync::atomic::Ordering;
        for entry in self.map.iter().filter(|e| matches!(e.key().3, Purpose::Clients(_))) {
            let pool = entry.value().clone();
            let old = pool.size.swap(size, Ordering::Relaxed);
            if size > old {
                pool.permits.add_permits(size - old);
            } else if size < old {
                let excess = u32::try_from(old - size).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(p) = pool.permits.clone().acquire_many_owned(excess).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// A node's address changed (reload): its pools are forgotten, idle connections
    /// closed; connections on loan are closed when they come back.
    pub fn forget_node(&self, node: usize) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.map.retain(|k, p| {
            if k.0 != node {
                return true;
            }
            if matches!(k.3, Purpose::Clients(_)) {
                self.client_pools.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            p.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            metrics::forget_pool(&p.label);
            false
        });
    }

    /// What a primary connection reported with these startup settings, if known.
    pub fn login_params(&self, user: &str, database: &str, settings: u64) -> Option<Arc<LoginParams>> {
        self.login_params.get(&(user.to_string(), database.to_string(), settings)).map(|p| p.clone())
    }

    /// Remembers what a primary connection reported with these startup settings. Clients
    /// choose their startup parameters, so the map is bounded: when full it starts over.
    pub fn store_login_params(&self, user: &str, database: &str, settings: u64, params: Arc<LoginParams>) {
        if self.login_params.len() >= MAX_LOGIN_PARAM_SETS {
            self.login_params.clear();
        }
        self.login_params.insert((user.to_string(), database.to_string(), settings), params);
    }

    /// Borrows a connection for a client (`client`). `cache` holds the pools this client
    /// used, so a checkout looks the pool map up only after it changed.
    pub async fn checkout(&self, cache: &mut PoolCache, client: &ClientPool<'_>) -> Result<Checked, PgError> {
        let pool = self.cached_pool(cache, client);
        let purpose = Purpose::Clients(client.key);
        self.checkout_from(pool, client.node, client.user, client.database, purpose).await
    }

    /// The client pool `checkout` borrows from: the cached one while no pool has left
    /// the map since it was cached.
    fn cached_pool(&self, cache: &mut PoolCache, client: &ClientPool<'_>) -> Arc<Pool> {
        let ClientPool { node, user, database, key, startup } = *client;
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if (cache.generation, cache.key) != (generation, key) {
            *cache = PoolCache { generation, key, pools: Vec::new() };
        }
        if cache.pools.len() <= node {
            cache.pools.resize(node + 1, None);
        }
        match &cache.pools[node] {
            Some(p) => p.clone(),
            None => {
                let p = self.pool(node, user, database, Purpose::Clients(key), startup);
                cache.pools[node] = Some(p.clone());
                p
            }
        }
    }

    /// Borrows a connection from the pool serving `purpose`. A pool whose first connection
    /// fails (a database that does not exist, say) is forgotten, so clients cannot grow
    /// the pool map, or the metrics labelled by it, with names they make up.
    ///
    pub async fn checkout_for(
        &self,
        node: usize,
        user: &Arc<str>,
        database: &Arc<str>,
        purpose: Purpose,
        startup: &[(String, String)],
    ) -> Result<Checked, PgError> {
        let pool = self.pool(node, user, database, purpose, startup);
        self.checkout_from(pool, node, user, database, purpose).await
    }

    async fn checkout_from(
        &self,
        pool: Arc<Pool>,
        node: usize,
        user: &Arc<str>,
        database: &Arc<str>,
        purpose: Purpose,
    ) -> Result<Checked, PgError> {
        let wait = || self.config.load().pool.checkout_timeout;
        // Fast path without arming a timer; wait only when the pool is full.
        let permit = match pool.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => match tokio::time::timeout(wait(), pool.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => Ok(p),
                _ => Err(()),
            },
        };
        let permit = match permit {
            Ok(p) => p,
            Err(()) => {
                return Err(PgError::error(
                    sqlstate::TOO_MANY_CONNECTIONS,
                    format!(
                        "pgroute: pool {} is exhausted: all {} server connections stayed busy for {:?}",
                        pool.label,
                        pool.size.load(std::sync::atomic::Ordering::Relaxed),
                        wait()
                    ),
                )
                .with_hint("Raise [pool] size or checkout_timeout, or use fewer concurrent clients."))
            }
        };
        pool.drain_on_role_change();
        let reused = loop {
            let candidate = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match candidate {
                None => break None,
                Some(mut c) => {
                    pool.gauges.add(0, -1);
                    if c.idle_and_alive() {
                        break Some(c);
                    }
                }
            }
        };
        let conn = match reused {
            Some(c) => c,
            None => {
                let config = self.config.load_full();
                let secret = self.keyring.secret(&config, user).map_err(|why| {
                    PgError::error(sqlstate::CANNOT_CONNECT, format!("pgroute: cannot log in to the servers: {why}"))
                })?;
                let Some(addr) = self.topology.addr(node) else {
                    return Err(PgError::error(sqlstate::CONNECTION_FAILURE, "pgroute: no such node"));
                };
                // Boxed: a connect (TLS handshake and login included) is a large future and
                // rare; inline, it would size every session's task for it.
                let made = Box::pin(ServerConn::connect(
                    &addr,
                    pool.node,
                    &pool.user,
                    secret.as_ref(),
                    &pool.database,
                    &pool.startup,
                    config.pool.connect_timeout,
                ))
                .await;
                match made {
                    Ok(mut c) => {
                        pool.established.store(true, std::sync::atomic::Ordering::Relaxed);
                        if let Some((_, v)) = c.params.iter().find(|(k, _)| k == "in_hot_standby") {
                            self.topology.report_standby(node, v == "on");
                        }
                        c.opened_with = pool.startup_key;
                        Box::new(c)
                    }
                    Err(e) => {
                        if !pool.established.load(std::sync::atomic::Ordering::Relaxed) {
                            let key = (node, user.clone(), database.clone(), purpose);
                            let removed = self.map.remove_if(&key, |_, p| Arc::ptr_eq(p, &pool)).is_some();
                            self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                            if removed && matches!(purpose, Purpose::Clients(_)) {
                                self.client_pools.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            metrics::forget_pool(&pool.label);
                        }
                        return Err(e);
                    }
                }
            }
        };
        pool.gauges.add(1, 0);
        self.topology.add_load(pool.node, 1);
        Ok(Checked { conn: Some(conn), pool, _permit: permit, node_place: None })
    }

    /// Closes idle connections older than `server_lifetime` or idle longer than
    /// `server_idle_timeout` (`lib::start` runs it every second); returns how many.
    pub fn reap(&self) -> usize {
        let pool = &self.config.load().pool;
        let now = std::time::Instant::now();
        let expired = |c: &ServerConn| {
            now.saturating_duration_since(c.opened) >= pool.server_lifetime
                || now.saturating_duration_since(c.idle_since) >= pool.server_idle_timeout
        };
        let mut closed = 0;
        for entry in self.map.iter() {
            let p = entry.value();
            let mut idle = p.idle.lock().unwrap_or_else(|x| x.into_inner());
            let before = idle.len();
            idle.retain(|c| !expired(c));
            let gone = before - idle.len();
            if gone > 0 {
                p.gauges.add(0, -(gone as i64));
                tracing::debug!(pool = %p.label, closed = gone, "idle server connections past server_lifetime or server_idle_timeout closed");
                closed += gone;
            }
        }
        closed
    }

    /// `[pool] node_limit` is set.
    pub fn limits_nodes(&self) -> bool {
        self.node_limits.is_some()
    }

    /// With `[pool] node_limit`: a place among `node`'s client connections on loan, a
    /// reserved one too when `reserve_ok`, waiting up to `checkout_timeout`. The session
    /// takes it for the connection it just attached (`Checked::hold_node_place`).
    pub async fn node_place(&self, node: usize, reserve_ok: bool) -> Result<Option<OwnedSemaphorePermit>, PgError> {
        let Some(limits) = &self.node_limits else { return Ok(None) };
        let wait = self.config.load().pool.checkout_timeout;
        let name = self.topology.addr(node).map_or_else(String::new, |a| a.name);
        limits.acquire(node, &name, reserve_ok, wait).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_cached_pool_is_dropped_once_the_pool_leaves_the_map() {
        let text = "[[nodes]]\nname = \"pg0\"\nhost = \"127.0.0.1\"\nport = 1\nrole = \"primary\"\n\
                    [[nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\nport = 2\nrole = \"replica\"\n";
        let config = crate::config::Config::parse(text, "proxy.toml").expect("config");
        let topology = Arc::new(Topology::from_config(&config, true));
        let pools = Pools::new(Arc::new(arc_swap::ArcSwap::from_pointee(config)), topology, Default::default());
        let (user, db): (Arc<str>, Arc<str>) = ("app".into(), "app".into());
        let mut cache = PoolCache::default();
        let at = |node, key| ClientPool { node, user: &user, database: &db, key, startup: &[] };
        let first = pools.cached_pool(&mut cache, &at(1, 0));
        assert!(Arc::ptr_eq(&first, &pools.cached_pool(&mut cache, &at(1, 0))), "kept");
        let other = pools.cached_pool(&mut cache, &at(0, 0));
        assert!(!Arc::ptr_eq(&first, &other), "one pool per node");
        // A reload moved node 1: its pool left the map; the session must not borrow from it.
        pools.forget_node(1);
        let again = pools.cached_pool(&mut cache, &at(1, 0));
        assert!(!Arc::ptr_eq(&first, &again), "the forgotten pool is not used again");
        assert!(Arc::ptr_eq(&again, &pools.pool(1, &user, &db, Purpose::Clients(0), &[])), "the map's pool");
        assert!(Arc::ptr_eq(&other, &pools.pool(0, &user, &db, Purpose::Clients(0), &[])), "node 0 untouched");
        // Another startup set is another pool.
        let keyed = pools.cached_pool(&mut cache, &at(1, 7));
        assert!(!Arc::ptr_eq(&again, &keyed));
    }

    #[test]
    fn startup_sets_naming_a_role_never_share_a_pool() {
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(names_identity(&p("options", "-c role=tenant_b")));
        assert!(names_identity(&p("options", "--session_authorization=x")));
        assert!(names_identity(&p("role", "x")));
        assert!(!names_identity(&p("options", "-c search_path=app")));
        assert!(!names_identity(&p("application_name", "billing")));
    }
}
