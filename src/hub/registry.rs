//! The channel registry: exact channels, shard channels and glob patterns,
//! each mapped to its subscribers. Shared by every front end.
//!
//! Exact and shard channels live in sharded concurrent maps. Patterns live in
//! a trie keyed by their literal prefix (the bytes before the first wildcard),
//! so a publish only tries the patterns whose prefix is a prefix of the
//! channel: 10,000 patterns under `other:` cost nothing to a publish on
//! `news`. Entries are removed as soon as their last subscriber leaves, and
//! trie nodes as soon as nothing lives under them, so later publishes walk
//! only live nodes.
//!
//! Every list that can grow without bound (the patterns of one trie node,
//! the subscribers of one channel or pattern) is hash-indexed once it is
//! longer than a few items, so subscribing and unsubscribing cost O(1)
//! whatever the list's length: a client that leaves 100,000 patterns pays
//! 100,000 small steps, each taking the pattern lock on its own, so
//! publishers get in between them.
//!
//! Delivery is synchronous: `publish` pushes into each subscriber's bounded
//! outbox while holding a read guard, never across an `.await`. Doing it in
//! the publisher keeps Redis's ordering guarantees: one publisher's messages
//! reach a subscriber in publish order across channels, and a subscriber of
//! both a channel and a matching pattern gets `message` before `pmessage`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dashmap::DashMap;

use super::glob::Glob;
use super::presence::PresenceEvent;
use super::publication::{Delivery, DeliveryKind, EncodeCache, Publication, Subscriber};

/// Identifies a connection across front ends.
pub type ClientId = u64;

#[derive(Clone)]
struct Entry {
    id: ClientId,
    sink: Arc<dyn Subscriber>,
}

/// An item of an [`Indexed`] list, found by its key.
trait Keyed {
    type Key: Hash + Eq + Clone;
    fn key(&self) -> &Self::Key;
}

impl Keyed for Entry {
    type Key = ClientId;
    fn key(&self) -> &ClientId {
        &self.id
    }
}

/// Past this many items an [`Indexed`] list keeps a hash index: below it a
/// scan is about as fast as hashing, and the index would cost memory on
/// every channel and trie node.
const INDEX_FROM: usize = 16;

/// A list iterated densely by publishes (in no particular order), whose
/// items are found, added and removed in O(1) whatever its length: one
/// client with 100,000 patterns under one prefix, or 100,000 clients on one
/// channel, cost each arrival and departure the same as the first.
///
/// Removal swaps the last item into the hole (subscribers of one channel
/// have no order between them), and gives memory back once the list has
/// shrunk to a quarter, so a crowd that left leaves neither a large
/// allocation nor a long scan of empty slots behind.
struct Indexed<T: Keyed> {
    list: Vec<T>,
    /// Position in `list` of each key, from [`INDEX_FROM`] items on. SipHash
    /// with random keys (std's default): clients choose patterns. Boxed so
    /// that the many short lists (most channels have a subscriber or two)
    /// carry 8 bytes for it rather than a 48-byte empty map.
    #[allow(clippy::box_collection)]
    positions: Option<Box<HashMap<T::Key, usize>>>,
}

impl<T: Keyed> Default for Indexed<T> {
    fn default() -> Self {
        Indexed {
            list: Vec::new(),
            positions: None,
        }
    }
}

impl<T: Keyed> Indexed<T> {
    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, T> {
        self.list.iter()
    }

