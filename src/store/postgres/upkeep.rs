//! The writer's other jobs, besides ingest: deletion, pins, stall alerts, retention, and
//! settling and expiring notification deliveries, each in a transaction of its own.

use super::sql::{now_ms, restore, store_alert, At, Cached, Group, NOW_MS};
use super::writer::{Failure, Writer};
use crate::detect::DetectConfig;
use crate::store::apply::{self, stall_silence_ms, Saved};
use crate::store::job::Upkeep;
use crate::store::outbox::{Outbox, Settle, Settled, NEVER_ATTEMPTED};
use crate::store::Retention;
use deadpool_postgres::Transaction;
use std::sync::Arc;

/// Sessions one retention pass deletes.
const RETAIN_BATCH: i64 = 200;
/// Stalled sessions one check alerts (the next check continues).
const STALL_BATCH: i64 = 500;
/// Notices are kept this long for feeds that fell behind.
const NOTICE_TTL_MS: i64 = 3_600_000;
/// The advisory lock of retention ("aopretai"): one pass at a time in the fleet.
const RETAIN_LOCK: i64 = 0x616f_7072_6574_6169;

impl Writer {
    /// Runs one upkeep job in a transaction of its own, and answers it.
    pub(super) async fn upkeep(&mut self, job: Upkeep) {
        match job {
            Upkeep::Delete(id, reply) => {
                let r = self.txn(|tx, grp| Box::pin(delete(tx, grp, id.clone()))).await;
                if matches!(r, Ok(true)) {
                    self.live.remove(&id);
                    self.shared.board.forget(&id);
                    self.sequencer.notify_one();
                }
                let _ = reply.send(r);
            }
            Upkeep::Pin(id, pinned, reply) => {
                let r = self.txn(|tx, _| Box::pin(pin(tx, id.clone(), pinned))).await;
                let _ = reply.send(r);
            }
            Upkeep::Stalls(reply) => {
                let detect = self.detect.clone();
                let outbox = Arc::clone(&self.outbox);
                let r = self.txn(|tx, grp| Box::pin(stalls(tx, grp, detect.clone(), Arc::clone(&outbox)))).await;
                if matches!(r, Ok(n) if n > 0) {
                    self.sequencer.notify_one();
                    self.outbox.wake.notify_one();
                }
                let _ = reply.send(r);
            }
            Upkeep::Settle(settled, reply) => {
                let r = self.txn(|tx, _| Box::pin(settle_deliveries(tx, settled.clone()))).await;
                let _ = reply.send(r);
            }
            Upkeep::Expire(keep, max_age_ms, reply) => {
                let r = self.txn(|tx, _| Box::pin(expire_deliveries(tx, keep.clone(), max_age_ms))).await;
                let _ = reply.send(r);
            }
            Upkeep::Retain(policy, reply) => {
                let r = self.txn(|tx, grp| Box::pin(retain(tx, grp, policy))).await;
                if matches!(r, Ok(n) if n > 0) {
                    self.live.clear();
                    self.sequencer.notify_one();
                }
                let _ = reply.send(r);
            }
        }
    }
}

async fn delete(tx: &Transaction<'_>, grp: i64, id: String) -> Result<bool, Failure> {
    let Some(row) = tx.q_opt("SELECT sid FROM aop_sessions WHERE id = $1 FOR UPDATE", &[&id]).await? else {
        return Ok(false);
    };
    let mut group = Group::new(grp);
    delete_sid(tx, &mut group, row.get(0), &id).await?;
    group.close(tx).await?;
    Ok(true)
}

/// Deletes a locked session and tells every feed, with a notice in `group`.
async fn delete_sid(tx: &Transaction<'_>, group: &mut Group, sid: i64, id: &str) -> Result<(), Failure> {
    tx.x("DELETE FROM aop_events WHERE sid = $1", &[&sid]).await?;
    tx.x("DELETE FROM aop_deliveries WHERE alert_id IN (SELECT id FROM aop_alerts WHERE sid = $1)", &[&sid]).await?;
    tx.x("DELETE FROM aop_alerts WHERE sid = $1", &[&sid]).await?;
    tx.x("DELETE FROM aop_sessions WHERE sid = $1", &[&sid]).await?;
    let body = serde_json::json!({ "session_id": id }).to_string();
    let sql = format!(
        "INSERT INTO aop_notices (grp, k, kind, session_id, agent_id, type, body, created_ms) \
         VALUES ($1, $2, 'deleted', $3, '', '', $4, {NOW_MS})"
    );
    tx.x(&sql, &[&group.grp, &group.notices, &id, &body]).await?;
    group.notices += 1;
    Ok(())
}

async fn pin(tx: &Transaction<'_>, id: String, pinned: bool) -> Result<bool, Failure> {
    let n = tx.x("UPDATE aop_sessions SET pinned = $2 WHERE id = $1 AND event_count > 0", &[&id, &pinned]).await?;
    Ok(n > 0)
}

