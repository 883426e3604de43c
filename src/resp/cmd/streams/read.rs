//! XREAD and XREADGROUP: their grammar (which also gives dispatch their
//! keys), replies, and blocking.

use super::*;
use crate::hub::data::{GroupFrom, ReadFrom};

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
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
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
pub(super) fn write_read_reply(out: &mut Out<'_>, results: &[(Bytes, Vec<ReadEntry>)]) {
    out.map_or_array(results.len());
    for (k, entries) in results {
        if !out.resp3 {
            out.array(2);
        }
        out.bulk(k);
        write_read_entries(out, entries);
    }
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
    let from: Vec<ReadFrom> = r
        .ids
        .iter()
        .map(|id| match &id[..] {
            b"$" => ReadFrom::Last,
            b"+" => ReadFrom::LastEntry,
            id => StreamId::parse(id, 0).map_or(ReadFrom::Invalid, |(id, _)| ReadFrom::After(id)),
        })
        .collect();
    let read = match conn.server.hub.xread(&r.keys, &from, r.count) {
        Ok(read) => read,
        Err(e) => return fail(conn, e),
    };
    if !read.entries.is_empty() {
        let mut out = conn.reply();
        write_read_reply(&mut out, &read.entries);
    } else if r.block.is_some() && !conn.in_multi() {
        let resolved = read
            .resolved
            .into_iter()
            .map(|(n, id)| (r.ids_at + n, Bytes::from(id.to_string())))
            .collect();
        block_on(conn, args, &r, resolved);
    } else {
        conn.reply().null_array();
    }
}

pub(super) fn xreadgroup(conn: &mut Conn, args: &[Bytes]) {
    if !eq(&args[1], "GROUP") {
        return err(conn, SYNTAX);
    }
    let (group, cname) = (&args[2], &args[3]);
    let Some(r) = parse_read(conn, args, 4, true) else {
        return;
    };
    let mut from = Vec::with_capacity(r.ids.len());
    for id in &r.ids {
        if &id[..] == b"$" {
            return err(
                conn,
                "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
            );
        }
        if &id[..] == b">" {
            from.push(GroupFrom::New);
            continue;
        }
        match StreamId::parse(id, 0) {
            Some((id, _)) => from.push(GroupFrom::Pending(id)),
            None => return err(conn, INVALID_ID),
        }
    }
    let hub = conn.server.hub.clone();
    match hub.xreadgroup(group, cname, &r.keys, &from, r.count, r.noack) {
        Err((i, e)) => {
            let tail = " in XREADGROUP with GROUP option";
            group_fail(conn, e, &r.keys[i], group, tail)
        }
        Ok(Some(results)) => {
            let mut out = conn.reply();
            write_read_reply(&mut out, &results);
        }
        Ok(None) if r.block.is_some() && !conn.in_multi() => block_on(conn, args, &r, Vec::new()),
        Ok(None) => conn.reply().null_array(),
    }
}
