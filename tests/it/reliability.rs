//! The collector under failure and pressure: SIGKILL at random moments, SIGTERM under heavy
//! load, a full write queue, subscribers that never read, a database that cannot grow,
//! retention by age and by size, and damaged files at `--db`.
//!
//! Randomised tests print their seed; `AOP_TEST_SEED=<seed>` replays a run.

use crate::support::*;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

// ------------------------------------------------------------------------ randomness

/// SplitMix64: a tiny seeded generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `AOP_TEST_SEED` if set, else the clock; printed so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("AOP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
    println!("{test}: seed {seed} (AOP_TEST_SEED={seed} replays it)");
    seed
}

// ------------------------------------------------------------------------ posters and their ledger

type Key = (String, i64);

/// How a request carries its events.
#[derive(Debug, Clone, Copy)]
enum Form {
    Single,
    Array,
    Ndjson,
}

/// Everything the posters sent and learnt.
#[derive(Default)]
struct Ledger {
    /// Every event ever sent, as the exact text sent.
    sent: Mutex<BTreeMap<Key, String>>,
    /// Events answered 200 (stored or duplicate).
    acked: Mutex<BTreeSet<Key>>,
    /// Requests that got no answer (the collector died under them): their events may or may not
    /// be stored.
    in_doubt: Mutex<Vec<(Form, Vec<Key>)>>,
    /// Answers no test allows.
    unexpected: Mutex<Vec<String>>,
    /// Requests refused with 503 and `Retry-After` (allowed during a clean stop).
    refused: AtomicUsize,
}

impl Ledger {
    fn acked(&self) -> BTreeSet<Key> {
        self.acked.lock().unwrap().clone()
    }
    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
    fn sent(&self) -> BTreeMap<Key, String> {
        self.sent.lock().unwrap().clone()
    }
    fn unexpected(&self) -> Vec<String> {
        self.unexpected.lock().unwrap().clone()
    }
}

enum Answer {
    Acked,
    Refused,
    /// The collector died (or closed the connection) before answering.
    Lost,
    Unexpected,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("client")
}

/// Posts `events` in `form` and writes down what happened to them.
async fn send(
    client: &reqwest::Client,
    base: &str,
    ledger: &Ledger,
    events: &[Value],
    form: Form,
    refusal_allowed: bool,
) -> Answer {
    let keys: Vec<Key> = events.iter().map(crate::support::events::key).collect();
    let texts: Vec<String> = events.iter().map(Value::to_string).collect();
    ledger.sent.lock().unwrap().extend(keys.iter().cloned().zip(texts.iter().cloned()));
    let (content_type, body) = match form {
        Form::Single => ("application/json", texts[0].clone()),
        Form::Array => ("application/json", format!("[{}]", texts.join(","))),
        Form::Ndjson => ("application/x-ndjson", texts.join("\n")),
    };
    let request = client.post(format!("{base}/events")).header("content-type", content_type).body(body);
    let answer = match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = resp.headers().contains_key("retry-after");
            resp.text().await.ok().map(|text| (status, retry_after, text))
        }
        Err(_) => None,
    };
    let Some((status, retry_after, text)) = answer else {
        ledger.in_doubt.lock().unwrap().push((form, keys));
        return Answer::Lost;
    };
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    // A duplicate (a resent request the dead collector had committed) is acknowledged too.
    let all_taken = match form {
        Form::Single => body == json!({"ok": true}) || body == json!({"ok": true, "duplicate": true}),
        Form::Array | Form::Ndjson => {
            let taken = body["accepted"].as_u64().unwrap_or(0) + body["duplicates"].as_u64().unwrap_or(0);
            body["ok"] == true && taken == keys.len() as u64 && body["errors"] == json!([])
        }
    };
    if status == StatusCode::OK && all_taken {
        ledger.acked.lock().unwrap().extend(keys);
        Answer::Acked
    } else if status == StatusCode::SERVICE_UNAVAILABLE && retry_after && refusal_allowed {
        ledger.refused.fetch_add(1, Ordering::Relaxed);
        Answer::Refused
    } else {
        let what = format!("{form:?} of {} events from {}: {status} {text}", keys.len(), keys[0].0);
        ledger.unexpected.lock().unwrap().push(what);
        Answer::Unexpected
    }
}

/// Event `seq` of a session whose last event is `last`: started, then thoughts and tool ends,
/// then ended.
fn session_event(session: &str, seq: i64, last: i64, rng: &mut Rng) -> Value {
    let text = "résumé ✓ ".repeat(1 + rng.below(40) as usize);
    match seq {
        0 => event(session, 0, "session.started", json!({"goal": format!("goal of {session}")})),
        s if s == last => event(session, s, "session.ended", json!({"outcome": "completed"})),
        s if s % 3 == 0 => event(
            session,
            s,
            "operation.tool_end",
            json!({"tool": "search", "success": true, "token_spend_delta": s, "output": text}),
        ),
        s => event(session, s, "cognition.thought", json!({"content": text})),
    }
}

/// Posts sessions of `prefix` one event per request until told to stop or an answer is not one
/// it may go on after.
fn single_poster(
    base: String,
    prefix: String,
    seed: u64,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    refusal_allowed: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let mut rng = Rng::new(seed);
        for n in 0.. {
            let session = format!("{prefix}n{n}");
            let last = 2 + rng.below(12) as i64;
            for seq in 0..=last {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let ev = session_event(&session, seq, last, &mut rng);
                match send(&client, &base, &ledger, &[ev], Form::Single, refusal_allowed).await {
                    Answer::Acked | Answer::Refused => {}
                    Answer::Lost | Answer::Unexpected => return,
                }
            }
        }
    })
}

