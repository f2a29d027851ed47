//! The command line: `aop start`, `aop detect`, `aop diff`, `aop copy`, `aop demo` and `aop bench`, and how
//! settings are layered from flags, environment, the config file and defaults.

use crate::config::{self, Config, OpenBrowser};
use crate::detect::DetectConfig;
use crate::store::sqlite::Durability;
use crate::store::Location;
use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// What `aop --version` prints after the name: the crate's version and the commit it was built
/// from (`unknown` when built without git or a packaged record of it; see `build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("AOP_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "aop",
    version = VERSION,
    about = "A local collector for the Agent Observability Protocol: watch AI agents think and act, live, and find out afterwards why a run went wrong."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the collector: ingest on POST /events, live stream, sessions API and dashboard on one port.
    Start(StartArgs),
    /// Run the anomaly detectors over an exported session (JSONL; `-` for stdin) and print the alerts.
    Detect(DetectFileArgs),
    /// Compare two runs step by step (exported files or session ids on a collector): where they part, and what each cost.
    Diff(DiffArgs),
    /// Copy every session's events from one database to another (SQLite file or PostgreSQL), e.g. a laptop's history to a fleet's database.
    Copy(CopyArgs),
    /// Run simulated agents against a collector, so the dashboard comes alive (one loop and one confidence drop on purpose).
    Demo(crate::demo::DemoArgs),
    /// Drive a running collector with realistic load and print throughput, latency and resource figures.
    Bench(crate::bench::BenchArgs),
    /// Print the settings that send an agent's hook events to a collector (`aop hooks claude-code >> …` into .claude/settings.json's "hooks").
    Hooks(HooksArgs),
    /// Print a shell completion script, e.g. `aop completions bash > ~/.local/share/bash-completion/completions/aop`.
    Completions(CompletionsArgs),
    /// Alert notifications: `aop notify test` sends a sample alert to every [[notify]] target of the config file.
    Notify(NotifyArgs),
    /// Serve MCP over stdin/stdout for an agent or IDE (Claude Code, Cursor, Codex, Claude Desktop): tools that ask a running collector about runs.
    Mcp(McpArgs),
}

/// `aop mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// The collector the tools ask.
    #[arg(long, env = "AOP_URL", default_value = "http://127.0.0.1:4317")]
    pub url: String,
    /// The collector's access token, when it requires one.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Offer the stop_session tool (the operator's stop of a run).
    #[arg(long, env = "AOP_MCP_ALLOW_STOP")]
    pub mcp_allow_stop: bool,
}

/// `aop notify …`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    #[command(subcommand)]
    pub command: NotifyCommand,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a sample alert to every [[notify]] target and print how each took it (exit 1 if any failed).
    Test(NotifyTestArgs),
}

#[derive(Debug, Args)]
pub struct NotifyTestArgs {
    /// TOML config file whose [[notify]] targets to try, as `aop start` reads it. [default: ~/.aop/config.toml if it exists]
    #[arg(long, env = "AOP_CONFIG")]
    pub config: Option<PathBuf>,
}

impl NotifyTestArgs {
    /// The settings `aop start` would run with, from the same file and environment.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let mut argv = vec!["aop".into(), "start".into()];
        if let Some(path) = self.config {
            argv.extend(["--config".into(), path.into_os_string()]);
        }
        let matches = <Cli as clap::CommandFactory>::command().try_get_matches_from(argv)?;
        let sub = matches.subcommand_matches("start").context("the start command")?;
        <StartArgs as clap::FromArgMatches>::from_arg_matches(sub)?.resolve(sub)
    }
}

/// `aop hooks <agent>`.
#[derive(Debug, Args)]
pub struct HooksArgs {
    /// The agent whose hooks to wire.
    #[arg(value_enum)]
    pub agent: HookAgent,
    /// The collector the hooks post to.
    #[arg(long, env = "AOP_URL", default_value = "http://127.0.0.1:4317")]
    pub url: String,
    /// The collector's access token, written into the settings as the hooks' Authorization header.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookAgent {
    /// Claude Code: every hook event to `POST /hooks/claude-code`; PreToolUse answered by the guard.
    ClaudeCode,
}

