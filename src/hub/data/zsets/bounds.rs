//! The spans of a sorted set that ranges and removals name: score bounds
//! (`1`, `(1`, `-inf`), lex bounds (`-`, `+`, `[a`, `(a`) and ranks (Redis's
//! negative-from-the-end normalisation), each turned into a rank interval
//! `[start, end)` of the set, and LIMIT applied to such an interval.

use bytes::Bytes;

use crate::hub::zset::ZSet;

/// A score bound: value and exclusivity (`(1.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBound {
    pub value: f64,
    pub exclusive: bool,
}

impl ScoreBound {
    /// Parses a bound as Redis's `zslParseRange` does: an optional `(`,
    /// then a float (`inf` and `-inf` included); never NaN, no leading
    /// space. `None` is Redis's "min or max is not a float".
    pub fn parse(a: &[u8]) -> Option<ScoreBound> {
        let (exclusive, rest) = match a.split_first() {
            Some((b'(', rest)) => (true, rest),
            _ => (false, a),
        };
        let t = std::str::from_utf8(rest).ok()?;
        let value: f64 = t.parse().ok()?;
        if value.is_nan() || t.starts_with(char::is_whitespace) {
            return None;
        }
        Some(ScoreBound { value, exclusive })
    }
}

/// A lex bound: `-`, `+`, `[x` (inclusive) or `(x` (exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexBound {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

impl LexBound {
    /// Parses a bound; `None` is Redis's "min or max not valid string range
    /// item". The member is a slice of the argument, not a copy.
    pub fn parse(a: &Bytes) -> Option<LexBound> {
        match a.first() {
            Some(b'-') if a.len() == 1 => Some(LexBound::Min),
            Some(b'+') if a.len() == 1 => Some(LexBound::Max),
            Some(b'[') => Some(LexBound::Incl(a.slice(1..))),
            Some(b'(') => Some(LexBound::Excl(a.slice(1..))),
            _ => None,
        }
    }
}

/// Which members a range or a removal names.
#[derive(Debug, Clone, PartialEq)]
pub enum ZSpan {
    /// Ranks `start..=stop`, negative counting from the end.
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

impl ZSpan {
    /// The rank interval `[start, end)` of `z` this span covers; `None`
    /// (or an empty interval) when it covers nothing.
    pub fn ranks(&self, z: &ZSet) -> Option<(usize, usize)> {
        match self {
            ZSpan::Rank(s, e) => rank_span(z.len(), *s, *e),
            ZSpan::Score(min, max) => Some(score_span(z, *min, *max)),
            ZSpan::Lex(min, max) => Some(lex_span(z, min, max)),
        }
    }

    /// How many members of `z` the span covers (ZCOUNT, ZLEXCOUNT).
    pub fn count(&self, z: &ZSet) -> usize {
        self.ranks(z).map_or(0, |(a, b)| b - a)
    }
}

/// Rank interval `[start, end)` of the members within score bounds.
pub fn score_span(z: &ZSet, min: ScoreBound, max: ScoreBound) -> (usize, usize) {
    let start = z.count_score_below(min.value, min.exclusive);
    let end = z.count_score_below(max.value, !max.exclusive);
    (start, end.max(start))
}

/// Rank interval `[start, end)` of the members within lex bounds.
pub fn lex_span(z: &ZSet, min: &LexBound, max: &LexBound) -> (usize, usize) {
    let start = match min {
        LexBound::Min => 0,
        LexBound::Max => z.len(),
        LexBound::Incl(m) => z.count_lex_below(m, false),
        LexBound::Excl(m) => z.count_lex_below(m, true),
    };
    let end = match max {
        LexBound::Min => 0,
        LexBound::Max => z.len(),
        LexBound::Incl(m) => z.count_lex_below(m, true),
        LexBound::Excl(m) => z.count_lex_below(m, false),
    };
    (start, end.max(start))
}

/// Redis's rank normalisation of `start..=stop` over `len` members (a
/// negative rank counts from the end); `None` for an empty range.
pub fn rank_span(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { start + len } else { start };
    let mut e = if stop < 0 { stop + len } else { stop };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize + 1))
}

