//! Server connections: opening and authenticating one (`conn`), and pooling them per
//! (node, user, database) (`pool`), and the limit of connections on loan per node
//! across pools (`limit`).

mod conn;
#[cfg(test)]
pub mod fake;
mod limit;
mod pool;

pub use conn::{ServerConn, MAX_SERVER_MESSAGE};
pub use pool::{Checked, LoginParams, PoolInfo, Pools, Purpose};
