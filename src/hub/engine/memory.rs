//! The in-memory engine, the embedded default: publications are delivered
//! within this process, history lives in the node's keyspace as Redis
//! streams (so `XRANGE` reads it), presence in a map, leaderboards are the
//! keyspace's sorted sets. Every call answers at once.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{
    Broker, BrokerHandler, EngineError, HistoryOptions, HistoryStore, Interest, LeaderboardSource,
    Pending, Position, PositionThen, PresenceStore, Published,
};
use crate::hub::keyspace::{now_ms, Db, Keyspace};
use crate::hub::leaderboard::{Entry, Own};
use crate::hub::presence::{Presence, PresenceEntry, PresenceEvent};
use crate::hub::publication::Publication;
use crate::hub::stream::{NewId, Stream, StreamId, Trim};
use crate::hub::{ClientId, HistoryError, HistoryPage, HistoryPosition};

/// The memory engine over a node's keyspace; `history_max_memory` caps all
/// history (oldest entries go first).
pub fn engine(keyspace: Arc<Keyspace>, history_max_memory: usize) -> super::Engine {
    let history = Arc::new(MemoryHistory {
        keyspace: keyspace.clone(),
        max_memory: history_max_memory,
    });
    super::Engine {
        broker: Arc::new(MemoryBroker {
            handler: OnceLock::new(),
            history: history.clone(),
        }),
        history,
        presence: Arc::new(Presence::default()),
        leaderboards: Arc::new(MemoryLeaderboards { keyspace }),
    }
}

/// Delivers at once to this node's handler; appends history under the
/// keyspace lock and delivers before releasing it, so offsets reach
/// subscribers in order and a transaction (which holds the gate) never
/// sees an append half-way.
pub struct MemoryBroker {
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    history: Arc<MemoryHistory>,
}

impl MemoryBroker {
    fn handler(&self) -> &dyn BrokerHandler {
        self.handler
            .get()
            .expect("Broker::start is called when the hub is built")
            .as_ref()
    }
}

impl Broker for MemoryBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn publish(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Pending<'_, Result<Published, EngineError>> {
        if let Some(opts) = history {
            let handler = self.handler();
            let done = self
                .history
                .append_then(&channel, payload.clone(), opts, |p| {
                    handler.on_publication(&p)
                });
            if let Some((position, receivers)) = done {
                return Pending::ready(Ok(Published {
                    receivers,
                    position: Some(position),
                }));
            }
        }
        let receivers = self
            .handler()
            .on_publication(&Publication::new(channel, payload));
        Pending::ready(Ok(Published {
            receivers,
            position: None,
        }))
    }

    fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Pending<'_, Result<Vec<usize>, EngineError>> {
        let pubs: Vec<Publication> = payloads
            .into_iter()
            .map(|p| Publication::new(channel.clone(), p))
            .collect();
        Pending::ready(Ok(self.handler().on_publications(&pubs)))
    }

    fn spublish(&self, channel: Bytes, payload: Bytes) -> Pending<'_, Result<usize, EngineError>> {
        let p = Publication::new(channel, payload);
        Pending::ready(Ok(self.handler().on_shard_publication(&p)))
    }

    fn deliver_appended(
        &self,
        publication: Publication,
    ) -> Pending<'_, Result<usize, EngineError>> {
        Pending::ready(Ok(self.handler().on_publication(&publication)))
    }

    fn publish_presence(
        &self,
        channel: Bytes,
        event: PresenceEvent,
    ) -> Pending<'_, Result<(), EngineError>> {
        self.handler().on_presence(&channel, &event);
        Pending::ready(Ok(()))
    }

    fn subscribed(&self, _: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        // Every publication of this node is delivered here already.
        Pending::ready(Ok(()))
    }

    fn unsubscribed(&self, _: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        Pending::ready(Ok(()))
    }
}

/// Histories as streams in the keyspace.
pub struct MemoryHistory {
    keyspace: Arc<Keyspace>,
    max_memory: usize,
}

impl MemoryHistory {
    /// Appends under the transaction gate and the keyspace lock, and runs
    /// `deliver` with the new publication before releasing them. `None`
    /// when the channel's key holds another type.
    pub fn append_then(
        &self,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
        deliver: impl FnOnce(Publication) -> usize,
    ) -> Option<(Position, usize)> {
        // A history append is a keyspace write: EXEC must not see it
        // half-way through a transaction (XLEN twice in one EXEC).
        let _gate = self.keyspace.gate().shared();
        let mut db = self.keyspace.lock();
        let pos = self.append_locked(&mut db, channel, payload.clone(), opts)?;
        let p = Publication::with_offset(channel.clone(), payload, pos.offset, pos.epoch);
        Some((pos, deliver(p)))
    }

