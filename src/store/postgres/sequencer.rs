//! The sequencer: numbers the groups the fleet's writers committed, in ticket order, so every
//! instance's feed reads one order.
//!
//! Every instance runs one, on a connection of its own. It calls `aop_sequence` (schema v4), a
//! short transaction that waits for the fleet's sequencing lock, gives each committed group not
//! yet numbered a contiguous block of positions after `aop_head`, advances the head and sends
//! the one `NOTIFY`. Any instance may number any instance's groups: one killed after its commit
//! is numbered by the next step anywhere. It runs when this instance's writer committed a group
//! (at most every [`STEP_GAP`]) and, as a floor, every [`POLL`].
//!
//! Why positions need no watermark: a group is numbered only once it is committed and visible
//! to the step's snapshot, so nothing can later appear below the head. Two groups that wrote one
//! session are ordered by their locks: the later one drew its ticket after the earlier one
//! committed, so it is numbered in the same step after it, or in a later step.

use super::conn::Target;
use super::{classify, full};
use crate::store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// A step runs at least this often, numbering what instances that died after their commit
/// left behind.
pub(super) const POLL: Duration = Duration::from_millis(1000);
/// Groups one step numbers at most (the next step goes on at once).
const STEP_GROUPS: i32 = 5000;
/// An instance starts a step at most this often. A step is a commit of its own (a WAL flush
/// and the `NOTIFY`), and every instance's writer wakes its sequencer after each commit: under
/// load, without this gap, steps would be about as many as groups, each numbering one or two,
/// and on a busy database they cost as much as the writes. With it, a step numbers what a few
/// milliseconds of the fleet committed; an idle fleet's first commit is numbered at once.
const STEP_GAP: Duration = Duration::from_millis(4);
/// A step that takes longer is abandoned with its connection, which frees the lock: a
/// server that stopped answering must not stop every instance's stream.
const STEP_DEADLINE: Duration = Duration::from_secs(15);
/// The sequencer's connection's name, for `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "aop-sequencer";

pub(super) struct Sequencer {
    pub(super) target: Target,
    /// Woken by this instance's writer after a commit that wrote a group.
    pub(super) wake: Arc<Notify>,
    /// This instance's feed, woken after a step that numbered something (the `NOTIFY` reaches
    /// it too, a round trip later).
    pub(super) feed: Arc<Notify>,
}

impl Sequencer {
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut client: Option<Client> = None;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            tokio::time::sleep_until(last + STEP_GAP).await;
            last = tokio::time::Instant::now();
            loop {
                match self.step(&mut client).await {
                    Ok(n) if n >= STEP_GROUPS => {
                        self.feed.notify_one();
                        continue;
                    }
                    Ok(0) => {}
                    Ok(_) => self.feed.notify_one(),
                    Err(e) => {
                        client = None;
                        tracing::debug!(error = %e, "sequencing step failed; the next one retries");
                    }
                }
                break;
            }
        }
    }

    /// One step: the number of groups it numbered.
    async fn step(&self, client: &mut Option<Client>) -> Result<i32, StoreError> {
        if client.as_ref().is_none_or(Client::is_closed) {
            *client = Some(self.connect().await?);
        }
        let c = client.as_ref().expect("connected above");
        let run = c.query_one("SELECT aop_sequence($1)", &[&STEP_GROUPS]);
        match tokio::time::timeout(STEP_DEADLINE, run).await {
            Ok(row) => Ok(row.map_err(|e| classify(&e))?.get(0)),
            Err(_) => Err(StoreError::Unavailable("a sequencing step did not finish in time".into())),
        }
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = tokio::time::timeout(super::conn::CONNECT_TIMEOUT, self.target.connect())
            .await
            .map_err(|_| StoreError::Unavailable("no answer from PostgreSQL".into()))?
            .map_err(|e| StoreError::Unavailable(full(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "sequencer connection ended");
            }
        });
        // Whatever the server's or the role's defaults say: positions are durable before any
        // feed reads them, a step's statements see each other's commits (aop_sequence refuses
        // anything else), and a half-dead session never holds the sequencing lock for long.
        // A step waiting for the lock gives up on the server's side before this side's
        // deadline, so an abandoned wait never leaves a backend queued for the lock.
        let setup = format!(
            "SET application_name = '{APPLICATION_NAME}'; SET synchronous_commit = on; \
             SET default_transaction_isolation = 'read committed'; SET idle_in_transaction_session_timeout = 5000; \
             SET lock_timeout = 10000"
        );
        client.batch_execute(&setup).await.map_err(|e| classify(&e))?;
        Ok(client)
    }
}
