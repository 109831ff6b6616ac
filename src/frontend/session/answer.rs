//! The part of the client's answer pgroute holds back: a committing unit's answer until
//! the commit's position is known (`commit_lsn`), and a split Query's first part until
//! its rest has run (`route::split_transaction_end`).

use bytes::BytesMut;

use crate::protocol::Frame;

#[derive(Default)]
pub(super) struct Answer {
    /// The client's ReadyForQuery, held until the position query behind its unit answers.
    pub ready: Option<Frame>,
    /// The unit's answer from its first CommandComplete, held with it (`holding`: frames
    /// go here now).
    pub ack: BytesMut,
    pub holding: bool,
    /// ParameterStatus reports of a split Query's first part, held for the client's
    /// ReadyForQuery (where one server would have sent them).
    pub reports: Vec<Frame>,
    /// The Query being forwarded is the first part of a split one; the rest waits here
    /// for the first part's answer, with the characters of the first part.
    pub split_rest: Option<(Frame, u32)>,
    /// The rest of a split Query is being answered: its error positions are counted from
    /// where it began in the client's text, this many characters in.
    pub rest_offset: Option<u32>,
    /// The unit being forwarded is the first part of a split Query.
    pub splitting: bool,
}
