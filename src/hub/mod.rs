//! The core: channel registry, fan-out and counters. No sockets, no wire
//! formats beyond the encode cache the front ends fill.

pub mod glob;
pub mod outbox;
pub mod publication;
pub mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

pub use outbox::{Outbox, OutputLimits, Overflow};
pub use publication::{Delivery, DeliveryKind, Publication, Subscriber, WireFormat};
pub use registry::{ClientId, Registry, Space};

/// Counters every front end updates; read by INFO and `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub connections_total: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub auth_failures: AtomicU64,
    pub commands: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The hub all front ends share: one registry, one id space, one set of
/// counters. Cheap to clone through `Arc`.
pub struct Hub {
    pub registry: Registry,
    pub stats: Stats,
    next_client_id: AtomicU64,
    pub started: Instant,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            registry: Registry::new(),
            stats: Stats::default(),
            next_client_id: AtomicU64::new(1),
            started: Instant::now(),
        }
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// A fresh client id, unique across front ends.
    pub fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes `payload` on `channel` to exact and pattern subscribers.
    /// Returns the number of deliveries.
    pub fn publish(&self, channel: Bytes, payload: Bytes) -> usize {
        let n = self.registry.publish(&Publication::new(channel, payload));
        Stats::add(&self.stats.published, 1);
        Stats::add(&self.stats.delivered, n as u64);
        n
    }

    /// Publishes on a shard channel.
    pub fn spublish(&self, channel: Bytes, payload: Bytes) -> usize {
        let n = self.registry.spublish(&Publication::new(channel, payload));
        Stats::add(&self.stats.published, 1);
        Stats::add(&self.stats.delivered, n as u64);
        n
    }
}
