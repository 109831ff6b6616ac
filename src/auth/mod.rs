//! Password authentication, both directions: verifying clients (SCRAM-SHA-256 server side,
//! md5) and answering a server's challenge (SCRAM-SHA-256 client side, md5, cleartext).
//!
//! Pure computations only; the socket exchanges live in `frontend::login` and
//! `backend::connect`. Passwords are never logged.

pub mod md5;
pub mod scram;
