//! What a store's writer is asked to do, whatever the backend: typed jobs, each with a reply
//! channel of its own, so no caller can be handed another job's answer.

use crate::model::Event;
use crate::store::outbox::Settle;
use crate::store::{Outcome, Retention, StoreError};
use tokio::sync::oneshot;

/// Where a job's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) enum Job {
    Ingest(Vec<Event>, Reply<Vec<Outcome>>),
    Delete(String, Reply<bool>),
    /// Raise stall alerts for running sessions silent for too long.
    Stalls(Reply<usize>),
    Pin(String, bool, Reply<bool>),
    Retain(Retention, Reply<usize>),
    /// Record notification attempts' outcomes.
    Settle(Vec<Settle>, Reply<()>),
    /// Give up waiting notifications older than this many ms, but those of these targets.
    Expire(Vec<String>, i64, Reply<usize>),
}

/// What a writer's queue carries.
pub(crate) enum Command {
    Run(Job),
    /// Stop after the jobs queued before this one; later ones are dropped (their callers see `Closed`).
    Shutdown,
}

impl Job {
    /// Answers the job with a failure without running it.
    pub(crate) fn fail(self, e: &StoreError) {
        match self {
            Job::Ingest(_, r) => tell(r, e),
            Job::Delete(_, r) | Job::Pin(_, _, r) => tell(r, e),
            Job::Stalls(r) | Job::Retain(_, r) | Job::Expire(_, _, r) => tell(r, e),
            Job::Settle(_, r) => tell(r, e),
        }
    }
}

pub(crate) fn tell<T>(reply: Reply<T>, e: &StoreError) {
    let _ = reply.send(Err(e.clone()));
}
