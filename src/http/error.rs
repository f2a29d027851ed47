//! The one place where failures become HTTP statuses.

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    /// The body is over the request limit and was not read to its end: the connection cannot be
    /// reused, and the answer says so.
    #[error("request body is larger than the 16 MiB batch limit")]
    BodyTooLarge,
    /// The body did not arrive in time: a stuck or hostile client must not hold a request open.
    #[error("the request body did not arrive within 30 s")]
    BodyTimeout,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A well-formed request the collector will not carry out, e.g. a comparison past its limit.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("missing or wrong access token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("{0}")]
    ForbiddenHost(String),
    /// A state-changing request from a web page whose origin may not write.
    #[error("{0}")]
    ForbiddenOrigin(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A bounded resource other than the store is exhausted: retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The memory budget of requests in flight is spent, perhaps before the body was read to
    /// its end: retry shortly, on a new connection.
    #[error("{0}")]
    Saturated(String),
    /// A bug of ours, not the caller's: 500, with the cause in the log only.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) | ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::Saturated(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) if is_overload(e) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(StoreError::BadCursor) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Store failures a client should retry later (503 with `Retry-After`).
pub(crate) fn is_overload(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::QueueFull | StoreError::Busy | StoreError::Full | StoreError::Closed | StoreError::Unavailable(_)
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // 5xx bodies stay opaque; the cause goes to the log.
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %self, "internal error");
                "internal error; see the collector's log".to_owned()
            }
            ApiError::Store(StoreError::QueueFull) => {
                "the collector is overloaded (write queue full); retry shortly".to_owned()
            }
            ApiError::Store(StoreError::Busy) => "the database is busy; retry shortly".to_owned(),
            ApiError::Store(StoreError::Unavailable(_)) => "the database is unavailable; retry shortly".to_owned(),
            ApiError::Store(StoreError::Full) => "the collector cannot store events: its disk is full".to_owned(),
            other => other.to_string(),
        };
        let mut resp = (status, Json(serde_json::json!({ "ok": false, "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::BodyTooLarge | ApiError::BodyTimeout | ApiError::Saturated(_)) {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
