//! The delivery loop: claims due deliveries from the outbox, sends them (a few at a time, each
//! target within its rate), and records how each attempt ended; keeps the counts `/health` and
//! `/metrics` show.
//!
//! It wakes when this instance's writer commits deliveries, and polls every second besides (for
//! retries coming due, and another instance's alerts in a fleet). What it claims it holds until
//! it has settled it: in a fleet the claim's lease keeps other instances off meanwhile, long enough
//! for every attempt a claim starts; if this instance dies, another takes the deliveries over
//! once the lease ends. On shutdown the attempts in flight are dropped unsettled: they are sent
//! again later (at least once), with the same `X-Aop-Delivery`.

use super::message::{self, Held};
use super::plan::{self, Send, Window};
use super::send::Sender;
use super::{Settings, Target};
use crate::store::outbox::{Due, Outbox, Settle, Settled};
use crate::store::Store;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often due deliveries are looked for when nothing wakes the worker.
const POLL: Duration = Duration::from_secs(1);
/// Attempts in flight at once, all targets together.
const CONCURRENCY: usize = 16;
/// Deliveries one claim takes at most.
const CLAIM: usize = 64;
/// How long a claim keeps a fleet's other instances off its deliveries. Every attempt of a claim
/// ends within it: at most [`CLAIM`] of them, [`CONCURRENCY`] at a time, each within 10 s.
const LEASE: Duration = Duration::from_secs(120);
/// How often the counts are read again (after settling, at once); without targets, seldom.
const COUNT_EVERY: Duration = Duration::from_secs(2);
const COUNT_IDLE: Duration = Duration::from_secs(10);
/// On stop, how long attempts in flight get to end (and be settled) before they are dropped.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often deliveries to targets no longer configured are given up once past the max age.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// What `/health` and `/metrics` show of notifications.
#[derive(Debug, Default)]
pub struct Status {
    targets: usize,
    pending: AtomicU64,
    failed: AtomicU64,
    /// Alerts this instance delivered (one by one or in a summary) since it started.
    delivered: AtomicU64,
    /// Attempts of this instance that failed.
    failed_attempts: AtomicU64,
}

/// [`Status`] read at one moment.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatusView {
    pub targets: usize,
    /// Deliveries waiting, in the whole store.
    pub pending: u64,
    /// Deliveries given up, in the whole store.
    pub failed: u64,
    pub delivered_total: u64,
    pub failed_attempts_total: u64,
}

impl Status {
    pub fn new(targets: usize) -> Status {
        Status { targets, ..Status::default() }
    }

    pub fn view(&self) -> StatusView {
        StatusView {
            targets: self.targets,
            pending: self.pending.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            delivered_total: self.delivered.load(Ordering::Relaxed),
            failed_attempts_total: self.failed_attempts.load(Ordering::Relaxed),
        }
    }
}

/// What an attempt's task hands back.
struct Done {
    settled: Vec<Settle>,
}

/// What every attempt needs.
struct Context {
    sender: Sender,
    /// The collector's base URL, for links.
    base: String,
    max_age_ms: i64,
    permits: Semaphore,
}

pub struct Worker {
    store: Arc<dyn Store>,
    targets: Vec<Arc<Target>>,
    outbox: Arc<Outbox>,
    status: Arc<Status>,
    context: Arc<Context>,
}

impl Worker {
    /// `base` is the collector's URL as the links in messages give it.
    pub fn new(
        store: Arc<dyn Store>,
        settings: &Settings,
        base: String,
        outbox: Arc<Outbox>,
        status: Arc<Status>,
    ) -> Worker {
        let context = Context {
            sender: Sender::default(),
            base,
            max_age_ms: i64::try_from(settings.max_age.as_millis()).unwrap_or(i64::MAX),
            permits: Semaphore::new(CONCURRENCY),
        };
        let targets = settings.targets.iter().cloned().map(Arc::new).collect();
        Worker { store, targets, outbox, status, context: Arc::new(context) }
    }

