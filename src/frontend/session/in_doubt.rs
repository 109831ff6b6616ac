//! In-doubt commits: the primary's connection died after a unit that may commit was sent
//! and before its ReadyForQuery. Did the client's money move?
//!
//! In front of a COMMIT of a block that wrote, on the primary, with nothing else in
//! flight, pgroute sends its own `SELECT` of the transaction's id and of where the
//! primary's WAL stands ([`ASK`]), in the same flight (no round trip for the client);
//! its row is read, not sent. If the connection then dies before the COMMIT's
//! ReadyForQuery, the session waits up to `primary_wait` for a confirmed primary (the
//! old one back, or a promoted one) and asks it `txid_status` of that id ([`judge`]):
//!
//! - committed: the client gets the COMMIT's own replies, written by pgroute, and its
//!   session goes on (on a new server connection); where pgroute cannot write them
//!   exactly, a FATAL 08006 saying it committed (detail `pgroute: transaction committed`);
//! - not committed: FATAL 08006, detail `pgroute: transaction not committed`;
//! - no answer in time, or none that is certain: FATAL 40003
//!   (statement_completion_unknown). Never a guess.
//!
//! A transaction id is only meaningful on a node whose history holds the transaction's
//! records: a node that lost WAL (a standby promoted without it, a crash that lost the
//! unflushed tail) may have given the same id to a later transaction. The ask records the
//! insert position past the transaction's records and `pg_last_wal_replay_lsn()` (where
//! the node's last recovery ended); an answering node that recovered since must have
//! replayed past that position, else the commit (which comes after it) is not there.
//!
//! Not tracked (at a loss: 40003): autocommit writes and `BEGIN ...; COMMIT` in one
//! Query (the id exists only inside the unit), and a COMMIT pipelined behind other units.

use bytes::BytesMut;

use crate::protocol::{self, tag, BodyReader};

/// The transaction's id (NULL if it has none: it wrote nothing), the insert position
/// (past every record it wrote), and where the node's last recovery ended (NULL if it
/// started without one).
pub(super) const ASK: &str = "SELECT txid_current_if_assigned(), pg_current_wal_insert_lsn(), pg_last_wal_replay_lsn()";

/// SQLSTATE 40003, statement_completion_unknown.
pub const COMPLETION_UNKNOWN: &str = "40003";

/// What pgroute knows of the transaction whose COMMIT is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Basis {
    /// Asked on its connection just before the COMMIT was forwarded.
    Asked(Asked),
    /// The block had failed: its COMMIT can only roll it back.
    FailedBlock,
    /// Nothing in the block counted as a data write, and the unit only commits.
    NothingWritten,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Asked {
    pub xid: Option<u64>,
    pub insert: u64,
    pub replayed: Option<u64>,
    pub timeline: Option<u32>,
}

/// The unit whose commit may be in doubt, from its first message to its ReadyForQuery.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    active: bool,
    /// `None` while the ask is in flight, or when nothing could be asked.
    pub basis: Option<Basis>,
    /// Every statement of the unit is a plain COMMIT: pgroute can write its replies.
    pub commit_only: bool,
    /// The unit's client messages, in order, while it is being forwarded...
    pub tags: Vec<u8>,
    sealed: bool,
    /// ... and how many of them the server has answered.
    pub replied: usize,
    /// Client units in flight ahead of it.
    pub ahead: usize,
}

impl Tracked {
    pub(super) fn start(&mut self, commit_only: bool, basis: Option<Basis>, ahead: usize) {
        self.tags.clear();
        (self.active, self.basis, self.commit_only, self.sealed, self.replied) = (true, basis, commit_only, false, 0);
        self.ahead = ahead;
    }

    /// A client message of the tracked unit was forwarded.
    fn sent(&mut self, tag: u8) {
        if !self.sealed {
            self.tags.push(tag);
        }
    }

    /// The unit's last message was forwarded.
    fn seal(&mut self) {
        self.sealed = true;
    }

    /// A server message for the client: one that ends the answer to a client message
    /// counts (a Describe's ParameterDescription is followed by NoData or RowDescription).
    fn answered(&mut self, t: u8) {
        if self.ahead == 0 && matches!(t, b'1' | b'2' | b'3' | b'n' | b'T' | b'C' | b'I' | b's') {
            self.replied += 1;
        }
    }

    /// A client unit's ReadyForQuery came: one ahead of the tracked unit, or its own.
    fn ready(&mut self) {
        match self.ahead {
            0 => self.finish(),
            _ => self.ahead -= 1,
        }
    }

    /// The block failed before the id could be asked: its COMMIT can only roll it back.
    fn failed_block(&mut self) {
        self.basis = Some(Basis::FailedBlock);
    }

    /// Nothing is in doubt.
    fn finish(&mut self) {
        self.tags.clear();
        (self.active, self.basis) = (false, None);
    }
}

/// A session's [`Tracked`], boxed on its first COMMIT: sessions that never commit, and
/// every client's task, stay small.
#[derive(Debug, Default)]
pub(super) struct Doubt(Option<Box<Tracked>>);

impl Doubt {
    pub fn active(&self) -> bool {
        self.0.as_ref().is_some_and(|t| t.active)
    }

    pub(super) fn tracked(&mut self) -> Option<&mut Tracked> {
        self.0.as_deref_mut().filter(|t| t.active)
    }

    pub(super) fn start(&mut self, commit_only: bool, basis: Option<Basis>, ahead: usize) {
        self.0.get_or_insert_with(Box::default).start(commit_only, basis, ahead);
    }

