//! Workload 4: reads on a large store: the sessions list (plain, filtered, searched), the first
//! detail page of a very long session, that session's export, comparisons of it, and the MCP
//! tools `get_session` and `compare_with_similar` on it.
//!
//! The store is loaded once: its session ids carry its size, not the run id, and a marker session
//! written after a complete load makes later runs skip loading. Its events are replayable (fixed
//! seeds and timestamps), so a load interrupted halfway and started again is acknowledged as
//! duplicates, never refused as conflicts.

use super::gen::{rfc3339_ms, Clock, SessionGen, Time};
use super::ingest::{self, Posted};
use super::resources::RssSampler;
use super::stats::{mib, micros, rss_bytes, CpuMeter, Summary};
use super::{figure, note, Ctx, Storage};
use crate::client::{Conn, Target};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 2026-01-01T00:00:00Z: the large store's history starts here, one session a minute.
const BASE_MS: i64 = 1_767_225_600_000;
const EVENTS_PER_REQUEST: usize = 1000;
const LOAD_CONNECTIONS: usize = 4;
/// A load that takes longer than this is given up (and not marked complete).
const LOAD_LIMIT: Duration = Duration::from_secs(3600);
/// Attempts per batch while loading: an incomplete store would make every read figure wrong,
/// so overload answers are retried (idempotently, the events being replayable), and counted.
const LOAD_ATTEMPTS: u32 = 5;
/// The filter and search of the list figures; the load makes both match a few sessions.
const FILTER: &str = "status=failed&agent_id=research-agent";
const SEARCH: &str = "q=customer-0042";
/// Warm-up requests before each read figure, so it measures a warm server, not the first query plan.
const WARM_UP: usize = 3;
/// Most requests per read figure, whatever the duration.
const MAX_READS: usize = 200_000;

/// The shape of the large store: ids, and how many events each session has.
pub(crate) struct Layout {
    pub(crate) prefix: String,
    sessions: u64,
    big: u64,
    per: u64,
    extra: u64,
}

impl Layout {
    /// Session 0 holds a tenth of the events (the "very long session"); the others share the
    /// rest evenly (at least 2 each: started and ended).
    pub(crate) fn new(events: u64, sessions: u64) -> Layout {
        let sessions = sessions.max(1);
        let big = if sessions == 1 { events.max(2) } else { (events / 10).max(2) };
        let rest = events.saturating_sub(big);
        let others = sessions - 1;
        let (per, extra) = if others == 0 {
            (0, 0)
        } else if rest / others < 2 {
            (2, 0)
        } else {
            (rest / others, rest % others)
        };
        Layout { prefix: format!("benchstore-{events}x{sessions}-"), sessions, big, per, extra }
    }

    pub(crate) fn len_of(&self, k: u64) -> u64 {
        if k == 0 {
            self.big
        } else {
            self.per + u64::from(k <= self.extra)
        }
    }

    pub(crate) fn total(&self) -> u64 {
        (0..self.sessions).map(|k| self.len_of(k)).sum()
    }

    pub(crate) fn id(&self, k: u64) -> String {
        format!("{}{k}", self.prefix)
    }

    fn marker(&self) -> String {
        format!("{}marker", self.prefix)
    }

    fn session(&self, k: u64) -> SessionGen {
        SessionGen::new(
            self.id(k),
            k,
            self.len_of(k),
            Time::Fixed { start_ms: BASE_MS + k as i64 * 60_000, step_ms: 100 },
            k.wrapping_mul(0x9e37_79b9) ^ 0xb5,
        )
        .with_goal_tag(format!("Reconcile invoices for customer-{:04}: ", k % 500))
    }
}

/// Hands out the store's events in batches, session after session.
struct Loader {
    layout: Layout,
    next: u64,
    current: Option<(u64, SessionGen)>,
    clock: Clock,
    line: String,
    raw_bytes: u64,
}

