//! SQL classification: what a statement is, as far as routing cares.
//!
//! `Classifier::classify` turns SQL text into a [`Class`]: may it run on a replica
//! (`Access::Read`) or must it run on the primary (`Access::Write`), why, and what it does
//! to the session (opens a transaction, changes a setting, pins the session).
//!
//! Flow: the lexer tokenises the text (cheap, never fails) and splits statements. Session
//! statements (`SET`, `RESET`, `DISCARD`) are classified from their raw text and never
//! cached, because their literal values matter. Everything else is looked up in a bounded
//! cache keyed by the normalised text (literals replaced by `?`), so pgbench's
//! literal-varying queries hit it. On a miss, each statement is classified by keyword; a
//! query (`SELECT`, `WITH`, `VALUES`, `TABLE`, `EXPLAIN`) that contains anything that could
//! make it a write is parsed with sqlparser and its AST walked.
//!
//! Invariant: anything not certainly a read is `Access::Write`. A statement sqlparser
//! cannot parse is a write with reason `parse_error`; nothing is ever inherited from a
//! previous statement.

mod ast;
mod cache;
mod hint;
mod lexer;
mod refs;
mod session;
mod statement;
impl crate::metrics::CacheStats for Classifier {
    fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }
}

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cache::{Cache, Exact};
pub use hint::{hint, may_hint, parse_token, route_hint, After, Hint};
pub use lexer::Dialect;
pub use refs::QName;
pub use session::SettingChange;

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Certainly does not write: a replica may run it.
    Read,
    /// Writes, or might: primary only.
    Write,
}

/// A statement's classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub access: Access,
    /// Why, for logs and metrics: `read`, `write:update`, `write:function nextval`, ...
    pub reason: String,
    /// `BEGIN`/`START TRANSACTION`: `Some(read_only)`.
    pub begins: Option<bool>,
    /// The statement leaves state on the server that cannot be moved to another
    /// connection (LISTEN, temp tables, session advisory locks, ...): pin the session to
    /// the primary. Holds the reason.
    pub pins: Option<String>,
    /// One entry per statement of the text, in order: what each does to the session,
    /// settled when the server says how that statement ended.
    pub steps: Vec<Step>,
    /// Committing it changes data others could read (read-your-writes makes the session
    /// causal): true for writes, false for reads and for primary-only statements that
    /// change no data (BEGIN, LISTEN/UNLISTEN, CLOSE, pins, advisory unlocks).
    pub writes_data: bool,
    /// Names the text mentions that may be relations (for table rules).
    pub relations: Vec<QName>,
    /// Functions the text calls (for function rules and volatility checks).
    pub functions: Vec<QName>,
    /// Names SQL-level prepared statements (`DEALLOCATE`, `EXECUTE`) or runs dynamic SQL
    /// (`DO`): it could drop or run pgroute's own statements on that server connection,
    /// which is then closed rather than pooled.
    pub touches_statements: bool,
}

impl Class {
    pub fn read(reason: &str) -> Self {
        Class {
            access: Access::Read,
            reason: reason.to_string(),
            begins: None,
            pins: None,
            steps: Vec::new(),
            relations: Vec::new(),
            functions: Vec::new(),
            writes_data: false,
            touches_statements: false,
        }
    }

    pub fn write(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let writes_data = !NO_DATA_WRITTEN.iter().any(|p| reason.starts_with(p));
        Class { access: Access::Write, reason, writes_data, ..Class::read("") }
    }

    fn pinning(reason: &str) -> Self {
        Class { pins: Some(reason.to_string()), ..Class::write(format!("pin:{reason}")) }
    }

    pub fn is_write(&self) -> bool {
        self.access == Access::Write
    }

    /// Folds the next statement of a multi-statement string into this class: the string
    /// may go to a replica only if every statement may.
    fn merge(&mut self, next: Class) {
        if next.access > self.access {
            self.access = next.access;
            self.reason = next.reason;
        }
        self.begins = self.begins.or(next.begins);
        if self.pins.is_none() {
            self.pins = next.pins;
        }
        self.steps.extend(next.steps);
        self.writes_data |= next.writes_data;
        self.touches_statements |= next.touches_statements;
    }

