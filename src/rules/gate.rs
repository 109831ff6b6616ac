//! A rule's concurrency cap (`max_concurrent`): at most that many sessions run the rule's
//! reads (a unit, or the transaction it begins) at once, across all clients. Others queue
//! in arrival order (tokio's semaphore is fair) for up to `queue_timeout`, then get
//! `53300` naming the rule.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::RuleGauges;
use crate::protocol::{sqlstate, PgError};

pub struct Gate {
    rule: String,
    max: u32,
    queue_timeout: Duration,
    permits: Arc<Semaphore>,
    gauges: Arc<RuleGauges>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate({:?}, max {})", self.rule, self.max)
    }
}

/// The same gate, not an equal one: places are per gate.
impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Gate {}

/// A place under a rule's cap; the place is given back when this is dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    gauges: Arc<RuleGauges>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gauges.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    pub fn new(rule: &str, max: u32, queue_timeout: Duration) -> Gate {
        Gate {
            rule: rule.to_string(),
            max,
            queue_timeout,
            permits: Arc::new(Semaphore::new(max as usize)),
            gauges: crate::metrics::rule_gauges(rule),
        }
    }

    /// Whether a reload may keep this gate (and the places taken in it) for `max` and
    /// `queue_timeout`.
    pub fn same(&self, max: u32, queue_timeout: Duration) -> bool {
        self.max == max && self.queue_timeout == queue_timeout
    }

    /// A place now, or after waiting in line for up to `queue_timeout`; else `53300`.
    pub async fn admit(&self) -> Result<Admitted, PgError> {
        let g = &self.gauges;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let started = Instant::now();
                g.queued.fetch_add(1, Ordering::Relaxed);
                let waited = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await;
                g.queued.fetch_sub(1, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                g.wait_micros.fetch_add(micros, Ordering::Relaxed);
                match waited {
                    Ok(Ok(p)) => p,
                    // Timed out (or, never, a closed semaphore).
                    _ => {
                        g.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(rule = %self.rule, "max_concurrent: queue_timeout reached, statement refused");
                        return Err(PgError::error(
                            sqlstate::TOO_MANY_CONNECTIONS,
                            format!(
                                "pgroute: rule \"{}\" already runs max_concurrent = {} at once; this statement waited \
                                 queue_timeout = {:?} in line and was not run",
                                self.rule, self.max, self.queue_timeout
                            ),
                        )
                        .with_hint("Retry later, or raise the rule's max_concurrent or queue_timeout."));
                    }
                }
            }
        };
        g.admitted.fetch_add(1, Ordering::Relaxed);
        g.running.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted { _permit: permit, gauges: self.gauges.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_holds_the_next_waits_in_line_then_is_refused() {
        let gate = Gate::new("gate-test", 1, Duration::from_millis(100));
        let g = gate.gauges.clone();
        let first = gate.admit().await.expect("a place");
        assert_eq!(g.running.load(Ordering::Relaxed), 1);
        // The second waits its queue_timeout, then is refused with 53300.
        let started = Instant::now();
        let e = gate.admit().await.err().expect("refused");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(e.code, sqlstate::TOO_MANY_CONNECTIONS);
        assert!(e.message.contains("rule \"gate-test\"") && e.message.contains("max_concurrent = 1"), "{}", e.message);
        assert_eq!((g.rejected.load(Ordering::Relaxed), g.queued.load(Ordering::Relaxed)), (1, 0));
        // A place given back goes to the one waiting.
        let gate = Arc::new(gate);
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.queued.load(Ordering::Relaxed), 1, "the second waits in line");
        drop(first);
        waiter.await.expect("task").expect("admitted once the first is done");
        assert_eq!((g.admitted.load(Ordering::Relaxed), g.running.load(Ordering::Relaxed)), (2, 0));
    }
}
