//! Keyspace operations: sets (SADD … SSCAN), with Redis's rules: an emptied
//! set is deleted, a result set is an intset while its members are integers,
//! random picks are O(1) a member (never a copy of the set).
//!
//! Keys `__presence__:C` are read-only views of channel C's presence (its
//! user ids): reads see them as sets, writes get [`PRESENCE_READ_ONLY`].

use bytes::Bytes;

use super::DataError;
use crate::hub::keyspace::{SetValue, Value};
use crate::hub::presence::presence_channel;
use crate::hub::{Db, Hub};

/// The error a write to a presence view gets.
pub const PRESENCE_READ_ONLY: &str =
    "ERR __presence__ keys are read-only: Herald maintains them from subscriptions";

/// Which random members to pick (SRANDMEMBER, ZRANDMEMBER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomPick {
    /// One member (no count given).
    One,
    /// Up to this many distinct members (a count ≥ 0).
    Distinct(usize),
    /// Exactly this many members, repeats allowed (a negative count).
    Repeats(u64),
}

/// A multi-set operation: SUNION, SINTER, SDIFF and their STORE forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Union,
    Inter,
    Diff,
}

/// A cheap pseudo-random index below `n` (SPOP/SRANDMEMBER need no
/// cryptography).
pub fn rand_index(n: usize) -> usize {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(0x9E37_79B9_7F4A_7C15 ^ crate::hub::now_ms()));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % n.max(1) as u64) as usize
    })
}

/// Picks members of a collection of `len` (> 0) members by position: `at(i)`
/// is the member at position `i`, `all()` every member in reply order (a
/// count at least `len` answers them all). Distinct picks use Floyd's
/// sampling, so they cost O(count), whatever `len`.
pub fn random_picks<T>(
    len: usize,
    pick: RandomPick,
    at: impl Fn(usize) -> Option<T>,
    all: impl FnOnce() -> Vec<T>,
) -> Vec<T> {
    match pick {
        RandomPick::One => at(rand_index(len)).into_iter().collect(),
        RandomPick::Repeats(n) => (0..n).filter_map(|_| at(rand_index(len))).collect(),
        RandomPick::Distinct(n) if n >= len => all(),
        RandomPick::Distinct(n) => {
            let mut chosen = std::collections::HashSet::with_capacity(n);
            let mut out = Vec::with_capacity(n);
            for j in len - n..len {
                let t = rand_index(j + 1);
                let i = if chosen.insert(t) {
                    t
                } else {
                    chosen.insert(j);
                    j
                };
                out.extend(at(i));
            }
            out
        }
    }
}

/// `Err` when any of `keys` is a presence view (written only by Herald).
fn refuse_presence(keys: &[&[u8]]) -> Result<(), DataError> {
    if keys.iter().any(|k| presence_channel(k).is_some()) {
        return Err(DataError::Other(PRESENCE_READ_ONLY.into()));
    }
    Ok(())
}

/// The presence view `__presence__:C` names, if `key` is one (its users).
fn presence_view(hub: &Hub, key: &[u8]) -> Result<Option<SetValue>, DataError> {
    let Some(ch) = presence_channel(key) else {
        return Ok(None);
    };
    let users = hub.presence_users(ch)?;
    Ok(Some(SetValue::from_members(
        users.into_iter().map(Bytes::from),
    )))
}

/// Runs `f` on the set at `key` (a presence view for `__presence__:C`)
/// without copying it: a membership test on a million-member set must not
/// cost a million-member copy while the keyspace is locked.
fn with_set<R>(
    hub: &Hub,
    key: &[u8],
    f: impl FnOnce(Option<&SetValue>) -> R,
) -> Result<R, DataError> {
    if let Some(view) = presence_view(hub, key)? {
        return Ok(f((!view.is_empty()).then_some(&view)));
    }
    let mut db = hub.keyspace.lock();
    let s = db.set(key)?;
    Ok(f(s.map(|s| &*s)))
}

/// Removes `key` if its set became empty, as Redis deletes empty sets.
fn drop_if_empty(db: &mut Db, key: &[u8]) {
    if db.set(key).ok().flatten().is_some_and(|s| s.is_empty()) {
        db.remove(key);
    }
}

