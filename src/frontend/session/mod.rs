//! One client session after login: the loop that moves frames between the client and
//! the server connection its current statement or transaction runs on.
//!
//! Messages from the client are queued and consumed in *units*: a simple Query, a
//! FunctionCall, or extended-protocol messages up to Sync. A unit is routed before its
//! first message is forwarded (`route`), its messages are forwarded with prepared
//! statements mapped to server names (`forward`), and the server's replies stream back
//! (`reply`). The server connection is released to its pool when the last unit's
//! ReadyForQuery says idle (`I`) and nothing is in flight; it is never switched while the
//! transaction status is `T` or `E`.

mod forward;
mod reply;
mod route;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::prepared::Prepared;
use super::settings::Settings;
use super::Shared;
use crate::backend::Checked;
use crate::cancel;
use crate::classify::{Class, SettingChange};
use crate::metrics;
use crate::protocol::{self, split_frame, sqlstate, Frame, PgError};

/// What a server reply to a message pgroute forwarded or injected should become.
#[derive(Debug)]
enum Expect {
    /// ParseComplete; `hash` of a named statement, forgotten by the connection if the
    /// Parse fails.
    Parse {
        forward: bool,
        hash: Option<u64>,
    },
    Close {
        forward: bool,
    },
    /// ReadyForQuery closing a unit; the settings its statements change. `sync` tells a
    /// Sync's from a Query's or FunctionCall's (a server in COPY IN ignores Syncs).
    /// `wrote`: the unit was routed as a write (read-your-writes).
    Ready {
        changes: Vec<SettingChange>,
        sync: bool,
        wrote: bool,
        /// Tagged keys of the unit's writes, recorded if it commits.
        keys: Vec<String>,
    },
}

/// Stop reading from a client that has this much buffered and unprocessed...
const CLIENT_BACKLOG: usize = 1 << 20;
/// ... or this many complete messages waiting (pipelined behind a busy server).
const MAX_QUEUED_FRAMES: usize = 4096;

pub struct Session {
    shared: Arc<Shared>,
    client_rd: OwnedReadHalf,
    client_wr: OwnedWriteHalf,
    user: String,
    database: String,
    /// As last reported by a server (it follows SET application_name), for rules.
    application_name: String,
    crbuf: BytesMut,
    /// Bytes for the client, written after each batch of server frames.
    cwbuf: BytesMut,
    /// Bytes for the active server, written after each batch of client frames.
    swbuf: BytesMut,
    inq: VecDeque<Frame>,
    settings: Settings,
    statements: HashMap<String, Arc<Prepared>>,
    unnamed: Option<Arc<Prepared>>,
    /// Server connections held, by node index (one at most in transaction mode, outside
    /// a pin).
    held: Vec<Option<Checked>>,
    /// The node whose connection receives the client's messages now.
    active: Option<usize>,
    expect: VecDeque<Expect>,
    /// Units sent whose ReadyForQuery has not come back.
    in_flight: usize,
    /// Transaction status from the last ReadyForQuery.
    tx_status: u8,
    /// A unit's first message was forwarded and its end (Sync) not yet.
    unit_open: bool,
    /// The active server is in COPY IN: it ignores Sync until CopyDone/CopyFail.
    copy_in: bool,
    /// Classes computed while routing, consumed in order by `forward` for Q and P.
    unit_classes: VecDeque<Arc<Class>>,
    /// Settings changed by the statements of the open unit.
    unit_changes: Vec<SettingChange>,
    /// Settings changed inside the open transaction block: kept only if it commits.
    tx_changes: Vec<SettingChange>,
    unit_error: bool,
    saw_commit: bool,
    saw_rollback: bool,
    /// After a routing error inside an extended-protocol unit: drop messages until Sync.
    skip_to_sync: bool,
    /// Why the session is pinned to the primary, if it is.
    pinned: Option<String>,
    /// The unit being forwarded was routed as a write.
    unit_wrote: bool,
    /// The open transaction block ran a write.
    tx_wrote: bool,
    /// Tagged keys of the unit being forwarded, and of the open transaction's writes.
    unit_keys: Vec<String>,
    tx_keys: Vec<String>,
    /// Read-your-writes: when the session's last write committed, and the primary LSN
    /// known to be at or past it (from the first probe begun after the commit).
    dirty_since: Option<std::time::Instant>,
    commit_lsn: Option<(u64, Option<u32>)>,
    cancel: Arc<cancel::Handle>,
    pid: i32,
}

