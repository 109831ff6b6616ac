//! Server connections: opening and authenticating one (`conn`), and pooling them per
//! (node, user, database) (`pool`).

mod conn;
mod pool;

pub use conn::{ServerConn, MAX_SERVER_MESSAGE};
pub use pool::{Checked, PoolInfo, Pools, Purpose};
