//! The real Claude Code and Codex CLIs asking aop about runs over MCP, each configured with the
//! README's block for it ([`crate::support::agents`], `--mcp`): Claude Code over HTTP by the
//! README's `claude mcp add` line and over stdio by its `.mcp.json`, Codex over stdio by its
//! `[mcp_servers.aop]` table, both running `aop mcp` of this build.
//!
//! Before the CLI starts, the run's aop is given two runs of one agent: a good one, and one that
//! calls the same tool with the same input five times, failing, and ends failed. The scripted model
//! (`fake_models.py`, scenario `mcp`) calls aop's `list_sessions`, reads the failed run's id out of
//! the result the CLI passed back to it, calls `compare_with_similar` with that id, and answers.
//! The ids hold a random part, so the model can only have had the failed one from the result.
//! Each test checks, from what reached the model: aop's tools were offered (and not
//! `stop_session`), the `list_sessions` result held the failed run, the `compare_with_similar`
//! result named the good run and where the failed one first left its path, and no result was an
//! error. aop's own record of the CLI's session holds the two calls too.

use crate::support::agents::*;
use crate::support::{event, ndjson, EventExt};
use serde_json::{json, Value};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;

/// The agent of the posted runs (`fake_models.py`'s `MCP_AGENT`, which the model asks about).
const AGENT: &str = "research-agent";
/// aop's tools, as `tools/list` offers them without `--mcp-allow-stop`.
const TOOLS: [&str; 6] =
    ["compare_sessions", "compare_with_similar", "get_event", "get_session", "list_alerts", "list_sessions"];
/// Where the failed run first leaves the good run's path: its first search fails.
const GOOD_STEP: &str = "search → ok: 3 results";
const FAILED_STEP: &str = "search → failed: timeout";

/// The two runs posted to aop, in an NDJSON file.
struct Runs {
    good: String,
    failed: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Runs {
    fn new() -> Runs {
        let salt = format!("{:012x}", std::collections::hash_map::RandomState::new().build_hasher().finish() >> 16);
        let (good, failed) = (format!("{AGENT}-ok-{salt}"), format!("{AGENT}-failing-{salt}"));
        let goal = json!({"goal": "Find the Rust async book"});
        let search = json!({"tool": "search", "input": {"q": "rust async book"}});
        let thought = json!({"content": "I will search for the book first"});
        let mut events = Vec::new();
        let mut push = |id: &str, at: i64, steps: Vec<(&str, Value)>| {
            for (n, (kind, payload)) in steps.into_iter().enumerate() {
                let seq = n as i64 + 1;
                events.push(event(id, seq, kind, payload).agent(AGENT).at(at + seq));
            }
        };
        push(
            &good,
            0,
            vec![
                ("session.started", goal.clone()),
                ("cognition.thought", thought.clone()),
                ("operation.tool_start", search.clone()),
                ("operation.tool_end", json!({"tool": "search", "success": true, "output_summary": "3 results"})),
                ("session.ended", json!({"outcome": "completed", "outcome_summary": "found it"})),
            ],
        );
        let mut steps = vec![("session.started", goal), ("cognition.thought", thought)];
        for _ in 0..5 {
            steps.push(("operation.tool_start", search.clone()));
            steps.push(("operation.tool_end", json!({"tool": "search", "success": false, "error": "timeout"})));
        }
        steps.push(("session.ended", json!({"outcome": "failed", "error_message": "search kept timing out"})));
        push(&failed, 600, steps);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("runs.ndjson");
        std::fs::write(&file, ndjson(&events)).expect("the runs' file");
        Runs { good, failed, file, _dir: dir }
    }

    /// The model's answer once it has both results (`fake_models.py`'s `FINAL_MCP`).
    fn final_answer(&self) -> String {
        format!("Done: the failed run {} left the path of {} where aop says.", self.failed, self.good)
    }
}

/// A string or number as text.
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The first JSON object in a tool result's text: both CLIs pass aop's structured answer to the
/// model as JSON, with words of their own around it.
fn json_in(text: &str) -> Option<Value> {
    text.match_indices('{').find_map(|(at, _)| {
        serde_json::Deserializer::from_str(&text[at..]).into_iter::<Value>().next().and_then(Result::ok)
    })
}

/// The `list_sessions` result as the model got it: it lists both runs, the failed one as failed.
fn listed_both(result: &str, runs: &Runs) {
    assert!(result.contains(&runs.failed), "the failed run's id reached the model: {result}");
    let status = |id: &str| -> Option<String> {
        match json_in(result) {
            Some(doc) => doc["sessions"].as_array()?.iter().find(|s| s["id"] == id).map(|s| text(&s["status"])),
            // The text rendering: one line a run, `ID · agent AGENT · STATUS · …`.
            None => result
                .lines()
                .find(|l| l.starts_with(&format!("{id} · ")))
                .and_then(|l| l.split(" · ").nth(2).map(str::to_owned)),
        }
    };
    assert_eq!(status(&runs.failed).as_deref(), Some("failed"), "{result}");
    assert_eq!(status(&runs.good).as_deref(), Some("completed"), "{result}");
}

/// The `compare_with_similar` result as the model got it: the good run is the one compared with,
/// and the first divergence is the failed search.
fn compared_with_the_good_run(result: &str, runs: &Runs) {
    assert!(result.contains(&runs.good), "the good run's id reached the model: {result}");
    match json_in(result) {
        Some(doc) => {
            assert_eq!((text(&doc["similar_to"]), text(&doc["a"]["id"])), (runs.good.clone(), runs.good.clone()));
            assert_eq!(doc["b"]["id"], runs.failed.as_str(), "{doc}");
            let first = &doc["first_divergence"];
            assert_eq!((&first["a_summary"], &first["b_summary"]), (&json!(GOOD_STEP), &json!(FAILED_STEP)), "{doc}");
            assert_eq!(first["type"], "operation.tool_end", "{doc}");
        }
        None => {
            let at = result.find("First divergence").unwrap_or_else(|| panic!("no first divergence: {result}"));
            assert!(result[at..].contains(FAILED_STEP) && result[at..].contains(GOOD_STEP), "{result}");
        }
    }
}

/// The events of the CLI's own session in aop (the one not posted by the test).
fn cli_events<'a>(ran: &'a Ran, runs: &Runs) -> &'a [Value] {
    let own: Vec<&str> = ran
        .sessions()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .filter(|id| *id != runs.good && *id != runs.failed)
        .collect();
    assert_eq!(own.len(), 1, "the posted runs and the CLI's own session: {}", ran.describe());
    ran.events(own[0])
}

