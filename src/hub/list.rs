//! Lists, held as Redis 7.0's quicklist holds them: elements side by side
//! with their length before and after each (as in a listpack, so a buffer
//! is walked from either end), a small list in one exactly sized buffer,
//! a larger one in nodes of up to 8 KiB (Redis's default
//! `list-max-listpack-size -2`) kept in a deque.
//!
//! Pushes and pops at either end cost O(1) (amortized: a node keeps free
//! room at both ends, and its data moves at most a few times while it
//! fills), whatever the length, so a queue never copies its backlog; an
//! index is found by skipping whole nodes by their counts, then walking one
//! node. A list that shrinks back under half the packed size is packed
//! again. An element costs its bytes and twice the bytes of its length
//! (two for an element under 128 bytes); a small list, its 16 bytes in the
//! keyspace's slot, a 2-byte count and the allocator's rounding.

use std::collections::VecDeque;

use bytes::Bytes;

/// Bytes past which a packed list becomes nodes.
pub const PACKED_MAX: usize = 2048;
/// Bytes of a node (an element larger than this gets a node of its own).
pub const NODE_MAX: usize = 8192;
/// The smallest node allocated.
const NODE_MIN: usize = 256;

/// An end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The head (LPUSH, LPOP, `LEFT`).
    Left,
    /// The tail (RPUSH, RPOP, `RIGHT`).
    Right,
}

/// A list value: 16 bytes, so it sits in the keyspace's slot without a
/// box of its own while it is small.
#[derive(Clone, Debug)]
pub enum ListValue {
    /// `[count: u16 LE][element]…`, exactly sized (as Redis reallocates a
    /// listpack on every insertion).
    Packed(Box<[u8]>),
    /// Past [`PACKED_MAX`] bytes.
    Nodes(Box<Nodes>),
}

impl Default for ListValue {
    fn default() -> Self {
        ListValue::Packed(Box::new([0, 0]))
    }
}

// ---- the element encoding ------------------------------------------------

fn varint_len(mut n: usize) -> usize {
    let mut l = 1;
    while n >= 0x80 {
        n >>= 7;
        l += 1;
    }
    l
}

/// Bytes an element of `n` bytes takes: its length (LEB128), its bytes,
/// its length again with the bytes reversed (read from the end).
fn encoded_len(n: usize) -> usize {
    2 * varint_len(n) + n
}

/// Writes `elem` encoded into `out` (exactly [`encoded_len`] bytes).
fn encode_into(out: &mut [u8], elem: &[u8]) {
    let vl = varint_len(elem.len());
    let mut n = elem.len();
    for i in 0..vl {
        let b = (n & 0x7f) as u8 | if i + 1 < vl { 0x80 } else { 0 };
        out[i] = b;
        // The trailing copy, reversed: its last byte holds the low bits.
        out[out.len() - 1 - i] = b;
        n >>= 7;
    }
    out[vl..vl + elem.len()].copy_from_slice(elem);
}

fn encode_push(out: &mut Vec<u8>, elem: &[u8]) {
    let at = out.len();
    out.resize(at + encoded_len(elem.len()), 0);
    encode_into(&mut out[at..], elem);
}

/// The element whose encoding starts at `at`: its bytes' range, and where
/// the next element starts.
fn decode_at(buf: &[u8], at: usize) -> (usize, usize, usize) {
    let (mut n, mut shift, mut i) = (0usize, 0, at);
    loop {
        let b = buf[i];
        n |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let next = i + n + (i - at);
    (i, i + n, next)
}

/// The element whose encoding ends at `end`: where it starts, and its
/// bytes' range.
fn decode_before(buf: &[u8], end: usize) -> (usize, usize, usize) {
    let (mut n, mut shift, mut i) = (0usize, 0, end);
    loop {
        i -= 1;
        let b = buf[i];
        n |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let vl = end - i;
    let data_end = i;
    let data_start = data_end - n;
    (data_start - vl, data_start, data_end)
}

/// The elements of an encoded buffer, from either end.
#[derive(Clone)]
pub struct Elems<'a> {
    buf: &'a [u8],
    front: usize,
    back: usize,
}

impl<'a> Elems<'a> {
    fn new(buf: &'a [u8]) -> Elems<'a> {
        Elems {
            buf,
            front: 0,
            back: buf.len(),
        }
    }
}

impl<'a> Iterator for Elems<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.front >= self.back {
            return None;
        }
        let (s, e, next) = decode_at(self.buf, self.front);
        self.front = next;
        Some(&self.buf[s..e])
    }
}

