//! The MCP server (`MCP.md`) through real MCP clients: the official Python SDK over stdio
//! (`aop mcp`) and over Streamable HTTP (`/mcp`), each with every tool against a store holding a
//! good run and a failing, looping run of one agent; the configuration blocks of the README as
//! clients read them; the transport's refusals (token, Origin, size); bad arguments; and answers
//! about a 100 000-event session within the bound.

use crate::support::pyenv::run_python;
use crate::support::{at, event, ndjson, EventExt, Launch, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const TOKEN: &str = "mcp-t0ken";
const AGENT: &str = "research-agent";
const GOOD: &str = "good-run";
const BAD: &str = "looping-run";
/// Sessions of other agents, so lists page.
const FILLERS: usize = 25;
/// The bound of every answer, text and structured (`MCP.md`).
const BOUND: usize = 25_000;
const BIN: &str = env!("CARGO_BIN_EXE_aop");

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("mcp").join("client.py")
}

/// A run that works: search, fetch, answer; at(0) to at(8).
fn good_run() -> Vec<Value> {
    let steps = [
        ("session.started", json!({"goal": "Find the Rust async book"})),
        ("cognition.thought", json!({"content": "I will search for the book first"})),
        ("operation.tool_start", json!({"tool": "search", "input": {"q": "rust async book"}})),
        ("operation.tool_end", json!({"tool": "search", "success": true, "output_summary": "3 results"})),
        ("operation.tool_start", json!({"tool": "fetch", "input": {"url": "https://rust-lang.github.io/async-book/"}})),
        ("operation.tool_end", json!({"tool": "fetch", "success": true, "output_summary": "the book"})),
        ("session.heartbeat", json!({"status": "running"})),
        ("cognition.decision", json!({"decision": "answer with the book's URL"})),
        ("session.ended", json!({"outcome": "completed", "outcome_summary": "found it"})),
    ];
    steps.into_iter().enumerate().map(|(k, (kind, p))| event(GOOD, k as i64 + 1, kind, p).agent(AGENT)).collect()
}

/// The same start, then the search fails and is retried, identically, until the agent gives up:
/// a loop and an error cascade; at(100) on.
fn looping_run() -> Vec<Value> {
    let mut steps = vec![
        ("session.started", json!({"goal": "Find the Rust async book"})),
        ("cognition.thought", json!({"content": "I will search for the book first"})),
    ];
    for _ in 0..5 {
        steps.push(("operation.tool_start", json!({"tool": "search", "input": {"q": "rust async book"}})));
        steps.push(("operation.tool_end", json!({"tool": "search", "success": false, "error": "timeout"})));
    }
    steps.push(("session.ended", json!({"outcome": "failed", "error_message": "search kept timing out"})));
    steps
        .into_iter()
        .enumerate()
        .map(|(k, (kind, p))| event(BAD, k as i64 + 1, kind, p).agent(AGENT).at(100 + k as i64))
        .collect()
}

/// A collector (`extra` flags) holding the two runs and the fillers (older than both).
async fn filled(extra: &[&str]) -> TestServer {
    fill(Launch::new().token(TOKEN).args(extra.iter().copied()).start().await).await
}

/// `server` (whose token is [`TOKEN`]) with the two runs and the fillers.
async fn fill(server: TestServer) -> TestServer {
    let mut events = good_run();
    events.extend(looping_run());
    for f in 0..FILLERS {
        let id = format!("filler-{f:02}");
        events.push(
            event(&id, 1, "session.started", json!({"goal": "fill"})).agent(&format!("filler-{f}")).at(-500 + f as i64),
        );
    }
    let (status, body) = server.post_ndjson(ndjson(&events)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], events.len(), "{body}");
    server
}

/// What a client saw: `tools`, `calls` (one per call asked), or `refused`.
struct Seen(Value);

impl Seen {
    fn call(&self, k: usize) -> &Value {
        &self.0["calls"][k]
    }

    /// Call `k`'s structured answer, which must be a success.
    fn ok(&self, k: usize) -> &Value {
        let c = self.call(k);
        assert_eq!(c["is_error"], false, "call {k} failed: {c}");
        &c["structured"]
    }

