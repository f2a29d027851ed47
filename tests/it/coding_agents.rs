//! The real Claude Code and Codex CLIs, headless and offline, sending their telemetry to the
//! binary under test ([`crate::support::agents`]): a scripted model has each list the files, read
//! README.md and run a command that fails (`basic`), or run one command five times (`loop`).
//!
//! Each run must be one aop session named by the CLI's own session (Claude Code) or thread
//! (Codex), holding the steps the CLI took in order, its failed command as a failure, tokens and
//! cost as the CLI itself reported them at its end, and one loop alert for the loop; with their
//! spans on, each step still appears once. Each test prints what the CLI sent, counted by kind.
//! Without network namespaces (not root) a test prints why and passes, except under `CI`.

use crate::support::agents::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

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

/// The steps of a session in order: prompts, model calls, tool starts and ends.
fn steps(events: &[Value]) -> Vec<(&str, &Value)> {
    const STEPS: [&str; 4] =
        ["cognition.thought", "operation.external_call", "operation.tool_start", "operation.tool_end"];
    events
        .iter()
        .filter_map(|e| Some((e["type"].as_str()?, &e["payload"])))
        .filter(|(kind, _)| STEPS.contains(kind))
        .collect()
}

/// Steps as short words: `prompt`, `call`, `start Bash`, `end Bash failed`.
fn outline(steps: &[(&str, &Value)]) -> Vec<String> {
    steps
        .iter()
        .map(|(kind, p)| match *kind {
            "cognition.thought" => "prompt".to_owned(),
            "operation.external_call" => "call".to_owned(),
            "operation.tool_start" => format!("start {}", text(&p["tool"])),
            _ => format!("end {} {}", text(&p["tool"]), if p["success"] == true { "ok" } else { "failed" }),
        })
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

    // One aop session, named by Claude Code's, holding the run's steps in order.
    let ids: Vec<&Value> = ran.sessions().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!(session)], "one session whatever its traces: {}", ran.describe());
    let row = &ran.sessions()[0];
    assert_eq!(row["agent_id"], "claude-code");
    assert_eq!(row["goal"], BASIC_PROMPT, "the first prompt is the goal");
    assert_eq!(row["conversation_id"], session.as_str());
    let events = ran.events(&session);
    let steps = steps(events);
    assert_eq!(
        outline(&steps),
        [
            "prompt",
            "call",
            "start Bash",
            "end Bash ok",
            "call",
            "start Read",
            "end Read ok",
            "call",
            "start Bash",
            "end Bash failed",
            "call"
        ],
        "{}",
        ran.describe()
    );
    assert_eq!(steps[0].1["role"], "user");
    assert_eq!(steps[0].1["content"], BASIC_PROMPT, "OTEL_LOG_USER_PROMPTS=1 sends the text");
    assert_eq!(steps[2].1["input"]["command"], "ls -la", "OTEL_LOG_TOOL_DETAILS=1 sends the input");
    assert!(text(&steps[5].1["input"]["file_path"]).ends_with("/README.md"), "{}", steps[5].1);
    assert_eq!(steps[8].1["input"]["command"], FAILING_COMMAND);
    assert!(text(&steps[9].1["error"]).contains("Shell command failed"), "{}", steps[9].1);
    for (_, end) in steps.iter().filter(|(kind, _)| *kind == "operation.tool_end") {
        assert!(end["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "its duration: {end}");
    }

    // Tokens and cost as the CLI reported them at its end.
    let usage = &result["usage"];
    let calls: Vec<&Value> =
        steps.iter().filter(|(kind, _)| *kind == "operation.external_call").map(|(_, p)| *p).collect();
    for call in &calls {
        assert_eq!((&call["model"], &call["success"]), (&json!("claude-sonnet-4-5"), &json!(true)), "{call}");
    }
    let sum = |key: &str| calls.iter().map(|c| c[key].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(sum("input_tokens"), usage["input_tokens"].as_u64().expect("usage"), "{usage}");
    assert_eq!(sum("output_tokens"), usage["output_tokens"].as_u64().expect("usage"), "{usage}");
    let cache = usage["cache_read_input_tokens"].as_u64().unwrap_or(0)
        + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    assert_eq!(sum("cache_read_tokens") + sum("cache_creation_tokens"), cache, "{usage}");
    let total = usage["input_tokens"].as_u64().unwrap_or(0) + usage["output_tokens"].as_u64().unwrap_or(0) + cache;
    assert_eq!(row["total_tokens"], total, "{row}");
    let cost = result["total_cost_usd"].as_f64().expect("the CLI's cost");
    assert!(cost > 0.0);
    let stored = row["total_cost_usd"].as_f64().expect("a cost");
    assert!((stored - cost).abs() < 1e-6, "aop's cost {stored} vs the CLI's {cost}");
    let decisions: Vec<&Value> = events.iter().filter(|e| e["type"] == "custom.tool_decision").collect();
    assert_eq!(decisions.len(), 3, "one decision a tool call");
    assert!(decisions.iter().all(|d| d["payload"]["decision"] == "accept"), "{decisions:?}");

    // Nothing refused; with traces on, the spans are kept in the same session, not as steps.
    assert_eq!(ran.metric("aop_otlp_log_records_rejected_total"), 0.0, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_spans_rejected_total"), 0.0, "{}", ran.describe());
    let spans = ran.metric("aop_otlp_spans_accepted_total");
    assert_eq!(spans > 0.0, traces, "spans only with traces on");
    assert_eq!(events.iter().filter(|e| e["type"] == "otel.span").count() as f64, spans, "{}", ran.describe());
    assert_eq!(
        ran.metric("aop_otlp_log_records_accepted_total") as usize,
        events
            .iter()
            .filter(|e| e["payload"]["otel"]["record_id"].is_string())
            .filter_map(|e| e["payload"]["otel"]["record_id"].as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "every record is in the session, once: {}",
        ran.describe()
    );
    assert_eq!(ran.json["aop"]["exit_code"], 0, "aop stops cleanly on SIGTERM\n{out}");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_over_grpc_with_traces_is_one_session_whose_steps_appear_once() {
    let Some(ran) = AgentRun::claude("basic", "grpc").traces(true).run().await else { return };
    let session = claude_basic_ran(&ran, true);
    // Its spans name the session they belong to and keep their tree.
    let spans: Vec<&Value> = ran.events(&session).iter().filter(|e| e["type"] == "otel.span").collect();
    assert!(spans.iter().any(|s| s["payload"]["name"] == "claude_code.interaction"), "{spans:?}");
    assert!(spans.iter().any(|s| s["payload"]["name"] == "claude_code.tool.execution"), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_over_http_protobuf_without_traces_is_one_session_of_its_steps() {
    let Some(ran) = AgentRun::claude("basic", "http/protobuf").run().await else { return };
    claude_basic_ran(&ran, false);
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
async fn claude_code_running_one_command_five_times_raises_one_loop_alert() {
    let Some(ran) = AgentRun::claude("loop", "http/json").run().await else { return };
    eprintln!("{}", ran.describe());
    assert_eq!(ran.exit_code(), 0, "{}", ran.output());
    assert_eq!(ran.model_requests().len(), 6, "five steps and the answer");
    let session = text(&ran.stdout()["session_id"]);
    let steps = steps(ran.events(&session));
    let starts: Vec<&Value> = steps.iter().filter(|(k, _)| *k == "operation.tool_start").map(|(_, p)| *p).collect();
    assert_eq!(starts.len(), 5, "{}", ran.describe());
    assert!(starts.iter().all(|p| p["tool"] == "Bash" && p["input"]["command"] == LOOP_COMMAND), "{starts:?}");
    one_loop_alert(&ran, &session);
}

/// Claude Code with the hook settings `aop hooks claude-code` prints: a run that repeats one `Bash`
/// command is told `ask` (a denial under `-p`) at the repeat that would complete the loop, the
/// model sees aop's reason, and the hooks' events land in the telemetry's session without doubled
/// steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_with_aops_hooks_is_stopped_at_the_call_that_completes_a_loop() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = dir.path().join("settings.json");
    let aop = Path::new(env!("CARGO_BIN_EXE_aop"));
    let printed = Command::new(aop).args(["hooks", "claude-code", "--url", "@AOP_URL@"]).output().expect("aop hooks");
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    std::fs::write(&settings, &printed.stdout).expect("the settings file");
    let Some(ran) = AgentRun::claude("loop", "http/json").settings(&settings).run().await else { return };
    eprintln!("{}", ran.describe());
    assert_eq!(ran.exit_code(), 0, "{}", ran.output());
    let session = text(&ran.stdout()["session_id"]);

    // The model was told why, in the tool result of the denied call.
    let told: Vec<String> = ran
        .model_requests()
        .iter()
        .flat_map(tool_result_blocks)
        .map(|b| b["content"].to_string())
        .filter(|c| c.contains("aop: "))
        .collect();
    assert!(!told.is_empty(), "no tool result carried aop's reason: {:?}", ran.model_requests());
    assert!(told[0].contains("a loop"), "{told:?}");
    eprintln!("the model was told: {}", told[0]);

    let events = ran.events(&session);
    let starts: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "operation.tool_start").map(|e| &e["payload"]).collect();
    assert_eq!(starts.len(), 3, "three calls ran, each one step: {}", ran.describe());
    assert!(
        starts.iter().all(|p| p["input"]["command"] == LOOP_COMMAND && p["via"] == "claude-code hooks"),
        "{starts:?}"
    );
    let ends = events.iter().filter(|e| e["type"] == "operation.tool_end").count();
    assert_eq!(ends, 3, "{}", ran.describe());
    let asked: Vec<&Value> = events.iter().filter(|e| e["type"] == "aop.guard").collect();
    assert!(!asked.is_empty(), "the guard's ask is recorded: {}", ran.describe());
    assert!(asked.iter().all(|e| e["payload"]["decision"] == "ask"), "{asked:?}");
    assert_eq!(asked[0]["payload"]["reasons"][0]["type"], "loop");
    // The telemetry's model calls are in the same session, and its tool results kept as records.
    assert!(events.iter().any(|e| e["type"] == "operation.external_call"), "{}", ran.describe());
    assert_eq!(ran.sessions().len(), 1, "one session: {}", ran.describe());
}

/// A subagent runs inside Claude Code's session (same `session.id`, no trace of its own); its
/// records carry its `agent_id`, which makes it a child session the parent spawned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_subagent_is_a_child_session_of_the_run() {
    for (protocol, traces) in [("http/protobuf", false), ("grpc", true)] {
        let Some(ran) = AgentRun::claude("subagent", protocol).traces(traces).run().await else { return };
        eprintln!("{}", ran.describe());
        assert_eq!(ran.exit_code(), 0, "{}", ran.output());
        let session = text(&ran.stdout()["session_id"]);
        let child = ran
            .sessions()
            .iter()
            .find(|s| s["parent_session_id"] == session.as_str())
            .unwrap_or_else(|| panic!("no child session: {}", ran.describe()));
        let child_id = text(&child["id"]);
        assert_eq!(ran.sessions().len(), 2, "the run and its subagent: {:?}", ran.sessions());
        assert_eq!((&child["agent_id"], &child["status"]), (&json!("claude-code"), &json!("completed")), "{child}");
        let parent = ran.sessions().iter().find(|s| s["id"] == session.as_str()).expect("the run's session");
        assert_eq!(parent["child_count"], 1, "{parent}");

        // The subagent's steps are in its session, the Agent call and its spawn in the parent's.
        let sub = steps(ran.events(&child_id));
        assert_eq!(outline(&sub), ["call", "start Bash", "end Bash ok", "call"], "{}", ran.describe());
        assert_eq!(sub[1].1["input"]["command"], LOOP_COMMAND);
        let events = ran.events(&session);
        let spawns: Vec<&Value> = events.iter().filter(|e| e["type"] == "operation.agent_spawn").collect();
        assert_eq!(spawns.len(), 1, "{}", ran.describe());
        assert_eq!(spawns[0]["payload"]["child_session_id"], child_id.as_str());
        let main = outline(&steps(events));
        assert_eq!(main, ["prompt", "call", "start Agent", "end Agent ok", "call"], "{}", ran.describe());
        let spans = events.iter().chain(ran.events(&child_id)).filter(|e| e["type"] == "otel.span").count();
        assert_eq!(spans as f64, ran.metric("aop_otlp_spans_accepted_total"), "every span in one of the two");

        // Tokens: the CLI's usage counts its main thread's; the cost it reports, both.
        let usage = &ran.stdout()["usage"];
        let input = |id: &str| -> u64 {
            steps(ran.events(id))
                .iter()
                .filter(|(k, _)| *k == "operation.external_call")
                .map(|(_, p)| p["input_tokens"].as_u64().unwrap_or(0))
                .sum()
        };
        assert_eq!(input(&session), usage["input_tokens"].as_u64().expect("usage"), "{usage}");
        assert!(input(&child_id) > 0);
        let cost = |row: &Value| row["total_cost_usd"].as_f64().unwrap_or(0.0);
        let reported = ran.stdout()["total_cost_usd"].as_f64().expect("the CLI's cost");
        eprintln!("cost: run {} + subagent {} vs the CLI's {reported}", cost(parent), cost(child));
        assert!((cost(parent) + cost(child) - reported).abs() < 1e-6, "{parent} {child}");
    }
}

/// The run raised exactly one alert, a loop, on its session.
fn one_loop_alert(ran: &Ran, session: &str) {
    let alerts: Vec<(String, String)> =
        ran.alerts().iter().map(|a| (text(&a["type"]), text(&a["session_id"]))).collect();
    assert_eq!(alerts, [("loop".to_owned(), session.to_owned())], "{}", ran.describe());
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

    // One aop session, named by the thread, holding the run's steps in order.
    let ids: Vec<&Value> = ran.sessions().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!(thread)], "one session, whatever its spans: {}", ran.describe());
    let row = &ran.sessions()[0];
    assert_eq!((&row["agent_id"], &row["goal"]), (&json!("codex"), &json!(BASIC_PROMPT)), "{row}");
    let events = ran.events(&thread);
    let steps = steps(events);
    let tool = "exec_command";
    assert_eq!(
        outline(&steps),
        [
            "prompt".to_owned(),
            "call".to_owned(),
            format!("start {tool}"),
            format!("end {tool} ok"),
            "call".to_owned(),
            format!("start {tool}"),
            format!("end {tool} ok"),
            "call".to_owned(),
            format!("start {tool}"),
            format!("end {tool} failed"),
            "call".to_owned(),
        ],
        "{}",
        ran.describe()
    );
    assert_eq!(
        (&steps[0].1["role"], &steps[0].1["content"]),
        (&json!("user"), &json!(BASIC_PROMPT)),
        "log_user_prompt"
    );
    let commands: Vec<String> =
        steps.iter().filter(|(k, _)| *k == "operation.tool_start").map(|(_, p)| text(&p["input"]["cmd"])).collect();
    assert_eq!(commands, ["ls -la", "cat README.md", FAILING_COMMAND], "{}", ran.describe());
    // Codex says `success: true` for a command that exited 1; its output says otherwise.
    let failed = steps[9].1;
    assert_eq!(failed["otel"]["attributes"]["success"], "true", "what Codex sends: {failed}");
    assert_eq!(failed["error"], "exited with code 1", "{failed}");
    assert!(text(&failed["output_summary"]).contains("No such file or directory"), "{failed}");
    assert_eq!(events.iter().filter(|e| e["type"] == "custom.tool_decision").count(), 3);

    // Tokens as the CLI reported them at the turn's end.
    let usage = &lines.iter().find(|l| l["type"] == "turn.completed").expect("turn.completed")["usage"];
    let calls: Vec<&Value> =
        steps.iter().filter(|(kind, _)| *kind == "operation.external_call").map(|(_, p)| *p).collect();
    let sum = |key: &str| calls.iter().map(|c| c[key].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(sum("input_tokens"), usage["input_tokens"].as_u64().expect("usage"), "{usage}");
    assert_eq!(sum("output_tokens"), usage["output_tokens"].as_u64().expect("usage"), "{usage}");
    let total = usage["input_tokens"].as_u64().unwrap_or(0)
        + usage["output_tokens"].as_u64().unwrap_or(0)
        + usage["cached_input_tokens"].as_u64().unwrap_or(0)
        + usage["cache_write_input_tokens"].as_u64().unwrap_or(0);
    assert_eq!(row["total_tokens"], total, "{row}");
    assert!(calls.iter().all(|c| c["model"] == "fake-model"), "{calls:?}");
    assert_eq!(row["unpriced_models"], json!(["fake-model"]), "Codex reports no cost and the model has no price");

    // Codex also exports one debug log of its own ("flushing OTEL metrics") with no attributes
    // and no trace: OTLP.md says aop refuses such a record, with a reason.
    assert!(ran.metric("aop_otlp_log_records_rejected_total") <= 1.0, "{}", ran.describe());
    assert_eq!(ran.metric("aop_otlp_spans_rejected_total"), 0.0, "{}", ran.describe());
    let spans = ran.metric("aop_otlp_spans_accepted_total");
    assert_eq!(spans > 0.0, traces, "spans only with traces on");
    let kept = events.iter().filter(|e| e["type"] == "otel.span").count() as f64;
    assert_eq!(kept + ran.metric("aop_otlp_spans_not_kept_total"), spans, "{}", ran.describe());
    assert_eq!(ran.json["aop"]["exit_code"], 0, "aop stops cleanly on SIGTERM\n{out}");
    thread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_over_otlp_http_json_is_one_session_of_its_thread() {
    let Some(ran) = AgentRun::codex("basic", "json").run().await else { return };
    codex_basic_ran(&ran, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_over_otlp_http_binary_keeps_its_conversation_spans_and_no_session_of_noise() {
    let Some(ran) = AgentRun::codex("basic", "binary").traces(true).run().await else { return };
    let thread = codex_basic_ran(&ran, true);
    let kept: Vec<&Value> = ran.events(&thread).iter().filter(|e| e["type"] == "otel.span").collect();
    assert!(!kept.is_empty(), "its turn's spans: {}", ran.describe());
    assert!(kept.iter().all(|s| s["payload"]["attributes"]["conversation.id"] == thread.as_str()), "{kept:?}");
    assert!(ran.metric("aop_otlp_spans_not_kept_total") > 100.0, "its internal spans: {}", ran.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_running_one_command_five_times_raises_one_loop_alert() {
    let Some(ran) = AgentRun::codex("loop", "json").run().await else { return };
    eprintln!("{}", ran.describe());
    assert_eq!(ran.exit_code(), 0, "{}", ran.output());
    let (thread, commands) = codex_thread(&ran);
    assert_eq!(commands.len(), 5, "{}", ran.output());
    assert_eq!(responses_requests(&ran).len(), 6, "five steps and the answer");
    let steps = steps(ran.events(&thread));
    let starts: Vec<&Value> = steps.iter().filter(|(k, _)| *k == "operation.tool_start").map(|(_, p)| *p).collect();
    assert_eq!(starts.len(), 5, "{}", ran.describe());
    assert!(starts.iter().all(|p| p["input"]["cmd"] == LOOP_COMMAND), "{starts:?}");
    one_loop_alert(&ran, &thread);
}
