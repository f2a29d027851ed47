//! The event model, with no I/O: the envelope and its validation, the payload's fields, model
//! prices, and session derivation.

mod event;
mod payload;
mod price;
mod session;

pub use event::{check_session_id, parse_timestamp, Event, EventError, SpanRef, SpanRole, MAX_EVENT_BYTES};
pub use payload::{Cost, Payload};
pub use price::{Price, PriceError, Prices, PRICES_AS_OF};
pub use session::{
    turn_step, SessionRow, SessionState, Stopped, CONVERSATION_ATTRIBUTES, GUARD_DECISION, RESUME, STOP,
};
