//! Several Herald nodes on one real `redis-server` behave as one hub: a
//! publish on any node reaches subscribers on every node, in one order;
//! history offsets are one sequence and recovery works on any node;
//! presence is shared; while Redis is down publishes are refused, and
//! delivery resumes when it is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CONFIG: &str = "[namespaces.chat]\nhistory_size = 1000\n\n[namespaces.room]\npresence = true\njoin_leave = true\n";
const SECRET: &str = "engine-test-secret";

fn nodes(redis: &Redis, n: usize) -> (std::path::PathBuf, Vec<Herald>) {
    nodes_with(redis, n, &["--presence-ttl", "2s"])
}

/// `n` nodes on `redis`, with `extra` flags.
fn nodes_with(redis: &Redis, n: usize, extra: &[&str]) -> (std::path::PathBuf, Vec<Herald>) {
    let (dir, cfg) = temp_config("engine", CONFIG);
    let url = format!("redis://{}", redis.addr);
    let nodes = (0..n)
        .map(|i| {
            let name = format!("node{i}");
            let mut args = vec![
                "--config",
                &cfg,
                "--engine",
                &url,
                "--node-name",
                &name,
                "--jwt-hmac-secret",
                SECRET,
                "--requirepass",
                "pw",
            ];
            args.extend_from_slice(extra);
            Herald::start(&args)
        })
        .collect();
    (dir, nodes)
}

fn backend(h: &Herald) -> Raw {
    Raw::backend(h.resp, "pw")
}

#[test]
fn a_publish_on_one_node_reaches_subscribers_on_every_node() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 3);
    let mut subs: Vec<Raw> = nodes.iter().map(backend).collect();
    for s in &mut subs {
        s.cmd(&[b"SUBSCRIBE", b"news"]);
    }
    let mut psub = backend(&nodes[2]);
    psub.cmd(&[b"PSUBSCRIBE", b"ne*"]);
    let mut p = backend(&nodes[0]);
    for i in 0..50 {
        // The reply counts this node's receivers, as Redis Cluster does.
        let r = p.cmd(&[b"PUBLISH", b"news", format!("m{i}").as_bytes()]);
        assert_eq!(r, b":1\r\n", "{}", show(&r));
    }
    for s in &mut subs {
        for i in 0..50 {
            let f = s.frame();
            assert!(
                f.ends_with(format!("m{i}\r\n").as_bytes()),
                "in order on every node: {}",
                show(&f)
            );
        }
    }
    for i in 0..50 {
        let f = psub.frame();
        assert!(f.starts_with(b"*4\r\n$8\r\npmessage"), "{}", show(&f));
        assert!(f.ends_with(format!("m{i}\r\n").as_bytes()));
    }
    // A node that lost its last subscriber stops receiving the channel
    // (soon after: the node's UNSUBSCRIBE is not waited for).
    subs[1].cmd(&[b"UNSUBSCRIBE", b"news"]);
    let mut probe = Raw::connect(redis.addr);
    let started = Instant::now();
    let mut r = probe.cmd(&[b"PUBSUB", b"NUMSUB", b"herald:ch:news"]);
    while !r.ends_with(b":2\r\n") && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        r = probe.cmd(&[b"PUBSUB", b"NUMSUB", b"herald:ch:news"]);
    }
    assert!(
        r.ends_with(b":2\r\n"),
        "two nodes still subscribed: {}",
        show(&r)
    );
}

