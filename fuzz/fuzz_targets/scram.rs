//! The server side of SCRAM-SHA-256 (and -PLUS) on arbitrary client messages: the first
//! byte picks the channel binding state, the rest is split at the first NUL into the
//! client-first and client-final messages. Never panics; a made-up proof never passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgroute::auth::scram::{Binding, ServerExchange, Verifier};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let binding = match mode % 3 {
        0 => Binding::Unavailable,
        1 => Binding::Offered { data: b"end point", plus: false },
        _ => Binding::Offered { data: b"end point", plus: true },
    };
    let (first, last) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if let Ok((exchange, _)) = ServerExchange::start(Verifier::impossible("nobody"), first, binding) {
        assert!(exchange.finish(last).is_err(), "no proof satisfies the impossible verifier");
    }
});
