//! What a delivery sends, pure: the JSON body (alert, session, link) and its signature, the Slack
//! message, and the summary of alerts a rate-capped target held back.

use crate::model::{SessionRow, SessionState};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Slack's limit for a section block's text; the rest of a long message is cut.
const SLACK_SECTION: usize = 3000;
/// How much of an alert's message a Slack message quotes.
const SLACK_MESSAGE: usize = 1500;
/// Sessions a summary names one by one (the rest are counted).
const SUMMARY_SESSIONS: usize = 10;

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The dashboard's page of a session: `<base>/dashboard/#/sessions/<id>`, the id escaped as the
/// dashboard's own links escape it (`encodeURIComponent`).
pub fn link(base: &str, session_id: &str) -> String {
    let mut out = format!("{base}/dashboard/#/sessions/");
    for b in session_id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON delivery's body: `{"alert", "session", "link"}`. The alert is spliced in as the store
/// holds it, so it is byte for byte what `GET /alerts` shows.
pub fn json_body(alert: &str, session: &SessionRow, link: &str) -> String {
    let session = serde_json::to_string(session).unwrap_or_else(|_| "null".to_owned());
    let link = Value::String(link.to_owned());
    format!("{{\"alert\":{alert},\"session\":{session},\"link\":{link}}}")
}

/// `X-Aop-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The time is
/// signed with the body so a receiver can refuse an old delivery replayed.
pub fn signature(secret: &str, unix_secs: u64, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{unix_secs}.").as_bytes());
    mac.update(body);
    format!("t={unix_secs},v1={}", hex(&mac.finalize().into_bytes()))
}

/// What a Slack message reads of an alert (whatever else it holds).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AlertText {
    id: Option<i64>,
    #[serde(rename = "type")]
    kind: String,
    severity: String,
    message: String,
}

/// Text for Slack's `mrkdwn`: `&`, `<` and `>` are its control characters (`<!channel>` would
/// ping a whole channel), so agents' text has them escaped as Slack documents.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// At most `max` characters of `text`, cut on a character boundary, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

fn emoji(severity: &str) -> &'static str {
    match severity {
        "critical" => ":rotating_light:",
        "warning" => ":warning:",
        _ => ":information_source:",
    }
}

/// A Slack incoming-webhook message for one alert: `text` (what notifications and screen readers
/// show) and `blocks` (a `section` with the alert, a `context` line with the session).
pub fn slack_body(alert: &str, session: &SessionRow, link: &str) -> String {
    let a: AlertText = serde_json::from_str(alert).unwrap_or_default();
    let kind = a.kind.replace('_', " ");
    let message = cut(&a.message, SLACK_MESSAGE);
    let text = format!(
        "aop: {} {} in session {} (agent {}): {}",
        a.severity,
        kind,
        slack_escape(&session.id),
        slack_escape(&session.agent_id),
        slack_escape(&message)
    );
    let section = cut(
        &format!(
            "{} *{}* ({}) in session <{}|{}>\n{}",
            emoji(&a.severity),
            slack_escape(&kind),
            slack_escape(&a.severity),
            link,
            slack_escape(&cut(&session.id, 200)),
            slack_escape(&message)
        ),
        SLACK_SECTION,
    );
    let mut context =
        format!("agent `{}` · {}", slack_escape(&cut(&session.agent_id, 200)), slack_escape(&session.status));
    if let Some(goal) = session.goal.as_deref().filter(|g| !g.is_empty()) {
        context.push_str(&format!(" · goal: {}", slack_escape(&cut(goal, 200))));
    }
    if let Some(id) = a.id {
        context.push_str(&format!(" · alert {id}"));
    }
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&context, SLACK_SECTION)}]},
        ],
    })
    .to_string()
}

/// An alert a rate-capped target held back.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub alert_id: i64,
    pub session_id: String,
    pub kind: String,
}

/// `X-Aop-Delivery` of a summary: the same for a retry of the same summary.
pub fn summary_id(held: &[Held]) -> String {
    let first = held.iter().map(|h| h.alert_id).min().unwrap_or(0);
    let last = held.iter().map(|h| h.alert_id).max().unwrap_or(0);
    format!("summary-{first}-{last}-{}", held.len())
}

/// How many of each type, and the sessions (the first few, with a count of the rest).
fn tally(held: &[Held]) -> (BTreeMap<&str, usize>, Vec<&str>, usize) {
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sessions: Vec<&str> = Vec::new();
    for h in held {
        *types.entry(h.kind.as_str()).or_default() += 1;
        if !sessions.contains(&h.session_id.as_str()) {
            sessions.push(&h.session_id);
        }
    }
    let more = sessions.len().saturating_sub(SUMMARY_SESSIONS);
    sessions.truncate(SUMMARY_SESSIONS);
    (types, sessions, more)
}

/// The JSON summary: `{"summary": {"held_back", "max_per_minute", "alert_ids", "types",
/// "sessions", "more_sessions"}, "link"}`.
pub fn summary_json(held: &[Held], max_per_minute: u32, base: &str) -> String {
    let (types, sessions, more) = tally(held);
    json!({
        "summary": {
            "held_back": held.len(),
            "max_per_minute": max_per_minute,
            "alert_ids": held.iter().map(|h| h.alert_id).collect::<Vec<_>>(),
            "types": types,
            "sessions": sessions,
            "more_sessions": more,
        },
        "link": format!("{base}/dashboard/"),
    })
    .to_string()
}

