//! The core: channel registry, fan-out and counters. No sockets, no wire
//! formats beyond the encode cache the front ends fill.

pub mod glob;
pub mod outbox;
pub mod payload;
pub mod publication;
pub mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

pub use outbox::{Outbox, OutputLimits, Overflow};
pub use publication::{Delivery, DeliveryKind, Publication, Subscriber, WireFormat};
pub use registry::{ClientId, Registry, Space};

/// Counters every front end updates; read by INFO and exported by
/// `/metrics` (the counters are shared with the Prometheus registry).
#[derive(Default)]
pub struct Stats {
    pub published: Counter,
    pub delivered: Counter,
    pub connections_total: Counter,
    pub rejected_connections: Counter,
    pub slow_disconnects: Counter,
    pub auth_failures: Counter,
    pub commands: Counter,
}

impl Stats {
    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    pub fn get(counter: &Counter) -> u64 {
        counter.get()
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