    /// Every session setting change of the text, in order.
    pub fn settings(&self) -> impl Iterator<Item = &SettingChange> {
        self.steps.iter().flat_map(|s| s.settings.iter())
    }

    /// The same statements, routed to the primary because they call `f`, a function that
    /// is volatile or whose volatility is unknown. The session and `pgroute explain` give
    /// the same reason.
    pub fn into_volatile_write(self, f: &QName) -> Class {
        self.into_write(format!("write:function {} (volatile)", f.display()))
    }

    /// The same statements, routed as a write for `reason` (a volatile function, a
    /// declared write function): every statement counts as writing data.
    pub fn into_write(self, reason: impl Into<String>) -> Class {
        let steps = self.steps.into_iter().map(|s| Step { writes_data: true, ..s }).collect();
        Class { steps, writes_data: true, touches_statements: self.touches_statements, ..Class::write(reason) }
    }
}

/// What one statement does to the session once it has run: transaction control, settings
/// changed, data written. The session applies it only when the server reports how the
/// statement and its transaction ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub tx: TxOp,
    pub settings: Vec<SettingChange>,
    pub writes_data: bool,
}

/// Transaction control, as far as settings and commits care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TxOp {
    #[default]
    None,
    /// BEGIN / START TRANSACTION.
    Begin,
    /// COMMIT / END (the server's tag says whether it committed or rolled back).
    /// `chain`: AND CHAIN opens the next block at once.
    Commit {
        chain: bool,
    },
    /// ROLLBACK / ABORT.
    Rollback {
        chain: bool,
    },
    /// PREPARE TRANSACTION: the block ends; its settings stay, as at a commit.
    Prepare,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
}

/// Reasons that can be metric labels as they are: they come from pgroute's own code,
/// never from client text.
const LABELS: &[&str] = &[
    "read",
    "read:show",
    "empty",
    "protocol",
    "begin read only",
    "transaction_control",
    "session:set",
    "session:set local",
    "session:reset",
    "session:discard",
    "malformed",
    "write:encoding",
    "write:parse_error",
    "write:insert",
    "write:update",
    "write:delete",
    "write:merge",
    "write:copy from",
    "write:copy to file",
    "write:create",
    "write:alter",
    "write:drop",
    "write:truncate",
    "write:grant",
    "write:revoke",
    "write:call",
    "write:do",
    "write:lock",
    "write:vacuum",
    "write:analyze",
    "write:cluster",
    "write:reindex",
    "write:refresh",
    "write:comment",
    "write:notify",
    "write:begin",
    "write:begin serializable",
    "write:close",
    "write:fetch",
    "write:move",
    "write:deallocate",
    "write:unlisten",
    "write:set",
    "write:reset",
    "write:prepare transaction",
    "write:commit prepared",
    "write:rollback prepared",
    "write:checkpoint",
    "write:security",
    "write:import",
    "write:execute",
    "write:select into",
    "write:data-modifying cte",
    "write:select for update",
    "write:select for no key update",
    "write:select for share",
    "write:select for key share",
    "write:function call",
    "write:unknown portal",
    "pin:listen",
    "pin:sql prepare",
    "pin:create temp",
    "pin:declare with hold",
    "pin:set role",
];

/// A classification reason as a metric label, from a fixed set: reasons that name a
/// function or repeat a client's first word are folded (`write:function`,
/// `write:other`), so clients cannot create time series. Logs keep the whole reason.
pub fn reason_label(reason: &str) -> &'static str {
    if let Some(l) = LABELS.iter().find(|l| **l == reason) {
        return l;
    }
    let folded = [
        ("write:explain analyze", "write:explain analyze"),
        ("write:function", "write:function"),
        ("pin:function", "pin:function"),
        ("write:", "write:other"),
        ("pin:", "pin:other"),
    ];
    folded.iter().find(|(prefix, _)| reason.starts_with(prefix)).map_or("other", |(_, l)| l)
}

/// Primary-only statements that change no data others could read.
const NO_DATA_WRITTEN: &[&str] = &[
    "pin:",
    "write:begin",
    "write:begin serializable",
    "write:close",
    "write:unlisten",
    "write:fetch",
    "write:move",
    "write:deallocate",
    "write:function pg_advisory_unlock",
];

