//! A session derived from an OpenTelemetry trace, in the dashboard: LLM calls with their model,
//! tokens and cost, a span's attributes in the details pane, and the trace's nesting.

use super::{browser_and_server, open, session_row, session_view, timeline_event, wait_waterfall, Clock};
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT: &str = "a1b2c3d4e5f60718";
const FIRST_CHAT: &str = "b2c3d4e5f6071829";
const NESTED_AGENT: &str = "c3d4e5f60718293a";
const SEARCH: &str = "d4e5f60718293a4b";
const RERANK: &str = "e5f60718293a4b5c";
const LOCAL_CHAT: &str = "f60718293a4b5c6d";
const SECOND_CHAT: &str = "0718293a4b5c6d7e";

/// What the instrumented agent does, as a trace: `research-agent` asks `gpt-4o-mini` once, then
/// hands over to `summarizer-agent`, which searches the web, reranks the results with a local
/// model (inside a plain span), and asks `gpt-4o-mini` again.
///
/// Posted as the events the OTLP mapping derives from these spans (one session per trace; the span
/// identity under `payload.otel`), so the dashboard is tested apart from the mapping. Returns the
/// session's id.
async fn send_trace(server: &TestServer, clock: &Clock) -> String {
    let session = format!("otel-{TRACE_ID}");
    let identity = |span: &str, parent: Option<&str>, name: &str| json!({"trace_id": TRACE_ID, "span_id": span, "parent_span_id": parent, "name": name});
    let full = |span: &str, parent: &str, name: &str, kind: &str, status: &str, attributes: Value| {
        let mut otel = identity(span, Some(parent), name);
        otel["kind"] = json!(kind);
        otel["status"] = json!(status);
        otel["attributes"] = attributes;
        otel
    };
    let chat_attributes = |model: &str, system: &str, input: i64, output: i64| {
        json!({
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.usage.input_tokens": input,
            "gen_ai.usage.output_tokens": output,
            "gen_ai.response.finish_reasons": ["stop"],
        })
    };

    let mut first_chat = full(
        FIRST_CHAT,
        ROOT,
        "chat gpt-4o-mini",
        "client",
        "unset",
        chat_attributes("gpt-4o-mini", "openai", 1_204, 318),
    );
    let messages = json!([
        {"role": "system", "content": "You are a careful research assistant. Cite every source you use."},
        {"role": "user", "content": "What changed in the EU AI Act's final text for general-purpose models?"},
    ]);
    let attributes = first_chat["attributes"].as_object_mut().expect("attributes");
    attributes.insert("gen_ai.response.model".into(), json!("gpt-4o-mini-2024-07-18"));
    attributes.insert("gen_ai.response.id".into(), json!("chatcmpl-9xYzAbC123"));
    attributes.insert("gen_ai.input.messages".into(), json!(messages.to_string()));
    attributes.insert("server.address".into(), json!("api.openai.com"));
    // Attribute text is whatever the instrumentation sent: it must show as text, never as markup.
    attributes.insert("app.note".into(), json!("<img src=x onerror=\"window.__aopXss = 1\">"));
    first_chat["events"] = json!([{
        "name": "gen_ai.choice",
        "time": clock.at(1_390),
        "attributes": {"index": 0, "finish_reason": "stop"},
    }]);
    first_chat["scope"] = json!("opentelemetry.instrumentation.openai_v2");

    let nested_agent = full(
        NESTED_AGENT,
        ROOT,
        "invoke_agent summarizer-agent",
        "internal",
        "unset",
        json!({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "summarizer-agent"}),
    );
    let search_arguments = json!({"query": "EU AI Act general-purpose AI obligations", "max_results": 5});
    let search = full(
        SEARCH,
        NESTED_AGENT,
        "execute_tool web_search",
        "internal",
        "ok",
        json!({
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "web_search",
            "gen_ai.tool.call.id": "call_Qx81",
            "gen_ai.tool.call.arguments": search_arguments.to_string(),
            "gen_ai.tool.call.result": "5 results",
        }),
    );
    let rerank_attributes = json!({"rerank.candidates": 12, "rerank.kept": 4, "rerank.strategy": "llm"});
    let rerank = full(RERANK, NESTED_AGENT, "rerank_results", "internal", "ok", rerank_attributes.clone());
    let local_chat = full(
        LOCAL_CHAT,
        RERANK,
        "chat llama3.1:8b",
        "client",
        "unset",
        chat_attributes("llama3.1:8b", "ollama", 2_210, 96),
    );
    let second_chat = full(
        SECOND_CHAT,
        NESTED_AGENT,
        "chat gpt-4o-mini",
        "client",
        "ok",
        chat_attributes("gpt-4o-mini", "openai", 18_420, 912),
    );

    let research = "research-agent";
    let summarizer = "summarizer-agent";
    let events = [
        (
            0,
            0,
            research,
            "session.started",
            json!({
                "goal": "invoke_agent research-agent",
                "metadata": {"source": "otlp", "service_name": "research-service", "conversation_id": "conv-7f3a9c"},
                "otel": {"trace_id": TRACE_ID},
            }),
        ),
        (
            1,
            1_400,
            research,
            "operation.external_call",
            json!({
                "service": "openai", "method": "chat", "model": "gpt-4o-mini", "input_tokens": 1_204, "output_tokens": 318,
                "token_spend_delta": 1_522, "cost_usd": 0.000371, "latency_ms": 1_200, "otel": first_chat,
            }),
        ),
        (
            2,
            1_500,
            research,
            "operation.agent_spawn",
            json!({
                "child_agent_id": summarizer, "goal": "Summarise the sources", "otel": nested_agent,
            }),
        ),
        (
            3,
            1_700,
            summarizer,
            "operation.tool_start",
            json!({
                "tool": "web_search", "input": search_arguments, "tool_call_id": "call_Qx81",
                "otel": identity(SEARCH, Some(NESTED_AGENT), "execute_tool web_search"),
            }),
        ),
        (
            4,
            3_200,
            summarizer,
            "operation.tool_end",
            json!({
                "tool": "web_search", "tool_call_id": "call_Qx81", "success": true, "output_summary": "5 results",
                "latency_ms": 1_500, "otel": search,
            }),
        ),
        // Written at its end, before the span it ran in: its parent arrives after it.
        (
            5,
            5_000,
            summarizer,
            "operation.external_call",
            json!({
                "service": "ollama", "method": "chat", "model": "llama3.1:8b", "input_tokens": 2_210, "output_tokens": 96,
                "token_spend_delta": 2_306, "cost_note": "no price for model \"llama3.1:8b\"", "latency_ms": 1_600,
                "otel": local_chat,
            }),
        ),
        (
            6,
            5_200,
            summarizer,
            "otel.span",
            json!({
                "name": "rerank_results", "kind": "internal", "status": "ok", "duration_ms": 1_900,
                "attributes": rerank_attributes, "otel": rerank,
            }),
        ),
        (
            7,
            7_600,
            summarizer,
            "operation.external_call",
            json!({
                "service": "openai", "method": "chat", "model": "gpt-4o-mini", "input_tokens": 18_420, "output_tokens": 912,
                "token_spend_delta": 19_332, "cost_usd": 0.0033102, "latency_ms": 2_200, "otel": second_chat,
            }),
        ),
        (
            8,
            9_000,
            research,
            "session.ended",
            json!({
                "outcome": "completed", "otel": identity(ROOT, None, "invoke_agent research-agent"),
            }),
        ),
    ];
    let events: Vec<Value> = events
        .into_iter()
        .map(|(seq, ms, agent, kind, payload)| clock.event(&session, seq, ms, kind, payload).agent(agent))
        .collect();
    server.ingest(&events).await;
    session
}

