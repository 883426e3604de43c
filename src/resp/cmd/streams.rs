//! Stream commands: XADD, XRANGE, XREVRANGE, XLEN, XREAD, XDEL, XTRIM,
//! XINFO, XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, with
//! Redis 7.0's replies and error texts. XREAD and XREADGROUP may block: they
//! then park the connection (see `Conn::blocked`) and are retried when an
//! XADD signals one of their keys.

use bytes::Bytes;

use super::{help_reply, Command, KeySpec, KEY1_RO, KEY1_RW, KEY1_WO, RO, RW, SUBKEY_RO, SUBKEY_WO};
use crate::hub::keyspace::WrongType;
use crate::hub::now_ms;
use crate::hub::stream::{Consumer, Group, NewId, Pending, Stream, StreamEntry, StreamId, Trim};
use crate::resp::connection::{Blocked, Conn};
use crate::resp::encode::Out;
use crate::resp::parse::parse_i64;

const W: &[&str] = &["@write", "@stream", "@fast"];
const R: &[&str] = &["@read", "@stream", "@slow"];

pub const XADD: Command = Command::new(
    "xadd",
    -5,
    "stream",
    "Appends a new message to a stream. Creates the key if it doesn't exist.",
    xadd,
)
.flags(&["write", "denyoom", "fast"])
.acl(W)
.keys(KEY1_WO);
pub const XRANGE: Command = Command::new(
    "xrange",
    -4,
    "stream",
    "Returns the messages from a stream within a range of IDs.",
    xrange,
)
.flags(&["readonly"])
.acl(R)
.keys(KEY1_RO);
pub const XREVRANGE: Command = Command::new(
    "xrevrange",
    -4,
    "stream",
    "Returns the messages from a stream within a range of IDs in reverse order.",
    xrevrange,
)
.flags(&["readonly"])
.acl(R)
.keys(KEY1_RO);
pub const XLEN: Command = Command::new(
    "xlen",
    2,
    "stream",
    "Return the number of messages in a stream.",
    xlen,
)
.flags(&["readonly", "fast"])
.acl(&["@read", "@stream", "@fast"])
.keys(KEY1_RO);
pub const XREAD: Command = Command::new("xread", -4, "stream", "Returns messages from multiple streams with IDs greater than the ones requested. Blocks until a message is available otherwise.", xread)
    .flags(&["readonly", "blocking"])
    .acl(&["@read", "@stream", "@slow", "@blocking"])
.keys(&[KeySpec::Streams { group: false, access: RO }]);
pub const XDEL: Command = Command::new(
    "xdel",
    -3,
    "stream",
    "Returns the number of messages after removing them from a stream.",
    xdel,
)
.flags(&["write", "fast"])
.acl(W)
.keys(KEY1_WO);
pub const XTRIM: Command = Command::new(
    "xtrim",
    -4,
    "stream",
    "Deletes messages from the beginning of a stream.",
    xtrim,
)
.flags(&["write"])
.acl(&["@write", "@stream", "@slow"])
.keys(KEY1_WO);
pub const XREADGROUP: Command = Command::new("xreadgroup", -7, "stream", "Returns new or historical messages from a stream for a consumer in a group. Blocks until a message is available otherwise.", xreadgroup)
    .flags(&["write", "blocking"])
    .acl(&["@write", "@stream", "@slow", "@blocking"])
.keys(&[KeySpec::Streams { group: true, access: RW }]);
pub const XACK: Command = Command::new("xack", -4, "stream", "Returns the number of messages that were successfully acknowledged by the consumer group member of a stream.", xack)
    .flags(&["write", "fast"])
    .acl(W)
.keys(KEY1_WO);
pub const XPENDING: Command = Command::new(
    "xpending",
    -3,
    "stream",
    "Returns the information and entries from a stream consumer group's pending entries list.",
    xpending,
)
.flags(&["readonly"])
.acl(R)
.keys(KEY1_RO);
pub const XCLAIM: Command = Command::new("xclaim", -6, "stream", "Changes, or acquires, ownership of a message in a consumer group, as if the message was delivered a consumer group member.", xclaim)
    .flags(&["write", "fast"])
    .acl(W)
.keys(KEY1_RW);
pub const XAUTOCLAIM: Command = Command::new("xautoclaim", -6, "stream", "Changes, or acquires, ownership of messages in a consumer group, as if the messages were delivered to as consumer group member.", xautoclaim)
    .flags(&["write", "fast"])
    .acl(W)
.keys(KEY1_RW);

const XINFO_SUBS: &[Command] = &[
    Command::new(
        "stream",
        -3,
        "stream",
        "Returns information about a stream.",
        xinfo_stream,
    )
    .flags(&["readonly"])
    .acl(R)
    .keys(SUBKEY_RO),
    Command::new(
        "groups",
        3,
        "stream",
        "Returns a list of the consumer groups of a stream.",
        xinfo_groups,
    )
    .flags(&["readonly"])
    .acl(R)
    .keys(SUBKEY_RO),
    Command::new(
        "consumers",
        4,
        "stream",
        "Returns a list of the consumers in a consumer group.",
        xinfo_consumers,
    )
    .flags(&["readonly"])
    .acl(R)
    .keys(SUBKEY_RO),
    Command::new(
        "help",
        2,
        "stream",
        "Returns helpful text about the different subcommands.",
        xinfo_help,
    )
    .flags(&["loading", "stale"])
    .acl(&["@stream", "@slow"]),
];
pub const XINFO: Command = Command::new(
    "xinfo",
    -2,
    "stream",
    "A container for stream introspection commands.",
    xinfo_help,
)
.subs(XINFO_SUBS);

