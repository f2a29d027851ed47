//! The live hub: fans committed events, alerts and deletions out to every `/stream` subscriber.
//!
//! The store's writer publishes each message once, after its transaction commits, in commit order,
//! into a ring bounded in **bytes** (events may be 64 KiB each, so a bound in messages would not
//! bound memory). A message is shared (`Arc`) by all subscribers and its wire frame is built once,
//! lazily, by the first subscriber that sends it ([`Message::frame`]), so a thousand subscribers
//! cost one serialisation. A subscriber whose next message has been pushed out of the ring is told
//! so ([`Lagged`]) and is cut off by the HTTP layer; the writer never waits for anyone, and an idle
//! subscriber costs a cursor.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// The smallest ring, in bytes: a subscriber that keeps reading must survive one large commit.
pub const MIN_CAPACITY_BYTES: usize = 1 << 20;
/// Messages handed to a subscriber per wake-up, so one lock is held briefly.
const MAX_BATCH: usize = 256;

/// What a message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A stored AOP event; `id` is its position in the store's global order.
    Event,
    Alert,
    SessionDeleted,
}

/// One message for subscribers, with the fields their filters look at.
#[derive(Debug)]
pub struct Message {
    pub kind: MessageKind,
    /// The store's global position, for events (the SSE `id:` and the resume cursor).
    pub id: Option<i64>,
    pub session_id: String,
    pub agent_id: String,
    /// The AOP event type (events only).
    pub event_type: String,
    /// The JSON object to send.
    pub data: String,
    frame: OnceLock<Bytes>,
}

impl Message {
    pub fn new(
        kind: MessageKind,
        id: Option<i64>,
        session_id: String,
        agent_id: String,
        event_type: String,
        data: String,
    ) -> Self {
        Message { kind, id, session_id, agent_id, event_type, data, frame: OnceLock::new() }
    }

    /// A committed event at position `id`.
    pub fn event(id: i64, session_id: String, agent_id: String, event_type: String, json: String) -> Self {
        Message::new(MessageKind::Event, Some(id), session_id, agent_id, event_type, json)
    }

    /// A stored alert (`json` with its id); `alert_type` is what the stream's type filter sees.
    pub fn alert(session_id: String, agent_id: String, alert_type: String, json: String) -> Self {
        Message::new(MessageKind::Alert, None, session_id, agent_id, alert_type, json)
    }

    /// A deleted session.
    pub fn session_deleted(session_id: String) -> Self {
        let data = serde_json::json!({ "session_id": session_id }).to_string();
        Message::new(MessageKind::SessionDeleted, None, session_id, String::new(), String::new(), data)
    }

    /// The wire frame, built once by `encode` and shared by every subscriber.
    pub fn frame(&self, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.frame.get_or_init(|| encode(self)).clone()
    }

    /// Bytes it holds while in the ring (its frame, once built, about doubles it).
    fn weight(&self) -> usize {
        2 * self.data.len() + self.session_id.len() + self.agent_id.len() + self.event_type.len() + 128
    }
}

struct Ring {
    messages: VecDeque<Arc<Message>>,
    /// Position (in publish order, from 0) of `messages[0]`.
    first: u64,
    bytes: usize,
}

pub struct Hub {
    ring: Mutex<Ring>,
    notify: Notify,
    capacity_bytes: usize,
    subscribers: Arc<AtomicUsize>,
    /// The latest event id published: where a new subscriber's live feed begins.
    last_event_id: AtomicI64,
}

/// The subscriber's next message was pushed out of the ring: it missed this many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

impl Hub {
    /// `capacity_bytes` is raised to [`MIN_CAPACITY_BYTES`] if smaller.
    pub fn new(capacity_bytes: usize) -> Self {
        Hub {
            ring: Mutex::new(Ring { messages: VecDeque::new(), first: 0, bytes: 0 }),
            notify: Notify::new(),
            capacity_bytes: capacity_bytes.max(MIN_CAPACITY_BYTES),
            subscribers: Arc::new(AtomicUsize::new(0)),
            last_event_id: AtomicI64::new(0),
        }
    }

