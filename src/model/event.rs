//! The AOP event envelope: parsing and validation of one event, with no I/O.
//!
//! "Parse, don't validate": [`Event::parse`] is the only way to obtain an [`Event`] from outside
//! (the collector's own derived events come from [`Event::derived`], which gives exactly what
//! parsing their text would), so every `Event`
//! in the program has passed the rules of `AOP.md`. The client's bytes are kept (only insignificant
//! whitespace is removed), so what is stored and streamed is what the agent sent.

use super::payload::{Cost, Parsed, Payload};
use super::price::Prices;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Largest accepted event, in bytes of its JSON text (as sent).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Deepest accepted nesting of objects and arrays, envelope included.
pub(crate) const MAX_DEPTH: usize = 64;
/// Longest accepted `session_id`, `agent_id` and `type`, in characters.
pub(crate) const MAX_ID_CHARS: usize = 128;

/// Why an event was rejected. The message names the field, for a person reading the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event is larger than [`MAX_EVENT_BYTES`]; answered with 413.
    #[error("event is {0} bytes, larger than the 64 KiB limit")]
    TooLarge(usize),
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("event must be a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {problem}")]
    Invalid { field: &'static str, problem: String },
}

impl EventError {
    fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        EventError::Invalid { field, problem: problem.into() }
    }
}

/// A validated AOP event.
#[derive(Clone, PartialEq)]
pub struct Event {
    pub session_id: String,
    pub parent_session_id: Option<String>,
    pub agent_id: String,
    /// The envelope's `agent_version`, when the SDK puts it there.
    pub agent_version: Option<String>,
    pub sequence: i64,
    /// Exactly as the agent sent it: the API returns timestamps unchanged.
    pub timestamp: String,
    /// `timestamp` as microseconds since the Unix epoch, for ordering and detectors.
    pub ts_us: i64,
    pub kind: String,
    /// The whole event object as sent, without insignificant whitespace: one line of JSON.
    raw: String,
    /// Byte range of the payload's value inside `raw`.
    payload_at: (usize, usize),
    /// The payload, parsed when first asked for.
    parsed: Parsed,
    /// Byte range of the sequence's value inside `raw`.
    sequence_at: (usize, usize),
    /// Set on events derived from an OpenTelemetry span: which span, and which of its events.
    span_ref: Option<SpanRef>,
}

/// What identifies an event derived from a span (or a log record), whatever its content: the
/// span's id and the event's role in it (or the record's id). An exporter that retries resends the span, maybe in another batch, so
/// what was derived from it (an agent's name found in the batch, a price) may differ while it is
/// still the same event: the store recognises retries by this, not by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRef {
    /// 16 lowercase hex digits; empty for the trace's own `session.started`.
    pub span_id: String,
    pub role: SpanRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanRole {
    /// `session.started`, once per trace.
    Trace,
    /// `operation.tool_start`, the opening half of a tool span.
    Start,
    /// `session.ended`, from the root span.
    End,
    /// The span's own event (tool end, LLM call, agent spawn, `otel.span`), or a log record's.
    Main,
}

impl SpanRole {
    pub fn of_kind(kind: &str) -> SpanRole {
        match kind {
            "session.started" => SpanRole::Trace,
            "operation.tool_start" => SpanRole::Start,
            "session.ended" => SpanRole::End,
            _ => SpanRole::Main,
        }
    }
}

impl SpanRef {
    /// The reference of a stored event's JSON text: its type and `payload.otel.span_id`. `None`
    /// when it was not derived from a span.
    pub fn of_stored(body: &str) -> Option<SpanRef> {
        #[derive(Deserialize)]
        struct Stored {
            #[serde(rename = "type")]
            kind: String,
            payload: StoredPayload,
        }
        #[derive(Deserialize)]
        struct StoredPayload {
            otel: Option<StoredOtel>,
        }
        #[derive(Deserialize)]
        struct StoredOtel {
            #[serde(default)]
            span_id: Option<String>,
            #[serde(default)]
            record_id: Option<String>,
        }
        let s: Stored = serde_json::from_str(body).ok()?;
        let otel = s.payload.otel?;
        // An event derived from a log record is known by the record's id, which never looks like
        // a span's (it starts with `r`), even where the record names the span it was logged in.
        let id = otel.record_id.or(otel.span_id).unwrap_or_default();
        Some(SpanRef { span_id: id, role: SpanRole::of_kind(&s.kind) })
    }

