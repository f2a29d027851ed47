//! `aop diff A B`, the real binary: two runs of one agent posted to a collector and downloaded as
//! exports, compared offline (files), through the collector (ids) and mixed, as JSON and as text,
//! with its exit codes.

use crate::support::{control_characters, event, Launch, Sandbox, TestServer, HOSTILE_TEXT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;

const AGENT: &str = "research-agent";
const GOAL: &str = "Summarise the Rust async book";
const URL: &str = "https://rust-lang.github.io/async-book/";

/// The steps both runs share: start, plan, search, fetch the book.
fn opening(id: &str) -> Vec<Value> {
    vec![
        run_event(id, 1, "session.started", json!({"goal": GOAL})),
        run_event(id, 2, "cognition.thought", json!({"content": "Search for the book, then read its first chapter"})),
        run_event(id, 3, "operation.tool_start", json!({"tool": "search", "input": {"q": "rust async book"}})),
        run_event(
            id,
            4,
            "operation.tool_end",
            json!({"tool": "search", "success": true, "output_summary": "3 results", "cost_usd": 0.01}),
        ),
        run_event(id, 5, "operation.tool_start", json!({"tool": "fetch", "input": {"url": URL}})),
    ]
}

fn run_event(id: &str, seq: i64, kind: &str, payload: Value) -> Value {
    let mut ev = event(id, seq, kind, payload);
    ev["agent_id"] = json!(AGENT);
    ev
}

/// The run that works: the fetch succeeds, the agent decides and ends `completed`.
fn good_run(id: &str) -> Vec<Value> {
    let mut events = opening(id);
    events.extend([
        run_event(
            id,
            6,
            "operation.tool_end",
            json!({"tool": "fetch", "success": true, "output_summary": "chapter 1, 12 kB", "cost_usd": 0.01}),
        ),
        run_event(id, 7, "cognition.decision", json!({"decision": "summarise chapter 1 in five points"})),
        run_event(id, 8, "session.ended", json!({"outcome": "completed", "outcome_summary": "five points"})),
    ]);
    events
}

/// The run that fails: the fetch (step 6) fails, and the agent retries it, identically, three
/// more times (a loop, and an error cascade) before it ends `failed`.
fn failed_run(id: &str) -> Vec<Value> {
    let failed = json!({"tool": "fetch", "success": false, "error": "HTTP 503", "cost_usd": 0.01});
    let mut events = opening(id);
    events.push(run_event(id, 6, "operation.tool_end", failed.clone()));
    for k in 0..3 {
        events.push(run_event(id, 7 + 2 * k, "operation.tool_start", json!({"tool": "fetch", "input": {"url": URL}})));
        events.push(run_event(id, 8 + 2 * k, "operation.tool_end", failed.clone()));
    }
    events.push(run_event(
        id,
        13,
        "session.ended",
        json!({"outcome": "failed", "error_message": "the book is unreachable"}),
    ));
    events
}

/// What a run of `aop diff` left.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.said()))
    }

    fn said(&self) -> String {
        format!("exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }

    fn assert_code(&self, want: i32) -> &Ran {
        assert_eq!(self.code, want, "{}", self.said());
        self
    }
}

/// `aop diff <args>` in the sandbox, with extra environment and, optionally, a file on stdin.
async fn diff(sandbox: &Sandbox, args: &[&str], envs: &[(&str, &str)], stdin: Option<&Path>) -> Ran {
    let mut argv = vec!["diff".to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut cmd = sandbox.command(&argv, &envs);
    if let Some(path) = stdin {
        cmd.stdin(Stdio::from(std::fs::File::open(path).expect("stdin file")));
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("aop diff runs")).await.expect("join");
    Ran {
        code: out.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A collector holding both runs, and their exports downloaded into the sandbox.
struct Runs {
    server: TestServer,
    a: PathBuf,
    b: PathBuf,
}

impl Runs {
    async fn start(launch: Launch) -> Runs {
        let server = launch.start().await;
        server.ingest(&good_run("run-good")).await;
        server.ingest(&failed_run("run-failed")).await;
        let mut files = Vec::new();
        for id in ["run-good", "run-failed"] {
            let resp = server.get(&format!("/sessions/{id}/export")).await;
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            let path = server.sandbox().path().join(format!("{id}.jsonl"));
            std::fs::write(&path, resp.text().await.expect("export body")).expect("write export");
            files.push(path);
        }
        let b = files.pop().expect("two exports");
        let a = files.pop().expect("two exports");
        Runs { server, a, b }
    }

    fn sandbox(&self) -> &Sandbox {
        self.server.sandbox()
    }

    fn a(&self) -> &str {
        self.a.to_str().expect("a UTF-8 path")
    }

    fn b(&self) -> &str {
        self.b.to_str().expect("a UTF-8 path")
    }

    async fn diff(&self, args: &[&str]) -> Ran {
        diff(self.sandbox(), args, &[], None).await
    }

    /// `aop diff A B --url <this collector> --json`, which must say the runs differ.
    async fn json(&self, a: &str, b: &str) -> Value {
        let base = self.server.base();
        self.diff(&[a, b, "--url", &base, "--json"]).await.assert_code(1).json()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_ids_and_a_mix_give_the_same_comparison() {
    let runs = Runs::start(Launch::new()).await;
    let offline = runs.diff(&[runs.a(), runs.b(), "--json"]).await.assert_code(1).json();

    // The first divergence is the fetch's end (step 6 of both), after five steps done alike.
    assert_eq!(offline["first_divergence"], json!({"index": 5, "a_sequence": 6, "b_sequence": 6}), "{offline:#}");
    let steps = offline["steps"].as_array().expect("steps");
    for (k, s) in steps[..5].iter().enumerate() {
        let seq = k as i64 + 1;
        assert_eq!((&s["kind"], &s["a_sequence"], &s["b_sequence"]), (&json!("same"), &json!(seq), &json!(seq)), "{s}");
    }
    let divergence = &steps[5];
    assert_eq!(divergence["kind"], "changed");
    assert_eq!(divergence["type"], "operation.tool_end");
    assert_eq!(divergence["a_summary"], "fetch → ok: chapter 1, 12 kB");
    assert_eq!(divergence["b_summary"], "fetch → failed: HTTP 503");
    // After it: A's decision only in A, B's three retries only in B, and the two ends changed.
    let rows: Vec<(&str, Value, Value)> = steps[6..]
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["a_sequence"].clone(), s["b_sequence"].clone()))
        .collect();
    let only_b: Vec<i64> = rows.iter().filter(|r| r.0 == "only_b").map(|r| r.2.as_i64().unwrap()).collect();
    assert_eq!(only_b, (7..=12).collect::<Vec<_>>(), "{rows:?}");
    assert!(rows.contains(&("only_a", json!(7), Value::Null)), "{rows:?}");
    assert_eq!(rows.last(), Some(&("changed", json!(8), json!(13))), "{rows:?}");
    assert_eq!(steps.len(), 6 + 6 + 1 + 1);

    let d = &offline["deltas"];
    assert_eq!(d["tool_calls"], json!({"a": 2, "b": 5, "delta": 3}));
    assert_eq!(d["failed_tool_calls"], json!({"a": 0, "b": 4, "delta": 4}));
    assert_eq!(d["steps"]["delta"].as_i64().map(i64::signum), Some(1), "{d}");
    assert_eq!(d["cost_usd"], json!({"a": 0.02, "b": 0.05, "delta": 0.03}));
    assert_eq!(d["duration_ms"], json!({"a": 7000, "b": 12000, "delta": 5000}));
    assert_eq!(d["alerts"]["loop"], json!({"a": 0, "b": 1, "delta": 1}), "{d}");
    assert_eq!(d["alerts"]["error_cascade"], json!({"a": 0, "b": 1, "delta": 1}), "{d}");
    assert_eq!(d["alerts"].as_object().map(|m| m.len()), Some(2), "no other alert, no stall: {d}");
    assert_eq!((offline["a"]["status"].as_str(), offline["b"]["status"].as_str()), (Some("completed"), Some("failed")));
    assert_eq!(offline["a"]["alert_count"], 0);
    assert_eq!(offline["b"]["alert_count"], 2);
    assert_eq!(offline["b"]["error_message"], "the book is unreachable");

    // Through the collector: its rows are the stored ones, which here (no stall, no child, not
    // pinned) are exactly the derived ones, so the whole document is the same.
    let online = runs.json("run-good", "run-failed").await;
    assert_eq!(online, offline);
    let endpoint = runs.server.get_ok("/sessions/run-good/compare/run-failed").await;
    assert_eq!(endpoint, online, "--json prints the API's document");

    // A file beside an id, either way round, and a file on stdin.
    assert_eq!(runs.json(runs.a(), "run-failed").await, offline);
    assert_eq!(runs.json("run-good", runs.b()).await, offline);
    let base = runs.server.base();
    let piped = diff(runs.sandbox(), &["-", "run-failed", "--url", &base, "--json"], &[], Some(&runs.a)).await;
    assert_eq!(piped.assert_code(1).json(), offline);
    let piped = diff(runs.sandbox(), &[runs.a(), "-", "--json"], &[], Some(&runs.b)).await;
    assert_eq!(piped.assert_code(1).json(), offline);

    // Swapped, the same divergence seen from the other side.
    let swapped = runs.diff(&[runs.b(), runs.a(), "--json"]).await.assert_code(1).json();
    assert_eq!(swapped["first_divergence"], json!({"index": 5, "a_sequence": 6, "b_sequence": 6}));
    assert_eq!(swapped["deltas"]["failed_tool_calls"], json!({"a": 4, "b": 0, "delta": -4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_marks_the_divergence_side_by_side_with_colours_on_request() {
    let runs = Runs::start(Launch::new()).await;
    let sandbox = runs.sandbox();
    let plain = diff(sandbox, &[runs.a(), runs.b(), "--color", "never"], &[("COLUMNS", "100")], None).await;
    plain.assert_code(1);
    let text = &plain.stdout;
    assert!(!text.contains('\x1b'), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("A  run-good  ·  agent research-agent  ·  completed  ·  goal: Summarise"), "{text}");
    assert!(
        lines[1].starts_with("B  run-failed  ·  agent research-agent  ·  failed: the book is unreachable"),
        "{text}"
    );
    let marker = lines.iter().position(|l| *l == "▶ first divergence (A #6, B #6)").unwrap_or_else(|| panic!("{text}"));
    let row = lines[marker + 1];
    assert!(row.starts_with("~  6  6  fetch → ok: chapter 1, 12 kB"), "{text}");
    assert!(row.ends_with("│ fetch → failed: HTTP 503"), "{text}");
    // Two same steps of context before it; the three before those collapsed.
    assert!(lines[marker - 1].starts_with("   5  5  fetch("), "{text}");
    assert!(lines[marker - 2].starts_with("   4  4  search → ok: 3 results"), "{text}");
    assert_eq!(lines[marker - 3], "  … 3 same steps …", "{text}");
    assert!(lines.iter().any(|l| l.starts_with('+') && l.contains("│ fetch → failed: HTTP 503")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("-  7") && l.contains("decided: summarise chapter 1")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("failed tool calls") && l.ends_with("+4")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("alerts: loop") && l.ends_with("+1")), "{text}");
    assert!(text.contains("the runs part at step 6 of 14 (A #6, B #6)"), "{text}");
    for line in &lines {
        assert!(line.chars().count() <= 100, "wider than COLUMNS: {line:?}");
    }

    let coloured = diff(sandbox, &[runs.a(), runs.b(), "--color", "always"], &[], None).await;
    coloured.assert_code(1);
    assert!(coloured.stdout.contains("\x1b[1m▶ first divergence (A #6, B #6)\x1b[0m"), "{}", coloured.said());
    assert!(coloured.stdout.contains("\x1b[33m~  6  6  fetch"), "{}", coloured.said());
    assert!(coloured.stdout.contains("\x1b[32m+"), "{}", coloured.said());
    assert!(coloured.stdout.contains("\x1b[31m-"), "{}", coloured.said());
    // `auto` is off when stdout is not a terminal (here a pipe), NO_COLOR or not.
    let auto = diff(sandbox, &[runs.a(), runs.b()], &[("NO_COLOR", ""), ("COLUMNS", "100")], None).await;
    assert_eq!(auto.assert_code(1).stdout, plain.stdout, "auto off a terminal is never");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_same_different_or_trouble() {
    let runs = Runs::start(Launch::new()).await;
    let base = runs.server.base();

    // A session and its own export do the same thing: 0, through the collector and mixed.
    let same = runs.diff(&["run-good", runs.a(), "--url", &base, "--color", "never"]).await;
    assert!(same.assert_code(0).stdout.contains("the runs do the same thing"), "{}", same.said());
    assert!(same.stdout.contains("  … 8 same steps …"), "{}", same.said());
    let same = runs.diff(&["run-failed", "run-failed", "--url", &base, "--json"]).await;
    assert_eq!(same.assert_code(0).json()["first_divergence"], Value::Null);
    runs.diff(&[runs.b(), runs.b()]).await.assert_code(0);

    // Different: 1 (the other tests check it at length).
    runs.diff(&[runs.a(), runs.b()]).await.assert_code(1);

    // Trouble: 2, saying what.
    let missing = runs.diff(&["run-good", "no-such-run", "--url", &base]).await;
    missing.assert_code(2);
    assert!(
        missing.stderr.contains(&format!("no session no-such-run on the collector at {base}")),
        "{}",
        missing.said()
    );
    assert!(missing.stdout.is_empty(), "{}", missing.said());
    let missing = runs.diff(&[runs.a(), "no-such-run", "--url", &base]).await;
    assert!(missing.assert_code(2).stderr.contains("no session no-such-run"), "{}", missing.said());
    let missing = runs.diff(&["no-such-file.jsonl", runs.b()]).await;
    missing.assert_code(2);
    assert!(missing.stderr.contains("cannot read no-such-file.jsonl"), "{}", missing.said());
    let garbage = runs.sandbox().path().join("garbage.jsonl");
    std::fs::write(&garbage, "not an event\n{\"spec\": 1}\n").unwrap();
    let unreadable = runs.diff(&[garbage.to_str().unwrap(), runs.b()]).await;
    unreadable.assert_code(2);
    assert!(unreadable.stderr.contains("line 1:") && unreadable.stderr.contains("line 2:"), "{}", unreadable.said());
    assert!(unreadable.stderr.contains("holds no valid event"), "{}", unreadable.said());
    let both_stdin = runs.diff(&["-", "-"]).await;
    assert!(both_stdin.assert_code(2).stderr.contains("only one of the two runs"), "{}", both_stdin.said());
    runs.diff(&[runs.a(), runs.b(), "--color", "sometimes"]).await.assert_code(2);

    // No collector there: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nobody = format!("http://127.0.0.1:{port}");
    let down = runs.diff(&["run-good", "run-failed", "--url", &nobody]).await;
    down.assert_code(2);
    assert!(down.stderr.contains(&format!("no collector answers at {nobody}")), "{}", down.said());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_with_a_token_needs_it() {
    let runs = Runs::start(Launch::new().token("s3cret-token")).await;
    let base = runs.server.base();
    let refused = runs.diff(&["run-good", "run-failed", "--url", &base]).await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("give --token or AOP_TOKEN"), "{}", refused.said());
    let refused = runs.diff(&[runs.a(), "run-failed", "--url", &base]).await;
    assert!(refused.assert_code(2).stderr.contains("access token"), "{}", refused.said());

    let with_flag = runs.diff(&["run-good", "run-failed", "--url", &base, "--token", "s3cret-token", "--json"]).await;
    let offline = runs.diff(&[runs.a(), runs.b(), "--json"]).await.assert_code(1).json();
    assert_eq!(with_flag.assert_code(1).json(), offline);
    let with_env = diff(
        runs.sandbox(),
        &[runs.a(), "run-failed", "--url", &base, "--json"],
        &[("AOP_TOKEN", "s3cret-token")],
        None,
    )
    .await;
    assert_eq!(with_env.assert_code(1).json(), offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_documents_the_markers_and_exit_codes() {
    let sandbox = Sandbox::new();
    let help = diff(&sandbox, &["--help"], &[], None).await;
    help.assert_code(0);
    for words in
        ["'~' changed", "'-' only in A", "'+' only in B", "Exit codes: 0", "1 they differ", "2 trouble", "AOP_TOKEN"]
    {
        assert!(help.stdout.contains(words), "{words:?} missing from\n{}", help.stdout);
    }
}

/// Regression: tool names and errors holding escape sequences reached the terminal raw through
/// `aop diff`'s JSON and its notes on stderr (the text's steps were already cleaned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_escape_sequences_never_reach_the_terminal() {
    let server = Launch::new().start().await;
    let tool = format!("fetch{HOSTILE_TEXT}");
    let error = format!("HTTP 503{HOSTILE_TEXT}");
    let run = |id: &str, ok: bool| {
        let end = if ok {
            json!({"tool": tool, "success": true, "output_summary": "fine"})
        } else {
            json!({"tool": tool, "success": false, "error": error})
        };
        let outcome =
            if ok { json!({"outcome": "completed"}) } else { json!({"outcome": "failed", "error_message": error}) };
        vec![
            run_event(id, 1, "session.started", json!({"goal": format!("goal{HOSTILE_TEXT}")})),
            run_event(id, 2, "operation.tool_start", json!({"tool": tool, "input": {"q": HOSTILE_TEXT}})),
            run_event(id, 3, "operation.tool_end", end),
            run_event(id, 4, "session.ended", outcome),
        ]
    };
    server.ingest(&run("calm", true)).await;
    server.ingest(&run("hostile", false)).await;
    // A file name is shown in notes on stderr, and one line of this file is not an event.
    let (a, b) = (server.sandbox().path().join("calm\u{1b}]0;t\u{7}.jsonl"), server.sandbox().path().join("b.jsonl"));
    for (id, path) in [("calm", &a), ("hostile", &b)] {
        let export = server.get(&format!("/sessions/{id}/export")).await.text().await.expect("export body");
        let export = if id == "calm" { format!("not an event {HOSTILE_TEXT}\n{export}") } else { export };
        std::fs::write(path, export).expect("write export");
    }
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let base = server.base();

    let clean = |ran: &Ran| {
        for (what, text) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
            assert_eq!(control_characters(text), Vec::<char>::new(), "{what}\n{}", ran.said());
        }
    };
    for args in [vec![a, b], vec!["calm", "hostile", "--url", &base], vec![a, "hostile", "--url", &base]] {
        let text =
            diff(server.sandbox(), &[&args[..], &["--color", "never"]].concat(), &[("COLUMNS", "300")], None).await;
        text.assert_code(1);
        clean(&text);
        assert!(
            text.stdout.contains("failed: HTTP 503\\x1b[31mred\\x1b]0;owned\\x07\\x1b[2J\\x9b1m"),
            "{}",
            text.said()
        );

        let json = diff(server.sandbox(), &[&args[..], &["--json"]].concat(), &[], None).await;
        json.assert_code(1);
        clean(&json);
        // Escaped, yet the same strings once parsed.
        assert!(json.stdout.contains("\\u009b1m"), "{}", json.said());
        let doc = json.json();
        assert_eq!(doc["b"]["error_message"], json!(error), "{doc:#}");
        assert_eq!(doc["a"]["goal"], json!(format!("goal{HOSTILE_TEXT}")), "{doc:#}");
    }
    let noted = diff(server.sandbox(), &[a, b], &[], None).await;
    assert!(noted.stderr.contains("calm\\x1b]0;t\\x07.jsonl: line 1: "), "{}", noted.said());
}

/// Regression: a 300 MiB line was read whole (900 MB). It is reported by its number and read
/// past without being held, and the rest of the file is compared as if it were not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_longer_than_any_event_is_read_past_in_bounded_memory() {
    let sandbox = Sandbox::new();
    let huge = 300 << 20;
    let [plain, big, other] = ["plain.jsonl", "big.jsonl", "other.jsonl"].map(|f| sandbox.path().join(f));
    let events = good_run("run-good");
    std::fs::write(&plain, crate::support::ndjson(&events)).unwrap();
    std::fs::write(&other, crate::support::ndjson(&failed_run("run-failed"))).unwrap();
    crate::support::export_with_a_huge_line(&big, &events, 3, huge);

    let want = diff(&sandbox, &[plain.to_str().unwrap(), other.to_str().unwrap(), "--json"], &[], None).await;
    let argv: Vec<String> = ["diff", big.to_str().unwrap(), other.to_str().unwrap(), "--json"].map(String::from).into();
    let cmd = sandbox.command(&argv, &[]);
    let (out, peak) =
        tokio::task::spawn_blocking(move || crate::support::resources::output_and_peak_rss(cmd)).await.expect("join");
    let got = Ran {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("aop diff over a {} MiB line: peak resident memory {:.1} MiB", huge >> 20, peak as f64 / 1048576.0);
    got.assert_code(1);
    assert_eq!(got.json(), want.assert_code(1).json(), "the other lines are compared as without it");
    assert!(
        got.stderr.contains(&format!("big.jsonl: line 4: a line of {huge} bytes, longer than any event")),
        "{}",
        got.said()
    );
    assert!(peak > 0 && peak < 64 << 20, "peak resident memory {peak} bytes");
}
