//! What every handler may use.

use super::body::Budget;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::Prices;
use crate::store::Store;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Cancelled on shutdown: ends every open stream, so the server can drain.
    pub shutdown: CancellationToken,
    pub started: Instant,
    /// Shown by `/health` so the dashboard can tell a stalled session from a quiet one.
    pub stall_after_secs: f64,
    /// One permit per export in progress ([`MAX_EXPORTS`]).
    pub exports: Arc<tokio::sync::Semaphore>,
    /// One permit per comparison in progress ([`MAX_COMPARES`](super::compare::MAX_COMPARES)).
    pub compares: Arc<tokio::sync::Semaphore>,
    /// Model prices, for the cost of LLM calls derived from OTLP spans.
    pub prices: Arc<Prices>,
    /// The guard's decisions per condition, and the detectors' settings it judges by.
    pub guard: Arc<(crate::guard::Policy, crate::detect::DetectConfig)>,
    /// Sessions whose Claude Code hooks this instance has heard from (their telemetry's tool
    /// results and prompts are then not second steps).
    pub hooked: Arc<Hooked>,
    /// The memory ingest requests may hold at once ([`IN_FLIGHT_BYTES`](super::body::IN_FLIGHT_BYTES)).
    pub ingest: Budget,
    /// Notifications: what `/health` and `/metrics` count, and how targets are shown.
    pub notify: Notifications,
}

/// What the API shows of notifications.
#[derive(Clone)]
pub struct Notifications {
    pub status: Arc<crate::notify::worker::Status>,
    /// Each configured target's key (as the store names it) and label (as people see it).
    pub labels: Arc<std::collections::HashMap<String, String>>,
}

/// Exports served at once. Each holds about one chunk and the server's write buffer (well under
/// a MiB) while its client is slow, so this bounds what slow exports can hold in all.
pub const MAX_EXPORTS: usize = 32;

/// Sessions reported by their agent's hooks, most recent kept; bounded, so a flood of session
/// ids costs at most [`Hooked::MAX`] of them.
#[derive(Default)]
pub struct Hooked {
    sessions: std::sync::Mutex<(std::collections::HashSet<String>, std::collections::VecDeque<String>)>,
}

impl Hooked {
    pub const MAX: usize = 10_000;

    pub fn mark(&self, id: &str) {
        let mut g = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *g;
        if set.insert(id.to_owned()) {
            order.push_back(id.to_owned());
            if order.len() > Self::MAX {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).0.contains(id)
    }
}
