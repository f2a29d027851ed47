//! OpenTelemetry traces in (`OTLP.md`): decoding export requests and turning their spans into
//! AOP events. No I/O: `http::otlp` receives the bytes and stores what this module derives.

mod attrs;
mod classify;
mod decode;
mod map;
mod payload;

pub use decode::{gunzip, json, protobuf, DecodeError, MAX_OTLP_BYTES};
pub use map::{map_request, Mapped, Pricing};
