//! From an OTLP logs export to AOP events (`OTLP.md`, Logs). Pure, like the spans' mapping.
//!
//! Which session a record joins: its trace's (`otel-<trace id>`) when it has a trace id; else
//! the session of its conversation (`session.id`, `gen_ai.conversation.id`, Codex's
//! `conversation.id`), whose id is the conversation's own where it is a valid session id; a
//! record with neither is rejected. A known agent's record becomes the steps it reports
//! ([`agents`]), as does a GenAI inference or exception record outside any span ([`genai`]);
//! every other record becomes one `otel.log` event kept whole — its
//! event name, body, severity and attributes (maps and arrays as JSON) — at the sequence of its
//! clock in microseconds, carrying a record id made of what identifies it (its session, time,
//! event name, and its sequence attribute or else its body), by which the store knows a record
//! exported again.

use super::agents::{self, Agent};
use super::attrs::{hex, Attrs};
use super::decode::{Batch, Entry};
use super::genai;
use super::map::{child_envelope, label, Mapped, Pricing, MAX_TIME_NS, TRACE_COST};
use super::payload::{Any, Attributes};
use crate::model::{Event, EventError, SpanRef, SpanRole};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;

/// Attributes naming the conversation a record belongs to (Codex's `conversation.id` among
/// them), first found wins.
use crate::model::CONVERSATION_ATTRIBUTES as CONVERSATION;
/// Attributes holding the agent's own counter of its records.
const SEQUENCE: &[&str] = &["event.sequence"];

#[derive(Serialize)]
struct OtelLog<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Any<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity_number: Option<i32>,
    attributes: Attributes<'a>,
    otel: Identity<'a>,
}

#[derive(Serialize)]
struct Identity<'a> {
    record_id: String,
    /// On a step made from a record: the record's event name and attributes, kept whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<Attributes<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
}

/// A session the request's records go to.
struct Target {
    /// The conversation's own id, for a session made from records without a trace.
    conversation: Option<String>,
    /// A subagent's session: its parent's, and the subagent's kind where a record names it.
    parent: Option<String>,
    subagent_kind: Option<String>,
    agent: String,
    /// The earliest record time seen for it in this request.
    first_ns: u64,
    /// A known agent's first prompt in this request: the session's goal.
    goal: Option<String>,
}

