//! Notifications (`GUARD.md`, "Notifications") end to end: the real binary delivering to a real
//! webhook receiver of the test's ([`crate::support::webhook`]) — each alert once, signed, with
//! the body the spec gives; the same delivery id on every retry; a receiver down then up, and a
//! collector SIGKILLed meanwhile; a fleet on PostgreSQL delivering each alert once; the rate cap
//! and its summary; Slack's message shape; `aop notify test`; refusals at start; the counts in
//! `/health` and `/metrics`; `GET /sessions/:id/deliveries`; nothing written without targets.

use crate::support::pg::Pg;
use crate::support::webhook::{Received, Receiver};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const SECRET: &str = "whsec-test-7c1f0d";

/// Room for a few retries: the backoff waits 1 s, 2 s, 4 s…
const RETRIES: Duration = Duration::from_secs(40);

/// A `[[notify]]` table for `url`, with more keys (`key = value` lines).
pub(crate) fn target(url: &str, more: &str) -> String {
    format!("[[notify]]\nurl = \"{url}\"\n{more}\n")
}

/// Writes the config file into the launch's sandbox and points the launch at it.
pub(crate) fn configured(launch: Launch, toml: &str) -> Launch {
    let path = config_file(launch.sandbox(), "config.toml", toml);
    launch.args(["--config", path.to_str().unwrap()])
}

