//! Keyspace operations on keys, whatever their type: DEL, EXISTS, TYPE,
//! the EXPIRE family, TTL, PERSIST, KEYS, SCAN, FLUSHALL and DBSIZE; the
//! keyspace's figures for `/stats` and `/metrics`; the expiry tick.
//!
//! A presence view (`__presence__:C`) exists, for EXISTS and TYPE, while its
//! channel has someone present; it is never stored, so DEL, KEYS and SCAN
//! do not see it.

use bytes::Bytes;

use crate::hub::presence::presence_channel;
use crate::hub::{now_ms, Hub};

/// The EXPIRE family's NX, XX, GT and LT options (a front end refuses the
/// combinations Redis refuses: NX with any other, GT with LT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireCondition {
    /// Only when the key has no deadline.
    pub nx: bool,
    /// Only when the key has a deadline.
    pub xx: bool,
    /// Only when the new deadline is later (no deadline counts as infinite).
    pub gt: bool,
    /// Only when the new deadline is sooner.
    pub lt: bool,
}

impl ExpireCondition {
    /// Whether a key whose deadline is `current` takes deadline `at` (ms
    /// since the epoch).
    pub fn allows(&self, current: Option<u64>, at: i64) -> bool {
        match current {
            None => !self.xx && !self.gt,
            Some(cur) => {
                !(self.nx || (self.gt && at <= cur as i64) || (self.lt && at >= cur as i64))
            }
        }
    }
}

/// A key's time to live (TTL, PTTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// No such key.
    Missing,
    /// The key never expires.
    Persistent,
    /// Milliseconds left.
    ExpiresIn(u64),
}

/// The keyspace's figures for `/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyspaceStats {
    /// Keys stored (expired ones not yet reclaimed included).
    pub keys: usize,
    /// Bytes held by channels' history streams.
    pub history_bytes: usize,
    /// History entries evicted by the history memory cap, ever.
    pub history_evicted: u64,
}

impl Hub {
    /// Whether `key` names a presence view with someone present.
    pub(super) fn presence_view_exists(&self, key: &[u8]) -> bool {
        presence_channel(key).is_some_and(|ch| self.presence_stats(ch).is_ok_and(|s| s.0 > 0))
    }

    /// DEL, UNLINK: removes `keys`; how many existed (a key named twice
    /// counts once).
    pub fn del(&self, keys: &[Bytes]) -> usize {
        let mut db = self.keyspace.lock();
        keys.iter()
            .filter(|k| db.get(k).is_some() && db.remove(k))
            .count()
    }

    /// EXISTS: how many of `keys` exist, a key named twice counting twice.
    /// Presence views are asked of the engine first, outside the keyspace
    /// lock (an engine call may do I/O).
    pub fn exists(&self, keys: &[Bytes]) -> usize {
        let views: Vec<bool> = keys.iter().map(|k| self.presence_view_exists(k)).collect();
        let mut db = self.keyspace.lock();
        keys.iter()
            .zip(views)
            .filter(|(k, view)| *view || db.exists(k))
            .count()
    }

