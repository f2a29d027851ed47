//! What a span is, read from whichever of the three dialects it speaks: the GenAI semantic
//! conventions (`gen_ai.*`), OpenInference (`openinference.span.kind`, `llm.*`), OpenLLMetry
//! (`traceloop.*`, `llm.*`). `OTLP.md`, Span classification: first rule that matches.

use super::attrs::Attrs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Tool,
    Llm,
    Agent,
    Other,
}

pub(crate) fn classify(a: Attrs<'_>) -> Class {
    // An operation name aop does not know (a newer convention's) says nothing: the later rules
    // may still recognise the span.
    if let Some(op) = a.str(&["gen_ai.operation.name"]) {
        match op {
            "execute_tool" => return Class::Tool,
            "chat" | "text_completion" | "generate_content" | "embeddings" => return Class::Llm,
            "invoke_agent" | "create_agent" => return Class::Agent,
            _ => {}
        }
    }
    if let Some(kind) = a.str(&["openinference.span.kind"]) {
        return match kind.to_ascii_uppercase().as_str() {
            "TOOL" => Class::Tool,
            "LLM" | "EMBEDDING" => Class::Llm,
            "AGENT" => Class::Agent,
            _ => Class::Other,
        };
    }
    if let Some(kind) = a.str(&["traceloop.span.kind"]) {
        return match kind.to_ascii_lowercase().as_str() {
            "tool" => Class::Tool,
            "llm" => Class::Llm,
            "agent" => Class::Agent,
            _ => Class::Other,
        };
    }
    if a.has("gen_ai.tool.name") {
        return Class::Tool;
    }
    if a.str(REQUEST_MODEL).is_some() {
        return Class::Llm;
    }
    Class::Other
}

/// Where each dialect puts what aop reads, most specific first.
pub(crate) const REQUEST_MODEL: &[&str] =
    &["gen_ai.request.model", "llm.model_name", "embedding.model_name", "llm.request.model"];
pub(crate) const RESPONSE_MODEL: &[&str] = &["gen_ai.response.model", "llm.response.model"];
pub(crate) const PROVIDER: &[&str] =
    &["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "openinference.llm.provider"];
pub(crate) const OPERATION: &[&str] = &["gen_ai.operation.name", "llm.request.type"];
pub(crate) const INPUT_TOKENS: &[&str] =
    &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt", "llm.usage.prompt_tokens"];
pub(crate) const OUTPUT_TOKENS: &[&str] = &[
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
];
pub(crate) const TOOL_NAME: &[&str] = &["gen_ai.tool.name", "tool.name"];
pub(crate) const TOOL_CALL_ID: &[&str] = &["gen_ai.tool.call.id", "tool_call.id"];
pub(crate) const TOOL_INPUT: &[&str] = &["gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input"];
pub(crate) const TOOL_OUTPUT: &[&str] = &["gen_ai.tool.call.result", "output.value", "traceloop.entity.output"];
pub(crate) const AGENT_NAME: &[&str] = &["gen_ai.agent.name", "agent.name", "traceloop.entity.name"];
pub(crate) const AGENT_GOAL: &[&str] = &["gen_ai.agent.description", "input.value", "traceloop.entity.input"];
pub(crate) use crate::model::CONVERSATION_ATTRIBUTES as CONVERSATION;

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

    fn kv(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).into(),
                value: Some(AnyValue { value: Some(Value::StringValue((*v).into())) }),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn the_three_dialects() {
        use Class::*;
        let table: &[(&[(&str, &str)], Class)] = &[
            // GenAI semantic conventions
            (&[("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", "search")], Tool),
            (&[("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-4o")], Llm),
            (&[("gen_ai.operation.name", "text_completion")], Llm),
            (&[("gen_ai.operation.name", "generate_content")], Llm),
            (&[("gen_ai.operation.name", "embeddings")], Llm),
            (&[("gen_ai.operation.name", "invoke_agent"), ("gen_ai.agent.name", "a")], Agent),
            (&[("gen_ai.operation.name", "create_agent")], Agent),
            // an unknown operation falls through to the next rules
            (&[("gen_ai.operation.name", "retrieve"), ("gen_ai.request.model", "m")], Llm),
            (&[("gen_ai.operation.name", "retrieve")], Other),
            // the first rule wins over later ones
            (&[("gen_ai.operation.name", "execute_tool"), ("openinference.span.kind", "LLM")], Tool),
            // OpenInference
            (&[("openinference.span.kind", "TOOL")], Tool),
            (&[("openinference.span.kind", "LLM"), ("llm.model_name", "gpt-4o")], Llm),
            (&[("openinference.span.kind", "EMBEDDING")], Llm),
            (&[("openinference.span.kind", "AGENT")], Agent),
            (&[("openinference.span.kind", "CHAIN"), ("llm.model_name", "gpt-4o")], Other),
            (&[("openinference.span.kind", "RETRIEVER")], Other),
            // OpenLLMetry
            (&[("traceloop.span.kind", "tool"), ("traceloop.entity.name", "search")], Tool),
            (&[("traceloop.span.kind", "llm")], Llm),
            (&[("traceloop.span.kind", "agent")], Agent),
            (&[("traceloop.span.kind", "workflow")], Other),
            (&[("traceloop.span.kind", "task")], Other),
            (&[("llm.request.type", "chat"), ("gen_ai.system", "openai"), ("gen_ai.request.model", "gpt-4o")], Llm),
            // no dialect: a tool name, a request model
            (&[("gen_ai.tool.name", "search")], Tool),
            (&[("gen_ai.request.model", "claude-sonnet-4")], Llm),
            (&[("http.method", "GET")], Other),
            (&[], Other),
        ];
        for (attrs, want) in table {
            let kvs = kv(attrs);
            assert_eq!(classify(Attrs(&kvs)), *want, "{attrs:?}");
        }
    }
}
