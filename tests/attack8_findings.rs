//! Hostile pass on the awaited engine reads (commit 1ef1996): WebSocket,
//! SSE and HTTP `history`/`presence`/`presence_stats` through a paused,
//! killed or slow Redis, compared with memory mode.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "attack8-secret";
const CONF: &str = "[namespaces.chat]\nhistory_size = 100\npresence = true\n";

fn token() -> String {
    hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["*"], "publish": ["*"]}),
        SECRET,
    )
}

fn node(engine: Option<&Redis>, cfg: &str, extra: &[&str]) -> Herald {
    let url = engine.map(|r| format!("redis://{}", r.addr));
    let mut args = vec![
        "--config",
        cfg,
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        SECRET,
        "--api-key",
        "key",
    ];
    if let Some(u) = url.as_deref() {
        args.extend(["--engine", u]);
    }
    args.extend(extra);
    Herald::start(&args)
}

fn pause(redis: &Redis, ms: u64) {
    Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", ms.to_string().as_bytes(), b"ALL"]);
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: key\r\nConnection: close\r\n\r\n")
}

/// Node-specific values (epochs, client ids, join times) blanked.
fn norm(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if matches!(k.as_str(), "epoch" | "client" | "joined") {
                    *x = json!("_");
                } else {
                    norm(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(norm),
        _ => {}
    }
}

/// The same ops, pipelined on one session (each publish is sent before
/// the reads that must see it), and the same HTTP reads: the answers.
async fn script(http: SocketAddr) -> Vec<Value> {
    let mut member = ws_connect(http, Some(&token())).await;
    let r = ws_call(
        &mut member,
        1,
        json!({"op": "subscribe", "channel": "chat:1"}),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let mut ws = ws_connect(http, Some(&token())).await;
    let ops = [
        json!({"op": "publish", "channel": "chat:1", "data": "a"}),
        json!({"op": "history", "channel": "chat:1"}),
        json!({"op": "publish", "channel": "chat:1", "data": {"b": 2}}),
        json!({"op": "history", "channel": "chat:1", "reverse": true, "limit": 1}),
        json!({"op": "history", "channel": "chat:1", "since": {"offset": 1, "epoch": "nope"}}),
        json!({"op": "history", "channel": "chat:1", "since": {"offset": 99, "epoch": "1"}}),
        json!({"op": "history", "channel": "other:1"}),
        json!({"op": "history", "channel": "bad name\u{1}"}),
        json!({"op": "presence", "channel": "chat:1"}),
        json!({"op": "presence_stats", "channel": "chat:1"}),
        json!({"op": "presence", "channel": "other:1"}),
        json!({"op": "presence_stats", "channel": "chat:2"}),
    ];
    for (i, mut op) in ops.into_iter().enumerate() {
        op["id"] = json!(i + 1);
        ws_send(&mut ws, op).await;
    }
    let mut out = Vec::new();
    for i in 0..12 {
        let mut r = ws_recv(&mut ws).await;
        assert_eq!(r["id"], i + 1, "replies out of order: {r}");
        norm(&mut r);
        out.push(r);
    }
    for path in [
        "/api/history/chat:1",
        "/api/history/chat:1?limit=1&reverse=true",
        "/api/history/other:1",
        "/api/presence/chat:1",
        "/api/presence/other:1",
        "/api/history/chat:1?since_offset=9&since_epoch=1",
    ] {
        let (st, body) = http_request(http, get(path)).await;
        let mut v: Value = serde_json::from_str(&body).unwrap_or(json!(body));
        norm(&mut v);
        out.push(json!({"path": path, "status": st, "body": v}));
    }
    out
}

/// Every read op and HTTP read, memory mode against engine mode: the
/// same JSON and error codes, and each reply in the session's order.
#[test]
fn engine_reads_answer_as_memory_does() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-diff", CONF);
    let mem = node(None, &cfg, &[]);
    let eng = node(Some(&redis), &cfg, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async { (script(mem.http).await, script(eng.http).await) });
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "memory vs engine");
    }
}

/// A raw SSE stream: `GET /sse`, then its `session` id.
async fn sse_open(http: SocketAddr) -> (BufReader<tokio::net::TcpStream>, String) {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let req = format!("GET /sse?token={} HTTP/1.0\r\nHost: x\r\n\r\n", token());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let v = sse_event(&mut r).await.expect("connect event");
    let session = v["result"]["session"]
        .as_str()
        .expect("session")
        .to_string();
    (r, session)
}

