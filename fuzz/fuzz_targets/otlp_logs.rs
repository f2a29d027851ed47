//! OTLP logs export requests (protobuf, OTLP/JSON, gzip): decoding, the mapping to AOP events,
//! and the metrics decoder's count.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::check_otlp_logs(data));
