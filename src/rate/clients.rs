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
/// full. Entries still in use are never evicted: that would hand out
/// fresh buckets, and a flood of distinct addresses (an IPv6 /48 holds
/// 65,536 /64s) could then reset its own limits by cycling through more
/// addresses than the map holds.
///
/// An address that arrives while the map is full of entries in use is
/// kept by its network instead, in two smaller maps of a quarter of `cap`
/// each: first its IPv4 /24 or IPv6 /48, and when that map is full too,
/// its IPv4 /16 or IPv6 /32 (see [`PREFIXES`]); only past both does it
/// share one overflow [`Client`] with every other such address. A flood
/// then shares budgets within its own networks, which it has spent,
/// while a fresh address elsewhere gets a network entry of its own: one
/// that shared the single overflow entry had its failed-authentication
/// budget spent by the flood, and was refused even the right password
/// until the flood stopped (70,000 addresses with 10 wrong passwords
/// each, `tests/attack6_findings.rs`). The flood gains nothing by it: an
/// address it sends through a network entry has, at most, the budgets it
/// would have had in the full map, shared with the rest of its network.
///
/// What remains: an address in the same /24 (/48) as a flood's overflow
/// shares its spent budgets until the flood's entries expire (within
/// `burst / rate` seconds of their last use: 10 s by default), as does
/// one in the same /16 (/32) once the flood holds as many /24s (/48s) as
/// the first network map (16,384 by default: a botnet, or an IPv6 /32 of
/// the attacker's own); only a flood from more /16s (/32s) than the
/// second holds reaches the single overflow entry, and every new address
/// with it. Open connections are counted apart, by address, in a map
/// that never falls back (see [`Clients::open_session`]).
pub struct Clients {
    /// Connections open per address (see [`Clients::open_session`]).
    open: OpenCounts,
    cap: usize,
    /// Most entries of each network map.
    net_cap: usize,
    inner: Mutex<Inner>,
    overflow: Arc<Client>,
}

/// The networks an address is kept by once the map of addresses is full,
/// in order: bits of an IPv4 address, bits of an IPv6 address.
const PREFIXES: [(u32, u32); 2] = [(24, 48), (16, 32)];

#[derive(Default)]
struct Inner {
    /// By address (IPv4, IPv6 /64).
    addresses: Level,
    /// By network, one per [`PREFIXES`].
    networks: [Level; 2],
}

/// One map of entries and its sweeping.
#[derive(Default)]
struct Level {
    map: HashMap<ClientKey, Arc<Client>>,
    inserts: usize,
    swept_at: u64,
}

impl Level {
    /// The entry of `key`, made when the map holds fewer than `cap` (after
    /// sweeping it when due); `None` when it is full of entries in use.
    fn get(&mut self, key: ClientKey, cap: usize, now: u64) -> Option<Arc<Client>> {
        if let Some(c) = self.map.get(&key) {
            return Some(c.clone());
        }
        self.inserts += 1;
        let len = self.map.len();
        let full = len >= cap;
        let waited = now.saturating_sub(self.swept_at) >= SWEEP_EVERY.as_nanos() as u64;
        if self.inserts >= len.max(1024) || (full && waited) {
            self.map
                .retain(|_, c| Arc::strong_count(c) > 1 || !c.is_idle_at(now));
            self.inserts = 0;
            self.swept_at = now;
        }
        if self.map.len() >= cap {
            return None;
        }
        Some(self.map.entry(key).or_default().clone())
    }
}

impl ClientKey {
    /// The network `self` is in, as [`PREFIXES`]`[level]` has it.
    fn network(self, level: usize) -> ClientKey {
        let (v4, v6) = PREFIXES[level];
        // An IPv4 address is kept IPv4-mapped: ::ffff:a.b.c.d.
        let bits = if self.0 >> 32 == 0xffff { 96 + v4 } else { v6 };
        ClientKey(self.0 & (u128::MAX << (128 - bits)))
    }
}

impl Clients {
    /// At most `cap` addresses (at least [`MIN_ADDRESSES`]).
    pub fn new(cap: usize) -> Clients {
        Clients::with_exact_cap(cap.max(MIN_ADDRESSES))
    }

    fn with_exact_cap(cap: usize) -> Clients {
        Clients::with_caps(cap, cap / 4)
    }

