//! What pgroute logs in to servers with, per user: the configured password, or, for a
//! user configured with only a `scram_verifier`, the SCRAM keys the user's own last login
//! to pgroute revealed (pass-through). Such a user's server connections open only once it
//! has logged in since pgroute started; the keys live in memory only and are never printed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::scram::{Credential, Keys};
use crate::config::Config;

/// One user's credential for server logins.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    Keys(Arc<Keys>),
}

/// Never prints the secret, so that no log line can carry it.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Password(<redacted>)",
            Secret::Keys(_) => "Keys(<redacted>)",
        })
    }
}

impl Secret {
    pub fn credential(&self) -> Credential<'_> {
        match self {
            Secret::Password(p) => Credential::Password(p),
            Secret::Keys(k) => Credential::Keys(k),
        }
    }

    /// The password for a server asking for cleartext or md5 (keys cannot answer those).
    pub fn password(&self) -> Option<&str> {
        match self {
            Secret::Password(p) => Some(p),
            Secret::Keys(_) => None,
        }
    }
}

/// Keys learned from client logins, by user.
#[derive(Default)]
pub struct Keyring {
    learned: RwLock<HashMap<String, Arc<Keys>>>,
}

impl Keyring {
    /// Remembers the keys `user`'s login just proved (replacing older ones); true when
    /// they are new.
    pub fn learn(&self, user: &str, keys: Keys) -> bool {
        let mut map = self.learned.write().unwrap_or_else(|p| p.into_inner());
        let new = map.get(user).is_none_or(|k| **k != keys);
        if new {
            tracing::info!(user, "SCRAM keys learned from the user's login: its server connections can open");
            map.insert(user.to_string(), Arc::new(keys));
        }
        new
    }

    /// What `user` logs in to servers with under `config`: its password, else the keys
    /// its last login revealed while they still belong to its configured verifier, else
    /// nothing (`trust`). An error says why a `scram_verifier` user has no keys yet.
    pub fn secret(&self, config: &Config, user: &str) -> Result<Option<Secret>, String> {
        let configured = config.user(user);
        if let Some(password) = configured.and_then(|u| u.password()) {
            return Ok(Some(Secret::Password(password)));
        }
        let keys = self.learned.read().unwrap_or_else(|p| p.into_inner()).get(user).cloned();
        match (configured.and_then(|u| u.verifier()), keys) {
            (Some(verifier), Some(keys)) if keys.belong_to(&verifier) => Ok(Some(Secret::Keys(keys))),
            (Some(_), _) => Err(format!(
                "user {user:?} has only a scram_verifier: pgroute logs in to servers with the keys its login reveals, and it has not logged in through pgroute since pgroute started (or since its verifier changed)"
            )),
            (None, keys) => Ok(keys.map(Secret::Keys)),
        }
    }

    /// Forgets the keys of users whose configured verifier no longer matches them (a
    /// reload changed it, or gave the user a password). Users not in the file (`[auth]
    /// query`) keep theirs: their next login replaces them.
    pub fn retain_matching(&self, config: &Config) {
        let mut map = self.learned.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|user, keys| config.user(user).is_none_or(|u| u.verifier().is_some_and(|v| keys.belong_to(&v))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram;

    const APP: &str = "SCRAM-SHA-256$4096:/C5VphuGa4iUgVk9I4N13w==$+qoOL082EbpUPYWWQHCk+tLm52eAkIjmyy4HMlefK7E=:5LeuQb2wCnFgLsAMd7IZjWqHYmhrKh4Z4clmKN64Oyw=";

    fn config(verifier: &str) -> Config {
        let text = format!(
            "[[nodes]]\nname = \"n\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n\
             [[users]]\nname = \"v\"\nscram_verifier = \"{verifier}\"\n\
             [[users]]\nname = \"p\"\npassword = \"pw\"\n"
        );
        Config::parse(&text, "test").unwrap()
    }

    fn keys_for_app(verifier: &scram::Verifier) -> Keys {
        scram::tests::proven_keys(verifier, "app")
    }

    #[test]
    fn a_verifier_user_has_a_secret_only_after_its_login_and_while_the_verifier_holds() {
        let ring = Keyring::default();
        let cfg = config(APP);
        assert_eq!(ring.secret(&cfg, "p"), Ok(Some(Secret::Password("pw".into()))));
        assert!(ring.secret(&cfg, "v").unwrap_err().contains("has not logged in"), "no login yet");
        let verifier = scram::Verifier::parse(APP).unwrap();
        ring.learn("v", keys_for_app(&verifier));
        assert!(matches!(ring.secret(&cfg, "v"), Ok(Some(Secret::Keys(_)))));
        // The file's verifier changed (ALTER ROLE ... PASSWORD, copied again): the old keys
        // no longer count, and a reload forgets them.
        let cfg2 = config(&scram::tests::text(&scram::Verifier::new("app")));
        assert!(ring.secret(&cfg2, "v").is_err());
        ring.retain_matching(&cfg2);
        assert!(ring.secret(&cfg, "v").is_err(), "forgotten");
        assert_eq!(format!("{:?}", Secret::Password("pw".into())), "Password(<redacted>)");
    }
}
