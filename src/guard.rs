//! The guard (`GUARD.md`): what an agent is told before it acts, decided from what the collector
//! knows of its session now. Pure: the facts come from the store's board (or row), the policy
//! from the config file's `[guard]` table; `http::guard` serves it and records the answer.

use crate::detect::{DetectConfig, LoopVerdict};
use crate::store::board::Facts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An answer, from the most permissive to the strictest: the strictest condition met wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Ask => "ask",
            Decision::Deny => "deny",
        }
    }
}

/// The decision each condition gives (`[guard]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub stopped: Decision,
    pub budget: Decision,
    #[serde(rename = "loop")]
    pub loops: Decision,
    pub cascade: Decision,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { stopped: Decision::Deny, budget: Decision::Deny, loops: Decision::Ask, cascade: Decision::Ask }
    }
}

impl Policy {
    /// The `[guard]` table of the config file, if any.
    pub fn from_toml(table: Option<toml::Value>) -> Result<Policy, String> {
        match table {
            None => Ok(Policy::default()),
            // toml's message ends with a newline, which would split the line the user reads.
            Some(v) => Policy::deserialize(v).map_err(|e| {
                format!(
                    "[guard]: {} (keys: stopped, budget, loop, cascade; values: allow, ask, deny)",
                    e.to_string().trim_end()
                )
            }),
        }
    }
}

/// A condition the call meets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    #[serde(rename = "type")]
    pub kind: Condition,
    pub message: String,
    /// The alert the condition stems from, when there is one (filled in by the caller, which
    /// can read the store).
    pub alert_id: Option<i64>,
    #[serde(skip)]
    pub decision: Decision,
    /// Whether an alert stands behind it (a call that would complete a loop has none yet).
    #[serde(skip)]
    pub alerted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Stopped,
    Budget,
    Loop,
    Cascade,
}

