//! Bad input never hurts: slow and endless clients, thousands of idle connections, idle HTTP/2
//! connections, more connections than the cap, bodies built to break parsers (deep nesting, huge
//! numbers, invalid UTF-8, NUL bytes, duplicate keys), headers built to inject or to slip past the
//! Host check, the token in the log; and the validator itself, property-tested in-process (it is
//! total) and over HTTP (what it accepts comes back byte for byte).
//!
//! `fuzz/` holds the cargo-fuzz targets of the same properties; its crashes end up here as
//! regression tests.

use crate::support::resources::{open_files, open_files_limit};
use crate::support::*;
use aop::model::Event;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ------------------------------------------------------------------------ slow, endless and idle clients

/// What a slow client saw: how long until the server ended the connection, and what it said.
#[derive(Debug)]
struct Cut {
    after: Duration,
    answer: String,
}

/// Sends `head` (without the blank line), then `drip` every `every`, never finishing; returns
/// when the server closes the connection, or after `limit`.
async fn drip(
    mut conn: TcpStream,
    head: Vec<u8>,
    drip: Vec<u8>,
    every: Duration,
    limit: Duration,
) -> Result<Cut, String> {
    let started = Instant::now();
    conn.write_all(&head).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if wr.write_all(&drip).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, rd.read_to_end(&mut answer)).await;
    writer.abort();
    match read {
        Err(_) => Err(format!("still open after {limit:?}, having answered {:?}", String::from_utf8_lossy(&answer))),
        // A reset after the answer is a close too.
        Ok(_) => Ok(Cut { after: started.elapsed(), answer: String::from_utf8_lossy(&answer).into_owned() }),
    }
}

/// Slowloris (headers one line a second), a silent connection, and a body one byte a second:
/// each is cut off (headers within 10 s, a body within 30 s with a 408 that closes the
/// connection), and meanwhile everyone else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off_and_never_lock_others_out() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let host = format!("Host: localhost:{}\r\n", server.port());
    let limit = Duration::from_secs(10) + PATIENCE;

    let mut loris = Vec::new();
    for _ in 0..20 {
        let head = format!("POST /events HTTP/1.1\r\n{host}").into_bytes();
        loris.push(tokio::spawn(drip(
            raw::connect(addr).await,
            head,
            b"X-Slow: 1\r\n".to_vec(),
            Duration::from_secs(1),
            limit,
        )));
    }
    let silent = tokio::spawn(drip(raw::connect(addr).await, Vec::new(), Vec::new(), Duration::from_secs(3600), limit));
    let body_head = format!(
        "POST /events HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"spec\":"
    );
    let trickle = tokio::spawn(drip(
        raw::connect(addr).await,
        body_head.into_bytes(),
        b" ".to_vec(),
        Duration::from_secs(1),
        Duration::from_secs(30) + PATIENCE,
    ));

    // Meanwhile, others are served.
    let ev = event("meanwhile", 1, "session.started", json!({}));
    server.ingest_one(&ev).await;
    assert_eq!(server.health().await["ok"], true);

    for (i, l) in loris.into_iter().enumerate() {
        let cut = l.await.unwrap().unwrap_or_else(|e| panic!("slowloris {i}: {e}"));
        assert!(!cut.answer.starts_with("HTTP/1.1 2"), "slowloris {i} was served: {cut:?}");
        println!("slowloris {i}: cut after {:?}, answer {:?}", cut.after, cut.answer.lines().next());
    }
    let cut = silent.await.unwrap().expect("a connection that never sends a byte");
    assert!(cut.answer.is_empty() || cut.answer.starts_with("HTTP/1.1 408"), "{cut:?}");

    let cut = trickle.await.unwrap().expect("a body that never arrives");
    let (head, body) = raw::split_answer(cut.answer.as_bytes());
    assert!(head.starts_with("HTTP/1.1 408"), "{cut:?}");
    assert_eq!(raw::header(&head, "connection").as_deref(), Some("close"), "{head}");
    let body: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["ok"], false);
    println!("trickled body: 408 after {:?}", cut.after);

    assert_eq!(server.events("meanwhile").await, vec![ev]);
    assert_eq!(server.sessions("").await.len(), 1, "nothing else was stored");
}

/// Writes an endless chunked body (up to `cap` bytes) while reading; returns the answer, the
/// bytes written when the writer stopped, and whether the server then closed the connection.
async fn endless_chunked(
    addr: std::net::SocketAddr,
    head: String,
    piece: Vec<u8>,
    cap: usize,
) -> (Option<(String, Vec<u8>)>, usize, bool) {
    let conn = raw::connect(addr).await;
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        let mut req = head.replace('\n', "\r\n").into_bytes();
        req.extend_from_slice(b"\r\nTransfer-Encoding: chunked\r\n\r\n");
        if wr.write_all(&req).await.is_err() {
            return sent;
        }
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        while sent < cap {
            if wr.write_all(&chunk).await.is_err() {
                return sent;
            }
            sent += piece.len();
        }
        sent
    });
    let answer = raw::one_answer_from(&mut rd).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, rd.read_to_end(&mut rest)).await.is_ok();
    let sent = tokio::time::timeout(PATIENCE, writer).await.map_or(usize::MAX, |r| r.unwrap());
    (answer, sent, closed)
}

