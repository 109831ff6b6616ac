//! Operating pgroute, on the real cluster: the `pgroute` binary logs JSON lines that parse;
//! each timeout operators expect ends what it should, with its error, judged by the
//! servers (`pg_stat_activity`, a row lock another session waits for, the data).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::wire::{errors, Wire};
use common::{cluster, connect, proxy_with, rows, table};

/// The `pgroute` binary running `config`, its standard error lines sent to a channel.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    path: std::path::PathBuf,
}

impl Binary {
    fn start(config: &str, name: &str, args: &[&str]) -> Binary {
        let path = std::env::temp_dir().join(format!("pgroute-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgroute"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "pgroute=debug")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgroute");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Binary { child, lines, path }
    }

    /// The next line, within `wait`.
    fn line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_and_carry_the_routing_decisions() {
    // `--log-format json` overrides the file's `text`.
    let config = cluster().config("[log]\nformat = \"text\"\n");
    let bin = Binary::start(&config, "json-log", &["--log-format", "json"]);
    let mut seen = Vec::new();
    let addr = loop {
        let line = bin.line(Duration::from_secs(20)).unwrap_or_else(|| panic!("no listening line in {seen:#?}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        seen.push(line);
        if v["fields"]["message"] == "pgroute listening" {
            break v["fields"]["addr"].as_str().expect("addr field").to_string();
        }
    };
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let client = connect(&format!("host={host} port={port} user=app password=app dbname=app")).await;
    client.simple_query("SELECT 1").await.expect("a read through the binary");
    let mut decisions = 0;
    while let Some(line) = bin.line(Duration::from_millis(500)) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        decisions += (v["fields"]["message"] == "route" && v["fields"]["reason"].is_string()) as usize;
        seen.push(line);
    }
    assert!(decisions > 0, "no routing decision among {seen:#?}");
}

/// A session idle inside a transaction past `idle_transaction_timeout` is rolled back on
/// the server: the row lock it held is released to a session waiting for it, its update
/// is gone, its connection goes back to the pool, and the client gets 25P03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_rolls_back_and_releases_the_lock_another_session_waits_for() {
    let p = proxy_with("[pool]\nidle_transaction_timeout = \"700ms\"\n").await;
    let t = table("idle_tx");
    let direct = cluster().direct(0).await;
    direct
        .batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, n int); INSERT INTO {t} VALUES (1, 0)"))
        .await
        .unwrap();
    let (mut idle, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let began = idle.query(format!("BEGIN; UPDATE {t} SET n = n + 100 WHERE id = 1").as_bytes()).await;
    assert!(errors(&began).is_empty(), "{began:?}");
    let locked = Instant::now();
    // The waiter: a direct session blocked on the row lock until the idle one is ended.
    let update = format!("UPDATE {t} SET n = n + 1 WHERE id = 1");
    let waited = direct.execute(&update, &[]);
    tokio::time::timeout(Duration::from_secs(10), waited).await.expect("the lock was never released").unwrap();
    let elapsed = locked.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "the lock went after {elapsed:?}, before the timeout");
    let n: i32 = direct.query_one(&format!("SELECT n FROM {t} WHERE id = 1"), &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the idle transaction's update was rolled back");
    let told = tokio::time::timeout(Duration::from_secs(5), idle.until_ready(1)).await.expect("no error came");
    assert_eq!(errors(&told), vec!["25P03"], "{told:?}");
    assert!(idle.try_read().await.is_none(), "the client is disconnected");
    let pooled: usize = p.proxy.shared.pools.list().iter().filter(|i| i.node == 0).map(|i| i.idle.len()).sum();
    assert!(pooled >= 1, "the rolled-back connection went back to the pool");
}

/// `client_idle_timeout` ends an idle client with 57P05; one that keeps talking stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_disconnects_idle_clients_only() {
    let p = proxy_with("[listen]\nclient_idle_timeout = \"400ms\"\n").await;
    let (mut busy, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let (mut idle, _) = Wire::connect(p.port, "app", "app", &[]).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(errors(&busy.query(b"SELECT 1").await).is_empty(), "a talking client was cut off");
    }
    let told = tokio::time::timeout(Duration::from_secs(5), idle.until_ready(1)).await.expect("no error came");
    assert_eq!(errors(&told), vec!["57P05"], "{told:?}");
    assert!(idle.try_read().await.is_none());
    let console = p.console().await;
    let config = rows(&console, "SHOW CONFIG").await;
    let value = |key: &str| config.iter().find(|r| r[0] == key).map(|r| r[1].clone());
    assert_eq!(value("listen.client_idle_timeout").as_deref(), Some("400ms"));
    assert_eq!(value("pool.idle_transaction_timeout").as_deref(), Some("off"));
    assert_eq!(value("pool.server_lifetime").as_deref(), Some("1h"));
}

/// PgBouncer's `query_wait_timeout` is `checkout_timeout`: a statement waiting for a
/// busy pool longer gets 53300.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_refuses_a_statement_waiting_for_a_busy_pool() {
    let p = proxy_with("[pool]\nsize = 1\nquery_wait_timeout = \"300ms\"\n").await;
    let (mut holder, _) = Wire::connect(p.port, "app", "app", &[]).await;
    assert!(errors(&holder.query(b"BEGIN; SELECT txid_current()").await).is_empty());
    let (mut waiter, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let asked = Instant::now();
    let refused = waiter.query(b"SELECT txid_current()").await;
    assert_eq!(errors(&refused), vec!["53300"], "{refused:?}");
    assert!(asked.elapsed() >= Duration::from_millis(250), "refused after {:?}", asked.elapsed());
    assert!(errors(&holder.query(b"COMMIT").await).is_empty());
    assert!(errors(&waiter.query(b"SELECT txid_current()").await).is_empty(), "served once the pool is free");
}

/// The server process behind pgroute's pooled primary connection.
async fn primary_pid(w: &mut Wire) -> String {
    w.column("SELECT pg_backend_pid()").await.remove(0).expect("pid")
}

/// `server_lifetime` and `server_idle_timeout` close pooled connections (the server sees
/// its process go); without waiting, the same connection is reused (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_and_idle_timeout_close_pooled_connections() {
    let direct = cluster().direct(0).await;
    let alive = |pid: String| {
        let direct = &direct;
        async move {
            let n: i64 = direct
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::text::int", &[&pid])
                .await
                .unwrap()
                .get(0);
            n == 1
        }
    };
    for setting in ["server_lifetime = \"1s\"", "server_idle_timeout = \"1s\""] {
        let p = proxy_with(&format!("[routing]\ndefault_read = \"primary\"\n[pool]\n{setting}\n")).await;
        let (mut w, _) = Wire::connect(p.port, "app", "app", &[]).await;
        let first = primary_pid(&mut w).await;
        assert_eq!(primary_pid(&mut w).await, first, "{setting}: the pooled connection is reused at once");
        assert!(alive(first.clone()).await);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!alive(first.clone()).await, "{setting}: the pooled connection is still open on the server");
        assert_ne!(primary_pid(&mut w).await, first, "{setting}: a new connection serves");
    }
}

