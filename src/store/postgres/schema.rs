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
    // v4. Post-commit sequencing (ARCHITECTURE.md, "How the fleet keeps one order"): writers no
    // longer take `aop_head`. Each writing transaction stores its events and notices under a
    // group `grp` it names itself (from blocks of `aop_group_block`), and inserts the group's
    // row last, drawing a ticket from `aop_ticket` (CACHE 1, so tickets follow real time). The
    // sequencer (`aop_sequence`, below) later gives committed groups contiguous positions in
    // ticket order: an event's position is `first_pos + k`, a notice's `first_notice + k`.
    // Detector catch-up follows a session's own ordinal `n` (its `last_n` on the row), because
    // a writer no longer knows positions.
    // What was stored before becomes group 0 with `k = pos - 1`: no position changes.
    "
    CREATE SEQUENCE aop_ticket;
    CREATE SEQUENCE aop_group_block;
    CREATE TABLE aop_groups (
        grp          bigint PRIMARY KEY,
        ticket       bigint NOT NULL DEFAULT nextval('aop_ticket'),
        n_events     bigint NOT NULL,
        n_notices    bigint NOT NULL,
        first_pos    bigint,
        last_pos     bigint,
        first_notice bigint,
        last_notice  bigint,
        created_ms   bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
    );
    CREATE INDEX aop_groups_unsequenced ON aop_groups (ticket) WHERE first_pos IS NULL;
    CREATE INDEX aop_groups_events ON aop_groups (last_pos) WHERE n_events > 0;
    CREATE INDEX aop_groups_notices ON aop_groups (last_notice) WHERE n_notices > 0;
    INSERT INTO aop_groups (grp, ticket, n_events, n_notices, first_pos, last_pos, first_notice, last_notice)
        SELECT 0, 0, events, notices, 1, events, 1, notices FROM aop_head;

    ALTER TABLE aop_sessions ADD COLUMN last_n bigint NOT NULL DEFAULT 0;
    ALTER TABLE aop_events ADD COLUMN grp bigint, ADD COLUMN k bigint, ADD COLUMN n bigint;
    UPDATE aop_events e SET grp = 0, k = e.pos - 1, n = o.n
        FROM (SELECT pos, row_number() OVER (PARTITION BY sid ORDER BY pos) AS n FROM aop_events) o
        WHERE o.pos = e.pos;
    UPDATE aop_sessions s SET
        last_n = coalesce((SELECT max(n) FROM aop_events e WHERE e.sid = s.sid), 0),
        detect_upto = coalesce((SELECT max(n) FROM aop_events e WHERE e.sid = s.sid AND e.pos <= s.detect_upto), 0);
    ALTER TABLE aop_events DROP CONSTRAINT aop_events_pkey, DROP COLUMN pos,
        ALTER COLUMN grp SET NOT NULL, ALTER COLUMN k SET NOT NULL, ALTER COLUMN n SET NOT NULL,
        ADD PRIMARY KEY (grp, k);
    CREATE INDEX aop_events_by_n ON aop_events (sid, n);

    ALTER TABLE aop_notices ADD COLUMN grp bigint, ADD COLUMN k bigint;
    UPDATE aop_notices SET grp = 0, k = pos - 1;
    ALTER TABLE aop_notices DROP CONSTRAINT aop_notices_pkey, DROP COLUMN pos,
        ALTER COLUMN grp SET NOT NULL, ALTER COLUMN k SET NOT NULL, ADD PRIMARY KEY (grp, k);
    CREATE INDEX aop_notices_created ON aop_notices (created_ms);

    -- One sequencing step, called alone in a transaction at READ COMMITTED. VOLATILE, so each
    -- statement takes a new snapshot: the groups are read after the lock is held, and so
    -- include everything the previous holder numbered. Planned afresh each call: a cached
    -- generic plan made on an empty table walked every waiting group once per group.
    CREATE FUNCTION aop_sequence(max_groups int) RETURNS int
    LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
    DECLARE
        head_events  bigint;
        head_notices bigint;
        numbered     int;
        new_events   bigint;
        new_notices  bigint;
    BEGIN
        IF current_setting('transaction_isolation') <> 'read committed' THEN
            RAISE EXCEPTION 'aop_sequence needs READ COMMITTED, not %', current_setting('transaction_isolation');
        END IF;
        -- (aopseqnc in ASCII) One step at a time in the fleet. No WAL, no transaction id; a dead
        -- holder's lock goes with its connection.
        PERFORM pg_advisory_xact_lock(7020953985019375203);
        SELECT events, notices INTO head_events, head_notices FROM aop_head;
        WITH todo AS (
            SELECT grp, ticket, n_events, n_notices FROM aop_groups
            WHERE first_pos IS NULL ORDER BY ticket LIMIT max_groups
        ), placed AS (
            SELECT grp,
                   head_events + sum(n_events) OVER w - n_events + 1 AS first_pos,
                   head_events + sum(n_events) OVER w AS last_pos,
                   head_notices + sum(n_notices) OVER w - n_notices + 1 AS first_notice,
                   head_notices + sum(n_notices) OVER w AS last_notice
            FROM todo WINDOW w AS (ORDER BY ticket ROWS UNBOUNDED PRECEDING)
        ), done AS (
            UPDATE aop_groups g SET first_pos = p.first_pos, last_pos = p.last_pos,
                   first_notice = p.first_notice, last_notice = p.last_notice
            FROM placed p WHERE g.grp = p.grp
            RETURNING p.last_pos, p.last_notice
        )
        SELECT count(*), max(last_pos), max(last_notice) INTO numbered, new_events, new_notices FROM done;
        IF numbered = 0 THEN
            RETURN 0;
        END IF;
        UPDATE aop_head SET events = new_events, notices = new_notices;
        PERFORM pg_notify('aop_feed', new_events::text);
        RETURN numbered;
    END
    $$;
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
