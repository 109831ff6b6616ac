//! A small SQL lexer: enough of PostgreSQL's lexical rules to find statement boundaries,
//! keywords and function calls without being fooled by comments, string literals, dollar
//! quoting or quoted identifiers, and to build the normalised text the cache is keyed by.
//!
//! It never fails: unterminated strings or comments simply run to the end of the input
//! (the server will reject such text; we only need to route it, and unknown means primary).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unquoted identifier or keyword.
    Word,
    /// "Quoted" identifier.
    QuotedIdent,
    /// String, number, bit-string or dollar-quoted literal.
    Literal,
    /// `$1`-style parameter.
    Param,
    /// `;`
    Semicolon,
    /// Any other punctuation or operator, one character at a time.
    Punct,
}

#[derive(Debug, Clone, Copy)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    /// Case-insensitive keyword test (only for unquoted words).
    pub fn is(&self, sql: &str, kw: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(kw)
    }

    pub fn is_punct(&self, sql: &str, c: char) -> bool {
        self.kind == Kind::Punct && self.text(sql).starts_with(c)
    }
}

const fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

const fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// `ident_start` (bit 0) and `ident_cont` (bit 1) of every byte, looked up once per byte
/// of a word instead of evaluated.
static IDENT: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = ident_start(c as u8) as u8 | (ident_cont(c as u8) as u8) << 1;
        c += 1;
    }
    table
};

fn is_ident_start(c: u8) -> bool {
    IDENT[c as usize] & 1 != 0
}

fn is_ident_cont(c: u8) -> bool {
    IDENT[c as usize] & 2 != 0
}

/// The session settings that change how PostgreSQL reads SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// `standard_conforming_strings`: when off, a backslash escapes the next character in
    /// plain `'...'` strings too, so `'\''` is one string holding a quote.
    pub standard_strings: bool,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect { standard_strings: true }
    }
}

/// Tokenises `sql` as PostgreSQL reads it by default.
#[cfg(test)]
pub fn tokenize(sql: &str) -> Vec<Token> {
    tokenize_in(sql, Dialect::default())
}

/// Tokenises `sql`. Comments and whitespace produce no tokens.
pub fn tokenize_in(sql: &str, dialect: Dialect) -> Vec<Token> {
    let mut out = Vec::with_capacity(32);
    tokenize_into(sql, dialect, &mut out);
    out
}

/// Tokenises `sql` into `out` (cleared first), reusing its allocation.
pub fn tokenize_into(sql: &str, dialect: Dialect, out: &mut Vec<Token>) {
    out.clear();
    scan(sql, dialect, |t| out.push(t));
}

/// What `key_into` noticed on its way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyFacts {
    /// A statement starts with SET, RESET or DISCARD (`session::has_session_statement`).
    pub session: bool,
    /// A literal token is in the text.
    pub literal: bool,
}

/// The cache key of `sql` (what `normalise` makes of its tokens), built in the lexer's one
/// pass with no token list: a cache hit needs nothing more.
pub fn key_into(sql: &str, dialect: Dialect, out: &mut String) -> KeyFacts {
    let mut key = KeyWriter::new(out, dialect);
    let mut facts = KeyFacts::default();
    scan(sql, dialect, |t| {
        facts.session |= key.statement_start && super::session::starts_statement(sql, &t);
        facts.literal |= t.kind == Kind::Literal;
        key.push(sql, &t);
    });
    facts
}

/// Walks `sql` as PostgreSQL reads it, handing each token to `token`. Comments and
/// whitespace produce none.
#[inline(always)]
fn scan(sql: &str, dialect: Dialect, mut token: impl FnMut(Token)) {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = memchr(b, i, b'\n');
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                continue;
            }
            b'\'' => {
                i = skip_quoted(b, i + 1, b'\'', !dialect.standard_strings);
                Kind::Literal
            }
            b'"' => {
                i = skip_quoted(b, i + 1, b'"', false);
                Kind::QuotedIdent
            }
            b'e' | b'E' if b.get(i + 1) == Some(&b'\'') => {
                i = skip_quoted(b, i + 2, b'\'', true);
                Kind::Literal
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if b.get(i + 1) == Some(&b'\'') => {
                i = skip_quoted(b, i + 2, b'\'', false);
                Kind::Literal
            }
            b'u' | b'U' if b.get(i + 1) == Some(&b'&') && matches!(b.get(i + 2), Some(b'\'' | b'"')) => {
                let q = b[i + 2];
                i = skip_quoted(b, i + 3, q, false);
                if q == b'\'' {
                    Kind::Literal
                } else {
                    Kind::QuotedIdent
                }
            }
            b'$' => match dollar_tag_end(b, i) {
                Some(tag_end) => {
                    i = skip_dollar_body(b, i, tag_end);
                    Kind::Literal
                }
                None if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    Kind::Param
                }
                None => {
                    i += 1;
                    Kind::Punct
                }
            },
            b'0'..=b'9' => {
                i = skip_number(b, i);
                Kind::Literal
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(b, i);
                Kind::Literal
            }
            b';' => {
                i += 1;
                Kind::Semicolon
            }
            c if is_ident_start(c) => {
                while i < b.len() && is_ident_cont(b[i]) {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                // One character of punctuation; keep UTF-8 boundaries intact.
                i += 1;
                while i < b.len() && !sql.is_char_boundary(i) {
                    i += 1;
                }
                Kind::Punct
            }
        };
        token(Token { kind, start, end: i });
    }
}

