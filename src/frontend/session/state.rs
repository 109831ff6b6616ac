//! Where a session stands, in one place. A session is in one state of each of these, and
//! moves only as the table says.
//!
//! **Intake** (`Client::intake`): how pgroute reads the client's messages. It changes only
//! through `Intake::open`, `close`, `skip` and `reopen_for_copy`.
//!
//! | intake | next message | becomes |
//! |---|---|---|
//! | `Between` | Query, FunctionCall | routed, forwarded whole (a unit of one message): `Between`, one more unit in flight |
//! | `Between` | Parse, Bind, Describe, Execute, Close | routed: `Open` |
//! | `Between` | Sync with nothing attached | answered by pgroute: `Between` |
//! | `Between` | CopyData, CopyDone, CopyFail, Flush | forwarded to what runs now: `Between` |
//! | `Between` | a unit that cannot be routed (no primary, ...) | error; Query/FunctionCall answered: `Between`, else `Skipping` |
//! | `Between` | a unit that must wait (see *Waits*) | stays queued: `Between` |
//! | `Open` | Sync (server not in COPY IN) | `Between`, one more unit in flight |
//! | `Open` | anything else | forwarded: `Open` |
//! | `Skipping` | Sync | ReadyForQuery from pgroute: `Between` |
//! | `Skipping` | anything else | dropped: `Skipping` |
//!
//! **Server side** (`Server`), followed from the replies: units in flight (`in_flight`,
//! one per expected ReadyForQuery, pgroute's own units included), COPY IN (`copy_in`),
//! and the transaction status of the last ReadyForQuery (`Tx::status`).
//!
//! | state | entered on | left on |
//! |---|---|---|
//! | in flight > 0 | a unit's end forwarded (Query, Sync, FunctionCall), an own unit sent | its ReadyForQuery |
//! | COPY IN | CopyInResponse (Syncs already sent are not answered: the unit reopens, `Open`) | CopyDone, CopyFail, an ErrorResponse, ReadyForQuery |
//! | `Idle` | ReadyForQuery `I` | ReadyForQuery `T`/`E` |
//! | `InBlock` | ReadyForQuery `T` | ReadyForQuery `I`/`E` |
//! | `Failed` | ReadyForQuery `E` | ReadyForQuery `I`/`T` |
//!
//! **Answer** (`Answer`): what of the client's answer is held back.
//!
//! | state | entered on | left on |
//! |---|---|---|
//! | holding | the first CommandComplete of a unit with pgroute's position query behind it | the position's answer (or 64 KiB held: sent) |
//! | ReadyForQuery held | that unit's ReadyForQuery | the position's answer: the report, then the ReadyForQuery |
//! | split | a Query that ends a read-only transaction on a replica and goes on (`route::split_transaction_end`) | the first part's ReadyForQuery: the rest is queued next (or dropped if the part failed) |
//!
//! **Session** (for its whole life once entered): pinned (a pinning statement routed:
//! LISTEN, temp table, session lock, SQL PREPARE, WITH HOLD, set_config, SET ROLE, 1000
//! settings; the primary from then on, the connection closed at the end); transaction lost
//! (`Tx::lost`: its server died while nothing was in flight; Close-only units are
//! answered, the next request gets the error and the session ends); draining (pgroute
//! shuts down: the session ends with 57P01 at its next boundary).
//!
//! **Waits** (the unit at the front stays queued, `Between`, until a reply arrives): a
//! Parse or Close in flight decides whether a name it uses is taken; its session's own
//! commit position is being asked (`Ryw::position_pending`) and the unit is a read; it
//! is bound for another node than the active one while units are in flight; a write that
//! only a transaction about to end would keep on a replica; the rest of a split Query
//! until its first part answers; a rule's place while replies are due.
//!
//! Two predicates answer for every state: [`Session::at_boundary`] (between transactions
//! with nothing queued, in flight or half-read: a shutdown may end the session) and
//! [`Session::reusable`] (may the active server connection go back to a pool). Both rest
//! on [`Session::server_settled`].

