//! Comparing runs over HTTP: `GET /sessions/:id/compare/:other` and `GET /sessions/:id/similar`,
//! on SQLite and on PostgreSQL, and sessions of 100 000 events.

use crate::support::pg::Pg;
use crate::support::resources::rss_bytes;
use crate::support::{event, ndjson, EventExt, Launch, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

const GOAL: &str = "Find the Rust async book";

/// A run that works: search, fetch, answer.
fn good_run(id: &str) -> Vec<Value> {
    let mut seq = 0;
    let mut next = |kind: &str, payload: Value| {
        seq += 1;
        event(id, seq, kind, payload)
    };
    vec![
        next("session.started", json!({"goal": GOAL})),
        next("cognition.thought", json!({"content": "I will search for the book first"})),
        next("operation.tool_start", json!({"tool": "search", "input": {"q": "rust async book"}})),
        next("operation.tool_end", json!({"tool": "search", "success": true, "output_summary": "3 results"})),
        next(
            "operation.tool_start",
            json!({"tool": "fetch", "input": {"url": "https://rust-lang.github.io/async-book/"}}),
        ),
        next("operation.tool_end", json!({"tool": "fetch", "success": true, "output_summary": "the book's contents"})),
        next("session.heartbeat", json!({"status": "running"})),
        next("cognition.decision", json!({"decision": "answer with the book's URL"})),
        next("session.ended", json!({"outcome": "completed", "outcome_summary": "found it"})),
    ]
}

/// The same start, then the search times out and the agent retries it, identically, until it
/// gives up: a loop.
fn failed_run(id: &str) -> Vec<Value> {
    let mut seq = 0;
    let mut next = |kind: &str, payload: Value| {
        seq += 1;
        event(id, seq, kind, payload)
    };
    let mut events = vec![
        next("session.started", json!({"goal": GOAL})),
        next("cognition.thought", json!({"content": "I will search for the book first"})),
    ];
    for _ in 0..5 {
        events.push(next("operation.tool_start", json!({"tool": "search", "input": {"q": "rust async book"}})));
        events.push(next("operation.tool_end", json!({"tool": "search", "success": false, "error": "timeout"})));
    }
    events.push(next("session.ended", json!({"outcome": "failed", "error_message": "search kept timing out"})));
    events
}

/// Alerts of a session by type, as `/alerts` lists them.
async fn alerts_by_type(server: &TestServer, id: &str) -> BTreeMap<String, i64> {
    let page = server.get_ok(&format!("/alerts?session_id={id}&limit=1000")).await;
    let mut out = BTreeMap::new();
    for a in page["alerts"].as_array().expect("alerts") {
        *out.entry(a["type"].as_str().expect("type").to_owned()).or_default() += 1;
    }
    out
}

/// A step as `(kind, a_sequence, b_sequence)`.
type Step = (String, Value, Value);

fn kinds(steps: &Value) -> Vec<Step> {
    steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["kind"].as_str().expect("kind").to_owned(), s["a_sequence"].clone(), s["b_sequence"].clone()))
        .collect()
}

/// Within each stretch of one-sided steps, the first run's listed first (as the API lists them).
fn a_first(mut steps: Vec<Step>) -> Vec<Step> {
    let one_sided = |s: &Step| s.0.starts_with("only_");
    let mut start = 0;
    while start < steps.len() {
        let end = start + steps[start..].iter().take_while(|s| one_sided(s)).count();
        steps[start..end].sort_by_key(|s| s.0 == "only_b");
        start = end.max(start + 1);
    }
    steps
}

