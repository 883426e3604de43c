//! Keyspace operations: lists (LPUSH … LMOVE), with Redis 7.0's rules: an
//! emptied list is deleted, negative indexes count from the tail, and a
//! push to a key that blocked pops wait on serves them once the command
//! (or its EXEC) is over (`data::list_waits`). The list itself is
//! `hub::list`.
//!
//! Some commands look the key up before they parse an argument (LINDEX,
//! LSET: a missing key answers before a bad index does); those take the
//! argument as parsed, `None` when it is not an integer, and answer in
//! Redis's order.
//!
//! A presence view (`__presence__:C`) reads as a set: list reads of one
//! get WRONGTYPE while it exists (writes never reach here).

use bytes::Bytes;

use super::list_waits;
use super::strings::NOT_INTEGER;
use super::DataError;
use crate::hub::keyspace::{Entry, Value, WrongType};
use crate::hub::list::{End, ListValue};
use crate::hub::{Db, Hub};

pub const NO_SUCH_KEY: &str = "ERR no such key";
pub const INDEX_OUT_OF_RANGE: &str = "ERR index out of range";

/// LPOS's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lpos {
    /// RANK: the first match to report (negative: counted from the tail);
    /// never 0. `i64::MIN` behaves as in Redis (its negation overflows:
    /// every match from the tail).
    pub rank: i64,
    /// COUNT: how many matches to report (0: all); `None` for a single
    /// index.
    pub count: Option<i64>,
    /// MAXLEN: elements compared at most (0: all).
    pub maxlen: i64,
}

impl Default for Lpos {
    fn default() -> Self {
        Lpos {
            rank: 1,
            count: None,
            maxlen: 0,
        }
    }
}

/// A blocking command's timeout in seconds (fractions allowed), read as
/// Redis 7.0 reads it: milliseconds rounded up, 0 for none; its errors.
pub fn blocking_timeout(arg: &[u8]) -> Result<u64, DataError> {
    let secs = super::longdouble::parse(arg).ok_or(DataError::Other(
        "ERR timeout is not a float or out of range".into(),
    ))?;
    u64::try_from(super::longdouble::mul_ceil_i64(secs, 1000))
        .map_err(|_| DataError::Other("ERR timeout is negative".into()))
}

/// The list at `key`: `Ok(None)` when absent, WRONGTYPE for another type.
pub(super) fn list_mut<'a>(
    db: &'a mut Db,
    key: &[u8],
) -> Result<Option<&'a mut ListValue>, WrongType> {
    match db.get_mut(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::List(l),
            ..
        }) => Ok(Some(l)),
        Some(_) => Err(WrongType),
    }
}

/// Pushes `elems` at `side` of the list at `key`, creating it when
/// `create`; the new length (`None`: absent and not created). Waiters on
/// the key are noted for service.
fn push_all(
    db: &mut Db,
    key: &Bytes,
    side: End,
    elems: &[Bytes],
    create: bool,
) -> Result<Option<usize>, WrongType> {
    if list_mut(db, key)?.is_none() {
        if !create {
            return Ok(None);
        }
        db.insert(key.clone(), Value::List(ListValue::default()));
    }
    let Some(l) = list_mut(db, key)? else {
        return Ok(None);
    };
    for e in elems {
        l.push(side, e);
    }
    let n = l.len();
    db.touch(key);
    db.list_waits.pushed(key);
    Ok(Some(n))
}

/// Notes a change to the list at `key`: an emptied list goes, as Redis
/// never keeps an empty key.
fn changed(db: &mut Db, key: &[u8], now_empty: bool) {
    if now_empty {
        db.remove(key);
    } else {
        db.touch(key);
    }
}

/// Whether `key` holds a list with elements.
pub(super) fn has_elements(db: &mut Db, key: &[u8]) -> bool {
    matches!(list_mut(db, key), Ok(Some(l)) if !l.is_empty())
}

/// Pops one element at `side` of the list at `key` (if any).
pub(super) fn pop_one(db: &mut Db, key: &[u8], side: End) -> Option<Bytes> {
    let l = list_mut(db, key).ok()??;
    let v = l.pop(side)?;
    let empty = l.is_empty();
    changed(db, key, empty);
    Some(v)
}

/// LMOVE's step: pops at `from` of `src` and pushes at `to` of `dst`; the
/// element (`None`: `src` is empty). WRONGTYPE, and nothing moved, when
/// either is another type. A list moved onto itself keeps its key (and
/// deadline) even with one element.
pub(super) fn move_one(
    db: &mut Db,
    src: &Bytes,
    dst: &Bytes,
    from: End,
    to: End,
) -> Result<Option<Bytes>, WrongType> {
    if list_mut(db, src)?.is_none_or(|l| l.is_empty()) {
        return Ok(None);
    }
    if src == dst {
        let Some(l) = list_mut(db, src)? else {
            return Ok(None);
        };
        let v = l.pop(from);
        if let Some(v) = &v {
            l.push(to, v);
        }
        db.touch(src);
        return Ok(v);
    }
    list_mut(db, dst)?;
    let Some(v) = pop_one(db, src, from) else {
        return Ok(None);
    };
    push_all(db, dst, to, std::slice::from_ref(&v), true)?;
    Ok(Some(v))
}