    /// TYPE: the type's name, `none` for a missing key.
    pub fn key_type(&self, key: &[u8]) -> &'static str {
        if self.presence_view_exists(key) {
            return "set";
        }
        self.keyspace
            .lock()
            .get(key)
            .map_or("none", |e| e.value.type_name())
    }

    /// The EXPIRE family: gives `key` the deadline `at` (ms since the
    /// epoch) if `cond` allows; a deadline already past deletes the key.
    /// Whether it applied (false for a missing key).
    pub fn expire(&self, key: &[u8], at: i64, cond: ExpireCondition) -> bool {
        let mut db = self.keyspace.lock();
        let Some(e) = db.get(key) else {
            return false;
        };
        let ok = cond.allows(e.expires_at, at);
        if ok {
            if at <= now_ms() as i64 {
                db.remove(key);
            } else {
                db.set_expiry(key, Some(at as u64));
            }
        }
        ok
    }

    /// TTL, PTTL: how long `key` has left.
    pub fn ttl(&self, key: &[u8]) -> KeyTtl {
        let mut db = self.keyspace.lock();
        match db.get(key) {
            None => KeyTtl::Missing,
            Some(e) => match e.expires_at {
                None => KeyTtl::Persistent,
                Some(at) => KeyTtl::ExpiresIn(at.saturating_sub(now_ms())),
            },
        }
    }

    /// PERSIST: clears `key`'s deadline; whether it had one.
    pub fn persist(&self, key: &[u8]) -> bool {
        let mut db = self.keyspace.lock();
        let had = db.get(key).is_some_and(|e| e.expires_at.is_some());
        if had {
            db.set_expiry(key, None);
        }
        had
    }

    /// KEYS: the live keys matching `pattern` (all of them for `None`).
    /// O(keys) while the keyspace is locked, as in Redis.
    pub fn keys_matching(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.keyspace.lock().keys(pattern)
    }

    /// One SCAN page from `cursor` (0 starts): about `count` keys, those
    /// matching `pattern` and of type `type_name` (when given), and the
    /// next cursor (0: done). See `Db::scan`.
    pub fn scan_keys(
        &self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        type_name: Option<&[u8]>,
    ) -> (u64, Vec<Bytes>) {
        self.keyspace.lock().scan(cursor, count, pattern, type_name)
    }

    /// FLUSHALL, FLUSHDB: removes every key (WATCHers see them change,
    /// blocked readers wake, leaderboards see their sets go).
    pub fn flush_keys(&self) {
        self.keyspace.lock().flush();
    }

    /// DBSIZE: the number of keys.
    pub fn dbsize(&self) -> usize {
        self.keyspace.lock().len()
    }

    /// The keyspace's figures, read in one short hold of its lock.
    pub fn keyspace_stats(&self) -> KeyspaceStats {
        let db = self.keyspace.lock();
        KeyspaceStats {
            keys: db.len(),
            history_bytes: db.history_bytes,
            history_evicted: db.history_evicted,
        }
    }

    /// Reclaims every key whose deadline passed (the expiry tick); how many.
    pub fn reclaim_expired(&self) -> usize {
        self.keyspace.lock().reclaim_expired(now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::keyspace::Value;
    use crate::hub::presence::PresenceEntry;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(hub: &Hub, key: &str) {
        hub.sadd(&b(key), &[b("m")]).unwrap();
    }

    #[test]
    fn expire_conditions_follow_redis() {
        let c = |nx, xx, gt, lt| ExpireCondition { nx, xx, gt, lt };
        let none = ExpireCondition::default();
        assert!(none.allows(None, 5) && none.allows(Some(10), 5));
        // NX: only without a deadline; XX: only with one.
        assert!(c(true, false, false, false).allows(None, 5));
        assert!(!c(true, false, false, false).allows(Some(10), 5));
        assert!(!c(false, true, false, false).allows(None, 5));
        assert!(c(false, true, false, false).allows(Some(10), 5));
        // GT: no deadline is infinite, so never later; LT: always sooner.
        assert!(!c(false, false, true, false).allows(None, 5));
        assert!(c(false, false, true, false).allows(Some(10), 11));
        assert!(!c(false, false, true, false).allows(Some(10), 10));
        assert!(c(false, false, false, true).allows(None, 5));
        assert!(c(false, false, false, true).allows(Some(10), 9));
        assert!(!c(false, false, false, true).allows(Some(10), 10));
    }

    #[test]
    fn deadlines_set_clear_and_delete() {
        let hub = Hub::default();
        set(&hub, "k");
        assert_eq!(hub.ttl(b"missing"), KeyTtl::Missing);
        assert_eq!(hub.ttl(b"k"), KeyTtl::Persistent);
        assert!(!hub.persist(b"k"));
        let at = now_ms() as i64 + 60_000;
        assert!(hub.expire(b"k", at, ExpireCondition::default()));
        assert!(matches!(hub.ttl(b"k"), KeyTtl::ExpiresIn(ms) if ms > 50_000 && ms <= 60_000));
        assert!(!hub.expire(
            b"k",
            at + 1,
            ExpireCondition {
                nx: true,
                ..Default::default()
            }
        ));
        assert!(hub.persist(b"k"));
        assert_eq!(hub.ttl(b"k"), KeyTtl::Persistent);
        // A deadline in the past deletes; a missing key takes none.
        assert!(hub.expire(b"k", 1, ExpireCondition::default()));
        assert_eq!(hub.key_type(b"k"), "none");
        assert!(!hub.expire(b"k", at, ExpireCondition::default()));
    }

    #[test]
    fn expired_keys_are_reclaimed() {
        let hub = Hub::default();
        set(&hub, "a");
        set(&hub, "b");
        hub.keyspace.lock().set_expiry(b"a", Some(now_ms() - 1));
        assert_eq!(hub.keyspace_stats().keys, 2, "counted until reclaimed");
        assert_eq!(hub.reclaim_expired(), 1);
        assert_eq!(hub.dbsize(), 1);
        // A read treats a due key as absent, even before the tick.
        hub.keyspace.lock().set_expiry(b"b", Some(now_ms() - 1));
        assert_eq!(hub.exists(&[b("a"), b("b")]), 0);
    }

    #[test]
    fn del_exists_type_keys_and_flush() {
        let hub = Hub::default();
        set(&hub, "s1");
        set(&hub, "s2");
        hub.keyspace
            .lock()
            .insert(b("z"), Value::ZSet(Box::default()));
        assert_eq!(hub.exists(&[b("s1"), b("s1"), b("x")]), 2);
        assert_eq!(hub.key_type(b"z"), "zset");
        assert_eq!(hub.key_type(b"s1"), "set");
        let mut ks = hub.keys_matching(Some(b"s*"));
        ks.sort();
        assert_eq!(ks, vec![b("s1"), b("s2")]);
        let (next, page) = hub.scan_keys(0, 100, None, Some(b"ZSET"));
        assert_eq!((next, page), (0, vec![b("z")]));
        assert_eq!(hub.del(&[b("s1"), b("s1"), b("x")]), 1);
        assert_eq!(hub.dbsize(), 2);
        hub.flush_keys();
        assert_eq!(hub.keyspace_stats(), KeyspaceStats::default());
    }

    #[test]
    fn presence_views_exist_while_someone_is_present() {
        let hub = Hub::default();
        let key = b("__presence__:room");
        assert_eq!(hub.exists(std::slice::from_ref(&key)), 0);
        assert_eq!(hub.key_type(&key), "none");
        hub.engine
            .presence
            .join(
                &b("room"),
                PresenceEntry {
                    client: 1,
                    user: "ann".into(),
                    info: None,
                    joined: 0,
                },
            )
            .wait()
            .unwrap();
        assert_eq!(hub.exists(std::slice::from_ref(&key)), 1);
        assert_eq!(hub.key_type(&key), "set");
        // Never stored: KEYS and DEL do not see it.
        assert!(hub.keys_matching(None).is_empty());
        assert_eq!(hub.del(std::slice::from_ref(&key)), 0);
    }
}