    /// Call `k`'s error text, which must be an error result (not a protocol error).
    fn error(&self, k: usize) -> String {
        let c = self.call(k);
        assert_eq!(c["is_error"], true, "call {k} was not an error result: {c}");
        c["text"].as_str().expect("a text").to_owned()
    }

    fn text(&self, k: usize) -> &str {
        self.call(k)["text"].as_str().unwrap_or_default()
    }

    fn tools(&self) -> Vec<&str> {
        let tools = self.0["tools"].as_array().unwrap_or_else(|| panic!("no tools listed: {}", self.0));
        tools.iter().map(|t| t["name"].as_str().expect("a name")).collect()
    }
}

/// Runs the Python SDK's client with `args`, asking `calls` (`[tool, arguments]` each).
async fn python(server: &TestServer, args: &[&str], calls: &Value) -> Seen {
    let file = server.sandbox().path().join(format!("calls-{}.json", rand_suffix()));
    std::fs::write(&file, calls.to_string()).expect("the calls file");
    let mut argv: Vec<&str> = args.to_vec();
    let file = file.to_string_lossy().into_owned();
    argv.extend(["--calls", &file]);
    let ran = run_python(&client_script(), &argv, &[]).await;
    Seen(ran.summary)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn over_http(server: &TestServer, calls: &Value) -> Seen {
    let url = server.url("/mcp");
    python(server, &["--http", &url, "--token", TOKEN], calls).await
}

async fn over_stdio(server: &TestServer, calls: &Value, extra: &[&str]) -> Seen {
    let base = server.base();
    let mut args = vec!["--stdio", BIN, "--url", &base, "--token", TOKEN];
    args.extend_from_slice(extra);
    python(server, &args, calls).await
}

fn chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        other => other.to_string().chars().count(),
    }
}

/// The calls both transports make, in order; the assertions below index them.
fn the_calls(bad_alert: &Value) -> Value {
    json!([
        ["list_sessions", {"agent": AGENT}],                                  // 0
        ["list_sessions", {"limit": 10}],                                     // 1
        ["list_sessions", {"has_alerts": true}],                              // 2
        ["list_sessions", {"since": at(50)}],                                 // 3
        ["get_session", {"id": BAD}],                                         // 4
        ["get_session", {"id": BAD, "limit": 3}],                             // 5
        ["get_session", {"id": BAD, "from_sequence": 4, "limit": 100}],       // 6
        ["get_event", {"session_id": BAD, "sequence": 3}],                    // 7
        ["list_alerts", {"session_id": BAD}],                                 // 8
        ["list_alerts", {"type": bad_alert}],                                 // 9
        ["compare_sessions", {"a": GOOD, "b": BAD}],                          // 10
        ["compare_with_similar", {"id": BAD}],                                // 11
        ["get_session", {"id": "nope"}],                                      // 12
        ["get_session", {"id": 5}],                                           // 13
        ["list_sessions", {"limit": "ten"}],                                  // 14
        ["get_session", {"id": "../../etc/passwd"}],                          // 15
        ["get_event", {"session_id": BAD, "sequence": 999}],                  // 16
        ["compare_with_similar", {"id": "filler-03"}],                        // 17
        ["get_session", {"id": "x".repeat(200_000)}],                         // 18
        ["get_session", {"session": BAD}],                                    // 19
        ["stop_session", {"id": BAD}],                                        // 20
        ["list_sessions", {"since": "last tuesday"}],                         // 21
        ["get_event", {"session_id": BAD, "sequence": -1}],                   // 22
    ])
}

