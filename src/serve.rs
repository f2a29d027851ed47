//! Connections, below requests: accepted up to a cap (past it, refused with an answer a client
//! can act on), told apart by their first bytes (HTTP/1.1, or HTTP/2 cleartext for OTLP/gRPC),
//! closed when idle, and drained on stop. What a request gets is [`crate::http`]'s business.
//!
//! axum's own `serve` can bound neither the time a client takes over its headers nor the number
//! of connections, hence hyper directly.

use crate::metrics::Metrics;
use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request's headers. hyper's default would leave a
/// slowloris connection open forever; agents send a request in one go. hyper starts the same
/// timer when a kept-alive HTTP/1 connection goes idle, so it is also how long one may wait
/// between requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an HTTP/2 connection may stay without an open stream: as long as an idle HTTP/1 one.
/// hyper has no such rule (its PINGs only find dead peers), so a client that answers them could
/// otherwise hold a connection forever.
const H2_IDLE: Duration = HEADER_TIMEOUT;

/// How long an idle HTTP/2 connection is given, after its GOAWAY, to close by itself: a client
/// that ignores the GOAWAY (and the PING sent with it) is then disconnected, unless it opened a
/// stream in the meantime.
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// Connections past the cap that are answered at once; more than that are closed unanswered, so
/// that refusing never costs what the cap saves.
const MAX_REFUSING: usize = 64;

/// How long a connection past the cap has to send the request it is then refused.
const REFUSAL_TIME: Duration = Duration::from_secs(5);

/// At most this much of a refused request's body is read, so that closing the connection after
/// the answer does not reset it under the answer (unread data makes the kernel send RST).
const REFUSAL_DRAIN: usize = 1 << 20;

/// File descriptors left for the collector's own use (database files, refusals, the log) when
/// the cap is lowered to fit the open-files limit.
const RESERVED_FILES: u64 = 128;

/// Accepts connections until `stop`, then lets open ones finish. At most `max_connections` are
/// served at once (fewer if the open-files limit would run out first).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    max_connections: usize,
    metrics: Arc<Metrics>,
) {
    let max = fitted_cap(max_connections, open_files_limit());
    if max < max_connections {
        tracing::info!(
            max_connections = max,
            "serving at most {max} connections at once: the open-files limit allows no more (raise it with `ulimit -n`)"
        );
    }
    metrics.connections_max.store(max as u64, Ordering::Relaxed);
    let protocols = Arc::new(Protocols::new());
    let slots = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut warned: Option<Instant> = None;
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
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let slot = Slot::new(slot, Arc::clone(&metrics));
                tokio::spawn(connection(tcp, Arc::clone(&protocols), router.clone(), stop.clone(), slot));
            }
            Err(_) => {
                metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = max,
                        "at the connection limit: refusing new connections until some close (see --max-connections)"
                    );
                }
                if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                    tokio::spawn(refuse(tcp, Arc::clone(&protocols), max, permit));
                }
            }
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: all of them back means all connections ended.
    let _ = slots.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
}

/// The cap the collector can keep: `wanted`, lowered when the open-files limit would run out
/// first, since `accept` would then fail and leave clients waiting unanswered in the backlog.
fn fitted_cap(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => wanted.min(usize::try_from(limit.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX)),
        None => wanted,
    }
}

