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

mod causal;
mod commit_lsn;
mod forward;
mod held;
mod in_doubt;
mod ledger;
mod local;
mod own_statements;
mod reply;
mod route;
mod rule_timeout;
mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::tls::{ClientRead, ClientStream, ClientWrite};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prepared::Prepared;
use super::settings::Settings;
use super::Shared;
use crate::backend::{Checked, LoginParams};
use crate::cancel;
use crate::classify::{Class, Dialect, Step};
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
        /// The client's statement name it creates: forgotten if the Parse fails or is
        /// skipped after an error.
        name: Option<String>,
    },
    /// CloseComplete; `closed`: the client's statement it closes, restored if the server
    /// skips the Close after an error.
    Close { forward: bool, closed: Option<(String, Arc<Prepared>)> },
    /// The end of one statement: CommandComplete, EmptyQueryResponse, PortalSuspended or
    /// FunctionCallResponse, or the ErrorResponse that stops its unit. `class.steps[index]`
    /// is what it does to the session (settled by the `ledger`); `writes`: it counts as a
    /// data write for read-your-writes, under the tagged `keys`.
    Statement { class: Arc<Class>, index: usize, writes: bool, keys: Vec<String> },
    /// ReadyForQuery closing a unit. `sync` tells a Sync's from a Query's or
    /// FunctionCall's (a server in COPY IN ignores Syncs).
    Ready {
        sync: bool,
        /// Client statement names the unit's Bind and Describe messages used, in order:
        /// an error naming a server statement that several client names share is shown
        /// with the one the unit used.
        names: Vec<String>,
        /// The first part of a split Query (see `route::split_transaction_end`): its
        /// ReadyForQuery is not the client's, unless the part failed.
        split: bool,
        /// A unit of pgroute's own, and which: nothing of it, errors included, reaches
        /// the client or settles anything.
        own: Option<Own>,
        /// A client unit that may commit a data write: in doubt if its connection dies
        /// before this ReadyForQuery (`in_doubt`).
        commits: bool,
        /// When it was forwarded (`SHOW STATS` time per node).
        sent: std::time::Instant,
    },
}

/// pgroute's own units on a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Own {
    /// Statements prepared where a transaction begins (`forward::prepare_for_transaction`).
    Prepare,
    /// The commit-position query behind a committing unit (`commit_lsn`): its row is read.
    Position,
    /// The transaction id asked for in front of a COMMIT (`in_doubt`): its row is read.
    Xid,
    /// A rule's `statement_timeout` set in front of a unit, or the client's own value put
    /// back behind it (`rule_timeout`).
    Timeout,
    /// Every statement dropped in front of a read of `pg_prepared_statements`
    /// (`own_statements`).
    Forget,
}

impl Expect {
    fn step(class: &Class, index: usize) -> &Step {
        static NONE: Step = Step { tx: crate::classify::TxOp::None, settings: Vec::new(), writes_data: false };
        class.steps.get(index).unwrap_or(&NONE)
    }
}

/// SQLSTATE 57P01, admin_shutdown: what PostgreSQL sends its sessions on a smart shutdown.
const ADMIN_SHUTDOWN: &str = "57P01";

/// Stop reading from a client that has this many bytes of complete messages queued...
const CLIENT_BACKLOG: usize = 1 << 20;
/// ... or this many complete messages waiting (pipelined behind a busy server).
const MAX_QUEUED_FRAMES: usize = 4096;

/// A statement Parsed earlier in the unit being scanned: (name, class, text).
type ParsedHere = (String, Arc<Class>, Bytes);

