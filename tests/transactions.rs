//! MULTI/EXEC/DISCARD/WATCH against a real `redis-server`, and redis-py's
//! transactional pipelines (the seed article's rate limiter, leaderboards).

mod common;

use common::diff::diff;
use common::*;

#[test]
fn transactions_like_redis() {
    diff(
        "
        0 1 MULTI
        0 1 MULTI
        0 1 WATCH k
        0 1 PING
        0 1 ZADD z 1 a
        0 1 ZCARD z
        0 1 EXEC
        0 1 EXEC
        0 1 DISCARD
        0 1 MULTI
        0 1 ZADD z 1 a
        0 1 NOSUCH
        0 1 EXEC
        0 1 ZCARD z
        0 1 MULTI
        0 1 ECHO
        0 1 EXEC
        0 1 MULTI
        0 1 ZADD z 1 a
        0 1 ZADD z x a
        0 1 ZCARD z
        0 1 EXEC
        0 1 MULTI
        0 1 SADD s a
        0 1 DISCARD
        0 1 EXISTS s
        0 1 MULTI
        0 1 XREAD BLOCK 1000 STREAMS nokey $
        0 1 EXEC
        0 1 WATCH
        0 1 WATCH w1 w2
        0 1 MULTI
        0 1 SADD w1 10
        0 1 EXEC
        0 1 WATCH w1
        1 1 SADD w1 20
        0 1 MULTI
        0 1 SADD w1 30
        0 1 EXEC
        0 1 SMEMBERS w1
        0 1 WATCH w2
        0 1 UNWATCH
        1 1 SADD w2 y
        0 1 MULTI
        0 1 SCARD w2
        0 1 EXEC
        0 1 WATCH w3
        1 1 SADD w3 a
        1 1 DEL w3
        0 1 MULTI
        0 1 PING
        0 1 EXEC
        0 1 WATCH w4
        0 1 DISCARD
        0 1 HELLO 3
        0 1 WATCH w5
        1 1 SADD w5 1
        0 1 MULTI
        0 1 PING
        0 1 EXEC
        0 1 MULTI
        0 1 EXEC
        0 1 MULTI
        0 1 SUBSCRIBE x
        0 1 EXEC
        ",
    );
}

#[test]
fn watched_key_expiring_aborts_exec() {
    diff(
        "
        0 1 SADD t a
        0 1 PEXPIRE t 50
        0 1 WATCH t
        0 sleep 150
        0 1 MULTI
        0 1 PING
        0 1 EXEC
        ",
    );
}

#[test]
fn redis_py_pipelines_and_leaderboards() {
    let h = Herald::start(&[]);
    run_redis_py("redis_py_zsets.py", &h);
}

/// A transaction runs with no other client's command in between.
#[test]
fn exec_is_atomic_under_concurrent_writers() {
    let h = Herald::start(&[]);
    let resp = h.resp;
    let writer = std::thread::spawn(move || {
        let mut w = Raw::connect(resp);
        for i in 0..2000 {
            w.cmd(&[
                b"ZADD",
                b"atomic",
                i.to_string().as_bytes(),
                format!("w{i}").as_bytes(),
            ]);
        }
    });
    let mut c = Raw::connect(h.resp);
    for _ in 0..200 {
        c.send(&[b"MULTI"]);
        c.send(&[b"ZCARD", b"atomic"]);
        c.send(&[b"ZCARD", b"atomic"]);
        c.send(&[b"EXEC"]);
        assert_eq!(c.frame(), b"+OK\r\n");
        c.frame();
        c.frame();
        let reply = show(&c.frame());
        let parts: Vec<&str> = reply.split("\\r\\n").collect();
        assert_eq!(
            parts[1], parts[2],
            "a write slipped into the transaction: {reply}"
        );
    }
    writer.join().unwrap();
}

/// EXEC is atomic against publishes that append history: one transaction of
/// 20,000 XLEN on a history channel sees one length while three other
/// clients publish to that channel (it saw 12 different lengths when
/// publishes appended without the transaction gate).
#[test]
fn exec_is_atomic_against_history_publishes() {
    let (_dir, file) = temp_config("txhist", "[namespaces.h]\nhistory_size = 1000000\n");
    let h = Herald::start(&["--config", &file]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for _ in 0..3 {
        let (addr, stop) = (h.resp, stop.clone());
        publishers.push(std::thread::spawn(move || {
            let mut c = Raw::connect(addr);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.cmd(&[b"PUBLISH", b"h:c", b"m"]);
                n += 1;
            }
            n
        }));
    }
    let mut c = Raw::connect(h.resp);
    // Let the publishers get going.
    while c.cmd(&[b"XLEN", b"h:c"]) == b":0\r\n" {}
    const N: usize = 20_000;
    let mut batch = encode(&[b"MULTI"]);
    for _ in 0..N {
        batch.extend_from_slice(&encode(&[b"XLEN", b"h:c"]));
    }
    batch.extend_from_slice(&encode(&[b"EXEC"]));
    c.send_raw(&batch);
    assert_eq!(c.frame(), b"+OK\r\n");
    for _ in 0..N {
        assert_eq!(c.frame(), b"+QUEUED\r\n");
    }
    let reply = c.frame();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published: usize = publishers.into_iter().map(|p| p.join().unwrap()).sum();
    let text = String::from_utf8(reply).unwrap();
    let lengths: std::collections::BTreeSet<&str> = text
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lengths.len(),
        1,
        "one EXEC saw several lengths: {lengths:?}"
    );
    assert!(published > 0);
}

/// A MULTI queue is bounded like unparsed input (`--max-query-buffer`): past
/// it, commands are refused and EXEC discards the transaction.
#[test]
fn multi_queue_is_bounded() {
    let h = Herald::start(&["--max-query-buffer", "1mb", "--max-bulk-len", "512kb"]);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    let big = vec![b'x'; 300 << 10];
    let mut refused = false;
    for _ in 0..10 {
        let r = c.cmd(&[b"SADD", b"s", &big]);
        if r.starts_with(b"-ERR MULTI queue too large") {
            refused = true;
            break;
        }
        assert_eq!(r, b"+QUEUED\r\n");
    }
    assert!(refused, "the queue grew past the limit");
    assert!(show(&c.cmd(&[b"EXEC"])).starts_with("-EXECABORT"));
    assert_eq!(c.cmd(&[b"EXISTS", b"s"]), b":0\r\n");
    // A fresh MULTI starts from zero.
    assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SADD", b"s", &big]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&[b"EXEC"]), b"*1\r\n:1\r\n");
}
