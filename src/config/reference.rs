//! The configuration described once: every key's meaning here, its name and default from
//! the types themselves. `docs/configuration.md` is [`markdown`] (a test compares the
//! checked-in file; `pgroute config-reference` prints it), and `SHOW CONFIG` is
//! [`settings`] of the configuration in force.
//!
//! The key names come from serde: a section parsed with an unknown key fails with the list
//! of the keys it takes. The defaults come from each section's `Default` (entries of
//! `[[nodes]]`, `[[users]]` and `[[routing.rules]]`: from a minimal entry), serialized.

use super::{Config, Health, Listen, Pool, Routing, Tls, TopologySource};

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Reload,
    Restart,
}

/// One key: `section.key` (`[[nodes]]` entries as `nodes.key`), what its absence means
/// when it has no default value, when it applies, and what it does.
pub struct Key {
    pub path: &'static str,
    pub absent: &'static str,
    pub applies: Applies,
    pub meaning: &'static str,
}

const fn key(path: &'static str, meaning: &'static str) -> Key {
    Key { path, absent: "", applies: Applies::Reload, meaning }
}

const fn absent(path: &'static str, absent: &'static str, meaning: &'static str) -> Key {
    Key { path, absent, applies: Applies::Reload, meaning }
}

const fn restart(path: &'static str, meaning: &'static str) -> Key {
    Key { path, absent: "", applies: Applies::Restart, meaning }
}

/// The sections, in the order the reference lists them: the TOML header, the key prefix,
/// whether it is an array of tables, and a line on what it is for.
pub const SECTIONS: [(&str, &str, bool, &str); 13] = [
    ("[listen]", "listen", false, "Where clients connect, and the limits on them."),
    ("[pool]", "pool", false, "Server connections."),
    ("[routing]", "routing", false, "Where statements go (docs/routing.md) and what reads must see (docs/consistency.md)."),
    ("[[routing.rules]]", "routing.rules", true, "Rules for reads, in order; the first whose matchers all match decides. Rules never move writes."),
    ("[health]", "health", false, "Node health, lag thresholds and failover (docs/failover.md)."),
    ("[admin]", "admin", false, "Metrics and the admin console (docs/operations.md)."),
    ("[tls]", "tls", false, "TLS for clients (docs/operations.md)."),
    ("[topology]", "topology", false, "Who says which node is the primary (docs/failover.md)."),
    ("[auth]", "auth", false, "Users not in this file, looked up on the primary (PgBouncer's `auth_query`; docs/operations.md)."),
    ("[peers]", "peers", false, "Several pgroute instances behind one address: cancel requests reach the instance that owns the key (docs/operations.md)."),
    ("[log]", "log", false, "Logging (to standard error; the level from `RUST_LOG`, default `info`)."),
    ("[[nodes]]", "nodes", true, "The PostgreSQL servers."),
    ("[[users]]", "users", true, "Users clients may log in as; pgroute logs in to the servers as the same user with the same password (SCRAM-SHA-256, md5, cleartext or trust: whatever the server asks), or with the keys a `scram_verifier` user's login reveals (docs/operations.md). A wrong password and an unknown user both get `28P01`."),
];

