//! OTLP export requests (protobuf, OTLP/JSON, gzip): decoding and the mapping to AOP events.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::check_otlp(data));