pub struct Session {
    shared: Arc<Shared>,
    client_rd: ClientRead,
    client_wr: ClientWrite,
    user: Arc<str>,
    database: Arc<str>,
    /// As last reported by a server (it follows SET application_name), for rules.
    application_name: String,
    crbuf: BytesMut,
    /// Bytes for the client, written after each batch of server frames.
    cwbuf: BytesMut,
    /// Bytes for the active server, written after each batch of client frames.
    swbuf: BytesMut,
    inq: VecDeque<Frame>,
    /// Bytes of the frames in `inq`.
    queued_bytes: usize,
    settings: Settings,
    /// How the server reads this client's SQL text: `standard_conforming_strings` and
    /// `client_encoding`, as the server last reported them.
    dialect: Dialect,
    encoding: super::encoding::Encoding,
    statements: HashMap<String, Arc<Prepared>>,
    unnamed: Option<Arc<Prepared>>,
    /// Server connections held, by node index (one at most in transaction mode, outside
    /// a pin).
    held: held::Held,
    /// The node whose connection receives the client's messages now.
    active: Option<usize>,
    /// That node was a replica when attached: a transaction on it began there as a read.
    active_for_reads: bool,
    expect: VecDeque<Expect>,
    /// Units sent whose ReadyForQuery has not come back.
    in_flight: usize,
    /// Transaction status from the last ReadyForQuery.
    tx_status: u8,
    /// How the client's messages are being read (see `state`).
    intake: state::Intake,
    /// The active server is in COPY IN: it ignores Sync until CopyDone/CopyFail.
    copy_in: bool,
    /// Classes computed while routing, consumed in order by `forward` for Q and P.
    unit_classes: VecDeque<Arc<Class>>,
    /// Portals bound in the open transaction, with their statement's class (an Execute
    /// runs one statement of that class).
    portals: Vec<(String, Arc<Class>)>,
    /// What the statements sent did to the session, settled as their replies arrive.
    ledger: ledger::Ledger,
    /// Why the session is pinned to the primary, if it is.
    pinned: Option<String>,
    /// The login's `default_transaction_isolation` (role, database, startup defaults) is
    /// serializable: unless the session sets another, its reads need the primary.
    login_serializable: bool,
    /// The unit being forwarded became a write only when its functions were looked up:
    /// each of its statements counts as a data write.
    unit_forced_write: bool,
    /// The unit being routed runs under its rule's `statement_timeout` (milliseconds),
    /// set once its server is attached (`rule_timeout`).
    unit_timeout: Option<std::num::NonZeroU32>,
    /// A rule's `statement_timeout` is in force on the active server: the client's own
    /// value goes back at the unit's end.
    restore_timeout: bool,
    /// The unit being routed was placed by a rule with `reserve = true`: a connection it
    /// needs may come from `[pool] reserve`.
    unit_reserve: bool,
    /// The causal scope of the unit being routed, when it is a read the read rules place.
    unit_scope: Option<crate::config::CausalScope>,
    /// Tagged keys of the unit being forwarded.
    unit_keys: Vec<String>,
    /// Tagged keys of the commit whose position query is in flight, and the time they
    /// were recorded with.
    keys_awaiting_position: Option<(Vec<String>, std::time::Instant)>,
    /// Client statement names its Bind and Describe messages used.
    unit_names: Vec<String>,
    /// What the unit being forwarded may commit (`commit_lsn`).
    unit_commits: commit_lsn::UnitCommits,
    /// The unit whose commit would be in doubt if its connection died (`in_doubt`).
    doubt: in_doubt::Doubt,
    /// Since when the primary has refused the connections the next unit asked for.
    primary_refused_since: Option<std::time::Instant>,
    /// The server of the client's open transaction died while nothing was in flight: the
    /// client's next message gets this error (`in_doubt`), and the session ends.
    lost_transaction: Option<Box<PgError>>,
    /// A place under a rule's `max_concurrent`, held until the session is idle outside a
    /// transaction (one at most: a session counts once). Boxed: rare.
    place: Option<Box<crate::rules::Admitted>>,
    /// A commit-position query is in flight: reads wait for its answer.
    lsn_pending: bool,
    /// Its answer: the LSN and the node's timeline.
    lsn_answer: Option<(u64, Option<u32>)>,
    /// The unit before it committed a data write: the answer is this session's position.
    lsn_for_commit: bool,
    /// The client's ReadyForQuery, held until the position query behind its unit answers.
    held_ready: Option<Frame>,
    /// The unit's answer from its first CommandComplete, held with it (`holding_ack`:
    /// frames go here now).
    held_ack: BytesMut,
    holding_ack: bool,
    /// `scan_unit`'s buffers: statements parsed in the unit, distinct classes seen.
    scan_scratch: (Vec<ParsedHere>, Vec<Arc<Class>>),
    /// The Query being forwarded is the first part of a split one; the rest waits here
    /// for the first part's answer, with the characters of the first part.
    split_rest: Option<(Frame, u32)>,
    /// The rest of a split Query is being answered: its error positions are counted from
    /// where it began in the client's text, this many characters in.
    rest_offset: Option<u32>,
    splitting: bool,
    /// ParameterStatus reports of a split Query's first part, held for the client's
    /// ReadyForQuery (where one server would have sent them).
    held_reports: Vec<Frame>,
    /// An ErrorResponse came since the last ReadyForQuery.
    failed_since_ready: bool,
    /// Read-your-writes: when the session's last write committed, and the primary LSN
    /// known to be at or past it (from the first probe begun after the commit).
    dirty_since: Option<std::time::Instant>,
    commit_lsn: Option<(u64, Option<u32>)>,
    cancel: Arc<cancel::Handle>,
    pid: i32,
    /// Tells when pgroute starts shutting down; `draining` once it has: the session ends
    /// at its next transaction boundary.
    shutdown: tokio::sync::watch::Receiver<bool>,
    draining: bool,
}

