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

async fn handle(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let form = form(headers)?;
    let mut charge = app.ingest.charge();
    let bytes = super::body::read(headers, body, MAX_BATCH_BYTES, &mut charge).await?;
    // Parsed events keep their text and their envelope's fields besides: about three times the
    // body, held until the store has answered.
    if !charge.add(bytes.len().saturating_mul(3)) {
        return Err(super::body::saturated());
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|e| ApiError::BadRequest(format!("body is not valid UTF-8: {e}")))?;
    match form {
        Form::Json if text.trim_start().starts_with('[') => {
            let mut parsed = Parsed::default();
            each_element(text, |item| parsed.push(app, item))
                .map_err(|e| ApiError::BadRequest(format!("body is not a valid JSON array: {e}")))?;
            parsed.store(app).await
        }
        Form::Json => single(app, text).await,
        Form::Ndjson => {
            let mut parsed = Parsed::default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                parsed.push(app, line);
            }
            parsed.store(app).await
        }
    }
}

/// Calls `f` with the text of each element of a JSON array, one at a time: a batch of a million
/// tiny elements is never held as a million slices.
fn each_element<'a>(text: &'a str, f: impl FnMut(&'a str)) -> Result<(), serde_json::Error> {
    struct Elements<F>(F);
    impl<'de, F: FnMut(&'de str)> serde::de::Visitor<'de> for Elements<F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                (self.0)(raw.get());
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_seq(&mut de, Elements(f))?;
    de.end()
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
        Some(Outcome::Stored) => {
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

/// Errors listed in a batch's answer; past them they are only counted (`errors_omitted`), so a
/// body of a million bad lines is not answered with a million messages.
pub(crate) const MAX_LISTED_ERRORS: usize = 1000;

/// A batch as it is parsed: its valid events, and its errors.
#[derive(Default)]
struct Parsed {
    valid: Vec<Event>,
    /// The batch index, session and sequence of each valid event.
    positions: Vec<(usize, String, i64)>,
    errors: Vec<(usize, String)>,
    omitted: usize,
    items: usize,
}

impl Parsed {
    fn push(&mut self, app: &AppState, item: &str) {
        let i = self.items;
        self.items += 1;
        match Event::parse(item) {
            Ok(ev) => {
                self.positions.push((i, ev.session_id.clone(), ev.sequence));
                self.valid.push(ev);
            }
            Err(e) => {
                app.metrics.events_rejected.fetch_add(1, Ordering::Relaxed);
                self.error(i, || e.to_string());
            }
        }
    }

    fn error(&mut self, index: usize, why: impl FnOnce() -> String) {
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push((index, why()));
        } else {
            self.omitted += 1;
        }
    }

    async fn store(mut self, app: &AppState) -> Result<Response, ApiError> {
        let total = self.items;
        let outcomes =
            if self.valid.is_empty() { Vec::new() } else { app.store.ingest(std::mem::take(&mut self.valid)).await? };
        let (mut accepted, mut duplicates) = (0u64, 0u64);
        for ((i, session, seq), outcome) in std::mem::take(&mut self.positions).into_iter().zip(outcomes) {
            match outcome {
                Outcome::Stored => accepted += 1,
                Outcome::Duplicate => duplicates += 1,
                Outcome::Conflict => {
                    app.metrics.events_conflict.fetch_add(1, Ordering::Relaxed);
                    self.error(i, || {
                        format!("conflict: session {session:?} already has sequence {seq} with different content")
                    });
                }
            }
        }
        app.metrics.events_accepted.fetch_add(accepted, Ordering::Relaxed);
        app.metrics.events_duplicate.fetch_add(duplicates, Ordering::Relaxed);
        self.errors.sort_by_key(|(i, _)| *i);
        let failed = self.errors.len() + self.omitted;
        let errors: Vec<serde_json::Value> =
            self.errors.into_iter().map(|(index, error)| json!({ "index": index, "error": error })).collect();
        let mut body =
            json!({ "ok": failed == 0 && total > 0, "accepted": accepted, "duplicates": duplicates, "errors": errors });
        if self.omitted > 0 {
            body["errors_omitted"] = json!(self.omitted);
        }
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
}
