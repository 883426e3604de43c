//! List commands: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP, LLEN, LRANGE,
//! LINDEX, LSET, LINSERT, LREM, LTRIM, LPOS, LMOVE, RPOPLPUSH and the
//! blocking BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, with Redis 7.0's replies and
//! its order of errors.
//!
//! Each command parses its arguments, calls the hub (`hub::data::lists`,
//! `hub::data::list_waits`) and encodes the result. A blocking pop with
//! nothing to pop parks the connection with its place in the hub's queue
//! (`Conn::park_list_pop`); inside MULTI it answers at once, as for a
//! timeout.

use bytes::Bytes;

use super::{int_arg, Command, KeySpec, KEY1_RO, KEY1_RW, KEY1_WO, RW, WO};
use crate::hub::data::{blocking_timeout, BlockingPop, DataError, Lpos, PopTo};
use crate::hub::list::End;
use crate::resp::connection::Conn;
use crate::resp::parse::parse_i64;

const WF: &[&str] = &["@write", "@list", "@fast"];
const WS: &[&str] = &["@write", "@list", "@slow"];
const RF: &[&str] = &["@read", "@list", "@fast"];
const RS: &[&str] = &["@read", "@list", "@slow"];
const WB: &[&str] = &["@write", "@list", "@slow", "@blocking"];
const WRITE_FAST: &[&str] = &["write", "denyoom", "fast"];

/// A source read and written at 1, a destination written at 2.
const MOVE: &[KeySpec] = &[
    KeySpec::At { at: 1, access: RW },
    KeySpec::At { at: 2, access: WO },
];
/// Keys from 1 to the one before the timeout, each popped.
const BPOP: &[KeySpec] = &[KeySpec::Range {
    first: 1,
    step: 1,
    from_end: 1,
    access: RW,
}];

const fn list_cmd(
    name: &'static str,
    arity: i32,
    summary: &'static str,
    run: fn(&mut Conn, &[Bytes]),
    flags: &'static [&'static str],
    acl: &'static [&'static str],
    keys: &'static [KeySpec],
) -> Command {
    Command::new(name, arity, "list", summary, run)
        .flags(flags)
        .acl(acl)
        .keys(keys)
}

