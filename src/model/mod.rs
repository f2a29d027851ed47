//! The event model, with no I/O: the envelope and its validation, and session derivation.

mod event;
mod session;

pub use event::{parse_timestamp, Event, EventError, MAX_EVENT_BYTES};
pub use session::{SessionRow, SessionState};
