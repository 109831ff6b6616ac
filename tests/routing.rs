//! Reads reach replicas, writes the primary, transactions stay on one node.

mod common;

use std::collections::HashSet;

use common::{cluster, proxy, server_port, simple_value, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_from_replicas_and_writes_land_on_the_primary() {
    let c = cluster();
    let p = proxy().await;
    let client = p.client().await;
    // Node-local answers come from the primary, as on a direct connection to it.
    let in_recovery = simple_value(&client, "SELECT pg_is_in_recovery()").await;
    assert_eq!(in_recovery, "f", "pg_is_in_recovery() is node-local: the primary answers");

    // Reads are spread over both replicas. On a loaded machine (the whole suite shares one
    // cluster) a replica can fall behind the lag threshold or its health sample go stale
    // for a few seconds and leave rotation, so keep reading for a while, not a fixed count.
    let replicas: HashSet<u16> = c.replica_ports.iter().copied().collect();
    // If both leave rotation at once a read falls back to the primary: allow that rarely.
    let mut ports = HashSet::new();
    let (mut reads, mut on_primary) = (0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !replicas.is_subset(&ports) && std::time::Instant::now() < deadline {
        let port: i32 = client.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        reads += 1;
        if port as u16 == c.primary_port {
            on_primary += 1;
        } else {
            ports.insert(port as u16);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(ports, replicas, "reads are spread over both replicas, and only over them");
    assert!(on_primary * 2 < reads, "{on_primary} of {reads} plain reads answered from the primary");

    let t = table("rw");
    client.batch_execute(&format!("CREATE TABLE {t} (id int primary key, v text)")).await.unwrap();
    client.execute(&format!("INSERT INTO {t} VALUES (1, 'a')"), &[]).await.unwrap();
    client.execute(&format!("UPDATE {t} SET v = 'b' WHERE id = 1"), &[]).await.unwrap();
    let direct = c.direct(0).await;
    let v: String = direct.query_one(&format!("SELECT v FROM {t} WHERE id = 1"), &[]).await.unwrap().get(0);
    assert_eq!(v, "b");
    client.execute(&format!("DELETE FROM {t}"), &[]).await.unwrap();
    let n: i64 = direct.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_runs_on_one_node_from_begin_to_commit() {
    let c = cluster();
    let p = proxy().await;
    let client = p.client().await;
    let t = table("tx");
    client.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute(&format!("INSERT INTO {t} VALUES (1)")).await.unwrap();
    for _ in 0..4 {
        let port: i32 = client.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(port as u16, c.primary_port);
        let n: i64 = client.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "the transaction sees its own uncommitted row");
    }
    client.batch_execute("COMMIT").await.unwrap();

    // The block's reads must see that commit (the default causal scope): once a replica
    // is known to have it, the block may begin there.
    c.wait_replicas_caught_up().await;
    let mut first = 0;
    for attempt in 0..50 {
        client.batch_execute("BEGIN READ ONLY").await.unwrap();
        first = client.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        if c.replica_ports.contains(&(first as u16)) {
            eprintln!("BEGIN READ ONLY on a replica at attempt {attempt}");
            break;
        }
        client.batch_execute("COMMIT").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(c.replica_ports.contains(&(first as u16)), "BEGIN READ ONLY may use a replica");
    for _ in 0..4 {
        let port: i32 = client.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(port, first, "a read-only transaction stays on its replica");
    }
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_hidden_in_reads_and_unparseable_text_go_to_the_primary() {
    let c = cluster();
    let p = proxy().await;
    let client = p.client().await;
    let t = table("hidden");
    client
        .batch_execute(&format!("CREATE TABLE {t} (id serial primary key, v int); CREATE SEQUENCE {t}_s"))
        .await
        .unwrap();
    c.wait_replicas_caught_up().await;
    // Each of these would fail on a replica (read-only); through pgroute they succeed.
    for sql in [
        format!("SELECT nextval('{t}_s')"),
        format!("WITH d AS (INSERT INTO {t} (v) VALUES (1) RETURNING id) SELECT count(*) FROM d"),
        format!("SELECT * FROM {t} FOR UPDATE"),
        format!("SELECT * FROM {t} FOR NO KEY UPDATE SKIP LOCKED"),
        format!("SELECT * FROM {t} FOR KEY SHARE"),
        format!("SELECT * INTO {t}_copy FROM {t}"),
        format!("SELECT 1; INSERT INTO {t} (v) VALUES (2)"),
        "SELECT pg_advisory_xact_lock(7)".to_string(),
        format!("SELECT 'UPDATE'; UPDATE {t} SET v = v"),
    ] {
        client.simple_query(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Extended protocol too: the statement's own class decides.
    let next: i64 = client.query_one(&format!("SELECT nextval('{t}_s')"), &[]).await.unwrap().get(0);
    assert!(next >= 2);
    // nextval leaves sequence state (currval, lastval) in the server session: the session
    // is pinned to the primary from then on. Multi-statement reads of another session may
    // use a replica.
    assert_eq!(server_port(&client).await, c.primary_port, "pinned by nextval");
    let client = p.client().await;
    let port = simple_value(&client, "SELECT 1; SELECT inet_server_port()").await;
    assert_eq!(port, "1");
    let msgs = client.simple_query("SELECT 1; SELECT inet_server_port()").await.unwrap();
    let ports: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let replica_port: u16 = ports[1].parse().unwrap();
    assert!(c.replica_ports.contains(&replica_port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_leave_state_pin_the_session_to_the_primary() {
    let c = cluster();
    let p = proxy().await;
    for pin in [
        "LISTEN pgroute_test",
        "CREATE TEMP TABLE pin_tmp (id int)",
        "SELECT pg_advisory_lock(4242)",
        "PREPARE pin_q AS SELECT 1",
    ] {
        let client = p.client().await;
        assert!(c.replica_ports.contains(&server_port(&client).await), "reads start on replicas");
        client.simple_query(pin).await.unwrap();
        for _ in 0..4 {
            assert_eq!(server_port(&client).await, c.primary_port, "after {pin:?}");
        }
    }
    let client = p.client().await;
    client.batch_execute("CREATE TEMP TABLE tmp_rows (id int); INSERT INTO tmp_rows VALUES (1)").await.unwrap();
    let n = simple_value(&client, "SELECT count(*) FROM tmp_rows").await;
    assert_eq!(n, "1", "the temp table is visible to later statements");
}
