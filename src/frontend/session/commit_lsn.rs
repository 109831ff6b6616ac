//! The exact commit position of a write, learned before the client is told it committed
//! (what `causal_scope` builds on).
//!
//! Behind a unit that may commit a data write on the primary, pgroute sends its own
//! `SELECT` of the primary's WAL insert position, on the same connection,
//! in the same flight: the server runs it right after the client's unit, so its answer is
//! at or past the unit's commit record, and it costs the client no round trip. The
//! client's ReadyForQuery is held until that answer is in (microseconds later); then the
//! client gets `ParameterStatus pgroute.commit_lsn = <timeline>/<lsn>` (its causal token)
//! and its ReadyForQuery. Before that, the position is this instance's acknowledged
//! position ([`crate::acked::Acked`]): every read arriving from then on, from any client,
//! needs a replica at it (`instance` scope). The server's CommandComplete frames of the
//! unit are held with the ReadyForQuery (`reply.rs`), so no part of the acknowledgement
//! reaches the client first. The session's own next reads wait for the answer.
//!
//! Never behind a unit that may start COPY FROM STDIN (the server would take the query
//! for COPY data), nor behind the first part of a split Query.

use super::{Own, Session};
use crate::classify::{parse_token, After};
use crate::config::Role;
use crate::frontend::settings::Settings;
use crate::protocol::{self, BodyReader};

/// The insert position is at or past every record already inserted, the commit's
/// included (with `synchronous_commit = off` the commit may not be flushed yet: the write
/// position could be behind it). The timeline is the node's as the monitor last saw it.
pub(super) const QUERY: &str = "SELECT pg_current_wal_insert_lsn()";

/// The ParameterStatus name of the causal token.
pub const REPORT: &str = "pgroute.commit_lsn";

/// `<timeline>/<lsn in hex>`, as reported and accepted back.
pub fn token(lsn: u64, timeline: u32) -> String {
    format!("{timeline}/{lsn:X}")
}

/// The DataRow of [`QUERY`]: the LSN.
pub(super) fn parse_row(body: &[u8]) -> Option<u64> {
    let mut r = BodyReader::new(body);
    if r.i16().ok()? != 1 {
        return None;
    }
    let len = usize::try_from(r.i32().ok()?).ok()?;
    parse_lsn(std::str::from_utf8(r.bytes(len).ok()?).ok()?)
}

/// An LSN from its text form `X/Y` (two hex halves).
pub(super) fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from(u32::from_str_radix(high, 16).ok()?) << 32) | u64::from(u32::from_str_radix(low, 16).ok()?))
}

/// The session's standing causal token, `SET pgroute.after = '<token>'` (PostgreSQL
/// takes the dotted name as a custom setting; pgroute reads it from the client's
/// settings, so RESET and DISCARD ALL drop it as they drop any).
pub(super) fn setting_token(settings: &Settings) -> Option<After> {
    settings.entry(AFTER_SETTING).map(|text| parse_token(setting_value(text)))
}

/// The setting's name.
const AFTER_SETTING: &str = "pgroute.after";

/// The value in `SET [SESSION] name = 'v'` / `SET name TO 'v'`, or a startup value as is.
fn setting_value(text: &str) -> &str {
    let lower = text.to_ascii_lowercase();
    let rest = if lower.starts_with("set") {
        match (text.find('='), lower.find(" to ")) {
            (Some(i), _) => &text[i + 1..],
            (None, Some(i)) => &text[i + 4..],
            _ => text,
        }
    } else {
        text
    };
    rest.trim().trim_end_matches(';').trim().trim_matches('\'')
}

/// What a unit sent so far tells about asking for its commit position.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct UnitCommits {
    /// A statement of the unit writes data outside a transaction block, or ends one with
    /// COMMIT or PREPARE TRANSACTION.
    pub may_commit: bool,
    /// The unit opened a block (its later writes wait for a COMMIT).
    pub begun: bool,
    /// Its text may start COPY (any mention of `copy`): never ask behind it.
    pub may_copy: bool,
    /// A statement of the unit writes data.
    pub writes: bool,
}

/// Does statement text mention COPY (any case)? Conservative: a column named `copy`
/// counts too.
pub(super) fn mentions_copy(sql: &[u8]) -> bool {
    // This runs on every write's text: a vectorised search for the first letter, then
    // four bytes compared (callgrind, TPC-B: 0.42x the instructions of comparing every
    // four-byte window).
    memchr::memchr2_iter(b'c', b'C', sql).any(|i| sql.get(i..i + 4).is_some_and(|w| w.eq_ignore_ascii_case(b"copy")))
}

