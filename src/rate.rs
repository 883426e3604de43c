//! A per-connection rate limit in eight bytes: a token bucket kept as one
//! timestamp (the generic cell rate algorithm), so the thousands of idle
//! connections that carry one pay for a `u64`, not for a refill clock and a
//! level.
//!
//! The bucket holds `burst` tokens and refills at `rate` a second. The state
//! is the "theoretical arrival time": the moment the bucket would be full
//! again. A request of `cost` tokens passes when the bucket holds at least
//! `min(cost, burst)`, and takes that many: a request larger than the whole
//! burst still passes on a full bucket (no request is impossible) and
//! empties it, so the client then waits a whole burst's refill. It leaves
//! no debt past an empty bucket: a bucket is full again within
//! `burst / rate` of its last use whatever was asked of it, which bounds
//! how long [`Clients`] must remember an address (one `SUBSCRIBE` of
//! 20,000 channels left 190 s of debt at 100/s, and kept its address's
//! entry that long; now 10 s).
//!
//! [`Clients`] keeps such buckets per client address (see its docs), so a
//! client that reconnects, or opens many connections, keeps one set of
//! limits.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::hub::outbox::OutputBudget;

mod clients;
pub use clients::{ClientKey, Clients, Session, MIN_ADDRESSES};

/// The clock's origin: the first use in this process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The limit's parameters, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens refilled per second; 0: no limit.
    pub rate: u32,
    /// Tokens a full bucket holds (at least 1 where `rate` is above 0).
    pub burst: u32,
}

/// See the module docs. Starts full.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenBucket {
    /// When the bucket is full again, in nanoseconds since [`epoch`]; at or
    /// before now, it is full.
    full_at: u64,
}

impl TokenBucket {
    /// Takes `min(cost, burst)` tokens if the bucket holds that many;
    /// false (and nothing taken) otherwise.
    pub fn take(&mut self, limit: RateLimit, cost: u32) -> bool {
        self.take_at(limit, cost, now_ns())
    }

    fn take_at(&mut self, limit: RateLimit, cost: u32, now: u64) -> bool {
        if limit.rate == 0 || cost == 0 {
            return true;
        }
        let per_token = 1_000_000_000 / u64::from(limit.rate);
        let burst = u64::from(limit.burst.max(1));
        // Tokens missing from a full bucket, as time to refill them.
        let missing = self.full_at.saturating_sub(now);
        let need = u64::from(cost).min(burst);
        if missing.saturating_add(need.saturating_mul(per_token)) > burst.saturating_mul(per_token)
        {
            return false;
        }
        self.full_at = self
            .full_at
            .max(now)
            .saturating_add(need.saturating_mul(per_token));
        true
    }

    /// How long until a request of one token would pass.
    fn wait_at(&self, limit: RateLimit, now: u64) -> Duration {
        if limit.rate == 0 {
            return Duration::ZERO;
        }
        let per_token = 1_000_000_000 / u64::from(limit.rate);
        let burst = u64::from(limit.burst.max(1));
        let missing = self.full_at.saturating_sub(now);
        let room = burst.saturating_sub(1).saturating_mul(per_token);
        Duration::from_nanos(missing.saturating_sub(room))
    }

    /// Gives back `cost` tokens taken before (never past a full bucket).
    fn give(&mut self, limit: RateLimit, cost: u32) {
        if limit.rate == 0 {
            return;
        }
        let per_token = 1_000_000_000 / u64::from(limit.rate);
        self.full_at = self
            .full_at
            .saturating_sub(u64::from(cost).saturating_mul(per_token));
    }

    /// Full again (as a new bucket) at `now`.
    fn is_full_at(&self, now: u64) -> bool {
        self.full_at <= now
    }
}

