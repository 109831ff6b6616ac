//! Routing units: classify what the next unit runs, ask the router, and attach the
//! server connection it should run on (from a pool, with the client's settings applied).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use std::time::Instant;

use super::local::Local;
use super::loss::AfterLoss;
use super::read_needs::{Need, ReadFacts};
use super::state::Intake;
use super::unit::SplitParse;
use super::{End, Session};
use crate::backend::{Checked, ClientPool};
use crate::catalog::FunctionCatalog;
use crate::classify::{hint, may_hint, Class, Classifier, Dialect, Exact, QName, TxOp};
use crate::config::{PoolMode, Role};
use crate::frontend::encoding::Encoding;
use crate::frontend::prepared::{split_bind, split_parse, split_target, statement_hash};
use crate::metrics;
use crate::protocol::{self, sqlstate, tag, PgError};
use crate::router::{self, Causal, Decision, Pick, Reason, SessionView};
use crate::rules::{Context, ReadRoute};
use crate::topology::Snapshot;

/// What the next unit runs: its most demanding class, that statement's text (for rule
/// patterns and hints), and whether it executes anything.
struct Scan {
    class: Option<Arc<Class>>,
    text: Bytes,
    executes: bool,
    /// The unit's end (Sync, Query, FunctionCall) has arrived.
    complete: bool,
    /// A statement of the unit commits a transaction block...
    commits: bool,
    /// ... and every statement is a plain COMMIT.
    commit_only: bool,
    /// Named statements the unit Parses that the client does not hold yet (saturating;
    /// small, to keep the client task's future small).
    new_names: u16,
}

impl Scan {
    /// One statement of the unit, of class `c` and text `text`: the most demanding class
    /// so far is the unit's; `others` collects the distinct classes seen.
    fn note(&mut self, c: Arc<Class>, text: Bytes, others: &mut Vec<Arc<Class>>) {
        let commit = |s: &crate::classify::Step| matches!(s.tx, TxOp::Commit { .. });
        self.commits |= c.steps.iter().any(commit);
        self.commit_only &= !c.steps.is_empty()
            && c.steps.iter().all(|s| s.tx == TxOp::Commit { chain: false } && s.settings.is_empty());
        if !others.iter().any(|o| Arc::ptr_eq(o, &c)) {
            others.push(c.clone());
        }
        let rank = |c: &Class| (c.access, c.pins.is_some());
        if self.class.as_ref().is_none_or(|w| rank(&c) > rank(w)) {
            self.class = Some(c);
            self.text = text;
        }
    }

    /// Several statements in one unit run on one server: the rules and volatility checks
    /// must see every table and function any of them names.
    fn merge(&mut self, others: &[Arc<Class>]) {
        let Some(worst) = self.class.as_ref().filter(|_| others.len() > 1) else { return };
        let mut merged = (**worst).clone();
        for o in others.iter().filter(|o| !Arc::ptr_eq(o, worst)) {
            merged.relations.extend(o.relations.iter().cloned());
            merged.functions.extend(o.functions.iter().cloned());
            merged.writes_data |= o.writes_data;
        }
        self.class = Some(Arc::new(merged));
    }
}

/// What becomes of the message at the front of the queue.
enum Next {
    /// It belongs to the open (or just routed) unit: forward it.
    Forward,
    /// Answered or dropped already: go on with the next.
    Handled,
    /// Decide again at once (the unit was changed or its node refused).
    Retry,
    /// Decide again once replies from the server have come.
    Wait,
}

/// Named prepared statements one client may hold at once: one more Parse is refused with
/// 54000, the client's session goes on.
const MAX_CLIENT_STATEMENTS: usize = 10_000;

