//! [`Clients`]: the per-address state of every client, bounded, and how a
//! flood of addresses is kept from locking fresh ones out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{now_ns, Client};

/// A client address as the per-client limits group them: an IPv4 address
/// (IPv4-mapped IPv6 included), or the /64 an IPv6 address is in (one
/// host, or one home or phone, is usually given a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => ClientKey(u128::from(v6) & !u128::from(u64::MAX)),
        }
    }
}

/// The smallest number of addresses [`Clients`] keeps apart.
pub const MIN_ADDRESSES: usize = 65_536;

/// How often, at most, a full map is swept before its cost is paid back
/// by inserts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The per-address state of every client, bounded.
///
/// A connection looks its address up once, when it arrives, and keeps the
/// [`Client`] for its life: its limits then cost no lookup. An entry is
/// forgotten once no connection holds it and it is as good as new (every
/// bucket full again, no pattern held): a new entry for that address then
/// starts where the old one would have been anyway, so forgetting lets no
/// one past a limit.
///
/// The map holds at most `cap` addresses (at least [`MIN_ADDRESSES`], and
/// room for every connection the server admits). Forgotten entries are
/// swept when inserts since the last sweep reach the map's size (so a
/// sweep costs O(1) per insert), and at most once a second when it is
/// full. An address that arrives while the map is full of entries still
/// in use shares one overflow [`Client`] with every other such address:
/// a flood of distinct addresses (an IPv6 /48 holds 65,536 /64s) can
/// neither grow the map nor get fresh buckets by evicting, and the price
/// is that new addresses share one set of limits until entries expire
/// (within `burst / rate` seconds of their last use: 10 s by default).
pub struct Clients {
    cap: usize,
    inner: Mutex<Inner>,
    overflow: Arc<Client>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<ClientKey, Arc<Client>>,
    inserts: usize,
    swept_at: u64,
}

impl Clients {
    /// At most `cap` addresses (at least [`MIN_ADDRESSES`]).
    pub fn new(cap: usize) -> Clients {
        Clients::with_exact_cap(cap.max(MIN_ADDRESSES))
    }

    fn with_exact_cap(cap: usize) -> Clients {
        Clients {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
            overflow: Arc::new(Client::default()),
        }
    }

    /// The state of the client at `ip`.
    pub fn get(&self, ip: IpAddr) -> Arc<Client> {
        self.get_at(ClientKey::of(ip), now_ns())
    }

    fn get_at(&self, key: ClientKey, now: u64) -> Arc<Client> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = inner.map.get(&key) {
            return c.clone();
        }
        inner.inserts += 1;
        let len = inner.map.len();
        let full = len >= self.cap;
        let waited = now.saturating_sub(inner.swept_at) >= SWEEP_EVERY.as_nanos() as u64;
        if inner.inserts >= len.max(1024) || (full && waited) {
            inner
                .map
                .retain(|_, c| Arc::strong_count(c) > 1 || !c.is_idle_at(now));
            inner.inserts = 0;
            inner.swept_at = now;
        }
        if inner.map.len() >= self.cap {
            return self.overflow.clone();
        }
        inner.map.entry(key).or_default().clone()
    }

    /// Addresses kept now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new(MIN_ADDRESSES)
    }
}

#[cfg(test)]
mod tests {
    use super::super::RateLimit;
    use super::*;
    use std::net::Ipv4Addr;

    const SEC: u64 = 1_000_000_000;