/// A body that never ends, as a JSON array or as one endless NDJSON line: a 413 once it passes
/// 16 MiB, the connection closed, and the collector's memory bounded meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_a_413_at_16_mib_and_memory_stays_bounded() {
    let server = TestServer::start().await;
    let baseline = server.rss_bytes();
    let host = format!("Host: localhost:{}", server.port());
    let one = event("endless", 1, "cognition.thought", json!({"content": "e".repeat(800)})).to_string();
    let cases = [
        ("a JSON array", "application/json", format!("[{one}"), format!(",{one}")),
        ("one NDJSON line", "application/x-ndjson", "{\"pad\":\"".to_owned(), "p".repeat(8000)),
    ];
    let cap = 256 << 20;
    for (case, content_type, first, piece) in cases {
        let head = format!("POST /events HTTP/1.1\n{host}\nContent-Type: {content_type}");
        let mut body = first.into_bytes();
        body.extend(piece.as_bytes().repeat(64));
        let (answer, sent, closed) = endless_chunked(server.addr(), head, body, cap).await;
        let (head, body) = answer.unwrap_or_else(|| panic!("{case}: no answer after {sent} bytes"));
        assert!(head.starts_with("HTTP/1.1 413"), "{case}: {head}");
        assert_eq!(raw::header(&head, "connection").as_deref(), Some("close"), "{case}: {head}");
        let body: Value = serde_json::from_slice(&body).expect("a JSON error");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("16 MiB")), "{case}: {body}");
        assert!(closed, "{case}: the connection stayed open after the 413");
        assert!(sent < cap, "{case}: the server kept reading {sent} bytes");
        println!("{case}: 413 after {} MiB written", sent >> 20);
    }
    // Announced, not sent: refused before reading anything.
    let answer = raw::exchange(
        server.addr(),
        &format!("POST /events HTTP/1.1\n{host}\nContent-Type: application/json\nContent-Length: 1000000000000"),
        b"",
    )
    .await;
    assert_eq!(raw::status_of(&answer), 413, "{answer}");

    let growth = server.rss_bytes().saturating_sub(baseline);
    println!("RSS growth: {} MiB", growth >> 20);
    assert!(growth < 64 << 20, "the collector grew by {} MiB reading endless bodies", growth >> 20);
    assert_eq!(server.sessions("").await, Vec::<Value>::new());
}

/// Ten thousand connections that send nothing: the collector keeps answering others, its memory
/// stays bounded, and it is fine after they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_neither_lock_others_out_nor_grow_memory_unboundedly() {
    let server = TestServer::start().await;
    let limit = open_files_limit();
    let want = 10_000u64;
    let n = if limit >= want + 1000 { want } else { limit.saturating_sub(open_files() + 200) };
    if n < want {
        println!("the open-files limit is {limit}: opening {n} idle connections instead of {want}");
    }
    let baseline = server.rss_bytes();
    let addr = server.addr();
    let mut idle = Vec::with_capacity(n as usize);
    while (idle.len() as u64) < n {
        let batch = (n - idle.len() as u64).min(250);
        let opened = futures_util::future::join_all((0..batch).map(|_| TcpStream::connect(addr))).await;
        for conn in opened {
            idle.push(conn.unwrap_or_else(|e| panic!("connection {} of {n}: {e}", idle.len() + 1)));
        }
    }
    // A new connection is accepted after those before it: an answer means all of them were.
    let health = tokio::time::timeout(PATIENCE, server.health()).await.expect("/health with idle connections open");
    assert_eq!(health["ok"], true);
    let ev = event("among_the_idle", 1, "session.started", json!({}));
    server.ingest_one(&ev).await;
    let rss = server.rss_bytes();
    let growth = rss.saturating_sub(baseline);
    println!("{n} idle connections: RSS {} MiB, +{} MiB", rss >> 20, growth >> 20);
    // hyper gives each connection an 8 KiB read buffer before a byte arrives: about 10 KiB each
    // is the price of accepting them, bounded by the 10 s header timeout that closes them.
    assert!(
        growth < n * (16 << 10) + (16 << 20),
        "{n} idle connections grew the collector by {} MiB ({} bytes each)",
        growth >> 20,
        growth / n.max(1)
    );

    drop(idle);
    assert_eq!(server.health().await["ok"], true);
    assert_eq!(server.events("among_the_idle").await, vec![ev]);
}

// ------------------------------------------------------------------------ idle HTTP/2, and the connection cap

/// How long a connection may stay idle: an HTTP/1 one between requests, an HTTP/2 one without a
/// stream.
const IDLE: Duration = Duration::from_secs(10);

/// An HTTP/2 connection that opens no stream is closed after the idle time of an HTTP/1 one, with
/// a GOAWAY, whether its client answers PINGs (hyper's keep-alive would never close it) or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_whether_or_not_it_answers_pings() {
    let server = TestServer::start().await;
    let mut polite = h2c::H2c::connect(server.addr()).await;
    let mut deaf = h2c::H2c::connect(server.addr()).await;
    deaf.answer_pings = false;
    let (polite, deaf) = tokio::join!(polite.until_closed(IDLE), deaf.until_closed(IDLE));
    for (case, seen) in [("answering PINGs", polite), ("ignoring PINGs", deaf)] {
        assert!(seen.closed, "{case}: still open after {:?}", seen.after);
        assert!(seen.goaway(), "{case}: closed without a GOAWAY: {:?}", seen.frames);
        println!("an idle HTTP/2 connection {case}: closed after {:?}", seen.after);
    }
}

