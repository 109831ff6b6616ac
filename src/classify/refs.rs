//! Names a statement mentions: relations (anything that could be a table or view name)
//! and functions it calls, as PostgreSQL would resolve their spelling: unquoted names fold
//! to lower case, quoted ones keep their case. Collected from tokens, so it works for
//! statements sqlparser cannot parse and over-approximates (a column that happens to share
//! a money table's name also counts): for routing to the primary, erring that way is safe.

use super::lexer::{Kind, Token};

/// A possibly schema-qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QName {
    pub schema: Option<String>,
    pub name: String,
}

impl QName {
    /// Parses a configured name such as `balances`, `public.balances` or `"Odd".Name`.
    pub fn parse(text: &str) -> QName {
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = text.trim().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(std::mem::take(&mut cur)),
                c if quoted => cur.push(c),
                c => cur.push(c.to_ascii_lowercase()),
            }
        }
        parts.push(cur);
        let name = parts.pop().unwrap_or_default();
        QName { schema: parts.pop(), name }
    }

    /// Does a reference in SQL (`self`) denote the configured name `pattern`? An unqualified
    /// pattern matches in any schema; a qualified one matches the same schema, or an
    /// unqualified reference (which the search path may resolve to it).
    pub fn matches(&self, pattern: &QName) -> bool {
        self.name == pattern.name
            && match (&pattern.schema, &self.schema) {
                (None, _) | (Some(_), None) => true,
                (Some(p), Some(s)) => p == s,
            }
    }

    pub fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Keywords that may stand before `(` without being a function call.
const NOT_FUNCTIONS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "cast",
    "coalesce",
    "cube",
    "distinct",
    "else",
    "exists",
    "filter",
    "from",
    "greatest",
    "grouping",
    "in",
    "into",
    "is",
    "join",
    "lateral",
    "least",
    "like",
    "not",
    "nullif",
    "on",
    "or",
    "over",
    "position",
    "recursive",
    "rollup",
    "row",
    "select",
    "sets",
    "some",
    "substring",
    "table",
    "then",
    "trim",
    "overlay",
    "using",
    "values",
    "when",
    "where",
    "with",
    "within",
    "explain",
    "copy",
    "analyze",
    "verbose",
    "returning",
    "default",
    "check",
    "references",
    "primary",
    "unique",
    "key",
    "window",
    "range",
    "rows",
    "groups",
    "numeric",
    "decimal",
    "varchar",
    "char",
    "character",
    "varying",
    "time",
    "timestamp",
    "interval",
    "bit",
    "float",
    "precision",
    "only",
    "materialized",
    "ordinality",
];

/// `name(columns) AS (` or `AS MATERIALIZED`/`AS NOT MATERIALIZED`: a CTE's column list,
/// not a call. `close` is the index of the `)` that closes the `(` at the call site.
fn is_cte_columns(sql: &str, toks: &[Token], close: Option<usize>) -> bool {
    close.is_some_and(|k| {
        toks.get(k + 1).is_some_and(|a| a.is(sql, "as"))
            && toks.get(k + 2).is_some_and(|n| n.is_punct(sql, '(') || n.is(sql, "materialized") || n.is(sql, "not"))
    })
}

/// For each token, the index of the `)` closing it when it is a `(` (one pass, so the
/// work stays linear however deep the nesting).
fn closing_parens(sql: &str, toks: &[Token]) -> Vec<Option<usize>> {
    let mut close = vec![None; toks.len()];
    let mut open = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        if t.is_punct(sql, '(') {
            open.push(k);
        } else if t.is_punct(sql, ')') {
            if let Some(o) = open.pop() {
                close[o] = Some(k);
            }
        }
    }
    close
}

/// The name at `toks[i]` as PostgreSQL resolves it, and the index of the token after it
/// (past a `UESCAPE 'c'` clause). Unquoted names fold to lower case; quoted ones keep
/// theirs; `U&"..."` ones are decoded (`\XXXX`, `\+XXXXXX`, or the UESCAPE character).
fn ident(sql: &str, toks: &[Token], i: usize) -> Option<(String, usize)> {
    let t = toks.get(i)?;
    match t.kind {
        Kind::Word => Some((t.text(sql).to_ascii_lowercase(), i + 1)),
        Kind::QuotedIdent => {
            let text = t.text(sql);
            let unicode = text.starts_with(['u', 'U']);
            let inner = text.trim_start_matches(['u', 'U', '&']).trim_start_matches('"');
            let inner = inner.strip_suffix('"').unwrap_or(inner).replace("\"\"", "\"");
            if !unicode {
                return Some((inner, i + 1));
            }
            let escape = toks.get(i + 1).filter(|u| u.is(sql, "uescape")).and_then(|_| toks.get(i + 2));
            let (esc, next) = match escape {
                Some(lit) if lit.kind == Kind::Literal => {
                    let c = lit.text(sql).trim_matches('\'').chars().next().unwrap_or('\\');
                    (c, i + 3)
                }
                _ => ('\\', i + 1),
            };
            Some((decode_unicode(&inner, esc).unwrap_or(inner), next))
        }
        _ => None,
    }
}

