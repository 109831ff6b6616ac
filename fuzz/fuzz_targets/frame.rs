//! `protocol::split_frame` (built on `peek_frame`, which the session reads server replies with) on arbitrary bytes, taking frames until it wants more or refuses: never panics.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgroute::protocol::split_frame;

const MAX_MESSAGE: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut taken = 0;
    while let Ok(Some(frame)) = split_frame(&mut buf, MAX_MESSAGE) {
        let raw = frame.raw();
        let len = i32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
        assert_eq!(len as usize, raw.len() - 1, "length field disagrees with the frame taken");
        assert_eq!(frame.body().len(), raw.len() - 5);
        assert!(raw.len() <= MAX_MESSAGE);
        taken += raw.len();
    }
    assert_eq!(taken + buf.len(), data.len(), "bytes lost or invented while splitting");
});
