//! The soak: a long mixed run at a steady, moderate load, watching whether the collector's
//! memory and open files stay flat.
//!
//! Everything runs at once, paced (the point is steady state over time, not saturation):
//! - writers post single events and small NDJSON batches (~[`RATE`] events/s in total) for many
//!   interleaved sessions; most sessions end, and every [`rotation`] each writer abandons a
//!   couple of running sessions (an agent that crashed), so running sessions accumulate slowly;
//! - subscribers connect to `/stream` (plain, `session_id=`, `type=operation.*`, or resuming
//!   with `Last-Event-ID`), read for a random few seconds and leave, [`STREAMS_MIN`] to
//!   [`STREAMS_MAX`] open at any time;
//! - readers page through `/sessions` (plain and filtered), read details and exports, and ask
//!   for `/alerts`, `/health` and `/metrics`;
//! - a deleter removes an ended session of this run every [`DELETE_EVERY`] (and from the
//!   ledger, so the final verification does not expect it).
//!
//! Every sampling period the collector's RSS (`VmRSS`) and open file descriptors (entries of
//! `/proc/<pid>/fd`) are read, with the period's rates and errors, and printed as one figure
//! line. At the end a summary and a verdict: the mean of the last quarter of the samples
//! against the mean of the second quarter (the first is warm-up). The verdict is information,
//! never an exit status.

use super::gen::{Rng, Source};
use super::ingest::{batch_outcome, post, Posted, REQUEST_TIMEOUT};
use super::stats::{self, mib, micros, CpuMeter, Histogram};
use super::{figure, note, Ctx};
use crate::client::{encode_component, find, ChunkedDecoder, Conn, SseParser, Target};
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events per second over all writers.
const RATE: f64 = 1000.0;
/// Writers posting one event per request, and their share of [`RATE`].
const SINGLE_WRITERS: usize = 3;
const SINGLE_SHARE: f64 = 0.45;
/// Writers posting NDJSON batches of [`BATCH_SIZE`] events, and their share.
const BATCH_WRITERS: usize = 2;
const BATCH_SIZE: (u64, u64) = (5, 50);
/// Sessions each writer interleaves.
const OPEN_SESSIONS: usize = 12;
/// Session lengths, in events.
const SESSION_LEN: (u64, u64) = (20, 200);
/// Sessions a writer leaves running when it rotates, and at the end.
const KEEP_RUNNING: usize = 2;
/// Subscribers open at any time: a target drawn in this range, redrawn every [`RETARGET`].
const STREAMS_MIN: u64 = 20;
const STREAMS_MAX: u64 = 50;
const RETARGET: Duration = Duration::from_secs(10);
/// How long one subscriber stays, in milliseconds.
const STREAM_LIFE_MS: (u64, u64) = (1_000, 8_000);
/// Readers, and requests per second each.
const READERS: usize = 2;
const READS_PER_S: f64 = 100.0;
const DELETE_EVERY: Duration = Duration::from_secs(3);
/// Recent session ids kept for reads, stream filters and deletes.
const POOL: usize = 512;
/// Agents of the generator, for the `agent_id` filter.
const AGENTS: [&str; 4] = ["research-agent", "coding-agent", "support-bot", "planner"];
/// Flat means the last quarter's mean is within this of the second quarter's.
const RSS_TOLERANCE_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
const RSS_TOLERANCE_SHARE: f64 = 0.10;
const FD_TOLERANCE: f64 = 10.0;
/// The load runs this much longer than the soak, so the last sample still sees it running.
const MARGIN: Duration = Duration::from_millis(250);

/// The sampling period: 10 s for a run of 100 s or more, down to 1 s for short runs.
fn sample_every(total: Duration) -> Duration {
    (total / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// How often a writer abandons its running sessions and starts fresh ones: 60 s for a
/// 10-minute run.
fn rotation(total: Duration) -> Duration {
    (total / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Open file descriptors of a process: the entries of `/proc/<pid>/fd`.
pub(crate) fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The value of an unlabelled metric in Prometheus text.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        let v: f64 = rest.trim().parse().ok()?;
        Some(v as u64)
    })
}

/// Whether a series stayed flat: the mean of its last quarter against the mean of its second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trend {
    pub(crate) second_quarter: f64,
    pub(crate) last_quarter: f64,
    pub(crate) flat: bool,
}

impl Trend {
    /// `None` with fewer than four values. Flat when the last quarter's mean is at most
    /// `max(abs, share × second quarter's mean)` above the second quarter's; a fall is flat.
    pub(crate) fn judge(values: &[f64], abs: f64, share: f64) -> Option<Trend> {
        let q = values.len() / 4;
        if q == 0 {
            return None;
        }
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let second_quarter = mean(&values[q..2 * q]);
        let last_quarter = mean(&values[values.len() - q..]);
        let flat = last_quarter - second_quarter <= abs.max(share * second_quarter);
        Some(Trend { second_quarter, last_quarter, flat })
    }

    fn growth(&self) -> f64 {
        self.last_quarter - self.second_quarter
    }

