//! The fan-out seam between nodes. Every publish from a front end goes
//! through a [`Broker`]; the in-memory default delivers to this node's
//! registry at once. A Redis-backed broker (the scale-out step) would also
//! publish to Redis and deliver what other nodes publish, without any change
//! to the front ends, which only ever call `Hub::publish`.

use super::publication::Publication;
use super::registry::Registry;

/// Carries publications to subscribers, on this node and beyond.
pub trait Broker: Send + Sync + 'static {
    /// Delivers `publication` to its subscribers; returns the number of
    /// local deliveries (what PUBLISH replies). Runs with the keyspace lock
    /// held for channels with history: it must not block, await, or call
    /// back into `Hub::publish` or the keyspace (a networked broker queues
    /// the forward and returns).
    fn publish(&self, registry: &Registry, publication: &Publication) -> usize;

    /// Delivers consecutive publications of one channel, in order; returns
    /// each one's local delivery count. Same rules as [`Broker::publish`].
    fn publish_batch(&self, registry: &Registry, publications: &[Publication]) -> Vec<usize> {
        publications
            .iter()
            .map(|p| self.publish(registry, p))
            .collect()
    }
}

/// The single-node default: deliver locally, synchronously.
#[derive(Debug, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn publish(&self, registry: &Registry, publication: &Publication) -> usize {
        registry.publish(publication)
    }

    fn publish_batch(&self, registry: &Registry, publications: &[Publication]) -> Vec<usize> {
        registry.publish_batch(publications)
    }
}