/// `aop completions <shell>`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `aop start`'s settings, each defined once, here: clap reads the flag and its `AOP_*` variable,
/// the field's name is its key in the TOML config file, and its default is the one `--help`
/// shows. Layering (flags, then environment, then file, then defaults) is [`layered`]'s job.
#[derive(Debug, Args, Serialize, Deserialize)]
pub struct StartArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, env = "AOP_PORT", default_value_t = config::DEFAULT_PORT)]
    pub port: u16,
    /// Address to bind (an IP address or localhost). Anything but loopback requires --token.
    #[arg(long, env = "AOP_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Where events are stored: a SQLite file, or a postgres:// URL (libpq style, with sslmode) shared by a fleet of instances. [default: ~/.aop/events.db]
    #[arg(long, env = "AOP_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Read connections each instance keeps to PostgreSQL (the writer and the listener have one more each).
    #[arg(long, env = "AOP_DB_POOL", default_value_t = config::DEFAULT_DB_POOL)]
    pub db_pool: usize,
    /// Access token: when set, every endpoint but /health needs `Authorization: Bearer <token>`.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// full: fsync every commit (survives power loss); normal: survives a crash of aop only, faster.
    #[arg(long, env = "AOP_DURABILITY", default_value_t = Durability::Full)]
    pub durability: Durability,
    /// Open the dashboard in a browser (only when interactive and a browser exists) [default]
    #[arg(long = "open", overrides_with = "no_open")]
    #[serde(skip)]
    pub open_flag: bool,
    /// Never open a browser.
    #[arg(long = "no-open", overrides_with = "open_flag")]
    #[serde(skip)]
    pub no_open: bool,
    /// The config file's way to say --open (true) or --no-open (false).
    #[arg(skip)]
    pub open: Option<bool>,
    /// TOML config file with the same keys as these flags. [default: ~/.aop/config.toml if it exists]
    #[arg(long, env = "AOP_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Extra Host header names to accept (besides localhost and loopback addresses); repeatable.
    #[arg(long = "allow-host", env = "AOP_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
    /// Extra CORS origins to allow (besides http://localhost:* and http://127.0.0.1:*); repeatable.
    #[arg(long = "cors-origin", env = "AOP_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Write requests that may wait for the writer before ingest answers 503.
    #[arg(long, env = "AOP_QUEUE_CAPACITY", default_value_t = config::DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,
    /// Client connections served at once; past it a new one is refused (503, or UNAVAILABLE over gRPC). Lowered to fit the open-files limit.
    #[arg(long, env = "AOP_MAX_CONNECTIONS", default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How far (in bytes of messages, e.g. 32MB) a /stream subscriber may fall behind before it is cut off; at least 1MiB.
    #[arg(long, env = "AOP_STREAM_BUFFER", value_name = "SIZE", default_value_t = Size(config::DEFAULT_STREAM_BUFFER))]
    pub stream_buffer: Size,
    /// Seconds without an event after which a session whose agent sends no end of its own (a coding agent's, made from its OTLP records) is ended as completed; 0 never ends them.
    #[arg(long, env = "AOP_IDLE_END", value_name = "SECONDS", default_value_t = config::DEFAULT_IDLE_END.as_secs_f64())]
    pub idle_end: f64,
    /// Delete ended, unpinned sessions whose last event arrived more than DAYS ago. [default: keep]
    #[arg(long, env = "AOP_RETAIN", value_name = "DAYS")]
    pub retain: Option<f64>,
    /// Delete the oldest ended, unpinned sessions while the database is larger than SIZE (e.g. 2GB). [default: no limit]
    #[arg(long, env = "AOP_MAX_DB_SIZE", value_name = "SIZE")]
    pub max_db_size: Option<Size>,
    #[command(flatten)]
    #[serde(flatten)]
    pub detect: DetectArgs,
    /// The config file's price table, laid over the built-in one: `[prices."my-model"]` with
    /// `input_per_mtok` and `output_per_mtok` (USD per million tokens). Too many entries for a
    /// flag, so there is none.
    #[arg(skip)]
    #[serde(default)]
    pub prices: Option<toml::Value>,
    /// The config file's `[guard]` table: the decision (`allow`, `ask`, `deny`) the guard gives
    /// for each condition (`stopped`, `budget`, `loop`, `cascade`). File only, like prices.
    #[arg(skip)]
    #[serde(default)]
    pub guard: Option<toml::Value>,
    /// How long a notification is retried before it is marked failed: 24h, 90m, 2d, or seconds.
    #[arg(long, env = "AOP_NOTIFY_MAX_AGE", value_name = "AGE", default_value_t = config::Age(crate::notify::DEFAULT_MAX_AGE))]
    pub notify_max_age: config::Age,
    /// The collector's URL as people reach it (behind a proxy, or listening on all interfaces), for links in notifications. [default: the address it listens on]
    #[arg(long, env = "AOP_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Offer the stop_session tool on /mcp: an MCP client may then stop runs, as the dashboard's Stop button does.
    #[arg(long, env = "AOP_MCP_ALLOW_STOP")]
    #[serde(default)]
    pub mcp_allow_stop: bool,
    /// The config file's notification targets, `[[notify]]` tables (README, "Notifications"): in
    /// the file only, so nothing but its owner can make aop call an address.
    #[arg(skip)]
    #[serde(default)]
    pub notify: Option<toml::Value>,
}

