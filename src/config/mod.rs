//! Configuration: `proxy.toml`, parsed with `toml` + serde (`deny_unknown_fields`), so that
//! every error names the file, line and column. (The `config` crate loses positions.)
//!
//! Invariant: a `Config` that exists has been validated: exactly one primary, unique node
//! names, every user has a password source where its auth method needs one.

mod duration;
pub mod reference;
mod tls;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use duration::parse_duration;
pub use tls::{ClientCert, ClientTlsMode, ServerTlsMode, Tls};

/// A `[topology] patroni_urls` entry: `http://host:port`, the only form accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniUrl {
    pub host: String,
    pub port: u16,
}

impl PatroniUrl {
    pub fn parse(url: &str) -> Option<PatroniUrl> {
        let rest = url.strip_prefix("http://")?.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':')?;
        if host.is_empty() || host.contains('/') {
            return None;
        }
        Some(PatroniUrl { host: host.to_string(), port: port.parse().ok()? })
    }
}

/// The configuration in force, swapped whole by a reload.
pub type Live = std::sync::Arc<arc_swap::ArcSwap<Config>>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub topology: TopologySource,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub auth: AuthQuery,
    #[serde(default)]
    pub peers: Peers,
    /// May be empty with `[topology] source = "patroni"` (the nodes are its members).
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub users: Vec<User>,
}

/// `[auth]`: users not in the file, looked up on the primary (PgBouncer's `auth_query`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthQuery {
    /// The `[[users]]` entry the lookup logs in as; off when absent.
    pub user: Option<String>,
    /// Returns (name, SCRAM verifier) for `$1`, the user logging in.
    pub query: String,
    /// The database the lookup runs in.
    pub database: String,
    /// How long a looked-up verifier (or the absence of one) is trusted.
    #[serde(with = "duration::serde_str")]
    pub cache_ttl: Duration,
}

