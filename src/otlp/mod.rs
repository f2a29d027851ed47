//! OpenTelemetry in (`OTLP.md`): decoding export requests and turning their spans and log records
//! into AOP events (metrics are counted, not kept). No I/O: `http::otlp` receives the bytes and
//! stores what this module derives.

mod agents;
mod attrs;
mod classify;
mod decode;
mod genai;
mod logs;
mod map;
mod metrics;
mod payload;
mod reject;
mod split;

pub use decode::{
    budget, gunzip, records, spans, Batch, DecodeError, Encoding, Entry, Reserve, Scoped, MAX_ATTRIBUTES, MAX_ITEMS,
    MAX_ITEM_BYTES, MAX_LINKS, MAX_OTLP_BYTES, MAX_SPAN_EVENTS, MAX_VALUE_DEPTH,
};
pub use logs::map_logs;
pub use map::{derive_budget, map_request, Mapped, Pricing, MAX_TIME_NS};
pub use metrics::{data_points, Points};
pub use reject::{Rejections, SHOWN};
