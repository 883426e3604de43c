//! Sorted-set commands with Redis 7.0's replies: ZADD, ZINCRBY, ZREM,
//! ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCARD, ZCOUNT, ZLEXCOUNT, ZRANGE (BYSCORE,
//! BYLEX, REV, LIMIT, WITHSCORES), ZREVRANGE, ZRANGEBYSCORE,
//! ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZREMRANGEBYSCORE,
//! ZREMRANGEBYRANK, ZREMRANGEBYLEX, ZPOPMIN, ZPOPMAX, ZRANDMEMBER, ZSCAN,
//! ZUNIONSTORE, ZINTERSTORE. Writes mark the key for live leaderboards.

use bytes::Bytes;

use super::{Command, KeySpec, KEY1_RO, KEY1_RW, KEY1_WO, RO, WO};
use crate::hub::keyspace::{Value, WrongType};
use crate::hub::zset::{format_score, parse_score, ZSet};
use crate::resp::connection::Conn;
use crate::resp::encode::Out;
use crate::resp::parse::parse_i64;

const W: &[&str] = &["@write", "@sortedset", "@fast"];
const WS: &[&str] = &["@write", "@sortedset", "@slow"];
const R: &[&str] = &["@read", "@sortedset", "@fast"];
const RS: &[&str] = &["@read", "@sortedset", "@slow"];

/// ZUNIONSTORE / ZINTERSTORE: a destination, then `numkeys` sources.
const ZSTORE: &[KeySpec] = &[
    KeySpec::At { at: 1, access: WO },
    KeySpec::NumKeys { at: 2, access: RO },
];

macro_rules! zcmd {
    ($name:ident, $s:literal, $arity:literal, $run:ident, $flags:expr, $acl:expr, $keys:expr) => {
        pub const $name: Command =
            Command::new($s, $arity, "sorted-set", "A sorted set command.", $run)
                .flags($flags)
                .acl($acl)
                .keys($keys);
    };
}

zcmd!(ZADD, "zadd", -4, zadd, &["write", "denyoom", "fast"], W, KEY1_RW);
zcmd!(
    ZINCRBY,
    "zincrby",
    4,
    zincrby,
    &["write", "denyoom", "fast"],
    W, KEY1_RW);
zcmd!(ZREM, "zrem", -3, zrem, &["write", "fast"], W, KEY1_WO);
zcmd!(ZSCORE, "zscore", 3, zscore, &["readonly", "fast"], R, KEY1_RO);
zcmd!(ZMSCORE, "zmscore", -3, zmscore, &["readonly", "fast"], R, KEY1_RO);
zcmd!(ZRANK, "zrank", -3, zrank, &["readonly", "fast"], R, KEY1_RO);
zcmd!(ZREVRANK, "zrevrank", -3, zrevrank, &["readonly", "fast"], R, KEY1_RO);
zcmd!(ZCARD, "zcard", 2, zcard, &["readonly", "fast"], R, KEY1_RO);
zcmd!(ZCOUNT, "zcount", 4, zcount, &["readonly", "fast"], R, KEY1_RO);
zcmd!(
    ZLEXCOUNT,
    "zlexcount",
    4,
    zlexcount,
    &["readonly", "fast"],
    R, KEY1_RO);
zcmd!(ZRANGE, "zrange", -4, zrange, &["readonly"], RS, KEY1_RO);
zcmd!(ZREVRANGE, "zrevrange", -4, zrevrange, &["readonly"], RS, KEY1_RO);
zcmd!(
    ZRANGEBYSCORE,
    "zrangebyscore",
    -4,
    zrangebyscore,
    &["readonly"],
    RS, KEY1_RO);
zcmd!(
    ZREVRANGEBYSCORE,
    "zrevrangebyscore",
    -4,
    zrevrangebyscore,
    &["readonly"],
    RS, KEY1_RO);
zcmd!(
    ZRANGEBYLEX,
    "zrangebylex",
    -4,
    zrangebylex,
    &["readonly"],
    RS, KEY1_RO);
