//! `POST /events`: one event, or a batch (JSON array or NDJSON).

use super::error::ApiError;
use super::state::AppState;
use crate::model::{Event, EventError};
use crate::store::Outcome;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Largest batch body.
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Longest a body may take to arrive (16 MiB on loopback takes milliseconds).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) enum Form {
    Json,
    Ndjson,
}

/// The body's form from its content type. Every request with a body must name a JSON type: a
/// missing type is what a foreign page's `no-cors` fetch or beacon sends (see `security`).
pub(crate) fn form(headers: &HeaderMap) -> Result<Form, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "the request has no content type: send Content-Type: application/json (one event or an array) or application/x-ndjson"
                .into(),
        ));
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    match essence {
        "application/json" | "text/json" => Ok(Form::Json),
        e if e.ends_with("+json") => Ok(Form::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => Ok(Form::Ndjson),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "content type {essence:?} is not accepted: send application/json (one event or an array) or application/x-ndjson"
        ))),
    }
}

pub(crate) async fn ingest(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    app.metrics.requests_ingest.fetch_add(1, Ordering::Relaxed);
    let resp = match handle(&app, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(&e, ApiError::Store(s) if super::error::is_overload(s)) {
                app.metrics.overload_rejections.fetch_add(1, Ordering::Relaxed);
            }
            e.into_response()
        }
    };
    app.metrics.observe_ingest_latency(started.elapsed().as_secs_f64());
    resp
}

/// Reads a whole request body of at most `limit` bytes within [`BODY_TIMEOUT`]: a declared
/// length over the limit is refused before anything is read.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > limit as u64 {
            return Err(ApiError::BodyTooLarge);
        }
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit));
    read.await.map_err(|_| ApiError::BodyTimeout)?.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            ApiError::BodyTooLarge
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })
}

async fn handle(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let form = form(headers)?;
    let bytes = read_body(headers, body, MAX_BATCH_BYTES).await?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| ApiError::BadRequest(format!("body is not valid UTF-8: {e}")))?;
    match form {
        Form::Json if text.trim_start().starts_with('[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("body is not a valid JSON array: {e}")))?;
            batch(app, items.into_iter().map(|r| r.get())).await
        }
        Form::Json => single(app, text).await,
        Form::Ndjson => batch(app, text.lines().filter(|l| !l.trim().is_empty())).await,
    }
}

fn rejected(app: &AppState, e: EventError) -> ApiError {
    app.metrics.events_rejected.fetch_add(1, Ordering::Relaxed);
    match e {
        EventError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    }
}

async fn single(app: &AppState, text: &str) -> Result<Response, ApiError> {
    let ev = Event::parse(text).map_err(|e| rejected(app, e))?;
    let key = (ev.session_id.clone(), ev.sequence);
    let outcome = app.store.ingest(vec![ev]).await?;
    match outcome.first() {
        Some(Outcome::Stored { .. }) => {
            app.metrics.events_accepted.fetch_add(1, Ordering::Relaxed);
            Ok(Json(json!({ "ok": true })).into_response())
        }
        Some(Outcome::Duplicate) => {
            app.metrics.events_duplicate.fetch_add(1, Ordering::Relaxed);
            Ok(Json(json!({ "ok": true, "duplicate": true })).into_response())
        }
        _ => {
            app.metrics.events_conflict.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::Conflict(format!(
                "session {:?} already has an event with sequence {} and different content; the first one is kept",
                key.0, key.1
            )))
        }
    }
}

async fn batch<'a>(app: &AppState, items: impl Iterator<Item = &'a str>) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    for (i, item) in items.enumerate() {
        match Event::parse(item) {
            Ok(ev) => {
                positions.push((i, ev.session_id.clone(), ev.sequence));
                valid.push(ev);
            }
            Err(e) => {
                app.metrics.events_rejected.fetch_add(1, Ordering::Relaxed);
                errors.push(json!({ "index": i, "error": e.to_string() }));
            }
        }
    }
    let total = positions.len() + errors.len();
    let outcomes = if valid.is_empty() { Vec::new() } else { app.store.ingest(valid).await? };
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    for ((i, session, seq), outcome) in positions.into_iter().zip(outcomes) {
        match outcome {
            Outcome::Stored { .. } => accepted += 1,
            Outcome::Duplicate => duplicates += 1,
            Outcome::Conflict => {
                app.metrics.events_conflict.fetch_add(1, Ordering::Relaxed);
                errors.push(json!({
                    "index": i,
                    "error": format!("conflict: session {session:?} already has sequence {seq} with different content"),
                }));
            }
        }
    }
    app.metrics.events_accepted.fetch_add(accepted, Ordering::Relaxed);
    app.metrics.events_duplicate.fetch_add(duplicates, Ordering::Relaxed);
    errors.sort_by_key(|e| e["index"].as_u64());
    let mut body = json!({ "ok": errors.is_empty() && total > 0, "accepted": accepted, "duplicates": duplicates, "errors": errors });
    // A retried batch is all duplicates: still acknowledged.
    let status = if accepted + duplicates > 0 {
        StatusCode::OK
    } else {
        body["error"] = json!(if total == 0 {
            "the batch is empty".to_owned()
        } else {
            format!("none of the {total} events was accepted")
        });
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(body)).into_response())
}
