//! One session's detectors, folded over its events in arrival order, and the stall rule.

use super::alert::{AlertKind, NewAlert, Severity};
use super::config::DetectConfig;
use super::fmt::fmt_secs;
use super::{loops, spend, streaks};
use crate::model::{Event, Payload};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A session's detectors as the guard sees them, copied out after each commit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuardView {
    pub loops: loops::LoopView,
    pub cascade: bool,
}

/// Per-session detector state, folded over the session's events in arrival order.
///
/// Persisted as JSON beside the session; unknown or missing fields load as defaults, so state
/// written by another version still loads.
#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct SessionDetector {
    tools: loops::ToolCalls,
    spend: spend::Spend,
    low_confidence: streaks::Streak,
    tool_failures: streaks::Streak,
    failed_children: streaks::ChildFailures,
}

impl SessionDetector {
    /// Feeds one stored event (never a duplicate), in arrival order; returns the alerts it raises.
    pub fn observe(&mut self, ev: &Event, cfg: &DetectConfig) -> Vec<NewAlert> {
        let kind = ev.kind.as_str();
        // The cost rules read an event's cost through `Event::cost`, which parses what it needs.
        let reads_payload = matches!(
            kind,
            "operation.tool_start" | "operation.tool_end" | "cognition.thought" | "session.heartbeat" | "session.ended"
        );
        let empty = Payload::default();
        let payload = if reads_payload { ev.payload() } else { &empty };

        let mut alerts = Vec::new();
        match kind {
            "operation.tool_start" => alerts.extend(self.tools.start(ev, payload, cfg)),
            "operation.tool_end" => {
                alerts.extend(self.tools.end(ev, payload, cfg));
                if cfg.cascade_enabled {
                    alerts.extend(streaks::tool_end(&mut self.tool_failures, ev, payload, cfg));
                }
            }
            "cognition.thought" if cfg.confidence_enabled => {
                alerts.extend(streaks::thought(&mut self.low_confidence, ev, payload, cfg));
            }
            _ => {}
        }
        alerts.extend(self.spend.observe(ev, payload, cfg));
        alerts
    }

    /// What the guard reads (`GUARD.md`): the recent tool calls, and whether an error cascade
    /// is in progress (its alert raised, and no success or quiet window since).
    pub fn guard_view(&self) -> GuardView {
        GuardView { loops: self.tools.view(), cascade: self.tool_failures.alerted() || self.failed_children.alerted() }
    }

    /// Whether a tool call is open (started, not ended): the stall timer then waits
    /// `stall_after_tool_secs` instead of `stall_after_secs`.
    pub fn has_open_tool_call(&self) -> bool {
        self.tools.has_open()
    }

    /// Called on the parent's detector when one of its children ends, with the child's final
    /// status and the time of its end event (µs since the epoch). Returns the `error_cascade`
    /// alert when `child_fail_count` children ended `failed` within `child_fail_window_secs`.
    pub fn observe_child_end(
        &mut self,
        child_session_id: &str,
        status: &str,
        ended_at_us: i64,
        cfg: &DetectConfig,
    ) -> Option<NewAlert> {
        if !cfg.cascade_enabled {
            return None;
        }
        self.failed_children.child_ended(child_session_id, status, ended_at_us, cfg)
    }
}

