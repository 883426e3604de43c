//! Keyspace operations: hashes (HSET … HSCAN), with Redis 7.0's rules: a
//! small hash is packed in insertion order (Redis's listpack, whose order
//! replies keep), larger ones are tables (`hub::hash`); an emptied hash is
//! deleted; HINCRBYFLOAT adds in long double arithmetic as Redis does.
//!
//! A presence view (`__presence__:C`) reads as a set: hash reads of one get
//! WRONGTYPE while it exists (writes never reach here).

use bytes::Bytes;

use super::sets::{random_picks, RandomPick};
use super::strings::{checked_incr, float_incr, NOT_FLOAT};
use super::DataError;
use crate::hub::hash::HashValue;
use crate::hub::keyspace::{Entry, Value, WrongType};
use crate::hub::{Db, Hub};

pub const NOT_INTEGER_FIELD: &str = "ERR hash value is not an integer";
pub const NOT_FLOAT_FIELD: &str = "ERR hash value is not a float";
pub const INCR_NAN_OR_INFINITY: &str = "ERR value is NaN or Infinity";

/// A field and its value.
pub type FieldValue = (Bytes, Bytes);

fn hash_mut<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a mut HashValue>, WrongType> {
    match db.get_mut(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Hash(h),
            ..
        }) => Ok(Some(h)),
        Some(_) => Err(WrongType),
    }
}

/// The hash at `key`, created empty when absent (the caller stores at
/// least one field before it lets go of the lock).
fn hash_or_create<'a>(db: &'a mut Db, key: &Bytes) -> Result<&'a mut HashValue, WrongType> {
    if hash_mut(db, key)?.is_none() {
        db.insert(key.clone(), Value::Hash(HashValue::default()));
    }
    hash_mut(db, key)?.ok_or(WrongType)
}

