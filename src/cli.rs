//! The command line: `aop start` (and, later, the other subcommands).

use crate::config::{self, Config, FileConfig, OpenBrowser};
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
    /// Messages a /stream subscriber may fall behind before it is cut off. [default: 8192]
    #[arg(long, env = "AOP_STREAM_BUFFER")]
    pub stream_buffer: Option<usize>,
    /// Seconds of silence after which a running session counts as stalled. [default: 90]
    #[arg(long, env = "AOP_STALL_AFTER")]
    pub stall_after: Option<f64>,
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
        let mut c = Config::with_db(
            self.db
                .or(file.db)
                .unwrap_or_else(|| config::aop_home("events.db")),
        );
        c.port = self.port.or(file.port).unwrap_or(config::DEFAULT_PORT);
        if let Some(h) = self.host.or(file.host) {
            c.host = config::parse_host(&h)?;
        }
        c.token = self.token.or(file.token).filter(|t| !t.is_empty());
        c.durability = self
            .durability
            .or(file.durability)
            .unwrap_or(Durability::Full);
        let open = if self.no_open {
            false
        } else if self.open {
            true
        } else {
            file.open.unwrap_or(true)
        };
        c.open = if open {
            OpenBrowser::Auto
        } else {
            OpenBrowser::Never
        };
        c.allowed_hosts = if self.allow_hosts.is_empty() {
            file.allow_hosts.unwrap_or_default()
        } else {
            self.allow_hosts
        };
        c.cors_origins = if self.cors_origins.is_empty() {
            file.cors_origins.unwrap_or_default()
        } else {
            self.cors_origins
        };
        c.queue_capacity = self
            .queue_capacity
            .or(file.queue_capacity)
            .unwrap_or(c.queue_capacity);
        c.stream_buffer = self
            .stream_buffer
            .or(file.stream_buffer)
            .unwrap_or(c.stream_buffer);
        c.stall_after_secs = self
            .stall_after
            .or(file.stall_after)
            .unwrap_or(c.stall_after_secs);
        c.check()?;
        Ok(c)
    }
}