    fn percent(&self) -> f64 {
        100.0 * self.growth() / self.second_quarter.max(1.0)
    }
}

/// First, min, max and last of a series.
fn span(values: &[u64]) -> Option<(u64, u64, u64, u64)> {
    Some((*values.first()?, *values.iter().min()?, *values.iter().max()?, *values.last()?))
}

#[derive(Default)]
struct Pools {
    /// Sessions whose `session.ended` was acknowledged: candidates for reads and deletes.
    ended: VecDeque<String>,
    /// Sessions whose `session.started` was acknowledged recently: for `session_id` filters.
    started: VecDeque<String>,
    /// Sessions deleted, or whose deletion was attempted: a 404 for them is expected.
    deleted: HashSet<String>,
    /// Last event id seen by subscribers that left: where a reconnecting one resumes.
    left_at: VecDeque<i64>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= POOL {
        q.pop_front();
    }
    q.push_back(v);
}

/// What every task of the soak shares. Counters are totals; the sampler takes differences.
struct Shared {
    deadline: Instant,
    /// `"bench-<run>-soak-"`: every session of the soak starts with it.
    prefix: String,
    events: AtomicU64,
    reads: AtomicU64,
    deletes: AtomicU64,
    connects: AtomicU64,
    open_streams: AtomicI64,
    frames: AtomicU64,
    errors: AtomicU64,
    expected_404: AtomicU64,
    /// Highest event id any subscriber saw.
    last_event_id: AtomicI64,
    pools: Mutex<Pools>,
    first_error: Mutex<Option<String>>,
    /// Ack latency of this sampling period (microseconds).
    acks: Mutex<Histogram>,
    /// Read latency of this sampling period.
    read_latency: Mutex<Histogram>,
}

impl Shared {
    fn error(&self, n: u64, why: impl FnOnce() -> String) {
        self.errors.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                *first = Some(why());
            }
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(h: &Mutex<Histogram>, d: Duration) {
        if let Ok(mut h) = h.lock() {
            h.record(u64::from(micros(d)));
        }
    }

    fn take(h: &Mutex<Histogram>) -> Histogram {
        h.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default()
    }

    fn is_deleted(&self, id: &str) -> bool {
        self.pools().deleted.contains(id)
    }
}

