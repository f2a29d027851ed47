//! The dashboard end to end: headless Chromium against the real binary, events posted over HTTP
//! while the page is open, and assertions on what the page shows (its `data-testid` elements).
//!
//! Each test has its own collector and its own browser ([`driver::Browser`]), and saves a
//! screenshot of each view it checks as `target/screenshots/<test>-<view>.png`. Without Chromium
//! and chromedriver a test prints why and passes, except when `CI` is set: then it fails.
//!
//! Events are stamped relative to now (not the fixed instant of [`crate::support::at`]), so the
//! page shows what a user would see for a session that is happening now.

mod claude_code;
mod compare;
mod conversation;
mod cross_site;
mod driver;
mod haproxy;
mod notify;
mod otel;
mod site;
mod stop;

use crate::support::*;
use driver::{free_port, Browser};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use time::macros::format_description;
use time::OffsetDateTime;

/// Event times for one test: `clock.at(ms)` is `ms` milliseconds after a start a little in the past.
struct Clock(OffsetDateTime);

impl Clock {
    /// A clock whose start is `ago` before now.
    fn started(ago: Duration) -> Clock {
        let now = OffsetDateTime::now_utc();
        let start = now - ago;
        // Whole milliseconds, as agents send them.
        Clock(start.replace_nanosecond(start.millisecond() as u32 * 1_000_000).expect("a valid instant"))
    }

    fn at(&self, ms: i64) -> String {
        (self.0 + time::Duration::milliseconds(ms))
            .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
            .expect("formattable")
    }

    /// An event of `session` stamped `ms` after the start.
    fn event(&self, session: &str, sequence: i64, ms: i64, kind: &str, payload: Value) -> Value {
        event(session, sequence, kind, payload).stamped(&self.at(ms))
    }
}

/// The browser and a collector with default settings, started side by side; `None` when the
/// browser test is skipped (see [`Browser::launch`]).
async fn browser_and_server(name: &str) -> Option<(Browser, TestServer)> {
    let (browser, server) = tokio::join!(Browser::launch(name), TestServer::start());
    Some((browser?, server))
}

/// Opens a route of the dashboard (`#/…`) and waits for the live feed to be connected.
async fn open(browser: &Browser, server: &TestServer, route: &str) {
    browser.goto(&server.url(&format!("/dashboard/{route}"))).await;
    browser.wait_attr(CONNECTION, "data-state", "live").await;
}

const CONNECTION: &str = "[data-testid=connection-state]";

fn session_row(id: &str) -> String {
    format!("[data-testid=session-row][data-session-id=\"{id}\"]")
}

fn session_view(id: &str) -> String {
    format!("[data-testid=session-view][data-session-id=\"{id}\"]")
}

fn timeline_event(sequence: i64) -> String {
    format!("[data-testid=session-view] [data-testid=timeline-event][data-sequence=\"{sequence}\"]")
}

/// Marks the page; [`assert_not_reloaded`] checks the mark is still there.
async fn mark_page(browser: &Browser) {
    browser.js("window.__aopTestMark = 'still here'; return null;", json!([])).await;
}

async fn assert_not_reloaded(browser: &Browser) {
    let mark = browser.js("return window.__aopTestMark ?? null;", json!([])).await;
    assert_eq!(mark, "still here", "the page was reloaded; live updates must not need a reload");
}

/// Waits until the waterfall (tool calls over time, redrawn a moment after events) has a lane
/// for each of `tools`.
async fn wait_waterfall(browser: &Browser, tools: &[&str]) {
    let script = "const svg = document.querySelector('[data-testid=session-view] [data-testid=waterfall] svg');
                  const text = svg && svg.style.display !== 'none' ? svg.textContent : '';
                  return arguments[0].every((t) => text.includes(t)) ? text : null;";
    browser.wait_js(&format!("the waterfall to draw {tools:?}"), script, json!([tools])).await;
}

