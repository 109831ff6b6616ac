//! Where a session stands, in one place: how pgroute is reading the client's messages
//! (`Intake`), and whether a server connection may go back to a pool (`Session::reusable`).
//!
//! | intake | meaning | next message | to |
//! |---|---|---|---|
//! | `Between` | no unit is open | Query, FunctionCall | routed, forwarded whole (a unit of one message): stays `Between`, one more in flight |
//! | `Between` | | Parse, Bind, Describe, Execute, Close | routed: `Open` |
//! | `Between` | | Sync with nothing attached | answered by pgroute: `Between` |
//! | `Between` | | CopyData, CopyDone, CopyFail, Flush | forwarded to what runs now: `Between` |
//! | `Between` | | a unit that cannot be routed (no primary, ...) | error; Query/FunctionCall answered, else `Skipping` |
//! | `Open` | a unit's messages go to the attached server | Sync (server not in COPY IN) | `Between`, one more in flight |
//! | `Open` | | anything else | forwarded: `Open` |
//! | `Skipping` | pgroute refused an extended unit | Sync | ReadyForQuery from pgroute: `Between` |
//! | `Skipping` | | anything else | dropped |
//!
//! The server side is followed from its replies: units in flight (`in_flight`, one per
//! expected ReadyForQuery), the transaction status of the last ReadyForQuery (`I`, `T`,
//! `E`), and COPY IN (`copy_in`, from CopyInResponse until CopyDone/CopyFail, an error or
//! ReadyForQuery). A CopyInResponse of an extended unit whose Sync was already forwarded
//! reopens that unit (`Open`): the server ignores that Sync, and the client's next one must
//! reach the same server. A session is pinned for good once a pinning statement is routed.
//! During a smart shutdown a session ends (FATAL 57P01) at its first transaction boundary:
//! `Between`, nothing queued or in flight, not in COPY IN, status `I` (`main_loop`).

use super::Session;

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

impl Session {
    /// May the active server connection go back to its pool now? Only when nothing is
    /// running or half-sent on it, no transaction is open, and it holds no state that only
    /// this client may see (a pin). Settings are not checked here: a pooled connection
    /// carries the fingerprint of the settings it has, and whoever takes it next brings it
    /// to theirs (`attach`). Cancel requests on their way are checked by the callers
    /// (`cancel::Handle::clear`).
    pub(super) fn reusable(&self) -> bool {
        self.in_flight == 0
            && self.intake != Intake::Open
            && !self.copy_in
            && self.tx_status == b'I'
            && self.pinned.is_none()
    }
}
