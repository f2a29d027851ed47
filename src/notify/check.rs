//! `aop notify test`: a sample alert sent to every target, each outcome reported, so a
//! configuration can be tried before an agent misbehaves.

use super::send::{SendError, Sender};
use super::{message, Settings};

/// How one target took the sample.
#[derive(Debug)]
pub struct Outcome {
    /// The target as it is shown (never its URL).
    pub label: String,
    /// The HTTP status of a 2xx answer, or why it failed.
    pub result: Result<u16, SendError>,
}

/// Sends the sample alert to every target at once; outcomes in the targets' order.
pub async fn run(settings: &Settings, base: &str) -> Vec<Outcome> {
    let sender = Sender::default();
    let (alert, session) = message::sample();
    // Not the sample's alert id: a receiver that deduplicates would drop every test but the first.
    let delivery = format!(
        "test-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    let attempts = settings.targets.iter().map(|t| {
        let body = t.alert_body(&alert, &session, base);
        let (sender, delivery) = (&sender, &delivery);
        async move { Outcome { label: t.label(), result: t.post(sender, delivery, body).await } }
    });
    futures_util::future::join_all(attempts).await
}

/// The lines `aop notify test` prints, and whether every target took the sample.
pub fn report(outcomes: &[Outcome]) -> (String, bool) {
    let mut out = String::new();
    for o in outcomes {
        let label = crate::clean::text(&o.label);
        match &o.result {
            Ok(status) => out.push_str(&format!("ok      {label}: delivered (HTTP {status})\n")),
            Err(e) => out.push_str(&format!("FAILED  {label}: {}\n", crate::clean::text(&e.to_string()))),
        }
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    out.push_str(&match failed {
        0 => format!("{} of {} targets took the sample alert\n", outcomes.len(), outcomes.len()),
        n => format!("{n} of {} targets failed\n", outcomes.len()),
    });
    (out, failed == 0)
}
