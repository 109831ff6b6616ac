//! Extended-protocol statements across server connections.
//!
//! A client's named statement may have to run on any server connection. Each one is
//! prepared on servers under a name derived from a hash of its text and parameter types
//! (`pgr_<hash>`), shared by every client that prepares the same text; each server
//! connection remembers which hashes it holds, and a Bind or Describe that lands on one
//! that lacks the statement gets a Parse injected in front of it.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use crate::classify::Class;
use crate::protocol::{build_into, put_cstr, BodyReader, ReadError};

/// The keys of the hash that names statements on servers: random per process, so that a
/// client cannot compute another statement's server name, nor make two texts share one.
static SERVER_NAME_KEYS: OnceLock<RandomState> = OnceLock::new();

#[derive(Debug)]
pub struct Prepared {
    pub hash: u64,
    /// Name on the server: `pgr_<hash>`, or "" for the unnamed statement.
    pub server_name: String,
    /// The Parse body after the statement name: query text, NUL, parameter types.
    pub tail: Bytes,
    pub class: Arc<Class>,
}

/// The keyed hash of a Parse body after its name (text, NUL, parameter types): the
/// statement's server name, and its key in the classifier's front cache (computed once per
/// Parse).
pub fn statement_hash(tail: &[u8]) -> u64 {
    SERVER_NAME_KEYS.get_or_init(RandomState::new).hash_one(tail)
}

impl Prepared {
    /// `hash`: `statement_hash(&tail)`.
    pub fn new(named: bool, tail: Bytes, hash: u64, class: Arc<Class>) -> Self {
        let server_name = if named { server_name(hash) } else { String::new() };
        Prepared { hash, server_name, tail, class }
    }

    /// The statement text (the tail up to its NUL), as bytes.
    pub fn sql(&self) -> Bytes {
        let end = memchr::memchr(0, &self.tail).unwrap_or(self.tail.len());
        self.tail.slice(..end)
    }

    /// A Parse of a client's statement body (`tail`: text, NUL, parameter types) under the
    /// server name `server_name`.
    pub fn put_renamed_parse(buf: &mut BytesMut, server_name: &str, tail: &[u8]) {
        build_into(buf, b'P', |b| {
            put_cstr(b, server_name.as_bytes());
            b.put_slice(tail);
        })
    }

    /// Appends the Parse that creates this statement on a server.
    pub fn put_parse(&self, buf: &mut BytesMut) {
        Self::put_renamed_parse(buf, &self.server_name, &self.tail)
    }
}

/// The name on servers of the named statement whose text and types hash to `hash`.
pub fn server_name(hash: u64) -> String {
    format!("pgr_{hash:016x}")
}

/// A statement or portal name as a map key. Names are bytes in the client's encoding; one
/// that is not UTF-8 gets a key no UTF-8 name can have (names cannot contain NUL).
pub fn name_key(b: &[u8]) -> Cow<'_, str> {
    if b.is_empty() {
        // The unnamed statement or portal, in most units.
        return Cow::Borrowed("");
    }
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(b.iter().fold(String::from("\0"), |mut k, c| {
            k.push_str(&format!("{c:02x}"));
            k
        })),
    }
}

/// A Parse body split into (statement name, query text, tail after the name).
pub fn split_parse(body: &Bytes) -> Result<(String, &[u8], Bytes), ReadError> {
    let mut r = BodyReader::new(body);
    let name = name_key(r.cstr_bytes()?).into_owned();
    let tail_start = body.len() - r.remaining();
    let sql = r.cstr_bytes()?;
    let n = r.i16()?;
    if n < 0 || r.remaining() != n as usize * 4 {
        return Err(ReadError("bad parameter type count in Parse"));
    }
    Ok((name, sql, body.slice(tail_start..)))
}

/// A Bind body split into (portal, statement name, offset of the rest).
pub fn split_bind(body: &[u8]) -> Result<(&[u8], Cow<'_, str>, usize), ReadError> {
    let mut r = BodyReader::new(body);
    let portal = r.cstr_bytes()?;
    let stmt = name_key(r.cstr_bytes()?);
    Ok((portal, stmt, body.len() - r.remaining()))
}

/// The Bind frame with its statement name replaced.
pub fn put_rewritten_bind(buf: &mut BytesMut, body: &[u8], portal: &[u8], rest: usize, stmt: &str) {
    build_into(buf, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, stmt.as_bytes());
        b.put_slice(&body[rest..]);
    })
}

/// Describe and Close bodies: ('S' or 'P', name).
pub fn split_target(body: &[u8]) -> Result<(u8, Cow<'_, str>), ReadError> {
    let mut r = BodyReader::new(body);
    let kind = r.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(ReadError("Describe/Close target must be 'S' or 'P'"));
    }
    Ok((kind, name_key(r.cstr_bytes()?)))
}