/// `hooked` says which sessions an agent's hooks report (Claude Code's, `POST /hooks/claude-code`):
/// their tool results and prompts are steps already, so those records stay `otel.log` events.
pub fn map_logs(batch: Batch<LogRecord>, price: Pricing<'_>, hooked: &dyn Fn(&str) -> bool) -> Mapped {
    let Batch { resources, scopes, items, total, rejected, size } = batch;
    let mut out = Mapped { items: total, rejected, ..Mapped::default() };
    let limit = super::map::derive_budget(size);
    let mut left = limit;
    let over = |index: usize| {
        format!(
            "log record {index}: the request derives more than {} KiB of events and sessions (16 times its size and 1 MiB): send smaller batches",
            limit >> 10
        )
    };
    let mut targets: HashMap<String, Target> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut derived: Vec<(Event, usize)> = Vec::new();
    for entry in &items {
        let Entry { index, item: record, .. } = entry;
        let index = *index;
        let scoped = &scopes[entry.scope];
        let resource = &resources[scoped.resource];
        let service = Attrs(&resource.attributes).str(&["service.name"]);
        let attrs = Attrs(&record.attributes);
        let scope_name = scoped.scope.name.as_str();
        let name = event_name(record, attrs);
        let agent = Agent::of(service, scope_name, name.or_else(|| body_text(record)));
        let session = match session_of(record, attrs, agent) {
            Ok(s) => s,
            Err(why) => {
                out.rejected.reject(index, || format!("log record {index}: {why}"));
                continue;
            }
        };
        let at_ns = match time_of(record) {
            Ok(t) => t,
            Err(why) => {
                out.rejected.reject(index, || format!("log record {index}: {why}"));
                continue;
            }
        };
        if !targets.contains_key(&session.id) {
            if left < TRACE_COST {
                out.rejected.reject(index, || over(index));
                continue;
            }
            left -= TRACE_COST;
            order.push(session.id.clone());
            let agent_id = match agent {
                Some(a) => a.id().to_owned(),
                None => service.map(label).unwrap_or_else(|| "otel".into()),
            };
            let target = Target {
                conversation: session.conversation,
                parent: session.parent,
                subagent_kind: None,
                agent: agent_id,
                first_ns: at_ns,
                goal: None,
            };
            targets.insert(session.id.clone(), target);
        }
        let target = targets.get_mut(&session.id).expect("inserted above");
        target.first_ns = target.first_ns.min(at_ns);
        if target.parent.is_some() && target.subagent_kind.is_none() {
            target.subagent_kind = attrs.str(&["agent.name", "agent_type"]).map(str::to_owned);
        }
        let scope = Some(scope_name).filter(|s| !s.is_empty());
        let context = Context {
            session: &session.id,
            parent: target.parent.as_deref(),
            agent: &target.agent,
            at_ns,
            scope,
            service,
        };
        let in_span = record.span_id.len() == 8 && record.span_id.iter().any(|&b| b != 0);
        let steps = match (agent, name) {
            (Some(a), Some(n)) if a == Agent::ClaudeCode && agents::reported_by_hooks(n) && hooked(&session.id) => {
                Vec::new()
            }
            (Some(a), Some(n)) => agents::steps(a, n, record),
            (Some(_), None) => Vec::new(),
            (None, _) if in_span => Vec::new(),
            (None, _) => genai::steps(name, attrs, record.body.as_ref().and_then(|b| b.value.as_ref()), price),
        };
        if target.goal.is_none() {
            target.goal = steps
                .iter()
                .find(|s| s.kind == "cognition.thought")
                .and_then(|s| s.payload.get("content"))
                .and_then(|c| c.as_str())
                .map(|c| c.chars().take(1000).collect());
        }
        let made = if steps.is_empty() {
            record_event(&context, record, attrs, name).map(|ev| vec![ev])
        } else {
            step_events(&context, record, attrs, name, steps)
        };
        match made {
            Ok(evs) => {
                let cost: usize = evs.iter().map(|e| e.raw().len()).sum();
                if cost > left {
                    out.rejected.reject(index, || over(index));
                    continue;
                }
                left -= cost;
                derived.extend(evs.into_iter().map(|ev| (ev, index)));
            }
            Err(e) => {
                out.rejected.reject(index, || format!("log record {index}: {e}"));
            }
        }
    }
    // A conversation's session is started where it is first seen, as a trace's is.
    for id in &order {
        let t = &targets[id];
        if !derived.iter().any(|(ev, _)| &ev.session_id == id) {
            continue;
        }
        // `otel` marks it as derived, so that a re-export finds it instead of adding another.
        // Records carry no end of their session: the collector ends it when it falls silent.
        let mut payload = match (&t.conversation, &t.parent) {
            // A conversation waits for its user between turns: its silence is no stall.
            (Some(conversation), _) => json!({
                "metadata": {
                    "source": "otlp", "conversation_id": conversation, "interactive": true, "ends_when_idle": true
                },
                "otel": { "conversation_id": conversation },
            }),
            (None, Some(parent)) => json!({
                "metadata": { "source": "otlp", "subagent": t.subagent_kind, "ends_when_idle": true },
                "otel": { "parent_session_id": parent },
            }),
            (None, None) => continue,
        };
        if let Some(goal) = &t.goal {
            payload["goal"] = json!(goal);
        }
        match child_envelope(id, t.parent.as_deref(), &t.agent, 0, t.first_ns, "session.started", &payload) {
            Ok(ev) => {
                out.events.push(ev.from_span(SpanRef { span_id: String::new(), role: SpanRole::Trace }));
                out.origin.push(None);
            }
            Err(e) => tracing::debug!(error = %e, "session.started for an OTLP conversation not built"),
        }
    }
    for (ev, index) in derived {
        out.events.push(ev);
        out.origin.push(Some(index));
    }
    out
}

