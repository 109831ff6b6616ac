//! One server connection: connect, authenticate as the client's user, remember what the
//! server reported (parameters, key data) and what pgroute has put on it (prepared
//! statements, session settings).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth::{md5, scram};
use crate::backend::keyring::Secret;
use crate::prehashed::PreHashedSet;
use crate::protocol::{self, error_fields, read_frame, sqlstate, tag, BodyReader, Frame, PgError};
use crate::tls::ServerStream;
use crate::topology::NodeAddr;

/// Servers are trusted to send sane sizes; this bound only stops a corrupt stream from
/// making us allocate without limit.
pub const MAX_SERVER_MESSAGE: usize = 1 << 30;

pub struct ServerConn {
    pub stream: ServerStream,
    pub rbuf: BytesMut,
    pub node: usize,
    /// The server's own BackendKeyData, for forwarding cancel requests.
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus values as last reported by the server.
    pub params: Vec<(String, String)>,
    /// Hashes of the named statements pgroute has prepared on this connection.
    pub prepared: PreHashedSet,
    /// Hashes whose server statement may be here though `prepared` no longer counts it
    /// (an error skipped the Close that would have dropped it, or a Parse that did not
    /// fail as expected): dropped with the rest before a read of pg_prepared_statements.
    pub stray: PreHashedSet,
    /// Hash of the unnamed statement last parsed here, if known.
    pub unnamed: Option<u64>,
    /// Fingerprint of the client session settings applied here (0: as opened).
    pub settings_hash: u64,
    /// The fingerprint of the startup settings it was opened with (0: none).
    pub opened_with: u64,
    /// Holds state no other client may inherit: closed instead of pooled.
    pub poisoned: bool,
    /// When it was opened (`[pool] server_lifetime`)...
    pub opened: std::time::Instant,
    /// ... and when it last went back to its pool (`server_idle_timeout`).
    pub idle_since: std::time::Instant,
}

fn lost(node: &NodeAddr, what: impl std::fmt::Display) -> PgError {
    PgError::error(
        sqlstate::CANNOT_CONNECT,
        format!("pgroute: cannot connect to node {} ({}:{}): {what}", node.name, node.host, node.port),
    )
}

impl ServerConn {
    /// Opens and authenticates a connection; the whole exchange is bounded by `timeout`.
    pub async fn connect(
        addr: &NodeAddr,
        node: usize,
        user: &str,
        secret: Option<&Secret>,
        database: &str,
        startup: &[(String, String)],
        timeout: Duration,
    ) -> Result<ServerConn, PgError> {
        let login = Self::connect_inner(addr, node, user, secret, database, startup);
        match tokio::time::timeout(timeout, login).await {
            Ok(r) => r,
            Err(_) => Err(lost(addr, format!("timed out after {timeout:?}"))),
        }
    }

    async fn connect_inner(
        addr: &NodeAddr,
        node: usize,
        user: &str,
        secret: Option<&Secret>,
        database: &str,
        startup: &[(String, String)],
    ) -> Result<ServerConn, PgError> {
        let stream = open_stream(addr).await?;
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            node,
            pid: 0,
            secret: 0,
            params: Vec::new(),
            prepared: PreHashedSet::default(),
            stray: PreHashedSet::default(),
            unnamed: None,
            settings_hash: 0,
            opened_with: 0,
            poisoned: false,
            opened: std::time::Instant::now(),
            idle_since: std::time::Instant::now(),
        };
        let mut params = vec![("user", user), ("database", database)];
        params.extend(startup.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let startup = protocol::startup_message(&params);
        conn.stream.write_all(&startup).await.map_err(|e| lost(addr, e))?;
        let mut scram_state: Option<scram::ClientExchange> = None;
        loop {
            let frame = conn.read().await.map_err(|e| lost(addr, e))?;
            match frame.tag() {
                tag::AUTHENTICATION => {
                    let login = Login { addr, user, secret };
                    let Some(reply) = login.reply(frame.body(), &conn.stream, &mut scram_state)? else { continue };
                    let msg = protocol::password_message(&reply);
                    conn.stream.write_all(msg.raw()).await.map_err(|e| lost(addr, e))?;
                }
                tag::PARAMETER_STATUS => conn.note_parameter(frame.body()),
                tag::BACKEND_KEY_DATA => {
                    let mut r = BodyReader::new(frame.body());
                    conn.pid = r.i32().map_err(|e| lost(addr, e))?;
                    conn.secret = r.i32().map_err(|e| lost(addr, e))?;
                }
                tag::READY_FOR_QUERY => return Ok(conn),
                tag::ERROR_RESPONSE => {
                    let (code, message) = error_fields(frame.body());
                    return Err(PgError::error(&code, message));
                }
                _ => {}
            }
        }
    }

