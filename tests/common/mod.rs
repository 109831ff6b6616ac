//! Test harness: a real PostgreSQL 15 primary with streaming replicas, started by
//! `scripts/cluster.sh` on free loopback ports (as the `postgres` user when root), shared
//! by the tests of one test binary and stopped when that process exits.

#![allow(dead_code)]

pub mod certs;
pub mod wire;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use tokio_postgres::{Client, NoTls};

/// The test roles (`scripts/cluster.sh`) and the console's user.
pub const TEST_USERS: &str = "\n[[users]]\nname = \"app\"\npassword = \"app\"\n\
    \n[[users]]\nname = \"app_md5\"\npassword = \"app_md5\"\nauth = \"md5\"\n\
    \n[[users]]\nname = \"postgres\"\nauth = \"trust\"\n\
    \n[[users]]\nname = \"admin\"\npassword = \"admin\"\n";

/// A proxy started in this test's runtime from a whole configuration text.
pub async fn proxy_from_text(text: &str) -> TestProxy {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let config = pgroute::config::Config::parse(text, "test.toml").expect("test config");
    let proxy = pgroute::start(config).await.expect("start proxy");
    TestProxy { port: proxy.addr.port(), proxy }
}

pub struct Cluster {
    pub dir: String,
    pub primary_port: u16,
    pub replica_ports: Vec<u16>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster for this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let out = Command::new(repo().join("scripts/cluster.sh"))
            .args(["start", "--replicas", "2", "--owner-pid", &std::process::id().to_string()])
            .output()
            .expect("run scripts/cluster.sh");
        assert!(out.status.success(), "cluster.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing from cluster.sh output:\n{text}"))
                .to_string()
        };
        Cluster {
            dir: get("PGROUTE_CLUSTER_DIR"),
            primary_port: get("PGROUTE_PRIMARY_PORT").parse().expect("port"),
            replica_ports: get("PGROUTE_REPLICA_PORTS")
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().expect("port"))
                .collect(),
        }
    })
}

impl Cluster {
    /// A proxy configuration for this cluster; `extra` is appended (TOML).
    pub fn config(&self, extra: &str) -> String {
        self.config_with_users(extra, TEST_USERS)
    }

    /// As `config`, with `users` as its `[[users]]` entries.
    pub fn config_with_users(&self, extra: &str, users: &str) -> String {
        let listen = "[listen]\naddress = \"127.0.0.1:0\"\n";
        // The shipped defaults, unless a test's `extra` says otherwise (and why).
        let mut c =
            if extra.contains("[listen]\n") { extra.replace("[listen]\n", listen) } else { format!("{listen}{extra}") };
        c.push_str(&format!(
            "\n[[nodes]]\nname = \"pg0\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n",
            self.primary_port
        ));
        for (i, p) in self.replica_ports.iter().enumerate() {
            c.push_str(&format!(
                "\n[[nodes]]\nname = \"pg{}\"\nhost = \"127.0.0.1\"\nport = {p}\nrole = \"replica\"\n",
                i + 1
            ));
        }
        // An admin console user, unless the test configures [admin] users itself.
        if !c.contains("[admin]\n") {
            c.push_str("\n[admin]\n");
        }
        if !c.contains("\nusers = [") {
            c = c.replacen("[admin]\n", "[admin]\nusers = [\"admin\"]\n", 1);
        }
        c.push_str(users);
        c
    }

    /// A direct connection to a node (0 = primary) as the superuser.
    pub async fn direct(&self, node: usize) -> Client {
        let port = if node == 0 { self.primary_port } else { self.replica_ports[node - 1] };
        connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=app")).await
    }

    /// Makes replica `node` apply WAL `delay` late (`recovery_min_apply_delay`, e.g.
    /// `'2s'`); returns a direct connection to it.
    pub async fn delay_replica(&self, node: usize, delay: &str) -> Client {
        let replica = self.direct(node).await;
        replica.batch_execute(&format!("ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")).await.unwrap();
        replica.batch_execute("SELECT pg_reload_conf()").await.unwrap();
        replica
    }

    /// Waits until every replica has replayed everything the primary has written.
    pub async fn wait_replicas_caught_up(&self) {
        let primary = self.direct(0).await;
        let lsn: String = primary.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
        for r in 1..=self.replica_ports.len() {
            let replica = self.direct(r).await;
            for _ in 0..500 {
                let row =
                    replica.query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn]).await.unwrap();
                if row.get::<_, bool>(0) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

pub async fn connect(conninfo: &str) -> Client {
    try_connect(conninfo).await.unwrap_or_else(|e| panic!("connect {conninfo}: {e}"))
}

pub async fn try_connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A proxy started in this test's runtime.
pub struct TestProxy {
    pub port: u16,
    pub proxy: pgroute::Proxy,
}

impl TestProxy {
    pub fn conninfo(&self, user: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password={user} dbname=app", self.port)
    }

    pub async fn client(&self) -> Client {
        connect(&self.conninfo("app")).await
    }
}

pub async fn proxy_with(extra: &str) -> TestProxy {
    proxy_from_text(&cluster().config(extra)).await
}

/// A proxy started from a configuration file (so that `RELOAD` and SIGHUP have one to
/// read); returns the file's path too.
pub async fn proxy_from_file(extra: &str, name: &str) -> (TestProxy, PathBuf) {
    proxy_from_file_with_users(extra, TEST_USERS, name).await
}

/// As `proxy_from_file`, with `users` as the `[[users]]` entries.
pub async fn proxy_from_file_with_users(extra: &str, users: &str, name: &str) -> (TestProxy, PathBuf) {
    let text = cluster().config_with_users(extra, users);
    let path = std::env::temp_dir().join(format!("pgroute-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    let config = pgroute::config::Config::load(&path).expect("test config");
    let proxy = pgroute::start(config).await.expect("start proxy");
    proxy.shared.set_config_path(path.clone());
    (TestProxy { port: proxy.addr.port(), proxy }, path)
}

impl TestProxy {
    /// The admin console, as the `admin` user.
    pub async fn console(&self) -> Client {
        connect(&format!("host=127.0.0.1 port={} user=admin password=admin dbname=pgroute", self.port)).await
    }
}

/// Every row of a simple-protocol query (the console's answers), as text.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let msgs = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect())
            }
            _ => None,
        })
        .collect()
}

