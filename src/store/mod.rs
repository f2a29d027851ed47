//! The store: durable events, derived sessions and alerts, behind one narrow interface.
//!
//! HTTP code talks to `dyn Store` only. Two backends: a SQLite file ([`sqlite::SqliteStore`], the
//! default, one process) and PostgreSQL ([`postgres::PgStore`], any number of processes sharing
//! one database); [`open`] picks one from a [`Location`]. Only the backends know SQL.
//!
//! Contract of every backend: an `Ok` from [`Store::ingest`] means the events are committed
//! durably; committed events, alerts and deletions are published to the [`crate::hub::Hub`] in
//! commit order; an event's `id` is its position in one global order that never goes back
//! (the stream's cursor).

pub mod apply;
pub mod board;
mod counters;
mod job;
pub mod outbox;
pub mod postgres;
pub mod sqlite;

use crate::hub::Hub;
use crate::model::{Event, SessionRow, SessionState};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// What happened to one event of an ingest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, durably: in a fleet its stream position is given after the commit.
    Stored,
    /// The same `(session_id, sequence)` with the same content was already stored.
    Duplicate,
    /// The same `(session_id, sequence)` is stored with different content; the first one stays.
    Conflict,
}

/// What a store operation can fail with, whatever the backend. Callers act on the variant
/// (retry later, refuse to start, report); the backend's own error stays attached as the source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The write queue is full: back off and retry.
    #[error("the write queue is full")]
    QueueFull,
    /// The database itself is busy or locked by another connection: back off and retry.
    #[error("the database is busy")]
    Busy,
    /// The database server cannot be reached (or answered too slowly): retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the configured size limit) is full.
    #[error("the database cannot grow: disk full")]
    Full,
    #[error("the store is shutting down")]
    Closed,
    #[error("{path} is not an aop database (or is corrupted): {reason}")]
    NotADatabase { path: String, reason: String },
    #[error("{path} was written by a newer aop (schema version {found}; this build reads up to {supported}); upgrade aop or use another --db")]
    NewerSchema { path: String, found: i64, supported: i64 },
    #[error("{path} is in use by another aop process")]
    Locked { path: String },
    #[error("cannot open the database at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("database error: {0}")]
    Db(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The session was deleted while it was being read.
    #[error("session {0:?} was deleted while it was being read")]
    Gone(String),
    /// A page cursor this store did not give out (or mangled on the way back).
    #[error("query parameter `cursor` is not a cursor this collector gave out; start again without it")]
    BadCursor,
}

impl StoreError {
    /// Any other failure of the backend, kept as the cause.
    pub fn db(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Db(std::sync::Arc::new(e))
    }
}

/// Where the events live: a SQLite file, or a PostgreSQL database shared by a fleet.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// A `postgres://` or `postgresql://` URL, libpq style (checked when parsed).
    Postgres(String),
}

impl Location {
    /// A file path, or a URL whose scheme aop supports. Whatever starts with `postgres:` or
    /// `postgresql:` (any case, surrounding spaces aside) is a PostgreSQL URL, well formed or
    /// refused: taken for a path, `postgres:/user:pw@host/db` would put the events in a local
    /// folder named after the password and show it wherever the path is shown. Any other
    /// `scheme://` is refused too rather than taken for a path. A refusal names the scheme and
    /// what is wrong, never the rest of the text, which may hold a password.
    pub fn parse(s: &str) -> Result<Location, String> {
        let url = s.trim();
        if let Some((scheme, rest)) = url.split_once(':') {
            if scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql") {
                if !rest.starts_with("//") {
                    return Err(format!(
                        "--db {scheme}:…: a PostgreSQL URL needs `//` after `{scheme}:`; write \
                         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                    ));
                }
                postgres::conn::Target::parse(url).map_err(|e| format!("--db {scheme}://…: {e}"))?;
                return Ok(Location::Postgres(url.to_owned()));
            }
        }
        match s.split_once("://") {
            None => Ok(Location::File(PathBuf::from(s))),
            Some((scheme, _)) => {
                // Only a scheme is repeated: text before `://` that is not one may be a password.
                let named = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
                let scheme = if named { scheme } else { "…" };
                Err(format!("--db {scheme}://… is not supported: give a SQLite file path or a postgres:// URL"))
            }
        }
    }
}

/// Shown in logs and on startup: a URL's password is masked.
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&postgres::conn::redact(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

/// What every backend is opened with.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub durability: sqlite::Durability,
    /// Write jobs (requests) that may wait for the writer before ingest answers 503.
    pub queue_capacity: usize,
    pub detect: crate::detect::DetectConfig,
    /// A hard cap on the database's size (SQLite only).
    pub max_bytes: Option<u64>,
    /// Connections to PostgreSQL for reads (the writer and the listener have one each).
    pub pool_size: usize,
    /// The notification targets alerts are delivered to (none: nothing is written per alert).
    pub outbox: Arc<outbox::Outbox>,
}

/// Opens the store at `location`, migrating its schema, and starts its writer.
pub async fn open(location: &Location, opts: OpenOptions, hub: Arc<Hub>) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        Location::File(path) => {
            let opts = sqlite::Options {
                path: path.clone(),
                durability: opts.durability,
                queue_capacity: opts.queue_capacity,
                detect: opts.detect,
                max_bytes: opts.max_bytes,
                outbox: opts.outbox,
            };
            Arc::new(sqlite::SqliteStore::open(opts, hub)?)
        }
        Location::Postgres(url) => Arc::new(postgres::PgStore::open(url, opts, hub).await?),
    })
}

