//! The records of coding agents aop knows (Claude Code, Codex CLI) read as the steps they report
//! (`OTLP.md`, Logs, "What a record becomes"): a user's prompt is a thought marked as the user's,
//! a model request an `operation.external_call` with its model, tokens and the cost the agent
//! reports, a tool result a tool call (`tool_start` at its end minus its duration, `tool_end`
//! with its success and error), a permission decision a `custom.tool_decision`, an API error a
//! failed call; anything else stays an `otel.log`. Each agent's session is its own (Claude Code's
//! `session.id`, Codex's `conversation.id`), not one per trace: they start a trace per prompt.
//!
//! What each agent sends is recorded in `design/CODING-AGENTS.md`: names with or without their
//! agent's prefix, numbers often as strings, Codex's `success` true even when its command failed.

use super::attrs::Attrs;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde::Serialize;
use serde_json::{Map, Value as Json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agent {
    ClaudeCode,
    Codex,
}

impl Agent {
    /// The agent that sent a record, from its resource, scope or event name.
    pub(crate) fn of(service: Option<&str>, scope: &str, name: Option<&str>) -> Option<Agent> {
        let service = service.unwrap_or("");
        let name = name.unwrap_or("");
        if service == "claude-code"
            || scope.starts_with("com.anthropic.claude_code")
            || name.starts_with("claude_code.")
        {
            Some(Agent::ClaudeCode)
        } else if service.starts_with("codex") || name.starts_with("codex.") {
            Some(Agent::Codex)
        } else {
            None
        }
    }

    /// The `agent_id` of its sessions.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
        }
    }

    /// The attribute naming the agent's own session.
    pub(crate) fn session_attribute(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "session.id",
            Agent::Codex => "conversation.id",
        }
    }

    /// The subagent a record comes from, where the agent runs subagents in its own session
    /// (Claude Code: `agent_id` on the subagent's records and spans).
    pub(crate) fn subagent(self, a: Attrs<'_>) -> Option<&str> {
        match self {
            Agent::ClaudeCode => a.str(&["agent_id"]),
            Agent::Codex => None,
        }
    }

    fn service(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "anthropic",
            Agent::Codex => "openai",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "messages",
            Agent::Codex => "responses",
        }
    }
}

/// An event name without its agent's prefix: `claude_code.tool_result` and `tool_result` are one.
/// Whether a Claude Code record reports a step its hooks report first (a tool call's result, a
/// prompt): in a session its hooks report, such a record is kept as it is, not as a second step.
pub(crate) fn reported_by_hooks(name: &str) -> bool {
    matches!(short(name), "tool_result" | "user_prompt")
}

pub(crate) fn short(name: &str) -> &str {
    name.strip_prefix("claude_code.").or_else(|| name.strip_prefix("codex.")).unwrap_or(name)
}

/// One step a record reports: its type, its payload (without `otel`, added by the caller), and
/// how long before the record's time it began (a tool call's start).
pub(crate) struct Step {
    pub(crate) kind: &'static str,
    pub(crate) payload: Map<String, Json>,
    pub(crate) before_ns: u64,
    /// A subagent's record reporting a step of its parent (its spawn): the event goes to the
    /// parent's session.
    pub(crate) in_parent: bool,
}

