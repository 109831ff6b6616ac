//! Classifier behaviour beyond the route table in `rules/tests.rs`: session effects,
//! settings, the cache.

use super::*;

fn settings(c: &Class) -> Vec<SettingChange> {
    c.settings().cloned().collect()
}

fn steps(sql: &str) -> Vec<TxOp> {
    Classifier::new(0).classify(sql).steps.iter().map(|s| s.tx.clone()).collect()
}

#[test]
fn each_statement_is_one_step_with_its_transaction_control() {
    use TxOp::*;
    assert_eq!(
        steps("BEGIN; SET search_path TO other; COMMIT; SELECT 1/0"),
        vec![Begin, None, Commit { chain: false }, None]
    );
    assert_eq!(steps(";;SELECT 1;;"), vec![None]);
    assert_eq!(
        steps("commit and chain; rollback and no chain; abort"),
        vec![Commit { chain: true }, Rollback { chain: false }, Rollback { chain: false }]
    );
    assert_eq!(
        steps("SAVEPOINT a; ROLLBACK TO SAVEPOINT a; rollback work to \"B\"; RELEASE SAVEPOINT a; release b"),
        vec![
            Savepoint("a".into()),
            RollbackTo("a".into()),
            RollbackTo("B".into()),
            Release("a".into()),
            Release("b".into())
        ]
    );
    assert_eq!(
        steps("PREPARE TRANSACTION 'x'; COMMIT PREPARED 'x'; END"),
        vec![Prepare, None, Commit { chain: false }]
    );
    // A SQL-standard function body is one statement, semicolons and CASE ... END included.
    let body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 1 AS begin; SELECT 3";
    assert_eq!(steps(body).len(), 3);
    let c = Classifier::new(0).classify("INSERT INTO t VALUES (1); SELECT 1; SET x.y = 1");
    assert_eq!(c.steps.iter().map(|s| s.writes_data).collect::<Vec<_>>(), vec![true, false, false]);
    assert_eq!(c.steps[2].settings.len(), 1);
}

#[test]
fn literals_that_decide_the_class_are_part_of_the_cache_key() {
    let c = Classifier::new(100);
    assert!(!c.classify("EXPLAIN (ANALYZE 0) DELETE FROM t WHERE id = 1").is_write());
    assert!(c.classify("EXPLAIN (ANALYZE 1) DELETE FROM t WHERE id = 1").is_write());
    assert!(c.classify("EXPLAIN (ANALYZE '1') DELETE FROM t").is_write());
}

#[test]
fn backslash_escapes_are_read_when_standard_conforming_strings_is_off() {
    let c = Classifier::new(100);
    let smuggled = "SELECT '\\''; DELETE FROM t; --'";
    let off = Dialect { standard_strings: false };
    assert!(c.classify_in(smuggled, off).is_write(), "with backslash escapes the DELETE is a statement");
    // The two readings never share a cache entry.
    assert!(c.classify_in("SELECT '\\'' || 'x'", off).steps.len() == 1);
    assert!(c.classify_in("SELECT 'a\\'; DELETE FROM t; --'", off).steps.len() == 1);
    assert!(c.classify("SELECT 'a\\'; DELETE FROM t; --'").is_write());
}

#[test]
fn begin_and_pins_are_reported() {
    let c = Classifier::new(10);
    assert_eq!(c.classify("BEGIN READ ONLY").begins, Some(true));
    assert_eq!(c.classify("START TRANSACTION").begins, Some(false));
    assert_eq!(c.classify("SELECT 1").begins, None);
    assert_eq!(c.classify("LISTEN x").pins.as_deref(), Some("listen"));
    assert_eq!(c.classify("SELECT pg_advisory_lock(1)").pins.as_deref(), Some("function pg_advisory_lock"));
    assert_eq!(c.classify("SELECT pg_advisory_xact_lock(1)").pins, None);
}

#[test]
fn settings_changes_carry_the_literal_text_and_skip_the_cache() {
    let c = Classifier::new(10);
    let a = c.classify("SET search_path = 'a'");
    let b = c.classify("SET search_path = 'b'");
    assert_eq!(
        settings(&a),
        vec![SettingChange::Set { name: "search_path".into(), statement: "SET search_path = 'a'".into() }]
    );
    assert_eq!(
        settings(&b),
        vec![SettingChange::Set { name: "search_path".into(), statement: "SET search_path = 'b'".into() }]
    );
    assert_eq!(
        settings(&c.classify("SET SESSION statement_timeout TO 5"))[0],
        SettingChange::Set { name: "statement_timeout".into(), statement: "SET SESSION statement_timeout TO 5".into() }
    );
    assert_eq!(
        settings(&c.classify("set myapp.tenant = 7"))[0],
        SettingChange::Set { name: "myapp.tenant".into(), statement: "set myapp.tenant = 7".into() }
    );
    assert_eq!(settings(&c.classify("RESET ALL")), vec![SettingChange::ResetAll]);
    assert_eq!(settings(&c.classify("DISCARD ALL")), vec![SettingChange::ResetAll]);
    assert_eq!(settings(&c.classify("reset Work_Mem")), vec![SettingChange::Reset { name: "work_mem".into() }]);
    assert!(settings(&c.classify("SET LOCAL work_mem = 1")).is_empty());
    assert_eq!(settings(&c.classify("SELECT 1; SET a.b = 1")).len(), 1);
    assert!(c.cache().is_empty(), "session statements must not be cached");
}

