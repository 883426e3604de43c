//! Subscribing in engine mode: a subscribe of a name the node does not
//! carry yet awaits Redis on the connection's task (no thread parks on
//! it), and the per-name ordering of subscribes and unsubscribes in Redis
//! holds through races: two clients on one new name, a subscribe against
//! the last unsubscribe, a client gone while its subscribe waits.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The heavy test (hundreds of connections) runs alone: its thread count
/// is what it checks.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn node(redis: &Redis) -> Herald {
    Herald::start(&[
        "--engine",
        &format!("redis://{}", redis.addr),
        "--requirepass",
        "pw",
        "--max-connections",
        "2000",
    ])
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Subscribers of `channel` in Redis (the node's pub/sub connection: 0 or 1).
fn redis_numsub(redis: &Redis, channel: &str) -> i64 {
    let f = Raw::connect(redis.addr).cmd(&[
        b"PUBSUB",
        b"NUMSUB",
        format!("herald:ch:{channel}").as_bytes(),
    ]);
    let s = show(&f);
    s.trim_end_matches("\\r\\n")
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("NUMSUB reply {s}"))
}

/// Waits until `f` holds (at most `limit`).
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Redis's count of SUBSCRIBE calls since the last `CONFIG RESETSTAT`.
fn subscribe_calls(redis: &Redis) -> u64 {
    let f = Raw::connect(redis.addr).cmd(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&f).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_subscribe:calls="))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn subscribed(frame: &[u8], channel: &str) -> bool {
    let s = show(frame);
    s.contains("subscribe") && s.contains(channel) && !s.starts_with('-')
}

/// 300 connections each SUBSCRIBE a channel of their own while Redis is
/// paused (`CLIENT PAUSE 2000 ALL` holds the node's SUBSCRIBEs too; 2 s
/// stays under the pub/sub probes' 3 s of silence): each confirmation
/// comes after the pause, and meanwhile the node runs a handful of
/// threads, not one per waiting subscribe (measured: 3; 303 when each
/// subscribe parked its thread). Then a publish on each channel reaches
/// its subscriber.
#[test]
fn three_hundred_subscribes_through_a_redis_stall_park_no_threads() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let redis = Redis::start(&[]);
    let h = node(&redis);
    let n = 300;
    let mut clients: Vec<Raw> = (0..n).map(|_| Raw::backend(h.resp, "pw")).collect();
    Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"2000", b"ALL"]);
    let paused = Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&[b"SUBSCRIBE", format!("stall:{i}").as_bytes()]);
    }
    std::thread::sleep(Duration::from_millis(700));
    let threads = thread_count(h.pid());
    // Nothing is confirmed before Redis is: the first confirmation comes
    // after the pause.
    let early = clients[0].try_frame(Duration::from_millis(100));
    assert!(early.is_none() || paused.elapsed() > Duration::from_millis(1900));
    let mut confirmed = usize::from(early.is_some_and(|f| subscribed(&f, "stall:0")));
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        if c.try_frame(Duration::from_secs(8))
            .is_some_and(|f| subscribed(&f, &format!("stall:{i}")))
        {
            confirmed += 1;
        }
    }
    if confirmed < n {
        // stall:0 had no frame within 100 ms: it comes now.
        if clients[0]
            .try_frame(Duration::from_secs(8))
            .is_some_and(|f| subscribed(&f, "stall:0"))
        {
            confirmed += 1;
        }
    }
    let after = paused.elapsed();
    eprintln!("{n} subscribes through a 2 s Redis pause: {threads} threads during it, {confirmed} confirmed after {after:?}");
    assert_eq!(confirmed, n);
    assert!(
        after >= Duration::from_millis(1900),
        "confirmed in {after:?}"
    );
    assert!(threads < 40, "{threads} threads while subscribes waited");
    let mut p = Raw::backend(h.resp, "pw");
    for i in 0..n {
        let r = p.cmd(&[b"PUBLISH", format!("stall:{i}").as_bytes(), b"hi"]);
        assert_eq!(r, b":1\r\n", "stall:{i}");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.try_frame(Duration::from_secs(5)).expect("message");
        let s = show(&m);
        assert!(
            s.contains("message") && s.contains(&format!("stall:{i}")),
            "{s}"
        );
    }
    assert_eq!(redis_numsub(&redis, "stall:7"), 1);
}

