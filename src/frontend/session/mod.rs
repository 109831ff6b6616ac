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

mod answer;
mod client;
mod commit_lsn;
mod forward;
mod held;
mod idle;
mod in_doubt;
mod ledger;
mod local;
mod loss;
mod own;
mod own_statements;
mod read_needs;
mod reply;
mod route;
mod rule_timeout;
mod server;
mod state;
mod statements;
#[cfg(test)]
mod tests;
mod unit;

use std::sync::Arc;

use crate::tls::ClientStream;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prepared::Prepared;
use super::settings::Settings;
use super::Shared;
use crate::backend::{Checked, LoginParams};
use crate::cancel;
use crate::classify::{Class, Dialect, Step};
use crate::config::{Config, Live};
use crate::metrics;
use crate::protocol::{self, sqlstate, PgError};
use own::Own;

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

impl Expect {
    fn step(class: &Class, index: usize) -> &Step {
        static NONE: Step = Step { tx: crate::classify::TxOp::None, settings: Vec::new(), writes_data: false };
        class.steps.get(index).unwrap_or(&NONE)
    }
}

/// SQLSTATE 57P01, admin_shutdown: what PostgreSQL sends its sessions on a smart shutdown.
const ADMIN_SHUTDOWN: &str = "57P01";

/// One client's session: a handful of parts, each with its own concern (see `state.rs`
/// for the states they are in and how they move).
pub struct Session {
    shared: Arc<Shared>,
    /// The client's socket, its buffers and the queue of its complete messages.
    client: client::Client,
    /// Who the client is, and how the server reads its text.
    who: Who,
    /// The client's session settings (startup parameters and SETs), replayed wherever it
    /// runs.
    settings: Settings,
    /// The client's prepared statements and the portals of its open transaction.
    prepared: statements::Statements,
    /// The server connections held and what pgroute expects of them.
    server: server::Server,
    /// The client's transaction as the server reports it, and what it did.
    tx: state::Tx,
    /// The unit being routed and forwarded.
    unit: unit::Unit,
    /// The part of the client's answer held back (a commit's position, a split Query).
    answer: answer::Answer,
    /// Read-your-writes: this session's last commit and its position.
    ryw: read_needs::Ryw,
    /// Why the session is pinned to the primary, if it is.
    pinned: Option<String>,
    /// Tells when pgroute starts shutting down.
    shutdown: Shutdown,
    /// The configuration as of this turn of the session's loop (`refresh_config`): read
    /// on every statement, so not loaded from the shared handle each time.
    config: Arc<Config>,
    config_cache: arc_swap::Cache<Live, Arc<Config>>,
}

/// Who the client is, and how the server reads its text.
struct Who {
    user: Arc<str>,
    database: Arc<str>,
    /// As last reported by a server (it follows SET application_name), for rules.
    application_name: String,
    /// How the server reads this client's SQL text: `standard_conforming_strings` and
    /// `client_encoding`, as the server last reported them.
    dialect: Dialect,
    encoding: super::encoding::Encoding,
    /// The login's `default_transaction_isolation` (role, database, startup defaults) is
    /// serializable: unless the session sets another, its reads need the primary.
    login_serializable: bool,
    /// Each reported parameter's value as the client was last told it. A server reports a
    /// parameter only when its value differs from what it last reported to this client;
    /// pgroute, moving the client between servers, holds back the same way a report of
    /// what the client already has (`Session::shows_client`).
    shown: Vec<(String, String)>,
    /// Our BackendKeyData pid, and the client's entry in the cancel registry.
    pid: i32,
    cancel: Arc<cancel::Handle>,
}

