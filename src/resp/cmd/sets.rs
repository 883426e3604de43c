//! Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SPOP,
//! SRANDMEMBER, SMOVE, SUNION, SINTER, SDIFF, SUNIONSTORE, SINTERSTORE,
//! SDIFFSTORE, SINTERCARD, SSCAN, with Redis 7.0's replies.
//!
//! Keys `__presence__:C` are read-only views of channel C's presence (its
//! user ids): reads work as on any set, writes get an error.

use bytes::Bytes;

use super::{int_arg, Command, KeySpec, ALL_RO, KEY1_RO, KEY1_RW, KEY1_WO, RO, RW, STORE, WO};
use crate::hub::keyspace::{SetValue, Value, WrongType};
use crate::hub::presence::presence_channel;
use crate::hub::Db;
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

const READ_ONLY: &str =
    "ERR __presence__ keys are read-only: Herald maintains them from subscriptions";

fn wrongtype(conn: &mut Conn) {
    conn.reply().error(&WrongType.to_string());
}

/// Runs `f` on the set at `key` (a presence view for `__presence__:C`)
/// without copying it: a membership test on a million-member set must not
/// cost a million-member copy under the keyspace lock.
fn with_set<R>(
    conn: &Conn,
    key: &[u8],
    f: impl FnOnce(Option<&SetValue>) -> R,
) -> Result<R, WrongType> {
    if let Some(ch) = presence_channel(key) {
        let users = conn.server.hub.presence_users(ch).unwrap_or_default();
        if users.is_empty() {
            return Ok(f(None));
        }
        let view = SetValue::from_members(users.into_iter().map(Bytes::from));
        return Ok(f(Some(&view)));
    }
    let mut db = conn.server.hub.keyspace.lock();
    let s = db.set(key)?;
    Ok(f(s.map(|s| &*s)))
}

fn refuse_presence_write(conn: &mut Conn, keys: &[&Bytes]) -> bool {
    if keys.iter().any(|k| presence_channel(k).is_some()) {
        conn.reply().error(READ_ONLY);
        return true;
    }
    false
}

fn write_members(out: &mut Out<'_>, members: &[Bytes]) {
    out.set(members.len());
    for m in members {
        out.bulk(m);
    }
}

fn sadd(conn: &mut Conn, args: &[Bytes]) {
    if refuse_presence_write(conn, &[&args[1]]) {
        return;
    }
    let mut db = conn.server.hub.keyspace.lock();
    let n = match db.set(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(Some(s)) => args[2..].iter().filter(|m| s.insert((*m).clone())).count(),
        Ok(None) => {
            let s = SetValue::from_members(args[2..].iter().cloned());
            let n = s.len();
            db.insert(args[1].clone(), Value::Set(s));
            n
        }
    };
    drop(db);
    conn.reply().int(n as i64);
}

/// Removes `key` if its set became empty, as Redis deletes empty sets.
fn drop_if_empty(db: &mut Db, key: &[u8]) {
    if db.set(key).ok().flatten().is_some_and(|s| s.is_empty()) {
        db.remove(key);
    }
}

fn srem(conn: &mut Conn, args: &[Bytes]) {
    if refuse_presence_write(conn, &[&args[1]]) {
        return;
    }
    let mut db = conn.server.hub.keyspace.lock();
    let n = match db.set(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => 0,
        Ok(Some(s)) => args[2..].iter().filter(|m| s.remove(m)).count(),
    };
    drop_if_empty(&mut db, &args[1]);
    drop(db);
    conn.reply().int(n as i64);
}

fn smembers(conn: &mut Conn, args: &[Bytes]) {
    match with_set(conn, &args[1], |s| {
        s.map(|s| s.members()).unwrap_or_default()
    }) {
        Err(_) => wrongtype(conn),
        Ok(members) => write_members(&mut conn.reply(), &members),
    }
}

fn sismember(conn: &mut Conn, args: &[Bytes]) {
    match with_set(conn, &args[1], |s| s.is_some_and(|s| s.contains(&args[2]))) {
        Err(_) => wrongtype(conn),
        Ok(found) => conn.reply().int(found as i64),
    }
}

fn smismember(conn: &mut Conn, args: &[Bytes]) {
    let found = with_set(conn, &args[1], |s| {
        args[2..]
            .iter()
            .map(|m| s.is_some_and(|s| s.contains(m)))
            .collect::<Vec<bool>>()
    });
    match found {
        Err(_) => wrongtype(conn),
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
    match with_set(conn, &args[1], |s| s.map_or(0, |s| s.len())) {
        Err(_) => wrongtype(conn),
        Ok(n) => conn.reply().int(n as i64),
    }
}

/// A cheap pseudo-random index (SPOP/SRANDMEMBER need no cryptography).
pub(crate) fn rand_index(n: usize) -> usize {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(0x9E37_79B9_7F4A_7C15 ^ crate::hub::now_ms()));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % n.max(1) as u64) as usize
    })
}