/// How a session ends.
enum End {
    /// The client said goodbye or went away.
    Client,
    /// Tell the client this, then close.
    Fatal(PgError),
}

pub async fn run(
    stream: ClientStream,
    shared: Arc<Shared>,
    user: String,
    database: String,
    params: &[(String, String)],
) {
    let info = crate::cancel::ClientInfo {
        user: user.clone(),
        database: database.clone(),
        application_name: params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        addr: stream.peer_addr(),
        connected: std::time::SystemTime::now(),
        console: false,
    };
    let (pid, secret, cancel) = shared.cancels.register(info);
    let draining = *shared.shutdown.borrow();
    let (client_rd, client_wr) = stream.into_split();
    let mut s = Session {
        client_rd,
        client_wr,
        user: user.into(),
        database: database.into(),
        application_name: params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        // Empty until used: an idle client costs no buffer memory (see `read_client`).
        crbuf: BytesMut::new(),
        cwbuf: BytesMut::new(),
        swbuf: BytesMut::new(),
        inq: VecDeque::new(),
        queued_bytes: 0,
        settings: Settings::from_startup(params),
        dialect: Dialect::default(),
        encoding: super::encoding::Encoding::default(),
        statements: HashMap::new(),
        unnamed: None,
        held: held::Held::default(),
        active: None,
        active_for_reads: false,
        expect: VecDeque::new(),
        in_flight: 0,
        tx_status: b'I',
        intake: state::Intake::Between,
        copy_in: false,
        unit_classes: VecDeque::new(),
        portals: Vec::new(),
        ledger: ledger::Ledger::default(),
        pinned: None,
        login_serializable: false,
        unit_forced_write: false,
        unit_timeout: None,
        restore_timeout: false,
        unit_reserve: false,
        unit_scope: None,
        unit_keys: Vec::new(),
        keys_awaiting_position: None,
        unit_names: Vec::new(),
        scan_scratch: Default::default(),
        unit_commits: Default::default(),
        doubt: Default::default(),
        primary_refused_since: None,
        lost_transaction: None,
        place: None,
        lsn_pending: false,
        lsn_answer: None,
        lsn_for_commit: false,
        held_ready: None,
        held_ack: BytesMut::new(),
        holding_ack: false,
        split_rest: None,
        rest_offset: None,
        splitting: false,
        held_reports: Vec::new(),
        failed_since_ready: false,
        dirty_since: None,
        commit_lsn: None,
        cancel,
        pid,
        shutdown: shared.shutdown.subscribe(),
        draining,
        shared,
    };
    let end = match s.greet(secret).await {
        Ok(()) => s.main_loop().await,
        Err(e) => End::Fatal(e),
    };
    if let End::Fatal(e) = end {
        metrics::client_error(&e.code);
        // Replies already due go first, as a server's would before its FATAL.
        s.cwbuf.extend_from_slice(e.to_frame().raw());
        let _ = s.flush_client().await;
    }
    s.close();
}

