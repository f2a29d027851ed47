//! The real coding-agent CLIs, Claude Code and Codex, run headless and offline against the binary
//! under test: [`AgentRun`] says what to run, [`Ran`] is what came back.
//!
//! Each run is `tests/otel/run_agent.py` under `unshare -n`, a network namespace with only
//! loopback, so nothing the CLIs do can leave the machine: the driver starts
//! `tests/otel/fake_models.py` (a scripted Anthropic / OpenAI Responses server) and `aop start`,
//! runs the CLI against them, waits for its final telemetry flush, reads back what aop stored
//! and prints it as one JSON object.
//!
//! The CLIs come from the npm registry at pinned versions, installed once into
//! `target/agents-<package>-<version>` (built beside it and renamed into place) and reused while
//! the version is the same. Both packages ship native binaries; Node.js is only npm's.
//!
//! A new network namespace needs root (or `CAP_SYS_ADMIN`). Where `unshare -n` is refused, a test
//! prints why and passes, except when `CI` is set: then it fails.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// `@anthropic-ai/claude-code` on npm.
pub(crate) const CLAUDE_CODE_VERSION: &str = "2.1.328";
/// `@openai/codex` on npm.
pub(crate) const CODEX_VERSION: &str = "0.169.0";

/// The prompts `run_agent.py` gives each scenario.
pub(crate) const BASIC_PROMPT: &str = "List the files, read README.md, then try a command that fails.";
/// The command `fake_models.py` has the agent run and fail in the `basic` scenario.
pub(crate) const FAILING_COMMAND: &str = "cat /nonexistent-fake-models-file";
/// The command `fake_models.py` has the agent run five times in the `loop` scenario.
pub(crate) const LOOP_COMMAND: &str = "ls -1";

fn otel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("otel")
}

fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_owned()
}

fn said(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether this process may make a network namespace: `None` if so, else why not.
fn isolation_refused() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| match Command::new("unshare").args(["-n", "true"]).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`unshare -n true` failed ({}): {} (a network namespace needs root)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `unshare` (util-linux): {e}")),
    })
    .as_deref()
}

/// An npm package installed once into `target/agents-<name>-<version>` and its executable, which
/// `usable` finds and checks; panics with npm's output if the install fails or does not run.
pub(crate) fn npm_install(package: &str, version: &str, usable: impl Fn(&Path) -> Result<PathBuf, String>) -> PathBuf {
    let name = package.trim_start_matches('@').replace('/', "-");
    let prefix = target_dir().join(format!("agents-{name}-{version}"));
    if let Ok(bin) = usable(&prefix) {
        return bin;
    }
    let building = target_dir().join(format!("agents-{name}-{version}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).expect("the install folder");
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&building)
        .arg(format!("{package}@{version}"))
        .env("npm_config_update_notifier", "false")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run npm (Debian: apt-get install npm): {e}"));
    assert!(out.status.success(), "npm install {package}@{version} failed: {}\n{}", out.status, said(&out));
    let bin = usable(&building)
        .unwrap_or_else(|why| panic!("npm installed {package}@{version} but it does not run: {why}\n{}", said(&out)));
    // Another test run may have won the race, or a broken copy may be in the way.
    let _ = std::fs::remove_dir_all(&prefix);
    if std::fs::rename(&building, &prefix).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    usable(&prefix).unwrap_or(bin)
}

/// `program --version`, which must name `version`; run without a network, as every run is.
fn answers_version(program: &Path, version: &str) -> Result<PathBuf, String> {
    let out = Command::new("unshare")
        .arg("-n")
        .arg(program)
        .arg("--version")
        .env("DISABLE_AUTOUPDATER", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains(version) {
        Ok(program.to_owned())
    } else {
        Err(format!(
            "{} --version: {} {text:?} {:?}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// npm's name for this machine's architecture.
fn npm_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "x64",
    }
}

/// The `claude` executable. The package's postinstall script links `bin/claude.exe` to the native
/// binary of the platform's optional package; npm 11 warns that install scripts are "not covered
/// by allowScripts" and runs them today. If a later npm skips it, the platform package's binary is
/// the same program.
fn claude() -> &'static Path {
    static CLAUDE: OnceLock<PathBuf> = OnceLock::new();
    CLAUDE.get_or_init(|| {
        npm_install("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION, |prefix| {
            let modules = prefix.join("node_modules");
            answers_version(&modules.join(".bin/claude"), CLAUDE_CODE_VERSION).or_else(|why| {
                let native = modules.join(format!("@anthropic-ai/claude-code-linux-{}/claude", npm_arch()));
                answers_version(&native, CLAUDE_CODE_VERSION).map_err(|also| format!("{why}; {also}"))
            })
        })
    })
}

/// The native `codex` executable (the package's `bin/codex.js` only finds and runs it, with Node).
fn codex() -> &'static Path {
    static CODEX: OnceLock<PathBuf> = OnceLock::new();
    CODEX.get_or_init(|| {
        npm_install("@openai/codex", CODEX_VERSION, |prefix| {
            let triple = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
            let native = prefix
                .join("node_modules/@openai")
                .join(format!("codex-linux-{}", npm_arch()))
                .join("vendor")
                .join(&triple)
                .join("bin/codex");
            answers_version(&native, CODEX_VERSION)
        })
    })
}

/// Which CLI a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cli {
    ClaudeCode,
    Codex,
}

