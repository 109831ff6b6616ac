//! Bad input and authentication: malformed frames, oversized messages, silent clients,
//! wrong passwords. Each gets a clean PostgreSQL error or a closed connection, never a
//! panic or a hang, and other clients keep working.

mod common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{proxy, proxy_with, simple_value};

fn startup(user: &str) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(196608);
    for (k, v) in [("user", user), ("database", "app")] {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut msg = (body.len() as i32 + 4).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Reads whole frames until one with `tag` arrives (or the connection ends); returns
/// the tags seen and the body of the last frame.
async fn read_until(s: &mut TcpStream, tag: u8) -> (Vec<u8>, Vec<u8>) {
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return (tags, Vec::new()),
            Err(_) => panic!("no reply within 10s (tags so far {:?})", String::from_utf8_lossy(&tags)),
        }
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        tags.push(head[0]);
        if head[0] == tag {
            return (tags, body);
        }
    }
}

fn sqlstate(body: &[u8]) -> String {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let field = body[i];
        let end = body[i + 1..].iter().position(|&b| b == 0).unwrap() + i + 1;
        if field == b'C' {
            return String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        }
        i = end + 1;
    }
    String::new()
}

async fn refused(conninfo: &str, what: &str) -> tokio_postgres::Error {
    match common::try_connect(conninfo).await {
        Ok(_) => panic!("{what}: the connection was accepted"),
        Err(e) => e,
    }
}

async fn logged_in(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup("postgres")).await.unwrap();
    let (tags, _) = read_until(&mut s, b'Z').await;
    assert!(tags.contains(&b'K'), "our own BackendKeyData is sent");
    s
}

