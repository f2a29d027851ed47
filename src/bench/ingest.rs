//! Workloads 1 and 2: single-event POSTs at a given concurrency, and NDJSON batches.
//!
//! Closed loop: each connection sends its next request as soon as the previous one is answered,
//! so throughput is the server's capacity at that concurrency, and each latency is measured from
//! the first byte written to the last byte read. Nothing is retried: a 503 (or any non-2xx, or a
//! broken connection) is counted as an error and the event is dropped, as the AOP SDKs do
//! (fire-and-forget); its sequence number simply stays unused.

use super::gen::Source;
use super::stats::{micros, Summary};
use super::{fleet, Ctx};
use crate::client::{Conn, Target};
use serde::Deserialize;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for one answer before the connection is dropped and the request counted as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions each single-event connection interleaves: 64 connections → 512 live sessions.
const OPEN_SESSIONS_SINGLE: usize = 8;
/// Sessions each batch connection interleaves, so a batch holds many sessions as an importer's would.
const OPEN_SESSIONS_BATCH: usize = 32;
/// Session lengths, in events.
const SESSION_LEN: (u64, u64) = (20, 200);
/// Connections posting batches: enough to keep the writer busy while one batch is being parsed.
pub(crate) const BATCH_CONCURRENCY: usize = 4;

/// The outcome of one POST.
pub(crate) enum Posted {
    /// 2xx, with the time from writing to the end of the answer.
    Ok(Duration),
    /// Another status (503 is the interesting one).
    Status(u16),
    /// No answer: refused, reset, timed out.
    Failed(String),
}

/// Posts `body` to `/events` on `conn` (connecting first if needed), copying the answer into
/// `reply` if given. The connection is dropped after a failure or when the server closes it.
pub(crate) async fn post(
    target: &Arc<Target>,
    conn: &mut Option<Conn>,
    content_type: &str,
    body: &[u8],
    reply: Option<&mut Vec<u8>>,
) -> Posted {
    post_to(target, conn, "/events", content_type, body, reply).await
}

/// [`post`] to another path.
pub(crate) async fn post_to(
    target: &Arc<Target>,
    conn: &mut Option<Conn>,
    path: &str,
    content_type: &str,
    body: &[u8],
    reply: Option<&mut Vec<u8>>,
) -> Posted {
    if conn.is_none() {
        match tokio::time::timeout(REQUEST_TIMEOUT, Conn::connect(target)).await {
            Ok(Ok(c)) => *conn = Some(c),
            Ok(Err(e)) => return Posted::Failed(format!("connect: {e}")),
            Err(_) => return Posted::Failed("connect: timed out".into()),
        }
    }
    let Some(c) = conn.as_mut() else {
        return Posted::Failed("no connection".into());
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, c.request("POST", path, Some(content_type), body)).await;
    let elapsed = started.elapsed();
    let out = match answer {
        Ok(Ok(resp)) => {
            if let Some(r) = reply {
                r.clear();
                r.extend_from_slice(resp.body);
            }
            if (200..300).contains(&resp.head.status) {
                Posted::Ok(elapsed)
            } else {
                Posted::Status(resp.head.status)
            }
        }
        Ok(Err(e)) => Posted::Failed(e.to_string()),
        Err(_) => Posted::Failed("no answer within 10 s".into()),
    };
    if matches!(out, Posted::Failed(_)) || conn.as_ref().is_some_and(|c| c.closed) {
        *conn = None;
    }
    out
}

/// What one ingest measurement found.
#[derive(Debug, Clone)]
pub(crate) struct IngestFigures {
    pub(crate) events_per_s: f64,
    pub(crate) latency: Summary,
    /// Events not acknowledged (a failed batch counts all its events).
    pub(crate) errors: u64,
    pub(crate) overloaded: u64,
    pub(crate) first_error: Option<String>,
    /// Bytes of JSON generated, closing events included.
    pub(crate) raw_bytes: u64,
    /// Events acknowledged in total, closing events included.
    pub(crate) acked_total: u64,
}

impl IngestFigures {
    /// `38123 events/s, ack p50 … p99 … max …, errors 0 (503: 0)`.
    pub(crate) fn line(&self) -> String {
        let mut s = format!(
            "{:.0} events/s, ack {}, errors {} (503: {})",
            self.events_per_s,
            self.latency.ms(),
            self.errors,
            self.overloaded
        );
        if let Some(e) = &self.first_error {
            s.push_str(&format!(" [first error: {e}]"));
        }
        s
    }
}

struct TaskOut {
    samples: Vec<u32>,
    acked: u64,
    errors: u64,
    overloaded: u64,
    first_error: Option<String>,
    end: Instant,
    src: Source,
}

impl TaskOut {
    fn new(src: Source) -> TaskOut {
        TaskOut { samples: Vec::new(), acked: 0, errors: 0, overloaded: 0, first_error: None, end: Instant::now(), src }
    }

