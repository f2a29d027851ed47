//! Who may talk to the collector: the Host check (DNS rebinding), the Origin check (cross-site
//! writes), the access token, and CORS; plus the headers that keep the dashboard out of other
//! sites' frames, and the answer on a connection past the collector's cap. The other half of the
//! cross-site defence is in the handlers that take a body: they require a JSON type, which a page
//! cannot send to another origin without a preflight.

use super::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, Clone, Default)]
pub struct Security {
    /// When set, every endpoint but `/health` and the dashboard's static files needs it.
    pub token: Option<String>,
    /// Host names (without port) accepted besides loopback names, e.g. a LAN name.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed by CORS besides `http://localhost:*` and `http://127.0.0.1:*`.
    pub cors_origins: Vec<String>,
    /// The address the server is bound to; its literal is an accepted Host.
    pub bind_ip: Option<IpAddr>,
}

/// Loopback names: what a browser can only reach on this machine.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_part(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    value.rsplit_once(':').map_or(value, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { value })
}

impl Security {
    fn host_allowed(&self, host: &str) -> bool {
        let host = host_part(host);
        is_loopback_name(host)
            || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || self.bind_ip.is_some_and(|ip| host.parse::<IpAddr>().is_ok_and(|h| h == ip))
    }

    fn token_ok(&self, req: &Request) -> bool {
        let Some(want) = &self.token else { return true };
        // RFC 9110: the scheme is case-insensitive (`BEARER x` is as good as `Bearer x`).
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if let Some(given) = bearer {
            return given.as_bytes().ct_eq(want.as_bytes()).into();
        }
        // EventSource cannot send headers: the dashboard passes the token as `access_token`,
        // percent-encoded (a hand-written URL may not be, so the raw value counts too).
        let Some(raw) = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
        else {
            return false;
        };
        let raw_ok: bool = raw.as_bytes().ct_eq(want.as_bytes()).into();
        let decoded_ok: bool = percent_decode(raw).ct_eq(want.as_bytes()).into();
        raw_ok | decoded_ok
    }

    /// Origins CORS lets read answers: loopback pages and configured ones.
    fn cors_allows(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|o| o == origin) || local_origin(origin)
    }

    /// Whether a request carrying `Origin` may change state: a CORS-allowed origin, or the
    /// collector's own (the dashboard served under an `--allow-host` name).
    fn origin_may_write(&self, origin: &str, host: &str) -> bool {
        if self.cors_allows(origin) {
            return true;
        }
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
    }

    pub(crate) fn cors(self: &Arc<Self>) -> CorsLayer {
        let me = Arc::clone(self);
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|o| me.cors_allows(o))
            }))
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            // Browser OTLP exporters may gzip their bodies, and read `Retry-After` to back off.
            // MCP's browser clients (an inspector on localhost) send its version and session headers.
            .allow_headers([
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("mcp-protocol-version"),
                HeaderName::from_static("mcp-session-id"),
            ])
            .expose_headers([header::RETRY_AFTER, HeaderName::from_static("mcp-session-id")])
            .max_age(std::time::Duration::from_secs(600))
    }
}

/// `%XX` escapes and `+` (a space in a query string) decoded; malformed escapes kept as they are.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

/// `http://localhost:<port>`, `http://127.0.0.1:<port>` (and https, and `[::1]`).
fn local_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    if rest.contains('/') {
        return false;
    }
    let host = host_part(rest);
    host == "localhost" || host == "127.0.0.1" || host == "::1"
}

/// Whether the caller proved it holds the token (always true when none is configured): read by
/// handlers that show more to trusted callers, such as `/health`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trusted(pub(crate) bool);

/// The authority a request is for, and the field that named it (for the refusal's message).
struct Target<'a> {
    authority: &'a str,
    from: &'static str,
}

/// Where a request is going. HTTP/1 needs exactly one `Host` (RFC 9112 §3.2), but a target in
/// absolute form (`GET http://name/path`) names the authority itself, and the server must use it
/// and ignore `Host` (§3.2.2). HTTP/2 names it in `:authority` (hyper puts it in the URI), and a
/// `Host` beside it must agree (RFC 9113 §8.3.1): the check must not pass on one name while the
/// request is meant for the other.
fn the_target(req: &Request) -> Result<Target<'_>, ApiError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("the request has more than one Host header".into())),
        // A Host that is not visible ASCII is no name of ours: refuse it rather than skip the check.
        (host, _) => host.map(|h| h.to_str().unwrap_or("\u{fffd}")),
    };
    let in_target = req.uri().authority().map(|a| a.as_str());
    if req.version() == Version::HTTP_2 {
        return match (in_target, host) {
            (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => Err(ApiError::BadRequest(format!(
                "the request's :authority {a:?} and its Host header {h:?} disagree; send one, or the same in both"
            ))),
            (Some(authority), _) => Ok(Target { authority, from: ":authority" }),
            (None, Some(authority)) => Ok(Target { authority, from: "Host" }),
            (None, None) => Err(ApiError::BadRequest("the request has no :authority and no Host header".into())),
        };
    }
    let Some(host) = host else { return Err(ApiError::BadRequest("the request has no Host header".into())) };
    Ok(match in_target {
        Some(authority) => Target { authority, from: "the request target's host" },
        None => Target { authority: host, from: "Host" },
    })
}

