//! The writer's other jobs, besides ingest: stall alerts on the collector's clock, retention,
//! deletion, pins, and giving freed pages back to the file system. They run in the writer's
//! group transactions like ingest, so they never race it.

use super::writer::{settle, Answer, Failed, Writer, RETAIN_BATCH};
use crate::hub::Message;
use crate::store::apply::stall_silence_ms;
use crate::store::job::Upkeep;
use crate::store::outbox::{Settle, Settled, NEVER_ATTEMPTED};
use crate::store::Retention;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::Ordering;

impl Writer {
    /// Runs one upkeep job inside the open transaction.
    pub(super) fn upkeep(&mut self, job: Upkeep) -> Result<Answer, (rusqlite::Error, Failed)> {
        match job {
            Upkeep::Delete(id, reply) => settle(reply, self.delete(&id)),
            Upkeep::Stalls(reply) => settle(reply, self.stalls()),
            Upkeep::Pin(id, pinned, reply) => settle(reply, self.pin(&id, pinned)),
            Upkeep::Retain(policy, reply) => settle(reply, self.retain(&policy)),
            Upkeep::Settle(settled, reply) => settle(reply, self.settle_deliveries(&settled)),
            Upkeep::Expire(keep, max_age_ms, reply) => settle(reply, self.expire_deliveries(&keep, max_age_ms)),
        }
    }

    /// Running sessions silent past the shortest threshold are checked against the stall rule.
    fn stalls(&mut self) -> rusqlite::Result<usize> {
        let Some(silence_ms) = stall_silence_ms(&self.detect) else { return Ok(0) };
        let cutoff = self.now_ms - silence_ms;
        let candidates: Vec<(i64, String, i64)> = self
            .silent
            .iter()
            .filter(|(_, (_, heard))| *heard <= cutoff)
            .map(|(sid, (id, heard))| (*sid, id.clone(), *heard))
            .collect();
        let mut raised = 0;
        for (sid, id, heard_ms) in candidates {
            let now = self.now_ms;
            let cfg = self.detect.clone();
            // Not one heard from earlier in this group: `stall` says so.
            let Some(stalled) = self.session(&id)?.stall(heard_ms, now, &cfg) else { continue };
            self.raise(None, [stalled])?;
            self.conn.prepare_cached("UPDATE sessions SET stalled = 1 WHERE sid = ?1")?.execute([sid])?;
            self.silent.remove(&sid);
            raised += 1;
        }
        Ok(raised)
    }

    fn pin(&mut self, id: &str, pinned: bool) -> rusqlite::Result<bool> {
        let changed = self
            .conn
            .prepare_cached("UPDATE sessions SET pinned = ?2 WHERE id = ?1 AND event_count > 0")?
            .execute(params![id, pinned])?;
        Ok(changed > 0)
    }

    /// Deletes the oldest ended, unpinned sessions: those older than the policy's age, then more
    /// while the live data is over its size. Running and pinned sessions are never touched.
    fn retain(&mut self, policy: &Retention) -> rusqlite::Result<usize> {
        let oldest = |conn: &Connection, before_ms: i64, limit: usize| -> rusqlite::Result<Vec<String>> {
            conn.prepare_cached(
                "SELECT id FROM sessions WHERE status != 'running' AND pinned = 0 AND event_count > 0 AND heard_ms < ?1 \
                 ORDER BY heard_ms LIMIT ?2",
            )?
            .query_map(params![before_ms, limit as i64], |r| r.get(0))?
            .collect()
        };
        let mut deleted = 0;
        if let Some(age) = policy.max_age_ms {
            for id in oldest(&self.conn, self.now_ms - age, RETAIN_BATCH)? {
                deleted += usize::from(self.delete(&id)?);
            }
        }
        if let Some(max) = policy.max_bytes {
            // The cap also stops writes: once it has, free room down to 90% of it, or a store full
            // of ended sessions would stay at the edge, refusing events, and never shrink.
            let full = !self.shared.writable.load(Ordering::Relaxed);
            let target = if full { max / 10 * 9 } else { max };
            while deleted < RETAIN_BATCH * 5 {
                let used: i64 = self.conn.query_row(
                    "SELECT (p.page_count - f.freelist_count) * s.page_size \
                     FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
                    [],
                    |r| r.get(0),
                )?;
                if used as u64 <= target {
                    break;
                }
                // One at a time: the oldest ended session, then measure again.
                let Some(id) = oldest(&self.conn, i64::MAX, 1)?.pop() else {
                    tracing::warn!(
                        used,
                        max,
                        "database over --max-db-size, but only running or pinned sessions are left"
                    );
                    break;
                };
                deleted += usize::from(self.delete(&id)?);
            }
        }
        self.shrink_due |= deleted > 0;
        Ok(deleted)
    }

