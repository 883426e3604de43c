//! Keyspace operations: strings (GET, SET and its options, GETDEL, GETEX,
//! GETSET, MGET, MSET, MSETNX, the INCR family, INCRBYFLOAT, APPEND,
//! STRLEN, GETRANGE, SETRANGE), with Redis 7.0's rules and error texts.
//!
//! A string is a [`Compact`]: up to 22 bytes inline in the keyspace's slot,
//! longer ones exactly sized, grown ones with room to grow. Values are
//! copied out for replies while the keyspace is locked, as Redis copies
//! them into its reply buffers.
//!
//! A presence view (`__presence__:C`) reads as a set: string reads of one
//! get WRONGTYPE while it exists (writes never reach here).

use bytes::Bytes;

use super::longdouble;
use super::DataError;
use crate::hub::keymap::Compact;
use crate::hub::keyspace::{Entry, Value, WrongType};
use crate::hub::{now_ms, Db, Hub};

pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NAN_OR_INFINITY: &str = "ERR increment would produce NaN or Infinity";
pub const TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// SET's NX and XX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    #[default]
    Always,
    /// NX: only when the key does not exist.
    IfAbsent,
    /// XX: only when it does.
    IfPresent,
}

/// What a write does to the key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// No option: any deadline goes (SET), or stays (GETEX).
    #[default]
    Default,
    /// KEEPTTL (SET); for GETEX, PERSIST clears with [`Expiry::Persist`].
    Keep,
    /// GETEX PERSIST.
    Persist,
    /// EX, PX, EXAT, PXAT: this deadline, ms since the epoch. One already
    /// past leaves the key expired (SET) or deletes it (GETEX).
    At(u64),
}

/// SET's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    pub condition: SetCondition,
    /// GET: answer the old value (WRONGTYPE, and nothing set, for another
    /// type).
    pub get: bool,
    pub expiry: Expiry,
}

/// What SET did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    /// Whether the value was stored (NX/XX may refuse).
    pub written: bool,
    /// With GET: the old value.
    pub old: Option<Bytes>,
}

/// The string at `key`: `Ok(None)` when absent, WRONGTYPE for another type.
fn string_mut<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a mut Compact>, WrongType> {
    match db.get_mut(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::String(s),
            ..
        }) => Ok(Some(s)),
        Some(_) => Err(WrongType),
    }
}

/// Stores `value` at `key` whatever was there, keeping the deadline only
/// with `keep_ttl`. A string or hash is replaced in place (no new slot).
fn put(db: &mut Db, key: &Bytes, value: Compact, keep_ttl: bool) {
    match db.get_mut(key) {
        Some(e) if matches!(e.value, Value::String(_) | Value::Hash(_)) && !e.history => {
            e.value = Value::String(value);
            let clear = e.expires_at.is_some() && !keep_ttl;
            db.touch(key);
            if clear {
                db.set_expiry(key, None);
            }
        }
        Some(e) => {
            let ttl = e.expires_at.filter(|_| keep_ttl);
            db.insert(key.clone(), Value::String(value));
            if ttl.is_some() {
                db.set_expiry(key, ttl);
            }
        }
        None => db.insert(key.clone(), Value::String(value)),
    }
}

/// Parses a stored string as an integer, as Redis's `string2ll`.
fn as_integer(s: &[u8]) -> Result<i64, DataError> {
    crate::resp::parse::parse_i64(s).ok_or(DataError::Other(NOT_INTEGER.into()))
}

/// Adds `delta` to a stored integer (0 when absent), with Redis's overflow
/// error.
pub fn checked_incr(old: i64, delta: i64) -> Result<i64, DataError> {
    old.checked_add(delta)
        .ok_or(DataError::Other(OVERFLOW.into()))
}

