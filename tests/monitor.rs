//! The health monitor says why a node is unusable: a monitor user without
//! `pg_read_all_stats` cannot read a replica's timeline, and the verdict (in the topology
//! snapshot and the `pgroute_node_reason` metric) names that, not a bare "unusable".
//! Its own binary: the metrics registry is process-wide, and this proxy's monitor reports
//! the replicas unusable.

mod common;

use std::time::Duration;

use common::{cluster, proxy_with};

async fn reasons(p: &common::TestProxy, want: &str) -> Vec<&'static str> {
    let mut why = Vec::new();
    for _ in 0..50 {
        why = p.proxy.shared.topology.snapshot().nodes.iter().map(|n| n.why).collect();
        if why[1..].iter().all(|w| *w == want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    why
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_user_without_the_grant_is_named_as_the_reason() {
    let c = cluster();
    let admin = c.direct(0).await;
    admin.batch_execute("CREATE ROLE mon_np LOGIN PASSWORD 'mon_np'").await.unwrap();
    c.wait_replicas_caught_up().await;
    let p = proxy_with(
        "[health]\ninterval = \"100ms\"\nuser = \"mon_np\"\ndatabase = \"app\"\n\
         [[users]]\nname = \"mon_np\"\npassword = \"mon_np\"\n",
    )
    .await;
    let why = reasons(&p, "monitor_privilege").await;
    assert_eq!(why, ["ok", "monitor_privilege", "monitor_privilege"]);
    let metrics = pgroute::metrics::render(&p.proxy.shared.classifier);
    assert!(metrics.contains("pgroute_node_reason{node=\"pg1\",reason=\"monitor_privilege\"} 1"), "{metrics}");
    assert!(metrics.contains("pgroute_node_reason{node=\"pg1\",reason=\"ok\"} 0"), "{metrics}");

    // Granted: the replicas come back without a restart.
    admin.batch_execute("GRANT pg_read_all_stats TO mon_np").await.unwrap();
    let why = reasons(&p, "ok").await;
    assert_eq!(why, ["ok", "ok", "ok"]);
}