pub const KEYS: &[Key] = &[
    restart("listen.address", "where clients connect"),
    key("listen.max_message_size", "largest client message in bytes; larger: error `54000`, connection closed"),
    key("listen.max_startup_packet", "largest startup packet in bytes"),
    key("listen.login_timeout", "a client that does not finish logging in by then is dropped"),
    key("listen.max_client_conn", "logged-in clients at once, counted once their password is checked; one more gets `53300`, the others are untouched"),
    key("listen.max_logins", "connections not logged in yet (accept to checked password); one more takes the place of the one that waited longest (`53300`), so sockets that never log in cannot keep a real login out"),
    absent("listen.max_user_client_conn", "unlimited", "clients at once per user (the console included); one more gets `53300` naming the limit"),
    absent("listen.max_db_client_conn", "unlimited", "clients at once per database; one more gets `53300` naming the limit"),
    key("listen.shutdown_timeout", "SIGTERM: how long running transactions may take to finish before pgroute exits"),
    absent("listen.client_idle_timeout", "off", "a client idle longer (outside a transaction, nothing running) is disconnected with `57P05`, as PostgreSQL's `idle_session_timeout`"),
    key("listen.client_write_timeout", "a client that takes longer to accept the bytes due to it (it does not read its results) is disconnected, and the server connection it held is closed, so it cannot hold one forever"),
    restart("listen.workers", "threads running sessions: 1 is one event loop (fastest where PostgreSQL shares the cores); more for a many-core proxy host"),
    key("pool.mode", "`transaction`: a server connection per transaction (or per statement outside one); `session`: one per node for the client's whole session"),
    key("pool.size", "server connections per (node, user, database, startup parameters)"),
    key("pool.checkout_timeout", "how long a statement waits for a busy pool, then `53300` naming the pool (PgBouncer's `query_wait_timeout`, accepted as an alias)"),
    absent("pool.query_wait_timeout", "`checkout_timeout`", "PgBouncer's name for `checkout_timeout`, accepted as an alias (give one of the two)"),
    key("pool.connect_timeout", "opening and authenticating one server connection"),
    Key { path: "pool.node_limit", absent: "none", applies: Applies::Restart, meaning: "server connections on loan to one node at once, across all pools" },
    restart("pool.reserve", "of `node_limit`, this many only for sessions a rule with `reserve = true` placed"),
    absent("pool.idle_transaction_timeout", "off", "a client idle inside a transaction longer: the transaction is rolled back on the server (its locks released), the server connection goes back to the pool, and the client gets `25P03` and is disconnected, as PostgreSQL's `idle_in_transaction_session_timeout`"),
    key("pool.server_lifetime", "a server connection older than this is closed when it is next idle in its pool"),
    key("pool.server_idle_timeout", "a server connection idle in its pool longer than this is closed"),
    restart("routing.cache_size", "classification cache entries (normalised statement text)"),
    key("routing.default_read", "`replica` or `primary`: where plain reads go"),
    key("routing.primary_tables", "any read that mentions one of these tables goes to the primary"),
    key("routing.primary_functions", "any read that calls one of these functions goes to the primary"),
    key("routing.write_functions", "functions treated as writes wherever they are called"),
    key("routing.read_only_functions", "volatile functions that are safe on replicas (named exactly)"),
    key("routing.function_cache_ttl", "how long a looked-up function volatility is trusted"),
    key("routing.rules", "the rules for reads (`[[routing.rules]]` below)"),
    key("routing.balance", "`round_robin` (weighted) or `least_connections` (fewest server connections in use per weight): how reads spread over usable replicas"),
    key("routing.causal_scope", "which acknowledged commits a read must see: `instance` (every commit pgroute acknowledged to any client before the read arrived), `cluster` (also other instances' and direct writes: the primary's position, one round trip), `session` (the session's own and its tagged keys'), `none` (the lag threshold only)"),
    key("routing.causal_wait", "how long a read may wait for a replica to reach what its scope needs, then the primary (`\"0s\"`: never wait)"),
    key("routing.node_local_to_primary", "reads of node-local views and functions (`pg_stat_activity`, `pg_locks`, `pg_is_in_recovery()`, ...) go to the primary, which answers as a direct connection to it would"),
    key("routing.key_map_size", "tagged keys (`/* pgroute: key=wallet:42 */`) remembered at most"),
    key("routing.key_ttl", "how long a tagged key is remembered"),
    absent("routing.rules.name", "required", "the rule's name, in reasons (`rule:NAME`), metrics and errors"),
    absent("routing.rules.application_name", "any", "matcher: the client's `application_name`"),
    absent("routing.rules.user", "any", "matcher: the login's user"),
    absent("routing.rules.database", "any", "matcher: the database"),
    absent("routing.rules.pattern", "any", "matcher: a regular expression searched in the statement text"),
    key("routing.rules.tables", "matcher: the read mentions one of these tables"),
    key("routing.rules.functions", "matcher: the read calls one of these functions"),
    absent("routing.rules.route", "required", "`primary` or `replica`"),
    absent("routing.rules.max_lag", "none", "its reads go only to replicas at most this far behind"),
    absent("routing.rules.group", "the default group", "only the replicas of this node group take its reads"),
    absent("routing.rules.fallback", "`error`", "with `group`, when none of its replicas can take a read: `error`, `default` (the default group) or `primary`"),
    absent("routing.rules.max_concurrent", "unlimited", "at most this many sessions run its reads at once; the rest wait in line"),
    absent("routing.rules.queue_timeout", "`5s`", "how long a read waits in line under `max_concurrent`, then `53300` naming the rule"),
    key("routing.rules.reserve", "its sessions may use `[pool] reserve`"),
    absent("routing.rules.statement_timeout", "none", "the server cancels its reads (outside a transaction block) after this"),
    absent("routing.rules.causal_scope", "`[routing] causal_scope`", "what its reads must see (as `[routing] causal_scope`; needs `route = \"replica\"`)"),
    key("health.interval", "every node is probed this often"),
    absent("health.max_sample_age", "3 x `interval`", "an older sample makes its node unusable"),
    key("health.max_replica_lag", "replicas further behind (time) take no reads"),
    key("health.max_replica_lag_bytes", "replicas further behind (WAL bytes) take no reads"),
    key("health.alert_lag", "lag above this logs a WARN once per episode"),
    key("health.failure_threshold", "failed probes in a row that mark a node down"),
    key("health.recovery_threshold", "good probes in a row that bring it back"),
    key("health.when_no_replica", "`primary`, or `error` (`08006`): where reads go when no replica is usable"),
    key("health.primary_wait", "a write with no primary (failover) waits this long, then `08006`; a COMMIT lost with its connection waits this long for a primary to say whether it committed"),
    absent("health.user", "the first user with a password or a `scram_verifier`", "the `[[users]]` entry the monitor logs in as (it needs `pg_read_all_stats`)"),
    absent("health.database", "the user's name", "the database the monitor connects to"),
    Key { path: "admin.metrics_address", absent: "off", applies: Applies::Restart, meaning: "Prometheus metrics at `http://ADDRESS/metrics`" },
    Key { path: "admin.health_address", absent: "off", applies: Applies::Restart, meaning: "health endpoints for Kubernetes probes: `GET /live` (200 while pgroute serves) and `GET /ready` (200 when a primary is usable; `?replica=1` also needs a usable replica; else 503 with a JSON reason; 503 during a smart shutdown)" },
    key("admin.users", "`[[users]]` entries that may open the console (`dbname=pgroute`)"),
    key("tls.mode", "`disable` (SSLRequest answered N), `allow` (TLS offered, clear text accepted) or `require` (clear-text logins refused with `28000`)"),
    absent("tls.cert_file", "none", "pgroute's certificate chain (PEM, leaf first); re-read at each reload"),
    absent("tls.key_file", "none", "its private key (PEM)"),
    absent("tls.ca_file", "none", "CA certificates client certificates must chain to"),
    key("tls.client_cert", "`none`, or `verify`: clients present a certificate chaining to `ca_file`"),
    key("topology.source", "`static` (the nodes' roles, and for `auto` nodes the one out of recovery) or `patroni` (the leader Patroni's REST API names, while the node's own probe agrees)"),
    key("topology.patroni_urls", "Patroni REST API addresses (`http://host:port`), asked in order"),
    key("topology.member_tls", "as a node's `tls`, for members no `[[nodes]]` entry names"),
    absent("topology.member_tls_ca_file", "none", "as a node's `tls_ca_file`, for those members"),
    absent("auth.user", "off", "the `[[users]]` entry that runs the lookup (a password, or a `scram_verifier` and one login of its own after each start); users not in the file are then looked up on the primary"),
    key("auth.query", "returns (name, SCRAM verifier) for `$1`, the user logging in; a `SECURITY DEFINER` function spares the lookup user superuser rights"),
    key("auth.database", "the database the lookup runs in"),
    key("auth.cache_ttl", "how long a looked-up verifier, or the absence of one, is trusted; a failed login looks again (at most once a second per user)"),
    restart("peers.id", "this instance's id, 1 to 255, carried in every BackendKeyData it hands out (0: peering off)"),
    key("peers.members", "every instance by id, `\"2\" = \"10.0.0.2:6432\"`: where a cancel request for a key of another instance is forwarded"),
    restart("log.format", "`text` (human-readable) or `json` (one object per line: `timestamp`, `level`, `target`, `fields`, `spans`); `--log-format` overrides it"),
    absent("nodes.name", "required", "the node's name, in logs, metrics and the console"),
    absent("nodes.host", "required", "its address"),
    absent("nodes.port", "required", "its port"),
    absent("nodes.role", "required", "`primary`, `replica`, or `auto` (the one out of recovery is the primary)"),
    key("nodes.weight", "its share of reads as a replica"),
    key("nodes.tls", "`disable`, `prefer` (TLS if offered, unverified), `require`, `verify-ca` or `verify-full` (with `tls_ca_file`): libpq's sslmode"),
    absent("nodes.tls_ca_file", "none", "CA certificates (PEM) its certificate must chain to"),
    absent("nodes.groups", "`[\"default\"]`", "the node groups whose reads it takes as a replica"),
    absent("users.name", "required", "the user's name"),
    absent("users.password", "none", "its password (or `password_env`)"),
    absent("users.password_env", "none", "the environment variable that holds its password"),
    absent("users.scram_verifier", "none", "instead of a password: the role's verifier as `pg_authid.rolpassword` holds it (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`); clients authenticate against it and pgroute logs in to the servers with the keys their proof reveals (SCRAM pass-through), so the user's server connections open once it has logged in"),
    key("users.auth", "how clients authenticate to pgroute: `scram-sha-256`, `md5` or `trust`"),
];