const XGROUP_SUBS: &[Command] = &[
    Command::new(
        "create",
        -5,
        "stream",
        "Creates a consumer group.",
        xgroup_create,
    )
    .flags(&["write", "denyoom"])
    .acl(&["@write", "@stream", "@slow"])
    .keys(SUBKEY_WO),
    Command::new(
        "destroy",
        4,
        "stream",
        "Destroys a consumer group.",
        xgroup_destroy,
    )
    .flags(&["write"])
    .acl(&["@write", "@stream", "@slow"])
    .keys(SUBKEY_WO),
    Command::new(
        "createconsumer",
        5,
        "stream",
        "Creates a consumer in a consumer group.",
        xgroup_createconsumer,
    )
    .flags(&["write", "denyoom"])
    .acl(&["@write", "@stream", "@slow"])
    .keys(SUBKEY_WO),
    Command::new(
        "delconsumer",
        5,
        "stream",
        "Deletes a consumer from a consumer group.",
        xgroup_delconsumer,
    )
    .flags(&["write"])
    .acl(&["@write", "@stream", "@slow"])
    .keys(SUBKEY_WO),
    Command::new(
        "setid",
        -5,
        "stream",
        "Sets the last-delivered ID of a consumer group.",
        xgroup_setid,
    )
    .flags(&["write"])
    .acl(&["@write", "@stream", "@slow"])
    .keys(SUBKEY_WO),
    Command::new(
        "help",
        2,
        "stream",
        "Returns helpful text about the different subcommands.",
        xgroup_help,
    )
    .flags(&["loading", "stale"])
    .acl(&["@stream", "@slow"]),
];
pub const XGROUP: Command = Command::new(
    "xgroup",
    -2,
    "stream",
    "A container for consumer groups commands.",
    xgroup_help,
)
.subs(XGROUP_SUBS);

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";
const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";

fn err(conn: &mut Conn, msg: &str) {
    conn.reply().error(msg);
}

fn wrongtype(conn: &mut Conn) {
    conn.reply().error(&WrongType.to_string());
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// A range bound: `-`, `+`, an id, an incomplete id, or `(` exclusive.
fn parse_bound(arg: &[u8], start: bool) -> Option<StreamId> {
    match arg {
        b"-" => return Some(StreamId::MIN),
        b"+" => return Some(StreamId::MAX),
        _ => {}
    }
    let (exclusive, rest) = match arg.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, arg),
    };
    let missing = if start { 0 } else { u64::MAX };
    let (id, _) = StreamId::parse(rest, missing)?;
    if exclusive {
        if start {
            id.incr()
        } else {
            id.decr()
        }
    } else {
        Some(id)
    }
}

/// A strict id (XDEL, XACK, XCLAIM): `ms-seq` or `ms`.
fn parse_id(arg: &[u8]) -> Option<StreamId> {
    StreamId::parse(arg, 0).map(|(id, _)| id)
}

fn write_id(out: &mut Out<'_>, id: StreamId) {
    out.bulk(id.to_string().as_bytes());
}

fn write_entry(out: &mut Out<'_>, e: &StreamEntry) {
    out.array(2);
    write_id(out, e.id);
    out.array(e.fields.len() * 2);
    for (f, v) in &e.fields {
        out.bulk(f);
        out.bulk(v);
    }
}

fn write_entries(out: &mut Out<'_>, entries: &[&StreamEntry]) {
    out.array(entries.len());
    for e in entries {
        write_entry(out, e);
    }
}

// ---- XADD / XTRIM ---------------------------------------------------------

struct TrimArgs {
    how: Trim,
    approx: bool,
    limit: Option<u64>,
}

/// What XADD/XTRIM options parse into.
struct AddTrim {
    trim: Option<TrimArgs>,
    nomkstream: bool,
    /// XADD: index of the id argument.
    id_at: usize,
}

/// Redis's `streamParseAddOrTrimArgsOrReply`: options from `args[2]` on,
/// for XADD up to the id. Replies the error and returns `None` on failure.
fn parse_add_trim(conn: &mut Conn, args: &[Bytes], xadd: bool) -> Option<AddTrim> {
    let mut i = 2;
    let (mut maxlen, mut minid): (Option<u64>, Option<StreamId>) = (None, None);
    let mut approx = false;
    let mut limit = None;
    let mut nomkstream = false;
    let mut id_at = args.len();
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = &args[i];
        if xadd && &opt[..] == b"*" {
            id_at = i;
            break;
        } else if eq(opt, "MAXLEN") && more > 0 {
            let next = &args[i + 1];
            if more >= 2 && (&next[..] == b"~" || &next[..] == b"=") {
                approx = &next[..] == b"~";
                i += 1;
            }
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 0 => maxlen = Some(n as u64),
                Some(_) => {
                    err(conn, "ERR The MAXLEN argument must be >= 0.");
                    return None;
                }
                None => {
                    err(conn, NOT_INT);
                    return None;
                }
            }
            i += 2;
        } else if eq(opt, "MINID") && more > 0 {
            let next = &args[i + 1];
            if more >= 2 && (&next[..] == b"~" || &next[..] == b"=") {
                approx = &next[..] == b"~";
                i += 1;
            }
            match parse_id(&args[i + 1]) {
                Some(id) => minid = Some(id),
                None => {
                    err(conn, INVALID_ID);
                    return None;
                }
            }
            i += 2;
        } else if eq(opt, "LIMIT") && more > 0 {
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 0 => limit = Some(n as u64),
                Some(_) => {
                    err(conn, "ERR The LIMIT argument must be >= 0.");
                    return None;
                }
                None => {
                    err(conn, NOT_INT);
                    return None;
                }
            }
            i += 2;
        } else if xadd && eq(opt, "NOMKSTREAM") {
            nomkstream = true;
            i += 1;
        } else if xadd {
            id_at = i;
            break;
        } else {
            err(conn, SYNTAX);
            return None;
        }
    }
    if maxlen.is_some() && minid.is_some() {
        err(
            conn,
            "ERR syntax error, MAXLEN and MINID options at the same time are not compatible",
        );
        return None;
    }
    let how = maxlen.map(Trim::MaxLen).or(minid.map(Trim::MinId));
    if limit.is_some() && how.is_none() {
        err(
            conn,
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        );
        return None;
    }
    if !xadd && how.is_none() {
        err(
            conn,
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        );
        return None;
    }
    if limit.is_some() && !approx {
        err(
            conn,
            "ERR syntax error, LIMIT cannot be used without the special ~ option",
        );
        return None;
    }
    Some(AddTrim {
        trim: how.map(|how| TrimArgs { how, approx, limit }),
        nomkstream,
        id_at,
    })
}

fn apply_trim(s: &mut Stream, t: &TrimArgs) -> u64 {
    let limit = match (t.approx, t.limit) {
        (true, Some(l)) => l,
        (true, None) => 100 * crate::hub::stream::NODE_MAX_ENTRIES,
        (false, _) => 0,
    };
    s.trim(t.how, t.approx, limit)
}

