//! The ingest transaction: one group of events, stored, applied to their sessions, and their
//! sessions' rows and alerts written, under the locks that make a fleet behave as one collector:
//! the rows of the sessions it writes, in id order (`FOR UPDATE`, creating missing rows), and the
//! parents its ending children will tell. Events of one session are applied by one transaction
//! at a time, whichever instance received them, and a copy of a session cached by this instance
//! is used only if the row's `rev` says nobody else wrote it since.
//!
//! No lock is shared by every writer: the events are stored under the transaction's group
//! ([`Group`]), whose row is written last and numbered after the commit by the sequencer
//! ([`super::sequencer`]). Within a session, events are counted by their own ordinal `n`.
//!
//! What an event does to its session is [`crate::store::apply`]'s business; this writes it.

use super::sql::{now_ms, restore, store_alert, At, Cached, Group, INSERT_GROUP};
use super::writer::Failure;
use crate::detect::DetectConfig;
use crate::model::Event;
use crate::store::apply::{self, Live, Place, Probe, Raised, Saved, SessionColumns, Tracked};
use crate::store::outbox::Outbox;
use crate::store::Outcome;
use deadpool_postgres::Client;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::types::ToSql;

/// A write about to be stored, with its outcome's place in its job's answer.
/// Borrowed from the caller's job (kept whole for a rerun after a conflict), owned only when a
/// span's event moved to another sequence.
struct Pending<'a> {
    job: usize,
    index: usize,
    ev: Cow<'a, Event>,
}

/// What one group transaction wrote, for after its commit.
#[derive(Default)]
pub(super) struct Written {
    pub(super) sessions: HashMap<String, Tracked>,
    pub(super) alerts: u64,
    /// Deliveries were written: wake the delivery worker.
    pub(super) deliveries: bool,
}

const UPDATE_SESSION: &str = "UPDATE aop_sessions SET agent_id = $2, parent_id = $3, goal = $4, status = $5, \
     last_seen_us = $6, event_count = $7, state = $8, \
     detect = CASE WHEN $9::text IS NULL THEN detect ELSE $9 END, \
     detect_upto = CASE WHEN $9::text IS NULL THEN detect_upto ELSE $10 END, \
     heard_ms = CASE WHEN $11 THEN $12 ELSE heard_ms END, stalled = stalled AND NOT $11, \
     conversation = $13, alert_count = alert_count + $14, last_n = $15, rev = rev + 1 \
     WHERE sid = $1";
const INSERT_EVENTS: &str = "INSERT INTO aop_events (grp, k, sid, seq, n, body) \
     SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])";

