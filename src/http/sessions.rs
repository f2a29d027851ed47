//! `/sessions` and `/alerts`: lists, detail, children, export and deletion.

use super::error::ApiError;
use super::params::Params;
use super::state::AppState;
use crate::store::apply::rfc3339_ms;
use crate::store::{AlertQuery, DetailQuery, SessionQuery, StoredEvent};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Events per detail page unless `limit` says otherwise, and the most it may say.
const DETAIL_DEFAULT_LIMIT: usize = 1000;
const DETAIL_MAX_LIMIT: usize = 10_000;
/// Alerts per detail page (`alerts_after` pages on; a session rarely has more than a handful).
const DETAIL_ALERTS: usize = 10_000;

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

pub(crate) async fn list(State(app): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let q = SessionQuery {
        limit: p.limit(100, 1000)?,
        cursor: p.get("cursor"),
        status: p.get("status"),
        agent_id: p.get("agent_id"),
        parent_session_id: p.get("parent_session_id"),
        conversation: p.get("conversation"),
        q: p.get("q"),
    };
    Ok(Json(app.store.list_sessions(q).await?).into_response())
}

pub(crate) async fn detail(
    State(app): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let q = DetailQuery {
        after: p.int("after")?,
        limit: p.limit(DETAIL_DEFAULT_LIMIT, DETAIL_MAX_LIMIT)?,
        alerts_after: p.int("alerts_after")?,
        alerts_limit: DETAIL_ALERTS,
    };
    let d = app.store.session_detail(id.clone(), q).await?.ok_or_else(|| unknown(&id))?;
    // Events and alerts are stored as JSON text: splice them in rather than re-serialise.
    let mut out = String::with_capacity(256 + d.events.iter().map(|e| e.json.len() + 1).sum::<usize>());
    out.push_str("{\"session\":");
    out.push_str(&serde_json::to_string(&d.session).map_err(|e| ApiError::Internal(e.to_string()))?);
    out.push_str(",\"events\":");
    push_array(&mut out, d.events.iter().map(|e| e.json.as_str()));
    out.push_str(",\"alerts\":");
    push_array(&mut out, d.alerts.iter().map(String::as_str));
    let next_after = match d.events.last() {
        Some(StoredEvent { sequence, .. }) if d.more => sequence.to_string(),
        _ => "null".to_owned(),
    };
    let next_alerts_after = d.next_alerts_after.map_or_else(|| "null".to_owned(), |id| id.to_string());
    out.push_str(&format!(",\"next_after\":{next_after},\"next_alerts_after\":{next_alerts_after}}}"));
    Ok(json_response(out))
}

fn push_array<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
}

pub(super) fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!("no session {id:?}"))
}

pub(crate) async fn children(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let rows = app.store.children(id.clone()).await?.ok_or_else(|| unknown(&id))?;
    Ok(Json(serde_json::json!({ "sessions": rows })).into_response())
}

pub(crate) async fn export(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let permit = Arc::clone(&app.exports).try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!("{} exports are already in progress; retry shortly", super::state::MAX_EXPORTS))
    })?;
    let mut stream = app.store.export(id.clone()).await?.ok_or_else(|| unknown(&id))?;
    // A failure in the first chunk can still be a proper error status; later ones can only cut
    // the body short (the client sees an incomplete response, never a truncated "success").
    let first = stream.next().await.transpose()?;
    let stream = futures_util::stream::iter(first.map(Ok)).chain(stream);
    // Session ids are restricted to [A-Za-z0-9_.:@-] on ingest; filter anyway so no header can be injected.
    let safe: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || "_.:@-".contains(*c)).collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"session-{safe}.jsonl\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    // The permit goes when the body does: when it is sent, cut off, or the client leaves.
    let body = Body::from_stream(stream.map_err(std::io::Error::other).inspect(move |_| {
        let _held = &permit;
    }));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

pub(crate) async fn delete(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if app.store.delete_session(id.clone()).await? {
        Ok(Json(serde_json::json!({ "ok": true })).into_response())
    } else {
        Err(unknown(&id))
    }
}

/// `POST /sessions/:id/pin`: retention never deletes a pinned session. Like every POST it needs a
/// JSON content type (the body is ignored): an HTML form on another site cannot send one.
pub(crate) async fn pin(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::events::form(&headers)?;
    set_pin(app, id, true).await
}

pub(crate) async fn unpin(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_pin(app, id, false).await
}

async fn set_pin(app: AppState, id: String, pinned: bool) -> Result<Response, ApiError> {
    if app.store.pin(id.clone(), pinned).await? {
        Ok(Json(serde_json::json!({ "ok": true, "pinned": pinned })).into_response())
    } else {
        Err(unknown(&id))
    }
}

pub(crate) async fn alerts(State(app): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let q = AlertQuery {
        limit: p.limit(100, 1000)?,
        cursor: p.get("cursor"),
        session_id: p.get("session_id"),
        kind: p.get("type"),
    };
    let page = app.store.alerts(q).await?;
    let mut out = String::from("{\"alerts\":");
    push_array(&mut out, page.alerts.iter().map(String::as_str));
    out.push_str(",\"next_cursor\":");
    out.push_str(&serde_json::to_string(&page.next_cursor).unwrap_or_else(|_| "null".into()));
    out.push('}');
    Ok(json_response(out))
}

/// `GET /sessions/:id/deliveries`: each alert's notifications, one per target, with their state.
/// A target is named as the configuration names it (never by its URL); a delivery to a target
/// this instance does not have (another instance's, or one removed since) by its key.
pub(crate) async fn deliveries(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    use crate::store::outbox::{DELIVERED, FAILED, PENDING, SUMMARISED};
    let rows = app.store.deliveries(id.clone()).await?.ok_or_else(|| unknown(&id))?;
    let labels = &app.notify.labels;
    let out: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|d| {
            let state = d.state.as_str();
            let done = d.done_ms.and_then(rfc3339_ms);
            serde_json::json!({
                "alert_id": d.alert_id,
                "alert_type": d.alert_type,
                "target": labels.get(&d.target).cloned().unwrap_or_else(|| format!("target {}", d.target)),
                "target_key": d.target,
                "state": state,
                "attempts": d.attempts,
                "queued_at": rfc3339_ms(d.created_ms),
                "next_attempt_at": if state == PENDING { rfc3339_ms(d.next_ms) } else { None },
                "delivered_at": if state == DELIVERED || state == SUMMARISED { done.clone() } else { None },
                "failed_at": if state == FAILED { done } else { None },
                "last_error": d.error,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "deliveries": out })).into_response())
}
