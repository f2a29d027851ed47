//! `POST /events`: what is accepted, what is refused and how, and that what is stored (and
//! served, exported, streamed) is what the agent sent.

use crate::support::events::{key, nested};
use crate::support::*;
use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn started(session: &str) -> Value {
    event(session, 1, "session.started", json!({"goal": "g"}))
}

/// Asserts an error answer: the status, `"ok": false` and an `error` that contains `fragment`.
fn assert_error(case: &str, got: &(StatusCode, Value), status: StatusCode, fragment: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{case}: {body}");
    assert_eq!(body["ok"], false, "{case}: {body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("{case}: no error in {body}"));
    assert!(error.contains(fragment), "{case}: error {error:?} does not contain {fragment:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_event_is_acknowledged_with_exactly_ok_true_and_stored_as_sent() {
    let server = TestServer::start().await;
    let ev = started("sess_1");

    let resp = server
        .request(reqwest::Method::POST, "/events")
        .header("content-type", "application/json")
        .body(ev.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(resp.text().await.unwrap(), r#"{"ok":true}"#);

    assert_eq!(server.events("sess_1").await, vec![ev]);
}

/// Bodies that are not an acceptable event, each with the fragment its 400 must contain: the
/// field it names, or what the body is.
fn invalid_bodies() -> Vec<(&'static str, String, &'static str)> {
    let base = || started("bad_1");
    let with = |field: &str, value: Value| base().with(field, value).to_string();
    let without = |field: &str| base().without(field).to_string();
    let long = |n: usize, c: &str| json!(c.repeat(n));
    let mut cases = vec![
        ("body is not JSON", "{this is not json".to_owned(), "JSON"),
        ("body is empty", String::new(), "JSON"),
        ("body is truncated", r#"{"spec":"aop/1.0","session_id":"#.to_owned(), "JSON"),
        ("body is a string", r#""hello""#.to_owned(), "object"),
        ("body is a number", "42".to_owned(), "object"),
        ("body is null", "null".to_owned(), "object"),
        ("body is a boolean", "true".to_owned(), "object"),
        ("body is an empty object", "{}".to_owned(), "`spec`"),
        (
            "the type key appears twice",
            base().to_string().replacen('{', r#"{"type":"cognition.thought","#, 1),
            "`type`",
        ),
    ];
    for field in ["spec", "session_id", "agent_id", "sequence", "timestamp", "type", "payload"] {
        let name: &'static str = Box::leak(format!("{field} is missing").into_boxed_str());
        let fragment: &'static str = Box::leak(format!("`{field}`").into_boxed_str());
        cases.push((name, without(field), fragment));
    }
    cases.extend([
        ("spec is a number", with("spec", json!(1.0)), "`spec`"),
        ("spec is another major version", with("spec", json!("aop/2.0")), "`spec`"),
        ("spec has no minor version", with("spec", json!("aop/1")), "`spec`"),
        ("spec is empty", with("spec", json!("")), "`spec`"),
        ("session_id is a number", with("session_id", json!(7)), "`session_id`"),
        ("session_id is null", with("session_id", Value::Null), "`session_id`"),
        ("session_id is empty", with("session_id", json!("")), "`session_id`"),
        ("session_id has 129 characters", with("session_id", long(129, "s")), "`session_id`"),
        ("session_id has a slash", with("session_id", json!("../etc/passwd")), "`session_id`"),
        ("session_id has a space", with("session_id", json!("a b")), "`session_id`"),
        ("session_id is not ASCII", with("session_id", json!("sessé")), "`session_id`"),
        ("parent_session_id is a number", with("parent_session_id", json!(5)), "`parent_session_id`"),
        ("parent_session_id has a slash", with("parent_session_id", json!("a/b")), "`parent_session_id`"),
        ("agent_id is a number", with("agent_id", json!(42)), "`agent_id`"),
        ("agent_id is empty", with("agent_id", json!("")), "`agent_id`"),
        ("agent_id has 129 characters", with("agent_id", long(129, "é")), "`agent_id`"),
        ("agent_id has a newline", with("agent_id", json!("a\nb")), "`agent_id`"),
        ("agent_id has a bell", with("agent_id", json!("a\u{7}b")), "`agent_id`"),
        ("agent_version is an array", with("agent_version", json!([1])), "`agent_version`"),
        ("sequence is a string", with("sequence", json!("1")), "`sequence`"),
        ("sequence is null", with("sequence", Value::Null), "`sequence`"),
        ("sequence is a boolean", with("sequence", json!(true)), "`sequence`"),
        ("sequence is negative", with("sequence", json!(-1)), "`sequence`"),
        ("sequence is a fraction", with("sequence", json!(1.5)), "`sequence`"),
        (
            "sequence is beyond 64 bits",
            base().to_string().replace(r#""sequence":1"#, r#""sequence":99999999999999999999999"#),
            "`sequence`",
        ),
        ("timestamp is a number", with("timestamp", json!(1_712_138_400)), "`timestamp`"),
        ("timestamp is prose", with("timestamp", json!("yesterday at noon")), "`timestamp`"),
        ("timestamp has no zone", with("timestamp", json!("2026-04-03T10:00:00")), "`timestamp`"),
        ("timestamp is a date", with("timestamp", json!("2026-04-03")), "`timestamp`"),
        ("timestamp has month 13", with("timestamp", json!("2026-13-03T10:00:00Z")), "`timestamp`"),
        ("timestamp is empty", with("timestamp", json!("")), "`timestamp`"),
        ("type is a number", with("type", json!(3)), "`type`"),
        ("type is empty", with("type", json!("")), "`type`"),
        ("type has 129 characters", with("type", long(129, "t")), "`type`"),
        ("payload is an array", with("payload", json!([1, 2])), "`payload`"),
        ("payload is a string", with("payload", json!("x")), "`payload`"),
        ("payload is null", with("payload", Value::Null), "`payload`"),
        ("nesting is 65 levels deep", with("payload", nested(64)), "`payload`"),
        (
            "a nesting bomb",
            base().to_string().replace(r#"{"goal":"g"}"#, &format!("{}{}", "[".repeat(20_000), "]".repeat(20_000))),
            "`payload`",
        ),
    ]);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_event_is_a_400_that_names_the_field_and_leaves_no_trace() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;
    let cases = invalid_bodies();

    for (case, body, fragment) in &cases {
        let got = server.post_body(Some("application/json"), body.clone()).await;
        assert_error(case, &got, StatusCode::BAD_REQUEST, fragment);
    }

    // Nothing stored: no session at all, not even the one most of the bodies name.
    assert_eq!(server.sessions("").await, Vec::<Value>::new());
    let (status, _) = server.get_json("/sessions/bad_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing streamed: the first message after all of them is the next valid event.
    let sentinel = started("after_the_bad_ones");
    server.ingest_one(&sentinel).await;
    assert_eq!(live.message().await.json(), sentinel);
    // And every refusal was counted.
    let m = server.metrics().await;
    assert_eq!(m.get("aop_events_rejected_total"), cases.len() as f64);
    assert_eq!(m.get("aop_events_ingested_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_at_the_edges_of_every_rule_are_accepted_and_stored_as_sent() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, Value)> = vec![
        ("session_id of 128 characters", started(&"s".repeat(128))),
        ("session_id with every allowed sign", started("sess_x.y:z@w-1")),
        ("agent_id of 128 two-byte characters", started("a1").agent(&"é".repeat(128))),
        ("agent_id with spaces and symbols", started("a2").agent("research agent ✓")),
        ("type of 128 characters", started("t1").with("type", json!("t".repeat(128)))),
        ("sequence 0", started("q0").with("sequence", json!(0))),
        ("sequence 2^53 - 1", started("q1").with("sequence", json!(9_007_199_254_740_991_i64))),
        ("spec aop/1.7", started("v1").with("spec", json!("aop/1.7"))),
        ("spec aop/1.10", started("v2").with("spec", json!("aop/1.10"))),
        ("timestamp with an offset", started("z1").stamped("2026-04-03T12:00:00+02:00")),
        ("timestamp with nanoseconds", started("z2").stamped("2026-04-03T10:00:00.123456789Z")),
        ("timestamp without fraction", started("z3").stamped("2026-04-03T10:00:00Z")),
        ("parent_session_id absent", started("p1").without("parent_session_id")),
        ("parent_session_id set", started("p2").parent("root_1")),
        ("agent_version in the envelope", started("w1").with("agent_version", json!("1.2.3"))),
        ("an unknown envelope field", started("x1").with("x-trace", json!({"kept": [1, 2.5, null]}))),
        ("an empty payload", started("e1").with("payload", json!({}))),
        ("nesting 64 levels deep", started("n1").with("payload", nested(63))),
    ];
    for (case, ev) in &cases {
        let got = server.post_event(ev).await;
        assert_eq!(got, (StatusCode::OK, json!({"ok": true})), "{case}");
        let (session, _) = key(ev);
        assert_eq!(server.events(&session).await, vec![ev.clone()], "{case}");
    }
}

/// An event whose JSON text is exactly `len` bytes.
fn event_of_size(session: &str, sequence: i64, len: usize) -> String {
    let shell = event(session, sequence, "cognition.thought", json!({"pad": ""})).to_string();
    let text = shell.replace(r#""pad":"""#, &format!(r#""pad":"{}""#, "x".repeat(len - shell.len())));
    assert_eq!(text.len(), len);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_64_kib_is_accepted_and_one_byte_more_is_413() {
    let server = TestServer::start().await;
    let fits = event_of_size("big", 1, 64 * 1024);
    let over = event_of_size("big", 2, 64 * 1024 + 1);

    assert_eq!(server.post_body(Some("application/json"), fits.clone()).await, (StatusCode::OK, json!({"ok": true})));
    let got = server.post_body(Some("application/json"), over).await;
    assert_error("64 KiB + 1", &got, StatusCode::PAYLOAD_TOO_LARGE, "64 KiB");

    let stored = server.events("big").await;
    assert_eq!(stored, vec![serde_json::from_str::<Value>(&fits).unwrap()]);
}

/// A JSON array of small valid events, more than 16 MiB in all.
fn batch_over_16_mib(session: &str) -> String {
    let one = event(session, 0, "cognition.thought", json!({"content": "y".repeat(900)})).to_string();
    let n = 16 * 1024 * 1024 / one.len() + 100;
    let items: Vec<String> = (0..n)
        .map(|i| event(session, i as i64, "cognition.thought", json!({"content": "y".repeat(900)})).to_string())
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_16_mib_is_413_whether_its_length_is_announced_or_not() {
    let server = TestServer::start().await;

    // Announced up front: refused without reading 16 MiB.
    let head = format!(
        "POST /events HTTP/1.1\nHost: localhost:{}\nContent-Type: application/json\nContent-Length: {}",
        server.port(),
        16 * 1024 * 1024 + 1
    );
    let answer = raw::exchange(server.addr(), &head, b"").await;
    assert_eq!(raw::status_of(&answer), 413, "{answer}");

    // Chunked, so the size is only known by reading: exactly one byte over the limit.
    let body = batch_over_16_mib("huge");
    let body = &body.as_bytes()[..16 * 1024 * 1024 + 1];
    let mut conn = raw::connect(server.addr()).await;
    let head = format!(
        "POST /events HTTP/1.1\nHost: localhost:{}\nContent-Type: application/json\nTransfer-Encoding: chunked",
        server.port()
    );
    let mut chunked = Vec::new();
    for piece in body.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    raw::send(&mut conn, &head, &chunked).await;
    let (answer, json) = raw::one_answer(&mut conn).await.expect("an answer to the chunked upload");
    assert_eq!(raw::status_of(&answer), 413, "{answer}");
    let json: Value = serde_json::from_slice(&json).expect("a JSON error");
    assert!(json["error"].as_str().is_some_and(|e| e.contains("16 MiB")), "{json}");

    assert_eq!(server.sessions("").await, Vec::<Value>::new());
}

/// A client that keeps connections alive (every SDK's HTTP library does) must be able to send
/// its next request after a refused upload: either the connection stays usable, or the refusal
/// says `Connection: close` so the client does not reuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_refusing_an_oversized_body_the_connection_is_closed_or_still_usable() {
    let server = TestServer::start().await;
    let mut conn = raw::connect(server.addr()).await;
    let head = format!(
        "POST /events HTTP/1.1\nHost: localhost:{}\nContent-Type: application/json\nContent-Length: {}",
        server.port(),
        16 * 1024 * 1024 + 1
    );
    raw::send(&mut conn, &head, b"").await;
    let (first, _) = raw::one_answer(&mut conn).await.expect("an answer to the upload");
    assert_eq!(raw::status_of(&first), 413, "{first}");
    if first.to_ascii_lowercase().contains("connection: close") {
        return;
    }

    let next = format!("GET /health HTTP/1.1\nHost: localhost:{}", server.port());
    raw::send(&mut conn, &next, b"").await;
    let second = raw::one_answer(&mut conn).await;
    assert!(
        second.as_ref().is_some_and(|(head, _)| raw::status_of(head) == 200),
        "the 413 did not say `Connection: close`, yet the next request on the connection got {second:?}\n413 answer: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_batch_an_oversize_event_fails_alone() {
    let server = TestServer::start().await;
    let small = |seq| event("mixed", seq, "cognition.thought", json!({"content": "ok"}));
    let big: Value = serde_json::from_str(&event_of_size("mixed", 2, 70_000)).unwrap();

    for (form, (status, body)) in [
        ("array", server.post_batch(&[small(1), big.clone(), small(3)]).await),
        ("ndjson", server.post_ndjson(ndjson(&[small(4), big.clone().with("sequence", json!(5)), small(6)])).await),
    ] {
        assert_eq!(status, StatusCode::OK, "{form}: {body}");
        assert_eq!(body["ok"], false, "{form}: {body}");
        assert_eq!(body["accepted"], 2, "{form}: {body}");
        assert_eq!(body["duplicates"], 0, "{form}: {body}");
        let errors = body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{form}: {body}");
        assert_eq!(errors[0]["index"], 1, "{form}: {body}");
        assert!(errors[0]["error"].as_str().unwrap().contains("64 KiB"), "{form}: {body}");
    }
    let seqs: Vec<i64> = server.events("mixed").await.iter().map(|e| key(e).1).collect();
    assert_eq!(seqs, vec![1, 3, 4, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_content_types_are_accepted() {
    let server = TestServer::start().await;
    let cases: &[(Option<&str>, StatusCode)] = &[
        // No type is what a foreign page's no-cors fetch or sendBeacon sends: refused too.
        (None, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("application/json"), StatusCode::OK),
        (Some("application/json; charset=utf-8"), StatusCode::OK),
        (Some("Application/JSON;charset=UTF-8"), StatusCode::OK),
        (Some("text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("text/html; charset=utf-8"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("application/x-www-form-urlencoded"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("multipart/form-data; boundary=xyz"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("application/xml"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("application/octet-stream"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ];
    for (i, (content_type, want)) in cases.iter().enumerate() {
        let session = format!("ct_{i}");
        let got = server.post_body(*content_type, started(&session).to_string()).await;
        let case = format!("Content-Type {content_type:?}");
        if *want == StatusCode::OK {
            assert_eq!(got, (StatusCode::OK, json!({"ok": true})), "{case}");
        } else {
            assert_error(&case, &got, *want, "content type");
            let (status, _) = server.get_json(&format!("/sessions/{session}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{case} stored the event");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_is_acknowledged_as_a_duplicate_and_stored_once() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;
    let ev = started("retry");

    assert_eq!(server.post_event(&ev).await, (StatusCode::OK, json!({"ok": true})));
    assert_eq!(server.post_event(&ev).await, (StatusCode::OK, json!({"ok": true, "duplicate": true})));

    // Another serialisation of the same event: keys reversed, pretty-printed.
    let obj = ev.as_object().unwrap();
    let reordered: Vec<String> = obj.iter().rev().map(|(k, v)| format!("\n  {k:?} :\t{v}")).collect();
    let text = format!("{{{}\n}}\n", reordered.join(","));
    assert_eq!(
        server.post_body(Some("application/json"), text).await,
        (StatusCode::OK, json!({"ok": true, "duplicate": true}))
    );

    assert_eq!(server.events("retry").await, vec![ev.clone()]);
    assert_eq!(server.session("retry").await["event_count"], 1);
    // Streamed once: the next message after it is the next event.
    let next = event("retry", 2, "cognition.thought", json!({"content": "on"}));
    server.ingest_one(&next).await;
    assert_eq!(live.events(2).await.iter().map(Frame::json).collect::<Vec<_>>(), vec![ev, next]);
    let m = server.metrics().await;
    assert_eq!(m.get("aop_events_ingested_total"), 2.0);
    assert_eq!(m.get("aop_events_duplicate_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_event_store_it_once_and_acknowledge_all() {
    let server = TestServer::start().await;
    let ev = started("racing");
    let answers = join_all((0..12).map(|_| server.post_event(&ev))).await;

    let mut first = 0;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        match body.get("duplicate") {
            None => first += 1,
            Some(d) => assert_eq!(d, true, "{body}"),
        }
    }
    assert_eq!(first, 1, "exactly one post stores it: {answers:?}");
    assert_eq!(server.events("racing").await, vec![ev]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_under_a_taken_sequence_is_a_409_and_the_first_event_stays() {
    let server = TestServer::start().await;
    let first = started("taken");
    server.ingest_one(&first).await;

    let changes: Vec<(&str, Value)> = vec![
        ("another payload", first.clone().with("payload", json!({"goal": "other"}))),
        ("another timestamp", first.clone().at(99)),
        ("another type", first.clone().with("type", json!("cognition.thought"))),
        ("another agent", first.clone().agent("someone-else")),
        ("an extra field", first.clone().with("extra", json!(1))),
    ];
    for (case, ev) in &changes {
        let got = server.post_event(ev).await;
        assert_error(case, &got, StatusCode::CONFLICT, "sequence");
    }
    assert_eq!(server.events("taken").await, vec![first.clone()]);
    // The original is still recognised as such.
    assert_eq!(server.post_event(&first).await, (StatusCode::OK, json!({"ok": true, "duplicate": true})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_namespaced_type_is_stored_exported_and_streamed_like_a_standard_one() {
    let server = TestServer::start().await;
    let mut custom_only = server.stream("/stream?type=x-acme.*").await;
    let evs = [started("custom"), event("custom", 2, "x-acme.checkpoint", json!({"anything": [1, {"deep": true}]}))];
    server.ingest(&evs).await;

    assert_eq!(server.events("custom").await, evs.to_vec());
    let row = server.session("custom").await;
    assert_eq!((row["event_count"].clone(), row["total_steps"].clone()), (json!(2), json!(0)));
    assert_eq!(custom_only.message().await.json(), evs[1]);
    let export = server.get("/sessions/custom/export").await.text().await.unwrap();
    assert_eq!(export.lines().nth(1).map(|l| serde_json::from_str::<Value>(l).unwrap()), Some(evs[1].clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_batch_reports_each_element_by_index() {
    let server = TestServer::start().await;
    server.ingest(&[event("b", 10, "cognition.thought", json!({"content": "stored before"}))]).await;
    let batch = vec![
        event("b", 1, "session.started", json!({"goal": "g"})),
        event("b", 2, "cognition.thought", json!({})).without("type"),
        event("b", 3, "cognition.thought", json!({"content": "three"})),
        event("b", 1, "session.started", json!({"goal": "g"})),
        event("b", 3, "cognition.thought", json!({"content": "not three"})),
        json!("not an event"),
        event("b", 10, "cognition.thought", json!({"content": "stored before"})),
        event("b", 10, "cognition.thought", json!({"content": "something else"})),
    ];
    let (status, body) = server.post_batch(&batch).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["duplicates"], 2, "{body}");
    let errors: Vec<(i64, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_i64().unwrap(), e["error"].as_str().unwrap().to_owned()))
        .collect();
    let indexes: Vec<i64> = errors.iter().map(|e| e.0).collect();
    assert_eq!(indexes, vec![1, 4, 5, 7], "{body}");
    assert!(errors[0].1.contains("`type`"), "{body}");
    assert!(errors[1].1.contains("conflict"), "{body}");
    assert!(errors[2].1.contains("object"), "{body}");
    assert!(errors[3].1.contains("conflict"), "{body}");

    let stored: Vec<Value> = server.events("b").await;
    assert_eq!(stored, vec![batch[0].clone(), batch[2].clone(), batch[6].clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_batch_reports_each_line_by_index() {
    let server = TestServer::start().await;
    let good = |seq| event("nd", seq, "cognition.thought", json!({"content": format!("line {seq}")}));
    let lines = [
        good(1).to_string(),
        r#"{"spec":"aop/1.0", broken"#.to_owned(),
        good(3).with("sequence", json!(-3)).to_string(),
        good(4).to_string(),
        "[1]".to_owned(),
        good(6).to_string(),
    ];
    // CRLF line ends and no final line end: both are common in files made on other systems.
    let (status, body) = server.post_ndjson(lines.join("\r\n")).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["ok"].clone(), body["accepted"].clone(), body["duplicates"].clone()),
        (json!(false), json!(3), json!(0)),
        "{body}"
    );
    let errors = body["errors"].as_array().unwrap();
    let indexes: Vec<i64> = errors.iter().map(|e| e["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, vec![1, 2, 4], "{body}");
    assert!(errors[1]["error"].as_str().unwrap().contains("`sequence`"), "{body}");

    let seqs: Vec<i64> = server.events("nd").await.iter().map(|e| key(e).1).collect();
    assert_eq!(seqs, vec![1, 4, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_is_a_400() {
    let server = TestServer::start().await;
    for (content_type, body) in [
        ("application/json", "[]"),
        ("application/json", "  [ \n ]  "),
        ("application/x-ndjson", ""),
        ("application/x-ndjson", "\n\r\n  \n"),
    ] {
        let case = format!("{content_type} {body:?}");
        let got = server.post_body(Some(content_type), body).await;
        assert_error(&case, &got, StatusCode::BAD_REQUEST, "empty");
        assert_eq!(got.1["accepted"], 0, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_where_nothing_is_accepted_is_a_400_listing_every_error() {
    let server = TestServer::start().await;
    let batch = [started("none").without("spec"), json!(17), started("none").with("sequence", json!("x"))];
    let (status, body) = server.post_batch(&batch).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["ok"], false);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    assert_eq!(body["accepted"], 0);
    let indexes: Vec<i64> = body["errors"].as_array().unwrap().iter().map(|e| e["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, vec![0, 1, 2]);
    assert_eq!(server.sessions("").await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_only_duplicates_is_acknowledged_with_200() {
    let server = TestServer::start().await;
    let batch: Vec<Value> = (1..=3).map(|i| event("again", i, "cognition.thought", json!({"i": i}))).collect();
    let (status, body) = server.post_batch(&batch).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"ok": true, "accepted": 3, "duplicates": 0, "errors": []})));

    for (status, body) in [server.post_batch(&batch).await, server.post_ndjson(ndjson(&batch)).await] {
        assert_eq!((status, body), (StatusCode::OK, json!({"ok": true, "accepted": 0, "duplicates": 3, "errors": []})));
    }
    assert_eq!(server.events("again").await, batch);
}

/// An event as a person would type it: indented, CRLF line ends, escapes, non-ASCII text.
const PRETTY: &str = "{\r\n\t\"spec\" : \"aop/1.0\",\r\n\t\"session_id\" : \"pretty\",\r\n\t\"agent_id\" : \"typist\",\r\n\t\"sequence\" : 1,\r\n\t\"timestamp\" : \"2026-04-03T10:00:00.000Z\",\r\n\t\"type\" : \"cognition.thought\",\r\n\t\"payload\" : {\r\n\t\t\"content\" : \"two  spaces,\\ta tab,\\nand a newline\",\r\n\t\t\"escapes\" : \"caf\\u00e9 \\\"quoted\\\" back\\\\slash \\/\",\r\n\t\t\"text\" : \"ünïcødé ✓ 🚀\",\r\n\t\t\"list\" : [ 1 , 2.5 , -0.001 , null , true , { } , [ ] ]\r\n\t}\r\n}\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pretty_printed_event_is_stored_on_one_line_and_round_trips_everywhere() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;
    let sent: Value = serde_json::from_str(PRETTY).unwrap();
    assert_eq!(server.post_body(Some("application/json"), PRETTY).await, (StatusCode::OK, json!({"ok": true})));

    assert_eq!(server.events("pretty").await, vec![sent.clone()], "detail");

    let export = server.get("/sessions/pretty/export").await.text().await.unwrap();
    assert_eq!(export.matches('\n').count(), 1, "one line: {export:?}");
    assert_eq!(serde_json::from_str::<Value>(export.trim_end()).unwrap(), sent, "export");

    let frame = live.message().await;
    assert_eq!(frame.data_lines, 1, "one data line: {frame:?}");
    assert_eq!(frame.json(), sent, "stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pretty_printed_batch_stores_each_event_on_its_own_line() {
    let server = TestServer::start().await;
    let batch: Vec<Value> = (1..=4)
        .map(|i| event("pp", i, "cognition.thought", json!({"content": format!("line\n{i}"), "nested": {"a": [i]}})))
        .collect();
    let (status, body) =
        server.post_body(Some("application/json"), serde_json::to_string_pretty(&batch).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 4);

    let export = server.get("/sessions/pp/export").await.text().await.unwrap();
    let lines: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, batch);
}

// ------------------------------------------------------------------------ properties

/// Arbitrary JSON, with a bias towards values that are almost valid envelope fields.
///
/// Fractions are multiples of 1/8: serde_json (without its `float_roundtrip` feature) may read
/// other decimals back one bit off, which would make the comparison, not the collector, fail.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-8_000_000i64..8_000_000).prop_map(|n| Value::from(n as f64 / 8.0)),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            json!("aop/1.0"),
            json!("aop/1.9"),
            json!("2026-04-03T10:00:00Z"),
            json!("sess_1"),
            json!("operation.tool_end"),
            json!(0),
            json!(-1),
            json!(2.0),
            json!({}),
        ]),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "spec",
    "session_id",
    "parent_session_id",
    "agent_id",
    "agent_version",
    "sequence",
    "timestamp",
    "type",
    "payload",
    "extra",
];

/// A valid event with one to three fields replaced by arbitrary JSON or removed.
fn mutated_event() -> impl Strategy<Value = Value> {
    let mutation = (prop::sample::select(FIELDS), prop::option::of(any_json()));
    (0i64..4, prop::collection::vec(mutation, 1..4)).prop_map(|(seq, mutations)| {
        let mut ev = event("prop", seq, "cognition.thought", json!({"content": "c"}));
        for (field, value) in mutations {
            ev = match value {
                Some(v) => ev.with(field, v),
                None => ev.without(field),
            };
        }
        ev
    })
}

/// Whatever is posted, the answer is one of the documented ones, and a 200 means the event is
/// served back exactly as sent.
#[test]
fn no_body_breaks_ingest_and_every_acknowledged_event_is_served_back() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(TestServer::start());
    let config = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };

    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&mutated_event(), |ev| {
            rt.block_on(async {
                let (status, body) = server.post_event(&ev).await;
                let allowed = [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::CONFLICT];
                prop_assert!(allowed.contains(&status), "{status} {body} for {ev}");
                prop_assert_eq!(body["ok"].as_bool(), Some(status == StatusCode::OK), "{}", body);
                if status != StatusCode::OK {
                    prop_assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", body);
                    return Ok(());
                }
                let session = ev["session_id"].as_str().unwrap();
                if session.chars().all(|c| c == '.') {
                    return Ok(()); // `.` and `..` are valid ids that no URL can name
                }
                let seq = ev["sequence"].as_f64().unwrap();
                let stored = server.events(session).await;
                let found = stored.iter().find(|e| e["sequence"].as_f64() == Some(seq));
                prop_assert_eq!(found, Some(&ev));
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();

    let mut runner = TestRunner::new(config);
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
            rt.block_on(async {
                let (status, body) = server.post_body(Some("application/json"), bytes).await;
                prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", body);
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();

    assert_eq!(rt.block_on(server.health())["ok"], true);
}

/// `.` and `..` are dot segments: a browser resolves `/sessions/../export` to `/export`, so such a
/// session could be neither exported nor deleted from the dashboard. They are refused at ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_session_ids_are_refused() {
    let server = TestServer::start().await;
    for id in [".", ".."] {
        for field in ["session_id", "parent_session_id"] {
            let mut ev = event("fine", 1, "session.started", json!({}));
            ev[field] = json!(id);
            let got = server.post_event(&ev).await;
            assert_error(&format!("{field} {id:?}"), &got, StatusCode::BAD_REQUEST, field);
        }
    }
    assert_eq!(server.sessions("").await, Vec::<Value>::new());
    server.ingest_one(&event("...", 1, "session.started", json!({}))).await;
    assert_eq!(server.session("...").await["id"], "...");
}

/// What ingest requests hold in memory at once is bounded: 32 bodies of 16 MiB held open (their
/// last byte never sent) fill the 512 MiB budget, and then even a one-event request is told to
/// retry later — at once, not after waiting — while the collector's memory stays near the
/// budget. When the bodies' clients leave, the budget comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_hold_at_most_the_ingest_budget() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let before = server.rss_bytes();
    let size = 16 << 20;
    let filler = vec![b'x'; size];
    let in_flight = |m: &Metrics| m.0.get("aop_ingest_bytes_in_flight").copied().unwrap_or(0.0) as usize;
    let mut held = Vec::new();
    for i in 1..=32 {
        let mut conn = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
        let head = format!(
            "POST /events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: {size}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.expect("headers");
        conn.write_all(&filler[..size - 1]).await.expect("all of the body but its last byte");
        held.push(conn);
        eventually("the body to be held", || async { (in_flight(&server.metrics().await) >= i * size).then_some(()) })
            .await;
    }
    let (status, headers, body) = TestServer::send_json(
        server
            .request(reqwest::Method::POST, "/events")
            .header("content-type", "application/json")
            .body(serde_json::to_string(&started("small")).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(body["error"].as_str().is_some_and(|e| e.contains("retry")), "{body}");
    let grown = server.peak_rss_bytes().saturating_sub(before);
    println!(
        "32 held bodies of 16 MiB: in flight {} MiB, the collector grew {} MiB",
        in_flight(&server.metrics().await) >> 20,
        grown >> 20
    );
    assert!(grown < 700 << 20, "the collector grew {} MiB", grown >> 20);

    drop(held);
    eventually("the budget to come back", || async {
        let (status, _) = server.post_event(&started("small")).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    eventually("every held body to be let go", || async { (in_flight(&server.metrics().await) == 0).then_some(()) })
        .await;
}

/// A batch of a million bad lines is answered with the first thousand errors and a count of the
/// rest, not a million messages (which took gigabytes to build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_bad_lines_lists_a_thousand_errors_and_counts_the_rest() {
    let server = TestServer::start().await;
    let before = server.rss_bytes();
    let body = "x\n".repeat(8 << 20);
    let (status, answer) = server.post_ndjson(body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let errors = answer["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1000);
    assert_eq!(errors[0]["index"], 0);
    assert_eq!(errors[999]["index"], 999);
    assert_eq!(answer["errors_omitted"], (8 << 20) - 1000);
    assert_eq!(answer["accepted"], 0);
    // An array of as many tiny elements, and a mix where the good are stored.
    let mut array = String::from("[");
    array.push_str(&"1,".repeat(4 << 20));
    array.push_str(&serde_json::to_string(&started("among-many")).unwrap());
    array.push(']');
    let (status, _, answer) = TestServer::send_json(
        server.request(reqwest::Method::POST, "/events").header("content-type", "application/json").body(array),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["errors_omitted"].as_u64()), (Some(1), Some((4 << 20) - 1000)));
    let grown = server.peak_rss_bytes().saturating_sub(before);
    println!("8 Mi bad lines and a 4 Mi-element array: the collector grew {} MiB", grown >> 20);
    assert!(grown < 256 << 20, "the collector grew {} MiB", grown >> 20);
}
