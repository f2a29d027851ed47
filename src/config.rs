//! The collector's resolved configuration, as `aop start` runs with it (its settings and their
//! layering are in [`crate::cli`]), and the parsers settings share.

use crate::detect::DetectConfig;
use crate::store::sqlite::Durability;
use crate::store::Retention;
use anyhow::{bail, Context};
use std::net::IpAddr;
use std::path::PathBuf;

pub const DEFAULT_PORT: u16 = 4317;
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
pub const DEFAULT_STREAM_BUFFER: u64 = 32 << 20;

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
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            stream_buffer: DEFAULT_STREAM_BUFFER as usize,
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
}
