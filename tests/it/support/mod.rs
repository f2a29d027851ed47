//! What the tests stand on: the real `aop` binary in a sandbox ([`server`]), AOP event builders
//! ([`events`]), files aop must refuse as databases and a file's look from outside ([`files`]),
//! a Server-Sent Events reader ([`sse`]), a few raw-socket helpers ([`raw`]), HTTP/2 frames by
//! hand ([`h2c`]), readings of what a process holds ([`resources`]), the Python OpenTelemetry
//! clients of `tests/otel/` in their pinned environment ([`pyenv`]), real PostgreSQL servers of
//! the tests' own, from the machine's packages ([`pg`]), and the real coding-agent CLIs run
//! offline against a scripted model ([`agents`]), and a webhook receiver that records what it
//! gets ([`webhook`]).
//!
//! Tests never read the machine's `~/.aop`: every process gets a fresh temporary `HOME` and a
//! scrubbed environment (no `AOP_*`, no `RUST_LOG`).

pub(crate) mod agents;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod h2c;
pub(crate) mod pg;
pub(crate) mod pyenv;
pub(crate) mod raw;
pub(crate) mod resources;
pub(crate) mod server;
pub(crate) mod sse;
pub(crate) mod webhook;

pub(crate) use events::{at, event, export_with_a_huge_line, ndjson, EventExt};
pub(crate) use server::{Finished, Launch, Sandbox, TestServer};
pub(crate) use sse::Frame;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// How long a test waits for something that should happen promptly. Generous: it only stops
/// a hang, it never measures performance.
pub(crate) const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, or panics with `what` after [`PATIENCE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Prometheus text exposition, as `series -> value` (`name` or `name{labels}`).
#[derive(Debug)]
pub(crate) struct Metrics(pub(crate) BTreeMap<String, f64>);

impl Metrics {
    pub(crate) fn parse(text: &str) -> Metrics {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
            map.insert(series.to_owned(), value);
        }
        Metrics(map)
    }

    /// The value of a series, which must exist.
    pub(crate) fn get(&self, series: &str) -> f64 {
        *self.0.get(series).unwrap_or_else(|| panic!("no series {series:?} in {:#?}", self.0))
    }
}

/// Control characters in `text` other than the newlines that end its lines: what a terminal
/// would obey (C0, DEL, C1).
pub(crate) fn control_characters(text: &str) -> Vec<char> {
    text.chars().filter(|&c| c.is_control() && c != '\n').collect()
}

/// Text holding what an agent could send to take over a terminal: colours, an OSC window title
/// ended by BEL and by ST, a screen clear, and U+009B (CSI in one 8-bit character).
pub(crate) const HOSTILE_TEXT: &str = "\u{1b}[31mred\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}1m\u{1b}]2;t\u{1b}\\";
