//! Ranges by rank, score and lex (ZRANGE and its older forms), ZCOUNT,
//! ZLEXCOUNT, and the bounds they parse.

use super::*;

// ---- ranges ----------------------------------------------------------------------

/// A score bound: value and exclusivity.
#[derive(Clone, Copy)]
pub(super) struct ScoreBound {
    v: f64,
    excl: bool,
}

pub(super) fn parse_score_bound(a: &[u8]) -> Option<ScoreBound> {
    let (excl, rest) = match a.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, a),
    };
    let t = std::str::from_utf8(rest).ok()?;
    let v: f64 = t.parse().ok()?;
    if v.is_nan() || t.starts_with(char::is_whitespace) {
        return None;
    }
    Some(ScoreBound { v, excl })
}

/// A lex bound: `-`, `+`, `[x`, `(x`.
#[derive(Clone)]
pub(super) enum LexBound {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

pub(super) fn parse_lex_bound(a: &Bytes) -> Option<LexBound> {
    match a.first() {
        Some(b'-') if a.len() == 1 => Some(LexBound::Min),
        Some(b'+') if a.len() == 1 => Some(LexBound::Max),
        Some(b'[') => Some(LexBound::Incl(a.slice(1..))),
        Some(b'(') => Some(LexBound::Excl(a.slice(1..))),
        _ => None,
    }
}

/// Rank interval `[start, end)` of elements within score bounds.
pub(super) fn score_span(z: &ZSet, min: ScoreBound, max: ScoreBound) -> (usize, usize) {
    let start = z.count_score_below(min.v, min.excl);
    let end = z.count_score_below(max.v, !max.excl);
    (start, end.max(start))
}

pub(super) fn lex_span(z: &ZSet, min: &LexBound, max: &LexBound) -> (usize, usize) {
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

/// Redis's rank normalisation; `None` for an empty range.
pub(super) fn rank_span(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
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

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    Rank,
    Score,
    Lex,
}

pub(super) struct RangeReq {
    by: By,
    rev: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
}

/// Picks `[start, end)` in order (or reversed), then applies LIMIT.
pub(super) fn pick(
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
            let o = o as usize;
            let c = if c < 0 { total } else { c as usize };
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

/// The common range command. `lo`/`hi` are the bounds as given (already
/// swapped for the legacy REV commands).
pub(super) fn range_generic(conn: &mut Conn, key: &Bytes, lo: &Bytes, hi: &Bytes, req: RangeReq) {
    if req.by == By::Rank && (parse_i64(lo).is_none() || parse_i64(hi).is_none()) {
        return err(conn, NOT_INT);
    }
    let items = match req.by {
        By::Rank => {
            let (s, e) = (parse_i64(lo).unwrap_or(0), parse_i64(hi).unwrap_or(0));
            read(conn, key, |z| {
                let Some(z) = z else { return Vec::new() };
                // For REV, ranks count from the top.
                match rank_span(z.len(), s, e) {
                    None => Vec::new(),
                    Some((a, b)) if req.rev => {
                        let mut v = z.range_by_rank(z.len() - b, z.len() - a);
                        v.reverse();
                        v
                    }
                    Some((a, b)) => z.range_by_rank(a, b),
                }
            })
        }
        By::Score => {
            let (min, max) = if req.rev { (hi, lo) } else { (lo, hi) };
            let (Some(min), Some(max)) = (parse_score_bound(min), parse_score_bound(max)) else {
                return err(conn, MINMAX_FLOAT);
            };
            read(conn, key, |z| {
                z.map_or_else(Vec::new, |z| {
                    pick(z, score_span(z, min, max), req.rev, req.limit)
                })
            })
        }
        By::Lex => {
            let (min, max) = if req.rev { (hi, lo) } else { (lo, hi) };
            let (Some(min), Some(max)) = (parse_lex_bound(min), parse_lex_bound(max)) else {
                return err(conn, MINMAX_LEX);
            };
            read(conn, key, |z| {
                z.map_or_else(Vec::new, |z| {
                    pick(z, lex_span(z, &min, &max), req.rev, req.limit)
                })
            })
        }
    };
    if let Some(items) = items {
        write_range(&mut conn.reply(), &items, req.withscores);
    }
}

/// Parses `[WITHSCORES] [LIMIT offset count]` style options from `args[at..]`.
pub(super) fn parse_opts(
    conn: &mut Conn,
    args: &[Bytes],
    at: usize,
    allow_withscores: bool,
    allow_limit: bool,
) -> Option<(bool, Option<(i64, i64)>)> {
    let (mut withscores, mut limit) = (false, None);
    let mut i = at;
    while i < args.len() {
        if allow_withscores && args[i].eq_ignore_ascii_case(b"WITHSCORES") {
            withscores = true;
            i += 1;
        } else if allow_limit && args[i].eq_ignore_ascii_case(b"LIMIT") && i + 2 < args.len() {
            match (parse_i64(&args[i + 1]), parse_i64(&args[i + 2])) {
                (Some(o), Some(c)) => limit = Some((o, c)),
                _ => {
                    err(conn, NOT_INT);
                    return None;
                }
            }
            i += 3;
        } else {
            err(conn, SYNTAX);
            return None;
        }
    }
    Some((withscores, limit))
}

pub(super) fn zrange(conn: &mut Conn, args: &[Bytes]) {
    let (mut by, mut rev, mut withscores, mut limit) = (By::Rank, false, false, None);
    let mut i = 4;
    while i < args.len() {
        let a = args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"BYSCORE" => by = By::Score,
            b"BYLEX" => by = By::Lex,
            b"REV" => rev = true,
            b"WITHSCORES" => withscores = true,
            b"LIMIT" if i + 2 < args.len() => {
                match (parse_i64(&args[i + 1]), parse_i64(&args[i + 2])) {
                    (Some(o), Some(c)) => limit = Some((o, c)),
                    _ => return err(conn, NOT_INT),
                }
                i += 2;
            }
            _ => return err(conn, SYNTAX),
        }
        i += 1;
    }
    if limit.is_some() && by == By::Rank {
        return err(
            conn,
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    if withscores && by == By::Lex {
        return err(
            conn,
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        );
    }
    // ZRANGE ... REV takes max then min for BYSCORE/BYLEX, like the old
    // ZREV* commands: range_generic swaps them back.
    let (lo, hi) = (args[2].clone(), args[3].clone());
    range_generic(
        conn,
        &args[1].clone(),
        &lo,
        &hi,
        RangeReq {
            by,
            rev,
            limit,
            withscores,
        },
    );
}

pub(super) fn zrevrange(conn: &mut Conn, args: &[Bytes]) {
    let Some((withscores, _)) = parse_opts(conn, args, 4, true, false) else {
        return;
    };
    range_generic(
        conn,
        &args[1].clone(),
        &args[2].clone(),
        &args[3].clone(),
        RangeReq {
            by: By::Rank,
            rev: true,
            limit: None,
            withscores,
        },
    );
}

pub(super) fn zrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    let Some((withscores, limit)) = parse_opts(conn, args, 4, true, true) else {
        return;
    };
    range_generic(
        conn,
        &args[1].clone(),
        &args[2].clone(),
        &args[3].clone(),
        RangeReq {
            by: By::Score,
            rev: false,
            limit,
            withscores,
        },
    );
}

pub(super) fn zrevrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    let Some((withscores, limit)) = parse_opts(conn, args, 4, true, true) else {
        return;
    };
    range_generic(
        conn,
        &args[1].clone(),
        &args[2].clone(),
        &args[3].clone(),
        RangeReq {
            by: By::Score,
            rev: true,
            limit,
            withscores,
        },
    );
}

pub(super) fn zrangebylex(conn: &mut Conn, args: &[Bytes]) {
    let Some((_, limit)) = parse_opts(conn, args, 4, false, true) else {
        return;
    };
    range_generic(
        conn,
        &args[1].clone(),
        &args[2].clone(),
        &args[3].clone(),
        RangeReq {
            by: By::Lex,
            rev: false,
            limit,
            withscores: false,
        },
    );
}

pub(super) fn zrevrangebylex(conn: &mut Conn, args: &[Bytes]) {
    let Some((_, limit)) = parse_opts(conn, args, 4, false, true) else {
        return;
    };
    range_generic(
        conn,
        &args[1].clone(),
        &args[2].clone(),
        &args[3].clone(),
        RangeReq {
            by: By::Lex,
            rev: true,
            limit,
            withscores: false,
        },
    );
}

pub(super) fn zcount(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (parse_score_bound(&args[2]), parse_score_bound(&args[3])) else {
        return err(conn, MINMAX_FLOAT);
    };
    if let Some(n) = read(conn, &args[1], |z| {
        z.map_or(0, |z| {
            let (a, b) = score_span(z, min, max);
            b - a
        })
    }) {
        conn.reply().int(n as i64);
    }
}

pub(super) fn zlexcount(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (parse_lex_bound(&args[2]), parse_lex_bound(&args[3])) else {
        return err(conn, MINMAX_LEX);
    };
    if let Some(n) = read(conn, &args[1], |z| {
        z.map_or(0, |z| {
            let (a, b) = lex_span(z, &min, &max);
            b - a
        })
    }) {
        conn.reply().int(n as i64);
    }
}