#[test]
fn literal_varying_queries_share_one_cache_entry() {
    let c = Classifier::new(10);
    for aid in [1, 42, 99999] {
        c.classify(&format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"));
    }
    assert_eq!(c.cache().len(), 1);
    assert_eq!(c.cache().stats(), (2, 1));
}

#[test]
fn a_parse_failure_never_inherits_an_earlier_route() {
    let c = Classifier::new(10);
    assert_eq!(c.classify("SELECT 1").access, Access::Read);
    assert_eq!(c.classify("SELECT 1 FROM t WHERE (x = 1 INSERT").reason, "parse_error");
    assert_eq!(c.classify("SELECT 1").access, Access::Read);
}

#[test]
fn full_cache_starts_over_instead_of_growing() {
    let c = Classifier::new(3);
    for t in ["a", "b", "c", "d", "e"] {
        c.classify(&format!("SELECT * FROM {t}"));
    }
    assert!(c.cache().len() <= 3);
}

/// Issue 22, item 7: the cache is bounded in bytes, not only in entries.
#[test]
fn large_texts_are_classified_but_not_kept() {
    let c = Classifier::new(10_000);
    let huge = format!("SELECT 1 FROM t WHERE {}", "a = b AND ".repeat(10_000));
    for i in 0..20 {
        let sql = format!("{huge} c{i} = 1");
        assert!(!c.classify(&sql).is_write());
    }
    assert!(c.cache().bytes() < 64 * 1024, "{} bytes kept", c.cache().bytes());
    c.classify("SELECT 1");
    assert_eq!(c.cache().len(), 1);
}

#[test]
fn only_data_writes_make_a_session_causal() {
    let c = Classifier::new(10);
    for sql in ["INSERT INTO t VALUES (1)", "SELECT lo_create(0)", "SELECT pg_advisory_unlock_all(); DELETE FROM t"] {
        assert!(c.classify(sql).writes_data, "{sql}");
    }
    for sql in ["BEGIN", "SELECT 1", "LISTEN x", "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"] {
        assert!(!c.classify(sql).writes_data, "{sql}");
    }
}

#[test]
fn metric_labels_come_from_a_fixed_set() {
    let c = Classifier::new(0);
    let folded = ["write:other", "write:function", "pin:function", "write:explain analyze", "pin:other", "other"];
    for sql in [
        "frobnicate the world",
        "SELECT my_fn_123()",
        "SELECT nextval('s')",
        "SELECT pg_advisory_lock(1)",
        "EXPLAIN ANALYZE DELETE FROM t",
        "xyzzy; plugh",
        "UPDATE t SET a = 1",
        "LISTEN x",
    ] {
        let l = reason_label(&c.classify(sql).reason);
        assert!(LABELS.contains(&l) || folded.contains(&l), "{sql}: {l}");
    }
    assert_eq!(reason_label("write:frobnicate"), "write:other");
    assert_eq!(reason_label("write:function credit_wallet (volatile)"), "write:function");
    assert_eq!(reason_label("write:update"), "write:update");
}

#[test]
fn statement_ends_cut_after_each_statements_semicolon() {
    let sql = "SELECT ';'; ROLLBACK ;INSERT INTO t VALUES (1) -- c\n";
    let ends = Classifier::statement_ends(sql, Dialect::default());
    assert_eq!(ends.len(), Classifier::new(0).classify(sql).steps.len());
    assert_eq!(&sql[..ends[0]], "SELECT ';';");
    assert_eq!(&sql[ends[0]..ends[1]], " ROLLBACK ;");
    assert_eq!(&sql[ends[1]..ends[2]], "INSERT INTO t VALUES (1)");
}

#[test]
fn deallocate_of_one_name_is_recognised_with_the_name_folded() {
    let d = |sql: &str| Classifier::deallocates(sql, Dialect::default());
    assert_eq!(d("DEALLOCATE s1").as_deref(), Some("s1"));
    assert_eq!(d("deallocate prepare S1 ;").as_deref(), Some("s1"));
    assert_eq!(d("DEALLOCATE \"My\"\"Stmt\"").as_deref(), Some("My\"Stmt"));
    assert_eq!(d("/* c */ DEALLOCATE _pg3_0").as_deref(), Some("_pg3_0"));
    for other in ["DEALLOCATE ALL", "DEALLOCATE PREPARE ALL", "DEALLOCATE s1; SELECT 1", "DEALLOCATE", "SELECT 1"] {
        assert_eq!(d(other), None, "{other}");
    }
}

#[test]
fn statements_that_depend_on_a_transaction_block_are_known() {
    let d = Dialect::default();
    for sql in [
        "SET LOCAL work_mem = '1MB'",
        "set transaction isolation level serializable",
        "SET CONSTRAINTS ALL DEFERRED",
        "SAVEPOINT a",
        "RELEASE a",
        "ROLLBACK TO a",
        "DECLARE c CURSOR FOR SELECT 1",
        "LOCK t",
        "VACUUM t",
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        "CREATE DATABASE d",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "REINDEX DATABASE d",
        "COMMIT PREPARED 'x'",
        "DISCARD ALL",
        "CLUSTER",
    ] {
        assert!(Classifier::block_sensitive(sql, d), "{sql}");
    }
    for sql in [
        "SET work_mem = '1MB'",
        "INSERT INTO t VALUES (1)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "CLUSTER t USING i",
        "ALTER DATABASE d SET work_mem = '1MB'",
        "SELECT 1; SET LOCAL work_mem = '1MB'",
        "ROLLBACK",
    ] {
        assert!(!Classifier::block_sensitive(sql, d), "{sql}");
    }
}

/// A Parse body as the session gives it to the front: its bytes, a keyed hash of them,
/// and how they are read (`reading`).
fn exact<'a>(keys: &std::hash::RandomState, sql: &'a str, reading: usize) -> Exact<'a> {
    Exact { hash: std::hash::BuildHasher::hash_one(keys, sql.as_bytes()), bytes: sql.as_bytes(), reading }
}

