//! What a console command answers: a result set of text columns, or a command tag, written
//! as the protocol messages a server would send for a simple Query.

use bytes::{BufMut, BytesMut};

use crate::protocol::{build, put_cstr, PgError};

/// The `text` type's OID.
const TEXT: i32 = 25;

pub enum Reply {
    Rows(Rows),
    /// A command tag (`RELOAD`, `PAUSE`, ...), after optional notices.
    Done {
        tag: String,
        notices: Vec<String>,
    },
    Error(PgError),
    /// An empty query.
    Empty,
}

impl Reply {
    pub fn done(tag: &str) -> Reply {
        Reply::Done { tag: tag.to_string(), notices: Vec::new() }
    }

    pub fn error(code: &str, message: impl Into<String>) -> Reply {
        Reply::Error(PgError::error(code, message))
    }

    /// The messages for this reply, appended to `out` (ReadyForQuery is the caller's).
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Reply::Rows(r) => r.write(out),
            Reply::Done { tag, notices } => {
                for n in notices {
                    out.extend_from_slice(notice(n).raw());
                }
                out.extend_from_slice(command_complete(tag).raw());
            }
            Reply::Error(e) => out.extend_from_slice(e.to_frame().raw()),
            Reply::Empty => out.extend_from_slice(build(b'I', |_| {}).raw()),
        }
    }
}

/// A result set: column names, then rows of optional text.
pub struct Rows {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    pub fn new(columns: &[&'static str]) -> Rows {
        Rows { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Appends a row; it must have one value per column.
    pub fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    fn write(&self, out: &mut BytesMut) {
        let description = build(b'T', |b| {
            b.put_i16(self.columns.len() as i16);
            for c in &self.columns {
                put_cstr(b, c.as_bytes());
                b.put_i32(0);
                b.put_i16(0);
                b.put_i32(TEXT);
                b.put_i16(-1);
                b.put_i32(-1);
                b.put_i16(0);
            }
        });
        out.extend_from_slice(description.raw());
        for row in &self.rows {
            let data = build(b'D', |b| {
                b.put_i16(row.len() as i16);
                for v in row {
                    match v {
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v.as_bytes());
                        }
                        None => b.put_i32(-1),
                    }
                }
            });
            out.extend_from_slice(data.raw());
        }
        out.extend_from_slice(command_complete(&format!("SHOW {}", self.rows.len())).raw());
    }
}

fn command_complete(tag: &str) -> crate::protocol::Frame {
    build(b'C', |b| put_cstr(b, tag.as_bytes()))
}

fn notice(message: &str) -> crate::protocol::Frame {
    build(b'N', |b| {
        for (field, value) in [(b'S', "NOTICE"), (b'V', "NOTICE"), (b'C', "00000"), (b'M', message)] {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    })
}

/// `Some(text)` for a value that is known.
pub fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}
