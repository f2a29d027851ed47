//! Costs priced from a model and its tokens: the session's `total_cost_usd`, the config file's
//! `[prices]`, models without a price, and the budget alert.

use crate::support::*;
use serde_json::{json, Value};

/// An LLM call of session `s` that reports tokens and no cost.
fn llm_call(s: &str, seq: i64, model: &str, input: i64, output: i64) -> Value {
    event(
        s,
        seq,
        "operation.external_call",
        json!({"service": "openai", "method": "chat", "model": model, "input_tokens": input, "output_tokens": output}),
    )
}

/// The same run for every test: two priced calls (one in the older token vocabulary, as a tool
/// end) and one call of a model no price table knows.
fn run(s: &str) -> Vec<Value> {
    vec![
        event(s, 1, "session.started", json!({"goal": "price me", "llm": "gpt-4o"})),
        // gpt-4o: $2.50 in, $10 out per million: $0.025 + $0.02.
        llm_call(s, 2, "gpt-4o-2024-08-06", 10_000, 2_000),
        // claude-3-5-sonnet: $3 in, $15 out per million: $0.003 + $0.015.
        event(
            s,
            3,
            "operation.tool_end",
            json!({"tool": "llm", "success": true, "model": "claude-3-5-sonnet-20241022",
                   "prompt_tokens": 1_000, "completion_tokens": 1_000}),
        ),
        llm_call(s, 4, "my-local-llama", 5_000, 500),
    ]
}

fn assert_usd(row: &Value, want: f64) {
    let got = row["total_cost_usd"].as_f64().unwrap_or_else(|| panic!("no total_cost_usd in {row}"));
    assert!((got - want).abs() < 1e-9, "total_cost_usd {got}, want {want}: {row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_priced_into_the_session_cost_and_unknown_models_are_named() {
    let server = TestServer::start().await;
    let sent = run("priced");
    server.ingest(&sent).await;

    let row = server.session("priced").await;
    assert_usd(&row, 0.045 + 0.018);
    assert_eq!(row["unpriced_models"], json!(["my-local-llama"]), "{row}");
    let listed = server.sessions("q=priced").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["total_cost_usd"], row["total_cost_usd"]);
    assert_eq!(listed[0]["unpriced_models"], row["unpriced_models"]);

    // What the agent sent is what is stored: the price is derived, never written into events.
    let stored = server.events("priced").await;
    let payloads: Vec<&Value> = stored.iter().map(|e| &e["payload"]).collect();
    assert_eq!(payloads, sent.iter().map(|e| &e["payload"]).collect::<Vec<_>>());

    // Only priced models: no list of unpriced ones at all.
    server.ingest(&run("known")[..3]).await;
    let row = server.session("known").await;
    assert_usd(&row, 0.063);
    assert!(row.get("unpriced_models").is_none(), "{row}");

    // Only a model without a price: no cost rather than a guess, and the model is named.
    server.ingest(&[llm_call("unknown", 1, "my-local-llama", 1_000_000, 1_000_000)]).await;
    let row = server.session("unknown").await;
    assert_eq!(row["total_cost_usd"], Value::Null, "{row}");
    assert_eq!(row["unpriced_models"], json!(["my-local-llama"]), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_overrides_and_extends_the_prices() {
    let launch = Launch::new();
    let file = launch.sandbox().path().join("prices.toml");
    std::fs::write(
        &file,
        "[prices.gpt-4o]\ninput_per_mtok = 1\noutput_per_mtok = 1\n\n\
         [prices.\"my-local-llama\"]\ninput_per_mtok = 0.5\noutput_per_mtok = 2\n",
    )
    .unwrap();
    let server = launch.args(["--config", file.to_str().unwrap()]).start().await;
    server.ingest(&run("configured")).await;

    let row = server.session("configured").await;
    // gpt-4o now $1/$1: $0.012; claude unchanged: $0.018; my-local-llama: $0.0025 + $0.001.
    assert_usd(&row, 0.012 + 0.018 + 0.0035);
    assert!(row.get("unpriced_models").is_none(), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_price_in_the_config_file_stops_start_up_naming_it() {
    let launch = Launch::new();
    let file = launch.sandbox().path().join("prices.toml");
    std::fs::write(&file, "[prices.\"my-model\"]\ninput_per_mtok = 1.5\noutput_per_mtk = 6\n").unwrap();
    let done = launch.args(["--config", file.to_str().unwrap()]).run().await;
    done.assert_code(2);
    assert!(done.stderr.contains("prices.\"my-model\""), "{}", done.output());
    assert!(done.stderr.contains("output_per_mtk"), "{}", done.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priced_costs_raise_the_budget_alert() {
    let server = Launch::new().args(["--cost-budget-usd", "0.05"]).start().await;
    // $0.045 a call: the second passes the budget.
    let calls: Vec<Value> = (1..=3).map(|seq| llm_call("spender", seq, "gpt-4o", 10_000, 2_000)).collect();
    server.ingest(&calls).await;
    // A model without a price spends nothing, however many tokens it reports.
    let free: Vec<Value> = (1..=3).map(|seq| llm_call("free", seq, "my-local-llama", 10_000_000, 0)).collect();
    server.ingest(&free).await;

    let detail = server.get_ok("/sessions/spender").await;
    let alerts = detail["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(
        (a["type"].as_str(), a["severity"].as_str(), a["sequence"].as_i64()),
        (Some("cost_spike"), Some("critical"), Some(2))
    );
    assert_eq!(a["details"]["budget_usd"], 0.05);
    assert_eq!(a["details"]["total_cost_usd"], 0.09);
    assert_usd(&detail["session"], 0.135);

    let free = server.get_ok("/sessions/free").await;
    assert_eq!(free["alerts"], json!([]));
    assert_eq!(free["session"]["total_cost_usd"], Value::Null);
}