/// Alerts running sessions silent past the stall threshold (the database's clock). Each is
/// locked and marked in the transaction that alerts it, and sessions another instance is
/// writing or checking are skipped: one alert in the fleet, whichever instance's timer fires.
async fn stalls(tx: &Transaction<'_>, grp: i64, cfg: DetectConfig, outbox: Arc<Outbox>) -> Result<usize, Failure> {
    let Some(silence_ms) = stall_silence_ms(&cfg) else { return Ok(0) };
    tx.x(
        "DELETE FROM aop_notices WHERE created_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1",
        &[&NOTICE_TTL_MS],
    )
    .await?;
    let rows = tx
        .q(
            "SELECT sid, id, heard_ms, state, detect, detect_upto, \
                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now \
             FROM aop_sessions \
             WHERE status = 'running' AND NOT stalled AND event_count > 0 \
               AND heard_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1 \
             ORDER BY heard_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&silence_ms, &STALL_BATCH],
        )
        .await?;
    let mut raised = Vec::new();
    for r in &rows {
        let (heard_ms, now): (i64, i64) = (r.get(2), r.get(6));
        let saved =
            Saved { key: r.get(0), rev: 0, id: r.get(1), state: r.get(3), detector: r.get(4), detect_upto: r.get(5) };
        // The open tool call the rule asks about may be in events after the saved detector
        // state: they are replayed.
        let t = restore(tx, saved, &cfg).await?;
        raised.extend(t.stall(heard_ms, now, &cfg));
    }
    if raised.is_empty() {
        return Ok(0);
    }
    let now_ms = now_ms(tx).await?;
    let created_at = apply::rfc3339_ms(now_ms).unwrap_or_default();
    let mut group = Group::new(grp);
    for r in &raised {
        let targets: Vec<&str> = outbox.targets_for(r.alert.kind, &r.agent_id).collect();
        let at = At { created_at: &created_at, grp, k: group.notices, now_ms };
        group.notices += 1;
        store_alert(tx, r, None, at, targets).await?;
        tx.x("UPDATE aop_sessions SET stalled = true, alert_count = alert_count + 1 WHERE sid = $1", &[&r.key]).await?;
    }
    group.close(tx).await?;
    Ok(raised.len())
}

/// Deletes ended, unpinned sessions older than the policy's age (the database's clock), one
/// pass at a time in the fleet.
async fn retain(tx: &Transaction<'_>, grp: i64, policy: Retention) -> Result<usize, Failure> {
    let Some(age) = policy.max_age_ms else { return Ok(0) };
    let mine: bool = tx.q1("SELECT pg_try_advisory_xact_lock($1)", &[&RETAIN_LOCK]).await?.get(0);
    if !mine {
        return Ok(0);
    }
    let rows = tx
        .q(
            "SELECT sid, id FROM aop_sessions \
             WHERE status <> 'running' AND NOT pinned AND event_count > 0 \
               AND heard_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1 \
             ORDER BY heard_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&age, &RETAIN_BATCH],
        )
        .await?;
    let mut group = Group::new(grp);
    for r in &rows {
        delete_sid(tx, &mut group, r.get(0), r.get::<_, &str>(1)).await?;
    }
    group.close(tx).await?;
    Ok(rows.len())
}

/// Records attempts' outcomes (on the database's clock). Only a waiting delivery changes.
async fn settle_deliveries(tx: &Transaction<'_>, settled: Vec<Settle>) -> Result<(), Failure> {
    let sql = format!(
        "UPDATE aop_deliveries SET state = $3, attempts = $4, next_ms = {NOW_MS} + $5, \
         done_ms = CASE WHEN $6 THEN {NOW_MS} END, error = coalesce($7, error) \
         WHERE alert_id = $1 AND target = $2 AND done_ms IS NULL"
    );
    for s in &settled {
        let (state, after_ms, done, error) = match &s.outcome {
            Settled::Delivered => ("delivered", 0, true, None),
            Settled::Summarised => ("summarised", 0, true, None),
            Settled::Retry { after_ms, error } => ("pending", *after_ms, false, Some(error.as_str())),
            Settled::Failed { error } => ("failed", 0, true, Some(error.as_str())),
        };
        let attempts = i32::try_from(s.attempts).unwrap_or(i32::MAX);
        tx.x(&sql, &[&s.alert_id, &s.target, &state, &attempts, &after_ms, &done, &error]).await?;
    }
    Ok(())
}

/// Gives up waiting deliveries older than `max_age_ms` that nobody holds (a claim pushes
/// `next_ms` past now), but those of the targets in `keep`.
async fn expire_deliveries(tx: &Transaction<'_>, keep: Vec<String>, max_age_ms: i64) -> Result<usize, Failure> {
    let sql = format!(
        "UPDATE aop_deliveries SET state = 'failed', done_ms = {NOW_MS}, error = coalesce(error, $2) \
         WHERE done_ms IS NULL AND next_ms <= {NOW_MS} AND created_ms <= {NOW_MS} - $1 \
         AND NOT (target = ANY($3))"
    );
    let n = tx.x(&sql, &[&max_age_ms, &NEVER_ATTEMPTED, &keep]).await?;
    Ok(n as usize)
}
