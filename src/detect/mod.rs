//! Anomaly detectors (`COLLECTOR.md`, section Alerts): pure functions of per-session state, one
//! event and the configuration. No I/O and no clock: the event-time rules read the events' own
//! timestamps, so replaying a session raises the same alerts; the one collector-time rule (stall)
//! is [`stall_check`], which a timer outside calls with the collector's clock.
//!
//! # Layout
//! - `config`: the thresholds ([`DetectConfig`]); `alert`: what a detector raises ([`NewAlert`])
//!   and its one wire form; `fmt`: durations and times for messages.
//! - `detector`: [`SessionDetector`], one session's detectors folded over its events, and
//!   [`stall_check`].
//! - `json`: canonical JSON, stable hashes and short previews of payload values.
//! - `loops`: tool-call pairing (which also tells the stall timer whether a call is open) and `loop`.
//! - `spend`: `cost_spike`, over four series of increments, and the cost budget.
//! - `streaks`: `confidence_drop` and `error_cascade` (tool failures in a row, failed children).
//! - `replay`: every detector over exported JSONL, offline.
//!
//! **Invariant:** a [`SessionDetector`] is bounded whatever the session's length (see
//! [`MAX_CALLS`], [`MAX_SAMPLES`], [`MAX_CHILD_FAILURES`]): the store saves it beside the session
//! every 32 events, in the same transaction, and replays the events after the saved state on load
//! (see `store::apply`), so a restart resumes mid-episode without losing a pending detection or
//! raising a duplicate.
//!
//! **Invariant:** no input panics. Payloads are read as JSON values; a field of the wrong type is
//! treated as absent.

mod alert;
mod config;
mod detector;
mod fmt;
mod json;
mod loops;
mod replay;
mod spend;
mod streaks;
#[cfg(test)]
mod testkit;

pub use alert::{with_alert_id, AlertKind, NewAlert, Severity};
pub use config::DetectConfig;
pub use detector::{stall_check, GuardView, SessionDetector};
pub(crate) use json::cut;
pub(crate) use json::{canonical, digest, quote};
pub use loops::{LoopVerdict, LoopView, MAX_CALLS};
pub use replay::{replay, ReplayError, ReplayReport};
pub use spend::MAX_SAMPLES;
pub use streaks::MAX_CHILD_FAILURES;
