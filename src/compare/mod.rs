//! Comparing two runs (`GET /sessions/:id/compare/:other`, `aop diff`): which steps they share,
//! where they part, and what each cost. Pure: the callers read the sessions (from a store, a
//! collector or exported files) into [`Side`]s and get the document back.
//!
//! - `step`: an event reduced to what it does ([`Step`]); heartbeats are left out.
//! - `align`: the aligner, bounded in time and memory whatever the runs' lengths.
//! - `similar`: which sessions are worth comparing a session with.

mod align;
mod similar;
mod step;

pub use align::{Kind, WINDOW};
pub use similar::rank_similar;
pub use step::Step;

use crate::model::{Event, SessionRow};
use align::{align, Pair, Unit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Events of one side compared at most. Past it a comparison is refused with a clear error
/// rather than held in memory: a step costs about 200 bytes while the comparison is made and
/// in its answer.
pub const MAX_EVENTS: usize = 250_000;

/// One run, read for comparison: its row, its steps and counts, its alerts by type.
#[derive(Debug, Clone)]
pub struct Side {
    pub row: SessionRow,
    steps: Vec<Step>,
    tool_starts: i64,
    tool_ends: i64,
    failed_tool_calls: i64,
    alerts: BTreeMap<String, i64>,
    settled: bool,
}

impl Side {
    pub fn new(row: SessionRow) -> Side {
        // The row says how many events are coming: one allocation instead of a doubling series.
        let expected = usize::try_from(row.event_count).unwrap_or(0).min(MAX_EVENTS);
        Side {
            row,
            steps: Vec::with_capacity(expected),
            tool_starts: 0,
            tool_ends: 0,
            failed_tool_calls: 0,
            alerts: BTreeMap::new(),
            settled: false,
        }
    }

    /// Adds one of the session's events (in any order; each sequence once).
    pub fn push(&mut self, ev: &Event) {
        match ev.kind.as_str() {
            "operation.tool_start" => self.tool_starts += 1,
            "operation.tool_end" => {
                self.tool_ends += 1;
                if ev.payload().bool("success") == Some(false) {
                    self.failed_tool_calls += 1;
                }
            }
            _ => {}
        }
        self.steps.extend(Step::of(ev));
        self.settled = false;
    }

    /// Counts one of the session's alerts, by its `type`.
    pub fn alert(&mut self, kind: &str) {
        *self.alerts.entry(kind.to_owned()).or_default() += 1;
    }

    /// Events pushed that are steps (not heartbeats).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Steps in sequence order, runs of concurrent tool calls in their canonical order.
    fn settle(&mut self) {
        if !self.settled {
            self.steps.sort_by_key(|s| s.sequence);
            step::settle_concurrent(&mut self.steps);
            self.settled = true;
        }
    }

    /// A tool call is a start and an end; agents that send only one half still count.
    fn tool_calls(&self) -> i64 {
        self.tool_starts.max(self.tool_ends)
    }
}

impl Unit for Step {
    fn same(&self, other: &Step) -> bool {
        Step::same(self, other)
    }
    fn pairs(&self, other: &Step) -> bool {
        Step::pairs(self, other)
    }
}

/// The answer: `GET /sessions/:id/compare/:other`'s body, and `aop diff --json`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: SessionRow,
    pub b: SessionRow,
    pub steps: Vec<StepPair>,
    pub first_divergence: Option<Divergence>,
    pub deltas: Deltas,
}

/// One row of the alignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPair {
    pub kind: Kind,
    pub a_sequence: Option<i64>,
    pub b_sequence: Option<i64>,
    /// The event type (both sides' when paired).
    #[serde(rename = "type")]
    pub event_type: String,
    pub a_summary: Option<String>,
    pub b_summary: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub index: usize,
    pub a_sequence: Option<i64>,
    pub b_sequence: Option<i64>,
}

/// A figure of both runs and `b - a`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta<T> {
    pub a: Option<T>,
    pub b: Option<T>,
    pub delta: Option<T>,
}

impl Delta<i64> {
    fn of(a: Option<i64>, b: Option<i64>) -> Delta<i64> {
        Delta { a, b, delta: a.zip(b).map(|(a, b)| b.saturating_sub(a)) }
    }
}

