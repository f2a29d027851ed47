//! A database written by an older aop is upgraded in place: positions already handed out never
//! change, and sessions go on where they were, detectors included.

use crate::fleet::{db_name, stored};
use crate::support::pg::Pg;
use crate::support::{event, eventually, Launch};
use serde_json::{json, Value};

/// Turns a schema-v4 database back into the v3 shape (positions on the event and notice rows,
/// a detector's `detect_upto` as a position), as aop up to v3 wrote it: the test's way to get a
/// v3 database with real session and detector states in it.
const DOWN_TO_V3: &str = "
    DROP FUNCTION aop_sequence(int);
    ALTER TABLE aop_events ADD COLUMN pos bigint;
    UPDATE aop_events e SET pos = g.first_pos + e.k FROM aop_groups g WHERE g.grp = e.grp;
    UPDATE aop_sessions s SET detect_upto =
        coalesce((SELECT e.pos FROM aop_events e WHERE e.sid = s.sid AND e.n = s.detect_upto), 0);
    ALTER TABLE aop_events DROP CONSTRAINT aop_events_pkey, DROP COLUMN grp, DROP COLUMN k, DROP COLUMN n,
        ALTER COLUMN pos SET NOT NULL, ADD PRIMARY KEY (pos);
    ALTER TABLE aop_notices ADD COLUMN pos bigint;
    UPDATE aop_notices x SET pos = g.first_notice + x.k FROM aop_groups g WHERE g.grp = x.grp;
    ALTER TABLE aop_notices DROP CONSTRAINT aop_notices_pkey, DROP COLUMN grp, DROP COLUMN k,
        ALTER COLUMN pos SET NOT NULL, ADD PRIMARY KEY (pos);
    DROP INDEX aop_notices_created;
    ALTER TABLE aop_sessions DROP COLUMN last_n;
    DROP TABLE aop_groups;
    DROP SEQUENCE aop_ticket;
    DROP SEQUENCE aop_group_block;
    UPDATE aop_schema SET version = 3;
";

/// `n` identical failing tool calls, from sequence `from`.
fn failing_calls(id: &str, from: i64, n: i64) -> Vec<Value> {
    (0..n)
        .flat_map(|i| {
            let seq = from + 2 * i;
            [
                event(id, seq, "operation.tool_start", json!({"tool_name": "http_get", "input": {"url": "https://x"}})),
                event(
                    id,
                    seq + 1,
                    "operation.tool_end",
                    json!({"tool_name": "http_get", "status": "error", "error_message": "timeout"}),
                ),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v3_database_migrates_in_place_keeping_every_position_and_detector() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let node = Launch::new().db(&url).start().await;
    // Two sessions interleaved, one deleted (a hole in the positions), and enough events in
    // "long" that its detector state was saved at a checkpoint: after the upgrade it must
    // be caught up from the right event, not from the start or past the end.
    for i in 1..=40 {
        node.import(&[event("long", i, "cognition.thought", json!({"content": format!("step {i}")}))]).await;
        if i % 10 == 0 {
            node.import(&[event("other", i, "cognition.thought", json!({"content": i}))]).await;
        }
    }
    node.import(&[event("gone", 1, "cognition.thought", json!({"content": "deleted"}))]).await;
    node.import(&failing_calls("long", 41, 2)).await;
    assert_eq!(node.delete("/sessions/gone").await.0, 200);
    let total = 40 + 4 + 4;
    eventually("every event numbered", || async {
        (pg.psql(&db, "SELECT count(*) FROM aop_groups WHERE first_pos IS NULL") == "0").then_some(())
    })
    .await;
    let saved = pg.psql(&db, "SELECT detect_upto FROM aop_sessions WHERE id = 'long'");
    assert_ne!(saved, "0", "the detector was saved at a checkpoint");
    let before = stored(pg, &db);
    assert_eq!(before.len(), total);
    let head: i64 = pg.psql(&db, "SELECT events FROM aop_head").parse().unwrap();
    assert_eq!(head, total as i64 + 1, "the deleted event's position is a hole");
    drop(node);

    pg.psql(&db, DOWN_TO_V3);
    assert_eq!(pg.psql(&db, "SELECT count(*) || ' ' || max(pos) FROM aop_events"), format!("{total} {head}"));

    let node = Launch::new().db(&url).start().await;
    assert_eq!(pg.psql(&db, "SELECT max(version) FROM aop_schema"), "4");
    assert_eq!(stored(pg, &db), before, "a position changed in the upgrade");
    // The stream from the start, on the upgraded database: the same positions.
    let mut stream = node.stream("/stream?since=0").await;
    let frames = stream.events(total).await;
    let streamed: Vec<((String, i64), i64)> = frames.iter().map(|f| (f.key(), f.id())).collect();
    let mut want: Vec<((String, i64), i64)> = before.iter().map(|(k, p)| (k.clone(), *p)).collect();
    want.sort_by_key(|(_, p)| *p);
    assert_eq!(streamed, want);

    // Two more identical failing calls make four: one loop alert, which needs the two made
    // before the upgrade to be replayed into the detector from its saved state.
    node.import(&failing_calls("long", 45, 2)).await;
    let after = stream.events(4).await;
    let ids: Vec<i64> = after.iter().map(|f| f.id()).collect();
    assert_eq!(ids, (head + 1..=head + 4).collect::<Vec<_>>(), "new positions follow the old head");
    let detail = node.get_ok("/sessions/long").await;
    let loops = detail["alerts"].as_array().unwrap().iter().filter(|a| a["type"] == "loop").count();
    assert_eq!(loops, 1, "{detail}");
}
