//! The session against an in-memory client and scripted servers (`backend::fake`): no
//! sockets, no PostgreSQL. Each test runs a whole session (login, routing, forwarding,
//! replies) over a fake primary and a fake replica, and checks what the client got and
//! where each statement ran.
//!
//! No monitor runs: the nodes are published healthy once, and no replica's replay
//! position is ever learned, so a read that must see an acknowledged commit (the default
//! causal scope) goes to the primary after `causal_wait`.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::backend::fake::{self, Script};
use crate::classify::Classifier;
use crate::config::{Config, Role};
use crate::protocol::{self, BodyReader, Frame};
use crate::shared::Shared;
use crate::tls::ClientStream;
use crate::topology::{Published, Wal};

/// Fake nodes take ports from here, two per test (the registry is process-wide).
static NEXT_PORT: AtomicU16 = AtomicU16::new(40000);

struct Cluster {
    shared: Arc<Shared>,
    primary: Arc<Script>,
    replica: Arc<Script>,
}

fn cluster() -> Cluster {
    let port = NEXT_PORT.fetch_add(2, Ordering::Relaxed);
    let text = format!(
        "[[nodes]]\nname = \"primary\"\nhost = \"fake\"\nport = {port}\nrole = \"primary\"\n\
         [[nodes]]\nname = \"replica\"\nhost = \"fake\"\nport = {}\nrole = \"replica\"\n\
         [[users]]\nname = \"app\"\nauth = \"trust\"\n",
        port + 1
    );
    let config = Config::parse(&text, "test").expect("the test configuration parses");
    let live = Arc::new(arc_swap::ArcSwap::from_pointee(config));
    let shared = Arc::new(Shared::new(live, Arc::new(Classifier::new(1000))).expect("no TLS to load"));
    let (primary, replica) = (Arc::new(Script::default()), Arc::new(Script::standby()));
    fake::serve_node(port, primary.clone());
    fake::serve_node(port + 1, replica.clone());
    let wal = Wal { timeline: Some(1), ..Wal::default() };
    let node = |role| Published { role, usable: true, why: "ok", fresh_until: None, wal, lag: Some(Duration::ZERO) };
    shared.topology.publish_health(&[node(Role::Primary), node(Role::Replica)], false);
    Cluster { shared, primary, replica }
}

/// A logged-in client of a session running on `cluster`.
struct Client {
    io: DuplexStream,
    rbuf: BytesMut,
}

impl Client {
    async fn login(c: &Cluster) -> Client {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let shared = c.shared.clone();
        tokio::spawn(async move {
            super::run(ClientStream::Memory(theirs), shared, "app".into(), "app".into(), &[]).await;
        });
        let mut client = Client { io: ours, rbuf: BytesMut::new() };
        let greeting = client.replies(1).await;
        assert_eq!(greeting.last().map(String::as_str), Some("Z:I"), "the login ends ready: {greeting:?}");
        client
    }

    async fn send(&mut self, frames: &[Frame]) {
        let mut out = BytesMut::new();
        for f in frames {
            out.extend_from_slice(f.raw());
        }
        self.io.write_all(&out).await.expect("the session reads its client");
    }

    /// Replies up to the `units`-th ReadyForQuery, a CopyInResponse, or the end of the
    /// connection (`closed`), each as a short string: the tag, and `:` what matters of it.
    async fn replies(&mut self, units: usize) -> Vec<String> {
        let mut got = Vec::new();
        let mut readies = 0;
        while readies < units {
            let frame = loop {
                if let Ok(Some(f)) = protocol::split_frame(&mut self.rbuf, 1 << 20) {
                    break f;
                }
                let read = tokio::time::timeout(Duration::from_secs(10), self.io.read_buf(&mut self.rbuf)).await;
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => {
                        got.push("closed".into());
                        return got;
                    }
                }
            };
            readies += usize::from(frame.tag() == b'Z');
            got.push(show(&frame));
            if frame.tag() == b'G' {
                break;
            }
        }
        got
    }
}

fn show(f: &Frame) -> String {
    let mut r = BodyReader::new(f.body());
    match f.tag() {
        b'Z' => format!("Z:{}", f.body().first().map_or('?', |b| *b as char)),
        b'C' => format!("C:{}", r.cstr().unwrap_or("")),
        b'E' => format!("E:{}", protocol::error_fields(f.body()).0),
        b'S' => format!("S:{}", r.cstr().unwrap_or("")),
        b'D' => {
            let _ = r.i16();
            let len = r.i32().unwrap_or(-1);
            let value = usize::try_from(len).ok().and_then(|n| r.bytes(n).ok()).unwrap_or_default();
            format!("D:{}", String::from_utf8_lossy(value))
        }
        t => (t as char).to_string(),
    }
}

fn parse(sql: &str) -> Frame {
    protocol::build(b'P', |b| {
        b.put_u8(0);
        b.extend_from_slice(sql.as_bytes());
        b.put_u8(0);
        b.put_i16(0);
    })
}

fn bind() -> Frame {
    protocol::build(b'B', |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    })
}

fn execute() -> Frame {
    protocol::build(b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    })
}

/// Parse, Bind, Execute and Sync of one unnamed statement.
fn extended(sql: &str) -> Vec<Frame> {
    vec![parse(sql), bind(), execute(), protocol::sync()]
}