zcmd!(
    ZREVRANGEBYLEX,
    "zrevrangebylex",
    -4,
    zrevrangebylex,
    &["readonly"],
    RS, KEY1_RO);
zcmd!(
    ZREMRANGEBYSCORE,
    "zremrangebyscore",
    4,
    zremrangebyscore,
    &["write"],
    WS, KEY1_WO);
zcmd!(
    ZREMRANGEBYRANK,
    "zremrangebyrank",
    4,
    zremrangebyrank,
    &["write"],
    WS, KEY1_WO);
zcmd!(
    ZREMRANGEBYLEX,
    "zremrangebylex",
    4,
    zremrangebylex,
    &["write"],
    WS, KEY1_WO);
zcmd!(ZPOPMIN, "zpopmin", -2, zpopmin, &["write", "fast"], W, KEY1_RW);
zcmd!(ZPOPMAX, "zpopmax", -2, zpopmax, &["write", "fast"], W, KEY1_RW);
zcmd!(
    ZRANDMEMBER,
    "zrandmember",
    -2,
    zrandmember,
    &["readonly"],
    RS, KEY1_RO);
zcmd!(ZSCAN, "zscan", -3, zscan, &["readonly"], RS, KEY1_RO);
zcmd!(
    ZUNIONSTORE,
    "zunionstore",
    -4,
    zunionstore,
    &["write", "denyoom"],
    WS, ZSTORE);
zcmd!(
    ZINTERSTORE,
    "zinterstore",
    -4,
    zinterstore,
    &["write", "denyoom"],
    WS, ZSTORE);

const NOT_FLOAT: &str = "ERR value is not a valid float";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
const MINMAX_FLOAT: &str = "ERR min or max is not a float";
const MINMAX_LEX: &str = "ERR min or max not valid string range item";

fn err(conn: &mut Conn, m: &str) {
    conn.reply().error(m);
}

fn wrongtype(conn: &mut Conn) {
    err(conn, &WrongType.to_string());
}

fn write_score(out: &mut Out<'_>, s: f64) {
    if out.resp3 {
        out.buf.extend_from_slice(b",");
        out.buf.extend_from_slice(format_score(s).as_bytes());
        out.buf.extend_from_slice(b"\r\n");
    } else {
        out.bulk(format_score(s).as_bytes());
    }
}

/// Members (with scores) as Redis replies them: flat in RESP2, pairs in
/// RESP3 when scores are included.
fn write_range(out: &mut Out<'_>, items: &[(Bytes, f64)], withscores: bool) {
    if !withscores {
        out.array(items.len());
        for (m, _) in items {
            out.bulk(m);
        }
    } else if out.resp3 {
        out.array(items.len());
        for (m, s) in items {
            out.array(2);
            out.bulk(m);
            write_score(out, *s);
        }
    } else {
        out.array(items.len() * 2);
        for (m, s) in items {
            out.bulk(m);
            write_score(out, *s);
        }
    }
}

// ---- ZADD / ZINCRBY ----------------------------------------------------------