impl<'a> DoubleEndedIterator for Elems<'a> {
    fn next_back(&mut self) -> Option<&'a [u8]> {
        if self.front >= self.back {
            return None;
        }
        let (start, s, e) = decode_before(self.buf, self.back);
        self.back = start;
        Some(&self.buf[s..e])
    }
}

/// The byte offset of element `k` of `buf`, which holds `count` elements
/// (`buf.len()` for `k == count`): walked from the nearer end.
fn offset_of(buf: &[u8], count: usize, k: usize) -> usize {
    if k <= count / 2 {
        (0..k).fold(0, |at, _| decode_at(buf, at).2)
    } else {
        (k..count).fold(buf.len(), |end, _| decode_before(buf, end).0)
    }
}

// ---- nodes ---------------------------------------------------------------

/// One node: its elements at `buf[start..end]`, free room on both sides.
#[derive(Clone, Debug)]
struct Node {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    count: usize,
}

impl Node {
    /// A node holding `data` (`count` elements), exactly sized.
    fn from_data(data: &[u8], count: usize) -> Node {
        Node {
            buf: data.into(),
            start: 0,
            end: data.len(),
            count,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn used(&self) -> usize {
        self.end - self.start
    }

    /// Pushes `elem` at `side` if it fits in [`NODE_MAX`] (or the node is
    /// empty); false otherwise. Room is made by growing the buffer
    /// (doubling) or moving the data so the free room is split evenly.
    fn try_push(&mut self, side: End, elem: &[u8]) -> bool {
        let need = encoded_len(elem.len());
        let used = self.used();
        if used + need > self.buf.len() {
            if used + need > NODE_MAX && self.count > 0 {
                return false;
            }
            let cap = (used + need)
                .next_power_of_two()
                .clamp(NODE_MIN, NODE_MAX)
                .max(used + need);
            let mut buf = vec![0u8; cap].into_boxed_slice();
            // Free room on the side being pushed.
            let at = match side {
                End::Left => cap - used,
                End::Right => 0,
            };
            buf[at..at + used].copy_from_slice(self.data());
            self.buf = buf;
            self.start = at;
            self.end = at + used;
        } else {
            let room = match side {
                End::Left => self.start,
                End::Right => self.buf.len() - self.end,
            };
            if room < need {
                let free = self.buf.len() - used - need;
                let at = match side {
                    End::Left => need + free / 2,
                    End::Right => free / 2,
                };
                self.buf.copy_within(self.start..self.end, at);
                self.start = at;
                self.end = at + used;
            }
        }
        match side {
            End::Left => {
                self.start -= need;
                encode_into(&mut self.buf[self.start..self.start + need], elem);
            }
            End::Right => {
                encode_into(&mut self.buf[self.end..self.end + need], elem);
                self.end += need;
            }
        }
        self.count += 1;
        true
    }

    fn pop(&mut self, side: End) -> Option<Bytes> {
        if self.count == 0 {
            return None;
        }
        let v = match side {
            End::Left => {
                let (s, e, next) = decode_at(&self.buf, self.start);
                self.start = next;
                Bytes::copy_from_slice(&self.buf[s..e])
            }
            End::Right => {
                let (start, s, e) = decode_before(&self.buf, self.end);
                self.end = start;
                Bytes::copy_from_slice(&self.buf[s..e])
            }
        };
        self.count -= 1;
        Some(v)
    }
}

/// Nodes of elements, in order, with the total count.
#[derive(Clone, Debug, Default)]
pub struct Nodes {
    nodes: VecDeque<Node>,
    len: usize,
}

/// Packs encoded elements into nodes of at most [`NODE_MAX`] bytes, each
/// exactly sized.
fn nodes_from(data: &[u8]) -> VecDeque<Node> {
    let mut out = VecDeque::new();
    let (mut start, mut at, mut count) = (0, 0, 0);
    while at < data.len() {
        let next = decode_at(data, at).2;
        if next - start > NODE_MAX && count > 0 {
            out.push_back(Node::from_data(&data[start..at], count));
            start = at;
            count = 0;
        }
        count += 1;
        at = next;
    }
    if count > 0 {
        out.push_back(Node::from_data(&data[start..], count));
    }
    out
}

impl Nodes {
    fn from_data(data: &[u8], len: usize) -> Nodes {
        Nodes {
            nodes: nodes_from(data),
            len,
        }
    }

    fn push(&mut self, side: End, elem: &[u8]) {
        let node = match side {
            End::Left => self.nodes.front_mut(),
            End::Right => self.nodes.back_mut(),
        };
        if !node.is_some_and(|n| n.try_push(side, elem)) {
            let mut n = Node::from_data(&[], 0);
            n.try_push(side, elem);
            match side {
                End::Left => self.nodes.push_front(n),
                End::Right => self.nodes.push_back(n),
            }
        }
        self.len += 1;
    }

    fn pop(&mut self, side: End) -> Option<Bytes> {
        let node = match side {
            End::Left => self.nodes.front_mut()?,
            End::Right => self.nodes.back_mut()?,
        };
        let v = node.pop(side)?;
        if node.count == 0 {
            match side {
                End::Left => self.nodes.pop_front(),
                End::Right => self.nodes.pop_back(),
            };
        }
        self.len -= 1;
        Some(v)
    }

    /// The node holding element `index` (< len), and the element's place
    /// in it: nodes skipped by their counts from the nearer end.
    fn locate(&self, index: usize) -> (usize, usize) {
        if index < self.len / 2 {
            let mut left = index;
            for (i, n) in self.nodes.iter().enumerate() {
                if left < n.count {
                    return (i, left);
                }
                left -= n.count;
            }
        } else {
            let mut right = self.len - index;
            for (i, n) in self.nodes.iter().enumerate().rev() {
                if right <= n.count {
                    return (i, n.count - right);
                }
                right -= n.count;
            }
        }
        (self.nodes.len().saturating_sub(1), 0)
    }

    /// Replaces node `i` with `data` (`count` elements), split into nodes
    /// again if it outgrew one; an empty node goes. Returns how many nodes
    /// took its place.
    fn replace(&mut self, i: usize, data: &[u8], count: usize) -> usize {
        let fresh = nodes_from(data);
        let n = self.nodes.remove(i).map_or(0, |n| n.count);
        self.len = self.len + count - n;
        let k = fresh.len();
        for (j, node) in fresh.into_iter().enumerate() {
            self.nodes.insert(i + j, node);
        }
        k
    }

    /// Drops `n` elements at `side`, whole nodes without walking them.
    fn drop_side(&mut self, side: End, mut n: usize) {
        while n > 0 {
            let node = match side {
                End::Left => self.nodes.front_mut(),
                End::Right => self.nodes.back_mut(),
            };
            let Some(node) = node else {
                return;
            };
            if n >= node.count {
                n -= node.count;
                self.len -= node.count;
                match side {
                    End::Left => self.nodes.pop_front(),
                    End::Right => self.nodes.pop_back(),
                };
                continue;
            }
            for _ in 0..n {
                match side {
                    End::Left => node.start = decode_at(&node.buf, node.start).2,
                    End::Right => node.end = decode_before(&node.buf, node.end).0,
                }
            }
            node.count -= n;
            self.len -= n;
            n = 0;
        }
    }

    fn bytes(&self) -> usize {
        self.nodes.iter().map(Node::used).sum()
    }

    /// All elements, encoded, in one buffer.
    fn concat(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.bytes());
        for n in &self.nodes {
            v.extend_from_slice(n.data());
        }
        v
    }
}

/// The segments of encoded elements a list is made of, in order.
enum Segs<'a> {
    One(Option<&'a [u8]>),
    Nodes(std::collections::vec_deque::Iter<'a, Node>),
}

impl<'a> Iterator for Segs<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Segs::One(s) => s.take(),
            Segs::Nodes(it) => it.next().map(Node::data),
        }
    }
}

