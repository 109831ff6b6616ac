//! A raw protocol-3 client for tests that must control every byte: pipelines, large and
//! non-UTF-8 messages, COPY, exact reply sequences. Replies are rendered as comparable
//! text lines (`render`), so a session through pgroute can be compared line by line with
//! the same session on a direct connection.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use pgroute::auth::{md5, scram};
use pgroute::protocol::startup_message;

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Bytes,
}

pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    /// Backend pid from BackendKeyData (pgroute's own through the proxy).
    pub pid: i32,
    pub secret: i32,
}

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(tag);
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cstr(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(s);
    b.push(0);
}

pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

pub fn parse(name: &str, sql: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind with text parameters (`None` is NULL) and text results.
pub fn bind(portal: &str, stmt: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal.as_bytes());
    cstr(&mut b, stmt.as_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &b)
}

pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal.as_bytes());
    b.extend_from_slice(&max_rows.to_be_bytes());
    frame(b'E', &b)
}

pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name.as_bytes());
    frame(b'D', &b)
}

pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name.as_bytes());
    frame(b'C', &b)
}

pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

pub fn copy_data(data: &[u8]) -> Vec<u8> {
    frame(b'd', data)
}

pub fn copy_done() -> Vec<u8> {
    frame(b'c', &[])
}

impl Wire {
    /// Connects and logs in (trust, cleartext, md5 or SCRAM-SHA-256); returns the client
    /// and the messages of the login up to the first ReadyForQuery.
    pub async fn connect(port: u16, user: &str, password: &str, params: &[(&str, &str)]) -> (Wire, Vec<Msg>) {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut w = Wire { stream, buf: BytesMut::new(), pid: 0, secret: 0 };
        let mut all = vec![("user", user), ("database", "app")];
        all.extend_from_slice(params);
        w.send(&startup_message(&all)).await;
        let mut scram: Option<scram::ClientExchange> = None;
        let mut login = Vec::new();
        loop {
            let m = w.read().await;
            match m.tag {
                b'R' => {
                    let mut body = m.body.clone();
                    match body.get_i32() {
                        0 => {}
                        3 => w.send(&frame(b'p', &[password.as_bytes(), b"\0"].concat())).await,
                        5 => {
                            let salt: [u8; 4] = body[..4].try_into().expect("salt");
                            let r = md5::response(user, password, &salt);
                            w.send(&frame(b'p', &[r.as_bytes(), b"\0"].concat())).await;
                        }
                        10 => {
                            let (ex, first) = scram::ClientExchange::start(
                                scram::Credential::Password(password),
                                scram::ClientBinding::Unsupported,
                            );
                            scram = Some(ex);
                            let mut b = Vec::new();
                            cstr(&mut b, b"SCRAM-SHA-256");
                            b.extend_from_slice(&(first.len() as i32).to_be_bytes());
                            b.extend_from_slice(first.as_bytes());
                            w.send(&frame(b'p', &b)).await;
                        }
                        11 => {
                            let ex = scram.as_mut().expect("SASL started");
                            let fin = ex.respond(&body).expect("scram");
                            w.send(&frame(b'p', fin.as_bytes())).await;
                        }
                        12 => {}
                        other => panic!("unsupported auth request {other}"),
                    }
                }
                b'K' => {
                    let mut b = m.body.clone();
                    w.pid = b.get_i32();
                    w.secret = b.get_i32();
                    login.push(m);
                }
                b'E' => panic!("login failed: {}", render(&m)),
                b'Z' => {
                    login.push(m);
                    return (w, login);
                }
                _ => login.push(m),
            }
        }
    }

