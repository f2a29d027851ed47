//! The feed: what any instance of the fleet committed, published to this instance's subscribers
//! in position order.
//!
//! It reads `aop_head`, then the events and notices up to it. The sequencer
//! ([`super::sequencer`]) numbers only groups already committed, and advances the head in the
//! same transaction, so once the head says `n`, every position up to `n` is committed and
//! visible: nothing can appear later below it. It is woken by `NOTIFY` (sent by the sequencer's
//! step, on a connection of its own, [`listen`]), by this instance's sequencer after a step, and
//! by a poll, in case a notification was lost while the listening connection was down; after
//! the listener reconnects it wakes the feed once, which catches up by the same query.

use super::read::events_between;
use super::{classify, pool_error, Reach, Shared};
use crate::hub::{Hub, Message};
use crate::store::{StoreError, Unsequenced};
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// The feed looks even without a notification this often.
const POLL: Duration = Duration::from_millis(1000);
/// Rows per query while catching up.
const PAGE: i64 = 2048;
/// How often the database's size is read for `/health`.
const SIZE_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Feed {
    pub(super) pool: Pool,
    pub(super) hub: Arc<Hub>,
    /// The last event and notice positions published.
    pub(super) events: i64,
    pub(super) notices: i64,
    pub(super) shared: Arc<Shared>,
    pub(super) reach: Arc<Reach>,
}

/// The few envelope fields a stream filter reads, from a stored (valid) event.
#[derive(serde::Deserialize)]
pub(super) struct Envelope {
    pub(super) session_id: String,
    pub(super) agent_id: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
}

impl Feed {
    pub(super) async fn run(mut self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut sized = None::<Instant>;
        let mut counted = None::<Instant>;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            match self.catch_up().await {
                Ok(()) => {
                    if !self.reach.ok.swap(true, Ordering::Relaxed) {
                        tracing::info!("PostgreSQL is reachable again");
                        // The writer's failure was the outage; its next commit would say so too.
                        self.shared.mark_writable();
                    }
                }
                Err(e) => {
                    if self.reach.ok.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "PostgreSQL is unreachable; retrying");
                    }
                    *self.reach.error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("PostgreSQL is unreachable: {e}"));
                    continue;
                }
            }
            if counted.is_none_or(|t| t.elapsed() >= POLL) {
                counted = Some(Instant::now());
                if let Ok(c) = self.pool.get().await {
                    let sql = "SELECT count(*), coalesce((extract(epoch FROM clock_timestamp()) * 1000)::bigint \
                               - min(created_ms), 0) FROM aop_groups WHERE first_pos IS NULL";
                    if let Ok(r) = c.query_one(sql, &[]).await {
                        *self.reach.unsequenced.lock().unwrap_or_else(|e| e.into_inner()) =
                            Unsequenced { groups: r.get(0), oldest_ms: r.get(1) };
                    }
                }
            }
            if sized.is_none_or(|t| t.elapsed() >= SIZE_EVERY) {
                sized = Some(Instant::now());
                if let Ok(c) = self.pool.get().await {
                    if let Ok(r) = c.query_one("SELECT pg_database_size(current_database())", &[]).await {
                        self.reach.bytes.store(r.get::<_, i64>(0).max(0) as u64, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Publishes everything committed after the last positions published.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(pool_error)?;
        loop {
            let head = c.query_one("SELECT events, notices FROM aop_head", &[]).await.map_err(|e| classify(&e))?;
            let (events, notices): (i64, i64) = (head.get(0), head.get(1));
            if events <= self.events && notices <= self.notices {
                return Ok(());
            }
            if events > self.events {
                let (rows, reached) = events_between(&c, self.events, events, PAGE).await.map_err(|e| classify(&e))?;
                for (pos, body) in rows {
                    // Stored events were validated on the way in; one that does not parse is skipped.
                    if let Ok(env) = serde_json::from_str::<Envelope>(&body) {
                        self.hub.publish(Message::event(pos, env.session_id, env.agent_id, env.kind, body));
                    }
                }
                // Positions of deleted sessions' events are holes: how far was read says where we are.
                self.events = reached;
                self.hub.advance_to(reached);
            }
            if notices > self.notices {
                let rows = c
                    .query(
                        "SELECT g.first_notice + n.k, n.kind, n.session_id, n.agent_id, n.type, n.body \
                         FROM aop_groups g JOIN aop_notices n ON n.grp = g.grp \
                         WHERE g.n_notices > 0 AND g.last_notice > $1 AND g.first_notice <= $2 \
                           AND g.first_notice + n.k > $1 AND g.first_notice + n.k <= $2 \
                         ORDER BY 1 LIMIT $3",
                        &[&self.notices, &notices, &PAGE],
                    )
                    .await
                    .map_err(|e| classify(&e))?;
                let full = rows.len() as i64 == PAGE;
                for r in rows {
                    self.notices = r.get(0);
                    let (kind, session_id, agent_id, kind_of): (&str, String, String, String) =
                        (r.get(1), r.get(2), r.get(3), r.get(4));
                    let msg = match kind {
                        "alert" => Message::alert(session_id, agent_id, kind_of, r.get(5)),
                        _ => Message::session_deleted(session_id),
                    };
                    self.hub.publish(msg);
                }
                if !full {
                    self.notices = notices;
                }
            }
        }
    }
}

/// Keeps a connection listening on the feed's channel, waking the feed on every notification
/// and once after every (re)connection, when notifications may have been missed.
pub(super) async fn listen(target: super::conn::Target, wake: Arc<Notify>, stop: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut listened = false;
        let attempt = async {
            let (client, mut connection) = target.connect().await?;
            let mut rx = Box::pin(futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)));
            // The connection is driven by the stream; LISTEN completes while we read it.
            let sql = format!("LISTEN {}", super::sql::CHANNEL);
            let listen = client.batch_execute(&sql);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    done = &mut listen => { done?; break; }
                    msg = rx.next() => match msg {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e),
                        None => return Ok(()),
                    },
                }
            }
            listened = true;
            wake.notify_one();
            tracing::debug!("listening for the fleet's commits");
            while let Some(msg) = rx.next().await {
                if let AsyncMessage::Notification(_) = msg? {
                    wake.notify_one();
                }
            }
            Ok::<(), tokio_postgres::Error>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            ended = attempt => {
                match ended {
                    Ok(()) => tracing::warn!("the listening connection closed; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "the listening connection failed; reconnecting"),
                }
            }
        }
        backoff = if listened { FIRST_BACKOFF } else { (backoff * 2).min(Duration::from_secs(2)) };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}