/// pgroute's shutdown as the session sees it: `draining` once it has begun (the login
/// saw it begun, or the `DRAIN` signal came), and the session ends at its next
/// transaction boundary.
struct Shutdown {
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
    let application_name =
        params.iter().find(|(k, _)| k == "application_name").map(|(_, v)| v.clone()).unwrap_or_default();
    let mut s = Session {
        client: client::Client::new(client_rd, client_wr, shared.config().listen.client_write_timeout),
        who: Who {
            user: user.into(),
            database: database.into(),
            application_name,
            dialect: Dialect::default(),
            encoding: super::encoding::Encoding::default(),
            login_serializable: false,
            shown: Vec::new(),
            pid,
            cancel,
        },
        settings: Settings::from_startup(params),
        prepared: Default::default(),
        server: Default::default(),
        tx: Default::default(),
        unit: Default::default(),
        answer: Default::default(),
        ryw: Default::default(),
        pinned: None,
        shutdown: Shutdown { draining },
        config: shared.config().clone(),
        config_cache: arc_swap::Cache::new(shared.live_config()),
        shared,
    };
    let end = match s.greet(secret).await {
        Ok(()) => s.main_loop().await,
        Err(e) => End::Fatal(e),
    };
    if let End::Fatal(e) = end {
        metrics::client_error(&e.code);
        // Replies already due go first, as a server's would before its FATAL.
        s.client.wbuf.extend_from_slice(e.to_frame().raw());
        let _ = s.client.flush().await;
    }
    s.close();
}

impl Session {
    /// The primary a login learns its parameters from: as a write would, it waits up to
    /// `primary_wait` for one (a failover, or a monitor waiting for this very login's
    /// SCRAM keys).
    async fn login_primary(&self) -> Result<usize, PgError> {
        let health = self.shared.config().health.clone();
        let deadline = std::time::Instant::now() + health.primary_wait;
        loop {
            let snapshot = self.shared.topology.snapshot();
            let now = std::time::Instant::now();
            match snapshot.primary(now) {
                Some(node) => return Ok(node),
                None if now < deadline => tokio::time::sleep(health.interval.min(deadline - now)).await,
                None => {
                    return Err(PgError::fatal(sqlstate::CONNECTION_FAILURE, "pgroute: no primary available")
                        .with_hint(format!("Node states: {}.", snapshot.describe())))
                }
            }
        }
    }

    /// Finishes the login: the parameters a server reports for this client's startup
    /// settings (the server's spelling: `UTF8` for `utf8`, `ISO, MDY` for `ISO`), our own
    /// key data, ReadyForQuery. They are learned once per distinct startup packet by
    /// bringing a primary connection to those settings, then remembered, so most logins
    /// do not wait for a pool.
    async fn greet(&mut self, secret: i32) -> Result<(), PgError> {
        let hash = self.settings.hash();
        let reported = match self.shared.pools.login_params(&self.who.user, &self.who.database, hash) {
            Some(p) => p,
            None => {
                let node = self.login_primary().await?;
                // A startup value the server refuses ends the login, as it would there.
                self.attach(node, false).await.map_err(|e| PgError { severity: "FATAL", ..e })?;
                let conn = self.server.held.get_mut(node).ok_or_else(internal)?;
                let isolation =
                    conn.query_text("SELECT pg_catalog.current_setting('default_transaction_isolation')").await;
                let p = Arc::new(LoginParams {
                    reported: conn.params.clone(),
                    default_isolation: isolation.map_err(|e| PgError { severity: "FATAL", ..e })?.unwrap_or_default(),
                });
                self.maybe_release();
                self.shared.pools.store_login_params(&self.who.user, &self.who.database, hash, p.clone());
                p
            }
        };
        self.who.login_serializable = reported.default_isolation == "serializable";
        for (name, value) in reported.reported.iter() {
            self.note_parameter(name, value);
            self.who.shown.push((name.clone(), value.clone()));
            self.client.wbuf.extend_from_slice(protocol::parameter_status(name, value).raw());
        }
        self.client.wbuf.extend_from_slice(protocol::backend_key_data(self.who.pid, secret).raw());
        self.client.wbuf.extend_from_slice(protocol::ready_for_query(b'I').raw());
        self.client.flush().await.map_err(|_| PgError::fatal(sqlstate::CONNECTION_FAILURE, "client went away"))?;
        // A client that now sits idle keeps no write buffer.
        self.client.wbuf = BytesMut::new();
        Ok(())
    }

