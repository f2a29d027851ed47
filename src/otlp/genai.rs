//! Records of generic OpenTelemetry instrumentation that report a step of their own
//! (`OTLP.md`, Logs): a GenAI inference event (`gen_ai.client.inference.operation.details`) is a
//! model call with its messages, an `exception` record a failed call.
//!
//! Only a record outside any span is a step. A record inside one belongs to that span's step,
//! which the span itself reports (its call, with its duration and status): derived from the
//! record too, the step would be counted twice. Such a record is kept whole as an `otel.log`
//! carrying the span's id, and shown with the span's step (the dashboard puts a call's messages
//! under the call).

use super::agents::{json_of, Step};
use super::attrs::Attrs;
use super::classify as c;
use super::map::Pricing;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::{Map, Value as Json};

/// The GenAI event that reports one inference with its messages.
const INFERENCE: &str = "gen_ai.client.inference.operation.details";
/// Where that event carries its messages, and the payload field each goes to.
const MESSAGES: [(&str, &str); 3] = [
    ("gen_ai.system_instructions", "system_instructions"),
    ("gen_ai.input.messages", "input_messages"),
    ("gen_ai.output.messages", "output_messages"),
];

/// The steps of a record that is in no span, or none (then it stays an `otel.log`). Messages
/// are read from its attributes or from its body, where SDKs whose attributes hold only scalars
/// put them (a map keyed by the same names).
pub(crate) fn steps(name: Option<&str>, attrs: Attrs<'_>, body: Option<&Value>, price: Pricing<'_>) -> Vec<Step> {
    let step = |payload| vec![Step { kind: "operation.external_call", payload, before_ns: 0, in_parent: false }];
    if name == Some(INFERENCE) {
        let body = match body {
            Some(Value::KvlistValue(map)) => Attrs(&map.values),
            _ => Attrs(&[]),
        };
        return step(inference(attrs, body, price));
    }
    if name == Some("exception") || attrs.has("exception.type") || attrs.has("exception.message") {
        return step(exception(attrs));
    }
    Vec::new()
}

fn inference(a: Attrs<'_>, body: Attrs<'_>, price: Pricing<'_>) -> Map<String, Json> {
    let mut p = Map::new();
    p.insert("service".into(), a.str(c::PROVIDER).unwrap_or("llm").into());
    p.insert("method".into(), a.str(c::OPERATION).unwrap_or("chat").into());
    let request_model = a.str(c::REQUEST_MODEL);
    let response_model = a.str(c::RESPONSE_MODEL);
    if let Some(model) = request_model.or(response_model) {
        p.insert("model".into(), model.into());
    }
    let input = a.count(c::INPUT_TOKENS);
    let output = a.count(c::OUTPUT_TOKENS);
    if let Some(n) = input {
        p.insert("input_tokens".into(), n.into());
    }
    if let Some(n) = output {
        p.insert("output_tokens".into(), n.into());
    }
    if input.is_some() || output.is_some() {
        let (i, o) = (input.unwrap_or(0), output.unwrap_or(0));
        p.insert("token_spend_delta".into(), i.saturating_add(o).into());
        let cost = response_model.and_then(|m| price(m, i, o)).or_else(|| request_model.and_then(|m| price(m, i, o)));
        match (cost, request_model.or(response_model)) {
            (Some(usd), _) => p.insert("cost_usd".into(), ((usd * 1e9).round() / 1e9).into()),
            (None, Some(m)) => p.insert("cost_note".into(), format!("no price for model {m:?}").into()),
            (None, None) => p.insert("cost_note".into(), "no model reported".into()),
        };
    }
    for (key, field) in MESSAGES {
        if let Some(v) = a.get(key).or_else(|| body.get(key)) {
            p.insert(field.into(), structured(v));
        }
    }
    if let Some(reasons) = a.get("gen_ai.response.finish_reasons") {
        p.insert("finish_reasons".into(), structured(reasons));
    }
    let error = a.str(&["error.type"]);
    p.insert("success".into(), error.is_none().into());
    if let Some(e) = error {
        p.insert("error".into(), e.into());
    }
    p
}

