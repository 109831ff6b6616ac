//! The PostgreSQL v3 wire format, shared by the client side and the server side.
//!
//! A frame is a 1-byte tag, a 4-byte big-endian length that counts itself, and a body.
//! Startup-phase packets have no tag. This module knows that much and no more: it splits
//! frames out of a buffer with bounds checks (never trusting the length a peer claims
//! beyond a configured maximum) and builds the few messages pgroute writes itself.
//!
//! We do not use pgwire's decoder here: it panics on truncated Bind/Execute and desyncs on
//! a Query with bytes after its terminator (measured, see ARCHITECTURE.md). Forwarded
//! frames are never decoded at all; we only look at the tags routing needs.

mod frame;
mod message;
mod reader;

pub use frame::{peek_frame, read_frame, read_startup_packet, split_frame, Frame, FrameError, FrameRef, Peek};
pub use message::*;
pub use reader::{BodyReader, ReadError};

/// Message tags pgroute looks at. Everything else is forwarded untouched.
pub mod tag {
    // client -> server
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    // server -> client
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}

/// Startup-phase request codes (the "protocol version" field of an untagged packet).
pub mod startup_code {
    pub const PROTOCOL_3: i32 = 196608;
    pub const SSL_REQUEST: i32 = 80877103;
    pub const GSSENC_REQUEST: i32 = 80877104;
    pub const CANCEL_REQUEST: i32 = 80877102;
}
