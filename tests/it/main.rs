//! Integration tests of the `aop` collector: the real binary, over real HTTP, on a real SQLite
//! file. Each test starts its own collector in a sandbox (see [`support`]), so tests run in
//! parallel and never share state.
//!
//! Layout, one file per area of `COLLECTOR.md`:
//! - [`ingest`]: `POST /events` — validation, limits, idempotency, batches, what is stored.
//! - [`sessions`]: derivation, the list and its paging and filters, detail, children, export, delete.
//! - [`stream`]: `GET /stream` — framing, order, resumption, filters, slow subscribers.
//! - [`alerts`]: the detectors through the API — stored, listed, streamed, replayed, restarted.
//! - [`prices`]: costs priced from a model and its tokens, the config file's prices, models
//!   without a price, and the budget on priced costs.
//! - [`security`]: the Host check, CORS, the access token, file permissions, what is never logged.
//! - [`hostile`]: slow, endless and idle clients, bodies and headers built to hurt, and the
//!   validator's properties (in-process and over HTTP).
//! - [`lifecycle`]: crashes and clean stops, restarts, refusals at start-up, the command line.
//! - [`ops`]: `/health`, `/metrics`, the index, the dashboard's routes, unknown routes.
//! - [`reliability`]: SIGKILL at random moments, SIGTERM under load, overload, stalled
//!   subscribers, a full disk, retention, damaged databases.
//! - [`otlp`]: OTLP/HTTP trace ingest — protobuf, JSON, gzip, retries, bad bodies, partial success.
//! - [`otlp_logs`]: OTLP logs and metrics — records in their trace's or conversation's session,
//!   stored once, partial success, metrics answered as not kept, bad and amplifying bodies.
//! - [`otlp_clients`]: OTLP trace ingest driven by real OpenTelemetry clients (the Python SDK's
//!   exporters and two `openai` instrumentors, run from `tests/otel/` in a pinned environment).
//! - [`coding_agents`]: the real Claude Code and Codex CLIs, offline in a loopback-only network
//!   namespace against a scripted model, their OTLP logs, metrics and spans sent to aop.
//! - [`coding_agents_mcp`]: the same CLIs asking aop about runs over MCP, each configured with the
//!   README's block for it — Claude Code over HTTP (`claude mcp add`) and stdio (`.mcp.json`), Codex
//!   over stdio (`[mcp_servers.aop]`).
//! - [`guard`]: `POST /guard` and the operator's stop — each condition and its decision, asks and
//!   denies recorded and streamed, stop and resume (in a fleet too), bad input, token and Origin.
//! - [`hooks`]: Claude Code's hook events — one session with its telemetry, one step per tool
//!   call, `PreToolUse` answered by the guard, malformed bodies, `aop hooks claude-code`.
//! - [`fleet`]: several instances on one real PostgreSQL — one stream order, resumption on any
//!   instance, alerts once, instances and the database killed under load.
//! - [`fleet_order`]: the fleet's order when positions are given after commit — an instance or a
//!   sequencer killed between commit and numbering, long transactions elsewhere, one session
//!   written through every instance at once.
//! - [`haproxy`]: the fleet behind HAProxy with the committed `deploy/haproxy.cfg` — requests
//!   spread, streams unbuffered, OTLP/gRPC through its TCP frontend, an instance killed under a
//!   subscriber and a writer.
//! - [`pg_migrate`]: a database an older aop wrote, upgraded in place: positions and detectors kept.
//! - [`pg_tls`]: the PostgreSQL URL's `sslmode`s against a real server with TLS, end to end.
//! - [`haproxy`]: three instances behind the committed HAProxy config — spread, streams, failover.
//! - [`browser`]: the dashboard in headless Chromium (live views, export and delete, reconnects,
//!   100k events), and pages of another origin trying to write or to get the token.
//! - [`copy`]: `aop copy` between SQLite files and PostgreSQL — the same sessions, exports and
//!   alerts at the destination, nothing copied twice, resumed after a kill, refusals.
//! - [`detect`]: `aop detect FILE` — the detectors over an export offline, what it prints of
//!   agents' text, lines longer than any event.
//! - [`diff`]: `aop diff A B` — two runs compared from exported files, through the collector and
//!   mixed (the same document each way), its text and colours, its exit codes.
//! - [`packaging`]: the wheel and npm packages of `scripts/package.sh` installed and run, what
//!   `cargo package` holds, `aop --version` and `aop completions`.
//! - [`notify`]: alert notifications to a real webhook receiver — each alert once and signed,
//!   retries with one delivery id, receivers down, collectors killed, a fleet delivering once, the
//!   rate cap's summary, Slack's shape, `aop notify test`, refusals, counts and delivery states.
//! - [`mcp`]: the MCP server through the official Python SDK over stdio and Streamable HTTP and the
//!   TypeScript SDK over HTTP —
//!   every tool, the same answers both ways, paging, bounds, bad arguments, the token and Origin
//!   rules, `stop_session` only when allowed, the README's client configurations, two instances on
//!   one PostgreSQL.
//! - [`pg_harness`]: the PostgreSQL servers tests start for themselves ([`support::pg`]) — fresh
//!   clusters, databases, crashes and restarts, terminated sessions, TLS.

mod support;

mod alerts;
mod browser;
mod coding_agents;
mod coding_agents_mcp;
mod compare;
mod copy;
mod detect;
mod diff;
mod fleet;
mod fleet_order;
mod guard;
mod haproxy;
mod hooks;
mod hostile;
mod ingest;
mod lifecycle;
mod mcp;
mod notify;
mod ops;
mod otlp;
mod otlp_clients;
mod otlp_logs;
mod packaging;
mod pg_harness;
mod pg_migrate;
mod pg_tls;
mod prices;
mod reliability;
mod security;
mod sessions;
mod stream;