/// Every tool through the Python SDK, over HTTP and over stdio: the same answers both ways,
/// each one right, bad arguments answered as error results naming them, and nothing harmed.
#[tokio::test]
async fn every_tool_answers_alike_over_http_and_stdio() {
    let server = filled(&[]).await;
    let sessions_before = server.get_ok("/sessions?limit=1000").await;
    let calls = the_calls(&json!("error_cascade"));
    let http = over_http(&server, &calls).await;
    let stdio = over_stdio(&server, &calls, &[]).await;

    let want = ["list_sessions", "get_session", "get_event", "list_alerts", "compare_sessions", "compare_with_similar"];
    for seen in [&http, &stdio] {
        assert_eq!(seen.tools(), want, "{}", seen.0);
        for t in seen.0["tools"].as_array().unwrap() {
            assert_eq!(t["input_schema"]["type"], "object", "{t}");
            assert_eq!(t["output_schema"]["type"], "object", "{t}");
            assert!(t["description"].as_str().is_some_and(|d| d.len() > 20), "{t}");
        }
        assert!(seen.0["tools"][1]["input_schema"]["required"] == json!(["id"]), "{}", seen.0["tools"][1]);
    }
    let n = calls.as_array().unwrap().len();
    for k in 0..n {
        let (h, s) = (http.call(k), stdio.call(k));
        assert!(h.get("protocol_error").is_none(), "call {k} over HTTP: {h}");
        assert_eq!(h, s, "call {k} differs between HTTP and stdio");
        assert!(chars(&h["text"]) <= BOUND && chars(&h["structured"]) <= BOUND, "call {k} is too long");
        if h["is_error"] == false {
            let note = h["structured"]["agent_data"].as_str().unwrap_or_default();
            assert!(note.contains("not instructions"), "call {k}'s document does not say what its strings are");
        }
    }
    let seen = http;

    // list_sessions: most recent activity first, filters, pages.
    let ids = |v: &Value| -> Vec<String> {
        v["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(seen.ok(0)), [BAD, GOOD]);
    let bad_row = &seen.ok(0)["sessions"][0];
    assert_eq!(bad_row["status"], "failed");
    assert_eq!(bad_row["agent_id"], AGENT);
    assert!(bad_row["alerts"].as_i64().unwrap() >= 2, "{bad_row}");
    for key in ["started_at", "ended_at", "total_steps", "total_tokens", "cost_usd"] {
        assert!(bad_row.get(key).is_some(), "{key} missing: {bad_row}");
    }
    let page1 = seen.ok(1);
    assert_eq!(ids(page1).len(), 10);
    let cursor = page1["next_cursor"].as_str().expect("a next cursor").to_owned();
    assert!(seen.text(1).contains(&cursor), "the text says how to go on: {}", seen.text(1));
    assert_eq!(ids(seen.ok(2)), [BAD]);
    assert_eq!(ids(seen.ok(3)), [BAD], "only the looping run was active since at(50)");

    // get_session: one line per step, failures marked, alerts, pages.
    let detail = seen.ok(4);
    assert_eq!(detail["session"]["id"], BAD);
    let steps = detail["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 13);
    assert_eq!(steps.iter().filter(|s| s["failed"] == true).count(), 6, "5 failed calls and the failed end");
    assert_eq!(steps[3]["summary"], "search → failed: timeout");
    assert_eq!(detail["next_sequence"], Value::Null);
    let types: Vec<&str> = detail["alerts"].as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"loop") && types.contains(&"error_cascade"), "{types:?}");
    assert!(seen.text(4).contains("#4 operation.tool_end FAILED: search → failed: timeout"), "{}", seen.text(4));
    let first = seen.ok(5);
    assert_eq!(first["steps"].as_array().unwrap().len(), 3);
    assert_eq!(first["next_sequence"], 4);
    let rest = seen.ok(6)["steps"].as_array().unwrap();
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[0]["sequence"], 4);

    // get_event, list_alerts.
    let ev = &seen.ok(7)["event"];
    assert_eq!((ev["type"].as_str(), ev["payload"]["tool"].as_str()), (Some("operation.tool_start"), Some("search")));
    let alerts = seen.ok(8)["alerts"].as_array().unwrap();
    assert!(alerts.iter().all(|a| a["session_id"] == BAD) && alerts.len() >= 2, "{alerts:?}");
    assert!(seen.ok(9)["alerts"].as_array().unwrap().iter().all(|a| a["type"] == "error_cascade"));

    // The comparisons: the failing run against the good one.
    let c = seen.ok(10);
    assert_eq!((c["a"]["id"].as_str(), c["b"]["id"].as_str()), (Some(GOOD), Some(BAD)));
    let similar = seen.ok(11);
    assert_eq!(similar["similar_to"], GOOD, "the good run is the failing run's most similar");
    assert_eq!(similar["first_divergence"], c["first_divergence"]);
    let first = &similar["first_divergence"];
    assert_eq!((first["a_sequence"].as_i64(), first["b_sequence"].as_i64()), (Some(4), Some(4)), "{first}");
    assert_eq!(first["b_summary"], "search → failed: timeout");
    assert_eq!(similar["counts"]["same"], 3, "{similar}");
    assert!(similar["deltas"]["failed_tool_calls"]["delta"] == 5, "{}", similar["deltas"]);
    let text = seen.text(11);
    assert!(text.contains(GOOD) && text.contains("First divergence"), "{text}");
    assert!(text.contains("failed tool calls +5"), "{text}");
    assert!(text.contains("<<< agent data") && text.contains(">>> end of agent data"), "{text}");

    // Errors are results that name what is wrong.
    assert!(seen.error(12).contains("no session \"nope\""), "{}", seen.error(12));
    assert_eq!(seen.error(13), "argument `id` must be a session id (a string), got an integer");
    assert_eq!(seen.error(14), "argument `limit` must be an integer from 1 to 100, got a string");
    assert!(seen.error(15).starts_with("no session \"../../etc/passwd\": not a session id"), "{}", seen.error(15));
    assert!(seen.error(16).contains("has no event #999"), "{}", seen.error(16));
    assert!(seen.error(17).contains("no similar run"), "{}", seen.error(17));
    let huge = seen.error(18);
    assert!(huge.contains("not a session id") && huge.len() < 500, "{huge}");
    assert!(seen.error(19).contains("unknown argument `session`"), "{}", seen.error(19));
    assert!(seen.error(20).contains("--mcp-allow-stop"), "{}", seen.error(20));
    assert!(seen.error(21).contains("\"last tuesday\""), "{}", seen.error(21));
    assert!(seen.error(22).contains("`sequence`"), "{}", seen.error(22));

    // Nothing harmed: the same sessions, no stop, the collector serving.
    assert_eq!(server.get_ok("/sessions?limit=1000").await, sessions_before);
    server.get_ok("/health").await;
}

