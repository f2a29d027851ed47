-- The sequencer loop beside (ii): one client calls aop_sequence (aop_sequence.sql) again and
-- again, each call a transaction of its own (autocommit, READ COMMITTED). In aop the task is
-- woken by its writer's commits; here, a call that found nothing to number waits :idle_us
-- microseconds before the next, so an idle sequencer does not spin on a core the writers need.
-- Variables from the runner (-D): max (groups per step at most), idle_us.

SELECT aop_sequence(:max::int) AS numbered \gset
\if :numbered = 0
\sleep :idle_us us
\endif