impl Loader {
    /// Fills `body` with up to `n` NDJSON lines and `owners` with each line's session; false
    /// when every event has been handed out.
    fn batch(&mut self, n: usize, body: &mut Vec<u8>, owners: &mut Vec<u64>) -> bool {
        body.clear();
        owners.clear();
        while owners.len() < n {
            if self.current.as_ref().is_none_or(|(_, g)| g.is_done()) {
                if self.next >= self.layout.sessions {
                    break;
                }
                self.current = Some((self.next, self.layout.session(self.next)));
                self.next += 1;
            }
            let Some((k, g)) = self.current.as_mut() else {
                break;
            };
            g.next(&mut self.clock, &mut self.line);
            self.raw_bytes += self.line.len() as u64;
            body.extend_from_slice(self.line.as_bytes());
            body.push(b'\n');
            owners.push(*k);
        }
        !owners.is_empty()
    }
}

#[derive(Default)]
struct LoadOut {
    counts: Vec<u64>,
    acked: u64,
    failed: u64,
    retries: u64,
    first_error: Option<String>,
}

async fn load_task(target: Arc<Target>, loader: Arc<Mutex<Loader>>, deadline: Instant) -> LoadOut {
    let sessions = loader.lock().map_or(0, |l| l.layout.sessions as usize);
    let mut out = LoadOut { counts: vec![0; sessions], ..LoadOut::default() };
    let (mut body, mut owners, mut reply) = (Vec::new(), Vec::new(), Vec::new());
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let more = match loader.lock() {
            Ok(mut l) => l.batch(EVENTS_PER_REQUEST, &mut body, &mut owners),
            Err(_) => false,
        };
        if !more {
            break;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let posted = ingest::post(&target, &mut conn, "application/x-ndjson", &body, Some(&mut reply)).await;
            let why = match posted {
                Posted::Ok(_) => match ingest::batch_outcome(&reply, owners.len()) {
                    Ok(failed) => {
                        for (k, f) in owners.iter().zip(&failed) {
                            if !f {
                                out.counts[*k as usize] += 1;
                                out.acked += 1;
                            }
                        }
                        let bad = failed.iter().filter(|f| **f).count() as u64;
                        out.failed += bad;
                        if bad > 0 && out.first_error.is_none() {
                            out.first_error = Some(String::from_utf8_lossy(&reply).chars().take(200).collect());
                        }
                        break;
                    }
                    Err(e) => e,
                },
                Posted::Status(s) => format!("HTTP {s}"),
                Posted::Failed(e) => e,
            };
            if attempt >= LOAD_ATTEMPTS {
                out.failed += owners.len() as u64;
                out.first_error.get_or_insert(why);
                break;
            }
            out.retries += 1;
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
    }
    out
}

#[derive(Deserialize)]
struct MarkerDetail {
    events: Vec<MarkerEvent>,
}

#[derive(Deserialize)]
struct MarkerEvent {
    payload: MarkerPayload,
}

#[derive(Deserialize)]
struct MarkerPayload {
    metadata: MarkerMeta,
}

/// What the load measured, kept in the marker so later runs can still report storage.
#[derive(Debug, Clone, Deserialize)]
struct MarkerMeta {
    events: u64,
    raw_bytes: u64,
    db_bytes_before: u64,
    db_bytes_after: u64,
    loaded_at: String,
}

async fn marker(ctx: &Ctx, layout: &Layout) -> Result<Option<MarkerMeta>, String> {
    let mut c = Conn::connect(&ctx.target).await.map_err(|e| format!("cannot connect: {e}"))?;
    let r = c.get(&format!("/sessions/{}?limit=1", layout.marker())).await.map_err(|e| e.to_string())?;
    match r.head.status {
        404 => Ok(None),
        200 => Ok(serde_json::from_slice::<MarkerDetail>(r.body)
            .ok()
            .and_then(|d| d.events.into_iter().next())
            .map(|e| e.payload.metadata)),
        s => Err(format!("GET /sessions/<marker> answered {s}")),
    }
}