use super::in_doubt::Doubt;
use super::ledger::Ledger;
use super::Session;
use crate::protocol::PgError;

/// How the session reads the client's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Between units: the next message starts one (and is routed first).
    Between,
    /// A unit's first message was forwarded and its Sync not yet.
    Open,
    /// After a routing error inside an extended-protocol unit: drop messages until Sync.
    Skipping,
}

/// The transaction status of the last ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InBlock,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    /// From a ReadyForQuery's status byte; one PostgreSQL never sends counts as a block
    /// (the connection is then never pooled under it).
    pub fn from_byte(b: u8) -> Self {
        match b {
            b'I' => TxStatus::Idle,
            b'E' => TxStatus::Failed,
            _ => TxStatus::InBlock,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }

    pub fn idle(self) -> bool {
        self == TxStatus::Idle
    }
}

/// The client's transaction: its status, what it did, and what is known of its commit.
#[derive(Default)]
pub(super) struct Tx {
    pub status: TxStatus,
    /// What the statements sent did to the session, settled as their replies arrive.
    pub ledger: Ledger,
    /// The unit whose commit would be in doubt if its connection died (`in_doubt`).
    pub doubt: Doubt,
    /// The server of the client's open transaction died while nothing was in flight: the
    /// client's next message gets this error (`in_doubt`), and the session ends.
    pub lost: Option<Box<PgError>>,
    /// An ErrorResponse came since the last ReadyForQuery.
    pub failed_since_ready: bool,
    /// A place under a rule's `max_concurrent`, held until the session is idle outside a
    /// transaction (one at most: a session counts once). Boxed: rare.
    pub place: Option<Box<crate::rules::Admitted>>,
}

impl Intake {
    /// `Between` → `Open`: a routed unit's first message goes out.
    pub fn open(&mut self) {
        *self = Intake::Open;
    }

    /// → `Between`: the unit's end (Sync, Query, FunctionCall) went out, or the Sync of
    /// a refused unit arrived.
    pub fn close(&mut self) {
        *self = Intake::Between;
    }

    /// → `Skipping`: pgroute refused (or lost the server of) an extended unit; its
    /// messages are dropped up to its Sync.
    pub fn skip(&mut self) {
        *self = Intake::Skipping;
    }

    /// `Between` → `Open` again: COPY IN made the server ignore the unit's Sync, so the
    /// client's next Sync must reach the same server.
    pub fn reopen_for_copy(&mut self) {
        *self = Intake::Open;
    }
}

impl Session {
    /// The server side is at rest: nothing in flight, no unit half-sent, not in COPY IN,
    /// no transaction open.
    pub(super) fn server_settled(&self) -> bool {
        self.server.in_flight == 0
            && self.client.intake != Intake::Open
            && !self.server.copy_in
            && self.tx.status.idle()
    }

    /// May the active server connection go back to its pool now? Only when the server
    /// side is settled and it holds no state that only this client may see (a pin).
    /// Settings are not checked here: a pooled connection carries the fingerprint of the
    /// settings it has, and whoever takes it next brings it to theirs (`attach`). Cancel
    /// requests on their way are checked by the callers (`cancel::Handle::clear`).
    pub(super) fn reusable(&self) -> bool {
        self.server_settled() && self.pinned.is_none()
    }

    /// Between transactions with nothing queued, in flight or half-read (or with the
    /// transaction lost, which ends the session anyway).
    pub(super) fn at_boundary(&self) -> bool {
        self.tx.lost.is_some()
            || (self.server_settled() && self.client.intake == Intake::Between && self.client.drained())
    }
}

#[cfg(test)]
mod tests {
    use super::TxStatus;

    #[test]
    fn status_bytes_round_trip_and_unknown_ones_count_as_a_block() {
        for b in [b'I', b'T', b'E'] {
            assert_eq!(TxStatus::from_byte(b).byte(), b);
        }
        assert_eq!(TxStatus::from_byte(b'X'), TxStatus::InBlock);
        assert!(!TxStatus::from_byte(0).idle());
    }
}
