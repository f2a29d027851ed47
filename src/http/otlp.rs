//! OTLP ingest over HTTP (`POST /v1/traces`, `/v1/logs`, `/v1/metrics`; protobuf or JSON) and
//! gRPC (`TraceService`, `LogsService`, `MetricsService` `Export`, on the same port over HTTP/2),
//! per `OTLP.md`. The three signals share everything but what a request becomes: spans and log
//! records are mapped to events and stored; metrics are counted and answered as not kept.
//!
//! gRPC is served here rather than by a gRPC framework: the methods are unary, their framing is
//! five bytes, and serving them as ordinary routes keeps the Host, Origin and token checks, the
//! limits and the back-pressure of every other route.

use super::body::Charge;
use super::error::is_overload;
use super::state::AppState;
use super::ApiError;
use crate::otlp::{self, DecodeError, Encoding, Mapped, MAX_OTLP_BYTES};
use crate::store::{Outcome, StoreError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What an export carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    pub(crate) fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }

    pub(crate) fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        }
    }

    /// What `partial_success` counts.
    fn noun(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Logs => "log records",
            Signal::Metrics => "data points",
        }
    }

    /// The count's name in OTLP/JSON's `partialSuccess`.
    fn json_count(self) -> &'static str {
        match self {
            Signal::Traces => "rejectedSpans",
            Signal::Logs => "rejectedLogRecords",
            Signal::Metrics => "rejectedDataPoints",
        }
    }
}

macro_rules! handlers {
    ($($http:ident, $grpc:ident => $signal:expr;)*) => {$(
        pub(crate) async fn $http(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
            http_export($signal, app, headers, body).await
        }
        pub(crate) async fn $grpc(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
            grpc_export($signal, app, headers, body).await
        }
    )*};
}

handlers! {
    http_traces, grpc_traces => Signal::Traces;
    http_logs, grpc_logs => Signal::Logs;
    http_metrics, grpc_metrics => Signal::Metrics;
}

/// Why an export failed, before it is put in the request's encoding.
enum Failure {
    /// The body cannot be used (400 / `INVALID_ARGUMENT`): do not retry.
    Invalid(String),
    TooLarge(String),
    /// Retry later (503 / `UNAVAILABLE`).
    Overloaded(String),
    /// Retry later, and the body may not have been read to its end.
    Saturated(String),
    Internal(String),
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge(_) => Failure::TooLarge(e.to_string()),
            DecodeError::NoRoom => Failure::Overloaded(super::body::saturated().to_string()),
            _ => Failure::Invalid(e.to_string()),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if is_overload(&e) {
            Failure::Overloaded(format!("the collector cannot store this export now ({e}); retry shortly"))
        } else {
            tracing::error!(error = %e, "OTLP export failed");
            Failure::Internal("internal error; see the collector's log".into())
        }
    }
}

/// `POST /v1/traces`, `/v1/logs`, `/v1/metrics`.
async fn http_export(signal: Signal, app: AppState, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let encoding = match essence.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        other => {
            return ApiError::UnsupportedMediaType(format!(
                "content type {:?} is not accepted on {}: send application/x-protobuf or application/json (OTLP/HTTP)",
                other.unwrap_or(""),
                signal.http_path()
            ))
            .into_response()
        }
    };
    let result = async {
        let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase()) {
            None => false,
            Some(e) if e == "gzip" => true,
            Some(e) if e == "identity" => false,
            Some(e) => {
                return Err(Failure::Invalid(format!("content encoding {e:?} is not supported: send gzip or none")))
            }
        };
        let mut charge = app.ingest.charge();
        let raw = read_body(&headers, body, &mut charge).await?;
        handle(&app, signal, raw, gzip, encoding, charge).await
    }
    .await;
    app.metrics.observe_ingest_latency(started.elapsed().as_secs_f64());
    match result {
        Ok(partial) => {
            let body = match encoding {
                Encoding::Protobuf => prost::Message::encode_to_vec(&response(partial)),
                Encoding::Json => json_response(signal, partial).into_bytes(),
            };
            encoded(StatusCode::OK, encoding, body)
        }
        Err(f) => {
            let mut close = false;
            let (status, code, message) = match f {
                Failure::Invalid(m) => (StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, m),
                Failure::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, m),
                Failure::Overloaded(m) => (StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, m),
                Failure::Saturated(m) => {
                    close = true;
                    (StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, m)
                }
                Failure::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, GRPC_INTERNAL, m),
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                app.metrics.overload_rejections.fetch_add(1, Ordering::Relaxed);
            }
            let body = match encoding {
                Encoding::Protobuf => prost::Message::encode_to_vec(&RpcStatus { code, message }),
                Encoding::Json => serde_json::json!({ "code": code, "message": message }).to_string().into_bytes(),
            };
            let mut resp = encoded(status, encoding, body);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            if status == StatusCode::PAYLOAD_TOO_LARGE || close {
                // The rest of the body may not have been read: the connection cannot be reused.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    }
}