impl<'a> DoubleEndedIterator for Segs<'a> {
    fn next_back(&mut self) -> Option<&'a [u8]> {
        match self {
            Segs::One(s) => s.take(),
            Segs::Nodes(it) => it.next_back().map(Node::data),
        }
    }
}

// ---- the list --------------------------------------------------------------

fn packed_count(b: &[u8]) -> usize {
    u16::from_le_bytes([b[0], b[1]]) as usize
}

/// Runs `f` on a packed buffer's elements (after the count) as a vector,
/// with its count, then stores it exactly sized again.
fn edit_packed<R>(b: &mut Box<[u8]>, f: impl FnOnce(&mut Vec<u8>, &mut usize) -> R) -> R {
    let mut v = std::mem::take(b).into_vec();
    let mut count = packed_count(&v);
    let r = f(&mut v, &mut count);
    v[..2].copy_from_slice(&(count as u16).to_le_bytes());
    *b = v.into_boxed_slice();
    r
}

fn packed_from(data: &[u8], count: usize) -> Box<[u8]> {
    let mut v = Vec::with_capacity(2 + data.len());
    v.extend_from_slice(&(count as u16).to_le_bytes());
    v.extend_from_slice(data);
    v.into_boxed_slice()
}

impl ListValue {
    pub fn len(&self) -> usize {
        match self {
            ListValue::Packed(b) => packed_count(b),
            ListValue::Nodes(n) => n.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn segs(&self) -> Segs<'_> {
        match self {
            ListValue::Packed(b) => Segs::One(Some(&b[2..])),
            ListValue::Nodes(n) => Segs::Nodes(n.nodes.iter()),
        }
    }

    /// Every element, head to tail (`.rev()`: tail to head).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + '_ {
        self.segs().flat_map(Elems::new)
    }

