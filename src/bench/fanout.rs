//! Workload 3: N subscribers on `/stream` while events are ingested at a fixed rate.
//!
//! Every event of the phase is identified by an index `i`: session `i % SESSIONS`, sequence
//! `i / SESSIONS + 1`, so a subscriber recovers it from the `session_id` and `sequence` of the
//! frame without parsing JSON, and checks it off a bitmap. The ingest side stores the send and
//! ack times of each index; delivery latency is receipt minus ack (the figure asked for). The hub
//! publishes on commit, concurrently with the HTTP answer, so a frame may arrive before its ack:
//! that delivery counts as 0. Receipt minus send is reported too: it includes the commit, and
//! does not depend on which of the two sockets the (single-threaded) client happens to read first.
//! A subscriber that is sent `event: overflow` is cut off by the collector and not reconnected:
//! what it did not receive counts as missed.

use super::gen::{Clock, SessionGen, Time};
use super::ingest::{self, Posted, Shape};
use super::stats::{micros, Histogram, Summary};
use super::{figure, note, Ctx};
use crate::client::{find, ChunkedDecoder, Conn, SseParser, Target};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Sessions the fixed-rate events are spread over; a multiple of [`CONNECTIONS`].
const SESSIONS: u64 = 128;
/// Ingest connections of the fixed-rate phase; each owns `SESSIONS / CONNECTIONS` sessions.
/// Each sends its share of the schedule one request at a time, so the rate holds as long as
/// an ack takes less than `CONNECTIONS / rate` (12.8 ms at 5000 events/s); beyond that the
/// achieved rate, which is printed, falls short.
const CONNECTIONS: u64 = 64;
/// After the last ack, how long subscribers get to receive what is still in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// Concurrency of the saturating phase (the same as the single c=64 figure it is compared to).
const SATURATING: usize = 64;

/// What every subscriber of one phase shares.
struct Shared {
    epoch: Instant,
    /// `"bench-<run>-fan-"`: frames of other sessions are counted, not checked off.
    prefix: Vec<u8>,
    /// Ack time of each index in ns since `epoch` (0: not acknowledged).
    acks: Vec<AtomicU64>,
    /// Time each index's request was written, in ns since `epoch`.
    sent: Vec<AtomicU64>,
    /// Whether subscribers identify events (phase A) or only count frames (phase B).
    track: bool,
}

#[derive(Default)]
struct Progress {
    /// Distinct in-range events received.
    received: AtomicU64,
    /// The stream ended (overflow, error, or the collector closed it).
    finished: AtomicBool,
}

pub(super) struct SubResult {
    seen: Vec<u64>,
    /// Receipt minus ack (the figure asked for).
    pub(super) hist: Histogram,
    /// Receipt minus send: includes the commit, and is immune to the ack/frame race.
    pub(super) from_send: Histogram,
    frames: u64,
    pub(super) overflow: bool,
    pub(super) error: Option<String>,
}

/// The index of a fan-out event from its JSON, or `None` for any other event.
pub(crate) fn decode_index(data: &[u8], prefix: &[u8], sessions: u64) -> Option<u64> {
    const SID: &[u8] = b"\"session_id\":\"";
    const SEQ: &[u8] = b"\"sequence\":";
    let at = find(data, SID)? + SID.len();
    let rest = data[at..].strip_prefix(prefix)?;
    let (k, used) = leading_u64(rest)?;
    if rest.get(used) != Some(&b'"') || k >= sessions {
        return None;
    }
    let rest = &rest[used..];
    let at = find(rest, SEQ)? + SEQ.len();
    let (seq, _) = leading_u64(&rest[at..])?;
    Some(seq.checked_sub(1)? * sessions + k)
}

fn leading_u64(b: &[u8]) -> Option<(u64, usize)> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 18 {
        return None;
    }
    let v = std::str::from_utf8(&b[..n]).ok()?.parse().ok()?;
    Some((v, n))
}

