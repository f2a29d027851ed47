//! The operational endpoints: `/health`, `/metrics`, the index at `/`, the dashboard's routes,
//! and how unknown routes and wrong methods are answered.

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_version_streams_and_the_store() {
    let server = Launch::new().args(["--stall-after", "12.5"]).start().await;
    let _stream = server.stream("/stream").await;
    server.ingest(&[event("h", 1, "session.started", json!({}))]).await;

    let h = server.health().await;
    assert_eq!(h["ok"], true, "{h}");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"), "{h}");
    assert_eq!(h["subscribers"], 1, "{h}");
    assert!(h["uptime_secs"].is_u64(), "{h}");
    assert_eq!(h["stall_after_secs"], 12.5, "{h}");
    let store = &h["store"];
    assert_eq!(store["writable"], true, "{h}");
    assert_eq!(store["error"], serde_json::Value::Null, "{h}");
    assert!(store["bytes"].as_u64().is_some_and(|b| b > 0), "{h}");
    assert!(store["queue_depth"].is_u64(), "{h}");
    assert_eq!(store["path"], server.db_path().display().to_string(), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_in_the_prometheus_format() {
    let server = TestServer::start().await;
    let e = |seq| event("m", seq, "cognition.thought", json!({"n": seq}));
    server.ingest(&[e(1)]).await; // stored
    server.post_event(&e(1)).await; // duplicate
    server.post_event(&e(1).with("payload", json!({"n": 0}))).await; // conflict
    server.post_event(&e(2).without("spec")).await; // rejected
    server.post_batch(&[e(2), e(3), e(4).with("sequence", json!(-4))]).await; // 2 stored, 1 rejected
    let _stream = server.stream("/stream").await;

    let resp = server.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.unwrap();
    for name in [
        "aop_events_ingested_total",
        "aop_events_rejected_total",
        "aop_ingest_latency_seconds",
        "aop_stream_subscribers",
        "aop_store_bytes",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE line for {name}:\n{text}");
    }
    let m = Metrics::parse(&text);
    assert_eq!(m.get("aop_events_ingested_total"), 3.0);
    assert_eq!(m.get("aop_events_rejected_total"), 2.0);
    assert_eq!(m.get("aop_stream_subscribers"), 1.0);
    assert!(m.get("aop_store_bytes") > 0.0);

    // The latency histogram saw every POST /events, and its buckets add up.
    let count = m.get("aop_ingest_latency_seconds_count");
    assert_eq!(count, 5.0);
    assert_eq!(m.get("aop_ingest_latency_seconds_bucket{le=\"+Inf\"}"), count);
    let buckets: Vec<f64> =
        m.0.iter().filter(|(k, _)| k.starts_with("aop_ingest_latency_seconds_bucket")).map(|(_, v)| *v).collect();
    assert!(buckets.len() >= 2);
    let mut by_bound: Vec<(f64, f64)> =
        m.0.iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix("aop_ingest_latency_seconds_bucket{le=\"")?.strip_suffix("\"}")?;
                Some((if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v))
            })
            .collect();
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(by_bound.windows(2).all(|w| w[0].1 <= w[1].1), "buckets are not cumulative: {by_bound:?}");
    assert!(m.get("aop_ingest_latency_seconds_sum") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_lists_the_endpoints_and_sends_browsers_to_the_dashboard() {
    let server = TestServer::start().await;
    let index = server.get_ok("/").await;
    let text = index.to_string();
    for endpoint in ["POST /events", "GET /sessions", "GET /stream", "GET /health", "GET /alerts"] {
        assert!(text.contains(endpoint), "the index does not list {endpoint}: {index:#}");
    }

    let resp = server
        .request(Method::GET, "/")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(resp.headers()["location"], "/dashboard/");

    let resp = server.request(Method::GET, "/dashboard").send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(resp.headers()["location"], "/dashboard/");

    let resp = server.request(Method::GET, "/dashboard/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(resp.text().await.unwrap().to_lowercase().contains("<html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405_both_in_json() {
    let server = TestServer::start().await;
    let cases = [
        (Method::GET, "/nope", StatusCode::NOT_FOUND),
        (Method::POST, "/event", StatusCode::NOT_FOUND),
        (Method::GET, "/sessions/x/y/z", StatusCode::NOT_FOUND),
        (Method::GET, "/dashboard/no-such-file.js", StatusCode::NOT_FOUND),
        (Method::GET, "/events", StatusCode::METHOD_NOT_ALLOWED),
        (Method::PUT, "/events", StatusCode::METHOD_NOT_ALLOWED),
        (Method::POST, "/sessions", StatusCode::METHOD_NOT_ALLOWED),
        (Method::PATCH, "/sessions/x", StatusCode::METHOD_NOT_ALLOWED),
        (Method::POST, "/stream", StatusCode::METHOD_NOT_ALLOWED),
        (Method::DELETE, "/health", StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, path, want) in cases {
        let (status, headers, body) = TestServer::send_json(server.request(method.clone(), path)).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"), "{method} {path}");
        assert_eq!(body["ok"], false, "{method} {path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {body}");
    }
}
