//! Server replies on their way to the client: forwarded as raw frames, except the few
//! pgroute must see (ReadyForQuery, ParseComplete/CloseComplete of injected messages,
//! errors, command tags that change server state, parameter reports).

use std::sync::Arc;

use bytes::Buf;

use super::ledger::Committed;
use super::state::TxStatus;
use super::{End, Expect, Own, Session};
use crate::backend::MAX_SERVER_MESSAGE;
use crate::frontend::encoding::Encoding;
use crate::frontend::prepared::{self, Prepared};
use crate::protocol::{self, tag, BodyReader, Frame, FrameRef, Peek};

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Past this many session settings, the session stays on one server (the primary)
/// rather than have them replayed wherever its next statement runs.
const MAX_REPLAYED_SETTINGS: usize = 1000;

/// The part of a unit's answer held back until the commit position behind it is known:
/// beyond this, what is held goes out (the commit is then told before its position is
/// recorded: only a unit that commits and then returns this much more can do that).
const MAX_HELD_ACK: usize = 64 * 1024;

/// Is the unit being answered now a client's, with pgroute's position query behind it?
fn position_follows(expect: &std::collections::VecDeque<Expect>) -> bool {
    let mut readies = expect.iter().filter(|e| matches!(e, Expect::Ready { .. }));
    matches!(readies.next(), Some(Expect::Ready { own: None, .. }))
        && matches!(readies.next(), Some(Expect::Ready { own: Some(Own::Position), .. }))
}

/// The unit the server is answering now: whether it is the first part of a split Query,
/// and which of pgroute's own it is.
fn unit_answering(expect: &std::collections::VecDeque<Expect>) -> Option<(bool, Option<Own>)> {
    expect.iter().find_map(|e| match e {
        Expect::Ready { split, own, .. } => Some((*split, *own)),
        _ => None,
    })
}

impl Session {
    /// Handles every complete frame the active server sent: each updates what pgroute
    /// follows, and goes to the client unless it answers something of pgroute's own.
    pub(super) fn process_server_frames(&mut self) -> Result<(), End> {
        let Some(node) = self.server.active else {
            return Ok(());
        };
        // The frames are handled where they were read: the buffer leaves the connection
        // meanwhile (the handlers borrow the session whole) and comes back without them.
        let Some(conn) = self.server.held.get_mut(node) else {
            return Err(End::Fatal(super::internal()));
        };
        let mut buf = std::mem::take(&mut conn.rbuf);
        let mut at = 0;
        let result = loop {
            let frame = match protocol::peek_frame(&buf[at..], MAX_SERVER_MESSAGE) {
                Ok(Peek::Whole(f)) => f,
                Ok(Peek::Short { missing }) => {
                    buf.advance(at);
                    buf.reserve(missing);
                    break Ok(());
                }
                Err(_) => break Err(End::Fatal(self.server_lost(node))),
            };
            at += frame.raw().len();
            self.server_frame(node, frame);
        };
        // Put back unless the connection went meanwhile (then its bytes go with it).
        if result.is_ok() {
            if let Some(conn) = self.server.held.get_mut(node) {
                conn.rbuf = buf;
            }
        }
        result?;
        self.maybe_release();
        Ok(())
    }

    /// One reply from the server: what it changes, and whether it reaches the client.
    fn server_frame(&mut self, node: usize, frame: FrameRef<'_>) {
        tracing::trace!(tag = %(frame.tag() as char), "server frame");
        if self.own_query_reply(node, frame) {
            return;
        }
        let forward = match frame.tag() {
            tag::PARSE_COMPLETE => self.injected_complete(true),
            tag::CLOSE_COMPLETE => self.injected_complete(false),
            tag::ERROR_RESPONSE => self.on_error(node, frame),
            tag::COMMAND_COMPLETE => {
                self.on_command_complete(node, frame);
                true
            }
            tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED | tag::FUNCTION_CALL_RESPONSE => {
                self.statement_ended(node, "");
                true
            }
            tag::PARAMETER_STATUS => self.on_parameter_status(node, frame),
            tag::COPY_IN_RESPONSE => {
                self.on_copy_in();
                true
            }
            tag::READY_FOR_QUERY => self.on_ready(node, frame),
            _ => true,
        };
        if forward {
            self.send_to_client(frame);
        }
    }