/// `Export` over gRPC: one length-prefixed message in, one out, the status in the trailers.
async fn grpc_export(signal: Signal, app: AppState, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+proto"));
    if !grpc {
        return ApiError::UnsupportedMediaType("gRPC requests must have content type application/grpc".into())
            .into_response();
    }
    let result = async {
        let mut charge = app.ingest.charge();
        let raw = read_body(&headers, body, &mut charge).await?;
        let gzip = unframe(&raw, headers.get("grpc-encoding").and_then(|v| v.to_str().ok()))?;
        handle(&app, signal, raw.slice(5..), gzip, Encoding::Protobuf, charge).await
    }
    .await;
    app.metrics.observe_ingest_latency(started.elapsed().as_secs_f64());
    match result {
        Ok(partial) => {
            let msg = prost::Message::encode_to_vec(&response(partial));
            let mut frame = BytesMut::with_capacity(5 + msg.len());
            frame.put_u8(0);
            frame.put_u32(msg.len() as u32);
            frame.put_slice(&msg);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames =
                [Ok::<_, std::convert::Infallible>(Frame::data(frame.freeze())), Ok(Frame::trailers(trailers))];
            let body = Body::new(StreamBody::new(futures_util::stream::iter(frames)));
            let mut resp = Response::new(body);
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            resp
        }
        Err(f) => {
            let (code, message) = match f {
                Failure::Invalid(m) => (GRPC_INVALID_ARGUMENT, m),
                Failure::TooLarge(m) => (GRPC_RESOURCE_EXHAUSTED, m),
                Failure::Overloaded(m) | Failure::Saturated(m) => {
                    app.metrics.overload_rejections.fetch_add(1, Ordering::Relaxed);
                    (GRPC_UNAVAILABLE, m)
                }
                Failure::Internal(m) => (GRPC_INTERNAL, m),
            };
            // A trailers-only answer: the status travels in the headers.
            let mut resp = Response::new(Body::empty());
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(code));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
                h.insert("grpc-message", v);
            }
            resp
        }
    }
}

const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_INTERNAL: i32 = 13;
const GRPC_UNAVAILABLE: i32 = 14;

/// Checks the framing of a unary gRPC request's one message (after its 5-byte prefix); true if
/// it is gzip-compressed.
fn unframe(body: &[u8], encoding: Option<&str>) -> Result<bool, Failure> {
    if body.len() < 5 {
        return Err(Failure::Invalid("the gRPC message is truncated (no 5-byte prefix)".into()));
    }
    let compressed = match body[0] {
        0 => false,
        1 => true,
        flag => return Err(Failure::Invalid(format!("the gRPC compressed flag is {flag}; it must be 0 or 1"))),
    };
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 != len {
        return Err(Failure::Invalid(format!(
            "the gRPC message says {len} bytes but {} follow (one message per request)",
            body.len() - 5
        )));
    }
    match (compressed, encoding) {
        (false, _) => Ok(false),
        (true, Some("gzip")) => Ok(true),
        (true, other) => Err(Failure::Invalid(format!(
            "the message is compressed with grpc-encoding {:?}; only gzip is supported",
            other.unwrap_or("")
        ))),
    }
}

async fn read_body(headers: &HeaderMap, body: Body, charge: &mut Charge) -> Result<Bytes, Failure> {
    // gRPC adds a 5-byte prefix to the 16 MiB a request may hold.
    super::body::read(headers, body, MAX_OTLP_BYTES + 5, charge).await.map_err(|e| match e {
        ApiError::BodyTooLarge => Failure::TooLarge(DecodeError::TooLarge(false).to_string()),
        ApiError::Saturated(m) => Failure::Saturated(m),
        other => Failure::Invalid(other.to_string()),
    })
}

/// What a request becomes, and the answer to it.
async fn handle(
    app: &AppState,
    signal: Signal,
    raw: Bytes,
    gzip: bool,
    encoding: Encoding,
    charge: Charge,
) -> Result<Partial, Failure> {
    match decode(app, signal, raw, gzip, encoding, charge).await? {
        Decoded::Events(derived) => export(app, signal, derived).await,
        Decoded::Points(points) => Ok(Partial {
            rejected: points.points as i64,
            message: if points.points > 0 || points.unread > 0 { points.message() } else { String::new() },
        }),
    }
}

/// A request's events, and the memory they hold until they are stored.
struct Derived {
    mapped: Mapped,
    _charge: Charge,
}

enum Decoded {
    Events(Derived),
    /// A metrics request: counted, not kept.
    Points(otlp::Points),
}

