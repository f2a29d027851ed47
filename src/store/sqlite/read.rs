//! Reads, on connections of their own (never the writer's), run on tokio's blocking pool.

use super::connect::{self, Access};
use crate::model::{SessionRow, SessionState};
use crate::store::outbox::{Claimed, DeliveryCounts, DeliveryRow, Due, MAX_SESSION_DELIVERIES};
use crate::store::{
    AlertPage, AlertQuery, DetailQuery, ExportStream, FeedEvent, SessionDetail, SessionPage, SessionQuery, StoreError,
    StoredEvent,
};
use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle read connections kept open; more are opened under load and closed after.
const MAX_IDLE: usize = 4;
/// An export chunk ends at this many rows or this many bytes, whichever comes first: big events
/// must not make a chunk (and a stalled export's memory) big.
const EXPORT_CHUNK_ROWS: usize = 2000;
const EXPORT_CHUNK_BYTES: usize = 256 * 1024;

pub(super) struct Readers {
    path: PathBuf,
    access: Access,
    /// How long one call of [`Readers::with`] may take, for a file that is not the collector's
    /// own (`aop copy`'s source): past it, the statement running is interrupted.
    deadline: Option<Duration>,
    idle: Mutex<Vec<Connection>>,
}

/// A read interrupted by its deadline.
#[derive(Debug, thiserror::Error)]
#[error(
    "a read ran past its deadline of {} s, where reads of an aop database take milliseconds: the file may be damaged or crafted",
    .0.as_secs()
)]
struct PastDeadline(Duration);