/// Lists page to the end with their cursors, each session once.
#[tokio::test]
async fn lists_page_to_the_end() {
    let server = filled(&[]).await;
    let mut cursor: Option<String> = None;
    let mut seen_ids = Vec::new();
    for _ in 0..5 {
        let mut args = json!({"limit": 10});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let seen = over_http(&server, &json!([["list_sessions", args]])).await;
        let page = seen.ok(0);
        seen_ids.extend(page["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut unique = seen_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen_ids.len(), unique.len()), (FILLERS + 2, FILLERS + 2), "{seen_ids:?}");
}

/// `stop_session` exists only with `--mcp-allow-stop` (on the collector for `/mcp`, on `aop mcp`
/// for stdio), and stops the run as the operator's stop does: the guard then denies its calls.
#[tokio::test]
async fn stop_session_is_offered_only_when_allowed_and_stops_the_run() {
    let server = filled(&["--mcp-allow-stop"]).await;
    server.ingest_one(&event("live-run", 1, "session.started", json!({"goal": "go on"})).agent(AGENT)).await;
    let stop =
        json!([["stop_session", {"id": "live-run", "reason": "spending too much"}], ["stop_session", {"id": "nope"}]]);
    let http = over_http(&server, &stop).await;
    assert!(http.tools().contains(&"stop_session"), "{:?}", http.tools());
    assert_eq!(http.ok(0)["ok"], true);
    assert!(http.error(1).contains("no session \"nope\""), "{}", http.error(1));
    let row = server.get_ok("/sessions/live-run?limit=1").await;
    assert_eq!(row["session"]["stopped"]["reason"], "spending too much", "{row}");
    let req = server
        .authed(Method::POST, "/guard")
        .header("content-type", "application/json")
        .body(json!({"session_id": "live-run", "agent_id": AGENT, "tool": "search", "input": {}}).to_string());
    let (status, _, answer) = TestServer::send_json(req).await;
    assert_eq!((status, answer["decision"].as_str()), (StatusCode::OK, Some("deny")), "{answer}");

    // Over stdio the flag is aop mcp's own.
    let listed = over_stdio(&server, &json!([]), &[]).await;
    assert!(!listed.tools().contains(&"stop_session"), "{:?}", listed.tools());
    let allowed = over_stdio(&server, &json!([["stop_session", {"id": GOOD}]]), &["--allow-stop"]).await;
    assert!(allowed.tools().contains(&"stop_session"));
    assert_eq!(allowed.ok(0)["ok"], true);

    // And a collector without the flag offers no stop on /mcp.
    let plain = filled(&[]).await;
    let seen = over_http(&plain, &json!([])).await;
    assert!(!seen.tools().contains(&"stop_session"), "{:?}", seen.tools());
}

/// The transport's rules: the collector's token, its Origin rule (every method, reads too), and
/// a bound on the request's size; an SDK client is refused as a raw request is.
#[tokio::test]
async fn the_token_and_the_origin_rule_guard_the_endpoint() {
    let server = filled(&[]).await;
    let url = server.url("/mcp");
    // The SDK reports only that the server refused; the raw requests below check the statuses.
    for (what, args) in [
        ("without the token", vec!["--http", url.as_str()]),
        ("from a foreign origin", vec!["--http", url.as_str(), "--token", TOKEN, "--origin", "https://evil.example"]),
    ] {
        let seen = python(&server, &args, &json!([])).await;
        assert!(seen.0["refused"].is_string() && seen.0.get("tools").is_none(), "connected {what}: {}", seen.0);
    }
    let local =
        python(&server, &["--http", &url, "--token", TOKEN, "--origin", "http://localhost:6274"], &json!([])).await;
    assert!(local.0.get("refused").is_none(), "a page on localhost (an inspector) is allowed: {}", local.0);

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let post = |origin: Option<&str>, token: bool, body: String| {
        let mut req = if token { server.authed(Method::POST, "/mcp") } else { server.request(Method::POST, "/mcp") };
        req = req.header("content-type", "application/json").header("accept", "application/json, text/event-stream");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.body(body)
    };
    let status = |req: reqwest::RequestBuilder| async move { req.send().await.expect("sent").status() };
    assert_eq!(status(post(None, false, init.to_string())).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(post(Some("https://evil.example"), true, init.to_string())).await, StatusCode::FORBIDDEN);
    let get = server.authed(Method::GET, "/mcp").header("origin", "https://evil.example");
    assert_eq!(status(get).await, StatusCode::FORBIDDEN, "reads from a foreign page are refused too");
    assert_eq!(status(post(None, true, init.to_string())).await, StatusCode::OK);
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"get_session","arguments":{{"id":"{}"}}}}}}"#,
        "x".repeat(3 << 20)
    );
    assert_eq!(status(post(None, true, huge)).await, StatusCode::PAYLOAD_TOO_LARGE);
    server.get_ok("/health").await;
}

