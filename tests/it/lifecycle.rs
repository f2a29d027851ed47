//! The collector as a process: crashes, clean stops, restarts, refusals at start-up (busy port,
//! bad database, a second collector), configuration and the command line.

use crate::support::files::{self, Look};
use crate::support::*;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a poster learnt: every event acknowledged with 200, and every status it saw.
#[derive(Default)]
struct Acks {
    events: Mutex<Vec<Value>>,
    statuses: Mutex<Vec<(u16, bool)>>,
}

impl Acks {
    fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }
    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}

/// Posts events of `session` one after the other until told to stop or the collector is gone.
fn poster(base: String, session: String, acks: Arc<Acks>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        for seq in 1.. {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let ev = event(&session, seq, "cognition.thought", json!({"content": format!("{session} {seq}")}));
            let Ok(resp) = client.post(format!("{base}/events")).json(&ev).send().await else { return };
            let status = resp.status();
            let retry_after = resp.headers().contains_key("retry-after");
            acks.statuses.lock().unwrap().push((status.as_u16(), retry_after));
            let Ok(body) = resp.json::<Value>().await else { return };
            if status == StatusCode::OK && body == json!({"ok": true}) {
                acks.events.lock().unwrap().push(ev);
            }
        }
    })
}

/// Every event in `acked` is served by the collector exactly as sent.
async fn assert_all_stored(server: &TestServer, acked: &[Value], context: &str) {
    let mut by_session: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for ev in acked {
        by_session.entry(ev["session_id"].as_str().unwrap().to_owned()).or_default().push(ev.clone());
    }
    for (session, evs) in by_session {
        let stored = server.events(&session).await;
        for ev in evs {
            assert!(stored.contains(&ev), "{context}: acknowledged event lost: {ev}");
        }
    }
}

