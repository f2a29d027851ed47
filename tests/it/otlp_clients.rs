//! OTLP ingest driven by real OpenTelemetry clients: the Python SDK's own span exporters
//! (HTTP/protobuf and gRPC, gzip or not, configured by options or only by `OTEL_EXPORTER_OTLP_*`)
//! and log exporters (HTTP/protobuf, HTTP/JSON, gRPC), and two instrumentation libraries for the `openai` client (OpenInference and OpenLLMetry)
//! calling a fake OpenAI server. The clients are the scripts of `tests/otel/`, run in a virtual
//! environment with pinned packages (see [`crate::support::pyenv`]); what they sent is then read
//! back through aop's own API, as a user would see it.

use crate::support::pyenv::{run_script, FakeOpenAi, Ran};
use crate::support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const TOKEN: &str = "otlp-test-token";

/// The AOP events `sdk_export.py` yields with no options, by type (see its docstring).
const AGENT_RUN: &[(&str, usize)] = &[
    ("session.started", 1),
    // chat gpt-4o twice, and chat gpt-4o-mini inside the summarizer
    ("operation.external_call", 3),
    // execute_tool web_search, execute_tool fetch_page
    ("operation.tool_start", 2),
    ("operation.tool_end", 2),
    // invoke_agent summarizer, nested in the root agent span
    ("operation.agent_spawn", 1),
    // parse_results, and the root agent span itself (it is no nested agent; the session is its run)
    ("otel.span", 2),
    ("session.ended", 1),
];

/// `(model, input_tokens, output_tokens)` of `sdk_export.py`'s three LLM calls, sorted.
const AGENT_RUN_CALLS: [(&str, i64, i64); 3] = [("gpt-4o", 100, 20), ("gpt-4o", 150, 30), ("gpt-4o-mini", 80, 16)];

fn session_id(trace_id: &str) -> String {
    format!("otel-{trace_id}")
}

/// How many events of each type.
fn census(events: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for ev in events {
        *counts.entry(ev["type"].as_str().expect("type").to_owned()).or_insert(0) += 1;
    }
    counts
}

/// [`AGENT_RUN`] with `loops` more tool calls.
fn agent_run_census(loops: usize) -> BTreeMap<String, usize> {
    let mut want: BTreeMap<String, usize> = AGENT_RUN.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    *want.get_mut("operation.tool_start").unwrap() += loops;
    *want.get_mut("operation.tool_end").unwrap() += loops;
    want
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn instant(ev: &Value) -> OffsetDateTime {
    let text = ev["timestamp"].as_str().expect("timestamp");
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("timestamp {text:?}: {e}"))
}

/// The alerts of one session.
async fn alerts_of(server: &TestServer, session: &str) -> Vec<Value> {
    server.get_ok(&format!("/alerts?session_id={session}&limit=1000")).await["alerts"].as_array().unwrap().clone()
}

/// `--endpoint` (and `--token` when the collector has one) for a script.
fn reach(server: &TestServer, token: Option<&str>) -> Vec<String> {
    let mut args = vec!["--endpoint".to_owned(), server.base()];
    if let Some(t) = token {
        args.extend(["--token".to_owned(), t.to_owned()]);
    }
    args
}

