//! Reads, on the pool's connections (never the writer's). What must agree (a session's row,
//! events and alerts; an export chunk and its session's existence) is read in one
//! repeatable-read transaction, as SQLite's readers do.

use super::feed::Envelope;
use super::{classify, pool_error};
use crate::model::{SessionRow, SessionState};
use crate::store::outbox::{Claimed, DeliveryCounts, DeliveryRow, Due, MAX_SESSION_DELIVERIES};
use crate::store::{
    AlertPage, AlertQuery, DetailQuery, ExportStream, FeedEvent, SessionDetail, SessionPage, SessionQuery, StoreError,
    StoredEvent,
};
use bytes::Bytes;
use deadpool_postgres::{Client, Pool};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, IsolationLevel, Row};

/// An export chunk ends at this many rows or this many bytes, whichever comes first.
const EXPORT_CHUNK_ROWS: i64 = 2000;
const EXPORT_CHUNK_BYTES: usize = 256 * 1024;

type Param = Box<dyn ToSql + Sync + Send>;

const ROW_COLUMNS: &str = "s.id, s.state, s.alert_count, \
     (SELECT count(*) FROM aop_sessions c WHERE c.parent_id = s.id), s.last_seen_us, s.pinned";

fn row_from(r: &Row) -> (SessionRow, i64) {
    row_at(r, 0)
}

/// The [`ROW_COLUMNS`] starting at column `at`.
fn row_at(r: &Row, at: usize) -> (SessionRow, i64) {
    let id: String = r.get(at);
    let state: &str = r.get(at + 1);
    let mut row = serde_json::from_str::<SessionState>(state)
        .unwrap_or_else(|_| SessionState::new(&id))
        .view(r.get(at + 2), r.get(at + 3));
    row.pinned = r.get(at + 5);
    (row, r.get(at + 4))
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

pub(super) async fn list_sessions(
    c: &mut Client,
    q: SessionQuery,
    cursor: Option<(i64, String)>,
) -> Result<SessionPage, Error> {
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM aop_sessions s WHERE s.event_count > 0");
    let mut params: Vec<Param> = Vec::new();
    if let Some((us, id)) = cursor {
        sql.push_str(&format!(" AND (s.last_seen_us, s.id) < (${}, ${})", params.len() + 1, params.len() + 2));
        params.push(Box::new(us));
        params.push(Box::new(id));
    }
    for (column, value) in [
        ("s.status", &q.status),
        ("s.agent_id", &q.agent_id),
        ("s.parent_id", &q.parent_session_id),
        ("s.conversation", &q.conversation),
    ] {
        if let Some(v) = value {
            params.push(Box::new(v.clone()));
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    }
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        params.push(Box::new(text.to_lowercase()));
        let n = params.len();
        sql.push_str(&format!(
            " AND (strpos(lower(s.id), ${n}) > 0 OR strpos(lower(s.agent_id), ${n}) > 0 \
             OR strpos(lower(coalesce(s.goal, '')), ${n}) > 0 OR strpos(lower(coalesce(s.conversation, '')), ${n}) > 0)"
        ));
    }
    sql.push_str(&format!(" ORDER BY s.last_seen_us DESC, s.id DESC LIMIT {}", q.limit + 1));
    let rows: Vec<(SessionRow, i64)> = c.query(&sql, &refs(&params)).await?.iter().map(row_from).collect();
    Ok(q.page(rows))
}

/// See [`crate::store::Store::idle_sessions`], on the database's clock.
pub(super) async fn idle_sessions(c: &mut Client, silent_ms: i64) -> Result<Vec<SessionState>, Error> {
    let rows = c
        .query(
            "SELECT id, state FROM aop_sessions WHERE status = 'running' AND event_count > 0 \
               AND heard_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1 \
               AND state::jsonb -> 'ends_when_idle' = 'true'::jsonb ORDER BY heard_ms LIMIT $2",
            &[&silent_ms, &crate::store::IDLE_BATCH],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (id, state): (&str, &str) = (r.get(0), r.get(1));
            serde_json::from_str(state).unwrap_or_else(|_| SessionState::new(id))
        })
        .collect())
}

