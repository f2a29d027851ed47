//! A webhook receiver of the tests' own: a real HTTP server (or HTTPS, with a certificate of the
//! test's CA) on a loopback port that records every request it gets and answers what the test
//! says (200, a run of 500s or redirects first), and can be taken down (its port closed, so
//! connections are refused) and brought back on the same port.

use super::PATIENCE;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// One request as the receiver got it, with what it answered.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) answered: u16,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("a delivery's body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body))
        })
    }

    /// `X-Aop-Delivery`, which every delivery carries.
    pub(crate) fn delivery(&self) -> String {
        self.header("x-aop-delivery").unwrap_or_else(|| panic!("no X-Aop-Delivery: {:?}", self.headers)).to_owned()
    }

    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// What [`Receiver::answer_next`] takes for "keep the request waiting, unanswered".
pub(crate) const HANG: u16 = 0;

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Received>>,
    /// Requests still to be answered `failure` (500 unless told otherwise).
    failing: AtomicUsize,
    failure: AtomicU16,
}

pub(crate) struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
    /// Served over TLS with this configuration.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Receiver {
    /// A receiver listening on a free port.
    pub(crate) async fn start() -> Receiver {
        let mut r = Receiver::down_at(free_port());
        r.up().await;
        r
    }

    /// A receiver whose port is known but closed (it is down until [`Receiver::up`]).
    pub(crate) fn down_from_the_start() -> Receiver {
        Receiver::down_at(free_port())
    }

    /// An HTTPS receiver on a free port, with the certificate and key (PEM files) given.
    pub(crate) async fn start_tls(cert: &Path, key: &Path) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut r = Receiver::down_at(free_port());
        r.tls = Some(Arc::new(config));
        r.up().await;
        r
    }

    fn down_at(addr: SocketAddr) -> Receiver {
        Receiver { addr, shared: Arc::default(), server: None, tls: None }
    }

    /// `http://127.0.0.1:<port><path>` (`https://localhost:<port><path>` over TLS).
    pub(crate) fn url(&self, path: &str) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}{path}", self.addr.port()),
            None => format!("http://{}{path}", self.addr),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next `n` requests are answered 500.
    pub(crate) fn fail_next(&self, n: usize) {
        self.answer_next(n, 500);
    }

    /// The next `n` requests are answered `status` (with a `Location` elsewhere, for redirects);
    /// [`HANG`]: not answered for a minute (recorded as they arrive, answered `0`).
    pub(crate) fn answer_next(&self, n: usize, status: u16) {
        self.shared.failure.store(status, Ordering::SeqCst);
        self.shared.failing.store(n, Ordering::SeqCst);
    }

    /// Closes the port: connections are refused until [`Receiver::up`].
    pub(crate) fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Listens again, on the same port.
    pub(crate) async fn up(&mut self) {
        let shared = Arc::clone(&self.shared);
        let elsewhere = format!("http://{}/moved", self.addr);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (shared, elsewhere) = (Arc::clone(&shared), elsewhere.clone());
            async move {
                let failing =
                    shared.failing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let status = match (failing, shared.failure.load(Ordering::SeqCst)) {
                    (false, _) => StatusCode::OK,
                    (true, HANG) => {
                        shared.got.lock().unwrap().push(Received { path, headers, body, answered: HANG });
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return (StatusCode::GATEWAY_TIMEOUT, [(axum::http::header::LOCATION, elsewhere)], "late");
                    }
                    (true, code) => StatusCode::from_u16(code).unwrap(),
                };
                shared.got.lock().unwrap().push(Received { path, headers, body, answered: status.as_u16() });
                (status, [(axum::http::header::LOCATION, elsewhere)], "ok")
            }
        });
        // The port was this receiver's a moment ago; the kernel gives it back at once.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("receiver: port {} not free yet ({e}); retrying", self.addr.port());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("receiver: cannot listen on {} again: {e}", self.addr),
            }
        };
        let Some(tls) = self.tls.clone() else {
            self.server = Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        self.server = Some(tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here: some tests are about that.
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub(crate) fn delivered(&self) -> Vec<Received> {
        self.requests().into_iter().filter(Received::ok).collect()
    }

    /// Waits (up to `patience`) until `n` requests were answered 2xx, and returns them all.
    pub(crate) async fn wait_delivered(&self, n: usize, patience: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} deliveries of {n} in {patience:?}: {:#?}",
                got.len(),
                self.requests().iter().map(|r| (r.delivery(), r.answered)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Receiver::wait_delivered`] with the usual patience.
    pub(crate) async fn wait(&self, n: usize) -> Vec<Received> {
        self.wait_delivered(n, PATIENCE).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// A loopback address with a port free a moment ago.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}
