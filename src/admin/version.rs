//! `SHOW VERSION` and `SHOW HELP`.

use super::command::HELP;
use super::rows::{text, Reply, Rows};

pub fn run() -> Reply {
    let mut rows = Rows::new(&["version"]);
    rows.push(vec![text(format!("pgroute {}", env!("CARGO_PKG_VERSION")))]);
    Reply::Rows(rows)
}

pub fn help() -> Reply {
    let mut rows = Rows::new(&["commands"]);
    for c in HELP.split("; ") {
        rows.push(vec![text(c)]);
    }
    Reply::Rows(rows)
}