impl Delta<f64> {
    fn of(a: Option<f64>, b: Option<f64>) -> Delta<f64> {
        // Rounded to the nano-dollar sums are kept in, so 0.3 - 0.1 reads 0.2.
        Delta { a, b, delta: a.zip(b).map(|(a, b)| ((b - a) * 1e9).round() / 1e9) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    pub duration_ms: Delta<i64>,
    pub steps: Delta<i64>,
    pub tokens: Delta<i64>,
    pub cost_usd: Delta<f64>,
    pub tool_calls: Delta<i64>,
    pub failed_tool_calls: Delta<i64>,
    /// Every alert type either run raised.
    pub alerts: BTreeMap<String, Delta<i64>>,
}

/// Compares run `a` with run `b`.
pub fn compare(mut a: Side, mut b: Side) -> Comparison {
    a.settle();
    b.settle();
    let by_content = |x: &[Step], y: &[Step]| {
        let key = |s: &Step| s.order_key().0;
        x.iter().map(key).cmp(y.iter().map(key))
    };
    let pairs = align(&a.steps, &b.steps, by_content);
    let steps: Vec<StepPair> = pairs.iter().map(|p| step_pair(p, &mut a.steps, &mut b.steps)).collect();
    let first_divergence = steps.iter().position(|s| s.kind != Kind::Same).map(|index| Divergence {
        index,
        a_sequence: steps[index].a_sequence,
        b_sequence: steps[index].b_sequence,
    });
    let deltas = deltas(&a, &b);
    Comparison { a: a.row, b: b.row, steps, first_divergence, deltas }
}

/// One row of the answer. Each step is in exactly one pair, so its summary is moved, not copied.
fn step_pair(p: &Pair, a: &mut [Step], b: &mut [Step]) -> StepPair {
    let (sa, sb) = (p.a.map(|i| &mut a[i]), p.b.map(|i| &mut b[i]));
    let event_type = sa.as_ref().or(sb.as_ref()).map(|s| s.kind.clone()).unwrap_or_default();
    let take = |s: Option<&mut Step>| s.map(|s| (s.sequence, std::mem::take(&mut s.summary)));
    let ((a_sequence, a_summary), (b_sequence, b_summary)) = (take(sa).unzip(), take(sb).unzip());
    StepPair { kind: p.kind, a_sequence, b_sequence, event_type, a_summary, b_summary }
}

fn deltas(a: &Side, b: &Side) -> Deltas {
    let mut alerts = BTreeMap::new();
    for kind in a.alerts.keys().chain(b.alerts.keys()) {
        let count = |s: &Side| Some(s.alerts.get(kind).copied().unwrap_or(0));
        alerts.insert(kind.clone(), Delta::<i64>::of(count(a), count(b)));
    }
    Deltas {
        duration_ms: Delta::<i64>::of(a.row.duration_ms, b.row.duration_ms),
        steps: Delta::<i64>::of(Some(a.row.total_steps), Some(b.row.total_steps)),
        tokens: Delta::<i64>::of(Some(a.row.total_tokens), Some(b.row.total_tokens)),
        cost_usd: Delta::<f64>::of(a.row.total_cost_usd, b.row.total_cost_usd),
        tool_calls: Delta::<i64>::of(Some(a.tool_calls()), Some(b.tool_calls())),
        failed_tool_calls: Delta::<i64>::of(Some(a.failed_tool_calls), Some(b.failed_tool_calls)),
        alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use Kind::*;

    /// A run from a shorthand, one step per entry, sequences from 1:
    /// `start GOAL`, `end OUTCOME`, `hb`, `S TOOL ARG` (a call's start, input `{"q": ARG}`),
    /// `E TOOL ok|fail TEXT` (its end), `T TEXT` (thought), `D TEXT` (decision).
    fn run(id: &str, steps: &[&str]) -> Side {
        let mut state = crate::model::SessionState::new(id);
        let mut events = Vec::new();
        for (k, s) in steps.iter().enumerate() {
            let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
            let (kind, payload): (&str, Value) = match word {
                "start" => ("session.started", json!({"goal": rest})),
                "end" => ("session.ended", json!({"outcome": rest})),
                "hb" => ("session.heartbeat", json!({"status": "running"})),
                "S" => {
                    let (tool, arg) = rest.split_once(' ').unwrap();
                    ("operation.tool_start", json!({"tool": tool, "input": {"q": arg}}))
                }
                "E" => {
                    let mut it = rest.splitn(3, ' ');
                    let (tool, verdict, text) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap_or(""));
                    let ok = verdict == "ok";
                    let payload = if ok {
                        json!({"tool": tool, "success": true, "output_summary": text})
                    } else {
                        json!({"tool": tool, "success": false, "error": text})
                    };
                    ("operation.tool_end", payload)
                }
                "T" => ("cognition.thought", json!({"content": rest})),
                "D" => ("cognition.decision", json!({"decision": rest})),
                other => panic!("unknown step {other}"),
            };
            let text = json!({
                "spec": "aop/1.0", "session_id": id, "agent_id": "bot", "sequence": k as i64 + 1,
                "timestamp": format!("2026-04-03T10:00:{:02}.000Z", k % 60), "type": kind, "payload": payload,
            });
            let ev = Event::parse(&text.to_string()).unwrap();
            state.apply(&ev, &crate::model::Prices::builtin());
            events.push(ev);
        }
        let mut side = Side::new(state.view(0, 0));
        events.iter().for_each(|ev| side.push(ev));
        side
    }

    type Row = (Kind, Option<i64>, Option<i64>);

    fn rows(c: &Comparison) -> Vec<Row> {
        c.steps.iter().map(|s| (s.kind, s.a_sequence, s.b_sequence)).collect()
    }

    fn first(c: &Comparison) -> Option<(usize, Option<i64>, Option<i64>)> {
        c.first_divergence.map(|d| (d.index, d.a_sequence, d.b_sequence))
    }

    #[test]
    fn alignment_table() {
        let full = [
            "start find docs",
            "T look for the docs first",
            "S search rust",
            "E search ok 3 hits",
            "D answer from hit 1",
            "end completed",
        ];
        struct Case {
            name: &'static str,
            a: Vec<&'static str>,
            b: Vec<&'static str>,
            steps: Vec<Row>,
            first: Option<(usize, Option<i64>, Option<i64>)>,
        }
        let same = |k: i64| (Same, Some(k), Some(k));
        let cases = vec![
            Case {
                name: "identical runs",
                a: full.to_vec(),
                b: full.to_vec(),
                steps: (1..=6).map(same).collect(),
                first: None,
            },
            Case {
                name: "heartbeats are not steps",
                a: vec!["start g", "hb", "S search x", "hb", "hb", "E search ok y", "end completed"],
                b: vec!["start g", "S search x", "E search ok y", "end completed"],
                steps: vec![same(1), (Same, Some(3), Some(2)), (Same, Some(6), Some(3)), (Same, Some(7), Some(4))],
                first: None,
            },
            Case {
                name: "one inserted retry",
                a: vec![
                    "start g",
                    "S search q",
                    "E search fail timeout",
                    "S search q",
                    "E search ok 3 hits",
                    "end completed",
                ],
                b: vec!["start g", "S search q", "E search ok 3 hits", "end completed"],
                steps: vec![
                    same(1),
                    same(2),
                    (OnlyA, Some(3), None),
                    (OnlyA, Some(4), None),
                    (Same, Some(5), Some(3)),
                    (Same, Some(6), Some(4)),
                ],
                first: Some((2, Some(3), None)),
            },
            Case {
                name: "a loop in one run",
                a: vec![
                    "start g",
                    "S search q",
                    "E search ok none",
                    "S search q",
                    "E search ok none",
                    "S search q",
                    "E search ok none",
                    "end failed",
                ],
                b: vec!["start g", "S search q", "E search ok none", "T try another source", "end completed"],
                steps: vec![
                    same(1),
                    same(2),
                    same(3),
                    (OnlyA, Some(4), None),
                    (OnlyA, Some(5), None),
                    (OnlyA, Some(6), None),
                    (OnlyA, Some(7), None),
                    (OnlyB, None, Some(4)),
                    (Changed, Some(8), Some(5)),
                ],
                first: Some((3, Some(4), None)),
            },
            Case {
                name: "a different tool at step k",
                a: vec![
                    "start g",
                    "S search q",
                    "E search ok 3 hits",
                    "S fetch hit1",
                    "E fetch ok page",
                    "end completed",
                ],
                b: vec![
                    "start g",
                    "S search q",
                    "E search ok 3 hits",
                    "S browse hit1",
                    "E browse ok page",
                    "end completed",
                ],
                steps: vec![
                    same(1),
                    same(2),
                    same(3),
                    (OnlyA, Some(4), None),
                    (OnlyA, Some(5), None),
                    (OnlyB, None, Some(4)),
                    (OnlyB, None, Some(5)),
                    same(6),
                ],
                first: Some((3, Some(4), None)),
            },
            Case {
                name: "the same tool with another input, then another outcome",
                a: vec!["start g", "S search rust async", "E search ok 3 hits", "end completed"],
                b: vec!["start g", "S search rust threads", "E search fail rate limited", "end failed"],
                steps: vec![
                    same(1),
                    (Changed, Some(2), Some(2)),
                    (Changed, Some(3), Some(3)),
                    (Changed, Some(4), Some(4)),
                ],
                first: Some((1, Some(2), Some(2))),
            },
            Case {
                name: "a reworded thought is changed, an unrelated one is not paired",
                a: vec!["start g", "T I should search the rust async book", "T the weather is nice"],
                b: vec!["start g", "T I should search the rust async docs", "D give up"],
                steps: vec![same(1), (Changed, Some(2), Some(2)), (OnlyA, Some(3), None), (OnlyB, None, Some(3))],
                first: Some((1, Some(2), Some(2))),
            },
            Case {
                name: "one run a prefix of the other",
                a: full[..4].to_vec(),
                b: full.to_vec(),
                steps: vec![same(1), same(2), same(3), same(4), (OnlyB, None, Some(5)), (OnlyB, None, Some(6))],
                first: Some((4, None, Some(5))),
            },
            Case { name: "empty runs", a: vec![], b: vec![], steps: vec![], first: None },
            Case {
                name: "an empty run against one that started",
                a: vec![],
                b: vec!["start g"],
                steps: vec![(OnlyB, None, Some(1))],
                first: Some((0, None, Some(1))),
            },
        ];
        for case in cases {
            let c = compare(run("a", &case.a), run("b", &case.b));
            assert_eq!(rows(&c), case.steps, "{}", case.name);
            assert_eq!(first(&c), case.first, "{}", case.name);
        }
    }

    #[test]
    fn reordered_concurrent_calls_are_the_same_and_reordered_sequential_calls_are_not() {
        let a = ["start g", "S search q", "S fetch u", "E fetch ok page", "E search ok hits", "end completed"];
        let b = ["start g", "S fetch u", "S search q", "E search ok hits", "E fetch ok page", "end completed"];
        let c = compare(run("a", &a), run("b", &b));
        assert_eq!(c.first_divergence, None);
        assert!(c.steps.iter().all(|s| s.kind == Same && s.a_summary == s.b_summary), "{:#?}", c.steps);
        assert_eq!(c.steps.len(), 6);

        let a = ["start g", "S search q", "E search ok hits", "S fetch u", "E fetch ok page"];
        let b = ["start g", "S fetch u", "E fetch ok page", "S search q", "E search ok hits"];
        let c = compare(run("a", &a), run("b", &b));
        let count = |k: Kind| c.steps.iter().filter(|s| s.kind == k).count();
        assert_eq!((count(Same), count(OnlyA), count(OnlyB), count(Changed)), (3, 2, 2, 0));
        assert_eq!(c.first_divergence.map(|d| d.index), Some(1));
    }

    #[test]
    fn summaries_say_what_each_side_did() {
        let c = compare(
            run("a", &["start find docs", "S search q", "E search fail timeout"]),
            run("b", &["start find docs", "S search q", "E search ok 3 hits"]),
        );
        let last = c.steps.last().unwrap();
        assert_eq!(last.event_type, "operation.tool_end");
        assert_eq!(last.a_summary.as_deref(), Some("search → failed: timeout"));
        assert_eq!(last.b_summary.as_deref(), Some("search → ok: 3 hits"));
        assert_eq!(c.steps[1].a_summary.as_deref(), Some(r#"search({"q":"q"})"#));
        assert_eq!(c.steps[0].a_summary.as_deref(), Some("started: find docs"));

        let c = compare(run("a", &["T red \u{1b}[31malert\u{7}\n  now"]), run("b", &[]));
        assert_eq!(c.steps[0].a_summary.as_deref(), Some("red [31malert now"));
    }

    #[test]
    fn deltas_are_b_minus_a() {
        let mut a =
            run("a", &["start g", "S search q", "E search fail x", "S search q", "E search fail x", "end failed"]);
        let mut b = run("b", &["start g", "S search q", "E search ok y", "end completed"]);
        a.alert("loop");
        a.alert("error_cascade");
        b.alert("error_cascade");
        b.alert("error_cascade");
        a.row.total_cost_usd = Some(0.3);
        b.row.total_cost_usd = Some(0.1);
        a.row.duration_ms = Some(5000);
        b.row.duration_ms = None;
        let d = compare(a, b).deltas;
        assert_eq!(d.tool_calls, Delta { a: Some(2), b: Some(1), delta: Some(-1) });
        assert_eq!(d.failed_tool_calls, Delta { a: Some(2), b: Some(0), delta: Some(-2) });
        assert_eq!(d.cost_usd.delta, Some(-0.2));
        assert_eq!(d.duration_ms, Delta { a: Some(5000), b: None, delta: None });
        assert_eq!(d.alerts["loop"], Delta { a: Some(1), b: Some(0), delta: Some(-1) });
        assert_eq!(d.alerts["error_cascade"], Delta { a: Some(1), b: Some(2), delta: Some(1) });
        assert_eq!(d.steps, Delta { a: Some(4), b: Some(2), delta: Some(-2) });
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Steps from a small vocabulary, so runs share, repeat and reorder steps.
        fn steps() -> impl Strategy<Value = Vec<&'static str>> {
            let vocabulary = prop_oneof![
                Just("S search a"),
                Just("S search b"),
                Just("E search ok hits"),
                Just("E search fail timeout"),
                Just("S fetch a"),
                Just("E fetch ok page"),
                Just("T look it up in the docs"),
                Just("T look it up in the book"),
                Just("D stop here"),
                Just("hb"),
                Just("end completed"),
                Just("end failed"),
            ];
            proptest::collection::vec(vocabulary, 0..40)
        }

        fn swapped(c: &Comparison) -> Vec<Row> {
            let mut pairs: Vec<Pair> = c
                .steps
                .iter()
                .map(|s| {
                    let p =
                        Pair { kind: s.kind, a: s.a_sequence.map(|x| x as usize), b: s.b_sequence.map(|x| x as usize) };
                    p.swapped()
                })
                .collect();
            align::a_first(&mut pairs);
            pairs.into_iter().map(|p| (p.kind, p.a.map(|x| x as i64), p.b.map(|x| x as i64))).collect()
        }

        proptest! {
            #[test]
            fn a_run_compared_with_itself_is_all_same(a in steps()) {
                let c = compare(run("a", &a), run("a2", &a));
                prop_assert!(c.steps.iter().all(|s| s.kind == Same));
                prop_assert_eq!(c.first_divergence, None);
                prop_assert_eq!(c.steps.len(), a.iter().filter(|s| **s != "hb").count());
            }

            #[test]
            fn swapping_the_runs_swaps_only_a_and_only_b(a in steps(), b in steps()) {
                let ab = compare(run("a", &a), run("b", &b));
                let ba = compare(run("b", &b), run("a", &a));
                prop_assert_eq!(rows(&ab), swapped(&ba));
                prop_assert_eq!(ab.first_divergence.map(|d| d.index), ba.first_divergence.map(|d| d.index));
            }

            #[test]
            fn every_step_of_each_side_appears_once(a in steps(), b in steps()) {
                let c = compare(run("a", &a), run("b", &b));
                let mut seen_a: Vec<i64> = c.steps.iter().filter_map(|s| s.a_sequence).collect();
                let mut seen_b: Vec<i64> = c.steps.iter().filter_map(|s| s.b_sequence).collect();
                seen_a.sort_unstable();
                seen_b.sort_unstable();
                let want = |r: &[&str]| (1..=r.len() as i64).filter(|k| r[*k as usize - 1] != "hb").collect::<Vec<_>>();
                prop_assert_eq!(seen_a, want(&a));
                prop_assert_eq!(seen_b, want(&b));
            }
        }
    }

    #[test]
    fn guard_answers_are_the_same_whatever_their_alerts_ids() {
        let guard = |id: &str, alert: i64, decision: &str| {
            Event::parse(
                &json!({
                    "spec": "aop/1.0", "session_id": id, "agent_id": "bot", "sequence": 7,
                    "timestamp": "2026-04-03T10:00:07.000Z", "type": "aop.guard",
                    "payload": {"tool": "search", "decision": decision, "input": {"q": "x"},
                        "reasons": [{"type": "loop", "alert_id": alert, "message": "search was called 4 times"}]},
                })
                .to_string(),
            )
            .unwrap()
        };
        let (a, b, c) = (guard("a", 1, "ask"), guard("b", 3, "ask"), guard("c", 3, "deny"));
        let [a, b, c] = [&a, &b, &c].map(|e| Step::of(e).unwrap());
        assert!(a.same(&b), "{a:?} {b:?}");
        assert!(!a.same(&c) && a.pairs(&c));
        assert_eq!(a.summary, "guard: ask search — search was called 4 times");
    }
}
