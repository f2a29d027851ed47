//! Claude Code's hooks (`GUARD.md`, "Agent hooks"), pure: what a hook event records in its
//! session, and how the guard's answer is said back in Claude Code's hook output form.
//!
//! A hook event lands in the session of its `session_id`, the one Claude Code's OpenTelemetry
//! records build (`otlp/agents.rs`), so both channels tell one story. The hooks report a tool call
//! the moment it starts and ends (the telemetry, seconds later in a batch): `PreToolUse` and
//! `PostToolUse` become the call's `operation.tool_start` and `tool_end`, `UserPromptSubmit` the
//! user's prompt, `SessionEnd` the session's end; every other event is kept whole as an
//! `aop.hook` event. Once a session is reported by its hooks, the telemetry's `tool_result` and
//! `user_prompt` records of it are kept as `otel.log` events, not as second steps (`map_logs`
//! is told which sessions its hooks report).

use crate::guard::{Answer, Decision};
use serde_json::{json, Map, Value};

/// The agent id of a Claude Code session, as its telemetry's sessions have it.
pub const AGENT: &str = "claude-code";
/// The hook events `aop hooks claude-code` wires, in Claude Code's names.
pub const EVENTS: [&str; 10] = [
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
];
/// How much of a tool's response a `tool_end` keeps as its summary.
const SUMMARY_BYTES: usize = 2000;

/// One hook event, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub event: String,
    pub session_id: String,
    /// A subagent's hooks carry its id: its steps go to its own session, as its telemetry's do.
    pub subagent: Option<String>,
    pub body: Map<String, Value>,
}

/// What one hook event records: `(type, payload)` of each event, in order.
pub type Records = Vec<(&'static str, Value)>;

fn s<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
}

/// At most `max` bytes of `text`, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match crate::detect::cut(text, max) {
        (kept, true) => format!("{kept}…"),
        (kept, false) => kept,
    }
}

impl Hook {
    /// A hook's JSON; the reason names what is missing.
    pub fn parse(bytes: &[u8]) -> Result<Hook, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
        let Value::Object(body) = v else { return Err("the body must be a JSON object".into()) };
        let event = s(&body, "hook_event_name").ok_or("`hook_event_name` is required (a string)")?.to_owned();
        let session_id = s(&body, "session_id").ok_or("`session_id` is required (a string)")?.to_owned();
        if event.len() > 128 {
            return Err("`hook_event_name` is too long".into());
        }
        let subagent = s(&body, "agent_id").map(str::to_owned);
        let hook = Hook { event, session_id, subagent, body };
        // The session's id goes into events the collector writes: it must be one an agent could send.
        crate::model::check_session_id("session_id", &hook.session()).map_err(|e| e.to_string())?;
        Ok(hook)
    }

    /// The session its events go to: Claude Code's own, or its subagent's child session (named
    /// as the telemetry names it).
    pub fn session(&self) -> String {
        match &self.subagent {
            Some(a) => format!("{}.{a}", self.session_id),
            None => self.session_id.clone(),
        }
    }

    /// The tool call a `PreToolUse` asks about: `(tool, input)`.
    pub fn tool_call(&self) -> Option<(&str, &Value)> {
        (self.event == "PreToolUse").then(|| {
            (s(&self.body, "tool_name").unwrap_or("tool"), self.body.get("tool_input").unwrap_or(&Value::Null))
        })
    }

    /// What it records. A `PreToolUse` that the guard did not allow records no start: the call
    /// does not happen (the decision is recorded by the guard).
    pub fn records(&self) -> Records {
        let b = &self.body;
        let tool = || s(b, "tool_name").unwrap_or("tool").to_owned();
        let id = s(b, "tool_use_id");
        let with_id = |mut p: Value| {
            if let Some(id) = id {
                p["tool_call_id"] = id.into();
            }
            p["via"] = "claude-code hooks".into();
            p
        };
        match self.event.as_str() {
            "PreToolUse" => {
                vec![(
                    "operation.tool_start",
                    with_id(json!({"tool": tool(), "input": b.get("tool_input").cloned().unwrap_or(Value::Null)})),
                )]
            }
            "PostToolUse" | "PostToolUseFailure" => {
                let failed = self.event == "PostToolUseFailure";
                let response = b.get("tool_response");
                let summary = response.map(|r| match r {
                    Value::String(t) => cut(t, SUMMARY_BYTES),
                    other => cut(&other.to_string(), SUMMARY_BYTES),
                });
                let mut p = json!({"tool": tool(), "success": !failed});
                if let Some(d) = b.get("duration_ms").and_then(Value::as_f64) {
                    p["latency_ms"] = d.into();
                }
                if failed {
                    let error =
                        s(b, "error").map(str::to_owned).or(summary).unwrap_or_else(|| "the tool failed".into());
                    p["error"] = error.into();
                } else if let Some(summary) = summary {
                    p["output_summary"] = summary.into();
                }
                vec![("operation.tool_end", with_id(p))]
            }
            "UserPromptSubmit" => match s(b, "prompt") {
                Some(prompt) => {
                    vec![("cognition.thought", json!({"content": prompt, "role": "user", "via": "claude-code hooks"}))]
                }
                None => vec![("aop.hook", Value::Object(b.clone()))],
            },
            // A session its hooks start waits for its user between turns, and ends when Claude
            // Code says so (or falls silent), as one its telemetry starts.
            "SessionStart" => vec![(
                "session.started",
                json!({"metadata": {"source": "claude-code hooks", "conversation_id": self.session_id,
                                    "interactive": true, "ends_when_idle": true, "hook": b}}),
            )],
            "SessionEnd" => {
                let reason = s(b, "reason").unwrap_or("other");
                vec![(
                    "session.ended",
                    json!({"outcome": "completed", "outcome_summary": format!("Claude Code session ended ({reason})"), "via": "claude-code hooks"}),
                )]
            }
            _ => vec![("aop.hook", Value::Object(b.clone()))],
        }
    }
}