fn exception(a: Attrs<'_>) -> Map<String, Json> {
    let kind = a.str(&["exception.type"]);
    let message = a.str(&["exception.message"]);
    let mut p = Map::new();
    p.insert("service".into(), "exception".into());
    p.insert("method".into(), kind.unwrap_or("exception").into());
    p.insert("success".into(), false.into());
    let error = match (kind, message) {
        (Some(k), Some(m)) => format!("{k}: {m}"),
        (Some(t), None) | (None, Some(t)) => t.to_owned(),
        (None, None) => "an exception".to_owned(),
    };
    p.insert("error".into(), error.into());
    if let Some(trace) = a.str(&["exception.stacktrace"]) {
        p.insert("stacktrace".into(), trace.into());
    }
    p
}

/// Messages arrive as structured values or, from some instrumentations, as their JSON text:
/// either way they are kept as JSON structure.
fn structured(v: &Value) -> Json {
    if let Value::StringValue(s) = v {
        if let Ok(parsed @ (Json::Array(_) | Json::Object(_))) = serde_json::from_str::<Json>(s) {
            return parsed;
        }
    }
    json_of(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn no_price(_: &str, _: i64, _: i64) -> Option<f64> {
        None
    }

    #[test]
    fn an_inference_event_is_a_call_with_its_messages_structured_whatever_their_encoding() {
        let part = |text: &str| {
            Value::KvlistValue(KeyValueList { values: vec![kv("type", s("text")), kv("content", s(text))] })
        };
        let message = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("role", s("user")),
                kv("parts", Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(part("hi")) }] })),
            ],
        });
        let attrs = vec![
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.request.model", s("gpt-4o")),
            kv("gen_ai.usage.input_tokens", Value::IntValue(12)),
            kv("gen_ai.usage.output_tokens", s("30")),
            kv(
                "gen_ai.input.messages",
                Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(message) }] }),
            ),
            kv("gen_ai.output.messages", s(r#"[{"role":"assistant","parts":[{"type":"text","content":"hello"}]}]"#)),
        ];
        let price = |m: &str, i: i64, o: i64| (m == "gpt-4o").then(|| (i + o) as f64 * 1e-6);
        let steps = steps(Some(INFERENCE), Attrs(&attrs), None, &price);
        assert_eq!(steps.len(), 1);
        let p = Json::Object(steps[0].payload.clone());
        assert_eq!(steps[0].kind, "operation.external_call");
        assert_eq!((&p["service"], &p["model"], &p["success"]), (&"openai".into(), &"gpt-4o".into(), &true.into()));
        assert_eq!((&p["token_spend_delta"], &p["cost_usd"]), (&42.into(), &4.2e-5.into()));
        assert_eq!(p["input_messages"][0]["parts"][0]["content"], "hi", "a structured value: {p}");
        assert_eq!(p["output_messages"][0]["parts"][0]["content"], "hello", "JSON text: {p}");

        let body = Value::KvlistValue(KeyValueList { values: vec![attrs[5].clone()] });
        let from_body = super::steps(Some(INFERENCE), Attrs(&attrs[..2]), Some(&body), &price);
        let p = Json::Object(from_body[0].payload.clone());
        assert_eq!(p["input_messages"][0]["parts"][0]["content"], "hi", "in the body: {p}");
    }

    #[test]
    fn an_exception_is_a_failed_call_and_other_records_no_step() {
        let attrs = vec![kv("exception.type", s("TimeoutError")), kv("exception.message", s("read timed out"))];
        let steps = steps(Some("exception"), Attrs(&attrs), None, &no_price);
        let p = &steps[0].payload;
        assert_eq!((&p["success"], &p["error"]), (&Json::from(false), &Json::from("TimeoutError: read timed out")));
        let other = vec![kv("gen_ai.usage.input_tokens", Value::IntValue(3))];
        assert!(super::steps(Some("gen_ai.user.message"), Attrs(&other), None, &no_price).is_empty());
        assert!(super::steps(None, Attrs(&other), None, &no_price).is_empty());
    }

    #[test]
    fn a_failed_inference_names_its_error() {
        let attrs = vec![kv("gen_ai.request.model", s("m")), kv("error.type", s("rate_limited"))];
        let steps = steps(Some(INFERENCE), Attrs(&attrs), None, &no_price);
        let p = &steps[0].payload;
        assert_eq!((&p["success"], &p["error"]), (&Json::from(false), &Json::from("rate_limited")));
        assert!(p.get("cost_note").is_none(), "no tokens, nothing to price");
    }
}
