//! A per-connection rate limit in eight bytes: a token bucket kept as one
//! timestamp (the generic cell rate algorithm), so the thousands of idle
//! connections that carry one pay for a `u64`, not for a refill clock and a
//! level.
//!
//! The bucket holds `burst` tokens and refills at `rate` a second. The state
//! is the "theoretical arrival time": the moment the bucket would be full
//! again. A request of `cost` tokens passes when the bucket holds at least
//! `min(cost, burst)`: a request larger than the whole burst still passes on
//! a full bucket and leaves it in debt, so the client then waits as long as
//! that many tokens take to refill, and no request is impossible.

use std::sync::OnceLock;
use std::time::Instant;

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
    /// Takes `cost` tokens if the bucket holds `min(cost, burst)` of them;
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
            .saturating_add(u64::from(cost).saturating_mul(per_token));
        true
    }
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
    fn a_request_larger_than_the_burst_passes_on_a_full_bucket_into_debt() {
        let lim = RateLimit { rate: 10, burst: 5 };
        let mut b = TokenBucket::default();
        let t0 = 100 * SEC;
        assert!(b.take_at(lim, 20, t0));
        // 20 tokens taken from 5: 15 owed, 1.5 s, then the bucket fills
        // up from empty.
        assert!(!b.take_at(lim, 1, t0 + SEC));
        assert!(b.take_at(lim, 1, t0 + 16 * SEC / 10));
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
