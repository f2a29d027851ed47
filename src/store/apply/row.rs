//! What a backend writes for a changed session: the row's columns, made once.

use super::{Snapshot, Tracked};

/// The columns a backend writes for a changed session, in the transaction of the events that
/// changed it (an `UPDATE` of the row by its key). Both backends write every one of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionColumns<'t> {
    /// The row's key ([`Tracked::key`]).
    pub key: i64,
    pub id: &'t str,
    pub agent_id: &'t str,
    pub parent_id: Option<&'t str>,
    pub goal: Option<&'t str>,
    pub status: &'t str,
    pub last_seen_us: i64,
    pub event_count: i64,
    pub conversation: Option<&'t str>,
    /// The derived state, as JSON.
    pub state: String,
    /// The detector state, as JSON, when it is due to be saved; `None` keeps the stored one (and
    /// its `detect_upto`).
    pub detector: Option<String>,
    /// The position the detector state covers (0 when it is not written).
    pub detect_upto: i64,
    /// The session was heard from since it was last written: its heard time becomes now (on the
    /// backend's clock) and a stall episode ends (the row is no longer marked stalled).
    pub heard: bool,
    /// Whether the session is still running after this write.
    pub running: bool,
}

impl<'t> SessionColumns<'t> {
    /// The columns of `t`, from the snapshot just taken of it ([`Tracked::snapshot`]).
    pub fn new(t: &'t Tracked, snap: Snapshot) -> SessionColumns<'t> {
        let s = &t.state;
        let (detector, detect_upto) = snap.detector.map_or((None, 0), |(d, upto)| (Some(d), upto));
        SessionColumns {
            key: t.key,
            id: &s.id,
            agent_id: s.agent_id(),
            parent_id: s.parent_session_id(),
            goal: s.goal(),
            status: s.status(),
            last_seen_us: s.last_seen_us(),
            event_count: s.event_count(),
            conversation: s.conversation_id(),
            state: snap.state,
            detector,
            detect_upto,
            heard: snap.heard,
            running: s.is_running(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::ev;
    use super::*;
    use crate::detect::DetectConfig;
    use crate::model::SessionState;

    #[test]
    fn the_columns_are_the_derived_state_s() {
        let cfg = DetectConfig::default();
        let mut t = Tracked::fresh(4, "c");
        t.apply(10, &ev("c", Some("p"), 1, "session.started", r#"{"goal":"find it"}"#), &cfg);
        let snap = t.snapshot().expect("changed");
        let state_json = snap.state.clone();
        let row = SessionColumns::new(&t, snap);
        assert_eq!((row.key, row.id, row.agent_id, row.parent_id), (4, "c", "a", Some("p")));
        assert_eq!((row.goal, row.status, row.running), (Some("find it"), "running", true));
        assert_eq!((row.last_seen_us, row.event_count), (t.state.last_seen_us(), 1));
        assert_eq!(row.conversation, t.state.conversation_id());
        assert!(row.heard);
        assert_eq!((row.detector, row.detect_upto), (None, 0), "not due: the stored detector stays");
        let back: SessionState = serde_json::from_str(&state_json).expect("the state's JSON");
        assert_eq!(back.goal(), Some("find it"));
        assert_eq!(row.state, state_json);
    }

    #[test]
    fn an_ending_writes_the_detector_with_the_position_it_covers() {
        let cfg = DetectConfig::default();
        let mut t = Tracked::fresh(1, "s");
        t.apply(7, &ev("s", None, 1, "session.ended", r#"{"outcome":"failed"}"#), &cfg);
        let snap = t.snapshot().expect("changed");
        let row = SessionColumns::new(&t, snap);
        assert_eq!((row.status, row.running), ("failed", false));
        assert_eq!(row.detect_upto, 7);
        assert!(row.detector.is_some_and(|d| serde_json::from_str::<serde_json::Value>(&d).is_ok()));
    }

    #[test]
    fn a_parent_told_of_a_child_is_written_but_not_heard() {
        let cfg = DetectConfig::default();
        let mut parent = Tracked::fresh(1, "p");
        parent.snapshot();
        let end = super::super::ChildEnd { parent: "p".into(), child: "c".into(), status: "failed".into(), at_us: 1 };
        end.tell(&mut parent, &cfg);
        let snap = parent.snapshot().expect("changed");
        let row = SessionColumns::new(&parent, snap);
        assert!(!row.heard, "a child's end does not end the parent's silence");
        assert!(row.detector.is_some());
    }
}
