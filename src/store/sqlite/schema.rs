//! Schema and migrations, versioned with `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] takes the database from version `i` to `i + 1` inside one
//! transaction. A database with a version above the last one was written by a newer aop and is
//! refused rather than misread.

use rusqlite::Connection;
use std::collections::{HashMap, HashSet};

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
    // v3. `GET /sessions?conversation=ID` reads one conversation's sessions in the list's order.
    "CREATE INDEX sessions_by_conversation ON sessions(conversation, last_seen_us DESC, id DESC) \
     WHERE conversation IS NOT NULL;",
    // v4. The notification outbox: one row per (alert, target), inserted with the alert, so a
    // delivery is as durable as its alert. `target` is the target's key (a hash; the URL holds
    // tokens and is never stored). `next_ms` is when the next attempt is due, `done_ms` when it
    // was delivered, summarised or given up: a row is waiting exactly while it has none. A
    // session's rows are found through its alerts (`alerts_by_session`), so no column or index
    // is spent on that. The partial index is all the worker's polls read, and it only ever holds
    // what is waiting.
    "
    CREATE TABLE deliveries (
        alert_id   INTEGER NOT NULL,
        target     TEXT NOT NULL,
        state      TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        next_ms    INTEGER NOT NULL,
        done_ms    INTEGER,
        error      TEXT,
        PRIMARY KEY (alert_id, target)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_due ON deliveries(next_ms) WHERE done_ms IS NULL;
    ",
];

/// The schema version this build writes.
pub(super) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// What a file holds, judged by reading it only.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// No schema at all: a new (or empty) database, for aop to make its own in.
    Empty,
    /// An aop database of this schema version (at most [`CURRENT`]), exactly as aop's
    /// migrations made it.
    Aop(i64),
    /// Written by a newer aop: refuse rather than misread.
    Newer(i64),
    /// Anything else, and why: another application's database, or an aop database with objects
    /// aop did not make (the first one named).
    NotOurs(String),
}

/// Whether this file is an aop database this build can use (or an empty one), before anything
/// is written to it.
///
/// "Ours" is exact: every row of `sqlite_schema` (type, name, table, SQL) must be one that aop's
/// migrations up to the file's `user_version` make, and all of those must be there. SQLite runs
/// a schema's SQL on its readers' behalf (a view in place of a table, a trigger on an insert), so
/// a file is trusted only once its schema is known to be ours.
pub(super) fn check(conn: &Connection) -> rusqlite::Result<Checked> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT {
        return Ok(Checked::Newer(version));
    }
    if version < 0 {
        return Ok(Checked::NotOurs(format!("its schema version ({version}) is not one aop writes")));
    }
    let expected = reference(version)?;
    let mut seen = HashSet::new();
    let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let found = Object::from_row(row)?;
        if version == 0 {
            return Ok(Checked::NotOurs(
                "it is another application's SQLite database (it has tables, but no aop schema version)".into(),
            ));
        }
        let aops = format!("aop's schema (version {version})");
        match expected.get(&found.name) {
            None => return Ok(Checked::NotOurs(format!("it has {}, which {aops} does not", found.named()))),
            Some((ours, _)) if ours.kind != found.kind => {
                return Ok(Checked::NotOurs(format!(
                    "its {} is a {} where {aops} has a {}",
                    shown(&found.name),
                    found.kind,
                    ours.kind
                )))
            }
            Some((ours, _)) if *ours != found => {
                return Ok(Checked::NotOurs(format!("its {} differs from {aops}", found.named())))
            }
            Some(_) => {
                seen.insert(found.name);
            }
        }
    }
    let mut missing: Vec<&Object> =
        expected.values().filter(|(o, required)| *required && !seen.contains(&o.name)).map(|(o, _)| o).collect();
    missing.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(lacking) = missing.first() {
        return Ok(Checked::NotOurs(format!("it lacks {} of aop's schema (version {version})", lacking.named())));
    }
    Ok(if version == 0 { Checked::Empty } else { Checked::Aop(version) })
}

/// One row of `sqlite_schema`, its SQL with canonical whitespace.
#[derive(Debug, PartialEq, Eq)]
struct Object {
    kind: String,
    name: String,
    table: String,
    sql: Option<String>,
}

impl Object {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Object> {
        // Text as SQLite hands it over, whatever a crafted row claims its type is.
        let text = |i: usize| -> rusqlite::Result<Option<String>> {
            Ok(match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => None,
                v => Some(String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned()),
            })
        };
        Ok(Object {
            kind: text(0)?.unwrap_or_default(),
            name: text(1)?.unwrap_or_default(),
            table: text(2)?.unwrap_or_default(),
            sql: text(3)?.as_deref().map(canonical),
        })
    }

    /// `view "sessions"`, `trigger "t" on "events"`: for messages.
    fn named(&self) -> String {
        if self.table == self.name {
            format!("{} {}", self.kind, shown(&self.name))
        } else {
            format!("{} {} on {}", self.kind, shown(&self.name), shown(&self.table))
        }
    }
}

/// A name from the file, quoted, escaped and cut short: it is shown on a terminal.
fn shown(name: &str) -> String {
    const LONGEST: usize = 64;
    if name.chars().count() <= LONGEST {
        format!("{name:?}")
    } else {
        let cut: String = name.chars().take(LONGEST).collect();
        format!("{cut:?}…")
    }
}