/// Two clients subscribing one new channel at once (both waiting on a
/// paused Redis): Redis gets one SUBSCRIBE, both are confirmed after it,
/// both receive.
#[test]
fn two_clients_on_one_new_channel_make_one_redis_subscribe() {
    let redis = Redis::start(&[]);
    let h = node(&redis);
    let (mut a, mut b) = (Raw::backend(h.resp, "pw"), Raw::backend(h.resp, "pw"));
    Raw::connect(redis.addr).cmd(&[b"CONFIG", b"RESETSTAT"]);
    Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"500", b"ALL"]);
    a.send(&[b"SUBSCRIBE", b"twin"]);
    b.send(&[b"SUBSCRIBE", b"twin"]);
    assert!(a.try_frame(Duration::from_millis(200)).is_none());
    assert!(b.try_frame(Duration::from_millis(10)).is_none());
    assert!(subscribed(
        &a.try_frame(Duration::from_secs(5)).unwrap(),
        "twin"
    ));
    assert!(subscribed(
        &b.try_frame(Duration::from_secs(5)).unwrap(),
        "twin"
    ));
    assert_eq!(subscribe_calls(&redis), 1);
    let r = Raw::backend(h.resp, "pw").cmd(&[b"PUBLISH", b"twin", b"x"]);
    assert_eq!(r, b":2\r\n");
    for c in [&mut a, &mut b] {
        assert!(show(&c.frame()).contains("twin"));
    }
}

/// A subscribe racing the last unsubscribe of the same channel (another
/// client's), many times over: the node always ends subscribed in Redis
/// while it has a subscriber, and not when it has none.
#[test]
fn a_subscribe_racing_the_last_unsubscribe_ends_consistent() {
    let redis = Redis::start(&[]);
    let h = node(&redis);
    let mut a = Raw::backend(h.resp, "pw");
    let mut b = Raw::backend(h.resp, "pw");
    let mut p = Raw::backend(h.resp, "pw");
    for i in 0..40 {
        let ch = format!("race:{i}");
        assert!(subscribed(&a.cmd(&[b"SUBSCRIBE", ch.as_bytes()]), &ch));
        // Both at once: A leaves (the last subscriber, until B arrives).
        a.send(&[b"UNSUBSCRIBE", ch.as_bytes()]);
        b.send(&[b"SUBSCRIBE", ch.as_bytes()]);
        a.frame();
        assert!(subscribed(&b.frame(), &ch));
        assert_eq!(p.cmd(&[b"PUBLISH", ch.as_bytes(), b"x"]), b":1\r\n");
        assert!(show(&b.frame()).contains(&ch));
        assert_eq!(redis_numsub(&redis, &ch), 1, "{ch}");
    }
    // One client flipping a channel in one pipeline: subscribed at the end.
    let mut pipe = Vec::new();
    for _ in 0..50 {
        pipe.extend(encode(&[b"SUBSCRIBE", b"flip"]));
        pipe.extend(encode(&[b"UNSUBSCRIBE", b"flip"]));
    }
    pipe.extend(encode(&[b"SUBSCRIBE", b"flip"]));
    a.send_raw(&pipe);
    for _ in 0..101 {
        a.frame();
    }
    assert_eq!(p.cmd(&[b"PUBLISH", b"flip", b"x"]), b":1\r\n");
    assert!(show(&a.frame()).contains("flip"));
    assert_eq!(redis_numsub(&redis, "flip"), 1);
    // And unsubscribed at the end: Redis lets go (unsubscribes do not wait
    // for Redis: soon after).
    let mut pipe = Vec::new();
    for _ in 0..50 {
        pipe.extend(encode(&[b"UNSUBSCRIBE", b"flip"]));
        pipe.extend(encode(&[b"SUBSCRIBE", b"flip"]));
    }
    pipe.extend(encode(&[b"UNSUBSCRIBE", b"flip"]));
    a.send_raw(&pipe);
    for _ in 0..101 {
        a.frame();
    }
    until(Duration::from_secs(5), "flip left in Redis", || {
        redis_numsub(&redis, "flip") == 0
    });
    for i in 0..40 {
        b.cmd(&[b"UNSUBSCRIBE", format!("race:{i}").as_bytes()]);
    }
    until(
        Duration::from_secs(5),
        "race channels left in Redis",
        || (0..40).all(|i| redis_numsub(&redis, &format!("race:{i}")) == 0),
    );
}

