//! What the guard reads of each session (`GUARD.md`), kept in memory by the writer.
//!
//! After each commit the writer copies, for every session the commit changed, the few facts the
//! guard decides on: whether it runs, the operator's stop, its cost, and its detectors' view of
//! recent tool calls and error cascades. A guard call then reads a map under a short lock,
//! never the write queue. A SQLite store's board is complete (one writer sees every event); a
//! PostgreSQL instance's holds what its own writer committed, and the store reads the shared
//! row for the rest (see [`super::Store::guard_facts`]).

use crate::detect::GuardView;
use crate::model::{SessionState, Stopped};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Sessions kept; past this, ended ones leave first, then all (they are read from the store).
const MAX_SESSIONS: usize = 100_000;

/// The facts of one session the guard decides on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Who the session's events say runs it, for the events the guard records in it.
    pub agent_id: String,
    pub parent_session_id: Option<String>,
    pub running: bool,
    pub stopped: Option<Stopped>,
    pub cost_usd: Option<f64>,
    /// The detectors' view; `None` when the facts come from a stored row alone (the detectors'
    /// current state is only in a writer's memory).
    pub watch: Option<GuardView>,
}

impl Facts {
    /// From a session's derived state alone.
    pub fn of_state(state: &SessionState) -> Facts {
        Facts {
            agent_id: state.agent_id().to_owned(),
            parent_session_id: state.parent_session_id().map(str::to_owned),
            running: state.is_running(),
            stopped: state.stopped().cloned(),
            cost_usd: state.cost_usd(),
            watch: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Board {
    sessions: Mutex<HashMap<String, Arc<Facts>>>,
}

impl Board {
    pub fn get(&self, id: &str) -> Option<Arc<Facts>> {
        self.lock().get(id).cloned()
    }

    /// The facts of sessions a commit changed. Ended sessions leave: they seldom ask, and the
    /// store's row answers for them (and for one retention has deleted since, by not existing).
    pub fn put(&self, facts: impl IntoIterator<Item = (String, Facts)>) {
        let mut map = self.lock();
        for (id, f) in facts {
            if f.running {
                map.insert(id, Arc::new(f));
            } else {
                map.remove(&id);
            }
        }
        if map.len() > MAX_SESSIONS {
            map.clear();
        }
    }

    /// A deleted session's facts go with it.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Facts>>> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_sessions_stay_until_they_end_or_are_deleted() {
        let board = Board::default();
        let running = Facts { running: true, ..Facts::default() };
        board.put([("a".to_owned(), running.clone()), ("b".to_owned(), running.clone())]);
        assert_eq!(board.get("a").as_deref(), Some(&running));
        board.put([("a".to_owned(), Facts::default())]);
        assert!(board.get("a").is_none(), "ended");
        board.forget("b");
        assert!(board.get("b").is_none(), "deleted");
        board.put((0..=MAX_SESSIONS).map(|i| (format!("s{i}"), running.clone())));
        assert!(board.get("s7").is_none(), "past the bound the board starts over");
    }
}