/// A section's keys as serde knows them (the list its unknown-key error gives).
pub fn fields(section: &str, array: bool) -> Vec<String> {
    let header = if array { format!("[[{section}]]") } else { format!("[{section}]") };
    let probe = format!("{header}\n\"pgroute reference probe\" = 1\n");
    let message = match toml::from_str::<Config>(&probe) {
        Err(e) => e.message().to_string(),
        Ok(_) => String::new(),
    };
    let expected = message.split_once("expected").map_or("", |(_, rest)| rest);
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The defaults, serialized: each section's `Default`, and a minimal entry of each array.
fn defaults() -> toml::Table {
    let value =
        |v: Result<toml::Value, toml::ser::Error>| v.ok().and_then(|v| v.as_table().cloned()).unwrap_or_default();
    let mut all = toml::Table::new();
    let mut put = |prefix: &str, table: toml::Table| {
        for (k, v) in table {
            all.insert(format!("{prefix}.{k}"), v);
        }
    };
    put("listen", value(toml::Value::try_from(Listen::default())));
    put("pool", value(toml::Value::try_from(Pool::default())));
    put("routing", value(toml::Value::try_from(Routing::default())));
    put("health", value(toml::Value::try_from(Health::default())));
    put("admin", value(toml::Value::try_from(super::Admin::default())));
    put("tls", value(toml::Value::try_from(Tls::default())));
    put("topology", value(toml::Value::try_from(TopologySource::default())));
    put("log", value(toml::Value::try_from(super::Log::default())));
    put("auth", value(toml::Value::try_from(super::AuthQuery::default())));
    put("peers", value(toml::Value::try_from(super::Peers::default())));
    let minimal = |text: &str, pick: fn(&Config) -> Option<toml::Value>| {
        let config = Config::parse(text, "reference").ok();
        config.as_ref().and_then(pick).and_then(|v| v.as_table().cloned()).unwrap_or_default()
    };
    const NODE: &str = "[[nodes]]\nname = \"n\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n";
    const RULE: &str = "[[routing.rules]]\nname = \"r\"\nroute = \"replica\"\n";
    const USER: &str = "[[users]]\nname = \"u\"\npassword = \"p\"\n";
    let all_three = format!("{RULE}{NODE}{USER}");
    put("nodes", minimal(&all_three, |c| toml::Value::try_from(&c.nodes[0]).ok()));
    put("users", minimal(&all_three, |c| toml::Value::try_from(&c.users[0]).ok()));
    put("routing.rules", minimal(&all_three, |c| toml::Value::try_from(&c.routing.rules[0]).ok()));
    all
}

/// A value as the file writes it.
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{s}\""),
        toml::Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