/// Posts sessions of `prefix` in batches of 1 to `max_batch` events, as JSON arrays and NDJSON.
fn batch_poster(
    base: String,
    prefix: String,
    seed: u64,
    max_batch: u64,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    refusal_allowed: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let mut rng = Rng::new(seed);
        for n in 0.. {
            let session = format!("{prefix}n{n}");
            let last = (max_batch / 2 + rng.below(max_batch * 3)) as i64;
            let mut seq = 0;
            while seq <= last {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let end = (seq + rng.below(max_batch) as i64).min(last);
                let events: Vec<Value> = (seq..=end).map(|s| session_event(&session, s, last, &mut rng)).collect();
                let form = if rng.below(2) == 0 { Form::Array } else { Form::Ndjson };
                match send(&client, &base, &ledger, &events, form, refusal_allowed).await {
                    Answer::Acked | Answer::Refused => {}
                    Answer::Lost | Answer::Unexpected => return,
                }
                seq = end + 1;
            }
        }
    })
}

// ------------------------------------------------------------------------ the database file itself

/// Events read from the file: `(session_id, sequence)` to the stored JSON text.
type FileEvents = BTreeMap<Key, String>;

/// A copy of the database and its WAL (no `-shm`), so that reading it leaves the crash state of
/// the original for the collector's own recovery at its next start.
fn copy_database(db: &Path, into: &Path) -> PathBuf {
    let copy = into.join("copy.db");
    std::fs::copy(db, &copy).expect("copy the database");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, into.join("copy.db-wal")).expect("copy the WAL");
    }
    copy
}

/// `PRAGMA integrity_check`'s complete answer.
fn integrity(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("PRAGMA integrity_check").expect("integrity_check");
    stmt.query_map([], |r| r.get(0)).expect("rows").collect::<Result<_, _>>().expect("text")
}

/// Reads the database file directly (a copy of it, with its WAL) and checks it against the
/// ledger: intact; no event without its session; each session's row agrees with its events;
/// every acknowledged event present, exactly as sent, once; nothing stored that was never sent.
/// Returns what it holds and every problem found.
fn check_file(db: &Path, ledger: &Ledger) -> (FileEvents, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(copy_database(db, dir.path())).expect("open the copy");
    let mut problems = Vec::new();

    let check = integrity(&conn);
    if check != ["ok"] {
        problems.push(format!("integrity_check: {check:?}"));
    }
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.sid = e.sid)",
            [],
            |r| r.get(0),
        )
        .expect("orphans");
    if orphans > 0 {
        problems.push(format!("{orphans} events without a session row"));
    }

    let mut events = FileEvents::new();
    let mut stmt = conn
        .prepare("SELECT s.id, e.seq, e.body FROM events e JOIN sessions s ON s.sid = e.sid ORDER BY e.id")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?))).unwrap();
    for row in rows {
        let (key, body): (Key, String) = row.unwrap();
        if events.insert(key.clone(), body).is_some() {
            problems.push(format!("{key:?} is stored twice"));
        }
    }

    let mut stmt = conn
        .prepare(
            "SELECT s.id, s.event_count, s.status, (SELECT count(*) FROM events e WHERE e.sid = s.sid) FROM sessions s",
        )
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
    for row in rows {
        let (id, count, status, actual): (String, i64, String, i64) = row.unwrap();
        if count != actual {
            problems.push(format!("session {id}: event_count {count}, but {actual} events stored"));
        }
        let ended = events
            .range((id.clone(), i64::MIN)..=(id.clone(), i64::MAX))
            .any(|(_, body)| serde_json::from_str::<Value>(body).is_ok_and(|v| v["type"] == "session.ended"));
        if ended == (status == "running") {
            problems.push(format!("session {id}: status {status:?}, yet session.ended stored: {ended}"));
        }
    }

    let sent = ledger.sent();
    for (key, body) in &events {
        match sent.get(key) {
            None => problems.push(format!("{key:?} is stored but was never sent")),
            Some(text) if text != body => problems.push(format!("{key:?} stored as {body}\nbut sent as {text}")),
            Some(_) => {}
        }
    }
    for key in ledger.acked() {
        if !events.contains_key(&key) {
            problems.push(format!("{key:?} was acknowledged but is not in the file"));
        }
    }
    (events, problems)
}

// ------------------------------------------------------------------------ the same, through the API

/// The row the collector must derive from these events of a session (all of `session_event`'s
/// shape): count, status, first and last timestamps, steps and tokens.
fn expected_row(events: &[Value]) -> Value {
    let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    let ended = events.iter().any(|e| e["type"] == "session.ended");
    let steps = events.iter().filter(|e| e["type"] == "cognition.thought" || e["type"] == "operation.tool_end").count();
    let tokens: i64 = events.iter().filter_map(|e| e["payload"]["token_spend_delta"].as_i64()).sum();
    json!({
        "event_count": events.len(),
        "status": if ended { "completed" } else { "running" },
        "started_at": at(*seqs.iter().min().unwrap()),
        "last_seen_at": at(*seqs.iter().max().unwrap()),
        "total_steps": steps,
        "total_tokens": tokens,
    })
}

