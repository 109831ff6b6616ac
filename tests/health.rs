//! Lag-aware reads on a real cluster: a replica delayed by `recovery_min_apply_delay`
//! takes no reads while it lags and takes them again once caught up; a stopped replica
//! drops out without client errors. One test (its own cluster), steps in sequence.

mod common;

use std::collections::HashSet;
use std::time::Duration;

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
    let p = proxy_with("[health]\ninterval = \"100ms\"\nmax_replica_lag = \"1s\"\n").await;
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
    common::node_ctl("node-start", 1);
    common::node_ctl("node-start", 2);
}
