//! The subscriber side of a WebSocket session and its catch-up state
//! machine, as centrifuge's recovery: subscribe to live first, read the
//! history, then merge by offset.
//!
//! Every channel with history that a session subscribes to is, for its
//! subscriber, in one of three states:
//!
//! - **live**: deliveries are queued as they come;
//! - **behind**: deliveries are dropped, and the session replays the
//!   channel from its history, a chunk at a time, from the last offset it
//!   queued. A recovering `subscribe` starts here (at `since`), and so does
//!   a slow reader whose pending output passed the lag threshold;
//! - **joining**: the replay's last chunk reached the newest entry (decided
//!   under the keyspace lock, so no publish falls in between); deliveries
//!   from then on are held in the sink until that chunk is queued, then
//!   queued after it, and the channel is live again.
//!
//! Each chunk is read under the keyspace lock (cloning reference-counted
//! payloads) and encoded outside it, so a large replay never stalls other
//! clients, and the replay is paced by what the client reads: at most
//! about half the lag threshold of it is pending at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::protocol::{self as proto, DisconnectCode};
use super::session::Session;
use crate::hub::{Delivery, DeliveryKind, Outbox, Publication, Subscriber, WireFormat};

/// Entries read under one hold of the keyspace lock.
const CHUNK_ENTRIES: usize = 1000;
/// Payload bytes read under one hold of the keyspace lock (past the first
/// entry): a chunk of large messages stops earlier.
const CHUNK_BYTES: usize = 256 * 1024;
/// Entries sized under one hold of the keyspace lock (nothing is copied).
const SIZING_ENTRIES: usize = 4096;
/// Replay queued by one `catch_up` call before the session goes back to
/// its loop (writing, reading the socket, watching its deadlines).
const STEP_BYTES: usize = 256 * 1024;

/// The subscriber side of a session.
///
/// Messages of channels with history are never dropped for a slow reader:
/// past `lag_bytes` of pending output, the sink stops queuing that channel
/// and the session later catches up from the history (or, if the history
/// no longer reaches back that far, disconnects with "insufficient state"
/// so the client resubscribes).
pub struct WsSink {
    pub outbox: Arc<Outbox>,
    pub(super) lag: Mutex<LagState>,
    pub(super) lag_bytes: usize,
}

/// Where each history channel of a session stands. One map, not one per
/// field: every idle connection keeps this.
#[derive(Default)]
pub(super) struct LagState {
    channels: HashMap<Bytes, ChannelLag>,
    /// Channels not live (behind or joining): the session loop catches up
    /// while this is above zero.
    pub(super) behind: usize,
    /// A channel's history was replaced under a live subscription: the
    /// client must resubscribe (insufficient state).
    pub(super) broken: bool,
}

struct ChannelLag {
    /// The history epoch the channel was subscribed at.
    epoch: u64,
    /// The last offset queued for the client: where a replay resumes.
    last: u64,
    mode: Mode,
}

enum Mode {
    Live,
    Behind,
    /// Deliveries after `top` (offset, frame), held until the replay up to
    /// `top` is queued. Boxed: rare, and this enum is in every channel.
    Joining(Box<Joining>),
}

struct Joining {
    top: u64,
    held: Vec<(u64, Bytes)>,
    bytes: usize,
}

impl LagState {
    /// Starts tracking `channel` at `epoch`: live from `last` on, or behind
    /// it (a recovery replays what follows `last`).
    pub(super) fn track(&mut self, channel: Bytes, epoch: u64, last: u64, behind: bool) {
        self.forget(&channel);
        let mode = if behind {
            self.behind += 1;
            Mode::Behind
        } else {
            Mode::Live
        };
        self.channels
            .insert(channel, ChannelLag { epoch, last, mode });
    }

    pub(super) fn forget(&mut self, channel: &[u8]) {
        if let Some(c) = self.channels.remove(channel) {
            if !matches!(c.mode, Mode::Live) {
                self.behind -= 1;
            }
        }
    }

