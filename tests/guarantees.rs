//! The guarantees against inputs that real frameworks and hostile clients send (issue 22).
//! Each test is a case that failed on 228a125; the judge is PostgreSQL (which node ran a
//! statement, what it holds afterwards, whether it refuses it) or a direct connection.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::wire::{self, Wire};
use common::{cluster, connect, proxy_with, simple_value, table};

/// `SELECT ..., inet_server_port()`: the port of the server that ran it (last column).
async fn ran_on(client: &tokio_postgres::Client, sql: &str) -> u16 {
    last_port(client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")), sql)
}

fn last_port(msgs: Vec<tokio_postgres::SimpleQueryMessage>, sql: &str) -> u16 {
    let port = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(r.len() - 1).map(str::to_string),
        _ => None,
    });
    port.unwrap_or_else(|| panic!("{sql}: no row")).parse().expect("port")
}

/// Item 1: a client Parses a statement under the name its server copy had on 228a125
/// (`pgr_<hash>`, computable from the Parse body) and Binds it with the wrong number of
/// parameters. The error named the server statement, the rewrite replaced it with the
/// same text and looped forever on the one runtime thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_named_like_its_server_copy_cannot_freeze_the_proxy() {
    let c = cluster();
    let p = proxy_with("").await;
    let sql = b"SELECT 1";
    let mut tail = sql.to_vec();
    tail.push(0);
    tail.extend_from_slice(&0i16.to_be_bytes());
    let mut h = DefaultHasher::new();
    tail.as_slice().hash(&mut h);
    let name = format!("pgr_{:016x}", h.finish());
    let unit = [
        wire::parse("probe", sql),
        wire::parse(&name, sql),
        wire::bind("", &name, &[Some(b"1")]),
        wire::execute("", 0),
        wire::sync(),
    ]
    .concat();
    let (mut direct, _) = Wire::connect(c.primary_port, "postgres", "", &[]).await;
    direct.send(&unit).await;
    let want: Vec<String> = direct.until_ready(1).await.iter().map(wire::render).collect();
    let (mut w, _) = Wire::connect(p.port, "app", "app", &[]).await;
    w.send(&unit).await;
    let got = tokio::time::timeout(Duration::from_secs(10), w.until_ready(1)).await.expect("the proxy answered");
    assert_eq!(got.iter().map(wire::render).collect::<Vec<_>>(), want, "the same replies as a direct connection");
    let other = tokio::time::timeout(Duration::from_secs(10), async {
        let client = p.client().await;
        simple_value(&client, "SELECT 1").await
    });
    assert_eq!(other.await.expect("another client is answered"), "1");
}

