//! The exact commit position in `lsn` mode: behind a unit that commits a write, pgroute
//! learns the primary's WAL position on the same connection and reports it to the client
//! as `ParameterStatus pgroute.commit_lsn = <timeline>/<lsn>` before its ReadyForQuery.

mod common;

use std::time::Duration;

use common::wire::{self, Msg, Wire};
use common::{cluster, proxy_with, table};

/// The reported token of a reply, parsed: (timeline, LSN).
fn token(msgs: &[Msg]) -> Option<(u32, u64)> {
    let reports: Vec<(u32, u64)> = msgs
        .iter()
        .filter(|m| m.tag == b'S')
        .filter_map(|m| {
            let body = std::str::from_utf8(&m.body).ok()?;
            let mut parts = body.split('\0');
            (parts.next()? == "pgroute.commit_lsn").then_some(())?;
            let (tl, lsn) = parts.next()?.split_once('/')?;
            Some((tl.parse().ok()?, u64::from_str_radix(lsn, 16).ok()?))
        })
        .collect();
    assert!(reports.len() <= 1, "one report per unit: {msgs:?}");
    reports.first().copied()
}

/// Where a report sits: right before the ReadyForQuery, after every other reply.
fn report_precedes_ready(msgs: &[Msg]) -> bool {
    let at = msgs.iter().position(|m| m.tag == b'S' && m.body.starts_with(b"pgroute.commit_lsn\0"));
    at.is_some_and(|i| msgs.get(i + 1).is_some_and(|m| m.tag == b'Z'))
}

/// pgroute's own commit-position query, as the server records it.
fn position_query() -> String {
    "SELECT pg_current_wal_insert_lsn()".to_string()
}

