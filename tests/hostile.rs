//! Regression tests for hostile input found in review: each must leave the
//! server up and answering, in the protocol's own form.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn alive(h: &Herald) {
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n", "server is down");
}

#[test]
fn very_long_pattern_prefixes_are_harmless() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    let mut pattern = vec![b'a'; 60_000];
    pattern.push(b'*');
    assert!(show(&c.cmd(&[b"PSUBSCRIBE", &pattern])).contains("psubscribe"));
    let mut p = Raw::connect(h.resp);
    let mut channel = vec![b'a'; 60_000];
    channel.extend_from_slice(b"tail");
    assert_eq!(p.cmd(&[b"PUBLISH", &channel, b"x"]), b":1\r\n");
    assert!(show(&c.frame()).contains("pmessage"));
    assert!(show(&c.cmd(&[b"PUNSUBSCRIBE"])).contains("punsubscribe"));
    c.cmd(&[b"PSUBSCRIBE", &pattern]);
    drop(c); // disconnect cleanup walks the same path
    std::thread::sleep(Duration::from_millis(100));
    alive(&h);
}

#[test]
fn huge_random_counts_are_refused() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    c.cmd(&[b"SADD", b"s", b"a"]);
    c.cmd(&[b"ZADD", b"z", b"1", b"a"]);
    assert_eq!(
        c.cmd(&[b"SRANDMEMBER", b"s", b"-9000000000000000"]),
        b"-ERR value is out of range\r\n"
    );
    assert_eq!(
        c.cmd(&[b"ZRANDMEMBER", b"z", b"-9223372036854775808"]),
        b"-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n"
    );
    assert_eq!(
        c.cmd(&[b"ZRANDMEMBER", b"z", b"-3"]),
        b"*3\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n"
    );
    alive(&h);
}

#[tokio::test]
async fn invalid_utf8_inside_json_quotes_travels_as_base64() {
    let h = Herald::start(&[]);
    let mut ws = ws_connect(h.http, None).await;
    ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "bin"})).await;
    let mut p = Raw::connect(h.resp);
    p.cmd(&[b"PUBLISH", b"bin", b"\"\xff\""]);
    let m = ws_recv(&mut ws).await;
    assert_eq!(
        (m["data"].clone(), m["encoding"].clone()),
        (json!("Iv8i"), json!("base64"))
    );
    assert_eq!(
        ws_call(&mut ws, 2, json!({"op": "ping"})).await["result"],
        json!({}),
        "the socket stays up"
    );
}

#[test]
fn watching_many_keys_is_fast() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    let keys: Vec<Vec<u8>> = (0..100_000).map(|i| format!("k{i}").into_bytes()).collect();
    let mut args: Vec<&[u8]> = vec![b"WATCH"];
    args.extend(keys.iter().map(|k| &k[..]));
    let started = Instant::now();
    assert_eq!(c.cmd(&args), b"+OK\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "WATCH took {:?}",
        started.elapsed()
    );
    assert_eq!(c.cmd(&[b"UNWATCH"]), b"+OK\r\n");
}

#[test]
fn pushes_flow_while_a_command_is_blocked() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    c.cmd(&[b"HELLO", b"3"]);
    c.cmd(&[b"SUBSCRIBE", b"c"]);
    c.send(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"k", b"$"]);
    std::thread::sleep(Duration::from_millis(100));
    let mut p = Raw::connect(h.resp);
    assert_eq!(p.cmd(&[b"PUBLISH", b"c", b"hello"]), b":1\r\n");
    let push = show(&c.frame());
    assert!(push.starts_with(">3") && push.contains("hello"), "{push}");
    p.cmd(&[b"XADD", b"k", b"1-1", b"f", b"v"]);
    assert!(show(&c.frame()).contains("1-1"));
}

#[test]
fn subscribe_inside_exec_keeps_the_reply_whole() {
    let h = Herald::start(&[]);
    let resp = h.resp;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let publisher = std::thread::spawn(move || {
        let mut p = Raw::connect(resp);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            p.cmd(&[b"PUBLISH", b"tx", b"m"]);
        }
    });
    for _ in 0..50 {
        let mut c = Raw::connect(h.resp);
        c.cmd(&[b"HELLO", b"3"]);
        c.send(&[b"MULTI"]);
        c.send(&[b"SUBSCRIBE", b"tx"]);
        c.send(&[b"PING"]);
        c.send(&[b"EXEC"]);
        assert_eq!(c.frame(), b"+OK\r\n");
        assert_eq!(c.frame(), b"+QUEUED\r\n");
        assert_eq!(c.frame(), b"+QUEUED\r\n");
        let exec = show(&c.frame());
        assert!(
            exec.starts_with("*2\\r\\n>3\\r\\n$9\\r\\nsubscribe") && exec.ends_with("+PONG\\r\\n"),
            "{exec}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
}

#[test]
fn reset_ends_a_transaction() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"RESET"]), b"+RESET\r\n");
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(c.cmd(&[b"EXEC"]), b"-ERR EXEC without MULTI\r\n");
}

#[test]
fn jwt_clients_cannot_run_server_wide_commands() {
    let h = Herald::start(&["--jwt-hmac-secret", "s"]);
    let tok = hs256(json!({"sub": "u", "exp": unix_now() + 600}), "s");
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    for (cmd, name) in [
        (&[&b"FLUSHALL"[..]][..], "flushall"),
        (&[&b"KEYS"[..], b"*"][..], "keys"),
        (&[&b"SCAN"[..], b"0"][..], "scan"),
        (&[&b"CLIENT"[..], b"LIST"][..], "client|list"),
        (&[&b"CLIENT"[..], b"KILL", b"ID", b"1"][..], "client|kill"),
    ] {
        assert_eq!(
            show(&c.cmd(cmd)),
            format!("-NOPERM this user has no permissions to run the '{name}' command\\r\\n")
        );
    }
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
}
