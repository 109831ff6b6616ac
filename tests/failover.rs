//! Failover with `role = "auto"`: the primary dies, a replica is promoted, writes wait and
//! then land on the new primary; the old primary coming back on its older timeline is
//! fenced (nothing lands on it) while writes go on to the new primary; rebuilt as a standby
//! of the new primary, it is used again only after the console's UNFENCE. Own cluster.

mod common;

use std::time::Duration;

use common::{cluster, simple_value, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promotion_and_never_reach_a_second_primary() {
    let c = cluster();
    let (old_primary, new_primary) = (c.primary_port, c.replica_ports[0]);
    let p = common::proxy_auto("[health]\ninterval = \"100ms\"\nprimary_wait = \"8s\"\n").await;
    let client = p.client().await;
    let t = table("fo");
    client.batch_execute(&format!("CREATE TABLE {t} (id int, port int)")).await.unwrap();
    client.batch_execute(&format!("INSERT INTO {t} VALUES (1, inet_server_port())")).await.unwrap();
    let in_tx = "BEGIN; SELECT inet_server_port(); COMMIT";
    assert_eq!(simple_value(&client, in_tx).await, old_primary.to_string(), "auto found the primary");
    c.wait_replicas_caught_up().await;

    let pinned = p.client().await;
    pinned.batch_execute("LISTEN failover_test").await.unwrap();

    // The primary dies. A write issued now waits for a primary instead of failing or
    // reaching a replica.
    common::node_ctl("node-stop", 0);
    let writer = p.client().await;
    let insert = format!("INSERT INTO {t} VALUES (2, inet_server_port())");
    let pending = tokio::spawn(async move { writer.batch_execute(&insert).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promoted = c.direct(1).await;
    promoted.batch_execute("SELECT pg_promote()").await.unwrap();
    let follower = c.direct(2).await;
    for sql in [
        format!("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={new_primary} user=postgres'"),
        "ALTER SYSTEM SET primary_slot_name = ''".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        follower.batch_execute(&sql).await.unwrap();
    }
    pending.await.unwrap().expect("the write issued during the gap succeeds on the new primary");
    let landed: i32 = promoted.query_one(&format!("SELECT port FROM {t} WHERE id = 2"), &[]).await.unwrap().get(0);
    assert_eq!(landed as u16, new_primary);
    assert_eq!(simple_value(&client, in_tx).await, new_primary.to_string(), "writes go to the new primary");
    assert!(pinned.simple_query("SELECT 1").await.is_err(), "a pinned session does not silently move on");
    let metrics = pgroute::metrics::render(&p.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_node_is_primary{node=\"pg1\"} 1"), "{metrics}");

    // The old primary comes back, out of recovery on the old timeline: a stale old
    // primary, fenced at once. Writes go on to the new primary; none lands on the old.
    common::node_ctl("node-start", 0);
    let console = p.console().await;
    let reason = |rows: Vec<Vec<String>>, node: &str| rows.into_iter().find(|r| r[0] == node).map(|r| r[5].clone());
    let mut fenced = false;
    for i in 0..40 {
        client.batch_execute(&format!("INSERT INTO {t} VALUES ({}, inet_server_port())", 100 + i)).await.unwrap();
        fenced |= reason(common::rows(&console, "SHOW NODES").await, "pg0").as_deref() == Some("fenced");
        if fenced && i >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fenced, "the old primary back on its old timeline is fenced");
    let old = c.direct(0).await;
    let on_old: i64 = old.query_one(&format!("SELECT count(*) FROM {t} WHERE id >= 2"), &[]).await.unwrap().get(0);
    assert_eq!(on_old, 0, "no row written through pgroute landed on the old primary");
    let on_new: i64 =
        promoted.query_one(&format!("SELECT count(*) FROM {t} WHERE id >= 100"), &[]).await.unwrap().get(0);
    assert!(on_new >= 11, "writes went on to the new primary: {on_new}");
    let metrics = pgroute::metrics::render(&p.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_split_brain 0"), "a fenced old primary is no split brain: {metrics}");
    assert!(metrics.contains("pgroute_node_is_primary{node=\"pg1\"} 1"), "{metrics}");

    // The old primary goes away, then comes back still claiming to be primary on the old
    // timeline: fenced again.
    common::node_ctl("node-stop", 0);
    common::node_ctl("node-start", 0);
    let mut fenced = false;
    for _ in 0..50 {
        fenced = reason(common::rows(&console, "SHOW NODES").await, "pg0").as_deref() == Some("fenced");
        if fenced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fenced, "an old primary on a lower timeline is fenced");
    // A deliberate rejoin: rebuilt as a standby of the new primary. Still fenced until an
    // operator says otherwise.
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .args(["node-rejoin", &c.dir, "0", "1"])
        .output()
        .expect("cluster.sh");
    assert!(out.status.success(), "rejoin: {}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reason(common::rows(&console, "SHOW NODES").await, "pg0").as_deref(), Some("fenced"));
    // Through psql, as an operator would.
    let (_, err, ok) = common::console_psql(p.port, "admin", "admin", "UNFENCE pg0");
    assert!(ok, "{err}");
    let mut usable = false;
    for _ in 0..50 {
        let nodes = common::rows(&console, "SHOW NODES").await;
        usable = nodes.iter().any(|r| r[0] == "pg0" && r[3] == "replica" && r[4] == "true");
        if usable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nodes = common::rows(&console, "SHOW NODES").await;
    assert!(usable, "after UNFENCE the rejoined node serves reads as a replica: {nodes:?}");

    // A second node leaves recovery while the primary lives (a mistaken promotion, a
    // partition): neither is a stale old primary, so it is a split brain and writes are
    // refused; none lands on either.
    c.direct(2).await.batch_execute("SELECT pg_promote()").await.unwrap();
    let mut split = false;
    for _ in 0..100 {
        split = pgroute::metrics::render(&p.proxy.shared.classifier).contains("pgroute_split_brain 1");
        if split {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(split, "two primaries on their own timelines are a split brain");
    let refused = client.batch_execute(&format!("INSERT INTO {t} VALUES (999, inet_server_port())")).await;
    let refused = refused.expect_err("no write during a split brain");
    assert_eq!(refused.code().map(|s| s.code()), Some("08006"), "{refused}");
    for node in [1, 2] {
        let n: i64 = c
            .direct(node)
            .await
            .query_one(&format!("SELECT count(*) FROM {t} WHERE id = 999"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "the refused write is nowhere");
    }
    let metrics = pgroute::metrics::render(&p.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_writes_refused_total{reason=\"split_brain\"}"), "{metrics}");
}
