//! Model list prices, so an event that names a model and its tokens but no `cost_usd` still counts
//! toward its session's cost (OTLP spans never carry a price, and many AOP agents send only
//! tokens). No I/O: a table, a lookup and arithmetic.
//!
//! A model the table does not know costs nothing, and the session says so: a guessed price would
//! be worse than none, since a budget alert or a spike would then rest on it. So a name matches
//! its own entry, or a snapshot of a listed model (`gpt-4o-2024-08-06`, `claude-3-5-sonnet@20240620`,
//! `gemini-2.5-pro-preview-05-06`), never a sibling that merely shares a prefix (`gpt-4o-mini-tts`,
//! `claude-opus-4-6`, `gemini-1.5-flash-8b` are not their shorter names).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// When the built-in prices were taken.
pub const PRICES_AS_OF: &str = "2026-07-24";

/// USD per million input tokens and per million output tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    input_per_mtok: f64,
    output_per_mtok: f64,
}

/// Why a price was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceError {
    #[error("{field} must be a number of USD per million tokens, 0 or more; got {value}")]
    Invalid { field: &'static str, value: f64 },
}

impl Price {
    /// A price in USD per million tokens; both figures finite and not negative.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Result<Price, PriceError> {
        for (field, value) in [("input_per_mtok", input_per_mtok), ("output_per_mtok", output_per_mtok)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(PriceError::Invalid { field, value });
            }
        }
        Ok(Price { input_per_mtok, output_per_mtok })
    }

    pub fn input_per_mtok(&self) -> f64 {
        self.input_per_mtok
    }

    pub fn output_per_mtok(&self) -> f64 {
        self.output_per_mtok
    }

    /// What these tokens cost, in USD. A negative count (a broken counter) counts as none rather
    /// than as a refund.
    pub fn cost(&self, input_tokens: i64, output_tokens: i64) -> f64 {
        let (i, o) = (input_tokens.max(0) as f64, output_tokens.max(0) as f64);
        (i * self.input_per_mtok + o * self.output_per_mtok) / 1e6
    }
}

/// A price table by model name: the built-in one, with the user's entries laid over it.
#[derive(Clone, PartialEq)]
pub struct Prices {
    /// Keys in lower case: lookups ignore case.
    by_model: HashMap<String, Price>,
    as_of: &'static str,
}

impl fmt::Debug for Prices {
    // The whole table would drown whatever configuration it is printed with.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prices").field("as_of", &self.as_of).field("models", &self.by_model.len()).finish()
    }
}

impl Prices {
    /// The built-in table ([`BUILTIN`]), taken on [`PRICES_AS_OF`].
    pub fn builtin() -> Prices {
        let by_model =
            BUILTIN.iter().map(|&(name, i, o)| (name.to_owned(), Price { input_per_mtok: i, output_per_mtok: o }));
        Prices { by_model: by_model.collect(), as_of: PRICES_AS_OF }
    }

    /// The built-in table, built once and shared: every default configuration holds one.
    pub(crate) fn shared_builtin() -> Arc<Prices> {
        static BUILTIN_TABLE: OnceLock<Arc<Prices>> = OnceLock::new();
        Arc::clone(BUILTIN_TABLE.get_or_init(|| Arc::new(Prices::builtin())))
    }

    /// The date of the built-in prices (entries laid over them keep it: they are the user's).
    pub fn as_of(&self) -> &str {
        self.as_of
    }

    /// Adds entries, replacing any of the same name (ignoring case).
    pub fn overlay(&mut self, entries: impl IntoIterator<Item = (String, Price)>) {
        for (name, price) in entries {
            self.by_model.insert(name.trim().to_lowercase(), price);
        }
    }

    /// The price of `model`, ignoring case: its own entry (as given, then without a provider
    /// prefix such as `openai/`, `models/` or Bedrock's `us.anthropic.`), else the longest entry
    /// it is a snapshot of: the entry's name, then `-`, `@` or `:`, then a snapshot tag (a date or
    /// a number of 3 digits or more, `latest`, `preview`, `v2`). `None` for anything else.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        let name = model.trim().to_lowercase();
        if let Some(p) = self.by_model.get(&name) {
            return Some(*p);
        }
        let bare = without_provider(&name);
        if let Some(p) = self.by_model.get(bare) {
            return Some(*p);
        }
        // From the right: the first hit is the longest entry.
        bare.char_indices()
            .rev()
            .filter(|&(i, c)| matches!(c, '-' | '@' | ':') && i > 0)
            .filter(|&(i, _)| is_snapshot_tag(&bare[i + 1..]))
            .find_map(|(i, _)| self.by_model.get(&bare[..i]).copied())
    }
}

