//! The registry of logged-in clients. pgroute hands each client its own BackendKeyData;
//! a CancelRequest carrying it is forwarded to the server process currently running that
//! client's query. The console lists the clients (`SHOW CLIENTS`, `SHOW SERVERS`) and ends
//! one (`KILL`) through the same entries.
//!
//! With `[peers]`, the top byte of every pid this instance hands out (bits 23 to 30) is its
//! id: a cancel request reaching the wrong instance behind a shared address is forwarded
//! to the one that owns the key, which checks the secret as usual.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::Peers;
use crate::protocol;
use crate::topology::Topology;

/// Where a client's current query runs: (node, server pid, server secret).
pub type Target = (usize, i32, i32);

/// Who a client is, for the console.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub addr: Option<std::net::SocketAddr>,
    pub connected: std::time::SystemTime,
    /// The client logged in to the admin console.
    pub console: bool,
}

pub struct Handle {
    secret: i32,
    state: Mutex<State>,
    pub info: ClientInfo,
    /// `KILL` and the start of a shutdown, as flags the session waits on.
    signals: Signals,
}

/// A session is asked to end now (`KILL`).
pub const KILL: u8 = 1;
/// pgroute is shutting down: the session ends at its next transaction boundary.
pub const DRAIN: u8 = 2;

/// Flags raised for one session and the one task that waits on them. Cheaper to poll on
/// every turn of a session's loop than a `Notify` or a `watch` (no lock, no list of
/// waiters): a load and a waker check.
#[derive(Default)]
struct Signals {
    flags: std::sync::atomic::AtomicU8,
    waker: futures_util::task::AtomicWaker,
}

#[derive(Default)]
struct State {
    target: Option<Target>,
    /// Cancel requests forwarded to the target and not yet confirmed delivered. A server
    /// connection with one pending must not serve another client: the signal could land
    /// on that client's query.
    pending: u32,
}

impl Handle {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's queries now run on this server process.
    pub fn set(&self, target: Target) {
        self.state().target = Some(target);
    }

    /// The server process running the client's queries now, if any.
    pub fn target(&self) -> Option<Target> {
        self.state().target
    }

    /// Raises `signal` (`KILL` or `DRAIN`) and wakes the session.
    pub fn signal(&self, signal: u8) {
        self.signals.flags.fetch_or(signal, std::sync::atomic::Ordering::SeqCst);
        self.signals.waker.wake();
    }

    /// Resolves with the raised signals among `mask` (at once if one is up already).
    pub async fn signaled(&self, mask: u8) -> u8 {
        std::future::poll_fn(|cx| {
            self.signals.waker.register(cx.waker());
            match self.signals.flags.load(std::sync::atomic::Ordering::SeqCst) & mask {
                0 => std::task::Poll::Pending,
                raised => std::task::Poll::Ready(raised),
            }
        })
        .await
    }

    /// The client stops using its server process. Returns false when a cancel request
    /// for it may still be on its way: that connection must then be closed, not pooled.
    pub fn clear(&self) -> bool {
        let mut s = self.state();
        s.target = None;
        s.pending == 0
    }
}

/// Where a peer id sits in a pid.
const PEER_SHIFT: u32 = 23;

/// The peer id a pid carries (0 when it was handed out without peering).
pub fn owner(pid: i32) -> u8 {
    (pid >> PEER_SHIFT) as u8
}

#[derive(Default)]
pub struct Registry {
    clients: DashMap<i32, Arc<Handle>>,
    /// `[peers] id` at start (0: none).
    peer_id: u8,
}

impl Registry {
    /// A registry whose pids carry `peer_id` (0: no peering).
    pub fn new(peer_id: u8) -> Self {
        Registry { clients: DashMap::new(), peer_id }
    }

    /// A fresh pid: random, positive, with this instance's peer id on top.
    fn new_pid(&self, rng: &mut impl Rng) -> i32 {
        match self.peer_id {
            0 => rng.gen_range(1..i32::MAX),
            id => (i32::from(id) << PEER_SHIFT) | rng.gen_range(0..1 << PEER_SHIFT),
        }
    }