async fn subscribe(target: &Arc<Target>) -> Result<Conn, String> {
    // Small buffers: a thousand of them are held at once, and frames are ~600 bytes.
    let mut c = tokio::time::timeout(ingest::REQUEST_TIMEOUT, Conn::connect_with_buffer(target, 16 * 1024))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let head = tokio::time::timeout(ingest::REQUEST_TIMEOUT, async {
        c.send("GET", "/stream", None, &[], &[("Accept", "text/event-stream")]).await?;
        c.read_head().await
    })
    .await
    .map_err(|_| "no answer to GET /stream".to_owned())?
    .map_err(|e| e.to_string())?;
    if head.status != 200 {
        return Err(format!("GET /stream answered {}", head.status));
    }
    Ok(c)
}

async fn subscriber(
    mut conn: Conn,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let total = shared.acks.len() as u64;
    let mut r = SubResult {
        seen: vec![0; if shared.track { total.div_ceil(64) as usize } else { 0 }],
        hist: Histogram::default(),
        from_send: Histogram::default(),
        frames: 0,
        overflow: false,
        error: None,
    };
    let mut received = 0u64;
    let mut dec = ChunkedDecoder::default();
    let mut sse = SseParser::default();
    loop {
        // One clock read per read(): every frame of one read arrived at the same moment.
        let now = shared.epoch.elapsed().as_nanos() as u64;
        let bytes = conn.take_buffered();
        let fed = dec.feed(bytes, &mut |chunk| {
            sse.feed(chunk, &mut |f| {
                if let Some(ev) = f.event {
                    r.overflow |= ev == b"overflow";
                    return;
                }
                r.frames += 1;
                if !shared.track {
                    return;
                }
                let Some(i) = decode_index(f.data, &shared.prefix, SESSIONS) else {
                    return;
                };
                if i >= total {
                    return;
                }
                let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
                if r.seen[word] & bit != 0 {
                    return;
                }
                r.seen[word] |= bit;
                received += 1;
                let acked = shared.acks[i as usize].load(Ordering::Relaxed);
                // Not acknowledged yet: the frame beat the HTTP answer.
                let latency_us = if acked == 0 { 0 } else { now.saturating_sub(acked) / 1000 };
                r.hist.record(latency_us);
                let sent = shared.sent[i as usize].load(Ordering::Relaxed);
                r.from_send.record(now.saturating_sub(sent) / 1000);
            })
        });
        progress.received.store(received, Ordering::Relaxed);
        match fed {
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
            Ok(_) if dec.is_done() || r.overflow => break,
            Ok(_) => {}
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            res = conn.fill() => if let Err(e) = res {
                if !r.overflow {
                    r.error = Some(e.to_string());
                }
                break;
            },
        }
    }
    progress.finished.store(true, Ordering::Relaxed);
    r
}

/// Subscribers of one phase.
struct Crowd {
    tasks: Vec<tokio::task::JoinHandle<SubResult>>,
    progress: Vec<Arc<Progress>>,
    stop: watch::Sender<bool>,
}

async fn gather(target: &Arc<Target>, n: usize, shared: &Arc<Shared>) -> Crowd {
    let (stop, stop_rx) = watch::channel(false);
    let mut crowd = Crowd { tasks: Vec::with_capacity(n), progress: Vec::with_capacity(n), stop };
    for i in 0..n {
        match subscribe(target).await {
            Ok(conn) => {
                let p = Arc::new(Progress::default());
                crowd.progress.push(Arc::clone(&p));
                crowd.tasks.push(tokio::spawn(subscriber(conn, Arc::clone(shared), p, stop_rx.clone())));
            }
            Err(e) => {
                note(&format!(
                    "subscriber {} of {n} could not connect to {}/stream ({e}); going on with {i}",
                    i + 1,
                    target.url
                ));
                break;
            }
        }
    }
    crowd
}

impl Crowd {
    async fn finish(self) -> Vec<SubResult> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    }
}

struct FixedRateOut {
    samples: Vec<u32>,
    acked: u64,
    errors: u64,
    overloaded: u64,
    end: Instant,
    /// `(session id, acknowledged events)`, closing events included.
    ledger: Vec<(String, u64)>,
}

