//! Realistic AOP events: whole sessions (started … ended) of every event type, 300–600 bytes
//! each, in both the documented and the de-facto vocabularies, without triggering detectors on
//! purpose (inputs vary, costs stay near their median), so the load is what a busy machine of
//! ordinary agents sends.

use std::fmt::Write;
use time::OffsetDateTime;

/// Each event aims at a size drawn from this range; the text field absorbs the difference.
const TARGET_BYTES: (usize, usize) = (330, 570);

const AGENTS: [&str; 20] = [
    "research-agent",
    "coding-agent",
    "support-bot",
    "data-pipeline",
    "planner",
    "sales-assistant",
    "triage-agent",
    "writer-agent",
    "qa-agent",
    "ops-runbook",
    "billing-agent",
    "scraper",
    "summarizer",
    "sql-analyst",
    "release-bot",
    "onboarding-guide",
    "security-review",
    "translator",
    "scheduler",
    "crm-sync",
];

const TOOLS: [&str; 10] = [
    "web_search",
    "read_file",
    "write_file",
    "run_tests",
    "sql_query",
    "http_get",
    "summarize",
    "calculator",
    "send_email",
    "vector_search",
];

/// Filler prose: ASCII without quotes or backslashes, so it needs no JSON escaping.
const PROSE: &str =
    "the agent compares the retrieved documents with the user request and notes that the second source \
contradicts the first on the release date so it plans another search restricted to official changelogs \
before drafting the summary then it checks the token budget and decides the remaining steps fit within \
the limit while the test suite runs in the background and reports two flaky cases that are retried once \
with a longer timeout and pass on the second attempt which is recorded in the session notes for review \
by the operator who asked for a concise answer with links to every page that was used as evidence here ";

/// splitmix64: tiny, fast, and good enough to vary benchmark data; seeded, so a seed replays.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub(crate) fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    pub(crate) fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// RFC 3339 timestamps with milliseconds, formatted once per millisecond: a batch of a thousand
/// events would otherwise format the same instant a thousand times.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last_ms: i64,
    text: String,
}

impl Clock {
    pub(crate) fn at(&mut self, unix_ms: i64) -> &str {
        if unix_ms != self.last_ms || self.text.is_empty() {
            self.last_ms = unix_ms;
            self.text = rfc3339_ms(unix_ms);
        }
        &self.text
    }

    pub(crate) fn now(&mut self) -> &str {
        self.at(now_ms())
    }
}

pub(crate) fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn rfc3339_ms(unix_ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// When the events of a session happened.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Time {
    /// The wall clock at generation: live traffic.
    Now,
    /// `start_ms + sequence * step_ms`: a replayable history (the large store is loaded twice
    /// only as duplicates, never as conflicts).
    Fixed { start_ms: i64, step_ms: i64 },
}

