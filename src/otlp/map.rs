//! From an OTLP export request to AOP events (`OTLP.md`, From spans to AOP events). Pure: the
//! same request and prices give the same events.
//!
//! One trace is one session, `otel-<trace id>`. Each span yields its events whatever else the
//! request holds, at sequences taken from its own clock (microseconds since the epoch: they
//! follow time, and the dashboard's numbers stay exact below 2^53); the trace's
//! `session.started` is sequence 0. Each event carries a [`SpanRef`], by which the store knows a
//! re-sent span, and moves an event whose sequence another span's event already holds.
//! What depends on the other spans of the request (the agent an event is attributed to,
//! whether an agent span is nested) is resolved within the request only: an exporter sends
//! children before their parents (they end first), so a memory across requests would rarely
//! know more.

use super::agents::Agent;
use super::attrs::{hex, Attrs};
use super::classify::{self as c, classify, Class};
use super::decode::Batch;
use super::payload::{
    Attributes, Ended, Full, Identity, Link, LlmCall, Loose, OtherSpan, SpanEvent, Spawn, Text, ToolEnd, ToolStart,
};
use super::reject::Rejections;
use crate::model::{Event, EventError, SpanRef, SpanRole};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Map};
use std::collections::HashMap;

/// What a request yields: events to store, and the spans that could not be used.
#[derive(Debug, Default)]
pub struct Mapped {
    pub events: Vec<Event>,
    /// For each event, the index (in request order) of the span it came from; `None` for a
    /// trace's `session.started`.
    pub origin: Vec<Option<usize>>,
    /// Items (spans, log records) in the request.
    pub items: usize,
    /// Unusable spans, those the decoder refused included.
    pub rejected: Rejections,
    /// Usable items deliberately not kept (a coding agent's internal spans outside any
    /// conversation): acknowledged, and counted in `/metrics`.
    pub not_kept: usize,
}

/// The price of a call: `(model, input tokens, output tokens) -> USD`, `None` for an unknown model.
pub type Pricing<'a> = &'a dyn Fn(&str, i64, i64) -> Option<f64>;

/// A span with what the mapping reads of it.
struct Item<'a> {
    span: &'a Span,
    index: usize,
    attrs: Attrs<'a>,
    class: Class,
    service: Option<&'a str>,
    scope: &'a str,
    trace: String,
    id: String,
    parent: Option<String>,
}

/// How many ancestors are followed looking for an enclosing agent: a bound against a request
/// whose parent links form a cycle.
const MAX_DEPTH: usize = 256;

/// What a trace counts against the request's budget besides its events: the session it may
/// create (a session's row, indexes and alerts take about this much on disk).
pub(super) const TRACE_COST: usize = 8192;

/// Times past this (2200-01-01T00:00:00Z) are not clock readings; refused, they also keep
/// sequences (microseconds) below 2^53, where JavaScript's numbers stop being exact.
pub const MAX_TIME_NS: u64 = 7_258_118_400_000_000_000;

/// What a request of `bytes` bytes (decompressed) may derive, counting each trace's session as
/// [`TRACE_COST`] bytes: a span's events are several times its size on the wire when it
/// carries little, so this is twice what it may decode to.
pub fn derive_budget(bytes: usize) -> usize {
    bytes.saturating_mul(16).saturating_add(1 << 20)
}

