-- v3. The notification outbox, as SQLite's (`deliveries`, v4): one row per (alert, target),
-- inserted with the alert. In a fleet a row is claimed by pushing `next_ms` past a lease
-- (under `FOR UPDATE SKIP LOCKED`), so one instance delivers it, and another one takes it
-- over if the claimant dies before it settles it.
CREATE TABLE aop_deliveries (
    alert_id   bigint NOT NULL,
    target     text NOT NULL,
    state      text NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    created_ms bigint NOT NULL,
    next_ms    bigint NOT NULL,
    done_ms    bigint,
    error      text,
    PRIMARY KEY (alert_id, target)
);
CREATE INDEX aop_deliveries_due ON aop_deliveries (next_ms) WHERE done_ms IS NULL;