    /// Reads one frame; EOF is an error here (the server must not vanish mid-exchange).
    pub async fn read(&mut self) -> std::io::Result<Frame> {
        read_frame(&mut self.stream, &mut self.rbuf, MAX_SERVER_MESSAGE)
            .await?
            .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }

    /// Records a ParameterStatus body (name, value).
    pub fn note_parameter(&mut self, body: &[u8]) {
        let mut r = BodyReader::new(body);
        if let (Ok(name), Ok(value)) = (r.cstr(), r.cstr()) {
            match self.params.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.to_string(),
                None => self.params.push((name.to_string(), value.to_string())),
            }
        }
    }

    /// Runs pgroute's own simple query and waits for ReadyForQuery. Nothing reaches the
    /// client; the first server error is returned.
    pub async fn run(&mut self, sql: &str) -> Result<(), PgError> {
        self.query_text(sql).await.map(|_| ())
    }

    /// Runs pgroute's own query and returns the first column of its first row as text
    /// (`None` for no row or NULL).
    pub async fn query_text(&mut self, sql: &str) -> Result<Option<String>, PgError> {
        Ok(self.query_row(sql).await?.and_then(|row| row.into_iter().next().flatten()))
    }

    /// Runs pgroute's own query and returns its first row as text columns (`None` for
    /// NULL), or `None` when there is no row.
    pub async fn query_row(&mut self, sql: &str) -> Result<Option<Vec<Option<String>>>, PgError> {
        self.stream.write_all(protocol::query(sql).raw()).await.map_err(conn_lost)?;
        self.first_row().await
    }

    /// As `query_row`, with `$1`, `$2`, ... bound to `params` (text) by the extended
    /// protocol: never spliced into the SQL text.
    pub async fn query_row_with(&mut self, sql: &str, params: &[&str]) -> Result<Option<Vec<Option<String>>>, PgError> {
        use bytes::BufMut;
        let mut out = BytesMut::new();
        out.extend_from_slice(protocol::parse("", sql.as_bytes(), &0i16.to_be_bytes()).raw());
        protocol::build_into(&mut out, b'B', |b| {
            b.put_slice(b"\0\0");
            b.put_i16(0);
            b.put_i16(params.len() as i16);
            for p in params {
                b.put_i32(p.len() as i32);
                b.put_slice(p.as_bytes());
            }
            b.put_i16(0);
        });
        protocol::build_into(&mut out, b'E', |b| {
            b.put_u8(0);
            b.put_i32(0);
        });
        out.extend_from_slice(protocol::sync().raw());
        self.stream.write_all(&out).await.map_err(conn_lost)?;
        self.first_row().await
    }

    /// Reads replies up to ReadyForQuery: the first DataRow, or the first error.
    async fn first_row(&mut self) -> Result<Option<Vec<Option<String>>>, PgError> {
        let io = conn_lost;
        let (mut row, mut first_error) = (None, None);
        loop {
            let f = self.read().await.map_err(io)?;
            match f.tag() {
                b'D' if row.is_none() => row = Some(data_row(f.body())),
                tag::PARAMETER_STATUS => self.note_parameter(f.body()),
                tag::ERROR_RESPONSE if first_error.is_none() => {
                    let (code, message) = error_fields(f.body());
                    first_error = Some(PgError::error(&code, message));
                }
                tag::READY_FOR_QUERY => return first_error.map_or(Ok(row), Err),
                _ => {}
            }
        }
    }

    /// True when an idle connection looks alive: nothing to read and not closed. An idle
    /// server only speaks to say it is going away.
    pub fn idle_and_alive(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            self.rbuf.advance(self.rbuf.len());
            return false;
        }
        let mut probe = [0u8; 1];
        // On the TCP socket under any TLS: a byte there means the server spoke (or closed),
        // and the connection is dropped anyway.
        self.stream
            .tcp()
            .is_none_or(|tcp| matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
    }
}

fn conn_lost(e: std::io::Error) -> PgError {
    PgError::error(sqlstate::CONNECTION_FAILURE, format!("pgroute: server connection lost: {e}"))
}

