//! The classifier and the decider together, table-driven: statement (and who sends it),
//! expected node and reason, against a healthy primary + replica.

use std::time::Instant;

use super::*;
use crate::classify::{hint, Classifier};
use crate::config::{Config, Role};
use crate::router::{decide, SessionView};
use crate::topology::{NodeState, Snapshot};

const CONFIG: &str = r#"
[routing]
default_read = "replica"
primary_tables = ["balances", "withdrawals", "payments", "bets", "public.ledger", '"Odd Table"']
primary_functions = ["wallet_balance"]
write_functions = ["credit_account"]
read_only_functions = ["format_amount"]

[[routing.rules]]
name = "heavy report"
application_name = "analytics-report"
route = "replica"
group = "analytics"

[[routing.rules]]
name = "backoffice reports"
application_name = "backoffice"
route = "replica"

[[routing.rules]]
name = "report pattern"
pattern = "(?i)^select .* from ledger_report"
route = "replica"

[[routing.rules]]
name = "audit"
tables = ["audit_log"]
route = "primary"

[[routing.rules]]
name = "risk"
user = "risk"
functions = ["risk_score"]
route = "primary"

[[nodes]]
name = "p"
host = "h"
port = 1
role = "primary"

[[nodes]]
name = "r"
host = "h"
port = 2
role = "replica"

[[nodes]]
name = "a"
host = "h"
port = 3
role = "replica"
groups = ["analytics"]
"#;

/// The catalog as the session would learn it: these functions are built in or stable;
/// `insert_row` and `my_volatile_fn` are volatile user functions; anything else is
/// unknown (and so a write).
/// The test catalog: names in pg_catalog, public or unqualified by name; other schemas hold
/// only volatile functions.
fn not_volatile(f: &QName) -> bool {
    let name = f.name.as_str();
    f.schema.as_deref().is_none_or(|s| s == "pg_catalog" || s == "public")
        && (NOT_VOLATILE.contains(&name) || crate::catalog::harmless_volatile(name))
}

const NOT_VOLATILE: &[&str] = &[
    "count",
    "sum",
    "max",
    "min",
    "avg",
    "now",
    "lower",
    "upper",
    "length",
    "abs",
    "random",
    "string_agg",
    "generate_series",
    "current_setting",
    "pg_is_in_recovery",
    "inet_server_port",
    "pg_table_is_visible",
    "date_trunc",
    "to_char",
    "row_number",
    "my_stable_fn",
    "risk_score",
    "wallet_balance",
    "format_amount",
];

struct World {
    classifier: Classifier,
    rules: Rules,
    groups: Vec<String>,
}

impl World {
    fn new() -> World {
        let cfg = Config::parse(CONFIG, "test.toml").expect("test config");
        World {
            classifier: Classifier::with_write_functions(1000, &cfg.routing.write_functions),
            rules: Rules::from_config(&cfg.routing, &cfg.groups(), None),
            groups: cfg.groups(),
        }
    }

    fn route(&self, sql: &str, app: &str, user: &str) -> (&'static str, String) {
        let mut class = self.classifier.classify(sql);
        if !class.is_write() {
            let volatile = self.rules.unknown_functions(&class).find(|f| !not_volatile(f)).cloned();
            if let Some(f) = volatile {
                class = Arc::new(Class::write(format!("write:function {} (volatile)", f.display())));
            }
        }
        let ctx = Context { application_name: app, user, database: "app" };
        let read = self.rules.route_read(&class, sql, &hint(sql), &ctx);
        let now = Instant::now();
        let node = |name: &str, role, group: &str| NodeState {
            groups: crate::config::group_mask(&self.groups, [group]),
            name: name.into(),
            role,
            weight: 1,
            down_until: None,
            healthy: true,
            why: "ok",
            fresh_until: None,
            wal: Default::default(),
            lag: None,
            drained: false,
            removed: false,
            replay_noted: None,
        };
        let topo = Snapshot {
            nodes: vec![
                node("p", Role::Primary, "default"),
                node("r", Role::Replica, "default"),
                node("a", Role::Replica, "analytics"),
            ],
            no_replica_error: false,
            split_brain: false,
            least_connections: false,
        };
        let d = decide(&class, &read, SessionView::default(), &topo, now, 0).expect("decision");
        (["primary", "replica", "analytics"][d.node], d.label(&class).to_string())
    }
}

