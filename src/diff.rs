//! `aop diff A B`: two runs compared, from exported files or from a collector, printed for people
//! (aligned side by side, like `diff -u`) or as the API's JSON document.
//!
//! Each side is a file (an export, or `-` for stdin) or a session id on the collector at `--url`.
//! Two ids: the collector compares them (`GET /sessions/:a/compare/:b`). Otherwise each side is
//! read into a [`compare::Side`] here, the way the collector would: the events of one session, its
//! row derived with [`SessionState`] and the built-in prices, its alerts from [`detect::replay`]
//! with the default thresholds for a file, from the collector's `/alerts` for an id. Then
//! [`compare::compare`]. [`render`] is the human form, a pure function.

use crate::client::{encode_component, Conn, Target};
use crate::compare::{self, Comparison, Delta, Kind, Side, StepPair};
use crate::detect::{self, DetectConfig};
use crate::jsonl::{self, Line};
use crate::model::{Event, SessionRow, SessionState};
use anyhow::{anyhow, bail, Context};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Same steps shown around a difference, as `diff -u` shows context.
pub const CONTEXT: usize = 2;
/// Runs of `same` steps shorter than this are shown rather than collapsed into one line.
const MIN_COLLAPSE: usize = 2;
/// How long the collector may take to accept the connection, and to answer a small request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// An export of the largest session compared ([`compare::MAX_EVENTS`]) is a few hundred MB.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(600);
/// Alerts asked for per page of `GET /alerts` (its maximum).
const ALERTS_PAGE: usize = 1000;
/// Of an error answer's body, what is kept to quote.
const ERROR_BYTES: usize = 64 * 1024;

/// What `aop diff` was asked, resolved from its arguments (`cli::DiffArgs::resolve`).
#[derive(Debug, Clone)]
pub struct Plan {
    pub a: String,
    pub b: String,
    pub url: String,
    pub token: Option<String>,
    /// Print the comparison as JSON (`compare::Comparison`, as the API serialises it).
    pub json: bool,
    /// ANSI colours in the human form.
    pub colour: bool,
    /// Columns the human form fits in.
    pub width: usize,
}

/// One side as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Stdin,
    File(PathBuf),
    Id(String),
}

impl Operand {
    /// `-` is stdin; a path that exists is a file, and so is one with a `/` or ending in `.jsonl`
    /// (session ids cannot hold a `/`, and a missing export should say so rather than be looked
    /// up on a collector); anything else is a session id.
    pub fn of(text: &str) -> Operand {
        let path = PathBuf::from(text);
        if text == "-" {
            Operand::Stdin
        } else if path.exists() || text.contains('/') || text.ends_with(".jsonl") {
            Operand::File(path)
        } else {
            Operand::Id(text.to_owned())
        }
    }

    fn name(&self) -> String {
        match self {
            Operand::Stdin => "stdin".to_owned(),
            Operand::File(p) => p.display().to_string(),
            Operand::Id(id) => format!("session {id}"),
        }
    }
}

/// Compares the two runs of `plan` and prints the result. `Ok(true)` when they differ (a first
/// divergence), `Ok(false)` when they do the same thing; `Err` says what could not be read.
pub fn run(plan: &Plan) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    let comparison = runtime.block_on(load(plan))?;
    let out = if plan.json {
        let mut text =
            crate::clean::json(serde_json::to_string(&comparison).context("cannot serialise the comparison")?);
        text.push('\n');
        text
    } else {
        render(&comparison, plan.width, plan.colour)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`aop diff … | head`) is not an error worth a message.
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("cannot write the output"),
        _ => {}
    }
    Ok(comparison.first_divergence.is_some())
}

/// The comparison of `plan.a` with `plan.b`, wherever they are.
async fn load(plan: &Plan) -> anyhow::Result<Comparison> {
    let (a, b) = (Operand::of(&plan.a), Operand::of(&plan.b));
    if a == Operand::Stdin && b == Operand::Stdin {
        bail!("only one of the two runs can be read from stdin (-)");
    }
    let mut remote = None;
    if matches!(a, Operand::Id(_)) || matches!(b, Operand::Id(_)) {
        remote = Some(Remote::new(plan)?);
    }
    if let (Operand::Id(ida), Operand::Id(idb), Some(remote)) = (&a, &b, remote.as_mut()) {
        if let Some(c) = remote.compare(ida, idb).await? {
            return Ok(c);
        }
        warn(&format!(
            "the collector at {} does not compare runs (an older aop?); comparing its exports here",
            remote.target.url
        ));
    }
    let side_a = side(&a, remote.as_mut()).await?;
    let side_b = side(&b, remote.as_mut()).await?;
    Ok(compare::compare(side_a, side_b))
}

