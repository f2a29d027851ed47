//! The fleet's one stream order when positions are given after commit: a group committed by an
//! instance that dies before it is numbered, a sequencer killed while it waits or while it numbers,
//! a long transaction elsewhere in the database, and one session written through every instance at
//! once — each group numbered once, gap-free, and every session's events in their commit order.

use crate::fleet::{client, collect, db_name, fleet, post, stored};
use crate::support::pg::Pg;
use crate::support::sse::Read;
use crate::support::{event, eventually, TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The transaction advisory lock every sequencing step takes first ("aopseqnc" as a number).
const SEQUENCER_LOCK: i64 = 7_020_953_985_019_375_203;

/// A connection of the test's own beside the instances' ones, driven on its own task.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (conn_client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    conn_client
}

/// Groups committed but not numbered yet, as the database holds them.
fn unsequenced(pg: &Pg, db: &str) -> i64 {
    pg.psql(db, "SELECT count(*) FROM aop_groups WHERE first_pos IS NULL").parse().expect("a count")
}

/// `store.unsequenced.groups` of an instance's `/health`.
async fn health_unsequenced(node: &TestServer) -> i64 {
    let health = node.health().await;
    health["store"]["unsequenced"]["groups"].as_i64().unwrap_or_else(|| panic!("no unsequenced groups: {health}"))
}

/// The sequencers' backends on `db` waiting for a lock, with what they wait for (`advisory` for
/// the sequencing lock, `transactionid` or `tuple` for a row).
fn waiting_sequencers(pg: &Pg, db: &str) -> Vec<String> {
    let sql = format!(
        "SELECT wait_event FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'aop-sequencer' \
         AND wait_event_type = 'Lock'"
    );
    pg.psql("postgres", &sql).lines().map(str::to_owned).collect()
}

/// The sequencers' backends connected to `db`.
fn sequencers(pg: &Pg, db: &str) -> usize {
    let sql =
        format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'aop-sequencer'");
    pg.psql("postgres", &sql).parse().expect("a count")
}

/// Terminates every sequencer backend on `db` that waits for a lock, waiting until each is gone;
/// how many there were.
fn terminate_waiting_sequencers(pg: &Pg, db: &str) -> usize {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity \
         WHERE datname = '{db}' AND application_name = 'aop-sequencer' AND wait_event_type = 'Lock'"
    );
    pg.psql("postgres", &sql).parse().expect("a count")
}

/// Every stored event as `(position, session, per-session ordinal n, sequence)`, by position.
fn ordinals(pg: &Pg, db: &str) -> Vec<(i64, String, i64, i64)> {
    let out = pg.psql(
        db,
        "SELECT (g.first_pos + e.k) || '|' || e.n || '|' || e.seq || '|' || s.id \
         FROM aop_events e JOIN aop_groups g USING (grp) JOIN aop_sessions s USING (sid) ORDER BY g.first_pos + e.k",
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.splitn(4, '|');
            let mut num = || parts.next().unwrap().parse::<i64>().unwrap_or_else(|_| panic!("a number in {l:?}"));
            let (pos, n, seq) = (num(), num(), num());
            (pos, parts.next().unwrap().to_owned(), n, seq)
        })
        .collect()
}