/// The steps of a known agent's record, or none when it is kept as an `otel.log`.
pub(crate) fn steps(agent: Agent, name: &str, record: &LogRecord) -> Vec<Step> {
    let a = Attrs(&record.attributes);
    let step = |kind, payload| Step { kind, payload, before_ns: 0, in_parent: false };
    match (agent, short(name)) {
        (_, "user_prompt") => {
            let mut p = Map::new();
            if let Some(text) = a.str(&["prompt"]) {
                p.insert("content".into(), text.into());
            }
            p.insert("role".into(), "user".into());
            insert_count(&mut p, "prompt_length", a.count(&["prompt_length"]));
            vec![step("cognition.thought", p)]
        }
        // Logged when the response is complete, after the tools it asked for have started: placed
        // at its start, it comes before what it decided.
        (Agent::ClaudeCode, "api_request") => vec![model_step(agent, a, true, None)],
        (Agent::ClaudeCode, "api_error") => {
            let error = a.str(&["error", "error.message"]).unwrap_or("the model request failed").to_owned();
            vec![model_step(agent, a, false, Some(error))]
        }
        // Codex logs `response.completed` twice per request; the one with the tokens is the call.
        (Agent::Codex, "sse_event")
            if a.str(&["event.kind"]) == Some("response.completed") && a.has("input_token_count") =>
        {
            vec![step("operation.external_call", model_call(agent, a, true, None))]
        }
        (Agent::Codex, "api_request") => match a.count(&["http.response.status_code"]) {
            Some(code) if code >= 400 => {
                let error = a.str(&["error.message", "error"]).map_or_else(|| format!("HTTP {code}"), str::to_owned);
                let mut p = model_call(agent, a, false, Some(error));
                p.insert("status_code".into(), code.into());
                vec![step("operation.external_call", p)]
            }
            _ => Vec::new(),
        },
        (_, "tool_result") => tool_call(a),
        (Agent::ClaudeCode, "subagent_completed") => subagent_completed(a),
        (_, "tool_decision") => {
            let mut p = Map::new();
            for key in ["decision", "source", "tool_name"] {
                if let Some(v) = a.str(&[key]) {
                    p.insert(key.into(), v.into());
                }
            }
            if let Some(id) = a.str(&["tool_use_id", "call_id"]) {
                p.insert("tool_call_id".into(), id.into());
            }
            p.insert("agent".into(), agent.id().into());
            vec![step("custom.tool_decision", p)]
        }
        _ => Vec::new(),
    }
}

/// A subagent's end: its spawn in the parent (timed at its start, `child_session_id` filled in
/// by the caller, which knows the session) and its session's end.
fn subagent_completed(a: Attrs<'_>) -> Vec<Step> {
    let kind = a.str(&["agent_type", "agent.name"]).unwrap_or("subagent");
    let before_ns = number(a, "duration_ms").filter(|d| d.is_finite() && *d > 0.0).map_or(0, |d| (d * 1e6) as u64);
    let mut spawn = Map::new();
    spawn.insert("child_agent_id".into(), Agent::ClaudeCode.id().into());
    spawn.insert("reason".into(), format!("{kind} subagent").into());
    let mut ended = Map::new();
    ended.insert("outcome".into(), "completed".into());
    // What it reports of itself is kept as metadata: the session's own totals are its steps'.
    let mut reported = Map::new();
    let mut summary = format!("{kind} subagent");
    if let Some(n) = a.count(&["total_tool_uses"]) {
        summary.push_str(&format!(", {n} tool use{}", if n == 1 { "" } else { "s" }));
        reported.insert("total_tool_uses".into(), n.into());
    }
    if let Some(n) = a.count(&["total_tokens"]) {
        summary.push_str(&format!(", {n} tokens"));
        reported.insert("total_tokens".into(), n.into());
    }
    ended.insert("outcome_summary".into(), summary.into());
    ended.insert("metadata".into(), reported.into());
    vec![
        Step { kind: "operation.agent_spawn", payload: spawn, before_ns, in_parent: true },
        Step { kind: "session.ended", payload: ended, before_ns: 0, in_parent: false },
    ]
}

fn model_step(agent: Agent, a: Attrs<'_>, success: bool, error: Option<String>) -> Step {
    let before_ns = number(a, "duration_ms").filter(|d| d.is_finite() && *d > 0.0).map_or(0, |d| (d * 1e6) as u64);
    Step { kind: "operation.external_call", payload: model_call(agent, a, success, error), before_ns, in_parent: false }
}

fn insert_count(p: &mut Map<String, Json>, key: &str, n: Option<i64>) {
    if let Some(n) = n {
        p.insert(key.into(), n.into());
    }
}

/// A model request: `operation.external_call` with the model, the tokens (cache reads and writes
/// where given) and the cost the agent reports (the price table prices it otherwise).
fn model_call(agent: Agent, a: Attrs<'_>, success: bool, error: Option<String>) -> Map<String, Json> {
    let mut p = Map::new();
    p.insert("service".into(), agent.service().into());
    p.insert("method".into(), agent.method().into());
    if let Some(model) = a.str(&["model"]) {
        p.insert("model".into(), model.into());
    }
    let input = a.count(&["input_tokens", "input_token_count"]);
    let output = a.count(&["output_tokens", "output_token_count"]);
    let cache_read = a.count(&["cache_read_tokens", "cached_token_count"]);
    let cache_write = a.count(&["cache_creation_tokens", "cache_write_token_count"]);
    insert_count(&mut p, "input_tokens", input);
    insert_count(&mut p, "output_tokens", output);
    insert_count(&mut p, "cache_read_tokens", cache_read);
    insert_count(&mut p, "cache_creation_tokens", cache_write);
    insert_count(&mut p, "reasoning_tokens", a.count(&["reasoning_token_count"]));
    if [input, output, cache_read, cache_write].iter().any(Option::is_some) {
        let total = [input, output, cache_read, cache_write].iter().flatten().fold(0i64, |s, n| s.saturating_add(*n));
        p.insert("token_spend_delta".into(), total.into());
    }
    if let Some(usd) = number(a, "cost_usd").filter(|c| c.is_finite() && *c >= 0.0) {
        p.insert("cost_usd".into(), usd.into());
    }
    if let Some(ms) = number(a, "duration_ms") {
        p.insert("latency_ms".into(), ms.into());
    }
    p.insert("success".into(), success.into());
    if let Some(e) = error {
        p.insert("error".into(), e.into());
    }
    p
}

