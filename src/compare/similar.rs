//! Which runs to compare a run with: the same agent's, the same or a similar goal first, and
//! among those the successful ones, most recent first — so a failed run's counterpart is first.

use super::step::{jaccard, normalise, sketch, SIMILAR_TEXT};
use crate::model::SessionRow;

/// How alike two goals are: 2 the same (as compared: case and spacing aside), 1 similar, 0 not.
fn goal_match(a: Option<&str>, b: Option<&str>) -> u8 {
    let (a, b) = (normalise(a.unwrap_or("")), normalise(b.unwrap_or("")));
    if a == b {
        2
    } else if jaccard(&sketch(&a), &sketch(&b)) >= SIMILAR_TEXT {
        1
    } else {
        0
    }
}

/// Orders `candidates` (given most recent first, as the sessions list gives them) by how good a
/// counterpart each is for `target`, and keeps `limit`. The target itself and other agents'
/// runs are left out. Order: successful runs with the same or a similar goal (same goal first),
/// then the other runs with the same or a similar goal, then the agent's other runs; ties keep
/// the most recent first.
pub fn rank_similar(target: &SessionRow, candidates: Vec<SessionRow>, limit: usize) -> Vec<SessionRow> {
    let mut ranked: Vec<(u8, u8, bool, SessionRow)> = candidates
        .into_iter()
        .filter(|c| c.id != target.id && c.agent_id == target.agent_id)
        .map(|c| {
            let goal = goal_match(target.goal.as_deref(), c.goal.as_deref());
            let ok = c.status == "completed";
            let tier = match (ok, goal) {
                (true, 1..) => 0,
                (false, 1..) => 1,
                _ => 2,
            };
            (tier, goal, ok, c)
        })
        .collect();
    // Stable: equal keys stay most recent first.
    ranked.sort_by_key(|(tier, goal, ok, _)| (*tier, std::cmp::Reverse(*goal), !ok));
    ranked.into_iter().take(limit).map(|(.., c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, agent: &str, goal: &str, status: &str) -> SessionRow {
        SessionRow {
            id: id.into(),
            agent_id: agent.into(),
            agent_version: None,
            parent_session_id: None,
            goal: Some(goal.into()),
            llm: None,
            conversation_id: None,
            status: status.into(),
            started_at: None,
            ended_at: None,
            last_seen_at: None,
            duration_ms: None,
            total_steps: 0,
            total_tokens: 0,
            total_cost_usd: None,
            outcome_summary: None,
            error_message: None,
            unpriced_models: vec![],
            event_count: 0,
            alert_count: 0,
            child_count: 0,
            pinned: false,
            stopped: None,
        }
    }

    #[test]
    fn the_most_recent_successful_run_with_the_same_goal_comes_first() {
        let target = row("t", "bot", "Summarise the Q3 report", "failed");
        let candidates = vec![
            // Most recent first, as the sessions list gives them.
            row("t", "bot", "Summarise the Q3 report", "failed"),
            row("other-agent", "someone", "Summarise the Q3 report", "completed"),
            row("failed-same", "bot", "summarise the  Q3 report", "failed"),
            row("unrelated", "bot", "Book a flight to Lisbon", "completed"),
            row("similar-ok", "bot", "Summarise the Q4 report", "completed"),
            row("same-ok-new", "bot", "Summarise the Q3 report", "completed"),
            row("running", "bot", "Summarise the Q3 report", "running"),
            row("same-ok-old", "bot", "Summarise the Q3 report", "completed"),
        ];
        let ids: Vec<String> = rank_similar(&target, candidates, 10).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["same-ok-new", "same-ok-old", "similar-ok", "failed-same", "running", "unrelated"]);
    }

    #[test]
    fn the_limit_holds() {
        let target = row("t", "bot", "g", "failed");
        let candidates = (0..5).map(|k| row(&format!("s{k}"), "bot", "g", "completed")).collect();
        assert_eq!(rank_similar(&target, candidates, 2).len(), 2);
    }
}
