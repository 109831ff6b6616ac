//! The client side: accepting connections, the startup phase, authentication, and the
//! per-client session that routes and forwards messages.

mod encoding;
mod login;
mod prepared;
mod session;
mod settings;
pub mod startup;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::tls::ClientStream;

use crate::metrics;
use crate::protocol::{sqlstate, PgError};
pub use crate::shared::Shared;

use crate::limits::{ClientSlot, LoginSlot, NamedSlots};
use startup::{Startup, StartupError};

/// How long a failed login waits before its error is sent.
const AUTH_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// How long the accept loop waits after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Accepts clients until shutdown; each gets its own task.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => {
                tracing::info!("shutting down: no new clients");
                return;
            }
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: the error repeats until
                // something closes, so wait a little rather than spin the runtime thread.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            tracing::debug!(%peer, "client connected");
            handle(stream, shared).await;
            tracing::debug!(%peer, "client gone");
        });
    }
}

/// What ended a login before it finished.
enum Cut {
    Timeout,
    /// A newer login took its place among `[listen] max_logins`.
    Evicted,
}

/// `f` within the login's time, unless a newer login takes its place first.
async fn within<F: std::future::Future>(
    slot: &LoginSlot,
    timeout: std::time::Duration,
    f: F,
) -> Result<F::Output, Cut> {
    tokio::select! {
        r = tokio::time::timeout(timeout, f) => r.map_err(|_| Cut::Timeout),
        _ = slot.evicted() => Err(Cut::Evicted),
    }
}

fn evicted(shared: &Shared) -> PgError {
    let max = shared.config().listen.max_logins;
    // Debug, not WARN: under a flood of unfinished logins this happens for each.
    tracing::debug!(max, "login ended: max_logins in progress, this one waited longest");
    PgError::fatal(
        sqlstate::TOO_MANY_CONNECTIONS,
        format!("sorry, too many logins in progress (pgroute max_logins = {max}); this one waited longest"),
    )
}

async fn refuse_later(stream: &mut ClientStream, err: PgError) {
    tokio::time::sleep(AUTH_FAILURE_DELAY).await;
    refuse(stream, &err).await
}

async fn refuse(stream: &mut ClientStream, err: &PgError) {
    metrics::client_error(&err.code);
    let _ = stream.write_all(err.to_frame().raw()).await;
}

/// The startup phase, TLS included: after an SSLRequest pgroute accepts, `stream` becomes
/// the TLS stream (`end_point`: its channel binding data) and the startup packet is read
/// from it.
async fn open(
    stream: &mut ClientStream,
    end_point: &mut Option<Arc<Vec<u8>>>,
    shared: &Shared,
) -> Result<Startup, StartupError> {
    let max = shared.config().listen.max_startup_packet;
    let acceptor = shared.tls();
    loop {
        match startup::read_startup(stream, max).await? {
            Startup::Tls => match (&acceptor, stream.take_plain()) {
                (Some(a), Some(mut tcp)) => {
                    tcp.write_all(b"S").await.map_err(|_| StartupError::Closed)?;
                    // Boxed: a handshake in progress is large, and only the login waits on it.
                    let (tls, binding) = Box::pin(a.accept(tcp)).await.map_err(|e| {
                        tracing::info!(error = %e, "client TLS handshake failed");
                        StartupError::Closed
                    })?;
                    *stream = tls;
                    *end_point = Some(binding);
                }
                (_, tcp) => {
                    // No TLS configured, or an SSLRequest inside TLS.
                    if let Some(tcp) = tcp {
                        *stream = ClientStream::Plain(tcp);
                    }
                    stream.write_all(b"N").await.map_err(|_| StartupError::Closed)?;
                }
            },
            other => return Ok(other),
        }
    }
}

