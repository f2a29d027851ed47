//! The command line: `aop start` (and, later, the other subcommands).

use crate::config::{self, Config, FileConfig, OpenBrowser};
use crate::detect::DetectConfig;
use crate::store::sqlite::Durability;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "aop",
    version,
    about = "A local collector for the Agent Observability Protocol: watch AI agents think and act, live, and find out afterwards why a run went wrong."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: ingest on POST /events, live stream, sessions API and dashboard on one port.
    Start(StartArgs),
    /// Run the anomaly detectors over an exported session (JSONL; `-` for stdin) and print the alerts.
    Detect(DetectFileArgs),
    /// Run simulated agents against a collector, so the dashboard comes alive (one loop and one confidence drop on purpose).
    Demo(crate::demo::DemoArgs),
    /// Drive a running collector with realistic load and print throughput, latency and resource figures.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Port to listen on; 0 picks a free one. [default: 4317]
    #[arg(long, env = "AOP_PORT")]
    pub port: Option<u16>,
    /// Address to bind. Anything but loopback requires --token. [default: 127.0.0.1]
    #[arg(long, env = "AOP_HOST")]
    pub host: Option<String>,
    /// SQLite database file. [default: ~/.aop/events.db]
    #[arg(long, env = "AOP_DB")]
    pub db: Option<PathBuf>,
    /// Access token: when set, every endpoint but /health needs `Authorization: Bearer <token>`.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// full: fsync every commit (survives power loss); normal: survives a crash of aop only, faster. [default: full]
    #[arg(long, env = "AOP_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Open the dashboard in a browser (only when interactive and a browser exists) [default]
    #[arg(long, overrides_with = "no_open")]
    pub open: bool,
    /// Never open a browser.
    #[arg(long = "no-open", overrides_with = "open")]
    pub no_open: bool,
    /// TOML config file with the same keys as these flags. [default: ~/.aop/config.toml if it exists]
    #[arg(long, env = "AOP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Extra Host header names to accept (besides localhost and loopback addresses); repeatable.
    #[arg(long = "allow-host", env = "AOP_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
    /// Extra CORS origins to allow (besides http://localhost:* and http://127.0.0.1:*); repeatable.
    #[arg(long = "cors-origin", env = "AOP_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Write requests that may wait for the writer before ingest answers 503. [default: 4096]
    #[arg(long, env = "AOP_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// How far (in bytes of messages, e.g. 32MB) a /stream subscriber may fall behind before it is cut off; at least 1MiB. [default: 32MiB]
    #[arg(long, env = "AOP_STREAM_BUFFER", value_name = "SIZE")]
    pub stream_buffer: Option<String>,
    /// Delete ended, unpinned sessions whose last event arrived more than DAYS ago. [default: keep]
    #[arg(long, env = "AOP_RETAIN", value_name = "DAYS")]
    pub retain: Option<f64>,
    /// Delete the oldest ended, unpinned sessions while the database is larger than SIZE (e.g. 2GB). [default: no limit]
    #[arg(long, env = "AOP_MAX_DB_SIZE", value_name = "SIZE")]
    pub max_db_size: Option<String>,
    #[command(flatten)]
    pub detect: DetectArgs,
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

/// Detector thresholds, shared by `aop start` and `aop detect`.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Detectors")]
pub struct DetectArgs {
    /// Seconds of silence (collector clock) after which a running session is stalled. [default: 90]
    #[arg(long, env = "AOP_STALL_AFTER")]
    pub stall_after: Option<f64>,
    /// The same while one of its tool calls is open. [default: 300]
    #[arg(long, env = "AOP_STALL_AFTER_TOOL")]
    pub stall_after_tool: Option<f64>,
    /// Identical tool calls (same input, same result) that make a loop. [default: 4]
    #[arg(long, env = "AOP_LOOP_REPEATS")]
    pub loop_repeats: Option<u32>,
    /// Seconds of event time within which those calls must fall. [default: 60]
    #[arg(long, env = "AOP_LOOP_WINDOW")]
    pub loop_window: Option<f64>,
    /// A cost or token increment this many times the median of the previous ones is a spike. [default: 5]
    #[arg(long, env = "AOP_SPIKE_FACTOR")]
    pub spike_factor: Option<f64>,
    /// Previous increments needed before spikes are judged. [default: 5]
    #[arg(long, env = "AOP_SPIKE_MIN_SAMPLES")]
    pub spike_min_samples: Option<usize>,
    /// A session whose total cost passes this many USD raises a critical alert. [default: off]
    #[arg(long, env = "AOP_COST_BUDGET_USD")]
    pub cost_budget_usd: Option<f64>,
    /// Consecutive low-confidence thoughts that make a confidence drop. [default: 3]
    #[arg(long, env = "AOP_CONFIDENCE_RUN")]
    pub confidence_run: Option<u32>,
    /// Consecutive failed tool calls that make an error cascade. [default: 3]
    #[arg(long, env = "AOP_CASCADE_RUN")]
    pub cascade_run: Option<u32>,
    /// Seconds within which 2 failed children make an error cascade on their parent. [default: 60]
    #[arg(long, env = "AOP_CHILD_FAIL_WINDOW")]
    pub child_fail_window: Option<f64>,
    /// Switch detectors off: loop, stall, cost_spike, confidence_drop, error_cascade (repeatable or comma-separated).
    #[arg(long, env = "AOP_DISABLE", value_delimiter = ',')]
    pub disable: Vec<String>,
}

