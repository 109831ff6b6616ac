//! Units pgroute answers itself, without a server, because no server could answer them
//! as the client's one server would.

use super::state::TxStatus;
use super::Session;
use crate::classify::Classifier;
use crate::protocol::{self, sqlstate, tag, BodyReader, PgError};

/// What to do with the unit at the front of the queue.
pub(super) enum Local {
    /// Not one of ours: route it.
    Route,
    /// Ours, once the units in flight have answered (the reply depends on how they end).
    Wait,
    /// Answered.
    Done,
}

impl Session {
    /// `DEALLOCATE name` (one simple Query, nothing else in it) of a statement the client
    /// prepared with Parse. Its server copy is named `pgr_<hash>`, may live on another
    /// node's connection or on none, and is shared with other names and clients, so the
    /// name is forgotten here (the server copy stays, as a cache) and the reply is the
    /// server's: `DEALLOCATE`, or 25P02 in an aborted transaction, where nothing changes.
    pub(super) fn deallocate_locally(&mut self) -> Local {
        let Some(front) = self.client.queue.front().filter(|f| f.tag() == tag::QUERY) else {
            return Local::Route;
        };
        let Ok(raw) = BodyReader::new(front.body()).cstr_bytes() else { return Local::Route };
        // The hot path pays one byte test: the statement starts with `d` or a comment.
        let start = raw.iter().position(|b| !b.is_ascii_whitespace()).map_or(&raw[..0], |i| &raw[i..]);
        if !matches!(start.first(), Some(b'd' | b'D' | b'/' | b'-')) {
            return Local::Route;
        }
        let Some(sql) = self.who.encoding.decode(raw) else { return Local::Route };
        let Some(name) = Classifier::deallocates(&sql, self.who.dialect) else { return Local::Route };
        // Longer names are cut by the server's identifier rules: its answer is the truth.
        if name.len() >= 64 || !self.prepared.named.contains_key(&name) {
            return Local::Route;
        }
        if self.server.in_flight > 0 {
            return Local::Wait;
        }
        self.client.pop();
        if self.tx.status == TxStatus::Failed {
            let e = PgError::error(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            self.client.wbuf.extend_from_slice(e.to_frame().raw());
        } else {
            tracing::debug!(statement = %name, "DEALLOCATE of a protocol-level statement answered by pgroute");
            self.prepared.named.remove(&name);
            let done = protocol::build(tag::COMMAND_COMPLETE, |b| protocol::put_cstr(b, b"DEALLOCATE"));
            self.client.wbuf.extend_from_slice(done.raw());
        }
        self.ready_for_client();
        Local::Done
    }
}
