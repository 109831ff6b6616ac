//! `RELOAD`: reads the configuration file again and applies it as SIGHUP does; the lines
//! of what was done come back as notices, a file that fails validation as an error.

use super::rows::Reply;
use super::Console;
use crate::protocol::sqlstate;

pub fn run(c: &Console) -> Reply {
    match c.shared.reload_file() {
        Ok(notices) => Reply::Done { tag: "RELOAD".into(), notices },
        Err(e) => Reply::error(sqlstate::CONFIG_FILE_ERROR, format!("reload refused, nothing changed: {e}")),
    }
}