    /// Whether `body` (a stored event) is this span's event: a cheap substring test first, since
    /// most bodies compared are another span's.
    pub fn matches_stored(&self, body: &str) -> bool {
        if !self.span_id.is_empty() && !body.contains(&self.span_id) {
            return false;
        }
        SpanRef::of_stored(body).is_some_and(|r| r == *self)
    }
}

impl fmt::Debug for Event {
    // Payloads may carry user data: keep them out of debug output and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("session_id", &self.session_id)
            .field("sequence", &self.sequence)
            .field("type", &self.kind)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// The envelope with every field borrowed unparsed, so each can be checked on its own and named in
/// the error. serde rejects duplicate keys here, which closes the "which `type` wins" ambiguity.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default, borrow)]
    spec: Field<'a>,
    #[serde(default, borrow)]
    session_id: Field<'a>,
    #[serde(default, borrow)]
    parent_session_id: Field<'a>,
    #[serde(default, borrow)]
    agent_id: Field<'a>,
    #[serde(default, borrow)]
    agent_version: Field<'a>,
    #[serde(default, borrow)]
    sequence: Field<'a>,
    #[serde(default, borrow)]
    timestamp: Field<'a>,
    #[serde(default, borrow, rename = "type")]
    kind: Field<'a>,
    #[serde(default, borrow)]
    payload: Field<'a>,
}

/// A field that distinguishes absent from `null` (serde's `Option` folds them together).
#[derive(Default)]
struct Field<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|v| Field(Some(v)))
    }
}