    /// A connection that has not logged in (for tests of the login itself).
    pub fn unauthenticated(stream: TcpStream) -> Wire {
        Wire { stream, buf: BytesMut::new(), pid: 0, secret: 0 }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Sends in pieces of `chunk` bytes with a pause between them, as a slow network
    /// delivers a large message.
    pub async fn send_slowly(&mut self, bytes: &[u8], chunk: usize) {
        for piece in bytes.chunks(chunk) {
            self.stream.write_all(piece).await.expect("send");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// The next message; panics when the connection closes.
    pub async fn read(&mut self) -> Msg {
        self.try_read().await.expect("server closed the connection")
    }

    /// The next message, or `None` once the connection is closed.
    pub async fn try_read(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).freeze();
                    return Some(Msg { tag, body });
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the `n`th ReadyForQuery (or the connection closes).
    pub async fn until_ready(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            let Some(m) = self.try_read().await else {
                out.push(Msg { tag: b'!', body: Bytes::from_static(b"connection closed") });
                break;
            };
            seen += usize::from(m.tag == b'Z');
            out.push(m);
        }
        out
    }

    /// A simple Query and its replies.
    pub async fn query(&mut self, sql: &[u8]) -> Vec<Msg> {
        self.send(&query(sql)).await;
        self.until_ready(1).await
    }

    /// The first column of every row of a simple Query, as text.
    pub async fn column(&mut self, sql: &str) -> Vec<Option<String>> {
        rows(&self.query(sql.as_bytes()).await).into_iter().map(|r| r.into_iter().next().flatten()).collect()
    }

    pub async fn terminate(mut self) {
        let _ = self.stream.write_all(&frame(b'X', &[])).await;
    }
}

/// DataRow values as text (lossy for non-UTF-8).
pub fn rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let mut b = m.body.clone();
            let n = b.get_i16();
            (0..n)
                .map(|_| {
                    let len = b.get_i32();
                    (len >= 0).then(|| {
                        let v = b.split_to(len as usize);
                        String::from_utf8_lossy(&v).into_owned()
                    })
                })
                .collect()
        })
        .collect()
}

/// The SQLSTATEs of the ErrorResponses among `msgs`.
pub fn errors(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter(|m| m.tag == b'E').map(|m| field(&m.body, b'C').unwrap_or_default()).collect()
}

fn field(body: &[u8], code: u8) -> Option<String> {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let end = body[i + 1..].iter().position(|&b| b == 0)? + i + 1;
        if body[i] == code {
            return Some(String::from_utf8_lossy(&body[i + 1..end]).into_owned());
        }
        i = end + 1;
    }
    None
}

/// A message as a line of text that is the same through pgroute and directly whenever
/// the client could not tell the two apart: process ids, table OIDs, and where in the
/// server's source an error was raised are left out.
pub fn render(m: &Msg) -> String {
    render_for(m, 0)
}

/// `render`, telling notifications from the client's own backend (`pid`) from others'.
pub fn render_for(m: &Msg, pid: i32) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match m.tag {
        b'E' | b'N' => {
            let keep = [b'S', b'C', b'M', b'D', b'H', b'P', b'W'];
            let fields: Vec<String> =
                keep.iter().filter_map(|&c| field(&m.body, c).map(|v| format!("{}={v}", c as char))).collect();
            format!("{} {}", m.tag as char, fields.join(" | "))
        }
        b'K' => "K".into(),
        b'A' => {
            // Whose: this client's own backend (as BackendKeyData said), or another's.
            let mut b = m.body.clone();
            let own = if b.get_i32() == pid { "own" } else { "other" };
            format!("A {own} {}", text(&b).replace('\0', "|"))
        }
        b'T' => {
            let mut b = m.body.clone();
            let n = b.get_i16();
            let mut cols = Vec::new();
            for _ in 0..n {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                let name = text(&b[..end]);
                b.advance(end + 1);
                let (_table, _attnum, ty, size, typmod, format) =
                    (b.get_i32(), b.get_i16(), b.get_i32(), b.get_i16(), b.get_i32(), b.get_i16());
                cols.push(format!("{name}:{ty}:{size}:{typmod}:{format}"));
            }
            format!("T {}", cols.join(","))
        }
        b'D' => format!("D {:?}", rows(std::slice::from_ref(m))[0]),
        tag => format!("{} {}", tag as char, text(&m.body).replace('\0', "|")),
    }
}

/// The causal token a reply reported (`ParameterStatus pgroute.commit_lsn`), if any.
pub fn commit_token(msgs: &[Msg]) -> Option<String> {
    msgs.iter().filter(|m| m.tag == b'S').find_map(|m| {
        let value = std::str::from_utf8(&m.body).ok()?.strip_prefix("pgroute.commit_lsn\0")?;
        Some(value.trim_end_matches('\0').to_string())
    })
}

pub fn render_all(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().map(render).collect()
}
