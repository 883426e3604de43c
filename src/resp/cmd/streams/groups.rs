//! Consumer groups: XACK, XPENDING, XCLAIM, XAUTOCLAIM and XGROUP.

use super::*;
use crate::hub::data::{AutoClaim, Claim, Claimed, PendingQuery};

// ---- XACK / XPENDING / XCLAIM / XAUTOCLAIM ------------------------------------

pub(super) fn xack(conn: &mut Conn, args: &[Bytes]) {
    let mut ids = Vec::new();
    for a in &args[3..] {
        match parse_id(a) {
            Some(id) => ids.push(id),
            None => return err(conn, INVALID_ID),
        }
    }
    match conn.server.hub.xack(&args[1], &args[2], &ids) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn xpending(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (&args[1], &args[2]);
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
    let hub = conn.server.hub.clone();
    let Some((start, end, count, consumer)) = range else {
        let sum = match hub.xpending_summary(key, group) {
            Ok(sum) => sum,
            Err(e) => return group_fail(conn, e, key, group, ""),
        };
        let mut out = conn.reply();
        out.array(4);
        out.int(sum.count as i64);
        let Some((first, last)) = sum.bounds else {
            out.null();
            out.null();
            out.null_array();
            return;
        };
        write_id(&mut out, first);
        write_id(&mut out, last);
        out.array(sum.consumers.len());
        for (n, c) in sum.consumers {
            out.array(2);
            out.bulk(&n);
            out.bulk(c.to_string().as_bytes());
        }
        return;
    };
    let q = PendingQuery {
        start,
        end,
        count,
        consumer,
        min_idle,
    };
    let rows = match hub.xpending_range(key, group, &q) {
        Ok(rows) => rows,
        Err(e) => return group_fail(conn, e, key, group, ""),
    };
    let mut out = conn.reply();
    out.array(rows.len());
    for row in rows {
        out.array(4);
        write_id(&mut out, row.id);
        out.bulk(&row.consumer);
        out.int(row.idle as i64);
        out.int(row.deliveries as i64);
    }
}

pub(super) fn xclaim(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (&args[1], &args[2], &args[3]);
    let min_idle = match parse_i64(&args[4]) {
        Some(n) => n.max(0) as u64,
        None => return err(conn, "ERR Invalid min-idle-time argument for XCLAIM"),
    };
    let mut c = Claim {
        min_idle,
        ..Claim::default()
    };
    let mut i = 5;
    while i < args.len() {
        match parse_id(&args[i]) {
            Some(id) => c.ids.push(id),
            None => break,
        }
        i += 1;
    }
    let o = &mut c.opts;
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
            match parse_id(&args[i + 1]) {
                // The first LASTID counts.
                Some(id) => c.lastid = c.lastid.or(Some(id)),
                None => return err(conn, INVALID_ID),
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
    let hub = conn.server.hub.clone();
    match hub.xclaim(key, group, cname, &c) {
        Ok(claimed) => write_claimed(&mut conn.reply(), &claimed),
        Err(e) => group_fail(conn, e, key, group, ""),
    }
}

/// Claimed entries, or their ids (JUSTID).
fn write_claimed(out: &mut Out<'_>, claimed: &Claimed) {
    match claimed {
        Claimed::Ids(ids) => {
            out.array(ids.len());
            for id in ids {
                write_id(out, *id);
            }
        }
        Claimed::Entries(entries) => write_read_entries(out, entries),
    }
}

pub(super) fn xautoclaim(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (&args[1], &args[2], &args[3]);
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
    let a = AutoClaim {
        min_idle,
        start,
        count,
        justid,
    };
    let hub = conn.server.hub.clone();
    let r = match hub.xautoclaim(key, group, cname, &a) {
        Ok(r) => r,
        Err(e) => return group_fail(conn, e, key, group, ""),
    };
    let mut out = conn.reply();
    out.array(3);
    write_id(&mut out, r.next);
    write_claimed(&mut out, &r.claimed);
    out.array(r.deleted.len());
    for id in r.deleted {
        write_id(&mut out, id);
    }
}

// ---- XGROUP -------------------------------------------------------------------

const XGROUP_NO_KEY: &str = "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.";

/// `NOGROUP No such consumer group 'G' for key name 'K'` (XGROUP, XINFO
/// CONSUMERS).
pub(super) fn no_such_group(key: &[u8], group: &[u8]) -> String {
    let mut m = b"NOGROUP No such consumer group '".to_vec();
    m.extend_from_slice(group);
    m.extend_from_slice(b"' for key name '");
    m.extend_from_slice(key);
    m.push(b'\'');
    String::from_utf8_lossy(&m).into_owned()
}

/// The error of an XGROUP subcommand.
fn xgroup_fail(conn: &mut Conn, e: GroupError, key: &[u8], group: &[u8]) {
    match e {
        GroupError::WrongType => wrongtype(conn),
        GroupError::NoKey => err(conn, XGROUP_NO_KEY),
        GroupError::NoGroup => err(conn, &no_such_group(key, group)),
        GroupError::Exists => err(conn, "BUSYGROUP Consumer Group name already exists"),
    }
}

/// `[ENTRIESREAD n]` from `args[at..]`: `Ok(None)` when absent or -1.
pub(super) fn entries_read_opt(
    conn: &mut Conn,
    args: &[Bytes],
    at: usize,
) -> Result<Option<u64>, ()> {
    match &args[at..] {
        [] => Ok(None),
        [k, v] if eq(k, "ENTRIESREAD") => match parse_i64(v) {
            Some(n) if n >= -1 => Ok(u64::try_from(n).ok()),
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

/// A group's id argument: `$` (`None`: the stream's last id) or an id.
fn group_id(conn: &mut Conn, arg: &[u8]) -> Result<Option<StreamId>, ()> {
    if arg == b"$" {
        return Ok(None);
    }
    match parse_id(arg) {
        Some(id) => Ok(Some(id)),
        None => {
            err(conn, INVALID_ID);
            Err(())
        }
    }
}

pub(super) fn xgroup_create(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (&args[2], &args[3]);
    let mut i = 5;
    let mut mkstream = false;
    if args.get(i).is_some_and(|a| eq(a, "MKSTREAM")) {
        mkstream = true;
        i += 1;
    }
    let Ok(entries_read) = entries_read_opt(conn, args, i) else {
        return;
    };
    let Ok(id) = group_id(conn, &args[4]) else {
        return;
    };
    let hub = conn.server.hub.clone();
    match hub.xgroup_create(key, group, id, mkstream, entries_read) {
        Ok(()) => conn.reply().simple("OK"),
        Err(e) => xgroup_fail(conn, e, key, group),
    }
}

pub(super) fn xgroup_setid(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (&args[2], &args[3]);
    let Ok(entries_read) = entries_read_opt(conn, args, 5) else {
        return;
    };
    let Ok(id) = group_id(conn, &args[4]) else {
        return;
    };
    let hub = conn.server.hub.clone();
    match hub.xgroup_setid(key, group, id, entries_read) {
        Ok(()) => conn.reply().simple("OK"),
        Err(e) => xgroup_fail(conn, e, key, group),
    }
}

pub(super) fn xgroup_destroy(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (&args[2], &args[3]);
    let hub = conn.server.hub.clone();
    match hub.xgroup_destroy(key, group) {
        Ok(gone) => conn.reply().int(gone as i64),
        Err(e) => xgroup_fail(conn, e, key, group),
    }
}

pub(super) fn xgroup_createconsumer(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (&args[2], &args[3], &args[4]);
    let hub = conn.server.hub.clone();
    match hub.xgroup_createconsumer(key, group, cname) {
        Ok(created) => conn.reply().int(created as i64),
        Err(e) => xgroup_fail(conn, e, key, group),
    }
}

pub(super) fn xgroup_delconsumer(conn: &mut Conn, args: &[Bytes]) {
    let (key, group, cname) = (&args[2], &args[3], &args[4]);
    let hub = conn.server.hub.clone();
    match hub.xgroup_delconsumer(key, group, cname) {
        Ok(pending) => conn.reply().int(pending as i64),
        Err(e) => xgroup_fail(conn, e, key, group),
    }
}

pub(super) fn xgroup_help(conn: &mut Conn, _args: &[Bytes]) {
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
