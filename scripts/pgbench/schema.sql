-- Tables for scripts/pgbench.sh: the two write shapes side by side, each in a schema of its own
-- so the pgbench scripts name the tables exactly as aop's SQL does (the runner picks the shape
-- with search_path).
--
-- head_notify: today's schema (src/store/postgres/schema.rs, v1-v3), the tables a writing
--   transaction touches: aop_head, aop_sessions with all its indexes, aop_events.
-- post_commit: the post-commit sequencing shape of the fleet-order design note (section 5.2):
--   aop_groups with a ticket from a CACHE 1 sequence, aop_events keyed by (grp, k) with a
--   per-session ordinal, aop_head written only by the sequencer.
--
-- reset.sql fills them before each measurement.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS head_notify CASCADE;
DROP SCHEMA IF EXISTS post_commit CASCADE;

-- The session table is the same in both shapes (as in v1-v3).
CREATE FUNCTION public.aop_bench_sessions_table(schema_name text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format($s$
    CREATE TABLE %1$I.aop_sessions (
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
    CREATE INDEX ON %1$I.aop_sessions (last_seen_us DESC, id DESC);
    CREATE INDEX ON %1$I.aop_sessions (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX ON %1$I.aop_sessions (heard_ms) WHERE status = 'running' AND NOT stalled;
    CREATE INDEX ON %1$I.aop_sessions (heard_ms) WHERE status <> 'running' AND NOT pinned;
    CREATE INDEX ON %1$I.aop_sessions (conversation, last_seen_us DESC, id DESC) WHERE conversation IS NOT NULL;
    $s$, schema_name);
END
$f$;

-- (i) today -----------------------------------------------------------------------------------
CREATE SCHEMA head_notify;
SELECT public.aop_bench_sessions_table('head_notify');
CREATE TABLE head_notify.aop_head (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    events  bigint NOT NULL,
    notices bigint NOT NULL
);
CREATE TABLE head_notify.aop_events (
    pos  bigint PRIMARY KEY,
    sid  bigint NOT NULL,
    seq  bigint NOT NULL,
    body text NOT NULL,
    UNIQUE (sid, seq)
);

-- (ii) post-commit sequencing -----------------------------------------------------------------
CREATE SCHEMA post_commit;
SELECT public.aop_bench_sessions_table('post_commit');
-- `steps` is bookkeeping for the benchmark only (sequencing steps that numbered something),
-- bumped in the update the sequencer makes anyway.
CREATE TABLE post_commit.aop_head (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    events  bigint NOT NULL,
    notices bigint NOT NULL,
    steps   bigint NOT NULL DEFAULT 0
);
-- CACHE 1 (the default, spelled out): tickets must follow real time across sessions.
CREATE SEQUENCE post_commit.aop_ticket CACHE 1;
-- `step` is bookkeeping for the benchmark only (which sequencing step numbered the group), so
-- the runner can check ticket order inside each step; it is set by the update that sets the
-- positions.
CREATE TABLE post_commit.aop_groups (
    grp          bigint PRIMARY KEY,
    ticket       bigint NOT NULL DEFAULT nextval('post_commit.aop_ticket'),
    n_events     int NOT NULL,
    n_notices    int NOT NULL,
    first_pos    bigint,
    last_pos     bigint,
    first_notice bigint,
    step         bigint
);
CREATE INDEX aop_groups_unsequenced ON post_commit.aop_groups (ticket) WHERE first_pos IS NULL;
CREATE INDEX aop_groups_last_pos ON post_commit.aop_groups (last_pos);
CREATE INDEX aop_groups_first_notice ON post_commit.aop_groups (first_notice);
CREATE TABLE post_commit.aop_events (
    grp  bigint NOT NULL,
    k    int NOT NULL,
    sid  bigint NOT NULL,
    seq  bigint NOT NULL,
    n    bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (grp, k),
    UNIQUE (sid, seq)
);
CREATE INDEX aop_events_session_ordinal ON post_commit.aop_events (sid, n);

DROP FUNCTION public.aop_bench_sessions_table(text);
