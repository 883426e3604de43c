//! Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SPOP,
//! SRANDMEMBER, SMOVE, SUNION, SINTER, SDIFF, SUNIONSTORE, SINTERSTORE,
//! SDIFFSTORE, SINTERCARD, SSCAN, with Redis 7.0's replies.
//!
//! Each command parses its arguments, calls the hub (`hub::data::sets`,
//! which holds the sets' rules and the presence views) and encodes the
//! result.

use bytes::Bytes;

use super::{int_arg, Command, KeySpec, ALL_RO, KEY1_RO, KEY1_RW, KEY1_WO, RO, RW, STORE, WO};
use crate::hub::data::{DataError, RandomPick, SetOp};
use crate::resp::connection::Conn;
use crate::resp::encode::Out;

const W: &[&str] = &["@write", "@set", "@fast"];
const R: &[&str] = &["@read", "@set", "@fast"];
const RS: &[&str] = &["@read", "@set", "@slow"];
const WS: &[&str] = &["@write", "@set", "@slow"];

pub const SADD: Command = Command::new(
    "sadd",
    -3,
    "set",
    "Adds one or more members to a set. Creates the key if it doesn't exist.",
    sadd,
)
.flags(&["write", "denyoom", "fast"])
.acl(W)
.keys(KEY1_WO);
pub const SREM: Command = Command::new(
    "srem",
    -3,
    "set",
    "Removes one or more members from a set. Deletes the set if the last member was removed.",
    srem,
)
.flags(&["write", "fast"])
.acl(W)
.keys(KEY1_WO);
pub const SMEMBERS: Command = Command::new(
    "smembers",
    2,
    "set",
    "Returns all members of a set.",
    smembers,
)
.flags(&["readonly"])
.acl(RS)
.keys(KEY1_RO);
pub const SISMEMBER: Command = Command::new(
    "sismember",
    3,
    "set",
    "Determines whether a member belongs to a set.",
    sismember,
)
.flags(&["readonly", "fast"])
.acl(R)
.keys(KEY1_RO);
pub const SMISMEMBER: Command = Command::new(
    "smismember",
    -3,
    "set",
    "Determines whether multiple members belong to a set.",
    smismember,
)
.flags(&["readonly", "fast"])
.acl(R)
.keys(KEY1_RO);
pub const SCARD: Command = Command::new(
    "scard",
    2,
    "set",
    "Returns the number of members in a set.",
    scard,
)
.flags(&["readonly", "fast"])
.acl(R)
.keys(KEY1_RO);
pub const SPOP: Command = Command::new("spop", -2, "set", "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.", spop).flags(&["write", "fast"]).acl(W)
.keys(KEY1_RW);
pub const SRANDMEMBER: Command = Command::new(
    "srandmember",
    -2,
    "set",
    "Get one or multiple random members from a set",
    srandmember,
)
.flags(&["readonly"])
.acl(RS)
.keys(KEY1_RO);
pub const SMOVE: Command = Command::new(
    "smove",
    4,
    "set",
    "Moves a member from one set to another.",
    smove,
)
.flags(&["write", "fast"])
.acl(W)
.keys(&[
    KeySpec::At { at: 1, access: RW },
    KeySpec::At { at: 2, access: WO },
]);
pub const SUNION: Command = Command::new(
    "sunion",
    -2,
    "set",
    "Returns the union of multiple sets.",
    sunion,
)
.flags(&["readonly"])
.acl(RS)
.keys(ALL_RO);
pub const SINTER: Command = Command::new(
    "sinter",
    -2,
    "set",
    "Returns the intersect of multiple sets.",
    sinter,
)
.flags(&["readonly"])
.acl(RS)
.keys(ALL_RO);
pub const SDIFF: Command = Command::new(
    "sdiff",
    -2,
    "set",
    "Returns the difference of multiple sets.",
    sdiff,
)
.flags(&["readonly"])
.acl(RS)
.keys(ALL_RO);
pub const SUNIONSTORE: Command = Command::new(
    "sunionstore",
    -3,
    "set",
    "Stores the union of multiple sets in a key.",
    sunionstore,
)
.flags(&["write", "denyoom"])
.acl(WS)
.keys(STORE);
pub const SINTERSTORE: Command = Command::new(
    "sinterstore",
    -3,
    "set",
    "Stores the intersect of multiple sets in a key.",
    sinterstore,
)
.flags(&["write", "denyoom"])
.acl(WS)
.keys(STORE);
pub const SDIFFSTORE: Command = Command::new(
    "sdiffstore",
    -3,
    "set",
    "Stores the difference of multiple sets in a key.",
    sdiffstore,
)
.flags(&["write", "denyoom"])
.acl(WS)
.keys(STORE);
pub const SINTERCARD: Command = Command::new(
    "sintercard",
    -3,
    "set",
    "Returns the number of members of the intersect of multiple sets.",
    sintercard,
)
.flags(&["readonly"])
.acl(RS)
.keys(&[KeySpec::NumKeys { at: 1, access: RO }]);
pub const SSCAN: Command =
    Command::new("sscan", -3, "set", "Iterates over members of a set.", sscan)
        .flags(&["readonly"])
        .acl(RS)
        .keys(KEY1_RO);

