//! Classifying one statement by its leading keywords. Queries that might hide a write are
//! handed to the AST walker in `ast`.

use super::lexer::{Kind, Token};
use super::{ast, session, Class, TxOp};

/// Functions that write, take locks, or need the primary wherever they appear.
/// Matched case-insensitively on the unqualified name (`pg_catalog.nextval` too).
pub const WRITE_FUNCTIONS: &[&str] = &[
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_notify",
    "pg_create_restore_point",
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "dblink_exec",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    // Releasing locks leaves nothing behind (a session holding locks is pinned already);
    // drivers run these when a pooled connection is reused (asyncpg's reset query).
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
];

/// Functions whose effect outlives the transaction on that connection: they pin the
/// session to the primary.
pub const PIN_FUNCTIONS: &[&str] = &[
    // Sequence state (`currval`, `lastval`) lives in the server session that ran
    // `nextval` or `setval`: a later statement must find it on the same connection.
    "nextval",
    "setval",
    "currval",
    "lastval",
    "setseed",
    "dblink_connect",
    "dblink_connect_u",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "set_config",
];

pub fn function_effect(name: &str) -> Option<Class> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("pg_catalog.").unwrap_or(&lower);
    if PIN_FUNCTIONS.contains(&bare) {
        return Some(Class::pinning(&format!("function {bare}")));
    }
    WRITE_FUNCTIONS.contains(&bare).then(|| Class::write(format!("write:function {bare}")))
}

fn word(sql: &str, t: Option<&Token>) -> Option<String> {
    t.filter(|t| t.kind == Kind::Word).map(|t| t.text(sql).to_ascii_lowercase())
}

pub fn classify(sql: &str, toks: &[Token]) -> Class {
    let mut class = classify_by_keyword(sql, toks);
    class.touches_statements =
        toks.first().is_some_and(|t| t.is(sql, "deallocate") || t.is(sql, "execute") || t.is(sql, "do"));
    class
}

fn classify_by_keyword(sql: &str, toks: &[Token]) -> Class {
    let Some(first) = word(sql, toks.first()) else {
        // `(SELECT ...)`, or something odd: let the parser decide.
        return ast::classify(sql, toks);
    };
    let second = word(sql, toks.get(1));
    let has = |kw: &str| toks.iter().any(|t| t.is(sql, kw));
    match first.as_str() {
        "select" | "with" | "values" | "table" | "explain" => ast::classify(sql, toks),
        "show" => Class::read("read:show"),
        "set" | "reset" | "discard" => session::classify(sql, toks, &first),
        "begin" | "start" => begin(sql, toks),
        "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            if second.as_deref() == Some("prepared") {
                Class::write(format!("write:{first} prepared"))
            } else {
                Class::read("transaction_control")
            }
        }
        "prepare" if second.as_deref() == Some("transaction") => Class::write("write:prepare transaction"),
        "prepare" => Class::pinning("sql prepare"),
        "listen" => Class::pinning("listen"),
        "declare" if has("hold") && !toks.windows(2).any(|w| w[0].is(sql, "without") && w[1].is(sql, "hold")) => {
            Class::pinning("declare with hold")
        }
        "create" if is_temp_create(sql, toks) => Class::pinning("create temp"),
        "copy" => {
            if copies_from(sql, toks) {
                Class::write("write:copy from")
            } else if !copies_to_stdout(sql, toks) {
                // A file or a program on the server's host: a side effect on that node.
                Class::write("write:copy to file")
            } else {
                ast::classify_copy_to(sql, toks)
            }
        }
        // The rest either writes, needs the primary, or is unknown: all primary.
        other => Class::write(format!("write:{other}")),
    }
}

/// `COPY table [(columns)] FROM ...`: the first FROM or TO outside parentheses decides.
fn copies_from(sql: &str, toks: &[Token]) -> bool {
    let mut depth = 0i32;
    for t in &toks[1..] {
        if t.is_punct(sql, '(') {
            depth += 1;
        } else if t.is_punct(sql, ')') {
            depth -= 1;
        } else if depth == 0 && t.is(sql, "to") {
            return false;
        } else if depth == 0 && t.is(sql, "from") {
            return true;
        }
    }
    true
}

/// `COPY ... TO STDOUT`: the first TO outside parentheses is followed by STDOUT (not a
/// file name or `PROGRAM`).
fn copies_to_stdout(sql: &str, toks: &[Token]) -> bool {
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(1) {
        if t.is_punct(sql, '(') {
            depth += 1;
        } else if t.is_punct(sql, ')') {
            depth -= 1;
        } else if depth == 0 && t.is(sql, "to") {
            return toks.get(i + 1).is_some_and(|n| n.is(sql, "stdout"));
        }
    }
    false
}

/// `CREATE [GLOBAL|LOCAL] {TEMP|TEMPORARY} ...`: temp objects live in one connection.
fn is_temp_create(sql: &str, toks: &[Token]) -> bool {
    toks.iter().skip(1).take(3).any(|t| t.is(sql, "temp") || t.is(sql, "temporary"))
}

