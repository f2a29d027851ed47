//! aop: a local collector for the Agent Observability Protocol.
//!
//! # Layout
//! - [`model`]: the event envelope and its validation, and session derivation. No I/O.
pub mod model;
