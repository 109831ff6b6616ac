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

use super::state::TxStatus;
use super::{End, Expect, Own, Session};
use crate::backend::Purpose;
use crate::classify::TxOp;
use crate::frontend::prepared;
use crate::metrics;
use crate::protocol::{self, sqlstate, tag, BodyReader, PgError};

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
    basis: Option<Basis>,
    /// Every statement of the unit is a plain COMMIT: pgroute can write its replies.
    commit_only: bool,
    /// The unit's client messages, in order, while it is being forwarded...
    tags: Vec<u8>,
    sealed: bool,
    /// ... and how many of them the server has answered.
    replied: usize,
    /// Client units in flight ahead of it.
    ahead: usize,
}

impl Tracked {
    fn start(&mut self, commit_only: bool, basis: Option<Basis>, ahead: usize) {
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

    fn tracked(&mut self) -> Option<&mut Tracked> {
        self.0.as_deref_mut().filter(|t| t.active)
    }

    fn start(&mut self, commit_only: bool, basis: Option<Basis>, ahead: usize) {
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
    fn why(self) -> &'static str {
        match self {
            Verdict::Committed => "",
            Verdict::NotCommitted(why) | Verdict::Unknown(why) => why,
        }
    }

    fn label(self) -> &'static str {
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
fn parse_asked(body: &[u8], timeline: Option<u32>) -> Option<Asked> {
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

fn parse_status(text: Option<&str>) -> Status {
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
fn commit_replies(tags: &[u8], replied: usize, out: &mut BytesMut) -> Option<()> {
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

/// What the front of the queue is, with the client's transaction lost.
pub(super) enum AfterLoss {
    /// A unit that only closed statements: answered.
    Answered,
    /// Only Closes so far: wait for the rest of the unit.
    Incomplete,
    /// Anything else: it gets the error.
    Fail,
}

impl Session {
    /// At the start of a unit that commits: what pgroute will know of that commit if the
    /// connection dies before its answer. Asks the primary for the transaction's id
    /// (in front of the unit) when the block wrote.
    pub(super) fn track_commit(&mut self, commit_only: bool) {
        // Attached as the primary: the monitor may since have stopped calling the node
        // primary (a failed probe), yet the COMMIT goes there and may commit.
        if self.server.for_reads {
            return;
        }
        // With units still in flight (a driver's Close behind its last statement, a
        // pipeline), the block's state is not settled: the id is asked for in any case,
        // and the answer (or its error) tells.
        let settled = self.server.in_flight == 0;
        let basis = match self.tx.status {
            TxStatus::Failed if settled => Some(Basis::FailedBlock),
            TxStatus::InBlock if settled && commit_only && !self.tx.ledger.wrote() => Some(Basis::NothingWritten),
            // BEGIN and COMMIT in one unit, or an autocommit write: no id to ask for.
            TxStatus::Idle if settled => return,
            _ => {
                self.send_own_query(ASK, Own::Xid);
                None
            }
        };
        let ahead = self.server.expect.iter().filter(|e| matches!(e, Expect::Ready { own: None, .. })).count();
        self.tx.doubt.start(commit_only, basis, ahead);
    }

    /// The row of the id query.
    pub(super) fn xid_answered(&mut self, body: &[u8], timeline: Option<u32>) {
        if let Some(t) = self.tx.doubt.tracked() {
            t.basis = parse_asked(body, timeline).map(Basis::Asked);
        }
    }

    /// The active server's connection died. If a unit that may commit was in flight,
    /// settles what the client is told; Ok when the session can go on.
    pub(super) async fn connection_lost(&mut self, node: usize) -> Result<(), End> {
        let name = self.forget_server(node);
        self.server.wbuf.clear();
        if self.ryw.position_pending {
            // A unit's commit may be acknowledged below without its position: reads from
            // now on need the primary's position after now. What came of its answer goes
            // out as it came.
            self.shared.acked.record_unpositioned(std::time::Instant::now());
        }
        let unit_answer = std::mem::take(&mut self.answer.ack);
        self.client.wbuf.extend_from_slice(&unit_answer);
        let pending = self.server.expect.iter().filter(|e| matches!(e, Expect::Ready { own: None, .. })).count();
        let commits = self.server.expect.iter().any(|e| matches!(e, Expect::Ready { own: None, commits: true, .. }));
        if !commits && self.server.for_reads && self.tx.status.idle() && self.pinned.is_none() {
            // A replica died under reads, outside a transaction: each unit in flight gets
            // an error (or, if it only closed statements, its answer) and the session goes
            // on elsewhere, as it would on a primary that never went away.
            self.answer_lost_reads(&name);
            self.reset_after_loss();
            return Ok(());
        }
        if !commits {
            if pending == 0 && self.tx.status.idle() && self.pinned.is_none() {
                // Only pgroute's own position query was lost: the client's COMMIT had
                // its answer. Its ReadyForQuery goes out; the next unit gets a new server.
                self.reset_after_loss();
                self.release_reports();
                if let Some(ready) = self.answer.ready.take() {
                    self.client.wbuf.extend_from_slice(ready.raw());
                }
                return Ok(());
            }
            // Leading units in flight that only closed statements are answered first, so
            // that the error reaches the request that needed the lost server (a COMMIT
            // being prepared or queued behind them).
            let answered = self.answer_closes(pending);
            if !self.tx.status.idle() {
                let lost = PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!("pgroute: connection to node {name} lost; the open transaction was not committed"),
                )
                .with_detail("pgroute: transaction not committed");
                if answered == pending {
                    // Nothing of the client's is unanswered: its next message (a COMMIT,
                    // most likely) gets this error, rather than a connection that closed
                    // under it with nothing said.
                    self.reset_after_loss();
                    self.tx.lost = Some(Box::new(lost));
                    return Ok(());
                }
                return Err(End::Fatal(lost));
            }
            return Err(End::Fatal(
                PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!("pgroute: connection to node {name} lost during the query"),
                )
                .with_detail("pgroute: no commit was in flight"),
            ));
        }
        let (basis, commit_only) = self.tx.doubt.tracked().map_or((None, false), |t| (t.basis, t.commit_only));
        let (verdict, xid) = match basis {
            None => (Verdict::Unknown("its transaction id was not learned before the COMMIT"), None),
            Some(Basis::FailedBlock) => (Verdict::NotCommitted("its transaction block had failed"), None),
            Some(Basis::NothingWritten) | Some(Basis::Asked(Asked { xid: None, .. })) if commit_only => {
                (Verdict::Committed, None)
            }
            Some(Basis::NothingWritten) => (Verdict::Unknown("the unit wrote after the last question"), None),
            Some(Basis::Asked(asked)) => (self.resolve_commit(&asked).await, asked.xid),
        };
        metrics::in_doubt(verdict.label());
        tracing::warn!(node = %name, xid, outcome = verdict.label(), why = verdict.why(), "connection lost before a COMMIT's answer: resolved");
        // Client units ahead of the COMMIT that only closed statements (a driver's Close
        // and Sync behind its last Execute) are answered as their server would have, so
        // that what follows is the answer to the COMMIT's own request.
        let units = self.tx.doubt.tracked().map_or(0, |t| t.ahead);
        let pending = pending - self.answer_closes(units);
        match verdict {
            Verdict::Committed => {
                if pending == 1 && commit_only && !self.tx.failed_since_ready {
                    let mut out = BytesMut::new();
                    let owed = self.tx.doubt.tracked().and_then(|t| commit_replies(&t.tags, t.replied, &mut out));
                    if owed.is_some() {
                        self.settle_lost_commit(node);
                        self.client.wbuf.extend_from_slice(&out);
                        return Ok(());
                    }
                }
                Err(End::Fatal(
                    PgError::fatal(
                        sqlstate::CONNECTION_FAILURE,
                        format!("pgroute: connection to node {name} lost before the COMMIT's answer; the transaction committed"),
                    )
                    .with_detail("pgroute: transaction committed"),
                ))
            }
            Verdict::NotCommitted(why) => Err(End::Fatal(
                PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!("pgroute: connection to node {name} lost before the COMMIT's answer; the transaction was not committed: {why}"),
                )
                .with_detail("pgroute: transaction not committed"),
            )),
            Verdict::Unknown(why) => Err(End::Fatal(
                PgError::fatal(
                    COMPLETION_UNKNOWN,
                    format!("pgroute: connection to node {name} lost before the COMMIT's answer; whether the transaction committed is unknown: {why}"),
                )
                .with_hint("Check the data before retrying anything that moves money."),
            )),
        }
    }

    /// With the transaction lost while the client idled in it (`lost_transaction`), the
    /// unit at the front of the queue: one that only closes statements (a driver's Close
    /// and Sync behind its last statement) is answered here, CloseComplete for each Close
    /// and ReadyForQuery 'E' (the block cannot commit), so that the error reaches the
    /// request that needed the transaction, a COMMIT most likely, not a Close whose
    /// answer the driver ignores.
    pub(super) fn front_after_loss(&mut self) -> AfterLoss {
        let mut closes = 0;
        for f in &self.client.queue {
            match f.tag() {
                tag::CLOSE => closes += 1,
                tag::FLUSH => {}
                tag::SYNC if closes > 0 => break,
                _ => return AfterLoss::Fail,
            }
        }
        if !self.client.queue.iter().any(|f| f.tag() == tag::SYNC) {
            return AfterLoss::Incomplete;
        }
        while let Some(f) = self.client.pop() {
            match f.tag() {
                tag::CLOSE => {
                    if let Ok((b'S', name)) = prepared::split_target(f.body()) {
                        self.prepared.named.remove(name.as_ref());
                    }
                    protocol::build_into(&mut self.client.wbuf, b'3', |_| {});
                }
                tag::SYNC => {
                    protocol::build_into(&mut self.client.wbuf, b'Z', |b| b.extend_from_slice(b"E"));
                    break;
                }
                _ => {}
            }
        }
        AfterLoss::Answered
    }

    /// Answers every client unit in flight on a lost replica: CloseComplete for a unit
    /// that only closed statements, an ERROR for any other, then its ReadyForQuery.
    fn answer_lost_reads(&mut self, name: &str) {
        let error = PgError::error(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: connection to replica {name} lost during the query; nothing was written"),
        )
        .with_hint("Retry: the next statement goes to another node.");
        let (mut closes, mut only_closes) = (0, true);
        let mut out = BytesMut::new();
        for e in &self.server.expect {
            match e {
                Expect::Close { forward: true, .. } => closes += 1,
                Expect::Close { forward: false, .. } | Expect::Parse { forward: false, .. } => {}
                Expect::Ready { own: Some(_), .. } => {}
                Expect::Ready { own: None, .. } => {
                    if only_closes {
                        (0..closes).for_each(|_| protocol::build_into(&mut out, b'3', |_| {}));
                    } else {
                        metrics::client_error(&error.code);
                        out.extend_from_slice(error.to_frame().raw());
                    }
                    protocol::build_into(&mut out, b'Z', |b| b.extend_from_slice(b"I"));
                    (closes, only_closes) = (0, true);
                }
                _ => only_closes = false,
            }
        }
        // A unit still arriving (its Sync not yet sent) fails too; the rest of it is
        // dropped up to its Sync, which gets the ReadyForQuery.
        if self.client.intake == super::state::Intake::Open {
            metrics::client_error(&error.code);
            out.extend_from_slice(error.to_frame().raw());
            self.client.intake = super::state::Intake::Skipping;
        }
        self.client.wbuf.extend_from_slice(&out);
        self.answer.split_rest = None;
        self.answer.splitting = false;
    }

    /// Answers the leading client units in flight (at most `units`) that only closed
    /// statements: CloseComplete for each Close, ReadyForQuery for each Sync, as their
    /// server would have. Returns how many units were answered; what follows them (an
    /// error, a COMMIT's answer) then reaches the request that needed the lost server.
    fn answer_closes(&mut self, units: usize) -> usize {
        let status = self.tx.status.byte();
        let (mut answered, mut unit) = (0, BytesMut::new());
        for e in &self.server.expect {
            if answered == units {
                break;
            }
            match e {
                Expect::Close { forward: true, .. } => protocol::build_into(&mut unit, b'3', |_| {}),
                Expect::Close { forward: false, .. } | Expect::Parse { forward: false, .. } => {}
                Expect::Ready { own: Some(_), .. } => {}
                Expect::Ready { own: None, sync: true, commits: false, .. } => {
                    protocol::build_into(&mut unit, b'Z', |b| b.extend_from_slice(&[status]));
                    self.client.wbuf.extend_from_slice(&unit);
                    unit.clear();
                    answered += 1;
                }
                _ => break,
            }
        }
        answered
    }

    /// Asks confirmed primaries, for up to `primary_wait`, what became of `asked.xid`.
    async fn resolve_commit(&self, asked: &Asked) -> Verdict {
        let health = self.shared.config().health.clone();
        let deadline = tokio::time::Instant::now() + health.primary_wait;
        loop {
            let now = std::time::Instant::now();
            let snapshot = self.shared.topology.snapshot();
            if let Some(p) = snapshot.primary(now) {
                let timeline = snapshot.nodes.get(p).and_then(|n| n.wal.timeline);
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout(left, self.ask_status(p, asked, timeline)).await {
                    Ok(Ok(found)) => {
                        if let Some(v) = judge(asked, &found) {
                            return v;
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "in-doubt commit: the primary could not be asked yet"),
                    Err(_) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Verdict::Unknown("no confirmed primary answered within primary_wait");
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + health.interval).min(deadline)).await;
        }
    }

    async fn ask_status(&self, node: usize, asked: &Asked, timeline: Option<u32>) -> Result<Found, PgError> {
        let xid = asked.xid.unwrap_or_default();
        let mut conn =
            self.shared.pools.checkout_for(node, &self.who.user, &self.who.database, Purpose::Catalog, &[]).await?;
        let replayed = conn.query_text("SELECT pg_last_wal_replay_lsn()").await;
        let status = conn.query_text(&format!("SELECT txid_status({xid})")).await;
        conn.release(replayed.is_ok() && status.is_ok());
        let replayed = match replayed? {
            Some(l) => Some(super::commit_lsn::parse_lsn(&l).ok_or_else(|| PgError::error("XX000", "bad LSN"))?),
            None => None,
        };
        let status = match status {
            Ok(s) => parse_status(s.as_deref()),
            // 22023: "transaction ID ... is in the future".
            Err(e) if e.code == "22023" => Status::Future,
            Err(e) => return Err(e),
        };
        Ok(Found { timeline, replayed, status })
    }

    /// The lost COMMIT committed: what it did to the session is settled as its answer
    /// would have, and the session goes on without that connection.
    fn settle_lost_commit(&mut self, node: usize) {
        while let Some(e) = self.server.expect.pop_front() {
            if let Expect::Statement { class, index, writes, keys } = e {
                let step = Expect::step(&class, index);
                if matches!(step.tx, TxOp::Commit { .. }) {
                    self.tx.ledger.done(step, "COMMIT", writes, &keys);
                }
            }
        }
        let committed = self.tx.ledger.ready(TxStatus::Idle);
        // Its position is not known: reads need the primary's after now.
        self.ryw.for_commit = false;
        self.settle(node, committed);
        self.reset_after_loss();
        self.tx.status = TxStatus::Idle;
    }

    /// Nothing is in flight on a connection that is gone.
    fn reset_after_loss(&mut self) {
        self.server.expect.clear();
        self.server.in_flight = 0;
        self.ryw.position_pending = false;
        self.ryw.for_commit = false;
        self.answer.holding = false;
        self.ryw.keys_awaiting_position = None;
        self.tx.doubt.finish();
        self.prepared.portals.clear();
    }
}

#[cfg(test)]
mod tests;