/// Most members a negative SRANDMEMBER/ZRANDMEMBER count may ask for.
pub(super) const MAX_RANDOM_REPLY: u64 = 1 << 20;

fn fail(conn: &mut Conn, e: DataError) {
    conn.reply().error(&e.to_string());
}

fn write_members(out: &mut Out<'_>, members: &[Bytes]) {
    out.set(members.len());
    for m in members {
        out.bulk(m);
    }
}

fn reply_members(conn: &mut Conn, r: Result<Vec<Bytes>, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(members) => write_members(&mut conn.reply(), &members),
    }
}

fn reply_int(conn: &mut Conn, r: Result<usize, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(n) => conn.reply().int(n as i64),
    }
}

fn sadd(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.sadd(&args[1], &args[2..]);
    reply_int(conn, r);
}

fn srem(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.srem(&args[1], &args[2..]);
    reply_int(conn, r);
}

fn smembers(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.smembers(&args[1]);
    reply_members(conn, r);
}

fn sismember(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.sismember(&args[1], &args[2]) {
        Err(e) => fail(conn, e),
        Ok(found) => conn.reply().int(found as i64),
    }
}

fn smismember(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.smismember(&args[1], &args[2..]) {
        Err(e) => fail(conn, e),
        Ok(found) => {
            let mut out = conn.reply();
            out.array(found.len());
            for f in found {
                out.int(f as i64);
            }
        }
    }
}

fn scard(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.scard(&args[1]);
    reply_int(conn, r);
}

fn spop(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        return conn.reply().error("ERR syntax error");
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match int_arg(conn, a) {
            None => return,
            Some(n) if n < 0 => {
                return conn
                    .reply()
                    .error("ERR value is out of range, must be positive")
            }
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        },
    };
    let popped = match conn.server.hub.spop(&args[1], count) {
        Err(e) => return fail(conn, e),
        Ok(p) => p,
    };
    let mut out = conn.reply();
    match (count, popped.first()) {
        (None, Some(m)) => out.bulk(m),
        (None, None) => out.null(),
        (Some(_), _) => write_members(&mut out, &popped),
    }
}

