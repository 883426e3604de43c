//! Reads by member (ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCARD), ZRANDMEMBER
//! and ZSCAN.

use super::*;

// ---- reads by member -------------------------------------------------------------

/// The value of a hub read, or `None` once its error is replied.
pub(super) fn answer<R>(conn: &mut Conn, r: Result<R, DataError>) -> Option<R> {
    r.map_err(|e| fail(conn, e)).ok()
}

pub(super) fn zscore(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.zscore(&args[1], &args[2]);
    if let Some(s) = answer(conn, r) {
        let mut out = conn.reply();
        match s {
            Some(v) => write_score(&mut out, v),
            None => out.null(),
        }
    }
}

pub(super) fn zmscore(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.zmscore(&args[1], &args[2..]);
    if let Some(v) = answer(conn, r) {
        let mut out = conn.reply();
        out.array(v.len());
        for s in v {
            match s {
                Some(s) => write_score(&mut out, s),
                None => out.null(),
            }
        }
    }
}

pub(super) fn rank_generic(conn: &mut Conn, args: &[Bytes], rev: bool) {
    let withscore = match args.len() {
        3 => false,
        4 if args[3].eq_ignore_ascii_case(b"WITHSCORE") => true,
        4 => return err(conn, SYNTAX),
        _ => {
            let name = if rev { "zrevrank" } else { "zrank" };
            return err(
                conn,
                &format!("ERR wrong number of arguments for '{name}' command"),
            );
        }
    };
    let r = conn.server.hub.zrank(&args[1], &args[2], rev);
    if let Some(r) = answer(conn, r) {
        let mut out = conn.reply();
        match (r, withscore) {
            (None, _) => out.null(),
            (Some((r, _)), false) => out.int(r as i64),
            (Some((r, s)), true) => {
                out.array(2);
                out.int(r as i64);
                write_score(&mut out, s);
            }
        }
    }
}

pub(super) fn zrank(conn: &mut Conn, args: &[Bytes]) {
    rank_generic(conn, args, false)
}

pub(super) fn zrevrank(conn: &mut Conn, args: &[Bytes]) {
    rank_generic(conn, args, true)
}

pub(super) fn zcard(conn: &mut Conn, args: &[Bytes]) {
    let r = conn.server.hub.zcard(&args[1]);
    if let Some(n) = answer(conn, r) {
        conn.reply().int(n as i64);
    }
}

pub(super) fn zrandmember(conn: &mut Conn, args: &[Bytes]) {
    let (count, withscores) = match &args[2..] {
        [] => (None, false),
        [c] => (parse_i64(c), false),
        [c, w] if w.eq_ignore_ascii_case(b"WITHSCORES") => (parse_i64(c), true),
        _ => return err(conn, SYNTAX),
    };
    if args.len() > 2 && count.is_none() {
        return err(conn, NOT_INT);
    }
    if let Some(n) = count.filter(|n| *n < 0) {
        if n == i64::MIN {
            return err(
                conn,
                "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
            );
        }
        if n.unsigned_abs() > crate::resp::cmd::sets::MAX_RANDOM_REPLY {
            return err(conn, "ERR value is out of range");
        }
    }
    let r = conn.server.hub.zrandmember(&args[1], count);
    let Some(picks) = answer(conn, r) else {
        return;
    };
    let mut out = conn.reply();
    match (count, picks) {
        (None, None) => out.null(),
        (None, Some(p)) => match p.first() {
            Some((m, _)) => out.bulk(m),
            None => out.null(),
        },
        (Some(_), p) => write_range(&mut out, &p.unwrap_or_default(), withscores),
    }
}

pub(super) fn zscan(conn: &mut Conn, args: &[Bytes]) {
    // Redis's order: the cursor, then the key, then the options.
    let Some(cursor) = crate::resp::cmd::scan_cursor(conn, &args[2]) else {
        return;
    };
    let r = conn.server.hub.zcard(&args[1]);
    match answer(conn, r) {
        None => return,
        Some(0) => return crate::resp::cmd::empty_scan(conn),
        Some(_) => {}
    }
    let Some((count, pattern)) = crate::resp::cmd::member_scan_options(conn, args) else {
        return;
    };
    let pattern = pattern.map(crate::hub::glob::Glob::new);
    let r = conn.server.hub.zscan(&args[1], cursor, count);
    let Some((next, page)) = answer(conn, r) else {
        return;
    };
    // MATCH filters after the lock is released.
    let page: Vec<(Bytes, f64)> = page
        .into_iter()
        .filter(|(m, _)| pattern.as_ref().is_none_or(|g| g.matches(m)))
        .collect();
    let mut out = conn.reply();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(page.len() * 2);
    for (m, s) in &page {
        out.bulk(m);
        out.bulk(format_score(*s).as_bytes());
    }
}