fn xadd(conn: &mut Conn, args: &[Bytes]) {
    let key = args[1].clone();
    let Some(AddTrim {
        trim,
        nomkstream,
        id_at: i,
    }) = parse_add_trim(conn, args, true)
    else {
        return;
    };
    let Some(id_arg) = args.get(i) else {
        err(conn, "ERR wrong number of arguments for 'xadd' command");
        return;
    };
    let how = if &id_arg[..] == b"*" {
        NewId::Auto
    } else if let Some(ms) = id_arg.strip_suffix(b"-*") {
        match StreamId::parse(ms, 0) {
            Some((id, false)) => NewId::AutoSeq(id.ms),
            _ => return err(conn, INVALID_ID),
        }
    } else {
        match StreamId::parse(id_arg, 0) {
            Some((id, _)) => NewId::Explicit(id),
            None => return err(conn, INVALID_ID),
        }
    };
    let rest = &args[i + 1..];
    if rest.is_empty() || rest.len() % 2 != 0 {
        err(conn, "ERR wrong number of arguments for 'xadd' command");
        return;
    }
    let fields: Vec<(Bytes, Bytes)> = rest
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    match db.stream(&key) {
        Err(WrongType) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) if nomkstream => {
            drop(db);
            conn.reply().null();
            return;
        }
        Ok(None) => {
            // Create only once the id is known to be valid (an error must
            // not leave an empty stream behind).
            if let Err(e) = Stream::new(0).next_id(how, now_ms()) {
                drop(db);
                return err(conn, &e.to_string());
            }
            let _ = db.stream_or_create(&key, false);
        }
        Ok(Some(_)) => {}
    }
    let added = db.with_stream(&key, |s| {
        let r = s.add(how, fields.clone(), now_ms());
        if r.is_ok() {
            if let Some(t) = &trim {
                apply_trim(s, t);
            }
        }
        r
    });
    match added {
        Some(Ok((id, offset))) => {
            hub.after_xadd(&mut db, &key, id, offset, &fields);
            drop(db);
            conn.reply().bulk(id.to_string().as_bytes());
        }
        Some(Err(e)) => {
            drop(db);
            err(conn, &e.to_string());
        }
        None => {
            drop(db);
            wrongtype(conn);
        }
    }
}

fn xtrim(conn: &mut Conn, args: &[Bytes]) {
    let Some(AddTrim { trim: Some(t), .. }) = parse_add_trim(conn, args, false) else {
        return;
    };
    let mut db = conn.server.hub.keyspace.lock();
    let n = match db.stream(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => 0,
        Ok(Some(_)) => db.with_stream(&args[1], |s| apply_trim(s, &t)).unwrap_or(0),
    };
    drop(db);
    conn.reply().int(n as i64);
}

// ---- XRANGE / XLEN / XDEL ---------------------------------------------------

fn range_generic(conn: &mut Conn, args: &[Bytes], rev: bool) {
    let (a, b) = if rev {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    let (Some(start), Some(end)) = (parse_bound(a, true), parse_bound(b, false)) else {
        // An exclusive bound past the ends of the id space.
        let overflow = |x: &[u8]| x.first() == Some(&b'(') && StreamId::parse(&x[1..], 0).is_some();
        if overflow(a) || overflow(b) {
            return err(conn, "ERR invalid start ID for the interval");
        }
        return err(conn, INVALID_ID);
    };
    let mut count: Option<i64> = None;
    match &args[4..] {
        [] => {}
        [c, n] if eq(c, "COUNT") => match parse_i64(n) {
            Some(n) => count = Some(n),
            None => return err(conn, NOT_INT),
        },
        _ => return err(conn, SYNTAX),
    }
    let mut db = conn.server.hub.keyspace.lock();
    let s = match db.stream(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(s) => s,
    };
    let mut out = Out {
        buf: &mut conn.out,
        resp3: conn.resp3,
    };
    match (s, count) {
        (_, Some(c)) if c <= 0 => out.null_array(),
        (None, _) => out.array(0),
        (Some(s), c) => {
            let entries = s.range(start, end, c.unwrap_or(0) as usize, rev);
            write_entries(&mut out, &entries);
        }
    }
}

fn xrange(conn: &mut Conn, args: &[Bytes]) {
    range_generic(conn, args, false)
}

fn xrevrange(conn: &mut Conn, args: &[Bytes]) {
    range_generic(conn, args, true)
}

fn xlen(conn: &mut Conn, args: &[Bytes]) {
    let mut db = conn.server.hub.keyspace.lock();
    let n = match db.stream(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(s) => s.map_or(0, |s| s.len()),
    };
    drop(db);
    conn.reply().int(n as i64);
}

fn xdel(conn: &mut Conn, args: &[Bytes]) {
    let mut ids = Vec::new();
    for a in &args[2..] {
        match parse_id(a) {
            Some(id) => ids.push(id),
            None => return err(conn, INVALID_ID),
        }
    }
    let mut db = conn.server.hub.keyspace.lock();
    let n = match db.stream(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => 0,
        Ok(Some(_)) => db.with_stream(&args[1], |s| s.delete(&ids)).unwrap_or(0),
    };
    drop(db);
    conn.reply().int(n as i64);
}

// ---- XREAD / XREADGROUP -------------------------------------------------------

struct ReadArgs {
    count: usize,
    block: Option<u64>,
    noack: bool,
    keys: Vec<Bytes>,
    ids: Vec<Bytes>,
    /// Index of the first id, for rewriting `$` before blocking.
    ids_at: usize,
}

/// Parses the options and the STREAMS list of XREAD (from `i = 1`) or
/// XREADGROUP (from `i = 4`, after `GROUP g consumer`). This one grammar also
/// tells dispatch which arguments are keys ([`read_key_positions`]), so the
/// keys that permissions check are the keys the command reads.
fn read_grammar(args: &[Bytes], mut i: usize, group: bool) -> Result<ReadArgs, String> {
    let mut count = 0usize;
    let mut block = None;
    let mut noack = false;
    loop {
        let Some(a) = args.get(i) else {
            return Err(SYNTAX.into());
        };
        if eq(a, "COUNT") && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(n) => count = n.max(0) as usize,
                None => return Err(NOT_INT.into()),
            }
            i += 2;
        } else if eq(a, "BLOCK") && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 0 => block = Some(n as u64),
                Some(_) => return Err("ERR timeout is negative".into()),
                None => return Err("ERR timeout is not an integer or out of range".into()),
            }
            i += 2;
        } else if group && eq(a, "NOACK") {
            noack = true;
            i += 1;
        } else if eq(a, "STREAMS") {
            i += 1;
            break;
        } else {
            return Err(SYNTAX.into());
        }
    }
    let rest = &args[i..];
    if rest.is_empty() || rest.len() % 2 != 0 {
        let name = if group { "XREADGROUP" } else { "XREAD" };
        return Err(format!(
            "ERR Unbalanced {name} list of streams: for each stream key an ID or '$' must be specified."
        ));
    }
    let half = rest.len() / 2;
    Ok(ReadArgs {
        count,
        block,
        noack,
        keys: rest[..half].to_vec(),
        ids: rest[half..].to_vec(),
        ids_at: i + half,
    })
}