    fn failed(&mut self, events: u64, status: Option<u16>, why: impl FnOnce() -> String) {
        self.errors += events;
        if matches!(status, Some(503 | 429)) {
            self.overloaded += events;
        }
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }
}

/// Takes `n` from the shared event budget; false once it is spent.
pub(crate) fn take_budget(budget: &AtomicI64, n: i64) -> bool {
    budget.fetch_sub(n, Ordering::Relaxed) >= n
}

/// Opens `n` connections before the clock starts, so connection setup is not measured.
pub(crate) async fn connect_all(target: &Arc<Target>, n: usize) -> Result<Vec<Conn>, String> {
    connect_spread(std::slice::from_ref(target), n).await.map(|v| v.into_iter().map(|(_, c)| c).collect())
}

/// [`connect_all`] over the instances of a fleet: connection `i` goes to the instance
/// [`fleet::instance_of`] gives, and comes back with it (a broken connection reconnects there).
pub(crate) async fn connect_spread(targets: &[Arc<Target>], n: usize) -> Result<Vec<(Arc<Target>, Conn)>, String> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let target = &targets[fleet::instance_of(i, targets.len())];
        let c = tokio::time::timeout(REQUEST_TIMEOUT, Conn::connect(target))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("cannot connect to {}: {e}", target.url))?;
        conns.push((Arc::clone(target), c));
    }
    Ok(conns)
}