/// A stream keeps its HTTP/2 connection open however long it lasts (a live `/stream` here, a
/// long gRPC call alike); once it ends, the idle time runs and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_an_open_stream_is_kept_past_the_idle_time() {
    let server = TestServer::start().await;
    let mut h2 = h2c::H2c::connect(server.addr()).await;
    let authority = format!("localhost:{}", server.port());
    let request = [(":method", "GET"), (":scheme", "http"), (":path", "/stream"), (":authority", authority.as_str())];
    h2.request(1, &request, true).await;

    let seen = h2.read_for(IDLE * 2, |f| f.kind == h2c::GOAWAY).await;
    assert!(!seen.closed && !seen.goaway(), "cut after {:?} with a stream open: {:?}", seen.after, seen.frames);
    assert!(seen.data(1).contains(": connected"), "the stream did not start: {:?}", seen.frames);

    // Still live: an event stored now comes down the stream.
    let ev = event("kept_open", 1, "session.started", json!({}));
    server.ingest_one(&ev).await;
    let seen = h2
        .read_for(PATIENCE, |f| f.kind == h2c::DATA && String::from_utf8_lossy(&f.payload).contains("kept_open"))
        .await;
    assert!(seen.data(1).contains("kept_open"), "the event did not arrive: {:?}", seen.frames);

    h2.cancel(1).await;
    let cancelled = Instant::now();
    let seen = h2.until_closed(IDLE).await;
    assert!(
        seen.closed && seen.goaway(),
        "still open {:?} after its stream ended: {:?}",
        cancelled.elapsed(),
        seen.frames
    );
    println!("closed {:?} after its stream ended, {:?} after it opened", cancelled.elapsed(), seen.after);
}

/// Opens kept-alive connections, each proved accepted by an answer to `GET /health`, until one
/// is refused; returns the refusal's head and body, and its connection.
async fn fill(server: &TestServer, held: &mut Vec<TcpStream>) -> (String, Vec<u8>, TcpStream) {
    let head = format!("GET /health HTTP/1.1\nHost: localhost:{}", server.port());
    loop {
        let mut conn = raw::connect(server.addr()).await;
        raw::send(&mut conn, &head, b"").await;
        let (head, body) = raw::one_answer(&mut conn).await.expect("an answer to GET /health");
        if !head.starts_with("HTTP/1.1 200") {
            return (head, body, conn);
        }
        held.push(conn);
        assert!(held.len() <= 1000, "no refusal after {} connections", held.len());
    }
}

/// Past `--max-connections`, a new connection gets a refusal it can act on, and is counted: over
/// HTTP/1.1 a `503` with a JSON error and `Retry-After`, then the close; over HTTP/2 a gRPC call
/// gets `UNAVAILABLE` (which OTLP exporters retry) and a plain request a `503`. Once connections
/// close, new ones are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_with_an_answer_and_counted() {
    const MAX: usize = 4;
    let server = Launch::new().args(["--max-connections", &MAX.to_string()]).start().await;
    let mut held = Vec::new();

    let (head, body, mut refused) = fill(&server, &mut held).await;
    assert_eq!(held.len(), MAX, "connections served before the first refusal");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(raw::header(&head, "retry-after").as_deref(), Some("1"), "{head}");
    assert_eq!(raw::header(&head, "connection").as_deref(), Some("close"), "{head}");
    let body: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["ok"], false);
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("limit of 4 open connections") && error.contains("--max-connections"), "{body}");
    let rest = raw::read_to_close(&mut refused).await.expect("the refused connection is closed");
    assert!(rest.is_empty(), "more after the refusal: {:?}", String::from_utf8_lossy(&rest));

    // HTTP/2 (a fresh client each: a refused connection is not reused).
    let h2 = || reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
    let grpc = h2()
        .post(server.url("/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("a gRPC answer");
    let header = |r: &reqwest::Response, name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header(&grpc, "grpc-status").as_deref(), Some("14"), "{:?}", grpc.headers());
    assert!(header(&grpc, "grpc-message").is_some_and(|m| m.contains("--max-connections")), "{:?}", grpc.headers());
    let otlp = h2()
        .post(server.url("/v1/traces"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(otlp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&otlp, "retry-after").as_deref(), Some("1"));
    let body: Value = otlp.json().await.expect("a JSON error");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("--max-connections")), "{body}");

    // The connections within the cap were served all along.
    for conn in &mut held {
        raw::send(conn, &format!("GET /health HTTP/1.1\nHost: localhost:{}", server.port()), b"").await;
        let (head, _) = raw::one_answer(conn).await.expect("an answer on a held connection");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    drop(held);
    let metrics = eventually("a connection after the others closed", || async {
        let resp = server.request(reqwest::Method::GET, "/metrics").send().await.ok()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        Some(Metrics::parse(&resp.text().await.ok()?))
    })
    .await;
    let refused = metrics.get("aop_connections_refused_total");
    assert!(refused >= 3.0, "{refused} refusals counted");
    assert_eq!(metrics.get("aop_connections_max"), MAX as f64);
    println!("refusals counted: {refused}");
    server.ingest_one(&event("after_the_crowd", 1, "session.started", json!({}))).await;

    Launch::new().args(["--max-connections", "0"]).run().await.assert_code(2);
}

// ------------------------------------------------------------------------ hostile bodies

