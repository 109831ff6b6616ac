//! `[pool] node_limit`: at most that many server connections on loan to one node at once,
//! across every client pool (each pool has its own `size` besides), so that no application
//! can take all of a node. `[pool] reserve` of them go only to sessions a rule with
//! `reserve = true` placed (the payment path): the others share `node_limit - reserve`.
//! Both lines are fair (tokio's semaphore): first come, first served.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::protocol::{sqlstate, PgError};
use crate::topology::MAX_NODE_SLOTS;

struct Limit {
    general: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
}

pub struct NodeLimits {
    limit: usize,
    reserve: usize,
    /// Per node slot, made on first use.
    nodes: Vec<OnceLock<Limit>>,
}

impl NodeLimits {
    /// `reserve` < `limit` (validated with the configuration).
    pub fn new(limit: usize, reserve: usize) -> NodeLimits {
        NodeLimits { limit, reserve, nodes: (0..MAX_NODE_SLOTS).map(|_| OnceLock::new()).collect() }
    }

    fn node(&self, node: usize) -> Option<&Limit> {
        let slot = self.nodes.get(node)?;
        Some(slot.get_or_init(|| Limit {
            general: Arc::new(Semaphore::new(self.limit.saturating_sub(self.reserve))),
            reserved: Arc::new(Semaphore::new(self.reserve)),
        }))
    }

    /// A place among the node's connections, waiting up to `wait`: a reserved one too
    /// when `reserve_ok`. `53300` when none frees in time.
    pub async fn acquire(
        &self,
        node: usize,
        name: &str,
        reserve_ok: bool,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, PgError> {
        let Some(l) = self.node(node) else {
            return Err(PgError::error(sqlstate::CONNECTION_FAILURE, "pgroute: no such node"));
        };
        let now = l.general.clone().try_acquire_owned().or_else(|e| match reserve_ok {
            true => l.reserved.clone().try_acquire_owned(),
            false => Err(e),
        });
        if let Ok(p) = now {
            return Ok(p);
        }
        let waited = tokio::time::timeout(wait, async {
            if reserve_ok {
                tokio::select! {
                    p = l.general.clone().acquire_owned() => p,
                    p = l.reserved.clone().acquire_owned() => p,
                }
            } else {
                l.general.clone().acquire_owned().await
            }
        })
        .await;
        match waited {
            Ok(Ok(p)) => Ok(p),
            _ => Err(PgError::error(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!(
                    "pgroute: node {name} has all of its node_limit = {} server connections in use{} for {wait:?}",
                    self.limit,
                    if reserve_ok || self.reserve == 0 {
                        String::new()
                    } else {
                        format!(" ({} kept for rules with reserve = true)", self.reserve)
                    }
                ),
            )
            .with_hint("Raise [pool] node_limit, or cap the heavy work with a rule's max_concurrent.")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reserve_is_kept_for_those_allowed_it() {
        let limits = NodeLimits::new(3, 1);
        let wait = Duration::from_millis(50);
        let a = limits.acquire(0, "pg0", false, wait).await.expect("a general place");
        let _b = limits.acquire(0, "pg0", false, wait).await.expect("a general place");
        // General places are gone: others wait, then 53300; the reserve is still there.
        let e = limits.acquire(0, "pg0", false, wait).await.expect_err("no place for others");
        assert_eq!(e.code, sqlstate::TOO_MANY_CONNECTIONS);
        assert!(e.message.contains("node_limit = 3") && e.message.contains("1 kept"), "{}", e.message);
        let r = limits.acquire(0, "pg0", true, wait).await.expect("the reserve");
        assert!(limits.acquire(0, "pg0", true, wait).await.is_err(), "everything is taken");
        // A freed general place goes to whoever waits, reserve or not.
        drop(a);
        let _c = limits.acquire(0, "pg0", false, wait).await.expect("the freed place");
        drop(r);
        assert!(limits.acquire(0, "pg0", false, wait).await.is_err(), "a freed reserve is not for others");
        // Other nodes have their own.
        let _d = limits.acquire(1, "pg1", false, wait).await.expect("another node");
    }
}
