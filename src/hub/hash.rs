//! Hashes, held as Redis 7.0 holds them: small ones packed in one buffer in
//! insertion order (Redis's listpack: at most 128 fields, none of them nor
//! their values longer than 64 bytes), larger ones in a hash table. A hash
//! never goes back to packed, as in Redis.
//!
//! The packed form is what makes a session hash cheap (a length byte per
//! field and per value, nothing else), and its order is the order Redis
//! replies in (HGETALL, HKEYS, HSCAN, a whole-hash HRANDFIELD). The table
//! is an `IndexMap` (SipHash with random keys): a random field is one index
//! away, a removal moves the last field into the gap, and HSCAN walks it
//! downwards so a field present for the whole scan is never skipped.

use bytes::Bytes;
use indexmap::IndexMap;

use super::keymap::Compact;

/// Redis's `hash-max-listpack-entries`.
pub const MAX_PACKED_ENTRIES: usize = 128;
/// Redis's `hash-max-listpack-value`.
pub const MAX_PACKED_VALUE: usize = 64;

/// A hash value: 16 bytes, so it sits in the keyspace's slot without a
/// box of its own.
#[derive(Clone, Debug)]
pub enum HashValue {
    /// Pairs side by side: `[field length][field][value length][value]`,
    /// lengths in one byte (both are at most 64). Exactly sized, as Redis
    /// reallocates a listpack on every insertion.
    Packed(Box<[u8]>),
    /// Past the packed limits.
    Table(Box<IndexMap<Compact, Compact>>),
}

impl Default for HashValue {
    fn default() -> Self {
        HashValue::Packed(Box::default())
    }
}

/// Runs `f` on a packed buffer as a vector, then stores it exactly sized
/// again (no copy: the vector is the box's own memory).
fn edit_packed<R>(b: &mut Box<[u8]>, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut v = std::mem::take(b).into_vec();
    let r = f(&mut v);
    *b = v.into_boxed_slice();
    r
}

/// The packed pairs of `buf`, in order.
fn packed_pairs(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let fl = *buf.get(at)? as usize;
        let field = buf.get(at + 1..at + 1 + fl)?;
        let vat = at + 1 + fl;
        let vl = *buf.get(vat)? as usize;
        let value = buf.get(vat + 1..vat + 1 + vl)?;
        at = vat + 1 + vl;
        Some((field, value))
    })
}

/// Where the pair of `field` starts in `buf`, and where it ends.
fn packed_find(buf: &[u8], field: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < buf.len() {
        let fl = buf[at] as usize;
        let vat = at + 1 + fl;
        let end = vat + 1 + *buf.get(vat)? as usize;
        if buf.get(at + 1..vat)? == field {
            return Some((at, end));
        }
        at = end;
    }
    None
}

fn packed_push(buf: &mut Vec<u8>, field: &[u8], value: &[u8]) {
    buf.reserve_exact(2 + field.len() + value.len());
    buf.push(field.len() as u8);
    buf.extend_from_slice(field);
    buf.push(value.len() as u8);
    buf.extend_from_slice(value);
}

impl HashValue {
    pub fn new() -> HashValue {
        HashValue::default()
    }

    /// Whether Redis would hold it as a listpack (`OBJECT ENCODING`).
    pub fn is_packed(&self) -> bool {
        matches!(self, HashValue::Packed(_))
    }

    pub fn len(&self) -> usize {
        match self {
            HashValue::Packed(b) => packed_pairs(b).count(),
            HashValue::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            HashValue::Packed(b) => b.is_empty(),
            HashValue::Table(t) => t.is_empty(),
        }
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            HashValue::Packed(b) => packed_pairs(b).find(|(f, _)| *f == field).map(|(_, v)| v),
            HashValue::Table(t) => t.get(field).map(|v| v.as_slice()),
        }
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Moves a packed hash to the table form (Redis's `hashTypeConvert`).
    pub fn convert(&mut self) {
        if let HashValue::Packed(b) = self {
            let mut t = IndexMap::with_capacity(MAX_PACKED_ENTRIES + 1);
            for (f, v) in packed_pairs(b) {
                t.insert(Compact::new(f), Compact::new(v));
            }
            *self = HashValue::Table(Box::new(t));
        }
    }

    /// Converts before a write that names any string longer than a packed
    /// hash takes (HSET checks all its arguments first, as Redis does).
    pub fn prepare_for<'a>(&mut self, args: impl IntoIterator<Item = &'a [u8]>) {
        if self.is_packed() && args.into_iter().any(|a| a.len() > MAX_PACKED_VALUE) {
            self.convert();
        }
    }