/// An envelope (compact JSON text) with these `(key, value text)` fields, in this order.
fn envelope_of(fields: &[(&str, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The fields of a valid event of session `id` with `payload` (JSON text).
fn fields(id: &str, payload: &str) -> Vec<(&'static str, String)> {
    vec![
        ("spec", "\"aop/1.0\"".to_owned()),
        ("session_id", format!("\"{id}\"")),
        ("parent_session_id", "null".to_owned()),
        ("agent_id", "\"hostile\"".to_owned()),
        ("sequence", "1".to_owned()),
        ("timestamp", "\"2026-04-03T10:00:00.000Z\"".to_owned()),
        ("type", "\"cognition.thought\"".to_owned()),
        ("payload", payload.to_owned()),
    ]
}

fn with_field(id: &str, field: &str, value: &str) -> String {
    let mut f = fields(id, "{}");
    f.iter_mut().filter(|(k, _)| *k == field).for_each(|(_, v)| *v = value.to_owned());
    envelope_of(&f)
}

/// What a hostile body must get.
enum Want {
    /// Stored, and served back (detail, export, stream) as exactly this text.
    Stored(String),
    /// Refused with this status and an error containing this fragment.
    Refused(u16, &'static str),
}

struct Case {
    name: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    want: Want,
}

fn nest(levels: usize, inner: &str) -> String {
    format!("{}{inner}{}", "{\"a\":".repeat(levels), "}".repeat(levels))
}

fn hostile_cases() -> Vec<Case> {
    let stored = |name, text: String| Case {
        name,
        content_type: "application/json",
        body: text.clone().into_bytes(),
        want: Want::Stored(text),
    };
    let refused = |name, body: Vec<u8>, status, fragment| Case {
        name,
        content_type: "application/json",
        body,
        want: Want::Refused(status, fragment),
    };
    let ndjson = |name, body: Vec<u8>, fragment| Case {
        name,
        content_type: "application/x-ndjson",
        body,
        want: Want::Refused(400, fragment),
    };
    let splice = |id: &str, payload: &str, bytes: &[u8]| {
        let text = envelope_of(&fields(id, &format!("{{\"s\":\"{payload}\"}}")));
        let at = text.find(payload).unwrap();
        [text.as_bytes()[..at].to_vec(), bytes.to_vec(), text.as_bytes()[at + payload.len()..].to_vec()].concat()
    };
    vec![
        // Nesting: 64 levels with the envelope are fine, more is a 400, a bomb is a 400 too.
        stored("64 levels of nesting", envelope_of(&fields("h_nest64", &nest(62, "{}")))),
        refused(
            "100 levels of nesting",
            envelope_of(&fields("h_nest100", &nest(99, "{}"))).into_bytes(),
            400,
            "`payload`",
        ),
        refused("a bomb of 60,000 brackets", envelope_of(&fields("h_bomb", &"[".repeat(60_000))).into_bytes(), 400, ""),
        refused("a 1 MiB array of brackets", "[".repeat(1 << 20).into_bytes(), 400, "JSON"),
        refused("a 1 MiB object nest", "{\"a\":".repeat(200_000).into_bytes(), 413, "64 KiB"),
        ndjson("an NDJSON line of 60,000 brackets", "[".repeat(60_000).into_bytes(), "none of the 1 events"),
        // Numbers beyond every float and integer are kept as written.
        stored(
            "huge numbers in the payload",
            envelope_of(&fields(
                "h_numbers",
                r#"{"big":123456789012345678901234567890123456789,"tiny":1e-400,"huge":-1.5E+400,"zero":-0,"avogadro":6.02e23,"exact":0.1000000000000000055511151231257827}"#,
            )),
        ),
        stored("a sequence just over 2^53", with_field("h_seq53", "sequence", "9007199254740993")),
        refused(
            "a sequence over 2^63",
            with_field("h_seq64", "sequence", "99999999999999999999").into_bytes(),
            400,
            "`sequence`",
        ),
        refused("a sequence of 1e400", with_field("h_seq400", "sequence", "1e400").into_bytes(), 400, "`sequence`"),
        // Invalid UTF-8, wherever it is.
        refused("a 0xFF byte in a string", splice("h_ff", "XX", b"\xff"), 400, "UTF-8"),
        refused("an overlong slash", splice("h_overlong", "XX", b"\xc0\xaf"), 400, "UTF-8"),
        refused("a surrogate encoded in UTF-8", splice("h_surrogate", "XX", b"\xed\xa0\x80"), 400, "UTF-8"),
        refused("a truncated character at the end", [b"{\"a\":\"".as_slice(), b"\xe2\x82"].concat(), 400, "UTF-8"),
        ndjson("invalid UTF-8 in an NDJSON batch", splice("h_ndjson_ff", "XX", b"\xfe"), "UTF-8"),
        // NUL: raw it is not JSON; escaped it is data, kept as written, but not in an identifier.
        refused("a raw NUL in a string", splice("h_nul", "XX", b"\0"), 400, "control character"),
        refused("a raw NUL between tokens", splice("h_nul2", "XX", b"\"\0,\"t\":\""), 400, "JSON"),
        refused("a body of one NUL", b"\0".to_vec(), 400, "JSON"),
        stored("an escaped NUL in the payload", envelope_of(&fields("h_nul_escaped", r#"{"s":"a\u0000b"}"#))),
        refused(
            "an escaped NUL in agent_id",
            with_field("h_nul_agent", "agent_id", r#""a\u0000b""#).into_bytes(),
            400,
            "`agent_id`",
        ),
        refused("an escaped NUL in type", with_field("h_nul_type", "type", r#""t\u0000""#).into_bytes(), 400, "`type`"),
        refused(
            "an escaped NUL in session_id",
            with_field("h_x", "session_id", r#""a\u0000""#).into_bytes(),
            400,
            "`session_id`",
        ),
        // Duplicate keys: ambiguous in the envelope (which one wins?), the agent's business in the payload.
        refused(
            "session_id twice",
            envelope_of(&[fields("h_dup1", "{}"), vec![("session_id", "\"h_dup2\"".to_owned())]].concat()).into_bytes(),
            400,
            "duplicate field `session_id`",
        ),
        refused(
            "type twice, once escaped",
            envelope_of(&[fields("h_dup3", "{}"), vec![("typ\\u0065", "\"other\"".to_owned())]].concat()).into_bytes(),
            400,
            "duplicate field `type`",
        ),
        refused(
            "spec twice with the same value",
            envelope_of(&[fields("h_dup4", "{}"), vec![("spec", "\"aop/1.0\"".to_owned())]].concat()).into_bytes(),
            400,
            "duplicate field `spec`",
        ),
        stored(
            "duplicate keys in the payload",
            envelope_of(&fields("h_dup_payload", r#"{"a":1,"a":2,"a":{"b":[],"b":null}}"#)),
        ),
        // Escapes are kept as written, a lone surrogate included (JSON's grammar allows it).
        stored(
            "escapes kept as written",
            envelope_of(&fields("h_escapes", r#"{"s":"caf\u00e9 \ud83d\ude80 \/ \" \\ \u2028"}"#)),
        ),
        stored("a lone surrogate escape", envelope_of(&fields("h_lone", r#"{"s":"\ud800"}"#))),
    ]
}

/// Every hostile body gets exactly its answer; what is stored comes back byte for byte from
/// the detail, the export and the stream; and the collector is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_answered_exactly_and_what_is_stored_comes_back_byte_for_byte() {
    let server = TestServer::start().await;
    let mut live = server.stream("/stream").await;
    let mut problems = Vec::new();
    let mut stored = Vec::new();
    for case in hostile_cases() {
        let (status, body) = server.post_body(Some(case.content_type), case.body.clone()).await;
        match &case.want {
            Want::Stored(text) => {
                if (status, &body) != (StatusCode::OK, &json!({"ok": true})) {
                    problems.push(format!("{}: expected 200, got {status} {body}", case.name));
                    continue;
                }
                let id = Event::parse(text).unwrap_or_else(|e| panic!("{}: {e}", case.name)).session_id;
                let export = server.get(&format!("/sessions/{id}/export")).await.text().await.unwrap();
                if export != format!("{text}\n") {
                    problems.push(format!("{}: exported as {export:?}\nsent {text:?}", case.name));
                }
                let detail = server.get(&format!("/sessions/{id}")).await.text().await.unwrap();
                if !detail.contains(&format!("\"events\":[{text}]")) {
                    problems.push(format!("{}: the detail does not hold the text as sent: {detail}", case.name));
                }
                stored.push((case.name, text.clone()));
            }
            Want::Refused(want, fragment) => {
                let error = body["error"].as_str().unwrap_or_default();
                if status.as_u16() != *want || body["ok"] != false || error.is_empty() || !error.contains(fragment) {
                    problems.push(format!("{}: expected {want} with {fragment:?}, got {status} {body}", case.name));
                }
            }
        }
    }
    for (name, text) in &stored {
        let frame = live.message().await;
        if frame.data.as_deref() != Some(text.as_str()) || frame.data_lines != 1 {
            problems.push(format!("{name}: streamed as {frame:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let health = server.health().await;
    assert_eq!(health["ok"], true);
    assert_eq!(server.sessions("").await.len(), stored.len(), "only the accepted cases were stored");
}

/// Regression (found by the `envelope` fuzz target): whitespace inside a number or a literal
/// splits it, so the body is not JSON and must be a 400. The validator removes whitespace
/// before it parses, so `1 2` became `12` and `t rue` became `true`: a body that is not JSON was
/// accepted and stored with content the agent never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_inside_a_number_or_a_literal_is_not_json_and_is_refused() {
    let cases = [
        ("a space inside the sequence", with_field("ws_seq", "sequence", "1 2")),
        ("a newline inside a payload number", envelope_of(&fields("ws_num", "{\"n\":1\n0}"))),
        ("a tab inside true", envelope_of(&fields("ws_true", "{\"ok\":t\true}"))),
        ("a space inside null", with_field("ws_null", "parent_session_id", "nu ll")),
        ("a space inside an exponent", envelope_of(&fields("ws_exp", "{\"n\":1e 5}"))),
        // The fuzzer's own find, shortened.
        ("a space inside false", envelope_of(&fields("ws_false", "{\"tool\":\"search\",\"success\":f alse}"))),
    ];
    let mut problems = Vec::new();
    for (case, text) in &cases {
        assert!(serde_json::from_str::<&RawValue>(text).is_err(), "{case}: the test's body is JSON after all");
        if let Ok(ev) = Event::parse(text) {
            problems.push(format!("{case}: Event::parse accepted {text:?} and keeps {:?}", ev.raw()));
        }
    }
    let server = TestServer::start().await;
    for (case, text) in &cases {
        let (status, body) = server.post_body(Some("application/json"), text.clone()).await;
        if status != StatusCode::BAD_REQUEST {
            problems.push(format!("{case}: POST answered {status} {body}"));
        }
    }
    let stored = server.session_ids("").await;
    if !stored.is_empty() {
        let export = server.get(&format!("/sessions/{}/export", stored[0])).await.text().await.unwrap();
        problems.push(format!("stored sessions {stored:?}; the first exports {export:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------------ hostile headers

/// The export's file name comes from the session id: nothing in a URL can make it carry a
/// header or break out of its quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_filenames_cannot_carry_headers() {
    let server = TestServer::start().await;
    let ids = ["a:b@c.d-e_f", "-", "1", &"x".repeat(128)].map(str::to_owned);
    for id in &ids {
        server.ingest_one(&event(id, 1, "session.started", json!({}))).await;
        let resp = server.get(&format!("/sessions/{id}/export")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{id}");
        let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
        assert_eq!(disposition, format!("attachment; filename=\"session-{id}.jsonl\""));
    }
    let port = server.port();
    for path in [
        "/sessions/x%0D%0ASet-Cookie:%20a=b/export",
        "/sessions/x%0ASet-Cookie:%20a=b/export",
        "/sessions/x%22;%20filename=evil.sh/export",
        "/sessions/x%22%0D%0A%0D%0A%3Chtml%3E/export",
        "/sessions/..%2F..%2Fetc%2Fpasswd/export",
        "/sessions/%00/export",
        "/sessions/a:b@c.d-e_f%0D%0AX-Injected:%201/export",
    ] {
        let answer = raw::exchange(server.addr(), &format!("GET {path} HTTP/1.1\nHost: localhost:{port}"), b"").await;
        let (head, body) = raw::split_answer(answer.as_bytes());
        assert_eq!(raw::status_of(&head), 404, "{path}: {head}");
        for name in ["set-cookie", "x-injected", "content-disposition"] {
            assert_eq!(raw::header(&head, name), None, "{path}: {head}");
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(body["ok"], false, "{path}");
    }
}

/// Host values built to slip past the DNS-rebinding check: userinfo tricks, non-ASCII bytes,
/// NUL. None may be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_headers_built_to_slip_past_the_check_are_refused() {
    let server = TestServer::start().await;
    server.ingest_one(&event("private", 1, "session.started", json!({"goal": "secret"}))).await;
    let port = server.port();
    let hosts: Vec<Vec<u8>> = vec![
        format!("localhost:{port}@evil.example").into_bytes(),
        format!("evil.example:{port}#localhost").into_bytes(),
        format!("evil.example\\@localhost:{port}").into_bytes(),
        format!("\u{e9}vil.example:{port}").into_bytes(),
        [b"evil.example".as_slice(), b"\xff", format!(":{port}").as_bytes()].concat(),
        [b"localhost".as_slice(), b"\0", b".evil.example"].concat(),
        b"".to_vec(),
    ];
    let mut problems = Vec::new();
    for host in &hosts {
        let req =
            [b"GET /sessions/private HTTP/1.1\r\nHost: ".as_slice(), host, b"\r\nConnection: close\r\n\r\n"].concat();
        let answer = raw::exchange_bytes(server.addr(), &req).await;
        let text = String::from_utf8_lossy(&answer);
        let status = text.split_whitespace().nth(1).unwrap_or("(none)").to_owned();
        if !matches!(status.as_str(), "400" | "421" | "(none)") || text.contains("secret") {
            problems.push(format!("Host {:?}: {status}\n{text}", String::from_utf8_lossy(host)));
        }
    }
    assert!(problems.is_empty(), "served to a foreign Host:\n{}", problems.join("\n\n"));
}

/// The token is a secret even to the collector's own log, at every level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_the_log_even_at_trace_level() {
    const TOKEN: &str = "tr4ce-S3cret-b7e1";
    let server = Launch::new().env("AOP_LOG", "trace").token(TOKEN).start().await;
    server.ingest_one(&event("t", 1, "session.started", json!({}))).await;
    for (path, auth) in [
        ("/sessions".to_owned(), Some(format!("Bearer {TOKEN}"))),
        ("/sessions".to_owned(), Some(format!("Bearer {TOKEN}x"))),
        (format!("/sessions?access_token={TOKEN}"), None),
        (format!("/sessions?access_token={TOKEN}%00"), None),
        (format!("/nowhere?access_token={TOKEN}"), None),
    ] {
        let mut req = server.request(reqwest::Method::GET, &path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap();
    }
    let mut stream = server.open_stream(&format!("/stream?access_token={TOKEN}"), &[]).await;
    assert_eq!(stream.status, StatusCode::OK);
    stream.frame().await;
    drop(stream);
    // A request HTTP itself refuses is logged at debug level: the token is in it, twice.
    let malformed =
        format!("GET /sessions?access_token={TOKEN} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nNo colon\r\n\r\n");
    raw::exchange_bytes(server.addr(), malformed.as_bytes()).await;
    let output = eventually("a debug line", || async {
        let output = format!("{}{}", server.stdout(), server.stderr());
        output.contains("DEBUG").then_some(output)
    })
    .await;
    assert!(!output.contains(TOKEN), "the token is in the collector's output:\n{output}");
}

// ------------------------------------------------------------------------ the validator, in-process

/// A string token: serde_json's spelling, or every character escaped (`\uXXXX`, surrogate
/// pairs for the astral planes), so the kept-as-written property sees escapes.
fn string_token(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

fn any_string_token() -> impl Strategy<Value = String> {
    (any::<String>(), any::<bool>()).prop_map(|(s, e)| string_token(&s, e))
}

fn number_token() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::to_string(&f).unwrap()),
        "-?[1-9][0-9]{19,60}",
        "-?[0-9]\\.[0-9]{1,30}[eE][+-]?[0-9]{1,4}",
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
    ]
}

/// Any JSON value as compact text, with duplicate keys now and then.
fn any_json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number_token(),
        any_string_token(),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((prop::sample::select(vec!["a", "b", "goal", "content", "é"]), inner), 0..5)
                .prop_map(|kv| {
                    let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
        ]
    })
}

fn any_object_text() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z_]{1,6}", any_json_text()), 0..4).prop_map(|kv| {
        let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
}

const REQUIRED: &[&str] = &["spec", "session_id", "agent_id", "sequence", "timestamp", "type", "payload"];

/// Where a session id goes that the HTTP properties replace with one of their own.
const SID: &str = "\"@SID@\"";

/// A valid envelope's fields (session id `SID`), values as compact JSON text.
fn valid_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    let label = "[^\\p{Cc}]{1,40}";
    (
        "aop/1\\.[0-9]{1,3}",
        // Any id of the allowed characters but the dot segments `.` and `..`.
        prop::option::of("[A-Za-z0-9_.:@-]{1,20}".prop_filter("a dot segment", |id| id != "." && id != "..")),
        label,
        prop::option::of(label),
        0i64..i64::MAX,
        (0i64..4_000_000_000, prop::sample::select(vec!["Z", "+02:00", "-11:30", ".5Z", ".123456789+00:00"])),
        "[a-z]{1,12}(\\.[a-z_]{1,12}){0,3}",
        any_object_text(),
        any::<bool>(),
    )
        .prop_map(|(spec, parent, agent, version, seq, (secs, zone), kind, payload, escape)| {
            let ts = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let stamp = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
                ts.year(),
                u8::from(ts.month()),
                ts.day(),
                ts.hour(),
                ts.minute(),
                ts.second()
            );
            let mut f = vec![
                ("spec".to_owned(), string_token(&spec, false)),
                ("session_id".to_owned(), SID.to_owned()),
                ("parent_session_id".to_owned(), parent.map_or("null".to_owned(), |p| string_token(&p, escape))),
                ("agent_id".to_owned(), string_token(&agent, escape)),
                ("sequence".to_owned(), seq.to_string()),
                ("timestamp".to_owned(), string_token(&stamp, false)),
                ("type".to_owned(), string_token(&kind, escape)),
                ("payload".to_owned(), payload),
            ];
            if let Some(v) = version {
                f.push(("agent_version".to_owned(), string_token(&v, escape)));
            }
            f
        })
}

/// One change that may make an envelope invalid.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    /// Another JSON value of any type.
    Replace(usize, String),
    /// A string of any characters.
    AnyString(usize, String),
    /// A number too big for anything.
    Huge(usize),
    /// The payload nested this deep.
    Deep(usize),
    /// The field again, with some value.
    Duplicate(usize, String),
    /// An unknown field.
    Extra(String, String),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..9).prop_map(Mutation::Remove),
        (0usize..9, any_json_text()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (0usize..9, any_string_token()).prop_map(|(i, v)| Mutation::AnyString(i, v)),
        (0usize..9).prop_map(Mutation::Huge),
        (1usize..=100).prop_map(Mutation::Deep),
        (0usize..9, any_json_text()).prop_map(|(i, v)| Mutation::Duplicate(i, v)),
        ("[a-z]{1,8}", any_json_text()).prop_map(|(k, v)| Mutation::Extra(k, v)),
        (0usize..9, 0usize..9).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

/// An envelope as compact text (session id `SID` unless mutated away), and the mutations made.
fn almost_valid_event() -> impl Strategy<Value = (String, Vec<Mutation>)> {
    (valid_fields(), prop::collection::vec(mutation(), 0..4)).prop_map(|(mut f, mutations)| {
        for m in &mutations {
            let at = |i: &usize| *i % f.len().max(1);
            match m {
                Mutation::Remove(i) if !f.is_empty() => {
                    f.remove(at(i));
                }
                Mutation::Replace(i, v) | Mutation::AnyString(i, v) if !f.is_empty() => {
                    let i = at(i);
                    f[i].1 = v.clone();
                }
                Mutation::Huge(i) if !f.is_empty() => {
                    let i = at(i);
                    f[i].1 = format!("{}e999", "9".repeat(40));
                }
                Mutation::Deep(levels) => {
                    if let Some(p) = f.iter_mut().find(|(k, _)| k == "payload") {
                        p.1 = format!("{{\"d\":{}}}", nest(levels - 1, "1"));
                    }
                }
                Mutation::Duplicate(i, v) if !f.is_empty() => {
                    let key = f[at(i)].0.clone();
                    f.push((key, v.clone()));
                }
                Mutation::Extra(k, v) => f.push((k.clone(), v.clone())),
                Mutation::Swap(a, b) if !f.is_empty() => {
                    let (a, b) = (at(a), at(b));
                    f.swap(a, b);
                }
                _ => {}
            }
        }
        let inner: Vec<String> = f.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        (format!("{{{}}}", inner.join(",")), mutations)
    })
}

/// `compact` with whitespace (of `ws`) after some structural characters outside strings: the
/// same JSON value, spelled as a person or a pretty-printer might.
fn decorate(compact: &str, seed: u64, ws: &[&str]) -> String {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut out = String::with_capacity(compact.len() * 2);
    let (mut in_string, mut escaped) = (false, false);
    if next() % 4 == 0 {
        out.push_str(ws[next() % ws.len()]);
    }
    for c in compact.chars() {
        out.push(c);
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' | ',' | ':' | '}' | ']' if next() % 3 == 0 => out.push_str(ws[next() % ws.len()]),
            _ => {}
        }
    }
    out
}

const ALL_WHITESPACE: &[&str] = &[" ", "\n", "\t", "\r\n", "  \n\t "];

/// What must hold for any text the validator accepts or refuses; `compact`, when known, is the
/// text without its insignificant whitespace.
fn check_validator(text: &str, compact: Option<&str>) -> Result<(), TestCaseError> {
    let parsed = Event::parse(text);
    let ev = match parsed {
        Err(e) => {
            prop_assert!(!e.to_string().trim().is_empty(), "an error without a reason: {:?}", e);
            return Ok(());
        }
        Ok(ev) => ev,
    };
    let raw = ev.raw();
    prop_assert!(!raw.contains('\n') && !raw.contains('\r'), "a line break in {:?}", raw);
    prop_assert!(serde_json::from_str::<&RawValue>(raw).is_ok(), "not JSON: {:?}", raw);
    if let Some(compact) = compact {
        prop_assert_eq!(raw, compact, "not kept byte for byte");
    }
    if let (Ok(a), Ok(b)) = (serde_json::from_str::<Value>(raw), serde_json::from_str::<Value>(text)) {
        prop_assert_eq!(a, b, "another value than the one sent");
    }
    let again = Event::parse(raw);
    prop_assert!(again.as_ref() == Ok(&ev), "re-parsing the stored text gives {:?}", again);
    let payload = ev.payload_json();
    prop_assert!(payload.starts_with('{') && payload.ends_with('}'), "the payload is {:?}", payload);
    Ok(())
}

/// The validator is total: any text gets an event or a reason, never a panic; and what it
/// accepts is one line of JSON, the text as sent without its whitespace, equal in value to what
/// was sent, and accepted again as the same event.
#[test]
fn the_validator_is_total_and_what_it_accepts_is_the_text_as_sent_on_one_line() {
    let config = |cases| ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };

    TestRunner::new(config(2000)).run(&any::<String>(), |s| check_validator(&s, None)).unwrap();

    let soup = prop::collection::vec(
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "\\u",
            "00",
            "d8",
            "1",
            "-",
            "e",
            ".",
            " ",
            "\n",
            "\0",
            "null",
            "\"spec\"",
            "\"aop/1.0\"",
            "\"payload\"",
            "\"sequence\"",
            "é",
            "\u{feff}",
        ]),
        0..60,
    )
    .prop_map(|parts| parts.concat());
    TestRunner::new(config(2000)).run(&soup, |s| check_validator(&s, None)).unwrap();

    let accepted = AtomicUsize::new(0);
    TestRunner::new(config(3000))
        .run(&(almost_valid_event(), any::<u64>()), |((compact, mutations), seed)| {
            let compact = compact.replace(SID, "\"prop_1\"");
            let text = decorate(&compact, seed, ALL_WHITESPACE);
            check_validator(&text, Some(&compact))?;
            let got = Event::parse(&text);
            if mutations.is_empty() {
                prop_assert!(got.is_ok(), "a valid event refused: {:?} for {}", got, text);
            }
            if got.is_ok() {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.into_inner();
    println!("almost valid events: {accepted} of 3000 accepted");
    assert!(accepted > 300, "the generator hardly ever makes a valid event ({accepted})");
}

/// A missing required field is named in the error, whatever else the event holds.
#[test]
fn a_missing_field_is_named_in_the_error() {
    let config = ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() };
    TestRunner::new(config)
        .run(&(valid_fields(), prop::sample::select(REQUIRED), any::<u64>()), |(mut f, field, seed)| {
            f.retain(|(k, _)| k != field);
            let inner: Vec<String> = f.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let text = decorate(&format!("{{{}}}", inner.join(",")).replace(SID, "\"s\""), seed, ALL_WHITESPACE);
            let got = Event::parse(&text);
            prop_assert!(
                got.as_ref().is_err_and(|e| e.to_string() == format!("missing field `{field}`")),
                "without {}: {:?}",
                field,
                got
            );
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------------------------ the validator, over HTTP

/// Over HTTP, every answer agrees with the validator (same acceptance, same reason), and what is
/// accepted comes back byte for byte from the export and the detail; an NDJSON batch of such
/// events is judged line by line the same way.
#[test]
fn over_http_answers_agree_with_the_validator_and_accepted_events_round_trip_byte_for_byte() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(TestServer::start());
    let next_id = AtomicUsize::new(0);
    let unique = |compact: &str| compact.replace(SID, &format!("\"hp_{}\"", next_id.fetch_add(1, Ordering::Relaxed)));
    let config = |cases| ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };

    TestRunner::new(config(48))
        .run(&(almost_valid_event(), any::<u64>()), |((compact, _), seed)| {
            let compact = unique(&compact);
            let text = decorate(&compact, seed, ALL_WHITESPACE);
            rt.block_on(async {
                let (status, body) = server.post_body(Some("application/json"), text.clone()).await;
                match Event::parse(&text) {
                    Err(e) => {
                        let want = if matches!(e, aop::model::EventError::TooLarge(_)) { 413 } else { 400 };
                        prop_assert_eq!(status.as_u16(), want, "{}", body);
                        prop_assert_eq!(body, json!({"ok": false, "error": e.to_string()}));
                    }
                    Ok(ev) => {
                        prop_assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{} {}", status, body);
                        if status != StatusCode::OK
                            || body.get("duplicate").is_some()
                            || ev.session_id.chars().all(|c| c == '.')
                        {
                            return Ok(()); // a mutated session id met an earlier case's
                        }
                        let id = &ev.session_id;
                        let export = server.get(&format!("/sessions/{id}/export")).await.text().await.unwrap();
                        prop_assert!(
                            export.lines().any(|l| l == compact),
                            "exported as {:?}, sent {:?}",
                            export,
                            compact
                        );
                        let detail = server.get(&format!("/sessions/{id}?limit=10000")).await.text().await.unwrap();
                        prop_assert!(detail.contains(&compact), "the detail lacks {:?}: {}", compact, detail);
                    }
                }
                Ok(())
            })
        })
        .unwrap();

    let batch = prop::collection::vec((almost_valid_event(), any::<u64>()), 1..8);
    TestRunner::new(config(24))
        .run(&batch, |items| {
            let lines: Vec<String> = items
                .iter()
                .map(|((compact, _), seed)| decorate(&unique(compact), *seed, &[" ", "\t", "  "]))
                .collect();
            rt.block_on(async {
                let (status, body) = server.post_ndjson(lines.join("\n")).await;
                let verdicts: Vec<Result<Event, String>> =
                    lines.iter().map(|l| Event::parse(l).map_err(|e| e.to_string())).collect();
                let errors = body["errors"].as_array().cloned().unwrap_or_default();
                for (i, verdict) in verdicts.iter().enumerate() {
                    let reported = errors.iter().find(|e| e["index"] == i).map(|e| e["error"].as_str().unwrap_or(""));
                    match verdict {
                        Err(why) => prop_assert_eq!(reported, Some(why.as_str()), "line {}: {}", i, body),
                        Ok(_) => prop_assert!(
                            reported.is_none_or(|r| r.starts_with("conflict")),
                            "line {} is valid, yet: {}",
                            i,
                            body
                        ),
                    }
                }
                let valid = verdicts.iter().filter(|v| v.is_ok()).count() as u64;
                let taken = body["accepted"].as_u64().unwrap() + body["duplicates"].as_u64().unwrap();
                let conflicts =
                    errors.iter().filter(|e| e["error"].as_str().is_some_and(|r| r.starts_with("conflict"))).count();
                prop_assert_eq!(taken + conflicts as u64, valid, "{}", body);
                prop_assert_eq!(status == StatusCode::OK, taken > 0, "{} {}", status, body);
                Ok(())
            })
        })
        .unwrap();

    assert_eq!(rt.block_on(server.health())["ok"], true);
}
