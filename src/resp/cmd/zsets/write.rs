//! ZADD, ZINCRBY and the removals (ZREM, ZREMRANGEBY*, ZPOPMIN/MAX):
//! every write goes through `Db::with_zset_mut`, which notices changes.

use super::*;

// ---- ZADD / ZINCRBY ----------------------------------------------------------

pub(super) fn zadd(conn: &mut Conn, args: &[Bytes]) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        let a = args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return err(conn, SYNTAX);
    }
    if nx && xx {
        return err(
            conn,
            "ERR XX and NX options at the same time are not compatible",
        );
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return err(
            conn,
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        );
    }
    if incr && pairs.len() > 2 {
        return err(
            conn,
            "ERR INCR option supports a single increment-element pair",
        );
    }
    let mut items = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        match parse_score(&p[0]) {
            Some(s) => items.push((p[1].clone(), s)),
            None => return err(conn, NOT_FLOAT),
        }
    }
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let (mut added, mut changed) = (0i64, 0i64);
    let mut incr_result: Option<f64> = None;
    let mut nan = false;
    // XX never creates the key.
    let done = db.with_zset_mut(&key, !xx, |z| {
        for (m, s) in items {
            let cur = z.score(&m);
            let target = if incr {
                let v = cur.unwrap_or(0.0) + s;
                if v.is_nan() {
                    nan = true;
                    break;
                }
                v
            } else {
                s
            };
            match cur {
                Some(old) => {
                    if nx {
                        continue;
                    }
                    if (gt && target <= old) || (lt && target >= old) {
                        continue;
                    }
                    incr_result = Some(target);
                    if target != old {
                        z.insert(m, target);
                        changed += 1;
                    }
                }
                None => {
                    if xx {
                        continue;
                    }
                    z.insert(m, target);
                    added += 1;
                    incr_result = Some(target);
                }
            }
        }
    });
    drop(db);
    if done.is_err() {
        return wrongtype(conn);
    }
    if nan {
        return err(conn, "ERR resulting score is not a number (NaN)");
    }
    let mut out = conn.reply();
    if incr {
        match incr_result {
            Some(v) => write_score(&mut out, v),
            None => out.null(),
        }
    } else {
        out.int(if ch { added + changed } else { added });
    }
}

pub(super) fn zincrby(conn: &mut Conn, args: &[Bytes]) {
    let Some(by) = parse_score(&args[2]) else {
        return err(conn, NOT_FLOAT);
    };
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let done = db.with_zset_mut(&key, true, |z| z.incr(args[3].clone(), by));
    drop(db);
    let v = match done {
        Err(_) => return wrongtype(conn),
        Ok(Some(Some(v))) => v,
        Ok(_) => return err(conn, "ERR resulting score is not a number (NaN)"),
    };
    write_score(&mut conn.reply(), v);
}

// ---- removals --------------------------------------------------------------------

/// Removes the members of `span` (computed on the set) and replies the count.
pub(super) fn remove_span(
    conn: &mut Conn,
    key: &Bytes,
    span: impl FnOnce(&ZSet) -> Option<(usize, usize)>,
) {
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let n = db.with_zset_mut(key, false, |z| match span(z) {
        None => 0,
        Some((a, b)) => {
            let gone = z.range_by_rank(a, b);
            for (m, _) in &gone {
                z.remove(m);
            }
            gone.len()
        }
    });
    drop(db);
    match n {
        Err(_) => wrongtype(conn),
        Ok(n) => conn.reply().int(n.unwrap_or(0) as i64),
    }
}

pub(super) fn zrem(conn: &mut Conn, args: &[Bytes]) {
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let n = db.with_zset_mut(&key, false, |z| {
        args[2..].iter().filter(|m| z.remove(m).is_some()).count()
    });
    drop(db);
    match n {
        Err(_) => wrongtype(conn),
        Ok(n) => conn.reply().int(n.unwrap_or(0) as i64),
    }
}

pub(super) fn zremrangebyscore(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (parse_score_bound(&args[2]), parse_score_bound(&args[3])) else {
        return err(conn, MINMAX_FLOAT);
    };
    remove_span(conn, &args[1].clone(), |z| Some(score_span(z, min, max)));
}

pub(super) fn zremrangebyrank(conn: &mut Conn, args: &[Bytes]) {
    let (Some(s), Some(e)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        return err(conn, NOT_INT);
    };
    remove_span(conn, &args[1].clone(), |z| rank_span(z.len(), s, e));
}

pub(super) fn zremrangebylex(conn: &mut Conn, args: &[Bytes]) {
    let (Some(min), Some(max)) = (parse_lex_bound(&args[2]), parse_lex_bound(&args[3])) else {
        return err(conn, MINMAX_LEX);
    };
    remove_span(conn, &args[1].clone(), |z| Some(lex_span(z, &min, &max)));
}

pub(super) fn pop_generic(conn: &mut Conn, args: &[Bytes], max: bool) {
    if args.len() > 3 {
        return err(conn, SYNTAX);
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match parse_i64(a) {
            Some(n) if n >= 0 => Some(n as usize),
            Some(_) => return err(conn, "ERR value is out of range, must be positive"),
            None => return err(conn, NOT_INT),
        },
    };
    let key = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    let popped = db.with_zset_mut(&key, false, |z| {
        let n = count.unwrap_or(1).min(z.len());
        let mut v = if max {
            let mut v = z.range_by_rank(z.len() - n, z.len());
            v.reverse();
            v
        } else {
            z.range_by_rank(0, n)
        };
        for (m, _) in &v {
            z.remove(m);
        }
        v.truncate(n);
        v
    });
    drop(db);
    let popped = match popped {
        Err(_) => return wrongtype(conn),
        Ok(p) => p.unwrap_or_default(),
    };
    let mut out = conn.reply();
    if count.is_none() && out.resp3 {
        // Without a count RESP3 gets one flat [member, score] pair.
        out.array(popped.len() * 2);
        for (m, s) in &popped {
            out.bulk(m);
            write_score(&mut out, *s);
        }
    } else {
        write_range(&mut out, &popped, true);
    }
}

pub(super) fn zpopmin(conn: &mut Conn, args: &[Bytes]) {
    pop_generic(conn, args, false)
}

pub(super) fn zpopmax(conn: &mut Conn, args: &[Bytes]) {
    pop_generic(conn, args, true)
}