async fn a_failed_run_compared_with_a_good_one(server: &TestServer) {
    server.import(&good_run("good")).await;
    server.import(&failed_run("bad")).await;

    let c = server.get_ok("/sessions/bad/compare/good").await;
    assert_eq!(c["a"]["id"], "bad");
    assert_eq!(c["b"]["id"], "good");
    assert_eq!(c["a"]["status"], "failed");

    let k = |kind: &str, a: Option<i64>, b: Option<i64>| (kind.to_owned(), json!(a), json!(b));
    let mut want = vec![
        k("same", Some(1), Some(1)),
        k("same", Some(2), Some(2)),
        k("same", Some(3), Some(3)),
        k("changed", Some(4), Some(4)),
    ];
    want.extend((5..=12).map(|s| k("only_a", Some(s), None)));
    // The good run's heartbeat (7) is not a step.
    want.extend([5, 6, 8].map(|s| k("only_b", None, Some(s))));
    want.push(k("changed", Some(13), Some(9)));
    assert_eq!(kinds(&c["steps"]), want, "{:#}", c["steps"]);
    assert_eq!(c["first_divergence"], json!({"index": 3, "a_sequence": 4, "b_sequence": 4}));
    let diverged = &c["steps"][3];
    assert_eq!(diverged["type"], "operation.tool_end");
    assert_eq!(diverged["a_summary"], "search → failed: timeout");
    assert_eq!(diverged["b_summary"], "search → ok: 3 results");

    let d = &c["deltas"];
    assert_eq!(d["duration_ms"], json!({"a": 12_000, "b": 8_000, "delta": -4_000}));
    assert_eq!(d["tool_calls"], json!({"a": 5, "b": 2, "delta": -3}));
    assert_eq!(d["failed_tool_calls"], json!({"a": 5, "b": 0, "delta": -5}));
    let stored = alerts_by_type(server, "bad").await;
    assert!(stored.contains_key("loop"), "the failed run loops: {stored:?}");
    assert!(alerts_by_type(server, "good").await.is_empty());
    let alerts: BTreeMap<String, Value> = serde_json::from_value(d["alerts"].clone()).expect("alerts by type");
    assert_eq!(alerts.keys().collect::<Vec<_>>(), stored.keys().collect::<Vec<_>>());
    for (kind, n) in &stored {
        assert_eq!(alerts[kind], json!({"a": n, "b": 0, "delta": -n}), "{kind}");
    }

    // The other way round, only_a and only_b trade places.
    let r = server.get_ok("/sessions/good/compare/bad").await;
    let swapped: Vec<Step> = kinds(&c["steps"])
        .into_iter()
        .map(|(kind, a, b)| {
            let kind = match kind.as_str() {
                "only_a" => "only_b".to_owned(),
                "only_b" => "only_a".to_owned(),
                _ => kind,
            };
            (kind, b, a)
        })
        .collect();
    assert_eq!(kinds(&r["steps"]), a_first(swapped));
    assert_eq!(r["first_divergence"], json!({"index": 3, "a_sequence": 4, "b_sequence": 4}));

    // A run compared with itself does the same.
    let same = server.get_ok("/sessions/good/compare/good").await;
    assert_eq!(same["first_divergence"], Value::Null);
    assert!(kinds(&same["steps"]).iter().all(|(kind, ..)| kind == "same"));

    for path in ["/sessions/bad/compare/nope", "/sessions/nope/compare/bad"] {
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body["error"].as_str().expect("error").contains("nope"), "{body}");
    }
}