/// Where the stream keys of an XREAD (`group == false`) or XREADGROUP
/// request are: the positions its own grammar gives them, or none when the
/// request does not parse (it then fails before touching any key).
pub(super) fn read_key_positions(args: &[Bytes], group: bool) -> std::ops::Range<usize> {
    let start = if group {
        if !args.get(1).is_some_and(|a| eq(a, "GROUP")) || args.len() < 4 {
            return 0..0;
        }
        4
    } else {
        1
    };
    match read_grammar(args, start, group) {
        Ok(r) => (r.ids_at - r.keys.len())..r.ids_at,
        Err(_) => 0..0,
    }
}

fn parse_read(conn: &mut Conn, args: &[Bytes], i: usize, group: bool) -> Option<ReadArgs> {
    read_grammar(args, i, group)
        .map_err(|msg| err(conn, &msg))
        .ok()
}

/// Writes a (possibly multi-key) read reply: a map in RESP3, an array of
/// `[key, entries]` pairs in RESP2.
fn write_read_reply(out: &mut Out<'_>, results: &[(Bytes, Vec<ReplyEntry>)]) {
    out.map_or_array(results.len());
    for (k, entries) in results {
        if !out.resp3 {
            out.array(2);
        }
        out.bulk(k);
        out.array(entries.len());
        for e in entries {
            match e {
                ReplyEntry::Full(id, fields) => {
                    out.array(2);
                    write_id(out, *id);
                    out.array(fields.len() * 2);
                    for (f, v) in fields {
                        out.bulk(f);
                        out.bulk(v);
                    }
                }
                ReplyEntry::Deleted(id) => {
                    out.array(2);
                    write_id(out, *id);
                    out.null_array();
                }
            }
        }
    }
}

enum ReplyEntry {
    Full(StreamId, Vec<(Bytes, Bytes)>),
    Deleted(StreamId),
}

fn full(e: &StreamEntry) -> ReplyEntry {
    ReplyEntry::Full(e.id, e.fields.clone())
}

/// Parks the connection until one of `keys` gets an entry or the timeout.
fn block_on(conn: &mut Conn, args: &[Bytes], r: &ReadArgs, resolved: Vec<(usize, Bytes)>) {
    let mut args = args.to_vec();
    for (i, id) in resolved {
        args[i] = id;
    }
    conn.block(Blocked::new(args, r.keys.clone(), r.block.unwrap_or(0)));
}

fn xread(conn: &mut Conn, args: &[Bytes]) {
    let Some(r) = parse_read(conn, args, 1, false) else {
        return;
    };
    let mut db = conn.server.hub.keyspace.lock();
    let mut results = Vec::new();
    let mut resolved = Vec::new();
    for (n, (key, id)) in r.keys.iter().zip(&r.ids).enumerate() {
        let s = match db.stream(key) {
            Err(_) => {
                drop(db);
                return wrongtype(conn);
            }
            Ok(s) => s,
        };
        let after = if &id[..] == b"$" {
            let last = s.as_ref().map_or(StreamId::MIN, |s| s.last_id);
            resolved.push((r.ids_at + n, Bytes::from(last.to_string())));
            last
        } else if &id[..] == b"+" {
            match s.as_ref().and_then(|s| s.last()) {
                Some(e) => e.id.decr().unwrap_or(StreamId::MIN),
                None => StreamId::MAX,
            }
        } else {
            match StreamId::parse(id, 0) {
                Some((id, _)) => id,
                None => {
                    drop(db);
                    return err(conn, INVALID_ID);
                }
            }
        };
        if let Some(s) = s {
            let entries: Vec<ReplyEntry> = s.after(after, r.count).into_iter().map(full).collect();
            if !entries.is_empty() {
                results.push((key.clone(), entries));
            }
        }
    }
    drop(db);
    if !results.is_empty() {
        let mut out = conn.reply();
        write_read_reply(&mut out, &results);
    } else if r.block.is_some() && !conn.in_multi() {
        block_on(conn, args, &r, resolved);
    } else {
        conn.reply().null_array();
    }
}

fn nogroup(conn: &mut Conn, key: &[u8], group: &[u8], tail: &str) {
    let mut msg = b"NOGROUP No such key '".to_vec();
    msg.extend_from_slice(key);
    msg.extend_from_slice(b"' or consumer group '");
    msg.extend_from_slice(group);
    msg.push(b'\'');
    msg.extend_from_slice(tail.as_bytes());
    conn.reply().error_bytes(&msg);
}

fn consumer<'a>(g: &'a mut Group, name: &Bytes, now: u64) -> &'a mut Consumer {
    let c = g.consumers.entry(name.clone()).or_default();
    c.seen_time = now;
    c
}

fn xreadgroup(conn: &mut Conn, args: &[Bytes]) {
    if !eq(&args[1], "GROUP") {
        return err(conn, SYNTAX);
    }
    let (group, cname) = (args[2].clone(), args[3].clone());
    let Some(r) = parse_read(conn, args, 4, true) else {
        return;
    };
    for id in &r.ids {
        if &id[..] == b"$" {
            return err(
                conn,
                "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
            );
        }
        if &id[..] != b">" && StreamId::parse(id, 0).is_none() {
            return err(conn, INVALID_ID);
        }
    }
    let now = now_ms();
    let mut db = conn.server.hub.keyspace.lock();
    // Check every key and group first, as Redis does.
    for key in &r.keys {
        match db.stream(key) {
            Err(_) => {
                drop(db);
                return wrongtype(conn);
            }
            Ok(Some(s)) if s.groups.contains_key(&group) => {}
            Ok(_) => {
                drop(db);
                return nogroup(conn, key, &group, " in XREADGROUP with GROUP option");
            }
        }
    }
    let mut results = Vec::new();
    let mut served = false;
    for (key, id) in r.keys.iter().zip(&r.ids) {
        let entries = db
            .with_stream(key, |s| {
                let mut g = s.groups.remove(&group).expect("checked above");
                let out = read_group(s, &mut g, &cname, id, r.count, r.noack, now);
                s.groups.insert(group.clone(), g);
                out
            })
            .unwrap_or_default();
        // Reading history (an explicit id) answers even when empty; `>`
        // answers only with new entries.
        if &id[..] != b">" || !entries.is_empty() {
            served = true;
            results.push((key.clone(), entries));
        }
    }
    drop(db);
    if served {
        let mut out = conn.reply();
        write_read_reply(&mut out, &results);
    } else if r.block.is_some() && !conn.in_multi() {
        block_on(conn, args, &r, Vec::new());
    } else {
        conn.reply().null_array();
    }
}