    fn position<Q>(&self, key: &Q) -> Option<usize>
    where
        T::Key: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &self.positions {
            Some(p) => p.get(key).copied(),
            None => self.list.iter().position(|t| t.key().borrow() == key),
        }
    }

    /// Adds `item`, whose key must not be present yet.
    fn push(&mut self, item: T) {
        let key = item.key().clone();
        self.list.push(item);
        let at = self.list.len() - 1;
        match &mut self.positions {
            Some(p) => {
                p.insert(key, at);
            }
            None if self.list.len() > INDEX_FROM => {
                let index = self
                    .list
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.key().clone(), i));
                self.positions = Some(Box::new(index.collect()));
            }
            None => {}
        }
    }

    /// Removes the item at `i` (from [`Indexed::position`]).
    fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i >= self.list.len() {
            return None;
        }
        let item = self.list.swap_remove(i);
        if let Some(p) = &mut self.positions {
            p.remove(item.key());
            if let Some(moved) = self.list.get(i) {
                p.insert(moved.key().clone(), i);
            }
            // Half the threshold, so a list hovering around it does not
            // build and drop its index on every change.
            if self.list.len() <= INDEX_FROM / 2 {
                self.positions = None;
            } else if p.capacity() > 4 * p.len() {
                p.shrink_to(2 * p.len());
            }
        }
        if self.list.capacity() > 4 * self.list.len().max(INDEX_FROM) {
            self.list.shrink_to(2 * self.list.len());
        }
        Some(item)
    }
}

/// The subscribers of one channel or pattern.
type Subscribers = Indexed<Entry>;

impl Subscribers {
    fn one(id: ClientId, sink: Arc<dyn Subscriber>) -> Subscribers {
        let mut s = Subscribers::default();
        s.push(Entry { id, sink });
        s
    }

    /// False if `id` already was a subscriber.
    fn add(&mut self, id: ClientId, sink: Arc<dyn Subscriber>) -> bool {
        if self.position(&id).is_some() {
            return false;
        }
        self.push(Entry { id, sink });
        true
    }

    fn remove(&mut self, id: ClientId) -> bool {
        self.position(&id)
            .and_then(|i| self.swap_remove(i))
            .is_some()
    }
}

/// At most this many bytes of a pattern's literal prefix index it: bounds
/// the trie's depth (and recursion) whatever patterns clients send; longer
/// prefixes are checked by the glob match itself.
const MAX_INDEX_DEPTH: usize = 64;

fn index_key(glob: &Glob) -> &[u8] {
    let p = glob.literal_prefix();
    &p[..p.len().min(MAX_INDEX_DEPTH)]
}

struct PatternEntry {
    pattern: Bytes,
    glob: Glob,
    subs: Subscribers,
}

impl Keyed for PatternEntry {
    type Key = Bytes;
    fn key(&self) -> &Bytes {
        &self.pattern
    }
}

#[derive(Default)]
struct Node {
    children: BTreeMap<u8, Node>,
    /// The patterns whose index key ends here. Many can (every pattern
    /// whose literal prefix is the same, or longer than the trie is deep),
    /// hence the index.
    patterns: Indexed<PatternEntry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.patterns.is_empty()
    }

    fn find_mut(&mut self, path: &[u8]) -> &mut Node {
        let mut node = self;
        for b in path {
            node = node.children.entry(*b).or_default();
        }
        node
    }

    /// Removes `id` from `pattern` under `path`, pruning the nodes left
    /// empty, so later publishes walk only live nodes. Returns (removed,
    /// pattern gone).
    fn remove(&mut self, path: &[u8], pattern: &[u8], id: ClientId) -> (bool, bool) {
        match path.split_first() {
            None => {
                let Some(i) = self.patterns.position(pattern) else {
                    return (false, false);
                };
                let Some(entry) = self.patterns.list.get_mut(i) else {
                    return (false, false);
                };
                let removed = entry.subs.remove(id);
                let gone = entry.subs.is_empty();
                if gone {
                    self.patterns.swap_remove(i);
                }
                (removed, gone)
            }
            Some((b, rest)) => {
                let Some(child) = self.children.get_mut(b) else {
                    return (false, false);
                };
                let r = child.remove(rest, pattern, id);
                if child.is_empty() {
                    self.children.remove(b);
                }
                r
            }
        }
    }

    fn find(&self, path: &[u8]) -> Option<&Node> {
        let mut node = self;
        for b in path {
            node = node.children.get(b)?;
        }
        Some(node)
    }

    fn collect(&self, out: &mut Vec<Bytes>) {
        out.extend(self.patterns.iter().map(|p| p.pattern.clone()));
        for c in self.children.values() {
            c.collect(out);
        }
    }
}

