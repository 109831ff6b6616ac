//! Lag-aware reads on a real cluster: a replica delayed by `recovery_min_apply_delay`
//! takes no reads while it lags and takes them again once caught up; a stopped replica
//! drops out without client errors; `/ready` follows the primary (503 within a second or
//! two of stopping it, 200 again after) and, with `?replica=1`, the replicas. One test
//! (its own cluster), steps in sequence.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{cluster, proxy_with, server_port, table};

async fn ports_seen(client: &tokio_postgres::Client, reads: usize) -> HashSet<u16> {
    let mut seen = HashSet::new();
    for _ in 0..reads {
        seen.insert(server_port(client).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_replica_health() {
    let c = cluster();
    let (primary, r1, r2) = (c.primary_port, c.replica_ports[0], c.replica_ports[1]);
    let p = proxy_with(
        "[health]\ninterval = \"100ms\"\nmax_replica_lag = \"1s\"\n[admin]\nhealth_address = \"127.0.0.1:0\"\n",
    )
    .await;
    let health = p.proxy.health_addr.expect("health endpoints");
    assert_eq!(http_get(health, "/ready?replica=1").await.0, 200);
    assert_eq!(http_get(health, "/live").await.0, 200);
    let client = p.client().await;
    assert_eq!(ports_seen(&client, 6).await, HashSet::from([r1, r2]), "both replicas in rotation");

    // Delay replica 1 by 2s, then write continuously: it falls behind and leaves the rotation.
    let delayed = c.direct(1).await;
    delayed.batch_execute("ALTER SYSTEM SET recovery_min_apply_delay = '2s'").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let t = table("lag");
    client.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    let mut saw_only_fresh = false;
    for i in 0..60 {
        client.batch_execute(&format!("INSERT INTO {t} VALUES ({i})")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if i >= 30 {
            let seen = ports_seen(&client, 4).await;
            assert!(!seen.contains(&r1), "a replica 2s behind took a read (write {i})");
            saw_only_fresh |= seen == HashSet::from([r2]);
        }
    }
    assert!(saw_only_fresh, "reads kept going to the replica that keeps up");

    // Writes stop; once the delayed replica has applied everything it is used again.
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ports_seen(&client, 4).await.contains(&r1) {
            back = true;
            break;
        }
    }
    assert!(back, "the caught-up replica returns to the rotation");
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();

    // Stop replica 2: new reads keep working, on the other nodes only.
    common::node_ctl("node-stop", 2);
    for _ in 0..30 {
        let port = server_port(&client).await;
        assert_ne!(port, r2, "a stopped replica took a read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And with both replicas unusable, reads go to the primary.
    common::node_ctl("node-stop", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ports_seen(&client, 4).await, HashSet::from([primary]), "no usable replica: primary");
    let metrics = pgroute::metrics::render(&p.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_node_usable{node=\"pg2\"} 0"), "{metrics}");
    let (status, body) = http_get(health, "/ready?replica=1").await;
    assert_eq!((status, body.contains("no usable replica")), (503, true), "{body}");
    assert_eq!(http_get(health, "/ready").await.0, 200, "the primary alone is ready");
    common::node_ctl("node-start", 1);
    common::node_ctl("node-start", 2);

    // Stop the primary: /ready says 503 within a second or two, and 200 once it is back.
    common::node_ctl("node-stop", 0);
    let stopped = Instant::now();
    let status = until(health, "/ready", 503).await;
    assert_eq!(status.0, 503, "still ready {:?} after stopping the primary: {}", stopped.elapsed(), status.1);
    assert!(stopped.elapsed() < Duration::from_secs(2), "503 after {:?}", stopped.elapsed());
    assert!(status.1.contains("no usable primary"), "{}", status.1);
    assert_eq!(http_get(health, "/live").await.0, 200, "pgroute itself still serves");
    common::node_ctl("node-start", 0);
    let (status, body) = until(health, "/ready", 200).await;
    assert_eq!(status, 200, "{body}");
}

/// `GET path` on the health endpoints: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("health endpoint");
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Polls `path` every 50ms for up to 10s until it answers `want`; the last answer.
async fn until(addr: std::net::SocketAddr, path: &str, want: u16) -> (u16, String) {
    let mut last = http_get(addr, path).await;
    for _ in 0..200 {
        if last.0 == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = http_get(addr, path).await;
    }
    last
}
