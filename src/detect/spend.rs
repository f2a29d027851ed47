//! `cost_spike`: one increment at least `spike_factor` times the median of the previous ones, and
//! the cost budget.
//!
//! Increments come in four series, each with its own median, because they are not comparable: a
//! tool end's or an LLM call's (`external_call`) `cost_usd` and `token_spend_delta` (one call's spend), and the growth of a
//! heartbeat's reported `total_cost_usd` and `token_spend`/`total_tokens` since the previous
//! heartbeat (30 s of spend). Mixing them would make every heartbeat a "spike" for an agent that
//! reports both. Zero increments are not samples: an idle heartbeat or a free tool says nothing
//! about what spending looks like, and a zero median would make any spend a spike. An event whose
//! cost and tokens both spike raises one alert (about the cost).
//!
//! An event's cost is [`Event::cost`]'s, as in session derivation: its `cost_usd`, else its
//! model's list price for its tokens. The session's total cost, for the budget, is the one the
//! session row shows (`COLLECTOR.md`, Sessions): the latest reported `total_cost_usd`, else the sum
//! of those costs.

use super::alert::{AlertKind, NewAlert, Severity};
use super::config::DetectConfig;
use crate::model::Event;
use crate::model::Payload;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::VecDeque;

/// Increments kept per series for the median: enough for a stable baseline, and small because the
/// state is saved with the session. A `spike_min_samples` above it acts as this number.
pub const MAX_SAMPLES: usize = 32;

#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub(crate) struct Spend {
    tool_cost: Series,
    tool_tokens: Series,
    heartbeat_cost: Series,
    heartbeat_tokens: Series,
    /// The previous heartbeat's totals, to turn the next ones into growth.
    heartbeat_cost_total: Option<Reported>,
    heartbeat_tokens_total: Option<Reported>,
    /// The latest `total_cost_usd` reported by a heartbeat or the end (highest sequence wins).
    reported_cost: Option<Reported>,
    /// Sum of the events' costs, in nano-dollars like session derivation.
    cost_nano: Option<i64>,
    budget_alerted: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Reported {
    seq: i64,
    value: f64,
}

#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
struct Series {
    samples: VecDeque<f64>,
    /// Whether the latest increment was a spike: consecutive spikes are one episode.
    spiking: bool,
}

/// What a series measures, for the message and details.
#[derive(Clone, Copy)]
enum Measure {
    ToolCost,
    ToolTokens,
    HeartbeatCost,
    HeartbeatTokens,
}

impl Series {
    /// Adds one increment; returns the median it was compared with when it starts a spike.
    fn push(&mut self, x: f64, cfg: &DetectConfig) -> Option<(f64, usize)> {
        if !(x > 0.0 && x.is_finite()) {
            return None;
        }
        let needed = cfg.spike_min_samples.clamp(1, MAX_SAMPLES);
        let spike = if self.samples.len() >= needed {
            let m = median(&self.samples);
            (x >= cfg.spike_factor * m).then_some((m, self.samples.len()))
        } else {
            None
        };
        let starts = spike.filter(|_| !self.spiking);
        self.spiking = spike.is_some();
        self.samples.push_back(x);
        if self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        starts
    }
}

fn median(xs: &VecDeque<f64>) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().collect();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Growth of a reported total since the previous report. A report older than the previous one
/// (arrived late) is ignored; a smaller total (a counter reset) only moves the baseline.
fn growth(prev: &mut Option<Reported>, seq: i64, value: f64) -> Option<f64> {
    match *prev {
        Some(p) if seq <= p.seq => None,
        Some(p) => {
            *prev = Some(Reported { seq, value });
            Some(value - p.value).filter(|d| *d > 0.0)
        }
        None => {
            *prev = Some(Reported { seq, value });
            None
        }
    }
}