fn memchr(b: &[u8], from: usize, needle: u8) -> usize {
    b[from..].iter().position(|&c| c == needle).map_or(b.len(), |p| from + p)
}

/// Block comments nest in PostgreSQL.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Skips to just past the closing quote; a doubled quote is an escaped quote, and with
/// `backslash` (E'' strings) a backslash escapes the next byte.
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// If a dollar-quote opening tag (`$$` or `$tag$`) starts at `i`, returns the index just
/// past it.
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|&c| is_ident_start(c)) {
        while j < b.len() && is_ident_cont(b[j]) && b[j] != b'$' {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

fn skip_dollar_body(b: &[u8], open_start: usize, open_end: usize) -> usize {
    let tag = &b[open_start..open_end];
    let mut i = open_end;
    while i + tag.len() <= b.len() {
        if &b[i..i + tag.len()] == tag {
            return i + tag.len();
        }
        i += 1;
    }
    b.len()
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        // exponent sign: 1e-5
        if (b[i] == b'e' || b[i] == b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
            i += 1;
        }
        i += 1;
    }
    i
}

/// The statements of a string, as PostgreSQL splits it: at semicolons outside literals,
/// comments and SQL-standard function bodies (`BEGIN ATOMIC ... END`, where `CASE ... END`
/// nests too). Empty statements are dropped, as the server drops them.
pub fn statements<'t>(sql: &str, tokens: &'t [Token]) -> Vec<&'t [Token]> {
    let mut out = Vec::with_capacity(1);
    let (mut start, mut depth) = (0usize, 0usize);
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Semicolon if depth == 0 => {
                if i > start {
                    out.push(&tokens[start..i]);
                }
                start = i + 1;
            }
            // Only a CREATE FUNCTION or PROCEDURE has such a body: elsewhere `begin atomic`
            // is a column and its alias (`SELECT begin atomic FROM ...`).
            Kind::Word
                if depth == 0
                    && i > start
                    && tokens[start].is(sql, "create")
                    && t.is(sql, "begin")
                    && tokens.get(i + 1).is_some_and(|n| n.is(sql, "atomic")) =>
            {
                depth = 1;
            }
            Kind::Word if depth == 0 => {}
            Kind::Word => {
                if t.is(sql, "begin") || t.is(sql, "case") {
                    depth += 1;
                } else if t.is(sql, "end") {
                    depth -= 1;
                }
            }
            _ => {}
        }
    }
    if tokens.len() > start {
        out.push(&tokens[start..]);
    }
    out
}

/// The cache key: tokens separated by single spaces, unquoted words lower-cased, literals
/// replaced by `?`. Two statements with the same key have the same class, so literals that
/// can change the class are kept: those of an EXPLAIN (`EXPLAIN (ANALYZE 1) DELETE ...`
/// runs the DELETE, `ANALYZE 0` does not). Text read with backslash escapes gets its own
/// keys.
/// (The reference `key_into` is checked against: the key of a token list.)
#[cfg(test)]
pub fn normalise(sql: &str, tokens: &[Token], dialect: Dialect, out: &mut String) {
    let mut key = KeyWriter::new(out, dialect);
    for t in tokens {
        key.push(sql, t);
    }
}

/// Appends tokens to a cache key, as `normalise` describes.
struct KeyWriter<'a> {
    out: &'a mut String,
    keep_literals: bool,
    /// The next token starts a statement.
    statement_start: bool,
}

impl<'a> KeyWriter<'a> {
    fn new(out: &'a mut String, dialect: Dialect) -> Self {
        out.clear();
        if !dialect.standard_strings {
            out.push('\\');
        }
        KeyWriter { out, keep_literals: false, statement_start: true }
    }