/// Opens the database file directly: it must be intact and hold at least `at_least` events.
fn inspect_db(server: &TestServer, at_least: usize, context: &str) {
    let conn = rusqlite::Connection::open(server.db_path()).expect("open the database");
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "{context}");
    let events: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert!(events as usize >= at_least, "{context}: {events} events in the file, {at_least} acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_sigkill_right_after_its_200() {
    for durability in ["full", "normal"] {
        let mut server = Launch::new().args(["--durability", durability]).start().await;
        let mut acked = Vec::new();
        for round in 0..3 {
            let context = format!("durability {durability}, round {round}");
            let acks = Arc::new(Acks::default());
            let stop = Arc::new(AtomicBool::new(false));
            let posters: Vec<_> = (0..3)
                .map(|p| poster(server.base(), format!("{durability}_r{round}_p{p}"), acks.clone(), stop.clone()))
                .collect();
            eventually("the posters to get going", || async { (acks.count() >= 5 + round * 7).then_some(()) }).await;

            // The instant this one is acknowledged, the collector dies.
            let mine =
                event(&format!("{durability}_r{round}_main"), 1, "session.ended", json!({"outcome": "completed"}));
            assert_eq!(server.post_event(&mine).await, (StatusCode::OK, json!({"ok": true})));
            server.sigkill().await;
            stop.store(true, Ordering::SeqCst);
            for p in posters {
                p.await.unwrap();
            }
            acked.extend(acks.events());
            acked.push(mine);

            inspect_db(&server, acked.len(), &context);
            server.start_again().await;
            assert_all_stored(&server, &acked, &context).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_ends_open_streams_and_exits_0_within_5_seconds() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = TestServer::start().await;
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(server.stream("/stream").await);
        }
        let sent: Vec<Value> = (1..=3).map(|i| event("before_stop", i, "cognition.thought", json!({}))).collect();
        server.ingest(&sent).await;
        for s in &mut streams {
            assert_eq!(s.events(3).await.len(), 3);
        }

        let started = Instant::now();
        let status = server.signal_and_wait(signal, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(status.is_some(), "{signal}: still running after 5 s\n{}", server.output());
        assert_eq!(status.unwrap().code(), Some(0), "{signal}: exit status\n{}", server.output());
        for (i, s) in streams.iter_mut().enumerate() {
            let rest = s.until_end(Duration::from_secs(5)).await;
            assert!(rest.is_ok(), "{signal}: stream {i} did not end cleanly: {rest:?} (exit took {took:?})");
        }
        assert!(!server.stderr().contains("panicked"), "{}", server.output());

        server.start_again().await;
        assert_eq!(server.events("before_stop").await, sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_under_load_keeps_every_acknowledged_event() {
    let mut server = TestServer::start().await;
    let acks = Arc::new(Acks::default());
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> =
        (0..4).map(|p| poster(server.base(), format!("load_{p}"), acks.clone(), stop.clone())).collect();
    eventually("some load", || async { (acks.count() >= 40).then_some(()) }).await;

    let status = server.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.output());
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }
    for (status, retry_after) in acks.statuses.lock().unwrap().iter() {
        assert!(
            *status == 200 || (*status == 503 && *retry_after),
            "during shutdown a poster got {status} (Retry-After: {retry_after})"
        );
    }
    server.start_again().await;
    assert_all_stored(&server, &acks.events(), "after SIGTERM under load").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tiny_write_queue_every_event_is_stored_or_refused_with_retry_after() {
    let server = Launch::new().args(["--queue-capacity", "1"]).start().await;
    let acks = Arc::new(Acks::default());
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..8).map(|p| poster(server.base(), format!("q_{p}"), acks.clone(), stop.clone())).collect();
    eventually("200 answers", || async { (acks.statuses.lock().unwrap().len() >= 200).then_some(()) }).await;
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }

    for (status, retry_after) in acks.statuses.lock().unwrap().iter() {
        assert!(*status == 200 || (*status == 503 && *retry_after), "got {status} (Retry-After: {retry_after})");
    }
    // Exactly the acknowledged events are stored: no silent drop, no refused event kept.
    let acked = acks.events();
    for p in 0..8 {
        let session = format!("q_{p}");
        let mine: Vec<Value> = acked.iter().filter(|e| e["session_id"] == session.as_str()).cloned().collect();
        let (status, _) = server.get_json(&format!("/sessions/{session}")).await;
        let stored = if status == StatusCode::OK { server.events(&session).await } else { Vec::new() };
        assert_eq!(stored, mine, "{session}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_program_is_named_with_the_flag_to_change_it() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let launch = Launch::new().port(port);
    let db = launch.db_path();
    let done = launch.run().await;

    done.assert_code(3);
    assert!(done.stderr.contains(&port.to_string()), "the port is not named\n{}", done.output());
    assert!(done.stderr.contains("--port"), "the flag is not named\n{}", done.output());
    assert!(!done.stderr.contains("panicked"), "{}", done.output());
    assert!(!db.exists(), "a collector that could not listen created its database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_aop_is_reported_with_its_url() {
    let first = TestServer::start().await;
    let second = Launch::new().port(first.port());
    let second_db = second.db_path();
    let done = second.run().await;

    done.assert_code(0);
    let url = format!("http://127.0.0.1:{}", first.port());
    assert!(done.stderr.contains(&url), "no URL {url}\n{}", done.output());
    assert!(done.stderr.contains("already running"), "{}", done.output());
    assert!(!second_db.exists(), "the second collector created a database");
    assert_eq!(first.health().await["ok"], true, "the first collector was disturbed");
}

/// Files that must not be opened as the collector's database: (case, file, what the refusal says).
fn broken_databases(dir: &Path) -> Vec<(&'static str, std::path::PathBuf, &'static str)> {
    let newer = dir.join("newer.db");
    let conn = rusqlite::Connection::open(&newer).unwrap();
    // As aop writes its databases: in WAL mode.
    conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
    drop(conn);

    let folder = dir.join("a-folder.db");
    std::fs::create_dir(&folder).unwrap();

    let mut cases: Vec<_> = files::not_aop_files(dir).into_iter().map(|u| (u.case, u.path, u.says)).collect();
    cases.push(("a database of a newer aop", newer, "newer"));
    cases.push(("a directory", folder, ""));
    cases
}

/// What is wrong with one refusal, if anything.
fn refusal_problems(case: &str, db: &Path, fragment: &str, done: &Finished, before: &Look) -> Vec<String> {
    let mut problems = Vec::new();
    if done.started {
        problems.push(format!("{case}: the collector started and served this file"));
    } else if done.status.code() != Some(4) {
        problems.push(format!("{case}: exit status {:?}, expected 4", done.status));
    }
    if !done.started && !done.stderr.contains(&db.display().to_string()) {
        problems.push(format!("{case}: the message does not name the file"));
    }
    if !done.started && !done.stderr.contains(fragment) {
        problems.push(format!("{case}: the message does not say {fragment:?}"));
    }
    if done.stderr.contains("panicked") {
        problems.push(format!("{case}: panicked"));
    }
    let after = Look::of(db);
    if after != *before {
        problems.push(format!("{case}: the file was changed\n  before: {before:?}\n  after:  {after:?}"));
    }
    problems
}

/// A refused file keeps its bytes, its mode (an executable script stays 755), its modification
/// time and its journal mode, and gets no `-wal`, `-shm` or `-journal` beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_an_aop_database_is_refused_with_exit_4_and_left_untouched() {
    let sandbox = Arc::new(Sandbox::new());
    let mut problems = Vec::new();
    let mut outputs = Vec::new();
    for (case, db, fragment) in broken_databases(sandbox.path()) {
        let before = Look::of(&db);
        let done = Launch::in_sandbox(sandbox.clone()).db(&db).run().await;
        let found = refusal_problems(case, &db, fragment, &done, &before);
        if !found.is_empty() {
            outputs.push(done.output());
        }
        problems.extend(found);
    }
    assert!(problems.is_empty(), "{}\n\n{}", problems.join("\n"), outputs.join("\n\n"));
}

/// An aop database with a view in place of a table, or a trigger of someone else's, would have
/// the collector run that SQL (here: forever). It is refused before anything reads through it,
/// naming what is not aop's, and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aop_database_with_objects_aop_did_not_make_is_refused_naming_them() {
    let sandbox = Arc::new(Sandbox::new());
    let crafted = [
        ("sessions made a view", "view.db", files::ENDLESS_VIEW, r#"its "sessions" is a view where aop's schema"#),
        ("a trigger added", "trigger.db", files::ENDLESS_TRIGGER, r#"it has trigger "spin" on "events""#),
    ];
    let mut problems = Vec::new();
    let mut outputs = Vec::new();
    for (case, name, sql, says) in crafted {
        let db = files::aop_database(&sandbox, name, sql).await;
        let before = Look::of(&db);
        let started = Instant::now();
        let done = Launch::in_sandbox(sandbox.clone()).db(&db).run().await;
        eprintln!("{case}: refused in {:?}", started.elapsed());
        let found = refusal_problems(case, &db, says, &done, &before);
        if !found.is_empty() {
            outputs.push(done.output());
        }
        problems.extend(found);
    }
    assert!(problems.is_empty(), "{}\n\n{}", problems.join("\n"), outputs.join("\n\n"));
}

/// A database of an older aop is still taken and brought up to date, its sessions kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_an_older_aop_is_migrated_at_start() {
    let sandbox = Arc::new(Sandbox::new());
    // Version 1 had no `conversation` column.
    let db = files::aop_database(&sandbox, "old.db", files::SCHEMA_VERSION_1).await;
    let version = |db: &Path| -> i64 {
        rusqlite::Connection::open(db).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(version(&db), 1);
    let mut server = Launch::in_sandbox(sandbox.clone()).db(&db).start().await;
    assert_eq!(server.session("made").await["goal"], "made by aop");
    server.sigterm().await;
    assert!(version(&db) > 1, "migrated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_database_is_refused_not_served() {
    let mut server = TestServer::start().await;
    let evs: Vec<Value> =
        (1..=200).map(|i| event("c", i, "cognition.thought", json!({"pad": "z".repeat(500)}))).collect();
    server.import(&evs).await;
    server.sigterm().await;

    // Scribble over everything after the 100-byte header: the schema and the data are gone.
    let db = server.db_path();
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "a database of {} bytes", bytes.len());
    for b in &mut bytes[100..8192] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();

    let done = server.sibling().db(&db).run().await;
    done.assert_code(4);
    assert!(!done.stderr.contains("panicked"), "{}", done.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_collector_on_the_same_database_is_refused() {
    let first = TestServer::start().await;
    let done = first.sibling().run().await;

    done.assert_code(4);
    assert!(done.stderr.contains("in use"), "{}", done.output());
    assert!(done.stderr.contains(&first.db_path().display().to_string()), "{}", done.output());
    // The first one is unharmed.
    first.ingest(&[event("still", 1, "session.started", json!({}))]).await;
    assert_eq!(first.session("still").await["event_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_everything_and_ids_never_go_back() {
    let mut server = TestServer::start().await;
    server
        .ingest(&[
            event("old", 1, "session.started", json!({"goal": "survive"})),
            event("old", 2, "operation.tool_end", json!({"tool": "t", "success": true, "token_spend_delta": 10})),
            event("kid", 1, "session.started", json!({})).parent("old"),
        ])
        .await;
    server.ingest(&(1..=3).map(|i| event("newest", i, "cognition.thought", json!({}))).collect::<Vec<_>>()).await;
    let mut all = server.stream("/stream?since=0").await;
    let max_id = all.events(6).await.last().unwrap().id();
    server.delete("/sessions/newest").await;

    let list = server.get_ok("/sessions").await;
    let old = server.get_ok("/sessions/old").await;
    let mut replay = server.stream("/stream?since=0").await;
    let frames = replay.events(3).await;
    drop((all, replay));

    server.restart().await;

    assert_eq!(server.get_ok("/sessions").await, list);
    assert_eq!(server.get_ok("/sessions/old").await, old);
    let mut replay = server.stream("/stream?since=0").await;
    assert_eq!(replay.events(3).await, frames, "the store's order and ids survive");

    // New events get ids past every id ever handed out, deleted ones included.
    server
        .ingest(&[event("old", 3, "operation.tool_end", json!({"tool": "t", "success": true, "token_spend_delta": 5}))])
        .await;
    let next = replay.message().await;
    assert!(next.id() > max_id, "id {} was handed out again (max before: {max_id})", next.id());
    // The session goes on where it was.
    let row = server.session("old").await;
    assert_eq!(
        (row["event_count"].clone(), row["total_tokens"].clone(), row["child_count"].clone()),
        (json!(3), json!(15), json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_db_the_database_goes_to_the_home_directory_privately() {
    let server = Launch::new().default_db().start().await;
    server.ingest(&[event("home", 1, "session.started", json!({}))]).await;
    let db = server.sandbox().home().join(".aop").join("events.db");
    assert!(db.exists(), "{} missing", db.display());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    assert_eq!(server.health().await["store"]["path"], db.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_comes_from_flags_then_environment_then_file_then_home() {
    let sandbox = Arc::new(Sandbox::new());
    let aop_home = sandbox.home().join(".aop");
    std::fs::create_dir_all(&aop_home).unwrap();
    std::fs::write(aop_home.join("config.toml"), "token = \"from-home\"\nstream_buffer = 32\n").unwrap();
    let file = sandbox.path().join("other.toml");
    std::fs::write(&file, "token = \"from-file\"\nallow_hosts = [\"file.lan\"]\n").unwrap();

    // ~/.aop/config.toml applies by default.
    let server = Launch::in_sandbox(sandbox.clone()).authenticate_with("from-home").start().await;
    assert_eq!(
        server.request(reqwest::Method::GET, "/sessions").send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.get_ok("/sessions").await["sessions"], json!([]));
    drop(server);

    // --config replaces it; a flag beats the file, and the environment beats the file.
    let server = Launch::in_sandbox(sandbox.clone())
        .args(["--config", file.to_str().unwrap(), "--allow-host", "flag.lan"])
        .env("AOP_TOKEN", "from-env")
        .authenticate_with("from-env")
        .start()
        .await;
    assert_eq!(server.get_ok("/sessions").await["sessions"], json!([]));
    let port = server.port();
    for (host, want) in [("flag.lan", StatusCode::OK), ("file.lan", StatusCode::MISDIRECTED_REQUEST)] {
        let resp = server
            .request(reqwest::Method::GET, "/health")
            .header("host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "Host {host}");
    }
    drop(server);

    // A typo in a file is an error that names it, not a silent default.
    let typo = sandbox.path().join("typo.toml");
    std::fs::write(&typo, "prot = 5000\n").unwrap();
    let done = Launch::in_sandbox(sandbox.clone()).args(["--config", typo.to_str().unwrap()]).run().await;
    done.assert_code(2);
    assert!(done.stderr.contains("prot"), "{}", done.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_help_names_every_flag() {
    let sandbox = Sandbox::new();
    let top = sandbox.run(&["--help"]).await;
    top.assert_code(0);
    assert!(top.stdout.contains("start"), "{}", top.output());

    let start = sandbox.run(&["start", "--help"]).await;
    start.assert_code(0);
    for flag in [
        "--port",
        "--host",
        "--db",
        "--token",
        "--durability",
        "--open",
        "--no-open",
        "--config",
        "--allow-host",
        "--cors-origin",
        "--queue-capacity",
        "--stream-buffer",
        "--stall-after",
        "--notify-max-age",
        "--public-url",
    ] {
        assert!(start.stdout.contains(flag), "`aop start --help` does not mention {flag}\n{}", start.output());
    }
    let notify = sandbox.run(&["notify", "test", "--help"]).await;
    notify.assert_code(0);
    assert!(notify.stdout.contains("--config"), "{}", notify.output());

    let bad = sandbox.run(&["start", "--no-such-flag"]).await;
    assert_eq!(bad.code(), 2, "{}", bad.output());
    let version = sandbox.run(&["--version"]).await;
    version.assert_code(0);
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", version.output());
}

/// A database URL this aop cannot use is refused, saying so, without echoing a password and
/// without taking the URL for a path (which would create a folder named `postgres:`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_url_is_refused_not_taken_for_a_path() {
    let sandbox = Arc::new(Sandbox::new());
    // A scheme aop does not store to, and PostgreSQL URLs it cannot use: refused before anything
    // is created, the password never repeated.
    for (url, code) in [
        ("mysql://root:s3cretpw@db.example/aop", 2),
        ("sqlite://events.db", 2),
        ("postgres://aop:s3cretpw@/aop", 2),
        ("postgres://aop:s3cretpw@db.invalid/aop", 4),
    ] {
        let done = Launch::in_sandbox(sandbox.clone()).db(url).run().await;
        done.assert_code(code);
        let scheme = url.split("://").next().unwrap();
        assert!(done.stderr.contains(&format!("{scheme}://")), "{}", done.output());
        assert!(!done.stderr.contains("s3cretpw") && !done.stdout.contains("s3cretpw"), "{}", done.output());
    }
    let entries: Vec<String> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e.contains(':')), "a URL was taken for a path: {entries:?}");
}

// ------------------------------------------------------- what looks like a PostgreSQL URL is one

/// The password of every URL below: it must appear in no output.
const URL_SECRET: &str = "pw-N0tShown";

/// Text that starts as a PostgreSQL URL does, in any case, but is not a well-formed one.
fn malformed_postgres_urls() -> Vec<String> {
    [
        "postgres:/user:{pw}@host/db",
        "postgres:user:{pw}@host/db",
        "POSTGRESQL:/user:{pw}@host/db",
        "postgresql:user:{pw}@db.example:5432/aop",
        "PostgreS://user:{pw}@host:notaport/db",
        "Postgres:///user:{pw}@host/db",
    ]
    .iter()
    .map(|u| u.replace("{pw}", URL_SECRET))
    .collect()
}

/// Every file and folder under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap_or(&path).display().to_string());
            if path.is_dir() {
                walk(&path, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Regression: `--db postgres:/user:pw@host/db` (one slash, or none) was a SQLite path, so the
/// collector started on a local file, showed the password in its banner and `/health`, and
/// created folders named after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_postgres_url_is_refused_from_every_source_without_its_password() {
    let sandbox = Arc::new(Sandbox::new());
    let file = sandbox.path().join("db.toml");
    for url in malformed_postgres_urls() {
        std::fs::write(&file, format!("db = {url:?}\n")).unwrap();
        let expected = tree(sandbox.path());
        let launches = [
            ("--db", Launch::in_sandbox(sandbox.clone()).db(&url)),
            ("AOP_DB", Launch::in_sandbox(sandbox.clone()).default_db().env("AOP_DB", &url)),
            (
                "the config file",
                Launch::in_sandbox(sandbox.clone()).default_db().args(["--config", file.to_str().unwrap()]),
            ),
        ];
        for (source, launch) in launches {
            let done = launch.env("AOP_LOG", "debug").run().await;
            let context = format!("{url} from {source}\n{}", done.output());
            done.assert_code(2);
            let scheme = url.split(':').next().unwrap();
            assert!(done.stderr.contains(&format!("--db {scheme}:")), "{context}");
            assert!(!done.stderr.contains(URL_SECRET) && !done.stdout.contains(URL_SECRET), "{context}");
            // The working directory is the sandbox, and HOME is in it.
            assert_eq!(tree(sandbox.path()), expected, "something was created: {context}");
        }
    }
}
