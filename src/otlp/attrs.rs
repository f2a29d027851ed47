//! A span's attributes, read by key across the three dialects, and as JSON.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use serde_json::{Map, Value as Json};

/// Borrowed attributes with lookups by key. Spans carry tens of attributes: a linear scan beats
/// building a map.
#[derive(Clone, Copy)]
pub(crate) struct Attrs<'a>(pub(crate) &'a [KeyValue]);

impl<'a> Attrs<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The first of `keys` that holds a non-empty string.
    pub(crate) fn str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|k| match self.get(k) {
            Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
    }

    /// The first of `keys` that holds a non-negative integer (or an integral double, or a
    /// string of digits: instrumentations disagree).
    pub(crate) fn count(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|k| match self.get(k)? {
            Value::IntValue(n) if *n >= 0 => Some(*n),
            Value::DoubleValue(d) if d.fract() == 0.0 && (0.0..9.0e15).contains(d) => Some(*d as i64),
            Value::StringValue(s) => s.trim().parse::<i64>().ok().filter(|n| *n >= 0),
            _ => None,
        })
    }

    /// The first of `keys` as JSON: a string holding a JSON object or array is parsed, since
    /// tool arguments and results usually travel as serialised JSON.
    pub(crate) fn json(&self, keys: &[&str]) -> Option<Json> {
        keys.iter().find_map(|k| {
            let v = self.get(k)?;
            if let Value::StringValue(s) = v {
                let t = s.trim_start();
                if t.starts_with('{') || t.starts_with('[') {
                    if let Ok(parsed) = serde_json::from_str::<Json>(s) {
                        return Some(parsed);
                    }
                }
            }
            Some(value(v))
        })
    }

    /// Every attribute as a JSON object (a repeated key keeps its last value, as OTel SDKs do).
    pub(crate) fn to_json(self) -> Json {
        Json::Object(object(self.0))
    }
}

fn object(kvs: &[KeyValue]) -> Map<String, Json> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, any))).collect()
}

fn any(v: &AnyValue) -> Json {
    v.value.as_ref().map_or(Json::Null, value)
}

/// One attribute value as JSON. Non-finite doubles, which JSON cannot hold, become strings;
/// bytes become hex.
pub(crate) fn value(v: &Value) -> Json {
    match v {
        Value::StringValue(s) => Json::String(s.clone()),
        Value::BoolValue(b) => Json::Bool(*b),
        Value::IntValue(n) => Json::from(*n),
        Value::DoubleValue(d) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Json::String(d.to_string()), Json::Number)
        }
        Value::ArrayValue(a) => Json::Array(a.values.iter().map(any).collect()),
        Value::KvlistValue(kv) => Json::Object(object(&kv.values)),
        Value::BytesValue(b) => Json::String(hex(b)),
        // String tables belong to profiles, not traces.
        Value::StringValueStrindex(_) => Json::Null,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
