//! A read of `pg_prepared_statements` sees what it would on a direct connection: none of
//! the statements other clients left on the pooled server connection (their texts are
//! theirs). In front of a unit that names the view, with nothing in flight, pgroute
//! closes every protocol-level statement the connection may hold (its own `pgr_` names:
//! those it counts, and the strays an error left uncounted), never the client's SQL-level
//! `PREPARE`s; the client's protocol-level statements are prepared again where they are
//! next used. Close messages, one unit of pgroute's own: closing a statement that is not
//! there is no error, and Close works in any transaction state, aborted too.

use super::{Expect, Own, Session};
use crate::classify::Class;
use crate::frontend::prepared;
use crate::protocol::tag;

impl Session {
    /// Once the unit's server is attached, before its first message.
    pub(super) fn hide_other_statements(&mut self, node: usize, class: &Class) {
        if self.server.in_flight > 0 || !class.relations.iter().any(|r| r.name == "pg_prepared_statements") {
            return;
        }
        let Some(conn) = self.server.held.get_mut(node) else { return };
        let mut held: Vec<u64> = conn.prepared.drain().collect();
        held.extend(conn.stray.drain());
        if held.is_empty() {
            return;
        }
        for hash in held {
            prepared::put_target(&mut self.server.wbuf, tag::CLOSE, b'S', &prepared::server_name(hash));
            self.server.expect.push_back(Expect::Close { forward: false, closed: None });
        }
        self.send_own_sync(Own::Forget);
    }
}
