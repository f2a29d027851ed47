//! What an event does, for comparison: a [`Step`] is an event reduced to two keys (what pairs it
//! with another run's event, and what makes the two the same), a sketch of its words when it is
//! text, and a one-line summary for people.

use crate::detect::{canonical, digest, quote};
use crate::model::{Event, Payload};
use serde_json::Value;

/// Characters of a step's summary: one line in a terminal or a dashboard row.
const SUMMARY_BYTES: usize = 120;
/// Word hashes kept per text (the smallest: a bottom-k sketch, so two texts keep comparable
/// samples); bounds a step's memory whatever the agent wrote.
const SKETCH_WORDS: usize = 32;
/// Two texts of the same kind whose word sets overlap at least this much (Jaccard) are the same
/// step reworded (`changed`); less, and they are different steps.
pub(crate) const SIMILAR_TEXT: f64 = 0.4;

/// One event of a run, as the aligner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub sequence: i64,
    /// The event's type.
    pub kind: String,
    /// Equal for events that do the same kind of thing (a call of the same tool; a thought): they
    /// may be paired, as `same` or `changed`.
    pair: u64,
    /// Equal for events that do the same thing with the same outcome: `same`.
    same: u64,
    /// For thoughts, decisions, goals and uncertainties: their words' sketch. Two of them pair only
    /// when their words overlap enough.
    words: Option<Box<[u32]>>,
    pub summary: String,
}

impl Step {
    /// The step an event is, or `None` for heartbeats: they say how long a run took, which the
    /// deltas report, not what it did.
    pub fn of(ev: &Event) -> Option<Step> {
        let p = ev.payload();
        let kind = ev.kind.as_str();
        let text_step = |text: Option<&str>, extra: &str, summary: String| {
            let norm = normalise(text.unwrap_or(""));
            Step::new(ev, digest(&[kind]), digest(&[kind, &norm, extra]), Some(sketch(&norm)), summary)
        };
        let step = match kind {
            "session.heartbeat" => return None,
            "session.started" => {
                let goal = p.str("goal").unwrap_or("");
                let summary = if goal.is_empty() { "started".to_owned() } else { format!("started: {goal}") };
                Step::new(ev, digest(&[kind]), digest(&[kind, &normalise(goal)]), None, summary)
            }
            "session.ended" => {
                let outcome = p.first_str(&["outcome", "status"]).unwrap_or("completed");
                let why = p.first_str(&["error_message", "outcome_summary"]).unwrap_or("");
                let summary =
                    if why.is_empty() { format!("ended: {outcome}") } else { format!("ended: {outcome} — {why}") };
                Step::new(ev, digest(&[kind]), digest(&[kind, outcome]), None, summary)
            }
            "operation.tool_start" => {
                let tool = p.tool().unwrap_or("?");
                let input = p.get("input").map_or_else(String::new, canonical);
                let shown = p.get("input").map_or_else(String::new, |v| quote(v, SUMMARY_BYTES));
                Step::new(ev, digest(&[kind, tool]), digest(&[kind, tool, &input]), None, format!("{tool}({shown})"))
            }
            "operation.tool_end" => {
                let tool = p.tool().unwrap_or("?");
                let ok = p.bool("success").unwrap_or(true);
                let result = if ok { p.first_str(&["output_summary", "result_summary"]) } else { p.str("error") };
                let result = result.unwrap_or("");
                let verdict = if ok { "ok" } else { "failed" };
                let summary = if result.is_empty() {
                    format!("{tool} → {verdict}")
                } else {
                    format!("{tool} → {verdict}: {result}")
                };
                Step::new(ev, digest(&[kind, tool]), digest(&[kind, tool, verdict, result]), None, summary)
            }
            "cognition.thought" => {
                let text = p.first_str(&["content", "reasoning"]);
                text_step(text, "", text.unwrap_or("").to_owned())
            }
            "cognition.uncertainty" => {
                let text = p.first_str(&["content", "description"]);
                text_step(text, "", format!("unsure: {}", text.unwrap_or("")))
            }
            "cognition.decision" => {
                let text = p.first_str(&["decision", "chosen"]);
                text_step(text, "", format!("decided: {}", text.unwrap_or("")))
            }
            "cognition.goal" => {
                let text = p.str("goal");
                let status = p.str("status").unwrap_or("");
                text_step(text, status, format!("goal ({status}): {}", text.unwrap_or("")))
            }
            "operation.agent_spawn" => {
                let child = p.str("child_agent_id").unwrap_or("?");
                let goal = p.str("goal").unwrap_or("");
                let same = digest(&[kind, child, &normalise(goal)]);
                Step::new(ev, digest(&[kind]), same, None, format!("spawned {child}: {goal}"))
            }
            "operation.memory" => {
                let op = p.first_str(&["operation", "action"]).unwrap_or("?");
                let key = p.str("key").unwrap_or("");
                Step::new(ev, digest(&[kind, op]), digest(&[kind, op, key]), None, format!("memory {op} {key}"))
            }
            "operation.external_call" => {
                let [service, method, endpoint] = ["service", "method", "endpoint"].map(|k| p.str(k).unwrap_or(""));
                let status = p.get("status_code").map_or_else(String::new, canonical);
                let target = [service, method, endpoint].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>();
                let target = target.join(" ");
                let summary = if status.is_empty() { target } else { format!("{target} → {status}") };
                let pair = digest(&[kind, service, method, endpoint]);
                Step::new(ev, pair, digest(&[kind, service, method, endpoint, &status]), None, summary)
            }
            "aop.guard" => {
                // The guard's answer: the same when it gave the same decision for the same call
                // and reasons. Its reasons name alerts by id, which differs in every run.
                let tool = p.tool().unwrap_or("?");
                let decision = p.str("decision").unwrap_or("?");
                let input = p.get("input").map_or_else(String::new, canonical);
                let reasons: Vec<&str> = p
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(|r| r.get("message")?.as_str()).collect())
                    .unwrap_or_default();
                let summary = format!("guard: {decision} {tool} — {}", reasons.join("; "));
                let same = digest(&[kind, tool, decision, &input, &reasons.join("\n")]);
                Step::new(ev, digest(&[kind, tool]), same, None, summary)
            }
            _ => {
                // A custom type: the same when its payload is, apart from the span it came from
                // (every run's spans have ids of their own).
                let body = without_span(p);
                let shown = quote(&body, SUMMARY_BYTES);
                Step::new(ev, digest(&[kind]), digest(&[kind, &canonical(&body)]), None, format!("{kind} {shown}"))
            }
        };
        Some(step)
    }

    fn new(ev: &Event, pair: u64, same: u64, words: Option<Box<[u32]>>, summary: String) -> Step {
        let summary = one_line(&summary);
        Step { sequence: ev.sequence, kind: ev.kind.clone(), pair, same, words, summary }
    }

    /// Whether two steps do the same thing with the same outcome.
    pub(crate) fn same(&self, other: &Step) -> bool {
        self.same == other.same
    }

    /// Whether two steps do the same kind of thing, so that one is the other changed.
    pub(crate) fn pairs(&self, other: &Step) -> bool {
        if self.pair != other.pair {
            return false;
        }
        match (&self.words, &other.words) {
            (Some(a), Some(b)) => jaccard(a, b) >= SIMILAR_TEXT,
            _ => true,
        }
    }

    /// The key runs of concurrent calls are sorted by.
    pub(crate) fn order_key(&self) -> (u64, i64) {
        (self.same, self.sequence)
    }

    pub(crate) fn is_tool_event(&self) -> bool {
        matches!(self.kind.as_str(), "operation.tool_start" | "operation.tool_end")
    }
}