    /// The elements from `index` on, head to tail.
    pub fn iter_from(&self, index: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let (first, rest) = match self {
            ListValue::Packed(b) => {
                let data = &b[2..];
                let at = offset_of(data, packed_count(b), index.min(packed_count(b)));
                (&data[at..], Segs::One(None))
            }
            ListValue::Nodes(n) if index < n.len => {
                let (i, k) = n.locate(index);
                let node = &n.nodes[i];
                let data = node.data();
                let at = offset_of(data, node.count, k);
                (&data[at..], Segs::Nodes(n.nodes.range(i + 1..)))
            }
            ListValue::Nodes(_) => (&[][..], Segs::One(None)),
        };
        Elems::new(first).chain(rest.flat_map(Elems::new))
    }

    /// Element `index` (< len).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.iter_from(index).next()
    }

    pub fn push(&mut self, side: End, elem: &[u8]) {
        match self {
            ListValue::Packed(b) if b.len() + encoded_len(elem.len()) <= PACKED_MAX => {
                edit_packed(b, |v, count| {
                    let need = encoded_len(elem.len());
                    let at = match side {
                        End::Left => 2,
                        End::Right => v.len(),
                    };
                    v.reserve_exact(need);
                    v.splice(at..at, std::iter::repeat_n(0, need));
                    encode_into(&mut v[at..at + need], elem);
                    *count += 1;
                });
            }
            ListValue::Packed(b) => {
                let mut n = Nodes::from_data(&b[2..], packed_count(b));
                n.push(side, elem);
                *self = ListValue::Nodes(Box::new(n));
            }
            ListValue::Nodes(n) => n.push(side, elem),
        }
    }

    pub fn pop(&mut self, side: End) -> Option<Bytes> {
        let v = match self {
            ListValue::Packed(b) => {
                if packed_count(b) == 0 {
                    return None;
                }
                edit_packed(b, |v, count| {
                    let (start, s, e, end) = match side {
                        End::Left => {
                            let (s, e, next) = decode_at(&v[2..], 0);
                            (2, s + 2, e + 2, next + 2)
                        }
                        End::Right => {
                            let (start, s, e) = decode_before(v, v.len());
                            (start, s, e, v.len())
                        }
                    };
                    let out = Bytes::copy_from_slice(&v[s..e]);
                    v.drain(start..end);
                    *count -= 1;
                    out
                })
            }
            ListValue::Nodes(n) => n.pop(side)?,
        };
        self.maybe_pack();
        Some(v)
    }

    /// Nodes that shrank under half the packed size are packed again.
    fn maybe_pack(&mut self) {
        if let ListValue::Nodes(n) = self {
            if n.nodes.len() <= 2 && n.bytes() + 2 <= PACKED_MAX / 2 {
                *self = ListValue::Packed(packed_from(&n.concat(), n.len));
            }
        }
    }

    /// Runs `f` on node `i`'s elements (or the packed ones) as a vector
    /// with their count, then stores them back (split into nodes again if
    /// they outgrew one).
    fn edit_segment<R>(&mut self, index: usize, f: impl FnOnce(&mut Vec<u8>, usize) -> R) -> R {
        match self {
            ListValue::Packed(b) => {
                let r = edit_packed(b, |v, count| {
                    let mut data = v.split_off(2);
                    let before = data.len();
                    let r = f(&mut data, 0);
                    *count = recount(*count, before, &data);
                    v.extend_from_slice(&data);
                    r
                });
                if b.len() > PACKED_MAX {
                    *self = ListValue::Nodes(Box::new(Nodes::from_data(&b[2..], packed_count(b))));
                }
                r
            }
            ListValue::Nodes(n) => {
                let (i, k) = n.locate(index);
                let mut data = n.nodes[i].data().to_vec();
                let r = f(&mut data, index - k);
                let count = Elems::new(&data).count();
                n.replace(i, &data, count);
                r
            }
        }
    }

    /// Replaces element `index` (< len).
    pub fn set(&mut self, index: usize, elem: &[u8]) {
        self.edit_segment(index, |data, first| {
            let count = Elems::new(data).count();
            let at = offset_of(data, count, index - first);
            let end = decode_at(data, at).2;
            let mut enc = Vec::with_capacity(encoded_len(elem.len()));
            encode_push(&mut enc, elem);
            data.splice(at..end, enc);
        });
    }

    /// Inserts `elem` before element `index` (≤ len; `len` appends).
    pub fn insert(&mut self, index: usize, elem: &[u8]) {
        if index == 0 {
            return self.push(End::Left, elem);
        }
        if index >= self.len() {
            return self.push(End::Right, elem);
        }
        self.edit_segment(index, |data, first| {
            let count = Elems::new(data).count();
            let at = offset_of(data, count, index - first);
            let mut enc = Vec::with_capacity(encoded_len(elem.len()));
            encode_push(&mut enc, elem);
            data.splice(at..at, enc);
        });
    }

    /// Removes the elements equal to `elem`: the first `count` from the
    /// head (`count` > 0), the last `-count` from the tail (< 0), or all
    /// (0), as LREM does. Returns how many went.
    pub fn remove_matching(&mut self, elem: &[u8], count: i64) -> usize {
        let matches = self.iter().filter(|e| *e == elem).count();
        let limit = match count {
            0 => matches,
            c => (c.unsigned_abs().min(matches as u64)) as usize,
        };
        if limit == 0 {
            return 0;
        }
        // Matches numbered from the head: those in `drop` go.
        let drop = if count < 0 {
            matches - limit..matches
        } else {
            0..limit
        };
        // The elements of `data` kept, numbering its matches from `first`.
        let filter = |data: &[u8], first: usize| {
            let mut out = Vec::with_capacity(data.len());
            let (mut n, mut seen) = (0, first);
            for e in Elems::new(data) {
                if e == elem {
                    seen += 1;
                    if drop.contains(&(seen - 1)) {
                        continue;
                    }
                }
                encode_push(&mut out, e);
                n += 1;
            }
            (out, n)
        };
        match self {
            ListValue::Packed(b) => {
                let (out, n) = filter(&b[2..], 0);
                *b = packed_from(&out, n);
            }
            ListValue::Nodes(nodes) => {
                // Only nodes holding a match that goes are rebuilt (never
                // a copy of the whole list); emptied ones go.
                let (mut i, mut seen) = (0, 0);
                while i < nodes.nodes.len() && seen < drop.end {
                    let data = nodes.nodes[i].data();
                    let here = Elems::new(data).filter(|e| *e == elem).count();
                    if here == 0 || seen + here <= drop.start {
                        seen += here;
                        i += 1;
                        continue;
                    }
                    let (out, n) = filter(data, seen);
                    seen += here;
                    i += nodes.replace(i, &out, n);
                }
            }
        }
        self.maybe_pack();
        limit
    }

    /// Keeps elements `start..stop` (`start ≤ stop ≤ len`), dropping the
    /// rest.
    pub fn keep_range(&mut self, start: usize, stop: usize) {
        match self {
            ListValue::Packed(b) => {
                let count = packed_count(b);
                let data = &b[2..];
                let s = offset_of(data, count, start);
                let e = offset_of(data, count, stop);
                *b = packed_from(&data[s..e], stop - start);
            }
            ListValue::Nodes(n) => {
                n.drop_side(End::Right, n.len - stop);
                n.drop_side(End::Left, start);
            }
        }
        self.maybe_pack();
    }
}

