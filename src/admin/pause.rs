//! `PAUSE [db]` / `RESUME [db]`: for maintenance, new transactions (of every database, or
//! of one) wait until resumed; transactions already running finish normally.

use super::rows::Reply;
use super::Console;
use crate::protocol::sqlstate;
use crate::shared::Paused;

pub fn pause(c: &Console, db: Option<String>) -> Reply {
    c.shared.pause.send_modify(|p| {
        *p = match (p.take(), db.clone()) {
            (_, None) | (Some(Paused::All), _) => Some(Paused::All),
            (Some(Paused::Databases(mut dbs)), Some(d)) => {
                if !dbs.contains(&d) {
                    dbs.push(d);
                }
                Some(Paused::Databases(dbs))
            }
            (None, Some(d)) => Some(Paused::Databases(vec![d])),
        }
    });
    tracing::warn!(user = %c.user, database = db.as_deref().unwrap_or("*"), "PAUSE: new transactions wait");
    Reply::done("PAUSE")
}

pub fn resume(c: &Console, db: Option<String>) -> Reply {
    let mut refused = None;
    c.shared.pause.send_modify(|p| match (p.take(), &db) {
        (_, None) => {}
        (Some(Paused::Databases(mut dbs)), Some(d)) if dbs.contains(d) => {
            dbs.retain(|x| x != d);
            *p = (!dbs.is_empty()).then_some(Paused::Databases(dbs));
        }
        (other, Some(d)) => {
            refused = Some(format!("database {d:?} is not paused on its own (RESUME without a name resumes all)"));
            *p = other;
        }
    });
    if let Some(e) = refused {
        return Reply::error(sqlstate::UNDEFINED_OBJECT, e);
    }
    tracing::warn!(user = %c.user, database = db.as_deref().unwrap_or("*"), "RESUME");
    Reply::done("RESUME")
}
