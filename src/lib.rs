//! aop: a local collector for the Agent Observability Protocol.
//!
//! # Layout
//! - [`model`]: the event envelope and its validation, and session derivation. No I/O.
//! - [`detect`]: the anomaly detectors, pure: (per-session state, event) -> alerts.
//! - [`store`]: the only code that knows SQL. [`store::apply`] is the backend-independent part of
//!   ingest (event in, session row and alerts out, and every other decision a writer makes: where
//!   a held place sends an event, a child's end, stalls), pure; each backend's writer (SQLite: one
//!   thread per database; PostgreSQL: one task per instance, many on one database) does group
//!   commit and writes what it says, and reads run on their own connections.
//! - [`otlp`]: OpenTelemetry trace export requests decoded and mapped to AOP events. No I/O.
//! - [`hub`]: fans committed events out to live subscribers without ever blocking the writer.
//! - [`http`]: routes, status codes, SSE framing, the Host/Origin/token/CORS guard, and the
//!   embedded front end's files.
//! - [`config`] and [`cli`]: one `Config` from flags, environment, file and defaults.
//! - [`app`]: binds, opens the store, serves, and shuts down within a bound.
//! - [`notify`]: alerts delivered to webhooks (JSON, signed, or Slack) from the store's outbox,
//!   at least once, within each target's rate; `aop notify test`.
//! - [`serve`]: connections: the cap and its refusals, HTTP/1.1 or HTTP/2 by the first bytes,
//!   idle connections closed, the drain on stop.
//! - [`guard`]: what an agent is told before it acts (allow, ask, deny), from a session's facts
//!   as the store's writer last put them. No I/O.
//! - [`hooks`]: Claude Code's hook events read as steps of its session, and the guard's answer in
//!   its hook output form. No I/O.
//! - [`compare`]: two runs aligned step by step, their first divergence and deltas. No I/O.
//! - [`mcp`]: the MCP server: tools that ask the collector's API about runs, at `/mcp` (in
//!   process) and as `aop mcp` over stdio (over HTTP).
//! - [`diff`]: `aop diff`, two runs compared from files or a collector, rendered side by side.
//! - [`copy`]: `aop copy`, every session's events from one store into another.
//! - [`demo`]: `aop demo`, simulated agents for a first look at the dashboard.
//! - [`bench`]: `aop bench`, the load generator behind `BENCHMARKS.md`.
//! - [`jsonl`]: exports read line by line, each line's size bounded. [`clean`]: agents' text as
//!   the command line prints it (control characters escaped).
//! - [`client`]: the small HTTP/1.1 client those commands share. [`metrics`]: counters for
//!   `/metrics`. [`probe`]: "is that an aop on the port?".

pub mod app;
pub mod bench;
pub mod clean;
pub mod cli;
pub mod client;
pub mod compare;
pub mod config;
pub mod copy;
pub mod demo;
pub mod detect;
pub mod diff;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod jsonl;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod otlp;
pub mod probe;
pub mod serve;
pub mod store;
