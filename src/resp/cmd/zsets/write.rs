//! ZADD, ZINCRBY and the removals (ZREM, ZREMRANGEBY*, ZPOPMIN/MAX):
//! parsed here, applied by the hub (which notices every change).

use super::*;

// ---- ZADD / ZINCRBY ----------------------------------------------------------

pub(super) fn zadd(conn: &mut Conn, args: &[Bytes]) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        let a = args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return err(conn, SYNTAX);
    }
    if nx && xx {
        return err(
            conn,
            "ERR XX and NX options at the same time are not compatible",
        );
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return err(
            conn,
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        );
    }
    if incr && pairs.len() > 2 {
        return err(
            conn,
            "ERR INCR option supports a single increment-element pair",
        );
    }
    let mut items = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        match parse_score(&p[0]) {
            Some(s) => items.push((p[1].clone(), s)),
            None => return err(conn, NOT_FLOAT),
        }
    }
    let flags = ZAddFlags {
        nx,
        xx,
        gt,
        lt,
        incr,
    };
    let hub = conn.server.hub.clone();
    let r = match hub.zadd(&args[1], flags, items) {
        Ok(r) => r,
        Err(e) => return fail(conn, e),
    };
    let mut out = conn.reply();
    if incr {
        match r.score {
            Some(v) => write_score(&mut out, v),
            None => out.null(),
        }
    } else {
        let n = if ch { r.added + r.changed } else { r.added };
        out.int(n as i64);
    }
}

pub(super) fn zincrby(conn: &mut Conn, args: &[Bytes]) {
    let Some(by) = parse_score(&args[2]) else {
        return err(conn, NOT_FLOAT);
    };
    let hub = conn.server.hub.clone();
    match hub.zincrby(&args[1], by, args[3].clone()) {
        Ok(v) => write_score(&mut conn.reply(), v),
        Err(e) => fail(conn, e),
    }
}

// ---- removals --------------------------------------------------------------------

/// Removes the members of `span` and replies the count.
pub(super) fn remove_span(conn: &mut Conn, key: &[u8], span: ZSpan) {
    let hub = conn.server.hub.clone();
    match hub.zremrange(key, &span) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn zrem(conn: &mut Conn, args: &[Bytes]) {
    let hub = conn.server.hub.clone();
    match hub.zrem(&args[1], &args[2..]) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn zremrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (ScoreBound::parse(&args[2]), ScoreBound::parse(&args[3])) else {
        return err(conn, MINMAX_FLOAT);
    };
    remove_span(conn, &args[1], ZSpan::Score(min, max));
}

pub(super) fn zremrangebyrank(conn: &mut Conn, args: &[Bytes]) {
    let (Some(s), Some(e)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        return err(conn, NOT_INT);
    };
    remove_span(conn, &args[1], ZSpan::Rank(s, e));
}

pub(super) fn zremrangebylex(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (LexBound::parse(&args[2]), LexBound::parse(&args[3])) else {
        return err(conn, MINMAX_LEX);
    };
    remove_span(conn, &args[1], ZSpan::Lex(min, max));
}

pub(super) fn pop_generic(conn: &mut Conn, args: &[Bytes], max: bool) {
    if args.len() > 3 {
        return err(conn, SYNTAX);
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match parse_i64(a) {
            Some(n) if n >= 0 => Some(n as usize),
            Some(_) => return err(conn, "ERR value is out of range, must be positive"),
            None => return err(conn, NOT_INT),
        },
    };
    let hub = conn.server.hub.clone();
    let popped = match hub.zpop(&args[1], count.unwrap_or(1), max) {
        Ok(p) => p,
        Err(e) => return fail(conn, e),
    };
    let mut out = conn.reply();
    if count.is_none() && out.resp3 {
        // Without a count RESP3 gets one flat [member, score] pair.
        out.array(popped.len() * 2);
        for (m, s) in &popped {
            out.bulk(m);
            write_score(&mut out, *s);
        }
    } else {
        write_range(&mut out, &popped, true);
    }
}

pub(super) fn zpopmin(conn: &mut Conn, args: &[Bytes]) {
    pop_generic(conn, args, false)
}

pub(super) fn zpopmax(conn: &mut Conn, args: &[Bytes]) {
    pop_generic(conn, args, true)
}
