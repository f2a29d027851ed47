//! Alerts end to end: what each detector raises through the API, once per episode, stored with
//! the session, listed by `/alerts`, streamed as `event: alert`, replayed identically, and
//! carried across a restart.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn thought(session: &str, seq: i64, confidence: &str) -> Value {
    event(session, seq, "cognition.thought", json!({"content": format!("thought {seq}"), "confidence": confidence}))
}

fn tool_end(session: &str, seq: i64, payload: Value) -> Value {
    let mut p = json!({"tool": "fetch"});
    p.as_object_mut().unwrap().extend(payload.as_object().unwrap().clone());
    event(session, seq, "operation.tool_end", p)
}

/// A tool call: start and end, `seq` and `seq + 1`, at `secs` and half a second later.
fn call(session: &str, seq: i64, secs: i64, input: Value, result: &str) -> [Value; 2] {
    [
        event(session, seq, "operation.tool_start", json!({"tool": "search", "input": input})).at(secs),
        event(
            session,
            seq + 1,
            "operation.tool_end",
            json!({"tool": "search", "success": true, "output_summary": result}),
        )
        .stamped(&at(secs).replace(".000Z", ".500Z")),
    ]
}

/// The alerts `/alerts` lists for one session, newest first.
async fn alerts_of(server: &TestServer, session: &str) -> Vec<Value> {
    server.get_ok(&format!("/alerts?session_id={session}&limit=1000")).await["alerts"].as_array().unwrap().clone()
}

