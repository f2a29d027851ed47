//! The Python clients of `tests/otel/`: a virtual environment holding the pinned OpenTelemetry
//! packages of `tests/otel/requirements.txt`, and helpers that run the scripts against a collector.
//!
//! The environment is `target/otel-venv`, made once per test run by the first test that needs it
//! (the others wait for it) and reused by later runs while the requirements and the interpreter
//! are the same. It is built beside its final place and renamed into it, so an interrupted build
//! never leaves a half-installed environment there. A failure to build it fails every test that
//! needs it, with pip's output: these tests are never skipped.

use super::PATIENCE;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The interpreter the environment is made from.
const BASE_PYTHON: &str = "python3";

fn otel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("otel")
}

/// Cargo's target directory (the parent of the one it gives integration tests for scratch files).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_owned()
}

/// The environment's interpreter, made on first use; panics with what went wrong (pip's output
/// included) if the environment cannot be made. Blocks: call it through [`venv_python`].
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_venv) {
        Ok(python) => python,
        Err(why) => panic!("the Python environment for the OpenTelemetry clients could not be made:\n{why}"),
    }
}

/// The environment's interpreter (see [`python`]), without blocking the test's runtime.
pub(crate) async fn venv_python() -> PathBuf {
    match tokio::task::spawn_blocking(|| python().to_owned()).await {
        Ok(python) => python,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs a command to its end, returning its combined output, or an error naming it with that output.
fn run_to_end(mut cmd: Command, what: &str) -> Result<String, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what} failed ({}): {cmd:?}\n{text}", out.status))
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let requirements = otel_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let identify = Command::new(BASE_PYTHON)
        .args(["-c", "import sys; print(sys.executable, sys.version)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {BASE_PYTHON}: {e}"))?;
    if !identify.status.success() {
        return Err(format!(
            "{BASE_PYTHON} -c ...: {}\n{}",
            identify.status,
            String::from_utf8_lossy(&identify.stderr)
        ));
    }
    // The stamp says what the environment holds: reuse it only for the same interpreter and list.
    let stamp = format!("{}{wanted}", String::from_utf8_lossy(&identify.stdout));

    let venv = target_dir().join("otel-venv");
    let python = venv.join("bin").join("python");
    let stamp_of = |dir: &Path| std::fs::read_to_string(dir.join("aop-requirements.stamp")).ok();
    if python.exists() && stamp_of(&venv).as_deref() == Some(stamp.as_str()) {
        return Ok(python);
    }

    let building = target_dir().join(format!("otel-venv.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let mut create = Command::new(BASE_PYTHON);
    create.args(["-m", "venv"]).arg(&building);
    run_to_end(create, "python3 -m venv (on Debian, `apt-get install python3-venv` provides it)")?;
    let mut install = Command::new(building.join("bin").join("python"));
    install.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r"]).arg(&requirements);
    if let Err(why) = run_to_end(install, "pip install -r tests/otel/requirements.txt") {
        let _ = std::fs::remove_dir_all(&building);
        return Err(why);
    }
    std::fs::write(building.join("aop-requirements.stamp"), &stamp).map_err(|e| format!("writing the stamp: {e}"))?;

    // Replace a stale environment; if another test run finished the same one first, use it.
    if venv.exists() && stamp_of(&venv).as_deref() != Some(stamp.as_str()) {
        std::fs::remove_dir_all(&venv).map_err(|e| format!("removing the stale {}: {e}", venv.display()))?;
    }
    if let Err(e) = std::fs::rename(&building, &venv) {
        let _ = std::fs::remove_dir_all(&building);
        if stamp_of(&venv).as_deref() != Some(stamp.as_str()) {
            return Err(format!("moving the new environment to {}: {e}", venv.display()));
        }
    }
    Ok(python)
}

/// The environment a client script runs in: the caller's, without anything that would point the
/// clients somewhere else (OpenTelemetry, OpenAI and instrumentation settings, HTTP proxies), and
/// without writing `__pycache__` into the source tree.
fn scrubbed(mut cmd: Command) -> Command {
    const PREFIXES: [&str; 5] = ["OTEL_", "OPENAI_", "TRACELOOP_", "OPENINFERENCE_", "GRPC_"];
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        let upper = key_text.to_ascii_uppercase();
        if PREFIXES.iter().any(|p| upper.starts_with(p)) || upper.ends_with("_PROXY") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null());
    cmd
}

/// What a client script printed: its JSON summary (the last line on stdout) and everything else.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) summary: Value,
    pub(crate) output: String,
}

