//! The conversation view: an OpenTelemetry agent that starts a trace per turn makes a session
//! per turn, all of one conversation (`gen_ai.conversation.id`); the view lists them in the order
//! they started, with each turn's tokens, cost, tool calls and alerts and the totals, reached by
//! its own address and from a turn's session, and follows a new turn live.

use super::{browser_and_server, open, session_view, CONNECTION};
use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CONVERSATION: &str = "conv-support-42";
const VIEW: &str = "[data-testid=conversation-view]";

/// One turn: a trace whose root is the agent, with its chats (input, output tokens) and its tool
/// calls (name, error if it failed), every span naming the conversation.
struct Turn {
    n: u8,
    /// When it starts, in ms after the conversation's start.
    at: u64,
    chats: &'static [(i64, i64)],
    tools: &'static [(&'static str, Option<&'static str>)],
}

impl Turn {
    fn trace(&self) -> String {
        format!("{:032x}", self.n)
    }

    fn session(&self) -> String {
        format!("otel-{}", self.trace())
    }

    fn tokens(&self) -> i64 {
        self.chats.iter().map(|(i, o)| i + o).sum()
    }

    fn failed(&self) -> usize {
        self.tools.iter().filter(|(_, e)| e.is_some()).count()
    }

    /// Its spans as OTLP/JSON, times counted from `t0` (ns since the epoch).
    fn spans(&self, t0: u64) -> Vec<Value> {
        let trace = self.trace();
        let ms = |m: u64| (t0 + m * 1_000_000).to_string();
        let attrs = |pairs: Vec<(&str, Value)>| -> Vec<Value> {
            let mut out: Vec<Value> = pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Number(n) => json!({"key": k, "value": {"intValue": n.to_string()}}),
                    other => json!({"key": k, "value": {"stringValue": other.as_str().unwrap_or_default()}}),
                })
                .collect();
            out.push(json!({"key": "gen_ai.conversation.id", "value": {"stringValue": CONVERSATION}}));
            out
        };
        let root = format!("{:08x}00000001", self.n);
        let mut spans = vec![json!({
            "traceId": trace, "spanId": root, "name": "invoke_agent support-bot", "kind": 1,
            "startTimeUnixNano": ms(self.at), "endTimeUnixNano": ms(self.at + 8_000),
            "attributes": attrs(vec![("gen_ai.operation.name", json!("invoke_agent")), ("gen_ai.agent.name", json!("support-bot"))]),
        })];
        let mut at = self.at + 100;
        let mut k = 2;
        for (input, output) in self.chats {
            spans.push(json!({
                "traceId": trace, "spanId": format!("{:08x}{k:08x}", self.n), "parentSpanId": root, "name": "chat gpt-4o-mini",
                "kind": 3, "startTimeUnixNano": ms(at), "endTimeUnixNano": ms(at + 1_200),
                "attributes": attrs(vec![
                    ("gen_ai.operation.name", json!("chat")),
                    ("gen_ai.system", json!("openai")),
                    ("gen_ai.request.model", json!("gpt-4o-mini")),
                    ("gen_ai.usage.input_tokens", json!(input)),
                    ("gen_ai.usage.output_tokens", json!(output)),
                ]),
            }));
            at += 1_300;
            k += 1;
        }
        for (tool, error) in self.tools {
            let mut span = json!({
                "traceId": trace, "spanId": format!("{:08x}{k:08x}", self.n), "parentSpanId": root,
                "name": format!("execute_tool {tool}"), "kind": 1, "startTimeUnixNano": ms(at), "endTimeUnixNano": ms(at + 400),
                "attributes": attrs(vec![
                    ("gen_ai.operation.name", json!("execute_tool")),
                    ("gen_ai.tool.name", json!(tool)),
                    ("gen_ai.tool.call.arguments", json!(r#"{"order": 1234}"#)),
                ]),
            });
            if let Some(message) = error {
                span["status"] = json!({"code": 2, "message": message});
            }
            spans.push(span);
            at += 500;
            k += 1;
        }
        spans
    }
}

const TURNS: [Turn; 3] = [
    Turn { n: 1, at: 0, chats: &[(1_200, 300), (1_800, 120)], tools: &[("lookup_order", None)] },
    Turn { n: 2, at: 20_000, chats: &[(2_500, 200), (900, 80)], tools: &[("refund", Some("payment gateway timeout"))] },
    // Three failures in a row: an error cascade.
    Turn {
        n: 3,
        at: 40_000,
        chats: &[(3_000, 150)],
        tools: &[("fetch_invoice", Some("404")), ("fetch_invoice", Some("404")), ("fetch_invoice", Some("404"))],
    },
];

/// A turn sent later, while the view is open.
const LATE: Turn = Turn { n: 4, at: 60_000, chats: &[(400, 40)], tools: &[("close_ticket", None)] };

async fn post_turns(server: &TestServer, turns: &[&Turn], t0: u64) {
    let spans: Vec<Value> = turns.iter().flat_map(|t| t.spans(t0)).collect();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "support-bot"}}]},
        "scopeSpans": [{"scope": {"name": "support-bot"}, "spans": spans}],
    }]});
    let resp = server
        .authed(Method::POST, "/v1/traces")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /v1/traces");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!((status, text.as_str()), (StatusCode::OK, "{}"), "every span stored");
}

/// The value a `data-testid` element of the view holds (`data-value`), once it is known.
async fn value(browser: &super::Browser, testid: &str) -> String {
    let css = format!("{VIEW} [data-testid={testid}]");
    let script =
        "const e = document.querySelector(arguments[0]); return e && e.dataset.value ? e.dataset.value : null;";
    let v = browser.wait_js(&format!("{testid} to be known"), script, json!([css])).await;
    v.as_str().expect("a value").to_owned()
}