/// Redis's conversion of an index (negative: from the tail) into a
/// position, `None` when outside the list.
fn position(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 {
        // -1 is the last element; `index + 1` cannot overflow.
        len.checked_sub(1 + (index + 1).unsigned_abs() as usize)?
    } else {
        index as usize
    };
    (i < len).then_some(i)
}

/// LRANGE's and LTRIM's bounds: the positions `start..stop` they cover.
fn span(start: i64, end: i64, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    let start = if start < 0 { start + len } else { start }.max(0);
    let end = if end < 0 { end + len } else { end };
    if start > end || start >= len {
        return 0..0;
    }
    start as usize..(end.min(len - 1) + 1) as usize
}

impl Hub {
    /// Runs `f` on the list at `key` (`None`: no such key) while the
    /// keyspace is locked.
    fn with_list<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&ListValue>) -> R,
    ) -> Result<R, DataError> {
        if self.presence_view_exists(key) {
            return Err(DataError::WrongType);
        }
        let mut db = self.keyspace.lock();
        let l = list_mut(&mut db, key)?;
        Ok(f(l.map(|l| &*l)))
    }

    /// LPUSH, RPUSH (`only_existing`: LPUSHX, RPUSHX, which answer 0 for a
    /// missing key): the length after the push. Blocked pops on the key
    /// are served afterwards.
    pub fn list_push(
        &self,
        key: &Bytes,
        side: End,
        elems: &[Bytes],
        only_existing: bool,
    ) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let n = push_all(&mut db, key, side, elems, !only_existing)?;
        list_waits::serve_now(&mut db);
        Ok(n.unwrap_or(0))
    }

    /// LPOP, RPOP: with no count, at most one element; with a count, up to
    /// that many. `None`: no such key.
    pub fn list_pop(
        &self,
        key: &Bytes,
        side: End,
        count: Option<usize>,
    ) -> Result<Option<Vec<Bytes>>, DataError> {
        let mut db = self.keyspace.lock();
        let Some(l) = list_mut(&mut db, key)? else {
            return Ok(None);
        };
        let n = count.unwrap_or(1).min(l.len());
        let out: Vec<Bytes> = (0..n).filter_map(|_| l.pop(side)).collect();
        let empty = l.is_empty();
        if n > 0 {
            changed(&mut db, key, empty);
        }
        Ok(Some(out))
    }

    /// LLEN.
    pub fn llen(&self, key: &[u8]) -> Result<usize, DataError> {
        self.with_list(key, |l| l.map_or(0, |l| l.len()))
    }

    /// LRANGE, with Redis's index rules.
    pub fn lrange(&self, key: &[u8], start: i64, end: i64) -> Result<Vec<Bytes>, DataError> {
        self.with_list(key, |l| {
            let Some(l) = l else {
                return Vec::new();
            };
            let r = span(start, end, l.len());
            l.iter_from(r.start)
                .take(r.len())
                .map(Bytes::copy_from_slice)
                .collect()
        })
    }

    /// LINDEX: the element, `None` outside the list or for a missing key.
    /// `index` is `None` when it is not an integer: an error, once the key
    /// was found to be a list.
    pub fn lindex(&self, key: &[u8], index: Option<i64>) -> Result<Option<Bytes>, DataError> {
        self.with_list(key, |l| {
            let Some(l) = l else {
                return Ok(None);
            };
            let index = index.ok_or(DataError::Other(NOT_INTEGER.into()))?;
            Ok(position(index, l.len()).and_then(|i| l.get(i).map(Bytes::copy_from_slice)))
        })?
    }

    /// LSET (`index` as for [`Hub::lindex`]).
    pub fn lset(&self, key: &Bytes, index: Option<i64>, elem: &[u8]) -> Result<(), DataError> {
        let mut db = self.keyspace.lock();
        let Some(l) = list_mut(&mut db, key)? else {
            return Err(DataError::Other(NO_SUCH_KEY.into()));
        };
        let index = index.ok_or(DataError::Other(NOT_INTEGER.into()))?;
        let i = position(index, l.len()).ok_or(DataError::Other(INDEX_OUT_OF_RANGE.into()))?;
        l.set(i, elem);
        db.touch(key);
        Ok(())
    }

    /// LINSERT: the new length, -1 when `pivot` is not there, 0 for a
    /// missing key.
    pub fn linsert(
        &self,
        key: &Bytes,
        before: bool,
        pivot: &[u8],
        elem: &[u8],
    ) -> Result<i64, DataError> {
        let mut db = self.keyspace.lock();
        let Some(l) = list_mut(&mut db, key)? else {
            return Ok(0);
        };
        let Some(at) = l.iter().position(|e| e == pivot) else {
            return Ok(-1);
        };
        l.insert(if before { at } else { at + 1 }, elem);
        let n = l.len();
        db.touch(key);
        db.list_waits.pushed(key);
        list_waits::serve_now(&mut db);
        Ok(n as i64)
    }

    /// LREM: how many elements equal to `elem` went (see
    /// [`ListValue::remove_matching`] for `count`).
    pub fn lrem(&self, key: &Bytes, count: i64, elem: &[u8]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let Some(l) = list_mut(&mut db, key)? else {
            return Ok(0);
        };
        let n = l.remove_matching(elem, count);
        let empty = l.is_empty();
        if n > 0 {
            changed(&mut db, key, empty);
        }
        Ok(n)
    }

    /// LTRIM, with LRANGE's index rules; an empty result deletes the key.
    pub fn ltrim(&self, key: &Bytes, start: i64, end: i64) -> Result<(), DataError> {
        let mut db = self.keyspace.lock();
        let Some(l) = list_mut(&mut db, key)? else {
            return Ok(());
        };
        let r = span(start, end, l.len());
        let len = l.len();
        l.keep_range(r.start, r.end);
        let empty = l.is_empty();
        if r.len() != len {
            changed(&mut db, key, empty);
        }
        Ok(())
    }

    /// LPOS: the positions (from the head) of the matches asked for: at
    /// most one without COUNT. An empty answer: none (or no such key).
    pub fn lpos(&self, key: &[u8], elem: &[u8], opts: Lpos) -> Result<Vec<usize>, DataError> {
        self.with_list(key, |l| {
            let Some(l) = l else {
                return Vec::new();
            };
            let len = l.len();
            let (rank, from_tail) = if opts.rank < 0 {
                (opts.rank.wrapping_neg(), true)
            } else {
                (opts.rank, false)
            };
            let limit = match opts.maxlen {
                0 => len,
                m => (m as usize).min(len),
            };
            let elems: Box<dyn Iterator<Item = &[u8]>> = if from_tail {
                Box::new(l.iter().rev())
            } else {
                Box::new(l.iter())
            };
            let mut out = Vec::new();
            let mut matches: i64 = 0;
            for (i, e) in elems.take(limit).enumerate() {
                if e != elem {
                    continue;
                }
                matches += 1;
                if matches < rank {
                    continue;
                }
                out.push(if from_tail { len - 1 - i } else { i });
                match opts.count {
                    None => break,
                    Some(c) if c != 0 && matches.wrapping_sub(rank).wrapping_add(1) >= c => break,
                    Some(_) => {}
                }
            }
            out
        })
    }

    /// LMOVE, RPOPLPUSH: the element moved, `None` when `src` is empty.
    /// Blocked pops on `dst` are served afterwards.
    pub fn lmove(
        &self,
        src: &Bytes,
        dst: &Bytes,
        from: End,
        to: End,
    ) -> Result<Option<Bytes>, DataError> {
        let mut db = self.keyspace.lock();
        let v = move_one(&mut db, src, dst, from, to)?;
        list_waits::serve_now(&mut db);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn indexes_as_redis_reads_them() {
        assert_eq!(position(0, 3), Some(0));
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(-3, 3), Some(0));
        assert_eq!(position(-4, 3), None);
        assert_eq!(position(3, 3), None);
        assert_eq!(position(i64::MIN, 3), None);
        assert_eq!(position(i64::MAX, 3), None);
        assert_eq!(span(0, -1, 3), 0..3);
        assert_eq!(span(-100, 100, 3), 0..3);
        assert_eq!(span(2, 1, 3), 0..0);
        assert_eq!(span(3, 5, 3), 0..0);
        assert_eq!(span(i64::MIN, i64::MAX, 3), 0..3);
        assert_eq!(span(1, -2, 3), 1..2);
    }

    #[test]
    fn a_list_lives_while_it_has_elements() {
        let h = Hub::default();
        let k = b("l");
        assert_eq!(h.list_push(&k, End::Right, &[b("a"), b("b")], true), Ok(0));
        assert_eq!(h.list_push(&k, End::Right, &[b("a"), b("b")], false), Ok(2));
        assert_eq!(h.key_type(b"l"), "list");
        assert_eq!(h.lrange(b"l", 0, -1), Ok(vec![b("a"), b("b")]));
        assert_eq!(
            h.list_pop(&k, End::Left, Some(5)),
            Ok(Some(vec![b("a"), b("b")]))
        );
        assert_eq!(h.key_type(b"l"), "none");
        assert_eq!(h.list_pop(&k, End::Left, None), Ok(None));
        h.sadd(&b("s"), &[b("m")]).unwrap();
        assert_eq!(h.llen(b"s"), Err(DataError::WrongType));
        assert_eq!(
            h.lmove(&b("s"), &k, End::Left, End::Left),
            Err(DataError::WrongType)
        );
    }

    #[test]
    fn a_list_moved_onto_itself_keeps_its_deadline() {
        let h = Hub::default();
        let k = b("l");
        h.list_push(&k, End::Right, &[b("a")], false).unwrap();
        h.expire(
            b"l",
            crate::hub::now_ms() as i64 + 100_000,
            Default::default(),
        );
        assert_eq!(h.lmove(&k, &k, End::Left, End::Right), Ok(Some(b("a"))));
        assert!(h.keyspace.lock().get(b"l").unwrap().expires_at.is_some());
    }
}