/// Inflates, decodes and maps a request on the blocking pool (a 16 MiB request is a few hundred
/// milliseconds of work), holding each step's memory against the request's charge; the charge
/// goes with the events until they are stored.
async fn decode(
    app: &AppState,
    signal: Signal,
    raw: Bytes,
    gzip: bool,
    encoding: Encoding,
    mut charge: Charge,
) -> Result<Decoded, Failure> {
    let prices = Arc::clone(&app.prices);
    let hooked = Arc::clone(&app.hooked);
    tokio::task::spawn_blocking(move || {
        let compressed = if gzip { raw.len() } else { 0 };
        let body = if gzip {
            Bytes::from(otlp::gunzip(&raw, MAX_OTLP_BYTES, &mut |n| charge.hold(compressed + n))?)
        } else {
            raw
        };
        let price = |model: &str, input: i64, output: i64| prices.lookup(model).map(|p| p.cost(input, output));
        let reserve = &mut |n| charge.hold(compressed + n);
        let mapped = match signal {
            Signal::Traces => otlp::map_request(otlp::spans(&body, encoding, reserve)?, &price),
            Signal::Logs => otlp::map_logs(otlp::records(&body, encoding, reserve)?, &price, &|id| hooked.contains(id)),
            Signal::Metrics => return Ok(Decoded::Points(otlp::data_points(&body, encoding)?)),
        };
        drop(body);
        let derived: usize =
            mapped.events.iter().map(|e| e.raw().len() + std::mem::size_of::<crate::model::Event>()).sum();
        if !charge.add(derived) {
            return Err(DecodeError::NoRoom.into());
        }
        Ok(Decoded::Events(Derived { mapped, _charge: charge }))
    })
    .await
    .map_err(|e| Failure::Internal(format!("decoding task failed: {e}")))?
}

/// Derives and stores the request's events; answers with the spans that could not be used.
/// Acknowledged only once they are committed, like `POST /events`.
async fn export(app: &AppState, signal: Signal, derived: Derived) -> Result<Partial, Failure> {
    let Derived { mapped: Mapped { events, origin, items, mut rejected, not_kept }, _charge } = derived;
    let outcomes = if events.is_empty() { Vec::new() } else { app.store.ingest(events).await? };
    let (mut stored, mut duplicates) = (0u64, 0u64);
    for (outcome, span) in outcomes.iter().zip(&origin) {
        match outcome {
            Outcome::Stored => stored += 1,
            Outcome::Duplicate => duplicates += 1,
            Outcome::Conflict => {
                if let Some(i) = *span {
                    let noun = if signal == Signal::Logs { "log record" } else { "span" };
                    rejected.reject(i, || format!("{noun} {i}: its events could not be placed in the session"));
                }
            }
        }
    }
    let m = &app.metrics;
    m.events_accepted.fetch_add(stored, Ordering::Relaxed);
    m.events_duplicate.fetch_add(duplicates, Ordering::Relaxed);
    let (accepted, refused) = match signal {
        Signal::Logs => (&m.otlp_records_accepted, &m.otlp_records_rejected),
        _ => (&m.otlp_spans_accepted, &m.otlp_spans_rejected),
    };
    accepted.fetch_add((items - rejected.count()) as u64, Ordering::Relaxed);
    m.otlp_spans_not_kept.fetch_add(not_kept as u64, Ordering::Relaxed);
    refused.fetch_add(rejected.count() as u64, Ordering::Relaxed);
    if items > 0 && rejected.count() == items {
        // Nothing was usable: a client error the exporter should not retry.
        return Err(Failure::Invalid(rejected.summary(items, signal.noun())));
    }
    Ok(Partial {
        rejected: rejected.count() as i64,
        message: if rejected.is_empty() { String::new() } else { rejected.summary(items, signal.noun()) },
    })
}

struct Partial {
    rejected: i64,
    message: String,
}

/// `Export*ServiceResponse`: the three signals' responses are one message on the wire (a
/// `partial_success` of a count and a message), whatever their field names.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

fn response(p: Partial) -> ExportResponse {
    ExportResponse {
        partial_success: (p.rejected > 0 || !p.message.is_empty())
            .then_some(PartialSuccess { rejected: p.rejected, error_message: p.message }),
    }
}

/// OTLP/JSON: `{}` on full success (the generated types would write `"partialSuccess":null`);
/// int64 as a string, as the protobuf JSON mapping has it.
fn json_response(signal: Signal, p: Partial) -> String {
    if p.rejected == 0 && p.message.is_empty() {
        return "{}".into();
    }
    serde_json::json!({ "partialSuccess": { signal.json_count(): p.rejected.to_string(), "errorMessage": p.message } })
        .to_string()
}

fn encoded(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    let ct = match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response()
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC's `grpc-message` is percent-encoded UTF-8.
fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
