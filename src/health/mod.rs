//! Health monitoring: a probe per node every `[health] interval`, a pure verdict per node
//! (`assess`), published to the topology snapshot routing reads from (`monitor`).

mod assess;
mod monitor;

pub use assess::{assess_primary, assess_replica, Sample, Thresholds, Verdict, REASONS};
pub use monitor::Monitor;
