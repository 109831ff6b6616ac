//! Session statements: `SET`, `RESET`, `DISCARD`. Their effect must follow the client to
//! every server connection it uses, so we record what they change. They are classified
//! from the raw text on every call (never cached: the values are literals).

use super::lexer::{Kind, Token};
use super::{Class, Step};

/// One change to the client's session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingChange {
    /// A session-level SET of `name`; `statement` is the text to replay on another server.
    Set {
        name: String,
        statement: String,
    },
    Reset {
        name: String,
    },
    ResetAll,
}

/// Settings that say who the session is. `RESET ALL` (what a pooled connection gets
/// between clients) leaves them as they are, in any spelling (`SET "role"`,
/// `SET session_authorization = ...`), so they pin the session.
pub const IDENTITY: &[&str] = &["role", "session_authorization"];

pub(super) fn starts_statement(sql: &str, t: &Token) -> bool {
    t.is(sql, "set") || t.is(sql, "reset") || t.is(sql, "discard")
}

/// Does any statement in the string start with SET, RESET or DISCARD? (The reference
/// `lexer::key_into`'s `session` fact is checked against.)
#[cfg(test)]
pub fn has_session_statement(sql: &str, toks: &[Token]) -> bool {
    toks.first().is_some_and(|t| starts_statement(sql, t))
        || toks.windows(2).any(|w| w[0].kind == Kind::Semicolon && starts_statement(sql, &w[1]))
}

fn name_of(sql: &str, t: &Token) -> String {
    match t.kind {
        Kind::QuotedIdent => t.text(sql).trim_matches('"').to_string(),
        _ => t.text(sql).to_ascii_lowercase(),
    }
}

pub fn classify(sql: &str, toks: &[Token], first: &str) -> Class {
    let statement = match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => sql[a.start..b.end].to_string(),
        _ => String::new(),
    };
    let mut rest = &toks[1..];
    let tracked = |change: SettingChange, reason: &str| {
        let mut c = Class::read(reason);
        c.steps.push(Step { settings: vec![change], ..Step::default() });
        c
    };
    match first {
        "set" => {
            if rest.first().is_some_and(|t| t.is(sql, "session")) {
                rest = &rest[1..];
                if rest.first().is_some_and(|t| t.is(sql, "characteristics")) {
                    let mut c = Class::read("session:set");
                    let settings = characteristics(sql, &rest[1..]).unwrap_or_else(|| {
                        vec![SettingChange::Set { name: "session characteristics".to_string(), statement }]
                    });
                    c.steps.push(Step { settings, ..Step::default() });
                    return c;
                }
            }
            let Some(t) = rest.first() else {
                return Class::write("write:set");
            };
            if t.is(sql, "local") || t.is(sql, "transaction") || t.is(sql, "constraints") {
                if names_serializable(sql, rest) {
                    // A standby refuses serializable mode; this belongs where a serializable
                    // transaction can run.
                    return Class::write("write:begin serializable");
                }
                // Ends with the transaction, which is pinned to one server anyway.
                return Class::read("session:set local");
            }
            if t.is(sql, "authorization") {
                return Class::pinning("set role");
            }
            let name = if t.is(sql, "time") && rest.get(1).is_some_and(|z| z.is(sql, "zone")) {
                "timezone".to_string()
            } else {
                qualified_name(sql, rest)
            };
            if IDENTITY.contains(&name.as_str()) {
                // RESET ALL does not undo these: keep the session on one server.
                return Class::pinning("set role");
            }
            if name == "transaction_isolation" && names_serializable(sql, rest) {
                return Class::write("write:begin serializable");
            }
            tracked(SettingChange::Set { name, statement }, "session:set")
        }
        "reset" => match rest.first() {
            Some(t) if t.is(sql, "all") => tracked(SettingChange::ResetAll, "session:reset"),
            Some(t) if t.is(sql, "session") => Class::pinning("set role"),
            Some(_) => {
                let name = qualified_name(sql, rest);
                if IDENTITY.contains(&name.as_str()) {
                    return Class::pinning("set role");
                }
                tracked(SettingChange::Reset { name }, "session:reset")
            }
            None => Class::write("write:reset"),
        },
        _ => match rest.first() {
            Some(t) if t.is(sql, "all") => tracked(SettingChange::ResetAll, "session:discard"),
            _ => Class::read("session:discard"),
        },
    }
}

/// Does the statement name the serializable isolation level (as a keyword or a value)?
pub fn names_serializable(sql: &str, toks: &[Token]) -> bool {
    toks.iter().any(|t| t.text(sql).to_ascii_lowercase().contains("serializable"))
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION mode [, ...]` as the settings it changes
/// (`default_transaction_isolation`, `_read_only`, `_deferrable`), so that a later one
/// changing another mode does not replace it. `None` when a mode is not understood.
fn characteristics(sql: &str, toks: &[Token]) -> Option<Vec<SettingChange>> {
    let words: Vec<String> =
        toks.iter().filter(|t| !t.is_punct(sql, ',')).map(|t| t.text(sql).to_ascii_lowercase()).collect();
    let mut w: Vec<&str> = words.iter().map(String::as_str).collect();
    if w.first() != Some(&"as") || w.get(1) != Some(&"transaction") {
        return None;
    }
    w.drain(..2);
    let set = |name: &str, value: &str| SettingChange::Set {
        name: name.to_string(),
        statement: format!("SET {name} = '{value}'"),
    };
    let mut out = Vec::new();
    while !w.is_empty() {
        let (change, used) = match w.as_slice() {
            ["isolation", "level", "serializable", ..] => (set("default_transaction_isolation", "serializable"), 3),
            ["isolation", "level", "repeatable", "read", ..] => {
                (set("default_transaction_isolation", "repeatable read"), 4)
            }
            ["isolation", "level", "read", "committed", ..] => {
                (set("default_transaction_isolation", "read committed"), 4)
            }
            ["isolation", "level", "read", "uncommitted", ..] => {
                (set("default_transaction_isolation", "read uncommitted"), 4)
            }
            ["read", "only", ..] => (set("default_transaction_read_only", "on"), 2),
            ["read", "write", ..] => (set("default_transaction_read_only", "off"), 2),
            ["deferrable", ..] => (set("default_transaction_deferrable", "on"), 1),
            ["not", "deferrable", ..] => (set("default_transaction_deferrable", "off"), 2),
            _ => return None,
        };
        out.push(change);
        w.drain(..used);
    }
    (!out.is_empty()).then_some(out)
}

/// `name` or `prefix.name` (custom settings such as `myapp.tenant`).
fn qualified_name(sql: &str, toks: &[Token]) -> String {
    let mut name = toks.first().map(|t| name_of(sql, t)).unwrap_or_default();
    if toks.get(1).is_some_and(|t| t.is_punct(sql, '.')) {
        if let Some(t) = toks.get(2) {
            name.push('.');
            name.push_str(&name_of(sql, t));
        }
    }
    name
}
