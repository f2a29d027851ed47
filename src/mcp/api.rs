//! The collector's HTTP API, as the tools call it: in the collector, its own routes in process (no
//! socket, no second pass through the Host/Origin/token guard the `/mcp` request already passed);
//! from `aop mcp`, a running collector over keep-alive connections. Either way the tools read the
//! same documents, so an answer over stdio is the answer over HTTP.

use crate::client::{Conn, Target};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A comparison of two long runs takes seconds; nothing the tools ask takes minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read in process: a comparison of two sessions at the comparison limit.
const MAX_LOCAL_ANSWER: usize = 512 * 1024 * 1024;
/// Idle connections kept to a remote collector (an MCP client rarely runs more tools at once).
const IDLE_CONNECTIONS: usize = 4;

/// An answer: its status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The `error` of an API error body, or the start of whatever else came.
    pub(crate) fn error(&self) -> String {
        crate::client::error_message(&self.body)
    }
}

pub(crate) enum Api {
    /// The collector's own routes, without `/mcp` (so nothing refers back to itself).
    Local(axum::Router),
    Remote {
        target: Arc<Target>,
        idle: std::sync::Mutex<Vec<Conn>>,
    },
}

impl Api {
    pub(crate) fn remote(target: Target) -> Api {
        Api::Remote { target: Arc::new(target), idle: std::sync::Mutex::new(Vec::new()) }
    }

    /// `method path` with an optional JSON body. `Err` is a message for the caller: the collector
    /// could not be asked (a status, even 500, is an `Ok` answer).
    pub(crate) async fn call(&self, method: &'static str, path: &str, json: Option<&[u8]>) -> Result<Reply, String> {
        match self {
            Api::Local(router) => local(router, method, path, json).await,
            Api::Remote { target, idle } => {
                let reply = remote(target, idle, method, path, json).await?;
                if reply.status == 401 {
                    return Err(format!(
                        "the collector at {} refuses requests without its access token (HTTP 401): give aop mcp --token or AOP_TOKEN",
                        target.url
                    ));
                }
                Ok(reply)
            }
        }
    }
}

async fn local(router: &axum::Router, method: &'static str, path: &str, json: Option<&[u8]>) -> Result<Reply, String> {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if json.is_some() {
        req = req.header(axum::http::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(axum::body::Body::from(json.map(<[u8]>::to_vec).unwrap_or_default()))
        .map_err(|e| format!("bad request {method} {path}: {e}"))?;
    let resp = match router.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), MAX_LOCAL_ANSWER)
        .await
        .map_err(|e| format!("the collector's answer to {method} {path} was cut: {e}"))?;
    Ok(Reply { status, body })
}

async fn remote(
    target: &Arc<Target>,
    idle: &std::sync::Mutex<Vec<Conn>>,
    method: &'static str,
    path: &str,
    json: Option<&[u8]>,
) -> Result<Reply, String> {
    let url = &target.url;
    let content_type = json.map(|_| "application/json");
    // A kept connection may have been closed by the collector while it sat idle: a failure on
    // one is tried again, once, on a new connection.
    loop {
        let pooled = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let was_pooled = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(target)).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    return Err(format!(
                        "no collector answers at {url}: {e} (start one with `aop start`, or give --url)"
                    ))
                }
                Err(_) => {
                    return Err(format!("no collector answers at {url}: no connection within {CONNECT_TIMEOUT:?}"))
                }
            },
        };
        let ask = async {
            let r = conn.request(method, path, content_type, json.unwrap_or_default()).await?;
            Ok::<_, std::io::Error>(Reply { status: r.head.status, body: Bytes::copy_from_slice(r.body) })
        };
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, ask).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) if was_pooled => continue,
            Ok(Err(e)) => return Err(format!("the collector at {url} did not answer {method} {path}: {e}")),
            Err(_) => {
                return Err(format!("the collector at {url} did not answer {method} {path} within {REQUEST_TIMEOUT:?}"))
            }
        };
        if !conn.closed {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        return Ok(reply);
    }
}