/// The README's blocks for clients that run a command or take a URL (Claude Desktop, Cursor) are
/// what a client of that kind reads: the Python SDK connects as each one says, with `aop` and the
/// address replaced by the binary and the collector under test.
#[tokio::test]
async fn the_readmes_client_configurations_connect() {
    let server = filled(&[]).await;
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    for name in ["claude-desktop", "cursor", "claude-code-json"] {
        let marker = format!("<!-- mcp: {name} -->\n```json\n");
        let start = readme.find(&marker).unwrap_or_else(|| panic!("README has no block {name}")) + marker.len();
        let block = &readme[start..start + readme[start..].find("```").expect("the block's end")];
        let mut config: Value = serde_json::from_str(block).unwrap_or_else(|e| panic!("block {name}: {e}\n{block}"));
        let entry = &mut config["mcpServers"]["aop"];
        if entry.get("command").is_some() {
            assert_eq!(entry["command"], "aop", "{name}");
            entry["command"] = json!(BIN);
            entry["env"] = json!({"AOP_URL": server.base(), "AOP_TOKEN": TOKEN});
        } else {
            assert_eq!(entry["url"], "http://127.0.0.1:4317/mcp", "{name}");
            entry["url"] = json!(server.url("/mcp"));
            entry["headers"] = json!({"Authorization": format!("Bearer {TOKEN}")});
        }
        let file = server.sandbox().path().join(format!("{name}.json"));
        std::fs::write(&file, config.to_string()).expect("the config file");
        let file = file.to_string_lossy().into_owned();
        let seen = python(&server, &["--config", &file], &json!([["compare_with_similar", {"id": BAD}]])).await;
        assert_eq!(seen.ok(0)["similar_to"], GOOD, "{name}: {}", seen.0);
    }
}

