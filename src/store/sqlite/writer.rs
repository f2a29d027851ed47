//! The single writer: one thread owns the only write connection and commits in groups.
//!
//! It blocks for the first job, drains whatever else is queued (up to [`MAX_GROUP_EVENTS`]),
//! runs all of it in one transaction with one fsync, then publishes to the hub and answers every
//! caller. Many concurrent requests thus share one commit, which is what makes durable ingest fast.
//! Session rows are updated in the same transaction as their events, from a cache of derived
//! states so a hot session is not re-read per event.

use super::{classify, Shared};
use crate::hub::{Hub, Message, MessageKind};
use crate::model::{Event, SessionState};
use crate::store::{Outcome, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Events per transaction: large enough to amortise the fsync, small enough to keep the ack of
/// the first request in a group prompt.
const MAX_GROUP_EVENTS: usize = 4096;
/// Derived states kept in memory; beyond this the cache is emptied (states are re-read on demand).
const MAX_CACHED_SESSIONS: usize = 20_000;

pub(super) enum Work {
    Ingest(Vec<Event>),
    Delete(String),
}

pub(super) enum Done {
    Ingest(Vec<Outcome>),
    Delete(bool),
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
    dirty: bool,
}

pub(super) struct Writer {
    conn: Connection,
    cache: HashMap<String, Cached>,
    hub: Arc<Hub>,
    shared: Arc<Shared>,
}

impl Writer {
    pub(super) fn new(conn: Connection, hub: Arc<Hub>, shared: Arc<Shared>) -> Self {
        conn.set_prepared_statement_cache_capacity(32);
        Writer {
            conn,
            cache: HashMap::new(),
            hub,
            shared,
        }
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
                            Work::Delete(_) => 1,
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
        let _ = self
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;");
    }

    fn commit_group(&mut self, jobs: Vec<(Work, oneshot::Sender<Result<Done, StoreError>>)>) {
        let (works, replies): (Vec<Work>, Vec<_>) = jobs.into_iter().unzip();
        let mut published = Vec::new();
        let result = self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            let mut done = Vec::with_capacity(works.len());
            for work in works {
                done.push(match work {
                    Work::Ingest(evs) => Done::Ingest(self.ingest(evs, &mut published)?),
                    Work::Delete(id) => Done::Delete(self.delete(&id, &mut published)?),
                });
            }
            self.flush_sessions()?;
            self.conn.execute_batch("COMMIT")?;
            Ok(done)
        });
        match result {
            Ok(done) => {
                self.shared.mark_writable();
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                if self.cache.len() > MAX_CACHED_SESSIONS {
                    self.cache.clear();
                }
                for msg in published {
                    self.hub.publish(msg);
                }
                for (reply, done) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // The cache may hold states of the rolled-back events.
                self.cache.clear();
                let err = classify(&e);
                self.shared.mark_failed(&err);
                tracing::error!(error = %e, "write transaction failed");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn session(&mut self, id: &str) -> rusqlite::Result<&mut Cached> {
        if !self.cache.contains_key(id) {
            let found = self
                .conn
                .prepare_cached("SELECT sid, state FROM sessions WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()?;
            let cached = match found {
                Some((sid, state)) => {
                    let state =
                        serde_json::from_str(&state).unwrap_or_else(|_| SessionState::new(id));
                    Cached {
                        sid,
                        state,
                        dirty: false,
                    }
                }
                None => {
                    let state = SessionState::new(id);
                    self.conn
                        .prepare_cached(
                            "INSERT INTO sessions (id, agent_id, status, last_seen_us, event_count, state) VALUES (?1, '', 'running', 0, 0, '{}')",
                        )?
                        .execute([id])?;
                    Cached {
                        sid: self.conn.last_insert_rowid(),
                        state,
                        dirty: true,
                    }
                }
            };
            self.cache.insert(id.to_owned(), cached);
        }
        Ok(self.cache.get_mut(id).expect("inserted above"))
    }

    fn ingest(
        &mut self,
        events: Vec<Event>,
        published: &mut Vec<Message>,
    ) -> rusqlite::Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(events.len());
        for ev in events {
            let sid = self.session(&ev.session_id)?.sid;
            let inserted = self
                .conn
                .prepare_cached("INSERT INTO events (sid, seq, body) VALUES (?1, ?2, ?3) ON CONFLICT (sid, seq) DO NOTHING")?
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
            let cached = self.session(&ev.session_id)?;
            cached.state.apply(&ev);
            cached.dirty = true;
            outcomes.push(Outcome::Stored { id });
            let (session_id, agent_id, kind) =
                (ev.session_id.clone(), ev.agent_id.clone(), ev.kind.clone());
            published.push(Message::new(
                MessageKind::Event,
                Some(id),
                session_id,
                agent_id,
                kind,
                ev.into_raw(),
            ));
        }
        Ok(outcomes)
    }

    fn flush_sessions(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE sessions SET agent_id = ?2, parent_id = ?3, goal = ?4, status = ?5, last_seen_us = ?6, event_count = ?7, state = ?8 WHERE sid = ?1",
        )?;
        for c in self.cache.values_mut().filter(|c| c.dirty) {
            let s = &c.state;
            let state = serde_json::to_string(s)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            stmt.execute(params![
                c.sid,
                s.agent_id(),
                s.parent_session_id(),
                s.goal(),
                s.status(),
                s.last_seen_us(),
                s.event_count(),
                state
            ])?;
            c.dirty = false;
        }
        Ok(())
    }

    fn delete(&mut self, id: &str, published: &mut Vec<Message>) -> rusqlite::Result<bool> {
        let sid: Option<i64> = self
            .conn
            .prepare_cached("SELECT sid FROM sessions WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(sid) = sid else { return Ok(false) };
        self.conn
            .prepare_cached("DELETE FROM events WHERE sid = ?1")?
            .execute([sid])?;
        self.conn
            .prepare_cached("DELETE FROM alerts WHERE sid = ?1")?
            .execute([sid])?;
        self.conn
            .prepare_cached("DELETE FROM sessions WHERE sid = ?1")?
            .execute([sid])?;
        self.cache.remove(id);
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
