//! The OTLP logs workload: protobuf export requests of 512 log records (the default
//! `max_export_batch_size` of the SDK's batch log record processor) through `POST /v1/logs`, on
//! [`BATCH_CONCURRENCY`] connections, as the traces workload sends spans.
//!
//! Each connection feeds a fleet of Claude Code sessions, as a collector in front of many
//! developers' machines would forward them: a request holds 16 records from each of 28 sessions
//! (each session under its own resource, `service.name` `claude-code`, scope
//! `com.anthropic.claude_code.events`), whose turns are a prompt, model requests, tool decisions
//! and results, and the assistant's response, with the attributes Claude Code sets (`session.id`,
//! `event.name`, `event.sequence`, `prompt.id`, numbers as strings), plus 64 records of an
//! application that is not a known agent (`support-bot`, records with trace ids, each becoming an
//! `otel.log` in its trace's session). Sessions last 40 to 240 records, so most span several
//! requests, as a real session spans many exports.
//!
//! **Derived events are computed from the mapping** (`src/otlp/agents.rs`, `src/otlp/logs.rs`),
//! record by record: see [`Kind::derived`], plus the `session.started` of a Claude Code session,
//! stored once (every request repeats it and the store keeps the first; a request that failed
//! did not store it, so the next one counts it). The unit tests check the count against
//! `map_logs` itself, and at the end of the run `verify` compares it with every session's stored
//! `event_count`, so a count that drifted from the mapping shows as missing or extra events.
//!
//! The generated sessions raise no alerts (tool inputs vary, costs stay near their median,
//! failures never come two in a row), and their events never share a session's sequence (each
//! step is at least a millisecond after the previous one), so what is measured is ingest, not
//! detectors or the store's moving of colliding events. The Claude Code sessions are interactive,
//! so left running they raise no stall alerts later; the application's records belong to two
//! long traces per connection (a long job whose spans go elsewhere), so few sessions are left to
//! stall.

use super::gen::{rfc3339_ms, Rng};
use super::ingest::{connect_all, post_to, take_budget, IngestFigures, Posted, BATCH_CONCURRENCY};
use super::stats::{micros, Summary};
use super::Ctx;
use crate::client::Target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const RECORDS_PER_REQUEST: usize = 512;
/// Claude Code sessions in every request, and records of each.
const AGENT_SESSIONS: usize = 28;
const AGENT_RECORDS: usize = 16;
/// The application's traces in every request, and records of each.
const GENERIC_TRACES: usize = 2;
const GENERIC_RECORDS: usize = 32;
const _: () = assert!(AGENT_SESSIONS * AGENT_RECORDS + GENERIC_TRACES * GENERIC_RECORDS == RECORDS_PER_REQUEST);
/// A Claude Code session's length, in records.
const SESSION_RECORDS: (u64, u64) = (40, 240);
const CLAUDE_CODE_VERSION: &str = "2.1.328";

const MS: u64 = 1_000_000;

/// What a record is, and so what the collector derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    UserPrompt,
    ApiRequest,
    ToolDecision,
    ToolResult,
    AssistantResponse,
    /// The application's record, not a known agent's.
    Generic,
}

