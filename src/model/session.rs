//! Session derivation: a session is a pure function of its stored events, whatever their arrival
//! order (`COLLECTOR.md`, section Sessions).
//!
//! [`SessionState`] is folded one event at a time, and every field keeps enough to make the fold
//! commutative: values that "win" remember the rank (sequence, event kind) that won them, sums are
//! kept in integers (cost in nano-dollars) so float rounding cannot depend on order, and sets are
//! ordered.
//!
//! An event's cost is [`Event::cost`]'s: reported, else priced from its model and tokens with the
//! collector's [`Prices`]. A price is applied when its event arrives, so a session keeps the costs
//! it was given if the table changes later.

use super::event::{Event, SpanRef, SpanRole};
use super::payload::{Cost, Payload};
use super::price::Prices;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Models without a price listed per session, and the characters kept of each name: enough to
/// say what to add to the price table, bounded whatever the agent sends.
const MAX_UNPRICED_MODELS: usize = 16;
const MAX_MODEL_CHARS: usize = 128;

/// A value chosen among several events, with the rank that chose it (lower rank wins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Pick<T> {
    rank: (u8, i64),
    value: T,
}

/// Keeps the candidate of lowest rank; the fold is then independent of arrival order.
fn pick<T>(slot: &mut Option<Pick<T>>, rank: (u8, i64), value: T) {
    if slot.as_ref().is_none_or(|p| rank < p.rank) {
        *slot = Some(Pick { rank, value });
    }
}

/// A reported figure where the latest report (highest sequence) wins.
fn latest<T>(slot: &mut Option<Pick<T>>, seq: i64, value: T) {
    pick(slot, (0, -seq), value);
}

/// A timestamp as sent, with its instant for comparisons (ties broken by the text, so two
/// spellings of one instant still order deterministically).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Stamp {
    us: i64,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ended {
    stamp: Stamp,
    status: String,
    summary: Option<String>,
    error: Option<String>,
}

/// Everything the collector knows about a session, derived from its events.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionState {
    pub id: String,
    agent: Option<Pick<String>>,
    parent: Option<Pick<String>>,
    version: Option<Pick<String>>,
    goal: Option<Pick<String>>,
    llm: Option<Pick<String>>,
    /// The conversation the run belongs to (`metadata.conversation_id` of `session.started`, or
    /// an OTel conversation attribute of any span), searchable by the sessions list's `q`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conversation: Option<Pick<String>>,
    started: Option<Pick<Stamp>>,
    ended: Option<Pick<Ended>>,
    first: Option<Stamp>,
    last: Option<Stamp>,
    steps_reported: Option<Pick<i64>>,
    activity: i64,
    tokens_reported: Option<Pick<i64>>,
    tokens_delta: i64,
    cost_reported: Option<Pick<f64>>,
    cost_nano: Option<i64>,
    /// Models that reported tokens but have no price: the smallest names, so the set does not
    /// depend on arrival order when there are more than it keeps.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    unpriced: BTreeSet<String>,
    event_count: i64,
    /// An agent that waits for its user between turns (`metadata.interactive` of
    /// `session.started`): its silence is no stall unless a tool call is open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    interactive: bool,
    /// In an interactive session, a turn in progress: the agent owes its next step (see
    /// [`turn_step`]), so its silence may be a stall.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    turn_open: bool,
    /// A session whose agent sends no end of its own (`metadata.ends_when_idle` of
    /// `session.started`): the collector ends it after `--idle-end` of silence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ends_when_idle: bool,
    /// The operator's latest word (`aop.stop`, or `aop.resume` as `None`), by sequence: the
    /// collector numbers these by its clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop: Option<Pick<Option<Stopped>>>,
}

/// An operator's stop of a run (`POST /sessions/:id/stop`), which the guard honours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub at: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The event types the collector records of its own accord in a session.
pub const STOP: &str = "aop.stop";
pub const RESUME: &str = "aop.resume";
pub const GUARD_DECISION: &str = "aop.guard";

