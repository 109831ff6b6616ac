//! `causal_scope` across connections and pgroute instances, with replica 1 applying WAL
//! 2 s late but kept in rotation (`max_replica_lag = "30s"`): only the scope keeps reads
//! off it while it lacks a commit they must see. Own cluster (it delays a replica).
//!
//! - Two instances behind one balancer: a write through one, a read through the other.
//!   `session` scope knows nothing of the other instance's writes (tagged or not) and
//!   reads the lagging replica; `cluster` reads where the primary's position at the read's
//!   arrival is replayed. Writes made directly on the primary count the same way.
//! - A `causal_scope = "none"` rule for a backoffice application reads the lagging replica
//!   (within `max_replica_lag`) while the default (`instance`) money reads of the same
//!   pgroute see every commit it acknowledged.

mod common;

use std::time::Duration;

use common::{cluster, connect, proxy_with, table, TestProxy};

const HEALTH: &str = "[health]\nmax_replica_lag = \"30s\"\n";

fn config(scope: &str) -> String {
    format!("[routing]\ncausal_scope = \"{scope}\"\ncausal_wait = \"200ms\"\n{HEALTH}")
}

/// `SELECT count(*), inet_server_port()` of `t`'s row `id`.
async fn seen_on(client: &tokio_postgres::Client, t: &str, id: i32, hint: &str) -> (i64, u16) {
    let row = client
        .query_one(&format!("{hint}SELECT count(*), inet_server_port() FROM {t} WHERE id = {id}"), &[])
        .await
        .unwrap();
    (row.get(0), row.get::<_, i32>(1) as u16)
}

async fn delayed_table(prefix: &str) -> (tokio_postgres::Client, String) {
    let c = cluster();
    let delayed = c.delay_replica(1, "2s").await;
    let t = table(prefix);
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    (delayed, t)
}

async fn undelay(delayed: tokio_postgres::Client) {
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}

/// One test: both parts delay the same replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_across_connections_and_instances() {
    let (delayed, t) = delayed_table("scope").await;
    cluster_scope_orders_reads_after_writes_made_through_another_instance_or_directly(&t).await;
    a_none_rule_reads_the_lagging_replica_while_money_reads_see_every_commit(&t).await;
    undelay(delayed).await;
}

async fn cluster_scope_orders_reads_after_writes_made_through_another_instance_or_directly(t: &str) {
    let c = cluster();
    let healthy = c.replica_ports[1];

    // Cluster scope: writer through one instance, readers through another; 0 stale,
    // tagged or not.
    let (first, second) = (proxy_with(&config("cluster")).await, proxy_with(&config("cluster")).await);
    let (writer, reader) = (first.client().await, second.client().await);
    let mut on_healthy = 0;
    for i in 0..30 {
        let tag = if i % 2 == 0 { format!("/* pgroute: key=wallet:{i} */ ") } else { String::new() };
        writer.batch_execute(&format!("{tag}INSERT INTO {t} VALUES ({i})")).await.unwrap();
        let (n, port) = seen_on(&reader, t, i, &tag).await;
        assert_eq!(n, 1, "write {i}: the read through the other instance sees it");
        on_healthy += usize::from(port == healthy);
    }
    assert!(on_healthy >= 15, "the reads stay on the caught-up replica: {on_healthy} of 30");

    // A write made directly on the primary, read through pgroute.
    let direct = c.direct(0).await;
    for i in 200..210 {
        direct.batch_execute(&format!("INSERT INTO {t} VALUES ({i})")).await.unwrap();
        assert_eq!(seen_on(&reader, t, i, "").await.0, 1, "direct write {i}: the cluster-scope read sees it");
    }

    // Session scope: the other instance has not seen the write, and round robin sends
    // some of the reads to the lagging replica. What cluster scope prevents.
    let (first, second) = (proxy_with(&config("session")).await, proxy_with(&config("session")).await);
    let (writer, reader) = (first.client().await, second.client().await);
    let mut missed = 0;
    for i in 100..110 {
        writer.batch_execute(&format!("/* pgroute: key=wallet:{i} */ INSERT INTO {t} VALUES ({i})")).await.unwrap();
        missed += usize::from(seen_on(&reader, t, i, &format!("/* pgroute: key=wallet:{i} */ ")).await.0 == 0);
    }
    assert!(missed > 0, "session scope never read the lagging replica: the test shows nothing");
}

async fn backoffice(p: &TestProxy) -> tokio_postgres::Client {
    connect(&format!("{} application_name=backoffice", p.conninfo("app"))).await
}

async fn a_none_rule_reads_the_lagging_replica_while_money_reads_see_every_commit(t: &str) {
    let c = cluster();
    let lagging = c.replica_ports[0];
    // The default scope (instance) for every read but the backoffice application's.
    let rule = "[[routing.rules]]\nname = \"backoffice\"\napplication_name = \"backoffice\"\n\
                route = \"replica\"\ncausal_scope = \"none\"\n";
    let p = proxy_with(&format!("[routing]\ncausal_scope = \"instance\"\n{HEALTH}{rule}")).await;
    let (writer, money, office) = (p.client().await, p.client().await, backoffice(&p).await);
    let (mut office_lagging, mut office_stale) = (0, 0);
    for i in 300..320 {
        writer.batch_execute(&format!("INSERT INTO {t} VALUES ({i})")).await.unwrap();
        let (n, port) = seen_on(&money, t, i, "").await;
        assert_eq!(n, 1, "write {i}: a money read on another connection sees it");
        assert_ne!(port, lagging, "write {i}: never from the replica that lacks it");
        // Two reads: round robin alternates, and one read per round could keep hitting
        // the same replica.
        for _ in 0..2 {
            let (n, port) = seen_on(&office, t, i, "").await;
            office_lagging += usize::from(port == lagging);
            office_stale += usize::from(n == 0);
        }
    }
    assert!(office_lagging > 0, "the backoffice reads never used the lagging replica: they waited");
    assert!(office_stale > 0, "the backoffice read the lagging replica and saw every write: it was not behind");
    // A hint relaxes one read the same way.
    writer.batch_execute(&format!("INSERT INTO {t} VALUES (1000)")).await.unwrap();
    let mut relaxed_lagging = 0;
    for _ in 0..7 {
        relaxed_lagging += usize::from(seen_on(&money, t, 1000, "/* pgroute: scope=none */ ").await.1 == lagging);
    }
    assert!(relaxed_lagging > 0, "scope=none reads go anywhere within the lag threshold");
    let metrics = pgroute::metrics::render(&p.proxy.shared.classifier);
    assert!(metrics.contains("scope=\"none\"") && metrics.contains("scope=\"instance\""), "{metrics}");
    assert!(metrics.contains("pgroute_causal_wait_seconds_bucket"), "{metrics}");
}
