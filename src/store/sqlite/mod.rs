//! The SQLite backend: one writer thread ([`writer`]), reads on a small pool of other connections.
//!
//! A file is read before it is changed: until its schema is known to be aop's (or it is new), it
//! is not chmod-ed, switched to WAL, migrated or written to, and nothing is left beside it. A
//! store opened to read only ([`SqliteStore::open_to_read`], `aop copy`'s source) never writes.

mod connect;
mod read;
mod schema;
mod shared;
mod upkeep;
mod writer;

use super::job::{Command, Job, Reply, Upkeep};
use super::*;
use crate::hub::Hub;
use rusqlite::ErrorCode;
use shared::Shared;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;
use writer::Writer;

/// How much durability a commit buys (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every commit: an acknowledged event survives a power loss.
    Full,
    /// fsync at checkpoints only: survives a crash of aop, not of the machine.
    Normal,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!("{other:?} is not a durability: use full or normal")),
        }
    }
}

pub struct Options {
    pub path: PathBuf,
    pub durability: Durability,
    /// Write jobs (requests) that may wait for the writer before ingest answers 503.
    pub queue_capacity: usize,
    pub detect: crate::detect::DetectConfig,
    /// A hard cap on the database's size: past it, writes fail (503) instead of filling the disk.
    pub max_bytes: Option<u64>,
    /// The notification targets alerts are delivered to.
    pub outbox: Arc<super::outbox::Outbox>,
}

pub struct SqliteStore {
    path: PathBuf,
    /// `None` for a store opened to read only.
    writing: Option<Writing>,
    readers: Arc<read::Readers>,
    shared: Arc<Shared>,
    /// Held for the store's lifetime: a second aop on the same file would be a second writer.
    /// A store that only reads holds it shared, so no collector writes the file meanwhile.
    _lock: File,
}

/// The writer's queue and the threads that write.
struct Writing {
    tx: SyncSender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

/// How long reading a file's schema, or one read of a store opened to read only (a page of
/// sessions, a chunk of an export), may take: on an aop database they take milliseconds. A
/// crafted file (one whose schema is aop's, so it gets that far) holds the process no longer.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// What a store opened to read only answers a write with.
#[derive(Debug, thiserror::Error)]
#[error("the database was opened to read only")]
struct ReadOnly;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies the WAL back into the database from a connection of its own, so the writer seldom
/// pays for it. The writer's automatic checkpoint still runs when the WAL passes its threshold:
/// only a checkpoint that sees no newer frame lets the WAL restart from the beginning (under
/// steady load this thread never does), but by then most frames are copied, so it is short.
fn checkpoint_loop(path: &Path, shared: &Shared) {
    let conn = match connect::open(path, connect::Access::ReadWrite) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the checkpoint connection; the writer checkpoints alone");
            return;
        }
    };
    while !shared.closing.load(Ordering::Relaxed) {
        std::thread::park_timeout(CHECKPOINT_EVERY);
        // PASSIVE never waits for, nor blocks, the writer or readers.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint skipped");
        }
    }
}

/// Traces may hold user data: a database (and its WAL and shared-memory files) that others may
/// read, made so by an older aop, a copy or a restore, is made the owner's alone. SQLite gives
/// new WAL and shared-memory files the database file's mode, so this keeps them private too.
fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let file = &connect::beside(path, suffix);
        let Ok(meta) = std::fs::metadata(file) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => {
                tracing::warn!(file = %file.display(), was = format!("{mode:o}"), "others could read the database file; made it readable by its owner only")
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), mode = format!("{mode:o}"), error = %e, "others can read the database file and its mode could not be changed")
            }
        }
    }
}

/// Maps a failure to open or read a file to what the caller is told: a file SQLite cannot read
/// as a database, or whose schema took too long to read, is not an aop database.
fn refusal(path: &str, e: rusqlite::Error) -> StoreError {
    let reason = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => e.to_string(),
        _ if connect::interrupted(&e) => {
            format!("reading its schema took longer than {} s", READ_DEADLINE.as_secs())
        }
        _ => return StoreError::Open { path: path.to_owned(), reason: e.to_string() },
    };
    StoreError::NotADatabase { path: path.to_owned(), reason }
}

