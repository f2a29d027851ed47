//! The export and the stream write stored events as they are, one per line (`raw + "\n"`, and
//! `data: raw`): there is no encoder to fuzz but the property it relies on, that an accepted
//! event's stored text can never break a line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        aop_fuzz::check_framing(text);
    }
});
