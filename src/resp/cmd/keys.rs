//! Generic key commands over the keyspace: DEL, UNLINK, EXISTS, TYPE,
//! EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST, KEYS, SCAN,
//! KEYS, SCAN; replies as Redis 7.0's. Each command parses its arguments,
//! calls the hub (`hub::data::keys`) and encodes the result.

use bytes::Bytes;

use super::{int_arg, Command, ALL_RO, ALL_WO, KEY1_RO, KEY1_WO};
use crate::hub::data::{ExpireCondition, KeyTtl};
use crate::hub::now_ms;
use crate::resp::connection::Conn;

const KW: &[&str] = &["@keyspace", "@write", "@slow"];
const KR: &[&str] = &["@keyspace", "@read", "@fast"];

pub const DEL: Command = Command::new("del", -2, "generic", "Deletes one or more keys.", del)
    .flags(&["write"])
    .acl(KW)
    .keys(ALL_WO);
pub const UNLINK: Command = Command::new(
    "unlink",
    -2,
    "generic",
    "Asynchronously deletes one or more keys.",
    del,
)
.flags(&["write", "fast"])
.acl(&["@keyspace", "@write", "@fast"])
.keys(ALL_WO);
pub const EXISTS: Command = Command::new(
    "exists",
    -2,
    "generic",
    "Determines whether one or more keys exist.",
    exists,
)
.flags(&["readonly", "fast"])
.acl(KR)
.keys(ALL_RO);
pub const TYPE: Command = Command::new(
    "type",
    2,
    "generic",
    "Determines the type of value stored at a key.",
    type_,
)
.flags(&["readonly", "fast"])
.acl(KR)
.keys(KEY1_RO);
pub const EXPIRE: Command = Command::new(
    "expire",
    -3,
    "generic",
    "Sets the expiration time of a key in seconds.",
    expire,
)
.flags(&["write", "fast"])
.acl(&["@keyspace", "@write", "@fast"])
.keys(KEY1_WO);
pub const PEXPIRE: Command = Command::new(
    "pexpire",
    -3,
    "generic",
    "Sets the expiration time of a key in milliseconds.",
    pexpire,
)
.flags(&["write", "fast"])
.acl(&["@keyspace", "@write", "@fast"])
.keys(KEY1_WO);
pub const EXPIREAT: Command = Command::new(
    "expireat",
    -3,
    "generic",
    "Sets the expiration time of a key to a Unix timestamp.",
    expireat,
)
.flags(&["write", "fast"])
.acl(&["@keyspace", "@write", "@fast"])
.keys(KEY1_WO);
pub const PEXPIREAT: Command = Command::new(
    "pexpireat",
    -3,
    "generic",
    "Sets the expiration time of a key to a Unix milliseconds timestamp.",
    pexpireat,
)
.flags(&["write", "fast"])
.acl(&["@keyspace", "@write", "@fast"])
.keys(KEY1_WO);
pub const TTL: Command = Command::new(
    "ttl",
    2,
    "generic",
    "Returns the expiration time in seconds of a key.",
    ttl,
)
.flags(&["readonly", "fast"])
.acl(KR)
.keys(KEY1_RO);
pub const PTTL: Command = Command::new(
    "pttl",
    2,
    "generic",
    "Returns the expiration time in milliseconds of a key.",
    pttl,
)
.flags(&["readonly", "fast"])
.acl(KR)
.keys(KEY1_RO);
pub const PERSIST: Command = Command::new(
    "persist",
    2,
    "generic",
    "Removes the expiration time of a key.",
    persist,
)
.flags(&["write", "fast"])
.acl(&["@keyspace", "@write", "@fast"])
.keys(KEY1_WO);
pub const KEYS: Command = Command::new(
    "keys",
    2,
    "generic",
    "Returns all key names that match a pattern.",
    keys,
)
.flags(&["readonly"])
.acl(&["@keyspace", "@read", "@slow", "@dangerous"]);
pub const SCAN: Command = Command::new(
    "scan",
    -2,
    "generic",
    "Iterates over the key names in the database.",
    scan,
)
.flags(&["readonly"])
.acl(&["@keyspace", "@read", "@slow"]);

