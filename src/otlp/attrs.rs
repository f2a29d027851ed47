//! A span's attributes, read by key across the three dialects.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};

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

    /// The first of `keys` that is present, whatever its type.
    pub(crate) fn first(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter().find_map(|k| self.get(k))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
