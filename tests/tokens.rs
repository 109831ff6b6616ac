//! Causal tokens across connections and pgroute instances: the `pgroute.commit_lsn` a
//! writer got, handed to a reader elsewhere as `/* pgroute: after=<token> */` or as
//! `SET pgroute.after = '<token>'`, makes that read see the write. Replica 1 applies WAL 2 s late but stays in rotation, so a read
//! without the token, sent there, would miss it.

mod common;

use std::time::Duration;

use common::wire::{self, Wire};
use common::{cluster, proxy_with, table};

const CONFIG: &str = "[routing]\ncausal_scope = \"session\"\ncausal_wait = \"200ms\"\n\
                      [health]\nmax_replica_lag = \"30s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_connection_orders_a_read_on_another_through_either_instance() {
    let c = cluster();
    let delayed = c.delay_replica(1, "2s").await;
    let t = table("token");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let first = proxy_with(CONFIG).await;
    let second = proxy_with(CONFIG).await;
    let (mut writer, _) = Wire::connect(first.port, "app", "app", &[("database", "app")]).await;
    let readers = [first.client().await, second.client().await];
    for i in 0..10 {
        let replies = writer.query(format!("INSERT INTO {t} VALUES ({i})").as_bytes()).await;
        let token = wire::commit_token(&replies).expect("the write's token");
        assert!(wire::render_all(&replies)[0].starts_with("C INSERT 0 1"));
        for (r, reader) in readers.iter().enumerate() {
            let sql = format!("/* pgroute: after={token} */ SELECT count(*) FROM {t} WHERE id = {i}");
            let n: i64 = reader.query_one(&sql, &[]).await.unwrap().get(0);
            assert_eq!(n, 1, "write {i}, reader through instance {r}: the token's commit is visible");
        }
    }
    // Without the token, a reader through the other instance reads the lagging replica
    // half the time (round robin) and misses the latest write: what the token prevents.
    let mut missed = 0;
    for i in 10..20 {
        writer.query(format!("INSERT INTO {t} VALUES ({i})").as_bytes()).await;
        let n: i64 =
            readers[1].query_one(&format!("SELECT count(*) FROM {t} WHERE id = {i}"), &[]).await.unwrap().get(0);
        missed += usize::from(n == 0);
    }
    assert!(missed > 0, "the lagging replica took none of the untokened reads: the test shows nothing");

    // The session setting: every read of the session waits for the token's commit.
    for i in 20..30 {
        let replies = writer.query(format!("INSERT INTO {t} VALUES ({i})").as_bytes()).await;
        let token = wire::commit_token(&replies).expect("the write's token");
        readers[1].batch_execute(&format!("SET pgroute.after = '{token}'")).await.unwrap();
        // Two reads: consecutive reads take turns over the replicas, so one of them
        // would reach the lagging one.
        for read in 0..2 {
            let n: i64 =
                readers[1].query_one(&format!("SELECT count(*) FROM {t} WHERE id = {i}"), &[]).await.unwrap().get(0);
            assert_eq!(n, 1, "write {i}, read {read}: SET pgroute.after orders the session's reads");
        }
    }
    readers[1].batch_execute("RESET pgroute.after").await.unwrap();

    // A token from another timeline (written before a failover) or not a token at all:
    // the primary answers.
    for bad in ["999/0", "garbage"] {
        let row =
            readers[1].query_one(&format!("/* pgroute: after={bad} */ SELECT inet_server_port()"), &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0) as u16, c.primary_port, "after={bad}");
    }
    writer.terminate().await;
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}