fn srandmember(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        return conn.reply().error("ERR syntax error");
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match int_arg(conn, a) {
            None => return,
            Some(n) => Some(n),
        },
    };
    if count == Some(i64::MIN) {
        return conn.reply().error(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        );
    }
    if count.is_some_and(|n| n < 0 && n.unsigned_abs() > MAX_RANDOM_REPLY) {
        // Repeats allowed; bounded so one request cannot build an
        // unbounded reply.
        return conn.reply().error("ERR value is out of range");
    }
    let pick = match count {
        None => RandomPick::One,
        Some(n) if n < 0 => RandomPick::Repeats(n.unsigned_abs()),
        Some(n) => RandomPick::Distinct(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let picks = match conn.server.hub.srandmember(&args[1], pick) {
        Err(e) => return fail(conn, e),
        Ok(p) => p,
    };
    let mut out = conn.reply();
    match count {
        None => match picks.first() {
            None => out.null(),
            Some(m) => out.bulk(m),
        },
        // SRANDMEMBER answers arrays even in RESP3.
        Some(_) => {
            out.array(picks.len());
            for m in &picks {
                out.bulk(m);
            }
        }
    }
}

fn smove(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.smove(&args[1], &args[2], &args[3]) {
        Err(e) => fail(conn, e),
        Ok(moved) => conn.reply().int(moved as i64),
    }
}

fn set_op(conn: &mut Conn, args: &[Bytes], op: SetOp) {
    let r = conn.server.hub.set_combine(op, &args[1..]);
    reply_members(conn, r);
}

fn set_op_store(conn: &mut Conn, args: &[Bytes], op: SetOp) {
    let r = conn.server.hub.set_store(op, &args[1], &args[2..]);
    reply_int(conn, r);
}

fn sunion(conn: &mut Conn, args: &[Bytes]) {
    set_op(conn, args, SetOp::Union)
}
fn sinter(conn: &mut Conn, args: &[Bytes]) {
    set_op(conn, args, SetOp::Inter)
}
fn sdiff(conn: &mut Conn, args: &[Bytes]) {
    set_op(conn, args, SetOp::Diff)
}
fn sunionstore(conn: &mut Conn, args: &[Bytes]) {
    set_op_store(conn, args, SetOp::Union)
}
fn sinterstore(conn: &mut Conn, args: &[Bytes]) {
    set_op_store(conn, args, SetOp::Inter)
}
fn sdiffstore(conn: &mut Conn, args: &[Bytes]) {
    set_op_store(conn, args, SetOp::Diff)
}

fn sintercard(conn: &mut Conn, args: &[Bytes]) {
    let numkeys = match crate::resp::parse::parse_i64(&args[1]) {
        Some(n) if n > 0 => n as usize,
        Some(_) => return conn.reply().error("ERR numkeys should be greater than 0"),
        None => return conn.reply().error("ERR numkeys should be greater than 0"),
    };
    if numkeys > args.len() - 2 {
        return conn
            .reply()
            .error("ERR Number of keys can't be greater than number of args");
    }
    let keys = &args[2..2 + numkeys];
    let mut limit = 0usize;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"LIMIT") && i + 1 < args.len() {
            match crate::resp::parse::parse_i64(&args[i + 1]) {
                Some(n) if n >= 0 => limit = n as usize,
                Some(_) => return conn.reply().error("ERR LIMIT can't be negative"),
                None => {
                    return conn
                        .reply()
                        .error("ERR value is not an integer or out of range")
                }
            }
            i += 2;
        } else {
            return conn.reply().error("ERR syntax error");
        }
    }
    let r = conn.server.hub.sintercard(keys, limit);
    reply_int(conn, r);
}

fn sscan(conn: &mut Conn, args: &[Bytes]) {
    // Redis's order: the cursor, then the key, then the options.
    let Some(cursor) = super::scan_cursor(conn, &args[2]) else {
        return;
    };
    match conn.server.hub.scard(&args[1]) {
        Err(e) => return fail(conn, e),
        Ok(0) => return super::empty_scan(conn),
        Ok(_) => {}
    }
    let Some((count, pattern)) = super::member_scan_options(conn, args) else {
        return;
    };
    let (next, page) = match conn.server.hub.sscan(&args[1], cursor, count, pattern) {
        Err(e) => return fail(conn, e),
        Ok(p) => p,
    };
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(page.len());
    for m in &page {
        out.bulk(m);
    }
}