impl Hub {
    /// SADD: adds `members` to the set at `key` (created if absent); how
    /// many were new.
    pub fn sadd(&self, key: &Bytes, members: &[Bytes]) -> Result<usize, DataError> {
        refuse_presence(&[key])?;
        let mut db = self.keyspace.lock();
        Ok(match db.set(key)? {
            Some(s) => members.iter().filter(|m| s.insert((*m).clone())).count(),
            None => {
                let s = SetValue::from_members(members.iter().cloned());
                let n = s.len();
                db.insert(key.clone(), Value::Set(Box::new(s)));
                n
            }
        })
    }

    /// SREM: removes `members`; how many were there. An emptied set goes.
    pub fn srem(&self, key: &Bytes, members: &[Bytes]) -> Result<usize, DataError> {
        refuse_presence(&[key])?;
        let mut db = self.keyspace.lock();
        let n = match db.set(key)? {
            None => 0,
            Some(s) => members.iter().filter(|m| s.remove(m)).count(),
        };
        drop_if_empty(&mut db, key);
        Ok(n)
    }

    /// SMEMBERS: every member, in Redis's order (ascending for an intset).
    pub fn smembers(&self, key: &[u8]) -> Result<Vec<Bytes>, DataError> {
        with_set(self, key, |s| s.map(|s| s.members()).unwrap_or_default())
    }

    /// SISMEMBER.
    pub fn sismember(&self, key: &[u8], member: &[u8]) -> Result<bool, DataError> {
        with_set(self, key, |s| s.is_some_and(|s| s.contains(member)))
    }

    /// SMISMEMBER: one answer per member, in order.
    pub fn smismember(&self, key: &[u8], members: &[Bytes]) -> Result<Vec<bool>, DataError> {
        with_set(self, key, |s| {
            members
                .iter()
                .map(|m| s.is_some_and(|s| s.contains(m)))
                .collect()
        })
    }

    /// SCARD: the number of members (0: no such set).
    pub fn scard(&self, key: &[u8]) -> Result<usize, DataError> {
        with_set(self, key, |s| s.map_or(0, |s| s.len()))
    }

    /// SPOP: removes and returns up to `count` random members (one when
    /// `None`). A count covering the whole set returns it in Redis's order
    /// (ascending for an intset), as Redis does; the set then goes.
    pub fn spop(&self, key: &Bytes, count: Option<usize>) -> Result<Vec<Bytes>, DataError> {
        refuse_presence(&[key])?;
        let mut db = self.keyspace.lock();
        let popped = match db.set(key)? {
            None => Vec::new(),
            Some(s) => {
                let want = count.unwrap_or(1).min(s.len());
                if count.is_some() && want == s.len() {
                    let all = s.members();
                    for m in &all {
                        s.remove(m);
                    }
                    all
                } else {
                    let mut out = Vec::with_capacity(want);
                    for _ in 0..want {
                        let i = rand_index(s.len());
                        out.extend(s.swap_remove_index(i));
                    }
                    out
                }
            }
        };
        drop_if_empty(&mut db, key);
        Ok(popped)
    }

    /// SRANDMEMBER: random members, picked by index while the keyspace is
    /// locked (O(1) a member, never a copy of the set).
    pub fn srandmember(&self, key: &[u8], pick: RandomPick) -> Result<Vec<Bytes>, DataError> {
        with_set(self, key, |s| {
            let Some(s) = s.filter(|s| !s.is_empty()) else {
                return Vec::new();
            };
            random_picks(s.len(), pick, |i| s.get_index(i).cloned(), || s.members())
        })
    }

    /// SMOVE: moves `member` from `src` to `dst`; false when `src` lacks it.
    /// Both keys are type-checked first, as Redis does.
    pub fn smove(&self, src: &Bytes, dst: &Bytes, member: &Bytes) -> Result<bool, DataError> {
        refuse_presence(&[src, dst])?;
        let mut db = self.keyspace.lock();
        let src_has = db.set(src)?.is_some_and(|s| s.contains(member));
        db.set(dst)?;
        if !src_has {
            return Ok(false);
        }
        if src != dst {
            if let Ok(Some(s)) = db.set(src) {
                s.remove(member);
            }
            match db.set(dst) {
                Ok(Some(d)) => {
                    d.insert(member.clone());
                }
                _ => db.insert(
                    dst.clone(),
                    Value::Set(Box::new(SetValue::from_members([member.clone()]))),
                ),
            }
            drop_if_empty(&mut db, src);
        }
        Ok(true)
    }