pub fn map_request(batch: Batch<Span>, price: Pricing<'_>) -> Mapped {
    let Batch { resources, scopes, items: entries, total, rejected, size } = batch;
    let mut out = Mapped { items: total, rejected, ..Mapped::default() };
    let mut items = Vec::with_capacity(entries.len());
    // Spans of coding agents aop knows: their steps come from their log records, so a span is
    // kept as an `otel.span` in the agent's own session, or not kept at all.
    let mut agents: Vec<(Item<'_>, Agent)> = Vec::new();
    for entry in &entries {
        let scoped = &scopes[entry.scope];
        let service = Attrs(&resources[scoped.resource].attributes).str(&["service.name"]);
        let (span, index) = (&entry.item, entry.index);
        match check(span) {
            Ok((trace, id, parent)) => {
                let attrs = Attrs(&span.attributes);
                let class = classify(attrs);
                let scope = scoped.scope.name.as_str();
                let item = Item { span, index, attrs, class, service, scope, trace, id, parent };
                match Agent::of(service, scope, Some(&span.name)) {
                    Some(agent) => agents.push((item, agent)),
                    None => items.push(item),
                }
            }
            Err(why) => {
                out.rejected.reject(index, || format!("span {index} ({:?}): {why}", span.name));
            }
        }
    }
    let by_id: HashMap<(&str, &str), usize> =
        items.iter().enumerate().map(|(i, it)| ((it.trace.as_str(), it.id.as_str()), i)).collect();
    // The nearest enclosing agent span of each span, within the request.
    let agent_above: Vec<Option<usize>> = items
        .iter()
        .map(|it| {
            let mut parent = it.parent.as_deref();
            for _ in 0..MAX_DEPTH {
                let &p = by_id.get(&(it.trace.as_str(), parent?))?;
                if items[p].class == Class::Agent {
                    return Some(p);
                }
                parent = items[p].parent.as_deref();
            }
            None
        })
        .collect();

    let mut traces: Vec<&str> = Vec::new();
    let mut of_trace: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        of_trace
            .entry(it.trace.as_str())
            .or_insert_with(|| {
                traces.push(it.trace.as_str());
                Vec::new()
            })
            .push(i);
    }
    // What the request may derive, so that a request of many tiny traces cannot become a
    // hundred times its size in sessions and events.
    let limit = derive_budget(size);
    let mut left = limit;
    let over = |index: usize| {
        format!(
            "span {index}: the request derives more than {} KiB of events and sessions (16 times its size and 1 MiB): send smaller batches",
            limit >> 10
        )
    };
    for (it, agent) in &agents {
        // Claude Code's spans all name its session; of Codex's hundreds of internal spans, only
        // those of a conversation (its turns and commands) are worth keeping.
        let Some((session, parent)) = super::logs::agent_span_session(*agent, it.attrs) else {
            out.not_kept += 1;
            continue;
        };
        let latency_ms = (it.span.end_time_unix_nano - it.span.start_time_unix_nano) as f64 / 1e6;
        let at = it.span.start_time_unix_nano;
        let payload = other(it, latency_ms);
        let made =
            child_envelope(&session, parent.as_deref(), agent.id(), (at / 1000) as i64, at, "otel.span", &payload)
                .map(|ev| ev.from_span(SpanRef { span_id: it.id.clone(), role: SpanRole::Main }));
        match made {
            Ok(ev) if ev.raw().len() > left => {
                out.rejected.reject(it.index, || over(it.index));
            }
            Ok(ev) => {
                left -= ev.raw().len();
                out.events.push(ev);
                out.origin.push(Some(it.index));
            }
            Err(why) => {
                out.rejected.reject(it.index, || format!("span {} ({:?}): {why}", it.index, it.span.name));
            }
        }
    }
    for trace in traces {
        let members = &of_trace[trace];
        if left < TRACE_COST {
            for &i in members {
                out.rejected.reject(items[i].index, || over(items[i].index));
            }
            continue;
        }
        left -= TRACE_COST;
        let session = format!("otel-{trace}");
        // The outermost agent: an agent span with no agent above it, the earliest if several.
        let outermost = members
            .iter()
            .copied()
            .filter(|&i| items[i].class == Class::Agent && agent_above[i].is_none())
            .min_by_key(|&i| (items[i].span.start_time_unix_nano, items[i].index));
        let agent = outermost
            .map(|i| agent_name(&items[i]))
            .or_else(|| members.iter().find_map(|&i| items[i].service).map(label))
            .unwrap_or_else(|| "otel".into());
        let ctx = Trace { session: &session, agent: &agent };

        let mut derived = Vec::new();
        let mut origin = Vec::new();
        let mut used = Vec::new();
        for &i in members {
            let it = &items[i];
            let above = agent_above[i].map(|a| agent_name(&items[a]));
            match span_events(&ctx, it, above.as_deref(), price) {
                Ok(evs) => {
                    let cost: usize = evs.iter().map(|e| e.raw().len()).sum();
                    if cost > left {
                        out.rejected.reject(it.index, || over(it.index));
                        continue;
                    }
                    left -= cost;
                    origin.extend(std::iter::repeat_n(Some(it.index), evs.len()));
                    derived.extend(evs);
                    used.push(it);
                }
                Err(why) => {
                    out.rejected.reject(it.index, || format!("span {} ({:?}): {why}", it.index, it.span.name));
                }
            }
        }
        // A trace none of whose spans could be used leaves no trace.
        if used.is_empty() {
            continue;
        }
        match started(&ctx, used.iter().copied()) {
            Ok(ev) => {
                left = left.saturating_sub(ev.raw().len());
                out.events.push(ev);
                out.origin.push(None);
            }
            // Only a huge resource can make it too large: the spans are still worth keeping.
            Err(e) => tracing::debug!(error = %e, "session.started for an OTLP trace not built"),
        }
        out.events.append(&mut derived);
        out.origin.append(&mut origin);
    }
    out
}

