//! Notifications: alerts delivered to people's webhooks (spec `GUARD.md`, "Notifications").
//!
//! - This file: the targets, as the config file's `[[notify]]` tables declare them, checked once
//!   at start (an unknown key, a URL that is not http or https, an unknown alert type: refused
//!   with a message naming the table, never quoting the URL or the secret).
//! - [`message`]: what is sent, pure: the JSON body and its signature, Slack's message, the
//!   summary a rate-capped target gets instead of the alerts it held back.
//! - [`plan`]: when, pure: the backoff between attempts, the per-target rate window, which due
//!   deliveries go one by one and which into a summary, and how an attempt settles.
//! - [`send`]: one `POST` over http or https (hyper over tokio-rustls with ring), 10 s in all,
//!   never following a redirect.
//! - [`worker`]: the delivery loop `app` runs: it claims due deliveries from the store's outbox,
//!   sends them (a few at a time), records how each ended, and keeps the counts `/health` and
//!   `/metrics` show.
//! - [`check`]: `aop notify test`, a sample alert sent to every target.
//!
//! Deliveries are durable from the commit of their alert (the writers insert them in its
//! transaction: [`crate::store::outbox`]), at least once: a delivery is settled only after its
//! attempt, so a crash between the two sends it again, with the same `X-Aop-Delivery`.
//!
//! **Invariant:** a target's URL and secret never leave this module but in the request they make:
//! a target is shown by its `name`, else by its format and host ([`Target::label`]); its key in
//! the database is a hash.

pub mod check;
pub mod message;
pub mod plan;
pub mod send;
pub mod worker;

use crate::detect::AlertKind;
use crate::store::outbox::{Glob, Outbox, Route};
use serde::Deserialize;
use std::time::Duration;

/// `max_per_minute` when a target does not say.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 30;
/// `notify_max_age` when the settings do not say.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What is wrong with the notification settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("notify must be an array of tables, written [[notify]]; found {0}")]
    NotTables(&'static str),
    #[error("{at}: {reason}")]
    Target { at: String, reason: String },
    #[error("public_url {0}")]
    PublicUrl(String),
}

/// How a target's messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"alert", "session", "link"}`, signed when the target has a secret.
    Json,
    /// A Slack incoming-webhook message.
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// Where a target's requests go, taken apart once. Never shown: it holds the token of most
/// webhooks (Slack's is in the path).
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) https: bool,
    /// As a DNS name or an IP address (without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host[:port]` as written, for the `Host` header.
    pub(crate) authority: String,
    pub(crate) path_and_query: String,
}

/// One `[[notify]]` table, checked.
#[derive(Clone)]
pub struct Target {
    pub name: Option<String>,
    pub format: Format,
    /// Alert types it takes; `None`: all.
    pub kinds: Option<Vec<AlertKind>>,
    /// Glob patterns on `agent_id`; empty: all.
    pub agents: Vec<String>,
    pub max_per_minute: u32,
    /// A stable short hash of its URL and format: what the outbox calls it.
    pub key: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) secret: Option<String>,
}

/// Never the URL or the secret, whoever prints a target.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.label())
    }
}

impl Target {
    /// How the target is shown everywhere: its `name`, else its format and host.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("{} to {}", self.format.as_str(), self.endpoint.host),
        }
    }

    /// The message of one alert, in the target's format.
    pub(crate) fn alert_body(&self, alert: &str, session: &crate::model::SessionRow, base: &str) -> String {
        let link = message::link(base, &session.id);
        match self.format {
            Format::Json => message::json_body(alert, session, &link),
            Format::Slack => message::slack_body(alert, session, &link),
        }
    }

    /// The summary of alerts held back by the target's rate, in its format.
    pub(crate) fn summary_body(&self, held: &[message::Held], base: &str) -> String {
        match self.format {
            Format::Json => message::summary_json(held, self.max_per_minute, base),
            Format::Slack => message::summary_slack(held, self.max_per_minute, base),
        }
    }

    /// Sends a message, signed when the target has a secret; `delivery` is its `X-Aop-Delivery`.
    pub(crate) async fn post(
        &self,
        sender: &send::Sender,
        delivery: &str,
        body: String,
    ) -> Result<u16, send::SendError> {
        let mut headers = vec![("x-aop-delivery", delivery.to_owned())];
        if let Some(secret) = &self.secret {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            headers.push(("x-aop-signature", message::signature(secret, now, body.as_bytes())));
        }
        sender.post(&self.endpoint, &headers, body).await
    }

    /// What the writers match alerts against.
    pub fn route(&self) -> Route {
        Route {
            key: self.key.clone(),
            kinds: self.kinds.clone(),
            agents: self.agents.iter().map(|a| Glob::new(a)).collect(),
        }
    }
}

/// The notification settings `aop start` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Vec<Target>,
    /// How long a delivery is retried before it is marked failed.
    pub max_age: Duration,
    /// The collector's URL as people reach it, for links; `None`: the address it listens on.
    pub public_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { targets: Vec::new(), max_age: DEFAULT_MAX_AGE, public_url: None }
    }
}