/// The classifier: stateless apart from its cache; shared by all sessions.
pub struct Classifier {
    cache: Cache,
    /// Functions the configuration declares as writes, on top of the built-in list.
    write_functions: std::sync::RwLock<Vec<QName>>,
}

impl Classifier {
    pub fn new(cache_size: usize) -> Self {
        Self::with_write_functions(cache_size, &[])
    }

    pub fn with_write_functions(cache_size: usize, write_functions: &[String]) -> Self {
        let write_functions = write_functions.iter().map(|f| QName::parse(f)).collect();
        Classifier { cache: Cache::new(cache_size), write_functions: std::sync::RwLock::new(write_functions) }
    }

    /// A configuration reload: new declared write functions, and every cached
    /// classification forgotten.
    pub fn reconfigure(&self, write_functions: &[String]) {
        let parsed = write_functions.iter().map(|f| QName::parse(f)).collect();
        *self.write_functions.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        self.cache.clear();
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Classifies one simple-protocol query string or one extended-protocol Parse, as
    /// PostgreSQL reads it by default (`standard_conforming_strings = on`).
    pub fn classify(&self, sql: &str) -> Arc<Class> {
        self.classify_in(sql, Dialect::default())
    }

    /// Byte offsets just past each statement of `sql` (past its semicolon, if it has one),
    /// as `classify_in` splits them: `steps[i]` ends at `statement_ends(..)[i]`.
    pub fn statement_ends(sql: &str, dialect: Dialect) -> Vec<usize> {
        let tokens = lexer::tokenize_in(sql, dialect);
        let statements = lexer::statements(sql, &tokens);
        // One cursor over the tokens for all statements: linear in the text.
        let mut cursor = 0;
        statements
            .iter()
            .map(|stmt| {
                let last = stmt.last().map_or(0, |t| t.end);
                while tokens.get(cursor).is_some_and(|t| t.start < last) {
                    cursor += 1;
                }
                // The semicolon that ends it, when there is one.
                match tokens.get(cursor) {
                    Some(t) if t.kind == lexer::Kind::Semicolon => t.end,
                    _ => last,
                }
            })
            .collect()
    }

    /// The prepared statement a text deallocates when it is exactly one
    /// `DEALLOCATE [PREPARE] name` (the name folded as PostgreSQL folds it); `None` for
    /// `DEALLOCATE ALL` and anything else.
    pub fn deallocates(sql: &str, dialect: Dialect) -> Option<String> {
        let tokens = lexer::tokenize_in(sql, dialect);
        match lexer::statements(sql, &tokens).as_slice() {
            [one] => statement::deallocates(sql, one),
            _ => None,
        }
    }

    /// Is `sql` exactly one statement that behaves differently inside a transaction block
    /// than alone (`statement::block_sensitive`)?
    pub fn block_sensitive(sql: &str, dialect: Dialect) -> bool {
        let tokens = lexer::tokenize_in(sql, dialect);
        match lexer::statements(sql, &tokens).as_slice() {
            [one] => statement::block_sensitive(sql, one),
            _ => false,
        }
    }

    /// The class of an extended-protocol Parse body that drivers and ORMs send again and
    /// again unchanged, found by its exact bytes (no decoding, no lexing), if known. Only
    /// the default dialect's reading is kept.
    pub fn parse_hit(&self, exact: Exact<'_>, dialect: Dialect) -> Option<Arc<Class>> {
        (dialect == Dialect::default()).then(|| self.cache.get_exact(exact)).flatten()
    }

    /// As `classify_in`, for `sql`, the decoded text of the Parse body `exact` (after a
    /// `parse_hit` miss): parameterised text (no literal) is kept for the next `parse_hit`.
    pub fn classify_parse(&self, exact: Exact<'_>, sql: &str, dialect: Dialect) -> Arc<Class> {
        let (class, parameterised) = self.classify_scratch(sql, dialect);
        if dialect == Dialect::default() && parameterised {
            self.cache.insert_exact(exact, class.clone());
        }
        class
    }

    /// Classifies text as a session with these lexical settings reads it.
    pub fn classify_in(&self, sql: &str, dialect: Dialect) -> Arc<Class> {
        self.classify_scratch(sql, dialect).0
    }

    /// The class, and whether the text went through the cache with no literal in it.
    fn classify_scratch(&self, sql: &str, dialect: Dialect) -> (Arc<Class>, bool) {
        // A cache hit allocates nothing: the tokens and the normalised key are built in
        // this thread's scratch buffers (fresh ones if a classification is already using
        // them further up the stack).
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let (tokens, key) = &mut *scratch;
                let class = self.classify_with(sql, dialect, tokens, key);
                if key.capacity() > MAX_SCRATCH {
                    *tokens = Vec::new();
                    *key = String::new();
                }
                class
            }
            Err(_) => self.classify_with(sql, dialect, &mut Vec::new(), &mut String::new()),
        })
    }

    fn classify_with(
        &self,
        sql: &str,
        dialect: Dialect,
        tokens: &mut Vec<lexer::Token>,
        key: &mut String,
    ) -> (Arc<Class>, bool) {
        // The key first, in one pass: a hit needs no token list.
        let facts = lexer::key_into(sql, dialect, key);
        let parameterised = !facts.literal;
        if !facts.session {
            if let Some(hit) = self.cache.get(key) {
                return (hit, parameterised);
            }
        }
        lexer::tokenize_into(sql, dialect, tokens);
        if facts.session {
            return (Arc::new(self.classify_uncached(sql, tokens)), false);
        }
        let class = Arc::new(self.classify_uncached(sql, tokens));
        self.cache.insert(key.clone(), class.clone());
        (class, parameterised)
    }

    fn classify_uncached(&self, sql: &str, tokens: &[lexer::Token]) -> Class {
        let mut class = classify_statements(sql, tokens);
        let (relations, functions) = refs::references(sql, tokens);
        class = with_function_effects(class, &functions);
        if !class.is_write() {
            let declared_writes = self.write_functions.read().unwrap_or_else(|p| p.into_inner());
            let declared = functions.iter().find(|f| declared_writes.iter().any(|w| f.matches(w)));
            if let Some(f) = declared {
                class = class.into_write(format!("write:function {}", f.display()));
            }
        }
        class.relations = relations;
        class.functions = functions;
        class
    }
}

