//! HTTP: the only module that knows routes, status codes and SSE framing.
//!
//! Routes are split by resource: [`events`] (ingest), [`sessions`] (reads, export, deletion,
//! alerts), [`stream`] (SSE), [`ops`] (health, metrics, index). [`security`] guards them all.

mod error;
mod events;
mod ops;
mod security;
mod sessions;
mod stream;

pub use error::ApiError;
pub use security::Security;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What every handler may use.
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
}

/// Exports served at once. Each holds about one chunk and the server's write buffer (well under
/// a MiB) while its client is slow, so this bounds what slow exports can hold in all.
pub const MAX_EXPORTS: usize = 32;

pub fn router(state: AppState, security: Security) -> Router {
    let security = Arc::new(security);
    Router::new()
        .route("/", get(ops::index))
        .route("/events", post(events::ingest))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::detail).delete(sessions::delete))
        .route("/sessions/{id}/children", get(sessions::children))
        .route("/sessions/{id}/export", get(sessions::export))
        .route("/sessions/{id}/pin", post(sessions::pin).delete(sessions::unpin))
        .route("/alerts", get(sessions::alerts))
        .route("/stream", get(stream::stream))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/dashboard", get(crate::dashboard::redirect))
        .route("/dashboard/", get(crate::dashboard::index))
        .route("/dashboard/{*name}", get(crate::dashboard::file))
        .fallback(|| async { ApiError::NotFound("no such endpoint; GET / lists them".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&security), security::guard))
        .layer(security.cors())
}

/// Query parameters, read leniently: unknown ones are ignored, malformed values are a 400.
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Params(map))
    }
}

impl Params {
    /// A non-empty parameter.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(format!("query parameter `{name}` must be an integer, got {v:?}"))
                })
            })
            .transpose()
    }

    /// `limit`, defaulted and capped.
    pub(crate) fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.int("limit")? {
            None => Ok(default),
            Some(n) if n >= 1 => Ok((n as usize).min(max)),
            Some(n) => Err(ApiError::BadRequest(format!("query parameter `limit` must be at least 1, got {n}"))),
        }
    }
}
