//! Function volatility, looked up in the primary's catalog once per function name and
//! cached for `[routing] function_cache_ttl`. A function whose volatility is `v` may write
//! (a plpgsql function that INSERTs looks like any other call; built-in ones cancel
//! backends, reload configuration, write files), so a read that calls one goes to the
//! primary unless the DBA lists it as read-only (or it is one of `HARMLESS_VOLATILE`).
//! A lookup that cannot be made counts as volatile: fail closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::classify::QName;
use crate::rules::NODE_LOCAL_FUNCTIONS;

/// Function names remembered at most.
const MAX_FUNCTIONS: usize = 4096;
/// PostgreSQL's longest identifier, in bytes.
const MAX_NAME: usize = 63;

pub struct FunctionCatalog {
    /// The TTL in nanoseconds (a reload changes it).
    ttl: AtomicU64,
    /// name -> (may write, when looked up)
    entries: DashMap<QName, (bool, Instant)>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl FunctionCatalog {
    pub fn new(ttl: Duration) -> Self {
        let c = FunctionCatalog { ttl: AtomicU64::new(0), entries: DashMap::new() };
        c.set_ttl(ttl);
        c
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl.store(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `Some(true)`: a volatile user function (treat as a write); `None`: not known now.
    pub fn cached(&self, f: &QName, now: Instant) -> Option<bool> {
        let ttl = Duration::from_nanos(self.ttl.load(Ordering::Relaxed));
        self.entries.get(f).filter(|e| now.duration_since(e.1) < ttl).map(|e| e.0)
    }

    /// Remembers a lookup. Clients choose the names: a full cache starts over rather than
    /// grow, and a name longer than PostgreSQL keeps (`NAMEDATALEN - 1` bytes) is never
    /// stored (`cached` answers `None` and the caller treats it as a write).
    pub fn store(&self, f: &QName, may_write: bool, now: Instant) {
        if !Self::storable(f) {
            return;
        }
        if self.entries.len() >= MAX_FUNCTIONS {
            self.entries.clear();
        }
        self.entries.insert(f.clone(), (may_write, now));
    }

    /// Names PostgreSQL would keep as they are (it truncates longer identifiers).
    pub fn storable(f: &QName) -> bool {
        f.name.len() <= MAX_NAME && f.schema.as_ref().is_none_or(|s| s.len() <= MAX_NAME)
    }

    pub fn clear(&self) {
        self.entries.clear();
    }

    /// The catalog query: `true` when any function of that name is volatile (outside
    /// `pg_catalog`, or a built-in one not in `HARMLESS_VOLATILE`), or when there is no
    /// such function at all (unknown means primary). Built-in volatile functions change
    /// state (`pg_cancel_backend`, `pg_reload_conf`, `lo_export`, `pg_stat_reset`, ...)
    /// unless known otherwise: the server's own catalog says which are volatile, not a
    /// list pgroute keeps.
    pub fn lookup_sql(f: &QName) -> String {
        let schema = match &f.schema {
            Some(s) => format!(" AND n.nspname = {}", literal(s)),
            None => String::new(),
        };
        let harmless = HARMLESS_VOLATILE.iter().chain(NODE_LOCAL_FUNCTIONS).map(|h| literal(h)).collect::<Vec<_>>();
        let harmless = harmless.join(",");
        format!(
            "SELECT coalesce(bool_or(p.provolatile = 'v' \
             AND NOT (n.nspname = 'pg_catalog' AND p.proname IN ({harmless}))), true)::text \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.proname = {}{schema}",
            literal(&f.name)
        )
    }
}

/// Built-in functions the catalog calls volatile that change nothing and keep no
/// session state: a replica answers them as the primary would (and the node-local ones,
/// `rules::NODE_LOCAL_FUNCTIONS`, as that node would: the rules place those).
pub const HARMLESS_VOLATILE: &[&str] =
    &["random", "clock_timestamp", "timeofday", "gen_random_uuid", "pg_sleep", "pg_sleep_for", "pg_sleep_until"];

/// Is `name` a built-in volatile function that changes nothing?
pub fn harmless_volatile(name: &str) -> bool {
    HARMLESS_VOLATILE.contains(&name) || NODE_LOCAL_FUNCTIONS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_lookups_quote_names() {
        let c = FunctionCatalog::new(Duration::from_secs(10));
        let f = QName::parse("credit");
        let t0 = Instant::now();
        assert_eq!(c.cached(&f, t0), None);
        c.store(&f, true, t0);
        assert_eq!(c.cached(&f, t0 + Duration::from_secs(5)), Some(true));
        assert_eq!(c.cached(&f, t0 + Duration::from_secs(11)), None);
        let long = QName::parse(&"f".repeat(64));
        c.store(&long, false, t0);
        assert_eq!(c.cached(&long, t0), None, "names PostgreSQL truncates are not kept");
        for i in 0..MAX_FUNCTIONS + 10 {
            c.store(&QName::parse(&format!("f{i}")), false, t0);
        }
        assert!(c.entries.len() <= MAX_FUNCTIONS);
        let sql = FunctionCatalog::lookup_sql(&QName::parse("s.o'brien"));
        assert!(sql.contains("p.proname = 'o''brien' AND n.nspname = 's'"), "{sql}");
    }
}