pub const LPUSH: Command = list_cmd(
    "lpush",
    -3,
    "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
    lpush,
    WRITE_FAST,
    WF,
    KEY1_WO,
);
pub const RPUSH: Command = list_cmd(
    "rpush",
    -3,
    "Appends one or more elements to a list. Creates the key if it doesn't exist.",
    rpush,
    WRITE_FAST,
    WF,
    KEY1_WO,
);
pub const LPUSHX: Command = list_cmd(
    "lpushx",
    -3,
    "Prepends one or more elements to a list only when the list exists.",
    lpushx,
    WRITE_FAST,
    WF,
    KEY1_WO,
);
pub const RPUSHX: Command = list_cmd(
    "rpushx",
    -3,
    "Appends an element to a list only when the list exists.",
    rpushx,
    WRITE_FAST,
    WF,
    KEY1_WO,
);
pub const LPOP: Command = list_cmd("lpop", -2, "Returns the first elements in a list after removing it. Deletes the list if the last element was popped.", lpop, &["write", "fast"], WF, KEY1_RW);
pub const RPOP: Command = list_cmd("rpop", -2, "Returns and removes the last elements of a list. Deletes the list if the last element was popped.", rpop, &["write", "fast"], WF, KEY1_RW);
pub const LLEN: Command = list_cmd(
    "llen",
    2,
    "Returns the length of a list.",
    llen,
    &["readonly", "fast"],
    RF,
    KEY1_RO,
);
pub const LRANGE: Command = list_cmd(
    "lrange",
    4,
    "Returns a range of elements from a list.",
    lrange,
    &["readonly"],
    RS,
    KEY1_RO,
);
pub const LINDEX: Command = list_cmd(
    "lindex",
    3,
    "Returns an element from a list by its index.",
    lindex,
    &["readonly"],
    RS,
    KEY1_RO,
);
pub const LSET: Command = list_cmd(
    "lset",
    4,
    "Sets the value of an element in a list by its index.",
    lset,
    &["write", "denyoom"],
    WS,
    KEY1_WO,
);
pub const LINSERT: Command = list_cmd(
    "linsert",
    5,
    "Inserts an element before or after another element in a list.",
    linsert,
    &["write", "denyoom"],
    WS,
    KEY1_WO,
);
pub const LREM: Command = list_cmd(
    "lrem",
    4,
    "Removes elements from a list. Deletes the list if the last element was removed.",
    lrem,
    &["write"],
    WS,
    KEY1_WO,
);
pub const LTRIM: Command = list_cmd(
    "ltrim",
    4,
    "Removes elements from both ends a list. Deletes the list if all elements were trimmed.",
    ltrim,
    &["write"],
    WS,
    KEY1_WO,
);
pub const LPOS: Command = list_cmd(
    "lpos",
    -3,
    "Returns the index of matching elements in a list.",
    lpos,
    &["readonly"],
    RS,
    KEY1_RO,
);
pub const LMOVE: Command = list_cmd("lmove", 5, "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.", lmove, &["write", "denyoom"], WS, MOVE);
pub const RPOPLPUSH: Command = list_cmd("rpoplpush", 3, "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.", rpoplpush, &["write", "denyoom"], WS, MOVE);
pub const BLPOP: Command = list_cmd("blpop", -3, "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.", blpop, &["write", "noscript", "blocking"], WB, BPOP);
pub const BRPOP: Command = list_cmd("brpop", -3, "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.", brpop, &["write", "noscript", "blocking"], WB, BPOP);
pub const BLMOVE: Command = list_cmd("blmove", 6, "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.", blmove, &["write", "denyoom", "noscript", "blocking"], WB, MOVE);
pub const BRPOPLPUSH: Command = list_cmd("brpoplpush", 4, "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.", brpoplpush, &["write", "denyoom", "noscript", "blocking"], WB, MOVE);

fn fail(conn: &mut Conn, e: DataError) {
    conn.reply().error(&e.to_string());
}

fn reply_int(conn: &mut Conn, r: Result<usize, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(n) => conn.reply().int(n as i64),
    }
}

fn reply_ok(conn: &mut Conn, r: Result<(), DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(()) => conn.reply().simple("OK"),
    }
}

fn reply_bulk_or_null(conn: &mut Conn, r: Result<Option<Bytes>, DataError>) {
    match r {
        Err(e) => fail(conn, e),
        Ok(Some(v)) => conn.reply().bulk(&v),
        Ok(None) => conn.reply().null(),
    }
}

/// LEFT or RIGHT (any case), or Redis's syntax error.
fn end_arg(conn: &mut Conn, arg: &[u8]) -> Option<End> {
    if arg.eq_ignore_ascii_case(b"LEFT") {
        Some(End::Left)
    } else if arg.eq_ignore_ascii_case(b"RIGHT") {
        Some(End::Right)
    } else {
        conn.reply().error("ERR syntax error");
        None
    }
}

fn push(conn: &mut Conn, args: &[Bytes], side: End, only_existing: bool) {
    let r = conn
        .server
        .hub
        .list_push(&args[1], side, &args[2..], only_existing);
    reply_int(conn, r);
}

fn lpush(conn: &mut Conn, args: &[Bytes]) {
    push(conn, args, End::Left, false);
}

fn rpush(conn: &mut Conn, args: &[Bytes]) {
    push(conn, args, End::Right, false);
}

fn lpushx(conn: &mut Conn, args: &[Bytes]) {
    push(conn, args, End::Left, true);
}

fn rpushx(conn: &mut Conn, args: &[Bytes]) {
    push(conn, args, End::Right, true);
}

