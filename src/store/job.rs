//! What a store's writer is asked to do, whatever the backend: typed jobs, each with a reply
//! channel of its own, so no caller can be handed another job's answer. Ingest and upkeep are
//! apart in the type, so each backend's writer hands each to its own path and neither path can
//! be given the other's job.

use crate::model::Event;
use crate::store::outbox::Settle;
use crate::store::{Outcome, Retention, StoreError};
use tokio::sync::oneshot;

/// Where a job's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) enum Job {
    Ingest(Vec<Event>, Reply<Vec<Outcome>>),
    Upkeep(Upkeep),
}

/// The writer's jobs besides ingest.
pub(crate) enum Upkeep {
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

impl From<Upkeep> for Job {
    fn from(job: Upkeep) -> Job {
        Job::Upkeep(job)
    }
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
            Job::Upkeep(Upkeep::Delete(_, r) | Upkeep::Pin(_, _, r)) => tell(r, e),
            Job::Upkeep(Upkeep::Stalls(r) | Upkeep::Retain(_, r) | Upkeep::Expire(_, _, r)) => tell(r, e),
            Job::Upkeep(Upkeep::Settle(_, r)) => tell(r, e),
        }
    }
}

pub(crate) fn tell<T>(reply: Reply<T>, e: &StoreError) {
    let _ = reply.send(Err(e.clone()));
}
