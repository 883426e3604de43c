//! XREAD and XREADGROUP: their grammar (which also gives dispatch their
//! keys), replies, and blocking.

use super::*;

// ---- XREAD / XREADGROUP -------------------------------------------------------

pub(super) struct ReadArgs {
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
pub(super) fn read_grammar(args: &[Bytes], mut i: usize, group: bool) -> Result<ReadArgs, String> {
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
pub(in crate::resp::cmd) fn read_key_positions(
    args: &[Bytes],
    group: bool,
) -> std::ops::Range<usize> {
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

pub(super) fn parse_read(
    conn: &mut Conn,
    args: &[Bytes],
    i: usize,
    group: bool,
) -> Option<ReadArgs> {
    read_grammar(args, i, group)
        .map_err(|msg| err(conn, &msg))
        .ok()
}

/// Writes a (possibly multi-key) read reply: a map in RESP3, an array of
/// `[key, entries]` pairs in RESP2.
pub(super) fn write_read_reply(out: &mut Out<'_>, results: &[(Bytes, Vec<ReplyEntry>)]) {
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

pub(super) enum ReplyEntry {
    Full(StreamId, Vec<(Bytes, Bytes)>),
    Deleted(StreamId),
}

pub(super) fn full(e: &StreamEntry) -> ReplyEntry {
    ReplyEntry::Full(e.id, e.fields.clone())
}

/// Parks the connection until one of `keys` gets an entry or the timeout.
pub(super) fn block_on(
    conn: &mut Conn,
    args: &[Bytes],
    r: &ReadArgs,
    resolved: Vec<(usize, Bytes)>,
) {
    let mut args = args.to_vec();
    for (i, id) in resolved {
        args[i] = id;
    }
    conn.block(Blocked::new(args, r.keys.clone(), r.block.unwrap_or(0)));
}

pub(super) fn xread(conn: &mut Conn, args: &[Bytes]) {
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

pub(super) fn nogroup(conn: &mut Conn, key: &[u8], group: &[u8], tail: &str) {
    let mut msg = b"NOGROUP No such key '".to_vec();
    msg.extend_from_slice(key);
    msg.extend_from_slice(b"' or consumer group '");
    msg.extend_from_slice(group);
    msg.push(b'\'');
    msg.extend_from_slice(tail.as_bytes());
    conn.reply().error_bytes(&msg);
}

pub(super) fn consumer<'a>(g: &'a mut Group, name: &Bytes, now: u64) -> &'a mut Consumer {
    let c = g.consumers.entry(name.clone()).or_default();
    c.seen_time = now;
    c
}

pub(super) fn xreadgroup(conn: &mut Conn, args: &[Bytes]) {
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
pub(super) fn read_group(
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
