//! The properties the fuzz targets check, in one place (each target is a thin `fuzz_target!`).
//!
//! They are the same as the proptest ones in `tests/it/hostile.rs`: the validator is total
//! (never panics, always a reason), and what it accepts is one line of JSON, equal in value to
//! what was sent, that is accepted again as the same event; so export lines (`raw + "\n"`) and
//! SSE `data:` lines can never be broken by an event.

use aop::model::Event;
use serde_json::value::RawValue;
use serde_json::Value;

/// Whether the input-is-JSON property is checked. A known bug (whitespace inside a number or a
/// literal is removed before parsing, so `1 2` is accepted as `12`) makes every run stop at
/// once on it; `AOP_FUZZ_SKIP_INPUT_IS_JSON=1` fuzzes past it until it is fixed.
fn check_input_is_json() -> bool {
    std::env::var_os("AOP_FUZZ_SKIP_INPUT_IS_JSON").is_none()
}

/// Parses one event and checks every property; returns it when accepted.
pub fn check_event(text: &str) -> Option<Event> {
    let ev = match Event::parse(text) {
        Ok(ev) => ev,
        Err(e) => {
            assert!(!e.to_string().trim().is_empty(), "an error without a reason: {e:?}");
            return None;
        }
    };
    let raw = ev.raw();
    assert!(!raw.bytes().any(|b| b < 0x20), "a control character (a line break, say) in the stored text {raw:?}");
    assert!(serde_json::from_str::<&RawValue>(raw).is_ok(), "the stored text is not JSON: {raw:?}");
    if check_input_is_json() {
        let sent = text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{feff}'));
        assert!(
            serde_json::from_str::<&RawValue>(sent).is_ok(),
            "accepted a body that is not JSON: {text:?}, stored as {raw:?}"
        );
    }
    if let (Ok(sent), Ok(stored)) = (serde_json::from_str::<Value>(text), serde_json::from_str::<Value>(raw)) {
        assert_eq!(sent, stored, "stored another value than the one sent: {text:?} -> {raw:?}");
    }
    let again = Event::parse(raw);
    assert!(again.as_ref() == Ok(&ev), "the stored text {raw:?} parses as {again:?}, not as {ev:?}");
    let payload = ev.payload_json();
    assert!(payload.starts_with('{') && payload.ends_with('}'), "the payload is {payload:?}");
    Some(ev)
}

/// A batch body as `POST /events` reads it: a JSON array if it starts with `[`, else NDJSON.
/// Each element is checked; the accepted ones, exported (one per line) and imported again, give
/// the same events.
pub fn check_batch(text: &str) {
    let items: Vec<&str> = if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => items.into_iter().map(RawValue::get).collect(),
            Err(_) => return,
        }
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).collect()
    };
    let accepted: Vec<Event> = items.into_iter().filter_map(check_event).collect();
    let export: String = accepted.iter().map(|e| format!("{}\n", e.raw())).collect();
    let again: Vec<Event> = export.lines().map(|l| Event::parse(l).expect("an exported line is an event")).collect();
    assert!(again == accepted, "export then import changed the events: {export:?}");
}

/// The framing the collector builds from a stored event: an export line and an SSE message.
/// Each must hold the event on exactly one line, so no event can end a line or a message early.
pub fn check_framing(text: &str) {
    let Some(ev) = check_event(text) else { return };
    let raw = ev.raw();
    let export = format!("{raw}\n");
    assert_eq!(export.lines().collect::<Vec<_>>(), [raw], "the export line breaks: {export:?}");
    let frame = format!("id: 1\ndata: {raw}\n\n");
    // SSE ends lines at CR, LF or CRLF, and messages at an empty line.
    let lines: Vec<&str> = frame.split(['\n', '\r']).collect();
    assert_eq!(lines, ["id: 1", &format!("data: {raw}"), "", ""], "the SSE message breaks: {frame:?}");
}

/// An OTLP export request as `/v1/traces` reads it, in both encodings (and gzip): decoding is
/// total (an error, never a panic), and every event derived from what decodes is a valid AOP
/// event, derived the same way twice.
pub fn check_otlp(bytes: &[u8]) {
    use aop::otlp::Encoding;
    let price = |model: &str, i: i64, o: i64| (model.len() % 2 == 0).then(|| (i + o) as f64 * 1e-6);
    let mut bodies = vec![(bytes.to_vec(), Encoding::Protobuf), (bytes.to_vec(), Encoding::Json)];
    if let Ok(inflated) = aop::otlp::gunzip(bytes, 1 << 20, &mut |_| true) {
        bodies.push((inflated, Encoding::Protobuf));
    }
    for (body, encoding) in bodies {
        let decode = || aop::otlp::spans(&body, encoding, &mut |_| true);
        let batch = match decode() {
            Ok(batch) => batch,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                continue;
            }
        };
        assert!(batch.items.len() + batch.rejected.count() <= batch.total);
        let mapped = aop::otlp::map_request(batch, &price);
        assert_eq!(mapped.events.len(), mapped.origin.len());
        assert!(mapped.rejected.count() <= mapped.items);
        for ev in &mapped.events {
            check_event(ev.raw()).expect("a derived event is valid");
            assert!(ev.session_id.starts_with("otel-"), "{}", ev.session_id);
        }
        let again = aop::otlp::map_request(decode().expect("decodes twice"), &price);
        assert!(again.events == mapped.events, "the mapping is not a function of the request");
    }
}

/// An OTLP logs export request as `/v1/logs` reads it, in both encodings (and gzip): decoding is
/// total, every event derived from a record is a valid AOP event of the record's trace or
/// conversation, and the mapping gives the same events twice.
pub fn check_otlp_logs(bytes: &[u8]) {
    use aop::otlp::Encoding;
    let price = |_: &str, _: i64, _: i64| None;
    let mut bodies = vec![(bytes.to_vec(), Encoding::Protobuf), (bytes.to_vec(), Encoding::Json)];
    if let Ok(inflated) = aop::otlp::gunzip(bytes, 1 << 20, &mut |_| true) {
        bodies.push((inflated, Encoding::Protobuf));
    }
    for (body, encoding) in bodies {
        let decode = || aop::otlp::records(&body, encoding, &mut |_| true);
        let batch = match decode() {
            Ok(batch) => batch,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                continue;
            }
        };
        assert!(batch.items.len() + batch.rejected.count() <= batch.total);
        let mapped = aop::otlp::map_logs(batch, &price);
        assert_eq!(mapped.events.len(), mapped.origin.len());
        assert!(mapped.rejected.count() <= mapped.items);
        for ev in &mapped.events {
            check_event(ev.raw()).expect("a derived event is valid");
        }
        let again = aop::otlp::map_logs(decode().expect("decodes twice"), &price);
        assert!(again.events == mapped.events, "the mapping is not a function of the request");
    }
    let _ = aop::otlp::data_points(bytes, Encoding::Protobuf);
    let _ = aop::otlp::data_points(bytes, Encoding::Json);
}