impl Default for AuthQuery {
    fn default() -> Self {
        AuthQuery {
            user: None,
            query: "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".into(),
            database: "postgres".into(),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// `[peers]`: pgroute instances behind one address (one TCP balancer). Each puts its id in
/// the BackendKeyData it hands out; a cancel request for another instance's key is
/// forwarded to that instance (PgBouncer's peering).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Peers {
    /// This instance's id, 1 to 255; 0: peering off.
    pub id: u8,
    /// Every instance by id ("2" = "10.0.0.2:6432"): where it accepts clients.
    pub members: std::collections::BTreeMap<String, String>,
}

impl Peers {
    /// The address of member `id`, if listed.
    pub fn member(&self, id: u8) -> Option<&str> {
        self.members.get(&id.to_string()).map(String::as_str)
    }
}

/// How pgroute logs (`tracing`, to standard error); the level comes from `RUST_LOG`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields and its spans.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: use \"text\" or \"json\"")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub address: String,
    /// Largest protocol message accepted from a client, in bytes.
    pub max_message_size: usize,
    /// Largest startup packet accepted, in bytes.
    pub max_startup_packet: usize,
    /// How long a new connection may take to authenticate.
    #[serde(with = "duration::serde_str")]
    pub login_timeout: Duration,
    /// Logged-in clients at once: one more is refused with 53300 once its password is
    /// checked, the others are untouched.
    pub max_client_conn: usize,
    /// Connections not logged in yet (from accept to a checked password): one more takes
    /// the place of the one that has waited longest, which gets 53300. Connections that
    /// never log in hold these, never the places of logged-in clients.
    pub max_logins: usize,
    /// Clients at once per user (unlimited when absent).
    pub max_user_client_conn: Option<usize>,
    /// Clients at once per database (unlimited when absent).
    pub max_db_client_conn: Option<usize>,
    /// SIGTERM: how long running transactions may take to finish before pgroute exits.
    #[serde(with = "duration::serde_str")]
    pub shutdown_timeout: Duration,
    /// A client idle (outside a transaction, nothing running) longer is disconnected with
    /// `57P05` (off when absent).
    #[serde(with = "duration::serde_opt")]
    pub client_idle_timeout: Option<Duration>,
    /// A client that takes longer to accept the bytes due to it (it does not read its
    /// results) is disconnected; the server connection it held is closed.
    #[serde(with = "duration::serde_str")]
    pub client_write_timeout: Duration,
    /// Threads that run client sessions, pools and the monitor. 1: one event loop on one
    /// thread (PgBouncer's shape; no wake-ups between threads, measured fastest where the
    /// servers share the proxy's cores); more: a work-stealing runtime of that many.
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is held for one transaction (or one statement outside one).
    Transaction,
    /// A server connection per node is held for the client's whole session.
    Session,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    pub mode: PoolMode,
    /// Maximum server connections per (node, user, database).
    pub size: usize,
    /// How long a statement waits for a busy pool (PgBouncer's `query_wait_timeout`,
    /// accepted as an alias).
    #[serde(with = "duration::serde_str", alias = "query_wait_timeout")]
    pub checkout_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub connect_timeout: Duration,
    /// At most this many server connections on loan to one node at once, across all
    /// client pools (none: each pool's `size` is the only bound).
    pub node_limit: Option<usize>,
    /// Of `node_limit`, this many only for sessions a rule with `reserve = true` placed.
    pub reserve: usize,
    /// A client idle inside a transaction longer: the transaction is rolled back on the
    /// server (its locks released), the connection goes back to the pool, and the client
    /// gets `25P03` and is disconnected (off when absent).
    #[serde(with = "duration::serde_opt")]
    pub idle_transaction_timeout: Option<Duration>,
    /// A server connection older than this is closed when idle in its pool.
    #[serde(with = "duration::serde_str")]
    pub server_lifetime: Duration,
    /// A server connection idle in its pool longer than this is closed.
    #[serde(with = "duration::serde_str")]
    pub server_idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// Entries in the classification cache (keyed by normalised statement text).
    pub cache_size: usize,
    /// Where plain reads go when no rule, hint or table/function list decides.
    pub default_read: Target,
    /// Any read that mentions one of these tables goes to the primary.
    pub primary_tables: Vec<String>,
    /// Any read that calls one of these functions goes to the primary.
    pub primary_functions: Vec<String>,
    /// Extra functions to treat as writes wherever they are called.
    pub write_functions: Vec<String>,
    /// Volatile user functions that are nonetheless safe on a replica.
    pub read_only_functions: Vec<String>,
    /// How long a looked-up function volatility is trusted.
    #[serde(with = "duration::serde_str")]
    pub function_cache_ttl: Duration,
    /// Ordered rules for reads; the first whose matchers all match decides.
    pub rules: Vec<Rule>,
    /// How reads are spread over usable replicas.
    pub balance: Balance,
    /// Which acknowledged commits a read must see (rules and hints may choose another).
    pub causal_scope: CausalScope,
    /// How long a read may wait for a replica to reach the commits its scope needs before
    /// it goes to the primary (`"0s"`: not at all).
    #[serde(with = "duration::serde_opt")]
    pub causal_wait: Option<Duration>,
    /// Reads of views and functions whose answer depends on the node (`pg_stat_activity`,
    /// `pg_locks`, `pg_is_in_recovery()`, ...) go to the primary, as a direct connection to
    /// it would answer them. `false` lets them go wherever reads go.
    pub node_local_to_primary: bool,
    /// Tagged keys (`/* pgroute: key=... */`) remembered at most.
    pub key_map_size: usize,
    /// How long a tagged key is remembered.
    #[serde(with = "duration::serde_str")]
    pub key_ttl: Duration,
}

/// `causal_scope`: which commits a read must see, besides those its causal token names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CausalScope {
    /// Only the lag threshold: a read may miss any recent commit.
    None,
    /// The session's own commits and the latest commit of its tagged keys.
    Session,
    /// Every commit pgroute acknowledged to any client before the read arrived.
    #[default]
    Instance,
    /// Every commit the primary had made when the read arrived: through other pgroute
    /// instances or directly too (one round trip to the primary, shared by the reads
    /// that arrived while it was asked).
    Cluster,
}

impl CausalScope {
    /// Every scope, in the order labels index them.
    pub const ALL: [CausalScope; 4] =
        [CausalScope::None, CausalScope::Session, CausalScope::Instance, CausalScope::Cluster];