/// Whole seconds to wait (`Retry-After`): rounded up, at least 1.
pub fn retry_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Reads a survey of the other nodes costs a client (10: at the default
/// `--read-rate` of 100/s, 10 surveys a second per address).
pub const SURVEY_READS: u32 = 10;

/// What one client address has used of its limits: shared by all its
/// connections, whatever their protocol.
#[derive(Debug, Default)]
pub struct Client {
    state: Mutex<ClientState>,
    /// The address's share of the global output budget, made on first use
    /// (see [`Client::output_budget`]).
    output: OnceLock<Arc<OutputBudget>>,
}

#[derive(Debug, Default)]
struct ClientState {
    /// Subscriptions added (`--subscribe-rate`).
    subscribe: TokenBucket,
    /// Calls of the app's connect hook (`--proxy-connect-rate`).
    connect: TokenBucket,
    /// Publishes of clients without the password (`--ws-publish-rate`).
    publish: TokenBucket,
    /// Failed authentications (`--auth-failure-rate`).
    auth: TokenBucket,
    /// Reads: history, presence, ping, refresh (`--read-rate`).
    read: TokenBucket,
    /// Patterns held (`--max-untrusted-patterns-per-client`).
    patterns: u32,
    /// Calls to the app's hooks in flight.
    calls: u32,
}

impl Client {
    fn state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` subscriptions from the address's subscribe bucket.
    pub fn take_subscribes(&self, limit: RateLimit, n: u32) -> bool {
        self.state().subscribe.take(limit, n)
    }

    /// Takes one publish from the address's publish bucket.
    pub fn take_publish(&self, limit: RateLimit) -> bool {
        self.state().publish.take(limit, 1)
    }

    /// Takes one read (history, presence, ping, refresh) from the
    /// address's read bucket.
    pub fn take_read(&self, limit: RateLimit) -> bool {
        self.state().read.take(limit, 1)
    }

    /// Takes a cluster-wide question (`PUBSUB CHANNELS`/`NUMSUB`/`NUMPAT`,
    /// `/api/channels`: every other node answers with up to a MiB) from the
    /// read bucket: [`SURVEY_READS`] reads, all or none.
    pub fn take_survey(&self, limit: RateLimit) -> bool {
        self.state().read.take(limit, SURVEY_READS)
    }

    /// Runs `check`, an authentication attempt, within the address's
    /// budget of failures: the attempt takes a token first, and a success
    /// gives it back, so only failures count and a client with the right
    /// credentials pays nothing while the budget lasts. With no token left
    /// `check` is not run at all (so a brute force learns nothing past
    /// the budget): `Err` says how long until an attempt would be.
    pub fn authenticate<T, E>(
        &self,
        limit: RateLimit,
        check: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, Duration> {
        let now = now_ns();
        {
            let mut st = self.state();
            if !st.auth.take_at(limit, 1, now) {
                return Err(st.auth.wait_at(limit, now));
            }
        }
        // Not under the lock: a signature check takes a while.
        let r = check();
        if r.is_ok() {
            self.state().auth.give(limit, 1);
        }
        Ok(r)
    }

    /// The address's share of `global`: a budget of `share` bytes whose
    /// use counts in `global` too (`global` itself when `share` is 0).
    /// Made on first use and kept with the address's entry.
    pub fn output_budget(&self, global: &Arc<OutputBudget>, share: usize) -> Arc<OutputBudget> {
        if share == 0 {
            return global.clone();
        }
        self.output
            .get_or_init(|| OutputBudget::share_of(global, share))
            .clone()
    }

    /// Takes one connect hook call; else how long until one would pass.
    pub fn take_connect(&self, limit: RateLimit) -> Result<(), Duration> {
        let now = now_ns();
        let mut st = self.state();
        if st.connect.take_at(limit, 1, now) {
            Ok(())
        } else {
            Err(st.connect.wait_at(limit, now))
        }
    }

    /// Counts one more pattern held, unless the address holds `max`
    /// already (0: no limit).
    pub fn take_pattern(&self, max: u32) -> bool {
        let mut st = self.state();
        if max > 0 && st.patterns >= max {
            return false;
        }
        st.patterns = st.patterns.saturating_add(1);
        true
    }

    /// Gives back `n` patterns counted before.
    pub fn give_patterns(&self, n: u32) {
        let mut st = self.state();
        st.patterns = st.patterns.saturating_sub(n);
    }

    /// Counts one more call to the app's hooks in flight, unless the
    /// address has `max` in flight already; counted until the guard drops.
    pub fn start_call(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.slot(Held::Call, max)
    }

    fn slot(self: &Arc<Self>, what: Held, max: u32) -> Option<Slot> {
        let mut st = self.state();
        let n = st.held(what);
        if max > 0 && *n >= max {
            return None;
        }
        *n = n.saturating_add(1);
        Some(Slot(self.clone(), Some(what)))
    }

    /// Patterns the address holds now.
    pub fn patterns(&self) -> u32 {
        self.state().patterns
    }

    /// As good as new: every bucket full, no pattern held. Forgetting such
    /// an address loses nothing.
    fn is_idle_at(&self, now: u64) -> bool {
        let st = self.state();
        st.patterns == 0
            && st.calls == 0
            && st.subscribe.is_full_at(now)
            && st.connect.is_full_at(now)
            && st.publish.is_full_at(now)
            && st.auth.is_full_at(now)
            && st.read.is_full_at(now)
            && self.output.get().is_none_or(|b| b.used() == 0)
    }
}

impl ClientState {
    fn held(&mut self, what: Held) -> &mut u32 {
        match what {
            Held::Call => &mut self.calls,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Held {
    Call,
}

/// One hook call in flight of a client address (see
/// [`Client::start_call`]).
pub struct Slot(Arc<Client>, Option<Held>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(what) = self.1 {
            let mut st = self.0.state();
            let n = st.held(what);
            *n = n.saturating_sub(1);
        }
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`, or one address), for
/// `--trusted-proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = match s.trim().split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s.trim(), None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let prefix = |a: u128, b: u128, bits: u8, width: u8| {
            let shift = u32::from(width - bits);
            bits == 0 || (a >> shift) == (b >> shift)
        };
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix(u32::from(n).into(), u32::from(a).into(), self.bits, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix(n.into(), a.into(), self.bits, 128),
            _ => false,
        }
    }
}

