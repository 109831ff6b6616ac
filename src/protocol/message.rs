//! Builders for the messages pgroute writes itself (errors, authentication, injected
//! statements), and the one parser for ErrorResponse fields it logs.

use bytes::{BufMut, Bytes, BytesMut};

use super::{BodyReader, Frame, FrameRef};

/// SQLSTATE codes pgroute itself reports.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT: &str = "08001";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
}

/// Builds a tagged frame: writes the tag and a length placeholder, lets `body` append,
/// then patches the length.
pub fn build(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(tag);
    b.put_i32(0);
    body(&mut b);
    let len = (b.len() - 1) as i32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    Frame::from_raw(b.freeze())
}

/// Appends one message to `buf` (tag, length, what `body` writes): no allocation of its
/// own when `buf` has room.
pub fn build_into(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

/// What a client sees when pgroute refuses something.
#[derive(Debug, Clone)]
pub struct PgError {
    pub severity: &'static str,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        PgError { severity: "ERROR", code: code.to_string(), message: message.into(), detail: None, hint: None }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        PgError { severity: "FATAL", ..Self::error(code, message) }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn to_frame(&self) -> Frame {
        build(b'E', |b| {
            for (field, value) in [(b'S', self.severity), (b'V', self.severity), (b'C', self.code.as_str())] {
                b.put_u8(field);
                put_cstr(b, value.as_bytes());
            }
            b.put_u8(b'M');
            put_cstr(b, self.message.as_bytes());
            if let Some(d) = &self.detail {
                b.put_u8(b'D');
                put_cstr(b, d.as_bytes());
            }
            if let Some(h) = &self.hint {
                b.put_u8(b'H');
                put_cstr(b, h.as_bytes());
            }
            b.put_u8(0);
        })
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

/// SQLSTATE and message of a server's ErrorResponse body, for logs and for errors
/// raised while pgroute itself talks to a server.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut r = BodyReader::new(body);
    let (mut code, mut msg) = (String::new(), String::new());
    while let Ok(field) = r.u8() {
        if field == 0 {
            break;
        }
        let Ok(v) = r.cstr_bytes() else { break };
        match field {
            b'C' => code = String::from_utf8_lossy(v).into_owned(),
            b'M' => msg = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    (code, msg)
}

/// An ErrorResponse or NoticeResponse with its statement position (`P`) moved on by
/// `by` characters: the text it was counted in began that far into the client's.
/// `None` when the message has no position (or one that is not a number).
pub fn shift_position(frame: FrameRef<'_>, by: u32) -> Option<Frame> {
    let mut fields: Vec<(u8, &[u8])> = Vec::new();
    let mut r = BodyReader::new(frame.body());
    while let Ok(field) = r.u8() {
        if field == 0 {
            break;
        }
        fields.push((field, r.cstr_bytes().ok()?));
    }
    let position: u32 =
        fields.iter().find(|(f, _)| *f == b'P').and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())?;
    let shifted = position.saturating_add(by).to_string();
    Some(build(frame.tag(), |b| {
        for (field, value) in &fields {
            b.put_u8(*field);
            put_cstr(b, if *field == b'P' { shifted.as_bytes() } else { value });
        }
        b.put_u8(0);
    }))
}

pub fn ready_for_query(status: u8) -> Frame {
    build(b'Z', |b| b.put_u8(status))
}

pub fn parameter_status(name: &str, value: &str) -> Frame {
    build(b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    })
}

pub fn backend_key_data(pid: i32, secret: i32) -> Frame {
    build(b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    })
}

/// AuthenticationRequest with a code and payload (0 = ok, 5 = md5, 10/11/12 = SASL).
pub fn authentication(code: i32, payload: &[u8]) -> Frame {
    build(b'R', |b| {
        b.put_i32(code);
        b.put_slice(payload);
    })
}

pub fn query(sql: &str) -> Frame {
    query_bytes(sql.as_bytes())
}

/// A Query of text already in the client's encoding.
pub fn query_bytes(sql: &[u8]) -> Frame {
    build(b'Q', |b| put_cstr(b, sql))
}

pub fn parse(name: &str, sql: &[u8], param_types: &[u8]) -> Frame {
    build(b'P', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, sql);
        b.put_slice(param_types);
    })
}

pub fn sync() -> Frame {
    build(b'S', |_| {})
}

pub fn terminate() -> Frame {
    build(b'X', |_| {})
}

pub fn password_message(payload: &[u8]) -> Frame {
    build(b'p', |b| b.put_slice(payload))
}

/// The untagged StartupMessage a server connection opens with.
pub fn startup_message(params: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i32(super::startup_code::PROTOCOL_3);
    for (k, v) in params {
        put_cstr(&mut b, k.as_bytes());
        put_cstr(&mut b, v.as_bytes());
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[0..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

pub fn cancel_request(pid: i32, secret: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_i32(16);
    b.put_i32(super::startup_code::CANCEL_REQUEST);
    b.put_i32(pid);
    b.put_i32(secret);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_round_trip_through_the_field_parser() {
        let f = PgError::error(sqlstate::INVALID_PASSWORD, "nope").with_hint("h").to_frame();
        assert_eq!(f.tag(), b'E');
        let len = i32::from_be_bytes([f.raw()[1], f.raw()[2], f.raw()[3], f.raw()[4]]);
        assert_eq!(len as usize, f.raw().len() - 1);
        assert_eq!(error_fields(f.body()), ("28P01".to_string(), "nope".to_string()));
    }
}
