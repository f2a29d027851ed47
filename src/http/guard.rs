//! `POST /guard` and the operator's `POST /sessions/:id/stop` and `/resume` (`GUARD.md`).
//!
//! The guard answers from the store's board (or a short indexed read), never through the write
//! queue; an `ask` or `deny` is then recorded in the session as an `aop.guard` event, after the
//! answer has gone, so recording never delays it. A stop or resume is an `aop.stop` /
//! `aop.resume` event, stored before the answer: once `{"ok": true}` is back, every guard call
//! (on any instance of a fleet) sees it.

use super::body;
use super::error::ApiError;
use super::events::form;
use super::sessions::unknown;
use super::state::AppState;
use crate::guard::{self, Answer, Call, Decision};
use crate::model::{Event, RESUME, STOP};
use crate::store::board::Facts;
use crate::store::{Outcome, Store};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A guard request, an operator's note, a hook: small.
const MAX_BODY: usize = 256 * 1024;
const READ_LIMIT: usize = 1024 * 1024;
/// How much of a tool's input a recorded decision keeps (the agent's own event has it whole).
const RECORDED_INPUT: usize = 4096;

/// `POST /guard`: allow, ask or deny, with the reasons.
pub(crate) async fn ask(State(app): State<AppState>, headers: HeaderMap, req: Body) -> Result<Response, ApiError> {
    form(&headers)?;
    let bytes = read(&app, &headers, req).await?;
    let call = Call::parse(&bytes).map_err(ApiError::BadRequest)?;
    let answer = answer(&app, &call).await?;
    Ok(Json(answer).into_response())
}

/// The guard's answer to `call`, counted, with the alerts its reasons stem from, and recorded in
/// the session when it is not a plain allow. Shared with the Claude Code hook.
pub(crate) async fn answer(app: &AppState, call: &Call) -> Result<Answer, ApiError> {
    let facts = app.store.guard_facts(call.session_id.clone()).await?;
    let (policy, detect) = &*app.guard;
    let mut answer = guard::decide(facts.as_ref(), call, policy, detect);
    let counter = match answer.decision {
        Decision::Allow => &app.metrics.guard_allow,
        Decision::Ask => &app.metrics.guard_ask,
        Decision::Deny => &app.metrics.guard_deny,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if answer.reasons.is_empty() {
        return Ok(answer);
    }
    for r in answer.reasons.iter_mut().filter(|r| r.alerted) {
        if let Some(kind) = r.kind.alert_type() {
            r.alert_id = latest_alert(app.store.as_ref(), &call.session_id, kind).await;
        }
    }
    if answer.decision != Decision::Allow {
        if let Some(f) = facts {
            record(app, f, call, &answer);
        }
    }
    Ok(answer)
}

/// The session's latest alert of one type: the one a reason stems from. Best effort: a reason
/// without its alert's id is still a reason.
async fn latest_alert(store: &dyn Store, session: &str, kind: &str) -> Option<i64> {
    let q = crate::store::AlertQuery {
        limit: 1,
        session_id: Some(session.to_owned()),
        kind: Some(kind.to_owned()),
        ..Default::default()
    };
    let page = store.alerts(q).await.ok()?;
    let alert: Value = serde_json::from_str(page.alerts.first()?).ok()?;
    alert.get("id")?.as_i64()
}

/// Stores the decision in the session without holding up the answer.
fn record(app: &AppState, facts: Facts, call: &Call, answer: &Answer) {
    let input = serde_json::to_string(&call.input).unwrap_or_default();
    let (input, truncated) = match crate::detect::cut(&input, RECORDED_INPUT) {
        (_, false) => (call.input.clone(), false),
        (kept, true) => (Value::String(format!("{kept}…")), true),
    };
    let payload = json!({
        "decision": answer.decision,
        "tool": call.tool,
        "input": input,
        "input_truncated": truncated,
        "reasons": answer.reasons,
    });
    let (store, metrics) = (Arc::clone(&app.store), Arc::clone(&app.metrics));
    let session = call.session_id.clone();
    tokio::spawn(async move {
        let who = Who::of(&facts);
        if let Err(e) = store_now(store.as_ref(), &session, &who, crate::model::GUARD_DECISION, &payload).await {
            metrics.guard_unrecorded.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "could not record a guard decision in its session");
        }
    });
}

