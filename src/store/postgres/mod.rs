//! The PostgreSQL backend: any number of `aop` instances on one database behave as one collector.
//!
//! Each instance has one writer task ([`writer`]: group commit; its ingest transaction,
//! [`ingest`], locks session rows in the database and stores its events under a group of its
//! own; its other jobs are [`upkeep`]), a sequencer ([`sequencer`]) that gives the fleet's
//! committed groups their stream positions, a feed ([`feed`]) that publishes to this
//! instance's subscribers what *any* instance committed, in position order (woken by
//! `LISTEN/NOTIFY`, with a poll beside it), and a bounded pool of connections for reads
//! ([`read`]). Nothing a client sees depends on which instance it talks to.

pub mod conn;
mod feed;
mod ingest;
mod read;
mod schema;
mod sequencer;
mod sql;
mod upkeep;
mod writer;

use super::counters::Shared;
use super::job::{Command, Job, Reply, Upkeep};
use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;
use writer::Writer;

/// How long an ingest call may wait for its commit before it answers 503: an SDK must never
/// hang on a database that stopped answering.
const INGEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a read may wait for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(3);

/// What the feed and `/health` share besides the writer's counters.
#[derive(Default)]
pub(super) struct Reach {
    /// The feed's last query reached the database.
    ok: AtomicBool,
    error: Mutex<Option<String>>,
    /// The database's size, read now and then by the feed.
    bytes: AtomicU64,
    /// The sequencing backlog, read by the feed at most once per poll.
    unsequenced: Mutex<Unsequenced>,
}

pub struct PgStore {
    shown: String,
    tx: mpsc::Sender<Command>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pool: Pool,
    shared: Arc<Shared>,
    reach: Arc<Reach>,
    stop: CancellationToken,
}

/// An error with its causes ("error connecting to server: Connection refused"): tokio-postgres
/// keeps the useful part of a failure in its source.
fn full(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Maps PostgreSQL's errors to what callers act on: a server that cannot be reached, is
/// shutting down or starting, or cancelled a statement that ran too long is `Unavailable` (503,
/// retry); a deadlock that survived its retries is `Busy`.
pub(super) fn classify(e: &tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        return StoreError::Unavailable(full(e));
    };
    if *code == SqlState::DISK_FULL {
        StoreError::Full
    } else if *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        StoreError::Busy
    } else if code.code().starts_with("08")
        || code.code().starts_with("57")
        || code.code().starts_with("53")
        || *code == SqlState::QUERY_CANCELED
    {
        StoreError::Unavailable(full(e))
    } else {
        StoreError::db(std::io::Error::other(full(e)))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(&e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl PgStore {
    /// Connects, migrates (once across instances starting together), and starts the writer,
    /// the feed and its listener.
    pub async fn open(url: &str, opts: OpenOptions, hub: Arc<Hub>) -> Result<PgStore, StoreError> {
        let target = conn::Target::parse(url).map_err(|reason| StoreError::Open { path: "--db".into(), reason })?;
        let shown = target.shown().to_owned();
        let open_err = |reason: String| StoreError::Open { path: shown.clone(), reason: target.scrub(reason) };
        let (mut client, connection) = tokio::time::timeout(conn::CONNECT_TIMEOUT, target.connect())
            .await
            .map_err(|_| open_err("no answer within the connect timeout".into()))?
            .map_err(|e| open_err(full(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "writer connection ended");
            }
        });
        match schema::migrate(&mut client).await.map_err(|e| open_err(full(&e)))? {
            schema::Migrated::Ready => {}
            schema::Migrated::Newer(found) => {
                return Err(StoreError::NewerSchema { path: shown, found, supported: schema::CURRENT })
            }
        }
        let head =
            client.query_one("SELECT events, notices FROM aop_head", &[]).await.map_err(|e| open_err(full(&e)))?;
        let (events, notices): (i64, i64) = (head.get(0), head.get(1));
        hub.advance_to(events);

        drop(client);
        let pool = |size: usize| {
            let manager = Manager::from_config(
                target.config().clone(),
                target.tls(),
                ManagerConfig { recycling_method: RecyclingMethod::Fast },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(Runtime::Tokio1)
                .timeouts(Timeouts {
                    wait: Some(POOL_WAIT),
                    create: Some(conn::CONNECT_TIMEOUT),
                    recycle: Some(conn::CONNECT_TIMEOUT),
                })
                .build()
                .map_err(|e| open_err(e.to_string()))
        };
        let (pool, writer_pool) = (pool(opts.pool_size)?, pool(1)?);

        let shared = Arc::new(Shared { writable: AtomicBool::new(true), ..Default::default() });
        let reach = Arc::new(Reach { ok: AtomicBool::new(true), ..Default::default() });
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let sequence = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let writer = Writer {
            pool: writer_pool,
            conn: None,
            live: Default::default(),
            shared: Arc::clone(&shared),
            detect: opts.detect,
            sequencer: Arc::clone(&sequence),
            groups: Default::default(),
            outbox: opts.outbox,
        };
        let writer = tokio::spawn(writer.run(rx));
        let sequencer = sequencer::Sequencer { target: target.clone(), wake: sequence, feed: Arc::clone(&wake) };
        tokio::spawn(sequencer.run(stop.clone()));
        tokio::spawn(feed::listen(target.clone(), Arc::clone(&wake), stop.clone()));
        let follower = feed::Feed {
            pool: pool.clone(),
            hub,
            events,
            notices,
            shared: Arc::clone(&shared),
            reach: Arc::clone(&reach),
        };
        tokio::spawn(follower.run(wake, stop.clone()));
        Ok(PgStore { shown, tx, writer: Mutex::new(Some(writer)), pool, shared, reach, stop })
    }

    /// Queues a job for the writer and waits for its answer, within [`INGEST_DEADLINE`].
    async fn submit<T, J: Into<Job>>(&self, job: impl FnOnce(Reply<T>) -> J) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(Command::Run(job(reply).into())) {
            self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => StoreError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            });
        }
        match tokio::time::timeout(INGEST_DEADLINE, rx).await {
            Ok(answer) => answer.map_err(|_| StoreError::Closed)?,
            Err(_) => Err(StoreError::Unavailable("the database did not commit in time".into())),
        }
    }

    /// Runs a read on a pooled connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut deadpool_postgres::Client) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        f(&mut client).await.map_err(|e| classify(&e))
    }
}