impl DetectArgs {
    /// Flags over file over defaults.
    pub fn resolve(self, file: &FileConfig) -> anyhow::Result<DetectConfig> {
        let mut d = DetectConfig::default();
        d.stall_after_secs = self.stall_after.or(file.stall_after).unwrap_or(d.stall_after_secs);
        d.stall_after_tool_secs = self.stall_after_tool.or(file.stall_after_tool).unwrap_or(d.stall_after_tool_secs);
        d.loop_repeats = self.loop_repeats.or(file.loop_repeats).unwrap_or(d.loop_repeats);
        d.loop_window_secs = self.loop_window.or(file.loop_window).unwrap_or(d.loop_window_secs);
        d.spike_factor = self.spike_factor.or(file.spike_factor).unwrap_or(d.spike_factor);
        d.spike_min_samples = self.spike_min_samples.or(file.spike_min_samples).unwrap_or(d.spike_min_samples);
        d.cost_budget_usd = self.cost_budget_usd.or(file.cost_budget_usd);
        d.confidence_run = self.confidence_run.or(file.confidence_run).unwrap_or(d.confidence_run);
        d.cascade_run = self.cascade_run.or(file.cascade_run).unwrap_or(d.cascade_run);
        d.child_fail_window_secs =
            self.child_fail_window.or(file.child_fail_window).unwrap_or(d.child_fail_window_secs);
        let disable = if self.disable.is_empty() { file.disable.clone().unwrap_or_default() } else { self.disable };
        config::disable_detectors(&mut d, &disable)?;
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

impl StartArgs {
    /// Flags and environment (already merged by clap) over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => {
                let default = config::aop_home("config.toml");
                if default.exists() {
                    FileConfig::load(&default)?
                } else {
                    FileConfig::default()
                }
            }
        };
        let detect = self.detect.resolve(&file)?;
        let mut c = Config::with_db(self.db.or(file.db).unwrap_or_else(|| config::aop_home("events.db")));
        c.port = self.port.or(file.port).unwrap_or(config::DEFAULT_PORT);
        if let Some(h) = self.host.or(file.host) {
            c.host = config::parse_host(&h)?;
        }
        c.token = self.token.or(file.token).filter(|t| !t.is_empty());
        c.durability = self.durability.or(file.durability).unwrap_or(Durability::Full);
        let open = if self.no_open {
            false
        } else if self.open {
            true
        } else {
            file.open.unwrap_or(true)
        };
        c.open = if open { OpenBrowser::Auto } else { OpenBrowser::Never };
        c.allowed_hosts =
            if self.allow_hosts.is_empty() { file.allow_hosts.unwrap_or_default() } else { self.allow_hosts };
        c.cors_origins =
            if self.cors_origins.is_empty() { file.cors_origins.unwrap_or_default() } else { self.cors_origins };
        c.queue_capacity = self.queue_capacity.or(file.queue_capacity).unwrap_or(c.queue_capacity);
        if let Some(size) = self.stream_buffer.or(file.stream_buffer.as_ref().map(config::Size::text)) {
            c.stream_buffer = usize::try_from(config::parse_size(&size)?).unwrap_or(usize::MAX);
        }
        c.detect = detect;
        if let Some(days) = self.retain.or(file.retain) {
            if !(days.is_finite() && days > 0.0) {
                anyhow::bail!("--retain must be a positive number of days, got {days}");
            }
            c.retention.max_age_ms = Some((days * 86_400_000.0) as i64);
        }
        if let Some(size) = self.max_db_size.or(file.max_db_size.as_ref().map(config::Size::text)) {
            c.retention.max_bytes = Some(config::parse_size(&size)?);
        }
        c.check()?;
        Ok(c)
    }
}