    /// SUNION, SINTER, SDIFF of `keys`.
    pub fn set_combine(&self, op: SetOp, keys: &[Bytes]) -> Result<Vec<Bytes>, DataError> {
        let mut db = self.keyspace.lock();
        combine(self, &mut db, keys, op, 0)
    }

    /// SUNIONSTORE, SINTERSTORE, SDIFFSTORE: stores the result at `dst`
    /// (an empty one deletes it); its size.
    pub fn set_store(&self, op: SetOp, dst: &Bytes, keys: &[Bytes]) -> Result<usize, DataError> {
        refuse_presence(&[dst])?;
        let mut db = self.keyspace.lock();
        let members = combine(self, &mut db, keys, op, 0)?;
        let n = members.len();
        if n == 0 {
            db.remove(dst);
        } else {
            db.insert(
                dst.clone(),
                Value::Set(Box::new(SetValue::from_members(members))),
            );
        }
        Ok(n)
    }

    /// SINTERCARD: the size of the intersection, counting at most `limit`
    /// members (0: no limit).
    pub fn sintercard(&self, keys: &[Bytes], limit: usize) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let n = combine(self, &mut db, keys, SetOp::Inter, limit)?.len();
        Ok(if limit > 0 { n.min(limit) } else { n })
    }

    /// One SSCAN page from `cursor` (0 starts), about `count` members, and
    /// the next cursor (0: done); `pattern` filters the page. Small (intset)
    /// sets come whole in one reply, as Redis sends them; larger ones page
    /// through the set's internal order (see `SetValue::scan`), O(count) a
    /// page. The pattern is matched after the keyspace is unlocked.
    pub fn sscan(
        &self,
        key: &[u8],
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
    ) -> Result<(u64, Vec<Bytes>), DataError> {
        let (next, page) = with_set(self, key, |s| match s {
            None => (0, Vec::new()),
            Some(s) if s.is_intset() || s.len() <= count => (0, s.members()),
            Some(s) => s.scan(cursor, count),
        })?;
        let Some(glob) = pattern.map(crate::hub::glob::Glob::new) else {
            return Ok((next, page));
        };
        Ok((next, page.into_iter().filter(|m| glob.matches(m)).collect()))
    }
}

