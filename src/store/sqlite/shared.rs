//! What the writer, the readers and the store's handle share: the store's health counters, and
//! the mapping of SQLite's errors to what callers act on.

use crate::store::StoreError;
use rusqlite::ErrorCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// State the writer shares with readers of health and metrics.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) writable: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) queue_depth: AtomicUsize,
    pub(super) commits: AtomicU64,
    pub(super) alerts: AtomicU64,
    pub(super) closing: AtomicBool,
}

impl Shared {
    pub(super) fn mark_writable(&self) {
        if !self.writable.swap(true, Ordering::Relaxed) {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    pub(super) fn mark_failed(&self, err: &StoreError) {
        self.writable.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
    }
}

/// rusqlite's error is not `Clone`; the store's error is (one failed group answers many callers),
/// so the cause is kept as an owned copy with the same message and SQLite code.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => rusqlite::Error::SqliteFailure(*code, msg.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// Maps SQLite's errors to what a caller can act on.
pub(super) fn classify(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::db(clone_error(e)),
    }
}
