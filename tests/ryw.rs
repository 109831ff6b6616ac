//! Read-your-writes on a real cluster with one replica 2s behind (apply delay) but kept in
//! rotation by a generous lag threshold, so only read-your-writes protects the reads.

mod common;

use std::time::Duration;

use common::{cluster, proxy_with, server_port, simple_value, table};

const HEALTH: &str = "[health]\nmax_replica_lag = \"30s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_writes_and_the_naive_split_does_not() {
    let c = cluster();
    let delayed = c.delay_replica(1, "2s").await;
    let t = table("ryw");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Session scope: every read right after a write sees it.
    let lsn = proxy_with(&format!("[routing]\ncausal_scope = \"session\"\n{HEALTH}")).await;
    let writer = lsn.client().await;
    for i in 0..10 {
        writer.batch_execute(&format!("INSERT INTO {t} VALUES ({i})")).await.unwrap();
        let n = simple_value(&writer, &format!("SELECT count(*) FROM {t}")).await;
        assert_eq!(n, (i + 1).to_string(), "read right after write {i}");
    }
    // A session that never wrote keeps using replicas.
    let reader = lsn.client().await;
    assert!(c.replica_ports.contains(&server_port(&reader).await));
    // A rolled back transaction does not make a session sticky.
    let undecided = lsn.client().await;
    undecided.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (-1); ROLLBACK")).await.unwrap();
    assert!(c.replica_ports.contains(&server_port(&undecided).await));
    // Once the replicas have replayed the writes, the writer goes back to them.
    let mut back = false;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.replica_ports.contains(&server_port(&writer).await) {
            back = true;
            break;
        }
    }
    assert!(back, "the writer's reads return to replicas once they caught up");

    // Tagged keys: a write on one connection, a read of the same key on another.
    let (a, b) = (lsn.client().await, lsn.client().await);
    let mut untagged_stale = 0;
    for i in 0..10 {
        let key = format!("wallet:{}", i % 3);
        a.batch_execute(&format!("INSERT INTO {t} VALUES ({}) /* pgroute: key={key} */", 500 + i)).await.unwrap();
        let tagged = format!("SELECT count(*) FROM {t} WHERE id = {} /* pgroute: key={key} */", 500 + i);
        assert_eq!(simple_value(&b, &tagged).await, "1", "tagged read {i} on another connection");
        a.batch_execute(&format!("INSERT INTO {t} VALUES ({}) /* pgroute: key=other */", 600 + i)).await.unwrap();
        let untagged = format!("SELECT count(*) FROM {t} WHERE id = {}", 600 + i);
        if simple_value(&b, &untagged).await == "0" {
            untagged_stale += 1;
        }
    }
    eprintln!("untagged reads on another connection: {untagged_stale} of 10 stale");
    // Per-query freshness: right after those writes the delayed replica is ~2s behind.
    let fresh_reader = lsn.client().await;
    for _ in 0..6 {
        let port = simple_value(&fresh_reader, "/* pgroute: max_lag=500ms */ SELECT inet_server_port()").await;
        assert_ne!(port, c.replica_ports[0].to_string(), "max_lag=500ms kept the read off the delayed replica");
    }
    let metrics = pgroute::metrics::render(&lsn.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_key_map_entries"), "{metrics}");

    // causal_wait: rather than the primary, a read may wait for a replica to catch up.
    let waiting = proxy_with(&format!("[routing]\ncausal_scope = \"session\"\ncausal_wait = \"1s\"\n{HEALTH}")).await;
    let wc = waiting.client().await;
    for i in 0..3 {
        wc.batch_execute(&format!("INSERT INTO {t} VALUES ({})", 700 + i)).await.unwrap();
        let port = server_port(&wc).await;
        assert_eq!(port, c.replica_ports[1], "waited for the replica that keeps up (write {i})");
    }
    let metrics = pgroute::metrics::render(&waiting.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_causal_waits_total{outcome=\"replica\"}"), "{metrics}");

    // off (a naive read/write split): reads right after writes miss them. Only the
    // delayed replica stays in rotation, so the outcome does not depend on round robin.
    common::node_ctl("node-stop", 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let off = proxy_with(&format!("[routing]\ncausal_scope = \"none\"\n{HEALTH}")).await;
    let naive = off.client().await;
    let base: i64 =
        simple_value(&lsn.client().await, &format!("/* pgroute: route=primary */ SELECT count(*) FROM {t}"))
            .await
            .parse()
            .unwrap();
    let mut stale = 0;
    for i in 0..10 {
        naive.batch_execute(&format!("INSERT INTO {t} VALUES ({})", 1000 + i)).await.unwrap();
        let n: i64 = simple_value(&naive, &format!("SELECT count(*) FROM {t}")).await.parse().unwrap();
        if n < base + i + 1 {
            stale += 1;
        }
    }
    eprintln!("naive split: {stale} of 10 reads right after a write were stale");
    assert!(stale > 0, "without read-your-writes the delayed replica serves stale reads");
    common::node_ctl("node-start", 2);
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}