/// Checks `sessions` through the restarted collector: each serves, in sequence order and exactly
/// as sent, a superset of its acknowledged events and of what the file held before the restart,
/// nothing that was never sent, and a row derived from exactly those events.
async fn check_api(
    server: &TestServer,
    sessions: &BTreeSet<String>,
    file: &FileEvents,
    ledger: &Ledger,
) -> Vec<String> {
    let (sent, acked) = (ledger.sent(), ledger.acked());
    let mut problems = Vec::new();
    for session in sessions {
        let range = (session.clone(), i64::MIN)..=(session.clone(), i64::MAX);
        let must: BTreeSet<i64> =
            acked.range(range.clone()).chain(file.range(range.clone()).map(|(k, _)| k)).map(|k| k.1).collect();
        let (status, _) = server.get_json(&format!("/sessions/{session}")).await;
        if status == StatusCode::NOT_FOUND {
            if !must.is_empty() {
                problems.push(format!("session {session} is gone after the restart; it had {must:?}"));
            }
            continue;
        }
        let served = server.events(session).await;
        let seqs: Vec<i64> = served.iter().map(|e| e["sequence"].as_i64().unwrap_or(-1)).collect();
        if seqs.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!("session {session}: events not in strict sequence order: {seqs:?}"));
        }
        let missing: Vec<&i64> = must.iter().filter(|s| !seqs.contains(s)).collect();
        if !missing.is_empty() {
            problems.push(format!("session {session}: lost {missing:?} (served {seqs:?})"));
        }
        for ev in &served {
            let key = crate::support::events::key(ev);
            match sent.get(&key).map(|t| serde_json::from_str::<Value>(t).unwrap()) {
                None => problems.push(format!("{key:?} is served but was never sent")),
                Some(v) if v != *ev => problems.push(format!("{key:?} served as {ev}, sent as {v}")),
                Some(_) => {}
            }
        }
        let row = server.session(session).await;
        let want = expected_row(&served);
        for (field, value) in want.as_object().unwrap() {
            if row[field] != *value {
                problems.push(format!("session {session}: {field} is {}, its events say {value}", row[field]));
            }
        }
    }
    problems
}

/// Sends again every request that got no answer: each must now be acknowledged (stored once,
/// or recognised as a duplicate of what the dead collector had committed).
async fn resend_in_doubt(server: &TestServer, ledger: &Ledger) -> Vec<String> {
    let requests: Vec<(Form, Vec<Key>)> = std::mem::take(&mut *ledger.in_doubt.lock().unwrap());
    let sent = ledger.sent();
    let client = client();
    let mut problems = Vec::new();
    for (form, keys) in requests {
        let events: Vec<Value> = keys.iter().map(|k| serde_json::from_str(&sent[k]).unwrap()).collect();
        if !matches!(send(&client, &server.base(), ledger, &events, form, false).await, Answer::Acked) {
            problems.push(format!("resending {form:?} of {keys:?} after the restart was not acknowledged"));
        }
    }
    problems
}

fn sessions_of(keys: impl IntoIterator<Item = Key>, prefix: &str) -> BTreeSet<String> {
    keys.into_iter().map(|k| k.0).filter(|s| s.starts_with(prefix)).collect()
}

const CRASH_ROUNDS: usize = 20;

