//! Reads by member (ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCARD), ZRANDMEMBER
//! and ZSCAN.

use super::*;

// ---- reads by member -------------------------------------------------------------

/// Runs `f` on the sorted set at `key` (None when absent), or replies
/// WRONGTYPE.
pub(super) fn read<R>(
    conn: &mut Conn,
    key: &[u8],
    f: impl FnOnce(Option<&ZSet>) -> R,
) -> Option<R> {
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    match db.zset(key) {
        Err(_) => {
            drop(db);
            wrongtype(conn);
            None
        }
        Ok(z) => Some(f(z)),
    }
}

pub(super) fn zscore(conn: &mut Conn, args: &[Bytes]) {
    if let Some(s) = read(conn, &args[1], |z| z.and_then(|z| z.score(&args[2]))) {
        let mut out = conn.reply();
        match s {
            Some(v) => write_score(&mut out, v),
            None => out.null(),
        }
    }
}

pub(super) fn zmscore(conn: &mut Conn, args: &[Bytes]) {
    if let Some(v) = read(conn, &args[1], |z| {
        args[2..]
            .iter()
            .map(|m| z.and_then(|z| z.score(m)))
            .collect::<Vec<_>>()
    }) {
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
    if let Some(r) = read(conn, &args[1], |z| {
        z.and_then(|z| {
            let r = z.rank(&args[2])?;
            let s = z.score(&args[2])?;
            Some((if rev { z.len() - 1 - r } else { r }, s))
        })
    }) {
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
    if let Some(n) = read(conn, &args[1], |z| z.map_or(0, |z| z.len())) {
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
    // Picks by rank, O(log n) each: never a copy of the whole set under the
    // keyspace lock.
    let rand_index = crate::resp::cmd::sets::rand_index;
    let picks = read(conn, &args[1], |z| {
        let z = z.filter(|z| !z.is_empty())?;
        let len = z.len();
        let at = |r: usize| z.range_by_rank(r, r + 1).pop();
        Some(match count {
            None => at(rand_index(len)).into_iter().collect(),
            Some(n) if n < 0 => (0..n.unsigned_abs())
                .filter_map(|_| at(rand_index(len)))
                .collect(),
            Some(n) if n as u64 >= len as u64 => z.range_by_rank(0, len),
            Some(n) => {
                // Distinct picks: Floyd's sampling of n ranks out of len.
                let n = n as usize;
                let mut chosen = std::collections::HashSet::with_capacity(n);
                let mut out: Vec<(Bytes, f64)> = Vec::with_capacity(n);
                for j in len - n..len {
                    let t = rand_index(j + 1);
                    let r = if chosen.insert(t) {
                        t
                    } else {
                        chosen.insert(j);
                        j
                    };
                    out.extend(at(r));
                }
                out
            }
        })
    });
    let Some(picks) = picks else {
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
    match read(conn, &args[1], |z| z.is_some()) {
        None => return,
        Some(false) => return crate::resp::cmd::empty_scan(conn),
        Some(true) => {}
    }
    let (mut count, mut pattern) = (10usize, None);
    let mut i = 3;
    while i < args.len() {
        if i + 1 >= args.len() {
            return err(conn, SYNTAX);
        }
        if args[i].eq_ignore_ascii_case(b"COUNT") {
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return err(conn, SYNTAX),
                None => return err(conn, NOT_INT),
            }
        } else if args[i].eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(crate::hub::glob::Glob::new(&args[i + 1]));
        } else {
            return err(conn, SYNTAX);
        }
        i += 2;
    }
    // Small sets (Redis's listpack encoding, up to 128 members) come whole,
    // in score order; larger ones page by node slot (see `ZSet::scan`),
    // O(count) a page, every member present throughout returned once.
    let Some(paged) = read(conn, &args[1], |z| match z {
        None => (0u64, Vec::new()),
        Some(z) if z.len() <= 128 => (0, z.range_by_rank(0, z.len())),
        Some(z) => z.scan(cursor, count),
    }) else {
        return;
    };
    let (next, page) = paged;
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
