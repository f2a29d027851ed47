//! `/health`, `/metrics` and the index at `/`.

use super::security::Trusted;
use super::state::AppState;
use crate::metrics::Gauges;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// `/health` answers everyone (load balancers, the dashboard before it has a token); where the
/// files are and which process serves them is for callers holding the token.
pub(crate) async fn health(State(app): State<AppState>, trusted: Option<Extension<Trusted>>) -> Response {
    let store = app.store.health();
    let status = if store.writable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({
        "ok": store.writable,
        "version": env!("CARGO_PKG_VERSION"),
        "subscribers": app.hub.subscriber_count(),
        "uptime_secs": app.started.elapsed().as_secs(),
        "pid": std::process::id(),
        "stall_after_secs": app.stall_after_secs,
        "store": store,
        "notify": notify_health(&app),
    });
    if !trusted.is_some_and(|Extension(Trusted(t))| t) {
        if let Some(o) = body.as_object_mut() {
            o.remove("pid");
        }
        if let Some(o) = body["store"].as_object_mut() {
            o.remove("path");
        }
    }
    (status, Json(body)).into_response()
}

/// Notifications as `/health` shows them: the targets configured here, and the deliveries waiting
/// and given up in the whole store.
fn notify_health(app: &AppState) -> serde_json::Value {
    let n = app.notify.status.view();
    json!({ "targets": n.targets, "pending": n.pending, "failed": n.failed })
}

pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let store = app.store.health();
    let gauges = Gauges {
        subscribers: app.hub.subscriber_count(),
        queue_depth: store.queue_depth,
        store_bytes: store.bytes,
        store_writable: store.writable,
        commits: store.commits,
        alerts: store.alerts,
        ingest_bytes: app.ingest.held() as u64,
        notify: app.notify.status.view(),
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        app.metrics.render(&gauges),
    )
        .into_response()
}

/// The documented endpoints, `"METHOD path" -> what it does`, built from the route table.
#[derive(Clone)]
pub(crate) struct Index(pub(crate) Arc<serde_json::Map<String, serde_json::Value>>);

pub(crate) async fn index(Extension(Index(endpoints)): Extension<Index>, headers: HeaderMap) -> Response {
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return Redirect::to("/dashboard/").into_response();
    }
    Json(json!({ "name": "aop", "version": env!("CARGO_PKG_VERSION"), "endpoints": *endpoints })).into_response()
}