/// One key of XREADGROUP: new entries (`>`) or the consumer's history.
fn read_group(
    s: &Stream,
    g: &mut Group,
    cname: &Bytes,
    id: &[u8],
    count: usize,
    noack: bool,
    now: u64,
) -> Vec<ReplyEntry> {
    consumer(g, cname, now);
    if id == b">" {
        let entries: Vec<&StreamEntry> = s.after(g.last_id, count);
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            s.advance_group(g, e.id);
            if !noack {
                if let Some(old) = g.pel.get(&e.id).map(|p| p.consumer.clone()) {
                    if let Some(c) = g.consumers.get_mut(&old) {
                        c.pel.remove(&e.id);
                    }
                }
                g.pel.insert(
                    e.id,
                    Pending {
                        consumer: cname.clone(),
                        delivery_time: now,
                        delivery_count: 1,
                    },
                );
                consumer(g, cname, now).pel.insert(e.id);
            }
            out.push(full(e));
        }
        return out;
    }
    let start = StreamId::parse(id, 0).map_or(StreamId::MIN, |(i, _)| i);
    let ids: Vec<StreamId> = g
        .consumers
        .get(cname)
        .map(|c| {
            c.pel
                .range(start..)
                .take(if count == 0 { usize::MAX } else { count })
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(ids.len());
    for pid in ids {
        match s.get(pid) {
            Some(e) => {
                if let Some(p) = g.pel.get_mut(&pid) {
                    p.delivery_time = now;
                    p.delivery_count += 1;
                }
                out.push(full(e));
            }
            None => out.push(ReplyEntry::Deleted(pid)),
        }
    }
    out
}

// ---- XACK / XPENDING / XCLAIM / XAUTOCLAIM ------------------------------------

fn xack(conn: &mut Conn, args: &[Bytes]) {
    let mut ids = Vec::new();
    for a in &args[3..] {
        match parse_id(a) {
            Some(id) => ids.push(id),
            None => return err(conn, INVALID_ID),
        }
    }
    let mut db = conn.server.hub.keyspace.lock();
    let n = match db.stream(&args[1]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => 0,
        Ok(Some(s)) => match s.groups.get_mut(&args[2]) {
            None => 0,
            Some(g) => {
                let mut n = 0;
                for id in ids {
                    if let Some(p) = g.pel.remove(&id) {
                        if let Some(c) = g.consumers.get_mut(&p.consumer) {
                            c.pel.remove(&id);
                        }
                        n += 1;
                    }
                }
                n
            }
        },
    };
    drop(db);
    conn.reply().int(n);
}

/// Runs `f` on a stream's group, or replies WRONGTYPE / NOGROUP.
fn with_group<R>(
    conn: &mut Conn,
    key: &Bytes,
    group: &Bytes,
    tail: &str,
    f: impl FnOnce(&Stream, &mut Group) -> R,
) -> Option<R> {
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    match db.stream(key) {
        Err(_) => {
            drop(db);
            wrongtype(conn);
            return None;
        }
        Ok(Some(s)) if s.groups.contains_key(group) => {}
        Ok(_) => {
            drop(db);
            nogroup(conn, key, group, tail);
            return None;
        }
    }
    db.with_stream(key, |s| {
        let mut g = s.groups.remove(group)?;
        let r = f(s, &mut g);
        s.groups.insert(group.clone(), g);
        Some(r)
    })
    .flatten()
}

fn xpending(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (args[1].clone(), args[2].clone());
    let now = now_ms();
    let mut i = 3;
    let mut min_idle = None;
    if args.len() > 3 && eq(&args[3], "IDLE") {
        match args.get(4).and_then(|a| parse_i64(a)) {
            Some(n) => min_idle = Some(n.max(0) as u64),
            None => return err(conn, if args.len() > 4 { NOT_INT } else { SYNTAX }),
        }
        i = 5;
    }
    let extended = args.len() > i;
    let mut range = None;
    if extended {
        if args.len() < i + 3 || args.len() > i + 4 {
            return err(conn, SYNTAX);
        }
        let (Some(start), Some(end)) = (
            parse_bound(&args[i], true),
            parse_bound(&args[i + 1], false),
        ) else {
            return err(conn, INVALID_ID);
        };
        let count = match parse_i64(&args[i + 2]) {
            Some(n) => n.max(0) as usize,
            None => return err(conn, NOT_INT),
        };
        range = Some((start, end, count, args.get(i + 3).cloned()));
    } else if min_idle.is_some() {
        return err(conn, SYNTAX);
    }
    let resp3 = conn.resp3;
    let mut buf = bytes::BytesMut::new();
    let done = with_group(conn, &key, &group, "", |_, g| {
        let mut out = Out {
            buf: &mut buf,
            resp3,
        };
        match &range {
            None => {
                out.array(4);
                out.int(g.pel.len() as i64);
                if g.pel.is_empty() {
                    out.null();
                    out.null();
                    out.null_array();
                    return;
                }
                write_id(&mut out, *g.pel.keys().next().expect("non-empty"));
                write_id(&mut out, *g.pel.keys().next_back().expect("non-empty"));
                let per: Vec<(&Bytes, usize)> = g
                    .consumers
                    .iter()
                    .filter(|(_, c)| !c.pel.is_empty())
                    .map(|(n, c)| (n, c.pel.len()))
                    .collect();
                out.array(per.len());
                for (n, c) in per {
                    out.array(2);
                    out.bulk(n);
                    out.bulk(c.to_string().as_bytes());
                }
            }
            Some((start, end, count, cname)) => {
                let rows: Vec<(&StreamId, &Pending)> = if *start > *end {
                    Vec::new()
                } else {
                    g.pel
                        .range(*start..=*end)
                        .filter(|(_, p)| cname.as_ref().is_none_or(|c| p.consumer == c))
                        .filter(|(_, p)| {
                            min_idle.is_none_or(|m| now.saturating_sub(p.delivery_time) >= m)
                        })
                        .take(*count)
                        .collect()
                };
                out.array(rows.len());
                for (id, p) in rows {
                    out.array(4);
                    write_id(&mut out, *id);
                    out.bulk(&p.consumer);
                    out.int(now.saturating_sub(p.delivery_time) as i64);
                    out.int(p.delivery_count as i64);
                }
            }
        }
    });
    if done.is_some() {
        conn.out.extend_from_slice(&buf);
    }
}

struct ClaimOpts {
    idle: Option<u64>,
    time: Option<u64>,
    retrycount: Option<u64>,
    force: bool,
    justid: bool,
}

/// Assigns `id` to `cname`; returns false if the entry is gone from the
/// stream (it is then dropped from the PEL, as Redis 7 does).
fn claim_one(
    s: &Stream,
    g: &mut Group,
    id: StreamId,
    cname: &Bytes,
    now: u64,
    o: &ClaimOpts,
) -> bool {
    if s.get(id).is_none() {
        if let Some(p) = g.pel.remove(&id) {
            if let Some(c) = g.consumers.get_mut(&p.consumer) {
                c.pel.remove(&id);
            }
        }
        return false;
    }
    let prev = g.pel.get(&id).map(|p| p.consumer.clone());
    if let Some(prev) = &prev {
        if let Some(c) = g.consumers.get_mut(prev) {
            c.pel.remove(&id);
        }
    }
    let p = g.pel.entry(id).or_insert(Pending {
        consumer: cname.clone(),
        delivery_time: now,
        delivery_count: 0,
    });
    p.consumer = cname.clone();
    p.delivery_time = match (o.idle, o.time) {
        (Some(idle), _) => now.saturating_sub(idle),
        (None, Some(t)) => t,
        _ => now,
    };
    if let Some(rc) = o.retrycount {
        p.delivery_count = rc;
    } else if !o.justid {
        p.delivery_count += 1;
    }
    consumer(g, cname, now).pel.insert(id);
    true
}

fn xclaim(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (args[1].clone(), args[2].clone(), args[3].clone());
    let min_idle = match parse_i64(&args[4]) {
        Some(n) => n.max(0) as u64,
        None => return err(conn, "ERR Invalid min-idle-time argument for XCLAIM"),
    };
    let mut ids = Vec::new();
    let mut i = 5;
    while i < args.len() {
        match parse_id(&args[i]) {
            Some(id) => ids.push(id),
            None => break,
        }
        i += 1;
    }
    let mut o = ClaimOpts {
        idle: None,
        time: None,
        retrycount: None,
        force: false,
        justid: false,
    };
    let now = now_ms();
    while i < args.len() {
        let a = &args[i];
        let num = |j: usize| args.get(j).and_then(|v| parse_i64(v));
        if eq(a, "FORCE") {
            o.force = true;
        } else if eq(a, "JUSTID") {
            o.justid = true;
        } else if eq(a, "IDLE") && i + 1 < args.len() {
            match num(i + 1) {
                Some(n) => o.idle = Some(n.max(0) as u64),
                None => return err(conn, "ERR Invalid IDLE option argument for XCLAIM"),
            }
            i += 1;
        } else if eq(a, "TIME") && i + 1 < args.len() {
            match num(i + 1) {
                Some(n) => o.time = Some(n.max(0) as u64),
                None => return err(conn, "ERR Invalid TIME option argument for XCLAIM"),
            }
            i += 1;
        } else if eq(a, "RETRYCOUNT") && i + 1 < args.len() {
            match num(i + 1) {
                Some(n) => o.retrycount = Some(n.max(0) as u64),
                None => return err(conn, "ERR Invalid RETRYCOUNT option argument for XCLAIM"),
            }
            i += 1;
        } else if eq(a, "LASTID") && i + 1 < args.len() {
            if parse_id(&args[i + 1]).is_none() {
                return err(conn, INVALID_ID);
            }
            i += 1;
        } else {
            let mut msg = b"ERR Unrecognized XCLAIM option '".to_vec();
            msg.extend_from_slice(a);
            msg.push(b'\'');
            conn.reply().error_bytes(&msg);
            return;
        }
        i += 1;
    }
    let lastid = args
        .windows(2)
        .skip(5)
        .find(|w| eq(&w[0], "LASTID"))
        .and_then(|w| parse_id(&w[1]));
    let resp3 = conn.resp3;
    let mut buf = bytes::BytesMut::new();
    let done = with_group(conn, &key, &group, "", |s, g| {
        if let Some(l) = lastid {
            if l > g.last_id {
                g.last_id = l;
            }
        }
        let mut claimed: Vec<ReplyEntry> = Vec::new();
        let mut claimed_ids = Vec::new();
        for id in &ids {
            let idle_ok = match g.pel.get(id) {
                Some(p) => now.saturating_sub(p.delivery_time) >= min_idle,
                None => o.force && s.get(*id).is_some(),
            };
            if !idle_ok {
                continue;
            }
            if claim_one(s, g, *id, &cname, now, &o) {
                if o.justid {
                    claimed_ids.push(*id);
                } else if let Some(e) = s.get(*id) {
                    claimed.push(full(e));
                }
            }
        }
        let mut out = Out {
            buf: &mut buf,
            resp3,
        };
        if o.justid {
            out.array(claimed_ids.len());
            for id in claimed_ids {
                write_id(&mut out, id);
            }
        } else {
            write_reply_entries(&mut out, &claimed);
        }
    });
    if done.is_some() {
        conn.out.extend_from_slice(&buf);
    }
}

fn write_reply_entries(out: &mut Out<'_>, entries: &[ReplyEntry]) {
    out.array(entries.len());
    for e in entries {
        match e {
            ReplyEntry::Full(id, fields) => {
                out.array(2);
                write_id(out, *id);
                out.array(fields.len() * 2);
                for (f, v) in fields {
                    out.bulk(f);
                    out.bulk(v);
                }
            }
            ReplyEntry::Deleted(id) => {
                out.array(2);
                write_id(out, *id);
                out.null_array();
            }
        }
    }
}

fn xautoclaim(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (args[1].clone(), args[2].clone(), args[3].clone());
    let min_idle = match parse_i64(&args[4]) {
        Some(n) => n.max(0) as u64,
        None => return err(conn, "ERR Invalid min-idle-time argument for XAUTOCLAIM"),
    };
    let Some(start) = parse_bound(&args[5], true) else {
        return err(conn, INVALID_ID);
    };
    let mut count = 100usize;
    let mut justid = false;
    let mut i = 6;
    while i < args.len() {
        if eq(&args[i], "COUNT") && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(n) if (1..=i64::MAX / 10).contains(&n) => count = n as usize,
                _ => return err(conn, "ERR COUNT must be > 0"),
            }
            i += 2;
        } else if eq(&args[i], "JUSTID") {
            justid = true;
            i += 1;
        } else {
            return err(conn, SYNTAX);
        }
    }
    let now = now_ms();
    let o = ClaimOpts {
        idle: None,
        time: None,
        retrycount: None,
        force: false,
        justid,
    };
    let resp3 = conn.resp3;
    let mut buf = bytes::BytesMut::new();
    let done = with_group(conn, &key, &group, "", |s, g| {
        let mut claimed = Vec::new();
        let mut claimed_ids = Vec::new();
        let mut deleted = Vec::new();
        let mut next = StreamId::MIN;
        // Redis scans at most count * 10 PEL entries.
        let mut budget = count * 10;
        let candidates: Vec<StreamId> = g.pel.range(start..).map(|(id, _)| *id).collect();
        let mut it = candidates.into_iter();
        let mut done_count = 0;
        loop {
            if done_count >= count || budget == 0 {
                if let Some(id) = it.next() {
                    next = id;
                }
                break;
            }
            let Some(id) = it.next() else { break };
            budget -= 1;
            let idle = g
                .pel
                .get(&id)
                .map_or(0, |p| now.saturating_sub(p.delivery_time));
            if idle < min_idle {
                continue;
            }
            if claim_one(s, g, id, &cname, now, &o) {
                if justid {
                    claimed_ids.push(id);
                } else if let Some(e) = s.get(id) {
                    claimed.push(full(e));
                }
            } else {
                deleted.push(id);
            }
            done_count += 1;
        }
        let mut out = Out {
            buf: &mut buf,
            resp3,
        };
        out.array(3);
        write_id(&mut out, next);
        if justid {
            out.array(claimed_ids.len());
            for id in claimed_ids {
                write_id(&mut out, id);
            }
        } else {
            write_reply_entries(&mut out, &claimed);
        }
        out.array(deleted.len());
        for id in deleted {
            write_id(&mut out, id);
        }
    });
    if done.is_some() {
        conn.out.extend_from_slice(&buf);
    }
}

