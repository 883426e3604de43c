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
        ws_call(
            &mut watcher,
            1,
            json!({"op": "subscribe", "channel": "room:1"}),
        )
        .await;
        // Its own join(s): drain whatever comes.
        let mut own = 0;
        while let Ok(v) =
            tokio::time::timeout(Duration::from_millis(500), ws_recv(&mut watcher)).await
        {
            if v["push"] == "join" && v["user"] == "watcher" {
                own += 1;
            }
        }
        let mut ann = ws_connect(nodes[0].http, Some(&tok("ann"))).await;
        ws_call(&mut ann, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
        let mut joins = 0;
        while let Ok(v) =
            tokio::time::timeout(Duration::from_millis(1000), ws_recv(&mut watcher)).await
        {
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
/// (PING, ECHO) is not stalled behind the engine calls (holds). A
/// publish that timed out (then 2 s response timeout vs `CLIENT PAUSE
/// 3000`) was answered `-ERR engine unavailable` and stored and delivered
/// anyway: measured 16 stored, 6-7 acknowledged. Now the response timeout
/// (5 s) rides out a 3 s pause, and a write whose answer never came says
/// "outcome unknown", never "unavailable": a refusal means not applied.
#[test]
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
    // (SET is served from Redis in engine mode now: it waits for Redis.)
    assert_eq!(local.cmd(&[b"ECHO", b"v"]), b"$1\r\nv\r\n");
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "local commands took {took:?}"
    );
    // Every publish is answered: an offset or an error, none lost silently;
    // a refused one was not applied.
    let (mut ok, mut unknown) = (0, 0);
    for mut p in stuck.into_iter().chain(stuck2) {
        let f = p.frame();
        if f.starts_with(b":") {
            ok += 1;
        } else if f.starts_with(b"-ERR engine outcome unknown") {
            unknown += 1;
        } else {
            assert!(f.starts_with(b"-ERR engine unavailable"), "{}", show(&f));
        }
    }
    let mut h = Raw::connect(redis.addr);
    let stored = int(&h.cmd(&[b"XLEN", b"herald:history:{chat:1}"]));
    assert!(
        (ok..=ok + unknown).contains(&stored),
        "acknowledged {ok}, unknown {unknown}, stored {stored}"
    );
    assert_eq!(ok, 16, "a 3 s pause is ridden out ({unknown} unknown)");
}

