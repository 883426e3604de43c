//! Sorted-set commands with Redis 7.0's replies: ZADD, ZINCRBY, ZREM,
//! ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCARD, ZCOUNT, ZLEXCOUNT, ZRANGE (BYSCORE,
//! BYLEX, REV, LIMIT, WITHSCORES), ZREVRANGE, ZRANGEBYSCORE,
//! ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZREMRANGEBYSCORE,
//! ZREMRANGEBYRANK, ZREMRANGEBYLEX, ZPOPMIN, ZPOPMAX, ZRANDMEMBER, ZSCAN,
//! ZUNIONSTORE, ZINTERSTORE. These files parse and reply; the rules (and
//! the leaderboard notice of every write) are the hub's
//! (`hub::data::zsets`).

mod range;
mod read;
mod store;
mod write;

use range::*;
use read::*;
use store::*;
use write::*;

use bytes::Bytes;

use super::{Command, KeySpec, KEY1_RO, KEY1_RW, KEY1_WO, RO, WO};
use crate::hub::data::{
    Aggregate, DataError, LexBound, ScoreBound, ZAddFlags, ZRange, ZSpan, ZStoreOp,
};
use crate::hub::zset::{format_score, parse_score};
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

zcmd!(
    ZADD,
    "zadd",
    -4,
    zadd,
    &["write", "denyoom", "fast"],
    W,
    KEY1_RW
);
zcmd!(
    ZINCRBY,
    "zincrby",
    4,
    zincrby,
    &["write", "denyoom", "fast"],
    W,
    KEY1_RW
);
zcmd!(ZREM, "zrem", -3, zrem, &["write", "fast"], W, KEY1_WO);
zcmd!(
    ZSCORE,
    "zscore",
    3,
    zscore,
    &["readonly", "fast"],
    R,
    KEY1_RO
);
zcmd!(
    ZMSCORE,
    "zmscore",
    -3,
    zmscore,
    &["readonly", "fast"],
    R,
    KEY1_RO
);
zcmd!(ZRANK, "zrank", -3, zrank, &["readonly", "fast"], R, KEY1_RO);
zcmd!(
    ZREVRANK,
    "zrevrank",
    -3,
    zrevrank,
    &["readonly", "fast"],
    R,
    KEY1_RO
);
zcmd!(ZCARD, "zcard", 2, zcard, &["readonly", "fast"], R, KEY1_RO);
zcmd!(
    ZCOUNT,
    "zcount",
    4,
    zcount,
    &["readonly", "fast"],
    R,
    KEY1_RO
);
zcmd!(
    ZLEXCOUNT,
    "zlexcount",
    4,
    zlexcount,
    &["readonly", "fast"],
    R,
    KEY1_RO
);
zcmd!(ZRANGE, "zrange", -4, zrange, &["readonly"], RS, KEY1_RO);
zcmd!(
    ZREVRANGE,
    "zrevrange",
    -4,
    zrevrange,
    &["readonly"],
    RS,
    KEY1_RO
);
zcmd!(
    ZRANGEBYSCORE,
    "zrangebyscore",
    -4,
    zrangebyscore,
    &["readonly"],
    RS,
    KEY1_RO
);
zcmd!(
    ZREVRANGEBYSCORE,
    "zrevrangebyscore",
    -4,
    zrevrangebyscore,
    &["readonly"],
    RS,
    KEY1_RO
);
zcmd!(
    ZRANGEBYLEX,
    "zrangebylex",
    -4,
    zrangebylex,
    &["readonly"],
    RS,
    KEY1_RO
);
zcmd!(
    ZREVRANGEBYLEX,
    "zrevrangebylex",
    -4,
    zrevrangebylex,
    &["readonly"],
    RS,
    KEY1_RO
);
zcmd!(
    ZREMRANGEBYSCORE,
    "zremrangebyscore",
    4,
    zremrangebyscore,
    &["write"],
    WS,
    KEY1_WO
);
zcmd!(
    ZREMRANGEBYRANK,
    "zremrangebyrank",
    4,
    zremrangebyrank,
    &["write"],
    WS,
    KEY1_WO
);
zcmd!(
    ZREMRANGEBYLEX,
    "zremrangebylex",
    4,
    zremrangebylex,
    &["write"],
    WS,
    KEY1_WO
);
zcmd!(
    ZPOPMIN,
    "zpopmin",
    -2,
    zpopmin,
    &["write", "fast"],
    W,
    KEY1_RW
);
zcmd!(
    ZPOPMAX,
    "zpopmax",
    -2,
    zpopmax,
    &["write", "fast"],
    W,
    KEY1_RW
);
zcmd!(
    ZRANDMEMBER,
    "zrandmember",
    -2,
    zrandmember,
    &["readonly"],
    RS,
    KEY1_RO
);
zcmd!(ZSCAN, "zscan", -3, zscan, &["readonly"], RS, KEY1_RO);
zcmd!(
    ZUNIONSTORE,
    "zunionstore",
    -4,
    zunionstore,
    &["write", "denyoom"],
    WS,
    ZSTORE
);
zcmd!(
    ZINTERSTORE,
    "zinterstore",
    -4,
    zinterstore,
    &["write", "denyoom"],
    WS,
    ZSTORE
);

const NOT_FLOAT: &str = "ERR value is not a valid float";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
const MINMAX_FLOAT: &str = "ERR min or max is not a float";
const MINMAX_LEX: &str = "ERR min or max not valid string range item";

fn err(conn: &mut Conn, m: &str) {
    conn.reply().error(m);
}

/// Replies the error of a failed hub operation.
fn fail(conn: &mut Conn, e: DataError) {
    err(conn, &e.to_string());
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
