//! The stall rule on the backend's clock, for one session: silence, whether the session may
//! stall, and whether a tool call is open, put to [`detect::stall_check`].

use super::{Raised, Tracked};
use crate::detect::{self, DetectConfig};

/// How long a running session must have been silent, in ms, before it is worth checking (the
/// shorter of the two limits); `None` when stall alerts are off.
pub fn stall_silence_ms(cfg: &DetectConfig) -> Option<i64> {
    cfg.stall_enabled.then(|| (cfg.stall_after_secs.min(cfg.stall_after_tool_secs) * 1000.0) as i64)
}

impl Tracked {
    /// The stall rule for this session, last heard from at `heard_ms` and checked at `now_ms`
    /// (both on the backend's clock): the alert to raise on it, if it stalled. A session heard
    /// from since its last snapshot (an event earlier in the same transaction) is not silent.
    /// The caller checks only sessions not yet alerted for this silence.
    pub fn stall(&self, heard_ms: i64, now_ms: i64, cfg: &DetectConfig) -> Option<Raised> {
        if self.heard() {
            return None;
        }
        let silent_secs = (now_ms - heard_ms) as f64 / 1000.0;
        let tool_open = self.detector.has_open_tool_call();
        let alert = detect::stall_check(silent_secs, self.state.may_stall(tool_open), tool_open, false, cfg)?;
        Some(self.raised(alert))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::ev;
    use super::*;
    use crate::detect::AlertKind;

    const MIN: i64 = 60_000;

    fn running(cfg: &DetectConfig) -> Tracked {
        let mut t = Tracked::fresh(3, "s");
        t.apply(1, &ev("s", None, 1, "session.started", "{}"), cfg);
        t.snapshot();
        t
    }

    #[test]
    fn a_silent_running_session_stalls_past_the_limit() {
        let cfg = DetectConfig::default();
        let t = running(&cfg);
        let limit_ms = (cfg.stall_after_secs * 1000.0) as i64;
        assert_eq!(t.stall(0, limit_ms - 1, &cfg), None);
        let r = t.stall(0, limit_ms, &cfg).expect("stalled");
        assert_eq!((r.key, r.session_id.as_str(), r.agent_id.as_str()), (3, "s", "a"));
        assert_eq!(r.alert.kind, AlertKind::Stall);
        assert_eq!(r.alert.details["tool_call_open"], false);
    }

    #[test]
    fn an_open_tool_call_waits_for_the_tool_limit() {
        let cfg = DetectConfig { stall_after_secs: 60.0, stall_after_tool_secs: 600.0, ..DetectConfig::default() };
        let mut t = running(&cfg);
        t.apply(2, &ev("s", None, 2, "operation.tool_start", r#"{"tool":"grep","tool_call_id":"c1"}"#), &cfg);
        t.snapshot();
        assert!(t.detector.has_open_tool_call());
        assert_eq!(t.stall(0, 2 * MIN, &cfg), None, "past the plain limit, not the tool's");
        let r = t.stall(0, 10 * MIN, &cfg).expect("stalled");
        assert_eq!(r.alert.details["tool_call_open"], true);
        assert_eq!(stall_silence_ms(&cfg), Some(MIN), "candidates are read from the shorter limit");
    }

    #[test]
    fn a_session_heard_from_in_this_transaction_or_ended_does_not_stall() {
        let cfg = DetectConfig::default();
        let mut t = running(&cfg);
        t.apply(2, &ev("s", None, 2, "cognition.thought", r#"{"content":"x"}"#), &cfg);
        assert_eq!(t.stall(0, 100 * MIN, &cfg), None, "an event arrived since the last snapshot");
        t.apply(3, &ev("s", None, 3, "session.ended", "{}"), &cfg);
        t.snapshot();
        assert_eq!(t.stall(0, 100 * MIN, &cfg), None, "ended");
    }

    #[test]
    fn with_stalls_off_nothing_is_checked() {
        let cfg = DetectConfig { stall_enabled: false, ..DetectConfig::default() };
        assert_eq!(stall_silence_ms(&cfg), None);
        assert_eq!(running(&cfg).stall(0, 100 * MIN, &cfg), None);
    }
}