/// The stall rule, for a timer outside this module that owns the collector's clock.
///
/// `silent_secs` is the collector time since the session was last heard from; `already_alerted`
/// says a stall was raised for this silence already (the caller clears it when an event arrives,
/// which ends the episode).
pub fn stall_check(
    silent_secs: f64,
    running: bool,
    tool_open: bool,
    already_alerted: bool,
    cfg: &DetectConfig,
) -> Option<NewAlert> {
    if !cfg.stall_enabled || !running || already_alerted {
        return None;
    }
    let limit = if tool_open { cfg.stall_after_tool_secs } else { cfg.stall_after_secs };
    // Not `silent_secs < limit`: a NaN silence is no evidence of a stall.
    let due = silent_secs >= limit;
    if !due {
        return None;
    }
    let message = if tool_open {
        format!("no event for {} while a tool call is open (limit {})", fmt_secs(silent_secs), fmt_secs(limit))
    } else {
        format!("no event for {} (expected a heartbeat every 30 s)", fmt_secs(silent_secs))
    };
    Some(NewAlert {
        kind: AlertKind::Stall,
        severity: Severity::Warning,
        message,
        sequence: None,
        details: json!({
            "silent_secs": silent_secs.floor(),
            "threshold_secs": limit,
            "tool_call_open": tool_open,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::detect::{AlertKind, Severity};

    #[test]
    fn defaults_are_the_spec_table() {
        let d = DetectConfig::default();
        assert_eq!((d.loop_repeats, d.loop_window_secs), (4, 60.0));
        assert_eq!((d.stall_after_secs, d.stall_after_tool_secs), (90.0, 300.0));
        assert_eq!((d.spike_factor, d.spike_min_samples), (5.0, 5));
        assert_eq!(d.cost_budget_usd, None);
        assert_eq!((d.confidence_run, d.cascade_run), (3, 3));
        assert_eq!((d.child_fail_count, d.child_fail_window_secs), (2, 60.0));
        let partial: DetectConfig = serde_json::from_str(r#"{"loop_repeats":6}"#).unwrap();
        assert_eq!(partial, DetectConfig { loop_repeats: 6, ..DetectConfig::default() });
    }

    #[test]
    fn kinds_and_severities_serialise_as_the_api_spells_them() {
        for (kind, name) in [
            (AlertKind::Loop, "loop"),
            (AlertKind::Stall, "stall"),
            (AlertKind::CostSpike, "cost_spike"),
            (AlertKind::ConfidenceDrop, "confidence_drop"),
            (AlertKind::ErrorCascade, "error_cascade"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
        for (sev, name) in [(Severity::Info, "info"), (Severity::Warning, "warning"), (Severity::Critical, "critical")]
        {
            assert_eq!(sev.as_str(), name);
            assert_eq!(serde_json::to_value(sev).unwrap(), name);
        }
    }

    #[test]
    fn stall_rule() {
        let cfg = DetectConfig::default();
        // (silent_secs, running, tool_open, already_alerted, fires)
        let cases = [
            (89.9, true, false, false, false),
            (90.0, true, false, false, true),
            (95.0, true, false, false, true),
            (95.0, true, false, true, false),
            (95.0, false, false, false, false),
            (299.0, true, true, false, false),
            (300.0, true, true, false, true),
            (f64::NAN, true, false, false, false),
        ];
        for (silent, running, open, already, fires) in cases {
            let got = stall_check(silent, running, open, already, &cfg);
            assert_eq!(got.is_some(), fires, "{silent} {running} {open} {already}");
            if let Some(a) = got {
                assert_eq!((a.kind, a.severity, a.sequence), (AlertKind::Stall, Severity::Warning, None));
            }
        }
        let a = stall_check(95.4, true, false, false, &cfg).unwrap();
        assert_eq!(a.message, "no event for 95 s (expected a heartbeat every 30 s)");
        assert_eq!(a.details["threshold_secs"], 90.0);
        let a = stall_check(301.0, true, true, false, &cfg).unwrap();
        assert_eq!(a.message, "no event for 301 s while a tool call is open (limit 300 s)");
        let off = DetectConfig { stall_enabled: false, ..DetectConfig::default() };
        assert!(stall_check(1e6, true, false, false, &off).is_none());
    }

    /// One session where every event-time pattern happens, interleaved; `check` also restarts the
    /// detector (state through JSON) before each event, in the middle of every episode.
    #[test]
    fn a_session_with_every_pattern() {
        let search = r#"{"tool":"web_search","input":{"q":"aop","page":1}}"#;
        let search_reordered = r#"{"input":{"page":1,"q":"aop"},"tool_name":"web_search"}"#;
        let failed = r#"{"tool":"web_search","success":false,"error":"timeout","cost_usd":0.01}"#;
        let low = r#"{"content":"not sure","confidence":"low"}"#;
        let mut events = vec![ev(1, 0.0, "session.started", r#"{"goal":"g"}"#)];
        for i in 0..5 {
            let s = 2 + 3 * i;
            let t = 5.0 * f64::from(i as i32);
            let input = if i % 2 == 0 { search } else { search_reordered };
            events.push(ev(s, t + 1.0, "operation.tool_start", input));
            events.push(ev(s + 1, t + 2.0, "operation.tool_end", failed));
            events.push(ev(s + 2, t + 3.0, "cognition.thought", low));
        }
        events.push(ev(17, 30.0, "operation.tool_end", r#"{"tool":"llm","success":true,"cost_usd":0.09}"#));
        check(
            &events,
            &[
                (AlertKind::ErrorCascade, Some(9)),
                (AlertKind::ConfidenceDrop, Some(10)),
                (AlertKind::Loop, Some(12)),
                (AlertKind::CostSpike, Some(17)),
            ],
        );
    }

    #[test]
    fn junk_payloads_never_panic_and_raise_nothing() {
        let junk = [
            r#"{"tool":7,"tool_name":["x"],"input":null,"tool_call_id":{"a":1}}"#,
            r#"{"success":"false","error":{"deep":[1,2,{"x":null}]},"cost_usd":"1.5","token_spend_delta":-4}"#,
            r#"{"confidence":0.1,"total_cost_usd":"lots","token_spend":null,"total_tokens":true}"#,
            r#"{"a":1,"a":2}"#,
            r#"{}"#,
            r#"{"cost_usd":1e308,"total_cost_usd":-1e308}"#,
        ];
        let kinds = [
            "operation.tool_start",
            "operation.tool_end",
            "cognition.thought",
            "session.heartbeat",
            "session.ended",
            "x-acme.checkpoint",
        ];
        let mut events = Vec::new();
        for payload in junk {
            for kind in kinds {
                events.push(ev(events.len() as i64 + 1, events.len() as f64, kind, payload));
            }
        }
        check(&events, &[]);
    }

    #[test]
    fn state_stays_small_over_a_long_session() {
        let cfg = DetectConfig::default();
        let mut det = SessionDetector::default();
        for i in 0..100_000i64 {
            let secs = i as f64 * 0.5;
            let payload = match i % 5 {
                0 => format!(
                    r#"{{"tool":"search_{}","input":{{"q":"query number {i}"}},"tool_call_id":"call-{i}"}}"#,
                    i % 97
                ),
                1 => format!(
                    r#"{{"tool":"search_{}","success":{},"output_summary":"{i}","cost_usd":0.001,"token_spend_delta":{}}}"#,
                    (i - 1) % 97,
                    i % 3 != 0,
                    100 + i % 7
                ),
                2 => format!(r#"{{"content":"t","confidence":"{}"}}"#, ["low", "medium"][(i % 4 == 2) as usize]),
                3 => {
                    format!(r#"{{"status":"running","token_spend":{},"total_cost_usd":{}}}"#, i * 10, i as f64 / 1000.0)
                }
                _ => format!(r#"{{"tool":"open_forever_{i}","input":{{"blob":"{}"}}}}"#, "x".repeat(500)),
            };
            let kind = [
                "operation.tool_start",
                "operation.tool_end",
                "cognition.thought",
                "session.heartbeat",
                "operation.tool_start",
            ][(i % 5) as usize];
            det.observe(&ev(i + 1, secs, kind, &payload), &cfg).len();
            if i % 50 == 0 {
                det.observe_child_end(&format!("child-{i}"), "failed", i * 500_000, &cfg);
            }
        }
        let size = serde_json::to_string(&det).unwrap().len();
        assert!(size < 16 * 1024, "state grew to {size} bytes");
    }
}