/// Clients that leave while their subscribe waits for a paused Redis
/// leave nothing: no registration, and Redis is unsubscribed once the
/// pause ends. A later subscriber of the same channel is served.
#[test]
fn a_client_gone_while_its_subscribe_waits_leaves_nothing() {
    let redis = Redis::start(&[]);
    let h = node(&redis);
    Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"700", b"ALL"]);
    for i in 0..20 {
        let mut c = Raw::backend(h.resp, "pw");
        c.send(&[b"SUBSCRIBE", format!("ghost:{i}").as_bytes()]);
        c.send(&[b"PSUBSCRIBE", format!("ghostp:{i}:*").as_bytes()]);
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(900));
    let mut p = Raw::backend(h.resp, "pw");
    until(Duration::from_secs(5), "ghosts left in Redis", || {
        (0..20).all(|i| redis_numsub(&redis, &format!("ghost:{i}")) == 0)
    });
    let pats = Raw::connect(redis.addr).cmd(&[b"PUBSUB", b"NUMPAT"]);
    // The node's own patterns, if any, are not the ghosts': none of them.
    assert_eq!(pats, b":0\r\n", "{}", show(&pats));
    assert_eq!(p.cmd(&[b"PUBLISH", b"ghost:3", b"x"]), b":0\r\n");
    let mut c = Raw::backend(h.resp, "pw");
    assert!(subscribed(&c.cmd(&[b"SUBSCRIBE", b"ghost:3"]), "ghost:3"));
    assert_eq!(p.cmd(&[b"PUBLISH", b"ghost:3", b"x"]), b":1\r\n");
    assert!(show(&c.frame()).contains("ghost:3"));
}

/// A SUBSCRIBE of many new channels in one command waits for Redis once
/// (the engine subscribes go out together), confirms them in order, and
/// a command pipelined behind it runs after it.
#[test]
fn a_many_channel_subscribe_confirms_in_order_and_keeps_the_pipeline() {
    let redis = Redis::start(&[]);
    let h = node(&redis);
    let mut c = Raw::backend(h.resp, "pw");
    let names: Vec<String> = (0..200).map(|i| format!("many:{i}")).collect();
    let mut sub: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    sub.extend(names.iter().map(|n| n.as_bytes()));
    let mut pipe = encode(&sub);
    pipe.extend(encode(&[b"PING"]));
    c.send_raw(&pipe);
    for (i, n) in names.iter().enumerate() {
        let f = c.frame();
        let s = show(&f);
        assert!(
            s.contains(n.as_str()) && s.ends_with(&format!(":{}\\r\\n", i + 1)),
            "{s}"
        );
    }
    let pong = show(&c.frame());
    assert!(pong.contains("pong"), "{pong}");
    let mut p = Raw::backend(h.resp, "pw");
    assert_eq!(p.cmd(&[b"PUBLISH", b"many:199", b"x"]), b":1\r\n");
    assert!(show(&c.frame()).contains("many:199"));
    // Shard channels and patterns go the same way.
    assert!(show(&c.cmd(&[b"SSUBSCRIBE", b"shard:1"])).contains("shard:1"));
    assert!(show(&c.cmd(&[b"PSUBSCRIBE", b"pat:*"])).contains("pat:*"));
    assert_eq!(p.cmd(&[b"SPUBLISH", b"shard:1", b"y"]), b":1\r\n");
    assert!(show(&c.frame()).contains("shard:1"));
    p.cmd(&[b"PUBLISH", b"pat:z", b"z"]);
    assert!(show(&c.frame()).contains("pat:z"));
}

fn ws_node(redis: &Redis) -> Herald {
    Herald::start(&[
        "--engine",
        &format!("redis://{}", redis.addr),
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        WS_SECRET,
        "--max-connections",
        "2000",
    ])
}

const WS_SECRET: &str = "engine-subscribe-secret";

fn ws_token() -> String {
    hs256(
        serde_json::json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["*"], "psubscribe": true}),
        WS_SECRET,
    )
}

