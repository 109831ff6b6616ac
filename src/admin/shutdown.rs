//! `SHUTDOWN`: the smart shutdown SIGTERM starts: no new clients, each session ends at its
//! next transaction boundary, pgroute exits when all are gone (or after
//! `[listen] shutdown_timeout`).

use super::rows::Reply;
use super::Console;

pub fn run(c: &Console) -> Reply {
    tracing::warn!(user = %c.user, "SHUTDOWN requested from the console");
    c.shared.begin_shutdown();
    Reply::done("SHUTDOWN")
}