/// A client that does not read its results is disconnected after `client_write_timeout`,
/// and the server connection running its query is closed (the server's process goes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected_and_its_server_connection_closed() {
    let p = proxy_with("[listen]\nclient_write_timeout = \"500ms\"\n[routing]\ndefault_read = \"primary\"\n").await;
    let (mut w, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let before = p.proxy.shared.clients();
    // About 200 MB of rows, never read.
    w.send(&common::wire::query(b"SELECT /* unread */ repeat('x', 100000) FROM generate_series(1, 2000)")).await;
    let direct = cluster().direct(0).await;
    let running = || async {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%/* unread */%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    let mut seen = false;
    let mut gone = false;
    for _ in 0..200 {
        let n = running().await;
        seen |= n > 0;
        if seen && n == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the query never ran");
    assert!(gone, "the server connection of a client that does not read stayed");
    assert!(p.proxy.shared.clients() < before, "the client is disconnected");
}

/// The metric names in a PromQL expression that `exported` (names from `# TYPE` lines,
/// with their kinds) does not have; a histogram's `_bucket`, `_sum` and `_count` count as
/// its own.
fn unknown_metrics(expr: &str, exported: &[(String, String)]) -> Vec<String> {
    let names = regex::Regex::new(r"pgroute_[a-z0-9_]+").expect("regex");
    names
        .find_iter(expr)
        .map(|m| m.as_str().to_string())
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
            !exported.iter().any(|(n, kind)| n == name || (kind == "histogram" && Some(n.as_str()) == base))
        })
        .collect()
}