/// The built-in functions a text calls, in whatever spelling it names them (quoted,
/// schema-qualified, `U&` escapes: `refs` resolves them as PostgreSQL does), that write,
/// lock or leave session state: the statements go to the primary, and pin the session
/// where the effect outlives the transaction. The AST walk sees unquoted names too; this
/// is the check no spelling gets around.
fn with_function_effects(mut class: Class, functions: &[QName]) -> Class {
    let builtin = |f: &&QName| f.schema.as_deref().is_none_or(|s| s == "pg_catalog");
    for effect in functions.iter().filter(builtin).filter_map(|f| statement::function_effect(&f.name)) {
        if class.pins.is_none() {
            class.pins = effect.pins.clone();
        }
        if !class.is_write() {
            let pins = class.pins.take();
            let steps = std::mem::take(&mut class.steps);
            let writes = effect.writes_data;
            let steps = steps.into_iter().map(|s| Step { writes_data: s.writes_data || writes, ..s }).collect();
            class = Class { steps, pins, begins: class.begins, touches_statements: class.touches_statements, ..effect };
        }
    }
    class
}

/// Scratch buffers beyond this size (bytes of statement text) are not kept between
/// statements.
const MAX_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Token and normalised-key buffers reused by `classify_in`.
    static SCRATCH: std::cell::RefCell<(Vec<lexer::Token>, String)> = const {
        std::cell::RefCell::new((Vec::new(), String::new()))
    };
}

fn classify_statements(sql: &str, tokens: &[lexer::Token]) -> Class {
    let mut combined: Option<Class> = None;
    for stmt in lexer::statements(sql, tokens) {
        let mut class = statement::classify(sql, stmt);
        // Session statements carry their settings in a step already.
        let step = class.steps.pop().unwrap_or_default();
        class.steps = vec![Step { tx: statement::tx_op(sql, stmt), writes_data: class.writes_data, ..step }];
        match combined.as_mut() {
            None => combined = Some(class),
            Some(c) => c.merge(class),
        }
    }
    combined.unwrap_or_else(|| Class::read("empty"))
}
