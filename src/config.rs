//! One `Config`, layered: flags, then `AOP_*` environment variables (both through clap), then the
//! TOML config file, then defaults.

use crate::detect::DetectConfig;
use crate::store::sqlite::Durability;
use crate::store::Retention;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_PORT: u16 = 4317;

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
    pub db: PathBuf,
    pub token: Option<String>,
    pub durability: Durability,
    pub open: OpenBrowser,
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
    pub queue_capacity: usize,
    /// Bytes of recent messages kept for stream subscribers that fall behind.
    pub stream_buffer: usize,
    pub detect: DetectConfig,
    pub retention: Retention,
}

impl Config {
    /// Defaults, with the database in a given place: what tests and embedders start from.
    pub fn with_db(db: impl Into<PathBuf>) -> Config {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            db: db.into(),
            token: None,
            durability: Durability::Full,
            open: OpenBrowser::Auto,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            queue_capacity: 4096,
            stream_buffer: 32 << 20,
            detect: DetectConfig::default(),
            retention: Retention::default(),
        }
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

/// The config file's keys: the same names as the flags (with `_` for `-`). Unknown keys are an
/// error, so a typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub host: Option<String>,
    pub db: Option<PathBuf>,
    pub token: Option<String>,
    pub durability: Option<Durability>,
    pub open: Option<bool>,
    pub allow_hosts: Option<Vec<String>>,
    pub cors_origins: Option<Vec<String>>,
    pub queue_capacity: Option<usize>,
    pub stream_buffer: Option<Size>,
    pub retain: Option<f64>,
    pub max_db_size: Option<Size>,
    pub stall_after: Option<f64>,
    pub stall_after_tool: Option<f64>,
    pub loop_repeats: Option<u32>,
    pub loop_window: Option<f64>,
    pub spike_factor: Option<f64>,
    pub spike_min_samples: Option<usize>,
    pub cost_budget_usd: Option<f64>,
    pub confidence_run: Option<u32>,
    pub cascade_run: Option<u32>,
    pub child_fail_window: Option<f64>,
    pub disable: Option<Vec<String>>,
}

/// A size in a config file: a number of bytes, or text such as `"2GB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn text(&self) -> String {
        match self {
            Size::Bytes(n) => n.to_string(),
            Size::Text(t) => t.clone(),
        }
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
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
    fn sizes() {
        for (text, bytes) in [("2GB", 2_000_000_000), ("500MiB", 524_288_000), ("1.5G", 1_500_000_000), ("4096", 4096)]
        {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "GB", "-1GB", "2XB", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_keys_are_checked() {
        let ok: FileConfig =
            toml::from_str("port = 5000\ndurability = \"normal\"\nallow_hosts = [\"box.lan\"]").unwrap();
        assert_eq!(ok.port, Some(5000));
        assert_eq!(ok.durability, Some(Durability::Normal));
        assert!(toml::from_str::<FileConfig>("prot = 5000").is_err());
    }
}
