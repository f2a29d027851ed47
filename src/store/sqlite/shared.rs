//! The mapping of SQLite's errors to what callers act on (and the health counters, shared by
//! every backend).

use crate::store::StoreError;
use rusqlite::ErrorCode;

pub(super) use crate::store::counters::Shared;

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