/// The rendered row of event `sequence`, in the session view.
fn row(sequence: i64, inner: &str) -> String {
    format!("{} {inner}", timeline_event(sequence))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_an_opentelemetry_trace_shows_llm_calls_spans_and_nesting() {
    let Some((browser, server)) = browser_and_server("otel").await else { return };
    let clock = Clock::started(Duration::from_secs(60));
    let id = send_trace(&server, &clock).await;

    // The list says where the session comes from, and its conversation.
    open(&browser, &server, "").await;
    let list_row = session_row(&id);
    browser.wait_text(&format!("{list_row} [data-testid=agent-badge]"), "OTel").await;
    browser
        .poll(
            "the conversation id in the sessions list",
            PATIENCE,
            "const r = document.querySelector(arguments[0]); return r ? r.textContent : '';",
            json!([list_row]),
            |v| v.as_str().is_some_and(|t| t.contains("conversation conv-7f3a9c")),
        )
        .await;

    browser.screenshot("list").await;
    browser.click(&list_row).await;
    browser.wait_for(&session_view(&id)).await;
    browser.wait_for(&timeline_event(8)).await;
    browser.wait_text("[data-testid=session-view] [data-testid=agent-badge]", "OTel").await;
    browser.wait_text("[data-testid=conversation-id]", "conv-7f3a9c").await;

    // An LLM call: model, input → output tokens, cost, latency.
    let llm = row(1, "[data-testid=llm-call]");
    browser.wait_attr(&llm, "data-model", "gpt-4o-mini").await;
    assert_eq!(browser.text(&row(1, "[data-testid=llm-tokens]")).await.as_deref(), Some("1,204 → 318"));
    assert_eq!(browser.text(&row(1, "[data-testid=llm-cost]")).await.as_deref(), Some("$0.0004"));
    assert_eq!(browser.text(&row(1, "[data-testid=llm-latency]")).await.as_deref(), Some("1.2s"));
    assert_eq!(browser.text(&row(7, "[data-testid=llm-cost]")).await.as_deref(), Some("$0.0033"));
    // Without a price, the collector's note stands in for the cost.
    assert_eq!(browser.text(&row(5, "[data-testid=llm-cost]")).await.as_deref(), Some("no price"));
    assert_eq!(
        browser.text(&row(6, "[data-testid=otel-span]")).await.map(|t| t.contains("rerank_results")),
        Some(true)
    );

    // The trace's shape: the nested agent's calls sit under its spawn, the local model's call
    // under the span it ran in (which arrived after it), and each names its agent.
    let depth = |seq: i64| {
        let browser = &browser;
        async move { browser.attr(&timeline_event(seq), "data-depth").await.expect("a depth") }
    };
    assert_eq!(depth(1).await, "0", "a call of the root agent is at the top");
    assert_eq!(depth(2).await, "0", "the nested agent's span is a child of the root");
    for seq in [3, 4, 6, 7] {
        assert_eq!(depth(seq).await, "1", "event #{seq} is inside the nested agent");
        let parent = browser.attr(&timeline_event(seq), "data-parent-span-id").await;
        assert_eq!(parent.as_deref(), Some(NESTED_AGENT));
    }
    assert_eq!(depth(5).await, "2", "the local call is inside rerank_results, inside the nested agent");
    let indent = "const body = (s) => { const e = document.querySelector(s + ' .ev-body');
                    const c = [...e.children].find((x) => !x.classList.contains('nest')); return c.getBoundingClientRect().left; };
                  return [body(arguments[0]), body(arguments[1]), body(arguments[2])];";
    let lefts = browser.js(indent, json!([timeline_event(2), timeline_event(7), timeline_event(5)])).await;
    let lefts: Vec<f64> = serde_json::from_value(lefts).expect("three positions");
    assert!(lefts[0] < lefts[1] && lefts[1] < lefts[2], "deeper rows are indented further: {lefts:?}");
    assert_eq!(browser.text(&row(7, "[data-testid=event-agent]")).await.as_deref(), Some("summarizer-agent"));
    assert_eq!(
        browser.attrs(&row(1, "[data-testid=event-agent]"), "class").await.len(),
        0,
        "the session's own agent goes unsaid"
    );
    // The agents panel lists the agent nested in the trace; the chart has a lane per model.
    let nested = "[data-testid=agent-tree] [data-testid=trace-agent]";
    browser.wait_attr(nested, "data-agent", "summarizer-agent").await;
    wait_waterfall(&browser, &["web_search", "gpt-4o-mini", "llama3.1:8b"]).await;

    // Selecting the call shows its span: identity, attributes, events.
    browser.click(&timeline_event(1)).await;
    let inspector = "[data-testid=inspector] [data-testid=otel-detail]";
    browser.wait_text(&format!("{inspector} [data-testid=otel-span-name]"), "chat gpt-4o-mini").await;
    let span = browser.text(&format!("{inspector} [data-testid=otel-span]")).await.unwrap_or_default();
    for part in ["unset", "kind client", "invoke_agent research-agent"] {
        assert!(span.contains(part), "the span's status, kind and parent show {part}: {span:?}");
    }
    let identity = browser.text(&format!("{inspector} [data-testid=otel-identity]")).await.unwrap_or_default();
    for id in [TRACE_ID, FIRST_CHAT, ROOT] {
        assert!(identity.contains(id), "the span's ids show {id}: {identity:?}");
    }
    let attr = |key: &str| format!("{inspector} [data-testid=otel-attr][data-key=\"{key}\"] td");
    assert_eq!(browser.text(&attr("gen_ai.request.model")).await.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(browser.text(&attr("gen_ai.usage.input_tokens")).await.as_deref(), Some("1204"));
    // A JSON value is pretty-printed.
    let messages = browser.text(&format!("{} pre.json", attr("gen_ai.input.messages"))).await.unwrap_or_default();
    assert!(
        messages.starts_with("[\n  {\n") && messages.contains("\n    \"role\": \"system\""),
        "pretty JSON: {messages:?}"
    );
    // Markup in an attribute is text.
    assert_eq!(browser.text(&attr("app.note")).await.as_deref(), Some("<img src=x onerror=\"window.__aopXss = 1\">"));
    let injected = browser
        .js(
            "return [document.querySelectorAll('[data-testid=inspector] img').length, window.__aopXss ?? null];",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!([0, null]), "attribute text was not parsed as HTML");
    let span_events = browser.text(&format!("{inspector} [data-testid=otel-events]")).await.unwrap_or_default();
    assert!(span_events.contains("gen_ai.choice") && span_events.contains("finish_reason"), "{span_events:?}");

    // The nested call's pane says which spans it ran inside.
    browser.click(&timeline_event(5)).await;
    browser.wait_text(&format!("{inspector} [data-testid=otel-span-name]"), "chat llama3.1:8b").await;
    let path = browser.text(&format!("{inspector} [data-testid=otel-path]")).await.unwrap_or_default();
    assert_eq!(path, "invoke_agent research-agent › invoke_agent summarizer-agent › rerank_results");

    // Back on the first call for the picture, its span in view.
    browser.click(&timeline_event(1)).await;
    browser.wait_text(&format!("{inspector} [data-testid=otel-span-name]"), "chat gpt-4o-mini").await;
    let scroll = "document.querySelector(arguments[0]).scrollIntoView();
                  requestAnimationFrame(() => requestAnimationFrame(() => arguments[arguments.length - 1](null)));";
    browser.js_async(scroll, json!([inspector])).await;
    browser.screenshot("session").await;
    browser.assert_no_script_errors().await;
}

/// An AOP agent that reports its LLM calls' figures itself (an external call, or a tool call
/// that asks a model) gets the same rows, and none of a trace's marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_llm_calls_show_like_a_traces() {
    let Some((browser, server)) = browser_and_server("aop-llm").await else { return };
    let clock = Clock::started(Duration::from_secs(30));
    let id = "aop-llm";
    let call = json!({
        "service": "anthropic", "method": "messages", "model": "claude-3-5-haiku", "input_tokens": 2_048,
        "output_tokens": 256, "cost_usd": 0.0123, "latency_ms": 840,
    });
    let asked = json!({
        "tool": "ask_model", "success": true, "output_summary": "a plan", "model": "gpt-4o", "input_tokens": 900,
        "output_tokens": 120, "token_spend_delta": 1_020, "cost_usd": 0.0035,
    });
    server
        .ingest(&[
            clock.event(id, 1, 0, "session.started", json!({"goal": "Plan the week"})),
            clock.event(id, 2, 1_000, "operation.external_call", call),
            clock.event(id, 3, 2_000, "operation.tool_start", json!({"tool": "ask_model", "input": {"q": "plan"}})),
            clock.event(id, 4, 3_000, "operation.tool_end", asked),
        ])
        .await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_attr(&row(2, "[data-testid=llm-call]"), "data-model", "claude-3-5-haiku").await;
    assert_eq!(browser.text(&row(2, "[data-testid=llm-tokens]")).await.as_deref(), Some("2,048 → 256"));
    assert_eq!(browser.text(&row(2, "[data-testid=llm-cost]")).await.as_deref(), Some("$0.0123"));
    assert_eq!(browser.text(&row(2, "[data-testid=llm-latency]")).await.as_deref(), Some("840ms"));
    browser.wait_attr(&row(4, "[data-testid=llm-call]"), "data-model", "gpt-4o").await;
    assert_eq!(browser.text(&row(4, "[data-testid=llm-cost]")).await.as_deref(), Some("$0.0035"));
    // No agent badge, indentation or agent names: this is no trace.
    let marks = "return document.querySelectorAll('[data-testid=session-view] [data-testid=agent-badge], \
                 [data-testid=session-view] .nest, [data-testid=event-agent]').length;";
    assert_eq!(browser.js(marks, json!([])).await, json!(0));
    browser.click(&timeline_event(4)).await;
    browser.wait_text("[data-testid=inspector] [data-testid=llm-model]", "gpt-4o").await;
    browser.screenshot("session").await;
    browser.assert_no_script_errors().await;
}