async fn handle(tcp: TcpStream, shared: Arc<Shared>) {
    let mut stream = ClientStream::Plain(tcp);
    // Every connection counts from accept until it has logged in: sockets that send
    // nothing, or never answer the password challenge, hold these places only, and the
    // oldest gives its place up to a newer one.
    // Boxed: one pointer in the client's task (whose future must stay small).
    let login = Box::new(LoginSlot::take(&shared.limits, shared.config().listen.max_logins));
    let mut end_point = None;
    let login_timeout = shared.config().listen.login_timeout;
    let startup = within(&login, login_timeout, open(&mut stream, &mut end_point, &shared)).await;
    let params = match startup {
        Err(Cut::Evicted) => return refuse(&mut stream, &evicted(&shared)).await,
        Err(Cut::Timeout) => {
            let e = PgError::fatal(sqlstate::PROTOCOL_VIOLATION, "pgroute: no startup packet in time");
            return refuse(&mut stream, &e).await;
        }
        Ok(Err(StartupError::Closed)) => return,
        Ok(Err(StartupError::Refused(e))) => return refuse(&mut stream, &e).await,
        Ok(Ok(Startup::Cancel { pid, secret })) => {
            let peers = shared.config().peers.clone();
            return shared.cancels.cancel(&shared.topology, &peers, pid, secret).await;
        }
        Ok(Ok(Startup::Tls)) => return,
        Ok(Ok(Startup::Connect { params })) => params,
    };
    if !stream.is_tls() && shared.tls().is_some_and(|a| a.mode == crate::config::ClientTlsMode::Require) {
        let e = PgError::fatal(sqlstate::INVALID_AUTHORIZATION, "pgroute accepts TLS connections only")
            .with_hint("Connect with sslmode=require (or verify-full).");
        return refuse(&mut stream, &e).await;
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(user) = get("user") else {
        let e = PgError::fatal(sqlstate::PROTOCOL_VIOLATION, "no PostgreSQL user name specified in startup packet");
        return refuse(&mut stream, &e).await;
    };
    let database = get("database").unwrap_or_else(|| user.clone());
    if get("replication").is_some_and(|v| v != "false" && v != "0" && v != "off") {
        let e = PgError::fatal(sqlstate::FEATURE_NOT_SUPPORTED, "pgroute does not proxy replication connections");
        return refuse(&mut stream, &e).await;
    }
    // Boxed: the exchange happens once per client and must not set the size of its task.
    let auth = within(
        &login,
        login_timeout,
        Box::pin(login::authenticate(&mut stream, &shared, &user, end_point.as_ref().map(|e| e.as_slice()))),
    )
    .await;
    match auth {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::info!(user = %user, "client authentication failed");
            // As PostgreSQL's auth_delay: a client guessing names or passwords waits
            // before each answer, so one connection cannot make the runtime thread run
            // logins back to back. The wait costs no CPU and holds only its login place.
            // Boxed: the timer and the error must not set the size of every client's task.
            return Box::pin(refuse_later(&mut stream, e)).await;
        }
        Err(Cut::Evicted) => return refuse(&mut stream, &evicted(&shared)).await,
        Err(Cut::Timeout) => {
            let e = PgError::fatal(sqlstate::PROTOCOL_VIOLATION, "pgroute: authentication timed out");
            return refuse(&mut stream, &e).await;
        }
    }
    drop(login);
    // The client limits count logged-in clients only.
    let max = shared.config().listen.max_client_conn;
    let Some(_slot) = ClientSlot::take(&shared.limits, max) else {
        tracing::warn!(max, "client refused: max_client_conn reached");
        let e = PgError::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            format!("sorry, too many clients already (pgroute max_client_conn = {max})"),
        );
        return refuse(&mut stream, &e).await;
    };
    let listen = &shared.config().listen;
    let per_name = (listen.max_user_client_conn, listen.max_db_client_conn);
    let _named = match NamedSlots::take(&shared.limits, &user, &database, per_name) {
        Ok(s) => s,
        Err((what, max)) => {
            tracing::warn!(user = %user, database = %database, limit = what, max, "client refused: per-{what} limit reached");
            let e = PgError::fatal(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("too many clients for this {what} already (pgroute max_{what}_client_conn = {max})"),
            );
            return refuse(&mut stream, &e).await;
        }
    };
    if database == crate::admin::DATABASE {
        if !shared.config().admin.is_admin(&user) {
            tracing::warn!(user = %user, "console refused: not in [admin] users");
            let e = PgError::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("user \"{user}\" may not use the pgroute admin console"),
            )
            .with_hint("Admin users are listed in [admin] users of pgroute's configuration.");
            return refuse(&mut stream, &e).await;
        }
        return crate::admin::run(stream, shared, user, &params).await;
    }
    let _counted = ClientCount::new();
    session::run(stream, shared, user, database, &params).await;
}

/// One logged-in client in the `pgroute_clients` gauge, for as long as it lives (also
/// when its task unwinds).
struct ClientCount;

impl ClientCount {
    fn new() -> Self {
        metrics::clients(1);
        ClientCount
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        metrics::clients(-1);
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn returns.
    fn future_size<A, B, F>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every client's task holds the whole future of `handle`: its size is most of what an
    /// idle client costs (`benches/idle.sh`). Rare, large futures (a server connect, a TLS
    /// handshake) are boxed where they are awaited so that they do not set it.
    #[test]
    fn a_clients_task_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 4096, "the client task's future grew to {size} bytes");
    }
}
