//! Request bodies, and the memory requests that carry data may hold at once.
//!
//! Every ingest request (`/events`, OTLP) holds a [`Charge`] against one [`Budget`] for what it
//! keeps in memory: its body as it arrives, then what the body becomes (inflated, decoded,
//! derived events waiting for their commit). A request that would pass the budget is answered
//! `503` with `Retry-After` at once, so a burst of large or amplifying requests slows clients
//! down instead of taking the collector's memory; the charge is given back when the request's
//! answer is made.

use super::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What ingest requests may hold in memory at once, in all.
pub const IN_FLIGHT_BYTES: usize = 512 << 20;
/// Longest a body may take to arrive (16 MiB on loopback takes milliseconds).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Charges are counted in KiB: a permit each.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let total = bytes.div_ceil(UNIT);
        Budget { units: Arc::new(Semaphore::new(total)), total }
    }

    pub(crate) fn charge(&self) -> Charge {
        Charge { budget: Arc::clone(&self.units), permit: None, bytes: 0 }
    }

    /// Bytes held by requests now.
    pub fn held(&self) -> usize {
        self.total.saturating_sub(self.units.available_permits()) * UNIT
    }
}

/// One request's share of the [`Budget`], returned when it is dropped.
pub(crate) struct Charge {
    budget: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    /// The most asked for so far.
    bytes: usize,
}

impl Charge {
    /// Holds at least `bytes` in all; false when the budget has no room for them (what was
    /// held stays held).
    pub(crate) fn hold(&mut self, bytes: usize) -> bool {
        let have = self.bytes.div_ceil(UNIT);
        let want = bytes.div_ceil(UNIT);
        if want <= have {
            self.bytes = self.bytes.max(bytes);
            return true;
        }
        let Ok(more) = u32::try_from(want - have) else { return false };
        match Arc::clone(&self.budget).try_acquire_many_owned(more) {
            Ok(p) => {
                match &mut self.permit {
                    Some(held) => held.merge(p),
                    None => self.permit = Some(p),
                }
                self.bytes = bytes;
                true
            }
            Err(_) => false,
        }
    }

    /// Holds `more` bytes beyond what is held.
    pub(crate) fn add(&mut self, more: usize) -> bool {
        self.hold(self.bytes.saturating_add(more))
    }
}

/// The refusal when the budget is spent. The body may not have been read to its end, so the
/// connection is closed after the answer (see `ApiError::Saturated`).
pub(crate) fn saturated() -> ApiError {
    ApiError::Saturated(format!(
        "the collector is holding {} MiB of requests in memory, as much as it may; retry shortly",
        IN_FLIGHT_BYTES >> 20
    ))
}

/// Reads a whole request body of at most `limit` bytes within [`BODY_TIMEOUT`], holding what
/// it keeps against `charge` as it arrives (a declared length is not held before its bytes
/// come: a client that declares much and sends little holds little). A declared length over
/// the limit is refused before anything is read.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    charge: &mut Charge,
) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let read = async {
        let mut body = body;
        let mut parts = Parts::new(declared.map(|n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            if parts.len + data.len() > limit {
                return Err(ApiError::BodyTooLarge);
            }
            if !charge.hold(parts.len + data.len()) {
                return Err(saturated());
            }
            parts.push(data);
        }
        parts.finish(charge)
    };
    tokio::time::timeout(BODY_TIMEOUT, read).await.map_err(|_| ApiError::BodyTimeout)?
}

/// A body as it arrives. With a declared length, into one buffer of that length (grown to it
/// once a first MiB has come, so that a length declared and not sent is never allocated);
/// without one, as the frames came, joined once at the end (a buffer grown by doubling would
/// copy, and briefly hold, half as much again).
struct Parts {
    declared: Option<usize>,
    buf: Vec<u8>,
    frames: Vec<Bytes>,
    len: usize,
}

impl Parts {
    const FIRST: usize = 1 << 20;

    fn new(declared: Option<usize>) -> Parts {
        let buf = Vec::with_capacity(declared.map_or(0, |n| n.min(Self::FIRST)));
        Parts { declared, buf, frames: Vec::new(), len: 0 }
    }

    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        match self.declared {
            Some(declared) => {
                if self.len > self.buf.capacity() {
                    // A body longer than it said is refused by hyper; until then, grow to fit.
                    self.buf.reserve_exact(declared.max(self.len) - self.buf.len());
                }
                self.buf.extend_from_slice(&data);
            }
            None => self.frames.push(data),
        }
    }

    fn finish(mut self, charge: &mut Charge) -> Result<Bytes, ApiError> {
        if self.declared.is_some() {
            return Ok(Bytes::from(self.buf));
        }
        if self.frames.len() <= 1 {
            return Ok(self.frames.pop().unwrap_or_default());
        }
        // Joining holds the frames and their copy at once.
        if !charge.hold(2 * self.len) {
            return Err(saturated());
        }
        let mut joined = Vec::with_capacity(self.len);
        for f in &self.frames {
            joined.extend_from_slice(f);
        }
        Ok(Bytes::from(joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_grow_within_the_budget_and_come_back_when_dropped() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.charge();
        assert!(a.hold(3 * UNIT) && a.hold(UNIT), "asking for less than is held is free");
        assert!(a.add(UNIT + 1));
        assert_eq!(budget.held(), 5 * UNIT);
        let mut b = budget.charge();
        assert!(!b.hold(6 * UNIT), "more than is left");
        assert!(b.hold(5 * UNIT));
        assert!(a.add(1), "within the unit already held");
        assert!(!a.add(UNIT), "the budget is spent");
        drop(a);
        assert_eq!(budget.held(), 5 * UNIT);
        assert!(b.hold(10 * UNIT));
        assert!(!b.hold(usize::MAX));
    }
}