fn parse_count(conn: &mut Conn, arg: &[u8]) -> Option<i64> {
    int_arg(conn, arg)
}

fn spop(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        return conn.reply().error("ERR syntax error");
    }
    if refuse_presence_write(conn, &[&args[1]]) {
        return;
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match parse_count(conn, a) {
            None => return,
            Some(n) if n < 0 => {
                return conn
                    .reply()
                    .error("ERR value is out of range, must be positive")
            }
            Some(n) => Some(n as usize),
        },
    };
    let mut db = conn.server.hub.keyspace.lock();
    let popped: Option<Vec<Bytes>> = match db.set(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => None,
        Ok(Some(s)) => {
            let want = count.unwrap_or(1).min(s.len());
            if count.is_some() && want == s.len() {
                // The whole set goes, in its own order, as in Redis.
                let all = s.members();
                for m in &all {
                    s.remove(m);
                }
                drop_if_empty(&mut db, &args[1]);
                drop(db);
                return write_members(&mut conn.reply(), &all);
            }
            let mut out = Vec::with_capacity(want);
            for _ in 0..want {
                let i = rand_index(s.len());
                out.extend(s.swap_remove_index(i));
            }
            Some(out)
        }
    };
    drop_if_empty(&mut db, &args[1]);
    drop(db);
    let mut out = conn.reply();
    match (count, popped) {
        (None, Some(v)) if !v.is_empty() => out.bulk(&v[0]),
        (None, _) => out.null(),
        (Some(_), v) => write_members(&mut out, &v.unwrap_or_default()),
    }
}

