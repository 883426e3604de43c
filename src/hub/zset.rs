//! Sorted sets: members ordered by (score, member bytes), with rank and
//! range-by-rank in O(log n) through an order-statistic treap (each node
//! knows its subtree size), plus a hash index from member to node for O(1)
//! ZSCORE. Also Redis's double formatting (`%.17g`) and parsing rules.
//!
//! Nodes live in one vector and link by 32-bit index; the index is a table
//! of node numbers hashed by member (SipHash with per-process random keys,
//! so clients cannot aim collisions), so a member's bytes are stored once.
//! Changing a score unlinks its node in one descent and links it again in
//! another, splitting only the subtree below the node's priority.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::HashTable;

/// Formats a score as Redis 7.0 replies it: C's `%.17g`, with `inf`/`-inf`.
pub fn format_score(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return "0".into();
    }
    // 17 significant digits in scientific form, then %g's choice of style.
    let sci = format!("{:.16e}", d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..17).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", strip(mantissa), sign, exp.abs())
    } else {
        let decimals = (16 - exp).max(0) as usize;
        strip(&format!("{:.*}", decimals, d))
    }
}

/// Parses a score as Redis's `getDoubleFromObject` does (`strtod` over the
/// whole string, no NaN, no surrounding spaces, and no `ERANGE`: a literal
/// too large for a double, or too small to be anything but 0, is refused;
/// `inf` itself is a score).
pub fn parse_score(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty()
        || t.starts_with(|c: char| c.is_whitespace())
        || t.ends_with(|c: char| c.is_whitespace())
    {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    if v.is_infinite() && !lower.contains("inf") {
        return None;
    }
    let mantissa = lower.split('e').next().unwrap_or("");
    if v == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        return None;
    }
    Some(if v == 0.0 { 0.0 } else { v })
}

fn cmp_key(a_score: f64, a_member: &[u8], b_score: f64, b_member: &[u8]) -> Ordering {
    a_score
        .partial_cmp(&b_score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a_member.cmp(b_member))
}

const NIL: u32 = u32::MAX;

/// A per-set random seed for treap priorities: clients cannot predict them,
/// so they cannot choose an insertion order that degenerates the tree.
fn random_seed() -> u32 {
    use std::hash::Hasher;
    let mut h = RandomState::new().build_hasher();
    h.write_u64(super::keyspace::now_ms());
    (h.finish() as u32) | 1
}

#[derive(Debug, Clone)]
struct Node {
    score: f64,
    member: Bytes,
    prio: u32,
    size: u32,
    left: u32,
    right: u32,
    /// NIL at the root. Lets a score change find its neighbours in a few
    /// steps from the node instead of a descent from the root.
    parent: u32,
}
/// A sorted set.
#[derive(Debug, Clone)]
pub struct ZSet {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    /// Node numbers, hashed by their member.
    index: HashTable<u32>,
    hasher: RandomState,
    seed: u32,
    /// Counts changes (a member added, removed or rescored), so the
    /// keyspace can tell whether a write changed the set without every
    /// writer having to say so ([`crate::hub::keyspace::Db::with_zset_mut`]).
    writes: u64,
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::new()
    }
}

impl ZSet {
    pub fn new() -> ZSet {
        ZSet {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            index: HashTable::new(),
            hasher: RandomState::new(),
            seed: random_seed(),
            writes: 0,
        }
    }