/// How a session ends.
enum End {
    /// The client said goodbye or went away.
    Client,
    /// Tell the client this, then close.
    Fatal(PgError),
}

pub async fn run(stream: TcpStream, shared: Arc<Shared>, user: String, database: String, params: &[(String, String)]) {
    let (pid, secret, cancel) = shared.cancels.register();
    let (client_rd, client_wr) = stream.into_split();
    let nodes = shared.topology.snapshot().nodes.len();
    let mut s = Session {
        client_rd,
        client_wr,
        user,
        database,
        application_name: params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        crbuf: BytesMut::with_capacity(16 * 1024),
        cwbuf: BytesMut::with_capacity(16 * 1024),
        swbuf: BytesMut::with_capacity(16 * 1024),
        inq: VecDeque::new(),
        settings: Settings::from_startup(params),
        statements: HashMap::new(),
        unnamed: None,
        held: (0..nodes).map(|_| None).collect(),
        active: None,
        expect: VecDeque::new(),
        in_flight: 0,
        tx_status: b'I',
        unit_open: false,
        copy_in: false,
        unit_classes: VecDeque::new(),
        unit_changes: Vec::new(),
        tx_changes: Vec::new(),
        unit_error: false,
        saw_commit: false,
        saw_rollback: false,
        skip_to_sync: false,
        pinned: None,
        unit_wrote: false,
        tx_wrote: false,
        unit_keys: Vec::new(),
        tx_keys: Vec::new(),
        dirty_since: None,
        commit_lsn: None,
        cancel,
        pid,
        shared,
    };
    let end = match s.greet(secret, params).await {
        Ok(()) => s.main_loop().await,
        Err(e) => End::Fatal(e),
    };
    if let End::Fatal(e) = end {
        metrics::client_error(&e.code);
        let _ = s.client_wr.write_all(e.to_frame().raw()).await;
    }
    s.close();
}

impl Session {
    /// Finishes the login: the server's parameters as this client's startup settings make
    /// them, our own key data, ReadyForQuery. The parameters come from the first primary
    /// connection of this (user, database), so a login does not wait for a pool.
    async fn greet(&mut self, secret: i32, startup: &[(String, String)]) -> Result<(), PgError> {
        let reported = match self.shared.pools.login_params(&self.user, &self.database) {
            Some(p) => p,
            None => {
                let snapshot = self.shared.topology.snapshot();
                let node = snapshot.primary(std::time::Instant::now()).ok_or_else(|| {
                    PgError::fatal(sqlstate::CONNECTION_FAILURE, "pgroute: no primary available")
                        .with_hint(format!("Node states: {}.", snapshot.describe()))
                })?;
                self.attach(node).await?;
                let conn = self.held[node].as_ref().ok_or_else(internal)?;
                let p = conn.params.clone();
                self.maybe_release();
                p
            }
        };
        for (name, value) in &reported {
            let own = startup.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            let f = protocol::parameter_status(name, own.unwrap_or(value));
            self.cwbuf.extend_from_slice(f.raw());
        }
        self.cwbuf.extend_from_slice(protocol::backend_key_data(self.pid, secret).raw());
        self.cwbuf.extend_from_slice(protocol::ready_for_query(b'I').raw());
        self.flush_client().await.map_err(|_| PgError::fatal(sqlstate::CONNECTION_FAILURE, "client went away"))
    }