impl Settings {
    /// The store's side of the targets: their keys and filters.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.targets.iter().map(Target::route).collect())
    }
}

/// One `[[notify]]` table as written. Unknown keys are refused: a misspelt `types` would
/// otherwise send every alert.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    url: String,
    format: Option<String>,
    secret: Option<String>,
    types: Option<Vec<String>>,
    agents: Option<Vec<String>>,
    max_per_minute: Option<i64>,
}

/// The config file's `notify` value (`None`: no table) as targets.
pub fn targets(file: Option<toml::Value>) -> Result<Vec<Target>, ConfigError> {
    let tables = match file {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items,
        Some(other) => return Err(ConfigError::NotTables(other.type_str())),
    };
    let mut out: Vec<Target> = Vec::with_capacity(tables.len());
    for (i, item) in tables.into_iter().enumerate() {
        // Named by position, and by name once it is known to be one.
        let mut at = format!("[[notify]] #{}", i + 1);
        let bad = |at: &str, reason: String| ConfigError::Target { at: at.to_owned(), reason };
        let toml::Value::Table(table) = item else {
            return Err(bad(&at, format!("must be a table; found {}", item.type_str())));
        };
        if let Some(toml::Value::String(name)) = table.get("name") {
            at = format!("{at} ({})", crate::clean::text(name));
        }
        // toml's message ends with a newline, which would split the line the user reads; it
        // names keys and types, never a string's value.
        let entry =
            Entry::deserialize(toml::Value::Table(table)).map_err(|e| bad(&at, e.to_string().trim_end().to_owned()))?;
        let target = target(entry).map_err(|reason| bad(&at, reason))?;
        if let Some(same) = out.iter().find(|t| t.key == target.key) {
            return Err(bad(&at, format!("has the same url and format as {:?}", same.label())));
        }
        if let Some(name) = &target.name {
            if out.iter().any(|t| t.name.as_ref() == Some(name)) {
                return Err(bad(&at, "has the name of another target".into()));
            }
        }
        out.push(target);
    }
    Ok(out)
}

/// The alert types' names, as `types` takes them.
fn kind(name: &str) -> Option<AlertKind> {
    [AlertKind::Loop, AlertKind::Stall, AlertKind::CostSpike, AlertKind::ConfidenceDrop, AlertKind::ErrorCascade]
        .into_iter()
        .find(|k| k.as_str() == name)
}

