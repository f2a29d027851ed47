//! The detectors' thresholds, with the defaults of `COLLECTOR.md`.

use crate::model::Prices;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Thresholds of the five detectors. `Default` is the table of `COLLECTOR.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectConfig {
    pub loop_enabled: bool,
    /// Calls with the same tool, input and outcome that make a loop (at most [`MAX_CALLS`](super::MAX_CALLS) count).
    pub loop_repeats: u32,
    /// Longest span, in event time, between the first and the last call of a loop.
    pub loop_window_secs: f64,
    pub stall_enabled: bool,
    /// Silence (collector time) after which a running session stalls: three missed heartbeats.
    pub stall_after_secs: f64,
    /// The same while a tool call is open, since a slow tool is not a stuck agent.
    pub stall_after_tool_secs: f64,
    pub spike_enabled: bool,
    /// An increment at least this many times the median of the previous ones is a spike.
    pub spike_factor: f64,
    /// Previous increments needed before a median means anything (at most [`MAX_SAMPLES`](super::MAX_SAMPLES) count).
    pub spike_min_samples: usize,
    /// Total cost in USD past which the session raises one `critical` alert; `None` is off.
    pub cost_budget_usd: Option<f64>,
    pub confidence_enabled: bool,
    /// Consecutive low-confidence thoughts that make a `confidence_drop`.
    pub confidence_run: u32,
    /// Covers both halves of `error_cascade`: tool failures in a row and failed children.
    pub cascade_enabled: bool,
    /// Consecutive failed tool ends that make an `error_cascade`.
    pub cascade_run: u32,
    /// Children of one parent ending `failed` within `child_fail_window_secs` of each other.
    pub child_fail_count: u32,
    pub child_fail_window_secs: f64,
    /// Prices an event's tokens when it reports no `cost_usd`, for the cost rules and the
    /// session's total alike: the built-in table, with the config file's `[prices]` over it. Not
    /// part of the serialised form, which holds thresholds only.
    #[serde(skip)]
    pub prices: Arc<Prices>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            loop_enabled: true,
            loop_repeats: 4,
            loop_window_secs: 60.0,
            stall_enabled: true,
            stall_after_secs: 90.0,
            stall_after_tool_secs: 300.0,
            spike_enabled: true,
            spike_factor: 5.0,
            spike_min_samples: 5,
            cost_budget_usd: None,
            confidence_enabled: true,
            confidence_run: 3,
            cascade_enabled: true,
            cascade_run: 3,
            child_fail_count: 2,
            child_fail_window_secs: 60.0,
            prices: Prices::shared_builtin(),
        }
    }
}