#[derive(Default)]
struct PatternIndex {
    root: Node,
    /// Distinct patterns with at least one subscriber.
    count: usize,
}

impl PatternIndex {
    /// The patterns that match `channel`: only those on the trie path of
    /// the channel's bytes can, so the others are never tried.
    fn matching<'a>(&'a self, channel: &'a [u8]) -> impl Iterator<Item = &'a PatternEntry> + 'a {
        let path = std::iter::successors(Some((&self.root, 0usize)), move |&(node, depth)| {
            let child = node.children.get(channel.get(depth)?)?;
            Some((child, depth + 1))
        });
        path.flat_map(|(node, _)| node.patterns.iter())
            .filter(move |p| p.glob.matches(channel))
    }
}

/// The patterns held by clients without the password, counted across all
/// connections of every front end (`--max-untrusted-patterns`). Every
/// pattern whose literal prefix fits a channel is tried on each publish to
/// it, and one connection may hold 64 × `--max-pattern-length` bytes of
/// short patterns, so without a global bound many cheap connections
/// multiply the cost of every publish. A pattern held by several such
/// connections counts once for each. The front ends take from it before a
/// PSUBSCRIBE is confirmed and give back when a pattern is left; password
/// clients never touch it, and neither does a publish.
#[derive(Debug, Default)]
pub struct PatternQuota {
    used: AtomicUsize,
    /// 0: no limit.
    limit: usize,
}