    pub fn label(self) -> &'static str {
        match self {
            CausalScope::None => "none",
            CausalScope::Session => "session",
            CausalScope::Instance => "instance",
            CausalScope::Cluster => "cluster",
        }
    }

    pub fn parse(text: &str) -> Option<CausalScope> {
        CausalScope::ALL.into_iter().find(|s| s.label() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// The replica with the fewest server connections in use per unit of weight.
    LeastConnections,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Primary,
    Replica,
}

/// A routing rule for reads. All the matchers given must match; rules never move writes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: Spanned<String>,
    pub application_name: Option<String>,
    pub user: Option<String>,
    pub database: Option<String>,
    /// A regular expression searched in the statement text.
    pub pattern: Option<Spanned<String>>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub functions: Vec<String>,
    pub route: Target,
    /// Reads matched by this rule go only to replicas at most this far behind.
    #[serde(default, with = "duration::serde_opt")]
    pub max_lag: Option<Duration>,
    /// Only the replicas of this node group take the rule's reads (`route = "replica"`).
    pub group: Option<Spanned<String>>,
    /// When no replica of `group` can take a read (default: `error`).
    pub fallback: Option<Fallback>,
    /// At most this many sessions run the rule's reads at once (a unit, or the
    /// transaction it begins), across all clients.
    pub max_concurrent: Option<u32>,
    /// How long a read waits in line under `max_concurrent` before `53300` (default 5s).
    #[serde(default, with = "duration::serde_opt")]
    pub queue_timeout: Option<Duration>,
    /// The sessions this rule matches may use `[pool] reserve` (writes too: the rule
    /// matches the session's statements, whatever they are).
    #[serde(default)]
    pub reserve: bool,
    /// The server's `statement_timeout` for the rule's reads outside a transaction block
    /// (set before the statement, the client's own value back after it).
    #[serde(default, with = "duration::serde_opt")]
    pub statement_timeout: Option<Duration>,
    /// Which acknowledged commits the rule's reads must see (default: `[routing]`'s).
    pub causal_scope: Option<CausalScope>,
}

impl Rule {
    pub fn queue_timeout(&self) -> Duration {
        self.queue_timeout.unwrap_or(Duration::from_secs(5))
    }
}

/// What a read sent to a node group does when no replica of the group can take it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// The replicas of the default group, as a plain read.
    Default,
    /// The primary.
    Primary,
    /// An error (`08006`, naming the group): the read runs nowhere else.
    #[default]
    Error,
}

impl Fallback {
    pub fn parse(text: &str) -> Option<Fallback> {
        match text {
            "default" => Some(Fallback::Default),
            "primary" => Some(Fallback::Primary),
            "error" => Some(Fallback::Error),
            _ => None,
        }
    }
}

/// Health monitoring and the thresholds that make a replica usable for reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    /// How often every node is probed.
    #[serde(with = "duration::serde_str")]
    pub interval: Duration,
    /// A sample older than this is stale: the node is unusable until a fresh one arrives.
    /// Default: three intervals.
    #[serde(with = "duration::serde_opt")]
    pub max_sample_age: Option<Duration>,
    /// Replicas further behind than this (time) take no reads.
    #[serde(with = "duration::serde_str")]
    pub max_replica_lag: Duration,
    /// Replicas further behind than this (bytes of WAL) take no reads.
    pub max_replica_lag_bytes: u64,
    /// Lag above this logs a WARN once per episode.
    #[serde(with = "duration::serde_str")]
    pub alert_lag: Duration,
    /// Consecutive failed probes that mark a node down.
    pub failure_threshold: u32,
    /// Consecutive good probes that bring a down node back.
    pub recovery_threshold: u32,
    /// Where reads go when no replica is usable.
    pub when_no_replica: WhenNoReplica,
    /// How long a write waits for a primary to appear (failover) before it fails.
    #[serde(with = "duration::serde_str")]
    pub primary_wait: Duration,
    /// The `[[users]]` entry the monitor logs in as (default: the first with a password).
    pub user: Option<String>,
    /// Database the monitor connects to (default: the user's name).
    pub database: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenNoReplica {
    Primary,
    Error,
}

/// Who says which node is the primary: the nodes' own roles and probes (`static`, the
/// default), or Patroni's leader, checked against the node's own probe (`patroni`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySource {
    #[serde(default)]
    pub source: Source,
    /// Patroni members' REST API addresses (`http://host:port`), asked in order.
    #[serde(default)]
    pub patroni_urls: Vec<String>,
    /// How pgroute connects to members Patroni lists that no `[[nodes]]` entry names
    /// (by address): they become nodes of their own, with these TLS settings.
    #[serde(default)]
    pub member_tls: ServerTlsMode,
    pub member_tls_ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Static,
    Patroni,
}