#[derive(Debug, Args)]
pub struct DetectFileArgs {
    /// A session exported with `GET /sessions/:id/export` (several may be concatenated), or `-` for stdin.
    pub file: PathBuf,
    /// Print the alerts as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub detect: DetectArgs,
}

/// `aop diff`'s arguments.
#[derive(Debug, Args)]
#[command(after_help = DIFF_HELP)]
pub struct DiffArgs {
    /// The first run: an exported session (`GET /sessions/:id/export`), `-` for stdin, or a session id on the collector at --url.
    #[arg(value_name = "A")]
    pub a: String,
    /// The second run, the same way (at most one of the two may be `-`).
    #[arg(value_name = "B")]
    pub b: String,
    /// The collector session ids are read from.
    #[arg(long, env = "AOP_URL", default_value = "http://127.0.0.1:4317")]
    pub url: String,
    /// Access token, when the collector requires one.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the comparison as the API's JSON document (`GET /sessions/:a/compare/:b`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Colours: auto is on when stdout is a terminal and NO_COLOR is not set.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

const DIFF_HELP: &str = "\
A path that exists is a file, and so is an argument with a `/` or ending in `.jsonl`; anything \
else is a session id. Two ids are compared by the collector; a file is read offline, as `aop \
detect` reads it (the session of its first valid line; its row derived with the built-in prices, \
its alerts from the detectors with their default thresholds), and an id beside it is read from \
the collector (its export, row and alerts).

Steps are aligned side by side, A left and B right, each marked: ' ' the same, '~' changed (the \
same kind of step, done differently), '-' only in A, '+' only in B. The first divergence is marked \
with '▶'; runs of the same steps are collapsed but for 2 lines around each difference. Lines fit \
in $COLUMNS (120 when unset).

Exit codes: 0 the runs do the same thing, 1 they differ (as diff), 2 trouble: bad arguments, a \
missing session or file, an unreadable file, a collector that does not answer.";

impl DiffArgs {
    /// The plan: colours decided (a terminal without NO_COLOR, unless forced), and the width.
    pub fn resolve(self) -> anyhow::Result<crate::diff::Plan> {
        use std::io::IsTerminal;
        if self.a == "-" && self.b == "-" {
            anyhow::bail!("only one of the two runs can be read from stdin (-)");
        }
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let colour = match self.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => std::io::stdout().is_terminal() && !no_color,
        };
        let width = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|&w| w > 0);
        Ok(crate::diff::Plan {
            a: self.a,
            b: self.b,
            url: self.url,
            token: self.token.filter(|t| !t.is_empty()),
            json: self.json,
            colour,
            width: width.unwrap_or(120),
        })
    }
}