/// `BEGIN` / `START TRANSACTION` with their modes; only an explicit READ ONLY may go to a
/// replica (the last access mode given wins, as in PostgreSQL).
fn begin(sql: &str, toks: &[Token]) -> Class {
    let mut read_only = false;
    for w in toks.windows(2) {
        if w[0].is(sql, "read") {
            if w[1].is(sql, "only") {
                read_only = true;
            } else if w[1].is(sql, "write") {
                read_only = false;
            }
        }
    }
    // A standby refuses serializable transactions ("cannot use serializable mode in a hot
    // standby"): only the primary runs them as a direct connection would.
    let serializable = toks.iter().any(|t| t.is(sql, "serializable"));
    let mut c = match (read_only, serializable) {
        (_, true) => Class::write("write:begin serializable"),
        (true, false) => Class::read("begin read only"),
        (false, false) => Class::write("write:begin"),
    };
    c.begins = Some(read_only);
    c
}

/// The name `DEALLOCATE [PREPARE] name` deallocates, as PostgreSQL folds it.
pub fn deallocates(sql: &str, toks: &[Token]) -> Option<String> {
    let rest = match toks {
        [d, p, rest @ ..] if d.is(sql, "deallocate") && p.is(sql, "prepare") => rest,
        [d, rest @ ..] if d.is(sql, "deallocate") => rest,
        _ => return None,
    };
    match rest {
        [name] if name.kind == Kind::QuotedIdent => Some(unquote(name.text(sql))),
        [name] if name.kind == Kind::Word && !name.is(sql, "all") => Some(name.text(sql).to_ascii_lowercase()),
        _ => None,
    }
}

/// A quoted identifier's name: the outer quotes gone, doubled quotes single.
fn unquote(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').unwrap_or(quoted);
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    inner.replace("\"\"", "\"")
}

/// Does the statement behave differently inside a transaction block (the implicit one of
/// a multi-statement Query included) than alone? Those that need one (`SET LOCAL`, `SET
/// TRANSACTION`, savepoints, `DECLARE`, `LOCK`) and those PostgreSQL refuses in one
/// (`VACUUM`, `CREATE DATABASE`, `... CONCURRENTLY`, `ALTER SYSTEM`, ...).
pub fn block_sensitive(sql: &str, toks: &[Token]) -> bool {
    let Some(first) = word(sql, toks.first()) else { return false };
    let second = word(sql, toks.get(1)).unwrap_or_default();
    let has = |kw: &str| toks.iter().any(|t| t.is(sql, kw));
    match first.as_str() {
        "set" => matches!(second.as_str(), "local" | "transaction" | "constraints"),
        "savepoint" | "release" | "lock" | "vacuum" => true,
        // A cursor without HOLD lives only in a block; CLUSTER of every table refuses one.
        "declare" => !has("hold"),
        "cluster" => toks.len() <= 2,
        "rollback" | "abort" => has("to") || second == "prepared",
        "commit" | "end" => second == "prepared",
        "create" | "drop" => {
            matches!(second.as_str(), "database" | "tablespace" | "subscription") || has("concurrently")
        }
        "alter" => matches!(second.as_str(), "system" | "subscription"),
        "reindex" => has("concurrently") || matches!(second.as_str(), "database" | "system"),
        "discard" => second == "all",
        _ => false,
    }
}

/// The transaction control a statement performs (`TxOp::None` for everything else).
pub fn tx_op(sql: &str, toks: &[Token]) -> TxOp {
    let Some(first) = word(sql, toks.first()) else {
        return TxOp::None;
    };
    let chain = toks.windows(2).any(|w| w[0].is(sql, "and") && w[1].is(sql, "chain"))
        && !toks.windows(3).any(|w| w[0].is(sql, "and") && w[1].is(sql, "no") && w[2].is(sql, "chain"));
    // The savepoint name: the last token, as PostgreSQL folds it.
    let name = || {
        toks.last()
            .map(|t| match t.kind {
                Kind::QuotedIdent => unquote(t.text(sql)),
                _ => t.text(sql).to_ascii_lowercase(),
            })
            .unwrap_or_default()
    };
    let second = word(sql, toks.get(1));
    match first.as_str() {
        "begin" | "start" => TxOp::Begin,
        "commit" | "end" if second.as_deref() != Some("prepared") => TxOp::Commit { chain },
        "rollback" | "abort" if second.as_deref() == Some("prepared") => TxOp::None,
        "rollback" | "abort" if toks.iter().skip(1).take(3).any(|t| t.is(sql, "to")) => TxOp::RollbackTo(name()),
        "rollback" | "abort" => TxOp::Rollback { chain },
        "prepare" if second.as_deref() == Some("transaction") => TxOp::Prepare,
        "savepoint" => TxOp::Savepoint(name()),
        "release" => TxOp::Release(name()),
        _ => TxOp::None,
    }
}
