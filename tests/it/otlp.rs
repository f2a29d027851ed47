//! OTLP trace ingest over HTTP (`OTLP.md`): protobuf, JSON, gzip; retries; spans sharing a
//! clock; bad bodies; partial success; detectors on span-derived sessions. The real SDK
//! exporters and instrumented clients are in `otlp_clients`.

use crate::support::*;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Write;

const T0: u64 = 1_764_756_000_000_000_000;

fn trace_id(n: u8) -> Vec<u8> {
    let mut id = vec![0xab; 16];
    id[15] = n;
    id
}

fn session_of(n: u8) -> String {
    format!("otel-{}", trace_id(n).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn attr(key: &str, v: Any) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> Any {
    Any::StringValue(v.into())
}

fn span(trace: u8, id: u64, parent: Option<u64>, name: &str, ms: (u64, u64), attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: 1,
        start_time_unix_nano: T0 + ms.0 * 1_000_000,
        end_time_unix_nano: T0 + ms.1 * 1_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![attr("service.name", s("shop-bot"))], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A small agent run: the root agent, a chat call, a tool call.
fn run(trace: u8) -> Vec<Span> {
    vec![
        span(
            trace,
            1,
            None,
            "invoke_agent shopper",
            (0, 5000),
            vec![attr("gen_ai.operation.name", s("invoke_agent")), attr("gen_ai.agent.name", s("shopper"))],
        ),
        span(
            trace,
            2,
            Some(1),
            "chat gpt-4o-mini",
            (100, 900),
            vec![
                attr("gen_ai.operation.name", s("chat")),
                attr("gen_ai.request.model", s("gpt-4o-mini")),
                attr("gen_ai.usage.input_tokens", Any::IntValue(1200)),
                attr("gen_ai.usage.output_tokens", Any::IntValue(300)),
            ],
        ),
        span(
            trace,
            3,
            Some(1),
            "execute_tool search",
            (1000, 1500),
            vec![attr("gen_ai.tool.name", s("search")), attr("gen_ai.tool.call.arguments", s(r#"{"q":"socks"}"#))],
        ),
    ]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `POST /v1/traces`: the status, the content type and the body.
async fn post(server: &TestServer, content_type: &str, gzipped: bool, body: Vec<u8>) -> (StatusCode, String, Vec<u8>) {
    let mut req = server.authed(Method::POST, "/v1/traces").header("content-type", content_type);
    if gzipped {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.expect("request");
    let status = resp.status();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

async fn post_protobuf(server: &TestServer, req: &ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let (status, ct, body) = post(server, "application/x-protobuf", false, req.encode_to_vec()).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/x-protobuf"), "{}", String::from_utf8_lossy(&body));
    ExportTraceServiceResponse::decode(&body[..]).expect("an ExportTraceServiceResponse")
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_and_gzip_exports_become_sessions_and_a_resent_span_is_not_stored_twice() {
    let server = TestServer::start().await;

    // protobuf
    let resp = post_protobuf(&server, &request(run(1))).await;
    assert_eq!(resp.partial_success, None);
    let events = server.events(&session_of(1)).await;
    assert_eq!(
        types(&events),
        [
            "session.started",
            "otel.span",
            "operation.external_call",
            "operation.tool_start",
            "operation.tool_end",
            "session.ended"
        ]
    );
    let session = server.session(&session_of(1)).await;
    assert_eq!((&session["agent_id"], &session["status"]), (&json!("shopper"), &json!("completed")));
    let call = &events[2]["payload"];
    assert_eq!(
        (&call["model"], &call["input_tokens"], &call["output_tokens"]),
        (&json!("gpt-4o-mini"), &json!(1200), &json!(300))
    );
    assert_eq!(call["otel"]["span_id"], "0000000000000002");
    assert!(events.windows(2).all(|w| w[0]["sequence"].as_i64() < w[1]["sequence"].as_i64()), "sequence follows time");

    // The exporter retries, in other batches: nothing new.
    post_protobuf(&server, &request(run(1))).await;
    post_protobuf(&server, &request(run(1).into_iter().rev().collect())).await;
    post_protobuf(&server, &request(run(1)[2..].to_vec())).await;
    assert_eq!(server.events(&session_of(1)).await, events, "a resent span is a duplicate");

    // gzip-compressed protobuf
    let (status, _, _) = post(&server, "application/x-protobuf", true, gzip(&request(run(2)).encode_to_vec())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.events(&session_of(2)).await.len(), 6);

    // OTLP/JSON, with enum names, gzip or not
    let json_body = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-bot"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "ababababababababababababababab03", "spanId": "0000000000000007", "name": "lookup",
            "kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR", "message": "no stock"},
            "startTimeUnixNano": "1764756000000000000", "endTimeUnixNano": "1764756000250000000",
            "attributes": [{"key": "gen_ai.tool.name", "value": {"stringValue": "stock"}}]}]}]}]});
    let session3 = "otel-ababababababababababababababab03";
    let (status, ct, body) = post(&server, "application/json", false, json_body.to_string().into_bytes()).await;
    assert_eq!((status, ct.as_str(), body.as_slice()), (StatusCode::OK, "application/json", &b"{}"[..]));
    let (status, _, _) = post(&server, "application/json", true, gzip(json_body.to_string().as_bytes())).await;
    assert_eq!(status, StatusCode::OK);
    let events = server.events(session3).await;
    assert_eq!(types(&events), ["session.started", "operation.tool_start", "operation.tool_end", "session.ended"]);
    assert_eq!((&events[2]["payload"]["success"], &events[2]["payload"]["error"]), (&json!(false), &json!("no stock")));
    assert_eq!(server.session(session3).await["status"], "failed");
    assert_eq!(server.session(session3).await["agent_id"], "shop-bot", "no agent span: the service's name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sharing_a_clock_are_all_stored_once() {
    let server = TestServer::start().await;
    // 60 tool spans with the very same start and end: their events' sequences collide.
    let spans: Vec<Span> = (10..70)
        .map(|i| span(4, i, Some(1), "execute_tool t", (10, 20), vec![attr("gen_ai.tool.name", s(&format!("t{i}")))]))
        .collect();
    post_protobuf(&server, &request(spans.clone())).await;
    let events = server.events(&session_of(4)).await;
    assert_eq!(events.len(), 1 + 120, "{:?}", types(&events));
    let mut seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), events.len(), "distinct sequences");
    // Resent in halves, reversed: still 121.
    post_protobuf(&server, &request(spans[30..].iter().rev().cloned().collect())).await;
    post_protobuf(&server, &request(spans[..30].to_vec())).await;
    assert_eq!(server.events(&session_of(4)).await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_a_reason_in_the_request_encoding_and_change_nothing() {
    let server = TestServer::start().await;
    let good = request(run(5)).encode_to_vec();
    let mut bad_ids = request(run(5));
    for sp in &mut bad_ids.resource_spans[0].scope_spans[0].spans {
        sp.trace_id.truncate(8);
    }
    let mut zero_span = request(run(5));
    zero_span.resource_spans[0].scope_spans[0].spans.truncate(1);
    zero_span.resource_spans[0].scope_spans[0].spans[0].span_id = vec![0; 8];
    let mut huge = request(run(5));
    huge.resource_spans[0].scope_spans[0].spans.truncate(1);
    huge.resource_spans[0].scope_spans[0].spans[0].attributes.push(attr("input.value", s(&"x".repeat(1 << 20))));
    let bomb = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..64 {
            enc.write_all(&[0u8; 1 << 20]).unwrap();
        }
        enc.finish().unwrap()
    };
    assert!(bomb.len() < 1 << 20);

    // (case, content type, gzip, body, status, a fragment of the reason)
    type Case<'a> = (&'a str, &'a str, bool, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("truncated protobuf", "application/x-protobuf", false, good[..good.len() - 7].to_vec(), StatusCode::BAD_REQUEST, "protobuf"),
        ("json of the wrong types", "application/json", false, br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"ababababababababababababababab05","name":7}]}]}]}"#.to_vec(), StatusCode::BAD_REQUEST, "OTLP/JSON"),
        ("json id not hex", "application/json", false, br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex"}]}]}]}"#.to_vec(), StatusCode::BAD_REQUEST, "OTLP/JSON"),
        ("json not json", "application/json", false, b"{\"resourceSpans\": [".to_vec(), StatusCode::BAD_REQUEST, "OTLP/JSON"),
        ("short trace ids", "application/x-protobuf", false, bad_ids.encode_to_vec(), StatusCode::BAD_REQUEST, "trace_id must be 16 bytes"),
        ("an all-zero span id", "application/x-protobuf", false, zero_span.encode_to_vec(), StatusCode::BAD_REQUEST, "span_id"),
        ("a huge attribute value", "application/x-protobuf", false, huge.encode_to_vec(), StatusCode::BAD_REQUEST, "64 KiB"),
        ("a gzip bomb", "application/x-protobuf", true, bomb, StatusCode::PAYLOAD_TOO_LARGE, "16 MiB once decompressed"),
        ("not gzip", "application/x-protobuf", true, good.clone(), StatusCode::BAD_REQUEST, "gzip"),
    ];
    for (case, ct, gz, body, want, reason) in cases {
        let (status, got_ct, answer) = post(&server, ct, gz, body).await;
        assert_eq!(status, want, "{case}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(got_ct, ct, "{case}: answered in the request's encoding");
        let message = if ct == "application/json" {
            serde_json::from_slice::<Value>(&answer).unwrap()["message"].as_str().unwrap().to_owned()
        } else {
            // google.rpc.Status: field 2 is the message.
            let status = RpcStatus::decode(&answer[..]).unwrap_or_else(|e| panic!("{case}: not a Status: {e}"));
            assert_ne!(status.code, 0, "{case}");
            status.message
        };
        assert!(message.contains(reason), "{case}: {message:?} lacks {reason:?}");
    }
    let (status, _, _) = post(&server, "text/plain", false, good.clone()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(server.sessions("").await, Vec::<Value>::new(), "nothing stored");
    // The server is unharmed.
    post_protobuf(&server, &request(run(5))).await;
    assert_eq!(server.events(&session_of(5)).await.len(), 6);
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_spans_are_counted_in_partial_success_and_the_rest_stored() {
    let server = TestServer::start().await;
    let mut spans = run(6);
    let mut broken = span(6, 9, Some(1), "broken", (10, 20), vec![]);
    broken.end_time_unix_nano = broken.start_time_unix_nano - 1;
    spans.push(broken);
    let resp = post_protobuf(&server, &request(spans.clone())).await;
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("end_time_unix_nano is before"), "{}", partial.error_message);
    assert_eq!(server.events(&session_of(6)).await.len(), 6);

    let json_body = serde_json::to_string(&json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "ababababababababababababababab07", "spanId": "0000000000000001", "name": "ok", "startTimeUnixNano": "1764756000000000000", "endTimeUnixNano": "1764756000000000001"},
        {"traceId": "ababababababababababababababab07", "spanId": "", "name": "no id", "startTimeUnixNano": "1764756000000000000", "endTimeUnixNano": "1764756000000000001"}
    ]}]}]}))
    .unwrap();
    let (status, _, body) = post(&server, "application/json", false, json_body.into_bytes()).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "1", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_identical_tool_spans_raises_one_loop_alert() {
    let server = TestServer::start().await;
    let spans: Vec<Span> = (0..8)
        .map(|i| {
            span(
                8,
                10 + i,
                Some(1),
                "execute_tool fetch",
                (i * 1000, i * 1000 + 200),
                vec![
                    attr("gen_ai.operation.name", s("execute_tool")),
                    attr("gen_ai.tool.name", s("fetch")),
                    attr("gen_ai.tool.call.arguments", s(r#"{"url":"https://example.com"}"#)),
                ],
            )
        })
        .collect();
    // As a simple span processor sends them: one request per span.
    for sp in spans {
        post_protobuf(&server, &request(vec![sp])).await;
    }
    let detail = server.get_ok(&format!("/sessions/{}", session_of(8))).await;
    let loops: Vec<&Value> = detail["alerts"].as_array().unwrap().iter().filter(|a| a["type"] == "loop").collect();
    assert_eq!(loops.len(), 1, "{:#}", detail["alerts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_rules_apply() {
    let server = Launch::new().token("s3cret").start().await;
    let body = request(run(9)).encode_to_vec();
    let resp = server
        .request(Method::POST, "/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = server
        .request(Method::POST, "/v1/traces")
        .header("content-type", "application/x-protobuf")
        .header("authorization", "Bearer s3cret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(server.events(&session_of(9)).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_spans_count_tokens_and_cost_and_conversations_are_searchable() {
    let server = TestServer::start().await;
    // gpt-4o-mini is in the built-in price table; the third call's model is not.
    let mut spans = run(10);
    spans.push(span(
        10,
        4,
        Some(1),
        "chat gpt-4o-mini",
        (2000, 2600),
        vec![
            attr("gen_ai.request.model", s("gpt-4o-mini")),
            attr("gen_ai.usage.input_tokens", Any::IntValue(800)),
            attr("gen_ai.usage.output_tokens", Any::IntValue(200)),
            attr("gen_ai.conversation.id", s("thread-Xy7")),
        ],
    ));
    spans.push(span(
        10,
        5,
        Some(1),
        "chat",
        (2700, 2900),
        vec![attr("gen_ai.request.model", s("house-model-1")), attr("gen_ai.usage.input_tokens", Any::IntValue(50))],
    ));
    // As a batch processor sends them: children first, the root last.
    post_protobuf(&server, &request(spans[1..].to_vec())).await;
    post_protobuf(&server, &request(spans[..1].to_vec())).await;
    let id = session_of(10);
    let session = server.session(&id).await;
    assert_eq!(session["total_tokens"], 1200 + 300 + 800 + 200 + 50, "{session:#}");
    let calls: Vec<Value> = server
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "operation.external_call")
        .map(|e| e["payload"].clone())
        .collect();
    let costs: Vec<f64> = calls.iter().filter_map(|c| c["cost_usd"].as_f64()).collect();
    assert_eq!(costs.len(), 2, "{calls:#?}");
    assert!(costs.iter().all(|c| *c > 0.0));
    let total = session["total_cost_usd"].as_f64().expect("a total cost");
    assert!((total - costs.iter().sum::<f64>()).abs() < 1e-9, "{total} vs {costs:?}");
    assert_eq!(calls[2]["cost_note"], "no price for model \"house-model-1\"");
    assert_eq!(session["unpriced_models"], json!(["house-model-1"]));
    // The conversation id came in a span of the first batch's, not on the root: still found.
    assert_eq!(session["conversation_id"], "thread-Xy7");
    assert_eq!(server.session_ids("q=thread-xy7").await, std::slice::from_ref(&id));
    assert_eq!(server.session_ids("q=no-such-thread").await, Vec::<String>::new());
}

/// gRPC over HTTP/2 cleartext: what a malformed call gets back. (The real SDK exporter's calls,
/// plain and gzip, are in `otlp_clients`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_calls_get_a_grpc_status_and_change_nothing() {
    let server = TestServer::start().await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
    let call = |body: Vec<u8>, encoding: Option<&str>| {
        let mut req = h2
            .post(server.url("/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body);
        if let Some(e) = encoding {
            req = req.header("grpc-encoding", e);
        }
        req.send()
    };
    let message = request(run(11)).encode_to_vec();
    let frame = |flag: u8, bytes: &[u8], len: usize| {
        let mut f = vec![flag];
        f.extend_from_slice(&(len as u32).to_be_bytes());
        f.extend_from_slice(bytes);
        f
    };
    // (case, body, grpc-encoding, a fragment of the reason)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("no prefix", vec![0, 0], None, "truncated"),
        ("a length that does not match", frame(0, &message, message.len() + 9), None, "says"),
        ("not protobuf", frame(0, &[0x0a, 0xff, 0xff, 0x03], 4), None, "protobuf"),
        ("compressed without an encoding", frame(1, &message, message.len()), None, "grpc-encoding"),
        ("compressed with snappy", frame(1, &message, message.len()), Some("snappy"), "only gzip"),
        ("a compressed flag of 2", frame(2, &message, message.len()), None, "must be 0 or 1"),
        ("a compressed flag of 255", frame(255, &message, message.len()), Some("gzip"), "must be 0 or 1"),
    ];
    for (case, body, encoding, reason) in cases {
        let resp = call(body, encoding).await.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{case}");
        assert_eq!(resp.status(), StatusCode::OK, "{case}: gRPC errors travel in grpc-status");
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc", "{case}");
        assert_eq!(h["grpc-status"], "3", "{case}: INVALID_ARGUMENT");
        let message = h["grpc-message"].to_str().unwrap();
        assert!(message.contains(reason), "{case}: {message:?} lacks {reason:?}");
    }
    assert_eq!(server.sessions("").await, Vec::<Value>::new(), "nothing stored");
    // A well-formed call over the same connection pool is stored.
    let resp = call(frame(0, &message, message.len()), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..5], &[0, 0, 0, 0, 0], "an empty ExportTraceServiceResponse, framed");
    assert_eq!(server.events(&session_of(11)).await.len(), 6);
}

/// `count` empty spans in one request: 2 bytes each on the wire, gzipped to almost nothing.
fn empty_spans(count: usize) -> Vec<u8> {
    let varint = |mut n: usize, out: &mut Vec<u8>| {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    };
    let field = |tag: u8, payload: Vec<u8>| {
        let mut out = vec![tag];
        varint(payload.len(), &mut out);
        out.extend(payload);
        out
    };
    let spans: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], count).flatten().collect();
    // resource_spans (1) → scope_spans (2) → spans (2)
    field(0x0a, field(0x12, spans))
}

fn grpc_call(
    h2: &reqwest::Client,
    server: &TestServer,
    message: &[u8],
    gzipped: bool,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    let mut frame = vec![u8::from(gzipped)];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut req = h2
        .post(server.url("/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame);
    if gzipped {
        req = req.header("grpc-encoding", "gzip");
    }
    req.send()
}

/// The probe's repro: a 16 KB gzip body of 8.4 million empty spans took the collector to 3.8 GB
/// for 10 s, and five at once killed it. Now each is read span by span within bounds, alone and
/// five at once, over HTTP and over gRPC, and as OTLP/JSON: refused with the count, the
/// collector's memory never more than a small multiple of the bodies, and it goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_requests_hold_memory_bounded_by_their_size() {
    let server = TestServer::start().await;
    let bomb = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&empty_spans(8_380_000)).unwrap();
        enc.finish().unwrap()
    };
    println!("the bomb: {} bytes gzipped, {} inflated", bomb.len(), 8_380_000 * 2 + 10);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    let before = server.rss_bytes();

    let (status, _, body) = post(&server, "application/x-protobuf", true, bomb.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let why = RpcStatus::decode(&body[..]).expect("a google.rpc.Status").message;
    assert!(why.starts_with("8380000 of 8380000 spans rejected: span 0"), "{why}");
    assert!(why.len() < 2000, "only a few reasons are given: {} bytes", why.len());

    let answers =
        futures_util::future::join_all((0..5).map(|_| post(&server, "application/x-protobuf", true, bomb.clone())))
            .await;
    for (status, _, _) in &answers {
        assert!(matches!(*status, StatusCode::BAD_REQUEST | StatusCode::SERVICE_UNAVAILABLE), "{status}");
    }
    let after_http = server.peak_rss_bytes();

    let h2 = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
    let calls = futures_util::future::join_all((0..5).map(|_| grpc_call(&h2, &server, &bomb, true))).await;
    for resp in calls {
        let resp = resp.expect("a gRPC answer");
        let code = resp.headers()["grpc-status"].to_str().unwrap().to_owned();
        assert!(code == "3" || code == "14", "INVALID_ARGUMENT, or UNAVAILABLE when busy: {code}");
    }
    let after_grpc = server.peak_rss_bytes();

    // OTLP/JSON: 16 MiB of empty spans took 2.67 GB.
    let mut json_body = String::from(r#"{"resourceSpans":[{"scopeSpans":[{"spans":["#);
    while json_body.len() < (16 << 20) - 16 {
        json_body.push_str("{},");
    }
    json_body.push_str("{}]}]}]}");
    let (status, _, body) = post(&server, "application/json", false, json_body.into_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    let peak = server.peak_rss_bytes();

    println!(
        "resident memory: {} MiB before; peak {} MiB after 6 requests over HTTP, {} MiB after 5 more over gRPC, {} MiB after 16 MiB of JSON",
        before >> 20,
        after_http >> 20,
        after_grpc >> 20,
        peak >> 20
    );
    assert!(peak - before < 512 << 20, "the collector grew by {} MiB", (peak - before) >> 20);

    // Alive, and serving as before.
    let resp = post_protobuf(&server, &request(run(21))).await;
    assert_eq!(resp.partial_success, None);
    assert_eq!(server.events(&session_of(21)).await.len(), 6);
}

/// The per-request caps (README, "Limits"): spans past the first 16,384 are rejected unread, a
/// span nested too deep or from after 2200 is rejected alone, and the rest are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_past_the_caps_are_rejected_alone_and_the_rest_stored() {
    let server = TestServer::start().await;
    let cap = 16_384;
    let note = attr("note", s(&"n".repeat(100)));
    let spans: Vec<Span> =
        (0..cap as u64 + 10).map(|i| span(31, 1000 + i, Some(1), "step", (i, i + 1), vec![note.clone()])).collect();
    let resp = post_protobuf(&server, &request(spans)).await;
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 10);
    assert!(partial.error_message.contains("past the first 16384"), "{}", partial.error_message);
    assert_eq!(server.session(&session_of(31)).await["event_count"], cap + 1, "every span read, and the trace's start");

    // After 2200: not a clock reading (and a sequence past what JavaScript holds exactly).
    let mut late = span(32, 2, Some(1), "late", (0, 1), vec![]);
    late.start_time_unix_nano = u64::MAX - 1;
    late.end_time_unix_nano = u64::MAX;
    let resp = post_protobuf(&server, &request(vec![span(32, 3, Some(1), "fine", (0, 1), vec![]), late])).await;
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("after 2200"), "{}", partial.error_message);
    let events = server.events(&session_of(32)).await;
    assert!(events.iter().all(|e| e["sequence"].as_i64().unwrap() < (1 << 53)), "{events:?}");

    // One attribute nested 40 levels: that span is refused, in either encoding; before, the
    // whole request was.
    let mut deep = s("bottom");
    for _ in 0..40 {
        deep = Any::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList { values: vec![attr("k", deep)] });
    }
    let spans = vec![
        span(33, 2, Some(1), "deep", (0, 1), vec![attr("deep", deep)]),
        span(33, 3, Some(1), "fine", (1, 2), vec![]),
    ];
    let resp = post_protobuf(&server, &request(spans)).await;
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.starts_with("1 of 2 spans rejected: span 0:"), "{}", partial.error_message);
    let mut value = r#"{"stringValue":"bottom"}"#.to_owned();
    for _ in 0..40 {
        value = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{value}}}]}}}}"#);
    }
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[
            {{"traceId":"ababababababababababababababab22","spanId":"0000000000000002","name":"deep","startTimeUnixNano":"1764756000000000000","endTimeUnixNano":"1764756000000000001","attributes":[{{"key":"deep","value":{value}}}]}},
            {{"traceId":"ababababababababababababababab22","spanId":"0000000000000003","name":"fine","startTimeUnixNano":"1764756000000000000","endTimeUnixNano":"1764756000000000001"}}]}}]}}]}}"#
    );
    let (status, _, body) = post(&server, "application/json", false, body.into_bytes()).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "1", "{body}");
    assert_eq!(
        server.events(&session_of(0x22)).await.len(),
        3,
        "the fine span's events: a root, so the trace's start and end"
    );
}