/// Answers about a 100 000-event session, and an event far larger than the bound, stay within
/// it: steps page, long values are cut with a note, comparisons list at most 100 steps.
#[tokio::test]
async fn answers_about_a_100_000_event_session_stay_within_the_bound() {
    let server = Launch::new().token(TOKEN).start().await;
    let run = |id: &str, odd: bool| -> Vec<Value> {
        let mut events = vec![event(id, 1, "session.started", json!({"goal": "index the corpus"})).agent(AGENT)];
        for k in 0..49_999i64 {
            let failed = odd && k % 97 == 0;
            let out = if failed { "read error".to_owned() } else { format!("{} words {}", k % 500, "w".repeat(40)) };
            let input = json!({"doc": k, "note": "n".repeat(60)});
            events.push(
                event(id, 2 + 2 * k, "operation.tool_start", json!({"tool": "read", "input": input}))
                    .agent(AGENT)
                    .at(2),
            );
            events.push(
                event(
                    id,
                    3 + 2 * k,
                    "operation.tool_end",
                    json!({"tool": "read", "success": !failed, "output_summary": out}),
                )
                .agent(AGENT)
                .at(3),
            );
        }
        events.push(event(id, 100_000, "session.ended", json!({"outcome": "completed"})).agent(AGENT).at(4));
        events
    };
    for (id, odd) in [("long-a", false), ("long-b", true)] {
        for chunk in run(id, odd).chunks(10_000) {
            let (status, body) = server.post_ndjson(ndjson(chunk)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let wide: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("field{i}"), json!("z".repeat(1_500)))).collect();
    server.ingest_one(&event("wide", 1, "custom.blob", Value::Object(wide)).agent("other")).await;

    let calls = json!([
        ["get_session", {"id": "long-b"}],
        ["get_session", {"id": "long-b", "limit": 500}],
        ["get_event", {"session_id": "wide", "sequence": 1}],
        ["compare_with_similar", {"id": "long-b"}],
        ["list_alerts", {"limit": 100}],
        ["get_session", {"id": "long-b", "from_sequence": 99_990}],
    ]);
    let seen = over_http(&server, &calls).await;
    for k in 0..calls.as_array().unwrap().len() {
        let c = seen.call(k);
        assert!(c.get("protocol_error").is_none(), "call {k}: {c}");
        let (text, structured) = (chars(&c["text"]), chars(&c["structured"]));
        println!("call {k}: {text} characters of text, {structured} of structured content");
        assert!(text <= BOUND && structured <= BOUND, "call {k}: {text} / {structured} characters");
    }
    let page = seen.ok(0);
    assert!(page["next_sequence"].as_i64().is_some_and(|n| n > 100), "{}", page["next_sequence"]);
    let big = seen.ok(1);
    let shown = big["steps"].as_array().unwrap().len();
    assert!((10..500).contains(&shown), "{shown} steps: fewer than asked, to fit");
    assert_eq!(big["next_sequence"], big["steps"][shown - 1]["sequence"].as_i64().unwrap() + 1);
    assert!(seen.text(2).contains("more characters cut"), "{}", &seen.text(2)[..500]);
    let c = seen.ok(3);
    assert_eq!(c["similar_to"], "long-a");
    let listed = c["steps"].as_array().unwrap().len();
    assert!(listed <= 100 && c["steps_not_shown"].as_i64().unwrap() > 0, "{listed} listed");
    assert_eq!(
        c["counts"]["changed"].as_i64().unwrap()
            + c["counts"]["only_a"].as_i64().unwrap()
            + c["counts"]["only_b"].as_i64().unwrap(),
        listed as i64 + c["steps_not_shown"].as_i64().unwrap()
    );
    let tail = seen.ok(5);
    assert_eq!(tail["steps"].as_array().unwrap().len(), 11);
    assert_eq!(tail["next_sequence"], Value::Null);
    server.get_ok("/health").await;
}

fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect()),
        other => other.clone(),
    }
}