    fn v4(n: u32) -> ClientKey {
        ClientKey::of(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn keys_group_ipv6_by_64_and_ipv4_mapped_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let m: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let p: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(ClientKey::of(m), ClientKey::of(p));
        assert_ne!(
            ClientKey::of(p),
            ClientKey::of("127.0.0.1".parse().unwrap())
        );
    }


    #[test]
    fn one_address_shares_its_buckets_and_another_does_not() {
        let clients = Clients::with_exact_cap(16);
        let lim = RateLimit { rate: 1, burst: 3 };
        let a1 = clients.get_at(v4(1), SEC);
        let a2 = clients.get_at(v4(1), SEC);
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(a1.take_subscribes(lim, 2));
        assert!(a2.take_subscribes(lim, 1));
        assert!(!a1.take_subscribes(lim, 1), "the address's burst is spent");
        let b = clients.get_at(v4(2), SEC);
        assert!(b.take_subscribes(lim, 3), "another address is unaffected");
        // Patterns: a share per address.
        assert!(a1.take_pattern(2) && a2.take_pattern(2));
        assert!(!a1.take_pattern(2));
        assert!(b.take_pattern(2));
        a2.give_patterns(1);
        assert!(a1.take_pattern(2));
        assert!(a1.take_pattern(0), "0: no limit");
    }

    #[test]
    fn a_forgotten_entry_is_one_that_was_as_good_as_new() {
        let clients = Clients::with_exact_cap(4);
        let lim = RateLimit {
            rate: 10,
            burst: 10,
        };
        let t0 = 10 * SEC;
        let a = clients.get_at(v4(1), t0);
        assert!(a.state().subscribe.take_at(lim, 10, t0));
        drop(a);
        // Fill the map; its sweep (when full, once a second) keeps the
        // spent bucket: a reconnect finds it still spent.
        for i in 2..=4 {
            drop(clients.get_at(v4(i), t0));
        }
        let a = clients.get_at(v4(1), t0 + SEC / 20);
        assert!(!a.state().subscribe.take_at(lim, 1, t0 + SEC / 20));
        drop(a);
        // Once full again it may be forgotten: nothing is lost.
        let later = t0 + 5 * SEC;
        drop(clients.get_at(v4(9), later));
        assert!(clients.len() <= 4);
        let a = clients.get_at(v4(1), later);
        assert!(a.state().subscribe.take_at(lim, 10, later));
    }

    #[test]
    fn a_flood_of_addresses_neither_grows_the_map_nor_gets_fresh_buckets() {
        let clients = Clients::with_exact_cap(100);
        let lim = RateLimit { rate: 1, burst: 1 };
        let t0 = 10 * SEC;
        let mut spent = 0;
        // 10,000 distinct addresses within the same second, each taking
        // its one token and going away.
        for i in 0..10_000u32 {
            let c = clients.get_at(v4(i), t0);
            if c.state().subscribe.take_at(lim, 1, t0) {
                spent += 1;
            }
            assert!(clients.len() <= 100);
        }
        // The first 100 got their own buckets, the rest shared one.
        assert_eq!(spent, 101);
        // Entries held by connections are never swept, even when idle.
        let held: Vec<_> = (0..100).map(|i| clients.get_at(v4(i), t0)).collect();
        let t1 = t0 + 60 * SEC;
        let other = clients.get_at(v4(5_000), t1);
        assert!(Arc::ptr_eq(&other, &clients.overflow), "all held: overflow");
        drop(held);
        let t2 = t1 + 2 * SEC;
        let other = clients.get_at(v4(5_000), t2);
        assert!(!Arc::ptr_eq(&other, &clients.overflow), "swept once idle");
        assert!(clients.len() <= 100);
    }

    #[test]
    fn a_huge_request_keeps_its_entry_no_longer_than_a_refill() {
        let lim = RateLimit {
            rate: 100,
            burst: 1000,
        };
        let c = Client::default();
        let t0 = 10 * SEC;
        assert!(c.state().subscribe.take_at(lim, 20_000, t0));
        assert!(!c.is_idle_at(t0 + 9 * SEC));
        assert!(c.is_idle_at(t0 + 10 * SEC), "190 s of debt before");
    }

    #[test]
    fn a_pattern_pins_its_entry() {
        let clients = Clients::with_exact_cap(2);
        let t0 = 10 * SEC;
        let a = clients.get_at(v4(1), t0);
        assert!(a.take_pattern(5));
        // A pattern outlives no connection, but a count must never be
        // forgotten while it is held: keep the entry.
        let weak = Arc::downgrade(&a);
        drop(a);
        drop(clients.get_at(v4(2), t0 + 10 * SEC));
        drop(clients.get_at(v4(3), t0 + 20 * SEC));
        assert!(weak.upgrade().is_some_and(|a| a.patterns() == 1));
    }

}