    pub async fn run(self, stop: CancellationToken) {
        let clock = Instant::now();
        let ms = || clock.elapsed().as_millis() as u64;
        let keys: Vec<String> = self.targets.iter().map(|t| t.key.clone()).collect();
        let mut windows: HashMap<String, Window> = HashMap::new();
        // Claimed and not yet settled, so never claimed twice (a SQLite claim writes nothing).
        let mut holding: HashSet<(i64, String)> = HashSet::new();
        let mut running: JoinSet<Done> = JoinSet::new();
        let mut tasks: HashMap<tokio::task::Id, Vec<(i64, String)>> = HashMap::new();
        // Attempts ended and not yet recorded (the store may be busy): still held, so not sent again.
        let mut unsettled: Vec<Settle> = Vec::new();
        let count_every = if self.targets.is_empty() { COUNT_IDLE } else { COUNT_EVERY };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut counted, mut expired): (Option<Instant>, Option<Instant>) = (None, None);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                () = self.outbox.wake.notified() => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => match done {
                    Ok((id, done)) => {
                        tasks.remove(&id);
                        self.tally(&done.settled);
                        unsettled.extend(done.settled);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a notification attempt ended abnormally; it will be retried");
                        for key in tasks.remove(&e.id()).unwrap_or_default() {
                            holding.remove(&key);
                        }
                    }
                },
            }
            if !unsettled.is_empty() {
                match self.store.settle_deliveries(unsettled.clone()).await {
                    Ok(()) => {
                        for s in unsettled.drain(..) {
                            holding.remove(&(s.alert_id, s.target));
                        }
                        counted = None;
                    }
                    Err(e) => tracing::debug!(error = %e, "notification attempts not recorded yet; trying again"),
                }
            }
            if counted.is_none_or(|t| t.elapsed() >= count_every) {
                counted = Some(Instant::now());
                self.count().await;
            }
            if expired.is_none_or(|t| t.elapsed() >= EXPIRE_EVERY) {
                expired = Some(Instant::now());
                let max_age_ms = self.context.max_age_ms;
                match self.store.expire_deliveries(keys.clone(), max_age_ms).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(deliveries = n, "gave up notifications whose targets are no longer configured")
                    }
                    Err(e) => tracing::debug!(error = %e, "expiry of old notifications skipped"),
                }
            }
            if self.targets.is_empty() || running.len() >= CONCURRENCY {
                continue;
            }
            // Only targets with room in their window are claimed for: the others' deliveries
            // wait, and go as one summary once there is room.
            let now = ms();
            let open: Vec<(Arc<Target>, usize)> = self
                .targets
                .iter()
                .filter_map(|t| {
                    let free = windows.entry(t.key.clone()).or_default().free(now, t.max_per_minute);
                    (free > 0).then(|| (Arc::clone(t), free))
                })
                .collect();
            if open.is_empty() {
                continue;
            }
            let wanted = open.iter().map(|(t, _)| t.key.clone()).collect();
            let lease_ms = LEASE.as_millis() as i64;
            let claimed = match self.store.claim_deliveries(wanted, CLAIM + holding.len(), lease_ms).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "notifications not looked for");
                    continue;
                }
            };
            let claimed_at = Instant::now();
            let mut by_target: HashMap<String, Vec<Due>> = HashMap::new();
            for due in claimed.due {
                if !holding.contains(&(due.alert_id, due.target.clone())) {
                    by_target.entry(due.target.clone()).or_default().push(due);
                }
            }
            for (target, slots) in open {
                let Some(due) = by_target.remove(&target.key) else { continue };
                for send in plan::split(due, slots) {
                    windows.entry(target.key.clone()).or_default().record(now);
                    let keys: Vec<(i64, String)> = match &send {
                        Send::One(d) => vec![(d.alert_id, d.target.clone())],
                        Send::Summary(ds) => ds.iter().map(|d| (d.alert_id, d.target.clone())).collect(),
                    };
                    holding.extend(keys.iter().cloned());
                    let attempt =
                        attempt(Arc::clone(&self.context), Arc::clone(&target), send, claimed.now_ms, claimed_at);
                    let handle = running.spawn(attempt);
                    tasks.insert(handle.id(), keys);
                }
            }
        }
        // Attempts about to end get a moment, so that a clean stop seldom sends one again later.
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while let Some(done) = running.join_next().await {
                if let Ok(done) = done {
                    self.tally(&done.settled);
                    unsettled.extend(done.settled);
                }
            }
        })
        .await;
        running.abort_all();
        // What is not recorded now is sent again after the restart: at least once, never lost.
        if !unsettled.is_empty() {
            if let Err(e) = self.store.settle_deliveries(unsettled).await {
                tracing::warn!(error = %e, "notification attempts not recorded at stop; they will be sent again");
            }
        }
    }

    /// Counts attempts' outcomes for `/metrics`.
    fn tally(&self, settled: &[Settle]) {
        for s in settled {
            let counter = match s.outcome {
                Settled::Delivered | Settled::Summarised => &self.status.delivered,
                Settled::Retry { .. } | Settled::Failed { .. } => &self.status.failed_attempts,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn count(&self) {
        match self.store.delivery_counts().await {
            Ok(c) => {
                self.status.pending.store(c.pending, Ordering::Relaxed);
                self.status.failed.store(c.failed, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "notification counts not read"),
        }
    }
}

/// Sends one message (an alert, or a summary of held-back alerts) and says how each of its
/// deliveries settles. `now_ms` is the store's clock at the claim, `claimed_at` when it was read.
async fn attempt(
    context: Arc<Context>,
    target: Arc<Target>,
    send: Send<Due>,
    now_ms: i64,
    claimed_at: Instant,
) -> Done {
    // The semaphore is never closed.
    let _permit = context.permits.acquire().await.ok();
    let label = target.label();
    let (due, summary, result) = match send {
        Send::One(d) => {
            let body = target.alert_body(&d.alert, &d.session, &context.base);
            let result = target.post(&context.sender, &d.alert_id.to_string(), body).await;
            (vec![d], false, result)
        }
        Send::Summary(ds) => {
            let held: Vec<Held> = ds
                .iter()
                .map(|d| Held { alert_id: d.alert_id, session_id: d.session_id.clone(), kind: d.kind.clone() })
                .collect();
            let body = target.summary_body(&held, &context.base);
            let result = target.post(&context.sender, &message::summary_id(&held), body).await;
            (ds, true, result)
        }
    };
    let now_ms = now_ms.saturating_add(claimed_at.elapsed().as_millis() as i64);
    let settled = due
        .iter()
        .map(|d| {
            let attempts = d.attempts.saturating_add(1);
            let outcome = match &result {
                Ok(_) if summary => Settled::Summarised,
                Ok(_) => Settled::Delivered,
                Err(e) => plan::after_failure(attempts, d.created_ms, now_ms, context.max_age_ms, e.to_string()),
            };
            match &outcome {
                Settled::Failed { error } => {
                    tracing::warn!(target = %label, alert = d.alert_id, attempts, error = %error, "notification given up after notify_max_age")
                }
                Settled::Retry { error, after_ms } if attempts == 1 => {
                    tracing::warn!(target = %label, alert = d.alert_id, error = %error, retry_in_ms = after_ms, "notification not delivered; retrying")
                }
                Settled::Retry { error, after_ms } => {
                    tracing::debug!(target = %label, alert = d.alert_id, attempts, error = %error, retry_in_ms = after_ms, "notification not delivered; retrying")
                }
                Settled::Delivered | Settled::Summarised => {
                    tracing::debug!(target = %label, alert = d.alert_id, attempts, summary, "notification delivered")
                }
            }
            Settle { alert_id: d.alert_id, target: d.target.clone(), attempts, outcome }
        })
        .collect();
    Done { settled }
}
