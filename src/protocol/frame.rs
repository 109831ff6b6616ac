//! Splitting frames out of a byte buffer, with bounds checks.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// One complete tagged protocol message, header included, ready to forward as is.
#[derive(Debug, Clone)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// Wraps a complete frame (tag, length, body). Callers build these with [`split_frame`]
    /// or the builders in `message`, which guarantee the header is present.
    pub fn from_raw(raw: Bytes) -> Self {
        debug_assert!(raw.len() >= 5);
        Frame { raw }
    }

    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The message body, without tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The whole frame as it travels on the wire.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// One complete tagged message borrowed from a read buffer: what the session handles a
/// server's replies as, so that a reply forwarded as it is costs a copy into the client's
/// buffer and nothing else (no reference-counted piece of the buffer per message).
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    raw: &'a [u8],
}

impl<'a> FrameRef<'a> {
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The message body, without tag and length.
    pub fn body(&self) -> &'a [u8] {
        &self.raw[5..]
    }

    /// The whole frame as it travels on the wire.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// A copy that outlives the buffer (for the few replies pgroute holds back).
    pub fn to_frame(&self) -> Frame {
        Frame::from_raw(Bytes::copy_from_slice(self.raw))
    }
}

impl Frame {
    pub fn view(&self) -> FrameRef<'_> {
        FrameRef { raw: &self.raw }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below the minimum of 4 (it counts itself).
    BadLength(i32),
    /// The peer announced a message longer than we accept.
    TooLong { len: usize, max: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadLength(n) => write!(f, "invalid message length {n}"),
            FrameError::TooLong { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max} bytes")
            }
        }
    }
}

/// Takes one complete tagged frame off the front of `buf`, if it holds one.
///
/// Returns `Ok(None)` when more bytes are needed. The announced length is checked against
/// `max` before anything is allocated, so a hostile length cannot make us reserve memory.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    match peek_frame(buf, max)? {
        Peek::Whole(f) => {
            let total = f.raw().len();
            Ok(Some(Frame::from_raw(buf.split_to(total).freeze())))
        }
        Peek::Short { missing } => {
            buf.reserve(missing);
            Ok(None)
        }
    }
}

/// What the front of a buffer holds: a whole frame, or the start of one.
#[derive(Debug)]
pub enum Peek<'a> {
    Whole(FrameRef<'a>),
    /// This many more bytes complete the frame (0 until its header is whole).
    Short {
        missing: usize,
    },
}

/// The frame at the front of `buf`, borrowed, with the bounds checks of [`split_frame`].
pub fn peek_frame(buf: &[u8], max: usize) -> Result<Peek<'_>, FrameError> {
    let Some(header) = buf.get(..5) else {
        return Ok(Peek::Short { missing: 0 });
    };
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLong { len: total, max });
    }
    match buf.get(..total) {
        Some(raw) => Ok(Peek::Whole(FrameRef { raw })),
        None => Ok(Peek::Short { missing: total - buf.len() }),
    }
}

/// Reads one untagged startup-phase packet (length, then body) with a size limit.
/// Returns the body (without the length).
pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Result<Bytes, FrameError>> {
    let len = r.read_i32().await?;
    if len < 8 {
        return Ok(Err(FrameError::BadLength(len)));
    }
    if len as usize > max {
        return Ok(Err(FrameError::TooLong { len: len as usize, max }));
    }
    let mut body = vec![0u8; len as usize - 4];
    r.read_exact(&mut body).await?;
    Ok(Ok(Bytes::from(body)))
}

/// Reads one tagged frame from a stream, buffering in `buf`.
/// `Ok(None)` means the peer closed the connection cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<Option<Frame>> {
    loop {
        match split_frame(buf, max) {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        }
        if r.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            buf.advance(buf.len());
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x09abcd\0Z\0\0"[..]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag(), b'Q');
        assert_eq!(f.body(), b"abcd\0");
        assert!(split_frame(&mut buf, 1024).unwrap().is_none());
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn peeking_borrows_the_frame_and_says_how_much_of_a_partial_one_is_missing() {
        let buf = b"Q\0\0\0\x09abcd\0Z\0\0";
        let Peek::Whole(f) = peek_frame(buf, 1024).unwrap() else { panic!("a whole frame") };
        assert_eq!((f.tag(), f.body(), f.raw().len()), (b'Q', &b"abcd\0"[..], 10));
        assert!(matches!(peek_frame(&buf[10..], 1024), Ok(Peek::Short { missing: 0 })));
        assert!(matches!(peek_frame(&buf[..7], 1024), Ok(Peek::Short { missing: 3 })));
        assert_eq!(peek_frame(b"Q\0\0\0\x02", 1024).unwrap_err(), FrameError::BadLength(2));
        assert!(matches!(peek_frame(b"Q\x7f\xff\xff\xff", 1024), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn rejects_lengths_below_four_and_above_max() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02xx"[..]);
        assert_eq!(split_frame(&mut buf, 1024).unwrap_err(), FrameError::BadLength(2));
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xffxx"[..]);
        assert!(matches!(split_frame(&mut buf, 1024), Err(FrameError::TooLong { .. })));
    }
}
