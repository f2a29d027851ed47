//! The payloads of span-derived events, as typed structs serialised straight from the decoded
//! request: no intermediate JSON tree, so a span costs a few allocations, not one per value.

use super::attrs::hex;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A span's identity: in every event derived from it.
#[derive(Serialize)]
pub(crate) struct Identity<'a> {
    pub(crate) trace_id: &'a str,
    pub(crate) span_id: &'a str,
    pub(crate) parent_span_id: Option<&'a str>,
    pub(crate) name: &'a str,
}

/// The identity and everything else the span carried.
#[derive(Serialize)]
pub(crate) struct Full<'a> {
    pub(crate) trace_id: &'a str,
    pub(crate) span_id: &'a str,
    pub(crate) parent_span_id: Option<&'a str>,
    pub(crate) name: &'a str,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<&'a str>,
    /// Absent on `otel.span`, which has them at the top of its payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attributes: Option<Attributes<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) events: Vec<SpanEvent<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) links: Vec<Link>,
}

#[derive(Serialize)]
pub(crate) struct SpanEvent<'a> {
    pub(crate) name: &'a str,
    pub(crate) time: String,
    pub(crate) attributes: Attributes<'a>,
}

#[derive(Serialize)]
pub(crate) struct Link {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
}

#[derive(Serialize)]
pub(crate) struct ToolStart<'a> {
    pub(crate) tool: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input: Option<Loose<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_call_id: Option<&'a str>,
    pub(crate) otel: Identity<'a>,
}

#[derive(Serialize)]
pub(crate) struct ToolEnd<'a> {
    pub(crate) tool: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_call_id: Option<&'a str>,
    pub(crate) success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output_summary: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) latency_ms: f64,
    pub(crate) otel: Full<'a>,
}

#[derive(Serialize)]
pub(crate) struct LlmCall<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token_spend_delta: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_note: Option<String>,
    pub(crate) latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) success: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) otel: Full<'a>,
}

#[derive(Serialize)]
pub(crate) struct Spawn<'a> {
    pub(crate) child_agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) goal: Option<&'a str>,
    pub(crate) otel: Full<'a>,
}

#[derive(Serialize)]
pub(crate) struct OtherSpan<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    pub(crate) duration_ms: f64,
    pub(crate) attributes: Attributes<'a>,
    pub(crate) otel: Full<'a>,
}

#[derive(Serialize)]
pub(crate) struct Ended<'a> {
    pub(crate) outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error_message: Option<String>,
    pub(crate) otel: Identity<'a>,
}

/// Attributes as a JSON object. A repeated key keeps its last value, as OTel SDKs do, so the
/// object never has two members of one name.
#[derive(Clone, Copy)]
pub(crate) struct Attributes<'a>(pub(crate) &'a [KeyValue]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kvs = self.0;
        let later = |i: usize| kvs[i + 1..].iter().any(|kv| kv.key == kvs[i].key);
        // Repeats are rare: look for them only in lists short enough to scan.
        let mut map = s.serialize_map(None)?;
        for (i, kv) in kvs.iter().enumerate() {
            if kvs.len() <= 256 && later(i) {
                continue;
            }
            map.serialize_entry(&kv.key, &Any(kv.value.as_ref().and_then(|v| v.value.as_ref())))?;
        }
        map.end()
    }
}

/// One attribute value. Non-finite doubles, which JSON cannot hold, are strings; bytes are hex.
pub(crate) struct Any<'a>(pub(crate) Option<&'a Value>);

impl Serialize for Any<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None | Some(Value::StringValueStrindex(_)) => s.serialize_none(),
            Some(Value::StringValue(v)) => s.serialize_str(v),
            Some(Value::BoolValue(v)) => s.serialize_bool(*v),
            Some(Value::IntValue(v)) => s.serialize_i64(*v),
            Some(Value::DoubleValue(v)) if v.is_finite() => s.serialize_f64(*v),
            Some(Value::DoubleValue(v)) => s.serialize_str(&v.to_string()),
            Some(Value::BytesValue(v)) => s.serialize_str(&hex(v)),
            Some(Value::ArrayValue(a)) => {
                let mut seq = s.serialize_seq(Some(a.values.len()))?;
                for v in &a.values {
                    seq.serialize_element(&Any(v.value.as_ref()))?;
                }
                seq.end()
            }
            Some(Value::KvlistValue(kv)) => Attributes(&kv.values).serialize(s),
        }
    }
}

/// A value that is JSON when its text is a JSON object or array (tool arguments usually travel
/// serialised), and otherwise the attribute as it is.
pub(crate) enum Loose<'a> {
    Json(&'a RawValue),
    Value(&'a Value),
}

impl<'a> Loose<'a> {
    pub(crate) fn of(v: &'a Value) -> Loose<'a> {
        if let Value::StringValue(s) = v {
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') {
                if let Ok(raw) = serde_json::from_str::<&RawValue>(s) {
                    return Loose::Json(raw);
                }
            }
        }
        Loose::Value(v)
    }
}

impl Serialize for Loose<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Loose::Json(raw) => raw.serialize(s),
            Loose::Value(v) => Any(Some(v)).serialize(s),
        }
    }
}

/// A value as text: a string as it is, anything else as its JSON.
pub(crate) enum Text<'a> {
    Str(&'a str),
    Json(String),
}

impl<'a> Text<'a> {
    pub(crate) fn of(v: &'a Value) -> Text<'a> {
        match v {
            Value::StringValue(s) => Text::Str(s),
            other => Text::Json(serde_json::to_string(&Any(Some(other))).unwrap_or_default()),
        }
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::Str(v) => s.serialize_str(v),
            Text::Json(v) => s.serialize_str(v),
        }
    }
}