async fn side(op: &Operand, remote: Option<&mut Remote>) -> anyhow::Result<Side> {
    match (op, remote) {
        (Operand::Id(id), Some(remote)) => remote.side(id).await,
        (Operand::Id(_), None) => Err(anyhow!("no collector to read {} from", op.name())),
        (Operand::Stdin, _) => file_side(&op.name(), std::io::stdin().lock()),
        (Operand::File(path), _) => {
            let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            file_side(&op.name(), std::io::BufReader::new(f))
        }
    }
}

/// One session's events folded into a [`Side`] and its derived row, line by line: the session is
/// the first valid line's; other sessions' lines and repeated sequences are skipped.
struct Fold {
    /// The session's id and state, from its first valid line on.
    state: Option<(String, SessionState)>,
    side: Side,
    seen: HashSet<i64>,
    other_sessions: usize,
    too_many: bool,
}

impl Fold {
    fn new() -> Fold {
        Fold {
            state: None,
            side: Side::new(SessionState::new("").view(0, 0)),
            seen: HashSet::new(),
            other_sessions: 0,
            too_many: false,
        }
    }

    fn session(&self) -> Option<&str> {
        self.state.as_ref().map(|(id, _)| id.as_str())
    }

    /// Folds one line; an invalid one is left to whoever reports it.
    fn line(&mut self, line: &str, cfg: &DetectConfig) {
        if line.trim().is_empty() {
            return;
        }
        let Ok(ev) = Event::parse(line) else { return };
        let (id, state) = self.state.get_or_insert_with(|| (ev.session_id.clone(), SessionState::new(&ev.session_id)));
        if ev.session_id != *id {
            self.other_sessions += 1;
            return;
        }
        if !self.seen.insert(ev.sequence) {
            return;
        }
        if self.seen.len() > compare::MAX_EVENTS {
            self.too_many = true;
            return;
        }
        state.apply(&ev, &cfg.prices);
        self.side.push(&ev);
    }

    /// The side, with its row counting `alerts`; refused past [`compare::MAX_EVENTS`].
    fn finish(self, what: &str, alerts: i64) -> anyhow::Result<Side> {
        let Some((id, state)) = self.state else {
            bail!("{what} holds no valid event");
        };
        if self.too_many {
            bail!("session {id} ({what}) has more than {} events: too many to compare", compare::MAX_EVENTS);
        }
        if self.other_sessions > 0 {
            warn(&format!("{what}: compared session {id}; {} lines of other sessions ignored", self.other_sessions));
        }
        let mut side = self.side;
        side.row = state.view(alerts, 0);
        Ok(side)
    }
}

/// A side from an export read offline, as `aop detect` reads one: the alerts are the detectors'
/// over the same lines, with the default thresholds.
fn file_side(what: &str, reader: impl BufRead) -> anyhow::Result<Side> {
    let cfg = DetectConfig::default();
    let mut fold = Fold::new();
    let mut lines = jsonl::Lines::new(reader);
    let report = detect::replay(
        lines.by_ref().inspect(|line| {
            if let Ok(line) = line {
                fold.line(line, &cfg);
            }
        }),
        &cfg,
    );
    if let Some(e) = lines.error() {
        return Err(e).with_context(|| format!("cannot read {what}"));
    }
    for err in &report.errors {
        warn(&format!("{what}: line {}: {}", err.line, err.reason));
    }
    let mut kinds = Vec::new();
    for (id, alert) in &report.alerts {
        if Some(id.as_str()) == fold.session() {
            kinds.push(alert.kind.as_str());
        }
    }
    let mut side = fold.finish(what, kinds.len() as i64)?;
    kinds.into_iter().for_each(|k| side.alert(k));
    Ok(side)
}

/// A note on stderr; it may quote agents' text.
fn warn(message: &str) {
    eprintln!("aop diff: {}", crate::clean::text(message));
}

/// The collector at `--url`, over one keep-alive connection opened when first needed.
struct Remote {
    target: Arc<Target>,
    conn: Option<Conn>,
}

/// The parts of an answer `aop diff` reads.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The `error` of an API error body, or the start of whatever else came.
    fn error(&self) -> String {
        crate::client::error_message(&self.body)
    }
}

impl Remote {
    fn new(plan: &Plan) -> anyhow::Result<Remote> {
        // Reading a remote collector is fine: only `aop bench` keeps to loopback.
        let target = Target::parse(&plan.url, plan.token.as_deref(), true).map_err(|e| anyhow!(e))?;
        Ok(Remote { target: Arc::new(target), conn: None })
    }

