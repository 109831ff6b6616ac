//! A client's session settings: what its startup packet asked for plus every session-level
//! SET/RESET it ran. pgroute replays them on whatever server connection the client's next
//! statement uses (see ARCHITECTURE.md, "Session state"), so a setting made once is in
//! force everywhere, as on a single server.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::classify::SettingChange;

#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// (name, statement that establishes it), in the order they were made.
    entries: Vec<(String, String)>,
    /// What the startup packet set: RESET returns to these, as on a single server.
    startup: Vec<(String, String)>,
    /// The startup packet's settings as (name, value), for the server connections this
    /// client uses (their own startup packets carry them), and their fingerprint.
    startup_params: Vec<(String, String)>,
    startup_key: u64,
    /// The fingerprint of the startup settings alone: the state of a server connection
    /// opened with this startup packet.
    startup_hash: u64,
    hash: u64,
}

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Settings {
    /// Settings from the startup packet, including `-c name=value` in `options`.
    pub fn from_startup(params: &[(String, String)]) -> Settings {
        let mut s = Settings::default();
        for (name, value) in params {
            if name == "options" {
                for (k, v) in parse_options(value) {
                    s.set_raw(&k, &v);
                }
            } else if !NOT_SETTINGS.contains(&name.as_str()) {
                s.set_raw(name, value);
            }
            if !matches!(name.as_str(), "user" | "database" | "replication") {
                s.startup_params.push((name.clone(), value.clone()));
            }
        }
        s.startup = s.entries.clone();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.startup_params.hash(&mut h);
        // 0 is the key of pools opened with no startup settings.
        s.startup_key = h.finish() | 1;
        s.rehash();
        s.startup_hash = s.hash;
        s
    }

    /// The fingerprint and the parameters of the startup packet's settings: server
    /// connections for this client are opened with them.
    pub fn startup(&self) -> (u64, &[(String, String)]) {
        (self.startup_key, &self.startup_params)
    }

    /// The fingerprint of a server connection opened with this client's startup packet
    /// and not changed since.
    pub fn startup_hash(&self) -> u64 {
        self.startup_hash
    }

    /// A startup-style `name=value`: set_config takes the raw string exactly as the
    /// startup packet does (a list such as search_path stays a list).
    fn set_raw(&mut self, name: &str, value: &str) {
        let stmt = format!("SELECT pg_catalog.set_config({}, {}, false)", quote(name), quote(value));
        self.put(name.to_ascii_lowercase(), stmt);
    }

    fn put(&mut self, name: String, stmt: String) {
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, stmt));
    }

    /// How many settings the client has made (startup ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// What the client last set `name` to: its SET statement, or its startup value.
    pub fn entry(&self, name: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Is the session's default isolation serializable? `login` is the login's own
    /// default (role, database, startup), in force unless the session set another.
    pub fn serializable(&self, login: bool) -> bool {
        match self.entry("default_transaction_isolation") {
            Some(stmt) if self.startup.iter().any(|(_, s)| s == stmt) => login,
            Some(stmt) => {
                let lower = stmt.to_ascii_lowercase();
                let value = lower.split_once("default_transaction_isolation").map_or("", |(_, v)| v);
                if value.contains("default") {
                    login
                } else {
                    value.contains("serializable")
                }
            }
            None => login,
        }
    }

    #[cfg(test)]
    pub fn apply(&mut self, change: &SettingChange) {
        self.apply_all([change]);
    }

    /// Applies changes in order, in time linear in the changes and the settings held (a
    /// Query of 100,000 SETs does not re-scan the settings for each).
    pub fn apply_all<'a>(&mut self, changes: impl IntoIterator<Item = &'a SettingChange>) {
        let mut changes = changes.into_iter().peekable();
        if changes.peek().is_none() {
            return;
        }
        let mut slots: Vec<Option<(String, String)>> =
            std::mem::take(&mut self.entries).into_iter().map(Some).collect();
        let index = |slots: &[Option<(String, String)>]| -> HashMap<String, usize> {
            slots.iter().enumerate().filter_map(|(i, e)| e.as_ref().map(|(n, _)| (n.clone(), i))).collect()
        };
        let mut at = index(&slots);
        let put = |slots: &mut Vec<Option<(String, String)>>, at: &mut HashMap<String, usize>, e: (String, String)| {
            if let Some(i) = at.insert(e.0.clone(), slots.len()) {
                slots[i] = None;
            }
            slots.push(Some(e));
        };
        for change in changes {
            match change {
                SettingChange::Set { name, statement } => put(&mut slots, &mut at, (name.clone(), statement.clone())),
                SettingChange::Reset { name } => {
                    if let Some(i) = at.remove(name) {
                        slots[i] = None;
                    }
                    if let Some(base) = self.startup.iter().find(|(n, _)| n == name) {
                        put(&mut slots, &mut at, base.clone());
                    }
                }
                SettingChange::ResetAll => {
                    slots = self.startup.iter().cloned().map(Some).collect();
                    at = index(&slots);
                }
            }
        }
        self.entries = slots.into_iter().flatten().collect();
        self.rehash();
    }

    fn rehash(&mut self) {
        self.hash = if self.entries.is_empty() {
            0
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.entries.hash(&mut h);
            h.finish() | 1
        };
    }

    /// Fingerprint of the settings; 0 means "server defaults".
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The statement that brings a server connection from any state to these settings.
    /// On a connection opened with this client's startup packet, RESET ALL already
    /// returns to the startup values (as the login set them, reported by the server as
    /// set by the client): only what changed since is replayed.
    pub fn sync_sql(&self, opened_with_startup: bool) -> String {
        let mut sql = String::from("RESET ALL");
        let changed = self.entries.iter().filter(|e| !(opened_with_startup && self.startup.contains(e)));
        for (_, stmt) in changed {
            sql.push(';');
            sql.push_str(stmt);
        }
        sql
    }
}