/// The details pane's messages once they include `text`.
async fn messages_saying(browser: &super::Browser, text: &str) -> String {
    let script = "const el = document.querySelector('[data-testid=inspector] [data-testid=llm-messages]'); \
                  return el && el.innerText.includes(arguments[0]) ? el.innerText : null;";
    let shown = browser.wait_js(&format!("the call's messages saying {text:?}"), script, json!([text])).await;
    shown.as_str().unwrap_or_default().to_owned()
}

/// A call's messages, whether its own (a GenAI event outside any span becomes the call) or those
/// of the GenAI records logged inside its span, show in its details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_calls_messages_show_in_its_details() {
    let Some((browser, server)) = browser_and_server("otel-messages").await else { return };
    let clock = Clock::started(Duration::from_secs(30));
    let id = "otel-messages";
    let span = "1122334455667788";
    let spanned = json!({
        "service": "openai", "method": "chat", "model": "gpt-4o", "input_tokens": 20, "output_tokens": 5,
        "latency_ms": 300, "otel": {"trace_id": TRACE_ID, "span_id": span, "name": "chat gpt-4o"},
    });
    let details = json!({
        "name": "gen_ai.client.inference.operation.details",
        "body": {"gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Where is my order?"}]}]},
        "attributes": {"gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "It ships tomorrow."}]}]},
        "otel": {"record_id": "r00000000000000aa", "trace_id": TRACE_ID, "span_id": span},
    });
    let own = json!({
        "service": "openai", "method": "chat", "model": "gpt-4o", "input_tokens": 7, "output_tokens": 3,
        "system_instructions": [{"type": "text", "content": "Be brief."}],
        "output_messages": [{"role": "assistant", "parts": [{"type": "text", "content": "Done."}]}],
    });
    server
        .ingest(&[
            clock.event(id, 1, 0, "session.started", json!({"goal": "Answer the customer"})),
            clock.event(id, 2, 1_000, "operation.external_call", spanned),
            clock.event(id, 3, 1_100, "otel.log", details),
            clock.event(id, 4, 2_000, "operation.external_call", own),
        ])
        .await;
    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_attr(&row(2, "[data-testid=llm-call]"), "data-model", "gpt-4o").await;
    browser.click(&timeline_event(2)).await;
    let shown = messages_saying(&browser, "user: Where is my order?").await;
    assert!(shown.contains("assistant: It ships tomorrow."), "{shown}");
    browser.screenshot("call-messages").await;
    browser.click(&timeline_event(4)).await;
    let shown = messages_saying(&browser, "assistant: Done.").await;
    assert!(shown.contains("Be brief."), "{shown}");
    assert!(!shown.contains("Where is my order?"), "another call's messages: {shown}");
    browser.assert_no_script_errors().await;
}

