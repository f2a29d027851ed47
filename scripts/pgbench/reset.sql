-- Puts both shapes back to the same starting point before each measurement
-- (scripts/pgbench.sh runs it before every one): the 512 sessions the clients write
-- (bench-0 .. bench-511, empty), plus a history of 100,000 events of ~500 bytes in 1,000
-- other sessions, already numbered 1..100000, then statistics and a checkpoint.
--
-- The history is there so the writers' prepared statements are planned as on a store in use:
-- on empty tables a generic plan probes aop_events with a sequential scan, and every
-- transaction then costs more than the last.

\set ON_ERROR_STOP on

TRUNCATE head_notify.aop_events, head_notify.aop_head, head_notify.aop_sessions RESTART IDENTITY;
TRUNCATE post_commit.aop_events, post_commit.aop_groups, post_commit.aop_head, post_commit.aop_sessions
    RESTART IDENTITY;
ALTER SEQUENCE post_commit.aop_ticket RESTART;

-- Sessions: sid 1..512 are the bench's, 513..1512 the history's.
INSERT INTO head_notify.aop_sessions (id, agent_id, status, last_seen_us, event_count, state)
    SELECT 'bench-' || i, 'coding-agent', 'running', 0, 0, '{}' FROM generate_series(0, 511) AS i;
INSERT INTO head_notify.aop_sessions (id, agent_id, status, last_seen_us, event_count, state, rev)
    SELECT 'history-' || h, 'coding-agent', 'completed', 1796644800000000 + h, 100, '{}', 100
    FROM generate_series(0, 999) AS h;
INSERT INTO post_commit.aop_sessions SELECT * FROM head_notify.aop_sessions;

-- History: session h holds sequences 1..100 at positions 100h+1 .. 100h+100.
INSERT INTO head_notify.aop_events (pos, sid, seq, body)
    SELECT 100 * h + s, 513 + h, s,
           rpad(format('{"event_type":"tool.call","session_id":"history-%s","agent_id":"coding-agent","sequence":%s,"data":{"text":"', h, s), 495, 'abcdefghij ') || '"}}'
    FROM generate_series(0, 999) AS h, generate_series(1, 100) AS s;
INSERT INTO head_notify.aop_head VALUES (true, 100000, 0);

-- The same history in (ii): one sequenced group per session (grp -1 .. -1000; writers make up
-- positive ids), numbered before any measured step (step NULL).
INSERT INTO post_commit.aop_groups (grp, ticket, n_events, n_notices, first_pos, last_pos, first_notice)
    SELECT -(h + 1), nextval('post_commit.aop_ticket'), 100, 0, 100 * h + 1, 100 * h + 100, 1
    FROM generate_series(0, 999) AS h ORDER BY h;
INSERT INTO post_commit.aop_events (grp, k, sid, seq, n, body)
    SELECT -(h + 1), s - 1, 513 + h, s, s, body
    FROM (SELECT pos, sid, seq, body, (pos - 1) / 100 AS h, seq AS s FROM head_notify.aop_events) e;
INSERT INTO post_commit.aop_head VALUES (true, 100000, 0, 0);

VACUUM ANALYZE;
CHECKPOINT;
