//! The real `aop` binary, run in a sandbox: a temporary directory that holds its `HOME` and its
//! database, with an environment scrubbed of `AOP_*` so the machine's settings never leak in.

use super::sse::SseStream;
use super::{Metrics, PATIENCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_aop");

/// A temporary directory with a `home/` for `HOME` and a default database path.
pub(crate) struct Sandbox {
    dir: TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("aop-it-").tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("home")).expect("home directory");
        Sandbox { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The database every launch in this sandbox uses unless told otherwise.
    pub(crate) fn db(&self) -> PathBuf {
        self.dir.path().join("events.db")
    }

    /// `aop <args>` with `HOME` in the sandbox and no `AOP_*` or `RUST_LOG` from outside.
    pub(crate) fn command(&self, args: &[String], envs: &[(String, String)]) -> Command {
        self.command_of(Path::new(BIN), args, envs)
    }

    /// [`Sandbox::command`] running `program` (an installed copy of aop, a launcher of it).
    pub(crate) fn command_of(&self, program: &Path, args: &[String], envs: &[(String, String)]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(self.path())
            .env("HOME", self.home())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AOP_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `aop <args>` to completion (killing it after [`PATIENCE`]).
    pub(crate) async fn run(&self, args: &[&str]) -> Finished {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Proc::spawn(self.command(&args, &[]), &args).finish().await
    }
}

/// A process that ran to the end.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) command: String,
    pub(crate) status: ExitStatus,
    /// It started serving (and was then killed by the test).
    pub(crate) started: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// The exit code, which must exist (not killed by a signal).
    pub(crate) fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| panic!("{} ended by a signal\n{}", self.command, self.output()))
    }

    /// Asserts the exit code, printing everything the process said when it differs.
    pub(crate) fn assert_code(&self, want: i32) -> &Finished {
        assert!(!self.started, "it started serving instead of exiting with {want}\n{}", self.output());
        assert_eq!(self.status.code(), Some(want), "unexpected exit status {:?}\n{}", self.status, self.output());
        self
    }

    pub(crate) fn output(&self) -> String {
        format!("command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.command, self.stdout, self.stderr)
    }
}

/// A running child with its output collected by two threads (so its pipes never fill up).
struct Proc {
    child: Child,
    command: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    listening: Option<oneshot::Receiver<SocketAddr>>,
    /// It leads a process group of its own, killed as a whole on drop.
    group: bool,
}

fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>, mut on_line: impl FnMut(&str) + Send + 'static) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).into_owned();
            on_line(&text);
            into.lock().unwrap().push_str(&text);
            line.clear();
        }
    });
}

/// The address in a tracing line like `INFO aop: listening addr=127.0.0.1:4317`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening addr=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