fn srandmember(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        return conn.reply().error("ERR syntax error");
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match parse_count(conn, a) {
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
    // Picks by index under the lock: O(1) a member, never a copy of the set.
    let picks = with_set(conn, &args[1], |s| {
        let Some(s) = s.filter(|s| !s.is_empty()) else {
            return Vec::new();
        };
        let len = s.len();
        let at = |i: usize| s.get_index(i).cloned();
        match count {
            None => at(rand_index(len)).into_iter().collect(),
            Some(n) if n < 0 => (0..n.unsigned_abs())
                .filter_map(|_| at(rand_index(len)))
                .collect(),
            Some(n) if n as u64 >= len as u64 => s.members(),
            Some(n) => {
                // Distinct picks: Floyd's sampling of n indexes out of len.
                let n = n as usize;
                let mut chosen = std::collections::HashSet::with_capacity(n);
                let mut out = Vec::with_capacity(n);
                for j in len - n..len {
                    let t = rand_index(j + 1);
                    let i = if chosen.insert(t) {
                        t
                    } else {
                        chosen.insert(j);
                        j
                    };
                    out.extend(at(i));
                }
                out
            }
        }
    });
    let picks = match picks {
        Err(_) => return wrongtype(conn),
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
    if refuse_presence_write(conn, &[&args[1], &args[2]]) {
        return;
    }
    let (src, dst, m) = (&args[1], &args[2], &args[3]);
    let mut db = conn.server.hub.keyspace.lock();
    let src_has = match db.set(src) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(s) => s.is_some_and(|s| s.contains(m)),
    };
    if db.set(dst).is_err() {
        drop(db);
        return wrongtype(conn);
    }
    if !src_has {
        drop(db);
        return conn.reply().int(0);
    }
    if src != dst {
        if let Ok(Some(s)) = db.set(src) {
            s.remove(m);
        }
        match db.set(dst) {
            Ok(Some(d)) => {
                d.insert(m.clone());
            }
            _ => db.insert(dst.clone(), Value::Set(SetValue::from_members([m.clone()]))),
        }
        drop_if_empty(&mut db, src);
    }
    drop(db);
    conn.reply().int(1);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Inter,
    Diff,
}

/// Computes a set operation over `keys`; `Err` for WRONGTYPE.
/// SUNION, SINTER, SDIFF of `keys` (SINTERCARD stops after `limit` members
/// when it is above 0). Stored sets are borrowed, never copied: an
/// intersection walks the smallest set and probes the others.
fn combine(
    conn: &Conn,
    db: &mut Db,
    keys: &[Bytes],
    op: Op,
    limit: usize,
) -> Result<Vec<Bytes>, WrongType> {
    // Presence views are built (one channel's users); stored sets borrowed.
    let views: Vec<Option<SetValue>> = keys
        .iter()
        .map(|k| {
            presence_channel(k).map(|ch| {
                let users = conn.server.hub.presence_users(ch).unwrap_or_default();
                SetValue::from_members(users.into_iter().map(Bytes::from))
            })
        })
        .collect();
    let stored = db.sets_for_read(keys);
    let mut sets: Vec<Option<&SetValue>> = Vec::with_capacity(keys.len());
    for (view, s) in views.iter().zip(stored) {
        sets.push(match view {
            Some(v) => (!v.is_empty()).then_some(v),
            None => s?,
        });
    }
    let limit = if limit == 0 { usize::MAX } else { limit };
    Ok(match op {
        Op::Union => {
            let mut all = SetValue::new();
            for s in sets.iter().flatten() {
                for m in s.iter() {
                    if !all.contains(m) {
                        all.insert(m.clone());
                    }
                }
            }
            all.members()
        }
        Op::Inter => {
            if sets.iter().any(|s| s.is_none()) {
                return Ok(Vec::new());
            }
            let sets: Vec<&SetValue> = sets.into_iter().flatten().collect();
            let Some(smallest) = sets.iter().min_by_key(|s| s.len()) else {
                return Ok(Vec::new());
            };
            let found = SetValue::from_members(
                smallest
                    .iter()
                    .filter(|m| sets.iter().all(|s| s.contains(m)))
                    .take(limit)
                    .cloned(),
            );
            found.members()
        }
        Op::Diff => {
            let Some(Some(first)) = sets.first() else {
                return Ok(Vec::new());
            };
            let rest: Vec<&SetValue> = sets[1..].iter().flatten().copied().collect();
            SetValue::from_members(
                first
                    .iter()
                    .filter(|m| rest.iter().all(|s| !s.contains(m)))
                    .cloned(),
            )
            .members()
        }
    })
}

fn set_op(conn: &mut Conn, args: &[Bytes], op: Op) {
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let r = combine(conn, &mut db, &args[1..], op, 0);
    drop(db);
    match r {
        Err(_) => wrongtype(conn),
        Ok(members) => write_members(&mut conn.reply(), &members),
    }
}

fn set_op_store(conn: &mut Conn, args: &[Bytes], op: Op) {
    if refuse_presence_write(conn, &[&args[1]]) {
        return;
    }
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let r = combine(conn, &mut db, &args[2..], op, 0);
    let n = match r {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(members) => {
            let n = members.len();
            if n == 0 {
                db.remove(&args[1]);
            } else {
                db.insert(args[1].clone(), Value::Set(SetValue::from_members(members)));
            }
            n
        }
    };
    drop(db);
    conn.reply().int(n as i64);
}

fn sunion(conn: &mut Conn, args: &[Bytes]) {
    set_op(conn, args, Op::Union)
}
fn sinter(conn: &mut Conn, args: &[Bytes]) {
    set_op(conn, args, Op::Inter)
}
fn sdiff(conn: &mut Conn, args: &[Bytes]) {
    set_op(conn, args, Op::Diff)
}
fn sunionstore(conn: &mut Conn, args: &[Bytes]) {
    set_op_store(conn, args, Op::Union)
}
fn sinterstore(conn: &mut Conn, args: &[Bytes]) {
    set_op_store(conn, args, Op::Inter)
}
fn sdiffstore(conn: &mut Conn, args: &[Bytes]) {
    set_op_store(conn, args, Op::Diff)
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
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let r = combine(conn, &mut db, keys, Op::Inter, limit);
    drop(db);
    match r {
        Err(_) => wrongtype(conn),
        Ok(m) => {
            let n = if limit > 0 {
                m.len().min(limit)
            } else {
                m.len()
            };
            conn.reply().int(n as i64);
        }
    }
}

fn sscan(conn: &mut Conn, args: &[Bytes]) {
    // Redis's order: the cursor, then the key, then the options.
    let Some(cursor) = super::scan_cursor(conn, &args[2]) else {
        return;
    };
    match with_set(conn, &args[1], |s| s.is_some()) {
        Err(_) => return wrongtype(conn),
        Ok(false) => return super::empty_scan(conn),
        Ok(true) => {}
    }
    let (mut count, mut pattern) = (10usize, None);
    let mut i = 3;
    while i < args.len() {
        if i + 1 >= args.len() {
            return conn.reply().error("ERR syntax error");
        }
        if args[i].eq_ignore_ascii_case(b"COUNT") {
            match int_arg(conn, &args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return conn.reply().error("ERR syntax error"),
                None => return,
            }
        } else if args[i].eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(crate::hub::glob::Glob::new(&args[i + 1]));
        } else {
            return conn.reply().error("ERR syntax error");
        }
        i += 2;
    }
    // Small (intset) sets come whole in one reply, as Redis sends them;
    // larger ones page through the set's internal order (see
    // `SetValue::scan`), O(count) a page.
    let paged = with_set(conn, &args[1], |s| match s {
        None => (0, Vec::new()),
        Some(s) if s.is_intset() || s.len() <= count => (0, s.members()),
        Some(s) => s.scan(cursor, count),
    });
    let (next, page) = match paged {
        Err(_) => return wrongtype(conn),
        Ok(p) => p,
    };
    let page: Vec<Bytes> = page
        .into_iter()
        .filter(|m| pattern.as_ref().is_none_or(|g| g.matches(m)))
        .collect();
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(page.len());
    for m in &page {
        out.bulk(m);
    }
}
