//! Client messages on their way to the active server: prepared statements mapped to
//! server names (and re-prepared where missing), units closed at Sync/Query.

use std::sync::Arc;

use super::{End, Expect, Session};
use crate::frontend::prepared::{self, Prepared};
use crate::protocol::{sqlstate, tag, BodyReader, Frame, PgError};

fn malformed(e: impl std::fmt::Display) -> End {
    End::Fatal(PgError::fatal(sqlstate::PROTOCOL_VIOLATION, format!("pgroute: {e}")))
}

impl Session {
    pub(super) fn forward(&mut self, f: Frame) -> Result<(), End> {
        let node = self.active.ok_or_else(|| End::Fatal(super::internal()))?;
        tracing::trace!(tag = %(f.tag() as char), "client frame");
        match f.tag() {
            tag::QUERY => {
                let sql = BodyReader::new(f.body()).cstr().map_err(malformed)?;
                let class = match self.unit_classes.pop_front() {
                    Some(c) => c,
                    None => self.shared.classifier.classify(sql),
                };
                self.unit_changes.extend(class.settings.iter().cloned());
                self.note_pin(&class);
                if let Some(conn) = self.held[node].as_mut() {
                    conn.unnamed = None;
                }
                self.swbuf.extend_from_slice(f.raw());
                self.end_unit(false);
            }
            tag::PARSE => {
                let body = f.raw().slice(5..);
                let (name, sql, tail) = prepared::split_parse(&body).map_err(malformed)?;
                let class = match self.unit_classes.pop_front() {
                    Some(c) => c,
                    None => self.shared.classifier.classify(sql),
                };
                let stmt = Arc::new(Prepared::new(!name.is_empty(), tail, class));
                let conn = self.held[node].as_mut().ok_or_else(|| End::Fatal(super::internal()))?;
                if name.is_empty() {
                    conn.unnamed = Some(stmt.hash);
                    self.swbuf.extend_from_slice(f.raw());
                    self.expect.push_back(Expect::Parse { forward: true, hash: None });
                    self.unnamed = Some(stmt);
                } else {
                    // Drop any server copy first: our record of what a connection holds
                    // can be wrong after an error skipped messages (closing a missing
                    // statement is not an error), and a stale copy would fail the Parse.
                    let close = prepared::target_frame(tag::CLOSE, b'S', &stmt.server_name);
                    self.swbuf.extend_from_slice(close.raw());
                    self.expect.push_back(Expect::Close { forward: false });
                    conn.prepared.insert(stmt.hash);
                    self.swbuf.extend_from_slice(stmt.parse_frame().raw());
                    self.expect.push_back(Expect::Parse { forward: true, hash: Some(stmt.hash) });
                    self.statements.insert(name, stmt);
                }
            }
            tag::BIND => {
                let (portal, name, rest) = prepared::split_bind(f.body()).map_err(malformed)?;
                match self.resolve(name) {
                    Some(stmt) => {
                        self.unit_changes.extend(stmt.class.settings.iter().cloned());
                        self.note_pin(&stmt.class);
                        self.ensure_prepared(node, &stmt)?;
                        if name.is_empty() {
                            self.swbuf.extend_from_slice(f.raw());
                        } else {
                            let b = prepared::rewrite_bind(f.body(), portal, rest, &stmt.server_name);
                            self.swbuf.extend_from_slice(b.raw());
                        }
                    }
                    None => self.swbuf.extend_from_slice(f.raw()),
                }
            }
            tag::DESCRIBE => {
                let (kind, name) = prepared::split_target(f.body()).map_err(malformed)?;
                match self.resolve(name).filter(|_| kind == b'S') {
                    Some(stmt) => {
                        self.ensure_prepared(node, &stmt)?;
                        let d = prepared::target_frame(tag::DESCRIBE, b'S', &stmt.server_name);
                        self.swbuf.extend_from_slice(d.raw());
                    }
                    None => self.swbuf.extend_from_slice(f.raw()),
                }
            }
            tag::CLOSE => {
                let (kind, name) = prepared::split_target(f.body()).map_err(malformed)?;
                let named = (kind == b'S' && !name.is_empty()).then(|| self.statements.remove(name)).flatten();
                match named {
                    Some(stmt) => {
                        let conn = self.held[node].as_mut().ok_or_else(|| End::Fatal(super::internal()))?;
                        conn.prepared.remove(&stmt.hash);
                        let c = prepared::target_frame(tag::CLOSE, b'S', &stmt.server_name);
                        self.swbuf.extend_from_slice(c.raw());
                    }
                    None => self.swbuf.extend_from_slice(f.raw()),
                }
                self.expect.push_back(Expect::Close { forward: true });
            }
            tag::SYNC if self.copy_in => self.swbuf.extend_from_slice(f.raw()),
            tag::SYNC | tag::FUNCTION_CALL => {
                self.swbuf.extend_from_slice(f.raw());
                self.end_unit(f.tag() == tag::SYNC);
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                self.copy_in = false;
                self.swbuf.extend_from_slice(f.raw());
            }
            tag::EXECUTE | tag::FLUSH | tag::COPY_DATA => {
                self.swbuf.extend_from_slice(f.raw());
            }
            tag::TERMINATE => return Err(End::Client),
            other => {
                return Err(End::Fatal(PgError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid frontend message type {}", other as char),
                )))
            }
        }
        Ok(())
    }

    /// A statement that leaves state on its server pins the session, also when it arrives
    /// inside a unit already routed (to the primary: see `partial_unit`).
    pub(super) fn note_pin(&mut self, class: &crate::classify::Class) {
        if let (Some(why), None) = (&class.pins, &self.pinned) {
            tracing::debug!(reason = %why, "session pinned to the primary");
            self.pinned = Some(why.clone());
        }
    }

    /// A unit ends at Query, Sync or FunctionCall: each gets one ReadyForQuery.
    fn end_unit(&mut self, sync: bool) {
        let changes = std::mem::take(&mut self.unit_changes);
        let wrote = std::mem::take(&mut self.unit_wrote);
        let keys = std::mem::take(&mut self.unit_keys);
        self.expect.push_back(Expect::Ready { changes, sync, wrote, keys });
        self.in_flight += 1;
        self.unit_open = false;
        self.unit_classes.clear();
    }

    fn resolve(&self, name: &str) -> Option<Arc<Prepared>> {
        if name.is_empty() {
            self.unnamed.clone()
        } else {
            self.statements.get(name).cloned()
        }
    }

    /// Injects a Parse when the active server lacks the statement; its ParseComplete is
    /// swallowed.
    fn ensure_prepared(&mut self, node: usize, stmt: &Prepared) -> Result<(), End> {
        let conn = self.held[node].as_mut().ok_or_else(|| End::Fatal(super::internal()))?;
        let present = if stmt.server_name.is_empty() {
            conn.unnamed == Some(stmt.hash)
        } else {
            conn.prepared.contains(&stmt.hash)
        };
        if present {
            return Ok(());
        }
        if stmt.server_name.is_empty() {
            conn.unnamed = Some(stmt.hash);
            self.expect.push_back(Expect::Parse { forward: false, hash: None });
        } else {
            conn.prepared.insert(stmt.hash);
            let close = prepared::target_frame(tag::CLOSE, b'S', &stmt.server_name);
            self.swbuf.extend_from_slice(close.raw());
            self.expect.push_back(Expect::Close { forward: false });
            self.expect.push_back(Expect::Parse { forward: false, hash: Some(stmt.hash) });
        }
        self.swbuf.extend_from_slice(stmt.parse_frame().raw());
        Ok(())
    }
}