/// An alert with its per-run fields (id, creation time) removed.
fn essence(alert: &Value) -> Value {
    let mut a = alert.clone();
    let o = a.as_object_mut().unwrap();
    o.remove("id");
    o.remove("created_at");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_stored_with_its_session_listed_and_streamed() {
    let server = TestServer::start().await;
    let mut all = server.stream("/stream").await;
    let mut operations = server.stream("/stream?type=operation.*").await;
    let mut other = server.stream("/stream?session_id=other").await;

    server.ingest(&[event("doubt", 1, "session.started", json!({}))]).await;
    server.ingest(&(2..=4).map(|i| thought("doubt", i, "low")).collect::<Vec<_>>()).await;

    let listed = server.get_ok("/alerts").await;
    assert_eq!(listed["next_cursor"], Value::Null);
    let alerts = listed["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{listed:#}");
    let alert = &alerts[0];
    assert!(alert["id"].is_i64(), "{alert}");
    assert_eq!(alert["session_id"], "doubt");
    assert_eq!(alert["type"], "confidence_drop");
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["sequence"], 4, "the third low thought triggers it");
    assert!(alert["message"].as_str().is_some_and(|m| !m.is_empty()), "{alert}");
    assert!(alert["details"].is_object(), "{alert}");
    let created = alert["created_at"].as_str().unwrap();
    assert!(OffsetDateTime::parse(created, &Rfc3339).is_ok(), "created_at {created:?} is not RFC 3339");

    let detail = server.get_ok("/sessions/doubt").await;
    assert_eq!(detail["alerts"], json!([alert]));
    assert_eq!(detail["session"]["alert_count"], 1);

    // Streamed as a named message without an id, carrying the same object.
    let frames = all.messages(5).await;
    let named: Vec<&Frame> = frames.iter().filter(|f| !f.is_event()).collect();
    assert_eq!(named.len(), 1, "{frames:#?}");
    assert_eq!(named[0].event.as_deref(), Some("alert"));
    assert_eq!(named[0].id, None);
    assert_eq!(named[0].json(), *alert);
    // A type filter narrows AOP events only; a session filter applies to alerts too.
    let m = operations.message().await;
    assert_eq!((m.event.as_deref(), m.json()), (Some("alert"), alert.clone()));
    let next = event("other", 1, "session.started", json!({}));
    server.ingest_one(&next).await;
    assert_eq!(other.message().await.json(), next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_per_episode_and_a_new_one_when_it_recurs() {
    let server = TestServer::start().await;
    let s = "moody";
    server.ingest(&(1..=4).map(|i| thought(s, i, "low")).collect::<Vec<_>>()).await;
    assert_eq!(alerts_of(&server, s).await.len(), 1, "the fourth low thought is the same episode");
    // Other event types do not break the run; another confidence does.
    server.ingest(&[event(s, 5, "operation.tool_start", json!({"tool": "t"})), thought(s, 6, "low")]).await;
    assert_eq!(alerts_of(&server, s).await.len(), 1);
    server.ingest(&[thought(s, 7, "high")]).await;
    server.ingest(&(8..=10).map(|i| thought(s, i, "low")).collect::<Vec<_>>()).await;

    let listed = alerts_of(&server, s).await;
    let seqs: Vec<&Value> = listed.iter().map(|a| &a["sequence"]).collect();
    assert_eq!(seqs, [&json!(10), &json!(3)], "newest first");
    let detail = server.get_ok(&format!("/sessions/{s}")).await;
    let seqs: Vec<&Value> = detail["alerts"].as_array().unwrap().iter().map(|a| &a["sequence"]).collect();
    assert_eq!(seqs, [&json!(3), &json!(10)], "the detail lists them oldest first");
    assert_eq!(detail["session"]["alert_count"], 2);
}

/// A detector case: events of one session, and the alerts (type, severity) they must raise.
struct Case {
    name: &'static str,
    events: fn(&str) -> Vec<Value>,
    want: &'static [(&'static str, &'static str)],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "three low-confidence thoughts",
            events: |s| (1..=3).map(|i| thought(s, i, "low")).collect(),
            want: &[("confidence_drop", "warning")],
        },
        Case {
            name: "a medium thought breaks the run",
            events: |s| {
                vec![
                    thought(s, 1, "low"),
                    thought(s, 2, "low"),
                    thought(s, 3, "medium"),
                    thought(s, 4, "low"),
                    thought(s, 5, "low"),
                ]
            },
            want: &[],
        },
        Case {
            name: "three failed tool calls in a row",
            events: |s| (1..=3).map(|i| tool_end(s, i, json!({"success": false, "error": format!("e{i}")}))).collect(),
            want: &[("error_cascade", "critical")],
        },
        Case {
            name: "an end without `success` neither counts nor resets",
            events: |s| {
                vec![
                    tool_end(s, 1, json!({"success": false, "error": "a"})),
                    tool_end(s, 2, json!({"success": false, "error": "b"})),
                    tool_end(s, 3, json!({"result_summary": "?"})),
                    tool_end(s, 4, json!({"success": false, "error": "c"})),
                ]
            },
            want: &[("error_cascade", "critical")],
        },
        Case {
            name: "a success resets the failures",
            events: |s| {
                vec![
                    tool_end(s, 1, json!({"success": false})),
                    tool_end(s, 2, json!({"success": false})),
                    tool_end(s, 3, json!({"success": true})),
                    tool_end(s, 4, json!({"success": false})),
                    tool_end(s, 5, json!({"success": false})),
                ]
            },
            want: &[],
        },
        Case {
            name: "the same call four times with the same result",
            events: |s| (0..4).flat_map(|i| call(s, 1 + 2 * i, 5 * i, json!({"q": "same"}), "nothing")).collect(),
            want: &[("loop", "warning")],
        },
        Case {
            name: "paging is progress",
            events: |s| {
                (0..4).flat_map(|i| call(s, 1 + 2 * i, 5 * i, json!({"q": "same", "page": i}), "10 hits")).collect()
            },
            want: &[],
        },
        Case {
            name: "polling a job whose status changes is progress",
            events: |s| {
                let results = ["queued", "running", "running 50%", "done"];
                (0..4).flat_map(|i| call(s, 1 + 2 * i, 5 * i, json!({"job": 7}), results[i as usize])).collect()
            },
            want: &[],
        },
        Case {
            name: "the same call spread over more than 60 s",
            events: |s| (0..4).flat_map(|i| call(s, 1 + 2 * i, 25 * i, json!({"q": "same"}), "nothing")).collect(),
            want: &[],
        },
        Case {
            name: "a cost 20 times the median of five",
            events: |s| {
                (1..=6)
                    .map(|i| tool_end(s, i, json!({"success": true, "cost_usd": if i == 6 { 0.2 } else { 0.01 }})))
                    .collect()
            },
            want: &[("cost_spike", "warning")],
        },
        Case {
            name: "a cost 4 times the median is no spike",
            events: |s| {
                (1..=6)
                    .map(|i| tool_end(s, i, json!({"success": true, "cost_usd": if i == 6 { 0.04 } else { 0.01 }})))
                    .collect()
            },
            want: &[],
        },
        Case {
            name: "a spike needs five earlier increments",
            events: |s| {
                (1..=5)
                    .map(|i| tool_end(s, i, json!({"success": true, "cost_usd": if i == 5 { 1.0 } else { 0.01 }})))
                    .collect()
            },
            want: &[],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_detector_fires_on_its_pattern_and_not_on_progress() {
    let server = TestServer::start().await;
    let mut problems = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let session = format!("case_{i}");
        server.ingest(&(case.events)(&session)).await;
        let got: Vec<(String, String)> = alerts_of(&server, &session)
            .await
            .iter()
            .map(|a| (a["type"].as_str().unwrap().to_owned(), a["severity"].as_str().unwrap().to_owned()))
            .collect();
        let want: Vec<(String, String)> = case.want.iter().map(|(t, s)| (t.to_string(), s.to_string())).collect();
        if got != want {
            problems.push(format!("{}: expected {want:?}, got {got:?}", case.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_children_failing_within_a_minute_alert_their_parent() {
    let server = TestServer::start().await;
    let child_end = |child: &str, secs: i64| {
        event(child, 2, "session.ended", json!({"outcome": "failed"})).agent("helper").parent("lead").at(secs)
    };
    server.ingest(&[event("lead", 1, "session.started", json!({"goal": "delegate"}))]).await;
    for child in ["kid_a", "kid_b", "kid_c"] {
        server.ingest(&[event(child, 1, "session.started", json!({})).agent("helper").parent("lead")]).await;
    }
    server.ingest(&[child_end("kid_a", 10)]).await;
    assert_eq!(alerts_of(&server, "lead").await.len(), 0, "one failed child is no cascade");
    server.ingest(&[child_end("kid_b", 40)]).await;

    let alerts = alerts_of(&server, "lead").await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!((alerts[0]["type"].as_str(), alerts[0]["severity"].as_str()), (Some("error_cascade"), Some("critical")));
    for kid in ["kid_a", "kid_b"] {
        assert_eq!(alerts_of(&server, kid).await, Vec::<Value>::new(), "alerted on the child {kid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_session_raises_the_same_alerts() {
    let server = TestServer::start().await;
    let s = "replayed";
    let mut events = vec![event(s, 1, "session.started", json!({"goal": "g"}))];
    events.extend((2..=4).map(|i| thought(s, i, "low")));
    events.extend((5..=7).map(|i| tool_end(s, i, json!({"success": false, "error": "timeout"}))));
    events.extend((0..4).flat_map(|i| call(s, 8 + 2 * i, 10 + 5 * i, json!({"q": "again"}), "none")));
    events.extend(
        (16..=21).map(|i| tool_end(s, i, json!({"success": true, "cost_usd": if i == 21 { 0.5 } else { 0.01 }}))),
    );
    server.ingest(&events).await;
    let first: Vec<Value> = alerts_of(&server, s).await.iter().map(essence).collect();
    let kinds: BTreeSet<&str> = first.iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["confidence_drop", "error_cascade", "loop", "cost_spike"]), "{first:#?}");

    let export = server.get(&format!("/sessions/{s}/export")).await.text().await.unwrap();
    server.delete(&format!("/sessions/{s}")).await;
    assert_eq!(alerts_of(&server, s).await, Vec::<Value>::new(), "the alerts went with the session");
    let (status, body) = server.post_ndjson(export).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    let second: Vec<Value> = alerts_of(&server, s).await.iter().map(essence).collect();
    assert_eq!(second, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_resumes_mid_episode_after_a_restart() {
    let mut server = TestServer::start().await;
    server.ingest(&[thought("resumed", 1, "low"), thought("resumed", 2, "low")]).await;
    server.restart().await;
    server.ingest(&[thought("resumed", 3, "low")]).await;
    let alerts = alerts_of(&server, "resumed").await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["sequence"], 3);

    server.sigkill().await;
    server.start_again().await;
    server.ingest(&[thought("resumed", 4, "low")]).await;
    assert_eq!(alerts_of(&server, "resumed").await.len(), 1, "still the same episode after a crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_running_session_stalls_once_per_silence_and_an_ended_one_never() {
    let server = Launch::new().args(["--stall-after", "1", "--stall-after-tool", "60"]).start().await;
    let mut live = server.stream("/stream?type=none").await;
    server
        .ingest(&[
            event("quiet", 1, "session.started", json!({})),
            event("done", 1, "session.started", json!({})),
            event("done", 2, "session.ended", json!({"outcome": "completed"})),
            event("busy", 1, "session.started", json!({})),
            event("busy", 2, "operation.tool_start", json!({"tool": "slow"})),
        ])
        .await;

    let stall = eventually("a stall alert for the quiet session", || async {
        alerts_of(&server, "quiet").await.into_iter().next()
    })
    .await;
    assert_eq!(stall["type"], "stall");
    assert_eq!(stall["severity"], "warning");
    assert_eq!(stall["sequence"], Value::Null);
    let m = live.message().await;
    assert_eq!((m.event.as_deref(), m.json()), (Some("alert"), stall.clone()));

    // Another tick or two of the stall timer: still one alert for this silence, none for the others.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(alerts_of(&server, "quiet").await.len(), 1, "one alert per silence");
    assert_eq!(alerts_of(&server, "done").await, Vec::<Value>::new(), "an ended session stalled");
    assert_eq!(alerts_of(&server, "busy").await, Vec::<Value>::new(), "a session waiting on a tool stalled early");

    // An event ends the episode; the next silence is a new one.
    server.ingest(&[event("quiet", 2, "session.heartbeat", json!({"status": "running"}))]).await;
    eventually("a second stall", || async { (alerts_of(&server, "quiet").await.len() == 2).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_list_pages_newest_first_and_filters() {
    let server = TestServer::start().await;
    assert_eq!(server.get_ok("/alerts").await, json!({"alerts": [], "next_cursor": null}));
    for i in 0..5 {
        server.ingest(&(1..=3).map(|q| thought(&format!("low_{i}"), q, "low")).collect::<Vec<_>>()).await;
    }
    for i in 0..2 {
        let s = format!("fail_{i}");
        server.ingest(&(1..=3).map(|q| tool_end(&s, q, json!({"success": false}))).collect::<Vec<_>>()).await;
    }

    let mut ids = Vec::new();
    let mut path = "/alerts?limit=2".to_owned();
    loop {
        let page = server.get_ok(&path).await;
        ids.extend(page["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/alerts?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 7);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, each once: {ids:?}");

    let cascades = server.get_ok("/alerts?type=error_cascade").await["alerts"].as_array().unwrap().clone();
    let sessions: Vec<&str> = cascades.iter().map(|a| a["session_id"].as_str().unwrap()).collect();
    assert_eq!(sessions, ["fail_1", "fail_0"]);
    assert_eq!(alerts_of(&server, "low_3").await.len(), 1);
    assert_eq!(server.get_ok("/alerts?type=loop").await["alerts"], json!([]));
}