/// The Slack summary.
pub fn summary_slack(held: &[Held], max_per_minute: u32, base: &str) -> String {
    let (types, sessions, more) = tally(held);
    let types: Vec<String> = types.iter().map(|(k, n)| format!("{} ×{n}", k.replace('_', " "))).collect();
    let mut named: Vec<String> =
        sessions.iter().map(|s| format!("<{}|{}>", link(base, s), slack_escape(&cut(s, 80)))).collect();
    if more > 0 {
        named.push(format!("and {more} more"));
    }
    let head = format!(
        "aop held back {} alerts past this channel's limit of {max_per_minute} a minute: {}",
        held.len(),
        types.join(", ")
    );
    let section = cut(&format!(":mute: {head}\nSessions: {}", named.join(", ")), SLACK_SECTION);
    json!({
        "text": head,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("<{base}/dashboard/|Open the dashboard>")}]},
        ],
    })
    .to_string()
}

/// The alert and session `aop notify test` sends: plainly a test, in the shape of a real one.
pub fn sample() -> (String, SessionRow) {
    let alert = crate::detect::NewAlert {
        kind: crate::detect::AlertKind::Loop,
        severity: crate::detect::Severity::Warning,
        message: "This is a test notification from `aop notify test`: this target receives aop's alerts.".into(),
        sequence: Some(1),
        details: json!({"test": true}),
    };
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let session_id = "aop-notify-test";
    let mut row = SessionState::new(session_id).view(1, 0);
    row.agent_id = "aop".into();
    row.goal = Some("check that notifications reach this target".into());
    (alert.to_json(session_id, Some(0), Some(&now)), row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> SessionRow {
        let mut r = SessionState::new(id).view(1, 0);
        r.agent_id = "agent <b> & co".into();
        r
    }

    #[test]
    fn the_json_body_holds_the_alert_as_stored_the_row_and_the_link() {
        let alert = r#"{"id":7,"session_id":"s/1","type":"loop","severity":"warning","message":"m","created_at":"t","sequence":3,"details":{}}"#;
        let body = json_body(alert, &row("s/1"), &link("http://127.0.0.1:4317", "s/1"));
        assert!(body.starts_with(&format!("{{\"alert\":{alert},")), "spliced as stored: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["session"]["id"], "s/1");
        assert_eq!(v["session"]["alert_count"], 1);
        assert_eq!(v["link"], "http://127.0.0.1:4317/dashboard/#/sessions/s%2F1");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn links_escape_ids_as_the_dashboard_does() {
        assert_eq!(link("https://a.example", "run-1_a.b"), "https://a.example/dashboard/#/sessions/run-1_a.b");
        assert_eq!(link("b", "a b#c?é"), "b/dashboard/#/sessions/a%20b%23c%3F%C3%A9");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Expected values from Python's hmac module, an implementation of its own.
        assert_eq!(
            signature("whsec", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032"
        );
        assert_eq!(
            signature("Jefe", 0, b"what do ya want for nothing?"),
            "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
    }

    #[test]
    fn a_slack_message_escapes_agents_text_and_fits_slacks_limits() {
        let alert = format!(
            r#"{{"id":9,"type":"error_cascade","severity":"critical","message":"<!channel> {}"}}"#,
            "x".repeat(5000)
        );
        let body: Value =
            serde_json::from_str(&slack_body(&alert, &row("s<1>"), "http://h/dashboard/#/sessions/s%3C1%3E")).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["blocks", "text"]);
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"), "{text}");
        assert!(text.contains("agent &lt;b&gt; &amp; co"), "{text}");
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        let section = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= SLACK_SECTION, "{}", section.len());
        assert!(section.contains("<http://h/dashboard/#/sessions/s%3C1%3E|s&lt;1&gt;>"), "{section}");
        assert_eq!(blocks[1]["type"], "context");
        assert!(blocks[1]["elements"][0]["text"].as_str().unwrap().contains("alert 9"));
    }

    #[test]
    fn a_summary_counts_types_and_names_a_few_sessions() {
        let held: Vec<Held> = (1..=14)
            .map(|i| Held {
                alert_id: 100 + i,
                session_id: format!("s{}", i % 12),
                kind: if i % 2 == 0 { "loop" } else { "stall" }.into(),
            })
            .collect();
        let v: Value = serde_json::from_str(&summary_json(&held, 3, "http://h")).unwrap();
        assert_eq!(v["summary"]["held_back"], 14);
        assert_eq!(v["summary"]["max_per_minute"], 3);
        assert_eq!(v["summary"]["types"], json!({"loop": 7, "stall": 7}));
        assert_eq!(v["summary"]["alert_ids"].as_array().unwrap().len(), 14);
        assert_eq!(v["summary"]["sessions"].as_array().unwrap().len(), SUMMARY_SESSIONS);
        assert_eq!(v["summary"]["more_sessions"], 2);
        assert_eq!(summary_id(&held), "summary-101-114-14");
        let s: Value = serde_json::from_str(&summary_slack(&held, 3, "http://h")).unwrap();
        assert!(s["text"].as_str().unwrap().contains("14 alerts"), "{s}");
        assert!(s["blocks"][0]["text"]["text"].as_str().unwrap().contains("and 2 more"), "{s}");
    }

    #[test]
    fn the_sample_is_an_alert_with_a_session() {
        let (alert, row) = sample();
        let a: Value = serde_json::from_str(&alert).unwrap();
        assert_eq!((a["id"].as_i64(), a["type"].as_str()), (Some(0), Some("loop")));
        assert_eq!(row.id, "aop-notify-test");
    }
}
