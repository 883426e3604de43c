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
