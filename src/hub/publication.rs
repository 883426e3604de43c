//! A published message, and the deliveries the registry hands to subscribers.
//!
//! Each front end encodes a publication into its own wire format at most once
//! per publish: the first subscriber of a format encodes, the rest share the
//! resulting `Bytes` (a reference count, no copy).

use std::sync::OnceLock;

use bytes::Bytes;

/// The wire formats a delivery can be encoded into, one cache slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    Resp2 = 0,
    Resp3 = 1,
    Json = 2,
}

const FORMATS: usize = 3;

/// Per-format encodings of one delivery, filled on first use.
#[derive(Default)]
pub struct EncodeCache([OnceLock<Bytes>; FORMATS]);

impl EncodeCache {
    fn get_or_encode(&self, fmt: WireFormat, encode: impl FnOnce() -> Bytes) -> &Bytes {
        self.0[fmt as usize].get_or_init(encode)
    }
}

/// A message published on a channel. Channel names and payloads are bytes.
pub struct Publication {
    pub channel: Bytes,
    pub payload: Bytes,
    /// The position in the channel's history, where it keeps one.
    pub offset: Option<u64>,
    /// The epoch of that history.
    pub epoch: Option<u64>,
    cache: EncodeCache,
}

impl Publication {
    pub fn new(channel: Bytes, payload: Bytes) -> Publication {
        Publication {
            channel,
            payload,
            offset: None,
            epoch: None,
            cache: EncodeCache::default(),
        }
    }

    pub fn with_offset(channel: Bytes, payload: Bytes, offset: u64, epoch: u64) -> Publication {
        Publication {
            offset: Some(offset),
            epoch: Some(epoch),
            ..Publication::new(channel, payload)
        }
    }
}

/// How a delivery reached its subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// The subscriber is subscribed to the exact channel.
    Message,
    /// The subscriber's pattern matched the channel.
    PMessage,
    /// The subscriber is subscribed to the shard channel.
    SMessage,
}

/// One publication on its way to subscribers, with the encode cache that
/// subscribers of the same kind (and pattern) share.
pub struct Delivery<'a> {
    pub publication: &'a Publication,
    pub kind: DeliveryKind,
    /// The matching pattern, for [`DeliveryKind::PMessage`].
    pub pattern: Option<&'a Bytes>,
    cache: &'a EncodeCache,
}

impl<'a> Delivery<'a> {
    pub(crate) fn direct(publication: &'a Publication, kind: DeliveryKind) -> Delivery<'a> {
        Delivery {
            publication,
            kind,
            pattern: None,
            cache: &publication.cache,
        }
    }

    pub(crate) fn pattern(
        publication: &'a Publication,
        pattern: &'a Bytes,
        cache: &'a EncodeCache,
    ) -> Delivery<'a> {
        Delivery {
            publication,
            kind: DeliveryKind::PMessage,
            pattern: Some(pattern),
            cache,
        }
    }

    /// The delivery encoded in `fmt`, encoding it with `encode` only if no
    /// subscriber did so before.
    pub fn encoded(&self, fmt: WireFormat, encode: impl FnOnce(&Delivery<'a>) -> Bytes) -> Bytes {
        self.encoded_ref(fmt, encode).clone()
    }

    /// [`Delivery::encoded`] without taking a reference count: for sinks
    /// that copy small frames (a shared count bounces between cores when
    /// every subscriber takes and drops it).
    pub fn encoded_ref(
        &self,
        fmt: WireFormat,
        encode: impl FnOnce(&Delivery<'a>) -> Bytes,
    ) -> &Bytes {
        self.cache.get_or_encode(fmt, || encode(self))
    }
}

/// Anything that receives deliveries: a RESP connection, a WebSocket session.
pub trait Subscriber: Send + Sync + 'static {
    /// Queues the delivery for the client. Must not block or await: it runs
    /// inside the publisher's call with registry locks held.
    fn deliver(&self, delivery: &Delivery<'_>);

    /// Queues a presence event of a channel the client is subscribed to.
    /// Front ends that push join/leave implement it (RESP clients follow
    /// `__presence__:C` instead). Same rules as [`Subscriber::deliver`].
    fn presence(&self, _channel: &[u8], _event: &super::presence::PresenceEvent) {}

    /// Publications of `channel` may have been missed (the engine's link to
    /// other nodes was down): a subscriber that can recover them from the
    /// channel's history does so (WebSocket), others carry on (RESP, as
    /// Redis pub/sub is at most once). Same rules as [`Subscriber::deliver`].
    fn gap(&self, _channel: &[u8]) {}

    /// Queues several deliveries in order, as one step where the sink can
    /// (one lock, one wake-up). Same rules as [`Subscriber::deliver`].
    fn deliver_batch(&self, deliveries: &[Delivery<'_>]) {
        for d in deliveries {
            self.deliver(d);
        }
    }
}
