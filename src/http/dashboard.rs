//! The dashboard's files, embedded in the binary at build time (see `build.rs`), with their
//! content types set explicitly.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

// `ASSETS: &[(&str, &[u8])]`, one entry per file under `dashboard/`.
include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _)| *n == name) {
        Some((n, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type(n))),
                // The files change only with the binary; revalidate so an upgrade shows at once.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *bytes,
        )
            .into_response(),
        None => super::error::ApiError::NotFound(format!("no dashboard file {name:?}")).into_response(),
    }
}

pub(crate) async fn index() -> Response {
    serve("index.html")
}

pub(crate) async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

pub(crate) async fn redirect() -> Response {
    Redirect::permanent("/dashboard/").into_response()
}