/// WebSocket `subscribe` and `psubscribe` through a 2 s Redis pause: each
/// session awaits the engine (no thread parks), replies after the pause,
/// then receives; a session closed while it waited leaves nothing in
/// Redis.
#[test]
fn websocket_subscribes_through_a_redis_stall_park_no_threads() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let redis = Redis::start(&[]);
    let h = ws_node(&redis);
    let (http, pid, tok) = (h.http, h.pid(), ws_token());
    let n = 150;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for i in 0..n {
            let src = [127, 0, 1 + (i / 200) as u8, 1 + (i % 200) as u8];
            wss.push(ws_connect_from(http, Some(&tok), src).await);
        }
        let mut ghost = ws_connect_from(http, Some(&tok), [127, 0, 9, 9]).await;
        Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"2000", b"ALL"]);
        let paused = Instant::now();
        for (i, ws) in wss.iter_mut().enumerate() {
            let op = match i % 10 {
                0 => serde_json::json!({"id": 1, "op": "psubscribe", "pattern": format!("wsp:{i}:*")}),
                _ => serde_json::json!({"id": 1, "op": "subscribe", "channel": format!("ws:{i}")}),
            };
            ws_send(ws, op).await;
        }
        ws_send(&mut ghost, serde_json::json!({"id": 1, "op": "subscribe", "channel": "wsghost"})).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let threads = thread_count(pid);
        drop(ghost);
        for ws in wss.iter_mut() {
            let r = ws_recv(ws).await;
            assert_eq!(r["result"], serde_json::json!({}), "{r}");
        }
        let after = paused.elapsed();
        eprintln!("{n} WebSocket subscribes through a 2 s Redis pause: {threads} threads during it, all confirmed after {after:?}");
        assert!(after >= Duration::from_millis(1900), "confirmed in {after:?}");
        assert!(threads < 40, "{threads} threads while subscribes waited");
        let mut p = Raw::backend(h.resp, "pw");
        for i in 0..n {
            let ch = match i % 10 {
                0 => format!("wsp:{i}:x"),
                _ => format!("ws:{i}"),
            };
            assert_eq!(p.cmd(&[b"PUBLISH", ch.as_bytes(), b"1"]), b":1\r\n", "{ch}");
        }
        for ws in wss.iter_mut() {
            let m = ws_recv(ws).await;
            assert!(m.to_string().contains("ws"), "{m}");
        }
    });
    until(
        Duration::from_secs(5),
        "the closed session's channel left Redis",
        || redis_numsub(&redis, "wsghost") == 0,
    );
}

/// SUBSCRIBE inside MULTI/EXEC in engine mode: the transaction awaits the
/// engine subscribes (no thread parks: 60 transactions through a 2 s
/// pause), EXEC's reply holds the confirmations, the subscriptions are
/// registered after it and receive; one dropped and taken again inside
/// the same EXEC stays.
#[test]
fn subscribes_inside_exec_await_the_engine() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let redis = Redis::start(&[]);
    let h = node(&redis);
    let n = 60;
    let mut clients: Vec<Raw> = (0..n).map(|_| Raw::backend(h.resp, "pw")).collect();
    for c in clients.iter_mut() {
        assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let (a, b) = (format!("tx:{i}:a"), format!("tx:{i}:b"));
        for cmd in [
            vec![&b"SUBSCRIBE"[..], a.as_bytes(), b.as_bytes()],
            vec![b"SET", a.as_bytes(), b"v"],
            vec![b"UNSUBSCRIBE", a.as_bytes()],
            vec![b"SUBSCRIBE", a.as_bytes()],
        ] {
            assert_eq!(c.cmd(&cmd), b"+QUEUED\r\n");
        }
    }
    Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"2000", b"ALL"]);
    let paused = Instant::now();
    for c in clients.iter_mut() {
        c.send(&[b"EXEC"]);
    }
    std::thread::sleep(Duration::from_millis(700));
    let threads = thread_count(h.pid());
    for (i, c) in clients.iter_mut().enumerate() {
        // As from Redis, a SUBSCRIBE of two channels answers two arrays
        // inside EXEC's four: the last confirmation follows it.
        let f = show(&c.try_frame(Duration::from_secs(8)).expect("EXEC reply"));
        assert!(f.starts_with("*4"), "{f}");
        assert!(f.contains(&format!("tx:{i}:b")) && f.contains("+OK"), "{f}");
        assert!(!f.contains("-ERR"), "{f}");
        let last = show(&c.frame());
        assert!(
            last.contains("subscribe") && last.contains(&format!("tx:{i}:a")),
            "{last}"
        );
    }
    let after = paused.elapsed();
    eprintln!("{n} EXECs with SUBSCRIBE through a 2 s Redis pause: {threads} threads during it, answered after {after:?}");
    assert!(
        after >= Duration::from_millis(1900),
        "answered in {after:?}"
    );
    assert!(threads < 40, "{threads} threads while EXECs waited");
    let mut p = Raw::backend(h.resp, "pw");
    for i in 0..n {
        for s in ["a", "b"] {
            let ch = format!("tx:{i}:{s}");
            assert_eq!(p.cmd(&[b"PUBLISH", ch.as_bytes(), b"1"]), b":1\r\n", "{ch}");
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for s in ["a", "b"] {
            let m = show(&c.frame());
            assert!(m.contains(&format!("tx:{i}:{s}")), "{m}");
        }
    }
    assert_eq!(redis_numsub(&redis, "tx:3:a"), 1);
}

