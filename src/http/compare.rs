//! `GET /sessions/:id/compare/:other` and `GET /sessions/:id/similar`: the store's sessions read
//! into [`compare`](crate::compare)'s pure functions.
//!
//! A comparison reads both sessions page by page (each page parsed into steps on the blocking
//! pool, so the page's text is dropped before the next is read), aligns them on the blocking
//! pool, and is refused past [`compare::MAX_EVENTS`] events a side. At most [`MAX_COMPARES`] run
//! at once, from the first read to the answer's last byte; more get 503, as exports do.

use super::error::ApiError;
use super::params::Params;
use super::state::AppState;
use crate::compare::{self, Side};
use crate::model::{Event, SessionRow};
use crate::store::{DetailQuery, SessionQuery};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// Comparisons made at once: each holds both runs' steps (about 200 bytes an event) while it runs.
pub const MAX_COMPARES: usize = 4;
/// Events read per page of a session.
const PAGE: usize = 10_000;
/// Sessions of the agent looked at for `/similar`, most recent first.
const SIMILAR_CANDIDATES: usize = 5_000;

pub(crate) async fn compare(
    State(app): State<AppState>,
    Path((a, b)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    // Both sides exist and are small enough before anything is held or read: a missing side is
    // a 404 (even when every comparison slot is taken), not the end of reading the other.
    for id in [&a, &b] {
        let one = DetailQuery { after: None, limit: 1, alerts_after: None, alerts_limit: 1 };
        let d = app.store.session_detail(id.clone(), one).await?.ok_or_else(|| super::sessions::unknown(id))?;
        too_large(id, d.session.event_count)?;
    }
    let permit = Arc::clone(&app.compares).try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!("{MAX_COMPARES} comparisons are already in progress; retry shortly"))
    })?;
    let a = read_side(&app, a).await?;
    let b = read_side(&app, b).await?;
    let body = tokio::task::spawn_blocking(move || {
        let c = compare::compare(a, b);
        // About 150 bytes a step: one allocation rather than a doubling series.
        let mut out = Vec::with_capacity(4096 + c.steps.len() * 160);
        serde_json::to_writer(&mut out, &c).map(|()| out)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("comparison task failed: {e}")))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let body = Body::from_stream(held_body(Bytes::from(body), permit));
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// How long a client may take no part of an answer before it is cut off and the answer's memory
/// freed: its reader has gone, or is stuck.
const IDLE_READER: Duration = Duration::from_secs(30);
/// The answer is handed to the connection this much at a time.
const CHUNK: usize = 64 * 1024;

/// An answer held until its client has taken it, with the comparison slot it holds: the slot is
/// given back with the answer's memory, when the last chunk is taken, the client leaves, or it
/// has taken nothing for [`IDLE_READER`].
fn held_body(
    answer: Bytes,
    permit: OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct Held {
        rest: Bytes,
        _permit: OwnedSemaphorePermit,
        taken: tokio::time::Instant,
    }
    let held = Arc::new(Mutex::new(Some(Held { rest: answer, _permit: permit, taken: tokio::time::Instant::now() })));
    let watched = Arc::downgrade(&held);
    tokio::spawn(async move {
        loop {
            let Some(held) = watched.upgrade() else { return };
            let due = match &*held.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(h) => h.taken + IDLE_READER,
                None => return,
            };
            drop(held);
            tokio::time::sleep_until(due).await;
            let Some(held) = watched.upgrade() else { return };
            let mut guard = held.lock().unwrap_or_else(|e| e.into_inner());
            if guard.as_ref().is_some_and(|h| h.taken + IDLE_READER <= tokio::time::Instant::now()) {
                tracing::debug!("a comparison's reader took nothing for {IDLE_READER:?}: cut off");
                *guard = None;
                return;
            }
        }
    });
    futures_util::stream::unfold(held, |held| async move {
        let next = {
            let mut guard = held.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_mut() {
                Some(h) if !h.rest.is_empty() => {
                    h.taken = tokio::time::Instant::now();
                    let n = h.rest.len().min(CHUNK);
                    Some(Ok(h.rest.split_to(n)))
                }
                Some(_) => {
                    *guard = None;
                    None
                }
                // Cut off: the body ends without its last chunk, so the client sees it is cut.
                None => Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the reader was idle too long"))),
            }
        };
        next.map(|chunk| (chunk, held))
    })
}

