//! The session's idle limits. A session waiting for its client's next message, with
//! nothing queued, half-read or in flight, is idle: outside a transaction for at most
//! `[listen] client_idle_timeout` (then `57P05`, as PostgreSQL's `idle_session_timeout`),
//! inside one for at most `[pool] idle_transaction_timeout` (then the transaction is rolled
//! back on its server, whose connection goes back to the pool with its locks released, and
//! the client gets `25P03`, as PostgreSQL's `idle_in_transaction_session_timeout`).

use std::time::Duration;

use super::state::{Intake, TxStatus};
use super::{End, Session};
use crate::protocol::PgError;

/// SQLSTATE 57P05, idle_session_timeout.
const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// SQLSTATE 25P03, idle_in_transaction_session_timeout.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";

/// Which limit a session's idleness is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    Session,
    Transaction,
}

impl Session {
    /// The limit that applies while the session waits now, if it is idle and one is set.
    pub(super) fn idle_limit(&self) -> Option<(Duration, Idle)> {
        let idle = self.server.in_flight == 0
            && !self.server.copy_in
            && self.client.intake == Intake::Between
            && self.client.drained()
            && self.tx.lost.is_none();
        if !idle {
            return None;
        }
        let config = &self.config;
        match self.tx.status {
            TxStatus::Idle => config.listen.client_idle_timeout.map(|d| (d, Idle::Session)),
            TxStatus::InBlock | TxStatus::Failed => {
                config.pool.idle_transaction_timeout.map(|d| (d, Idle::Transaction))
            }
        }
    }

    /// The limit ran out: how the session ends.
    pub(super) async fn idle_expired(&mut self, kind: Idle) -> End {
        match kind {
            Idle::Session => {
                tracing::info!(pid = self.who.pid, "client idle longer than client_idle_timeout: disconnected");
                End::Fatal(
                    PgError::fatal(IDLE_SESSION_TIMEOUT, "terminating connection due to idle-session timeout")
                        .with_hint("pgroute's [listen] client_idle_timeout."),
                )
            }
            Idle::Transaction => {
                self.roll_back_idle_transaction().await;
                tracing::info!(
                    pid = self.who.pid,
                    "client idle in a transaction longer than idle_transaction_timeout: rolled back, disconnected"
                );
                End::Fatal(
                    PgError::fatal(
                        IDLE_IN_TRANSACTION_TIMEOUT,
                        "terminating connection due to idle-in-transaction timeout",
                    )
                    .with_hint("pgroute's [pool] idle_transaction_timeout: the transaction was rolled back."),
                )
            }
        }
    }

    /// Rolls the open transaction back on its server, so that its locks go now and its
    /// connection may be pooled; a server that does not answer in time loses its
    /// connection instead (which rolls back too).
    async fn roll_back_idle_transaction(&mut self) {
        let Some(node) = self.server.active else { return };
        let wait = self.shared.config().pool.connect_timeout;
        let Some(conn) = self.server.held.get_mut(node) else { return };
        match tokio::time::timeout(wait, conn.run("ROLLBACK")).await {
            // Settings the transaction made were never settled (they roll back with it):
            // the connection's settings are as recorded.
            Ok(Ok(())) => self.tx.status = TxStatus::Idle,
            _ => self.server.held.drop_conn(node),
        }
    }
}

/// Resolves when `limit` has passed; never without one.
pub(super) async fn expiry(limit: Option<(Duration, Idle)>) -> Idle {
    match limit {
        Some((d, kind)) => {
            tokio::time::sleep(d).await;
            kind
        }
        None => std::future::pending().await,
    }
}