/// What the file at `path` holds, learnt without changing it: SQLite takes no lock and creates
/// nothing beside it (it reads the write-ahead log only if one holding changes is there already),
/// and gives up after [`READ_DEADLINE`]. Another application's file, or an aop file with objects
/// aop did not make, is refused here, before anything has touched it.
fn inspect(path: &Path, shown: &str) -> Result<schema::Checked, StoreError> {
    let read = || {
        let mut conn = connect::open(path, connect::Access::for_reading(path))?;
        connect::deadline(&mut conn, READ_DEADLINE)?;
        schema::check(&conn)
    };
    match read().map_err(|e| refusal(shown, e))? {
        schema::Checked::Newer(found) => {
            Err(StoreError::NewerSchema { path: shown.to_owned(), found, supported: schema::CURRENT })
        }
        schema::Checked::NotOurs(reason) => Err(StoreError::NotADatabase { path: shown.to_owned(), reason }),
        usable => Ok(usable),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database, migrates it and starts the writer thread.
    pub fn open(opts: Options, hub: Arc<Hub>) -> Result<SqliteStore, StoreError> {
        let path = opts.path.clone();
        let shown = path.display().to_string();
        let open_err = |reason: String| StoreError::Open { path: shown.clone(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            // Traces may hold user data: only the owner may enter the folder or read the file.
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| open_err(e.to_string()))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked { path: shown });
        }
        let found = inspect(&path, &shown)?;
        // Ours, or new: from here on it may be changed.
        owner_only(&path);

        let not_db = |e: rusqlite::Error| refusal(&shown, e);
        let mut conn = connect::open(&path, connect::Access::ReadWrite).map_err(not_db)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").map_err(not_db)?;
        if found == schema::Checked::Empty {
            // Before anything writes page 1 (switching to WAL does): later it would be ignored.
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;").map_err(not_db)?;
        }
        let sync = match opts.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
             PRAGMA cache_size = -8000; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 8000;"
        ))
        .map_err(not_db)?;
        schema::migrate(&mut conn).map_err(not_db)?;
        let max_pages = match opts.max_bytes {
            Some(max) => {
                let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(not_db)?;
                let pages = (max / page.max(512) as u64).max(64);
                conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).map_err(not_db)?;
                Some(pages)
            }
            None => None,
        };
        // No `quick_check` here: it reads the whole file (seconds on a large store). A damaged
        // header or schema has failed above already; damage deeper in fails the query that
        // reads it, with an error, never a panic.

        // The newest position ever given out (AUTOINCREMENT keeps it past deletions).
        let head: i64 = conn
            .query_row("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)", [], |r| r.get(0))
            .map_err(not_db)?;
        hub.advance_to(head);

        let shared = Arc::new(Shared { writable: AtomicBool::new(true), ..Default::default() });
        let (tx, rx) = sync_channel(opts.queue_capacity.max(1));
        let writer = Writer::new(conn, hub, Arc::clone(&shared), opts.detect, max_pages, opts.outbox);
        let handle = std::thread::Builder::new()
            .name("aop-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(e.to_string()))?;
        let checkpointer = {
            let (path, shared) = (path.clone(), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("aop-checkpoint".into())
                .spawn(move || checkpoint_loop(&path, &shared))
                .map_err(|e| open_err(e.to_string()))?
        };
        Ok(SqliteStore {
            readers: Arc::new(read::Readers::new(path.clone(), connect::Access::ReadWrite, None)),
            path,
            writing: Some(Writing {
                tx,
                writer: Mutex::new(Some(handle)),
                checkpointer: Mutex::new(Some(checkpointer)),
            }),
            shared,
            _lock: lock,
        })
    }

    /// Opens an existing aop database to read from it only (`aop copy`'s source): nothing in
    /// or beside the file is changed, whatever it holds. A database of an older schema version
    /// is read as it is, not migrated. Each read gives up after [`READ_DEADLINE`].
    pub fn open_to_read(path: &Path) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let lock = File::open(path).map_err(|e| StoreError::Open { path: shown.clone(), reason: e.to_string() })?;
        if lock.try_lock_shared().is_err() {
            return Err(StoreError::Locked { path: shown });
        }
        if inspect(path, &shown)? == schema::Checked::Empty {
            return Err(StoreError::NotADatabase { path: shown, reason: "it is empty".into() });
        }
        // Decided once: while the lock is held no collector can start writing a log.
        let access = connect::Access::for_reading(path);
        Ok(SqliteStore {
            readers: Arc::new(read::Readers::new(path.to_owned(), access, Some(READ_DEADLINE))),
            path: path.to_owned(),
            writing: None,
            shared: Arc::default(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a job for the writer and waits for its answer; a full queue is `QueueFull` at once.
    async fn submit<T, J: Into<Job>>(&self, job: impl FnOnce(Reply<T>) -> J) -> Result<T, StoreError> {
        let Some(writing) = &self.writing else {
            return Err(StoreError::db(ReadOnly));
        };
        let (reply, rx) = oneshot::channel();
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        match writing.tx.try_send(Command::Run(job(reply).into())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::Closed);
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Lets the writer finish the jobs already queued, then stops it. Bounded by the caller.
    pub fn shutdown_blocking(&self) {
        let Some(writing) = &self.writing else { return };
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        // A blocking send: a full queue drains within one group commit.
        let _ = writing.tx.send(Command::Shutdown);
        let handle = writing.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.shared.closing.store(true, Ordering::Relaxed);
        let handle = writing.checkpointer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            h.thread().unpark();
            let _ = h.join();
        }
    }

    fn file_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        size(&self.path) + size(&connect::beside(&self.path, "-wal"))
    }
}

impl Store for SqliteStore {
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
        let before = writer::now_ms() - silent_ms;
        Box::pin(self.readers.run(move |c| read::idle_sessions(c, before)))
    }

    fn pin(&self, id: String, pinned: bool) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Pin(id, pinned, r)))
    }

    fn retain(&self, policy: Retention) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Retain(policy, r)))
    }

    fn shutdown(&self) {
        self.shutdown_blocking();
    }

    fn list_sessions(&self, q: SessionQuery) -> BoxFuture<'_, Result<SessionPage, StoreError>> {
        let cursor = match q.after() {
            Ok(cursor) => cursor,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(self.readers.run(move |c| read::list_sessions(c, &q, cursor)))
    }

    fn children(&self, id: String) -> BoxFuture<'_, Result<Option<Vec<SessionRow>>, StoreError>> {
        Box::pin(self.readers.run(move |c| read::children(c, &id)))
    }

    fn session_detail(&self, id: String, q: DetailQuery) -> BoxFuture<'_, Result<Option<SessionDetail>, StoreError>> {
        Box::pin(self.readers.run(move |c| read::session_detail(c, &id, q)))
    }

    fn export(&self, id: String) -> BoxFuture<'_, Result<Option<ExportStream>, StoreError>> {
        Box::pin(read::export(Arc::clone(&self.readers), id))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(self.readers.run(|c| {
            c.query_row("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)", [], |r| r.get(0))
        }))
    }

    fn events_since(&self, after: i64, limit: usize) -> BoxFuture<'_, Result<Vec<FeedEvent>, StoreError>> {
        Box::pin(self.readers.run(move |c| read::events_since(c, after, limit)))
    }

    fn alerts(&self, q: AlertQuery) -> BoxFuture<'_, Result<AlertPage, StoreError>> {
        let before = match q.before() {
            Ok(before) => before,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(self.readers.run(move |c| read::alerts(c, &q, before)))
    }

    fn guard_facts(&self, id: String) -> BoxFuture<'_, Result<Option<board::Facts>, StoreError>> {
        // One writer commits every event of this file: its board is complete for running sessions.
        if let Some(f) = self.shared.board.get(&id) {
            return Box::pin(std::future::ready(Ok(Some((*f).clone()))));
        }
        Box::pin(self.readers.run(move |c| Ok(read::session_state(c, &id)?.map(|s| board::Facts::of_state(&s)))))
    }

    fn claim_deliveries(
        &self,
        targets: Vec<String>,
        limit: usize,
        _lease_ms: i64,
    ) -> BoxFuture<'_, Result<outbox::Claimed, StoreError>> {
        let now = writer::now_ms();
        Box::pin(self.readers.run(move |c| read::due_deliveries(c, &targets, limit, now)))
    }

    fn settle_deliveries(&self, settled: Vec<outbox::Settle>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Settle(settled, r)))
    }

    fn expire_deliveries(&self, keep: Vec<String>, max_age_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.submit(move |r| Upkeep::Expire(keep, max_age_ms, r)))
    }

    fn delivery_counts(&self) -> BoxFuture<'_, Result<outbox::DeliveryCounts, StoreError>> {
        Box::pin(self.readers.run(read::delivery_counts))
    }

    fn deliveries(&self, session_id: String) -> BoxFuture<'_, Result<Option<Vec<outbox::DeliveryRow>>, StoreError>> {
        Box::pin(self.readers.run(move |c| read::deliveries(c, &session_id)))
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            writable: self.shared.writable.load(Ordering::Relaxed),
            error: self.shared.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            bytes: self.file_bytes(),
            queue_depth: self.shared.queue_depth.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
            alerts: self.shared.alerts.load(Ordering::Relaxed),
            path: self.path.display().to_string(),
            unsequenced: None,
        }
    }
}
