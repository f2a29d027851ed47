//! `aop copy`: a history moved from one database to another (SQLite files, PostgreSQL) comes out
//! the same: the same sessions, exports byte for byte, the same alerts; a second copy copies
//! nothing; a copy killed midway finishes when run again; and what cannot be right is refused.

use crate::support::files::{self, Look};
use crate::support::pg::Pg;
use crate::support::*;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events of the long run.
const LONG_RUN: i64 = 3000;
/// The trace whose spans share a clock.
const TRACE: &str = "abababababababababababababab0c0c";
const TRACE_SPANS: u64 = 40;

/// A tool call that finds nothing, `seq` and `seq + 1`, at `secs`: four make a loop.
fn fruitless_call(session: &str, seq: i64, secs: i64) -> [Value; 2] {
    [
        event(session, seq, "operation.tool_start", json!({"tool": "search", "input": {"q": "same"}})).at(secs),
        event(
            session,
            seq + 1,
            "operation.tool_end",
            json!({"tool": "search", "success": true, "output_summary": "none"}),
        )
        .at(secs),
    ]
}

/// Something of everything: a parent whose two children failed (an error cascade on the
/// parent), a failed run, a loop, a run to pin, costs and a confidence drop, and a long run.
fn history() -> Vec<Value> {
    let mut evs = vec![
        event("lead", 1, "session.started", json!({"goal": "delegate"})),
        event("lead", 2, "cognition.thought", json!({"content": "split the work", "confidence": "high"})),
        event("lead", 90, "session.ended", json!({"outcome": "completed"})).at(90),
        event("broken", 1, "session.started", json!({"goal": "fetch"})).agent("fetcher"),
        event("broken", 2, "operation.tool_end", json!({"tool": "fetch", "success": false, "error": "timeout"}))
            .agent("fetcher"),
        event("broken", 3, "session.ended", json!({"outcome": "failed", "error_message": "gave up"})).agent("fetcher"),
        event("kept", 1, "session.started", json!({"goal": "remember this"})),
        event("kept", 2, "session.ended", json!({"outcome": "completed"})),
        event("costly", 1, "session.started", json!({})),
    ];
    for (kid, end) in [("kid_a", 10), ("kid_b", 40)] {
        evs.push(event(kid, 1, "session.started", json!({})).agent("helper").parent("lead").at(5));
        evs.push(event(kid, 2, "session.ended", json!({"outcome": "failed"})).agent("helper").parent("lead").at(end));
    }
    evs.push(event("loopy", 1, "session.started", json!({})));
    evs.extend((0..4).flat_map(|i| fruitless_call("loopy", 2 + 2 * i, 2 + 5 * i)));
    evs.extend((2..=7).map(|i| {
        let cost = if i == 7 { 0.5 } else { 0.01 };
        event("costly", i, "operation.tool_end", json!({"tool": "llm", "success": true, "cost_usd": cost}))
    }));
    evs.extend((8..=10).map(|i| event("costly", i, "cognition.thought", json!({"content": "?", "confidence": "low"}))));
    evs.push(event("costly", 11, "operation.external_call", json!({"model": "gpt-4o-mini", "input_tokens": 1200})));
    evs.push(event("long", 0, "session.started", json!({"goal": "a long run"})));
    evs.extend((1..LONG_RUN).map(|i| {
        event(
            "long",
            i,
            "cognition.thought",
            json!({"content": format!("step {i} of a long run"), "confidence": "high"}),
        )
    }));
    evs
}

/// An OTLP/JSON export of tool spans of one trace with the very same start and end, in this
/// order: their events' sequences collide, so the collector places them by arrival.
fn trace(spans: impl Iterator<Item = u64>) -> Value {
    let spans: Vec<Value> = spans
        .map(|i| {
            json!({
                "traceId": TRACE, "spanId": format!("{i:016x}"), "parentSpanId": "0000000000000001",
                "name": "execute_tool t", "startTimeUnixNano": "1775210410000000000",
                "endTimeUnixNano": "1775210420000000000",
                "attributes": [{"key": "gen_ai.tool.name", "value": {"stringValue": format!("t{i}")}}],
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-bot"}}]},
        "scopeSpans": [{"spans": spans}],
    }]})
}

fn trace_session() -> String {
    format!("otel-{TRACE}")
}

