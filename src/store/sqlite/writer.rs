//! The single writer: one thread owns the only write connection and commits in groups.
//!
//! It blocks for the first job, drains whatever else is queued (up to [`MAX_GROUP_EVENTS`]),
//! runs all of it in one transaction with one fsync, then publishes to the hub and answers every
//! caller. Many concurrent requests thus share one commit, which is what makes durable ingest fast.
//! Session rows, detector states and alerts are written in the same transaction as the events
//! that changed them, from a cache of sessions so a hot session is not re-read per event.

use super::{classify, Shared};
use crate::detect::{self, DetectConfig, NewAlert, SessionDetector};
use crate::hub::{Hub, Message, MessageKind};
use crate::model::{Event, SessionState};
use crate::store::{Outcome, Retention, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Events per transaction: large enough to amortise the fsync, small enough to keep the ack of
/// the first request in a group prompt. A larger batch is committed in several transactions, so
/// no single commit publishes more than this many messages at once to the stream's ring.
const MAX_GROUP_EVENTS: usize = 4096;
/// Sessions kept in memory; beyond this the cache is emptied (states are re-read on demand).
const MAX_CACHED_SESSIONS: usize = 20_000;
/// Events after which a session's detector state is saved again; on load, at most this many
/// stored events are replayed into it. Saving it with every event would write kilobytes per event.
const DETECT_CHECKPOINT: u32 = 32;
/// Sessions deleted by one retention pass: bounds the transaction (the next pass continues).
const RETAIN_BATCH: usize = 200;

pub(super) enum Work {
    Ingest(Vec<Event>),
    Delete(String),
    /// Raise stall alerts for running sessions silent for too long (collector clock).
    Stalls,
    Pin(String, bool),
    Retain(Retention),
}

pub(super) enum Done {
    Ingest(Vec<Outcome>),
    Delete(bool),
    Stalls(usize),
    Pin(bool),
    Retained(usize),
}

pub(super) enum Job {
    Work {
        work: Work,
        reply: oneshot::Sender<Result<Done, StoreError>>,
    },
    /// Stop after the jobs queued before this one; later ones are dropped (their callers see `Closed`).
    Shutdown,
}

struct Cached {
    sid: i64,
    state: SessionState,
    detector: SessionDetector,
    dirty: bool,
    /// An event arrived in the current group: `heard_ms` moves to now and the stall episode ends.
    heard: bool,
    /// The latest event the detector has seen, and how many it saw since its state was saved.
    detect_upto: i64,
    detect_unsaved: u32,
    /// The detector changed outside the session's own events (a child ended): save it now,
    /// since replaying this session's events would not redo it.
    detect_must_save: bool,
}

pub(super) struct Writer {
    conn: Connection,
    cache: HashMap<String, Cached>,
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    detect: DetectConfig,
    /// The collector's clock for the current group, in ms since the epoch.
    now_ms: i64,
    /// Running sessions not yet alerted as stalled: sid → (id, heard_ms). Kept in memory so that
    /// no index on `heard_ms` has to be rewritten with every event.
    silent: HashMap<i64, (String, i64)>,
    /// Events written in the open transaction.
    txn_events: usize,
    /// The hard cap (`--max-db-size`) in pages.
    max_pages: Option<u64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn to_sql_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        hub: Arc<Hub>,
        shared: Arc<Shared>,
        detect: DetectConfig,
        max_pages: Option<u64>,
    ) -> Self {
        conn.set_prepared_statement_cache_capacity(32);
        let mut w = Writer {
            conn,
            cache: HashMap::new(),
            hub,
            shared,
            detect,
            now_ms: now_ms(),
            silent: HashMap::new(),
            txn_events: 0,
            max_pages,
        };
        if let Err(e) = w.load_silent() {
            tracing::error!(error = %e, "cannot read running sessions; stalls will not be detected for them");
        }
        w
    }

    fn load_silent(&mut self) -> rusqlite::Result<()> {
        self.silent = self
            .conn
            .prepare(
                "SELECT sid, id, heard_ms FROM sessions WHERE status = 'running' AND stalled = 0 AND event_count > 0",
            )?
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut jobs = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match job {
                    Job::Shutdown => {
                        stop = true;
                        break;
                    }
                    Job::Work { work, reply } => {
                        events += match &work {
                            Work::Ingest(evs) => evs.len(),
                            Work::Delete(_) | Work::Stalls | Work::Pin(..) => 1,
                            Work::Retain(_) => RETAIN_BATCH * 10,
                        };
                        jobs.push((work, reply));
                    }
                }
                if events < MAX_GROUP_EVENTS {
                    next = rx.try_recv().ok();
                }
            }
            if !jobs.is_empty() {
                self.commit_group(jobs);
            }
        }
        // Leave a tidy file behind: fold the WAL back into the database.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;");
    }

    fn commit_group(&mut self, jobs: Vec<(Work, oneshot::Sender<Result<Done, StoreError>>)>) {
        let (works, replies): (Vec<Work>, Vec<_>) = jobs.into_iter().unzip();
        let mut published = Vec::new();
        self.now_ms = now_ms();
        self.txn_events = 0;
        let result = self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            let mut done = Vec::with_capacity(works.len());
            for work in works {
                done.push(match work {
                    Work::Ingest(evs) => Done::Ingest(self.ingest(evs, &mut published)?),
                    Work::Delete(id) => Done::Delete(self.delete(&id, &mut published)?),
                    Work::Stalls => Done::Stalls(self.stalls(&mut published)?),
                    Work::Pin(id, pinned) => Done::Pin(self.pin(&id, pinned)?),
                    Work::Retain(policy) => Done::Retained(self.retain(&policy, &mut published)?),
                });
            }
            self.flush_sessions()?;
            self.conn.execute_batch("COMMIT")?;
            Ok(done)
        });
        match result {
            Ok(done) => {
                self.committed(published);
                if self.cache.len() > MAX_CACHED_SESSIONS {
                    self.cache.clear();
                }
                if done.iter().any(|d| matches!(d, Done::Retained(n) if *n > 0)) {
                    // Give the freed pages back to the file system, so the file shrinks.
                    if let Err(e) = self.shrink() {
                        tracing::warn!(error = %e, "could not shrink the database after retention");
                    }
                }
                for (reply, done) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // The cache may hold states of the rolled-back events.
                self.cache.clear();
                let _ = self.load_silent();
                let err = classify(&e);
                self.shared.mark_failed(&err);
                tracing::error!(error = %e, "write transaction failed");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Gives the pages retention freed back to the file system, then restores the size cap (SQLite
    /// cannot set it below the file's size, so a file that started over it is capped only now).
    fn shrink(&mut self) -> rusqlite::Result<()> {
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

    /// After a commit: the store is writable, and what was committed goes out to subscribers.
    fn committed(&mut self, published: Vec<Message>) {
        self.shared.mark_writable();
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        for msg in published {
            if msg.kind == MessageKind::Alert {
                self.shared.alerts.fetch_add(1, Ordering::Relaxed);
            }
            self.hub.publish(msg);
        }
    }

    /// Commits what the open transaction holds and opens the next one, mid-group.
    fn commit_and_continue(&mut self, published: &mut Vec<Message>) -> rusqlite::Result<()> {
        self.flush_sessions()?;
        self.conn.execute_batch("COMMIT")?;
        self.committed(std::mem::take(published));
        self.txn_events = 0;
        self.conn.execute_batch("BEGIN IMMEDIATE")
    }

    /// The session's cached row, loaded or created.
    fn session(&mut self, id: &str) -> rusqlite::Result<&mut Cached> {
        if !self.cache.contains_key(id) {
            let found = self
                .conn
                .prepare_cached("SELECT sid, state, detect, detect_upto FROM sessions WHERE id = ?1")?
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()?;
            let cached = match found {
                Some((sid, state, detector, upto)) => {
                    let mut c = Cached {
                        sid,
                        state: serde_json::from_str(&state).unwrap_or_else(|_| SessionState::new(id)),
                        detector: detector.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default(),
                        dirty: false,
                        heard: false,
                        detect_upto: upto,
                        detect_unsaved: 0,
                        detect_must_save: false,
                    };
                    self.catch_up_detector(&mut c)?;
                    c
                }
                None => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO sessions (id, agent_id, status, last_seen_us, event_count, state) \
                             VALUES (?1, '', 'running', 0, 0, '{}')",
                        )?
                        .execute([id])?;
                    Cached {
                        sid: self.conn.last_insert_rowid(),
                        state: SessionState::new(id),
                        detector: SessionDetector::default(),
                        dirty: true,
                        heard: false,
                        detect_upto: 0,
                        detect_unsaved: 0,
                        detect_must_save: false,
                    }
                }
            };
            self.cache.insert(id.to_owned(), cached);
        }
        Ok(self.cache.get_mut(id).expect("inserted above"))
    }

    /// Replays the events stored after the detector's saved state into it. Their alerts were
    /// raised (and stored) when they first arrived, so they are dropped here.
    fn catch_up_detector(&self, c: &mut Cached) -> rusqlite::Result<()> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, body FROM events WHERE sid = ?1 AND id > ?2 ORDER BY id")?;
        let mut rows = stmt.query(params![c.sid, c.detect_upto])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if let Ok(ev) = Event::parse(row.get_ref(1)?.as_str().unwrap_or_default()) {
                let _ = c.detector.observe(&ev, &self.detect);
            }
            c.detect_upto = id;
            c.detect_unsaved += 1;
        }
        Ok(())
    }

    fn ingest(&mut self, events: Vec<Event>, published: &mut Vec<Message>) -> rusqlite::Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(events.len());
        for ev in events {
            let sid = self.session(&ev.session_id)?.sid;
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO events (sid, seq, body) VALUES (?1, ?2, ?3) ON CONFLICT (sid, seq) DO NOTHING",
                )?
                .execute(params![sid, ev.sequence, ev.raw()])?;
            if inserted == 0 {
                let stored: String = self
                    .conn
                    .prepare_cached("SELECT body FROM events WHERE sid = ?1 AND seq = ?2")?
                    .query_row(params![sid, ev.sequence], |r| r.get(0))?;
                outcomes.push(if Event::same_content(&stored, ev.raw()) {
                    Outcome::Duplicate
                } else {
                    Outcome::Conflict
                });
                continue;
            }
            let id = self.conn.last_insert_rowid();
            let cfg = &self.detect;
            let cached = self.cache.get_mut(&ev.session_id).expect("loaded above");
            let was_running = cached.state.is_running();
            cached.state.apply(&ev);
            let alerts = cached.detector.observe(&ev, cfg);
            cached.detect_upto = id;
            cached.detect_unsaved += 1;
            cached.dirty = true;
            cached.heard = true;
            let agent = cached.state.agent_id().to_owned();
            let ended = (was_running && !cached.state.is_running())
                .then(|| (cached.state.parent_session_id().map(str::to_owned), cached.state.status().to_owned()));
            self.raise(sid, &ev.session_id, &agent, Some(id), alerts, published)?;
            if let Some((Some(parent), status)) = ended {
                self.child_ended(&parent, &ev, &status, id, published)?;
            }
            outcomes.push(Outcome::Stored { id });
            let (session_id, agent_id, kind) = (ev.session_id.clone(), ev.agent_id.clone(), ev.kind.clone());
            published.push(Message::new(MessageKind::Event, Some(id), session_id, agent_id, kind, ev.into_raw()));
            self.txn_events += 1;
            if self.txn_events >= MAX_GROUP_EVENTS {
                self.commit_and_continue(published)?;
            }
        }
        Ok(outcomes)
    }

    /// Children failing together are alerted on their parent.
    fn child_ended(
        &mut self,
        parent: &str,
        ev: &Event,
        status: &str,
        event_id: i64,
        published: &mut Vec<Message>,
    ) -> rusqlite::Result<()> {
        let cfg = &self.detect;
        let Some(p) = self.cache.get_mut(parent) else {
            self.session(parent)?;
            return self.child_ended(parent, ev, status, event_id, published);
        };
        let alert = p.detector.observe_child_end(&ev.session_id, status, ev.ts_us, cfg);
        p.dirty = true;
        p.detect_must_save = true;
        let Some(alert) = alert else { return Ok(()) };
        let (sid, agent) = (p.sid, p.state.agent_id().to_owned());
        self.raise(sid, parent, &agent, Some(event_id), vec![alert], published)
    }

    /// Stores alerts (in the transaction of their trigger) and queues them for the stream.
    fn raise(
        &mut self,
        sid: i64,
        session_id: &str,
        agent_id: &str,
        event_id: Option<i64>,
        alerts: Vec<NewAlert>,
        published: &mut Vec<Message>,
    ) -> rusqlite::Result<()> {
        for a in alerts {
            let body = serde_json::json!({
                "session_id": session_id,
                "type": a.kind.as_str(),
                "severity": a.severity.as_str(),
                "message": a.message,
                "created_at": rfc3339_ms(self.now_ms),
                "sequence": a.sequence,
                "details": a.details,
            })
            .to_string();
            self.conn
                .prepare_cached(
                    "INSERT INTO alerts (sid, session_id, type, event_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![sid, session_id, a.kind.as_str(), event_id, body])?;
            let id = self.conn.last_insert_rowid();
            self.conn
                .prepare_cached("UPDATE sessions SET alert_count = alert_count + 1 WHERE sid = ?1")?
                .execute([sid])?;
            let data = format!("{{\"id\":{id},{}", &body[1..]);
            let kind = a.kind.as_str().to_owned();
            published.push(Message::new(
                MessageKind::Alert,
                None,
                session_id.to_owned(),
                agent_id.to_owned(),
                kind,
                data,
            ));
        }
        Ok(())
    }

    /// Running sessions silent past the shortest threshold are checked against the stall rule.
    fn stalls(&mut self, published: &mut Vec<Message>) -> rusqlite::Result<usize> {
        if !self.detect.stall_enabled {
            return Ok(0);
        }
        let shortest = self.detect.stall_after_secs.min(self.detect.stall_after_tool_secs);
        let cutoff = self.now_ms - (shortest * 1000.0) as i64;
        let candidates: Vec<(i64, String, i64)> = self
            .silent
            .iter()
            .filter(|(_, (_, heard))| *heard <= cutoff)
            .map(|(sid, (id, heard))| (*sid, id.clone(), *heard))
            .collect();
        let mut raised = 0;
        for (sid, id, heard_ms) in candidates {
            let now = self.now_ms;
            self.session(&id)?;
            let (cfg, c) = (&self.detect, self.cache.get_mut(&id).expect("loaded above"));
            if c.heard {
                continue; // an event arrived earlier in this group
            }
            let silent_secs = (now - heard_ms) as f64 / 1000.0;
            let tool_open = c.detector.has_open_tool_call();
            let Some(alert) = detect::stall_check(silent_secs, c.state.is_running(), tool_open, false, cfg) else {
                continue;
            };
            let agent = c.state.agent_id().to_owned();
            self.raise(sid, &id, &agent, None, vec![alert], published)?;
            self.conn.prepare_cached("UPDATE sessions SET stalled = 1 WHERE sid = ?1")?.execute([sid])?;
            self.silent.remove(&sid);
            raised += 1;
        }
        Ok(raised)
    }

    fn flush_sessions(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE sessions SET agent_id = ?2, parent_id = ?3, goal = ?4, status = ?5, last_seen_us = ?6, \
             event_count = ?7, state = ?8, \
             detect = CASE WHEN ?9 IS NULL THEN detect ELSE ?9 END, \
             detect_upto = CASE WHEN ?9 IS NULL THEN detect_upto ELSE ?10 END, \
             heard_ms = CASE WHEN ?11 THEN ?12 ELSE heard_ms END, stalled = CASE WHEN ?11 THEN 0 ELSE stalled END \
             WHERE sid = ?1",
        )?;
        let mut ended = Vec::new();
        for c in self.cache.values_mut().filter(|c| c.dirty) {
            let s = &c.state;
            let state = serde_json::to_string(s).map_err(to_sql_err)?;
            let save_detector = c.detect_must_save || c.detect_unsaved >= DETECT_CHECKPOINT || !s.is_running();
            let detector =
                if save_detector { Some(serde_json::to_string(&c.detector).map_err(to_sql_err)?) } else { None };
            stmt.execute(params![
                c.sid,
                s.agent_id(),
                s.parent_session_id(),
                s.goal(),
                s.status(),
                s.last_seen_us(),
                s.event_count(),
                state,
                detector,
                c.detect_upto,
                c.heard,
                self.now_ms
            ])?;
            if save_detector {
                c.detect_unsaved = 0;
                c.detect_must_save = false;
            }
            if c.heard {
                if s.is_running() {
                    self.silent.insert(c.sid, (s.id.clone(), self.now_ms));
                } else {
                    self.silent.remove(&c.sid);
                }
            }
            c.dirty = false;
            c.heard = false;
            if !s.is_running() {
                ended.push(s.id.clone());
            }
        }
        // Ended sessions seldom hear more: keep the cache to live ones, or it grows with every
        // session until the wholesale clear (the detector state is saved at the end).
        for id in ended {
            self.cache.remove(&id);
        }
        Ok(())
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
    fn retain(&mut self, policy: &Retention, published: &mut Vec<Message>) -> rusqlite::Result<usize> {
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
                deleted += usize::from(self.delete(&id, published)?);
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
                deleted += usize::from(self.delete(&id, published)?);
            }
        }
        Ok(deleted)
    }

    fn delete(&mut self, id: &str, published: &mut Vec<Message>) -> rusqlite::Result<bool> {
        let sid: Option<i64> = self
            .conn
            .prepare_cached("SELECT sid FROM sessions WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(sid) = sid else { return Ok(false) };
        self.conn.prepare_cached("DELETE FROM events WHERE sid = ?1")?.execute([sid])?;
        self.conn.prepare_cached("DELETE FROM alerts WHERE sid = ?1")?.execute([sid])?;
        self.conn.prepare_cached("DELETE FROM sessions WHERE sid = ?1")?.execute([sid])?;
        self.cache.remove(id);
        self.silent.remove(&sid);
        let data = serde_json::json!({ "session_id": id }).to_string();
        published.push(Message::new(
            MessageKind::SessionDeleted,
            None,
            id.to_owned(),
            String::new(),
            String::new(),
            data,
        ));
        Ok(true)
    }
}