fn copy(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl Hub {
    /// Runs `f` on the hash at `key` (`None`: no such key) while the
    /// keyspace is locked.
    fn with_hash<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&HashValue>) -> R,
    ) -> Result<R, DataError> {
        if self.presence_view_exists(key) {
            return Err(DataError::WrongType);
        }
        let mut db = self.keyspace.lock();
        let h = hash_mut(&mut db, key)?;
        Ok(f(h.map(|h| &*h)))
    }

    /// HSET (and HMSET): `pairs` is `field value field value …`; how many
    /// fields were new.
    pub fn hset(&self, key: &Bytes, pairs: &[Bytes]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let h = hash_or_create(&mut db, key)?;
        h.prepare_for(pairs.iter().map(|a| &a[..]));
        let new = pairs
            .chunks_exact(2)
            .filter(|fv| h.insert(&fv[0], &fv[1]))
            .count();
        db.touch(key);
        Ok(new)
    }

    /// HSETNX: sets `field` only if it is new; whether it did.
    pub fn hsetnx(&self, key: &Bytes, field: &[u8], value: &[u8]) -> Result<bool, DataError> {
        let mut db = self.keyspace.lock();
        let h = hash_or_create(&mut db, key)?;
        h.prepare_for([field, value]);
        if h.contains(field) {
            return Ok(false);
        }
        h.insert(field, value);
        db.touch(key);
        Ok(true)
    }

    /// HGET.
    pub fn hget(&self, key: &[u8], field: &[u8]) -> Result<Option<Bytes>, DataError> {
        self.with_hash(key, |h| h.and_then(|h| h.get(field)).map(copy))
    }

    /// HMGET: one answer per field, in order.
    pub fn hmget(&self, key: &[u8], fields: &[Bytes]) -> Result<Vec<Option<Bytes>>, DataError> {
        self.with_hash(key, |h| {
            fields
                .iter()
                .map(|f| h.and_then(|h| h.get(f)).map(copy))
                .collect()
        })
    }

    /// HGETALL: every pair, in Redis's order for a packed hash.
    pub fn hgetall(&self, key: &[u8]) -> Result<Vec<FieldValue>, DataError> {
        self.with_hash(key, |h| h.map(|h| h.to_pairs()).unwrap_or_default())
    }

    /// HKEYS.
    pub fn hkeys(&self, key: &[u8]) -> Result<Vec<Bytes>, DataError> {
        self.with_hash(key, |h| {
            h.map(|h| h.pairs().into_iter().map(|(f, _)| copy(f)).collect())
                .unwrap_or_default()
        })
    }

    /// HVALS.
    pub fn hvals(&self, key: &[u8]) -> Result<Vec<Bytes>, DataError> {
        self.with_hash(key, |h| {
            h.map(|h| h.pairs().into_iter().map(|(_, v)| copy(v)).collect())
                .unwrap_or_default()
        })
    }

    /// HDEL: how many of `fields` were there. An emptied hash goes.
    pub fn hdel(&self, key: &Bytes, fields: &[Bytes]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let Some(h) = hash_mut(&mut db, key)? else {
            return Ok(0);
        };
        let n = fields.iter().filter(|f| h.remove(f)).count();
        let empty = h.is_empty();
        if empty {
            db.remove(key);
        } else if n > 0 {
            db.touch(key);
        }
        Ok(n)
    }

    /// HEXISTS.
    pub fn hexists(&self, key: &[u8], field: &[u8]) -> Result<bool, DataError> {
        self.with_hash(key, |h| h.is_some_and(|h| h.contains(field)))
    }

    /// HLEN.
    pub fn hlen(&self, key: &[u8]) -> Result<usize, DataError> {
        self.with_hash(key, |h| h.map_or(0, |h| h.len()))
    }

    /// HSTRLEN: the value's length (0: no such field).
    pub fn hstrlen(&self, key: &[u8], field: &[u8]) -> Result<usize, DataError> {
        self.with_hash(key, |h| h.and_then(|h| h.get(field)).map_or(0, |v| v.len()))
    }

    /// HINCRBY: the field's new value.
    pub fn hincrby(&self, key: &Bytes, field: &[u8], delta: i64) -> Result<i64, DataError> {
        let mut db = self.keyspace.lock();
        let h = hash_or_create(&mut db, key)?;
        let old = match h.get(field) {
            None => 0,
            Some(v) => crate::resp::parse::parse_i64(v)
                .ok_or(DataError::Other(NOT_INTEGER_FIELD.into()))?,
        };
        let new = checked_incr(old, delta)?;
        h.insert(field, itoa::Buffer::new().format(new).as_bytes());
        db.touch(key);
        Ok(new)
    }

    /// HINCRBYFLOAT: the field's new value as Redis formats it. An
    /// increment that is not a finite float is refused before the key is
    /// looked at, as Redis does.
    pub fn hincrbyfloat(&self, key: &Bytes, field: &[u8], incr: &[u8]) -> Result<Bytes, DataError> {
        match super::longdouble::parse(incr) {
            None => return Err(DataError::Other(NOT_FLOAT.into())),
            Some(v) if !super::longdouble::is_finite(v) => {
                return Err(DataError::Other(INCR_NAN_OR_INFINITY.into()))
            }
            Some(_) => {}
        }
        let mut db = self.keyspace.lock();
        let h = hash_or_create(&mut db, key)?;
        let new = float_incr(h.get(field), incr, NOT_FLOAT_FIELD)?;
        h.insert(field, new.as_bytes());
        db.touch(key);
        Ok(Bytes::from(new))
    }

    /// HRANDFIELD: random pairs, picked by position while the keyspace is
    /// locked (O(1) a pick for a table; a packed hash has at most 128
    /// fields). A count covering the whole hash answers it in Redis's
    /// order. Empty: no such key.
    pub fn hrandfield(&self, key: &[u8], pick: RandomPick) -> Result<Vec<FieldValue>, DataError> {
        self.with_hash(key, |h| {
            let Some(h) = h.filter(|h| !h.is_empty()) else {
                return Vec::new();
            };
            let pair = |(f, v): (&[u8], &[u8])| (copy(f), copy(v));
            if h.is_packed() {
                let pairs = h.pairs();
                random_picks(
                    pairs.len(),
                    pick,
                    |i| pairs.get(i).copied().map(pair),
                    || pairs.iter().copied().map(pair).collect(),
                )
            } else {
                random_picks(
                    h.len(),
                    pick,
                    |i| h.table_index(i).map(pair),
                    || h.to_pairs(),
                )
            }
        })
    }

    /// One HSCAN page from `cursor` (0 starts): a packed hash (or a table
    /// no larger than `count`) whole, with cursor 0, as Redis answers a
    /// listpack; a table about `count` pairs a page (see
    /// `HashValue::scan`). `pattern` filters fields after the keyspace is
    /// unlocked.
    pub fn hscan(
        &self,
        key: &[u8],
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
    ) -> Result<(u64, Vec<FieldValue>), DataError> {
        let (next, page) = self.with_hash(key, |h| match h {
            None => (0, Vec::new()),
            Some(h) if h.is_packed() || h.len() <= count => (0, h.to_pairs()),
            Some(h) => h.scan(cursor, count),
        })?;
        let Some(glob) = pattern.map(crate::hub::glob::Glob::new) else {
            return Ok((next, page));
        };
        Ok((
            next,
            page.into_iter().filter(|(f, _)| glob.matches(f)).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn bs(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| b(s)).collect()
    }

    #[test]
    fn set_get_delete() {
        let hub = Hub::default();
        let k = b("h");
        assert_eq!(hub.hset(&k, &bs(&["a", "1", "b", "2", "a", "3"])), Ok(2));
        assert_eq!(hub.hget(&k, b"a"), Ok(Some(b("3"))));
        assert_eq!(
            hub.hgetall(&k),
            Ok(vec![(b("a"), b("3")), (b("b"), b("2"))])
        );
        assert_eq!(hub.hsetnx(&k, b"a", b"x"), Ok(false));
        assert_eq!(hub.hsetnx(&k, b"c", b"x"), Ok(true));
        assert_eq!(hub.hkeys(&k), Ok(bs(&["a", "b", "c"])));
        assert_eq!(hub.hvals(&k), Ok(bs(&["3", "2", "x"])));
        assert_eq!(
            hub.hmget(&k, &bs(&["c", "zz"])),
            Ok(vec![Some(b("x")), None])
        );
        assert_eq!(hub.hstrlen(&k, b"c"), Ok(1));
        assert_eq!(hub.hlen(&k), Ok(3));
        assert_eq!(hub.hdel(&k, &bs(&["a", "b", "c", "d"])), Ok(3));
        assert_eq!(hub.key_type(&k), "none", "an emptied hash is deleted");
        assert_eq!(hub.hdel(&k, &bs(&["a"])), Ok(0));
    }

    #[test]
    fn increments() {
        let hub = Hub::default();
        let k = b("h");
        assert_eq!(hub.hincrby(&k, b"n", 5), Ok(5));
        assert_eq!(hub.hincrby(&k, b"n", -6), Ok(-1));
        hub.hset(&k, &bs(&["s", "abc"])).unwrap();
        assert_eq!(
            hub.hincrby(&k, b"s", 1),
            Err(DataError::Other(NOT_INTEGER_FIELD.into()))
        );
        assert_eq!(
            hub.hincrbyfloat(&k, b"s", b"1"),
            Err(DataError::Other(NOT_FLOAT_FIELD.into()))
        );
        assert_eq!(
            hub.hincrbyfloat(&k, b"f", b"inf"),
            Err(DataError::Other(INCR_NAN_OR_INFINITY.into()))
        );
        assert_eq!(hub.hincrbyfloat(&k, b"f", b"1.5"), Ok(b("1.5")));
        assert_eq!(hub.hincrbyfloat(&k, b"n", b"0.25"), Ok(b("-0.75")));
        hub.sadd(&b("s"), &[b("m")]).unwrap();
        assert_eq!(hub.hincrby(&b("s"), b"n", 1), Err(DataError::WrongType));
        assert_eq!(hub.hget(b"s", b"n"), Err(DataError::WrongType));
    }

    #[test]
    fn random_fields_and_scans() {
        let hub = Hub::default();
        let k = b("h");
        let pairs: Vec<Bytes> = (0..200)
            .flat_map(|i| [b(&format!("f{i}")), b(&format!("v{i}"))])
            .collect();
        hub.hset(&k, &pairs).unwrap();
        let d = hub.hrandfield(&k, RandomPick::Distinct(50)).unwrap();
        let distinct: std::collections::HashSet<_> = d.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(distinct.len(), 50);
        assert!(d.iter().all(|(f, v)| f[1..] == v[1..]));
        assert_eq!(
            hub.hrandfield(&k, RandomPick::Repeats(500)).unwrap().len(),
            500
        );
        assert_eq!(
            hub.hrandfield(&k, RandomPick::Distinct(500)).unwrap().len(),
            200
        );
        assert_eq!(hub.hrandfield(b"none", RandomPick::One), Ok(vec![]));
        let (mut cursor, mut seen) = (0, 0);
        loop {
            let (next, page) = hub.hscan(&k, cursor, 30, None).unwrap();
            seen += page.len();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen, 200);
        let (next, page) = hub.hscan(&k, 0, 1000, Some(b"f1?")).unwrap();
        assert_eq!((next, page.len()), (0, 10));
        // A small hash answers whole, in insertion order.
        hub.hset(&b("small"), &bs(&["z", "1", "a", "2"])).unwrap();
        assert_eq!(
            hub.hscan(b"small", 0, 1, None),
            Ok((0, vec![(b("z"), b("1")), (b("a"), b("2"))]))
        );
        assert_eq!(
            hub.hrandfield(b"small", RandomPick::Distinct(5)),
            Ok(vec![(b("z"), b("1")), (b("a"), b("2"))])
        );
    }
}