    async fn main_loop(&mut self) -> End {
        loop {
            let read_client = self.crbuf.len() < CLIENT_BACKLOG && self.inq.len() < MAX_QUEUED_FRAMES;
            let server = match self.active {
                Some(n) => self.held[n].as_mut(),
                None => None,
            };
            tokio::select! {
                r = self.client_rd.read_buf(&mut self.crbuf), if read_client => {
                    match r {
                        Ok(0) | Err(_) => return End::Client,
                        Ok(_) => {}
                    }
                    if let Err(end) = self.on_client_bytes().await {
                        return end;
                    }
                }
                r = read_server(server) => {
                    let node = self.active.unwrap_or_default();
                    match r {
                        Ok(0) | Err(_) => return End::Fatal(self.server_lost(node)),
                        Ok(_) => {}
                    }
                    if let Err(end) = self.on_server_bytes().await {
                        return end;
                    }
                }
            }
        }
    }

    /// Splits complete client frames off the buffer, then routes and forwards them.
    async fn on_client_bytes(&mut self) -> Result<(), End> {
        let max = self.shared.config.listen.max_message_size;
        loop {
            match split_frame(&mut self.crbuf, max) {
                Ok(Some(f)) => self.inq.push_back(f),
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        protocol::FrameError::TooLong { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        protocol::FrameError::BadLength(_) => sqlstate::PROTOCOL_VIOLATION,
                    };
                    return Err(End::Fatal(PgError::fatal(code, format!("pgroute: {e}"))));
                }
            }
        }
        self.pump().await
    }

    /// Processes queued client frames as far as routing allows, then writes.
    async fn pump(&mut self) -> Result<(), End> {
        let result = self.process_queue().await;
        self.flush_server().await?;
        self.flush_client().await.map_err(|_| End::Client)?;
        result
    }

    async fn on_server_bytes(&mut self) -> Result<(), End> {
        self.process_server_frames()?;
        self.flush_client().await.map_err(|_| End::Client)?;
        if self.active.is_none() || self.in_flight == 0 {
            // The server finished: queued client units may proceed now.
            self.pump().await?;
        }
        Ok(())
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        if !self.cwbuf.is_empty() {
            self.client_wr.write_all(&self.cwbuf).await?;
            self.cwbuf.clear();
        }
        Ok(())
    }

    async fn flush_server(&mut self) -> Result<(), End> {
        if self.swbuf.is_empty() {
            return Ok(());
        }
        let Some(node) = self.active else {
            self.swbuf.clear();
            return Ok(());
        };
        let Some(conn) = self.held[node].as_mut() else {
            return Err(End::Fatal(internal()));
        };
        if conn.stream.write_all(&self.swbuf).await.is_err() {
            return Err(End::Fatal(self.server_lost(node)));
        }
        self.swbuf.clear();
        Ok(())
    }

    /// The server connection died under the client: its connection is dropped (the pool
    /// opens a fresh one later) and the client is told and disconnected. A transaction in
    /// progress there is lost, and continuing the session could let a later COMMIT look
    /// successful, so the session ends.
    fn server_lost(&mut self, node: usize) -> PgError {
        self.held[node] = None;
        self.active = None;
        let name = &self.shared.topology.addr(node).name;
        tracing::warn!(node = %name, "server connection lost during a query");
        PgError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: connection to node {name} lost during the query"),
        )
        .with_hint("The transaction, if any, was not committed by pgroute's knowledge; reconnect and retry.")
    }

    /// Returns held connections: clean ones to their pools, the rest closed.
    fn close(&mut self) {
        self.shared.cancels.unregister(self.pid);
        let clean = self.in_flight == 0 && self.tx_status == b'I' && self.pinned.is_none() && !self.unit_open;
        for slot in self.held.iter_mut() {
            if let Some(c) = slot.take() {
                c.release(clean);
            }
        }
    }
}

async fn read_server(conn: Option<&mut Checked>) -> std::io::Result<usize> {
    match conn {
        Some(c) => {
            let c = &mut **c;
            c.stream.read_buf(&mut c.rbuf).await
        }
        None => std::future::pending().await,
    }
}

fn internal() -> PgError {
    PgError::fatal(sqlstate::INTERNAL_ERROR, "pgroute: internal error: no server connection for the active node")
}