impl Kind {
    /// The events one record of this kind becomes (`agents::steps`, else `logs::record_event`):
    /// a prompt is a thought, a model request an external call, a decision a
    /// `custom.tool_decision`, a tool result a tool call's start and end; the assistant's response
    /// is no step Claude Code's mapping reads, and stays one `otel.log`, as a generic record does.
    fn derived(self) -> u64 {
        match self {
            Kind::ToolResult => 2,
            Kind::UserPrompt | Kind::ApiRequest | Kind::ToolDecision | Kind::AssistantResponse | Kind::Generic => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::UserPrompt => "user_prompt",
            Kind::ApiRequest => "api_request",
            Kind::ToolDecision => "tool_decision",
            Kind::ToolResult => "tool_result",
            Kind::AssistantResponse => "assistant_response",
            Kind::Generic => "generic",
        }
    }
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

/// A UUID's text from 128 bits.
fn uuid(hi: u64, lo: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

const PROMPTS: [&str; 8] = [
    "Fix the failing test in the billing module and explain what was wrong",
    "Add pagination to the sessions endpoint and update the API documentation",
    "Why does the importer skip rows with an empty customer id? Find the cause",
    "Refactor the retry logic in the HTTP client so that it respects Retry-After",
    "Write unit tests for the date parsing helpers, including leap years",
    "The build is slow: find out which crate takes the longest and suggest a fix",
    "Rename the config option max_conn to max_connections everywhere, keeping the old name working",
    "Review the last commit for security problems and list what you would change",
];

const TOOLS: [&str; 6] = ["Bash", "Read", "Edit", "Grep", "Glob", "Write"];

/// One Claude Code session: its identity, its clock, and the rest of its current turn.
struct AgentSession {
    id: String,
    /// Attributes every record of the session carries, before the event's own.
    common: Vec<KeyValue>,
    resource: Resource,
    rng: Rng,
    /// The time of the latest record made.
    at_ns: u64,
    sequence: i64,
    prompt_id: String,
    /// Records still to make, current turn included.
    left: u64,
    turn: VecDeque<(Kind, LogRecord)>,
    /// Tool calls made, so that no two inputs are the same (no loop alert).
    calls: u64,
    last_failed: bool,
    /// Its `session.started` is stored: acknowledged in an earlier request.
    started: bool,
}

impl AgentSession {
    fn new(id_hi: u64, id_lo: u64, seed: u64, at_ns: u64) -> AgentSession {
        let mut rng = Rng::new(seed);
        let id = uuid(id_hi, id_lo);
        let user = rng.next_u64();
        let account = uuid(rng.next_u64(), rng.next_u64());
        let common = vec![
            kv("user.id", s(format!("{user:016x}{:016x}{:016x}{:016x}", user ^ 1, user ^ 2, user ^ 3))),
            kv("session.id", s(id.clone())),
            kv("organization.id", s("6f1d3a2e-84c1-4b7e-9a55-0c2b7d9e4f13")),
            kv("user.email", s(format!("dev{}@example.com", user % 5000))),
            kv("user.account_uuid", s(account)),
            kv("terminal.type", s(if user.is_multiple_of(3) { "vscode" } else { "xterm-256color" })),
        ];
        let resource = Resource {
            attributes: vec![
                kv("service.name", s("claude-code")),
                kv("service.version", s(CLAUDE_CODE_VERSION)),
                kv("os.type", s("linux")),
                kv("os.version", s("6.8.0-49-generic")),
                kv("host.arch", s("amd64")),
            ],
            ..Default::default()
        };
        let left = rng.range(SESSION_RECORDS.0, SESSION_RECORDS.1);
        AgentSession {
            id,
            common,
            resource,
            rng,
            at_ns,
            sequence: 0,
            prompt_id: String::new(),
            left,
            turn: VecDeque::new(),
            calls: 0,
            last_failed: false,
            started: false,
        }
    }

    /// The session's next record, or `None` once it has made all of them.
    fn next(&mut self) -> Option<(Kind, LogRecord)> {
        if self.left == 0 {
            return None;
        }
        if self.turn.is_empty() {
            self.plan_turn();
        }
        self.left -= 1;
        self.turn.pop_front()
    }

    /// A step `lo..=hi` milliseconds later, plus a few microseconds so that steps rarely land
    /// on round numbers.
    fn later(&mut self, lo: u64, hi: u64) -> u64 {
        self.at_ns += self.rng.range(lo, hi) * MS + self.rng.below(1000) * 1000;
        self.at_ns
    }

    fn record(&mut self, kind: Kind, at_ns: u64, own: Vec<KeyValue>) -> (Kind, LogRecord) {
        self.sequence += 1;
        let name = kind.name();
        let mut attributes = Vec::with_capacity(self.common.len() + 4 + own.len());
        attributes.extend_from_slice(&self.common);
        attributes.push(kv("event.name", s(name)));
        attributes.push(kv("event.timestamp", s(rfc3339_ms((at_ns / MS) as i64))));
        attributes.push(kv("event.sequence", Value::IntValue(self.sequence)));
        attributes.push(kv("prompt.id", s(self.prompt_id.clone())));
        attributes.extend(own);
        let record = LogRecord {
            time_unix_nano: at_ns,
            observed_time_unix_nano: at_ns + 150_000,
            body: Some(AnyValue { value: Some(s(format!("claude_code.{name}"))) }),
            attributes,
            ..Default::default()
        };
        (kind, record)
    }

    /// One turn: the user's prompt, one to four model requests each followed by the tools it
    /// asked for (a decision, then the result, unless refused), the final model request and the
    /// response; the user thinks for a while before it.
    fn plan_turn(&mut self) {
        self.prompt_id = uuid(self.rng.next_u64(), self.rng.next_u64());
        let at = self.later(5_000, 90_000);
        let prompt = PROMPTS[self.rng.below(PROMPTS.len() as u64) as usize];
        let text = format!("{prompt} (step {})", self.sequence + 1);
        let own = vec![kv("prompt_length", s(text.len().to_string())), kv("prompt", s(text))];
        let r = self.record(Kind::UserPrompt, at, own);
        self.turn.push_back(r);
        let rounds = self.rng.range(1, 4);
        for round in 0..=rounds {
            self.api_request();
            if round == rounds {
                break;
            }
            for _ in 0..self.rng.range(1, 3) {
                self.tool_call();
            }
        }
        let at = self.later(2, 20);
        let length = self.rng.range(200, 3000);
        let own = vec![kv("model", s("claude-sonnet-4-5")), kv("response_length", s(length.to_string()))];
        let r = self.record(Kind::AssistantResponse, at, own);
        self.turn.push_back(r);
    }

    /// A model request, logged when complete; the mapping places it at its start, which is
    /// after the previous record.
    fn api_request(&mut self) {
        let start = self.later(20, 80);
        let duration = self.rng.range(1_500, 12_000);
        self.at_ns = start + duration * MS;
        let input = self.rng.range(40, 400);
        let output = self.rng.range(150, 900);
        let cache_read = self.rng.range(18_000, 26_000);
        let cache_creation = self.rng.range(300, 1_200);
        // List prices of claude-sonnet-4-5 ($3, $15, $0.30, $3.75 per million): costs stay near
        // their median, as they do in a session that does similar steps.
        let cost =
            (input as f64 * 3.0 + output as f64 * 15.0 + cache_read as f64 * 0.3 + cache_creation as f64 * 3.75) / 1e6;
        let own = vec![
            kv("model", s("claude-sonnet-4-5")),
            kv("input_tokens", s(input.to_string())),
            kv("output_tokens", s(output.to_string())),
            kv("cache_read_tokens", s(cache_read.to_string())),
            kv("cache_creation_tokens", s(cache_creation.to_string())),
            kv("cost_usd", s(format!("{cost:.6}"))),
            kv("duration_ms", s(duration.to_string())),
            kv("request_id", s(format!("req_011C{:016x}", self.rng.next_u64()))),
        ];
        let r = self.record(Kind::ApiRequest, self.at_ns, own);
        self.turn.push_back(r);
    }

    /// A permission decision and, unless refused (2 %), the tool's result `duration_ms` later.
    fn tool_call(&mut self) {
        self.calls += 1;
        let n = self.calls;
        let tool = TOOLS[self.rng.below(TOOLS.len() as u64) as usize];
        let use_id = format!("toolu_01{:016x}", self.rng.next_u64());
        let refused = self.rng.percent(2);
        let decision = if refused { "reject" } else { "accept" };
        let source = if refused { "user_reject" } else { "config" };
        let at = self.later(1, 4);
        let own = vec![
            kv("decision", s(decision)),
            kv("source", s(source)),
            kv("tool_name", s(tool)),
            kv("tool_use_id", s(use_id.clone())),
            kv("permission_mode", s("default")),
        ];
        let r = self.record(Kind::ToolDecision, at, own);
        self.turn.push_back(r);
        if refused {
            return;
        }
        let input = match tool {
            "Bash" => format!(r#"{{"command":"cargo test -p billing -- parse_{n}","description":"Run the tests"}}"#),
            "Read" => format!(r#"{{"file_path":"/home/dev/app/src/billing/module_{n}.rs"}}"#),
            "Edit" => format!(
                r#"{{"file_path":"/home/dev/app/src/billing/module_{n}.rs","old_string":"let total = 0;","new_string":"let mut total = 0;"}}"#
            ),
            "Grep" => format!(r#"{{"pattern":"fn parse_{n}","path":"/home/dev/app/src","output_mode":"content"}}"#),
            "Glob" => format!(r#"{{"pattern":"src/**/*_{n}.rs"}}"#),
            _ => format!(r#"{{"file_path":"/home/dev/app/tests/case_{n}.rs","content":"// generated test {n}"}}"#),
        };
        let duration = self.rng.range(15, 4_000);
        let failed = !self.last_failed && self.rng.percent(4);
        self.last_failed = failed;
        self.at_ns += self.rng.range(1, 3) * MS + duration * MS;
        let mut own = vec![
            kv("tool_name", s(tool)),
            kv("tool_use_id", s(use_id)),
            kv("success", s(if failed { "false" } else { "true" })),
            kv("duration_ms", s(duration.to_string())),
            kv("tool_input_size_bytes", s(input.len().to_string())),
            kv("tool_input", s(input)),
            kv("decision_source", s(source)),
            kv("decision_type", s(decision)),
        ];
        if failed {
            own.push(kv("error_type", s("ShellError")));
            own.push(kv("error", s("Command failed with exit code 1")));
        } else {
            own.push(kv("tool_result_size_bytes", s(self.rng.range(80, 9_000).to_string())));
        }
        let r = self.record(Kind::ToolResult, self.at_ns, own);
        self.turn.push_back(r);
    }
}

/// One trace of the application: records with its trace id and a span id each.
struct GenericTrace {
    trace_id: [u8; 16],
    session: String,
    rng: Rng,
    at_ns: u64,
    no: u64,
}

const GENERIC_EVENTS: [(&str, &str); 4] = [
    ("retrieval.completed", "retrieved documents for the ticket"),
    ("llm.response", "the model answered the customer"),
    ("ticket.updated", "ticket status changed"),
    ("cache.miss", "no cached answer for the question"),
];

impl GenericTrace {
    fn new(trace_id: [u8; 16], seed: u64, at_ns: u64) -> GenericTrace {
        let session = format!("otel-{}", trace_id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        GenericTrace { trace_id, session, rng: Rng::new(seed), at_ns, no: 0 }
    }

    fn next(&mut self) -> LogRecord {
        self.no += 1;
        self.at_ns += self.rng.range(5, 500) * MS + self.rng.below(1000) * 1000;
        let (name, text) = GENERIC_EVENTS[self.rng.below(GENERIC_EVENTS.len() as u64) as usize];
        let warn = self.rng.percent(5);
        LogRecord {
            time_unix_nano: self.at_ns,
            observed_time_unix_nano: self.at_ns + 80_000,
            severity_number: if warn { 13 } else { 9 },
            severity_text: if warn { "WARN" } else { "INFO" }.into(),
            body: Some(AnyValue { value: Some(s(format!("{text} (#{})", self.no))) }),
            attributes: vec![
                kv("event.name", s(name)),
                kv("ticket.id", s(format!("T-{}", 40_000 + self.rng.below(20_000)))),
                kv("customer.tier", s(if self.no.is_multiple_of(4) { "enterprise" } else { "pro" })),
                kv("duration_ms", Value::IntValue(self.rng.range(2, 900) as i64)),
                kv("documents", Value::IntValue(self.rng.range(0, 12) as i64)),
            ],
            trace_id: self.trace_id.to_vec(),
            span_id: (self.rng.next_u64() | 1).to_be_bytes().to_vec(),
            ..Default::default()
        }
    }
}

/// Which session a part of a request is, and what acknowledging it stores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    /// The agent session's slot in the feed; `None` for the application's traces.
    slot: Option<usize>,
    session: String,
    /// Events the part's records derive.
    events: u64,
    /// The request carries the session's `session.started` and the store has none yet.
    starts: bool,
}

impl Part {
    fn stored(&self) -> u64 {
        self.events + u64::from(self.starts)
    }
}

/// One connection's sessions, and the requests they make.
pub(crate) struct Feed {
    run: u64,
    task: u64,
    rng: Rng,
    made: u64,
    agents: Vec<AgentSession>,
    generic: Vec<GenericTrace>,
    generic_resource: Resource,
}

impl Feed {
    pub(crate) fn new(run: u64, task: u64, now_ns: u64) -> Feed {
        let mut feed = Feed {
            run,
            task,
            rng: Rng::new(run ^ task.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            made: 0,
            agents: Vec::with_capacity(AGENT_SESSIONS),
            generic: Vec::with_capacity(GENERIC_TRACES),
            generic_resource: Resource {
                attributes: vec![
                    kv("service.name", s("support-bot")),
                    kv("service.version", s("1.14.2")),
                    kv("deployment.environment.name", s("production")),
                    kv("host.name", s(format!("support-bot-{task}"))),
                ],
                ..Default::default()
            },
        };
        for _ in 0..AGENT_SESSIONS {
            let session = feed.session(now_ns);
            feed.agents.push(session);
        }
        for slot in 0..GENERIC_TRACES as u64 {
            // The high bit keeps these apart from the traces workload's trace ids of the same run.
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&run.to_be_bytes());
            trace_id[8..].copy_from_slice(&((1 << 63) | (task << 32) | slot).to_be_bytes());
            let seed = feed.rng.next_u64();
            feed.generic.push(GenericTrace::new(trace_id, seed, now_ns));
        }
        feed
    }

    /// A new session, its id unique in the run (the run's bits, the connection, a counter).
    fn session(&mut self, now_ns: u64) -> AgentSession {
        self.made += 1;
        let seed = self.rng.next_u64();
        AgentSession::new(self.run, (self.task << 48) | self.made, seed, now_ns + self.rng.below(60_000) * MS)
    }

    /// The next request, and what each of its sessions stores once it is acknowledged. Sessions
    /// that ran out are replaced by new ones starting at `now_ns`.
    pub(crate) fn next(&mut self, now_ns: u64) -> (ExportLogsServiceRequest, Vec<Part>) {
        let scope = InstrumentationScope {
            name: "com.anthropic.claude_code.events".into(),
            version: CLAUDE_CODE_VERSION.into(),
            ..Default::default()
        };
        let mut resource_logs = Vec::with_capacity(AGENT_SESSIONS + 1);
        let mut parts = Vec::with_capacity(AGENT_SESSIONS + GENERIC_TRACES);
        for slot in 0..AGENT_SESSIONS {
            let mut wanted = AGENT_RECORDS;
            while wanted > 0 {
                let session = &mut self.agents[slot];
                let mut records = Vec::with_capacity(wanted);
                let mut events = 0;
                while records.len() < wanted {
                    let Some((kind, record)) = session.next() else { break };
                    events += kind.derived();
                    records.push(record);
                }
                if records.is_empty() {
                    self.agents[slot] = self.session(now_ns);
                    continue;
                }
                wanted -= records.len();
                parts.push(Part { slot: Some(slot), session: session.id.clone(), events, starts: !session.started });
                resource_logs.push(ResourceLogs {
                    resource: Some(session.resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
        }
        let mut records = Vec::with_capacity(GENERIC_TRACES * GENERIC_RECORDS);
        for trace in &mut self.generic {
            records.extend((0..GENERIC_RECORDS).map(|_| trace.next()));
            let events = GENERIC_RECORDS as u64 * Kind::Generic.derived();
            parts.push(Part { slot: None, session: trace.session.clone(), events, starts: false });
        }
        resource_logs.push(ResourceLogs {
            resource: Some(self.generic_resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope { name: "support_bot.pipeline".into(), ..Default::default() }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        });
        (ExportLogsServiceRequest { resource_logs }, parts)
    }

    /// Records an acknowledged request: its events go to `ledger`, and its sessions' starts are
    /// stored from now on. Returns the events it stored.
    pub(crate) fn ack(&mut self, parts: &[Part], ledger: &mut HashMap<String, u64>) -> u64 {
        let mut stored = 0;
        for part in parts {
            stored += part.stored();
            *ledger.entry(part.session.clone()).or_default() += part.stored();
            if let Some(session) = part.slot.map(|i| &mut self.agents[i]).filter(|a| a.id == part.session) {
                session.started = true;
            }
        }
        stored
    }
}

struct TaskOut {
    samples: Vec<u32>,
    records: u64,
    events: u64,
    errors: u64,
    overloaded: u64,
    first_error: Option<String>,
    bytes: u64,
    ledger: HashMap<String, u64>,
    end: Instant,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

async fn task(
    target: Arc<Target>,
    conn: crate::client::Conn,
    run: u64,
    no: u64,
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> TaskOut {
    let mut conn = Some(conn);
    let mut out = TaskOut {
        samples: Vec::new(),
        records: 0,
        events: 0,
        errors: 0,
        overloaded: 0,
        first_error: None,
        bytes: 0,
        ledger: HashMap::new(),
        end: Instant::now(),
    };
    let mut feed = Feed::new(run, no, now_ns());
    let mut reply = Vec::new();
    while Instant::now() < deadline {
        let (req, parts) = feed.next(now_ns());
        let n: u64 = parts.iter().map(Part::stored).sum();
        if !take_budget(&budget, n as i64) {
            break;
        }
        let body = req.encode_to_vec();
        out.bytes += body.len() as u64;
        match post_to(&target, &mut conn, "/v1/logs", "application/x-protobuf", &body, Some(&mut reply)).await {
            // A response with a partial success would hold bytes: the bench's records are all usable.
            Posted::Ok(d) if reply.is_empty() => {
                out.samples.push(micros(d));
                out.records += RECORDS_PER_REQUEST as u64;
                out.events += feed.ack(&parts, &mut out.ledger);
            }
            Posted::Ok(_) => {
                out.errors += n;
                out.first_error
                    .get_or_insert_with(|| format!("partial success: {:?}", String::from_utf8_lossy(&reply)));
            }
            Posted::Status(st) => {
                out.errors += n;
                if matches!(st, 429 | 503) {
                    out.overloaded += n;
                }
                out.first_error.get_or_insert_with(|| format!("HTTP {st}"));
            }
            Posted::Failed(e) => {
                out.errors += n;
                out.first_error.get_or_insert(e);
                if conn.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out.end = Instant::now();
    out
}

/// Runs the OTLP logs measurement; `events_per_s` counts derived events acknowledged,
/// `records_per_s` log records.
pub(crate) async fn measure(ctx: &mut Ctx, duration: Duration) -> Result<(f64, IngestFigures), String> {
    let conns = connect_all(&ctx.target, BATCH_CONCURRENCY).await?;
    let budget = Arc::new(AtomicI64::new(i64::try_from(ctx.plan.max_events).unwrap_or(i64::MAX)));
    let run = ctx.seed ^ u64::from_str_radix(&ctx.run_id, 36).unwrap_or(0);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(task(Arc::clone(&ctx.target), c, run, i as u64, deadline, Arc::clone(&budget))))
        .collect();
    let (mut samples, mut records, mut events, mut errors, mut overloaded, mut bytes) = (Vec::new(), 0, 0, 0, 0, 0);
    let mut first_error = None;
    let mut end = start;
    for t in tasks {
        let out = t.await.map_err(|e| format!("an OTLP logs task failed: {e}"))?;
        samples.extend_from_slice(&out.samples);
        records += out.records;
        events += out.events;
        errors += out.errors;
        overloaded += out.overloaded;
        bytes += out.bytes;
        first_error = first_error.or(out.first_error);
        end = end.max(out.end);
        ctx.ledger.extend(out.ledger);
    }
    let secs = end.duration_since(start).as_secs_f64().max(1e-6);
    let figures = IngestFigures {
        events_per_s: events as f64 / secs,
        latency: Summary::of(&mut samples),
        errors,
        overloaded,
        first_error,
        raw_bytes: bytes,
        acked_total: events,
    };
    Ok((records as f64 / secs, figures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{DetectConfig, SessionDetector};
    use std::collections::HashSet;

    const NOW: u64 = 1_764_756_000_000_000_000;

    /// What the collector derives from a request, decoded from its bytes as the server does.
    fn mapped(req: &ExportLogsServiceRequest) -> crate::otlp::Mapped {
        let body = req.encode_to_vec();
        let batch = crate::otlp::records(&body, crate::otlp::Encoding::Protobuf, &mut |_| true).unwrap();
        crate::otlp::map_logs(batch, &|_, _, _| None, &|_| false)
    }

    fn kind_of(r: &LogRecord) -> String {
        r.attributes
            .iter()
            .find(|a| a.key == "event.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                _ => String::new(),
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_request_is_512_records_whose_derived_events_are_the_ones_counted() {
        let mut feed = Feed::new(7, 1, NOW);
        let mut ledger = HashMap::new();
        let mut placed: HashSet<(String, i64)> = HashSet::new();
        for no in 0..12 {
            let (req, parts) = feed.next(NOW + no * 1_000_000_000);
            let records: usize =
                req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
            assert_eq!(records, RECORDS_PER_REQUEST);
            let m = mapped(&req);
            assert!(m.rejected.is_empty(), "{:?}", m.rejected.reasons().collect::<Vec<_>>());
            // Every request repeats a Claude Code session's start; the store keeps the first.
            let mut derived: HashMap<&str, u64> = HashMap::new();
            let mut starts = 0;
            for ev in &m.events {
                if ev.kind == "session.started" {
                    starts += 1;
                } else {
                    *derived.entry(ev.session_id.as_str()).or_default() += 1;
                    assert!(
                        placed.insert((ev.session_id.clone(), ev.sequence)),
                        "two events at one sequence of {}: the store would move one",
                        ev.session_id
                    );
                }
            }
            let agent_sessions: HashSet<&str> =
                parts.iter().filter(|p| p.slot.is_some()).map(|p| p.session.as_str()).collect();
            assert_eq!(starts, agent_sessions.len(), "one start per Claude Code session in the request");
            let counted: HashMap<&str, u64> = parts.iter().map(|p| (p.session.as_str(), p.events)).collect();
            assert_eq!(derived, counted, "request {no}");
            // Only a session's first acknowledged request stores its start.
            let new: usize = parts.iter().filter(|p| p.starts).count();
            if no == 0 {
                assert_eq!(new, AGENT_SESSIONS);
            } else {
                assert!(new < AGENT_SESSIONS / 2, "{new} new sessions in request {no}");
            }
            let events: u64 = parts.iter().map(Part::stored).sum();
            assert_eq!(feed.ack(&parts, &mut ledger), events);
        }
        assert!(ledger.len() > AGENT_SESSIONS + GENERIC_TRACES, "sessions end and new ones start: {}", ledger.len());
        // A request that fails stores nothing: the next one of its sessions still counts the start.
        let (_, failed) = feed.next(NOW + 20_000_000_000);
        let fresh: Vec<&Part> = failed.iter().filter(|p| p.starts).collect();
        let (_, retry) = feed.next(NOW + 21_000_000_000);
        for p in fresh {
            assert!(retry.iter().any(|r| r.session == p.session && r.starts), "{}", p.session);
        }
    }

    #[test]
    fn sessions_read_like_claude_code_and_raise_no_alerts() {
        let mut feed = Feed::new(3, 0, NOW);
        let mut kinds: HashMap<String, u64> = HashMap::new();
        let mut sessions: HashMap<String, (SessionDetector, i64)> = HashMap::new();
        let cfg = DetectConfig::default();
        let mut ledger = HashMap::new();
        for no in 0..20 {
            let (req, parts) = feed.next(NOW + no * 1_000_000_000);
            for rl in &req.resource_logs {
                for r in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                    *kinds.entry(kind_of(r)).or_default() += 1;
                }
            }
            // In arrival order, as the store's writer feeds its detectors; a repeated start is
            // a duplicate the store drops.
            for ev in &mapped(&req).events {
                let (detector, last) = sessions.entry(ev.session_id.clone()).or_default();
                if ev.kind == "session.started" {
                    if *last > 0 {
                        continue;
                    }
                } else {
                    assert!(ev.sequence > *last, "{} goes back in time", ev.session_id);
                    *last = ev.sequence;
                }
                let alerts = detector.observe(ev, &cfg);
                let messages: Vec<&str> = alerts.iter().map(|a| a.message.as_str()).collect();
                assert!(messages.is_empty(), "{}: {messages:?}", ev.session_id);
            }
            feed.ack(&parts, &mut ledger);
        }
        for kind in ["user_prompt", "api_request", "tool_decision", "tool_result", "assistant_response"] {
            assert!(kinds.get(kind).copied().unwrap_or(0) > 100, "{kind}: {kinds:?}");
        }
        let tools = kinds["tool_result"] as f64 / kinds.values().sum::<u64>() as f64;
        assert!((0.2..0.5).contains(&tools), "tool results are {tools:.2} of the records");
    }

    #[test]
    fn ids_are_unique_per_run_and_connection_and_look_like_claude_codes() {
        let a = Feed::new(1, 0, NOW);
        let b = Feed::new(1, 1, NOW);
        let c = Feed::new(2, 0, NOW);
        let ids: HashSet<&str> = [&a, &b, &c].iter().flat_map(|f| f.agents.iter().map(|s| s.id.as_str())).collect();
        assert_eq!(ids.len(), 3 * AGENT_SESSIONS);
        let traces: HashSet<&str> =
            [&a, &b, &c].iter().flat_map(|f| f.generic.iter().map(|t| t.session.as_str())).collect();
        assert_eq!(traces.len(), 3 * GENERIC_TRACES);
        let id = &a.agents[0].id;
        assert_eq!(id.len(), 36, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "a valid session id, kept as it is: {id}");
    }
}