const P: &str = "primary";
const R: &str = "replica";
const D: &str = "default_read";

#[rustfmt::skip]
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    // (sql, application_name, user, expected node, expected reason)
    // --- plain reads stay on replicas of the default group
    ("SELECT 1", "", "app", R, D),
    // --- a rule or a hint sends reads to a node group, and only there
    ("SELECT sum(amount) FROM deposits", "analytics-report", "app", "analytics", "rule:heavy report"),
    ("SELECT sum(amount) FROM balances", "analytics-report", "app", "analytics", "rule:heavy report"),
    ("SELECT 1 /* pgroute: group=analytics */", "", "app", "analytics", "hint"),
    ("SELECT 1 /* pgroute: route=replica, group=analytics */", "", "app", "analytics", "hint"),
    ("SELECT 1 /* pgroute: route=primary group=analytics */", "", "app", P, "hint"),
    ("UPDATE t SET x = 1 /* pgroute: group=analytics */", "analytics-report", "app", P, "write:update"),
    ("select abalance from pgbench_accounts where aid = 42", "", "app", R, D),
    ("SELECT * FROM t WHERE note = 'UPDATE t SET x = 1'", "", "app", R, D),
    ("SELECT 'a;b', $$ delete from t; $$ FROM t", "", "app", R, D),
    ("SELECT $tag$ insert into t values (1) $tag$", "", "app", R, D),
    ("SELECT 1 -- DELETE FROM t\n", "", "app", R, D),
    ("SELECT /* UPDATE /* nested */ t */ 1", "", "app", R, D),
    ("SELECT \"update\" FROM t", "", "app", R, D),
    ("SELECT e'it\\'s INSERT' FROM t", "", "app", R, D),
    ("sElEcT count(*) FROM public.accounts", "", "app", R, D),
    ("SELECT pg_is_in_recovery()", "", "app", P, "node_local"),
    ("SELECT pg_catalog.pg_last_wal_replay_lsn()", "", "app", P, "node_local"),
    ("SELECT pid, state FROM pg_stat_activity", "", "app", P, "node_local"),
    ("SELECT * FROM pg_catalog.pg_locks l JOIN t ON true", "", "app", P, "node_local"),
    ("SELECT gid FROM pg_prepared_xacts", "", "app", P, "node_local"),
    ("SELECT * FROM pg_stat_replication", "", "app", P, "node_local"),
    ("SELECT name FROM pg_cursors", "", "app", P, "node_local"),
    ("SELECT name FROM pg_prepared_statements", "", "app", P, "node_local"),
    ("SELECT setting FROM pg_settings WHERE name = 'transaction_read_only'", "", "app", P, "node_local"),
    ("SELECT * FROM myschema.pg_locks", "", "app", R, D),
    ("SELECT inet_server_port()", "", "app", R, D),
    ("SELECT now(), lower(name) FROM users", "", "app", R, D),
    ("SELECT * FROM a JOIN b USING (id) WHERE a.x IN (SELECT y FROM c)", "", "app", R, D),
    ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)", "", "app", R, D),
    ("SELECT CAST(x AS int), COALESCE(a, b), NULLIF(c, 0) FROM t", "", "app", R, D),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "", "app", R, D),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT * FROM r", "", "app", R, D),
    ("VALUES (1), (2)", "", "app", R, D),
    ("TABLE accounts", "", "app", R, D),
    ("SHOW search_path", "", "app", R, D),
    ("EXPLAIN SELECT * FROM t", "", "app", R, D),
    ("EXPLAIN UPDATE t SET x = 1", "", "app", R, D),
    ("EXPLAIN (COSTS OFF) DELETE FROM t", "", "app", R, D),
    ("COPY t TO STDOUT", "", "app", R, D),
    ("COPY (SELECT * FROM t) TO STDOUT WITH CSV", "", "app", R, D),
    ("SELECT c.relname FROM pg_catalog.pg_class c WHERE pg_catalog.pg_table_is_visible(c.oid)", "", "app", R, D),
    ("(SELECT 1)", "", "app", R, D),
    ("SELECT 1; SELECT 2", "", "app", R, D),
    ("SELECT * FROM shares", "", "app", R, D),
    ("SELECT random()", "", "app", R, D),
    ("SELECT format_amount(total) FROM invoices", "", "app", R, D),
    ("SELECT my_stable_fn(1)", "", "app", R, D),
    ("SELECT string_agg(v, ',' ORDER BY id) FROM t", "", "app", R, D),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", "", "app", R, D),
    ("SELECT count(*) FILTER (WHERE x > 0) FROM t", "", "app", R, D),
    ("SELECT * FROM generate_series(1, 10)", "", "app", R, D),
    ("SELECT current_setting('application_name')", "", "app", R, D),
    // --- a read-only block begins where its money reads could have to run (issue 22, item 3)
    ("BEGIN READ ONLY", "", "app", P, "read_only_block"),
    ("START TRANSACTION READ ONLY", "", "app", P, "read_only_block"),
    ("begin transaction isolation level repeatable read, read only", "", "app", P, "read_only_block"),
    ("BEGIN READ ONLY", "backoffice", "app", R, "rule:backoffice reports"),
    ("BEGIN READ ONLY; SELECT 1 FROM t", "analytics-report", "app", "analytics", "rule:heavy report"),
    // --- serializable transactions: a standby refuses them (issue 22, item 6)
    ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", "", "app", P, "write:begin serializable"),
    ("START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE", "backoffice", "app", P, "write:begin serializable"),
    ("BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "backoffice", "app", P, "write:begin serializable"),
    ("SET LOCAL transaction_isolation = 'serializable'", "", "app", P, "write:begin serializable"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "", "app", R, D),
    // --- built-in functions in every spelling (issue 22, items 2 and 7)
    ("SELECT \"pg_catalog\".\"pg_advisory_xact_lock\"(42)", "", "app", P, "write:function pg_advisory_xact_lock"),
    ("SELECT \"pg_advisory_xact_lock\"(42)", "backoffice", "app", P, "write:function pg_advisory_xact_lock"),
    ("SELECT PG_CATALOG . \"pg_advisory_lock\" /* c */ (42)", "", "app", P, "pin:function pg_advisory_lock"),
    ("SELECT U&\"pg\\005fadvisory\\005flock\"(42)", "", "app", P, "pin:function pg_advisory_lock"),
    ("SELECT \"set_config\"('a.b', '1', false)", "", "app", P, "pin:function set_config"),
    ("SELECT x FROM t, LATERAL (SELECT \"pg_catalog\".\"nextval\"('s')) n", "", "app", P, "pin:function nextval"),
    ("SELECT currval('s')", "", "app", P, "pin:function currval"),
    ("SELECT \"lastval\"()", "", "app", P, "pin:function lastval"),
    ("SELECT pg_cancel_backend(1)", "", "app", P, "write:function pg_cancel_backend (volatile)"),
    ("SELECT pg_catalog.pg_reload_conf()", "", "app", P, "write:function pg_catalog.pg_reload_conf (volatile)"),
    ("SELECT evil.format_amount(1)", "", "app", P, "write:function evil.format_amount (volatile)"),
    ("SELECT * FROM U&\"\\0062alances\"", "", "app", P, "primary_tables:balances"),
    ("SELECT * FROM u&\"b!0061lances\" UESCAPE '!'", "", "app", P, "primary_tables:balances"),
    // --- COPY to a file or a program is a side effect on that node
    ("COPY t TO '/tmp/x'", "", "app", P, "write:copy to file"),
    ("COPY (SELECT 1) TO PROGRAM 'cat'", "", "app", P, "write:copy to file"),
    ("copy t to stdout", "", "app", R, D),
    // --- who the session is: any spelling pins (issue 22, item 4)
    ("SET \"role\" = tenant_b", "", "app", P, "pin:set role"),
    ("SET SESSION \"role\" TO 'tenant_b'", "", "app", P, "pin:set role"),
    ("set session_authorization = 'x'", "", "app", P, "pin:set role"),
    ("SET SESSION AUTHORIZATION x", "", "app", P, "pin:set role"),
    ("RESET \"role\"", "", "app", P, "pin:set role"),
    // --- `begin atomic` outside a function body is a column and its alias
    ("SELECT begin atomic FROM (SELECT 1 AS begin) s; DROP TABLE t", "", "app", P, "write:drop"),
    ("SET search_path TO app, public", "", "app", R, D),
    ("SET LOCAL work_mem = '1MB'", "", "app", R, D),
    ("RESET ALL", "", "app", R, D),
    ("DISCARD ALL", "", "app", R, D),
    ("COMMIT", "", "app", R, D),
    ("ROLLBACK", "", "app", R, D),
    ("", "", "app", R, D),
    ("SELECT * FROM t WHERE x = 'unterminated INSERT", "", "app", R, D),
    ("SELECT 'nextval(1)' FROM t", "", "app", R, D),
    ("SELECT * FROM ledger_report_daily", "", "app", R, "rule:report pattern"),
    ("SELECT * FROM daily_ledger_report", "", "app", R, D),
    ("SELECT * FROM audit.ledger", "", "app", R, D),
    ("SELECT * FROM \"odd table\"", "", "app", R, D),
    ("SELECT * FROM balances_archive", "", "app", R, D),
    // --- money-critical tables: any read touching them, any position
    ("SELECT amount FROM balances WHERE account_id = 7", "", "app", P, "primary_tables:balances"),
    ("SELECT * FROM public.balances", "", "app", P, "primary_tables:balances"),
    ("SELECT * FROM \"balances\"", "", "app", P, "primary_tables:balances"),
    ("select * from BALANCES", "", "app", P, "primary_tables:balances"),
    ("SELECT a.id FROM accounts a JOIN balances b ON b.account_id = a.id", "", "app", P, "primary_tables:balances"),
    ("SELECT * FROM accounts WHERE id IN (SELECT account_id FROM withdrawals)", "", "app", P, "primary_tables:withdrawals"),
    ("WITH w AS (SELECT * FROM withdrawals WHERE status = 'pending') SELECT count(*) FROM w", "", "app", P, "primary_tables:withdrawals"),
    ("TABLE payments", "", "app", P, "primary_tables:payments"),
    ("COPY bets TO STDOUT", "", "app", P, "primary_tables:bets"),
    ("COPY (SELECT * FROM bets) TO STDOUT", "", "app", P, "primary_tables:bets"),
    ("SELECT * FROM ledger", "", "app", P, "primary_tables:public.ledger"),
    ("SELECT * FROM public.ledger", "", "app", P, "primary_tables:public.ledger"),
    ("SELECT * FROM \"Odd Table\"", "", "app", P, "primary_tables:\"Odd Table\""),
    ("EXPLAIN SELECT * FROM balances", "", "app", P, "primary_tables:balances"),
    ("BEGIN READ ONLY; SELECT * FROM payments; COMMIT", "", "app", P, "read_only_block"),
    ("SELECT 1; SELECT * FROM bets", "", "app", P, "primary_tables:bets"),
    ("SELECT (SELECT sum(amount) FROM payments) AS total", "", "app", P, "primary_tables:payments"),
    ("SELECT * FROM v_balances_summary, balances", "", "app", P, "primary_tables:balances"),
    // --- money-critical functions
    ("SELECT wallet_balance(42)", "", "app", P, "primary_functions:wallet_balance"),
    ("SELECT id, wallet_balance(id) FROM accounts", "", "app", P, "primary_functions:wallet_balance"),
    ("SELECT * FROM accounts WHERE wallet_balance(id) > 0", "", "app", P, "primary_functions:wallet_balance"),
    ("SELECT public.wallet_balance(1)", "", "app", P, "primary_functions:wallet_balance"),
    // --- rules, in order
    ("SELECT * FROM balances", "backoffice", "app", R, "rule:backoffice reports"),
    ("SELECT wallet_balance(1)", "backoffice", "app", R, "rule:backoffice reports"),
    ("SELECT 1", "backoffice", "app", R, "rule:backoffice reports"),
    ("UPDATE balances SET amount = 0", "backoffice", "app", P, "write:update"),
    ("SELECT nextval('s')", "backoffice", "app", P, "pin:function nextval"),
    ("select * from ledger_report where day = 1", "", "app", R, "rule:report pattern"),
    ("SELECT x FROM ledger_report JOIN balances USING (id)", "", "app", R, "rule:report pattern"),
    ("SELECT * FROM audit_log", "", "app", P, "rule:audit"),
    ("SELECT * FROM public.audit_log WHERE id = 1", "", "app", P, "rule:audit"),
    ("SELECT risk_score(1)", "", "risk", P, "rule:risk"),
    ("SELECT risk_score(1)", "", "app", R, D),
    ("SELECT 1", "", "risk", R, D),
    // --- hints override rules for reads, never for writes
    ("/* pgroute: route=primary */ SELECT 1", "", "app", P, "hint"),
    ("SELECT 1 /* pgroute: route=primary */", "", "app", P, "hint"),
    ("/* pgroute: route=replica */ SELECT * FROM balances", "", "app", R, "hint"),
    ("/* pgroute: route=replica */ SELECT * FROM audit_log", "", "app", R, "hint"),
    ("SELECT * FROM balances /* pgroute: route=replica */;", "", "app", R, "hint"),
    ("/* pgroute: route=replica */ UPDATE t SET x = 1", "", "app", P, "write:update"),
    ("/* pgroute: route=replica */ SELECT nextval('s')", "", "app", P, "pin:function nextval"),
    ("/* pgroute: route=replica */ SELECT * FROM t FOR UPDATE", "", "app", P, "write:select for update"),
    ("/* pgroute: colour=blue */ SELECT 1", "", "app", R, D),
    ("SELECT '/* pgroute: route=primary */'", "", "app", R, D),
    // --- DML and DDL
    ("INSERT INTO t VALUES (1)", "", "app", P, "write:insert"),
    ("insert into t select * from u", "", "app", P, "write:insert"),
    ("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7", "", "app", P, "write:update"),
    ("DELETE FROM t", "", "app", P, "write:delete"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "", "app", P, "write:merge"),
    ("TRUNCATE t", "", "app", P, "write:truncate"),
    ("CREATE TABLE t (id int)", "", "app", P, "write:create"),
    ("create index on t (id)", "", "app", P, "write:create"),
    ("ALTER TABLE t ADD COLUMN x int", "", "app", P, "write:alter"),
    ("DROP TABLE t", "", "app", P, "write:drop"),
    ("GRANT SELECT ON t TO app", "", "app", P, "write:grant"),
    ("REVOKE SELECT ON t FROM app", "", "app", P, "write:revoke"),
    ("COMMENT ON TABLE t IS 'x'", "", "app", P, "write:comment"),
    ("SECURITY LABEL ON TABLE t IS 'x'", "", "app", P, "write:security"),
    ("VACUUM ANALYZE t", "", "app", P, "write:vacuum"),
    ("ANALYZE t", "", "app", P, "write:analyze"),
    ("CLUSTER t", "", "app", P, "write:cluster"),
    ("REINDEX TABLE t", "", "app", P, "write:reindex"),
    ("CHECKPOINT", "", "app", P, "write:checkpoint"),
    ("ALTER SYSTEM SET work_mem = '1MB'", "", "app", P, "write:alter"),
    ("REFRESH MATERIALIZED VIEW mv", "", "app", P, "write:refresh"),
    ("NOTIFY ch, 'x'", "", "app", P, "write:notify"),
    ("CALL proc(1)", "", "app", P, "write:call"),
    ("DO $$ BEGIN PERFORM 1; END $$", "", "app", P, "write:do"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "", "app", P, "write:lock"),
    ("COPY t FROM STDIN", "", "app", P, "write:copy from"),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", "", "app", P, "write:copy from"),
    ("CREATE TABLE t2 AS SELECT * FROM t", "", "app", P, "write:create"),
    ("SELECT * INTO t2 FROM t", "", "app", P, "write:select into"),
    ("EXPLAIN ANALYZE DELETE FROM t", "", "app", P, "write:explain analyze delete"),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET x = 1", "", "app", P, "write:explain analyze update"),
    ("EXPLAIN ANALYZE SELECT nextval('s')", "", "app", P, "pin:function nextval"),
    ("unknown_command foo", "", "app", P, "write:unknown_command"),
    ("BEGIN", "", "app", P, "write:begin"),
    ("START TRANSACTION READ WRITE", "", "app", P, "write:begin"),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", "", "app", P, "write:begin"),
    ("BEGIN READ ONLY, READ WRITE", "", "app", P, "write:begin"),
    ("PREPARE TRANSACTION 'x'", "", "app", P, "write:prepare transaction"),
    ("COMMIT PREPARED 'x'", "", "app", P, "write:commit prepared"),
    // --- row locks, all four strengths
    ("SELECT * FROM t FOR UPDATE", "", "app", P, "write:select for update"),
    ("SELECT * FROM t WHERE id = 1 FOR SHARE", "", "app", P, "write:select for share"),
    ("SELECT * FROM t FOR UPDATE NOWAIT", "", "app", P, "write:select for update"),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", "", "app", P, "write:select for update"),
    ("SELECT * FROM t FOR NO KEY UPDATE", "", "app", P, "write:select for no key update"),
    ("SELECT * FROM t FOR KEY SHARE", "", "app", P, "write:select for key share"),
    ("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", "", "app", P, "write:select for no key update"),
    ("select * from t for key share of t nowait", "", "app", P, "write:select for key share"),
    ("SELECT substring('abc' FOR 2)", "", "app", R, D),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", "", "app", P, "write:select for update"),
    ("SELECT * FROM balances FOR UPDATE", "backoffice", "app", P, "write:select for update"),
    // --- data-modifying CTEs at any depth
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "", "app", P, "write:data-modifying cte"),
    ("WITH a AS (SELECT 1), b AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM b", "", "app", P, "write:data-modifying cte"),
    ("WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT count(*) FROM u", "", "app", P, "write:data-modifying cte"),
    ("WITH x AS (WITH y AS (DELETE FROM t RETURNING 1) SELECT * FROM y) SELECT * FROM x", "", "app", P, "write:data-modifying cte"),
    ("WITH ins AS (INSERT INTO t VALUES (1)) SELECT 1", "", "app", P, "write:data-modifying cte"),
    // --- functions that write or need the primary, anywhere
    ("SELECT nextval('orders_id_seq')", "", "app", P, "pin:function nextval"),
    ("select NEXTVAL('s')", "", "app", P, "pin:function nextval"),
    ("SELECT pg_catalog.nextval('s')", "", "app", P, "pin:function nextval"),
    ("SELECT setval('s', 10)", "", "app", P, "pin:function setval"),
    ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", "", "app", P, "pin:function nextval"),
    ("SELECT id FROM t WHERE id > txid_current()", "", "app", P, "write:function txid_current"),
    ("SELECT pg_current_xact_id()", "", "app", P, "write:function pg_current_xact_id"),
    ("SELECT pg_current_wal_lsn()", "", "app", P, "write:function pg_current_wal_lsn"),
    ("SELECT pg_switch_wal()", "", "app", P, "write:function pg_switch_wal"),
    ("SELECT pg_notify('ch', 'x')", "", "app", P, "write:function pg_notify"),
    ("SELECT lo_create(0)", "", "app", P, "write:function lo_create"),
    ("SELECT lo_unlink(1)", "", "app", P, "write:function lo_unlink"),
    ("SELECT dblink_exec('x', 'y')", "", "app", P, "write:function dblink_exec"),
    ("SELECT pg_advisory_xact_lock(1)", "", "app", P, "write:function pg_advisory_xact_lock"),
    ("SELECT pg_try_advisory_xact_lock(1)", "", "app", P, "write:function pg_try_advisory_xact_lock"),
    ("WITH s AS (SELECT setval('q', 1)) SELECT * FROM s", "", "app", P, "pin:function setval"),
    ("SELECT credit_account(7, 100)", "", "app", P, "write:function credit_account"),
    ("SELECT * FROM t WHERE credit_account(id, 1) IS NOT NULL", "", "app", P, "write:function credit_account"),
    ("SELECT insert_row(1)", "", "app", P, "write:function insert_row (volatile)"),
    ("SELECT * FROM t WHERE my_volatile_fn(t.id)", "", "app", P, "write:function my_volatile_fn (volatile)"),
    ("SELECT some_unknown_function()", "", "app", P, "write:function some_unknown_function (volatile)"),
    ("SELECT insert_row(1)", "backoffice", "app", P, "write:function insert_row (volatile)"),
    // --- statements whose effect pins the session
    ("SELECT pg_advisory_lock(42)", "", "app", P, "pin:function pg_advisory_lock"),
    ("SELECT pg_try_advisory_lock(42)", "", "app", P, "pin:function pg_try_advisory_lock"),
    ("SELECT set_config('search_path', 'x', false)", "", "app", P, "pin:function set_config"),
    ("LISTEN ch", "", "app", P, "pin:listen"),
    ("CREATE TEMP TABLE tt (id int)", "", "app", P, "pin:create temp"),
    ("CREATE TEMPORARY TABLE tt AS SELECT 1", "", "app", P, "pin:create temp"),
    ("PREPARE q AS SELECT 1", "", "app", P, "pin:sql prepare"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "", "app", P, "pin:declare with hold"),
    ("SET ROLE admin", "", "app", P, "pin:set role"),
    // --- multi-statement strings
    ("SELECT 1; UPDATE t SET x = 1", "", "app", P, "write:update"),
    ("INSERT INTO t VALUES (1); SELECT 1", "", "app", P, "write:insert"),
    ("BEGIN; SELECT 1; COMMIT", "", "app", P, "write:begin"),
    ("SELECT ';'; DELETE FROM t", "", "app", P, "write:delete"),
    // --- unparseable text never reads
    ("SELECT FROM WHERE nextval(", "", "app", P, "parse_error"),
    ("SELECT 1 FROM t WHERE x = ANY(SELECT update)", "", "app", R, D),
    ("SELECT * FROM t WHERE (a = 1 INSERT", "", "app", P, "parse_error"),
    ("WITH RECURSIVE r(share) AS (SELECT 1 UNION ALL SELECT share + 1 FROM r) SEARCH DEPTH FIRST BY share SET o SELECT * FROM r", "", "app", P, "parse_error"),
    ("WITH m AS MATERIALIZED (SELECT 1) SELECT * FROM m", "", "app", R, D),
    ("WITH c(a, b) AS (SELECT 1, 2) SELECT count(a) AS n FROM c", "", "app", R, D),
];

