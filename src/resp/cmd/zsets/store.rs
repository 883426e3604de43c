//! ZUNIONSTORE and ZINTERSTORE: weights and aggregation.

use super::*;

// ---- ZUNIONSTORE / ZINTERSTORE -----------------------------------------------------

pub(super) fn store_generic(conn: &mut Conn, args: &[Bytes], union: bool) {
    let name = if union { "zunionstore" } else { "zinterstore" };
    let numkeys = match parse_i64(&args[2]) {
        Some(n) => n,
        None => return err(conn, NOT_INT),
    };
    if numkeys < 1 {
        return err(
            conn,
            &format!("ERR at least 1 input key is needed for '{name}' command"),
        );
    }
    let numkeys = numkeys as usize;
    if numkeys > args.len() - 3 {
        return err(conn, SYNTAX);
    }
    let keys = &args[3..3 + numkeys];
    let mut weights = vec![1.0f64; numkeys];
    let mut agg = 0u8; // 0 sum, 1 min, 2 max
    let mut i = 3 + numkeys;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"WEIGHTS") && args.len() - i > numkeys {
            for j in 0..numkeys {
                match parse_score(&args[i + 1 + j]) {
                    Some(w) => weights[j] = w,
                    None => return err(conn, "ERR weight value is not a float"),
                }
            }
            i += 1 + numkeys;
        } else if args[i].eq_ignore_ascii_case(b"AGGREGATE") && i + 1 < args.len() {
            agg = match args[i + 1].to_ascii_uppercase().as_slice() {
                b"SUM" => 0,
                b"MIN" => 1,
                b"MAX" => 2,
                _ => return err(conn, SYNTAX),
            };
            i += 2;
        } else {
            return err(conn, SYNTAX);
        }
    }
    let dest = args[1].clone();
    let hub = conn.server.hub.clone();
    let mut db = hub.keyspace.lock();
    // Inputs: sorted sets, or plain sets (score 1).
    let mut inputs: Vec<Option<Vec<(Bytes, f64)>>> = Vec::with_capacity(numkeys);
    for k in keys {
        let v = match db.get(k).map(|e| &e.value) {
            None => None,
            Some(Value::ZSet(z)) => Some(z.all()),
            Some(Value::Set(s)) => Some(s.iter().map(|m| (m.clone(), 1.0)).collect()),
            Some(_) => {
                drop(db);
                return wrongtype(conn);
            }
        };
        inputs.push(v);
    }
    let combine = |a: f64, b: f64| -> f64 {
        let r = match agg {
            1 => a.min(b),
            2 => a.max(b),
            _ => a + b,
        };
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let weigh = |s: f64, w: f64| {
        let r = s * w;
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let mut acc: std::collections::HashMap<Bytes, f64> = std::collections::HashMap::new();
    if union {
        for (input, w) in inputs.iter().zip(&weights) {
            for (m, s) in input.iter().flatten() {
                let v = weigh(*s, *w);
                acc.entry(m.clone())
                    .and_modify(|a| *a = combine(*a, v))
                    .or_insert(v);
            }
        }
    } else if inputs.iter().all(|i| i.is_some()) {
        let sets: Vec<std::collections::HashMap<&Bytes, f64>> = inputs
            .iter()
            .flatten()
            .map(|v| v.iter().map(|(m, s)| (m, *s)).collect())
            .collect();
        if let Some(first) = inputs[0].as_ref() {
            'outer: for (m, s) in first {
                let mut total = weigh(*s, weights[0]);
                for (j, set) in sets.iter().enumerate().skip(1) {
                    match set.get(m) {
                        Some(v) => total = combine(total, weigh(*v, weights[j])),
                        None => continue 'outer,
                    }
                }
                acc.insert(m.clone(), total);
            }
        }
    }
    let n = acc.len();
    let mut z = ZSet::new();
    for (m, s) in acc {
        z.insert(m, s);
    }
    db.store_zset(dest, z);
    drop(db);
    conn.reply().int(n as i64);
}

pub(super) fn zunionstore(conn: &mut Conn, args: &[Bytes]) {
    store_generic(conn, args, true)
}

pub(super) fn zinterstore(conn: &mut Conn, args: &[Bytes]) {
    store_generic(conn, args, false)
}