/// A tool's result: its call, started `duration_ms` before the record and ended at it.
fn tool_call(a: Attrs<'_>) -> Vec<Step> {
    let tool = match a.str(&["tool_name"]) {
        // Claude Code names every MCP call `mcp_tool` and the real one in its parameters: named
        // as its model and its hooks name it, calls of different tools are different steps.
        Some("mcp_tool") => mcp_tool(a).unwrap_or_else(|| "mcp_tool".to_owned()),
        other => other.unwrap_or("tool").to_owned(),
    };
    let id = a.str(&["tool_use_id", "call_id"]);
    let mut start = Map::new();
    start.insert("tool".into(), tool.clone().into());
    if let Some(input) = a.str(&["tool_input", "arguments"]).and_then(|t| serde_json::from_str::<Json>(t).ok()) {
        start.insert("input".into(), input);
    } else if let Some(params) = a.first(&["tool_parameters"]) {
        start.insert("input".into(), json_of(params));
    }
    let output = a.str(&["output"]);
    // Codex reports `success: true` for a command that exited non-zero: its output says so.
    let exit = output.and_then(exit_code).filter(|c| *c != 0);
    let success = a.first(&["success"]).and_then(truth).unwrap_or(true) && exit.is_none();
    let mut end = Map::new();
    end.insert("tool".into(), tool.into());
    end.insert("success".into(), success.into());
    if let Some(o) = output {
        end.insert("output_summary".into(), cut(command_output(o), 4096).into());
    }
    if !success {
        let error = match (a.str(&["error_type"]), a.str(&["error"])) {
            (Some(t), Some(e)) => format!("{t}: {e}"),
            (t, e) => t.or(e).map(str::to_owned).unwrap_or_else(|| match exit {
                Some(code) => format!("exited with code {code}"),
                None => "the tool failed".to_owned(),
            }),
        };
        end.insert("error".into(), error.into());
    }
    let duration = number(a, "duration_ms");
    if let Some(ms) = duration {
        end.insert("latency_ms".into(), ms.into());
    }
    if let Some(id) = id {
        start.insert("tool_call_id".into(), id.into());
        end.insert("tool_call_id".into(), id.into());
    }
    let before_ns = duration.filter(|d| d.is_finite() && *d > 0.0).map_or(0, |d| (d * 1e6) as u64);
    vec![
        Step { kind: "operation.tool_start", payload: start, before_ns, in_parent: false },
        Step { kind: "operation.tool_end", payload: end, before_ns: 0, in_parent: false },
    ]
}

/// `mcp__<server>__<tool>` from Claude Code's `tool_parameters` (a JSON text, or a map).
fn mcp_tool(a: Attrs<'_>) -> Option<String> {
    let params = match json_of(a.first(&["tool_parameters"])?) {
        Json::String(text) => serde_json::from_str(&text).ok()?,
        other => other,
    };
    let name = |key: &str| params.get(key).and_then(Json::as_str).filter(|s| !s.is_empty());
    Some(format!("mcp__{}__{}", name("mcp_server_name")?, name("mcp_tool_name")?))
}