/// The real thing end to end: an `openai` client instrumented by OpenLLMetry, calling an
/// OpenAI-compatible server inside one application span, exported by the OpenTelemetry SDK to
/// the collector; the dashboard shows the LLM calls with their model and tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_an_instrumented_openai_client_shows_its_calls() {
    use crate::support::pyenv::{run_script, FakeOpenAi};
    let Some((browser, server)) = browser_and_server("otel-openai").await else { return };
    let fake = FakeOpenAi::start().await;
    let (base_url, endpoint) = (fake.base_url(), server.base());
    let args = [
        "--instrumentation",
        "openllmetry",
        "--base-url",
        base_url.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--parent",
        "answer the user",
        "--embeddings",
    ];
    let ran = run_script("instrumented_openai.py", &args, &[]).await;
    assert!(ran.exported(), "{}\n{}", ran.output, fake.log());
    let id = format!("otel-{}", ran.trace_id());
    let events = server.events(&id).await;
    let calls: Vec<&Value> = events.iter().filter(|e| e["type"] == "operation.external_call").collect();
    assert_eq!(calls.len(), 3, "two chats and an embedding\n{events:#?}");

    open(&browser, &server, &format!("#/sessions/{id}")).await;
    browser.wait_for(&session_view(&id)).await;
    let first = calls[0]["sequence"].as_i64().expect("sequence");
    let llm = row(first, "[data-testid=llm-call]");
    browser.wait_attr(&llm, "data-model", "gpt-4o-mini").await;
    let p = &calls[0]["payload"];
    let tokens = format!("{} → {}", p["input_tokens"], p["output_tokens"]);
    assert_eq!(browser.text(&row(first, "[data-testid=llm-tokens]")).await.as_deref(), Some(tokens.as_str()));
    assert!(p["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "gpt-4o-mini is priced: {p}");
    browser.click(&timeline_event(first)).await;
    let attr = "[data-testid=inspector] [data-testid=otel-attr][data-key=\"gen_ai.request.model\"] td";
    browser.wait_text(attr, "gpt-4o-mini").await;
    browser.screenshot("session").await;
}