fn zadd(conn: &mut Conn, args: &[Bytes]) {
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
    if pairs.is_empty() || pairs.len() % 2 != 0 {
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
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let (mut added, mut changed) = (0i64, 0i64);
    let mut incr_result: Option<f64> = None;
    let mut nan = false;
    // XX never creates the key.
    let done = db.with_zset_mut(&key, !xx, |z| {
        for (m, s) in items {
            let cur = z.score(&m);
            let target = if incr {
                let v = cur.unwrap_or(0.0) + s;
                if v.is_nan() {
                    nan = true;
                    break;
                }
                v
            } else {
                s
            };
            match cur {
                Some(old) => {
                    if nx {
                        continue;
                    }
                    if (gt && target <= old) || (lt && target >= old) {
                        continue;
                    }
                    incr_result = Some(target);
                    if target != old {
                        z.insert(m, target);
                        changed += 1;
                    }
                }
                None => {
                    if xx {
                        continue;
                    }
                    z.insert(m, target);
                    added += 1;
                    incr_result = Some(target);
                }
            }
        }
    });
    drop(db);
    if done.is_err() {
        return wrongtype(conn);
    }
    if nan {
        return err(conn, "ERR resulting score is not a number (NaN)");
    }
    let mut out = conn.reply();
    if incr {
        match incr_result {
            Some(v) => write_score(&mut out, v),
            None => out.null(),
        }
    } else {
        out.int(if ch { added + changed } else { added });
    }
}

fn zincrby(conn: &mut Conn, args: &[Bytes]) {
    let Some(by) = parse_score(&args[2]) else {
        return err(conn, NOT_FLOAT);
    };
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let done = db.with_zset_mut(&key, true, |z| z.incr(args[3].clone(), by));
    drop(db);
    let v = match done {
        Err(_) => return wrongtype(conn),
        Ok(Some(Some(v))) => v,
        Ok(_) => return err(conn, "ERR resulting score is not a number (NaN)"),
    };
    write_score(&mut conn.reply(), v);
}

// ---- reads by member -------------------------------------------------------------

/// Runs `f` on the sorted set at `key` (None when absent), or replies
/// WRONGTYPE.
fn read<R>(conn: &mut Conn, key: &[u8], f: impl FnOnce(Option<&ZSet>) -> R) -> Option<R> {
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    match db.zset(key) {
        Err(_) => {
            drop(db);
            wrongtype(conn);
            None
        }
        Ok(z) => Some(f(z)),
    }
}

fn zscore(conn: &mut Conn, args: &[Bytes]) {
    if let Some(s) = read(conn, &args[1], |z| z.and_then(|z| z.score(&args[2]))) {
        let mut out = conn.reply();
        match s {
            Some(v) => write_score(&mut out, v),
            None => out.null(),
        }
    }
}

fn zmscore(conn: &mut Conn, args: &[Bytes]) {
    if let Some(v) = read(conn, &args[1], |z| {
        args[2..]
            .iter()
            .map(|m| z.and_then(|z| z.score(m)))
            .collect::<Vec<_>>()
    }) {
        let mut out = conn.reply();
        out.array(v.len());
        for s in v {
            match s {
                Some(s) => write_score(&mut out, s),
                None => out.null(),
            }
        }
    }
}

fn rank_generic(conn: &mut Conn, args: &[Bytes], rev: bool) {
    let withscore = match args.len() {
        3 => false,
        4 if args[3].eq_ignore_ascii_case(b"WITHSCORE") => true,
        4 => return err(conn, SYNTAX),
        _ => {
            let name = if rev { "zrevrank" } else { "zrank" };
            return err(
                conn,
                &format!("ERR wrong number of arguments for '{name}' command"),
            );
        }
    };
    if let Some(r) = read(conn, &args[1], |z| {
        z.and_then(|z| {
            let r = z.rank(&args[2])?;
            let s = z.score(&args[2])?;
            Some((if rev { z.len() - 1 - r } else { r }, s))
        })
    }) {
        let mut out = conn.reply();
        match (r, withscore) {
            (None, _) => out.null(),
            (Some((r, _)), false) => out.int(r as i64),
            (Some((r, s)), true) => {
                out.array(2);
                out.int(r as i64);
                write_score(&mut out, s);
            }
        }
    }
}

fn zrank(conn: &mut Conn, args: &[Bytes]) {
    rank_generic(conn, args, false)
}

fn zrevrank(conn: &mut Conn, args: &[Bytes]) {
    rank_generic(conn, args, true)
}

fn zcard(conn: &mut Conn, args: &[Bytes]) {
    if let Some(n) = read(conn, &args[1], |z| z.map_or(0, |z| z.len())) {
        conn.reply().int(n as i64);
    }
}

// ---- ranges ----------------------------------------------------------------------

/// A score bound: value and exclusivity.
#[derive(Clone, Copy)]
struct ScoreBound {
    v: f64,
    excl: bool,
}

fn parse_score_bound(a: &[u8]) -> Option<ScoreBound> {
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
enum LexBound {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

fn parse_lex_bound(a: &Bytes) -> Option<LexBound> {
    match a.first() {
        Some(b'-') if a.len() == 1 => Some(LexBound::Min),
        Some(b'+') if a.len() == 1 => Some(LexBound::Max),
        Some(b'[') => Some(LexBound::Incl(a.slice(1..))),
        Some(b'(') => Some(LexBound::Excl(a.slice(1..))),
        _ => None,
    }
}

/// Rank interval `[start, end)` of elements within score bounds.
fn score_span(z: &ZSet, min: ScoreBound, max: ScoreBound) -> (usize, usize) {
    let start = z.count_score_below(min.v, min.excl);
    let end = z.count_score_below(max.v, !max.excl);
    (start, end.max(start))
}

fn lex_span(z: &ZSet, min: &LexBound, max: &LexBound) -> (usize, usize) {
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
fn rank_span(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
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
enum By {
    Rank,
    Score,
    Lex,
}

struct RangeReq {
    by: By,
    rev: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
}

/// Picks `[start, end)` in order (or reversed), then applies LIMIT.
fn pick(z: &ZSet, span: (usize, usize), rev: bool, limit: Option<(i64, i64)>) -> Vec<(Bytes, f64)> {
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
fn range_generic(conn: &mut Conn, key: &Bytes, lo: &Bytes, hi: &Bytes, req: RangeReq) {
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
fn parse_opts(
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

fn zrange(conn: &mut Conn, args: &[Bytes]) {
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

fn zrevrange(conn: &mut Conn, args: &[Bytes]) {
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

fn zrangebyscore(conn: &mut Conn, args: &[Bytes]) {
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

fn zrevrangebyscore(conn: &mut Conn, args: &[Bytes]) {
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

fn zrangebylex(conn: &mut Conn, args: &[Bytes]) {
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

fn zrevrangebylex(conn: &mut Conn, args: &[Bytes]) {
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

fn zcount(conn: &mut Conn, args: &[Bytes]) {
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

fn zlexcount(conn: &mut Conn, args: &[Bytes]) {
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

// ---- removals --------------------------------------------------------------------

/// Removes the members of `span` (computed on the set) and replies the count.
fn remove_span(conn: &mut Conn, key: &Bytes, span: impl FnOnce(&ZSet) -> Option<(usize, usize)>) {
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let n = db.with_zset_mut(key, false, |z| match span(z) {
        None => 0,
        Some((a, b)) => {
            let gone = z.range_by_rank(a, b);
            for (m, _) in &gone {
                z.remove(m);
            }
            gone.len()
        }
    });
    drop(db);
    match n {
        Err(_) => wrongtype(conn),
        Ok(n) => conn.reply().int(n.unwrap_or(0) as i64),
    }
}

fn zrem(conn: &mut Conn, args: &[Bytes]) {
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let n = db.with_zset_mut(&key, false, |z| {
        args[2..].iter().filter(|m| z.remove(m).is_some()).count()
    });
    drop(db);
    match n {
        Err(_) => wrongtype(conn),
        Ok(n) => conn.reply().int(n.unwrap_or(0) as i64),
    }
}

fn zremrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (parse_score_bound(&args[2]), parse_score_bound(&args[3])) else {
        return err(conn, MINMAX_FLOAT);
    };
    remove_span(conn, &args[1].clone(), |z| Some(score_span(z, min, max)));
}

fn zremrangebyrank(conn: &mut Conn, args: &[Bytes]) {
    let (Some(s), Some(e)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        return err(conn, NOT_INT);
    };
    remove_span(conn, &args[1].clone(), |z| rank_span(z.len(), s, e));
}

fn zremrangebylex(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (parse_lex_bound(&args[2]), parse_lex_bound(&args[3])) else {
        return err(conn, MINMAX_LEX);
    };
    remove_span(conn, &args[1].clone(), |z| Some(lex_span(z, &min, &max)));
}

fn pop_generic(conn: &mut Conn, args: &[Bytes], max: bool) {
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
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let popped = db.with_zset_mut(&key, false, |z| {
        let n = count.unwrap_or(1).min(z.len());
        let mut v = if max {
            let mut v = z.range_by_rank(z.len() - n, z.len());
            v.reverse();
            v
        } else {
            z.range_by_rank(0, n)
        };
        for (m, _) in &v {
            z.remove(m);
        }
        v.truncate(n);
        v
    });
    drop(db);
    let popped = match popped {
        Err(_) => return wrongtype(conn),
        Ok(p) => p.unwrap_or_default(),
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

fn zpopmin(conn: &mut Conn, args: &[Bytes]) {
    pop_generic(conn, args, false)
}

fn zpopmax(conn: &mut Conn, args: &[Bytes]) {
    pop_generic(conn, args, true)
}

fn zrandmember(conn: &mut Conn, args: &[Bytes]) {
    let (count, withscores) = match &args[2..] {
        [] => (None, false),
        [c] => (parse_i64(c), false),
        [c, w] if w.eq_ignore_ascii_case(b"WITHSCORES") => (parse_i64(c), true),
        _ => return err(conn, SYNTAX),
    };
    if args.len() > 2 && count.is_none() {
        return err(conn, NOT_INT);
    }
    let Some(all) = read(conn, &args[1], |z| z.map(|z| z.all())) else {
        return;
    };
    let all = all.unwrap_or_default();
    let mut out = conn.reply();
    let mut seed = crate::hub::now_ms() ^ 0x5DEECE66D;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    match count {
        None => match all.is_empty() {
            true => out.null(),
            false => out.bulk(&all[rnd(all.len())].0),
        },
        Some(n) if n < 0 => {
            if n.unsigned_abs() > super::sets::MAX_RANDOM_REPLY {
                return out.error("ERR value is out of range");
            }
            if all.is_empty() {
                return out.array(0);
            }
            let picks: Vec<(Bytes, f64)> = (0..n.unsigned_abs())
                .map(|_| all[rnd(all.len())].clone())
                .collect();
            write_range(&mut out, &picks, withscores);
        }
        Some(n) => {
            let n = (n as usize).min(all.len());
            let mut pool = all;
            let picks: Vec<(Bytes, f64)> = if n == pool.len() {
                pool
            } else {
                (0..n)
                    .map(|_| {
                        let i = rnd(pool.len());
                        pool.swap_remove(i)
                    })
                    .collect()
            };
            write_range(&mut out, &picks, withscores);
        }
    }
}

fn zscan(conn: &mut Conn, args: &[Bytes]) {
    let cursor = match std::str::from_utf8(&args[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) => c,
        None => return err(conn, "ERR invalid cursor"),
    };
    let (mut count, mut pattern) = (10usize, None);
    let mut i = 3;
    while i < args.len() {
        if i + 1 >= args.len() {
            return err(conn, SYNTAX);
        }
        if args[i].eq_ignore_ascii_case(b"COUNT") {
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return err(conn, SYNTAX),
                None => return err(conn, NOT_INT),
            }
        } else if args[i].eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(crate::hub::glob::Glob::new(&args[i + 1]));
        } else {
            return err(conn, SYNTAX);
        }
        i += 2;
    }
    let Some(all) = read(conn, &args[1], |z| z.map(|z| z.all())) else {
        return;
    };
    let all = all.unwrap_or_default();
    // Small sets (Redis's listpack encoding, up to 128 members) come whole,
    // in score order; larger ones page by rank.
    let (next, page) = if all.len() <= 128 {
        (0u64, all)
    } else {
        let start = cursor as usize;
        let end = start.saturating_add(count).min(all.len());
        let next = if end >= all.len() { 0 } else { end as u64 };
        (
            next,
            all.into_iter()
                .skip(start)
                .take(end.saturating_sub(start))
                .collect(),
        )
    };
    let page: Vec<(Bytes, f64)> = page
        .into_iter()
        .filter(|(m, _)| pattern.as_ref().is_none_or(|g| g.matches(m)))
        .collect();
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(page.len() * 2);
    for (m, s) in &page {
        out.bulk(m);
        out.bulk(format_score(*s).as_bytes());
    }
}

// ---- ZUNIONSTORE / ZINTERSTORE -----------------------------------------------------

fn store_generic(conn: &mut Conn, args: &[Bytes], union: bool) {
    let name = if union { "zunionstore" } else { "zinterstore" };
    let numkeys = match parse_i64(&args[2]) {
        Some(n) => n,
        None => return err(conn, NOT_INT),
    };
    if numkeys < 1 {
        return err(
            conn,
            &format!("ERR at least 1 input key is needed for '{name}' command"),
        );
    }
    let numkeys = numkeys as usize;
    if numkeys > args.len() - 3 {
        return err(conn, SYNTAX);
    }
    let keys = &args[3..3 + numkeys];
    let mut weights = vec![1.0f64; numkeys];
    let mut agg = 0u8; // 0 sum, 1 min, 2 max
    let mut i = 3 + numkeys;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"WEIGHTS") && args.len() - i > numkeys {
            for j in 0..numkeys {
                match parse_score(&args[i + 1 + j]) {
                    Some(w) => weights[j] = w,
                    None => return err(conn, "ERR weight value is not a float"),
                }
            }
            i += 1 + numkeys;
        } else if args[i].eq_ignore_ascii_case(b"AGGREGATE") && i + 1 < args.len() {
            agg = match args[i + 1].to_ascii_uppercase().as_slice() {
                b"SUM" => 0,
                b"MIN" => 1,
                b"MAX" => 2,
                _ => return err(conn, SYNTAX),
            };
            i += 2;
        } else {
            return err(conn, SYNTAX);
        }
    }
    let dest = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    // Inputs: sorted sets, or plain sets (score 1).
    let mut inputs: Vec<Option<Vec<(Bytes, f64)>>> = Vec::with_capacity(numkeys);
    for k in keys {
        let v = match db.get(k).map(|e| &e.value) {
            None => None,
            Some(Value::ZSet(z)) => Some(z.all()),
            Some(Value::Set(s)) => Some(s.iter().map(|m| (m.clone(), 1.0)).collect()),
            Some(_) => {
                drop(db);
                return wrongtype(conn);
            }
        };
        inputs.push(v);
    }
    let combine = |a: f64, b: f64| -> f64 {
        let r = match agg {
            1 => a.min(b),
            2 => a.max(b),
            _ => a + b,
        };
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let weigh = |s: f64, w: f64| {
        let r = s * w;
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let mut acc: std::collections::HashMap<Bytes, f64> = std::collections::HashMap::new();
    if union {
        for (input, w) in inputs.iter().zip(&weights) {
            for (m, s) in input.iter().flatten() {
                let v = weigh(*s, *w);
                acc.entry(m.clone())
                    .and_modify(|a| *a = combine(*a, v))
                    .or_insert(v);
            }
        }
    } else if inputs.iter().all(|i| i.is_some()) {
        let sets: Vec<std::collections::HashMap<&Bytes, f64>> = inputs
            .iter()
            .flatten()
            .map(|v| v.iter().map(|(m, s)| (m, *s)).collect())
            .collect();
        if let Some(first) = inputs[0].as_ref() {
            'outer: for (m, s) in first {
                let mut total = weigh(*s, weights[0]);
                for (j, set) in sets.iter().enumerate().skip(1) {
                    match set.get(m) {
                        Some(v) => total = combine(total, weigh(*v, weights[j])),
                        None => continue 'outer,
                    }
                }
                acc.insert(m.clone(), total);
            }
        }
    }
    let n = acc.len();
    let mut z = ZSet::new();
    for (m, s) in acc {
        z.insert(m, s);
    }
    db.store_zset(dest, z);
    drop(db);
    conn.reply().int(n as i64);
}

fn zunionstore(conn: &mut Conn, args: &[Bytes]) {
    store_generic(conn, args, true)
}

fn zinterstore(conn: &mut Conn, args: &[Bytes]) {
    store_generic(conn, args, false)
}