    /// Rows, descriptions and tags of pgroute's own queries are read here, never
    /// forwarded. Returns whether `frame` was one.
    fn own_query_reply(&mut self, node: usize, frame: FrameRef<'_>) -> bool {
        let own = match self.server.expect.front() {
            Some(Expect::Ready { own: Some(own), .. }) if own.is_query() => *own,
            _ => return false,
        };
        match frame.tag() {
            tag::DATA_ROW => self.own_row(own, node, frame.body()),
            tag::ROW_DESCRIPTION | tag::COMMAND_COMPLETE => {}
            _ => return false,
        }
        true
    }

    /// ParseComplete (`parse`) or CloseComplete: forwarded unless it answers a message
    /// pgroute injected.
    fn injected_complete(&mut self, parse: bool) -> bool {
        let forward = match self.server.expect.front() {
            Some(Expect::Parse { forward, .. }) if parse => *forward,
            Some(Expect::Close { forward, .. }) if !parse => *forward,
            _ => return true,
        };
        self.server.expect.pop_front();
        forward
    }

    /// An ErrorResponse: the unit's statements up to its Sync are skipped by the server.
    /// Returns whether the client sees it (not when it answers pgroute's own unit).
    fn on_error(&mut self, node: usize, frame: FrameRef<'_>) -> bool {
        let mut forward = true;
        if let Some(own) = unit_answering(&self.server.expect).and_then(|(_, own)| own) {
            // A statement prepared in an own unit is prepared again where it is used, and
            // fails there.
            self.own_failed(own, &protocol::error_fields(frame.body()).0);
            forward = false;
        } else {
            self.tx.ledger.failed();
            self.tx.failed_since_ready = true;
        }
        // An error ends COPY IN on the server, whatever the client sends next.
        self.server.copy_in = false;
        self.undo_skipped(node);
        forward
    }

    /// The server skips to the next Sync after an error: what we expected before it never
    /// comes. Undoes what pgroute recorded for those messages when it forwarded them,
    /// latest first (a Close after a Parse of the same name in one unit).
    fn undo_skipped(&mut self, node: usize) {
        let Some(conn) = self.server.held.get_mut(node) else { return };
        conn.unnamed = None;
        let mut skipped = Vec::new();
        while let Some(e) = self.server.expect.front() {
            if matches!(e, Expect::Ready { .. }) {
                break;
            }
            skipped.extend(self.server.expect.pop_front());
        }
        for e in skipped.into_iter().rev() {
            match e {
                Expect::Parse { hash, name, .. } => {
                    // Skipped with the Close in front of it: a copy from before may still
                    // be there.
                    if let Some(h) = hash {
                        conn.prepared.remove(&h);
                        conn.stray.insert(h);
                    }
                    let created = name.filter(|n| self.prepared.named.get(n).map(|p| p.hash) == hash);
                    if let Some(n) = created {
                        self.prepared.named.remove(&n);
                    }
                }
                // The client's name is back, and so is the server statement, unless a
                // later unit in flight closes or prepares it again (under another name):
                // then the next use prepares it.
                Expect::Close { closed: Some((n, stmt)), .. } => {
                    let later = self.server.expect.iter().any(|e| match e {
                        Expect::Parse { hash, .. } => *hash == Some(stmt.hash),
                        Expect::Close { closed: Some((_, p)), .. } => p.hash == stmt.hash,
                        _ => false,
                    });
                    if later {
                        conn.stray.insert(stmt.hash);
                    } else {
                        conn.prepared.insert(stmt.hash);
                    }
                    self.prepared.named.insert(n, stmt);
                }
                _ => {}
            }
        }
    }