impl Config {
    /// The node groups, by bit: `default` first, then every other group the nodes name,
    /// in order of first mention.
    pub fn groups(&self) -> Vec<String> {
        let mut all = vec![DEFAULT_GROUP.to_string()];
        for n in &self.nodes {
            for g in n.group_names() {
                if !all.iter().any(|a| a == g) {
                    all.push(g.to_string());
                }
            }
        }
        all
    }
}

/// The bit set of `names` among `groups` (unknown names set nothing).
pub fn group_mask<'a>(groups: &[String], names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(|n| groups.iter().position(|g| g == n))
        .filter(|&i| i < MAX_GROUPS)
        .fold(0, |m, i| m | (1 << i))
}

impl TopologySource {
    /// A Patroni member no `[[nodes]]` entry names, as a node of its own: `auto` (Patroni
    /// says whether it leads), weight 1, `member_tls`.
    pub fn member_node(&self, name: &str, host: &str, port: u16) -> Node {
        Node {
            name: toml::Spanned::new(0..0, name.to_string()),
            host: host.to_string(),
            port,
            role: Role::Auto,
            weight: default_weight(),
            tls: self.member_tls,
            tls_ca_file: self.member_tls_ca_file.clone(),
            groups: None,
        }
    }
}

impl Health {
    pub fn max_sample_age(&self) -> Duration {
        self.max_sample_age.unwrap_or(self.interval * 3)
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: Duration::from_millis(100),
            max_sample_age: None,
            max_replica_lag: Duration::from_secs(1),
            max_replica_lag_bytes: 16 * 1024 * 1024,
            alert_lag: Duration::from_millis(500),
            failure_threshold: 3,
            recovery_threshold: 3,
            when_no_replica: WhenNoReplica::Primary,
            primary_wait: Duration::from_secs(5),
            user: None,
            database: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where Prometheus metrics are served (`GET /metrics`); off when absent.
    pub metrics_address: Option<String>,
    /// Where `GET /live` and `GET /ready` are served (`endpoints`); off when absent.
    pub health_address: Option<String>,
    /// `[[users]]` entries that may open the admin console (database `pgroute`).
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
}

impl Admin {
    pub fn is_admin(&self, user: &str) -> bool {
        self.users.iter().any(|u| u.get_ref() == user)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
    /// Detect: the node that is not in recovery is the primary (see `health`).
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: Spanned<String>,
    pub host: String,
    pub port: u16,
    pub role: Role,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS to this server (libpq's sslmode values); the health monitor uses it too.
    #[serde(default)]
    pub tls: ServerTlsMode,
    /// CA certificates (PEM) the server's certificate must chain to (`verify-ca`,
    /// `verify-full`).
    pub tls_ca_file: Option<String>,
    /// The node groups whose reads this node takes as a replica (default: `["default"]`,
    /// the group of plain reads).
    pub groups: Option<Vec<Spanned<String>>>,
}

/// The group of reads no rule sends elsewhere.
pub const DEFAULT_GROUP: &str = "default";

/// At most this many node groups (each is a bit of a node's group set).
pub const MAX_GROUPS: usize = 64;

impl Node {
    /// The names of this node's groups.
    pub fn group_names(&self) -> Vec<&str> {
        match &self.groups {
            Some(g) => g.iter().map(|n| n.get_ref().as_str()).collect(),
            None => vec![DEFAULT_GROUP],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: Spanned<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    /// Instead of a password: the role's SCRAM verifier as `pg_authid.rolpassword` holds
    /// it (SCRAM pass-through, `backend::keyring`).
    pub scram_verifier: Option<String>,
    /// How clients authenticate to pgroute as this user.
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
}

/// Never prints the password, so that no log line can carry it.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", self.name.get_ref())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("scram_verifier", &self.scram_verifier.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .finish()
    }
}

impl User {
    /// The password from the file or the environment. Validation guarantees one exists
    /// when the auth method needs it; backends may still ask for one under `trust`.
    pub fn password(&self) -> Option<String> {
        match (&self.password, &self.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => std::env::var(var).ok(),
            (None, None) => None,
        }
    }

    /// Its `scram_verifier`, parsed (validation refuses one that does not parse).
    pub fn verifier(&self) -> Option<crate::auth::scram::Verifier> {
        self.scram_verifier.as_deref().and_then(|v| crate::auth::scram::Verifier::parse(v).ok())
    }
}

fn default_weight() -> u32 {
    1
}
fn default_auth() -> AuthMethod {
    AuthMethod::ScramSha256
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            address: "127.0.0.1:6432".into(),
            max_message_size: 64 * 1024 * 1024,
            max_startup_packet: 10_000,
            login_timeout: Duration::from_secs(15),
            max_client_conn: 10_000,
            max_logins: 256,
            max_user_client_conn: None,
            max_db_client_conn: None,
            shutdown_timeout: Duration::from_secs(30),
            client_idle_timeout: None,
            client_write_timeout: Duration::from_secs(60),
            workers: 1,
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            mode: PoolMode::Transaction,
            size: 20,
            checkout_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            node_limit: None,
            reserve: 0,
            idle_transaction_timeout: None,
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
        }
    }
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            cache_size: 10_000,
            default_read: Target::Replica,
            primary_tables: Vec::new(),
            primary_functions: Vec::new(),
            write_functions: Vec::new(),
            read_only_functions: Vec::new(),
            function_cache_ttl: Duration::from_secs(60),
            rules: Vec::new(),
            balance: Balance::RoundRobin,
            causal_scope: CausalScope::default(),
            causal_wait: Some(Duration::from_millis(5)),
            node_local_to_primary: true,
            key_map_size: 100_000,
            key_ttl: Duration::from_secs(60),
        }
    }
}