/// How an event moves an interactive agent's turn: `Some(true)` when the agent owes its next
/// step (after its user's prompt, a permission granted, a tool call begun or ended: a model
/// request comes next), `Some(false)` when it has just heard from its model (it may be done, or
/// waiting for its user to grant a tool), `None` for events that say nothing of it.
pub fn turn_step(ev: &Event) -> Option<bool> {
    match ev.kind.as_str() {
        "operation.external_call" => Some(false),
        "operation.tool_start" | "operation.tool_end" | "custom.tool_decision" => Some(true),
        "cognition.thought" => (ev.payload().str("role") == Some("user")).then_some(true),
        _ => None,
    }
}

/// The identity of the end the collector gives an idle session.
const IDLE_END: &str = "idle-end";

/// Whether the payload may hold fields derivation reads; others are not looked at.
fn needs_payload(kind: &str) -> bool {
    kind.starts_with("session.")
        || kind.starts_with("operation.")
        || kind == "otel.span"
        || kind == "otel.log"
        || kind == STOP
}

/// The span attributes that name a run's conversation, in the OTel dialects (`OTLP.md`): the OTLP
/// mapping reads them from spans, derivation from the attributes a derived event keeps.
pub const CONVERSATION_ATTRIBUTES: &[&str] = &[
    "session.id",
    "gen_ai.conversation.id",
    "conversation.id",
    "langfuse.session.id",
    "traceloop.association.properties.session_id",
];

/// The conversation an event names: `metadata.conversation_id`, or, in a span-derived event,
/// one of the conversation attributes OTel dialects use.
fn conversation(p: &Payload) -> Option<String> {
    let from_metadata = p.get("metadata").and_then(|m| m.get("conversation_id"));
    let from_span = || {
        let attrs =
            p.get("otel").and_then(|o| o.get("attributes")).or_else(|| p.get("otel").and(p.get("attributes")))?;
        CONVERSATION_ATTRIBUTES.iter().find_map(|k| attrs.get(*k))
    };
    let c = from_metadata.or_else(from_span)?.as_str()?;
    (!c.is_empty()).then(|| c.chars().take(256).collect())
}

fn text(p: &Payload, key: &str) -> Option<String> {
    p.str(key).map(str::to_owned)
}

impl SessionState {
    pub fn new(id: &str) -> Self {
        SessionState { id: id.to_owned(), ..Default::default() }
    }

    /// Folds one stored event (never a duplicate) into the session, pricing its tokens with
    /// `prices` when it reports no cost.
    pub fn apply(&mut self, ev: &Event, prices: &Prices) {
        let seq = ev.sequence;
        let is_started = ev.kind == "session.started";
        let rank = (u8::from(!is_started), seq);
        let empty = Payload::default();
        let facts = if needs_payload(&ev.kind) { ev.payload() } else { &empty };

        self.event_count += 1;
        pick(&mut self.agent, rank, ev.agent_id.clone());
        if let Some(p) = &ev.parent_session_id {
            pick(&mut self.parent, rank, p.clone());
        }
        let version = ev.agent_version.clone().or_else(|| if is_started { text(facts, "agent_version") } else { None });
        if let Some(v) = version {
            pick(&mut self.version, rank, v);
        }
        if let Some(c) = conversation(facts) {
            pick(&mut self.conversation, rank, c);
        }
        if is_started
            && facts.get("metadata").and_then(|m| m.get("interactive")) == Some(&serde_json::Value::Bool(true))
        {
            self.interactive = true;
        }
        if is_started
            && facts.get("metadata").and_then(|m| m.get("ends_when_idle")) == Some(&serde_json::Value::Bool(true))
        {
            self.ends_when_idle = true;
        }
        if self.interactive {
            if let Some(open) = turn_step(ev) {
                self.turn_open = open;
            }
        }
        let stamp = Stamp { us: ev.ts_us, text: ev.timestamp.clone() };
        if self.first.as_ref().is_none_or(|f| stamp < *f) {
            self.first = Some(stamp.clone());
        }
        if self.last.as_ref().is_none_or(|l| stamp > *l) {
            self.last = Some(stamp.clone());
        }

        match ev.kind.as_str() {
            "session.started" => {
                pick(&mut self.started, (0, seq), stamp);
                if let Some(g) = text(facts, "goal") {
                    pick(&mut self.goal, (0, seq), g);
                }
                if let Some(m) = text(facts, "llm") {
                    pick(&mut self.llm, (0, seq), m);
                }
            }
            "session.ended" => {
                let status =
                    text(facts, "outcome").or_else(|| text(facts, "status")).unwrap_or_else(|| "completed".into());
                let ended = Ended {
                    stamp,
                    status,
                    summary: text(facts, "outcome_summary"),
                    error: text(facts, "error_message"),
                };
                pick(&mut self.ended, (0, seq), ended);
            }
            STOP => {
                latest(&mut self.stop, seq, Some(Stopped { at: ev.timestamp.clone(), reason: text(facts, "reason") }))
            }
            RESUME => latest(&mut self.stop, seq, None),
            k if k.starts_with("cognition.") || k.starts_with("operation.") => self.activity += 1,
            _ => {}
        }
        if matches!(ev.kind.as_str(), "session.heartbeat" | "session.ended") {
            if let Some(n) = facts.count("step").or_else(|| facts.count("total_steps")) {
                latest(&mut self.steps_reported, seq, n);
            }
            if let Some(n) = facts.count("token_spend").or_else(|| facts.count("total_tokens")) {
                latest(&mut self.tokens_reported, seq, n);
            }
            if let Some(c) = facts.num("total_cost_usd") {
                latest(&mut self.cost_reported, seq, c);
            }
        }
        if matches!(ev.kind.as_str(), "operation.tool_end" | "operation.external_call") {
            if let Some(n) = facts.count("token_spend_delta") {
                self.tokens_delta = self.tokens_delta.saturating_add(n);
            }
        }
        match ev.cost(prices) {
            Some(Cost::Unpriced { model }) => self.unpriced_model(model),
            Some(cost) => {
                let nano = cost.nano_usd().unwrap_or(0);
                self.cost_nano = Some(self.cost_nano.unwrap_or(0).saturating_add(nano));
            }
            None => {}
        }
    }