    /// Channels to replay: (channel, epoch, last offset queued).
    fn to_replay(&self) -> Vec<(Bytes, u64, u64)> {
        self.channels
            .iter()
            .filter(|(_, c)| matches!(c.mode, Mode::Behind))
            .map(|(k, c)| (k.clone(), c.epoch, c.last))
            .collect()
    }
}

impl WsSink {
    pub(super) fn lag(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replay of `channel` has read up to the newest entry, `top`.
    /// Called under the keyspace lock, before any later publish is
    /// delivered: those are held from here on (a channel behind turns
    /// joining).
    fn begin_join(&self, channel: &[u8], top: u64) {
        let mut lag = self.lag();
        if let Some(c) = lag.channels.get_mut(channel) {
            if matches!(c.mode, Mode::Behind) {
                c.mode = Mode::Joining(Box::new(Joining {
                    top,
                    held: Vec::new(),
                    bytes: 0,
                }));
            }
        }
    }

    /// A replay chunk of `channel` is queued up to offset `last`. A
    /// joining channel whose replay reached its `top` queues what was held
    /// after it and is live again (returns true); one that did not (the
    /// chunk was cut short, or too much was held) is behind again, and
    /// the rest comes from the history.
    fn end_chunk(&self, channel: &[u8], last: u64) -> bool {
        let mut guard = self.lag();
        let lag = &mut *guard;
        let Some(c) = lag.channels.get_mut(channel) else {
            return true;
        };
        c.last = last;
        let Mode::Joining(j) = &mut c.mode else {
            return false;
        };
        if j.top > last {
            c.mode = Mode::Behind;
            return false;
        }
        // Held frames start right after `top`: no gap, no duplicate.
        for (offset, frame) in std::mem::take(&mut j.held) {
            if offset > c.last && self.outbox.push(frame) {
                c.last = offset;
            }
        }
        c.mode = Mode::Live;
        lag.behind -= 1;
        true
    }
}

impl crate::hub::leaderboard::LeaderboardSink for WsSink {
    fn leaderboard(&self, key: &[u8], entries: &[(Bytes, f64)], own: Option<(usize, f64)>) {
        let v = proto::leaderboard_json(key, entries, own, true);
        self.outbox.push(Bytes::from(v.to_string()));
    }
}

impl Subscriber for WsSink {
    fn presence(&self, channel: &[u8], event: &crate::hub::presence::PresenceEvent) {
        self.outbox.push(proto::encode_presence(channel, event));
    }

    fn gap(&self, channel: &[u8]) {
        // A live history channel replays from its last queued offset: what
        // the engine could not deliver is in the history (or the replay
        // finds the position lost and the client gets 3004, never a
        // silent gap).
        let mut guard = self.lag();
        let lag = &mut *guard;
        let Some(c) = lag.channels.get_mut(channel) else {
            return;
        };
        if matches!(c.mode, Mode::Live) {
            c.mode = Mode::Behind;
            lag.behind += 1;
            drop(guard);
            self.outbox.wake();
        }
    }