/// The next event's JSON; `None` at the end of the stream.
async fn sse_event(r: &mut BufReader<tokio::net::TcpStream>) -> Option<Value> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(15), r.read_line(&mut line))
            .await
            .expect("stream silent")
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(d) = line.trim_end().strip_prefix("data: ") {
            return serde_json::from_str(d).ok();
        }
    }
}

async fn sse_post(http: SocketAddr, session: &str, ops: Value) -> u16 {
    let body = ops.to_string();
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let req = format!(
        "POST /sse/{session} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Redis killed while WebSocket, SSE and HTTP reads wait on it: each is
/// answered with an error in its own protocol's form (no hang, no panic),
/// and the node stays up.
#[test]
fn redis_killed_while_reads_wait() {
    let mut redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-kill", CONF);
    let mut h = node(Some(&redis), &cfg, &[]);
    let http = h.http;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for _ in 0..3 {
            wss.push(ws_connect(http, Some(&token())).await);
        }
        let (mut sse, session) = sse_open(http).await;
        pause(&redis, 5000);
        let ops = ["history", "presence", "presence_stats"];
        for (ws, op) in wss.iter_mut().zip(ops) {
            ws_send(ws, json!({"id": 1, "op": op, "channel": "chat:1"})).await;
        }
        let st = sse_post(
            http,
            &session,
            json!({"id": 5, "op": "history", "channel": "chat:1"}),
        )
        .await;
        assert_eq!(st, 202);
        let gets: Vec<_> = ["/api/history/chat:1", "/api/presence/chat:1"]
            .iter()
            .map(|p| tokio::spawn(http_request(http, get(p))))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        redis.child.kill().unwrap();
        let _ = redis.child.wait();
        for ws in wss.iter_mut() {
            let r = ws_recv(ws).await;
            assert!(r.get("error").is_some(), "{r}");
        }
        let r = sse_event(&mut sse).await.expect("sse reply");
        assert_eq!(r["id"], 5, "{r}");
        assert!(r.get("error").is_some(), "{r}");
        for g in gets {
            let (st, body) = g.await.unwrap();
            assert!(st >= 500, "{st} {body}");
        }
        eprintln!("reads answered {:?} after Redis died", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    });
    assert!(h.child.try_wait().unwrap().is_none(), "node exited");
    let log = h.drain_log().join("\n");
    assert!(!log.contains("panicked"), "{log}");
    let _ = h.terminate();
}

/// SIGTERM while WebSocket, SSE and HTTP reads wait on a paused Redis:
/// the node exits at once (sessions get their shutdown push), not after
/// the pause.
#[test]
fn sigterm_while_reads_wait() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-term", CONF);
    let mut h = node(Some(&redis), &cfg, &[]);
    let http = h.http;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ws, mut sse, gets) = rt.block_on(async {
        let mut ws = ws_connect(http, Some(&token())).await;
        let (sse, session) = sse_open(http).await;
        pause(&redis, 15000);
        ws_send(&mut ws, json!({"id": 1, "op": "history", "channel": "chat:1"})).await;
        ws_send(&mut ws, json!({"id": 2, "op": "presence", "channel": "chat:1"})).await;
        let ops = json!([{"id": 5, "op": "presence", "channel": "chat:1"}, {"id": 6, "op": "history", "channel": "chat:1"}]);
        assert_eq!(sse_post(http, &session, ops).await, 202);
        let gets: Vec<_> = ["/api/history/chat:1", "/api/presence/chat:1"]
            .iter()
            .map(|p| tokio::spawn(http_request(http, get(p))))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        (ws, sse, gets)
    });
    let t = Instant::now();
    let st = h.terminate();
    let took = t.elapsed();
    eprintln!("exit {st} {took:?} after SIGTERM with reads waiting on a paused Redis");
    rt.block_on(async {
        let (push, _) = ws_until_close(&mut ws).await;
        eprintln!("ws: {push:?}");
        while let Some(v) = sse_event(&mut sse).await {
            eprintln!("sse: {v}");
        }
        for g in gets {
            let (st, body) = g.await.unwrap();
            assert_eq!(st, 503, "{body}");
        }
    });
    // 1 s of it is the node's leave announcement to the paused Redis, as
    // with no read waiting; the HTTP reads held the listener's 5 s grace
    // (4.7 s measured) before they were given up at shutdown.
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
}