fn int(f: &[u8]) -> i64 {
    std::str::from_utf8(&f[1..f.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

/// One client floods a history channel: the stream holds exactly the
/// namespace's history_size, binary and 64 KiB channel names and names
/// that look like Herald's own keys stay in their place.
#[test]
fn history_flood_is_trimmed_exactly_and_odd_names_stay_apart() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut p = backend(&nodes[0]);
    let mut batch = Vec::new();
    for i in 0..3000 {
        batch.extend(encode(&[b"PUBLISH", b"chat:1", format!("{i}").as_bytes()]));
    }
    p.send_raw(&batch);
    for _ in 0..3000 {
        assert!(p.frame().starts_with(b":"));
    }
    let mut r = Raw::connect(redis.addr);
    assert_eq!(int(&r.cmd(&[b"XLEN", b"herald:history:{chat:1}"])), 100);
    // Names shaped like Herald's keys, globs, binary, 64 KiB.
    let long = vec![b'z'; 65536];
    let mut s = backend(&nodes[1]);
    let mut ps = backend(&nodes[1]);
    ps.cmd(&[b"PSUBSCRIBE", b"*"]);
    let names: Vec<Vec<u8>> = vec![
        b"herald:ch:x".to_vec(),
        b"probe:node0".to_vec(),
        b"chat:\x00\xff\r\n*?[".to_vec(),
        long,
    ];
    for n in &names {
        s.cmd(&[b"SUBSCRIBE", n]);
    }
    for n in &names {
        let r = p.cmd(&[b"PUBLISH", n, b"hi"]);
        assert!(r.starts_with(b":"), "{}", show(&r));
        let f = s.frame();
        assert!(
            f.ends_with(b"$2\r\nhi\r\n"),
            "{}",
            show(&f[..f.len().min(200)])
        );
        let f = ps.frame();
        assert!(
            f.starts_with(b"*4\r\n$8\r\npmessage"),
            "{}",
            show(&f[..f.len().min(200)])
        );
    }
    // The pattern `*` saw nothing else: no probes, no other kinds.
    assert!(ps.try_frame(Duration::from_millis(1500)).is_none());
    assert!(s.try_frame(Duration::from_millis(100)).is_none());
}

/// `--history-max-memory` caps history in the memory engine; on Redis a
/// client publishing to many distinct history channels grew Redis past it
/// (2,000 channels x 2 KiB stored with a 1 MiB cap). Now the nodes keep
/// one budget in Redis and delete the least recently published histories
/// while it is exceeded (docs/engine.md), within a housekeeping tick.
#[test]
fn history_max_memory_bounds_redis() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("attack4cap", CONFIG);
    let url = format!("redis://{}", redis.addr);
    let node = Herald::start(&[
        "--config",
        &cfg,
        "--engine",
        &url,
        "--requirepass",
        "pw",
        "--history-max-memory",
        "1mb",
    ]);
    let mut p = backend(&node);
    let payload = vec![b'x'; 2048];
    let mut batch = Vec::new();
    for i in 0..2000 {
        batch.extend(encode(&[
            b"PUBLISH",
            format!("chat:{i}").as_bytes(),
            &payload,
        ]));
    }
    p.send_raw(&batch);
    for _ in 0..2000 {
        assert!(p.frame().starts_with(b":"));
    }
    let mut r = Raw::connect(redis.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut kept = 0;
        for i in 0..2000 {
            kept += int(&r.cmd(&[b"XLEN", format!("herald:history:{{chat:{i}}}").as_bytes()]));
        }
        // The budget counts the payload and about 80 bytes an entry.
        if kept * (2048 + 80) <= 1 << 20 {
            assert!(kept > 0, "every history deleted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kept} entries of 2 KiB kept under a 1 MiB cap"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// kill -9 of a node holding many members: within --presence-ttl (2 s) its
/// entries leave Redis, and the survivor's view.
#[test]
fn a_killed_nodes_members_leave_redis() {
    let redis = Redis::start(&[]);
    let (_d, mut nodes) = nodes(&redis, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut r = Raw::connect(redis.addr);
    rt.block_on(async {
        let tok = |u: &str| hs256(json!({"sub": u, "exp": unix_now() + 600}), SECRET);
        let mut tabs = Vec::new();
        for i in 0..60 {
            let mut ws = ws_connect(nodes[i % 2].http, Some(&tok(&format!("u{}", i % 40)))).await;
            ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
            tabs.push(ws);
        }
        // Churn: half of node1's tabs leave.
        for i in (0..60).filter(|i| i % 2 == 1).take(15) {
            let _ = tabs[i].close(None).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(int(&r.cmd(&[b"HLEN", b"herald:presence:{room:1}"])), 45);
        let pid = nodes[0].pid();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        let _ = nodes[0].child.wait();
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let n = int(&r.cmd(&[b"HLEN", b"herald:presence:{room:1}"]));
            let e = int(&r.cmd(&[b"ZCARD", b"herald:presence-exp:{room:1}"]));
            if n == 15 && e == 15 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ghosts: {n} entries, {e} expiries"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(tabs);
    });
}

/// Two clients of one node toggle the same channel concurrently (first
/// subscriber subscribes Redis, last leaves unsubscribes): at the end one
/// holds it, and Redis has exactly that node's one subscription.
#[test]
fn concurrent_toggles_of_one_name_end_exact() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    for round in 0..5 {
        let name = format!("race:{round}");
        let mut a = backend(&nodes[1]);
        let mut b = backend(&nodes[1]);
        let mut ba = Vec::new();
        let mut bb = Vec::new();
        for _ in 0..500 {
            ba.extend(encode(&[b"SUBSCRIBE", name.as_bytes()]));
            ba.extend(encode(&[b"UNSUBSCRIBE", name.as_bytes()]));
            bb.extend(encode(&[b"UNSUBSCRIBE", name.as_bytes()]));
            bb.extend(encode(&[b"SUBSCRIBE", name.as_bytes()]));
        }
        a.send_raw(&ba);
        b.send_raw(&bb);
        for _ in 0..1000 {
            a.frame();
            b.frame();
        }
        let mut r = Raw::connect(redis.addr);
        let n = r.cmd(&[b"PUBSUB", b"NUMSUB", format!("herald:ch:{name}").as_bytes()]);
        assert!(n.ends_with(b":1\r\n"), "round {round}: {}", show(&n));
        let mut p = backend(&nodes[0]);
        p.cmd(&[b"PUBLISH", name.as_bytes(), b"after"]);
        let f = b.try_frame(Duration::from_secs(2));
        assert!(
            f.as_deref().is_some_and(|f| f.ends_with(b"after\r\n")),
            "round {round}: the holder gets it: {:?}",
            f.map(|f| show(&f))
        );
    }
}

/// A subscribe while Redis is paused: answered (error or ok) and, once Redis
/// is back, Redis's interest set matches what the node's clients hold.
/// Found: the RESP path asks the engine twice (`prepare_subscribe`, then
/// `entered` on registering); the first SUBSCRIBE succeeds just as the
/// probe-silence reconnect drops the link, the client is confirmed, the
/// second call finds no link and removes the channel from the node's
/// wanted set and the registry: a confirmed subscription that never
/// receives anything (3 of 3 runs: 1 confirmed, 0 in Redis after 10 s).
#[test]
fn subscribes_during_a_pause_leave_redis_exact() {
    let redis = Redis::start(&[]);
    let (_d, nodes) = nodes(&redis, 2);
    let mut r = Raw::connect(redis.addr);
    r.cmd(&[b"CLIENT", b"PAUSE", b"3000", b"ALL"]);
    let mut subs = Vec::new();
    let mut held = 0;
    for i in 0..4 {
        let mut s = backend(&nodes[1]);
        let f = s.cmd(&[b"SUBSCRIBE", format!("p:{i}").as_bytes()]);
        if f.starts_with(b"*3") {
            held += 1;
        }
        subs.push(s);
    }
    std::thread::sleep(Duration::from_millis(3500));
    let mut r = Raw::connect(redis.addr);
    // The link may be reconnecting after the pause (probe silence): wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = r.cmd(&[b"PUBSUB", b"CHANNELS", b"herald:ch:p:*"]);
        let count = n.iter().filter(|b| **b == b'$').count();
        if count == held {
            break;
        }
        if Instant::now() >= deadline {
            for l in nodes[1].drain_log() {
                eprintln!("node1: {l}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "{held} clients told subscribed; Redis holds {}",
            show(&n)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each client told subscribed gets a publish from the other node.
    let mut p = backend(&nodes[0]);
    let mut got = 0;
    for (i, s) in subs.iter_mut().enumerate() {
        p.cmd(&[b"PUBLISH", format!("p:{i}").as_bytes(), b"y"]);
        if s.try_frame(Duration::from_millis(500)).is_some() {
            got += 1;
        }
    }
    assert_eq!(got, held, "told subscribed vs delivered");
    // And the node still works after.
    let mut s = backend(&nodes[1]);
    s.cmd(&[b"SUBSCRIBE", b"after"]);
    let mut p = backend(&nodes[0]);
    p.cmd(&[b"PUBLISH", b"after", b"x"]);
    assert!(s.try_frame(Duration::from_secs(3)).is_some());
}

/// Every node killed: nobody is left to expire the entries, so Redis's
/// presence keys must expire themselves.
#[test]
fn with_every_node_dead_presence_keys_expire() {
    let redis = Redis::start(&[]);
    let (_d, mut nodes) = nodes(&redis, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ws = rt.block_on(async {
        let tok = hs256(json!({"sub": "ghost", "exp": unix_now() + 600}), SECRET);
        let mut ws = ws_connect(nodes[0].http, Some(&tok)).await;
        ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
        ws
    });
    let pid = nodes[0].pid();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = nodes[0].child.wait();
    drop(ws);
    std::thread::sleep(Duration::from_secs(5));
    let mut r = Raw::connect(redis.addr);
    let keys = r.cmd(&[b"KEYS", b"herald:presence*"]);
    assert_eq!(
        keys,
        b"*0\r\n",
        "ghosts past --presence-ttl 2s: {}",
        show(&keys)
    );
}