/// `docs/configuration.md`.
pub fn markdown() -> String {
    let defaults = defaults();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the code (`pgroute config-reference`; `src/config/reference.rs` holds the\n\
         meanings, the types the names and defaults). `proxy.toml` is a documented example that\n\
         works with the demo. Unknown keys, wrong types, duplicate node names, no primary or two\n\
         primaries are refused with the file, line and column; `pgroute --check-config FILE`\n\
         checks a file without running. Durations are strings with a unit: `\"100ms\"`, `\"5s\"`,\n\
         `\"2m\"`. Reload (SIGHUP or the console's `RELOAD`) applies every key but those marked\n\
         restart.\n",
    );
    for (header, prefix, _, about) in SECTIONS {
        out.push_str(&format!(
            "\n## `{header}`\n\n{about}\n\n| key | default | applies | meaning |\n|---|---|---|---|\n"
        ));
        let dotted = format!("{prefix}.");
        let keys = KEYS.iter().filter(|k| {
            k.path.strip_prefix(&dotted).is_some_and(|rest| !rest.contains('.'))
                && !(prefix == "routing" && k.path.starts_with("routing.rules."))
        });
        for k in keys {
            // What absence means where the key has no value of its own (or must be given).
            let default = match defaults.get(k.path) {
                Some(v) if k.absent.is_empty() => format!("`{}`", shown(v)),
                _ => k.absent.to_string(),
            };
            let applies = match k.applies {
                Applies::Reload => "reload",
                Applies::Restart => "restart",
            };
            let name = &k.path[dotted.len()..];
            out.push_str(&format!("| `{name}` | {default} | {applies} | {} |\n", k.meaning));
        }
    }
    out
}