    fn with_caps(cap: usize, net_cap: usize) -> Clients {
        Clients {
            open: OpenCounts::default(),
            cap: cap.max(1),
            net_cap: net_cap.max(1),
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
        let inner = &mut *inner;
        if let Some(c) = inner.addresses.get(key, self.cap, now) {
            return c;
        }
        for (level, networks) in inner.networks.iter_mut().enumerate() {
            if let Some(c) = networks.get(key.network(level), self.net_cap, now) {
                return c;
            }
        }
        self.overflow.clone()
    }

    /// Counts one more open connection of `ip` (a WebSocket or SSE
    /// session, a RESP connection: one count), unless it has `max` open
    /// already (0: no limit); counted until the guard drops, or
    /// [`Session::keep`] hands the count to its holder, which gives it
    /// back with [`Clients::close_session`].
    ///
    /// Kept by address (IPv4, IPv6 /64) in a map of its own, never by
    /// network: while a flood fills the map of addresses, fresh addresses
    /// of a /24 shared one count there (at limit 2, the third fresh
    /// address of a /24 was refused, and one address of the /24 holding
    /// its 2 locked the rest out). A count is exact and held only while
    /// its connections are open, so this map holds at most one entry per
    /// open connection, and cycling addresses gains nothing.
    pub fn open_session(&self, ip: IpAddr, max: u32) -> Option<Session> {
        let key = ClientKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Session {
            open: self.open.clone(),
            key,
            counted: true,
        })
    }

    /// Gives back a connection of `ip` counted by a [`Session`] that
    /// [`Session::keep`] ended (never more than were counted).
    pub fn close_session(&self, ip: IpAddr) {
        close(&self.open, ClientKey::of(ip));
    }

    /// Entries kept now: addresses and networks.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.addresses.map.len() + i.networks.iter().map(|n| n.map.len()).sum::<usize>())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Connections open, by address; only addresses with some.
type OpenCounts = Arc<Mutex<HashMap<ClientKey, u32>>>;

fn close(open: &OpenCounts, key: ClientKey) {
    let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = open.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            open.remove(&key);
        }
    }
}

/// One open connection counted among its address's (see
/// [`Clients::open_session`]).
pub struct Session {
    open: OpenCounts,
    key: ClientKey,
    counted: bool,
}

