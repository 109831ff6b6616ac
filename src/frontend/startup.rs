//! The startup phase of a client connection: SSL/GSS negotiation, cancel requests, and
//! the StartupMessage with its parameters.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::protocol::{read_startup_packet, sqlstate, startup_code, BodyReader, PgError};

/// How the startup phase ended when it did not fail: a cancel request or a session to start.
pub enum Startup {
    /// SSLRequest: the caller answers it (`S` and a handshake, or `N`) and reads on.
    Tls,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Connect {
        params: Vec<(String, String)>,
    },
}

/// Why the startup phase ended without a session.
pub enum StartupError {
    /// The peer went away or broke the stream: nothing to say to it.
    Closed,
    /// Tell the client, then close.
    Refused(PgError),
}

/// One startup-phase packet, decoded by [`parse_startup`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// SSLRequest: the client asks for TLS.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption (pgroute answers `N`).
    GssRequest,
    /// CancelRequest for the backend with this process id and secret key.
    Cancel { pid: i32, secret: i32 },
    /// StartupMessage for protocol 3.0, with its (name, value) parameters in order.
    Connect { params: Vec<(String, String)> },
}

fn violation(msg: impl Into<String>) -> PgError {
    PgError::fatal(sqlstate::PROTOCOL_VIOLATION, msg)
}

/// Decodes the body of one untagged startup packet (everything after the length field).
///
/// Pure and total: malformed input gives a FATAL `PgError` (protocol violation, or feature
/// not supported for an unknown protocol version), never a panic. Bytes after a complete
/// request are ignored, as PostgreSQL does.
pub fn parse_startup(body: &[u8]) -> Result<Parsed, PgError> {
    let mut r = BodyReader::new(body);
    let code = r.i32().map_err(|e| violation(e.to_string()))?;
    match code {
        startup_code::SSL_REQUEST => Ok(Parsed::SslRequest),
        startup_code::GSSENC_REQUEST => Ok(Parsed::GssRequest),
        startup_code::CANCEL_REQUEST => {
            let pid = r.i32().map_err(|e| violation(e.to_string()))?;
            let secret = r.i32().map_err(|e| violation(e.to_string()))?;
            Ok(Parsed::Cancel { pid, secret })
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
            Ok(Parsed::Connect { params })
        }
        other => Err(PgError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("unsupported frontend protocol {}.{}: pgroute speaks 3.0", other >> 16, other & 0xffff),
        )),
    }
}

/// Reads startup packets until an SSLRequest, a cancel request or a StartupMessage,
/// declining GSS encryption requests with `N` on the way.
pub async fn read_startup<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Startup, StartupError> {
    loop {
        let body = match read_startup_packet(stream, max).await {
            Err(_) => return Err(StartupError::Closed),
            Ok(Err(e)) => return Err(StartupError::Refused(violation(format!("invalid startup packet: {e}")))),
            Ok(Ok(b)) => b,
        };
        match parse_startup(&body).map_err(StartupError::Refused)? {
            Parsed::SslRequest => return Ok(Startup::Tls),
            Parsed::GssRequest => {
                stream.write_all(b"N").await.map_err(|_| StartupError::Closed)?;
            }
            Parsed::Cancel { pid, secret } => return Ok(Startup::Cancel { pid, secret }),
            Parsed::Connect { params } => return Ok(Startup::Connect { params }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut b = code.to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn startup_message_yields_params_in_order() {
        let b = body(startup_code::PROTOCOL_3, b"user\0alice\0database\0shop\0\0");
        let params = vec![("user".into(), "alice".into()), ("database".into(), "shop".into())];
        assert_eq!(parse_startup(&b).unwrap(), Parsed::Connect { params });
        assert_eq!(parse_startup(&body(startup_code::SSL_REQUEST, b"")).unwrap(), Parsed::SslRequest);
        assert_eq!(parse_startup(&body(startup_code::GSSENC_REQUEST, b"")).unwrap(), Parsed::GssRequest);
    }

    #[test]
    fn cancel_request_carries_pid_and_secret() {
        let b = body(startup_code::CANCEL_REQUEST, &[0, 0, 0x30, 0x39, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(parse_startup(&b).unwrap(), Parsed::Cancel { pid: 12345, secret: -2 });
    }

    #[test]
    fn malformed_packets_are_refused_not_panicked_on() {
        let code = |b: &[u8]| parse_startup(b).unwrap_err().code;
        assert_eq!(code(b"\0\0"), sqlstate::PROTOCOL_VIOLATION);
        assert_eq!(code(&body(startup_code::CANCEL_REQUEST, b"\0\0\0\x01")), sqlstate::PROTOCOL_VIOLATION);
        assert_eq!(code(&body(startup_code::PROTOCOL_3, b"user\0alice")), sqlstate::PROTOCOL_VIOLATION);
        assert_eq!(code(&body(startup_code::PROTOCOL_3, b"user\0\xff\0\0")), sqlstate::PROTOCOL_VIOLATION);
        assert_eq!(code(&body(2 << 16, b"user\0alice\0\0")), sqlstate::FEATURE_NOT_SUPPORTED);
    }
}
