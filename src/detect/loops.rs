//! Tool calls: pairing starts with ends (`AOP.md`: by `tool_call_id` when both carry it, else the
//! oldest open call of that tool), and the `loop` rule on top of them.
//!
//! A loop is judged on a *run*: walking back from the newest call of one (tool, canonical input)
//! group, the calls whose start lies within `loop_window_secs` of that newest call, until the
//! first completed call whose outcome differs from the run's. A run of `loop_repeats` calls is a
//! loop. So paging (inputs differ) and polling a changing job (outcomes differ) never make a run,
//! and a different outcome breaks the episode; a new run must then reach `loop_repeats` again.
//!
//! When the run is decided: once the session has reported any tool end, only when a call
//! completes, so that the outcome of the last call counts (three failures and a successful retry
//! are progress, not a loop); for a session that never reports ends, at the start that completes
//! the count.
//!
//! Events may arrive out of order: an end that finds no open call waits (a few of them) for a
//! start with a lower sequence that it pairs with.

use super::alert::{AlertKind, NewAlert, Severity};
use super::config::DetectConfig;
use super::fmt::{fmt_secs, rfc3339, secs_to_us};
use super::json::{canonical, cut, digest};
use crate::model::Event;
use crate::model::Payload;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::VecDeque;

/// Calls kept, open or recently completed. The state is saved with the session (every 32 events)
/// and replayed after a restart, so this is small; it still holds several loops' worth of calls inside one window. A `loop_repeats` above it
/// acts as this number.
pub const MAX_CALLS: usize = 32;
/// Tool names and call ids are kept to this many bytes (they are labels, not content).
const MAX_LABEL_BYTES: usize = 128;
/// The input is kept as a hash; this much of its canonical text is kept to quote in the alert.
const INPUT_PREVIEW_BYTES: usize = 160;
/// Ends that arrived before their start, kept for it; a start normally trails its end by moments.
const MAX_EARLY_ENDS: usize = 8;

