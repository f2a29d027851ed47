//! An event's payload object, parsed at most once per event whoever reads it (session derivation
//! and the detectors both do), with typed getters for the fields AOP names.

use super::price::Prices;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// A payload object. Duplicate keys are tolerated (the last wins); a payload that is not readable
/// JSON reads as empty.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Payload(Map<String, Value>);

impl Payload {
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Payload(map),
            _ => Payload::default(),
        }
    }

    /// Every field, for readers that compare payloads whole.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The first of `keys` holding a string: the two vocabularies name some fields differently.
    pub fn first_str(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.str(k))
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    /// A finite number.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64).filter(|f| f.is_finite())
    }

    /// The first of `keys` holding a finite number.
    pub fn first_num(&self, keys: &[&str]) -> Option<f64> {
        keys.iter().find_map(|k| self.num(k))
    }

    /// A count: an integer, or a finite number rounded to one.
    pub fn count(&self, key: &str) -> Option<i64> {
        let v = self.get(key)?;
        v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f.round() as i64))
    }

    /// The tool's name in either vocabulary.
    pub fn tool(&self) -> Option<&str> {
        self.first_str(&["tool", "tool_name"])
    }

    /// The `cost_usd` the agent reported.
    pub fn reported_cost(&self) -> Option<f64> {
        self.num("cost_usd")
    }

    /// What this payload cost: its reported `cost_usd`; else, when it names a model and that
    /// model's tokens, their price; else nothing. The one rule for session totals and the cost
    /// detectors alike (through [`Event::cost`](super::Event::cost)), so they cannot disagree.
    pub fn cost(&self, prices: &Prices) -> Option<Cost<'_>> {
        if let Some(usd) = self.reported_cost() {
            return Some(Cost::Reported(usd));
        }
        let model = self.first_str(&["model", "llm", "request_model"]).filter(|m| !m.trim().is_empty())?;
        let input = self.count("input_tokens").or_else(|| self.count("prompt_tokens"));
        let output = self.count("output_tokens").or_else(|| self.count("completion_tokens"));
        if input.is_none() && output.is_none() {
            return None;
        }
        Some(match prices.lookup(model) {
            Some(price) => Cost::Priced { usd: price.cost(input.unwrap_or(0), output.unwrap_or(0)), model },
            None => Cost::Unpriced { model },
        })
    }
}

/// One event's cost, as the session's total and the cost rules count it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cost<'a> {
    /// The agent's own `cost_usd`: it wins over any price, since the agent knows its discounts.
    Reported(f64),
    /// No `cost_usd`, but a model with a list price and its tokens.
    Priced { usd: f64, model: &'a str },
    /// Tokens of a model without a price: it costs nothing, and the session says so.
    Unpriced { model: &'a str },
}

impl Cost<'_> {
    /// In USD; `None` for a model without a price.
    pub fn usd(&self) -> Option<f64> {
        match *self {
            Cost::Reported(usd) | Cost::Priced { usd, .. } => Some(usd),
            Cost::Unpriced { .. } => None,
        }
    }

    /// In nano-dollars: sums of integers do not depend on the order of their terms, so a
    /// session's total does not depend on the order its events arrived in.
    pub fn nano_usd(&self) -> Option<i64> {
        self.usd().map(|usd| (usd * 1e9).round() as i64)
    }
}

/// The parsed payload kept beside the event's text. Invisible to equality and cloning cheap: two
/// events are equal by content, whether or not anyone has read their payloads yet.
#[derive(Default)]
pub(crate) struct Parsed(OnceLock<Payload>);

impl Parsed {
    pub(crate) fn get_or_parse(&self, text: &str) -> &Payload {
        self.0.get_or_init(|| Payload::parse(text))
    }
}

impl Clone for Parsed {
    fn clone(&self) -> Self {
        Parsed::default()
    }
}

impl PartialEq for Parsed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