fn del(conn: &mut Conn, args: &[Bytes]) {
    let n = conn.server.hub.del(&args[1..]);
    conn.reply().int(n as i64);
}

fn exists(conn: &mut Conn, args: &[Bytes]) {
    let n = conn.server.hub.exists(&args[1..]);
    conn.reply().int(n as i64);
}

fn type_(conn: &mut Conn, args: &[Bytes]) {
    let t = conn.server.hub.key_type(&args[1]);
    conn.reply().simple(t);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
}

fn expire_generic(conn: &mut Conn, args: &[Bytes], unit: Unit, absolute: bool, name: &str) {
    let Some(when) = int_arg(conn, &args[2]) else {
        return;
    };
    let mut cond = ExpireCondition::default();
    for opt in &args[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => {
                let mut msg = b"ERR Unsupported option ".to_vec();
                msg.extend_from_slice(opt);
                conn.reply().error_bytes(&msg);
                return;
            }
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        conn.reply()
            .error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if cond.gt && cond.lt {
        conn.reply()
            .error("ERR GT and LT options at the same time are not compatible");
        return;
    }
    let ms = match unit {
        Unit::Seconds => when.checked_mul(1000),
        Unit::Millis => Some(when),
    };
    let at = ms.and_then(|ms| {
        if absolute {
            Some(ms)
        } else {
            ms.checked_add(now_ms() as i64)
        }
    });
    let Some(at) = at else {
        conn.reply()
            .error(&format!("ERR invalid expire time in '{name}' command"));
        return;
    };
    let ok = conn.server.hub.expire(&args[1], at, cond);
    conn.reply().int(ok as i64);
}

fn expire(conn: &mut Conn, args: &[Bytes]) {
    expire_generic(conn, args, Unit::Seconds, false, "expire")
}
fn pexpire(conn: &mut Conn, args: &[Bytes]) {
    expire_generic(conn, args, Unit::Millis, false, "pexpire")
}
fn expireat(conn: &mut Conn, args: &[Bytes]) {
    expire_generic(conn, args, Unit::Seconds, true, "expireat")
}
fn pexpireat(conn: &mut Conn, args: &[Bytes]) {
    expire_generic(conn, args, Unit::Millis, true, "pexpireat")
}

fn ttl_generic(conn: &mut Conn, args: &[Bytes], unit: Unit) {
    let v = match conn.server.hub.ttl(&args[1]) {
        KeyTtl::Missing => -2,
        KeyTtl::Persistent => -1,
        KeyTtl::ExpiresIn(left) => {
            let left = left as i64;
            match unit {
                Unit::Millis => left,
                Unit::Seconds => (left + 500) / 1000,
            }
        }
    };
    conn.reply().int(v);
}

fn ttl(conn: &mut Conn, args: &[Bytes]) {
    ttl_generic(conn, args, Unit::Seconds)
}
fn pttl(conn: &mut Conn, args: &[Bytes]) {
    ttl_generic(conn, args, Unit::Millis)
}

fn persist(conn: &mut Conn, args: &[Bytes]) {
    let had = conn.server.hub.persist(&args[1]);
    conn.reply().int(had as i64);
}

fn keys(conn: &mut Conn, args: &[Bytes]) {
    let list = conn.server.hub.keys_matching(Some(&args[1]));
    conn.reply().bulks(list.iter());
}

fn scan(conn: &mut Conn, args: &[Bytes]) {
    let Some(cursor) = super::scan_cursor(conn, &args[1]) else {
        return;
    };
    let (mut count, mut pattern, mut typ) = (10usize, None, None);
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        if i + 1 >= args.len() {
            conn.reply().error("ERR syntax error");
            return;
        }
        match opt.as_slice() {
            b"COUNT" => match int_arg(conn, &args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => {
                    conn.reply().error("ERR syntax error");
                    return;
                }
                None => return,
            },
            b"MATCH" => pattern = Some(&args[i + 1][..]),
            b"TYPE" => typ = Some(&args[i + 1][..]),
            _ => {
                conn.reply().error("ERR syntax error");
                return;
            }
        }
        i += 2;
    }
    let (next, list) = conn.server.hub.scan_keys(cursor, count, pattern, typ);
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.bulks(list.iter());
}