// ---- XGROUP -------------------------------------------------------------------

fn entries_read_opt(conn: &mut Conn, args: &[Bytes], at: usize) -> Result<Option<Option<u64>>, ()> {
    match &args[at..] {
        [] => Ok(None),
        [k, v] if eq(k, "ENTRIESREAD") => match parse_i64(v) {
            Some(n) if n >= -1 => Ok(Some(if n < 0 { None } else { Some(n as u64) })),
            Some(_) => {
                err(conn, "ERR value for ENTRIESREAD must be positive or -1");
                Err(())
            }
            None => {
                err(conn, NOT_INT);
                Err(())
            }
        },
        _ => {
            err(conn, SYNTAX);
            Err(())
        }
    }
}

fn xgroup_create(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, id_arg) = (args[2].clone(), args[3].clone(), args[4].clone());
    let mut i = 5;
    let mut mkstream = false;
    if args.get(i).is_some_and(|a| eq(a, "MKSTREAM")) {
        mkstream = true;
        i += 1;
    }
    let Ok(entries_read) = entries_read_opt(conn, args, i) else {
        return;
    };
    let explicit = if &id_arg[..] == b"$" {
        None
    } else {
        match parse_id(&id_arg) {
            Some(id) => Some(id),
            None => return err(conn, INVALID_ID),
        }
    };
    let mut db = conn.server.hub.keyspace.lock();
    match db.stream(&key) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) if !mkstream => {
            drop(db);
            return err(conn, "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.");
        }
        Ok(None) => {
            let _ = db.stream_or_create(&key, false);
        }
        Ok(Some(_)) => {}
    }
    let created = db
        .with_stream(&key, |s| {
            if s.groups.contains_key(&group) {
                return false;
            }
            let last_id = explicit.unwrap_or(s.last_id);
            s.groups.insert(
                group.clone(),
                Group {
                    last_id,
                    entries_read: entries_read.flatten(),
                    pel: Default::default(),
                    consumers: Default::default(),
                },
            );
            true
        })
        .unwrap_or(false);
    drop(db);
    if created {
        conn.reply().simple("OK");
    } else {
        err(conn, "BUSYGROUP Consumer Group name already exists");
    }
}