impl Session {
    /// At the end of a unit: sends the position query behind it when it may commit a
    /// write on the primary.
    pub(super) fn ask_commit_lsn(&mut self, split: bool) {
        let unit = std::mem::take(&mut self.unit.commits);
        if !unit.may_commit || unit.may_copy || split {
            return;
        }
        let Some(node) = self.server.active else { return };
        let snapshot = self.shared.topology.snapshot();
        if snapshot.nodes.get(node).is_none_or(|n| n.role != Role::Primary) {
            return;
        }
        self.send_own_query(QUERY, Own::Position);
        self.ryw.position_pending = true;
    }

    /// The position query's row, on a node with this WAL geometry and timeline. An insert
    /// position right after a page header stands for the page boundary, where replicas
    /// report the commit replayed.
    pub(super) fn position_row(&mut self, body: &[u8], wal: crate::topology::Wal) {
        let end = |lsn| wal.layout.map_or(lsn, |l| l.record_end(lsn));
        self.ryw.position_answer = parse_row(body).map(|lsn| (end(lsn), wal.timeline));
    }

    /// The position query's ReadyForQuery: a committed write's position is recorded and
    /// reported, then the client's held ReadyForQuery goes out.
    pub(super) fn commit_lsn_answered(&mut self) {
        self.ryw.position_pending = false;
        let answer = self.ryw.position_answer.take();
        let unit_answer = std::mem::take(&mut self.answer.ack);
        self.client.wbuf.extend_from_slice(&unit_answer);
        if std::mem::take(&mut self.ryw.for_commit) {
            match answer {
                Some((lsn, timeline)) => {
                    self.shared.acked.record(lsn, timeline, None);
                    self.ryw.commit_lsn = Some((lsn, timeline));
                    if let Some((keys, at)) = self.ryw.keys_awaiting_position.take() {
                        self.shared.keys.record_position(&keys, at, (lsn, timeline));
                    }
                    if let Some(tl) = timeline {
                        self.client.wbuf.extend_from_slice(protocol::parameter_status(REPORT, &token(lsn, tl)).raw());
                    }
                }
                None => {
                    tracing::debug!("the commit position query failed: positions from the probes stand in");
                    self.shared.acked.record_unpositioned(std::time::Instant::now());
                }
            }
        }
        self.ryw.keys_awaiting_position = None;
        self.release_reports();
        if let Some(ready) = self.answer.ready.take() {
            self.client.wbuf.extend_from_slice(ready.raw());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[&str]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for c in cols {
            b.extend_from_slice(&(c.len() as i32).to_be_bytes());
            b.extend_from_slice(c.as_bytes());
        }
        b
    }

    #[test]
    fn the_position_row_is_read_and_the_token_is_timeline_slash_hex() {
        assert_eq!(parse_row(&row(&["0/3000A28"])), Some(0x3000A28));
        assert_eq!(parse_row(&row(&["1/0"])), Some(0x1_0000_0000));
        assert_eq!(token(0x3000A28, 1), "1/3000A28");
        assert_eq!(token(0x1_0000_0000, 3), "3/100000000");
        assert_eq!(parse_row(&row(&["0/3000A28", "1"])), None);
        assert_eq!(parse_row(&row(&["3000A28"])), None);
        assert_eq!(parse_row(&row(&["x/1"])), None);
        assert_eq!(parse_row(&[0, 1, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse_row(b""), None);
    }

    #[test]
    fn the_after_setting_value_is_read_from_its_set_statement() {
        assert_eq!(setting_value("SET pgroute.after = '1/3000A28'"), "1/3000A28");
        assert_eq!(setting_value("set session pgroute.after to '2/0';"), "2/0");
        assert_eq!(setting_value("1/5"), "1/5");
        assert_eq!(parse_token(setting_value("SET pgroute.after = 'nonsense'")), After::Malformed);
    }

    #[test]
    fn copy_is_spotted_in_any_case() {
        assert!(mentions_copy(b"COPY t FROM STDIN"));
        assert!(mentions_copy(b"insert into t values (1); CoPy t from stdin"));
        assert!(!mentions_copy(b"UPDATE accounts SET v = 1"));
        assert!(mentions_copy(b"select 1;copy"), "at the very end");
        assert!(!mentions_copy(b"select 'cop"), "cut short");
        assert!(!mentions_copy("insert into t values ('\u{e3}opy')".as_bytes()), "not a letter c");
    }
}