/// The body of a `U&"..."` identifier: `esc` followed by 4 hex digits, `+` and 6, or
/// itself. `None` when an escape is malformed (the server rejects the text).
pub fn decode_unicode(body: &str, esc: char) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != esc {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&esc) {
            chars.next();
            out.push(esc);
            continue;
        }
        let digits = if chars.peek() == Some(&'+') {
            chars.next();
            6
        } else {
            4
        };
        let hex: String = chars.by_ref().take(digits).collect();
        if hex.len() != digits {
            return None;
        }
        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
    }
    Some(out)
}

/// (relations mentioned, functions called), deduplicated.
pub fn references(sql: &str, toks: &[Token]) -> (Vec<QName>, Vec<QName>) {
    let (mut relations, mut functions) = (Vec::new(), Vec::new());
    let close = closing_parens(sql, toks);
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    while i < toks.len() {
        let Some((first, mut j)) = ident(sql, toks, i) else {
            i += 1;
            continue;
        };
        let mut parts = vec![first];
        while j + 1 < toks.len() && toks[j].is_punct(sql, '.') {
            match ident(sql, toks, j + 1) {
                Some((p, next)) => {
                    parts.push(p);
                    j = next;
                }
                None => break,
            }
        }
        let name = parts.pop().unwrap_or_default();
        let q = QName { schema: parts.pop(), name };
        let call = toks.get(j).is_some_and(|t| t.is_punct(sql, '(')) && !is_cte_columns(sql, toks, close[j]);
        let keyword = q.schema.is_none() && toks[i].kind == Kind::Word && NOT_FUNCTIONS.contains(&q.name.as_str());
        let list = match (call, keyword) {
            (true, true) => None,
            (true, false) => Some(&mut functions),
            (false, _) => Some(&mut relations),
        };
        if let Some(list) = list {
            if seen.insert((call, q.clone())) {
                list.push(q);
            }
        }
        i = j;
    }
    (relations, functions)
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn q(schema: Option<&str>, name: &str) -> QName {
        QName { schema: schema.map(str::to_string), name: name.to_string() }
    }

    #[test]
    fn configured_names_fold_like_postgres() {
        assert_eq!(QName::parse("Balances"), q(None, "balances"));
        assert_eq!(QName::parse("public.balances"), q(Some("public"), "balances"));
        assert_eq!(QName::parse("\"Wallet\".\"Odd\"\"Name\""), q(Some("Wallet"), "Odd\"Name"));
    }

    #[test]
    fn references_split_relations_from_function_calls() {
        let sql =
            "SELECT w.id, wallet_balance(w.id), pg_catalog.lower(x) FROM public.\"Balances\" w JOIN bets b ON true";
        let (rels, funcs) = references(sql, &tokenize(sql));
        assert!(rels.contains(&q(Some("public"), "Balances")));
        assert!(rels.contains(&q(None, "bets")));
        assert!(funcs.contains(&q(None, "wallet_balance")));
        assert!(funcs.contains(&q(Some("pg_catalog"), "lower")));
        assert!(!rels.contains(&q(None, "wallet_balance")));
        let sql = "SELECT 1 FROM t WHERE a IN (1) AND EXISTS (SELECT 1) AND CAST(x AS int) = ANY (y)";
        let (_, funcs) = references(sql, &tokenize(sql));
        assert!(funcs.is_empty(), "{funcs:?}");
    }

    /// Issue 22, item 7: `U&` identifiers name what their escapes spell.
    #[test]
    fn unicode_escaped_names_are_decoded() {
        let sql =
            r#"SELECT 1 FROM U&"\0062alances" b, u&"w!0061llets"  UESCAPE '!' WHERE U&"\+000066x"(1) AND "Odd""q" > 0"#;
        let (rels, funcs) = references(sql, &tokenize(sql));
        assert!(rels.contains(&q(None, "balances")), "{rels:?}");
        assert!(rels.contains(&q(None, "wallets")), "{rels:?}");
        assert!(funcs.contains(&q(None, "fx")), "{funcs:?}");
        assert!(rels.contains(&q(None, "Odd\"q")), "{rels:?}");
        assert_eq!(decode_unicode(r"d\0061ta", '\\').as_deref(), Some("data"));
        assert_eq!(decode_unicode(r"a\\b", '\\').as_deref(), Some(r"a\b"));
        assert_eq!(decode_unicode(r"a\00", '\\'), None);
    }

    #[test]
    fn matching_respects_schemas() {
        let cfg = QName::parse("public.balances");
        assert!(q(None, "balances").matches(&cfg));
        assert!(q(Some("public"), "balances").matches(&cfg));
        assert!(!q(Some("audit"), "balances").matches(&cfg));
        assert!(q(Some("audit"), "balances").matches(&QName::parse("balances")));
        assert!(!q(None, "Balances").matches(&QName::parse("balances")));
    }
}