/// `SHOW CONFIG`: every key of `config` with its value as the file would write it, one
/// per row; entries of arrays as `nodes.<name>.<key>`; passwords left out.
pub fn settings(config: &Config) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(config) {
        walk("", &toml::Value::Table(t), &mut rows);
    }
    // A key left out that means "off" (or "none", "unlimited") says so, so that every
    // setting an operator may look for has a row (entries of arrays aside).
    let in_arrays: Vec<String> = SECTIONS.iter().filter(|s| s.2).map(|s| format!("{}.", s.1)).collect();
    for k in KEYS {
        let unset = matches!(k.absent, "off" | "none" | "unlimited") && !rows.iter().any(|(p, _)| p == k.path);
        if unset && !in_arrays.iter().any(|a| k.path.starts_with(a.as_str())) {
            rows.push((k.path.to_string(), k.absent.to_string()));
        }
    }
    rows
}

fn walk(path: &str, value: &toml::Value, rows: &mut Vec<(String, String)>) {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                // Secrets, and what an offline guess at one starts from, are never shown.
                if k != "password" && k != "scram_verifier" {
                    walk(&join(k), v, rows);
                }
            }
        }
        toml::Value::Array(a) if a.iter().all(|v| v.is_table()) && !a.is_empty() => {
            for (i, entry) in a.iter().enumerate() {
                let name = entry.get("name").and_then(|n| n.as_str()).map_or(i.to_string(), str::to_string);
                walk(&join(&name), entry, rows);
            }
        }
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(|v| v.as_str().map_or(v.to_string(), str::to_string)).collect();
            rows.push((path.to_string(), items.join(",")));
        }
        toml::Value::String(s) => rows.push((path.to_string(), s.clone())),
        other => rows.push((path.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_the_types_take_is_described_and_nothing_else() {
        for (_, prefix, array, _) in SECTIONS {
            let fields = fields(prefix, array);
            assert!(!fields.is_empty(), "{prefix}: no keys found");
            for f in &fields {
                let path = format!("{prefix}.{f}");
                assert!(KEYS.iter().any(|k| k.path == path), "{path} is not described in KEYS");
            }
            let dotted = format!("{prefix}.");
            for k in KEYS.iter().filter(|k| k.path.strip_prefix(&dotted).is_some_and(|r| !r.contains('.'))) {
                let name = &k.path[dotted.len()..];
                assert!(fields.iter().any(|f| f == name), "{} is described but no such key exists", k.path);
            }
        }
    }

    #[test]
    fn the_checked_in_reference_is_what_the_code_generates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let generated = markdown();
        if std::env::var_os("PGROUTE_WRITE_REFERENCE").is_some() {
            std::fs::write(path, &generated).expect("write docs/configuration.md");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/configuration.md differs from the code: run `cargo run -- config-reference > docs/configuration.md`"
        );
    }

    #[test]
    fn settings_show_every_section_without_passwords() {
        let text = format!(
            "{}[[users]]\nname = \"app\"\npassword = \"secret\"\n",
            "[[nodes]]\nname = \"pg0\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n"
        );
        let rows = settings(&Config::parse(&text, "t.toml").unwrap());
        let get = |k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("listen.workers"), Some("1"));
        assert_eq!(get("routing.balance"), Some("round_robin"));
        assert_eq!(get("routing.causal_wait"), Some("5ms"));
        assert_eq!(get("tls.mode"), Some("disable"));
        assert_eq!(get("topology.source"), Some("static"));
        assert_eq!(get("nodes.pg0.port"), Some("1"));
        assert_eq!(get("users.app.auth"), Some("scram-sha-256"));
        assert!(rows.iter().all(|(k, v)| !k.ends_with(".password") && v != "secret"), "{rows:?}");
    }
}