impl Event {
    /// Parses and validates one event from its JSON text. Total: never panics, always a reason.
    pub fn parse(text: &str) -> Result<Event, EventError> {
        if text.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(text.len()));
        }
        let (raw, depth) = minify(text);
        // Whitespace can only be dropped from valid JSON: in `1 2` or `t rue` it is what makes
        // the text invalid, and dropping it would accept (and alter) what the client sent.
        if raw.len() != text.len() {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| EventError::NotJson(e.to_string()))?;
        }
        if depth > MAX_DEPTH {
            return Err(EventError::invalid(
                "payload",
                format!("is nested {depth} levels deep, more than {MAX_DEPTH}"),
            ));
        }
        match raw.as_bytes().first() {
            Some(b'{') => {}
            Some(b'[') => return Err(EventError::NotObject("an array")),
            Some(b'"') => return Err(EventError::NotObject("a string")),
            Some(b't' | b'f') => return Err(EventError::NotObject("a boolean")),
            Some(b'n') => return Err(EventError::NotObject("null")),
            Some(b'-' | b'0'..=b'9') => return Err(EventError::NotObject("a number")),
            None => return Err(EventError::NotJson("empty body".into())),
            Some(_) => {
                // Not JSON at all: let serde describe where it breaks.
                let err = serde_json::from_str::<&RawValue>(&raw).err();
                return Err(EventError::NotJson(err.map_or_else(|| "invalid".into(), |e| e.to_string())));
            }
        }
        let env: RawEnvelope<'_> = serde_json::from_str(&raw).map_err(|e| EventError::NotJson(e.to_string()))?;

        let spec = string_field("spec", env.spec.0)?;
        let minor = spec.strip_prefix("aop/1.");
        if !minor.is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())) {
            return Err(EventError::invalid("spec", format!("must be \"aop/1.x\", got {spec:?}")));
        }
        let session_id = string_field("session_id", env.session_id.0)?;
        check_session_id("session_id", &session_id)?;
        let parent_session_id = match env.parent_session_id.0 {
            None => None,
            Some(v) if v.get() == "null" => None,
            Some(v) => {
                let p = string_value("parent_session_id", v, "must be a string or null")?;
                check_session_id("parent_session_id", &p)?;
                Some(p)
            }
        };
        let agent_id = string_field("agent_id", env.agent_id.0)?;
        check_label("agent_id", &agent_id)?;
        let agent_version = match env.agent_version.0 {
            None => None,
            Some(v) if v.get() == "null" => None,
            Some(v) => Some(string_value("agent_version", v, "must be a string or null")?),
        };
        let (sequence, sequence_at) = match env.sequence.0 {
            None => return Err(EventError::Missing("sequence")),
            Some(v) => (parse_sequence(v.get())?, span_of(&raw, v.get())),
        };
        let timestamp = string_field("timestamp", env.timestamp.0)?;
        let ts_us = parse_timestamp(&timestamp).ok_or_else(|| {
            EventError::invalid("timestamp", format!("must be an RFC 3339 date-time with a zone, got {timestamp:?}"))
        })?;
        let kind = string_field("type", env.kind.0)?;
        if kind.is_empty() {
            return Err(EventError::invalid("type", "must not be empty"));
        }
        if kind.chars().count() > MAX_ID_CHARS {
            return Err(EventError::invalid("type", "must be at most 128 characters"));
        }
        if kind.chars().any(char::is_control) {
            return Err(EventError::invalid("type", "must not contain control characters"));
        }
        let payload = env.payload.0.ok_or(EventError::Missing("payload"))?;
        if !payload.get().starts_with('{') {
            return Err(EventError::invalid("payload", "must be a JSON object"));
        }
        let payload_at = span_of(&raw, payload.get());
        Ok(Event {
            session_id,
            parent_session_id,
            agent_id,
            agent_version,
            sequence,
            timestamp,
            ts_us,
            kind,
            raw,
            payload_at,
            parsed: Parsed::default(),
            sequence_at,
            span_ref: None,
        })
    }

    /// An event the collector derives itself (from an OpenTelemetry span): the envelope's parts
    /// are valid by construction (a session id and type of the collector's making, an agent name
    /// already made a label, a timestamp from a clock), so only the payload, which carries what
    /// the exporter sent, is checked, as [`Event::parse`] checks it: size, depth, an object. The
    /// result is exactly what `Event::parse` would give for its text (a unit test holds the two
    /// together), without parsing the envelope back.
    pub fn derived(
        session_id: &str,
        parent_session_id: Option<&str>,
        agent_id: &str,
        sequence: i64,
        ts_ns: u64,
        kind: &str,
        payload_json: &str,
    ) -> Result<Event, EventError> {
        let (payload, depth) = minify(payload_json);
        if depth + 1 > MAX_DEPTH {
            return Err(EventError::invalid(
                "payload",
                format!("is nested {} levels deep, more than {MAX_DEPTH}", depth + 1),
            ));
        }
        if !payload.starts_with('{') {
            return Err(EventError::invalid("payload", "must be a JSON object"));
        }
        debug_assert!(check_session_id("session_id", session_id).is_ok() && check_label("agent_id", agent_id).is_ok());
        debug_assert!(parent_session_id.is_none_or(|p| check_session_id("parent_session_id", p).is_ok()));
        let timestamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ns))
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .ok_or_else(|| EventError::invalid("timestamp", "is out of range"))?;
        let agent = serde_json::to_string(agent_id).map_err(|e| EventError::NotJson(e.to_string()))?;
        let parent = parent_session_id.map(|p| format!(r#""parent_session_id":"{p}","#)).unwrap_or_default();
        let head = format!(r#"{{"spec":"aop/1.0","session_id":"{session_id}",{parent}"agent_id":{agent},"sequence":"#);
        let seq_text = sequence.to_string();
        let mid = format!(r#","timestamp":"{timestamp}","type":"{kind}","payload":"#);
        let mut raw = String::with_capacity(head.len() + seq_text.len() + mid.len() + payload.len() + 1);
        raw.push_str(&head);
        let sequence_at = (raw.len(), raw.len() + seq_text.len());
        raw.push_str(&seq_text);
        raw.push_str(&mid);
        let payload_at = (raw.len(), raw.len() + payload.len());
        raw.push_str(&payload);
        raw.push('}');
        if raw.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(raw.len()));
        }
        Ok(Event {
            session_id: session_id.to_owned(),
            parent_session_id: parent_session_id.map(str::to_owned),
            agent_id: agent_id.to_owned(),
            agent_version: None,
            sequence,
            ts_us: (ts_ns / 1000) as i64,
            timestamp,
            kind: kind.to_owned(),
            raw,
            payload_at,
            parsed: Parsed::default(),
            sequence_at,
            span_ref: None,
        })
    }

    /// Marks the event as derived from a span (see [`SpanRef`]).
    pub fn from_span(mut self, span_ref: SpanRef) -> Event {
        self.span_ref = Some(span_ref);
        self
    }

    pub fn span_ref(&self) -> Option<&SpanRef> {
        self.span_ref.as_ref()
    }

    /// The same event at another sequence: where a span's event goes when another span's holds
    /// the sequence it was given.
    pub fn with_sequence(&self, sequence: i64) -> Result<Event, EventError> {
        let (a, b) = self.sequence_at;
        let text = format!("{}{sequence}{}", &self.raw[..a], &self.raw[b..]);
        let mut ev = Event::parse(&text)?;
        ev.span_ref = self.span_ref.clone();
        Ok(ev)
    }

    /// The event as one line of JSON: what is stored, exported and streamed.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The payload object's JSON text.
    pub fn payload_json(&self) -> &str {
        &self.raw[self.payload_at.0..self.payload_at.1]
    }

    /// The payload object, parsed on first use and then shared by every reader.
    pub fn payload(&self) -> &Payload {
        self.parsed.get_or_parse(self.payload_json())
    }

    /// This event's cost ([`Payload::cost`]). A `session.*` event's token counts are totals so
    /// far (`token_spend`, `total_tokens`), not spend of its own, so only its reported `cost_usd`
    /// counts. The payload is not parsed when its text cannot hold a cost.
    pub fn cost(&self, prices: &Prices) -> Option<Cost<'_>> {
        let text = self.payload_json();
        if !text.contains("cost_usd") && !text.contains("_tokens") {
            return None;
        }
        let payload = self.payload();
        if self.kind.starts_with("session.") {
            payload.reported_cost().map(Cost::Reported)
        } else {
            payload.cost(prices)
        }
    }

    /// Consumes the event, keeping only its JSON text.
    pub fn into_raw(self) -> String {
        self.raw
    }

    /// Whether `other` is the same event, for idempotent retries: equal as JSON values, so a retry
    /// that serialises keys in another order or spaces differently is still a duplicate.
    pub fn same_content(stored: &str, new: &str) -> bool {
        if stored == new {
            return true;
        }
        match (serde_json::from_str::<serde_json::Value>(stored), serde_json::from_str::<serde_json::Value>(new)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// Byte offsets of `inner` (a sub-slice of `outer`).
fn span_of(outer: &str, inner: &str) -> (usize, usize) {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    (start, start + inner.len())
}

fn string_field(field: &'static str, v: Option<&RawValue>) -> Result<String, EventError> {
    let v = v.ok_or(EventError::Missing(field))?;
    string_value(field, v, "must be a string")
}

fn string_value(field: &'static str, v: &RawValue, problem: &str) -> Result<String, EventError> {
    if !v.get().starts_with('"') {
        return Err(EventError::invalid(field, format!("{problem}, got {}", json_kind(v.get()))));
    }
    serde_json::from_str::<String>(v.get())
        .map_err(|e| EventError::invalid(field, format!("is not a valid string: {e}")))
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

pub fn check_session_id(field: &'static str, id: &str) -> Result<(), EventError> {
    if id.is_empty() || id.len() > MAX_ID_CHARS {
        return Err(EventError::invalid(field, format!("must be 1 to 128 characters, got {}", id.chars().count())));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-'))) {
        return Err(EventError::invalid(field, format!("may only contain A-Z a-z 0-9 _ . : @ -, found {c:?}")));
    }
    if id == "." || id == ".." {
        // A URL path resolves these away: `/sessions/../export` would name another resource.
        return Err(EventError::invalid(field, format!("must not be {id:?} (a dot segment in a URL)")));
    }
    Ok(())
}

fn check_label(field: &'static str, s: &str) -> Result<(), EventError> {
    let n = s.chars().count();
    if n == 0 || n > MAX_ID_CHARS {
        return Err(EventError::invalid(field, format!("must be 1 to 128 characters, got {n}")));
    }
    if s.chars().any(char::is_control) {
        return Err(EventError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn parse_sequence(text: &str) -> Result<i64, EventError> {
    let bad = |why: &str| EventError::invalid("sequence", format!("must be a non-negative integer, got {why}"));
    match text.as_bytes().first() {
        Some(b'-') if text.bytes().skip(1).all(|b| b.is_ascii_digit()) => Err(bad("a negative number")),
        Some(b'0'..=b'9') if text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<i64>().map_err(|_| bad("a number too large"))
        }
        Some(b'-' | b'0'..=b'9') => {
            // 3.0 is an integer in JSON's eyes but not in an SDK's: accept only exact integral values.
            match text.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && (0.0..9.0e15).contains(&f) => Ok(f as i64),
                Ok(f) if f < 0.0 => Err(bad("a negative number")),
                _ => Err(bad(text)),
            }
        }
        _ => Err(bad(json_kind(text))),
    }
}

/// RFC 3339 (with a zone) to microseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Removes whitespace outside strings, so the stored event is one line of JSON whatever the
/// client's formatting, and otherwise keeps every byte (key order, number spelling, escapes).
/// Also measures the nesting depth, which the caller bounds: readers (browsers, other tools)
/// parse recursively.
fn minify(text: &str) -> (String, usize) {
    let trimmed = text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{feff}'));
    let b = trimmed.as_bytes();
    // Copied only from the first whitespace to drop: most texts have none.
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut kept_from) = (0, 0);
    let (mut depth, mut max_depth) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // A string is kept whole: jump to its closing quote, over escapes.
                i += 1;
                loop {
                    match b.get(i..).and_then(|rest| rest.iter().position(|&c| c == b'"' || c == b'\\')) {
                        // Unterminated: it runs to the end (and the text is not JSON).
                        None => {
                            i = b.len();
                            break;
                        }
                        Some(p) if b[i + p] == b'\\' => i += p + 2,
                        Some(p) => {
                            i += p + 1;
                            break;
                        }
                    }
                }
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.get_or_insert_with(|| Vec::with_capacity(b.len())).extend_from_slice(&b[kept_from..i]);
                kept_from = i + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    let text = match out {
        None => trimmed.to_owned(),
        Some(mut o) => {
            o.extend_from_slice(&b[kept_from.min(b.len())..]);
            // Only ASCII bytes were dropped, so `o` is still UTF-8.
            String::from_utf8(o).unwrap_or_default()
        }
    };
    (text, max_depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reading of `minify`, byte by byte: the fast one must agree with it.
    fn minify_simply(text: &str) -> (String, usize) {
        let trimmed = text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{feff}'));
        let mut out = Vec::new();
        let (mut in_string, mut escaped, mut depth, mut max_depth) = (false, false, 0usize, 0usize);
        for &b in trimmed.as_bytes() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b' ' | b'\t' | b'\n' | b'\r' => continue,
                    b'"' => in_string = true,
                    b'{' | b'[' => {
                        depth += 1;
                        max_depth = max_depth.max(depth);
                    }
                    b'}' | b']' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            out.push(b);
        }
        (String::from_utf8(out).unwrap(), max_depth)
    }

    proptest::proptest! {
        #[test]
        fn minify_agrees_with_the_simple_reading(text in "[ \t\n\r\"\\\\{}\\[\\]a:,é]{0,40}") {
            proptest::prop_assert_eq!(minify(&text), minify_simply(&text));
        }
    }

    const GOOD: &str = r#"{"spec":"aop/1.0","session_id":"sess_1","parent_session_id":null,"agent_id":"a","sequence":1,"timestamp":"2026-04-03T10:00:00.000Z","type":"session.started","payload":{"goal":"g"}}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(GOOD).unwrap();
        if value == "<absent>" {
            v.remove(field);
        } else {
            v.insert(field.into(), serde_json::from_str(value).unwrap());
        }
        serde_json::to_string(&v).unwrap()
    }

    /// One row per rule: the field, the value put there, and a fragment the error must contain
    /// (empty: the event must be accepted).
    #[test]
    fn validation_table() {
        let long_id = format!("\"{}\"", "s".repeat(129));
        let max_id = format!("\"{}\"", "s".repeat(128));
        let long_type = format!("\"{}\"", "t".repeat(129));
        let cases: &[(&str, &str, &str)] = &[
            ("spec", "<absent>", "missing field `spec`"),
            ("spec", "\"aop/9.0\"", "`spec` must be \"aop/1.x\""),
            ("spec", "\"aop/1.7\"", ""),
            ("spec", "\"aop/1.\"", "`spec`"),
            ("spec", "1", "`spec` must be a string"),
            ("session_id", "<absent>", "missing field `session_id`"),
            ("session_id", "\"\"", "`session_id` must be 1 to 128"),
            ("session_id", &long_id, "`session_id` must be 1 to 128"),
            ("session_id", &max_id, ""),
            ("session_id", "\"../etc/passwd\"", "`session_id` may only contain"),
            ("session_id", "\".\"", "`session_id` must not be \".\""),
            ("session_id", "\"..\"", "`session_id` must not be \"..\""),
            ("session_id", "\"...\"", ""),
            ("session_id", "\"a b\"", "`session_id` may only contain"),
            ("session_id", "\"sess_x.y:z@w-1\"", ""),
            ("session_id", "7", "`session_id` must be a string, got a number"),
            ("parent_session_id", "<absent>", ""),
            ("parent_session_id", "\"root_1\"", ""),
            ("parent_session_id", "\"bad/id\"", "`parent_session_id` may only contain"),
            ("parent_session_id", "5", "`parent_session_id` must be a string or null"),
            ("agent_id", "<absent>", "missing field `agent_id`"),
            ("agent_id", "42", "`agent_id` must be a string"),
            ("agent_id", "\"\"", "`agent_id` must be 1 to 128"),
            ("agent_id", "\"research agent ✓\"", ""),
            ("agent_id", "\"a\\nb\"", "`agent_id` must not contain control"),
            ("agent_version", "\"1.2.3\"", ""),
            ("agent_version", "[1]", "`agent_version` must be a string or null"),
            ("sequence", "<absent>", "missing field `sequence`"),
            ("sequence", "\"1\"", "`sequence` must be a non-negative integer, got a string"),
            ("sequence", "-1", "got a negative number"),
            ("sequence", "1.5", "`sequence` must be a non-negative integer"),
            ("sequence", "0", ""),
            ("sequence", "2.0", ""),
            ("sequence", "99999999999999999999999", "`sequence`"),
            ("sequence", "null", "`sequence`"),
            ("timestamp", "<absent>", "missing field `timestamp`"),
            ("timestamp", "\"yesterday at noon\"", "`timestamp` must be an RFC 3339"),
            ("timestamp", "\"2026-04-03T10:00:00\"", "`timestamp` must be an RFC 3339"),
            ("timestamp", "\"2026-04-03T10:00:00+02:00\"", ""),
            ("timestamp", "1712138400", "`timestamp` must be a string"),
            ("type", "<absent>", "missing field `type`"),
            ("type", "\"\"", "`type` must not be empty"),
            ("type", &long_type, "`type` must be at most 128"),
            ("type", "\"x-acme.checkpoint\"", ""),
            ("payload", "<absent>", "missing field `payload`"),
            ("payload", "[1,2]", "`payload` must be a JSON object"),
            ("payload", "null", "`payload` must be a JSON object"),
            ("extra_field", "{\"kept\":true}", ""),
        ];
        for (field, value, want) in cases {
            let text = with(field, value);
            let got = Event::parse(&text);
            match (want.is_empty(), &got) {
                (true, Ok(_)) => {}
                (false, Err(e)) => assert!(e.to_string().contains(want), "{field}={value}: error {e:?} lacks {want:?}"),
                _ => panic!("{field}={value}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bodies_that_are_not_events() {
        let cases: &[(&str, &str)] = &[
            ("{this is not json", "not valid JSON"),
            ("[1,2,3]", "must be a JSON object, got an array"),
            ("\"hello\"", "got a string"),
            ("", "empty body"),
            ("{}", "missing field `spec`"),
            ("nul", "got null"),
            ("{\"spec\":\"aop/1.0\",\"spec\":\"aop/1.0\"}", "duplicate field `spec`"),
        ];
        for (body, want) in cases {
            let e = Event::parse(body).unwrap_err();
            assert!(e.to_string().contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn keeps_bytes_and_drops_only_whitespace() {
        let pretty = "{\n  \"spec\": \"aop/1.0\", \"session_id\": \"s\", \"agent_id\": \"a b\",\n  \"sequence\": 1e0,\n  \"timestamp\": \"2026-04-03T10:00:00Z\", \"type\": \"t\", \"payload\": {\"text\": \"two  spaces\\n\", \"n\": 1.50}\n}\n";
        let e = Event::parse(pretty).unwrap();
        assert_eq!(
            e.raw(),
            r#"{"spec":"aop/1.0","session_id":"s","agent_id":"a b","sequence":1e0,"timestamp":"2026-04-03T10:00:00Z","type":"t","payload":{"text":"two  spaces\n","n":1.50}}"#
        );
        assert_eq!(e.payload_json(), r#"{"text":"two  spaces\n","n":1.50}"#);
        assert_eq!(e.sequence, 1);
        assert_eq!(Event::parse(GOOD).unwrap().raw(), GOOD);
    }

    #[test]
    fn whitespace_inside_a_token_is_invalid_json() {
        for bad in ["1 2", "t rue", "nu ll", "1e 5", "- 1"] {
            let text = GOOD.replace("\"sequence\":1", &format!("\"sequence\":{bad}"));
            assert!(matches!(Event::parse(&text), Err(EventError::NotJson(_))), "{bad}");
        }
    }

    #[test]
    fn too_large_is_its_own_error() {
        let big = with("payload", &format!("{{\"x\":\"{}\"}}", "y".repeat(MAX_EVENT_BYTES)));
        assert!(matches!(Event::parse(&big), Err(EventError::TooLarge(_))));
    }

    #[test]
    fn same_content_ignores_key_order_only() {
        let a = r#"{"a":1,"b":{"c":2}}"#;
        assert!(Event::same_content(a, r#"{"b":{"c":2},"a":1}"#));
        assert!(!Event::same_content(a, r#"{"a":1,"b":{"c":3}}"#));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
        let text = with("spec", "\"aop/1.0\"").replace("{\"goal\":\"g\"}", &format!("{{\"d\":{deep}}}"));
        assert!(Event::parse(&text).is_err());
    }
}