async fn load(ctx: &mut Ctx, layout: Layout) -> Result<Layout, String> {
    let total = layout.total();
    let before = super::health(&ctx.target).await?.store_bytes;
    let loader = Arc::new(Mutex::new(Loader {
        layout,
        next: 0,
        current: None,
        clock: Clock::default(),
        line: String::new(),
        raw_bytes: 0,
    }));
    let cpu = CpuMeter::start(ctx.server_pid.as_slice());
    let started = Instant::now();
    let deadline = started + LOAD_LIMIT;
    let tasks: Vec<_> = (0..LOAD_CONNECTIONS)
        .map(|_| tokio::spawn(load_task(Arc::clone(&ctx.target), Arc::clone(&loader), deadline)))
        .collect();
    let mut sum = LoadOut::default();
    for t in tasks {
        let out = t.await.map_err(|e| format!("a load task failed: {e}"))?;
        if sum.counts.is_empty() {
            sum.counts = out.counts;
        } else {
            for (a, b) in sum.counts.iter_mut().zip(&out.counts) {
                *a += b;
            }
        }
        sum.acked += out.acked;
        sum.failed += out.failed;
        sum.retries += out.retries;
        sum.first_error = sum.first_error.or(out.first_error);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let loader = Arc::try_unwrap(loader)
        .map_err(|_| "the loader is still shared".to_owned())?
        .into_inner()
        .map_err(|_| "the loader panicked".to_owned())?;
    let (layout, raw_bytes) = (loader.layout, loader.raw_bytes);
    for (k, &n) in sum.counts.iter().enumerate() {
        if n > 0 {
            ctx.ledger.push((layout.id(k as u64), n));
        }
    }
    figure(&format!(
        "reads load: {} of {total} events over {} sessions in {secs:.1} s ({:.0} events/s, NDJSON {EVENTS_PER_REQUEST}/req c={LOAD_CONNECTIONS}), {} MB of JSON, errors {} (retried batches: {}){}{cpu}",
        sum.acked,
        layout.sessions,
        sum.acked as f64 / secs.max(1e-6),
        raw_bytes / 1_000_000,
        sum.failed,
        sum.retries,
        sum.first_error.map(|e| format!(" [first error: {e}]")).unwrap_or_default(),
    ));
    if sum.acked < total {
        return Err(format!(
            "the large store is incomplete ({} of {total} events acknowledged); not marking it loaded",
            sum.acked
        ));
    }
    let after = super::health(&ctx.target).await?.store_bytes;
    let meta = MarkerMeta {
        events: total,
        raw_bytes,
        db_bytes_before: before,
        db_bytes_after: after,
        loaded_at: rfc3339_ms(super::gen::now_ms()),
    };
    write_marker(ctx, &layout, &meta).await?;
    ctx.storage = Some(storage_of(&meta, "measured while loading the large store in this run"));
    Ok(layout)
}

fn storage_of(meta: &MarkerMeta, how: &str) -> Storage {
    Storage {
        db_bytes: meta.db_bytes_after.saturating_sub(meta.db_bytes_before),
        events: meta.events,
        raw_bytes: meta.raw_bytes,
        how: how.to_owned(),
    }
}

async fn write_marker(ctx: &mut Ctx, layout: &Layout, meta: &MarkerMeta) -> Result<(), String> {
    let id = layout.marker();
    let ts = rfc3339_ms(super::gen::now_ms());
    let envelope = |seq: u32, kind: &str| {
        format!(
            r#"{{"spec":"aop/1.0","session_id":"{id}","parent_session_id":null,"agent_id":"aop-bench","sequence":{seq},"timestamp":"{ts}","type":"{kind}","payload":"#
        )
    };
    let body = format!(
        "{}{{\"goal\":\"aop bench large store: loaded completely\",\"metadata\":{{\"events\":{},\"sessions\":{},\"raw_bytes\":{},\"db_bytes_before\":{},\"db_bytes_after\":{},\"loaded_at\":\"{}\"}}}}}}\n{}{{\"outcome\":\"completed\"}}}}\n",
        envelope(1, "session.started"),
        meta.events,
        layout.sessions,
        meta.raw_bytes,
        meta.db_bytes_before,
        meta.db_bytes_after,
        meta.loaded_at,
        envelope(2, "session.ended"),
    );
    let mut conn = None;
    let mut reply = Vec::new();
    match ingest::post(&ctx.target, &mut conn, "application/x-ndjson", body.as_bytes(), Some(&mut reply)).await {
        Posted::Ok(_) if ingest::batch_outcome(&reply, 2).is_ok_and(|f| !f.contains(&true)) => {
            ctx.ledger.push((id, 2));
            Ok(())
        }
        _ => Err(format!("could not write the marker session: {}", String::from_utf8_lossy(&reply))),
    }
}

/// Sequential GETs of `path` for `duration`: latency per request, at concurrency 1.
async fn timed_gets(ctx: &Ctx, label: &str, path: &str, duration: Duration) -> Result<(), String> {
    timed(ctx, label, &Ask { method: "GET", path, body: None, extra: &[] }, |_| true, duration).await
}

/// One request a read figure repeats.
struct Ask<'a> {
    method: &'a str,
    path: &'a str,
    body: Option<&'a [u8]>,
    extra: &'a [(&'a str, &'a str)],
}