impl Proc {
    fn spawn(mut cmd: Command, args: &[String]) -> Proc {
        let command = format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = oneshot::channel();
        collect(child.stdout.take().expect("piped"), Arc::clone(&stdout), |_| {});
        let mut tx = Some(tx);
        collect(child.stderr.take().expect("piped"), Arc::clone(&stderr), move |line| {
            if let Some(addr) = listening_addr(line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
        });
        Proc { child, command, stdout, stderr, listening: Some(rx), group: false }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn output(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits for the exit, up to `limit`; `None` if it is still running.
    async fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs to the end (or is killed after [`PATIENCE`]); the output pipes are read to their end.
    /// A collector that starts serving is stopped at once (SIGKILL) and reported as `started`.
    async fn finish(mut self) -> Finished {
        let mut listening = self.listening.take();
        let deadline = Instant::now() + PATIENCE;
        let mut started = false;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if listening.as_mut().is_some_and(|rx| rx.try_recv().is_ok()) {
                started = true;
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {PATIENCE:?}\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The reader threads see EOF right after the exit; give them a moment to append.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Finished {
            command: self.command.clone(),
            status,
            started,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            // The group (its id is the leader's pid) may outlive its leader: a launcher's child.
            let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// How to start `aop start`: the sandbox, the port, the database, extra flags and environment.
#[derive(Clone)]
pub(crate) struct Launch {
    sandbox: Arc<Sandbox>,
    port: u16,
    /// `None`: no `--db` flag, so the collector picks its default place.
    db: Option<PathBuf>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer` by the typed helpers.
    token: Option<String>,
    /// What to run instead of the build's binary (see [`Launch::program`]).
    program: Option<PathBuf>,
}

impl Launch {
    pub(crate) fn new() -> Launch {
        Launch::in_sandbox(Arc::new(Sandbox::new()))
    }

    pub(crate) fn in_sandbox(sandbox: Arc<Sandbox>) -> Launch {
        Launch {
            db: Some(sandbox.db()),
            sandbox,
            port: 0,
            args: Vec::new(),
            envs: Vec::new(),
            token: None,
            program: None,
        }
    }

    pub(crate) fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    pub(crate) fn port(mut self, port: u16) -> Launch {
        self.port = port;
        self
    }

    pub(crate) fn db(mut self, db: impl Into<PathBuf>) -> Launch {
        self.db = Some(db.into());
        self
    }

    /// No `--db`: the collector uses `~/.aop/events.db` (in the sandbox's home).
    pub(crate) fn default_db(mut self) -> Launch {
        self.db = None;
        self
    }

    /// The database this launch uses.
    pub(crate) fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| self.sandbox.home().join(".aop").join("events.db"))
    }

    /// Extra flags after `start --port … --db … --no-open`.
    pub(crate) fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Launch {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `program` (an installed aop, or a launcher that runs one) instead of the build's binary,
    /// in a process group of its own, killed as a whole if the test ends with it running: a
    /// launcher's child must not outlive a failed test.
    pub(crate) fn program(mut self, program: impl Into<PathBuf>) -> Launch {
        self.program = Some(program.into());
        self
    }

    /// `--token <token>`, and the helpers authenticate with it.
    pub(crate) fn token(mut self, token: &str) -> Launch {
        self.token = Some(token.to_owned());
        self.args(["--token", token])
    }

    /// The helpers authenticate with this token (configured some other way).
    pub(crate) fn authenticate_with(mut self, token: &str) -> Launch {
        self.token = Some(token.to_owned());
        self
    }

    fn argv(&self) -> Vec<String> {
        let mut argv = vec!["start".to_owned(), "--port".to_owned(), self.port.to_string(), "--no-open".to_owned()];
        if let Some(db) = &self.db {
            argv.extend(["--db".to_owned(), db.display().to_string()]);
        }
        argv.extend(self.args.iter().cloned());
        argv
    }

    fn spawn(&self) -> Proc {
        let argv = self.argv();
        match &self.program {
            None => Proc::spawn(self.sandbox.command(&argv, &self.envs), &argv),
            Some(program) => {
                let mut cmd = self.sandbox.command_of(program, &argv, &self.envs);
                std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                let mut proc = Proc::spawn(cmd, &argv);
                proc.group = true;
                proc
            }
        }
    }

    /// Starts the collector and waits for its `listening addr=` line; panics with the command
    /// and everything it printed if it does not get there.
    pub(crate) async fn start(self) -> TestServer {
        let (proc, addr) = self.start_proc().await;
        TestServer::new(self, proc, addr)
    }

    async fn start_proc(&self) -> (Proc, SocketAddr) {
        let mut proc = self.spawn();
        let rx = proc.listening.take().expect("fresh process");
        match tokio::time::timeout(PATIENCE, rx).await {
            Ok(Ok(addr)) => (proc, addr),
            _ => {
                let status = proc.wait_for(Duration::from_millis(500)).await;
                panic!("aop did not start (exit status {status:?})\n{}", proc.output());
            }
        }
    }

    /// Runs `aop start` expecting it to exit by itself (a refused configuration, a busy port…).
    pub(crate) async fn run(self) -> Finished {
        self.spawn().finish().await
    }
}

impl Default for Launch {
    fn default() -> Self {
        Launch::new()
    }
}

/// A running collector and typed helpers for its HTTP API.
pub(crate) struct TestServer {
    launch: Launch,
    proc: Proc,
    addr: SocketAddr,
    client: Client,
    /// No overall timeout: for `/stream`, which never ends by itself.
    streaming: Client,
}

impl TestServer {
    /// A collector with default settings in a fresh sandbox.
    pub(crate) async fn start() -> TestServer {
        Launch::new().start().await
    }

    fn new(launch: Launch, proc: Proc, addr: SocketAddr) -> TestServer {
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let streaming = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        TestServer { launch, proc, addr, client, streaming }
    }

    /// Where to connect: the bound address, with the unspecified address replaced by loopback.
    pub(crate) fn addr(&self) -> SocketAddr {
        if self.addr.ip().is_unspecified() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.addr.port()))
        } else {
            self.addr
        }
    }

    /// The address as the collector logged it.
    pub(crate) fn bound_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub(crate) fn db_path(&self) -> PathBuf {
        self.launch.db_path()
    }

    pub(crate) fn sandbox(&self) -> &Arc<Sandbox> {
        &self.launch.sandbox
    }

    /// A launch in the same sandbox with default flags (for a second process).
    pub(crate) fn sibling(&self) -> Launch {
        Launch::in_sandbox(Arc::clone(&self.launch.sandbox))
    }

    pub(crate) fn pid(&self) -> Pid {
        self.proc.pid()
    }

    /// Everything the collector printed on stdout so far.
    pub(crate) fn stdout(&self) -> String {
        self.proc.stdout.lock().unwrap().clone()
    }

    /// Everything the collector printed on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.proc.stderr.lock().unwrap().clone()
    }

    pub(crate) fn output(&self) -> String {
        self.proc.output()
    }

    // ------------------------------------------------------------------ process control

    /// Kills the collector without warning and waits until it is gone.
    pub(crate) async fn sigkill(&mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        let status = self.proc.wait_for(PATIENCE).await;
        assert!(status.is_some(), "still running after SIGKILL");
    }

    /// Sends `signal` and waits up to `limit` for the exit: the status, or `None` if still running.
    pub(crate) async fn signal_and_wait(&mut self, signal: Signal, limit: Duration) -> Option<ExitStatus> {
        kill(self.pid(), signal).expect("kill");
        self.proc.wait_for(limit).await
    }

    /// SIGTERM, and the collector must exit with 0 (within [`PATIENCE`]).
    pub(crate) async fn sigterm(&mut self) {
        let status = self.signal_and_wait(Signal::SIGTERM, PATIENCE).await;
        assert!(status.is_some_and(|s| s.code() == Some(0)), "SIGTERM: exit status {status:?}\n{}", self.output());
    }

    /// Starts the collector again on the same database with the same flags (after it stopped).
    pub(crate) async fn start_again(&mut self) {
        let (proc, addr) = self.launch.start_proc().await;
        // The old process is gone; dropping its handle reaps nothing new.
        self.proc = proc;
        self.addr = addr;
    }

    /// A clean stop (SIGTERM, exit 0) and a start on the same database.
    pub(crate) async fn restart(&mut self) {
        self.sigterm().await;
        self.start_again().await;
    }

    // ------------------------------------------------------------------------ requests

    /// A request without any credentials: for tests of the guard itself.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the launch's token, if any.
    pub(crate) fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.request(method, path);
        match &self.launch.token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    /// Sends and reads the answer as JSON (which every API answer must be).
    pub(crate) async fn send_json(req: RequestBuilder) -> (StatusCode, HeaderMap, Value) {
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text:?}"));
        (status, headers, json)
    }

    pub(crate) async fn post_event(&self, ev: &Value) -> (StatusCode, Value) {
        self.post_body(Some("application/json"), ev.to_string()).await
    }

    /// `POST /events` with this body and content type (none: no header at all).
    pub(crate) async fn post_body(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.authed(Method::POST, "/events").body(body);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let (status, _, json) = Self::send_json(req).await;
        (status, json)
    }

    /// A batch as a JSON array.
    pub(crate) async fn post_batch(&self, events: &[Value]) -> (StatusCode, Value) {
        self.post_body(Some("application/json"), Value::Array(events.to_vec()).to_string()).await
    }

    /// A batch as `application/x-ndjson`.
    pub(crate) async fn post_ndjson(&self, body: impl Into<String>) -> (StatusCode, Value) {
        self.post_body(Some("application/x-ndjson"), body.into()).await
    }

    /// Posts each event on its own; every one must be answered exactly `{"ok": true}`.
    pub(crate) async fn ingest(&self, events: &[Value]) {
        for ev in events {
            let (status, body) = self.post_event(ev).await;
            assert_eq!((status, &body), (StatusCode::OK, &serde_json::json!({"ok": true})), "posting {ev}");
        }
    }

    /// Posts one event, which must be answered exactly `{"ok": true}`.
    pub(crate) async fn ingest_one(&self, ev: &Value) {
        self.ingest(std::slice::from_ref(ev)).await;
    }

    /// Posts the events as one NDJSON batch; every one must be accepted.
    pub(crate) async fn import(&self, events: &[Value]) {
        let (status, body) = self.post_ndjson(super::ndjson(events)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["accepted"], events.len(), "{body}");
    }

    pub(crate) async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, json) = Self::send_json(self.authed(Method::GET, path)).await;
        (status, json)
    }

    /// `GET path`, which must answer 200 with JSON.
    pub(crate) async fn get_ok(&self, path: &str) -> Value {
        let (status, json) = self.get_json(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {json}");
        json
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.authed(Method::GET, path).send().await.expect("request failed")
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, json) = Self::send_json(self.authed(Method::DELETE, path)).await;
        (status, json)
    }

    /// `GET /sessions?<query>`'s rows.
    pub(crate) async fn sessions(&self, query: &str) -> Vec<Value> {
        let body = self.get_ok(&format!("/sessions?{query}")).await;
        body["sessions"].as_array().expect("sessions").clone()
    }

    /// The ids of `GET /sessions?<query>`, in order.
    pub(crate) async fn session_ids(&self, query: &str) -> Vec<String> {
        self.sessions(query).await.iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
    }

    /// The `session` object of `GET /sessions/:id`.
    pub(crate) async fn session(&self, id: &str) -> Value {
        self.get_ok(&format!("/sessions/{id}")).await["session"].clone()
    }

    /// Every event of a session, following `next_after` from page to page.
    pub(crate) async fn events(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = format!("/sessions/{id}?limit=10000");
        loop {
            let page = self.get_ok(&path).await;
            out.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_after"].as_i64() {
                Some(after) => path = format!("/sessions/{id}?limit=10000&after={after}"),
                None => return out,
            }
        }
    }

    pub(crate) async fn health(&self) -> Value {
        let (status, _, json) = Self::send_json(self.request(Method::GET, "/health")).await;
        assert_eq!(status, StatusCode::OK, "/health: {json}");
        json
    }

    pub(crate) async fn metrics(&self) -> Metrics {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status(), StatusCode::OK);
        Metrics::parse(&resp.text().await.expect("body"))
    }

    /// Opens `GET path` (e.g. `/stream?type=operation.*`) and reads its first frame, the
    /// `: connected` comment, so the subscription exists when this returns.
    pub(crate) async fn stream(&self, path: &str) -> SseStream {
        self.stream_with(path, &[]).await
    }

    pub(crate) async fn stream_with(&self, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut stream = self.open_stream(path, headers).await;
        assert_eq!(stream.status, StatusCode::OK, "GET {path}");
        let first = stream.frame().await;
        assert_eq!(first.comments, vec!["connected".to_owned()], "the first frame of a stream: {first:?}");
        stream
    }

    /// Opens a stream without reading anything from it.
    pub(crate) async fn open_stream(&self, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut req = self.streaming.get(self.url(path));
        if let Some(t) = &self.launch.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        SseStream::new(req.send().await.expect("GET stream"))
    }
}