/// What retention may delete: ended, unpinned sessions older than `max_age_ms` (collector
/// clock, last event), and more, oldest first, while the data is over `max_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
}

/// `GET /sessions` filters and page.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub limit: usize,
    pub cursor: Option<String>,
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub parent_session_id: Option<String>,
    /// Sessions of one conversation (a conversation id as an agent or its telemetry names it).
    pub conversation: Option<String>,
    pub q: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionPage {
    pub sessions: Vec<SessionRow>,
    pub next_cursor: Option<String>,
}

/// Trims rows read with `limit + 1` (the extra one says more follow) and gives the key of the last
/// row kept when more do follow.
fn trim_page<T, K>(rows: &mut Vec<T>, limit: usize, key: impl FnOnce(&T) -> K) -> Option<K> {
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(key)
}

impl SessionQuery {
    /// Where the page starts: after the previous page's last row, `(last_seen_us, id)`, the
    /// order's key. A cursor this store did not give out is `BadCursor`.
    pub(crate) fn after(&self) -> Result<Option<(i64, String)>, StoreError> {
        let Some(c) = self.cursor.as_deref() else { return Ok(None) };
        let (us, id) = c.split_once('~').ok_or(StoreError::BadCursor)?;
        Ok(Some((us.parse().map_err(|_| StoreError::BadCursor)?, id.to_owned())))
    }

    /// The page from rows read with `limit + 1`, each with its `last_seen_us`.
    pub(crate) fn page(&self, mut rows: Vec<(SessionRow, i64)>) -> SessionPage {
        let next_cursor = trim_page(&mut rows, self.limit, |(r, us)| format!("{us}~{}", r.id));
        SessionPage { sessions: rows.into_iter().map(|(r, _)| r).collect(), next_cursor }
    }
}

/// An event as stored: its sequence and its JSON text (as sent, on one line).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub sequence: i64,
    pub json: String,
}

/// A stored event with the fields a stream filter needs.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub id: i64,
    pub session_id: String,
    pub agent_id: String,
    pub event_type: String,
    pub json: String,
}

/// `GET /alerts` filters and page.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub limit: usize,
    pub cursor: Option<String>,
    pub session_id: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlertPage {
    /// Alert objects as JSON text.
    pub alerts: Vec<String>,
    pub next_cursor: Option<String>,
}

impl AlertQuery {
    /// The alert id the page ends before (the cursor is the previous page's last id).
    pub(crate) fn before(&self) -> Result<Option<i64>, StoreError> {
        self.cursor.as_deref().map(str::parse).transpose().map_err(|_| StoreError::BadCursor)
    }

    /// The page from `(id, alert)` rows read with `limit + 1`.
    pub(crate) fn page(&self, mut rows: Vec<(i64, String)>) -> AlertPage {
        let next_cursor = trim_page(&mut rows, self.limit, |(id, _)| id.to_string());
        AlertPage { alerts: rows.into_iter().map(|(_, a)| a).collect(), next_cursor }
    }
}

