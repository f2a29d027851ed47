//! What a backend's writer shares with its readers, `/health` and the guard: health counters,
//! and the guard's board.

use crate::store::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// State the writer shares with readers of health and metrics.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) writable: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) queue_depth: AtomicUsize,
    pub(crate) commits: AtomicU64,
    pub(crate) alerts: AtomicU64,
    pub(crate) closing: AtomicBool,
    /// What the guard reads, put by the writer after each commit.
    pub(crate) board: crate::store::board::Board,
}

impl Shared {
    pub(crate) fn mark_writable(&self) {
        if !self.writable.swap(true, Ordering::Relaxed) {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    pub(crate) fn mark_failed(&self, err: &StoreError) {
        self.writable.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
    }
}