fn ran(script: &Script, sql: &str) -> bool {
    script.ran().iter().any(|s| s.eq_ignore_ascii_case(sql))
}

#[tokio::test]
async fn a_pipeline_of_reads_and_a_write_is_answered_in_order_each_where_it_belongs() {
    let c = cluster();
    let mut client = Client::login(&c).await;
    let pipeline: Vec<Frame> =
        ["SELECT 1", "INSERT INTO t VALUES (1)", "SELECT 2"].iter().flat_map(|s| extended(s)).collect();
    client.send(&pipeline).await;
    let got = client.replies(3).await;
    // The write's commit position is reported just before its ReadyForQuery.
    let write = ["1", "2", "C:INSERT 0 1", "S:pgroute.commit_lsn", "Z:I"];
    let want = [&["1", "2", "D:1", "C:SELECT 1", "Z:I"][..], &write, &["1", "2", "D:2", "C:SELECT 1", "Z:I"]].concat();
    assert_eq!(got, want);
    assert!(ran(&c.replica, "SELECT 1"), "the first read ran on the replica: {:?}", c.replica.ran());
    assert!(ran(&c.primary, "INSERT INTO t VALUES (1)"), "the write ran on the primary: {:?}", c.primary.ran());
    // No replica is known to have replayed the commit: the read after it goes where the
    // commit is (the default causal scope).
    assert!(ran(&c.primary, "SELECT 2"), "the read after the write ran on the primary: {:?}", c.primary.ran());
    assert!(!ran(&c.replica, "SELECT 2"));
}

#[tokio::test]
async fn an_error_mid_unit_skips_the_rest_of_the_unit_and_the_session_goes_on() {
    let c = cluster();
    let mut client = Client::login(&c).await;
    let unit = [parse("SELECT error"), bind(), execute(), parse("SELECT 1"), bind(), execute(), protocol::sync()];
    client.send(&unit).await;
    assert_eq!(client.replies(1).await, ["1", "2", "E:42703", "Z:I"]);
    client.send(&[protocol::query("SELECT 3")]).await;
    assert_eq!(client.replies(1).await, ["T", "D:3", "C:SELECT 1", "Z:I"]);
}

#[tokio::test]
async fn a_replica_lost_under_a_read_costs_that_read_only() {
    let c = cluster();
    let mut client = Client::login(&c).await;
    client.send(&[protocol::query("SELECT die")]).await;
    assert_eq!(client.replies(1).await, ["E:08006", "Z:I"]);
    assert!(ran(&c.replica, "SELECT die"), "the read ran on the replica: {:?}", c.replica.ran());
    client.send(&[protocol::query("SELECT 4")]).await;
    assert_eq!(client.replies(1).await, ["T", "D:4", "C:SELECT 1", "Z:I"]);
}

#[tokio::test]
async fn copy_from_stdin_runs_on_the_primary_and_ends_with_its_answer() {
    let c = cluster();
    let mut client = Client::login(&c).await;
    client.send(&[protocol::query("COPY t FROM STDIN")]).await;
    assert_eq!(client.replies(1).await, ["G"]);
    let data = |row: &str| protocol::build(b'd', |b| b.extend_from_slice(row.as_bytes()));
    client.send(&[data("1\n"), data("2\n"), protocol::build(b'c', |_| {})]).await;
    assert_eq!(client.replies(1).await, ["C:COPY 2", "Z:I"]);
    assert!(ran(&c.primary, "COPY t FROM STDIN"));
    assert!(!ran(&c.replica, "COPY t FROM STDIN"));
}

/// BEGIN, a write, then a COMMIT whose connection dies: `die_on` picks the moment.
async fn commit_dying_on(die_on: &str) -> (Cluster, Client, Vec<String>) {
    let c = cluster();
    let mut client = Client::login(&c).await;
    client.send(&[protocol::query("BEGIN")]).await;
    assert_eq!(client.replies(1).await, ["C:BEGIN", "Z:T"]);
    client.send(&[protocol::query("INSERT INTO t VALUES (1)")]).await;
    assert_eq!(client.replies(1).await, ["C:INSERT 0 1", "Z:T"]);
    if let Ok(mut d) = c.primary.die_on.lock() {
        *d = Some(die_on.into());
    }
    client.send(&[protocol::query("COMMIT")]).await;
    let got = client.replies(1).await;
    if let Ok(mut d) = c.primary.die_on.lock() {
        *d = None;
    }
    (c, client, got)
}

#[tokio::test]
async fn a_commit_whose_connection_died_after_it_took_effect_gets_its_own_answer() {
    let (_c, mut client, got) = commit_dying_on("commit").await;
    assert_eq!(got, ["C:COMMIT", "Z:I"], "txid_status on the primary says committed");
    client.send(&[protocol::query("SELECT 5")]).await;
    assert_eq!(client.replies(1).await, ["T", "D:5", "C:SELECT 1", "Z:I"], "the session goes on");
}

#[tokio::test]
async fn a_commit_whose_transaction_id_was_never_learned_is_reported_unknown() {
    // The connection dies at pgroute's own id query in front of the COMMIT: nothing tells
    // whether the COMMIT ran, so the client is told exactly that (40003), never a guess.
    let (c, _client, got) = commit_dying_on("txid_current_if_assigned").await;
    assert_eq!(got, ["E:40003", "closed"]);
    assert!(!ran(&c.primary, "COMMIT"), "the COMMIT never reached the server");
}
