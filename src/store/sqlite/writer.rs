//! The single writer: one thread owns the only write connection and commits in groups.
//!
//! It blocks for the first job, drains whatever else is queued (up to [`MAX_GROUP_EVENTS`]),
//! runs all of it in one transaction with one fsync, then publishes to the hub and answers every
//! caller. Many concurrent requests thus share one commit, which is what makes durable ingest fast.
//! What an event does to its session and detectors is [`crate::store::apply`]'s business; this
//! file writes its outcome (the session row, the alerts) in the same transaction as the event.
//! Upkeep jobs (stalls, retention, deletion, pins) are in [`super::upkeep`].

use super::shared::{classify, Shared};
use crate::detect::{with_alert_id, DetectConfig};
use crate::hub::{Hub, Message, MessageKind};
use crate::model::Event;
use crate::store::apply::{self, Live, Place, Probe, Raised, Saved, Tracked};
use crate::store::board::Facts;
use crate::store::job::{tell, Command, Job, Reply, Upkeep};
use crate::store::outbox::Outbox;
use crate::store::{Outcome, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// Events per transaction: large enough to amortise the fsync, small enough to keep the ack of
/// the first request in a group prompt. A larger batch is committed in several transactions, so
/// no single commit publishes more than this many messages at once to the stream's ring.
const MAX_GROUP_EVENTS: usize = 4096;
/// Sessions deleted by one retention pass: bounds the transaction (the next pass continues).
pub(super) const RETAIN_BATCH: usize = 200;

/// How much of a group's budget a job takes.
fn weight(job: &Job) -> usize {
    match job {
        Job::Ingest(evs, _) => evs.len(),
        Job::Upkeep(Upkeep::Retain(..)) => RETAIN_BATCH * 10,
        Job::Upkeep(_) => 1,
    }
}

/// A job that ran inside the open transaction: its answer waits for the commit's fate.
pub(super) type Answer = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;
/// A job that failed (and so took its group down): its caller is told why.
pub(super) type Failed = Box<dyn FnOnce(&StoreError) + Send>;

pub(super) fn settle<T: Send + 'static>(
    reply: Reply<T>,
    result: rusqlite::Result<T>,
) -> Result<Answer, (rusqlite::Error, Failed)> {
    match result {
        Ok(value) => Ok(Box::new(move |fate| {
            let _ = reply.send(fate.clone().map(|()| value));
        })),
        Err(e) => Err((e, Box::new(move |err| tell(reply, err)))),
    }
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) live: Live,
    hub: Arc<Hub>,
    pub(super) shared: Arc<Shared>,
    pub(super) detect: DetectConfig,
    /// The collector's clock for the current group, in ms since the epoch.
    pub(super) now_ms: i64,
    /// Running sessions not yet alerted as stalled: key → (id, heard_ms). Kept in memory so that
    /// no index on `heard_ms` has to be rewritten with every event.
    pub(super) silent: HashMap<i64, (String, i64)>,
    /// Events written in the open transaction.
    txn_events: usize,
    /// The hard cap (`--max-db-size`) in pages.
    pub(super) max_pages: Option<u64>,
    /// What the open transaction will publish once it commits.
    pub(super) published: Vec<Message>,
    /// Retention deleted sessions in this group: shrink the file after the commit.
    pub(super) shrink_due: bool,
    /// What the guard will read of the sessions the open transaction changed.
    pub(super) facts: Vec<(String, Facts)>,
    /// The notification targets alerts go to.
    outbox: Arc<Outbox>,
    /// The open transaction wrote deliveries: wake the delivery worker once it commits.
    pub(super) delivering: bool,
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        hub: Arc<Hub>,
        shared: Arc<Shared>,
        detect: DetectConfig,
        max_pages: Option<u64>,
        outbox: Arc<Outbox>,
    ) -> Self {
        conn.set_prepared_statement_cache_capacity(32);
        let mut w = Writer {
            conn,
            live: Live::default(),
            hub,
            shared,
            detect,
            now_ms: now_ms(),
            silent: HashMap::new(),
            txn_events: 0,
            max_pages,
            published: Vec::new(),
            shrink_due: false,
            facts: Vec::new(),
            outbox,
            delivering: false,
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

    pub(super) fn run(mut self, rx: Receiver<Command>) {
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut jobs = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                let Command::Run(job) = command else {
                    stop = true;
                    break;
                };
                events += weight(&job);
                jobs.push(job);
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

    /// Runs one job inside the open transaction.
    fn run_job(&mut self, job: Job) -> Result<Answer, (rusqlite::Error, Failed)> {
        match job {
            Job::Ingest(evs, reply) => settle(reply, self.ingest(evs)),
            Job::Upkeep(job) => self.upkeep(job),
        }
    }

    fn commit_group(&mut self, jobs: Vec<Job>) {
        self.now_ms = now_ms();
        self.txn_events = 0;
        self.published.clear();
        self.shrink_due = false;
        self.delivering = false;
        let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
        let mut failed: Vec<Failed> = Vec::new();
        let mut unrun = Vec::new();
        let mut failure = self.begin().err();
        for job in jobs {
            if failure.is_some() {
                unrun.push(job);
                continue;
            }
            match self.run_job(job) {
                Ok(a) => answers.push(a),
                Err((e, f)) => {
                    failure = Some(e);
                    failed.push(f);
                }
            }
        }
        let failure = failure.or_else(|| self.flush_sessions().err()).or_else(|| self.commit().err());
        let fate = match failure {
            None => {
                self.committed();
                self.live.committed();
                if self.shrink_due {
                    // Give the freed pages back to the file system, so the file shrinks.
                    if let Err(e) = self.shrink() {
                        tracing::warn!(error = %e, "could not shrink the database after retention");
                    }
                }
                Ok(())
            }
            Some(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.published.clear();
                self.facts.clear();
                // The cache may hold states of the rolled-back events.
                self.live.clear();
                let _ = self.load_silent();
                let err = classify(&e);
                self.shared.mark_failed(&err);
                tracing::error!(error = %e, "write transaction failed");
                Err(err)
            }
        };
        for answer in answers {
            answer(&fate);
        }
        if let Err(e) = &fate {
            failed.into_iter().for_each(|f| f(e));
            unrun.into_iter().for_each(|j| j.fail(e));
        }
    }

    // Cached statements: parsing `BEGIN`/`COMMIT` anew for every group was a few percent of the
    // writer's time under batch load.
    fn begin(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([]).map(drop)
    }

    fn commit(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    }

    /// After a commit: the store is writable, and what was committed goes out to subscribers.
    fn committed(&mut self) {
        self.shared.mark_writable();
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        // Before the answers: an agent told its event is stored finds it in the guard's facts.
        self.shared.board.put(self.facts.drain(..));
        for msg in self.published.drain(..) {
            if msg.kind == MessageKind::Alert {
                self.shared.alerts.fetch_add(1, Ordering::Relaxed);
            }
            self.hub.publish(msg);
        }
        if std::mem::take(&mut self.delivering) {
            self.outbox.wake.notify_one();
        }
    }

    /// Commits what the open transaction holds and opens the next one, mid-group.
    fn commit_and_continue(&mut self) -> rusqlite::Result<()> {
        self.flush_sessions()?;
        self.commit()?;
        self.committed();
        self.txn_events = 0;
        self.begin()
    }

    /// The session, from the cache or the store (its detector caught up), or a new row.
    pub(super) fn session(&mut self, id: &str) -> rusqlite::Result<&mut Tracked> {
        if !self.live.contains(id) {
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
            let tracked = match found {
                Some((key, state, detector, upto)) => {
                    let detector = detector.as_deref();
                    let saved = Saved { key, rev: 0, id, state: &state, detector, detect_upto: upto };
                    Tracked::restore(saved, self.stored_after(key, upto)?, &self.detect)
                }
                None => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO sessions (id, agent_id, status, last_seen_us, event_count, state) \
                             VALUES (?1, '', 'running', 0, 0, '{}')",
                        )?
                        .execute([id])?;
                    Tracked::fresh(self.conn.last_insert_rowid(), id)
                }
            };
            return Ok(self.live.insert(tracked));
        }
        Ok(self.live.get_mut(id).expect("checked above"))
    }

    /// The session's events stored after its saved detector state (about a checkpoint's worth at
    /// most), to catch the detector up.
    fn stored_after(&self, sid: i64, upto: i64) -> rusqlite::Result<Vec<(i64, String)>> {
        self.conn
            .prepare_cached("SELECT id, body FROM events WHERE sid = ?1 AND id > ?2 ORDER BY id")?
            .query_map(params![sid, upto], |r| Ok((r.get(0)?, r.get_ref(1)?.as_str().unwrap_or_default().to_owned())))?
            .collect()
    }

    fn ingest(&mut self, events: Vec<Event>) -> rusqlite::Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(events.len());
        for ev in events {
            let sid = self.session(&ev.session_id)?.key;
            let ev = match self.insert(sid, ev)? {
                Ok(ev) => ev,
                Err(outcome) => {
                    outcomes.push(outcome);
                    continue;
                }
            };
            let id = self.conn.last_insert_rowid();
            let cfg = &self.detect;
            let tracked = self.live.get_mut(&ev.session_id).expect("loaded above");
            let applied = tracked.apply(id, &ev, cfg);
            self.raise(Some(id), applied.alerts)?;
            if let Some(end) = applied.child_end {
                // Its parent hears of it, and may raise an alert of its own.
                let cfg = self.detect.clone();
                let parent = self.session(&end.parent)?;
                let raised = end.tell(parent, &cfg);
                self.raise(Some(id), raised)?;
            }
            outcomes.push(Outcome::Stored);
            let (session_id, agent_id, kind) = (ev.session_id.clone(), ev.agent_id.clone(), ev.kind.clone());
            self.published.push(Message::event(id, session_id, agent_id, kind, ev.into_raw()));
            self.txn_events += 1;
            if self.txn_events >= MAX_GROUP_EVENTS {
                self.commit_and_continue()?;
            }
        }
        Ok(outcomes)
    }

    /// Inserts the event, or says why not: the same event is stored (a retry), or another one
    /// holds its sequence. An event derived from a span moves to the next free sequence instead
    /// ([`apply::place`] decides; this reads what it asks for).
    fn insert(&mut self, sid: i64, ev: Event) -> rusqlite::Result<Result<Event, Outcome>> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO events (sid, seq, body) VALUES (?1, ?2, ?3) ON CONFLICT (sid, seq) DO NOTHING",
            )?
            .execute(params![sid, ev.sequence, ev.raw()])?;
        if inserted == 1 {
            return Ok(Ok(ev));
        }
        let Some(mut probe) = Probe::of(&ev) else {
            let held: String = self
                .conn
                .prepare_cached("SELECT body FROM events WHERE sid = ?1 AND seq = ?2")?
                .query_row(params![sid, ev.sequence], |r| r.get(0))?;
            return Ok(Err(apply::place::refused(&ev, &held)));
        };
        let window = probe.window();
        let mut decided = None;
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, body FROM events WHERE sid = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
            )?;
            let mut rows = stmt.query(params![sid, window.start, window.end])?;
            while let Some(row) = rows.next()? {
                decided = probe.step(row.get(0)?, row.get_ref(1)?.as_str().unwrap_or_default());
                if decided.is_some() {
                    break;
                }
            }
        }
        match decided.unwrap_or_else(|| probe.finish()) {
            Place::Refused(outcome) => Ok(Err(outcome)),
            Place::Moved(moved) => {
                self.conn
                    .prepare_cached("INSERT INTO events (sid, seq, body) VALUES (?1, ?2, ?3)")?
                    .execute(params![sid, moved.sequence, moved.raw()])?;
                Ok(Ok(*moved))
            }
        }
    }

    /// Stores alerts (in the transaction of their trigger) and queues them for the stream.
    pub(super) fn raise(
        &mut self,
        event_id: Option<i64>,
        raised: impl IntoIterator<Item = Raised>,
    ) -> rusqlite::Result<()> {
        for Raised { key: sid, session_id, agent_id, alert: a } in raised {
            let created_at = apply::rfc3339_ms(self.now_ms).unwrap_or_default();
            let body = a.to_json(&session_id, None, Some(&created_at));
            self.conn
                .prepare_cached(
                    "INSERT INTO alerts (sid, session_id, type, event_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![sid, session_id, a.kind.as_str(), event_id, body])?;
            let id = self.conn.last_insert_rowid();
            self.conn
                .prepare_cached("UPDATE sessions SET alert_count = alert_count + 1 WHERE sid = ?1")?
                .execute([sid])?;
            // Without targets this loop never runs: ingest costs what it did before notifications.
            for target in self.outbox.targets_for(a.kind, &agent_id) {
                self.conn
                    .prepare_cached(
                        "INSERT INTO deliveries (alert_id, target, state, created_ms, next_ms) \
                         VALUES (?1, ?2, 'pending', ?3, ?3)",
                    )?
                    .execute(params![id, target, self.now_ms])?;
                self.delivering = true;
            }
            let data = with_alert_id(&body, id);
            self.published.push(Message::alert(session_id, agent_id, a.kind.as_str().to_owned(), data));
        }
        Ok(())
    }

    /// Writes every changed session row (and its detector state when due).
    fn flush_sessions(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE sessions SET agent_id = ?2, parent_id = ?3, goal = ?4, status = ?5, last_seen_us = ?6, \
             event_count = ?7, state = ?8, \
             detect = CASE WHEN ?9 IS NULL THEN detect ELSE ?9 END, \
             detect_upto = CASE WHEN ?9 IS NULL THEN detect_upto ELSE ?10 END, \
             heard_ms = CASE WHEN ?11 THEN ?12 ELSE heard_ms END, stalled = CASE WHEN ?11 THEN 0 ELSE stalled END, \
             conversation = ?13 \
             WHERE sid = ?1",
        )?;
        for (t, row) in self.live.changes() {
            self.facts.push((row.id.to_owned(), t.facts()));
            stmt.execute(params![
                row.key,
                row.agent_id,
                row.parent_id,
                row.goal,
                row.status,
                row.last_seen_us,
                row.event_count,
                row.state,
                row.detector,
                row.detect_upto,
                row.heard,
                self.now_ms,
                row.conversation
            ])?;
            if row.heard {
                if row.running {
                    self.silent.insert(row.key, (row.id.to_owned(), self.now_ms));
                } else {
                    self.silent.remove(&row.key);
                }
            }
        }
        Ok(())
    }
}
