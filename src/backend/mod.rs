//! Server connections: opening and authenticating one (`conn`) with each user's
//! credential (`keyring`), pooling them per (node, user, database) (`pool`), and the limit
//! of connections on loan per node across pools (`limit`); `[auth] query` lookups of users
//! not in the file (`auth_query`).

pub mod auth_query;
mod conn;
#[cfg(test)]
pub mod fake;
pub mod keyring;
mod limit;
mod pool;

pub use conn::{ServerConn, MAX_SERVER_MESSAGE};
pub use pool::{Checked, ClientPool, LoginParams, PoolCache, PoolInfo, Pools, Purpose};