/// Stores one of the collector's own events in a session, at the collector's clock. Its
/// sequence is that clock in µs: a sequence the session already holds (an OTel session counts by
/// the same clock) moves it on by one, a few times.
/// Who a collector-made event is from: the session's agent and parent.
pub(crate) struct Who {
    pub(crate) agent: String,
    pub(crate) parent: Option<String>,
}

impl Who {
    fn of(facts: &Facts) -> Who {
        Who { agent: facts.agent_id.clone(), parent: facts.parent_session_id.clone() }
    }
}

pub(crate) async fn store_now(
    store: &dyn Store,
    session: &str,
    who: &Who,
    kind: &str,
    payload: &Value,
) -> Result<i64, ApiError> {
    // Returns the event's sequence: with its session id it names the event on any store (a
    // fleet numbers stream positions only after the commit).
    let now = time::OffsetDateTime::now_utc();
    let ns = u64::try_from(now.unix_timestamp_nanos()).unwrap_or(0);
    // Stamped to the millisecond, as agents stamp theirs; numbered to the microsecond.
    let stamp_ns = ns / 1_000_000 * 1_000_000;
    let agent = if who.agent.is_empty() { "unknown" } else { &who.agent };
    for step in 0..8 {
        let seq = (ns / 1000) as i64 + step;
        let ev = Event::derived(session, who.parent.as_deref(), agent, seq, stamp_ns, kind, &payload.to_string())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        match store.ingest(vec![ev]).await?.first() {
            Some(Outcome::Stored) => return Ok(seq),
            _ => continue,
        }
    }
    Err(ApiError::Conflict("the session's sequences around the collector's clock are taken; try again".into()))
}

/// A body past [`MAX_BODY`] is read to its end (up to [`READ_LIMIT`]) and refused with a `400`
/// naming the limit, so the connection stays usable; past that it is `413` and closed, as everywhere.
pub(crate) async fn read(app: &AppState, headers: &HeaderMap, req: Body) -> Result<bytes::Bytes, ApiError> {
    let mut charge = app.ingest.charge();
    let bytes = body::read(headers, req, READ_LIMIT, &mut charge).await?;
    if bytes.len() > MAX_BODY {
        return Err(ApiError::BadRequest(format!(
            "the body is {} KiB, larger than the {} KiB a guard call or hook may send",
            bytes.len() >> 10,
            MAX_BODY >> 10
        )));
    }
    Ok(bytes)
}

/// `POST /sessions/:id/stop`, with an optional `{"reason": "…"}`.
pub(crate) async fn stop(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> Result<Response, ApiError> {
    form(&headers)?;
    let bytes = read(&app, &headers, req).await?;
    let reason = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
        match v.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= 1024 => Some(s.clone()),
            Some(Value::String(_)) => return Err(ApiError::BadRequest("`reason` must be at most 1024 bytes".into())),
            Some(_) => return Err(ApiError::BadRequest("`reason` must be a string".into())),
        }
    };
    operator(&app, &id, STOP, json!({ "reason": reason, "by": "operator" })).await
}

/// `POST /sessions/:id/resume`: lifts a stop.
pub(crate) async fn resume(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    form(&headers)?;
    operator(&app, &id, RESUME, json!({ "by": "operator" })).await
}

async fn operator(app: &AppState, id: &str, kind: &str, payload: Value) -> Result<Response, ApiError> {
    let facts = app.store.guard_facts(id.to_owned()).await?.ok_or_else(|| unknown(id))?;
    let sequence = store_now(app.store.as_ref(), id, &Who::of(&facts), kind, &payload).await?;
    Ok(Json(json!({ "ok": true, "sequence": sequence })).into_response())
}
