//! Consumer groups: the hub's XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM, XGROUP and XINFO CONSUMERS. Each finds the group under the
//! keyspace lock and applies the rules of `pel` (methods of [`Group`]),
//! with the time of the call.

use bytes::Bytes;

use super::ReadEntry;
use crate::hub::data::DataError;
use crate::hub::keyspace::WrongType;
use crate::hub::stream::{Group, Stream, StreamId};
use crate::hub::{now_ms, Hub};

/// Why a consumer-group operation failed. Front ends word it: Redis's
/// messages name the key and group, and differ between commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    WrongType,
    /// No stream at the key.
    NoKey,
    /// The stream has no group of that name.
    NoGroup,
    /// XGROUP CREATE: the group exists already.
    Exists,
}

impl From<WrongType> for GroupError {
    fn from(_: WrongType) -> Self {
        GroupError::WrongType
    }
}

/// Where an XREADGROUP reads in one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFrom {
    /// `>`: entries never delivered to the group.
    New,
    /// The consumer's own pending entries from this id on.
    Pending(StreamId),
}

/// XCLAIM's and XAUTOCLAIM's options for each claimed entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimOpts {
    /// IDLE: the delivery time is set this far back.
    pub idle: Option<u64>,
    /// TIME: the delivery time itself (IDLE wins).
    pub time: Option<u64>,
    /// RETRYCOUNT: the delivery count itself.
    pub retrycount: Option<u64>,
    /// FORCE: claim ids not in the PEL (if still in the stream).
    pub force: bool,
    /// JUSTID: reply ids, and leave the delivery count alone.
    pub justid: bool,
}

/// XCLAIM: `ids` idle for at least `min_idle` ms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    pub min_idle: u64,
    pub ids: Vec<StreamId>,
    /// LASTID: the group's last-delivered id moves up to it.
    pub lastid: Option<StreamId>,
    pub opts: ClaimOpts,
}

/// XAUTOCLAIM: up to `count` entries from `start` idle for `min_idle` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoClaim {
    pub min_idle: u64,
    pub start: StreamId,
    pub count: usize,
    pub justid: bool,
}

/// What was claimed: the entries, or only their ids (JUSTID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    Ids(Vec<StreamId>),
    Entries(Vec<ReadEntry>),
}

/// XAUTOCLAIM's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoClaimed {
    /// Where the next call starts (0-0: the scan is complete).
    pub next: StreamId,
    pub claimed: Claimed,
    /// Pending ids whose entries are gone from the stream, dropped from
    /// the PEL on the way.
    pub deleted: Vec<StreamId>,
}

/// XPENDING's summary form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSummary {
    pub count: usize,
    /// The smallest and largest pending ids (none when nothing is).
    pub bounds: Option<(StreamId, StreamId)>,
    /// Consumers with pending entries and how many each has.
    pub consumers: Vec<(Bytes, usize)>,
}

/// XPENDING's extended form: pending ids in `start..=end`, at most
/// `count`, of one consumer (when given), idle at least `min_idle` ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingQuery {
    pub start: StreamId,
    pub end: StreamId,
    pub count: usize,
    pub consumer: Option<Bytes>,
    pub min_idle: Option<u64>,
}

/// One pending entry as XPENDING lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub id: StreamId,
    pub consumer: Bytes,
    /// ms since the last delivery.
    pub idle: u64,
    pub deliveries: u64,
}

/// One consumer as XINFO CONSUMERS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: Bytes,
    pub pending: usize,
    /// ms since it was last seen.
    pub idle: u64,
}

impl Hub {
    /// Runs `f` on the group `group` of the stream at `key`, with the
    /// stream to read (`NoKey`, `NoGroup` or `WrongType` otherwise).
    fn with_group<R>(
        &self,
        key: &[u8],
        group: &Bytes,
        f: impl FnOnce(&Stream, &mut Group) -> R,
    ) -> Result<R, GroupError> {
        let mut db = self.keyspace.lock();
        match db.stream(key)? {
            None => return Err(GroupError::NoKey),
            Some(s) if !s.groups.contains_key(group) => return Err(GroupError::NoGroup),
            Some(_) => {}
        }
        db.with_stream(key, |s| {
            // Out of the map while `f` reads the stream beside it.
            let mut g = s.groups.remove(group)?;
            let r = f(s, &mut g);
            s.groups.insert(group.clone(), g);
            Some(r)
        })
        .flatten()
        .ok_or(GroupError::NoGroup)
    }

