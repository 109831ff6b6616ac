//! The server side of a session: the connections it holds, which one receives the
//! client's messages, the bytes due to it, and the replies pgroute expects back.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;

use super::held::Held;
use super::Expect;
use crate::backend::PoolCache;

#[derive(Default)]
pub(super) struct Server {
    /// Server connections held, by node index (one at most in transaction mode, outside
    /// a pin).
    pub held: Held,
    /// The node whose connection receives the client's messages now.
    pub active: Option<usize>,
    /// That node was a replica when attached: a transaction on it began there as a read.
    pub for_reads: bool,
    /// Bytes for the active server, written after each batch of client frames.
    pub wbuf: BytesMut,
    /// What each reply to come should become, in the order the server answers.
    pub expect: VecDeque<Expect>,
    /// Units sent whose ReadyForQuery has not come back.
    pub in_flight: usize,
    /// The active server is in COPY IN: it ignores Sync until CopyDone/CopyFail.
    pub copy_in: bool,
    /// A rule's `statement_timeout` is in force on the active server: the client's own
    /// value goes back at the unit's end.
    pub rule_timeout_set: bool,
    /// Since when the primary has refused the connections the next unit asked for.
    pub refused_since: Option<Instant>,
    /// The pools this session borrowed from.
    pub pools: PoolCache,
}