/// Every sequence the session view's timeline can show: scrolls the virtualised list from top to
/// bottom, collecting the rows that exist at each position.
async fn all_timeline_sequences(browser: &Browser) -> BTreeSet<i64> {
    let script = r#"
        const done = arguments[arguments.length - 1];
        const list = document.querySelector('[data-testid=session-view] .timeline');
        const seen = new Set();
        const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        (async () => {
          list.scrollTop = 0;
          await frames();
          for (let i = 0; i < 100000; i++) {
            for (const el of list.querySelectorAll('[data-testid=timeline-event]')) seen.add(Number(el.dataset.sequence));
            if (list.scrollTop + list.clientHeight >= list.scrollHeight - 1) break;
            list.scrollTop += Math.max(30, list.clientHeight - 60);
            await frames();
          }
          done([...seen]);
        })();
    "#;
    serde_json::from_value(browser.js_async(script, json!([])).await).expect("a list of sequences")
}

// ---------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_lists_a_new_session_live() {
    let Some((browser, server)) = browser_and_server("overview").await else { return };
    let clock = Clock::started(Duration::from_secs(30));
    open(&browser, &server, "").await;
    browser.wait_for("[data-testid=sessions-view]").await;
    let empty = "return document.querySelector('[data-testid=sessions-view]').textContent.includes('No sessions yet') ? 'shown' : 'gone';";
    browser.poll("the empty state of a new collector", PATIENCE, empty, json!([]), |v| v == "shown").await;
    mark_page(&browser).await;

    server
        .ingest(&[clock.event(
            "ov-live",
            1,
            0,
            "session.started",
            json!({"goal": "Find the answer", "llm": "test-llm"}),
        )])
        .await;
    let row = session_row("ov-live");
    browser.wait_for(&row).await;
    browser.wait_attr(&row, "data-status", "running").await;
    let text = browser.text(&row).await.unwrap_or_default();
    assert!(text.contains("Find the answer") && text.contains("test-agent"), "the row shows {text:?}");
    browser.wait_attr("[data-testid=running-count]", "data-value", "1").await;
    // The empty state goes away with the first session.
    browser.poll("the empty state to go away", PATIENCE, empty, json!([]), |v| v == "gone").await;
    browser.screenshot("running").await;

    // Its end moves it from "Running" to the recent sessions, still without a reload.
    server.ingest(&[clock.event("ov-live", 2, 4_000, "session.ended", json!({"outcome": "completed"}))]).await;
    browser.wait_attr(&row, "data-status", "completed").await;
    browser.wait_attr("[data-testid=running-count]", "data-value", "0").await;
    assert_not_reloaded(&browser).await;
    browser.screenshot("ended").await;
    browser.assert_no_script_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_view_shows_events_and_tool_spans_live() {
    let Some((browser, server)) = browser_and_server("session-live").await else { return };
    let clock = Clock::started(Duration::from_secs(30));
    let id = "sv-live";
    server.ingest(&[clock.event(id, 1, 0, "session.started", json!({"goal": "Summarise the news"}))]).await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&session_view(id)).await;
    browser.wait_for(&timeline_event(1)).await;
    mark_page(&browser).await;

    // Events arrive while the view is open.
    server
        .ingest(&[
            clock.event(
                id,
                2,
                1_000,
                "cognition.thought",
                json!({"content": "Look for sources", "confidence": "high"}),
            ),
            clock.event(id, 3, 2_000, "cognition.decision", json!({"decision": "search", "alternatives": ["guess"]})),
        ])
        .await;
    browser.wait_for(&timeline_event(2)).await;
    browser.wait_for(&timeline_event(3)).await;
    browser.wait_attr(&timeline_event(2), "data-type", "cognition.thought").await;

    // A tool call: running while it is open...
    let start = json!({"tool": "web_search", "input": {"q": "aop"}, "tool_call_id": "call-1"});
    server.ingest(&[clock.event(id, 4, 3_000, "operation.tool_start", start)]).await;
    let span = "[data-testid=session-view] .timeline [data-testid=tool-span][data-tool=web_search]";
    browser.wait_attr(span, "data-state", "running").await;
    let ticking = browser.attr(&format!("{span} [data-testid=tool-duration]"), "data-since").await;
    assert!(ticking.is_some_and(|s| !s.is_empty()), "a running call's duration ticks");
    wait_waterfall(&browser, &["web_search"]).await;
    browser.screenshot("running-tool").await;

    // ...then done, with its duration taken from the event times (2.5 s apart).
    let end = json!({"tool": "web_search", "success": true, "output_summary": "3 results", "tool_call_id": "call-1"});
    server.ingest(&[clock.event(id, 5, 5_500, "operation.tool_end", end)]).await;
    browser.wait_attr(span, "data-state", "ok").await;
    browser.wait_text(&format!("{span} [data-testid=tool-duration]"), "2.5s").await;
    let end_row = browser.text(&timeline_event(5)).await.unwrap_or_default();
    assert!(end_row.contains("3 results") && end_row.contains("#4 · 2.5s"), "the end row shows {end_row:?}");

    // A failed call reports the latency the agent measured, when it gave one.
    let fetch = json!({"tool": "fetch_page", "input": {"url": "https://example.com"}});
    let failed = json!({"tool": "fetch_page", "success": false, "error": "timeout", "latency_ms": 240});
    server
        .ingest(&[
            clock.event(id, 6, 6_000, "operation.tool_start", fetch),
            clock.event(id, 7, 6_250, "operation.tool_end", failed),
        ])
        .await;
    let failed_span = "[data-testid=session-view] .timeline [data-testid=tool-span][data-tool=fetch_page]";
    browser.wait_attr(failed_span, "data-state", "error").await;
    browser.wait_text(&format!("{failed_span} [data-testid=tool-duration]"), "240ms").await;

    // The metrics follow: 7 events, 6 steps (cognition and operation events).
    browser.wait_text("[data-testid=metric-events]", "7").await;
    browser.wait_text("[data-testid=metric-steps]", "6").await;
    browser.wait_text("[data-testid=metric-status]", "running").await;
    let shown: BTreeSet<i64> = browser
        .attrs("[data-testid=session-view] [data-testid=timeline-event]", "data-sequence")
        .await
        .iter()
        .map(|s| s.parse().expect("a sequence"))
        .collect();
    assert_eq!(shown, (1..=7).collect(), "every event is in the timeline");
    assert_not_reloaded(&browser).await;
    wait_waterfall(&browser, &["web_search", "fetch_page"]).await;
    browser.screenshot("tool-spans").await;
    browser.assert_no_script_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_show_in_the_session_view_live() {
    let Some((browser, server)) = browser_and_server("alerts").await else { return };
    let clock = Clock::started(Duration::from_secs(30));
    let id = "sv-alerts";
    server.ingest(&[clock.event(id, 1, 0, "session.started", json!({"goal": "Answer carefully"}))]).await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&timeline_event(1)).await;

    // Three low-confidence thoughts in a row: confidence_drop, on the third.
    let low = |seq: i64| {
        clock.event(
            id,
            seq,
            seq * 500,
            "cognition.thought",
            json!({"content": format!("unsure {seq}"), "confidence": "low"}),
        )
    };
    server.ingest(&[low(2), low(3), low(4)]).await;
    let confidence = "[data-testid=session-view] [data-testid=alert][data-alert-type=confidence_drop]";
    browser.wait_for(confidence).await;
    assert_eq!(browser.attr(confidence, "data-severity").await.as_deref(), Some("warning"));
    assert_eq!(browser.attr(confidence, "data-sequence").await.as_deref(), Some("4"));

    // Three failed tool calls in a row: error_cascade (critical), on the third end.
    let mut failures = Vec::new();
    for (n, seq) in [5, 7, 9].into_iter().enumerate() {
        let tool = format!("step_{n}");
        failures.push(clock.event(
            id,
            seq,
            seq * 500,
            "operation.tool_start",
            json!({"tool": tool, "input": {"n": n}}),
        ));
        let end = json!({"tool": tool, "success": false, "error": format!("failure {n}")});
        failures.push(clock.event(id, seq + 1, seq * 500 + 200, "operation.tool_end", end));
    }
    server.ingest(&failures).await;
    let cascade = "[data-testid=session-view] [data-testid=alert][data-alert-type=error_cascade]";
    browser.wait_for(cascade).await;
    assert_eq!(browser.attr(cascade, "data-severity").await.as_deref(), Some("critical"));
    assert_eq!(browser.attr(cascade, "data-sequence").await.as_deref(), Some("10"));
    browser.wait_text("[data-testid=metric-alerts]", "2").await;
    let failed_spans =
        browser.attrs("[data-testid=session-view] .timeline [data-testid=tool-span]", "data-state").await;
    assert_eq!(failed_spans, ["error", "error", "error"]);
    wait_waterfall(&browser, &["step_0", "step_1", "step_2"]).await;
    browser.screenshot("alerts").await;

    // The overview's row carries the count.
    open(&browser, &server, "#/").await;
    browser.wait_text(&format!("{} [data-testid=alert-badge]", session_row(id)), "⚠\u{FE0E} 2").await;
    browser.assert_no_script_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_tree_shows_a_child_live_and_leads_to_it() {
    let Some((browser, server)) = browser_and_server("tree").await else { return };
    let clock = Clock::started(Duration::from_secs(60));
    let (parent, child) = ("tree-parent", "tree-child");
    let low = |seq: i64| {
        clock.event(parent, seq, seq * 1_000, "cognition.thought", json!({"content": "hmm", "confidence": "low"}))
    };
    server
        .ingest(&[
            clock.event(parent, 1, 0, "session.started", json!({"goal": "Plan a trip"})),
            clock.event(
                parent,
                2,
                1_000,
                "operation.tool_start",
                json!({"tool": "flights", "input": {"to": "Lisbon"}}),
            ),
            clock.event(
                parent,
                3,
                2_200,
                "operation.tool_end",
                json!({"tool": "flights", "success": true, "output_summary": "4 flights"}),
            ),
            low(4),
            low(5),
            low(6),
            clock.event(
                parent,
                7,
                7_000,
                "operation.agent_spawn",
                json!({"child_agent_id": "booking-agent", "child_session_id": child, "goal": "Book the hotel"}),
            ),
        ])
        .await;
    open(&browser, &server, &format!("#/sessions/{parent}")).await;
    browser.wait_for(&timeline_event(7)).await;
    browser.wait_attr("[data-testid=session-view] .timeline [data-testid=tool-span]", "data-state", "ok").await;
    browser.wait_for("[data-testid=session-view] [data-testid=alert][data-alert-type=confidence_drop]").await;

    // The child reports in while the parent's view is open: it appears in the tree.
    server
        .ingest(&[
            clock
                .event(child, 1, 7_500, "session.started", json!({"goal": "Book the hotel"}))
                .agent("booking-agent")
                .parent(parent),
            clock
                .event(child, 2, 8_000, "cognition.thought", json!({"content": "Checking rates"}))
                .agent("booking-agent")
                .parent(parent),
        ])
        .await;
    let child_link = format!("[data-testid=agent-tree] [data-testid=child-session][data-session-id=\"{child}\"]");
    browser.wait_for(&child_link).await;
    browser
        .wait_for(&format!("[data-testid=agent-tree] [data-testid=tree-current][data-session-id=\"{parent}\"]"))
        .await;
    browser.screenshot("parent").await;

    // Clicking it opens the child, whose tree shows the parent above it.
    browser.click(&child_link).await;
    browser.wait_for(&session_view(child)).await;
    browser.wait_for(&timeline_event(2)).await;
    let url = browser.url().await;
    assert!(url.ends_with(&format!("#/sessions/{child}")), "the child's route, got {url}");
    browser
        .wait_for(&format!("[data-testid=agent-tree] [data-testid=parent-session][data-session-id=\"{parent}\"]"))
        .await;
    browser
        .wait_for(&format!("[data-testid=agent-tree] [data-testid=tree-current][data-session-id=\"{child}\"]"))
        .await;
    browser.wait_for("[data-testid=parent-link]").await;
    browser.screenshot("child").await;
    browser.assert_no_script_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_downloads_the_events_and_delete_removes_the_session() {
    let Some((browser, server)) = browser_and_server("export-delete").await else { return };
    let clock = Clock::started(Duration::from_secs(60));
    let id = "exp-1";
    let mut sent = vec![clock.event(id, 1, 0, "session.started", json!({"goal": "Export me"}))];
    for seq in 2..=5 {
        sent.push(clock.event(
            id,
            seq,
            seq * 1_000,
            "cognition.thought",
            json!({"content": format!("step {seq} ✓ ünïcødé 🚀")}),
        ));
    }
    sent.push(clock.event(id, 6, 6_000, "session.ended", json!({"outcome": "completed"})));
    server.ingest(&sent).await;
    server.ingest(&[clock.event("exp-keep", 1, 500, "session.started", json!({"goal": "Keep me"}))]).await;

    // From the overview into the session.
    open(&browser, &server, "").await;
    browser.click(&session_row(id)).await;
    browser.wait_for(&session_view(id)).await;
    browser.wait_for(&timeline_event(6)).await;

    // The export link serves the session as JSON Lines: exactly the events sent, in order.
    let export = "[data-testid=export-button]";
    let href = browser.attr(export, "href").await.expect("the export link has an href");
    assert_eq!(href, server.url(&format!("/sessions/{id}/export")));
    assert_eq!(browser.attr(export, "download").await.as_deref(), Some("session-exp-1.jsonl"));
    let resp = reqwest::Client::builder().no_proxy().build().unwrap().get(&href).send().await.expect("GET the export");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/x-ndjson"), "{content_type}");
    let text = resp.text().await.expect("the export's body");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines, sent);

    // Delete asks first; confirmed, the session is gone and the overview is back.
    browser.click("[data-testid=delete-button]").await;
    browser
        .wait_js(
            "the delete dialog",
            "return document.querySelector('dialog[open] [data-testid=confirm-delete]') !== null;",
            json!([]),
        )
        .await;
    browser.screenshot("confirm-delete").await;
    browser.click("dialog[open] [data-testid=confirm-delete]").await;
    browser.wait_gone("[data-testid=session-view]").await;
    browser
        .wait_js(
            "the overview, shown again",
            "const v = document.querySelector('[data-testid=sessions-view]'); return v !== null && !v.hidden;",
            json!([]),
        )
        .await;
    browser.wait_for(&session_row("exp-keep")).await;
    browser.wait_gone(&session_row(id)).await;
    let (status, body) = server.get_json(&format!("/sessions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(server.get(&format!("/sessions/{id}/export")).await.status(), StatusCode::NOT_FOUND);
    browser.screenshot("after-delete").await;
    browser.assert_no_script_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reconnects_after_a_collector_restart_and_misses_nothing() {
    // A fixed port, so the restarted collector is where the page's stream reconnects.
    let port = free_port();
    let (browser, server) = tokio::join!(Browser::launch("reconnect"), Launch::new().port(port).start());
    let Some(browser) = browser else { return };
    let mut server = server;
    let clock = Clock::started(Duration::from_secs(60));
    let id = "re-1";
    let thought =
        |seq: i64| clock.event(id, seq, seq * 500, "cognition.thought", json!({"content": format!("thought {seq}")}));
    let mut sent = vec![clock.event(id, 1, 0, "session.started", json!({"goal": "Survive a restart"}))];
    sent.extend((2..=5).map(thought));
    server.ingest(&sent).await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&timeline_event(5)).await;
    mark_page(&browser).await;

    server.sigterm().await;
    browser
        .poll(
            "the connection to leave \"live\"",
            PATIENCE,
            "return document.querySelector(arguments[0]).dataset.state;",
            json!([CONNECTION]),
            |v| v != "live",
        )
        .await;
    browser.screenshot("disconnected").await;

    server.start_again().await;
    assert_eq!(server.port(), port, "restarted on the same port");
    // Stored while the page is (most likely) still waiting to retry: replayed on reconnection.
    let during: Vec<Value> = (6..=15).map(thought).collect();
    server.ingest(&during).await;
    browser.wait_attr(CONNECTION, "data-state", "live").await;
    // And the live feed again.
    let after: Vec<Value> = (16..=20).map(thought).collect();
    server.ingest(&after).await;

    browser.wait_for(&timeline_event(20)).await;
    browser.wait_text("[data-testid=timeline-status]", "20 events").await;
    browser.wait_text("[data-testid=metric-events]", "20").await;
    assert_eq!(all_timeline_sequences(&browser).await, (1..=20).collect(), "every event, once");
    assert_eq!(server.events(id).await.len(), 20);
    assert_not_reloaded(&browser).await;
    browser.screenshot("reconnected").await;
    browser.assert_no_script_errors().await;
}

/// The collector comes back on the same port with another database (a fresh file): the page's
/// resume position is past anything there, the collector says `reset`, and the page starts over
/// from what the collector holds now instead of waiting forever for events that will not come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_starts_over_when_the_collector_comes_back_with_another_history() {
    let port = free_port();
    let (browser, server) = tokio::join!(Browser::launch("reset"), Launch::new().port(port).start());
    let Some(browser) = browser else { return };
    let mut server = server;
    let clock = Clock::started(Duration::from_secs(60));
    open(&browser, &server, "").await;
    // Live, so the page holds a resume position.
    let old: Vec<Value> = (1..=5)
        .map(|seq| clock.event("old-history", seq, seq * 100, "cognition.thought", json!({"content": "before"})))
        .collect();
    server.ingest(&old).await;
    browser.wait_for(&session_row("old-history")).await;
    mark_page(&browser).await;

    server.sigterm().await;
    let fresh = Launch::new().port(port).start().await;
    fresh.ingest_one(&clock.event("new-history", 1, 0, "session.started", json!({"goal": "After the move"}))).await;

    browser.wait_for(&session_row("new-history")).await;
    browser.wait_gone(&session_row("old-history")).await;
    let mark = browser.js("return window.__aopTestMark ?? null;", json!([])).await;
    assert_eq!(mark, Value::Null, "the page kept its old state instead of starting over");
    browser.wait_attr(CONNECTION, "data-state", "live").await;
    // And it follows the new history live.
    fresh.ingest_one(&clock.event("newer", 1, 0, "session.started", json!({"goal": "Live again"}))).await;
    browser.wait_for(&session_row("newer")).await;
    browser.screenshot("after-reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_100_000_events_renders() {
    const TOTAL: i64 = 100_000;
    const BATCH: i64 = 5_000;
    let Some((browser, server)) = browser_and_server("100k").await else { return };
    let clock = Clock::started(Duration::from_secs(1_200));
    let id = "big-100k";
    // A thought most of the time, a tool call every ten events; distinct inputs, no alerts.
    let event_at = |seq: i64| -> Value {
        let ms = seq * 10;
        match seq {
            1 => clock.event(id, seq, ms, "session.started", json!({"goal": "A very long run"})),
            TOTAL => clock.event(id, seq, ms, "session.ended", json!({"outcome": "completed"})),
            _ if seq % 10 == 2 => {
                clock.event(id, seq, ms, "operation.tool_start", json!({"tool": "fetch", "input": {"page": seq}}))
            }
            _ if seq % 10 == 3 => clock.event(
                id,
                seq,
                ms,
                "operation.tool_end",
                json!({"tool": "fetch", "success": true, "output_summary": format!("page {}", seq - 1)}),
            ),
            _ => clock.event(
                id,
                seq,
                ms,
                "cognition.thought",
                json!({"content": format!("thought {seq}"), "confidence": "high"}),
            ),
        }
    };
    let ingest_started = Instant::now();
    for first in (1..=TOTAL).step_by(BATCH as usize) {
        let batch: Vec<Value> = (first..first + BATCH).map(event_at).collect();
        server.import(&batch).await;
    }
    println!("100k: ingested {TOTAL} events in {:?}", ingest_started.elapsed());

    let opened = Instant::now();
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for("[data-testid=session-view] [data-testid=timeline-event]").await;
    println!("100k: time to the first timeline row: {:?}", opened.elapsed());
    browser.wait_for(&timeline_event(1)).await;
    browser.screenshot("first-rows").await;

    // Everything loads in the background; the counts say so.
    let limit = Duration::from_secs(90);
    browser.wait_text_within("[data-testid=timeline-status]", "100,000 events", limit).await;
    println!("100k: time to every event loaded: {:?}", opened.elapsed());
    browser.wait_text("[data-testid=metric-events]", "100,000").await;
    browser.wait_text("[data-testid=metric-status]", "completed").await;
    let rows = browser.attrs("[data-testid=session-view] [data-testid=timeline-event]", "data-sequence").await;
    assert!(rows.len() < 200, "the list is virtualised: {} rows in the DOM", rows.len());

    // The end of the list, by keyboard.
    browser.send_keys("[data-testid=session-view] .timeline", "G").await;
    let last = timeline_event(TOTAL);
    browser
        .wait_js(
            "the last event, in view",
            "const e = document.querySelector(arguments[0]); if (!e) return null;
             const l = e.closest('.timeline').getBoundingClientRect(); const r = e.getBoundingClientRect();
             return r.top >= l.top - 1 && r.bottom <= l.bottom + 1;",
            json!([last]),
        )
        .await;
    browser.wait_attr(&last, "data-type", "session.ended").await;
    browser.screenshot("last-rows").await;
    browser.assert_no_script_errors().await;
}