impl DetailQuery {
    /// The alerts part of a detail from `(id, alert)` rows read with `alerts_limit + 1`, and the
    /// id to continue after.
    pub(crate) fn alerts_page(&self, mut rows: Vec<(i64, String)>) -> (Vec<String>, Option<i64>) {
        let next = trim_page(&mut rows, self.alerts_limit, |(id, _)| *id);
        (rows.into_iter().map(|(_, a)| a).collect(), next)
    }
}

/// Which part of a session's detail to read: events after `after` (by sequence), at most
/// `limit`; alerts after `alerts_after` (by alert id), at most `alerts_limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetailQuery {
    pub after: Option<i64>,
    pub limit: usize,
    pub alerts_after: Option<i64>,
    pub alerts_limit: usize,
}

/// One session's detail page.
#[derive(Debug, Clone)]
pub struct SessionDetail {
    pub session: SessionRow,
    pub events: Vec<StoredEvent>,
    /// Whether events after the last one returned exist.
    pub more: bool,
    /// Alert objects as JSON text, oldest first.
    pub alerts: Vec<String>,
    /// The id of the last alert returned, when more alerts follow it.
    pub next_alerts_after: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    pub writable: bool,
    /// Why writes fail, when they do.
    pub error: Option<String>,
    pub bytes: u64,
    pub queue_depth: usize,
    /// Write transactions committed since start.
    pub commits: u64,
    /// Alerts raised since start.
    pub alerts: u64,
    pub path: String,
    /// In a fleet: what was committed but not yet given stream positions (absent on SQLite,
    /// which numbers events as it commits them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsequenced: Option<Unsequenced>,
}

/// Groups committed and acknowledged but not yet numbered for the stream: a backlog that
/// stays high means no sequencing step gets through (the stream is paused; ingest is not).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Unsequenced {
    pub groups: i64,
    /// Age of the oldest, on the database's clock (0 when there is none).
    pub oldest_ms: i64,
}

/// How many idle sessions one look ends at most; the next look takes the rest.
pub const IDLE_BATCH: i64 = 500;

pub type ExportStream = BoxStream<'static, Result<Bytes, StoreError>>;