fn xgroup_setid(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, id_arg) = (args[2].clone(), args[3].clone(), args[4].clone());
    let Ok(entries_read) = entries_read_opt(conn, args, 5) else {
        return;
    };
    let explicit = if &id_arg[..] == b"$" {
        None
    } else {
        match parse_id(&id_arg) {
            Some(id) => Some(id),
            None => return err(conn, INVALID_ID),
        }
    };
    let mut db = conn.server.hub.keyspace.lock();
    let res = match db.stream(&key) {
        Err(_) => Err(WrongType.to_string()),
        Ok(None) => Err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.".into()),
        Ok(Some(s)) => {
            let last = s.last_id;
            match s.groups.get_mut(&group) {
                None => {
                    let mut m = b"NOGROUP No such consumer group '".to_vec();
                    m.extend_from_slice(&group);
                    m.extend_from_slice(b"' for key name '");
                    m.extend_from_slice(&key);
                    m.push(b'\'');
                    Err(String::from_utf8_lossy(&m).into_owned())
                }
                Some(g) => {
                    g.last_id = explicit.unwrap_or(last);
                    g.entries_read = entries_read.flatten();
                    Ok(())
                }
            }
        }
    };
    drop(db);
    match res {
        Ok(()) => conn.reply().simple("OK"),
        Err(e) => err(conn, &e),
    }
}