    fn deliver(&self, d: &Delivery<'_>) {
        let frame = d.encoded(WireFormat::Json, proto::encode_delivery);
        let p = d.publication;
        let (DeliveryKind::Message, Some(offset)) = (d.kind, p.offset) else {
            self.outbox.push(frame);
            return;
        };
        // History channels: runs under the keyspace lock, in offset order.
        let mut guard = self.lag();
        let lag = &mut *guard;
        let Some(c) = lag.channels.get_mut(&p.channel) else {
            self.outbox.push(frame);
            return;
        };
        if p.epoch.is_some_and(|e| e != c.epoch) {
            // The stream was recreated (deleted, expired, flushed): offsets
            // restarted, so the client's position means nothing any more.
            lag.broken = true;
            drop(guard);
            self.outbox.wake();
            return;
        }
        match &mut c.mode {
            // The replay will read it from the history.
            Mode::Behind => {}
            Mode::Joining(j) => {
                if j.bytes.saturating_add(frame.len()) > self.lag_bytes / 2 {
                    // The replay's last chunk takes long to queue while
                    // publishes pour in: hold no more, replay them too.
                    c.last = j.top;
                    c.mode = Mode::Behind;
                } else {
                    j.bytes += frame.len();
                    j.held.push((offset, frame));
                }
            }
            Mode::Live if self.outbox.pending_bytes() > self.lag_bytes => {
                c.mode = Mode::Behind;
                lag.behind += 1;
                drop(guard);
                self.outbox.wake();
            }
            // An engine may deliver a publication the replay already
            // covered (at or before the position it answered): dropped.
            Mode::Live if offset <= c.last => {}
            Mode::Live => {
                if self.outbox.push(frame) {
                    c.last = offset;
                }
            }
        }
    }
}

impl Session {
    /// The size of the replay of `channel` after `since`, summed a chunk
    /// at a time (nothing encoded, no long hold of the keyspace lock),
    /// stopping once past `limit`. `None` when the position cannot be
    /// recovered; the subscription checks that again, atomically.
    pub(super) fn replay_size(
        &self,
        channel: &[u8],
        since: (u64, u64),
        limit: usize,
    ) -> Option<usize> {
        let per_frame = channel.len() + 64;
        let (mut after, epoch) = since;
        let mut total = 0usize;
        loop {
            let (bytes, last) = self
                .st
                .hub
                .history_bytes(channel, after, epoch, SIZING_ENTRIES)
                .ok()?;
            if last == after {
                return Some(total);
            }
            let n = (last - after) as usize;
            total = total.saturating_add(bytes.saturating_add(n.saturating_mul(per_frame)));
            after = last;
            if total > limit {
                return Some(total);
            }
        }
    }

    /// Replays channels that are behind from their history, a chunk at a
    /// time, while the pending output stays under half the lag threshold
    /// and for at most [`STEP_BYTES`] per call. `Ok(true)` when it stopped
    /// at that step with room left (the caller yields to other tasks, then
    /// goes on). `Err` when a channel's history no longer reaches back to
    /// where its subscriber is (or was replaced): the client must
    /// resubscribe.
    pub(super) fn catch_up(&mut self) -> Result<bool, DisconnectCode> {
        let budget = self.sink.lag_bytes / 2;
        let outbox = &self.sink.outbox;
        let mut queued = 0usize;
        let channels = self.sink.lag().to_replay();
        for (ch, epoch, mut last) in channels {
            loop {
                if outbox.pending_bytes() > budget {
                    return Ok(false);
                }
                if queued >= STEP_BYTES {
                    return Ok(true);
                }
                let sink = &self.sink;
                let room = budget.saturating_sub(outbox.pending_bytes());
                let chunk = self.st.hub.history_chunk(
                    &ch,
                    last,
                    epoch,
                    CHUNK_ENTRIES,
                    CHUNK_BYTES.min(room),
                    |top| sink.begin_join(&ch, top),
                );
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(_) => return Err(DisconnectCode::InsufficientState),
                };
                for (offset, payload) in chunk {
                    // Frames cost more than their payloads: the chunk may
                    // hold more than the room left; the rest is read again.
                    if outbox.pending_bytes() > budget {
                        break;
                    }
                    let p = Publication::with_offset(ch.clone(), payload, offset, epoch);
                    let frame =
                        proto::encode_delivery(&Delivery::direct(&p, DeliveryKind::Message));
                    queued += frame.len();
                    outbox.push(frame);
                    last = offset;
                }
                if self.sink.end_chunk(&ch, last) {
                    break;
                }
            }
        }
        Ok(false)
    }
}

