//! Health monitoring: a probe per node every `[health] interval`, a pure verdict per node
//! (`assess`), published to the topology snapshot routing reads from (`monitor`); replica
//! replay positions back to back while reads wait for them (`replay_watch`).

mod assess;
mod monitor;
pub mod patroni;
mod replay_watch;

pub use assess::{assess_primary, assess_replica, Sample, Thresholds, Verdict, REASONS};
pub use monitor::Monitor;
pub use replay_watch::{ReplayWatch, Waiter, Waits};