/// A proxy whose nodes all have `role = "auto"` (the one out of recovery is the primary).
pub async fn proxy_auto(extra: &str) -> TestProxy {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let text = cluster()
        .config(extra)
        .replace("role = \"primary\"", "role = \"auto\"")
        .replace("role = \"replica\"", "role = \"auto\"");
    let config = pgroute::config::Config::parse(&text, "auto.toml").expect("test config");
    let proxy = pgroute::start(config).await.expect("start proxy");
    TestProxy { port: proxy.addr.port(), proxy }
}

/// Connects, retrying for up to a second while the proxy still refuses (a place another
/// client is giving back).
pub async fn connect_when_free(conninfo: &str) -> Client {
    for _ in 0..50 {
        if let Ok(c) = try_connect(conninfo).await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    connect(conninfo).await
}

/// The message of the error a refused connection got.
pub async fn refusal(conninfo: &str) -> (String, String) {
    let Err(e) = try_connect(conninfo).await else { panic!("{conninfo}: connected, expected a refusal") };
    let db = e.as_db_error();
    (
        db.map(|d| d.code().code().to_string()).unwrap_or_default(),
        db.map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string()),
    )
}

/// `psql -c SQL` against the admin console on `port`: (stdout, stderr, success).
pub fn console_psql(port: u16, user: &str, password: &str, sql: &str) -> (String, String, bool) {
    let out = Command::new("psql")
        .args(["-X", "-A", "-F", "|", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "pgroute"])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

pub async fn proxy() -> TestProxy {
    proxy_with("").await
}

/// Unique table names so tests sharing a cluster do not collide.
pub fn table(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// First column of the first row of a simple-protocol query, as text.
pub async fn simple_value(client: &Client, sql: &str) -> String {
    let msgs = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The port of the server that answered, through the simple protocol.
pub async fn server_port(client: &Client) -> u16 {
    simple_value(client, "SELECT inet_server_port()").await.parse().expect("port")
}

/// Reads the answering server's port, 10 ms apart, until every port in `wanted` has
/// answered or 30 s have passed; returns every port seen, in order. On a loaded machine a
/// replica can leave rotation for a few seconds (a stale health sample, lag past the
/// threshold, a client's write not yet replayed there), so a fixed number of reads can
/// miss it; the caller still asserts what the ports must and must not hold.
pub async fn ports_until(client: &Client, wanted: &[u16]) -> Vec<u16> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while !wanted.iter().all(|p| seen.contains(p)) && std::time::Instant::now() < deadline {
        seen.push(server_port(client).await);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    seen
}

/// `scripts/cluster.sh node-stop|node-start DIR NODE` on this binary's cluster.
pub fn node_ctl(action: &str, node: usize) {
    let c = cluster();
    let out = Command::new(repo().join("scripts/cluster.sh"))
        .args([action, &c.dir, &node.to_string()])
        .output()
        .expect("cluster.sh");
    assert!(out.status.success(), "{action} {node}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `[[users]]` with no plaintext password anywhere: `app` with the SCRAM verifier
/// PostgreSQL holds for it (`pg_authid`), the console's `admin` with a verifier PostgreSQL
/// computed for the password `admin`, `postgres` trusted as the cluster trusts it.
pub async fn verifier_users() -> String {
    static USERS: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    USERS.get_or_init(read_verifiers).await.clone()
}

async fn read_verifiers() -> String {
    let app: String = cluster()
        .direct(0)
        .await
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'", &[])
        .await
        .expect("pg_authid")
        .get(0);
    format!(
        "\n[[users]]\nname = \"app\"\nscram_verifier = \"{app}\"\n\
         \n[[users]]\nname = \"postgres\"\nauth = \"trust\"\n\
         \n[[users]]\nname = \"admin\"\nscram_verifier = \"{}\"\n",
        role_verifier("pgroute_admin_verifier", "admin", false).await
    )
}

/// Creates `role` on the primary if it is missing (a login role when `login`), gives it
/// `password`, and returns the SCRAM verifier PostgreSQL stored for it (a fresh salt each
/// call).
pub async fn role_verifier(role: &str, password: &str, login: bool) -> String {
    let primary = cluster().direct(0).await;
    let login = if login { "LOGIN" } else { "NOLOGIN" };
    primary
        .batch_execute(&format!(
            "DO $$BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$; \
             ALTER ROLE {role} {login} PASSWORD '{password}'"
        ))
        .await
        .expect("create the role");
    primary.query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&role]).await.expect("pg_authid").get(0)
}