struct Session {
    id: String,
    conversation: Option<String>,
    parent: Option<String>,
}

/// A known agent's records go to its own session (it starts a trace per prompt, which would
/// scatter one run into a session per prompt); others to their trace's, else their
/// conversation's.
fn session_of(record: &LogRecord, attrs: Attrs<'_>, agent: Option<Agent>) -> Result<Session, String> {
    if let Some(agent) = agent {
        if let Some(own) = attrs.str(&[agent.session_attribute()]) {
            return Ok(agent_session(agent, own, attrs));
        }
    }
    let valid = |b: &[u8], n| b.len() == n && b.iter().any(|&x| x != 0);
    if valid(&record.trace_id, 16) {
        return Ok(Session { id: format!("otel-{}", hex(&record.trace_id)), conversation: None, parent: None });
    }
    let Some(conversation) = attrs.str(CONVERSATION) else {
        return Err(format!("it has no trace id and no conversation id ({})", CONVERSATION.join(", ")));
    };
    Ok(Session { id: conversation_session(conversation), conversation: Some(conversation.to_owned()), parent: None })
}

/// A known agent's session, or its subagent's: a child of it named by both ids.
fn agent_session(agent: Agent, own: &str, attrs: Attrs<'_>) -> Session {
    let id = conversation_session(own);
    match agent.subagent(attrs) {
        Some(sub) => Session { id: conversation_session(&format!("{id}.{sub}")), conversation: None, parent: Some(id) },
        None => Session { id, conversation: Some(own.to_owned()), parent: None },
    }
}

/// The session a known agent's span belongs to (its own, or its subagent's) and its parent.
pub(crate) fn agent_span_session(agent: Agent, attrs: Attrs<'_>) -> Option<(String, Option<String>)> {
    let own = attrs.str(&[agent.session_attribute()])?;
    let s = agent_session(agent, own, attrs);
    Some((s.id, s.parent))
}

/// The session of a conversation: its own id where that is a valid session id (a Claude Code
/// session's UUID stays readable), else `conversation-` and a digest of it.
pub(crate) fn conversation_session(conversation: &str) -> String {
    let fits = (1..=128).contains(&conversation.len())
        && conversation != "."
        && conversation != ".."
        && conversation.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
    if fits {
        conversation.to_owned()
    } else {
        format!("conversation-{:016x}", fnv(&[conversation.as_bytes()]))
    }
}

fn time_of(record: &LogRecord) -> Result<u64, String> {
    let at = if record.time_unix_nano > 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
    if at == 0 {
        return Err("it has neither time_unix_nano nor observed_time_unix_nano".into());
    }
    if at > MAX_TIME_NS {
        return Err("its time is after 2200-01-01: not a clock reading".into());
    }
    Ok(at)
}

/// The record's event name: its `event.name` attribute wins over its `event_name` field, which
/// some agents fill with something else (Codex: a source location).
fn event_name<'a>(record: &'a LogRecord, attrs: Attrs<'a>) -> Option<&'a str> {
    attrs.str(&["event.name"]).or(Some(record.event_name.as_str()).filter(|n| !n.is_empty()))
}

/// Where a record's events go, and what every one of them carries.
struct Context<'a> {
    session: &'a str,
    parent: Option<&'a str>,
    agent: &'a str,
    at_ns: u64,
    scope: Option<&'a str>,
    service: Option<&'a str>,
}