/// Sequential requests for `duration`: latency per request, at concurrency 1. An answer counts
/// when it is a 200 and `good` takes its body, read into the connection's reused buffer.
async fn timed(
    ctx: &Ctx,
    label: &str,
    ask: &Ask<'_>,
    good: impl Fn(&[u8]) -> bool,
    duration: Duration,
) -> Result<(), String> {
    let content_type = ask.body.map(|_| "application/json");
    let body = ask.body.unwrap_or_default();
    let mut conn = Conn::connect(&ctx.target).await.map_err(|e| format!("cannot connect: {e}"))?;
    for _ in 0..WARM_UP {
        let _ = conn.request_with(ask.method, ask.path, content_type, body, ask.extra).await;
        if conn.closed {
            conn = Conn::connect(&ctx.target).await.map_err(|e| e.to_string())?;
        }
    }
    let mut samples = Vec::new();
    let (mut errors, mut bytes, mut first_error) = (0u64, 0u64, None);
    let cpu = CpuMeter::start(ctx.server_pid.as_slice());
    let started = Instant::now();
    let deadline = started + duration;
    while Instant::now() < deadline && samples.len() + (errors as usize) < MAX_READS {
        let t = Instant::now();
        let asked = conn.request_with(ask.method, ask.path, content_type, body, ask.extra);
        match tokio::time::timeout(ingest::REQUEST_TIMEOUT, asked).await {
            Ok(Ok(r)) if r.head.status == 200 && good(r.body) => {
                samples.push(micros(t.elapsed()));
                bytes += r.body.len() as u64;
            }
            Ok(Ok(r)) => {
                let (status, answer) = (r.head.status, r.body);
                errors += 1;
                first_error.get_or_insert_with(|| {
                    format!("HTTP {status}: {}", String::from_utf8_lossy(answer).chars().take(200).collect::<String>())
                });
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                conn.closed = true;
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert_with(|| "timed out".to_owned());
                conn.closed = true;
            }
        }
        if conn.closed {
            conn = Conn::connect(&ctx.target).await.map_err(|e| e.to_string())?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let n = samples.len() as u64;
    figure(&format!(
        "reads {label}: {}, {:.0} req/s, {} bytes/answer, errors {errors}{}{cpu}",
        Summary::of(&mut samples).ms(),
        n as f64 / secs.max(1e-6),
        bytes / n.max(1),
        first_error.map(|e| format!(" [first error: {e}]")).unwrap_or_default(),
    ));
    Ok(())
}

/// Sequential calls of an MCP tool on `/mcp` (stateless, JSON answers, as any client sends
/// them): latency per call. A call whose result is an error counts as an error.
async fn timed_tool(
    ctx: &Ctx,
    label: &str,
    tool: &str,
    args: serde_json::Value,
    duration: Duration,
) -> Result<(), String> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args},
    })
    .to_string();
    let extra = [("Accept", "application/json, text/event-stream"), ("MCP-Protocol-Version", "2025-11-25")];
    let ask = Ask { method: "POST", path: "/mcp", body: Some(body.as_bytes()), extra: &extra };
    let good = |answer: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(answer)
            .ok()
            .is_some_and(|v| v["result"]["isError"] == serde_json::Value::Bool(false))
    };
    timed(ctx, label, &ask, good, duration).await
}