// --------------------------------------------------------------------------- Claude Code

/// The `tool_use` blocks of a Messages API request's assistant turns, and its `tool_result` blocks.
fn blocks<'a>(request: &'a Value, role: &str, kind: &str) -> Vec<&'a Value> {
    let messages = request["body"]["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    messages
        .iter()
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == kind)
        .collect()
}

/// A tool result's content as text: a string, or its blocks' texts.
fn content_text(content: &Value) -> String {
    match content {
        Value::Array(parts) => {
            parts.iter().map(|p| p["text"].as_str().map_or_else(|| p.to_string(), str::to_owned)).collect()
        }
        other => text(other),
    }
}

/// Claude Code's call of aop's `tool`: its input, and the result of the first request that holds it.
fn claude_call(ran: &Ran, tool: &str) -> (Value, String) {
    let name = format!("mcp__aop__{tool}");
    let requests = ran.model_requests();
    let (made, call) = requests
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            r["answer"]["content"].as_array()?.iter().find(|b| b["name"] == name.as_str()).map(|b| (i, b))
        })
        .unwrap_or_else(|| panic!("the model never called {name}\n{}", ran.output()));
    let result = requests[made + 1..]
        .iter()
        .find_map(|r| blocks(r, "user", "tool_result").into_iter().find(|b| b["tool_use_id"] == call["id"]))
        .unwrap_or_else(|| panic!("no later request holds the result of {name}: {}", ran.output()));
    assert!(result.get("is_error").is_none_or(|e| e == false), "{name} answered an error: {result}");
    (call["input"].clone(), content_text(&result["content"]))
}