/// The count of a buffer edited from `before` bytes (`count` elements) to
/// `data`: walked again only if its size changed.
fn recount(count: usize, before: usize, data: &[u8]) -> usize {
    if before == data.len() {
        return count;
    }
    Elems::new(data).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift, for reproducible sequences.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn elem(r: &mut Rng) -> Vec<u8> {
        let n = match r.below(10) {
            0 => 0,
            1 => 200 + r.below(300),
            2 if r.below(20) == 0 => 9000 + r.below(3000),
            _ => r.below(20),
        } as usize;
        let b = b'a' + r.below(3) as u8;
        vec![b; n]
    }

    fn check(l: &ListValue, model: &VecDeque<Vec<u8>>) {
        assert_eq!(l.len(), model.len());
        let got: Vec<&[u8]> = l.iter().collect();
        let want: Vec<&[u8]> = model.iter().map(|v| &v[..]).collect();
        assert_eq!(got, want);
        let back: Vec<&[u8]> = l.iter().rev().collect();
        let want_back: Vec<&[u8]> = model.iter().rev().map(|v| &v[..]).collect();
        assert_eq!(back, want_back);
        if let ListValue::Nodes(n) = l {
            assert_eq!(n.nodes.iter().map(|x| x.count).sum::<usize>(), n.len);
            assert!(n.nodes.iter().all(|x| x.count > 0));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<ListValue>(), 16);
    }

    #[test]
    fn the_encoding_reads_from_both_ends() {
        for n in [0usize, 1, 127, 128, 300, 16383, 16384, 70000] {
            let e = vec![7u8; n];
            let mut buf = Vec::new();
            encode_push(&mut buf, b"x");
            encode_push(&mut buf, &e);
            encode_push(&mut buf, b"yz");
            assert_eq!(buf.len(), 3 + encoded_len(n) + 4);
            let fwd: Vec<&[u8]> = Elems::new(&buf).collect();
            assert_eq!(fwd, vec![&b"x"[..], &e[..], b"yz"]);
            let back: Vec<&[u8]> = Elems::new(&buf).rev().collect();
            assert_eq!(back, vec![&b"yz"[..], &e[..], b"x"]);
        }
        // 16 bytes cost 18, as in Redis's listpack.
        assert_eq!(encoded_len(16), 18);
    }

    #[test]
    fn random_operations_match_a_deque() {
        let mut r = Rng(0x0011_570f_ba5e);
        for round in 0..20 {
            let mut l = ListValue::default();
            let mut m: VecDeque<Vec<u8>> = VecDeque::new();
            for _ in 0..(300 + round * 40) {
                let e = elem(&mut r);
                let side = if r.below(2) == 0 {
                    End::Left
                } else {
                    End::Right
                };
                match r.below(16) {
                    0..=5 => {
                        l.push(side, &e);
                        match side {
                            End::Left => m.push_front(e),
                            End::Right => m.push_back(e),
                        }
                    }
                    6..=8 => {
                        let want = match side {
                            End::Left => m.pop_front(),
                            End::Right => m.pop_back(),
                        };
                        assert_eq!(l.pop(side).map(|b| b.to_vec()), want);
                    }
                    9 if !m.is_empty() => {
                        let i = r.below(m.len() as u64) as usize;
                        assert_eq!(l.get(i), Some(&m[i][..]));
                        let tail: Vec<&[u8]> = l.iter_from(i).collect();
                        assert_eq!(tail.len(), m.len() - i);
                        assert_eq!(tail.first().copied(), Some(&m[i][..]));
                    }
                    10 if !m.is_empty() => {
                        let i = r.below(m.len() as u64) as usize;
                        l.set(i, &e);
                        m[i] = e;
                    }
                    11 => {
                        let i = r.below(m.len() as u64 + 1) as usize;
                        l.insert(i, &e);
                        m.insert(i, e);
                    }
                    12 => {
                        let c = r.below(5) as i64 - 2;
                        let n = l.remove_matching(&e, c);
                        let total = m.iter().filter(|x| **x == e).count();
                        let want = if c == 0 {
                            total
                        } else {
                            total.min(c.unsigned_abs() as usize)
                        };
                        assert_eq!(n, want);
                        let mut gone = 0;
                        if c >= 0 {
                            m.retain(|x| {
                                let drop = *x == e && gone < want;
                                gone += usize::from(drop);
                                !drop
                            });
                        } else {
                            let mut v: Vec<Vec<u8>> = m.drain(..).rev().collect();
                            v.retain(|x| {
                                let drop = *x == e && gone < want;
                                gone += usize::from(drop);
                                !drop
                            });
                            m = v.into_iter().rev().collect();
                        }
                    }
                    13 if r.below(4) == 0 => {
                        let s = r.below(m.len() as u64 + 1) as usize;
                        let t = s + r.below((m.len() - s) as u64 + 1) as usize;
                        l.keep_range(s, t);
                        m = m.drain(s..t).collect();
                    }
                    _ => {
                        // Grow in bulk now and then, to reach many nodes.
                        for _ in 0..r.below(200) {
                            let e = elem(&mut r);
                            l.push(End::Right, &e);
                            m.push_back(e);
                        }
                    }
                }
                check(&l, &m);
            }
        }
    }

    #[test]
    fn a_queue_keeps_few_nodes_and_packs_again() {
        let mut l = ListValue::default();
        let e = [b'x'; 16];
        for _ in 0..100_000 {
            l.push(End::Left, &e);
        }
        let ListValue::Nodes(n) = &l else {
            panic!("not nodes")
        };
        // 18 bytes an element, 8 KiB nodes, nearly full.
        assert!(
            n.nodes.len() <= 100_000 * 18 / NODE_MAX + 2,
            "{}",
            n.nodes.len()
        );
        for _ in 0..300_000 {
            l.push(End::Left, &e);
            assert!(l.pop(End::Right).is_some());
        }
        for _ in 0..99_990 {
            l.pop(End::Right);
        }
        assert_eq!(l.len(), 10);
        assert!(matches!(l, ListValue::Packed(_)));
    }
}
