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

fn starts_statement(sql: &str, t: &Token) -> bool {
    t.is(sql, "set") || t.is(sql, "reset") || t.is(sql, "discard")
}

/// Does any statement in the string start with SET, RESET or DISCARD?
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
                    let name = "session characteristics".to_string();
                    return tracked(SettingChange::Set { name, statement }, "session:set");
                }
            }
            let Some(t) = rest.first() else {
                return Class::write("write:set");
            };
            if t.is(sql, "local") || t.is(sql, "transaction") || t.is(sql, "constraints") {
                // Ends with the transaction, which is pinned to one server anyway.
                return Class::read("session:set local");
            }
            if t.is(sql, "role") || t.is(sql, "authorization") {
                // RESET ALL does not undo these: keep the session on one server.
                return Class::pinning("set role");
            }
            let name = if t.is(sql, "time") && rest.get(1).is_some_and(|z| z.is(sql, "zone")) {
                "timezone".to_string()
            } else {
                qualified_name(sql, rest)
            };
            tracked(SettingChange::Set { name, statement }, "session:set")
        }
        "reset" => match rest.first() {
            Some(t) if t.is(sql, "all") => tracked(SettingChange::ResetAll, "session:reset"),
            Some(t) if t.is(sql, "role") || t.is(sql, "session") => Class::pinning("set role"),
            Some(_) => {
                let name = qualified_name(sql, rest);
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