    fn unpriced_model(&mut self, model: &str) {
        let name: String = model.trim().chars().take(MAX_MODEL_CHARS).collect();
        self.unpriced.insert(name);
        if self.unpriced.len() > MAX_UNPRICED_MODELS {
            self.unpriced.pop_last();
        }
    }

    pub fn agent_id(&self) -> &str {
        self.agent.as_ref().map_or("", |p| &p.value)
    }
    pub fn parent_session_id(&self) -> Option<&str> {
        self.parent.as_ref().map(|p| p.value.as_str())
    }
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation.as_ref().map(|p| p.value.as_str())
    }

    pub fn goal(&self) -> Option<&str> {
        self.goal.as_ref().map(|p| p.value.as_str())
    }
    /// `running` until a `session.ended`, then its outcome.
    pub fn status(&self) -> &str {
        self.ended.as_ref().map_or("running", |e| &e.value.status)
    }
    pub fn is_running(&self) -> bool {
        self.ended.is_none()
    }
    /// The operator's stop in force, if any.
    pub fn stopped(&self) -> Option<&Stopped> {
        self.stop.as_ref().and_then(|p| p.value.as_ref())
    }
    /// What the run cost so far: the agent's own latest total, else the sum of its priced calls.
    pub fn cost_usd(&self) -> Option<f64> {
        self.cost_reported.as_ref().map(|p| p.value).or(self.cost_nano.map(|n| n as f64 / 1e9))
    }

    /// Whether silence may be a stall: the session runs, and it is not an interactive agent
    /// waiting for its user (between turns, or for a permission): a turn is in progress.
    pub fn may_stall(&self, tool_open: bool) -> bool {
        self.is_running() && (!self.interactive || tool_open || self.turn_open)
    }
    pub fn ends_when_idle(&self) -> bool {
        self.ends_when_idle
    }

    /// The `session.ended` the collector adds to a session that ends when idle, silent for
    /// `silent_secs`: `completed` (silence is how such an agent stops, not a failure), timed just
    /// after its latest event, so that its duration is its activity. Derived, with a fixed
    /// identity: every instance of a fleet makes the same event, stored once.
    pub fn idle_end(&self, silent_secs: f64) -> Option<Event> {
        if !self.ends_when_idle || !self.is_running() {
            return None;
        }
        let at_us = self.last_seen_us().checked_add(1)?;
        let minutes = (silent_secs / 60.0).round();
        let payload = serde_json::json!({
            "outcome": "completed",
            "outcome_summary": format!("ended by the collector after {minutes} min without an event (--idle-end)"),
            "otel": { "span_id": IDLE_END },
        });
        let ev = Event::derived(
            &self.id,
            self.parent_session_id(),
            self.agent_id(),
            at_us,
            u64::try_from(at_us).ok()?.checked_mul(1000)?,
            "session.ended",
            &payload.to_string(),
        )
        .ok()?;
        Some(ev.from_span(SpanRef { span_id: IDLE_END.into(), role: SpanRole::End }))
    }

    /// The latest event time, in microseconds since the epoch: the sessions list's order.
    pub fn last_seen_us(&self) -> i64 {
        self.last.as_ref().map_or(i64::MIN, |s| s.us)
    }
    pub fn event_count(&self) -> i64 {
        self.event_count
    }

    /// The public row (`GET /sessions`), given the counts the store keeps beside the state.
    pub fn view(&self, alert_count: i64, child_count: i64) -> SessionRow {
        let started = self.started.as_ref().map(|p| &p.value).or(self.first.as_ref());
        let ended = self.ended.as_ref().map(|p| &p.value);
        SessionRow {
            id: self.id.clone(),
            agent_id: self.agent_id().to_owned(),
            agent_version: self.version.as_ref().map(|p| p.value.clone()),
            parent_session_id: self.parent_session_id().map(str::to_owned),
            goal: self.goal().map(str::to_owned),
            llm: self.llm.as_ref().map(|p| p.value.clone()),
            conversation_id: self.conversation_id().map(str::to_owned),
            status: self.status().to_owned(),
            started_at: started.map(|s| s.text.clone()),
            ended_at: ended.map(|e| e.stamp.text.clone()),
            last_seen_at: self.last.as_ref().map(|s| s.text.clone()),
            duration_ms: match (started, ended.map(|e| &e.stamp).or(self.last.as_ref())) {
                (Some(s), Some(e)) => Some((e.us - s.us).max(0) / 1000),
                _ => None,
            },
            total_steps: self.steps_reported.as_ref().map_or(self.activity, |p| p.value),
            total_tokens: self.tokens_reported.as_ref().map_or(self.tokens_delta, |p| p.value),
            total_cost_usd: self.cost_usd(),
            outcome_summary: ended.and_then(|e| e.summary.clone()),
            error_message: ended.and_then(|e| e.error.clone()),
            unpriced_models: self.unpriced.iter().cloned().collect(),
            event_count: self.event_count,
            alert_count,
            child_count,
            pinned: false,
            stopped: self.stopped().cloned(),
        }
    }
}