fn pop(conn: &mut Conn, args: &[Bytes], side: End) {
    if args.len() > 3 {
        let name = String::from_utf8_lossy(&args[0]).to_lowercase();
        return conn.reply().error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match parse_i64(a) {
            Some(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => {
                return conn
                    .reply()
                    .error("ERR value is out of range, must be positive")
            }
        },
    };
    match conn.server.hub.list_pop(&args[1], side, count) {
        Err(e) => fail(conn, e),
        Ok(None) if count.is_some() => conn.reply().null_array(),
        Ok(None) => conn.reply().null(),
        Ok(Some(v)) if count.is_some() => conn.reply().bulks(v.iter()),
        Ok(Some(v)) => match v.first() {
            Some(v) => conn.reply().bulk(v),
            None => conn.reply().null(),
        },
    }
}

fn lpop(conn: &mut Conn, args: &[Bytes]) {
    pop(conn, args, End::Left);
}

fn rpop(conn: &mut Conn, args: &[Bytes]) {
    pop(conn, args, End::Right);
}

fn llen(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.llen(&args[1]);
    reply_int(conn, r);
}

fn lrange(conn: &mut Conn, args: &[Bytes]) {
    let Some(start) = int_arg(conn, &args[2]) else {
        return;
    };
    let Some(end) = int_arg(conn, &args[3]) else {
        return;
    };
    match conn.server.hub.lrange(&args[1], start, end) {
        Err(e) => fail(conn, e),
        Ok(v) => conn.reply().bulks(v.iter()),
    }
}

fn lindex(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.lindex(&args[1], parse_i64(&args[2]));
    reply_bulk_or_null(conn, r);
}

fn lset(conn: &mut Conn, args: &[Bytes]) {
    let r = conn
        .server
        .hub
        .lset(&args[1], parse_i64(&args[2]), &args[3]);
    reply_ok(conn, r);
}

fn linsert(conn: &mut Conn, args: &[Bytes]) {
    let before = if args[2].eq_ignore_ascii_case(b"BEFORE") {
        true
    } else if args[2].eq_ignore_ascii_case(b"AFTER") {
        false
    } else {
        return conn.reply().error("ERR syntax error");
    };
    match conn
        .server
        .hub
        .linsert(&args[1], before, &args[3], &args[4])
    {
        Err(e) => fail(conn, e),
        Ok(n) => conn.reply().int(n),
    }
}

fn lrem(conn: &mut Conn, args: &[Bytes]) {
    let Some(count) = int_arg(conn, &args[2]) else {
        return;
    };
    let r = conn.server.hub.lrem(&args[1], count, &args[3]);
    reply_int(conn, r);
}

fn ltrim(conn: &mut Conn, args: &[Bytes]) {
    let Some(start) = int_arg(conn, &args[2]) else {
        return;
    };
    let Some(end) = int_arg(conn, &args[3]) else {
        return;
    };
    let r = conn.server.hub.ltrim(&args[1], start, end);
    reply_ok(conn, r);
}

/// LPOS's options, or the reply that refuses them.
fn lpos_options(conn: &mut Conn, args: &[Bytes]) -> Option<Lpos> {
    let mut o = Lpos::default();
    let mut i = 3;
    while i < args.len() {
        let (opt, value) = (&args[i], args.get(i + 1));
        let Some(value) = value else {
            conn.reply().error("ERR syntax error");
            return None;
        };
        if opt.eq_ignore_ascii_case(b"RANK") {
            o.rank = int_arg(conn, value)?;
            if o.rank == 0 {
                conn.reply().error("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list");
                return None;
            }
        } else if opt.eq_ignore_ascii_case(b"COUNT") {
            match parse_i64(value) {
                Some(n) if n >= 0 => o.count = Some(n),
                _ => {
                    conn.reply().error("ERR COUNT can't be negative");
                    return None;
                }
            }
        } else if opt.eq_ignore_ascii_case(b"MAXLEN") {
            match parse_i64(value) {
                Some(n) if n >= 0 => o.maxlen = n,
                _ => {
                    conn.reply().error("ERR MAXLEN can't be negative");
                    return None;
                }
            }
        } else {
            conn.reply().error("ERR syntax error");
            return None;
        }
        i += 2;
    }
    Some(o)
}

fn lpos(conn: &mut Conn, args: &[Bytes]) {
    let Some(opts) = lpos_options(conn, args) else {
        return;
    };
    let found = match conn.server.hub.lpos(&args[1], &args[2], opts) {
        Err(e) => return fail(conn, e),
        Ok(found) => found,
    };
    let mut out = conn.reply();
    if opts.count.is_some() {
        out.array(found.len());
        for i in found {
            out.int(i as i64);
        }
    } else {
        match found.first() {
            Some(i) => out.int(*i as i64),
            None => out.null(),
        }
    }
}

fn lmove(conn: &mut Conn, args: &[Bytes]) {
    let Some(from) = end_arg(conn, &args[3]) else {
        return;
    };
    let Some(to) = end_arg(conn, &args[4]) else {
        return;
    };
    let r = conn.server.hub.lmove(&args[1], &args[2], from, to);
    reply_bulk_or_null(conn, r);
}

fn rpoplpush(conn: &mut Conn, args: &[Bytes]) {
    let r = conn
        .server
        .hub
        .lmove(&args[1], &args[2], End::Right, End::Left);
    reply_bulk_or_null(conn, r);
}

/// A blocking pop from `keys`, once its timeout was read: answered at
/// once, or parked. Inside MULTI it never blocks: nothing there answers
/// as a timeout would, except that a move answers a null bulk there (as
/// Redis does).
fn blocking(conn: &mut Conn, keys: &[Bytes], from: End, to: PopTo, timeout_ms: u64) {
    let with_key = to == PopTo::Client;
    let hub = conn.server.hub.clone();
    match hub.blocking_pop(keys, from, to, !conn.in_multi()) {
        Err(e) => fail(conn, e),
        Ok(BlockingPop::Got(p)) => conn.reply_popped(Ok(p), with_key),
        Ok(BlockingPop::Empty) if with_key => conn.reply().null_array(),
        Ok(BlockingPop::Empty) => conn.reply().null(),
        Ok(BlockingPop::Parked(guard)) => conn.park_list_pop(guard, with_key, timeout_ms),
    }
}

fn timeout(conn: &mut Conn, arg: &[u8]) -> Option<u64> {
    match blocking_timeout(arg) {
        Ok(ms) => Some(ms),
        Err(e) => {
            fail(conn, e);
            None
        }
    }
}

fn bpop(conn: &mut Conn, args: &[Bytes], from: End) {
    let Some(ms) = timeout(conn, &args[args.len() - 1]) else {
        return;
    };
    blocking(conn, &args[1..args.len() - 1], from, PopTo::Client, ms);
}

fn blpop(conn: &mut Conn, args: &[Bytes]) {
    bpop(conn, args, End::Left);
}

fn brpop(conn: &mut Conn, args: &[Bytes]) {
    bpop(conn, args, End::Right);
}

fn blmove(conn: &mut Conn, args: &[Bytes]) {
    let Some(from) = end_arg(conn, &args[3]) else {
        return;
    };
    let Some(to) = end_arg(conn, &args[4]) else {
        return;
    };
    let Some(ms) = timeout(conn, &args[5]) else {
        return;
    };
    // Copied: kept while parked, it should not pin the request.
    let dst = Bytes::copy_from_slice(&args[2]);
    blocking(conn, &args[1..2], from, PopTo::List { dst, to }, ms);
}

fn brpoplpush(conn: &mut Conn, args: &[Bytes]) {
    let Some(ms) = timeout(conn, &args[3]) else {
        return;
    };
    // Copied: kept while parked, it should not pin the request.
    let dst = Bytes::copy_from_slice(&args[2]);
    blocking(
        conn,
        &args[1..2],
        End::Right,
        PopTo::List { dst, to: End::Left },
        ms,
    );
}
