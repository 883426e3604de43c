//! The keyspace: typed values (strings, hashes, streams, sets, sorted sets)
//! with expiry, as Redis keeps them, shared by history, presence and
//! leaderboards. Keys live in a [`KeyMap`] (`hub::keymap`): a small key and
//! a small string value cost no allocation.
//!
//! One mutex guards the whole keyspace: every command is atomic, MULTI/EXEC
//! can run a batch under one guard, and publishes to channels with history
//! append and deliver under it, so offsets reach subscribers in order. No
//! guard is ever held across an `.await`.
//!
//! Expiry is exact and active: deadlines are indexed in a `BTreeSet`, a
//! background tick reclaims everything due, and reads treat a due key as
//! absent even before the tick.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;

use super::glob::Glob;
use super::hash::HashValue;
use super::keymap::{Compact, KeyMap};
use super::stream::{Stream, StreamId};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A value in the keyspace: 24 bytes, so an entry with its key is a 72-byte
/// slot (sets, sorted sets and streams are boxed; a string of up to 22
/// bytes is inline, and so are a hash's and a list's own 16 bytes).
#[derive(Debug, Clone)]
pub enum Value {
    Stream(Box<Stream>),
    Set(Box<SetValue>),
    ZSet(Box<super::zset::ZSet>),
    String(Compact),
    Hash(HashValue),
    List(super::list::ListValue),
}

/// How long an epoch promised to subscribers of a channel with no history
/// yet is kept (see `Db::pending_epoch`): a day, so a quiet room's
/// subscriber keeps its position.
const PENDING_EPOCH_TTL_MS: u64 = 86_400_000;
/// Most such promises kept at once, and the most bytes of channel names
/// they may hold (past either, the oldest go: their subscribers are told
/// with 3004 at the first publish, never silently).
const MAX_PENDING_EPOCHS: usize = 100_000;
const MAX_PENDING_BYTES: usize = 16 << 20;

/// Redis's `set-max-intset-entries`.
const MAX_INTSET: usize = 512;

/// A set, remembering whether Redis would still hold it as an intset (only
/// integers, at most 512 of them, never otherwise since creation): Redis
/// lists intsets in ascending numeric order, which replies reproduce.
///
/// Members live in an `IndexSet` (SipHash with random keys, as `HashSet`):
/// a random member is one index away and a removal is a swap, so SPOP and
/// SRANDMEMBER cost O(1) per member instead of a copy of the whole set.
#[derive(Debug, Clone, Default)]
pub struct SetValue {
    members: indexmap::IndexSet<Bytes>,
    intset: bool,
}

/// An integer as Redis's intset accepts it.
pub fn as_int(b: &[u8]) -> Option<i64> {
    crate::resp::parse::parse_i64(b)
}

impl SetValue {
    pub fn new() -> SetValue {
        SetValue {
            members: indexmap::IndexSet::new(),
            intset: true,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        self.members.contains(m)
    }

    /// Adds a member; true if it was new.
    pub fn insert(&mut self, m: Bytes) -> bool {
        if self.intset && (as_int(&m).is_none() || self.members.len() >= MAX_INTSET) {
            self.intset = false;
        }
        self.members.insert(m)
    }

    pub fn remove(&mut self, m: &[u8]) -> bool {
        self.members.swap_remove(m)
    }

    /// The member at position `i` (0 ≤ i < len) of the set's internal
    /// order, for random picks.
    pub fn get_index(&self, i: usize) -> Option<&Bytes> {
        self.members.get_index(i)
    }

    /// One SSCAN page: about `count` members, walking the internal order
    /// from the end towards the start, and the next cursor (0: done; a
    /// first call passes 0). A removal moves the last member into the gap;
    /// walking downwards, that member was already returned, so a member
    /// present for the whole scan is never skipped (it may come twice, as
    /// Redis allows), and each page costs O(count).
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<Bytes>) {
        let len = self.members.len();
        let end = match cursor {
            0 => len,
            c => usize::try_from(c).unwrap_or(usize::MAX).min(len),
        };
        let start = end.saturating_sub(count.max(1));
        let page = (start..end)
            .rev()
            .filter_map(|i| self.members.get_index(i).cloned())
            .collect();
        (start as u64, page)
    }

