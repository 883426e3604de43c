//! Presence: tabs of one user, join/leave pushes, the RESP and HTTP views,
//! ghosts removed by liveness, a join storm, permissions.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "presence-secret";
const CFG: &str = "[namespaces.room]\npresence = true\njoin_leave = true\n\n[namespaces.quiet]\npresence = true\n";

fn start(extra: &[&str]) -> (Herald, std::path::PathBuf) {
    let (dir, file) = temp_config("presence", CFG);
    let mut args = vec![
        "--config",
        &file,
        "--jwt-hmac-secret",
        SECRET,
        "--api-key",
        "k",
        "--requirepass",
        "backend",
    ];
    args.extend_from_slice(extra);
    (Herald::start(&args), dir)
}

fn token(sub: &str, extra: Value) -> String {
    let mut claims =
        json!({"sub": sub, "exp": unix_now() + 600, "info": {"name": sub.to_uppercase()}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            claims[k] = v;
        }
    }
    hs256(claims, SECRET)
}

async fn user(h: &Herald, sub: &str) -> Ws {
    ws_connect(h.http, Some(&token(sub, json!({})))).await
}

/// The next `kind` push about someone other than the watchers themselves
/// (a subscriber also gets its own join).
async fn next_push(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = ws_recv(ws).await;
        if v["push"] == kind && v["user"] != "watcher" {
            return v;
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: k\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    (
        text[9..12].parse().unwrap(),
        text.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn tabs_join_leave_and_views_agree() {
    let (h, _d) = start(&[]);
    let mut watcher = user(&h, "watcher").await;
    ws_call(
        &mut watcher,
        1,
        json!({"op": "subscribe", "channel": "room:1"}),
    )
    .await;
    let mut resp = Raw::backend(h.resp, "backend");
    resp.cmd(&[b"SUBSCRIBE", b"__presence__:room:1"]);

    // Alice opens two tabs: one join.
    let mut tab1 = user(&h, "alice").await;
    ws_call(
        &mut tab1,
        1,
        json!({"op": "subscribe", "channel": "room:1"}),
    )
    .await;
    let j = next_push(&mut watcher, "join").await;
    assert_eq!(
        (j["channel"].clone(), j["user"].clone(), j["info"].clone()),
        (json!("room:1"), json!("alice"), json!({"name": "ALICE"}))
    );
    let mut ev = show(&resp.frame());
    if ev.contains(r#""user":"watcher""#) {
        ev = show(&resp.frame());
    }
    assert!(
        ev.contains(r#""event":"join""#) && ev.contains(r#""user":"alice""#),
        "{ev}"
    );
    let mut tab2 = user(&h, "alice").await;
    ws_call(
        &mut tab2,
        1,
        json!({"op": "subscribe", "channel": "room:1"}),
    )
    .await;

    // The WebSocket, RESP and HTTP views agree.
    let p = ws_call(
        &mut watcher,
        2,
        json!({"op": "presence", "channel": "room:1"}),
    )
    .await;
    assert_eq!(p["result"]["users"], json!(["alice", "watcher"]), "{p}");
    assert_eq!(p["result"]["clients"].as_array().unwrap().len(), 3);
    let st = ws_call(
        &mut watcher,
        3,
        json!({"op": "presence_stats", "channel": "room:1"}),
    )
    .await;
    assert_eq!(st["result"], json!({"clients": 3, "users": 2}));
    let mut r = Raw::backend(h.resp, "backend");
    let members = show(&common::diff::sorted_frame(
        &r.cmd(&[b"SMEMBERS", b"__presence__:room:1"]),
    ));
    assert_eq!(members, "*2\\r\\n$5\\r\\nalice\\r\\n$7\\r\\nwatcher\\r\\n");
    assert_eq!(r.cmd(&[b"SCARD", b"__presence__:room:1"]), b":2\r\n");
    assert_eq!(
        r.cmd(&[b"SISMEMBER", b"__presence__:room:1", b"alice"]),
        b":1\r\n"
    );
    assert_eq!(
        r.cmd(&[b"SMISMEMBER", b"__presence__:room:1", b"alice", b"bob"]),
        b"*2\r\n:1\r\n:0\r\n"
    );
    assert!(show(&r.cmd(&[b"SADD", b"__presence__:room:1", b"mallory"]))
        .starts_with("-ERR __presence__ keys are read-only"));
    let (status, body) = http_get(h.http, "/api/presence/room:1").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["users"], p["result"]["users"]);

    // Closing one tab: no leave; the second: leave.
    drop(tab1);
    let deadline = Instant::now() + TIMEOUT;
    while ws_call(
        &mut watcher,
        4,
        json!({"op": "presence_stats", "channel": "room:1"}),
    )
    .await["result"]["clients"]
        != 2
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.cmd(&[b"SCARD", b"__presence__:room:1"]), b":2\r\n");
    ws_call(
        &mut tab2,
        2,
        json!({"op": "unsubscribe", "channel": "room:1"}),
    )
    .await;
    let l = next_push(&mut watcher, "leave").await;
    assert_eq!(l["user"], "alice");
    let ev = show(&resp.frame());
    assert!(ev.contains(r#""event":"leave""#), "{ev}");
    assert_eq!(
        r.cmd(&[b"SMEMBERS", b"__presence__:room:1"]),
        b"*1\r\n$7\r\nwatcher\r\n"
    );
}

#[tokio::test]
async fn resp_jwt_clients_enter_presence_and_namespaces_decide() {
    let (h, _d) = start(&[]);
    let mut r = Raw::connect(h.resp);
    assert_eq!(
        r.cmd(&[b"AUTH", b"bob", token("bob", json!({})).as_bytes()]),
        b"+OK\r\n"
    );
    r.cmd(&[b"SUBSCRIBE", b"quiet:1"]);
    let mut q = Raw::backend(h.resp, "backend");
    assert_eq!(
        q.cmd(&[b"SMEMBERS", b"__presence__:quiet:1"]),
        b"*1\r\n$3\r\nbob\r\n"
    );
    // quiet: presence without join/leave pushes.
    let mut w = user(&h, "w").await;
    ws_call(&mut w, 1, json!({"op": "subscribe", "channel": "quiet:1"})).await;
    let mut ann = user(&h, "ann").await;
    ws_call(
        &mut ann,
        1,
        json!({"op": "subscribe", "channel": "quiet:1"}),
    )
    .await;
    let r2 = ws_call(&mut w, 2, json!({"op": "ping"})).await;
    assert_eq!(
        r2["result"],
        json!({}),
        "no join push in a namespace without join_leave"
    );
    // Namespaces without presence answer 108; anonymous and tokenless
    // subscriptions do not enter presence.
    assert_eq!(
        ws_call(&mut w, 3, json!({"op": "presence", "channel": "other"})).await["error"]["code"],
        108
    );
    let (status, _) = http_get(h.http, "/api/presence/other").await;
    assert_eq!(status, 501);
    // Presence is visible to those who may subscribe.
    let mut limited = ws_connect(
        h.http,
        Some(&token("lim", json!({"subscribe": ["room:*"]}))),
    )
    .await;
    assert_eq!(
        ws_call(
            &mut limited,
            1,
            json!({"op": "presence", "channel": "quiet:1"})
        )
        .await["error"]["code"],
        103
    );
    assert!(ws_call(
        &mut limited,
        2,
        json!({"op": "presence", "channel": "room:9"})
    )
    .await["result"]["users"]
        .is_array());
}

/// A client that vanishes without closing (no close frame, no FIN: it just
/// stops answering) leaves presence within the liveness timeout, and its
/// leave is pushed.
#[tokio::test]
async fn ghosts_leave_within_the_liveness_timeout() {
    let (h, _d) = start(&["--ws-ping-interval", "200ms", "--ws-pong-timeout", "300ms"]);
    let mut watcher = user(&h, "watcher").await;
    ws_call(
        &mut watcher,
        1,
        json!({"op": "subscribe", "channel": "room:g"}),
    )
    .await;
    let mut ghost = user(&h, "ghost").await;
    ws_call(
        &mut ghost,
        1,
        json!({"op": "subscribe", "channel": "room:g"}),
    )
    .await;
    assert_eq!(next_push(&mut watcher, "join").await["user"], "ghost");
    // From now on the ghost's socket stays open but nobody reads it.
    let started = Instant::now();
    // The watcher keeps answering pings by reading.
    let leave = loop {
        let v = tokio::time::timeout(Duration::from_secs(5), ws_recv(&mut watcher))
            .await
            .expect("no leave push");
        if v["push"] == "leave" {
            break v;
        }
    };
    assert_eq!(leave["user"], "ghost");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ghost lingered {:?}",
        started.elapsed()
    );
    drop(ghost);
}

/// 1,000 users arriving at once: every join reaches the observer and the
/// hub keeps answering meanwhile.
#[tokio::test]
async fn join_storm() {
    const USERS: usize = 1000;
    let (h, _d) = start(&[]);
    let mut observer = user(&h, "observer").await;
    ws_call(
        &mut observer,
        1,
        json!({"op": "subscribe", "channel": "room:storm"}),
    )
    .await;
    let started = Instant::now();
    let http = h.http;
    let mut tasks = Vec::new();
    for i in 0..USERS {
        tasks.push(tokio::spawn(async move {
            let mut ws = ws_connect(http, Some(&token(&format!("u{i}"), json!({})))).await;
            let r = ws_call(
                &mut ws,
                1,
                json!({"op": "subscribe", "channel": "room:storm"}),
            )
            .await;
            assert_eq!(r["result"], json!({}));
            ws
        }));
    }
    let mut joins = 0;
    let mut probe = Raw::backend(h.resp, "backend");
    while joins < USERS {
        let v = tokio::time::timeout(Duration::from_secs(30), ws_recv(&mut observer))
            .await
            .expect("joins stalled");
        if v["push"] == "join" && v["user"] != "observer" {
            joins += 1;
        }
        if joins % 250 == 0 {
            // The hub stays responsive during the storm.
            assert_eq!(probe.cmd(&[b"PING"]), b"+PONG\r\n");
        }
    }
    let elapsed = started.elapsed();
    let mut sockets = Vec::new();
    for t in tasks {
        sockets.push(t.await.unwrap());
    }
    assert_eq!(
        probe.cmd(&[b"SCARD", b"__presence__:room:storm"]),
        format!(":{}\r\n", USERS + 1).as_bytes()
    );
    eprintln!(
        "join storm: {USERS} users joined and every join reached the observer in {elapsed:?}"
    );
}
