//! The routing oracle (issue 22): PostgreSQL, not our expectation, says what a statement
//! does, and pgroute must never have run on a replica a statement that writes, locks,
//! leaves session state, calls a volatile function or reads a money table.
//!
//! Writes go to `orc_log`, which no statement reads, so `orc_t` (read everywhere, one
//! row) stays one row however long the run.
//!
//! Atoms come from the running server: every volatile function of `pg_catalog` whose
//! arguments can be made up (`pg_proc`, minus the few that would break the test cluster),
//! sequence and advisory-lock functions, `set_config`, user functions of each volatility,
//! money-table reads, data-modifying CTEs, `SELECT INTO`, row locks, `CALL`, `DO`,
//! `LOCK`. PostgreSQL judges each once, on a direct connection to the primary: does it
//! fail in a read-only transaction (25006: it writes), does it hold advisory locks in its
//! transaction, does it leave a setting, a sequence's state or a session lock behind.
//! Each is then rendered in a seeded random spelling (case, quotes, `pg_catalog` and
//! `public` qualification, `U&` escapes, comments and newlines between tokens), placed
//! (select list, subquery, `LATERAL`, `VALUES`, a function argument, `CASE`, a cast,
//! `WHERE`, a CTE) and sent in a context (simple or extended protocol, after another
//! statement in one Query, inside `BEGIN READ ONLY`, `BEGIN`, a serializable block, a
//! session whose default isolation is serializable) through pgroute, on a fresh client.
//! pgroute's route record (`metrics::routes`) says where each unit went; a statement
//! that must run on the primary and reached a replica is a failure, and so is a read
//! that a replica refused for serializable mode. After a statement that left session
//! state on the direct connection, the same client must see that state through pgroute.
//!
//! `PGROUTE_ORACLE_STATEMENTS` (default 1500) and `PGROUTE_ORACLE_SEED` (default 1)
//! choose the run; the long run is
//! `PGROUTE_ORACLE_STATEMENTS=100000 PGROUTE_ORACLE_SEED=7 cargo test --release --test oracle -- --nocapture`.

mod common;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

use common::wire::{self, Wire};
use common::{cluster, connect, proxy_with};

/// Volatile built-ins the oracle does not call: they would stop, promote, pause or fill
/// the test cluster (or a test's own connections) wherever they ran.
const DESTRUCTIVE: &[&str] = &[
    "pg_terminate_backend",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_switch_wal",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_rotate_logfile",
    "pg_log_backend_memory_contexts",
    "lo_import",
    "lo_export",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    "set_config",
];

/// Volatile built-ins that change nothing and keep no session state: the oracle lets
/// them run anywhere (they are still generated, as controls).
const SIDE_EFFECT_FREE: &[&str] = &["random", "clock_timestamp", "timeofday", "gen_random_uuid"];

