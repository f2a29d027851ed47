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
        let store = crate::store::open(
            &config.db,
            OpenOptions {
                durability: config.durability,
                queue_capacity: config.queue_capacity,
                detect: config.detect.clone(),
                max_bytes: config.retention.max_bytes,
                pool_size: config.db_pool,
            },
            Arc::clone(&hub),
        )
        .await?;
        let state = AppState {
            store: store.clone(),
            hub,
            metrics: Arc::new(Metrics::default()),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            stall_after_secs: config.detect.stall_after_secs,
            exports: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_EXPORTS)),
            compares: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_COMPARES)),
            prices: Arc::clone(config.prices()),
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
        Ok(App { listener, addr, state, store, security, stall_every, retention: config.retention })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends open streams, lets in-flight
    /// requests finish (bounded), and lets the writer commit what is queued.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = self.state.shutdown.clone();
        let router = http::router(self.state.clone(), self.security);
        let mut serving = tokio::spawn(serve(self.listener, router, token.clone()));
        tokio::spawn(stall_timer(self.state.store.clone(), self.stall_every, token.clone()));
        if self.retention != Retention::default() {
            tokio::spawn(retention_timer(self.state.store.clone(), self.retention, token.clone()));
        }
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        token.cancelled().await;
        tracing::info!("shutting down: draining requests and the write queue");
        if tokio::time::timeout(DRAIN, &mut serving).await.is_err() {
            tracing::warn!("some connections did not finish in time; closing them");
            serving.abort();
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

/// How long a client may take to send a request's headers. hyper's default would leave a
/// slowloris connection open forever; agents send a request in one go.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `stop`, then lets open ones finish. axum's own `serve` cannot bound
/// the time to read headers, hence hyper directly.
///
/// HTTP/1.1 serves the API and the dashboard; HTTP/2 cleartext (prior knowledge) beside it on the
/// same port serves OTLP/gRPC exporters. The connection's first bytes tell which, and they must
/// come within [`HEADER_TIMEOUT`] like a request's headers: hyper's own detection would wait for
/// them forever.
async fn serve(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let mut http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    http.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    http.http2().timer(hyper_util::rt::TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let h1 = Arc::new(http.clone().http1_only());
    let h2 = Arc::new(http.http2_only());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Acks are small: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let (h1, h2, watcher, stop) = (Arc::clone(&h1), Arc::clone(&h2), graceful.watcher(), stop.clone());
        tokio::spawn(async move {
            let http2 = tokio::select! {
                () = stop.cancelled() => return,
                sniffed = tokio::time::timeout(HEADER_TIMEOUT, is_http2(&tcp)) => match sniffed {
                    Ok(Ok(http2)) => http2,
                    // Silent, or gone: nothing to answer.
                    _ => return,
                },
            };
            let io = hyper_util::rt::TokioIo::new(tcp);
            let http = if http2 { h2 } else { h1 };
            if let Err(e) = watcher.watch(http.serve_connection(io, service).into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Whether the connection opens with HTTP/2's preface, looking without consuming.
async fn is_http2(tcp: &tokio::net::TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface so far: `peek` would return at once with the same bytes.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