async fn single_task(
    target: Arc<Target>,
    conn: Conn,
    src: Source,
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> TaskOut {
    let mut conn = Some(conn);
    let mut out = TaskOut::new(src);
    let mut line = String::with_capacity(700);
    while Instant::now() < deadline && take_budget(&budget, 1) {
        let no = out.src.next(&mut line);
        match post(&target, &mut conn, "application/json", line.as_bytes(), None).await {
            Posted::Ok(d) => {
                out.samples.push(micros(d));
                out.acked += 1;
                out.src.ack(no);
            }
            Posted::Status(s) => out.failed(1, Some(s), || format!("HTTP {s}")),
            Posted::Failed(e) => {
                out.failed(1, None, || e);
                if conn.is_none() {
                    // Do not spin on a collector that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out.end = Instant::now();
    // Unmeasured: end the sessions still open, so none is left "running".
    while let Some(no) = out.src.close_one(&mut line) {
        if let Posted::Ok(_) = post(&target, &mut conn, "application/json", line.as_bytes(), None).await {
            out.src.ack(no);
        }
    }
    out
}

#[derive(Deserialize)]
struct BatchReply {
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
    #[serde(default)]
    errors: Vec<BatchError>,
}

#[derive(Deserialize)]
struct BatchError {
    index: usize,
}

/// Which events of an `n`-event batch were not acknowledged, from the collector's answer.
pub(crate) fn batch_outcome(reply: &[u8], n: usize) -> Result<Vec<bool>, String> {
    let r: BatchReply = serde_json::from_slice(reply).map_err(|e| format!("unreadable batch answer: {e}"))?;
    let mut failed = vec![false; n];
    for e in &r.errors {
        if let Some(f) = failed.get_mut(e.index) {
            *f = true;
        }
    }
    let ok = failed.iter().filter(|f| !**f).count() as u64;
    if ok != r.accepted + r.duplicates {
        return Err(format!(
            "the batch answer says {} accepted and {} duplicates, but lists {} errors for {n} events",
            r.accepted,
            r.duplicates,
            r.errors.len()
        ));
    }
    Ok(failed)
}

async fn batch_task(
    target: Arc<Target>,
    conn: Conn,
    src: Source,
    per_request: usize,
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> TaskOut {
    let mut conn = Some(conn);
    let mut out = TaskOut::new(src);
    let mut line = String::with_capacity(700);
    let mut body = Vec::with_capacity(per_request * 600);
    let mut nos = Vec::with_capacity(per_request);
    let mut reply = Vec::new();
    while Instant::now() < deadline && take_budget(&budget, per_request as i64) {
        body.clear();
        nos.clear();
        for _ in 0..per_request {
            nos.push(out.src.next(&mut line));
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        let n = per_request as u64;
        match post(&target, &mut conn, "application/x-ndjson", &body, Some(&mut reply)).await {
            Posted::Ok(d) => {
                out.samples.push(micros(d));
                match batch_outcome(&reply, nos.len()) {
                    Ok(failed) => {
                        for (no, _) in nos.iter().zip(&failed).filter(|(_, f)| !**f) {
                            out.src.ack(*no);
                            out.acked += 1;
                        }
                        let bad = failed.iter().filter(|f| **f).count() as u64;
                        if bad > 0 {
                            out.failed(bad, None, || {
                                let text = String::from_utf8_lossy(&reply);
                                format!("batch refused {bad} of {n}: {}", &text[..text.len().min(200)])
                            });
                        }
                    }
                    Err(e) => out.failed(n, None, || e),
                }
            }
            Posted::Status(s) => out.failed(n, Some(s), || format!("HTTP {s}")),
            Posted::Failed(e) => {
                out.failed(n, None, || e);
                if conn.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out.end = Instant::now();
    body.clear();
    nos.clear();
    while let Some(no) = out.src.close_one(&mut line) {
        nos.push(no);
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    if !nos.is_empty() {
        if let Posted::Ok(_) = post(&target, &mut conn, "application/x-ndjson", &body, Some(&mut reply)).await {
            if let Ok(failed) = batch_outcome(&reply, nos.len()) {
                for (no, _) in nos.iter().zip(&failed).filter(|(_, f)| !**f) {
                    out.src.ack(*no);
                }
            }
        }
    }
    out
}

/// Which ingest shape to drive.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// One event per POST, on this many connections.
    Single { concurrency: usize },
    /// NDJSON batches of this many events, on [`BATCH_CONCURRENCY`] connections.
    Batch { per_request: usize },
}

impl Shape {
    pub(crate) fn connections(self) -> usize {
        match self {
            Shape::Single { concurrency } => concurrency,
            Shape::Batch { .. } => BATCH_CONCURRENCY,
        }
    }

    pub(crate) fn label(self) -> String {
        match self {
            Shape::Single { concurrency } => format!("single c={concurrency}"),
            Shape::Batch { per_request } => {
                format!("batch {per_request}/req c={BATCH_CONCURRENCY}")
            }
        }
    }
}

/// Runs one ingest measurement for `duration` (or until `max_events`) over `targets` (one
/// collector, or the instances of a fleet), and adds what was acknowledged to the run's ledger.
pub(crate) async fn measure(
    ctx: &mut Ctx,
    targets: &[Arc<Target>],
    shape: Shape,
    duration: Duration,
    tag: &str,
) -> Result<IngestFigures, String> {
    let conns = connect_spread(targets, shape.connections()).await?;
    let budget = Arc::new(AtomicI64::new(i64::try_from(ctx.plan.max_events).unwrap_or(i64::MAX)));
    let start = Instant::now();
    let deadline = start + duration;
    let open = match shape {
        Shape::Single { .. } => OPEN_SESSIONS_SINGLE,
        Shape::Batch { .. } => OPEN_SESSIONS_BATCH,
    };
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, (target, conn)) in conns.into_iter().enumerate() {
        let prefix = format!("bench-{}-{tag}-{i}-", ctx.run_id);
        let seed = ctx.seed ^ ((i as u64) << 32) ^ tag.len() as u64;
        let src = Source::new(prefix, seed, open, SESSION_LEN);
        let budget = Arc::clone(&budget);
        tasks.push(match shape {
            Shape::Single { .. } => tokio::spawn(single_task(target, conn, src, deadline, budget)),
            Shape::Batch { per_request } => tokio::spawn(batch_task(target, conn, src, per_request, deadline, budget)),
        });
    }
    let mut samples = Vec::new();
    let (mut acked, mut errors, mut overloaded, mut raw_bytes) = (0, 0, 0, 0);
    let mut first_error = None;
    let mut end = start;
    let before = ctx.ledger.len();
    for t in tasks {
        let out = t.await.map_err(|e| format!("an ingest task failed: {e}"))?;
        samples.extend_from_slice(&out.samples);
        acked += out.acked;
        errors += out.errors;
        overloaded += out.overloaded;
        raw_bytes += out.src.raw_bytes;
        first_error = first_error.or(out.first_error);
        end = end.max(out.end);
        out.src.ledger(&mut ctx.ledger);
    }
    let acked_total = ctx.ledger[before..].iter().map(|(_, n)| n).sum();
    let secs = end.duration_since(start).as_secs_f64().max(1e-6);
    Ok(IngestFigures {
        events_per_s: acked as f64 / secs,
        latency: Summary::of(&mut samples),
        errors,
        overloaded,
        first_error,
        raw_bytes,
        acked_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers() {
        let ok = br#"{"ok":true,"accepted":3,"duplicates":0,"errors":[]}"#;
        assert_eq!(batch_outcome(ok, 3).unwrap(), vec![false; 3]);
        let some = br#"{"ok":false,"accepted":1,"duplicates":1,"errors":[{"index":1,"error":"conflict"}]}"#;
        assert_eq!(batch_outcome(some, 3).unwrap(), vec![false, true, false]);
        assert!(batch_outcome(br#"{"ok":true,"accepted":2,"errors":[]}"#, 3).is_err());
        assert!(batch_outcome(b"not json", 3).is_err());
    }

    #[test]
    fn budget_is_shared_and_never_overdrawn() {
        let b = AtomicI64::new(2500);
        let mut taken = 0;
        while take_budget(&b, 1000) {
            taken += 1000;
        }
        assert_eq!(taken, 2000);
        assert!(!take_budget(&b, 1));
        let b = AtomicI64::new(3);
        assert!(take_budget(&b, 1) && take_budget(&b, 1) && take_budget(&b, 1));
        assert!(!take_budget(&b, 1));
    }
}
