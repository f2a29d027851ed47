//! Event in, session row and alerts out: the part of ingest every store backend shares, above SQL.
//!
//! A backend stores an event, then hands it here with its global position: the session's derived
//! state ([`SessionState`]) and its detectors ([`SessionDetector`]) fold it, and what comes back is
//! the alerts to store and what the parent must hear when a child ends. The backend writes what
//! [`Tracked::snapshot`] says in the same transaction, and keeps running sessions in a [`Live`]
//! cache so a hot session is not re-read per event.
//!
//! Restart safety without writing kilobytes per event: the detector state is saved every
//! [`DETECT_CHECKPOINT`] events (and whenever the session ends or a child's end changed it); on
//! load, the backend replays the events stored after the saved position through
//! [`Tracked::replay`], which rebuilds the state without raising the alerts again.

use crate::detect::{DetectConfig, NewAlert, SessionDetector};
use crate::model::{Event, SessionState};
use std::collections::HashMap;

/// Events after which a session's detector state is saved again; on load, at most this many
/// stored events are replayed into it.
pub const DETECT_CHECKPOINT: u32 = 32;
/// Sessions kept in memory; beyond this the cache is emptied (states are re-read on demand).
pub const MAX_CACHED_SESSIONS: usize = 20_000;

/// A session as the writer holds it between events.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The backend's key for the session row.
    pub key: i64,
    /// The backend's version of the row this copy was read from or last written as (a backend
    /// shared by several writers compares it to tell a stale copy).
    pub rev: i64,
    pub state: SessionState,
    pub detector: SessionDetector,
    /// Changed since the last snapshot.
    dirty: bool,
    /// An event arrived since the last snapshot (the session was heard from: a stall episode ends).
    heard: bool,
    /// The position of the latest event the detector has seen, and how many it saw since its
    /// state was last saved.
    detect_upto: i64,
    detect_unsaved: u32,
    /// The detector changed outside the session's own events (a child ended): save it with the
    /// next snapshot, since replaying this session's events would not redo it.
    detect_must_save: bool,
}

/// What one event did to its session.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Alerts to store on this session, triggered by this event.
    pub alerts: Vec<NewAlert>,
    /// The session ended with this event and has a parent, whose detector must hear of it.
    pub child_end: Option<ChildEnd>,
}

/// A child session's end, for its parent's detector.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildEnd {
    pub parent: String,
    pub child: String,
    pub status: String,
    pub at_us: i64,
}

/// What a backend writes for a changed session, in the transaction of the events that changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The derived state, as JSON (the row's columns come from [`Tracked::state`]).
    pub state: String,
    /// The detector state, as JSON, when it is due to be saved, with the position it covers.
    pub detector: Option<(String, i64)>,
    /// The session was heard from since the last snapshot.
    pub heard: bool,
}

impl Tracked {
    /// A session seen for the first time.
    pub fn fresh(key: i64, id: &str) -> Tracked {
        Tracked {
            key,
            rev: 0,
            state: SessionState::new(id),
            detector: SessionDetector::default(),
            dirty: true,
            heard: false,
            detect_upto: 0,
            detect_unsaved: 0,
            detect_must_save: false,
        }
    }

    /// A session read back from the store: its saved state, and the detector saved at position
    /// `detect_upto` (unreadable or missing states start over, as another version's might).
    /// Replay the events stored after `detect_upto` into it before applying new ones.
    pub fn loaded(key: i64, id: &str, state: &str, detector: Option<&str>, detect_upto: i64) -> Tracked {
        Tracked {
            key,
            rev: 0,
            state: serde_json::from_str(state).unwrap_or_else(|_| SessionState::new(id)),
            detector: detector.and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default(),
            dirty: false,
            heard: false,
            detect_upto,
            detect_unsaved: 0,
            detect_must_save: false,
        }
    }

    /// The position the saved detector state covers: replay the session's events after it.
    pub fn detect_upto(&self) -> i64 {
        self.detect_upto
    }

    /// Feeds an event stored after the saved detector state back into it. Its alerts were raised
    /// (and stored) when it first arrived, so they are dropped.
    pub fn replay(&mut self, position: i64, ev: &Event, cfg: &DetectConfig) {
        let _ = self.detector.observe(ev, cfg);
        self.detect_upto = position;
        self.detect_unsaved += 1;
    }

    /// Folds a newly stored event (never a duplicate) at global `position`.
    pub fn apply(&mut self, position: i64, ev: &Event, cfg: &DetectConfig) -> Applied {
        let was_running = self.state.is_running();
        self.state.apply(ev, &cfg.prices);
        let alerts = self.detector.observe(ev, cfg);
        self.detect_upto = position;
        self.detect_unsaved += 1;
        self.dirty = true;
        self.heard = true;
        let child_end = if was_running && !self.state.is_running() {
            self.state.parent_session_id().map(|parent| ChildEnd {
                parent: parent.to_owned(),
                child: self.state.id.clone(),
                status: self.state.status().to_owned(),
                at_us: ev.ts_us,
            })
        } else {
            None
        };
        Applied { alerts, child_end }
    }