/// The address a request comes from: the peer's, or, when the peer is one
/// of `trusted` proxies, the last address in `X-Forwarded-For` (all its
/// lines, in order) that is not a trusted proxy, read from the right. A
/// hop that does not parse ends the walk at the hop before it (the last
/// one a trusted proxy vouched for); a list of trusted proxies only gives
/// its first.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for.rev() {
        for hop in line.rsplit(',') {
            let hop = hop.trim();
            let ip = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
            let Some(ip) = ip else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let lim = RateLimit { rate: 10, burst: 5 };
        let mut b = TokenBucket::default();
        let t0 = 100 * SEC;
        for i in 0..5 {
            assert!(b.take_at(lim, 1, t0), "token {i} of the burst");
        }
        assert!(!b.take_at(lim, 1, t0), "burst spent");
        // One token per 100 ms.
        assert!(!b.take_at(lim, 1, t0 + SEC / 20));
        assert!(b.take_at(lim, 1, t0 + SEC / 10));
        assert!(!b.take_at(lim, 1, t0 + SEC / 10));
        // A long pause refills to the burst, not beyond.
        let t1 = t0 + 60 * SEC;
        for _ in 0..5 {
            assert!(b.take_at(lim, 1, t1));
        }
        assert!(!b.take_at(lim, 1, t1));
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_on_a_full_bucket_and_empties_it() {
        let lim = RateLimit { rate: 10, burst: 5 };
        let mut b = TokenBucket::default();
        let t0 = 100 * SEC;
        assert!(b.take_at(lim, 20, t0));
        // Empty, not in debt: one token after 100 ms, full after 500 ms.
        assert!(!b.take_at(lim, 1, t0 + SEC / 20));
        assert!(b.take_at(lim, 1, t0 + SEC / 10));
        assert!(b.is_full_at(t0 + SEC / 2 + SEC / 10));
        let mut b = TokenBucket::default();
        assert!(b.take_at(lim, u32::MAX, t0));
        assert!(b.is_full_at(t0 + SEC / 2), "whatever the size");
        // Not on a bucket that is not full.
        let mut b = TokenBucket::default();
        assert!(b.take_at(lim, 1, t0));
        assert!(!b.take_at(lim, 20, t0));
        assert!(b.take_at(lim, 4, t0), "a refusal takes nothing");
    }

    #[test]
    fn zero_rate_is_no_limit_and_extremes_do_not_overflow() {
        let mut b = TokenBucket::default();
        let off = RateLimit { rate: 0, burst: 0 };
        for _ in 0..10_000 {
            assert!(b.take_at(off, u32::MAX, 0));
        }
        let lim = RateLimit {
            rate: u32::MAX,
            burst: u32::MAX,
        };
        assert!(b.take_at(lim, u32::MAX, u64::MAX - 1));
        let lim = RateLimit { rate: 1, burst: 0 };
        let mut b = TokenBucket::default();
        assert!(b.take_at(lim, u32::MAX, 0), "a burst of 0 counts as 1");
        assert!(!b.take_at(lim, 1, 0));
        assert!(b.take(lim, 0));
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn calls_are_counted_until_their_slot_drops() {
        let c = Arc::new(Client::default());
        let calls: Vec<_> = (0..3).map(|_| c.start_call(3).unwrap()).collect();
        assert!(c.start_call(3).is_none());
        assert!(!c.is_idle_at(u64::MAX), "a slot is held");
        drop(calls);
        assert!(c.start_call(3).is_some());
        assert!(c.is_idle_at(u64::MAX));
    }

    #[test]
    fn only_failed_authentications_spend_the_budget() {
        let c = Client::default();
        let lim = RateLimit { rate: 1, burst: 3 };
        let ok = || Ok::<(), ()>(());
        let bad = || Err::<(), ()>(());
        for _ in 0..100 {
            assert_eq!(c.authenticate(lim, ok), Ok(Ok(())), "a success is free");
        }
        for _ in 0..3 {
            assert_eq!(c.authenticate(lim, bad), Ok(Err(())));
        }
        // Spent: not even run, a success neither; the wait is under 1 s.
        let mut ran = false;
        let wait = c
            .authenticate(lim, || {
                ran = true;
                ok()
            })
            .unwrap_err();
        assert!(!ran);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let off = RateLimit { rate: 0, burst: 0 };
        assert_eq!(c.authenticate(off, bad), Ok(Err(())), "0: no limit");
        // Reads have their own bucket.
        let r = RateLimit { rate: 1, burst: 2 };
        assert!(c.take_read(r) && c.take_read(r) && !c.take_read(r));
        assert!(!c.is_idle_at(now_ns()), "spent buckets are remembered");
    }

    #[test]
    fn connect_refusal_says_when_to_retry() {
        let c = Client::default();
        let lim = RateLimit { rate: 2, burst: 2 };
        assert!(c.take_connect(lim).is_ok());
        assert!(c.take_connect(lim).is_ok());
        let wait = c.take_connect(lim).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let off = RateLimit { rate: 0, burst: 0 };
        assert!(c.take_connect(off).is_ok());
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn trusted_proxies_yield_the_last_untrusted_hop() {
        let t: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a trusted proxy: the header is the client's own words.
        assert_eq!(
            client_ip(ip("203.0.113.5"), ["1.2.3.4"].into_iter(), &t),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), [].into_iter(), &t),
            ip("10.1.1.1")
        );
        // The client may prepend anything: only the last untrusted counts.
        let lines = ["6.6.6.6, 1.2.3.4", "10.9.9.9, 192.0.2.7"];
        assert_eq!(
            client_ip(ip("10.1.1.1"), lines.into_iter(), &t),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("fd00::1"), ["2001:db8::9 , 10.0.0.3"].into_iter(), &t),
            ip("2001:db8::9")
        );
        // Garbage stops at the last hop a proxy vouched for.
        assert_eq!(
            client_ip(ip("10.1.1.1"), ["1.2.3.4, junk"].into_iter(), &t),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), ["1.2.3.4:555"].into_iter(), &t),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), ["10.2.2.2"].into_iter(), &t),
            ip("10.2.2.2")
        );
        assert!(t[0].contains(ip("::ffff:10.3.3.3")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!(!"::/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "x", "fd00::/129", "1.2.3.4/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let _ = Ipv6Addr::LOCALHOST;
    }
}
