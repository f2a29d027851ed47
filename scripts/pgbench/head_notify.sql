-- (i) Today's write shape (src/store/postgres/writer.rs, `try_ingest`): one group of :rows
-- events of one session per transaction, with the statements and round trips aop sends:
--   BEGIN
--   lock the session row (FOR UPDATE)
--   probe the (sid, seq) places the events take (the duplicate check; aop looks the places
--     up one by one through unnest, here one range scan of the same unique index)
--   lock aop_head (FOR UPDATE) and read the database's clock
--   one pipelined round trip: insert the events at head+1.., update the session row,
--     advance aop_head and pg_notify('aop_feed', head)
--   COMMIT: the head's row lock and NOTIFY's commit-time lock are held through the WAL flush.
-- Variables from the runner (-D): rows, bodies (a text[] literal of :rows JSON bodies of about
-- 500 bytes), state (the session's saved state, about 300 bytes).
-- Client c writes sessions bench-8c .. bench-8c+7, so clients never wait on each other's
-- session rows: only on aop_head and NOTIFY.

\set s :client_id * 8 + random(0, 7)
BEGIN;
SELECT id, sid, rev, event_count AS ec FROM aop_sessions WHERE id = ANY(ARRAY['bench-' || :s::text]) ORDER BY id FOR UPDATE \gset
SELECT e.sid, e.seq, e.body FROM aop_events e WHERE e.sid = :sid::bigint AND e.seq > :ec::bigint AND e.seq <= :ec::bigint + :rows::int;
SELECT events, notices, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms FROM aop_head FOR UPDATE \gset
\set newhead :events + :rows
\startpipeline
INSERT INTO aop_events (pos, sid, seq, body) SELECT :events::bigint + u.k, :sid::bigint, :ec::bigint + u.k, u.b FROM unnest(:bodies::text[]) WITH ORDINALITY AS u(b, k);
UPDATE aop_sessions SET agent_id = 'coding-agent', parent_id = NULL, goal = NULL, status = 'running', last_seen_us = :now_ms::bigint * 1000, event_count = :ec::bigint + :rows::bigint, state = :state::text, detect = CASE WHEN NULL::text IS NULL THEN detect ELSE NULL END, detect_upto = CASE WHEN NULL::text IS NULL THEN detect_upto ELSE 0 END, heard_ms = CASE WHEN true THEN :now_ms::bigint ELSE heard_ms END, stalled = stalled AND NOT true, conversation = NULL, alert_count = alert_count + 0, rev = rev + 1 WHERE sid = :sid::bigint;
WITH moved AS (UPDATE aop_head SET events = :newhead::bigint, notices = :notices::bigint) SELECT pg_notify('aop_feed', :newhead::text);
\endpipeline
COMMIT;