/// Connection `c` of the fixed-rate ingest: indices `c, c + CONNECTIONS, …`, each sent at its
/// scheduled time `t0 + i / rate` (or at once when behind: the schedule does not slip).
#[allow(clippy::too_many_arguments)]
async fn fixed_rate(
    ctx_target: Arc<Target>,
    conn: Conn,
    shared: Arc<Shared>,
    c: u64,
    rate: f64,
    t0: Instant,
    hard_end: Instant,
    prefix: String,
    seed: u64,
) -> FixedRateOut {
    let total = shared.acks.len() as u64;
    let per_session = total.div_ceil(SESSIONS);
    let owned = SESSIONS / CONNECTIONS;
    let mut gens: Vec<SessionGen> = (0..owned)
        .map(|j| {
            let k = c + j * CONNECTIONS;
            SessionGen::new(format!("{prefix}{k}"), k, per_session + 1, Time::Now, seed ^ k)
        })
        .collect();
    let mut counts = vec![0u64; owned as usize];
    let mut out = FixedRateOut { samples: Vec::new(), acked: 0, errors: 0, overloaded: 0, end: t0, ledger: Vec::new() };
    let mut conn = Some(conn);
    let (mut clock, mut line) = (Clock::default(), String::with_capacity(700));
    let mut i = c;
    while i < total {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= hard_end {
            break;
        }
        let k = i % SESSIONS;
        let j = (k / CONNECTIONS) as usize;
        debug_assert_eq!(gens[j].next_seq, i / SESSIONS + 1);
        gens[j].next(&mut clock, &mut line);
        let sent = shared.epoch.elapsed().as_nanos() as u64;
        shared.sent[i as usize].store(sent, Ordering::Relaxed);
        match ingest::post(&ctx_target, &mut conn, "application/json", line.as_bytes(), None).await {
            Posted::Ok(d) => {
                let at = shared.epoch.elapsed().as_nanos() as u64;
                shared.acks[i as usize].store(at.max(1), Ordering::Relaxed);
                out.samples.push(micros(d));
                out.acked += 1;
                counts[j] += 1;
            }
            Posted::Status(s) => {
                out.errors += 1;
                out.overloaded += u64::from(s == 503 || s == 429);
            }
            Posted::Failed(_) => out.errors += 1,
        }
        i += CONNECTIONS;
    }
    out.end = Instant::now();
    // Unmeasured: end the sessions, past the last sequence of the phase (a gap is allowed), so
    // the closing events map to indices >= total, which subscribers ignore, even when the phase
    // was cut short.
    for (j, g) in gens.iter_mut().enumerate() {
        if g.next_seq == 1 {
            continue; // never started
        }
        g.next_seq = g.next_seq.max(per_session + 1);
        g.end_now();
        while !g.is_done() {
            g.next(&mut clock, &mut line);
            let posted = ingest::post(&ctx_target, &mut conn, "application/json", line.as_bytes(), None).await;
            if matches!(posted, Posted::Ok(_)) {
                counts[j] += 1;
            }
        }
    }
    for (g, n) in gens.iter().zip(counts) {
        if n > 0 {
            out.ledger.push((g.id.clone(), n));
        }
    }
    out
}

/// What one fixed-rate phase measured.
pub(super) struct FixedRun {
    shared: Arc<Shared>,
    /// Subscribers that connected.
    pub(super) connected: usize,
    /// What each of them saw (one fewer for each that failed to finish).
    pub(super) subscribers: Vec<SubResult>,
    /// Events of the schedule acknowledged (the unmeasured closing events are not).
    pub(super) acked: u64,
    pub(super) errors: u64,
    pub(super) overloaded: u64,
    /// Ack latencies, µs.
    pub(super) samples: Vec<u32>,
    /// Acknowledged events per second over the schedule.
    pub(super) ingest_rate: f64,
    /// The phase's CPU line (drain included).
    pub(super) cpu: String,
}

impl FixedRun {
    /// Events acknowledged that the subscriber never received.
    pub(super) fn missed(&self, r: &SubResult) -> u64 {
        let acks = self.shared.acks.iter().enumerate();
        acks.filter(|(i, a)| a.load(Ordering::Relaxed) != 0 && r.seen[i / 64] & (1 << (i % 64)) == 0).count() as u64
    }
}

