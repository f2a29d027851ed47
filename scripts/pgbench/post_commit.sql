-- (ii) The writer of post-commit sequencing (fleet-order design note, 5.3): the same group as
-- head_notify.sql, the same statements and round trips, but no aop_head and no NOTIFY:
--   BEGIN
--   lock the session row (FOR UPDATE) and read the database's clock
--   probe the (sid, seq) places the events take (the duplicate check, as in head_notify.sql)
--   one pipelined round trip: insert the events keyed by (grp, k), update the session row,
--     and last, after every lock, the group's narrow aop_groups row, whose ticket is drawn
--     from the CACHE 1 sequence (nextval, the column's default)
--   COMMIT: only the session row lock is held through the WAL flush.
-- grp is made up by the writer (64 random bits). Positions are given later by aop_sequence
-- (aop_sequence.sql), which the runner calls in a loop from a separate one-client pgbench.
-- Variables from the runner (-D): rows, bodies, state, as in head_notify.sql; client c
-- writes sessions bench-8c .. bench-8c+7.

\set s :client_id * 8 + random(0, 7)
\set grp random(1, 9223372036854775806)
BEGIN;
SELECT id, sid, rev, event_count AS ec, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms FROM aop_sessions WHERE id = ANY(ARRAY['bench-' || :s::text]) ORDER BY id FOR UPDATE \gset
SELECT e.sid, e.seq, e.body FROM aop_events e WHERE e.sid = :sid::bigint AND e.seq > :ec::bigint AND e.seq <= :ec::bigint + :rows::int;
\startpipeline
INSERT INTO aop_events (grp, k, sid, seq, n, body) SELECT :grp::bigint, (u.k - 1)::int, :sid::bigint, :ec::bigint + u.k, :ec::bigint + u.k, u.b FROM unnest(:bodies::text[]) WITH ORDINALITY AS u(b, k);
UPDATE aop_sessions SET agent_id = 'coding-agent', parent_id = NULL, goal = NULL, status = 'running', last_seen_us = :now_ms::bigint * 1000, event_count = :ec::bigint + :rows::bigint, state = :state::text, detect = CASE WHEN NULL::text IS NULL THEN detect ELSE NULL END, detect_upto = CASE WHEN NULL::text IS NULL THEN detect_upto ELSE 0 END, heard_ms = CASE WHEN true THEN :now_ms::bigint ELSE heard_ms END, stalled = stalled AND NOT true, conversation = NULL, alert_count = alert_count + 0, rev = rev + 1 WHERE sid = :sid::bigint;
INSERT INTO aop_groups (grp, n_events, n_notices) VALUES (:grp::bigint, :rows::int, 0);
\endpipeline
COMMIT;