impl Session {
    /// Ends the guard but not its count, which the caller then keeps and
    /// gives back with [`Clients::close_session`]: a RESP connection keeps
    /// a flag, not the guard.
    pub fn keep(mut self) {
        self.counted = false;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.counted {
            close(&self.open, self.key);
        }
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

    fn ip(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn networks_are_ipv4_24_and_16_and_ipv6_48_and_32() {
        let a = ip("192.0.2.77");
        assert_eq!(a.network(0), ip("192.0.2.0"));
        assert_eq!(a.network(1), ip("192.0.0.0"));
        assert_eq!(ip("::ffff:192.0.2.1").network(0), a.network(0));
        let b = ip("2001:db8:aaaa:bbbb:1:2:3:4");
        assert_eq!(b.network(0), ip("2001:db8:aaaa::"));
        assert_eq!(b.network(1), ip("2001:db8::"));
        // IPv4 networks stay apart from IPv6 ones, 0.0.0.0/16 from ::/32.
        assert_ne!(ip("0.0.0.1").network(1), ip("::1").network(1));
    }

    #[test]
    fn a_flood_of_addresses_neither_grows_the_maps_nor_gets_fresh_buckets() {
        let clients = Clients::with_caps(100, 10);
        let lim = RateLimit { rate: 1, burst: 1 };
        let t0 = 10 * SEC;
        let mut spent = 0;
        // 10,000 distinct addresses (40 /24s of one /16) within the same
        // second, each taking its one token and going away.
        for i in 0..10_000u32 {
            let c = clients.get_at(v4(i), t0);
            if c.state().subscribe.take_at(lim, 1, t0) {
                spent += 1;
            }
            assert!(clients.len() <= 120);
        }
        // 100 addresses got their own buckets, then 10 /24s theirs, and
        // the rest shared their /16's.
        assert_eq!(spent, 111);
        let again = |n: u32| {
            clients
                .get_at(v4(n), t0)
                .state()
                .subscribe
                .take_at(lim, 1, t0)
        };
        assert!(
            !again(50) && !again(150) && !again(9_999),
            "spent stays spent"
        );
        // Another /16 has a bucket of its own.
        assert!(clients
            .get_at(ip("10.9.0.1"), t0)
            .state()
            .subscribe
            .take_at(lim, 1, t0));
        assert!(!Arc::ptr_eq(
            &clients.get_at(v4(9_999), t0),
            &clients.overflow
        ));
    }

    #[test]
    fn a_fresh_address_is_not_locked_out_by_a_flood_of_failed_authentications() {
        let clients = Clients::with_caps(1_000, 250);
        let lim = RateLimit { rate: 1, burst: 10 };
        let now = now_ns();
        let bad = || Err::<(), ()>(());
        // 2,000 addresses of 127.1.0.0/16 and up spend their budgets.
        for n in 256..2_256u32 {
            let c = clients.get_at(v4(0x7f01_0000 + n), now);
            while c.authenticate(lim, bad).is_ok() {}
        }
        // The flood's addresses past the map, sharing their /24s, stay
        // refused, unchecked, the right password too: no fresh budget.
        let flood = clients.get_at(v4(0x7f01_0000 + 2_100), now);
        assert!(flood.authenticate(lim, || Ok::<(), ()>(())).is_err());
        // A fresh address elsewhere is checked.
        for i in 1..=5 {
            let c = clients.get_at(ip(&format!("127.200.0.{i}")), now);
            assert_eq!(c.authenticate(lim, || Ok::<(), ()>(())), Ok(Ok(())));
        }
    }

    #[test]
    fn held_entries_are_never_swept_and_past_every_map_is_the_overflow() {
        let clients = Clients::with_caps(2, 1);
        let t0 = 10 * SEC;
        let mut held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "11.0.0.1"]
            .iter()
            .map(|a| clients.get_at(ip(a), t0))
            .collect();
        // Two addresses, 10.0.0.0/24, 11.0.0.0/16: every map full and held.
        assert!(held.iter().all(|c| !Arc::ptr_eq(c, &clients.overflow)));
        assert_eq!(clients.len(), 4);
        let t1 = t0 + 60 * SEC;
        let other = clients.get_at(ip("12.0.0.1"), t1);
        assert!(Arc::ptr_eq(&other, &clients.overflow), "all held: overflow");
        // The same network shares its entry, held or not.
        assert!(Arc::ptr_eq(&clients.get_at(ip("11.0.9.9"), t1), &held[3]));
        held.clear();
        let t2 = t1 + 2 * SEC;
        let other = clients.get_at(ip("12.0.0.1"), t2);
        assert!(!Arc::ptr_eq(&other, &clients.overflow), "swept once idle");
        assert!(clients.len() <= 4);
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
    fn connections_are_counted_by_address_while_the_map_is_full() {
        let clients = Clients::with_caps(2, 1);
        let t0 = 10 * SEC;
        // Every map full of entries in use: new addresses share entries.
        let _held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.1.0.1"]
            .iter()
            .map(|a| clients.get_at(ip(a), t0))
            .collect();
        let open = |a: &str| clients.open_session(a.parse().unwrap(), 2);
        let a: Vec<_> = (0..2).map(|_| open("12.0.0.1").unwrap()).collect();
        assert!(open("12.0.0.1").is_none(), "its own limit");
        let b = open("12.0.0.2").unwrap();
        let _c = open("12.0.0.3").unwrap();
        drop(a);
        assert!(open("12.0.0.1").is_some(), "given back");
        // A kept count is given back by address; the map forgets zeros.
        b.keep();
        let _b2 = open("12.0.0.2").unwrap();
        assert!(open("12.0.0.2").is_none());
        clients.close_session("12.0.0.2".parse().unwrap());
        clients.close_session("12.0.0.2".parse().unwrap());
        clients.close_session("12.0.0.2".parse().unwrap());
        assert!(clients.open.lock().unwrap().get(&ip("12.0.0.2")).is_none());
        assert!(
            clients.open_session(ip_addr("12.0.0.9"), 0).is_some(),
            "0: no limit"
        );
    }

    fn ip_addr(s: &str) -> IpAddr {
        s.parse().unwrap()
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
