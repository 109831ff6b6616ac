//! In-doubt commits: the primary dies while a client's COMMIT waits for its answer
//! (synchronous replication to a standby that never confirms). What the client is told
//! must match what the primary that takes over has: committed (the COMMIT's own answer,
//! and the session goes on), not committed (08006, detail `pgroute: transaction not
//! committed`), or unknown (40003). Own cluster (it kills and promotes nodes).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, node_ctl, table};
use tokio_postgres::Client;

/// Commits on the primary now wait for a standby that does not exist, until its restart
/// (the setting is reset for the next start).
async fn hold_commits(direct: &Client) {
    direct.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'pgroute_nobody'").await.unwrap();
    direct.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    direct.batch_execute("ALTER SYSTEM RESET synchronous_standby_names").await.unwrap();
}

/// Waits until a backend of `direct`'s server waits for synchronous replication.
async fn wait_sync_rep(direct: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", &[])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no COMMIT waits for synchronous replication");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// BEGIN and a write through pgroute; the COMMIT is sent by `commit` in a task of its own.
async fn pending_commit<F, Fut>(
    client: Arc<Client>,
    t: &str,
    id: i32,
    commit: F,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>
where
    F: FnOnce(Arc<Client>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    client.batch_execute("BEGIN").await.unwrap();
    client.execute(&format!("INSERT INTO {t} VALUES ({id})"), &[]).await.unwrap();
    tokio::spawn(commit(client))
}

fn metric(p: &common::TestProxy, outcome: &str) -> u64 {
    let text = pgroute::metrics::render(&p.proxy.shared.classifier);
    let prefix = format!("pgroute_in_doubt_commits_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
}

async fn count(client: &Client, t: &str, id: i32) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {t} WHERE id = {id}"), &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_commits_are_resolved_on_the_primary_that_takes_over() {
    let c = cluster();
    let p = common::proxy_auto("[health]\ninterval = \"100ms\"\nprimary_wait = \"30s\"\n").await;
    let t = table("doubt");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    c.wait_replicas_caught_up().await;

    // 0. A replica dies under a read: that read fails with an ERROR (not FATAL), and the
    //    session goes on on another node, as it would on a server that never went away.
    let reader = Arc::new(p.client().await);
    let r = reader.clone();
    let sleeping = tokio::spawn(async move { r.simple_query("SELECT pg_sleep(30)").await });
    let mut node = None;
    for _ in 0..100 {
        for n in 1..=2 {
            let q = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'";
            if c.direct(n).await.query_one(q, &[]).await.unwrap().get::<_, i64>(0) > 0 {
                node = Some(n);
            }
        }
        if node.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node = node.expect("the read runs on a replica");
    node_ctl("node-kill", node);
    let e = sleeping.await.unwrap().expect_err("the read on the dead replica fails");
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!((db.severity(), db.code().code()), ("ERROR", "08006"), "{db:?}");
    let n: i64 =
        reader.query_one("SELECT count(*) FROM pg_class WHERE relname = 'pg_class'", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the session goes on");
    node_ctl("node-start", node);

    // 0b. The primary dies while the client idles in a transaction. The driver's
    //     Close of its statement, sent next, gets its answer; the COMMIT after it is told
    //     the transaction was not committed (not a connection closed under it unanswered).
    let idle = p.client().await;
    idle.batch_execute("BEGIN").await.unwrap();
    let insert = idle.prepare(&format!("INSERT INTO {t} VALUES (100)")).await.unwrap();
    idle.execute(&insert, &[]).await.unwrap();
    node_ctl("node-kill", 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(insert);
    let e = idle.batch_execute("COMMIT").await.expect_err("the transaction is gone");
    let db = e.as_db_error().unwrap_or_else(|| panic!("the COMMIT was not answered: {e}"));
    assert_eq!((db.code().code(), db.detail()), ("08006", Some("pgroute: transaction not committed")), "{db:?}");
    node_ctl("node-start", 0);
    assert_eq!(count(&c.direct(0).await, &t, 100).await, 0);

    // 1. The primary crashes while COMMITs wait, and restarts: the rows are there, and
    //    each client gets its COMMIT's answer, in the simple and in the extended protocol,
    //    and its session goes on.
    let direct = c.direct(0).await;
    hold_commits(&direct).await;
    let simple = Arc::new(p.client().await);
    let extended = Arc::new(p.client().await);
    let a = pending_commit(simple.clone(), &t, 1, |c| async move { c.batch_execute("COMMIT").await }).await;
    let b =
        pending_commit(extended.clone(), &t, 2, |c| async move { c.execute("COMMIT", &[]).await.map(|_| ()) }).await;
    wait_sync_rep(&direct).await;
    node_ctl("node-kill", 0);
    node_ctl("node-start", 0);
    a.await.unwrap().expect("the simple COMMIT is answered as committed");
    b.await.unwrap().expect("the extended COMMIT is answered as committed");
    assert_eq!(count(&simple, &t, 1).await, 1, "the session goes on, and sees its row");
    assert_eq!(count(&extended, &t, 2).await, 1);
    assert_eq!(metric(&p, "committed"), 2);

    // 2. The primary crashes while a COMMIT waits; a standby that never received the
    //    transaction is promoted: the client is told it was not committed, and it is not.
    c.wait_replicas_caught_up().await;
    node_ctl("node-stop", 1);
    let direct = c.direct(0).await;
    hold_commits(&direct).await;
    let client = Arc::new(p.client().await);
    let pending = pending_commit(client, &t, 3, |c| async move { c.batch_execute("COMMIT").await }).await;
    wait_sync_rep(&direct).await;
    node_ctl("node-kill", 0);
    node_ctl("node-start", 1);
    c.direct(1).await.batch_execute("SELECT pg_promote()").await.unwrap();
    let e = pending.await.unwrap().expect_err("the COMMIT cannot be answered as committed");
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert_eq!(db.detail(), Some("pgroute: transaction not committed"), "{db:?}");
    assert_eq!(count(&c.direct(1).await, &t, 3).await, 0, "the promoted primary does not have it");
    assert_eq!(count(&c.direct(1).await, &t, 1).await, 1, "earlier commits survived");
    assert_eq!(metric(&p, "not_committed"), 1);

    // 3. The primary crashes while a COMMIT waits, and no primary comes within
    //    primary_wait: whether it committed is unknown (40003), never a guess.
    let quick = common::proxy_auto("[health]\ninterval = \"100ms\"\nprimary_wait = \"2s\"\n").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while quick.proxy.shared.topology.snapshot().primary(Instant::now()) != Some(1) {
        assert!(Instant::now() < deadline, "pgroute did not see the promoted primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let direct = c.direct(1).await;
    hold_commits(&direct).await;
    let client = Arc::new(quick.client().await);
    let pending = pending_commit(client, &t, 4, |c| async move { c.batch_execute("COMMIT").await }).await;
    wait_sync_rep(&direct).await;
    node_ctl("node-kill", 1);
    let e = pending.await.unwrap().expect_err("no primary: no answer but unknown");
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code().code(), "40003", "{db:?}");
    assert_eq!(metric(&quick, "unknown"), 1);
}
