//! Routing hints in a comment at the start or end of a statement:
//! `/* pgroute: route=primary */` or `/* pgroute: route=replica */`. A hint only ever
//! chooses among places a read may go; it can never send a write to a replica.

use crate::config::Target;

/// Finds a `pgroute:` hint; unknown keys are ignored with a debug log.
pub fn route_hint(sql: &str) -> Option<Target> {
    if !sql.contains("pgroute:") {
        return None;
    }
    let lead = sql.trim_start();
    let tail = sql.trim_end().trim_end_matches(';').trim_end();
    let first = lead.strip_prefix("/*").and_then(|r| r.find("*/").map(|e| &r[..e]));
    let last = tail.strip_suffix("*/").and_then(|r| r.rfind("/*").map(|s| &r[s + 2..]));
    let mut route = None;
    for body in [first, last].into_iter().flatten() {
        let Some(hint) = body.trim().strip_prefix("pgroute:") else {
            continue;
        };
        for pair in hint.split([',', ' ', '\t', '\n']).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("route", "primary")) => route = Some(Target::Primary),
                Some(("route", "replica")) => route = Some(Target::Replica),
                _ => tracing::debug!(hint = pair, "unknown pgroute hint ignored"),
            }
        }
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