async fn lsn_of(client: &tokio_postgres::Client, sql: &str) -> u64 {
    let v: String = client.query_one(sql, &[]).await.unwrap().get(0);
    v.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_write_reports_a_position_at_or_past_its_commit() {
    let c = cluster();
    let t = table("causal");
    let primary = c.direct(0).await;
    primary.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    let proxy = proxy_with("[routing]\ncausal_scope = \"session\"\n").await;
    let (mut w, _) = Wire::connect(proxy.port, "app", "app", &[("database", "app")]).await;
    let insert_lsn = "SELECT (pg_current_wal_insert_lsn() - '0/0')::text";
    let timeline: String =
        primary.query_one("SELECT timeline_id::text FROM pg_control_checkpoint()", &[]).await.unwrap().get(0);

    // An autocommit write: reported, at or past its commit, no later than the position
    // after it; the reply is otherwise what the server said.
    for i in 0..5 {
        let before = lsn_of(&primary, insert_lsn).await;
        let replies = w.query(format!("INSERT INTO {t} VALUES ({i})").as_bytes()).await;
        let after = lsn_of(&primary, insert_lsn).await;
        let (tl, lsn) = token(&replies).expect("a committed write is reported");
        assert_eq!(tl.to_string(), timeline);
        assert!(before < lsn && lsn <= after, "{before} < {lsn} <= {after}");
        assert!(report_precedes_ready(&replies), "{replies:?}");
        assert!(wire::render_all(&replies)[0].starts_with("C INSERT 0 1"), "{replies:?}");
        assert_eq!(replies.len(), 3, "CommandComplete, the report, ReadyForQuery: {replies:?}");
        // A replica that replayed up to the position has the row.
        let replica = c.direct(1).await;
        let mut seen = false;
        for _ in 0..500 {
            let row =
                replica.query_one(&format!("SELECT pg_last_wal_replay_lsn() - '0/0' >= {lsn}"), &[]).await.unwrap();
            if row.get::<_, bool>(0) {
                let n: i64 =
                    replica.query_one(&format!("SELECT count(*) FROM {t} WHERE id = {i}"), &[]).await.unwrap().get(0);
                assert_eq!(n, 1, "a replica at the reported position has the commit");
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "the replica reached the reported position");
    }

    // Reads, a write still in its transaction, and a rolled back write: no report.
    assert_eq!(token(&w.query(format!("SELECT count(*) FROM {t}").as_bytes()).await), None);
    assert_eq!(token(&w.query(b"BEGIN").await), None);
    assert_eq!(token(&w.query(format!("INSERT INTO {t} VALUES (100)").as_bytes()).await), None);
    assert_eq!(token(&w.query(b"ROLLBACK").await), None);
    // A block on the primary that wrote nothing commits no data: its COMMIT asks for no
    // position and reports none.
    // (The server's pg_stat_activity shows the last query its connection ran.)
    let last_query = |pid: String| {
        let primary = &primary;
        async move {
            let sql = format!("SELECT query FROM pg_stat_activity WHERE pid = {pid}");
            primary.query_one(&sql, &[]).await.unwrap().get::<_, String>(0)
        }
    };
    w.query(b"BEGIN").await;
    let at = "/* pgroute: route=primary */ SELECT inet_server_port()::text || ' ' || pg_backend_pid()";
    let at = wire::rows(&w.query(at.as_bytes()).await)[0][0].clone().unwrap_or_default();
    let (port, pid) = at.split_once(' ').unwrap();
    assert_eq!(port, c.primary_port.to_string(), "the block runs on the primary");
    w.query(format!("SELECT count(*) FROM {t}").as_bytes()).await;
    let read_only = w.query(b"COMMIT").await;
    assert!(wire::render_all(&read_only)[0].starts_with("C COMMIT"), "{read_only:?}");
    assert_eq!(token(&read_only), None, "{read_only:?}");
    assert_eq!(last_query(pid.to_string()).await, "COMMIT", "nothing of pgroute's own ran behind it");
    // The control: a block that wrote is followed by the position query.
    w.query(b"BEGIN").await;
    let at = wire::rows(&w.query(format!("INSERT INTO {t} VALUES (99) RETURNING pg_backend_pid()").as_bytes()).await);
    let pid = at[0][0].clone().unwrap_or_default();
    assert!(token(&w.query(b"COMMIT").await).is_some());
    assert_eq!(last_query(pid).await, position_query(), "the position is asked behind a write's COMMIT");
    // A transaction's COMMIT is reported; a failed one's is not.
    w.query(b"BEGIN").await;
    w.query(format!("INSERT INTO {t} VALUES (101)").as_bytes()).await;
    assert!(token(&w.query(b"COMMIT").await).is_some());
    w.query(b"BEGIN").await;
    w.query(format!("INSERT INTO {t} VALUES (102)").as_bytes()).await;
    w.query(b"SELECT 1/0").await;
    let failed = w.query(b"COMMIT").await;
    assert!(wire::render_all(&failed)[0].starts_with("C ROLLBACK"), "{failed:?}");
    assert_eq!(token(&failed), None);

    // Pipelined: a write and a read sent at once; the read comes back after the report,
    // and sees the write (wherever it ran); nothing of pgroute's own query shows.
    let mut both = wire::query(format!("INSERT INTO {t} VALUES (200)").as_bytes());
    both.extend(wire::query(format!("SELECT count(*) FROM {t} WHERE id = 200").as_bytes()));
    w.send(&both).await;
    let replies = w.until_ready(2).await;
    assert!(token(&replies).is_some());
    assert_eq!(wire::rows(&replies), vec![vec![Some("1".to_string())]]);
    assert_eq!(replies.iter().filter(|m| m.tag == b'T').count(), 1, "{replies:?}");

    // The extended protocol: a write's Sync is reported too.
    let mut ext = wire::parse("", format!("INSERT INTO {t} VALUES (300)").as_bytes());
    ext.extend(wire::bind("", "", &[]));
    ext.extend(wire::execute("", 0));
    ext.extend(wire::sync());
    w.send(&ext).await;
    let replies = w.until_ready(1).await;
    assert!(token(&replies).is_some() && report_precedes_ready(&replies), "{replies:?}");

    // COPY FROM STDIN works as on the server (pgroute sends nothing behind it).
    w.send(&wire::query(format!("COPY {t} FROM STDIN").as_bytes())).await;
    assert_eq!(w.read().await.tag, b'G');
    w.send(&wire::copy_data(b"400\n")).await;
    w.send(&wire::copy_done()).await;
    let replies = w.until_ready(1).await;
    assert!(wire::render_all(&replies)[0].starts_with("C COPY 1"), "{replies:?}");
    w.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_a_commit_waits_for_a_replica_not_the_primary() {
    let c = cluster();
    let t = table("after");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    // A budget roomy enough for a loaded test machine (the default is a few
    // milliseconds), and probes too slow to help within it: only asking the replicas
    // where they are can send these reads to one.
    let proxy = proxy_with(
        "[routing]\ncausal_scope = \"session\"\ncausal_wait = \"200ms\"\n\
         [health]\ninterval = \"2s\"\nmax_sample_age = \"10s\"\n",
    )
    .await;
    let client = proxy.client().await;
    let mut on_replicas = 0;
    for i in 0..50 {
        client.batch_execute(&format!("INSERT INTO {t} VALUES ({i})")).await.unwrap();
        let row = client
            .query_one(&format!("SELECT (SELECT count(*) FROM {t} WHERE id = {i}), inet_server_port()"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "read {i} right after its write sees it");
        let port = row.get::<_, i32>(1) as u16;
        if c.replica_ports.contains(&port) {
            on_replicas += 1;
        } else {
            assert_eq!(port, c.primary_port);
        }
    }
    assert_eq!(on_replicas, 50, "every read after a write waited for a replica instead of using the primary");
}
