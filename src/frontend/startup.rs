//! The startup phase of a client connection: SSL/GSS negotiation (declined), cancel
//! requests, and the StartupMessage with its parameters.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::{read_startup_packet, sqlstate, startup_code, BodyReader, PgError};

pub enum Startup {
    Cancel { pid: i32, secret: i32 },
    Connect { params: Vec<(String, String)> },
}

/// Why the startup phase ended without a session.
pub enum StartupError {
    /// The peer went away or broke the stream: nothing to say to it.
    Closed,
    /// Tell the client, then close.
    Refused(PgError),
}

fn violation(msg: impl Into<String>) -> StartupError {
    StartupError::Refused(PgError::fatal(sqlstate::PROTOCOL_VIOLATION, msg))
}

pub async fn read_startup(stream: &mut TcpStream, max: usize) -> Result<Startup, StartupError> {
    loop {
        let body = match read_startup_packet(stream, max).await {
            Err(_) => return Err(StartupError::Closed),
            Ok(Err(e)) => return Err(violation(format!("invalid startup packet: {e}"))),
            Ok(Ok(b)) => b,
        };
        let mut r = BodyReader::new(&body);
        let code = r.i32().map_err(|e| violation(e.to_string()))?;
        match code {
            startup_code::SSL_REQUEST | startup_code::GSSENC_REQUEST => {
                stream.write_all(b"N").await.map_err(|_| StartupError::Closed)?;
            }
            startup_code::CANCEL_REQUEST => {
                let pid = r.i32().map_err(|e| violation(e.to_string()))?;
                let secret = r.i32().map_err(|e| violation(e.to_string()))?;
                return Ok(Startup::Cancel { pid, secret });
            }
            startup_code::PROTOCOL_3 => {
                let mut params = Vec::new();
                loop {
                    let name = r.cstr().map_err(|e| violation(e.to_string()))?;
                    if name.is_empty() {
                        break;
                    }
                    let value = r.cstr().map_err(|e| violation(e.to_string()))?;
                    params.push((name.to_string(), value.to_string()));
                }
                return Ok(Startup::Connect { params });
            }
            other => {
                return Err(StartupError::Refused(PgError::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("unsupported frontend protocol {}.{}: pgroute speaks 3.0", other >> 16, other & 0xffff),
                )))
            }
        }
    }
}