/// Expects an ErrorResponse with `code`, then the connection to close.
async fn expect_fatal(s: &mut TcpStream, code: &str) {
    let (tags, body) = read_until(s, b'E').await;
    assert_eq!(tags.last(), Some(&b'E'), "an ErrorResponse arrives");
    assert_eq!(sqlstate(&body), code);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed after a fatal error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_a_protocol_error_and_others_are_unaffected() {
    let p = proxy_with("[listen]\nmax_message_size = 4096\n").await;
    let bystander = p.client().await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("length below four", b"Q\0\0\0\x02".to_vec(), "08P01"),
        ("oversized message", b"Q\0\x10\0\0".to_vec(), "54000"),
        ("unknown message type", b"z\0\0\0\x04".to_vec(), "08P01"),
        ("truncated Bind", b"B\0\0\0\x08ab\0x".to_vec(), "08P01"),
        ("Parse with a bad type count", b"P\0\0\0\x0cs\0q\0\0\x05\0\0".to_vec(), "08P01"),
        ("Query without terminator", b"Q\0\0\0\x08abcd".to_vec(), "08P01"),
        ("Describe of an unknown kind", b"D\0\0\0\x07Xs\0".to_vec(), "08P01"),
    ];
    for (name, bytes, code) in cases {
        eprintln!("case: {name}");
        let mut s = logged_in(p.port).await;
        s.write_all(&bytes).await.unwrap();
        expect_fatal(&mut s, code).await;
        assert_eq!(simple_value(&bystander, "SELECT 1").await, "1", "after {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_phase_abuse_is_refused() {
    let p = proxy_with("[listen]\nlogin_timeout = \"300ms\"\n").await;
    // SSLRequest and GSSENCRequest are declined with 'N', then a normal startup works.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    for code in [80877103i32, 80877104] {
        let mut req = 8i32.to_be_bytes().to_vec();
        req.extend_from_slice(&code.to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
    }
    s.write_all(&startup("postgres")).await.unwrap();
    read_until(&mut s, b'Z').await;

    // A startup packet over the 10 kB limit.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    s.write_all(&100_000i32.to_be_bytes()).await.unwrap();
    expect_fatal(&mut s, "08P01").await;

    // A client that sends nothing is dropped after the login timeout.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    expect_fatal(&mut s, "08P01").await;

    // An unsupported protocol version.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let mut v2 = 8i32.to_be_bytes().to_vec();
    v2.extend_from_slice(&131072i32.to_be_bytes());
    s.write_all(&v2).await.unwrap();
    expect_fatal(&mut s, "0A000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_methods_and_failures() {
    let p = proxy().await;
    // SCRAM (default) and md5 users, each logging in to the proxy and the proxy to the server
    // with the method the server asks for.
    let scram = common::connect(&p.conninfo("app")).await;
    assert_eq!(simple_value(&scram, "SELECT current_user").await, "app");
    let md5 = common::connect(&p.conninfo("app_md5")).await;
    assert_eq!(simple_value(&md5, "SELECT current_user").await, "app_md5");
    let trusted = common::connect(&format!("host=127.0.0.1 port={} user=postgres dbname=app", p.port)).await;
    assert_eq!(simple_value(&trusted, "SELECT current_user").await, "postgres");

    let wrong =
        refused(&format!("host=127.0.0.1 port={} user=app password=nope dbname=app", p.port), "wrong password refused")
            .await;
    let wrong = wrong.as_db_error().expect("a server error");
    assert_eq!(wrong.code().code(), "28P01");
    let wrong_md5 = refused(
        &format!("host=127.0.0.1 port={} user=app_md5 password=nope dbname=app", p.port),
        "wrong md5 password refused",
    )
    .await;
    assert_eq!(wrong_md5.as_db_error().map(|e| e.code().code()), Some("28P01"));
    let unknown =
        refused(&format!("host=127.0.0.1 port={} user=mallory password=x dbname=app", p.port), "unknown user refused")
            .await;
    let unknown = unknown.as_db_error().expect("a server error");
    assert_eq!(unknown.code().code(), "28P01", "unknown users look like wrong passwords");
    assert_eq!(unknown.message(), wrong.message().replace("\"app\"", "\"mallory\""));
    // A database that does not exist: the server's own error reaches the client.
    let nodb = refused(
        &format!("host=127.0.0.1 port={} user=app password=app dbname=nope", p.port),
        "missing database refused",
    )
    .await;
    assert_eq!(nodb.as_db_error().map(|e| e.code().code()), Some("3D000"));
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn parse(sql: &str) -> Vec<u8> {
    msg(b'P', &[b"\0", sql.as_bytes(), b"\0\0\0"].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_arrives_in_pieces_runs_where_its_later_statements_can() {
    // asyncpg and psycopg's pipeline mode send Parse/Describe/Flush, wait for the answer,
    // then the rest of the unit. The rest may write: the unit must not sit on a replica.
    let c = common::cluster();
    let p = proxy().await;
    let t = common::table("pieces");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    let mut s = logged_in(p.port).await;
    let first = [parse("SELECT 1"), msg(b'D', b"S\0"), msg(b'H', b"")].concat();
    s.write_all(&first).await.unwrap();
    let (tags, _) = read_until(&mut s, b'T').await;
    assert_eq!(tags, b"1tT");
    let rest = [
        parse(&format!("INSERT INTO {t} VALUES (1)")),
        msg(b'B', b"\0\0\0\0\0\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat();
    s.write_all(&rest).await.unwrap();
    let (tags, body) = read_until(&mut s, b'Z').await;
    assert!(!tags.contains(&b'E'), "no error: {:?}", String::from_utf8_lossy(&tags));
    assert_eq!(body, b"I");
    let n: i64 = c.direct(0).await.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
}

fn named_parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat())
}

fn bind(stmt: &str) -> Vec<u8> {
    msg(b'B', &[b"\0", stmt.as_bytes(), b"\0\0\0\0\0\0\0"].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_copy_keeps_its_server_until_the_clients_sync() {
    // COPY through the extended protocol: the server ignores the Sync sent with the
    // Execute; the COPY's transaction ends only at the client's Sync after CopyDone.
    let c = common::cluster();
    let p = proxy().await;
    let t = common::table("xcopy");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    let mut s = logged_in(p.port).await;
    let start = [parse(&format!("COPY {t} FROM STDIN")), bind(""), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
    s.write_all(&start).await.unwrap();
    let (tags, _) = read_until(&mut s, b'G').await;
    assert_eq!(tags, b"12G");
    // Flush makes the server send CommandComplete without ending the unit.
    s.write_all(&[msg(b'd', b"7\n"), msg(b'c', b""), msg(b'H', b"")].concat()).await.unwrap();
    let (tags, _) = read_until(&mut s, b'C').await;
    assert_eq!(tags, b"C");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&msg(b'S', b"")).await.unwrap();
    let (_, status) = read_until(&mut s, b'Z').await;
    assert_eq!(status, b"I");
    let n: i64 = c.direct(0).await.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the copied row is committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_only_a_close_does_not_stick_to_a_replica() {
    let c = common::cluster();
    let p = proxy().await;
    let t = common::table("closeonly");
    c.direct(0).await.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    let mut s = logged_in(p.port).await;
    s.write_all(&[named_parse("ins", &format!("INSERT INTO {t} VALUES (1)")), msg(b'S', b"")].concat()).await.unwrap();
    read_until(&mut s, b'Z').await;
    // A read (to a replica) followed, in the same write, by the start of the next unit:
    // a Close with no Sync yet. The rest of that unit, which writes, comes later.
    let read = [parse("SELECT 1"), bind(""), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b""), msg(b'C', b"Sgone\0")];
    s.write_all(&read.concat()).await.unwrap();
    read_until(&mut s, b'Z').await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&[bind("ins"), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat()).await.unwrap();
    let (tags, _) = read_until(&mut s, b'Z').await;
    assert!(!tags.contains(&b'E'), "the write ran on the primary: {:?}", String::from_utf8_lossy(&tags));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_max_client_conn_are_refused_and_the_others_keep_working() {
    let p = proxy_with("[listen]\nmax_client_conn = 2\n").await;
    let (a, b) = (p.client().await, p.client().await);
    let (code, message) = common::refusal(&p.conninfo("app")).await;
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("max_client_conn = 2"), "{message}");
    for c in [&a, &b] {
        c.simple_query("SELECT 1").await.expect("the clients already in keep working");
    }
    // A client that leaves frees its place.
    drop(a);
    let back = common::connect_when_free(&p.conninfo("app")).await;
    back.simple_query("SELECT 1").await.expect("a place freed by a client that left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_and_per_database_client_limits_refuse_only_their_own() {
    let p = proxy_with("[listen]\nmax_user_client_conn = 1\nmax_db_client_conn = 2\n").await;
    let app = p.client().await;
    let (code, message) = common::refusal(&p.conninfo("app")).await;
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("max_user_client_conn = 1"), "{message}");
    // Another user of the same database gets in, up to the database's limit.
    let md5 = common::connect(&p.conninfo("app_md5")).await;
    let third = format!("host=127.0.0.1 port={} user=postgres dbname=app", p.port);
    let (code, message) = common::refusal(&third).await;
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("max_db_client_conn = 2"), "{message}");
    for c in [&app, &md5] {
        c.simple_query("SELECT 1").await.expect("the clients already in keep working");
    }
    drop(app);
    let back = common::connect_when_free(&p.conninfo("app")).await;
    back.simple_query("SELECT 1").await.expect("the user's place is free again once its client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_shutdown_lets_a_running_transaction_commit_and_ends_idle_sessions() {
    let p = proxy_with("[listen]\nshutdown_timeout = \"10s\"\n").await;
    let t = common::table("drain");
    let (idle, busy) = (p.client().await, p.client().await);
    busy.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    busy.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (1)")).await.unwrap();
    let during = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(common::try_connect(&p.conninfo("app")).await.is_err(), "a new client got in during shutdown");
        assert!(idle.simple_query("SELECT 1").await.is_err(), "an idle session outlived the shutdown");
        busy.batch_execute(&format!("INSERT INTO {t} VALUES (2); COMMIT")).await.expect("the transaction finishes");
    };
    let (left, ()) = tokio::join!(p.proxy.shutdown(), during);
    assert_eq!(left, 0, "every session ended at its transaction boundary");
    let direct = common::cluster().direct(0).await;
    let n: i64 = direct.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "what the transaction committed is there");
}