/// The span's trace id, id and parent id in hex, or why it cannot be used.
fn check(span: &Span) -> Result<(String, String, Option<String>), String> {
    let valid = |b: &[u8], n| b.len() == n && b.iter().any(|&x| x != 0);
    if !valid(&span.trace_id, 16) {
        return Err(format!("trace_id must be 16 bytes, not all zero (got {} bytes)", span.trace_id.len()));
    }
    if !valid(&span.span_id, 8) {
        return Err(format!("span_id must be 8 bytes, not all zero (got {} bytes)", span.span_id.len()));
    }
    let parent = match span.parent_span_id.len() {
        0 => None,
        // An all-zero parent is how some SDKs spell "no parent".
        8 if span.parent_span_id.iter().all(|&x| x == 0) => None,
        8 => Some(hex(&span.parent_span_id)),
        n => return Err(format!("parent_span_id must be empty or 8 bytes (got {n} bytes)")),
    };
    if span.start_time_unix_nano == 0 {
        return Err("start_time_unix_nano is missing".into());
    }
    if span.end_time_unix_nano > MAX_TIME_NS {
        return Err("its times are after 2200-01-01: not a clock reading".into());
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err("end_time_unix_nano is before start_time_unix_nano".into());
    }
    Ok((hex(&span.trace_id), hex(&span.span_id), parent))
}

struct Trace<'a> {
    session: &'a str,
    agent: &'a str,
}

/// An agent span's name: `gen_ai.agent.name` and its kin, else the span's name.
fn agent_name(it: &Item<'_>) -> String {
    label(it.attrs.str(c::AGENT_NAME).unwrap_or(&it.span.name))
}

/// A name usable as an `agent_id`: no control characters, 1 to 128 characters.
pub(super) fn label(s: &str) -> String {
    let l: String = s.chars().filter(|c| !c.is_control()).take(128).collect();
    if l.trim().is_empty() {
        "otel".into()
    } else {
        l
    }
}

fn started<'s, 'a: 's>(t: &Trace<'_>, spans: impl Iterator<Item = &'s Item<'a>> + Clone) -> Result<Event, EventError> {
    let first = spans.clone().map(|it| it.span.start_time_unix_nano).min().unwrap_or(0);
    let root = spans.clone().find(|it| it.parent.is_none());
    let mut metadata = Map::new();
    metadata.insert("source".into(), json!("otlp"));
    if let Some(service) = spans.clone().find_map(|it| it.service) {
        metadata.insert("service_name".into(), json!(service));
    }
    if let Some(conv) = spans.clone().find_map(|it| it.attrs.str(c::CONVERSATION)) {
        metadata.insert("conversation_id".into(), json!(conv));
    }
    let trace_id = spans.clone().next().map_or("", |it| it.trace.as_str());
    let mut payload = json!({ "metadata": metadata, "otel": { "trace_id": trace_id } });
    if let Some(root) = root {
        payload["goal"] = json!(root.span.name);
    }
    let ev = envelope(t.session, t.agent, 0, first, "session.started", &payload)?;
    Ok(ev.from_span(SpanRef { span_id: String::new(), role: SpanRole::Trace }))
}

