//! The core: channel registry, fan-out and counters. No sockets, no wire
//! formats beyond the encode cache the front ends fill.

pub mod broker;
pub mod data;
pub mod glob;
pub mod keyspace;
pub mod leaderboard;
pub mod outbox;
pub mod payload;
pub mod presence;
pub mod publication;
pub mod registry;
pub mod stream;
pub mod zset;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::config::Config;
pub use keyspace::{now_ms, Db, Keyspace};
pub use outbox::{Outbox, OutputLimits, Overflow};
pub use publication::{Delivery, DeliveryKind, Publication, Subscriber, WireFormat};
pub use registry::{ClientId, PatternQuota, Registry, Space};
pub use stream::{NewId, Stream, StreamId, Trim};

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

/// Why a history read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("history is not enabled for this channel's namespace")]
    NotEnabled,
    #[error("the channel's key holds another type")]
    WrongType,
    #[error("the position is no longer in the history (epoch changed or entries gone)")]
    Unrecoverable,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// `(offset, payload)` in the order asked for.
    pub entries: Vec<(u64, Bytes)>,
    /// The newest offset of the stream.
    pub top: u64,
    pub epoch: u64,
}

/// A channel's history position, as a subscription sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPosition {
    /// The newest offset of the stream.
    pub top: u64,
    pub epoch: u64,
    /// Whether the position asked about can be recovered (`None`: none
    /// was asked about).
    pub recoverable: Option<bool>,
}

/// The result of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Local deliveries (subscribers plus matching subscriber-pattern pairs).
    pub receivers: usize,
    /// The message's offset and the stream's epoch, where the channel keeps
    /// history.
    pub position: Option<(u64, u64)>,
}

/// Runs `f`, which may block this thread (waiting for a lock a long
/// command holds, or a long computation), without stalling the runtime: on
/// a multi-threaded tokio runtime the worker's other tasks move to another
/// thread first (`block_in_place`); elsewhere `f` just runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Takes a std lock without stalling the runtime: `try_lock` first, and
/// only when the lock is held, `lock` inside [`blocking`]. A poisoned lock
/// is taken anyway (its data stays consistent: no guard is held across a
/// panic point that could leave it half-written).
pub(crate) fn acquire<G>(
    try_lock: impl FnOnce() -> std::sync::TryLockResult<G>,
    lock: impl FnOnce() -> std::sync::LockResult<G>,
) -> G {
    match try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            blocking(|| lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

thread_local! {
    /// Whether this thread holds the transaction gate. The gate is held only
    /// in synchronous code (never across an `.await`), so a thread that
    /// holds it and publishes (a PUBLISH inside EXEC, a presence event of a
    /// SUBSCRIBE) must not take it again: a std `RwLock` read while a writer
    /// waits, or any lock while this thread writes, would deadlock.
    static GATE_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The transaction gate, held shared or exclusive by this thread until
/// dropped.
pub struct GateGuard<'a> {
    _guard: GateLock<'a>,
}

enum GateLock<'a> {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] std::sync::RwLockWriteGuard<'a, ()>),
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        GATE_HELD.with(|h| h.set(false));
    }
}

/// The hub all front ends share: one registry, one keyspace, one id space,
/// one set of counters.
pub struct Hub {
    /// Commands on the keyspace and publishes that append history hold this
    /// shared; EXEC holds it exclusive, so a transaction runs with no other
    /// client's command or history append in between. Taken only through
    /// [`Hub::gate_shared`] and [`Hub::gate_exclusive`].
    tx_gate: std::sync::RwLock<()>,
    pub registry: Registry,
    /// Output pending across all connections and HTTP answers
    /// (`--output-buffer-global-limit`).
    pub output: Arc<outbox::OutputBudget>,
    /// Patterns held by clients without the password, all front ends
    /// together (`--max-untrusted-patterns`).
    pub untrusted_patterns: PatternQuota,
    /// Fan-out beyond the local registry (in-memory by default).
    pub broker: Box<dyn broker::Broker>,
    pub keyspace: Keyspace,
    pub presence: presence::Presence,
    pub leaderboards: leaderboard::Leaderboards,
    pub stats: Stats,
    pub cfg: Arc<Config>,
    next_client_id: AtomicU64,
    pub started: Instant,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::with_config(Arc::new(Config::default()))
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    pub fn with_config(cfg: Arc<Config>) -> Hub {
        Hub {
            tx_gate: std::sync::RwLock::new(()),
            registry: Registry::new(),
            output: outbox::OutputBudget::new(cfg.output_buffer_global_limit),
            untrusted_patterns: PatternQuota::new(cfg.max_untrusted_patterns),
            broker: Box::new(broker::LocalBroker),
            keyspace: Keyspace::default(),
            presence: presence::Presence::default(),
            leaderboards: leaderboard::Leaderboards::default(),
            stats: Stats::default(),
            cfg,
            next_client_id: AtomicU64::new(1),
            started: Instant::now(),
        }
    }