/// The objects aop's migrations up to `version` make, by name, each with whether it must be
/// there: the statistics tables `ANALYZE` adds (aop runs `PRAGMA optimize` when it stops) may be.
fn reference(version: i64) -> rusqlite::Result<HashMap<String, (Object, bool)>> {
    let conn = Connection::open_in_memory()?;
    for sql in MIGRATIONS.iter().take(version as usize) {
        conn.execute_batch(sql)?;
    }
    let objects = |conn: &Connection| -> rusqlite::Result<Vec<Object>> {
        conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema")?.query_map([], Object::from_row)?.collect()
    };
    let mut made: HashMap<String, (Object, bool)> =
        objects(&conn)?.into_iter().map(|o| (o.name.clone(), (o, true))).collect();
    if version > 0 {
        conn.execute_batch("ANALYZE")?;
        for o in objects(&conn)? {
            made.entry(o.name.clone()).or_insert((o, false));
        }
    }
    Ok(made)
}

/// `sql` with its whitespace made canonical: each run of it becomes one space, and none is kept
/// next to `(`, `)` or `,`. Two texts equal this way are the same statement when one of them is
/// aop's: aop's statements hold no quotes and no comments, so neither does a text equal to one
/// of them, and every whitespace dropped was between tokens, where its amount does not matter.
fn canonical(sql: &str) -> String {
    let punctuation = |c: char| matches!(c, '(' | ')' | ',');
    let mut out = String::with_capacity(sql.len());
    let mut gap = false;
    for c in sql.chars() {
        if c.is_whitespace() {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() && !punctuation(c) && !out.ends_with(punctuation) {
            out.push(' ');
        }
        gap = false;
        out.push(c);
    }
    out
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

/// A database in memory as aop's migrations up to `version` leave it.
#[cfg(test)]
pub(super) fn made_by_aop(version: i64) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    for sql in MIGRATIONS.iter().take(version as usize) {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", version).unwrap();
    conn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_version_aop_made_is_recognised_and_migrates() {
        assert_eq!(check(&made_by_aop(0)).unwrap(), Checked::Empty);
        for version in 1..=CURRENT {
            let mut conn = made_by_aop(version);
            assert_eq!(check(&conn).unwrap(), Checked::Aop(version));
            migrate(&mut conn).unwrap();
            assert_eq!(check(&conn).unwrap(), Checked::Aop(CURRENT), "from version {version}");
        }
    }

    #[test]
    fn statistics_and_whitespace_do_not_make_a_database_foreign() {
        let conn = made_by_aop(CURRENT);
        conn.execute_batch("ANALYZE").unwrap();
        assert_eq!(check(&conn).unwrap(), Checked::Aop(CURRENT));

        // The same statements laid out otherwise, as another build of aop might have written them.
        let conn = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            let relaid = sql.split_whitespace().collect::<Vec<_>>().join("\n  ").replace('(', " ( ");
            conn.execute_batch(&relaid).unwrap();
        }
        conn.pragma_update(None, "user_version", CURRENT).unwrap();
        assert_eq!(check(&conn).unwrap(), Checked::Aop(CURRENT));
    }

    #[test]
    fn an_object_aop_did_not_make_is_named() {
        let cases = [
            (
                "DROP TABLE sessions; CREATE VIEW sessions AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                 SELECT x + 1 FROM c) SELECT x AS sid FROM c",
                r#"its "sessions" is a view where aop's schema (version 4) has a table"#,
            ),
            (
                "CREATE TRIGGER spin AFTER INSERT ON events BEGIN SELECT 1; END",
                r#"it has trigger "spin" on "events", which aop's schema (version 4) does not"#,
            ),
            ("CREATE INDEX by_body ON events(body)", r#"index "by_body" on "events""#),
            ("CREATE TABLE mine (x)", r#"it has table "mine", which"#),
            ("ALTER TABLE alerts ADD COLUMN extra TEXT", r#"its table "alerts" differs from aop's schema (version 4)"#),
            (
                "DROP INDEX sessions_parent",
                r#"it lacks index "sessions_parent" on "sessions" of aop's schema (version 4)"#,
            ),
            ("CREATE TABLE x (a); PRAGMA user_version = 0", "another application's SQLite database"),
            ("PRAGMA user_version = -1", "its schema version (-1) is not one aop writes"),
            ("PRAGMA user_version = 1", r#"its table "sessions" differs from aop's schema (version 1)"#),
        ];
        for (change, says) in cases {
            let conn = made_by_aop(CURRENT);
            conn.execute_batch(change).unwrap();
            match check(&conn).unwrap() {
                Checked::NotOurs(why) => assert!(why.contains(says), "{change}: {why:?} does not say {says:?}"),
                other => panic!("{change}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_long_or_odd_name_is_shown_escaped_and_short() {
        assert_eq!(shown("a\u{1b}[2Jb"), r#""a\u{1b}[2Jb""#);
        assert_eq!(shown(&"x".repeat(100)), format!("{:?}…", "x".repeat(64)));
    }

    #[test]
    fn whitespace_is_canonical_and_tokens_stay_apart() {
        assert_eq!(canonical("CREATE TABLE t (\n  a  INT ,\n b TEXT\n)"), "CREATE TABLE t(a INT,b TEXT)");
        assert_ne!(canonical("t (a INT)"), canonical("t (aINT)"));
    }

    #[test]
    fn a_newer_version_is_told_apart() {
        let conn = made_by_aop(CURRENT);
        conn.pragma_update(None, "user_version", CURRENT + 1).unwrap();
        assert_eq!(check(&conn).unwrap(), Checked::Newer(CURRENT + 1));
    }
}