/// Consecutive starts (or ends) of tool calls are calls in flight together: which one the agent
/// started or saw finish first carries no meaning, so each such run is put in one canonical order
/// (by what the calls do) before alignment. Each side's order is kept everywhere else.
pub(crate) fn settle_concurrent(steps: &mut [Step]) {
    let mut start = 0;
    while start < steps.len() {
        let mut end = start + 1;
        if steps[start].is_tool_event() {
            while end < steps.len() && steps[end].kind == steps[start].kind {
                end += 1;
            }
            steps[start..end].sort_by_key(Step::order_key);
        }
        start = end;
    }
}

/// Lower case, words separated by single spaces: how a text is compared.
pub(crate) fn normalise(text: &str) -> String {
    text.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// The smallest hashes of a normalised text's distinct words.
pub(crate) fn sketch(norm: &str) -> Box<[u32]> {
    let mut words: Vec<u32> =
        norm.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| digest(&[w]) as u32).collect();
    words.sort_unstable();
    words.dedup();
    words.truncate(SKETCH_WORDS);
    words.into_boxed_slice()
}

/// Jaccard similarity of two sorted sets; two empty texts are alike.
pub(crate) fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (a.len() + b.len() - both) as f64
}

fn without_span(p: &Payload) -> Value {
    let mut body = p.fields().clone();
    body.remove("otel");
    Value::Object(body)
}

/// A summary on one line, cut to [`SUMMARY_BYTES`]. Control characters (an agent's text may hold
/// terminal escapes) become spaces, so no reader of the document can be made to emit them.
fn one_line(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let flat = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat = flat.trim_end_matches([':', ' ']);
    quote(&Value::String(flat.to_owned()), SUMMARY_BYTES)
}