    /// Registers a new client; returns its (pid, secret) and handle.
    pub fn register(&self, info: ClientInfo) -> (i32, i32, Arc<Handle>) {
        let mut rng = rand::thread_rng();
        loop {
            let pid = self.new_pid(&mut rng);
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.clients.entry(pid) {
                let handle = Arc::new(Handle {
                    secret: rng.gen(),
                    state: Mutex::new(State::default()),
                    info: info.clone(),
                    signals: Signals::default(),
                });
                v.insert(handle.clone());
                return (pid, handle.secret, handle);
            }
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.clients.remove(&pid);
    }

    /// Every registered client, ordered by pid.
    pub fn list(&self) -> Vec<(i32, Arc<Handle>)> {
        let mut all: Vec<_> = self.clients.iter().map(|e| (*e.key(), e.value().clone())).collect();
        all.sort_by_key(|(pid, _)| *pid);
        all
    }

    /// Asks a client's session to end (`KILL`); false when there is no such client.
    pub fn kill(&self, pid: i32) -> bool {
        match self.clients.get(&pid) {
            Some(h) => {
                h.signal(KILL);
                true
            }
            None => false,
        }
    }

    /// Tells every session that pgroute is shutting down.
    pub fn drain_all(&self) {
        for h in self.clients.iter() {
            h.value().signal(DRAIN);
        }
    }

    /// Forwards a cancel request: to the peer whose id the pid carries, or, when it is
    /// ours, to the server running the query of the client with that key.
    pub async fn cancel(&self, topology: &Topology, peers: &Peers, pid: i32, secret: i32) {
        let owner = owner(pid);
        if self.peer_id != 0 && owner != self.peer_id {
            match peers.member(owner).and_then(|a| a.rsplit_once(':')).and_then(|(h, p)| Some((h, p.parse().ok()?))) {
                Some((host, port)) => {
                    let delivered = deliver(host, port, pid, secret).await;
                    tracing::debug!(peer = owner, delivered, "cancel request forwarded to the peer that owns the key");
                }
                None => tracing::debug!(peer = owner, "cancel request for an unknown peer ignored"),
            }
            return;
        }
        let handle = match self.clients.get(&pid) {
            Some(h) if h.secret == secret => h.clone(),
            _ => {
                tracing::debug!(pid, "cancel request with an unknown key ignored");
                return;
            }
        };
        let (node, server_pid, server_secret) = {
            let mut s = handle.state();
            let Some(target) = s.target else { return };
            s.pending += 1;
            target
        };
        let Some(addr) = topology.addr(node) else { return };
        if deliver(&addr.host, addr.port, server_pid, server_secret).await {
            tracing::debug!(node = %addr.name, server_pid, "cancel request forwarded");
            handle.state().pending -= 1;
        } else {
            // Not known to be delivered: the connection stays marked, so it is closed
            // rather than handed to another client.
            tracing::warn!(node = %addr.name, server_pid, "cancel request not confirmed by the server");
        }
    }
}

/// Sends a CancelRequest and waits until the server closes the connection: PostgreSQL
/// signals the backend before it closes, so afterwards the signal can only hit the query
/// it was meant for (a backend waiting for its next command ignores it).
async fn deliver(host: &str, port: u16, pid: i32, secret: i32) -> bool {
    use tokio::io::AsyncReadExt;
    let exchange = async {
        let mut s = TcpStream::connect((host, port)).await?;
        s.write_all(&protocol::cancel_request(pid, secret)).await?;
        let mut buf = [0u8; 16];
        while s.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    matches!(tokio::time::timeout(std::time::Duration::from_secs(10), exchange).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_carry_the_peer_id_and_stay_positive() {
        let mut rng = rand::thread_rng();
        for id in [1u8, 2, 127, 255] {
            let registry = Registry::new(id);
            for _ in 0..1000 {
                let pid = registry.new_pid(&mut rng);
                assert!(pid > 0, "{pid}");
                assert_eq!(owner(pid), id);
            }
        }
        let plain = Registry::new(0);
        assert!((0..1000).all(|_| plain.new_pid(&mut rng) > 0));
    }

    #[test]
    fn a_connection_with_a_cancel_on_its_way_is_not_reusable() {
        let registry = Registry::default();
        let info = ClientInfo {
            user: "u".into(),
            database: "d".into(),
            application_name: String::new(),
            addr: None,
            connected: std::time::SystemTime::now(),
            console: false,
        };
        let (_, _, handle) = registry.register(info);
        handle.set((0, 42, 7));
        // What `cancel` does between reading the target and the server's confirmation.
        handle.state().pending += 1;
        assert!(!handle.clear(), "the connection must be closed, not pooled");
        handle.state().pending -= 1;
        handle.set((0, 42, 7));
        assert!(handle.clear());
        assert_eq!(handle.state().target, None, "a cleared handle forwards nothing");
    }
}
