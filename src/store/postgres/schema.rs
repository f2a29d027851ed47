//! Schema and migrations, versioned in `aop_schema`.
//!
//! Several instances may start at the same moment against one database: the migration runs in
//! one transaction under a transaction-scoped advisory lock, so the first creates or upgrades the
//! schema and the others wait, then find it current. A version above this build's is refused.

use tokio_postgres::Client;

/// The advisory lock key of migrations ("aopschem" in ASCII).
const MIGRATION_LOCK: i64 = 0x616f_7073_6368_656d;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/v1.sql"),
    include_str!("migrations/v2.sql"),
    include_str!("migrations/v3.sql"),
    include_str!("migrations/v4.sql"),
];

/// The schema version this build writes.
pub(super) const CURRENT: i64 = MIGRATIONS.len() as i64;

pub(super) enum Migrated {
    Ready,
    /// Written by a newer aop: refuse rather than misread.
    Newer(i64),
}

/// Brings the database up to [`CURRENT`], once across concurrent starters.
pub(super) async fn migrate(client: &mut Client) -> Result<Migrated, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS aop_schema (version bigint NOT NULL)").await?;
    let found: i64 = tx.query_opt("SELECT version FROM aop_schema", &[]).await?.map_or(0, |r| r.get::<_, i64>(0));
    if found > CURRENT {
        return Ok(Migrated::Newer(found));
    }
    for sql in MIGRATIONS.iter().skip(found as usize) {
        tx.batch_execute(sql).await?;
    }
    if found < CURRENT {
        tx.execute("DELETE FROM aop_schema", &[]).await?;
        tx.execute("INSERT INTO aop_schema VALUES ($1)", &[&CURRENT]).await?;
    }
    tx.commit().await?;
    Ok(Migrated::Ready)
}