/// A megabyte of one-span traces became 20,561 sessions and 87 MiB on disk (85 times its size).
/// What a request derives is counted against a budget of 16 times its size and 1 MiB, a trace
/// counting 4 KiB for its session, so the rest are rejected and the disk grows a bounded multiple.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_tiny_traces_cannot_multiply_into_sessions() {
    let server = TestServer::start().await;
    let disk = |server: &TestServer| {
        let db = server.db_path();
        ["", "-wal"]
            .iter()
            .map(|s| std::fs::metadata(format!("{}{s}", db.display())).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let before = disk(&server);
    let mut spans = Vec::new();
    let mut body = Vec::new();
    for n in 0u64.. {
        let mut trace = vec![0x5a; 16];
        trace[8..].copy_from_slice(&n.to_be_bytes());
        spans.push(Span {
            trace_id: trace,
            span_id: (n + 1).to_be_bytes().to_vec(),
            name: "t".into(),
            start_time_unix_nano: T0,
            end_time_unix_nano: T0 + 1,
            ..Default::default()
        });
        if n % 1000 == 999 {
            body = request(spans.clone()).encode_to_vec();
            if body.len() >= 1 << 20 {
                break;
            }
        }
    }
    let total = spans.len();
    let resp = post_protobuf(&server, &ExportTraceServiceRequest::decode(&body[..]).unwrap()).await;
    let partial = resp.partial_success.expect("the rest are rejected");
    assert!(partial.error_message.contains("derives more than"), "{}", partial.error_message);
    let kept = total - partial.rejected_spans as usize;
    // Let the write-ahead log settle into the database before measuring.
    server.get_ok("/health").await;
    let grown = disk(&server).saturating_sub(before);
    println!(
        "{} KiB of {total} one-span traces: {kept} sessions stored, the database grew {} KiB ({:.1} times the request)",
        body.len() >> 10,
        grown >> 10,
        grown as f64 / body.len() as f64
    );
    assert!(kept > 0 && kept < total / 3, "{kept} of {total} traces kept");
    assert!(grown < 20 * body.len() as u64, "the database grew {} KiB", grown >> 10);
    let listed = server.get_ok("/sessions?limit=1000").await["sessions"].as_array().unwrap().len();
    assert_eq!(listed, kept.min(1000));
}