/// The process's soft limit on open files, where the system says (Linux's `/proc`).
fn open_files_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft limit in the text of `/proc/self/limits`; `None` when it is `unlimited`.
fn parse_open_files(limits: &str) -> Option<u64> {
    limits.lines().find_map(|l| l.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
}

/// A connection's place under the cap, given back (and counted out) when the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Slot {
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Slot { _permit: permit, metrics }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// hyper's settings for each protocol.
struct Protocols {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Protocols {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
        http.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
        Protocols { h1: http.clone().http1_only(), h2: http.http2_only() }
    }

    /// The builder for a connection whose first bytes are (or are not) HTTP/2's preface. They
    /// must come within [`HEADER_TIMEOUT`], like a request's headers: hyper's own detection would
    /// wait for them forever.
    async fn pick(&self, tcp: &TcpStream) -> Option<(&auto::Builder<TokioExecutor>, bool)> {
        match tokio::time::timeout(HEADER_TIMEOUT, is_http2(tcp)).await {
            Ok(Ok(true)) => Some((&self.h2, true)),
            Ok(Ok(false)) => Some((&self.h1, false)),
            // Silent, or gone: nothing to answer.
            _ => None,
        }
    }
}

/// Serves one admitted connection until it ends, it idles out, or the collector stops.
async fn connection(tcp: TcpStream, protocols: Arc<Protocols>, router: Router, stop: CancellationToken, _slot: Slot) {
    let picked = tokio::select! {
        () = stop.cancelled() => return,
        picked = protocols.pick(&tcp) => picked,
    };
    let Some((http, http2)) = picked else { return };
    let streams = Streams::new();
    let service = Counted { router, streams: streams.clone() };
    let conn = http.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    // HTTP/1's idle time is hyper's header timeout; HTTP/2's is this.
    let idle = async {
        if http2 {
            streams.quiet_for(H2_IDLE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        ended = conn.as_mut() => return finished(ended),
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
        () = idle => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                ended = conn.as_mut() => return finished(ended),
                () = streams.quiet_for(GOAWAY_GRACE) => return,
            }
        }
    }
    finished(conn.await);
}

fn finished<E: std::fmt::Display>(ended: Result<(), E>) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection past the cap: one request gets the refusal (see
/// [`crate::http::too_many_connections`]), then the connection ends, HTTP/1.1's with
/// `Connection: close`, HTTP/2's with a GOAWAY.
async fn refuse(tcp: TcpStream, protocols: Arc<Protocols>, max: usize, _permit: OwnedSemaphorePermit) {
    let answered = async {
        let Some((http, _)) = protocols.pick(&tcp).await else { return };
        let asked = Arc::new(Notify::new());
        let service = {
            let asked = Arc::clone(&asked);
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                asked.notify_one();
                async move {
                    discard(req.body_mut()).await;
                    Ok::<_, Infallible>(crate::http::too_many_connections(&req, max))
                }
            })
        };
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = asked.notified() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, answered).await;
}

/// Reads and drops up to [`REFUSAL_DRAIN`] bytes of a body.
async fn discard(body: &mut Incoming) {
    use http_body_util::BodyExt;
    let mut read = 0;
    while read < REFUSAL_DRAIN {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

/// Whether the connection opens with HTTP/2's preface, looking without consuming.
async fn is_http2(tcp: &TcpStream) -> std::io::Result<bool> {
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

/// How many streams (requests whose answer is not yet fully sent) a connection has open.
#[derive(Clone)]
struct Streams(Arc<watch::Sender<usize>>);

impl Streams {
    fn new() -> Streams {
        Streams(Arc::new(watch::Sender::new(0)))
    }

    fn open(&self) -> OpenStream {
        self.0.send_modify(|n| *n += 1);
        OpenStream(Arc::clone(&self.0))
    }

    /// Resolves once no stream has been open for `quiet`; a stream opening or closing starts the
    /// wait again.
    async fn quiet_for(&self, quiet: Duration) {
        let mut seen = self.0.subscribe();
        loop {
            let open = *seen.borrow_and_update();
            // `changed` cannot fail: `self` holds a sender.
            if open > 0 {
                let _ = seen.changed().await;
            } else if tokio::time::timeout(quiet, seen.changed()).await.is_err() {
                return;
            }
        }
    }
}

/// One open stream, counted until dropped: with the answer's body once it is fully sent, or
/// with the request's handling when the client gives up first.
struct OpenStream(Arc<watch::Sender<usize>>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The router, with each request counted as an open stream of its connection.
#[derive(Clone)]
struct Counted {
    router: Router,
    streams: Streams,
}

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let open = self.streams.open();
        let answer = self.router.clone().oneshot(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|body| CountedBody { body, _open: open }))
        })
    }
}

/// An answer's body that keeps its stream counted as open until it is dropped.
struct CountedBody {
    body: Body,
    _open: OpenStream,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        assert_eq!(fitted_cap(16_384, None), 16_384);
        assert_eq!(fitted_cap(16_384, Some(1_048_576)), 16_384);
        assert_eq!(fitted_cap(16_384, Some(1024)), 1024 - RESERVED_FILES as usize);
        assert_eq!(fitted_cap(100, Some(1024)), 100);
        assert_eq!(fitted_cap(100, Some(16)), 1);
    }

    #[test]
    fn the_open_files_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63431                63431                processes \n\
                      Max open files            1024                 524288               files     \n\
                      Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_open_files(limits), Some(1024));
        assert_eq!(parse_open_files("Max open files            unlimited            unlimited            files"), None);
        assert_eq!(parse_open_files(""), None);
    }
}