pub trait Store: Send + Sync + 'static {
    /// Stores valid events, one outcome per event in order. Returns once they are durable.
    fn ingest(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Vec<Outcome>, StoreError>>;
    /// Deletes a session with its events and alerts; `false` when it did not exist.
    fn delete_session(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn list_sessions(&self, q: SessionQuery) -> BoxFuture<'_, Result<SessionPage, StoreError>>;
    fn children(&self, id: String) -> BoxFuture<'_, Result<Option<Vec<SessionRow>>, StoreError>>;
    /// The session with one page of its events and one of its alerts.
    fn session_detail(&self, id: String, q: DetailQuery) -> BoxFuture<'_, Result<Option<SessionDetail>, StoreError>>;
    /// The session's events as JSON lines, read in chunks (constant memory); `None` if unknown.
    fn export(&self, id: String) -> BoxFuture<'_, Result<Option<ExportStream>, StoreError>>;
    /// The newest position the store has given out (what a stream may resume from at most).
    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// Events stored after global position `after`, oldest first, for stream resumption.
    fn events_since(&self, after: i64, limit: usize) -> BoxFuture<'_, Result<Vec<FeedEvent>, StoreError>>;
    fn alerts(&self, q: AlertQuery) -> BoxFuture<'_, Result<AlertPage, StoreError>>;
    /// Marks a session as kept forever by retention (or not); `false` when it does not exist.
    fn pin(&self, id: String, pinned: bool) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Applies a retention policy once; returns how many sessions it deleted.
    fn retain(&self, policy: Retention) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Raises stall alerts for running sessions silent past the threshold (collector clock).
    fn check_stalls(&self) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Running sessions that end when idle (`SessionState::ends_when_idle`) and have heard
    /// nothing for `silent_ms` (collector clock, the database's for a fleet), at most
    /// [`IDLE_BATCH`], the longest silent first.
    fn idle_sessions(&self, silent_ms: i64) -> BoxFuture<'_, Result<Vec<SessionState>, StoreError>>;
    /// What the guard decides on for a session (`None`: unknown), without waiting for the
    /// write queue: the writer's board, and the stored row where the board cannot be complete.
    fn guard_facts(&self, id: String) -> BoxFuture<'_, Result<Option<board::Facts>, StoreError>>;
    fn health(&self) -> StoreHealth;
    /// Notification deliveries due now for these targets (by key), oldest due first, at most
    /// `limit`, with their alerts and sessions. Each is claimed for `lease_ms`: no other instance
    /// of a fleet gets it before then (after, one does: its claimant may have died). A SQLite file
    /// has one instance, so nothing is written there: the caller must not ask again for what it
    /// holds.
    fn claim_deliveries(
        &self,
        targets: Vec<String>,
        limit: usize,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<outbox::Claimed, StoreError>>;
    /// Records how claimed deliveries' attempts ended.
    fn settle_deliveries(&self, settled: Vec<outbox::Settle>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Marks failed the waiting deliveries older than `max_age_ms` that nobody holds, but those
    /// of the targets in `keep` (their worker gives up on them as it settles them): the
    /// deliveries of targets removed from the configuration. Returns how many.
    fn expire_deliveries(&self, keep: Vec<String>, max_age_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>>;
    fn delivery_counts(&self) -> BoxFuture<'_, Result<outbox::DeliveryCounts, StoreError>>;
    /// Every delivery of a session's alerts, by alert then target; `None` for an unknown session.
    fn deliveries(&self, session_id: String) -> BoxFuture<'_, Result<Option<Vec<outbox::DeliveryRow>>, StoreError>>;
    /// Finishes queued writes and stops the writer; blocks (call from a blocking context).
    fn shutdown(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_that_starts_like_a_postgres_url_is_one_or_is_refused() {
        let pw = "hunter2pw";
        let refused = [
            format!("postgres:/user:{pw}@host/db"),
            format!("postgres:user:{pw}@host/db"),
            format!("POSTGRESQL:/user:{pw}@host/db"),
            format!("postgresql:user:{pw}@host/db"),
            format!("PostgreS://user:{pw}@host:notaport/db"),
            format!("postgres:///user:{pw}@host/db"),
            format!(" Postgres:/user:{pw}@host/db"),
            "postgres:".to_owned(),
            format!("user:{pw}@host://db"),
        ];
        for text in &refused {
            let e = Location::parse(text).expect_err(text);
            assert!(!e.contains(pw) && e.starts_with("--db "), "{text}: {e}");
        }
        let e = Location::parse(&refused[2]).unwrap_err();
        assert!(e.starts_with("--db POSTGRESQL:…: ") && e.contains("`//`"), "{e}");

        let url = format!("PostgreSQL://aop:{pw}@db.example/aop");
        assert_eq!(Location::parse(&format!(" {url}\n")), Ok(Location::Postgres(url.clone())));
        assert_eq!(Location::parse(&url).unwrap().to_string(), "PostgreSQL://aop:***@db.example/aop");
        // Paths stay paths, even with a colon or a scheme's name in them.
        for path in ["events.db", "./postgres:/x", "postgres", "data/postgres:x", "/tmp/a:b"] {
            assert_eq!(Location::parse(path), Ok(Location::File(path.into())), "{path}");
        }
    }

    #[test]
    fn a_session_cursor_round_trips_and_junk_is_refused() {
        let q = SessionQuery { limit: 1, ..Default::default() };
        let row = SessionRow { id: "a~b".into(), ..crate::model::SessionState::new("a~b").view(0, 0) };
        let page = q.page(vec![(row.clone(), -5), (row, -6)]);
        let next = SessionQuery { cursor: page.next_cursor, ..Default::default() };
        assert_eq!(next.after().unwrap(), Some((-5, "a~b".into())));
        for junk in ["nonsense", "x~y"] {
            let q = SessionQuery { cursor: Some(junk.into()), ..Default::default() };
            assert!(matches!(q.after(), Err(StoreError::BadCursor)));
        }
    }

    #[test]
    fn a_page_is_trimmed_only_when_more_follow() {
        let q = AlertQuery { limit: 2, ..Default::default() };
        let rows = |n: i64| (1..=n).map(|i| (i, format!("a{i}"))).collect::<Vec<_>>();
        assert_eq!(q.page(rows(2)).next_cursor, None);
        let page = q.page(rows(3));
        assert_eq!((page.alerts.len(), page.next_cursor.as_deref()), (2, Some("2")));
        assert!(matches!(AlertQuery { cursor: Some("x".into()), ..q }.before(), Err(StoreError::BadCursor)));
    }
}
