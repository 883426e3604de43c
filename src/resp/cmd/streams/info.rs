//! XINFO STREAM, GROUPS, CONSUMERS and HELP.

use super::*;

// ---- XINFO --------------------------------------------------------------------

pub(super) fn no_such_key(conn: &mut Conn) {
    err(conn, "ERR no such key");
}

pub(super) fn xinfo_stream(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        let mut msg = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
        msg.extend_from_slice(&args[1]);
        msg.extend_from_slice(b"'. Try XINFO HELP.");
        return conn.reply().error_bytes(&msg);
    }
    let s = match conn.server.hub.xinfo_stream(&args[2]) {
        Err(e) => return fail(conn, e),
        Ok(None) => return no_such_key(conn),
        Ok(Some(s)) => s,
    };
    let mut out = conn.reply();
    out.map(10);
    out.bulk(b"length");
    out.int(s.length as i64);
    out.bulk(b"radix-tree-keys");
    out.int(s.nodes as i64);
    out.bulk(b"radix-tree-nodes");
    out.int(s.nodes as i64 + 1);
    out.bulk(b"last-generated-id");
    write_id(&mut out, s.last_generated_id);
    out.bulk(b"max-deleted-entry-id");
    write_id(&mut out, s.max_deleted_entry_id);
    out.bulk(b"entries-added");
    out.int(s.entries_added as i64);
    out.bulk(b"recorded-first-entry-id");
    write_id(&mut out, s.recorded_first_entry_id);
    out.bulk(b"groups");
    out.int(s.groups as i64);
    out.bulk(b"first-entry");
    match &s.first_entry {
        Some(e) => write_entry(&mut out, e),
        None => out.null(),
    }
    out.bulk(b"last-entry");
    match &s.last_entry {
        Some(e) => write_entry(&mut out, e),
        None => out.null(),
    }
}

pub(super) fn xinfo_groups(conn: &mut Conn, args: &[Bytes]) {
    let groups = match conn.server.hub.xinfo_groups(&args[2]) {
        Err(e) => return fail(conn, e),
        Ok(None) => return no_such_key(conn),
        Ok(Some(g)) => g,
    };
    let mut out = conn.reply();
    out.array(groups.len());
    for g in groups {
        out.map(6);
        out.bulk(b"name");
        out.bulk(&g.name);
        out.bulk(b"consumers");
        out.int(g.consumers as i64);
        out.bulk(b"pending");
        out.int(g.pending as i64);
        out.bulk(b"last-delivered-id");
        write_id(&mut out, g.last_delivered_id);
        out.bulk(b"entries-read");
        match g.entries_read {
            Some(n) => out.int(n as i64),
            None => out.null(),
        }
        out.bulk(b"lag");
        match g.lag {
            Some(n) => out.int(n as i64),
            None => out.null(),
        }
    }
}

pub(super) fn xinfo_consumers(conn: &mut Conn, args: &[Bytes]) {
    let (key, group) = (&args[2], &args[3]);
    let rows = match conn.server.hub.xinfo_consumers(key, group) {
        Ok(rows) => rows,
        Err(GroupError::NoKey) => return no_such_key(conn),
        Err(GroupError::NoGroup) => return err(conn, &no_such_group(key, group)),
        Err(GroupError::WrongType | GroupError::Exists) => return wrongtype(conn),
    };
    let mut out = conn.reply();
    out.array(rows.len());
    for c in rows {
        out.map(3);
        out.bulk(b"name");
        out.bulk(&c.name);
        out.bulk(b"pending");
        out.int(c.pending as i64);
        out.bulk(b"idle");
        out.int(c.idle as i64);
    }
}

pub(super) fn xinfo_help(conn: &mut Conn, _args: &[Bytes]) {
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
