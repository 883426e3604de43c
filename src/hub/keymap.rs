//! The keyspace's map and its compact byte strings, sized like Redis's own
//! structures so that a million small keys cost no more than in Redis.
//!
//! [`Compact`] holds up to 22 bytes inline (no allocation: most keys, and
//! small string values, hash fields and values), longer ones in an
//! exact-sized box, and a string that `APPEND` or `SETRANGE` grew in a
//! vector with room to grow (as Redis's `sds` keeps slack after an append).
//!
//! [`KeyMap`] keeps its entries side by side in one vector and finds them
//! through a `hashbrown::HashTable` of 32-bit positions (SipHash with random
//! keys), so a key costs its slot (key and value, 72 bytes for the keyspace)
//! plus about 10 bytes of table, instead of a `HashMap<Bytes, Entry>`'s
//! 137-byte bucket at twice the load and a separate allocation for the key.
//! A removal moves the last slot into the gap, as `IndexMap::swap_remove`,
//! and says so ([`Removed`]): a slot's position is stable otherwise, so an
//! index may name a key by its position (the keyspace's deadline index
//! does: 16 bytes a key instead of a copy of the key).

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use bytes::Bytes;
use hashbrown::HashTable;

/// Bytes held inline by a [`Compact`].
pub const INLINE: usize = 22;

/// A byte string, inline up to [`INLINE`] bytes (24 bytes in all).
#[derive(Clone)]
pub enum Compact {
    Inline {
        len: u8,
        buf: [u8; INLINE],
    },
    /// Exactly sized: what a SET or a key stores.
    Boxed(Box<[u8]>),
    /// Grown by APPEND or SETRANGE: amortized growth, as Redis's raw
    /// strings after an append.
    Growable(Box<Vec<u8>>),
}

impl Compact {
    pub fn new(b: &[u8]) -> Compact {
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Compact::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Compact::Boxed(b.into())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Compact::Inline { len, buf } => &buf[..*len as usize],
            Compact::Boxed(b) => b,
            Compact::Growable(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reference-counted copy, for a reply.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_slice())
    }

    /// The string as a growable vector (moved out of a `Growable`, copied
    /// otherwise), for an in-place change.
    fn make_growable(&mut self) -> &mut Vec<u8> {
        if !matches!(self, Compact::Growable(_)) {
            *self = Compact::Growable(Box::new(self.as_slice().to_vec()));
        }
        match self {
            Compact::Growable(v) => v,
            _ => unreachable!("just made growable"),
        }
    }

    /// APPEND: adds `tail` at the end (amortized growth).
    pub fn append(&mut self, tail: &[u8]) {
        if let Compact::Inline { len, buf } = self {
            let l = *len as usize;
            if l + tail.len() <= INLINE {
                buf[l..l + tail.len()].copy_from_slice(tail);
                *len = (l + tail.len()) as u8;
                return;
            }
        }
        self.make_growable().extend_from_slice(tail);
    }

    /// SETRANGE: writes `data` at `offset`, padding with zero bytes.
    pub fn set_range(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        if let Compact::Inline { len, buf } = self {
            if end <= INLINE {
                let l = *len as usize;
                if offset > l {
                    buf[l..offset].fill(0);
                }
                buf[offset..end].copy_from_slice(data);
                *len = (*len).max(end as u8);
                return;
            }
        }
        let v = self.make_growable();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[offset..end].copy_from_slice(data);
    }

    /// Whether the bytes live outside the 24 bytes of the value itself.
    pub fn is_heap(&self) -> bool {
        !matches!(self, Compact::Inline { .. })
    }
}

impl Default for Compact {
    fn default() -> Self {
        Compact::new(b"")
    }
}

impl std::ops::Deref for Compact {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Compact {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Compact {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Eq for Compact {}

impl Hash for Compact {
    /// As the bytes hash, so maps keyed by `Compact` find `&[u8]`.
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h)
    }
}

impl std::fmt::Debug for Compact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}

/// What [`KeyMap::remove_reporting`] removed.
pub struct Removed<V> {
    /// The removed slot's position.
    pub at: usize,
    pub value: V,
    /// The position of the slot that moved into `at` (the last one), if any.
    pub moved_from: Option<usize>,
}

/// A map from byte-string keys to `V`: slots side by side, found through a
/// table of positions (see the module doc).
pub struct KeyMap<V> {
    table: HashTable<u32>,
    slots: Vec<(Compact, V)>,
    hasher: RandomState,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap {
            table: HashTable::new(),
            slots: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

fn hash_of(hasher: &RandomState, key: &[u8]) -> u64 {
    hasher.hash_one(key)
}

impl<V> KeyMap<V> {
    fn position(&self, key: &[u8]) -> Option<usize> {
        let h = hash_of(&self.hasher, key);
        self.table
            .find(h, |&i| self.slots[i as usize].0.as_slice() == key)
            .map(|&i| i as usize)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.position(key).map(|i| &self.slots[i].1)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.slots[i].1)
    }

    pub fn get_key_value(&self, key: &[u8]) -> Option<(&[u8], &V)> {
        self.position(key)
            .map(|i| (self.slots[i].0.as_slice(), &self.slots[i].1))
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        if let Some(i) = self.position(key) {
            return Some(std::mem::replace(&mut self.slots[i].1, value));
        }
        // 4 billion keys would need 288 GiB of slots: memory runs out first.
        let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 keys");
        let KeyMap {
            table,
            slots,
            hasher,
        } = self;
        slots.push((Compact::new(key), value));
        let slots = &*slots;
        table.insert_unique(hash_of(hasher, key), at, |&i| {
            hash_of(hasher, &slots[i as usize].0)
        });
        None
    }

    /// Removes `key`; returns its value. The last slot moves into the gap.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.remove_reporting(key).map(|r| r.value)
    }