/// The members of ranks `[start, end)` in order (or reversed, counting from
/// `end`), after LIMIT `offset count` (a negative offset gives nothing, a
/// negative count everything after the offset).
pub fn pick(
    z: &ZSet,
    span: (usize, usize),
    rev: bool,
    limit: Option<(i64, i64)>,
) -> Vec<(Bytes, f64)> {
    let (start, end) = span;
    let total = end - start;
    let (offset, count) = match limit {
        None => (0usize, total),
        Some((o, _)) if o < 0 => return Vec::new(),
        Some((o, c)) => {
            let o = usize::try_from(o).unwrap_or(usize::MAX);
            let c = if c < 0 {
                total
            } else {
                usize::try_from(c).unwrap_or(usize::MAX)
            };
            (o, c)
        }
    };
    if offset >= total {
        return Vec::new();
    }
    let n = count.min(total - offset);
    if rev {
        let hi = end - offset;
        let mut v = z.range_by_rank(hi - n, hi);
        v.reverse();
        v
    } else {
        z.range_by_rank(start + offset, start + offset + n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&'static str, f64)]) -> ZSet {
        let mut z = ZSet::new();
        for (m, s) in items {
            z.insert(Bytes::from_static(m.as_bytes()), *s);
        }
        z
    }

    fn members(v: &[(Bytes, f64)]) -> Vec<&[u8]> {
        v.iter().map(|(m, _)| &m[..]).collect()
    }

    #[test]
    fn score_bounds_parse_as_redis_does() {
        let b = |s: &str| ScoreBound::parse(s.as_bytes());
        assert_eq!(
            b("(1.5"),
            Some(ScoreBound {
                value: 1.5,
                exclusive: true
            })
        );
        assert_eq!(b("-inf").map(|b| b.value), Some(f64::NEG_INFINITY));
        assert_eq!(b("+inf").map(|b| b.value), Some(f64::INFINITY));
        assert_eq!(b("nan"), None);
        assert_eq!(b(" 1"), None);
        assert_eq!(b("x"), None);
        assert_eq!(b("("), None);
        assert_eq!(b(""), None);
    }

    #[test]
    fn lex_bounds_parse_as_redis_does() {
        let b = |s: &'static str| LexBound::parse(&Bytes::from_static(s.as_bytes()));
        assert_eq!(b("-"), Some(LexBound::Min));
        assert_eq!(b("+"), Some(LexBound::Max));
        assert_eq!(b("[a"), Some(LexBound::Incl(Bytes::from_static(b"a"))));
        assert_eq!(b("("), Some(LexBound::Excl(Bytes::new())));
        assert_eq!(b("a"), None);
        assert_eq!(b("-a"), None);
        assert_eq!(b(""), None);
    }

    #[test]
    fn ranks_normalise_like_redis() {
        assert_eq!(rank_span(5, 0, -1), Some((0, 5)));
        assert_eq!(rank_span(5, -2, -1), Some((3, 5)));
        assert_eq!(rank_span(5, -100, 1), Some((0, 2)));
        assert_eq!(rank_span(5, 3, 100), Some((3, 5)));
        assert_eq!(rank_span(5, 5, 10), None);
        assert_eq!(rank_span(5, 3, 2), None);
        assert_eq!(rank_span(0, 0, -1), None);
        assert_eq!(rank_span(5, i64::MIN, i64::MAX), Some((0, 5)));
    }

    #[test]
    fn spans_by_score_and_lex() {
        let z = set(&[("a", 1.0), ("b", 2.0), ("c", 2.0), ("d", 3.0)]);
        let s = |v: f64, exclusive: bool| ScoreBound {
            value: v,
            exclusive,
        };
        assert_eq!(score_span(&z, s(2.0, false), s(2.0, false)), (1, 3));
        assert_eq!(score_span(&z, s(2.0, true), s(3.0, false)), (3, 4));
        assert_eq!(score_span(&z, s(3.0, false), s(1.0, false)), (3, 3));
        let all = ZSpan::Score(s(f64::NEG_INFINITY, false), s(f64::INFINITY, false));
        assert_eq!(all.count(&z), 4);
        let l = set(&[("a", 0.0), ("b", 0.0), ("c", 0.0)]);
        let incl = |m: &'static str| LexBound::Incl(Bytes::from_static(m.as_bytes()));
        let excl = |m: &'static str| LexBound::Excl(Bytes::from_static(m.as_bytes()));
        assert_eq!(lex_span(&l, &incl("b"), &LexBound::Max), (1, 3));
        assert_eq!(lex_span(&l, &excl("a"), &excl("c")), (1, 2));
        assert_eq!(lex_span(&l, &LexBound::Max, &LexBound::Min), (3, 3));
        assert_eq!(ZSpan::Lex(LexBound::Min, incl("b")).count(&l), 2);
    }

    #[test]
    fn limit_picks_from_either_end() {
        let z = set(&[("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]);
        assert_eq!(
            members(&pick(&z, (0, 4), false, Some((1, 2)))),
            [b"b", b"c"]
        );
        assert_eq!(members(&pick(&z, (0, 4), true, Some((1, 2)))), [b"c", b"b"]);
        assert_eq!(
            members(&pick(&z, (1, 4), false, Some((1, -1)))),
            [b"c", b"d"]
        );
        assert!(pick(&z, (0, 4), false, Some((-1, 2))).is_empty());
        assert!(pick(&z, (0, 4), false, Some((4, 2))).is_empty());
        assert!(pick(&z, (0, 4), false, Some((i64::MAX, 1))).is_empty());
        assert_eq!(pick(&z, (0, 4), false, Some((0, i64::MAX))).len(), 4);
        assert_eq!(members(&pick(&z, (1, 3), true, None)), [b"c", b"b"]);
    }
}