/// Runs the group's jobs (each a request's events) in one transaction on `tx`, a connection
/// outside any transaction, and commits it: each event's outcome, by job, and what was written.
/// On an error the transaction is left open for the caller to roll back. Sessions are taken out
/// of `live` for the transaction; the caller puts back what it wrote once the commit succeeded.
///
/// A group of sessions this instance wrote before costs two round trips: `BEGIN`, the locks,
/// the duplicate probe and the clock in one; the writes and `COMMIT` in the other. (Statements
/// pipelined this way must already be prepared on the connection, so that each is sent, and
/// run, in order: the first group on a connection runs them one by one.)
pub(super) async fn ingest(
    tx: &Client,
    grp: i64,
    jobs: &[Vec<Event>],
    live: &mut Live,
    detect: &DetectConfig,
    outbox: &Outbox,
) -> Result<(Vec<Vec<Outcome>>, Written), Failure> {
    let ids: BTreeSet<String> = jobs.iter().flatten().map(|e| e.session_id.clone()).collect();
    let mut pending = Vec::new();
    for (job, evs) in jobs.iter().enumerate() {
        for (index, ev) in evs.iter().enumerate() {
            pending.push(Pending { job, index, ev: Cow::Borrowed(ev) });
        }
    }
    // The keys this instance's cache gives the sessions: when it knows them all, the probe goes
    // with the locks (and is run again if a row turns out to have another key: a session
    // deleted and begun again). A cached session was written on this connection (the cache is
    // emptied with a new one), so these statements are prepared: they run in the order sent.
    let guessed: Option<HashMap<String, i64>> =
        ids.iter().map(|id| live.get_mut(id).map(|t| (id.clone(), t.key))).collect();
    let begin = async { tx.batch_execute("BEGIN").await.map_err(Failure::from) };
    // Each locked session's last ordinal, by key.
    let mut last_n: HashMap<i64, i64> = HashMap::new();
    let (mut sessions, early) = match guessed {
        Some(keys) => {
            let (_, sessions, stored, now) = tokio::try_join!(
                begin,
                lock_sessions(tx, &ids, live, detect, &mut last_n),
                existing(tx, &keys, &pending),
                now_ms(tx),
            )?;
            let same = sessions.iter().all(|(id, t)| keys.get(id) == Some(&t.key));
            (sessions, same.then_some((stored, now)))
        }
        None => {
            let (_, sessions) = tokio::try_join!(begin, lock_sessions(tx, &ids, live, detect, &mut last_n))?;
            (sessions, None)
        }
    };
    // Parents that children ending in this group will tell, locked now with the others.
    let parents: BTreeSet<String> = jobs
        .iter()
        .flatten()
        .filter(|e| e.kind == "session.ended")
        .filter_map(|e| sessions.get(&e.session_id)?.state.parent_session_id().map(str::to_owned))
        .filter(|p| !sessions.contains_key(p))
        .collect();
    if !parents.is_empty() {
        let more = lock_sessions(tx, &parents, live, detect, &mut last_n).await?;
        sessions.extend(more);
    }

    let mut outcomes: Vec<Vec<Outcome>> = jobs.iter().map(|j| vec![Outcome::Duplicate; j.len()]).collect();
    let (stored, now_ms) = match early {
        Some(early) => early,
        None => {
            let keys: HashMap<String, i64> = sessions.iter().map(|(id, t)| (id.clone(), t.key)).collect();
            tokio::try_join!(existing(tx, &keys, &pending), now_ms(tx))?
        }
    };
    // Places taken earlier in this group: `(session key, sequence)` → index in `accepted`.
    let mut fresh: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    let mut accepted: Vec<Pending> = Vec::with_capacity(pending.len());
    for p in pending {
        let sid = sessions[&p.ev.session_id].key;
        let p = match place(tx, sid, &p.ev, &stored, &fresh, &accepted).await? {
            None => p,
            Some(Place::Moved(moved)) => Pending { ev: Cow::Owned(*moved), ..p },
            Some(Place::Refused(outcome)) => {
                outcomes[p.job][p.index] = outcome;
                continue;
            }
        };
        fresh.insert((sid, p.ev.sequence), accepted.len());
        accepted.push(p);
    }

    if accepted.is_empty() {
        // Only retries and conflicts: no group to number.
        tx.batch_execute("COMMIT").await?;
        return Ok((outcomes, Written { sessions, alerts: 0, deliveries: false }));
    }
    let mut group = Group::new(grp);
    let created_at = apply::rfc3339_ms(now_ms).unwrap_or_default();
    let (mut k_col, mut sid_col, mut seq_col, mut n_col, mut body_col) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Each alert with the ordinal (in its session) of the event that raised it.
    let mut raised: Vec<(i64, Raised)> = Vec::new();
    for p in &accepted {
        let t = sessions.get_mut(&p.ev.session_id).expect("locked above");
        let sid = t.key;
        let n = last_n.get_mut(&sid).expect("locked above");
        *n += 1;
        let n = *n;
        let applied = t.apply(n, &p.ev, detect);
        raised.extend(applied.alerts.into_iter().map(|r| (n, r)));
        if let Some(end) = applied.child_end {
            if !sessions.contains_key(&end.parent) {
                // Not foreseen above (the child's parent was named in this very group).
                let one = BTreeSet::from([end.parent.clone()]);
                let more = lock_sessions(tx, &one, live, detect, &mut last_n).await?;
                sessions.extend(more);
            }
            let parent = sessions.get_mut(&end.parent).expect("locked above");
            raised.extend(end.tell(parent, detect).map(|r| (n, r)));
        }
        outcomes[p.job][p.index] = Outcome::Stored;
        k_col.push(group.events);
        group.events += 1;
        sid_col.push(sid);
        seq_col.push(p.ev.sequence);
        n_col.push(n);
        body_col.push(p.ev.raw());
    }
    let mut alert_counts: HashMap<i64, i64> = HashMap::new();
    let mut alerts = Vec::with_capacity(raised.len());
    let mut deliveries = false;
    for (event_n, r) in &raised {
        *alert_counts.entry(r.key).or_default() += 1;
        let targets: Vec<&str> = outbox.targets_for(r.alert.kind, &r.agent_id).collect();
        deliveries |= !targets.is_empty();
        let at = At { created_at: &created_at, grp, k: group.notices, now_ms };
        group.notices += 1;
        alerts.push(store_alert(tx, r, Some(*event_n), at, targets));
    }
    // Everything goes in one pipelined round trip, the group's row sent last, and `COMMIT` with
    // it when every statement is already prepared: each is then sent at once, in order. (An
    // alert's statements follow one another, so with alerts the commit waits for them.) A
    // failed statement makes the transaction's `COMMIT` a rollback.
    let (insert, _, _) = tokio::try_join!(
        tx.prepare_cached(INSERT_EVENTS),
        tx.prepare_cached(UPDATE_SESSION),
        tx.prepare_cached(INSERT_GROUP)
    )?;
    let columns: [&(dyn ToSql + Sync); 6] = [&grp, &k_col, &sid_col, &seq_col, &n_col, &body_col];
    let writes = tx.execute(&insert, &columns);
    let pipelined = alerts.is_empty();
    tokio::try_join!(
        async { writes.await.map_err(Failure::from) },
        futures_util::future::try_join_all(alerts),
        flush_sessions(tx, &mut sessions, &alert_counts, &last_n, now_ms),
        group.close(tx),
        async {
            match pipelined {
                true => tx.batch_execute("COMMIT").await.map_err(Failure::from),
                false => Ok(()),
            }
        },
    )?;
    if !pipelined {
        tx.batch_execute("COMMIT").await?;
    }
    Ok((outcomes, Written { sessions, alerts: raised.len() as u64, deliveries }))
}