    fn push(&mut self, sql: &str, t: &Token) {
        if self.statement_start {
            self.keep_literals = t.is(sql, "explain");
        }
        self.statement_start = t.kind == Kind::Semicolon;
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        match t.kind {
            Kind::Literal if !self.keep_literals => self.out.push('?'),
            Kind::Word => {
                // Appended, then lower-cased in place: ASCII letters only, at a fraction of
                // the instructions of pushing char by char.
                let start = self.out.len();
                self.out.push_str(t.text(sql));
                self.out[start..].make_ascii_lowercase();
            }
            _ => self.out.push_str(t.text(sql)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        tokenize(sql).iter().map(|t| (t.kind, t.text(sql))).collect()
    }

    #[test]
    fn comments_strings_and_dollar_quotes_hide_their_contents() {
        let sql = "select 'up;date' -- delete\n, $x$ insert; $x$ /* a /* nested */ update */ , e'\\';', \"Drop\"";
        let k = kinds(sql);
        assert_eq!(
            k,
            vec![
                (Kind::Word, "select"),
                (Kind::Literal, "'up;date'"),
                (Kind::Punct, ","),
                (Kind::Literal, "$x$ insert; $x$"),
                (Kind::Punct, ","),
                (Kind::Literal, "e'\\';'"),
                (Kind::Punct, ","),
                (Kind::QuotedIdent, "\"Drop\""),
            ]
        );
    }

    #[test]
    fn params_numbers_and_unterminated_input() {
        assert_eq!(kinds("$1+1.5e-3"), vec![(Kind::Param, "$1"), (Kind::Punct, "+"), (Kind::Literal, "1.5e-3")]);
        assert_eq!(kinds("select 'open"), vec![(Kind::Word, "select"), (Kind::Literal, "'open")]);
        assert_eq!(kinds("/* open"), vec![]);
        assert_eq!(kinds("a$b"), vec![(Kind::Word, "a$b")]);
    }

    #[test]
    fn normalised_text_ignores_literals_case_and_spacing() {
        let mut a = String::new();
        let mut b = String::new();
        let s1 = "SELECT abalance FROM pgbench_accounts WHERE aid = 42;";
        let s2 = "select  abalance\n from pgbench_accounts where aid=1234 ;";
        normalise(s1, &tokenize(s1), Dialect::default(), &mut a);
        normalise(s2, &tokenize(s2), Dialect::default(), &mut b);
        assert_eq!(a, b);
        assert_eq!(a, "select abalance from pgbench_accounts where aid = ? ;");
    }

    /// The one-pass key is the key of the token list, and its facts are what the tokens
    /// say, for texts built from pieces of every kind the lexer knows (quotes, dollar
    /// quotes, comments, `U&`, `E''`, semicolons, SET/RESET/DISCARD, EXPLAIN, non-ASCII),
    /// in both dialects.
    #[test]
    fn the_one_pass_key_is_the_key_of_the_tokens() {
        let pieces = [
            "SELECT",
            "select",
            "SeT",
            "reset",
            "DISCARD",
            "explain",
            "(analyze 1)",
            "UPDATE",
            "t",
            "\"Tab\"",
            "U&\"d\\0061ta\"",
            "U&'x'",
            "E'a\\'b'",
            "'it''s'",
            "'\\'",
            "x'1f'",
            "B'01'",
            "N'n'",
            "$$a;b$$",
            "$tag$ x $tag$",
            "$1",
            "$",
            "42",
            "4.2e-3",
            ".5",
            "1_000",
            "--c\n",
            "/* a /* b */ c */",
            ";",
            ";;",
            ",",
            "=",
            "::",
            "(",
            ")",
            "é",
            "größe",
            " ",
            "\n",
            "\t",
            "\"",
            "'",
            "/*",
            "-",
            "e",
            "U&",
            "atomic",
            "begin",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut tokens, mut want, mut got) = (Vec::new(), String::new(), String::new());
        for _ in 0..20_000 {
            let n = 1 + next() % 12;
            let mut sql = String::new();
            for _ in 0..n {
                sql.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                if next() % 3 > 0 {
                    sql.push(' ');
                }
            }
            for dialect in [Dialect::default(), Dialect { standard_strings: false }] {
                tokenize_into(&sql, dialect, &mut tokens);
                normalise(&sql, &tokens, dialect, &mut want);
                let facts = key_into(&sql, dialect, &mut got);
                assert_eq!(got, want, "{sql:?} {dialect:?}");
                let literal = tokens.iter().any(|t| t.kind == Kind::Literal);
                let session = super::super::session::has_session_statement(&sql, &tokens);
                assert_eq!(facts, KeyFacts { session, literal }, "{sql:?} {dialect:?}");
            }
        }
    }

    #[test]
    fn the_identifier_table_is_the_predicates() {
        for c in 0..=255u8 {
            assert_eq!((is_ident_start(c), is_ident_cont(c)), (ident_start(c), ident_cont(c)), "{c}");
        }
    }
}