    fn on_command_complete(&mut self, node: usize, frame: FrameRef<'_>) {
        let t = BodyReader::new(frame.body()).cstr().unwrap_or("");
        if matches!(t, "DISCARD ALL" | "DEALLOCATE ALL") {
            // Prepared statements are not transactional: gone at once, for the client as
            // on its server.
            if let Some(conn) = self.server.held.get_mut(node) {
                conn.prepared.clear();
                conn.stray.clear();
                conn.unnamed = None;
                if t == "DISCARD ALL" {
                    conn.settings_hash = u64::MAX;
                }
            }
            self.prepared.named.clear();
        }
        self.statement_ended(node, t);
    }

    /// A ParameterStatus report. Returns whether it goes to the client now.
    fn on_parameter_status(&mut self, node: usize, frame: FrameRef<'_>) -> bool {
        if let Some(conn) = self.server.held.get_mut(node) {
            conn.note_parameter(frame.body());
        }
        let mut r = BodyReader::new(frame.body());
        let name = r.cstr().unwrap_or("");
        if let Ok(v) = r.cstr() {
            self.note_parameter(name, v);
            if name == "in_hot_standby" {
                self.shared.topology.report_standby(node, v == "on");
            }
        }
        // The server reports changes just before ReadyForQuery: a split Query's first
        // part's reports wait for the client's ReadyForQuery, unless the rest reports the
        // same parameter again.
        let same_name = |f: &Frame| BodyReader::new(f.body()).cstr().ok() == Some(name);
        self.answer.reports.retain(|f| !same_name(f));
        if unit_answering(&self.server.expect).is_some_and(|(split, _)| split) {
            self.answer.reports.push(frame.to_frame());
            return false;
        }
        self.shows_client(frame)
    }

