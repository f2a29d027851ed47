//! The collector's resolved configuration, as `aop start` runs with it (its settings and their
//! layering are in [`crate::cli`]), and the parsers settings share.

use crate::detect::DetectConfig;
use crate::model::{Price, Prices};
use crate::store::sqlite::Durability;
use crate::store::{Location, Retention};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 4317;
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
pub const DEFAULT_STREAM_BUFFER: u64 = 32 << 20;
pub const DEFAULT_DB_POOL: usize = 8;
/// Far above what agents, exporters and dashboards open (each keeps a few), yet a bound on memory
/// (10,000 idle connections took 33 MiB) and on file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// `--idle-end`: half an hour, longer than a person's usual pause between prompts.
pub const DEFAULT_IDLE_END: Duration = Duration::from_secs(30 * 60);

/// Whether `aop start` opens the dashboard in a browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenBrowser {
    /// Only when interactive and a browser exists.
    Auto,
    Never,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub db: Location,
    /// Read connections to PostgreSQL per instance.
    pub db_pool: usize,
    pub token: Option<String>,
    pub durability: Durability,
    pub open: OpenBrowser,
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
    pub queue_capacity: usize,
    /// Bytes of recent messages kept for stream subscribers that fall behind.
    pub stream_buffer: usize,
    /// The detectors' settings, and the model prices ([`Config::prices`]) that session
    /// derivation and the cost rules share.
    pub detect: DetectConfig,
    pub retention: Retention,
    /// The most client connections served at once; past it, new ones are refused.
    pub max_connections: usize,
    /// Silence after which a session that ends when idle is ended; `None`, never.
    pub idle_end: Option<Duration>,
    /// The guard's decision per condition (`[guard]`).
    pub guard: crate::guard::Policy,
    /// Where alerts are delivered (the config file's `[[notify]]` tables), and for how long.
    pub notify: crate::notify::Settings,
    /// Whether `/mcp` offers `stop_session` (off: an MCP client may read, not act).
    pub mcp_allow_stop: bool,
}

impl Config {
    /// Defaults, with the database in a given place: what tests and embedders start from.
    pub fn with_db(db: impl Into<PathBuf>) -> Config {
        Config::at(Location::File(db.into()))
    }

    /// Defaults, with the events in a given store.
    pub fn at(db: Location) -> Config {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            db,
            db_pool: DEFAULT_DB_POOL,
            token: None,
            durability: Durability::Full,
            open: OpenBrowser::Auto,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            stream_buffer: DEFAULT_STREAM_BUFFER as usize,
            detect: DetectConfig::default(),
            retention: Retention::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_end: Some(DEFAULT_IDLE_END),
            guard: crate::guard::Policy::default(),
            notify: crate::notify::Settings::default(),
            mcp_allow_stop: false,
        }
    }

    /// The prices of models, for events that report tokens but no cost: the built-in table with
    /// the config file's `[prices]` over it. They live in one place, the detectors' settings, so
    /// that session totals and the cost rules can never be given two different tables.
    pub fn prices(&self) -> &Arc<Prices> {
        &self.detect.prices
    }

    /// Refuses configurations that would expose traces.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.host.is_loopback() && self.token.as_deref().is_none_or(str::is_empty) {
            bail!(
                "refusing to listen on {} without an access token: anyone who can reach this address could read every agent trace. \
                 Set --token (or AOP_TOKEN), or bind to 127.0.0.1",
                self.host
            );
        }
        Ok(())
    }
}

/// The detectors' names, as `--disable` takes them.
pub const DETECTORS: [&str; 5] = ["loop", "stall", "cost_spike", "confidence_drop", "error_cascade"];

/// Switches detectors off by name.
pub fn disable_detectors(cfg: &mut DetectConfig, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        match name.as_str() {
            "loop" => cfg.loop_enabled = false,
            "stall" => cfg.stall_enabled = false,
            "cost_spike" => cfg.spike_enabled = false,
            "confidence_drop" => cfg.confidence_enabled = false,
            "error_cascade" => cfg.cascade_enabled = false,
            other => bail!("unknown detector {other:?}; the detectors are {}", DETECTORS.join(", ")),
        }
    }
    Ok(())
}

/// One entry of the config file's `[prices]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input_per_mtok: f64,
    output_per_mtok: f64,
}

