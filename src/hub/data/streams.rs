//! Keyspace operations: streams. Appending (XADD, which delivers to a
//! history channel's subscribers through [`Hub::after_xadd`]), trimming,
//! reads by id (XRANGE, XREAD) and XINFO here; consumer groups and their
//! pending lists in [`groups`]. Each method takes the keyspace lock,
//! applies one command's rules and returns typed data for a front end to
//! encode; XRANGE alone encodes under the lock (see [`Hub::xrange`]).

mod groups;
mod pel;

pub use groups::{
    AutoClaim, AutoClaimed, Claim, ClaimOpts, Claimed, ConsumerInfo, GroupError, GroupFrom,
    PendingQuery, PendingRow, PendingSummary,
};

use bytes::Bytes;

use super::DataError;
use crate::hub::keyspace::Db;
use crate::hub::stream::{NewId, Stream, StreamEntry, StreamId, Trim, NODE_MAX_ENTRIES};
use crate::hub::{now_ms, Hub};

/// Redis's error for an argument that is not a stream id.
pub const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// An entry as a read returns it: whole, or only its id where a pending
/// entry was deleted from the stream (XREADGROUP of a consumer's history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEntry {
    Full(StreamId, Vec<(Bytes, Bytes)>),
    Deleted(StreamId),
}

impl ReadEntry {
    /// The entry, its fields cloned (reference counts, no copy).
    pub fn full(e: &StreamEntry) -> ReadEntry {
        ReadEntry::Full(e.id, e.fields.clone())
    }
}

/// MAXLEN / MINID trimming, as XADD and XTRIM take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimArgs {
    pub how: Trim,
    /// `~`: whole nodes only.
    pub approx: bool,
    /// LIMIT: most entries removed (with `~` only).
    pub limit: Option<u64>,
}

impl TrimArgs {
    /// Trims `s`; returns how many entries went. An approximate trim
    /// without LIMIT removes at most 100 nodes' worth, as Redis's default.
    pub fn apply(&self, s: &mut Stream) -> u64 {
        let limit = match (self.approx, self.limit) {
            (true, Some(l)) => l,
            (true, None) => 100 * NODE_MAX_ENTRIES,
            (false, _) => 0,
        };
        s.trim(self.how, self.approx, limit)
    }
}

/// XADD's options.
#[derive(Debug, Clone, Copy)]
pub struct XAdd {
    pub id: NewId,
    pub trim: Option<TrimArgs>,
    /// Do not create a missing stream (the add then returns `None`).
    pub nomkstream: bool,
}

/// XRANGE / XREVRANGE: ids `start..=end`, at most `count` (0: all).
#[derive(Debug, Clone, Copy)]
pub struct XRange {
    pub start: StreamId,
    pub end: StreamId,
    pub count: usize,
    pub rev: bool,
}

/// Where an XREAD starts in one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// `$`: after the stream's last id now (resolved for a retry).
    Last,
    /// `+`: the last entry itself.
    LastEntry,
    /// After this id.
    After(StreamId),
    /// Not an id: the read fails with [`INVALID_ID`] when it reaches this
    /// stream, after the type checks of the streams before it, as Redis's.
    Invalid,
}

/// What an XREAD found.
#[derive(Debug, Default)]
pub struct XReadResult {
    /// Per stream with new entries: its key and the entries.
    pub entries: Vec<(Bytes, Vec<ReadEntry>)>,
    /// For each `$` (by position in the keys), the id it stood for, so a
    /// blocked retry reads after it and not after later entries' ids.
    pub resolved: Vec<(usize, StreamId)>,
}

/// XINFO STREAM's figures.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub length: usize,
    /// Nodes (Redis's radix-tree-keys).
    pub nodes: usize,
    pub last_generated_id: StreamId,
    pub max_deleted_entry_id: StreamId,
    pub entries_added: u64,
    pub recorded_first_entry_id: StreamId,
    pub groups: usize,
    pub first_entry: Option<StreamEntry>,
    pub last_entry: Option<StreamEntry>,
}

