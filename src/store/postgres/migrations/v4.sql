-- v4. Post-commit sequencing (ARCHITECTURE.md, "How the fleet keeps one order"): writers no
-- longer take `aop_head`. Each writing transaction stores its events and notices under a
-- group `grp` it names itself (from blocks of `aop_group_block`), and inserts the group's
-- row last, drawing a ticket from `aop_ticket` (CACHE 1, so tickets follow real time). The
-- sequencer (`aop_sequence`, below) later gives committed groups contiguous positions in
-- ticket order: an event's position is `first_pos + k`, a notice's `first_notice + k`.
-- Detector catch-up follows a session's own ordinal `n` (its `last_n` on the row), because
-- a writer no longer knows positions.
-- What was stored before becomes group 0 with `k = pos - 1`: no position changes.
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
