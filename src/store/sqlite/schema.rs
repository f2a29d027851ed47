//! Schema and migrations, versioned with `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] takes the database from version `i` to `i + 1` inside one
//! transaction. A database with a version above the last one was written by a newer aop and is
//! refused rather than misread.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // v1. Events reference sessions by a small integer (`sid`) so the per-event overhead stays a
    // few bytes. `heard_ms` is the collector's clock at the latest arrival (stalls use it, not
    // event time); `stalled` marks a silence already alerted. `detect` is the detectors' state as
    // of event `detect_upto`; later events are replayed into it on load, so it need not be
    // rewritten with every event. Indexes are few on purpose: every index a session update
    // touches is one more page written per event. `sessions_recent` carries status and agent so
    // that filtered lists are answered from the index alone.
    // AUTOINCREMENT keeps event ids from ever being reused after deletions: they are the
    // stream's resume cursor.
    "
    CREATE TABLE sessions (
        sid          INTEGER PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,
        agent_id     TEXT NOT NULL,
        parent_id    TEXT,
        goal         TEXT,
        status       TEXT NOT NULL,
        last_seen_us INTEGER NOT NULL,
        event_count  INTEGER NOT NULL,
        alert_count  INTEGER NOT NULL DEFAULT 0,
        pinned       INTEGER NOT NULL DEFAULT 0,
        heard_ms     INTEGER NOT NULL DEFAULT 0,
        stalled      INTEGER NOT NULL DEFAULT 0,
        state        TEXT NOT NULL,
        detect       TEXT,
        detect_upto  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_recent ON sessions(last_seen_us DESC, id DESC, status, agent_id);
    CREATE INDEX sessions_parent ON sessions(parent_id) WHERE parent_id IS NOT NULL;
    CREATE TABLE events (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        sid  INTEGER NOT NULL,
        seq  INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_session ON events(sid, seq);
    CREATE TABLE alerts (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        sid        INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        type       TEXT NOT NULL,
        event_id   INTEGER,
        body       TEXT NOT NULL
    );
    CREATE INDEX alerts_by_session ON alerts(sid, id);
    ",
    // v2. The conversation a session belongs to, for the sessions list's `q`.
    "ALTER TABLE sessions ADD COLUMN conversation TEXT;",
];

/// The schema version this build writes.
pub(super) const CURRENT: i64 = MIGRATIONS.len() as i64;

pub(super) enum Checked {
    Ready,
    /// Written by a newer aop: refuse rather than misread.
    Newer(i64),
    /// Another application's SQLite database: refuse rather than add tables to it.
    Foreign,
}

/// Whether this file is an aop database this build can use (or an empty one), before anything
/// is written to it.
pub(super) fn check(conn: &Connection) -> rusqlite::Result<Checked> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > CURRENT {
        return Ok(Checked::Newer(found));
    }
    if found == 0 {
        let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if objects > 0 {
            return Ok(Checked::Foreign);
        }
    }
    Ok(Checked::Ready)
}

/// Brings a checked database up to [`CURRENT`].
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
