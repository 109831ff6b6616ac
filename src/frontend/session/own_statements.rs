//! A read of `pg_prepared_statements` sees what it would on a direct connection: none of
//! the statements other clients left on the pooled server connection (their texts are
//! theirs). In front of a unit that names the view, with nothing in flight, pgroute drops
//! every protocol-level statement the connection holds (its own `pgr_` names, each a
//! unit of its own in the same flight), never the client's SQL-level `PREPARE`s; the
//! client's protocol-level statements are prepared again where they are next used.

use super::{Own, Session};
use crate::classify::Class;
use crate::frontend::prepared;

impl Session {
    /// Once the unit's server is attached, before its first message.
    pub(super) fn hide_other_statements(&mut self, node: usize, class: &Class) {
        if self.in_flight > 0 || !class.relations.iter().any(|r| r.name == "pg_prepared_statements") {
            return;
        }
        let Some(conn) = self.held.get_mut(node) else { return };
        // One unit each, so that one the server does not hold (an error) leaves the others.
        let held: Vec<u64> = conn.prepared.drain().collect();
        conn.unnamed = None;
        for hash in held {
            self.send_own_query(&format!("DEALLOCATE \"{}\"", prepared::server_name(hash)), Own::Forget);
        }
    }
}
