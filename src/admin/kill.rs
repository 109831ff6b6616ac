//! `KILL <client pid>`: end a client's session (the pid from `SHOW CLIENTS`, the one its
//! BackendKeyData carries). A transaction it has open is rolled back by its server.

use super::rows::Reply;
use super::Console;
use crate::protocol::sqlstate;

pub fn run(c: &Console, pid: i32) -> Reply {
    if pid == c.pid || !c.shared.cancels.kill(pid) {
        return Reply::error(sqlstate::UNDEFINED_OBJECT, format!("no other client with pid {pid}"));
    }
    tracing::warn!(user = %c.user, pid, "KILL: client ended by an administrator");
    Reply::done("KILL")
}
