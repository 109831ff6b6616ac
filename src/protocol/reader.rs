//! Bounds-checked reading of message bodies. Every accessor returns an error instead of
//! panicking, because these bytes come from a client or a server we do not control.

#[derive(Debug, PartialEq, Eq)]
pub struct ReadError(pub &'static str);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed message: {}", self.0)
    }
}

pub struct BodyReader<'a> {
    buf: &'a [u8],
}

impl<'a> BodyReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BodyReader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn u8(&mut self) -> Result<u8, ReadError> {
        let (&b, rest) = self.buf.split_first().ok_or(ReadError("truncated byte"))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, ReadError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ReadError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if self.buf.len() < n {
            return Err(ReadError("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string, without the terminator.
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], ReadError> {
        // Empty names (the unnamed statement and portal) are the common case: no search.
        let end = match self.buf.first() {
            Some(0) => 0,
            _ => memchr::memchr(0, self.buf).ok_or(ReadError("missing string terminator"))?,
        };
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn cstr(&mut self) -> Result<&'a str, ReadError> {
        std::str::from_utf8(self.cstr_bytes()?).map_err(|_| ReadError("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_reports_truncation() {
        let mut r = BodyReader::new(b"ab\0\0\x01\0\0\x02");
        assert_eq!(r.cstr().unwrap(), "ab");
        assert_eq!(r.i16().unwrap(), 1);
        assert!(r.i32().is_err());
        let mut r = BodyReader::new(b"no terminator");
        assert_eq!(r.cstr(), Err(ReadError("missing string terminator")));
    }
}