/// Read rates are taken before the wait: from one address, reads past
/// --read-burst are refused (107) at once while Redis is paused, not
/// after it.
#[test]
fn read_rate_applies_before_the_wait() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-rate", CONF);
    let h = node(
        Some(&redis),
        &cfg,
        &["--read-rate", "1", "--read-burst", "3"],
    );
    let http = h.http;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for _ in 0..8 {
            wss.push(ws_connect(http, Some(&token())).await);
        }
        pause(&redis, 3000);
        let t = Instant::now();
        for ws in wss.iter_mut() {
            ws_send(ws, json!({"id": 1, "op": "history", "channel": "chat:1"})).await;
        }
        // The sessions run at once: which three take the burst is not
        // fixed, only that five are refused before the pause ends.
        let tasks: Vec<_> = wss
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    let r =
                        tokio::time::timeout(Duration::from_millis(1500), ws_recv(&mut ws)).await;
                    (ws, r.ok())
                })
            })
            .collect();
        let mut waiting = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (_, Some(r)) => assert_eq!(r["error"]["code"], 107, "{r}"),
                (ws, None) => waiting.push(ws),
            }
        }
        let fast = t.elapsed();
        eprintln!(
            "{} refused by {fast:?} while Redis paused",
            8 - waiting.len()
        );
        assert_eq!(waiting.len(), 3);
        for mut ws in waiting {
            let r = ws_recv(&mut ws).await;
            assert!(r.get("result").is_some(), "{r}");
        }
    });
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|n| n.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A history larger than the output hard limit: engine mode refuses it
/// as memory mode does (same code), on WebSocket and HTTP.
#[test]
fn huge_history_refused_as_in_memory_mode() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-huge", CONF);
    let limits = [
        "--output-buffer-hard-limit",
        "256kb",
        "--output-buffer-soft-limit",
        "0",
    ];
    let mem = node(None, &cfg, &limits);
    let eng = node(Some(&redis), &cfg, &limits);
    let big = "x".repeat(20_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut answers = Vec::new();
    for h in [&mem, &eng] {
        let mut p = Raw::backend(h.resp, "pw");
        for _ in 0..40 {
            p.cmd(&[b"PUBLISH", b"chat:big", big.as_bytes()]);
        }
        let http = h.http;
        answers.push(rt.block_on(async {
            let mut ws = ws_connect(http, Some(&token())).await;
            let all = ws_call(&mut ws, 1, json!({"op": "history", "channel": "chat:big"})).await;
            let few = ws_call(
                &mut ws,
                2,
                json!({"op": "history", "channel": "chat:big", "limit": 2}),
            )
            .await;
            let (st, _) = http_request(http, get("/api/history/chat:big?limit=2")).await;
            (
                all["error"]["code"].clone(),
                few["result"]["publications"].as_array().map(Vec::len),
                st,
            )
        }));
    }
    eprintln!("memory {:?} engine {:?}", answers[0], answers[1]);
    assert_eq!(answers[0], answers[1]);
    assert!(answers[1].0.is_number(), "{:?}", answers[1]);
}

/// 300 sessions each send two history reads while Redis is paused: the
/// node's threads stay few and its memory bounded; all are answered, in
/// order, after the pause.
#[test]
fn read_flood_through_a_pause() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-flood", CONF);
    let h = node(
        Some(&redis),
        &cfg,
        &["--max-connections", "2000", "--read-burst", "10000"],
    );
    let (http, pid) = (h.http, h.pid());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for i in 0..300u32 {
            let src = [127, 0, 2 + (i / 200) as u8, 1 + (i % 200) as u8];
            wss.push(ws_connect_from(http, Some(&token()), src).await);
        }
        let before = vm_rss_kb(pid);
        pause(&redis, 2000);
        for ws in wss.iter_mut() {
            ws_send(ws, json!({"id": 1, "op": "history", "channel": "chat:1"})).await;
            ws_send(ws, json!({"id": 2, "op": "presence", "channel": "chat:1"})).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        let (rss, threads) = (vm_rss_kb(pid), {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .unwrap()
        });
        for ws in wss.iter_mut() {
            let a = ws_recv(ws).await;
            let b = ws_recv(ws).await;
            assert_eq!((a["id"].clone(), b["id"].clone()), (json!(1), json!(2)), "{a} {b}");
            assert!(b["result"]["clients"].is_array(), "{b}");
        }
        eprintln!("600 reads of 300 sessions through a 2 s pause: {threads} threads, RSS {before} -> {rss} kB");
        assert!(threads < 40, "{threads} threads");
        assert!(rss < before + 64 * 1024, "RSS {before} -> {rss} kB");
    });
}

