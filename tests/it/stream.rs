//! `GET /stream`: framing, order, resumption, filters, and what happens to slow subscribers.

use crate::support::*;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn thought(session: &str, seq: i64) -> Value {
    event(session, seq, "cognition.thought", json!({"content": format!("{session} #{seq}")}))
}

fn keys(frames: &[Frame]) -> Vec<(String, i64)> {
    frames.iter().map(Frame::key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stored_event_is_one_id_line_and_one_data_line_holding_the_stored_json() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;
    assert_eq!(live.headers["content-type"], "text/event-stream");
    assert_eq!(live.headers["cache-control"], "no-cache");

    let sent: Vec<Value> = (1..=5).map(|i| thought("framed", i)).collect();
    server.ingest(&sent[..3]).await;
    server.import(&sent[3..]).await;
    let frames = live.events(5).await;

    let export = server.get("/sessions/framed/export").await.text().await.unwrap();
    let stored: Vec<&str> = export.lines().collect();
    let mut last_id = 0;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.raw, format!("id: {}\ndata: {}", f.id(), stored[i]), "frame {i} is not `id` + one `data` line");
        assert!(f.id() > last_id, "ids must increase: {} after {last_id}", f.id());
        last_id = f.id();
        assert_eq!(f.json(), sent[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_follows_the_store_order_even_with_concurrent_posters() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;

    join_all((0..4).map(|p| {
        let server = &server;
        async move {
            let session = format!("poster_{p}");
            for seq in 1..=30 {
                server.ingest(&[thought(&session, seq)]).await;
            }
            let batch: Vec<Value> = (31..=40).map(|seq| thought(&session, seq)).collect();
            server.import(&batch).await;
        }
    }))
    .await;

    let frames = live.events(160).await;
    let ids: Vec<i64> = frames.iter().map(Frame::id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order: {ids:?}");
    for p in 0..4 {
        let session = format!("poster_{p}");
        let seqs: Vec<i64> = keys(&frames).into_iter().filter(|(s, _)| *s == session).map(|(_, q)| q).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "{session}: each poster waited for its acks");
    }
    // What the store replays is what was sent live: same ids, same bytes, same order.
    let mut replay = server.stream("/stream?since=0").await;
    let replayed = replay.events(160).await;
    let pairs = |fs: &[Frame]| fs.iter().map(|f| (f.id(), f.data.clone())).collect::<Vec<_>>();
    assert_eq!(pairs(&replayed), pairs(&frames));
}

/// How a client says where it stopped.
#[derive(Debug, Clone, Copy)]
enum Resume {
    Header,
    Query,
    /// Both, with a stale `since`: the header must win.
    HeaderOverQuery,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_replays_exactly_what_was_missed_then_goes_live() {
    let server = TestServer::start().await;
    for how in [Resume::Header, Resume::Query, Resume::HeaderOverQuery] {
        let s = format!("{how:?}");
        let mut first = server.stream("/stream").await;
        server.ingest(&(1..=3).map(|i| thought(&s, i)).collect::<Vec<_>>()).await;
        let seen = first.events(3).await;
        let last = seen[2].id().to_string();
        drop(first);

        let missed: Vec<Value> = (4..=6).map(|i| thought(&s, i)).collect();
        server.ingest(&missed).await;

        let mut again = match how {
            Resume::Header => server.stream_with("/stream", &[("Last-Event-ID", &last)]).await,
            Resume::Query => server.stream(&format!("/stream?since={last}")).await,
            Resume::HeaderOverQuery => server.stream_with("/stream?since=0", &[("Last-Event-ID", &last)]).await,
        };
        let replayed = again.events(3).await;
        assert_eq!(replayed.iter().map(Frame::json).collect::<Vec<_>>(), missed, "{how:?}");
        let live = thought(&s, 7);
        server.ingest_one(&live).await;
        let next = again.message().await;
        assert_eq!(next.json(), live, "{how:?}: after the replay, the live feed");
        assert!(next.id() > replayed[2].id(), "{how:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_while_events_keep_arriving_loses_and_repeats_nothing() {
    let server = Arc::new(TestServer::start().await);
    let mut live = server.stream("/stream").await;
    let acked = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (server, acked) = (Arc::clone(&server), Arc::clone(&acked));
        tokio::spawn(async move {
            for seq in 1..=300 {
                server.ingest(&[thought("busy", seq)]).await;
                acked.store(seq as usize, Ordering::SeqCst);
            }
        })
    };

    let head = live.events(50).await;
    let mut from_50 = server.stream_with("/stream", &[("Last-Event-ID", &head[49].id().to_string())]).await;
    eventually("100 acknowledged events", || {
        let acked = Arc::clone(&acked);
        async move { (acked.load(Ordering::SeqCst) >= 100).then_some(()) }
    })
    .await;
    let mut from_start = server.stream("/stream?since=0").await;
    poster.await.unwrap();

    let mut all = head;
    all.extend(live.events(250).await);
    let pairs = |fs: &[Frame]| fs.iter().map(|f| (f.id(), f.data.clone().unwrap())).collect::<Vec<_>>();
    assert_eq!(keys(&all), (1..=300).map(|i| ("busy".to_owned(), i)).collect::<Vec<_>>());
    assert_eq!(pairs(&from_start.events(300).await), pairs(&all), "resumed from the start");
    assert_eq!(pairs(&from_50.events(250).await), pairs(&all[50..]), "resumed from the 50th");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_spanning_many_pages_of_backlog_is_complete_and_filtered() {
    let server = TestServer::start().await;
    let events: Vec<Value> = (1..=2500).map(|i| thought(if i % 5 == 0 { "fifth" } else { "rest" }, i)).collect();
    server.import(&events).await;

    let mut everything = server.stream("/stream?since=0").await;
    let got: Vec<Value> = everything.events(2500).await.iter().map(Frame::json).collect();
    assert_eq!(got, events);
    let mut fifths = server.stream("/stream?since=0&session_id=fifth").await;
    let got: Vec<(String, i64)> = keys(&fifths.events(500).await);
    assert_eq!(got, (1..=500).map(|i| ("fifth".to_owned(), i * 5)).collect::<Vec<_>>());

    let live = thought("fifth", 5000);
    server.ingest_one(&live).await;
    assert_eq!(fifths.message().await.json(), live);
    assert_eq!(everything.message().await.json(), live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_events_by_session_agent_and_type() {
    let server = TestServer::start().await;
    let mix = vec![
        event("s1", 1, "session.started", json!({})).agent("agent-a"),
        event("s2", 1, "session.started", json!({})).agent("agent-b"),
        event("s1", 2, "cognition.thought", json!({})).agent("agent-a"),
        event("s2", 2, "x-acme.checkpoint", json!({})).agent("agent-b"),
        event("s1", 3, "operation.tool_start", json!({"tool": "t"})).agent("agent-a"),
        event("s3", 1, "operation.memory", json!({"operation": "read"})).agent("agent-b"),
        event("s1", 4, "operation.tool_end", json!({"tool": "t", "success": true})).agent("agent-a"),
        event("s2", 3, "operation.tool_end", json!({"tool": "t", "success": true})).agent("agent-b"),
        // The last two match most filters, so a wrongly passed event earlier shows up as a mismatch.
        event("s1", 5, "operation.tool_end", json!({"tool": "t", "success": true})).agent("agent-b"),
        event("s2", 4, "x-acme.done", json!({})).agent("agent-b"),
    ];
    let cases: &[(&str, &[(&str, i64)])] = &[
        ("session_id=s1", &[("s1", 1), ("s1", 2), ("s1", 3), ("s1", 4), ("s1", 5)]),
        ("agent_id=agent-b", &[("s2", 1), ("s2", 2), ("s3", 1), ("s2", 3), ("s1", 5), ("s2", 4)]),
        ("type=operation.tool_end", &[("s1", 4), ("s2", 3), ("s1", 5)]),
        ("type=operation.*", &[("s1", 3), ("s3", 1), ("s1", 4), ("s2", 3), ("s1", 5)]),
        ("type=x-acme.*", &[("s2", 2), ("s2", 4)]),
        ("type=session.started", &[("s1", 1), ("s2", 1)]),
        ("session_id=s1&type=operation.*", &[("s1", 3), ("s1", 4), ("s1", 5)]),
        ("agent_id=agent-b&type=operation.*", &[("s3", 1), ("s2", 3), ("s1", 5)]),
    ];
    let mut streams = Vec::new();
    for (query, _) in cases {
        streams.push(server.stream(&format!("/stream?{query}")).await);
    }
    server.ingest(&mix).await;

    for ((query, want), stream) in cases.iter().zip(&mut streams) {
        let got = keys(&stream.events(want.len()).await);
        let want: Vec<(String, i64)> = want.iter().map(|(s, q)| (s.to_string(), *q)).collect();
        assert_eq!(got, want, "?{query}");
    }
    // The replay applies the same filters.
    for (query, want) in cases {
        let mut replay = server.stream(&format!("/stream?since=0&{query}")).await;
        let got = keys(&replay.events(want.len()).await);
        let want: Vec<(String, i64)> = want.iter().map(|(s, q)| (s.to_string(), *q)).collect();
        assert_eq!(got, want, "?since=0&{query}");
    }

    // A type filter narrows AOP events only: a deletion of a matching session still comes through.
    server.delete("/sessions/s1").await;
    for (i, (query, _)) in cases.iter().enumerate() {
        if query.starts_with("type=") || query.starts_with("session_id=s1") {
            let m = streams[i].message().await;
            assert_eq!(m.event.as_deref(), Some("session.deleted"), "?{query}: {m:?}");
            assert_eq!(m.json(), json!({"session_id": "s1"}), "?{query}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_never_streamed() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;
    let a = thought("r", 1);
    server.ingest_one(&a).await;

    let (status, _) = server.post_event(&thought("r", 2).with("sequence", json!("two"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.post_event(&thought("r", 1).with("payload", json!({"content": "other"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = server.post_event(&a).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"ok": true, "duplicate": true})));
    let (status, _) = server.post_event(&thought("r", 3).with("payload", json!({"pad": "x".repeat(70_000)}))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let b = thought("r", 5);
    let (status, body) = server.post_batch(&[thought("r", 4).without("timestamp"), b.clone(), a.clone()]).await;
    assert_eq!((status, body["accepted"].clone()), (StatusCode::OK, json!(1)), "{body}");
    let sentinel = thought("r", 6);
    server.ingest_one(&sentinel).await;

    let got: Vec<Value> = live.events(3).await.iter().map(Frame::json).collect();
    assert_eq!(got, vec![a, b, sentinel]);
}

/// Splits a decoded SSE body into frames.
fn frames_of(body: &[u8]) -> Vec<Frame> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n").filter(|b| !b.is_empty()).map(Frame::parse).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_and_resumes_while_ingest_keeps_succeeding() {
    let server = Launch::new().args(["--stream-buffer", "16", "--durability", "normal"]).start().await;
    let mut reader = server.stream("/stream").await;
    let mut sluggish = raw::sluggish_get(server.addr(), "/stream").await;
    eventually("both subscriptions open", || async { (server.health().await["subscribers"] == 2).then_some(()) }).await;

    // Big events fill the socket buffers quickly; the reader confirms each one before the next.
    let n = 200;
    let sent: Vec<Value> =
        (1..=n).map(|i| event("flood", i, "cognition.thought", json!({"content": "x".repeat(60_000)}))).collect();
    for ev in &sent {
        assert_eq!(server.post_event(ev).await, (StatusCode::OK, json!({"ok": true})), "ingest slowed or failed");
        assert_eq!(reader.message().await.json(), *ev, "the subscriber that keeps up gets everything");
    }

    let bytes = raw::read_to_close(&mut sluggish).await.expect("the slow subscriber is disconnected");
    let (head, body) = raw::split_answer(&bytes);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let frames = frames_of(&body);
    let overflow = frames.last().expect("frames");
    assert_eq!(overflow.event.as_deref(), Some("overflow"), "the last frame: {overflow:?}");
    let events: Vec<&Frame> = frames.iter().filter(|f| f.is_event()).collect();
    assert!(events.len() < n as usize, "it received everything, so it was never behind");
    let got: Vec<(String, i64)> = events.iter().map(|f| f.key()).collect();
    assert_eq!(got, (1..=events.len() as i64).map(|i| ("flood".to_owned(), i)).collect::<Vec<_>>());
    let last_id = events.last().map(|f| f.id());
    let said = overflow.json()["last_event_id"].as_i64();
    if let (Some(said), Some(last)) = (said, last_id) {
        assert_eq!(said, last, "the overflow message names the last id it sent");
    }

    // Resuming where it stopped yields exactly the rest.
    let resume_from = last_id.unwrap_or(0).to_string();
    let mut resumed = server.stream_with("/stream", &[("Last-Event-ID", &resume_from)]).await;
    let rest: Vec<Value> = resumed.events(n as usize - events.len()).await.iter().map(Frame::json).collect();
    assert_eq!(rest, sent[events.len()..].to_vec());

    assert!(server.metrics().await.get("aop_stream_overflows_total") >= 1.0);
    assert_eq!(server.health().await["subscribers"], 2, "the reader and the resumed one");
}

/// A subscriber that reads as fast as it can is not "one that cannot keep up" just because one
/// request (an import) committed more events at once than its buffer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_keeps_reading_survives_a_batch_larger_than_its_buffer() {
    let server = Launch::new().args(["--stream-buffer", "64"]).start().await;
    let mut reader = server.stream("/stream").await;
    let batch: Vec<Value> = (1..=300).map(|i| thought("import", i)).collect();
    server.import(&batch).await;

    let mut got = Vec::new();
    while got.len() < batch.len() {
        let m = reader.message().await;
        assert!(
            m.is_event(),
            "a subscriber that keeps reading was cut off by one large batch after {} of {} events: {m:?}",
            got.len(),
            batch.len()
        );
        got.push(m.json());
    }
    assert_eq!(got, batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_count_open_streams() {
    let server = TestServer::start().await;
    let count = || async { server.health().await["subscribers"].as_i64().unwrap() };
    assert_eq!(count().await, 0);

    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(server.stream("/stream").await);
    }
    assert_eq!(count().await, 3);
    assert_eq!(server.metrics().await.get("aop_stream_subscribers"), 3.0);

    streams.truncate(1);
    // A server learns that a client left when it next writes to it.
    let mut seq = 0;
    eventually("the closed streams to be counted out", || {
        seq += 1;
        let server = &server;
        async move {
            server.ingest(&[thought("ping", seq)]).await;
            (server.health().await["subscribers"] == 1).then_some(())
        }
    })
    .await;
    assert_eq!(server.metrics().await.get("aop_stream_subscribers"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_a_keep_alive_comment_within_15_seconds() {
    let server = TestServer::start().await;
    let mut idle = server.stream("/stream").await;
    match idle.read(Duration::from_secs(20)).await {
        sse::Read::Frame(f) => assert!(f.is_comment() && !f.comments.is_empty(), "{f:?}"),
        other => panic!("no keep-alive within 20 s: {other:?}"),
    }
}

/// A resume position past the newest event (the collector restarted on a fresh database under an
/// open dashboard) is clamped to the newest and said so with `event: reset`, whose `id:` is where
/// the client now stands; then the live feed flows. Without it, nothing would ever arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_position_past_the_newest_event_is_reset_not_waited_for() {
    let mut server = TestServer::start().await;
    server.ingest(&[thought("a", 1), thought("a", 2), thought("a", 3)]).await;
    let mut all = server.stream("/stream?since=0").await;
    let mut newest = all.events(3).await[2].id();

    // After a restart too: the newest position is the store's, not "nothing published yet".
    server.restart().await;
    for resume in [vec![], vec![("Last-Event-ID", "100000")]] {
        let path = if resume.is_empty() { "/stream?since=100000" } else { "/stream" };
        let mut stream = server.stream_with(path, &resume).await;
        let reset = stream.message().await;
        assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
        assert_eq!(reset.id(), newest, "{reset:?}");
        assert_eq!(reset.json()["last_event_id"], newest);
        assert!(reset.json()["reason"].as_str().is_some_and(|r| r.contains("100000")), "{reset:?}");
        let n = server.sessions("").await.len(); // any read; then a new event must arrive
        assert_eq!(n, 1);
        let seq = 4 + resume.len() as i64;
        server.ingest_one(&thought("a", seq)).await;
        let next = stream.message().await;
        assert!(next.is_event(), "{next:?}");
        assert_eq!(next.key(), ("a".to_owned(), seq));
        newest = next.id();
    }
    // A position the store has reached is a plain resume: no reset.
    let mut plain = server.stream(&format!("/stream?since={}", newest - 1)).await;
    let first = plain.message().await;
    assert!(first.is_event(), "{first:?}");
    assert_eq!(first.id(), newest);
}