/// SUNION, SINTER, SDIFF of `keys` (SINTER stops after `limit` members when
/// it is above 0). Stored sets are borrowed, never copied: an intersection
/// walks the smallest set and probes the others.
fn combine(
    hub: &Hub,
    db: &mut Db,
    keys: &[Bytes],
    op: SetOp,
    limit: usize,
) -> Result<Vec<Bytes>, DataError> {
    // Presence views are built (one channel's users); stored sets borrowed.
    let views: Vec<Option<SetValue>> = keys
        .iter()
        .map(|k| presence_view(hub, k))
        .collect::<Result<_, _>>()?;
    let stored = db.sets_for_read(keys);
    let mut sets: Vec<Option<&SetValue>> = Vec::with_capacity(keys.len());
    for (view, s) in views.iter().zip(stored) {
        sets.push(match view {
            Some(v) => (!v.is_empty()).then_some(v),
            None => s?,
        });
    }
    let limit = if limit == 0 { usize::MAX } else { limit };
    Ok(match op {
        SetOp::Union => {
            let mut all = SetValue::new();
            for s in sets.iter().flatten() {
                for m in s.iter() {
                    if !all.contains(m) {
                        all.insert(m.clone());
                    }
                }
            }
            all.members()
        }
        SetOp::Inter => {
            if sets.iter().any(|s| s.is_none()) {
                return Ok(Vec::new());
            }
            let sets: Vec<&SetValue> = sets.into_iter().flatten().collect();
            let Some(smallest) = sets.iter().min_by_key(|s| s.len()) else {
                return Ok(Vec::new());
            };
            SetValue::from_members(
                smallest
                    .iter()
                    .filter(|m| sets.iter().all(|s| s.contains(m)))
                    .take(limit)
                    .cloned(),
            )
            .members()
        }
        SetOp::Diff => {
            let Some(Some(first)) = sets.first() else {
                return Ok(Vec::new());
            };
            let rest: Vec<&SetValue> = sets[1..].iter().flatten().copied().collect();
            SetValue::from_members(
                first
                    .iter()
                    .filter(|m| rest.iter().all(|s| !s.contains(m)))
                    .cloned(),
            )
            .members()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::presence::PresenceEntry;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn bs(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| b(s)).collect()
    }

    fn sorted(mut v: Vec<Bytes>) -> Vec<Bytes> {
        v.sort();
        v
    }

    #[test]
    fn an_emptied_set_is_deleted() {
        let hub = Hub::default();
        assert_eq!(hub.sadd(&b("s"), &bs(&["a", "b", "a"])), Ok(2));
        assert_eq!(hub.sadd(&b("s"), &bs(&["b", "c"])), Ok(1));
        assert_eq!(hub.srem(&b("s"), &bs(&["a", "x"])), Ok(1));
        assert_eq!(hub.srem(&b("s"), &bs(&["b", "c"])), Ok(2));
        assert!(hub.keyspace.lock().is_empty());
        assert_eq!(hub.srem(&b("s"), &bs(&["a"])), Ok(0));
        // Popping everything deletes too.
        hub.sadd(&b("p"), &bs(&["x", "y"])).unwrap();
        assert_eq!(hub.spop(&b("p"), None).unwrap().len(), 1);
        assert_eq!(hub.spop(&b("p"), Some(5)).unwrap().len(), 1);
        assert!(hub.keyspace.lock().is_empty());
        assert_eq!(hub.spop(&b("p"), None), Ok(vec![]));
    }

    #[test]
    fn intsets_list_in_ascending_order() {
        let hub = Hub::default();
        hub.sadd(&b("i"), &bs(&["10", "-3", "2"])).unwrap();
        assert_eq!(hub.smembers(b"i"), Ok(bs(&["-3", "2", "10"])));
        // A whole-set SPOP answers in the same order.
        assert_eq!(hub.spop(&b("i"), Some(3)), Ok(bs(&["-3", "2", "10"])));
        // A non-integer member ends the intset.
        hub.sadd(&b("m"), &bs(&["3", "x", "1"])).unwrap();
        assert_eq!(sorted(hub.smembers(b"m").unwrap()), bs(&["1", "3", "x"]));
        assert!(!hub.keyspace.lock().set(b"m").unwrap().unwrap().is_intset());
    }

    #[test]
    fn random_picks_respect_their_count() {
        let hub = Hub::default();
        let members: Vec<Bytes> = (0..50).map(|i| b(&format!("m{i}"))).collect();
        hub.sadd(&b("s"), &members).unwrap();
        let one = hub.srandmember(b"s", RandomPick::One).unwrap();
        assert_eq!(one.len(), 1);
        let d = hub.srandmember(b"s", RandomPick::Distinct(20)).unwrap();
        assert_eq!(d.len(), 20);
        assert_eq!(
            d.iter().collect::<std::collections::HashSet<_>>().len(),
            20,
            "distinct picks repeat nothing"
        );
        let all = hub.srandmember(b"s", RandomPick::Distinct(99)).unwrap();
        assert_eq!(sorted(all), sorted(members.clone()));
        let r = hub.srandmember(b"s", RandomPick::Repeats(200)).unwrap();
        assert_eq!(r.len(), 200);
        assert!(r.iter().all(|m| members.contains(m)));
        assert_eq!(hub.scard(b"s"), Ok(50), "SRANDMEMBER removes nothing");
        assert_eq!(hub.srandmember(b"none", RandomPick::Repeats(3)), Ok(vec![]));
    }

    #[test]
    fn wrong_types_are_refused_and_untouched() {
        let hub = Hub::default();
        hub.keyspace
            .lock()
            .insert(b("z"), Value::ZSet(Box::default()));
        hub.sadd(&b("s"), &bs(&["a"])).unwrap();
        assert_eq!(hub.sadd(&b("z"), &bs(&["a"])), Err(DataError::WrongType));
        assert_eq!(hub.sismember(b"z", b"a"), Err(DataError::WrongType));
        assert_eq!(
            hub.set_combine(SetOp::Union, &bs(&["s", "z"])),
            Err(DataError::WrongType)
        );
        // SMOVE checks the destination's type before moving anything.
        assert_eq!(
            hub.smove(&b("s"), &b("z"), &b("a")),
            Err(DataError::WrongType)
        );
        assert_eq!(hub.smembers(b"s"), Ok(bs(&["a"])));
    }

    #[test]
    fn smove_moves_once_and_deletes_an_emptied_source() {
        let hub = Hub::default();
        hub.sadd(&b("a"), &bs(&["x"])).unwrap();
        assert_eq!(hub.smove(&b("a"), &b("a"), &b("x")), Ok(true));
        assert_eq!(hub.smembers(b"a"), Ok(bs(&["x"])));
        assert_eq!(hub.smove(&b("a"), &b("b"), &b("y")), Ok(false));
        assert_eq!(hub.smove(&b("a"), &b("b"), &b("x")), Ok(true));
        assert_eq!(hub.scard(b"a"), Ok(0));
        assert_eq!(hub.smembers(b"b"), Ok(bs(&["x"])));
        assert_eq!(hub.keyspace.lock().len(), 1);
    }

    #[test]
    fn combinations_and_stores() {
        let hub = Hub::default();
        hub.sadd(&b("a"), &bs(&["1", "2", "3"])).unwrap();
        hub.sadd(&b("b"), &bs(&["2", "3", "4"])).unwrap();
        let keys = bs(&["a", "b", "missing"]);
        assert_eq!(
            hub.set_combine(SetOp::Union, &keys),
            Ok(bs(&["1", "2", "3", "4"]))
        );
        assert_eq!(hub.set_combine(SetOp::Inter, &keys), Ok(vec![]));
        assert_eq!(
            hub.set_combine(SetOp::Inter, &keys[..2]),
            Ok(bs(&["2", "3"]))
        );
        assert_eq!(hub.set_combine(SetOp::Diff, &keys), Ok(bs(&["1"])));
        assert_eq!(hub.sintercard(&keys[..2], 0), Ok(2));
        assert_eq!(hub.sintercard(&keys[..2], 1), Ok(1));
        assert_eq!(hub.set_store(SetOp::Union, &b("d"), &keys), Ok(4));
        assert_eq!(hub.scard(b"d"), Ok(4));
        // An empty result deletes the destination.
        assert_eq!(hub.set_store(SetOp::Inter, &b("d"), &keys), Ok(0));
        assert!(!hub.keyspace.lock().exists(b"d"));
    }

    #[test]
    fn sscan_pages_large_sets_and_filters() {
        let hub = Hub::default();
        let members: Vec<Bytes> = (0..30).map(|i| b(&format!("k{i}"))).collect();
        hub.sadd(&b("s"), &members).unwrap();
        let (mut cursor, mut seen) = (0, Vec::new());
        loop {
            let (next, page) = hub.sscan(b"s", cursor, 7, None).unwrap();
            assert!(page.len() <= 7);
            seen.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(sorted(seen), sorted(members));
        let (next, page) = hub.sscan(b"s", 0, 100, Some(b"k1*")).unwrap();
        assert_eq!(next, 0);
        assert_eq!(page.len(), 11);
        // An intset comes whole, whatever the count.
        hub.sadd(&b("i"), &bs(&["3", "1", "2"])).unwrap();
        assert_eq!(hub.sscan(b"i", 0, 1, None), Ok((0, bs(&["1", "2", "3"]))));
    }

    #[test]
    fn presence_views_read_as_sets_and_refuse_writes() {
        let hub = Hub::default();
        for (client, user) in [(1, "ann"), (2, "bob"), (3, "ann")] {
            hub.engine
                .presence
                .join(
                    &b("room"),
                    PresenceEntry {
                        client,
                        user: user.into(),
                        info: None,
                        joined: 0,
                    },
                )
                .wait()
                .unwrap();
        }
        let key = b("__presence__:room");
        assert_eq!(hub.scard(&key), Ok(2));
        assert_eq!(hub.sismember(&key, b"bob"), Ok(true));
        assert_eq!(sorted(hub.smembers(&key).unwrap()), bs(&["ann", "bob"]));
        hub.sadd(&b("s"), &bs(&["bob", "cat"])).unwrap();
        assert_eq!(
            hub.set_combine(SetOp::Inter, &[key.clone(), b("s")]),
            Ok(bs(&["bob"]))
        );
        assert_eq!(hub.scard(b"__presence__:empty"), Ok(0));
        let refused = Err(DataError::Other(PRESENCE_READ_ONLY.into()));
        assert_eq!(hub.sadd(&key, &bs(&["x"])), refused.clone());
        assert_eq!(hub.srem(&key, &bs(&["ann"])), refused.clone());
        assert_eq!(
            hub.smove(&b("s"), &key, &b("cat")),
            refused.clone().map(|_: usize| false)
        );
        assert_eq!(hub.set_store(SetOp::Union, &key, &[b("s")]), refused);
        assert_eq!(hub.scard(&key), Ok(2));
    }
}