    async fn conn(&mut self) -> anyhow::Result<&mut Conn> {
        if self.conn.as_ref().is_none_or(|c| c.closed) {
            let url = &self.target.url;
            let conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(&self.target)).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => bail!("no collector answers at {url}: {e} (start one with `aop start`, or pass --url)"),
                Err(_) => bail!("no collector answers at {url}: no connection within {CONNECT_TIMEOUT:?}"),
            };
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    fn lost(&mut self, path: &str, e: impl std::fmt::Display) -> anyhow::Error {
        self.conn = None;
        anyhow!("the collector at {} did not answer GET {path}: {e}", self.target.url)
    }

    /// `GET path`, read whole.
    async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        let conn = self.conn().await?;
        let read = async {
            let r = conn.get(path).await?;
            Ok::<_, std::io::Error>(Answer { status: r.head.status, body: r.body.to_vec() })
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.lost(path, e)),
            Err(_) => return Err(self.lost(path, format!("no answer within {REQUEST_TIMEOUT:?}"))),
        };
        if answer.status == 401 {
            bail!(
                "the collector at {} refuses requests without its access token (HTTP 401): give --token or AOP_TOKEN",
                self.target.url
            );
        }
        Ok(answer)
    }

    /// `GET path`, which must answer 200.
    async fn get_ok(&mut self, path: &str) -> anyhow::Result<Vec<u8>> {
        let answer = self.get(path).await?;
        if answer.status != 200 {
            bail!(
                "the collector at {} answered GET {path} with {}: {}",
                self.target.url,
                answer.status,
                answer.error()
            );
        }
        Ok(answer.body)
    }

    /// `None` for a 404, naming what is missing.
    async fn exists(&mut self, id: &str) -> anyhow::Result<bool> {
        let path = format!("/sessions/{}?limit=1", encode_component(id));
        Ok(self.get(&path).await?.status != 404)
    }

    /// The collector's comparison, or `None` when it has no such endpoint (an older aop).
    async fn compare(&mut self, a: &str, b: &str) -> anyhow::Result<Option<Comparison>> {
        let path = format!("/sessions/{}/compare/{}", encode_component(a), encode_component(b));
        let answer = self.get(&path).await?;
        match answer.status {
            200 => serde_json::from_slice(&answer.body).map(Some).with_context(|| {
                format!("the collector at {} answered GET {path} with a document aop diff cannot read", self.target.url)
            }),
            404 => {
                for id in [a, b] {
                    if !self.exists(id).await? {
                        bail!("no session {id} on the collector at {}", self.target.url);
                    }
                }
                Ok(None)
            }
            status => {
                bail!("the collector at {} answered GET {path} with {status}: {}", self.target.url, answer.error())
            }
        }
    }

    /// A side read from the collector: its export folded as a file's, its stored row and alerts.
    async fn side(&mut self, id: &str) -> anyhow::Result<Side> {
        let what = format!("session {id}");
        let detail = self.get(&format!("/sessions/{}?limit=1", encode_component(id))).await?;
        if detail.status == 404 {
            bail!("no session {id} on the collector at {}", self.target.url);
        }
        if detail.status != 200 {
            bail!(
                "the collector at {} answered GET /sessions/{id} with {}: {}",
                self.target.url,
                detail.status,
                detail.error()
            );
        }
        #[derive(serde::Deserialize)]
        struct Detail {
            session: SessionRow,
        }
        let row = serde_json::from_slice::<Detail>(&detail.body)
            .with_context(|| format!("the collector at {} sent a session aop diff cannot read", self.target.url))?
            .session;

        let cfg = DetectConfig::default();
        let mut fold = Fold::new();
        let path = format!("/sessions/{}/export", encode_component(id));
        let mut invalid = 0usize;
        self.export(&path, &mut |line| match line {
            Ok(line) => {
                if !line.trim().is_empty() && Event::parse(&line).is_err() {
                    invalid += 1;
                }
                fold.line(&line, &cfg);
            }
            Err(_) => invalid += 1,
        })
        .await?;
        if invalid > 0 {
            warn(&format!("{what}: {invalid} exported lines are not valid events, skipped"));
        }

        let mut kinds = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/alerts?session_id={}&limit={ALERTS_PAGE}", encode_component(id));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode_component(c)));
            }
            let page: serde_json::Value = serde_json::from_slice(&self.get_ok(&path).await?)
                .with_context(|| format!("the collector at {} sent alerts aop diff cannot read", self.target.url))?;
            for alert in page["alerts"].as_array().into_iter().flatten() {
                kinds.push(alert["type"].as_str().unwrap_or("?").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_owned()),
                _ => break,
            }
        }

        let mut side = fold.finish(&what, row.alert_count)?;
        side.row = row;
        kinds.iter().for_each(|k| side.alert(k));
        Ok(side)
    }

    /// Streams an export to `on_line`, one line at a time, never holding it whole nor more than
    /// [`jsonl::MAX_LINE_BYTES`] of a line.
    async fn export(&mut self, path: &str, on_line: &mut impl FnMut(Line)) -> anyhow::Result<()> {
        let conn = self.conn().await?;
        let read = async {
            conn.send("GET", path, None, &[], &[]).await?;
            let head = conn.read_head().await?;
            let mut lines = jsonl::Splitter::default();
            let mut error = Vec::new();
            let ok = head.status == 200;
            conn.read_body_with(&head, &mut |bytes| {
                if ok {
                    lines.push(bytes, on_line);
                } else if error.len() < ERROR_BYTES {
                    // Only its start is shown.
                    error.extend_from_slice(bytes);
                }
            })
            .await?;
            if let Some(line) = lines.finish().filter(|_| ok) {
                on_line(line);
            }
            Ok::<_, std::io::Error>(Answer { status: head.status, body: error })
        };
        let answer = match tokio::time::timeout(EXPORT_TIMEOUT, read).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.lost(path, e)),
            Err(_) => return Err(self.lost(path, format!("no complete answer within {EXPORT_TIMEOUT:?}"))),
        };
        match answer.status {
            200 => Ok(()),
            401 => bail!(
                "the collector at {} refuses requests without its access token (HTTP 401): give --token or AOP_TOKEN",
                self.target.url
            ),
            status => {
                bail!("the collector at {} answered GET {path} with {status}: {}", self.target.url, answer.error())
            }
        }
    }
}