#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub(crate) struct ToolCalls {
    /// In start order. Completed calls leave once they are older than the window; open ones stay
    /// until their end, since they decide the stall threshold, or until [`MAX_CALLS`] newer calls
    /// have started.
    calls: VecDeque<Call>,
    /// Ends that arrived before any start they pair with, oldest first.
    early_ends: VecDeque<EarlyEnd>,
    /// Groups whose loop was alerted and has not broken since: one alert per episode.
    looping: Vec<u64>,
    /// Whether the session ever reported a tool end; if so, a loop waits for its last outcome.
    ends_seen: bool,
    /// The latest event time seen, the reference for forgetting old calls.
    latest_us: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Call {
    tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_id: Option<String>,
    /// Digest of the tool name and canonical input: calls of one group are "the same call".
    group: u64,
    /// The start of the canonical input, for the alert.
    input: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    input_cut: bool,
    seq: i64,
    at_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

impl Call {
    fn mark(&self) -> Mark {
        Mark { group: self.group, at_us: self.at_us, outcome: self.outcome }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct EarlyEnd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_id: Option<String>,
    seq: i64,
    outcome: Outcome,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Outcome {
    success: Option<bool>,
    /// Digest of the success flag, the output summary and the error.
    digest: u64,
}

impl Outcome {
    fn of(p: &Payload) -> Self {
        let text = |v: Option<&Value>| v.map_or_else(|| "null".to_owned(), canonical);
        let success = p.bool("success");
        let summary = p.get("output_summary").or_else(|| p.get("result_summary"));
        Outcome { success, digest: digest(&[&text(p.get("success")), &text(summary), &text(p.get("error"))]) }
    }
}

/// A label from the payload, kept short.
fn label(s: &str) -> String {
    cut(s, MAX_LABEL_BYTES).0
}

/// `tool_call_id`, as a string; some SDKs send numbers.
fn call_id(p: &Payload) -> Option<String> {
    match p.get("tool_call_id")? {
        Value::String(s) => Some(label(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// How well an end (tool, id) pairs with a start: `Some(0)` by `tool_call_id` (both carry it),
/// `Some(1)` by tool name (one of them has no id), `None` when two different ids say they don't.
fn pairing(end_tool: Option<&str>, end_id: Option<&str>, start_tool: &str, start_id: Option<&str>) -> Option<u8> {
    match (end_id, start_id) {
        (Some(a), Some(b)) if a == b => Some(0),
        (Some(_), Some(_)) => None,
        _ => (end_tool == Some(start_tool)).then_some(1),
    }
}

/// The calls of one group that would form a loop.
struct Run<'a> {
    count: u32,
    oldest: &'a Call,
    newest: &'a Call,
    outcome: Option<Outcome>,
}

/// What the run rule reads of a call: its group, its start and its outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mark {
    group: u64,
    at_us: i64,
    outcome: Option<Outcome>,
}

/// A run of one group, walking back from its newest call (the first of `marks`, newest first):
/// its length, the index of its oldest call, and its outcome.
fn run_of(
    mut marks: impl Iterator<Item = (usize, Mark)>,
    group: u64,
    window_us: i64,
) -> Option<(u32, usize, Option<Outcome>)> {
    let mut members = marks.by_ref().filter(|(_, m)| m.group == group);
    let (first, newest) = members.next()?;
    let (mut count, mut oldest, mut outcome) = (1, first, newest.outcome);
    for (i, m) in members {
        if newest.at_us.abs_diff(m.at_us) > window_us.unsigned_abs() {
            break;
        }
        match (outcome, m.outcome) {
            (Some(a), Some(b)) if a != b => break,
            (None, Some(b)) => outcome = Some(b),
            _ => {}
        }
        count += 1;
        oldest = i;
    }
    Some((count, oldest, outcome))
}

/// A session's recent tool calls as the guard reads them (`GUARD.md`, condition `loop`): small
/// and copied out of the writer after each commit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopView {
    /// Newest first.
    marks: Vec<Mark>,
    looping: Vec<u64>,
    latest_us: Option<i64>,
}

/// How a call the agent is about to make stands to the loop rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopVerdict {
    /// A loop alert of this session is about this call, and its episode has not broken.
    Alerted { count: u32 },
    /// This call would be the one that completes a loop.
    WouldComplete { count: u32 },
}

impl LoopView {
    /// `tool` with `input`, compared as the detector compares calls, made now (the session's
    /// latest event time: the agent's clock, not the collector's).
    pub fn verdict(&self, tool: &str, input: &Value, cfg: &DetectConfig) -> Option<LoopVerdict> {
        if !cfg.loop_enabled {
            return None;
        }
        let group = digest(&[&label(tool), &canonical(input)]);
        let window = secs_to_us(cfg.loop_window_secs);
        let needed = cfg.loop_repeats.min(MAX_CALLS as u32);
        let next = Mark { group, at_us: self.latest_us.unwrap_or(0), outcome: None };
        let (count, _, _) = run_of(std::iter::once(next).chain(self.marks.iter().copied()).enumerate(), group, window)?;
        if self.looping.contains(&group) {
            return Some(LoopVerdict::Alerted { count: count - 1 });
        }
        (count >= needed).then_some(LoopVerdict::WouldComplete { count })
    }
}

impl ToolCalls {
    pub(crate) fn has_open(&self) -> bool {
        self.calls.iter().any(|c| c.outcome.is_none())
    }

    pub(crate) fn start(&mut self, ev: &Event, p: &Payload, cfg: &DetectConfig) -> Option<NewAlert> {
        self.forget(ev.ts_us, cfg);
        let tool = label(p.tool().unwrap_or(""));
        let input = canonical(p.get("input").unwrap_or(&Value::Null));
        let group = digest(&[&tool, &input]);
        let (input, input_cut) = cut(&input, INPUT_PREVIEW_BYTES);
        let id = call_id(p);
        let early = self
            .early_ends
            .iter()
            .enumerate()
            .filter(|(_, e)| e.seq > ev.sequence)
            .filter_map(|(i, e)| {
                pairing(e.tool.as_deref(), e.call_id.as_deref(), &tool, id.as_deref()).map(|rank| (rank, i))
            })
            .min()
            .and_then(|(_, i)| self.early_ends.remove(i));
        let ended = early.is_some();
        self.calls.push_back(Call {
            tool,
            call_id: id,
            group,
            input,
            input_cut,
            seq: ev.sequence,
            at_us: ev.ts_us,
            outcome: early.map(|e| e.outcome),
        });
        self.evict();
        if self.ends_seen && !ended {
            return None;
        }
        self.judge(group, ev.sequence, cfg)
    }

    pub(crate) fn end(&mut self, ev: &Event, p: &Payload, cfg: &DetectConfig) -> Option<NewAlert> {
        self.forget(ev.ts_us, cfg);
        self.ends_seen = true;
        let tool = p.tool().map(label);
        let id = call_id(p);
        let outcome = Outcome::of(p);
        // The open call with the same id, else the oldest open call of the tool.
        let paired = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.outcome.is_none())
            .filter_map(|(i, c)| {
                pairing(tool.as_deref(), id.as_deref(), &c.tool, c.call_id.as_deref()).map(|rank| (rank, i))
            })
            .min();
        let Some(call) = paired.and_then(|(_, i)| self.calls.get_mut(i)) else {
            self.early_ends.push_back(EarlyEnd { tool, call_id: id, seq: ev.sequence, outcome });
            if self.early_ends.len() > MAX_EARLY_ENDS {
                self.early_ends.pop_front();
            }
            return None;
        };
        call.outcome = Some(outcome);
        let group = call.group;
        self.judge(group, ev.sequence, cfg)
    }

    /// Decides a group after one of its calls started or ended, raising the episode's alert.
    fn judge(&mut self, group: u64, trigger: i64, cfg: &DetectConfig) -> Option<NewAlert> {
        if !cfg.loop_enabled {
            return None;
        }
        let needed = cfg.loop_repeats.min(MAX_CALLS as u32);
        let Some(run) = self.run(group, cfg).filter(|r| r.count >= needed) else {
            self.looping.retain(|g| *g != group);
            return None;
        };
        if self.looping.contains(&group) || run.newest.tool.is_empty() {
            return None;
        }
        let alert = loop_alert(&run, trigger);
        self.looping.push(group);
        Some(alert)
    }

    fn run(&self, group: u64, cfg: &DetectConfig) -> Option<Run<'_>> {
        let newest = self.calls.iter().rev().find(|c| c.group == group)?;
        let marks = self.calls.iter().rev().map(Call::mark).enumerate();
        let (count, oldest, outcome) = run_of(marks, group, secs_to_us(cfg.loop_window_secs))?;
        let oldest = self.calls.iter().rev().nth(oldest)?;
        Some(Run { count, oldest, newest, outcome })
    }

    /// The calls as the guard reads them.
    pub(crate) fn view(&self) -> LoopView {
        LoopView {
            marks: self.calls.iter().rev().map(Call::mark).collect(),
            looping: self.looping.clone(),
            latest_us: self.latest_us,
        }
    }

    /// Forgets completed calls that can no longer join a run, and episodes with no call left.
    fn forget(&mut self, now_us: i64, cfg: &DetectConfig) {
        let latest = self.latest_us.map_or(now_us, |l| l.max(now_us));
        self.latest_us = Some(latest);
        let horizon = latest.saturating_sub(secs_to_us(cfg.loop_window_secs));
        self.calls.retain(|c| c.outcome.is_none() || c.at_us >= horizon);
        self.drop_stale_episodes();
    }

    /// Keeps the latest [`MAX_CALLS`] starts: a call that never ends (an SDK that drops ends)
    /// ages out as newer calls start, instead of crowding them out.
    fn evict(&mut self) {
        while self.calls.len() > MAX_CALLS {
            self.calls.pop_front();
        }
        self.drop_stale_episodes();
    }

    fn drop_stale_episodes(&mut self) {
        let calls = &self.calls;
        self.looping.retain(|g| calls.iter().any(|c| c.group == *g));
    }
}

fn loop_alert(run: &Run<'_>, trigger: i64) -> NewAlert {
    let span = run.newest.at_us.abs_diff(run.oldest.at_us) as f64 / 1e6;
    let result = match run.outcome {
        None => "",
        Some(o) if o.success == Some(false) => ", failing the same way each time",
        Some(_) => ", same result each time",
    };
    let tool = &run.newest.tool;
    let input = if run.newest.input_cut {
        Value::String(format!("{}…", run.newest.input))
    } else {
        serde_json::from_str(&run.newest.input).unwrap_or(Value::Null)
    };
    NewAlert {
        kind: AlertKind::Loop,
        severity: Severity::Warning,
        message: format!("{tool} called {} times with the same input in {}{result}", run.count, fmt_secs(span)),
        sequence: Some(trigger),
        details: json!({
            "tool": tool,
            "input": input,
            "input_truncated": run.newest.input_cut,
            "count": run.count,
            "window_secs": span,
            "first_sequence": run.oldest.seq,
            "last_sequence": run.newest.seq,
            "since": rfc3339(run.oldest.at_us),
            "success": run.outcome.and_then(|o| o.success),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{AlertKind::Loop, SessionDetector};
    use super::*;

    /// Start/end pairs of `tool` at `times`, with `inputs[i]` and `results[i]` (cycled), numbered
    /// from `first_seq`; the end comes 0.5 s after its start.
    fn calls(first_seq: i64, tool: &str, times: &[f64], inputs: &[&str], results: &[&str]) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            let seq = first_seq + 2 * i as i64;
            let input = inputs[i % inputs.len()];
            let result = results[i % results.len()];
            out.push(ev(seq, t, "operation.tool_start", &format!(r#"{{"tool":"{tool}","input":{input}}}"#)));
            out.push(ev(seq + 1, t + 0.5, "operation.tool_end", &format!(r#"{{"tool":"{tool}",{result}}}"#)));
        }
        out
    }

    const Q: &str = r#"{"q":"aop spec"}"#;
    const SAME: &str = r#""success":true,"output_summary":"3 results""#;

    #[test]
    fn the_same_call_four_times_is_a_loop() {
        // Ends are at even sequences: the 4th call ends at 8.
        check(&calls(1, "web_search", &[0.0, 8.0, 16.0, 24.0], &[Q], &[SAME]), &[(Loop, Some(8))]);
        check(&calls(1, "web_search", &[0.0, 8.0, 16.0], &[Q], &[SAME]), &[]);
    }

    #[test]
    fn the_message_says_what_how_often_and_how_long() {
        let loops = |events: &[Event]| alerts(events).into_iter().filter(|a| a.kind == Loop).collect::<Vec<_>>();
        let a = &loops(&calls(1, "web_search", &[0.0, 8.0, 16.0, 24.0], &[Q], &[SAME]))[0];
        assert_eq!(a.message, "web_search called 4 times with the same input in 24 s, same result each time");
        assert_eq!(a.severity, Severity::Warning);
        assert_eq!(a.details["tool"], "web_search");
        assert_eq!(a.details["input"], serde_json::json!({"q": "aop spec"}));
        assert_eq!(a.details["count"], 4);
        assert_eq!(a.details["window_secs"], 24.0);
        assert_eq!(a.details["first_sequence"], 1);
        assert_eq!(a.details["since"], "2026-04-03T10:00:00Z");
        let failing = loops(&calls(1, "fetch", &[0.0, 1.0, 2.0, 3.0], &[Q], &[r#""success":false,"error":"timeout""#]));
        assert_eq!(
            failing[0].message,
            "fetch called 4 times with the same input in 3 s, failing the same way each time"
        );
    }

    #[test]
    fn progress_is_not_a_loop() {
        let cases: &[(&str, Vec<Event>)] = &[
            (
                "paging",
                calls(
                    1,
                    "list",
                    &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                    &[
                        r#"{"page":1}"#,
                        r#"{"page":2}"#,
                        r#"{"page":3}"#,
                        r#"{"page":4}"#,
                        r#"{"page":5}"#,
                        r#"{"page":6}"#,
                    ],
                    &[SAME],
                ),
            ),
            (
                "polling a changing job",
                calls(
                    1,
                    "job_status",
                    &[0.0, 5.0, 10.0, 15.0, 20.0],
                    &[r#"{"job":"j1"}"#],
                    &[
                        r#""success":true,"output_summary":"10%""#,
                        r#""success":true,"output_summary":"40%""#,
                        r#""success":true,"output_summary":"70%""#,
                        r#""success":true,"output_summary":"90%""#,
                        r#""success":true,"output_summary":"done""#,
                    ],
                ),
            ),
            (
                "retry then success",
                calls(
                    1,
                    "fetch",
                    &[0.0, 2.0, 4.0, 6.0],
                    &[Q],
                    &[
                        r#""success":false,"error":"timeout""#,
                        r#""success":false,"error":"timeout""#,
                        r#""success":false,"error":"timeout""#,
                        r#""success":true,"output_summary":"ok""#,
                    ],
                ),
            ),
            (
                "repeats spread over minutes",
                calls(1, "web_search", &[0.0, 40.0, 80.0, 120.0, 160.0, 200.0], &[Q], &[SAME]),
            ),
            (
                "same input, other tools",
                [calls(1, "a", &[0.0, 1.0], &[Q], &[SAME]), calls(5, "b", &[2.0, 3.0], &[Q], &[SAME])].concat(),
            ),
        ];
        for (name, events) in cases {
            let got: Vec<_> = alerts(events).into_iter().filter(|a| a.kind == Loop).collect();
            assert!(got.is_empty(), "{name}: {got:?}");
        }
    }

    #[test]
    fn one_alert_per_episode_and_again_after_a_break() {
        check(&calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], &[Q], &[SAME]), &[(Loop, Some(8))]);
        let other = r#""success":true,"output_summary":"0 results""#;
        let mut events = calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0, 4.0], &[Q], &[SAME]);
        events.extend(calls(11, "web_search", &[5.0], &[Q], &[other]));
        events.extend(calls(13, "web_search", &[6.0, 7.0, 8.0, 9.0], &[Q], &[SAME]));
        check(&events, &[(Loop, Some(8)), (Loop, Some(20))]);
        // A pause longer than the window also ends the episode.
        let mut events = calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0], &[Q], &[SAME]);
        events.extend(calls(9, "web_search", &[100.0, 101.0, 102.0, 103.0], &[Q], &[SAME]));
        check(&events, &[(Loop, Some(8)), (Loop, Some(16))]);
    }

    #[test]
    fn outcomes_before_a_change_do_not_hide_a_later_loop() {
        let changing = [
            r#""success":true,"output_summary":"a""#,
            r#""success":true,"output_summary":"b""#,
            SAME,
            SAME,
            SAME,
            SAME,
        ];
        check(&calls(1, "poll", &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[Q], &changing), &[(Loop, Some(12))]);
    }

    #[test]
    fn key_order_and_number_spelling_do_not_hide_a_loop() {
        let inputs = [
            r#"{"q":"x","opts":{"a":1,"b":[1,2]}}"#,
            r#"{"opts":{"b":[1,2],"a":1},"q":"x"}"#,
            r#"{"opts":{"a":1.0,"b":[1,2]},"q":"x"}"#,
        ];
        check(&calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0], &inputs, &[SAME]), &[(Loop, Some(8))]);
        let outcomes =
            [r#""success":true,"output_summary":{"n":1,"m":2}"#, r#""output_summary":{"m":2,"n":1},"success":true"#];
        check(&calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0], &[Q], &outcomes), &[(Loop, Some(8))]);
    }

    #[test]
    fn both_vocabularies() {
        let mut events = Vec::new();
        for i in 0..4 {
            let s = 1 + 2 * i;
            events.push(ev(s, i as f64, "operation.tool_start", r#"{"tool_name":"web_search","input":{"q":1}}"#));
            events.push(ev(
                s + 1,
                i as f64 + 0.1,
                "operation.tool_end",
                r#"{"tool":"web_search","success":true,"result_summary":"r"}"#,
            ));
        }
        check(&events, &[(Loop, Some(8))]);
    }

    #[test]
    fn ends_that_overtake_their_starts_still_count() {
        let mut events = calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0], &[Q], &[SAME]);
        events.swap(4, 5); // the 3rd call's end arrives before its start
        events.swap(6, 7); // so does the 4th's, which completes the loop
        check(&events, &[(Loop, Some(7))]);
    }

    #[test]
    fn without_ends_the_fourth_start_decides() {
        let events: Vec<Event> = (1..=5)
            .map(|i| ev(i, i as f64, "operation.tool_start", r#"{"tool":"web_search","input":{"q":1}}"#))
            .collect();
        check(&events, &[(Loop, Some(4))]);
        assert!(alerts(&events)[0].message.ends_with("in 3 s"));
    }

    #[test]
    fn ends_pair_by_id_then_by_oldest_open_call_of_the_tool() {
        let start = |seq, tool: &str, id: Option<&str>| {
            let id = id.map_or(String::new(), |i| format!(r#","tool_call_id":"{i}""#));
            ev(seq, seq as f64, "operation.tool_start", &format!(r#"{{"tool":"{tool}","input":{{"n":{seq}}}{id}}}"#))
        };
        let end = |seq, tool: &str, id: Option<&str>| {
            let id = id.map_or(String::new(), |i| format!(r#","tool_call_id":"{i}""#));
            ev(seq, seq as f64, "operation.tool_end", &format!(r#"{{"tool":"{tool}","success":true{id}}}"#))
        };
        let open_after = |events: &[Event]| {
            let mut t = ToolCalls::default();
            let cfg = DetectConfig::default();
            for e in events {
                let p = e.payload().clone();
                if e.kind == "operation.tool_start" {
                    t.start(e, &p, &cfg);
                } else {
                    t.end(e, &p, &cfg);
                }
            }
            t.calls.iter().filter(|c| c.outcome.is_none()).map(|c| c.seq).collect::<Vec<_>>()
        };
        // (events, sequences of the starts left open)
        let cases = [
            (vec![start(1, "a", Some("x")), start(2, "a", Some("y")), end(3, "a", Some("y"))], vec![1]),
            (vec![start(1, "a", None), start(2, "a", None), end(3, "a", None)], vec![2]),
            (vec![start(1, "a", None), start(2, "b", None), end(3, "b", None)], vec![1]),
            (vec![start(1, "a", Some("x")), end(2, "a", Some("z"))], vec![1]),
            (vec![start(1, "a", Some("x")), start(2, "a", None), end(3, "a", Some("z"))], vec![1]),
            (vec![start(1, "a", Some("x")), end(2, "a", None)], vec![]),
            (vec![end(1, "a", None), start(2, "a", None)], vec![2]),
            (vec![start(1, "a", Some("x")), end(2, "other_name", Some("x"))], vec![]),
            (vec![start(1, "a", None), start(2, "a", Some("y")), end(3, "a", Some("y"))], vec![1]),
            // Arrived out of order: the end waits for its start.
            (vec![end(2, "a", None), start(1, "a", None)], vec![]),
            (
                vec![
                    end(2, "a", Some("x")),
                    start(1, "a", Some("y")),
                    start(3, "a", Some("x")),
                    start(0, "a", Some("x")),
                ],
                vec![1, 3],
            ),
            (vec![end(5, "b", None), start(1, "a", None), start(6, "b", None), start(4, "b", None)], vec![1, 6]),
        ];
        for (i, (events, open)) in cases.iter().enumerate() {
            assert_eq!(&open_after(events), open, "case {i}");
        }
    }

    #[test]
    fn open_calls_decide_the_stall_threshold() {
        let cfg = DetectConfig::default();
        let mut det = SessionDetector::default();
        assert!(!det.has_open_tool_call());
        det.observe(&ev(1, 0.0, "operation.tool_start", r#"{"tool":"t","tool_call_id":"c1"}"#), &cfg);
        assert!(det.has_open_tool_call());
        det.observe(&ev(2, 1000.0, "cognition.thought", r#"{"content":"waiting"}"#), &cfg);
        assert!(det.has_open_tool_call(), "an open call is not forgotten with time");
        det.observe(&ev(3, 1001.0, "operation.tool_end", r#"{"tool":"t","tool_call_id":"c1","success":true}"#), &cfg);
        assert!(!det.has_open_tool_call());
        det.observe(&ev(4, 1002.0, "operation.tool_end", r#"{"tool":"t","success":true}"#), &cfg);
        assert!(!det.has_open_tool_call());
    }

    #[test]
    fn configurable() {
        let events = calls(1, "web_search", &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[Q], &[SAME]);
        let off = DetectConfig { loop_enabled: false, ..DetectConfig::default() };
        check_with(&off, &events, &[]);
        let six = DetectConfig { loop_repeats: 6, ..DetectConfig::default() };
        check_with(&six, &events, &[(Loop, Some(12))]);
        let narrow = DetectConfig { loop_window_secs: 2.0, ..DetectConfig::default() };
        check_with(&narrow, &events, &[]);
    }
}