#[test]
fn history_is_one_sequence_across_nodes_and_recovers_anywhere() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut a = backend(&nodes[0]);
    let mut b = backend(&nodes[1]);
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        c.cmd(&[b"PUBLISH", b"chat:1", format!("{i}").as_bytes()]);
    }
    // A plain Redis client reads the history.
    let mut r = Raw::connect(redis.addr);
    let len = r.cmd(&[b"XLEN", b"herald:history:{chat:1}"]);
    assert_eq!(len, b":10\r\n", "{}", show(&len));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (round, h) in nodes.iter().enumerate() {
            // Each round adds one live publication.
            let top = 10 + round as u64;
            let mut ws = ws_connect(h.http, Some(&hs256(json!({"sub": "u", "exp": unix_now() + 600}), SECRET))).await;
            let r = ws_call(&mut ws, 1, json!({"op": "history", "channel": "chat:1"})).await;
            let pubs = r["result"]["publications"].as_array().expect("publications").clone();
            let offsets: Vec<u64> = pubs.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
            assert_eq!(offsets, (1..=top).collect::<Vec<_>>(), "{r}");
            let epoch = r["result"]["epoch"].as_str().unwrap().to_string();
            // Recovery from offset 4 on this node, of publications made on both.
            let r = ws_call(
                &mut ws,
                2,
                json!({"op": "subscribe", "channel": "chat:1", "since": {"offset": 4, "epoch": epoch}}),
            )
            .await;
            assert_eq!(r["result"]["recovered"], true, "{r}");
            for want in 5..=top {
                let m = ws_recv(&mut ws).await;
                assert_eq!(m["offset"], want, "{m}");
            }
            // Then live, from the other node.
            let other = if std::ptr::eq(h, &nodes[0]) { &nodes[1] } else { &nodes[0] };
            backend(other).cmd(&[b"PUBLISH", b"chat:1", b"live"]);
            let m = ws_recv(&mut ws).await;
            assert_eq!((&m["data"], &m["offset"]), (&json!("live"), &json!(top + 1)), "{m}");
        }
    });
}