/// Sleeps until `at`; false (without sleeping) when `at` is past the end of the soak.
async fn pace(shared: &Shared, at: Instant) -> bool {
    if at >= shared.deadline {
        return false;
    }
    tokio::time::sleep_until(at.into()).await;
    true
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// The kind of an event just generated, by its `type` field.
fn kind_of(line: &str) -> Option<bool> {
    if line.contains(r#""type":"session.started""#) {
        Some(true)
    } else if line.contains(r#""type":"session.ended""#) {
        Some(false)
    } else {
        None
    }
}

struct Writer {
    shared: Arc<Shared>,
    target: Arc<Target>,
    conn: Option<Conn>,
    no: usize,
    generation: u64,
    seed: u64,
    src: Source,
    prefix: String,
    rng: Rng,
    line: String,
    body: Vec<u8>,
    reply: Vec<u8>,
    /// Session number and kind of each event of the batch being built.
    batch: Vec<(u32, Option<bool>)>,
    /// Acknowledged events of the sources already retired.
    ledger: Vec<(String, u64)>,
}

impl Writer {
    fn new(shared: Arc<Shared>, target: Arc<Target>, no: usize, seed: u64) -> Writer {
        let prefix = format!("{}w{no}g0-", shared.prefix);
        let src = Source::new(prefix.clone(), seed, OPEN_SESSIONS, SESSION_LEN);
        Writer {
            shared,
            target,
            conn: None,
            no,
            generation: 0,
            seed,
            src,
            prefix,
            rng: Rng::new(seed ^ 0xa5a5),
            line: String::with_capacity(700),
            body: Vec::with_capacity(64 * 600),
            reply: Vec::new(),
            batch: Vec::new(),
            ledger: Vec::new(),
        }
    }

    /// Bookkeeping of one acknowledged event.
    fn acked(&mut self, no: u32, kind: Option<bool>) {
        self.src.ack(no);
        self.shared.events.fetch_add(1, Ordering::Relaxed);
        if let Some(started) = kind {
            let id = format!("{}{no}", self.prefix);
            let mut p = self.shared.pools();
            if started {
                push_bounded(&mut p.started, id);
            } else {
                push_bounded(&mut p.ended, id);
            }
        }
    }

    fn after_request(&mut self) {
        // Now and then a fresh connection, as SDKs reconnect.
        if self.rng.percent(1) {
            self.conn = None;
        }
    }

    async fn single(&mut self) {
        let no = self.src.next(&mut self.line);
        let kind = kind_of(&self.line);
        self.send_one(no, kind).await;
    }

    async fn send_one(&mut self, no: u32, kind: Option<bool>) {
        match post(&self.target, &mut self.conn, "application/json", self.line.as_bytes(), None).await {
            Posted::Ok(d) => {
                Shared::record(&self.shared.acks, d);
                self.acked(no, kind);
            }
            Posted::Status(s) => self.shared.error(1, || format!("POST /events answered {s}")),
            Posted::Failed(e) => self.shared.error(1, || format!("POST /events: {e}")),
        }
        self.after_request();
    }

    async fn batch(&mut self, n: u64) {
        self.body.clear();
        self.batch.clear();
        for _ in 0..n {
            let no = self.src.next(&mut self.line);
            self.batch.push((no, kind_of(&self.line)));
            self.body.extend_from_slice(self.line.as_bytes());
            self.body.push(b'\n');
        }
        let posted =
            post(&self.target, &mut self.conn, "application/x-ndjson", &self.body, Some(&mut self.reply)).await;
        match posted {
            Posted::Ok(d) => {
                Shared::record(&self.shared.acks, d);
                match batch_outcome(&self.reply, self.batch.len()) {
                    Ok(failed) => {
                        let batch = std::mem::take(&mut self.batch);
                        for (&(no, kind), _) in batch.iter().zip(&failed).filter(|(_, f)| !**f) {
                            self.acked(no, kind);
                        }
                        self.batch = batch;
                        let bad = failed.iter().filter(|f| **f).count() as u64;
                        if bad > 0 {
                            let reply = String::from_utf8_lossy(&self.reply).chars().take(200).collect::<String>();
                            self.shared.error(bad, || format!("a batch refused {bad} of {n}: {reply}"));
                        }
                    }
                    Err(e) => self.shared.error(n, || e),
                }
            }
            Posted::Status(s) => self.shared.error(n, || format!("POST /events (batch) answered {s}")),
            Posted::Failed(e) => self.shared.error(n, || format!("POST /events (batch): {e}")),
        }
        self.after_request();
    }

    /// Ends all but [`KEEP_RUNNING`] of the open sessions (one at a time), keeps the ledger.
    async fn retire(&mut self) {
        for _ in 0..OPEN_SESSIONS.saturating_sub(KEEP_RUNNING) {
            let Some(no) = self.src.close_one(&mut self.line) else { break };
            let kind = kind_of(&self.line);
            self.send_one(no, kind).await;
        }
        self.src.ledger(&mut self.ledger);
    }

    /// Retires the current source and starts a fresh one with new session ids.
    async fn rotate(&mut self) {
        self.retire().await;
        self.generation += 1;
        self.prefix = format!("{}w{}g{}-", self.shared.prefix, self.no, self.generation);
        let seed = self.seed ^ (self.generation << 48);
        self.src = Source::new(self.prefix.clone(), seed, OPEN_SESSIONS, SESSION_LEN);
    }
}

async fn writer(mut w: Writer, batches: bool, rate: f64, rotate_every: Duration) -> Vec<(String, u64)> {
    let start = Instant::now();
    // Writers start spread over their first period, not all at once.
    let mut next_at = start + Duration::from_secs_f64(w.rng.below(1000) as f64 / 1000.0 / rate);
    let mut rotate_at = start + rotate_every + rotate_every.mul_f64(w.no as f64 / 8.0);
    while pace(&w.shared, next_at).await {
        if Instant::now() >= rotate_at {
            w.rotate().await;
            rotate_at += rotate_every;
        }
        let n = if batches {
            let n = w.rng.range(BATCH_SIZE.0, BATCH_SIZE.1);
            w.batch(n).await;
            n
        } else {
            w.single().await;
            1
        };
        next_at += Duration::from_secs_f64(n as f64 / rate);
        // Behind by more than a second (a stall): do not burst to catch up.
        let now = Instant::now();
        if next_at + Duration::from_secs(1) < now {
            next_at = now;
        }
    }
    w.retire().await;
    w.ledger
}

// ---------------------------------------------------------------------------------------------
// Reads

#[derive(Deserialize)]
struct Page {
    sessions: Vec<serde::de::IgnoredAny>,
    next_cursor: Option<String>,
}

/// One reader's request mix.
struct Reader {
    shared: Arc<Shared>,
    target: Arc<Target>,
    conn: Option<Conn>,
    rng: Rng,
    /// Where the paging of `/sessions` is (`None`: the first page next).
    cursor: Option<String>,
    pages: u32,
}

impl Reader {
    /// A session id of this run, from the pools; `None` before any has started.
    fn some_session(&mut self) -> Option<String> {
        let pick_ended = self.rng.percent(70);
        let p = self.shared.pools();
        let pool = if pick_ended && !p.ended.is_empty() { &p.ended } else { &p.started };
        if pool.is_empty() {
            return None;
        }
        pool.get(self.rng.below(pool.len() as u64) as usize).cloned()
    }

    /// The next request: its path, and the session it reads (a 404 for a deleted one is expected).
    fn next_path(&mut self) -> (String, Option<String>) {
        let roll = self.rng.below(100);
        let session = if (50..78).contains(&roll) { self.some_session() } else { None };
        match (roll, session) {
            (50..=69, Some(id)) => (format!("/sessions/{id}?limit=100"), Some(id)),
            (70..=77, Some(id)) => (format!("/sessions/{id}/export"), Some(id)),
            (25..=34, _) => ("/sessions?status=running&limit=100".into(), None),
            (35..=44, _) => {
                let agent = AGENTS[self.rng.below(AGENTS.len() as u64) as usize];
                (format!("/sessions?status=completed&agent_id={agent}&limit=50"), None)
            }
            (45..=49, _) => {
                let w = self.rng.below((SINGLE_WRITERS + BATCH_WRITERS) as u64);
                (format!("/sessions?q={}&limit=20", encode_component(&format!("{}w{w}g", self.shared.prefix))), None)
            }
            (78..=85, _) => ("/alerts?limit=50".into(), None),
            (86..=92, _) => ("/health".into(), None),
            (93..=99, _) => ("/metrics".into(), None),
            // 0..25, and detail or export before any session exists: the next page of the list.
            _ => match &self.cursor {
                Some(c) if self.pages < 5 => (format!("/sessions?limit=50&cursor={}", encode_component(c)), None),
                _ => {
                    self.pages = 0;
                    ("/sessions?limit=50".into(), None)
                }
            },
        }
    }

    async fn one(&mut self) {
        let (path, session) = self.next_path();
        let is_page = path.starts_with("/sessions?limit=50");
        if self.conn.is_none() {
            match tokio::time::timeout(REQUEST_TIMEOUT, Conn::connect(&self.target)).await {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) => return self.shared.error(1, || format!("connect: {e}")),
                Err(_) => return self.shared.error(1, || "connect: timed out".into()),
            }
        }
        let Some(c) = self.conn.as_mut() else { return };
        let began = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, c.get(&path)).await;
        let elapsed = began.elapsed();
        let mut drop_conn = self.rng.percent(2);
        match answer {
            Ok(Ok(r)) => {
                self.shared.reads.fetch_add(1, Ordering::Relaxed);
                Shared::record(&self.shared.read_latency, elapsed);
                let status = r.head.status;
                if status == 200 && is_page {
                    match serde_json::from_slice::<Page>(r.body) {
                        Ok(page) => {
                            self.cursor = page.next_cursor.filter(|_| !page.sessions.is_empty());
                            self.pages += 1;
                        }
                        Err(e) => self.shared.error(1, || format!("GET {path}: unreadable page: {e}")),
                    }
                } else if status == 404 && session.as_deref().is_some_and(|id| self.shared.is_deleted(id)) {
                    self.shared.expected_404.fetch_add(1, Ordering::Relaxed);
                } else if status != 200 {
                    self.shared.error(1, || format!("GET {path} answered {status}"));
                }
                drop_conn |= c.closed;
            }
            Ok(Err(e)) => {
                self.shared.error(1, || format!("GET {path}: {e}"));
                drop_conn = true;
            }
            Err(_) => {
                self.shared.error(1, || format!("GET {path}: no answer within 10 s"));
                drop_conn = true;
            }
        }
        if drop_conn {
            self.conn = None;
        }
    }
}

