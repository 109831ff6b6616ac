//! Routing hints in a comment at the start or end of a statement:
//! `/* pgroute: route=primary */` or `/* pgroute: route=replica */`. A hint only ever
//! chooses among places a read may go; it can never send a write to a replica.

use crate::config::{CausalScope, Target};

/// A statement's `pgroute:` hint: a route for reads, and tagged keys
/// (`key=wallet:42,wallet:43`) for read-your-writes across connections.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hint {
    pub route: Option<Target>,
    pub keys: Vec<String>,
    /// `after=<timeline>/<lsn>`: a causal token (`pgroute.commit_lsn` from any
    /// connection, through any pgroute): only a node that has that commit.
    pub after: Option<After>,
    /// `scope=none|session|instance|cluster`: which acknowledged commits the read must
    /// see, over any rule's and the configured default.
    pub scope: Option<CausalScope>,
    /// `max_lag=`, `group=`, `fallback=`: rare, so boxed (a session holds its hint across
    /// awaits, and a client's task must stay small).
    pub narrow: Option<Box<Narrow>>,
}

/// What narrows the replicas a hinted read may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrow {
    /// `max_lag=200ms`: only replicas at most this far behind (or the primary).
    pub max_lag: Option<std::time::Duration>,
    /// `group=analytics`: only the replicas of that node group (empty: none given).
    pub group: String,
    /// `fallback=default|primary|error`: with `group`, when none of its replicas can.
    pub fallback: Option<crate::config::Fallback>,
}

impl Hint {
    pub fn max_lag(&self) -> Option<std::time::Duration> {
        self.narrow.as_ref().and_then(|n| n.max_lag)
    }

    /// The node group named, with its fallback.
    pub fn group(&self) -> Option<(&str, Option<crate::config::Fallback>)> {
        self.narrow.as_ref().filter(|n| !n.group.is_empty()).map(|n| (n.group.as_str(), n.fallback))
    }

    fn narrow(&mut self) -> &mut Narrow {
        self.narrow.get_or_insert_with(Box::default)
    }
}

/// A causal token as a hint gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    At {
        timeline: u32,
        lsn: u64,
    },
    /// Not a token: unsure, so the read goes to the primary.
    Malformed,
}

/// `<timeline>/<lsn in hex>`, as pgroute reports it.
pub fn parse_token(text: &str) -> After {
    let parsed = text.split_once('/').and_then(|(tl, lsn)| {
        let timeline = tl.parse().ok()?;
        let lsn = u64::from_str_radix(lsn, 16).ok()?;
        Some(After::At { timeline, lsn })
    });
    parsed.unwrap_or(After::Malformed)
}

/// Longest tagged key kept as written; longer ones are kept as a keyed hash of fixed size.
const MAX_KEY: usize = 64;

/// A tagged key as the shared key map holds it. Clients choose keys: one longer than
/// `MAX_KEY` bytes becomes `#<hash>` (random keys per process), so the map's memory is
/// bounded by its capacity. Two keys sharing a hash only make reads wait for more.
fn key(k: &str) -> String {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    if k.len() <= MAX_KEY {
        return k.to_string();
    }
    format!("#{:016x}", KEYS.get_or_init(Default::default).hash_one(k))
}

/// Finds a `pgroute:` hint; unknown keys are ignored with a debug log.
/// Whether text may hold a hint: its bytes, in any client encoding (the mark is ASCII, and
/// ASCII characters come only from ASCII bytes), name the mark. Every statement is searched:
/// a prebuilt finder, not `str::contains` (which sets up a searcher per call).
pub fn may_hint(bytes: &[u8]) -> bool {
    static MARK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("pgroute:"));
    MARK.find(bytes).is_some()
}