    /// Appends to the history stream of `channel` (field `data`), trims it
    /// to the namespace's size and age, and enforces the global cap.
    fn append_locked(
        &self,
        db: &mut Db,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
    ) -> Option<Position> {
        let now = now_ms();
        db.stream_or_create(channel, true).ok()?;
        // A RESP payload is a slice of its whole request; kept for minutes in
        // history it would pin the request's block and a shared header, so
        // small payloads get a block of their own.
        let payload = if payload.len() <= 16 << 10 {
            Bytes::copy_from_slice(&payload)
        } else {
            payload
        };
        let fields = vec![(Bytes::from_static(b"data"), payload)];
        let (id, offset, epoch) = db.with_stream(channel, |s| {
            let (id, offset) = s.add(NewId::Auto, fields, now).ok()?;
            trim_history(s, opts, now);
            Some((id, offset, s.epoch))
        })??;
        db.set_expiry(channel, (opts.ttl_ms > 0).then(|| now + opts.ttl_ms));
        db.note_history_append(channel.clone(), id);
        db.touch(channel);
        db.enforce_history_cap(self.max_memory);
        db.signal(channel);
        Some(Position { offset, epoch })
    }

    /// After an XADD to a channel with history: accounts for the entry,
    /// keeps the stream within its bounds and the global cap; the epoch.
    pub fn after_append(
        db: &mut Db,
        key: &Bytes,
        id: StreamId,
        opts: HistoryOptions,
        max_memory: usize,
    ) -> u64 {
        db.mark_history(key);
        db.note_history_append(key.clone(), id);
        let now = now_ms();
        let epoch = db
            .with_stream(key, |s| {
                trim_history(s, opts, now);
                s.epoch
            })
            .unwrap_or(0);
        if opts.ttl_ms > 0 {
            db.set_expiry(key, Some(now + opts.ttl_ms));
        }
        db.enforce_history_cap(max_memory);
        epoch
    }

    fn position_locked(
        db: &mut Db,
        channel: &[u8],
        opts: HistoryOptions,
        reserve: bool,
    ) -> Result<Position, HistoryError> {
        let at = |offset, epoch| Position { offset, epoch };
        match db.stream(channel) {
            Err(_) => return Err(HistoryError::WrongType),
            Ok(None) if reserve => return Ok(at(0, db.pending_epoch(channel))),
            Ok(None) => return Ok(at(0, db.promised_epoch(channel).unwrap_or(0))),
            Ok(Some(_)) => {}
        }
        let now = now_ms();
        db.with_stream(channel, |s| {
            trim_history(s, opts, now);
            at(s.top_offset(), s.epoch)
        })
        .ok_or(HistoryError::WrongType)
    }
}

impl HistoryStore for MemoryHistory {
    fn append(
        &self,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let done = self.append_then(channel, payload, opts, |_| 0);
        Pending::ready(done.map(|(p, _)| p).ok_or(HistoryError::WrongType))
    }

    fn position(
        &self,
        channel: &[u8],
        opts: HistoryOptions,
        reserve: bool,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let mut db = self.keyspace.lock();
        Pending::ready(Self::position_locked(&mut db, channel, opts, reserve))
    }

