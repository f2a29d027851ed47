//! The tools: their schemas, and each one's reads of the collector's API.

use super::api::{Api, Reply};
use super::args::Args;
use super::render::{self, Answer, StepLine};
use crate::client::encode_component;
use crate::compare::Comparison;
use crate::model::{Event, SessionRow};
use serde_json::{json, Map, Value};

/// Sessions per `list_sessions` answer at most (and alerts per `list_alerts`).
const MAX_LIST: i64 = 100;
/// Steps per `get_session` answer at most.
const MAX_STEPS: i64 = 500;
/// Events read for one `get_session` answer at most: a run of heartbeats is skipped page by
/// page, but not without end.
const MAX_EVENTS_READ: usize = 20_000;
/// Differing steps a comparison answer lists at most.
const MAX_COMPARE_STEPS: usize = 100;
/// Alerts a `get_session` answer shows (the rest through `list_alerts`).
const SESSION_ALERTS: usize = 20;
/// Sessions read to fill one filtered `list_sessions` page (`has_alerts`, `since`), at most.
const MAX_SCAN: usize = 5_000;

pub(crate) const STOP: &str = "stop_session";

/// A schema literal as the SDK holds it (every one below is an object: a unit test checks).
fn schema(v: Value) -> std::sync::Arc<Map<String, Value>> {
    std::sync::Arc::new(match v {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

fn row_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "agent_id": {"type": "string"},
            "parent_session_id": {"type": ["string", "null"]},
            "status": {"type": "string", "description": "running, completed, failed, … (the agent's outcome)"},
            "goal": {"type": ["string", "null"]},
            "started_at": {"type": ["string", "null"]}, "ended_at": {"type": ["string", "null"]},
            "last_seen_at": {"type": ["string", "null"]}, "duration_ms": {"type": ["integer", "null"]},
            "total_steps": {"type": "integer"}, "total_tokens": {"type": "integer"},
            "cost_usd": {"type": ["number", "null"]}, "alerts": {"type": "integer"}, "events": {"type": "integer"},
            "error_message": {"type": ["string", "null"]}, "outcome_summary": {"type": ["string", "null"]},
            "stopped": {"type": "object", "description": "present while an operator's stop holds"}
        },
        "required": ["id", "agent_id", "status", "started_at", "ended_at", "total_steps", "total_tokens", "cost_usd", "alerts"]
    })
}

fn alert_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": ["string", "integer"]}, "session_id": {"type": "string"},
            "type": {"type": "string", "description": "loop, stall, cost_spike, confidence_drop, error_cascade"},
            "severity": {"type": "string"}, "message": {"type": "string"},
            "created_at": {"type": ["string", "null"]}, "sequence": {"type": ["integer", "null"]},
            "details": {}
        },
        "required": ["id", "session_id", "type", "severity", "message"]
    })
}

fn comparison_schema() -> Value {
    let pair = json!({
        "type": "object",
        "properties": {
            "kind": {"enum": ["same", "changed", "only_a", "only_b"]}, "type": {"type": "string"},
            "a_sequence": {"type": ["integer", "null"]}, "b_sequence": {"type": ["integer", "null"]},
            "a_summary": {"type": ["string", "null"]}, "b_summary": {"type": ["string", "null"]}
        },
        "required": ["kind", "type", "a_sequence", "b_sequence"]
    });
    json!({
        "type": "object",
        "properties": {
            "a": row_schema(), "b": row_schema(),
            "similar_to": {"type": "string", "description": "compare_with_similar: the run chosen as A"},
            "first_divergence": {"anyOf": [{"type": "null"}, pair.clone()],
                "description": "the first step where the runs part (index into the alignment), null when they never do"},
            "deltas": {"type": "object", "description": "B − A of duration_ms, steps, tokens, cost_usd, tool_calls, failed_tool_calls and alerts by type; each {a, b, delta}"},
            "steps": {"type": "array", "items": pair, "description": "the steps that are not the same, in order, at most 100"},
            "steps_not_shown": {"type": "integer"},
            "counts": {"type": "object", "properties": {
                "same": {"type": "integer"}, "changed": {"type": "integer"},
                "only_a": {"type": "integer"}, "only_b": {"type": "integer"}},
                "required": ["same", "changed", "only_a", "only_b"]}
        },
        "required": ["a", "b", "first_divergence", "deltas", "steps", "counts"]
    })
}

