//! A read of `pg_prepared_statements` sees what it would on a direct connection: none of
//! the statements other clients left on the pooled server connection (their texts are
//! theirs). In front of a unit that names the view, with nothing in flight, pgroute drops
//! every statement the connection holds (`DEALLOCATE ALL`, a unit of its own in the same
//! flight); the client's own statements are prepared again where they are next used.

use super::{Own, Session};
use crate::classify::Class;

impl Session {
    /// Once the unit's server is attached, before its first message.
    pub(super) fn hide_other_statements(&mut self, node: usize, class: &Class) {
        if self.in_flight > 0 || !class.relations.iter().any(|r| r.name == "pg_prepared_statements") {
            return;
        }
        let Some(conn) = self.held.get_mut(node) else { return };
        conn.prepared.clear();
        conn.unnamed = None;
        self.send_own_query("DEALLOCATE ALL", Own::Forget);
    }
}