/// Locks the rows of `ids` in id order (creating those that do not exist) and returns each
/// session as of its row: the cached copy, taken out of `live`, when the row's `rev` matches it
/// (it goes back only if the transaction commits), else read back and caught up from the events
/// stored after its saved detector state.
async fn lock_sessions(
    tx: &Client,
    ids: &BTreeSet<String>,
    live: &mut Live,
    detect: &DetectConfig,
    last_n: &mut HashMap<i64, i64>,
) -> Result<HashMap<String, Tracked>, Failure> {
    let list: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut found: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let lock = "SELECT id, sid, rev, last_n FROM aop_sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE";
    for r in tx.q(lock, &[&list]).await? {
        found.insert(r.get(0), (r.get(1), r.get(2)));
        last_n.insert(r.get(1), r.get(3));
    }
    let missing: Vec<&str> = list.iter().copied().filter(|id| !found.contains_key(*id)).collect();
    if !missing.is_empty() {
        // A row another instance creates at the same moment makes ours wait for its commit and
        // then conflict: it is locked with the others after.
        for r in tx
            .q(
                "INSERT INTO aop_sessions (id, agent_id, status, last_seen_us, event_count, state) \
                 SELECT id, '', 'running', 0, 0, '{}' FROM unnest($1::text[]) AS u(id) ORDER BY id \
                 ON CONFLICT (id) DO NOTHING RETURNING id, sid, rev, last_n",
                &[&missing],
            )
            .await?
        {
            found.insert(r.get(0), (r.get(1), r.get(2)));
            last_n.insert(r.get(1), r.get(3));
        }
        let raced: Vec<&str> = missing.iter().copied().filter(|id| !found.contains_key(*id)).collect();
        if !raced.is_empty() {
            for r in tx.q(lock, &[&raced]).await? {
                found.insert(r.get(0), (r.get(1), r.get(2)));
                last_n.insert(r.get(1), r.get(3));
            }
        }
    }
    let mut out = HashMap::with_capacity(found.len());
    let mut stale = Vec::new();
    for (id, (sid, rev)) in found {
        match live.take(&id) {
            Some(t) if t.key == sid && t.rev == rev => {
                out.insert(id, t);
            }
            _ if rev == 0 => {
                out.insert(id.clone(), Tracked::fresh(sid, &id));
            }
            _ => stale.push((id, sid, rev)),
        }
    }
    for (id, sid, rev) in stale {
        let row = tx.q1("SELECT state, detect, detect_upto FROM aop_sessions WHERE sid = $1", &[&sid]).await?;
        let saved = Saved { key: sid, rev, id: &id, state: row.get(0), detector: row.get(1), detect_upto: row.get(2) };
        let t = restore(tx, saved, detect).await?;
        out.insert(id, t);
    }
    Ok(out)
}