/// A rule's `pattern`, compiled with bounds on its length and compiled size, so that a
/// pathological pattern (`(a{1000}){1000}`) is refused quickly instead of taking seconds
/// and megabytes (a reload compiles every pattern).
pub fn compile_pattern(p: &str) -> Result<regex::Regex, String> {
    if p.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
    }
    regex::RegexBuilder::new(p).size_limit(256 << 10).dfa_size_limit(256 << 10).build().map_err(|e| e.to_string())
}

const MAX_PATTERN_LEN: usize = 1024;

/// A configuration error, already formatted as `file:line:column: message`.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Keys earlier versions took, and what replaced them.
const RETIRED: [(&str, &str); 3] = [
    (
        "read_your_writes",
        "[routing] causal_scope replaced it: \"off\" is causal_scope = \"none\", \"lsn\" is the default \
         (\"instance\", or \"session\" for only the session's own writes), \"window\" is closest to causal_wait = \"0s\"",
    ),
    ("sticky_window", "the window mode it served is gone: see [routing] causal_scope and causal_wait"),
    ("key_scope", "[routing] causal_scope replaced it: key_scope = \"cluster\" is causal_scope = \"cluster\""),
];

/// A parse error's message, with the replacement when it names a retired key.
fn retired(message: &str) -> String {
    match RETIRED.iter().find(|(key, _)| message.starts_with(&format!("unknown field `{key}`"))) {
        Some((key, instead)) => format!("{key} is no longer a key: {instead}"),
        None => message.to_string(),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let at = |offset: Option<usize>, msg: &str| {
            let (line, col) = offset.map(|o| line_col(text, o)).unwrap_or((1, 1));
            ConfigError(format!("{origin}:{line}:{col}: {}", msg.trim_end()))
        };
        let cfg: Config = toml::from_str(text).map_err(|e| at(e.span().map(|s| s.start), &retired(e.message())))?;
        cfg.validate(text).map_err(|(offset, msg)| at(offset, &msg))?;
        Ok(cfg)
    }

    fn validate(&self, text: &str) -> Result<(), (Option<usize>, String)> {
        self.validate_nodes(text)?;
        self.validate_users()?;
        self.validate_rules()?;
        self.validate_limits()
    }

    /// Nodes: unique names, one primary or all `auto`, Patroni's settings, groups, TLS.
    fn validate_nodes(&self, text: &str) -> Result<(), (Option<usize>, String)> {
        if self.nodes.is_empty() && self.topology.source != Source::Patroni {
            return Err((None, "no [[nodes]] configured".into()));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(prev) = self.nodes[..i].iter().find(|p| p.name.get_ref() == n.name.get_ref()) {
                let (line, _) = line_col(text, prev.name.span().start);
                return Err((
                    Some(n.name.span().start),
                    format!("duplicate node name {:?} (first defined on line {line})", n.name.get_ref()),
                ));
            }
        }
        let primaries: Vec<&Node> = self.nodes.iter().filter(|n| n.role == Role::Primary).collect();
        let autos = self.nodes.iter().filter(|n| n.role == Role::Auto).count();
        match primaries.as_slice() {
            [] if autos > 0 || self.nodes.is_empty() => {}
            [first, ..] if autos > 0 => {
                return Err((
                    Some(first.name.span().start),
                    "role = \"primary\" cannot be mixed with role = \"auto\" nodes".into(),
                ))
            }
            [] => return Err((None, "no node has role = \"primary\" (or \"auto\")".into())),
            [_] => {}
            [_, second, ..] => {
                return Err((Some(second.name.span().start), "more than one node has role = \"primary\"".into()))
            }
        }
        if self.topology.source == Source::Patroni {
            if self.topology.patroni_urls.is_empty() {
                return Err((None, "[topology] source = \"patroni\" needs patroni_urls".into()));
            }
            if let Some(bad) = self.topology.patroni_urls.iter().find(|u| PatroniUrl::parse(u).is_none()) {
                return Err((None, format!("[topology] patroni_urls: {bad:?} is not http://host:port")));
            }
            if let Some(n) = self.nodes.iter().find(|n| n.role != Role::Auto) {
                return Err((
                    Some(n.name.span().start),
                    "with [topology] source = \"patroni\" every node has role = \"auto\": Patroni says which leads"
                        .into(),
                ));
            }
        }
        let groups = self.groups();
        if groups.len() > MAX_GROUPS {
            return Err((None, format!("more than {MAX_GROUPS} node groups")));
        }
        for n in &self.nodes {
            for g in n.groups.iter().flatten() {
                let name = g.get_ref();
                let fine = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !fine {
                    return Err((Some(g.span().start), format!("group name {name:?}: use letters, digits, _ and -")));
                }
            }
        }
        if let Some(n) = self.nodes.iter().find(|n| n.tls.verifies() && n.tls_ca_file.is_none()) {
            return Err((
                Some(n.name.span().start),
                format!("node {:?}: tls = verify-ca/verify-full needs tls_ca_file", n.name.get_ref()),
            ));
        }
        if self.topology.member_tls.verifies() && self.topology.member_tls_ca_file.is_none() {
            return Err((None, "[topology] member_tls = verify-ca/verify-full needs member_tls_ca_file".into()));
        }
        Ok(())
    }

    /// Users: unique, with a password where their auth method needs one; the console's
    /// and the monitor's users among them.
    fn validate_users(&self) -> Result<(), (Option<usize>, String)> {
        for (i, u) in self.users.iter().enumerate() {
            if self.users[..i].iter().any(|p| p.name.get_ref() == u.name.get_ref()) {
                return Err((Some(u.name.span().start), format!("duplicate user {:?}", u.name.get_ref())));
            }
            let at = Some(u.name.span().start);
            let given = [u.password.is_some(), u.password_env.is_some(), u.scram_verifier.is_some()];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err((at, "give one of password, password_env and scram_verifier".into()));
            }
            if u.auth != AuthMethod::Trust && !given.contains(&true) {
                return Err((
                    at,
                    format!(
                        "user {:?} needs password, password_env or scram_verifier for its auth method",
                        u.name.get_ref()
                    ),
                ));
            }
            if let Some(v) = &u.scram_verifier {
                crate::auth::scram::Verifier::parse(v)
                    .map_err(|e| (at, format!("user {:?}: {e}", u.name.get_ref())))?;
                if u.auth != AuthMethod::ScramSha256 {
                    return Err((
                        at,
                        format!(
                            "user {:?}: a scram_verifier needs auth = \"scram-sha-256\" (only a SCRAM proof reveals the keys that log in to the servers)",
                            u.name.get_ref()
                        ),
                    ));
                }
            }
        }
        if let Some(u) = self.admin.users.iter().find(|u| self.user(u.get_ref()).is_none()) {
            return Err((
                Some(u.span().start),
                format!("[admin] user {:?} is not a configured [[users]] entry", u.get_ref()),
            ));
        }
        if let Some(u) = self.health.user.as_ref().filter(|u| self.user(u).is_none()) {
            return Err((None, format!("[health] user {u:?} is not a configured [[users]] entry")));
        }
        for (id, address) in &self.peers.members {
            if !matches!(id.parse::<u8>(), Ok(1..=255)) {
                return Err((None, format!("[peers] members: id {id:?} is not 1 to 255")));
            }
            if address.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
                return Err((None, format!("[peers] members: {id} = {address:?} is not host:port")));
            }
        }
        if self.peers.id == 0 && !self.peers.members.is_empty() {
            return Err((None, "[peers] members need this instance's id (1 to 255)".into()));
        }
        if let Some(u) = self.auth.user.as_ref().filter(|u| self.user(u).is_none()) {
            return Err((None, format!("[auth] user {u:?} is not a configured [[users]] entry")));
        }
        Ok(())
    }

    /// Rules: unique names, patterns that compile, groups that exist, limits that fit.
    fn validate_rules(&self) -> Result<(), (Option<usize>, String)> {
        let groups = self.groups();
        for (i, r) in self.routing.rules.iter().enumerate() {
            if self.routing.rules[..i].iter().any(|p| p.name.get_ref() == r.name.get_ref()) {
                return Err((Some(r.name.span().start), format!("duplicate rule name {:?}", r.name.get_ref())));
            }
            if let Some(p) = &r.pattern {
                if let Err(e) = compile_pattern(p.get_ref()) {
                    return Err((Some(p.span().start), format!("invalid pattern: {e}")));
                }
            }
            if r.causal_scope.is_some() && r.route == Target::Primary {
                return Err((Some(r.name.span().start), "causal_scope needs route = \"replica\"".into()));
            }
            match &r.group {
                Some(g) if r.route == Target::Primary => {
                    return Err((Some(g.span().start), "group needs route = \"replica\"".into()))
                }
                Some(g) if !groups.iter().any(|n| n == g.get_ref()) => {
                    return Err((
                        Some(g.span().start),
                        format!("unknown group {:?}: no [[nodes]] entry lists it in its groups", g.get_ref()),
                    ))
                }
                None if r.fallback.is_some() => {
                    return Err((Some(r.name.span().start), "fallback needs a group".into()));
                }
                _ => {}
            }
            if r.statement_timeout.is_some_and(|t| t.as_millis() == 0 || t.as_millis() > i32::MAX as u128) {
                return Err((
                    Some(r.name.span().start),
                    "statement_timeout must be between 1ms and 2147483647ms".into(),
                ));
            }
            match (r.max_concurrent, r.queue_timeout) {
                (Some(0), _) => return Err((Some(r.name.span().start), "max_concurrent must be above zero".into())),
                (None, Some(_)) => {
                    return Err((Some(r.name.span().start), "queue_timeout needs max_concurrent".into()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Pool, health and listener numbers.
    fn validate_limits(&self) -> Result<(), (Option<usize>, String)> {
        match (self.pool.node_limit, self.pool.reserve) {
            (Some(0), _) => return Err((None, "[pool] node_limit must be above zero".into())),
            (Some(limit), reserve) if reserve >= limit => {
                return Err((None, "[pool] reserve must be below node_limit".into()))
            }
            (None, r) if r > 0 => return Err((None, "[pool] reserve needs node_limit".into())),
            _ => {}
        }
        if self.health.interval.is_zero() || self.health.failure_threshold == 0 || self.health.recovery_threshold == 0 {
            return Err((None, "[health] interval and thresholds must be above zero".into()));
        }
        self.tls.check()?;
        if self.pool.size == 0 {
            return Err((None, "[pool] size must be at least 1".into()));
        }
        if self.listen.max_client_conn == 0 {
            return Err((None, "[listen] max_client_conn must be at least 1".into()));
        }
        if !(1..=MAX_WORKERS).contains(&self.listen.workers) {
            return Err((None, format!("[listen] workers must be between 1 and {MAX_WORKERS}")));
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name.get_ref() == name)
    }
}

/// Most worker threads `[listen] workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests;