/// The heart of "an acknowledgement means committed": concurrent single and batch posters, a
/// SIGKILL at a random moment, and a restart on the same file, twenty times over. After each
/// kill the file is read directly (before the collector recovers it), and after each restart the
/// API is checked, and every request that got no answer is sent again and must be acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_loses_or_duplicates_an_acknowledged_event() {
    let seed = seed("crash loop");
    let mut rng = Rng::new(seed);
    let mut server = TestServer::start().await;
    let ledger = Arc::new(Ledger::default());
    let mut kills = Vec::new();

    for round in 0..CRASH_ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = format!("r{round}_");
        let acked_before = ledger.acked_count();
        let mut posters: Vec<JoinHandle<()>> = (0..3)
            .map(|p| {
                let prefix = format!("{prefix}s{p}_");
                single_poster(server.base(), prefix, rng.next(), ledger.clone(), stop.clone(), false)
            })
            .collect();
        posters.push(batch_poster(
            server.base(),
            format!("{prefix}b_"),
            rng.next(),
            40,
            ledger.clone(),
            stop.clone(),
            false,
        ));
        let after = Duration::from_millis(100 + rng.below(300));
        tokio::time::sleep(after).await;
        server.sigkill().await;
        stop.store(true, Ordering::SeqCst);
        for p in posters {
            p.await.unwrap();
        }
        kills.push((after.as_millis(), ledger.acked_count() - acked_before, ledger.in_doubt.lock().unwrap().len()));
        let context = format!("seed {seed}, round {round}, SIGKILL after {after:?}");
        assert_eq!(ledger.unexpected(), Vec::<String>::new(), "{context}: answers other than 200");

        let (file, problems) = check_file(&server.db_path(), &ledger);
        assert!(problems.is_empty(), "{context}: the file after the kill:\n{}", problems.join("\n"));

        server.start_again().await;
        let problems = resend_in_doubt(&server, &ledger).await;
        assert!(problems.is_empty(), "{context}:\n{}", problems.join("\n"));
        assert_eq!(ledger.unexpected(), Vec::<String>::new(), "{context}: answers to resent requests");
        let sessions = sessions_of(ledger.sent().into_keys(), &prefix);
        let problems = check_api(&server, &sessions, &file, &ledger).await;
        assert!(problems.is_empty(), "{context}: through the API after the restart:\n{}", problems.join("\n"));
    }

    // Everything of every round, once more, after a clean stop.
    server.sigterm().await;
    let (file, problems) = check_file(&server.db_path(), &ledger);
    assert!(problems.is_empty(), "seed {seed}, at the end:\n{}", problems.join("\n"));
    assert!(file.len() >= ledger.acked_count());
    println!(
        "{} kills (ms after start, events acknowledged, requests unanswered): {kills:?}; {} events acknowledged, {} in the file",
        kills.len(),
        ledger.acked_count(),
        file.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_heavy_single_and_batch_ingest_keeps_every_acknowledged_event_and_exits_within_5_s() {
    let seed = seed("SIGTERM under load");
    let mut rng = Rng::new(seed);
    let mut server = TestServer::start().await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut posters: Vec<JoinHandle<()>> = (0..3)
        .map(|p| single_poster(server.base(), format!("t_s{p}_"), rng.next(), ledger.clone(), stop.clone(), true))
        .collect();
    for p in 0..3 {
        posters.push(batch_poster(
            server.base(),
            format!("t_b{p}_"),
            rng.next(),
            1500,
            ledger.clone(),
            stop.clone(),
            true,
        ));
    }
    eventually("heavy ingest under way", || async { (ledger.acked_count() >= 4000).then_some(()) }).await;

    let started = Instant::now();
    let status = server.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5)).await;
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }
    assert!(status.is_some(), "still running 5 s after SIGTERM\n{}", server.output());
    assert_eq!(status.unwrap().code(), Some(0), "exit status\n{}", server.output());
    assert!(!server.stderr().contains("panicked"), "{}", server.output());
    // 200, or 503 with Retry-After; a request the stopping collector never answered is in doubt.
    assert_eq!(ledger.unexpected(), Vec::<String>::new(), "answers during the stop");

    let (file, problems) = check_file(&server.db_path(), &ledger);
    assert!(problems.is_empty(), "seed {seed}, after SIGTERM:\n{}", problems.join("\n"));
    println!(
        "exited {took:?} after SIGTERM; {} events acknowledged, {} stored, {} requests refused with 503, {} unanswered",
        ledger.acked_count(),
        file.len(),
        ledger.refused.load(Ordering::Relaxed),
        ledger.in_doubt.lock().unwrap().len()
    );
}

// ------------------------------------------------------------------------ overload

/// One answer to a burst's request: status, `Retry-After`, body.
type BurstAnswer = Result<(StatusCode, Option<String>, Value), String>;

async fn burst(server: &TestServer, round: usize, n: usize) -> Vec<(String, BurstAnswer)> {
    let client = client();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), server.url("/events"));
            let session = format!("burst{round}_{i}");
            let ev = event(&session, 0, "session.started", json!({"goal": "overload"}));
            tokio::spawn(async move {
                let answer = async {
                    let resp = client.post(url).json(&ev).send().await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or("?").to_owned());
                    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
                    Ok((status, retry, body))
                };
                (session, answer.await)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// With room for one queued write, bursts of concurrent posters must overflow the queue: the
/// overflow is answered at once, 503 with `Retry-After` and a JSON error, never left to time out;
/// nothing refused is stored; and ingest works again as soon as the burst is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_is_a_503_with_retry_after_and_ingest_recovers_when_load_drops() {
    let server = Launch::new().args(["--queue-capacity", "1"]).start().await;
    let mut answers = Vec::new();
    let mut bursts = 0;
    while bursts < 20 && !answers.iter().any(|(_, a): &(String, BurstAnswer)| matches!(a, Ok((s, _, _)) if *s == 503)) {
        answers.extend(burst(&server, bursts, 96).await);
        bursts += 1;
    }
    let refused: Vec<&String> =
        answers.iter().filter(|(_, a)| matches!(a, Ok((s, _, _)) if *s == 503)).map(|(s, _)| s).collect();
    assert!(!refused.is_empty(), "no 503 in {bursts} bursts of 96 concurrent posts with --queue-capacity 1");

    for (session, answer) in &answers {
        match answer {
            Ok((StatusCode::OK, _, body)) => assert_eq!(body, &json!({"ok": true}), "{session}"),
            Ok((StatusCode::SERVICE_UNAVAILABLE, retry, body)) => {
                let secs = retry.as_deref().and_then(|r| r.parse::<u64>().ok());
                assert!(secs.is_some_and(|s| s >= 1), "{session}: 503 with Retry-After {retry:?}");
                assert_eq!(body["ok"], false, "{session}: {body}");
                assert!(body["error"].as_str().is_some_and(|e| e.contains("overloaded")), "{session}: {body}");
            }
            other => panic!("{session}: neither stored nor refused with 503: {other:?}"),
        }
    }
    // What was refused is not stored; what was acknowledged is.
    for (session, answer) in &answers {
        let (status, _) = server.get_json(&format!("/sessions/{session}")).await;
        let acked = matches!(answer, Ok((StatusCode::OK, _, _)));
        assert_eq!(status, if acked { StatusCode::OK } else { StatusCode::NOT_FOUND }, "{session}");
    }

    // The load is gone: the very next post is stored.
    let after = event("after_the_burst", 0, "session.started", json!({}));
    assert_eq!(server.post_event(&after).await, (StatusCode::OK, json!({"ok": true})));
    let health = server.health().await;
    assert_eq!(health["ok"], true, "{health}");
    assert!(server.metrics().await.get("aop_overload_rejections_total") >= refused.len() as f64);
    println!("{} refused of {} posts in {bursts} bursts", refused.len(), answers.len());
}

