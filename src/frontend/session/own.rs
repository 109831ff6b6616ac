//! pgroute's own queries, in one place. A kind is one arm of [`Own`] here and a file that
//! sends it and reads its answer.
//!
//! **In the client's flight** (`Own`): on the connection the client's unit runs on, in
//! the same write, so they cost no round trip; the server answers them in order with the
//! client's units, and nothing of their answer, errors included, reaches the client or
//! settles anything in the ledger.
//!
//! | kind | sent | by | its answer |
//! |---|---|---|---|
//! | `Prepare` | where a transaction begins, the client's statements its connection lacks | `forward::prepare_for_transaction` | dropped |
//! | `Position` | behind a unit that may commit a write: the commit's position | `commit_lsn` | the row is the position; its ReadyForQuery releases the client's |
//! | `Xid` | in front of a COMMIT of a block that wrote: the transaction's id | `loss::track_commit` | the row is what `in_doubt` judges from; 25P02 says the block had failed |
//! | `Timeout` | a rule's `statement_timeout` in front of a ruled read, the client's own behind it | `rule_timeout` | dropped |
//! | `Forget` | Closes of every statement of pgroute's in front of a read of `pg_prepared_statements` | `own_statements` | dropped |
//!
//! **Aside** ([`Session::ask_aside`]): on a pooled connection of the session's user and
//! database of its own (`Purpose::Catalog`), so a client whose pool is full is not made
//! to wait for itself: function volatility (`route::lookup_volatility`) and a lost
//! COMMIT's `txid_status` (`loss::ask_status`). The primary's position for a read
//! (`read_needs::ask_primary_position`) uses the client's own pool, one ask at a time, and
//! the login's default isolation (`Session::greet`) the connection the login attached.

use std::time::Instant;

use super::{Expect, Session};
use crate::backend::Purpose;
use crate::protocol::{self, sqlstate, PgError};

/// pgroute's own units on a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Own {
    /// Statements prepared where a transaction begins (`forward::prepare_for_transaction`).
    Prepare,
    /// The commit-position query behind a committing unit (`commit_lsn`): its row is read.
    Position,
    /// The transaction id asked for in front of a COMMIT (`in_doubt`): its row is read.
    Xid,
    /// A rule's `statement_timeout` set in front of a unit, or the client's own value put
    /// back behind it (`rule_timeout`).
    Timeout,
    /// Every statement dropped in front of a read of `pg_prepared_statements`
    /// (`own_statements`).
    Forget,
}

impl Own {
    /// Its answer is a simple Query's (RowDescription, DataRow, CommandComplete), all
    /// pgroute's; a unit of extended messages answers with completes the expectations
    /// already account for.
    pub fn is_query(self) -> bool {
        !matches!(self, Own::Prepare)
    }
}

impl Session {
    /// A simple Query of pgroute's own on the active server, in the client's flight.
    pub(super) fn send_own_query(&mut self, sql: &str, own: Own) {
        self.server.wbuf.extend_from_slice(protocol::query(sql).raw());
        self.expect_own(own, false);
    }

    /// Extended messages of pgroute's own already in the send buffer, closed with a Sync
    /// as a unit of their own.
    pub(super) fn send_own_sync(&mut self, own: Own) {
        self.server.wbuf.extend_from_slice(protocol::sync().raw());
        self.expect_own(own, true);
    }

    fn expect_own(&mut self, own: Own, sync: bool) {
        self.server.expect.push_back(Expect::Ready {
            sync,
            names: Vec::new(),
            split: false,
            own: Some(own),
            commits: false,
            sent: Instant::now(),
        });
        self.server.in_flight += 1;
    }

    /// A row of an own query on `node`'s connection.
    pub(super) fn own_row(&mut self, own: Own, node: usize, body: &[u8]) {
        let wal = self.shared.topology.snapshot().nodes.get(node).map(|n| n.wal).unwrap_or_default();
        match own {
            Own::Position => self.position_row(body, wal),
            Own::Xid => self.xid_answered(body, wal.timeline),
            Own::Timeout | Own::Prepare | Own::Forget => {}
        }
    }

    /// An own unit failed with `code`.
    pub(super) fn own_failed(&mut self, own: Own, code: &str) {
        tracing::debug!(?own, code, "a unit of pgroute's own failed");
        // The id query in front of a COMMIT fails in a failed block.
        if own == Own::Xid && code == sqlstate::IN_FAILED_SQL_TRANSACTION {
            self.tx.doubt.failed_block();
        }
    }

    /// An own unit's ReadyForQuery.
    pub(super) fn own_done(&mut self, own: Own) {
        if own == Own::Position {
            self.commit_lsn_answered();
        }
    }

    /// Queries of pgroute's own aside, one after another on one pooled connection of
    /// their own on `node`: each one's first value (`None` for NULL or no row). The
    /// connection goes back to its pool only if every query succeeded.
    pub(super) async fn ask_aside(
        &self,
        node: usize,
        sqls: &[&str],
    ) -> Result<Vec<Result<Option<String>, PgError>>, PgError> {
        let mut conn =
            self.shared.pools.checkout_for(node, &self.who.user, &self.who.database, Purpose::Catalog, &[]).await?;
        let mut answers = Vec::with_capacity(sqls.len());
        for sql in sqls {
            answers.push(conn.query_text(sql).await);
        }
        conn.release(answers.iter().all(Result::is_ok));
        Ok(answers)
    }
}