/// One session's events, in order. The last is `session.ended`, at sequence `len` exactly.
#[derive(Debug, Clone)]
pub(crate) struct SessionGen {
    pub(crate) id: String,
    agent: &'static str,
    /// Goal prefix, e.g. a searchable customer tag for the large store.
    goal_tag: String,
    pub(crate) next_seq: u64,
    len: u64,
    time: Time,
    rng: Rng,
    /// A tool call started and not yet ended: the next event ends it.
    open_tool: Option<(&'static str, u64)>,
    tokens: u64,
    cost_micros: u64,
    steps: u64,
}

/// Pushes up to `n` characters of prose, from a random place.
fn fill(out: &mut String, rng: &mut Rng, n: usize) {
    let mut start = rng.below(PROSE.len() as u64) as usize;
    let mut left = n;
    while left > 0 {
        let take = left.min(PROSE.len() - start);
        out.push_str(&PROSE[start..start + take]);
        left -= take;
        start = 0;
    }
}

fn dollars(out: &mut String, micros: u64) {
    let _ = write!(out, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
}

impl SessionGen {
    /// `len` >= 2: started, `len - 2` events, ended.
    pub(crate) fn new(id: String, agent_no: u64, len: u64, time: Time, seed: u64) -> SessionGen {
        SessionGen {
            id,
            agent: AGENTS[(agent_no % AGENTS.len() as u64) as usize],
            goal_tag: String::new(),
            next_seq: 1,
            len: len.max(2),
            time,
            rng: Rng::new(seed),
            open_tool: None,
            tokens: 0,
            cost_micros: 0,
            steps: 0,
        }
    }

    pub(crate) fn with_goal_tag(mut self, tag: String) -> SessionGen {
        self.goal_tag = tag;
        self
    }

    /// Makes the next event end the session (after ending an open tool call, if any).
    pub(crate) fn end_now(&mut self) {
        self.len = self.next_seq + u64::from(self.open_tool.is_some());
    }

    pub(crate) fn is_done(&self) -> bool {
        self.next_seq > self.len
    }

    /// Writes the next event into `out` (replacing its content). Past the end, it writes
    /// more `session.ended` events; callers stop at [`SessionGen::is_done`].
    pub(crate) fn next(&mut self, clock: &mut Clock, out: &mut String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let target = self.rng.range(TARGET_BYTES.0 as u64, TARGET_BYTES.1 as u64) as usize;
        let kind = self.pick_kind(seq);
        let ts = match self.time {
            Time::Now => clock.now(),
            Time::Fixed { start_ms, step_ms } => clock.at(start_ms + seq as i64 * step_ms),
        };
        out.clear();
        let _ = write!(
            out,
            r#"{{"spec":"aop/1.0","session_id":"{}","parent_session_id":null,"agent_id":"{}","sequence":{seq},"timestamp":"{ts}","type":"{}","payload":{{"#,
            self.id,
            self.agent,
            kind.name()
        );
        // Each arm writes the fixed fields, opens one text field, and names the bytes closing the payload;
        // the text is sized so the whole event lands on `target`.
        let close = self.payload(kind, seq, out);
        let n = target.saturating_sub(out.len() + close.len() + 1).max(12);
        fill(out, &mut self.rng, n);
        out.push_str(close);
        out.push('}');
    }

    fn pick_kind(&mut self, seq: u64) -> Kind {
        if seq == 1 {
            return Kind::Started;
        }
        if self.open_tool.is_some() {
            return Kind::ToolEnd;
        }
        if seq >= self.len {
            return Kind::Ended;
        }
        let room_for_pair = seq + 1 < self.len;
        match self.rng.below(100) {
            0..=21 => Kind::Thought,
            22..=51 if room_for_pair => Kind::ToolStart,
            22..=51 => Kind::Thought,
            52..=59 => Kind::Decision,
            60..=64 => Kind::Goal,
            65..=68 => Kind::Uncertainty,
            69..=76 => Kind::Memory,
            77..=84 => Kind::External,
            85..=96 => Kind::Heartbeat,
            97 => Kind::Spawn,
            _ => Kind::Custom,
        }
    }

    fn payload(&mut self, kind: Kind, seq: u64, out: &mut String) -> &'static str {
        let r = &mut self.rng;
        match kind {
            Kind::Started => {
                let _ = write!(
                    out,
                    r#""agent_version":"2.{}.{}","llm":"model-{}","goal":"{}"#,
                    r.below(9),
                    r.below(20),
                    ["large", "medium", "small"][r.below(3) as usize],
                    self.goal_tag
                );
                r#""}"#
            }
            Kind::Thought => {
                // Low confidence stays rare so three in a row (an alert) stays rare too.
                let confidence = match r.below(20) {
                    0 => "low",
                    1..=7 => "medium",
                    _ => "high",
                };
                if r.percent(20) {
                    let _ = write!(out, r#""confidence":"{confidence}","next_intent":"call a tool","reasoning":""#);
                } else {
                    let _ = write!(out, r#""confidence":"{confidence}","content":""#);
                }
                r#""}"#
            }
            Kind::Decision => {
                let a = TOOLS[r.below(10) as usize];
                let b = TOOLS[r.below(10) as usize];
                let _ = write!(out, r#""decision":"use {a}","alternatives":["{b}","ask the user"],"reasoning":""#);
                r#""}"#
            }
            Kind::Goal => {
                let status = ["set", "in_progress", "completed"][r.below(3) as usize];
                let _ = write!(out, r#""status":"{status}","parent_goal":"main","goal":"step {seq}: "#);
                r#""}"#
            }
            Kind::Uncertainty => {
                out.push_str(r#""content":""#);
                r#""}"#
            }
            Kind::ToolStart => {
                let tool = TOOLS[r.below(10) as usize];
                self.open_tool = Some((tool, seq));
                // The query carries the sequence: identical repeated inputs would be a loop alert.
                let _ = write!(
                    out,
                    r#""tool":"{tool}","tool_call_id":"call_{seq}","input":{{"limit":{},"query":"q{seq} "#,
                    r.range(1, 50)
                );
                r#""}}"#
            }
            Kind::ToolEnd => {
                let (tool, call) = self.open_tool.take().unwrap_or(("web_search", seq));
                let success = r.below(25) != 0;
                let tokens = r.range(200, 900);
                let cost = r.range(2_000, 9_000);
                self.tokens += tokens;
                self.cost_micros += cost;
                self.steps += 1;
                let _ = write!(
                    out,
                    r#""tool":"{tool}","tool_call_id":"call_{call}","success":{success},"latency_ms":{},"token_spend_delta":{tokens},"cost_usd":"#,
                    r.range(5, 2500)
                );
                dollars(out, cost);
                if success {
                    out.push_str(r#","output_summary":""#);
                } else {
                    out.push_str(r#","error":"upstream timeout","output_summary":""#);
                }
                r#""}"#
            }
            Kind::Memory => {
                let op = ["read", "write", "delete"][r.below(3) as usize];
                let _ = write!(out, r#""operation":"{op}","key":"notes/{}","summary":""#, r.below(1000));
                r#""}"#
            }
            Kind::External => {
                let (service, method, endpoint) = [
                    ("github", "GET", "/repos/acme/app/pulls"),
                    ("stripe", "POST", "/v1/charges"),
                    ("slack", "POST", "/api/chat.postMessage"),
                    ("jira", "GET", "/rest/api/2/search"),
                ][r.below(4) as usize];
                let _ = write!(
                    out,
                    r#""service":"{service}","method":"{method}","endpoint":"{endpoint}","status_code":{},"latency_ms":{},"metadata":{{"note":""#,
                    [200, 200, 200, 201, 404, 500][r.below(6) as usize],
                    r.range(20, 900)
                );
                r#""}}"#
            }
            Kind::Heartbeat => {
                let _ = write!(
                    out,
                    r#""status":"running","step":{},"token_spend":{},"total_cost_usd":"#,
                    self.steps, self.tokens
                );
                dollars(out, self.cost_micros);
                out.push_str(r#","current_goal":""#);
                r#""}"#
            }
            Kind::Spawn => {
                let _ = write!(
                    out,
                    r#""child_agent_id":"{}","child_session_id":"{}.c{seq}","reason":"delegate","goal":""#,
                    AGENTS[r.below(20) as usize],
                    self.id
                );
                r#""}"#
            }
            Kind::Custom => {
                out.push_str(r#""checkpoint":true,"note":""#);
                r#""}"#
            }
            Kind::Ended => {
                let outcome = match r.below(100) {
                    0..=79 => "completed",
                    80..=91 => "failed",
                    92..=96 => "cancelled",
                    _ => "timeout",
                };
                let _ = write!(
                    out,
                    r#""outcome":"{outcome}","total_steps":{},"total_tokens":{},"total_cost_usd":"#,
                    self.steps, self.tokens
                );
                dollars(out, self.cost_micros);
                out.push_str(r#","outcome_summary":""#);
                r#""}"#
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Started,
    Thought,
    Decision,
    Goal,
    Uncertainty,
    ToolStart,
    ToolEnd,
    Memory,
    External,
    Heartbeat,
    Spawn,
    Custom,
    Ended,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Started => "session.started",
            Kind::Thought => "cognition.thought",
            Kind::Decision => "cognition.decision",
            Kind::Goal => "cognition.goal",
            Kind::Uncertainty => "cognition.uncertainty",
            Kind::ToolStart => "operation.tool_start",
            Kind::ToolEnd => "operation.tool_end",
            Kind::Memory => "operation.memory",
            Kind::External => "operation.external_call",
            Kind::Heartbeat => "session.heartbeat",
            Kind::Spawn => "operation.agent_spawn",
            Kind::Custom => "x-bench.checkpoint",
            Kind::Ended => "session.ended",
        }
    }
}

/// Live traffic from one simulated agent host: `open` sessions interleaved at random, each
/// replaced by a fresh one when it ends, with a count of acknowledged events per session for
/// the final verification.
pub(crate) struct Source {
    prefix: String,
    rng: Rng,
    clock: Clock,
    open: Vec<(u32, SessionGen)>,
    next_no: u32,
    len: (u64, u64),
    /// Acknowledged events per session number.
    acked: Vec<u64>,
    /// Bytes of the events generated (JSON text, no newline).
    pub(crate) raw_bytes: u64,
}

impl Source {
    /// Session ids are `{prefix}{n}`; `prefix` carries the run id, so runs never collide.
    pub(crate) fn new(prefix: String, seed: u64, open: usize, len: (u64, u64)) -> Source {
        let mut s = Source {
            prefix,
            rng: Rng::new(seed),
            clock: Clock::default(),
            open: Vec::with_capacity(open),
            next_no: 0,
            len,
            acked: Vec::new(),
            raw_bytes: 0,
        };
        for _ in 0..open.max(1) {
            s.spawn();
        }
        s
    }

    fn spawn(&mut self) {
        let no = self.next_no;
        self.next_no += 1;
        self.acked.push(0);
        let len = self.rng.range(self.len.0, self.len.1);
        let seed = self.rng.next_u64();
        let agent = self.rng.below(AGENTS.len() as u64);
        let id = format!("{}{no}", self.prefix);
        self.open.push((no, SessionGen::new(id, agent, len, Time::Now, seed)));
    }

    /// Writes the next event into `out`; returns its session number (for [`Source::ack`]).
    pub(crate) fn next(&mut self, out: &mut String) -> u32 {
        let i = self.rng.below(self.open.len() as u64) as usize;
        let (no, session) = &mut self.open[i];
        let no = *no;
        session.next(&mut self.clock, out);
        self.raw_bytes += out.len() as u64;
        if session.is_done() {
            self.open.swap_remove(i);
            self.spawn();
        }
        no
    }

    /// Writes `session.ended` for one still-open session, so a finished run leaves no session
    /// running (running sessions would raise stall alerts later, in the middle of other figures).
    pub(crate) fn close_one(&mut self, out: &mut String) -> Option<u32> {
        loop {
            let (no, mut session) = self.open.pop()?;
            if session.next_seq == 1 {
                continue; // never started: nothing to close
            }
            session.end_now();
            session.next(&mut self.clock, out);
            if !session.is_done() {
                self.open.push((no, session));
            }
            self.raw_bytes += out.len() as u64;
            return Some(no);
        }
    }

    pub(crate) fn ack(&mut self, no: u32) {
        self.acked[no as usize] += 1;
    }

    /// `(session id, acknowledged events)` for every session that got at least one.
    pub(crate) fn ledger(&self, into: &mut Vec<(String, u64)>) {
        for (no, &n) in self.acked.iter().enumerate() {
            if n > 0 {
                into.push((format!("{}{no}", self.prefix), n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;
    use std::collections::HashMap;

    #[test]
    fn live_events_are_valid_sized_and_cover_every_type() {
        let mut src = Source::new("bench-test-s-".into(), 7, 8, (20, 200));
        let mut out = String::new();
        let mut types: HashMap<String, u64> = HashMap::new();
        let mut last_seq: HashMap<String, i64> = HashMap::new();
        for _ in 0..20_000 {
            src.next(&mut out);
            let ev = Event::parse(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            assert!((300..=600).contains(&out.len()), "{} bytes: {out}", out.len());
            assert_eq!(ev.raw(), out, "events are sent minified, as stored");
            let prev = last_seq.insert(ev.session_id.clone(), ev.sequence);
            assert_eq!(ev.sequence, prev.unwrap_or(0) + 1, "sequences count up per session");
            *types.entry(ev.kind.clone()).or_default() += 1;
        }
        for t in [
            "session.started",
            "session.heartbeat",
            "session.ended",
            "cognition.thought",
            "cognition.decision",
            "cognition.goal",
            "cognition.uncertainty",
            "operation.tool_start",
            "operation.tool_end",
            "operation.agent_spawn",
            "operation.memory",
            "operation.external_call",
            "x-bench.checkpoint",
        ] {
            assert!(types.get(t).is_some_and(|&n| n > 0), "no {t}: {types:?}");
        }
        assert_eq!(
            types["operation.tool_start"],
            types["operation.tool_end"] + {
                // calls still open in the sessions that have not ended
                src.open.iter().filter(|(_, s)| s.open_tool.is_some()).count() as u64
            }
        );
        assert!(src.raw_bytes > 20_000 * 300);
    }

    #[test]
    fn sessions_have_exactly_their_length_and_replay() {
        for len in [2, 3, 10, 1000] {
            let time = Time::Fixed { start_ms: 1_767_225_600_000, step_ms: 100 };
            let mut a = SessionGen::new("benchstore-t-1".into(), 3, len, time, 42);
            let mut b = a.clone();
            let (mut clock, mut out, mut again) = (Clock::default(), String::new(), String::new());
            let mut n = 0;
            while !a.is_done() {
                a.next(&mut clock, &mut out);
                b.next(&mut clock, &mut again);
                assert_eq!(out, again, "the same seed writes the same event");
                let ev = Event::parse(&out).unwrap();
                assert!((300..=600).contains(&out.len()));
                n += 1;
                if n == 1 {
                    assert_eq!(ev.kind, "session.started");
                }
                if n == len {
                    assert_eq!(ev.kind, "session.ended");
                }
            }
            assert_eq!(n, len);
        }
    }

    #[test]
    fn closing_ends_every_started_session() {
        let mut src = Source::new("bench-test-c-".into(), 9, 16, (50, 60));
        let mut out = String::new();
        let (mut started, mut ended, mut sent) = (0, 0, 0u64);
        let count = |out: &str, started: &mut i32, ended: &mut i32| match Event::parse(out).unwrap().kind.as_str() {
            "session.started" => *started += 1,
            "session.ended" => *ended += 1,
            _ => {}
        };
        for _ in 0..2001 {
            let no = src.next(&mut out);
            count(&out, &mut started, &mut ended);
            src.ack(no);
            sent += 1;
        }
        while let Some(no) = src.close_one(&mut out) {
            count(&out, &mut started, &mut ended);
            src.ack(no);
            sent += 1;
        }
        assert!(started > 16);
        assert_eq!(started, ended);
        let mut ledger = Vec::new();
        src.ledger(&mut ledger);
        assert_eq!(ledger.len(), started as usize);
        assert_eq!(ledger.iter().map(|(_, n)| n).sum::<u64>(), sent);
        assert!(ledger.iter().all(|(id, _)| id.starts_with("bench-test-c-")));
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        let mut c = Clock::default();
        assert_eq!(c.at(1_000), "1970-01-01T00:00:01.000Z");
        assert!(crate::model::parse_timestamp(c.now()).is_some());
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
        assert!((0..1000).all(|_| (5..=9).contains(&r.range(5, 9))));
    }
}
