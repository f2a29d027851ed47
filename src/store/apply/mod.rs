//! Event in, session row and alerts out: the part of ingest every store backend shares, above SQL.
//!
//! A backend stores an event, then hands it here with its global position: the session's derived
//! state ([`SessionState`](crate::model::SessionState)) and its detectors
//! ([`SessionDetector`](crate::detect::SessionDetector)) fold it ([`Tracked::apply`]), and what
//! comes back is the alerts to store ([`Raised`]) and what the parent must hear when a child ends
//! ([`ChildEnd::tell`]). Before its commit the backend writes each changed session's
//! [`SessionColumns`], and it keeps running sessions in a [`Live`] cache so a hot session is not
//! re-read per event. What a backend decides besides, it decides here too: where an event goes
//! when its place is held ([`place`]), and whether a silent session stalled ([`Tracked::stall`]).
//! Nothing here knows SQL, a connection or a clock; a backend writes SQL for what this says.
//!
//! Restart safety without writing kilobytes per event: the detector state is saved every
//! [`DETECT_CHECKPOINT`] events (and whenever the session ends or a child's end changed it); on
//! load, the backend reads the row and the events stored after the saved position, and
//! [`Tracked::restore`] replays them, which rebuilds the state without raising the alerts again.

mod live;
pub mod place;
mod row;
mod stall;
mod tracked;

pub use live::{Live, MAX_CACHED_SESSIONS};
pub use place::{Place, Probe, MAX_SPAN_PROBES};
pub use row::SessionColumns;
pub use stall::stall_silence_ms;
pub use tracked::{Applied, ChildEnd, Saved, Snapshot, Tracked, DETECT_CHECKPOINT};

use crate::detect::NewAlert;

/// An alert to store, with the session it is raised on (its row's key, its id, and its agent,
/// whom notification targets may select).
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub key: i64,
    pub session_id: String,
    pub agent_id: String,
    pub alert: NewAlert,
}

/// A time on the store's clock (ms since the epoch) as RFC 3339, as alerts' `created_at` and
/// the API's other times are written: `None` outside the years it can write.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::model::Event;

    /// An event of agent `a`, at second `seq % 60` of a minute.
    pub(crate) fn ev(session: &str, parent: Option<&str>, seq: i64, kind: &str, payload: &str) -> Event {
        let parent = parent.map_or("null".to_owned(), |p| format!("\"{p}\""));
        Event::parse(&format!(
            r#"{{"spec":"aop/1.0","session_id":"{session}","parent_session_id":{parent},"agent_id":"a","sequence":{seq},"timestamp":"2026-04-03T10:00:{:02}.000Z","type":"{kind}","payload":{payload}}}"#,
            seq % 60
        ))
        .expect("a valid event")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_times_are_rfc3339_in_utc_with_the_milliseconds_there_are() {
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339_ms(1_767_225_600_123).as_deref(), Some("2026-01-01T00:00:00.123Z"));
        assert_eq!(rfc3339_ms(1_767_225_600_100).as_deref(), Some("2026-01-01T00:00:00.1Z"));
        assert_eq!(rfc3339_ms(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(rfc3339_ms(i64::MAX), None, "past what RFC 3339 can write");
    }
}
