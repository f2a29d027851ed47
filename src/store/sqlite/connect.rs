//! How every connection to a SQLite file is opened, and the deadline a connection may be given.
//!
//! A database file is input like any other: it may come from a backup, a colleague or a probe.
//! Its schema (views, triggers, defaults) is SQL that SQLite runs on our behalf, so no connection
//! trusts it to call functions with side effects (`trusted_schema` off), whatever the library's
//! compiled default. A connection that reads a file not yet known to be ours is also read-only,
//! and, when it may, reads the database file alone so that nothing appears beside it.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::{Duration, Instant};

/// How a connection may touch its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// The writer's, the checkpointer's, and the readers' of a store that writes.
    ReadWrite,
    /// Reading through the write-ahead log, which SQLite opens with its shared-memory file: for
    /// a file whose log holds changes not yet in the database file.
    ReadOnly,
    /// Reading the database file alone: no locks, no log, nothing created beside it. Right only
    /// while nothing writes the file (its lock is held) and no log holds changes.
    Immutable,
}

impl Access {
    /// How to read `path` without changing anything: the log is read only when it holds
    /// something (a collector that stopped without folding it back, by a crash or a kill).
    pub(super) fn for_reading(path: &Path) -> Access {
        if std::fs::metadata(beside(path, "-wal")).is_ok_and(|m| m.len() > 0) {
            Access::ReadOnly
        } else {
            Access::Immutable
        }
    }
}

/// `path` with `suffix` appended: the files SQLite keeps beside a database.
pub(super) fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut file = path.as_os_str().to_owned();
    file.push(suffix);
    file.into()
}

/// Opens a connection to `path`. Nothing is created: a missing file is an error.
pub(super) fn open(path: &Path, access: Access) -> rusqlite::Result<Connection> {
    let conn = match access {
        Access::ReadWrite => {
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?
        }
        Access::ReadOnly => {
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?
        }
        Access::Immutable => Connection::open_with_flags(
            format!("{}?immutable=1", file_uri(path)),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
    };
    conn.pragma_update(None, "trusted_schema", false)?;
    Ok(conn)
}

/// How many virtual-machine steps SQLite runs between two looks at the clock: tens of
/// microseconds, so an interrupted statement stops promptly and the clock costs nothing.
const STEPS_BETWEEN_CHECKS: i32 = 10_000;

/// From now, any statement `conn` runs is interrupted once `limit` has passed (it fails with
/// `SQLITE_INTERRUPT`); a later call sets a new deadline.
pub(super) fn deadline(conn: &mut Connection, limit: Duration) -> rusqlite::Result<()> {
    let until = Instant::now() + limit;
    conn.progress_handler(STEPS_BETWEEN_CHECKS, Some(move || Instant::now() >= until))
}

/// Whether `e` is the interruption a [`deadline`] causes.
pub(super) fn interrupted(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

/// A `file:` URI naming `path`: every byte but unreserved ones and `/` percent-encoded, so a
/// `?`, `#` or `%` in a file name stays part of the name.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_uri_keeps_every_name_intact() {
        assert_eq!(file_uri(Path::new("/tmp/a b/x?y#z%.db")), "file:/tmp/a%20b/x%3Fy%23z%25.db");
        assert_eq!(file_uri(Path::new("rel/é.db")), "file:rel/%C3%A9.db");
    }

    #[test]
    fn every_connection_distrusts_the_schema_and_an_odd_name_opens_the_right_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd ?#% name.db");
        let conn = open(&path, Access::ReadWrite);
        assert!(conn.is_err(), "nothing is created");
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x); PRAGMA user_version = 7;").unwrap();
        for access in [Access::ReadWrite, Access::ReadOnly, Access::Immutable] {
            let conn = open(&path, access).unwrap();
            let trusted: bool = conn.query_row("PRAGMA trusted_schema", [], |r| r.get(0)).unwrap();
            assert!(!trusted, "{access:?}");
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version, 7, "{access:?}");
        }
    }

    #[test]
    fn a_statement_past_its_deadline_is_interrupted() {
        let mut conn = Connection::open_in_memory().unwrap();
        deadline(&mut conn, Duration::from_millis(50)).unwrap();
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let e = conn.query_row(endless, [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(interrupted(&e), "{e}");
    }
}