/// The checks both Claude Code configurations pass; `scope` is where Claude Code says the server
/// was configured (its telemetry's `mcp_server_scope`: `local` for `claude mcp add`, `project` for
/// `.mcp.json`).
fn claude_asked_aop(ran: &Ran, runs: &Runs, scope: &str) {
    eprintln!("{}", ran.describe());
    let out = ran.output();
    assert_eq!(ran.exit_code(), 0, "{out}");
    let result = ran.stdout();
    assert_eq!((&result["is_error"], &result["permission_denials"]), (&json!(false), &json!([])), "{out}");
    assert_eq!(text(&result["result"]), runs.final_answer(), "{out}");
    let requests = ran.model_requests();
    assert!(requests.iter().all(|r| r["status"] == 200 && r["path"] == "/v1/messages?beta=true"), "{out}");

    // aop's tools were offered from the start: as tools, or named as deferred ones whose schema the
    // model loads with ToolSearch (Claude Code defers MCP tools by default); stop_session was not.
    let first = requests[0]["body"].to_string();
    for tool in TOOLS {
        assert!(first.contains(&format!("mcp__aop__{tool}")), "{tool} not offered: {}", requests[0]["body"]["tools"]);
    }
    assert!(requests.iter().all(|r| !r["body"].to_string().contains("stop_session")), "stop_session is off by default");

    let (input, listed) = claude_call(ran, "list_sessions");
    assert_eq!(input, json!({"agent": AGENT}));
    listed_both(&listed, runs);
    let (input, compared) = claude_call(ran, "compare_with_similar");
    assert_eq!(input, json!({"id": runs.failed}), "the id read from list_sessions' result");
    compared_with_the_good_run(&compared, runs);
    let errors: Vec<&Value> = requests
        .iter()
        .flat_map(|r| blocks(r, "user", "tool_result"))
        .filter(|b| b.get("is_error").is_some_and(|e| e != false))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    eprintln!("the model got list_sessions' answer as: {}", &listed[..listed.len().min(300)]);

    // aop's record of the CLI's own session holds both calls, made to the server configured so.
    let calls: Vec<(String, String, String)> = cli_events(ran, runs)
        .iter()
        .filter(|e| e["type"] == "operation.tool_end" && text(&e["payload"]["tool"]).starts_with("mcp__"))
        .map(|e| {
            let a = &e["payload"]["otel"]["attributes"];
            let params: Value = serde_json::from_str(&text(&a["tool_parameters"])).unwrap_or_default();
            (text(&e["payload"]["tool"]), text(&params["mcp_server_name"]), text(&a["mcp_server_scope"]))
        })
        .collect();
    // Named as the model and the hooks name it, not `mcp_tool` as the telemetry does.
    let want = |tool: &str| (format!("mcp__aop__{tool}"), "aop".to_owned(), scope.to_owned());
    assert_eq!(calls, [want("list_sessions"), want("compare_with_similar")], "{}", ran.describe());
    assert_eq!(ran.json["aop"]["exit_code"], 0, "aop stops cleanly on SIGTERM\n{out}");
}

/// `claude mcp add --transport http aop http://127.0.0.1:4317/mcp`, as the README has it, run for
/// real in the run's home: Claude Code then reaches aop's `/mcp` on the collector itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_asks_aop_over_http_as_claude_mcp_add_configures_it() {
    let runs = Runs::new();
    let Some(ran) = AgentRun::claude("mcp", "http/json").seed(&runs.file).mcp(Mcp::Http).run().await else {
        return;
    };
    let added = &ran.json["mcp"];
    assert_eq!(added["exit_code"], 0, "{added}");
    assert!(
        text(&added["stdout"]).contains("Added HTTP MCP server aop with URL: http://127.0.0.1:4317/mcp"),
        "{added}"
    );
    assert!(text(&added["get"]).contains("Connected"), "claude mcp get aop: {added}");
    claude_asked_aop(&ran, &runs, "local");
}

