//! AOP events for tests: a builder with deterministic timestamps, and small JSON helpers.

use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;

/// 2026-04-03T10:00:00Z, the instant `at(0)` names.
const T0: i64 = 1_775_210_400;

/// An RFC 3339 timestamp `secs` seconds after 2026-04-03T10:00:00Z, with milliseconds and `Z`.
pub(crate) fn at(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(T0 + secs)
        .expect("a valid instant")
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
        .expect("formattable")
}

/// A valid event of agent `test-agent`, stamped `at(sequence)`.
pub(crate) fn event(session: &str, sequence: i64, kind: &str, payload: Value) -> Value {
    json!({
        "spec": "aop/1.0",
        "session_id": session,
        "parent_session_id": null,
        "agent_id": "test-agent",
        "sequence": sequence,
        "timestamp": at(sequence),
        "type": kind,
        "payload": payload,
    })
}

/// Tweaks of an event, chained: `event(..).agent("b").parent("root").at(7)`.
pub(crate) trait EventExt: Sized {
    fn with(self, field: &str, value: Value) -> Value;
    fn without(self, field: &str) -> Value;

    fn agent(self, agent_id: &str) -> Value {
        self.with("agent_id", json!(agent_id))
    }
    fn parent(self, parent_session_id: &str) -> Value {
        self.with("parent_session_id", json!(parent_session_id))
    }
    /// Stamped `at(secs)`.
    fn at(self, secs: i64) -> Value {
        self.with("timestamp", json!(at(secs)))
    }
    /// Stamped with exactly this text.
    fn stamped(self, timestamp: &str) -> Value {
        self.with("timestamp", json!(timestamp))
    }
}

impl EventExt for Value {
    fn with(mut self, field: &str, value: Value) -> Value {
        self.as_object_mut().expect("an event is an object").insert(field.to_owned(), value);
        self
    }

    fn without(mut self, field: &str) -> Value {
        self.as_object_mut().expect("an event is an object").remove(field);
        self
    }
}

/// Events as an `application/x-ndjson` body.
pub(crate) fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// `(session_id, sequence)` of an event.
pub(crate) fn key(ev: &Value) -> (String, i64) {
    (ev["session_id"].as_str().expect("session_id").to_owned(), ev["sequence"].as_i64().expect("sequence"))
}

/// A JSON object nested `levels` deep: `{}` is 1, `{"a":{}}` is 2.
pub(crate) fn nested(levels: usize) -> Value {
    let mut v = json!({});
    for _ in 1..levels {
        v = json!({ "a": v });
    }
    v
}

/// `path` holding `events` as JSONL, with a line of `huge` bytes (not an event) after the first
/// `before` of them, written a MiB at a time.
pub(crate) fn export_with_a_huge_line(path: &std::path::Path, events: &[Value], before: usize, huge: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the export"));
    let mut write = |bytes: &[u8]| out.write_all(bytes).expect("write the export");
    for e in &events[..before] {
        write(format!("{e}\n").as_bytes());
    }
    let mib = vec![b'x'; 1 << 20];
    for _ in 0..huge / mib.len() {
        write(&mib);
    }
    write(&mib[..huge % mib.len()]);
    write(b"\n");
    for e in &events[before..] {
        write(format!("{e}\n").as_bytes());
    }
    out.flush().expect("write the export");
}
