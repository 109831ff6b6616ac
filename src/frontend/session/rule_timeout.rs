//! A rule's `statement_timeout`: a read the rule placed, outside a transaction block and
//! with nothing in flight before it, runs with the server's `statement_timeout` set to the
//! rule's. pgroute sends `SET statement_timeout` in front of the unit and the client's own
//! value (`RESET`, then its own SET if it made one) behind it, in the same flight: no round
//! trip, and the connection is back in the client's state before anything else runs on it.
//! Their replies are pgroute's own and never reach the client.

use super::{Own, Session};

impl Session {
    /// Before the unit's first message, once its server is attached.
    pub(super) fn set_rule_timeout(&mut self) {
        let Some(ms) = self.unit.timeout.take() else { return };
        self.send_own_query(&format!("SET statement_timeout = {ms}"), Own::Timeout);
        self.server.rule_timeout_set = true;
    }

    /// After the unit's end: the client's own `statement_timeout` again.
    pub(super) fn restore_rule_timeout(&mut self) {
        if !std::mem::take(&mut self.server.rule_timeout_set) {
            return;
        }
        let mut sql = String::from("RESET statement_timeout");
        if let Some(own) = self.settings.entry("statement_timeout") {
            sql.push(';');
            sql.push_str(own);
        }
        self.send_own_query(&sql, Own::Timeout);
    }
}