/// The answer to a request on a connection past the collector's cap: `503` with `Retry-After`
/// and a JSON error (HTTP/1.1 closes the connection after it), or to a gRPC call `UNAVAILABLE`,
/// which gRPC clients report with its message and OTLP exporters retry.
pub fn too_many_connections<B>(req: &axum::http::Request<B>, max: usize) -> Response {
    let message = format!("the collector is at its limit of {max} open connections (--max-connections); retry shortly");
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        // A trailers-only answer: the status travels in the headers. The message is plain ASCII,
        // which `grpc-message` takes as it is.
        let mut resp = Response::new(Body::empty());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static("14")); // UNAVAILABLE
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", v);
        }
        return resp;
    }
    let mut resp = ApiError::Unavailable(message).into_response();
    if req.version() < Version::HTTP_2 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Methods that only read: everything else changes state and gets the cross-site checks.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub(crate) async fn guard(State(sec): State<Arc<Security>>, req: Request, next: Next) -> Response {
    let mut resp = match check(&sec, req, next).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    // Another page must not frame the dashboard (and its Delete button) to click through it.
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

async fn check(sec: &Security, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let Target { authority: host, from } = the_target(&req)?;
    if !sec.host_allowed(host) {
        return Err(ApiError::ForbiddenHost(format!(
            "{from} {host:?} is not a name of this collector; add it with --allow-host if you meant it (this check stops DNS rebinding)"
        )));
    }
    // MCP's transport rules refuse a foreign Origin on every request to its endpoint, reads too.
    if !is_safe(req.method()) || req.uri().path() == super::MCP_PATH {
        // Any page the user visits can send a write (a no-cors fetch, a beacon, a form) even
        // though it cannot read the answer: refuse foreign origins before anything is stored.
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("\u{fffd}");
            if !sec.origin_may_write(origin, host) {
                return Err(ApiError::ForbiddenOrigin(format!(
                    "requests from origin {origin:?} may not change this collector; add it with --cors-origin if you meant it"
                )));
            }
        }
    }
    let path = req.uri().path();
    let public =
        path == "/health" || path == "/dashboard" || path.starts_with("/dashboard/") || req.method() == Method::OPTIONS;
    let trusted = sec.token_ok(&req);
    if !public && !trusted {
        return Err(ApiError::Unauthorized);
    }
    req.extensions_mut().insert(Trusted(trusted));
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let sec = Security {
            allowed_hosts: vec!["box.lan".into()],
            bind_ip: Some("10.0.0.5".parse().unwrap()),
            ..Default::default()
        };
        for (host, ok) in [
            ("localhost:4317", true),
            ("LOCALHOST", true),
            ("127.0.0.1:4317", true),
            ("127.8.9.10", true),
            ("[::1]:4317", true),
            ("app.localhost:80", true),
            ("box.lan:4317", true),
            ("10.0.0.5:4317", true),
            ("evil.example:4317", false),
            ("localhost.evil.example", false),
            ("10.0.0.6", false),
        ] {
            assert_eq!(sec.host_allowed(host), ok, "{host}");
        }
    }

    #[test]
    fn targets() {
        use axum::body::Body;
        const H1: Version = Version::HTTP_11;
        const H2: Version = Version::HTTP_2;
        // (version, target, Host headers, the authority checked and where it came from)
        type Case<'a> = (Version, &'a str, &'a [&'a str], Option<(&'a str, &'a str)>);
        let cases: [Case<'_>; 12] = [
            (H1, "/x", &["a:1"], Some(("a:1", "Host"))),
            (H1, "/x", &[], None),
            (H1, "/x", &["a:1", "a:1"], None),
            (H1, "http://b:2/x", &["a:1"], Some(("b:2", "the request target's host"))),
            (H1, "http://b:2/x", &[], None),
            (Version::HTTP_10, "/x", &["a"], Some(("a", "Host"))),
            (H2, "http://a:1/x", &[], Some(("a:1", ":authority"))),
            (H2, "http://a:1/x", &["A:1"], Some(("a:1", ":authority"))),
            (H2, "http://a:1/x", &["b:1"], None),
            (H2, "http://a:1/x", &["a:2"], None),
            (H2, "/x", &["a:1"], Some(("a:1", "Host"))),
            (H2, "/x", &[], None),
        ];
        for (version, uri, hosts, want) in cases {
            let mut req = Request::builder().version(version).uri(uri);
            for h in hosts {
                req = req.header(header::HOST, *h);
            }
            let req = req.body(Body::empty()).unwrap();
            let got = the_target(&req).ok().map(|t| (t.authority, t.from));
            assert_eq!(got, want, "{version:?} {uri} with Host {hosts:?}");
        }
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(percent_decode("q%2B4Z%2Fw9%3D"), b"q+4Z/w9=");
        assert_eq!(percent_decode("a+b%20c"), b"a b c");
        assert_eq!(percent_decode("bad%zz%4"), b"bad%zz%4");
        assert_eq!(percent_decode("%41"), b"A");
    }

    #[test]
    fn origins_that_may_write() {
        let sec = Security { cors_origins: vec!["https://dash.example".into()], ..Default::default() };
        for (origin, host, ok) in [
            ("http://localhost:3000", "localhost:4317", true),
            ("https://dash.example", "localhost:4317", true),
            ("http://box.lan:4317", "box.lan:4317", true),
            ("http://BOX.lan:4317", "box.LAN:4317", true),
            ("http://box.lan:4318", "box.lan:4317", false),
            ("http://evil.example", "localhost:4317", false),
            ("null", "localhost:4317", false),
            ("file://", "localhost:4317", false),
        ] {
            assert_eq!(sec.origin_may_write(origin, host), ok, "{origin} to {host}");
        }
    }

    #[test]
    fn origins() {
        for (origin, ok) in [
            ("http://localhost:3000", true),
            ("http://127.0.0.1:5173", true),
            ("http://localhost", true),
            ("http://[::1]:8080", true),
            ("http://localhost.evil.example", false),
            ("http://evil.example", false),
            ("null", false),
        ] {
            assert_eq!(local_origin(origin), ok, "{origin}");
        }
    }
}