fn span_events(
    t: &Trace<'_>,
    it: &Item<'_>,
    agent_above: Option<&str>,
    price: Pricing<'_>,
) -> Result<Vec<Event>, EventError> {
    let span = it.span;
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    let failed = status_code(span) == 2;
    let latency_ms = (end - start) as f64 / 1e6;
    // The agent an event is attributed to: the nearest agent span above it, else the session's.
    let agent = agent_above.unwrap_or(t.agent);
    let mut evs = Vec::with_capacity(3);
    let mut push = |at: u64, kind: &str, agent: &str, payload: &dyn erased::Payload| -> Result<(), EventError> {
        let ev = envelope(t.session, agent, (at / 1000) as i64, at, kind, payload)?;
        evs.push(ev.from_span(SpanRef { span_id: it.id.clone(), role: SpanRole::of_kind(kind) }));
        Ok(())
    };
    let a = it.attrs;
    match it.class {
        Class::Tool => {
            let tool = a.str(c::TOOL_NAME).unwrap_or(&span.name);
            let tool_call_id = a.str(c::TOOL_CALL_ID);
            let input = a.first(c::TOOL_INPUT).map(Loose::of);
            push(start, "operation.tool_start", agent, &ToolStart { tool, input, tool_call_id, otel: identity(it) })?;
            let done = ToolEnd {
                tool,
                tool_call_id,
                success: !failed,
                output_summary: a.first(c::TOOL_OUTPUT).map(Text::of),
                error: failed.then(|| error_text(span).unwrap_or_else(|| "the span's status is ERROR".into())),
                latency_ms,
                otel: full(it, true),
            };
            push(end, "operation.tool_end", agent, &done)?;
        }
        Class::Llm => push(end, "operation.external_call", agent, &llm_call(it, failed, latency_ms, price))?,
        Class::Agent if agent_above.is_some() => {
            let name = agent_name(it);
            let spawn = Spawn { child_agent_id: &name, goal: a.str(c::AGENT_GOAL), otel: full(it, true) };
            push(start, "operation.agent_spawn", agent, &spawn)?;
        }
        // Any other span (the outermost agent's too) is reported at its start, so that it comes
        // before what happened inside it; its duration is known, since spans arrive ended.
        Class::Agent | Class::Other => push(start, "otel.span", agent, &other(it, latency_ms))?,
    }
    if it.parent.is_none() {
        let ended = Ended {
            outcome: if failed { "failed" } else { "completed" },
            error_message: failed.then(|| error_text(span).unwrap_or_else(|| "the root span's status is ERROR".into())),
            otel: identity(it),
        };
        push(end, "session.ended", t.agent, &ended)?;
    }
    Ok(evs)
}

/// `&dyn Serialize` is not object-safe: payloads go through this instead.
pub(super) mod erased {
    pub(in crate::otlp) trait Payload {
        fn json(&self) -> Result<String, serde_json::Error>;
    }

    impl<T: serde::Serialize> Payload for T {
        fn json(&self) -> Result<String, serde_json::Error> {
            serde_json::to_string(self)
        }
    }
}

fn llm_call<'a>(it: &'a Item<'a>, failed: bool, latency_ms: f64, price: Pricing<'_>) -> LlmCall<'a> {
    let a = it.attrs;
    let method = a.str(c::OPERATION).unwrap_or_else(|| {
        let embedding = a.str(&["openinference.span.kind"]).is_some_and(|k| k.eq_ignore_ascii_case("EMBEDDING"));
        if embedding {
            "embeddings"
        } else {
            "chat"
        }
    });
    let request_model = a.str(c::REQUEST_MODEL);
    let response_model = a.str(c::RESPONSE_MODEL);
    let model = request_model.or(response_model);
    let input_tokens = a.count(c::INPUT_TOKENS);
    let output_tokens = a.count(c::OUTPUT_TOKENS);
    let mut call = LlmCall {
        service: a.str(c::PROVIDER).unwrap_or("llm"),
        method,
        model,
        response_model: response_model.filter(|r| request_model.is_some_and(|q| q != *r)),
        input_tokens,
        output_tokens,
        token_spend_delta: None,
        cost_usd: None,
        cost_note: None,
        latency_ms,
        success: failed.then_some(false),
        error: failed.then(|| error_text(it.span).unwrap_or_else(|| "the span's status is ERROR".into())),
        otel: full(it, true),
    };
    if input_tokens.is_some() || output_tokens.is_some() {
        let (i, o) = (input_tokens.unwrap_or(0), output_tokens.unwrap_or(0));
        call.token_spend_delta = Some(i.saturating_add(o));
        // The dated model the provider answered with is priced first, then the one asked for.
        let cost = response_model.and_then(|m| price(m, i, o)).or_else(|| request_model.and_then(|m| price(m, i, o)));
        match (cost, model) {
            (Some(usd), _) => call.cost_usd = Some((usd * 1e9).round() / 1e9),
            (None, Some(m)) => call.cost_note = Some(format!("no price for model {m:?}")),
            (None, None) => call.cost_note = Some("no model reported".into()),
        }
    }
    call
}