#[test]
fn presence_is_shared_and_a_dead_node_leaves() {
    let redis = Redis::start(&[]);
    let (_d, mut nodes) = nodes(&redis, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = |u: &str| hs256(json!({"sub": u, "exp": unix_now() + 600}), SECRET);
        let mut watcher = ws_connect(nodes[0].http, Some(&tok("watcher"))).await;
        ws_call(
            &mut watcher,
            1,
            json!({"op": "subscribe", "channel": "room:1"}),
        )
        .await;
        let own = ws_recv(&mut watcher).await;
        assert_eq!(own["user"], "watcher", "its own join first: {own}");
        // Two tabs of ann, one on each node: one join.
        let mut t1 = ws_connect(nodes[0].http, Some(&tok("ann"))).await;
        ws_call(&mut t1, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
        let mut t2 = ws_connect(nodes[1].http, Some(&tok("ann"))).await;
        ws_call(&mut t2, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
        let j = ws_recv(&mut watcher).await;
        assert_eq!(
            (j["push"].as_str(), j["user"].as_str()),
            (Some("join"), Some("ann")),
            "{j}"
        );
        for h in &nodes {
            let mut ws = ws_connect(h.http, Some(&tok("x"))).await;
            let r = ws_call(
                &mut ws,
                9,
                json!({"op": "presence_stats", "channel": "room:1"}),
            )
            .await;
            assert_eq!(r["result"], json!({"clients": 3, "users": 2}), "{r}");
        }
        let mut r = Raw::backend(nodes[1].resp, "pw");
        let users = r.cmd(&[b"SMEMBERS", b"__presence__:room:1"]);
        assert!(
            show(&users).contains("ann") && show(&users).contains("watcher"),
            "{}",
            show(&users)
        );
        // Node 1 dies: ann still has a tab on node 0, so no leave yet; the
        // entry is gone within the TTL.
        nodes[1].child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let mut ws = ws_connect(nodes[0].http, Some(&tok("x"))).await;
            let r = ws_call(
                &mut ws,
                9,
                json!({"op": "presence_stats", "channel": "room:1"}),
            )
            .await;
            if r["result"] == json!({"clients": 2, "users": 2}) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dead node's entry still there: {r}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(t1);
        let l = ws_recv(&mut watcher).await;
        assert_eq!(
            (l["push"].as_str(), l["user"].as_str()),
            (Some("leave"), Some("ann")),
            "{l}"
        );
        drop(t2);
    });
}

#[test]
fn while_redis_is_down_publishes_are_refused_and_delivery_resumes() {
    let mut redis = Redis::start(&[]);
    let port = redis.addr.port();
    let (_d, nodes) = nodes(&redis, 2);
    let mut sub = backend(&nodes[1]);
    sub.cmd(&[b"SUBSCRIBE", b"news"]);
    let mut p = backend(&nodes[0]);
    assert_eq!(p.cmd(&[b"PUBLISH", b"news", b"before"]), b":0\r\n");
    assert!(sub.frame().ends_with(b"before\r\n"));
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    // Refused, never acknowledged: "unavailable", or "outcome unknown"
    // when the write met the broken connection (it cannot tell).
    let r = p.cmd(&[b"PUBLISH", b"news", b"lost"]);
    assert!(
        r.starts_with(b"-ERR engine unavailable") || r.starts_with(b"-ERR engine outcome unknown"),
        "refused, not dropped: {}",
        show(&r)
    );
    let r = p.cmd(&[b"PUBLISH", b"chat:1", b"lost"]);
    assert!(
        r.starts_with(b"-ERR engine unavailable") || r.starts_with(b"-ERR engine outcome unknown"),
        "{}",
        show(&r)
    );
    // Redis comes back on the same port: nodes reconnect and resubscribe.
    let _back = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = p.cmd(&[b"PUBLISH", b"news", b"after"]);
        if r == b":0\r\n" {
            if let Some(f) = sub.try_frame(Duration::from_millis(500)) {
                assert!(f.ends_with(b"after\r\n"), "{}", show(&f));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not resume: {}",
            show(&r)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /healthz` on a node: its status code.
fn healthz(h: &Herald) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(h.http).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn healthz_follows_the_engine() {
    let mut redis = Redis::start(&[]);
    let port = redis.addr.port();
    let (_d, nodes) = nodes(&redis, 1);
    assert_eq!(healthz(&nodes[0]), 200);
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(&nodes[0]) != 503 {
        assert!(
            Instant::now() < deadline,
            "healthz stayed 200 with Redis down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _back = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(&nodes[0]) != 200 {
        assert!(
            Instant::now() < deadline,
            "healthz stayed 503 with Redis back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_pubsub_link_is_replaced_and_history_channels_replay_the_gap() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = hs256(json!({"sub": "u", "exp": unix_now() + 600}), SECRET);
        let mut ws = ws_connect(nodes[1].http, Some(&tok)).await;
        let r = ws_call(
            &mut ws,
            1,
            json!({"op": "subscribe", "channel": "chat:gap"}),
        )
        .await;
        assert!(r["result"].is_object(), "{r}");
        let mut p = backend(&nodes[0]);
        p.cmd(&[b"PUBLISH", b"chat:gap", b"1"]);
        assert_eq!(ws_recv(&mut ws).await["offset"], 1);
        // Every node's pub/sub link is cut; publishes go on meanwhile.
        let mut admin = Raw::connect(redis.addr);
        let killed = admin.cmd(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
        assert!(killed.starts_with(b":"), "{}", show(&killed));
        for i in 2..=30 {
            let r = p.cmd(&[b"PUBLISH", b"chat:gap", i.to_string().as_bytes()]);
            assert!(r.starts_with(b":"), "{}", show(&r));
        }
        // The subscriber on the other node sees every offset once, in
        // order: live, or replayed from the history after the link is back.
        for want in 2..=30u64 {
            let m = tokio::time::timeout(Duration::from_secs(10), ws_recv(&mut ws))
                .await
                .unwrap_or_else(|_| panic!("offset {want} never came"));
            assert_eq!(m["offset"], want, "{m}");
        }
    });
}

/// Sorted sets live in Redis: a write made straight to Redis (by another
/// application) reaches `leaderboard` watchers on every node within two
/// ticks, and a RESP subscriber of `__leaderboard__:K` hears it once, from
/// its own node, not once per node.
#[test]
fn leaderboards_follow_sorted_sets_in_redis() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut direct = Raw::connect(redis.addr);
    direct.cmd(&[b"ZADD", b"game", b"100", b"ann", b"50", b"bob"]);
    let mut resp_sub = backend(&nodes[0]);
    resp_sub.cmd(&[b"SUBSCRIBE", b"__leaderboard__:game"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = hs256(json!({"sub": "bob", "exp": unix_now() + 600}), SECRET);
        let mut ws = ws_connect(nodes[1].http, Some(&tok)).await;
        let r = ws_call(
            &mut ws,
            1,
            json!({"op": "leaderboard_subscribe", "key": "game", "top": 2}),
        )
        .await;
        assert_eq!(
            r["result"]["entries"],
            json!([{"member": "ann", "score": 100.0}, {"member": "bob", "score": 50.0}]),
            "{r}"
        );
        assert_eq!(
            (&r["result"]["rank"], &r["result"]["score"]),
            (&json!(1), &json!(50.0))
        );
        let t = Instant::now();
        direct.cmd(&[b"ZINCRBY", b"game", b"75", b"bob"]);
        let p = loop {
            let v = tokio::time::timeout(Duration::from_secs(2), ws_recv(&mut ws))
                .await
                .expect("no leaderboard push for a write made straight to Redis");
            if v["push"] == "leaderboard" {
                break v;
            }
        };
        // Two ticks of 100 ms, with room for a loaded machine.
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            p["entries"][0],
            json!({"member": "bob", "score": 125.0}),
            "{p}"
        );
        assert_eq!(p["rank"], 0, "{p}");
        // A write through another node (served from Redis) too.
        backend(&nodes[0]).cmd(&[b"ZINCRBY", b"game", b"100", b"ann"]);
        let p = loop {
            let v = tokio::time::timeout(Duration::from_secs(2), ws_recv(&mut ws))
                .await
                .expect("no leaderboard push for a ZINCRBY through another node");
            if v["push"] == "leaderboard" {
                break v;
            }
        };
        assert_eq!(
            p["entries"][0],
            json!({"member": "ann", "score": 200.0}),
            "{p}"
        );
        assert_eq!(p["rank"], 1, "{p}");
    });
    let seen: Vec<String> = std::iter::from_fn(|| resp_sub.try_frame(Duration::from_millis(800)))
        .map(|f| show(&f))
        .collect();
    let with_bob = seen
        .iter()
        .filter(|m| m.contains("125") && !m.contains("200"))
        .count();
    assert_eq!(
        with_bob, 1,
        "one message per change on the RESP channel: {seen:?}"
    );
}

/// The hub keeps this node's presence entries alive (`--presence-ttl 2s`):
/// a client still connected after several TTLs is still present.
#[test]
fn live_presence_outlasts_the_ttl() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = |u: &str| hs256(json!({"sub": u, "exp": unix_now() + 600}), SECRET);
        let mut ann = ws_connect(nodes[0].http, Some(&tok("ann"))).await;
        ws_call(&mut ann, 1, json!({"op": "subscribe", "channel": "room:9"})).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut ws = ws_connect(nodes[1].http, Some(&tok("x"))).await;
        let r = ws_call(
            &mut ws,
            2,
            json!({"op": "presence_stats", "channel": "room:9"}),
        )
        .await;
        assert_eq!(r["result"], json!({"clients": 1, "users": 1}), "{r}");
    });
}

/// A client pipelining PUBLISHes to several channels (with and without
/// history) waits for Redis about once per batch: replies come back in
/// order, every channel's messages reach a subscriber on another node in
/// order, and the history channel's offsets stay one gapless sequence.
#[test]
fn pipelined_publishes_to_many_channels_keep_each_channels_order() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut sub = backend(&nodes[1]);
    let channels: [&[u8]; 3] = [b"chat:p", b"plain:a", b"plain:b"];
    for c in channels {
        sub.cmd(&[b"SUBSCRIBE", c]);
    }
    let mut p = backend(&nodes[0]);
    let mut batch = Vec::new();
    for i in 0..300 {
        let c = channels[i % 3];
        batch.extend(encode(&[b"PUBLISH", c, format!("{i}").as_bytes()]));
    }
    p.send_raw(&batch);
    for i in 0..300 {
        // This node's receivers (none here), as Redis Cluster counts.
        assert_eq!(p.frame(), b":0\r\n", "reply {i}");
    }
    let mut next = [0usize, 1, 2];
    for _ in 0..300 {
        let f = sub.frame();
        let k = channels
            .iter()
            .position(|c| f.windows(c.len()).any(|w| w == *c))
            .expect("a message of one of the channels");
        let want = format!("\r\n{}\r\n", next[k]);
        assert!(
            f.ends_with(want.as_bytes()),
            "channel {k}: wanted {} in {}",
            next[k],
            show(&f)
        );
        next[k] += 3;
    }
    let mut r = Raw::connect(redis.addr);
    let ids = show(&r.cmd(&[b"XRANGE", b"herald:history:{chat:p}", b"-", b"+"]));
    for o in 1..=100 {
        assert!(ids.contains(&format!("{o}-0")), "offset {o} missing");
    }
}

/// Publishes await the engine on the connection (no thread parks), and a
/// client's pipeline still answers in order: PUBLISHes between forwarded
/// data commands, local commands and a protocol error at the end.
#[test]
fn publishes_between_other_commands_answer_in_order() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut sub = backend(&nodes[1]);
    sub.cmd(&[b"SUBSCRIBE", b"plain:a"]);
    sub.cmd(&[b"SUBSCRIBE", b"chat:h"]);
    let mut p = backend(&nodes[0]);
    let mut batch = Vec::new();
    for args in [
        &[&b"PUBLISH"[..], b"plain:a", b"1"][..],
        &[b"SET", b"k", b"v"],
        &[b"PUBLISH", b"chat:h", b"2"],
        &[b"PUBLISH", b"plain:a", b"3"],
        &[b"PING"],
        &[b"GET", b"k"],
        &[b"SPUBLISH", b"plain:a", b"4"],
        &[b"PUBLISH", b"plain:a", b"5"],
        &[b"ECHO", b"e"],
        &[b"PUBLISH", b"plain:a", b"6"],
    ] {
        batch.extend(encode(args));
    }
    // A protocol error after a staged PUBLISH: answered after it, then the
    // connection closes.
    batch.extend_from_slice(b"*1\r\n$x\r\n");
    p.send_raw(&batch);
    let want: [&[u8]; 11] = [
        b":0\r\n",
        b"+OK\r\n",
        b":0\r\n",
        b":0\r\n",
        b"+PONG\r\n",
        b"$1\r\nv\r\n",
        b":0\r\n",
        b":0\r\n",
        b"$1\r\ne\r\n",
        b":0\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    ];
    for (i, w) in want.iter().enumerate() {
        let f = p.frame();
        assert_eq!(show(&f), show(w), "reply {i}");
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let f = show(&sub.frame());
        seen.push(f.rsplit("\\r\\n").nth(1).unwrap_or_default().to_string());
    }
    assert_eq!(seen, ["1", "2", "3", "5", "6"], "in the publisher's order");
    let mut r = Raw::connect(redis.addr);
    let ids = show(&r.cmd(&[b"XRANGE", b"herald:history:{chat:h}", b"-", b"+"]));
    assert!(ids.contains("1-0"), "{ids}");
}

/// WebSocket and HTTP publishes await the engine too: they reach another
/// node's subscribers in order, with history offsets, and are refused
/// (not acknowledged) while Redis is down.
#[test]
fn websocket_and_http_publishes_go_through_the_engine() {
    let mut redis = Redis::start(&[]);
    let (_dir, nodes) = nodes_with(&redis, 2, &["--api-key", "key"]);
    let mut sub = backend(&nodes[1]);
    sub.cmd(&[b"SUBSCRIBE", b"chat:w"]);
    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "publish": ["*"], "subscribe": ["*"]}),
        SECRET,
    );
    let http = nodes[0].http;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ws = ws_connect(http, Some(&tok)).await;
        let r = ws_call(
            &mut ws,
            1,
            json!({"op": "publish", "channel": "chat:w", "data": "w1"}),
        )
        .await;
        assert_eq!(r["result"], json!({}), "{r}");
        let (st, body) = http_post(
            http,
            "/api/publish",
            r#"{"channel":"chat:w","data":"h2"}"#,
            Some("key"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["offset"], 2, "{body}");
        let (st, body) = http_post(
            http,
            "/api/broadcast",
            r#"{"channels":["chat:w","plain:w","chat:w"],"data":"b"}"#,
            Some("key"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let offsets: Vec<_> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["offset"].clone())
            .collect();
        assert_eq!(offsets, [json!(3), json!(null), json!(4)], "{body}");
    });
    for want in ["\"w1\"", "\"h2\"", "\"b\"", "\"b\""] {
        let f = show(&sub.frame());
        assert!(f.ends_with(&format!("{want}\\r\\n")), "{want} in {f}");
    }
    // Redis gone: refused, not acknowledged.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    rt.block_on(async {
        let mut ws = ws_connect(http, Some(&tok)).await;
        let r = ws_call(
            &mut ws,
            1,
            json!({"op": "publish", "channel": "chat:w", "data": "x"}),
        )
        .await;
        assert!(r["error"]["code"].is_number(), "{r}");
        let (st, body) = http_post(
            http,
            "/api/publish",
            r#"{"channel":"plain:w","data":"x"}"#,
            Some("key"),
        )
        .await;
        assert_eq!(st, 503, "{body}");
    });
}
