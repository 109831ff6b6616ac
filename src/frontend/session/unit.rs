//! The unit being routed and forwarded (a Query, a FunctionCall, or extended messages up
//! to Sync): what routing learned about it, which forwarding uses, and which the unit's
//! end clears.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;

use super::commit_lsn::UnitCommits;
use crate::classify::Class;
use crate::config::CausalScope;

/// A Parse as `scan_unit` split it: its statement name, its body after the name and that
/// body's `prepared::statement_hash`.
pub(super) struct SplitParse {
    pub name: String,
    pub tail: Bytes,
    pub hash: u64,
}

/// A statement Parsed earlier in the unit being scanned: (name, class, text).
pub(super) type ParsedHere = (String, Arc<Class>, Bytes);

#[derive(Default)]
pub(super) struct Unit {
    /// Classes computed while routing, consumed in order by `forward` for Q and P; for
    /// a P that split, its statement name and body after the name too, so it is split
    /// once.
    pub classes: VecDeque<(Arc<Class>, Option<SplitParse>)>,
    /// It became a write only when its functions were looked up: each of its statements
    /// counts as a data write.
    pub forced_write: bool,
    /// It runs under its rule's `statement_timeout` (milliseconds), set once its server
    /// is attached (`rule_timeout`).
    pub timeout: Option<NonZeroU32>,
    /// It was placed by a rule with `reserve = true`: a connection it needs may come from
    /// `[pool] reserve`.
    pub reserve: bool,
    /// Its causal scope, when it is a read the read rules place.
    pub scope: Option<CausalScope>,
    /// Its tagged keys.
    pub keys: Vec<String>,
    /// Client statement names its Bind and Describe messages used.
    pub names: Vec<String>,
    /// What it may commit (`commit_lsn`).
    pub commits: UnitCommits,
    /// `scan_unit`'s buffers, kept between units so that a unit allocates none:
    /// statements parsed in the unit, distinct classes seen.
    pub scratch: (Vec<ParsedHere>, Vec<Arc<Class>>),
}