/// One run of a CLI: the scenario the fake model plays, how the telemetry is sent, and Claude
/// Code's settings. (The driver also passes more arguments to `claude` and `aop start` and more
/// variables to the CLI: `run_agent.py --help`.)
#[derive(Debug)]
pub(crate) struct AgentRun {
    cli: Cli,
    scenario: String,
    protocol: String,
    traces: bool,
    settings: Option<PathBuf>,
    keep_store: Option<PathBuf>,
    seed: Option<PathBuf>,
    mcp: Option<Mcp>,
}

/// How a CLI is made to reach aop's MCP server, each as the README's block for it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mcp {
    /// Claude Code: the README's `claude mcp add --transport http …` line, run in the throwaway home.
    Http,
    /// Claude Code: the README's `.mcp.json` in the project; Codex: its `[mcp_servers.aop]` table.
    /// Either way `aop mcp`, the binary under test, started by the CLI.
    Stdio,
}

impl AgentRun {
    /// Claude Code, exporting logs and metrics over `protocol` (`grpc`, `http/protobuf`,
    /// `http/json`), spans too with [`AgentRun::traces`].
    pub(crate) fn claude(scenario: &str, protocol: &str) -> AgentRun {
        AgentRun::new(Cli::ClaudeCode, scenario, protocol)
    }

    /// Codex, exporting logs and metrics with its otlp-http exporter in `protocol` (`json` or
    /// `binary`), spans too with [`AgentRun::traces`].
    pub(crate) fn codex(scenario: &str, protocol: &str) -> AgentRun {
        AgentRun::new(Cli::Codex, scenario, protocol)
    }

    fn new(cli: Cli, scenario: &str, protocol: &str) -> AgentRun {
        AgentRun {
            cli,
            scenario: scenario.to_owned(),
            protocol: protocol.to_owned(),
            traces: false,
            settings: None,
            keep_store: None,
            seed: None,
            mcp: None,
        }
    }

    pub(crate) fn traces(mut self, on: bool) -> AgentRun {
        self.traces = on;
        self
    }

    /// Claude Code's `--settings` file (hooks, for one). The driver replaces `@AOP_URL@`,
    /// `@AOP_PORT@`, `@MODEL_URL@` and `@WORK@` (the run's folder) in it first.
    pub(crate) fn settings(mut self, file: &Path) -> AgentRun {
        self.settings = Some(file.to_owned());
        self
    }

    /// Keeps what aop stored: its SQLite database is copied to `file` once aop has stopped, for
    /// a collector of the test's own to serve (`aop start --db file`).
    pub(crate) fn keep_store(mut self, file: &Path) -> AgentRun {
        self.keep_store = Some(file.to_owned());
        self
    }

    /// Events (NDJSON) posted to aop's `/events` before the CLI starts: runs for it to ask about.
    pub(crate) fn seed(mut self, ndjson: &Path) -> AgentRun {
        self.seed = Some(ndjson.to_owned());
        self
    }

    /// aop as an MCP server of the CLI, configured with the README's block for `how`. aop then
    /// listens where that block says (its default address, free in the run's namespace), `aop` is
    /// on the CLI's PATH, and Claude Code gets the tools the README's `claude -p` line allows.
    pub(crate) fn mcp(mut self, how: Mcp) -> AgentRun {
        self.mcp = Some(how);
        self
    }

    /// Runs it: `None` (after printing why) when network namespaces are refused and `CI` is not set.
    /// Panics with the driver's output if the run cannot be made (the CLI timed out, aop did not
    /// start, the install failed); the CLI's own failure is in [`Ran::exit_code`].
    pub(crate) async fn run(self) -> Option<Ran> {
        if let Some(why) = isolation_refused() {
            assert!(std::env::var_os("CI").is_none(), "the coding-agent tests need network namespaces under CI: {why}");
            eprintln!("skipped: the coding-agent CLIs run only inside a loopback-only network namespace, and {why}");
            return None;
        }
        let done = tokio::task::spawn_blocking(move || self.run_blocking()).await;
        match done {
            Ok(ran) => Some(ran),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn run_blocking(self) -> Ran {
        let (cli, program) = match self.cli {
            Cli::ClaudeCode => ("claude", claude()),
            Cli::Codex => ("codex", codex()),
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "python3"])
            .arg(otel_dir().join("run_agent.py"))
            .args(["--cli", cli, "--scenario", &self.scenario, "--protocol", &self.protocol])
            .arg(if self.traces { "--traces" } else { "--no-traces" })
            .arg("--aop")
            .arg(env!("CARGO_BIN_EXE_aop"))
            .arg(format!("--{cli}"))
            .arg(program);
        if let Some(settings) = &self.settings {
            cmd.arg("--settings").arg(settings);
        }
        if let Some(store) = &self.keep_store {
            cmd.arg("--keep-store").arg(store);
        }
        if let Some(seed) = &self.seed {
            cmd.arg("--seed").arg(seed);
        }
        match self.mcp {
            Some(Mcp::Http) => cmd.args(["--mcp", "http"]),
            Some(Mcp::Stdio) => cmd.args(["--mcp", "stdio"]),
            None => &mut cmd,
        };
        cmd.env("PYTHONDONTWRITEBYTECODE", "1").stdin(Stdio::null());
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{self:?}: run_agent.py failed ({})\n{}", out.status, said(&out));
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("run_agent.py printed no JSON object ({e})\n{}", said(&out)));
        Ran { json, driver_stderr: stderr }
    }
}