/// What the session does with a Parse: the front first, the full path on a miss.
fn through_front(c: &Classifier, key: Exact<'_>, sql: &str, dialect: Dialect) -> Arc<Class> {
    c.parse_hit(key, dialect).unwrap_or_else(|| c.classify_parse(key, sql, dialect))
}

/// The front of the cache (a Parse's exact bytes) answers what the full path answers, in
/// either dialect and for texts with literals, session statements and hints alike; only
/// parameterised texts are kept there, and a reload forgets them (a function declared a
/// write must not stay a read).
#[test]
fn a_parse_looked_up_by_its_exact_bytes_is_classified_as_the_full_path_classifies_it() {
    let texts = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "select abalance from pgbench_accounts where aid = $1",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "SELECT nextval($1)",
        "SELECT * FROM accounts WHERE id = 42",
        "SELECT 'it''s' || $1",
        "SET search_path TO $1",
        "/* pgroute: route=primary */ SELECT $1",
        "SELECT f($1)",
        "SELECT U&\"d\\0061ta\" FROM t",
        "",
    ];
    let keys = std::hash::RandomState::new();
    let fresh = Classifier::new(100);
    let fronted = Classifier::new(100);
    for dialect in [Dialect::default(), Dialect { standard_strings: false }] {
        for sql in texts {
            let want = fresh.classify_in(sql, dialect);
            for round in 0..2 {
                let got = through_front(&fronted, exact(&keys, sql, 0), sql, dialect);
                assert_eq!(*got, *want, "{sql:?} round {round} {dialect:?}");
            }
        }
    }
    let held = |sql: &str| fronted.cache.get_exact(exact(&keys, sql, 0)).is_some();
    assert!(held("SELECT abalance FROM pgbench_accounts WHERE aid = $1"));
    assert!(!held("SELECT * FROM accounts WHERE id = 42"), "literals churn: not kept");
    assert!(!held("SET search_path TO $1"), "session statements are never cached");
    let f = "SELECT f($1)";
    assert!(fronted.cache.get_exact(exact(&keys, f, 7)).is_none(), "bytes read in another encoding are another text");

    assert!(!through_front(&fronted, exact(&keys, f, 0), f, Dialect::default()).is_write());
    fronted.reconfigure(&["f".to_string()]);
    assert!(
        through_front(&fronted, exact(&keys, f, 0), f, Dialect::default()).is_write(),
        "the reload forgot the front"
    );
}

/// Two bodies under one hash (which a keyed hash makes a client unable to arrange): the
/// entry's bytes decide, so neither is taken for the other.
#[test]
fn the_front_checks_the_bytes_behind_a_hash() {
    let c = Classifier::new(100);
    let read = "SELECT v FROM t WHERE id = $1";
    let write = "UPDATE t SET v = $2 WHERE id = $1";
    let key = |sql: &'static str| Exact { hash: 42, bytes: sql.as_bytes(), reading: 0 };
    assert!(!through_front(&c, key(read), read, Dialect::default()).is_write());
    assert!(c.parse_hit(key(read), Dialect::default()).is_some());
    assert!(c.parse_hit(key(write), Dialect::default()).is_none(), "another body under the same hash");
    assert!(through_front(&c, key(write), write, Dialect::default()).is_write());
}
