//! Arbitrary bytes as a batch body: NDJSON lines, or a JSON array.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        aop_fuzz::check_batch(text);
    }
});