impl Spend {
    pub(crate) fn observe(&mut self, ev: &Event, p: &Payload, cfg: &DetectConfig) -> Vec<NewAlert> {
        let seq = ev.sequence;
        let cost = ev.cost(&cfg.prices);
        let mut spikes = Vec::new();
        match ev.kind.as_str() {
            // An LLM call is one call's spend like a tool's (and what OTLP spans become).
            "operation.tool_end" | "operation.external_call" => {
                if let Some(x) = cost.and_then(|c| c.usd()) {
                    spikes.push((Measure::ToolCost, x, self.tool_cost.push(x, cfg)));
                }
                if let Some(x) = p.num("token_spend_delta") {
                    spikes.push((Measure::ToolTokens, x, self.tool_tokens.push(x, cfg)));
                }
            }
            "session.heartbeat" => {
                if let Some(total) = p.num("total_cost_usd") {
                    if let Some(x) = growth(&mut self.heartbeat_cost_total, seq, total) {
                        spikes.push((Measure::HeartbeatCost, x, self.heartbeat_cost.push(x, cfg)));
                    }
                }
                if let Some(total) = p.first_num(&["token_spend", "total_tokens"]) {
                    if let Some(x) = growth(&mut self.heartbeat_tokens_total, seq, total) {
                        spikes.push((Measure::HeartbeatTokens, x, self.heartbeat_tokens.push(x, cfg)));
                    }
                }
            }
            _ => {}
        }
        // One event raises one spike alert, the cost's before the tokens'.
        let mut alerts: Vec<NewAlert> = spikes
            .into_iter()
            .filter(|_| cfg.spike_enabled)
            .find_map(|(m, x, spike)| spike.map(|(median, n)| spike_alert(m, &Call::of(ev, p), x, median, n, seq, cfg)))
            .into_iter()
            .collect();

        if let Some(nano) = cost.and_then(|c| c.nano_usd()) {
            self.cost_nano = Some(self.cost_nano.unwrap_or(0).saturating_add(nano));
        }
        if matches!(ev.kind.as_str(), "session.heartbeat" | "session.ended") {
            if let Some(total) = p.num("total_cost_usd") {
                if self.reported_cost.is_none_or(|r| seq > r.seq) {
                    self.reported_cost = Some(Reported { seq, value: total });
                }
            }
        }
        alerts.extend(self.check_budget(seq, cfg));
        alerts
    }

    fn total_cost(&self) -> Option<f64> {
        self.reported_cost.map(|r| r.value).or(self.cost_nano.map(|n| n as f64 / 1e9))
    }

    fn check_budget(&mut self, seq: i64, cfg: &DetectConfig) -> Option<NewAlert> {
        let budget = cfg.cost_budget_usd?;
        let total = self.total_cost()?;
        let over = total > budget;
        if self.budget_alerted || !over {
            return None;
        }
        self.budget_alerted = true;
        Some(NewAlert {
            kind: AlertKind::CostSpike,
            severity: Severity::Critical,
            message: format!("session cost {} passed the budget of {}", usd(total), usd(budget)),
            sequence: Some(seq),
            details: json!({ "total_cost_usd": total, "budget_usd": budget }),
        })
    }
}

/// The call a per-call spike is about: a tool by its name, an LLM call by its model.
struct Call<'a> {
    name: Option<&'a str>,
    source: &'static str,
}

