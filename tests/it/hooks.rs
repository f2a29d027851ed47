//! Claude Code's hooks (`GUARD.md`, "Agent hooks"), with hook bodies shaped as the real CLI sends
//! them (`design/CODING-AGENTS.md`): every event recorded in the session of its `session_id`, one
//! step per tool call whether its hooks or its telemetry report it, `PreToolUse` answered with the
//! guard's decision in Claude Code's form (never an explicit allow), malformed bodies refused, and
//! `aop hooks claude-code` printing the settings.

use crate::support::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SESSION: &str = "3f2c9a51-7d1e-4b8a-9c0f-2a6e5d4b1c33";

async fn hook(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let req = server
        .authed(Method::POST, "/hooks/claude-code")
        .header("content-type", "application/json")
        .body(body.to_string());
    let (status, _, json) = TestServer::send_json(req).await;
    (status, json)
}

fn base(event: &str) -> Value {
    json!({"hook_event_name": event, "session_id": SESSION, "transcript_path": "/tmp/t.jsonl", "cwd": "/work", "permission_mode": "default"})
}

fn pre(n: usize, command: &str) -> Value {
    let mut b = base("PreToolUse");
    b["tool_name"] = "Bash".into();
    b["tool_input"] = json!({"command": command, "description": "run it"});
    b["tool_use_id"] = format!("toolu_{n:04}").into();
    b
}

fn post(n: usize) -> Value {
    let mut b = base("PostToolUse");
    b["tool_name"] = "Bash".into();
    b["tool_use_id"] = format!("toolu_{n:04}").into();
    b["tool_response"] = json!({"stdout": "ok", "stderr": "", "interrupted": false});
    b["duration_ms"] = 40.into();
    b
}