/// `aop copy`'s arguments.
#[derive(Debug, Args)]
#[command(after_help = COPY_HELP)]
pub struct CopyArgs {
    /// The database to copy from: an aop SQLite file (no collector may be running on it) or a postgres:// URL.
    #[arg(long, value_name = "DB")]
    pub from: String,
    /// The database to copy to: a SQLite file (created if missing; no collector may be running on it) or a postgres:// URL.
    #[arg(long, value_name = "DB")]
    pub to: String,
    /// Print the summary as a JSON object.
    #[arg(long)]
    pub json: bool,
    /// TOML config file whose detector settings and [prices] the destination derives with (its other keys are `aop start`'s, ignored here). [default: ~/.aop/config.toml if it exists]
    #[arg(long, env = "AOP_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub derive: DeriveArgs,
}

const COPY_HELP: &str = "\
The destination stores the events as a collector would: what it already holds is recognised and \
not copied again, so a copy that was interrupted finishes when run again, and running it twice \
copies nothing the second time. An event whose session and sequence the destination already holds \
with other content is a conflict: reported, never overwritten. Pinned sessions stay pinned.

Session rows and alerts are derived anew by the destination from the copied events, with the \
detector settings and prices given here: the event-time detectors raise the same alerts as at the \
source. Stall alerts, which come from the collector's clock, are not carried over.

Exit codes: 0 copied (conflicts included), 1 the copy failed midway (run it again to finish), \
2 bad arguments, 4 a database cannot be opened (not an aop database, or in use by a collector).";

/// The settings that decide what a store derives from events, so that a copy's destination
/// derives what the collector that recorded them did: detector thresholds, and model prices for
/// events that report tokens without a cost.
#[derive(Debug, Args, Serialize, Deserialize)]
pub struct DeriveArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub detect: DetectArgs,
    /// The config file's price table (see [`StartArgs::prices`]).
    #[arg(skip)]
    #[serde(default)]
    pub prices: Option<toml::Value>,
}

/// Detector thresholds, shared by `aop start`, `aop detect` and `aop copy`; the defaults are
/// [`DetectConfig::default`]'s.
#[derive(Debug, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Detectors")]
pub struct DetectArgs {
    /// Seconds of silence (collector clock) after which a running session is stalled.
    #[arg(long, env = "AOP_STALL_AFTER", default_value_t = DetectConfig::default().stall_after_secs)]
    pub stall_after: f64,
    /// The same while one of its tool calls is open.
    #[arg(long, env = "AOP_STALL_AFTER_TOOL", default_value_t = DetectConfig::default().stall_after_tool_secs)]
    pub stall_after_tool: f64,
    /// Identical tool calls (same input, same result) that make a loop.
    #[arg(long, env = "AOP_LOOP_REPEATS", default_value_t = DetectConfig::default().loop_repeats)]
    pub loop_repeats: u32,
    /// Seconds of event time within which those calls must fall.
    #[arg(long, env = "AOP_LOOP_WINDOW", default_value_t = DetectConfig::default().loop_window_secs)]
    pub loop_window: f64,
    /// A cost or token increment this many times the median of the previous ones is a spike.
    #[arg(long, env = "AOP_SPIKE_FACTOR", default_value_t = DetectConfig::default().spike_factor)]
    pub spike_factor: f64,
    /// Previous increments needed before spikes are judged.
    #[arg(long, env = "AOP_SPIKE_MIN_SAMPLES", default_value_t = DetectConfig::default().spike_min_samples)]
    pub spike_min_samples: usize,
    /// A session whose total cost passes this many USD raises a critical alert. [default: off]
    #[arg(long, env = "AOP_COST_BUDGET_USD")]
    pub cost_budget_usd: Option<f64>,
    /// Consecutive low-confidence thoughts that make a confidence drop.
    #[arg(long, env = "AOP_CONFIDENCE_RUN", default_value_t = DetectConfig::default().confidence_run)]
    pub confidence_run: u32,
    /// Consecutive failed tool calls that make an error cascade.
    #[arg(long, env = "AOP_CASCADE_RUN", default_value_t = DetectConfig::default().cascade_run)]
    pub cascade_run: u32,
    /// Seconds within which 2 failed children make an error cascade on their parent.
    #[arg(long, env = "AOP_CHILD_FAIL_WINDOW", default_value_t = DetectConfig::default().child_fail_window_secs)]
    pub child_fail_window: f64,
    /// Switch detectors off: loop, stall, cost_spike, confidence_drop, error_cascade (repeatable or comma-separated).
    #[arg(long, env = "AOP_DISABLE", value_delimiter = ',')]
    pub disable: Vec<String>,
}