/// The stored bodies at the `(session, sequence)` places the group's events ask for.
async fn existing(
    tx: &Client,
    keys: &HashMap<String, i64>,
    pending: &[Pending<'_>],
) -> Result<HashMap<(i64, i64), String>, Failure> {
    let sids: Vec<i64> = pending.iter().map(|p| keys[&p.ev.session_id]).collect();
    let seqs: Vec<i64> = pending.iter().map(|p| p.ev.sequence).collect();
    let rows = tx
        .q(
            // One index probe per place: as a plain join, a cached generic plan may hash the
            // whole table (seen: 10-30 ms a group on a few hundred thousand events). `LIMIT`
            // keeps the planner from flattening the lateral subquery into such a join.
            "SELECT k.sid, k.seq, e.body FROM unnest($1::bigint[], $2::bigint[]) AS k(sid, seq), \
             LATERAL (SELECT body FROM aop_events e WHERE e.sid = k.sid AND e.seq = k.seq LIMIT 1) e",
            &[&sids, &seqs],
        )
        .await?;
    Ok(rows.into_iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// Where an event goes when its place is held (`None`: it is not, the event goes there), by
/// what holds it: a body stored before, or an event earlier in this group ([`apply::place`]
/// decides; this reads what it asks for).
async fn place(
    tx: &Client,
    sid: i64,
    ev: &Event,
    stored: &HashMap<(i64, i64), String>,
    fresh: &BTreeMap<(i64, i64), usize>,
    accepted: &[Pending<'_>],
) -> Result<Option<Place>, Failure> {
    let key = (sid, ev.sequence);
    let held = fresh.get(&key).map(|&i| accepted[i].ev.raw()).or_else(|| stored.get(&key).map(String::as_str));
    let Some(held) = held else {
        return Ok(None);
    };
    let Some(probe) = Probe::of(ev) else {
        return Ok(Some(Place::Refused(apply::place::refused(ev, held))));
    };
    let range = probe.window();
    let rows = tx
        .q(
            "SELECT seq, body FROM aop_events WHERE sid = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
            &[&sid, &range.start, &range.end],
        )
        .await?;
    let mut window: BTreeMap<i64, &str> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (&(_, q), &i) in fresh.range((sid, range.start)..(sid, range.end)) {
        window.insert(q, accepted[i].ev.raw());
    }
    Ok(Some(probe.through(window)))
}

/// Writes every changed session row, bumping its `rev` (and the cached copy's with it).
async fn flush_sessions(
    tx: &Client,
    sessions: &mut HashMap<String, Tracked>,
    alert_counts: &HashMap<i64, i64>,
    last_n: &HashMap<i64, i64>,
    now_ms: i64,
) -> Result<(), Failure> {
    let stmt = tx.prepare_cached(UPDATE_SESSION).await?;
    let mut rows = Vec::new();
    for t in sessions.values_mut() {
        let Some(snap) = t.snapshot() else { continue };
        t.rev += 1;
        let alerts = alert_counts.get(&t.key).copied().unwrap_or(0);
        let n = last_n.get(&t.key).copied().unwrap_or_default();
        rows.push((SessionColumns::new(t, snap), alerts, n));
    }
    // Pipelined: one round trip for all of them.
    type Sql<'a> = &'a (dyn ToSql + Sync);
    let params: Vec<[Sql<'_>; 15]> = rows
        .iter()
        .map(|(r, alerts, n)| -> [Sql<'_>; 15] {
            [
                &r.key,
                &r.agent_id,
                &r.parent_id,
                &r.goal,
                &r.status,
                &r.last_seen_us,
                &r.event_count,
                &r.state,
                &r.detector,
                &r.detect_upto,
                &r.heard,
                &now_ms,
                &r.conversation,
                alerts,
                n,
            ]
        })
        .collect();
    futures_util::future::try_join_all(params.iter().map(|p| tx.execute(&stmt, p))).await?;
    Ok(())
}
