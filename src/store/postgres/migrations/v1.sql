-- v1: the SQLite schema's tables under `aop_` names (a shared database may hold others), plus
-- what a fleet needs:
-- - `aop_head`, one row holding the last position given to an event and to a notice. Until
--   v4 (which numbers committed groups afterwards instead), every writing transaction locked
--   it last and committed holding it, so positions were handed out in commit order, one
--   transaction at a time: no reader at position n could ever see n + 1 before n, and a
--   rollback gave its positions back (no holes).
-- - `aop_notices`: alerts and deletions, positioned like events, so every instance's
--   subscribers hear them; pruned after an hour (a stream that far behind starts over).
-- - `rev` on a session row: bumped by every write, so an instance knows when its cached copy
--   of a session was changed by another one.
-- Clocks (`heard_ms`, `created_ms`) are the database's, so instances' clocks need not agree.
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