/// One group as XINFO GROUPS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: Bytes,
    pub consumers: usize,
    pub pending: usize,
    pub last_delivered_id: StreamId,
    /// `None`: unknown (Redis's nil).
    pub entries_read: Option<u64>,
    pub lag: Option<u64>,
}

/// The stream at `key` to read (`None` when absent).
fn sread<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a mut Stream>, DataError> {
    Ok(db.stream(key)?)
}

impl Hub {
    /// XADD: appends `fields` with the id `add.id` asks for, then trims;
    /// returns the new id (`None`: NOMKSTREAM and no stream). A missing
    /// stream is created only once the id is known to be valid, so an
    /// error leaves no empty stream behind. Where `key` is a channel with
    /// history, the entry is delivered to its subscribers
    /// ([`Hub::after_xadd`]) before the lock is released, so offsets reach
    /// them in order.
    pub fn xadd(
        &self,
        key: &Bytes,
        add: &XAdd,
        fields: Vec<(Bytes, Bytes)>,
    ) -> Result<Option<StreamId>, DataError> {
        let mut db = self.keyspace.lock();
        match sread(&mut db, key)? {
            None if add.nomkstream => return Ok(None),
            None => {
                if let Err(e) = Stream::new(0).next_id(add.id, now_ms()) {
                    return Err(DataError::Other(e.to_string().into()));
                }
                db.stream_or_create(key, false)?;
            }
            Some(_) => {}
        }
        let added = db.with_stream(key, |s| {
            let r = s.add(add.id, fields.clone(), now_ms());
            if r.is_ok() {
                if let Some(t) = &add.trim {
                    t.apply(s);
                }
            }
            r
        });
        match added {
            Some(Ok((id, offset))) => {
                self.after_xadd(&mut db, key, id, offset, &fields);
                Ok(Some(id))
            }
            Some(Err(e)) => Err(DataError::Other(e.to_string().into())),
            None => Err(DataError::WrongType),
        }
    }

    /// XTRIM: how many entries went (0 when the key is absent).
    pub fn xtrim(&self, key: &[u8], trim: &TrimArgs) -> Result<u64, DataError> {
        let mut db = self.keyspace.lock();
        if sread(&mut db, key)?.is_none() {
            return Ok(0);
        }
        Ok(db.with_stream(key, |s| trim.apply(s)).unwrap_or(0))
    }

    /// XRANGE / XREVRANGE: runs `encode` on the entries of `r` (none when
    /// the key is absent) under the keyspace lock. The entries are encoded
    /// straight from the stream, as before this API existed: a copy of a
    /// large range would cost more than the encoding it saves from the
    /// lock. `encode` must only encode.
    pub fn xrange<R>(
        &self,
        key: &[u8],
        r: &XRange,
        encode: impl FnOnce(&[&StreamEntry]) -> R,
    ) -> Result<R, DataError> {
        let mut db = self.keyspace.lock();
        let entries = match sread(&mut db, key)? {
            None => Vec::new(),
            Some(s) => s.range(r.start, r.end, r.count, r.rev),
        };
        Ok(encode(&entries))
    }

    /// XLEN.
    pub fn xlen(&self, key: &[u8]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        Ok(sread(&mut db, key)?.map_or(0, |s| s.len()))
    }

    /// XDEL: how many of `ids` existed.
    pub fn xdel(&self, key: &[u8], ids: &[StreamId]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        if sread(&mut db, key)?.is_none() {
            return Ok(0);
        }
        Ok(db.with_stream(key, |s| s.delete(ids)).unwrap_or(0))
    }

