//! What a detector raises, and the alert's one wire form.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The alert `type` of the API.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Loop,
    Stall,
    CostSpike,
    ConfidenceDrop,
    ErrorCascade,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Loop => "loop",
            AlertKind::Stall => "stall",
            AlertKind::CostSpike => "cost_spike",
            AlertKind::ConfidenceDrop => "confidence_drop",
            AlertKind::ErrorCascade => "error_cascade",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// An alert as a detector raises it; the store adds `id`, `session_id` and `created_at`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct NewAlert {
    pub kind: AlertKind,
    pub severity: Severity,
    /// For a person: what happened, how often, with which tool, over how long.
    pub message: String,
    /// The event that triggered it, in the alerted session; `None` for stalls and for failed
    /// children, whose triggering events belong to other sessions.
    pub sequence: Option<i64>,
    /// The same facts for programs (tool, count, window, first sequence, …).
    pub details: Value,
}

impl NewAlert {
    /// The alert's wire form (`COLLECTOR.md`, Alerts): `{"id", "session_id", "type", "severity",
    /// "message", "created_at", "sequence", "details"}`, the one way every output writes it.
    /// `id` and `created_at` are left out where there are none: a stored alert is kept without its
    /// id (unknown before the insert; [`with_alert_id`] puts it back), and `aop detect` has neither.
    pub fn to_json(&self, session_id: &str, id: Option<i64>, created_at: Option<&str>) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<i64>,
            session_id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            severity: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            created_at: Option<&'a str>,
            sequence: Option<i64>,
            details: &'a Value,
        }
        let wire = Wire {
            id,
            session_id,
            kind: self.kind.as_str(),
            severity: self.severity.as_str(),
            message: &self.message,
            created_at,
            sequence: self.sequence,
            details: &self.details,
        };
        serde_json::to_string(&wire).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A stored alert's JSON (written by [`NewAlert::to_json`] without an id) with its id first.
pub fn with_alert_id(stored: &str, id: i64) -> String {
    match stored.strip_prefix('{') {
        Some(rest) if rest.starts_with('}') => format!("{{\"id\":{id}}}"),
        Some(rest) => format!("{{\"id\":{id},{rest}"),
        None => stored.to_owned(),
    }
}
