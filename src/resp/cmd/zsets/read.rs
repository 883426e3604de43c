//! Reads by member (ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCARD), ZRANDMEMBER
//! and ZSCAN.

use super::*;

// ---- reads by member -------------------------------------------------------------

/// Runs `f` on the sorted set at `key` (None when absent), or replies
/// WRONGTYPE.
pub(super) fn read<R>(conn: &mut Conn, key: &[u8], f: impl FnOnce(Option<&ZSet>) -> R) -> Option<R> {
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
    let Some(all) = read(conn, &args[1], |z| z.map(|z| z.all())) else {
        return;
    };
    let all = all.unwrap_or_default();
    let mut out = conn.reply();
    let mut seed = crate::hub::now_ms() ^ 0x5DEECE66D;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    match count {
        None => match all.is_empty() {
            true => out.null(),
            false => out.bulk(&all[rnd(all.len())].0),
        },
        Some(n) if n < 0 => {
            if n.unsigned_abs() > crate::resp::cmd::sets::MAX_RANDOM_REPLY {
                return out.error("ERR value is out of range");
            }
            if all.is_empty() {
                return out.array(0);
            }
            let picks: Vec<(Bytes, f64)> = (0..n.unsigned_abs())
                .map(|_| all[rnd(all.len())].clone())
                .collect();
            write_range(&mut out, &picks, withscores);
        }
        Some(n) => {
            let n = (n as usize).min(all.len());
            let mut pool = all;
            let picks: Vec<(Bytes, f64)> = if n == pool.len() {
                pool
            } else {
                (0..n)
                    .map(|_| {
                        let i = rnd(pool.len());
                        pool.swap_remove(i)
                    })
                    .collect()
            };
            write_range(&mut out, &picks, withscores);
        }
    }
}

pub(super) fn zscan(conn: &mut Conn, args: &[Bytes]) {
    let cursor = match std::str::from_utf8(&args[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) => c,
        None => return err(conn, "ERR invalid cursor"),
    };
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
    let Some(all) = read(conn, &args[1], |z| z.map(|z| z.all())) else {
        return;
    };
    let all = all.unwrap_or_default();
    // Small sets (Redis's listpack encoding, up to 128 members) come whole,
    // in score order; larger ones page by rank.
    let (next, page) = if all.len() <= 128 {
        (0u64, all)
    } else {
        let start = cursor as usize;
        let end = start.saturating_add(count).min(all.len());
        let next = if end >= all.len() { 0 } else { end as u64 };
        (
            next,
            all.into_iter()
                .skip(start)
                .take(end.saturating_sub(start))
                .collect(),
        )
    };
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