impl DetectArgs {
    pub fn resolve(self) -> anyhow::Result<DetectConfig> {
        let mut d = DetectConfig {
            stall_after_secs: self.stall_after,
            stall_after_tool_secs: self.stall_after_tool,
            loop_repeats: self.loop_repeats,
            loop_window_secs: self.loop_window,
            spike_factor: self.spike_factor,
            spike_min_samples: self.spike_min_samples,
            cost_budget_usd: self.cost_budget_usd,
            confidence_run: self.confidence_run,
            cascade_run: self.cascade_run,
            child_fail_window_secs: self.child_fail_window,
            ..DetectConfig::default()
        };
        config::disable_detectors(&mut d, &self.disable)?;
        for (name, v) in [
            ("stall-after", d.stall_after_secs),
            ("stall-after-tool", d.stall_after_tool_secs),
            ("loop-window", d.loop_window_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                anyhow::bail!("--{name} must be a positive number of seconds, got {v}");
            }
        }
        Ok(d)
    }
}

/// A size in bytes, written `2GB`, `500MiB`, `1.5G` or `1048576` on the command line, and also as
/// a plain number in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeText", into = "u64")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for Size {
    type Error = String;

    fn try_from(v: SizeText) -> Result<Self, String> {
        match v {
            SizeText::Bytes(n) => Ok(Size(n)),
            SizeText::Text(t) => t.parse(),
        }
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        config::parse_size(s).map(Size).map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            n => write!(f, "{n}"),
        }
    }
}