async fn post_trace(server: &TestServer, body: &Value) {
    let req = server.authed(Method::POST, "/v1/traces").header(CONTENT_TYPE, "application/json").body(body.to_string());
    let (status, _, answer) = TestServer::send_json(req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Records [`history`], a trace and a pin.
async fn record(server: &TestServer) {
    server.import(&history()).await;
    post_trace(server, &trace(10..10 + TRACE_SPANS)).await;
    let (status, _, answer) = TestServer::send_json(
        server.authed(Method::POST, "/sessions/kept/pin").header(CONTENT_TYPE, "application/json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// What a collector serves of its database: the sessions list, each session's export, and the
/// types of each session's alerts (sorted: a copy may raise a parent's alert at another moment
/// of its history).
#[derive(Debug, PartialEq)]
struct Contents {
    rows: Vec<Value>,
    exports: BTreeMap<String, String>,
    alerts: BTreeMap<String, Vec<String>>,
}

impl Contents {
    async fn of(server: &TestServer) -> Contents {
        let rows = server.sessions("limit=1000").await;
        let (mut exports, mut alerts) = (BTreeMap::new(), BTreeMap::new());
        for row in &rows {
            let id = row["id"].as_str().expect("id").to_owned();
            let resp = server.get(&format!("/sessions/{id}/export")).await;
            assert_eq!(resp.status(), StatusCode::OK, "export of {id}");
            exports.insert(id.clone(), resp.text().await.expect("export body"));
            let listed = server.get_ok(&format!("/alerts?session_id={id}&limit=1000")).await;
            let mut types: Vec<String> = listed["alerts"]
                .as_array()
                .expect("alerts")
                .iter()
                .map(|a| a["type"].as_str().unwrap().to_owned())
                .collect();
            types.sort();
            alerts.insert(id, types);
        }
        Contents { rows, exports, alerts }
    }

    fn events(&self) -> u64 {
        self.exports.values().map(|e| e.lines().count() as u64).sum()
    }

    /// A session's row.
    fn row(&self, id: &str) -> &Value {
        self.rows.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no session {id}"))
    }
}

/// A collector started on `db`, recorded into, read, and stopped.
async fn recorded(sandbox: &Arc<Sandbox>, db: &str) -> Contents {
    let mut server = Launch::in_sandbox(Arc::clone(sandbox)).db(db).start().await;
    record(&server).await;
    let contents = Contents::of(&server).await;
    server.sigterm().await;
    contents
}

/// What a collector started on `db` serves (it is stopped again).
async fn contents_of(sandbox: &Arc<Sandbox>, db: &str) -> Contents {
    let mut server = Launch::in_sandbox(Arc::clone(sandbox)).db(db).start().await;
    let contents = Contents::of(&server).await;
    server.sigterm().await;
    contents
}

/// `aop copy --from --to --json`, which must succeed: its summary.
async fn copy(sandbox: &Sandbox, from: &str, to: &str) -> Value {
    let run = sandbox.run(&["copy", "--from", from, "--to", to, "--json"]).await;
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line of summary\n{}", run.output());
    assert_eq!(run.stderr, "", "not a terminal: no progress, and nothing went wrong\n{}", run.output());
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("summary is not JSON ({e})\n{}", run.output()))
}

fn path(sandbox: &Sandbox, file: &str) -> String {
    sandbox.path().join(file).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_serves_the_same_sessions_exports_and_alerts() {
    let sandbox = Arc::new(Sandbox::new());
    let (a, b) = (path(&sandbox, "a.db"), path(&sandbox, "b.db"));
    let source = recorded(&sandbox, &a).await;
    // The history holds what it is meant to.
    assert_eq!(source.row("kept")["pinned"], true);
    assert_eq!(source.row("broken")["status"], "failed");
    assert_eq!(source.row("kid_a")["parent_session_id"], "lead");
    assert_eq!(source.row("lead")["child_count"], 2);
    assert_eq!(source.row("long")["event_count"], LONG_RUN);
    assert_eq!(source.row(&trace_session())["event_count"], 1 + 2 * TRACE_SPANS);
    assert_eq!(source.alerts["loopy"], ["loop"]);
    assert_eq!(source.alerts["lead"], ["error_cascade"]);
    assert_eq!(source.alerts["costly"], ["confidence_drop", "cost_spike"]);

    let started = Instant::now();
    let summary = copy(&sandbox, &a, &b).await;
    let took = started.elapsed();
    let events = source.events();
    assert_eq!(
        summary,
        json!({"sessions": source.rows.len(), "copied": events, "already": 0, "conflicts": 0, "invalid": 0,
               "seconds": summary["seconds"]}),
    );
    eprintln!("copied {events} events in {took:?} ({:.0} events/s)", events as f64 / took.as_secs_f64());

    assert_eq!(contents_of(&sandbox, &b).await, source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_copies_nothing() {
    let sandbox = Arc::new(Sandbox::new());
    let (a, b) = (path(&sandbox, "a.db"), path(&sandbox, "b.db"));
    let source = recorded(&sandbox, &a).await;
    let first = copy(&sandbox, &a, &b).await;
    assert_eq!(first["copied"], source.events());
    let second = copy(&sandbox, &a, &b).await;
    assert_eq!(
        (&second["sessions"], &second["copied"], &second["already"], &second["conflicts"]),
        (&json!(source.rows.len()), &json!(0), &json!(source.events()), &json!(0)),
    );
    assert_eq!(contents_of(&sandbox, &b).await, source, "nothing doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_the_destination_received_itself_is_recognised_by_its_spans() {
    let sandbox = Arc::new(Sandbox::new());
    let (a, b) = (path(&sandbox, "a.db"), path(&sandbox, "b.db"));
    let session = trace_session();
    let mut source = Launch::in_sandbox(Arc::clone(&sandbox)).db(&a).start().await;
    let mut destination = Launch::in_sandbox(Arc::clone(&sandbox)).db(&b).start().await;
    // The exporter's spans, in another order: the destination placed them at other sequences.
    post_trace(&source, &trace(10..10 + TRACE_SPANS)).await;
    post_trace(&destination, &trace((10..10 + TRACE_SPANS).rev())).await;
    let (at_source, at_destination) = (source.events(&session).await, destination.events(&session).await);
    assert_ne!(at_source, at_destination, "the same spans, placed otherwise");
    source.sigterm().await;
    destination.sigterm().await;

    let summary = copy(&sandbox, &a, &b).await;
    assert_eq!(
        (&summary["copied"], &summary["already"], &summary["conflicts"]),
        (&json!(0), &json!(at_source.len()), &json!(0))
    );
    let destination = Launch::in_sandbox(Arc::clone(&sandbox)).db(&b).start().await;
    assert_eq!(destination.events(&session).await, at_destination);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_destination_holds_otherwise_is_reported_and_kept() {
    let sandbox = Arc::new(Sandbox::new());
    let (a, b) = (path(&sandbox, "a.db"), path(&sandbox, "b.db"));
    let thought = |seq: i64, content: &str| event("s", seq, "cognition.thought", json!({"content": content}));
    let mut source = Launch::in_sandbox(Arc::clone(&sandbox)).db(&a).start().await;
    source.ingest(&[thought(1, "first"), thought(2, "the source's second"), thought(3, "third")]).await;
    source.sigterm().await;
    let mut destination = Launch::in_sandbox(Arc::clone(&sandbox)).db(&b).start().await;
    destination.ingest(&[thought(2, "the destination's second")]).await;
    let before = destination.events("s").await;
    destination.sigterm().await;

    let run = sandbox.run(&["copy", "--from", &a, "--to", &b]).await;
    run.assert_code(0);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.output());
    assert!(
        run.stdout.starts_with("copied 2 events of 1 sessions (0 already there, 1 conflicts) in "),
        "{}",
        run.output()
    );
    assert!(
        run.stderr.contains(r#"session "s": 1 event differs"#) && run.stderr.contains("(2)"),
        "the conflict is reported with its sequence\n{}",
        run.output()
    );
    let destination = Launch::in_sandbox(Arc::clone(&sandbox)).db(&b).start().await;
    let after = destination.events("s").await;
    assert_eq!(after.len(), 3);
    assert_eq!(after[1], before[0], "the destination's event stays");
}

/// A child process killed, if still running, when the test ends however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sessions and events of the source a copy is killed in.
const SESSIONS: i64 = 40;
const EVENTS_EACH: i64 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_midway_finishes_when_run_again() {
    let sandbox = Arc::new(Sandbox::new());
    let (a, b) = (path(&sandbox, "a.db"), path(&sandbox, "b.db"));
    let mut source = Launch::in_sandbox(Arc::clone(&sandbox)).db(&a).start().await;
    for s in 0..SESSIONS {
        let id = format!("run_{s:02}");
        let evs: Vec<Value> = (1..=EVENTS_EACH)
            .map(|i| {
                event(&id, i, "cognition.thought", json!({"content": format!("thought {i} of {id}")}))
                    .at(s * 10_000 + i)
            })
            .collect();
        source.import(&evs).await;
    }
    let want = Contents::of(&source).await;
    source.sigterm().await;

    let args: Vec<String> = ["copy", "--from", &a, "--to", &b].map(String::from).to_vec();
    let mut first =
        Reaped(sandbox.command(&args, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("aop copy"));
    // Killed once the destination holds some commits, long before the end.
    let written = || {
        ["b.db", "b.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(sandbox.path().join(f)).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let deadline = Instant::now() + PATIENCE;
    while written() < 1 << 20 {
        assert!(first.0.try_wait().expect("try_wait").is_none(), "the copy ended before it could be killed");
        assert!(Instant::now() < deadline, "the copy wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.0.kill().expect("SIGKILL");
    let status = first.0.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed, not finished: {status:?}");

    let summary = copy(&sandbox, &a, &b).await;
    let (copied, already) = (summary["copied"].as_u64().unwrap(), summary["already"].as_u64().unwrap());
    assert!(already > 0 && copied > 0, "the first run had copied some, not all: {summary}");
    assert_eq!(copied + already, want.events(), "{summary}");
    assert_eq!(summary["conflicts"], 0);
    assert_eq!(contents_of(&sandbox, &b).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_copied_is_refused_and_creates_nothing() {
    let sandbox = Arc::new(Sandbox::new());
    let a = path(&sandbox, "a.db");
    let mut source = Launch::in_sandbox(Arc::clone(&sandbox)).db(&a).start().await;
    source.ingest(&[event("s", 1, "session.started", json!({}))]).await;

    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(sandbox.path())
            .expect("the sandbox")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("a.db"))
            .collect();
        names.sort();
        names
    };
    let before = files();

    let in_use = sandbox.run(&["copy", "--from", &a, "--to", "b.db"]).await;
    in_use.assert_code(4);
    assert!(in_use.stderr.contains("in use") && in_use.stderr.contains("stop the collector"), "{}", in_use.output());
    source.sigterm().await;

    // (arguments, what the message must say)
    let cases: [(&[&str], &str); 5] = [
        (&["--from", "missing.db", "--to", "b.db"], "no such file"),
        (&["--from", &a, "--to", &a], "the same database"),
        (&["--from", &a, "--to", "./a.db"], "the same database"),
        (&["--from", "mysql://x", "--to", "b.db"], "--from mysql://… is not supported"),
        (&["--from", &a, "--to", "mysql://x"], "--to mysql://… is not supported"),
    ];
    for (args, says) in cases {
        let mut argv = vec!["copy"];
        argv.extend_from_slice(args);
        let run = sandbox.run(&argv).await;
        run.assert_code(2);
        assert!(run.stderr.contains(says), "{args:?}: expected {says:?}\n{}", run.output());
        assert_eq!(run.stdout, "", "{}", run.output());
    }
    assert_eq!(files(), before, "nothing created");
}

/// Both sides of a copy refuse what is not an aop database and leave it as it was: its bytes,
/// its mode (a script stays executable), its modification time, nothing beside it. A refused
/// source creates no destination; a refused destination leaves the source as it was too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_an_aop_database_is_refused_on_either_side_and_left_as_it_was() {
    let sandbox = Arc::new(Sandbox::new());
    let aop = files::aop_database(&sandbox, "a.db", "").await.display().to_string();
    let aop_before = Look::of(Path::new(&aop));
    let mut problems = Vec::new();
    for unfit in files::not_aop_files(sandbox.path()) {
        let before = Look::of(&unfit.path);
        let file = unfit.path.display().to_string();
        for (side, from, to) in [("--from", file.as_str(), "b.db"), ("--to", aop.as_str(), file.as_str())] {
            let run = sandbox.run(&["copy", "--from", from, "--to", to]).await;
            let named = format!("{side} {file}: {file} ");
            if run.status.code() != Some(4) || !run.stderr.contains(&named) || !run.stderr.contains(unfit.says) {
                problems.push(format!("{} as {side}: not refused as expected\n{}", unfit.case, run.output()));
            }
            let after = Look::of(&unfit.path);
            if after != before {
                problems.push(format!("{} as {side}: changed\n  before: {before:?}\n  after:  {after:?}", unfit.case));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(!sandbox.path().join("b.db").exists(), "a refused source created the destination");
    assert_eq!(Look::of(Path::new(&aop)), aop_before, "the source of a refused destination changed");
}

/// The source is only read: not migrated, not switched to another journal mode, not chmod-ed,
/// nothing left beside it, whether an aop of this version or an older one wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_is_read_as_it_is_and_never_changed() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Arc::new(Sandbox::new());
    let a = path(&sandbox, "a.db");
    let source = recorded(&sandbox, &a).await;
    // Readable by its group, as a restore may leave it: a collector would make it its owner's only.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = Look::of(Path::new(&a));
    let summary = copy(&sandbox, &a, &path(&sandbox, "b.db")).await;
    assert_eq!(summary["copied"], source.events());
    assert_eq!(Look::of(Path::new(&a)), before, "the source changed");

    let old = files::aop_database(&sandbox, "old.db", files::SCHEMA_VERSION_1).await;
    let before = Look::of(&old);
    let c = path(&sandbox, "c.db");
    let summary = copy(&sandbox, &old.display().to_string(), &c).await;
    assert_eq!((&summary["sessions"], &summary["copied"]), (&json!(1), &json!(1)), "{summary}");
    assert_eq!(Look::of(&old), before, "a database of an older aop is read as it is, not migrated");
    assert_eq!(contents_of(&sandbox, &c).await.row("made")["goal"], "made by aop");
}

/// A collector killed leaves its write-ahead log beside the file: the copy reads through it
/// (every acknowledged event is copied) and leaves both as they were, not folded together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_left_by_a_killed_collector_is_read_through_its_log_untouched() {
    let sandbox = Arc::new(Sandbox::new());
    let a = path(&sandbox, "a.db");
    let mut source = Launch::in_sandbox(Arc::clone(&sandbox)).db(&a).start().await;
    let evs: Vec<Value> = (1..=50).map(|i| event("crashed", i, "cognition.thought", json!({"n": i}))).collect();
    source.ingest(&evs).await;
    source.sigkill().await;
    let wal = format!("{a}-wal");
    let before = (Look::of(Path::new(&a)), Look::of(Path::new(&wal)));
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the log holds what was committed last");

    let b = path(&sandbox, "b.db");
    let summary = copy(&sandbox, &a, &b).await;
    assert_eq!(summary["copied"], 50, "{summary}");
    assert_eq!((Look::of(Path::new(&a)), Look::of(Path::new(&wal))), before);
    assert_eq!(contents_of(&sandbox, &b).await.events(), 50);
}

/// The most memory a process has held (`VmHWM`), or 0 once it is gone.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// `aop <args>` run to its end (killed after [`PATIENCE`]), with the most memory it was seen
/// to hold, read every few milliseconds while it ran.
async fn watched(sandbox: &Sandbox, args: &[&str]) -> (Finished, u64) {
    use std::io::Read;
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let command = format!("aop {}", argv.join(" "));
    let mut child = Reaped(sandbox.command(&argv, &[]).spawn().expect("aop"));
    let deadline = Instant::now() + PATIENCE;
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        peak = peak.max(peak_rss_bytes(child.0.id()));
        assert!(Instant::now() < deadline, "{command}: still running after {PATIENCE:?}, {} MiB", peak >> 20);
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.0.stdout.take().expect("piped").read_to_string(&mut stdout).expect("stdout");
    child.0.stderr.take().expect("piped").read_to_string(&mut stderr).expect("stderr");
    (Finished { command, status, started: false, stdout, stderr }, peak)
}

/// An aop database made to run SQL of someone else's on its reader (`sessions` a view that never
/// ends) or its writer (a trigger that never ends) is refused at once as either side, naming the
/// object, in little memory. Before, a copy from such a file ran until it was killed, holding
/// gigabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_database_is_refused_at_once_naming_what_aop_did_not_make() {
    let sandbox = Arc::new(Sandbox::new());
    let good = files::aop_database(&sandbox, "good.db", "").await.display().to_string();
    let fresh = path(&sandbox, "fresh.db");
    let crafted = [
        ("view.db", files::ENDLESS_VIEW, r#"its "sessions" is a view where aop's schema (version 4) has a table"#),
        ("trigger.db", files::ENDLESS_TRIGGER, r#"it has trigger "spin" on "events", which aop's schema"#),
    ];
    for (name, sql, says) in crafted {
        let file = files::aop_database(&sandbox, name, sql).await.display().to_string();
        let before = Look::of(Path::new(&file));
        for (from, to) in [(file.as_str(), fresh.as_str()), (good.as_str(), file.as_str())] {
            let started = Instant::now();
            let (run, peak) = watched(&sandbox, &["copy", "--from", from, "--to", to]).await;
            let memory =
                if peak == 0 { "gone before its memory was read".into() } else { format!("{} MiB", peak >> 20) };
            eprintln!("{}: refused in {:?}, {memory}", run.command, started.elapsed());
            run.assert_code(4);
            assert!(run.stderr.contains(says), "expected {says:?}\n{}", run.output());
            assert!(peak < 128 << 20, "{} MiB\n{}", peak >> 20, run.output());
            assert_eq!(Look::of(Path::new(&file)), before, "{}", run.command);
        }
    }
    assert!(!Path::new(&fresh).exists(), "a refused source created the destination");
}

/// Regression: `postgres:/user:pw@host/db` (one slash, or none) was taken for a SQLite path: a
/// copy to it created folders named after the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_postgres_url_is_refused_on_either_side_without_its_password() {
    let sandbox = Sandbox::new();
    let secret = "pw-N0tShown";
    std::fs::write(sandbox.path().join("a.db"), "").unwrap();
    let files = || {
        let mut names: Vec<String> = walkdir(sandbox.path());
        names.sort();
        names
    };
    let before = files();
    for url in [
        format!("postgres:/user:{secret}@host/db"),
        format!("postgres:user:{secret}@host/db"),
        format!("POSTGRESQL:/user:{secret}@host/db"),
        format!("PostgreS://user:{secret}@host:notaport/db"),
    ] {
        let scheme = url.split(':').next().unwrap();
        for (flag, args) in [("--from", ["--from", &url, "--to", "b.db"]), ("--to", ["--from", "a.db", "--to", &url])] {
            let mut argv = vec!["copy"];
            argv.extend_from_slice(&args);
            let run = sandbox.run(&argv).await;
            run.assert_code(2);
            assert!(run.stderr.contains(&format!("{flag} {scheme}:")), "{}", run.output());
            assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret), "{}", run.output());
            assert_eq!(files(), before, "nothing created\n{}", run.output());
        }
    }
}

/// Every path under `dir`, relative to it.
fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        out.push(path.strip_prefix(dir).unwrap_or(&path).display().to_string());
        if path.is_dir() {
            out.extend(walkdir(&path).into_iter().map(|p| format!("{}/{p}", entry.file_name().to_string_lossy())));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_goes_to_postgresql_and_back() {
    let sandbox = Arc::new(Sandbox::new());
    let (a, c) = (path(&sandbox, "a.db"), path(&sandbox, "c.db"));
    let fleet = Pg::shared().create_db();
    let source = recorded(&sandbox, &a).await;

    let up = copy(&sandbox, &a, &fleet).await;
    assert_eq!((&up["copied"], &up["conflicts"]), (&json!(source.events()), &json!(0)), "{up}");
    let at_fleet = contents_of(&sandbox, &fleet).await;
    assert_eq!(at_fleet.exports, source.exports);
    assert_eq!(at_fleet.alerts, source.alerts);

    let down = copy(&sandbox, &fleet, &c).await;
    assert_eq!((&down["copied"], &down["conflicts"]), (&json!(source.events()), &json!(0)), "{down}");
    assert_eq!(contents_of(&sandbox, &c).await, source);

    let again = copy(&sandbox, &a, &fleet).await;
    assert_eq!((&again["copied"], &again["already"]), (&json!(0), &json!(source.events())), "{again}");
}
