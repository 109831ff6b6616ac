//! A promotion is seen when a server says so, not at the next probe: with a long probe
//! interval, a read on a replica that was just promoted carries `in_hot_standby = off`,
//! the monitor probes at once, and writes reach the new primary long before the interval
//! is up. Own cluster (it promotes a replica).

mod common;

use std::time::{Duration, Instant};

use common::{cluster, server_port, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_hot_standby_reports_make_the_monitor_probe_at_once() {
    let c = cluster();
    let interval = Duration::from_secs(20);
    let p =
        common::proxy_auto("[health]\ninterval = \"20s\"\nmax_sample_age = \"60s\"\nprimary_wait = \"30s\"\n").await;
    let app = p.client().await;
    let t = table("promo");
    app.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    c.wait_replicas_caught_up().await;
    // Function volatility is looked up on the primary: known before it goes.
    server_port(&app).await;

    // The primary stops and a replica is promoted; the monitor will not probe for ~20s.
    common::node_ctl("node-stop", 0);
    let promoted_at = Instant::now();
    c.direct(1).await.batch_execute("SELECT pg_promote()").await.unwrap();
    // A read that lands on the promoted node brings back in_hot_standby = off.
    let mut seen = false;
    for _ in 0..20 {
        seen |= server_port(&app).await == c.replica_ports[0];
        if seen {
            break;
        }
    }
    assert!(seen, "a read reached the promoted node");
    // The monitor probes at once: pg1 is the primary long before the interval is up.
    let mut promoted = false;
    for _ in 0..100 {
        let snap = p.proxy.shared.topology.snapshot();
        promoted = snap.primary(Instant::now()) == Some(1);
        if promoted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(promoted, "the monitor did not see the promotion");
    tokio::time::timeout(Duration::from_secs(10), app.batch_execute(&format!("INSERT INTO {t} VALUES (1)")))
        .await
        .expect("the write does not wait for the next interval")
        .expect("the write lands on the new primary");
    assert!(promoted_at.elapsed() < interval / 2, "took {:?}", promoted_at.elapsed());
    let landed: i64 = c.direct(1).await.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(landed, 1);
}
