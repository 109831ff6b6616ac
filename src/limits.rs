//! Client limits: `[listen] max_client_conn` for all clients, and the optional
//! `max_user_client_conn` / `max_db_client_conn` per user and per database. A client over a
//! limit is refused with 53300 at login; the others are untouched. Each place is given back
//! when its holder is dropped (also when a session's task unwinds).
//!
//! [`ClientLimits`] holds the counts (one in `Shared`); the places hold it, and the
//! caller passes the limits in force, so this depends on nothing else of pgroute's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use std::sync::Arc;
use tokio::sync::Notify;

use dashmap::DashMap;

/// Every count the limits keep.
#[derive(Default)]
pub struct ClientLimits {
    /// Logged-in clients.
    clients: AtomicUsize,
    logins: PendingLogins,
    per_user: Counts,
    per_db: Counts,
}

impl ClientLimits {
    /// Clients logged in now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }
}

/// A logged-in client's place under `[listen] max_client_conn`, taken once its password
/// is checked: connections that never log in cannot lock real clients out.
pub struct ClientSlot(Arc<ClientLimits>);

impl ClientSlot {
    pub fn take(limits: &Arc<ClientLimits>, max: usize) -> Option<Self> {
        limits.clients.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(ClientSlot(limits.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections not logged in yet, oldest first (`[listen] max_logins`).
#[derive(Default)]
pub struct PendingLogins {
    queue: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next: AtomicU64,
}

impl PendingLogins {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place among the logins in progress, from accept until it has logged in
/// (or gone). With `max_logins` of them already there, a new one takes the place of the
/// one that has waited longest, which is told so and ends (`LoginSlot::evicted`): a real
/// client logs in within milliseconds, so sockets that never finish cannot keep it out,
/// however many they are.
pub struct LoginSlot {
    limits: Arc<ClientLimits>,
    id: u64,
    evicted: Arc<Notify>,
}

impl LoginSlot {
    pub fn take(limits: &Arc<ClientLimits>, max: usize) -> Self {
        let max = max.max(1);
        let logins = &limits.logins;
        let id = logins.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        let mut queue = logins.lock();
        while queue.len() >= max {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.notify_one();
            }
        }
        queue.push_back((id, evicted.clone()));
        drop(queue);
        LoginSlot { limits: limits.clone(), id, evicted }
    }

    /// Resolves when a newer login took this one's place.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        let mut queue = self.limits.logins.lock();
        if let Some(i) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(i);
        }
    }
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
    limits: Arc<ClientLimits>,
    user: String,
    database: String,
}

impl NamedSlots {
    /// Err: which limit (`user` or `db`) is full, and its value.
    /// `max`: `[listen] max_user_client_conn` and `max_db_client_conn`.
    pub fn take(
        limits: &Arc<ClientLimits>,
        user: &str,
        database: &str,
        max: (Option<usize>, Option<usize>),
    ) -> Result<Self, (&'static str, usize)> {
        let (per_user, per_db) = max;
        if !limits.per_user.take(user, per_user) {
            return Err(("user", per_user.unwrap_or_default()));
        }
        if !limits.per_db.take(database, per_db) {
            limits.per_user.give_back(user);
            return Err(("db", per_db.unwrap_or_default()));
        }
        Ok(NamedSlots { limits: limits.clone(), user: user.to_string(), database: database.to_string() })
    }
}

impl Drop for NamedSlots {
    fn drop(&mut self) {
        self.limits.per_user.give_back(&self.user);
        self.limits.per_db.give_back(&self.database);
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
