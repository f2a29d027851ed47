//! The single writer: one thread owns the only write connection and commits in groups.
//!
//! It blocks for the first job, drains whatever else is queued (up to [`MAX_GROUP_EVENTS`]),
//! runs all of it in one transaction with one fsync, then publishes to the hub and answers every
//! caller. Many concurrent requests thus share one commit, which is what makes durable ingest fast.
//! What an event does to its session and detectors is [`crate::store::apply`]'s business; this
//! file writes its outcome (the session row, the alerts) in the same transaction as the event.
//! Upkeep jobs (stalls, retention, deletion, pins) are in [`super::upkeep`].

use super::shared::{classify, Shared};
use crate::detect::{with_alert_id, DetectConfig, NewAlert};
use crate::hub::{Hub, Message, MessageKind};
use crate::model::Event;
use crate::store::apply::{ChildEnd, Live, Tracked};
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
/// How far a span's event may move past the sequence its clock gave it: that many events of one
/// trace would have to share a microsecond.
const MAX_SPAN_PROBES: i64 = 1024;
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

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
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
                Some((sid, state, detector, upto)) => {
                    let mut t = Tracked::loaded(sid, id, &state, detector.as_deref(), upto);
                    self.catch_up(&mut t)?;
                    t
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

    /// Replays the events stored after the session's saved detector state into it.
    fn catch_up(&self, t: &mut Tracked) -> rusqlite::Result<()> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, body FROM events WHERE sid = ?1 AND id > ?2 ORDER BY id")?;
        let mut rows = stmt.query(params![t.key, t.detect_upto()])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if let Ok(ev) = Event::parse(row.get_ref(1)?.as_str().unwrap_or_default()) {
                t.replay(id, &ev, &self.detect);
            }
        }
        Ok(())
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
            let agent = tracked.state.agent_id().to_owned();
            self.raise(sid, &ev.session_id, &agent, Some(id), applied.alerts)?;
            if let Some(end) = applied.child_end {
                self.child_ended(&end, id)?;
            }
            outcomes.push(Outcome::Stored { id });
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
    /// (its sequence comes from the span's clock, which other spans may share); a retry of it
    /// finds itself on the way there, since sequences are only ever filled, never freed, while
    /// the session exists.
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
        let Some(span) = ev.span_ref() else {
            let stored: String = self
                .conn
                .prepare_cached("SELECT body FROM events WHERE sid = ?1 AND seq = ?2")?
                .query_row(params![sid, ev.sequence], |r| r.get(0))?;
            return Ok(Err(if Event::same_content(&stored, ev.raw()) {
                Outcome::Duplicate
            } else {
                Outcome::Conflict
            }));
        };
        let mut free = ev.sequence;
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT seq, body FROM events WHERE sid = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3")?;
            let mut rows = stmt.query(params![sid, ev.sequence, MAX_SPAN_PROBES])?;
            while let Some(row) = rows.next()? {
                if row.get::<_, i64>(0)? != free {
                    break;
                }
                if span.matches_stored(row.get_ref(1)?.as_str().unwrap_or_default()) {
                    return Ok(Err(Outcome::Duplicate));
                }
                free += 1;
            }
        }
        if free - ev.sequence >= MAX_SPAN_PROBES {
            return Ok(Err(Outcome::Conflict));
        }
        let Ok(moved) = ev.with_sequence(free) else { return Ok(Err(Outcome::Conflict)) };
        self.conn.prepare_cached("INSERT INTO events (sid, seq, body) VALUES (?1, ?2, ?3)")?.execute(params![
            sid,
            moved.sequence,
            moved.raw()
        ])?;
        Ok(Ok(moved))
    }

    /// Children failing together are alerted on their parent.
    fn child_ended(&mut self, end: &ChildEnd, event_id: i64) -> rusqlite::Result<()> {
        let cfg = self.detect.clone();
        let parent = self.session(&end.parent)?;
        let alert = parent.child_ended(end, &cfg);
        let (sid, agent) = (parent.key, parent.state.agent_id().to_owned());
        self.raise(sid, &end.parent, &agent, Some(event_id), alert.into_iter().collect())
    }

    /// Stores alerts (in the transaction of their trigger) and queues them for the stream.
    pub(super) fn raise(
        &mut self,
        sid: i64,
        session_id: &str,
        agent_id: &str,
        event_id: Option<i64>,
        alerts: Vec<NewAlert>,
    ) -> rusqlite::Result<()> {
        let created_at = rfc3339_ms(self.now_ms);
        for a in alerts {
            let body = a.to_json(session_id, None, Some(&created_at));
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
            for target in self.outbox.targets_for(a.kind, agent_id) {
                self.conn
                    .prepare_cached(
                        "INSERT INTO deliveries (alert_id, target, state, created_ms, next_ms) \
                         VALUES (?1, ?2, 'pending', ?3, ?3)",
                    )?
                    .execute(params![id, target, self.now_ms])?;
                self.delivering = true;
            }
            let data = with_alert_id(&body, id);
            self.published.push(Message::alert(
                session_id.to_owned(),
                agent_id.to_owned(),
                a.kind.as_str().to_owned(),
                data,
            ));
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
        for (t, snap) in self.live.snapshots() {
            self.facts.push((t.state.id.clone(), t.facts()));
            let s = &t.state;
            let (detector, upto) = snap.detector.map_or((None, 0), |(d, upto)| (Some(d), upto));
            stmt.execute(params![
                t.key,
                s.agent_id(),
                s.parent_session_id(),
                s.goal(),
                s.status(),
                s.last_seen_us(),
                s.event_count(),
                snap.state,
                detector,
                upto,
                snap.heard,
                self.now_ms,
                s.conversation_id()
            ])?;
            if snap.heard {
                if s.is_running() {
                    self.silent.insert(t.key, (s.id.clone(), self.now_ms));
                } else {
                    self.silent.remove(&t.key);
                }
            }
        }
        Ok(())
    }
}