/// A session as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: String,
    pub agent_id: String,
    pub agent_version: Option<String>,
    pub parent_session_id: Option<String>,
    pub goal: Option<String>,
    /// The model name some SDKs report in `session.started` (`llm`).
    pub llm: Option<String>,
    /// The conversation the run belongs to, when the agent (or its OTel spans) said. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    pub status: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub last_seen_at: Option<String>,
    /// From start to end (or to the latest event while running), by event time.
    pub duration_ms: Option<i64>,
    pub total_steps: i64,
    pub total_tokens: i64,
    pub total_cost_usd: Option<f64>,
    pub outcome_summary: Option<String>,
    pub error_message: Option<String>,
    /// Models whose tokens were reported without a cost and that have no price: they count
    /// nothing toward `total_cost_usd`. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
    pub event_count: i64,
    pub alert_count: i64,
    pub child_count: i64,
    /// Pinned sessions are never deleted by retention.
    pub pinned: bool,
    /// An operator stopped the run (`POST /sessions/:id/stop`) and has not resumed it. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, kind: &str, payload: &str, secs: u32) -> Event {
        ev_as(seq, kind, payload, secs, "agent-a", None)
    }

    fn ev_as(seq: i64, kind: &str, payload: &str, secs: u32, agent: &str, parent: Option<&str>) -> Event {
        let parent = parent.map_or("null".to_owned(), |p| format!("\"{p}\""));
        Event::parse(&format!(
            r#"{{"spec":"aop/1.0","session_id":"s1","parent_session_id":{parent},"agent_id":"{agent}","sequence":{seq},"timestamp":"2026-04-03T10:00:{secs:02}.000Z","type":"{kind}","payload":{payload}}}"#
        ))
        .unwrap()
    }

    fn derive(events: &[Event]) -> SessionRow {
        derive_with(&Prices::builtin(), events)
    }

    fn derive_with(prices: &Prices, events: &[Event]) -> SessionRow {
        let mut s = SessionState::new("s1");
        for e in events {
            s.apply(e, prices);
        }
        s.view(0, 0)
    }

    /// Every permutation of `events` (up to 6) must derive the same row.
    fn check_order_free(events: &[Event]) -> SessionRow {
        let want = derive(events);
        let mut idx: Vec<usize> = (0..events.len()).collect();
        permute(&mut idx, 0, &mut |order| {
            let shuffled: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
            assert_eq!(derive(&shuffled), want, "order {order:?}");
        });
        want
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == v.len() {
            return f(v);
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[test]
    fn a_full_run() {
        let row = check_order_free(&[
            ev(1, "session.started", r#"{"goal":"Find papers","agent_version":"2.1","llm":"m-1"}"#, 0),
            ev(2, "cognition.thought", r#"{"content":"hmm"}"#, 1),
            ev(3, "operation.tool_start", r#"{"tool":"web_search"}"#, 2),
            ev(
                4,
                "operation.tool_end",
                r#"{"tool":"web_search","success":true,"token_spend_delta":120,"cost_usd":0.1}"#,
                3,
            ),
            ev(
                5,
                "operation.tool_end",
                r#"{"tool":"web_search","success":true,"token_spend_delta":80,"cost_usd":0.2}"#,
                4,
            ),
            ev(6, "session.ended", r#"{"outcome":"failed","error_message":"boom"}"#, 9),
        ]);
        assert_eq!(row.goal.as_deref(), Some("Find papers"));
        assert_eq!(row.agent_version.as_deref(), Some("2.1"));
        assert_eq!(row.llm.as_deref(), Some("m-1"));
        assert_eq!(row.status, "failed");
        assert_eq!(row.error_message.as_deref(), Some("boom"));
        assert_eq!(row.started_at.as_deref(), Some("2026-04-03T10:00:00.000Z"));
        assert_eq!(row.ended_at.as_deref(), Some("2026-04-03T10:00:09.000Z"));
        assert_eq!(row.last_seen_at.as_deref(), Some("2026-04-03T10:00:09.000Z"));
        assert_eq!(row.duration_ms, Some(9000));
        assert_eq!(row.total_steps, 4);
        assert_eq!(row.total_tokens, 200);
        assert_eq!(row.total_cost_usd, Some(0.3));
        assert_eq!(row.event_count, 6);
    }

    #[test]
    fn reported_totals_win_and_the_latest_report_counts() {
        let row = check_order_free(&[
            ev(1, "session.started", "{}", 0),
            ev(2, "operation.tool_end", r#"{"tool":"t","success":true,"token_spend_delta":5,"cost_usd":0.5}"#, 1),
            ev(3, "session.heartbeat", r#"{"status":"running","step":3,"token_spend":300,"total_cost_usd":1.25}"#, 2),
            ev(4, "session.heartbeat", r#"{"status":"running","step":7,"token_spend":700,"total_cost_usd":2.5}"#, 3),
        ]);
        assert_eq!((row.total_steps, row.total_tokens, row.total_cost_usd), (7, 700, Some(2.5)));
        let row = check_order_free(&[
            ev(1, "session.heartbeat", r#"{"step":9,"token_spend":900}"#, 1),
            ev(
                2,
                "session.ended",
                r#"{"status":"completed","total_steps":12,"total_tokens":1200,"total_cost_usd":3}"#,
                2,
            ),
        ]);
        assert_eq!((row.total_steps, row.total_tokens, row.total_cost_usd), (12, 1200, Some(3.0)));
        assert_eq!(row.status, "completed");
    }

    #[test]
    fn status_comes_from_outcome_then_status_then_completed() {
        let cases = [
            (r#"{"outcome":"timeout","status":"failed"}"#, "timeout"),
            (r#"{"status":"cancelled"}"#, "cancelled"),
            (r#"{}"#, "completed"),
            (r#"{"outcome":7}"#, "completed"),
        ];
        for (payload, want) in cases {
            let row = derive(&[ev(1, "session.started", "{}", 0), ev(2, "session.ended", payload, 1)]);
            assert_eq!(row.status, want, "{payload}");
        }
        assert_eq!(derive(&[ev(1, "cognition.thought", "{}", 0)]).status, "running");
    }

    #[test]
    fn events_after_the_end_do_not_reopen() {
        let row = check_order_free(&[
            ev(1, "session.started", "{}", 0),
            ev(2, "session.ended", r#"{"outcome":"completed"}"#, 5),
            ev(3, "session.heartbeat", r#"{"status":"running"}"#, 7),
        ]);
        assert_eq!(row.status, "completed");
        assert_eq!(row.ended_at.as_deref(), Some("2026-04-03T10:00:05.000Z"));
        assert_eq!(row.last_seen_at.as_deref(), Some("2026-04-03T10:00:07.000Z"));
    }

    #[test]
    fn started_wins_identity_even_when_late() {
        let row = check_order_free(&[
            ev_as(2, "cognition.thought", "{}", 1, "early-name", None),
            ev_as(3, "cognition.goal", r#"{"goal":"sub-goal","status":"set"}"#, 2, "early-name", None),
            ev_as(1, "session.started", r#"{"goal":"the goal"}"#, 5, "real-name", Some("root_9")),
        ]);
        assert_eq!(row.agent_id, "real-name");
        assert_eq!(row.parent_session_id.as_deref(), Some("root_9"));
        assert_eq!(row.goal.as_deref(), Some("the goal"));
        assert_eq!(row.started_at.as_deref(), Some("2026-04-03T10:00:05.000Z"));
    }

    #[test]
    fn without_a_start_the_earliest_event_starts_the_session() {
        let row = check_order_free(&[ev(4, "cognition.thought", "{}", 3), ev(5, "cognition.thought", "{}", 1)]);
        assert_eq!(row.started_at.as_deref(), Some("2026-04-03T10:00:01.000Z"));
        assert_eq!(row.goal, None);
        assert_eq!(row.total_cost_usd, None);
        assert_eq!(row.total_tokens, 0);
    }

    #[test]
    fn cost_sums_do_not_depend_on_float_order() {
        let evs: Vec<Event> = [0.1, 0.2, 0.3, 1e-9, 7.77]
            .iter()
            .enumerate()
            .map(|(i, c)| ev(i as i64 + 1, "operation.external_call", &format!(r#"{{"cost_usd":{c}}}"#), i as u32))
            .collect();
        let row = check_order_free(&evs);
        assert!((row.total_cost_usd.unwrap() - 8.370000001).abs() < 1e-12);
    }

    /// An LLM call with these payload fields, at second `seq`.
    fn call(seq: i64, fields: &str) -> Event {
        ev(seq, "operation.external_call", &format!("{{{fields}}}"), seq as u32)
    }

    #[test]
    fn tokens_of_a_priced_model_cost_its_list_price() {
        // (payload fields, total_cost_usd, unpriced_models)
        let cases: &[(&[&str], Option<f64>, &[&str])] = &[
            // gpt-4o: $2.50 in, $10 out per million.
            (&[r#""model":"gpt-4o","input_tokens":1000,"output_tokens":500"#], Some(0.0075), &[]),
            (&[r#""model":"gpt-4o-2024-08-06","prompt_tokens":1000,"completion_tokens":500"#], Some(0.0075), &[]),
            (&[r#""llm":"GPT-4o","input_tokens":1000"#], Some(0.0025), &[]),
            (&[r#""request_model":"openai/gpt-4o","output_tokens":100"#], Some(0.001), &[]),
            (&[r#""model":"text-embedding-3-small","input_tokens":1000000"#], Some(0.02), &[]),
            // A reported cost wins over the price, and adds up with priced ones.
            (&[r#""model":"gpt-4o","input_tokens":1000,"cost_usd":0.5"#], Some(0.5), &[]),
            (
                &[
                    r#""model":"gpt-4o","input_tokens":1000,"output_tokens":500"#,
                    r#""cost_usd":0.25"#,
                    r#""model":"claude-3-5-haiku-20241022","input_tokens":10000,"output_tokens":1000"#,
                ],
                Some(0.0075 + 0.25 + 0.012),
                &[],
            ),
            // No model, or no tokens: nothing to price, and nothing unpriced either.
            (&[r#""input_tokens":1000,"output_tokens":500"#], None, &[]),
            (&[r#""model":"gpt-4o","token_spend_delta":1500"#], None, &[]),
            (&[r#""model":"","input_tokens":1000"#], None, &[]),
            // A model without a price costs nothing and says so.
            (&[r#""model":"my-local-llama","input_tokens":1000,"output_tokens":500"#], None, &["my-local-llama"]),
            (
                &[
                    r#""model":"my-local-llama","input_tokens":1000"#,
                    r#""model":"gpt-4o","input_tokens":1000"#,
                    r#""model":"claude-opus-4-6","output_tokens":1"#,
                    r#""model":"my-local-llama","input_tokens":7"#,
                ],
                Some(0.0025),
                &["claude-opus-4-6", "my-local-llama"],
            ),
        ];
        for (fields, cost, unpriced) in cases {
            let events: Vec<Event> = fields.iter().enumerate().map(|(i, f)| call(i as i64 + 1, f)).collect();
            let row = check_order_free(&events);
            match (row.total_cost_usd, cost) {
                (Some(got), Some(want)) => assert!((got - want).abs() < 1e-12, "{fields:?}: {got} != {want}"),
                (got, want) => assert_eq!(got, *want, "{fields:?}"),
            }
            assert_eq!(row.unpriced_models, *unpriced, "{fields:?}");
        }
    }

    #[test]
    fn tokens_of_a_session_event_are_totals_and_are_not_priced_again() {
        let row = check_order_free(&[
            call(1, r#""model":"gpt-4o","input_tokens":1000,"output_tokens":500"#),
            ev(2, "session.heartbeat", r#"{"status":"running","model":"gpt-4o","input_tokens":1000}"#, 2),
            ev(3, "session.ended", r#"{"outcome":"completed","llm":"gpt-4o","input_tokens":1000,"cost_usd":1}"#, 3),
        ]);
        assert_eq!(row.total_cost_usd, Some(1.0075), "the end's reported cost_usd counts, its tokens do not");
    }

    #[test]
    fn the_price_table_in_use_prices_the_tokens() {
        let events = [call(1, r#""model":"my-model","input_tokens":1000000,"output_tokens":1000000"#)];
        assert_eq!(derive(&events).total_cost_usd, None);
        let mut prices = Prices::builtin();
        prices.overlay([("my-model".to_owned(), crate::model::Price::new(1.5, 6.0).unwrap())]);
        let row = derive_with(&prices, &events);
        assert_eq!(row.total_cost_usd, Some(7.5));
        assert!(row.unpriced_models.is_empty());
    }

    #[test]
    fn unpriced_models_are_bounded_and_order_free() {
        let names: Vec<String> = (0..40).map(|i| format!("m-{i:02}-{}", "x".repeat(200))).collect();
        let events: Vec<Event> = names
            .iter()
            .enumerate()
            .map(|(i, m)| call(i as i64 + 1, &format!(r#""model":"{m}","input_tokens":1"#)))
            .collect();
        let forward = derive(&events);
        let backward = derive(&events.iter().rev().cloned().collect::<Vec<_>>());
        assert_eq!(forward, backward);
        assert_eq!(forward.unpriced_models.len(), MAX_UNPRICED_MODELS);
        assert!(forward.unpriced_models[0].starts_with("m-00-"));
        assert_eq!(forward.unpriced_models[0].chars().count(), MAX_MODEL_CHARS);
    }

    #[test]
    fn the_row_names_unpriced_models_only_when_there_are_some() {
        let plain = serde_json::to_value(derive(&[call(1, r#""model":"gpt-4o","input_tokens":1"#)])).unwrap();
        assert!(plain.get("unpriced_models").is_none(), "{plain}");
        let row = serde_json::to_value(derive(&[call(1, r#""model":"nope","input_tokens":1"#)])).unwrap();
        assert_eq!(row["unpriced_models"], serde_json::json!(["nope"]));
        assert_eq!(row["total_cost_usd"], serde_json::Value::Null);
    }

    #[test]
    fn state_survives_a_round_trip_through_json() {
        let mut s = SessionState::new("s1");
        s.apply(&ev(1, "session.started", r#"{"goal":"g"}"#, 0), &Prices::builtin());
        s.apply(&call(2, r#""model":"nope","input_tokens":1"#), &Prices::builtin());
        let back: SessionState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
