//! One webhook request: `POST` over http, or https with rustls (the ring provider the PostgreSQL
//! connections already use) and the system's root certificates, HTTP/1.1 by hyper's client
//! connection, a fresh connection each time.
//!
//! Why not a client crate: reqwest and hyper-util's pooled client would each bring TLS features
//! (aws-lc by default) and a redirect policy to turn off, for a few requests a minute. A request
//! here is a connect, a handshake and one exchange, all within [`TIMEOUT`]; a redirect is never
//! followed (a 3xx is an answer like any non-2xx), so a delivery can never be sent on to
//! another scheme or host; the response body is never read. Failures say what happened (refused,
//! timed out, the status) and never the URL, whose path holds most webhooks' token.

use super::Endpoint;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The whole attempt: resolving, connecting, the TLS handshake, the request and the answer's head.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an attempt failed, in words that never hold the URL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("answered {0} (aop does not follow redirects: set url to where this one points)")]
    Redirect(String),
    #[error("answered {0}")]
    Status(String),
}

/// Sends requests; one per process is enough (the TLS configuration is shared and loaded once,
/// the first time an https target is sent to).
#[derive(Default)]
pub struct Sender {
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

/// An error with its causes (hyper keeps what happened, "connection reset", in its source).
fn full(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// `200 OK`, `503 Service Unavailable`.
fn status_text(s: hyper::StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

/// A client TLS configuration with the system's roots (which honour `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`), on the ring provider named here rather than a process-wide default.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err("no root certificates found on this system (set SSL_CERT_FILE to a PEM bundle)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Sender {
    /// `POST`s `body` to the endpoint with `headers` (besides `Host`, `Content-Type: application/json`
    /// and `User-Agent`); `Ok` with the status for a 2xx answer.
    pub(crate) async fn post(
        &self,
        to: &Endpoint,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<u16, SendError> {
        match tokio::time::timeout(TIMEOUT, self.attempt(to, headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout),
        }
    }

    async fn attempt(&self, to: &Endpoint, headers: &[(&'static str, String)], body: String) -> Result<u16, SendError> {
        let mut req = hyper::Request::post(to.path_and_query.as_str())
            .header(HOST, to.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("aop/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Http(e.to_string()))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|e| SendError::Http(e.to_string()))?;
            req.headers_mut().insert(HeaderName::from_static(name), value);
        }
        let stream = connect(to).await?;
        let status = if to.https {
            let tls = self.tls.get_or_init(tls_config).clone().map_err(SendError::Tls)?;
            let name = ServerName::try_from(to.host.clone()).map_err(|e| SendError::Tls(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await
                .map_err(|e| SendError::Tls(full(&e)))?;
            exchange(stream, req).await?
        } else {
            exchange(stream, req).await?
        };
        if status.is_success() {
            Ok(status.as_u16())
        } else if status.is_redirection() {
            Err(SendError::Redirect(status_text(status)))
        } else {
            Err(SendError::Status(status_text(status)))
        }
    }
}

/// A connection to the first of the host's addresses that takes one.
async fn connect(to: &Endpoint) -> Result<TcpStream, SendError> {
    let addrs = tokio::net::lookup_host((to.host.as_str(), to.port))
        .await
        .map_err(|e| SendError::Resolve { host: to.host.clone(), reason: e.to_string() })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // The request is written in one piece and then waited for.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => SendError::Connect(e.to_string()),
        None => SendError::Resolve { host: to.host.clone(), reason: "no address".into() },
    })
}

/// One request on a fresh HTTP/1.1 connection; the answer's head is all that is read.
async fn exchange<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<hyper::StatusCode, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| SendError::Http(full(&e)))?;
    let mut conn = std::pin::pin!(conn);
    // The connection is driven here, beside the request, and dropped with it.
    tokio::select! {
        answer = sender.send_request(req) => answer.map(|r| r.status()).map_err(|e| SendError::Http(full(&e))),
        ended = &mut conn => Err(SendError::Http(match ended {
            Ok(()) => "the connection closed before an answer".into(),
            Err(e) => full(&e),
        })),
    }
}
