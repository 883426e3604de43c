//! Ranges by rank, score and lex (ZRANGE and its older forms), ZCOUNT and
//! ZLEXCOUNT: their options parsed here, their bounds by the hub's types.

use super::*;

// ---- ranges ----------------------------------------------------------------------

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

/// The common range command. `lo`/`hi` are the bounds as given (already
/// swapped for the legacy REV commands).
pub(super) fn range_generic(conn: &mut Conn, key: &Bytes, lo: &Bytes, hi: &Bytes, req: RangeReq) {
    let span = match req.by {
        By::Rank => match (parse_i64(lo), parse_i64(hi)) {
            (Some(s), Some(e)) => ZSpan::Rank(s, e),
            _ => return err(conn, NOT_INT),
        },
        By::Score => {
            let (min, max) = if req.rev { (hi, lo) } else { (lo, hi) };
            let (Some(min), Some(max)) = (ScoreBound::parse(min), ScoreBound::parse(max)) else {
                return err(conn, MINMAX_FLOAT);
            };
            ZSpan::Score(min, max)
        }
        By::Lex => {
            let (min, max) = if req.rev { (hi, lo) } else { (lo, hi) };
            let (Some(min), Some(max)) = (LexBound::parse(min), LexBound::parse(max)) else {
                return err(conn, MINMAX_LEX);
            };
            ZSpan::Lex(min, max)
        }
    };
    let q = ZRange {
        span,
        rev: req.rev,
        limit: req.limit,
    };
    match conn.server.hub.zrange(key, &q) {
        Ok(items) => write_range(&mut conn.reply(), &items, req.withscores),
        Err(e) => fail(conn, e),
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
    range_generic(
        conn,
        &args[1],
        &args[2],
        &args[3],
        RangeReq {
            by,
            rev,
            limit,
            withscores,
        },
    );
}

/// The older range commands: ZREVRANGE (by rank, WITHSCORES), ZRANGEBYSCORE
/// and ZREVRANGEBYSCORE (WITHSCORES, LIMIT), ZRANGEBYLEX and ZREVRANGEBYLEX
/// (LIMIT); the `REV` forms take max before min.
fn range_by(conn: &mut Conn, args: &[Bytes], by: By, rev: bool) {
    let Some((withscores, limit)) = parse_opts(conn, args, 4, by != By::Lex, by != By::Rank) else {
        return;
    };
    range_generic(
        conn,
        &args[1],
        &args[2],
        &args[3],
        RangeReq {
            by,
            rev,
            limit,
            withscores: withscores && by != By::Lex,
        },
    );
}

pub(super) fn zrevrange(conn: &mut Conn, args: &[Bytes]) {
    range_by(conn, args, By::Rank, true)
}

pub(super) fn zrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    range_by(conn, args, By::Score, false)
}

pub(super) fn zrevrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    range_by(conn, args, By::Score, true)
}

pub(super) fn zrangebylex(conn: &mut Conn, args: &[Bytes]) {
    range_by(conn, args, By::Lex, false)
}

pub(super) fn zrevrangebylex(conn: &mut Conn, args: &[Bytes]) {
    range_by(conn, args, By::Lex, true)
}

/// ZCOUNT and ZLEXCOUNT: the size of a span.
fn count_span(conn: &mut Conn, key: &[u8], span: ZSpan) {
    match conn.server.hub.zcount(key, &span) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn zcount(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (ScoreBound::parse(&args[2]), ScoreBound::parse(&args[3])) else {
        return err(conn, MINMAX_FLOAT);
    };
    count_span(conn, &args[1], ZSpan::Score(min, max));
}

pub(super) fn zlexcount(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (LexBound::parse(&args[2]), LexBound::parse(&args[3])) else {
        return err(conn, MINMAX_LEX);
    };
    count_span(conn, &args[1], ZSpan::Lex(min, max));
}
