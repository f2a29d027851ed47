//! The running sessions a writer keeps in memory.

use super::{SessionColumns, Tracked};
use std::collections::HashMap;

/// Sessions kept in memory; beyond this the cache is emptied (states are re-read on demand).
pub const MAX_CACHED_SESSIONS: usize = 20_000;

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

    /// Every changed session with the columns to write for it, before the commit (taking them
    /// marks the sessions clean).
    pub fn changes(&mut self) -> Vec<(&Tracked, SessionColumns<'_>)> {
        let mut out = Vec::new();
        for t in self.sessions.values_mut() {
            if let Some(snap) = t.snapshot() {
                let t = &*t;
                out.push((t, SessionColumns::new(t, snap)));
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
    use super::super::testing::ev;
    use super::*;
    use crate::detect::DetectConfig;

    #[test]
    fn the_cache_keeps_running_sessions_only() {
        let cfg = DetectConfig::default();
        let mut live = Live::default();
        live.insert(Tracked::fresh(1, "running")).apply(1, &ev("running", None, 1, "session.started", "{}"), &cfg);
        live.insert(Tracked::fresh(2, "done")).apply(2, &ev("done", None, 1, "session.ended", "{}"), &cfg);
        let mut changed: Vec<(i64, String)> =
            live.changes().into_iter().map(|(t, row)| (row.key, t.state.id.clone())).collect();
        changed.sort();
        assert_eq!(changed, [(1, "running".to_owned()), (2, "done".to_owned())]);
        assert!(live.changes().is_empty(), "changes are taken once");
        live.committed();
        assert!(live.contains("running"));
        assert!(!live.contains("done"));
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn past_the_cap_the_cache_empties() {
        let mut live = Live::default();
        for key in 0..=MAX_CACHED_SESSIONS as i64 {
            live.insert(Tracked::fresh(key, &format!("s{key}")));
        }
        live.committed();
        assert!(live.is_empty());
    }
}
