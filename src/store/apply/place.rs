//! Where an event goes when its `(session, sequence)` place is held.
//!
//! An event a client sent is refused there: a duplicate (a retry of the stored content) or a
//! conflict (another event holds the place). An event derived from a span is not: its sequence
//! comes from the span's clock, which other spans may share, so it moves to the next free
//! sequence within [`MAX_SPAN_PROBES`], and a retry of it finds itself on the way there (a
//! session's sequences are only ever filled, never freed, while it exists).
//!
//! A backend stores an event at its own place when that is free. When it is held, the backend
//! fetches what this module asks for, the holder's body ([`refused`]) or the stored bodies of
//! the probe window ([`Probe::window`]), and this module decides.

use crate::model::{Event, SpanRef};
use crate::store::Outcome;
use std::ops::Range;

/// How far a span's event may move past the sequence its clock gave it: that many events of one
/// trace would have to share a microsecond.
pub const MAX_SPAN_PROBES: i64 = 1024;

/// Where an event whose place was held goes.
#[derive(Debug, PartialEq)]
pub enum Place {
    /// To this sequence (the event as it is stored there): a span's event moved. Boxed: a rare
    /// outcome, and an event is large beside an [`Outcome`].
    Moved(Box<Event>),
    /// Nowhere: `Duplicate` (the same event is stored) or `Conflict` (another one holds the place).
    Refused(Outcome),
}

/// An event not derived from a span whose place `held` holds: a duplicate if `held` is the same
/// content, else a conflict.
pub fn refused(ev: &Event, held: &str) -> Outcome {
    if Event::same_content(held, ev.raw()) {
        Outcome::Duplicate
    } else {
        Outcome::Conflict
    }
}

/// A span's event looking for a place: fed the stored bodies of its window in sequence order,
/// it stops at itself (a retry), at the first free sequence, or at the window's end.
#[derive(Debug)]
pub struct Probe<'e> {
    ev: &'e Event,
    span: &'e SpanRef,
    /// The next sequence to look at: every one before it (from the event's own) is held.
    free: i64,
}