/// The server name pgroute uses for a statement name the client has not prepared: no
/// such statement exists on any server (pgroute prepares only `pgr_<hash>` names), so the
/// server answers "does not exist"; `client_name` reads the name back for the client.
pub fn missing_name(name: &str) -> String {
    name.bytes().fold(String::from(MISSING), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

const MISSING: &str = "pgr_missing_";

/// The client's name inside a server name made by `missing_name`.
pub fn client_name(server_name: &str) -> Option<String> {
    let hex = server_name.strip_prefix(MISSING)?;
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    Some(String::from_utf8_lossy(&bytes?).into_owned())
}

/// A server message's text with every quoted server statement name (`"pgr_..."`) shown
/// as the client's: `lookup` maps a `pgr_<hash>` name to the client's name, and names
/// made by `missing_name` are read back. One pass from left to right: a replacement is
/// never searched again, so no name (the client may call its statement `pgr_<hash>`
/// itself) can make it loop, and the work is linear in the message's size.
pub fn show_client_names(body: &[u8], lookup: impl Fn(&str) -> Option<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = memchr::memmem::find(rest, b"\"pgr_") {
        let Some(len) = memchr::memchr(b'"', &rest[at + 1..]) else { break };
        let (head, quoted) = (&rest[..at + 1], &rest[at + 1..at + 1 + len]);
        out.extend_from_slice(head);
        let server = String::from_utf8_lossy(quoted);
        match lookup(&server).or_else(|| client_name(&server)) {
            Some(name) => out.extend_from_slice(name.as_bytes()),
            None => out.extend_from_slice(quoted),
        }
        out.push(b'"');
        rest = &rest[at + 2 + len..];
    }
    out.extend_from_slice(rest);
    out
}

pub fn put_target(buf: &mut BytesMut, tag: u8, kind: u8, name: &str) {
    build_into(buf, tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bodies_split_and_rebuild() {
        let body = Bytes::from_static(b"s1\0select $1\0\x00\x01\x00\x00\x00\x17");
        let (name, sql, tail) = split_parse(&body).unwrap();
        assert_eq!((name.as_str(), sql), ("s1", &b"select $1"[..]));
        let p = Prepared::new(true, tail.clone(), statement_hash(&tail), Arc::new(Class::read("read")));
        let mut buf = BytesMut::new();
        p.put_parse(&mut buf);
        let f = crate::protocol::split_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(split_parse(&Bytes::copy_from_slice(f.body())).unwrap().0, p.server_name);
        assert!(p.server_name.starts_with("pgr_"));
        assert!(split_parse(&Bytes::from_static(b"s1\0select\0\x00\x02\0\0\0\x17")).is_err());
        assert!(split_parse(&Bytes::from_static(b"s1\0select")).is_err());
    }

    #[test]
    fn bind_statement_name_is_rewritten_and_rest_kept() {
        let body = b"portal\0s1\0\x00\x00\x00\x00\x00\x00";
        let (portal, stmt, rest) = split_bind(body).unwrap();
        assert_eq!((portal, stmt.as_ref()), (&b"portal"[..], "s1"));
        let mut buf = BytesMut::from(&b"leading"[..]);
        put_rewritten_bind(&mut buf, body, portal, rest, "pgr_x");
        let _ = buf.split_to(7);
        let f = crate::protocol::split_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.body(), b"portal\0pgr_x\0\x00\x00\x00\x00\x00\x00");
        assert!(split_bind(b"portal-without-end").is_err());
        assert!(split_target(b"Xname\0").is_err());
        // Names in another encoding stay distinct, and never equal a UTF-8 name.
        assert_eq!(split_target(b"S\xe9\0").unwrap().1, "\u{0}e9");
        assert_ne!(name_key(b"\xe9"), name_key(b"\xe8"));
        assert_eq!(client_name(&missing_name("s1")).as_deref(), Some("s1"));
        assert_eq!(client_name("pgr_0123"), None);
    }

    /// Issue 22, item 1: a client statement named exactly like its server copy made the
    /// rewrite find its own replacement forever (one spinning runtime thread).
    #[test]
    fn a_client_name_equal_to_the_server_name_is_shown_once() {
        let body = b"SERROR\0Mbind message supplies 1 parameters, but prepared statement \"pgr_00ff\" requires 0\0\0";
        let shown = show_client_names(body, |s| (s == "pgr_00ff").then(|| "pgr_00ff".to_string()));
        assert_eq!(shown, body.to_vec());
        let shown = show_client_names(body, |s| (s == "pgr_00ff").then(|| "\"pgr_00ff\" \"pgr_00ff\"".to_string()));
        assert_eq!(shown.windows(8).filter(|w| w == b"pgr_00ff").count(), 2);
        let missing = format!("x \"{}\" and \"pgr_unknown\" \"pgr_", missing_name("s1"));
        let shown = show_client_names(missing.as_bytes(), |_| None);
        assert_eq!(String::from_utf8(shown).unwrap(), "x \"s1\" and \"pgr_unknown\" \"pgr_");
    }
}