impl Session {
    /// Finishes the login: the parameters a server reports for this client's startup
    /// settings (the server's spelling: `UTF8` for `utf8`, `ISO, MDY` for `ISO`), our own
    /// key data, ReadyForQuery. They are learned once per distinct startup packet by
    /// bringing a primary connection to those settings, then remembered, so most logins
    /// do not wait for a pool.
    async fn greet(&mut self, secret: i32) -> Result<(), PgError> {
        let hash = self.settings.hash();
        let reported = match self.shared.pools.login_params(&self.user, &self.database, hash) {
            Some(p) => p,
            None => {
                let snapshot = self.shared.topology.snapshot();
                let node = snapshot.primary(std::time::Instant::now()).ok_or_else(|| {
                    PgError::fatal(sqlstate::CONNECTION_FAILURE, "pgroute: no primary available")
                        .with_hint(format!("Node states: {}.", snapshot.describe()))
                })?;
                // A startup value the server refuses ends the login, as it would there.
                self.attach(node, false).await.map_err(|e| PgError { severity: "FATAL", ..e })?;
                let conn = self.held.get_mut(node).ok_or_else(internal)?;
                let isolation =
                    conn.query_text("SELECT pg_catalog.current_setting('default_transaction_isolation')").await;
                let p = Arc::new(LoginParams {
                    reported: conn.params.clone(),
                    default_isolation: isolation.map_err(|e| PgError { severity: "FATAL", ..e })?.unwrap_or_default(),
                });
                self.maybe_release();
                self.shared.pools.store_login_params(&self.user, &self.database, hash, p.clone());
                p
            }
        };
        self.login_serializable = reported.default_isolation == "serializable";
        for (name, value) in reported.reported.iter() {
            self.note_parameter(name, value);
            self.cwbuf.extend_from_slice(protocol::parameter_status(name, value).raw());
        }
        self.cwbuf.extend_from_slice(protocol::backend_key_data(self.pid, secret).raw());
        self.cwbuf.extend_from_slice(protocol::ready_for_query(b'I').raw());
        self.flush_client().await.map_err(|_| PgError::fatal(sqlstate::CONNECTION_FAILURE, "client went away"))?;
        // A client that now sits idle keeps no write buffer.
        self.cwbuf = BytesMut::new();
        Ok(())
    }

    /// Between transactions with nothing queued, in flight or half-read.
    fn at_boundary(&self) -> bool {
        if self.lost_transaction.is_some() {
            return true;
        }
        self.in_flight == 0
            && self.intake == state::Intake::Between
            && !self.copy_in
            && self.tx_status == b'I'
            && self.inq.is_empty()
            && self.crbuf.is_empty()
    }