/// The guard's answer in Claude Code's form: `ask` and `deny` as a `PreToolUse` permission
/// decision with the reasons; an allow as `{}`, so that Claude Code's own permission rules
/// still apply (an explicit `allow` would skip the user's prompt).
pub fn pre_tool_use_output(answer: &Answer) -> Value {
    let decision = match answer.decision {
        Decision::Allow => return json!({}),
        Decision::Ask => "ask",
        Decision::Deny => "deny",
    };
    let reason = answer.reasons.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ");
    json!({"hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": format!("aop: {reason}"),
    }})
}

/// The settings that wire every hook event to a collector at `url` (with its token, if any):
/// an `http` hook for each event but `SessionStart`, which Claude Code 2.1.328 fires only for
/// `command` hooks (`design/CODING-AGENTS.md`), so that one posts with curl.
pub fn settings(url: &str, token: Option<&str>) -> Value {
    let endpoint = format!("{}/hooks/claude-code", url.trim_end_matches('/'));
    let mut hooks = Map::new();
    for event in EVENTS {
        let hook = if event == "SessionStart" {
            let auth = token.map(|t| format!(" -H 'Authorization: Bearer {t}'")).unwrap_or_default();
            json!({"type": "command", "command": format!(
                "curl -s -m 1 -X POST -H 'Content-Type: application/json'{auth} --data-binary @- {endpoint} >/dev/null || true"
            )})
        } else {
            let mut h = json!({"type": "http", "url": endpoint, "timeout": 2});
            if let Some(t) = token {
                h["headers"] = json!({"Authorization": format!("Bearer {t}")});
            }
            h
        };
        hooks.insert(event.to_owned(), json!([{"matcher": "*", "hooks": [hook]}]));
    }
    json!({"hooks": hooks})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{Condition, Reason};

    fn hook(v: Value) -> Hook {
        Hook::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn tool_hooks_are_the_calls_steps_with_their_ids() {
        let pre = hook(json!({"hook_event_name": "PreToolUse", "session_id": "s1", "tool_name": "Bash",
                              "tool_input": {"command": "ls"}, "tool_use_id": "toolu_1"}));
        assert_eq!(pre.tool_call(), Some(("Bash", &json!({"command": "ls"}))));
        let r = pre.records();
        assert_eq!(r[0].0, "operation.tool_start");
        assert_eq!(r[0].1["tool_call_id"], "toolu_1");
        assert_eq!(r[0].1["input"], json!({"command": "ls"}));
        let post = hook(
            json!({"hook_event_name": "PostToolUse", "session_id": "s1", "tool_name": "Bash", "tool_use_id": "toolu_1",
                               "tool_response": {"stdout": "a\nb", "stderr": ""}, "duration_ms": 12}),
        );
        let r = post.records();
        assert_eq!(
            (r[0].0, &r[0].1["success"], &r[0].1["latency_ms"]),
            ("operation.tool_end", &json!(true), &json!(12.0))
        );
        assert!(r[0].1["output_summary"].as_str().unwrap().contains("stdout"));
        let failed = hook(
            json!({"hook_event_name": "PostToolUseFailure", "session_id": "s1", "tool_name": "Bash", "error": "exit 1"}),
        );
        assert_eq!(
            (&failed.records()[0].1["success"], &failed.records()[0].1["error"]),
            (&json!(false), &json!("exit 1"))
        );
    }

    #[test]
    fn prompts_ends_subagents_and_unknown_events() {
        let p = hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "s", "prompt": "fix it"}));
        assert_eq!(
            p.records()[0],
            ("cognition.thought", json!({"content": "fix it", "role": "user", "via": "claude-code hooks"}))
        );
        let end = hook(json!({"hook_event_name": "SessionEnd", "session_id": "s", "reason": "logout"}));
        assert_eq!(end.records()[0].0, "session.ended");
        let sub =
            hook(json!({"hook_event_name": "PreToolUse", "session_id": "s", "agent_id": "a1", "tool_name": "Read"}));
        assert_eq!(sub.session(), "s.a1");
        let odd = json!({"hook_event_name": "SomethingNew", "session_id": "s", "x": [1, {"y": 2}]});
        assert_eq!(hook(odd.clone()).records(), vec![("aop.hook", odd)]);
    }

    #[test]
    fn malformed_hooks_are_refused_with_a_reason() {
        for (body, says) in [
            (&b"nope"[..], "not JSON"),
            (b"[]", "object"),
            (br#"{"session_id":"s"}"#, "hook_event_name"),
            (br#"{"hook_event_name":"Stop"}"#, "session_id"),
            (br#"{"hook_event_name":"Stop","session_id":7}"#, "session_id"),
            (br#"{"hook_event_name":"Stop","session_id":"a\"b"}"#, "may only contain"),
            (br#"{"hook_event_name":"Stop","session_id":"s","agent_id":"x y"}"#, "may only contain"),
        ] {
            assert!(Hook::parse(body).unwrap_err().contains(says), "{body:?}");
        }
    }

    #[test]
    fn the_guard_is_answered_in_claude_codes_form_and_never_with_an_explicit_allow() {
        let reason =
            |d| Reason { kind: Condition::Loop, message: "a loop".into(), alert_id: None, decision: d, alerted: false };
        let allow = Answer { decision: Decision::Allow, reasons: vec![reason(Decision::Allow)] };
        assert_eq!(pre_tool_use_output(&allow), json!({}));
        let deny = Answer { decision: Decision::Deny, reasons: vec![reason(Decision::Deny)] };
        assert_eq!(
            pre_tool_use_output(&deny),
            json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": "aop: a loop"}})
        );
    }

    #[test]
    fn the_printed_settings_wire_every_event_and_session_start_by_command() {
        let s = settings("http://127.0.0.1:4317/", Some("tok"));
        for event in EVENTS {
            assert!(s["hooks"][event][0]["hooks"][0].is_object(), "{event}");
        }
        assert_eq!(s["hooks"]["PreToolUse"][0]["hooks"][0]["url"], "http://127.0.0.1:4317/hooks/claude-code");
        assert_eq!(s["hooks"]["PreToolUse"][0]["hooks"][0]["headers"]["Authorization"], "Bearer tok");
        let start = s["hooks"]["SessionStart"][0]["hooks"][0]["command"].as_str().unwrap();
        assert!(start.starts_with("curl ") && start.contains("Bearer tok"), "{start}");
    }
}
