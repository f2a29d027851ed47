//! "N in a row" rules: `confidence_drop` (low-confidence thoughts) and `error_cascade` (failed
//! tool ends in one session, or failed children of one parent close together).

use super::alert::{AlertKind, NewAlert, Severity};
use super::config::DetectConfig;
use super::fmt::{fmt_secs, rfc3339, secs_to_us};
use super::json::{cut, quote};
use crate::model::Event;
use crate::model::Payload;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::VecDeque;

/// Failed children remembered per parent, for the window; ids are short, so this stays small.
pub const MAX_CHILD_FAILURES: usize = 32;

/// Consecutive events of one kind, and whether this run was alerted already.
#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub(crate) struct Streak {
    run: u32,
    first_seq: i64,
    first_us: i64,
    alerted: bool,
}

impl Streak {
    /// Counts one more; true when the run reaches `needed` for the first time in this episode.
    fn hit(&mut self, ev: &Event, needed: u32) -> bool {
        if self.run == 0 {
            self.first_seq = ev.sequence;
            self.first_us = ev.ts_us;
        }
        self.run = self.run.saturating_add(1);
        if self.run >= needed && !self.alerted {
            self.alerted = true;
            return true;
        }
        false
    }

    /// The current run was alerted and has not been broken since.
    pub(crate) fn alerted(&self) -> bool {
        self.alerted && self.run > 0
    }

    fn reset(&mut self) {
        *self = Streak::default();
    }

    fn span_secs(&self, ev: &Event) -> f64 {
        ev.ts_us.abs_diff(self.first_us) as f64 / 1e6
    }
}

/// A `cognition.thought`: `confidence: "low"` counts, any other confidence resets, and a thought
/// without a (string) confidence does neither, like an end without `success`.
pub(crate) fn thought(s: &mut Streak, ev: &Event, p: &Payload, cfg: &DetectConfig) -> Option<NewAlert> {
    let confidence = p.str("confidence")?;
    if !confidence.eq_ignore_ascii_case("low") {
        s.reset();
        return None;
    }
    if !s.hit(ev, cfg.confidence_run) {
        return None;
    }
    Some(NewAlert {
        kind: AlertKind::ConfidenceDrop,
        severity: Severity::Warning,
        message: format!("{} thoughts in a row with low confidence, over {}", s.run, fmt_secs(s.span_secs(ev))),
        sequence: Some(ev.sequence),
        details: json!({
            "count": s.run,
            "first_sequence": s.first_seq,
            "since": rfc3339(s.first_us),
            "window_secs": s.span_secs(ev),
        }),
    })
}

/// An `operation.tool_end`: `success: false` counts, `success: true` resets, no boolean
/// `success` does neither.
pub(crate) fn tool_end(s: &mut Streak, ev: &Event, p: &Payload, cfg: &DetectConfig) -> Option<NewAlert> {
    if p.bool("success")? {
        s.reset();
        return None;
    }
    if !s.hit(ev, cfg.cascade_run) {
        return None;
    }
    let tool = p.tool().map(|t| cut(t, 128).0);
    let error = p.get("error").map(|e| quote(e, 120));
    let last = match (&tool, &error) {
        (Some(t), Some(e)) => format!(" (last: {t}: {e})"),
        (Some(t), None) => format!(" (last: {t})"),
        (None, Some(e)) => format!(" (last: {e})"),
        (None, None) => String::new(),
    };
    Some(NewAlert {
        kind: AlertKind::ErrorCascade,
        severity: Severity::Critical,
        message: format!("{} tool calls failed in a row{last}", s.run),
        sequence: Some(ev.sequence),
        details: json!({
            "count": s.run,
            "first_sequence": s.first_seq,
            "since": rfc3339(s.first_us),
            "window_secs": s.span_secs(ev),
            "last_tool": tool,
            "last_error": error,
        }),
    })
}

/// A parent's children that ended `failed` recently.
#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub(crate) struct ChildFailures {
    /// (child session id, end time µs), in arrival order.
    recent: VecDeque<(String, i64)>,
    latest_us: Option<i64>,
    /// Whether the current cluster of failures was alerted: further failures within the window
    /// of the previous ones belong to the same episode.
    alerted: bool,
}

