//! Sorted sets: members ordered by (score, member bytes), with rank and
//! range-by-rank in O(log n) through an order-statistic treap (each node
//! knows its subtree size), plus a member → score map for O(1) ZSCORE.
//! Also Redis's double formatting (`%.17g`) and parsing rules.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;

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
    if exp < -4 || exp >= 17 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", strip(mantissa), sign, exp.abs())
    } else {
        let decimals = (16 - exp).max(0) as usize;
        strip(&format!("{:.*}", decimals, d))
    }
}

/// Parses a score as Redis does (`strtod` over the whole string, no NaN,
/// no surrounding spaces).
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
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
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
}

/// A sorted set.
#[derive(Debug, Clone, Default)]
pub struct ZSet {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    scores: HashMap<Bytes, f64>,
    seed: u32,
}

impl ZSet {
    pub fn new() -> ZSet {
        ZSet {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            scores: HashMap::new(),
            seed: random_seed(),
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
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

    fn next_prio(&mut self) -> u32 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.seed = x;
        x
    }

    /// Splits `t` into (< key, >= key).
    fn split(&mut self, t: u32, score: f64, member: &[u8]) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let ord = {
            let n = &self.nodes[t as usize];
            cmp_key(n.score, &n.member, score, member)
        };
        if ord == Ordering::Less {
            let r = self.nodes[t as usize].right;
            let (a, b) = self.split(r, score, member);
            self.nodes[t as usize].right = a;
            self.update(t);
            (t, b)
        } else {
            let l = self.nodes[t as usize].left;
            let (a, b) = self.split(l, score, member);
            self.nodes[t as usize].left = b;
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
            self.nodes[a as usize].right = m;
            self.update(a);
            a
        } else {
            let l = self.nodes[b as usize].left;
            let m = self.merge(a, l);
            self.nodes[b as usize].left = m;
            self.update(b);
            b
        }
    }

    fn tree_insert(&mut self, score: f64, member: Bytes) {
        let prio = self.next_prio();
        let node = Node {
            score,
            member: member.clone(),
            prio,
            size: 1,
            left: NIL,
            right: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let (a, b) = self.split(self.root, score, &member);
        let ab = self.merge(a, idx);
        self.root = self.merge(ab, b);
    }

    fn tree_remove(&mut self, score: f64, member: &[u8]) {
        let (a, b) = self.split(self.root, score, member);
        // b's minimum is the node to drop: split it off by rank.
        let (mid, c) = self.split_rank(b, 1);
        if mid != NIL {
            self.nodes[mid as usize].member = Bytes::new();
            self.free.push(mid);
        }
        self.root = self.merge(a, c);
    }

    /// Splits `t` into (first `k` elements, rest).
    fn split_rank(&mut self, t: u32, k: u32) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let l = self.nodes[t as usize].left;
        let ls = self.size(l);
        if k <= ls {
            let (a, b) = self.split_rank(l, k);
            self.nodes[t as usize].left = b;
            self.update(t);
            (a, t)
        } else {
            let r = self.nodes[t as usize].right;
            let (a, b) = self.split_rank(r, k - ls - 1);
            self.nodes[t as usize].right = a;
            self.update(t);
            (t, b)
        }
    }

    /// Sets a member's score; returns the previous score.
    pub fn insert(&mut self, member: Bytes, score: f64) -> Option<f64> {
        let score = if score == 0.0 { 0.0 } else { score };
        match self.scores.get(&member).copied() {
            Some(old) if old == score => Some(old),
            Some(old) => {
                self.tree_remove(old, &member);
                self.tree_insert(score, member.clone());
                self.scores.insert(member, score);
                Some(old)
            }
            None => {
                self.tree_insert(score, member.clone());
                self.scores.insert(member, score);
                None
            }
        }
    }

    /// Removes a member; returns its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let old = self.scores.remove(member)?;
        self.tree_remove(old, member);
        Some(old)
    }

    /// 0-based rank in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(self.count_less(|s, m| cmp_key(s, m, score, member) == Ordering::Less))
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
}
