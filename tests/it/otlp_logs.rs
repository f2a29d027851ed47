//! OTLP logs and metrics over HTTP and gRPC (`OTLP.md`, Logs): records become `otel.log` events
//! in their trace's session or their conversation's, a record exported again is stored once,
//! unusable records are counted in `partial_success`, metrics are answered as not kept, and bad
//! or amplifying bodies are refused as for traces. The SDK's own log exporters are in
//! `otlp_clients`.

use crate::support::*;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Write;

const T0: u64 = 1_764_756_000_000_000_000;

fn attr(key: &str, v: Any) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> Any {
    Any::StringValue(v.into())
}

fn record(ms: u64, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord { time_unix_nano: T0 + ms * 1_000_000, attributes, ..Default::default() }
}

fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: vec![attr("service.name", s("support-bot"))], ..Default::default() }),
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A short turn of an agent aop does not know, as records: a prompt, a model request, a tool
/// result, one linked to a trace, all of one conversation. (Claude Code's and Codex's own records
/// are read as the steps they report: see `coding_agents`, with the real CLIs.)
fn turn(conversation: &str, trace: Option<u8>) -> Vec<LogRecord> {
    let common = |name: &str, seq: i64| {
        vec![
            attr("session.id", s(conversation)),
            attr("event.name", s(name)),
            attr("event.sequence", Any::IntValue(seq)),
        ]
    };
    let mut prompt = record(1, common("user_prompt", 1));
    prompt.attributes.push(attr("prompt", s("List the files")));
    prompt.body = Some(AnyValue { value: Some(s("support_bot.user_prompt")) });
    let mut api = record(2, common("api_request", 2));
    api.attributes.extend([
        attr("model", s("claude-sonnet-4-5")),
        attr("input_tokens", s("12")),
        attr("cost_usd", s("0.0021")),
    ]);
    let mut tool = record(3, common("tool_result", 3));
    tool.attributes.extend([
        attr("tool_name", s("Bash")),
        attr("success", s("false")),
        attr("tool_parameters", Any::KvlistValue(KeyValueList { values: vec![attr("command", s("cat /nope"))] })),
    ]);
    if let Some(t) = trace {
        tool.trace_id = vec![t; 16];
        tool.span_id = vec![t; 8];
    }
    vec![prompt, api, tool]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    gzipped: bool,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut req = server.authed(Method::POST, path).header("content-type", content_type);
    if gzipped {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.expect("request");
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

async fn post_logs(server: &TestServer, req: &ExportLogsServiceRequest) -> ExportLogsServiceResponse {
    let (status, body) = post(server, "/v1/logs", "application/x-protobuf", false, req.encode_to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    ExportLogsServiceResponse::decode(&body[..]).expect("an ExportLogsServiceResponse")
}

fn grpc(server: &TestServer, service: &str, message: &[u8]) -> reqwest::RequestBuilder {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
    h2.post(server.url(&format!("/opentelemetry.proto.collector.{service}/Export")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_join_their_trace_or_their_conversation_and_are_stored_once() {
    let server = TestServer::start().await;
    let conversation = "085f8b35-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    let resp = post_logs(&server, &request(turn(conversation, Some(0x42)))).await;
    assert_eq!(resp.partial_success, None);

    // Two records without a trace: the conversation's own session, started where first seen.
    let events = server.events(conversation).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["session.started", "otel.log", "otel.log"]);
    assert_eq!(events[0]["payload"]["metadata"]["conversation_id"], conversation);
    let prompt = &events[1]["payload"];
    assert_eq!((&prompt["name"], &prompt["attributes"]["prompt"]), (&json!("user_prompt"), &json!("List the files")));
    assert_eq!(prompt["body"], "support_bot.user_prompt");
    assert_eq!(events[2]["payload"]["attributes"]["cost_usd"], "0.0021", "kept as sent");
    let row = server.session(conversation).await;
    assert_eq!((&row["agent_id"], &row["status"]), (&json!("support-bot"), &json!("running")));

    // The record with a trace id joins the trace's session; its map stays a map.
    let traced = format!("otel-{}", "42".repeat(16));
    let events = server.events(&traced).await;
    assert_eq!(events.len(), 1);
    let tool = &events[0]["payload"];
    assert_eq!(tool["attributes"]["tool_parameters"], json!({"command": "cat /nope"}));
    assert_eq!(tool["otel"]["span_id"], "4242424242424242");

    // Both are found by their conversation.
    let mut ids = server.session_ids(&format!("conversation={conversation}")).await;
    ids.sort();
    let mut want = vec![conversation.to_owned(), traced.clone()];
    want.sort();
    assert_eq!(ids, want);

    // Exported again, in other encodings and batches: stored once.
    let again = request(turn(conversation, Some(0x42)));
    let (status, body) = post(&server, "/v1/logs", "application/x-protobuf", true, gzip(&again.encode_to_vec())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let resp = grpc(&server, "logs.v1.LogsService", &again.encode_to_vec()).send().await.unwrap();
    assert_eq!(
        resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned()),
        None,
        "not a trailers-only error"
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..5], &[0, 0, 0, 0, 0], "an empty ExportLogsServiceResponse, framed");
    assert_eq!(server.events(conversation).await.len(), 3);
    assert_eq!(server.events(&traced).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_logs_with_enum_names_are_read_and_the_event_name_attribute_wins() {
    let server = TestServer::start().await;
    let body = json!({"resourceLogs": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my-agent"}}]},
    "scopeLogs": [{"scope": {"name": "codex"}, "logRecords": [
        {"timeUnixNano": "1764756000001000000", "severityNumber": "SEVERITY_NUMBER_INFO", "severityText": "INFO",
         "eventName": "event otel/src/events/session_telemetry.rs:803",
         "attributes": [
            {"key": "conversation.id", "value": {"stringValue": "thread-9"}},
            {"key": "event.name", "value": {"stringValue": "my.tool_result"}},
            {"key": "success", "value": {"stringValue": "true"}},
            {"key": "items", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"boolValue": true}]}}}]},
        {"observedTimeUnixNano": "1764756000002000000", "body": {"stringValue": "no conversation, no trace"}}
    ]}]}]});
    let (status, answer) = post(&server, "/v1/logs", "application/json", false, body.to_string().into_bytes()).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "1", "{answer}");
    let why = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(why.contains("log record 1") && why.contains("no trace id and no conversation id"), "{why}");
    let events = server.events("thread-9").await;
    let p = &events[1]["payload"];
    assert_eq!(p["name"], "my.tool_result");
    assert_eq!(p["severity_number"], 9);
    assert_eq!(p["attributes"]["items"], json!([1, true]));
    assert_eq!(p["otel"]["event_name"], "event otel/src/events/session_telemetry.rs:803");
    assert_eq!(server.session("thread-9").await["agent_id"], "my-agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_answered_as_not_kept_with_their_count_over_http_and_grpc() {
    let server = TestServer::start().await;
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.cost.usage".into(),
                    data: Some(Data::Gauge(Gauge { data_points: vec![NumberDataPoint::default(); 4] })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, body) = post(&server, "/v1/metrics", "application/x-protobuf", false, req.encode_to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let partial = ExportMetricsServiceResponse::decode(&body[..]).unwrap().partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 4);
    assert!(partial.error_message.contains("aop keeps no metrics"), "{}", partial.error_message);

    let json_body =
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":{"dataPoints":[{},{}]}}]}]}]}"#;
    let (status, body) = post(&server, "/v1/metrics", "application/json", true, gzip(json_body.as_bytes())).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["partialSuccess"]["rejectedDataPoints"], "2", "{body}");

    let resp = grpc(&server, "metrics.v1.MetricsService", &req.encode_to_vec()).send().await.unwrap();
    let framed = resp.bytes().await.unwrap();
    let answer = ExportMetricsServiceResponse::decode(&framed[5..]).unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_data_points, 4);
    assert_eq!(server.sessions("").await, Vec::<Value>::new(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_bodies_get_a_reason_and_change_nothing() {
    let server = TestServer::start().await;
    let good = request(turn("bad-bodies", None)).encode_to_vec();
    let bomb = gzip(&vec![0u8; 32 << 20]);
    type Case<'a> = (&'a str, &'a str, bool, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "truncated protobuf",
            "application/x-protobuf",
            false,
            good[..good.len() - 5].to_vec(),
            StatusCode::BAD_REQUEST,
            "protobuf",
        ),
        (
            "json of the wrong types",
            "application/json",
            false,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":true}]}]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "OTLP/JSON",
        ),
        (
            "json not json",
            "application/json",
            false,
            b"{\"resourceLogs\": [".to_vec(),
            StatusCode::BAD_REQUEST,
            "OTLP/JSON",
        ),
        (
            "a gzip bomb",
            "application/x-protobuf",
            true,
            bomb,
            StatusCode::PAYLOAD_TOO_LARGE,
            "16 MiB once decompressed",
        ),
        (
            "an oversized record",
            "application/x-protobuf",
            false,
            request(vec![record(1, vec![attr("session.id", s("x")), attr("big", s(&"x".repeat(70_000)))])])
                .encode_to_vec(),
            StatusCode::BAD_REQUEST,
            "64 KiB",
        ),
    ];
    for (case, ct, gz, body, want, reason) in cases {
        let (status, answer) = post(&server, "/v1/logs", ct, gz, body).await;
        assert_eq!(status, want, "{case}: {}", String::from_utf8_lossy(&answer));
        assert!(String::from_utf8_lossy(&answer).contains(reason), "{case}: {}", String::from_utf8_lossy(&answer));
    }
    let (status, _) = post(&server, "/v1/logs", "text/plain", false, good.clone()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(server.sessions("").await, Vec::<Value>::new(), "nothing stored");

    // Millions of empty records in a few kilobytes: refused within bounds, as spans are.
    let before = server.rss_bytes();
    let mut records: Vec<u8> = Vec::new();
    for _ in 0..4_000_000 {
        records.extend_from_slice(&[0x12, 0x00]);
    }
    let mut scope = vec![0x12];
    prost::encoding::encode_varint(records.len() as u64, &mut scope);
    scope.extend(records);
    let mut body = vec![0x0a];
    prost::encoding::encode_varint(scope.len() as u64, &mut body);
    body.extend(scope);
    let (status, answer) = post(&server, "/v1/logs", "application/x-protobuf", true, gzip(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&answer));
    let grown = server.peak_rss_bytes().saturating_sub(before);
    println!("4 million empty log records: the collector grew {} MiB", grown >> 20);
    assert!(grown < 256 << 20, "{} MiB", grown >> 20);
    post_logs(&server, &request(turn("after", None))).await;
    assert_eq!(server.events("after").await.len(), 4, "the records and their session's start");
}

/// A conversation made from records waits for its user between turns: its silence raises no
/// stall, where an AOP session's silence does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_waiting_for_its_user_is_not_stalled() {
    let server = Launch::new().args(["--stall-after", "1"]).start().await;
    post_logs(&server, &request(turn("waiting", None))).await;
    server.ingest(&[event("aop-run", 1, "session.started", json!({"goal": "g"}))]).await;
    eventually("the AOP session's stall", || async {
        let alerts = server.get_ok("/alerts?type=stall").await;
        (alerts["alerts"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    // Checked on the same timer, after it: the conversation was not.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let alerts = server.get_ok("/alerts?type=stall").await;
    let stalled: Vec<&str> =
        alerts["alerts"].as_array().unwrap().iter().map(|a| a["session_id"].as_str().unwrap()).collect();
    assert_eq!(stalled, ["aop-run"]);
}

/// Claude Code between turns (its model has answered) is waiting for its user; in the middle of
/// one (a tool granted, nothing since) it owes its next step, and its silence is a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_agent_stalls_only_in_the_middle_of_a_turn() {
    let server = Launch::new().args(["--stall-after", "1"]).start().await;
    let claude = |session: &str, names: &[&str]| {
        let records = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut r = record(
                    i as u64,
                    vec![
                        attr("session.id", s(session)),
                        attr("event.name", s(name)),
                        attr("event.sequence", Any::IntValue(i as i64)),
                    ],
                );
                r.body = Some(AnyValue { value: Some(s(&format!("claude_code.{name}"))) });
                r
            })
            .collect();
        let mut req = request(records);
        req.resource_logs[0].resource =
            Some(Resource { attributes: vec![attr("service.name", s("claude-code"))], ..Default::default() });
        req
    };
    post_logs(&server, &claude("between-turns", &["user_prompt", "api_request"])).await;
    post_logs(&server, &claude("mid-turn", &["user_prompt", "api_request", "tool_decision"])).await;
    eventually("the stall of the turn in progress", || async {
        let alerts = server.get_ok("/alerts?type=stall").await;
        (!alerts["alerts"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let alerts = server.get_ok("/alerts?type=stall").await;
    let stalled: Vec<&str> =
        alerts["alerts"].as_array().unwrap().iter().map(|a| a["session_id"].as_str().unwrap()).collect();
    assert_eq!(stalled, ["mid-turn"]);
}

/// Records carry no end of their session: `--idle-end` of silence ends it as completed, timed
/// at its last record; a session with an end of its own is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_silent_past_the_idle_end_is_completed() {
    let server = Launch::new().args(["--idle-end", "1"]).start().await;
    post_logs(&server, &request(turn("quiet-chat", None))).await;
    server.ingest(&[event("aop-run", 1, "session.started", json!({"goal": "g"}))]).await;
    let row = eventually("the conversation's end", || async {
        let row = server.session("quiet-chat").await;
        (row["status"] == "completed").then_some(row)
    })
    .await;
    assert_eq!(row["ended_at"], row["last_seen_at"], "ended at its last record: {row}");
    assert!(row["outcome_summary"].as_str().unwrap().contains("--idle-end"), "{row}");
    let events = server.get_ok("/sessions/quiet-chat").await["events"].clone();
    let ends: Vec<&Value> = events.as_array().unwrap().iter().filter(|e| e["type"] == "session.ended").collect();
    assert_eq!(ends.len(), 1, "{events}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(server.session("aop-run").await["status"], "running", "an AOP session ends itself");
    let events = server.get_ok("/sessions/quiet-chat").await["events"].clone();
    assert_eq!(events.as_array().unwrap().iter().filter(|e| e["type"] == "session.ended").count(), 1, "ended once");
}
