//! Two pgroute instances behind one balancer: a write tagged `key=...` through one, a read
//! with the same tag through the other. Tagged keys are remembered per instance, so with
//! `key_scope = "instance"` the second instance knows nothing of the write and may read a
//! lagging replica; with `key_scope = "cluster"` it reads where the primary's position at
//! the read's arrival is replayed. Replica 1 applies WAL 2 s late but stays in rotation.
//! Own cluster (it delays a replica).

mod common;

use std::time::Duration;

use common::{cluster, proxy_with, table};

fn config(scope: &str) -> String {
    format!(
        "[routing]\nread_your_writes = \"lsn\"\ncausal_wait = \"200ms\"\nkey_scope = \"{scope}\"\n\
         [health]\nmax_replica_lag = \"30s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scope_orders_tagged_reads_after_writes_made_through_another_instance() {
    let c = cluster();
    let delayed = c.delay_replica(1, "2s").await;
    let t = table("scope");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let healthy = c.replica_ports[1];

    // Cluster scope: writer through one instance, readers through another; 0 stale.
    let (first, second) = (proxy_with(&config("cluster")).await, proxy_with(&config("cluster")).await);
    let (writer, reader) = (first.client().await, second.client().await);
    let mut on_healthy = 0;
    for i in 0..30 {
        writer.batch_execute(&format!("/* pgroute: key=wallet:{i} */ INSERT INTO {t} VALUES ({i})")).await.unwrap();
        let sql = format!("/* pgroute: key=wallet:{i} */ SELECT count(*), inet_server_port() FROM {t} WHERE id = {i}");
        let row = reader.query_one(&sql, &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "write {i}: the tagged read through the other instance sees it");
        on_healthy += usize::from(row.get::<_, i32>(1) as u16 == healthy);
    }
    assert!(on_healthy >= 15, "tagged reads stay on the caught-up replica: {on_healthy} of 30");

    // Instance scope: the other instance has not seen the key written, and round robin
    // sends some of the reads to the lagging replica. What cluster scope prevents.
    let (first, second) = (proxy_with(&config("instance")).await, proxy_with(&config("instance")).await);
    let (writer, reader) = (first.client().await, second.client().await);
    let mut missed = 0;
    for i in 100..110 {
        writer.batch_execute(&format!("/* pgroute: key=wallet:{i} */ INSERT INTO {t} VALUES ({i})")).await.unwrap();
        let sql = format!("/* pgroute: key=wallet:{i} */ SELECT count(*) FROM {t} WHERE id = {i}");
        missed += usize::from(reader.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) == 0);
    }
    assert!(missed > 0, "instance scope never read the lagging replica: the test shows nothing");
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}