/// Repeated exports of the long session: lines per second, and the server's RSS meanwhile.
async fn exports(ctx: &Ctx, id: &str, expected: u64, duration: Duration) -> Result<(), String> {
    let path = format!("/sessions/{id}/export");
    let mut conn =
        Conn::connect_with_buffer(&ctx.target, 256 * 1024).await.map_err(|e| format!("cannot connect: {e}"))?;
    let sampler = ctx.server_pid.map(|pid| RssSampler::start(pid, Duration::from_millis(5)));
    let cpu = CpuMeter::start(ctx.server_pid.as_slice());
    let started = Instant::now();
    let deadline = started + duration;
    let (mut lines, mut bytes, mut errors, mut runs) = (0u64, 0u64, 0u64, 0u64);
    let mut samples = Vec::new();
    let mut first_error = None;
    // Growth during the first export may be one-off (a reader connection and its page cache);
    // "flat" is about the exports after it.
    let mut after_first = None;
    // At least one export, however short the duration; at most 50.
    while runs == 0 || (Instant::now() < deadline && runs < 50) {
        runs += 1;
        let t = Instant::now();
        let (mut n, mut b) = (0u64, 0u64);
        let result = tokio::time::timeout(Duration::from_secs(300), async {
            conn.send("GET", &path, None, &[], &[]).await?;
            let head = conn.read_head().await?;
            if head.status != 200 {
                conn.read_body_with(&head, &mut |_| {}).await?;
                return Ok(Some(head.status));
            }
            conn.read_body_with(&head, &mut |chunk| {
                n += chunk.iter().filter(|&&c| c == b'\n').count() as u64;
                b += chunk.len() as u64;
            })
            .await?;
            Ok::<_, std::io::Error>(None)
        })
        .await;
        match result {
            Ok(Ok(None)) if n == expected => {
                samples.push(micros(t.elapsed()));
                lines += n;
                bytes += b;
            }
            Ok(Ok(None)) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{n} lines, expected {expected}"));
            }
            Ok(Ok(Some(s))) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("HTTP {s}"));
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                conn.closed = true;
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert_with(|| "timed out".into());
                conn.closed = true;
            }
        }
        if conn.closed {
            conn = Conn::connect_with_buffer(&ctx.target, 256 * 1024).await.map_err(|e| e.to_string())?;
        }
        if runs == 1 {
            after_first = ctx.server_pid.and_then(rss_bytes);
        }
    }
    let secs: f64 = samples.iter().map(|&us| f64::from(us) / 1e6).sum();
    let cpu = cpu.finish();
    let rss = match sampler {
        Some(s) => {
            let r = s.stop().await;
            let after = after_first.unwrap_or(r.first);
            format!(
                ", server RSS {} before, {} after the first export, peak {} (+{} over all, +{} after the first)",
                mib(r.first),
                mib(after),
                mib(r.peak),
                mib(r.peak.saturating_sub(r.first)),
                mib(r.peak.saturating_sub(after))
            )
        }
        None => String::new(),
    };
    figure(&format!(
        "reads export ({expected}-event session): {:.0} lines/s, {:.0} MB/s, per export {}, {runs} exports, errors {errors}{rss}{}{cpu}",
        lines as f64 / secs.max(1e-6),
        bytes as f64 / 1e6 / secs.max(1e-6),
        Summary::of(&mut samples).ms(),
        first_error.map(|e| format!(" [first error: {e}]")).unwrap_or_default(),
    ));
    Ok(())
}

pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), String> {
    let layout = Layout::new(ctx.plan.large_events, ctx.plan.large_sessions);
    let layout = match marker(ctx, &layout).await? {
        Some(meta) => {
            figure(&format!(
                "reads load: skipped, the store already holds {} ({} events, loaded {})",
                layout.prefix, meta.events, meta.loaded_at
            ));
            ctx.storage = Some(storage_of(&meta, "measured when the large store was loaded"));
            layout
        }
        None => load(ctx, layout).await?,
    };
    let d = ctx.plan.duration;
    timed_gets(ctx, "list (GET /sessions, first page of 100)", "/sessions", d).await?;
    timed_gets(ctx, &format!("list filtered (GET /sessions?{FILTER})"), &format!("/sessions?{FILTER}"), d).await?;
    timed_gets(ctx, &format!("list search (GET /sessions?{SEARCH})"), &format!("/sessions?{SEARCH}"), d).await?;
    let big = layout.id(0);
    let big_len = layout.len_of(0);
    timed_gets(
        ctx,
        &format!("detail (GET /sessions/:id, first page of a {big_len}-event session)"),
        &format!("/sessions/{big}"),
        d,
    )
    .await?;
    if ctx.server_pid.is_none() {
        note("reads: the collector's pid is not readable here; export memory is not measured");
    }
    exports(ctx, &big, big_len, d).await?;
    // The long session against itself costs what every comparison pays (reading, parsing and
    // answering both sides); against a short one, the aligner's windows run across all of it.
    timed_gets(
        ctx,
        &format!("compare (GET /sessions/:id/compare/:other, the {big_len}-event session with itself)"),
        &format!("/sessions/{big}/compare/{big}"),
        d,
    )
    .await?;
    let other = layout.id(1);
    timed_gets(
        ctx,
        &format!("compare (the {big_len}-event session with a {}-event one)", layout.len_of(1)),
        &format!("/sessions/{big}/compare/{other}"),
        d,
    )
    .await?;
    // What an agent asking about a run waits for: the MCP tools on the same store.
    timed_tool(
        ctx,
        &format!("MCP get_session (tools/call on /mcp, the {big_len}-event session, its first 200 steps)"),
        "get_session",
        serde_json::json!({ "id": big }),
        d,
    )
    .await?;
    timed_tool(
        ctx,
        &format!("MCP compare_with_similar (tools/call on /mcp, the {big_len}-event session)"),
        "compare_with_similar",
        serde_json::json!({ "id": big }),
        d,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_adds_up() {
        for (events, sessions) in [(1_000_000, 10_000), (20_000, 200), (1000, 1), (100, 100), (7, 3)] {
            let l = Layout::new(events, sessions);
            let total = l.total();
            assert!(total >= events.min(2 * sessions), "{events}x{sessions}: {total}");
            if events >= 2 * sessions + events / 10 {
                assert_eq!(total, events, "{events}x{sessions}");
            }
            assert!((0..sessions).all(|k| l.len_of(k) >= 2));
        }
        let l = Layout::new(1_000_000, 10_000);
        assert_eq!(l.len_of(0), 100_000);
        assert_eq!(l.id(0), "benchstore-1000000x10000-0");
    }

    #[test]
    fn loader_hands_out_every_event_once() {
        let layout = Layout::new(2_500, 20);
        let total = layout.total();
        let mut loader =
            Loader { layout, next: 0, current: None, clock: Clock::default(), line: String::new(), raw_bytes: 0 };
        let (mut body, mut owners) = (Vec::new(), Vec::new());
        let mut counts = [0u64; 20];
        let mut batches = 0;
        while loader.batch(1000, &mut body, &mut owners) {
            batches += 1;
            let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
            assert_eq!(lines.len(), owners.len());
            for (line, k) in lines.iter().zip(&owners) {
                let ev = crate::model::Event::parse(std::str::from_utf8(line).unwrap()).unwrap();
                assert_eq!(ev.session_id, loader.layout.id(*k));
                counts[*k as usize] += 1;
            }
        }
        assert_eq!(batches, 3);
        assert_eq!(counts.iter().sum::<u64>(), total);
        assert!((0..20).all(|k| counts[k as usize] == loader.layout.len_of(k)));
    }
}