// ------------------------------------------------------------------------ stalled subscribers

/// Subscribers that never read hold no more than the stream's ring: while 40 MB of events go
/// by, the collector's memory stays bounded, every post is acknowledged, and each of them, when
/// it finally reads, finds an `overflow` message and the end of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_are_cut_off_without_growing_memory_or_failing_ingest() {
    let server = Launch::new().args(["--stream-buffer", "1MiB", "--durability", "normal"]).start().await;
    let big =
        |session: &str, seq: i64| event(session, seq, "cognition.thought", json!({"content": "x".repeat(60_000)}));
    // Warm up allocators and caches before the baseline.
    server.import(&(0..40).map(|i| big("warmup", i)).collect::<Vec<_>>()).await;

    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(raw::sluggish_get(server.addr(), "/stream").await);
    }
    eventually("the subscriptions open", || async { (server.health().await["subscribers"] == 4).then_some(()) }).await;
    let baseline = server.rss_bytes();
    let mut peak = baseline;
    let n = 700;
    for i in 0..n {
        let ev = big("flood", i);
        assert_eq!(server.post_event(&ev).await, (StatusCode::OK, json!({"ok": true})), "post {i}");
        if i % 25 == 0 {
            peak = peak.max(server.rss_bytes());
        }
    }
    peak = peak.max(server.rss_bytes());
    let growth = peak.saturating_sub(baseline);
    println!("RSS {} MiB before the flood, peak {} MiB (+{} MiB)", baseline >> 20, peak >> 20, growth >> 20);
    assert!(growth < 64 << 20, "the collector grew by {} MiB while 4 subscribers did not read", growth >> 20);

    for (i, conn) in stalled.iter_mut().enumerate() {
        let bytes = raw::read_to_close(conn).await.unwrap_or_else(|e| panic!("stalled subscriber {i}: {e}"));
        let (head, body) = raw::split_answer(&bytes);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let text = String::from_utf8_lossy(&body);
        let last = text.split("\n\n").filter(|b| !b.is_empty()).map(Frame::parse).last().expect("frames");
        assert_eq!(last.event.as_deref(), Some("overflow"), "subscriber {i}: the last frame is {last:?}");
        assert!(last.json()["last_event_id"].is_i64(), "{last:?}");
    }
    eventually("the cut-off subscribers are gone", || async {
        (server.health().await["subscribers"] == 0).then_some(())
    })
    .await;
}

// ------------------------------------------------------------------------ a database that cannot grow

/// A running session's thought of about 2 KB.
fn filler(session: &str, seq: i64) -> Value {
    event(session, seq, "cognition.thought", json!({"content": "f".repeat(2000)}))
}

/// Posts filler events into `sessions` (round robin) until the collector refuses one; returns the
/// acknowledged events and the refusal. Panics if the cap is never reached.
async fn fill_until_refused(server: &TestServer, sessions: &[&str], from_seq: i64) -> (Vec<Value>, Value) {
    let mut acked = Vec::new();
    for i in 0..2000 {
        let session = sessions[i % sessions.len()];
        let ev = filler(session, from_seq + (i / sessions.len()) as i64);
        let (status, headers, body) = TestServer::send_json(
            server
                .request(reqwest::Method::POST, "/events")
                .header("content-type", "application/json")
                .body(ev.to_string()),
        )
        .await;
        match status {
            StatusCode::OK => acked.push(ev),
            StatusCode::SERVICE_UNAVAILABLE => {
                let retry = headers.get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(retry.as_deref(), Some("1"), "a 503 without Retry-After: {body}");
                return (acked, body);
            }
            other => panic!("while filling the database: {other} {body}"),
        }
    }
    panic!("2000 events of 2 KB and the database never filled up");
}

fn file_check_ok(db: &Path) {
    let conn = Connection::open(db).expect("open");
    assert_eq!(integrity(&conn), ["ok"], "integrity_check of {}", db.display());
}