    /// XREADGROUP: reads each stream of `keys` from its position in `from`
    /// for `consumer` of `group` ([`Group::read`]). Every key and group is
    /// checked first; on failure, the error and the position of the key it
    /// concerns. `None` when nothing is to be answered yet (only `>` reads,
    /// all empty: the caller may block).
    #[allow(clippy::type_complexity)]
    pub fn xreadgroup(
        &self,
        group: &Bytes,
        consumer: &Bytes,
        keys: &[Bytes],
        from: &[GroupFrom],
        count: usize,
        noack: bool,
    ) -> Result<Option<Vec<(Bytes, Vec<ReadEntry>)>>, (usize, GroupError)> {
        let now = now_ms();
        let mut db = self.keyspace.lock();
        for (i, key) in keys.iter().enumerate() {
            match db.stream(key) {
                Err(WrongType) => return Err((i, GroupError::WrongType)),
                Ok(Some(s)) if s.groups.contains_key(group) => {}
                Ok(Some(_)) => return Err((i, GroupError::NoGroup)),
                Ok(None) => return Err((i, GroupError::NoKey)),
            }
        }
        let mut results = Vec::new();
        let mut served = false;
        for (key, from) in keys.iter().zip(from) {
            let entries = db
                .with_stream(key, |s| {
                    let Some(mut g) = s.groups.remove(group) else {
                        return Vec::new();
                    };
                    let out = g.read(s, consumer, *from, count, noack, now);
                    s.groups.insert(group.clone(), g);
                    out
                })
                .unwrap_or_default();
            // Reading history (an explicit id) answers even when empty;
            // `>` answers only with new entries.
            if *from != GroupFrom::New || !entries.is_empty() {
                served = true;
                results.push((key.clone(), entries));
            }
        }
        Ok(served.then_some(results))
    }

    /// XACK: how many of `ids` were pending (0 without key or group).
    pub fn xack(&self, key: &[u8], group: &[u8], ids: &[StreamId]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        Ok(db
            .stream(key)?
            .and_then(|s| s.groups.get_mut(group))
            .map_or(0, |g| g.ack(ids)))
    }

    /// XPENDING's summary.
    pub fn xpending_summary(
        &self,
        key: &[u8],
        group: &Bytes,
    ) -> Result<PendingSummary, GroupError> {
        self.with_group(key, group, |_, g| g.pending_summary())
    }

    /// XPENDING's extended form.
    pub fn xpending_range(
        &self,
        key: &[u8],
        group: &Bytes,
        q: &PendingQuery,
    ) -> Result<Vec<PendingRow>, GroupError> {
        let now = now_ms();
        self.with_group(key, group, |_, g| g.pending_range(q, now))
    }

    /// XCLAIM ([`Group::claim`]).
    pub fn xclaim(
        &self,
        key: &[u8],
        group: &Bytes,
        consumer: &Bytes,
        c: &Claim,
    ) -> Result<Claimed, GroupError> {
        let now = now_ms();
        self.with_group(key, group, |s, g| g.claim(s, consumer, c, now))
    }

    /// XAUTOCLAIM ([`Group::autoclaim`]).
    pub fn xautoclaim(
        &self,
        key: &[u8],
        group: &Bytes,
        consumer: &Bytes,
        a: &AutoClaim,
    ) -> Result<AutoClaimed, GroupError> {
        let now = now_ms();
        self.with_group(key, group, |s, g| g.autoclaim(s, consumer, a, now))
    }

    /// XGROUP CREATE: a group delivering after `id` (`None`: `$`, the
    /// stream's last id), with its read counter at `entries_read` (`None`:
    /// unknown). `mkstream` creates a missing stream.
    pub fn xgroup_create(
        &self,
        key: &[u8],
        group: &Bytes,
        id: Option<StreamId>,
        mkstream: bool,
        entries_read: Option<u64>,
    ) -> Result<(), GroupError> {
        let mut db = self.keyspace.lock();
        match db.stream(key)? {
            None if !mkstream => return Err(GroupError::NoKey),
            None => {
                db.stream_or_create(key, false)?;
            }
            Some(_) => {}
        }
        let created = db.with_stream(key, |s| {
            if s.groups.contains_key(group) {
                return false;
            }
            let last_id = id.unwrap_or(s.last_id);
            s.groups.insert(
                group.clone(),
                Group {
                    last_id,
                    entries_read,
                    pel: Default::default(),
                    consumers: Default::default(),
                },
            );
            true
        });
        match created {
            Some(true) => Ok(()),
            _ => Err(GroupError::Exists),
        }
    }

    /// Runs `f` on a group for XGROUP (`NoKey`, `NoGroup`, `WrongType`).
    fn xgroup_op<R>(
        &self,
        key: &[u8],
        group: &[u8],
        f: impl FnOnce(StreamId, &mut Group) -> R,
    ) -> Result<R, GroupError> {
        let mut db = self.keyspace.lock();
        let s = db.stream(key)?.ok_or(GroupError::NoKey)?;
        let last = s.last_id;
        let g = s.groups.get_mut(group).ok_or(GroupError::NoGroup)?;
        Ok(f(last, g))
    }