/// `old + incr` in long double arithmetic, formatted as Redis stores it;
/// `old` absent counts as 0. Errors: `bad_old` when the stored value is
/// not a float, NOT_FLOAT for the increment, NaN or infinity.
pub fn float_incr(
    old: Option<&[u8]>,
    incr: &[u8],
    bad_old: &'static str,
) -> Result<String, DataError> {
    let old = match old {
        None => longdouble::LongDouble::Finite {
            neg: false,
            mant: 0,
            exp: 0,
        },
        Some(v) => longdouble::parse(v).ok_or(DataError::Other(bad_old.into()))?,
    };
    let incr = longdouble::parse(incr).ok_or(DataError::Other(NOT_FLOAT.into()))?;
    let sum = longdouble::add(old, incr);
    if !longdouble::is_finite(sum) {
        return Err(DataError::Other(NAN_OR_INFINITY.into()));
    }
    Ok(longdouble::format(sum))
}

impl Hub {
    /// WRONGTYPE when `key` is a presence view with someone present (it
    /// reads as a set).
    fn string_view_check(&self, key: &[u8]) -> Result<(), DataError> {
        if self.presence_view_exists(key) {
            return Err(DataError::WrongType);
        }
        Ok(())
    }

    /// GET.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, DataError> {
        self.string_view_check(key)?;
        let mut db = self.keyspace.lock();
        Ok(string_mut(&mut db, key)?.map(|s| s.to_bytes()))
    }

    /// SET with its options (SETEX, PSETEX, SETNX are SETs too).
    pub fn set(
        &self,
        key: &Bytes,
        value: &[u8],
        opts: SetOptions,
    ) -> Result<SetOutcome, DataError> {
        let mut db = self.keyspace.lock();
        let old = if opts.get {
            string_mut(&mut db, key)?.map(|s| s.to_bytes())
        } else {
            None
        };
        let found = db.get(key).is_some();
        let refused = match opts.condition {
            SetCondition::Always => false,
            SetCondition::IfAbsent => found,
            SetCondition::IfPresent => !found,
        };
        if refused {
            return Ok(SetOutcome {
                written: false,
                old,
            });
        }
        put(
            &mut db,
            key,
            Compact::new(value),
            opts.expiry == Expiry::Keep,
        );
        if let Expiry::At(at) = opts.expiry {
            db.set_expiry(key, Some(at));
        }
        Ok(SetOutcome { written: true, old })
    }

    /// GETDEL: the value, and the key goes.
    pub fn getdel(&self, key: &Bytes) -> Result<Option<Bytes>, DataError> {
        let mut db = self.keyspace.lock();
        let v = string_mut(&mut db, key)?.map(|s| s.to_bytes());
        if v.is_some() {
            db.remove(key);
        }
        Ok(v)
    }

    /// GETEX: the value, then the deadline changed as `change` says (an
    /// invalid one is refused only once the key is known to be a string,
    /// as Redis checks in that order).
    pub fn getex(
        &self,
        key: &Bytes,
        change: Result<Expiry, DataError>,
    ) -> Result<Option<Bytes>, DataError> {
        let mut db = self.keyspace.lock();
        let Some(v) = string_mut(&mut db, key)?.map(|s| s.to_bytes()) else {
            return Ok(None);
        };
        match change? {
            Expiry::At(at) if at <= now_ms() => {
                db.remove(key);
            }
            Expiry::At(at) => {
                db.set_expiry(key, Some(at));
                db.touch(key);
            }
            Expiry::Persist => {
                if db.get(key).is_some_and(|e| e.expires_at.is_some()) {
                    db.set_expiry(key, None);
                    db.touch(key);
                }
            }
            Expiry::Default | Expiry::Keep => {}
        }
        Ok(Some(v))
    }

    /// GETSET: the old value; the new one replaces it (deadline cleared).
    pub fn getset(&self, key: &Bytes, value: &[u8]) -> Result<Option<Bytes>, DataError> {
        let mut db = self.keyspace.lock();
        let old = string_mut(&mut db, key)?.map(|s| s.to_bytes());
        put(&mut db, key, Compact::new(value), false);
        Ok(old)
    }

    /// MGET: each key's string, `None` for a missing key or another type.
    pub fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>> {
        let mut db = self.keyspace.lock();
        keys.iter()
            .map(|k| string_mut(&mut db, k).ok().flatten().map(|s| s.to_bytes()))
            .collect()
    }

    /// MSET: `pairs` is `key value key value …`; every key is replaced,
    /// whatever its type, deadlines cleared.
    pub fn mset(&self, pairs: &[Bytes]) {
        let mut db = self.keyspace.lock();
        for kv in pairs.chunks_exact(2) {
            put(&mut db, &kv[0], Compact::new(&kv[1]), false);
        }
    }

    /// MSETNX: as MSET when none of the keys exists; whether it did.
    pub fn msetnx(&self, pairs: &[Bytes]) -> bool {
        let mut db = self.keyspace.lock();
        if pairs.chunks_exact(2).any(|kv| db.get(&kv[0]).is_some()) {
            return false;
        }
        for kv in pairs.chunks_exact(2) {
            put(&mut db, &kv[0], Compact::new(&kv[1]), false);
        }
        true
    }

    /// INCR, INCRBY, DECR, DECRBY: the new value. The deadline stays.
    pub fn incr_by(&self, key: &Bytes, delta: i64) -> Result<i64, DataError> {
        let mut db = self.keyspace.lock();
        let old = match string_mut(&mut db, key)? {
            None => 0,
            Some(s) => as_integer(s)?,
        };
        let new = checked_incr(old, delta)?;
        put(
            &mut db,
            key,
            Compact::new(itoa::Buffer::new().format(new).as_bytes()),
            true,
        );
        Ok(new)
    }

    /// INCRBYFLOAT: the new value as Redis formats it (long double
    /// arithmetic, `%.17Lf` trimmed). The deadline stays.
    pub fn incr_by_float(&self, key: &Bytes, incr: &[u8]) -> Result<Bytes, DataError> {
        let mut db = self.keyspace.lock();
        let new = {
            let old = string_mut(&mut db, key)?.map(|s| &s[..]);
            float_incr(old, incr, NOT_FLOAT)?
        };
        put(&mut db, key, Compact::new(new.as_bytes()), true);
        Ok(Bytes::from(new))
    }

    /// APPEND: the new length; at most `max_len` bytes in all.
    pub fn append(&self, key: &Bytes, tail: &[u8], max_len: usize) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let len = match string_mut(&mut db, key)? {
            None => {
                // As Redis, a new key takes the argument whatever its size
                // (the request was already within the bulk limit).
                put(&mut db, key, Compact::new(tail), false);
                return Ok(tail.len());
            }
            Some(s) => {
                if s.len().saturating_add(tail.len()) > max_len {
                    return Err(DataError::Other(TOO_LONG.into()));
                }
                s.append(tail);
                s.len()
            }
        };
        db.touch(key);
        Ok(len)
    }

    /// STRLEN: 0 for a missing key.
    pub fn strlen(&self, key: &[u8]) -> Result<usize, DataError> {
        self.string_view_check(key)?;
        let mut db = self.keyspace.lock();
        Ok(string_mut(&mut db, key)?.map_or(0, |s| s.len()))
    }

    /// GETRANGE with Redis's index rules (negative from the end, clamped;
    /// both negative and start past end: empty).
    pub fn getrange(&self, key: &[u8], start: i64, end: i64) -> Result<Bytes, DataError> {
        self.string_view_check(key)?;
        let mut db = self.keyspace.lock();
        let Some(s) = string_mut(&mut db, key)? else {
            return Ok(Bytes::new());
        };
        Ok(match substring(s.len(), start, end) {
            None => Bytes::new(),
            Some((a, b)) => Bytes::copy_from_slice(&s[a..=b]),
        })
    }

    /// SETRANGE: writes `data` at `offset` (zero-padded); the new length.
    /// Nothing to write leaves everything as it was; at most `max_len`
    /// bytes in all.
    pub fn setrange(
        &self,
        key: &Bytes,
        offset: usize,
        data: &[u8],
        max_len: usize,
    ) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let exists = match string_mut(&mut db, key)? {
            None => false,
            Some(s) if data.is_empty() => return Ok(s.len()),
            Some(_) => true,
        };
        if !exists && data.is_empty() {
            return Ok(0);
        }
        if offset
            .checked_add(data.len())
            .is_none_or(|end| end > max_len)
        {
            return Err(DataError::Other(TOO_LONG.into()));
        }
        if !exists {
            put(&mut db, key, Compact::default(), false);
        }
        let len = match string_mut(&mut db, key)? {
            Some(s) => {
                s.set_range(offset, data);
                s.len()
            }
            None => 0,
        };
        db.touch(key);
        Ok(len)
    }
}