/// Positions sorted, which must be exactly `1..=n`.
fn assert_gap_free(positions: impl IntoIterator<Item = i64>, what: &str) {
    let mut sorted: Vec<i64> = positions.into_iter().collect();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=sorted.len() as i64).collect::<Vec<_>>(), "{what}: positions with holes or repeats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_between_commit_and_sequencing_has_its_groups_numbered_by_another() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    // A backend whose client died notices within 100 ms instead of when it next speaks: A's
    // sequencer, waiting for the lock when A dies, goes with A and cannot be the one that numbers.
    pg.psql(&db, &format!("ALTER DATABASE {db} SET client_connection_check_interval = '100ms'"));
    let mut nodes = fleet(&url, 2, &[]).await;
    // No sequencing step can run while the test holds the lock.
    let holder = connect(&url).await;
    holder.batch_execute(&format!("SELECT pg_advisory_lock({SEQUENCER_LOCK})")).await.expect("the lock");

    // Five sessions written at once through A, each as five single events and a batch of five.
    let sessions: Vec<String> = (0..5).map(|i| format!("orphan-{i}")).collect();
    let mut writers = Vec::new();
    for id in sessions.clone() {
        let base = nodes[0].base();
        writers.push(tokio::spawn(async move {
            let c = client();
            for seq in 1..=5 {
                let body = event(&id, seq, "cognition.thought", json!({"content": seq})).to_string();
                let (status, answer) = post(&c, &base, body, false).await.expect("reachable");
                assert_eq!(status, StatusCode::OK, "{answer}");
            }
            let batch: String = (6..=10)
                .map(|seq| format!("{}\n", event(&id, seq, "cognition.thought", json!({"content": seq}))))
                .collect();
            let (status, answer) = post(&c, &base, batch, true).await.expect("reachable");
            assert_eq!((status, answer["accepted"].as_i64()), (StatusCode::OK, Some(5)), "{answer}");
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Acknowledged means committed, not numbered: every event waits for its position.
    let waiting =
        pg.psql(&db, "SELECT count(*) FROM aop_events e JOIN aop_groups g USING (grp) WHERE g.first_pos IS NULL");
    assert_eq!(waiting, "50", "acknowledged events already numbered while the sequencing lock was held");
    let groups = unsequenced(pg, &db);
    assert!(groups > 0, "no group waits to be numbered");
    // The backlog is visible on the other instance, with its age.
    eventually("B's /health to show the unsequenced groups", || async {
        (health_unsequenced(&nodes[1]).await == groups).then_some(())
    })
    .await;
    let health = nodes[1].health().await;
    assert!(health["store"]["unsequenced"]["oldest_ms"].as_i64().is_some_and(|ms| ms >= 0), "{health}");
    // Both instances' sequencers are stuck behind the lock.
    eventually("both sequencers to wait for the lock", || async {
        (waiting_sequencers(pg, &db).iter().filter(|w| *w == "advisory").count() == 2).then_some(())
    })
    .await;

    nodes[0].sigkill().await;
    // A's sequencer went with it; B's is the only one left.
    eventually("A's sequencer backend to go", || async { (sequencers(pg, &db) == 1).then_some(()) }).await;
    assert_eq!(unsequenced(pg, &db), groups, "groups were numbered while the lock was held");
    let mut s = nodes[1].stream("/stream?since=0").await;
    // Nothing is delivered before it is numbered (the 1 s poll included).
    assert!(
        !matches!(s.read(Duration::from_millis(1500)).await, Read::Frame(f) if f.is_event()),
        "an event delivered before it had a position"
    );

    holder.batch_execute(&format!("SELECT pg_advisory_unlock({SEQUENCER_LOCK})")).await.expect("the unlock");
    let mut seen = BTreeMap::new();
    collect(&mut s, &mut seen, 50).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>(), "positions of B's stream");
    let posted: BTreeSet<(String, i64)> =
        sessions.iter().flat_map(|id| (1..=10).map(|seq| (id.clone(), seq))).collect();
    assert_eq!(seen.values().cloned().collect::<BTreeSet<_>>(), posted, "what B's stream delivered");
    // The stream's positions are the stored ones.
    let by_pos: BTreeMap<i64, (String, i64)> = stored(pg, &db).into_iter().map(|(k, p)| (p, k)).collect();
    assert_eq!(seen, by_pos, "B's stream and the database disagree");
    // Each session was written in order by one client: its events are numbered in that order.
    for id in &sessions {
        let seqs: Vec<i64> = seen.values().filter(|(sid, _)| sid == id).map(|(_, seq)| *seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{id}'s events out of their commit order");
    }
    // And nothing more: no position was given twice.
    assert!(!matches!(s.read(Duration::from_millis(500)).await, Read::Frame(f) if f.is_event()), "an extra event");
    assert_eq!(unsequenced(pg, &db), 0);
    eventually("B's /health to show no backlog", || async { (health_unsequenced(&nodes[1]).await == 0).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sequencers_connection_killed_mid_step_numbers_nothing_twice() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let nodes = fleet(&url, 2, &[]).await;
    let mut streams = Vec::new();
    for n in &nodes {
        streams.push(n.stream("/stream?since=0").await);
    }
    let holder = connect(&url).await;
    holder.batch_execute(&format!("SELECT pg_advisory_lock({SEQUENCER_LOCK})")).await.expect("the lock");

    // Four writers, two per instance, single events and batches of five, each its own sessions;
    // every request must be acknowledged: writers never wait for the sequencer.
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(TestServer::base).collect());
    let acked: Arc<Mutex<BTreeSet<(String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (bases, acked, stop) = (Arc::clone(&bases), Arc::clone(&acked), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let c = client();
            let batch = w >= 2;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<Value> = (0..if batch { 5 } else { 1 })
                    .map(|_| {
                        seq += 1;
                        event(&format!("step-{w}-{}", seq % 3), seq, "cognition.thought", json!({"content": seq}))
                    })
                    .collect();
                let body =
                    if batch { events.iter().map(|e| format!("{e}\n")).collect() } else { events[0].to_string() };
                let (status, answer) = post(&c, &bases[w % 2], body, batch).await.expect("reachable");
                assert_eq!(status, StatusCode::OK, "{answer}");
                acked.lock().unwrap().extend(
                    events
                        .iter()
                        .map(|e| (e["session_id"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap())),
                );
            }
        }));
    }

    // Killed while waiting for the lock: the step never began.
    eventually("both sequencers to wait for the lock", || async {
        (waiting_sequencers(pg, &db).iter().filter(|w| *w == "advisory").count() == 2).then_some(())
    })
    .await;
    assert!(!acked.lock().unwrap().is_empty(), "ingest stopped while the sequencing lock was held");
    assert!(terminate_waiting_sequencers(pg, &db) >= 2, "the sequencers waiting for the lock");

    // Killed inside the step: holding the sequencing lock, its numbers written but not committed,
    // stuck on `aop_head`, which the test holds.
    let head = connect(&url).await;
    head.batch_execute("BEGIN; SELECT * FROM aop_head FOR UPDATE").await.expect("the head's row");
    holder.batch_execute(&format!("SELECT pg_advisory_unlock({SEQUENCER_LOCK})")).await.expect("the unlock");
    eventually("a sequencer to block on the head inside its step", || async {
        waiting_sequencers(pg, &db).iter().any(|w| w != "advisory").then_some(())
    })
    .await;
    let before = unsequenced(pg, &db);
    assert!(before > 0, "nothing waits to be numbered");
    assert!(terminate_waiting_sequencers(pg, &db) >= 1);
    // The killed step's numbers rolled back with it.
    assert!(unsequenced(pg, &db) >= before, "a killed step left numbers behind");
    head.batch_execute("ROLLBACK").await.expect("the head's row released");

    // The instances go on: they reconnect their sequencers, and ingest is still acknowledged.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    eventually("both sequencers to reconnect", || async { (sequencers(pg, &db) == 2).then_some(()) }).await;
    eventually("every group to be numbered", || async { (unsequenced(pg, &db) == 0).then_some(()) }).await;

    let acked = acked.lock().unwrap().clone();
    let in_db = stored(pg, &db);
    assert!(acked.len() > 100, "too little load to mean anything: {}", acked.len());
    assert_eq!(in_db.keys().cloned().collect::<BTreeSet<_>>(), acked, "stored events differ from acknowledged ones");
    assert_gap_free(in_db.values().copied(), "the database");
    let total = in_db.len() as i64;
    assert_eq!(pg.psql(&db, "SELECT events FROM aop_head"), total.to_string(), "the head");
    let by_pos: BTreeMap<i64, (String, i64)> = in_db.into_iter().map(|(k, p)| (p, k)).collect();
    for (i, s) in streams.iter_mut().enumerate() {
        let mut seen = BTreeMap::new();
        collect(s, &mut seen, by_pos.len()).await;
        assert_eq!(seen, by_pos, "instance {i}'s subscriber");
    }
    // A later event through either instance reaches both subscribers, at the next positions.
    for (i, n) in nodes.iter().enumerate() {
        n.ingest_one(&event("after", i as i64 + 1, "cognition.thought", json!({}))).await;
    }
    for (i, s) in streams.iter_mut().enumerate() {
        let ids: Vec<i64> = s.events(2).await.iter().map(|f| f.id()).collect();
        assert_eq!(ids, vec![total + 1, total + 2], "instance {i}'s subscriber after the kills");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_transaction_elsewhere_does_not_stall_the_stream() {
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let nodes = fleet(&url, 2, &[]).await;
    // Older than every group to come, with an id and a snapshot of its own, and left open: what a
    // migration or a report running beside the collector looks like.
    let other = connect(&url).await;
    other
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; CREATE TABLE other (x int); INSERT INTO other VALUES (1)",
        )
        .await
        .expect("the other transaction");
    let xid: i64 = other.query_one("SELECT txid_current()::bigint", &[]).await.expect("its id").get(0);

    let mut s = nodes[1].stream("/stream?since=0").await;
    let events: Vec<Value> = (1..=30).map(|i| event("busy", i, "cognition.thought", json!({"content": i}))).collect();
    nodes[0].ingest(&events[..10]).await;
    nodes[0].import(&events[10..]).await;
    let got =
        tokio::time::timeout(PATIENCE, s.events(30)).await.expect("the stream stalled behind the open transaction");
    assert_eq!(got.iter().map(|f| f.id()).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
    assert_eq!(got.iter().map(|f| f.key().1).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
    // The transaction was open all along.
    let still: i64 = other.query_one("SELECT txid_current()::bigint", &[]).await.expect("its id").get(0);
    assert_eq!(still, xid, "the other transaction ended early");
    assert_eq!(unsequenced(pg, &db), 0);
    eventually("/health to show no backlog", || async { (health_unsequenced(&nodes[1]).await == 0).then_some(()) })
        .await;
    other.batch_execute("ROLLBACK").await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_of_one_session_are_numbered_in_their_commit_order() {
    const ROUNDS: usize = 80;
    let pg = Pg::shared();
    let url = pg.create_db();
    let db = db_name(&url);
    let nodes = fleet(&url, 3, &[]).await;
    let bases: Vec<String> = nodes.iter().map(TestServer::base).collect();
    let (mut hot, mut cold) = (0, [0i64; 4]);
    let mut posted = 0;
    for round in 0..ROUNDS {
        // Per instance, at the same moment: two single events at the hot session, and a batch of
        // two at it around one at a cold session (which another instance may be writing too).
        let mut bodies: Vec<(usize, String, bool)> = Vec::new();
        for (i, _) in bases.iter().enumerate() {
            for _ in 0..2 {
                hot += 1;
                bodies.push((i, event("hot", hot, "cognition.thought", json!({"content": hot})).to_string(), false));
            }
            let c = (round * 3 + i) % 4;
            cold[c] += 1;
            let batch = [
                event("hot", hot + 1, "cognition.thought", json!({"content": hot + 1})),
                event(&format!("cold-{c}"), cold[c], "cognition.thought", json!({"content": cold[c]})),
                event("hot", hot + 2, "cognition.thought", json!({"content": hot + 2})),
            ];
            hot += 2;
            bodies.push((i, batch.iter().map(|e| format!("{e}\n")).collect(), true));
        }
        posted += bodies.iter().map(|(_, _, ndjson)| if *ndjson { 3 } else { 1 }).sum::<usize>();
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|(i, body, ndjson)| {
                let base = bases[i].clone();
                tokio::spawn(async move { post(&client(), &base, body, ndjson).await })
            })
            .collect();
        for t in tasks {
            let (status, answer) = t.await.expect("poster").expect("reachable");
            assert_eq!(status, StatusCode::OK, "round {round}: {answer}");
        }
    }
    eventually("every group to be numbered", || async { (unsequenced(pg, &db) == 0).then_some(()) }).await;

    let rows = ordinals(pg, &db);
    assert_eq!(rows.len(), posted, "stored events");
    assert_gap_free(rows.iter().map(|r| r.0), "the database");
    // By position, each session's events come in the order they were committed to it.
    let mut by_session: BTreeMap<&str, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for (pos, id, n, seq) in &rows {
        by_session.entry(id).or_default().push((*pos, *n, *seq));
    }
    assert_eq!(by_session["hot"].len(), hot as usize);
    for (id, events) in &by_session {
        let ns: Vec<i64> = events.iter().map(|(_, n, _)| *n).collect();
        if let Some(at) = ns.windows(2).position(|w| w[1] <= w[0]) {
            let (a, b) = (events[at], events[at + 1]);
            panic!(
                "{id}: position {} holds commit {} (sequence {}) but position {} holds commit {} (sequence {})",
                a.0, a.1, a.2, b.0, b.1, b.2
            );
        }
        assert_eq!(ns, (1..=ns.len() as i64).collect::<Vec<_>>(), "{id}'s ordinals");
    }
    // A subscriber anywhere gets the database's order.
    let mut s = nodes[2].stream("/stream?since=0").await;
    let mut seen = BTreeMap::new();
    collect(&mut s, &mut seen, rows.len()).await;
    let want: BTreeMap<i64, (String, i64)> = rows.iter().map(|(pos, id, _, seq)| (*pos, (id.clone(), *seq))).collect();
    assert_eq!(seen, want, "the stream and the database disagree");
}