impl<'e> Probe<'e> {
    /// The probe of an event whose place is held, if it is a span's (else see [`refused`]).
    pub fn of(ev: &'e Event) -> Option<Probe<'e>> {
        ev.span_ref().map(|span| Probe { ev, span, free: ev.sequence })
    }

    /// The sequences whose stored bodies decide: from the event's own, [`MAX_SPAN_PROBES`] of them.
    pub fn window(&self) -> Range<i64> {
        self.ev.sequence..self.ev.sequence.saturating_add(MAX_SPAN_PROBES)
    }

    /// Takes the next stored body of the window, in sequence order (sequences outside the window
    /// are ignored): `Some` once the place is decided.
    pub fn step(&mut self, seq: i64, body: &str) -> Option<Place> {
        if seq < self.free || !self.window().contains(&seq) {
            return None;
        }
        if seq != self.free {
            // A free sequence before this one.
            return Some(self.moved());
        }
        if self.span.matches_stored(body) {
            return Some(Place::Refused(Outcome::Duplicate));
        }
        self.free += 1;
        None
    }

    /// The window held nothing more.
    pub fn finish(self) -> Place {
        if self.free - self.ev.sequence >= MAX_SPAN_PROBES {
            return Place::Refused(Outcome::Conflict);
        }
        self.moved()
    }

    /// Decides from the window's stored bodies, in sequence order.
    pub fn through<'b>(mut self, window: impl IntoIterator<Item = (i64, &'b str)>) -> Place {
        for (seq, body) in window {
            if let Some(place) = self.step(seq, body) {
                return place;
            }
        }
        self.finish()
    }

    fn moved(&self) -> Place {
        match self.ev.with_sequence(self.free) {
            Ok(moved) => Place::Moved(Box::new(moved)),
            Err(_) => Place::Refused(Outcome::Conflict),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::ev;
    use super::*;
    use crate::model::SpanRole;

    /// A span's tool end as the OTLP mapping makes it: its span id in `payload.otel`.
    fn span_ev(span_id: &str, seq: i64) -> Event {
        let payload = format!(r#"{{"tool":"t","success":true,"otel":{{"span_id":"{span_id}"}}}}"#);
        ev("s", None, seq, "operation.tool_end", &payload)
            .from_span(SpanRef { span_id: span_id.to_owned(), role: SpanRole::Main })
    }

    fn other(seq: i64) -> String {
        span_ev("00000000000000ff", seq).raw().to_owned()
    }

    fn decide(ev: &Event, window: &[(i64, String)]) -> Place {
        Probe::of(ev).expect("a span's event").through(window.iter().map(|(q, b)| (*q, b.as_str())))
    }

    #[test]
    fn a_client_event_is_a_duplicate_of_the_same_content_else_a_conflict() {
        let e = ev("s", None, 5, "cognition.thought", r#"{"content":"x","confidence":"low"}"#);
        assert!(Probe::of(&e).is_none(), "not a span's event: it never moves");
        assert_eq!(refused(&e, e.raw()), Outcome::Duplicate);
        let reordered = e.raw().replace(r#""content":"x","confidence":"low""#, r#""confidence":"low","content":"x""#);
        assert_ne!(reordered, e.raw());
        assert_eq!(refused(&e, &reordered), Outcome::Duplicate, "the same JSON, keys in another order");
        let changed = ev("s", None, 5, "cognition.thought", r#"{"content":"y"}"#);
        assert_eq!(refused(&e, changed.raw()), Outcome::Conflict);
    }

    #[test]
    fn a_span_event_moves_to_the_first_free_sequence() {
        let e = span_ev("00000000000000aa", 100);
        let Place::Moved(moved) = decide(&e, &[(100, other(100)), (101, other(101)), (103, other(103))]) else {
            panic!("moved");
        };
        assert_eq!(moved.sequence, 102);
        assert_eq!(moved.span_ref(), e.span_ref(), "it stays the span's event");
        assert!(moved.raw().contains("\"sequence\":102"));
    }

    #[test]
    fn a_retry_finds_itself_on_the_way() {
        let e = span_ev("00000000000000aa", 100);
        // The first copy was moved to 102: its body says so, and the retry still matches it.
        let first = e.with_sequence(102).expect("valid");
        let window = [(100, other(100)), (101, other(101)), (102, first.raw().to_owned())];
        assert_eq!(decide(&e, &window), Place::Refused(Outcome::Duplicate));
        // At its own place too.
        assert_eq!(decide(&e, &[(100, e.raw().to_owned())]), Place::Refused(Outcome::Duplicate));
    }

    #[test]
    fn a_full_window_is_a_conflict() {
        let e = span_ev("00000000000000aa", 10);
        let full: Vec<(i64, String)> = (10..10 + MAX_SPAN_PROBES).map(|q| (q, other(q))).collect();
        assert_eq!(decide(&e, &full), Place::Refused(Outcome::Conflict));
        // One free place at its very end is enough.
        let Place::Moved(moved) = decide(&e, &full[..full.len() - 1]) else { panic!("moved") };
        assert_eq!(moved.sequence, 10 + MAX_SPAN_PROBES - 1);
    }

    #[test]
    fn bodies_outside_the_window_change_nothing() {
        let e = span_ev("00000000000000aa", 10);
        assert_eq!(e.sequence, 10);
        assert_eq!(Probe::of(&e).expect("span").window(), 10..10 + MAX_SPAN_PROBES);
        // A backend that reads past the window (or a row before it) is not misled by it.
        let Place::Moved(moved) = decide(&e, &[(9, other(9)), (10, other(10)), (10 + MAX_SPAN_PROBES, other(0))])
        else {
            panic!("moved")
        };
        assert_eq!(moved.sequence, 11);
    }

    #[test]
    fn step_by_step_as_a_backend_streaming_rows_calls_it() {
        let e = span_ev("00000000000000aa", 7);
        let mut probe = Probe::of(&e).expect("span");
        assert_eq!(probe.step(7, &other(7)), None);
        assert_eq!(probe.step(8, &other(8)), None);
        let Some(Place::Moved(moved)) = probe.step(10, &other(10)) else { panic!("decided at the gap") };
        assert_eq!(moved.sequence, 9);
    }
}
