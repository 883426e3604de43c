//! XADD, XTRIM, XRANGE, XREVRANGE, XLEN, XDEL: appending, trimming and
//! reading a stream by id.

use super::*;
use crate::hub::data::{XAdd, XRange};

// ---- XADD / XTRIM ---------------------------------------------------------

/// What XADD/XTRIM options parse into.
pub(super) struct AddTrim {
    trim: Option<TrimArgs>,
    nomkstream: bool,
    /// XADD: index of the id argument.
    id_at: usize,
}

/// Redis's `streamParseAddOrTrimArgsOrReply`: options from `args[2]` on,
/// for XADD up to the id. Replies the error and returns `None` on failure.
pub(super) fn parse_add_trim(conn: &mut Conn, args: &[Bytes], xadd: bool) -> Option<AddTrim> {
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

pub(super) fn xadd(conn: &mut Conn, args: &[Bytes]) {
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
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        err(conn, "ERR wrong number of arguments for 'xadd' command");
        return;
    }
    let fields: Vec<(Bytes, Bytes)> = rest
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let add = XAdd {
        id: how,
        trim,
        nomkstream,
    };
    let hub = conn.server.hub.clone();
    match hub.xadd(&key, &add, fields) {
        Ok(Some(id)) => conn.reply().bulk(id.to_string().as_bytes()),
        Ok(None) => conn.reply().null(),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn xtrim(conn: &mut Conn, args: &[Bytes]) {
    let Some(AddTrim { trim: Some(t), .. }) = parse_add_trim(conn, args, false) else {
        return;
    };
    match conn.server.hub.xtrim(&args[1], &t) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

// ---- XRANGE / XLEN / XDEL ---------------------------------------------------

pub(super) fn range_generic(conn: &mut Conn, args: &[Bytes], rev: bool) {
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
    let hub = conn.server.hub.clone();
    let count = match count {
        // A count of 0 or less answers a nil array, once the key's type
        // is known to be right.
        Some(c) if c <= 0 => {
            return match hub.xlen(&args[1]) {
                Ok(_) => conn.reply().null_array(),
                Err(e) => fail(conn, e),
            };
        }
        c => c.unwrap_or(0) as usize,
    };
    let r = XRange {
        start,
        end,
        count,
        rev,
    };
    let mut out = Out {
        buf: &mut conn.out,
        resp3: conn.resp3,
    };
    // Encoded by the hub's callback, straight from the stream, while the
    // hub holds the data (see `Hub::xrange`).
    if let Err(e) = hub.xrange(&args[1], &r, |entries| write_entries(&mut out, entries)) {
        fail(conn, e);
    }
}

pub(super) fn xrange(conn: &mut Conn, args: &[Bytes]) {
    range_generic(conn, args, false)
}

pub(super) fn xrevrange(conn: &mut Conn, args: &[Bytes]) {
    range_generic(conn, args, true)
}

pub(super) fn xlen(conn: &mut Conn, args: &[Bytes]) {
    match conn.server.hub.xlen(&args[1]) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn xdel(conn: &mut Conn, args: &[Bytes]) {
    let mut ids = Vec::new();
    for a in &args[2..] {
        match parse_id(a) {
            Some(id) => ids.push(id),
            None => return err(conn, INVALID_ID),
        }
    }
    match conn.server.hub.xdel(&args[1], &ids) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}