/// `@modelcontextprotocol/sdk` on npm: the official TypeScript SDK.
const TS_SDK_VERSION: &str = "1.32.2";

/// The TypeScript SDK installed once into `target/` (as the coding agents are), its prefix.
fn typescript_sdk() -> PathBuf {
    crate::support::agents::npm_install("@modelcontextprotocol/sdk", TS_SDK_VERSION, |prefix| {
        let manifest = prefix.join("node_modules/@modelcontextprotocol/sdk/package.json");
        let text = std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v["version"] == TS_SDK_VERSION {
            Ok(prefix.to_owned())
        } else {
            Err(format!("{} holds version {}", manifest.display(), v["version"]))
        }
    })
}

/// The official TypeScript SDK over HTTP (its client checks each structured answer against the
/// tool's output schema): every call answered as the Python SDK's is.
#[tokio::test]
async fn the_typescript_sdk_gets_the_same_answers() {
    let server = filled(&[]).await;
    let calls = the_calls(&json!("loop"));
    let prefix = tokio::task::spawn_blocking(typescript_sdk).await.expect("the install");
    let file = server.sandbox().path().join("ts-calls.json");
    std::fs::write(&file, calls.to_string()).expect("the calls file");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.mjs");
    let mut node = std::process::Command::new("node");
    node.arg(&script).arg(server.url("/mcp")).arg(TOKEN).arg(&file).env("MCP_SDK", &prefix);
    let out = tokio::task::spawn_blocking(move || node.output()).await.expect("joined").expect("node runs");
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "client.mjs failed: {}\n{said}", out.status);
    let ts: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{said}"));
    assert_eq!(ts["server"]["name"], "aop", "{ts}");
    let ts = Seen(ts);
    let py = over_http(&server, &calls).await;
    assert_eq!(ts.tools(), py.tools());
    for k in 0..calls.as_array().unwrap().len() {
        let (t, p) = (ts.call(k), py.call(k));
        assert!(t.get("protocol_error").is_none(), "call {k}: {t}");
        // JavaScript has one number type: 4.0 comes back as 4.
        let (ts_doc, py_doc) = (numbers_as_floats(&t["structured"]), numbers_as_floats(&p["structured"]));
        assert_eq!((&t["is_error"], &ts_doc, &t["text"]), (&p["is_error"], &py_doc, &p["text"]), "call {k}");
    }
    assert_eq!(ts.ok(11)["similar_to"], GOOD);
}

/// The tools on a fleet's store: two instances on one PostgreSQL answer alike, whichever one
/// stored the runs, over HTTP (stateless: no MCP session ties a client to an instance).
#[tokio::test]
async fn two_instances_on_postgres_answer_alike() {
    let pg = crate::support::pg::Pg::shared();
    let url = pg.create_db();
    let a = fill(Launch::new().db(&url).token(TOKEN).start().await).await;
    let b = Launch::new().db(&url).token(TOKEN).start().await;
    let calls = json!([["compare_with_similar", {"id": BAD}], ["get_session", {"id": BAD}], ["list_sessions", {"agent": AGENT}]]);
    let (from_a, from_b) = (over_http(&a, &calls).await, over_http(&b, &calls).await);
    assert_eq!(from_a.ok(0)["similar_to"], GOOD);
    assert_eq!(from_b.ok(0)["first_divergence"]["b_summary"], "search → failed: timeout");
    for k in 0..3 {
        assert_eq!(from_a.call(k), from_b.call(k), "call {k} differs between the instances");
    }
}
