//! Query parameters, as handlers read them.

use super::error::ApiError;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use std::collections::HashMap;

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
