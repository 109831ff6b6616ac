//! The ledger against PostgreSQL's transaction rules, one reply sequence per case. Each
//! case lists the server events of one or more units and the settings that end up in
//! force; `tests/truth.rs` checks the same sequences against a real server.

use super::*;
use crate::classify::{Classifier, SettingChange};

/// What the server said about one statement of the text.
#[derive(Clone, Copy)]
enum Ev {
    /// CommandComplete with this tag.
    Ok(&'static str),
    Err,
}

/// Runs `sql` (one Query) through the ledger with the server's events and final status;
/// returns the committed setting names.
fn run(ledger: &mut Ledger, sql: &str, events: &[Ev], status: u8) -> (Vec<String>, bool) {
    let class = Classifier::new(0).classify(sql);
    for (step, ev) in class.steps.iter().zip(events) {
        match ev {
            Ev::Ok(tag) => ledger.done(step, tag, step.writes_data, &[]),
            Ev::Err => {
                ledger.failed();
                break;
            }
        }
    }
    let c = ledger.ready(TxStatus::from_byte(status));
    let names = c
        .settings
        .iter()
        .map(|s| match s {
            SettingChange::Set { name, .. } => name.clone(),
            SettingChange::Reset { name } => format!("reset {name}"),
            SettingChange::ResetAll => "reset all".into(),
        })
        .collect();
    (names, c.wrote)
}

use Ev::*;

#[test]
fn a_commit_before_a_failing_statement_keeps_the_block_settings() {
    let mut l = Ledger::default();
    let sql = "BEGIN; SET search_path TO other; COMMIT; SELECT 1/0";
    let got = run(&mut l, sql, &[Ok("BEGIN"), Ok("SET"), Ok("COMMIT"), Err], b'I');
    assert_eq!(got, (vec!["search_path".to_string()], false));
}

#[test]
fn an_error_rolls_back_the_implicit_transaction() {
    let mut l = Ledger::default();
    assert_eq!(run(&mut l, "SET a.b = 1; SELECT 1/0", &[Ok("SET"), Err], b'I'), (vec![], false));
    assert_eq!(run(&mut l, "INSERT INTO t VALUES (1); SELECT 1/0", &[Ok("INSERT 0 1"), Err], b'I'), (vec![], false));
    assert_eq!(run(&mut l, "SET a.b = 1; SELECT 1", &[Ok("SET"), Ok("SELECT 1")], b'I'), (vec!["a.b".into()], false));
}

#[test]
fn a_block_keeps_its_effects_until_it_ends() {
    let mut l = Ledger::default();
    assert_eq!(
        run(&mut l, "BEGIN; SET a.b = 1; INSERT INTO t VALUES (1)", &[Ok("BEGIN"), Ok("SET"), Ok("INSERT 0 1")], b'T'),
        (vec![], false)
    );
    assert_eq!(run(&mut l, "SET a.c = 2", &[Ok("SET")], b'T'), (vec![], false));
    assert_eq!(run(&mut l, "COMMIT", &[Ok("COMMIT")], b'I'), (vec!["a.b".to_string(), "a.c".to_string()], true));
    // Rolled back: nothing.
    run(&mut l, "BEGIN; SET a.b = 1; INSERT INTO t VALUES (1)", &[Ok("BEGIN"), Ok("SET"), Ok("INSERT 0 1")], b'T');
    assert_eq!(run(&mut l, "ROLLBACK", &[Ok("ROLLBACK")], b'I'), (vec![], false));
}

#[test]
fn a_failed_block_commits_nothing_even_when_told_to_commit() {
    let mut l = Ledger::default();
    run(&mut l, "BEGIN; SET a.b = 1", &[Ok("BEGIN"), Ok("SET")], b'T');
    run(&mut l, "SELECT 1/0", &[Err], b'E');
    assert_eq!(run(&mut l, "COMMIT", &[Ok("ROLLBACK")], b'I'), (vec![], false));
}

#[test]
fn savepoints_undo_and_keep_settings_like_the_server() {
    let mut l = Ledger::default();
    let sql = "BEGIN; SET a.x = 1; SAVEPOINT s; SET a.y = 2; ROLLBACK TO SAVEPOINT s; SET a.z = 3; COMMIT";
    let evs = [Ok("BEGIN"), Ok("SET"), Ok("SAVEPOINT"), Ok("SET"), Ok("ROLLBACK"), Ok("SET"), Ok("COMMIT")];
    assert_eq!(run(&mut l, sql, &evs, b'I').0, vec!["a.x", "a.z"]);
    // An error after a savepoint: ROLLBACK TO recovers the block.
    run(
        &mut l,
        "BEGIN; SET a.x = 1; SAVEPOINT s; SET a.y = 2",
        &[Ok("BEGIN"), Ok("SET"), Ok("SAVEPOINT"), Ok("SET")],
        b'T',
    );
    run(&mut l, "SELECT 1/0", &[Err], b'E');
    assert_eq!(run(&mut l, "ROLLBACK TO s; COMMIT", &[Ok("ROLLBACK"), Ok("COMMIT")], b'I').0, vec!["a.x"]);
    // RELEASE keeps the changes made after the savepoint.
    let sql = "BEGIN; SAVEPOINT s; SET a.y = 2; RELEASE s; COMMIT";
    let evs = [Ok("BEGIN"), Ok("SAVEPOINT"), Ok("SET"), Ok("RELEASE"), Ok("COMMIT")];
    assert_eq!(run(&mut l, sql, &evs, b'I').0, vec!["a.y"]);
}

#[test]
fn chained_commits_and_prepared_transactions() {
    let mut l = Ledger::default();
    let sql = "BEGIN; SET a.x = 1; COMMIT AND CHAIN; SET a.y = 2";
    assert_eq!(run(&mut l, sql, &[Ok("BEGIN"), Ok("SET"), Ok("COMMIT"), Ok("SET")], b'T').0, vec!["a.x"]);
    assert_eq!(run(&mut l, "ROLLBACK", &[Ok("ROLLBACK")], b'I').0, Vec::<String>::new());
    let sql = "BEGIN; SET a.x = 1; PREPARE TRANSACTION 'p'";
    assert_eq!(run(&mut l, sql, &[Ok("BEGIN"), Ok("SET"), Ok("PREPARE TRANSACTION")], b'I').0, vec!["a.x"]);
}

#[test]
fn the_server_status_corrects_the_ledger() {
    let mut l = Ledger::default();
    // A unit the ledger could not follow still ends where the server says.
    l.ready(TxStatus::Failed);
    assert_eq!(run(&mut l, "SET a.b = 1", &[Ok("SET")], b'E').0, Vec::<String>::new());
    assert_eq!(run(&mut l, "ROLLBACK", &[Ok("ROLLBACK")], b'I').0, Vec::<String>::new());
    assert_eq!(run(&mut l, "SET a.b = 1", &[Ok("SET")], b'I').0, vec!["a.b"]);
}

#[test]
fn tagged_keys_commit_with_their_writes() {
    let mut l = Ledger::default();
    let insert = Step { writes_data: true, ..Step::default() };
    let keys = ["wallet:1".to_string()];
    l.done(&insert, "INSERT 0 1", true, &keys);
    l.failed();
    assert_eq!(l.ready(TxStatus::Idle), Committed::default());
    l.done(&insert, "INSERT 0 1", true, &keys);
    assert_eq!(l.ready(TxStatus::Idle), Committed { settings: vec![], wrote: true, keys: keys.to_vec() });
}