fn too_large(id: &str, events: i64) -> Result<(), ApiError> {
    if events > compare::MAX_EVENTS as i64 {
        return Err(ApiError::Unprocessable(format!(
            "session {id:?} has {events} events; comparisons are limited to {} events a session",
            compare::MAX_EVENTS
        )));
    }
    Ok(())
}

/// One session's row, steps and alerts, or 404 / 422 (too large to compare).
async fn read_side(app: &AppState, id: String) -> Result<Side, ApiError> {
    let mut q = DetailQuery { after: None, limit: PAGE, alerts_after: None, alerts_limit: PAGE };
    let mut side: Option<Side> = None;
    let mut events = 0usize;
    let mut alerts_done = false;
    loop {
        let d = app.store.session_detail(id.clone(), q).await?.ok_or_else(|| super::sessions::unknown(&id))?;
        // Checked again: the session may have grown since it was first looked at.
        too_large(&id, d.session.event_count)?;
        events += d.events.len();
        if events > compare::MAX_EVENTS {
            return Err(ApiError::Unprocessable(format!(
                "session {id:?} has more than {} events; comparisons are limited to that",
                compare::MAX_EVENTS
            )));
        }
        let more = d.more;
        let last = d.events.last().map(|e| e.sequence);
        let alerts = d.alerts;
        let mut s = match side.take() {
            Some(mut s) => {
                // The latest row read: a running session's row moves on while its pages are read.
                s.row = d.session;
                s
            }
            None => Side::new(d.session),
        };
        s = tokio::task::spawn_blocking(move || {
            for e in &d.events {
                // Stored events were valid when stored; one that no longer parses is skipped
                // rather than failing the whole comparison.
                if let Ok(ev) = Event::parse(&e.json) {
                    s.push(&ev);
                }
            }
            for a in &alerts {
                if let Some(kind) = alert_type(a) {
                    s.alert(&kind);
                }
            }
            s
        })
        .await
        .map_err(|e| ApiError::Internal(format!("comparison task failed: {e}")))?;
        side = Some(s);
        match d.next_alerts_after {
            Some(next) if !alerts_done => q.alerts_after = Some(next),
            _ => {
                alerts_done = true;
                // Read no more alerts with the pages of events still to come.
                q.alerts_after = Some(i64::MAX);
            }
        }
        if !more && alerts_done {
            break;
        }
        if more {
            q.after = last;
        } else {
            // Only alerts are left: read no more events.
            q.after = Some(i64::MAX);
        }
    }
    Ok(side.expect("at least one page was read"))
}

fn alert_type(alert: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(alert).ok()?;
    v.get("type")?.as_str().map(str::to_owned)
}

pub(crate) async fn similar(
    State(app): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let limit = p.limit(10, 100)?;
    let one = DetailQuery { after: None, limit: 1, alerts_after: None, alerts_limit: 1 };
    let target = app.store.session_detail(id.clone(), one).await?.ok_or_else(|| super::sessions::unknown(&id))?;
    let target: SessionRow = target.session;
    let mut candidates = Vec::new();
    let mut q = SessionQuery { limit: 1000, agent_id: Some(target.agent_id.clone()), ..Default::default() };
    while candidates.len() < SIMILAR_CANDIDATES {
        let page = app.store.list_sessions(q.clone()).await?;
        candidates.extend(page.sessions);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    let sessions = compare::rank_similar(&target, candidates, limit);
    Ok(Json(serde_json::json!({ "sessions": sessions })).into_response())
}