// ---------------------------------------------------------------------------------- rendering

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The marker of a row's kind: ` ` same, `~` changed, `-` only in A, `+` only in B.
pub fn marker(kind: Kind) -> char {
    match kind {
        Kind::Same => ' ',
        Kind::Changed => '~',
        Kind::OnlyA => '-',
        Kind::OnlyB => '+',
    }
}

fn colour_of(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Same => None,
        Kind::Changed => Some(YELLOW),
        Kind::OnlyA => Some(RED),
        Kind::OnlyB => Some(GREEN),
    }
}

/// The human form of a comparison, every line at most `width` columns (ANSI codes aside):
/// both sessions, the deltas, a verdict, then the aligned steps side by side, A left and B right,
/// with runs of `same` steps collapsed but for [`CONTEXT`] lines around each difference and the
/// first divergence marked. Colours only when `colour`.
pub fn render(c: &Comparison, width: usize, colour: bool) -> String {
    let width = width.max(40);
    let mut out = Out { text: String::new(), width, colour };

    for (label, row) in [("A", &c.a), ("B", &c.b)] {
        let mut line = format!("{label}  {}  ·  agent {}  ·  {}", row.id, row.agent_id, row.status);
        if let Some(e) = row.error_message.as_deref().filter(|e| !e.is_empty()) {
            let _ = write!(line, ": {e}");
        }
        if let Some(goal) = row.goal.as_deref().filter(|g| !g.is_empty()) {
            let _ = write!(line, "  ·  goal: {goal}");
        }
        out.line(&line, None);
    }
    out.blank();

    let d = &c.deltas;
    out.line(&format!("{:<24}{:>14}{:>14}{:>14}", "", "A", "B", "B - A"), None);
    let ms = |d: &Delta<i64>| [d.a.map(duration), d.b.map(duration), d.delta.map(|x| signed(x, duration))];
    let int = |d: &Delta<i64>| {
        [d.a.map(|x| x.to_string()), d.b.map(|x| x.to_string()), d.delta.map(|x| signed(x, |v| v.to_string()))]
    };
    let usd = |d: &Delta<f64>| [d.a.map(dollars), d.b.map(dollars), d.delta.map(signed_dollars)];
    let mut rows: Vec<(String, [Option<String>; 3])> = vec![
        ("duration".into(), ms(&d.duration_ms)),
        ("steps".into(), int(&d.steps)),
        ("tokens".into(), int(&d.tokens)),
        ("cost".into(), usd(&d.cost_usd)),
        ("tool calls".into(), int(&d.tool_calls)),
        ("failed tool calls".into(), int(&d.failed_tool_calls)),
    ];
    if d.alerts.is_empty() {
        rows.push(("alerts".into(), [Some("0".into()), Some("0".into()), Some("0".into())]));
    }
    for (kind, delta) in &d.alerts {
        rows.push((format!("alerts: {kind}"), int(delta)));
    }
    for (name, [a, b, delta]) in rows {
        let cell = |v: Option<String>| v.unwrap_or_else(|| "—".to_owned());
        out.line(&format!("{name:<24}{:>14}{:>14}{:>14}", cell(a), cell(b), cell(delta)), None);
    }
    out.blank();

    let count = |k: Kind| c.steps.iter().filter(|s| s.kind == k).count();
    out.line(
        &format!(
            "{} aligned steps: {} same, {} changed, {} only in A, {} only in B",
            c.steps.len(),
            count(Kind::Same),
            count(Kind::Changed),
            count(Kind::OnlyA),
            count(Kind::OnlyB)
        ),
        None,
    );
    match &c.first_divergence {
        None => out.line("the runs do the same thing", None),
        Some(f) => out.line(
            &format!("the runs part at step {} of {} ({})", f.index + 1, c.steps.len(), at(f.a_sequence, f.b_sequence)),
            None,
        ),
    }
    out.line("markers: ' ' same, '~' changed, '-' only in A, '+' only in B", None);
    out.blank();
    steps(&mut out, c);
    out.text
}

