//! A scripted PostgreSQL server for the session's unit tests: no sockets, no PostgreSQL.
//!
//! A node whose host is `fake` is served in memory by the [`Script`] registered under its
//! port ([`serve_node`]). It speaks enough of the v3 protocol to be a session's server:
//! trust login, simple and extended queries, transaction status, errors that skip to Sync,
//! COPY FROM STDIN, and a handful of statements (numbers, `BEGIN`/`COMMIT`/`ROLLBACK`,
//! `INSERT`, `SET`, pgroute's own queries). A statement whose text contains the script's
//! `die_on` text closes the connection instead of answering (after a COMMIT took effect).
//! Every statement run is logged, so a test can tell where each one ran.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::protocol::{self, sqlstate, BodyReader, Frame, PgError};
use crate::tls::ServerStream;
use crate::topology::NodeAddr;

/// How one fake node behaves, and what it was asked.
#[derive(Default)]
pub struct Script {
    /// Reported as `in_hot_standby`.
    pub standby: bool,
    /// A statement containing this text (lower case) drops the connection unanswered.
    pub die_on: Mutex<Option<String>>,
    /// Statements run, in order.
    pub log: Mutex<Vec<String>>,
    /// Transaction ids that committed here.
    committed: Mutex<HashSet<u64>>,
    next_xid: std::sync::atomic::AtomicU64,
}

impl Script {
    /// A node that reports itself a standby.
    pub fn standby() -> Self {
        Script { standby: true, ..Script::default() }
    }

    pub fn ran(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn servers() -> &'static Mutex<HashMap<u16, Arc<Script>>> {
    static SERVERS: OnceLock<Mutex<HashMap<u16, Arc<Script>>>> = OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

/// Serves the node `fake:<port>` with `script` from now on.
pub fn serve_node(port: u16, script: Arc<Script>) {
    if let Ok(mut s) = servers().lock() {
        s.insert(port, script);
    }
}

/// A connection to the fake node `addr` names, if it is one.
pub fn connect(addr: &NodeAddr) -> Option<ServerStream> {
    if addr.host != "fake" {
        return None;
    }
    let script = servers().lock().ok()?.get(&addr.port)?.clone();
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let mut conn = Conn {
            script,
            io: theirs,
            rbuf: BytesMut::new(),
            out: BytesMut::new(),
            status: b'I',
            xid: None,
            skipping: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
            copy: None,
            copied: 0,
        };
        let _ = conn.serve().await;
    });
    Some(ServerStream::Memory(ours))
}

/// What a statement does.
enum Outcome {
    Rows(Vec<Vec<Option<String>>>, String),
    Done(String),
    Error(&'static str, String),
    CopyIn,
    Die,
}

struct Conn {
    script: Arc<Script>,
    io: DuplexStream,
    rbuf: BytesMut,
    out: BytesMut,
    status: u8,
    xid: Option<u64>,
    skipping: bool,
    statements: HashMap<String, String>,
    portals: HashMap<String, String>,
    /// In COPY IN, and whether a simple Query began it (then its end sends ReadyForQuery).
    copy: Option<bool>,
    copied: usize,
}

impl Conn {
    async fn serve(&mut self) -> std::io::Result<()> {
        // The startup packet: its length, then the rest.
        let len = self.io.read_i32().await?;
        let mut startup = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
        self.io.read_exact(&mut startup).await?;
        self.put(protocol::build(b'R', |b| b.put_i32(0)));
        for (name, value) in [
            ("server_version", "15.0"),
            ("client_encoding", "UTF8"),
            ("standard_conforming_strings", "on"),
            ("in_hot_standby", if self.script.standby { "on" } else { "off" }),
        ] {
            self.put(protocol::parameter_status(name, value));
        }
        self.put(protocol::backend_key_data(4242, 1));
        self.put(protocol::ready_for_query(b'I'));
        self.flush().await?;
        loop {
            let Some(frame) = self.read_frame().await? else { return Ok(()) };
            if !self.message(&frame) {
                // Dropped unanswered, as a server that died.
                return Ok(());
            }
            self.flush().await?;
        }
    }