async fn the_best_counterpart_is_similar_first(server: &TestServer) {
    let stamped = |events: Vec<Value>, offset: i64| -> Vec<Value> {
        events
            .into_iter()
            .map(|e| {
                let s = e["sequence"].as_i64().expect("sequence");
                e.at(offset + s)
            })
            .collect()
    };
    // Most recent last: event times say which run is newer.
    server.import(&stamped(good_run("ok-old"), 0)).await;
    server.import(&stamped(good_run("ok-new"), 1_000)).await;
    let mut elsewhere = good_run("other-agent");
    elsewhere.iter_mut().for_each(|e| e["agent_id"] = json!("someone-else"));
    server.import(&stamped(elsewhere, 3_000)).await;
    let mut unrelated = good_run("unrelated");
    unrelated[0]["payload"]["goal"] = json!("Book a flight to Lisbon");
    server.import(&stamped(unrelated, 4_000)).await;
    server.import(&stamped(failed_run("failed-again"), 5_000)).await;
    server.import(&stamped(failed_run("failed"), 6_000)).await;

    let similar = server.get_ok("/sessions/failed/similar").await;
    let ids: Vec<&str> =
        similar["sessions"].as_array().expect("sessions").iter().map(|s| s["id"].as_str().expect("id")).collect();
    assert_eq!(ids, ["ok-new", "ok-old", "failed-again", "unrelated"]);
    let one = server.get_ok("/sessions/failed/similar?limit=1").await;
    assert_eq!(one["sessions"].as_array().map(Vec::len), Some(1));
    let (status, _) = server.get_json("/sessions/nope/similar").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get_json("/sessions/failed/similar?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn compare_and_similar_on_sqlite() {
    let server = TestServer::start().await;
    a_failed_run_compared_with_a_good_one(&server).await;
    let server = TestServer::start().await;
    the_best_counterpart_is_similar_first(&server).await;
}

#[tokio::test]
async fn compare_and_similar_on_postgres() {
    let pg = Pg::shared();
    let server = Launch::new().db(pg.create_db()).start().await;
    a_failed_run_compared_with_a_good_one(&server).await;
    let server = Launch::new().db(pg.create_db()).start().await;
    the_best_counterpart_is_similar_first(&server).await;
}

/// A long run: `calls` tool calls between a start and an end; `input(k)` and `output(k)` say what
/// call `k` did.
fn long_run(id: &str, calls: i64, input: impl Fn(i64) -> Value, output: impl Fn(i64) -> String) -> Vec<Value> {
    let mut events = vec![event(id, 1, "session.started", json!({"goal": "index the corpus"}))];
    for k in 0..calls {
        events.push(event(id, 2 + 2 * k, "operation.tool_start", json!({"tool": "read", "input": input(k)})).at(2));
        events.push(
            event(
                id,
                3 + 2 * k,
                "operation.tool_end",
                json!({"tool": "read", "success": true, "output_summary": output(k)}),
            )
            .at(3),
        );
    }
    events.push(event(id, 2 + 2 * calls, "session.ended", json!({"outcome": "completed"})).at(4));
    events
}

async fn import_chunked(server: &TestServer, events: &[Value]) {
    for chunk in events.chunks(10_000) {
        let (status, body) = server.post_ndjson(ndjson(chunk)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Sessions of 100 000 events compare in bounded time and memory, the divergence found exactly;
/// past the documented limit the answer is a clear 422, and the collector goes on.
#[tokio::test]
async fn sessions_of_100_000_events_compare_and_larger_ones_are_refused() {
    let server = TestServer::start().await;
    let calls = 49_999; // 100 000 events with the start and the end
    let a = long_run("long-a", calls, |k| json!({"doc": k}), |k| format!("{} words", k % 500));
    // The same run, but call 25 000 read something else, and ten calls more were made at 35 000.
    let mut b = long_run(
        "long-b",
        calls,
        |k| json!({"doc": k}),
        |k| {
            if k == 25_000 {
                "read error".to_owned()
            } else {
                format!("{} words", k % 500)
            }
        },
    );
    let extra: Vec<Value> = (0..10)
        .flat_map(|j| {
            [
                event(
                    "long-b",
                    0,
                    "operation.tool_start",
                    json!({"tool": "read", "input": {"doc": format!("extra-{j}")}}),
                ),
                event(
                    "long-b",
                    0,
                    "operation.tool_end",
                    json!({"tool": "read", "success": true, "output_summary": "extra"}),
                ),
            ]
        })
        .collect();
    let at = 2 + 2 * 35_000;
    b.splice(at as usize - 1..at as usize - 1, extra);
    for (k, e) in b.iter_mut().enumerate() {
        e["sequence"] = json!(k + 1);
    }
    // Wholly different calls from the start: the aligner's worst case.
    let c = long_run("long-c", calls, |k| json!({"other": k}), |_| "nothing".to_owned());
    import_chunked(&server, &a).await;
    import_chunked(&server, &b).await;
    import_chunked(&server, &c).await;

    let t = Instant::now();
    let ab = server.get_ok("/sessions/long-a/compare/long-b").await;
    println!("compare 100k vs 100k events, nearly the same: {:?}", t.elapsed());
    let divergence_seq = 3 + 2 * 25_000;
    assert_eq!(
        ab["first_divergence"],
        json!({"index": divergence_seq - 1, "a_sequence": divergence_seq, "b_sequence": divergence_seq})
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, ..) in kinds(&ab["steps"]) {
        *counts.entry(kind).or_default() += 1;
    }
    assert_eq!(counts.get("changed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("only_b"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("only_a"), None, "{counts:?}");
    assert_eq!(counts.get("same"), Some(&(a.len() - 1)), "{counts:?}");

    let t = Instant::now();
    let ac = server.get_ok("/sessions/long-a/compare/long-c").await;
    println!("compare 100k vs 100k events, different from the second step: {:?}", t.elapsed());
    assert_eq!(ac["first_divergence"]["index"], 1);
    let steps = ac["steps"].as_array().expect("steps");
    let a_seen = steps.iter().filter(|s| s["a_sequence"].is_i64()).count();
    let c_seen = steps.iter().filter(|s| s["b_sequence"].is_i64()).count();
    assert_eq!((a_seen, c_seen), (a.len(), c.len()), "every event of each side is in the alignment once");
    let rss = rss_bytes(server.pid());
    println!("collector's resident memory after the comparisons: {} MiB", rss >> 20);
    assert!(rss < 1 << 30, "the collector holds {} MiB", rss >> 20);

    // One event over the limit: refused before anything is read.
    let limit = 250_000;
    let huge: Vec<Value> =
        (1..=limit + 1).map(|k| event("huge", k, "cognition.thought", json!({"content": "hm"})).at(5)).collect();
    import_chunked(&server, &huge).await;
    let (status, body) = server.get_json("/sessions/huge/compare/long-a").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"].as_str().expect("error");
    assert!(message.contains("huge") && message.contains("250000"), "{message}");
    server.get_ok("/health").await;
}

/// Comparisons nobody reads: each holds its answer and its slot until its client has taken it,
/// so no more than four are ever held at once, however many clients ask and stall; and a
/// comparison with a missing side is refused before anything is read, even then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparisons_nobody_reads_hold_their_slot_and_bounded_memory() {
    let server = TestServer::start().await;
    // Two runs of 40,000 calls that differ everywhere: an answer of about 20 MiB, more than the
    // connection's buffers can take from a client that reads nothing.
    let calls = 40_000;
    let a = long_run("stall-a", calls, |k| json!({"page": k}), |k| format!("page {k} of the first run"));
    let b = long_run("stall-b", calls, |k| json!({"other": k}), |k| format!("another page, {k}"));
    import_chunked(&server, &a).await;
    import_chunked(&server, &b).await;
    let path = "/sessions/stall-a/compare/stall-b";
    let answer = server.get(path).await.bytes().await.expect("a comparison");
    println!("one comparison's answer: {} KiB", answer.len() >> 10);

    let before = server.rss_bytes();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(crate::support::raw::sluggish_get(server.addr(), path).await);
    }
    // Each holds a slot from its first read to its answer's last byte: four are answered, the
    // others told to come back.
    let mut served = 0;
    for conn in &mut stalled {
        let mut status = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(conn, &mut status).await.expect("an answer");
        match &status {
            b"HTTP/1.1 200" => served += 1,
            b"HTTP/1.1 503" => {}
            other => panic!("unexpected answer {:?}", String::from_utf8_lossy(other)),
        }
    }
    assert_eq!(served, 4, "only four comparisons may be held at once");
    let mut peak = before;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        peak = peak.max(server.rss_bytes());
    }
    let grown = peak.saturating_sub(before);
    println!("8 stalled comparisons ({served} served): RSS grew by {} MiB", grown >> 20);
    // Four answers held, and what making four comparisons at once took (both runs' steps and the
    // alignment, freed but not all given back to the system: the allocator's per-thread arenas
    // keep some, more on a loaded machine, where 235-260 MiB in all was seen). Holding all eight,
    // or making them all at once, would take 430 MiB and more.
    assert!(
        grown < 8 * answer.len() as u64 + (192 << 20),
        "stalled comparisons grew the collector by {} MiB",
        grown >> 20
    );
    let (status, body) = server.get_json(path).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // A missing side is a 404, not a 503, while every slot is taken: it is looked up first.
    for missing in ["/sessions/stall-a/compare/nobody", "/sessions/nobody/compare/stall-b"] {
        let (status, body) = server.get_json(missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("nobody")), "{body}");
    }

    // A client that leaves gives its slot back.
    drop(stalled);
    let resp = crate::support::eventually("a comparison slot to free up", || async {
        let resp = server.get(path).await;
        (resp.status() == StatusCode::OK).then_some(resp)
    })
    .await;
    assert_eq!(resp.bytes().await.expect("the answer").len(), answer.len());
}

/// A client that stops reading an answer is cut off after 30 s, and its slot and answer freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_whose_reader_stops_is_cut_off() {
    let server = TestServer::start().await;
    let calls = 40_000;
    let a = long_run("idle-a", calls, |k| json!({"page": k}), |k| format!("page {k} of the first run"));
    let b = long_run("idle-b", calls, |k| json!({"other": k}), |k| format!("another page, {k}"));
    import_chunked(&server, &a).await;
    import_chunked(&server, &b).await;
    let path = "/sessions/idle-a/compare/idle-b";
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(crate::support::raw::sluggish_get(server.addr(), path).await);
    }
    for conn in &mut stalled {
        let mut status = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(conn, &mut status).await.expect("an answer");
        assert_eq!(&status, b"HTTP/1.1 200");
    }
    assert_eq!(server.get(path).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    let started = Instant::now();
    // The stalled clients stay connected but read nothing: after the idle limit their slots
    // come back without their leaving.
    let resp = loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let resp = server.get(path).await;
        if resp.status() == StatusCode::OK {
            break resp;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(90), "idle readers were never cut off");
    };
    println!("a slot came back {:?} after the readers stopped", started.elapsed());
    assert!(resp.bytes().await.is_ok());
    // What an idle reader gets: the answer's start, then the connection closed before its end.
    let mut got = Vec::new();
    let mut conn = stalled.pop().unwrap();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut got),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(!text.trim_end().ends_with("0\r\n\r\n"), "the cut-off answer must not look complete");
}