/// The built-in price table with the config file's `[prices]` entries over it; a bad entry is an
/// error naming it.
pub fn prices(file: Option<toml::Value>) -> anyhow::Result<Prices> {
    let table = match file {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            bail!("prices must be a table of models, like [prices.\"my-model\"]; found {}", other.type_str())
        }
    };
    let mut entries = Vec::with_capacity(table.len());
    for (model, value) in table {
        if model.trim().is_empty() {
            bail!("prices: a model name is empty");
        }
        if !value.is_table() {
            bail!(
                "prices.{model:?} must be a table like {{ input_per_mtok = 1.5, output_per_mtok = 6 }}; found {}",
                value.type_str()
            );
        }
        // toml's message ends with a newline, which would split the line the user reads.
        let entry = PriceEntry::deserialize(value).map_err(|e| {
            anyhow::anyhow!(
                "prices.{model:?}: {}; an entry is {{ input_per_mtok = <USD>, output_per_mtok = <USD> }}, per million tokens",
                e.to_string().trim_end()
            )
        })?;
        let price =
            Price::new(entry.input_per_mtok, entry.output_per_mtok).with_context(|| format!("prices.{model:?}"))?;
        entries.push((model, price));
    }
    let mut prices = Prices::builtin();
    prices.overlay(entries);
    Ok(prices)
}

/// `~/.aop/<name>`.
pub fn aop_home(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".aop").join(name)
}

/// A size such as `2GB`, `500MiB`, `1.5G` or `1048576` (bytes), for `--max-db-size`.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("size must look like 2GB or 500MB, got {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => bail!("unknown size unit {other:?} in {s:?}; use B, KB, MB, GB, TB (or KiB, MiB, GiB, TiB)"),
    };
    if !(n.is_finite() && n > 0.0) {
        bail!("size must be positive, got {s:?}");
    }
    Ok((n * mult) as u64)
}

/// A span of time, written `24h`, `90m`, `30s`, `2d` or a plain number of seconds (as on the
/// command line, in the config file a number or such a string).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize)]
#[serde(try_from = "AgeText", into = "f64")]
pub struct Age(pub Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum AgeText {
    Secs(f64),
    Text(String),
}

impl TryFrom<AgeText> for Age {
    type Error = String;

    fn try_from(v: AgeText) -> Result<Self, String> {
        match v {
            AgeText::Secs(n) => Age::from_secs(n),
            AgeText::Text(t) => t.parse(),
        }
    }
}

impl From<Age> for f64 {
    fn from(a: Age) -> f64 {
        a.0.as_secs_f64()
    }
}

impl Age {
    fn from_secs(n: f64) -> Result<Age, String> {
        if !(n.is_finite() && n > 0.0 && n < 1e12) {
            return Err(format!("a duration must be a positive number of seconds, or like 24h or 90m; got {n}"));
        }
        Ok(Age(Duration::from_secs_f64(n)))
    }
}

impl std::str::FromStr for Age {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("a duration looks like 24h, 90m, 30s or 2d; got {s:?}"))?;
        let mult = match unit.trim() {
            "" | "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => return Err(format!("unknown unit {other:?} in {s:?}; use s, m, h or d")),
        };
        Age::from_secs(n * mult)
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs_f64();
        match secs as u64 {
            n if secs.fract() == 0.0 && n > 0 && n % 3600 == 0 => write!(f, "{}h", n / 3600),
            n if secs.fract() == 0.0 && n > 0 && n % 60 == 0 => write!(f, "{}m", n / 60),
            _ => write!(f, "{secs}s"),
        }
    }
}

/// The notification settings: the config file's targets, `notify_max_age` and `public_url`.
pub fn notify(
    targets: Vec<crate::notify::Target>,
    max_age: Age,
    public_url: Option<&str>,
) -> anyhow::Result<crate::notify::Settings> {
    Ok(crate::notify::Settings {
        targets,
        max_age: max_age.0,
        public_url: public_url.filter(|u| !u.trim().is_empty()).map(crate::notify::public_url).transpose()?,
    })
}

/// `localhost` or an IP address.
pub fn parse_host(s: &str) -> anyhow::Result<IpAddr> {
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--host must be an IP address or localhost, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token() {
        let mut c = Config::with_db("x.db");
        assert!(c.check().is_ok());
        c.host = "0.0.0.0".parse().unwrap();
        assert!(c.check().unwrap_err().to_string().contains("--token"));
        c.token = Some("s3cret".into());
        assert!(c.check().is_ok());
    }

    #[test]
    fn ages() {
        for (text, secs) in
            [("24h", 86_400.0), ("90m", 5400.0), ("30s", 30.0), ("2d", 172_800.0), ("1.5", 1.5), ("0.5h", 1800.0)]
        {
            assert_eq!(text.parse::<Age>().unwrap().0.as_secs_f64(), secs, "{text}");
        }
        for bad in ["", "h", "-1h", "3w", "0", "1e400"] {
            assert!(bad.parse::<Age>().is_err(), "{bad}");
        }
        for (secs, shown) in [(86_400, "24h"), (7200, "2h"), (120, "2m"), (90, "90s")] {
            assert_eq!(Age(Duration::from_secs(secs)).to_string(), shown);
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [("2GB", 2_000_000_000), ("500MiB", 524_288_000), ("1.5G", 1_500_000_000), ("4096", 4096)]
        {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "GB", "-1GB", "2XB", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
