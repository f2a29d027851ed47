//! A fleet: several `aop` processes on one real PostgreSQL (started by the tests from Debian's
//! packages) behaving as one collector — one stream order, resume anywhere, alerts once,
//! nothing acknowledged lost when an instance or the database dies.

use crate::support::pg::Pg;
use crate::support::sse::{Read, SseStream};
use crate::support::{event, eventually, Launch, TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `n` instances on the database at `url`, each with `args`.
pub(crate) async fn fleet(url: &str, n: usize, args: &[&str]) -> Vec<TestServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Launch::new().db(url).args(args.iter().copied()).start().await);
    }
    out
}

/// A plain HTTP client that never panics: a dead instance is an answer too.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("client")
}

/// Posts a body; `None` when the instance could not be reached.
pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    body: String,
    ndjson: bool,
) -> Option<(StatusCode, Value)> {
    let ct = if ndjson { "application/x-ndjson" } else { "application/json" };
    let resp = client.post(format!("{base}/events")).header("content-type", ct).body(body).send().await.ok()?;
    let status = resp.status();
    let json = resp.json::<Value>().await.ok()?;
    Some((status, json))
}

/// Every event a stream delivered, by position, reading until `want` positions are in or the
/// stream ends; panics on a repeated position.
pub(crate) async fn collect(stream: &mut SseStream, seen: &mut BTreeMap<i64, (String, i64)>, want: usize) {
    let deadline = Instant::now() + PATIENCE * 4;
    while seen.len() < want {
        assert!(Instant::now() < deadline, "stream delivered {} of {want} events", seen.len());
        match stream.read(Duration::from_secs(5)).await {
            Read::Frame(f) if f.is_event() => {
                let key = f.key();
                assert!(seen.insert(f.id(), key.clone()).is_none(), "position {} delivered twice ({key:?})", f.id());
            }
            Read::Frame(_) | Read::TimedOut => {}
            Read::End | Read::Error(_) => break,
        }
    }
}

/// `(session, sequence) -> position` as the database holds them.
pub(crate) fn stored(pg: &Pg, db: &str) -> BTreeMap<(String, i64), i64> {
    let out = pg.psql(
        db,
        "SELECT s.id || '|' || e.seq || '|' || (g.first_pos + e.k) FROM aop_events e \
         JOIN aop_sessions s ON s.sid = e.sid JOIN aop_groups g ON g.grp = e.grp ORDER BY 1",
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.rsplitn(3, '|');
            let pos = parts.next().unwrap().parse().unwrap();
            let seq = parts.next().unwrap().parse().unwrap();
            ((parts.next().unwrap().to_owned(), seq), pos)
        })
        .collect()
}

