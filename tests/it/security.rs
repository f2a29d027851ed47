//! Who may talk to the collector: the Host check against DNS rebinding, CORS, the access token;
//! and what never leaves it: tokens and payloads in its output, traces readable by other users.

use crate::support::*;
use reqwest::header::{AUTHORIZATION, HOST};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every route, with a body where it takes one.
fn endpoints() -> Vec<(Method, &'static str, Option<String>)> {
    let ev = event("victim", 2, "cognition.thought", json!({"content": "injected"})).to_string();
    vec![
        (Method::GET, "/", None),
        (Method::POST, "/events", Some(ev)),
        (Method::GET, "/sessions", None),
        (Method::GET, "/sessions/victim", None),
        (Method::GET, "/sessions/victim/children", None),
        (Method::GET, "/sessions/victim/export", None),
        (Method::DELETE, "/sessions/victim", None),
        (Method::GET, "/alerts", None),
        (Method::GET, "/stream", None),
        (Method::GET, "/health", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/dashboard/", None),
        (Method::GET, "/dashboard", None),
    ]
}

fn send(server: &TestServer, method: &Method, path: &str, body: &Option<String>) -> reqwest::RequestBuilder {
    let req = server.request(method.clone(), path);
    match body {
        Some(b) => req.header("content-type", "application/json").body(b.clone()),
        None => req,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused_on_every_endpoint() {
    let server = TestServer::start().await;
    let victim = event("victim", 1, "session.started", json!({"goal": "private"}));
    server.ingest_one(&victim).await;
    let port = server.port();
    let foreign = [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("0.0.0.0:{port}"),
        format!("192.168.1.1:{port}"),
    ];

    for host in &foreign {
        for (method, path, body) in endpoints() {
            let req = send(&server, &method, path, &body).header(HOST, host);
            let (status, _, json) = TestServer::send_json(req).await;
            let case = format!("{method} {path} with Host {host}");
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{case}: {json}");
            assert_eq!(json["ok"], false, "{case}");
            assert!(json["error"].as_str().is_some_and(|e| e.contains("Host")), "{case}: {json}");
        }
    }
    // Nothing was written or deleted through them.
    assert_eq!(server.events("victim").await, vec![victim]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_names_and_allowed_hosts_are_accepted() {
    let server = Launch::new().args(["--allow-host", "box.lan"]).start().await;
    let port = server.port();
    let cases = [
        (format!("localhost:{port}"), StatusCode::OK),
        ("localhost".to_owned(), StatusCode::OK),
        (format!("LOCALHOST:{port}"), StatusCode::OK),
        (format!("127.0.0.1:{port}"), StatusCode::OK),
        ("127.0.0.1".to_owned(), StatusCode::OK),
        (format!("[::1]:{port}"), StatusCode::OK),
        (format!("box.lan:{port}"), StatusCode::OK),
        (format!("BOX.LAN:{port}"), StatusCode::OK),
        (format!("other.lan:{port}"), StatusCode::MISDIRECTED_REQUEST),
        (format!("box.lan.evil.example:{port}"), StatusCode::MISDIRECTED_REQUEST),
    ];
    for (host, want) in cases {
        let req = server.request(Method::GET, "/sessions").header(HOST, &host);
        let (status, _, body) = TestServer::send_json(req).await;
        assert_eq!(status, want, "Host {host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_local_pages_and_configured_origins_in_and_no_one_else() {
    let server = Launch::new().args(["--cors-origin", "https://dash.example"]).start().await;
    let cases = [
        ("http://localhost:3000", true),
        ("http://127.0.0.1:5173", true),
        ("http://localhost", true),
        ("https://dash.example", true),
        ("http://dash.example", false),
        ("http://evil.example", false),
        ("http://localhost.evil.example", false),
        ("http://127.0.0.1.nip.io", false),
        ("null", false),
    ];
    for (origin, allowed) in cases {
        for method in ["POST", "DELETE", "GET"] {
            let resp = server
                .request(Method::OPTIONS, "/events")
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .unwrap();
            let allow_origin =
                resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
            let allow_methods =
                resp.headers().get("access-control-allow-methods").map(|v| v.to_str().unwrap().to_owned());
            if allowed {
                assert!(resp.status().is_success(), "preflight {method} from {origin}: {}", resp.status());
                assert_eq!(allow_origin.as_deref(), Some(origin), "preflight {method} from {origin}");
                assert!(allow_methods.is_some_and(|m| m.contains(method)), "preflight {method} from {origin}");
            } else {
                assert_eq!(allow_origin, None, "preflight {method} from {origin} was allowed");
            }
        }
        // The actual request: served (the server cannot stop it), but the browser may not read it.
        let resp = server.request(Method::GET, "/sessions").header("origin", origin).send().await.unwrap();
        let allow_origin = resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allow_origin.as_deref(), allowed.then_some(origin), "GET from {origin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_a_token_is_refused_at_start() {
    let sandbox = std::sync::Arc::new(Sandbox::new());
    let config = sandbox.path().join("open.toml");
    std::fs::write(&config, "host = \"0.0.0.0\"\n").unwrap();
    let cases: Vec<(&str, Launch)> = vec![
        ("--host 0.0.0.0", Launch::in_sandbox(sandbox.clone()).args(["--host", "0.0.0.0"])),
        ("--host ::", Launch::in_sandbox(sandbox.clone()).args(["--host", "::"])),
        ("AOP_HOST=0.0.0.0", Launch::in_sandbox(sandbox.clone()).env("AOP_HOST", "0.0.0.0")),
        ("host in the config file", Launch::in_sandbox(sandbox.clone()).args(["--config", config.to_str().unwrap()])),
        ("an empty token", Launch::in_sandbox(sandbox.clone()).args(["--host", "0.0.0.0", "--token", ""])),
    ];
    for (case, launch) in cases {
        let done = launch.run().await;
        done.assert_code(2);
        assert!(done.stderr.contains("--token"), "{case}: the refusal does not say what to do\n{}", done.output());
        assert!(!done.stderr.contains("panicked"), "{case}\n{}", done.output());
    }
    assert!(!sandbox.db().exists(), "a refused start created the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_endpoint_but_health_and_the_dashboard_needs_it() {
    const TOKEN: &str = "s3cr3t-T0ken-4d1f";
    let server = Launch::new().args(["--host", "0.0.0.0"]).token(TOKEN).start().await;
    assert!(server.bound_addr().ip().is_unspecified(), "bound to {}", server.bound_addr());
    server.ingest(&[event("guarded", 1, "session.started", json!({"goal": "g"}))]).await;

    let bearer = format!("Bearer {TOKEN}");
    let cases: Vec<(Method, String, Option<String>, StatusCode)> = vec![
        (Method::GET, "/sessions".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions".into(), Some("Bearer wrong".into()), StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions".into(), Some(format!("{bearer}x")), StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions".into(), Some(bearer[..bearer.len() - 1].to_owned()), StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions".into(), Some(TOKEN.to_owned()), StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions".into(), Some("Basic dXNlcjpzM2NyM3Q=".into()), StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions".into(), Some(bearer.clone()), StatusCode::OK),
        (Method::GET, format!("/sessions?access_token={TOKEN}"), None, StatusCode::OK),
        (Method::GET, "/sessions?access_token=wrong".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions?access_token=".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions/guarded".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions/guarded/export".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/sessions/guarded/children".into(), None, StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/sessions/guarded".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/alerts".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/metrics".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/stream".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/stream".into(), Some("Bearer wrong".into()), StatusCode::UNAUTHORIZED),
        (Method::GET, "/health".into(), None, StatusCode::OK),
        (Method::GET, "/metrics".into(), Some(bearer.clone()), StatusCode::OK),
    ];
    for (method, path, auth, want) in &cases {
        let mut req = server.request(method.clone(), path);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.unwrap();
        let case = format!("{method} {path} with {auth:?}");
        assert_eq!(resp.status(), *want, "{case}");
        if *want == StatusCode::UNAUTHORIZED {
            assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{case}");
            let body: Value = resp.json().await.unwrap_or_else(|e| panic!("{case}: not JSON: {e}"));
            assert_eq!(body["ok"], false, "{case}");
            assert!(body["error"].is_string(), "{case}");
        }
    }

    // Ingest is guarded too, and a refused event is not stored.
    let ev = event("guarded", 2, "cognition.thought", json!({}));
    let resp = server.request(Method::POST, "/events").body(ev.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.session("guarded").await["event_count"], 1);
    assert_eq!(server.post_event(&ev).await.0, StatusCode::OK);
    // The dashboard's files load without it (the page then asks for the token).
    let resp = server.request(Method::GET, "/dashboard/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // EventSource cannot send headers: the stream takes the token from the query.
    let mut stream = server.open_stream(&format!("/stream?access_token={TOKEN}"), &[]).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.frame().await.comments, ["connected"]);
    // The Host check comes first: the right token does not make a foreign host acceptable.
    let resp = server
        .request(Method::GET, "/sessions")
        .header(AUTHORIZATION, &bearer)
        .header(HOST, "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);

    let health = server.health().await.to_string();
    let output = format!("{}{}", server.stdout(), server.stderr());
    assert!(!health.contains(TOKEN), "the token is in /health: {health}");
    assert!(!output.contains(TOKEN), "the token is in the collector's output:\n{output}");
}

/// Browsers build the `access_token` query with `URLSearchParams`, which percent-encodes `+`, `/`
/// and `=`: exactly the characters of a base64 token (`openssl rand -base64 24`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_access_token_is_accepted() {
    let server = Launch::new().token("q+4Z/w9=").start().await;
    let resp = server.request(Method::GET, "/sessions?access_token=q%2B4Z%2Fw9%3D").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_environment_is_required_and_never_shown() {
    const TOKEN: &str = "env-secret-91c2";
    let server = Launch::new().env("AOP_TOKEN", TOKEN).authenticate_with(TOKEN).start().await;
    assert_eq!(server.request(Method::GET, "/sessions").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.get_ok("/sessions").await["sessions"], json!([]));
    assert!(!format!("{}{}", server.stdout(), server.stderr()).contains(TOKEN), "{}", server.output());

    let sandbox = Sandbox::new();
    let argv = vec!["start".to_owned(), "--help".to_owned()];
    let out = sandbox.command(&argv, &[("AOP_TOKEN".to_owned(), TOKEN.to_owned())]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--token"), "{text}");
    assert!(!text.contains(TOKEN), "`aop start --help` shows the token from AOP_TOKEN:\n{text}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_readable_by_its_owner_only() {
    let launch = Launch::new();
    let dir = launch.sandbox().path().join("fresh");
    let db = dir.join("nested").join("traces.db");
    let server = launch.db(&db).start().await;
    server.ingest(&[event("private", 1, "session.started", json!({"goal": "secret plans"}))]).await;

    assert_eq!(mode(&db), 0o600, "database file");
    assert_eq!(mode(&dir), 0o700, "new parent directory");
    assert_eq!(mode(&dir.join("nested")), 0o700, "new parent directory");
    for suffix in ["-wal", "-shm"] {
        let side = db.with_file_name(format!("traces.db{suffix}"));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_never_reach_the_log() {
    const MARK: &str = "PAYLOAD-MARK-7f3a";
    let server = TestServer::start().await;
    let with_mark =
        |seq: i64| event("quiet", seq, "operation.tool_end", json!({"tool": "t", "success": false, "error": MARK}));
    server.ingest(&[with_mark(1)]).await;
    server.post_event(&with_mark(1).with("payload", json!({"other": MARK}))).await; // 409
    server.post_event(&with_mark(2).without("type")).await; // 400
    server.post_event(&with_mark(3).with("payload", json!({"x": MARK.repeat(9000)}))).await; // 413
    server.post_batch(&[with_mark(4), with_mark(5).with("sequence", json!(-1)), with_mark(2), with_mark(6)]).await;
    server.post_body(Some("application/json"), format!("{{\"broken\": \"{MARK}")).await;
    server.get(&format!("/sessions?q={MARK}")).await;

    let output = format!("{}{}", server.stdout(), server.stderr());
    assert!(!output.contains(MARK), "a payload reached the collector's output:\n{output}");
}

/// A page on any origin can send writes it cannot read the answer of (a `no-cors` fetch, a
/// beacon, a form): a foreign `Origin` is refused before anything is stored, whatever the method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_cannot_change_anything() {
    let server = Launch::new().args(["--cors-origin", "https://dash.example", "--allow-host", "box.lan"]).start().await;
    let victim = event("victim", 1, "session.started", json!({"goal": "private"}));
    server.ingest_one(&victim).await;
    let intruder = event("intruder", 1, "session.started", json!({"goal": "planted"})).to_string();
    let port = server.port();

    for origin in ["http://evil.example", "https://evil.example:8443", "null", "http://localhost.evil.example"] {
        let writes = [
            (Method::POST, "/events", Some(intruder.clone())),
            (Method::DELETE, "/sessions/victim", None),
            (Method::POST, "/sessions/victim/pin", Some("{}".to_owned())),
            (Method::DELETE, "/sessions/victim/pin", None),
        ];
        for (method, path, body) in writes {
            let req = send(&server, &method, path, &body).header("origin", origin);
            let (status, _, json) = TestServer::send_json(req).await;
            let case = format!("{method} {path} from {origin}");
            assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {json}");
            assert!(json["error"].as_str().is_some_and(|e| e.contains("origin")), "{case}: {json}");
        }
        // Reads are answered (the browser keeps their answers from the page).
        let req = server.request(Method::GET, "/sessions").header("origin", origin);
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK, "GET from {origin}");
    }
    assert_eq!(server.events("victim").await, vec![victim.clone()]);
    assert_eq!(server.session("victim").await["pinned"], false);
    assert_eq!(server.get_json("/sessions/intruder").await.0, StatusCode::NOT_FOUND);

    // Loopback pages, configured origins and the collector's own origin may write.
    for (i, origin) in
        ["http://localhost:3000", "http://127.0.0.1:5173", "https://dash.example", &format!("http://box.lan:{port}")]
            .into_iter()
            .enumerate()
    {
        let ev = event("victim", 2 + i as i64, "cognition.thought", json!({"content": origin}));
        let mut req = send(&server, &Method::POST, "/events", &Some(ev.to_string())).header("origin", origin);
        if origin.contains("box.lan") {
            req = req.header(HOST, format!("box.lan:{port}"));
        }
        let (status, _, json) = TestServer::send_json(req).await;
        assert_eq!(status, StatusCode::OK, "POST from {origin}: {json}");
    }
    assert_eq!(server.session("victim").await["event_count"], 5);
}

/// What a cross-site write without a preflight can carry: no content type, `text/plain`, a form.
/// Each is refused with 415 on every route that writes, even with no `Origin` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_json_content_type() {
    let server = TestServer::start().await;
    server.ingest_one(&event("victim", 1, "session.started", json!({"goal": "g"}))).await;
    let ev = event("planted", 1, "session.started", json!({})).to_string();
    for content_type in [None, Some("text/plain;charset=UTF-8"), Some("application/x-www-form-urlencoded")] {
        for path in ["/events", "/sessions/victim/pin"] {
            let mut req = server.request(Method::POST, path).body(ev.clone());
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let (status, _, json) = TestServer::send_json(req).await;
            let case = format!("POST {path} with content type {content_type:?}");
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{case}: {json}");
            assert!(json["error"].as_str().is_some_and(|e| e.contains("content type")), "{case}: {json}");
        }
    }
    assert_eq!(server.get_json("/sessions/planted").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.session("victim").await["pinned"], false);
    // With a JSON type, the pin goes through.
    let req = server.request(Method::POST, "/sessions/victim/pin").header("content-type", "application/json");
    assert_eq!(TestServer::send_json(req).await.0, StatusCode::OK);
    assert_eq!(server.session("victim").await["pinned"], true);
}

/// Another page must not be able to frame the dashboard (and click its Delete button through it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_may_frame_the_collector() {
    let server = TestServer::start().await;
    for path in ["/dashboard/", "/dashboard/app.js", "/sessions", "/health", "/no-such-route"] {
        let resp = server.request(Method::GET, path).send().await.unwrap();
        let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "GET {path}");
        assert!(header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")), "GET {path}");
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "GET {path}");
    }
}

/// One `Host` is the rule: two (a name we accept, then a foreign one) or none is malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_needs_exactly_one_host_header() {
    let server = TestServer::start().await;
    let port = server.port();
    let cases = [
        (format!("GET /sessions HTTP/1.1\nHost: localhost:{port}\nHost: evil.example"), 400),
        (format!("GET /sessions HTTP/1.1\nHost: evil.example\nHost: localhost:{port}"), 400),
        ("GET /sessions HTTP/1.1".to_owned(), 400),
        ("GET /sessions HTTP/1.0".to_owned(), 400),
        (format!("GET /sessions HTTP/1.1\nHost: localhost:{port}"), 200),
    ];
    for (head, want) in cases {
        let answer = crate::support::raw::exchange(server.addr(), &head, b"").await;
        assert_eq!(crate::support::raw::status_of(&answer), want, "{head:?}\n{answer}");
        if want == 400 {
            assert!(answer.contains("Host"), "the refusal does not name the header: {answer}");
        }
    }
}

/// RFC 9110: the authentication scheme is case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    const TOKEN: &str = "case-T0ken";
    let server = Launch::new().token(TOKEN).start().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let req = server.request(Method::GET, "/sessions").header(AUTHORIZATION, format!("{scheme} {TOKEN}"));
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK, "{scheme}");
    }
    for wrong in [format!("Bearer{TOKEN}"), format!("Bearerx {TOKEN}"), format!("Basic {TOKEN}")] {
        let req = server.request(Method::GET, "/sessions").header(AUTHORIZATION, &wrong);
        assert_eq!(req.send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
}

/// `/health` answers anyone; where the data lives and which process serves it, only callers with
/// the token learn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_path_and_pid_only_to_token_holders() {
    const TOKEN: &str = "health-T0ken";
    let server = Launch::new().token(TOKEN).start().await;
    let db = server.db_path().display().to_string();
    let anonymous = server.health().await;
    assert_eq!(anonymous["ok"], true);
    assert!(anonymous.get("pid").is_none(), "{anonymous}");
    assert!(anonymous["store"].get("path").is_none(), "{anonymous}");
    assert!(!anonymous.to_string().contains(&db), "{anonymous}");
    let trusted = server.get_ok("/health").await;
    assert_eq!(trusted["pid"], server.pid().as_raw());
    assert_eq!(trusted["store"]["path"], db);

    // Without a token configured, everyone is trusted, as before.
    let open = TestServer::start().await;
    let health = open.health().await;
    assert_eq!(health["pid"], open.pid().as_raw());
    assert_eq!(health["store"]["path"], open.db_path().display().to_string());
}

/// A database that others could read (an older aop, a copy, a restore) is made private at start,
/// with its WAL and shared-memory files, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_others_could_read_is_made_private() {
    let mut server = TestServer::start().await;
    server.ingest_one(&event("private", 1, "session.started", json!({"goal": "secret"}))).await;
    server.sigkill().await; // leaves the WAL and shared-memory files behind
    let db = server.db_path();
    let sides: Vec<_> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| db.with_file_name(format!("events.db{s}")))
        .filter(|p| p.exists())
        .collect();
    assert!(sides.len() >= 2, "expected the WAL beside the database after SIGKILL: {sides:?}");
    for p in &sides {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    server.start_again().await;
    for p in &sides {
        if p.exists() {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
    }
    assert_eq!(mode(&db), 0o600);
    assert!(server.stderr().contains("owner only"), "no warning in the log:\n{}", server.output());
    assert_eq!(server.session("private").await["goal"], "secret");
}

/// HTTP/2 names the host in `:authority`; a `Host` beside it that names another is a malformed
/// request (RFC 9113 §8.3.1), refused naming both, even when each name alone would pass: the
/// check must not approve one name while the request goes by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_whose_authority_and_host_disagree_are_refused() {
    let server = TestServer::start().await;
    let port = server.port();
    let authority = format!("127.0.0.1:{port}");
    let h2 = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
    let cases = [
        (Some("evil.example".to_owned()), StatusCode::BAD_REQUEST),
        (Some(format!("localhost:{port}")), StatusCode::BAD_REQUEST),
        (Some(format!("127.0.0.1:{}", port.wrapping_add(1))), StatusCode::BAD_REQUEST),
        (Some(authority.clone()), StatusCode::OK),
        (None, StatusCode::OK),
    ];
    for (host, want) in cases {
        let mut req = h2.get(server.url("/sessions"));
        if let Some(h) = &host {
            req = req.header(HOST, h);
        }
        let (status, _, json) = TestServer::send_json(req).await;
        assert_eq!(status, want, ":authority {authority} with Host {host:?}: {json}");
        if let (StatusCode::BAD_REQUEST, Some(h)) = (want, &host) {
            let error = json["error"].as_str().unwrap_or_default();
            assert!(error.contains(&authority) && error.contains(h.as_str()), "the refusal does not name both: {json}");
        }
    }

    // A foreign `:authority` alone is refused like a foreign Host.
    let foreign = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .resolve("evil.example", server.addr())
        .build()
        .unwrap();
    let req = foreign.get(format!("http://evil.example:{port}/sessions"));
    let (status, _, json) = TestServer::send_json(req).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{json}");
    assert!(json["error"].as_str().is_some_and(|e| e.contains(":authority")), "{json}");
}

/// A request target in absolute form (`GET http://name/path`) names its host itself, and the
/// server goes by it and ignores `Host` (RFC 9112 §3.2.2): naming another host is refused like a
/// foreign `Host`, and nothing is stored through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_checked_by_its_own_host() {
    let server = TestServer::start().await;
    let port = server.port();
    let ev = event("absolute", 1, "session.started", json!({})).to_string();
    let post = |target: &str| {
        format!(
            "POST {target} HTTP/1.1\nHost: localhost:{port}\nContent-Type: application/json\nContent-Length: {}",
            ev.len()
        )
    };
    let cases = [
        (format!("GET http://evil.example/sessions HTTP/1.1\nHost: localhost:{port}"), 421),
        (format!("GET http://evil.example:{port}/sessions HTTP/1.1\nHost: localhost:{port}"), 421),
        (format!("GET http://localhost.evil.example:{port}/sessions HTTP/1.1\nHost: localhost:{port}"), 421),
        (post("http://evil.example/events"), 421),
        (format!("GET http://localhost:{port}/sessions HTTP/1.1\nHost: localhost:{port}"), 200),
        (format!("GET http://localhost:{port}/sessions HTTP/1.1\nHost: evil.example"), 200),
        (format!("GET http://localhost:{port}/sessions HTTP/1.1"), 400),
    ];
    for (head, want) in cases {
        let body = if head.starts_with("POST") { ev.as_bytes() } else { b"" };
        let answer = crate::support::raw::exchange(server.addr(), &head, body).await;
        assert_eq!(crate::support::raw::status_of(&answer), want, "{head:?}\n{answer}");
        if want == 421 {
            assert!(answer.contains("the request target's host"), "the refusal does not say what it read: {answer}");
        }
    }
    assert_eq!(server.get_json("/sessions/absolute").await.0, StatusCode::NOT_FOUND);
}

/// What a browser OTLP exporter on a local page sends: a gzipped body needs `Content-Encoding`
/// approved by the preflight, and its back-off reads `Retry-After`, which must be exposed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_otlp_exporters_may_send_gzip_and_read_retry_after() {
    use std::io::Write;
    let server = TestServer::start().await;
    let origin = "http://localhost:5173";
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).map(|v| v.to_str().unwrap().to_ascii_lowercase()).unwrap_or_default()
    };
    let preflight = server
        .request(Method::OPTIONS, "/v1/traces")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-encoding,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = header(&preflight, "access-control-allow-headers");
    for name in ["content-type", "content-encoding"] {
        assert!(allowed.split(',').any(|h| h.trim() == name), "{name} is not allowed: {allowed:?}");
    }

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{}").unwrap();
    let resp = server
        .request(Method::POST, "/v1/traces")
        .header("origin", origin)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(header(&resp, "access-control-allow-origin"), origin);
    let exposed = header(&resp, "access-control-expose-headers");
    assert!(exposed.split(',').any(|h| h.trim() == "retry-after"), "Retry-After is not exposed: {exposed:?}");
}
