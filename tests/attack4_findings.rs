//! attack4: a hostile client of two Herald nodes on one redis-server
//! (`--engine redis://…`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CONFIG: &str = "[namespaces.chat]\nhistory_size = 100\n\n[namespaces.room]\npresence = true\njoin_leave = true\n";
const SECRET: &str = "attack4-secret";

fn nodes(redis: &Redis, n: usize) -> (std::path::PathBuf, Vec<Herald>) {
    let (dir, cfg) = temp_config("attack4", CONFIG);
    let url = format!("redis://{}", redis.addr);
    let nodes = (0..n)
        .map(|i| {
            Herald::start(&[
                "--config",
                &cfg,
                "--engine",
                &url,
                "--node-name",
                &format!("node{i}"),
                "--jwt-hmac-secret",
                SECRET,
                "--requirepass",
                "pw",
                "--presence-ttl",
                "2s",
            ])
        })
        .collect();
    (dir, nodes)
}

fn backend(h: &Herald) -> Raw {
    Raw::backend(h.resp, "pw")
}

/// Presence events travel on `{prefix}:ch:{channel}`, so a node that also
/// holds a matching pattern gets each event twice from Redis (message and
/// pmessage), and `on_message` hands both to `on_presence`.
#[test]
fn a_pattern_on_the_node_does_not_double_presence_pushes() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut psub = backend(&nodes[1]);
    psub.cmd(&[b"PSUBSCRIBE", b"room:*"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = |u: &str| hs256(json!({"sub": u, "exp": unix_now() + 600}), SECRET);
        let mut watcher = ws_connect(nodes[1].http, Some(&tok("watcher"))).await;
        ws_call(&mut watcher, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
        // Its own join(s): drain whatever comes.
        let mut own = 0;
        while let Ok(v) = tokio::time::timeout(Duration::from_millis(500), ws_recv(&mut watcher)).await {
            if v["push"] == "join" && v["user"] == "watcher" {
                own += 1;
            }
        }
        let mut ann = ws_connect(nodes[0].http, Some(&tok("ann"))).await;
        ws_call(&mut ann, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
        let mut joins = 0;
        while let Ok(v) = tokio::time::timeout(Duration::from_millis(1000), ws_recv(&mut watcher)).await {
            if v["push"] == "join" && v["user"] == "ann" {
                joins += 1;
            }
        }
        assert_eq!((own, joins), (1, 1), "one join per user, pattern or not");
    });
}

/// Many SUBSCRIBE/UNSUBSCRIBE of fresh names, pipelined, then a disconnect
/// mid-way: the node's Redis interest set ends empty.
#[test]
fn churn_leaves_no_redis_subscription_behind() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let n = 2000;
    let mut c = backend(&nodes[0]);
    let mut batch = Vec::new();
    for i in 0..n {
        let name = format!("churn:{i}");
        batch.extend(encode(&[b"SUBSCRIBE", name.as_bytes()]));
        batch.extend(encode(&[b"UNSUBSCRIBE", name.as_bytes()]));
    }
    c.send_raw(&batch);
    for _ in 0..2 * n {
        c.frame();
    }
    // Half subscribed, then the client goes away without unsubscribing.
    let mut d = backend(&nodes[1]);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend(encode(&[b"SUBSCRIBE", format!("gone:{i}").as_bytes()]));
    }
    d.send_raw(&batch);
    for _ in 0..n / 2 {
        d.frame();
    }
    drop(d);
    let mut r = Raw::connect(redis.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = r.cmd(&[b"PUBSUB", b"CHANNELS", b"herald:ch:*"]);
        if left == b"*0\r\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis still holds subscriptions: {}",
            show(&left[..left.len().min(300)])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// While Redis is paused, a RESP client of the node doing local work
/// (PING, SET/GET) is not stalled behind the engine calls (holds); but a
/// publish that timed out (2 s response timeout vs `CLIENT PAUSE 3000`) is
/// answered `-ERR engine unavailable` and was stored and delivered anyway:
/// measured 16 stored, 6-7 acknowledged. A client that retries duplicates.
#[test]
#[ignore = "attack4: timed-out publishes are refused yet applied (16 stored, ~7 acknowledged); needs an idempotency key or an 'outcome unknown' error, not a small fix"]
fn a_paused_redis_does_not_stall_local_commands() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut r = Raw::connect(redis.addr);
    // Publishers waiting on Redis, more than the node has workers.
    let stuck: Vec<Raw> = (0..8)
        .map(|_| {
            let mut p = backend(&nodes[0]);
            p.send(&[b"PUBLISH", b"chat:1", b"x"]);
            p
        })
        .collect();
    r.cmd(&[b"CLIENT", b"PAUSE", b"3000", b"ALL"]);
    let stuck2: Vec<Raw> = (0..8)
        .map(|_| {
            let mut p = backend(&nodes[0]);
            p.send(&[b"PUBLISH", b"chat:1", b"y"]);
            p
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut local = backend(&nodes[0]);
    let t = Instant::now();
    assert_eq!(local.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(local.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1000), "local commands took {took:?}");
    // Every publish is answered: an offset or an error, none lost silently.
    let mut ok = 0;
    for mut p in stuck.into_iter().chain(stuck2) {
        let f = p.frame();
        if f.starts_with(b":") {
            ok += 1;
        } else {
            assert!(f.starts_with(b"-ERR engine"), "{}", show(&f));
        }
    }
    let mut h = Raw::connect(redis.addr);
    let len = h.cmd(&[b"XLEN", b"herald:history:chat:1"]);
    assert_eq!(len, format!(":{ok}\r\n").as_bytes(), "acknowledged = stored");
}