pub(crate) fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingest_with_an_instance_killed_midway_is_one_order_everywhere() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let mut nodes = fleet(&url, 3, &[]).await;
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(TestServer::base).collect());
    let mut streams = Vec::new();
    for n in &nodes {
        streams.push(n.stream("/stream").await);
    }
    let down = Arc::new(Mutex::new(None::<usize>));
    let acked: Arc<Mutex<BTreeSet<(String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    // Six writers: three single-event, three batch; each owns its sessions, and sends each
    // request to the next instance in turn (another one when that one is down).
    let mut writers = Vec::new();
    for w in 0..6 {
        let (bases, down, acked, stop) = (Arc::clone(&bases), Arc::clone(&down), Arc::clone(&acked), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let c = client();
            let batch = w >= 3;
            let mut seq = 0;
            let mut turn = w;
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<Value> = (0..if batch { 50 } else { 1 })
                    .map(|_| {
                        seq += 1;
                        event(&format!("fleet-{w}-{}", seq % 4), seq, "cognition.thought", json!({"content": "x"}))
                    })
                    .collect();
                let body =
                    if batch { events.iter().map(|e| format!("{e}\n")).collect() } else { events[0].to_string() };
                loop {
                    turn += 1;
                    let target = turn % 3;
                    if *down.lock().unwrap() == Some(target) {
                        continue;
                    }
                    match post(&c, &bases[target], body.clone(), batch).await {
                        Some((StatusCode::OK, _)) => {
                            acked.lock().unwrap().extend(events.iter().map(|e| {
                                (e["session_id"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap())
                            }));
                            break;
                        }
                        // Down, overloaded or refused: the SDK's retry, on the next instance.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Instance 2 dies without warning, then comes back; its subscriber resumes from where it was.
    let mut before_kill = BTreeMap::new();
    collect(&mut streams[2], &mut before_kill, 1).await;
    *down.lock().unwrap() = Some(2);
    nodes[2].sigkill().await;
    collect(&mut streams[2], &mut before_kill, usize::MAX).await; // drains what was sent, then ends
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[2].start_again().await;
    *down.lock().unwrap() = None;
    let last = *before_kill.keys().last().expect("events before the kill");
    let mut resumed = nodes[2].stream_with("/stream", &[("Last-Event-ID", &last.to_string())]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let acked = acked.lock().unwrap().clone();
    let in_db = stored(pg, &db);
    assert!(acked.len() > 500, "too little load to mean anything: {}", acked.len());
    // Every acknowledged event is stored, once (the unique key), and nothing else is.
    assert_eq!(in_db.keys().cloned().collect::<BTreeSet<_>>(), acked, "stored events differ from acknowledged ones");
    // Positions are gap-free: 1..=n.
    let positions: Vec<i64> = in_db.values().copied().collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=in_db.len() as i64).collect::<Vec<_>>(), "positions have holes");
    let by_pos: BTreeMap<i64, (String, i64)> = in_db.iter().map(|(k, p)| (*p, k.clone())).collect();

    // Every subscriber of the survivors got every event once, with the database's positions.
    for (i, s) in streams.iter_mut().enumerate().take(2) {
        let mut seen = BTreeMap::new();
        collect(s, &mut seen, by_pos.len()).await;
        assert_eq!(seen, by_pos, "instance {i}'s subscriber");
    }
    // The killed instance's subscriber, before and after: everything, once.
    let mut after = BTreeMap::new();
    let want_after = by_pos.range(last + 1..).count();
    collect(&mut resumed, &mut after, want_after).await;
    assert!(after.keys().all(|&p| p > last), "resumption repeated an event");
    let mut union = before_kill.clone();
    union.extend(after);
    let expect: BTreeMap<i64, (String, i64)> =
        by_pos.iter().filter(|(p, _)| **p <= last || union.contains_key(p)).map(|(p, k)| (*p, k.clone())).collect();
    assert_eq!(union.len(), by_pos.len(), "the restarted instance's subscriber missed events");
    assert_eq!(union, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resumes_on_another_instance_without_a_gap() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let nodes = fleet(&url, 3, &[]).await;
    let events: Vec<Value> = (1..=80).map(|i| event("resume", i, "cognition.thought", json!({"content": i}))).collect();
    let mut first = nodes[0].stream("/stream").await;
    nodes[0].import(&events[..50]).await;
    let got = first.events(20).await;
    let last = got.last().unwrap().id();
    nodes[1].import(&events[50..]).await;
    let mut other = nodes[2].stream_with("/stream", &[("Last-Event-ID", &last.to_string())]).await;
    let rest = other.events(60).await;
    let seqs: Vec<i64> = got.iter().chain(&rest).map(|f| f.key().1).collect();
    assert_eq!(seqs, (1..=80).collect::<Vec<_>>());
    let ids: Vec<i64> = got.iter().chain(&rest).map(|f| f.id()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "positions not consecutive: {ids:?}");
    // Nothing more.
    assert!(!matches!(other.read(Duration::from_millis(500)).await, Read::Frame(f) if f.is_event()), "an extra event");
}

/// A session whose events raise a loop alert and a confidence-drop alert.
fn troubled_session(id: &str) -> Vec<Value> {
    let mut evs = vec![event(id, 1, "session.started", json!({"goal": "fetch the report"}))];
    let mut seq = 1;
    for _ in 0..6 {
        seq += 1;
        evs.push(event(
            id,
            seq,
            "operation.tool_start",
            json!({"tool_name": "http_get", "input": {"url": "https://x"}, "call_id": format!("c{seq}")}),
        ));
        seq += 1;
        evs.push(event(id, seq, "operation.tool_end", json!({"tool_name": "http_get", "call_id": format!("c{}", seq - 1), "status": "error", "error_message": "timeout", "tokens_used": 100})));
    }
    for c in ["high", "medium", "low", "low", "low"] {
        seq += 1;
        evs.push(event(id, seq, "cognition.thought", json!({"content": "hmm", "confidence": c})));
    }
    seq += 1;
    evs.push(event(id, seq, "session.ended", json!({"outcome": "failed"})));
    evs
}

/// The session's row and its alerts' types, from one instance.
async fn row_and_alerts(node: &TestServer, id: &str) -> (Value, Vec<String>) {
    let detail = node.get_ok(&format!("/sessions/{id}")).await;
    let mut row = detail["session"].clone();
    row.as_object_mut().unwrap().remove("pinned");
    let alerts = detail["alerts"].as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap().to_owned()).collect();
    (row, alerts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sessions_events_spread_over_instances_come_out_as_on_one() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let nodes = fleet(&url, 3, &[]).await;
    let events = troubled_session("spread");
    // At the same moment, from three clients to three instances, interleaved.
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mine: Vec<Value> = events.iter().skip(i).step_by(3).cloned().collect();
        let base = n.base();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for e in mine {
                let (status, _) = post(&c, &base, e.to_string(), false).await.expect("reachable");
                assert_eq!(status, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The order the fleet applied them in is the order of their positions.
    let stored_rows = stored(pg, &db_name(&url));
    let mut order: Vec<(i64, i64)> = stored_rows.iter().map(|((_, seq), pos)| (*pos, *seq)).collect();
    order.sort_unstable();
    let single = TestServer::start().await;
    for (_, seq) in &order {
        single.ingest_one(&events[(*seq - 1) as usize]).await;
    }
    let (want_row, want_alerts) = row_and_alerts(&single, "spread").await;
    assert!(want_alerts.contains(&"loop".to_owned()), "the session should raise a loop alert: {want_alerts:?}");
    for n in &nodes {
        let (row, alerts) = row_and_alerts(n, "spread").await;
        assert_eq!(row, want_row);
        assert_eq!(alerts, want_alerts);
    }
}

/// Every instance looks for idle sessions; the end they make has one identity, stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_session_is_ended_once_in_the_whole_fleet() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let nodes = fleet(&url, 3, &["--idle-end", "1"]).await;
    let started = json!({"goal": "g", "metadata": {"ends_when_idle": true}});
    nodes[0]
        .ingest(&[
            event("chat", 1, "session.started", started),
            event("chat", 2, "cognition.thought", json!({"content": "hm"})),
        ])
        .await;
    nodes[1].ingest(&[event("plain", 1, "session.started", json!({"goal": "g"}))]).await;
    eventually("the idle session's end", || async {
        (nodes[2].session("chat").await["status"] == "completed").then_some(())
    })
    .await;
    // Every instance's timer has fired a few times since.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &nodes {
        let detail = n.get_ok("/sessions/chat").await;
        let ends = detail["events"].as_array().unwrap().iter().filter(|e| e["type"] == "session.ended").count();
        assert_eq!(ends, 1, "{detail}");
        assert_eq!(n.session("plain").await["status"], "running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stall_raises_one_alert_in_the_whole_fleet() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let nodes = fleet(&url, 3, &["--stall-after", "2", "--stall-after-tool", "2"]).await;
    let mut streams = Vec::new();
    for n in &nodes {
        streams.push(n.stream("/stream?type=stall").await);
    }
    nodes[0].ingest(&[event("quiet", 1, "session.started", json!({"goal": "g"}))]).await;
    eventually("a stall alert", || async {
        let page = nodes[1].get_ok("/alerts?type=stall").await;
        (!page["alerts"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    // Every instance's timer has fired a few times since.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let page = nodes[2].get_ok("/alerts?type=stall").await;
    assert_eq!(page["alerts"].as_array().unwrap().len(), 1, "{page}");
    for (i, s) in streams.iter_mut().enumerate() {
        let f = s.message().await;
        assert_eq!(f.event.as_deref(), Some("alert"), "instance {i}");
        assert_eq!(f.json()["type"], "stall");
        assert!(matches!(s.read(Duration::from_millis(300)).await, Read::TimedOut), "instance {i}: a second alert");
    }
    assert_eq!(nodes[0].session("quiet").await["alert_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletions_and_pins_reach_every_instance() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let nodes = fleet(&url, 2, &[]).await;
    nodes[0].ingest(&troubled_session("gone")).await;
    let mut s = nodes[1].stream("/stream").await;
    let (status, _) = nodes[0].delete("/sessions/gone").await;
    assert_eq!(status, StatusCode::OK);
    // The session's events and alerts, published by this instance's feed, may come first.
    let f = loop {
        let f = s.message().await;
        if f.event.as_deref().is_some_and(|e| e != "alert") {
            break f;
        }
    };
    assert_eq!(f.event.as_deref(), Some("session.deleted"));
    assert_eq!(f.json()["session_id"], "gone");
    let (status, _) = nodes[1].get_json("/sessions/gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A pin on one instance is a pin on every instance.
    nodes[0].ingest(&[event("kept", 1, "session.started", json!({}))]).await;
    let resp = client()
        .post(nodes[0].url("/sessions/kept/pin"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(nodes[1].session("kept").await["pinned"], true);
    // The same id again, on the other instance: a new session, not the deleted one's state.
    nodes[1].ingest(&[event("gone", 1, "session.started", json!({"goal": "again"}))]).await;
    let row = nodes[0].session("gone").await;
    assert_eq!((row["event_count"].as_i64(), row["status"].as_str()), (Some(1), Some("running")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_catch_up_after_the_listening_connection_is_killed() {
    // A server of its own: killing listeners must not touch other tests' fleets.
    let pg = Pg::start();
    let url = pg.create_db();
    let db = db_name(&url);
    let nodes = fleet(&url, 2, &[]).await;
    let mut s = nodes[1].stream("/stream").await;
    nodes[0].ingest(&[event("listen", 1, "session.started", json!({}))]).await;
    assert_eq!(s.events(1).await[0].key().1, 1);
    assert!(pg.terminate_backends("LISTEN") >= 2, "each instance listens on a connection of its own");
    let events: Vec<Value> = (2..=40).map(|i| event("listen", i, "cognition.thought", json!({"content": i}))).collect();
    nodes[0].import(&events).await;
    let got: Vec<i64> = s.events(39).await.iter().map(|f| f.key().1).collect();
    assert_eq!(got, (2..=40).collect::<Vec<_>>());
    // And the listener is back: a later event arrives promptly, not at the next poll.
    eventually("the listener to reconnect", || async {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = '{db}'");
        (pg.psql("postgres", &sql) == "2").then_some(())
    })
    .await;
    let t = Instant::now();
    nodes[0].ingest(&[event("listen", 41, "cognition.thought", json!({}))]).await;
    s.events(1).await;
    assert!(t.elapsed() < Duration::from_millis(900), "delivery took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_back_transaction_leaves_no_hole_in_the_positions() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let nodes = fleet(&url, 2, &[]).await;
    let mut s = nodes[1].stream("/stream").await;
    nodes[0]
        .import(&(1..=10).map(|i| event("hole", i, "cognition.thought", json!({"content": i}))).collect::<Vec<_>>())
        .await;
    // A loop alert now fails its transaction after positions were taken: it must roll back whole.
    pg.psql(&db, "ALTER TABLE aop_alerts ADD CONSTRAINT no_loops CHECK (type <> 'loop')");
    let looped = troubled_session("looping");
    let (status, _) = post(&client(), &nodes[0].base(), looped.iter().map(|e| format!("{e}\n")).collect(), true)
        .await
        .expect("reachable");
    assert!(status.is_server_error(), "{status}");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM aop_events"), "10");
    pg.psql(&db, "ALTER TABLE aop_alerts DROP CONSTRAINT no_loops");
    nodes[1].import(&looped).await;
    let n = 10 + looped.len() as i64;
    // Acknowledged is committed; numbered follows within a sequencing step.
    let numbered = "SELECT count(*) || ' ' || max(g.first_pos + e.k) FROM aop_events e JOIN aop_groups g USING (grp)";
    let want = format!("{n} {n}");
    eventually("every event numbered, without a hole", || async { (pg.psql(&db, numbered) == want).then_some(()) })
        .await;
    let ids: Vec<i64> = s.events(n as usize).await.iter().map(|f| f.id()).collect();
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
}

/// A refused request: its status, its `Retry-After`, and how long the answer took.
type Refusal = (StatusCode, Option<String>, Duration);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_immediately_under_load_loses_nothing_acknowledged() {
    let pg = Pg::start();
    let url = pg.create_db();
    let db = db_name(&url);
    let nodes = fleet(&url, 2, &[]).await;
    let mut s = nodes[1].stream("/stream").await;
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(TestServer::base).collect());
    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<Refusal>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (bases, acked, refusals, stop) =
            (Arc::clone(&bases), Arc::clone(&acked), Arc::clone(&refusals), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let c = client();
            let mut seq = w * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let body = event("outage", seq, "cognition.thought", json!({"content": seq})).to_string();
                let t = Instant::now();
                let resp = c
                    .post(format!("{}/events", bases[seq as usize % 2]))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("the collector stays up");
                let status = resp.status();
                if status == StatusCode::OK {
                    acked.lock().unwrap().insert(seq);
                } else {
                    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                    refusals.lock().unwrap().push((status, retry, t.elapsed()));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.stop_immediate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health = client().get(format!("{}/health", bases[0])).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = health.json().await.unwrap();
    assert!(body["store"]["error"].as_str().unwrap_or("").contains("PostgreSQL"), "{body}");
    let (status, _) = nodes[0].get_json("/sessions").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    pg.start_again();
    let recovered = acked.lock().unwrap().len();
    eventually("ingest to recover by itself", || async {
        (acked.lock().unwrap().len() > recovered + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let refusals = refusals.lock().unwrap().clone();
    assert!(!refusals.is_empty(), "the outage was not noticed");
    for (status, retry, took) in &refusals {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry.is_some(), "503 without Retry-After");
        assert!(*took < Duration::from_secs(12), "an answer took {took:?}");
    }
    let acked = acked.lock().unwrap().clone();
    let in_db: BTreeSet<i64> = stored(&pg, &db).keys().map(|(_, seq)| *seq).collect();
    assert!(
        acked.is_subset(&in_db),
        "acknowledged events lost: {:?}",
        acked.difference(&in_db).take(5).collect::<Vec<_>>()
    );
    // The subscriber saw everything committed, once, in order.
    let mut seen = BTreeMap::new();
    collect(&mut s, &mut seen, in_db.len()).await;
    assert_eq!(seen.values().map(|(_, q)| *q).collect::<BTreeSet<_>>(), in_db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_started_together_migrate_once_and_a_newer_schema_is_refused() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let starts = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Launch::new().db(url).start().await })
    });
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.expect("started"));
    }
    // The latest version (one row): every migration ran once.
    assert_eq!(pg.psql(&db, "SELECT count(*) || ':' || max(version) FROM aop_schema"), "1:4");
    for n in &nodes {
        assert!(n.stdout().contains("postgres://aop:***@"), "{}", n.stdout());
        assert!(!(n.stdout() + &n.stderr()).contains("aop-secret-pw"), "the password was printed");
    }
    drop(nodes);
    pg.psql(&db, "UPDATE aop_schema SET version = 99");
    let out = Launch::new().db(&url).run().await;
    assert_ne!(out.code(), 0);
    assert!(out.output().contains("newer aop"), "{}", out.output());
    assert!(!(out.stdout.clone() + &out.stderr).contains("aop-secret-pw"));
}

#[tokio::test]
async fn unsupported_schemes_and_unreachable_servers_are_clear_refusals() {
    let sandbox = crate::support::Sandbox::new();
    let out = sandbox.run(&["start", "--port", "0", "--no-open", "--db", "mysql://root:hunter2@db/x"]).await;
    assert_ne!(out.code(), 0);
    assert!(out.output().contains("mysql://… is not supported"), "{}", out.output());
    assert!(!(out.stdout.clone() + &out.stderr).contains("hunter2"));
    assert!(!sandbox.path().join("mysql:").exists());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = sandbox
        .run(&["start", "--port", "0", "--no-open", "--db", &format!("postgres://u:hunter2@127.0.0.1:{port}/x")])
        .await;
    assert_ne!(out.code(), 0);
    assert!(out.output().contains("cannot open the database"), "{}", out.output());
    assert!(!(out.stdout.clone() + &out.stderr).contains("hunter2"), "{}", out.output());
    let out =
        sandbox.run(&["start", "--port", "0", "--no-open", "--db", "postgres://u@h/x", "--max-db-size", "1GB"]).await;
    assert_ne!(out.code(), 0);
    assert!(out.output().contains("--retain"), "{}", out.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_conformance_suite_passes_against_a_fleet_member() {
    let shared = std::env::var("AOP_SHARED").unwrap_or_else(|_| format!("{}/../shared", env!("CARGO_MANIFEST_DIR")));
    let suite = std::path::Path::new(&shared).join("conformance/aop_conformance.py");
    let pg = Pg::shared();
    let url = pg.create_db();
    let nodes = fleet(&url, 2, &[]).await;
    for n in &nodes {
        let (suite, base) = (suite.clone(), n.base());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3").arg(&suite).args(["--base", &base]).output().expect("python3")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        // What failed first: a long report is cut where the test log is shown.
        let failed: Vec<&str> = text.lines().filter(|l| !l.starts_with("PASS ")).collect();
        assert!(out.status.success(), "conformance against {}:\n{}\n\nin full:\n{text}", n.base(), failed.join("\n"));
        assert!(text.contains("0 failed"), "{text}");
    }
}