    /// Whether a report tells the client something new, as a server's would: a value
    /// other than the one the client was last told (a rolled-back or replayed setting can
    /// bring a server back to it). Records it when so.
    pub(super) fn shows_client(&mut self, frame: FrameRef<'_>) -> bool {
        let mut r = BodyReader::new(frame.body());
        let (Ok(name), Ok(value)) = (r.cstr(), r.cstr()) else {
            return true;
        };
        match self.who.shown.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) if v == value => false,
            Some((_, v)) => {
                *v = value.to_string();
                true
            }
            None => {
                self.who.shown.push((name.to_string(), value.to_string()));
                true
            }
        }
    }

    /// CopyInResponse. Syncs already sent after the COPY's Execute are ignored by the
    /// server in COPY IN: expect no ReadyForQuery for them. The COPY's implicit
    /// transaction stays open until the client's next Sync, which must reach this same
    /// server: keep the unit open.
    fn on_copy_in(&mut self) {
        let before = self.server.expect.len();
        self.server.expect.retain(|e| !matches!(e, Expect::Ready { sync: true, .. }));
        let dropped = before - self.server.expect.len();
        self.server.in_flight = self.server.in_flight.saturating_sub(dropped);
        if dropped > 0 {
            self.client.intake.reopen_for_copy();
        }
        self.server.copy_in = true;
    }

    /// ReadyForQuery ends a unit: pgroute's own, or the client's (settled in the ledger).
    /// Returns whether it goes to the client now.
    fn on_ready(&mut self, node: usize, frame: FrameRef<'_>) -> bool {
        self.server.copy_in = false;
        self.answer.holding = false;
        let status = TxStatus::from_byte(frame.body().first().copied().unwrap_or(b'I'));
        // Anything still expected before this ReadyForQuery never came.
        let mut unanswered = false;
        let (mut split, mut own, mut sent) = (false, None, None);
        while let Some(e) = self.server.expect.pop_front() {
            match e {
                Expect::Ready { split: s, own: o, sent: t, .. } => {
                    (split, own, sent) = (s, o, Some(t));
                    break;
                }
                Expect::Statement { .. } => unanswered = true,
                _ => {}
            }
        }
        self.server.in_flight = self.server.in_flight.saturating_sub(1);
        self.tx.status = status;
        if let Some(own) = own {
            self.own_done(own);
            return false;
        }
        self.tx.doubt.ready();
        if let Some(t) = sent {
            self.shared.stats.unit_done(node, t.elapsed(), status.idle());
        }
        let mut forward = !self.split_part_answered(split);
        // The position query behind this unit answers next: the client's ReadyForQuery
        // waits for it, so the report comes before it.
        let position_next = matches!(self.server.expect.front(), Some(Expect::Ready { own: Some(Own::Position), .. }));
        if forward && position_next {
            forward = false;
            self.answer.ready = Some(frame.to_frame());
        }
        if forward {
            self.release_reports();
        }
        if unanswered {
            self.lost_track(node, "statements the server did not answer");
        }
        if status.idle() {
            self.prepared.portals.clear();
        }
        let committed = self.tx.ledger.ready(status);
        self.ryw.for_commit = position_next && committed.wrote && status.idle();
        self.settle(node, committed);
        forward
    }

    /// A client unit's ReadyForQuery. If it ends the first part of a split Query, the rest
    /// runs next, as it would have in the one Query, and this ReadyForQuery is not the
    /// client's; unless this part failed (then the server would have skipped the rest,
    /// and this is the client's answer). Returns whether the ReadyForQuery is held back.
    fn split_part_answered(&mut self, split: bool) -> bool {
        let failed = std::mem::take(&mut self.tx.failed_since_ready);
        self.answer.rest_offset = None;
        let Some((rest, offset)) = self.answer.split_rest.take().filter(|_| split) else { return false };
        if failed {
            return false;
        }
        self.client.push_front(rest);
        self.answer.rest_offset = Some(offset);
        true
    }

    /// A frame on its way to the client: statement names and error positions shown as a
    /// direct connection would, held back with the unit's answer while a commit position
    /// is asked behind it.
    fn send_to_client(&mut self, frame: FrameRef<'_>) {
        self.tx.doubt.answered(frame.tag());
        let shown = match frame.tag() {
            tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
                let named = self.client_names(frame);
                // The rest of a split Query: positions as in the client's whole text.
                match self.answer.rest_offset {
                    Some(by) => protocol::shift_position(named.as_ref().map_or(frame, Frame::view), by).or(named),
                    None => named,
                }
            }
            tag::NOTIFICATION_RESPONSE => self.own_notification(frame),
            _ => None,
        };
        // From its first CommandComplete, the answer of a unit that may commit waits with
        // its ReadyForQuery for the commit's position (`commit_lsn.rs`).
        if frame.tag() == tag::COMMAND_COMPLETE && !self.answer.holding && position_follows(&self.server.expect) {
            self.answer.holding = true;
        }
        let out = if self.answer.holding { &mut self.answer.ack } else { &mut self.client.wbuf };
        out.extend_from_slice(shown.as_ref().map_or(frame, Frame::view).raw());
        if self.answer.holding && self.answer.ack.len() > MAX_HELD_ACK {
            self.client.wbuf.extend_from_slice(&self.answer.ack);
            self.answer.ack.clear();
            self.answer.holding = false;
        }
    }

    /// A server message naming a statement by its server name (`pgr_<hash>`), rewritten
    /// with the name the client gave it, as a direct connection would say it. `None`
    /// when it names none.
    fn client_names(&self, frame: FrameRef<'_>) -> Option<Frame> {
        let body = frame.body();
        find(body, b"\"pgr_")?;
        let used: &[String] = match self.server.expect.front() {
            Some(Expect::Ready { names, .. }) => names,
            _ => &[],
        };
        // Names the unit used first, then any other name of the same statement (also one
        // whose Close a later unit still has in flight).
        let closing = self.server.expect.iter().filter_map(|e| match e {
            Expect::Close { closed: Some((n, p)), .. } => Some((n, p)),
            _ => None,
        });
        let known: Vec<(&String, &Arc<Prepared>)> = self.prepared.named.iter().chain(closing).collect();
        let lookup = |server: &str| {
            let by_server = |(_, p): &&(&String, &Arc<Prepared>)| p.server_name == server;
            used.iter()
                .filter_map(|u| known.iter().find(|(n, _)| *n == u))
                .find(by_server)
                .or_else(|| known.iter().find(by_server))
                .map(|(n, _)| n.to_string())
        };
        let text = prepared::show_client_names(body, lookup);
        Some(protocol::build(frame.tag(), |b| b.extend_from_slice(&text)))
    }

    /// A notification sent by one of this client's own server connections carries the
    /// client's pgroute pid (its BackendKeyData), as a direct connection's carries its own.
    fn own_notification(&self, frame: FrameRef<'_>) -> Option<Frame> {
        let body = frame.body();
        let pid = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
        if !self.server.held.iter().any(|c| c.pid == pid) {
            return None;
        }
        Some(protocol::build(frame.tag(), |b| {
            b.extend_from_slice(&self.who.pid.to_be_bytes());
            b.extend_from_slice(&body[4..]);
        }))
    }

    /// The reply that ends a statement: the ledger learns what it did.
    fn statement_ended(&mut self, node: usize, tag: &str) {
        match self.server.expect.front() {
            Some(Expect::Statement { class, index, writes, keys }) => {
                self.tx.ledger.done(Expect::step(class, *index), tag, *writes, keys);
                self.server.expect.pop_front();
            }
            _ => self.lost_track(node, "a statement pgroute did not count"),
        }
    }

    /// pgroute split a unit into statements differently from the server: what the unit
    /// did to the session is not certain. The connection gets settings no client has
    /// (so whoever uses it next resets it first) and is closed instead of pooled.
    fn lost_track(&mut self, node: usize, what: &str) {
        tracing::warn!(what, "pgroute lost track of a unit's statements; the server connection will not be reused");
        if let Some(conn) = self.server.held.get_mut(node) {
            conn.settings_hash = u64::MAX;
            conn.poisoned = true;
        }
    }

    /// Parameters that change how the server reads this client's text.
    pub(super) fn note_parameter(&mut self, name: &str, value: &str) {
        match name {
            "application_name" => self.who.application_name = value.to_string(),
            "standard_conforming_strings" => self.who.dialect.standard_strings = value != "off",
            "client_encoding" => self.who.encoding = Encoding::from_name(value),
            _ => {}
        }
    }

    /// What a unit committed, at its ReadyForQuery: settings join the client's record, a
    /// committed data write makes the session's reads causal (read-your-writes) and
    /// records its tagged keys.
    pub(super) fn settle(&mut self, node: usize, committed: Committed) {
        let before = self.settings.hash();
        self.settings.apply_all(&committed.settings);
        if self.settings.len() > MAX_REPLAYED_SETTINGS && self.pinned.is_none() {
            // Replaying them on every server the session moves to would cost the servers
            // that much each time: one server connection keeps them instead.
            tracing::debug!(
                settings = self.settings.len(),
                "session pinned to the primary: too many settings to replay"
            );
            self.pinned = Some("many settings".into());
        }
        // The connection ran these very statements: it now has the new settings.
        if let Some(conn) = self.server.held.get_mut(node) {
            if conn.settings_hash == before {
                conn.settings_hash = self.settings.hash();
            }
        }
        if committed.wrote {
            let now = std::time::Instant::now();
            if !self.ryw.for_commit {
                // Acknowledged now, with no position asked behind it (COPY, a split
                // Query): reads from now on need the primary's position after it.
                self.shared.acked.record_unpositioned(now);
            }
            self.ryw.dirty_since = Some(now);
            self.ryw.commit_lsn = None;
            if !committed.keys.is_empty() {
                self.shared.keys.record(&committed.keys, now);
                // The position query behind the commit will make the entries exact.
                if self.ryw.for_commit {
                    self.ryw.keys_awaiting_position = Some((committed.keys, now));
                }
            }
        }
    }
}