    async fn read_frame(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if let Ok(Some(f)) = protocol::split_frame(&mut self.rbuf, 1 << 20) {
                return Ok(Some(f));
            }
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    fn put(&mut self, f: Frame) {
        self.out.extend_from_slice(f.raw());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let out = self.out.split();
        self.io.write_all(&out).await
    }

    /// Handles one message; false when the connection is to die.
    fn message(&mut self, f: &Frame) -> bool {
        let mut r = BodyReader::new(f.body());
        if self.copy.is_some() {
            return self.copy_message(f.tag());
        }
        if self.skipping && f.tag() != b'S' {
            return true;
        }
        match f.tag() {
            b'Q' => {
                let sql = r.cstr().unwrap_or("").to_string();
                self.query(&sql)
            }
            b'P' => {
                let (name, sql) = (r.cstr().unwrap_or("").to_string(), r.cstr().unwrap_or("").to_string());
                if !name.is_empty() && self.statements.contains_key(&name) {
                    let msg = format!("prepared statement \"{name}\" already exists");
                    return self.fail("42P05", msg);
                }
                self.statements.insert(name, sql);
                self.put(protocol::build(b'1', |_| {}));
                true
            }
            b'B' => {
                let (portal, name) = (r.cstr().unwrap_or("").to_string(), r.cstr().unwrap_or("").to_string());
                let Some(sql) = self.statements.get(&name).cloned() else {
                    return self.fail("26000", format!("prepared statement \"{name}\" does not exist"));
                };
                self.portals.insert(portal, sql);
                self.put(protocol::build(b'2', |_| {}));
                true
            }
            b'E' => {
                let portal = r.cstr().unwrap_or("").to_string();
                let Some(sql) = self.portals.get(&portal).cloned() else {
                    return self.fail("34000", format!("portal \"{portal}\" does not exist"));
                };
                self.execute(&sql, false)
            }
            b'D' => {
                self.put(protocol::build(b'n', |_| {}));
                true
            }
            b'C' => {
                let kind = r.bytes(1).ok().and_then(|b| b.first().copied());
                let name = r.cstr().unwrap_or("").to_string();
                if kind == Some(b'S') {
                    self.statements.remove(&name);
                } else {
                    self.portals.remove(&name);
                }
                self.put(protocol::build(b'3', |_| {}));
                true
            }
            b'S' => {
                self.skipping = false;
                self.end_implicit();
                self.put(protocol::ready_for_query(self.status));
                true
            }
            _ => true,
        }
    }

    fn copy_message(&mut self, tag: u8) -> bool {
        let simple = self.copy.unwrap_or(false);
        match tag {
            b'd' => self.copied += 1,
            b'c' => {
                self.copy = None;
                let tag = format!("COPY {}", std::mem::take(&mut self.copied));
                self.put(protocol::build(b'C', |b| put_cstr(b, &tag)));
                if simple {
                    self.put(protocol::ready_for_query(self.status));
                }
            }
            b'f' => {
                self.copy = None;
                self.copied = 0;
                self.put(PgError::error("57014", "COPY from stdin failed").to_frame());
                if simple {
                    self.put(protocol::ready_for_query(self.status));
                } else {
                    self.skipping = true;
                }
            }
            // Sync and Flush are ignored in COPY IN, as PostgreSQL does.
            _ => {}
        }
        true
    }

    /// A simple Query: its statements in one implicit transaction (unless in a block).
    fn query(&mut self, sql: &str) -> bool {
        let statements: Vec<&str> = sql.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
        if statements.is_empty() {
            self.put(protocol::build(b'I', |_| {}));
        }
        for s in statements {
            let before = self.out.len();
            if !self.execute(s, true) {
                return false;
            }
            if self.copy.is_some() {
                return true;
            }
            if self.out[before..].first() == Some(&b'E') {
                self.skipping = false;
                break;
            }
        }
        self.end_implicit();
        self.put(protocol::ready_for_query(self.status));
        true
    }

    /// Runs one statement; `described`: the answer starts with a RowDescription.
    fn execute(&mut self, sql: &str, described: bool) -> bool {
        if let Ok(mut log) = self.script.log.lock() {
            log.push(sql.to_string());
        }
        let outcome = if self.status == b'E' && !is_end(sql) {
            Outcome::Error(sqlstate::IN_FAILED_SQL_TRANSACTION, "current transaction is aborted".into())
        } else {
            self.outcome(sql)
        };
        let dies =
            self.script.die_on.lock().ok().and_then(|d| d.clone()).is_some_and(|d| sql.to_lowercase().contains(&d));
        match outcome {
            _ if dies => return false,
            Outcome::Die => return false,
            Outcome::Rows(rows, tag) => {
                if described {
                    let columns = rows.first().map_or(1, Vec::len);
                    self.put(row_description(columns));
                }
                for row in &rows {
                    self.put(data_row(row));
                }
                self.put(protocol::build(b'C', |b| put_cstr(b, &tag)));
            }
            Outcome::Done(tag) => self.put(protocol::build(b'C', |b| put_cstr(b, &tag))),
            Outcome::Error(code, message) => return self.fail(code, message),
            Outcome::CopyIn => {
                self.copy = Some(described);
                self.put(protocol::build(b'G', |b| {
                    b.put_u8(0);
                    b.put_i16(0);
                }));
            }
        }
        true
    }

    fn fail(&mut self, code: &str, message: String) -> bool {
        self.put(PgError::error(code, message).to_frame());
        if self.status == b'T' {
            self.status = b'E';
        }
        self.skipping = true;
        true
    }

    /// Outside a block, a unit's statements commit at its end.
    fn end_implicit(&mut self) {
        if self.status == b'I' {
            if let Some(xid) = self.xid.take() {
                if let Ok(mut c) = self.script.committed.lock() {
                    c.insert(xid);
                }
            }
        }
    }

    fn outcome(&mut self, sql: &str) -> Outcome {
        let lower = sql.to_lowercase();
        let one = |v: Option<String>| Outcome::Rows(vec![vec![v]], "SELECT 1".into());
        match lower.as_str() {
            "begin" | "start transaction" => {
                self.status = b'T';
                Outcome::Done("BEGIN".into())
            }
            "commit" | "end" => {
                let tag = if self.status == b'E' { "ROLLBACK" } else { "COMMIT" };
                if self.status == b'T' {
                    self.status = b'I';
                    self.end_implicit();
                }
                self.status = b'I';
                self.xid = None;
                Outcome::Done(tag.into())
            }
            "rollback" => {
                self.status = b'I';
                self.xid = None;
                Outcome::Done("ROLLBACK".into())
            }
            "select die" => Outcome::Die,
            "select error" => Outcome::Error("42703", "column \"error\" does not exist".into()),
            "select pg_current_wal_insert_lsn()" => one(Some("0/3000060".into())),
            "select pg_last_wal_replay_lsn()" => one(None),
            _ if lower.contains("current_setting('default_transaction_isolation')") => {
                one(Some("read committed".into()))
            }
            _ if lower.starts_with("select txid_current_if_assigned()") => Outcome::Rows(
                vec![vec![self.xid.map(|x| x.to_string()), Some("0/3000060".into()), None]],
                "SELECT 1".into(),
            ),
            _ if lower.starts_with("select txid_status(") => {
                let xid = lower.trim_start_matches("select txid_status(").trim_end_matches(')').parse::<u64>().ok();
                let committed = xid.is_some_and(|x| self.script.committed.lock().is_ok_and(|c| c.contains(&x)));
                one(Some(if committed { "committed" } else { "aborted" }.into()))
            }
            _ if lower.starts_with("insert") => {
                if self.xid.is_none() {
                    self.xid = Some(self.script.next_xid.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 700);
                }
                Outcome::Done("INSERT 0 1".into())
            }
            _ if lower.starts_with("set ") => Outcome::Done("SET".into()),
            _ if lower.starts_with("reset ") => Outcome::Done("RESET".into()),
            _ if lower.starts_with("copy ") && lower.ends_with("from stdin") => Outcome::CopyIn,
            _ => match lower.strip_prefix("select ").map(str::parse::<i64>) {
                Some(Ok(n)) => one(Some(n.to_string())),
                _ => Outcome::Error(sqlstate::FEATURE_NOT_SUPPORTED, format!("fake server: no script for {sql:?}")),
            },
        }
    }
}

fn is_end(sql: &str) -> bool {
    matches!(sql.to_lowercase().as_str(), "commit" | "end" | "rollback")
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.put_u8(0);
}

fn row_description(columns: usize) -> Frame {
    protocol::build(b'T', |b| {
        b.put_i16(i16::try_from(columns).unwrap_or(1));
        for _ in 0..columns {
            put_cstr(b, "c");
            b.put_i32(0);
            b.put_i16(0);
            b.put_i32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    })
}

fn data_row(values: &[Option<String>]) -> Frame {
    protocol::build(b'D', |b| {
        b.put_i16(i16::try_from(values.len()).unwrap_or(0));
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(0));
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    })
}