/// Each turn's `data-value` of the cell `testid`, in the view's order.
async fn column(browser: &super::Browser, testid: &str) -> Vec<String> {
    browser.attrs(&format!("{VIEW} [data-testid=conversation-turn] [data-testid={testid}]"), "data-value").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_view_lists_its_turns_in_order_with_their_totals() {
    let Some((browser, server)) = browser_and_server("conversation").await else { return };
    let t0 = (SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970") - Duration::from_secs(120)).as_nanos()
        as u64;
    // Sent last turn first: the view's order is the turns' own, not their arrival's.
    post_turns(&server, &[&TURNS[2], &TURNS[0], &TURNS[1]], t0).await;
    let rows = server.sessions(&format!("conversation={CONVERSATION}")).await;
    assert_eq!(rows.len(), 3, "a session per turn: {rows:#?}");
    let row = |t: &Turn| rows.iter().find(|r| r["id"] == t.session().as_str()).expect("the turn's session").clone();
    let alerts: Vec<i64> = TURNS.iter().map(|t| row(t)["alert_count"].as_i64().unwrap_or(0)).collect();
    assert!(alerts[2] >= 1, "three failed calls in a row raise an alert: {alerts:?}");
    let cost: f64 = TURNS.iter().map(|t| row(t)["total_cost_usd"].as_f64().expect("gpt-4o-mini is priced")).sum();

    // By its address.
    open(&browser, &server, &format!("#/conversations/{CONVERSATION}")).await;
    browser.wait_attr(VIEW, "data-state", "ready").await;
    let order = browser.attrs(&format!("{VIEW} [data-testid=conversation-turn]"), "data-session-id").await;
    assert_eq!(order, TURNS.iter().map(Turn::session).collect::<Vec<_>>(), "turns in the order they started");
    let numbers = browser.attrs(&format!("{VIEW} [data-testid=conversation-turn]"), "data-turn").await;
    assert_eq!(numbers, ["1", "2", "3"]);
    let statuses = browser.attrs(&format!("{VIEW} [data-testid=conversation-turn]"), "data-status").await;
    assert_eq!(statuses, ["completed", "completed", "completed"], "no root span failed");

    // Each turn's figures: tokens and alerts from its row, tool calls counted from its events.
    let strings = |v: Vec<i64>| v.into_iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(column(&browser, "turn-tokens").await, strings(TURNS.iter().map(Turn::tokens).collect()));
    assert_eq!(column(&browser, "turn-tools").await, ["1", "1", "3"]);
    assert_eq!(column(&browser, "turn-llm").await, ["2", "2", "1"]);
    assert_eq!(column(&browser, "turn-alerts").await, strings(alerts.clone()));
    let tools = browser.text(&format!("{VIEW} [data-turn=\"3\"] [data-testid=turn-tools]")).await;
    assert_eq!(tools.as_deref(), Some("3 (3 failed)"), "a turn's failed calls are said");

    // The totals.
    let tokens: i64 = TURNS.iter().map(Turn::tokens).sum();
    assert_eq!(value(&browser, "conversation-turns").await, "3");
    assert_eq!(value(&browser, "conversation-tokens").await, tokens.to_string());
    assert_eq!(browser.text(&format!("{VIEW} [data-testid=conversation-tokens]")).await.as_deref(), Some("10,250"));
    let shown: f64 = value(&browser, "conversation-cost").await.parse().expect("a cost");
    assert!((shown - cost).abs() < 1e-9, "the turns' costs add up: {shown} vs {cost}");
    assert_eq!(value(&browser, "conversation-tools").await, "5");
    let failed: usize = TURNS.iter().map(Turn::failed).sum();
    assert_eq!(
        browser.text(&format!("{VIEW} [data-testid=conversation-tools]")).await,
        Some(format!("5 ({failed} failed)"))
    );
    assert_eq!(value(&browser, "conversation-llm").await, "5");
    assert_eq!(value(&browser, "conversation-alerts").await, alerts.iter().sum::<i64>().to_string());
    browser.screenshot("view").await;

    // A turn opens its session, whose header leads back to the conversation.
    let second = TURNS[1].session();
    browser.click(&format!("{VIEW} [data-testid=conversation-turn][data-turn=\"2\"]")).await;
    browser.wait_for(&session_view(&second)).await;
    let link = "[data-testid=session-view] [data-testid=conversation-link]";
    browser.wait_text(&format!("{link} [data-testid=conversation-id]"), CONVERSATION).await;
    browser.click(link).await;
    browser.wait_attr(VIEW, "data-state", "ready").await;
    assert_eq!(browser.attrs(&format!("{VIEW} [data-testid=conversation-turn]"), "data-turn").await.len(), 3);

    // A new turn arrives while the view is open: listed last, and counted.
    browser.wait_attr(CONNECTION, "data-state", "live").await;
    post_turns(&server, &[&LATE], t0).await;
    browser.wait_for(&format!("{VIEW} [data-testid=conversation-turn][data-session-id=\"{}\"]", LATE.session())).await;
    browser
        .wait_attr(
            &format!("{VIEW} [data-testid=conversation-turn][data-turn=\"4\"]"),
            "data-session-id",
            &LATE.session(),
        )
        .await;
    browser.wait_attr(&format!("{VIEW} [data-testid=conversation-turns]"), "data-value", "4").await;
    browser
        .wait_attr(
            &format!("{VIEW} [data-testid=conversation-tokens]"),
            "data-value",
            &(tokens + LATE.tokens()).to_string(),
        )
        .await;
    browser.wait_attr(&format!("{VIEW} [data-testid=conversation-tools]"), "data-value", "6").await;
    browser.assert_no_script_errors().await;
}
