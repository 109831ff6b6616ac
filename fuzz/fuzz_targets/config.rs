//! `config::Config::parse` on arbitrary UTF-8 TOML: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pgroute::config::Config::parse(text, "fuzz.toml");
    }
});