/// `subscribers` on `listen`'s `/stream` while `rate` events/s are posted to `post` for the
/// plan's duration, then up to [`DRAIN`] for what is still in flight. `post` and `listen` differ
/// when the delivery from one fleet instance to another is measured. Adds what was acknowledged
/// to the ledger; the CPU of `pids` is reported.
pub(super) async fn fixed_rate_phase(
    ctx: &mut Ctx,
    post: &Arc<Target>,
    listen: &Arc<Target>,
    subscribers: usize,
    rate: f64,
    prefix: String,
    pids: &[u32],
) -> Result<FixedRun, String> {
    let d = ctx.plan.duration;
    let total = ((rate * d.as_secs_f64()) as u64).clamp(1, ctx.plan.max_events);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        prefix: prefix.clone().into_bytes(),
        acks: (0..total).map(|_| AtomicU64::new(0)).collect(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        track: true,
    });

    let crowd = gather(listen, subscribers, &shared).await;
    let connected = crowd.tasks.len();
    // Without a subscriber there is nothing to measure: say so now rather than after the schedule.
    if subscribers > 0 && connected == 0 {
        return Err(format!("no subscriber could connect to {}/stream", listen.url));
    }
    let conns = ingest::connect_all(post, CONNECTIONS as usize).await?;
    let cpu = super::stats::CpuMeter::start(pids);
    let t0 = Instant::now();
    // A collector that cannot keep the rate still ends the phase in bounded time.
    let hard_end = t0 + d * 2 + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(fixed_rate(
            Arc::clone(post),
            conn,
            Arc::clone(&shared),
            c as u64,
            rate,
            t0,
            hard_end,
            prefix.clone(),
            ctx.seed,
        )));
    }
    let (mut samples, mut acked, mut errors, mut overloaded, mut end) = (Vec::new(), 0, 0, 0, t0);
    for t in tasks {
        let out = t.await.map_err(|e| format!("a fixed-rate ingest task failed: {e}"))?;
        samples.extend_from_slice(&out.samples);
        acked += out.acked;
        errors += out.errors;
        overloaded += out.overloaded;
        end = end.max(out.end);
        ctx.ledger.extend(out.ledger);
    }
    let ingest_rate = acked as f64 / end.duration_since(t0).as_secs_f64().max(1e-6);
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until
        && !crowd
            .progress
            .iter()
            .all(|p| p.finished.load(Ordering::Relaxed) || p.received.load(Ordering::Relaxed) >= acked)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu.finish();
    let results = crowd.finish().await;
    Ok(FixedRun { shared, connected, subscribers: results, acked, errors, overloaded, samples, ingest_rate, cpu })
}

