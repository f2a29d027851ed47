//! An instance's writer: one task, one connection, group commit — and, unlike SQLite's, one of
//! many writers on the same database.
//!
//! What makes a fleet behave as one collector is in how a transaction takes its locks:
//! 1. the rows of the sessions it writes, in id order (`FOR UPDATE`, creating missing rows), and
//!    the parents its ending children will tell: events of one session are applied by one
//!    transaction at a time, whichever instance received them, and a copy of a session cached by
//!    this instance is used only if the row's `rev` says nobody else wrote it since;
//! 2. last, the one-row `aop_head`, held to the commit: positions are handed out in commit order,
//!    gap-free, and the `NOTIFY` sent with the commit wakes every instance's feed.
//!
//! A deadlock (two instances locking the same parent and child in opposite orders) or a
//! serialisation failure rolls the group back and runs it again; a lost connection fails the
//! group as `Unavailable` (503, retry) and is reopened for the next one.

use super::{classify, pool_error, Shared};
use crate::detect::{with_alert_id, DetectConfig, NewAlert};
use crate::model::Event;
use crate::store::apply::{Live, Tracked};
use crate::store::job::{Command, Job, Reply, Upkeep};
use crate::store::outbox::{Outbox, Settle, Settled, NEVER_ATTEMPTED};
use crate::store::{Outcome, Retention, StoreError};
use deadpool_postgres::{Object, Pool, Transaction};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Events per transaction (jobs are never split: a larger request is one transaction).
const MAX_GROUP_EVENTS: usize = 4096;
/// How far a span's event may move past the sequence its clock gave it (as in SQLite).
const MAX_SPAN_PROBES: i64 = 1024;
/// Sessions one retention pass deletes.
const RETAIN_BATCH: i64 = 200;
/// Stalled sessions one check alerts (the next check continues).
const STALL_BATCH: i64 = 500;
/// Times a group is run again after a deadlock or serialisation failure.
const RETRIES: usize = 5;
/// A transaction that takes longer than this is abandoned (its connection dropped, so the
/// database rolls it back and frees its locks): a server that stopped answering must not hold
/// every caller of the fleet.
const TXN_DEADLINE: Duration = Duration::from_secs(15);
/// Notices are kept this long for feeds that fell behind.
const NOTICE_TTL_MS: i64 = 3_600_000;
/// The advisory lock of retention ("aopretai"): one pass at a time in the fleet.
const RETAIN_LOCK: i64 = 0x616f_7072_6574_6169;
/// The channel every instance's feed listens on.
pub(super) const CHANNEL: &str = "aop_feed";

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Statements run through the connection's cache of prepared statements: parsing and planning
/// each statement anew would cost a round trip per statement of every group.
trait Cached {
    async fn q(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error>;
    async fn q1(&self, sql: &str, params: Params<'_>) -> Result<Row, tokio_postgres::Error>;
    async fn q_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, tokio_postgres::Error>;
    async fn x(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error>;
}

impl Cached for Transaction<'_> {
    async fn q(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.query(&self.prepare_cached(sql).await?, params).await
    }
    async fn q1(&self, sql: &str, params: Params<'_>) -> Result<Row, tokio_postgres::Error> {
        self.query_one(&self.prepare_cached(sql).await?, params).await
    }
    async fn q_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, tokio_postgres::Error> {
        self.query_opt(&self.prepare_cached(sql).await?, params).await
    }
    async fn x(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
        self.execute(&self.prepare_cached(sql).await?, params).await
    }
}

/// Why a transaction failed: run it again, or give up with this error.
enum Failure {
    Retry(tokio_postgres::Error),
    Fatal(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE => {
                Failure::Retry(e)
            }
            _ => Failure::Fatal(classify(&e)),
        }
    }
}

pub(super) struct Writer {
    /// A pool of one: it reconnects, and keeps the connection's prepared statements.
    pub(super) pool: Pool,
    pub(super) conn: Option<Object>,
    pub(super) live: Live,
    pub(super) shared: Arc<Shared>,
    pub(super) detect: DetectConfig,
    /// Pokes this instance's feed after a commit, so its own events go out without waiting
    /// for the notification's round trip.
    pub(super) feed: Arc<Notify>,
    /// The notification targets alerts go to.
    pub(super) outbox: Arc<Outbox>,
}

/// A write about to be stored, with its outcome's place in its job's answer.
/// Borrowed from the caller's job (kept whole for a rerun after a conflict), owned only when a
/// span's event moved to another sequence.
struct Pending<'a> {
    job: usize,
    index: usize,
    ev: Cow<'a, Event>,
}