/// Item 2: advisory locks and `set_config` in the quoted, qualified spellings SQL
/// generators write run on the primary, and session-level ones keep the session there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_lock_and_setting_functions_run_on_the_primary() {
    let c = cluster();
    let p = proxy_with("").await;
    let client = p.client().await;
    for sql in [
        r#"SELECT "pg_catalog"."pg_advisory_xact_lock"(42), inet_server_port()"#,
        r#"SELECT "pg_advisory_xact_lock"(42), inet_server_port()"#,
        r#"SELECT PG_CATALOG . "pg_try_advisory_xact_lock" /* why */ (42), inet_server_port()"#,
        r#"SELECT U&"pg\005fadvisory\005fxact\005flock"(42), inet_server_port()"#,
        "SELECT x, inet_server_port() FROM (SELECT \"pg_catalog\".\"pg_advisory_xact_lock\"(42) AS x) s",
    ] {
        assert_eq!(ran_on(&client, sql).await, c.primary_port, "{sql}");
    }
    // A session lock: PostgreSQL holds it afterwards on the primary, for this client.
    client.simple_query(r#"SELECT "pg_advisory_lock"(4242)"#).await.unwrap();
    let held = "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted";
    let primary = c.direct(0).await;
    assert_eq!(primary.query_one(held, &[]).await.unwrap().get::<_, i32>(0), 1, "the lock is held on the primary");
    // A setting made by set_config stays in force on the connection that runs the next
    // statements (the session is pinned there).
    client.simple_query(r#"SELECT "set_config"('pgroute_test.mark', 'on', false)"#).await.unwrap();
    for _ in 0..6 {
        assert_eq!(simple_value(&client, "SHOW pgroute_test.mark").await, "on");
    }
    client.simple_query("SELECT pg_advisory_unlock_all()").await.unwrap();
    assert_eq!(primary.query_one(held, &[]).await.unwrap().get::<_, i32>(0), 0);
}

/// Item 3: read-only transactions as pgjdbc's setReadOnly, Spring, psycopg and asyncpg
/// start them must not read a money table on a replica. With no money table configured
/// they may (the control: the same client, the same transaction, on a replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_read_money_tables_on_the_primary() {
    let c = cluster();
    let primary = c.direct(0).await;
    primary.batch_execute("CREATE TABLE IF NOT EXISTS balances (id int PRIMARY KEY, v int)").await.unwrap();
    primary.batch_execute("INSERT INTO balances VALUES (1, 100) ON CONFLICT DO NOTHING").await.unwrap();
    c.wait_replicas_caught_up().await;
    let money = proxy_with("[routing]\nprimary_tables = [\"balances\"]\n").await;
    let plain = proxy_with("").await;
    for (p, on_primary) in [(&money, true), (&plain, false)] {
        let mut client = p.client().await;
        // tokio-postgres, psycopg and asyncpg: BEGIN READ ONLY as a Query of its own.
        for read in [
            "SELECT v, inet_server_port() FROM balances WHERE id = 1",
            "SELECT v, inet_server_port() FROM U&\"\\0062alances\"",
        ] {
            let tx = client.build_transaction().read_only(true).start().await.unwrap();
            let port = last_port(tx.simple_query(read).await.unwrap(), read);
            tx.commit().await.unwrap();
            assert_eq!(port == c.primary_port, on_primary, "{read}: ran on {port}");
        }
        // pgjdbc: BEGIN READ ONLY and the first statement in one extended-protocol unit.
        let (mut w, _) = Wire::connect(p.port, "app", "app", &[]).await;
        let unit = [
            wire::parse("", b"BEGIN READ ONLY"),
            wire::bind("", "", &[]),
            wire::execute("", 0),
            wire::parse("", b"SELECT inet_server_port() FROM balances WHERE id = 1"),
            wire::bind("", "", &[]),
            wire::execute("", 0),
            wire::sync(),
        ]
        .concat();
        w.send(&unit).await;
        let replies = w.until_ready(1).await;
        let port: u16 = wire::rows(&replies)[0][0].clone().expect("port").parse().expect("port");
        assert_eq!(port == c.primary_port, on_primary, "pgjdbc's unit ran on {port}");
        w.query(b"COMMIT").await;
    }
}

/// Item 4: `SET "role"` (quoted, as ORMs write it) and the role in the startup options
/// never reach the next client of the pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_role_never_reaches_the_next_client() {
    let c = cluster();
    let primary = c.direct(0).await;
    primary
        .batch_execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenant_b') THEN CREATE ROLE tenant_b; END IF; END $$; \
             GRANT tenant_b TO app",
        )
        .await
        .unwrap();
    let p = proxy_with("[pool]\nsize = 1\n").await;
    for set in [
        r#"SET "role" = tenant_b"#,
        r#"SET SESSION "role" TO 'tenant_b'"#,
        "SET session_authorization = 'app'; SET role = tenant_b",
    ] {
        let a = p.client().await;
        a.batch_execute(set).await.unwrap_or_else(|e| panic!("{set}: {e}"));
        assert_eq!(simple_value(&a, "SELECT current_user").await, "tenant_b", "{set}");
        drop(a);
        for _ in 0..10 {
            let b = p.client().await;
            assert_eq!(simple_value(&b, "SELECT current_user").await, "app", "after {set}");
        }
    }
    let opts = connect(&format!("{} options='-c role=tenant_b'", p.conninfo("app"))).await;
    assert_eq!(simple_value(&opts, "SELECT current_user").await, "tenant_b");
    drop(opts);
    for _ in 0..5 {
        assert_eq!(simple_value(&p.client().await, "SELECT current_user").await, "app");
    }
}