    pub fn sent(&mut self, tag: u8) {
        if let Some(t) = self.tracked() {
            t.sent(tag);
        }
    }

    pub fn seal(&mut self) {
        if let Some(t) = self.tracked() {
            t.seal();
        }
    }

    pub fn answered(&mut self, tag: u8) {
        if let Some(t) = self.tracked() {
            t.answered(tag);
        }
    }

    pub fn ready(&mut self) {
        if let Some(t) = self.tracked() {
            t.ready();
        }
    }

    pub fn failed_block(&mut self) {
        if let Some(t) = self.tracked() {
            t.failed_block();
        }
    }

    pub fn finish(&mut self) {
        if let Some(t) = self.tracked() {
            t.finish();
        }
    }
}

/// `txid_status` on the node asked after the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Committed,
    Aborted,
    InProgress,
    /// "transaction ID ... is in the future": the node never saw the id.
    Future,
    /// NULL: too old to be known.
    Forgotten,
}

/// What a confirmed primary said after the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub timeline: Option<u32>,
    pub replayed: Option<u64>,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Committed,
    NotCommitted(&'static str),
    Unknown(&'static str),
}

impl Verdict {
    pub(super) fn why(self) -> &'static str {
        match self {
            Verdict::Committed => "",
            Verdict::NotCommitted(why) | Verdict::Unknown(why) => why,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Verdict::Committed => "committed",
            Verdict::NotCommitted(_) => "not_committed",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// `None`: ask again (the transaction is still in progress there).
pub(super) fn judge(asked: &Asked, found: &Found) -> Option<Verdict> {
    let Some(_) = asked.xid else {
        return Some(Verdict::Committed);
    };
    let same = match (asked.timeline, found.timeline) {
        (Some(a), Some(f)) if f == a => true,
        (Some(a), Some(f)) if f > a => false,
        _ => return Some(Verdict::Unknown("the timelines before and after the loss are not known")),
    };
    // The node recovered since the ask (a crash restart, or the promotion of a standby):
    // its history must reach past the transaction's records for the id to be its own.
    if !same || found.replayed != asked.replayed {
        match found.replayed {
            Some(end) if end >= asked.insert => {}
            Some(_) => {
                return Some(Verdict::NotCommitted("the primary's history ends before the transaction's commit"))
            }
            None if same => {}
            None => return Some(Verdict::Unknown("where the new primary's history forked is not known")),
        }
    }
    match found.status {
        Status::Committed => Some(Verdict::Committed),
        Status::Aborted => Some(Verdict::NotCommitted("the primary reports it aborted")),
        Status::Future => Some(Verdict::NotCommitted("the primary never saw the transaction")),
        Status::Forgotten => Some(Verdict::Unknown("the primary no longer knows the transaction")),
        Status::InProgress => None,
    }
}

/// The row of [`ASK`]: id, insert position, replay position (text columns).
pub(super) fn parse_asked(body: &[u8], timeline: Option<u32>) -> Option<Asked> {
    let mut r = BodyReader::new(body);
    if r.i16().ok()? != 3 {
        return None;
    }
    let mut col = || -> Option<Option<String>> {
        let len = r.i32().ok()?;
        if len < 0 {
            return Some(None);
        }
        let bytes = r.bytes(usize::try_from(len).ok()?).ok()?;
        Some(Some(std::str::from_utf8(bytes).ok()?.to_string()))
    };
    let xid = match col()? {
        Some(x) => Some(x.parse().ok()?),
        None => None,
    };
    let insert = super::commit_lsn::parse_lsn(&col()??)?;
    let replayed = match col()? {
        Some(l) => Some(super::commit_lsn::parse_lsn(&l)?),
        None => None,
    };
    Some(Asked { xid, insert, replayed, timeline })
}

pub(super) fn parse_status(text: Option<&str>) -> Status {
    match text {
        Some("committed") => Status::Committed,
        Some("aborted") => Status::Aborted,
        Some("in progress") => Status::InProgress,
        _ => Status::Forgotten,
    }
}

/// A Describe of a statement or of a portal, as the tracked unit records it.
pub(super) const DESCRIBE_STATEMENT: u8 = 1;
pub(super) const DESCRIBE_PORTAL: u8 = 2;

/// What is still owed to the client for a plain COMMIT unit whose messages were `tags`
/// and of which the server answered `replied`: the same bytes one server would send.
/// `None` for a message pgroute cannot answer exactly.
pub(super) fn commit_replies(tags: &[u8], replied: usize, out: &mut BytesMut) -> Option<()> {
    // One Query, one COMMIT: its CommandComplete (unless it came), then ReadyForQuery.
    // Extended messages: the answers to those not answered yet.
    let owed = match tags {
        [tag::QUERY] if replied == 0 => &[tag::EXECUTE, tag::SYNC][..],
        [tag::QUERY] => &[tag::SYNC][..],
        _ => tags.get(replied..)?,
    };
    for &t in owed {
        let reply: &[&[u8]] = match t {
            tag::PARSE => &[b"1"],
            tag::BIND => &[b"2"],
            tag::CLOSE => &[b"3"],
            // A COMMIT has no parameters and returns no rows.
            DESCRIBE_STATEMENT => &[b"t\0\0", b"n"],
            DESCRIBE_PORTAL => &[b"n"],
            tag::EXECUTE => &[b"CCOMMIT\0"],
            tag::SYNC => &[b"ZI"],
            tag::FLUSH => &[],
            _ => return None,
        };
        for r in reply {
            protocol::build_into(out, r[0], |b| b.extend_from_slice(&r[1..]));
        }
    }
    Some(())
}

#[cfg(test)]
mod tests;