impl Ran {
    /// The summary's `trace_ids`.
    pub(crate) fn trace_ids(&self) -> Vec<String> {
        let ids = self.summary["trace_ids"].as_array().unwrap_or_else(|| panic!("no trace_ids\n{}", self.output));
        ids.iter().map(|t| t.as_str().expect("a trace id is a string").to_owned()).collect()
    }

    /// The summary's only trace id.
    pub(crate) fn trace_id(&self) -> String {
        let ids = self.trace_ids();
        assert_eq!(ids.len(), 1, "one trace expected\n{}", self.output);
        ids.into_iter().next().unwrap()
    }

    /// Whether the exporter reported every export a success.
    pub(crate) fn exported(&self) -> bool {
        self.summary["ok"] == Value::Bool(true)
    }
}

fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let into = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&into);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
    into
}

/// Runs `tests/otel/<script> <args>` in the environment, with `envs` added, and returns its
/// summary; panics with everything it printed if it fails, hangs or prints no JSON summary.
pub(crate) async fn run_script(script: &str, args: &[&str], envs: &[(&str, &str)]) -> Ran {
    run_python(&otel_dir().join(script), args, envs).await
}

/// Runs a Python script of the tests (any folder) in the environment, as [`run_script`] does.
pub(crate) async fn run_python(path: &Path, args: &[&str], envs: &[(&str, &str)]) -> Ran {
    let script = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let python = venv_python().await;
    let mut cmd = Command::new(&python);
    cmd.arg(path).args(args);
    let mut cmd = scrubbed(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let command = format!("{script} {}", args.join(" "));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let stdout = collect(child.stdout.take().expect("piped"));
    let stderr = collect(child.stderr.take().expect("piped"));
    // Exports time out after 10 s each; starting Python and importing gRPC takes a few more.
    let deadline = Instant::now() + PATIENCE * 4;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command} still running after {:?}\n{}\n{}",
                PATIENCE * 4,
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (stdout, stderr) = (stdout.lock().unwrap().clone(), stderr.lock().unwrap().clone());
    let output = format!("command: {command}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(status.success(), "{command} failed ({status})\n{output}");
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let summary = serde_json::from_str(last).unwrap_or_else(|e| panic!("no JSON summary ({e})\n{output}"));
    Ran { summary, output }
}

/// `tests/otel/fake_openai.py`: an OpenAI-compatible server on loopback, stopped when dropped.
pub(crate) struct FakeOpenAi {
    child: Child,
    /// Held open: the server stops when its stdin closes.
    stdin: Option<ChildStdin>,
    port: u16,
    /// What it wrote on stderr: a line per request.
    log: Arc<Mutex<String>>,
}

impl FakeOpenAi {
    pub(crate) async fn start() -> FakeOpenAi {
        let python = venv_python().await;
        let mut cmd = Command::new(&python);
        cmd.arg(otel_dir().join("fake_openai.py"));
        let mut cmd = scrubbed(cmd);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run fake_openai.py: {e}"));
        let stdin = child.stdin.take();
        let log = collect(child.stderr.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        });
        let line = tokio::time::timeout(PATIENCE, first_line)
            .await
            .unwrap_or_else(|_| panic!("fake_openai.py did not say its port in time\n{}", log.lock().unwrap()))
            .expect("reading its port");
        let port = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let port = port
            .unwrap_or_else(|| panic!("fake_openai.py printed {line:?} instead of its port\n{}", log.lock().unwrap()));
        FakeOpenAi { child, stdin, port, log }
    }

    /// The `base_url` for the `openai` client.
    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The requests it served so far, a line each.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
