//! The channel registry: exact channels, shard channels and glob patterns,
//! each mapped to its subscribers. Shared by every front end.
//!
//! Exact and shard channels live in sharded concurrent maps. Patterns live in
//! a trie keyed by their literal prefix (the bytes before the first wildcard),
//! so a publish only tries the patterns whose prefix is a prefix of the
//! channel: 10,000 patterns under `other:` cost nothing to a publish on
//! `news`. Entries are removed as soon as their last subscriber leaves.
//!
//! Delivery is synchronous: `publish` pushes into each subscriber's bounded
//! outbox while holding a read guard, never across an `.await`. Doing it in
//! the publisher keeps Redis's ordering guarantees: one publisher's messages
//! reach a subscriber in publish order across channels, and a subscriber of
//! both a channel and a matching pattern gets `message` before `pmessage`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dashmap::DashMap;

use super::glob::Glob;
use super::publication::{Delivery, DeliveryKind, EncodeCache, Publication, Subscriber};

/// Identifies a connection across front ends.
pub type ClientId = u64;

#[derive(Clone)]
struct Entry {
    id: ClientId,
    sink: Arc<dyn Subscriber>,
}

fn add(list: &mut Vec<Entry>, id: ClientId, sink: Arc<dyn Subscriber>) -> bool {
    if list.iter().any(|e| e.id == id) {
        return false;
    }
    list.push(Entry { id, sink });
    true
}

/// At most this many bytes of a pattern's literal prefix index it: bounds
/// the trie's depth (and recursion) whatever patterns clients send; longer
/// prefixes are checked by the glob match itself.
const MAX_INDEX_DEPTH: usize = 64;

fn index_key(glob: &Glob) -> &[u8] {
    let p = glob.literal_prefix();
    &p[..p.len().min(MAX_INDEX_DEPTH)]
}

fn remove(list: &mut Vec<Entry>, id: ClientId) -> bool {
    match list.iter().position(|e| e.id == id) {
        Some(i) => {
            list.remove(i);
            true
        }
        None => false,
    }
}

struct PatternEntry {
    pattern: Bytes,
    glob: Glob,
    subs: Vec<Entry>,
}

#[derive(Default)]
struct Node {
    children: BTreeMap<u8, Node>,
    patterns: Vec<PatternEntry>,
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

    /// Removes `id` from `pattern` under `path`, pruning empty nodes.
    fn remove(&mut self, path: &[u8], pattern: &[u8], id: ClientId) -> (bool, bool) {
        let (removed, pattern_gone) = match path.split_first() {
            None => {
                let Some(i) = self.patterns.iter().position(|p| p.pattern == pattern) else {
                    return (false, false);
                };
                let removed = remove(&mut self.patterns[i].subs, id);
                let gone = self.patterns[i].subs.is_empty();
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
        };
        (removed, pattern_gone)
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

/// See the module docs.
#[derive(Default)]
pub struct Registry {
    channels: DashMap<Bytes, Vec<Entry>>,
    shard_channels: DashMap<Bytes, Vec<Entry>>,
    patterns: RwLock<PatternIndex>,
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

    fn map(&self, space: Space) -> &DashMap<Bytes, Vec<Entry>> {
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
        add(&mut self.map(space).entry(channel).or_default(), id, sink)
    }

    /// Removes `id` from `channel`; the entry goes when it was the last.
    pub fn unsubscribe(&self, space: Space, channel: &[u8], id: ClientId) -> bool {
        let map = self.map(space);
        let mut removed = false;
        map.remove_if_mut(channel, |_, subs| {
            removed = remove(subs, id);
            subs.is_empty()
        });
        removed
    }

    fn patterns_read(&self) -> std::sync::RwLockReadGuard<'_, PatternIndex> {
        self.patterns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn patterns_write(&self) -> std::sync::RwLockWriteGuard<'_, PatternIndex> {
        self.patterns.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `id` as a subscriber of `pattern`; false if it already was one.
    pub fn psubscribe(&self, pattern: Bytes, id: ClientId, sink: Arc<dyn Subscriber>) -> bool {
        let glob = Glob::new(&pattern);
        let mut idx = self.patterns_write();
        let node = idx.root.find_mut(index_key(&glob));
        let added = match node.patterns.iter_mut().find(|p| p.pattern == pattern) {
            Some(p) => add(&mut p.subs, id, sink),
            None => {
                node.patterns.push(PatternEntry {
                    pattern,
                    glob,
                    subs: vec![Entry { id, sink }],
                });
                idx.count += 1;
                return true;
            }
        };
        added
    }

    /// Removes `id` from `pattern`; the pattern goes when it was the last.
    pub fn punsubscribe(&self, pattern: &[u8], id: ClientId) -> bool {
        let glob = Glob::new(pattern);
        let mut idx = self.patterns_write();
        let (removed, gone) = idx.root.remove(index_key(&glob), pattern, id);
        if gone {
            idx.count -= 1;
        }
        removed
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
            for e in &p.subs {
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

    /// Delivers a presence event to the exact subscribers of its channel.
    pub fn deliver_event(&self, publication: &Publication, kind: DeliveryKind) {
        if let Some(subs) = self.channels.get(&publication.channel) {
            let d = Delivery::direct(publication, kind);
            for e in subs.iter() {
                e.sink.deliver(&d);
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
}