fn target(e: Entry) -> Result<Target, String> {
    let format = match e.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("slack") => Format::Slack,
        Some(other) => {
            return Err(format!(
                "format {:?} is not one aop writes: use \"json\" or \"slack\"",
                crate::clean::text(other)
            ))
        }
    };
    let endpoint = endpoint(&e.url)?;
    let name = match e.name {
        Some(n) if n.trim().is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) => {
            return Err("name must be 1 to 100 printable characters".into())
        }
        n => n,
    };
    let secret = match e.secret {
        Some(_) if format == Format::Slack => {
            return Err("secret signs json deliveries; a slack target cannot use it (Slack's URL is its secret)".into())
        }
        Some(s) if s.is_empty() => return Err("secret is empty: leave it out, or give one".into()),
        s => s,
    };
    let kinds = match e.types {
        None => None,
        Some(t) if t.is_empty() => return Err("types = [] would take no alert: leave it out to take them all".into()),
        Some(t) => Some(
            t.iter()
                .map(|name| {
                    kind(name).ok_or_else(|| {
                        format!(
                            "types: {:?} is not an alert type; the types are loop, stall, cost_spike, confidence_drop, error_cascade",
                            crate::clean::text(name)
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let agents = match e.agents {
        None => Vec::new(),
        Some(a) if a.is_empty() => return Err("agents = [] would take no agent: leave it out to take them all".into()),
        Some(a) if a.iter().any(String::is_empty) => return Err("agents: a pattern is empty".into()),
        Some(a) => a,
    };
    let max_per_minute = match e.max_per_minute {
        None => DEFAULT_MAX_PER_MINUTE,
        Some(n) if (1..=10_000).contains(&n) => n as u32,
        Some(n) => return Err(format!("max_per_minute must be between 1 and 10000, got {n}")),
    };
    let key = key(&e.url, format);
    Ok(Target { name, format, kinds, agents, max_per_minute, key, endpoint, secret })
}

/// A target's name in the database: the first 16 hex digits of SHA-256 over its format and
/// URL. Stable across restarts and instances, so a delivery outlives the process that queued
/// it; one-way, so the URL's token is not in the database.
fn key(url: &str, format: Format) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{}", format.as_str(), url.trim()).as_bytes());
    message::hex(&digest[..8])
}

/// `url`, checked and taken apart. Refusals name what is wrong, never the URL.
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, String> {
    let url = url.trim();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let https = match scheme.as_deref() {
        Some("https") => true,
        Some("http") => false,
        Some(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) => {
            return Err(format!("url must be an http:// or https:// URL; this one is {s}:"))
        }
        _ => return Err("url must be an http:// or https:// URL".into()),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| "url is not a valid URL".to_owned())?;
    let authority = uri.authority().ok_or_else(|| "url has no host".to_owned())?;
    if authority.as_str().contains('@') {
        return Err(
            "url must not hold a user or password before the host (put a token in the path, or use secret)".into()
        );
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    if host.is_empty() {
        return Err("url has no host".into());
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(Endpoint { https, host, port, authority: authority.as_str().to_owned(), path_and_query })
}

/// `public_url`, checked: an http or https URL, without a trailing `/`.
pub fn public_url(text: &str) -> Result<String, ConfigError> {
    let url = text.trim().trim_end_matches('/');
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()) && u.query().is_none());
    if !ok {
        return Err(ConfigError::PublicUrl(
            "must be the collector's http:// or https:// URL as people reach it, like https://aop.example.com".into(),
        ));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Target>, ConfigError> {
        let file: toml::Table = toml::from_str(text).unwrap();
        targets(file.get("notify").cloned())
    }

    #[test]
    fn targets_are_read_with_their_defaults() {
        let t = parse(
            "[[notify]]\nurl = \"https://hooks.example.com/aop?x=1\"\nsecret = \"s3\"\n\n\
             [[notify]]\nname = \"team\"\nurl = \"http://[::1]:8080\"\nformat = \"slack\"\ntypes = [\"loop\", \"stall\"]\n\
             agents = [\"research-*\"]\nmax_per_minute = 5\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].format, t[0].max_per_minute, t[0].kinds.is_none()), (Format::Json, 30, true));
        assert_eq!(t[0].label(), "json to hooks.example.com");
        assert_eq!(t[0].endpoint.path_and_query, "/aop?x=1");
        assert_eq!((t[0].endpoint.https, t[0].endpoint.port), (true, 443));
        assert_eq!(t[1].label(), "team");
        assert_eq!((t[1].endpoint.host.as_str(), t[1].endpoint.port, t[1].endpoint.https), ("::1", 8080, false));
        assert_eq!(t[1].endpoint.path_and_query, "/");
        assert_eq!(t[1].kinds, Some(vec![AlertKind::Loop, AlertKind::Stall]));
        assert_eq!(t[1].key.len(), 16);
        assert_ne!(t[0].key, t[1].key);
        // Stable: the same URL and format are the same key, whatever else changes.
        let again = parse("[[notify]]\nurl = \"https://hooks.example.com/aop?x=1\"\nname = \"n\"\n").unwrap();
        assert_eq!(again[0].key, t[0].key);
        assert!(!format!("{:?}", t[0]).contains("aop?x"), "Debug shows the label only");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_targets_are_refused_without_showing_the_url_or_secret() {
        // (file, words the error must hold)
        let cases: &[(&str, &[&str])] = &[
            ("[[notify]]\nurl = \"ftp://tok3n@x/y\"\n", &["#1", "http:// or https://", "ftp:"]),
            ("[[notify]]\nurl = \"file:///etc/tok3n\"\n", &["file:"]),
            ("[[notify]]\nurl = \"hooks.example.com/tok3n\"\n", &["http:// or https://"]),
            ("[[notify]]\nurl = \"https://user:tok3n@x/\"\n", &["user or password"]),
            ("[[notify]]\nurl = \"https://x/tok3n\"\nsecrets = \"tok3n\"\n", &["unknown field", "secrets"]),
            ("[[notify]]\nname = \"ops\"\nurl = \"https://x/tok3n\"\nformat = \"xml\"\n", &["(ops)", "xml"]),
            ("[[notify]]\nurl = \"https://x/tok3n\"\ntypes = [\"loops\"]\n", &["\"loops\"", "error_cascade"]),
            ("[[notify]]\nurl = \"https://x/tok3n\"\ntypes = []\n", &["types = []"]),
            ("[[notify]]\nurl = \"https://x/tok3n\"\nagents = []\n", &["agents = []"]),
            ("[[notify]]\nurl = \"https://x/tok3n\"\nmax_per_minute = 0\n", &["max_per_minute"]),
            ("[[notify]]\nurl = \"https://x/tok3n\"\nformat = \"slack\"\nsecret = \"tok3n\"\n", &["secret"]),
            (
                "[[notify]]\nname = \"a\"\nurl = \"https://x/tok3n\"\n[[notify]]\nurl = \"https://x/tok3n\"\n",
                &["#2", "as \"a\""],
            ),
            ("[[notify]]\nformat = \"json\"\n", &["missing field", "url"]),
            ("[notify]\nurl = \"https://x/tok3n\"\n", &["[[notify]]"]),
            ("notify = [3]\n", &["#1", "table"]),
        ];
        for (file, words) in cases {
            let e = parse(file).expect_err(file).to_string();
            for w in *words {
                assert!(e.contains(w), "{file:?}: {e}");
            }
            assert!(!e.contains("tok3n"), "{file:?} shows a secret: {e}");
        }
    }

    #[test]
    fn public_urls() {
        assert_eq!(public_url("https://aop.example.com/").unwrap(), "https://aop.example.com");
        assert_eq!(public_url("http://10.0.0.5:4317/aop").unwrap(), "http://10.0.0.5:4317/aop");
        for bad in ["aop.example.com", "ftp://x", "https://", "https://x/?q=1"] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }
}