    /// How many changes this set has had (see the field).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn hash(&self, member: &[u8]) -> u64 {
        self.hasher.hash_one(member)
    }

    /// The node holding `member`.
    fn find(&self, member: &[u8]) -> Option<u32> {
        let nodes = &self.nodes;
        self.index
            .find(self.hash(member), |&i| nodes[i as usize].member == member)
            .copied()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.find(member).map(|i| self.nodes[i as usize].score)
    }

    fn size(&self, n: u32) -> u32 {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].size
        }
    }

    fn update(&mut self, n: u32) {
        let (l, r) = {
            let node = &self.nodes[n as usize];
            (node.left, node.right)
        };
        self.nodes[n as usize].size = 1 + self.size(l) + self.size(r);
    }

    fn set_left(&mut self, p: u32, c: u32) {
        self.nodes[p as usize].left = c;
        if c != NIL {
            self.nodes[c as usize].parent = p;
        }
    }

    fn set_right(&mut self, p: u32, c: u32) {
        self.nodes[p as usize].right = c;
        if c != NIL {
            self.nodes[c as usize].parent = p;
        }
    }

    fn set_root(&mut self, r: u32) {
        self.root = r;
        if r != NIL {
            self.nodes[r as usize].parent = NIL;
        }
    }

    fn next_prio(&mut self) -> u32 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.seed = x;
        x
    }

    /// Whether node `a` sorts before node `b`.
    fn before(&self, a: u32, b: u32) -> bool {
        let (x, y) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        cmp_key(x.score, &x.member, y.score, &y.member) == Ordering::Less
    }

    /// Splits `t` into (nodes before node `key`, the rest). `key` is not in `t`.
    fn split(&mut self, t: u32, key: u32) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.before(t, key) {
            let r = self.nodes[t as usize].right;
            let (a, b) = self.split(r, key);
            self.set_right(t, a);
            self.update(t);
            (t, b)
        } else {
            let l = self.nodes[t as usize].left;
            let (a, b) = self.split(l, key);
            self.set_left(t, b);
            self.update(t);
            (a, t)
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.nodes[a as usize].right;
            let m = self.merge(r, b);
            self.set_right(a, m);
            self.update(a);
            a
        } else {
            let l = self.nodes[b as usize].left;
            let m = self.merge(a, l);
            self.set_left(b, m);
            self.update(b);
            b
        }
    }

    /// Links the lone node `i` into the subtree `t`; returns its new root.
    /// Descends to where `i`'s priority belongs and splits only below it.
    fn attach(&mut self, t: u32, i: u32) -> u32 {
        if t == NIL {
            return i;
        }
        if self.nodes[i as usize].prio > self.nodes[t as usize].prio {
            let (a, b) = self.split(t, i);
            self.set_left(i, a);
            self.set_right(i, b);
            self.update(i);
            return i;
        }
        if self.before(i, t) {
            let l = self.nodes[t as usize].left;
            let l = self.attach(l, i);
            self.set_left(t, l);
        } else {
            let r = self.nodes[t as usize].right;
            let r = self.attach(r, i);
            self.set_right(t, r);
        }
        self.nodes[t as usize].size += 1;
        t
    }

    /// Unlinks node `i` from the subtree `t` (which holds it); returns the
    /// subtree's new root. `i` is left alone, with no children.
    fn detach(&mut self, t: u32, i: u32) -> u32 {
        if t == i {
            let n = &mut self.nodes[i as usize];
            let (l, r) = (n.left, n.right);
            n.left = NIL;
            n.right = NIL;
            n.size = 1;
            return self.merge(l, r);
        }
        if self.before(i, t) {
            let l = self.nodes[t as usize].left;
            let l = self.detach(l, i);
            self.set_left(t, l);
        } else {
            let r = self.nodes[t as usize].right;
            let r = self.detach(r, i);
            self.set_right(t, r);
        }
        self.nodes[t as usize].size -= 1;
        t
    }

    /// Sets a member's score; returns the previous score.
    pub fn insert(&mut self, member: Bytes, score: f64) -> Option<f64> {
        let score = if score == 0.0 { 0.0 } else { score };
        if let Some(i) = self.find(&member) {
            let old = self.nodes[i as usize].score;
            if old != score {
                self.rescore(i, score);
                self.writes += 1;
            }
            return Some(old);
        }
        let node = Node {
            score,
            member,
            prio: self.next_prio(),
            size: 1,
            left: NIL,
            right: NIL,
            parent: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.writes += 1;
        let h = self.hash(&self.nodes[i as usize].member);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index
            .insert_unique(h, i, |&j| hasher.hash_one(&nodes[j as usize].member[..]));
        let r = self.attach(self.root, i);
        self.set_root(r);
        None
    }

    /// Adds `by` to a member's score (0 when absent); returns the new score,
    /// or `None`, changing nothing, when the result is not a number.
    pub fn incr(&mut self, member: Bytes, by: f64) -> Option<f64> {
        let v = self.score(&member).unwrap_or(0.0) + by;
        if v.is_nan() {
            return None;
        }
        self.insert(member, v);
        Some(if v == 0.0 { 0.0 } else { v })
    }

    /// Moves node `i` to its place for `score`. When the new score keeps
    /// it between the same neighbours (a small ZINCRBY, most often), only
    /// the score changes: the descent that finds the neighbours only reads,
    /// so the nodes near the root are not rewritten on every update (as
    /// Redis's skiplist updates a score in place in the same case).
    fn rescore(&mut self, i: u32, score: f64) {
        let (pred, succ) = self.neighbours(i);
        let member = &self.nodes[i as usize].member;
        let after_pred = pred == NIL || {
            let p = &self.nodes[pred as usize];
            cmp_key(p.score, &p.member, score, member) == Ordering::Less
        };
        let before_succ = succ == NIL || {
            let n = &self.nodes[succ as usize];
            cmp_key(score, member, n.score, &n.member) == Ordering::Less
        };
        if after_pred && before_succ {
            self.nodes[i as usize].score = score;
            return;
        }
        let r = self.detach(self.root, i);
        self.set_root(r);
        self.nodes[i as usize].score = score;
        let r = self.attach(self.root, i);
        self.set_root(r);
    }

    /// The nodes just before and just after node `i` (NIL at the ends),
    /// found from the node itself: a few steps on average.
    fn neighbours(&self, i: u32) -> (u32, u32) {
        let node = |x: u32| &self.nodes[x as usize];
        let pred = if node(i).left != NIL {
            let mut x = node(i).left;
            while node(x).right != NIL {
                x = node(x).right;
            }
            x
        } else {
            let (mut c, mut p) = (i, node(i).parent);
            while p != NIL && node(p).left == c {
                c = p;
                p = node(p).parent;
            }
            p
        };
        let succ = if node(i).right != NIL {
            let mut x = node(i).right;
            while node(x).left != NIL {
                x = node(x).left;
            }
            x
        } else {
            let (mut c, mut p) = (i, node(i).parent);
            while p != NIL && node(p).right == c {
                c = p;
                p = node(p).parent;
            }
            p
        };
        (pred, succ)
    }

    /// Removes a member; returns its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let h = self.hash(member);
        let nodes = &self.nodes;
        let entry = self
            .index
            .find_entry(h, |&i| nodes[i as usize].member == member)
            .ok()?;
        let (i, _) = entry.remove();
        self.writes += 1;
        let r = self.detach(self.root, i);
        self.set_root(r);
        let n = &mut self.nodes[i as usize];
        n.member = Bytes::new();
        // A free slot has size 0 (a linked node counts itself): ZSCAN
        // walks slots and skips these.
        n.size = 0;
        let old = n.score;
        self.free.push(i);
        Some(old)
    }

    /// One ZSCAN page: members by node slot from `cursor`, about `count`
    /// of them (visiting at most `10 * count` slots), and the next cursor
    /// (0: done). A member keeps its slot for as long as it is in the set,
    /// score changes included, so every member present for the whole scan
    /// is returned exactly once; members added meanwhile may or may not be.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<(Bytes, f64)>) {
        let count = count.max(1);
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut slot = start;
        let budget = count.saturating_mul(10);
        while slot < self.nodes.len() && out.len() < count && slot - start < budget {
            let n = &self.nodes[slot];
            if n.size > 0 {
                out.push((n.member.clone(), n.score));
            }
            slot += 1;
        }
        let next = if slot >= self.nodes.len() {
            0
        } else {
            slot as u64
        };
        (next, out)
    }

    /// 0-based rank in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let target = self.find(member)?;
        // Walk down from the root to the node, counting what lies left.
        let mut n = self.root;
        let mut count = 0usize;
        while n != NIL && n != target {
            let node = &self.nodes[n as usize];
            if self.before(n, target) {
                count += self.size(node.left) as usize + 1;
                n = node.right;
            } else {
                n = node.left;
            }
        }
        Some(count + self.size(self.nodes[target as usize].left) as usize)
    }

    /// Number of elements for which `less(score, member)` holds, where
    /// `less` is monotone (true on a prefix of the order).
    fn count_less(&self, less: impl Fn(f64, &[u8]) -> bool) -> usize {
        let mut n = self.root;
        let mut count = 0usize;
        while n != NIL {
            let node = &self.nodes[n as usize];
            if less(node.score, &node.member) {
                count += self.size(node.left) as usize + 1;
                n = node.right;
            } else {
                n = node.left;
            }
        }
        count
    }

    /// Elements with score below `min` (or at most `min` when `inclusive`
    /// is false for the upper side: see callers).
    pub fn count_score_below(&self, score: f64, inclusive: bool) -> usize {
        if inclusive {
            self.count_less(|s, _| s <= score)
        } else {
            self.count_less(|s, _| s < score)
        }
    }

    /// Elements whose member sorts below `member` (lex ranges assume equal
    /// scores, as Redis's do).
    pub fn count_lex_below(&self, member: &[u8], inclusive: bool) -> usize {
        if inclusive {
            self.count_less(|_, m| m <= member)
        } else {
            self.count_less(|_, m| m < member)
        }
    }

    /// Elements with ranks `start..end` (ascending), in order.
    pub fn range_by_rank(&self, start: usize, end: usize) -> Vec<(Bytes, f64)> {
        let mut out = Vec::with_capacity(end.saturating_sub(start).min(1 << 16));
        self.collect(self.root, 0, start, end, &mut out);
        out
    }

    fn collect(
        &self,
        n: u32,
        offset: usize,
        start: usize,
        end: usize,
        out: &mut Vec<(Bytes, f64)>,
    ) {
        if n == NIL || start >= end {
            return;
        }
        let node = &self.nodes[n as usize];
        let ls = self.size(node.left) as usize;
        let here = offset + ls;
        if start < here {
            self.collect(node.left, offset, start, end, out);
        }
        if start <= here && here < end {
            out.push((node.member.clone(), node.score));
        }
        if here + 1 < end {
            self.collect(node.right, here + 1, start, end, out);
        }
    }

    /// All members (ascending), for set operations.
    pub fn all(&self) -> Vec<(Bytes, f64)> {
        self.range_by_rank(0, self.len())
    }
}

