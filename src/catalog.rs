//! Function volatility, looked up in the primary's catalog once per function name and
//! cached for `[routing] function_cache_ttl`. A function outside `pg_catalog` whose
//! volatility is `v` may write (a plpgsql function that INSERTs looks like any other call),
//! so a read that calls one goes to the primary unless the DBA lists it as read-only.
//! A lookup that cannot be made counts as volatile: fail closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::classify::QName;

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

    pub fn store(&self, f: &QName, may_write: bool, now: Instant) {
        self.entries.insert(f.clone(), (may_write, now));
    }

    pub fn clear(&self) {
        self.entries.clear();
    }

    /// The catalog query: `true` when any function of that name outside pg_catalog is
    /// volatile, or when there is no such function at all (unknown means primary).
    pub fn lookup_sql(f: &QName) -> String {
        let schema = match &f.schema {
            Some(s) => format!(" AND n.nspname = {}", literal(s)),
            None => String::new(),
        };
        format!(
            "SELECT coalesce(bool_or(n.nspname <> 'pg_catalog' AND p.provolatile = 'v'), true)::text \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.proname = {}{schema}",
            literal(&f.name)
        )
    }
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
        let sql = FunctionCatalog::lookup_sql(&QName::parse("s.o'brien"));
        assert!(sql.contains("p.proname = 'o''brien' AND n.nspname = 's'"), "{sql}");
    }
}