/// A known agent's body repeats the event's name (`claude_code.tool_result`).
fn body_text(record: &LogRecord) -> Option<&str> {
    match record.body.as_ref()?.value.as_ref()? {
        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// What identifies a record, whatever batch it comes in: its session, time, event name, and its
/// sequence attribute where it has one, else its body. It starts with `r`, so that it can never
/// be taken for a span's id.
fn record_id(session: &str, at_ns: u64, name: Option<&str>, record: &LogRecord, attrs: Attrs<'_>) -> String {
    let body = record.body.as_ref().and_then(|b| b.value.as_ref());
    let identity_text = match attrs.get(SEQUENCE[0]) {
        Some(seq) => serde_json::to_string(&Any(Some(seq))).unwrap_or_default(),
        None => serde_json::to_string(&Any(body)).unwrap_or_default(),
    };
    let digest =
        fnv(&[session.as_bytes(), &at_ns.to_be_bytes(), name.unwrap_or("").as_bytes(), identity_text.as_bytes()]);
    format!("r{digest:016x}")
}

fn identity<'a>(c: &Context<'a>, record: &'a LogRecord, name: Option<&'a str>, record_id: String) -> Identity<'a> {
    let valid = |b: &[u8], n| b.len() == n && b.iter().any(|&x| x != 0);
    Identity {
        record_id,
        trace_id: valid(&record.trace_id, 16).then(|| hex(&record.trace_id)),
        span_id: valid(&record.span_id, 8).then(|| hex(&record.span_id)),
        event_name: Some(record.event_name.as_str()).filter(|n| !n.is_empty() && Some(*n) != name),
        scope: c.scope,
        service: c.service,
        name: None,
        attributes: None,
    }
}

fn record_event(
    c: &Context<'_>,
    record: &LogRecord,
    attrs: Attrs<'_>,
    name: Option<&str>,
) -> Result<Event, EventError> {
    let body = record.body.as_ref().and_then(|b| b.value.as_ref());
    let record_id = record_id(c.session, c.at_ns, name, record, attrs);
    let payload = OtelLog {
        name,
        body: body.map(|b| Any(Some(b))),
        severity: Some(record.severity_text.as_str()).filter(|s| !s.is_empty()),
        severity_number: Some(record.severity_number).filter(|n| *n > 0),
        attributes: Attributes(&record.attributes),
        otel: identity(c, record, name, record_id.clone()),
    };
    let ev = child_envelope(c.session, c.parent, c.agent, (c.at_ns / 1000) as i64, c.at_ns, "otel.log", &payload)?;
    Ok(ev.from_span(SpanRef { span_id: record_id, role: SpanRole::Main }))
}

/// The events of a known agent's record: its steps, each carrying the record whole under `otel`
/// (its name and attributes besides the identity).
fn step_events(
    c: &Context<'_>,
    record: &LogRecord,
    attrs: Attrs<'_>,
    name: Option<&str>,
    steps: Vec<agents::Step>,
) -> Result<Vec<Event>, EventError> {
    let record_id = record_id(c.session, c.at_ns, name, record, attrs);
    let mut otel = identity(c, record, name, record_id.clone());
    otel.name = name;
    otel.attributes = Some(Attributes(&record.attributes));
    let otel = serde_json::to_value(&otel).map_err(|e| EventError::NotJson(e.to_string()))?;
    steps
        .into_iter()
        .map(|step| {
            let mut payload = step.payload;
            payload.insert("otel".into(), otel.clone());
            let at = c.at_ns.saturating_sub(step.before_ns);
            let (session, parent) = match (step.in_parent, c.parent) {
                (true, Some(parent)) => {
                    payload.insert("child_session_id".into(), c.session.into());
                    (parent, None)
                }
                _ => (c.session, c.parent),
            };
            let ev = child_envelope(session, parent, c.agent, (at / 1000) as i64, at, step.kind, &payload)?;
            Ok(ev.from_span(SpanRef { span_id: record_id.clone(), role: SpanRole::of_kind(step.kind) }))
        })
        .collect()
}