    fn read(
        &self,
        channel: &[u8],
        opts: HistoryOptions,
        since: Option<Position>,
        limit: usize,
        reverse: bool,
    ) -> Pending<'_, Result<HistoryPage, HistoryError>> {
        let mut db = self.keyspace.lock();
        let mut read = || {
            let top = Self::position_locked(&mut db, channel, opts, false)?;
            let s = db.stream(channel).map_err(|_| HistoryError::WrongType)?;
            let after = match since {
                Some(p) => {
                    let intact = p.epoch == top.epoch
                        && p.offset <= top.offset
                        && s.as_ref()
                            .is_none_or(|s| s.since_offset(p.offset, 0).is_some());
                    if !intact {
                        return Err(HistoryError::Unrecoverable);
                    }
                    Some(p.offset)
                }
                None => None,
            };
            let entries = s.map_or_else(Vec::new, |s| {
                s.history(after, limit, reverse)
                    .into_iter()
                    .map(|e| (e.offset, crate::hub::entry_payload(&e.fields)))
                    .collect()
            });
            Ok(HistoryPage {
                entries,
                top: top.offset,
                epoch: top.epoch,
            })
        };
        Pending::ready(read())
    }

    fn position_then<'a>(
        &'a self,
        channel: &[u8],
        opts: HistoryOptions,
        since: Option<Position>,
        cap: usize,
        then: PositionThen<'a>,
    ) -> Pending<'a, Result<(), HistoryError>> {
        // Under the keyspace lock, which publishes to the channel hold while
        // they append and deliver.
        let mut db = self.keyspace.lock();
        let top = match Self::position_locked(&mut db, channel, opts, true) {
            Ok(t) => t,
            Err(e) => return Pending::ready(Err(e)),
        };
        let recoverable = since.map(|p| {
            p.epoch == top.epoch
                && p.offset <= top.offset
                && top.offset - p.offset <= cap as u64
                && match db.stream(channel) {
                    Ok(Some(s)) => s.since_offset(p.offset, 0).is_some(),
                    // Nothing published yet (the epoch is the one promised
                    // to subscribers): nothing can have been missed.
                    Ok(None) => p.offset == 0,
                    Err(_) => false,
                }
        });
        then(HistoryPosition {
            top: top.offset,
            epoch: top.epoch,
            recoverable,
        });
        Pending::ready(Ok(()))
    }

    fn chunk<'a>(
        &'a self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
        max_bytes: usize,
        at_end: &'a mut (dyn FnMut(u64) + Send),
    ) -> Pending<'a, Result<Vec<(u64, Bytes)>, HistoryError>> {
        // The lock is held only to clone the entries (reference counts, no
        // copy): encoding them is the caller's, outside it.
        let mut db = self.keyspace.lock();
        if after == 0 && matches!(db.stream(channel), Ok(None)) {
            // Nothing published yet: the replay is empty and ends here.
            at_end(0);
            return Pending::ready(Ok(Vec::new()));
        }
        let s = match db.stream(channel) {
            Ok(Some(s)) if s.epoch == epoch => s,
            _ => return Pending::ready(Err(HistoryError::Unrecoverable)),
        };
        let Some(entries) = s.since_offset(after, max_entries) else {
            return Pending::ready(Err(HistoryError::Unrecoverable));
        };
        let mut chunk = Vec::with_capacity(entries.len());
        let mut bytes = 0usize;
        for e in entries {
            // At least one entry, so that a caller always progresses.
            if bytes >= max_bytes && !chunk.is_empty() {
                break;
            }
            let payload = crate::hub::entry_payload(&e.fields);
            bytes = bytes.saturating_add(payload.len());
            chunk.push((e.offset, payload));
        }
        let top = s.top_offset();
        if chunk.last().map_or(after, |(o, _)| *o) == top {
            at_end(top);
        }
        Pending::ready(Ok(chunk))
    }

    fn size(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
    ) -> Pending<'_, Result<(usize, u64), HistoryError>> {
        let mut db = self.keyspace.lock();
        if after == 0 && matches!(db.stream(channel), Ok(None)) {
            return Pending::ready(Ok((0, 0)));
        }
        let s = match db.stream(channel) {
            Ok(Some(s)) if s.epoch == epoch => s,
            _ => return Pending::ready(Err(HistoryError::Unrecoverable)),
        };
        let Some(entries) = s.since_offset(after, max_entries) else {
            return Pending::ready(Err(HistoryError::Unrecoverable));
        };
        let mut bytes = 0usize;
        for e in &entries {
            // Entries without a `data` field go out as the JSON object of
            // their fields: counted before escaping.
            let len = match e.fields.iter().find(|(f, _)| &f[..] == b"data") {
                Some((_, v)) => v.len(),
                None => {
                    2 + e
                        .fields
                        .iter()
                        .map(|(f, v)| f.len() + v.len() + 6)
                        .sum::<usize>()
                }
            };
            bytes = bytes.saturating_add(len);
        }
        Pending::ready(Ok((bytes, entries.last().map_or(after, |e| e.offset))))
    }
}

/// Trims a history stream to `opts.size` entries and drops entries older
/// than `opts.ttl_ms`.
pub fn trim_history(s: &mut Stream, opts: HistoryOptions, now: u64) {
    s.trim(Trim::MaxLen(opts.size), false, 0);
    if opts.ttl_ms > 0 && now > opts.ttl_ms {
        s.trim(Trim::MinId(StreamId::new(now - opts.ttl_ms, 0)), false, 0);
    }
}

impl PresenceStore for Presence {
    fn join(
        &self,
        channel: &Bytes,
        entry: PresenceEntry,
    ) -> Pending<'_, Result<bool, EngineError>> {
        Pending::ready(Ok(Presence::join(self, channel, entry)))
    }

    fn leave(
        &self,
        channel: &[u8],
        client: ClientId,
    ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>> {
        Pending::ready(Ok(Presence::leave(self, channel, client)))
    }

    fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>> {
        Pending::ready(Ok(Presence::clients(self, channel)))
    }

    fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>> {
        Pending::ready(Ok(Presence::users(self, channel)))
    }

    fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>> {
        Pending::ready(Ok(Presence::stats(self, channel)))
    }
}

/// Leaderboards over the keyspace's sorted sets.
pub struct MemoryLeaderboards {
    keyspace: Arc<Keyspace>,
}

impl LeaderboardSource for MemoryLeaderboards {
    fn top(&self, key: &[u8], n: usize, user: Option<&str>) -> Pending<'_, (Vec<Entry>, Own)> {
        let mut db = self.keyspace.lock();
        let Ok(Some(z)) = db.zset(key) else {
            return Pending::ready((Vec::new(), None));
        };
        let len = z.len();
        let mut top = z.range_by_rank(len - n.min(len), len);
        top.reverse();
        let own = user.and_then(|u| {
            let r = z.rank(u.as_bytes())?;
            Some((len - 1 - r, z.score(u.as_bytes())?))
        });
        Pending::ready((top, own))
    }

    fn take_changed(&self) -> Vec<Bytes> {
        let mut db = self.keyspace.lock();
        let removed = std::mem::take(&mut db.zsets_removed);
        let written = std::mem::take(&mut db.zsets_written);
        removed.into_iter().chain(written).collect()
    }
}
