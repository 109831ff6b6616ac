//! `classify::hint` on arbitrary UTF-8 text: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let hint = pgroute::classify::hint(sql);
        assert_eq!(hint.route, pgroute::classify::route_hint(sql));
    }
});
