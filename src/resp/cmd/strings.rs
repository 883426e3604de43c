//! String commands: GET, SET (EX, PX, EXAT, PXAT, KEEPTTL, NX, XX, GET),
//! SETEX, PSETEX, SETNX, GETDEL, GETEX, GETSET, MGET, MSET, MSETNX, INCR,
//! INCRBY, DECR, DECRBY, INCRBYFLOAT, APPEND, STRLEN, GETRANGE, SETRANGE,
//! with Redis 7.0's replies and its order of errors.
//!
//! Each command parses its arguments, calls the hub (`hub::data::strings`)
//! and encodes the result. Strings are bounded by `max_bulk_len`, Redis's
//! `proto-max-bulk-len`.

use bytes::Bytes;

use super::{int_arg, Access, Command, KeySpec, ALL_RO, KEY1_RO, KEY1_RW, KEY1_WO, WO};
use crate::hub::data::{DataError, Expiry, SetCondition, SetOptions};
use crate::hub::now_ms;
use crate::resp::connection::Conn;

const WF: &[&str] = &["@write", "@string", "@fast"];
const WS: &[&str] = &["@write", "@string", "@slow"];
const RF: &[&str] = &["@read", "@string", "@fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "denyoom", "fast"];
/// Keys at 1, 3, 5 … (MSET, MSETNX).
const PAIRS_WO: &[KeySpec] = &[KeySpec::Range {
    first: 1,
    step: 2,
    from_end: 0,
    access: WO,
}];

pub const GET: Command = Command::new(
    "get",
    2,
    "string",
    "Returns the string value of a key.",
    get,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const SET: Command = Command::new(
    "set",
    -3,
    "string",
    "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
    set,
)
.flags(WRITE)
.acl(WS)
.keys(KEY1_WO);
pub const SETEX: Command = Command::new(
    "setex",
    4,
    "string",
    "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
    setex,
)
.flags(WRITE)
.acl(WS)
.keys(KEY1_WO);
pub const PSETEX: Command = Command::new("psetex", 4, "string", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", psetex)
    .flags(WRITE)
    .acl(WS)
    .keys(KEY1_WO);
pub const SETNX: Command = Command::new(
    "setnx",
    3,
    "string",
    "Set the string value of a key only when the key doesn't exist.",
    setnx,
)
.flags(WRITE_FAST)
.acl(WF)
.keys(KEY1_WO);
pub const GETDEL: Command = Command::new(
    "getdel",
    2,
    "string",
    "Returns the string value of a key after deleting the key.",
    getdel,
)
.flags(&["write", "fast"])
.acl(WF)
.keys(KEY1_RW);
pub const GETEX: Command = Command::new(
    "getex",
    -2,
    "string",
    "Returns the string value of a key after setting its expiration time.",
    getex,
)
.flags(&["write", "fast"])
.acl(WF)
.keys(KEY1_RW);
pub const GETSET: Command = Command::new(
    "getset",
    3,
    "string",
    "Returns the previous string value of a key after setting it to a new value.",
    getset,
)
.flags(WRITE_FAST)
.acl(WF)
.keys(KEY1_RW);
pub const MGET: Command = Command::new(
    "mget",
    -2,
    "string",
    "Atomically returns the string values of one or more keys.",
    mget,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(ALL_RO);
pub const MSET: Command = Command::new(
    "mset",
    -3,
    "string",
    "Atomically creates or modifies the string values of one or more keys.",
    mset,
)
.flags(WRITE)
.acl(WS)
.keys(PAIRS_WO);
pub const MSETNX: Command = Command::new(
    "msetnx",
    -3,
    "string",
    "Atomically modifies the string values of one or more keys only when all keys don't exist.",
    msetnx,
)
.flags(WRITE)
.acl(WS)
.keys(PAIRS_WO);
pub const INCR: Command = Command::new("incr", 2, "string", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", incr)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const DECR: Command = Command::new("decr", 2, "string", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", decr)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const INCRBY: Command = Command::new("incrby", 3, "string", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", incrby)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const DECRBY: Command = Command::new("decrby", 3, "string", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", decrby)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const INCRBYFLOAT: Command = Command::new("incrbyfloat", 3, "string", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", incrbyfloat)
    .flags(WRITE_FAST)
    .acl(WF)
    .keys(KEY1_RW);
pub const APPEND: Command = Command::new(
    "append",
    3,
    "string",
    "Appends a string to the value of a key. Creates the key if it doesn't exist.",
    append,
)
.flags(WRITE)
.acl(WF)
.keys(KEY1_WO);
pub const STRLEN: Command = Command::new(
    "strlen",
    2,
    "string",
    "Returns the length of a string value.",
    strlen,
)
.flags(&["readonly", "fast"])
.acl(RF)
.keys(KEY1_RO);
pub const GETRANGE: Command = Command::new(
    "getrange",
    4,
    "string",
    "Returns a substring of the string stored at a key.",
    getrange,
)
.flags(&["readonly"])
.acl(&["@read", "@string", "@slow"])
.keys(KEY1_RO);
pub const SETRANGE: Command = Command::new("setrange", 4, "string", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", setrange)
    .flags(WRITE)
    .acl(WS)
    .keys(KEY1_WO);

fn fail(conn: &mut Conn, e: DataError) {
    conn.reply().error(&e.to_string());
}

fn reply_value(conn: &mut Conn, r: Result<Option<Bytes>, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(Some(v)) => conn.reply().bulk(&v),
        Ok(None) => conn.reply().null(),
    }
}

fn reply_int(conn: &mut Conn, r: Result<i64, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(n) => conn.reply().int(n),
    }
}

/// An option word as Redis compares it: as a C string, up to a NUL byte.
fn word(arg: &[u8]) -> &[u8] {
    &arg[..memchr::memchr(0, arg).unwrap_or(arg.len())]
}

/// How an expiry argument counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// SET's and GETEX's options, as Redis's `parseExtendedStringArgumentsOrReply`
/// reads them (each option checked against those already seen).
#[derive(Default)]
struct Extended<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    expire: Option<(Unit, &'a [u8])>,
}

/// Parses options from `args[from..]`; `None`: a syntax error.
fn extended(args: &[Bytes], from: usize, set: bool) -> Option<Extended<'_>> {
    let mut o = Extended::default();
    let mut j = from;
    while j < args.len() {
        let opt = word(&args[j]);
        let next = args.get(j + 1).map(|a| &a[..]);
        let is = |w: &str| opt.eq_ignore_ascii_case(w.as_bytes());
        let unit = o.expire.map(|(u, _)| u);
        let timed = |except: Unit| unit.is_some_and(|u| u != except);
        if is("nx") && !o.xx && set {
            o.nx = true;
        } else if is("xx") && !o.nx && set {
            o.xx = true;
        } else if is("get") && set {
            o.get = true;
        } else if is("keepttl") && !o.persist && unit.is_none() && set {
            o.keepttl = true;
        } else if is("persist") && !set && unit.is_none() && !o.keepttl {
            o.persist = true;
        } else if let (Some(u), Some(n)) = (
            [
                ("ex", Unit::Ex),
                ("px", Unit::Px),
                ("exat", Unit::ExAt),
                ("pxat", Unit::PxAt),
            ]
            .into_iter()
            .find(|(w, _)| is(w))
            .map(|(_, u)| u),
            next,
        ) {
            if o.keepttl || o.persist || timed(u) {
                return None;
            }
            o.expire = Some((u, n));
            j += 1;
        } else {
            return None;
        }
        j += 1;
    }
    Some(o)
}

/// The deadline an expiry argument names, with Redis's checks and errors.
fn deadline(unit: Unit, arg: &[u8], cmd: &str) -> Result<u64, DataError> {
    let invalid = || DataError::Other(format!("ERR invalid expire time in '{cmd}' command").into());
    let v = crate::resp::parse::parse_i64(arg)
        .ok_or(DataError::Other(crate::hub::data::NOT_INTEGER.into()))?;
    let seconds = matches!(unit, Unit::Ex | Unit::ExAt);
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        return Err(invalid());
    }
    let ms = if seconds { v * 1000 } else { v };
    let ms = match unit {
        Unit::Ex | Unit::Px => ms.checked_add(now_ms() as i64).ok_or_else(invalid)?,
        Unit::ExAt | Unit::PxAt => ms,
    };
    Ok(ms as u64)
}

fn get(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.get(&args[1]);
    reply_value(conn, r);
}

fn set(conn: &mut Conn, args: &[Bytes]) {
    let Some(o) = extended(args, 3, true) else {
        return conn.reply().error("ERR syntax error");
    };
    let expiry = match o.expire {
        Some((u, a)) => match deadline(u, a, "set") {
            Ok(at) => Expiry::At(at),
            Err(e) => return fail(conn, e),
        },
        None if o.keepttl => Expiry::Keep,
        None => Expiry::Default,
    };
    // GET returns the key's contents: the key must be readable too.
    if o.get
        && !super::keys_allowed(
            conn,
            &[(
                &args[1],
                Access {
                    read: true,
                    write: true,
                },
            )],
        )
    {
        crate::hub::Stats::add(&conn.server.hub.stats().auth_failures, 1);
        return conn.reply().error(
            "NOPERM this user has no permissions to access one of the keys used as arguments",
        );
    }
    let condition = match (o.nx, o.xx) {
        (true, _) => SetCondition::IfAbsent,
        (_, true) => SetCondition::IfPresent,
        _ => SetCondition::Always,
    };
    let opts = SetOptions {
        condition,
        get: o.get,
        expiry,
    };
    match conn.server.hub.set(&args[1], &args[2], opts) {
        Err(e) => fail(conn, e),
        Ok(r) if o.get => match r.old {
            Some(v) => conn.reply().bulk(&v),
            None => conn.reply().null(),
        },
        Ok(r) if r.written => conn.reply().simple("OK"),
        Ok(_) => conn.reply().null(),
    }
}

fn set_with_ttl(conn: &mut Conn, args: &[Bytes], unit: Unit, name: &str) {
    let at = match deadline(unit, &args[2], name) {
        Ok(at) => at,
        Err(e) => return fail(conn, e),
    };
    let opts = SetOptions {
        expiry: Expiry::At(at),
        ..Default::default()
    };
    match conn.server.hub.set(&args[1], &args[3], opts) {
        Err(e) => fail(conn, e),
        Ok(_) => conn.reply().simple("OK"),
    }
}

fn setex(conn: &mut Conn, args: &[Bytes]) {
    set_with_ttl(conn, args, Unit::Ex, "setex")
}

fn psetex(conn: &mut Conn, args: &[Bytes]) {
    set_with_ttl(conn, args, Unit::Px, "psetex")
}

fn setnx(conn: &mut Conn, args: &[Bytes]) {
    let opts = SetOptions {
        condition: SetCondition::IfAbsent,
        ..Default::default()
    };
    let r = conn.server.hub.set(&args[1], &args[2], opts);
    reply_int(conn, r.map(|r| r.written as i64));
}

fn getdel(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.getdel(&args[1]);
    reply_value(conn, r);
}

fn getex(conn: &mut Conn, args: &[Bytes]) {
    let Some(o) = extended(args, 2, false) else {
        return conn.reply().error("ERR syntax error");
    };
    let change = match o.expire {
        Some((u, a)) => deadline(u, a, "getex").map(Expiry::At),
        None if o.persist => Ok(Expiry::Persist),
        None => Ok(Expiry::Default),
    };
    let r = conn.server.hub.getex(&args[1], change);
    reply_value(conn, r);
}

fn getset(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.getset(&args[1], &args[2]);
    reply_value(conn, r);
}

fn mget(conn: &mut Conn, args: &[Bytes]) {
    let values = conn.server.hub.mget(&args[1..]);
    let mut out = conn.reply();
    out.array(values.len());
    for v in &values {
        match v {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
    }
}

fn mset_args_ok(conn: &mut Conn, args: &[Bytes], name: &str) -> bool {
    if args.len().is_multiple_of(2) {
        conn.reply().error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return false;
    }
    true
}

fn mset(conn: &mut Conn, args: &[Bytes]) {
    if mset_args_ok(conn, args, "mset") {
        conn.server.hub.mset(&args[1..]);
        conn.reply().simple("OK");
    }
}

fn msetnx(conn: &mut Conn, args: &[Bytes]) {
    if mset_args_ok(conn, args, "msetnx") {
        let done = conn.server.hub.msetnx(&args[1..]);
        conn.reply().int(done as i64);
    }
}

fn incr_by(conn: &mut Conn, key: &Bytes, delta: i64) {
    let r = conn.server.hub.incr_by(key, delta);
    reply_int(conn, r);
}

fn incr(conn: &mut Conn, args: &[Bytes]) {
    incr_by(conn, &args[1], 1)
}

fn decr(conn: &mut Conn, args: &[Bytes]) {
    incr_by(conn, &args[1], -1)
}

fn incrby(conn: &mut Conn, args: &[Bytes]) {
    if let Some(d) = int_arg(conn, &args[2]) {
        incr_by(conn, &args[1], d)
    }
}

fn decrby(conn: &mut Conn, args: &[Bytes]) {
    match int_arg(conn, &args[2]) {
        None => {}
        Some(i64::MIN) => conn.reply().error("ERR decrement would overflow"),
        Some(d) => incr_by(conn, &args[1], -d),
    }
}

fn incrbyfloat(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.incr_by_float(&args[1], &args[2]);
    reply_value(conn, r.map(Some));
}

fn append(conn: &mut Conn, args: &[Bytes]) {
    let max = conn.server.cfg.max_bulk_len;
    let r = conn.server.hub.append(&args[1], &args[2], max);
    reply_int(conn, r.map(|n| n as i64));
}

fn strlen(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.strlen(&args[1]);
    reply_int(conn, r.map(|n| n as i64));
}

fn getrange(conn: &mut Conn, args: &[Bytes]) {
    let Some(start) = int_arg(conn, &args[2]) else {
        return;
    };
    let Some(end) = int_arg(conn, &args[3]) else {
        return;
    };
    match conn.server.hub.getrange(&args[1], start, end) {
        Err(e) => fail(conn, e),
        Ok(v) => conn.reply().bulk(&v),
    }
}

fn setrange(conn: &mut Conn, args: &[Bytes]) {
    let Some(offset) = int_arg(conn, &args[2]) else {
        return;
    };
    if offset < 0 {
        return conn.reply().error("ERR offset is out of range");
    }
    let max = conn.server.cfg.max_bulk_len;
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let r = conn.server.hub.setrange(&args[1], offset, &args[3], max);
    reply_int(conn, r.map(|n| n as i64));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn options_follow_redis_grammar() {
        let ok = |w: &[&str]| extended(&args(w), 3, true).is_some();
        assert!(ok(&["SET", "k", "v", "NX", "EX", "10", "GET"]));
        assert!(ok(&["SET", "k", "v", "EX", "10", "EX", "20"]));
        assert!(ok(&["SET", "k", "v", "nx", "nx"]));
        assert!(ok(&["SET", "k", "v", "NX\0junk"]), "compared as a C string");
        assert!(!ok(&["SET", "k", "v", "NX", "XX"]));
        assert!(!ok(&["SET", "k", "v", "EX", "10", "PX", "10"]));
        assert!(!ok(&["SET", "k", "v", "KEEPTTL", "EX", "10"]));
        assert!(!ok(&["SET", "k", "v", "EX"]));
        assert!(!ok(&["SET", "k", "v", "PERSIST"]));
        let getex = |w: &[&str]| extended(&args(w), 2, false).is_some();
        assert!(getex(&["GETEX", "k", "PERSIST"]));
        assert!(!getex(&["GETEX", "k", "NX"]));
        assert!(!getex(&["GETEX", "k", "PERSIST", "EX", "1"]));
    }

    #[test]
    fn deadlines_are_checked_as_redis_checks_them() {
        let bad = |u, a: &str| deadline(u, a.as_bytes(), "set").is_err();
        assert!(bad(Unit::Ex, "0"));
        assert!(bad(Unit::Ex, "-1"));
        assert!(bad(Unit::Ex, "x"));
        assert!(bad(Unit::Ex, "9223372036854776"));
        assert!(bad(Unit::Px, "9223372036854775807"), "overflows with now");
        assert!(!bad(Unit::Ex, "9223372036854"));
        assert_eq!(deadline(Unit::PxAt, b"5", "set"), Ok(5));
        assert_eq!(deadline(Unit::ExAt, b"5", "set"), Ok(5000));
    }
}