async fn sdk_export(server: &TestServer, token: Option<&str>, options: &[&str]) -> Ran {
    let mut args = reach(server, token);
    args.extend(options.iter().map(|o| o.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_script("sdk_export.py", &args, &[]).await
}

/// Checks everything aop holds for one run of `sdk_export.py` exported in one batch: the session
/// row, each derived event against the span it came from, the conversation id search, and the
/// alerts (none, or exactly one loop with `--loop`).
async fn check_agent_run(server: &TestServer, ran: &Ran, loops: usize, failed: bool) {
    let out = &ran.output;
    assert!(ran.exported(), "the exporter reported a failure\n{out}");
    let trace = ran.trace_id();
    let id = session_id(&trace);
    let events = server.events(&id).await;
    let session = server.session(&id).await;

    // The session row.
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["agent_id"], "research-agent", "gen_ai.agent.name of the root agent span\n{session:#}");
    assert_eq!(session["status"], if failed { "failed" } else { "completed" }, "{session:#}");
    assert_eq!(session["goal"], "invoke_agent research-agent", "the root span's name\n{session:#}");
    let tokens: i64 = AGENT_RUN_CALLS.iter().map(|(_, i, o)| i + o).sum();
    assert_eq!(session["total_tokens"], tokens, "{session:#}");
    assert_eq!(session["event_count"], events.len(), "{session:#}");
    assert_eq!(census(&events), agent_run_census(loops), "event types\n{events:#?}");

    // Every event belongs to the session and names the span it came from.
    let spans: BTreeMap<&str, &Value> = ran.summary["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| (s["span_id"].as_str().expect("span_id"), s))
        .collect();
    for ev in &events {
        assert_eq!(ev["session_id"], id.as_str(), "{ev}");
        let otel = &ev["payload"]["otel"];
        assert_eq!(otel["trace_id"], trace.as_str(), "payload.otel.trace_id of {ev}");
        if ev["type"] != "session.started" {
            let span = otel["span_id"].as_str().unwrap_or_else(|| panic!("payload.otel.span_id of {ev}"));
            let sent = spans.get(span).unwrap_or_else(|| panic!("span {span} was never sent: {ev}"));
            assert_eq!(otel["name"], sent["name"], "{ev}");
            assert_eq!(otel["parent_span_id"], sent["parent_span_id"], "{ev}");
        }
    }

    // One sequence per event, in the order of time, from session.started to session.ended.
    let mut ordered = events.clone();
    ordered.sort_by_key(|e| e["sequence"].as_i64().expect("sequence"));
    let sequences: BTreeSet<i64> = ordered.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences.len(), events.len(), "sequences collide\n{events:#?}");
    assert!(
        ordered.windows(2).all(|w| instant(&w[0]) <= instant(&w[1])),
        "sequence does not follow time\n{ordered:#?}"
    );
    assert_eq!(ordered.first().unwrap()["type"], "session.started", "{ordered:#?}");
    assert_eq!(ordered.first().unwrap()["sequence"], 0, "{ordered:#?}");
    assert_eq!(ordered.last().unwrap()["type"], "session.ended", "{ordered:#?}");

    // session.started: the trace's origin, and the conversation it belongs to.
    let started = &of_type(&events, "session.started")[0]["payload"];
    assert_eq!(started["goal"], "invoke_agent research-agent", "{started}");
    assert_eq!(started["metadata"]["source"], "otlp", "{started}");
    assert_eq!(started["metadata"]["service_name"], "otel-test-app", "{started}");
    let conversation = ran.summary["conversation_id"].as_str().expect("conversation_id");
    assert_eq!(started["metadata"]["conversation_id"], conversation, "{started}");
    assert_eq!(
        server.session_ids(&format!("q={conversation}")).await,
        vec![id.clone()],
        "found by its conversation id"
    );

    // session.ended: the root span's status.
    let ended = &of_type(&events, "session.ended")[0];
    assert_eq!(ended["payload"]["outcome"], if failed { "failed" } else { "completed" }, "{ended}");
    assert_eq!(ended["agent_id"], "research-agent", "{ended}");

    // LLM calls: provider, operation, model and tokens; the summarizer's call is the summarizer's.
    let mut calls: Vec<(String, i64, i64)> = Vec::new();
    for call in of_type(&events, "operation.external_call") {
        let p = &call["payload"];
        assert_eq!((&p["service"], &p["method"]), (&json!("openai"), &json!("chat")), "{call}");
        let (input, output) =
            (p["input_tokens"].as_i64().expect("input_tokens"), p["output_tokens"].as_i64().expect("output_tokens"));
        assert_eq!(p["token_spend_delta"], input + output, "{call}");
        assert!(p["latency_ms"].is_number(), "{call}");
        assert_eq!(p["otel"]["kind"], "client", "{call}");
        let model = p["model"].as_str().expect("model").to_owned();
        let agent = if model == "gpt-4o-mini" { "summarizer" } else { "research-agent" };
        assert_eq!(call["agent_id"], agent, "the nearest enclosing agent span names the agent: {call}");
        calls.push((model, input, output));
    }
    calls.sort();
    let want: Vec<(String, i64, i64)> = AGENT_RUN_CALLS.iter().map(|(m, i, o)| (m.to_string(), *i, *o)).collect();
    assert_eq!(calls, want, "LLM calls");

    // The nested agent.
    let spawn = &of_type(&events, "operation.agent_spawn")[0];
    assert_eq!(spawn["payload"]["child_agent_id"], "summarizer", "{spawn}");
    assert_eq!(spawn["agent_id"], "research-agent", "{spawn}");

    // Tool calls: each end paired with its start (same span, tool and call id), start first.
    let starts = of_type(&events, "operation.tool_start");
    for end in of_type(&events, "operation.tool_end") {
        let span = &end["payload"]["otel"]["span_id"];
        let paired: Vec<&&Value> = starts.iter().filter(|s| &s["payload"]["otel"]["span_id"] == span).collect();
        assert_eq!(paired.len(), 1, "one start for {end}");
        let start = paired[0];
        assert_eq!(start["payload"]["tool"], end["payload"]["tool"], "{start}\n{end}");
        assert_eq!(start["payload"]["tool_call_id"], end["payload"]["tool_call_id"], "{start}\n{end}");
        assert!(start["sequence"].as_i64() < end["sequence"].as_i64(), "{start}\n{end}");
        assert!(end["payload"]["latency_ms"].is_number(), "{end}");
        assert_eq!(end["agent_id"], "research-agent", "{end}");
    }
    let tool_end = |tool: &str| -> Value {
        let ends = of_type(&events, "operation.tool_end");
        let found = ends.iter().find(|e| e["payload"]["tool"] == tool);
        (*found.unwrap_or_else(|| panic!("no tool_end of {tool}: {ends:#?}"))).clone()
    };
    let search_start = starts.iter().find(|s| s["payload"]["tool"] == "web_search").expect("web_search started");
    assert_eq!(search_start["payload"]["input"], json!({"query": "otlp span kinds"}), "arguments parsed as JSON");
    assert_eq!(search_start["payload"]["tool_call_id"], "call_search_1");
    let search = tool_end("web_search");
    assert_eq!(search["payload"]["success"], true, "{search}");
    assert_eq!(search["payload"]["output_summary"], "3 results", "{search}");
    let fetch = tool_end("fetch_page");
    assert_eq!(fetch["payload"]["success"], false, "ERROR status: {fetch}");
    let error = fetch["payload"]["error"].as_str().unwrap_or_else(|| panic!("an error message: {fetch}"));
    assert!(error.contains("fetch_page timed out after 30 s"), "{fetch}");
    assert_eq!(fetch["payload"]["otel"]["status"], "error", "{fetch}");
    let exception =
        fetch["payload"]["otel"]["events"].as_array().and_then(|evs| evs.iter().find(|e| e["name"] == "exception"));
    let exception = exception.unwrap_or_else(|| panic!("the span's exception event is kept: {fetch}"));
    assert_eq!(exception["attributes"]["exception.type"], "TimeoutError", "{exception}");

    // The plain span, kept as it was.
    let plain = of_type(&events, "otel.span").into_iter().find(|e| e["payload"]["name"] == "parse_results");
    let plain = &plain.unwrap_or_else(|| panic!("no otel.span for parse_results: {events:#?}"))["payload"];
    assert_eq!(plain["name"], "parse_results", "{plain}");
    assert_eq!(plain["kind"], "internal", "{plain}");
    assert_eq!(plain["attributes"], json!({"results.count": 3}), "{plain}");
    assert!(plain["duration_ms"].is_number(), "{plain}");

    // Detectors: a clean run raises nothing; a loop of identical tool calls raises one alert.
    let alerts = alerts_of(server, &id).await;
    let loop_alerts = alerts.iter().filter(|a| a["type"] == "loop").count();
    if loops >= 4 {
        assert_eq!(loop_alerts, 1, "one loop alert for {loops} identical calls\n{alerts:#?}");
        assert_eq!(alerts.len(), 1, "nothing else\n{alerts:#?}");
    } else {
        assert_eq!(alerts, Vec::<Value>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_an_agent_run_over_http_protobuf() {
    let server = TestServer::start().await;
    let ran = sdk_export(&server, None, &["--protocol", "http/protobuf"]).await;
    check_agent_run(&server, &ran, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_an_agent_run_over_http_protobuf_gzipped_with_a_token() {
    let server = Launch::new().token(TOKEN).start().await;
    let ran = sdk_export(&server, Some(TOKEN), &["--protocol", "http/protobuf", "--compression", "gzip"]).await;
    check_agent_run(&server, &ran, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_an_agent_run_over_grpc() {
    let server = TestServer::start().await;
    let ran = sdk_export(&server, None, &["--protocol", "grpc"]).await;
    check_agent_run(&server, &ran, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_an_agent_run_over_grpc_gzipped_with_a_token() {
    let server = Launch::new().token(TOKEN).start().await;
    let ran = sdk_export(&server, Some(TOKEN), &["--protocol", "grpc", "--compression", "gzip"]).await;
    check_agent_run(&server, &ran, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_span_with_error_status_ends_the_session_failed() {
    let server = TestServer::start().await;
    for protocol in ["http/protobuf", "grpc"] {
        let ran = sdk_export(&server, None, &["--protocol", protocol, "--fail"]).await;
        check_agent_run(&server, &ran, 0, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_tool_spans_raise_one_loop_alert() {
    let server = TestServer::start().await;
    let ran = sdk_export(&server, None, &["--loop", "6"]).await;
    check_agent_run(&server, &ran, 6, false).await;
}

/// The OTLP exporters' own environment variables, as the README tells a user to set them, are all
/// the configuration a client needs, over either protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_configured_only_by_otel_environment_variables_reaches_aop() {
    let server = Launch::new().token(TOKEN).start().await;
    let base = server.base();
    // As written by hand, and percent-encoded as the variable's W3C format (and other SDKs) want it.
    let plain = format!("Authorization=Bearer {TOKEN}");
    let encoded = format!("Authorization=Bearer%20{TOKEN}");
    for (protocol, header) in [("http/protobuf", &plain), ("grpc", &plain), ("http/protobuf", &encoded)] {
        let envs = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_HEADERS", header.as_str()),
        ];
        let ran = run_script("sdk_export.py", &["--from-env"], &envs).await;
        check_agent_run(&server, &ran, 0, false).await;
    }
}

/// Exporters retry a batch they are not sure arrived: the same spans sent again, in another
/// grouping (all of them once more after one batch, or after one request per span), must leave
/// each span's events stored once. Per-span requests deliver children before their parents, so
/// only what does not depend on arrival order is compared with a single batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_again_are_stored_once() {
    let server = TestServer::start().await;
    for protocol in ["http/protobuf", "grpc"] {
        for processor in ["batch", "simple"] {
            let case = format!("{protocol}, {processor} span processor");
            let ran = sdk_export(&server, None, &["--protocol", protocol, "--processor", processor, "--resend"]).await;
            let out = &ran.output;
            assert!(ran.exported(), "{case}\n{out}");
            let spans = ran.summary["spans"].as_array().expect("spans").len();
            let exports = ran.summary["exports"].as_array().expect("exports").len();
            let want = if processor == "batch" { 2 } else { spans + 1 };
            assert_eq!(exports, want, "{case}: the exports, then one of every span\n{out}");
            let id = session_id(&ran.trace_id());
            let events = server.events(&id).await;
            if processor == "batch" {
                assert_eq!(census(&events), agent_run_census(0), "{case}\n{events:#?}");
            }

            // No span yields the same kind of event twice, and every span sent yields something.
            let mut per_span: BTreeMap<(String, String), usize> = BTreeMap::new();
            for ev in events.iter().filter(|e| e["type"] != "session.started") {
                let span = ev["payload"]["otel"]["span_id"].as_str().unwrap_or_else(|| panic!("{case}: {ev}"));
                *per_span.entry((span.to_owned(), ev["type"].as_str().unwrap().to_owned())).or_insert(0) += 1;
            }
            let twice: Vec<_> = per_span.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "{case}: stored twice: {twice:?}\n{events:#?}");
            let covered: BTreeSet<&str> = per_span.keys().map(|(span, _)| span.as_str()).collect();
            assert_eq!(covered.len(), spans, "{case}: every span is stored\n{events:#?}");
            let counts = census(&events);
            for (kind, n) in [("session.started", 1), ("session.ended", 1), ("operation.external_call", 3)] {
                assert_eq!(counts.get(kind), Some(&n), "{case}: {kind}\n{counts:?}");
            }
            for kind in ["operation.tool_start", "operation.tool_end"] {
                assert_eq!(counts.get(kind), Some(&2), "{case}: {kind}\n{counts:?}");
            }

            let session = server.session(&id).await;
            assert_eq!(session["event_count"], events.len(), "{case}\n{session:#}");
            assert_eq!(session["status"], "completed", "{case}\n{session:#}");
            let tokens: i64 = AGENT_RUN_CALLS.iter().map(|(_, i, o)| i + o).sum();
            assert_eq!(session["total_tokens"], tokens, "{case}: tokens counted once\n{session:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused_and_nothing_is_stored() {
    let server = Launch::new().token(TOKEN).start().await;
    let cases: [(&str, Option<&str>); 4] = [
        ("http/protobuf", Some("not-the-token")),
        ("http/protobuf", None),
        ("grpc", Some("not-the-token")),
        ("grpc", None),
    ];
    for (protocol, token) in cases {
        let ran = sdk_export(&server, token, &["--protocol", protocol, "--timeout", "5"]).await;
        let out = &ran.output;
        assert!(!ran.exported(), "{protocol} with token {token:?}: the exporter reported success\n{out}");
        assert_eq!(ran.summary["exports"], json!(["FAILURE"]), "{out}");
        assert_eq!(
            server.session_ids("").await,
            Vec::<String>::new(),
            "{protocol} with token {token:?} stored something"
        );
    }
    // The right token still works on the same collector.
    let ran = sdk_export(&server, Some(TOKEN), &[]).await;
    check_agent_run(&server, &ran, 0, false).await;
}

/// What an `openai` client instrumented by `instrumentation` sends, read back from aop: each call
/// an `operation.external_call` with the model asked for and the tokens the server answered.
async fn check_instrumented_openai(instrumentation: &str) {
    let fake = FakeOpenAi::start().await;
    let server = Launch::new().token(TOKEN).start().await;
    let base_url = fake.base_url();
    let endpoint = server.base();
    let common = [
        "--instrumentation",
        instrumentation,
        "--base-url",
        base_url.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--token",
        TOKEN,
    ];

    // Two calls with no span around them: two traces, each a single LLM span, its own root.
    let ran = run_script("instrumented_openai.py", &common, &[]).await;
    let out = format!("{}\n--- the fake server ---\n{}", ran.output, fake.log());
    assert!(ran.exported(), "{out}");
    let answered = ran.summary["calls"].as_array().expect("calls").clone();
    assert_eq!(answered.len(), 2, "{out}");
    let traces = ran.trace_ids();
    assert_eq!(traces.len(), 2, "a trace per call\n{out}");
    let mut seen = Vec::new();
    for trace in &traces {
        let id = session_id(trace);
        let session = server.session(&id).await;
        assert_eq!(session["status"], "completed", "{session:#}\n{out}");
        assert_eq!(session["agent_id"], "otel-openai-app", "no agent span: the service's name\n{session:#}");
        let events = server.events(&id).await;
        let calls = of_type(&events, "operation.external_call");
        assert_eq!(calls.len(), 1, "{events:#?}\n{out}");
        let p = &calls[0]["payload"];
        assert_eq!(p["model"], "gpt-4o-mini", "{p}\n{out}");
        assert_eq!(p["service"], "openai", "the provider ({instrumentation})\n{p}");
        if instrumentation == "openllmetry" {
            assert_eq!(p["method"], "chat", "gen_ai.operation.name\n{p}");
        }
        let (input, output) =
            (p["input_tokens"].as_i64().expect("input_tokens"), p["output_tokens"].as_i64().expect("output_tokens"));
        assert_eq!(p["token_spend_delta"], input + output, "{p}");
        assert_eq!(session["total_tokens"], input + output, "{session:#}");
        assert_eq!(census(&events).get("session.started"), Some(&1), "{events:#?}");
        assert_eq!(census(&events).get("session.ended"), Some(&1), "{events:#?}");
        seen.push(json!({"operation": "chat", "model": p["model"], "input_tokens": input, "output_tokens": output}));
    }
    let key = |v: &Value| v["input_tokens"].as_i64();
    let mut answered_sorted = answered.clone();
    answered_sorted.sort_by_key(key);
    seen.sort_by_key(key);
    assert_eq!(seen, answered_sorted, "the tokens the server answered\n{out}");

    // The same calls and an embeddings call inside one application span: one session adding up
    // every call's tokens.
    let mut wrapped: Vec<&str> = common.to_vec();
    wrapped.extend(["--parent", "answer_questions", "--embeddings"]);
    let ran = run_script("instrumented_openai.py", &wrapped, &[]).await;
    let out = format!("{}\n--- the fake server ---\n{}", ran.output, fake.log());
    assert!(ran.exported(), "{out}");
    let id = session_id(&ran.trace_id());
    let answered = ran.summary["calls"].as_array().expect("calls").clone();
    assert_eq!(answered.len(), 3, "{out}");
    let events = server.events(&id).await;
    let mut models: Vec<String> = of_type(&events, "operation.external_call")
        .iter()
        .map(|c| c["payload"]["model"].as_str().unwrap_or_else(|| panic!("no model: {c}\n{out}")).to_owned())
        .collect();
    models.sort();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o-mini", "text-embedding-3-small"], "{events:#?}\n{out}");
    let tokens: i64 =
        answered.iter().map(|c| c["input_tokens"].as_i64().unwrap() + c["output_tokens"].as_i64().unwrap()).sum();
    let session = server.session(&id).await;
    assert_eq!(session["total_tokens"], tokens, "{session:#}\n{out}");
    assert_eq!(session["status"], "completed", "{session:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_calls_instrumented_by_openinference_become_external_calls() {
    check_instrumented_openai("openinference").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_calls_instrumented_by_openllmetry_become_external_calls() {
    check_instrumented_openai("openllmetry").await;
}

/// The SDK's own log exporters (HTTP/protobuf, HTTP/JSON, gRPC, gzip or not) behind its batch
/// processor: the conversation's records in its session, the GenAI event in its span's trace's
/// session with its structured body kept as JSON, and a re-export stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_log_records_over_every_protocol_and_a_re_export_is_stored_once() {
    let server = TestServer::start().await;
    for (protocol, compression) in
        [("http/protobuf", "none"), ("http/json", "gzip"), ("grpc", "gzip"), ("grpc", "none")]
    {
        let mut args = reach(&server, None);
        args.extend(["--protocol", protocol, "--compression", compression, "--resend"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = run_script("logs_export.py", &args, &[]).await;
        assert!(ran.exported(), "{protocol}: the exporter reported a failure\n{}", ran.output);
        let conversation = ran.summary["conversation"].as_str().unwrap().to_owned();
        let trace = ran.summary["trace_id"].as_str().unwrap().to_owned();

        let events = server.events(&conversation).await;
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["session.started", "otel.log", "otel.log", "operation.external_call", "operation.external_call"],
            "{protocol}: stored once despite the re-export"
        );
        let (call, failure) = (&events[3]["payload"], &events[4]["payload"]);
        assert_eq!((&call["model"], &call["token_spend_delta"]), (&json!("gpt-4o"), &json!(128)), "{protocol}: {call}");
        assert!(call["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "priced from the table: {call}");
        assert_eq!(call["output_messages"][0]["parts"][0]["content"], "It ships tomorrow.", "{protocol}: {call}");
        assert_eq!(
            (&failure["success"], &failure["error"]),
            (&json!(false), &json!("TimeoutError: the order service did not answer")),
            "{protocol}"
        );
        let (prompt, tool) = (&events[1]["payload"], &events[2]["payload"]);
        assert_eq!(
            (&prompt["name"], &prompt["body"]),
            (&json!("user_prompt"), &json!("Where is my order?")),
            "{protocol}"
        );
        assert_eq!(prompt["attributes"]["event.sequence"], 1, "{protocol}");
        assert_eq!(tool["attributes"]["tool_name"], "lookup_order", "{protocol}");
        assert_eq!(server.session(&conversation).await["agent_id"], "support-bot", "{protocol}");

        let traced = server.events(&format!("otel-{trace}")).await;
        assert_eq!(traced.len(), 1, "{protocol}: {traced:?}");
        let details = &traced[0]["payload"];
        assert_eq!(details["name"], "gen_ai.client.inference.operation.details", "{protocol}");
        assert_eq!(details["otel"]["span_id"], ran.summary["span_id"], "{protocol}");
        assert_eq!(
            details["body"]["gen_ai.input.messages"][0]["parts"][0]["content"], "Where is my order?",
            "{protocol}"
        );
        assert_eq!(details["attributes"]["gen_ai.response.finish_reasons"], json!(["stop"]), "{protocol}");

        let mut ids = server.session_ids(&format!("conversation={conversation}")).await;
        ids.sort();
        let mut want = vec![conversation.clone(), format!("otel-{trace}")];
        want.sort();
        assert_eq!(ids, want, "{protocol}: the conversation's sessions");
    }
}