fn other<'a>(it: &'a Item<'a>, duration_ms: f64) -> OtherSpan<'a> {
    let span = it.span;
    OtherSpan {
        name: &span.name,
        kind: kind_name(span.kind),
        status: status_name(status_code(span)),
        duration_ms,
        attributes: Attributes(&span.attributes),
        otel: full(it, false),
    }
}

fn status_code(span: &Span) -> i32 {
    span.status.as_ref().map_or(0, |s| s.code)
}

/// Why the span failed: its status message, else its `exception` event's type and message.
fn error_text(span: &Span) -> Option<String> {
    if let Some(m) = span.status.as_ref().map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
        return Some(m.to_owned());
    }
    let ex = span.events.iter().find(|e| e.name == "exception")?;
    let a = Attrs(&ex.attributes);
    match (a.str(&["exception.type"]), a.str(&["exception.message"])) {
        (Some(t), Some(m)) => Some(format!("{t}: {m}")),
        (t, m) => t.or(m).map(str::to_owned),
    }
}

fn identity<'a>(it: &'a Item<'a>) -> Identity<'a> {
    Identity { trace_id: &it.trace, span_id: &it.id, parent_span_id: it.parent.as_deref(), name: &it.span.name }
}

/// The span's identity and everything else it carried (`attributes` only when asked: an
/// `otel.span` event has them at the top of its payload).
fn full<'a>(it: &'a Item<'a>, attributes: bool) -> Full<'a> {
    let span = it.span;
    Full {
        trace_id: &it.trace,
        span_id: &it.id,
        parent_span_id: it.parent.as_deref(),
        name: &span.name,
        kind: kind_name(span.kind),
        status: status_name(status_code(span)),
        status_message: span.status.as_ref().map(|s| s.message.as_str()).filter(|m| !m.is_empty()),
        scope: Some(it.scope).filter(|s| !s.is_empty()),
        attributes: attributes.then_some(Attributes(&span.attributes)),
        events: span
            .events
            .iter()
            .map(|e| SpanEvent {
                name: &e.name,
                time: rfc3339(e.time_unix_nano),
                attributes: Attributes(&e.attributes),
            })
            .collect(),
        links: span.links.iter().map(|l| Link { trace_id: hex(&l.trace_id), span_id: hex(&l.span_id) }).collect(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub(super) fn envelope(
    session: &str,
    agent: &str,
    seq: i64,
    at_ns: u64,
    kind: &str,
    payload: &dyn erased::Payload,
) -> Result<Event, EventError> {
    child_envelope(session, None, agent, seq, at_ns, kind, payload)
}

/// [`envelope`] for a session that may be a child of another.
pub(super) fn child_envelope(
    session: &str,
    parent: Option<&str>,
    agent: &str,
    seq: i64,
    at_ns: u64,
    kind: &str,
    payload: &dyn erased::Payload,
) -> Result<Event, EventError> {
    let payload = payload.json().map_err(|e| EventError::NotJson(e.to_string()))?;
    Event::derived(session, parent, agent, seq, at_ns, kind, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Status};
    use serde_json::Value as Json;

    const T0: u64 = 1_764_756_000_000_000_000;
    const TRACE: [u8; 16] =
        [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c];

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn kvs(pairs: &[(&str, Value)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).into(),
                value: Some(AnyValue { value: Some(v.clone()) }),
                ..Default::default()
            })
            .collect()
    }

    fn span(id: u8, parent: Option<u8>, name: &str, secs: (u64, u64), attrs: &[(&str, Value)]) -> Span {
        Span {
            trace_id: TRACE.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: parent.map(|p| vec![0, 0, 0, 0, 0, 0, 0, p]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: T0 + secs.0 * 1_000_000_000,
            end_time_unix_nano: T0 + secs.1 * 1_000_000_000,
            attributes: kvs(attrs),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: kvs(&[("service.name", s("svc"))]), ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn price(model: &str, i: i64, o: i64) -> Option<f64> {
        (model == "gpt-4o-mini").then(|| (i as f64 * 0.15 + o as f64 * 0.6) / 1e6)
    }

    fn map(spans: Vec<Span>) -> Mapped {
        map_request(Batch::from_request(request(spans)), &price)
    }

    fn payload(ev: &Event) -> Json {
        serde_json::from_str(ev.payload_json()).unwrap()
    }

    fn kinds(m: &Mapped) -> Vec<&str> {
        m.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn llm_spans_of_the_three_dialects_are_external_calls_with_tokens_and_cost() {
        let dialects: [&[(&str, Value)]; 3] = [
            &[
                ("gen_ai.operation.name", s("chat")),
                ("gen_ai.provider.name", s("openai")),
                ("gen_ai.request.model", s("gpt-4o-mini")),
                ("gen_ai.usage.input_tokens", Value::IntValue(1000)),
                ("gen_ai.usage.output_tokens", Value::IntValue(500)),
            ],
            &[
                ("openinference.span.kind", s("LLM")),
                ("llm.provider", s("openai")),
                ("llm.model_name", s("gpt-4o-mini")),
                ("llm.token_count.prompt", Value::IntValue(1000)),
                ("llm.token_count.completion", Value::IntValue(500)),
            ],
            &[
                ("llm.request.type", s("chat")),
                ("gen_ai.system", s("openai")),
                ("gen_ai.request.model", s("gpt-4o-mini")),
                ("gen_ai.usage.prompt_tokens", Value::IntValue(1000)),
                ("gen_ai.usage.completion_tokens", Value::IntValue(500)),
            ],
        ];
        for attrs in dialects {
            let m = map(vec![span(2, Some(1), "llm", (1, 3), attrs)]);
            assert_eq!(kinds(&m), ["session.started", "operation.external_call"], "{attrs:?}");
            let p = payload(&m.events[1]);
            assert_eq!(p["service"], "openai", "{attrs:?}");
            assert_eq!(p["method"], "chat", "{attrs:?}");
            assert_eq!(p["model"], "gpt-4o-mini");
            assert_eq!((p["input_tokens"].as_i64(), p["output_tokens"].as_i64()), (Some(1000), Some(500)));
            assert_eq!(p["token_spend_delta"], 1500);
            assert_eq!(p["cost_usd"].as_f64(), Some(0.00045));
            assert_eq!(p["latency_ms"].as_f64(), Some(2000.0));
            assert_eq!(p["otel"]["span_id"], "0000000000000002");
            assert_eq!(p["otel"]["parent_span_id"], "0000000000000001");
            assert_eq!(m.events[1].sequence, ((T0 + 3_000_000_000) / 1000) as i64, "at the span's end");
        }
    }

    #[test]
    fn an_unknown_model_costs_nothing_and_says_so() {
        let m = map(vec![span(
            2,
            Some(1),
            "chat",
            (1, 2),
            &[("gen_ai.request.model", s("mystery-1")), ("gen_ai.usage.input_tokens", Value::IntValue(10))],
        )]);
        let p = payload(&m.events[1]);
        assert_eq!(p.get("cost_usd"), None);
        assert_eq!(p["cost_note"], "no price for model \"mystery-1\"");
    }

    #[test]
    fn tool_spans_of_the_three_dialects_are_a_start_and_an_end() {
        let dialects: [&[(&str, Value)]; 3] = [
            &[
                ("gen_ai.operation.name", s("execute_tool")),
                ("gen_ai.tool.name", s("web_search")),
                ("gen_ai.tool.call.id", s("call_1")),
                ("gen_ai.tool.call.arguments", s(r#"{"q":"rust"}"#)),
                ("gen_ai.tool.call.result", s("3 hits")),
            ],
            &[
                ("openinference.span.kind", s("TOOL")),
                ("tool.name", s("web_search")),
                ("input.value", s(r#"{"q":"rust"}"#)),
                ("output.value", s("3 hits")),
            ],
            &[
                ("traceloop.span.kind", s("tool")),
                ("traceloop.entity.input", s(r#"{"q":"rust"}"#)),
                ("traceloop.entity.output", s("3 hits")),
            ],
        ];
        for attrs in dialects {
            let m = map(vec![span(3, Some(1), "web_search", (4, 6), attrs)]);
            assert_eq!(kinds(&m), ["session.started", "operation.tool_start", "operation.tool_end"], "{attrs:?}");
            let (start, end) = (payload(&m.events[1]), payload(&m.events[2]));
            assert_eq!((&start["tool"], &end["tool"]), (&json!("web_search"), &json!("web_search")));
            assert_eq!(start["input"], json!({"q": "rust"}), "parsed when JSON");
            assert_eq!(end["success"], true);
            assert_eq!(end["output_summary"], "3 hits");
            assert_eq!(end["latency_ms"].as_f64(), Some(2000.0));
            assert!(m.events[1].sequence < m.events[2].sequence);
        }
    }

    #[test]
    fn a_failed_tool_says_why_from_its_status_or_its_exception() {
        let mut by_status = span(3, Some(1), "t", (1, 2), &[("gen_ai.tool.name", s("t"))]);
        by_status.status = Some(Status { code: 2, message: "timed out".into() });
        let mut by_exception = span(4, Some(1), "t", (3, 4), &[("gen_ai.tool.name", s("t"))]);
        by_exception.status = Some(Status { code: 2, message: String::new() });
        by_exception.events = vec![span::Event {
            name: "exception".into(),
            time_unix_nano: T0,
            attributes: kvs(&[("exception.type", s("ValueError")), ("exception.message", s("bad input"))]),
            ..Default::default()
        }];
        let m = map(vec![by_status, by_exception]);
        let ends: Vec<Json> = m.events.iter().filter(|e| e.kind == "operation.tool_end").map(payload).collect();
        assert_eq!((&ends[0]["success"], &ends[0]["error"]), (&json!(false), &json!("timed out")));
        assert_eq!(ends[1]["error"], "ValueError: bad input");
        assert_eq!(ends[1]["otel"]["events"][0]["name"], "exception");
    }

    #[test]
    fn agents_name_the_session_and_nested_agents_are_spawns() {
        let m = map(vec![
            span(
                1,
                None,
                "invoke_agent boss",
                (0, 10),
                &[("gen_ai.operation.name", s("invoke_agent")), ("gen_ai.agent.name", s("boss"))],
            ),
            span(
                2,
                Some(1),
                "invoke_agent helper",
                (1, 5),
                &[("openinference.span.kind", s("AGENT")), ("agent.name", s("helper"))],
            ),
            span(3, Some(2), "chat", (2, 3), &[("gen_ai.request.model", s("gpt-4o-mini"))]),
            span(4, Some(1), "chat", (6, 7), &[("gen_ai.request.model", s("gpt-4o-mini"))]),
        ]);
        assert_eq!(
            kinds(&m),
            [
                "session.started",
                "otel.span",
                "session.ended",
                "operation.agent_spawn",
                "operation.external_call",
                "operation.external_call"
            ]
        );
        let agents: Vec<&str> = m.events.iter().map(|e| e.agent_id.as_str()).collect();
        assert_eq!(agents, ["boss", "boss", "boss", "boss", "helper", "boss"]);
        assert_eq!(payload(&m.events[3])["child_agent_id"], "helper");
        assert!(m.events.iter().all(|e| e.session_id == "otel-5b8efff798038103d269b633813fc60c"));
        assert_eq!(payload(&m.events[2])["outcome"], "completed");
    }

    #[test]
    fn without_an_agent_span_the_service_names_the_session() {
        let m = map(vec![span(5, Some(9), "work", (0, 1), &[])]);
        assert_eq!(m.events[0].agent_id, "svc");
        let p = payload(&m.events[1]);
        assert_eq!(
            (m.events[1].kind.as_str(), &p["name"], &p["status"]),
            ("otel.span", &json!("work"), &json!("unset"))
        );
        assert_eq!(m.events.len(), 2, "no end without the root");
    }

    #[test]
    fn a_failed_root_fails_the_session_and_conversation_ids_are_kept() {
        let mut root = span(1, None, "run", (0, 1), &[("langfuse.session.id", s("conv-7"))]);
        root.status = Some(Status { code: 2, message: "boom".into() });
        let m = map(vec![root]);
        let started = payload(&m.events[0]);
        assert_eq!(started["metadata"]["conversation_id"], "conv-7");
        assert_eq!(started["goal"], "run");
        let ended = payload(m.events.last().unwrap());
        assert_eq!((&ended["outcome"], &ended["error_message"]), (&json!("failed"), &json!("boom")));
    }

    #[test]
    fn unusable_spans_are_rejected_with_a_reason_and_the_rest_kept() {
        let good = span(1, Some(9), "ok", (0, 1), &[]);
        let mut short_trace = span(2, None, "a", (0, 1), &[]);
        short_trace.trace_id = vec![1; 8];
        let mut zero_span = span(3, None, "b", (0, 1), &[]);
        zero_span.span_id = vec![0; 8];
        let mut backwards = span(4, None, "c", (2, 1), &[]);
        backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
        let mut no_start = span(5, None, "d", (0, 1), &[]);
        no_start.start_time_unix_nano = 0;
        let huge = span(6, None, "e", (0, 1), &[("big", s(&"x".repeat(70_000)))]);
        let m = map(vec![good, short_trace, zero_span, backwards, no_start, huge]);
        let reasons: Vec<&str> = m.rejected.reasons().collect();
        assert_eq!(m.rejected.indexes().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        for (reason, want) in reasons.iter().zip(["trace_id", "span_id", "before", "start_time", "64 KiB"]) {
            assert!(reason.contains(want), "{reason}");
        }
        assert_eq!(kinds(&m), ["session.started", "otel.span"]);
    }

    #[test]
    fn derived_events_are_what_parsing_their_text_gives() {
        let mut failed = span(
            3,
            Some(1),
            "t\u{1}\"q",
            (1, 2),
            &[("gen_ai.tool.name", s("t")), ("gen_ai.tool.call.arguments", s("{ \"a\" :\n [1, 2] }"))],
        );
        failed.status = Some(Status { code: 2, message: "é \"x\"".into() });
        let m = map(vec![
            span(
                1,
                None,
                "invoke_agent a\u{7}",
                (0, 9),
                &[("gen_ai.operation.name", s("invoke_agent")), ("gen_ai.agent.name", s("ag\"ent"))],
            ),
            failed,
            span(
                4,
                Some(1),
                "chat",
                (3, 4),
                &[("gen_ai.request.model", s("gpt-4o-mini")), ("x", Value::DoubleValue(f64::NAN))],
            ),
        ]);
        assert_eq!(m.events.len(), 6);
        for ev in &m.events {
            let parsed = Event::parse(ev.raw()).unwrap_or_else(|e| panic!("{e}: {}", ev.raw()));
            let fields = |e: &Event| {
                (
                    e.raw().to_owned(),
                    e.session_id.clone(),
                    e.agent_id.clone(),
                    e.sequence,
                    e.ts_us,
                    e.timestamp.clone(),
                    e.kind.clone(),
                )
            };
            assert_eq!(fields(&parsed), fields(ev));
            assert_eq!(parsed.payload_json(), ev.payload_json());
            assert_eq!(parsed.with_sequence(7).unwrap().raw(), ev.with_sequence(7).unwrap().raw());
        }
        let start = m.events.iter().find(|e| e.kind == "operation.tool_start").unwrap();
        assert!(start.raw().contains(r#""input":{"a":[1,2]}"#), "embedded JSON is made one line: {}", start.raw());
    }

    #[test]
    fn the_same_span_gives_the_same_events_whatever_else_the_request_holds() {
        let tool = span(3, Some(1), "t", (1, 2), &[("gen_ai.tool.name", s("t"))]);
        let alone = map(vec![tool.clone()]);
        let with_other = map(vec![span(7, Some(1), "x", (0, 9), &[]), tool]);
        let pick = |m: &Mapped| -> Vec<(i64, String)> {
            m.events
                .iter()
                .filter(|e| e.span_ref().is_some_and(|r| r.span_id.ends_with('3')))
                .map(|e| (e.sequence, e.raw().to_owned()))
                .collect()
        };
        assert_eq!(pick(&alone), pick(&with_other));
        assert_eq!(pick(&alone).len(), 2);
    }
}
