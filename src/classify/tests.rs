//! Table-driven tests of the classifier: statement, expected access, expected reason.

use super::*;

const R: Access = Access::Read;
const W: Access = Access::Write;

#[rustfmt::skip]
const CASES: &[(&str, Access, &str)] = &[
    // plain reads
    ("SELECT 1", R, "read"),
    ("select abalance from pgbench_accounts where aid = 42", R, "read"),
    ("SELECT * FROM t WHERE note = 'UPDATE t SET x = 1'", R, "read"),
    ("SELECT 'a;b', $$ delete from t; $$ FROM t", R, "read"),
    ("SELECT $tag$ insert into t values (1) $tag$", R, "read"),
    ("SELECT 1 -- DELETE FROM t\n", R, "read"),
    ("SELECT /* UPDATE /* nested */ t */ 1", R, "read"),
    ("SELECT \"update\" FROM t", R, "read"),
    ("SELECT e'it\\'s INSERT' FROM t", R, "read"),
    ("sElEcT count(*) FROM public.accounts", R, "read"),
    ("SELECT pg_is_in_recovery()", R, "read"),
    ("SELECT inet_server_port()", R, "read"),
    ("SELECT now(), lower(name) FROM users", R, "read"),
    ("SELECT * FROM a JOIN b USING (id) WHERE a.x IN (SELECT y FROM c)", R, "read"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", R, "read"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT * FROM r", R, "read"),
    ("VALUES (1), (2)", R, "read"),
    ("TABLE accounts", R, "read"),
    ("SHOW search_path", R, "read:show"),
    ("EXPLAIN SELECT * FROM t", R, "read"),
    ("EXPLAIN UPDATE t SET x = 1", R, "read"),
    ("EXPLAIN (COSTS OFF) DELETE FROM t", R, "read"),
    ("COPY t TO STDOUT", R, "read:copy to"),
    ("COPY (SELECT * FROM t) TO STDOUT WITH CSV", R, "read:copy to"),
    ("SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind IN ('r','p') AND pg_catalog.pg_table_is_visible(c.oid)", R, "read"),
    ("(SELECT 1)", R, "read"),
    ("SELECT 1; SELECT 2", R, "read"),
    ("", R, "empty"),
    (";", R, "empty"),
    ("-- only a comment", R, "empty"),
    ("SELECT * FROM shares", R, "read"),
    // DML and DDL
    ("INSERT INTO t VALUES (1)", W, "write:insert"),
    ("insert into t select * from u", W, "write:insert"),
    ("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7", W, "write:update"),
    ("DELETE FROM t", W, "write:delete"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W, "write:merge"),
    ("TRUNCATE t", W, "write:truncate"),
    ("CREATE TABLE t (id int)", W, "write:create"),
    ("create index on t (id)", W, "write:create"),
    ("ALTER TABLE t ADD COLUMN x int", W, "write:alter"),
    ("DROP TABLE t", W, "write:drop"),
    ("GRANT SELECT ON t TO app", W, "write:grant"),
    ("REVOKE SELECT ON t FROM app", W, "write:revoke"),
    ("COMMENT ON TABLE t IS 'x'", W, "write:comment"),
    ("VACUUM ANALYZE t", W, "write:vacuum"),
    ("ANALYZE t", W, "write:analyze"),
    ("CLUSTER t", W, "write:cluster"),
    ("REINDEX TABLE t", W, "write:reindex"),
    ("CHECKPOINT", W, "write:checkpoint"),
    ("ALTER SYSTEM SET work_mem = '1MB'", W, "write:alter"),
    ("REFRESH MATERIALIZED VIEW mv", W, "write:refresh"),
    ("NOTIFY ch, 'x'", W, "write:notify"),
    ("CALL proc(1)", W, "write:call"),
    ("DO $$ BEGIN PERFORM 1; END $$", W, "write:do"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W, "write:lock"),
    ("COPY t FROM STDIN", W, "write:copy from"),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W, "write:copy from"),
    ("SECURITY LABEL ON TABLE t IS 'x'", W, "write:security"),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER f INTO public", W, "write:import"),
    ("CREATE TABLE t2 AS SELECT * FROM t", W, "write:create"),
    ("SELECT * INTO t2 FROM t", W, "write:select into"),
    ("EXPLAIN ANALYZE DELETE FROM t", W, "write:explain analyze delete"),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET x = 1", W, "write:explain analyze update"),
    ("EXPLAIN ANALYZE SELECT nextval('s')", W, "write:explain analyze function nextval"),
    ("FETCH 10 FROM c", W, "write:fetch"),
    ("unknown_command foo", W, "write:unknown_command"),
    // row locks
    ("SELECT * FROM t FOR UPDATE", W, "write:select for update"),
    ("SELECT * FROM t WHERE id = 1 FOR SHARE", W, "write:select for share"),
    ("SELECT * FROM t FOR UPDATE NOWAIT", W, "write:select for update"),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", W, "write:select for update"),
    ("SELECT * FROM t FOR NO KEY UPDATE", W, "parse_error"),
    ("SELECT * FROM t FOR KEY SHARE", W, "parse_error"),
    ("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", W, "parse_error"),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W, "write:select for update"),
    // data-modifying CTEs
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W, "write:data-modifying cte"),
    ("WITH a AS (SELECT 1), b AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM b", W, "write:data-modifying cte"),
    ("WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT count(*) FROM u", W, "write:data-modifying cte"),
    ("WITH x AS (WITH y AS (DELETE FROM t RETURNING 1) SELECT * FROM y) SELECT * FROM x", W, "write:data-modifying cte"),
    ("WITH ins AS (INSERT INTO t VALUES (1)) SELECT 1", W, "write:data-modifying cte"),
    // write functions anywhere
    ("SELECT nextval('orders_id_seq')", W, "write:function nextval"),
    ("select NEXTVAL('s')", W, "write:function nextval"),
    ("SELECT pg_catalog.nextval('s')", W, "write:function nextval"),
    ("SELECT setval('s', 10)", W, "write:function setval"),
    ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", W, "write:function nextval"),
    ("SELECT id FROM t WHERE id > txid_current()", W, "write:function txid_current"),
    ("SELECT pg_current_xact_id()", W, "write:function pg_current_xact_id"),
    ("SELECT pg_current_wal_lsn()", W, "write:function pg_current_wal_lsn"),
    ("SELECT pg_notify('ch', 'x')", W, "write:function pg_notify"),
    ("SELECT lo_create(0)", W, "write:function lo_create"),
    ("SELECT pg_advisory_xact_lock(1)", W, "write:function pg_advisory_xact_lock"),
    ("SELECT pg_try_advisory_xact_lock(1)", W, "write:function pg_try_advisory_xact_lock"),
    ("WITH s AS (SELECT setval('q', 1)) SELECT * FROM s", W, "write:function setval"),
    ("SELECT 'nextval(1)' FROM t", R, "read"),
    // session pins
    ("SELECT pg_advisory_lock(42)", W, "pin:function pg_advisory_lock"),
    ("SELECT pg_try_advisory_lock(42)", W, "pin:function pg_try_advisory_lock"),
    ("SELECT set_config('search_path', 'x', false)", W, "pin:function set_config"),
    ("LISTEN ch", W, "pin:listen"),
    ("CREATE TEMP TABLE tt (id int)", W, "pin:create temp"),
    ("CREATE TEMPORARY TABLE tt AS SELECT 1", W, "pin:create temp"),
    ("CREATE GLOBAL TEMPORARY TABLE tt (id int)", W, "pin:create temp"),
    ("PREPARE q AS SELECT 1", W, "pin:sql prepare"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", W, "pin:declare with hold"),
    ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", W, "write:declare"),
    ("SET ROLE admin", W, "pin:set role"),
    ("SET SESSION AUTHORIZATION admin", W, "pin:set role"),
    // transactions
    ("BEGIN", W, "write:begin"),
    ("BEGIN READ ONLY", R, "begin read only"),
    ("begin transaction isolation level repeatable read, read only", R, "begin read only"),
    ("START TRANSACTION READ ONLY", R, "begin read only"),
    ("START TRANSACTION READ WRITE", W, "write:begin"),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", W, "write:begin"),
    ("BEGIN READ ONLY, READ WRITE", W, "write:begin"),
    ("COMMIT", R, "transaction_control"),
    ("ROLLBACK", R, "transaction_control"),
    ("SAVEPOINT a", R, "transaction_control"),
    ("PREPARE TRANSACTION 'x'", W, "write:prepare transaction"),
    ("COMMIT PREPARED 'x'", W, "write:commit prepared"),
    // session settings
    ("SET search_path TO app, public", R, "session:set"),
    ("SET LOCAL work_mem = '1MB'", R, "session:set local"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", R, "session:set local"),
    ("SET TIME ZONE 'UTC'", R, "session:set"),
    ("RESET search_path", R, "session:reset"),
    ("RESET ALL", R, "session:reset"),
    ("DISCARD ALL", R, "session:discard"),
    // multi-statement strings: primary unless every statement reads
    ("SELECT 1; UPDATE t SET x = 1", W, "write:update"),
    ("INSERT INTO t VALUES (1); SELECT 1", W, "write:insert"),
    ("BEGIN READ ONLY; SELECT 1; COMMIT", R, "begin read only"),
    ("BEGIN; SELECT 1; COMMIT", W, "write:begin"),
    ("SELECT ';'; DELETE FROM t", W, "write:delete"),
    // unparseable text never reads
    ("SELECT FROM WHERE nextval(", W, "parse_error"),
    ("SELECT * FROM t WHERE x = 'unterminated INSERT", R, "read"),
];

#[test]
fn classification_table() {
    let c = Classifier::new(100);
    let mut failures = Vec::new();
    for &(sql, access, reason) in CASES {
        let got = c.classify(sql);
        if got.access != access || got.reason != reason {
            failures.push(format!(
                "{sql:?}: got ({:?}, {:?}), want ({access:?}, {reason:?})",
                got.access, got.reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn begin_and_pins_are_reported() {
    let c = Classifier::new(10);
    assert_eq!(c.classify("BEGIN READ ONLY").begins, Some(true));
    assert_eq!(c.classify("START TRANSACTION").begins, Some(false));
    assert_eq!(c.classify("SELECT 1").begins, None);
    assert_eq!(c.classify("LISTEN x").pins.as_deref(), Some("listen"));
    assert_eq!(
        c.classify("SELECT pg_advisory_lock(1)").pins.as_deref(),
        Some("function pg_advisory_lock")
    );
    assert_eq!(c.classify("SELECT pg_advisory_xact_lock(1)").pins, None);
}

#[test]
fn settings_changes_carry_the_literal_text_and_skip_the_cache() {
    let c = Classifier::new(10);
    let a = c.classify("SET search_path = 'a'");
    let b = c.classify("SET search_path = 'b'");
    assert_eq!(
        a.settings,
        vec![SettingChange::Set {
            name: "search_path".into(),
            statement: "SET search_path = 'a'".into()
        }]
    );
    assert_eq!(
        b.settings,
        vec![SettingChange::Set {
            name: "search_path".into(),
            statement: "SET search_path = 'b'".into()
        }]
    );
    assert_eq!(
        c.classify("SET SESSION statement_timeout TO 5").settings[0],
        SettingChange::Set {
            name: "statement_timeout".into(),
            statement: "SET SESSION statement_timeout TO 5".into()
        }
    );
    assert_eq!(
        c.classify("set myapp.tenant = 7").settings[0],
        SettingChange::Set {
            name: "myapp.tenant".into(),
            statement: "set myapp.tenant = 7".into()
        }
    );
    assert_eq!(
        c.classify("RESET ALL").settings,
        vec![SettingChange::ResetAll]
    );
    assert_eq!(
        c.classify("DISCARD ALL").settings,
        vec![SettingChange::ResetAll]
    );
    assert_eq!(
        c.classify("reset Work_Mem").settings,
        vec![SettingChange::Reset {
            name: "work_mem".into()
        }]
    );
    assert!(c.classify("SET LOCAL work_mem = 1").settings.is_empty());
    assert_eq!(c.classify("SELECT 1; SET a.b = 1").settings.len(), 1);
    assert!(
        c.cache().is_empty(),
        "session statements must not be cached"
    );
}

#[test]
fn literal_varying_queries_share_one_cache_entry() {
    let c = Classifier::new(10);
    for aid in [1, 42, 99999] {
        c.classify(&format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
        ));
    }
    assert_eq!(c.cache().len(), 1);
    assert_eq!(c.cache().stats(), (2, 1));
}

#[test]
fn a_parse_failure_never_inherits_an_earlier_route() {
    let c = Classifier::new(10);
    assert_eq!(c.classify("SELECT 1").access, Access::Read);
    assert_eq!(
        c.classify("SELECT 1 FOR NO KEY UPDATE").reason,
        "parse_error"
    );
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
