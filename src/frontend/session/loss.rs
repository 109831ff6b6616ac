//! A server connection lost under a client: what the client is told, and whether its
//! session can go on. The verdict on a COMMIT in flight is `in_doubt`'s (pure); this is
//! the session's side: tracking a commit as it is sent, settling the loss, answering what
//! can be answered exactly.

use bytes::BytesMut;

use super::in_doubt::{
    commit_replies, judge, parse_asked, parse_status, Asked, Basis, Found, Status, Verdict, ASK, COMPLETION_UNKNOWN,
};
use super::state::TxStatus;
use super::{End, Expect, Own, Session};
use crate::classify::TxOp;
use crate::frontend::prepared;
use crate::metrics;
use crate::protocol::{self, sqlstate, tag, PgError};

/// What is known of a commit without asking anyone, or the id to ask about.
fn known_verdict(basis: Option<Basis>, commit_only: bool) -> Result<Verdict, Asked> {
    match basis {
        None => Ok(Verdict::Unknown("its transaction id was not learned before the COMMIT")),
        Some(Basis::FailedBlock) => Ok(Verdict::NotCommitted("its transaction block had failed")),
        Some(Basis::NothingWritten) | Some(Basis::Asked(Asked { xid: None, .. })) if commit_only => {
            Ok(Verdict::Committed)
        }
        Some(Basis::NothingWritten) => Ok(Verdict::Unknown("the unit wrote after the last question")),
        Some(Basis::Asked(asked)) => Err(asked),
    }
}

/// The FATAL a client gets when it cannot be given its COMMIT's own answer.
fn verdict_error(name: &str, verdict: Verdict) -> PgError {
    match verdict {
        Verdict::Committed => PgError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: connection to node {name} lost before the COMMIT's answer; the transaction committed"),
        )
        .with_detail("pgroute: transaction committed"),
        Verdict::NotCommitted(why) => PgError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: connection to node {name} lost before the COMMIT's answer; the transaction was not committed: {why}"),
        )
        .with_detail("pgroute: transaction not committed"),
        Verdict::Unknown(why) => PgError::fatal(
            COMPLETION_UNKNOWN,
            format!("pgroute: connection to node {name} lost before the COMMIT's answer; whether the transaction committed is unknown: {why}"),
        )
        .with_hint("Check the data before retrying anything that moves money."),
    }
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
        if commits {
            self.lost_before_commit_answer(node, &name, pending).await
        } else {
            self.lost_without_commit(&name, pending)
        }
    }

    /// The connection died with no unit in flight that may commit.
    fn lost_without_commit(&mut self, name: &str, pending: usize) -> Result<(), End> {
        if self.server.for_reads && self.tx.status.idle() && self.pinned.is_none() {
            // A replica died under reads, outside a transaction: each unit in flight gets
            // an error (or, if it only closed statements, its answer) and the session goes
            // on elsewhere, as it would on a primary that never went away.
            self.answer_lost_reads(name);
            self.reset_after_loss();
            return Ok(());
        }
        if pending == 0 && self.tx.status.idle() && self.pinned.is_none() {
            // Only pgroute's own position query was lost: the client's COMMIT had its
            // answer. Its ReadyForQuery goes out; the next unit gets a new server.
            self.reset_after_loss();
            self.release_reports();
            if let Some(ready) = self.answer.ready.take() {
                self.client.wbuf.extend_from_slice(ready.raw());
            }
            return Ok(());
        }
        // Leading units in flight that only closed statements are answered first, so that
        // the error reaches the request that needed the lost server (a COMMIT being
        // prepared or queued behind them).
        let answered = self.answer_closes(pending);
        if self.tx.status.idle() {
            return Err(End::Fatal(
                PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!("pgroute: connection to node {name} lost during the query"),
                )
                .with_detail("pgroute: no commit was in flight"),
            ));
        }
        let lost = PgError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("pgroute: connection to node {name} lost; the open transaction was not committed"),
        )
        .with_detail("pgroute: transaction not committed");
        if answered < pending {
            return Err(End::Fatal(lost));
        }
        // Nothing of the client's is unanswered: its next message (a COMMIT, most likely)
        // gets this error, rather than a connection that closed under it with nothing
        // said.
        self.reset_after_loss();
        self.tx.lost = Some(Box::new(lost));
        Ok(())
    }

    /// The connection died before the answer of a unit that may commit: what became of
    /// the commit is settled (from what was learned before, or asked of a confirmed
    /// primary), and the client is told exactly that.
    async fn lost_before_commit_answer(&mut self, node: usize, name: &str, pending: usize) -> Result<(), End> {
        let (basis, commit_only) = self.tx.doubt.tracked().map_or((None, false), |t| (t.basis, t.commit_only));
        let (verdict, xid) = match known_verdict(basis, commit_only) {
            Ok(verdict) => (verdict, None),
            Err(asked) => (self.resolve_commit(&asked).await, asked.xid),
        };
        metrics::in_doubt(verdict.label());
        tracing::warn!(node = %name, xid, outcome = verdict.label(), why = verdict.why(), "connection lost before a COMMIT's answer: resolved");
        // Client units ahead of the COMMIT that only closed statements (a driver's Close
        // and Sync behind its last Execute) are answered as their server would have, so
        // that what follows is the answer to the COMMIT's own request.
        let units = self.tx.doubt.tracked().map_or(0, |t| t.ahead);
        let pending = pending - self.answer_closes(units);
        if verdict == Verdict::Committed && pending == 1 && commit_only && !self.tx.failed_since_ready {
            let mut out = BytesMut::new();
            let owed = self.tx.doubt.tracked().and_then(|t| commit_replies(&t.tags, t.replied, &mut out));
            if owed.is_some() {
                self.settle_lost_commit(node);
                self.client.wbuf.extend_from_slice(&out);
                return Ok(());
            }
        }
        Err(End::Fatal(verdict_error(name, verdict)))
    }

    /// With the transaction lost while the client idled in it (`Tx::lost`), the
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
            self.client.intake.skip();
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
        let mut answers = self
            .ask_aside(node, &["SELECT pg_last_wal_replay_lsn()", &format!("SELECT txid_status({xid})")])
            .await?
            .into_iter();
        let (Some(replayed), Some(status)) = (answers.next(), answers.next()) else {
            return Err(super::internal());
        };
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