pub fn hint(sql: &str) -> Hint {
    let mut out = Hint::default();
    if !may_hint(sql.as_bytes()) {
        return out;
    }
    let lead = sql.trim_start();
    let tail = sql.trim_end().trim_end_matches(';').trim_end();
    let first = lead.strip_prefix("/*").and_then(|r| r.find("*/").map(|e| &r[..e]));
    let last = tail.strip_suffix("*/").and_then(|r| r.rfind("/*").map(|s| &r[s + 2..]));
    for body in [first, last].into_iter().flatten() {
        let Some(hint) = body.trim().strip_prefix("pgroute:") else {
            continue;
        };
        // Pairs are separated by spaces or commas; a bare word after `key=` is one more key.
        let mut in_keys = false;
        for part in hint.split([',', ' ', '\t', '\n']).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("route", "primary")) => (out.route, in_keys) = (Some(Target::Primary), false),
                Some(("route", "replica")) => (out.route, in_keys) = (Some(Target::Replica), false),
                Some(("key", k)) if !k.is_empty() => {
                    out.keys.push(key(k));
                    in_keys = true;
                }
                Some(("after", v)) => (out.after, in_keys) = (Some(parse_token(v)), false),
                Some(("scope", v)) if CausalScope::parse(v).is_some() => {
                    (out.scope, in_keys) = (CausalScope::parse(v), false)
                }
                Some(("group", g)) if !g.is_empty() => (out.narrow().group, in_keys) = (g.to_string(), false),
                Some(("fallback", f)) if crate::config::Fallback::parse(f).is_some() => {
                    (out.narrow().fallback, in_keys) = (crate::config::Fallback::parse(f), false)
                }
                Some(("max_lag", v)) => match crate::config::parse_duration(v) {
                    Ok(d) => (out.narrow().max_lag, in_keys) = (Some(d), false),
                    Err(e) => tracing::debug!(hint = part, error = %e, "invalid max_lag hint ignored"),
                },
                None if in_keys => out.keys.push(key(part)),
                _ => {
                    in_keys = false;
                    tracing::debug!(hint = part, "unknown pgroute hint ignored");
                }
            }
        }
    }
    out
}

/// The route a hint asks for, if any.
pub fn route_hint(sql: &str) -> Option<Target> {
    hint(sql).route
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_tokens_are_read_and_a_bad_one_is_not_ignored() {
        let at = |timeline, lsn| Some(After::At { timeline, lsn });
        assert_eq!(hint("/* pgroute: after=1/3000A28 */ SELECT 1").after, at(1, 0x3000A28));
        assert_eq!(hint("SELECT 1 /* pgroute: key=w:1, after=3/100000000 */").after, at(3, 0x1_0000_0000));
        assert_eq!(hint("SELECT 1 /* pgroute: key=w:1 after=2/0 */").keys, vec!["w:1".to_string()]);
        for bad in ["", "1", "x/1", "1/xyz", "1/", "-1/5"] {
            assert_eq!(hint(&format!("/* pgroute: after={bad} */ SELECT 1")).after, Some(After::Malformed), "{bad}");
        }
        assert_eq!(hint("SELECT 1").after, None);
    }

    #[test]
    fn hints_at_start_or_end_only() {
        assert_eq!(route_hint("/* pgroute: route=primary */ SELECT 1"), Some(Target::Primary));
        assert_eq!(route_hint("SELECT 1 /* pgroute: route=replica */"), Some(Target::Replica));
        assert_eq!(route_hint("  /*pgroute:route=replica,foo=bar*/SELECT 1;"), Some(Target::Replica));
        assert_eq!(route_hint("SELECT '/* pgroute: route=replica */', 1"), None);
        assert_eq!(route_hint("SELECT 1 /* pgroute: colour=blue */"), None);
        assert_eq!(route_hint("SELECT 1 /* pgroute: route=primary */ ;"), Some(Target::Primary));
        assert_eq!(route_hint("SELECT 1"), None);
    }

    #[test]
    fn tagged_keys() {
        let h = hint("/* pgroute: key=wallet:42,wallet:43 route=primary */ SELECT 1");
        assert_eq!(h.keys, vec!["wallet:42".to_string(), "wallet:43".to_string()]);
        assert_eq!(h.route, Some(Target::Primary));
        assert_eq!(hint("UPDATE w SET b = 1 /* pgroute: key=w:1 */").keys, vec!["w:1".to_string()]);
        assert!(hint("SELECT 1 /* pgroute: key= */").keys.is_empty());
        let long = "w".repeat(100_000);
        let keys = hint(&format!("SELECT 1 /* pgroute: key={long} */")).keys;
        assert_eq!(keys, hint(&format!("UPDATE t SET a = 1 /* pgroute: key={long} */")).keys, "the same key both ways");
        assert!(keys[0].len() <= MAX_KEY, "kept at a bounded size");
        assert_eq!(
            hint("SELECT 1 /* pgroute: max_lag=200ms */").max_lag(),
            Some(std::time::Duration::from_millis(200))
        );
        assert_eq!(hint("SELECT 1 /* pgroute: max_lag=soon */").max_lag(), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(hint("/* pgroute: scope=none */ SELECT 1").scope, Some(CausalScope::None));
        assert_eq!(hint("SELECT 1 /* pgroute: key=w:1 scope=cluster */").scope, Some(CausalScope::Cluster));
        assert_eq!(hint("SELECT 1 /* pgroute: key=w:1 scope=cluster */").keys, vec!["w:1".to_string()]);
        assert_eq!(hint("SELECT 1 /* pgroute: scope=everything */").scope, None, "unknown: the default stands");
    }
}