    /// Holds the transaction gate shared (a keyspace command, a history
    /// append); `None` when this thread already holds it.
    pub fn gate_shared(&self) -> Option<GateGuard<'_>> {
        // Behind an EXEC: wait without stalling this worker's other tasks.
        self.enter_gate(|g| GateLock::Shared(acquire(|| g.try_read(), || g.read())))
    }

    /// Holds the transaction gate exclusively (EXEC); `None` when this
    /// thread already holds it.
    pub fn gate_exclusive(&self) -> Option<GateGuard<'_>> {
        self.enter_gate(|g| GateLock::Exclusive(acquire(|| g.try_write(), || g.write())))
    }

    fn enter_gate<'a>(
        &'a self,
        take: impl FnOnce(&'a std::sync::RwLock<()>) -> GateLock<'a>,
    ) -> Option<GateGuard<'a>> {
        if GATE_HELD.with(|h| h.get()) {
            return None;
        }
        let guard = take(&self.tx_gate);
        GATE_HELD.with(|h| h.set(true));
        Some(GateGuard { _guard: guard })
    }

    /// A fresh client id, unique across front ends.
    pub fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        Stats::add(&self.stats.published, 1);
        Stats::add(&self.stats.delivered, n as u64);
    }

    /// Publishes `payload` on `channel` to exact and pattern subscribers,
    /// appending it first to the channel's history where its namespace keeps
    /// one (then delivering under the keyspace lock, so offsets arrive in
    /// order).
    pub fn publish(&self, channel: Bytes, payload: Bytes) -> Published {
        let ns = self.cfg.namespace(&channel);
        if ns.history_size > 0 {
            // A history append is a keyspace write: EXEC must not see it
            // half-way through a transaction (XLEN twice in one EXEC).
            let _gate = self.gate_shared();
            let mut db = self.keyspace.lock();
            if let Some((offset, epoch)) = self.append_history(&mut db, &channel, payload.clone()) {
                let p = Publication::with_offset(channel, payload, offset, epoch);
                let n = self.broker.publish(&self.registry, &p);
                drop(db);
                self.count(n);
                return Published {
                    receivers: n,
                    position: Some((offset, epoch)),
                };
            }
        }
        let n = self
            .broker
            .publish(&self.registry, &Publication::new(channel, payload));
        self.count(n);
        Published {
            receivers: n,
            position: None,
        }
    }

    /// Publishes `payloads` on `channel` in order, as one step (a client's
    /// pipelined PUBLISHes to one channel); returns each one's receivers.
    /// Channels with history go one by one (each takes its offset).
    pub fn publish_batch(&self, channel: Bytes, payloads: Vec<Bytes>) -> Vec<usize> {
        if payloads.len() == 1 || self.cfg.namespace(&channel).history_size > 0 {
            return payloads
                .into_iter()
                .map(|p| self.publish(channel.clone(), p).receivers)
                .collect();
        }
        let pubs: Vec<Publication> = payloads
            .into_iter()
            .map(|p| Publication::new(channel.clone(), p))
            .collect();
        let counts = self.broker.publish_batch(&self.registry, &pubs);
        Stats::add(&self.stats.published, counts.len() as u64);
        Stats::add(&self.stats.delivered, counts.iter().sum::<usize>() as u64);
        counts
    }

    /// Appends to the history stream of `channel` (field `data`), trims it
    /// to the namespace's size and age, and enforces the global cap. `None`
    /// when the key holds another type (the message then goes out without
    /// history).
    fn append_history(&self, db: &mut Db, channel: &Bytes, payload: Bytes) -> Option<(u64, u64)> {
        let ns = self.cfg.namespace(channel);
        let now = now_ms();
        db.stream_or_create(channel, true).ok()?;
        let ttl = ns.history_ttl.0.as_millis() as u64;
        let size = ns.history_size as u64;
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
            trim_history(s, size, ttl, now);
            Some((id, offset, s.epoch))
        })??;
        db.set_expiry(channel, (ttl > 0).then(|| now + ttl));
        db.note_history_append(channel.clone(), id);
        db.touch(channel);
        db.enforce_history_cap(self.cfg.history_max_memory);
        db.signal(channel);
        Some((offset, epoch))
    }

    /// After an XADD to `key`: where `key` is a channel with history, the
    /// entry is delivered to its subscribers (payload: the `data` field, or
    /// a JSON object of all fields).
    pub fn after_xadd(
        &self,
        db: &mut Db,
        key: &Bytes,
        id: StreamId,
        offset: u64,
        fields: &[(Bytes, Bytes)],
    ) -> usize {
        db.signal(key);
        let ns = self.cfg.namespace(key);
        if ns.history_size == 0 {
            return 0;
        }
        // The stream is a channel's history: account for it, keep it within
        // the namespace's bounds and the global cap, as publishes do.
        db.mark_history(key);
        db.note_history_append(key.clone(), id);
        let ttl = ns.history_ttl.0.as_millis() as u64;
        let now = now_ms();
        let epoch = db
            .with_stream(key, |s| {
                trim_history(s, ns.history_size as u64, ttl, now);
                s.epoch
            })
            .unwrap_or(0);
        if ttl > 0 {
            db.set_expiry(key, Some(now + ttl));
        }
        db.enforce_history_cap(self.cfg.history_max_memory);
        let payload = entry_payload(fields);
        let n = self.broker.publish(
            &self.registry,
            &Publication::with_offset(key.clone(), payload, offset, epoch),
        );
        self.count(n);
        n
    }

    /// Enters a subscription into the channel's presence where its
    /// namespace tracks presence; announces the user's arrival (first
    /// connection) where it pushes join/leave.
    pub fn presence_join(&self, channel: &Bytes, entry: presence::PresenceEntry) {
        let ns = self.cfg.namespace(channel);
        if !ns.presence {
            return;
        }
        let (user, info, client) = (entry.user.clone(), entry.info.clone(), entry.client);
        if self.presence.join(channel, entry) && ns.join_leave {
            self.presence_event(channel, "join", &user, client, info);
        }
    }

    /// Removes a subscription from the channel's presence; announces the
    /// user's departure when it was their last connection.
    pub fn presence_leave(&self, channel: &[u8], client: ClientId) {
        let ns = self.cfg.namespace(channel);
        if let Some((entry, last)) = self.presence.leave(channel, client) {
            if last && ns.join_leave {
                self.presence_event(channel, "leave", &entry.user, client, entry.info);
            }
        }
    }

    /// Pushes `join`/`leave` to the channel's WebSocket subscribers and
    /// publishes the event as JSON on `__presence__:C` for RESP subscribers.
    fn presence_event(
        &self,
        channel: &[u8],
        event: &str,
        user: &str,
        client: ClientId,
        info: Option<serde_json::Value>,
    ) {
        let payload = serde_json::json!({
            "event": event,
            "user": user,
            "client": client.to_string(),
            "info": info,
        })
        .to_string();
        let channel = Bytes::copy_from_slice(channel);
        let p = Publication::new(channel.clone(), Bytes::from(payload.clone()));
        let kind = if event == "join" {
            DeliveryKind::Join
        } else {
            DeliveryKind::Leave
        };
        self.registry.deliver_event(&p, kind);
        let mut key = presence::PRESENCE_PREFIX.to_vec();
        key.extend_from_slice(&channel);
        self.publish(Bytes::from(key), Bytes::from(payload));
    }

    /// The history position of `channel` (its newest offset and its epoch).
    /// Where nothing was published yet, offset 0 and the epoch the stream
    /// will have when it is created (`Db::pending_epoch`), so the position
    /// a subscriber sees stays valid, and no key is created by a reader.
    /// Only a subscription (`reserve`) makes that promise; a history read
    /// of such a channel answers the promise if one exists, else epoch 0,
    /// so reads of made-up channels hold no memory.
    /// Trims entries past the namespace's age first.
    pub fn history_position(
        &self,
        db: &mut Db,
        channel: &[u8],
        reserve: bool,
    ) -> Result<(u64, u64), HistoryError> {
        let ns = self.cfg.namespace(channel);
        if ns.history_size == 0 {
            return Err(HistoryError::NotEnabled);
        }
        match db.stream(channel) {
            Err(_) => return Err(HistoryError::WrongType),
            Ok(None) if reserve => return Ok((0, db.pending_epoch(channel))),
            Ok(None) => return Ok((0, db.promised_epoch(channel).unwrap_or(0))),
            Ok(Some(_)) => {}
        }
        let ttl = ns.history_ttl.0.as_millis() as u64;
        let size = ns.history_size as u64;
        let now = now_ms();
        db.with_stream(channel, |s| {
            trim_history(s, size, ttl, now);
            (s.top_offset(), s.epoch)
        })
        .ok_or(HistoryError::WrongType)
    }

    /// Runs `f` under the keyspace lock with the channel's history position
    /// and, when `since` (offset, epoch) is given, whether it is
    /// recoverable: same epoch, not in the future, at most `cap`
    /// publications behind, and every publication after it still kept. No
    /// publish to the channel can come between the check and `f` (which
    /// registers a subscription, say); `f` must be short and must not
    /// take the keyspace lock.
    pub fn with_history_position<R>(
        &self,
        channel: &[u8],
        since: Option<(u64, u64)>,
        cap: usize,
        f: impl FnOnce(HistoryPosition) -> R,
    ) -> Result<R, HistoryError> {
        let mut db = self.keyspace.lock();
        let (top, epoch) = self.history_position(&mut db, channel, true)?;
        let recoverable = since.map(|(offset, e)| {
            e == epoch
                && offset <= top
                && top - offset <= cap as u64
                && match db.stream(channel) {
                    Ok(Some(s)) => s.since_offset(offset, 0).is_some(),
                    // Nothing published yet (the epoch is the one promised
                    // to subscribers): nothing can have been missed.
                    Ok(None) => offset == 0,
                    Err(_) => false,
                }
        });
        Ok(f(HistoryPosition {
            top,
            epoch,
            recoverable,
        }))
    }

    /// One step of a replay: the publications of `channel` after offset
    /// `after`, at most `max_entries` and (past the first) `max_bytes` of
    /// payload, if the stream still has epoch `epoch` and keeps every one
    /// of them; `Err(Unrecoverable)` otherwise. The keyspace lock is held
    /// only to clone the entries (reference counts, no copy): encoding them
    /// is the caller's, outside it, so a large replay taken step by step
    /// never makes other clients wait long.
    ///
    /// When the step reaches the newest entry, `at_end(top)` runs before
    /// the lock is released: publishes to the channel come after it (the
    /// caller switches its subscriber from replay to live there).
    pub fn history_chunk(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
        max_bytes: usize,
        at_end: impl FnOnce(u64),
    ) -> Result<Vec<(u64, Bytes)>, HistoryError> {
        let mut db = self.keyspace.lock();
        if after == 0 && matches!(db.stream(channel), Ok(None)) {
            // Nothing published yet: the replay is empty and ends here.
            at_end(0);
            return Ok(Vec::new());
        }
        let s = match db.stream(channel) {
            Ok(Some(s)) if s.epoch == epoch => s,
            _ => return Err(HistoryError::Unrecoverable),
        };
        let entries = s
            .since_offset(after, max_entries)
            .ok_or(HistoryError::Unrecoverable)?;
        let mut chunk = Vec::with_capacity(entries.len());
        let mut bytes = 0usize;
        for e in entries {
            // At least one entry, so that a caller always progresses.
            if bytes >= max_bytes && !chunk.is_empty() {
                break;
            }
            let payload = entry_payload(&e.fields);
            bytes = bytes.saturating_add(payload.len());
            chunk.push((e.offset, payload));
        }
        let top = s.top_offset();
        if chunk.last().map_or(after, |(o, _)| *o) == top {
            at_end(top);
        }
        Ok(chunk)
    }

    /// The payload bytes of up to `max_entries` publications of `channel`
    /// after offset `after`, and the last offset counted, if the stream
    /// still has epoch `epoch` and keeps every one of them (sizing a replay
    /// step by step, without copying anything under the keyspace lock).
    /// Entries without a `data` field count their fields as the JSON
    /// object they are delivered as, before escaping.
    pub fn history_bytes(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
    ) -> Result<(usize, u64), HistoryError> {
        let mut db = self.keyspace.lock();
        if after == 0 && matches!(db.stream(channel), Ok(None)) {
            return Ok((0, 0));
        }
        let s = match db.stream(channel) {
            Ok(Some(s)) if s.epoch == epoch => s,
            _ => return Err(HistoryError::Unrecoverable),
        };
        let entries = s
            .since_offset(after, max_entries)
            .ok_or(HistoryError::Unrecoverable)?;
        let mut bytes = 0usize;
        for e in &entries {
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
        Ok((bytes, entries.last().map_or(after, |e| e.offset)))
    }

    /// A page of a channel's history: entries after `since` (when given,
    /// which must still be recoverable), at most `limit`, newest first when
    /// `reverse`.
    pub fn history(
        &self,
        channel: &[u8],
        since: Option<(u64, u64)>,
        limit: usize,
        reverse: bool,
    ) -> Result<HistoryPage, HistoryError> {
        let mut db = self.keyspace.lock();
        let (top, epoch) = self.history_position(&mut db, channel, false)?;
        let after = match since {
            Some((offset, e)) => {
                let s = db.stream(channel).ok().flatten();
                let intact = e == epoch
                    && offset <= top
                    && s.is_none_or(|s| s.since_offset(offset, 0).is_some());
                if !intact {
                    return Err(HistoryError::Unrecoverable);
                }
                Some(offset)
            }
            None => None,
        };
        let s = db.stream(channel).map_err(|_| HistoryError::WrongType)?;
        let entries = s.map_or_else(Vec::new, |s| {
            s.history(after, limit, reverse)
                .into_iter()
                .map(|e| (e.offset, entry_payload(&e.fields)))
                .collect()
        });
        Ok(HistoryPage {
            entries,
            top,
            epoch,
        })
    }

    /// The top `n` of the sorted set at `key`, best first, and a user's own
    /// rank (0 = best) and score.
    pub fn leaderboard_top(
        &self,
        key: &[u8],
        n: usize,
        user: Option<&str>,
    ) -> (Vec<leaderboard::Entry>, leaderboard::Own) {
        let mut db = self.keyspace.lock();
        let Ok(Some(z)) = db.zset(key) else {
            return (Vec::new(), None);
        };
        let len = z.len();
        let mut top = z.range_by_rank(len - n.min(len), len);
        top.reverse();
        let own = user.and_then(|u| {
            let r = z.rank(u.as_bytes())?;
            Some((len - 1 - r, z.score(u.as_bytes())?))
        });
        (top, own)
    }

    /// One leaderboard tick: for every sorted set written since the last
    /// tick, pushes the new top N to watchers whose view changed, and
    /// publishes the top `resp_top` on `__leaderboard__:K` when it changed.
    pub fn leaderboard_tick(&self, resp_top: usize) {
        let (removed, written) = {
            let mut db = self.keyspace.lock();
            (
                std::mem::take(&mut db.zsets_removed),
                std::mem::take(&mut db.zsets_written),
            )
        };
        for key in removed.iter().chain(written.iter()) {
            self.leaderboards.mark(key);
        }
        for (key, watch_top) in self.leaderboards.take_dirty() {
            let channel = leaderboard::leaderboard_channel(&key);
            let resp_listeners =
                self.registry.numsub(Space::Global, &channel) > 0 || self.registry.numpat() > 0;
            let n = watch_top.max(if resp_listeners { resp_top } else { 0 });
            if n == 0 {
                continue;
            }
            let (entries, _) = self.leaderboard_top(&key, n, None);
            if watch_top > 0 {
                self.leaderboards.deliver(&key, &entries, |user| {
                    self.leaderboard_top(&key, 0, Some(user)).1
                });
            }
            let resp_view = &entries[..resp_top.min(entries.len())];
            if resp_listeners && self.leaderboards.changed_for_resp(&key, resp_view) {
                let json = serde_json::json!({
                    "key": String::from_utf8_lossy(&key),
                    "entries": resp_view
                        .iter()
                        .map(|(m, s)| serde_json::json!({"member": String::from_utf8_lossy(m), "score": s}))
                        .collect::<Vec<_>>(),
                });
                self.publish(channel, Bytes::from(json.to_string()));
            }
        }
    }

    /// Publishes on a shard channel.
    pub fn spublish(&self, channel: Bytes, payload: Bytes) -> usize {
        let n = self.registry.spublish(&Publication::new(channel, payload));
        self.count(n);
        n
    }
}

/// The message payload of a stream entry: its `data` field, or a JSON
/// object of all its fields when it has none (entries added with XADD).
pub fn entry_payload(fields: &[(Bytes, Bytes)]) -> Bytes {
    if let Some((_, v)) = fields.iter().find(|(f, _)| &f[..] == b"data") {
        return v.clone();
    }
    let obj: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(f, v)| {
            (
                String::from_utf8_lossy(f).into_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    Bytes::from(serde_json::Value::Object(obj).to_string())
}

/// Trims a history stream to `size` entries and drops entries older than
/// `ttl_ms` (0: no age limit).
pub fn trim_history(s: &mut Stream, size: u64, ttl_ms: u64, now: u64) {
    s.trim(Trim::MaxLen(size), false, 0);
    if ttl_ms > 0 && now > ttl_ms {
        s.trim(Trim::MinId(StreamId::new(now - ttl_ms, 0)), false, 0);
    }
}
