//! A tool's arguments, read strictly: a wrong type, a value out of range or an unknown name is
//! an error naming the argument, which the caller sees as the tool's result. No I/O.

use serde_json::{Map, Value};

/// Longest free-text argument (`q`, `reason`, …): a search or a reason is a line, not a document.
const MAX_TEXT_CHARS: usize = 1000;

pub(crate) struct Args<'a> {
    map: &'a Map<String, Value>,
}

/// What a JSON value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Args<'a> {
    /// The arguments, refusing any name the tool does not take (a misspelt `session` for `id`
    /// would otherwise be ignored and the answer be about something else).
    pub(crate) fn new(map: &'a Map<String, Value>, known: &[&str]) -> Result<Args<'a>, String> {
        if let Some(name) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let name: String = crate::clean::text(name).chars().take(64).collect();
            let takes = if known.is_empty() { "no arguments".to_owned() } else { known.join(", ") };
            return Err(format!("unknown argument `{name}`: this tool takes {takes}"));
        }
        Ok(Args { map })
    }

    /// Present and not null.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A session id: present, a string, and one the collector could have stored.
    pub(crate) fn session_id(&self, name: &'static str) -> Result<String, String> {
        let v = self.get(name).ok_or_else(|| format!("argument `{name}` is required: a session id"))?;
        let Value::String(id) = v else {
            return Err(format!("argument `{name}` must be a session id (a string), got {}", kind(v)));
        };
        crate::model::check_session_id(name, id).map_err(|e| {
            let shown: String = crate::clean::text(id).chars().take(64).collect();
            let more = if id.chars().count() > 64 { "…" } else { "" };
            format!("no session {shown:?}{more}: not a session id ({e})")
        })?;
        Ok(id.clone())
    }

    pub(crate) fn opt_session_id(&self, name: &'static str) -> Result<Option<String>, String> {
        self.get(name).map(|_| self.session_id(name)).transpose()
    }

    pub(crate) fn opt_text(&self, name: &str) -> Result<Option<String>, String> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let Value::String(s) = v else { return Err(format!("argument `{name}` must be a string, got {}", kind(v))) };
        let n = s.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(format!("argument `{name}` is {n} characters long; at most {MAX_TEXT_CHARS} are taken"));
        }
        Ok(Some(s.clone()))
    }

    pub(crate) fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, String> {
        let Some(v) = self.get(name) else { return Ok(None) };
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(n) => Err(format!("argument `{name}` must be from {min} to {max}, got {n}")),
            None => Err(format!("argument `{name}` must be an integer from {min} to {max}, got {}", kind(v))),
        }
    }

    pub(crate) fn opt_bool(&self, name: &str) -> Result<Option<bool>, String> {
        let Some(v) = self.get(name) else { return Ok(None) };
        v.as_bool().map(Some).ok_or_else(|| format!("argument `{name}` must be true or false, got {}", kind(v)))
    }

    /// A point in time, as µs since the epoch: an RFC 3339 time, or an age back from `now_us`
    /// (`90m`, `24h`, `7d`, or seconds).
    pub(crate) fn opt_since(&self, name: &str, now_us: i64) -> Result<Option<i64>, String> {
        let Some(text) = self.opt_text(name)? else { return Ok(None) };
        if let Some(us) = crate::model::parse_timestamp(&text) {
            return Ok(Some(us));
        }
        match text.parse::<crate::config::Age>() {
            Ok(age) => Ok(Some(now_us.saturating_sub(i64::try_from(age.0.as_micros()).unwrap_or(i64::MAX)))),
            Err(_) => Err(format!(
                "argument `{name}` must be an RFC 3339 time (2026-12-07T10:00:00Z) or an age such as 90m, 24h or 7d; got {:?}",
                crate::clean::text(&text)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_names_are_refused_naming_what_is_taken() {
        let m = args(json!({"session": "x"}));
        let e = Args::new(&m, &["id"]).err().unwrap();
        assert_eq!(e, "unknown argument `session`: this tool takes id");
    }

    #[test]
    fn session_ids_are_checked_as_ingest_checks_them() {
        let m = args(json!({"a": "run-1", "b": "../../etc/passwd", "c": 7, "d": "x".repeat(300)}));
        let a = Args::new(&m, &["a", "b", "c", "d", "e"]).unwrap();
        assert_eq!(a.session_id("a").unwrap(), "run-1");
        let e = a.session_id("b").unwrap_err();
        assert!(e.starts_with("no session \"../../etc/passwd\": not a session id"), "{e}");
        assert_eq!(a.session_id("c").unwrap_err(), "argument `c` must be a session id (a string), got an integer");
        let e = a.session_id("d").unwrap_err();
        assert!(e.len() < 300 && e.contains("…"), "{e}");
        assert_eq!(a.session_id("e").unwrap_err(), "argument `e` is required: a session id");
        assert_eq!(a.opt_session_id("e").unwrap(), None);
    }

    #[test]
    fn numbers_booleans_and_text_are_strict() {
        let m = args(json!({"n": "20", "m": 5000, "k": 3, "f": 2.5, "b": "yes", "t": "x".repeat(1001), "z": null}));
        let a = Args::new(&m, &["n", "m", "k", "f", "b", "t", "z"]).unwrap();
        assert_eq!(a.opt_int("n", 1, 100).unwrap_err(), "argument `n` must be an integer from 1 to 100, got a string");
        assert_eq!(a.opt_int("m", 1, 100).unwrap_err(), "argument `m` must be from 1 to 100, got 5000");
        assert_eq!(a.opt_int("k", 1, 100).unwrap(), Some(3));
        assert!(a.opt_int("f", 1, 100).unwrap_err().ends_with("got a number"));
        assert_eq!(a.opt_bool("b").unwrap_err(), "argument `b` must be true or false, got a string");
        assert!(a.opt_text("t").unwrap_err().contains("1001 characters"));
        // null is absent, as JSON Schema clients often send it for "not given".
        assert_eq!(a.opt_int("z", 1, 2).unwrap(), None);
    }

    #[test]
    fn since_is_a_time_or_an_age() {
        let now = 1_800_000_000_000_000;
        let m = args(json!({"t": "2026-12-07T10:00:00Z", "a": "90m", "x": "yesterday"}));
        let a = Args::new(&m, &["t", "a", "x"]).unwrap();
        assert_eq!(a.opt_since("t", now).unwrap(), crate::model::parse_timestamp("2026-12-07T10:00:00Z"));
        assert_eq!(a.opt_since("a", now).unwrap(), Some(now - 90 * 60 * 1_000_000));
        assert!(a.opt_since("x", now).unwrap_err().contains("\"yesterday\""));
    }
}
