//! The guard under load (`GUARD.md`, "Speed"): `POST /guard` at a fixed rate while single events
//! are ingested at c=16, the latency of each answer measured from the moment it was due (open
//! loop: a slow answer delays the next call on its connection, and that delay counts), beside
//! the ingest figure of the same seconds.
//!
//! The calls go to sessions made for it first, each with a few tool calls of one input, so the
//! answers cover what agents meet: plain allows, and calls that would complete a loop (asks,
//! which the collector also records).

use super::ingest::{self, post_to, Posted, Shape};
use super::stats::{micros, Summary};
use super::Ctx;
use crate::client::{Conn, Target};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Guard calls per second, the rate the goal is stated at.
pub(crate) const RATE: f64 = 1000.0;
/// Connections the calls are spread over (an agent asks on its own connection).
const CONNECTIONS: usize = 8;
/// Sessions asked about.
const SESSIONS: usize = 64;
/// Ingest concurrency beside the guard calls.
pub(crate) const INGEST_CONCURRENCY: usize = 16;

pub(crate) struct GuardFigures {
    pub(crate) calls_per_s: f64,
    pub(crate) latency: Summary,
    pub(crate) asks: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

/// Sessions with three identical calls each: asking about a fourth is a loop's last call.
async fn prepare(ctx: &mut Ctx) -> Result<Vec<String>, String> {
    let mut conn = Some(Conn::connect(&ctx.target).await.map_err(|e| format!("cannot connect: {e}"))?);
    let mut ids = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let id = format!("bench-{}-guard-{i}", ctx.run_id);
        let mut lines = Vec::new();
        let ev = |seq: i64, kind: &str, payload: serde_json::Value| {
            json!({"spec": "aop/1.0", "session_id": id, "agent_id": "bench-guarded", "sequence": seq,
                   "timestamp": format!("2026-01-01T00:00:{:02}.000Z", seq), "type": kind, "payload": payload})
            .to_string()
        };
        lines.push(ev(1, "session.started", json!({"goal": "be asked about"})));
        for k in 0..3 {
            lines.push(ev(2 + 2 * k, "operation.tool_start", json!({"tool": "Bash", "input": {"command": "make"}})));
            lines.push(ev(3 + 2 * k, "operation.tool_end", json!({"tool": "Bash", "success": true})));
        }
        let body = lines.join("\n");
        match post_to(&ctx.target, &mut conn, "/events", "application/x-ndjson", body.as_bytes(), None).await {
            // Not in the run's ledger: the asks recorded in these sessions add events to them.
            Posted::Ok(_) => {}
            Posted::Status(s) => return Err(format!("preparing the guarded sessions: HTTP {s}")),
            Posted::Failed(e) => return Err(format!("preparing the guarded sessions: {e}")),
        }
        ids.push(id);
    }
    Ok(ids)
}

async fn caller(
    target: Arc<Target>,
    ids: Arc<Vec<String>>,
    nth: usize,
    start: Instant,
    deadline: Instant,
) -> (Vec<u32>, u64, u64, Option<String>) {
    let mut conn = None;
    let (mut samples, mut asks, mut errors, mut first_error) = (Vec::new(), 0, 0, None);
    let every = Duration::from_secs_f64(CONNECTIONS as f64 / RATE);
    let mut due = start + every.mul_f64(nth as f64 / CONNECTIONS as f64);
    let mut reply = Vec::new();
    let mut k = nth;
    while due < deadline {
        tokio::time::sleep_until(due.into()).await;
        let session = &ids[k % ids.len()];
        // One call in eight is the loop's fourth; the others are new commands.
        let command = if k.is_multiple_of(8) { "make".to_owned() } else { format!("ls {k}") };
        let body =
            json!({"session_id": session, "agent_id": "bench-guarded", "tool": "Bash", "input": {"command": command}})
                .to_string();
        match post_to(&target, &mut conn, "/guard", "application/json", body.as_bytes(), Some(&mut reply)).await {
            Posted::Ok(_) => {
                samples.push(micros(due.elapsed()));
                if reply.starts_with(b"{\"decision\":\"ask\"") {
                    asks += 1;
                }
            }
            Posted::Status(s) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("HTTP {s}"));
            }
            Posted::Failed(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        k += CONNECTIONS;
        due += every;
    }
    (samples, asks, errors, first_error)
}

/// The guard's figure, and the ingest figure measured in the same seconds.
pub(crate) async fn measure(
    ctx: &mut Ctx,
    duration: Duration,
) -> Result<(GuardFigures, ingest::IngestFigures), String> {
    let ids = Arc::new(prepare(ctx).await?);
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + duration;
    let callers: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(caller(Arc::clone(&ctx.target), Arc::clone(&ids), i, start, deadline)))
        .collect();
    let targets = vec![Arc::clone(&ctx.target)];
    let ingest =
        ingest::measure(ctx, &targets, Shape::Single { concurrency: INGEST_CONCURRENCY }, duration, "guard").await;
    let (mut samples, mut asks, mut errors, mut first_error) = (Vec::new(), 0, 0, None);
    for c in callers {
        let (s, a, e, f) = c.await.map_err(|e| format!("a guard caller failed: {e}"))?;
        samples.extend(s);
        asks += a;
        errors += e;
        first_error = first_error.or(f);
    }
    let calls = samples.len() as f64;
    let secs = start.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(1e-6);
    let figures =
        GuardFigures { calls_per_s: calls / secs, latency: Summary::of(&mut samples), asks, errors, first_error };
    Ok((figures, ingest?))
}
