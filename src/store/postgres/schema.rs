//! Schema and migrations, versioned in `aop_schema`.
//!
//! Several instances may start at the same moment against one database: the migration runs in
//! one transaction under a transaction-scoped advisory lock, so the first creates or upgrades the
//! schema and the others wait, then find it current. A version above this build's is refused.

use tokio_postgres::Client;

/// The advisory lock key of migrations ("aopschem" in ASCII).
const MIGRATION_LOCK: i64 = 0x616f_7073_6368_656d;

const MIGRATIONS: &[&str] = &[
    // v1: the SQLite schema's tables under `aop_` names (a shared database may hold others), plus
    // what a fleet needs:
    // - `aop_head`, one row holding the last position given to an event and to a notice. Every
    //   writing transaction locks it last and commits holding it, so positions are handed out in
    //   commit order, one transaction at a time: no reader at position n can ever see n + 1
    //   before n, and a rollback gives its positions back (no holes).
    // - `aop_notices`: alerts and deletions, positioned like events, so every instance's
    //   subscribers hear them; pruned after an hour (a stream that far behind starts over).
    // - `rev` on a session row: bumped by every write, so an instance knows when its cached copy
    //   of a session was changed by another one.
    // Clocks (`heard_ms`, `created_ms`) are the database's, so instances' clocks need not agree.
    "
    CREATE TABLE aop_head (
        one     boolean PRIMARY KEY DEFAULT true CHECK (one),
        events  bigint NOT NULL,
        notices bigint NOT NULL
    );
    INSERT INTO aop_head VALUES (true, 0, 0);
    CREATE TABLE aop_sessions (
        sid          bigserial PRIMARY KEY,
        id           text NOT NULL UNIQUE,
        agent_id     text NOT NULL,
        parent_id    text,
        goal         text,
        status       text NOT NULL,
        last_seen_us bigint NOT NULL,
        event_count  bigint NOT NULL,
        alert_count  bigint NOT NULL DEFAULT 0,
        pinned       boolean NOT NULL DEFAULT false,
        heard_ms     bigint NOT NULL DEFAULT 0,
        stalled      boolean NOT NULL DEFAULT false,
        state        text NOT NULL,
        detect       text,
        detect_upto  bigint NOT NULL DEFAULT 0,
        conversation text,
        rev          bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX aop_sessions_recent ON aop_sessions (last_seen_us DESC, id DESC);
    CREATE INDEX aop_sessions_parent ON aop_sessions (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX aop_sessions_silent ON aop_sessions (heard_ms) WHERE status = 'running' AND NOT stalled;
    CREATE INDEX aop_sessions_ended ON aop_sessions (heard_ms) WHERE status <> 'running' AND NOT pinned;
    CREATE TABLE aop_events (
        pos  bigint PRIMARY KEY,
        sid  bigint NOT NULL,
        seq  bigint NOT NULL,
        body text NOT NULL,
        UNIQUE (sid, seq)
    );
    CREATE TABLE aop_alerts (
        id         bigserial PRIMARY KEY,
        sid        bigint NOT NULL,
        session_id text NOT NULL,
        type       text NOT NULL,
        event_id   bigint,
        body       text NOT NULL
    );
    CREATE INDEX aop_alerts_by_session ON aop_alerts (sid, id);
    CREATE TABLE aop_notices (
        pos        bigint PRIMARY KEY,
        kind       text NOT NULL,
        session_id text NOT NULL,
        agent_id   text NOT NULL,
        type       text NOT NULL,
        body       text NOT NULL,
        created_ms bigint NOT NULL
    );
    ",
    // v2. `GET /sessions?conversation=ID` reads one conversation's sessions in the list's order.
    "CREATE INDEX aop_sessions_conversation ON aop_sessions (conversation, last_seen_us DESC, id DESC) \
     WHERE conversation IS NOT NULL;",
    // v3. The notification outbox, as SQLite's (`deliveries`, v4): one row per (alert, target),
    // inserted with the alert. In a fleet a row is claimed by pushing `next_ms` past a lease
    // (under `FOR UPDATE SKIP LOCKED`), so one instance delivers it, and another one takes it
    // over if the claimant dies before it settles it.
    "
    CREATE TABLE aop_deliveries (
        alert_id   bigint NOT NULL,
        target     text NOT NULL,
        state      text NOT NULL,
        attempts   integer NOT NULL DEFAULT 0,
        created_ms bigint NOT NULL,
        next_ms    bigint NOT NULL,
        done_ms    bigint,
        error      text,
        PRIMARY KEY (alert_id, target)
    );
    CREATE INDEX aop_deliveries_due ON aop_deliveries (next_ms) WHERE done_ms IS NULL;
    ",
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
