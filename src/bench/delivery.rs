//! Delivery: how long an acknowledged event takes to reach a subscriber, and whether it does.
//!
//! One subscriber on the last instance's `/stream`, single-event POSTs at a fixed rate to the
//! first: across a fleet, that is the path from the instance that commits an event to another
//! instance's live feed (with one instance, both ends are the same collector). It is fan-out's
//! fixed-rate phase with one subscriber, so the events, their identification by
//! `(session_id, sequence)` and the latency (receipt minus ack, 0 when the frame beats the HTTP
//! answer, as it mostly does on one instance) are the same; receipt minus send is printed too,
//! since it does not hide in that race. The rate is capped because the figure is a latency, not
//! a capacity.

use super::fanout::{delivery_ms, fixed_rate_phase};
use super::stats::{ms, Summary};
use super::{figure, Ctx, Plan};
use std::sync::Arc;

/// Most events per second: a load every store keeps up with, so queueing does not swamp the
/// delivery path being measured.
const MAX_RATE: f64 = 1000.0;

/// The rate of the schedule: `--rate`, capped.
fn rate(plan: &Plan) -> f64 {
    plan.rate.clamp(1.0, MAX_RATE)
}

pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), String> {
    let rate = rate(&ctx.plan);
    let (post, listen) = (Arc::clone(&ctx.target), Arc::clone(ctx.fleet.last().unwrap_or(&ctx.target)));
    let pids = ctx.fleet_pids.clone();
    let prefix = format!("bench-{}-dlv-", ctx.run_id);
    let mut phase = fixed_rate_phase(ctx, &post, &listen, 1, rate, prefix, &pids).await?;
    let ack = Summary::of(&mut phase.samples).ms();
    let Some(sub) = phase.subscribers.first() else {
        return Err("the subscriber's task failed".into());
    };
    let missed = phase.missed(sub);
    let (h, s) = (&sub.hist, sub.hist.summary());
    let latency = if s.count == 0 {
        "no deliveries".to_owned()
    } else {
        let p = |q: f64| ms(h.percentile(q).unwrap_or(0));
        format!("p50 {} ms p90 {} ms p99 {} ms max {} ms", p(50.0), p(90.0), p(99.0), ms(s.max))
    };
    let route = if Arc::ptr_eq(&post, &listen) {
        format!("on {}", post.url)
    } else {
        format!("posted to {}, received on {}", post.url, listen.url)
    };
    let mut line = format!(
        "delivery at {rate:.0} events/s {route}: {} delivered, after ack {latency}, missed {missed} of {} acknowledged{}, after send {}; ingest {:.0} events/s, ack {}, errors {} (503: {}){}",
        s.count,
        phase.acked,
        if sub.overflow { " (cut off by overflow)" } else { "" },
        delivery_ms(&sub.from_send.summary()),
        phase.ingest_rate,
        ack,
        phase.errors,
        phase.overloaded,
        phase.cpu,
    );
    if let Some(e) = &sub.error {
        line.push_str(&format!(" [stream error: {e}]"));
    }
    figure(&line);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_capped() {
        let plan = |argv: &[&str]| super::super::tests::plan(argv).unwrap();
        assert_eq!(rate(&plan(&[])), MAX_RATE);
        assert_eq!(rate(&plan(&["--rate", "20000"])), MAX_RATE);
        assert_eq!(rate(&plan(&["--rate", "250"])), 250.0);
    }
}
