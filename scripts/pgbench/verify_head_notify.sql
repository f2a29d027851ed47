-- Checks after a run of (i), one row per check: name | ok | detail.
-- Positions are 1..head with no gap and no duplicate, and each session's events are in the
-- order of their sequences.

\set ON_ERROR_STOP on

SELECT 'positions 1..head, no gap, no duplicate' AS check,
       count(*) = h.events AND coalesce(min(e.pos), 1) = 1 AND coalesce(max(e.pos), 0) = h.events
           AND count(DISTINCT e.pos) = count(*) AS ok,
       format('%s events, head %s, min %s, max %s', count(*), h.events, min(e.pos), max(e.pos)) AS detail
FROM aop_head h LEFT JOIN aop_events e ON true
GROUP BY h.events;

SELECT 'each session in sequence order' AS check, count(*) = 0 AS ok, format('%s out of order', count(*)) AS detail
FROM (SELECT pos, lag(pos) OVER (PARTITION BY sid ORDER BY seq) AS prev FROM aop_events) x
WHERE pos <= prev;