    /// XREAD: up to `count` (0: all) entries of each stream of `keys` after
    /// its position in `from` (one per key). Streams with nothing new are
    /// left out. Each stream is type-checked, then its position, in order.
    pub fn xread(
        &self,
        keys: &[Bytes],
        from: &[ReadFrom],
        count: usize,
    ) -> Result<XReadResult, DataError> {
        let mut db = self.keyspace.lock();
        let mut r = XReadResult::default();
        for (n, (key, from)) in keys.iter().zip(from).enumerate() {
            let s = sread(&mut db, key)?;
            let after = match from {
                ReadFrom::Last => {
                    let last = s.as_ref().map_or(StreamId::MIN, |s| s.last_id);
                    r.resolved.push((n, last));
                    last
                }
                ReadFrom::LastEntry => match s.as_ref().and_then(|s| s.last()) {
                    Some(e) => e.id.decr().unwrap_or(StreamId::MIN),
                    None => StreamId::MAX,
                },
                ReadFrom::After(id) => *id,
                ReadFrom::Invalid => return Err(DataError::Other(INVALID_ID.into())),
            };
            if let Some(s) = s {
                let entries: Vec<ReadEntry> = s
                    .after(after, count)
                    .into_iter()
                    .map(ReadEntry::full)
                    .collect();
                if !entries.is_empty() {
                    r.entries.push((key.clone(), entries));
                }
            }
        }
        Ok(r)
    }

    /// XINFO STREAM: `Ok(None)` when the key is absent.
    pub fn xinfo_stream(&self, key: &[u8]) -> Result<Option<StreamInfo>, DataError> {
        let mut db = self.keyspace.lock();
        Ok(sread(&mut db, key)?.map(|s| StreamInfo {
            length: s.len(),
            nodes: s.node_count(),
            last_generated_id: s.last_id,
            max_deleted_entry_id: s.max_deleted_id,
            entries_added: s.entries_added,
            recorded_first_entry_id: s.first_id,
            groups: s.groups.len(),
            first_entry: s.first().cloned(),
            last_entry: s.last().cloned(),
        }))
    }

