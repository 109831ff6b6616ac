//! `classify::Classifier::classify` on arbitrary UTF-8 SQL: never panics, and the cached
//! answer (second call) equals the uncached one (first call).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgroute::classify::Classifier;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let classifier = Classifier::new(100);
    let miss = classifier.classify(sql);
    let hit = classifier.classify(sql);
    assert_eq!(*miss, *hit, "cache hit differs from miss for {sql:?}");
});
