//! The admin console: a client that logs in to the database `pgroute` as a user listed in
//! `[admin] users` talks to pgroute itself, not to a server (PgBouncer's convention, so
//! operators' habits carry over). It speaks the simple query protocol; each command lives
//! in its own file and answers with a [`rows::Reply`].
//!
//! | command | file |
//! |---|---|
//! | `SHOW NODES` | `nodes.rs` |
//! | `SHOW POOLS` | `pools.rs` |
//! | `SHOW SERVERS` | `servers.rs` |
//! | `SHOW CLIENTS` | `clients.rs` |
//! | `SHOW STATS` | `stats.rs` |
//! | `SHOW ROUTES` | `routes.rs` |
//! | `SHOW RULES` | `rules.rs` |
//! | `SHOW CONFIG` | `config.rs` |
//! | `SHOW VERSION`, `SHOW HELP` | `version.rs` |
//! | `EXPLAIN <sql>` | `explain.rs` |
//! | `RELOAD` | `reload.rs` |
//! | `PAUSE [db]`, `RESUME [db]` | `pause.rs` |
//! | `DRAIN <node>`, `UNDRAIN <node>` | `drain.rs` |
//! | `UNFENCE <node>` | `unfence.rs` |
//! | `KILL <client pid>` | `kill.rs` |
//! | `SHUTDOWN` | `shutdown.rs` |

mod clients;
mod command;
mod config;
mod drain;
mod explain;
mod kill;
mod nodes;
mod pause;
mod pools;
mod reload;
mod routes;
mod rows;
mod rules;
mod servers;
mod shutdown;
mod stats;
mod unfence;
mod version;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::cancel::ClientInfo;
use crate::protocol::{self, sqlstate, tag, BodyReader, PgError};
use crate::shared::Shared;
use crate::tls::ClientStream;

pub use command::{parse, Command, Show};
use rows::Reply;

/// The database name that opens the console.
pub const DATABASE: &str = "pgroute";

/// Who is at the console, for the commands.
pub struct Console {
    pub shared: Arc<Shared>,
    pub user: String,
    pub pid: i32,
}

impl Console {
    fn answer(&self, command: Command) -> Reply {
        tracing::info!(user = %self.user, ?command, "console command");
        match command {
            Command::Show(Show::Nodes) => nodes::run(self),
            Command::Show(Show::Pools) => pools::run(self),
            Command::Show(Show::Servers) => servers::run(self),
            Command::Show(Show::Clients) => clients::run(self),
            Command::Show(Show::Stats) => stats::run(self),
            Command::Show(Show::Routes) => routes::run(self),
            Command::Show(Show::Rules) => rules::run(self),
            Command::Show(Show::Config) => config::run(self),
            Command::Show(Show::Version) => version::run(),
            Command::Show(Show::Help) => version::help(),
            Command::Explain(sql) => explain::run(self, &sql),
            Command::Reload => reload::run(self),
            Command::Pause(db) => pause::pause(self, db),
            Command::Resume(db) => pause::resume(self, db),
            Command::Drain(node) => drain::run(self, &node, true),
            Command::Undrain(node) => drain::run(self, &node, false),
            Command::Unfence(node) => unfence::run(self, &node),
            Command::Kill(pid) => kill::run(self, pid),
            Command::Shutdown => shutdown::run(self),
            Command::Empty => Reply::Empty,
        }
    }
}

/// Serves one console client until it leaves (or is killed, or pgroute shuts down).
pub async fn run(mut stream: ClientStream, shared: Arc<Shared>, user: String, params: &[(String, String)]) {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let info = ClientInfo {
        user: user.clone(),
        database: DATABASE.into(),
        application_name: get("application_name").unwrap_or_default(),
        addr: stream.peer_addr(),
        connected: std::time::SystemTime::now(),
        console: true,
    };
    let (pid, secret, handle) = shared.cancels.register(info);
    tracing::info!(user = %user, pid, "console opened");
    let console = Console { shared, user, pid };
    let end = serve(&mut stream, &console, secret, &handle).await;
    if let Some(e) = end {
        let _ = stream.write_all(e.to_frame().raw()).await;
    }
    console.shared.cancels.unregister(pid);
}

async fn serve(
    stream: &mut ClientStream,
    console: &Console,
    secret: i32,
    handle: &crate::cancel::Handle,
) -> Option<PgError> {
    let mut out = BytesMut::new();
    for (name, value) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", handle.info.application_name.as_str()),
    ] {
        out.extend_from_slice(protocol::parameter_status(name, value).raw());
    }
    out.extend_from_slice(protocol::backend_key_data(console.pid, secret).raw());
    out.extend_from_slice(protocol::ready_for_query(b'I').raw());
    stream.write_all(&out).await.ok()?;
    let max = console.shared.config().listen.max_message_size;
    let mut shutdown = console.shared.shutdown.subscribe();
    let mut buf = BytesMut::new();
    // After an extended-protocol message, everything up to Sync is ignored.
    let mut skipping = false;
    loop {
        let frame = tokio::select! {
            f = protocol::read_frame(stream, &mut buf, max) => f,
            _ = handle.signaled(crate::cancel::KILL) => {
                return Some(PgError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection: killed by a pgroute administrator"));
            }
            _ = shutdown.wait_for(|s| *s) => {
                return Some(PgError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection: pgroute is shutting down"));
            }
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return None,
        };
        out.clear();
        match frame.tag() {
            tag::TERMINATE => return None,
            tag::QUERY => {
                let text = BodyReader::new(frame.body()).cstr().unwrap_or("").to_string();
                let reply = match parse(&text) {
                    Ok(c) => console.answer(c),
                    Err(e) => Reply::error(sqlstate::SYNTAX_ERROR, e),
                };
                reply.write(&mut out);
                out.extend_from_slice(protocol::ready_for_query(b'I').raw());
            }
            tag::SYNC => {
                skipping = false;
                out.extend_from_slice(protocol::ready_for_query(b'I').raw());
            }
            tag::FLUSH => {}
            _ if skipping => {}
            _ => {
                skipping = true;
                let e = PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the pgroute console speaks the simple query protocol only",
                );
                out.extend_from_slice(e.to_frame().raw());
            }
        }
        stream.write_all(&out).await.ok()?;
    }
}
