//! From an OTLP logs export to AOP events (`OTLP.md`, Logs). Pure, like the spans' mapping.
//!
//! Which session a record joins: its trace's (`otel-<trace id>`) when it has a trace id; else
//! the session of its conversation (`session.id`, `gen_ai.conversation.id`, Codex's
//! `conversation.id`), whose id is the conversation's own where it is a valid session id; a
//! record with neither is rejected. Each record becomes one `otel.log` event kept whole — its
//! event name, body, severity and attributes (maps and arrays as JSON) — at the sequence of its
//! clock in microseconds, carrying a record id made of what identifies it (its session, time,
//! event name, and its sequence attribute or else its body), by which the store knows a record
//! exported again.

use super::attrs::{hex, Attrs};
use super::decode::{Batch, Entry};
use super::map::{envelope, label, Mapped, Pricing, MAX_TIME_NS, TRACE_COST};
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
    agent: String,
    /// The earliest record time seen for it in this request.
    first_ns: u64,
}

pub fn map_logs(batch: Batch<LogRecord>, _price: Pricing<'_>) -> Mapped {
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
        let session = match session_of(record, attrs) {
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
            let agent = service.map(label).unwrap_or_else(|| "otel".into());
            targets.insert(session.id.clone(), Target { conversation: session.conversation, agent, first_ns: at_ns });
        }
        let target = targets.get_mut(&session.id).expect("inserted above");
        target.first_ns = target.first_ns.min(at_ns);
        let scope = Some(scoped.scope.name.as_str()).filter(|s| !s.is_empty());
        match record_event(&session.id, &target.agent, record, attrs, at_ns, scope, service) {
            Ok(ev) if ev.raw().len() > left => {
                out.rejected.reject(index, || over(index));
            }
            Ok(ev) => {
                left -= ev.raw().len();
                derived.push((ev, index));
            }
            Err(e) => {
                out.rejected.reject(index, || format!("log record {index}: {e}"));
            }
        }
    }
    // A conversation's session is started where it is first seen, as a trace's is.
    for id in &order {
        let t = &targets[id];
        let Some(conversation) = &t.conversation else { continue };
        if !derived.iter().any(|(ev, _)| &ev.session_id == id) {
            continue;
        }
        // `otel` marks it as derived, so that a re-export finds it instead of adding another.
        let payload = json!({
            "metadata": { "source": "otlp", "conversation_id": conversation },
            "otel": { "conversation_id": conversation },
        });
        match envelope(id, &t.agent, 0, t.first_ns, "session.started", &payload) {
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
}

fn session_of(record: &LogRecord, attrs: Attrs<'_>) -> Result<Session, String> {
    let valid = |b: &[u8], n| b.len() == n && b.iter().any(|&x| x != 0);
    if valid(&record.trace_id, 16) {
        return Ok(Session { id: format!("otel-{}", hex(&record.trace_id)), conversation: None });
    }
    let Some(conversation) = attrs.str(CONVERSATION) else {
        return Err(format!("it has no trace id and no conversation id ({})", CONVERSATION.join(", ")));
    };
    Ok(Session { id: conversation_session(conversation), conversation: Some(conversation.to_owned()) })
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

fn record_event(
    session: &str,
    agent: &str,
    record: &LogRecord,
    attrs: Attrs<'_>,
    at_ns: u64,
    scope: Option<&str>,
    service: Option<&str>,
) -> Result<Event, EventError> {
    let name = event_name(record, attrs);
    let body = record.body.as_ref().and_then(|b| b.value.as_ref());
    let identity_text = match attrs.get(SEQUENCE[0]) {
        Some(seq) => serde_json::to_string(&Any(Some(seq))).unwrap_or_default(),
        None => serde_json::to_string(&Any(body)).unwrap_or_default(),
    };
    let record_id = format!(
        "{:016x}",
        fnv(&[session.as_bytes(), &at_ns.to_be_bytes(), name.unwrap_or("").as_bytes(), identity_text.as_bytes()])
    );
    let valid = |b: &[u8], n| b.len() == n && b.iter().any(|&x| x != 0);
    let payload = OtelLog {
        name,
        body: body.map(|b| Any(Some(b))),
        severity: Some(record.severity_text.as_str()).filter(|s| !s.is_empty()),
        severity_number: Some(record.severity_number).filter(|n| *n > 0),
        attributes: Attributes(&record.attributes),
        otel: Identity {
            record_id: record_id.clone(),
            trace_id: valid(&record.trace_id, 16).then(|| hex(&record.trace_id)),
            span_id: valid(&record.span_id, 8).then(|| hex(&record.span_id)),
            event_name: Some(record.event_name.as_str()).filter(|n| !n.is_empty() && Some(*n) != name),
            scope,
            service,
        },
    };
    let ev = envelope(session, agent, (at_ns / 1000) as i64, at_ns, "otel.log", &payload)?;
    Ok(ev.from_span(SpanRef { span_id: record_id, role: SpanRole::Record }))
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

    fn batch(records: Vec<LogRecord>) -> Batch<LogRecord> {
        let mut b = Batch::default();
        b.resources.push(Resource { attributes: vec![kv("service.name", s("claude-code"))], ..Default::default() });
        b.scopes.push(Scoped { resource: 0, ..Default::default() });
        for (index, item) in records.into_iter().enumerate() {
            b.items.push(Entry { index, scope: 0, item });
            b.total += 1;
        }
        b.size = 10_000;
        b
    }

    fn map(records: Vec<LogRecord>) -> Mapped {
        map_logs(batch(records), &|_, _, _| None)
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
        assert!(m.events.iter().all(|e| e.agent_id == "claude-code"));
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
                kv("event.name", s("codex.tool_result")),
                kv(
                    "list",
                    Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::IntValue(3)) }] }),
                ),
                kv("map", Value::KvlistValue(KeyValueList { values: vec![kv("k", Value::BoolValue(true))] })),
            ],
        );
        r.event_name = "event otel/src/events/session_telemetry.rs:803".into();
        r.body = Some(AnyValue { value: Some(s("claude_code.tool_result")) });
        let m = map(vec![r]);
        let p = payload(&m.events[1]);
        assert_eq!(p["name"], "codex.tool_result");
        assert_eq!(p["otel"]["event_name"], "event otel/src/events/session_telemetry.rs:803");
        assert_eq!(p["attributes"]["list"], json!([3]));
        assert_eq!(p["attributes"]["map"], json!({"k": true}));
        assert_eq!(p["body"], "claude_code.tool_result");
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
        assert_eq!(first.events[1].span_ref().unwrap().role, SpanRole::Record);
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