/// The last unsubscribe and another client's subscribe of the same
/// channels while Redis is paused (the node's UNSUBSCRIBEs stuck in it):
/// whichever way each race goes, the subscriber ends subscribed in Redis
/// and receives; then, everyone gone, Redis holds none of them.
#[test]
fn subscribe_against_the_last_unsubscribe_through_a_pause() {
    let redis = Redis::start(&[]);
    let h = node(&redis);
    let (mut a, mut b) = (Raw::backend(h.resp, "pw"), Raw::backend(h.resp, "pw"));
    let names: Vec<String> = (0..20).map(|i| format!("hand:{i}")).collect();
    let mut sub: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    sub.extend(names.iter().map(|n| n.as_bytes()));
    let mut unsub: Vec<&[u8]> = vec![b"UNSUBSCRIBE"];
    unsub.extend(names.iter().map(|n| n.as_bytes()));
    a.send(&sub);
    for _ in &names {
        a.frame();
    }
    Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"700", b"ALL"]);
    a.send(&unsub);
    b.send(&sub);
    for _ in &names {
        a.frame();
    }
    for n in &names {
        assert!(subscribed(&b.try_frame(Duration::from_secs(5)).unwrap(), n));
    }
    let mut p = Raw::backend(h.resp, "pw");
    for n in &names {
        assert_eq!(p.cmd(&[b"PUBLISH", n.as_bytes(), b"x"]), b":1\r\n");
        assert!(show(&b.frame()).contains(n.as_str()));
        assert_eq!(redis_numsub(&redis, n), 1, "{n}");
    }
    drop(b);
    until(Duration::from_secs(5), "channels left in Redis", || {
        names.iter().all(|n| redis_numsub(&redis, n) == 0)
    });
}