/// `/health` while the store refuses writes.
async fn health_when_full(server: &TestServer) -> Value {
    let (status, _, body) = TestServer::send_json(server.request(reqwest::Method::GET, "/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/health while full: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_ingest_with_503_keeps_serving_reads_and_resumes_when_space_is_freed() {
    let mut server = Launch::new().args(["--max-db-size", "300KB"]).start().await;
    let sessions = ["full_a", "full_b", "full_c"];
    for s in sessions {
        server.ingest_one(&event(s, 0, "session.started", json!({"goal": "fill the disk"}))).await;
    }
    let (acked, refusal) = fill_until_refused(&server, &sessions, 1).await;
    assert_eq!(refusal, json!({"ok": false, "error": "the collector cannot store events: its disk is full"}));

    // Health says so; batches are refused the same way.
    let health = health_when_full(&server).await;
    assert_eq!((health["ok"].clone(), health["store"]["writable"].clone()), (json!(false), json!(false)), "{health}");
    assert!(health["store"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{health}");
    let (status, body) = server.post_ndjson(ndjson(&[filler("full_a", 10_000), filler("full_b", 10_000)])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(server.metrics().await.get("aop_store_writable") == 0.0);

    // Reads keep working.
    let listed = server.session_ids("").await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut stored = Vec::new();
    for s in sessions {
        stored.extend(server.events(s).await.into_iter().filter(|e| e["type"] == "cognition.thought"));
        let export = server.get(&format!("/sessions/{s}/export")).await;
        assert_eq!(export.status(), StatusCode::OK);
        assert!(export.text().await.unwrap().lines().count() > 1);
    }
    stored.sort_by_key(|e| (e["sequence"].as_i64(), e["session_id"].as_str().map(str::to_owned)));
    let mut want = acked.clone();
    want.sort_by_key(|e| (e["sequence"].as_i64(), e["session_id"].as_str().map(str::to_owned)));
    assert_eq!(stored, want, "exactly the acknowledged events are stored");
    let mut stream = server.stream("/stream?since=0").await;
    assert!(stream.message().await.is_event());
    drop(stream);

    // Only running sessions: retention (which runs at once while writes fail) may not free
    // anything, and must not delete them. Still full a moment later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.session_ids("").await.len(), 3, "retention deleted a running session");
    assert_eq!(server.post_event(&filler("full_a", 20_000)).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // Deleting a session frees space: the next event is stored, health recovers by itself.
    assert_eq!(server.delete("/sessions/full_b").await, (StatusCode::OK, json!({"ok": true})));
    let next = filler("full_a", 30_000);
    assert_eq!(server.post_event(&next).await, (StatusCode::OK, json!({"ok": true})), "ingest after the delete");
    let health = server.health().await;
    assert_eq!((health["ok"].clone(), health["store"]["error"].clone()), (json!(true), Value::Null), "{health}");

    server.sigterm().await;
    file_check_ok(&server.db_path());
    server.start_again().await;
    assert!(server.events("full_a").await.contains(&next));
    assert_eq!(server.get_json("/sessions/full_b").await.0, StatusCode::NOT_FOUND);
}

/// When the database is full of ended sessions, the collector frees room by itself (retention
/// runs at once while writes fail, deleting the oldest ended, unpinned sessions) and ingest
/// resumes without anyone deleting anything. A pinned and a running session survive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_full_of_ended_sessions_makes_room_by_itself() {
    let server = Launch::new().args(["--max-db-size", "300KB"]).start().await;
    server.ingest_one(&event("keep_pinned", 0, "session.started", json!({}))).await;
    server.ingest_one(&event("keep_pinned", 1, "session.ended", json!({"outcome": "completed"}))).await;
    assert_eq!(
        TestServer::send_json(
            server
                .request(reqwest::Method::POST, "/sessions/keep_pinned/pin")
                .header("content-type", "application/json")
        )
        .await
        .2,
        json!({"ok": true, "pinned": true})
    );
    server.ingest_one(&event("keep_running", 0, "session.started", json!({}))).await;

    // Ended sessions of ten fillers each, until the database is full.
    let mut ended = Vec::new();
    let mut full = false;
    'fill: for n in 0..200 {
        let session = format!("ended_{n:03}");
        for seq in 0..10 {
            let ev = if seq == 9 {
                event(&session, seq, "session.ended", json!({"outcome": "completed"}))
            } else {
                filler(&session, seq)
            };
            let (status, body) = server.post_event(&ev).await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                full = true;
                break 'fill;
            }
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        ended.push(session);
    }
    assert!(full && ended.len() >= 3, "the database did not fill up ({} sessions)", ended.len());

    let next = filler("keep_running", 1);
    let resumed = tokio::time::timeout(PATIENCE, async {
        loop {
            if server.post_event(&next).await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let health = TestServer::send_json(server.request(reqwest::Method::GET, "/health")).await.2;
    assert!(
        resumed.is_ok(),
        "ingest still refused {PATIENCE:?} after the database filled up with {} ended sessions that retention may delete; /health: {health}",
        ended.len()
    );
    let left = server.session_ids("").await;
    assert!(left.contains(&"keep_pinned".to_owned()) && left.contains(&"keep_running".to_owned()), "{left:?}");
    // The oldest went first.
    let gone: Vec<&String> = ended.iter().filter(|s| !left.contains(s)).collect();
    assert!(!gone.is_empty());
    assert_eq!(gone, ended.iter().take(gone.len()).collect::<Vec<_>>(), "retention did not delete the oldest first");
}

// ------------------------------------------------------------------------ retention

/// `n` events of about 1 KB for session `id`, ended unless `running`.
fn session_of(id: &str, n: i64, running: bool) -> Vec<Value> {
    (0..n)
        .map(|seq| match seq {
            0 => event(id, 0, "session.started", json!({"goal": id})),
            s if s == n - 1 && !running => event(id, s, "session.ended", json!({"outcome": "completed"})),
            s => event(id, s, "cognition.thought", json!({"content": "r".repeat(1000)})),
        })
        .collect()
}

async fn pin(server: &TestServer, id: &str, pinned: bool) {
    let method = if pinned { reqwest::Method::POST } else { reqwest::Method::DELETE };
    let req = server.request(method, &format!("/sessions/{id}/pin")).header("content-type", "application/json");
    let (status, _, body) = TestServer::send_json(req).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"ok": true, "pinned": pinned})), "pin {id}: {pinned}");
}

fn file_size(db: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    std::fs::metadata(db).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_deletes_old_ended_sessions_but_never_running_or_pinned_ones_and_the_file_shrinks() {
    let mut server = TestServer::start().await;
    let old_ended: Vec<String> = (0..4).map(|i| format!("old_ended_{i}")).collect();
    for id in &old_ended {
        server.import(&session_of(id, 150, false)).await;
    }
    server.import(&session_of("old_running", 20, true)).await;
    server.import(&session_of("old_pinned", 20, false)).await;
    server.import(&session_of("old_unpinned", 20, false)).await;
    pin(&server, "old_pinned", true).await;
    pin(&server, "old_unpinned", true).await;
    pin(&server, "old_unpinned", false).await;
    assert_eq!(server.session("old_pinned").await["pinned"], true);
    assert_eq!(server.session("old_unpinned").await["pinned"], false);
    let nobody =
        server.request(reqwest::Method::POST, "/sessions/nobody/pin").header("content-type", "application/json");
    let (status, _, _) = TestServer::send_json(nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let kept_running = server.events("old_running").await;
    let kept_pinned = server.events("old_pinned").await;
    server.sigterm().await;
    let before = file_size(&server.db_path());

    // `--retain 0.00002` days is 1.73 s since each session's last event arrived.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut server = server.sibling().args(["--retain", "0.00002"]).start().await;
    server.ingest(&session_of("fresh_ended", 3, false)).await;
    eventually("retention at startup", || async {
        (server.get_json("/sessions/old_ended_0").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    for id in old_ended.iter().map(String::as_str).chain(["old_unpinned"]) {
        assert_eq!(server.get_json(&format!("/sessions/{id}")).await.0, StatusCode::NOT_FOUND, "{id} was kept");
    }
    assert_eq!(server.events("old_running").await, kept_running, "a running session was touched");
    assert_eq!(server.events("old_pinned").await, kept_pinned, "a pinned session was touched");
    assert_eq!(server.events("fresh_ended").await.len(), 3, "a recent session was deleted");
    let mut ids = server.session_ids("").await;
    ids.sort();
    assert_eq!(ids, ["fresh_ended", "old_pinned", "old_running"]);

    server.sigterm().await;
    let after = file_size(&server.db_path());
    println!("database: {before} bytes before retention, {after} after");
    assert!(after < before / 2, "the file did not shrink: {before} bytes before retention, {after} after");
    file_check_ok(&server.db_path());
}

/// `--max-db-size` over the data at start-up: the oldest ended sessions go first, only as many
/// as needed, never the pinned or running ones; the file shrinks to the limit; and the limit
/// then holds as a cap for what comes next. Every check runs, and all that failed are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_size_deletes_the_oldest_ended_sessions_first_and_the_file_shrinks_below_it() {
    let mut server = TestServer::start().await;
    // Oldest first: a pinned session, a running one, then six ended ones (about 210 KB each on
    // disk, indexes and page slack included).
    server.import(&session_of("size_pinned", 150, false)).await;
    pin(&server, "size_pinned", true).await;
    server.import(&session_of("size_running", 150, true)).await;
    let ended: Vec<String> = (0..6).map(|i| format!("size_ended_{i}")).collect();
    for id in &ended {
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.import(&session_of(id, 150, false)).await;
    }
    server.sigterm().await;
    let before = file_size(&server.db_path());
    let max: u64 = 800_000;
    assert!(before > 2 * max, "the database is only {before} bytes");

    let mut server = server.sibling().args(["--max-db-size", "800KB"]).start().await;
    eventually("retention at startup", || async {
        (server.get_json("/sessions/size_ended_0").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let mut problems = Vec::new();
    let left = server.session_ids("").await;
    if !left.contains(&"size_pinned".to_owned()) || !left.contains(&"size_running".to_owned()) {
        problems.push(format!("a pinned or running session was deleted: {left:?} are left"));
    }
    let gone: Vec<&String> = ended.iter().filter(|s| !left.contains(s)).collect();
    if gone != ended.iter().take(gone.len()).collect::<Vec<_>>() {
        problems.push(format!("not the oldest first: {left:?} are left"));
    }
    // Three sessions of about 210 KB fit in 800 KB: the newest ended one has no reason to go.
    if gone.len() == ended.len() {
        problems.push(format!(
            "every ended session was deleted, though the newest ones fit under the limit: only {left:?} are left"
        ));
    }

    server.sigterm().await;
    let after = file_size(&server.db_path());
    println!("database: {before} bytes before, {after} after --max-db-size 800KB ({} sessions deleted)", gone.len());
    if after > max + max / 10 {
        problems.push(format!("the file is {after} bytes after retention, over --max-db-size {max} (it was {before})"));
    }
    file_check_ok(&server.db_path());

    // And the limit is a hard cap for what comes next: a running session (which retention may
    // not delete) fills the database up to about the limit, not to the size it once had.
    server.start_again().await;
    let (_, refusal) = fill_until_refused(&server, &["size_running"], 1000).await;
    assert!(refusal["error"].as_str().is_some_and(|e| e.contains("disk is full")), "{refusal}");
    server.sigterm().await;
    let full = std::fs::metadata(server.db_path()).unwrap().len();
    println!("filled up again: the database file is {full} bytes");
    if full > max + max / 5 {
        problems.push(format!(
            "with --max-db-size {max}, the database file grew to {full} bytes before ingest was refused"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------------ damaged files at start-up

/// An aop database with a few hundred events, cleanly closed; returns its bytes.
async fn a_real_database(sandbox: &Arc<Sandbox>) -> Vec<u8> {
    let mut server = Launch::in_sandbox(sandbox.clone()).start().await;
    server.import(&session_of("victim", 300, false)).await;
    server.sigterm().await;
    std::fs::read(sandbox.db()).expect("the database")
}

/// What the collector may do with a damaged file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Exit code 4 with a message naming the file.
    Refuse,
    /// Start and serve everything the file had (SQLite itself recovers, as from a torn WAL).
    Serve,
    /// Either refuse, or start and answer what touches the damage with an error: damage deep in
    /// the data is not looked for at start-up (that would read the whole file), so it surfaces
    /// when a query reads it. Never a panic, never a crash.
    RefuseOrError,
}

/// A damaged copy of a database: its bytes, a WAL beside it, and what the collector may do.
struct Damage {
    case: &'static str,
    bytes: Vec<u8>,
    wal: Option<Vec<u8>>,
    verdict: Verdict,
}

/// Damage at `--db`: refused with exit code 4 and a message naming the file, served intact
/// where SQLite recovers by itself, or surfacing as error answers; never a panic or a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_with_exit_4_or_answered_with_errors_never_a_panic() {
    let sandbox = Arc::new(Sandbox::new());
    let good = a_real_database(&sandbox).await;
    assert!(good.len() > 100_000, "{} bytes", good.len());
    let dir = sandbox.path();
    let page = 4096;

    let mut garbage = good.clone();
    for b in &mut garbage[good.len() / 2..good.len() / 2 + 3 * page] {
        *b = 0x5A;
    }
    let mut header = good.clone();
    header[..16].copy_from_slice(b"SQLite format 4\0");
    let damage =
        |case, bytes: &[u8], wal: Option<Vec<u8>>, verdict| Damage { case, bytes: bytes.to_vec(), wal, verdict };
    let cases = [
        damage("truncated to half", &good[..good.len() / 2 / page * page], None, Verdict::RefuseOrError),
        damage("three pages of garbage in the middle", &garbage, None, Verdict::RefuseOrError),
        damage("a wrong magic header", &header, None, Verdict::Refuse),
        damage("the first page only", &good[..page], None, Verdict::RefuseOrError),
        damage("a WAL of garbage beside it", &good, Some(vec![0xC3; 64 * 1024]), Verdict::Serve),
        damage("an empty file", &[], None, Verdict::Serve),
    ];

    let mut problems = Vec::new();
    for Damage { case, bytes, wal, verdict } in cases {
        let db = dir.join(format!("{}.db", case.replace(' ', "_")));
        std::fs::write(&db, &bytes).unwrap();
        if let Some(wal) = wal {
            std::fs::write(format!("{}-wal", db.display()), wal).unwrap();
        }
        let done = Launch::in_sandbox(sandbox.clone()).db(&db).run().await;
        let refused = !done.started && done.status.code() == Some(4) && done.stderr.contains(&db.display().to_string());
        if done.stderr.contains("panicked") {
            problems.push(format!("{case}: panicked\n{}", done.output()));
        } else if verdict == Verdict::Serve && !done.started {
            problems.push(format!("{case}: refused a usable file\n{}", done.output()));
        } else if verdict != Verdict::Serve && !done.started && !refused {
            problems.push(format!("{case}: not exit 4 with a message naming the file\n{}", done.output()));
        } else if verdict == Verdict::Refuse && done.started {
            problems.push(format!("{case}: started on it\n{}", done.output()));
        } else if verdict == Verdict::RefuseOrError && done.started {
            problems.extend(damage_surfaces_as_errors(&sandbox, &db, case).await);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));

    // The file beside a garbage WAL is served with everything it had.
    let db = dir.join("a_WAL_of_garbage_beside_it.db");
    let server = Launch::in_sandbox(sandbox.clone()).db(&db).start().await;
    assert_eq!(server.events("victim").await, session_of("victim", 300, false));
}

/// A collector started on a damaged file: every read and write of the damaged session is
/// answered (its data, or a JSON error), and the collector is still there and never panicked.
async fn damage_surfaces_as_errors(sandbox: &Arc<Sandbox>, db: &Path, case: &str) -> Vec<String> {
    let mut server = Launch::in_sandbox(sandbox.clone()).db(db).start().await;
    let mut problems = Vec::new();
    let mut answers = Vec::new();
    for path in ["/sessions", "/sessions/victim", "/sessions/victim?after=150", "/alerts", "/health"] {
        let resp = server.get(path).await;
        let status = resp.status();
        let json = resp.json::<Value>().await;
        if !(status == StatusCode::OK || status.is_server_error()) || json.is_err() {
            problems.push(format!("{case}: GET {path}: {status}, JSON: {}", json.is_ok()));
        }
        answers.push(format!("GET {path} {status}"));
    }
    let export = server.get("/sessions/victim/export").await;
    answers.push(format!("export {}", export.status()));
    let _ = export.bytes().await; // may break off where the damage is
    let (status, body) = server.post_event(&event("victim", 300, "cognition.thought", json!({}))).await;
    if !(status == StatusCode::OK || status.is_server_error()) {
        problems.push(format!("{case}: POST: {status} {body}"));
    }
    answers.push(format!("POST {status}"));
    let alive = server.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5)).await;
    if alive.and_then(|s| s.code()) != Some(0) || server.stderr().contains("panicked") {
        problems.push(format!("{case}: did not stop cleanly ({alive:?})\n{}", server.output()));
    }
    println!("{case}: started; {}", answers.join(", "));
    problems
}