/// `given` (from clap, defaults filled in) with the config file's values put in wherever neither a
/// flag nor the environment set one. The settings' serde form is the file's vocabulary, so a key
/// that is not one of the settings is an error naming it, not a silent default.
fn layered<T: Serialize + DeserializeOwned>(given: T, matches: &ArgMatches, file: toml::Table) -> anyhow::Result<T> {
    let mut merged = serde_json::to_value(&given)?;
    let settings = merged.as_object_mut().context("settings are a table")?;
    for (key, value) in file {
        if !settings.contains_key(&key) {
            let known: Vec<&str> = settings.keys().map(String::as_str).collect();
            anyhow::bail!("unknown key {key:?}; the keys are {}", known.join(", "));
        }
        // `try_get_raw` first: `value_source` panics (in debug builds) on a key that is not an
        // argument, such as the file-only `open`.
        let from_user = matches!(
            matches.try_get_raw(&key).ok().flatten().and(matches.value_source(&key)),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !from_user {
            settings.insert(key, serde_json::to_value(value)?);
        }
    }
    Ok(serde_json::from_value(merged)?)
}

/// The config file given, else `~/.aop/config.toml` if it exists, read, with its path.
fn config_file(given: Option<PathBuf>) -> anyhow::Result<Option<(PathBuf, toml::Table)>> {
    let Some(path) = given.or_else(|| Some(config::aop_home("config.toml")).filter(|p| p.exists())) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let file = toml::from_str(&text).map_err(|e: toml::de::Error| {
        // toml's own message quotes the line, which may hold a token or a webhook's URL.
        let at = e.span().map(|s| {
            let before = &text[..s.start.min(text.len())];
            format!(
                " at line {}, column {}",
                before.matches('\n').count() + 1,
                before.chars().rev().take_while(|&c| c != '\n').count() + 1
            )
        });
        anyhow::anyhow!("invalid config file {}: {}{}", path.display(), e.message(), at.unwrap_or_default())
    })?;
    Ok(Some((path, file)))
}

impl StartArgs {
    /// Flags and environment (merged by clap; `matches` says which were given) over the config
    /// file over defaults.
    pub fn resolve(self, matches: &ArgMatches) -> anyhow::Result<Config> {
        let file = config_file(self.config.clone())?;
        let path = file.as_ref().map(|(path, _)| path.clone());
        // Flags only (no file key): the file's round trip through serde would reset them.
        let (open_flag, no_open) = (self.open_flag, self.no_open);
        let s = match file {
            Some((path, file)) => {
                layered(self, matches, file).with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => self,
        };
        let db = match s.db.as_deref() {
            Some(db) => Location::parse(db).map_err(anyhow::Error::msg)?,
            None => Location::File(config::aop_home("events.db")),
        };
        if s.max_db_size.is_some() && matches!(db, Location::Postgres(_)) {
            // Space in a shared server is its administrator's business, and deleted rows free
            // nothing until a vacuum: a size cap there would delete sessions without effect.
            anyhow::bail!("--max-db-size applies to a SQLite file only; with PostgreSQL use --retain");
        }
        let mut c = Config::at(db);
        c.db_pool = s.db_pool.max(1);
        c.port = s.port;
        c.host = config::parse_host(&s.host)?;
        c.token = s.token.filter(|t| !t.is_empty());
        c.durability = s.durability;
        let open = if no_open {
            false
        } else if open_flag {
            true
        } else {
            s.open.unwrap_or(true)
        };
        c.open = if open { OpenBrowser::Auto } else { OpenBrowser::Never };
        c.allowed_hosts = s.allow_hosts;
        c.cors_origins = s.cors_origins;
        c.queue_capacity = s.queue_capacity;
        if !(1..=1_000_000).contains(&s.max_connections) {
            anyhow::bail!("--max-connections must be between 1 and 1000000, got {}", s.max_connections);
        }
        c.max_connections = s.max_connections;
        if !(s.idle_end.is_finite() && s.idle_end >= 0.0) {
            anyhow::bail!("--idle-end must be a number of seconds (0 for never), got {}", s.idle_end);
        }
        c.idle_end = (s.idle_end > 0.0).then(|| std::time::Duration::from_secs_f64(s.idle_end));
        c.stream_buffer = usize::try_from(s.stream_buffer.0).unwrap_or(usize::MAX);
        c.detect = s.detect.resolve()?;
        c.detect.prices = Arc::new(config::prices(s.prices).with_context(|| {
            // Only the file sets prices.
            format!("invalid config file {}", path.as_deref().unwrap_or(std::path::Path::new("")).display())
        })?);
        c.guard = crate::guard::Policy::from_toml(s.guard).map_err(anyhow::Error::msg).with_context(|| {
            format!("invalid config file {}", path.as_deref().unwrap_or(std::path::Path::new("")).display())
        })?;
        if let Some(days) = s.retain {
            if !(days.is_finite() && days > 0.0) {
                anyhow::bail!("--retain must be a positive number of days, got {days}");
            }
            c.retention.max_age_ms = Some((days * 86_400_000.0) as i64);
        }
        c.retention.max_bytes = s.max_db_size.map(|m| m.0);
        let targets = crate::notify::targets(s.notify).with_context(|| {
            // Only the file declares targets.
            format!("invalid config file {}", path.as_deref().unwrap_or(std::path::Path::new("")).display())
        })?;
        c.notify = config::notify(targets, s.notify_max_age, s.public_url.as_deref())?;
        c.mcp_allow_stop = s.mcp_allow_stop;
        c.check()?;
        Ok(c)
    }
}

impl CopyArgs {
    /// The two places, checked, and the derivation settings: flags and environment over the
    /// config file's detector keys and `[prices]` over defaults.
    pub fn resolve(self, matches: &ArgMatches) -> anyhow::Result<crate::copy::Plan> {
        let from = place("--from", &self.from)?;
        let to = place("--to", &self.to)?;
        let file = config_file(self.config)?;
        let path = file.as_ref().map(|(path, _)| path.clone());
        let d = match file {
            Some((path, mut file)) => {
                // The file is `aop start`'s: its other keys are not for a copy.
                let keys = serde_json::to_value(&self.derive)?;
                file.retain(|k, _| keys.get(k).is_some());
                layered(self.derive, matches, file)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => self.derive,
        };
        let mut detect = d.detect.resolve()?;
        detect.prices = Arc::new(config::prices(d.prices).with_context(|| {
            // Only the file sets prices.
            format!("invalid config file {}", path.as_deref().unwrap_or(std::path::Path::new("")).display())
        })?);
        crate::copy::Plan::new(from, to, self.json, detect).map_err(anyhow::Error::msg)
    }
}

/// A `--from`/`--to` location.
fn place(flag: &str, text: &str) -> anyhow::Result<Location> {
    // `Location::parse` words its refusals for `aop start`'s `--db`.
    Location::parse(text).map_err(|e| anyhow::anyhow!("{}", e.replacen("--db", flag, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn start(args: &[&str], file: &str) -> anyhow::Result<Config> {
        let matches = Cli::command().try_get_matches_from(["aop", "start"].iter().chain(args))?;
        let (_, sub) = matches.subcommand().expect("a subcommand");
        let mut s = StartArgs::from_arg_matches(sub)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file)?;
        s.config = Some(path);
        s.resolve(sub)
    }

    #[test]
    fn the_file_fills_what_flags_left_to_defaults() {
        let c = start(
            &["--queue-capacity", "7"],
            "queue_capacity = 9\nport = 5000\nstream_buffer = \"2MiB\"\nloop_repeats = 6\nopen = false",
        )
        .unwrap();
        assert_eq!(c.queue_capacity, 7, "a flag beats the file");
        assert_eq!(c.port, 5000, "the file beats a default");
        assert_eq!(c.stream_buffer, 2 << 20);
        assert_eq!(c.detect.loop_repeats, 6, "detector settings come from the file too");
        assert_eq!(c.open, OpenBrowser::Never);
        assert_eq!(c.durability, Durability::Full, "untouched: the default");
        let c = start(&["--open"], "open = false\nmax_db_size = 4096\ndurability = \"normal\"").unwrap();
        assert_eq!(c.open, OpenBrowser::Auto);
        assert_eq!(c.retention.max_bytes, Some(4096));
        assert_eq!(c.durability, Durability::Normal);
    }

    #[test]
    fn the_file_prices_models() {
        let c = start(
            &[],
            "port = 5000\n\n[prices.\"my-model\"]\ninput_per_mtok = 1.5\noutput_per_mtok = 6\n\n\
             [prices.gpt-4o]\ninput_per_mtok = 2\noutput_per_mtok = 8.5\n",
        )
        .unwrap();
        let price = |m: &str| c.prices().lookup(m).map(|p| (p.input_per_mtok(), p.output_per_mtok()));
        assert_eq!(price("my-model"), Some((1.5, 6.0)), "an entry extends the table");
        assert_eq!(price("gpt-4o-2024-08-06"), Some((2.0, 8.5)), "an entry replaces a built-in one");
        assert_eq!(price("gpt-4o-mini"), Some((0.15, 0.60)), "the rest stays");
        assert_eq!(c.prices().as_of(), crate::model::PRICES_AS_OF);
        assert_eq!(c.port, 5000);
        let plain = start(&[], "").unwrap();
        assert_eq!(**plain.prices(), crate::model::Prices::builtin());
    }

    #[test]
    fn a_bad_price_names_its_model() {
        // (file, words the error must hold)
        let cases: &[(&str, &[&str])] = &[
            ("[prices.m1]\ninput_per_mtok = 1\n", &["\"m1\"", "output_per_mtok"]),
            ("[prices.m2]\ninput_per_mtok = -1\noutput_per_mtok = 1\n", &["\"m2\"", "input_per_mtok", "-1"]),
            (
                "[prices.m3]\ninput_per_mtok = 1\noutput_per_mtok = 1\ncached_per_mtok = 1\n",
                &["\"m3\"", "cached_per_mtok"],
            ),
            ("[prices.m4]\ninput_per_mtok = \"cheap\"\noutput_per_mtok = 1\n", &["\"m4\""]),
            ("prices = { m5 = 3 }\n", &["\"m5\""]),
            ("prices = 3\n", &["prices"]),
            ("[prices.\" \"]\ninput_per_mtok = 1\noutput_per_mtok = 1\n", &["empty"]),
        ];
        for (file, words) in cases {
            let e = format!("{:#}", start(&[], file).unwrap_err());
            for w in *words {
                assert!(e.contains(w), "{file:?}: {e}");
            }
        }
    }

    #[test]
    fn a_copy_derives_with_the_files_detectors_and_prices_and_ignores_its_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to, file) = (dir.path().join("a.db"), dir.path().join("b.db"), dir.path().join("config.toml"));
        std::fs::write(&from, "").unwrap();
        std::fs::write(
            &file,
            "port = 5000\nloop_repeats = 6\nconfidence_run = 9\n\n[prices.\"my-model\"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n",
        )
        .unwrap();
        let argv = ["aop", "copy", "--from", from.to_str().unwrap(), "--to", to.to_str().unwrap()];
        let argv = argv.iter().copied().chain(["--config", file.to_str().unwrap(), "--confidence-run", "4"]);
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let (_, sub) = matches.subcommand().expect("a subcommand");
        let plan = CopyArgs::from_arg_matches(sub).unwrap().resolve(sub).unwrap();
        assert_eq!(plan.detect.loop_repeats, 6, "the file beats a default");
        assert_eq!(plan.detect.confidence_run, 4, "a flag beats the file");
        assert!(plan.detect.prices.lookup("my-model").is_some(), "the file's prices");
        assert_eq!((plan.from, plan.to), (Location::File(from), Location::File(to)));
    }

    #[test]
    fn notification_settings_come_from_the_file_and_flags() {
        let file = "notify_max_age = \"90m\"\n[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/T0K3N\"\n";
        let c = start(&["--public-url", "https://aop.example.com/"], file).unwrap();
        assert_eq!(c.notify.max_age, std::time::Duration::from_secs(5400));
        assert_eq!(c.notify.public_url.as_deref(), Some("https://aop.example.com"));
        assert_eq!(c.notify.targets.len(), 1);
        let c = start(&["--notify-max-age", "30"], "notify_max_age = 7200").unwrap();
        assert_eq!((c.notify.max_age.as_secs(), c.notify.targets.len()), (30, 0), "a flag beats the file");
        assert_eq!(start(&[], "").unwrap().notify.max_age, crate::notify::DEFAULT_MAX_AGE);
        let e = format!("{:#}", start(&[], "[[notify]]\nurl = \"gopher://x/T0K3N\"\n").unwrap_err());
        assert!(e.contains("invalid config file") && e.contains("#1") && !e.contains("T0K3N"), "{e}");
        let e = format!("{:#}", start(&[], "notify_max_age = \"soon\"").unwrap_err());
        assert!(e.contains("24h"), "{e}");
        // A syntax error names its place, never the line (a token, a URL).
        let e = format!("{:#}", start(&[], "port = 1\n[[notify]]\nurl = \"https://x/T0K3N\n").unwrap_err());
        assert!(e.contains("line 3") && !e.contains("T0K3N"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = start(&[], "prot = 5000").unwrap_err();
        assert!(format!("{e:#}").contains("prot"), "{e:#}");
        assert!(start(&[], "port = \"many\"").is_err());
        assert!(start(&[], "stream_buffer = \"2XB\"").is_err());
        assert!(start(&["--stall-after", "0"], "").is_err());
    }
}
