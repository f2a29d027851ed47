//! The application: binds the port, opens the store, serves until told to stop, then drains.

use crate::config::Config;
use crate::http::{self, AppState, Security};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{OpenOptions, Retention, Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long open requests get to finish after a stop signal; the writer then drains its queue.
/// Together they stay under the 5 s a supervisor waits before it kills.
const DRAIN: Duration = Duration::from_millis(3000);
const WRITER_DRAIN: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("port {port} on {host} is already in use")]
    PortInUse { host: String, port: u16 },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    store: Arc<dyn Store>,
    security: Security,
    /// How often silent sessions are checked: a tenth of the shortest stall threshold, at least 1 s.
    stall_every: Duration,
    retention: Retention,
    /// The most connections served at once (see [`crate::serve`]).
    max_connections: usize,
    idle_end: Option<Duration>,
    /// The delivery worker of notifications, started with the timers.
    notifier: crate::notify::worker::Worker,
    /// `/mcp` offers `stop_session`.
    mcp_allow_stop: bool,
}

impl App {
    /// Binds the listener (port 0 picks a free one) and opens the store.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let want = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(want).await.map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => StartError::PortInUse { host: config.host.to_string(), port: config.port },
            _ => StartError::Bind { addr: want.to_string(), source },
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: want.to_string(), source })?;
        let hub = Arc::new(Hub::new(config.stream_buffer));
        let outbox = Arc::new(config.notify.outbox());
        let store = crate::store::open(
            &config.db,
            OpenOptions {
                durability: config.durability,
                queue_capacity: config.queue_capacity,
                detect: config.detect.clone(),
                max_bytes: config.retention.max_bytes,
                pool_size: config.db_pool,
                outbox: Arc::clone(&outbox),
            },
            Arc::clone(&hub),
        )
        .await?;
        let status = Arc::new(crate::notify::worker::Status::new(config.notify.targets.len()));
        let base = base_url(&config, Some(addr));
        let notifier =
            crate::notify::worker::Worker::new(store.clone(), &config.notify, base, outbox, Arc::clone(&status));
        let state = AppState {
            notify: crate::http::Notifications {
                status,
                labels: Arc::new(config.notify.targets.iter().map(|t| (t.key.clone(), t.label())).collect()),
            },
            store: store.clone(),
            hub,
            metrics: Arc::new(Metrics::default()),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            stall_after_secs: config.detect.stall_after_secs,
            exports: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_EXPORTS)),
            compares: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_COMPARES)),
            prices: Arc::clone(config.prices()),
            guard: Arc::new((config.guard, config.detect.clone())),
            hooked: Arc::default(),
            ingest: crate::http::Budget::new(crate::http::IN_FLIGHT_BYTES),
        };
        let shortest = config.detect.stall_after_secs.min(config.detect.stall_after_tool_secs);
        let stall_every = Duration::from_secs_f64((shortest / 10.0).max(1.0));
        let security = Security {
            token: config.token.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            cors_origins: config.cors_origins.clone(),
            bind_ip: (!config.host.is_unspecified()).then_some(config.host),
        };
        let max_connections = config.max_connections;
        let idle_end = config.idle_end;
        let mcp_allow_stop = config.mcp_allow_stop;
        Ok(App {
            listener,
            addr,
            state,
            store,
            security,
            stall_every,
            retention: config.retention,
            max_connections,
            idle_end,
            notifier,
            mcp_allow_stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends open streams, lets in-flight
    /// requests finish (bounded), and lets the writer commit what is queued.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = self.state.shutdown.clone();
        let router = http::router(self.state.clone(), self.security, self.mcp_allow_stop);
        let metrics = Arc::clone(&self.state.metrics);
        let mut serving =
            tokio::spawn(crate::serve::serve(self.listener, router, token.clone(), self.max_connections, metrics));
        tokio::spawn(stall_timer(self.state.store.clone(), self.stall_every, token.clone()));
        if let Some(after) = self.idle_end {
            tokio::spawn(idle_timer(self.state.store.clone(), after, token.clone()));
        }
        if self.retention != Retention::default() {
            tokio::spawn(retention_timer(self.state.store.clone(), self.retention, token.clone()));
        }
        let notifier = tokio::spawn(self.notifier.run(token.clone()));
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        token.cancelled().await;
        let stopping = tokio::time::Instant::now();
        tracing::info!("shutting down: draining requests and the write queue");
        if tokio::time::timeout(DRAIN, &mut serving).await.is_err() {
            tracing::warn!("some connections did not finish in time; closing them");
            serving.abort();
        }
        // The notifications' worker records its last attempts meanwhile (it has a second's grace),
        // before the writer stops: within the same bound as requests.
        if tokio::time::timeout_at(stopping + DRAIN, notifier).await.is_err() {
            tracing::warn!("the notifications' worker did not stop in time");
        }
        drop(self.state);
        let store = self.store;
        let writer = tokio::task::spawn_blocking(move || store.shutdown());
        if tokio::time::timeout(WRITER_DRAIN, writer).await.is_err() {
            tracing::warn!("the writer did not finish in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The collector's URL as links in notifications give it: `public_url`, else the address it
/// listens on (`bound`, once known; an unspecified address as loopback, the best guess without
/// `public_url`).
pub fn base_url(config: &Config, bound: Option<SocketAddr>) -> String {
    if let Some(url) = &config.notify.public_url {
        return url.clone();
    }
    let mut addr = bound.unwrap_or_else(|| SocketAddr::new(config.host, config.port));
    if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr =
            if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        addr.set_ip(loopback);
    }
    format!("http://{addr}")
}

/// Stalls are judged on the collector's clock, so something must look while nothing arrives.
async fn stall_timer(store: Arc<dyn Store>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = store.check_stalls().await {
                    tracing::debug!(error = %e, "stall check skipped");
                }
            }
        }
    }
}

/// Ends the sessions that end when idle once they have been silent for `after`: looked for
/// every tenth of it (at least every second, at most every minute). Their ends are ingested as
/// any event is; each has one identity, so instances of a fleet that both end one store it once.
async fn idle_timer(store: Arc<dyn Store>, after: Duration, stop: CancellationToken) {
    let every = (after / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silent_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let idle = match store.idle_sessions(silent_ms).await {
                    Ok(idle) => idle,
                    Err(e) => {
                        tracing::debug!(error = %e, "idle sessions not looked for");
                        continue;
                    }
                };
                let ends: Vec<_> = idle.iter().filter_map(|s| s.idle_end(after.as_secs_f64())).collect();
                if ends.is_empty() {
                    continue;
                }
                let n = ends.len();
                match store.ingest(ends).await {
                    Ok(_) => tracing::info!(sessions = n, "ended sessions silent past --idle-end"),
                    Err(e) => tracing::warn!(error = %e, "could not end idle sessions"),
                }
            }
        }
    }
}

/// How often retention runs (and once at startup). It also runs at once when writes start
/// failing, since a full database is what it can fix.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

async fn retention_timer(store: Arc<dyn Store>, policy: Retention, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let due = last.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) || !store.health().writable;
                if !due {
                    continue;
                }
                last = Some(tokio::time::Instant::now());
                match store.retain(policy).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "retention deleted old sessions"),
                    Err(e) => tracing::warn!(error = %e, "retention skipped"),
                }
            }
        }
    }
}
