//! Send timestamps carried inside payloads, and the process clock they use.
//!
//! A payload is `t` + 16 hex digits of nanoseconds since [`epoch`] + `x`
//! padding. Publishers and subscribers run in this one process, so they
//! share the epoch and the difference is the publish-to-deliver latency.
//! The text is plain ASCII that is not JSON, so Herald delivers it to
//! WebSocket subscribers as a JSON string with the same characters, and an
//! nchan-style server passes it through as the frame itself.

use std::sync::OnceLock;
use std::time::Instant;

/// The smallest payload that holds a timestamp.
pub const MIN_PAYLOAD: usize = 17;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The common time origin of all timestamps (set on first use).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
#[inline]
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A payload of `size` bytes (at least [`MIN_PAYLOAD`]) with room for a stamp.
pub fn payload(size: usize) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(MIN_PAYLOAD)];
    p[0] = b't';
    stamp(&mut p, 0);
    p
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `ns` into a payload made by [`payload`].
#[inline]
pub fn stamp(p: &mut [u8], ns: u64) {
    for i in 0..16 {
        p[1 + i] = HEX[((ns >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// The timestamp at the start of `p`, when it carries one.
#[inline]
pub fn read(p: &[u8]) -> Option<u64> {
    if p.len() < MIN_PAYLOAD || p[0] != b't' {
        return None;
    }
    let mut v = 0u64;
    for &c in &p[1..17] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let mut p = super::payload(64);
        assert_eq!(p.len(), 64);
        for v in [0, 1, 0xdead_beef, u64::MAX] {
            super::stamp(&mut p, v);
            assert_eq!(super::read(&p), Some(v));
        }
        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_err());
        assert_eq!(super::payload(3).len(), super::MIN_PAYLOAD);
    }
}
