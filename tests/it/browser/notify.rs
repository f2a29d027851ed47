//! An alert's notifications in the session view: pending, with its tries and last error, while
//! the receiver is down; sent once it is back.

use super::driver::Browser;
use super::{open, timeline_event, Clock};
use crate::notify::{configured, target};
use crate::support::webhook::Receiver;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_view_shows_each_alerts_notifications() {
    let mut receiver = Receiver::down_from_the_start();
    let launch = configured(Launch::new(), &target(&receiver.url("/T0K3N"), "name = \"on-call\""));
    let (browser, server) = tokio::join!(Browser::launch("notify"), launch.start());
    let Some(browser) = browser else { return };
    let clock = Clock::started(Duration::from_secs(30));
    let id = "sv-notify";
    server.ingest(&[clock.event(id, 1, 0, "session.started", json!({"goal": "Answer carefully"}))]).await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&timeline_event(1)).await;
    let low = |seq: i64| {
        clock.event(id, seq, seq * 500, "cognition.thought", json!({"content": "unsure", "confidence": "low"}))
    };
    server.ingest(&[low(2), low(3), low(4)]).await;

    let alert = "[data-testid=session-view] [data-testid=alert][data-alert-type=confidence_drop]";
    let chip = format!("{alert} [data-testid=delivery-state]");
    browser.wait_attr(&chip, "data-state", "pending").await;
    browser.click(alert).await;
    let line = "[data-testid=inspector] [data-testid=alert-deliveries] [data-testid=delivery]";
    browser.wait_attr(line, "data-state", "pending").await;
    let said = browser.text(line).await.unwrap_or_default();
    assert!(said.starts_with("on-call: pending") && said.contains("cannot connect"), "{said}");
    assert!(!said.contains("T0K3N"), "the URL is never shown: {said}");
    browser.screenshot("pending").await;

    receiver.up().await;
    // The next try comes after the backoff; the view asks again every few seconds meanwhile.
    let state = "const el = document.querySelector(arguments[0]); return el ? el.getAttribute('data-state') : null;";
    for css in [chip.as_str(), line] {
        browser
            .poll(&format!("{css} delivered"), Duration::from_secs(60), state, json!([css]), |v| v == "delivered")
            .await;
    }
    assert!(browser.text(line).await.is_some_and(|t| t.starts_with("on-call: sent")));
    browser.screenshot("delivered").await;
    browser.assert_no_script_errors().await;
}
