//! `GET /stream`: Server-Sent Events, with resumption from the store and filters.
//!
//! Framing (COLLECTOR.md): a stored event is `id: <global id>` + one `data:` line with the event's
//! JSON; alerts and deletions are named events (`event: alert`, `event: session.deleted`) without
//! an `id:`, so a plain `onmessage` sees only AOP events and the resume cursor stays an event id.

use super::params::Params;
use super::state::AppState;
use crate::hub::{Lagged, Message, MessageKind};
use crate::store::FeedEvent;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Comments keep proxies and clients from timing the connection out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Stored events read per round trip while catching a resuming client up.
const BACKLOG_PAGE: usize = 1000;

struct Filter {
    session_id: Option<String>,
    agent_id: Option<String>,
    /// Exact type, or a prefix when the parameter ended in `*`.
    event_type: Option<(String, bool)>,
}

impl Filter {
    fn from(p: &Params) -> Filter {
        let event_type = p.get("type").map(|t| match t.strip_suffix('*') {
            Some(prefix) => (prefix.to_owned(), true),
            None => (t, false),
        });
        Filter { session_id: p.get("session_id"), agent_id: p.get("agent_id"), event_type }
    }

    fn matches(&self, session_id: &str, agent_id: &str, event_type: Option<&str>) -> bool {
        if self.session_id.as_deref().is_some_and(|s| s != session_id) {
            return false;
        }
        if self.agent_id.as_deref().is_some_and(|a| !agent_id.is_empty() && a != agent_id) {
            return false;
        }
        // The type filter narrows AOP events; alerts and deletions of matching sessions still pass.
        match (&self.event_type, event_type) {
            (Some((want, true)), Some(t)) => t.starts_with(want.as_str()),
            (Some((want, false)), Some(t)) => t == want,
            _ => true,
        }
    }
}

enum Step {
    Stop,
    KeepAlive,
    Messages(Result<Vec<std::sync::Arc<Message>>, Lagged>),
}

fn event_frame(id: i64, json: &str) -> Bytes {
    let mut f = String::with_capacity(json.len() + 32);
    f.push_str("id: ");
    f.push_str(&id.to_string());
    f.push_str("\ndata: ");
    f.push_str(json);
    f.push_str("\n\n");
    Bytes::from(f)
}

fn named_frame(name: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

fn encode(m: &Message) -> Bytes {
    match m.kind {
        MessageKind::Event => event_frame(m.id.unwrap_or_default(), &m.data),
        MessageKind::Alert => named_frame("alert", &m.data),
        MessageKind::SessionDeleted => named_frame("session.deleted", &m.data),
    }
}

pub(crate) async fn stream(State(app): State<AppState>, headers: HeaderMap, p: Params) -> Response {
    let filter = Filter::from(&p);
    // The header is what EventSource sends when it reconnects by itself: newer than the URL's `since`.
    let mut since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.trim().parse::<i64>().ok())
        .or_else(|| p.get("since").and_then(|s| s.parse().ok()));
    // Where this subscriber's feed begins, should it be cut off before any event (read before
    // subscribing: anything later is either live or in the backlog).
    let live_start = app.hub.last_event_id();
    // Subscribe before reading the backlog, so nothing committed in between is missed.
    let mut sub = app.hub.subscribe();
    // A position past the newest one was given out by another database (the collector restarted
    // on a fresh file, say): waiting for it would deliver nothing, ever. Start at the newest and
    // say so, with an `id:` the client resumes from.
    let mut newest = app.hub.last_event_id();
    if since.is_some_and(|s| s > newest) {
        // In a fleet, this instance's feed may trail the instance the client came from by a
        // commit or two: the store's own head is the truth.
        newest = app.store.last_position().await.map_or(newest, |head| head.max(newest));
    }
    let reset = since.filter(|&s| s > newest).map(|asked| {
        since = Some(newest);
        let data = format!("{{\"reason\":\"position {asked} is beyond this collector's newest event ({newest}): its history is not the one you were following; reload it\",\"last_event_id\":{newest}}}");
        Bytes::from(format!("id: {newest}\nevent: reset\ndata: {data}\n\n"))
    });
    let start = since.unwrap_or(live_start);
    let shutdown = app.shutdown.clone();
    let body = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(Bytes::from_static(b": connected\n\n"));
        if let Some(frame) = reset {
            yield Ok(frame);
        }
        let mut last = since.unwrap_or(i64::MIN);
        if let Some(mut after) = since {
            loop {
                let page: Vec<FeedEvent> = match app.store.events_since(after, BACKLOG_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "stream backlog read failed");
                        yield Ok(named_frame("error", "{\"error\":\"could not read the backlog; reconnect\"}"));
                        return;
                    }
                };
                for e in &page {
                    if filter.matches(&e.session_id, &e.agent_id, Some(&e.event_type)) {
                        yield Ok(event_frame(e.id, &e.json));
                    }
                    after = e.id;
                }
                if page.len() < BACKLOG_PAGE {
                    break;
                }
            }
            last = after;
        }
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        loop {
            // `yield` cannot sit inside `select!` (a macro within the stream macro): pick, then act.
            let step = tokio::select! {
                _ = shutdown.cancelled() => Step::Stop,
                _ = keep_alive.tick() => Step::KeepAlive,
                batch = sub.recv() => Step::Messages(batch),
            };
            match step {
                Step::Stop => break,
                Step::KeepAlive => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
                Step::Messages(Ok(batch)) => {
                    // Frames waiting together leave in one write: one syscall per wake-up, not per
                    // frame, is what lets a thousand subscribers keep up.
                    let mut frames: Vec<Bytes> = Vec::with_capacity(batch.len());
                    for m in batch {
                        if let Some(id) = m.id {
                            if id <= last {
                                continue; // already sent from the backlog
                            }
                            last = id;
                        }
                        let event_type = (m.kind == MessageKind::Event).then_some(m.event_type.as_str());
                        if filter.matches(&m.session_id, &m.agent_id, event_type) {
                            frames.push(m.frame(encode));
                        }
                    }
                    match frames.len() {
                        0 => {}
                        1 => yield Ok(frames.swap_remove(0)),
                        _ => yield Ok(Bytes::from(frames.concat())),
                    }
                }
                Step::Messages(Err(Lagged(missed))) => {
                    app.metrics.stream_overflows.fetch_add(1, Ordering::Relaxed);
                    // The `id:` line makes EventSource resume from here by itself.
                    let resume = last.max(start);
                    let data = format!("{{\"reason\":\"this subscriber fell behind by {missed} messages and was disconnected; reconnect with Last-Event-ID\",\"last_event_id\":{resume}}}");
                    yield Ok(Bytes::from(format!("id: {resume}\nevent: overflow\ndata: {data}\n\n")));
                    break;
                }
            }
        }
        drop(sub);
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
