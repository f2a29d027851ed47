//! When deliveries go, pure: the backoff between attempts, the rate window of a target, which due
//! deliveries are sent one by one and which go into a summary, and how a failed attempt settles.

use crate::store::outbox::Settled;
use std::collections::VecDeque;
use std::time::Duration;

/// The wait after a first failed attempt; it doubles with each failure, up to [`LONGEST_WAIT`].
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
pub const LONGEST_WAIT: Duration = Duration::from_secs(300);
/// The span of a rate window.
pub const MINUTE_MS: u64 = 60_000;

/// How long to wait after `failures` failed attempts in a row (at least one): 1 s, 2 s, 4 s, …,
/// then 5 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_WAIT * 2u32.pow(doublings)).min(LONGEST_WAIT)
}

/// How a delivery settles after its attempt number `attempts` failed with `error`, at `now_ms`:
/// tried again after the backoff, but never later than its last chance (`created_ms` +
/// `max_age_ms`), and given up once that is past.
pub fn after_failure(attempts: u32, created_ms: i64, now_ms: i64, max_age_ms: i64, error: String) -> Settled {
    let deadline = created_ms.saturating_add(max_age_ms);
    if now_ms >= deadline {
        return Settled::Failed { error };
    }
    let wait = i64::try_from(backoff(attempts).as_millis()).unwrap_or(i64::MAX);
    Settled::Retry { after_ms: wait.min(deadline - now_ms), error }
}

/// The messages a target sent in the last minute (on a monotonic clock, in ms), to keep it under
/// its `max_per_minute`. A summary is a message too.
#[derive(Debug, Default)]
pub struct Window {
    sent: VecDeque<u64>,
}

impl Window {
    /// Messages that may go now.
    pub fn free(&mut self, now_ms: u64, cap: u32) -> usize {
        while self.sent.front().is_some_and(|&t| t + MINUTE_MS <= now_ms) {
            self.sent.pop_front();
        }
        (cap as usize).saturating_sub(self.sent.len())
    }

    pub fn record(&mut self, now_ms: u64) {
        self.sent.push_back(now_ms);
    }
}

/// One message to a target.
#[derive(Debug, PartialEq)]
pub enum Send<T> {
    One(T),
    /// The alerts held back past the target's rate, reported together.
    Summary(Vec<T>),
}

/// A target's due deliveries as the messages its `slots` (free places in its window) allow: all
/// one by one when they fit, else all but one slot's worth one by one (oldest first) and one
/// summary of the rest, so the target never gets more than its rate and nothing is dropped.
pub fn split<T>(mut due: Vec<T>, slots: usize) -> Vec<Send<T>> {
    if slots == 0 || due.is_empty() {
        return Vec::new();
    }
    if due.len() <= slots {
        return due.into_iter().map(Send::One).collect();
    }
    let held = due.split_off(slots - 1);
    let mut out: Vec<Send<T>> = due.into_iter().map(Send::One).collect();
    out.push(Send::Summary(held));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_second_to_five_minutes() {
        let waits: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(0), FIRST_WAIT);
        assert_eq!(backoff(u32::MAX), LONGEST_WAIT);
    }

    #[test]
    fn a_failure_is_retried_until_the_max_age_then_failed() {
        let age = 10_000;
        let e = || "refused".to_owned();
        assert_eq!(after_failure(1, 0, 100, age, e()), Settled::Retry { after_ms: 1000, error: e() });
        assert_eq!(after_failure(4, 0, 1000, age, e()), Settled::Retry { after_ms: 8000, error: e() });
        // The last chance comes at the max age itself, not a backoff past it.
        assert_eq!(after_failure(5, 0, 9000, age, e()), Settled::Retry { after_ms: 1000, error: e() });
        assert_eq!(after_failure(6, 0, 10_000, age, e()), Settled::Failed { error: e() });
        assert_eq!(after_failure(1, 0, 50_000, age, e()), Settled::Failed { error: e() });
    }

    #[test]
    fn the_window_frees_a_place_a_minute_after_each_message() {
        let mut w = Window::default();
        assert_eq!(w.free(0, 3), 3);
        w.record(0);
        w.record(10);
        w.record(20_000);
        assert_eq!(w.free(30_000, 3), 0);
        assert_eq!(w.free(60_000, 3), 1, "the first left the window");
        assert_eq!(w.free(60_010, 3), 2);
        assert_eq!(w.free(80_000, 3), 3);
        assert_eq!(w.free(80_000, 1), 1);
    }

    #[test]
    fn what_does_not_fit_goes_into_one_summary() {
        assert_eq!(split(vec![1, 2, 3], 5), [Send::One(1), Send::One(2), Send::One(3)]);
        assert_eq!(split(vec![1, 2, 3], 3), [Send::One(1), Send::One(2), Send::One(3)]);
        assert_eq!(split(vec![1, 2, 3, 4, 5], 3), [Send::One(1), Send::One(2), Send::Summary(vec![3, 4, 5])]);
        assert_eq!(split(vec![1, 2, 3], 1), [Send::Summary(vec![1, 2, 3])]);
        assert_eq!(split(vec![1, 2], 0), []);
        assert_eq!(split(Vec::<i32>::new(), 4), []);
    }
}