/// A session's derived state, for the guard: what any instance committed last.
pub(super) async fn session_state(c: &mut Client, id: String) -> Result<Option<SessionState>, Error> {
    let row = c.query_opt("SELECT state FROM aop_sessions WHERE id = $1 AND event_count > 0", &[&id]).await?;
    Ok(row.map(|r| serde_json::from_str(r.get(0)).unwrap_or_else(|_| SessionState::new(&id))))
}

pub(super) async fn children(c: &mut Client, id: String) -> Result<Option<Vec<SessionRow>>, Error> {
    let rows: Vec<SessionRow> = c
        .query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM aop_sessions s WHERE s.parent_id = $1 AND s.event_count > 0 \
                 ORDER BY s.last_seen_us DESC, s.id DESC LIMIT 10000"
            ),
            &[&id],
        )
        .await?
        .iter()
        .map(|r| row_from(r).0)
        .collect();
    if rows.is_empty() && session_sid(c, &id).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(rows))
}

async fn session_sid(c: &Client, id: &str) -> Result<Option<i64>, Error> {
    Ok(c.query_opt("SELECT sid FROM aop_sessions WHERE id = $1 AND event_count > 0", &[&id]).await?.map(|r| r.get(0)))
}

/// The row, its events and its alerts, read together so they agree with each other.
pub(super) async fn session_detail(c: &mut Client, id: String, q: DetailQuery) -> Result<Option<SessionDetail>, Error> {
    let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
    let DetailQuery { after, limit, alerts_after, alerts_limit } = q;
    let Some(found) = tx
        .query_opt(
            &format!("SELECT {ROW_COLUMNS}, s.sid FROM aop_sessions s WHERE s.id = $1 AND s.event_count > 0"),
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (session, sid) = (row_from(&found).0, found.get::<_, i64>(6));
    let mut events: Vec<StoredEvent> = tx
        .query(
            "SELECT seq, body FROM aop_events WHERE sid = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&sid, &after.unwrap_or(-1), &(limit as i64 + 1)],
        )
        .await?
        .into_iter()
        .map(|r| StoredEvent { sequence: r.get(0), json: r.get(1) })
        .collect();
    let more = events.len() > limit;
    events.truncate(limit);
    let alerts: Vec<(i64, String)> = tx
        .query(
            "SELECT id, body FROM aop_alerts WHERE sid = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&sid, &alerts_after.unwrap_or(-1), &(alerts_limit as i64 + 1)],
        )
        .await?
        .iter()
        .map(alert_json)
        .collect();
    tx.commit().await?;
    let (alerts, next_alerts_after) = q.alerts_page(alerts);
    Ok(Some(SessionDetail { session, events, more, alerts, next_alerts_after }))
}

/// An alert row's JSON with its id (stored without it: unknown before the insert).
fn alert_json(r: &Row) -> (i64, String) {
    let id: i64 = r.get(0);
    (id, crate::detect::with_alert_id(r.get(1), id))
}

/// `GET /alerts`, before the alert id `before` (the decoded cursor).
pub(super) async fn alerts(c: &mut Client, q: AlertQuery, before: Option<i64>) -> Result<AlertPage, Error> {
    let mut sql = "SELECT id, body FROM aop_alerts WHERE true".to_owned();
    let mut params: Vec<Param> = Vec::new();
    if let Some(before) = before {
        params.push(Box::new(before));
        sql.push_str(&format!(" AND id < ${}", params.len()));
    }
    if let Some(s) = &q.session_id {
        params.push(Box::new(s.clone()));
        sql.push_str(&format!(" AND session_id = ${}", params.len()));
    }
    if let Some(t) = &q.kind {
        params.push(Box::new(t.clone()));
        sql.push_str(&format!(" AND type = ${}", params.len()));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
    let rows: Vec<(i64, String)> = c.query(&sql, &refs(&params)).await?.iter().map(alert_json).collect();
    Ok(q.page(rows))
}

/// Events after position `after`, up to `limit` of them (fewer only at the head), for a stream
/// resuming there.
pub(super) async fn events_since(c: &mut Client, after: i64, limit: usize) -> Result<Vec<FeedEvent>, Error> {
    let head: i64 = c.query_one("SELECT events FROM aop_head", &[]).await?.get(0);
    let mut out = Vec::with_capacity(limit.min(4096));
    let mut reached = after;
    while out.len() < limit && reached < head {
        let (rows, to) = events_between(c, reached, head, (limit - out.len()) as i64).await?;
        reached = to;
        out.extend(rows.into_iter().filter_map(|(id, json)| {
            let env = serde_json::from_str::<Envelope>(&json).ok()?;
            Some(FeedEvent { id, session_id: env.session_id, agent_id: env.agent_id, event_type: env.kind, json })
        }));
    }
    Ok(out)
}

/// The events at positions in `(after, upto]` (`upto` at most the head), at most `limit`
/// positions' worth, in position order, and the position read through: below it nothing is
/// left to read. Positions of deleted sessions' events are holes, so a page may hold fewer
/// events than positions; callers go on from the position read through, not from the last
/// event.
pub(super) async fn events_between(
    c: &Client,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<(Vec<(i64, String)>, i64), Error> {
    let groups = c
        .query(
            "SELECT grp, first_pos, last_pos FROM aop_groups \
             WHERE n_events > 0 AND last_pos > $1 AND first_pos <= $2 ORDER BY last_pos LIMIT $3",
            &[&after, &upto, &limit],
        )
        .await?;
    let (mut grps, mut from_k, mut to_k, mut firsts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut reached, mut left) = (after, limit);
    for g in &groups {
        let (grp, first, last): (i64, i64, i64) = (g.get(0), g.get(1), g.get(2));
        let from = first.max(reached + 1);
        let to = last.min(upto).min(from + left - 1);
        grps.push(grp);
        from_k.push(from - first);
        to_k.push(to - first);
        firsts.push(first);
        left -= to - from + 1;
        reached = to;
        if left == 0 {
            break;
        }
    }
    if left > 0 && (groups.len() as i64) < limit {
        reached = upto; // every group up to `upto` was read
    }
    if grps.is_empty() {
        return Ok((Vec::new(), reached));
    }
    // One index range per group: `OFFSET 0` keeps the planner from flattening the lateral
    // subquery into a join that could scan the whole table.
    let rows = c
        .query(
            "SELECT u.first + e.k, e.body \
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(grp, lo, hi, first), \
             LATERAL (SELECT k, body FROM aop_events e WHERE e.grp = u.grp AND e.k >= u.lo AND e.k <= u.hi OFFSET 0) e \
             ORDER BY 1",
            &[&grps, &from_k, &to_k, &firsts],
        )
        .await?;
    Ok((rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(), reached))
}

/// Streams a session's events as JSON lines, one chunk (≤ [`EXPORT_CHUNK_BYTES`] plus one event)
/// read when the client took the last; a session deleted meanwhile ends it with an error.
pub(super) async fn export(pool: Pool, id: String) -> Result<Option<ExportStream>, StoreError> {
    let sid = {
        let c = pool.get().await.map_err(pool_error)?;
        session_sid(&c, &id).await.map_err(|e| classify(&e))?
    };
    let Some(sid) = sid else { return Ok(None) };
    let stream = futures_util::stream::unfold(Some(-1i64), move |after| {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            let after = after?;
            let chunk = async {
                let mut c = pool.get().await.map_err(pool_error)?;
                export_chunk(&mut c, sid, after).await.map_err(|e| classify(&e))
            };
            match chunk.await {
                Err(e) => Some((Err(e), None)),
                Ok(None) => Some((Err(StoreError::Gone(id)), None)),
                Ok(Some((bytes, _))) if bytes.is_empty() => None,
                Ok(Some((bytes, next))) => Some((Ok(Bytes::from(bytes)), next)),
            }
        }
    });
    Ok(Some(Box::pin(stream)))
}

/// One chunk and the sequence after which more may follow; `None` when the session is gone.
async fn export_chunk(c: &mut Client, sid: i64, after: i64) -> Result<Option<(Vec<u8>, Option<i64>)>, Error> {
    let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
    if tx.query_opt("SELECT 1 FROM aop_sessions WHERE sid = $1", &[&sid]).await?.is_none() {
        return Ok(None);
    }
    // The byte bound is applied by the server: rows past it are never sent.
    let rows = tx
        .query(
            "SELECT seq, body FROM ( \
                SELECT seq, body, sum(octet_length(body)) OVER (ORDER BY seq) - octet_length(body) AS before \
                FROM aop_events WHERE sid = $1 AND seq > $2 ORDER BY seq LIMIT $3) t \
             WHERE before < $4 ORDER BY seq",
            &[&sid, &after, &EXPORT_CHUNK_ROWS, &(EXPORT_CHUNK_BYTES as i64)],
        )
        .await?;
    tx.commit().await?;
    let mut bytes = Vec::with_capacity(EXPORT_CHUNK_BYTES + 64 * 1024);
    let mut last = after;
    for r in &rows {
        last = r.get(0);
        bytes.extend_from_slice(r.get::<_, &str>(1).as_bytes());
        bytes.push(b'\n');
    }
    let more = rows.len() as i64 == EXPORT_CHUNK_ROWS || bytes.len() >= EXPORT_CHUNK_BYTES;
    Ok(Some((bytes, more.then_some(last))))
}

/// Claims the deliveries due now for these targets: their `next_ms` is pushed `lease_ms` ahead,
/// in the statement that picks them, skipping rows another instance is claiming. Whoever claims
/// a row delivers it; if it dies, the row is due again once the lease is over.
pub(super) async fn claim_deliveries(
    c: &mut Client,
    targets: Vec<String>,
    limit: usize,
    lease_ms: i64,
) -> Result<Claimed, Error> {
    let sql = format!(
        "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms), \
         due AS (SELECT d.alert_id, d.target FROM aop_deliveries d, now \
                 WHERE d.done_ms IS NULL AND d.next_ms <= now.ms AND d.target = ANY($1) \
                 ORDER BY d.next_ms LIMIT $2 FOR UPDATE OF d SKIP LOCKED), \
         claimed AS (UPDATE aop_deliveries d SET next_ms = now.ms + $3 FROM due, now \
                     WHERE d.alert_id = due.alert_id AND d.target = due.target \
                     RETURNING d.alert_id, d.target, d.attempts, d.created_ms) \
         SELECT cl.alert_id, cl.target, cl.attempts, cl.created_ms, a.session_id, a.type, a.body, \
                (SELECT ms FROM now), {ROW_COLUMNS} \
         FROM claimed cl JOIN aop_alerts a ON a.id = cl.alert_id JOIN aop_sessions s ON s.sid = a.sid"
    );
    let rows = c.query(&sql, &[&targets, &(limit as i64), &lease_ms]).await?;
    let mut out = Claimed::default();
    for r in &rows {
        let alert_id: i64 = r.get(0);
        out.now_ms = r.get(7);
        out.due.push(Due {
            alert_id,
            target: r.get(1),
            attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
            created_ms: r.get(3),
            session_id: r.get(4),
            kind: r.get(5),
            alert: crate::detect::with_alert_id(r.get(6), alert_id),
            session: row_at(r, 8).0,
        });
    }
    Ok(out)
}

pub(super) async fn delivery_counts(c: &mut Client) -> Result<DeliveryCounts, Error> {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM aop_deliveries WHERE done_ms IS NULL), \
                    (SELECT count(*) FROM aop_deliveries WHERE state = 'failed')",
            &[],
        )
        .await?;
    Ok(DeliveryCounts { pending: r.get::<_, i64>(0) as u64, failed: r.get::<_, i64>(1) as u64 })
}

/// A session's deliveries, or `None` when it does not exist.
pub(super) async fn deliveries(c: &mut Client, id: String) -> Result<Option<Vec<DeliveryRow>>, Error> {
    let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
    let Some(found) = tx.query_opt("SELECT sid FROM aop_sessions WHERE id = $1 AND event_count > 0", &[&id]).await?
    else {
        return Ok(None);
    };
    let sid: i64 = found.get(0);
    let rows = tx
        .query(
            "SELECT d.alert_id, a.type, d.target, d.state, d.attempts, d.created_ms, d.next_ms, d.done_ms, d.error \
             FROM aop_alerts a JOIN aop_deliveries d ON d.alert_id = a.id WHERE a.sid = $1 \
             ORDER BY d.alert_id, d.target LIMIT $2",
            &[&sid, &MAX_SESSION_DELIVERIES],
        )
        .await?
        .iter()
        .map(|r| DeliveryRow {
            alert_id: r.get(0),
            alert_type: r.get(1),
            target: r.get(2),
            state: r.get(3),
            attempts: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
            created_ms: r.get(5),
            next_ms: r.get(6),
            done_ms: r.get(7),
            error: r.get(8),
        })
        .collect();
    tx.commit().await?;
    Ok(Some(rows))
}
