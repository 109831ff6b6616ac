//! `SHOW CONFIG`: the configuration in force (after the last reload), one row per key as
//! the file would write it (`config::reference::settings`), passwords and verifiers left
//! out, keys left unset shown as `off`, `none` or `unlimited`.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let mut rows = Rows::new(&["key", "value"]);
    for (key, value) in crate::config::reference::settings(&c.shared.config()) {
        rows.push(vec![text(key), Some(value)]);
    }
    Reply::Rows(rows)
}
