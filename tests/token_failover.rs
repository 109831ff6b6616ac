//! Causal tokens across a failover: a token from the old timeline still orders a read
//! after its write (it needs the new primary's position at the read, which every
//! surviving commit precedes), and writes after the promotion report tokens on the new
//! timeline that order reads on the replica that follows the new primary. Own cluster (it
//! promotes a replica).

mod common;

use std::time::{Duration, Instant};

use common::wire::Wire;
use common::{cluster, table};

/// The `pgroute.commit_lsn` a write reported.
async fn write(writer: &mut Wire, sql: &str) -> String {
    let replies = writer.query(sql.as_bytes()).await;
    common::wire::commit_token(&replies)
        .unwrap_or_else(|| panic!("no token after {sql}: {:?}", common::wire::render_all(&replies)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_order_reads_across_a_promotion() {
    let c = cluster();
    let p = common::proxy_auto(
        "[routing]\ncausal_scope = \"session\"\ncausal_wait = \"500ms\"\n\
         [health]\ninterval = \"100ms\"\nprimary_wait = \"10s\"\n",
    )
    .await;
    let t = table("tokfo");
    let (mut writer, _) = Wire::connect(p.port, "app", "app", &[("database", "app")]).await;
    writer.query(format!("CREATE TABLE {t} (id int)").as_bytes()).await;
    let before = write(&mut writer, &format!("INSERT INTO {t} VALUES (1)")).await;
    assert!(before.starts_with("1/"), "timeline 1 before the failover: {before}");
    c.wait_replicas_caught_up().await;
    writer.terminate().await;

    // The primary stops; replica pg1 is promoted (timeline 2) and pg2 follows it.
    common::node_ctl("node-stop", 0);
    c.direct(1).await.batch_execute("SELECT pg_promote()").await.unwrap();
    let follower = c.direct(2).await;
    for sql in [
        format!("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={} user=postgres'", c.replica_ports[0]),
        "ALTER SYSTEM SET primary_slot_name = ''".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        follower.batch_execute(&sql).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.proxy.shared.topology.snapshot().primary(Instant::now()) != Some(1) {
        assert!(Instant::now() < deadline, "pgroute did not see the promotion");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The old token, as a hint and as the session setting: the surviving write is seen.
    let reader = p.client().await;
    let hinted = format!("/* pgroute: after={before} */ SELECT count(*) FROM {t} WHERE id = 1");
    assert_eq!(reader.query_one(&hinted, &[]).await.unwrap().get::<_, i64>(0), 1);
    reader.batch_execute(&format!("SET pgroute.after = '{before}'")).await.unwrap();
    let n: i64 = reader.query_one(&format!("SELECT count(*) FROM {t} WHERE id = 1"), &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    reader.batch_execute("RESET pgroute.after").await.unwrap();

    // Writes on the new primary report timeline 2, and their tokens order reads, which
    // the follower (once on timeline 2) can serve.
    let (mut writer, _) = Wire::connect(p.port, "app", "app", &[("database", "app")]).await;
    // On a loaded machine the follower's switch to the new primary can take a while: write
    // and read until one tokened read reaches it (30 s at most); every read sees its write.
    let mut on_follower = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut i = 2;
    while on_follower == 0 && std::time::Instant::now() < deadline {
        let after = write(&mut writer, &format!("INSERT INTO {t} VALUES ({i})")).await;
        assert!(after.starts_with("2/"), "timeline 2 after the promotion: {after}");
        let sql = format!("/* pgroute: after={after} */ SELECT count(*), inet_server_port() FROM {t} WHERE id = {i}");
        let row = reader.query_one(&sql, &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "write {i}: its token orders the read");
        on_follower += usize::from(row.get::<_, i32>(1) as u16 == c.replica_ports[1]);
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(on_follower > 0, "no tokened read reached the follower on the new timeline ({} writes)", i - 2);
    writer.terminate().await;
}
