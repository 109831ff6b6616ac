//! Per-node traffic counters for the admin console's `SHOW STATS`: units answered,
//! transactions ended, bytes each way and time spent waiting for the server. Plain relaxed
//! atomics in fixed node slots (`topology::MAX_NODE_SLOTS`), so counting costs one add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::topology::MAX_NODE_SLOTS;

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    transactions: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    /// Microseconds from a unit's forwarding to its ReadyForQuery, summed.
    busy_us: AtomicU64,
}

/// One node's totals since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeTotals {
    pub queries: u64,
    pub transactions: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub busy_us: u64,
}

pub struct Stats {
    nodes: Vec<Counters>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { nodes: (0..MAX_NODE_SLOTS).map(|_| Counters::default()).collect() }
    }
}

impl Stats {
    /// A unit (Query, or extended messages up to Sync) was answered by `node` after
    /// `took`; `ended_transaction`: its ReadyForQuery said idle.
    pub fn unit_done(&self, node: usize, took: Duration, ended_transaction: bool) {
        if let Some(c) = self.nodes.get(node) {
            c.queries.fetch_add(1, Ordering::Relaxed);
            c.transactions.fetch_add(u64::from(ended_transaction), Ordering::Relaxed);
            c.busy_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    pub fn sent(&self, node: usize, bytes: usize) {
        if let Some(c) = self.nodes.get(node) {
            c.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn received(&self, node: usize, bytes: usize) {
        if let Some(c) = self.nodes.get(node) {
            c.received.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn totals(&self, node: usize) -> NodeTotals {
        let Some(c) = self.nodes.get(node) else { return NodeTotals::default() };
        NodeTotals {
            queries: c.queries.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            bytes_sent: c.sent.load(Ordering::Relaxed),
            bytes_received: c.received.load(Ordering::Relaxed),
            busy_us: c.busy_us.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_node_and_ignores_unknown_slots() {
        let s = Stats::default();
        s.unit_done(1, Duration::from_micros(250), true);
        s.unit_done(1, Duration::from_micros(50), false);
        s.sent(1, 10);
        s.received(1, 30);
        s.unit_done(MAX_NODE_SLOTS, Duration::from_secs(1), true);
        let t = s.totals(1);
        assert_eq!(t, NodeTotals { queries: 2, transactions: 1, bytes_sent: 10, bytes_received: 30, busy_us: 300 });
        assert_eq!(s.totals(0), NodeTotals::default());
    }
}
