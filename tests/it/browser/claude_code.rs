//! A coding agent's session in the dashboard, as the real Claude Code CLI makes it: the driver of
//! `tests/otel/run_agent.py` runs it offline against the build (see `support::agents`) and keeps
//! aop's database; a collector of the test's own serves that database to Chromium. The session
//! reads as what happened: the prompt as the user wrote it, the three tool calls with their
//! command or file (the last one failed, its error shown), the model requests with their tokens
//! and cost, and the agent's badge.

use super::driver::Browser;
use super::{open, session_row, session_view};
use crate::support::agents::{AgentRun, BASIC_PROMPT, FAILING_COMMAND};
use crate::support::*;
use serde_json::{json, Value};

/// Every row the session view's timeline can show, as what it says: scrolls the virtualised list
/// from top to bottom and reads each row once, in sequence order.
async fn timeline_rows(browser: &Browser) -> Vec<Value> {
    let script = r#"
        const done = arguments[arguments.length - 1];
        const list = document.querySelector('[data-testid=session-view] .timeline');
        const rows = new Map();
        const text = (el, css) => { const e = el.querySelector(css); return e ? e.textContent.trim() : null; };
        const data = (el, css, key) => { const e = el.querySelector(css); return e ? e.dataset[key] ?? null : null; };
        const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        (async () => {
          list.scrollTop = 0;
          await frames();
          for (let i = 0; i < 1000; i++) {
            for (const el of list.querySelectorAll('[data-testid=timeline-event]')) {
              rows.set(el.dataset.sequence, {
                sequence: Number(el.dataset.sequence), type: el.dataset.type, label: text(el, '.ev-type'),
                failed: el.classList.contains('is-err'), prompt: text(el, '[data-testid=prompt-text]'),
                tool: data(el, '[data-testid=tool-span]', 'tool'), state: data(el, '[data-testid=tool-span]', 'state'),
                arg: text(el, '[data-testid=tool-arg]'), arg_kind: data(el, '[data-testid=tool-arg]', 'kind'),
                error: text(el, '.ev-text.error-text'), model: data(el, '[data-testid=llm-call]', 'model'),
                tokens: text(el, '[data-testid=llm-tokens]'), cost: text(el, '[data-testid=llm-cost]'),
              });
            }
            if (list.scrollTop + list.clientHeight >= list.scrollHeight - 1) break;
            list.scrollTop += Math.max(30, list.clientHeight - 60);
            await frames();
          }
          done([...rows.values()].sort((a, b) => a.sequence - b.sequence));
        })();
    "#;
    serde_json::from_value(browser.js_async(script, json!([])).await).expect("the timeline's rows")
}