/// Claude Code's own `tool_result` record of call `n`, as its telemetry exports it (seconds later).
fn tool_result(n: usize) -> LogRecord {
    let a = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Any::StringValue(v.into())) }),
        ..Default::default()
    };
    LogRecord {
        time_unix_nano: 1_764_756_000_000_000_000 + n as u64 * 1_000_000_000,
        attributes: vec![
            a("session.id", SESSION),
            a("event.name", "tool_result"),
            a("event.sequence", &n.to_string()),
            a("tool_name", "Bash"),
            a("tool_use_id", &format!("toolu_{n:04}")),
            a("success", "true"),
            a("duration_ms", "40"),
        ],
        body: Some(AnyValue { value: Some(Any::StringValue("claude_code.tool_result".into())) }),
        ..Default::default()
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_run_through_its_hooks_is_its_session_and_the_guard_answers_its_pre_tool_use() {
    let server = TestServer::start().await;
    let (status, answer) = hook(&server, {
        let mut b = base("SessionStart");
        b["source"] = "startup".into();
        b
    })
    .await;
    assert_eq!((status, &answer), (StatusCode::OK, &json!({})));
    let mut prompt = base("UserPromptSubmit");
    prompt["prompt"] = "run the tests until they pass".into();
    assert_eq!(hook(&server, prompt).await.1, json!({}));

    // Three identical calls: each allowed with `{}` (never an explicit allow).
    for n in 1..=3 {
        assert_eq!(hook(&server, pre(n, "make test")).await, (StatusCode::OK, json!({})), "call {n}");
        assert_eq!(hook(&server, post(n)).await.1, json!({}));
    }
    // Recorded after each answer: wait for them (the session itself may not be stored yet).
    eventually("the three calls stored", || async {
        let (status, detail) = server.get_json(&format!("/sessions/{SESSION}?limit=10000")).await;
        let events = detail["events"].as_array().filter(|_| status == StatusCode::OK)?;
        (kinds(events).iter().filter(|k| *k == "operation.tool_end").count() == 3).then_some(())
    })
    .await;

    // The fourth would complete a loop: asked, in Claude Code's form, and not recorded as a call.
    let (status, answer) = hook(&server, pre(4, "make test")).await;
    assert_eq!(status, StatusCode::OK);
    let out = &answer["hookSpecificOutput"];
    assert_eq!((&out["hookEventName"], &out["permissionDecision"]), (&json!("PreToolUse"), &json!("ask")), "{answer}");
    assert!(out["permissionDecisionReason"].as_str().unwrap().contains("a loop"), "{answer}");

    // Its telemetry reports the same three calls later: still one step each.
    let mut req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Any::StringValue("claude-code".into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs { log_records: (1..=3).map(tool_result).collect(), ..Default::default() }],
            ..Default::default()
        }],
    };
    req.resource_logs[0].scope_logs[0].scope = None;
    let resp = server
        .authed(Method::POST, "/v1/logs")
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // An operator stops the run: the next call is denied.
    let stop = server
        .authed(Method::POST, &format!("/sessions/{SESSION}/stop"))
        .header("content-type", "application/json")
        .body("{}");
    assert_eq!(TestServer::send_json(stop).await.0, StatusCode::OK);
    let (_, answer) = hook(&server, pre(5, "ls")).await;
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny", "{answer}");

    let mut other = base("Notification");
    other["message"] = "Claude needs your permission".into();
    assert_eq!(hook(&server, other).await.1, json!({}));
    let mut end = base("SessionEnd");
    end["reason"] = "other".into();
    assert_eq!(hook(&server, end).await.1, json!({}));

    let events = eventually("the session's end", || async {
        let e = server.events(SESSION).await;
        let k = kinds(&e);
        // The denial, too, is recorded after its answer.
        (k.contains(&"session.ended".to_owned()) && k.iter().filter(|k| *k == "aop.guard").count() == 2).then_some(e)
    })
    .await;
    let k = kinds(&events);
    assert_eq!(k.iter().filter(|k| *k == "operation.tool_start").count(), 3, "{k:?}");
    assert_eq!(
        k.iter().filter(|k| *k == "operation.tool_end").count(),
        3,
        "one step per call whichever channel: {k:?}"
    );
    assert_eq!(k.iter().filter(|k| *k == "otel.log").count(), 3, "the telemetry's results kept as records: {k:?}");
    assert_eq!(k.iter().filter(|k| *k == "aop.guard").count(), 2, "the ask and the deny: {k:?}");
    assert!(k.contains(&"aop.hook".to_owned()), "the Notification kept whole: {k:?}");
    let prompt = events.iter().find(|e| e["type"] == "cognition.thought").expect("the prompt");
    assert_eq!(
        (&prompt["payload"]["role"], &prompt["payload"]["content"]),
        (&json!("user"), &json!("run the tests until they pass"))
    );
    let start = events.iter().find(|e| e["type"] == "operation.tool_start").unwrap();
    assert_eq!(start["payload"]["tool_call_id"], "toolu_0001");
    let row = server.session(SESSION).await;
    assert_eq!((&row["agent_id"], &row["status"]), (&json!("claude-code"), &json!("completed")), "{row}");
    let alerts = server.get_ok(&format!("/alerts?session_id={SESSION}&type=stall")).await;
    assert!(alerts["alerts"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hooks_are_refused_and_the_printed_settings_wire_every_event() {
    let server = Launch::new().token("s3cret").start().await;
    for (body, says) in [
        ("{nope", "not JSON"),
        (r#"{"session_id":"s"}"#, "hook_event_name"),
        (r#"{"hook_event_name":"Stop"}"#, "session_id"),
        (r#"{"hook_event_name":"Stop","session_id":"../../x"}"#, "may only contain"),
    ] {
        let req =
            server.authed(Method::POST, "/hooks/claude-code").header("content-type", "application/json").body(body);
        let (status, _, json) = TestServer::send_json(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert!(json["error"].as_str().unwrap().contains(says), "{body}: {json}");
    }
    let bare = server
        .request(Method::POST, "/hooks/claude-code")
        .header("content-type", "application/json")
        .body(base("Stop").to_string());
    assert_eq!(TestServer::send_json(bare).await.0, StatusCode::UNAUTHORIZED);
    assert!(server.session_ids("").await.is_empty(), "nothing recorded");

    let out = server.sandbox().run(&["hooks", "claude-code", "--url", &server.base(), "--token", "s3cret"]).await;
    out.assert_code(0);
    let settings: Value = serde_json::from_str(&out.stdout).expect("JSON settings");
    for event in [
        "SessionStart",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "SubagentStart",
        "SubagentStop",
        "Stop",
        "SessionEnd",
        "Notification",
    ] {
        assert!(settings["hooks"][event][0]["hooks"][0].is_object(), "{event}: {settings}");
    }
    let pre = &settings["hooks"]["PreToolUse"][0]["hooks"][0];
    assert_eq!((&pre["type"], &pre["url"]), (&json!("http"), &json!(format!("{}/hooks/claude-code", server.base()))));
    assert_eq!(pre["headers"]["Authorization"], "Bearer s3cret");
    // The command hook of SessionStart posts what it is given to the same endpoint: run it as Claude Code would.
    let command = settings["hooks"]["SessionStart"][0]["hooks"][0]["command"].as_str().unwrap().to_owned();
    let mut start = base("SessionStart");
    start["source"] = "startup".into();
    let mut child = std::process::Command::new("sh")
        .args(["-c", &command])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(start.to_string().as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let row = eventually("the session its SessionStart made", || async {
        server.sessions("").await.into_iter().find(|r| r["id"] == SESSION)
    })
    .await;
    assert_eq!(row["agent_id"], "claude-code");
}
