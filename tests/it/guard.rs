//! The guard and the operator's stop (`GUARD.md`): `POST /guard` answered from what the
//! collector knows now, each condition with its configured decision, asks and denies recorded
//! in the session and streamed, `POST /sessions/:id/stop` and `/resume` (in a fleet too), bad
//! input, and the token and Origin rules on every new endpoint.

use crate::support::pg::Pg;
use crate::support::{event, eventually, Launch, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A tool call, started and ended, at sequences `seq` and `seq + 1`.
fn call(s: &str, seq: i64, command: &str, ok: bool) -> [Value; 2] {
    [
        event(s, seq, "operation.tool_start", json!({"tool": "Bash", "input": {"command": command}})),
        event(s, seq + 1, "operation.tool_end", json!({"tool": "Bash", "success": ok, "output_summary": "same"})),
    ]
}

async fn ask(server: &TestServer, body: &Value) -> (StatusCode, Value) {
    let req = server.authed(Method::POST, "/guard").header("content-type", "application/json").body(body.to_string());
    let (status, _, json) = TestServer::send_json(req).await;
    (status, json)
}

async fn ask_ok(server: &TestServer, session: &str, command: &str) -> Value {
    let (status, answer) = ask(
        server,
        &json!({"session_id": session, "agent_id": "test-agent", "tool": "Bash", "input": {"command": command}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn post(server: &TestServer, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = server.authed(Method::POST, path).header("content-type", "application/json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let (status, _, json) = TestServer::send_json(req).await;
    (status, json)
}

fn kinds(answer: &Value) -> Vec<(String, Option<i64>)> {
    answer["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["type"].as_str().unwrap().to_owned(), r["alert_id"].as_i64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_that_completes_a_loop_is_asked_about_and_recorded_in_the_session() {
    let server = TestServer::start().await;
    let s = "guarded";
    server.ingest_one(&event(s, 1, "session.started", json!({"goal": "build"}))).await;
    let mut live = server.stream(&format!("/stream?session_id={s}&type=aop.guard")).await;

    // An unknown session, and a session's first call: a plain allow.
    let unknown = ask_ok(&server, "never-seen", "ls").await;
    assert_eq!(unknown, json!({"decision": "allow", "reasons": []}));
    assert_eq!(ask_ok(&server, s, "make test").await, json!({"decision": "allow", "reasons": []}));

    // Three identical calls: the fourth would complete the loop (loop_repeats is 4).
    for i in 0..3 {
        server.ingest(&call(s, 2 + 2 * i, "make test", true)).await;
    }
    let answer = ask_ok(&server, s, "make test").await;
    assert_eq!(answer["decision"], "ask", "{answer}");
    assert_eq!(kinds(&answer), [("loop".to_owned(), None)], "no loop alert yet: {answer}");
    assert!(answer["reasons"][0]["message"].as_str().unwrap().contains("Bash"), "{answer}");
    assert_eq!(ask_ok(&server, s, "make build").await["decision"], "allow", "another input is another call");

    // The agent makes the call anyway: the loop alert is raised, and names the call.
    server.ingest(&call(s, 8, "make test", true)).await;
    let alert_id = eventually("the loop alert", || async {
        let alerts = server.get_ok(&format!("/alerts?session_id={s}&type=loop")).await;
        alerts["alerts"].as_array()?.first()?["id"].as_i64()
    })
    .await;
    let answer = ask_ok(&server, s, "make test").await;
    assert_eq!(kinds(&answer), [("loop".to_owned(), Some(alert_id))], "{answer}");

    // Both asks are in the session, in order, with what was asked and why, and on the stream.
    let recorded = eventually("the recorded decisions", || async {
        let events = server.events(s).await;
        let guard: Vec<Value> = events.into_iter().filter(|e| e["type"] == "aop.guard").collect();
        (guard.len() == 2).then_some(guard)
    })
    .await;
    for r in &recorded {
        assert_eq!(r["payload"]["decision"], "ask", "{r}");
        assert_eq!(r["payload"]["tool"], "Bash");
        assert_eq!(r["payload"]["input"], json!({"command": "make test"}));
        assert_eq!(r["payload"]["reasons"][0]["type"], "loop");
        assert_eq!(r["agent_id"], "test-agent");
    }
    assert_eq!(recorded[1]["payload"]["reasons"][0]["alert_id"], alert_id);
    let mut streamed = Vec::new();
    while streamed.len() < 2 {
        let f = live.message().await;
        if f.is_event() {
            streamed.push(f.data.unwrap_or_default());
        }
    }
    assert!(streamed.iter().all(|d| d.contains("\"type\":\"aop.guard\"")), "{streamed:?}");
    // Allows are counted, never recorded.
    let m = server.metrics().await;
    assert_eq!(m.get("aop_guard_decisions_total{decision=\"ask\"}"), 2.0);
    assert_eq!(m.get("aop_guard_decisions_total{decision=\"allow\"}"), 3.0);
    assert_eq!(server.session(s).await["total_steps"], 8, "recorded decisions are not the agent's steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_condition_gives_its_configured_decision_and_the_strictest_wins() {
    let sandbox = std::sync::Arc::new(crate::support::Sandbox::new());
    let config = sandbox.path().join("config.toml");
    std::fs::write(&config, "[guard]\nloop = \"deny\"\ncascade = \"deny\"\nbudget = \"ask\"\n").unwrap();
    let server = Launch::in_sandbox(sandbox.clone())
        .args(["--config", config.to_str().unwrap(), "--cost-budget-usd", "1"])
        .start()
        .await;
    let s = "conditions";
    server.ingest_one(&event(s, 1, "session.started", json!({}))).await;
    // Three failures in a row: an error cascade.
    for i in 0..3 {
        server.ingest(&call(s, 2 + 2 * i, &format!("step {i}"), false)).await;
    }
    let answer = ask_ok(&server, s, "step 9").await;
    assert_eq!(answer["decision"], "deny", "cascade is configured deny: {answer}");
    let cascade = kinds(&answer);
    assert_eq!(cascade.len(), 1);
    assert_eq!(cascade[0].0, "cascade");
    assert!(cascade[0].1.is_some(), "the cascade alert's id: {answer}");

    // A success ends the cascade; spending past the budget is configured ask.
    server.ingest(&call(s, 8, "fix", true)).await;
    assert_eq!(ask_ok(&server, s, "step 9").await["decision"], "allow");
    server.ingest_one(&event(s, 10, "session.heartbeat", json!({"total_cost_usd": 1.5}))).await;
    let answer = ask_ok(&server, s, "step 9").await;
    assert_eq!(answer["decision"], "ask", "{answer}");
    assert_eq!(kinds(&answer)[0].0, "budget");
    assert!(answer["reasons"][0]["message"].as_str().unwrap().contains("$1.50"), "{answer}");

    // Stopped (default deny) beside budget (ask): deny, both listed.
    let (status, ok) = post(&server, &format!("/sessions/{s}/stop"), Some(json!({"reason": "over budget"}))).await;
    assert_eq!((status, &ok["ok"]), (StatusCode::OK, &json!(true)), "{ok}");
    let answer = ask_ok(&server, s, "step 9").await;
    assert_eq!(answer["decision"], "deny");
    let listed: Vec<String> = kinds(&answer).into_iter().map(|(k, _)| k).collect();
    assert_eq!(listed, ["stopped", "budget"], "{answer}");
    assert!(answer["reasons"][0]["message"].as_str().unwrap().ends_with("over budget"), "{answer}");

    // A [guard] table the collector does not understand is refused at start.
    std::fs::write(&config, "[guard]\nloop = \"block\"\n").unwrap();
    let refused = Launch::in_sandbox(sandbox.clone()).args(["--config", config.to_str().unwrap()]).run().await;
    assert_ne!(refused.code(), 0);
    assert!(refused.output().contains("[guard]"), "{}", refused.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stops_and_resumes_a_run_and_both_are_events_of_the_session() {
    let server = TestServer::start().await;
    let s = "runaway";
    server.ingest_one(&event(s, 1, "session.started", json!({}))).await;
    let mut live = server.stream(&format!("/stream?session_id={s}")).await;

    let (status, body) = post(&server, &format!("/sessions/{s}/stop"), Some(json!({"reason": "burning money"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Once acknowledged, the very next guard call sees it.
    let answer = ask_ok(&server, s, "ls").await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(kinds(&answer), [("stopped".to_owned(), None)]);
    // The denial is recorded after the answer has gone; wait for it, so the order below is fixed.
    eventually("the recorded denial", || async {
        server.events(s).await.iter().any(|e| e["type"] == "aop.guard").then_some(())
    })
    .await;
    let row = server.session(s).await;
    assert_eq!(row["stopped"]["reason"], "burning money", "{row}");
    assert_eq!(row["status"], "running", "a stop is the operator's word to the guard, not the run's end");

    let (status, _) = post(&server, &format!("/sessions/{s}/resume"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ask_ok(&server, s, "ls").await["decision"], "allow");
    assert!(server.session(s).await.get("stopped").is_none());

    let types: Vec<String> = server.events(s).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["session.started", "aop.stop", "aop.guard", "aop.resume"]);
    let streamed: Vec<String> = live.events(3).await.into_iter().filter_map(|f| f.data).collect();
    for (frame, kind) in streamed.iter().zip(["aop.stop", "aop.guard", "aop.resume"]) {
        assert!(frame.contains(&format!("\"type\":\"{kind}\"")), "{frame}");
    }

    // Unknown sessions are 404 and leave nothing behind.
    let (status, body) = post(&server, "/sessions/nobody/stop", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = post(&server, "/sessions/nobody/resume", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(server.session_ids("").await.iter().all(|id| id != "nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_guard_and_stop_requests_get_a_reason_and_change_nothing() {
    let server = Launch::new().token("t0ken").start().await;
    let s = "careful";
    server.ingest_one(&event(s, 1, "session.started", json!({}))).await;
    let raw = |body: &str| {
        server.authed(Method::POST, "/guard").header("content-type", "application/json").body(body.to_owned())
    };
    for (body, says) in [
        ("{not json", "not JSON"),
        ("[1]", "JSON object"),
        (r#"{"tool":"Bash"}"#, "session_id"),
        (r#"{"session_id":"careful"}"#, "tool"),
        (r#"{"session_id":5,"tool":"Bash"}"#, "must be a string"),
    ] {
        let (status, _, json) = TestServer::send_json(raw(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert!(json["error"].as_str().unwrap().contains(says), "{body}: {json}");
    }
    let huge = json!({"session_id": s, "tool": "Bash", "input": "x".repeat(300 * 1024)});
    let (status, _, json) = TestServer::send_json(raw(&huge.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(json["error"].as_str().unwrap().contains("KiB"), "{json}");
    let (status, body) = post(&server, &format!("/sessions/{s}/stop"), Some(json!({"reason": 7}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The token, the content type and the Origin rules hold on every new endpoint.
    for path in ["/guard", "/sessions/careful/stop", "/sessions/careful/resume", "/hooks/claude-code"] {
        let bare = server.request(Method::POST, path).header("content-type", "application/json").body("{}");
        assert_eq!(TestServer::send_json(bare).await.0, StatusCode::UNAUTHORIZED, "{path}");
        let foreign = server
            .authed(Method::POST, path)
            .header("content-type", "application/json")
            .header("origin", "https://evil.example")
            .body("{}");
        assert_eq!(TestServer::send_json(foreign).await.0, StatusCode::FORBIDDEN, "{path}");
        let form = server.authed(Method::POST, path).header("content-type", "text/plain").body("{}");
        assert_eq!(TestServer::send_json(form).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
    }
    let types: Vec<Value> = server.events(s).await.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, [json!("session.started")], "nothing was recorded");
    assert!(server.session(s).await.get("stopped").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_through_one_instance_of_a_fleet_is_honoured_by_every_other() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let a = Launch::new().db(&url).start().await;
    let b = Launch::new().db(&url).start().await;
    let s = "fleet-run";
    a.ingest_one(&event(s, 1, "session.started", json!({}))).await;
    assert_eq!(ask_ok(&b, s, "ls").await["decision"], "allow");
    let (status, body) = post(&a, &format!("/sessions/{s}/stop"), Some(json!({"reason": "from a"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // No waiting: the stop is committed before `a` answers, and `b` reads the shared row.
    let answer = ask_ok(&b, s, "ls").await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(answer["reasons"][0]["message"].as_str().unwrap().ends_with("from a"));
    let (status, _) = post(&b, &format!("/sessions/{s}/resume"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ask_ok(&a, s, "ls").await["decision"], "allow");
    // The instance that writes a session's events judges its loops.
    for i in 0..3 {
        a.ingest(&call(s, 2 + 2 * i, "poll", true)).await;
    }
    assert_eq!(ask_ok(&a, s, "poll").await["decision"], "ask");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_looping_agent_asks_the_guard_and_is_told_ask() {
    let server = TestServer::start().await;
    let out = server.sandbox().run(&["demo", "--url", &server.base(), "--agents", "1", "--speed", "20"]).await;
    out.assert_code(0);
    let said: Vec<&str> = out.stdout.lines().filter(|l| l.contains("aop's guard says ask")).collect();
    assert_eq!(said.len(), 2, "told at the loop's last call, then while it loops:\n{}", out.output());
    assert!(said[0].contains("would be call 4 of web_search"), "{}", said[0]);
    let session = server.session_ids("agent_id=research-agent").await.pop().expect("the researcher's session");
    let alerts = server.get_ok(&format!("/alerts?session_id={session}&type=loop")).await;
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    eventually("both asks recorded in the session", || async {
        let asks = server.events(&session).await.into_iter().filter(|e| e["type"] == "aop.guard").count();
        (asks == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_notify_delivers_its_loop_alert_to_the_webhook() {
    let receiver = crate::support::webhook::Receiver::start().await;
    let sandbox = crate::support::Sandbox::new();
    let hook = receiver.url("/demo");
    let out = sandbox.run(&["demo", "--notify", &hook, "--agents", "1", "--speed", "20"]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("aop's guard says ask"), "{}", out.output());
    assert!(out.stdout.contains("notifications to --notify: delivered"), "{}", out.output());
    let delivered = receiver.delivered();
    let kinds: Vec<Value> = delivered.iter().map(|r| r.json()["alert"]["type"].clone()).collect();
    assert!(kinds.contains(&json!("loop")), "the loop alert reached the webhook: {kinds:?}");
    let the_loop = delivered.iter().find(|r| r.json()["alert"]["type"] == "loop").unwrap().json();
    assert_eq!(the_loop["session"]["agent_id"], "research-agent");
    assert!(the_loop["link"].as_str().unwrap().contains("/dashboard/#/sessions/"), "{the_loop}");
    let refused = sandbox.run(&["demo", "--notify", "ftp://example.com/x"]).await;
    assert_eq!(refused.code(), 2, "{}", refused.output());
    assert!(refused.stderr.contains("http:// or https://"), "{}", refused.output());
}