/// `openai/gpt-4o` → `gpt-4o`, `publishers/google/models/gemini-1.5-pro` → `gemini-1.5-pro`,
/// `us.anthropic.claude-3-7-sonnet-…` → `claude-3-7-sonnet-…`. Only leading segments of letters
/// followed by a dot are dropped, which no model name of the table starts with.
fn without_provider(name: &str) -> &str {
    let mut rest = name.rsplit('/').next().unwrap_or(name);
    while let Some((head, tail)) = rest.split_once('.') {
        if head.is_empty() || !head.bytes().all(|b| b.is_ascii_lowercase()) {
            break;
        }
        rest = tail;
    }
    rest
}

/// What may follow a model's name in one of its snapshots: `2024-08-06`, `20241022`, `0125`,
/// `002`, `latest`, `preview-05-06`, `v2@20241022`. A word (`mini`, `tts`, `realtime`) or a
/// one- or two-digit number (`claude-opus-4-5`) names another model, priced differently.
fn is_snapshot_tag(tag: &str) -> bool {
    let first = tag.split(['-', '@', ':', '.', '_']).next().unwrap_or("");
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (first.len() >= 3 && digits(first))
        || first == "latest"
        || first == "preview"
        || first.strip_prefix('v').is_some_and(digits)
}

/// The built-in table: `(model, USD per million input tokens, USD per million output tokens)`.
///
/// List prices as published by the providers on [`PRICES_AS_OF`]: standard tier, no batch or
/// cached-input discount, and the shortest-context tier where the price depends on the prompt's
/// length (Gemini 1.5 up to 128K tokens, Gemini 2.5 Pro and Claude Sonnet 4 up to 200K). Models
/// retired by then keep their last list price, so older sessions are still priced. Google's prices
/// are the Gemini API's (Vertex AI lists some models differently). Gemini 2.0 Pro never had a
/// list price, so it has no entry.
const BUILTIN: &[(&str, f64, f64)] = &[
    // OpenAI
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-2024-05-13", 5.00, 15.00), // the first snapshot kept its launch price
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-5.1", 1.25, 10.00),
    ("o1", 15.00, 60.00),
    ("o1-mini", 1.10, 4.40),
    ("o1-pro", 150.00, 600.00),
    ("o3", 2.00, 8.00),
    ("o3-mini", 1.10, 4.40),
    ("o3-pro", 20.00, 80.00),
    ("o4-mini", 1.10, 4.40),
    ("gpt-4-turbo", 10.00, 30.00),
    ("gpt-4-1106-preview", 10.00, 30.00), // GPT-4 Turbo previews, under GPT-4's name
    ("gpt-4-1106-vision-preview", 10.00, 30.00),
    ("gpt-4-0125-preview", 10.00, 30.00),
    ("gpt-4", 30.00, 60.00),
    ("gpt-4-32k", 60.00, 120.00),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("gpt-3.5-turbo-1106", 1.00, 2.00),
    ("gpt-3.5-turbo-0613", 1.50, 2.00),
    ("gpt-3.5-turbo-0301", 1.50, 2.00),
    ("gpt-3.5-turbo-16k", 3.00, 4.00),
    ("gpt-3.5-turbo-instruct", 1.50, 2.00),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.0),
    // Anthropic
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-3-sonnet", 3.00, 15.00),
    ("claude-3-opus", 15.00, 75.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-sonnet-4-0", 3.00, 15.00),
    ("claude-sonnet-4-5", 3.00, 15.00),
    ("claude-haiku-4-5", 1.00, 5.00),
    ("claude-opus-4", 15.00, 75.00),
    ("claude-opus-4-0", 15.00, 75.00),
    ("claude-opus-4-1", 15.00, 75.00),
    ("claude-opus-4-5", 5.00, 25.00),
    // Google
    ("gemini-1.5-pro", 1.25, 5.00),
    ("gemini-1.5-flash", 0.075, 0.30),
    ("gemini-1.5-flash-8b", 0.0375, 0.15),
    ("gemini-2.0-flash", 0.10, 0.40),
    ("gemini-2.0-flash-lite", 0.075, 0.30),
    ("gemini-2.5-pro", 1.25, 10.00),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.5-flash-lite", 0.10, 0.40),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn price(model: &str) -> Option<(f64, f64)> {
        Prices::builtin().lookup(model).map(|p| (p.input_per_mtok(), p.output_per_mtok()))
    }

    #[test]
    fn lookup() {
        let cases: &[(&str, Option<(f64, f64)>)] = &[
            // Exact names, in any case and with spaces around.
            ("gpt-4o", Some((2.50, 10.00))),
            ("GPT-4o", Some((2.50, 10.00))),
            (" gpt-4o-mini ", Some((0.15, 0.60))),
            ("text-embedding-3-small", Some((0.02, 0.0))),
            // Snapshots of a listed model.
            ("gpt-4o-2024-08-06", Some((2.50, 10.00))),
            ("gpt-4o-2024-05-13", Some((5.00, 15.00))),
            ("gpt-4o-mini-2024-07-18", Some((0.15, 0.60))),
            ("gpt-4.1-nano-2025-04-14", Some((0.10, 0.40))),
            ("gpt-3.5-turbo-0125", Some((0.50, 1.50))),
            ("gpt-3.5-turbo-16k-0613", Some((3.00, 4.00))),
            ("gpt-4-0613", Some((30.00, 60.00))),
            ("gpt-4-turbo-preview", Some((10.00, 30.00))),
            ("o1-preview", Some((15.00, 60.00))),
            ("o3-mini-2025-01-31", Some((1.10, 4.40))),
            ("claude-3-5-sonnet-20241022", Some((3.00, 15.00))),
            ("claude-3-5-sonnet-latest", Some((3.00, 15.00))),
            ("claude-3-5-sonnet-v2@20241022", Some((3.00, 15.00))),
            ("claude-opus-4@20250514", Some((15.00, 75.00))),
            ("claude-opus-4-5-20251101", Some((5.00, 25.00))),
            ("claude-opus-4-1-20250805", Some((15.00, 75.00))),
            ("claude-haiku-4-5-20251001", Some((1.00, 5.00))),
            ("gemini-1.5-pro-002", Some((1.25, 5.00))),
            ("gemini-2.0-flash-001", Some((0.10, 0.40))),
            ("gemini-2.5-pro-preview-05-06", Some((1.25, 10.00))),
            ("gemini-1.5-flash-8b-001", Some((0.0375, 0.15))),
            // Provider prefixes.
            ("openai/gpt-4o", Some((2.50, 10.00))),
            ("models/gemini-1.5-flash", Some((0.075, 0.30))),
            ("publishers/google/models/gemini-2.5-flash", Some((0.30, 2.50))),
            ("anthropic/claude-3-7-sonnet-20250219", Some((3.00, 15.00))),
            ("anthropic.claude-3-5-haiku-20241022-v1:0", Some((0.80, 4.00))),
            ("us.anthropic.claude-sonnet-4-20250514-v1:0", Some((3.00, 15.00))),
            // Siblings that share a prefix are other models: no price rather than a wrong one.
            ("gpt-4o-mini-tts", None),
            ("gpt-4o-realtime-preview", None),
            ("o4-mini-deep-research", None),
            ("claude-opus-4-6", None),
            ("claude-sonnet-4-7-20270101", None),
            ("gpt-5-codex", None),
            ("gpt-5.2", None),
            ("gemini-2.0-flash-exp", None),
            ("gemini-1.5-pro-exp-0801", None),
            ("openrouter/openai/gpt-4o:free", None),
            // Not a model at all, or one the table does not list.
            ("", None),
            ("-", None),
            ("gpt", None),
            ("gpt-4o-", None),
            ("my-local-llama", None),
            ("mistral-large-2411", None),
        ];
        for (model, want) in cases {
            assert_eq!(price(model), *want, "{model:?}");
        }
    }

    #[test]
    fn the_longest_listed_name_wins() {
        let mut prices = Prices::builtin();
        prices.overlay([("claude-3-5-sonnet-20241022".to_owned(), Price::new(7.0, 7.0).unwrap())]);
        let input = |m: &str| prices.lookup(m).map(|p| p.input_per_mtok());
        assert_eq!(input("claude-3-5-sonnet-20241022-v2:0"), Some(7.0));
        assert_eq!(input("claude-3-5-sonnet-20240620-v1:0"), Some(3.0));
    }

    #[test]
    fn cost() {
        let p = Price::new(2.5, 10.0).unwrap();
        // (input, output, USD)
        let cases = [
            (1_000_000, 0, 2.5),
            (0, 1_000_000, 10.0),
            (1000, 500, 0.0075),
            (0, 0, 0.0),
            (-5, 1000, 0.01),
            (1000, -5, 0.0025),
        ];
        for (i, o, want) in cases {
            assert!((p.cost(i, o) - want).abs() < 1e-12, "{i} in, {o} out: {} != {want}", p.cost(i, o));
        }
        let free = Price::new(0.0, 0.0).unwrap();
        assert_eq!(free.cost(i64::MAX, i64::MAX), 0.0);
        assert!(Price::new(1.0, 1.0).unwrap().cost(i64::MAX, i64::MAX).is_finite());
    }

    #[test]
    fn prices_must_be_finite_and_not_negative() {
        for (i, o) in [(-1.0, 1.0), (1.0, -0.01), (f64::NAN, 1.0), (1.0, f64::INFINITY)] {
            assert!(Price::new(i, o).is_err(), "{i}, {o}");
        }
        let e = Price::new(1.0, -2.0).unwrap_err();
        assert_eq!(e.to_string(), "output_per_mtok must be a number of USD per million tokens, 0 or more; got -2");
        assert!(Price::new(0.0, 0.0).is_ok());
    }

    #[test]
    fn overlay_replaces_and_extends() {
        let mut prices = Prices::builtin();
        prices.overlay([
            ("GPT-4o".to_owned(), Price::new(1.0, 2.0).unwrap()),
            ("my-model".to_owned(), Price::new(1.5, 6.0).unwrap()),
            ("openrouter/openai/gpt-4o:free".to_owned(), Price::new(0.0, 0.0).unwrap()),
        ]);
        let got = |m: &str| prices.lookup(m).map(|p| (p.input_per_mtok(), p.output_per_mtok()));
        let cases: &[(&str, Option<(f64, f64)>)] = &[
            ("gpt-4o", Some((1.0, 2.0))),
            ("gpt-4o-2024-08-06", Some((1.0, 2.0))),
            ("gpt-4o-2024-05-13", Some((5.0, 15.0))),
            ("gpt-4o-mini", Some((0.15, 0.60))),
            ("My-Model", Some((1.5, 6.0))),
            ("my-model-20260101", Some((1.5, 6.0))),
            ("openrouter/openai/gpt-4o:free", Some((0.0, 0.0))),
            ("openrouter/openai/gpt-4o", Some((1.0, 2.0))),
        ];
        for (model, want) in cases {
            assert_eq!(got(model), *want, "{model:?}");
        }
        assert_eq!(prices.as_of(), PRICES_AS_OF);
        assert_ne!(prices, Prices::builtin());
    }

    #[test]
    fn the_builtin_table_is_sane() {
        let mut seen = std::collections::HashSet::new();
        for &(name, i, o) in BUILTIN {
            assert_eq!(name, name.to_lowercase(), "{name}: keys are lower case");
            assert!(seen.insert(name), "{name} twice");
            assert!(Price::new(i, o).is_ok(), "{name}");
            assert!(i > 0.0, "{name}: a listed model has an input price");
            assert_eq!(price(name), Some((i, o)), "{name}");
        }
        assert!(PRICES_AS_OF.starts_with("20") && PRICES_AS_OF.len() == 10);
        assert_eq!(Prices::builtin().as_of(), PRICES_AS_OF);
        assert_eq!(*Prices::shared_builtin(), Prices::builtin());
    }
}