/// What one group transaction wrote, for after its commit.
#[derive(Default)]
struct Written {
    sessions: HashMap<String, Tracked>,
    alerts: u64,
    /// Deliveries were written: wake the delivery worker.
    deliveries: bool,
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl Writer {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut stop = false;
        while !stop {
            let Some(first) = rx.recv().await else { break };
            let mut batches = Vec::new();
            let mut others = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match command {
                    Command::Run(Job::Ingest(evs, reply)) => {
                        events += evs.len();
                        batches.push((evs, reply));
                    }
                    Command::Run(Job::Upkeep(job)) => {
                        events += 1;
                        others.push(job);
                    }
                    Command::Shutdown => {
                        stop = true;
                        break;
                    }
                }
                if events < MAX_GROUP_EVENTS {
                    next = rx.try_recv().ok();
                }
            }
            if !batches.is_empty() {
                self.ingest_group(batches).await;
            }
            for job in others {
                self.upkeep(job).await;
            }
        }
    }

    /// The connection, reopened if it was lost.
    async fn client(&mut self) -> Result<&mut Object, StoreError> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = None;
            let conn = tokio::time::timeout(super::conn::CONNECT_TIMEOUT, self.pool.get())
                .await
                .map_err(|_| StoreError::Unavailable("no answer from PostgreSQL".into()))?
                .map_err(pool_error)?;
            // A rolled-back state must not survive a lost connection.
            self.live.clear();
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn failed(&mut self, e: &StoreError) {
        self.live.clear();
        if matches!(e, StoreError::Unavailable(_) | StoreError::Db(_)) {
            // The connection may be in any state (a transaction abandoned mid-way): close it,
            // so the database rolls back and frees its locks, and start afresh.
            if let Some(conn) = self.conn.take() {
                drop(Object::take(conn));
            }
        }
        self.shared.mark_failed(e);
        tracing::error!(error = %e, "write transaction failed");
    }

    async fn ingest_group(&mut self, batches: Vec<(Vec<Event>, Reply<Vec<Outcome>>)>) {
        let (jobs, replies): (Vec<Vec<Event>>, Vec<_>) = batches.into_iter().unzip();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let run = tokio::time::timeout(TXN_DEADLINE, self.try_ingest(&jobs)).await;
            match run {
                Ok(Ok(done)) => break Ok(done),
                Ok(Err(Failure::Retry(e))) if attempt <= RETRIES => {
                    tracing::debug!(error = %e, attempt, "write transaction conflicted; running it again");
                    self.live.clear();
                }
                Ok(Err(Failure::Retry(e))) => break Err(classify(&e)),
                Ok(Err(Failure::Fatal(e))) => break Err(e),
                Err(_) => break Err(StoreError::Unavailable("PostgreSQL did not answer in time".into())),
            }
        };
        match result {
            Ok((outcomes, written)) => {
                self.committed(written);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                self.failed(&e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn committed(&mut self, written: Written) {
        let deliveries = written.deliveries;
        self.shared.mark_writable();
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        self.shared.alerts.fetch_add(written.alerts, Ordering::Relaxed);
        self.shared.board.put(written.sessions.values().map(|t| (t.state.id.clone(), t.facts())));
        for (_, t) in written.sessions {
            self.live.insert(t);
        }
        self.live.committed();
        self.feed.notify_one();
        if deliveries {
            self.outbox.wake.notify_one();
        }
    }

    async fn try_ingest(&mut self, jobs: &[Vec<Event>]) -> Result<(Vec<Vec<Outcome>>, Written), Failure> {
        let detect = self.detect.clone();
        self.client().await.map_err(Failure::Fatal)?;
        let Writer { conn, live, outbox, .. } = self;
        let tx = conn.as_mut().expect("connected above").transaction().await?;
        let ids: BTreeSet<String> = jobs.iter().flatten().map(|e| e.session_id.clone()).collect();
        let mut sessions = lock_sessions(&tx, &ids, live, &detect).await?;
        // Parents that children ending in this group will tell, locked now rather than after
        // the head (where waiting for one could hold the whole fleet).
        let parents: BTreeSet<String> = jobs
            .iter()
            .flatten()
            .filter(|e| e.kind == "session.ended")
            .filter_map(|e| sessions.get(&e.session_id)?.state.parent_session_id().map(str::to_owned))
            .filter(|p| !sessions.contains_key(p))
            .collect();
        if !parents.is_empty() {
            let more = lock_sessions(&tx, &parents, live, &detect).await?;
            sessions.extend(more);
        }

        let mut pending = Vec::new();
        for (job, evs) in jobs.iter().enumerate() {
            for (index, ev) in evs.iter().enumerate() {
                pending.push(Pending { job, index, ev: Cow::Borrowed(ev) });
            }
        }
        let mut outcomes: Vec<Vec<Outcome>> = jobs.iter().map(|j| vec![Outcome::Duplicate; j.len()]).collect();
        let stored = existing(&tx, &sessions, &pending).await?;
        // Places taken earlier in this group: `(session key, sequence)` → index in `accepted`.
        let mut fresh: BTreeMap<(i64, i64), usize> = BTreeMap::new();
        let mut accepted: Vec<Pending> = Vec::with_capacity(pending.len());
        for p in pending {
            let sid = sessions[&p.ev.session_id].key;
            let p = match place(&tx, sid, &p.ev, &stored, &fresh, &accepted).await? {
                Ok(None) => p,
                Ok(Some(moved)) => Pending { ev: Cow::Owned(moved), ..p },
                Err(outcome) => {
                    outcomes[p.job][p.index] = outcome;
                    continue;
                }
            };
            fresh.insert((sid, p.ev.sequence), accepted.len());
            accepted.push(p);
        }

        if accepted.is_empty() {
            // Only retries and conflicts: nothing to order, so the head is left alone.
            tx.commit().await?;
            return Ok((outcomes, Written { sessions, alerts: 0, deliveries: false }));
        }
        let (mut head, mut notices, now_ms) = lock_head(&tx).await?;
        let created_at = rfc3339_ms(now_ms);
        let (mut pos_col, mut sid_col, mut seq_col, mut body_col) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut raised: Vec<(i64, String, String, Option<i64>, NewAlert)> = Vec::new();
        for p in &accepted {
            head += 1;
            let t = sessions.get_mut(&p.ev.session_id).expect("locked above");
            let applied = t.apply(head, &p.ev, &detect);
            let (sid, agent) = (t.key, t.state.agent_id().to_owned());
            for a in applied.alerts {
                raised.push((sid, p.ev.session_id.clone(), agent.clone(), Some(head), a));
            }
            if let Some(end) = applied.child_end {
                if !sessions.contains_key(&end.parent) {
                    // Not foreseen above (the child's parent was named in this very group).
                    let one = BTreeSet::from([end.parent.clone()]);
                    let more = lock_sessions(&tx, &one, live, &detect).await?;
                    sessions.extend(more);
                }
                let parent = sessions.get_mut(&end.parent).expect("locked above");
                if let Some(a) = parent.child_ended(&end, &detect) {
                    raised.push((parent.key, end.parent.clone(), parent.state.agent_id().to_owned(), Some(head), a));
                }
            }
            outcomes[p.job][p.index] = Outcome::Stored { id: head };
            pos_col.push(head);
            sid_col.push(sid);
            seq_col.push(p.ev.sequence);
            body_col.push(p.ev.raw());
        }
        let mut alert_counts: HashMap<i64, i64> = HashMap::new();
        let mut alerts = Vec::with_capacity(raised.len());
        let mut deliveries = false;
        for (sid, session_id, agent, event_id, a) in &raised {
            notices += 1;
            *alert_counts.entry(*sid).or_default() += 1;
            let targets: Vec<&str> = outbox.targets_for(a.kind, agent).collect();
            deliveries |= !targets.is_empty();
            let at = At { created_at: &created_at, notice: notices, now_ms };
            alerts.push(store_alert(&tx, *sid, session_id, agent, *event_id, a, at, targets));
        }
        // Everything written under the head's lock goes in one pipelined round trip, so the
        // lock (the fleet's one ordering point) is held for as little as the commit needs.
        let insert = tx.prepare_cached(
            "INSERT INTO aop_events (pos, sid, seq, body) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])",
        );
        let insert = insert.await?;
        let columns: [&(dyn ToSql + Sync); 4] = [&pos_col, &sid_col, &seq_col, &body_col];
        let writes = tx.execute(&insert, &columns);
        tokio::try_join!(
            async { writes.await.map_err(Failure::from) },
            futures_util::future::try_join_all(alerts),
            flush_sessions(&tx, &mut sessions, &alert_counts, now_ms),
            release_head(&tx, head, notices),
        )?;
        tx.commit().await?;
        Ok((outcomes, Written { sessions, alerts: raised.len() as u64, deliveries }))
    }

    /// Deletion, pins, stalls, retention and deliveries, each in a transaction of its own.
    async fn upkeep(&mut self, job: Upkeep) {
        match job {
            Upkeep::Delete(id, reply) => {
                let r = self.txn(|tx| Box::pin(delete(tx, id.clone()))).await;
                if matches!(r, Ok(true)) {
                    self.live.remove(&id);
                    self.shared.board.forget(&id);
                    self.feed.notify_one();
                }
                let _ = reply.send(r);
            }
            Upkeep::Pin(id, pinned, reply) => {
                let r = self.txn(|tx| Box::pin(pin(tx, id.clone(), pinned))).await;
                let _ = reply.send(r);
            }
            Upkeep::Stalls(reply) => {
                let detect = self.detect.clone();
                let outbox = Arc::clone(&self.outbox);
                let r = self.txn(|tx| Box::pin(stalls(tx, detect.clone(), Arc::clone(&outbox)))).await;
                if matches!(r, Ok(n) if n > 0) {
                    self.feed.notify_one();
                    self.outbox.wake.notify_one();
                }
                let _ = reply.send(r);
            }
            Upkeep::Settle(settled, reply) => {
                let r = self.txn(|tx| Box::pin(settle_deliveries(tx, settled.clone()))).await;
                let _ = reply.send(r);
            }
            Upkeep::Expire(keep, max_age_ms, reply) => {
                let r = self.txn(|tx| Box::pin(expire_deliveries(tx, keep.clone(), max_age_ms))).await;
                let _ = reply.send(r);
            }
            Upkeep::Retain(policy, reply) => {
                let r = self.txn(|tx| Box::pin(retain(tx, policy))).await;
                if matches!(r, Ok(n) if n > 0) {
                    self.live.clear();
                    self.feed.notify_one();
                }
                let _ = reply.send(r);
            }
        }
    }

    /// Runs `f` in a transaction, again after a conflict, within [`TXN_DEADLINE`].
    async fn txn<T>(
        &mut self,
        f: impl for<'a> Fn(&'a Transaction<'a>) -> futures_util::future::BoxFuture<'a, Result<T, Failure>>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let run = async {
                let client = self.client().await.map_err(Failure::Fatal)?;
                let tx = client.transaction().await?;
                let out = f(&tx).await?;
                tx.commit().await?;
                Ok::<T, Failure>(out)
            };
            match tokio::time::timeout(TXN_DEADLINE, run).await {
                Ok(Ok(v)) => break Ok(v),
                Ok(Err(Failure::Retry(_))) if attempt <= RETRIES => continue,
                Ok(Err(Failure::Retry(e))) => break Err(classify(&e)),
                Ok(Err(Failure::Fatal(e))) => break Err(e),
                Err(_) => break Err(StoreError::Unavailable("PostgreSQL did not answer in time".into())),
            }
        };
        match &result {
            Ok(_) => self.shared.mark_writable(),
            Err(e) => self.failed(e),
        }
        result
    }
}

/// Locks the rows of `ids` in id order (creating those that do not exist) and returns each
/// session as of its row: the cached copy, taken out of `live`, when the row's `rev` matches it
/// (it goes back only if the transaction commits), else read back and caught up from the events
/// stored after its saved detector state.
async fn lock_sessions(
    tx: &Transaction<'_>,
    ids: &BTreeSet<String>,
    live: &mut Live,
    detect: &DetectConfig,
) -> Result<HashMap<String, Tracked>, Failure> {
    let list: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut found: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in tx.q("SELECT id, sid, rev FROM aop_sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&list]).await? {
        found.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let missing: Vec<&str> = list.iter().copied().filter(|id| !found.contains_key(*id)).collect();
    if !missing.is_empty() {
        // A row another instance creates at the same moment makes ours wait for its commit and
        // then conflict: it is locked with the others after.
        for r in tx
            .q(
                "INSERT INTO aop_sessions (id, agent_id, status, last_seen_us, event_count, state) \
                 SELECT id, '', 'running', 0, 0, '{}' FROM unnest($1::text[]) AS u(id) ORDER BY id \
                 ON CONFLICT (id) DO NOTHING RETURNING id, sid, rev",
                &[&missing],
            )
            .await?
        {
            found.insert(r.get(0), (r.get(1), r.get(2)));
        }
        let raced: Vec<&str> = missing.iter().copied().filter(|id| !found.contains_key(*id)).collect();
        if !raced.is_empty() {
            for r in tx
                .q("SELECT id, sid, rev FROM aop_sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&raced])
                .await?
            {
                found.insert(r.get(0), (r.get(1), r.get(2)));
            }
        }
    }
    let mut out = HashMap::with_capacity(found.len());
    let mut stale = Vec::new();
    for (id, (sid, rev)) in found {
        match live.take(&id) {
            Some(t) if t.key == sid && t.rev == rev => {
                out.insert(id, t);
            }
            _ if rev == 0 => {
                out.insert(id.clone(), Tracked::fresh(sid, &id));
            }
            _ => stale.push((id, sid, rev)),
        }
    }
    for (id, sid, rev) in stale {
        let row = tx.q1("SELECT state, detect, detect_upto FROM aop_sessions WHERE sid = $1", &[&sid]).await?;
        let (state, detector, upto): (String, Option<String>, i64) = (row.get(0), row.get(1), row.get(2));
        let mut t = Tracked::loaded(sid, &id, &state, detector.as_deref(), upto);
        t.rev = rev;
        for r in
            tx.q("SELECT pos, body FROM aop_events WHERE sid = $1 AND pos > $2 ORDER BY pos", &[&sid, &upto]).await?
        {
            if let Ok(ev) = Event::parse(r.get::<_, &str>(1)) {
                t.replay(r.get(0), &ev, detect);
            }
        }
        out.insert(id, t);
    }
    Ok(out)
}

/// The stored bodies at the `(session, sequence)` places the group's events ask for.
async fn existing(
    tx: &Transaction<'_>,
    sessions: &HashMap<String, Tracked>,
    pending: &[Pending<'_>],
) -> Result<HashMap<(i64, i64), String>, Failure> {
    let sids: Vec<i64> = pending.iter().map(|p| sessions[&p.ev.session_id].key).collect();
    let seqs: Vec<i64> = pending.iter().map(|p| p.ev.sequence).collect();
    let rows = tx
        .q(
            "SELECT e.sid, e.seq, e.body FROM aop_events e \
             JOIN unnest($1::bigint[], $2::bigint[]) AS k(sid, seq) ON e.sid = k.sid AND e.seq = k.seq",
            &[&sids, &seqs],
        )
        .await?;
    Ok(rows.into_iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// Where an event goes: its own place (`None`), another (`Some`, moved), or why not (a retry, or
/// another event holds it). An event derived from a span moves to the next free sequence instead,
/// finding itself on the way if it is a retry (as in SQLite: sequences are only filled, never
/// freed).
async fn place(
    tx: &Transaction<'_>,
    sid: i64,
    ev: &Event,
    stored: &HashMap<(i64, i64), String>,
    fresh: &BTreeMap<(i64, i64), usize>,
    accepted: &[Pending<'_>],
) -> Result<Result<Option<Event>, Outcome>, Failure> {
    let key = (sid, ev.sequence);
    let held = fresh.get(&key).map(|&i| accepted[i].ev.raw()).or_else(|| stored.get(&key).map(String::as_str));
    let Some(held) = held else {
        return Ok(Ok(None));
    };
    let Some(span) = ev.span_ref() else {
        return Ok(Err(if Event::same_content(held, ev.raw()) { Outcome::Duplicate } else { Outcome::Conflict }));
    };
    let mut window: BTreeMap<i64, String> = tx
        .q(
            "SELECT seq, body FROM aop_events WHERE sid = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
            &[&sid, &ev.sequence, &(ev.sequence + MAX_SPAN_PROBES)],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (&(_, q), &i) in fresh.range((sid, ev.sequence)..(sid, ev.sequence + MAX_SPAN_PROBES)) {
        window.insert(q, accepted[i].ev.raw().to_owned());
    }
    let mut free = ev.sequence;
    while let Some(body) = window.get(&free) {
        if span.matches_stored(body) {
            return Ok(Err(Outcome::Duplicate));
        }
        free += 1;
    }
    if free - ev.sequence >= MAX_SPAN_PROBES {
        return Ok(Err(Outcome::Conflict));
    }
    Ok(ev.with_sequence(free).map(Some).map_err(|_| Outcome::Conflict))
}

/// Takes the fleet's ordering point: the last positions given out, and the database's clock.
async fn lock_head(tx: &Transaction<'_>) -> Result<(i64, i64, i64), Failure> {
    let r = tx
        .q1(
            "SELECT events, notices, (extract(epoch FROM clock_timestamp()) * 1000)::bigint FROM aop_head FOR UPDATE",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1), r.get(2)))
}

/// Records the positions given out and wakes every feed once the transaction commits.
async fn release_head(tx: &Transaction<'_>, events: i64, notices: i64) -> Result<(), Failure> {
    let sql = "WITH moved AS (UPDATE aop_head SET events = $1, notices = $2) SELECT pg_notify($3, $4)";
    tx.x(sql, &[&events, &notices, &CHANNEL, &events.to_string()]).await?;
    Ok(())
}

/// When an alert is stored: its `created_at`, its notice's position and the database's clock.
#[derive(Clone, Copy)]
struct At<'a> {
    created_at: &'a str,
    notice: i64,
    now_ms: i64,
}

/// Stores an alert, its notice for every instance's feed and its deliveries to `targets`.
#[allow(clippy::too_many_arguments)]
async fn store_alert(
    tx: &Transaction<'_>,
    sid: i64,
    session_id: &str,
    agent: &str,
    event_id: Option<i64>,
    a: &NewAlert,
    at: At<'_>,
    targets: Vec<&str>,
) -> Result<(), Failure> {
    let At { created_at, notice, now_ms } = at;
    let body = a.to_json(session_id, None, Some(created_at));
    let id: i64 = tx
        .q1(
            "INSERT INTO aop_alerts (sid, session_id, type, event_id, body) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&sid, &session_id, &a.kind.as_str(), &event_id, &body],
        )
        .await?
        .get(0);
    tx.x(
        "INSERT INTO aop_notices (pos, kind, session_id, agent_id, type, body, created_ms) \
         VALUES ($1, 'alert', $2, $3, $4, $5, $6)",
        &[&notice, &session_id, &agent, &a.kind.as_str(), &with_alert_id(&body, id), &now_ms],
    )
    .await?;
    if !targets.is_empty() {
        tx.x(
            "INSERT INTO aop_deliveries (alert_id, target, state, created_ms, next_ms) \
             SELECT $1, t, 'pending', $3, $3 FROM unnest($2::text[]) AS t",
            &[&id, &targets, &now_ms],
        )
        .await?;
    }
    Ok(())
}

/// Writes every changed session row, bumping its `rev` (and the cached copy's with it).
async fn flush_sessions(
    tx: &Transaction<'_>,
    sessions: &mut HashMap<String, Tracked>,
    alert_counts: &HashMap<i64, i64>,
    now_ms: i64,
) -> Result<(), Failure> {
    let stmt = tx
        .prepare_cached(
            "UPDATE aop_sessions SET agent_id = $2, parent_id = $3, goal = $4, status = $5, last_seen_us = $6, \
             event_count = $7, state = $8, \
             detect = CASE WHEN $9::text IS NULL THEN detect ELSE $9 END, \
             detect_upto = CASE WHEN $9::text IS NULL THEN detect_upto ELSE $10 END, \
             heard_ms = CASE WHEN $11 THEN $12 ELSE heard_ms END, stalled = stalled AND NOT $11, \
             conversation = $13, alert_count = alert_count + $14, rev = rev + 1 \
             WHERE sid = $1",
        )
        .await?;
    let mut writes = Vec::new();
    for t in sessions.values_mut() {
        let Some(snap) = t.snapshot() else { continue };
        t.rev += 1;
        let (detector, upto) = snap.detector.map_or((None, 0), |(d, upto)| (Some(d), upto));
        let s = &t.state;
        let alerts = alert_counts.get(&t.key).copied().unwrap_or(0);
        writes.push((
            t.key,
            s.agent_id().to_owned(),
            s.parent_session_id().map(str::to_owned),
            s.goal().map(str::to_owned),
            s.status().to_owned(),
            s.last_seen_us(),
            s.event_count(),
            snap.state,
            detector,
            upto,
            snap.heard,
            s.conversation_id().map(str::to_owned),
            alerts,
        ));
    }
    // Pipelined: one round trip for all of them.
    type Sql<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let params: Vec<[Sql<'_>; 14]> = writes
        .iter()
        .map(|w| -> [Sql<'_>; 14] {
            [&w.0, &w.1, &w.2, &w.3, &w.4, &w.5, &w.6, &w.7, &w.8, &w.9, &w.10, &now_ms, &w.11, &w.12]
        })
        .collect();
    futures_util::future::try_join_all(params.iter().map(|p| tx.execute(&stmt, p))).await?;
    Ok(())
}

async fn delete(tx: &Transaction<'_>, id: String) -> Result<bool, Failure> {
    let Some(row) = tx.q_opt("SELECT sid FROM aop_sessions WHERE id = $1 FOR UPDATE", &[&id]).await? else {
        return Ok(false);
    };
    let sid: i64 = row.get(0);
    delete_sid(tx, sid, &id).await?;
    Ok(true)
}

/// Deletes a locked session and tells every feed (taking the head for the notice's position).
async fn delete_sid(tx: &Transaction<'_>, sid: i64, id: &str) -> Result<(), Failure> {
    tx.x("DELETE FROM aop_events WHERE sid = $1", &[&sid]).await?;
    tx.x("DELETE FROM aop_deliveries WHERE alert_id IN (SELECT id FROM aop_alerts WHERE sid = $1)", &[&sid]).await?;
    tx.x("DELETE FROM aop_alerts WHERE sid = $1", &[&sid]).await?;
    tx.x("DELETE FROM aop_sessions WHERE sid = $1", &[&sid]).await?;
    let (events, notices, now_ms) = lock_head(tx).await?;
    let body = serde_json::json!({ "session_id": id }).to_string();
    tx.x(
        "INSERT INTO aop_notices (pos, kind, session_id, agent_id, type, body, created_ms) \
         VALUES ($1, 'deleted', $2, '', '', $3, $4)",
        &[&(notices + 1), &id, &body, &now_ms],
    )
    .await?;
    release_head(tx, events, notices + 1).await
}

async fn pin(tx: &Transaction<'_>, id: String, pinned: bool) -> Result<bool, Failure> {
    let n = tx.x("UPDATE aop_sessions SET pinned = $2 WHERE id = $1 AND event_count > 0", &[&id, &pinned]).await?;
    Ok(n > 0)
}

/// Alerts running sessions silent past the stall threshold (the database's clock). Each is
/// locked and marked in the transaction that alerts it, and sessions another instance is
/// writing or checking are skipped: one alert in the fleet, whichever instance's timer fires.
async fn stalls(tx: &Transaction<'_>, cfg: DetectConfig, outbox: Arc<Outbox>) -> Result<usize, Failure> {
    if !cfg.stall_enabled {
        return Ok(0);
    }
    tx.x(
        "DELETE FROM aop_notices WHERE created_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1",
        &[&NOTICE_TTL_MS],
    )
    .await?;
    let shortest = cfg.stall_after_secs.min(cfg.stall_after_tool_secs);
    let rows = tx
        .q(
            "SELECT sid, id, heard_ms, state, detect, detect_upto, \
                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now \
             FROM aop_sessions \
             WHERE status = 'running' AND NOT stalled AND event_count > 0 \
               AND heard_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1 \
             ORDER BY heard_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&((shortest * 1000.0) as i64), &STALL_BATCH],
        )
        .await?;
    let mut raised = Vec::new();
    for r in rows {
        let (sid, id, heard_ms, state, detector, upto, now): (i64, String, i64, String, Option<String>, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
        // The open tool call the rule asks about may be in events after the saved detector
        // state: replay them (at most a checkpoint's worth).
        let mut t = Tracked::loaded(sid, &id, &state, detector.as_deref(), upto);
        for e in
            tx.q("SELECT pos, body FROM aop_events WHERE sid = $1 AND pos > $2 ORDER BY pos", &[&sid, &upto]).await?
        {
            if let Ok(ev) = Event::parse(e.get::<_, &str>(1)) {
                t.replay(e.get(0), &ev, &cfg);
            }
        }
        let silent_secs = (now - heard_ms) as f64 / 1000.0;
        let tool_open = t.detector.has_open_tool_call();
        if let Some(alert) =
            crate::detect::stall_check(silent_secs, t.state.may_stall(tool_open), tool_open, false, &cfg)
        {
            raised.push((sid, id, t.state.agent_id().to_owned(), alert));
        }
    }
    if raised.is_empty() {
        return Ok(0);
    }
    let (events, mut notices, now_ms) = lock_head(tx).await?;
    let created_at = rfc3339_ms(now_ms);
    for (sid, id, agent, alert) in &raised {
        notices += 1;
        let targets: Vec<&str> = outbox.targets_for(alert.kind, agent).collect();
        let at = At { created_at: &created_at, notice: notices, now_ms };
        store_alert(tx, *sid, id, agent, None, alert, at, targets).await?;
        tx.x("UPDATE aop_sessions SET stalled = true, alert_count = alert_count + 1 WHERE sid = $1", &[sid]).await?;
    }
    release_head(tx, events, notices).await?;
    Ok(raised.len())
}

/// Deletes ended, unpinned sessions older than the policy's age (the database's clock), one
/// pass at a time in the fleet.
async fn retain(tx: &Transaction<'_>, policy: Retention) -> Result<usize, Failure> {
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
    for r in &rows {
        delete_sid(tx, r.get(0), r.get::<_, &str>(1)).await?;
    }
    Ok(rows.len())
}

/// The database's clock, in ms since the epoch.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

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
