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
/// not a call. `open` indexes the `(`.
fn is_cte_columns(sql: &str, toks: &[Token], open: usize) -> bool {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.is_punct(sql, '(') {
            depth += 1;
        } else if t.is_punct(sql, ')') {
            depth -= 1;
            if depth == 0 {
                return toks.get(k + 1).is_some_and(|a| a.is(sql, "as"))
                    && toks
                        .get(k + 2)
                        .is_some_and(|n| n.is_punct(sql, '(') || n.is(sql, "materialized") || n.is(sql, "not"));
            }
        }
    }
    false
}

fn ident(sql: &str, t: &Token) -> Option<String> {
    match t.kind {
        Kind::Word => Some(t.text(sql).to_ascii_lowercase()),
        Kind::QuotedIdent => {
            let inner = t.text(sql).trim_start_matches('"');
            let inner = inner.strip_suffix('"').unwrap_or(inner);
            Some(inner.replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// (relations mentioned, functions called), deduplicated.
pub fn references(sql: &str, toks: &[Token]) -> (Vec<QName>, Vec<QName>) {
    let (mut relations, mut functions) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < toks.len() {
        let Some(first) = ident(sql, &toks[i]) else {
            i += 1;
            continue;
        };
        let mut parts = vec![first];
        let mut j = i + 1;
        while j + 1 < toks.len() && toks[j].is_punct(sql, '.') {
            match ident(sql, &toks[j + 1]) {
                Some(p) => parts.push(p),
                None => break,
            }
            j += 2;
        }
        let name = parts.pop().unwrap_or_default();
        let q = QName { schema: parts.pop(), name };
        let call = toks.get(j).is_some_and(|t| t.is_punct(sql, '(')) && !is_cte_columns(sql, toks, j);
        let keyword = q.schema.is_none() && toks[i].kind == Kind::Word && NOT_FUNCTIONS.contains(&q.name.as_str());
        let list = match (call, keyword) {
            (true, true) => None,
            (true, false) => Some(&mut functions),
            (false, _) => Some(&mut relations),
        };
        if let Some(list) = list.filter(|l| !l.contains(&q)) {
            list.push(q);
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