/// Item 5: sequence state between statements, as PDO's lastInsertId and ORMs read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currval_and_lastval_see_the_sessions_own_nextval() {
    let c = cluster();
    let s = table("seq");
    c.direct(0).await.batch_execute(&format!("CREATE SEQUENCE {s}")).await.unwrap();
    c.wait_replicas_caught_up().await;
    let p = proxy_with("").await;
    let client = p.client().await;
    for _ in 0..3 {
        let n = simple_value(&client, &format!("SELECT nextval('{s}')")).await;
        assert_eq!(simple_value(&client, &format!("SELECT currval('{s}')")).await, n);
        assert_eq!(simple_value(&client, "SELECT lastval()").await, n);
        let row = client.query_one(&format!("SELECT \"currval\"('{s}')::text"), &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), n, "extended protocol");
    }
}

/// Item 6: serializable transactions, however the isolation was chosen, run where a
/// direct connection would run them (a standby refuses them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_succeed_however_serializable_was_chosen() {
    let c = cluster();
    let primary = c.direct(0).await;
    let exists = primary.query("SELECT 1 FROM pg_database WHERE datname = 'serdb'", &[]).await.unwrap();
    if exists.is_empty() {
        primary.batch_execute("CREATE DATABASE serdb").await.unwrap();
    }
    primary.batch_execute("ALTER DATABASE serdb SET default_transaction_isolation = 'serializable'").await.unwrap();
    let p = proxy_with("").await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", "SELECT 1", "COMMIT"]),
        (
            "",
            &[
                "SET default_transaction_isolation = 'serializable'",
                "BEGIN READ ONLY",
                "SELECT 1",
                "COMMIT",
                "SELECT 1",
            ],
        ),
        ("", &["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SELECT 1"]),
        (
            "",
            &[
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                "SELECT 1",
            ],
        ),
        (
            " options='-c default_transaction_isolation=serializable'",
            &["SELECT 1", "BEGIN READ ONLY", "SELECT 1", "COMMIT"],
        ),
        (" dbname=serdb", &["SELECT 1", "BEGIN READ ONLY", "SELECT 1", "COMMIT"]),
    ];
    for (extra, statements) in cases {
        let client = connect(&format!("{}{extra}", p.conninfo("app"))).await;
        for sql in *statements {
            client.simple_query(sql).await.unwrap_or_else(|e| panic!("{extra} {statements:?}: {sql}: {e}"));
        }
        let mut client = client;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::Serializable)
            .read_only(true)
            .deferrable(true)
            .start()
            .await
            .unwrap();
        tx.query_one("SELECT 1", &[]).await.unwrap();
        tx.commit().await.unwrap();
    }
    // The control: a session that is not serializable still reads on replicas.
    let client = p.client().await;
    assert!(c.replica_ports.contains(&common::server_port(&client).await));
}

