//! HTTP: the only module that knows routes, status codes and SSE framing.
//!
//! Routes are split by resource: [`events`] (ingest), [`sessions`] (reads, export, deletion,
//! alerts), [`stream`] (SSE), [`ops`] (health, metrics, index), [`dashboard`] (the front end's
//! files). [`security`] guards them all. Every route is in one table, [`endpoints`].

mod body;
mod compare;
mod dashboard;
mod error;
mod events;
mod guard;
mod hooks;
mod ops;
mod otlp;
mod params;
mod security;
mod sessions;
mod state;
mod stream;

pub use body::{Budget, IN_FLIGHT_BYTES};
pub use compare::MAX_COMPARES;
pub use error::ApiError;
pub use security::{too_many_connections, Security};
pub use state::{AppState, Notifications, MAX_EXPORTS};

use axum::routing::{get, post, MethodRouter};
use axum::Router;
use std::sync::Arc;

/// One route: its path, its handlers, and what `GET /` says of each method (undocumented
/// routes, such as the dashboard's files, are served but not listed).
struct Endpoint {
    path: &'static str,
    handlers: MethodRouter<AppState>,
    docs: &'static [(&'static str, &'static str)],
}

/// Every route, in one table: the router and the index at `GET /` are both built from it.
fn endpoints() -> Vec<Endpoint> {
    let e = |path, handlers, docs| Endpoint { path, handlers, docs };
    vec![
        e("/", get(ops::index), &[]),
        e(
            "/events",
            post(events::ingest),
            &[("POST", "ingest one event (JSON object) or a batch (JSON array or application/x-ndjson)")],
        ),
        e(
            "/v1/traces",
            post(otlp::http_traces),
            &[("POST", "OTLP/HTTP traces (application/x-protobuf or application/json, gzip or not)")],
        ),
        e(
            "/v1/logs",
            post(otlp::http_logs),
            &[("POST", "OTLP/HTTP logs and events (application/x-protobuf or application/json, gzip or not)")],
        ),
        e("/v1/metrics", post(otlp::http_metrics), &[("POST", "OTLP/HTTP metrics: answered, counted as not kept")]),
        e(
            otlp::Signal::Traces.grpc_path(),
            post(otlp::grpc_traces),
            &[("POST", "OTLP/gRPC traces (HTTP/2 cleartext on this port)")],
        ),
        e(
            otlp::Signal::Logs.grpc_path(),
            post(otlp::grpc_logs),
            &[("POST", "OTLP/gRPC logs (HTTP/2 cleartext on this port)")],
        ),
        e(
            otlp::Signal::Metrics.grpc_path(),
            post(otlp::grpc_metrics),
            &[("POST", "OTLP/gRPC metrics: answered, counted as not kept")],
        ),
        e(
            "/sessions",
            get(sessions::list),
            &[("GET", "sessions, most recent activity first (limit, cursor, status, agent_id, parent_session_id, q)")],
        ),
        e(
            "/sessions/{id}",
            get(sessions::detail).delete(sessions::delete),
            &[
                ("GET", "a session with its events (after, limit) and alerts (alerts_after)"),
                ("DELETE", "delete a session, its events and alerts"),
            ],
        ),
        e("/sessions/{id}/children", get(sessions::children), &[("GET", "direct child sessions")]),
        e(
            "/sessions/{id}/compare/{other}",
            get(compare::compare),
            &[("GET", "the two runs aligned step by step, their first divergence and deltas")],
        ),
        e(
            "/sessions/{id}/similar",
            get(compare::similar),
            &[("GET", "the agent's runs most like this one, the best to compare with first (limit)")],
        ),
        e("/sessions/{id}/export", get(sessions::export), &[("GET", "the session's events as JSON lines")]),
        e(
            "/sessions/{id}/deliveries",
            get(sessions::deliveries),
            &[("GET", "the notifications of the session's alerts: per alert and target, pending, delivered or failed")],
        ),
        e(
            "/sessions/{id}/pin",
            post(sessions::pin).delete(sessions::unpin),
            &[("POST", "keep a session from retention (DELETE to unpin)")],
        ),
        e(
            "/sessions/{id}/stop",
            post(guard::stop),
            &[("POST", "stop a run: the guard denies its next calls ({\"reason\"} optional)")],
        ),
        e("/sessions/{id}/resume", post(guard::resume), &[("POST", "lift an operator's stop")]),
        e(
            "/guard",
            post(guard::ask),
            &[("POST", "ask before acting: {session_id, agent_id, tool, input} → allow, ask or deny with reasons")],
        ),
        e(
            "/hooks/claude-code",
            post(hooks::claude_code),
            &[(
                "POST",
                "Claude Code's hook events: recorded in their session; PreToolUse answered with the guard's decision",
            )],
        ),
        e(
            "/alerts",
            get(sessions::alerts),
            &[("GET", "alerts across sessions, newest first (limit, cursor, session_id, type)")],
        ),
        e(
            "/stream",
            get(stream::stream),
            &[("GET", "live Server-Sent Events (session_id, agent_id, type, since / Last-Event-ID)")],
        ),
        e("/health", get(ops::health), &[("GET", "liveness and store status")]),
        e("/metrics", get(ops::metrics), &[("GET", "Prometheus metrics")]),
        e("/dashboard", get(dashboard::redirect), &[]),
        e("/dashboard/", get(dashboard::index), &[("GET", "the live dashboard")]),
        e("/dashboard/{*name}", get(dashboard::file), &[]),
    ]
}

/// The MCP endpoint, served by the MCP SDK rather than from the table.
pub(super) const MCP_PATH: &str = "/mcp";
const MCP_DOCS: &[(&str, &str)] = &[(
    "POST",
    "MCP (Streamable HTTP, stateless): tools to list, read and compare sessions and alerts (aop mcp serves them over stdio)",
)];

/// The collector: every route of the table, `/mcp`, and the guard in front of them all.
/// `mcp_allow_stop` offers the MCP `stop_session` tool.
pub fn router(state: AppState, security: Security, mcp_allow_stop: bool) -> Router {
    let security = Arc::new(security);
    let shutdown = state.shutdown.child_token();
    let api = api(state);
    let mcp = crate::mcp::http_service(api.clone(), mcp_allow_stop, shutdown);
    // The SDK refuses a body past its limit without reading it, so the connection is closed
    // after the answer: say so, or a client reuses it and loses its next request.
    let mcp = tower::ServiceBuilder::new().map_response(close_when_too_large).service(mcp);
    api.route_service(MCP_PATH, mcp)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&security), security::guard))
        .layer(security.cors())
}

/// The routes of the table, unguarded: what the MCP tools call in process (a request to `/mcp`
/// has passed the guard already).
fn api(state: AppState) -> Router {
    let table = endpoints();
    let docs = MCP_DOCS.iter().map(|(method, doc)| (format!("{method} {MCP_PATH}"), (*doc).into()));
    let index: serde_json::Map<String, serde_json::Value> = table
        .iter()
        .flat_map(|e| e.docs.iter().map(move |(method, doc)| (format!("{method} {}", e.path), (*doc).into())))
        .chain(docs)
        .collect();
    let mut router = Router::new();
    for e in table {
        router = router.route(e.path, e.handlers);
    }
    router
        .layer(axum::Extension(ops::Index(Arc::new(index))))
        .fallback(|| async { ApiError::NotFound("no such endpoint; GET / lists them".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .with_state(state)
}

fn close_when_too_large<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    resp
}
