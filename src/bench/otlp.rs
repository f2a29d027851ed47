//! The OTLP workload: protobuf export requests of 512 spans (what the SDK's batch span processor
//! sends) through `POST /v1/traces`, on [`BATCH_CONCURRENCY`] connections. Each request holds
//! eight whole traces of an agent's shape (the root agent span, LLM calls, tool calls, other
//! spans), so every span is derived in full; the derived events go to the run's ledger and are
//! verified like every other workload's.

use super::ingest::{connect_all, post_to, take_budget, IngestFigures, Posted, BATCH_CONCURRENCY};
use super::stats::{micros, Summary};
use super::Ctx;
use crate::client::Target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const SPANS_PER_REQUEST: usize = 512;
const SPANS_PER_TRACE: usize = 64;
const TRACES_PER_REQUEST: usize = SPANS_PER_REQUEST / SPANS_PER_TRACE;

/// What one trace's spans derive: `session.started`; the root agent's `otel.span` and
/// `session.ended`; one event per LLM or other span; two per tool span.
fn derived_events() -> u64 {
    let (llm, tools, other) = shape();
    (1 + 2 + llm + 2 * tools + other) as u64
}

/// LLM, tool and other spans under the root.
fn shape() -> (usize, usize, usize) {
    (25, 25, SPANS_PER_TRACE - 1 - 50)
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

/// One request: eight traces, ids from `(task, request number)` so none repeats in a run.
fn request(run: u64, task: u64, no: u64, now_ns: u64) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(SPANS_PER_REQUEST);
    let (llm, tools, _) = shape();
    for t in 0..TRACES_PER_REQUEST as u64 {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&run.to_be_bytes());
        trace_id[8..].copy_from_slice(&((task << 48) | (no << 8) | t).to_be_bytes());
        let root_id = 1u64;
        let at = |i: u64| now_ns + i * 2_000_000;
        let span = |i: u64, name: String, attributes: Vec<KeyValue>| Span {
            trace_id: trace_id.to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 { Vec::new() } else { root_id.to_be_bytes().to_vec() },
            name,
            kind: if i == 0 { 1 } else { 3 },
            start_time_unix_nano: at(i),
            end_time_unix_nano: if i == 0 { at(SPANS_PER_TRACE as u64 + 1) } else { at(i) + 1_500_000 },
            attributes,
            ..Default::default()
        };
        spans.push(span(
            0,
            "invoke_agent planner".into(),
            vec![kv("gen_ai.operation.name", s("invoke_agent")), kv("gen_ai.agent.name", s("planner"))],
        ));
        for i in 1..SPANS_PER_TRACE as u64 {
            let n = i as usize;
            let (name, attributes) = if n <= llm {
                (
                    "chat gpt-4o-mini".to_owned(),
                    vec![
                        kv("gen_ai.operation.name", s("chat")),
                        kv("gen_ai.provider.name", s("openai")),
                        kv("gen_ai.request.model", s("gpt-4o-mini")),
                        kv("gen_ai.response.model", s("gpt-4o-mini-2024-07-18")),
                        kv("gen_ai.usage.input_tokens", Value::IntValue(800 + i as i64 * 13)),
                        kv("gen_ai.usage.output_tokens", Value::IntValue(120 + i as i64)),
                        kv("gen_ai.response.finish_reasons", s("stop")),
                        kv("server.address", s("api.openai.com")),
                    ],
                )
            } else if n <= llm + tools {
                (
                    "execute_tool web_search".to_owned(),
                    vec![
                        kv("gen_ai.operation.name", s("execute_tool")),
                        kv("gen_ai.tool.name", s("web_search")),
                        kv("gen_ai.tool.call.id", s(format!("call_{no}_{t}_{i}"))),
                        kv("gen_ai.tool.call.arguments", s(format!(r#"{{"query":"step {i} of the plan","top_k":5}}"#))),
                        kv("gen_ai.tool.call.result", s("5 results: the first is a page about the subject")),
                    ],
                )
            } else {
                (
                    "retrieve documents".to_owned(),
                    vec![kv("db.system", s("sqlite")), kv("db.rows", Value::IntValue(12))],
                )
            };
            spans.push(span(i, name, attributes));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s("aop-bench"))], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn session_ids(req: &ExportTraceServiceRequest) -> impl Iterator<Item = String> + '_ {
    req.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .step_by(SPANS_PER_TRACE)
        .map(|sp| format!("otel-{}", sp.trace_id.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

struct TaskOut {
    samples: Vec<u32>,
    spans: u64,
    errors: u64,
    overloaded: u64,
    first_error: Option<String>,
    bytes: u64,
    ledger: Vec<(String, u64)>,
    end: Instant,
}

async fn task(
    target: Arc<Target>,
    conn: crate::client::Conn,
    run: u64,
    no: u64,
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> TaskOut {
    let mut conn = Some(conn);
    let mut out = TaskOut {
        samples: Vec::new(),
        spans: 0,
        errors: 0,
        overloaded: 0,
        first_error: None,
        bytes: 0,
        ledger: Vec::new(),
        end: Instant::now(),
    };
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut reply = Vec::new();
    let mut i = 0u64;
    let per_request = (SPANS_PER_REQUEST as u64 / SPANS_PER_TRACE as u64) * derived_events();
    while Instant::now() < deadline && take_budget(&budget, per_request as i64) {
        let req = request(run, no, i, now_ns + i * 1_000_000_000);
        i += 1;
        let body = req.encode_to_vec();
        out.bytes += body.len() as u64;
        let n = SPANS_PER_REQUEST as u64;
        match post_to(&target, &mut conn, "/v1/traces", "application/x-protobuf", &body, Some(&mut reply)).await {
            // A response with a partial success would hold bytes: the bench's spans are all usable.
            Posted::Ok(d) if reply.is_empty() => {
                out.samples.push(micros(d));
                out.spans += n;
                out.ledger.extend(session_ids(&req).map(|id| (id, derived_events())));
            }
            Posted::Ok(_) => {
                out.errors += n;
                out.first_error
                    .get_or_insert_with(|| format!("partial success: {:?}", String::from_utf8_lossy(&reply)));
            }
            Posted::Status(st) => {
                out.errors += n;
                if matches!(st, 429 | 503) {
                    out.overloaded += n;
                }
                out.first_error.get_or_insert_with(|| format!("HTTP {st}"));
            }
            Posted::Failed(e) => {
                out.errors += n;
                out.first_error.get_or_insert(e);
                if conn.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out.end = Instant::now();
    out
}

/// Runs the OTLP measurement; `events_per_s` counts derived events, `spans_per_s` spans.
pub(crate) async fn measure(ctx: &mut Ctx, duration: Duration) -> Result<(f64, IngestFigures), String> {
    let conns = connect_all(&ctx.target, BATCH_CONCURRENCY).await?;
    let budget = Arc::new(AtomicI64::new(i64::try_from(ctx.plan.max_events).unwrap_or(i64::MAX)));
    let run = ctx.seed ^ u64::from_str_radix(&ctx.run_id, 36).unwrap_or(0);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(task(Arc::clone(&ctx.target), c, run, i as u64, deadline, Arc::clone(&budget))))
        .collect();
    let (mut samples, mut spans, mut errors, mut overloaded, mut bytes) = (Vec::new(), 0, 0, 0, 0);
    let mut first_error = None;
    let mut end = start;
    for t in tasks {
        let out = t.await.map_err(|e| format!("an OTLP task failed: {e}"))?;
        samples.extend_from_slice(&out.samples);
        spans += out.spans;
        errors += out.errors;
        overloaded += out.overloaded;
        bytes += out.bytes;
        first_error = first_error.or(out.first_error);
        end = end.max(out.end);
        ctx.ledger.extend(out.ledger);
    }
    let secs = end.duration_since(start).as_secs_f64().max(1e-6);
    let events = spans / SPANS_PER_TRACE as u64 * derived_events();
    let figures = IngestFigures {
        events_per_s: events as f64 / secs,
        latency: Summary::of(&mut samples),
        errors,
        overloaded,
        first_error,
        raw_bytes: bytes,
        acked_total: events,
    };
    Ok((spans as f64 / secs, figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_512_spans_in_8_traces_that_derive_the_events_counted() {
        let req = request(7, 1, 2, 1_764_756_000_000_000_000);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), SPANS_PER_REQUEST);
        assert_eq!(session_ids(&req).collect::<std::collections::HashSet<_>>().len(), TRACES_PER_REQUEST);
        let mapped = crate::otlp::map_request(crate::otlp::Batch::from_request(req.clone()), &|_, _, _| None);
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        assert_eq!(mapped.events.len() as u64, TRACES_PER_REQUEST as u64 * derived_events());
    }
}
