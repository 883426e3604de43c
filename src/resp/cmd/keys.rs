//! Generic key commands over the keyspace: DEL, UNLINK, EXISTS, TYPE,
//! EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST, KEYS, SCAN,
//! DBSIZE, FLUSHALL, FLUSHDB; replies as Redis 7.0's.

use bytes::Bytes;

use super::{int_arg, Command, ALL_RO, ALL_WO, KEY1_RO, KEY1_WO};
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
    let mut db = conn.server.hub.keyspace.lock();
    let n = args[1..]
        .iter()
        .filter(|k| db.get(k).is_some() && db.remove(k))
        .count();
    drop(db);
    conn.reply().int(n as i64);
}

/// True when `key` names a non-empty presence view (`__presence__:C`).
fn presence_key(conn: &Conn, key: &[u8]) -> bool {
    crate::hub::presence::presence_channel(key)
        .is_some_and(|ch| conn.server.hub.presence_stats(ch).is_ok_and(|s| s.0 > 0))
}

fn exists(conn: &mut Conn, args: &[Bytes]) {
    let mut db = conn.server.hub.keyspace.lock();
    let n = args[1..]
        .iter()
        .filter(|k| db.exists(k) || presence_key(conn, k))
        .count();
    drop(db);
    conn.reply().int(n as i64);
}

fn type_(conn: &mut Conn, args: &[Bytes]) {
    if presence_key(conn, &args[1]) {
        return conn.reply().simple("set");
    }
    let t = conn
        .server
        .hub
        .keyspace
        .lock()
        .get(&args[1])
        .map_or("none", |e| e.value.type_name());
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
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let mut msg = b"ERR Unsupported option ".to_vec();
                msg.extend_from_slice(opt);
                conn.reply().error_bytes(&msg);
                return;
            }
        }
    }
    if nx && (xx || gt || lt) {
        conn.reply()
            .error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if gt && lt {
        conn.reply()
            .error("ERR GT and LT options at the same time are not compatible");
        return;
    }
    let now = now_ms() as i64;
    let ms = match unit {
        Unit::Seconds => when.checked_mul(1000),
        Unit::Millis => Some(when),
    };
    let at = ms.and_then(|ms| {
        if absolute {
            Some(ms)
        } else {
            ms.checked_add(now)
        }
    });
    let Some(at) = at else {
        conn.reply()
            .error(&format!("ERR invalid expire time in '{name}' command"));
        return;
    };
    let mut db = conn.server.hub.keyspace.lock();
    let Some(e) = db.get(&args[1]) else {
        drop(db);
        conn.reply().int(0);
        return;
    };
    let current = e.expires_at;
    let ok = match current {
        None => !xx && !gt,
        Some(cur) => !(nx || (gt && at <= cur as i64) || (lt && at >= cur as i64)),
    };
    if ok {
        if at <= now {
            db.remove(&args[1]);
        } else {
            db.set_expiry(&args[1], Some(at as u64));
        }
    }
    drop(db);
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
    let mut db = conn.server.hub.keyspace.lock();
    let v = match db.get(&args[1]) {
        None => -2,
        Some(e) => match e.expires_at {
            None => -1,
            Some(at) => {
                let left = at.saturating_sub(now_ms()) as i64;
                match unit {
                    Unit::Millis => left,
                    Unit::Seconds => (left + 500) / 1000,
                }
            }
        },
    };
    drop(db);
    conn.reply().int(v);
}

fn ttl(conn: &mut Conn, args: &[Bytes]) {
    ttl_generic(conn, args, Unit::Seconds)
}
fn pttl(conn: &mut Conn, args: &[Bytes]) {
    ttl_generic(conn, args, Unit::Millis)
}

fn persist(conn: &mut Conn, args: &[Bytes]) {
    let mut db = conn.server.hub.keyspace.lock();
    let had = db.get(&args[1]).is_some_and(|e| e.expires_at.is_some());
    if had {
        db.set_expiry(&args[1], None);
    }
    drop(db);
    conn.reply().int(had as i64);
}

fn keys(conn: &mut Conn, args: &[Bytes]) {
    let list = conn.server.hub.keyspace.lock().keys(Some(&args[1]));
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
            b"MATCH" => pattern = Some(args[i + 1].clone()),
            b"TYPE" => typ = Some(args[i + 1].clone()),
            _ => {
                conn.reply().error("ERR syntax error");
                return;
            }
        }
        i += 2;
    }
    let (next, list) =
        conn.server
            .hub
            .keyspace
            .lock()
            .scan(cursor, count, pattern.as_deref(), typ.as_deref());
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.bulks(list.iter());
}
