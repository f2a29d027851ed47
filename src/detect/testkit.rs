//! Test support: events at given seconds after a fixed instant, and the `check` helper every
//! detector's table goes through.

use super::alert::{AlertKind, NewAlert};
use super::config::DetectConfig;
use super::detector::SessionDetector;
use crate::model::Event;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const BASE: OffsetDateTime = datetime!(2026-04-03 10:00 UTC);
/// The fixed instant, in µs since the epoch.
pub(super) const BASE_US: i64 = 1_775_210_400_000_000;

/// Expected alerts: kind and triggering sequence, in order.
pub(super) type Want = [(AlertKind, Option<i64>)];

/// An event of session `session` (child of `parent`), `secs` after the fixed instant.
pub(super) fn at(session: &str, parent: Option<&str>, seq: i64, secs: f64, kind: &str, payload: &str) -> Event {
    let ts = (BASE + Duration::seconds_f64(secs)).format(&Rfc3339).unwrap();
    let parent = parent.map_or("null".to_owned(), |p| format!("\"{p}\""));
    Event::parse(&format!(
        r#"{{"spec":"aop/1.0","session_id":"{session}","parent_session_id":{parent},"agent_id":"a","sequence":{seq},"timestamp":"{ts}","type":"{kind}","payload":{payload}}}"#
    ))
    .unwrap()
}

/// An event of session `s1`.
pub(super) fn ev(seq: i64, secs: f64, kind: &str, payload: &str) -> Event {
    at("s1", None, seq, secs, kind, payload)
}

pub(super) fn alerts_with(cfg: &DetectConfig, events: &[Event]) -> Vec<NewAlert> {
    let mut det = SessionDetector::default();
    events.iter().flat_map(|e| det.observe(e, cfg)).collect()
}

pub(super) fn alerts(events: &[Event]) -> Vec<NewAlert> {
    alerts_with(&DetectConfig::default(), events)
}

/// Feeds `events` and compares the alerts' kinds and triggering sequences with `want`. Then
/// replays with a restart (state through JSON) before every event and demands the very same
/// alerts: a restart mid-episode neither loses a detection nor repeats one.
pub(super) fn check_with(cfg: &DetectConfig, events: &[Event], want: &Want) {
    let got = alerts_with(cfg, events);
    let brief: Vec<_> = got.iter().map(|a| (a.kind, a.sequence)).collect();
    assert_eq!(brief, want, "{got:#?}");
    for split in 1..events.len() {
        let mut det = SessionDetector::default();
        let mut again: Vec<NewAlert> = events[..split].iter().flat_map(|e| det.observe(e, cfg)).collect();
        let saved = serde_json::to_string(&det).unwrap();
        let mut det: SessionDetector = serde_json::from_str(&saved).unwrap();
        again.extend(events[split..].iter().flat_map(|e| det.observe(e, cfg)));
        assert_eq!(again, got, "restart before event {split}");
    }
}

pub(super) fn check(events: &[Event], want: &Want) {
    check_with(&DetectConfig::default(), events, want);
}

#[test]
fn base_is_the_fixed_instant() {
    assert_eq!(at("s", None, 1, 0.0, "t", "{}").ts_us, BASE_US);
    assert_eq!(at("s", None, 1, 1.5, "t", "{}").timestamp, "2026-04-03T10:00:01.5Z");
}
