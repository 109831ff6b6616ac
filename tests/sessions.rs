//! Session behaviour across server connections: prepared statements, settings, pools,
//! cancel, and a server dying under a client.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use tokio_postgres::types::Type;

use common::{cluster, proxy, proxy_with, server_port, simple_value, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statements_work_on_whichever_server_they_land() {
    let c = cluster();
    let p = proxy().await;
    let client = p.client().await;
    let t = table("prep");
    client.batch_execute(&format!("CREATE TABLE {t} (id int, v text)")).await.unwrap();
    c.wait_replicas_caught_up().await;
    // Prepared once (Parse on some server), executed many times: executions rotate over
    // both replicas, so the statement must be re-prepared where it is missing.
    let read = client.prepare("SELECT inet_server_port(), $1::int + 1").await.unwrap();
    let write = client.prepare(&format!("INSERT INTO {t} VALUES ($1, $2)")).await.unwrap();
    // Until both replicas ran it: a read may also go to the primary when a replica's
    // replay of the CREATE TABLE is not known within causal_wait (a loaded machine).
    let replicas: HashSet<u16> = c.replica_ports.iter().copied().collect();
    let mut ports = HashSet::new();
    // (On a loaded machine a replica may not be known to have the CREATE TABLE for a
    // while: up to 200 reads, 10ms apart.)
    for i in 0..200 {
        let row = client.query_one(&read, &[&i]).await.unwrap();
        ports.insert(row.get::<_, i32>(0) as u16);
        assert_eq!(row.get::<_, i32>(1), i + 1);
        if ports.is_superset(&replicas) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The writes after the reads: a read right after a write would wait for a replica to
    // have it, or go to the primary (the default causal scope).
    for i in 0..10 {
        client.execute(&write, &[&i, &format!("v{i}")]).await.unwrap();
    }
    assert!(ports.is_superset(&replicas), "the prepared read ran on {ports:?}, not on both replicas {replicas:?}");
    let n: i64 = c.direct(0).await.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 10, "every execution of the prepared INSERT reached the primary");
    // Close is honoured: a closed statement is gone for the client.
    drop(read);
    let again = client.prepare("SELECT inet_server_port(), $1::int + 1").await.unwrap();
    assert_eq!(client.query_one(&again, &[&1]).await.unwrap().get::<_, i32>(1), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_and_pipelines_keep_their_order() {
    let c = cluster();
    let p = proxy().await;
    let client = p.client().await;
    let t = table("pipe");
    client.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    // Unnamed statements (Parse "" + Bind "" in one Sync).
    for i in 0..6 {
        let rows = client.query_typed("SELECT $1::int * 2", &[(&i, Type::INT4)]).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), i * 2);
    }
    // Pipelined: tokio-postgres sends all of these before reading any reply.
    let ins = format!("INSERT INTO {t} VALUES ($1)");
    let (a, b, r, d) = tokio::join!(
        client.execute(&ins, &[&1i32]),
        client.execute(&ins, &[&2i32]),
        client.query_one("SELECT 40 + 2", &[]),
        client.execute(&ins, &[&3i32]),
    );
    assert_eq!((a.unwrap(), b.unwrap(), d.unwrap()), (1, 1, 1));
    assert_eq!(r.unwrap().get::<_, i32>(0), 42);
    let n: i64 = c.direct(0).await.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_to_every_server() {
    let c = cluster();
    let p = proxy_with("[pool]\nsize = 2\n").await;
    let client = p.client().await;
    client.batch_execute("SET pgroute.tenant = 'acme'").await.unwrap();
    client.batch_execute("SET statement_timeout = '123s'").await.unwrap();
    let mut ports = HashSet::new();
    for _ in 0..6 {
        assert_eq!(simple_value(&client, "SELECT current_setting('pgroute.tenant')").await, "acme");
        assert_eq!(simple_value(&client, "SHOW statement_timeout").await, "123s");
        ports.insert(server_port(&client).await);
    }
    assert_eq!(ports.len(), 2, "both replicas served the reads");
    // Another client sharing the pool sees none of it.
    let other = p.client().await;
    for _ in 0..4 {
        assert_ne!(simple_value(&other, "SELECT current_setting('pgroute.tenant', true)").await, "acme");
        assert_eq!(simple_value(&other, "SHOW statement_timeout").await, "0");
    }
    // A SET inside a rolled-back transaction does not survive; a committed one does.
    client.batch_execute("BEGIN; SET pgroute.tenant = 'rolled'; ROLLBACK").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT current_setting('pgroute.tenant')").await, "acme");
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("SET pgroute.tenant = 'committed'").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    for _ in 0..3 {
        assert_eq!(simple_value(&client, "SELECT current_setting('pgroute.tenant')").await, "committed");
    }
    // SET LOCAL ends with its transaction.
    client.batch_execute("BEGIN; SET LOCAL statement_timeout = '7s'; COMMIT").await.unwrap();
    assert_eq!(simple_value(&client, "SHOW statement_timeout").await, "123s");
    client.batch_execute("RESET statement_timeout").await.unwrap();
    assert_eq!(simple_value(&client, "SHOW statement_timeout").await, "0");
    client.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT current_setting('pgroute.tenant', true)").await, "");
    // Startup parameters are settings too.
    let with_options = common::connect(&format!("{} options='-c search_path=pg_catalog'", p.conninfo("app"))).await;
    for _ in 0..3 {
        assert_eq!(simple_value(&with_options, "SHOW search_path").await, "pg_catalog");
    }
    let _ = c;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_makes_clients_wait_then_fail_with_53300() {
    let p = proxy_with("[pool]\nsize = 1\ncheckout_timeout = \"300ms\"\n").await;
    let holder = p.client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let t = table("full");
    holder.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    let waiter = p.client().await; // logs in on the primary: waits, then the pool is free
    let err = waiter.batch_execute(&format!("INSERT INTO {t} VALUES (1)")).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().contains("pg0/app/app"), "{}", db.message());
    // The waiter's session survives; once the holder commits, the pool has room again.
    holder.batch_execute("COMMIT").await.unwrap();
    waiter.batch_execute(&format!("INSERT INTO {t} VALUES (1)")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_server_running_the_query() {
    let p = proxy().await;
    let client = p.client().await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let err = client.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert_eq!(simple_value(&client, "SELECT 1").await, "1", "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_through_the_proxy() {
    let c = cluster();
    let p = proxy().await;
    let client = p.client().await;
    let t = table("copy");
    client.batch_execute(&format!("CREATE TABLE {t} (id int, v text)")).await.unwrap();
    let sink = client.copy_in(&format!("COPY {t} FROM STDIN")).await.unwrap();
    pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tone\n2\ttwo\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    c.wait_replicas_caught_up().await;
    let stream = client.copy_out(&format!("COPY {t} TO STDOUT")).await.unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), b"1\tone\n2\ttwo\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_leave_the_session_usable() {
    let p = proxy().await;
    let client = p.client().await;
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let e = client.simple_query("SELECT * FROM no_such_table").await.unwrap_err();
    assert!(format!("{e:?}").contains("no_such_table"), "{e:?}");
    assert_eq!(code(e), "42P01");
    assert_eq!(code(client.query("SELEC 1", &[]).await.unwrap_err()), "42601");
    assert_eq!(simple_value(&client, "SELECT 2").await, "2");
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(code(client.batch_execute("SELECT 1/0").await.unwrap_err()), "22012");
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"), "the failed transaction stays failed");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT 3").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dying_mid_query_gives_an_error_not_a_hang() {
    let c = cluster();
    let p = proxy().await;
    let victim = p.client().await;
    victim.batch_execute("BEGIN").await.unwrap();
    let pid = simple_value(&victim, "SELECT pg_backend_pid()").await;
    let killer = c.direct(0).await;
    let sleeper = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    killer.execute(&format!("SELECT pg_terminate_backend({pid})"), &[]).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), sleeper).await.expect("no hang").unwrap();
    let e = result.expect_err("the client learns its query failed");
    // The server's own FATAL, as a direct connection would get it.
    assert_eq!(e.code().map(|c| c.code()), Some("57P01"), "{e:?}");
    // The pool replaces the dead connection for everyone else.
    let fresh = p.client().await;
    fresh.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_connection_per_node() {
    let c = cluster();
    let p = proxy_with("[pool]\nmode = \"session\"\n").await;
    let client = p.client().await;
    // At least 6 reads, and on until both replicas have answered (a loaded machine can take
    // one out of rotation for a few seconds); each replica answers from one process.
    let (mut pids, mut ports, mut reads) = (HashSet::new(), HashSet::new(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reads < 6 || ports.len() < c.replica_ports.len() && std::time::Instant::now() < deadline {
        reads += 1;
        let row = simple_value(&client, "SELECT pg_backend_pid()::text || '@' || inet_server_port()").await;
        ports.insert(row.split('@').nth(1).unwrap_or_default().to_string());
        pids.insert(row);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ports.len(), c.replica_ports.len(), "both replicas answered: {pids:?}");
    assert_eq!(pids.len(), ports.len(), "one server process per replica for the whole session: {pids:?}");
    let t = table("sess");
    client.batch_execute(&format!("CREATE TABLE {t} (id int); INSERT INTO {t} VALUES (1)")).await.unwrap();
}