    async fn main_loop(&mut self) -> End {
        // Made once, not per wake-up: a KILL from the console and the start of a shutdown.
        let handle = self.cancel.clone();
        let killed = handle.kill.notified();
        tokio::pin!(killed);
        let mut shutdown = self.shutdown.clone();
        let stopping = shutdown.changed();
        tokio::pin!(stopping);
        loop {
            let draining = self.draining;
            if draining && self.at_boundary() {
                return End::Fatal(
                    PgError::fatal(ADMIN_SHUTDOWN, "terminating connection: pgroute is shutting down")
                        .with_hint("Reconnect; nothing this session committed is lost."),
                );
            }
            // `crbuf` only ever holds the start of one incomplete message (bounded by
            // max_message_size): backpressure counts what is queued behind the server.
            let client_has_room = self.queued_bytes < CLIENT_BACKLOG && self.inq.len() < MAX_QUEUED_FRAMES;
            let server = match self.active {
                Some(n) => self.held.get_mut(n),
                None => None,
            };
            tokio::select! {
                r = read_client(&mut self.client_rd, &mut self.crbuf), if client_has_room => {
                    match r {
                        Ok(0) | Err(_) => return End::Client,
                        Ok(_) => {}
                    }
                    if let Err(end) = self.on_client_bytes().await {
                        return end;
                    }
                }
                _ = &mut stopping, if !draining => self.draining = true,
                _ = &mut killed => {
                    tracing::warn!(pid = self.pid, "client killed from the console");
                    return End::Fatal(PgError::fatal(ADMIN_SHUTDOWN, "terminating connection: killed by a pgroute administrator"));
                }
                r = read_server(server) => {
                    let node = self.active.unwrap_or_default();
                    match r {
                        Ok(0) | Err(_) => {
                            let resumed = match Box::pin(self.connection_lost(node)).await {
                                Ok(()) => self.pump().await,
                                Err(end) => Err(end),
                            };
                            if let Err(end) = resumed {
                                return end;
                            }
                            continue;
                        }
                        Ok(n) => self.shared.stats.received(node, n),
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
        let max = self.shared.config().listen.max_message_size;
        loop {
            match split_frame(&mut self.crbuf, max) {
                Ok(Some(f)) => {
                    self.queued_bytes += f.raw().len();
                    self.inq.push_back(f);
                }
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
        let Some(conn) = self.held.get_mut(node) else {
            return Err(End::Fatal(internal()));
        };
        self.shared.stats.sent(node, self.swbuf.len());
        if conn.stream.write_all(&self.swbuf).await.is_err() {
            // Boxed: rare, and large (it may wait for a primary), it must not set the
            // size of every client's task.
            return Box::pin(self.connection_lost(node)).await;
        }
        self.swbuf.clear();
        Ok(())
    }

    /// The server connection died under the client: its connection is dropped (the pool
    /// opens a fresh one later) and the client is told and disconnected. A transaction in
    /// progress there is lost, and continuing the session could let a later COMMIT look
    /// successful, so the session ends.
    fn server_lost(&mut self, node: usize) -> PgError {
        let name = self.forget_server(node);
        PgError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: connection to node {name} lost during the query"),
        )
        .with_hint(
            "pgroute does not know whether a COMMIT sent before the loss took effect: \
             check the data before retrying anything that moves money.",
        )
    }

    /// Drops the connection of `node`, which died; returns the node's name.
    fn forget_server(&mut self, node: usize) -> String {
        self.held.drop_conn(node);
        self.active = None;
        let name = self.shared.topology.addr(node).map(|a| a.name).unwrap_or_default();
        tracing::warn!(node = %name, "server connection lost during a query");
        name
    }

    /// ParameterStatus reports held for the client's ReadyForQuery, sent just before it.
    fn release_reports(&mut self) {
        for f in self.held_reports.drain(..) {
            self.cwbuf.extend_from_slice(f.raw());
        }
    }

    /// A ReadyForQuery of pgroute's own for the client, after any reports held for it.
    fn ready_for_client(&mut self) {
        self.release_reports();
        self.cwbuf.extend_from_slice(protocol::ready_for_query(self.tx_status).raw());
    }

    /// The next queued client frame, taken off the queue.
    fn pop_frame(&mut self) -> Option<Frame> {
        let f = self.inq.pop_front()?;
        self.queued_bytes -= f.raw().len();
        Some(f)
    }

    /// Returns held connections: clean ones to their pools, the rest closed.
    fn close(&mut self) {
        self.shared.cancels.unregister(self.pid);
        let clean = self.cancel.clear() && self.reusable();
        for c in self.held.drain() {
            c.release(clean);
        }
    }
}

/// Room the client's read buffer is given when it has none.
const CLIENT_READ_CHUNK: usize = 16 * 1024;

/// Reads client bytes into `buf`. A buffer with no room gets it only once the client has
/// sent something, so a client that sits idle holds no buffer memory.
async fn read_client(rd: &mut crate::tls::ClientRead, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == buf.len() {
        return rd.read_into_empty(buf, CLIENT_READ_CHUNK).await;
    }
    rd.read_buf(buf).await
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