    async fn main_loop(&mut self) -> End {
        // A KILL from the console and the start of a shutdown arrive as signals on the
        // session's handle (`cancel::Signals`).
        let handle = self.who.cancel.clone();
        loop {
            self.refresh_config();
            let draining = self.shutdown.draining;
            if draining && self.at_boundary() {
                return End::Fatal(
                    PgError::fatal(ADMIN_SHUTDOWN, "terminating connection: pgroute is shutting down")
                        .with_hint("Reconnect; nothing this session committed is lost."),
                );
            }
            // The read buffer only ever holds the start of one incomplete message:
            // backpressure counts what is queued behind the server.
            let client_has_room = self.client.has_room();
            let idle_limit = self.idle_limit();
            let server = match self.server.active {
                Some(n) => self.server.held.get_mut(n),
                None => None,
            };
            // Biased, in this order: no random draw per turn, a kill or a shutdown seen
            // first, and the server's replies taken before more of the client's input.
            tokio::select! {
                biased;
                raised = handle.signaled(if draining { cancel::KILL } else { cancel::KILL | cancel::DRAIN }) => {
                    if raised & cancel::KILL != 0 {
                        tracing::warn!(pid = self.who.pid, "client killed from the console");
                        return End::Fatal(PgError::fatal(ADMIN_SHUTDOWN, "terminating connection: killed by a pgroute administrator"));
                    }
                    self.shutdown.draining = true;
                }
                r = read_server(server) => {
                    let node = self.server.active.unwrap_or_default();
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
                r = client::read(&mut self.client.rd, &mut self.client.rbuf), if client_has_room => {
                    match r {
                        Ok(0) | Err(_) => return End::Client,
                        Ok(_) => {}
                    }
                    if let Err(end) = self.on_client_bytes().await {
                        return end;
                    }
                }
                kind = idle::expiry(idle_limit) => return self.idle_expired(kind).await,
            }
        }
    }

    /// Takes up a reload: a pointer comparison when nothing changed.
    fn refresh_config(&mut self) {
        let latest = self.config_cache.load();
        if !Arc::ptr_eq(latest, &self.config) {
            self.config = latest.clone();
        }
    }

    /// Splits complete client frames off the buffer, then routes and forwards them.
    async fn on_client_bytes(&mut self) -> Result<(), End> {
        let max = self.config.listen.max_message_size;
        self.client.split(max).map_err(End::Fatal)?;
        self.pump().await
    }

    /// Processes queued client frames as far as routing allows, then writes.
    async fn pump(&mut self) -> Result<(), End> {
        let result = self.process_queue().await;
        self.flush_server().await?;
        self.client.flush().await.map_err(|_| End::Client)?;
        result
    }

    async fn on_server_bytes(&mut self) -> Result<(), End> {
        self.process_server_frames()?;
        self.client.flush().await.map_err(|_| End::Client)?;
        if self.server.active.is_none() || self.server.in_flight == 0 {
            // The server finished: queued client units may proceed now.
            self.pump().await?;
        }
        Ok(())
    }

    async fn flush_server(&mut self) -> Result<(), End> {
        if self.server.wbuf.is_empty() {
            return Ok(());
        }
        let Some(node) = self.server.active else {
            self.server.wbuf.clear();
            return Ok(());
        };
        let Some(conn) = self.server.held.get_mut(node) else {
            return Err(End::Fatal(internal()));
        };
        self.shared.stats.sent(node, self.server.wbuf.len());
        if conn.stream.write_all(&self.server.wbuf).await.is_err() {
            // Boxed: rare, and large (it may wait for a primary), it must not set the
            // size of every client's task.
            return Box::pin(self.connection_lost(node)).await;
        }
        self.server.wbuf.clear();
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
        self.server.held.drop_conn(node);
        self.server.active = None;
        let name = self.shared.topology.addr(node).map(|a| a.name).unwrap_or_default();
        tracing::warn!(node = %name, "server connection lost during a query");
        name
    }

    /// ParameterStatus reports held for the client's ReadyForQuery, sent just before it.
    fn release_reports(&mut self) {
        for f in std::mem::take(&mut self.answer.reports) {
            if self.shows_client(f.view()) {
                self.client.wbuf.extend_from_slice(f.raw());
            }
        }
    }

    /// A ReadyForQuery of pgroute's own for the client, after any reports held for it.
    fn ready_for_client(&mut self) {
        self.release_reports();
        self.client.wbuf.extend_from_slice(protocol::ready_for_query(self.tx.status.byte()).raw());
    }

    /// Returns held connections: clean ones to their pools, the rest closed.
    fn close(&mut self) {
        self.shared.cancels.unregister(self.who.pid);
        let clean = self.who.cancel.clear() && self.reusable();
        for c in self.server.held.drain() {
            c.release(clean);
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