    /// Removes and returns the member at position `i`.
    pub fn swap_remove_index(&mut self, i: usize) -> Option<Bytes> {
        self.members.swap_remove_index(i)
    }

    /// Members in the order Redis would list them: ascending numbers for an
    /// intset, unspecified otherwise.
    pub fn members(&self) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self.members.iter().cloned().collect();
        if self.intset {
            v.sort_by_key(|m| as_int(m).unwrap_or(0));
        }
        v
    }

    pub fn is_intset(&self) -> bool {
        self.intset
    }

    /// Builds a set from members, as Redis builds result sets (an intset
    /// while every member is an integer).
    pub fn from_members(members: impl IntoIterator<Item = Bytes>) -> SetValue {
        let mut s = SetValue::new();
        for m in members {
            s.insert(m);
        }
        s
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.members.iter()
    }
}

impl Value {
    /// The name TYPE reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Stream(_) => "stream",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::String(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
        }
    }
}

/// Redis's WRONGTYPE error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
pub struct WrongType;

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Deadline in ms since the epoch.
    pub expires_at: Option<u64>,
    /// Part of a channel's history (counted against the history cap).
    pub history: bool,
}

/// The data behind the keyspace lock.
#[derive(Default)]
pub struct Db {
    map: KeyMap<Entry>,
    /// Deadlines and the positions of their keys' slots in `map` (kept
    /// right when a removal moves a slot: see [`Db::map_remove`]).
    expires: BTreeSet<(u64, u32)>,
    waiters: HashMap<Bytes, Arc<Notify>>,
    /// Blocked list pops, first come first served (`data::list_waits`).
    pub list_waits: super::data::ListWaits,
    /// Bytes held by history streams.
    pub history_bytes: usize,
    /// History entries in append order, for oldest-first eviction.
    history_fifo: VecDeque<(Bytes, StreamId)>,
    history_entries: usize,
    epoch_seed: u64,
    epoch_counter: u64,
    /// Epochs promised to subscribers of history channels whose stream does
    /// not exist yet (nothing published): the stream adopts it when it is
    /// created, so a subscriber's position stays valid, and readers never
    /// create keys (they would grow the keyspace and break WATCH). With a
    /// deadline each, in `pending_order`; bounded by `MAX_PENDING_EPOCHS`.
    pending_epochs: HashMap<Bytes, (u64, u64)>,
    pending_order: VecDeque<(u64, Bytes)>,
    /// Bytes of channel names in `pending_order`, bounded by
    /// `MAX_PENDING_BYTES` (names may be 64 KiB each).
    pending_bytes: usize,
    /// Entries evicted by the history memory cap, ever.
    pub history_evicted: u64,
    /// Versions of WATCHed keys (and how many clients watch each).
    watched: HashMap<Bytes, (u64, usize)>,
    /// `watched.len()`, readable without the lock (shared with [`Keyspace`]).
    watching: Arc<AtomicUsize>,
    /// Sorted sets removed (deleted, expired, flushed) since the last
    /// leaderboard tick, so their watchers see them go.
    pub zsets_removed: Vec<Bytes>,
    /// Sorted sets written since the last leaderboard tick (kept here, under
    /// the lock writers already hold, rather than behind another lock).
    pub zsets_written: HashSet<Bytes>,
}

impl Db {
    /// Notes a write to the sorted set at `key` for the leaderboard tick.
    pub fn zset_written(&mut self, key: &[u8]) {
        if !self.zsets_written.contains(key) {
            self.zsets_written.insert(Bytes::copy_from_slice(key));
        }
    }
}

/// The keyspace of one Herald node.
pub struct Keyspace {
    db: Mutex<Db>,
    watching: Arc<AtomicUsize>,
    gate: super::gate::TxGate,
}

impl Default for Keyspace {
    fn default() -> Self {
        // Random keys (std's per-instance hasher keys): epochs nobody can
        // predict, different for every keyspace, also two made in one
        // millisecond of one process (two hubs, a hub and an engine's store).
        let seed = {
            use std::hash::BuildHasher;
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            now_ms().hash(&mut h);
            std::process::id().hash(&mut h);
            h.finish()
        };
        let watching = Arc::new(AtomicUsize::new(0));
        Keyspace {
            db: Mutex::new(Db {
                epoch_seed: seed | 1,
                watching: watching.clone(),
                ..Db::default()
            }),
            watching,
            gate: Default::default(),
        }
    }
}

