//! A log-linear latency histogram with bounded memory.
//!
//! Values (nanoseconds) below 128 get one bucket each; above, every power of
//! two is split into 64 linear sub-buckets, so a reported percentile is
//! within 1/64 (≈1.6 %) of the true sample. The whole `u64` range fits in
//! 3,776 counters (≈30 KiB), whatever the number of samples: each task keeps
//! its own histogram and they are merged at the end, so recording is a plain
//! array increment with no sharing between tasks.

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS; // 64 sub-buckets per power of two
const LINEAR: u64 = SUB * 2; // values below this are exact
const BUCKETS: usize = (LINEAR + (63 - SUB_BITS as u64) * SUB) as usize;

/// Counts of nanosecond samples in log-linear buckets.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as u64; // >= SUB_BITS + 1
    let m = (v >> (e - SUB_BITS as u64)) - SUB; // 0..SUB
    (LINEAR + (e - SUB_BITS as u64 - 1) * SUB + m) as usize
}

/// The highest value that lands in bucket `i` (what percentiles report, so
/// they never understate).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let e = (i - LINEAR) / SUB + SUB_BITS as u64 + 1;
    let m = (i - LINEAR) % SUB;
    let low = (SUB + m) << (e - SUB_BITS as u64);
    low.saturating_add((1u64 << (e - SUB_BITS as u64)) - 1)
}

impl Histogram {
    /// Records one sample of `ns` nanoseconds.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.sum += ns as u128;
        self.max = self.max.max(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0.0..=1.0) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    pub fn mean_us(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.sum / self.total as u128) as f64 / 1000.0
        }
    }

    pub fn max_us(&self) -> f64 {
        self.max as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..10_000_000u64)
            .step_by(997)
            .chain([u64::MAX / 3, u64::MAX])
        {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last);
            last = i;
            let up = upper(i);
            assert!(up >= v, "{v} -> {i} -> {up}");
            assert!(up - v <= v / 64 + 1, "{v} -> {up}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile_us(0.5);
        assert!((500.0..=510.0).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((990.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile_us(1.0), 1000.0);
    }
}