fn config_file(sandbox: &Sandbox, name: &str, toml: &str) -> PathBuf {
    let path = sandbox.path().join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

/// A session that raises an error cascade (the third failed call) and a loop (the fourth
/// identical one): four identical tool calls that fail the same way.
fn troubled(s: &str) -> Vec<Value> {
    let mut evs = vec![event(s, 1, "session.started", json!({"goal": "fetch the report"}))];
    for i in 0..4 {
        let seq = 2 + 2 * i;
        evs.push(event(s, seq, "operation.tool_start", json!({"tool": "http_get", "input": {"url": "https://x"}})));
        evs.push(event(
            s,
            seq + 1,
            "operation.tool_end",
            json!({"tool": "http_get", "success": false, "error": "timeout"}),
        ));
    }
    evs
}

/// A session with one alert: three low-confidence thoughts (a confidence drop).
fn doubtful(s: &str, agent: &str) -> Vec<Value> {
    (1..=3)
        .map(|i| event(s, i, "cognition.thought", json!({"content": "hmm", "confidence": "low"})).agent(agent))
        .collect()
}

/// The alerts `/alerts` lists (all of them), by id.
async fn alerts(server: &TestServer) -> BTreeMap<i64, Value> {
    let page = server.get_ok("/alerts?limit=1000").await;
    page["alerts"].as_array().unwrap().iter().map(|a| (a["id"].as_i64().unwrap(), a.clone())).collect()
}

/// `GET /sessions/:id/deliveries`' list.
async fn deliveries(server: &TestServer, session: &str) -> Vec<Value> {
    server.get_ok(&format!("/sessions/{session}/deliveries")).await["deliveries"].as_array().unwrap().clone()
}

/// Checks `X-Aop-Signature` the way the README tells receivers to: HMAC-SHA256 of `"<t>.<body>"`
/// with the shared secret, compared in constant time, `t` recent.
fn verify_signature(r: &Received, secret: &str) {
    use hmac::{KeyInit, Mac};
    let header = r.header("x-aop-signature").unwrap_or_else(|| panic!("no signature: {:?}", r.headers));
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature {header:?} is not t=…,v1=…"));
    let t: u64 = t.parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(t) < 300, "signed at {t}, now {now}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, want, "the signature does not verify");
}

/// Nothing the collector printed holds the secret or the URL's path (a webhook's token).
fn assert_never_printed(server: &TestServer, secrets: &[&str]) {
    let out = server.output();
    for s in secrets {
        assert!(!out.contains(s), "the collector printed {s:?}:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_of_a_session_is_delivered_once_signed_with_the_alert_its_session_and_a_link() {
    let receiver = Receiver::start().await;
    let url = receiver.url("/hooks/T0K3N-path");
    let server =
        configured(Launch::new(), &target(&url, &format!("secret = \"{SECRET}\"\nname = \"ops\""))).start().await;
    let mut events = troubled("troubled");
    events.extend(doubtful("doubt", "test-agent"));
    // One batch: every alert is committed with its session's final row.
    server.import(&events).await;

    let listed = alerts(&server).await;
    let types: BTreeSet<&str> = listed.values().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(types, BTreeSet::from(["confidence_drop", "error_cascade", "loop"]), "{listed:#?}");
    let got = receiver.wait(listed.len()).await;
    // Time for a duplicate to show up, if one were coming.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_all = receiver.requests();
    assert_eq!(
        got_all.len(),
        listed.len(),
        "each alert once: {:?}",
        got_all.iter().map(Received::delivery).collect::<Vec<_>>()
    );
    let rows: BTreeMap<String, Value> =
        server.sessions("").await.into_iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r)).collect();
    let mut ids = BTreeSet::new();
    for r in &got {
        assert_eq!(r.path, "/hooks/T0K3N-path");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("user-agent").is_some_and(|u| u.starts_with("aop/")), "{:?}", r.headers);
        verify_signature(r, SECRET);
        let body = r.json();
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        let id = body["alert"]["id"].as_i64().unwrap();
        assert_eq!(r.delivery(), id.to_string(), "X-Aop-Delivery is the alert id");
        assert!(ids.insert(id), "alert {id} delivered twice");
        assert_eq!(body["alert"], listed[&id], "the alert exactly as GET /alerts shows it");
        let session = body["alert"]["session_id"].as_str().unwrap();
        assert_eq!(body["session"], rows[session], "the session's row as GET /sessions shows it");
        assert_eq!(body["link"], format!("{}/dashboard/#/sessions/{session}", server.base()));
    }
    assert_eq!(ids, listed.keys().copied().collect::<BTreeSet<_>>());

    // Each alert's delivery is recorded, by target name.
    let ds = deliveries(&server, "troubled").await;
    assert_eq!(ds.len(), 2, "{ds:#?}");
    for d in &ds {
        assert_eq!(
            (d["target"].as_str(), d["state"].as_str(), d["attempts"].as_u64()),
            (Some("ops"), Some("delivered"), Some(1)),
            "{d}"
        );
        assert!(d["delivered_at"].is_string() && d["next_attempt_at"].is_null() && d["last_error"].is_null(), "{d}");
    }
    let text = server.get("/sessions/troubled/deliveries").await.text().await.unwrap();
    assert!(!text.contains("T0K3N") && !text.contains(SECRET), "{text}");
    let (status, _) = server.get_json("/sessions/nobody/deliveries").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let index = server.get_ok("/").await;
    assert!(index["endpoints"]["GET /sessions/{id}/deliveries"].is_string(), "{index}");
    assert!(server.stdout().contains("  notify     ops\n"), "the targets are named at start: {}", server.stdout());
    assert_never_printed(&server, &["T0K3N", SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answered_500_is_sent_again_with_the_same_delivery_id() {
    let receiver = Receiver::start().await;
    receiver.fail_next(2);
    let server =
        configured(Launch::new(), &target(&receiver.url("/h"), &format!("secret = \"{SECRET}\""))).start().await;
    server.import(&doubtful("d", "a")).await;
    let delivered = receiver.wait_delivered(1, RETRIES).await;
    let all = receiver.requests();
    assert_eq!(all.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 500, 200]);
    let ids: BTreeSet<String> = all.iter().map(Received::delivery).collect();
    assert_eq!(ids.len(), 1, "the same X-Aop-Delivery on every retry: {ids:?}");
    let bodies: BTreeSet<&[u8]> = all.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies.len(), 1, "the same body on every retry");
    for r in &all {
        verify_signature(r, SECRET);
    }
    assert_eq!(delivered[0].json()["alert"]["id"].as_i64().unwrap().to_string(), ids.into_iter().next().unwrap());
    let d = &deliveries(&server, "d").await[0];
    assert_eq!((d["state"].as_str(), d["attempts"].as_u64()), (Some("delivered"), Some(3)), "{d}");
    assert!(d["last_error"].as_str().is_some_and(|e| e.contains("500")), "the last failure is kept: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_what_it_missed_and_the_counts_say_so() {
    let mut receiver = Receiver::down_from_the_start();
    let server = configured(Launch::new(), &target(&receiver.url("/down/T0K3N"), "name = \"late\"")).start().await;
    server.import(&doubtful("d", "a")).await;
    let waiting = eventually("a failed attempt, and another one due", || async {
        let ds = deliveries(&server, "d").await;
        let d = ds.first()?.clone();
        (d["attempts"].as_u64()? >= 1).then_some(d)
    })
    .await;
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");
    let error = waiting["last_error"].as_str().unwrap();
    assert!(error.contains("connect") && !error.contains("T0K3N") && !error.contains("/down"), "{error}");
    eventually("/health counts it pending", || async {
        let h = server.health().await;
        (h["notify"] == json!({"targets": 1, "pending": 1, "failed": 0})).then_some(())
    })
    .await;
    let m = server.metrics().await;
    assert_eq!((m.get("aop_notify_pending"), m.get("aop_notify_failed"), m.get("aop_notify_targets")), (1.0, 0.0, 1.0));
    assert!(m.get("aop_notify_attempts_failed_total") >= 1.0);

    receiver.up().await;
    let got = receiver.wait_delivered(1, RETRIES).await;
    assert_eq!(got[0].json()["session"]["id"], "d");
    eventually("/health counts nothing pending", || async {
        (server.health().await["notify"]["pending"] == 0).then_some(())
    })
    .await;
    let m = server.metrics().await;
    assert_eq!((m.get("aop_notify_pending"), m.get("aop_notify_delivered_total")), (0.0, 1.0));
    assert_never_printed(&server, &["T0K3N"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_when_the_collector_is_killed_are_delivered_after_a_restart() {
    let mut receiver = Receiver::down_from_the_start();
    let mut server = configured(Launch::new(), &target(&receiver.url("/k"), "")).start().await;
    let mut events = troubled("t");
    events.extend(doubtful("d", "a"));
    server.import(&events).await;
    let want = alerts(&server).await.len();
    assert_eq!(want, 3);
    eventually("every delivery tried once", || async {
        let mut ds = deliveries(&server, "t").await;
        ds.extend(deliveries(&server, "d").await);
        (ds.len() == want && ds.iter().all(|d| d["attempts"].as_u64() >= Some(1))).then_some(())
    })
    .await;
    server.sigkill().await;
    server.start_again().await;
    receiver.up().await;
    let got = receiver.wait_delivered(want, RETRIES).await;
    let ids: BTreeSet<String> = got.iter().map(Received::delivery).collect();
    assert_eq!(ids.len(), want, "each alert once: {ids:?}");
    assert_eq!(ids, alerts(&server).await.keys().map(|id| id.to_string()).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_past_the_max_age_is_marked_failed_with_its_last_error() {
    let _down = Receiver::down_from_the_start();
    let server =
        configured(Launch::new(), &target(&_down.url("/x"), "")).args(["--notify-max-age", "2s"]).start().await;
    server.import(&doubtful("d", "a")).await;
    let d = eventually("the delivery given up", || async {
        let d = deliveries(&server, "d").await.first()?.clone();
        (d["state"] == "failed").then_some(d)
    })
    .await;
    assert!(d["failed_at"].is_string() && d["next_attempt_at"].is_null(), "{d}");
    assert!(d["attempts"].as_u64() >= Some(2), "{d}");
    assert!(d["last_error"].as_str().is_some_and(|e| e.contains("connect")), "{d}");
    eventually("/health counts it failed", || async {
        (server.health().await["notify"] == json!({"targets": 1, "pending": 0, "failed": 1})).then_some(())
    })
    .await;
    assert_eq!(server.metrics().await.get("aop_notify_failed"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_takes_its_pending_deliveries_with_it() {
    let mut receiver = Receiver::down_from_the_start();
    let server = configured(Launch::new(), &target(&receiver.url("/x"), "")).start().await;
    server.import(&doubtful("gone", "a")).await;
    server.import(&doubtful("kept", "a")).await;
    eventually("two deliveries pending", || async { (server.health().await["notify"]["pending"] == 2).then_some(()) })
        .await;
    let (status, _) = server.delete("/sessions/gone").await;
    assert_eq!(status, StatusCode::OK);
    eventually("one delivery pending", || async { (server.health().await["notify"]["pending"] == 1).then_some(()) })
        .await;
    receiver.up().await;
    let got = receiver.wait_delivered(1, RETRIES).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.delivered().len(), 1);
    assert_eq!(got[0].json()["session"]["id"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_the_targets_of_each_alert_and_without_targets_nothing_is_written() {
    let loops = Receiver::start().await;
    let research = Receiver::start().await;
    let toml =
        target(&loops.url("/loops"), "types = [\"loop\"]") + &target(&research.url("/r"), "agents = [\"research-*\"]");
    let server = configured(Launch::new(), &toml).start().await;
    let mut events = troubled("t"); // loop and error cascade, agent test-agent
    events.extend(doubtful("r", "research-7")); // confidence drop
    events.extend(doubtful("o", "other")); // confidence drop, no target
    server.import(&events).await;
    let got = loops.wait(1).await;
    assert_eq!(got[0].json()["alert"]["type"], "loop");
    let got = research.wait(1).await;
    assert_eq!(got[0].json()["alert"]["session_id"], "r");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((loops.requests().len(), research.requests().len()), (1, 1));
    assert!(deliveries(&server, "o").await.is_empty());

    // No targets: alerts are raised, and the outbox stays empty.
    let plain = TestServer::start().await;
    plain.import(&troubled("t")).await;
    assert_eq!(alerts(&plain).await.len(), 2);
    assert!(deliveries(&plain, "t").await.is_empty());
    let db =
        rusqlite::Connection::open_with_flags(plain.db_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let rows: i64 = db.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0);
    assert_eq!(plain.health().await["notify"], json!({"targets": 0, "pending": 0, "failed": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_per_minute_the_rest_go_in_one_summary() {
    let receiver = Receiver::start().await;
    let server = configured(
        Launch::new(),
        &target(&receiver.url("/capped"), &format!("max_per_minute = 3\nsecret = \"{SECRET}\"")),
    )
    .start()
    .await;
    // Eight alerts committed together.
    let events: Vec<Value> = (0..8).flat_map(|i| doubtful(&format!("s{i}"), "a")).collect();
    server.import(&events).await;
    let listed = alerts(&server).await;
    assert_eq!(listed.len(), 8);
    let got = receiver.wait(3).await;
    // A minute's messages are used up: nothing more comes meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.requests().len(),
        3,
        "{:?}",
        receiver.requests().iter().map(Received::delivery).collect::<Vec<_>>()
    );
    let (singles, summaries): (Vec<&Received>, Vec<&Received>) =
        got.iter().partition(|r| r.json().get("alert").is_some());
    assert_eq!((singles.len(), summaries.len()), (2, 1));
    let summary = summaries[0].json();
    verify_signature(summaries[0], SECRET);
    assert!(summaries[0].delivery().starts_with("summary-"), "{}", summaries[0].delivery());
    assert_eq!(summary["summary"]["held_back"], 6, "{summary}");
    assert_eq!(summary["summary"]["max_per_minute"], 3);
    assert_eq!(summary["summary"]["types"], json!({"confidence_drop": 6}));
    assert_eq!(summary["summary"]["sessions"].as_array().unwrap().len(), 6);
    assert_eq!(summary["link"], format!("{}/dashboard/", server.base()));
    let mut covered: BTreeSet<i64> =
        summary["summary"]["alert_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    for s in &singles {
        assert!(covered.insert(s.json()["alert"]["id"].as_i64().unwrap()));
    }
    assert_eq!(covered, listed.keys().copied().collect(), "every alert sent or summarised");
    // A held alert is not lost: its state says it was summarised.
    let mut states = BTreeMap::new();
    for i in 0..8 {
        for d in deliveries(&server, &format!("s{i}")).await {
            *states.entry(d["state"].as_str().unwrap().to_owned()).or_insert(0) += 1;
            assert!(d["delivered_at"].is_string(), "{d}");
        }
    }
    assert_eq!(states, BTreeMap::from([("delivered".to_owned(), 2), ("summarised".to_owned(), 6)]));
}

/// What Slack documents for an incoming webhook's message: `text` (required with `blocks`, the
/// fallback for notifications), and `blocks`, at most 50, here `section` (a text object, `mrkdwn`
/// or `plain_text`, at most 3,000 characters) and `context` (1 to 10 text elements).
fn assert_slack_message(body: &Value) {
    let o = body.as_object().unwrap_or_else(|| panic!("not an object: {body}"));
    for key in o.keys() {
        assert!(
            ["text", "blocks", "attachments", "thread_ts", "mrkdwn"].contains(&key.as_str()),
            "{key} is not a Slack field"
        );
    }
    assert!(o["text"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    let blocks = o["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    let text_object = |t: &Value| {
        assert!(["mrkdwn", "plain_text"].contains(&t["type"].as_str().unwrap()), "{t}");
        let text = t["text"].as_str().unwrap();
        assert!(!text.is_empty() && text.chars().count() <= 3000, "{t}");
    };
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "section" => text_object(&b["text"]),
            "context" => {
                let elements = b["elements"].as_array().unwrap();
                assert!((1..=10).contains(&elements.len()), "{b}");
                elements.iter().for_each(text_object);
            }
            other => panic!("block type {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_target_gets_a_message_in_slacks_documented_shape() {
    let receiver = Receiver::start().await;
    let server =
        configured(Launch::new(), &target(&receiver.url("/services/T0/B0/X"), "format = \"slack\"")).start().await;
    // Session ids are plain; a goal and a tool's name are the agent's own text.
    let s = "run:1@x";
    let mut events = vec![event(s, 1, "session.started", json!({"goal": "reach <!channel> & <b>"}))];
    for i in 0..4 {
        let seq = 2 + 2 * i;
        events.push(event(s, seq, "operation.tool_start", json!({"tool": "<!here>", "input": {"q": 1}})));
        events.push(event(
            s,
            seq + 1,
            "operation.tool_end",
            json!({"tool": "<!here>", "success": true, "output_summary": "same"}),
        ));
    }
    server.import(&events).await;
    let got = receiver.wait(1).await;
    let body = got[0].json();
    assert_slack_message(&body);
    assert!(got[0].header("x-aop-signature").is_none(), "Slack messages are not signed");
    let all = body.to_string();
    assert!(!all.contains("<!channel>") && !all.contains("<!here>"), "agents' text escaped: {body}");
    assert!(all.contains("&lt;!here&gt;") && all.contains("reach &lt;!channel&gt; &amp; &lt;b&gt;"), "{body}");
    let section = body["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        section.contains(&format!("<{}/dashboard/#/sessions/run%3A1%40x|run:1@x>", server.base())),
        "a link: {section}"
    );
    assert!(section.contains("*loop* (warning)"), "{section}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aop_notify_test_reports_each_target_by_name_and_never_its_url() {
    let receiver = Receiver::start().await;
    let closed = Receiver::down_from_the_start();
    let sandbox = Sandbox::new();
    let good = target(&receiver.url("/T0K3N-good"), &format!("name = \"team\"\nsecret = \"{SECRET}\""));
    let bad = target(&closed.url("/T0K3N-bad"), "format = \"slack\"");
    let both = config_file(&sandbox, "both.toml", &(good.clone() + &bad));
    let done = sandbox.run(&["notify", "test", "--config", both.to_str().unwrap()]).await;
    done.assert_code(1);
    assert!(done.stdout.contains("ok      team: delivered (HTTP 200)"), "{}", done.output());
    let unnamed = format!("FAILED  slack to {}: cannot connect", closed.addr().ip());
    assert!(done.stdout.contains(&unnamed), "{}", done.output());
    for secret in ["T0K3N", SECRET] {
        assert!(!done.stdout.contains(secret) && !done.stderr.contains(secret), "{secret} printed:\n{}", done.output());
    }
    let got = receiver.wait(1).await;
    verify_signature(&got[0], SECRET);
    assert!(got[0].delivery().starts_with("test-"), "{}", got[0].delivery());
    assert_eq!(got[0].json()["alert"]["type"], "loop");

    let one = config_file(&sandbox, "one.toml", &good);
    sandbox.run(&["notify", "test", "--config", one.to_str().unwrap()]).await.assert_code(0);
    assert_eq!(receiver.requests().len(), 2);
    let none = config_file(&sandbox, "none.toml", "port = 4000\n");
    let done = sandbox.run(&["notify", "test", "--config", none.to_str().unwrap()]).await;
    done.assert_code(2);
    assert!(done.stderr.contains("[[notify]]"), "{}", done.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_not_http_or_has_unknown_keys_is_refused_at_start() {
    let cases = [
        (target("ftp://files.example.com/T0K3N", ""), vec!["#1", "http:// or https://", "ftp:"]),
        (target("https://hooks.example.com/T0K3N", "secert = \"T0K3N\""), vec!["unknown field", "secert"]),
        (target("https://hooks.example.com/T0K3N", "types = [\"loops\"]"), vec!["loops", "error_cascade"]),
        ("[notify]\nurl = \"https://hooks.example.com/T0K3N\"\n".to_owned(), vec!["[[notify]]"]),
    ];
    for (toml, words) in cases {
        let done = configured(Launch::new(), &toml).run().await;
        done.assert_code(2);
        for w in words {
            assert!(done.stderr.contains(w), "{w:?} not said:\n{}", done.output());
        }
        assert!(!done.output().contains("T0K3N"), "the URL was printed:\n{}", done.output());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_on_one_postgres_deliver_each_alert_once() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let receiver = Receiver::start().await;
    // Every alert's first attempt fails somewhere in the fleet: retries are claimed again.
    receiver.fail_next(4);
    let toml = target(&receiver.url("/fleet"), &format!("secret = \"{SECRET}\""));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(configured(Launch::new().db(&url), &toml).start().await);
    }
    // Ten sessions, their events sent to the three instances in turn.
    for i in 0..10 {
        let events = if i % 2 == 0 { troubled(&format!("t{i}")) } else { doubtful(&format!("d{i}"), "a") };
        nodes[i % 3].import(&events).await;
    }
    let listed = alerts(&nodes[0]).await;
    assert_eq!(listed.len(), 5 * 2 + 5);
    let got = receiver.wait_delivered(listed.len(), RETRIES).await;
    // Every instance's worker has polled a few times since.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let delivered = receiver.delivered();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in &delivered {
        verify_signature(r, SECRET);
        *count.entry(r.delivery()).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "an alert delivered twice: {count:?}");
    assert_eq!(count.keys().cloned().collect::<BTreeSet<_>>(), listed.keys().map(|id| id.to_string()).collect());
    assert_eq!(got.len(), listed.len());
    // Each instance shows the fleet's deliveries, and counts nothing pending.
    for n in &nodes {
        let ds = deliveries(n, "t0").await;
        assert_eq!(ds.len(), 2, "{ds:#?}");
        assert!(ds.iter().all(|d| d["state"] == "delivered"), "{ds:#?}");
        eventually("nothing pending", || async { (n.health().await["notify"]["pending"] == 0).then_some(()) }).await;
    }
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let rows = pg.psql(db, "SELECT count(*) FROM aop_deliveries WHERE state = 'delivered'");
    assert_eq!(rows, listed.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_fleet_a_killed_instances_pending_deliveries_are_delivered_by_the_others() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let mut receiver = Receiver::down_from_the_start();
    let toml = target(&receiver.url("/fleet"), "");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(configured(Launch::new().db(&url), &toml).start().await);
    }
    nodes[0].import(&troubled("t")).await;
    eventually("both deliveries tried", || async {
        let ds = deliveries(&nodes[1], "t").await;
        (ds.len() == 2 && ds.iter().all(|d| d["attempts"].as_u64() >= Some(1))).then_some(())
    })
    .await;
    nodes[0].sigkill().await;
    receiver.up().await;
    let got = receiver.wait_delivered(2, RETRIES).await;
    let ids: BTreeSet<String> = got.iter().map(Received::delivery).collect();
    assert_eq!(ids.len(), 2);
    let ds = deliveries(&nodes[1], "t").await;
    assert!(ds.iter().all(|d| d["state"] == "delivered"), "{ds:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_an_answer_not_followed() {
    let receiver = Receiver::start().await;
    // Answered 301 with a Location on the same receiver: followed, it would show up as /moved.
    receiver.answer_next(1, 301);
    let server = configured(Launch::new(), &target(&receiver.url("/r"), "")).start().await;
    server.import(&doubtful("d", "a")).await;
    receiver.wait_delivered(1, RETRIES).await;
    let all = receiver.requests();
    assert_eq!(all.iter().map(|r| (r.path.as_str(), r.answered)).collect::<Vec<_>>(), [("/r", 301), ("/r", 200)]);
    let d = &deliveries(&server, "d").await[0];
    assert_eq!((d["state"].as_str(), d["attempts"].as_u64()), (Some("delivered"), Some(2)), "{d}");
    assert!(d["last_error"].as_str().is_some_and(|e| e.contains("301") && e.contains("redirect")), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_are_verified_against_the_trusted_roots() {
    let launch = Launch::new();
    let dir = launch.sandbox().path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    let ca = crate::support::pg::make_ca(&dir);
    let (cert, key) = crate::support::pg::make_server_cert(&dir);
    let receiver = Receiver::start_tls(&cert, &key).await;
    let toml = target(&receiver.url("/secure/T0K3N"), &format!("secret = \"{SECRET}\""));

    // The system's roots do not know the test's CA: the handshake fails, nothing is sent.
    let untrusted = configured(Launch::new(), &toml).start().await;
    untrusted.import(&doubtful("d", "a")).await;
    let d = eventually("a failed attempt", || async {
        let d = deliveries(&untrusted, "d").await.first()?.clone();
        (d["attempts"].as_u64()? >= 1).then_some(d)
    })
    .await;
    let error = d["last_error"].as_str().unwrap();
    assert!(error.starts_with("TLS") && error.contains("certificate"), "{error}");
    assert!(!error.contains("T0K3N"), "{error}");
    assert!(receiver.requests().is_empty());
    drop(untrusted);

    // Trusted as any program is told of it (SSL_CERT_FILE): delivered, over TLS, signed.
    let server = configured(launch.env("SSL_CERT_FILE", ca.to_str().unwrap()), &toml).start().await;
    server.import(&doubtful("d", "a")).await;
    let got = receiver.wait(1).await;
    assert_eq!(got[0].path, "/secure/T0K3N");
    assert_eq!(got[0].header("host"), Some(format!("localhost:{}", receiver.addr().port()).as_str()));
    verify_signature(&got[0], SECRET);
    assert_never_printed(&server, &["T0K3N", SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_fleet_a_dead_instances_claim_is_taken_over_once_its_lease_ends() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let receiver = Receiver::start().await;
    // The first attempt is kept waiting: its instance dies holding the claim.
    receiver.answer_next(1, crate::support::webhook::HANG);
    let toml = target(&receiver.url("/lease"), "");
    let mut first = configured(Launch::new().db(&url), &toml).start().await;
    first.import(&doubtful("d", "a")).await;
    let hung = eventually("the attempt in flight", || async { receiver.requests().first().cloned() }).await;
    first.sigkill().await;

    let second = configured(Launch::new().db(&url), &toml).start().await;
    // Its worker has polled a few times: the claim's lease keeps it off the delivery.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.requests().len(), 1, "taken over before the lease ended");
    let d = &deliveries(&second, "d").await[0];
    assert_eq!((d["state"].as_str(), d["attempts"].as_u64()), (Some("pending"), Some(0)), "{d}");
    // The lease ends (as two minutes would end it).
    pg.psql(&db, "UPDATE aop_deliveries SET next_ms = 0 WHERE done_ms IS NULL");
    let got = receiver.wait(1).await.remove(0);
    assert_eq!(got.delivery(), hung.delivery(), "the same delivery, taken over");
    let d = &deliveries(&second, "d").await[0];
    assert_eq!((d["state"].as_str(), d["attempts"].as_u64()), (Some("delivered"), Some(1)), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_raised_on_the_collectors_clock_is_delivered_too() {
    let receiver = Receiver::start().await;
    let launch = configured(Launch::new(), &target(&receiver.url("/stalls"), "types = [\"stall\"]"));
    let server = launch.args(["--stall-after", "1", "--stall-after-tool", "1"]).start().await;
    server.ingest_one(&event("quiet", 1, "session.started", json!({"goal": "wait"}))).await;
    let got = receiver.wait(1).await;
    let body = got[0].json();
    assert_eq!(
        (body["alert"]["type"].as_str(), body["session"]["id"].as_str()),
        (Some("stall"), Some("quiet")),
        "{body}"
    );
    assert_eq!(body["alert"], alerts(&server).await[&body["alert"]["id"].as_i64().unwrap()]);
}
