//! The real Claude Code and Codex CLIs, headless and offline, sending their telemetry to the
//! binary under test ([`crate::support::agents`]): a scripted model has each list the files, read
//! README.md and run a command that fails (`basic`), or run one command five times (`loop`).
//!
//! These tests pin what aop stores from each CLI today (every log record as an `otel.log` event,
//! in its trace's session or its conversation's; spans as sessions of their traces) and print
//! what each CLI sent, counted by kind, so that a change in either CLI or in aop's mapping shows.
//! Without network namespaces (not root) a test prints why and passes, except under `CI`.

use crate::support::agents::*;
use serde_json::{json, Value};

/// A string or number attribute as text (Claude Code sends many numbers as strings).
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The `tool_result` blocks of a Messages API request's user turns.
fn tool_result_blocks(request: &Value) -> Vec<&Value> {
    let messages = request["body"]["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .collect()
}

/// The checks every Claude Code run of the `basic` scenario passes; returns its session id.
fn claude_basic_ran(ran: &Ran, traces: bool) -> String {
    eprintln!("{}", ran.describe());
    let out = ran.output();
    assert_eq!(ran.exit_code(), 0, "{out}");
    let result = ran.stdout();
    assert_eq!(result["is_error"], false, "{out}");
    assert!(text(&result["result"]).starts_with("Done:"), "the scripted final answer: {out}");
    let session = text(&result["session_id"]);

    // Nothing but the agent's steps reached the model, and the failure came back as an error.
    let requests = ran.model_requests();
    let paths: Vec<String> =
        requests.iter().map(|r| format!("{} {} {}", r["method"], r["path"], r["status"])).collect();
    assert_eq!(paths, vec![r#""POST" "/v1/messages?beta=true" 200"#; 4], "one request a step, no others");
    assert!(requests.iter().all(|r| r["body"]["stream"] == true), "streaming requests");
    let said_session = |r: &Value| {
        let headers = r["headers"].as_object().expect("headers");
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-claude-code-session-id")).map(|(_, v)| text(v))
    };
    assert!(
        requests.iter().all(|r| said_session(r).as_deref() == Some(session.as_str())),
        "{:?}",
        requests[0]["headers"]
    );
    let results = tool_result_blocks(&requests[3]);
    assert_eq!(results.len(), 3, "the last request holds the three tool results");
    assert_eq!(results[2]["is_error"], true, "{}", results[2]);
    assert!(results[2]["content"].to_string().contains("No such file or directory"), "{}", results[2]);
    assert!(results[..2].iter().all(|r| r.get("is_error").is_none_or(|e| e == false)), "{results:?}");

    // Every record arrived, nothing was refused, and each is in its trace's session or its own.
    let logs = ran.logs();
    assert_eq!(ran.metric("aop_otlp_log_records_accepted_total"), logs.len() as f64, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_log_records_rejected_total"), 0.0, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_spans_rejected_total"), 0.0, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_spans_accepted_total") > 0.0, traces, "spans only with traces on");
    for log in &logs {
        let p = &log["payload"];
        assert_eq!(p["attributes"]["session.id"], session.as_str(), "{log}");
        assert_eq!(p["body"], format!("claude_code.{}", text(&p["name"])), "the body repeats the name: {log}");
        let home = p["otel"]["trace_id"].as_str().map_or_else(|| session.clone(), |t| format!("otel-{t}"));
        assert_eq!(log["session_id"], home.as_str(), "{log}");
    }

    let prompts = ran.logs_named("user_prompt");
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0]["payload"]["attributes"]["prompt"], BASIC_PROMPT, "OTEL_LOG_USER_PROMPTS=1 sends the text");
    assert_eq!(
        prompts[0]["payload"]["otel"]["trace_id"].is_string(),
        traces,
        "records carry a trace id only with traces"
    );

    let requests = ran.logs_named("api_request");
    assert_eq!(requests.len(), 4, "one record a model request");
    for r in &requests {
        let a = &r["payload"]["attributes"];
        assert_eq!(a["model"], "claude-sonnet-4-5", "{r}");
        assert!(text(&a["input_tokens"]).parse::<u64>().unwrap_or(0) > 0, "the fake model's usage: {r}");
        assert!(text(&a["output_tokens"]).parse::<u64>().unwrap_or(0) > 0, "{r}");
        assert!(a["cost_usd"].is_string() || a["cost_usd"].is_number(), "{r}");
    }

    let decisions = ran.logs_named("tool_decision");
    assert_eq!(decisions.len(), 3, "one decision a tool call");
    assert!(decisions.iter().all(|d| d["payload"]["attributes"]["decision"] == "accept"), "{decisions:?}");

    let tools = ran.logs_named("tool_result");
    let seen: Vec<(String, String)> = tools
        .iter()
        .map(|t| (text(&t["payload"]["attributes"]["tool_name"]), text(&t["payload"]["attributes"]["success"])))
        .collect();
    let want = [("Bash", "true"), ("Read", "true"), ("Bash", "false")].map(|(t, s)| (t.to_owned(), s.to_owned()));
    assert_eq!(seen, want, "the three tool calls in order, the last one failed");
    let failed = &tools[2]["payload"]["attributes"];
    assert!(text(&failed["tool_input"]).contains(FAILING_COMMAND), "OTEL_LOG_TOOL_DETAILS=1 sends the input: {failed}");
    assert_eq!(failed["error_type"], "ShellError", "{failed}");

    assert_eq!(ran.json["aop"]["exit_code"], 0, "aop stops cleanly on SIGTERM\n{out}");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_over_grpc_with_traces_sends_its_prompt_model_requests_and_tool_results() {
    let Some(ran) = AgentRun::claude("basic", "grpc").traces(true).run().await else { return };
    let session = claude_basic_ran(&ran, true);
    // The prompt's records join the prompt's trace, which holds the spans' session today.
    let traced: Vec<&Value> = ran.logs().into_iter().filter(|l| l["payload"]["otel"]["trace_id"].is_string()).collect();
    assert!(traced.iter().any(|l| l["payload"]["name"] == "tool_result"), "{}", ran.describe());
    let trace_sessions: Vec<&Value> =
        ran.sessions().iter().filter(|s| s["id"].as_str().is_some_and(|id| id.starts_with("otel-"))).collect();
    assert_eq!(trace_sessions.len(), 1, "one prompt, one trace: {trace_sessions:?}");
    eprintln!("the trace's session: agent {} goal {}", trace_sessions[0]["agent_id"], trace_sessions[0]["goal"]);
    assert!(ran.sessions().iter().any(|s| s["id"] == session.as_str()), "the records before the prompt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_over_http_protobuf_without_traces_keeps_every_record_in_its_session() {
    let Some(ran) = AgentRun::claude("basic", "http/protobuf").run().await else { return };
    let session = claude_basic_ran(&ran, false);
    let ids: Vec<&Value> = ran.sessions().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!(session)], "one session, named by Claude Code's session id");
    assert_eq!(ran.sessions()[0]["agent_id"], "claude-code", "its service.name");
    assert_eq!(ran.events(&session).iter().filter(|e| e["type"] == "otel.log").count(), ran.logs().len());
}

/// Also the `--settings` passthrough later tests stand on: two command hooks that append their
/// input to a file in the run's folder (`@WORK@`, replaced by the driver), which Claude Code
/// reports in its telemetry as hook executions that succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_over_http_json_with_traces_and_hooks_from_a_settings_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = dir.path().join("settings.json");
    let append = json!([{"matcher": "*", "hooks": [{"type": "command", "command": "cat >> @WORK@/hook-input.jsonl"}]}]);
    let hooks = json!({"hooks": {"PreToolUse": append, "PostToolUse": append}});
    std::fs::write(&settings, hooks.to_string()).expect("the settings file");
    let Some(ran) = AgentRun::claude("basic", "http/json").traces(true).settings(&settings).run().await else {
        return;
    };
    claude_basic_ran(&ran, true);
    let registered = ran.logs_named("hook_registered");
    let mut events: Vec<String> = registered.iter().map(|h| text(&h["payload"]["attributes"]["hook_event"])).collect();
    events.sort();
    assert_eq!(events, ["PostToolUse", "PreToolUse"], "{}", ran.describe());
    let completed = ran.logs_named("hook_execution_complete");
    let pre: Vec<&&Value> =
        completed.iter().filter(|h| h["payload"]["attributes"]["hook_event"] == "PreToolUse").collect();
    assert_eq!(pre.len(), 3, "before each tool call: {completed:?}");
    for h in &completed {
        let a = &h["payload"]["attributes"];
        assert_eq!(text(&a["num_success"]), text(&a["num_hooks"]), "every hook ran, so @WORK@ was replaced: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_in_a_loop_runs_one_command_five_times() {
    let Some(ran) = AgentRun::claude("loop", "http/json").run().await else { return };
    eprintln!("{}", ran.describe());
    assert_eq!(ran.exit_code(), 0, "{}", ran.output());
    assert_eq!(ran.model_requests().len(), 6, "five steps and the answer");
    let tools = ran.logs_named("tool_result");
    assert_eq!(tools.len(), 5, "{}", ran.describe());
    for t in &tools {
        let a = &t["payload"]["attributes"];
        assert_eq!((text(&a["tool_name"]), text(&a["success"])), ("Bash".to_owned(), "true".to_owned()), "{t}");
        let input: Value = serde_json::from_str(&text(&a["tool_input"])).expect("the tool input is JSON text");
        assert_eq!(input["command"], LOOP_COMMAND, "{t}");
    }
    assert_eq!(ran.metric("aop_otlp_log_records_rejected_total"), 0.0);
    eprintln!("alerts today: {:?}", ran.alerts());
}

/// Codex's `--json` events: its thread id, and its command executions.
fn codex_thread(ran: &Ran) -> (String, Vec<&Value>) {
    let lines = ran.stdout().as_array().map(Vec::as_slice).unwrap_or_default();
    let thread = lines.iter().find(|l| l["type"] == "thread.started").map(|l| text(&l["thread_id"]));
    let commands = lines
        .iter()
        .filter(|l| l["type"] == "item.completed" && l["item"]["type"] == "command_execution")
        .map(|l| &l["item"])
        .collect();
    (thread.unwrap_or_else(|| panic!("no thread.started\n{}", ran.output())), commands)
}

/// The Responses API requests; any other request must be Codex's analytics (answered 404).
fn responses_requests(ran: &Ran) -> Vec<&Value> {
    let (responses, others): (Vec<&Value>, Vec<&Value>) =
        ran.model_requests().iter().partition(|r| r["path"] == "/v1/responses");
    for r in &others {
        let path = text(&r["path"]);
        assert!(path.starts_with("/v1/analytics/"), "an unexpected request to the model server: {r}");
        eprintln!("also sent to the model server: {} {path} (answered {})", r["method"], r["status"]);
    }
    assert!(responses.iter().all(|r| r["status"] == 200 && r["body"]["stream"] == true), "{responses:?}");
    responses
}

/// The checks every Codex run of the `basic` scenario passes; returns its thread id.
fn codex_basic_ran(ran: &Ran, traces: bool) -> String {
    eprintln!("{}", ran.describe());
    let out = ran.output();
    assert_eq!(ran.exit_code(), 0, "{out}");
    let (thread, commands) = codex_thread(ran);
    let exits: Vec<&Value> = commands.iter().map(|c| &c["exit_code"]).collect();
    assert_eq!(exits, [&json!(0), &json!(0), &json!(1)], "{out}");
    let lines = ran.stdout().as_array().expect("lines");
    let usage = &lines.iter().find(|l| l["type"] == "turn.completed").expect("turn.completed")["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap_or(0) > 0, "the fake model's usage: {usage}");

    let requests = responses_requests(ran);
    assert_eq!(requests.len(), 4, "one request a step");
    let outputs: Vec<&Value> = requests[3]["body"]["input"]
        .as_array()
        .expect("input items")
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs.len(), 3, "{out}");
    assert!(text(&outputs[2]["output"]).contains("exited with code 1"), "{}", outputs[2]);

    // The named records arrived, each keyed to the thread.
    let logs = ran.logs();
    for log in &logs {
        let p = &log["payload"];
        assert!(text(&p["name"]).starts_with("codex."), "{log}");
        assert_eq!(p["attributes"]["conversation.id"], thread.as_str(), "{log}");
        let home = p["otel"]["trace_id"].as_str().map_or_else(|| thread.clone(), |t| format!("otel-{t}"));
        assert_eq!(log["session_id"], home.as_str(), "{log}");
    }
    if !traces {
        assert!(logs.iter().all(|l| l["session_id"] == thread.as_str()), "no trace ids without traces");
    }
    let prompts = ran.logs_named("codex.user_prompt");
    assert_eq!(prompts.len(), 1, "{}", ran.describe());
    assert_eq!(prompts[0]["payload"]["attributes"]["prompt"], BASIC_PROMPT, "log_user_prompt = true");
    assert_eq!(ran.logs_named("codex.api_request").len(), 4, "{}", ran.describe());
    assert_eq!(ran.logs_named("codex.tool_decision").len(), 3, "{}", ran.describe());
    let tools = ran.logs_named("codex.tool_result");
    assert_eq!(tools.len(), 3, "{}", ran.describe());
    let failed = &tools[2]["payload"]["attributes"];
    assert!(text(&failed["arguments"]).contains(FAILING_COMMAND), "{failed}");
    assert!(text(&failed["output"]).contains("exited with code 1"), "{failed}");
    eprintln!("Codex's tool_result for the failing command says success={}", failed["success"]);

    // Codex also exports one debug log of its own ("flushing OTEL metrics") with no attributes
    // and no trace: OTLP.md says aop refuses such a record, with a reason.
    assert!(ran.metric("aop_otlp_log_records_rejected_total") <= 1.0, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_spans_rejected_total"), 0.0, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_spans_accepted_total") > 0.0, traces, "spans only with traces on");
    assert_eq!(ran.json["aop"]["exit_code"], 0, "aop stops cleanly on SIGTERM\n{out}");
    thread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_over_otlp_http_json_sends_its_prompt_model_requests_and_tool_results_keyed_to_its_thread() {
    let Some(ran) = AgentRun::codex("basic", "json").run().await else { return };
    let thread = codex_basic_ran(&ran, false);
    let ids: Vec<&Value> = ran.sessions().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!(thread)], "one session, named by the thread id");
    assert_eq!(ran.sessions()[0]["agent_id"], "codex_exec", "its service.name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_over_otlp_http_binary_with_its_internal_traces() {
    let Some(ran) = AgentRun::codex("basic", "binary").traces(true).run().await else { return };
    let thread = codex_basic_ran(&ran, true);
    // Its internal tracing spans, one aop session per trace today.
    let traces = ran.sessions().iter().filter(|s| s["id"].as_str().is_some_and(|id| id.starts_with("otel-"))).count();
    eprintln!("Codex's spans made {traces} trace sessions besides the thread's {thread}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_in_a_loop_runs_one_command_five_times() {
    let Some(ran) = AgentRun::codex("loop", "json").run().await else { return };
    eprintln!("{}", ran.describe());
    assert_eq!(ran.exit_code(), 0, "{}", ran.output());
    let (_, commands) = codex_thread(&ran);
    assert_eq!(commands.len(), 5, "{}", ran.output());
    assert_eq!(responses_requests(&ran).len(), 6, "five steps and the answer");
    let tools = ran.logs_named("codex.tool_result");
    assert_eq!(tools.len(), 5, "{}", ran.describe());
    for t in &tools {
        let args: Value =
            serde_json::from_str(&text(&t["payload"]["attributes"]["arguments"])).expect("JSON arguments");
        assert_eq!(args.as_object().and_then(|o| o.values().next()), Some(&json!(LOOP_COMMAND)), "{t}");
    }
    eprintln!("alerts today: {:?}", ran.alerts());
}