/// What one run gave: the CLI's exit and output, the model's requests, what aop stored.
#[derive(Debug)]
pub(crate) struct Ran {
    /// The driver's object, whole (`run_agent.py` documents it).
    pub(crate) json: Value,
    /// The driver's own stderr (the fake model server's and aop's logs are in their files).
    pub(crate) driver_stderr: String,
}

impl Ran {
    pub(crate) fn exit_code(&self) -> i64 {
        self.json["exit_code"].as_i64().unwrap_or(-1)
    }

    /// The CLI's stdout, parsed: Claude Code's result object, or Codex's list of `--json` events.
    pub(crate) fn stdout(&self) -> &Value {
        &self.json["stdout"]
    }

    /// Every request the fake model server got, in order.
    pub(crate) fn model_requests(&self) -> &[Value] {
        self.json["model_requests"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// aop's session rows.
    pub(crate) fn sessions(&self) -> &[Value] {
        self.json["aop"]["sessions"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// A session's events, in order.
    pub(crate) fn events(&self, session: &str) -> &[Value] {
        self.json["aop"]["events"][session].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// Every stored event of every session.
    pub(crate) fn all_events(&self) -> impl Iterator<Item = &Value> {
        self.json["aop"]["events"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|v| v.as_array().map(Vec::as_slice).unwrap_or_default())
    }

    /// The `otel.log` events (one per log record), from every session.
    pub(crate) fn logs(&self) -> Vec<&Value> {
        self.all_events().filter(|e| e["type"] == "otel.log").collect()
    }

    /// The `otel.log` events named `name`.
    pub(crate) fn logs_named(&self, name: &str) -> Vec<&Value> {
        self.logs().into_iter().filter(|e| e["payload"]["name"] == name).collect()
    }

    /// How many stored events there are of each kind: `otel.log` by record name
    /// (`otel.log:user_prompt`), the others by type.
    pub(crate) fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in self.all_events() {
            let kind = match (e["type"].as_str(), e["payload"]["name"].as_str()) {
                (Some("otel.log"), Some(name)) => format!("otel.log:{name}"),
                (Some(kind), _) => kind.to_owned(),
                _ => "?".to_owned(),
            };
            *counts.entry(kind).or_default() += 1;
        }
        counts
    }

    pub(crate) fn alerts(&self) -> &[Value] {
        self.json["aop"]["alerts"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// A series of aop's `/metrics` (0 if absent).
    pub(crate) fn metric(&self, series: &str) -> f64 {
        self.json["aop"]["metrics"][series].as_f64().unwrap_or(0.0)
    }

    /// What the run was and took, and what aop stored of it, for the test's output.
    pub(crate) fn describe(&self) -> String {
        let j = &self.json;
        let mut text = format!(
            "{} {} scenario={} protocol={} traces={}: exit {} in {} s (aop's flush wait {} s); {} model requests; \
             {} sessions; {} alerts; records accepted {} rejected {}, spans accepted {} rejected {}; aop exit {}\n",
            j["cli"].as_str().unwrap_or("?"),
            j["version"].as_str().unwrap_or("?"),
            j["scenario"].as_str().unwrap_or("?"),
            j["protocol"].as_str().unwrap_or("?"),
            j["traces"],
            j["exit_code"],
            j["seconds"],
            j["aop"]["flush_seconds"],
            self.model_requests().len(),
            self.sessions().len(),
            self.alerts().len(),
            self.metric("aop_otlp_log_records_accepted_total"),
            self.metric("aop_otlp_log_records_rejected_total"),
            self.metric("aop_otlp_spans_accepted_total"),
            self.metric("aop_otlp_spans_rejected_total"),
            j["aop"]["exit_code"],
        );
        for (kind, n) in self.counts() {
            text.push_str(&format!("  {n:4}  {kind}\n"));
        }
        text
    }

    /// Everything the CLI printed, for a failing assertion's message.
    pub(crate) fn output(&self) -> String {
        format!(
            "--- the CLI's stdout ---\n{}\n--- the CLI's stderr ---\n{}\n--- the driver's stderr ---\n{}\n--- aop's stderr ---\n{}",
            self.json["stdout"],
            self.json["stderr"].as_str().unwrap_or_default(),
            self.driver_stderr,
            self.json["aop"]["stderr"].as_str().unwrap_or_default(),
        )
    }
}
