//! Deep classification of queries with sqlparser's PostgreSQL dialect.
//!
//! Only reached when the lexer sees something in a query that could make it a write
//! (a DML keyword, INTO, a locking clause, EXPLAIN ANALYZE, a write function). Plain
//! reads without any of these are decided by the lexer alone.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, SetExpr, Statement, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::lexer::{Kind, Token};
use super::statement::function_effect;
use super::Class;

/// Words that may turn a query into a write (data-modifying CTE, SELECT INTO, row locks,
/// EXPLAIN ANALYZE).
const SUSPICIOUS_WORDS: &[&str] = &["insert", "update", "delete", "merge", "into", "share", "analyze", "analyse"];

/// Is there anything in the tokens that could make this query a write?
fn suspicious(sql: &str, toks: &[Token]) -> bool {
    toks.iter().enumerate().any(|(i, t)| {
        t.kind == Kind::Word
            && (SUSPICIOUS_WORDS.iter().any(|w| t.is(sql, w))
                || (toks.get(i + 1).is_some_and(|n| n.is_punct(sql, '(')) && function_effect(t.text(sql)).is_some()))
    }) || toks.first().is_some_and(|t| t.kind != Kind::Word)
}

/// A row-locking clause anywhere: `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`,
/// `FOR KEY SHARE` (sqlparser knows only the first and third).
fn row_lock(sql: &str, toks: &[Token]) -> Option<&'static str> {
    let is = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is(sql, kw));
    (0..toks.len()).filter(|&i| is(i, "for")).find_map(|i| {
        if is(i + 1, "update") {
            Some("update")
        } else if is(i + 1, "share") {
            Some("share")
        } else if is(i + 1, "no") && is(i + 2, "key") && is(i + 3, "update") {
            Some("no key update")
        } else if is(i + 1, "key") && is(i + 2, "share") {
            Some("key share")
        } else {
            None
        }
    })
}

pub fn classify(sql: &str, toks: &[Token]) -> Class {
    if !suspicious(sql, toks) {
        return Class::read("read");
    }
    if let Some(lock) = row_lock(sql, toks) {
        return Class::write(format!("write:select for {lock}"));
    }
    let text = match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => &sql[a.start..b.end],
        _ => return Class::read("empty"),
    };
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, text) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "statement not parsed: routed to the primary");
            crate::metrics::parse_error();
            return Class::write("parse_error");
        }
    };
    let mut verdict = Class::read("read");
    for stmt in &statements {
        let mut w = WriteFinder::default();
        let found = match stmt {
            Statement::Query(_) => stmt.visit(&mut w),
            Statement::Explain { analyze, options, statement, .. } => {
                let analyze_option = options.iter().flatten().any(|o| {
                    o.name.value.eq_ignore_ascii_case("analyze")
                        && o.arg.as_ref().is_none_or(|a| {
                            let v = a.to_string().to_ascii_lowercase();
                            !matches!(v.as_str(), "false" | "off" | "0")
                        })
                });
                if *analyze || analyze_option {
                    w.explain_analyze = true;
                    statement.visit(&mut w)
                } else {
                    ControlFlow::Continue(())
                }
            }
            other => ControlFlow::Break(Class::write(format!("write:{}", statement_kind(other)))),
        };
        if let ControlFlow::Break(c) = found {
            verdict = c;
            break;
        }
    }
    verdict
}

/// `COPY ... TO`: a read when it copies a table or a query that is itself a read.
pub fn classify_copy_to(sql: &str, toks: &[Token]) -> Class {
    let open = match toks.get(1) {
        Some(t) if t.is_punct(sql, '(') => 1,
        _ => return Class::read("read:copy to"),
    };
    let mut depth = 0usize;
    let close = toks[open..].iter().position(|t| {
        if t.is_punct(sql, '(') {
            depth += 1;
        } else if t.is_punct(sql, ')') {
            depth -= 1;
        }
        depth == 0
    });
    match close {
        Some(len) => {
            let c = classify(sql, &toks[open + 1..open + len]);
            if c.is_write() {
                c
            } else {
                Class::read("read:copy to")
            }
        }
        None => Class::write("parse_error"),
    }
}

fn statement_kind(stmt: &Statement) -> String {
    let text = stmt.to_string();
    text.split_whitespace().next().unwrap_or("statement").to_ascii_lowercase()
}

/// Walks an AST and stops at the first thing that writes.
#[derive(Default)]
struct WriteFinder {
    explain_analyze: bool,
}

impl WriteFinder {
    fn write(&self, what: String) -> ControlFlow<Class> {
        let prefix = if self.explain_analyze { "write:explain analyze " } else { "write:" };
        ControlFlow::Break(Class::write(format!("{prefix}{what}")))
    }
}

impl Visitor for WriteFinder {
    type Break = Class;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Class> {
        if let Some(lock) = q.locks.first() {
            return self.write(format!("select for {}", lock.lock_type).to_ascii_lowercase());
        }
        match q.body.as_ref() {
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                self.write("data-modifying cte".into())
            }
            SetExpr::Select(s) if s.into.is_some() => self.write("select into".into()),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<Class> {
        match s {
            Statement::Query(_) => ControlFlow::Continue(()),
            other => self.write(statement_kind(other)),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Class> {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().replace('"', "");
            if let Some(mut c) = function_effect(&name) {
                if self.explain_analyze {
                    c.reason = c.reason.replacen("write:", "write:explain analyze ", 1);
                }
                return ControlFlow::Break(c);
            }
        }
        ControlFlow::Continue(())
    }
}