impl<'a> Call<'a> {
    fn of(ev: &Event, p: &'a Payload) -> Call<'a> {
        if ev.kind == "operation.external_call" {
            Call { name: p.str("model").or_else(|| p.str("service")), source: "external_call" }
        } else {
            Call { name: p.tool(), source: "tool_end" }
        }
    }
}

fn spike_alert(
    m: Measure,
    call: &Call<'_>,
    x: f64,
    median: f64,
    samples: usize,
    seq: i64,
    cfg: &DetectConfig,
) -> NewAlert {
    let ratio = x / median;
    let tool = call.name;
    let tool_label = match (tool, call.source) {
        (Some(t), "external_call") => format!("a {} call", super::json::cut(t, 128).0),
        (Some(t), _) => super::json::cut(t, 128).0,
        (None, "external_call") => "an external call".to_owned(),
        (None, _) => "a tool call".to_owned(),
    };
    let (message, series, source) = match m {
        Measure::ToolCost => (
            format!(
                "{tool_label} cost {} in one call, {ratio:.1}× the session's median of {} (last {samples} calls)",
                usd(x),
                usd(median)
            ),
            "cost_usd",
            call.source,
        ),
        Measure::ToolTokens => (
            format!(
                "{tool_label} used {} tokens in one call, {ratio:.1}× the session's median of {} (last {samples} calls)",
                tokens(x),
                tokens(median)
            ),
            "tokens",
            call.source,
        ),
        Measure::HeartbeatCost => (
            format!(
                "cost grew by {} between two heartbeats, {ratio:.1}× the session's median of {} (last {samples} intervals)",
                usd(x),
                usd(median)
            ),
            "cost_usd",
            "heartbeat",
        ),
        Measure::HeartbeatTokens => (
            format!(
                "token spend grew by {} between two heartbeats, {ratio:.1}× the session's median of {} (last {samples} intervals)",
                tokens(x),
                tokens(median)
            ),
            "tokens",
            "heartbeat",
        ),
    };
    let tool = match m {
        Measure::ToolCost | Measure::ToolTokens => tool.map(|t| super::json::cut(t, 128).0),
        Measure::HeartbeatCost | Measure::HeartbeatTokens => None,
    };
    NewAlert {
        kind: AlertKind::CostSpike,
        severity: Severity::Warning,
        message,
        sequence: Some(seq),
        details: json!({
            "series": series,
            "source": source,
            "tool": tool,
            "increment": x,
            "median": median,
            "ratio": ratio,
            "factor": cfg.spike_factor,
            "samples": samples,
        }),
    }
}

/// Dollars for a person: cents above a cent, more digits below.
fn usd(x: f64) -> String {
    if x.abs() >= 0.01 {
        format!("${x:.2}")
    } else {
        let s = format!("{x:.6}");
        format!("${}", s.trim_end_matches('0'))
    }
}

fn tokens(x: f64) -> String {
    format!("{x:.0}")
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::AlertKind::CostSpike;
    use super::*;

    /// Tool ends with these payload fragments, one per second from sequence 1.
    fn ends(fields: &[String]) -> Vec<Event> {
        fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                ev(i as i64 + 1, i as f64, "operation.tool_end", &format!(r#"{{"tool":"llm","success":true,{f}}}"#))
            })
            .collect()
    }

    fn costs(xs: &[f64]) -> Vec<Event> {
        ends(&xs.iter().map(|x| format!(r#""cost_usd":{x}"#)).collect::<Vec<_>>())
    }

    fn heartbeats(field: &str, totals: &[f64]) -> Vec<Event> {
        totals
            .iter()
            .enumerate()
            .map(|(i, t)| {
                ev(
                    i as i64 + 1,
                    30.0 * i as f64,
                    "session.heartbeat",
                    &format!(r#"{{"status":"running","{field}":{t}}}"#),
                )
            })
            .collect()
    }

    #[test]
    fn a_spike_against_the_median() {
        // (increments, expected alerts)
        let cases: &[(&[f64], &Want)] = &[
            (&[0.01, 0.01, 0.01, 0.01, 0.01, 0.05], &[(CostSpike, Some(6))]),
            (&[0.01, 0.01, 0.01, 0.01, 0.01, 0.049], &[]),
            (&[0.01, 0.01, 0.01, 0.01, 0.5], &[]),
            (&[0.01, 0.02, 0.01, 0.02, 0.01, 0.02, 0.03, 0.01, 0.02, 0.03, 0.02], &[]),
            (&[0.01, 1.0, 0.01, 0.01, 0.01, 0.01, 0.05], &[(CostSpike, Some(7))]),
            (&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01], &[]),
            (&[0.01, 0.0, 0.01, -3.0, 0.01, 0.01, 0.0, 0.01, 0.05], &[(CostSpike, Some(9))]),
        ];
        for (xs, want) in cases {
            check(&costs(xs), want);
        }
    }

    #[test]
    fn steady_growth_is_not_a_spike() {
        let xs: Vec<f64> = (1..=40).map(|i| 0.01 * f64::from(i)).collect();
        check(&costs(&xs), &[]);
        let totals: Vec<f64> = (0..40).map(|i| 1000.0 * f64::from(i) * 1.05f64.powi(i)).collect();
        check(&heartbeats("token_spend", &totals), &[]);
    }

    #[test]
    fn one_alert_per_episode_and_again_after_a_break() {
        check(
            &costs(&[0.01, 0.01, 0.01, 0.01, 0.01, 0.1, 0.1, 0.01, 0.1]),
            &[(CostSpike, Some(6)), (CostSpike, Some(9))],
        );
    }

    #[test]
    fn tokens_and_cost_are_separate_series() {
        let fields: Vec<String> = (0..6)
            .map(|i| {
                let tokens = if i == 5 { 5000 } else { 100 };
                format!(r#""cost_usd":0.01,"token_spend_delta":{tokens}"#)
            })
            .collect();
        let events = ends(&fields);
        check(&events, &[(CostSpike, Some(6))]);
        let a = &alerts(&events)[0];
        assert_eq!(a.message, "llm used 5000 tokens in one call, 50.0× the session's median of 100 (last 5 calls)");
        assert_eq!(a.details["series"], "tokens");
        assert_eq!(a.details["median"], 100.0);
    }

    #[test]
    fn cost_and_tokens_spiking_together_raise_one_alert() {
        let mut fields = vec![r#""cost_usd":0.01,"token_spend_delta":100"#.to_owned(); 5];
        fields.push(r#""cost_usd":0.5,"token_spend_delta":9000"#.to_owned());
        let events = ends(&fields);
        check(&events, &[(CostSpike, Some(6))]);
        assert_eq!(alerts(&events)[0].details["series"], "cost_usd");
    }

    #[test]
    fn heartbeat_totals_grow() {
        check(&heartbeats("total_cost_usd", &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.2]), &[(CostSpike, Some(7))]);
        check(&heartbeats("total_tokens", &[0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0]), &[(CostSpike, Some(7))]);
        let a = &alerts(&heartbeats("total_cost_usd", &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.2]))[0];
        assert_eq!(
            a.message,
            "cost grew by $0.70 between two heartbeats, 7.0× the session's median of $0.10 (last 5 intervals)"
        );
        // A late heartbeat (lower sequence) is not growth, and a reset only moves the baseline.
        let mut events = heartbeats("token_spend", &[0.0, 100.0, 200.0, 300.0, 400.0, 500.0]);
        events.push(ev(3, 200.0, "session.heartbeat", r#"{"token_spend":150}"#));
        events.push(ev(7, 210.0, "session.heartbeat", r#"{"token_spend":10}"#));
        events.push(ev(8, 240.0, "session.heartbeat", r#"{"token_spend":110}"#));
        check(&events, &[]);
    }

    #[test]
    fn tool_increments_and_heartbeat_growth_do_not_mix() {
        let mut events = Vec::new();
        for i in 0..8 {
            let s = 1 + 3 * i;
            let t = 30.0 * f64::from(i as i32);
            events.push(ev(s, t, "operation.tool_end", r#"{"tool":"llm","success":true,"cost_usd":0.01}"#));
            events.push(ev(s + 1, t + 1.0, "operation.tool_end", r#"{"tool":"llm","success":true,"cost_usd":0.01}"#));
            events.push(ev(
                s + 2,
                t + 2.0,
                "session.heartbeat",
                &format!(r#"{{"total_cost_usd":{}}}"#, 0.5 * f64::from(i as i32)),
            ));
        }
        check(&events, &[]);
    }

    #[test]
    fn budget_is_critical_and_raised_once() {
        let cfg = DetectConfig { cost_budget_usd: Some(1.0), ..DetectConfig::default() };
        check_with(&cfg, &costs(&[0.4, 0.4, 0.2, 0.3, 0.3]), &[(CostSpike, Some(4))]);
        let a = &alerts_with(&cfg, &costs(&[0.4, 0.4, 0.2, 0.3]))[0];
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.message, "session cost $1.30 passed the budget of $1.00");
        // A reported total is the session's total, as in the session row.
        check_with(&cfg, &heartbeats("total_cost_usd", &[0.5, 0.9, 1.0, 1.5, 2.0]), &[(CostSpike, Some(4))]);
        let mut events = costs(&[0.6, 0.6]);
        events.push(ev(3, 3.0, "session.ended", r#"{"outcome":"completed","total_cost_usd":0.9}"#));
        check_with(&cfg, &events, &[(CostSpike, Some(2))]);
        check(&costs(&[0.4, 0.4, 0.2, 0.3]), &[]);
    }

    /// An LLM call reporting tokens of `model` and no cost, at second `seq`.
    fn llm(seq: i64, kind: &str, model: &str, input: i64, output: i64) -> Event {
        let p = format!(
            r#"{{"tool":"llm","success":true,"model":"{model}","input_tokens":{input},"output_tokens":{output}}}"#
        );
        ev(seq, seq as f64, kind, &p)
    }

    #[test]
    fn priced_tokens_count_like_a_reported_cost() {
        let budget = DetectConfig { cost_budget_usd: Some(1.0), ..DetectConfig::default() };
        let call = "operation.external_call";
        // gpt-4o: $2.50 in, $10 out per million; 40k output tokens are $0.40.
        let cases: &[(&str, Vec<Event>, &Want)] = &[
            (
                "priced calls pass the budget",
                (1..=3).map(|s| llm(s, call, "gpt-4o", 0, 40_000)).collect(),
                &[(CostSpike, Some(3))],
            ),
            (
                "priced and reported costs add up",
                vec![
                    llm(1, call, "gpt-4o", 0, 40_000),
                    ev(2, 2.0, call, r#"{"model":"gpt-4o","output_tokens":1,"cost_usd":0.7}"#),
                ],
                &[(CostSpike, Some(2))],
            ),
            (
                "a model without a price costs nothing",
                (1..=3).map(|s| llm(s, call, "my-local-llama", 1_000_000, 1_000_000)).collect(),
                &[],
            ),
            (
                "a session event's tokens are totals, not spend",
                vec![ev(1, 1.0, "session.heartbeat", r#"{"model":"gpt-4o","output_tokens":200000}"#)],
                &[],
            ),
        ];
        for (name, events, want) in cases {
            let got: Vec<_> = alerts_with(&budget, events).iter().map(|a| (a.kind, a.sequence)).collect();
            assert_eq!(got, *want, "{name}");
            check_with(&budget, events, want);
        }
        let a = &alerts_with(&budget, &cases[0].1)[0];
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.message, "session cost $1.20 passed the budget of $1.00");
    }

    #[test]
    fn a_priced_tool_call_can_spike() {
        // gpt-4o-mini output: $0.60 per million.
        let mut events: Vec<Event> = (1..=5).map(|s| llm(s, "operation.tool_end", "gpt-4o-mini", 0, 1000)).collect();
        events.push(llm(6, "operation.tool_end", "gpt-4o-mini-2024-07-18", 0, 10_000));
        check(&events, &[(CostSpike, Some(6))]);
        let a = &alerts(&events)[0];
        assert_eq!(a.details["series"], "cost_usd");
        assert_eq!(a.message, "llm cost $0.006 in one call, 10.0× the session's median of $0.0006 (last 5 calls)");
    }

    #[test]
    fn the_configured_prices_are_the_ones_used() {
        let mut prices = crate::model::Prices::builtin();
        prices.overlay([("my-model".to_owned(), crate::model::Price::new(1.5, 6.0).unwrap())]);
        let cfg =
            DetectConfig { cost_budget_usd: Some(1.0), prices: std::sync::Arc::new(prices), ..DetectConfig::default() };
        let events = [llm(1, "operation.external_call", "my-model", 1_000_000, 0)];
        check_with(&cfg, &events, &[(CostSpike, Some(1))]);
        check(&events, &[]);
    }

    #[test]
    fn disabled() {
        let cfg = DetectConfig { spike_enabled: false, ..DetectConfig::default() };
        check_with(&cfg, &costs(&[0.01, 0.01, 0.01, 0.01, 0.01, 0.5]), &[]);
    }

    #[test]
    fn money() {
        assert_eq!(usd(1.234), "$1.23");
        assert_eq!(usd(0.06), "$0.06");
        assert_eq!(usd(0.0003), "$0.0003");
    }
}