#[derive(Debug, Clone)]
enum Atom {
    /// A call: (schema, function name, argument text).
    Call(&'static str, String, String),
    /// A read of a table (the money table or a plain one), as an expression.
    Read(&'static str),
    /// A whole statement.
    Statement(String),
}

/// What PostgreSQL said an atom does, on a direct connection to the primary.
#[derive(Debug, Clone, Default)]
struct Verdict {
    /// Why it must run on the primary, if it must.
    primary: Option<String>,
    /// What it leaves in the session afterwards: (advisory locks held, `orc.x`, lastval).
    after: Option<(i64, String, String)>,
}

/// A function argument of this type (cast to it, so the call resolves to exactly this
/// function), if the oracle can make one up.
fn argument(ty: &str) -> Option<String> {
    let value = match ty {
        "integer" | "smallint" | "bigint" | "oid" | "numeric" | "double precision" | "real" => "0",
        "text" | "name" | "character varying" | "cstring" => "'orc'",
        "boolean" => "false",
        "regclass" => "'orc_seq'",
        "bytea" => "'\\x00'",
        _ => return None,
    };
    Some(format!("{value}::{ty}"))
}

async fn simple(client: &Client, sql: &str) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
    client.simple_query(sql).await
}

fn first_value(msgs: &[SimpleQueryMessage]) -> String {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The session state the oracle looks for after a statement.
async fn session_state(client: &Client) -> (i64, String, String) {
    let locks = "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'";
    let locks = simple(client, locks).await.map(|m| first_value(&m).parse().unwrap_or(-1)).unwrap_or(-1);
    let setting = simple(client, "SELECT current_setting('orc.x', true)").await.map(|m| first_value(&m));
    let lastval = simple(client, "SELECT lastval()").await.map(|m| first_value(&m));
    (
        locks,
        setting.unwrap_or_default(),
        lastval.unwrap_or_else(|e| e.code().map(|c| c.code().to_string()).unwrap_or_default()),
    )
}

fn canonical(atom: &Atom) -> String {
    match atom {
        Atom::Call(schema, name, args) => format!("SELECT {schema}.{name}({args})"),
        Atom::Read(table) => format!("SELECT v FROM {table} LIMIT 1"),
        Atom::Statement(s) => s.clone(),
    }
}

/// PostgreSQL's verdict on one atom.
async fn judge(port: u16, atom: &Atom, volatile: bool) -> Verdict {
    let sql = canonical(atom);
    let direct = connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=app")).await;
    let mut why = Vec::new();
    if matches!(atom, Atom::Read("orc_money")) {
        why.push("money table".to_string());
    }
    if let Atom::Call(_, name, _) = atom {
        if volatile && !SIDE_EFFECT_FREE.contains(&name.as_str()) {
            why.push("volatile".to_string());
        }
    }
    simple(&direct, "BEGIN READ ONLY").await.unwrap();
    if let Err(e) = simple(&direct, &sql).await {
        if e.code().map(|c| c.code()) == Some("25006") {
            why.push("writes (25006 in a read-only transaction)".to_string());
        }
    }
    let _ = simple(&direct, "ROLLBACK").await;
    simple(&direct, "BEGIN").await.unwrap();
    if simple(&direct, &sql).await.is_ok() {
        let (locks, _, _) = session_state(&direct).await;
        if locks > 0 {
            why.push("locks (pg_locks)".to_string());
        }
    }
    let _ = simple(&direct, "ROLLBACK").await;
    let before = session_state(&direct).await;
    let ran = simple(&direct, &sql).await.is_ok();
    let after = session_state(&direct).await;
    let leaves = ran && after != before;
    if leaves {
        why.push(format!("leaves session state {after:?}"));
    }
    Verdict { primary: (!why.is_empty()).then(|| why.join(", ")), after: leaves.then_some(after) }
}

/// A random spelling of a built-in or user function's name.
fn spell_function(g: &mut StdRng, schema: &str, name: &str) -> String {
    let unicode = |s: &str| {
        let escaped: String = s.chars().map(|c| if c == '_' { "\\005f".to_string() } else { c.to_string() }).collect();
        format!("U&\"{escaped}\"")
    };
    let bare = match g.gen_range(0..5) {
        0 => name.to_string(),
        1 => name.to_ascii_uppercase(),
        2 => format!("\"{name}\""),
        3 => unicode(name),
        _ => {
            let mut s: String =
                name.chars().map(|c| if g.gen_bool(0.5) { c.to_ascii_uppercase() } else { c }).collect();
            if s == name.to_ascii_uppercase() {
                s = name.to_string();
            }
            s
        }
    };
    let schema_spelling = match g.gen_range(0..4) {
        0 => schema.to_string(),
        1 => format!("\"{schema}\""),
        2 => schema.to_ascii_uppercase(),
        _ => unicode(schema),
    };
    match g.gen_range(0..4) {
        0 => bare,
        1 => format!("{schema_spelling}.{bare}"),
        2 => format!("{schema_spelling} /* q */ . {bare}"),
        _ if schema == "public" => bare,
        _ => format!("{schema_spelling}.{bare}"),
    }
}

fn spell_table(g: &mut StdRng, table: &str) -> String {
    match g.gen_range(0..5) {
        0 => table.to_string(),
        1 => format!("\"{table}\""),
        2 => format!("public.{}", table.to_ascii_uppercase()),
        3 => format!("U&\"{}\"", table.replace('_', "\\005f")),
        _ => format!("PUBLIC.\"{table}\""),
    }
}

/// The atom as an expression in a random spelling, or its statement with case changes.
fn expression(g: &mut StdRng, atom: &Atom) -> Option<String> {
    match atom {
        Atom::Call(schema, name, args) => Some(format!("{}({args})", spell_function(g, schema, name))),
        Atom::Read(table) => Some(format!("(SELECT v FROM {} LIMIT 1)", spell_table(g, table))),
        Atom::Statement(_) => None,
    }
}

/// An expression placed somewhere a statement can hold it.
fn place(g: &mut StdRng, e: &str) -> String {
    match g.gen_range(0..9) {
        0 => format!("SELECT {e}"),
        1 => format!("SELECT * FROM (SELECT {e} AS c) s"),
        2 => format!("SELECT s.c FROM orc_t t, LATERAL (SELECT {e} AS c) s LIMIT 1"),
        3 => format!("VALUES (({e})::text)"),
        4 => format!("SELECT coalesce(({e})::text, 'x')"),
        5 => format!("SELECT CASE WHEN true THEN ({e})::text END"),
        6 => format!("SELECT 1 FROM orc_t WHERE ({e})::text IS NOT NULL OR true LIMIT 1"),
        7 => format!("WITH w AS (SELECT {e} AS c) SELECT c FROM w"),
        _ => format!("select\n\t{e}::text -- trailing\n"),
    }
}

/// Spaces between tokens become comments or newlines now and then (outside literals and
/// quoted names: only the spaces the oracle wrote itself, between words it chose).
fn sprinkle(g: &mut StdRng, sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let (mut quote, mut dquote) = (false, false);
    for c in sql.chars() {
        match c {
            '\'' if !dquote => quote = !quote,
            '"' if !quote => dquote = !dquote,
            _ => {}
        }
        if c == ' ' && !quote && !dquote && g.gen_bool(0.15) {
            out.push_str(["\n", " /* c */ ", "\t", " /**/ "][g.gen_range(0..4)]);
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Context {
    Simple,
    Extended,
    AfterAnother,
    ReadOnlyBlock,
    Block,
    SerializableBlock,
    SerializableSession,
}

const CONTEXTS: &[Context] = &[
    Context::Simple,
    Context::Extended,
    Context::AfterAnother,
    Context::ReadOnlyBlock,
    Context::Block,
    Context::SerializableBlock,
    Context::SerializableSession,
];

/// Units routed to replicas so far, by node.
fn replica_units() -> u64 {
    pgroute::metrics::routes().iter().filter(|(node, ..)| node != "pg0").map(|(.., n)| n).sum()
}

/// Runs `sql` in `context` through pgroute on `client` (a fresh client of `port`);
/// returns the statement's error (SQLSTATE, message), if any, and whether pgroute sent any
/// unit of the statement itself (not the context's own statements) to a replica.
async fn run(
    client: &Client,
    port: u16,
    context: Context,
    sql: &str,
) -> (Option<(String, String)>, bool, Option<(i64, String, String)>) {
    let err = |e: tokio_postgres::Error| {
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        (code, e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string()))
    };
    let setup = match context {
        Context::ReadOnlyBlock => Some("BEGIN READ ONLY"),
        Context::Block => Some("BEGIN"),
        Context::SerializableBlock => Some("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"),
        Context::SerializableSession => Some("SET default_transaction_isolation = 'serializable'"),
        _ => None,
    };
    if let Some(setup) = setup {
        if let Err(e) = simple(client, setup).await {
            return (Some(err(e)), false, None);
        }
    }
    let before = replica_units();
    let outcome = match context {
        Context::Extended => {
            // One unit, as drivers send it: Parse, Bind, Execute, Sync.
            let (mut w, _) = Wire::connect(port, "postgres", "", &[]).await;
            let before = replica_units();
            let unit = [wire::parse("", sql.as_bytes()), wire::bind("", "", &[]), wire::execute("", 0), wire::sync()];
            w.send(&unit.concat()).await;
            let replies = w.until_ready(1).await;
            let replica = replica_units() > before;
            let error = replies.iter().find_map(error_of);
            let state = wire_state(&mut w).await;
            w.terminate().await;
            return (error, replica, Some(state));
        }
        Context::AfterAnother => simple(client, &format!("SELECT 1; {sql}")).await.map(|_| ()).map_err(err),
        _ => simple(client, sql).await.map(|_| ()).map_err(err),
    };
    let replica = replica_units() > before;
    if matches!(context, Context::ReadOnlyBlock | Context::Block | Context::SerializableBlock) {
        let _ = simple(client, "COMMIT").await;
        return (outcome.err(), replica, None);
    }
    (outcome.err(), replica, Some(session_state(client).await))
}

/// An ErrorResponse's (SQLSTATE, rendering).
fn error_of(m: &wire::Msg) -> Option<(String, String)> {
    (m.tag == b'E').then(|| {
        let text = wire::render(m);
        let code = text.split(" | ").find_map(|f| f.strip_prefix("C=")).unwrap_or_default().to_string();
        (code, text)
    })
}

/// `session_state` on a raw connection.
async fn wire_state(w: &mut Wire) -> (i64, String, String) {
    let locks = "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'";
    let locks = w.column(locks).await.first().cloned().flatten().and_then(|v| v.parse().ok()).unwrap_or(-1);
    let setting = w.column("SELECT current_setting('orc.x', true)").await;
    let setting = setting.first().cloned().flatten().unwrap_or_else(|| "NULL".into());
    let replies = w.query(b"SELECT lastval()").await;
    let lastval = match replies.iter().find_map(error_of) {
        Some((code, _)) => code,
        None => wire::rows(&replies).first().and_then(|r| r[0].clone()).unwrap_or_default(),
    };
    (locks, setting, lastval)
}

async fn atoms(primary: &Client) -> Vec<(Atom, bool)> {
    let rows = primary
        .query(
            "SELECT p.proname::text, coalesce(string_agg(format_type(t, NULL), ',' ORDER BY i), '')
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             LEFT JOIN LATERAL unnest(p.proargtypes) WITH ORDINALITY AS a(t, i) ON true
             WHERE n.nspname = 'pg_catalog' AND p.provolatile = 'v' AND p.prokind = 'f' AND NOT p.proretset
               AND p.proname = lower(p.proname) AND p.proname NOT LIKE '%\\_validator'
               AND p.proname NOT LIKE 'query\\_to\\_xml%' AND p.proname NOT LIKE 'cursor\\_to\\_xml%'
               AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype, 'internal'::regtype,
                                        'language_handler'::regtype, 'fdw_handler'::regtype,
                                        'index_am_handler'::regtype, 'table_am_handler'::regtype, 'tsm_handler'::regtype)
             GROUP BY p.oid, p.proname ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for r in rows {
        let (name, types): (String, String) = (r.get(0), r.get(1));
        if DESTRUCTIVE.contains(&name.as_str()) || seen.contains_key(&name) {
            continue;
        }
        let args: Option<Vec<String>> = types.split(',').filter(|t| !t.is_empty()).map(argument).collect();
        if let Some(args) = args {
            seen.insert(name.clone(), ());
            out.push((Atom::Call("pg_catalog", name, args.join(", ")), true));
        }
    }
    let call = |s: &'static str, n: &str, a: &str, v| (Atom::Call(s, n.to_string(), a.to_string()), v);
    out.push(call("pg_catalog", "set_config", "'orc.x', 'on', false", true));
    out.push(call("pg_catalog", "set_config", "'orc.x', 'on', true", true));
    out.push(call("pg_catalog", "nextval", "'orc_seq'", true));
    out.push(call("pg_catalog", "setval", "'orc_seq', 5", true));
    out.push(call("pg_catalog", "pg_advisory_lock", "7", true));
    out.push(call("public", "orc_vol", "1", true));
    out.push(call("public", "orc_stab", "1", false));
    out.push(call("public", "orc_imm", "1", false));
    out.push(call("pg_catalog", "lower", "'A'", false));
    out.push((Atom::Read("orc_money"), false));
    out.push((Atom::Read("orc_t"), false));
    for s in [
        "WITH x AS (INSERT INTO orc_log VALUES (1) RETURNING v) SELECT * FROM x",
        "WITH x AS (UPDATE orc_t SET v = v WHERE false RETURNING v) SELECT count(*) FROM x",
        "SELECT v INTO orc_into FROM orc_t",
        "SELECT v FROM orc_t FOR UPDATE",
        "SELECT v FROM orc_t LIMIT 1 FOR KEY SHARE",
        "CALL orc_proc()",
        "DO $$ BEGIN PERFORM 1; END $$",
        "LOCK TABLE orc_t IN SHARE MODE",
        "SELECT 1 FROM (VALUES (1)) o(x) WHERE orc_vol(0) IS NULL",
        "EXPLAIN ANALYZE SELECT orc_vol(2)",
        "SELECT begin atomic FROM (SELECT 1 AS begin) s; INSERT INTO orc_log VALUES (3)",
    ] {
        out.push((Atom::Statement(s.to_string()), true));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_postgresql_calls_a_write_runs_on_a_replica() {
    let statements: usize =
        std::env::var("PGROUTE_ORACLE_STATEMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let seed: u64 = std::env::var("PGROUTE_ORACLE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let c = cluster();
    let primary = c.direct(0).await;
    primary
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS orc_t (v int); INSERT INTO orc_t SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM orc_t);
             CREATE TABLE IF NOT EXISTS orc_log (v int);
             CREATE TABLE IF NOT EXISTS orc_money (v int); INSERT INTO orc_money SELECT 10 WHERE NOT EXISTS (SELECT 1 FROM orc_money);
             CREATE SEQUENCE IF NOT EXISTS orc_seq;
             CREATE OR REPLACE FUNCTION orc_vol(int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO orc_log VALUES ($1) RETURNING $1';
             CREATE OR REPLACE FUNCTION orc_stab(int) RETURNS int LANGUAGE sql STABLE AS 'SELECT $1';
             CREATE OR REPLACE FUNCTION orc_imm(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
             CREATE OR REPLACE PROCEDURE orc_proc() LANGUAGE sql AS 'SELECT 1';",
        )
        .await
        .unwrap();
    c.wait_replicas_caught_up().await;
    let p = proxy_with("[routing]\nprimary_tables = [\"orc_money\"]\n").await;
    let atoms = atoms(&primary).await;
    let mut verdicts = Vec::with_capacity(atoms.len());
    for (atom, volatile) in &atoms {
        verdicts.push(judge(c.primary_port, atom, *volatile).await);
        let _ = primary.batch_execute("DROP TABLE IF EXISTS orc_into").await;
    }
    let must = verdicts.iter().filter(|v| v.primary.is_some()).count();
    println!("oracle: {} atoms from pg_proc and the fixtures, {must} must run on the primary", atoms.len());
    let mut g = StdRng::seed_from_u64(seed);
    let (mut failures, mut on_replica, mut invalid) = (Vec::new(), 0usize, 0usize);
    let started = std::time::Instant::now();
    for n in 0..statements {
        // A quarter of the statements are reads PostgreSQL lets a replica run: the control
        // that shows replicas still get reads, and that the check can see them there.
        let i = if g.gen_bool(0.25) {
            let free: Vec<usize> = (0..atoms.len()).filter(|&i| verdicts[i].primary.is_none()).collect();
            free[g.gen_range(0..free.len())]
        } else {
            g.gen_range(0..atoms.len())
        };
        let (atom, verdict) = (&atoms[i].0, &verdicts[i]);
        let sql = match expression(&mut g, atom) {
            Some(e) => place(&mut g, &e),
            None => canonical(atom),
        };
        let sql = sprinkle(&mut g, &sql);
        let context = CONTEXTS[g.gen_range(0..CONTEXTS.len())];
        if matches!(context, Context::Extended) && sql.contains(';') {
            // One statement per Parse.
            continue;
        }
        let client = connect(&p.conninfo("postgres")).await;
        let ran = tokio::time::timeout(std::time::Duration::from_secs(20), run(&client, p.port, context, &sql)).await;
        let Ok((error, replica, state)) = ran else {
            failures.push(format!("#{n} seed {seed} {context:?}: {sql:?}: no answer within 20 s"));
            continue;
        };
        let _ = primary.batch_execute("DROP TABLE IF EXISTS orc_into").await;
        on_replica += usize::from(replica);
        let case = format!("#{n} seed {seed} {context:?}: {sql:?}");
        if let Some((code, message)) = &error {
            if message.contains("hot standby") {
                failures.push(format!("{case}: a replica refused it: {code} {message}"));
            }
            if matches!(code.as_str(), "42601" | "42883" | "42P01") {
                invalid += 1;
                println!("oracle: generated text not valid SQL: {case}: {code} {message}");
            }
        }
        if let (true, Some(why)) = (replica, &verdict.primary) {
            failures.push(format!("{case}: ran on a replica, but PostgreSQL says it {why}"));
        }
        // Session state the statement leaves on a direct connection is there for the
        // same client's next statement through pgroute.
        if let (Some(_), Some(got), None) = (&verdict.after, state, &error) {
            // What this very text leaves on a fresh direct connection, in the same context
            // (a placement may keep the call from running: `f() IS NOT NULL OR true`).
            let direct = connect(&format!("host=127.0.0.1 port={} user=postgres dbname=app", c.primary_port)).await;
            if matches!(context, Context::SerializableSession) {
                simple(&direct, "SET default_transaction_isolation = 'serializable'").await.unwrap();
            }
            let text = if matches!(context, Context::AfterAnother) { format!("SELECT 1; {sql}") } else { sql.clone() };
            let _ = simple(&direct, &text).await;
            let want = &session_state(&direct).await;
            let defined = |lastval: &str| lastval != "55000";
            if (got.0 > 0) != (want.0 > 0) || got.1 != want.1 || defined(&got.2) != defined(&want.2) {
                failures.push(format!("{case}: left {got:?} through pgroute, {want:?} directly"));
            }
        }
    }
    println!(
        "oracle: {statements} statements, seed {seed}, {:.1} s: {on_replica} ran on replicas, {invalid} not valid SQL, {} failures",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(invalid * 20 < statements, "the generator writes valid SQL ({invalid} of {statements} were not)");
    assert!(on_replica * 20 > statements, "reads still reach replicas ({on_replica} of {statements})");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
