//! Agents' text as the command line prints it: one rule for every output.
//!
//! Tool names, errors, goals and summaries are whatever agents sent, and a terminal obeys the
//! control characters in them: ESC starts sequences that clear the screen, move the cursor or set
//! the window title, BEL rings, and a terminal reading 8-bit controls takes U+009B for `ESC [`.
//!
//! - Human-readable output ([`text`]): every control character (C0 U+0000–U+001F, DEL U+007F,
//!   C1 U+0080–U+009F) is replaced by a visible escape, `\n`, `\r` and `\t` for those three and
//!   `\xHH`, its code point in hex, for the others (as Python writes them). A line stays one line,
//!   and only printable characters reach the terminal.
//! - JSON output ([`json`]): serde_json escapes C0 only, so DEL and C1 are written as `\u007f` …
//!   `\u009f`. Still valid JSON, parsing to the same strings, and safe to print raw.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character replaced by its visible escape.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text (as serde_json writes it) with DEL and the C1 controls escaped.
pub fn json(text: String) -> String {
    let raw = |c: char| ('\u{7f}'..='\u{9f}').contains(&c);
    if !text.chars().any(raw) {
        return text;
    }
    // Outside strings JSON text is ASCII, so every such character is inside a string, where
    // `\u00XX` means the same character.
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if raw(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn control_characters_are_shown_as_escapes() {
        let cases = [
            ("search", "search"),
            ("", ""),
            ("é 日本 → ok", "é 日本 → ok"),
            ("\u{1b}[2Jcleared", "\\x1b[2Jcleared"),
            ("\u{1b}]0;pwned\u{7}title", "\\x1b]0;pwned\\x07title"),
            ("\u{9b}31mred", "\\x9b31mred"),
            ("a\nb\r\tc", "a\\nb\\r\\tc"),
            ("\0\u{7f}\u{80}\u{9f}\u{a0}", "\\x00\\x7f\\x80\\x9f\u{a0}"),
        ];
        for (input, shown) in cases {
            assert_eq!(text(input), shown, "{input:?}");
        }
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let shown = text(&c.to_string()).into_owned();
            let in_range = matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f);
            assert!(!shown.chars().any(char::is_control), "{c:?}");
            assert_eq!(shown.len() > c.len_utf8(), in_range, "{c:?} -> {shown:?}");
        }
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_escapes_c1_and_del_and_still_parses_to_the_same_strings() {
        let value = json!({"tool": "\u{1b}]0;t\u{7}x\u{9b}2J", "n": 1, "k\u{85}ey": ["\u{7f}", "\u{a0}ok"]});
        let plain = serde_json::to_string(&value).unwrap();
        assert!(plain.contains('\u{9b}'), "serde_json writes C1 raw: {plain}");
        let safe = json(plain);
        assert!(!safe.chars().any(char::is_control), "{safe}");
        assert!(safe.contains("\\u009b") && safe.contains("\\u0085") && safe.contains("\\u007f"), "{safe}");
        assert!(safe.contains('\u{a0}'), "{safe}");
        assert_eq!(serde_json::from_str::<Value>(&safe).unwrap(), value);
        assert_eq!(json("{\"a\":1}".into()), "{\"a\":1}");
    }
}
