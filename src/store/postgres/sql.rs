//! The statements both of the writer's paths run: the fleet's ordering point (`aop_head`), an
//! alert with its notice and deliveries, and a session read back from its locked row.

use super::writer::Failure;
use crate::detect::{with_alert_id, DetectConfig};
use crate::store::apply::{Raised, Saved, Tracked};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The channel every instance's feed listens on.
pub(super) const CHANNEL: &str = "aop_feed";

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Statements run through the connection's cache of prepared statements: parsing and planning
/// each statement anew would cost a round trip per statement of every group.
pub(super) trait Cached {
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

/// Takes the fleet's ordering point: the last positions given out, and the database's clock.
pub(super) async fn lock_head(tx: &Transaction<'_>) -> Result<(i64, i64, i64), Failure> {
    let r = tx
        .q1(
            "SELECT events, notices, (extract(epoch FROM clock_timestamp()) * 1000)::bigint FROM aop_head FOR UPDATE",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1), r.get(2)))
}

/// Records the positions given out and wakes every feed once the transaction commits.
pub(super) async fn release_head(tx: &Transaction<'_>, events: i64, notices: i64) -> Result<(), Failure> {
    let sql = "WITH moved AS (UPDATE aop_head SET events = $1, notices = $2) SELECT pg_notify($3, $4)";
    tx.x(sql, &[&events, &notices, &CHANNEL, &events.to_string()]).await?;
    Ok(())
}

/// When an alert is stored: its `created_at`, its notice's position and the database's clock.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) created_at: &'a str,
    pub(super) notice: i64,
    pub(super) now_ms: i64,
}

/// Stores an alert (raised by the event at `event_id`, if any), its notice for every instance's
/// feed and its deliveries to `targets`.
pub(super) async fn store_alert(
    tx: &Transaction<'_>,
    r: &Raised,
    event_id: Option<i64>,
    at: At<'_>,
    targets: Vec<&str>,
) -> Result<(), Failure> {
    let At { created_at, notice, now_ms } = at;
    let (sid, session_id, agent, a) = (r.key, r.session_id.as_str(), r.agent_id.as_str(), &r.alert);
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

/// A session as its (locked) row says, its detector caught up with the events stored after its
/// saved state (at most about a checkpoint's worth).
pub(super) async fn restore(tx: &Transaction<'_>, saved: Saved<'_>, cfg: &DetectConfig) -> Result<Tracked, Failure> {
    let rows = tx
        .q(
            "SELECT pos, body FROM aop_events WHERE sid = $1 AND pos > $2 ORDER BY pos",
            &[&saved.key, &saved.detect_upto],
        )
        .await?;
    Ok(Tracked::restore(saved, rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, &str>(1))), cfg))
}