impl PatternQuota {
    pub fn new(limit: usize) -> PatternQuota {
        PatternQuota {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes one pattern from the quota; false when it is spent. Exact:
    /// concurrent takers never pass the limit together.
    pub fn take(&self) -> bool {
        if self.limit == 0 {
            self.used.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` patterns taken before.
    pub fn give(&self, n: usize) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(n))
                });
        }
    }

    /// Patterns held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// See the module docs.
#[derive(Default)]
pub struct Registry {
    channels: DashMap<Bytes, Subscribers>,
    shard_channels: DashMap<Bytes, Subscribers>,
    patterns: RwLock<PatternIndex>,
}

/// What a subscribe or unsubscribe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: already subscribed, or not subscribed.
    Unchanged,
    /// The client arrived or left; others remain subscribed.
    Changed,
    /// The client arrived as the first subscriber, or left as the last.
    Edge,
}

impl Change {
    fn of(changed: bool, edge: bool) -> Change {
        match (changed, edge) {
            (false, _) => Change::Unchanged,
            (true, false) => Change::Changed,
            (true, true) => Change::Edge,
        }
    }

    pub fn changed(self) -> bool {
        self != Change::Unchanged
    }
}

/// Which of the two channel spaces: Redis keeps shard channels (SSUBSCRIBE,
/// SPUBLISH) apart from ordinary ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Global,
    Shard,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    fn map(&self, space: Space) -> &DashMap<Bytes, Subscribers> {
        match space {
            Space::Global => &self.channels,
            Space::Shard => &self.shard_channels,
        }
    }

    /// Adds `id` as a subscriber of `channel`; false if it already was one.
    pub fn subscribe(
        &self,
        space: Space,
        channel: Bytes,
        id: ClientId,
        sink: Arc<dyn Subscriber>,
    ) -> bool {
        self.subscribe_edge(space, channel, id, sink).changed()
    }

    /// [`Registry::subscribe`], telling also whether `id` is the channel's
    /// first subscriber.
    pub fn subscribe_edge(
        &self,
        space: Space,
        channel: Bytes,
        id: ClientId,
        sink: Arc<dyn Subscriber>,
    ) -> Change {
        let mut subs = self.map(space).entry(channel).or_default();
        let first = subs.is_empty();
        Change::of(subs.add(id, sink), first)
    }

    /// Removes `id` from `channel`; the entry goes when it was the last.
    pub fn unsubscribe(&self, space: Space, channel: &[u8], id: ClientId) -> bool {
        self.unsubscribe_edge(space, channel, id).changed()
    }

    /// [`Registry::unsubscribe`], telling also whether `id` was the
    /// channel's last subscriber.
    pub fn unsubscribe_edge(&self, space: Space, channel: &[u8], id: ClientId) -> Change {
        let map = self.map(space);
        let (mut removed, mut last) = (false, false);
        map.remove_if_mut(channel, |_, subs| {
            removed = subs.remove(id);
            last = subs.is_empty();
            last
        });
        Change::of(removed, last)
    }

    fn patterns_read(&self) -> std::sync::RwLockReadGuard<'_, PatternIndex> {
        self.patterns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn patterns_write(&self) -> std::sync::RwLockWriteGuard<'_, PatternIndex> {
        self.patterns.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `id` as a subscriber of `pattern`; false if it already was one.
    pub fn psubscribe(&self, pattern: Bytes, id: ClientId, sink: Arc<dyn Subscriber>) -> bool {
        self.psubscribe_edge(pattern, id, sink).changed()
    }

    /// [`Registry::psubscribe`], telling also whether `id` is the
    /// pattern's first subscriber.
    pub fn psubscribe_edge(
        &self,
        pattern: Bytes,
        id: ClientId,
        sink: Arc<dyn Subscriber>,
    ) -> Change {
        let glob = Glob::new(&pattern);
        let mut idx = self.patterns_write();
        let node = idx.root.find_mut(index_key(&glob));
        if let Some(i) = node.patterns.position(&pattern[..]) {
            return match node.patterns.list.get_mut(i) {
                Some(p) => Change::of(p.subs.add(id, sink), false),
                None => Change::Unchanged,
            };
        }
        node.patterns.push(PatternEntry {
            pattern,
            glob,
            subs: Subscribers::one(id, sink),
        });
        idx.count += 1;
        Change::Edge
    }

    /// Removes `id` from `pattern`; the pattern goes when it was the last.
    pub fn punsubscribe(&self, pattern: &[u8], id: ClientId) -> bool {
        self.punsubscribe_edge(pattern, id).changed()
    }

    /// [`Registry::punsubscribe`], telling also whether `id` was the
    /// pattern's last subscriber.
    pub fn punsubscribe_edge(&self, pattern: &[u8], id: ClientId) -> Change {
        let glob = Glob::new(pattern);
        let mut idx = self.patterns_write();
        let (removed, gone) = idx.root.remove(index_key(&glob), pattern, id);
        if gone {
            idx.count -= 1;
        }
        Change::of(removed, gone)
    }

    /// Delivers `publication` to the subscribers of its channel, then to those
    /// of every matching pattern. Returns the number of deliveries, counted as
    /// Redis counts them (one per subscriber and one per matching
    /// subscriber-pattern pair).
    pub fn publish(&self, publication: &Publication) -> usize {
        let mut n = 0;
        if let Some(subs) = self.channels.get(&publication.channel) {
            let d = Delivery::direct(publication, DeliveryKind::Message);
            for e in subs.iter() {
                e.sink.deliver(&d);
            }
            n += subs.len();
        }
        let idx = self.patterns_read();
        if idx.count == 0 {
            return n;
        }
        for p in idx.matching(&publication.channel) {
            let cache = EncodeCache::default();
            let d = Delivery::pattern(publication, &p.pattern, &cache);
            for e in p.subs.iter() {
                e.sink.deliver(&d);
            }
            n += p.subs.len();
        }
        n
    }

    /// Publishes consecutive publications of one channel (a client's
    /// pipelined PUBLISHes) as one step: each exact subscriber receives
    /// them all in one push. Returns each publication's delivery count.
    ///
    /// Where a pattern matches the channel they go one by one instead, so a
    /// subscriber of both still gets each `message` right before its
    /// `pmessage`, as Redis sends them.
    pub fn publish_batch(&self, publications: &[Publication]) -> Vec<usize> {
        let Some(first) = publications.first() else {
            return Vec::new();
        };
        let one_by_one = || publications.iter().map(|p| self.publish(p)).collect();
        if publications.len() == 1 {
            return one_by_one();
        }
        // Same lock order as `publish` (channel, then patterns), both held
        // from the pattern check to the last push: a PSUBSCRIBE cannot land
        // in between and see these messages without their `pmessage`s.
        let subs = self.channels.get(&first.channel);
        let idx = self.patterns_read();
        if idx.matching(&first.channel).any(|p| !p.subs.is_empty()) {
            drop(idx);
            drop(subs);
            return one_by_one();
        }
        let n = match &subs {
            Some(subs) => {
                let ds: Vec<Delivery<'_>> = publications
                    .iter()
                    .map(|p| Delivery::direct(p, DeliveryKind::Message))
                    .collect();
                for e in subs.iter() {
                    e.sink.deliver_batch(&ds);
                }
                subs.len()
            }
            None => 0,
        };
        drop(idx);
        vec![n; publications.len()]
    }

    /// Delivers `publication` to the exact subscribers of its channel only
    /// (a broker that receives pattern matches separately).
    pub fn publish_exact(&self, publication: &Publication) -> usize {
        let Some(subs) = self.channels.get(&publication.channel) else {
            return 0;
        };
        let d = Delivery::direct(publication, DeliveryKind::Message);
        for e in subs.iter() {
            e.sink.deliver(&d);
        }
        subs.len()
    }

    /// Delivers `publication` to the subscribers of one pattern only, if
    /// it is subscribed and matches.
    pub fn publish_pattern(&self, pattern: &[u8], publication: &Publication) -> usize {
        let glob = Glob::new(pattern);
        let idx = self.patterns_read();
        let Some(node) = idx.root.find(index_key(&glob)) else {
            return 0;
        };
        let Some(p) = node
            .patterns
            .position(pattern)
            .and_then(|i| node.patterns.list.get(i))
        else {
            return 0;
        };
        if !p.glob.matches(&publication.channel) {
            return 0;
        }
        let cache = EncodeCache::default();
        let d = Delivery::pattern(publication, &p.pattern, &cache);
        for e in p.subs.iter() {
            e.sink.deliver(&d);
        }
        p.subs.len()
    }

    /// Whether `pattern` has a subscriber here.
    pub fn has_pattern(&self, pattern: &[u8]) -> bool {
        let glob = Glob::new(pattern);
        let idx = self.patterns_read();
        idx.root
            .find(index_key(&glob))
            .is_some_and(|node| node.patterns.position(pattern).is_some())
    }

    /// How many deliveries a publish on `channel` would make here now
    /// (exact subscribers plus matching subscriber-pattern pairs).
    pub fn receivers(&self, channel: &[u8]) -> usize {
        let exact = self.channels.get(channel).map_or(0, |s| s.len());
        let idx = self.patterns_read();
        exact + idx.matching(channel).map(|p| p.subs.len()).sum::<usize>()
    }

    /// Tells the exact subscribers of `channel` that publications may have
    /// been missed.
    pub fn gap(&self, channel: &[u8]) {
        if let Some(subs) = self.channels.get(channel) {
            for e in subs.iter() {
                e.sink.gap(channel);
            }
        }
    }

    /// Delivers a presence event to the exact subscribers of its channel.
    pub fn deliver_presence(&self, channel: &[u8], event: &PresenceEvent) {
        if let Some(subs) = self.channels.get(channel) {
            for e in subs.iter() {
                e.sink.presence(channel, event);
            }
        }
    }

    /// Delivers to the subscribers of a shard channel (SPUBLISH).
    pub fn spublish(&self, publication: &Publication) -> usize {
        match self.shard_channels.get(&publication.channel) {
            Some(subs) => {
                let d = Delivery::direct(publication, DeliveryKind::SMessage);
                for e in subs.iter() {
                    e.sink.deliver(&d);
                }
                subs.len()
            }
            None => 0,
        }
    }

    /// Active channels (with at least one subscriber), optionally filtered
    /// by a glob pattern. Unordered.
    pub fn channels(&self, space: Space, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let glob = pattern.map(Glob::new);
        self.map(space)
            .iter()
            .filter(|e| glob.as_ref().is_none_or(|g| g.matches(e.key())))
            .map(|e| e.key().clone())
            .collect()
    }

    /// Number of channels with subscribers.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Subscribers of `channel`.
    pub fn numsub(&self, space: Space, channel: &[u8]) -> usize {
        self.map(space).get(channel).map_or(0, |s| s.len())
    }

    /// Distinct patterns with at least one subscriber.
    pub fn numpat(&self) -> usize {
        self.patterns_read().count
    }

    /// Every subscribed pattern. Unordered.
    pub fn patterns(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.patterns_read().root.collect(&mut out);
        out
    }
}

impl super::engine::BrokerHandler for Registry {
    fn on_publication(&self, publication: &Publication) -> usize {
        self.publish(publication)
    }

    fn on_publications(&self, publications: &[Publication]) -> Vec<usize> {
        self.publish_batch(publications)
    }

    fn on_shard_publication(&self, publication: &Publication) -> usize {
        self.spublish(publication)
    }

    fn on_exact(&self, publication: &Publication) -> usize {
        self.publish_exact(publication)
    }

    fn on_pattern(&self, pattern: &[u8], publication: &Publication) -> usize {
        self.publish_pattern(pattern, publication)
    }

    fn receivers(&self, channel: &[u8]) -> usize {
        Registry::receivers(self, channel)
    }

    fn shard_receivers(&self, channel: &[u8]) -> usize {
        self.numsub(Space::Shard, channel)
    }

    fn on_gap(&self, channel: &[u8]) {
        self.gap(channel)
    }

    fn on_presence(&self, channel: &[u8], event: &PresenceEvent) {
        self.deliver_presence(channel, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(DeliveryKind, Option<Bytes>, Bytes)>>);

    impl Subscriber for Recorder {
        fn deliver(&self, d: &Delivery<'_>) {
            self.0.lock().unwrap().push((
                d.kind,
                d.pattern.cloned(),
                d.publication.payload.clone(),
            ));
        }
    }

    fn publ(ch: &str, p: &str) -> Publication {
        Publication::new(Bytes::from(ch.to_owned()), Bytes::from(p.to_owned()))
    }

    #[test]
    fn message_before_pmessage_and_counts() {
        let r = Registry::new();
        let rec = Arc::new(Recorder::default());
        assert!(r.subscribe(Space::Global, "news".into(), 1, rec.clone()));
        assert!(!r.subscribe(Space::Global, "news".into(), 1, rec.clone()));
        assert!(r.psubscribe("n*".into(), 1, rec.clone()));
        assert!(r.psubscribe("x*".into(), 1, rec.clone()));
        assert_eq!(r.publish(&publ("news", "hi")), 2);
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(got[0].0, DeliveryKind::Message);
        assert_eq!(got[1].0, DeliveryKind::PMessage);
        assert_eq!(got[1].1.as_deref(), Some(&b"n*"[..]));
        assert_eq!(r.numpat(), 2);
    }

    #[test]
    fn entries_removed_with_last_subscriber() {
        let r = Registry::new();
        let rec = Arc::new(Recorder::default());
        r.subscribe(Space::Global, "a".into(), 1, rec.clone());
        r.subscribe(Space::Global, "a".into(), 2, rec.clone());
        r.psubscribe("abc:*".into(), 1, rec.clone());
        assert!(r.unsubscribe(Space::Global, b"a", 1));
        assert_eq!(r.numsub(Space::Global, b"a"), 1);
        assert!(r.unsubscribe(Space::Global, b"a", 2));
        assert!(!r.unsubscribe(Space::Global, b"a", 2));
        assert!(r.channels(Space::Global, None).is_empty());
        assert!(r.punsubscribe(b"abc:*", 1));
        assert_eq!(r.numpat(), 0);
        assert!(r.patterns_read().root.is_empty(), "trie pruned");
    }

    #[test]
    fn index_skips_patterns_with_other_prefixes() {
        let r = Registry::new();
        let rec = Arc::new(Recorder::default());
        for i in 0..1000 {
            r.psubscribe(format!("other:{i}:*").into(), 1, rec.clone());
        }
        r.psubscribe("*s".into(), 2, rec.clone());
        r.psubscribe("ne?s".into(), 2, rec.clone());
        assert_eq!(r.publish(&publ("news", "x")), 2);
        assert_eq!(r.publish(&publ("other:5:x", "x")), 1);
        assert_eq!(r.numpat(), 1002);
    }

    #[test]
    fn shard_space_is_separate() {
        let r = Registry::new();
        let rec = Arc::new(Recorder::default());
        r.subscribe(Space::Shard, "s".into(), 1, rec.clone());
        assert_eq!(r.publish(&publ("s", "x")), 0);
        assert_eq!(r.spublish(&publ("s", "x")), 1);
    }

    /// Positions stay right through the index's life: built past
    /// `INDEX_FROM`, patched on every swap, dropped below half of it.
    #[test]
    fn indexed_positions_survive_swaps() {
        let rec: Arc<dyn Subscriber> = Arc::new(Recorder::default());
        let mut subs = Subscribers::default();
        let n = 3 * INDEX_FROM as u64;
        for id in 0..n {
            assert!(subs.add(id, rec.clone()));
            assert!(!subs.add(id, rec.clone()));
        }
        assert!(subs.positions.is_some());
        // Remove from the front, so every removal moves the last item.
        for id in 0..n {
            assert!(subs.remove(id));
            assert!(!subs.remove(id));
            for (i, e) in subs.iter().enumerate() {
                assert_eq!(subs.position(&e.id), Some(i));
            }
            assert_eq!(subs.len(), (n - id - 1) as usize);
        }
        assert!(subs.positions.is_none());
        assert!(subs.is_empty());
    }

    /// Many patterns in one trie node (one literal prefix): each found
    /// through the node's index, the node pruned when the last goes.
    #[test]
    fn patterns_sharing_a_node() {
        let r = Registry::new();
        let rec = Arc::new(Recorder::default());
        for i in 0..100 {
            assert!(r.psubscribe(format!("room:*{i}").into(), 1, rec.clone()));
            assert!(r.psubscribe(format!("room:*{i}").into(), 2, rec.clone()));
            assert!(!r.psubscribe(format!("room:*{i}").into(), 2, rec.clone()));
        }
        assert_eq!(r.numpat(), 100);
        assert_eq!(r.publish(&publ("room:7", "x")), 2);
        for i in 0..100 {
            assert!(r.punsubscribe(format!("room:*{i}").as_bytes(), 1));
        }
        assert_eq!(r.numpat(), 100);
        assert_eq!(r.publish(&publ("room:17", "x")), 2, "room:*7 and room:*17");
        for i in (0..100).rev() {
            assert!(r.punsubscribe(format!("room:*{i}").as_bytes(), 2));
            assert!(!r.punsubscribe(format!("room:*{i}").as_bytes(), 2));
        }
        assert_eq!(r.numpat(), 0);
        assert!(r.patterns_read().root.is_empty(), "trie pruned");
    }
}