impl Readers {
    pub(super) fn new(path: PathBuf, access: Access, deadline: Option<Duration>) -> Self {
        Readers { path, access, deadline, idle: Mutex::new(Vec::new()) }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = connect::open(&self.path, self.access)?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -4000;")?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `f` with a pooled connection, on the current thread.
    pub(super) fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.open().map_err(|e| super::shared::classify(&e))?,
        };
        if let Some(limit) = self.deadline {
            connect::deadline(&mut conn, limit).map_err(|e| super::shared::classify(&e))?;
        }
        let out = f(&conn).map_err(|e| match self.deadline {
            Some(limit) if connect::interrupted(&e) => StoreError::db(PastDeadline(limit)),
            _ => super::shared::classify(&e),
        });
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` on tokio's blocking pool.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.with(f)).await.map_err(StoreError::db)?
    }
}

fn decode_state(id: &str, state: &str) -> SessionState {
    serde_json::from_str(state).unwrap_or_else(|_| SessionState::new(id))
}

const ROW_COLUMNS: &str =
    "s.id, s.state, s.alert_count, (SELECT COUNT(*) FROM sessions c WHERE c.parent_id = s.id), s.last_seen_us, s.pinned";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(SessionRow, i64)> {
    row_at(r, 0)
}

/// The [`ROW_COLUMNS`] starting at column `at`.
fn row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(SessionRow, i64)> {
    let id: String = r.get(at)?;
    let state: String = r.get(at + 1)?;
    let mut row = decode_state(&id, &state).view(r.get(at + 2)?, r.get(at + 3)?);
    row.pinned = r.get(at + 5)?;
    Ok((row, r.get(at + 4)?))
}

/// `GET /sessions`, after `cursor` (decoded by the caller: [`SessionQuery::after`]).
pub(super) fn list_sessions(
    c: &Connection,
    q: &SessionQuery,
    cursor: Option<(i64, String)>,
) -> rusqlite::Result<SessionPage> {
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM sessions s WHERE s.event_count > 0");
    let mut args: Vec<Value> = Vec::new();
    if let Some((us, id)) = cursor {
        sql.push_str(" AND (s.last_seen_us, s.id) < (?, ?)");
        args.extend([Value::Integer(us), Value::Text(id)]);
    }
    for (column, value) in [
        ("s.status", &q.status),
        ("s.agent_id", &q.agent_id),
        ("s.parent_id", &q.parent_session_id),
        ("s.conversation", &q.conversation),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(v.clone()));
        }
    }
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        sql.push_str(
            " AND (instr(lower(s.id), lower(?1q)) > 0 OR instr(lower(s.agent_id), lower(?1q)) > 0 OR instr(lower(coalesce(s.goal, '')), lower(?1q)) > 0 OR instr(lower(coalesce(s.conversation, '')), lower(?1q)) > 0)",
        );
        let n = args.len() + 1;
        sql = sql.replace("?1q", &format!("?{n}"));
        args.push(Value::Text(text.to_owned()));
    }
    sql.push_str(&format!(" ORDER BY s.last_seen_us DESC, s.id DESC LIMIT {}", q.limit + 1));
    // Positional `?` after a numbered `?N` continue from the highest number, so number them all.
    let sql = number_placeholders(&sql);
    let mut stmt = c.prepare_cached(&sql)?;
    let rows: Vec<(SessionRow, i64)> = stmt.query_map(params_from_iter(args), row_from)?.collect::<Result<_, _>>()?;
    Ok(q.page(rows))
}

/// Rewrites bare `?` placeholders as `?1`, `?2`, … counting only the bare ones and keeping `?N`.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        out.push(ch);
        if ch == '?' {
            if chars.peek().is_some_and(char::is_ascii_digit) {
                continue;
            }
            n += 1;
            out.push_str(&n.to_string());
        }
    }
    out
}

/// See [`crate::store::Store::idle_sessions`]; `heard_before_ms` on the collector's clock.
pub(super) fn idle_sessions(c: &Connection, heard_before_ms: i64) -> rusqlite::Result<Vec<SessionState>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, state FROM sessions WHERE status = 'running' AND event_count > 0 AND heard_ms <= ?1 \
         AND json_extract(state, '$.ends_when_idle') = 1 ORDER BY heard_ms LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![heard_before_ms, crate::store::IDLE_BATCH], |r| {
        let (id, state): (String, String) = (r.get(0)?, r.get(1)?);
        Ok(serde_json::from_str(&state).unwrap_or_else(|_| SessionState::new(&id)))
    })?;
    rows.collect()
}

/// A session's derived state, for the guard when the writer's board does not hold it.
pub(super) fn session_state(c: &Connection, id: &str) -> rusqlite::Result<Option<SessionState>> {
    let state: Option<String> = c
        .prepare_cached("SELECT state FROM sessions WHERE id = ?1 AND event_count > 0")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(state.map(|s| serde_json::from_str(&s).unwrap_or_else(|_| SessionState::new(id))))
}

pub(super) fn children(c: &Connection, id: &str) -> rusqlite::Result<Option<Vec<SessionRow>>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM sessions s WHERE s.parent_id = ?1 AND s.event_count > 0 ORDER BY s.last_seen_us DESC, s.id DESC LIMIT 10000"
    ))?;
    let rows: Vec<SessionRow> =
        stmt.query_map([id], row_from)?.map(|r| r.map(|(row, _)| row)).collect::<Result<_, _>>()?;
    if rows.is_empty() && session_sid(c, id)?.is_none() {
        return Ok(None);
    }
    Ok(Some(rows))
}

fn session_sid(c: &Connection, id: &str) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT sid FROM sessions WHERE id = ?1 AND event_count > 0")?
        .query_row([id], |r| r.get(0))
        .optional()
}

/// Runs `f` in one read transaction: what it reads comes from one snapshot of the database.
fn snapshot<T>(c: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    c.execute_batch("BEGIN")?;
    let out = f(c);
    c.execute_batch("COMMIT")?;
    out
}

/// The row, its events and its alerts, read together so they agree with each other.
pub(super) fn session_detail(c: &Connection, id: &str, q: DetailQuery) -> rusqlite::Result<Option<SessionDetail>> {
    snapshot(c, |c| detail_in_tx(c, id, q))
}

fn detail_in_tx(c: &Connection, id: &str, q: DetailQuery) -> rusqlite::Result<Option<SessionDetail>> {
    let DetailQuery { after, limit, alerts_after, alerts_limit } = q;
    let found = c
        .prepare_cached(&format!("SELECT {ROW_COLUMNS}, s.sid FROM sessions s WHERE s.id = ?1 AND s.event_count > 0"))?
        .query_row([id], |r| Ok((row_from(r)?.0, r.get::<_, i64>(6)?)))
        .optional()?;
    let Some((session, sid)) = found else {
        return Ok(None);
    };
    let mut stmt =
        c.prepare_cached("SELECT seq, body FROM events WHERE sid = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?;
    let mut events: Vec<StoredEvent> = stmt
        .query_map(params![sid, after.unwrap_or(-1), limit as i64 + 1], |r| {
            Ok(StoredEvent { sequence: r.get(0)?, json: r.get(1)? })
        })?
        .collect::<Result<_, _>>()?;
    let more = events.len() > limit;
    events.truncate(limit);
    let alerts: Vec<(i64, String)> = c
        .prepare_cached("SELECT id, body FROM alerts WHERE sid = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
        .query_map(params![sid, alerts_after.unwrap_or(-1), alerts_limit as i64 + 1], |r| {
            Ok((r.get(0)?, alert_json(r)?))
        })?
        .collect::<Result<_, _>>()?;
    let (alerts, next_alerts_after) = q.alerts_page(alerts);
    Ok(Some(SessionDetail { session, events, more, alerts, next_alerts_after }))
}

/// An alert row's JSON with its id (stored without it: unknown before the insert).
fn alert_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    Ok(crate::detect::with_alert_id(r.get_ref(1)?.as_str()?, r.get(0)?))
}

/// `GET /alerts`, before the alert id `before` (the decoded cursor).
pub(super) fn alerts(c: &Connection, q: &AlertQuery, before: Option<i64>) -> rusqlite::Result<AlertPage> {
    let mut sql = "SELECT id, body FROM alerts WHERE 1 = 1".to_owned();
    let mut args: Vec<Value> = Vec::new();
    if let Some(before) = before {
        sql.push_str(" AND id < ?");
        args.push(Value::Integer(before));
    }
    if let Some(s) = &q.session_id {
        sql.push_str(" AND session_id = ?");
        args.push(Value::Text(s.clone()));
    }
    if let Some(t) = &q.kind {
        sql.push_str(" AND type = ?");
        args.push(Value::Text(t.clone()));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows: Vec<(i64, String)> =
        stmt.query_map(params_from_iter(args), |r| Ok((r.get(0)?, alert_json(r)?)))?.collect::<Result<_, _>>()?;
    Ok(q.page(rows))
}

/// The deliveries due at `now_ms` for these targets, with their alerts and sessions. Nothing is
/// written: this file has one worker, which holds what it sends until it settles it.
pub(super) fn due_deliveries(
    c: &Connection,
    targets: &[String],
    limit: usize,
    now_ms: i64,
) -> rusqlite::Result<Claimed> {
    let targets = serde_json::to_string(targets).unwrap_or_else(|_| "[]".to_owned());
    let mut stmt = c.prepare_cached(&format!(
        "SELECT d.alert_id, d.target, d.attempts, d.created_ms, a.session_id, a.type, a.body, {ROW_COLUMNS} \
         FROM deliveries d JOIN alerts a ON a.id = d.alert_id JOIN sessions s ON s.sid = a.sid \
         WHERE d.done_ms IS NULL AND d.next_ms <= ?1 AND d.target IN (SELECT value FROM json_each(?2)) \
         ORDER BY d.next_ms LIMIT ?3"
    ))?;
    let due = stmt
        .query_map(params![now_ms, targets, limit as i64], |r| {
            let alert_id: i64 = r.get(0)?;
            let (session, _) = row_at(r, 7)?;
            Ok(Due {
                alert_id,
                target: r.get(1)?,
                attempts: r.get(2)?,
                created_ms: r.get(3)?,
                session_id: r.get(4)?,
                kind: r.get(5)?,
                alert: crate::detect::with_alert_id(r.get_ref(6)?.as_str()?, alert_id),
                session,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Claimed { now_ms, due })
}

pub(super) fn delivery_counts(c: &Connection) -> rusqlite::Result<DeliveryCounts> {
    c.prepare_cached(
        "SELECT (SELECT count(*) FROM deliveries WHERE done_ms IS NULL), \
                (SELECT count(*) FROM deliveries WHERE state = 'failed')",
    )?
    .query_row([], |r| Ok(DeliveryCounts { pending: r.get::<_, i64>(0)? as u64, failed: r.get::<_, i64>(1)? as u64 }))
}

/// A session's deliveries (at most [`MAX_SESSION_DELIVERIES`]), or `None` when it does not exist.
pub(super) fn deliveries(c: &Connection, id: &str) -> rusqlite::Result<Option<Vec<DeliveryRow>>> {
    snapshot(c, |c| {
        let Some(sid) = session_sid(c, id)? else { return Ok(None) };
        let mut stmt = c.prepare_cached(
            "SELECT d.alert_id, a.type, d.target, d.state, d.attempts, d.created_ms, d.next_ms, d.done_ms, d.error \
             FROM alerts a JOIN deliveries d ON d.alert_id = a.id WHERE a.sid = ?1 \
             ORDER BY d.alert_id, d.target LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![sid, MAX_SESSION_DELIVERIES], |r| {
                Ok(DeliveryRow {
                    alert_id: r.get(0)?,
                    alert_type: r.get(1)?,
                    target: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    created_ms: r.get(5)?,
                    next_ms: r.get(6)?,
                    done_ms: r.get(7)?,
                    error: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(rows))
    })
}

/// The few envelope fields a stream filter reads, taken from a stored (already valid) event.
#[derive(serde::Deserialize)]
struct Envelope {
    session_id: String,
    agent_id: String,
    #[serde(rename = "type")]
    kind: String,
}

pub(super) fn events_since(c: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<FeedEvent>> {
    let mut stmt = c.prepare_cached("SELECT id, body FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(params![after, limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json) = row?;
        // Stored events were validated on the way in; one that does not parse is skipped, not fatal.
        if let Ok(env) = serde_json::from_str::<Envelope>(&json) {
            out.push(FeedEvent { id, session_id: env.session_id, agent_id: env.agent_id, event_type: env.kind, json });
        }
    }
    Ok(out)
}

/// Streams a session's events as JSON lines, reading the next chunk only when the client has
/// taken the last one: a chunk is at most [`EXPORT_CHUNK_BYTES`] (plus one event), so an export
/// holds one chunk and the server's write buffer whatever its events' sizes, a client that stops
/// reading stops the reads, and no thread waits on it. A session deleted while it is exported
/// ends the stream with an error, never a short success.
pub(super) async fn export(readers: Arc<Readers>, id: String) -> Result<Option<ExportStream>, StoreError> {
    let sid = {
        let id = id.clone();
        readers.run(move |c| session_sid(c, &id)).await?
    };
    let Some(sid) = sid else { return Ok(None) };
    let stream = futures_util::stream::unfold(Some(-1i64), move |after| {
        let (readers, id) = (Arc::clone(&readers), id.clone());
        async move {
            let after = after?;
            let chunk = match readers.run(move |c| export_chunk(c, sid, after)).await {
                Ok(chunk) => chunk,
                Err(e) => return Some((Err(e), None)),
            };
            match chunk.next {
                ChunkEnd::Deleted => Some((Err(StoreError::Gone(id)), None)),
                _ if chunk.bytes.is_empty() => None,
                ChunkEnd::More(seq) => Some((Ok(Bytes::from(chunk.bytes)), Some(seq))),
                ChunkEnd::Done => Some((Ok(Bytes::from(chunk.bytes)), None)),
            }
        }
    });
    Ok(Some(Box::pin(stream)))
}

struct ExportChunk {
    bytes: Vec<u8>,
    next: ChunkEnd,
}

enum ChunkEnd {
    /// More may follow the event with this sequence.
    More(i64),
    Done,
    /// The session disappeared between two chunks.
    Deleted,
}

/// One chunk of an export, with the session's existence checked in the same read transaction (a
/// deletion removes the row and its events together, so an empty read is either the end or that).
fn export_chunk(c: &Connection, sid: i64, after: i64) -> rusqlite::Result<ExportChunk> {
    snapshot(c, |c| export_chunk_in_tx(c, sid, after))
}

fn export_chunk_in_tx(c: &Connection, sid: i64, after: i64) -> rusqlite::Result<ExportChunk> {
    let exists = c.prepare_cached("SELECT 1 FROM sessions WHERE sid = ?1")?.exists([sid])?;
    if !exists {
        return Ok(ExportChunk { bytes: Vec::new(), next: ChunkEnd::Deleted });
    }
    let mut stmt =
        c.prepare_cached("SELECT seq, body FROM events WHERE sid = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?;
    let mut bytes = Vec::with_capacity(EXPORT_CHUNK_BYTES + 64 * 1024);
    let mut rows = stmt.query(params![sid, after, EXPORT_CHUNK_ROWS as i64])?;
    let (mut n, mut last) = (0, after);
    while let Some(r) = rows.next()? {
        last = r.get::<_, i64>(0)?;
        bytes.extend_from_slice(r.get_ref(1)?.as_bytes().map_err(rusqlite::Error::from)?);
        bytes.push(b'\n');
        n += 1;
        if bytes.len() >= EXPORT_CHUNK_BYTES {
            return Ok(ExportChunk { bytes, next: ChunkEnd::More(last) });
        }
    }
    let next = if n == EXPORT_CHUNK_ROWS { ChunkEnd::More(last) } else { ChunkEnd::Done };
    Ok(ExportChunk { bytes, next })
}

#[cfg(test)]
mod tests {
    use super::super::schema;
    use super::*;

    /// `aop copy` reads a source of any schema version as it is, without migrating it: what it
    /// reads (the sessions list, exports) must be there in every version.
    #[test]
    fn a_copy_reads_every_schema_version() {
        for version in 1..=schema::CURRENT {
            let conn = schema::made_by_aop(version);
            let q = SessionQuery { limit: 10, ..SessionQuery::default() };
            list_sessions(&conn, &q, Some((1, "x".into()))).unwrap_or_else(|e| panic!("version {version}: {e}"));
            session_sid(&conn, "x").unwrap_or_else(|e| panic!("version {version}: {e}"));
            export_chunk(&conn, 1, -1).unwrap_or_else(|e| panic!("version {version}: {e}"));
        }
    }

    #[test]
    fn a_read_past_its_deadline_is_interrupted_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let readers = Readers::new(path, Access::Immutable, Some(Duration::from_millis(50)));
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let e = readers.with(|c| c.query_row(endless, [], |r| r.get::<_, i64>(0))).unwrap_err();
        assert!(e.to_string().contains("ran past its deadline of 0 s"), "{e}");
        // The connection goes back to the pool with a deadline of its own for the next read.
        assert_eq!(readers.with(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))).unwrap(), 0);
    }

    #[test]
    fn placeholders_are_numbered_after_explicit_ones() {
        assert_eq!(
            number_placeholders("a = ? AND b = ? AND (c = ?3 OR d = ?3)"),
            "a = ?1 AND b = ?2 AND (c = ?3 OR d = ?3)"
        );
    }
}
