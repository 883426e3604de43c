//! Redis Streams, in memory: entries with `ms-seq` ids, consumer groups with
//! pending lists, trimming, and the bookkeeping Redis 7.0 reports
//! (entries-added, max-deleted-entry-id, group lag). No wire formats here.
//!
//! Entries also carry an `offset` (their 1-based position among every entry
//! ever added), which is what WebSocket clients resume from. Entries are
//! grouped into "nodes" of up to [`NODE_MAX_ENTRIES`] the way Redis groups
//! them into listpacks, so approximate (`~`) trimming removes the same whole
//! blocks Redis would and XINFO reports the same `radix-tree-keys`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use bytes::Bytes;

/// Redis's `stream-node-max-entries` default.
pub const NODE_MAX_ENTRIES: u64 = 100;

/// A stream entry id: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    pub fn is_zero(&self) -> bool {
        *self == StreamId::MIN
    }

    /// The next id, or `None` past the maximum.
    pub fn incr(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The previous id, or `None` below zero.
    pub fn decr(self) -> Option<StreamId> {
        if self.seq > 0 {
            Some(StreamId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(StreamId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    /// Parses `ms-seq` or `ms` (with `missing_seq` for the sequence).
    /// Returns the id and whether the sequence was given.
    pub fn parse(s: &[u8], missing_seq: u64) -> Option<(StreamId, bool)> {
        let s = std::str::from_utf8(s).ok()?;
        let num = |t: &str| -> Option<u64> {
            if t.is_empty() || t.starts_with('+') || t.starts_with('-') {
                return None;
            }
            t.parse().ok()
        };
        match s.split_once('-') {
            Some((ms, seq)) => Some((StreamId::new(num(ms)?, num(seq)?), true)),
            None => Some((StreamId::new(num(s)?, missing_seq), false)),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One entry: id, offset and field-value pairs.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    pub id: StreamId,
    /// 1-based count of entries ever added when this one was.
    pub offset: u64,
    pub fields: Vec<(Bytes, Bytes)>,
    node: u64,
}

/// What one heap block of `len` bytes costs: glibc malloc rounds up to 16
/// bytes with an 8-byte header.
fn block(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (len + 8).next_multiple_of(16)
}

impl StreamEntry {
    /// Memory this entry holds, for the history cap and `history_bytes`:
    /// its slot in the stream's deque and in the history eviction queue
    /// (each about half empty on average after growth), its field vector
    /// and every field and value block. Measured against RSS growth in
    /// tests/history_memory.rs: 364 B counted for 307 B of RSS per 100-byte
    /// message (it was 184 B counted for 362 B real when only the bytes and
    /// a constant were counted, and payloads pinned their whole request).
    pub fn size(&self) -> usize {
        const SLOTS: usize = (std::mem::size_of::<StreamEntry>() + 48) * 3 / 2;
        SLOTS
            + block(self.fields.len() * std::mem::size_of::<(Bytes, Bytes)>())
            + self
                .fields
                .iter()
                .map(|(f, v)| block(f.len()) + block(v.len()))
                .sum::<usize>()
    }
}

/// A pending (delivered, unacknowledged) entry of a group.
#[derive(Debug, Clone)]
pub struct Pending {
    pub consumer: Bytes,
    /// Last delivery, ms since the epoch.
    pub delivery_time: u64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Consumer {
    /// Last time the consumer was seen (ms since the epoch).
    pub seen_time: u64,
    pub pel: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub last_id: StreamId,
    /// Logical read counter; `None` when unknown (Redis's -1).
    pub entries_read: Option<u64>,
    pub pel: BTreeMap<StreamId, Pending>,
    pub consumers: BTreeMap<Bytes, Consumer>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    seq: u64,
    live: u64,
    total: u64,
}

/// How to trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

/// A stream.
#[derive(Debug, Clone)]
pub struct Stream {
    entries: VecDeque<StreamEntry>,
    nodes: VecDeque<Node>,
    next_node: u64,
    pub last_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    /// The id Redis records as the first entry's (0-0 when empty).
    pub first_id: StreamId,
    pub groups: BTreeMap<Bytes, Group>,
    /// Changes whenever continuity is lost (new stream object).
    pub epoch: u64,
    bytes: usize,
}

/// Errors of stream writes, with Redis's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("ERR The ID specified in XADD is equal or smaller than the target stream top item")]
    IdTooSmall,
    #[error("ERR The ID specified in XADD must be greater than 0-0")]
    IdZero,
    #[error("ERR The stream has exhausted the last possible ID, unable to add more items")]
    Exhausted,
}

/// How XADD picks the id.
#[derive(Debug, Clone, Copy)]
pub enum NewId {
    Auto,
    /// `ms-*`
    AutoSeq(u64),
    Explicit(StreamId),
}

impl Stream {
    pub fn new(epoch: u64) -> Stream {
        Stream {
            entries: VecDeque::new(),
            nodes: VecDeque::new(),
            next_node: 0,
            last_id: StreamId::MIN,
            max_deleted_id: StreamId::MIN,
            entries_added: 0,
            first_id: StreamId::MIN,
            groups: BTreeMap::new(),
            epoch,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate memory of the entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of nodes (Redis's radix-tree-keys).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn first(&self) -> Option<&StreamEntry> {
        self.entries.front()
    }

    pub fn last(&self) -> Option<&StreamEntry> {
        self.entries.back()
    }

    /// The offset of the newest entry ever added (0 when none).
    pub fn top_offset(&self) -> u64 {
        self.entries_added
    }

    fn index_of(&self, id: StreamId) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.id.cmp(&id))
    }

    fn refresh_first(&mut self) {
        self.first_id = self.entries.front().map_or(StreamId::MIN, |e| e.id);
    }

    /// The id XADD would assign, or the error it would give.
    pub fn next_id(&self, how: NewId, now_ms: u64) -> Result<StreamId, StreamError> {
        let last = self.last_id;
        let id = match how {
            NewId::Auto => {
                if now_ms > last.ms {
                    StreamId::new(now_ms, 0)
                } else {
                    last.incr().ok_or(StreamError::Exhausted)?
                }
            }
            NewId::AutoSeq(ms) => {
                if ms == last.ms {
                    if last.seq == u64::MAX {
                        return Err(StreamError::IdTooSmall);
                    }
                    StreamId::new(ms, last.seq + 1)
                } else if ms > last.ms {
                    StreamId::new(ms, 0)
                } else {
                    return Err(StreamError::IdTooSmall);
                }
            }
            NewId::Explicit(id) => id,
        };
        if id.is_zero() {
            return Err(StreamError::IdZero);
        }
        if id <= last {
            return Err(StreamError::IdTooSmall);
        }
        Ok(id)
    }

    /// Appends an entry; returns its id and offset.
    pub fn add(
        &mut self,
        how: NewId,
        fields: Vec<(Bytes, Bytes)>,
        now_ms: u64,
    ) -> Result<(StreamId, u64), StreamError> {
        if self.last_id == StreamId::MAX && !matches!(how, NewId::Explicit(_)) {
            return Err(StreamError::Exhausted);
        }
        let id = self.next_id(how, now_ms)?;
        let node = match self.nodes.back_mut() {
            Some(n) if n.total < NODE_MAX_ENTRIES => {
                n.live += 1;
                n.total += 1;
                n.seq
            }
            _ => {
                let seq = self.next_node;
                self.next_node += 1;
                self.nodes.push_back(Node {
                    seq,
                    live: 1,
                    total: 1,
                });
                seq
            }
        };
        self.entries_added += 1;
        let entry = StreamEntry {
            id,
            offset: self.entries_added,
            fields,
            node,
        };
        self.bytes += entry.size();
        self.entries.push_back(entry);
        self.last_id = id;
        if self.entries.len() == 1 {
            self.first_id = id;
        }
        Ok((id, self.entries_added))
    }

    fn node_mut(&mut self, seq: u64) -> Option<&mut Node> {
        let front = self.nodes.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        // Nodes are contiguous by seq except where whole nodes were removed
        // from the middle, so search from the estimate.
        if self.nodes.get(i).is_some_and(|n| n.seq == seq) {
            return self.nodes.get_mut(i);
        }
        self.nodes.iter_mut().find(|n| n.seq == seq)
    }

    fn drop_node_if_empty(&mut self, seq: u64) {
        if self.node_mut(seq).is_some_and(|n| n.live == 0) {
            self.nodes.retain(|n| n.seq != seq);
        }
    }

    /// Deletes entries by id; returns how many existed.
    pub fn delete(&mut self, ids: &[StreamId]) -> usize {
        let mut n = 0;
        for id in ids {
            if let Ok(i) = self.index_of(*id) {
                let e = self.entries.remove(i).expect("index from search");
                self.bytes -= e.size();
                if let Some(node) = self.node_mut(e.node) {
                    node.live -= 1;
                }
                self.drop_node_if_empty(e.node);
                if *id > self.max_deleted_id {
                    self.max_deleted_id = *id;
                }
                n += 1;
            }
        }
        if n > 0 {
            self.refresh_first();
        }
        n
    }

    fn pop_front_entry(&mut self) -> Option<StreamEntry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.size();
        if let Some(node) = self.node_mut(e.node) {
            node.live -= 1;
        }
        Some(e)
    }

    /// Trims as XTRIM/XADD do. `approx` trims only whole nodes; `limit` caps
    /// the entries removed (0: none). Returns the number removed.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        while let Some(node) = self.nodes.front().copied() {
            if limit > 0 && deleted + node.live > limit {
                break;
            }
            let len = self.entries.len() as u64;
            let remove_node = match how {
                Trim::MaxLen(max) => len - node.live >= max,
                Trim::MinId(min) => {
                    // The node's last entry (live) must be below `min`.
                    let last_in_node = self
                        .entries
                        .iter()
                        .take_while(|e| e.node == node.seq)
                        .last()
                        .map(|e| e.id);
                    last_in_node.is_some_and(|id| id < min)
                }
            };
            if remove_node {
                for _ in 0..node.live {
                    self.pop_front_entry();
                }
                self.nodes.pop_front();
                deleted += node.live;
                continue;
            }
            if approx {
                break;
            }
            // Trim inside the node, entry by entry.
            while let Some(e) = self.entries.front() {
                if e.node != node.seq {
                    break;
                }
                let stop = match how {
                    Trim::MaxLen(max) => self.entries.len() as u64 <= max,
                    Trim::MinId(min) => e.id >= min,
                };
                if stop {
                    break;
                }
                self.pop_front_entry();
                deleted += 1;
            }
            break;
        }
        // Redis leaves emptied nodes only when trimming within them; whole
        // nodes are gone above.
        if deleted > 0 {
            self.refresh_first();
        }
        deleted
    }

    /// Entries with `start <= id <= end`, at most `count` (0: all), in order
    /// or reversed.
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        count: usize,
        rev: bool,
    ) -> Vec<&StreamEntry> {
        if start > end {
            return Vec::new();
        }
        let lo = self.index_of(start).unwrap_or_else(|i| i);
        let hi = match self.index_of(end) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        if lo >= hi {
            return Vec::new();
        }
        let take = if count == 0 { usize::MAX } else { count };
        if rev {
            self.entries.range(lo..hi).rev().take(take).collect()
        } else {
            self.entries.range(lo..hi).take(take).collect()
        }
    }

    /// Entries with ids above `after`.
    pub fn after(&self, after: StreamId, count: usize) -> Vec<&StreamEntry> {
        match after.incr() {
            Some(start) => self.range(start, StreamId::MAX, count, false),
            None => Vec::new(),
        }
    }

    /// Entries with offsets above `offset`, if they are all still here
    /// (no trimmed or deleted entry in between). `None` means a gap.
    pub fn since_offset(&self, offset: u64, limit: usize) -> Option<Vec<&StreamEntry>> {
        if offset > self.entries_added {
            return None;
        }
        let missed = self.entries_added - offset;
        if missed == 0 {
            return Some(Vec::new());
        }
        let start = self.entries.partition_point(|e| e.offset <= offset);
        let avail = self.entries.len() - start;
        if avail as u64 != missed {
            return None;
        }
        Some(self.entries.range(start..).take(limit).collect())
    }

    /// Whole entries by offset order, newest last, for history reads:
    /// entries with offset > `after` (if given), at most `limit`, newest
    /// first when `reverse`.
    pub fn history(&self, after: Option<u64>, limit: usize, reverse: bool) -> Vec<&StreamEntry> {
        let start = after.map_or(0, |o| self.entries.partition_point(|e| e.offset <= o));
        let it = self.entries.range(start..);
        if reverse {
            it.rev().take(limit).collect()
        } else {
            it.take(limit).collect()
        }
    }

    /// Redis's `streamRangeHasTombstones(s, start, NULL)`.
    pub fn has_tombstones_from(&self, start: StreamId) -> bool {
        if self.entries.is_empty() || self.max_deleted_id.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted_id {
            return false;
        }
        start <= self.max_deleted_id
    }

    /// Redis's `streamEstimateDistanceFromFirstEverEntry`.
    pub fn estimate_distance(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.entries.is_empty() && id <= self.last_id {
            return Some(self.entries_added);
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        if self.max_deleted_id.is_zero() || self.max_deleted_id < self.first_id {
            let len = self.entries.len() as u64;
            if id < self.first_id {
                return Some(self.entries_added - len);
            } else if id == self.first_id {
                return Some(self.entries_added - len + 1);
            }
        }
        None
    }

    /// A group's lag, as XINFO GROUPS reports it (`None`: unknown).
    pub fn group_lag(&self, g: &Group) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if let Some(read) = g.entries_read {
            if !self.has_tombstones_from(g.last_id) {
                return Some(self.entries_added.saturating_sub(read));
            }
        }
        self.estimate_distance(g.last_id)
            .map(|read| self.entries_added.saturating_sub(read))
    }

    /// Advances a group past `id` as XREADGROUP does.
    pub fn advance_group(&self, g: &mut Group, id: StreamId) {
        if id > g.last_id {
            if g.entries_read.is_some() && !self.has_tombstones_from(id) {
                g.entries_read = g.entries_read.map(|r| r + 1);
            } else if self.entries_added > 0 {
                g.entries_read = self.estimate_distance(id);
            }
            g.last_id = id;
        }
    }

    pub fn get(&self, id: StreamId) -> Option<&StreamEntry> {
        self.index_of(id).ok().map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Vec<(Bytes, Bytes)> {
        vec![(Bytes::from_static(b"f"), Bytes::from_static(b"v"))]
    }

    #[test]
    fn ids_and_offsets() {
        let mut s = Stream::new(1);
        assert_eq!(
            s.add(NewId::Explicit(StreamId::new(5, 0)), f(), 0)
                .unwrap()
                .0,
            StreamId::new(5, 0)
        );
        assert_eq!(
            s.add(NewId::Explicit(StreamId::new(5, 0)), f(), 0),
            Err(StreamError::IdTooSmall)
        );
        assert_eq!(
            s.add(NewId::AutoSeq(5), f(), 0).unwrap().0,
            StreamId::new(5, 1)
        );
        assert_eq!(s.add(NewId::Auto, f(), 3).unwrap().0, StreamId::new(5, 2));
        assert_eq!(
            s.add(NewId::Auto, f(), 9).unwrap(),
            (StreamId::new(9, 0), 4)
        );
        assert_eq!(
            Stream::new(1).next_id(NewId::Explicit(StreamId::MIN), 0),
            Err(StreamError::IdZero)
        );
        assert_eq!(s.since_offset(2, 100).unwrap().len(), 2);
        s.delete(&[StreamId::new(5, 2)]);
        assert!(s.since_offset(2, 100).is_none(), "a deleted entry is a gap");
        assert_eq!(s.since_offset(3, 100).unwrap().len(), 1);
    }

    #[test]
    fn trimming_by_nodes() {
        let mut s = Stream::new(1);
        for i in 1..=250 {
            s.add(NewId::Explicit(StreamId::new(i, 0)), f(), 0).unwrap();
        }
        assert_eq!(s.node_count(), 3);
        assert_eq!(s.trim(Trim::MaxLen(120), true, 0), 100);
        assert_eq!(s.len(), 150);
        assert_eq!(s.trim(Trim::MaxLen(120), false, 0), 30);
        assert_eq!(s.first().unwrap().id, StreamId::new(131, 0));
        assert_eq!(s.trim(Trim::MinId(StreamId::new(200, 0)), false, 0), 69);
        assert_eq!(s.len(), 51);
    }
}