/// The aligned steps, collapsed like `diff -u`.
fn steps(out: &mut Out, c: &Comparison) {
    if c.steps.is_empty() {
        out.line("(neither run has a step)", None);
        return;
    }
    let digits =
        |f: fn(&StepPair) -> Option<i64>| c.steps.iter().filter_map(f).max().map_or(1, |m| m.to_string().len()).max(2);
    let (wa, wb) = (digits(|s| s.a_sequence), digits(|s| s.b_sequence));
    // marker, space, A's sequence, space, B's sequence, two spaces, A | B.
    let fixed = 2 + wa + 1 + wb + 2 + 3;
    let half = out.width.saturating_sub(fixed) / 2;
    let seq = |s: Option<i64>, w: usize| s.map_or_else(|| " ".repeat(w), |s| format!("{s:>w$}"));
    out.line(&format!("  {:>wa$} {:>wb$}  {} │ B", "#A", "#B", pad("A", half)), None);

    let shown = visible(&c.steps);
    let mut i = 0;
    while i < c.steps.len() {
        if !shown[i] {
            let end = (i..c.steps.len()).find(|&j| shown[j]).unwrap_or(c.steps.len());
            if end - i >= MIN_COLLAPSE {
                out.line(&format!("  … {} same steps …", end - i), None);
                i = end;
                continue;
            }
        }
        let s = &c.steps[i];
        if c.first_divergence.is_some_and(|f| f.index == i) {
            out.line(&format!("▶ first divergence ({})", at(s.a_sequence, s.b_sequence)), Some(BOLD));
        }
        let a = pad(&fit(s.a_summary.as_deref().unwrap_or(""), half), half);
        let b = fit(s.b_summary.as_deref().unwrap_or(""), half);
        let line = format!("{} {} {}  {a} │ {b}", marker(s.kind), seq(s.a_sequence, wa), seq(s.b_sequence, wb));
        out.line(line.trim_end(), colour_of(s.kind));
        i += 1;
    }
}

/// Which rows are shown: every difference and [`CONTEXT`] rows on each side of it.
fn visible(steps: &[StepPair]) -> Vec<bool> {
    let mut shown = vec![false; steps.len()];
    for (i, s) in steps.iter().enumerate() {
        if s.kind != Kind::Same {
            let from = i.saturating_sub(CONTEXT);
            let to = (i + CONTEXT + 1).min(steps.len());
            shown[from..to].iter_mut().for_each(|v| *v = true);
        }
    }
    shown
}

fn at(a: Option<i64>, b: Option<i64>) -> String {
    let side = |name: &str, s: Option<i64>| s.map_or_else(|| format!("not in {name}"), |s| format!("{name} #{s}"));
    format!("{}, {}", side("A", a), side("B", b))
}

/// Lines, each cut to the width and coloured whole.
struct Out {
    text: String,
    width: usize,
    colour: bool,
}

impl Out {
    fn line(&mut self, line: &str, colour: Option<&str>) {
        let line = fit(line, self.width);
        match colour.filter(|_| self.colour) {
            Some(code) => {
                let _ = writeln!(self.text, "{code}{line}{RESET}");
            }
            None => {
                self.text.push_str(&line);
                self.text.push('\n');
            }
        }
    }

    fn blank(&mut self) {
        self.text.push('\n');
    }
}

