//! Stream commands: XADD, XRANGE, XREVRANGE, XLEN, XREAD, XDEL, XTRIM,
//! XINFO, XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, with
//! Redis 7.0's replies and error texts. These files parse and reply; the
//! hub applies (`hub::data::streams`: consumer groups and their pending
//! lists included). XREAD and XREADGROUP may block: they then park the
//! connection (see `Conn::blocked`) and are retried when an XADD signals
//! one of their keys.

mod add;
mod groups;
mod info;
mod read;

use add::*;
use groups::*;
use info::*;
pub(super) use read::read_key_positions;
use read::*;

use bytes::Bytes;

use super::{
    help_reply, Command, KeySpec, KEY1_RO, KEY1_RW, KEY1_WO, RO, RW, SUBKEY_RO, SUBKEY_WO,
};
use crate::hub::data::{DataError, GroupError, ReadEntry, TrimArgs};
use crate::hub::stream::{NewId, StreamEntry, StreamId, Trim};
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

use crate::hub::data::INVALID_ID;
const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";

fn err(conn: &mut Conn, msg: &str) {
    conn.reply().error(msg);
}

/// Replies the error of a failed hub operation.
fn fail(conn: &mut Conn, e: DataError) {
    conn.reply().error(&e.to_string());
}

fn wrongtype(conn: &mut Conn) {
    fail(conn, DataError::WrongType);
}

/// `NOGROUP No such key 'K' or consumer group 'G'` and `tail` (XREADGROUP,
/// XPENDING, XCLAIM, XAUTOCLAIM), quoting the client's bytes.
fn nogroup(conn: &mut Conn, key: &[u8], group: &[u8], tail: &str) {
    let mut msg = b"NOGROUP No such key '".to_vec();
    msg.extend_from_slice(key);
    msg.extend_from_slice(b"' or consumer group '");
    msg.extend_from_slice(group);
    msg.push(b'\'');
    msg.extend_from_slice(tail.as_bytes());
    conn.reply().error_bytes(&msg);
}

/// The error of a group operation of XREADGROUP, XPENDING, XCLAIM or
/// XAUTOCLAIM.
fn group_fail(conn: &mut Conn, e: GroupError, key: &[u8], group: &[u8], tail: &str) {
    match e {
        GroupError::WrongType => wrongtype(conn),
        GroupError::NoKey | GroupError::NoGroup | GroupError::Exists => {
            nogroup(conn, key, group, tail)
        }
    }
}

/// Writes entries as a reply array; deleted ones as `[id, nil]`.
fn write_read_entries(out: &mut Out<'_>, entries: &[ReadEntry]) {
    out.array(entries.len());
    for e in entries {
        match e {
            ReadEntry::Full(id, fields) => {
                out.array(2);
                write_id(out, *id);
                out.array(fields.len() * 2);
                for (f, v) in fields {
                    out.bulk(f);
                    out.bulk(v);
                }
            }
            ReadEntry::Deleted(id) => {
                out.array(2);
                write_id(out, *id);
                out.null_array();
            }
        }
    }
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
