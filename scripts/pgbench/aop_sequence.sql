-- A stub of the sequencer of the fleet-order design note (section 5.4), for
-- scripts/pgbench.sh: it numbers the groups that writers committed without a head and
-- without NOTIFY. The steps are the note's, done for real; only the benchmark's bookkeeping
-- (`aop_head.steps`, `aop_groups.step`) is extra.
--
-- Called as `SELECT aop_sequence(max)` in a transaction of its own at READ COMMITTED, with
-- search_path naming the post_commit schema. The function is VOLATILE, so each statement in
-- it takes a new snapshot:
-- 1. pg_advisory_xact_lock in a statement of its own: one sequencer at a time; it writes no
--    WAL and assigns no transaction id.
-- 2. Then, in later statements (new snapshots, which include the previous holder's commit):
--    read aop_head, take up to `max` unsequenced groups in ticket order from the partial
--    index, give them contiguous positions after the head (running sums of n_events and
--    n_notices), advance aop_head and send the one NOTIFY.
-- 3. When nothing is waiting, return 0 without writing: the transaction stays read-only and
--    its commit flushes nothing.
-- Returns the number of groups numbered.

\set ON_ERROR_STOP on

-- plan_cache_mode: PL/pgSQL caches its statements' plans, and after five calls may keep a
-- generic plan. Made while aop_groups was empty (a new database, statistics of an empty
-- table), the update's plan is a nested loop that walks every waiting group once per waiting
-- group: a step of 5,000 groups took 13 s under load (23 s in EXPLAIN ANALYZE). Planning each
-- step afresh costs far less than a step's commit.
CREATE OR REPLACE FUNCTION post_commit.aop_sequence(max_groups int) RETURNS int
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    head_events  bigint;
    head_notices bigint;
    head_steps   bigint;
    numbered     int;
    new_events   bigint;
    new_notices  bigint;
BEGIN
    -- Under REPEATABLE READ every statement would read the snapshot taken before the lock wait.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'aop_sequence needs READ COMMITTED, not %', current_setting('transaction_isolation');
    END IF;
    -- "aopseqnc" in ASCII.
    PERFORM pg_advisory_xact_lock(7020953985019375203);

    SELECT events, notices, steps INTO head_events, head_notices, head_steps FROM aop_head;

    WITH todo AS (
        SELECT grp, ticket, n_events, n_notices
        FROM aop_groups
        WHERE first_pos IS NULL
        ORDER BY ticket
        LIMIT max_groups
    ), placed AS (
        SELECT grp,
               head_events + sum(n_events) OVER w - n_events + 1 AS first_pos,
               head_events + sum(n_events) OVER w AS last_pos,
               head_notices + sum(n_notices) OVER w - n_notices + 1 AS first_notice,
               head_notices + sum(n_notices) OVER w AS last_notice
        FROM todo
        WINDOW w AS (ORDER BY ticket ROWS UNBOUNDED PRECEDING)
    ), done AS (
        UPDATE aop_groups g
        SET first_pos = p.first_pos, last_pos = p.last_pos, first_notice = p.first_notice,
            step = head_steps + 1
        FROM placed p
        WHERE g.grp = p.grp
        RETURNING p.last_pos, p.last_notice
    )
    SELECT count(*), max(last_pos), max(last_notice) INTO numbered, new_events, new_notices FROM done;

    IF numbered = 0 THEN
        RETURN 0;
    END IF;

    UPDATE aop_head SET events = new_events, notices = new_notices, steps = steps + 1;
    PERFORM pg_notify('aop_feed', new_events::text);
    RETURN numbered;
END
$$;