/// Redis gone: a subscribe of a new name is refused with the engine's
/// error and nothing is registered (RESP, inside EXEC, WebSocket); a name
/// the node carries already is still confirmed (its subscription is held
/// for Redis's return). Once Redis is back, the same subscribes succeed.
#[test]
fn a_subscribe_the_engine_refuses_is_only_an_error() {
    let mut redis = Redis::start(&[]);
    let port = redis.addr.port();
    let h = ws_node(&redis);
    let mut held = Raw::backend(h.resp, "pw");
    assert!(subscribed(&held.cmd(&[b"SUBSCRIBE", b"kept"]), "kept"));
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Raw::backend(h.resp, "pw");
    c.send(&[b"SUBSCRIBE", b"kept", b"fresh", b"kept"]);
    let kept = show(&c.frame());
    assert!(
        kept.contains("kept") && kept.ends_with(":1\\r\\n"),
        "{kept}"
    );
    let refused = show(&c.frame());
    assert!(refused.starts_with("-ERR engine"), "{refused}");
    let again = show(&c.frame());
    assert!(
        again.contains("kept") && again.ends_with(":1\\r\\n"),
        "{again}"
    );
    let mut m = Raw::backend(h.resp, "pw");
    let n = show(&m.cmd(&[b"PUBSUB", b"NUMSUB", b"fresh"]));
    assert!(n.ends_with(":0\\r\\n"), "{n}");
    assert_eq!(m.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(m.cmd(&[b"PSUBSCRIBE", b"fresh:*"]), b"+QUEUED\r\n");
    let r = show(&m.cmd(&[b"EXEC"]));
    assert!(r.starts_with("*1\\r\\n-ERR engine"), "{r}");
    assert_eq!(m.cmd(&[b"PUBSUB", b"NUMPAT"]), b":0\r\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ws = ws_connect(h.http, Some(&ws_token())).await;
        let r = ws_call(
            &mut ws,
            1,
            serde_json::json!({"op": "subscribe", "channel": "fresh"}),
        )
        .await;
        assert!(r["error"].is_object(), "{r}");
    });
    let _back = Redis::start_on(port);
    let t = Instant::now();
    loop {
        let r = c.cmd(&[b"SUBSCRIBE", b"fresh"]);
        if subscribed(&r, "fresh") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{}", show(&r));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut p = Raw::backend(h.resp, "pw");
    assert_eq!(p.cmd(&[b"PUBLISH", b"fresh", b"x"]), b":1\r\n");
    assert!(show(&c.frame()).contains("fresh"));
}

/// WebSocket `history`, `presence` and `presence_stats`, and HTTP
/// `/api/history` and `/api/presence`, through a 2 s Redis pause: each
/// awaits the engine on its own task (no thread parks) and is answered
/// after the pause.
#[test]
fn reads_through_a_redis_stall_park_no_threads() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config(
        "reads",
        "[namespaces.chat]\nhistory_size = 100\npresence = true\n",
    );
    let h = Herald::start(&[
        "--config",
        &cfg,
        "--engine",
        &format!("redis://{}", redis.addr),
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        WS_SECRET,
        "--api-key",
        "key",
    ]);
    let mut p = Raw::backend(h.resp, "pw");
    for i in 0..3 {
        p.cmd(&[b"PUBLISH", b"chat:1", format!("m{i}").as_bytes()]);
    }
    let (http, pid, tok) = (h.http, h.pid(), ws_token());
    let n = 120;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for i in 0..n {
            let src = [127, 0, 1 + (i / 200) as u8, 1 + (i % 200) as u8];
            wss.push(ws_connect_from(http, Some(&tok), src).await);
        }
        // A presence entry to read.
        let mut member = ws_connect_from(http, Some(&tok), [127, 0, 9, 1]).await;
        let r = ws_call(&mut member, 1, serde_json::json!({"op": "subscribe", "channel": "chat:1"})).await;
        assert_eq!(r["result"]["offset"], 3, "{r}");
        Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"2000", b"ALL"]);
        let paused = Instant::now();
        for (i, ws) in wss.iter_mut().enumerate() {
            let op = match i % 3 {
                0 => serde_json::json!({"id": 1, "op": "history", "channel": "chat:1"}),
                1 => serde_json::json!({"id": 1, "op": "presence", "channel": "chat:1"}),
                _ => serde_json::json!({"id": 1, "op": "presence_stats", "channel": "chat:1"}),
            };
            ws_send(ws, op).await;
        }
        let gets: Vec<_> = (0..20)
            .map(|i| {
                let path = if i % 2 == 0 { "/api/history/chat:1" } else { "/api/presence/chat:1" };
                tokio::spawn(http_request(
                    http,
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: key\r\nConnection: close\r\n\r\n"),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let threads = thread_count(pid);
        for (i, ws) in wss.iter_mut().enumerate() {
            let r = ws_recv(ws).await;
            let want = match i % 3 {
                0 => "publications",
                1 => "clients",
                _ => "users",
            };
            assert!(r["result"].get(want).is_some(), "{r}");
        }
        for g in gets {
            let (st, body) = g.await.unwrap();
            assert_eq!(st, 200, "{body}");
        }
        let after = paused.elapsed();
        eprintln!("{n} WebSocket and 20 HTTP reads through a 2 s Redis pause: {threads} threads during it, all answered after {after:?}");
        assert!(after >= Duration::from_millis(1900), "answered in {after:?}");
        assert!(threads < 40, "{threads} threads while reads waited");
    });
}