/// `deploy/grafana/pgroute.json`: every expression names only metrics a running pgroute
/// exports (scraped from its `/metrics`), and the check itself flags a name that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_names_a_metric_pgroute_exports() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = proxy_with("[admin]\nmetrics_address = \"127.0.0.1:0\"\n").await;
    p.client().await.simple_query("SELECT 1").await.unwrap();
    let mut sock = tokio::net::TcpStream::connect(p.proxy.metrics_addr.expect("metrics")).await.unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
    let mut scrape = String::new();
    sock.read_to_string(&mut scrape).await.unwrap();
    let exported: Vec<(String, String)> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(n, k)| (n.to_string(), k.to_string())))
        .collect();
    assert!(exported.len() > 20, "{scrape}");
    assert_eq!(unknown_metrics("rate(pgroute_nope_total[1m]) + pgroute_clients", &exported), ["pgroute_nope_total"]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/pgroute.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs += 1;
            assert_eq!(unknown_metrics(expr, &exported), Vec::<String>::new(), "panel {}: {expr}", panel["title"]);
        }
    }
    assert!(exprs >= 16, "{exprs} expressions");
}

/// A port free now on the loopback address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two instances behind one address (`[peers]`): a cancel request for a query running
/// through A that reaches B is forwarded to A and stops the query; one with a wrong
/// secret stops nothing (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_instance_stops_the_query() {
    use tokio::io::AsyncWriteExt;
    let ports = [free_port(), free_port()];
    let members = format!("[peers.members]\n1 = \"127.0.0.1:{}\"\n2 = \"127.0.0.1:{}\"\n", ports[0], ports[1]);
    let instance = |id: usize| {
        let text = cluster().config(&format!("[peers]\nid = {}\n{members}", id + 1));
        text.replacen("address = \"127.0.0.1:0\"", &format!("address = \"127.0.0.1:{}\"", ports[id]), 1)
    };
    let a = common::proxy_from_text(&instance(0)).await;
    let _b = common::proxy_from_text(&instance(1)).await;
    let (mut w, _) = Wire::connect(a.port, "app", "app", &[]).await;
    assert_eq!(pgroute::cancel::owner(w.pid), 1, "A's keys carry its id");
    w.send(&common::wire::query(b"SELECT pg_sleep(20)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = w.pid;
    let cancel_via_b = |secret: i32| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", ports[1])).await.unwrap();
        s.write_all(&pgroute::protocol::cancel_request(pid, secret)).await.unwrap();
    };
    cancel_via_b(w.secret.wrapping_add(1)).await;
    let early = tokio::time::timeout(Duration::from_millis(700), w.try_read()).await;
    assert!(early.is_err(), "a wrong secret stopped the query: {early:?}");
    let sent = Instant::now();
    cancel_via_b(w.secret).await;
    let replies = tokio::time::timeout(Duration::from_secs(5), w.until_ready(1)).await.expect("never cancelled");
    assert_eq!(errors(&replies), vec!["57014"], "{replies:?}");
    assert!(sent.elapsed() < Duration::from_secs(3));
}
