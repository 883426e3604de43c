//! The names of one kind (channels, patterns or shard channels) that one
//! connection is subscribed to: a short vector while there are few, a hash
//! set beyond.
//!
//! Nearly every subscriber holds one to a few names, and three of these sets
//! live in every connection's task. A `HashSet` costs 48 bytes inline and,
//! with one name, a 148-byte table; this costs 24 bytes inline and one
//! 32-byte allocation per name while short. Lookups in the short form scan
//! at most [`FEW`] names, which compare by length first.

use std::collections::HashSet;

use bytes::Bytes;

/// Most names kept in the vector; one more moves them to a hash set.
const FEW: usize = 8;

/// See the module docs. Iteration follows insertion order while short.
#[derive(Debug)]
pub enum NameSet {
    Few(Vec<Bytes>),
    /// Boxed, so the short form sets the size of the enum.
    Many(Box<HashSet<Bytes>>),
}

impl Default for NameSet {
    fn default() -> Self {
        NameSet::Few(Vec::new())
    }
}

impl NameSet {
    pub fn len(&self) -> usize {
        match self {
            NameSet::Few(v) => v.len(),
            NameSet::Many(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        match self {
            NameSet::Few(v) => v.iter().any(|n| n[..] == *name),
            NameSet::Many(s) => s.contains(name),
        }
    }

    /// Adds `name`; false if it was there already.
    pub fn insert(&mut self, name: Bytes) -> bool {
        if self.contains(&name) {
            return false;
        }
        match self {
            NameSet::Few(v) if v.len() < FEW => {
                // Grown one at a time: a first push would otherwise reserve
                // room for four names, and most connections hold one.
                v.reserve_exact(1);
                v.push(name);
            }
            NameSet::Few(v) => {
                let mut s: HashSet<Bytes> = std::mem::take(v).into_iter().collect();
                s.insert(name);
                *self = NameSet::Many(Box::new(s));
            }
            NameSet::Many(s) => {
                s.insert(name);
            }
        }
        true
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        match self {
            NameSet::Few(v) => {
                let Some(i) = v.iter().position(|n| n[..] == *name) else {
                    return false;
                };
                v.remove(i);
                if v.is_empty() {
                    *v = Vec::new();
                }
                true
            }
            NameSet::Many(s) => {
                if !s.remove(name) {
                    return false;
                }
                // Back to the short form once well under its size, so a
                // connection that subscribed to many and left most of them
                // does not keep the table.
                if s.len() <= FEW / 2 {
                    *self = NameSet::Few(s.drain().collect());
                }
                true
            }
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = &Bytes> + '_> {
        match self {
            NameSet::Few(v) => Box::new(v.iter()),
            NameSet::Many(s) => Box::new(s.iter()),
        }
    }

    /// Empties the set, returning what it held.
    pub fn take(&mut self) -> Vec<Bytes> {
        match std::mem::take(self) {
            NameSet::Few(v) => v,
            NameSet::Many(s) => s.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms_agree() {
        assert_eq!(std::mem::size_of::<NameSet>(), 24);
        let mut s = NameSet::default();
        let name = |i: usize| Bytes::from(format!("ch:{i}"));
        for i in 0..20 {
            assert!(s.insert(name(i)));
            assert!(!s.insert(name(i)), "no duplicates");
            assert_eq!(s.len(), i + 1);
            assert!(matches!(s, NameSet::Few(_)) == (i < FEW));
        }
        assert!((0..20).all(|i| s.contains(&name(i))));
        assert!(!s.contains(b"ch:20"));
        for i in 0..17 {
            assert!(s.remove(&name(i)));
            assert!(!s.remove(&name(i)));
        }
        assert!(matches!(s, NameSet::Few(_)), "shrunk back");
        assert_eq!(s.len(), 3);
        let mut left: Vec<Bytes> = s.iter().cloned().collect();
        left.sort();
        assert_eq!(left, vec![name(17), name(18), name(19)]);
        assert_eq!(s.take().len(), 3);
        assert!(s.is_empty());
        assert!(matches!(&s, NameSet::Few(v) if v.capacity() == 0));
    }
}