/// Item 7: COPY to a server file, built-in volatile functions, a read_only_functions
/// name in another schema, and `begin atomic` outside a function body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_effects_in_other_spellings_run_on_the_primary() {
    let c = cluster();
    let primary = c.direct(0).await;
    let log = table("evil_log");
    let dropped = table("dropme");
    primary
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS evil; CREATE TABLE {log} (v int); GRANT ALL ON {log} TO app; \
             GRANT USAGE ON SCHEMA evil TO app; \
             CREATE OR REPLACE FUNCTION evil.format_amount(int) RETURNS int LANGUAGE sql VOLATILE \
             AS 'INSERT INTO {log} VALUES ($1) RETURNING $1'; CREATE TABLE {dropped} (); ALTER TABLE {dropped} OWNER TO app"
        ))
        .await
        .unwrap();
    c.wait_replicas_caught_up().await;
    let p = proxy_with("[routing]\nread_only_functions = [\"format_amount\"]\n").await;
    let client = p.client().await;
    // PostgreSQL is the judge: on a replica this INSERTing function fails with 25006.
    assert_eq!(simple_value(&client, "SELECT evil.format_amount(7)").await, "7");
    assert_eq!(ran_on(&client, "SELECT pg_catalog.pg_cancel_backend(0), inet_server_port()").await, c.primary_port);
    client
        .simple_query(&format!("SELECT begin atomic FROM (SELECT 1 AS begin) s; DROP TABLE {dropped}"))
        .await
        .unwrap();
    let gone = primary.query("SELECT 1 FROM pg_class WHERE relname = $1", &[&dropped]).await.unwrap();
    assert!(gone.is_empty(), "the DROP ran on the primary");
    // The file a COPY writes says which server wrote it.
    let file = std::env::temp_dir().join(format!("pgroute-copy-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let superuser = connect(&p.conninfo("postgres")).await;
    superuser.simple_query(&format!("COPY (SELECT inet_server_port()) TO '{}'", file.display())).await.unwrap();
    let written = std::fs::read_to_string(&file).expect("the COPY wrote its file");
    assert_eq!(written.trim(), c.primary_port.to_string());
    let _ = std::fs::remove_file(&file);
}

/// The salt in a SCRAM server-first message for `user`.
async fn scram_salt(port: u16, user: &str) -> String {
    let mut w = Wire::unauthenticated(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    w.send(&pgroute::protocol::startup_message(&[("user", user), ("database", "app")])).await;
    let mut m = w.read().await;
    assert_eq!((m.tag, m.body.get_i32()), (b'R', 10), "SASL offered");
    let first = "n,,n=,r=abcdefghijklmnop";
    let mut msg = b"SCRAM-SHA-256\0".to_vec();
    msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
    msg.extend_from_slice(first.as_bytes());
    w.send(&wire::frame(b'p', &msg)).await;
    let mut m = w.read().await;
    assert_eq!((m.tag, m.body.get_i32()), (b'R', 11), "server-first");
    let text = String::from_utf8_lossy(&m.body).into_owned();
    text.split(',').find(|p| p.starts_with("s=")).expect("salt").to_string()
}

/// Item 7: two attempts no longer tell which users exist: an unknown name got a fresh
/// random salt each time, a known one always the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_keeps_its_salt_as_a_known_one_does() {
    let p = proxy_with("").await;
    assert_eq!(scram_salt(p.port, "app").await, scram_salt(p.port, "app").await);
    assert_eq!(scram_salt(p.port, "nobody").await, scram_salt(p.port, "nobody").await);
}

/// Item 7: sockets that send a startup packet and never answer the password challenge,
/// or send nothing at all, hold no places of logged-in clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_logins_lock_no_client_out() {
    let p = proxy_with("[listen]\nmax_client_conn = 2\n").await;
    let mut idle = Vec::new();
    for i in 0..7 {
        let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
        if i < 5 {
            s.write_all(&pgroute::protocol::startup_message(&[("user", "app"), ("database", "app")])).await.unwrap();
        }
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = connect(&p.conninfo("app")).await;
    let b = connect(&p.conninfo("app")).await;
    assert_eq!(simple_value(&a, "SELECT 1").await, "1");
    assert_eq!(simple_value(&b, "SELECT 2").await, "2");
    drop(idle);
}

/// Logins in progress have their own limit (`[listen] max_logins`): a new login takes
/// the place of the one that has waited longest, which gets 53300; a real client gets in
/// however many sockets sit there, and the clients logged in are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_in_progress_have_their_own_limit() {
    let p = proxy_with("[listen]\nmax_logins = 4\n").await;
    let a = connect(&p.conninfo("app")).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(("127.0.0.1", p.port)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = connect(&p.conninfo("app")).await;
    assert_eq!(simple_value(&b, "SELECT 2").await, "2", "a real login gets in");
    // The oldest silent socket was told why it lost its place.
    let mut oldest = Wire::unauthenticated(silent.remove(0));
    let m = tokio::time::timeout(Duration::from_secs(5), oldest.read()).await.expect("an answer");
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert_eq!(m.tag, b'E');
    assert!(text.contains("53300") && text.contains("max_logins = 4"), "{text}");
    assert_eq!(simple_value(&a, "SELECT 1").await, "1");
}

/// Item 7: another client's statements are neither visible (their texts are that
/// client's) nor droppable: a client that finds pgroute's server statements through
/// dynamic SQL and DEALLOCATEs them must not break the client whose statements they were
/// (the connection it ran on is closed, not pooled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deallocating_server_statements_breaks_no_other_client() {
    let p = proxy_with("[pool]\nsize = 1\n[routing]\ndefault_read = \"primary\"\n").await;
    let a = p.client().await;
    let stmt = a.prepare("SELECT $1::int + 100").await.unwrap();
    assert_eq!(a.query_one(&stmt, &[&1i32]).await.unwrap().get::<_, i32>(0), 101);
    let b = p.client().await;
    b.simple_query(
        "DO $$ DECLARE r record; BEGIN \
         FOR r IN EXECUTE 'SELECT name FROM pg_' || 'prepared_statements' LOOP EXECUTE format('DEALLOCATE %I', r.name); END LOOP; \
         END $$",
    )
    .await
    .unwrap();
    for i in 0..5 {
        assert_eq!(a.query_one(&stmt, &[&i]).await.unwrap().get::<_, i32>(0), 100 + i);
    }
    let c = p.client().await;
    let seen = common::rows(&c, "SELECT name, statement FROM pg_prepared_statements").await;
    assert!(seen.is_empty(), "a fresh client sees no other client's statements: {seen:?}");
}