    /// Never blocks on subscribers: the oldest messages make room, whoever still needed them.
    pub fn publish(&self, msg: Message) {
        if let Some(id) = msg.id {
            self.last_event_id.fetch_max(id, Ordering::Relaxed);
        }
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            ring.bytes += msg.weight();
            ring.messages.push_back(Arc::new(msg));
            while ring.bytes > self.capacity_bytes && ring.messages.len() > 1 {
                if let Some(old) = ring.messages.pop_front() {
                    ring.bytes -= old.weight();
                    ring.first += 1;
                }
            }
        }
        self.notify.notify_waiters();
    }

    /// A subscription that sees every message published from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let next = ring.first + ring.messages.len() as u64;
        Subscription { hub: Arc::clone(self), next }
    }

    /// Open subscriptions (streams), for `/health` and `/metrics`.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Starts the order after `id`, the newest position the store already holds, so a new
    /// subscriber's feed and a resume point are right before the first publish.
    pub fn advance_to(&self, id: i64) {
        self.last_event_id.fetch_max(id, Ordering::Relaxed);
    }

    /// The latest event id published so far, or the store's newest at start (0 when empty).
    pub fn last_event_id(&self) -> i64 {
        self.last_event_id.load(Ordering::Relaxed)
    }

    /// Bytes the ring currently holds, for `/metrics`.
    pub fn buffered_bytes(&self) -> usize {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// A subscriber's cursor into the ring; counted while it lives.
pub struct Subscription {
    hub: Arc<Hub>,
    next: u64,
}

impl Subscription {
    /// The next messages (at least one), waiting for them if needed.
    pub async fn recv(&mut self) -> Result<Vec<Arc<Message>>, Lagged> {
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let notified = self.hub.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let ring = self.hub.ring.lock().unwrap_or_else(|e| e.into_inner());
                if self.next < ring.first {
                    return Err(Lagged(ring.first - self.next));
                }
                let from = (self.next - ring.first) as usize;
                if from < ring.messages.len() {
                    let batch: Vec<Arc<Message>> = ring.messages.range(from..).take(MAX_BATCH).cloned().collect();
                    self.next += batch.len() as u64;
                    return Ok(batch);
                }
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: i64, size: usize) -> Message {
        Message::new(MessageKind::Event, Some(id), "s".into(), "a".into(), "t".into(), "x".repeat(size))
    }

    #[tokio::test]
    async fn subscribers_get_everything_in_order() {
        let hub = Arc::new(Hub::new(0));
        let mut sub = hub.subscribe();
        for i in 1..=300 {
            hub.publish(msg(i, 10));
        }
        let mut got = Vec::new();
        while got.len() < 300 {
            got.extend(sub.recv().await.unwrap().iter().map(|m| m.id.unwrap()));
        }
        assert_eq!(got, (1..=300).collect::<Vec<_>>());
        assert_eq!(hub.last_event_id(), 300);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_out_of_the_ring_is_told() {
        let hub = Arc::new(Hub::new(0));
        let mut slow = hub.subscribe();
        for i in 1..=100 {
            hub.publish(msg(i, 64 * 1024));
        }
        assert!(hub.buffered_bytes() <= MIN_CAPACITY_BYTES);
        assert!(matches!(slow.recv().await, Err(Lagged(n)) if n > 0));
        // A new subscriber starts at the present, unharmed.
        let mut fresh = hub.subscribe();
        hub.publish(msg(101, 10));
        assert_eq!(fresh.recv().await.unwrap()[0].id, Some(101));
    }

    #[test]
    fn subscriptions_are_counted() {
        let hub = Arc::new(Hub::new(0));
        let a = hub.subscribe();
        let b = hub.subscribe();
        assert_eq!(hub.subscriber_count(), 2);
        drop((a, b));
        assert_eq!(hub.subscriber_count(), 0);
    }
}
