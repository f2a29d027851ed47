//! Offline detection over exported sessions (`aop detect`): the same detectors as live, fed in file
//! order, with parents and children inside the input linked.
//!
//! Stalls use the collector's clock live, which an export does not record; replay approximates it
//! with event time: a gap between two consecutive events of a running session is a silence.

use super::alert::NewAlert;
use super::config::DetectConfig;
use super::detector::{stall_check, SessionDetector};
use super::json::digest;
use crate::model::Event;
use serde::Serialize;
use std::collections::hash_map::{Entry, HashMap};
use std::fmt::Display;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplayReport {
    /// `(session_id, alert)` in the order they were raised.
    pub alerts: Vec<(String, NewAlert)>,
    /// Lines that are not valid events, or that contradict an earlier line.
    pub errors: Vec<ReplayError>,
    /// Events fed to the detectors.
    pub events: usize,
    /// Lines repeating an earlier event exactly (as in overlapping exports), skipped.
    pub duplicates: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayError {
    /// 1-based line number in the input.
    pub line: usize,
    pub reason: String,
}

#[derive(Default)]
struct Replayed {
    detector: SessionDetector,
    latest_us: Option<i64>,
    parent: Option<String>,
    ended: bool,
    /// An agent waiting for its user between turns: silence is no stall without an open call.
    interactive: bool,
    /// Its turn in progress (`model::session::turn_step`).
    turn_open: bool,
    /// Sequence → (line, digest of the event text): duplicates are skipped, conflicts reported.
    seen: HashMap<i64, (usize, u64)>,
}

/// A child's end, told to its parent's detector (or waiting for the parent's first line).
struct ChildEnd {
    child: String,
    status: String,
    at_us: i64,
}

impl ChildEnd {
    fn tell(&self, parent_id: &str, parent: &mut SessionDetector, cfg: &DetectConfig) -> Option<(String, NewAlert)> {
        parent.observe_child_end(&self.child, &self.status, self.at_us, cfg).map(|a| (parent_id.to_owned(), a))
    }
}

/// Runs every detector over the events of one or more exported sessions (JSONL, in file order).
/// Blank lines are skipped; a line that is not a valid event, or that could not be read (an
/// `Err`, in its place), is reported, never a panic.
pub fn replay<E: Display>(lines: impl Iterator<Item = Result<String, E>>, cfg: &DetectConfig) -> ReplayReport {
    let mut report = ReplayReport::default();
    let mut sessions: HashMap<String, Replayed> = HashMap::new();
    let mut waiting: HashMap<String, Vec<ChildEnd>> = HashMap::new();

    for (i, line) in lines.enumerate() {
        let line_no = i + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                report.errors.push(ReplayError { line: line_no, reason: e.to_string() });
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let ev = match Event::parse(&line) {
            Ok(ev) => ev,
            Err(e) => {
                report.errors.push(ReplayError { line: line_no, reason: e.to_string() });
                continue;
            }
        };
        let id = ev.session_id.clone();
        let s = match sessions.entry(id.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let s = v.insert(Replayed::default());
                // A parent seen for the first time takes the ends of children listed before it.
                for end in waiting.remove(&id).unwrap_or_default() {
                    report.alerts.extend(end.tell(&id, &mut s.detector, cfg));
                }
                s
            }
        };

        let text_digest = digest(&[ev.raw()]);
        if let Some(&(first, d)) = s.seen.get(&ev.sequence) {
            if d == text_digest {
                report.duplicates += 1;
            } else {
                report.errors.push(ReplayError {
                    line: line_no,
                    reason: format!(
                        "sequence {} of session {id} already appeared on line {first} with different content",
                        ev.sequence
                    ),
                });
            }
            continue;
        }
        s.seen.insert(ev.sequence, (line_no, text_digest));
        report.events += 1;

        if ev.kind == "session.started"
            && ev.payload().get("metadata").and_then(|m| m.get("interactive")) == Some(&serde_json::Value::Bool(true))
        {
            s.interactive = true;
        }
        if let Some(prev) = s.latest_us.filter(|_| !s.ended) {
            let silent = ev.ts_us.saturating_sub(prev) as f64 / 1e6;
            let tool_open = s.detector.has_open_tool_call();
            if let Some(a) = stall_check(silent, !s.interactive || tool_open || s.turn_open, tool_open, false, cfg) {
                report.alerts.push((id.clone(), a));
            }
        }
        if s.interactive {
            if let Some(open) = crate::model::turn_step(&ev) {
                s.turn_open = open;
            }
        }
        s.latest_us = Some(s.latest_us.map_or(ev.ts_us, |l| l.max(ev.ts_us)));
        if let Some(p) = &ev.parent_session_id {
            s.parent.get_or_insert_with(|| p.clone());
        }
        for a in s.detector.observe(&ev, cfg) {
            report.alerts.push((id.clone(), a));
        }

        if ev.kind != "session.ended" || s.ended {
            continue;
        }
        s.ended = true;
        let Some(parent_id) = s.parent.clone() else {
            continue;
        };
        // The status as session derivation reads it.
        let status = ev.payload().first_str(&["outcome", "status"]).unwrap_or("completed").to_owned();
        let end = ChildEnd { child: id, status, at_us: ev.ts_us };
        match sessions.get_mut(&parent_id) {
            Some(parent) => report.alerts.extend(end.tell(&parent_id, &mut parent.detector, cfg)),
            None => waiting.entry(parent_id).or_default().push(end),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::AlertKind::{self, *};
    use super::*;

    fn run(text: &str) -> ReplayReport {
        replay(text.lines().map(|l| Ok::<_, String>(l.to_owned())), &DetectConfig::default())
    }

    fn kinds(r: &ReplayReport) -> Vec<(&str, AlertKind, Option<i64>)> {
        r.alerts.iter().map(|(s, a)| (s.as_str(), a.kind, a.sequence)).collect()
    }

    fn line(session: &str, parent: Option<&str>, seq: i64, secs: f64, kind: &str, payload: &str) -> String {
        at(session, parent, seq, secs, kind, payload).raw().to_owned()
    }

    #[test]
    fn replays_a_family_of_sessions() {
        let mut lines = vec![
            line("root", None, 1, 0.0, "session.started", r#"{"goal":"g"}"#),
            line("root", None, 2, 1.0, "operation.agent_spawn", r#"{"child_session_id":"kid1"}"#),
        ];
        for (i, conf) in ["low", "low", "low"].iter().enumerate() {
            lines.push(line(
                "root",
                None,
                3 + i as i64,
                2.0 + i as f64,
                "cognition.thought",
                &format!(r#"{{"confidence":"{conf}"}}"#),
            ));
        }
        lines.push(String::new());
        lines.push("{not json".to_owned());
        lines.push(line("kid1", Some("root"), 1, 5.0, "session.started", "{}"));
        lines.push(line("kid1", Some("root"), 2, 6.0, "session.ended", r#"{"outcome":"failed"}"#));
        lines.push(line("kid2", Some("root"), 1, 7.0, "session.started", "{}"));
        lines.push(line("kid2", None, 2, 20.0, "session.ended", r#"{"status":"failed"}"#));
        lines.push(line("kid2", None, 2, 20.0, "session.ended", r#"{"status":"failed"}"#));
        lines.push(line("kid2", None, 2, 21.0, "session.ended", r#"{"status":"completed"}"#));
        let r = run(&lines.join("\n"));
        assert_eq!(kinds(&r), [("root", ConfidenceDrop, Some(5)), ("root", ErrorCascade, None)]);
        assert_eq!(r.events, 9);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.errors.len(), 2);
        assert_eq!(r.errors[0].line, 7);
        assert!(r.errors[0].reason.contains("not valid JSON"), "{}", r.errors[0].reason);
        assert_eq!(r.errors[1].line, 13);
        assert!(r.errors[1].reason.contains("already appeared on line 11"));
    }

    #[test]
    fn a_line_that_could_not_be_read_is_reported_in_its_place() {
        let lines = [
            Ok(line("s", None, 1, 0.0, "session.started", "{}")),
            Err("a line of 9999999 bytes"),
            Ok(line("s", None, 2, 1.0, "session.ended", "{}")),
        ];
        let r = replay(lines.into_iter(), &DetectConfig::default());
        assert_eq!(r.events, 2);
        assert_eq!(r.errors, [ReplayError { line: 2, reason: "a line of 9999999 bytes".into() }]);
    }

    #[test]
    fn children_listed_before_their_parent_are_linked() {
        let lines = [
            line("kid1", Some("root"), 1, 5.0, "session.ended", r#"{"outcome":"failed"}"#),
            line("kid2", Some("root"), 1, 6.0, "session.ended", r#"{"outcome":"failed"}"#),
            line("orphan1", Some("elsewhere"), 1, 6.0, "session.ended", r#"{"outcome":"failed"}"#),
            line("orphan2", Some("elsewhere"), 1, 6.0, "session.ended", r#"{"outcome":"failed"}"#),
            line("root", None, 1, 0.0, "session.started", "{}"),
        ];
        let r = run(&lines.join("\n"));
        assert_eq!(kinds(&r), [("root", ErrorCascade, None)]);
        assert!(r.errors.is_empty());
    }

    #[test]
    fn gaps_in_event_time_stand_for_stalls() {
        let lines = [
            line("s", None, 1, 0.0, "session.started", "{}"),
            line("s", None, 2, 95.0, "session.heartbeat", "{}"),
            line("s", None, 3, 100.0, "operation.tool_start", r#"{"tool":"slow"}"#),
            line("s", None, 4, 350.0, "operation.tool_end", r#"{"tool":"slow","success":true}"#),
            line("s", None, 5, 360.0, "session.ended", "{}"),
            line("s", None, 6, 999.0, "x-acme.late", "{}"),
        ];
        let r = run(&lines.join("\n"));
        assert_eq!(kinds(&r), [("s", Stall, None)]);
        assert!(r.alerts[0].1.message.starts_with("no event for 95 s"));
    }

    #[test]
    fn replay_matches_live_detection() {
        let events: Vec<Event> = (0..4)
            .flat_map(|i| {
                let s = 1 + 2 * i;
                [
                    ev(s, f64::from(i as i32), "operation.tool_start", r#"{"tool":"web_search","input":{"q":"x"}}"#),
                    ev(
                        s + 1,
                        f64::from(i as i32) + 0.5,
                        "operation.tool_end",
                        r#"{"tool":"web_search","success":false,"error":"timeout"}"#,
                    ),
                ]
            })
            .collect();
        let live = alerts(&events);
        let r = replay(events.iter().map(|e| Ok::<_, String>(e.raw().to_owned())), &DetectConfig::default());
        let replayed: Vec<NewAlert> = r.alerts.into_iter().map(|(_, a)| a).collect();
        assert_eq!(replayed, live);
        assert_eq!(live.len(), 2, "{live:?}");
    }
}