/// Every tool this server offers; `stop_session` only when allowed.
pub(crate) fn list(allow_stop: bool) -> Vec<rmcp::model::Tool> {
    use rmcp::model::{Tool, ToolAnnotations};
    let read = || ToolAnnotations::new().read_only(true).open_world(false);
    let id = json!({"type": "string", "description": "a session id"});
    let since = json!({"type": "string", "description": "an RFC 3339 time, or an age back from now: 90m, 24h, 7d"});
    let limit = |default: i64, max: i64| json!({"type": "integer", "minimum": 1, "maximum": max, "default": default});
    let cursor = json!({"type": "string", "description": "next_cursor of the previous answer"});
    let mut tools = vec![
        Tool::new(
            "list_sessions",
            "List agent runs (sessions), most recent activity first, with status, steps, tokens, cost and alert count. \
             Filter by agent, status (running, completed, failed, …), text in the goal or id (q), conversation, \
             has_alerts, or activity since a time.",
            schema(json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "description": "agent_id"},
                    "status": {"type": "string"},
                    "q": {"type": "string", "description": "text in the session id, agent or goal"},
                    "conversation": {"type": "string", "description": "conversation id (a coding agent's turns)"},
                    "has_alerts": {"type": "boolean"},
                    "since": since,
                    "limit": limit(20, MAX_LIST),
                    "cursor": cursor
                },
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(json!({
            "type": "object",
            "properties": {"sessions": {"type": "array", "items": row_schema()}, "next_cursor": {"type": ["string", "null"]}},
            "required": ["sessions", "next_cursor"]
        }))),
        Tool::new(
            "get_session",
            "One run: its row (status, goal, error, tokens, cost), one line per step in order (FAILED marked), and its \
             alerts. Long runs page: pass next_sequence back as from_sequence.",
            schema(json!({
                "type": "object",
                "properties": {
                    "id": id,
                    "from_sequence": {"type": "integer", "minimum": 0, "description": "first event sequence to show"},
                    "limit": limit(200, MAX_STEPS)
                },
                "required": ["id"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(json!({
            "type": "object",
            "properties": {
                "session": row_schema(),
                "steps": {"type": "array", "items": {"type": "object", "properties": {
                    "sequence": {"type": "integer"}, "type": {"type": "string"},
                    "summary": {"type": "string"}, "failed": {"type": "boolean"}},
                    "required": ["sequence", "type", "summary", "failed"]}},
                "alerts": {"type": "array", "items": alert_schema()},
                "alerts_total": {"type": "integer"},
                "next_sequence": {"type": ["integer", "null"]}
            },
            "required": ["session", "steps", "alerts", "next_sequence"]
        }))),
        Tool::new(
            "get_event",
            "One stored event of a run, by its sequence, with every field (long values cut).",
            schema(json!({
                "type": "object",
                "properties": {"session_id": id, "sequence": {"type": "integer", "minimum": 0}},
                "required": ["session_id", "sequence"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(json!({
            "type": "object", "properties": {"event": {"type": "object"}}, "required": ["event"]
        }))),
        Tool::new(
            "list_alerts",
            "Alerts (loop, stall, cost_spike, confidence_drop, error_cascade), newest first, across runs or for one.",
            schema(json!({
                "type": "object",
                "properties": {
                    "session_id": id, "type": {"type": "string"}, "since": since,
                    "limit": limit(20, MAX_LIST), "cursor": cursor
                },
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(json!({
            "type": "object",
            "properties": {"alerts": {"type": "array", "items": alert_schema()}, "next_cursor": {"type": ["string", "null"]}},
            "required": ["alerts", "next_cursor"]
        }))),
        Tool::new(
            "compare_sessions",
            "Two runs aligned step by step: where they first part, the steps that differ, and B − A of duration, \
             steps, tokens, cost, tool calls, failures and alerts.",
            schema(json!({
                "type": "object",
                "properties": {"a": id, "b": id},
                "required": ["a", "b"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(comparison_schema())),
        Tool::new(
            "compare_with_similar",
            "How this run differs from the most similar run of the same agent (a good earlier run, most often): \
             the first divergence, the steps that differ and the deltas. The best first question about a failed run.",
            schema(json!({
                "type": "object",
                "properties": {"id": id},
                "required": ["id"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(comparison_schema())),
    ];
    for t in &mut tools {
        t.annotations = Some(read());
    }
    if allow_stop {
        tools.push(
            Tool::new(
                STOP,
                "Stop a run, as an operator would: the guard denies the agent's next calls until the run is resumed \
                 (from the dashboard or POST /sessions/:id/resume).",
                schema(json!({
                    "type": "object",
                    "properties": {"id": id, "reason": {"type": "string", "description": "shown to the agent and in the timeline"}},
                    "required": ["id"],
                    "additionalProperties": false
                })),
            )
            .with_raw_output_schema(schema(json!({
                "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]
            })))
            .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).idempotent(true).open_world(false)),
        );
    }
    tools
}

/// What a tool call ends in: an answer, or a message for the caller.
pub(crate) type Outcome = Result<Answer, String>;

/// The answer the API gave to a read: 200's body, or the error the caller sees.
fn ok(reply: Reply, what: impl FnOnce() -> String) -> Result<bytes::Bytes, String> {
    match reply.status {
        200 => Ok(reply.body),
        // The API's 404s name what is missing ("no session …").
        404 => Err(reply.error()),
        503 | 429 => Err(format!("the collector is busy ({}): {}; retry shortly", reply.status, reply.error())),
        s => Err(format!("{}: the collector answered {s}: {}", what(), reply.error())),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the collector sent {what} that could not be read: {e}"))
}

fn now_us() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn ts(v: Option<&str>) -> Option<i64> {
    v.and_then(crate::model::parse_timestamp)
}

/// Runs one tool. `compares` bounds the comparisons held in this process at once.
pub(crate) async fn call(
    api: &Api,
    compares: &tokio::sync::Semaphore,
    name: &str,
    args: &Map<String, Value>,
) -> Option<Outcome> {
    Some(match name {
        "list_sessions" => list_sessions(api, args).await,
        "get_session" => get_session(api, args).await,
        "get_event" => get_event(api, args).await,
        "list_alerts" => list_alerts(api, args).await,
        "compare_sessions" => compare_sessions(api, compares, args).await,
        "compare_with_similar" => compare_with_similar(api, compares, args).await,
        STOP => stop_session(api, args).await,
        _ => return None,
    })
}

/// One page of `GET /sessions`.
#[derive(serde::Deserialize)]
struct SessionPage {
    sessions: Vec<SessionRow>,
    next_cursor: Option<String>,
}

async fn list_sessions(api: &Api, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["agent", "status", "q", "conversation", "has_alerts", "since", "limit", "cursor"])?;
    let mut query = String::new();
    for (key, arg) in [("agent_id", "agent"), ("status", "status"), ("q", "q"), ("conversation", "conversation")] {
        if let Some(v) = a.opt_text(arg)? {
            query.push_str(&format!("&{key}={}", encode_component(&v)));
        }
    }
    let has_alerts = a.opt_bool("has_alerts")?;
    let since = a.opt_since("since", now_us())?;
    let start = a.opt_text("cursor")?;
    let mut limit = a.opt_int("limit", 1, MAX_LIST)?.unwrap_or(20) as usize;
    let keep = |r: &SessionRow| {
        has_alerts.is_none_or(|h| (r.alert_count > 0) == h)
            && since.is_none_or(|s| ts(r.last_seen_at.as_deref().or(r.started_at.as_deref())).is_some_and(|t| t >= s))
    };
    // Rows are in order of last activity: once one is older than `since`, all after it are.
    let past_since = |r: &SessionRow| {
        since.is_some_and(|s| ts(r.last_seen_at.as_deref().or(r.started_at.as_deref())).is_some_and(|t| t < s))
    };
    loop {
        let mut rows = Vec::new();
        let mut cursor = start.clone();
        let mut scanned = 0usize;
        let mut done = false;
        while rows.len() < limit && scanned < MAX_SCAN {
            let want = limit - rows.len();
            let mut path = format!("/sessions?limit={want}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode_component(c)));
            }
            let page: SessionPage = parse(&ok(api.call("GET", &path, None).await?, || "sessions".into())?, "sessions")?;
            scanned += page.sessions.len();
            let older = page.sessions.iter().any(past_since);
            rows.extend(page.sessions.into_iter().filter(|r| keep(r)));
            cursor = page.next_cursor;
            if cursor.is_none() || older {
                done = true;
                break;
            }
        }
        let next = if done { None } else { cursor };
        let answer = render::sessions(&rows, next.as_deref(), rows.len() < limit);
        // Too long for the bound (long ids and goals): ask for fewer from the same place, so the
        // cursor stays exact.
        if answer.fits() || limit == 1 {
            return Ok(answer);
        }
        limit /= 2;
    }
}

/// One page of `GET /sessions/:id`.
#[derive(serde::Deserialize)]
struct Detail {
    session: SessionRow,
    events: Vec<Box<serde_json::value::RawValue>>,
    alerts: Vec<Value>,
    next_after: Option<i64>,
}

async fn detail(api: &Api, id: &str, after: Option<i64>, limit: usize) -> Result<Detail, String> {
    let mut path = format!("/sessions/{}?limit={limit}", encode_component(id));
    if let Some(after) = after {
        path.push_str(&format!("&after={after}"));
    }
    let body = ok(api.call("GET", &path, None).await?, || format!("no session {id:?}"))?;
    parse(&body, "a session")
}

async fn get_session(api: &Api, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["id", "from_sequence", "limit"])?;
    let id = a.session_id("id")?;
    let from = a.opt_int("from_sequence", 0, i64::MAX)?;
    let mut limit = a.opt_int("limit", 1, MAX_STEPS)?.unwrap_or(200) as usize;
    let mut after = from.and_then(|f| f.checked_sub(1));
    let mut steps: Vec<StepLine> = Vec::new();
    let mut read = 0usize;
    let mut first: Option<Detail> = None;
    let mut next: Option<i64> = None;
    // Steps until `limit`, reading pages of events (heartbeats are not steps).
    loop {
        let page = detail(api, &id, after, (limit - steps.len()).clamp(50, 1000)).await?;
        read += page.events.len();
        let mut stopped_at = None;
        for raw in &page.events {
            let Ok(ev) = Event::parse(raw.get()) else { continue };
            if steps.len() == limit {
                stopped_at = Some(ev.sequence);
                break;
            }
            steps.extend(render::step(&ev));
        }
        after = page.next_after;
        let more = page.next_after;
        if first.is_none() {
            first = Some(page);
        }
        if let Some(seq) = stopped_at {
            next = Some(seq);
            break;
        }
        match more {
            Some(_) if read < MAX_EVENTS_READ && steps.len() < limit => continue,
            Some(last) => {
                next = Some(last + 1);
                break;
            }
            None => break,
        }
    }
    let first = first.ok_or_else(|| format!("no session {id:?}"))?;
    // The bound: fewer steps, continuing where the shown ones stop.
    loop {
        let answer = render::session(&first.session, &steps, &first.alerts, next, SESSION_ALERTS);
        if answer.fits() || steps.len() <= 1 {
            return Ok(answer);
        }
        limit = steps.len() * 3 / 4;
        next = steps.get(limit).map(|s| s.sequence).or(next);
        steps.truncate(limit);
    }
}

async fn get_event(api: &Api, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["session_id", "sequence"])?;
    let id = a.session_id("session_id")?;
    let seq = a.opt_int("sequence", 0, i64::MAX)?.ok_or("argument `sequence` is required: an event's sequence")?;
    let page = detail(api, &id, seq.checked_sub(1), 1).await?;
    let ev = page.events.first().map(|raw| serde_json::from_str::<Value>(raw.get()));
    match ev {
        Some(Ok(v)) if v.get("sequence").and_then(Value::as_i64) == Some(seq) => Ok(render::event(&v)),
        Some(Err(e)) => Err(format!("event #{seq} of session {id:?} could not be read: {e}")),
        _ => Err(format!(
            "session {id:?} has no event #{seq} (it has {} events; get_session lists their sequences)",
            page.session.event_count
        )),
    }
}

#[derive(serde::Deserialize)]
struct AlertPage {
    alerts: Vec<Value>,
    next_cursor: Option<String>,
}

async fn list_alerts(api: &Api, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["session_id", "type", "since", "limit", "cursor"])?;
    let mut query = String::new();
    let session = a.opt_session_id("session_id")?;
    if let Some(id) = &session {
        query.push_str(&format!("&session_id={}", encode_component(id)));
    }
    if let Some(t) = a.opt_text("type")? {
        query.push_str(&format!("&type={}", encode_component(&t)));
    }
    let since = a.opt_since("since", now_us())?;
    let start = a.opt_text("cursor")?;
    let mut limit = a.opt_int("limit", 1, MAX_LIST)?.unwrap_or(20);
    loop {
        let mut path = format!("/alerts?limit={limit}{query}");
        if let Some(c) = &start {
            path.push_str(&format!("&cursor={}", encode_component(c)));
        }
        let page: AlertPage = parse(&ok(api.call("GET", &path, None).await?, || "alerts".into())?, "alerts")?;
        // Newest first: the first alert older than `since` ends the list.
        let old =
            |a: &Value| since.is_some_and(|s| ts(a.get("created_at").and_then(Value::as_str)).is_some_and(|t| t < s));
        let reached_old = page.alerts.iter().any(old);
        let alerts: Vec<Value> = page.alerts.into_iter().filter(|a| !old(a)).collect();
        let next = if reached_old { None } else { page.next_cursor };
        if alerts.is_empty() {
            if let Some(id) = &session {
                // An unknown session is an error, not an empty list.
                detail(api, id, None, 1).await?;
            }
        }
        let answer = render::alerts(&alerts, next.as_deref());
        if answer.fits() || limit == 1 {
            return Ok(answer);
        }
        limit /= 2;
    }
}

async fn comparison(api: &Api, compares: &tokio::sync::Semaphore, a: &str, b: &str) -> Result<Comparison, String> {
    let _slot = compares.acquire().await.map_err(|_| "the collector is shutting down".to_owned())?;
    let path = format!("/sessions/{}/compare/{}", encode_component(a), encode_component(b));
    let reply = api.call("GET", &path, None).await?;
    let body = ok(reply, || format!("sessions {a:?} and {b:?} cannot be compared"))?;
    parse(&body, "a comparison")
}

async fn compare_sessions(api: &Api, compares: &tokio::sync::Semaphore, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["a", "b"])?;
    let (x, y) = (a.session_id("a")?, a.session_id("b")?);
    let c = comparison(api, compares, &x, &y).await?;
    Ok(fitted(&c, None))
}

/// The comparison's answer with as many differing steps as fit the bound (at most 100).
fn fitted(c: &Comparison, similar_to: Option<&str>) -> Answer {
    let mut max = MAX_COMPARE_STEPS;
    loop {
        let answer = render::comparison(c, similar_to, max);
        if answer.fits() || max == 0 {
            return answer;
        }
        max = max * 3 / 4;
    }
}

async fn compare_with_similar(api: &Api, compares: &tokio::sync::Semaphore, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["id"])?;
    let id = a.session_id("id")?;
    let path = format!("/sessions/{}/similar?limit=1", encode_component(&id));
    let body = ok(api.call("GET", &path, None).await?, || format!("no session {id:?}"))?;
    let similar: SessionPage = parse(&body, "similar sessions")?;
    let Some(other) = similar.sessions.into_iter().next() else {
        return Err(format!(
            "session {id:?} has no similar run to compare with: its agent has no other session (compare_sessions takes any two)"
        ));
    };
    let c = comparison(api, compares, &other.id, &id).await?;
    Ok(fitted(&c, Some(&other.id)))
}

async fn stop_session(api: &Api, args: &Map<String, Value>) -> Outcome {
    let a = Args::new(args, &["id", "reason"])?;
    let id = a.session_id("id")?;
    let reason = a.opt_text("reason")?;
    let body = match &reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    };
    let path = format!("/sessions/{}/stop", encode_component(&id));
    let reply = api.call("POST", &path, Some(body.to_string().as_bytes())).await?;
    ok(reply, || format!("no session {id:?}"))?;
    let text = format!(
        "Stopped session {id}: the guard denies its next calls until it is resumed.{}",
        reason.map(|r| format!(" Reason: {}", crate::clean::text(&r))).unwrap_or_default()
    );
    Ok(Answer { structured: json!({ "ok": true }), text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_declares_object_schemas_and_stop_only_when_allowed() {
        for allow in [false, true] {
            let tools = list(allow);
            assert_eq!(tools.iter().any(|t| t.name == STOP), allow);
            for t in &tools {
                assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{}", t.name);
                let out = t.output_schema.as_ref().expect("an output schema");
                assert_eq!(out.get("type"), Some(&json!("object")), "{}", t.name);
                assert!(t.description.as_ref().is_some_and(|d| !d.is_empty()));
            }
        }
    }
}