    fn delete(&mut self, id: &str) -> rusqlite::Result<bool> {
        let sid: Option<i64> = self
            .conn
            .prepare_cached("SELECT sid FROM sessions WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(sid) = sid else { return Ok(false) };
        self.conn.prepare_cached("DELETE FROM events WHERE sid = ?1")?.execute([sid])?;
        self.conn
            .prepare_cached("DELETE FROM deliveries WHERE alert_id IN (SELECT id FROM alerts WHERE sid = ?1)")?
            .execute([sid])?;
        self.conn.prepare_cached("DELETE FROM alerts WHERE sid = ?1")?.execute([sid])?;
        self.conn.prepare_cached("DELETE FROM sessions WHERE sid = ?1")?.execute([sid])?;
        self.live.remove(id);
        self.silent.remove(&sid);
        self.facts.push((id.to_owned(), crate::store::board::Facts::default()));
        self.published.push(Message::session_deleted(id.to_owned()));
        Ok(true)
    }

    /// Records attempts' outcomes. Only a waiting delivery changes: one settled already (or whose
    /// session was deleted meanwhile) stays as it is.
    fn settle_deliveries(&mut self, settled: &[Settle]) -> rusqlite::Result<()> {
        for s in settled {
            let (state, next_ms, done_ms, error) = match &s.outcome {
                Settled::Delivered => ("delivered", self.now_ms, Some(self.now_ms), None),
                Settled::Summarised => ("summarised", self.now_ms, Some(self.now_ms), None),
                Settled::Retry { after_ms, error } => ("pending", self.now_ms + after_ms, None, Some(error.as_str())),
                Settled::Failed { error } => ("failed", self.now_ms, Some(self.now_ms), Some(error.as_str())),
            };
            self.conn
                .prepare_cached(
                    "UPDATE deliveries SET state = ?3, attempts = ?4, next_ms = ?5, done_ms = ?6, \
                     error = coalesce(?7, error) WHERE alert_id = ?1 AND target = ?2 AND done_ms IS NULL",
                )?
                .execute(params![s.alert_id, s.target, state, s.attempts, next_ms, done_ms, error])?;
        }
        Ok(())
    }

    /// Gives up waiting deliveries older than `max_age_ms` whose targets are not in `keep` (the
    /// worker gives up on its own targets' deliveries as it settles them).
    fn expire_deliveries(&mut self, keep: &[String], max_age_ms: i64) -> rusqlite::Result<usize> {
        let keep = serde_json::to_string(keep).unwrap_or_else(|_| "[]".to_owned());
        self.conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'failed', done_ms = ?1, error = coalesce(error, ?3) \
                 WHERE done_ms IS NULL AND next_ms <= ?1 AND created_ms <= ?1 - ?2 \
                 AND target NOT IN (SELECT value FROM json_each(?4))",
            )?
            .execute(params![self.now_ms, max_age_ms, NEVER_ATTEMPTED, keep])
    }

    /// Gives the pages retention freed back to the file system, then restores the size cap (SQLite
    /// cannot set it below the file's size, so a file that started over it is capped only now).
    pub(super) fn shrink(&mut self) -> rusqlite::Result<()> {
        // Each row of `incremental_vacuum` frees one page: it must be stepped to the end.
        let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        drop(rows);
        drop(stmt);
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        if let Some(pages) = self.max_pages {
            self.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        }
        Ok(())
    }
}
