//! `protocol::BodyReader` driven by the input: byte 0 says how many op bytes follow, each op
//! byte picks an accessor, the rest is the body; checks how much each call consumes.
//! (`frontend::prepared::split_parse/split_bind/split_target` are not public: not fuzzed.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgroute::protocol::BodyReader;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let (ops, body) = rest.split_at((n as usize % 32).min(rest.len()));
    let mut r = BodyReader::new(body);
    for &op in ops {
        let before = r.remaining();
        // (bytes consumed on success, whether a failed call may still consume)
        let (used, consumes_on_error) = match op % 7 {
            0 => (r.u8().ok().map(|_| 1), false),
            1 => (r.i16().ok().map(|_| 2), false),
            2 => (r.i32().ok().map(|_| 4), false),
            3 => (r.bytes(op as usize >> 3).ok().map(<[u8]>::len), false),
            4 => (r.cstr_bytes().ok().map(|s| s.len() + 1), false),
            // cstr takes the string off even when it is not UTF-8.
            5 => (r.cstr().ok().map(|s| s.len() + 1), true),
            _ => {
                assert_eq!(r.rest().len(), before);
                (Some(0), false)
            }
        };
        match used {
            Some(used) => assert_eq!(before - r.remaining(), used),
            None if !consumes_on_error => assert_eq!(r.remaining(), before, "a failed read consumed bytes"),
            None => assert!(r.remaining() <= before),
        }
    }
});