impl Condition {
    /// The alert type a condition stems from.
    pub fn alert_type(self) -> Option<&'static str> {
        match self {
            Condition::Stopped => None,
            Condition::Budget => Some("cost_spike"),
            Condition::Loop => Some("loop"),
            Condition::Cascade => Some("error_cascade"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub decision: Decision,
    pub reasons: Vec<Reason>,
}

/// The call an agent is about to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub session_id: String,
    pub agent_id: Option<String>,
    pub tool: String,
    pub input: Value,
}

/// Ids and names are labels: this long at most.
const MAX_LABEL: usize = 256;

impl Call {
    /// A guard request's body; the reason names the field.
    pub fn parse(body: &[u8]) -> Result<Call, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let Value::Object(mut o) = v else { return Err("the body must be a JSON object".into()) };
        let label = |o: &serde_json::Map<String, Value>, key: &str, required: bool| -> Result<Option<String>, String> {
            match o.get(key) {
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(format!("`{key}` is required")),
                Some(Value::String(s)) if s.is_empty() => Err(format!("`{key}` must not be empty")),
                Some(Value::String(s)) if s.len() > MAX_LABEL => {
                    Err(format!("`{key}` must be at most {MAX_LABEL} bytes"))
                }
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{key}` must be a string")),
            }
        };
        Ok(Call {
            session_id: label(&o, "session_id", true)?.unwrap_or_default(),
            agent_id: label(&o, "agent_id", false)?,
            tool: label(&o, "tool", true)?.unwrap_or_default(),
            input: o.remove("input").unwrap_or(Value::Null),
        })
    }
}

fn usd(x: f64) -> String {
    format!("${x:.2}")
}

/// Every condition the call meets, each with its configured decision; the strictest wins. An
/// unknown session (`None`) is allowed with no reasons: the guard never stops an agent for the
/// collector's own ignorance.
pub fn decide(facts: Option<&Facts>, call: &Call, policy: &Policy, cfg: &DetectConfig) -> Answer {
    let mut reasons = Vec::new();
    let Some(f) = facts else {
        return Answer { decision: Decision::Allow, reasons };
    };
    // `alerted`: an alert stands behind the reason (the stop has none; a loop's last call, not yet).
    let mut reason = |kind, decision, message, alerted| {
        reasons.push(Reason { kind, message, alert_id: None, decision, alerted });
    };
    if let Some(stop) = &f.stopped {
        let why = stop.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        reason(Condition::Stopped, policy.stopped, format!("an operator stopped this run at {}{why}", stop.at), false);
    }
    if let (Some(budget), Some(cost)) = (cfg.cost_budget_usd, f.cost_usd) {
        if cost >= budget {
            reason(
                Condition::Budget,
                policy.budget,
                format!("this run has cost {} of its {} budget", usd(cost), usd(budget)),
                true,
            );
        }
    }
    if let Some(watch) = &f.watch {
        match watch.loops.verdict(&call.tool, &call.input, cfg) {
            Some(LoopVerdict::Alerted { count }) => reason(
                Condition::Loop,
                policy.loops,
                format!("{} was called {count} times with this input: this run is looping", call.tool),
                true,
            ),
            Some(LoopVerdict::WouldComplete { count }) => reason(
                Condition::Loop,
                policy.loops,
                format!(
                    "this would be call {count} of {} with the same input within {} s: a loop",
                    call.tool, cfg.loop_window_secs
                ),
                false,
            ),
            None => {}
        }
        if watch.cascade {
            reason(
                Condition::Cascade,
                policy.cascade,
                "tool calls of this run keep failing (an error cascade)".into(),
                true,
            );
        }
    }
    let decision = reasons.iter().map(|r| r.decision).max().unwrap_or(Decision::Allow);
    Answer { decision, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, SessionState, Stopped};
    use crate::store::apply::Tracked;
    use serde_json::json;

    fn ev(seq: i64, kind: &str, payload: Value) -> Event {
        Event::parse(
            &json!({"spec":"aop/1.0","session_id":"s","agent_id":"a","sequence":seq,
                "timestamp":format!("2026-04-03T10:00:{:02}.000Z", seq % 60),"type":kind,"payload":payload})
            .to_string(),
        )
        .expect("valid")
    }

    fn call(tool: &str, input: Value) -> Call {
        Call { session_id: "s".into(), agent_id: None, tool: tool.into(), input }
    }

    /// The facts after `events`, as the writer would put them on the board.
    fn facts(events: &[Event], cfg: &DetectConfig) -> Facts {
        let mut t = Tracked::fresh(1, "s");
        for (i, e) in events.iter().enumerate() {
            t.apply(i as i64 + 1, e, cfg);
        }
        t.facts()
    }

    fn bash(seq: i64, cmd: &str, ok: bool) -> [Event; 2] {
        [
            ev(seq, "operation.tool_start", json!({"tool":"Bash","input":{"command":cmd}})),
            ev(seq + 1, "operation.tool_end", json!({"tool":"Bash","success":ok,"output_summary":"same"})),
        ]
    }

    #[test]
    fn an_unknown_session_and_a_plain_call_are_allowed_without_reasons() {
        let cfg = DetectConfig::default();
        let none = decide(None, &call("Bash", json!({})), &Policy::default(), &cfg);
        assert_eq!((none.decision, none.reasons.len()), (Decision::Allow, 0));
        let f = facts(&[ev(1, "session.started", json!({}))], &cfg);
        let plain = decide(Some(&f), &call("Bash", json!({"command":"ls"})), &Policy::default(), &cfg);
        assert_eq!((plain.decision, plain.reasons.len()), (Decision::Allow, 0));
    }

    #[test]
    fn the_call_that_would_complete_a_loop_is_asked_about_and_a_looping_one_too() {
        let cfg = DetectConfig::default();
        let n = cfg.loop_repeats as i64;
        let mut events = vec![ev(1, "session.started", json!({}))];
        for i in 0..n - 1 {
            events.extend(bash(2 + 2 * i, "make test", true));
        }
        let f = facts(&events, &cfg);
        let same = decide(Some(&f), &call("Bash", json!({"command":"make test"})), &Policy::default(), &cfg);
        assert_eq!(same.decision, Decision::Ask, "{same:?}");
        assert_eq!(same.reasons[0].kind, Condition::Loop);
        assert!(same.reasons[0].message.contains(&format!("call {n} of Bash")), "{}", same.reasons[0].message);
        let other = decide(Some(&f), &call("Bash", json!({"command":"make build"})), &Policy::default(), &cfg);
        assert_eq!(other.decision, Decision::Allow, "another input is another call");

        // The loop happens (its alert is raised): the same call again is still a loop.
        events.extend(bash(2 * n, "make test", true));
        let f = facts(&events, &cfg);
        let again = decide(Some(&f), &call("Bash", json!({"command":"make test"})), &Policy::default(), &cfg);
        assert_eq!(again.decision, Decision::Ask);
        assert!(again.reasons[0].message.contains("looping"), "{}", again.reasons[0].message);
        // A different outcome breaks the run: the next call starts counting anew.
        events.extend(bash(2 * n + 2, "make test", false));
        let f = facts(&events, &cfg);
        let broken = decide(Some(&f), &call("Bash", json!({"command":"make test"})), &Policy::default(), &cfg);
        assert_eq!(broken.decision, Decision::Allow, "{broken:?}");
    }

    #[test]
    fn each_condition_gives_its_configured_decision_and_the_strictest_wins() {
        let cfg = DetectConfig { cost_budget_usd: Some(0.01), ..DetectConfig::default() };
        let mut events = vec![ev(1, "session.started", json!({}))];
        for i in 0..cfg.cascade_run as i64 {
            events.extend(bash(2 + 2 * i, &format!("cmd {i}"), false));
        }
        events.push(ev(40, "session.heartbeat", json!({"total_cost_usd": 0.02})));
        let mut f = facts(&events, &cfg);
        f.stopped = Some(Stopped { at: "2026-04-03T10:00:41Z".into(), reason: Some("enough".into()) });
        let c = call("Bash", json!({"command":"new"}));

        let all = decide(Some(&f), &c, &Policy::default(), &cfg);
        let kinds: Vec<_> = all.reasons.iter().map(|r| (r.kind, r.decision)).collect();
        assert_eq!(
            kinds,
            [
                (Condition::Stopped, Decision::Deny),
                (Condition::Budget, Decision::Deny),
                (Condition::Cascade, Decision::Ask)
            ]
        );
        assert_eq!(all.decision, Decision::Deny);
        assert!(all.reasons[0].message.ends_with(": enough"));

        let lenient =
            Policy { stopped: Decision::Ask, budget: Decision::Allow, loops: Decision::Deny, cascade: Decision::Allow };
        assert_eq!(decide(Some(&f), &c, &lenient, &cfg).decision, Decision::Ask);
        f.stopped = None;
        let cascade_only = decide(Some(&f), &c, &lenient, &cfg);
        assert_eq!((cascade_only.decision, cascade_only.reasons.len()), (Decision::Allow, 2), "met, listed, allowed");
    }

    #[test]
    fn a_stop_is_lifted_by_a_resume_whatever_the_order_they_arrive_in() {
        let stop = ev(100, "aop.stop", json!({"reason":"runaway"}));
        let resume = ev(200, "aop.resume", json!({}));
        for order in [[&stop, &resume], [&resume, &stop]] {
            let mut s = SessionState::new("s");
            for e in order {
                s.apply(e, &crate::model::Prices::builtin());
            }
            assert_eq!(s.stopped(), None);
        }
        let mut s = SessionState::new("s");
        s.apply(&stop, &crate::model::Prices::builtin());
        assert_eq!(s.stopped().and_then(|x| x.reason.as_deref()), Some("runaway"));
        assert_eq!(s.view(0, 0).stopped.map(|x| x.at), Some("2026-04-03T10:00:40.000Z".into()));
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = Call::parse(br#"{"session_id":"s","tool":"Bash","input":{"command":"ls"}}"#).unwrap();
        assert_eq!((ok.tool.as_str(), ok.agent_id, &ok.input), ("Bash", None, &json!({"command":"ls"})));
        for (body, says) in [
            (&b"{"[..], "not JSON"),
            (b"[]", "JSON object"),
            (br#"{"tool":"Bash"}"#, "`session_id` is required"),
            (br#"{"session_id":7,"tool":"Bash"}"#, "`session_id` must be a string"),
            (br#"{"session_id":"s"}"#, "`tool` is required"),
            (br#"{"session_id":"","tool":"x"}"#, "must not be empty"),
        ] {
            let e = Call::parse(body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let long = format!(r#"{{"session_id":"{}","tool":"x"}}"#, "s".repeat(300));
        assert!(Call::parse(long.as_bytes()).unwrap_err().contains("at most"));
    }

    #[test]
    fn the_policy_reads_the_config_table_and_refuses_what_it_does_not_know() {
        let t: toml::Value = toml::from_str("loop = \"deny\"\nstopped = \"ask\"").unwrap();
        let p = Policy::from_toml(Some(t)).unwrap();
        assert_eq!((p.loops, p.stopped, p.budget), (Decision::Deny, Decision::Ask, Decision::Deny));
        let bad: toml::Value = toml::from_str("loops = \"deny\"").unwrap();
        assert!(Policy::from_toml(Some(bad)).unwrap_err().contains("keys: stopped"));
        let bad: toml::Value = toml::from_str("loop = \"block\"").unwrap();
        assert!(Policy::from_toml(Some(bad)).is_err());
    }
}