    /// XGROUP SETID: the group's last-delivered id (`None`: `$`) and read
    /// counter.
    pub fn xgroup_setid(
        &self,
        key: &[u8],
        group: &[u8],
        id: Option<StreamId>,
        entries_read: Option<u64>,
    ) -> Result<(), GroupError> {
        self.xgroup_op(key, group, |last, g| {
            g.last_id = id.unwrap_or(last);
            g.entries_read = entries_read;
        })
    }

    /// XGROUP DESTROY: whether the group existed.
    pub fn xgroup_destroy(&self, key: &[u8], group: &[u8]) -> Result<bool, GroupError> {
        let mut db = self.keyspace.lock();
        let s = db.stream(key)?.ok_or(GroupError::NoKey)?;
        Ok(s.groups.remove(group).is_some())
    }

    /// XGROUP CREATECONSUMER: whether the consumer is new.
    pub fn xgroup_createconsumer(
        &self,
        key: &[u8],
        group: &[u8],
        consumer: &Bytes,
    ) -> Result<bool, GroupError> {
        let now = now_ms();
        self.xgroup_op(key, group, |_, g| {
            if g.consumers.contains_key(consumer) {
                return false;
            }
            g.consumer(consumer, now);
            true
        })
    }

    /// XGROUP DELCONSUMER: how many pending entries the consumer had.
    pub fn xgroup_delconsumer(
        &self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
    ) -> Result<usize, GroupError> {
        self.xgroup_op(key, group, |_, g| g.delete_consumer(consumer).unwrap_or(0))
    }

    /// XINFO CONSUMERS.
    pub fn xinfo_consumers(
        &self,
        key: &[u8],
        group: &[u8],
    ) -> Result<Vec<ConsumerInfo>, GroupError> {
        let now = now_ms();
        self.xgroup_op(key, group, |_, g| {
            g.consumers
                .iter()
                .map(|(n, c)| ConsumerInfo {
                    name: n.clone(),
                    pending: c.pel.len(),
                    idle: now.saturating_sub(c.seen_time),
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn hub_group_operations_check_key_and_group() {
        let h = Hub::default();
        let (k, grp, c) = (b("s"), b("g"), b("c"));
        assert_eq!(
            h.xgroup_create(&k, &grp, None, false, None),
            Err(GroupError::NoKey)
        );
        h.xgroup_create(&k, &grp, None, true, None).unwrap();
        assert_eq!(
            h.xgroup_create(&k, &grp, None, true, None),
            Err(GroupError::Exists)
        );
        assert_eq!(h.xpending_summary(&k, &b("x")), Err(GroupError::NoGroup));
        assert_eq!(h.xpending_summary(&b("x"), &grp), Err(GroupError::NoKey));
        // `>` with nothing new answers nothing (the caller may block).
        let one = std::slice::from_ref(&k);
        let r = h.xreadgroup(&grp, &c, one, &[GroupFrom::New], 0, false);
        assert_eq!(r, Ok(None));
        let r = h.xreadgroup(
            &grp,
            &c,
            &[k.clone(), b("x")],
            &[GroupFrom::New; 2],
            0,
            false,
        );
        assert_eq!(r, Err((1, GroupError::NoKey)));
        // History reads answer even when empty.
        let r = h.xreadgroup(
            &grp,
            &c,
            one,
            &[GroupFrom::Pending(StreamId::MIN)],
            0,
            false,
        );
        assert_eq!(r, Ok(Some(vec![(k.clone(), vec![])])));
        assert_eq!(h.xgroup_createconsumer(&k, &grp, &c), Ok(false));
        assert_eq!(h.xgroup_createconsumer(&k, &grp, &b("d")), Ok(true));
        assert_eq!(h.xinfo_consumers(&k, &grp).map(|v| v.len()), Ok(2));
        assert_eq!(h.xgroup_delconsumer(&k, &grp, b"d"), Ok(0));
        assert_eq!(
            h.xgroup_setid(&k, &grp, Some(StreamId::new(7, 0)), Some(3)),
            Ok(())
        );
        let info = h.xinfo_groups(&k).unwrap().unwrap();
        assert_eq!(
            (info[0].last_delivered_id, info[0].entries_read),
            (StreamId::new(7, 0), Some(3))
        );
        assert_eq!(h.xack(&k, b"nog", &[StreamId::new(1, 0)]), Ok(0));
        assert_eq!(h.xgroup_destroy(&k, &grp), Ok(true));
        assert_eq!(h.xgroup_destroy(&k, &grp), Ok(false));
        assert_eq!(h.xgroup_destroy(&b("x"), &grp), Err(GroupError::NoKey));
    }
}
