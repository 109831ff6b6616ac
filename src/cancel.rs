//! Query cancellation. pgroute hands each client its own BackendKeyData; a CancelRequest
//! carrying it is forwarded to the server process currently running that client's query.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol;
use crate::topology::Topology;

/// Where a client's current query runs: (node, server pid, server secret).
pub type Target = (usize, i32, i32);

pub struct Handle {
    secret: i32,
    target: Mutex<Option<Target>>,
}

impl Handle {
    pub fn set(&self, target: Option<Target>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }
}

#[derive(Default)]
pub struct Registry {
    clients: DashMap<i32, Arc<Handle>>,
}

impl Registry {
    /// Registers a new client; returns its (pid, secret) and handle.
    pub fn register(&self) -> (i32, i32, Arc<Handle>) {
        let mut rng = rand::thread_rng();
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.clients.entry(pid) {
                let handle = Arc::new(Handle { secret: rng.gen(), target: Mutex::new(None) });
                v.insert(handle.clone());
                return (pid, handle.secret, handle);
            }
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.clients.remove(&pid);
    }

    /// Forwards a cancel request if the key matches a client with a running query.
    pub async fn cancel(&self, topology: &Topology, pid: i32, secret: i32) {
        let target = match self.clients.get(&pid) {
            Some(h) if h.secret == secret => *h.target.lock().unwrap_or_else(|p| p.into_inner()),
            _ => {
                tracing::debug!(pid, "cancel request with an unknown key ignored");
                return;
            }
        };
        let Some((node, server_pid, server_secret)) = target else {
            return;
        };
        let addr = topology.addr(node);
        match TcpStream::connect((addr.host.as_str(), addr.port)).await {
            Ok(mut s) => {
                let _ = s.write_all(&protocol::cancel_request(server_pid, server_secret)).await;
                tracing::debug!(node = %addr.name, server_pid, "cancel request forwarded");
            }
            Err(e) => {
                tracing::warn!(node = %addr.name, error = %e, "cannot forward cancel request")
            }
        }
    }
}
