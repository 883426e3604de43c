//! ZUNIONSTORE and ZINTERSTORE: their options (weights, AGGREGATE) parsed
//! here, combined by the hub (`hub::data::zsets::aggregate`).

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
    let mut agg = Aggregate::Sum;
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
                b"SUM" => Aggregate::Sum,
                b"MIN" => Aggregate::Min,
                b"MAX" => Aggregate::Max,
                _ => return err(conn, SYNTAX),
            };
            i += 2;
        } else {
            return err(conn, SYNTAX);
        }
    }
    let op = if union {
        ZStoreOp::Union
    } else {
        ZStoreOp::Inter
    };
    let hub = conn.server.hub.clone();
    match hub.zstore(args[1].clone(), keys, &weights, agg, op) {
        Ok(n) => conn.reply().int(n as i64),
        Err(e) => fail(conn, e),
    }
}

pub(super) fn zunionstore(conn: &mut Conn, args: &[Bytes]) {
    store_generic(conn, args, true)
}

pub(super) fn zinterstore(conn: &mut Conn, args: &[Bytes]) {
    store_generic(conn, args, false)
}