/// A number sent as a number or as a string (`"85"`, `"0.0021"`).
fn number(a: Attrs<'_>, key: &str) -> Option<f64> {
    match a.get(key)? {
        Value::IntValue(n) => Some(*n as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean sent as a boolean or as `"true"`/`"false"`.
fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::BoolValue(b) => Some(*b),
        Value::StringValue(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The exit code a command's output reports (`Exit code: 1`, `Process exited with code 1`).
fn exit_code(output: &str) -> Option<i64> {
    let lower = output.to_ascii_lowercase();
    for marker in ["exit code:", "exited with code", "exit code"] {
        if let Some(at) = lower.find(marker) {
            let rest = lower[at + marker.len()..].trim_start();
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

/// What a command printed, without the header Codex puts before it (`Chunk ID`, `Wall time`,
/// the exit code, a token count), which differs from run to run: two identical commands with
/// the same result then read the same, as a loop must.
fn command_output(output: &str) -> &str {
    const HEADER: [&str; 4] = ["Chunk ID:", "Wall time:", "Process exited with code", "Original token count:"];
    let mut rest = output;
    while let Some(line) = rest.split_inclusive('\n').next().filter(|l| HEADER.iter().any(|h| l.starts_with(h))) {
        rest = &rest[line.len()..];
    }
    rest.strip_prefix("Output:\n").unwrap_or(rest)
}

/// At most `max` bytes of `text`, cut on a character boundary, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub(crate) fn json_of(v: &Value) -> Json {
    #[derive(Serialize)]
    struct Wrap<'a>(#[serde(serialize_with = "any")] &'a Value);
    fn any<S: serde::Serializer>(v: &&Value, s: S) -> Result<S::Ok, S::Error> {
        super::payload::Any(Some(v)).serialize(s)
    }
    serde_json::to_value(Wrap(v)).unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList};

    fn kv(key: &str, v: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    fn rec(attrs: &[(&str, &str)]) -> LogRecord {
        LogRecord { attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(), ..Default::default() }
    }

    #[test]
    fn agents_are_known_by_service_scope_or_name() {
        assert_eq!(Agent::of(Some("claude-code"), "", None), Some(Agent::ClaudeCode));
        assert_eq!(Agent::of(None, "com.anthropic.claude_code.events", None), Some(Agent::ClaudeCode));
        assert_eq!(Agent::of(Some("codex_exec"), "", None), Some(Agent::Codex));
        assert_eq!(Agent::of(None, "", Some("codex.tool_result")), Some(Agent::Codex));
        assert_eq!(Agent::of(Some("support-bot"), "x", Some("user_prompt")), None);
    }

    #[test]
    fn a_claude_code_failing_command_is_a_failed_tool_call_started_its_duration_earlier() {
        let r = rec(&[
            ("tool_name", "Bash"),
            ("tool_use_id", "toolu_1"),
            ("success", "false"),
            ("duration_ms", "35"),
            ("error_type", "ShellError"),
            ("error", "Shell command failed"),
            ("tool_input", r#"{"command":"cat /nonexistent"}"#),
        ]);
        let s = steps(Agent::ClaudeCode, "tool_result", &r);
        assert_eq!(s.iter().map(|s| s.kind).collect::<Vec<_>>(), ["operation.tool_start", "operation.tool_end"]);
        assert_eq!(s[0].payload["input"]["command"], "cat /nonexistent");
        assert_eq!(s[0].before_ns, 35_000_000);
        let end = &s[1].payload;
        assert_eq!(
            (&end["success"], &end["error"]),
            (&Json::from(false), &Json::from("ShellError: Shell command failed"))
        );
        assert_eq!((&end["tool_call_id"], &end["latency_ms"]), (&Json::from("toolu_1"), &Json::from(35.0)));
    }

    #[test]
    fn a_codex_command_that_exited_non_zero_failed_whatever_its_success_says() {
        let r = rec(&[
            ("tool_name", "exec_command"),
            ("call_id", "call_9"),
            ("success", "true"),
            ("arguments", r#"{"cmd":"cat /nope"}"#),
            ("output", "Process exited with code 1\ncat: /nope: No such file or directory"),
        ]);
        let s = steps(Agent::Codex, "codex.tool_result", &r);
        let end = &s[1].payload;
        assert_eq!(end["success"], false);
        assert_eq!(end["error"], "exited with code 1");
        assert_eq!(s[0].payload["input"]["cmd"], "cat /nope");
        let ok = rec(&[("tool_name", "exec_command"), ("success", "true"), ("output", "Exit code: 0\nREADME.md")]);
        assert_eq!(steps(Agent::Codex, "tool_result", &ok)[1].payload["success"], true);
        let headed = |chunk: &str| {
            let output = format!(
                "Chunk ID: {chunk}\nWall time: 0.0000 seconds\nProcess exited with code 0\nOriginal token count: 7\nOutput:\nREADME.md\nmain.py\n"
            );
            let r = rec(&[("tool_name", "exec_command"), ("success", "true"), ("output", &output)]);
            steps(Agent::Codex, "tool_result", &r)[1].payload["output_summary"].clone()
        };
        assert_eq!(headed("b601d7"), "README.md\nmain.py\n");
        assert_eq!(headed("b601d7"), headed("5b73c3"), "the same result reads the same");
    }

    #[test]
    fn model_requests_carry_tokens_and_the_reported_cost() {
        let r = rec(&[
            ("model", "claude-sonnet-4-5"),
            ("input_tokens", "12"),
            ("output_tokens", "30"),
            ("cache_read_tokens", "100"),
            ("cache_creation_tokens", "0"),
            ("cost_usd", "0.0021"),
            ("duration_ms", "850"),
        ]);
        let call = &steps(Agent::ClaudeCode, "api_request", &r)[0];
        assert_eq!(call.before_ns, 850_000_000, "placed at its start");
        let p = &call.payload;
        assert_eq!(p["model"], "claude-sonnet-4-5");
        assert_eq!(
            (&p["input_tokens"], &p["output_tokens"], &p["token_spend_delta"]),
            (&Json::from(12), &Json::from(30), &Json::from(142))
        );
        assert_eq!(
            (&p["cost_usd"], &p["latency_ms"], &p["success"]),
            (&Json::from(0.0021), &Json::from(850.0), &Json::from(true))
        );
        let codex = rec(&[
            ("event.kind", "response.completed"),
            ("model", "gpt-5"),
            ("input_token_count", "900"),
            ("output_token_count", "40"),
        ]);
        let p = &steps(Agent::Codex, "codex.sse_event", &codex)[0].payload;
        assert_eq!((&p["service"], &p["token_spend_delta"]), (&Json::from("openai"), &Json::from(940)));
        assert!(
            steps(Agent::Codex, "codex.sse_event", &rec(&[("event.kind", "response.output_text.delta")])).is_empty()
        );
        assert!(steps(Agent::Codex, "codex.api_request", &rec(&[("http.response.status_code", "200")])).is_empty());
        let failed =
            &steps(Agent::Codex, "codex.api_request", &rec(&[("http.response.status_code", "500")]))[0].payload;
        assert_eq!((&failed["success"], &failed["error"]), (&Json::from(false), &Json::from("HTTP 500")));
    }

    #[test]
    fn prompts_are_the_users_thoughts_and_decisions_custom_events() {
        let p =
            &steps(Agent::ClaudeCode, "user_prompt", &rec(&[("prompt", "List the files"), ("prompt_length", "14")]))[0];
        assert_eq!(p.kind, "cognition.thought");
        assert_eq!((&p.payload["content"], &p.payload["role"]), (&Json::from("List the files"), &Json::from("user")));
        let hidden = &steps(Agent::ClaudeCode, "user_prompt", &rec(&[("prompt_length", "14")]))[0];
        assert!(!hidden.payload.contains_key("content"), "content only where the agent sent it");
        let d = &steps(
            Agent::ClaudeCode,
            "tool_decision",
            &rec(&[("decision", "reject"), ("source", "hook"), ("tool_name", "Bash")]),
        )[0];
        assert_eq!((d.kind, &d.payload["decision"]), ("custom.tool_decision", &Json::from("reject")));
        let params = LogRecord {
            attributes: vec![
                kv("tool_name", "Read"),
                KeyValue {
                    key: "tool_parameters".into(),
                    value: Some(AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList { values: vec![kv("file_path", "README.md")] })),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(steps(Agent::ClaudeCode, "tool_result", &params)[0].payload["input"]["file_path"], "README.md");
        assert!(steps(Agent::ClaudeCode, "hook_execution_start", &rec(&[])).is_empty());
        let params = r#"{"mcp_server_name":"aop","mcp_tool_name":"list_sessions"}"#;
        let mcp = rec(&[("tool_name", "mcp_tool"), ("tool_parameters", params), ("success", "true")]);
        let call = steps(Agent::ClaudeCode, "tool_result", &mcp);
        assert_eq!(
            (&call[0].payload["tool"], &call[1].payload["tool"]),
            (&Json::from("mcp__aop__list_sessions"), &Json::from("mcp__aop__list_sessions"))
        );
        let unnamed = rec(&[("tool_name", "mcp_tool"), ("tool_parameters", "{}")]);
        assert_eq!(steps(Agent::ClaudeCode, "tool_result", &unnamed)[0].payload["tool"], "mcp_tool");
    }
}
