//! Authenticating a client to pgroute: SCRAM-SHA-256 (default), md5 or trust, per user.
//! An unknown user goes through the same exchange and gets the same error as a wrong
//! password, so the answer reveals nothing about which users exist.

use bytes::{BufMut, BytesMut};
use rand::RngCore;
use tokio::io::AsyncWriteExt;

use crate::auth::{md5, scram};
use crate::backend::auth_query::Where;
use crate::config::AuthMethod;
use crate::protocol::{authentication, read_frame, sqlstate, tag, BodyReader, Frame, PgError};
use crate::tls::ClientStream;

use super::Shared;

fn failed(user: &str) -> PgError {
    PgError::fatal(sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""))
}

async fn send(stream: &mut ClientStream, f: Frame) -> Result<(), PgError> {
    stream.write_all(f.raw()).await.map_err(|_| PgError::fatal(sqlstate::CONNECTION_FAILURE, "client went away"))
}

async fn password_message(stream: &mut ClientStream, max: usize) -> Result<Frame, PgError> {
    let mut buf = BytesMut::new();
    match read_frame(stream, &mut buf, max).await {
        Ok(Some(f)) if f.tag() == tag::PASSWORD => Ok(f),
        Ok(Some(_)) => Err(PgError::fatal(sqlstate::PROTOCOL_VIOLATION, "expected a password message")),
        _ => Err(PgError::fatal(sqlstate::CONNECTION_FAILURE, "client went away during authentication")),
    }
}

/// `end_point`: over TLS, the `tls-server-end-point` data of the certificate the client
/// was shown; SCRAM-SHA-256-PLUS is then offered first. A user not in the file is looked
/// up with `[auth] query` when one is configured (SCRAM only).
pub async fn authenticate(
    stream: &mut ClientStream,
    shared: &Shared,
    user: &str,
    end_point: Option<&[u8]>,
) -> Result<(), PgError> {
    let config = shared.config();
    let max = config.listen.max_startup_packet;
    let configured = config.user(user);
    let looked_up = match configured {
        None if config.auth.user.is_some() => {
            let at = Where { config: &config, topology: &shared.topology, keyring: &shared.keyring };
            shared.auth_lookup.verifier(at, user).await?
        }
        _ => None,
    };
    let known = configured.is_some() || looked_up.is_some();
    let method = configured.map_or(AuthMethod::ScramSha256, |u| u.auth);
    match method {
        AuthMethod::Trust => {}
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut salt);
            send(stream, authentication(5, &salt)).await?;
            let msg = password_message(stream, max).await?;
            let got = msg.body().strip_suffix(b"\0").unwrap_or(msg.body());
            let password = configured.and_then(|u| u.password());
            if !password.is_some_and(|p| md5::verify(user, &p, &salt, got)) {
                return Err(failed(user));
            }
        }
        AuthMethod::ScramSha256 => {
            // A verifier that logs in to the servers too: the file's `scram_verifier`, or
            // the one the lookup found.
            let pass_through = configured.and_then(|u| u.verifier()).or(looked_up.clone());
            let verifier =
                looked_up.or_else(|| shared.verifier(user)).unwrap_or_else(|| scram::Verifier::impossible(user));
            match scram_exchange(stream, max, user, verifier, end_point).await {
                Ok(client_key) => {
                    if let Some(keys) = pass_through.and_then(|v| v.keys(client_key)) {
                        if shared.keyring.learn(user, keys) {
                            // The monitor may have been waiting for these keys.
                            shared.topology.request_probe();
                        }
                    }
                }
                Err(e) => {
                    if configured.is_none() {
                        shared.auth_lookup.failed(user);
                    }
                    return Err(e);
                }
            }
        }
    }
    // An unknown user's impossible verifier fails the exchange already; this says so
    // once more, whatever the method.
    if !known {
        return Err(failed(user));
    }
    send(stream, authentication(0, &[])).await
}

/// One SCRAM exchange against `verifier`; returns the ClientKey the client's proof
/// revealed.
async fn scram_exchange(
    stream: &mut ClientStream,
    max: usize,
    user: &str,
    verifier: scram::Verifier,
    end_point: Option<&[u8]>,
) -> Result<[u8; 32], PgError> {
    let mut mechs = BytesMut::new();
    if end_point.is_some() {
        mechs.put_slice(scram::MECHANISM_PLUS.as_bytes());
        mechs.put_u8(0);
    }
    mechs.put_slice(scram::MECHANISM.as_bytes());
    mechs.put_slice(b"\0\0");
    send(stream, authentication(10, &mechs)).await?;
    let first = password_message(stream, max).await?;
    let mut r = BodyReader::new(first.body());
    let mechanism = r.cstr().map_err(|_| failed(user))?;
    let binding = match (mechanism, end_point) {
        (scram::MECHANISM, None) => scram::Binding::Unavailable,
        (scram::MECHANISM, Some(data)) => scram::Binding::Offered { data, plus: false },
        (scram::MECHANISM_PLUS, Some(data)) => scram::Binding::Offered { data, plus: true },
        _ => {
            return Err(PgError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("unsupported SASL mechanism {mechanism:?}"),
            ))
        }
    };
    let len = r.i32().map_err(|_| failed(user))?;
    let data = r.bytes(len.max(0) as usize).map_err(|_| failed(user))?;
    let (exchange, server_first) = scram::ServerExchange::start(verifier, data, binding).map_err(|_| failed(user))?;
    send(stream, authentication(11, server_first.as_bytes())).await?;
    let fin = password_message(stream, max).await?;
    let (server_final, client_key) = exchange.finish(fin.body()).map_err(|_| failed(user))?;
    send(stream, authentication(12, server_final.as_bytes())).await?;
    Ok(client_key)
}