/// Columns a character takes in a terminal, roughly: 0 for combining marks and zero-width
/// characters, 2 for East Asian wide ones and emoji, 1 otherwise.
fn columns(c: char) -> usize {
    let u = c as u32;
    match u {
        0x0300..=0x036F | 0x200B..=0x200F | 0x20D0..=0x20FF | 0xFE00..=0xFE0F | 0xFE20..=0xFE2F => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// `s` on one line in at most `cols` columns, cut on a character boundary with `…` when it does
/// not fit. Control characters (a summary is the agent's text: it may hold escape sequences)
/// are escaped as [`crate::clean::text`] says, so nothing but the renderer's own colours reaches
/// the terminal.
pub fn fit(s: &str, cols: usize) -> String {
    let s = crate::clean::text(s);
    let total: usize = s.chars().map(columns).sum();
    if total <= cols {
        return s.into_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = columns(c);
        if used + w + 1 > cols {
            break;
        }
        out.push(c);
        used += w;
    }
    if cols > 0 {
        out.push('…');
    }
    out
}

/// `s` (already fitted) padded with spaces to `cols` columns.
fn pad(s: &str, cols: usize) -> String {
    let used: usize = s.chars().map(columns).sum();
    format!("{s}{}", " ".repeat(cols.saturating_sub(used)))
}

fn duration(ms: i64) -> String {
    let a = ms.unsigned_abs();
    if a < 1000 {
        format!("{ms} ms")
    } else if a < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = a / 1000;
        let sign = if ms < 0 { "-" } else { "" };
        format!("{sign}{} min {:02} s", s / 60, s % 60)
    }
}

fn signed(x: i64, f: impl Fn(i64) -> String) -> String {
    if x > 0 {
        format!("+{}", f(x))
    } else {
        f(x)
    }
}

/// Dollars with as many decimals as the amount needs (at least 2, at most 6).
fn dollars(x: f64) -> String {
    let text = format!("{:.6}", x.abs());
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = frac.trim_end_matches('0');
    let frac = format!("{frac:0<2}");
    let sign = if x < 0.0 && (whole != "0" || frac.chars().any(|c| c != '0')) { "-" } else { "" };
    format!("{sign}${whole}.{frac}")
}

fn signed_dollars(x: f64) -> String {
    if x > 0.0 {
        format!("+{}", dollars(x))
    } else {
        dollars(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Deltas, Divergence};
    use std::collections::BTreeMap;

    fn row(id: &str, status: &str) -> SessionRow {
        let mut row = SessionState::new(id).view(0, 0);
        row.agent_id = "research-agent".into();
        row.status = status.into();
        row.goal = Some("find the docs".into());
        row
    }

    fn pair(kind: Kind, a: Option<i64>, b: Option<i64>, sa: &str, sb: &str) -> StepPair {
        StepPair {
            kind,
            a_sequence: a,
            b_sequence: b,
            event_type: "cognition.thought".into(),
            a_summary: a.map(|_| sa.to_owned()),
            b_summary: b.map(|_| sb.to_owned()),
        }
    }

    fn same(k: i64) -> StepPair {
        pair(Kind::Same, Some(k), Some(k), &format!("step {k}"), &format!("step {k}"))
    }

    fn comparison(steps: Vec<StepPair>) -> Comparison {
        let first_divergence = steps.iter().position(|s| s.kind != Kind::Same).map(|index| Divergence {
            index,
            a_sequence: steps[index].a_sequence,
            b_sequence: steps[index].b_sequence,
        });
        let d = |a: i64, b: i64| Delta { a: Some(a), b: Some(b), delta: Some(b - a) };
        Comparison {
            a: row("run-a", "completed"),
            b: row("run-b", "failed"),
            steps,
            first_divergence,
            deltas: Deltas {
                duration_ms: Delta { a: Some(1500), b: Some(61_000), delta: Some(59_500) },
                steps: d(10, 14),
                tokens: d(300, 250),
                cost_usd: Delta { a: Some(0.3), b: Some(0.1), delta: Some(-0.2) },
                tool_calls: d(2, 5),
                failed_tool_calls: d(0, 4),
                alerts: BTreeMap::from([("loop".to_owned(), d(0, 1))]),
            },
        }
    }

    /// The step lines of a rendering (after the blank line that ends the verdict).
    fn step_lines(text: &str) -> Vec<&str> {
        text.split("\n\n").nth(3).unwrap_or("").lines().skip(1).collect()
    }

    #[test]
    fn long_runs_of_same_steps_collapse_around_differences() {
        let mut steps: Vec<StepPair> = (1..=10).map(same).collect();
        steps.push(pair(Kind::Changed, Some(11), Some(11), "search → ok", "search → failed: timeout"));
        steps.push(pair(Kind::OnlyB, None, Some(12), "", "search again"));
        steps.extend((12..=30).map(|k| pair(Kind::Same, Some(k), Some(k + 1), "s", "s")));
        let text = render(&comparison(steps), 100, false);
        let lines = step_lines(&text);
        assert_eq!(lines[0], "  … 8 same steps …", "{text}");
        assert!(lines[1].starts_with("   9  9  step 9"), "{text}");
        assert!(lines[2].starts_with("  10 10  step 10"), "{text}");
        assert_eq!(lines[3], "▶ first divergence (A #11, B #11)");
        assert!(lines[4].starts_with("~ 11 11  search → ok "), "{text}");
        assert!(lines[4].ends_with("│ search → failed: timeout"), "{text}");
        assert!(lines[5].starts_with("+    12  ") && lines[5].ends_with("│ search again"), "{text}");
        assert!(lines[6].starts_with("  12 13  s"), "{text}");
        assert!(lines[7].starts_with("  13 14  s"), "{text}");
        assert_eq!(lines[8], "  … 17 same steps …");
        assert_eq!(lines.len(), 9, "{text}");
        assert!(text.contains("the runs part at step 11 of 31 (A #11, B #11)"), "{text}");
    }

    #[test]
    fn a_single_hidden_step_is_shown_rather_than_collapsed() {
        // Differences at 3 and 9 leave one same step (6) outside both contexts.
        let mut steps: Vec<StepPair> = (1..=10).map(same).collect();
        steps[2] = pair(Kind::OnlyA, Some(3), None, "gone", "");
        steps[8] = pair(Kind::OnlyA, Some(9), None, "gone too", "");
        let lines: Vec<String> =
            step_lines(&render(&comparison(steps), 80, false)).iter().map(|l| l.to_string()).collect();
        let seqs: Vec<&str> = lines.iter().filter(|l| !l.starts_with('▶')).map(|l| l[2..4].trim()).collect();
        assert_eq!(seqs, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"], "{lines:#?}");
        assert!(lines.iter().any(|l| l.starts_with("-  3    ")), "{lines:#?}");
    }

    #[test]
    fn identical_runs_are_one_line_and_say_so() {
        let text = render(&comparison((1..=42).map(same).collect()), 120, false);
        assert!(text.contains("the runs do the same thing"), "{text}");
        assert_eq!(step_lines(&text), ["  … 42 same steps …"], "{text}");
        assert!(!text.contains("first divergence"), "{text}");
        let text = render(&comparison(vec![]), 120, false);
        assert!(text.contains("(neither run has a step)"), "{text}");
    }

    #[test]
    fn markers_say_the_kind() {
        let steps = vec![
            same(1),
            pair(Kind::Changed, Some(2), Some(2), "x", "y"),
            pair(Kind::OnlyA, Some(3), None, "only a", ""),
            pair(Kind::OnlyB, None, Some(3), "", "only b"),
        ];
        let text = render(&comparison(steps), 80, false);
        let marks: Vec<char> =
            step_lines(&text).iter().filter(|l| !l.starts_with('▶')).map(|l| l.chars().next().unwrap()).collect();
        assert_eq!(marks, [' ', '~', '-', '+'], "{text}");
        assert_eq!(step_lines(&text)[1], "▶ first divergence (A #2, B #2)");
    }

    #[test]
    fn colour_only_when_asked() {
        let steps = vec![
            same(1),
            pair(Kind::Changed, Some(2), Some(2), "x", "y"),
            pair(Kind::OnlyA, Some(3), None, "only a", ""),
            pair(Kind::OnlyB, None, Some(3), "", "only b"),
        ];
        let c = comparison(steps);
        let plain = render(&c, 80, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = render(&c, 80, true);
        assert!(coloured.contains("\x1b[1m▶ first divergence (A #2, B #2)\x1b[0m"), "{coloured}");
        assert!(coloured.contains(&format!("{YELLOW}~  2  2  x")), "{coloured}");
        assert!(coloured.contains(&format!("{RED}-  3     only a")), "{coloured}");
        assert!(coloured.contains(&format!("{GREEN}+     3")), "{coloured}");
        assert!(coloured.lines().filter(|l| l.contains('\x1b')).all(|l| l.ends_with(RESET)), "{coloured}");
        // Same rows and the rest are plain.
        assert!(coloured.lines().any(|l| l.starts_with("   1  1  step 1")), "{coloured}");
        // Without the codes, the same text.
        let stripped =
            coloured.replace(YELLOW, "").replace(RED, "").replace(GREEN, "").replace(BOLD, "").replace(RESET, "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn lines_fit_the_width_cut_on_character_boundaries() {
        let long_a = "é".repeat(200);
        let long_b = "日本語のテキスト".repeat(20);
        let steps = vec![pair(Kind::Changed, Some(1), Some(1), &long_a, &long_b)];
        for width in [40, 61, 80, 120, 200] {
            let text = render(&comparison(steps.clone()), width, false);
            for line in text.lines() {
                let cols: usize = line.chars().map(columns).sum();
                assert!(cols <= width, "{cols} > {width}: {line:?}");
            }
            let row = text.lines().find(|l| l.starts_with('~')).unwrap();
            assert!(row.contains("é…"), "{row}");
            assert!(row.ends_with('…'), "{row}");
        }
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abcd", 4), "abcd");
        assert_eq!(fit("日本語", 4), "日…");
        assert_eq!(fit("a\u{1b}[31mb\nc", 20), "a\\x1b[31mb\\nc");
        assert_eq!(fit("\u{9b}2Jabcdef", 8), "\\x9b2Ja…");
        assert_eq!(fit("", 0), "");
    }

    #[test]
    fn header_and_deltas() {
        let text = render(&comparison(vec![same(1)]), 120, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A  run-a  ·  agent research-agent  ·  completed  ·  goal: find the docs");
        assert_eq!(lines[1], "B  run-b  ·  agent research-agent  ·  failed  ·  goal: find the docs");
        let find = |name: &str| {
            let l = lines.iter().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
            l.split_whitespace().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>()
        };
        assert_eq!(find("steps"), ["10", "14", "+4"]);
        assert_eq!(find("tokens"), ["300", "250", "-50"]);
        assert_eq!(find("cost"), ["$0.30", "$0.10", "-$0.20"]);
        assert_eq!(find("failed tool calls"), ["0", "4", "+4"]);
        assert_eq!(find("alerts: loop"), ["0", "1", "+1"]);
        let duration = lines.iter().find(|l| l.starts_with("duration")).unwrap();
        assert!(
            duration.contains("1.5 s") && duration.contains("1 min 01 s") && duration.ends_with("+59.5 s"),
            "{text}"
        );
    }

    #[test]
    fn figures() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(61_000), "1 min 01 s");
        assert_eq!(duration(-61_000), "-1 min 01 s");
        assert_eq!(signed(59_500, duration), "+59.5 s");
        assert_eq!(dollars(0.000_125), "$0.000125");
        assert_eq!(dollars(1.5), "$1.50");
        assert_eq!(dollars(0.0), "$0.00");
        assert_eq!(signed_dollars(0.02), "+$0.02");
        assert_eq!(signed_dollars(-0.02), "-$0.02");
    }

    #[test]
    fn operands() {
        assert_eq!(Operand::of("-"), Operand::Stdin);
        assert_eq!(Operand::of("sess_1"), Operand::Id("sess_1".into()));
        assert_eq!(
            Operand::of("otel-0af7651916cd43dd8448eb211c80319c"),
            Operand::Id("otel-0af7651916cd43dd8448eb211c80319c".into())
        );
        assert_eq!(Operand::of("missing.jsonl"), Operand::File("missing.jsonl".into()));
        assert_eq!(Operand::of("./sess_1"), Operand::File("./sess_1".into()));
        let dir = std::env::temp_dir();
        assert_eq!(Operand::of(dir.to_str().unwrap()), Operand::File(dir.clone()));
    }

    fn line(session: &str, seq: i64, kind: &str, payload: &str) -> String {
        format!(
            r#"{{"spec":"aop/1.0","session_id":"{session}","agent_id":"bot","sequence":{seq},"timestamp":"2026-04-03T10:00:{seq:02}.000Z","type":"{kind}","payload":{payload}}}"#
        )
    }

    #[test]
    fn a_file_side_is_its_first_session_with_the_replayed_alerts() {
        let mut lines = vec![line("s", 1, "session.started", r#"{"goal":"g"}"#), "{not json".to_owned()];
        for k in 0..4 {
            lines.push(line("s", 2 + 2 * k, "operation.tool_start", r#"{"tool":"search","input":{"q":"x"}}"#));
            lines.push(line(
                "s",
                3 + 2 * k,
                "operation.tool_end",
                r#"{"tool":"search","success":true,"output_summary":"none"}"#,
            ));
        }
        lines.push(line("other", 1, "session.started", "{}"));
        lines.push(line("s", 2, "operation.tool_start", r#"{"tool":"search","input":{"q":"x"}}"#));
        lines.push(line("s", 10, "session.ended", r#"{"outcome":"failed"}"#));
        let text = lines.join("\n");
        let side = file_side("test", text.as_bytes()).unwrap();
        assert_eq!(side.row.id, "s");
        assert_eq!(side.row.status, "failed");
        assert_eq!(side.row.event_count, 10);
        assert_eq!(side.row.alert_count, 1);
        assert_eq!(side.len(), 10);
        let c = compare::compare(side.clone(), side);
        assert_eq!(c.deltas.alerts["loop"], Delta { a: Some(1), b: Some(1), delta: Some(0) });
        assert_eq!(c.deltas.tool_calls.a, Some(4));

        let err = file_side("empty.jsonl", "\n{nope\n".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "empty.jsonl holds no valid event");
    }
}
