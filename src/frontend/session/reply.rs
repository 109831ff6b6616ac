//! Server replies on their way to the client: forwarded as raw frames, except the few
//! pgroute must see (ReadyForQuery, ParseComplete/CloseComplete of injected messages,
//! errors, command tags that change server state, parameter reports).

use super::{End, Expect, Session};
use crate::backend::MAX_SERVER_MESSAGE;
use crate::protocol::{split_frame, tag, BodyReader};

impl Session {
    pub(super) fn process_server_frames(&mut self) -> Result<(), End> {
        let Some(node) = self.active else {
            return Ok(());
        };
        loop {
            let Some(conn) = self.held[node].as_mut() else {
                return Err(End::Fatal(super::internal()));
            };
            let frame = match split_frame(&mut conn.rbuf, MAX_SERVER_MESSAGE) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Err(End::Fatal(self.server_lost(node))),
            };
            let mut forward = true;
            tracing::trace!(tag = %(frame.tag() as char), "server frame");
            match frame.tag() {
                tag::PARSE_COMPLETE => {
                    if let Some(Expect::Parse { forward: fwd, .. }) = self.expect.front() {
                        forward = *fwd;
                        self.expect.pop_front();
                    }
                }
                tag::CLOSE_COMPLETE => {
                    if let Some(Expect::Close { forward: fwd }) = self.expect.front() {
                        forward = *fwd;
                        self.expect.pop_front();
                    }
                }
                tag::ERROR_RESPONSE => {
                    self.unit_error = true;
                    // An error ends COPY IN on the server, whatever the client sends next.
                    self.copy_in = false;
                    conn.unnamed = None;
                    // The server skips to the next Sync: what we expected before it never comes.
                    while let Some(e) = self.expect.front() {
                        match e {
                            Expect::Ready { .. } => break,
                            Expect::Parse { hash: Some(h), .. } => {
                                conn.prepared.remove(h);
                            }
                            _ => {}
                        }
                        self.expect.pop_front();
                    }
                }
                tag::COMMAND_COMPLETE => {
                    let t = BodyReader::new(frame.body()).cstr().unwrap_or("");
                    match t {
                        "COMMIT" => self.saw_commit = true,
                        "ROLLBACK" => self.saw_rollback = true,
                        "DISCARD ALL" | "DEALLOCATE ALL" => {
                            conn.prepared.clear();
                            conn.unnamed = None;
                            if t == "DISCARD ALL" {
                                conn.settings_hash = u64::MAX;
                            }
                        }
                        _ => {}
                    }
                }
                tag::PARAMETER_STATUS => {
                    conn.note_parameter(frame.body());
                    let mut r = BodyReader::new(frame.body());
                    if let (Ok("application_name"), Ok(v)) = (r.cstr(), r.cstr()) {
                        self.application_name = v.to_string();
                    }
                }
                tag::COPY_IN_RESPONSE => {
                    // Syncs already sent after the COPY's Execute are ignored by the server
                    // in COPY IN: expect no ReadyForQuery for them.
                    // The COPY's implicit transaction stays open until the client's next
                    // Sync, which must reach this same server: keep the unit open.
                    let before = self.expect.len();
                    self.expect.retain(|e| !matches!(e, Expect::Ready { sync: true, .. }));
                    let dropped = before - self.expect.len();
                    self.in_flight = self.in_flight.saturating_sub(dropped);
                    self.unit_open |= dropped > 0;
                    self.copy_in = true;
                }
                tag::READY_FOR_QUERY => {
                    self.copy_in = false;
                    let status = frame.body().first().copied().unwrap_or(b'I');
                    // Drop anything still expected before this ReadyForQuery.
                    let (mut changes, mut wrote, mut keys) = (Vec::new(), false, Vec::new());
                    while let Some(e) = self.expect.pop_front() {
                        if let Expect::Ready { changes: c, wrote: w, keys: k, .. } = e {
                            (changes, wrote, keys) = (c, w, k);
                            break;
                        }
                    }
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.tx_status = status;
                    self.settle_writes(status, wrote, keys);
                    self.settle_settings(node, status, changes);
                }
                _ => {}
            }
            if forward {
                self.cwbuf.extend_from_slice(frame.raw());
            }
        }
        self.maybe_release();
        Ok(())
    }

    /// Applies the settings a finished unit changed, following transaction outcome: a SET
    /// inside a transaction block counts only if the block commits; nothing from a unit
    /// that failed counts.
    /// Read-your-writes bookkeeping at ReadyForQuery: a write that committed (autocommit,
    /// or a COMMIT of a block that wrote) makes the session's reads causal from now on;
    /// a rolled back or failed one does not.
    fn settle_writes(&mut self, status: u8, wrote: bool, keys: Vec<String>) {
        match status {
            b'T' | b'E' => {
                self.tx_wrote |= wrote;
                self.tx_keys.extend(keys);
            }
            _ => {
                let unit_committed = wrote && !self.unit_error && !self.saw_rollback;
                let tx_committed = std::mem::take(&mut self.tx_wrote) && self.saw_commit && !self.saw_rollback;
                let tx_keys = std::mem::take(&mut self.tx_keys);
                if unit_committed || tx_committed {
                    let now = std::time::Instant::now();
                    self.dirty_since = Some(now);
                    self.commit_lsn = None;
                    let mut committed_keys = if unit_committed { keys } else { Vec::new() };
                    if tx_committed {
                        committed_keys.extend(tx_keys);
                    }
                    if !committed_keys.is_empty() {
                        self.shared.keys.record(&committed_keys, now);
                    }
                }
            }
        }
    }

    fn settle_settings(&mut self, node: usize, status: u8, changes: Vec<crate::classify::SettingChange>) {
        let before = self.settings.hash();
        match status {
            b'T' if !self.unit_error => self.tx_changes.extend(changes),
            b'I' => {
                let tx = std::mem::take(&mut self.tx_changes);
                if self.saw_commit && !self.saw_rollback {
                    tx.iter().for_each(|c| self.settings.apply(c));
                }
                if !self.unit_error && !self.saw_rollback {
                    changes.iter().for_each(|c| self.settings.apply(c));
                }
            }
            _ => {}
        }
        if status == b'I' {
            self.saw_commit = false;
            self.saw_rollback = false;
        }
        self.unit_error = false;
        // The connection ran these very statements: it now has the new settings.
        if let Some(conn) = self.held[node].as_mut() {
            if conn.settings_hash == before {
                conn.settings_hash = self.settings.hash();
            }
        }
    }
}