    /// Sets `field` to `value`; true if the field is new. A packed hash
    /// keeps an updated field in place and appends a new one, and turns
    /// into a table past 128 fields or for a string longer than 64 bytes.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        self.prepare_for([field, value]);
        match self {
            HashValue::Packed(b) => {
                let new = match packed_find(b, field) {
                    Some((start, end)) => {
                        let vat = start + 1 + field.len();
                        if end - vat - 1 == value.len() {
                            b[vat + 1..end].copy_from_slice(value);
                        } else {
                            let mut tail = Vec::with_capacity(1 + value.len());
                            tail.push(value.len() as u8);
                            tail.extend_from_slice(value);
                            edit_packed(b, |v| {
                                v.splice(vat..end, tail);
                            });
                        }
                        false
                    }
                    None => {
                        edit_packed(b, |v| packed_push(v, field, value));
                        true
                    }
                };
                if new && self.len() > MAX_PACKED_ENTRIES {
                    self.convert();
                }
                new
            }
            HashValue::Table(t) => match t.get_mut(field) {
                Some(v) => {
                    *v = Compact::new(value);
                    false
                }
                None => {
                    t.insert(Compact::new(field), Compact::new(value));
                    true
                }
            },
        }
    }

    /// Removes `field`; whether it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            HashValue::Packed(b) => match packed_find(b, field) {
                Some((start, end)) => {
                    edit_packed(b, |v| {
                        v.drain(start..end);
                    });
                    true
                }
                None => false,
            },
            HashValue::Table(t) => t.swap_remove(field).is_some(),
        }
    }

    /// Every pair, in Redis's order for a packed hash (insertion order).
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        match self {
            HashValue::Packed(b) => packed_pairs(b).collect(),
            HashValue::Table(t) => t.iter().map(|(f, v)| (&f[..], &v[..])).collect(),
        }
    }

    /// Every pair, copied out for a reply.
    pub fn to_pairs(&self) -> Vec<(Bytes, Bytes)> {
        self.pairs()
            .into_iter()
            .map(|(f, v)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
            .collect()
    }

    /// The pair at position `i` of a table (random picks; a packed hash
    /// is small enough to list with [`HashValue::pairs`] first).
    pub fn table_index(&self, i: usize) -> Option<(&[u8], &[u8])> {
        match self {
            HashValue::Packed(_) => None,
            HashValue::Table(t) => t.get_index(i).map(|(f, v)| (&f[..], &v[..])),
        }
    }

    /// One HSCAN page of a table: about `count` pairs walking the table
    /// from the end towards the start, and the next cursor (0: done). See
    /// `SetValue::scan` for why a field present throughout is never
    /// skipped. A packed hash answers whole, as Redis answers a listpack.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<(Bytes, Bytes)>) {
        let HashValue::Table(t) = self else {
            return (0, self.to_pairs());
        };
        let len = t.len();
        let end = match cursor {
            0 => len,
            c => usize::try_from(c).unwrap_or(usize::MAX).min(len),
        };
        let start = end.saturating_sub(count.max(1));
        let page = (start..end)
            .rev()
            .filter_map(|i| t.get_index(i))
            .map(|(f, v)| (f.to_bytes(), v.to_bytes()))
            .collect();
        (start as u64, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(h: &HashValue) -> Vec<String> {
        h.pairs()
            .iter()
            .map(|(f, _)| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    #[test]
    fn packed_keeps_insertion_order_and_updates_in_place() {
        let mut h = HashValue::new();
        assert!(h.insert(b"b", b"1"));
        assert!(h.insert(b"a", b"2"));
        assert!(h.insert(b"c", b"3"));
        assert!(!h.insert(b"b", b"longer value"));
        assert!(!h.insert(b"a", b"9"));
        assert_eq!(keys(&h), ["b", "a", "c"]);
        assert_eq!(h.get(b"b"), Some(&b"longer value"[..]));
        assert_eq!(h.get(b"a"), Some(&b"9"[..]));
        assert!(h.remove(b"a"));
        assert!(!h.remove(b"a"));
        assert_eq!(keys(&h), ["b", "c"]);
        assert_eq!(h.len(), 2);
        assert!(h.is_packed());
        // An empty field and an empty value are fine.
        assert!(h.insert(b"", b""));
        assert_eq!(h.get(b""), Some(&b""[..]));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn converts_past_the_listpack_limits() {
        let mut h = HashValue::new();
        for i in 0..MAX_PACKED_ENTRIES {
            h.insert(format!("f{i}").as_bytes(), b"v");
        }
        assert!(h.is_packed());
        h.insert(b"one more", b"v");
        assert!(!h.is_packed());
        assert_eq!(h.len(), MAX_PACKED_ENTRIES + 1);
        assert_eq!(h.get(b"f7"), Some(&b"v"[..]));
        let mut h = HashValue::new();
        h.insert(b"f", &[b'x'; 64]);
        assert!(h.is_packed());
        h.insert(b"g", &[b'x'; 65]);
        assert!(!h.is_packed());
        let mut h = HashValue::new();
        h.insert(&[b'k'; 65], b"v");
        assert!(!h.is_packed());
        assert_eq!(h.get(&[b'k'; 65]), Some(&b"v"[..]));
    }

    #[test]
    fn table_scan_returns_every_field() {
        let mut h = HashValue::new();
        for i in 0..300 {
            h.insert(format!("f{i}").as_bytes(), b"v");
        }
        let (mut cursor, mut seen) = (0, std::collections::HashSet::new());
        loop {
            let (next, page) = h.scan(cursor, 17);
            for (f, _) in page {
                assert!(seen.insert(f));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 300);
    }
}
