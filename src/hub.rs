//! The live hub: fans committed events, alerts and deletions out to every `/stream` subscriber.
//!
//! The store's writer publishes each message once, after its transaction commits, in commit order.
//! A message is shared (`Arc`) by all subscribers and its wire frame is built once, lazily, by the
//! first subscriber that sends it ([`Message::frame`]), so a thousand subscribers cost one
//! serialisation. A subscriber that falls more than [`Hub::capacity`] messages behind is told so by
//! its receiver (`Lagged`) and is cut off by the HTTP layer; the writer never waits for anyone.

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

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

    /// The wire frame, built once by `encode` and shared by every subscriber.
    pub fn frame(&self, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.frame.get_or_init(|| encode(self)).clone()
    }
}

pub struct Hub {
    tx: broadcast::Sender<Arc<Message>>,
    capacity: usize,
    subscribers: Arc<AtomicUsize>,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Hub { tx, capacity, subscribers: Arc::new(AtomicUsize::new(0)) }
    }

    /// Never blocks: a message nobody listens to is simply dropped (it is in the store).
    pub fn publish(&self, msg: Message) {
        let _ = self.tx.send(Arc::new(msg));
    }

    pub fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription { rx: self.tx.subscribe(), count: Arc::clone(&self.subscribers) }
    }

    /// Open subscriptions (streams), for `/health` and `/metrics`.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// How far behind a subscriber may fall before it is cut off.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A subscriber's receiver; counted while it lives.
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<Message>>,
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}
