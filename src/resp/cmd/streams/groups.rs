//! Consumer groups: XACK, XPENDING, XCLAIM, XAUTOCLAIM and XGROUP.

use super::*;

// ---- XACK / XPENDING / XCLAIM / XAUTOCLAIM ------------------------------------

pub(super) fn xack(conn: &mut Conn, args: &[Bytes]) {
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
pub(super) fn with_group<R>(
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

pub(super) fn xpending(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) struct ClaimOpts {
    idle: Option<u64>,
    time: Option<u64>,
    retrycount: Option<u64>,
    force: bool,
    justid: bool,
}

/// Assigns `id` to `cname`; returns false if the entry is gone from the
/// stream (it is then dropped from the PEL, as Redis 7 does).
pub(super) fn claim_one(
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

pub(super) fn xclaim(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn write_reply_entries(out: &mut Out<'_>, entries: &[ReplyEntry]) {
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

pub(super) fn xautoclaim(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn entries_read_opt(
    conn: &mut Conn,
    args: &[Bytes],
    at: usize,
) -> Result<Option<Option<u64>>, ()> {
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

pub(super) fn xgroup_create(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn xgroup_setid(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn group_op(
    conn: &mut Conn,
    key: &Bytes,
    group: &Bytes,
    f: impl FnOnce(&mut Group) -> i64,
) {
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

pub(super) fn xgroup_destroy(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn xgroup_createconsumer(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn xgroup_delconsumer(conn: &mut Conn, args: &[Bytes]) {
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
