//! aop: a local collector for the Agent Observability Protocol.
//!
//! # Layout
//! - [`model`]: the event envelope and its validation, and session derivation. No I/O.
//! - [`detect`]: the anomaly detectors, pure: (per-session state, event) -> alerts.
//! - [`store`]: the only code that knows SQL. One writer thread per database (group commit);
//!   reads on their own connections.
//! - [`hub`]: fans committed events out to live subscribers without ever blocking the writer.
//! - [`http`]: routes, status codes, SSE framing, the Host/token/CORS guard.
//! - [`dashboard`]: the embedded front end's files.
//! - [`config`] and [`cli`]: one `Config` from flags, environment, file and defaults.
//! - [`app`]: binds, opens the store, serves, and shuts down within a bound.
//! - [`demo`]: `aop demo`, simulated agents for a first look at the dashboard.
//! - [`bench`]: `aop bench`, the load generator behind `BENCHMARKS.md`.
//! - [`metrics`]: counters for `/metrics`. [`probe`]: "is that an aop on the port?".

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
mod dashboard;
pub mod demo;
pub mod detect;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod store;