#[cfg(test)]
impl ZSet {
    /// Checks links, parents, sizes and order of the whole tree.
    fn check(&self) {
        fn walk(z: &ZSet, t: u32, parent: u32) -> u32 {
            if t == NIL {
                return 0;
            }
            let n = &z.nodes[t as usize];
            assert_eq!(n.parent, parent, "parent link of node {t}");
            if n.left != NIL {
                assert!(z.before(n.left, t));
                assert!(z.nodes[n.left as usize].prio <= n.prio);
            }
            if n.right != NIL {
                assert!(z.before(t, n.right));
                assert!(z.nodes[n.right as usize].prio <= n.prio);
            }
            let size = 1 + walk(z, n.left, t) + walk(z, n.right, t);
            assert_eq!(n.size, size, "size of node {t}");
            size
        }
        assert_eq!(walk(self, self.root, NIL) as usize, self.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_redis() {
        assert_eq!(format_score(1.1), "1.1000000000000001");
        assert_eq!(format_score(2.0), "2");
        assert_eq!(format_score(1e20), "1e+20");
        assert_eq!(format_score(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(format_score(0.0001), "0.0001");
        assert_eq!(format_score(1e-5), "1.0000000000000001e-05");
        assert_eq!(format_score(0.1), "0.10000000000000001");
        assert_eq!(format_score(-2.5), "-2.5");
        assert_eq!(format_score(f64::INFINITY), "inf");
        assert_eq!(format_score(-0.0), "0");
        assert_eq!(format_score(1e16), "10000000000000000");
        assert_eq!(format_score(1e17), "1e+17");
    }

    #[test]
    fn parses_like_redis() {
        assert_eq!(parse_score(b"1.5"), Some(1.5));
        assert_eq!(parse_score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_score(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_score(b"nan"), None);
        assert_eq!(parse_score(b" 1"), None);
        assert_eq!(parse_score(b"abc"), None);
        // strtod's ERANGE: overflow and underflow are refused, as in Redis.
        assert_eq!(parse_score(b"1e309"), None);
        assert_eq!(parse_score(b"-1e309"), None);
        assert_eq!(parse_score(b"1e-400"), None);
        assert_eq!(parse_score(b"0e-400"), Some(0.0));
        assert_eq!(parse_score(b"1e308"), Some(1e308));
        assert_eq!(parse_score(b"Infinity"), Some(f64::INFINITY));
    }

    #[test]
    fn ranks_and_ranges() {
        let mut z = ZSet::new();
        for (i, m) in ["e", "a", "d", "b", "c"].iter().enumerate() {
            z.insert(Bytes::from(*m), (i % 2) as f64);
        }
        // scores: e=0 a=1 d=0 b=1 c=0 → order (0,c)(0,d)(0,e)(1,a)(1,b)
        let order: Vec<Bytes> = z.all().into_iter().map(|x| x.0).collect();
        assert_eq!(order, vec!["c", "d", "e", "a", "b"]);
        assert_eq!(z.rank(b"a"), Some(3));
        z.insert(Bytes::from("a"), -1.0);
        assert_eq!(z.rank(b"a"), Some(0));
        assert_eq!(z.remove(b"d"), Some(0.0));
        assert_eq!(z.len(), 4);
        assert_eq!(
            z.range_by_rank(1, 3)
                .iter()
                .map(|x| x.0.clone())
                .collect::<Vec<_>>(),
            vec!["c", "e"]
        );
        assert_eq!(z.count_score_below(0.0, false), 1);
        assert_eq!(z.count_score_below(0.0, true), 3);
    }

    /// Random inserts, score changes (small ones that stay in place and
    /// large ones that move), increments and removals against a plain model.
    #[test]
    fn random_operations_match_a_model() {
        let mut z = ZSet::new();
        let mut model: std::collections::HashMap<Vec<u8>, f64> = Default::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..30_000 {
            let m = format!("m{}", rnd(500)).into_bytes();
            match rnd(4) {
                0 => {
                    let s = rnd(50) as f64;
                    assert_eq!(z.insert(Bytes::from(m.clone()), s), model.insert(m, s));
                }
                1 => {
                    let by = if rnd(2) == 0 {
                        1.0
                    } else {
                        rnd(1000) as f64 - 500.0
                    };
                    let want = model.get(&m).copied().unwrap_or(0.0) + by;
                    assert_eq!(z.incr(Bytes::from(m.clone()), by), Some(want));
                    model.insert(m, want);
                }
                2 => assert_eq!(z.remove(&m), model.remove(&m)),
                _ => assert_eq!(z.score(&m), model.get(&m).copied()),
            }
            if step % 997 == 0 {
                z.check();
                let mut want: Vec<(f64, Vec<u8>)> =
                    model.iter().map(|(m, s)| (*s, m.clone())).collect();
                want.sort_by(|a, b| cmp_key(a.0, &a.1, b.0, &b.1));
                let got: Vec<(f64, Vec<u8>)> =
                    z.all().into_iter().map(|(m, s)| (s, m.to_vec())).collect();
                assert_eq!(got, want);
                for (r, (_, m)) in want.iter().enumerate() {
                    assert_eq!(z.rank(m), Some(r));
                }
            }
        }
        assert_eq!(
            z.incr(Bytes::from_static(b"n"), f64::INFINITY),
            Some(f64::INFINITY)
        );
        assert_eq!(z.incr(Bytes::from_static(b"n"), f64::NEG_INFINITY), None);
        assert_eq!(z.score(b"n"), Some(f64::INFINITY));
    }

    #[test]
    fn large_sets_stay_consistent() {
        let mut z = ZSet::new();
        for i in 0..20_000u32 {
            z.insert(Bytes::from(format!("m{i}")), ((i * 7919) % 1000) as f64);
        }
        for i in (0..20_000u32).step_by(3) {
            z.remove(format!("m{i}").as_bytes());
        }
        let all = z.all();
        assert_eq!(all.len(), z.len());
        for (r, (m, _)) in all.iter().enumerate().step_by(97) {
            assert_eq!(z.rank(m), Some(r));
        }
        assert!(all
            .windows(2)
            .all(|w| cmp_key(w[0].1, &w[0].0, w[1].1, &w[1].0) == Ordering::Less));
    }

    #[test]
    fn scan_returns_every_member_present_throughout_once() {
        let mut z = ZSet::new();
        for i in 0..1000 {
            z.insert(Bytes::from(format!("m{i:04}")), i as f64);
        }
        let mut seen = std::collections::HashMap::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            let (next, page) = z.scan(cursor, 50);
            for (m, _) in page {
                *seen.entry(m).or_insert(0) += 1;
            }
            // Churn between pages: remove some early members, rescore
            // others, add new ones (which may reuse freed slots).
            round += 1;
            z.remove(format!("m{:04}", round * 3).as_bytes());
            z.insert(Bytes::from(format!("m{:04}", 999 - round)), -(round as f64));
            z.insert(Bytes::from(format!("new{round}")), 0.5);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in 0..1000 {
            let m = format!("m{i:04}");
            let removed = i % 3 == 0 && i / 3 >= 1 && i / 3 <= round;
            if !removed {
                assert_eq!(seen.get(m.as_bytes()), Some(&1), "{m}");
            }
        }
    }
}
