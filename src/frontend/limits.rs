//! Client limits: `[listen] max_client_conn` for all clients, and the optional
//! `max_user_client_conn` / `max_db_client_conn` per user and per database. A client over a
//! limit is refused with 53300 at login; the others are untouched. Each place is given back
//! when its holder is dropped (also when a session's task unwinds).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::Shared;

/// Which shared counter a [`Slot`] counts in (a type, so that a slot is one pointer).
pub trait Counter {
    fn counter(shared: &Shared) -> &AtomicUsize;
}

/// Logged-in clients (`[listen] max_client_conn`).
pub struct Clients;
/// Connections not logged in yet (`[listen] max_logins`).
pub struct Logins;

impl Counter for Clients {
    fn counter(shared: &Shared) -> &AtomicUsize {
        shared.clients_counter()
    }
}

impl Counter for Logins {
    fn counter(shared: &Shared) -> &AtomicUsize {
        shared.logins_counter()
    }
}

/// A place under a limit on a shared counter, given back when dropped.
pub struct Slot<C: Counter>(Arc<Shared>, PhantomData<C>);

impl<C: Counter> Slot<C> {
    fn take(shared: &Arc<Shared>, max: usize) -> Option<Self> {
        C::counter(shared).fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(shared.clone(), PhantomData))
    }
}

impl<C: Counter> Drop for Slot<C> {
    fn drop(&mut self) {
        C::counter(&self.0).fetch_sub(1, Ordering::AcqRel);
    }
}

/// A logged-in client's place under `[listen] max_client_conn`, taken once its password
/// is checked: connections that never log in cannot lock real clients out.
pub fn client_slot(shared: &Arc<Shared>) -> Option<Slot<Clients>> {
    Slot::take(shared, shared.config().listen.max_client_conn)
}

/// A connection's place under `[listen] max_logins`, from accept until it has logged in
/// (or gone).
pub fn login_slot(shared: &Arc<Shared>) -> Option<Slot<Logins>> {
    Slot::take(shared, shared.config().listen.max_logins)
}

/// Clients per name (user or database). Entries go when their count does, so the map
/// holds at most one entry per connected client.
#[derive(Default)]
pub struct Counts(DashMap<String, usize>);

impl Counts {
    /// Counts one more client under `name` unless `max` are there already.
    fn take(&self, name: &str, max: Option<usize>) -> bool {
        let mut n = self.0.entry(name.to_string()).or_insert(0);
        if max.is_some_and(|m| *n >= m) {
            let empty = *n == 0;
            drop(n);
            if empty {
                self.0.remove_if(name, |_, v| *v == 0);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, name: &str) {
        if let Some(mut n) = self.0.get_mut(name) {
            *n = n.saturating_sub(1);
        }
        self.0.remove_if(name, |_, v| *v == 0);
    }
}

/// A client's places under the per-user and per-database limits.
pub struct NamedSlots {
    shared: Arc<Shared>,
    user: String,
    database: String,
}

impl NamedSlots {
    /// Err: which limit (`user` or `db`) is full, and its value.
    pub fn take(shared: &Arc<Shared>, user: &str, database: &str) -> Result<Self, (&'static str, usize)> {
        let listen = &shared.config().listen;
        let (per_user, per_db) = (listen.max_user_client_conn, listen.max_db_client_conn);
        if !shared.clients_per_user.take(user, per_user) {
            return Err(("user", per_user.unwrap_or_default()));
        }
        if !shared.clients_per_db.take(database, per_db) {
            shared.clients_per_user.give_back(user);
            return Err(("db", per_db.unwrap_or_default()));
        }
        Ok(NamedSlots { shared: shared.clone(), user: user.to_string(), database: database.to_string() })
    }
}

impl Drop for NamedSlots {
    fn drop(&mut self) {
        self.shared.clients_per_user.give_back(&self.user);
        self.shared.clients_per_db.give_back(&self.database);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hold_their_limit_and_forget_empty_names() {
        let c = Counts::default();
        assert!(c.take("a", Some(2)));
        assert!(c.take("a", Some(2)));
        assert!(!c.take("a", Some(2)), "the third is over the limit");
        assert!(!c.take("b", Some(0)), "a limit of zero refuses all");
        assert!(c.0.get("b").is_none(), "a refused name leaves nothing behind");
        c.give_back("a");
        assert!(c.take("a", Some(2)), "a place given back is free again");
        assert!(c.take("x", None), "no limit");
        c.give_back("a");
        c.give_back("a");
        c.give_back("x");
        assert!(c.0.is_empty());
    }
}
