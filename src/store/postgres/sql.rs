//! The statements both of the writer's paths run: the group a transaction writes under, an
//! alert with its notice and deliveries, and a session read back from its locked row.

use super::writer::Failure;
use crate::detect::{with_alert_id, DetectConfig};
use crate::store::apply::{Raised, Saved, Tracked};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The channel every instance's feed listens on (the sequencer sends on it).
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

/// The same on a transaction object and on a connection whose transaction the caller runs
/// itself (the ingest path, which pipelines its `BEGIN` and `COMMIT`).
macro_rules! cached {
    ($t:ty) => {
        impl Cached for $t {
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
    };
}
cached!(Transaction<'_>);
cached!(deadpool_postgres::Client);

/// The database's clock, in ms since the epoch (instances' clocks need not agree).
pub(super) const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Reads the database's clock.
pub(super) async fn now_ms(tx: &impl Cached) -> Result<i64, Failure> {
    Ok(tx.q1(&format!("SELECT {NOW_MS}"), &[]).await?.get(0))
}

pub(super) const INSERT_GROUP: &str = "INSERT INTO aop_groups (grp, n_events, n_notices) VALUES ($1, $2, $3)";

/// Where a transaction's events and notices go: its group, and the next `k` of each.
pub(super) struct Group {
    pub(super) grp: i64,
    pub(super) events: i64,
    pub(super) notices: i64,
}

impl Group {
    pub(super) fn new(grp: i64) -> Group {
        Group { grp, events: 0, notices: 0 }
    }

    /// The group's row, written after everything else of its transaction: its ticket, drawn by
    /// the insert, orders it for the sequencer. No lock is taken after it (every session row
    /// was locked before), so a group that waited for another's session lock draws a larger
    /// ticket than that group, which had committed.
    pub(super) async fn close(&self, tx: &impl Cached) -> Result<(), Failure> {
        if self.events + self.notices > 0 {
            tx.x(INSERT_GROUP, &[&self.grp, &self.events, &self.notices]).await?;
        }
        Ok(())
    }
}

/// Group ids, taken from `aop_group_block` a block at a time: a writer names its groups
/// without a round trip, and no two writers (or restarts) ever name the same one. Group 0 is
/// what a v3 database held.
#[derive(Default)]
pub(super) struct GroupIds {
    next: i64,
    end: i64,
}

/// Groups per block.
const GROUP_BLOCK: i64 = 1 << 20;

impl GroupIds {
    pub(super) async fn next(&mut self, c: &tokio_postgres::Client) -> Result<i64, Failure> {
        if self.next == self.end {
            let block: i64 = c.query_one("SELECT nextval('aop_group_block')", &[]).await?.get(0);
            self.next = block * GROUP_BLOCK;
            self.end = self.next + GROUP_BLOCK;
        }
        self.next += 1;
        Ok(self.next - 1)
    }
}

/// When an alert is stored: its `created_at`, its notice's place in its group and the
/// database's clock.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) created_at: &'a str,
    pub(super) grp: i64,
    pub(super) k: i64,
    pub(super) now_ms: i64,
}

/// Stores an alert (raised by the event at `event_id`, if any), its notice for every instance's
/// feed and its deliveries to `targets`.
pub(super) async fn store_alert(
    tx: &impl Cached,
    r: &Raised,
    event_id: Option<i64>,
    at: At<'_>,
    targets: Vec<&str>,
) -> Result<(), Failure> {
    let At { created_at, grp, k, now_ms } = at;
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
        "INSERT INTO aop_notices (grp, k, kind, session_id, agent_id, type, body, created_ms) \
         VALUES ($1, $2, 'alert', $3, $4, $5, $6, $7)",
        &[&grp, &k, &session_id, &agent, &a.kind.as_str(), &with_alert_id(&body, id), &now_ms],
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
pub(super) async fn restore(tx: &impl Cached, saved: Saved<'_>, cfg: &DetectConfig) -> Result<Tracked, Failure> {
    let rows = tx
        .q("SELECT n, body FROM aop_events WHERE sid = $1 AND n > $2 ORDER BY n", &[&saved.key, &saved.detect_upto])
        .await?;
    Ok(Tracked::restore(saved, rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, &str>(1))), cfg))
}