async fn reader(mut r: Reader) {
    let every = Duration::from_secs_f64(1.0 / READS_PER_S);
    let mut next_at = Instant::now() + every.mul_f64(r.rng.below(100) as f64 / 100.0);
    while pace(&r.shared, next_at).await {
        r.one().await;
        next_at += every;
        let now = Instant::now();
        if next_at + Duration::from_secs(1) < now {
            next_at = now;
        }
    }
}

/// Deletes an ended session of this run every [`DELETE_EVERY`].
async fn deleter(shared: Arc<Shared>, target: Arc<Target>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut conn: Option<Conn> = None;
    let mut next_at = Instant::now() + DELETE_EVERY;
    while pace(&shared, next_at).await {
        next_at += DELETE_EVERY;
        let id = {
            let mut p = shared.pools();
            if p.ended.is_empty() {
                continue;
            }
            let i = rng.below(p.ended.len() as u64) as usize;
            let Some(id) = p.ended.swap_remove_back(i) else { continue };
            // Before the request: a read that races the deletion expects its 404.
            p.deleted.insert(id.clone());
            id
        };
        if conn.is_none() {
            match tokio::time::timeout(REQUEST_TIMEOUT, Conn::connect(&target)).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    shared.error(1, || "connect for DELETE failed".into());
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let path = format!("/sessions/{id}");
        match tokio::time::timeout(REQUEST_TIMEOUT, c.request("DELETE", &path, None, &[])).await {
            Ok(Ok(r)) if r.head.status == 200 => {
                shared.deletes.fetch_add(1, Ordering::Relaxed);
                if c.closed {
                    conn = None;
                }
            }
            Ok(Ok(r)) => {
                let s = r.head.status;
                shared.error(1, || format!("DELETE {path} answered {s}"));
            }
            Ok(Err(e)) => {
                shared.error(1, || format!("DELETE {path}: {e}"));
                conn = None;
            }
            Err(_) => {
                shared.error(1, || format!("DELETE {path}: no answer within 10 s"));
                conn = None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streams

/// What a subscriber asks for.
#[derive(Debug, Clone)]
enum Ask {
    All,
    Session(String),
    Operations,
    Resume(i64),
}

impl Ask {
    fn pick(rng: &mut Rng, shared: &Shared) -> Ask {
        let p = shared.pools();
        match rng.below(10) {
            0..=1 if !p.started.is_empty() => {
                let i = rng.below(p.started.len() as u64) as usize;
                p.started.get(i).map_or(Ask::All, |id| Ask::Session(id.clone()))
            }
            2..=3 => Ask::Operations,
            4..=5 if !p.left_at.is_empty() => {
                let i = rng.below(p.left_at.len() as u64) as usize;
                p.left_at.get(i).map_or(Ask::All, |&id| Ask::Resume(id))
            }
            _ => Ask::All,
        }
    }
}

/// One subscriber: connects, reads until `until`, leaves. Checks what it receives: event ids
/// only go up, and a filter lets through only what it asked for.
async fn subscriber(shared: Arc<Shared>, target: Arc<Target>, ask: Ask, until: Instant) {
    let path = match &ask {
        Ask::All | Ask::Resume(_) => "/stream".to_owned(),
        Ask::Session(id) => format!("/stream?session_id={}", encode_component(id)),
        Ask::Operations => "/stream?type=operation.*".to_owned(),
    };
    let resume = match ask {
        Ask::Resume(id) => Some(id.to_string()),
        _ => None,
    };
    let needle: Option<Vec<u8>> = match &ask {
        Ask::Session(id) => Some(format!(r#""session_id":"{id}""#).into_bytes()),
        Ask::Operations => Some(br#""type":"operation."#.to_vec()),
        _ => None,
    };
    let connected = async {
        let mut c = Conn::connect_with_buffer(&target, 16 * 1024).await?;
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(id) = &resume {
            headers.push(("Last-Event-ID", id.as_str()));
        }
        c.send("GET", &path, None, &[], &headers).await?;
        let head = c.read_head().await?;
        Ok::<_, std::io::Error>((c, head))
    };
    let mut conn = match tokio::time::timeout(REQUEST_TIMEOUT, connected).await {
        Ok(Ok((c, head))) if head.status == 200 => c,
        Ok(Ok((_, head))) => return shared.error(1, || format!("GET {path} answered {}", head.status)),
        Ok(Err(e)) => return shared.error(1, || format!("GET {path}: {e}")),
        Err(_) => return shared.error(1, || format!("GET {path}: no answer within 10 s")),
    };
    shared.connects.fetch_add(1, Ordering::Relaxed);
    let mut last = match ask {
        Ask::Resume(id) => id,
        _ => i64::MIN,
    };
    let (mut frames, mut wrong, mut overflow) = (0u64, None::<String>, false);
    let mut dec = ChunkedDecoder::default();
    let mut sse = SseParser::default();
    let sleep = tokio::time::sleep_until(until.into());
    tokio::pin!(sleep);
    loop {
        let fed = dec.feed(conn.take_buffered(), &mut |chunk| {
            sse.feed(chunk, &mut |f| {
                if let Some(ev) = f.event {
                    overflow |= ev == b"overflow";
                    return;
                }
                frames += 1;
                let id = f.id.and_then(|i| std::str::from_utf8(i).ok()?.parse::<i64>().ok());
                match id {
                    Some(id) if id > last => last = id,
                    _ if wrong.is_some() => {}
                    Some(id) => wrong = Some(format!("event id {id} after {last}")),
                    None => wrong = Some("an event frame without an id".into()),
                }
                if let Some(n) = &needle {
                    if wrong.is_none() && find(f.data, n).is_none() {
                        wrong = Some(format!("a frame the filter should have held back ({ask:?})"));
                    }
                }
            })
        });
        shared.frames.fetch_add(std::mem::take(&mut frames), Ordering::Relaxed);
        let problem = match fed {
            Err(e) => Some(e.to_string()),
            Ok(_) if overflow => Some("sent `event: overflow`".into()),
            Ok(_) if dec.is_done() => Some("the collector ended the stream".into()),
            Ok(_) => None,
        };
        if let Some(p) = problem.or(wrong.take()) {
            shared.error(1, || format!("GET {path}: {p}"));
            break;
        }
        tokio::select! {
            biased;
            _ = &mut sleep => break,
            res = conn.fill() => if let Err(e) = res {
                shared.error(1, || format!("GET {path}: {e}"));
                break;
            },
        }
    }
    shared.last_event_id.fetch_max(last, Ordering::Relaxed);
    if last > 0 {
        push_bounded(&mut shared.pools().left_at, last);
    }
    // Leaving: the connection is dropped here, as a closed browser tab drops it.
}

/// Keeps [`STREAMS_MIN`]..[`STREAMS_MAX`] subscribers open, each for a random few seconds.
async fn streams(shared: Arc<Shared>, target: Arc<Target>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut want = rng.range(STREAMS_MIN, STREAMS_MAX);
    let mut retarget = Instant::now() + RETARGET;
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_at = Instant::now();
    while pace(&shared, next_at).await {
        next_at += Duration::from_millis(100);
        while tasks.try_join_next().is_some() {}
        if Instant::now() >= retarget {
            want = rng.range(STREAMS_MIN, STREAMS_MAX);
            retarget += RETARGET;
        }
        // A few at a time, so arrivals are spread rather than a burst after each redraw.
        let open = tasks.len() as u64;
        for _ in open..want.min(open + 5) {
            let ask = Ask::pick(&mut rng, &shared);
            let until = (Instant::now() + Duration::from_millis(rng.range(STREAM_LIFE_MS.0, STREAM_LIFE_MS.1)))
                .min(shared.deadline);
            let (s, t) = (Arc::clone(&shared), Arc::clone(&target));
            tasks.spawn(async move {
                s.open_streams.fetch_add(1, Ordering::Relaxed);
                subscriber(Arc::clone(&s), t, ask, until).await;
                s.open_streams.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

// ---------------------------------------------------------------------------------------------
// Sampling and the run

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: Option<u64>,
    fds: Option<u64>,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    events: u64,
    reads: u64,
    deletes: u64,
    connects: u64,
    frames: u64,
    errors: u64,
}

impl Totals {
    fn of(s: &Shared) -> Totals {
        Totals {
            events: s.events.load(Ordering::Relaxed),
            reads: s.reads.load(Ordering::Relaxed),
            deletes: s.deletes.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            frames: s.frames.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
        }
    }
}

/// `/metrics` as the collector sees itself: open subscribers and store size.
async fn server_view(target: &Arc<Target>) -> Option<(u64, u64)> {
    let attempt = async {
        let mut c = Conn::connect(target).await.ok()?;
        let r = c.get("/metrics").await.ok()?;
        let text = std::str::from_utf8(r.body).ok()?;
        Some((metric_value(text, "aop_stream_subscribers")?, metric_value(text, "aop_store_bytes")?))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten()
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or("?".into(), mib)
}

fn opt(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// Runs the soak for `ctx.plan.soak_duration`, printing a figure line per sample and a summary,
/// and adds what it acknowledged (minus the sessions it deleted) to the run's ledger.
pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), String> {
    let total = ctx.plan.soak_duration;
    let every = sample_every(total);
    let pid = ctx.server_pid;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + total + MARGIN,
        prefix: format!("bench-{}-soak-", ctx.run_id),
        events: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        deletes: AtomicU64::new(0),
        connects: AtomicU64::new(0),
        open_streams: AtomicI64::new(0),
        frames: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        expected_404: AtomicU64::new(0),
        last_event_id: AtomicI64::new(0),
        pools: Mutex::new(Pools::default()),
        first_error: Mutex::new(None),
        acks: Mutex::new(Histogram::default()),
        read_latency: Mutex::new(Histogram::default()),
    });
    if pid.is_none() {
        note("soak: the collector's pid is not readable here: RSS and file descriptors are not sampled");
    }
    let rss0 = pid.and_then(stats::rss_bytes);
    let fds0 = pid.and_then(fd_count);
    figure(&format!(
        "soak: {} s, ~{RATE:.0} events/s ({SINGLE_WRITERS} single-event writers, {BATCH_WRITERS} writing batches of {}–{}), \
{STREAMS_MIN}–{STREAMS_MAX} streams open, {} reads/s, a delete every {} s; sampled every {} s; at t=0: rss {}, fds {}",
        total.as_secs_f64(),
        BATCH_SIZE.0,
        BATCH_SIZE.1,
        READS_PER_S * READERS as f64,
        DELETE_EVERY.as_secs(),
        every.as_secs_f64(),
        opt_mib(rss0),
        opt(fds0),
    ));

    let rotate_every = rotation(total);
    let mut writers = Vec::new();
    for i in 0..SINGLE_WRITERS + BATCH_WRITERS {
        let batches = i >= SINGLE_WRITERS;
        let rate = if batches {
            RATE * (1.0 - SINGLE_SHARE) / BATCH_WRITERS as f64
        } else {
            RATE * SINGLE_SHARE / SINGLE_WRITERS as f64
        };
        let w = Writer::new(Arc::clone(&shared), Arc::clone(&ctx.target), i, ctx.seed ^ ((i as u64 + 1) << 36));
        writers.push(tokio::spawn(writer(w, batches, rate, rotate_every)));
    }
    let mut others = Vec::new();
    for i in 0..READERS {
        others.push(tokio::spawn(reader(Reader {
            shared: Arc::clone(&shared),
            target: Arc::clone(&ctx.target),
            conn: None,
            rng: Rng::new(ctx.seed ^ 0x7265_6164 ^ i as u64),
            cursor: None,
            pages: 0,
        })));
    }
    others.push(tokio::spawn(streams(Arc::clone(&shared), Arc::clone(&ctx.target), ctx.seed ^ 0x7374)));
    others.push(tokio::spawn(deleter(Arc::clone(&shared), Arc::clone(&ctx.target), ctx.seed ^ 0x646c)));

    // Sampling: one figure line per period.
    let mut samples: Vec<Sample> = Vec::new();
    let (mut acks_all, mut reads_all) = (Histogram::default(), Histogram::default());
    let mut prev = Totals::default();
    let mut prev_at = start;
    let mut cpu = CpuMeter::start(pid.as_slice());
    let mut k = 1u32;
    loop {
        let at = (start + every * k).min(start + total);
        tokio::time::sleep_until(at.into()).await;
        let now = Instant::now();
        let secs = now.duration_since(prev_at).as_secs_f64().max(1e-3);
        let t = Totals::of(&shared);
        let sample = Sample { rss: pid.and_then(stats::rss_bytes), fds: pid.and_then(fd_count) };
        let (acks, reads) = (Shared::take(&shared.acks), Shared::take(&shared.read_latency));
        acks_all.merge(&acks);
        reads_all.merge(&reads);
        let view = server_view(&ctx.target).await;
        figure(&format!(
            "soak t={:.0}s: rss {}, fds {}, {:.0} events/s (ack p99 {} ms), reads {:.0}/s (p99 {} ms), streams open {} \
(server {}, {} connects), deletes {}, errors {}, store {}{}",
            now.duration_since(start).as_secs_f64(),
            opt_mib(sample.rss),
            opt(sample.fds),
            (t.events - prev.events) as f64 / secs,
            stats::ms(acks.summary().p99),
            (t.reads - prev.reads) as f64 / secs,
            stats::ms(reads.summary().p99),
            shared.open_streams.load(Ordering::Relaxed),
            view.map_or("?".into(), |v| v.0.to_string()),
            t.connects - prev.connects,
            t.deletes - prev.deletes,
            t.errors - prev.errors,
            view.map_or("?".into(), |v| mib(v.1)),
            cpu.finish(),
        ));
        samples.push(sample);
        prev = t;
        prev_at = now;
        cpu = CpuMeter::start(pid.as_slice());
        if at >= start + total {
            break;
        }
        k += 1;
    }

    // The end: writers end their sessions (all but a few), everything else stops by itself.
    for t in others {
        let _ = t.await;
    }
    let mut ledger = Vec::new();
    for t in writers {
        ledger.extend(t.await.map_err(|e| format!("a soak writer failed: {e}"))?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let deleted = std::mem::take(&mut shared.pools().deleted);
    let before = ledger.len();
    ledger.retain(|(id, _)| !deleted.contains(id));
    let sessions = ledger.len();
    let dropped = before - sessions;
    ctx.ledger.extend(ledger);

    summary(&shared, &samples, every, &acks_all, &reads_all, elapsed, sessions, dropped);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn summary(
    shared: &Shared,
    samples: &[Sample],
    every: Duration,
    acks: &Histogram,
    reads: &Histogram,
    elapsed: f64,
    sessions: usize,
    deleted: usize,
) {
    let t = Totals::of(shared);
    let half = &samples[samples.len() / 2..];
    let rss: Vec<u64> = half.iter().filter_map(|s| s.rss).collect();
    let fds: Vec<u64> = half.iter().filter_map(|s| s.fds).collect();
    let show = |s: Option<(u64, u64, u64, u64)>, f: &dyn Fn(u64) -> String| {
        s.map_or("not measured".into(), |(first, min, max, last)| {
            format!("first {}, min {}, max {}, last {}", f(first), f(min), f(max), f(last))
        })
    };
    figure(&format!(
        "soak summary: {} samples every {} s; second half ({} samples): RSS {}; FDs {}",
        samples.len(),
        every.as_secs_f64(),
        half.len(),
        show(span(&rss), &mib),
        show(span(&fds), &|v| v.to_string()),
    ));
    let expected = shared.expected_404.load(Ordering::Relaxed);
    let mut line = format!(
        "soak totals: {} events acknowledged ({:.0}/s, ack {}), {} reads (read {}), {} deletes, {} stream connects \
({} frames), {} errors, {expected} expected 404s (deleted sessions); {sessions} sessions to verify ({deleted} deleted left out)",
        t.events,
        t.events as f64 / elapsed.max(1e-3),
        acks.summary().ms(),
        t.reads,
        reads.summary().ms(),
        t.deletes,
        t.connects,
        t.frames,
        t.errors,
    );
    if let Some(e) = shared.first_error.lock().ok().and_then(|e| e.clone()) {
        line.push_str(&format!(" [first error: {e}]"));
    }
    figure(&line);
    let all_rss: Vec<f64> = samples.iter().filter_map(|s| s.rss).map(|v| v as f64).collect();
    let all_fds: Vec<f64> = samples.iter().filter_map(|s| s.fds).map(|v| v as f64).collect();
    let rss = Trend::judge(&all_rss, RSS_TOLERANCE_BYTES, RSS_TOLERANCE_SHARE);
    let fds = Trend::judge(&all_fds, FD_TOLERANCE, 0.0);
    let verdict = match (rss, fds) {
        (Some(r), Some(f)) => {
            let grew: Vec<&str> =
                [(!r.flat).then_some("RSS"), (!f.flat).then_some("FDs")].into_iter().flatten().collect();
            let word = if grew.is_empty() { "flat".to_owned() } else { format!("growing ({})", grew.join(", ")) };
            format!(
                "{word}: RSS mean {} in the second quarter, {} in the last ({:+.1} MiB, {:+.1} %; flat within 8 MiB or 10 %); \
FDs mean {:.1} then {:.1} ({:+.1}; flat within 10)",
                mib(r.second_quarter as u64),
                mib(r.last_quarter as u64),
                r.growth() / (1024.0 * 1024.0),
                r.percent(),
                f.second_quarter,
                f.last_quarter,
                f.growth(),
            )
        }
        _ => "not judged (fewer than 4 samples of RSS and FDs)".into(),
    };
    figure(&format!("soak verdict: {verdict}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatness_compares_the_last_quarter_with_the_second() {
        const MIB: f64 = 1024.0 * 1024.0;
        // Warm-up in the first quarter does not count.
        let warm: Vec<f64> = [10.0, 20.0, 30.0, 30.0, 31.0, 30.0, 31.0, 30.0].iter().map(|v| v * MIB).collect();
        let t = Trend::judge(&warm, 8.0 * MIB, 0.1).unwrap();
        assert_eq!((t.second_quarter / MIB, t.last_quarter / MIB), (30.0, 30.5));
        assert!(t.flat);
        // Either tolerance suffices: +7 MiB on 20 MiB is 35 % but under 8 MiB.
        let small = [20.0, 20.0, 27.0, 27.0].map(|v| v * MIB);
        assert!(Trend::judge(&small, 8.0 * MIB, 0.1).unwrap().flat);
        // +15 MiB on 200 MiB is 7.5 %: flat; +25 MiB is 12.5 %: growing.
        assert!(Trend::judge(&[200.0, 200.0, 210.0, 215.0].map(|v| v * MIB), 8.0 * MIB, 0.1).unwrap().flat);
        assert!(!Trend::judge(&[200.0, 200.0, 210.0, 225.0].map(|v| v * MIB), 8.0 * MIB, 0.1).unwrap().flat);
        // Steady growth over the run.
        let growing: Vec<f64> = (0..60).map(|i| (30.0 + f64::from(i)) * MIB).collect();
        assert!(!Trend::judge(&growing, 8.0 * MIB, 0.1).unwrap().flat);
        // FDs: within 10, absolute; a fall is flat.
        assert!(Trend::judge(&[50.0, 55.0, 60.0, 65.0], 10.0, 0.0).unwrap().flat);
        assert!(!Trend::judge(&[50.0, 55.0, 60.0, 66.0], 10.0, 0.0).unwrap().flat);
        assert!(Trend::judge(&[90.0, 90.0, 60.0, 40.0], 10.0, 0.0).unwrap().flat);
        // Too few samples to say.
        assert_eq!(Trend::judge(&[1.0, 2.0, 3.0], 10.0, 0.0), None);
        assert_eq!(span(&[3, 1, 4, 1, 5]), Some((3, 1, 5, 5)));
        assert_eq!(span(&[]), None);
    }

    #[test]
    fn counts_open_file_descriptors() {
        let me = std::process::id();
        let before = fd_count(me).unwrap();
        assert!(before >= 1);
        // Other tests open and close files concurrently: only a lower bound holds for sure.
        let held: Vec<std::fs::File> = (0..40).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        assert!(fd_count(me).unwrap() >= 40);
        drop(held);
        assert_eq!(fd_count(u32::MAX), None);
    }

    #[test]
    fn reads_metrics_and_encodes_queries() {
        let text = "# HELP aop_stream_subscribers Open /stream connections.\n# TYPE aop_stream_subscribers gauge\n\
aop_stream_subscribers 37\naop_stream_subscribers_total 5\naop_store_bytes 1.5e6\n";
        assert_eq!(metric_value(text, "aop_stream_subscribers"), Some(37));
        assert_eq!(metric_value(text, "aop_store_bytes"), Some(1_500_000));
        assert_eq!(metric_value(text, "aop_missing"), None);
    }

    #[test]
    fn event_kinds_and_periods() {
        assert_eq!(kind_of(r#"{"type":"session.started","payload":{}}"#), Some(true));
        assert_eq!(kind_of(r#"{"type":"session.ended","payload":{}}"#), Some(false));
        assert_eq!(kind_of(r#"{"type":"cognition.thought","payload":{"content":"session.ended"}}"#), None);
        assert_eq!(sample_every(Duration::from_secs(600)), Duration::from_secs(10));
        assert_eq!(sample_every(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(rotation(Duration::from_secs(600)), Duration::from_secs(60));
    }
}