/// A DataRow's columns as text; a malformed row yields what could be read.
fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut r = BodyReader::new(body);
    let n = r.i16().unwrap_or(0).max(0);
    let mut cols = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Ok(len) = r.i32() else { break };
        if len < 0 {
            cols.push(None);
            continue;
        }
        let Ok(b) = r.bytes(len as usize) else { break };
        cols.push(Some(String::from_utf8_lossy(b).into_owned()));
    }
    cols
}

/// A byte stream to the node: TCP, then TLS as its settings say (in the session's unit
/// tests, a scripted server's in-memory stream).
async fn open_stream(addr: &NodeAddr) -> Result<ServerStream, PgError> {
    #[cfg(test)]
    if let Some(stream) = super::fake::connect(addr) {
        return Ok(stream);
    }
    let tcp = TcpStream::connect((addr.host.as_str(), addr.port)).await.map_err(|e| lost(addr, e))?;
    tcp.set_nodelay(true).map_err(|e| lost(addr, e))?;
    crate::tls::connect(tcp, addr.tls, addr.tls_ca_file.as_deref(), &addr.host).await.map_err(|e| lost(addr, e))
}

/// Who logs in to a server, to answer its authentication requests.
struct Login<'a> {
    addr: &'a NodeAddr,
    user: &'a str,
    secret: Option<&'a Secret>,
}

impl Login<'_> {
    /// The answer to one Authentication request (`None`: nothing to send).
    fn reply(
        &self,
        body: &[u8],
        stream: &ServerStream,
        scram_state: &mut Option<scram::ClientExchange>,
    ) -> Result<Option<Vec<u8>>, PgError> {
        let (addr, user) = (self.addr, self.user);
        let mut r = BodyReader::new(body);
        let code = r.i32().map_err(|e| lost(addr, e))?;
        let need_secret = || {
            self.secret.ok_or_else(|| {
                lost(addr, format!("server asks for a password and none is configured for user {user:?}"))
            })
        };
        let need_pw = || {
            need_secret()?.password().ok_or_else(|| {
                lost(
                    addr,
                    format!("the server asks user {user:?} for a cleartext or md5 password, and pgroute holds only its SCRAM keys: make the role's password SCRAM in PostgreSQL (password_encryption = scram-sha-256) and pg_hba.conf say scram-sha-256"),
                )
            })
        };
        let reply = match code {
            0 => return Ok(None),
            3 => {
                let mut p = need_pw()?.as_bytes().to_vec();
                p.push(0);
                p
            }
            5 => {
                let salt: [u8; 4] =
                    r.bytes(4).map_err(|e| lost(addr, e))?.try_into().map_err(|_| lost(addr, "bad md5 salt"))?;
                let mut p = md5::response(user, need_pw()?, &salt).into_bytes();
                p.push(0);
                p
            }
            10 => {
                // Over TLS, bind to the server's certificate when it offers PLUS.
                let offered = r.rest().split(|b| *b == 0).any(|m| m == scram::MECHANISM_PLUS.as_bytes());
                let (mechanism, binding) = match (stream.end_point(), offered) {
                    (Some(hash), true) => (scram::MECHANISM_PLUS, scram::ClientBinding::Plus(hash)),
                    (Some(_), false) => (scram::MECHANISM, scram::ClientBinding::NotOffered),
                    (None, _) => (scram::MECHANISM, scram::ClientBinding::Unsupported),
                };
                let (ex, first) = scram::ClientExchange::start(need_secret()?.credential(), binding);
                *scram_state = Some(ex);
                let mut p = Vec::new();
                p.extend_from_slice(mechanism.as_bytes());
                p.push(0);
                p.extend_from_slice(&(first.len() as i32).to_be_bytes());
                p.extend_from_slice(first.as_bytes());
                p
            }
            11 => {
                let ex = scram_state.as_mut().ok_or_else(|| lost(addr, "unexpected SASL continue"))?;
                ex.respond(r.rest()).map_err(|e| lost(addr, e.0))?.into_bytes()
            }
            12 => {
                let ex = scram_state.as_ref().ok_or_else(|| lost(addr, "unexpected SASL final"))?;
                ex.verify_server(r.rest()).map_err(|e| lost(addr, e.0))?;
                return Ok(None);
            }
            other => return Err(lost(addr, format!("unsupported authentication method {other}"))),
        };
        Ok(Some(reply))
    }
}