/// Sessions (40, at --max-connections 40) that hang up while a read
/// waits on a Redis paused for 4 s, each with `ops` reads sent: how long
/// until 40 new sessions find room.
fn slots_back_after_close(ops: usize) -> Duration {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-close", CONF);
    let h = node(Some(&redis), &cfg, &["--max-connections", "40"]);
    let http = h.http;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for i in 0..40u8 {
            wss.push(ws_connect_from(http, Some(&token()), [127, 0, 3, 1 + i]).await);
        }
        pause(&redis, 4000);
        let t = Instant::now();
        for ws in wss.iter_mut() {
            for id in 0..ops {
                ws_send(ws, json!({"id": id, "op": "history", "channel": "chat:1"})).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for mut ws in wss {
            let _ = ws.close(None).await;
        }
        let url = format!("ws://{http}/ws?token={}", token());
        let mut fresh = Vec::new();
        while fresh.len() < 40 {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => fresh.push(ws),
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(8), "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let took = t.elapsed();
        eprintln!("{ops} reads a session: 40 slots back {took:?} after they were sent");
        took
    })
}

/// One read waiting: the hang-up is seen at once (214 ms measured, of
/// which 200 ms is the test's own sleep).
#[test]
fn a_session_closed_while_its_read_waits_frees_its_slot() {
    let took = slots_back_after_close(1);
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

/// Two reads: the second is parked (the read-ahead of one op), so the
/// socket is not read again and the close is not seen until the first
/// read's answer: the slot is held for the whole pause (4.08 s measured
/// for a 4 s pause), up to the engine's 5 s response timeout per read
/// queued behind it. No worse than before 1ef1996 (the read parked a
/// thread then), and a live client holds its slot as long, but a
/// hung-up one should not.
#[test]
#[ignore = "a second read parked behind one awaiting Redis hides the close: slot held 4.08 s through a 4 s pause (1 read: 0.21 s); fix is in ws/session.rs read-ahead, not small"]
fn a_session_closed_with_a_read_parked_frees_its_slot() {
    let took = slots_back_after_close(2);
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

/// A subscribe then presence reads on the same session, and an
/// unsubscribe then presence_stats: each read sees the op before it, as
/// in memory mode.
#[test]
fn presence_reads_see_the_sessions_own_subscribe() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-own", CONF);
    let mem = node(None, &cfg, &[]);
    let eng = node(Some(&redis), &cfg, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut out = Vec::new();
    for h in [&mem, &eng] {
        let http = h.http;
        out.push(rt.block_on(async {
            let mut ws = ws_connect(http, Some(&token())).await;
            let ops = [
                json!({"op": "subscribe", "channel": "chat:9"}),
                json!({"op": "presence_stats", "channel": "chat:9"}),
                json!({"op": "presence", "channel": "chat:9"}),
                json!({"op": "unsubscribe", "channel": "chat:9"}),
                json!({"op": "presence_stats", "channel": "chat:9"}),
                json!({"op": "subscribe", "channel": "chat:9"}),
                json!({"op": "presence_stats", "channel": "chat:9"}),
            ];
            for (i, mut op) in ops.into_iter().enumerate() {
                op["id"] = json!(i + 1);
                ws_send(&mut ws, op).await;
            }
            let mut rs = Vec::new();
            for i in 0..7 {
                let mut r = ws_recv(&mut ws).await;
                assert_eq!(r["id"], i + 1, "{r}");
                norm(&mut r);
                rs.push(r);
            }
            rs
        }));
    }
    for (a, b) in out[0].iter().zip(&out[1]) {
        assert_eq!(a, b, "memory vs engine");
    }
}

/// Reads through a Redis paused past the engine's 5 s response timeout:
/// each is answered with an error before the pause ends.
#[test]
fn reads_time_out_through_a_long_pause() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("a8-long", CONF);
    let h = node(Some(&redis), &cfg, &[]);
    let http = h.http;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut wss = Vec::new();
        for _ in 0..3 {
            wss.push(ws_connect(http, Some(&token())).await);
        }
        pause(&redis, 9000);
        let t = Instant::now();
        for (ws, op) in wss
            .iter_mut()
            .zip(["history", "presence", "presence_stats"])
        {
            ws_send(ws, json!({"id": 1, "op": op, "channel": "chat:1"})).await;
        }
        let get = tokio::spawn(http_request(http, get("/api/history/chat:1")));
        for ws in wss.iter_mut() {
            let r = ws_recv(ws).await;
            eprintln!("{:?}: {r}", t.elapsed());
            assert!(r.get("error").is_some(), "{r}");
        }
        let (st, body) = get.await.unwrap();
        eprintln!("{:?}: HTTP {st} {body}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    });
}
