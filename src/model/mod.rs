//! The event model, with no I/O: the envelope and its validation, the payload's fields, and
//! session derivation.

mod event;
mod payload;
mod session;

pub use event::{parse_timestamp, Event, EventError, SpanRef, SpanRole, MAX_EVENT_BYTES};
pub use payload::Payload;
pub use session::{SessionRow, SessionState};
