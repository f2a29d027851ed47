//! A session as a writer holds it: derived state and detectors, when the detector state is due to
//! be saved, how it is read back and caught up, and what a child's end tells its parent.

use super::Raised;
use crate::detect::{DetectConfig, NewAlert, SessionDetector};
use crate::model::{Event, SessionState};
use crate::store::board::Facts;

/// Events after which a session's detector state is saved again; on load, at most this many
/// stored events are replayed into it.
pub const DETECT_CHECKPOINT: u32 = 32;

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
    pub alerts: Vec<Raised>,
    /// The session ended with this event and has a parent, whose detector must hear of it: the
    /// backend loads the parent and calls [`ChildEnd::tell`].
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

/// What a backend writes for a changed session, in the transaction of the events that changed it
/// (as columns: [`super::SessionColumns`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The derived state, as JSON (the row's other columns come from [`Tracked::state`]).
    pub state: String,
    /// The detector state, as JSON, when it is due to be saved, with the position it covers.
    pub detector: Option<(String, i64)>,
    /// The session was heard from since the last snapshot.
    pub heard: bool,
}

/// A session row as a backend reads it back, to rebuild the session from
/// ([`Tracked::restore`]).
#[derive(Debug, Clone, Copy)]
pub struct Saved<'a> {
    pub key: i64,
    pub rev: i64,
    pub id: &'a str,
    /// The derived state's JSON.
    pub state: &'a str,
    /// The detector state's JSON, if one was saved.
    pub detector: Option<&'a str>,
    /// The position the saved detector state covers: the backend reads the session's events
    /// stored after it, to replay.
    pub detect_upto: i64,
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

    /// A session read back from the store, its detector caught up: `stored_after` is the
    /// session's events stored after `saved.detect_upto`, as (position, body) in position order.
    /// Unreadable or missing saved states start over (another version's might be); a body that no
    /// longer parses is skipped. The replayed events' alerts were raised (and stored) when they
    /// first arrived, so none is raised again.
    pub fn restore<B: AsRef<str>>(
        saved: Saved<'_>,
        stored_after: impl IntoIterator<Item = (i64, B)>,
        cfg: &DetectConfig,
    ) -> Tracked {
        let mut t = Tracked {
            key: saved.key,
            rev: saved.rev,
            state: serde_json::from_str(saved.state).unwrap_or_else(|_| SessionState::new(saved.id)),
            detector: saved.detector.and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default(),
            dirty: false,
            heard: false,
            detect_upto: saved.detect_upto,
            detect_unsaved: 0,
            detect_must_save: false,
        };
        for (position, body) in stored_after {
            if let Ok(ev) = Event::parse(body.as_ref()) {
                t.replay(position, &ev, cfg);
            }
        }
        t
    }

    /// The position the detector has seen up to.
    pub fn detect_upto(&self) -> i64 {
        self.detect_upto
    }

    /// Feeds an event stored after the saved detector state back into it, dropping its alerts.
    fn replay(&mut self, position: i64, ev: &Event, cfg: &DetectConfig) {
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
        Applied { alerts: alerts.into_iter().map(|a| self.raised(a)).collect(), child_end }
    }

    /// An alert on this session, as it is stored.
    pub fn raised(&self, alert: NewAlert) -> Raised {
        Raised { key: self.key, session_id: self.state.id.clone(), agent_id: self.state.agent_id().to_owned(), alert }
    }

    /// What the guard reads of this session now.
    pub fn facts(&self) -> Facts {
        Facts { watch: Some(self.detector.guard_view()), ..Facts::of_state(&self.state) }
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

impl ChildEnd {
    /// Tells the parent (the session named [`ChildEnd::parent`], which the backend loads) that
    /// its child ended: the parent's detector hears it, is saved with the parent's next snapshot
    /// (replaying the parent's own events would not redo it), and may raise an alert on the
    /// parent (children failing together).
    pub fn tell(&self, parent: &mut Tracked, cfg: &DetectConfig) -> Option<Raised> {
        debug_assert_eq!(parent.state.id, self.parent, "the child's parent");
        let alert = parent.detector.observe_child_end(&self.child, &self.status, self.at_us, cfg);
        parent.dirty = true;
        parent.detect_must_save = true;
        alert.map(|a| parent.raised(a))
    }
}

fn to_json(v: &impl serde::Serialize) -> String {
    // Plain data (strings, numbers, maps with string keys): serialisation cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::testing::ev;
    use super::*;
    use crate::detect::AlertKind;

    fn low_thought(seq: i64) -> Event {
        ev("s", None, seq, "cognition.thought", r#"{"content":"hmm","confidence":"low"}"#)
    }

    fn kinds(raised: &[Raised]) -> Vec<AlertKind> {
        raised.iter().map(|r| r.alert.kind).collect()
    }

    fn saved<'a>(key: i64, id: &'a str, state: &'a str, detector: Option<&'a str>, upto: i64) -> Saved<'a> {
        Saved { key, rev: 0, id, state, detector, detect_upto: upto }
    }

    #[test]
    fn an_event_updates_the_row_and_raises_the_detectors_alerts_on_its_session() {
        let cfg = DetectConfig::default();
        let mut t = Tracked::fresh(7, "s");
        assert!(t.apply(1, &ev("s", None, 1, "session.started", r#"{"goal":"g"}"#), &cfg).alerts.is_empty());
        assert!(t.apply(2, &low_thought(2), &cfg).alerts.is_empty());
        assert!(t.apply(3, &low_thought(3), &cfg).alerts.is_empty());
        let third = t.apply(4, &low_thought(4), &cfg);
        assert_eq!(kinds(&third.alerts), [AlertKind::ConfidenceDrop]);
        let r = &third.alerts[0];
        assert_eq!((r.key, r.session_id.as_str(), r.agent_id.as_str()), (7, "s", "a"));
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
    fn a_restart_catches_up_to_the_same_detector_without_repeating_alerts() {
        let cfg = DetectConfig::default();
        let events: Vec<Event> = (1..=40).map(low_thought).collect();
        let mut live = Tracked::fresh(1, "s");
        let mut saved_row = None;
        let mut alerts_live = 0;
        for (i, e) in events.iter().enumerate() {
            alerts_live += live.apply(i as i64 + 1, e, &cfg).alerts.len();
            if let Some(s) = live.snapshot() {
                if let Some(d) = s.detector {
                    saved_row = Some((s.state, d));
                }
            }
        }
        let (state, (detector, upto)) = saved_row.expect("saved at 32");
        assert_eq!(upto, 32);
        // What a backend reads back: the row, and the events stored after `detect_upto`.
        let after = events.iter().enumerate().skip(upto as usize).map(|(i, e)| (i as i64 + 1, e.raw()));
        let mut back = Tracked::restore(saved(1, "s", &state, Some(&detector), upto), after, &cfg);
        assert_eq!(back.detector, live.detector);
        assert_eq!(back.detect_upto(), 40);
        assert!(!back.heard(), "catching up is not hearing from the session");
        assert_eq!(back.snapshot(), None, "nothing to write after catching up");
        assert!(alerts_live > 0);
        // The next event behaves the same either way.
        let next = low_thought(41);
        assert_eq!(back.apply(41, &next, &cfg), live.clone().apply(41, &next, &cfg));
    }

    #[test]
    fn catching_up_skips_bodies_that_no_longer_parse_and_counts_toward_the_next_save() {
        let cfg = DetectConfig::default();
        let (thought, junk) = (low_thought(2), "{\"not\":\"an event\"}");
        let stored = [(5, thought.raw()), (6, junk)];
        let mut t = Tracked::restore(saved(1, "s", "{}", None, 4), stored, &cfg);
        assert_eq!(t.detect_upto(), 5, "the unreadable body is skipped");
        // 31 more events reach the checkpoint: the replayed one counted.
        let mut saved_at = None;
        for seq in 3..=33 {
            t.apply(seq + 4, &low_thought(seq), &cfg);
            if let Some((_, upto)) = t.snapshot().and_then(|s| s.detector) {
                saved_at.get_or_insert(upto);
            }
        }
        assert_eq!(saved_at, Some(37), "saved after {DETECT_CHECKPOINT} events, the replayed one included");
    }

    #[test]
    fn unreadable_saved_states_start_over() {
        let none: [(i64, &str); 0] = [];
        let t = Tracked::restore(
            Saved { key: 3, rev: 9, id: "s", state: "not json", detector: Some("{\"junk\":"), detect_upto: 12 },
            none,
            &DetectConfig::default(),
        );
        assert_eq!((t.key, t.rev), (3, 9));
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
            assert!(end.alerts.is_empty());
            let end = end.child_end.expect("a child with a parent ended");
            assert_eq!((end.parent.as_str(), end.child.as_str(), end.status.as_str()), ("p", child, "failed"));
            alerts.extend(end.tell(&mut parent, &cfg));
            let snap = parent.snapshot().expect("the parent changed");
            assert!(snap.detector.is_some(), "a child's end is saved at once");
            assert!(!snap.heard, "the parent itself was not heard from");
        }
        assert_eq!(kinds(&alerts), [AlertKind::ErrorCascade]);
        let r = &alerts[0];
        assert_eq!((r.key, r.session_id.as_str(), r.agent_id.as_str()), (1, "p", "a"), "raised on the parent");
    }

    #[test]
    fn only_an_ending_with_a_parent_tells_anyone_and_only_once() {
        let cfg = DetectConfig::default();
        let mut lone = Tracked::fresh(20, "lone");
        assert_eq!(lone.apply(1, &ev("lone", None, 1, "session.ended", "{}"), &cfg).child_end, None);
        let mut child = Tracked::fresh(21, "c");
        assert_eq!(child.apply(1, &ev("c", Some("p"), 1, "session.started", "{}"), &cfg).child_end, None);
        let first = child.apply(2, &ev("c", Some("p"), 2, "session.ended", "{}"), &cfg);
        assert!(first.child_end.is_some());
        let again = child.apply(3, &ev("c", Some("p"), 3, "session.ended", "{}"), &cfg);
        assert_eq!(again.child_end, None, "an ended session ending again tells nobody");
    }

    #[test]
    fn with_cascades_off_a_childs_end_is_still_saved_but_raises_nothing() {
        let cfg = DetectConfig { cascade_enabled: false, ..DetectConfig::default() };
        let mut parent = Tracked::fresh(1, "p");
        parent.snapshot();
        for child in ["c1", "c2", "c3", "c4"] {
            let end = ChildEnd { parent: "p".into(), child: child.into(), status: "failed".into(), at_us: 1 };
            assert_eq!(end.tell(&mut parent, &cfg), None);
        }
        assert!(parent.snapshot().expect("changed").detector.is_some());
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
        assert_eq!(kinds(&second.alerts), [AlertKind::CostSpike]);
        assert_eq!(second.alerts[0].alert.details["total_cost_usd"], 0.012);
        assert_eq!(t.state.view(0, 0).total_cost_usd, Some(0.012));
    }
}
