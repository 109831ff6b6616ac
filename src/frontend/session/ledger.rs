//! The transaction ledger: what a client's statements did to its session, settled in the
//! order the server reports how each statement and its transaction ended.
//!
//! Each statement pgroute forwards carries a [`Step`] (from the classifier): transaction
//! control, settings changed, data written. The session feeds the ledger one event per
//! server reply that ends a statement (CommandComplete and its relatives, ErrorResponse)
//! and one per ReadyForQuery. The ledger follows PostgreSQL's rules:
//!
//! - Statements outside an explicit block run in an implicit transaction that ends at the
//!   unit's ReadyForQuery (a multi-statement Query, or Execute messages up to Sync);
//!   an error rolls back the implicit transaction and the server skips the rest.
//! - `BEGIN` turns the implicit transaction into an explicit block; `COMMIT` (tag `COMMIT`)
//!   keeps its effects, `ROLLBACK`, a `COMMIT` answered `ROLLBACK`, or an error outside a
//!   block discard them; an error inside a block discards them unless `ROLLBACK TO` a
//!   savepoint taken before it recovers the block.
//!
//! What survives is handed back at ReadyForQuery as [`Committed`]: the settings to apply
//! to the client's record, and whether (and under which keys) data was committed. It is a
//! pure state machine: `ledger/tests` drives it without sockets.

use super::state::TxStatus;
use crate::classify::{SettingChange, Step, TxOp};

#[derive(Debug, Default)]
pub struct Ledger {
    /// An explicit transaction block is open.
    in_block: bool,
    /// That block failed: nothing in it commits unless `ROLLBACK TO` recovers it.
    aborted: bool,
    /// Setting changes and savepoints of the current transaction, in order.
    pending: Vec<Entry>,
    /// The current transaction wrote data, with these tagged keys.
    wrote: bool,
    keys: Vec<String>,
    /// What has committed since the last ReadyForQuery.
    committed: Committed,
}

#[derive(Debug)]
enum Entry {
    Savepoint(String),
    Change(SettingChange),
}

/// What committed during one unit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Setting changes now in force, in order.
    pub settings: Vec<SettingChange>,
    /// Data others can read was committed.
    pub wrote: bool,
    /// Tagged keys of the committed writes.
    pub keys: Vec<String>,
}

impl Ledger {
    /// A statement completed; `tag` is its CommandComplete tag, `writes` whether it counts
    /// as a data write, `keys` its tagged keys.
    pub fn done(&mut self, step: &Step, tag: &str, writes: bool, keys: &[String]) {
        match &step.tx {
            TxOp::Begin => self.in_block = true,
            TxOp::Commit { chain } if tag == "COMMIT" => {
                self.commit();
                self.in_block = *chain;
            }
            // COMMIT of a failed block: the server answers ROLLBACK.
            TxOp::Commit { chain } | TxOp::Rollback { chain } => {
                self.discard();
                self.in_block = *chain;
            }
            TxOp::Prepare => {
                // The prepared transaction's data commits later (COMMIT PREPARED, a write
                // of its own); counting it now only makes reads more careful.
                self.commit();
                self.in_block = false;
            }
            TxOp::Savepoint(name) => self.pending.push(Entry::Savepoint(name.clone())),
            TxOp::Release(name) => {
                // Releasing a savepoint releases those taken after it; changes stay.
                if let Some(at) = self.savepoint(name) {
                    let mut k = 0;
                    self.pending.retain(|e| {
                        k += 1;
                        k <= at || matches!(e, Entry::Change(_))
                    });
                }
            }
            TxOp::RollbackTo(name) => {
                if let Some(at) = self.savepoint(name) {
                    self.pending.truncate(at + 1);
                }
                // Writes after the savepoint are undone; keeping `wrote` only makes reads
                // more careful.
                self.aborted = false;
            }
            TxOp::None => {}
        }
        self.pending.extend(step.settings.iter().cloned().map(Entry::Change));
        if writes {
            self.wrote = true;
            self.keys.extend(keys.iter().cloned());
        }
    }

    /// The server reported an error: the transaction fails (a block) or is rolled back
    /// (an implicit transaction).
    pub fn failed(&mut self) {
        if self.in_block {
            self.aborted = true;
        } else {
            self.discard();
        }
    }

    /// ReadyForQuery with the transaction status `status` ends the unit: an implicit
    /// transaction commits, and the status corrects what the ledger believes.
    pub fn ready(&mut self, status: TxStatus) -> Committed {
        match status {
            TxStatus::InBlock => (self.in_block, self.aborted) = (true, false),
            TxStatus::Failed => (self.in_block, self.aborted) = (true, true),
            TxStatus::Idle => {
                if self.aborted {
                    self.discard();
                } else {
                    self.commit();
                }
                (self.in_block, self.aborted) = (false, false);
            }
        }
        std::mem::take(&mut self.committed)
    }

    /// The current transaction has written data (as far as the statements settled so far say).
    pub fn wrote(&self) -> bool {
        self.wrote
    }

    fn savepoint(&self, name: &str) -> Option<usize> {
        self.pending.iter().rposition(|e| matches!(e, Entry::Savepoint(n) if n == name))
    }

    fn commit(&mut self) {
        for e in self.pending.drain(..) {
            if let Entry::Change(c) = e {
                self.committed.settings.push(c);
            }
        }
        if std::mem::take(&mut self.wrote) {
            self.committed.wrote = true;
            self.committed.keys.append(&mut self.keys);
        }
        self.aborted = false;
    }

    fn discard(&mut self) {
        self.pending.clear();
        self.wrote = false;
        self.keys.clear();
        self.aborted = false;
    }
}

#[cfg(test)]
mod tests;