    /// Tells this (parent) session's detector that a child ended.
    pub fn child_ended(&mut self, end: &ChildEnd, cfg: &DetectConfig) -> Option<NewAlert> {
        let alert = self.detector.observe_child_end(&end.child, &end.status, end.at_us, cfg);
        self.dirty = true;
        self.detect_must_save = true;
        alert
    }

    /// What the guard reads of this session now.
    pub fn facts(&self) -> super::board::Facts {
        super::board::Facts { watch: Some(self.detector.guard_view()), ..super::board::Facts::of_state(&self.state) }
    }

    /// Whether an event arrived since the last snapshot.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// What to write for this session, if anything changed; the detector is included when due.
    /// Taking it marks the session clean.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        if !self.dirty {
            return None;
        }
        let due = self.detect_must_save || self.detect_unsaved >= DETECT_CHECKPOINT || !self.state.is_running();
        let detector = due.then(|| (to_json(&self.detector), self.detect_upto));
        if due {
            self.detect_unsaved = 0;
            self.detect_must_save = false;
        }
        let snap = Snapshot { state: to_json(&self.state), detector, heard: self.heard };
        self.dirty = false;
        self.heard = false;
        Some(snap)
    }
}

fn to_json(v: &impl serde::Serialize) -> String {
    // Plain data (strings, numbers, maps with string keys): serialisation cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

/// The sessions a writer keeps in memory, by id: running ones, so a hot session is not re-read
/// per event. Ended sessions leave at the end of each transaction (they seldom hear more, and
/// their detector state was saved as they ended), so the cache does not grow with history.
#[derive(Debug, Default)]
pub struct Live {
    sessions: HashMap<String, Tracked>,
}

impl Live {
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Tracked> {
        self.sessions.get_mut(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    pub fn insert(&mut self, tracked: Tracked) -> &mut Tracked {
        let id = tracked.state.id.clone();
        self.sessions.entry(id).insert_entry(tracked).into_mut()
    }

    pub fn remove(&mut self, id: &str) {
        self.sessions.remove(id);
    }

    /// Takes a session out, for a writer that puts it back only if its transaction commits.
    pub fn take(&mut self, id: &str) -> Option<Tracked> {
        self.sessions.remove(id)
    }

    /// Forgets everything: after a rollback, the cache may hold states of undone events.
    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    /// Every changed session with its snapshot, to write before the commit.
    pub fn snapshots(&mut self) -> Vec<(&Tracked, Snapshot)> {
        let mut out = Vec::new();
        for t in self.sessions.values_mut() {
            if let Some(snap) = t.snapshot() {
                out.push((&*t, snap));
            }
        }
        out
    }

    /// After a commit: ended sessions leave; past [`MAX_CACHED_SESSIONS`] everything does.
    pub fn committed(&mut self) {
        if self.sessions.len() > MAX_CACHED_SESSIONS {
            self.sessions.clear();
        } else {
            self.sessions.retain(|_, t| t.state.is_running());
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::AlertKind;

    fn ev(session: &str, parent: Option<&str>, seq: i64, kind: &str, payload: &str) -> Event {
        let parent = parent.map_or("null".to_owned(), |p| format!("\"{p}\""));
        Event::parse(&format!(
            r#"{{"spec":"aop/1.0","session_id":"{session}","parent_session_id":{parent},"agent_id":"a","sequence":{seq},"timestamp":"2026-04-03T10:00:{:02}.000Z","type":"{kind}","payload":{payload}}}"#,
            seq % 60
        ))
        .expect("a valid event")
    }

    fn low_thought(seq: i64) -> Event {
        ev("s", None, seq, "cognition.thought", r#"{"content":"hmm","confidence":"low"}"#)
    }

    #[test]
    fn an_event_updates_the_row_and_raises_the_detectors_alerts() {
        let cfg = DetectConfig::default();
        let mut t = Tracked::fresh(7, "s");
        assert!(t.apply(1, &ev("s", None, 1, "session.started", r#"{"goal":"g"}"#), &cfg).alerts.is_empty());
        assert!(t.apply(2, &low_thought(2), &cfg).alerts.is_empty());
        assert!(t.apply(3, &low_thought(3), &cfg).alerts.is_empty());
        let third = t.apply(4, &low_thought(4), &cfg);
        assert_eq!(third.alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), [AlertKind::ConfidenceDrop]);
        assert_eq!(t.state.goal(), Some("g"));
        assert_eq!(t.state.event_count(), 4);
        assert!(t.heard());
    }

    #[test]
    fn the_detector_is_saved_every_checkpoint_and_when_the_session_ends() {
        let cfg = DetectConfig::default();
        let mut t = Tracked::fresh(1, "s");
        let thought = |seq| ev("s", None, seq, "cognition.thought", r#"{"content":"x"}"#);
        let mut saved_at = Vec::new();
        for seq in 1..=70 {
            t.apply(seq * 10, &thought(seq), &cfg);
            let snap = t.snapshot().expect("changed");
            assert!(snap.heard);
            if let Some((_, upto)) = snap.detector {
                saved_at.push(upto);
            }
        }
        assert_eq!(saved_at, [320, 640], "saved every {DETECT_CHECKPOINT} events, at the position it covers");
        assert_eq!(t.snapshot(), None, "nothing changed since");
        t.apply(710, &ev("s", None, 71, "session.ended", r#"{"outcome":"failed"}"#), &cfg);
        let snap = t.snapshot().expect("changed");
        assert_eq!(snap.detector.map(|(_, upto)| upto), Some(710), "an ending saves at once");
    }

    #[test]
    fn a_restart_replays_to_the_same_detector_without_repeating_alerts() {
        let cfg = DetectConfig::default();
        let events: Vec<Event> = (1..=40).map(low_thought).collect();
        let mut live = Tracked::fresh(1, "s");
        let mut saved = None;
        let mut alerts_live = 0;
        for (i, e) in events.iter().enumerate() {
            alerts_live += live.apply(i as i64 + 1, e, &cfg).alerts.len();
            if let Some(s) = live.snapshot() {
                if let Some(d) = s.detector {
                    saved = Some((s.state, d));
                }
            }
        }
        let (state, (detector, upto)) = saved.expect("saved at 32");
        assert_eq!(upto, 32);
        let mut back = Tracked::loaded(1, "s", &state, Some(&detector), upto);
        for (i, e) in events.iter().enumerate().skip(upto as usize) {
            back.replay(i as i64 + 1, e, &cfg);
        }
        assert_eq!(back.detector, live.detector);
        assert_eq!(back.detect_upto(), 40);
        assert!(alerts_live > 0);
        // The next event behaves the same either way.
        let next = low_thought(41);
        assert_eq!(back.apply(41, &next, &cfg), live.clone().apply(41, &next, &cfg));
    }

    #[test]
    fn unreadable_saved_states_start_over() {
        let t = Tracked::loaded(3, "s", "not json", Some("{\"junk\":"), 12);
        assert_eq!(t.state.id, "s");
        assert_eq!(t.detector, SessionDetector::default());
        assert_eq!(t.detect_upto(), 12);
    }

    #[test]
    fn a_child_ending_tells_its_parent_whose_detector_is_then_saved() {
        let cfg = DetectConfig::default();
        let mut parent = Tracked::fresh(1, "p");
        parent.apply(1, &ev("p", None, 1, "session.started", "{}"), &cfg);
        parent.snapshot();
        let mut alerts = Vec::new();
        for (n, child) in ["c1", "c2"].into_iter().enumerate() {
            let mut c = Tracked::fresh(10 + n as i64, child);
            c.apply(2, &ev(child, Some("p"), 1, "session.started", "{}"), &cfg);
            let end = c.apply(3, &ev(child, Some("p"), 2, "session.ended", r#"{"outcome":"failed"}"#), &cfg);
            let end = end.child_end.expect("a child with a parent ended");
            assert_eq!((end.parent.as_str(), end.child.as_str(), end.status.as_str()), ("p", child, "failed"));
            alerts.extend(parent.child_ended(&end, &cfg));
            let snap = parent.snapshot().expect("the parent changed");
            assert!(snap.detector.is_some(), "a child's end is saved at once");
            assert!(!snap.heard, "the parent itself was not heard from");
        }
        assert_eq!(alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), [AlertKind::ErrorCascade]);
        // An ended session without a parent tells no one; ending twice tells once.
        let mut lone = Tracked::fresh(20, "lone");
        let end = ev("lone", None, 1, "session.ended", "{}");
        assert_eq!(lone.apply(1, &end, &cfg).child_end, None);
    }

    #[test]
    fn the_row_and_the_budget_count_the_same_priced_cost() {
        let cfg = DetectConfig { cost_budget_usd: Some(0.01), ..DetectConfig::default() };
        let mut t = Tracked::fresh(1, "s");
        // claude-3-5-haiku: $0.80 in, $4 out per million: $0.006 per call.
        let call = |seq| {
            ev(
                "s",
                None,
                seq,
                "operation.external_call",
                r#"{"model":"claude-3-5-haiku-latest","input_tokens":2500,"output_tokens":1000}"#,
            )
        };
        assert!(t.apply(1, &call(1), &cfg).alerts.is_empty());
        let second = t.apply(2, &call(2), &cfg);
        assert_eq!(second.alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), [AlertKind::CostSpike]);
        assert_eq!(second.alerts[0].details["total_cost_usd"], 0.012);
        assert_eq!(t.state.view(0, 0).total_cost_usd, Some(0.012));
    }

    #[test]
    fn the_cache_keeps_running_sessions_only() {
        let cfg = DetectConfig::default();
        let mut live = Live::default();
        live.insert(Tracked::fresh(1, "running")).apply(1, &ev("running", None, 1, "session.started", "{}"), &cfg);
        live.insert(Tracked::fresh(2, "done")).apply(2, &ev("done", None, 1, "session.ended", "{}"), &cfg);
        assert_eq!(live.snapshots().len(), 2);
        assert!(live.snapshots().is_empty(), "snapshots are taken once");
        live.committed();
        assert!(live.contains("running"));
        assert!(!live.contains("done"));
        assert_eq!(live.len(), 1);
    }
}