/// GETRANGE's inclusive byte range of a string of `len` bytes, or `None`
/// for an empty reply.
pub fn substring(len: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let len_i = len as i64;
    let mut start = if start < 0 {
        len_i.wrapping_add(start)
    } else {
        start
    };
    let mut end = if end < 0 {
        len_i.wrapping_add(end)
    } else {
        end
    };
    start = start.max(0);
    end = end.max(0);
    if end >= len_i {
        end = len_i - 1;
    }
    if start > end || len == 0 {
        return None;
    }
    Some((start as usize, end as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn entries_stay_small() {
        // A key and its value in 72 bytes: see `hub::keymap`.
        assert_eq!(std::mem::size_of::<crate::hub::hash::HashValue>(), 16);
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn deadlines_follow_keys_whose_slots_move() {
        // The deadline index names slots by position; removals move slots.
        let hub = Hub::default();
        let now = now_ms();
        let keys: Vec<Bytes> = (0..1000).map(|i| b(&format!("key:{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            let at = if i % 2 == 0 { now - 1 } else { now + 60_000 };
            let opts = SetOptions {
                expiry: Expiry::At(at),
                ..Default::default()
            };
            hub.set(k, b"v", opts).unwrap();
        }
        // Remove every third key (expired or not), moving slots around.
        let gone: Vec<Bytes> = keys.iter().step_by(3).cloned().collect();
        {
            let mut db = hub.keyspace.lock();
            for k in &gone {
                db.remove(k);
            }
        }
        let due = (0..1000).filter(|i| i % 2 == 0 && i % 3 != 0).count();
        assert_eq!(hub.reclaim_expired(), due);
        let left = (0..1000).filter(|i| i % 2 == 1 && i % 3 != 0).count();
        assert_eq!(hub.dbsize(), left);
        for (i, k) in keys.iter().enumerate() {
            let want = i % 2 == 1 && i % 3 != 0;
            assert_eq!(hub.get(k).unwrap().is_some(), want, "key:{i}");
            if want {
                assert!(matches!(hub.ttl(k), crate::hub::data::KeyTtl::ExpiresIn(_)));
                hub.keyspace.lock().set_expiry(k, Some(now - 1));
            }
        }
        assert_eq!(hub.reclaim_expired(), left);
        assert_eq!(hub.dbsize(), 0);
    }

    #[test]
    fn set_options() {
        let hub = Hub::default();
        let k = b("k");
        let nx = SetOptions {
            condition: SetCondition::IfAbsent,
            ..Default::default()
        };
        assert!(hub.set(&k, b"1", nx).unwrap().written);
        assert!(!hub.set(&k, b"2", nx).unwrap().written);
        let xx_get = SetOptions {
            condition: SetCondition::IfPresent,
            get: true,
            ..Default::default()
        };
        let r = hub.set(&k, b"3", xx_get).unwrap();
        assert_eq!((r.written, r.old), (true, Some(b("1"))));
        let r = hub.set(&b("none"), b"3", xx_get).unwrap();
        assert_eq!((r.written, r.old), (false, None));
        // A deadline, kept by KEEPTTL, cleared by a plain SET.
        let at = now_ms() + 60_000;
        let ex = SetOptions {
            expiry: Expiry::At(at),
            ..Default::default()
        };
        hub.set(&k, b"4", ex).unwrap();
        let keep = SetOptions {
            expiry: Expiry::Keep,
            ..Default::default()
        };
        hub.set(&k, b"5", keep).unwrap();
        assert!(matches!(
            hub.ttl(&k),
            crate::hub::data::KeyTtl::ExpiresIn(_)
        ));
        hub.set(&k, b"6", SetOptions::default()).unwrap();
        assert_eq!(hub.ttl(&k), crate::hub::data::KeyTtl::Persistent);
        // GET on another type: WRONGTYPE, nothing set.
        hub.sadd(&b("s"), &[b("m")]).unwrap();
        let get = SetOptions {
            get: true,
            ..Default::default()
        };
        assert_eq!(hub.set(&b("s"), b"x", get), Err(DataError::WrongType));
        assert_eq!(hub.key_type(b"s"), "set");
        // Without GET, SET replaces any type.
        hub.set(&b("s"), b"x", SetOptions::default()).unwrap();
        assert_eq!(hub.get(b"s"), Ok(Some(b("x"))));
        // A deadline already past leaves nothing.
        let past = SetOptions {
            expiry: Expiry::At(1),
            ..Default::default()
        };
        assert!(hub.set(&k, b"7", past).unwrap().written);
        assert_eq!(hub.get(&k), Ok(None));
    }

    #[test]
    fn counters() {
        let hub = Hub::default();
        let k = b("n");
        assert_eq!(hub.incr_by(&k, 5), Ok(5));
        assert_eq!(hub.incr_by(&k, -7), Ok(-2));
        hub.set(
            &k,
            &i64::MAX.to_string().into_bytes(),
            SetOptions::default(),
        )
        .unwrap();
        assert_eq!(hub.incr_by(&k, 1), Err(DataError::Other(OVERFLOW.into())));
        hub.set(&k, b" 1", SetOptions::default()).unwrap();
        assert_eq!(
            hub.incr_by(&k, 1),
            Err(DataError::Other(NOT_INTEGER.into()))
        );
        let f = b("f");
        assert_eq!(hub.incr_by_float(&f, b"10.5"), Ok(b("10.5")));
        assert_eq!(hub.incr_by_float(&f, b"0.1"), Ok(b("10.6")));
        assert_eq!(
            hub.incr_by_float(&f, b"x"),
            Err(DataError::Other(NOT_FLOAT.into()))
        );
        assert_eq!(
            hub.incr_by_float(&f, b"inf"),
            Err(DataError::Other(NAN_OR_INFINITY.into()))
        );
        assert_eq!(hub.get(&f), Ok(Some(b("10.6"))));
    }

    #[test]
    fn ranges_and_appends() {
        let hub = Hub::default();
        let k = b("s");
        assert_eq!(hub.append(&k, b"Hello", 100), Ok(5));
        assert_eq!(hub.append(&k, b" World", 100), Ok(11));
        assert_eq!(
            hub.append(&k, &[b'x'; 90], 100),
            Err(DataError::Other(TOO_LONG.into()))
        );
        assert_eq!(hub.getrange(&k, 0, 4), Ok(b("Hello")));
        assert_eq!(hub.getrange(&k, -5, -1), Ok(b("World")));
        assert_eq!(hub.getrange(&k, -1, -5), Ok(b("")));
        assert_eq!(hub.getrange(&k, 5, 1000), Ok(b(" World")));
        assert_eq!(hub.getrange(&k, i64::MIN, i64::MAX), Ok(b("Hello World")));
        assert_eq!(hub.setrange(&k, 6, b"Redis", 100), Ok(11));
        assert_eq!(hub.get(&k), Ok(Some(b("Hello Redis"))));
        assert_eq!(hub.setrange(&b("new"), 3, b"x", 100), Ok(4));
        assert_eq!(hub.get(b"new"), Ok(Some(b("\0\0\0x"))));
        assert_eq!(hub.setrange(&b("none"), 3, b"", 100), Ok(0));
        assert!(!hub.keyspace.lock().exists(b"none"));
        assert_eq!(
            hub.setrange(&b("none"), 100, b"x", 100),
            Err(DataError::Other(TOO_LONG.into()))
        );
        assert_eq!(hub.strlen(&k), Ok(11));
    }
}
