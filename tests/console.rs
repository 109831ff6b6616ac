//! The admin console (database `pgroute`): every command through psql, PAUSE/RESUME,
//! DRAIN/UNDRAIN, KILL, and live reload of every section with sessions kept.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cluster, ports_until, proxy_from_file, rows, server_port, simple_value, table, TestProxy};

/// `psql -c SQL` against the console; (stdout, stderr, success).
fn psql(p: &TestProxy, user: &str, password: &str, sql: &str) -> (String, String, bool) {
    common::console_psql(p.port, user, password, sql)
}

fn console_ok(p: &TestProxy, sql: &str) -> String {
    let (out, err, ok) = psql(p, "admin", "admin", sql);
    assert!(ok, "{sql}: psql failed: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_command_answers_through_psql() {
    let c = cluster();
    let extra = "[[routing.rules]]\nname = \"reports\"\napplication_name = \"backoffice\"\nroute = \"replica\"\n";
    let (p, _path) = proxy_from_file(extra, "console-psql").await;
    let app = p.client().await;
    simple_value(&app, "SELECT 1").await;

    let nodes = console_ok(&p, "SHOW NODES");
    assert!(
        nodes.starts_with("name|host|port|role|usable|reason|lag_ms|lag_bytes|timeline|fenced|banned|drained"),
        "{nodes}"
    );
    assert!(nodes.contains(&format!("pg0|127.0.0.1|{}|primary|true|ok|", c.primary_port)), "{nodes}");
    for (i, port) in c.replica_ports.iter().enumerate() {
        assert!(nodes.contains(&format!("pg{}|127.0.0.1|{port}|replica|true|ok|", i + 1)), "{nodes}");
    }
    let pools = console_ok(&p, "show pools;");
    assert!(pools.lines().any(|l| l.contains("|app|app|clients|")), "a pool of the app's connections: {pools}");
    let servers = console_ok(&p, "SHOW SERVERS");
    assert!(servers.lines().any(|l| l.contains("|idle||app|app")), "an idle pooled connection: {servers}");
    let clients = console_ok(&p, "SHOW CLIENTS");
    assert!(clients.lines().any(|l| l.contains("|app|app|")), "{clients}");
    assert!(clients.lines().any(|l| l.contains("|admin|pgroute|") && l.contains("|console|")), "{clients}");
    let stats = console_ok(&p, "SHOW STATS");
    let served: u64 = stats.lines().skip(1).filter_map(|l| l.split('|').nth(1)?.parse::<u64>().ok()).sum();
    assert!(served >= 1, "queries counted: {stats}");
    let routes = console_ok(&p, "SHOW ROUTES");
    assert!(
        routes.lines().any(|l| l.ends_with(|c: char| c.is_ascii_digit()) && l.contains("|default_read|instance|")),
        "{routes}"
    );
    let rules = console_ok(&p, "SHOW RULES");
    assert!(rules.contains("1|reports|replica|backoffice|"), "{rules}");
    let config = console_ok(&p, "SHOW CONFIG");
    assert!(config.contains("routing.causal_scope|instance"), "{config}");
    assert!(config.contains("users.app.auth|scram-sha-256"), "{config}");
    assert!(config.contains("listen.workers|1") && config.contains("topology.source|static"), "{config}");
    assert!(!config.contains("password"), "no passwords: {config}");
    assert!(console_ok(&p, "SHOW VERSION").contains("pgroute "));
    assert!(console_ok(&p, "SHOW HELP").contains("UNFENCE <node>"));
    let explain = console_ok(&p, "EXPLAIN SELECT * FROM t FOR UPDATE");
    assert!(explain.contains("route: primary (pg0)") && explain.contains("reason: write:"), "{explain}");
    assert!(console_ok(&p, "EXPLAIN SELECT 1").contains("route: replica"), "reads go to a replica");
    let explain = console_ok(&p, "EXPLAIN SELECT 1");
    assert!(explain.contains("causal scope: instance (default)"), "{explain}");
    // After a commit through this pgroute, an instance-scope read needs its position.
    let acked = table("console_acked");
    app.batch_execute(&format!("CREATE TABLE {acked} (id int); INSERT INTO {acked} VALUES (1)")).await.unwrap();
    let explain = console_ok(&p, "EXPLAIN /* pgroute: scope=instance */ SELECT 1");
    assert!(
        explain.contains("causal scope: instance (hint or rule)")
            && explain.contains("the latest commit acknowledged through this pgroute"),
        "{explain}"
    );
    assert!(console_ok(&p, "RELOAD").contains("RELOAD"));
    assert!(console_ok(&p, "DRAIN pg1").contains("DRAIN"));
    assert!(console_ok(&p, "UNDRAIN pg1").contains("UNDRAIN"));
    assert!(console_ok(&p, "PAUSE app").contains("PAUSE"));
    assert!(console_ok(&p, "RESUME app").contains("RESUME"));

    // Mistakes get errors with SQLSTATEs, and the console stays usable.
    let (_, err, ok) = psql(&p, "admin", "admin", "UNFENCE pg1");
    assert!(!ok && err.contains("no fenced node named \"pg1\""), "{err}");
    let (_, err, ok) = psql(&p, "admin", "admin", "SELECT 1");
    assert!(!ok && err.contains("unknown command"), "{err}");
    let (_, err, ok) = psql(&p, "admin", "admin", "DRAIN nosuch");
    assert!(!ok && err.contains("no node named"), "{err}");

    // Only [admin] users get a console.
    let (_, err, ok) = psql(&p, "app", "app", "SHOW NODES");
    assert!(!ok && err.contains("may not use the pgroute admin console"), "{err}");
    let console_as_app = format!("host=127.0.0.1 port={} user=app password=app dbname=pgroute", p.port);
    let (code, message) = common::refusal(&console_as_app).await;
    assert_eq!(code, "42501", "{message}");
    let (_, err, ok) = psql(&p, "admin", "wrong", "SHOW NODES");
    assert!(!ok && err.contains("password authentication failed"), "{err}");

    // KILL ends another client's session with 57P01.
    let pid: i32 = rows(&p.console().await, "SHOW CLIENTS")
        .await
        .iter()
        .find(|r| r[1] == "app")
        .map(|r| r[0].parse().unwrap())
        .expect("the app client");
    assert!(console_ok(&p, &format!("KILL {pid}")).contains("KILL"));
    let err = app.simple_query("SELECT 1").await.expect_err("killed");
    // The FATAL arrives, or (if the socket closed first) the connection is closed.
    match err.as_db_error() {
        Some(db) => {
            assert_eq!(db.code().code(), "57P01", "{db:?}");
            assert!(db.message().contains("killed by a pgroute administrator"), "{db:?}");
        }
        None => assert!(err.is_closed(), "{err:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_until_resume_and_lets_running_ones_finish() {
    let (p, _path) = proxy_from_file("", "console-pause").await;
    let console = p.console().await;
    let t = table("pause");
    let running = p.client().await;
    running.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    running.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (1)")).await.unwrap();
    rows(&console, "PAUSE").await;
    running
        .batch_execute(&format!("INSERT INTO {t} VALUES (2); COMMIT"))
        .await
        .expect("a running transaction finishes");

    let waiting = p.client().await;
    let insert = format!("INSERT INTO {t} VALUES (3)");
    let held = tokio::spawn(async move { waiting.batch_execute(&insert).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a new transaction waits while paused");
    rows(&console, "RESUME").await;
    tokio::time::timeout(Duration::from_secs(5), held).await.expect("resumed").unwrap().expect("insert");
    let n = simple_value(&running, &format!("BEGIN; SELECT count(*) FROM {t}; COMMIT")).await;
    assert_eq!(n, "3");

    // A pause of another database holds nothing here.
    rows(&console, "PAUSE otherdb").await;
    tokio::time::timeout(Duration::from_secs(2), running.simple_query("SELECT 1")).await.expect("not held").unwrap();
    rows(&console, "RESUME otherdb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_reads_off_a_replica_until_undrain() {
    let c = cluster();
    let (p, _path) = proxy_from_file("", "console-drain").await;
    let console = p.console().await;
    let app = p.client().await;
    let drained = c.replica_ports[0];
    let seen = ports_until(&app, &c.replica_ports).await;
    assert!(seen.contains(&drained), "both replicas take reads: {seen:?}");
    rows(&console, "DRAIN pg1").await;
    let nodes = rows(&console, "SHOW NODES").await;
    assert_eq!(nodes.iter().find(|r| r[0] == "pg1").map(|r| r[11].as_str()), Some("true"), "{nodes:?}");
    for _ in 0..10 {
        let port = server_port(&app).await;
        assert_ne!(port, drained, "no read reaches a drained replica");
        assert_ne!(port, c.primary_port, "reads stay on the other replica");
    }
    rows(&console, "UNDRAIN pg1").await;
    let back = ports_until(&app, &[drained]).await;
    assert!(back.contains(&drained), "an undrained replica takes reads again: {back:?}");
}

fn replace_in(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_every_section_and_keeps_sessions() {
    let c = cluster();
    let extra = "[routing]\ndefault_read = \"primary\"\n[pool]\nsize = 5\n[health]\nmax_replica_lag = \"2s\"\n";
    let (p, path) = proxy_from_file(extra, "console-reload").await;
    let console = p.console().await;
    let app = p.client().await;
    let t = table("reload");
    app.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    assert_eq!(server_port(&app).await, c.primary_port, "default_read = primary");

    // Routing: the running session follows the new default_read at once.
    replace_in(&path, "default_read = \"primary\"", "default_read = \"replica\"");
    // Pools: size.
    replace_in(&path, "size = 5", "size = 7");
    // Health thresholds.
    replace_in(&path, "max_replica_lag = \"2s\"", "max_replica_lag = \"3s\"");
    // Users: app_md5's password changes, a new user appears.
    replace_in(&path, "password = \"app_md5\"", "password = \"changed\"");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap() + "\n[[users]]\nname = \"newcomer\"\npassword = \"n\"\n",
    )
    .unwrap();
    // Nodes: pg2 removed, pg1 re-weighted.
    let text = std::fs::read_to_string(&path).unwrap();
    let pg2 = text.find("name = \"pg2\"").unwrap();
    let start = text[..pg2].rfind("[[nodes]]").unwrap();
    let end = start + text[start..].find("role = \"replica\"\n").unwrap() + "role = \"replica\"\n".len();
    let without_pg2 = format!("{}{}", &text[..start], &text[end..]);
    std::fs::write(&path, without_pg2.replacen("name = \"pg1\"\n", "name = \"pg1\"\nweight = 3\n", 1)).unwrap();
    let md5_before =
        common::try_connect(&format!("host=127.0.0.1 port={} user=app_md5 password=app_md5 dbname=app", p.port))
            .await
            .expect("old password before the reload");

    // The DBA changes the password on the servers too (pgroute logs in with it).
    let superuser = c.direct(0).await;
    let set_password = |pw: &str| format!("SET password_encryption = 'md5'; ALTER ROLE app_md5 PASSWORD '{pw}'");
    superuser.batch_execute(&set_password("changed")).await.unwrap();
    let notices = console.simple_query("RELOAD").await.expect("reload");
    assert!(!notices.is_empty());
    for _ in 0..6 {
        assert_eq!(
            server_port(&app).await,
            c.replica_ports[0],
            "replica: reads on the remaining replica, same session"
        );
    }
    let config = rows(&console, "SHOW CONFIG").await;
    let get = |k: &str| config.iter().find(|r| r[0] == k).map(|r| r[1].clone()).unwrap_or_default();
    assert_eq!(get("pool.size"), "7");
    assert_eq!(get("health.max_replica_lag"), "3s");
    assert_eq!(get("routing.default_read"), "replica");
    let pools = rows(&console, "SHOW POOLS").await;
    assert!(pools.iter().any(|r| r[0] == "pg0" && r[5] == "7"), "existing pools resized: {pools:?}");
    let nodes = rows(&console, "SHOW NODES").await;
    let pg2 = nodes.iter().find(|r| r[0] == "pg2").expect("pg2 still listed");
    assert_eq!((pg2[3].as_str(), pg2[4].as_str(), pg2[5].as_str()), ("removed", "false", "removed"), "{nodes:?}");
    assert_eq!(nodes.iter().find(|r| r[0] == "pg1").map(|r| r[12].as_str()), Some("3"), "re-weighted");
    let new_md5 = format!("host=127.0.0.1 port={} user=app_md5 password=changed dbname=app", p.port);
    common::try_connect(&new_md5).await.expect("the new password works");
    let old_md5 = format!("host=127.0.0.1 port={} user=app_md5 password=app_md5 dbname=app", p.port);
    assert!(common::try_connect(&old_md5).await.is_err(), "the old password no longer does");
    simple_value(&md5_before, "SELECT 1").await;
    superuser.batch_execute(&set_password("app_md5")).await.unwrap();

    // pg2 comes back under its name: probed again and used.
    std::fs::write(&path, text.replacen("default_read = \"primary\"", "default_read = \"replica\"", 1)).unwrap();
    console.simple_query("RELOAD").await.expect("reload");
    let mut reached = false;
    for _ in 0..50 {
        reached |= server_port(&app).await == c.replica_ports[1];
        if reached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reached, "a node added by reload takes reads once probed");

    // A file that fails validation changes nothing; the error names file:line:column.
    replace_in(&path, "[pool]\n", "[pool]\nsizes = 3\n");
    let err = console.simple_query("RELOAD").await.expect_err("invalid file");
    let msg = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(msg.contains(&format!("{}:", path.display())) && msg.contains("unknown field"), "{msg}");
    assert_eq!(err.code().map(|s| s.code()), Some("F0000"));
    assert_eq!(
        rows(&console, "SHOW CONFIG").await.iter().find(|r| r[0] == "pool.size").map(|r| r[1].clone()),
        Some("7".into())
    );
}

/// A child process killed when the test ends, failed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `line` without ANSI colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The `pgroute` binary itself: SIGHUP reloads the file (sessions kept), and the console's
/// SHUTDOWN makes the process exit once its clients are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_console_shutdown_exits_the_process() {
    use std::io::{BufRead, BufReader};
    let c = cluster();
    let path = std::env::temp_dir().join(format!("pgroute-sighup-{}.toml", std::process::id()));
    std::fs::write(&path, c.config("[pool]\nsize = 4\n")).unwrap();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_pgroute"))
            .args(["--config", path.to_str().unwrap()])
            .env("RUST_LOG", "pgroute=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgroute binary"),
    );
    // Its log (ANSI colours stripped) says where it listens.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let plain = strip_ansi(&line);
            if let Some(rest) = plain.split("addr=").nth(1).filter(|_| plain.contains("pgroute listening")) {
                let _ = tx.send(rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
            }
        }
    });
    let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(20)) else {
        panic!("pgroute did not say where it listens");
    };
    let p = format!("host=127.0.0.1 port={port} user=admin password=admin dbname=pgroute");
    let console = common::connect(&p).await;
    let app = common::connect(&format!("host=127.0.0.1 port={port} user=app password=app dbname=app")).await;
    let size = |rows: Vec<Vec<String>>| rows.into_iter().find(|r| r[0] == "pool.size").map(|r| r[1].clone());
    assert_eq!(size(rows(&console, "SHOW CONFIG").await).as_deref(), Some("4"));

    replace_in(&path, "size = 4", "size = 9");
    let kill = Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let mut reloaded = false;
    for _ in 0..100 {
        if size(rows(&console, "SHOW CONFIG").await).as_deref() == Some("9") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP applied the file");
    simple_value(&app, "SELECT 1").await;

    // Through psql, as an operator would; the reply may or may not beat the console's own
    // end: either way the console ends.
    let (out, err, _) = common::console_psql(port, "admin", "admin", "SHUTDOWN");
    let said = out + &err;
    assert!(said.contains("SHUTDOWN") || said.contains("shutting down"), "{said}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(console.simple_query("SHOW VERSION").await.is_err(), "the console closes on shutdown");
    assert!(app.simple_query("SELECT 1").await.is_err(), "an idle session ends at shutdown");
    let mut exited = None;
    for _ in 0..100 {
        exited = child.0.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match exited {
        Some(status) => assert!(status.success(), "{status}"),
        None => panic!("pgroute did not exit after SHUTDOWN"),
    }
}