/// Pending output past which history channels switch to catch-up: half the
/// hard limit, so a lagging reader never reaches it through them.
pub(super) fn lag_threshold(l: &crate::hub::OutputLimits) -> usize {
    match (l.hard_bytes, l.soft_bytes) {
        (0, 0) => 16 << 20,
        (0, soft) => soft,
        (hard, 0) => hard / 2,
        (hard, soft) => (hard / 2).min(soft),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::hub::OutputLimits;

    const CH: &[u8] = b"chat:1";

    fn sink(lag_bytes: usize) -> WsSink {
        WsSink {
            outbox: Arc::new(Outbox::new(OutputLimits::default())),
            lag: Mutex::new(LagState::default()),
            lag_bytes,
        }
    }

    fn publish(s: &WsSink, offset: u64, epoch: u64) {
        let p = Publication::with_offset(Bytes::from_static(CH), Bytes::from("x"), offset, epoch);
        s.deliver(&Delivery::direct(&p, DeliveryKind::Message));
    }

    /// The replay's frames, as `catch_up` queues them.
    fn replay(s: &WsSink, offsets: std::ops::RangeInclusive<u64>) {
        for offset in offsets {
            let p = Publication::with_offset(Bytes::from_static(CH), Bytes::from("x"), offset, 7);
            s.outbox.push(proto::encode_delivery(&Delivery::direct(
                &p,
                DeliveryKind::Message,
            )));
        }
    }

    fn queued_offsets(s: &WsSink) -> Vec<u64> {
        let mut batch = VecDeque::new();
        s.outbox.take(&mut batch);
        batch
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_slice(f).expect("json");
                v["offset"].as_u64().expect("offset")
            })
            .collect()
    }

    #[test]
    fn behind_drops_live_deliveries_and_joining_holds_them_until_the_replay_is_queued() {
        let s = sink(1 << 20);
        s.lag().track(Bytes::from_static(CH), 7, 2, true);
        assert_eq!(s.lag().behind, 1);
        // Behind: read from the history later.
        publish(&s, 3, 7);
        assert!(queued_offsets(&s).is_empty());
        // A chunk reaches the newest entry (4) under the keyspace lock;
        // then publishes 5 and 6 come while it is being encoded.
        s.begin_join(CH, 4);
        publish(&s, 5, 7);
        publish(&s, 6, 7);
        assert!(queued_offsets(&s).is_empty(), "held, not queued");
        replay(&s, 3..=4);
        assert!(s.end_chunk(CH, 4));
        assert_eq!(s.lag().behind, 0);
        publish(&s, 7, 7);
        assert_eq!(queued_offsets(&s), vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_chunk_cut_short_or_too_much_held_goes_back_behind() {
        let s = sink(1 << 20);
        s.lag().track(Bytes::from_static(CH), 7, 0, true);
        // The chunk read up to 10, but only 1..=6 fit the output budget.
        s.begin_join(CH, 10);
        publish(&s, 11, 7);
        replay(&s, 1..=6);
        assert!(!s.end_chunk(CH, 6));
        assert_eq!(s.lag().to_replay(), vec![(Bytes::from_static(CH), 7, 6)]);
        // Held deliveries past half the lag threshold: behind again from
        // the chunk's top.
        let s = sink(400);
        s.lag().track(Bytes::from_static(CH), 7, 0, true);
        s.begin_join(CH, 2);
        for offset in 3..=20 {
            publish(&s, offset, 7);
        }
        replay(&s, 1..=2);
        assert!(!s.end_chunk(CH, 2));
        assert_eq!(s.lag().behind, 1);
        assert_eq!(queued_offsets(&s), vec![1, 2]);
        assert_eq!(s.lag().to_replay(), vec![(Bytes::from_static(CH), 7, 2)]);
    }

    #[test]
    fn a_live_channel_falls_behind_past_the_threshold_and_a_new_epoch_breaks_it() {
        let s = sink(1);
        s.lag().track(Bytes::from_static(CH), 7, 0, false);
        publish(&s, 1, 7);
        // Pending output (one frame) is past the threshold of 1 byte.
        publish(&s, 2, 7);
        assert_eq!(s.lag().behind, 1);
        assert_eq!(s.lag().to_replay(), vec![(Bytes::from_static(CH), 7, 1)]);
        publish(&s, 3, 8);
        assert!(s.lag().broken);
        s.lag().forget(CH);
        assert_eq!(s.lag().behind, 0);
    }
}