/// The README's `.mcp.json` in the project folder: Claude Code starts `aop mcp` (this build, first
/// on its PATH) itself, without asking under `-p`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_asks_aop_over_stdio_from_the_projects_mcp_json() {
    let runs = Runs::new();
    let Some(ran) = AgentRun::claude("mcp", "http/json").seed(&runs.file).mcp(Mcp::Stdio).run().await else {
        return;
    };
    assert!(text(&ran.json["mcp"]["text"]).contains(r#""command": "aop""#), "{}", ran.json["mcp"]);
    claude_asked_aop(&ran, &runs, "project");
}

// --------------------------------------------------------------------------- Codex

/// Codex's call of aop's `tool` (a `function_call` in the `mcp__aop` namespace): its arguments and
/// its output as the model got it in the next request.
fn codex_call(ran: &Ran, tool: &str) -> (Value, String) {
    let requests: Vec<&Value> = ran.model_requests().iter().filter(|r| r["path"] == "/v1/responses").collect();
    let (made, call) = requests
        .iter()
        .enumerate()
        .find_map(|(i, r)| r["answer"]["output"].as_array()?.iter().find(|o| o["name"] == tool).map(|o| (i, o)))
        .unwrap_or_else(|| panic!("the model never called {tool}\n{}", ran.output()));
    assert_eq!(call["namespace"], "mcp__aop", "{call}");
    let output = requests[made + 1..]
        .iter()
        .filter_map(|r| r["body"]["input"].as_array())
        .flatten()
        .find(|i| i["type"] == "function_call_output" && i["call_id"] == call["call_id"])
        .unwrap_or_else(|| panic!("no later request holds the output of {tool}: {}", ran.output()));
    let arguments = serde_json::from_str(&text(&call["arguments"])).expect("JSON arguments");
    let output = match &output["output"] {
        Value::String(s) => s.clone(),
        other => content_text(other),
    };
    (arguments, output)
}

/// The README's `[mcp_servers.aop]` table in Codex's config.toml: Codex starts `aop mcp` (this
/// build, on its PATH) and offers its tools in one `mcp__aop` namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_asks_aop_over_stdio_from_its_mcp_servers_table() {
    let runs = Runs::new();
    let Some(ran) = AgentRun::codex("mcp", "json").seed(&runs.file).mcp(Mcp::Stdio).run().await else { return };
    eprintln!("{}", ran.describe());
    let out = ran.output();
    assert_eq!(ran.exit_code(), 0, "{out}");
    let lines = ran.stdout().as_array().map(Vec::as_slice).unwrap_or_default();
    let said: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "item.completed" && l["item"]["type"] == "agent_message")
        .map(|l| text(&l["item"]["text"]))
        .collect();
    assert_eq!(said, [runs.final_answer()], "{out}");

    let requests: Vec<&Value> = ran.model_requests().iter().filter(|r| r["path"] == "/v1/responses").collect();
    assert!(requests.iter().all(|r| r["status"] == 200), "{out}");
    for r in ran.model_requests().iter().filter(|r| r["path"] != "/v1/responses") {
        assert!(text(&r["path"]).starts_with("/v1/analytics/"), "an unexpected request to the model server: {r}");
    }
    // aop's tools offered as one namespace, without stop_session.
    let tools = requests[0]["body"]["tools"].as_array().map(Vec::as_slice).unwrap_or_default();
    let space = tools.iter().find(|t| t["type"] == "namespace" && t["name"] == "mcp__aop").unwrap_or_else(|| {
        panic!("no mcp__aop namespace among the tools: {}", requests[0]["body"]["tools"]);
    });
    let mut offered: Vec<String> =
        space["tools"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(|t| text(&t["name"])).collect();
    offered.sort();
    assert_eq!(offered, TOOLS, "{space}");

    let (arguments, listed) = codex_call(&ran, "list_sessions");
    assert_eq!(arguments, json!({"agent": AGENT}));
    listed_both(&listed, &runs);
    let (arguments, compared) = codex_call(&ran, "compare_with_similar");
    assert_eq!(arguments, json!({"id": runs.failed}), "the id read from list_sessions' result");
    compared_with_the_good_run(&compared, &runs);
    eprintln!("the model got list_sessions' answer as: {}", &listed[..listed.len().min(300)]);

    // Codex's own account: two MCP calls to aop, both completed without an error.
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "item.completed" && l["item"]["type"] == "mcp_tool_call")
        .map(|l| &l["item"])
        .collect();
    let names: Vec<(String, String)> = calls.iter().map(|c| (text(&c["server"]), text(&c["tool"]))).collect();
    assert_eq!(
        names,
        [("aop".to_owned(), "list_sessions".to_owned()), ("aop".to_owned(), "compare_with_similar".to_owned())],
        "{out}"
    );
    for c in &calls {
        assert_eq!((&c["status"], &c["error"]), (&json!("completed"), &Value::Null), "{c}");
        let is_error = c["result"].get("is_error").or_else(|| c["result"].get("isError"));
        assert!(is_error.is_none_or(|e| e == false), "{c}");
    }

    // aop's record of the CLI's own session holds both calls, to the server named aop.
    let ended: Vec<(String, String)> = cli_events(&ran, &runs)
        .iter()
        .filter(|e| e["type"] == "operation.tool_end")
        .map(|e| (text(&e["payload"]["tool"]), text(&e["payload"]["otel"]["attributes"]["mcp_server"])))
        .collect();
    assert_eq!(
        ended,
        [("list_sessions".to_owned(), "aop".to_owned()), ("compare_with_similar".to_owned(), "aop".to_owned())],
        "{}",
        ran.describe()
    );
    assert_eq!(ran.json["aop"]["exit_code"], 0, "aop stops cleanly on SIGTERM\n{out}");
}