fn group_op(conn: &mut Conn, key: &Bytes, group: &Bytes, f: impl FnOnce(&mut Group) -> i64) {
    let mut db = conn.server.hub.keyspace.lock();
    let res = match db.stream(key) {
        Err(_) => Err(WrongType.to_string()),
        Ok(None) => Err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.".into()),
        Ok(Some(s)) => match s.groups.get_mut(group) {
            None => {
                let mut m = b"NOGROUP No such consumer group '".to_vec();
                m.extend_from_slice(group);
                m.extend_from_slice(b"' for key name '");
                m.extend_from_slice(key);
                m.push(b'\'');
                Err(String::from_utf8_lossy(&m).into_owned())
            }
            Some(g) => Ok(f(g)),
        },
    };
    drop(db);
    match res {
        Ok(n) => conn.reply().int(n),
        Err(e) => err(conn, &e),
    }
}

fn xgroup_destroy(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (args[2].clone(), args[3].clone());
    let mut db = conn.server.hub.keyspace.lock();
    let res = match db.stream(&key) {
        Err(_) => Err(WrongType.to_string()),
        Ok(None) => Err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.".to_string()),
        Ok(Some(s)) => Ok(s.groups.remove(&group).is_some() as i64),
    };
    drop(db);
    match res {
        Ok(n) => conn.reply().int(n),
        Err(e) => err(conn, &e),
    }
}

fn xgroup_createconsumer(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (args[2].clone(), args[3].clone(), args[4].clone());
    let now = now_ms();
    group_op(conn, &key, &group, |g| {
        if g.consumers.contains_key(&cname) {
            0
        } else {
            consumer(g, &cname, now);
            1
        }
    });
}

fn xgroup_delconsumer(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (args[2].clone(), args[3].clone(), args[4].clone());
    group_op(conn, &key, &group, |g| match g.consumers.remove(&cname) {
        None => 0,
        Some(c) => {
            for id in &c.pel {
                g.pel.remove(id);
            }
            c.pel.len() as i64
        }
    });
}

fn xgroup_help(conn: &mut Conn, _args: &[Bytes]) {
    help_reply(
        conn,
        "XGROUP",
        &[
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
        ],
    );
}

// ---- XINFO --------------------------------------------------------------------

fn no_such_key(conn: &mut Conn) {
    err(conn, "ERR no such key");
}

fn xinfo_stream(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        let mut msg = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
        msg.extend_from_slice(&args[1]);
        msg.extend_from_slice(b"'. Try XINFO HELP.");
        return conn.reply().error_bytes(&msg);
    }
    let mut db = conn.server.hub.keyspace.lock();
    let s = match db.stream(&args[2]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => {
            drop(db);
            return no_such_key(conn);
        }
        Ok(Some(s)) => s.clone(),
    };
    drop(db);
    let mut out = conn.reply();
    out.map(10);
    out.bulk(b"length");
    out.int(s.len() as i64);
    out.bulk(b"radix-tree-keys");
    out.int(s.node_count() as i64);
    out.bulk(b"radix-tree-nodes");
    out.int(s.node_count() as i64 + 1);
    out.bulk(b"last-generated-id");
    write_id(&mut out, s.last_id);
    out.bulk(b"max-deleted-entry-id");
    write_id(&mut out, s.max_deleted_id);
    out.bulk(b"entries-added");
    out.int(s.entries_added as i64);
    out.bulk(b"recorded-first-entry-id");
    write_id(&mut out, s.first_id);
    out.bulk(b"groups");
    out.int(s.groups.len() as i64);
    out.bulk(b"first-entry");
    match s.first() {
        Some(e) => write_entry(&mut out, e),
        None => out.null(),
    }
    out.bulk(b"last-entry");
    match s.last() {
        Some(e) => write_entry(&mut out, e),
        None => out.null(),
    }
}

fn xinfo_groups(conn: &mut Conn, args: &[Bytes]) {
    let mut db = conn.server.hub.keyspace.lock();
    let s = match db.stream(&args[2]) {
        Err(_) => {
            drop(db);
            return wrongtype(conn);
        }
        Ok(None) => {
            drop(db);
            return no_such_key(conn);
        }
        Ok(Some(s)) => s.clone(),
    };
    drop(db);
    let mut out = conn.reply();
    out.array(s.groups.len());
    for (name, g) in &s.groups {
        out.map(6);
        out.bulk(b"name");
        out.bulk(name);
        out.bulk(b"consumers");
        out.int(g.consumers.len() as i64);
        out.bulk(b"pending");
        out.int(g.pel.len() as i64);
        out.bulk(b"last-delivered-id");
        write_id(&mut out, g.last_id);
        out.bulk(b"entries-read");
        match g.entries_read {
            Some(n) => out.int(n as i64),
            None => out.null(),
        }
        out.bulk(b"lag");
        match s.group_lag(g) {
            Some(n) => out.int(n as i64),
            None => out.null(),
        }
    }
}

fn xinfo_consumers(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (args[2].clone(), args[3].clone());
    let now = now_ms();
    let mut db = conn.server.hub.keyspace.lock();
    let res = match db.stream(&key) {
        Err(_) => Err(WrongType.to_string()),
        Ok(None) => Err("ERR no such key".to_string()),
        Ok(Some(s)) => match s.groups.get(&group) {
            None => {
                let mut m = b"NOGROUP No such consumer group '".to_vec();
                m.extend_from_slice(&group);
                m.extend_from_slice(b"' for key name '");
                m.extend_from_slice(&key);
                m.push(b'\'');
                Err(String::from_utf8_lossy(&m).into_owned())
            }
            Some(g) => Ok(g
                .consumers
                .iter()
                .map(|(n, c)| (n.clone(), c.pel.len(), now.saturating_sub(c.seen_time)))
                .collect::<Vec<_>>()),
        },
    };
    drop(db);
    match res {
        Err(e) => err(conn, &e),
        Ok(rows) => {
            let mut out = conn.reply();
            out.array(rows.len());
            for (n, pending, idle) in rows {
                out.map(3);
                out.bulk(b"name");
                out.bulk(&n);
                out.bulk(b"pending");
                out.int(pending as i64);
                out.bulk(b"idle");
                out.int(idle as i64);
            }
        }
    }
}

fn xinfo_help(conn: &mut Conn, _args: &[Bytes]) {
    help_reply(
        conn,
        "XINFO",
        &[
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
        ],
    );
}
