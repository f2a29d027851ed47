//! The notification outbox as both backends see it, above SQL: which targets an alert is
//! delivered to ([`Outbox`], built from the config's `[[notify]]` filters), a delivery due now
//! ([`Due`]), how an attempt ended ([`Settle`]), and a delivery's state as the API shows it
//! ([`DeliveryRow`]).
//!
//! A writer inserts one outbox row per (alert, matching target) in the transaction that stores the
//! alert, so a delivery is exactly as durable as its alert. Targets are named in the database by
//! a key (a short hash of their URL and format, see `notify`), never by their URL, which holds
//! tokens.

use crate::detect::AlertKind;
use crate::model::SessionRow;
use serde::Serialize;

/// A delivery waiting for its next attempt.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
/// Held back by its target's rate cap and reported in a summary message instead.
pub const SUMMARISED: &str = "summarised";
/// Given up after `notify_max_age`.
pub const FAILED: &str = "failed";

/// One target's filters: the alert types it takes (`None`: all) and the agents (glob patterns on
/// `agent_id`; empty: all).
#[derive(Debug, Clone)]
pub struct Route {
    pub key: String,
    pub kinds: Option<Vec<AlertKind>>,
    pub agents: Vec<Glob>,
}

impl Route {
    pub fn takes(&self, kind: AlertKind, agent_id: &str) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
            && (self.agents.is_empty() || self.agents.iter().any(|g| g.matches(agent_id)))
    }
}

/// Where the writers send alerts: every configured target's route, and a way to wake the
/// delivery worker once deliveries are committed. With no targets, writers do nothing more per
/// alert than they did before notifications existed.
#[derive(Debug, Default)]
pub struct Outbox {
    routes: Vec<Route>,
    /// Poked after a commit that wrote deliveries, so they leave at once rather than at the
    /// worker's next poll.
    pub wake: tokio::sync::Notify,
}

impl Outbox {
    pub fn new(routes: Vec<Route>) -> Outbox {
        Outbox { routes, wake: tokio::sync::Notify::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The keys of the targets an alert of this kind, raised on this agent's session, goes to.
    pub fn targets_for<'a>(&'a self, kind: AlertKind, agent_id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.routes.iter().filter(move |r| r.takes(kind, agent_id)).map(|r| r.key.as_str())
    }
}

/// A glob pattern on agent ids: `*` stands for any run of characters (none included), `?` for
/// exactly one; everything else stands for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<char>);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.chars().collect())
    }

    /// Linear in practice: on a mismatch after a `*`, only the last `*` is retried one character
    /// further, which is enough since a later `*` can absorb whatever an earlier one would.
    pub fn matches(&self, text: &str) -> bool {
        let p = &self.0;
        let t: Vec<char> = text.chars().collect();
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

/// A delivery due now, with what its message is made of.
#[derive(Debug, Clone)]
pub struct Due {
    pub alert_id: i64,
    /// The target's key.
    pub target: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When its alert was committed (the store's clock, ms since the epoch).
    pub created_ms: i64,
    pub session_id: String,
    /// The alert's type.
    pub kind: String,
    /// The alert exactly as `GET /alerts` shows it.
    pub alert: String,
    /// Its session's row as `GET /sessions` shows it.
    pub session: SessionRow,
}

/// What a claim found, with the store's clock at that moment (a fleet's is the database's).
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub now_ms: i64,
    pub due: Vec<Due>,
}

/// How a claimed delivery's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    pub alert_id: i64,
    pub target: String,
    /// Attempts made, this one included.
    pub attempts: u32,
    pub outcome: Settled,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    Delivered,
    /// Reported in a summary message that was delivered.
    Summarised,
    /// Try again this many ms from now (the store's clock); `error` says why this attempt failed.
    Retry {
        after_ms: i64,
        error: String,
    },
    /// Given up: past `notify_max_age`.
    Failed {
        error: String,
    },
}

/// One delivery of one of a session's alerts (`GET /sessions/:id/deliveries`).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub alert_id: i64,
    pub alert_type: String,
    /// The target's key.
    pub target: String,
    pub state: String,
    pub attempts: u32,
    pub created_ms: i64,
    /// When the next attempt is due (pending deliveries).
    pub next_ms: i64,
    /// When it was delivered, summarised or given up.
    pub done_ms: Option<i64>,
    /// The last attempt's failure, if one failed.
    pub error: Option<String>,
}

/// Deliveries waiting and given up, across the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub failed: u64,
}

/// The most deliveries `GET /sessions/:id/deliveries` lists: a few targets for each of the
/// 10,000 alerts a session's detail shows.
pub const MAX_SESSION_DELIVERIES: i64 = 100_000;

/// What an expiry writes as the error of a delivery never attempted.
pub const NEVER_ATTEMPTED: &str = "not attempted within notify_max_age: its target is not configured";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_a_shell_would() {
        // (pattern, text, matches)
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("research-*", "research-7", true),
            ("research-*", "research-", true),
            ("research-*", "Research-7", false),
            ("*-prod", "billing-prod", true),
            ("*-prod", "billing-prod-2", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("é*", "éclair", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern:?} on {text:?}");
        }
    }

    #[test]
    fn an_alert_goes_to_the_targets_whose_filters_take_it() {
        let outbox = Outbox::new(vec![
            Route { key: "all".into(), kinds: None, agents: vec![] },
            Route { key: "loops".into(), kinds: Some(vec![AlertKind::Loop]), agents: vec![] },
            Route {
                key: "prod".into(),
                kinds: Some(vec![AlertKind::Stall, AlertKind::ErrorCascade]),
                agents: vec![Glob::new("*-prod"), Glob::new("billing")],
            },
        ]);
        let to = |kind, agent| outbox.targets_for(kind, agent).collect::<Vec<_>>();
        assert_eq!(to(AlertKind::Loop, "x"), ["all", "loops"]);
        assert_eq!(to(AlertKind::Stall, "api-prod"), ["all", "prod"]);
        assert_eq!(to(AlertKind::Stall, "billing"), ["all", "prod"]);
        assert_eq!(to(AlertKind::Loop, "api-prod"), ["all", "loops"]);
        assert_eq!(to(AlertKind::CostSpike, "dev"), ["all"]);
        assert!(Outbox::default().is_empty());
        assert_eq!(Outbox::default().targets_for(AlertKind::Loop, "a").count(), 0);
    }
}
