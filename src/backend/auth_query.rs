//! `[auth] query`: users not in `proxy.toml` are looked up on the primary (PgBouncer's
//! `auth_query`), as the `[auth] user`, over one connection of its own, one lookup at a
//! time. The answer, a SCRAM verifier or the absence of one, is cached for `cache_ttl`
//! (absences too, so a flood of made-up names costs the primary one lookup per name per
//! TTL, and an unknown user takes as long as a known one not yet cached). A login that
//! fails against a cached verifier has it looked up again next time (the password may
//! have changed), at most once a second per user.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::keyring::Keyring;
use super::ServerConn;
use crate::auth::scram::Verifier;
use crate::config::Config;
use crate::protocol::{sqlstate, PgError};
use crate::topology::Topology;

/// Names cached at most; past it the expired go, then all.
const MAX_CACHED: usize = 10_000;
/// A failed login refreshes an entry only once it is this old.
const REFRESH_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// What a lookup runs with: the configuration in force, the topology (for the primary)
/// and the credentials (for `[auth] user`).
#[derive(Clone, Copy)]
pub struct Where<'a> {
    pub config: &'a Config,
    pub topology: &'a Topology,
    pub keyring: &'a Keyring,
}

/// The node, user and database a lookup connection was opened for.
type Login = (usize, String, String);

#[derive(Default)]
pub struct AuthLookup {
    cache: Mutex<HashMap<String, (Instant, Option<Verifier>)>>,
    /// The lookup connection and whom it is for ((node, user, database)): reopened when
    /// the primary changes, or a reload changes `[auth] user` or `database`.
    conn: tokio::sync::Mutex<Option<(Login, ServerConn)>>,
}

fn unavailable(why: impl std::fmt::Display) -> PgError {
    PgError::fatal(sqlstate::CONNECTION_FAILURE, format!("pgroute: cannot look up users now: {why}"))
        .with_hint("The [auth] query runs on the primary as [auth] user.")
}

impl AuthLookup {
    /// The verifier `[auth] query` gives `user`: `None` for an unknown user (or one whose
    /// password is not a SCRAM verifier); an error when the lookup cannot run at all
    /// (for every user alike, so it reveals nothing about who exists).
    pub async fn verifier(&self, at: Where<'_>, user: &str) -> Result<Option<Verifier>, PgError> {
        let config = at.config;
        let ttl = config.auth.cache_ttl;
        if let Some((at, v)) = self.lock().get(user) {
            if at.elapsed() < ttl {
                return Ok(v.clone());
            }
        }
        let mut conn = self.conn.lock().await;
        // Another login may have looked this name up while this one waited.
        if let Some((at, v)) = self.lock().get(user) {
            if at.elapsed() < ttl {
                return Ok(v.clone());
            }
        }
        let found = self.look_up(at, &mut conn, user).await?;
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(user.to_string(), (Instant::now(), found.clone()));
        Ok(found)
    }

    /// A reload: what the old query (or user) answered is forgotten.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// A login failed against what the cache holds for `user`: look again next time.
    pub fn failed(&self, user: &str) {
        let mut cache = self.lock();
        if cache.get(user).is_some_and(|(at, _)| at.elapsed() >= REFRESH_AFTER_FAILURE) {
            cache.remove(user);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<Verifier>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn look_up(
        &self,
        at: Where<'_>,
        conn: &mut Option<(Login, ServerConn)>,
        user: &str,
    ) -> Result<Option<Verifier>, PgError> {
        let (config, topology) = (at.config, at.topology);
        let auth = &config.auth;
        let Some(auth_user) = auth.user.as_deref() else { return Ok(None) };
        let primary = topology.snapshot().primary(Instant::now()).ok_or_else(|| unavailable("no primary"))?;
        let login: Login = (primary, auth_user.to_string(), auth.database.clone());
        if conn.as_ref().is_some_and(|(opened_for, _)| *opened_for != login) {
            *conn = None;
        }
        let wait = config.pool.connect_timeout;
        if conn.is_none() {
            let addr = topology.addr(primary).ok_or_else(|| unavailable("no primary"))?;
            let secret = at.keyring.secret(config, auth_user).map_err(unavailable)?;
            let c = ServerConn::connect(&addr, primary, auth_user, secret.as_ref(), &auth.database, &[], wait)
                .await
                .map_err(|e| {
                    tracing::warn!(user = auth_user, error = %e.message, "[auth] user cannot log in to the primary");
                    unavailable(e.message)
                })?;
            *conn = Some((login, c));
        }
        let Some((_, c)) = conn.as_mut() else { return Err(unavailable("no connection")) };
        let row = match tokio::time::timeout(wait, c.query_row_with(&auth.query, &[user])).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                tracing::warn!(error = %e.message, "[auth] query failed");
                *conn = None;
                return Err(unavailable(e.message));
            }
            Err(_) => {
                *conn = None;
                return Err(unavailable(format!("no answer within {wait:?}")));
            }
        };
        let secret = row.and_then(|r| r.into_iter().nth(1).flatten());
        Ok(secret.and_then(|s| match Verifier::parse(&s) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(
                    user,
                    "[auth] query: the role's password is not a SCRAM verifier (md5?): it cannot log in through pgroute; set password_encryption = 'scram-sha-256' and set the password again"
                );
                None
            }
        }))
    }
}
