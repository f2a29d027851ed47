//! Files handed to aop as databases that it must refuse, and a file's look from outside (a hash
//! of its bytes, its mode and modification time, the files SQLite keeps beside it): a refusal
//! must leave it exactly as it was.

use super::{event, Launch, Sandbox};
use serde_json::json;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A file aop must refuse, and what the refusal says.
pub(crate) struct Unfit {
    pub(crate) case: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) says: &'static str,
}

/// A text file, an executable script (mode 755), and two other applications' SQLite databases:
/// one with a rollback journal, one in WAL mode (closed, so nothing lies beside it).
pub(crate) fn not_aop_files(dir: &Path) -> Vec<Unfit> {
    let text = dir.join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(200)).unwrap();

    let script = dir.join("deploy.sh");
    std::fs::write(&script, "#!/bin/sh\necho deploying\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let places = dir.join("places.sqlite");
    let conn = rusqlite::Connection::open(&places).unwrap();
    conn.execute_batch(
        "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT); \
         INSERT INTO moz_places (url) VALUES ('https://example.com/');",
    )
    .unwrap();
    drop(conn);

    let notes = dir.join("notes.db");
    let conn = rusqlite::Connection::open(&notes).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT); \
         INSERT INTO note (body) VALUES ('remember the milk');",
    )
    .unwrap();
    drop(conn);

    vec![
        Unfit { case: "a text file", path: text, says: "is not an aop database" },
        Unfit { case: "an executable script", path: script, says: "is not an aop database" },
        Unfit { case: "another application's SQLite database", path: places, says: "another application's" },
        Unfit { case: "another application's database in WAL mode", path: notes, says: "another application's" },
    ]
}

/// Makes an aop database's `sessions` a view that never ends: any read of the sessions list
/// runs forever (on the CPU only, so a test that hangs on it does not eat the machine's memory).
pub(crate) const ENDLESS_VIEW: &str = "
    DROP TABLE sessions;
    CREATE VIEW sessions AS
        WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n)
        SELECT x AS sid, 'crafted' AS id, 'agent' AS agent_id, NULL AS parent_id, NULL AS goal,
               'running' AS status, x AS last_seen_us, 1 AS event_count, 0 AS alert_count,
               0 AS pinned, 0 AS heard_ms, 0 AS stalled, '{}' AS state, NULL AS detect,
               0 AS detect_upto, NULL AS conversation
        FROM n WHERE x < 0;
";

/// Adds a trigger to an aop database that never ends once an event is stored.
pub(crate) const ENDLESS_TRIGGER: &str = "
    CREATE TRIGGER spin AFTER INSERT ON events BEGIN
        SELECT count(*) FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n)
                              SELECT x FROM n WHERE x < 0);
    END;
";

/// Takes an aop database back to schema version 1, as an aop of that version left it (it had no
/// `conversation` column, nor its index, nor the notification outbox).
pub(crate) const SCHEMA_VERSION_1: &str = "DROP TABLE deliveries; DROP INDEX sessions_by_conversation; \
     ALTER TABLE sessions DROP COLUMN conversation; PRAGMA user_version = 1;";

/// An aop database named `name` in the sandbox, made by the real binary (one session of one
/// event), then changed by `sql` (nothing if empty).
pub(crate) async fn aop_database(sandbox: &Arc<Sandbox>, name: &str, sql: &str) -> PathBuf {
    let path = sandbox.path().join(name);
    let mut server = Launch::in_sandbox(Arc::clone(sandbox)).db(&path).start().await;
    server.ingest(&[event("made", 1, "session.started", json!({"goal": "made by aop"}))]).await;
    server.sigterm().await;
    if !sql.is_empty() {
        rusqlite::Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    }
    path
}

/// What can be seen of a file without opening it as a database.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Look {
    /// Its length and a hash of its bytes (`None` for what cannot be read, e.g. a folder).
    content: Option<(usize, u64)>,
    mode: String,
    modified: SystemTime,
    /// The files SQLite keeps beside a database (`-wal`, `-shm`, `-journal`) that exist.
    beside: Vec<String>,
}

impl Look {
    pub(crate) fn of(path: &Path) -> Look {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let content = std::fs::read(path).ok().map(|bytes| {
            let mut hash = DefaultHasher::new();
            hash.write(&bytes);
            (bytes.len(), hash.finish())
        });
        let beside = ["-wal", "-shm", "-journal"]
            .iter()
            .map(|suffix| format!("{}{suffix}", path.display()))
            .filter(|side| Path::new(side).exists())
            .collect();
        Look {
            content,
            mode: format!("{:o}", meta.permissions().mode() & 0o7777),
            modified: meta.modified().expect("a modification time"),
            beside,
        }
    }
}
