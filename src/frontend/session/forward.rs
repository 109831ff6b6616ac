//! Client messages on their way to the active server: prepared statements mapped to
//! server names (and re-prepared where missing), units closed at Sync/Query.

use std::sync::Arc;
use std::time::Instant;

use super::unit::SplitParse;
use super::{End, Expect, Own, Session};
use crate::classify::{Class, TxOp};
use crate::frontend::prepared::{self, Prepared};

use crate::protocol::{sqlstate, tag, BodyReader, Frame, PgError};

fn malformed(e: impl std::fmt::Display) -> End {
    End::Fatal(PgError::fatal(sqlstate::PROTOCOL_VIOLATION, format!("pgroute: {e}")))
}

impl Session {
    pub(super) fn forward(&mut self, f: Frame) -> Result<(), End> {
        let node = self.server.active.ok_or_else(|| End::Fatal(super::internal()))?;
        tracing::trace!(tag = %(f.tag() as char), "client frame");
        if self.tx.doubt.active() {
            let t = match (f.tag(), f.body().first()) {
                (tag::DESCRIBE, Some(b'S')) => super::in_doubt::DESCRIBE_STATEMENT,
                (tag::DESCRIBE, _) => super::in_doubt::DESCRIBE_PORTAL,
                (t, _) => t,
            };
            self.tx.doubt.sent(t);
        }
        match f.tag() {
            tag::QUERY => self.forward_query(node, &f)?,
            tag::PARSE => self.forward_parse(node, &f)?,
            tag::BIND => self.forward_bind(node, &f)?,
            tag::EXECUTE => self.forward_execute(&f)?,
            tag::DESCRIBE => self.forward_describe(node, &f)?,
            tag::CLOSE => self.forward_close(node, &f)?,
            tag::SYNC if self.server.copy_in => self.server.wbuf.extend_from_slice(f.raw()),
            tag::SYNC => {
                self.server.wbuf.extend_from_slice(f.raw());
                self.end_unit(true);
            }
            tag::FUNCTION_CALL => {
                self.server.wbuf.extend_from_slice(f.raw());
                self.expect_statement(&Arc::new(Class::write("write:function call")), 0);
                self.end_unit(false);
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                self.server.copy_in = false;
                self.server.wbuf.extend_from_slice(f.raw());
            }
            tag::FLUSH | tag::COPY_DATA => {
                self.server.wbuf.extend_from_slice(f.raw());
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

    /// A simple Query: forwarded as it is, one statement expected per statement of its text.
    fn forward_query(&mut self, node: usize, f: &Frame) -> Result<(), End> {
        let sql = BodyReader::new(f.body()).cstr_bytes().map_err(malformed)?;
        let class = match self.unit.classes.pop_front() {
            Some((c, _)) => c,
            None => self.classify_text(sql, None),
        };
        // COPY FROM is a write: reads skip the scan of their text.
        if class.is_write() {
            self.unit.commits.may_copy |= super::commit_lsn::mentions_copy(sql);
        }
        self.note_pin(&class);
        if let Some(conn) = self.server.held.get_mut(node) {
            conn.unnamed = None;
            // The client's own SQL may drop or run pgroute's statements there: no
            // other client gets this connection after it.
            conn.poisoned |= class.touches_statements;
        }
        self.server.wbuf.extend_from_slice(f.raw());
        for index in 0..class.steps.len() {
            self.expect_statement(&class, index);
        }
        self.end_unit(false);
        Ok(())
    }

    /// A Parse: named statements go to the server under their server names.
    fn forward_parse(&mut self, node: usize, f: &Frame) -> Result<(), End> {
        let (SplitParse { name, tail, hash }, class) = match self.unit.classes.pop_front() {
            Some((class, Some(split))) => (split, class),
            scanned => {
                let body = f.raw().slice(5..);
                let (name, sql, tail) = prepared::split_parse(&body).map_err(malformed)?;
                let hash = prepared::statement_hash(&tail);
                let class = match scanned {
                    Some((c, _)) => c,
                    None => self.classify_text(sql, Some((&tail, hash))),
                };
                (SplitParse { name, tail, hash }, class)
            }
        };
        let stmt = Arc::new(Prepared::new(!name.is_empty(), tail, hash, class));
        let conn = self.server.held.get_mut(node).ok_or_else(|| End::Fatal(super::internal()))?;
        if name.is_empty() {
            conn.unnamed = Some(stmt.hash);
            self.server.wbuf.extend_from_slice(f.raw());
            self.server.expect.push_back(Expect::Parse { forward: true, hash: None, name: None });
            self.prepared.unnamed = Some(stmt);
        } else if let Some(taken) = self.prepared.named.get(&name).cloned() {
            // As on one server: the name is taken until Closed or DEALLOCATEd. The
            // Parse goes to the server under the taken statement's server name, so
            // the server itself answers 42P05 (before it would say the transaction
            // is aborted), and the error is shown with the client's name.
            // Where this connection lacks it, the name is taken first with the new
            // text (allowed exactly where the client's Parse is, as in an aborted
            // transaction), and forgotten: its next use prepares it afresh.
            if !self.holds(node, &taken)? {
                if let Some(conn) = self.server.held.get_mut(node) {
                    // With the new text, or (when an earlier Parse in flight made
                    // it after all) with the old: either way not the statement.
                    conn.prepared.remove(&taken.hash);
                    conn.stray.insert(taken.hash);
                }
                Prepared::put_renamed_parse(&mut self.server.wbuf, &taken.server_name, &stmt.tail);
                self.server.expect.push_back(Expect::Parse { forward: false, hash: None, name: None });
            }
            Prepared::put_renamed_parse(&mut self.server.wbuf, &taken.server_name, &stmt.tail);
            self.server.expect.push_back(Expect::Parse { forward: true, hash: None, name: None });
            self.unit.names.push(name);
        } else {
            // Drop any server copy first: our record of what a connection holds
            // can be wrong after an error skipped messages (closing a missing
            // statement is not an error), and a stale copy would fail the Parse.
            prepared::put_target(&mut self.server.wbuf, tag::CLOSE, b'S', &stmt.server_name);
            self.server.expect.push_back(Expect::Close { forward: false, closed: None });
            conn.prepared.insert(stmt.hash);
            stmt.put_parse(&mut self.server.wbuf);
            self.server.expect.push_back(Expect::Parse {
                forward: true,
                hash: Some(stmt.hash),
                name: Some(name.clone()),
            });
            self.prepared.named.insert(name, stmt);
        }
        Ok(())
    }

    /// A Bind: the statement it names prepared where missing, under its server name.
    fn forward_bind(&mut self, node: usize, f: &Frame) -> Result<(), End> {
        let (portal, name, rest) = prepared::split_bind(f.body()).map_err(malformed)?;
        let portal_key = prepared::name_key(portal).into_owned();
        match self.prepared.resolve(&name) {
            Some(stmt) => {
                self.note_pin(&stmt.class);
                self.ensure_prepared(node, &stmt)?;
                if name.is_empty() {
                    self.server.wbuf.extend_from_slice(f.raw());
                } else {
                    prepared::put_rewritten_bind(&mut self.server.wbuf, f.body(), portal, rest, &stmt.server_name);
                    self.unit.names.push(name.to_string());
                }
                self.prepared.bind_portal(portal_key, stmt.class.clone());
            }
            // A name this client has not prepared: the server must say it does
            // not exist, whatever another client left under that raw name.
            None if !name.is_empty() => {
                let missing = prepared::missing_name(&name);
                prepared::put_rewritten_bind(&mut self.server.wbuf, f.body(), portal, rest, &missing);
            }
            None => self.server.wbuf.extend_from_slice(f.raw()),
        }
        Ok(())
    }

    /// An Execute runs one statement of its portal's class.
    fn forward_execute(&mut self, f: &Frame) -> Result<(), End> {
        let portal = BodyReader::new(f.body()).cstr_bytes().map_err(malformed)?;
        let key = prepared::name_key(portal);
        let class = match self.prepared.portals.iter().rev().find(|(p, _)| *p == key) {
            Some((_, c)) => c.clone(),
            // Not bound by us (the server will say so): count it as a write.
            None => Arc::new(Class::write("write:unknown portal")),
        };
        self.expect_statement(&class, 0);
        self.server.wbuf.extend_from_slice(f.raw());
        Ok(())
    }

    /// A Describe of a statement names its server copy.
    fn forward_describe(&mut self, node: usize, f: &Frame) -> Result<(), End> {
        let (kind, name) = prepared::split_target(f.body()).map_err(malformed)?;
        match self.prepared.resolve(&name).filter(|_| kind == b'S') {
            Some(stmt) => {
                self.ensure_prepared(node, &stmt)?;
                prepared::put_target(&mut self.server.wbuf, tag::DESCRIBE, b'S', &stmt.server_name);
                self.unit.names.push(name.to_string());
            }
            None if kind == b'S' && !name.is_empty() => {
                prepared::put_target(&mut self.server.wbuf, tag::DESCRIBE, b'S', &prepared::missing_name(&name));
            }
            None => self.server.wbuf.extend_from_slice(f.raw()),
        }
        Ok(())
    }

    /// A Close of a named statement closes its server copy unless another of the client's names shares it.
    fn forward_close(&mut self, node: usize, f: &Frame) -> Result<(), End> {
        let (kind, name) = prepared::split_target(f.body()).map_err(malformed)?;
        let named = (kind == b'S' && !name.is_empty()).then(|| self.prepared.named.remove(name.as_ref())).flatten();
        let closed = match named {
            Some(stmt) => {
                // Another of the client's names for the same text keeps the server
                // statement (it may be needed where it cannot be prepared again, as
                // in an aborted transaction): the Close then names none.
                let shared = self.prepared.named.values().any(|p| p.hash == stmt.hash);
                let conn = self.server.held.get_mut(node).ok_or_else(|| End::Fatal(super::internal()))?;
                let target = if shared {
                    prepared::missing_name(&name)
                } else {
                    conn.prepared.remove(&stmt.hash);
                    stmt.server_name.clone()
                };
                prepared::put_target(&mut self.server.wbuf, tag::CLOSE, b'S', &target);
                Some((name.into_owned(), stmt))
            }
            // Closing a statement that does not exist is not an error.
            None if kind == b'S' && !name.is_empty() => {
                prepared::put_target(&mut self.server.wbuf, tag::CLOSE, b'S', &prepared::missing_name(&name));
                None
            }
            None => {
                self.server.wbuf.extend_from_slice(f.raw());
                None
            }
        };
        self.server.expect.push_back(Expect::Close { forward: true, closed });
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

    /// The reply that ends statement `index` of `class` comes next (after what is
    /// expected already).
    fn expect_statement(&mut self, class: &Arc<Class>, index: usize) {
        let writes = self.unit.forced_write
            || Expect::step(class, index).writes_data
            || class.steps.is_empty() && class.writes_data;
        let keys = if writes { self.unit.keys.clone() } else { Vec::new() };
        let tx = &Expect::step(class, index).tx;
        let ends_commit = matches!(tx, TxOp::Commit { .. } | TxOp::Prepare);
        self.unit.commits.begun |= matches!(tx, TxOp::Begin);
        // A write inside a block commits only with its COMMIT. Whether a block is open is
        // certain when no earlier unit is still in flight; otherwise assume it may not be.
        let in_block = self.unit.commits.begun || (self.server.in_flight == 0 && !self.tx.status.idle());
        // The COMMIT of a block known to have written nothing (settled, no write before it,
        // here or earlier) commits no data: there is no position to learn behind it.
        let wrote_nothing = matches!(tx, TxOp::Commit { .. })
            && self.server.in_flight == 0
            && !self.tx.status.idle()
            && !self.unit.commits.begun
            && !self.unit.commits.writes
            && !self.tx.ledger.wrote();
        self.unit.commits.writes |= writes;
        self.unit.commits.may_commit |= (ends_commit && !wrote_nothing) || (writes && !in_block);
        self.unit.commits.may_copy |= super::commit_lsn::mentions_copy(class.reason.as_bytes());
        self.server.expect.push_back(Expect::Statement { class: class.clone(), index, writes, keys });
    }

    /// A unit ends at Query, Sync or FunctionCall: each gets one ReadyForQuery.
    fn end_unit(&mut self, sync: bool) {
        self.unit.forced_write = false;
        self.unit.keys.clear();
        let names = std::mem::take(&mut self.unit.names);
        let split = std::mem::take(&mut self.answer.splitting);
        let commits = self.unit.commits.may_commit;
        self.tx.doubt.seal();
        self.server.expect.push_back(Expect::Ready { sync, names, split, own: None, commits, sent: Instant::now() });
        self.server.in_flight += 1;
        self.ask_commit_lsn(split);
        self.restore_rule_timeout();
        self.client.intake.close();
        self.unit.classes.clear();
    }

    /// Does the server connection of `node` hold `stmt` for certain? A Parse of it in an
    /// earlier unit still in flight may yet be skipped by an error there: not counted on
    /// (preparing it again is harmless).
    fn holds(&self, node: usize, stmt: &Prepared) -> Result<bool, End> {
        let earlier_units =
            self.server.expect.iter().rposition(|e| matches!(e, Expect::Ready { .. })).map_or(0, |i| i + 1);
        let in_doubt = self
            .server
            .expect
            .iter()
            .take(earlier_units)
            .any(|e| matches!(e, Expect::Parse { hash: Some(h), .. } if *h == stmt.hash));
        let conn = self.server.held.get(node).ok_or_else(|| End::Fatal(super::internal()))?;
        Ok(if stmt.server_name.is_empty() {
            conn.unnamed == Some(stmt.hash)
        } else {
            conn.prepared.contains(&stmt.hash) && !in_doubt
        })
    }

    /// A transaction is about to begin on `node`, nothing in flight: the client's named
    /// statements its connection lacks are prepared there first, in a unit of pgroute's
    /// own. Inside the transaction they could not be after an error (an aborted
    /// transaction refuses every Parse), where one server would still describe them.
    pub(super) fn prepare_for_transaction(&mut self, node: usize) -> Result<(), End> {
        let conn = self.server.held.get(node).ok_or_else(|| End::Fatal(super::internal()))?;
        let missing: Vec<Arc<Prepared>> =
            self.prepared.named.values().filter(|s| !conn.prepared.contains(&s.hash)).cloned().collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::debug!(statements = missing.len(), "statements prepared where a transaction begins");
        for stmt in &missing {
            self.ensure_prepared(node, stmt)?;
        }
        self.send_own_sync(Own::Prepare);
        Ok(())
    }

    /// Injects a Parse when the active server lacks the statement; its ParseComplete is
    /// swallowed.
    fn ensure_prepared(&mut self, node: usize, stmt: &Prepared) -> Result<(), End> {
        let present = self.holds(node, stmt)?;
        let conn = self.server.held.get_mut(node).ok_or_else(|| End::Fatal(super::internal()))?;
        if present {
            return Ok(());
        }
        if stmt.server_name.is_empty() {
            conn.unnamed = Some(stmt.hash);
            self.server.expect.push_back(Expect::Parse { forward: false, hash: None, name: None });
        } else {
            conn.prepared.insert(stmt.hash);
            prepared::put_target(&mut self.server.wbuf, tag::CLOSE, b'S', &stmt.server_name);
            self.server.expect.push_back(Expect::Close { forward: false, closed: None });
            self.server.expect.push_back(Expect::Parse { forward: false, hash: Some(stmt.hash), name: None });
        }
        stmt.put_parse(&mut self.server.wbuf);
        Ok(())
    }
}
