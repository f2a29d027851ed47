//! Canonical JSON, stable hashes and previews: how detectors compare and quote payload values
//! without keeping them.

use serde_json::Value;
use std::fmt::Write;

/// Canonical JSON text: keys sorted at every level, no whitespace, integral numbers written as
/// integers. Two values that differ only in key order or number spelling (`1` vs `1.0`) give the
/// same text, so key order cannot hide a loop.
pub(crate) fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&v.to_string()),
        Value::Number(n) => match n.as_f64() {
            // Below 2^53 an integral float is exactly an integer.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                let _ = write!(out, "{}", f as i64);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// 64-bit FNV-1a over `parts`, each followed by a separator byte that cannot occur in JSON text or
/// in a UTF-8 string. Stable across builds and versions (unlike `std`'s hasher), which matters
/// because hashes are persisted in detector state.
pub(crate) fn digest(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// At most `max_bytes` of `s`, cut on a character boundary, and whether anything was cut.
pub(crate) fn cut(s: &str, max_bytes: usize) -> (String, bool) {
    if s.len() <= max_bytes {
        return (s.to_owned(), false);
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}

/// A value quoted in a message: strings as they are, anything else as canonical JSON; cut to
/// `max_bytes` with an ellipsis.
pub(crate) fn quote(v: &Value, max_bytes: usize) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => canonical(other),
    };
    match cut(&text, max_bytes) {
        (s, true) => s + "…",
        (s, false) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text() {
        let cases = [
            (r#"{"b":1,"a":{"d":[1,{"z":0,"y":null}],"c":"x"}}"#, r#"{"a":{"c":"x","d":[1,{"y":null,"z":0}]},"b":1}"#),
            (
                r#"{"n":1.0,"m":-2.50,"big":1e300,"i":12345678901234567890}"#,
                r#"{"big":1e+300,"i":12345678901234567890,"m":-2.5,"n":1}"#,
            ),
            (r#"{"s":"quote \" and \u00e9 and \n"}"#, r#"{"s":"quote \" and é and \n"}"#),
            (r#"{"k\"ey":true}"#, r#"{"k\"ey":true}"#),
            ("[]", "[]"),
            ("null", "null"),
        ];
        for (input, want) in cases {
            let v: Value = serde_json::from_str(input).unwrap();
            assert_eq!(canonical(&v), want, "{input}");
        }
    }

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["web_search", "{}"]), digest(&["web_search", "{}"]));
        // Pinned: persisted state must keep its meaning across versions.
        assert_eq!(digest(&[""]), 0xaf64_724c_8602_eb6e);
    }

    #[test]
    fn cut_respects_characters() {
        assert_eq!(cut("héllo", 2), ("h".to_owned(), true));
        assert_eq!(cut("héllo", 3), ("hé".to_owned(), true));
        assert_eq!(cut("hi", 2), ("hi".to_owned(), false));
        assert_eq!(quote(&Value::String("timeout".into()), 4), "time…");
        assert_eq!(quote(&serde_json::json!({"b":1,"a":2}), 100), r#"{"a":2,"b":1}"#);
    }
}
