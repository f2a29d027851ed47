//! Arbitrary bytes as one event body (`POST /events`, `application/json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The HTTP layer refuses a body that is not UTF-8 before the validator sees it.
    if let Ok(text) = std::str::from_utf8(data) {
        aop_fuzz::check_event(text);
    }
});
