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

pub(super) fn xinfo_groups(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn xinfo_consumers(conn: &mut Conn, args: &[Bytes]) {
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