    /// The position of `key`'s slot: stable until a removal moves it.
    pub fn position_of(&self, key: &[u8]) -> Option<usize> {
        self.position(key)
    }

    /// The slot at position `i`.
    pub fn at(&self, i: usize) -> Option<(&[u8], &V)> {
        self.slots.get(i).map(|(k, v)| (k.as_slice(), v))
    }

    pub fn at_mut(&mut self, i: usize) -> Option<&mut V> {
        self.slots.get_mut(i).map(|(_, v)| v)
    }

    /// Removes `key`, saying where it was and which slot moved into its
    /// place.
    pub fn remove_reporting(&mut self, key: &[u8]) -> Option<Removed<V>> {
        let h = hash_of(&self.hasher, key);
        let slots = &self.slots;
        let at = match self
            .table
            .find_entry(h, |&i| slots[i as usize].0.as_slice() == key)
        {
            Ok(e) => e.remove().0 as usize,
            Err(_) => return None,
        };
        let last = self.slots.len() - 1;
        let (_, value) = self.slots.swap_remove(at);
        if at != last {
            let moved = hash_of(&self.hasher, &self.slots[at].0);
            if let Some(i) = self.table.find_mut(moved, |&i| i as usize == last) {
                *i = at as u32;
            }
        }
        // Shrinking keeps every slot where it is.
        self.shrink_if_sparse();
        Some(Removed {
            at,
            value,
            moved_from: (at != last).then_some(last),
        })
    }

    /// Gives memory back once three quarters of the room is unused (Redis
    /// shrinks its tables too).
    fn shrink_if_sparse(&mut self) {
        let (len, cap) = (self.slots.len(), self.slots.capacity());
        if cap > 64 && len < cap / 4 {
            self.slots.shrink_to(len * 2);
            let KeyMap {
                table,
                slots,
                hasher,
            } = self;
            let slots = &*slots;
            table.shrink_to(len * 2, |&i| hash_of(hasher, &slots[i as usize].0));
        }
    }

    /// Removes everything and gives the memory back.
    pub fn clear(&mut self) {
        self.table = HashTable::new();
        self.slots = Vec::new();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots.iter().map(|(k, v)| (k.as_slice(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.slots.iter().map(|(k, _)| k.as_slice())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_strings_are_inline_when_small() {
        assert_eq!(std::mem::size_of::<Compact>(), 24);
        let small = Compact::new(b"k:123456");
        assert!(!small.is_heap());
        assert_eq!(&*small, b"k:123456");
        let big = Compact::new(&[7u8; 23]);
        assert!(big.is_heap());
        assert_eq!(big.len(), 23);
        let mut s = Compact::new(b"abc");
        s.append(b"def");
        assert_eq!(&*s, b"abcdef");
        assert!(!s.is_heap());
        s.append(&[b'x'; 30]);
        assert_eq!(s.len(), 36);
        assert!(matches!(s, Compact::Growable(_)));
        let mut r = Compact::new(b"hello");
        r.set_range(7, b"w");
        assert_eq!(&*r, b"hello\0\0w");
        r.set_range(1, b"EL");
        assert_eq!(&*r, b"hELlo\0\0w");
        r.set_range(30, b"!");
        assert_eq!(r.len(), 31);
        assert_eq!(&r[..8], b"hELlo\0\0w");
        assert_eq!(r[30], b'!');
    }

    #[test]
    fn keymap_inserts_finds_and_removes() {
        let mut m: KeyMap<u64> = KeyMap::default();
        for i in 0..1000u64 {
            assert_eq!(m.insert(format!("key:{i}").as_bytes(), i), None);
        }
        assert_eq!(m.insert(b"key:5", 55), Some(5));
        assert_eq!(m.len(), 1000);
        for i in (0..1000u64).step_by(3) {
            let want = if i == 5 { 55 } else { i };
            assert_eq!(m.remove(format!("key:{i}").as_bytes()), Some(want));
        }
        assert_eq!(m.remove(b"key:0"), None);
        for i in 0..1000u64 {
            let got = m.get(format!("key:{i}").as_bytes()).copied();
            let want = (i % 3 != 0).then_some(if i == 5 { 55 } else { i });
            assert_eq!(got, want, "key:{i}");
        }
        assert_eq!(m.iter().count(), m.len());
        let long = vec![b'L'; 300];
        m.insert(&long, 1);
        assert_eq!(m.get_key_value(&long), Some((&long[..], &1)));
        // Removing nearly everything shrinks, and what is left is still found.
        let keys: Vec<Vec<u8>> = m.keys().map(|k| k.to_vec()).collect();
        for k in &keys[1..] {
            assert!(m.remove(k).is_some());
        }
        assert_eq!(m.len(), 1);
        assert!(m.contains_key(&keys[0]));
        m.clear();
        assert!(m.is_empty());
    }
}