/// Phase A (fixed rate: delivery and misses) and phase B (saturating ingest with the same number
/// of subscribers attached, against the same without), on the first instance only.
pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), String> {
    let n = ctx.plan.subscribers;
    let rate = ctx.plan.rate.max(1.0);
    let d = ctx.plan.duration;
    let first = Arc::clone(&ctx.target);
    let pids: Vec<u32> = ctx.server_pid.into_iter().collect();
    let prefix = format!("bench-{}-fan-", ctx.run_id);
    let mut phase = fixed_rate_phase(ctx, &first, &first, n, rate, prefix, &pids).await?;
    let (mut hist, mut from_send) = (Histogram::default(), Histogram::default());
    let (mut missed, mut overflows, mut broken) = (0u64, 0, 0);
    let mut first_error = None;
    for r in &phase.subscribers {
        hist.merge(&r.hist);
        from_send.merge(&r.from_send);
        overflows += usize::from(r.overflow);
        if let Some(e) = &r.error {
            broken += 1;
            first_error.get_or_insert_with(|| e.clone());
        }
        missed += phase.missed(r);
    }
    let acked = phase.acked;
    // Subscribers that never connected missed everything.
    missed += (n - phase.subscribers.len()) as u64 * acked;
    let delivery = hist.summary();
    let mut line = format!(
        "fanout {n} subscribers at {rate:.0} events/s: delivery after ack {}, missed {missed} of {} (overflows {overflows}, subscribers connected {}, broken {broken}), delivery after send {}, ingest {:.0} events/s, ack {}, errors {} (503: {}){}",
        delivery_ms(&delivery),
        acked * n as u64,
        phase.connected,
        delivery_ms(&from_send.summary()),
        phase.ingest_rate,
        Summary::of(&mut phase.samples).ms(),
        phase.errors,
        phase.overloaded,
        phase.cpu,
    );
    if let Some(e) = first_error {
        line.push_str(&format!(" [first stream error: {e}]"));
    }
    figure(&line);

    // Phase B: the same number of subscribers, counting frames only, under saturating ingest.
    let baseline = match ctx.single64 {
        Some(b) => b,
        None => {
            let cpu = super::stats::CpuMeter::start(&pids);
            let f =
                ingest::measure(ctx, &[Arc::clone(&first)], Shape::Single { concurrency: SATURATING }, d, "fanbase")
                    .await?;
            figure(&format!("fanout baseline single c={SATURATING} without subscribers: {}{}", f.line(), cpu.finish()));
            f.events_per_s
        }
    };
    let count_only = Arc::new(Shared {
        epoch: Instant::now(),
        prefix: Vec::new(),
        acks: Vec::new(),
        sent: Vec::new(),
        track: false,
    });
    let crowd = gather(&first, n, &count_only).await;
    let connected = crowd.tasks.len();
    let cpu = super::stats::CpuMeter::start(&pids);
    let started = Instant::now();
    let f = ingest::measure(ctx, &[first], Shape::Single { concurrency: SATURATING }, d, "fanload").await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let results = crowd.finish().await;
    let frames: u64 = results.iter().map(|r| r.frames).sum();
    let overflows = results.iter().filter(|r| r.overflow).count();
    let change = (f.events_per_s / baseline.max(1e-9) - 1.0) * 100.0;
    figure(&format!(
        "fanout ingest single c={SATURATING} with {connected} subscribers: {} ({change:+.0}% vs {baseline:.0} events/s without), frames delivered {:.0}/s, subscribers cut off (overflow) {overflows} of {connected}{cpu}",
        f.line(),
        frames as f64 / secs.max(1e-6),
    ));
    Ok(())
}

pub(super) fn delivery_ms(s: &Summary) -> String {
    if s.count == 0 {
        return "no deliveries".into();
    }
    format!("p50 {} ms p99 {} ms max {} ms", super::stats::ms(s.p50), super::stats::ms(s.p99), super::stats::ms(s.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_index_from_the_event() {
        let prefix = b"bench-r1-fan-";
        let ev = br#"{"spec":"aop/1.0","session_id":"bench-r1-fan-5","parent_session_id":null,"agent_id":"planner","sequence":3,"timestamp":"2026-01-01T00:00:00.000Z","type":"cognition.thought","payload":{"content":"x"}}"#;
        assert_eq!(decode_index(ev, prefix, 64), Some(2 * 64 + 5));
        let cases: &[&[u8]] = &[
            br#"{"session_id":"bench-r2-fan-5","sequence":3}"#,
            br#"{"session_id":"bench-r1-fan-5x","sequence":3}"#,
            br#"{"session_id":"bench-r1-fan-64","sequence":3}"#,
            br#"{"session_id":"bench-r1-fan-5","sequence":0}"#,
            br#"{"session_id":"bench-r1-fan-","sequence":1}"#,
            br#"{"alert":true}"#,
        ];
        for c in cases {
            assert_eq!(decode_index(c, prefix, 64), None, "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn generated_fanout_events_decode_to_their_index() {
        let prefix = "bench-r1-fan-";
        let mut clock = Clock::default();
        let mut line = String::new();
        for k in [0u64, 17, 63] {
            let mut g = SessionGen::new(format!("{prefix}{k}"), k, 10, Time::Now, k);
            for seq in 1..=10u64 {
                g.next(&mut clock, &mut line);
                assert_eq!(decode_index(line.as_bytes(), prefix.as_bytes(), SESSIONS), Some((seq - 1) * SESSIONS + k));
            }
        }
    }
}
