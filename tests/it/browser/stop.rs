//! The operator's stop in the dashboard: "Stop this run" asks first, stops the run with the
//! reason given (the guard then denies the agent's calls), the header says it is stopped and the
//! timeline shows the stop and the denial; "Resume" lifts it.

use super::{browser_and_server, open, session_view, Clock};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn guard(server: &crate::support::TestServer, session: &str) -> Value {
    let req = server
        .authed(Method::POST, "/guard")
        .header("content-type", "application/json")
        .body(json!({"session_id": session, "tool": "Bash", "input": {"command": "rm -rf build"}}).to_string());
    let (status, _, answer) = crate::support::TestServer::send_json(req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn timeline_says(browser: &super::Browser, text: &str) {
    let script = "const t = document.querySelector('[data-testid=session-view] .timeline');
                  return t && t.textContent.includes(arguments[0]) ? true : null;";
    browser.wait_js(&format!("the timeline to say {text:?}"), script, json!([text])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_this_run_asks_first_then_the_guard_denies_and_resume_lifts_it() {
    let Some((browser, server)) = browser_and_server("stop").await else { return };
    let id = "runaway-1";
    let clock = Clock::started(std::time::Duration::from_secs(5));
    server
        .ingest(&[
            clock.event(id, 1, 0, "session.started", json!({"goal": "Refactor the build"})),
            clock.event(id, 2, 500, "operation.tool_start", json!({"tool": "Bash", "input": {"command": "make"}})),
        ])
        .await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&session_view(id)).await;
    browser.wait_for("[data-testid=stop-button]:not([hidden])").await;
    assert_eq!(guard(&server, id).await["decision"], "allow");

    // The button asks first; cancelling changes nothing.
    browser.click("[data-testid=stop-button]").await;
    browser.wait_for("dialog[open] [data-testid=confirm-stop]").await;
    browser.click("dialog[open] [data-testid=cancel-stop]").await;
    browser.wait_gone("dialog[open]").await;
    assert_eq!(guard(&server, id).await["decision"], "allow");

    browser.click("[data-testid=stop-button]").await;
    browser.wait_for("dialog[open] [data-testid=stop-reason]").await;
    browser.send_keys("dialog[open] [data-testid=stop-reason]", "looping on the build").await;
    browser.screenshot("stop-confirm").await;
    browser.click("dialog[open] [data-testid=confirm-stop]").await;
    browser.wait_for("[data-testid=stopped-badge]").await;
    browser.wait_for("[data-testid=resume-button]:not([hidden])").await;
    assert!(browser.attr("[data-testid=stop-button]", "hidden").await.is_some(), "no second stop");

    let answer = guard(&server, id).await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(answer["reasons"][0]["message"].as_str().unwrap().ends_with("looping on the build"), "{answer}");
    assert_eq!(server.session(id).await["stopped"]["reason"], "looping on the build");
    // The stop and the denial read as what they are in the timeline.
    timeline_says(&browser, "Stopped by an operator: looping on the build").await;
    timeline_says(&browser, "Guard: deny Bash(rm -rf build)").await;
    browser.screenshot("stopped-run").await;

    browser.click("[data-testid=resume-button]").await;
    browser.wait_gone("[data-testid=stopped-badge]").await;
    assert_eq!(guard(&server, id).await["decision"], "allow");
    timeline_says(&browser, "Resumed by an operator").await;
    browser.assert_no_script_errors().await;
}