/// An integer as the dashboard writes it (`en-US`: 10,121).
fn grouped(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn of_type<'a>(rows: &'a [Value], kind: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_session_from_the_real_cli_reads_as_what_it_did() {
    let launch = Launch::new();
    // The run's collector leaves its database where this test's collector will read it.
    let Some(ran) = AgentRun::claude("basic", "http/protobuf").keep_store(&launch.db_path()).run().await else {
        return;
    };
    let out = ran.output();
    assert_eq!(ran.exit_code(), 0, "{}\n{out}", ran.describe());
    let id =
        ran.stdout()["session_id"].as_str().unwrap_or_else(|| panic!("Claude Code's session id\n{out}")).to_owned();
    let (browser, server) = tokio::join!(Browser::launch("claude-code"), launch.start());
    let Some(browser) = browser else { return };
    let stored = server.events(&id).await;
    let row = server.session(&id).await;
    assert_eq!(row["agent_id"], "claude-code", "{row}");

    // The list says which agent it is.
    open(&browser, &server, "").await;
    let badge = format!("{} [data-testid=agent-badge]", session_row(&id));
    browser.wait_attr(&badge, "data-kind", "claude-code").await;
    assert_eq!(browser.text(&badge).await.as_deref(), Some("Claude Code"));

    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&session_view(&id)).await;
    let header = "[data-testid=session-view] .sv-head [data-testid=agent-badge]";
    browser.wait_attr(header, "data-kind", "claude-code").await;
    assert_eq!(browser.text(header).await.as_deref(), Some("Claude Code"));
    browser.wait_text("[data-testid=timeline-status]", &format!("{} events", grouped(stored.len() as i64))).await;
    let rows = timeline_rows(&browser).await;
    assert_eq!(rows.len(), stored.len(), "every event has its row: {rows:#?}");

    // The prompt, as the user wrote it, apart from the agent's own thoughts.
    let prompts: Vec<&Value> = rows.iter().filter(|r| !r["prompt"].is_null()).collect();
    assert_eq!(prompts.len(), 1, "{rows:#?}");
    assert_eq!((&prompts[0]["prompt"], &prompts[0]["label"]), (&json!(BASIC_PROMPT), &json!("prompt")));

    // The three tool calls, with what each worked on; the last one failed.
    let calls: Vec<(String, String, String)> = of_type(&rows, "operation.tool_start")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("tool"), s("state"), s("arg_kind"))
        })
        .collect();
    let want = [("Bash", "ok", "command"), ("Read", "ok", "path"), ("Bash", "error", "command")]
        .map(|(t, s, k)| (t.to_owned(), s.to_owned(), k.to_owned()));
    assert_eq!(calls, want, "{rows:#?}");
    let args: Vec<&str> =
        of_type(&rows, "operation.tool_start").iter().map(|r| r["arg"].as_str().unwrap_or("")).collect();
    assert!(args[0].starts_with("ls"), "the listing's command: {args:?}");
    assert!(args[1].ends_with("/README.md"), "the file read: {args:?}");
    assert_eq!(args[2], FAILING_COMMAND);
    // The failure's error, as the agent reported it, on the call's end.
    let ends = of_type(&rows, "operation.tool_end");
    let failed: Vec<&&Value> = ends.iter().filter(|r| r["failed"] == true).collect();
    assert_eq!(failed.len(), 1, "{ends:#?}");
    let stored_end = stored
        .iter()
        .find(|e| e["type"] == "operation.tool_end" && e["payload"]["success"] == false)
        .expect("the failed call's end");
    let error = stored_end["payload"]["error"].as_str().expect("its error");
    assert!(!error.is_empty());
    assert_eq!(failed[0]["error"].as_str(), Some(error));
    assert_eq!(failed[0]["arg"].as_str(), Some(FAILING_COMMAND), "the end says which command failed");

    // The model requests: model, input → output tokens, cost.
    let calls = of_type(&rows, "operation.external_call");
    let requests: Vec<&Value> = stored.iter().filter(|e| e["type"] == "operation.external_call").collect();
    assert_eq!(calls.len(), 4, "one a step: {calls:#?}");
    assert_eq!(calls.len(), requests.len());
    for (shown, event) in calls.iter().zip(&requests) {
        let p = &event["payload"];
        assert_eq!((&shown["model"], &shown["label"]), (&json!("claude-sonnet-4-5"), &json!("llm")), "{shown}");
        let tokens = format!(
            "{} → {}",
            grouped(p["input_tokens"].as_i64().expect("input tokens")),
            grouped(p["output_tokens"].as_i64().expect("output tokens"))
        );
        assert_eq!(shown["tokens"].as_str(), Some(tokens.as_str()), "{shown} {p}");
        assert!(p["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "Claude Code reports its cost: {p}");
        assert!(shown["cost"].as_str().is_some_and(|c| c.starts_with('$')), "{shown}");
    }
    // The session's totals are the collector's.
    browser.wait_attr("[data-testid=metric-tokens]", "data-value", &row["total_tokens"].to_string()).await;
    let cost = row["total_cost_usd"].as_f64().expect("the session's cost");
    assert!(cost > 0.0, "{row}");
    browser
        .poll(
            "the session's cost",
            PATIENCE,
            "return document.querySelector('[data-testid=metric-cost]').dataset.value;",
            json!([]),
            |v| v.as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(|c| (c - cost).abs() < 1e-9),
        )
        .await;
    // A coding agent's session is a conversation of its own.
    browser.wait_text("[data-testid=session-view] [data-testid=conversation-id]", &id).await;

    // The failed call, selected by its address: the details say the command and the error.
    let seq = stored_end["sequence"].as_i64().expect("a sequence");
    browser.js("location.hash = arguments[0]; return null;", json!([format!("#/sessions/{id}/{seq}")])).await;
    browser.wait_text("[data-testid=inspector] [data-testid=inspector-tool-arg]", FAILING_COMMAND).await;
    let detail = browser.text("[data-testid=inspector]").await.unwrap_or_default();
    assert!(detail.contains(error), "the details show the error: {detail:?}");
    // For the picture, the story in one view: the prompt, the calls and the failure selected,
    // without the permission decisions and other records (the "custom" tier).
    browser.click("[data-testid=tier-filter-custom]").await;
    let top = "document.querySelector('[data-testid=session-view] .timeline').scrollTop = 0;
               requestAnimationFrame(() => requestAnimationFrame(() => arguments[arguments.length - 1](null)));";
    browser.js_async(top, json!([])).await;
    browser.wait_for("[data-testid=session-view] .timeline [data-testid=prompt-text]").await;
    browser.screenshot("session").await;
    browser.assert_no_script_errors().await;
}