#[test]
fn every_statement_goes_where_it_must_with_its_reason() {
    let w = World::new();
    let mut failures = Vec::new();
    for &(sql, app, user, node, reason) in CASES {
        let got = w.route(sql, app, user);
        if got != (node, reason.to_string()) {
            failures.push(format!("{sql:?} ({app}/{user}): got {got:?}, want ({node}, {reason:?})"));
        }
    }
    assert!(CASES.len() >= 150, "the table keeps at least 150 statements");
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

/// With no money tables, functions or primary rules, a read-only block may begin on a
/// replica, bounded by the strictest max_lag a rule of the session could apply.
#[test]
fn read_only_blocks_use_replicas_when_no_rule_could_claim_a_read() {
    let ctx = Context { application_name: "", user: "app", database: "app" };
    let begin = Classifier::new(0).classify("BEGIN READ ONLY");
    let plain = Rules::from_config(&crate::config::Routing::default(), &[], None);
    let read = plain.route_read(&begin, "BEGIN READ ONLY", &hint(""), &ctx);
    assert_eq!((read.target, &*read.reason, read.max_lag), (Target::Replica, "default_read", None));
    let cfg = Config::parse(
        "[[routing.rules]]\nname = \"fresh\"\npattern = \"orders\"\nroute = \"replica\"\nmax_lag = \"1s\"\n[[nodes]]\nname = \"p\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n",
        "t.toml",
    )
    .expect("config");
    let lagged = Rules::from_config(&cfg.routing, &[], None);
    let read = lagged.route_read(&begin, "BEGIN READ ONLY", &hint(""), &ctx);
    assert_eq!((read.target, read.max_lag), (Target::Replica, Some(std::time::Duration::from_secs(1))));
}

#[test]
fn node_local_reads_can_be_let_go_to_replicas() {
    let c = Classifier::new(0).classify("SELECT count(*) FROM pg_stat_activity");
    let ctx = Context { application_name: "", user: "app", database: "app" };
    let on = Rules::from_config(&crate::config::Routing::default(), &[], None);
    assert_eq!(&*on.route_read(&c, "", &hint(""), &ctx).reason, "node_local");
    let off =
        Rules::from_config(&crate::config::Routing { node_local_to_primary: false, ..Default::default() }, &[], None);
    assert_eq!(&*off.route_read(&c, "", &hint(""), &ctx).reason, "default_read");
}
