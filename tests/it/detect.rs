//! `aop detect FILE`, the real binary: the live detectors over an export, offline, as text and as
//! JSON lines; agents' escape sequences and lines longer than any event in what it reads.

use crate::support::resources::output_and_peak_rss;
use crate::support::{control_characters, event, export_with_a_huge_line, ndjson, Sandbox, HOSTILE_TEXT};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;

/// What a run of `aop detect` left.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    /// Its peak resident memory, in bytes.
    peak: u64,
}

impl Ran {
    fn said(&self) -> String {
        format!("exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }

    /// Nothing a terminal would obey, on either stream.
    fn assert_clean(&self) -> &Ran {
        for (what, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert_eq!(control_characters(text), Vec::<char>::new(), "{what}\n{}", self.said());
        }
        self
    }
}

/// `aop detect <args>` in the sandbox, optionally with a file on stdin.
async fn detect(sandbox: &Sandbox, args: &[&str], stdin: Option<&Path>) -> Ran {
    let mut argv = vec!["detect".to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = sandbox.command(&argv, &[]);
    if let Some(path) = stdin {
        cmd.stdin(Stdio::from(std::fs::File::open(path).expect("stdin file")));
    }
    let (out, peak) = tokio::task::spawn_blocking(move || output_and_peak_rss(cmd)).await.expect("join");
    Ran {
        code: out.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        peak,
    }
}

/// A session whose tool fails four times alike: a loop and an error cascade, each quoting `tool`
/// and `error`.
fn failing_session(tool: &str, error: &str) -> Vec<Value> {
    let mut events = vec![event("s", 1, "session.started", json!({"goal": "g"}))];
    for k in 0..4 {
        events.push(event("s", 2 + 2 * k, "operation.tool_start", json!({"tool": tool, "input": {"q": "x"}})));
        events.push(event(
            "s",
            3 + 2 * k,
            "operation.tool_end",
            json!({"tool": tool, "success": false, "error": error}),
        ));
    }
    events.push(event("s", 10, "session.ended", json!({"outcome": "failed"})));
    events
}

/// Regression: tool names and errors holding ESC sequences, an OSC title, BEL, `ESC[2J` and
/// U+009B were printed raw by `aop detect` (text and JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_escape_sequences_never_reach_the_terminal() {
    let sandbox = Sandbox::new();
    let (tool, error) = (format!("fetch{HOSTILE_TEXT}"), format!("HTTP 503{HOSTILE_TEXT}"));
    let file = sandbox.path().join("hostile.jsonl");
    std::fs::write(&file, format!("{}not an event {HOSTILE_TEXT}\n", ndjson(&failing_session(&tool, &error)))).unwrap();
    let file = file.to_str().unwrap();

    let text = detect(&sandbox, &[file], None).await;
    assert_eq!(text.code, 0, "{}", text.said());
    text.assert_clean();
    let shown = "fetch\\x1b[31mred\\x1b]0;owned\\x07\\x1b[2J\\x9b1m\\x1b]2;t\\x1b\\";
    assert!(text.stdout.lines().any(|l| l.contains("loop: ") && l.contains(shown)), "{}", text.said());
    assert!(text.stdout.lines().any(|l| l.contains("error_cascade: ") && l.contains(shown)), "{}", text.said());
    assert!(text.stdout.ends_with("10 events, 2 alerts, 1 unreadable lines\n"), "{}", text.said());
    assert!(text.stderr.starts_with("line 11: "), "{}", text.said());

    // JSON lines: escaped, and the same strings once parsed.
    let json = detect(&sandbox, &[file, "--json"], None).await;
    assert_eq!(json.code, 0, "{}", json.said());
    json.assert_clean();
    assert!(json.stdout.contains("\\u009b1m"), "{}", json.said());
    let alerts: Vec<Value> = json.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let find = |kind: &str| alerts.iter().find(|a| a["type"] == kind).unwrap_or_else(|| panic!("{kind}: {alerts:#?}"));
    assert_eq!(find("loop")["details"]["tool"], json!(tool));
    assert_eq!(find("error_cascade")["details"]["last_error"], json!(error));
}

/// Regression: a line was read whole whatever its length. A 300 MiB one is reported by its number
/// and read past without being held, and the alerts are those of the other lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_longer_than_any_event_is_read_past_in_bounded_memory() {
    let sandbox = Sandbox::new();
    let huge = 300 << 20;
    let events = failing_session("fetch", "HTTP 503");
    let (plain, big) = (sandbox.path().join("plain.jsonl"), sandbox.path().join("big.jsonl"));
    std::fs::write(&plain, ndjson(&events)).unwrap();
    export_with_a_huge_line(&big, &events, 3, huge);

    let want = detect(&sandbox, &[plain.to_str().unwrap(), "--json"], None).await;
    let got = detect(&sandbox, &["-", "--json"], Some(&big)).await;
    println!("aop detect over a {} MiB line: peak resident memory {:.1} MiB", huge >> 20, got.peak as f64 / 1048576.0);
    assert_eq!(got.code, 0, "{}", got.said());
    assert_eq!(got.stdout, want.stdout, "the same alerts as without it");
    assert_eq!(got.stdout.lines().count(), 2, "{}", got.said());
    assert_eq!(
        got.stderr,
        format!("line 4: a line of {huge} bytes, longer than any event (at most 64 KiB), skipped unread\n"),
        "{}",
        got.said()
    );
    assert!(got.peak > 0 && got.peak < 64 << 20, "peak resident memory {} bytes", got.peak);
}

/// Regression: a read error ended the input silently (a directory read as "0 events, 0 alerts"),
/// and a reader that went away (`aop detect … | head`) made it panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_error_is_a_failure_and_a_closed_pipe_is_not() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path().to_str().unwrap();
    let unread = detect(&sandbox, &[dir], None).await;
    assert_eq!(unread.code, 1, "{}", unread.said());
    assert!(unread.stderr.contains(&format!("aop: cannot read {dir}: ")), "{}", unread.said());
    assert_eq!(unread.stdout, "", "nothing of an input not read to its end: {}", unread.said());

    let file = sandbox.path().join("run.jsonl");
    std::fs::write(&file, ndjson(&failing_session("fetch", "HTTP 503"))).unwrap();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut cmd = sandbox.command(&["detect".to_owned(), file.display().to_string()], &[]);
    cmd.stdout(writer);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("aop detect runs")).await.expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.as_ref()), (Some(0), ""), "nobody reads: not an error");
}
