//! An instance's writer: one task, one connection, group commit — and, unlike SQLite's, one of
//! many writers on the same database.
//!
//! It waits for the first job, takes whatever else is queued (up to [`MAX_GROUP_EVENTS`]), runs
//! the ingest jobs together in one transaction ([`super::ingest`]: how its locks make a fleet
//! behave as one collector), then each upkeep job in a transaction of its own
//! ([`super::upkeep`]). A deadlock (two instances locking the same parent and child in opposite
//! orders) or a serialisation failure rolls a transaction back and runs it again; a lost
//! connection fails it as `Unavailable` (503, retry) and is reopened for the next one.

use super::ingest::{ingest, Written};
use super::sql::GroupIds;
use super::{classify, pool_error, Shared};
use crate::detect::DetectConfig;
use crate::model::Event;
use crate::store::apply::Live;
use crate::store::job::{Command, Job, Reply};
use crate::store::outbox::Outbox;
use crate::store::{Outcome, StoreError};
use deadpool_postgres::{Object, Pool, Transaction};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::error::SqlState;

/// Events per transaction (jobs are never split: a larger request is one transaction).
const MAX_GROUP_EVENTS: usize = 4096;
/// Times a group is run again after a deadlock or serialisation failure.
const RETRIES: usize = 5;
/// A transaction that takes longer than this is abandoned (its connection dropped, so the
/// database rolls it back and frees its locks): a server that stopped answering must not hold
/// every caller of the fleet.
const TXN_DEADLINE: Duration = Duration::from_secs(15);

/// Why a transaction failed: run it again, or give up with this error.
pub(super) enum Failure {
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
    /// Pokes this instance's sequencer after a commit that wrote a group, so its events are
    /// numbered (and go out) without waiting for the sequencer's poll.
    pub(super) sequencer: Arc<Notify>,
    /// Names this writer's groups.
    pub(super) groups: GroupIds,
    /// The notification targets alerts go to.
    pub(super) outbox: Arc<Outbox>,
}

/// The writer's connection, reopened if it was lost (forgetting the cached sessions: a
/// rolled-back state must not survive a lost connection).
async fn connect<'c>(conn: &'c mut Option<Object>, pool: &Pool, live: &mut Live) -> Result<&'c mut Object, StoreError> {
    // A closed connection goes back to the pool, which discards it.
    drop(conn.take_if(|c| c.is_closed()));
    match conn {
        Some(c) => Ok(c),
        None => {
            let c = tokio::time::timeout(super::conn::CONNECT_TIMEOUT, pool.get())
                .await
                .map_err(|_| StoreError::Unavailable("no answer from PostgreSQL".into()))?
                .map_err(pool_error)?;
            live.clear();
            Ok(conn.insert(c))
        }
    }
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

    /// One attempt at the group's ingest transaction.
    async fn try_ingest(&mut self, jobs: &[Vec<Event>]) -> Result<(Vec<Vec<Outcome>>, Written), Failure> {
        let Writer { pool, conn, live, detect, outbox, groups, .. } = self;
        let client = connect(conn, pool, live).await.map_err(Failure::Fatal)?;
        let grp = groups.next(client).await?;
        let out = ingest(client, grp, jobs, live, detect, outbox).await;
        if out.is_err() {
            // The transaction may be open (or aborted): end it before the connection's next
            // one. A connection that cannot even roll back is dropped (the server then does).
            if client.batch_execute("ROLLBACK").await.is_err() {
                drop(Object::take(conn.take().expect("connected above")));
            }
        }
        out
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
        self.sequencer.notify_one();
        if deliveries {
            self.outbox.wake.notify_one();
        }
    }

    /// Runs `f` in a transaction, again after a conflict, within [`TXN_DEADLINE`], with the
    /// group its notices (if any) go under.
    pub(super) async fn txn<T>(
        &mut self,
        f: impl for<'a> Fn(&'a Transaction<'a>, i64) -> futures_util::future::BoxFuture<'a, Result<T, Failure>>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let run = async {
                let client = connect(&mut self.conn, &self.pool, &mut self.live).await.map_err(Failure::Fatal)?;
                let grp = self.groups.next(client).await?;
                let tx = client.transaction().await?;
                let out = f(&tx, grp).await?;
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