impl ChildFailures {
    /// The current cluster of failures was alerted (a later failure out of its window, or
    /// below the count, ends the episode).
    pub(crate) fn alerted(&self) -> bool {
        self.alerted
    }

    pub(crate) fn child_ended(
        &mut self,
        child: &str,
        status: &str,
        at_us: i64,
        cfg: &DetectConfig,
    ) -> Option<NewAlert> {
        if status != "failed" || self.recent.iter().any(|(c, _)| c == child) {
            return None;
        }
        let window = secs_to_us(cfg.child_fail_window_secs);
        let latest = self.latest_us.map_or(at_us, |l| l.max(at_us));
        self.latest_us = Some(latest);
        let horizon = latest.saturating_sub(window);
        self.recent.retain(|(_, t)| *t >= horizon);
        let child = cut(child, 128).0;
        self.recent.push_back((child.clone(), at_us));
        if self.recent.len() > MAX_CHILD_FAILURES {
            self.recent.pop_front();
        }

        let close: Vec<&(String, i64)> =
            self.recent.iter().filter(|(_, t)| t.abs_diff(at_us) <= window.unsigned_abs()).collect();
        if close.len() < cfg.child_fail_count as usize {
            self.alerted = false;
            return None;
        }
        if self.alerted {
            return None;
        }
        self.alerted = true;
        let first = close.iter().map(|(_, t)| *t).min().unwrap_or(at_us);
        let last = close.iter().map(|(_, t)| *t).max().unwrap_or(at_us);
        let span = last.abs_diff(first) as f64 / 1e6;
        let children: Vec<&str> = close.iter().map(|(c, _)| c.as_str()).collect();
        Some(NewAlert {
            kind: AlertKind::ErrorCascade,
            severity: Severity::Critical,
            message: format!("{} child sessions failed within {} (last: {child})", close.len(), fmt_secs(span)),
            sequence: None,
            details: json!({
                "count": close.len(),
                "children": children,
                "window_secs": span,
                "since": rfc3339(first),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::AlertKind::{ConfidenceDrop, ErrorCascade};
    use super::super::SessionDetector;
    use super::*;

    fn thoughts(confidences: &[Option<&str>]) -> Vec<Event> {
        confidences
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (kind, payload) = match c {
                    Some("tool") => ("operation.tool_start", r#"{"tool":"t"}"#.to_owned()),
                    Some(c) => ("cognition.thought", format!(r#"{{"content":"hmm","confidence":"{c}"}}"#)),
                    None => ("cognition.thought", r#"{"reasoning":"hmm"}"#.to_owned()),
                };
                ev(i as i64 + 1, 2.0 * i as f64, kind, &payload)
            })
            .collect()
    }

    #[test]
    fn confidence_drop() {
        let low = Some("low");
        // (confidences in order; "tool" is a non-thought event; None a thought without confidence)
        let cases: &[(&[Option<&str>], &Want)] = &[
            (&[low, low, low], &[(ConfidenceDrop, Some(3))]),
            (&[low, low], &[]),
            (&[low, low, low, low, low], &[(ConfidenceDrop, Some(3))]),
            (&[low, low, Some("medium"), low, low], &[]),
            (&[low, low, Some("high"), low, low, low], &[(ConfidenceDrop, Some(6))]),
            (&[low, Some("tool"), low, Some("tool"), low], &[(ConfidenceDrop, Some(5))]),
            (&[low, None, low, low], &[(ConfidenceDrop, Some(4))]),
            (&[low, low, low, Some("medium"), low, low, low], &[(ConfidenceDrop, Some(3)), (ConfidenceDrop, Some(7))]),
            (&[Some("LOW"), Some("Low"), low], &[(ConfidenceDrop, Some(3))]),
        ];
        for (confidences, want) in cases {
            check(&thoughts(confidences), want);
        }
        let a = &alerts(&thoughts(&[low, low, low]))[0];
        assert_eq!(a.message, "3 thoughts in a row with low confidence, over 4 s");
        assert_eq!(a.details["first_sequence"], 1);
        let off = DetectConfig { confidence_enabled: false, ..DetectConfig::default() };
        check_with(&off, &thoughts(&[low, low, low]), &[]);
    }

    fn tool_ends(results: &[&str]) -> Vec<Event> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let payload = match *r {
                    "ok" => r#"{"tool":"web_search","success":true}"#.to_owned(),
                    "none" => r#"{"tool":"web_search","output_summary":"?"}"#.to_owned(),
                    "thought" => r#"{"content":"retrying"}"#.to_owned(),
                    error => {
                        format!(r#"{{"tool":"web_search","success":false,"error":"{error}"}}"#)
                    }
                };
                let kind = if *r == "thought" { "cognition.thought" } else { "operation.tool_end" };
                ev(i as i64 + 1, i as f64, kind, &payload)
            })
            .collect()
    }

    #[test]
    fn error_cascade_in_a_session() {
        let cases: &[(&[&str], &Want)] = &[
            (&["e", "e", "e"], &[(ErrorCascade, Some(3))]),
            (&["e", "e"], &[]),
            (&["e", "e", "ok", "e", "e"], &[]),
            (&["e", "none", "e", "e"], &[(ErrorCascade, Some(4))]),
            (&["none", "none", "none"], &[]),
            (&["e", "thought", "e", "e"], &[(ErrorCascade, Some(4))]),
            (&["e", "e", "e", "e", "e"], &[(ErrorCascade, Some(3))]),
            (&["e", "e", "e", "ok", "e", "e", "e"], &[(ErrorCascade, Some(3)), (ErrorCascade, Some(7))]),
        ];
        for (results, want) in cases {
            check(&tool_ends(results), want);
        }
        let a = &alerts(&tool_ends(&["e", "e", "timeout"]))[0];
        assert_eq!(a.message, "3 tool calls failed in a row (last: web_search: timeout)");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.details["last_error"], "timeout");
        let off = DetectConfig { cascade_enabled: false, ..DetectConfig::default() };
        check_with(&off, &tool_ends(&["e", "e", "e"]), &[]);
    }

    #[test]
    fn failed_children_alert_the_parent() {
        let cfg = DetectConfig::default();
        type ChildEnd = (&'static str, &'static str, i64);
        // (child endings as (child, status, seconds), the indexes of those that raise an alert)
        let cases: &[(&[ChildEnd], &[usize])] = &[
            (&[("c1", "failed", 0), ("c2", "failed", 30)], &[1]),
            (&[("c1", "failed", 0), ("c2", "failed", 60)], &[1]),
            (&[("c1", "failed", 0), ("c2", "failed", 90)], &[]),
            (&[("c1", "completed", 0), ("c2", "failed", 10)], &[]),
            (&[("c1", "failed", 0), ("c2", "cancelled", 10), ("c3", "timeout", 20)], &[]),
            (&[("c1", "failed", 0), ("c1", "failed", 10)], &[]),
            (&[("c1", "failed", 0), ("c2", "failed", 10), ("c3", "failed", 20)], &[1]),
            (&[("c1", "failed", 0), ("c2", "failed", 10), ("c3", "failed", 200), ("c4", "failed", 210)], &[1, 3]),
            (&[("c2", "failed", 50), ("c1", "failed", 0)], &[1]),
        ];
        for (ends, want) in cases {
            let mut det = SessionDetector::default();
            let mut got = Vec::new();
            for (i, (child, status, secs)) in ends.iter().enumerate() {
                // A restart between any two ends changes nothing.
                det = serde_json::from_str(&serde_json::to_string(&det).unwrap()).unwrap();
                if let Some(a) = det.observe_child_end(child, status, BASE_US + secs * 1_000_000, &cfg) {
                    assert_eq!((a.kind, a.severity, a.sequence), (ErrorCascade, Severity::Critical, None));
                    got.push(i);
                }
            }
            assert_eq!(&got, want, "{ends:?}");
        }
        let mut det = SessionDetector::default();
        det.observe_child_end("sess_a", "failed", BASE_US, &cfg);
        let a = det.observe_child_end("sess_b", "failed", BASE_US + 12_000_000, &cfg).unwrap();
        assert_eq!(a.message, "2 child sessions failed within 12 s (last: sess_b)");
        assert_eq!(a.details["children"], serde_json::json!(["sess_a", "sess_b"]));
        let off = DetectConfig { cascade_enabled: false, ..DetectConfig::default() };
        let mut det = SessionDetector::default();
        det.observe_child_end("a", "failed", BASE_US, &off);
        assert!(det.observe_child_end("b", "failed", BASE_US, &off).is_none());
    }
}