impl Store for PgStore {
    fn ingest(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Vec<Outcome>, StoreError>> {
        Box::pin(self.submit(move |r| Job::Ingest(events, r)))
    }

    fn delete_session(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Delete(id, r)))
    }

    fn check_stalls(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.submit(Upkeep::Stalls))
    }

    fn idle_sessions(&self, silent_ms: i64) -> BoxFuture<'_, Result<Vec<SessionState>, StoreError>> {
        Box::pin(self.read(move |c| Box::pin(read::idle_sessions(c, silent_ms))))
    }

    fn pin(&self, id: String, pinned: bool) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Pin(id, pinned, r)))
    }

    fn retain(&self, policy: Retention) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Retain(policy, r)))
    }

    fn shutdown(&self) {
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        // A blocking send: a full queue drains within one group commit.
        let _ = self.tx.blocking_send(Command::Shutdown);
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(writer), Ok(runtime)) = (writer, tokio::runtime::Handle::try_current()) {
            let _ = runtime.block_on(writer);
        }
        self.stop.cancel();
    }

    fn guard_facts(&self, id: String) -> BoxFuture<'_, Result<Option<board::Facts>, StoreError>> {
        Box::pin(async move {
            // The stop and the cost as the fleet committed them (an operator may have stopped
            // the run through any instance); the detectors' view from this instance's writer,
            // which holds it when the agent's events come through here.
            let watch = self.shared.board.get(&id).and_then(|f| f.watch.clone());
            let state = self.read(move |c| Box::pin(read::session_state(c, id))).await?;
            Ok(state.map(|s| board::Facts { watch, ..board::Facts::of_state(&s) }))
        })
    }

    fn list_sessions(&self, q: SessionQuery) -> BoxFuture<'_, Result<SessionPage, StoreError>> {
        let cursor = match q.after() {
            Ok(cursor) => cursor,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(self.read(move |c| Box::pin(read::list_sessions(c, q, cursor))))
    }

    fn children(&self, id: String) -> BoxFuture<'_, Result<Option<Vec<SessionRow>>, StoreError>> {
        Box::pin(self.read(move |c| Box::pin(read::children(c, id))))
    }

    fn session_detail(&self, id: String, q: DetailQuery) -> BoxFuture<'_, Result<Option<SessionDetail>, StoreError>> {
        Box::pin(self.read(move |c| Box::pin(read::session_detail(c, id, q))))
    }

    fn export(&self, id: String) -> BoxFuture<'_, Result<Option<ExportStream>, StoreError>> {
        Box::pin(read::export(self.pool.clone(), id))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(
            self.read(|c| Box::pin(async move { Ok(c.query_one("SELECT events FROM aop_head", &[]).await?.get(0)) })),
        )
    }

    fn events_since(&self, after: i64, limit: usize) -> BoxFuture<'_, Result<Vec<FeedEvent>, StoreError>> {
        Box::pin(self.read(move |c| Box::pin(read::events_since(c, after, limit))))
    }

    fn alerts(&self, q: AlertQuery) -> BoxFuture<'_, Result<AlertPage, StoreError>> {
        let before = match q.before() {
            Ok(before) => before,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(self.read(move |c| Box::pin(read::alerts(c, q, before))))
    }

    fn claim_deliveries(
        &self,
        targets: Vec<String>,
        limit: usize,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<outbox::Claimed, StoreError>> {
        Box::pin(self.read(move |c| Box::pin(read::claim_deliveries(c, targets, limit, lease_ms))))
    }

    fn settle_deliveries(&self, settled: Vec<outbox::Settle>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Settle(settled, r)))
    }

    fn expire_deliveries(&self, keep: Vec<String>, max_age_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Expire(keep, max_age_ms, r)))
    }

    fn delivery_counts(&self) -> BoxFuture<'_, Result<outbox::DeliveryCounts, StoreError>> {
        Box::pin(self.read(|c| Box::pin(read::delivery_counts(c))))
    }

    fn deliveries(&self, session_id: String) -> BoxFuture<'_, Result<Option<Vec<outbox::DeliveryRow>>, StoreError>> {
        Box::pin(self.read(move |c| Box::pin(read::deliveries(c, session_id))))
    }

    fn health(&self) -> StoreHealth {
        let reachable = self.reach.ok.load(Ordering::Relaxed);
        let writable = self.shared.writable.load(Ordering::Relaxed);
        let error = if reachable {
            self.shared.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
        } else {
            self.reach.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
        };
        StoreHealth {
            writable: reachable && writable,
            error: if reachable && writable { None } else { error },
            bytes: self.reach.bytes.load(Ordering::Relaxed),
            queue_depth: self.shared.queue_depth.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
            alerts: self.shared.alerts.load(Ordering::Relaxed),
            path: self.shown.clone(),
            unsequenced: Some(*self.reach.unsequenced.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }
}
