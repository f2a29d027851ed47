//! Durations and times as alerts write them.

use serde_json::Value;

/// Seconds to microseconds; a negative or NaN configuration means zero.
pub(super) fn secs_to_us(secs: f64) -> i64 {
    if secs > 0.0 {
        // `as` saturates, so an absurdly large window is simply "forever".
        (secs * 1e6) as i64
    } else {
        0
    }
}

/// A duration for a person: `24 s`, `2.5 s`, `3 s`.
pub(super) fn fmt_secs(secs: f64) -> String {
    if secs >= 10.0 {
        format!("{secs:.0} s")
    } else {
        let tenths = format!("{secs:.1}");
        format!("{} s", tenths.strip_suffix(".0").unwrap_or(&tenths))
    }
}

/// An event time for `details`, as RFC 3339.
pub(super) fn rfc3339(us: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}
