-- Checks after a run of (ii), once the sequencer has caught up; one row per check:
-- name | ok | detail.

\set ON_ERROR_STOP on

SELECT 'every committed group numbered' AS check, count(*) FILTER (WHERE first_pos IS NULL) = 0 AS ok,
       format('%s groups, %s unnumbered', count(*), count(*) FILTER (WHERE first_pos IS NULL)) AS detail
FROM aop_groups;

SELECT 'positions 1..head, no gap, no duplicate' AS check,
       bad = 0 AND dups = 0 AND coalesce(lo, 1) = 1 AND coalesce(hi, 0) = head AND total = head AS ok,
       format('head %s, %s events in groups, positions %s..%s, %s breaks, %s duplicates',
              head, total, lo, hi, bad, dups) AS detail
FROM (
    SELECT (SELECT events FROM aop_head) AS head,
           coalesce(sum(n_events), 0) AS total,
           min(first_pos) AS lo, max(last_pos) AS hi,
           count(*) FILTER (WHERE first_pos <> coalesce(prev_last, 0) + 1
                                  OR last_pos - first_pos + 1 <> n_events) AS bad,
           count(*) - count(DISTINCT first_pos) AS dups
    FROM (SELECT *, lag(last_pos) OVER (ORDER BY first_pos) AS prev_last
          FROM aop_groups WHERE first_pos IS NOT NULL) g
) x;

SELECT 'events stored = events numbered' AS check,
       (SELECT count(*) FROM aop_events) = (SELECT coalesce(sum(n_events), 0) FROM aop_groups) AS ok,
       format('%s rows in aop_events', (SELECT count(*) FROM aop_events)) AS detail;

SELECT 'ticket order within each step; steps in position order' AS check,
       inside = 0 AND backwards = 0 AND steps = (SELECT h.steps FROM aop_head h) AS ok,
       format('%s steps (head says %s), %s out of ticket order inside a step, %s steps out of order; '
              '%s step boundaries where a later step numbered a lower ticket (allowed: groups that '
              'shared no lock)', steps, (SELECT h.steps FROM aop_head h), inside, backwards, across) AS detail
FROM (
    SELECT count(DISTINCT step) AS steps,
           count(*) FILTER (WHERE step = prev_step AND ticket <= prev_ticket) AS inside,
           count(*) FILTER (WHERE step < prev_step) AS backwards,
           count(*) FILTER (WHERE step > prev_step AND ticket < prev_ticket) AS across
    FROM (SELECT step, ticket, lag(step) OVER w AS prev_step, lag(ticket) OVER w AS prev_ticket
          FROM aop_groups WHERE first_pos IS NOT NULL WINDOW w AS (ORDER BY first_pos)) g
) x;

SELECT 'each session in sequence, ticket and position order' AS check, count(*) = 0 AS ok,
       format('%s out of order', count(*)) AS detail
FROM (SELECT g.first_pos + e.k AS pos, g.ticket,
             lag(g.first_pos + e.k) OVER w AS prev_pos, lag(g.ticket) OVER w AS prev_ticket
      FROM aop_events e JOIN aop_groups g USING (grp)
      WINDOW w AS (PARTITION BY e.sid ORDER BY e.seq)) x
WHERE pos <= prev_pos OR ticket < prev_ticket;