impl Session {
    /// Routes and forwards queued client frames until the queue is empty or the next
    /// unit must wait for the active server to finish.
    pub(super) async fn process_queue(&mut self) -> Result<(), End> {
        while let Some(front) = self.client.queue.front() {
            let t = front.tag();
            if self.tx.lost.is_some() && t != tag::TERMINATE {
                match self.front_after_loss() {
                    AfterLoss::Answered => continue,
                    AfterLoss::Incomplete => return Ok(()),
                    AfterLoss::Fail => {
                        if let Some(lost) = self.tx.lost.take() {
                            return Err(End::Fatal(*lost));
                        }
                    }
                }
            }
            let next = match self.client.intake {
                Intake::Skipping => {
                    self.client.pop();
                    if t == tag::SYNC {
                        self.client.intake.close();
                        self.ready_for_client();
                    }
                    Next::Handled
                }
                Intake::Between => self.begin_unit(t).await?,
                Intake::Open => Next::Forward,
            };
            match next {
                Next::Forward => {
                    let f = self.client.pop().ok_or(End::Client)?;
                    self.forward(f)?;
                }
                Next::Handled => {}
                Next::Retry => self.unit.classes.clear(),
                Next::Wait => {
                    self.unit.classes.clear();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The message at the front begins a unit (`Intake::Between`): it is answered here,
    /// or the unit is routed and its server attached, or it waits.
    async fn begin_unit(&mut self, t: u8) -> Result<Next, End> {
        if self.answer.split_rest.is_some() && !self.answer.splitting {
            // The rest of a split Query runs next, once its first part answers.
            return Ok(Next::Wait);
        }
        match t {
            tag::TERMINATE => return Err(End::Client),
            // Follow-ups of what runs now (COPY data, Flush): no unit of their own.
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::FLUSH => {
                let f = self.client.pop().ok_or(End::Client)?;
                if self.server.active.is_some() {
                    self.forward(f)?;
                }
                return Ok(Next::Handled);
            }
            // A lone Sync with nothing running: answer it ourselves.
            tag::SYNC if self.server.active.is_none() => {
                self.client.pop();
                self.ready_for_client();
                return Ok(Next::Handled);
            }
            _ => {}
        }
        match self.deallocate_locally() {
            Local::Route => {}
            Local::Wait => return Ok(Next::Wait),
            Local::Done => return Ok(Next::Handled),
        }
        if self.server.in_flight > 0 && self.names_in_doubt() {
            // Whether a statement name is taken depends on how units in flight end (an
            // error skips their Parse or Close): decide once they have.
            return Ok(Next::Wait);
        }
        if self.server.in_flight == 0 && self.tx.status.idle() {
            self.wait_while_paused().await;
        }
        let scan = self.scan_unit();
        // A unit that only prepares a COMMIT commits nothing.
        let commits = scan.commits && scan.executes;
        let commit_only = scan.commit_only && scan.complete;
        if self.ryw.position_pending && scan.class.as_ref().is_none_or(|c| !c.is_write()) {
            // The position of this session's last commit is microseconds away: a read
            // waits for it rather than settle for the primary.
            return Ok(Next::Wait);
        }
        let (decision, class, snapshot) = match self.route_unit(scan).await {
            Ok(d) => d,
            // Replies to earlier units must reach the client first: decide again once
            // they have.
            Err(_) if self.server.in_flight > 0 => return Ok(Next::Wait),
            Err(e) => {
                self.reject_unit(e);
                return Ok(Next::Handled);
            }
        };
        if self.server.for_reads && class.is_write() && decision.reason == Reason::InTransaction {
            if self.server.in_flight > 0 {
                // A write kept on a replica by a transaction that units still in flight
                // may end: decide once they have answered.
                return Ok(Next::Wait);
            }
            if self.split_transaction_end() {
                return Ok(Next::Retry);
            }
        }
        match self.switch_to(decision.node, &snapshot).await? {
            Next::Forward => {}
            other => return Ok(other),
        }
        self.start_unit(decision, &class, &snapshot, commits, commit_only)?;
        Ok(Next::Forward)
    }

    /// Makes `node` the active server for the unit at the front: the one attached, or a
    /// connection of its own once the one attached is idle.
    async fn switch_to(&mut self, node: usize, snapshot: &Snapshot) -> Result<Next, End> {
        if self.server.active.is_some_and(|a| a != node) {
            if self.server.in_flight > 0 {
                // Pipelined unit bound elsewhere: wait for this server to finish.
                return Ok(Next::Wait);
            }
            if self.pinned.is_some() {
                // The primary changed under a pinned session: its LISTENs, temp tables or
                // locks stayed on the old one. Moving on would lose them silently.
                return Err(End::Fatal(
                    PgError::fatal(
                        sqlstate::CONNECTION_FAILURE,
                        "pgroute: the primary changed; this session's server-side state stayed on the old one",
                    )
                    .with_hint("Reconnect: LISTEN, temporary tables and session locks must be recreated."),
                ));
            }
            self.detach();
        }
        if self.server.active.is_some() {
            return Ok(Next::Forward);
        }
        let Err(e) = self.attach(node, true).await else {
            self.server.refused_since = None;
            return Ok(Next::Forward);
        };
        let replica = snapshot.nodes.get(node).is_some_and(|n| n.role == Role::Replica);
        if replica && e.code == sqlstate::CANNOT_CONNECT {
            tracing::warn!(error = %e, "replica unreachable: taken out of rotation");
            self.shared.topology.mark_unreachable(node);
            return Ok(Next::Retry);
        }
        // The primary refuses connections: it may be dying before the monitor has seen
        // it. As with no primary, the unit waits up to primary_wait (from the first
        // refusal), deciding again after each interval (`attach` waits it); it never goes
        // elsewhere meanwhile.
        let primary_wait = self.shared.config().health.primary_wait;
        let refused = e.code == sqlstate::CANNOT_CONNECT && self.server.in_flight == 0 && self.tx.status.idle();
        let first = *self.server.refused_since.get_or_insert_with(Instant::now);
        if refused && first.elapsed() < primary_wait {
            tracing::debug!(error = %e, "primary refused a connection: waiting");
            return Ok(Next::Retry);
        }
        self.server.refused_since = None;
        self.reject_unit(e);
        Ok(Next::Handled)
    }

    /// The unit is routed and its server attached: what it starts there (pins, the
    /// statements a transaction needs prepared, commit tracking, a rule's timeout) is set
    /// up before its first message is forwarded.
    fn start_unit(
        &mut self,
        decision: Decision,
        class: &Class,
        snapshot: &Snapshot,
        commits: bool,
        commit_only: bool,
    ) -> Result<(), End> {
        let node_name = snapshot.nodes.get(decision.node).map_or("", |n| n.name.as_str());
        tracing::debug!(node = %node_name, reason = decision.label(class), "route");
        let scope = self.unit.scope.filter(|_| decision.reason != Reason::FollowsActive);
        metrics::route(node_name, decision.metric_label(class), scope);
        self.note_pin(class);
        let begins = |c: &Class| c.steps.iter().any(|s| s.tx == TxOp::Begin);
        if self.server.in_flight == 0
            && self.tx.status.idle()
            && (begins(class) || self.unit.classes.iter().any(|(c, _)| begins(c)))
        {
            self.prepare_for_transaction(decision.node)?;
        }
        if commits {
            self.track_commit(commit_only);
        }
        self.hide_other_statements(decision.node, class);
        self.set_rule_timeout();
        self.client.intake.open();
        Ok(())
    }

    /// A simple Query that ends the client's read-only transaction on a replica and then
    /// writes (`ROLLBACK; INSERT ...`) cannot run on one server as it would on a direct
    /// connection: the part up to the transaction's end runs on the replica, then the rest
    /// is routed on its own (as the server runs it: in a new implicit transaction), with
    /// one ReadyForQuery for the client. Text whose first part does not encode back to
    /// the client's exact bytes is not split. Returns whether the Query at the front was
    /// split.
    fn split_transaction_end(&mut self) -> bool {
        let Some(front) = self.client.queue.front().filter(|f| f.tag() == tag::QUERY) else { return false };
        let Ok(raw) = protocol::BodyReader::new(front.body()).cstr_bytes() else { return false };
        let Some(sql) = self.who.encoding.decode(raw) else { return false };
        let class = self.shared.classifier.classify_in(&sql, self.who.dialect);
        let ends = Classifier::statement_ends(&sql, self.who.dialect);
        if ends.len() != class.steps.len() {
            return false;
        }
        let ending = |s: &crate::classify::Step| {
            matches!(s.tx, TxOp::Commit { chain: false } | TxOp::Rollback { chain: false } | TxOp::Prepare)
        };
        let Some(cut) = class.steps.iter().position(ending) else { return false };
        let writes_before = class.steps[..=cut].iter().any(|s| s.writes_data);
        if writes_before || cut + 1 == class.steps.len() {
            return false;
        }
        // In the one Query the rest runs in its implicit transaction block; alone, a single
        // statement does not. One whose meaning depends on that (SET LOCAL, LOCK, VACUUM,
        // ...) stays with the Query, where the transaction runs (differential seed 3
        // case 4995).
        if cut + 2 == class.steps.len() && Classifier::block_sensitive(&sql[ends[cut]..], self.who.dialect) {
            return false;
        }
        // The cut in the client's bytes: the first part, encoded back, must be exactly
        // how the client's text begins (else the text is not split).
        let Some(first) = self.who.encoding.encode(&sql[..ends[cut]]).filter(|f| raw.starts_with(f)) else {
            return false;
        };
        let (first, rest) = (protocol::query_bytes(&first), protocol::query_bytes(&raw[first.len()..]));
        let offset = u32::try_from(sql[..ends[cut]].chars().count()).unwrap_or(u32::MAX);
        tracing::debug!("query split at the end of a read-only transaction on a replica");
        if let Some(f) = self.client.pop() {
            drop(f);
        }
        self.client.push_front(first);
        self.answer.split_rest = Some((rest, offset));
        self.answer.splitting = true;
        true
    }

    /// Does the unit at the front of the queue name a statement that a Parse or Close still
    /// in flight creates or drops (under its name, or its server statement under another)?
    fn names_in_doubt(&self) -> bool {
        let mut pending: Vec<&str> = Vec::new();
        // Server statements a pending Parse or Close creates or drops: whether the
        // connection holds them decides what a unit naming them must send.
        let mut hashes: Vec<u64> = Vec::new();
        for e in &self.server.expect {
            match e {
                super::Expect::Parse { name, hash, .. } => {
                    pending.extend(name.as_deref());
                    hashes.extend(*hash);
                }
                super::Expect::Close { closed: Some((n, p)), .. } => {
                    pending.push(n);
                    hashes.push(p.hash);
                }
                _ => {}
            }
        }
        if pending.is_empty() && hashes.is_empty() {
            return false;
        }
        let in_doubt =
            |n: &str| pending.contains(&n) || self.prepared.named.get(n).is_some_and(|s| hashes.contains(&s.hash));
        for f in &self.client.queue {
            let named = match f.tag() {
                tag::PARSE => split_parse(&f.raw().slice(5..)).ok().map(|(n, _, _)| n),
                tag::BIND => split_bind(f.body()).ok().map(|(_, n, _)| n.into_owned()),
                tag::DESCRIBE | tag::CLOSE => {
                    split_target(f.body()).ok().filter(|(k, _)| *k == b'S').map(|(_, n)| n.into_owned())
                }
                _ => None,
            };
            if named.is_some_and(|n| in_doubt(&n)) {
                return true;
            }
            if matches!(f.tag(), tag::SYNC | tag::QUERY | tag::FUNCTION_CALL) {
                break;
            }
        }
        false
    }

    /// Classifies the unit at the front of the queue (up to its Sync, or as far as it
    /// has arrived). Classes of Query and Parse messages are kept for `forward`, so each
    /// statement is classified once.
    fn scan_unit(&mut self) -> Scan {
        self.unit.classes.clear();
        let mut scan = Scan {
            class: None,
            text: Bytes::new(),
            executes: false,
            complete: false,
            commits: false,
            commit_only: true,
            new_names: 0,
        };
        // Buffers kept in the session between units, so a unit allocates none.
        let (mut parsed_here, mut others) = std::mem::take(&mut self.unit.scratch);
        let classifier = &self.shared.classifier;
        for f in &self.client.queue {
            let found = match f.tag() {
                tag::QUERY => {
                    let sql = protocol::BodyReader::new(f.body()).cstr_bytes().unwrap_or_default();
                    let c = classify_text(classifier, self.who.encoding, self.who.dialect, sql, None);
                    self.unit.classes.push_back((c.clone(), None));
                    Some((c, f.raw().slice(5..5 + sql.len())))
                }
                tag::PARSE => {
                    let body = f.raw().slice(5..);
                    let (c, text, split) = match split_parse(&body) {
                        Ok((name, sql, tail)) => {
                            let new = !name.is_empty() && !self.prepared.named.contains_key(&name);
                            scan.new_names = scan.new_names.saturating_add(u16::from(new));
                            let hash = statement_hash(&tail);
                            let (encoding, dialect) = (self.who.encoding, self.who.dialect);
                            let c = classify_text(classifier, encoding, dialect, sql, Some((&tail, hash)));
                            let text = tail.slice(..sql.len());
                            parsed_here.push((name.clone(), c.clone(), text.clone()));
                            (c, text, Some(SplitParse { name, tail, hash }))
                        }
                        Err(_) => (Arc::new(Class::write("malformed")), Bytes::new(), None),
                    };
                    self.unit.classes.push_back((c.clone(), split));
                    Some((c, text))
                }
                tag::BIND => split_bind(f.body()).ok().and_then(|(_, stmt, _)| {
                    let local =
                        parsed_here.iter().rev().find(|(n, _, _)| *n == stmt).map(|(_, c, t)| (c.clone(), t.clone()));
                    local.or_else(|| {
                        let p = if stmt.is_empty() {
                            self.prepared.unnamed.as_ref()
                        } else {
                            self.prepared.named.get(stmt.as_ref())
                        };
                        p.map(|p| (p.class.clone(), p.sql()))
                    })
                }),
                tag::FUNCTION_CALL => Some((Arc::new(Class::write("write:function call")), Bytes::new())),
                _ => None,
            };
            if let Some((c, text)) = found {
                scan.note(c, text, &mut others);
            }
            scan.executes |= matches!(f.tag(), tag::QUERY | tag::EXECUTE | tag::FUNCTION_CALL);
            if matches!(f.tag(), tag::QUERY | tag::SYNC | tag::FUNCTION_CALL) {
                scan.complete = true;
                break;
            }
        }
        scan.merge(&others);
        parsed_here.clear();
        others.clear();
        self.unit.scratch = (parsed_here, others);
        scan
    }

    /// Decides where a scanned unit runs: a read calling user functions of unknown
    /// volatility first has them looked up; reads are placed by the rules.
    /// Also returns the topology snapshot the decision was made on.
    async fn route_unit(&mut self, scan: Scan) -> Result<(Decision, Arc<Class>, Arc<Snapshot>), PgError> {
        if self.prepared.named.len() + usize::from(scan.new_names) > MAX_CLIENT_STATEMENTS {
            return Err(PgError::error(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("pgroute: a client may hold at most {MAX_CLIENT_STATEMENTS} named prepared statements"),
            )
            .with_hint("Close or DEALLOCATE statements the application no longer uses."));
        }
        let mut executes = scan.executes;
        let scanned_writes = scan.class.as_ref().is_some_and(|c| c.writes_data);
        let class = match scan.class {
            Some(c) => c,
            None => {
                // Nothing to classify (Sync, Close, Describe, ...): it belongs with
                // whatever runs now, or anywhere a read may go.
                if let Some(node) = self.server.active.filter(|_| scan.complete) {
                    let reason = Reason::FollowsActive;
                    let decision = Decision { node, reason };
                    return Ok((decision, Arc::new(Class::read("protocol")), self.shared.topology.snapshot()));
                }
                executes = false;
                Arc::new(Class::read("protocol"))
            }
        };
        let class = if class.is_write() { class } else { self.check_volatility(class).await };
        self.unit.forced_write = class.writes_data && !scanned_writes;
        let snapshot = self.shared.topology.snapshot();
        // The text is decoded only when something reads it: a hint, a rule's pattern, a
        // rule's statement_timeout (`admit`).
        let rules = self.shared.rules();
        let encoding = self.who.encoding;
        let decode = || encoding.decode(&scan.text).unwrap_or_default();
        let mut decoded = (rules.reads_text() || may_hint(&scan.text)).then(decode);
        let text = decoded.as_deref().unwrap_or_default();
        let hint = hint(text);
        let after = hint.after.or_else(|| super::commit_lsn::setting_token(&self.settings));
        let now = Instant::now();
        let ctx = Context {
            application_name: &self.who.application_name,
            user: &self.who.user,
            database: &self.who.database,
        };
        let read = rules.route_read(&class, text, &hint, &ctx);
        let scope = read.scope.unwrap_or(self.config.routing.causal_scope);
        // Tagged keys: a write records them when it commits; a read must see their commits.
        let facts = ReadFacts::new(self, now, scope, (!class.writes_data).then_some(hint.keys.as_slice()), after);
        self.unit.keys = if class.writes_data { hint.keys.clone() } else { Vec::new() };
        let need = self.causal(&snapshot, now, facts);
        let view = SessionView {
            in_transaction_on: self.server.active.filter(|_| !self.tx.status.idle()),
            read_only_transaction: self.server.for_reads,
            pinned: self.pinned.is_some(),
            partial_unit: !scan.complete,
            causal: need.causal,
            serializable: self.settings.serializable(self.who.login_serializable),
        };
        // Only reads that run something advance the round robin, so that a driver's
        // rhythm (prepare, execute, close; or read, write, read, write) cannot pin all of
        // its reads to one replica.
        let placed_read = !class.is_write() && class.pins.is_none() && view.in_transaction_on.is_none() && !view.pinned;
        self.unit.scope = placed_read.then_some(scope);
        let ticket = if executes && placed_read {
            self.shared.tickets.fetch_add(1, Ordering::Relaxed)
        } else {
            self.shared.tickets.load(Ordering::Relaxed)
        };
        let loads = if snapshot.least_connections { self.shared.topology.loads() } else { Vec::new() };
        let pick = Pick { ticket, loads: snapshot.least_connections.then_some(loads.as_slice()) };
        let (decision, snapshot) = self.decide(&class, &read, view, snapshot, pick, facts, need).await?;
        if decoded.is_none() && read.statement_timeout().is_some() {
            decoded = Some(decode());
        }
        self.admit(&read, &class, executes, decoded.as_deref().unwrap_or_default()).await?;
        Ok((decision, class, snapshot))
    }

    /// `router::decide`, again as long as the answer may still change: with no primary,
    /// up to `primary_wait` for one to appear (never sending the unit elsewhere
    /// meanwhile); for a read that would go to the primary only because no replica has the
    /// commits its scope needs yet, up to `causal_wait` for one to catch up (asking the
    /// primary its position once, when that is what is unknown).
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &mut self,
        class: &Class,
        read: &ReadRoute,
        mut view: SessionView,
        mut snapshot: Arc<Snapshot>,
        pick: Pick<'_>,
        facts: ReadFacts,
        mut need: Need,
    ) -> Result<(Decision, Arc<Snapshot>), PgError> {
        let config = self.config.clone();
        let mut now = facts.arrived;
        let deadline = now + config.health.primary_wait;
        let causal_deadline = config.routing.causal_wait.map(|w| now + w);
        let (mut waited_from, mut asked_primary, mut waiter) = (None, false, None);
        loop {
            let decided = router::decide(class, read, view, &snapshot, now, pick);
            match decided {
                Ok(d)
                    if d.reason == Reason::Causal
                        && need.position_unknown
                        && !asked_primary
                        && causal_deadline.is_some() =>
                {
                    // The read needs the primary's position at some moment and no sample
                    // since then is known: one round trip to the primary learns it. Only
                    // when the read may wait for a replica to reach it: else no replica
                    // known now would have it.
                    asked_primary = true;
                    // Boxed: rare, and it must not set the size of every client's task.
                    Box::pin(self.ask_primary_position(&snapshot, facts.arrived)).await;
                }
                Ok(d)
                    if d.reason == Reason::Causal
                        && matches!(view.causal, Causal::Lsn { .. })
                        && causal_deadline.is_some_and(|d| now < d) =>
                {
                    // Registered as waiting, the replay watch asks the replicas where
                    // they are, back to back; each move forward wakes this read to
                    // decide again.
                    waited_from.get_or_insert(now);
                    let left = causal_deadline.map(|d| d.saturating_duration_since(now)).unwrap_or_default();
                    let waiter = waiter.get_or_insert_with(|| self.shared.replay_waits.wait());
                    let _ = tokio::time::timeout(left, waiter.moved()).await;
                }
                Ok(d) => {
                    if let Some(from) = waited_from {
                        let outcome = if d.reason != Reason::Causal { "replica" } else { "primary" };
                        metrics::causal_wait(outcome, now.saturating_duration_since(from));
                    }
                    return Ok((d, snapshot));
                }
                Err(e) if now < deadline && snapshot.primary(now).is_none() => {
                    tracing::debug!(error = %e, "no primary yet: waiting");
                    tokio::time::sleep(config.health.interval).await;
                    now = Instant::now();
                    snapshot = self.shared.topology.snapshot();
                    continue;
                }
                Err(e) => {
                    if class.is_write() {
                        metrics::write_refused(if snapshot.split_brain { "split_brain" } else { "no_primary" });
                    }
                    return Err(e);
                }
            }
            now = Instant::now();
            snapshot = self.shared.topology.snapshot();
            need = self.causal(&snapshot, now, facts);
            view.causal = need.causal;
        }
    }

    /// What the unit's read rule asks of a unit about to run: its reserve, its
    /// `statement_timeout`, its place under the rule's cap.
    async fn admit(&mut self, read: &ReadRoute, class: &Class, executes: bool, text: &str) -> Result<(), PgError> {
        // A rule with reserve = true: its session's connections may come from
        // [pool] reserve.
        self.unit.reserve = read.reserve();
        // A rule's statement_timeout: for a read outside a transaction block, with nothing
        // in flight before it (whose end state is unknown yet). A statement that reads the
        // setting sees the client's own value.
        let no_tx = |c: &Class| c.steps.iter().all(|s| s.tx == TxOp::None);
        self.unit.timeout = read.statement_timeout().filter(|_| {
            executes
                && !class.is_write()
                && self.tx.status.idle()
                && self.server.in_flight == 0
                && no_tx(class)
                && self.unit.classes.iter().all(|(c, _)| no_tx(c))
                && !text.to_ascii_lowercase().contains("statement_timeout")
        });
        // A rule's cap counts its reads (and the transactions they begin): a session
        // without a place waits in line for one before the unit runs.
        self.release_place();
        if let Some(gate) = read.gate().filter(|_| !class.is_write() && self.tx.place.is_none()) {
            if self.server.in_flight > 0 {
                // Not while replies to this session's earlier units are due: the caller
                // decides again once they have come.
                return Err(PgError::error(sqlstate::TOO_MANY_CONNECTIONS, "pgroute: waiting for a place"));
            }
            // Boxed: rare, and it must not set the size of every client's task.
            let admitted = Box::pin(gate.admit()).await?;
            self.tx.place = Some(Box::new(admitted));
        }
        Ok(())
    }

    /// A read that calls a volatile function outside pg_catalog (or one whose volatility
    /// cannot be learned) becomes a write.
    async fn check_volatility(&mut self, class: Arc<Class>) -> Arc<Class> {
        let now = Instant::now();
        let rules = self.shared.rules();
        for f in rules.unknown_functions(&class) {
            let may_write = match self.shared.functions.cached(f, now) {
                Some(known) => known,
                // A name PostgreSQL would truncate: not looked up, not remembered.
                None if !FunctionCatalog::storable(f) => true,
                // Boxed: a catalog lookup holds a server connection; it happens once per
                // function per cache TTL and must not set the size of every client's task.
                None => match Box::pin(self.lookup_volatility(f)).await {
                    Ok(v) => {
                        self.shared.functions.store(f, v, now);
                        v
                    }
                    Err(e) => {
                        tracing::debug!(function = %f.display(), error = %e, "volatility unknown: treated as a write");
                        true
                    }
                },
            };
            if may_write {
                return Arc::new((*class).clone().into_volatile_write(f));
            }
        }
        class
    }

    async fn lookup_volatility(&self, f: &QName) -> Result<bool, PgError> {
        let primary = self.shared.topology.snapshot().primary(Instant::now()).ok_or_else(super::internal)?;
        let mut answers = self.ask_aside(primary, &[&FunctionCatalog::lookup_sql(f)]).await?;
        Ok(answers.pop().ok_or_else(super::internal)??.as_deref() != Some("false"))
    }

    /// Refuses the unit at the front of the queue with `e`.
    fn reject_unit(&mut self, e: PgError) {
        tracing::debug!(error = %e, "unit refused");
        // The rest of a split Query goes with its first part, as the server would skip it.
        self.answer.splitting = false;
        self.answer.split_rest = None;
        metrics::client_error(&e.code);
        self.unit.classes.clear();
        self.client.wbuf.extend_from_slice(e.to_frame().raw());
        match self.client.queue.front().map(|f| f.tag()) {
            Some(tag::QUERY) | Some(tag::FUNCTION_CALL) => {
                self.client.pop();
                self.ready_for_client();
            }
            _ => self.client.intake.skip(),
        }
    }

    /// Makes `node` the active server: its held connection or a new one from the pool,
    /// with the client's settings applied.
    /// `PAUSE`: a unit that would begin a new transaction waits for `RESUME`.
    async fn wait_while_paused(&self) {
        let holds = |p: &Option<crate::shared::Paused>| p.as_ref().is_some_and(|p| p.holds(&self.who.database));
        if !holds(&self.shared.pause.borrow()) {
            return;
        }
        tracing::debug!(pid = self.who.pid, "paused: the next transaction waits for RESUME");
        let mut rx = self.shared.pause.subscribe();
        let _ = rx.wait_for(|p| !holds(p)).await;
    }

    /// Makes `node` the active server; with `place`, a connection it borrows takes a place
    /// among the node's connections on loan (`[pool] node_limit`). Logins take none: they
    /// only learn what the server reports, once per startup packet.
    pub(super) async fn attach(&mut self, node: usize, place: bool) -> Result<(), PgError> {
        if self.server.held.get(node).is_none() {
            let c = match self.checkout(node).await {
                Ok(c) => c,
                Err(e) => {
                    let primary =
                        self.shared.topology.snapshot().nodes.get(node).is_some_and(|n| n.role == Role::Primary);
                    if primary && e.code == sqlstate::CANNOT_CONNECT {
                        // Deciding again at once would only ask the same node again.
                        let interval = self.shared.config().health.interval;
                        Box::pin(tokio::time::sleep(interval)).await;
                    }
                    return Err(e);
                }
            };
            self.server.held.put(node, c);
        }
        // A connection borrowed now, or kept from the login (session mode).
        if place && self.needs_node_place(node) {
            // Boxed: rare (only with node_limit), and it must not set the size of every
            // client's task.
            if let Err(e) = Box::pin(self.take_node_place(node)).await {
                // The connection goes back to its pool, unused.
                if let Some(c) = self.server.held.take(node) {
                    c.release(true);
                }
                return Err(e);
            }
        }
        let wanted = self.settings.hash();
        let Some(conn) = self.server.held.get_mut(node) else {
            return Err(super::internal());
        };
        // Opened with this client's startup packet: its settings are the client's login's.
        let own = conn.opened_with == self.settings.startup().0;
        if own && conn.settings_hash == 0 {
            conn.settings_hash = self.settings.startup_hash();
        }
        if conn.settings_hash != wanted {
            if let Err(e) = conn.run(&self.settings.sync_sql(own)).await {
                self.server.held.drop_conn(node);
                return Err(e);
            }
            conn.settings_hash = wanted;
            conn.unnamed = None;
        }
        self.who.cancel.set((node, conn.pid, conn.secret));
        self.server.active = Some(node);
        self.server.for_reads =
            self.shared.topology.snapshot().nodes.get(node).is_some_and(|n| n.role == Role::Replica);
        Ok(())
    }

    /// Borrows a connection to `node` from this client's pool there.
    pub(super) async fn checkout(&mut self, node: usize) -> Result<Checked, PgError> {
        let (key, startup) = self.settings.startup();
        let client = ClientPool { node, user: &self.who.user, database: &self.who.database, key, startup };
        self.shared.pools.checkout(&mut self.server.pools, &client).await
    }

    /// Stops using the active server: in transaction mode its connection goes back to the
    /// pool; in session mode it stays held for later.
    fn detach(&mut self) {
        let Some(node) = self.server.active.take() else {
            return;
        };
        tracing::trace!(node, in_flight = self.server.in_flight, copy_in = self.server.copy_in, "detach");
        let no_cancel_pending = self.who.cancel.clear();
        if self.config.pool.mode == PoolMode::Transaction && self.pinned.is_none() {
            if let Some(c) = self.server.held.take(node) {
                c.release(self.reusable() && no_cancel_pending);
            }
        }
    }

    /// Detaches when the active server is idle between transactions.
    pub(super) fn maybe_release(&mut self) {
        self.release_place();
        if self.server.active.is_some() && self.reusable() {
            self.detach();
        }
    }

    /// With `[pool] node_limit`: the connection just borrowed takes a place among the
    /// node's connections on loan (from the reserve too for a rule with `reserve = true`).
    async fn take_node_place(&mut self, node: usize) -> Result<(), PgError> {
        let place = self.shared.pools.node_place(node, self.unit.reserve).await?;
        if let (Some(place), Some(c)) = (place, self.server.held.get_mut(node)) {
            c.hold_node_place(place);
        }
        Ok(())
    }

    fn needs_node_place(&self, node: usize) -> bool {
        self.shared.pools.limits_nodes() && self.server.held.get(node).is_some_and(|c| !c.holds_node_place())
    }

    /// Gives back the place under a rule's cap once the session is idle outside a
    /// transaction.
    fn release_place(&mut self) {
        if self.server.in_flight == 0 && self.tx.status.idle() {
            self.tx.place = None;
        }
    }
}

/// Classifies statement text the way the server will read it: in the client's encoding
/// and with its `standard_conforming_strings`. Text that cannot be decoded exactly is a
/// write (`encoding`): the primary, whose answer the client then gets.
/// `parse`: the body of the Parse whose text `sql` is (after the statement name) and its
/// `statement_hash`, which `Classifier::parse_hit` looks it up by first.
fn classify_text(
    classifier: &Classifier,
    encoding: Encoding,
    dialect: Dialect,
    sql: &[u8],
    parse: Option<(&[u8], u64)>,
) -> Arc<Class> {
    let exact = parse.map(|(bytes, hash)| Exact { hash, bytes, reading: encoding.id() });
    if let Some(hit) = exact.and_then(|e| classifier.parse_hit(e, dialect)) {
        return hit;
    }
    match (encoding.decode(sql), exact) {
        (Some(text), Some(exact)) => classifier.classify_parse(exact, &text, dialect),
        (Some(text), None) => classifier.classify_in(&text, dialect),
        (None, _) => Arc::new(Class::write("write:encoding")),
    }
}

impl Session {
    pub(super) fn classify_text(&self, sql: &[u8], parse: Option<(&[u8], u64)>) -> Arc<Class> {
        classify_text(&self.shared.classifier, self.who.encoding, self.who.dialect, sql, parse)
    }
}