/// Attempts to take the keyspace lock before parking (see [`Keyspace::lock`]).
const LOCK_SPINS: usize = 200;

impl Keyspace {
    /// Whether any client WATCHes any key. A writer that finds none need
    /// not lock again to bump versions: a WATCH registered before its write
    /// is visible here (both go through the lock), and one registered after
    /// already sees the written value.
    /// The transaction gate (see `hub::gate`).
    pub fn gate(&self) -> &super::gate::TxGate {
        &self.gate
    }

    pub fn any_watched(&self) -> bool {
        self.watching.load(AtomicOrdering::Acquire) > 0
    }

    /// Locks the keyspace. Commands hold it for a few microseconds, less than
    /// a thread takes to fall asleep and be woken again, so a waiter first
    /// spins for about as long as one command runs before it parks (two
    /// pipelining clients on one sorted set otherwise spent a third of their
    /// time switching threads).
    pub fn lock(&self) -> MutexGuard<'_, Db> {
        for _ in 0..LOCK_SPINS {
            match self.db.try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    for _ in 0..8 {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        // Parking blocks this runtime worker; with one worker per core, a
        // few clients waiting behind a long command would stop every other
        // connection (PING included). Handing the worker's other tasks on
        // first keeps them running.
        super::blocking(|| self.db.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A stable hash for SCAN cursors (independent of the map's own hasher).
pub fn scan_hash(key: &[u8]) -> u64 {
    // FNV-1a, then a final mix: cheap and stable across runs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h
}

impl Db {
    fn is_expired(&self, e: &Entry, now: u64) -> bool {
        e.expires_at.is_some_and(|t| t <= now)
    }

    /// Removes `key` if its deadline passed. Returns true if it did.
    fn expire_if_due(&mut self, key: &[u8], now: u64) -> bool {
        let due = self.map.get(key).is_some_and(|e| self.is_expired(e, now));
        if due {
            self.remove(key);
        }
        due
    }

    /// The live entry at `key`.
    pub fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        self.expire_if_due(key, now_ms());
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.expire_if_due(key, now_ms());
        self.map.get_mut(key)
    }

    pub fn exists(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Marks `key` modified for clients that WATCH it.
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(v) = self.watched.get_mut(key) {
            v.0 += 1;
        }
    }

    /// Starts watching `key`; returns its current version.
    pub fn watch(&mut self, key: &Bytes) -> u64 {
        let now = now_ms();
        self.expire_if_due(key, now);
        let v = self.watched.entry(key.clone()).or_insert((0, 0));
        v.1 += 1;
        let version = v.0;
        self.watching
            .store(self.watched.len(), AtomicOrdering::Release);
        version
    }

    /// Stops one client's watch of `key`.
    pub fn unwatch(&mut self, key: &[u8]) {
        if let Some(v) = self.watched.get_mut(key) {
            v.1 -= 1;
            if v.1 == 0 {
                self.watched.remove(key);
                self.watching
                    .store(self.watched.len(), AtomicOrdering::Release);
            }
        }
    }

    /// The version of a watched key (keys that expired count as modified).
    pub fn watch_version(&mut self, key: &[u8]) -> u64 {
        self.expire_if_due(key, now_ms());
        self.watched.get(key).map_or(0, |v| v.0)
    }

    /// Removes `key`'s slot and its deadline, and moves the deadline of the
    /// slot that took its place to that place.
    fn map_remove(&mut self, key: &[u8]) -> Option<Entry> {
        let r = self.map.remove_reporting(key)?;
        if let Some(t) = r.value.expires_at {
            self.expires.remove(&(t, r.at as u32));
        }
        if let Some(from) = r.moved_from {
            if let Some(t) = self.map.at(r.at).and_then(|(_, e)| e.expires_at) {
                self.expires.remove(&(t, from as u32));
                self.expires.insert((t, r.at as u32));
            }
        }
        Some(r.value)
    }

    /// Removes a key and its deadline. Returns whether it existed.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.map_remove(key) {
            Some(e) => {
                self.touch(key);
                if matches!(e.value, Value::ZSet(_)) {
                    self.zsets_removed.push(Bytes::copy_from_slice(key));
                }
                if e.history {
                    if let Value::Stream(s) = &e.value {
                        self.history_bytes = self.history_bytes.saturating_sub(s.bytes());
                        self.history_entries = self.history_entries.saturating_sub(s.len());
                    }
                }
                self.signal(key);
                true
            }
            None => false,
        }
    }

    /// Inserts or replaces a value, clearing any deadline.
    pub fn insert(&mut self, key: Bytes, value: Value) {
        self.remove(&key);
        self.touch(&key);
        self.map.insert(
            &key,
            Entry {
                value,
                expires_at: None,
                history: false,
            },
        );
    }

    /// Sets or clears the deadline of an existing key.
    pub fn set_expiry(&mut self, key: &[u8], at: Option<u64>) -> bool {
        let Some(i) = self.map.position_of(key) else {
            return false;
        };
        let Some(e) = self.map.at_mut(i) else {
            return false;
        };
        let old = std::mem::replace(&mut e.expires_at, at);
        if let Some(t) = old {
            self.expires.remove(&(t, i as u32));
        }
        if let Some(t) = at {
            self.expires.insert((t, i as u32));
        }
        true
    }

    /// Reclaims every key whose deadline passed; returns how many.
    pub fn reclaim_expired(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(t, i)) = self.expires.first() {
            if t > now {
                break;
            }
            self.expires.pop_first();
            let slot = self.map.at(i as usize);
            if let Some((key, _)) = slot.filter(|(_, e)| e.expires_at == Some(t)) {
                let key = Bytes::copy_from_slice(key);
                self.remove(&key);
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes everything.
    pub fn flush(&mut self) {
        let zsets: Vec<Bytes> = self
            .map
            .iter()
            .filter(|(_, e)| matches!(e.value, Value::ZSet(_)))
            .map(|(k, _)| Bytes::copy_from_slice(k))
            .collect();
        self.zsets_removed.extend(zsets);
        let keys: Vec<Bytes> = self.map.keys().map(Bytes::copy_from_slice).collect();
        for k in keys {
            self.signal(&k);
        }
        self.map.clear();
        for v in self.watched.values_mut() {
            v.0 += 1;
        }
        self.expires.clear();
        self.history_bytes = 0;
        self.history_entries = 0;
        self.history_fifo.clear();
    }

    /// Live keys matching an optional glob.
    pub fn keys(&mut self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let now = now_ms();
        let glob = pattern.map(Glob::new);
        self.map
            .iter()
            .filter(|(k, e)| !self.is_expired(e, now) && glob.as_ref().is_none_or(|g| g.matches(k)))
            .map(|(k, _)| Bytes::copy_from_slice(k))
            .collect()
    }

    /// One SCAN page: keys whose stable hash is at or after `cursor`, in
    /// hash order, about `count` of them; the next cursor (0: done). Keys
    /// present for the whole scan are returned at least once.
    pub fn scan(
        &mut self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        type_name: Option<&[u8]>,
    ) -> (u64, Vec<Bytes>) {
        let now = now_ms();
        let mut cands: Vec<(u64, &[u8], &Entry)> = self
            .map
            .iter()
            .filter(|(_, e)| !self.is_expired(e, now))
            .map(|(k, e)| (scan_hash(k), k, e))
            .filter(|(h, _, _)| *h >= cursor)
            .collect();
        cands.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let count = count.max(1);
        let mut end = cands.len().min(count);
        // Never split keys that share a hash across pages.
        while end < cands.len() && end > 0 && cands[end].0 == cands[end - 1].0 {
            end += 1;
        }
        let next = cands.get(end).map_or(0, |c| c.0.max(1));
        let glob = pattern.map(Glob::new);
        let keys = cands[..end]
            .iter()
            .filter(|(_, k, e)| {
                glob.as_ref().is_none_or(|g| g.matches(k))
                    && type_name
                        .is_none_or(|t| t.eq_ignore_ascii_case(e.value.type_name().as_bytes()))
            })
            .map(|(_, k, _)| Bytes::copy_from_slice(k))
            .collect();
        (next, keys)
    }

    // ---- streams ---------------------------------------------------------

    /// The stream at `key`, WRONGTYPE for other types, `None` when absent.
    pub fn stream(&mut self, key: &[u8]) -> Result<Option<&mut Stream>, WrongType> {
        match self.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Stream(s),
                ..
            }) => Ok(Some(s)),
            Some(_) => Err(WrongType),
        }
    }

    /// The epoch the stream at `key` will have when it is created (it does
    /// not exist now): promised once, kept for an hour or until the stream
    /// is created. Past `MAX_PENDING_EPOCHS` the oldest promise is dropped;
    /// its subscribers then recover with `recovered: false`, never silently.
    pub fn pending_epoch(&mut self, key: &[u8]) -> u64 {
        let now = now_ms();
        while let Some((deadline, k)) = self.pending_order.front() {
            if *deadline > now
                && self.pending_order.len() <= MAX_PENDING_EPOCHS
                && self.pending_bytes <= MAX_PENDING_BYTES
            {
                break;
            }
            let (deadline, k) = (*deadline, k.clone());
            self.pending_order.pop_front();
            self.pending_bytes = self.pending_bytes.saturating_sub(k.len() + 64);
            if self
                .pending_epochs
                .get(&k)
                .is_some_and(|(_, d)| *d == deadline)
            {
                self.pending_epochs.remove(&k);
            }
        }
        if let Some((epoch, _)) = self.pending_epochs.get(key) {
            return *epoch;
        }
        let epoch = self.new_epoch();
        let deadline = now + PENDING_EPOCH_TTL_MS;
        let key = Bytes::copy_from_slice(key);
        self.pending_bytes += key.len() + 64;
        self.pending_order.push_back((deadline, key.clone()));
        self.pending_epochs.insert(key, (epoch, deadline));
        epoch
    }

    /// The epoch promised for `key`'s stream, if a subscriber holds one.
    pub fn promised_epoch(&self, key: &[u8]) -> Option<u64> {
        self.pending_epochs.get(key).map(|(e, _)| *e)
    }

    /// A fresh epoch for a new stream.
    pub fn new_epoch(&mut self) -> u64 {
        self.epoch_counter += 1;
        self.epoch_seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(self.epoch_counter.wrapping_mul(1442695040888963407))
            >> 1
    }

    /// The stream at `key`, created empty if absent.
    pub fn stream_or_create(
        &mut self,
        key: &[u8],
        history: bool,
    ) -> Result<&mut Stream, WrongType> {
        let now = now_ms();
        self.expire_if_due(key, now);
        if !self.map.contains_key(key) {
            let epoch = match self.pending_epochs.remove(key) {
                Some((epoch, _)) => epoch,
                None => self.new_epoch(),
            };
            self.map.insert(
                key,
                Entry {
                    value: Value::Stream(Box::new(Stream::new(epoch))),
                    expires_at: None,
                    history,
                },
            );
        }
        match self.map.get_mut(key) {
            Some(Entry {
                value: Value::Stream(_),
                ..
            }) => {}
            _ => return Err(WrongType),
        }
        if history {
            self.mark_history(key);
        }
        match self.map.get_mut(key) {
            Some(Entry {
                value: Value::Stream(s),
                ..
            }) => Ok(s),
            _ => Err(WrongType),
        }
    }

    /// The sets at `keys`, borrowed together for a multi-key read (SINTER,
    /// SUNION, SDIFF …): `Ok(None)` for a missing key, `Err` for another
    /// type. Nothing is copied.
    pub fn sets_for_read(&mut self, keys: &[Bytes]) -> Vec<Result<Option<&SetValue>, WrongType>> {
        let now = now_ms();
        for k in keys {
            self.expire_if_due(k, now);
        }
        keys.iter()
            .map(|k| match self.map.get(&k[..]) {
                None => Ok(None),
                Some(Entry {
                    value: Value::Set(s),
                    ..
                }) => Ok(Some(&**s)),
                Some(_) => Err(WrongType),
            })
            .collect()
    }

    /// Counts the stream at `key` as history from now on (its current size
    /// included), so the cap and the metrics see it.
    pub fn mark_history(&mut self, key: &[u8]) {
        if let Some(Entry {
            value: Value::Stream(s),
            history,
            ..
        }) = self.map.get_mut(key)
        {
            if !*history {
                *history = true;
                self.history_bytes += s.bytes();
                self.history_entries += s.len();
            }
        }
    }

    /// Runs `f` on the stream at `key` (which must exist), keeping the
    /// history accounting right whatever `f` changes.
    pub fn with_stream<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Stream) -> R) -> Option<R> {
        let e = self.map.get_mut(key)?;
        let history = e.history;
        let Value::Stream(s) = &mut e.value else {
            return None;
        };
        let (b0, n0) = (s.bytes(), s.len());
        let r = f(s);
        let (b1, n1) = (s.bytes(), s.len());
        if history {
            self.history_bytes = (self.history_bytes + b1).saturating_sub(b0);
            self.history_entries = (self.history_entries + n1).saturating_sub(n0);
        }
        Some(r)
    }

    /// Records a history append (made through [`Db::with_stream`], which
    /// counted its bytes) for oldest-first eviction.
    pub fn note_history_append(&mut self, key: Bytes, id: StreamId) {
        // The caller's key is usually a slice of its request, which would
        // stay pinned as long as the entry: a copy, shared with the previous
        // entry when it is of the same channel (the common case).
        let key = match self.history_fifo.back() {
            Some((k, _)) if *k == key => k.clone(),
            _ => Bytes::copy_from_slice(&key),
        };
        self.history_fifo.push_back((key, id));
        // Entries trimmed by size or age leave stale pointers; compact when
        // they outnumber the live ones.
        if self.history_fifo.len() > 1024
            && self.history_fifo.len() > 2 * self.history_entries.max(1)
        {
            let map = &self.map;
            self.history_fifo.retain(|(k, id)| {
                matches!(map.get(k), Some(Entry { value: Value::Stream(s), .. }) if s.get(*id).is_some())
            });
        }
    }

    /// Evicts the oldest history entries, across channels, until history
    /// memory is at most `cap` bytes. Returns how many were evicted.
    pub fn enforce_history_cap(&mut self, cap: usize) -> usize {
        let mut evicted = 0;
        while self.history_bytes > cap {
            let Some((key, id)) = self.history_fifo.pop_front() else {
                break;
            };
            // Oldest first: everything up to and including `id`.
            let removed = self
                .with_stream(&key, |s| match id.incr() {
                    Some(min) => s.trim(super::stream::Trim::MinId(min), false, 0),
                    None => s.trim(super::stream::Trim::MaxLen(0), false, 0),
                })
                .unwrap_or(0);
            evicted += removed as usize;
        }
        self.history_evicted += evicted as u64;
        evicted
    }

    // ---- sets ------------------------------------------------------------

    /// The set at `key`, WRONGTYPE for other types.
    pub fn set(&mut self, key: &[u8]) -> Result<Option<&mut SetValue>, WrongType> {
        match self.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => Ok(Some(s)),
            Some(_) => Err(WrongType),
        }
    }

    // ---- sorted sets -----------------------------------------------------------

    /// The sorted set at `key` to read, WRONGTYPE for other types. Writes
    /// go through [`Db::with_zset_mut`] or [`Db::store_zset`].
    pub fn zset(&mut self, key: &[u8]) -> Result<Option<&super::zset::ZSet>, WrongType> {
        match self.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }) => Ok(Some(z)),
            Some(_) => Err(WrongType),
        }
    }

    /// Runs `f` on the sorted set at `key` (created empty first when
    /// `create`; `Ok(None)` when absent otherwise). Whatever `f` changes is
    /// noticed here, not by the caller: a change wakes blocked readers and
    /// marks the key for the leaderboard tick, and a set left empty is
    /// removed, as Redis never keeps an empty key.
    pub fn with_zset_mut<R>(
        &mut self,
        key: &[u8],
        create: bool,
        f: impl FnOnce(&mut super::zset::ZSet) -> R,
    ) -> Result<Option<R>, WrongType> {
        self.expire_if_due(key, now_ms());
        if create && !self.map.contains_key(key) {
            self.map.insert(
                key,
                Entry {
                    value: Value::ZSet(Box::default()),
                    expires_at: None,
                    history: false,
                },
            );
        }
        let Some(entry) = self.map.get_mut(key) else {
            return Ok(None);
        };
        let Entry {
            value: Value::ZSet(z),
            ..
        } = entry
        else {
            return Err(WrongType);
        };
        let before = z.writes();
        let r = f(z);
        let (changed, empty) = (z.writes() != before, z.is_empty());
        if changed {
            self.touch(key);
            self.signal(key);
            self.zset_written(key);
        }
        if empty {
            // Never stored: remove quietly; emptied: a removal like DEL.
            if changed {
                self.remove(key);
            } else {
                self.map_remove(key);
            }
        }
        Ok(Some(r))
    }

    /// Replaces whatever is at `key` with `z` (ZUNIONSTORE, ZINTERSTORE);
    /// an empty result deletes the key, as in Redis.
    pub fn store_zset(&mut self, key: Bytes, z: super::zset::ZSet) {
        self.remove(&key);
        if !z.is_empty() {
            self.insert(key.clone(), Value::ZSet(Box::new(z)));
        }
        self.touch(&key);
        self.signal(&key);
        self.zset_written(&key);
    }

    // ---- blocking reads ----------------------------------------------------

    /// The notifier blocked readers of `key` wait on.
    pub fn waiter(&mut self, key: &[u8]) -> Arc<Notify> {
        self.waiters
            .entry(Bytes::copy_from_slice(key))
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes every reader blocked on `key`.
    pub fn signal(&mut self, key: &[u8]) {
        if let Some(n) = self.waiters.remove(key) {
            n.notify_waiters();
        }
    }

    /// Drops notifiers nobody waits on any more (after a reader left).
    pub fn release_waiters(&mut self, keys: &[Bytes]) {
        for k in keys {
            if self
                .waiters
                .get(k)
                .is_some_and(|n| Arc::strong_count(n) == 1)
            {
                self.waiters.remove(k);
            }
        }
    }

    /// Notifiers currently registered (for tests: nothing left behind).
    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(db: &mut Db) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = db.zsets_written.drain().collect();
        v.sort();
        v
    }

    #[test]
    fn zset_writes_are_noticed_without_the_writer_saying_so() {
        let ks = Keyspace::default();
        let mut db = ks.lock();
        // Absent and not created: nothing happens.
        assert_eq!(db.with_zset_mut(b"z", false, |z| z.len()), Ok(None));
        assert!(db.is_empty());
        // Created and changed: marked for the leaderboard tick.
        let r = db.with_zset_mut(b"z", true, |z| z.insert(Bytes::from_static(b"a"), 1.0));
        assert_eq!(r, Ok(Some(None)));
        assert_eq!(written(&mut db), vec![Bytes::from_static(b"z")]);
        // The same score again changes nothing: no notice.
        db.with_zset_mut(b"z", false, |z| z.insert(Bytes::from_static(b"a"), 1.0))
            .unwrap();
        assert!(written(&mut db).is_empty());
        // Created but left empty: not kept, no notice.
        db.with_zset_mut(b"e", true, |_| ()).unwrap();
        assert!(db.zset(b"e").unwrap().is_none());
        assert!(written(&mut db).is_empty());
        // Emptied: removed, and the tick learns it is gone.
        db.with_zset_mut(b"z", false, |z| z.remove(b"a")).unwrap();
        assert!(db.zset(b"z").unwrap().is_none());
        assert_eq!(written(&mut db), vec![Bytes::from_static(b"z")]);
        assert_eq!(db.zsets_removed, vec![Bytes::from_static(b"z")]);
        // Other types: WRONGTYPE, untouched.
        db.insert(Bytes::from_static(b"s"), Value::Set(Default::default()));
        assert_eq!(db.with_zset_mut(b"s", true, |z| z.len()), Err(WrongType));
        // A store replaces and notices.
        let mut z = super::super::zset::ZSet::new();
        z.insert(Bytes::from_static(b"m"), 2.0);
        db.store_zset(Bytes::from_static(b"s"), z);
        assert_eq!(db.zset(b"s").unwrap().map(|z| z.len()), Some(1));
        assert_eq!(written(&mut db), vec![Bytes::from_static(b"s")]);
    }
}
