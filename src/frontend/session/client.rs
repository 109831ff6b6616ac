//! The client's side of a session: its socket halves, the bytes read but not yet split
//! into messages, the complete messages queued for routing, and the bytes due to it.

use std::collections::VecDeque;

use std::future::Future;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::state::Intake;
use crate::protocol::{self, peek_frame, sqlstate, Frame, Peek, PgError};
use crate::tls::{ClientRead, ClientWrite};

/// Stop reading from a client that has this many bytes of complete messages queued...
const CLIENT_BACKLOG: usize = 1 << 20;
/// ... or this many complete messages waiting (pipelined behind a busy server).
const MAX_QUEUED_FRAMES: usize = 4096;
/// Room the client's read buffer is given when it has none.
const CLIENT_READ_CHUNK: usize = 16 * 1024;

pub(super) struct Client {
    pub rd: ClientRead,
    pub wr: ClientWrite,
    /// The start of one incomplete message at most (bounded by `max_message_size`).
    pub rbuf: BytesMut,
    /// Bytes for the client, written after each batch of server frames.
    pub wbuf: BytesMut,
    /// Complete messages not yet routed and forwarded...
    pub queue: VecDeque<Frame>,
    /// ... and their bytes.
    pub queued_bytes: usize,
    /// How the client's messages are being read (see `state`).
    pub intake: Intake,
    /// `[listen] client_write_timeout`: a client that does not take its bytes within
    /// this is gone (it would hold its server connection forever).
    write_timeout: std::time::Duration,
}

impl Client {
    /// Buffers start empty: an idle client costs no buffer memory (see `read`).
    pub fn new(rd: ClientRead, wr: ClientWrite, write_timeout: std::time::Duration) -> Self {
        Client {
            write_timeout,
            rd,
            wr,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            intake: Intake::Between,
        }
    }

    /// Backpressure: is there room to queue more of the client's messages?
    pub fn has_room(&self) -> bool {
        self.queued_bytes < CLIENT_BACKLOG && self.queue.len() < MAX_QUEUED_FRAMES
    }

    /// Nothing read and not yet routed.
    pub fn drained(&self) -> bool {
        self.queue.is_empty() && self.rbuf.is_empty()
    }

    /// Splits complete messages off the read buffer into the queue, in one piece with
    /// each message a slice of it; a malformed or oversized one is the session's end.
    pub fn split(&mut self, max: usize) -> Result<(), PgError> {
        let mut ends = [0usize; 32];
        loop {
            // Up to 32 messages at a time: their ends, then one split for them all.
            let (mut n, mut at, mut missing) = (0, 0, None);
            while n < ends.len() {
                match peek_frame(&self.rbuf[at..], max).map_err(refused)? {
                    Peek::Whole(f) => {
                        at += f.raw().len();
                        ends[n] = at;
                        n += 1;
                    }
                    Peek::Short { missing: m } => {
                        missing = Some(m);
                        break;
                    }
                }
            }
            if n > 0 {
                let read = self.rbuf.split_to(at).freeze();
                let mut start = 0;
                for &end in &ends[..n] {
                    self.push_back(Frame::from_raw(read.slice(start..end)));
                    start = end;
                }
            }
            if let Some(m) = missing {
                self.rbuf.reserve(m);
                return Ok(());
            }
        }
    }

    pub fn push_back(&mut self, f: Frame) {
        self.queued_bytes += f.raw().len();
        self.queue.push_back(f);
    }

    /// Puts a message at the front of the queue: it is routed next.
    pub fn push_front(&mut self, f: Frame) {
        self.queued_bytes += f.raw().len();
        self.queue.push_front(f);
    }

    /// The next queued message, taken off the queue.
    pub fn pop(&mut self) -> Option<Frame> {
        let f = self.queue.pop_front()?;
        self.queued_bytes -= f.raw().len();
        Some(f)
    }

    /// Writes what is due to the client; an error once `write_timeout` passes without the
    /// client taking it all. The first attempt runs without a timer (no clock read, no
    /// timer entry): the timer is made only when the socket cannot take the bytes at once.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            let mut write = std::pin::pin!(self.wr.write_all(&self.wbuf));
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
            let written = match first {
                std::task::Poll::Ready(r) => Ok(r),
                std::task::Poll::Pending => tokio::time::timeout(self.write_timeout, write).await,
            };
            match written {
                Ok(written) => written?,
                Err(_) => {
                    tracing::warn!(
                        timeout = ?self.write_timeout,
                        "client did not read its results within client_write_timeout: disconnected"
                    );
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
            }
            self.wbuf.clear();
        }
        Ok(())
    }
}

/// A malformed or oversized message ends the session.
fn refused(e: protocol::FrameError) -> PgError {
    let code = match e {
        protocol::FrameError::TooLong { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
        protocol::FrameError::BadLength(_) => sqlstate::PROTOCOL_VIOLATION,
    };
    PgError::fatal(code, format!("pgroute: {e}"))
}

/// Reads client bytes into `buf`. A buffer with no room gets it only once the client has
/// sent something, so a client that sits idle holds no buffer memory.
pub(super) async fn read(rd: &mut ClientRead, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == buf.len() {
        return rd.read_into_empty(buf, CLIENT_READ_CHUNK).await;
    }
    rd.read_buf(buf).await
}