/// `-c name=value` / `--name=value` pairs from the `options` startup parameter
/// (backslash escapes a space, as libpq documents).
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let pair = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest.to_string())
        } else {
            w.strip_prefix("-c").map(str::to_string)
        };
        if let Some((k, v)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn startup_parameters_become_replayable_settings() {
        let s = Settings::from_startup(&[
            p("user", "app"),
            p("database", "app"),
            p("application_name", "it's"),
            p("options", "-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB"),
        ]);
        assert_eq!(
            s.sync_sql(false),
            "RESET ALL;SELECT pg_catalog.set_config('application_name', 'it''s', false);\
             SELECT pg_catalog.set_config('search_path', 'a,b', false);\
             SELECT pg_catalog.set_config('statement_timeout', '5s', false);\
             SELECT pg_catalog.set_config('work_mem', '1MB', false)"
        );
        assert_ne!(s.hash(), 0);
        let startup_hash = s.hash();
        let mut changed = s.clone();
        changed.apply(&SettingChange::Set { name: "search_path".into(), statement: "SET search_path = c".into() });
        assert_ne!(changed.hash(), startup_hash);
        changed.apply(&SettingChange::Reset { name: "search_path".into() });
        assert!(changed.sync_sql(false).ends_with("set_config('search_path', 'a,b', false)"));
        changed.apply(&SettingChange::ResetAll);
        assert_eq!(changed.sync_sql(false), s.sync_sql(false));
        assert_eq!(changed.hash(), s.startup_hash());
        // On a connection opened with that startup packet, RESET ALL is enough ...
        assert_eq!(changed.sync_sql(true), "RESET ALL");
        // ... plus what the client changed since, startup settings included.
        changed.apply(&SettingChange::Set { name: "work_mem".into(), statement: "SET work_mem = '2MB'".into() });
        assert_eq!(changed.sync_sql(true), "RESET ALL;SET work_mem = '2MB'");
    }

    /// Issue 22, item 6: the isolation a read will run at, whoever set it.
    #[test]
    fn serializable_follows_the_last_setting_and_the_login() {
        let set = |name: &str, statement: &str| SettingChange::Set { name: name.into(), statement: statement.into() };
        let mut s = Settings::from_startup(&[p("user", "u")]);
        assert!(!s.serializable(false));
        assert!(s.serializable(true), "role or database default");
        s.apply(&set("default_transaction_isolation", "SET default_transaction_isolation TO SERIALIZABLE"));
        assert!(s.serializable(false));
        s.apply(&set("default_transaction_isolation", "set default_transaction_isolation = 'read committed'"));
        assert!(!s.serializable(true));
        s.apply(&set("default_transaction_isolation", "SET default_transaction_isolation TO DEFAULT"));
        assert!(s.serializable(true) && !s.serializable(false));
        s.apply(&SettingChange::ResetAll);
        assert!(!s.serializable(false));
        let started = Settings::from_startup(&[p("options", "-c default_transaction_isolation=serializable")]);
        assert!(started.serializable(true), "a startup value is the login's, which the server reported");
    }

    #[test]
    fn set_reset_and_reset_all_change_the_fingerprint() {
        let mut s = Settings::default();
        assert_eq!(s.hash(), 0);
        s.apply(&SettingChange::Set { name: "search_path".into(), statement: "SET search_path TO x".into() });
        let one = s.hash();
        assert_ne!(one, 0);
        s.apply(&SettingChange::Set { name: "search_path".into(), statement: "SET search_path TO y".into() });
        assert_ne!(s.hash(), one);
        assert_eq!(s.sync_sql(false), "RESET ALL;SET search_path TO y");
        s.apply(&SettingChange::Reset { name: "search_path".into() });
        assert_eq!(s.hash(), 0);
        s.apply(&SettingChange::Set { name: "a.b".into(), statement: "SET a.b = 1".into() });
        s.apply(&SettingChange::ResetAll);
        assert_eq!((s.hash(), s.sync_sql(false).as_str()), (0, "RESET ALL"));
    }
}