    /// XINFO GROUPS: `Ok(None)` when the key is absent.
    pub fn xinfo_groups(&self, key: &[u8]) -> Result<Option<Vec<GroupInfo>>, DataError> {
        let mut db = self.keyspace.lock();
        Ok(sread(&mut db, key)?.map(|s| {
            s.groups
                .iter()
                .map(|(name, g)| GroupInfo {
                    name: name.clone(),
                    consumers: g.consumers.len(),
                    pending: g.pel.len(),
                    last_delivered_id: g.last_id,
                    entries_read: g.entries_read,
                    lag: s.group_lag(g),
                })
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    pub(super) fn fields() -> Vec<(Bytes, Bytes)> {
        vec![(b("f"), b("v"))]
    }

    pub(super) fn add(h: &Hub, key: &'static str, ms: u64) -> StreamId {
        let a = XAdd {
            id: NewId::Explicit(StreamId::new(ms, 0)),
            trim: None,
            nomkstream: false,
        };
        h.xadd(&b(key), &a, fields()).unwrap().unwrap()
    }

    #[test]
    fn xadd_validates_before_creating() {
        let h = Hub::default();
        let zero = XAdd {
            id: NewId::Explicit(StreamId::MIN),
            trim: None,
            nomkstream: false,
        };
        let e = h.xadd(&b("s"), &zero, fields());
        assert!(matches!(e, Err(DataError::Other(m)) if m.contains("greater than 0-0")));
        assert!(!h.keyspace.lock().exists(b"s"), "no empty stream left");
        let nomk = XAdd {
            id: NewId::Auto,
            trim: None,
            nomkstream: true,
        };
        assert_eq!(h.xadd(&b("s"), &nomk, fields()), Ok(None));
        add(&h, "s", 5);
        let again = XAdd {
            id: NewId::Explicit(StreamId::new(5, 0)),
            ..nomk
        };
        let e = h.xadd(&b("s"), &again, fields());
        assert!(matches!(e, Err(DataError::Other(m)) if m.contains("equal or smaller")));
        h.zadd(b"z", Default::default(), vec![(b("m"), 1.0)])
            .unwrap();
        assert_eq!(h.xadd(&b("z"), &nomk, fields()), Err(DataError::WrongType));
        assert_eq!(h.xlen(b"z"), Err(DataError::WrongType));
    }

    #[test]
    fn xadd_trims_and_xtrim_counts() {
        let h = Hub::default();
        for ms in 1..=10 {
            add(&h, "s", ms);
        }
        // `~` removes whole nodes only: nothing from a single node, however
        // far past MAXLEN.
        let approx = TrimArgs {
            how: Trim::MaxLen(2),
            approx: true,
            limit: None,
        };
        assert_eq!(h.xtrim(b"s", &approx), Ok(0));
        let keep3 = TrimArgs {
            how: Trim::MaxLen(3),
            approx: false,
            limit: None,
        };
        let a = XAdd {
            id: NewId::Auto,
            trim: Some(keep3),
            nomkstream: false,
        };
        h.xadd(&b("s"), &a, fields()).unwrap();
        assert_eq!(h.xlen(b"s"), Ok(3));
        let keep1 = TrimArgs {
            how: Trim::MaxLen(1),
            ..keep3
        };
        assert_eq!(h.xtrim(b"s", &keep1), Ok(2));
        assert_eq!(h.xtrim(b"nokey", &keep1), Ok(0));
    }

    #[test]
    fn xread_resolves_dollar_and_checks_in_order() {
        let h = Hub::default();
        add(&h, "a", 1);
        add(&h, "a", 2);
        let keys = [b("a"), b("none")];
        let r = h
            .xread(&keys, &[ReadFrom::Last, ReadFrom::Last], 0)
            .unwrap();
        assert!(r.entries.is_empty());
        assert_eq!(r.resolved, [(0, StreamId::new(2, 0)), (1, StreamId::MIN)]);
        let r = h
            .xread(
                &keys,
                &[ReadFrom::LastEntry, ReadFrom::After(StreamId::MIN)],
                0,
            )
            .unwrap();
        assert_eq!(r.entries.len(), 1);
        assert_eq!(
            r.entries[0].1,
            [ReadEntry::Full(StreamId::new(2, 0), fields())]
        );
        let r = h
            .xread(&keys[..1], &[ReadFrom::After(StreamId::MIN)], 1)
            .unwrap();
        assert_eq!(r.entries[0].1.len(), 1, "COUNT bounds each stream");
        // A wrong type before an invalid id answers WRONGTYPE, and after
        // it the invalid id's error.
        h.zadd(b"z", Default::default(), vec![(b("m"), 1.0)])
            .unwrap();
        let e = h.xread(&[b("z"), b("a")], &[ReadFrom::Last, ReadFrom::Invalid], 0);
        assert_eq!(e.map(|_| ()), Err(DataError::WrongType));
        let e = h.xread(&[b("a"), b("z")], &[ReadFrom::Invalid, ReadFrom::Last], 0);
        assert_eq!(e.map(|_| ()), Err(DataError::Other(INVALID_ID.into())));
    }

    #[test]
    fn xrange_encodes_under_the_lock_and_xinfo_reports() {
        let h = Hub::default();
        for ms in 1..=4 {
            add(&h, "s", ms);
        }
        let r = XRange {
            start: StreamId::new(2, 0),
            end: StreamId::MAX,
            count: 2,
            rev: true,
        };
        let ids = h
            .xrange(b"s", &r, |es| {
                es.iter().map(|e| e.id.ms).collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(ids, [4, 3]);
        assert_eq!(h.xrange(b"nokey", &r, |es| es.len()), Ok(0));
        assert_eq!(
            h.xdel(b"s", &[StreamId::new(4, 0), StreamId::new(9, 0)]),
            Ok(1)
        );
        let info = h.xinfo_stream(b"s").unwrap().unwrap();
        assert_eq!((info.length, info.entries_added), (3, 4));
        assert_eq!(info.max_deleted_entry_id, StreamId::new(4, 0));
        assert_eq!(info.last_entry.map(|e| e.id), Some(StreamId::new(3, 0)));
        assert!(h.xinfo_stream(b"nokey").unwrap().is_none());
        assert!(h.xinfo_groups(b"nokey").unwrap().is_none());
    }
}
