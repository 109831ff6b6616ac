//! `frontend::startup::parse_startup` on an arbitrary startup packet body: never panics, and
//! a parsed StartupMessage re-encodes to a body that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgroute::frontend::startup::{parse_startup, Parsed};
use pgroute::protocol::startup_code;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Connect { params }) = parse_startup(data) {
        let mut again = startup_code::PROTOCOL_3.to_be_bytes().to_vec();
        for (name, value) in &params {
            assert!(!name.is_empty() && !name.contains('\0') && !value.contains('\0'));
            again.extend_from_slice(name.as_bytes());
            again.push(0);
            again.extend_from_slice(value.as_bytes());
            again.push(0);
        }
        again.push(0);
        assert_eq!(parse_startup(&again).unwrap(), Parsed::Connect { params });
    }
});
