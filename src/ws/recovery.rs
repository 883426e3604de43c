//! The subscriber side of a WebSocket session and its catch-up state
//! machine: a lagging reader of a channel with history stops being queued
//! live and is caught up from the history instead; a recovering
//! `subscribe` replays the missed publications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::ops::Refusal;
use super::protocol::{self as proto, DisconnectCode};
use super::session::Session;
use crate::hub::{Delivery, DeliveryKind, Outbox, Publication, Subscriber, WireFormat};

/// The subscriber side of a session.
///
/// Messages of channels with history are never dropped for a slow reader:
/// past `lag_bytes` of pending output, the sink stops queuing that channel
/// and records the last offset it queued; the session later catches up
/// from the history (or, if the history no longer reaches back that far,
/// disconnects with "insufficient state" so the client resubscribes).
pub struct WsSink {
    pub outbox: Arc<Outbox>,
    pub(super) lag: Mutex<LagState>,
    pub(super) lag_bytes: usize,
}

#[derive(Default)]
pub(super) struct LagState {
    /// Last offset queued, per history channel.
    pub(super) last: HashMap<Bytes, u64>,
    /// Channels being caught up, with the last offset queued before.
    pub(super) lagged: HashMap<Bytes, u64>,
    /// The history epoch each channel was subscribed at.
    pub(super) epochs: HashMap<Bytes, u64>,
    /// A channel's history was replaced under a live subscription: the
    /// client must resubscribe (insufficient state).
    pub(super) broken: bool,
}

impl LagState {
    pub(super) fn forget(&mut self, channel: &[u8]) {
        self.last.remove(channel);
        self.lagged.remove(channel);
        self.epochs.remove(channel);
    }
}

impl WsSink {
    pub(super) fn lag(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::hub::leaderboard::LeaderboardSink for WsSink {
    fn leaderboard(&self, key: &[u8], entries: &[(Bytes, f64)], own: Option<(usize, f64)>) {
        let v = proto::leaderboard_json(key, entries, own, true);
        self.outbox.push(Bytes::from(v.to_string()));
    }
}

impl Subscriber for WsSink {
    fn deliver(&self, d: &Delivery<'_>) {
        let frame = d.encoded(WireFormat::Json, proto::encode_delivery);
        let p = d.publication;
        let (DeliveryKind::Message, Some(offset)) = (d.kind, p.offset) else {
            self.outbox.push(frame);
            return;
        };
        // History channels: runs under the keyspace lock, like catch-up.
        let mut lag = self.lag();
        if p.epoch.is_some()
            && lag
                .epochs
                .get(&p.channel)
                .is_some_and(|e| Some(*e) != p.epoch)
        {
            // The stream was recreated (deleted, expired, flushed): offsets
            // restarted, so the client's position means nothing any more.
            lag.broken = true;
            drop(lag);
            self.outbox.wake();
            return;
        }
        if lag.lagged.contains_key(&p.channel) {
            return;
        }
        if self.outbox.pending_bytes() > self.lag_bytes {
            let last = lag.last.get(&p.channel).copied().unwrap_or(offset - 1);
            lag.lagged.insert(p.channel.clone(), last);
            drop(lag);
            self.outbox.wake();
            return;
        }
        if self.outbox.push(frame) {
            lag.last.insert(p.channel.clone(), offset);
        }
    }
}

impl Session {
    /// The `message` pushes replaying `missed` publications of `channel`,
    /// if their size is admitted (estimated first, so a refused replay is
    /// never encoded).
    pub(super) fn replay_frames(
        &self,
        channel: &Bytes,
        epoch: u64,
        missed: Vec<(u64, Bytes)>,
    ) -> Result<Vec<Bytes>, Refusal> {
        let per_frame = channel.len() + 64;
        let estimate = missed
            .iter()
            .fold(0usize, |n, (_, p)| n.saturating_add(p.len() + per_frame));
        self.admit(estimate)?;
        let frames: Vec<Bytes> = missed
            .into_iter()
            .map(|(offset, payload)| {
                let p = Publication::with_offset(channel.clone(), payload, offset, epoch);
                proto::encode_delivery(&Delivery::direct(&p, DeliveryKind::Message))
            })
            .collect();
        self.admit(frames.iter().map(Bytes::len).sum())?;
        Ok(frames)
    }

    /// Catches lagged history channels up from their history, within a
    /// budget of output. `Err` when a channel's history no longer reaches
    /// back to where its subscriber fell behind.
    pub(super) fn catch_up(&mut self) -> Result<(), DisconnectCode> {
        let hub = self.st.hub.clone();
        let mut db = hub.keyspace.lock();
        let mut lag = self.sink.lag();
        let budget = self.sink.lag_bytes / 2;
        let channels: Vec<(Bytes, u64)> = lag.lagged.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (ch, last) in channels {
            let Ok(Some(s)) = db.stream(&ch) else {
                return Err(DisconnectCode::InsufficientState);
            };
            if lag.epochs.get(&ch) != Some(&s.epoch) {
                return Err(DisconnectCode::InsufficientState);
            }
            let Some(entries) = s.since_offset(last, usize::MAX) else {
                return Err(DisconnectCode::InsufficientState);
            };
            let mut upto = last;
            for e in entries {
                if self.sink.outbox.pending_bytes() > budget {
                    break;
                }
                let p = Publication::with_offset(
                    ch.clone(),
                    crate::hub::entry_payload(&e.fields),
                    e.offset,
                    s.epoch,
                );
                self.sink
                    .outbox
                    .push(proto::encode_delivery(&Delivery::direct(
                        &p,
                        DeliveryKind::Message,
                    )));
                upto = e.offset;
            }
            if upto == s.top_offset() {
                lag.lagged.remove(&ch);
            } else {
                lag.lagged.insert(ch.clone(), upto);
            }
            lag.last.insert(ch, upto);
        }
        Ok(())
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