/// Item 7: the named statements one client may hold are bounded; past the bound a Parse
/// is refused with 54000 and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_a_bounded_number_of_prepared_statements() {
    let p = proxy_with("").await;
    let (mut w, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let many: Vec<u8> = (0..10_000).flat_map(|i| wire::parse(&format!("s{i}"), b"SELECT 1")).collect();
    w.send(&[many, wire::sync()].concat()).await;
    let replies = w.until_ready(1).await;
    assert!(wire::errors(&replies).is_empty(), "10,000 statements are allowed");
    w.send(&[wire::parse("one_more", b"SELECT 1"), wire::sync()].concat()).await;
    assert_eq!(wire::errors(&w.until_ready(1).await), vec!["54000"]);
    w.send(&[wire::close(b'S', "s0"), wire::sync(), wire::parse("one_more", b"SELECT 2"), wire::sync()].concat()).await;
    assert!(wire::errors(&w.until_ready(2).await).is_empty(), "a closed statement frees its place");
    assert_eq!(w.column("SELECT 3").await, vec![Some("3".to_string())]);
}

/// Differential seed 2 case 46 (found by the long run): a statement is read on a replica,
/// then its name is Parsed again with BEGIN. The BEGIN's unit prepares the client's
/// statements on the primary first (pgroute's own unit, still in flight), so the second
/// Parse could not count on that copy and forgot it, while the server kept it: the next
/// client's read of pg_prepared_statements saw the first client's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_for_a_transaction_and_taken_again_is_not_left_for_the_next_client() {
    let p = proxy_with("[pool]\nsize = 1\n").await;
    let (mut a, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let read = [
        wire::parse("s1", b"SELECT 10 / $1::int"),
        wire::bind("", "s1", &[Some(b"5")]),
        wire::execute("", 0),
        wire::sync(),
    ];
    a.send(&read.concat()).await;
    assert_eq!(wire::rows(&a.until_ready(1).await), vec![vec![Some("2".to_string())]]);
    let taken = [wire::parse("s1", b"BEGIN"), wire::bind("", "s1", &[]), wire::execute("", 0), wire::sync()];
    a.send(&taken.concat()).await;
    assert_eq!(wire::errors(&a.until_ready(1).await), vec!["42P05"], "the name is taken, as on one server");
    let (mut b, _) = Wire::connect(p.port, "app", "app", &[]).await;
    let seen = wire::rows(&b.query(b"SELECT name, statement FROM pg_prepared_statements").await);
    assert!(seen.is_empty(), "a fresh client sees no other client's statements: {seen:?}");
    a.send(&read[1..].concat()).await;
    assert_eq!(wire::rows(&a.until_ready(1).await), vec![vec![Some("2".to_string())]], "and s1 still works");
}
