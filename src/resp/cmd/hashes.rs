//! Hash commands: HSET, HMSET, HSETNX, HGET, HMGET, HGETALL, HDEL, HEXISTS,
//! HLEN, HKEYS, HVALS, HSTRLEN, HINCRBY, HINCRBYFLOAT, HRANDFIELD, HSCAN,
//! with Redis 7.0's replies and its order of errors.
//!
//! Each command parses its arguments, calls the hub (`hub::data::hashes`)
//! and encodes the result.

use bytes::Bytes;

use super::sets::MAX_RANDOM_REPLY;
use super::{int_arg, Command, KEY1_RO, KEY1_RW, KEY1_WO};
use crate::hub::data::{DataError, FieldValue, RandomPick};
use crate::resp::connection::Conn;
use crate::resp::encode::Out;

const WF: &[&str] = &["@write", "@hash", "@fast"];
const RF: &[&str] = &["@read", "@hash", "@fast"];
const RS: &[&str] = &["@read", "@hash", "@slow"];
const WRITE_FAST: &[&str] = &["write", "denyoom", "fast"];

pub const HSET: Command = Command::new(
    "hset",
    -4,
    "hash",
    "Creates or modifies the value of a field in a hash.",
    hset,
)
.flags(WRITE_FAST)
.acl(WF)
.keys(KEY1_WO);
pub const HMSET: Command = Command::new(
    "hmset",
    -4,
    "hash",
    "Sets the values of multiple fields.",
    hmset,
)
.flags(WRITE_FAST)
.acl(WF)
.keys(KEY1_WO);
pub const HSETNX: Command = Command::new(
    "hsetnx",
    4,
    "hash",
    "Sets the value of a field in a hash only when the field doesn't exist.",
    hsetnx,
)
.flags(WRITE_FAST)
.acl(WF)
.keys(KEY1_WO);
pub const HGET: Command = Command::new(
    "hget",
    3,
    "hash",
    "Returns the value of a field in a hash.",
    hget,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const HMGET: Command = Command::new(
    "hmget",
    -3,
    "hash",
    "Returns the values of all fields in a hash.",
    hmget,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const HGETALL: Command = Command::new(
    "hgetall",
    2,
    "hash",
    "Returns all fields and values in a hash.",
    hgetall,
)
.flags(&["readonly"])
.acl(RS)
.keys(KEY1_RO);
pub const HDEL: Command = Command::new("hdel", -3, "hash", "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.", hdel)
    .flags(&["write", "fast"])
    .acl(WF)
    .keys(KEY1_WO);
pub const HEXISTS: Command = Command::new(
    "hexists",
    3,
    "hash",
    "Determines whether a field exists in a hash.",
    hexists,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const HLEN: Command = Command::new(
    "hlen",
    2,
    "hash",
    "Returns the number of fields in a hash.",
    hlen,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const HKEYS: Command = Command::new("hkeys", 2, "hash", "Returns all fields in a hash.", hkeys)
    .flags(&["readonly"])
    .acl(RS)
    .keys(KEY1_RO);
pub const HVALS: Command = Command::new("hvals", 2, "hash", "Returns all values in a hash.", hvals)
    .flags(&["readonly"])
    .acl(RS)
    .keys(KEY1_RO);
pub const HSTRLEN: Command = Command::new(
    "hstrlen",
    3,
    "hash",
    "Returns the length of the value of a field.",
    hstrlen,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const HINCRBY: Command = Command::new("hincrby", 4, "hash", "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.", hincrby)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const HINCRBYFLOAT: Command = Command::new("hincrbyfloat", 4, "hash", "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.", hincrbyfloat)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const HRANDFIELD: Command = Command::new(
    "hrandfield",
    -2,
    "hash",
    "Returns one or more random fields from a hash.",
    hrandfield,
)
.flags(&["readonly"])
.acl(RS)
.keys(KEY1_RO);
pub const HSCAN: Command = Command::new(
    "hscan",
    -3,
    "hash",
    "Iterates over fields and values of a hash.",
    hscan,
)
.flags(&["readonly"])
.acl(RS)
.keys(KEY1_RO);

fn fail(conn: &mut Conn, e: DataError) {
    conn.reply().error(&e.to_string());
}

fn reply_int(conn: &mut Conn, r: Result<usize, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(n) => conn.reply().int(n as i64),
    }
}

fn reply_list(conn: &mut Conn, r: Result<Vec<Bytes>, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(list) => conn.reply().bulks(list.iter()),
    }
}

/// HSET's and HMSET's pairs, or Redis's arity error for an odd count.
fn pairs_ok(conn: &mut Conn, args: &[Bytes], name: &str) -> bool {
    if args.len() % 2 == 1 {
        conn.reply().error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return false;
    }
    true
}

fn hset(conn: &mut Conn, args: &[Bytes]) {
    if pairs_ok(conn, args, "hset") {
        let r = conn.server.hub.hset(&args[1], &args[2..]);
        reply_int(conn, r);
    }
}

fn hmset(conn: &mut Conn, args: &[Bytes]) {
    if pairs_ok(conn, args, "hmset") {
        match conn.server.hub.hset(&args[1], &args[2..]) {
            Err(e) => fail(conn, e),
            Ok(_) => conn.reply().simple("OK"),
        }
    }
}

fn hsetnx(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hsetnx(&args[1], &args[2], &args[3]);
    reply_int(conn, r.map(usize::from));
}

fn hget(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.hget(&args[1], &args[2]) {
        Err(e) => fail(conn, e),
        Ok(Some(v)) => conn.reply().bulk(&v),
        Ok(None) => conn.reply().null(),
    }
}

fn hmget(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.hmget(&args[1], &args[2..]) {
        Err(e) => fail(conn, e),
        Ok(values) => {
            let mut out = conn.reply();
            out.array(values.len());
            for v in &values {
                match v {
                    Some(v) => out.bulk(v),
                    None => out.null(),
                }
            }
        }
    }
}

fn hgetall(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.hgetall(&args[1]) {
        Err(e) => fail(conn, e),
        Ok(pairs) => {
            let mut out = conn.reply();
            out.map(pairs.len());
            for (f, v) in &pairs {
                out.bulk(f);
                out.bulk(v);
            }
        }
    }
}

fn hkeys(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hkeys(&args[1]);
    reply_list(conn, r);
}

fn hvals(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hvals(&args[1]);
    reply_list(conn, r);
}

fn hdel(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hdel(&args[1], &args[2..]);
    reply_int(conn, r);
}

fn hexists(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hexists(&args[1], &args[2]);
    reply_int(conn, r.map(usize::from));
}

fn hlen(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hlen(&args[1]);
    reply_int(conn, r);
}

fn hstrlen(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.hstrlen(&args[1], &args[2]);
    reply_int(conn, r);
}

fn hincrby(conn: &mut Conn, args: &[Bytes]) {
    let Some(delta) = int_arg(conn, &args[3]) else {
        return;
    };
    match conn.server.hub.hincrby(&args[1], &args[2], delta) {
        Err(e) => fail(conn, e),
        Ok(n) => conn.reply().int(n),
    }
}

fn hincrbyfloat(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.hincrbyfloat(&args[1], &args[2], &args[3]) {
        Err(e) => fail(conn, e),
        Ok(v) => conn.reply().bulk(&v),
    }
}

/// Random pairs as Redis shapes them: fields alone; with values, a flat
/// array in RESP2 and an array of pairs in RESP3.
fn write_picks(out: &mut Out<'_>, picks: &[FieldValue], withvalues: bool) {
    match (withvalues, out.resp3) {
        (false, _) => {
            out.array(picks.len());
            for (f, _) in picks {
                out.bulk(f);
            }
        }
        (true, false) => {
            out.array(picks.len() * 2);
            for (f, v) in picks {
                out.bulk(f);
                out.bulk(v);
            }
        }
        (true, true) => {
            out.array(picks.len());
            for (f, v) in picks {
                out.array(2);
                out.bulk(f);
                out.bulk(v);
            }
        }
    }
}

fn hrandfield(conn: &mut Conn, args: &[Bytes]) {
    if args.len() == 2 {
        return match conn.server.hub.hrandfield(&args[1], RandomPick::One) {
            Err(e) => fail(conn, e),
            Ok(p) => match p.first() {
                Some((f, _)) => conn.reply().bulk(f),
                None => conn.reply().null(),
            },
        };
    }
    let Some(count) = int_arg(conn, &args[2]) else {
        return;
    };
    if count == i64::MIN {
        return conn.reply().error(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        );
    }
    let withvalues = match args.get(3) {
        None => false,
        Some(w) if args.len() == 4 && w.eq_ignore_ascii_case(b"WITHVALUES") => true,
        Some(_) => return conn.reply().error("ERR syntax error"),
    };
    if withvalues && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return conn.reply().error("ERR value is out of range");
    }
    if count < 0 && count.unsigned_abs() > MAX_RANDOM_REPLY {
        // Repeats allowed; bounded so one request cannot build an
        // unbounded reply.
        return conn.reply().error("ERR value is out of range");
    }
    let pick = match count {
        0 => {
            // Redis answers an empty array, after checking the type.
            if let Err(e) = conn.server.hub.hlen(&args[1]) {
                return fail(conn, e);
            }
            return conn.reply().array(0);
        }
        n if n < 0 => RandomPick::Repeats(n.unsigned_abs()),
        n => RandomPick::Distinct(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    match conn.server.hub.hrandfield(&args[1], pick) {
        Err(e) => fail(conn, e),
        Ok(picks) => write_picks(&mut conn.reply(), &picks, withvalues),
    }
}

fn hscan(conn: &mut Conn, args: &[Bytes]) {
    // Redis's order: the cursor, then the key, then the options.
    let Some(cursor) = super::scan_cursor(conn, &args[2]) else {
        return;
    };
    match conn.server.hub.hlen(&args[1]) {
        Err(e) => return fail(conn, e),
        Ok(0) => return super::empty_scan(conn),
        Ok(_) => {}
    }
    let Some((count, pattern)) = super::member_scan_options(conn, args) else {
        return;
    };
    let (next, page) = match conn.server.hub.hscan(&args[1], cursor, count, pattern) {
        Err(e) => return fail(conn, e),
        Ok(p) => p,
    };
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(page.len() * 2);
    for (f, v) in &page {
        out.bulk(f);
        out.bulk(v);
    }
}