/// FNV-1a, 64 bits, over the parts with a separator between them: a stable digest (the same on
/// every machine and version), which is all an identity needs.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::decode::Scoped;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use serde_json::Value as Json;

    const T0: u64 = 1_764_756_000_000_000_000;

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn record(ms: u64, attrs: Vec<KeyValue>) -> LogRecord {
        LogRecord { time_unix_nano: T0 + ms * 1_000_000, attributes: attrs, ..Default::default() }
    }

    fn batch(service: &str, records: Vec<LogRecord>) -> Batch<LogRecord> {
        let mut b = Batch::default();
        b.resources.push(Resource { attributes: vec![kv("service.name", s(service))], ..Default::default() });
        b.scopes.push(Scoped { resource: 0, ..Default::default() });
        for (index, item) in records.into_iter().enumerate() {
            b.items.push(Entry { index, scope: 0, item });
            b.total += 1;
        }
        b.size = 10_000;
        b
    }

    fn map(records: Vec<LogRecord>) -> Mapped {
        map_logs(batch("support-bot", records), &|_, _, _| None, &|_| false)
    }

    fn map_as(service: &str, records: Vec<LogRecord>) -> Mapped {
        map_logs(batch(service, records), &|_, _, _| None, &|_| false)
    }

    fn payload(ev: &Event) -> Json {
        serde_json::from_str(ev.payload_json()).unwrap()
    }

    #[test]
    fn a_record_with_a_trace_joins_its_trace_and_one_with_a_conversation_its_own_session() {
        let mut traced = record(1, vec![kv("event.name", s("api_request"))]);
        traced.trace_id = vec![0xab; 16];
        traced.span_id = vec![0xcd; 8];
        let conv = record(2, vec![kv("session.id", s("085f8b35-aaaa")), kv("event.name", s("user_prompt"))]);
        let m = map(vec![traced, conv]);
        let kinds: Vec<(&str, &str)> = m.events.iter().map(|e| (e.session_id.as_str(), e.kind.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("085f8b35-aaaa", "session.started"),
                ("otel-abababababababababababababababab", "otel.log"),
                ("085f8b35-aaaa", "otel.log")
            ]
        );
        assert_eq!(payload(&m.events[0])["metadata"]["conversation_id"], "085f8b35-aaaa");
        assert_eq!(m.events[0].sequence, 0);
        let p = payload(&m.events[1]);
        assert_eq!((&p["name"], &p["otel"]["span_id"]), (&json!("api_request"), &json!("cdcdcdcdcdcdcdcd")));
        assert!(m.events.iter().all(|e| e.agent_id == "support-bot"));
        assert_eq!(m.events[2].sequence, ((T0 + 2_000_000) / 1000) as i64);
        assert_eq!(m.origin, [None, Some(0), Some(1)]);
    }

    #[test]
    fn records_with_neither_trace_nor_conversation_or_time_are_rejected_with_a_reason() {
        let orphan = record(1, vec![kv("event.name", s("x"))]);
        let timeless = LogRecord { attributes: vec![kv("session.id", s("c1"))], ..Default::default() };
        let mut late = record(0, vec![kv("session.id", s("c1"))]);
        late.time_unix_nano = u64::MAX;
        let m = map(vec![orphan, timeless, late, record(3, vec![kv("conversation.id", s("c1"))])]);
        let reasons: Vec<&str> = m.rejected.reasons().collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("no trace id and no conversation id"), "{reasons:?}");
        assert!(reasons[1].contains("neither time"), "{reasons:?}");
        assert!(reasons[2].contains("after 2200"), "{reasons:?}");
        assert_eq!(m.events.len(), 2, "the good one, and its session's start");
    }

    #[test]
    fn the_event_name_attribute_wins_and_maps_and_arrays_stay_json() {
        let mut r = record(
            1,
            vec![
                kv("session.id", s("c2")),
                kv("event.name", s("my.tool_result")),
                kv(
                    "list",
                    Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::IntValue(3)) }] }),
                ),
                kv("map", Value::KvlistValue(KeyValueList { values: vec![kv("k", Value::BoolValue(true))] })),
            ],
        );
        r.event_name = "event otel/src/events/session_telemetry.rs:803".into();
        r.body = Some(AnyValue { value: Some(s("my.tool_result")) });
        let m = map(vec![r]);
        let p = payload(&m.events[1]);
        assert_eq!(p["name"], "my.tool_result");
        assert_eq!(p["otel"]["event_name"], "event otel/src/events/session_telemetry.rs:803");
        assert_eq!(p["attributes"]["list"], json!([3]));
        assert_eq!(p["attributes"]["map"], json!({"k": true}));
        assert_eq!(p["body"], "my.tool_result");
    }

    #[test]
    fn a_record_exported_again_has_the_same_identity_and_different_records_differ() {
        let r = |seq: i64, body: &str| {
            let mut r = record(5, vec![kv("session.id", s("c3")), kv("event.sequence", Value::IntValue(seq))]);
            r.body = Some(AnyValue { value: Some(s(body)) });
            r
        };
        let id = |m: &Mapped| m.events[1].span_ref().unwrap().span_id.clone();
        let first = map(vec![r(1, "a")]);
        assert_eq!(id(&first), id(&map(vec![r(1, "a")])));
        assert_eq!(id(&first), id(&map(vec![r(1, "changed body, same sequence")])));
        assert_ne!(id(&first), id(&map(vec![r(2, "a")])));
        assert!(id(&first).starts_with('r'), "a record's id is never a span's");
    }

    #[test]
    fn a_claude_code_run_is_one_session_of_steps_whatever_its_traces() {
        let cc = |ms: u64, name: &str, seq: i64, trace: u8, more: Vec<KeyValue>| {
            let mut attrs = vec![
                kv("session.id", s("085f8b35")),
                kv("event.name", s(name)),
                kv("event.sequence", Value::IntValue(seq)),
            ];
            attrs.extend(more);
            let mut r = record(ms, attrs);
            r.body = Some(AnyValue { value: Some(s(&format!("claude_code.{name}"))) });
            r.trace_id = vec![trace; 16];
            r
        };
        let m = map_as(
            "claude-code",
            vec![
                cc(1, "user_prompt", 1, 1, vec![kv("prompt", s("List the files"))]),
                cc(
                    2,
                    "api_request",
                    2,
                    1,
                    vec![kv("model", s("claude-sonnet-4-5")), kv("input_tokens", s("12")), kv("cost_usd", s("0.002"))],
                ),
                cc(3, "tool_decision", 3, 1, vec![kv("decision", s("accept")), kv("tool_name", s("Bash"))]),
                cc(
                    40,
                    "tool_result",
                    4,
                    1,
                    vec![kv("tool_name", s("Bash")), kv("success", s("false")), kv("duration_ms", s("30"))],
                ),
                cc(50, "hook_execution_start", 5, 2, vec![]),
                cc(60, "user_prompt", 6, 2, vec![kv("prompt", s("And now?"))]),
            ],
        );
        let kinds: Vec<&str> = m.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "session.started",
                "cognition.thought",
                "operation.external_call",
                "custom.tool_decision",
                "operation.tool_start",
                "operation.tool_end",
                "otel.log",
                "cognition.thought"
            ]
        );
        assert!(
            m.events.iter().all(|e| e.session_id == "085f8b35" && e.agent_id == "claude-code"),
            "one session, both traces"
        );
        assert_eq!(payload(&m.events[0])["goal"], "List the files");
        let start = &m.events[4];
        assert_eq!(start.sequence, ((T0 + 10_000_000) / 1000) as i64, "started its duration before its result");
        assert_eq!(payload(&m.events[5])["success"], false);
        let call = payload(&m.events[2]);
        assert_eq!((&call["cost_usd"], &call["otel"]["name"]), (&json!(0.002), &json!("api_request")));
        assert_eq!(call["otel"]["attributes"]["input_tokens"], "12", "the record kept whole");
        let (a, b) = (m.events[4].span_ref().unwrap(), m.events[5].span_ref().unwrap());
        assert_eq!(a.span_id, b.span_id, "one record");
        assert_ne!(a.role, b.role, "two events of it");
    }

    #[test]
    fn a_claude_code_subagent_is_a_child_session_spawned_by_its_parent() {
        let cc = |ms: u64, name: &str, seq: i64, more: Vec<KeyValue>| {
            let mut attrs = vec![
                kv("session.id", s("085f8b35")),
                kv("event.name", s(name)),
                kv("event.sequence", Value::IntValue(seq)),
            ];
            attrs.extend(more);
            record(ms, attrs)
        };
        let sub = || kv("agent_id", s("a7a0a768ec0834d14"));
        let m = map_as(
            "claude-code",
            vec![
                cc(1, "user_prompt", 1, vec![kv("prompt", s("Have a subagent list the files"))]),
                cc(
                    50,
                    "api_request",
                    2,
                    vec![
                        sub(),
                        kv("agent.name", s("general-purpose")),
                        kv("input_tokens", s("10")),
                        kv("duration_ms", s("5")),
                    ],
                ),
                cc(60, "tool_result", 3, vec![sub(), kv("tool_name", s("Bash")), kv("success", s("true"))]),
                cc(
                    80,
                    "subagent_completed",
                    4,
                    vec![sub(), kv("agent_type", s("general-purpose")), kv("duration_ms", Value::IntValue(40))],
                ),
            ],
        );
        let child = "085f8b35.a7a0a768ec0834d14";
        let placed: Vec<(&str, &str, Option<&str>)> =
            m.events.iter().map(|e| (e.session_id.as_str(), e.kind.as_str(), e.parent_session_id.as_deref())).collect();
        assert_eq!(
            placed,
            [
                ("085f8b35", "session.started", None),
                (child, "session.started", Some("085f8b35")),
                ("085f8b35", "cognition.thought", None),
                (child, "operation.external_call", Some("085f8b35")),
                (child, "operation.tool_start", Some("085f8b35")),
                (child, "operation.tool_end", Some("085f8b35")),
                ("085f8b35", "operation.agent_spawn", None),
                (child, "session.ended", Some("085f8b35")),
            ]
        );
        assert_eq!(payload(&m.events[1])["metadata"]["subagent"], "general-purpose");
        assert!(m.events[1].raw().contains(r#""parent_session_id":"085f8b35""#), "{}", m.events[1].raw());
        let spawn = &m.events[6];
        assert_eq!(payload(spawn)["child_session_id"], child);
        assert_eq!(spawn.sequence, ((T0 + 40_000_000) / 1000) as i64, "spawned when the subagent began");
        assert_eq!(payload(&m.events[7])["outcome"], "completed");
    }

    #[test]
    fn generic_records_report_steps_only_outside_a_span() {
        let details = |span: bool| {
            let mut r = record(
                5,
                vec![
                    kv("event.name", s("gen_ai.client.inference.operation.details")),
                    kv("gen_ai.conversation.id", s("conv-1")),
                    kv("gen_ai.request.model", s("gpt-4o")),
                    kv("gen_ai.usage.input_tokens", Value::IntValue(3)),
                ],
            );
            if span {
                r.trace_id = vec![7; 16];
                r.span_id = vec![8; 8];
            }
            r
        };
        let alone = map(vec![details(false)]);
        let kinds: Vec<&str> = alone.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["session.started", "operation.external_call"]);
        assert_eq!(alone.events[1].session_id, "conv-1");
        let in_span = map(vec![details(true)]);
        let kinds: Vec<&str> = in_span.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["otel.log"], "the span reports the call");
        assert_eq!(payload(&in_span.events[0])["otel"]["span_id"], "0808080808080808");
    }

    #[test]
    fn conversation_ids_that_are_not_session_ids_get_a_digest() {
        assert_eq!(conversation_session("085f8b35-1c2d"), "085f8b35-1c2d");
        let odd = conversation_session("thread 7/β");
        assert!(odd.starts_with("conversation-") && odd.len() == "conversation-".len() + 16, "{odd}");
        assert_eq!(odd, conversation_session("thread 7/β"));
        assert_ne!(conversation_session(".."), "..");
    }
}
