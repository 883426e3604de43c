//! Limits per client address (issue 12's last findings): the subscribe
//! rate, the share of the untrusted-pattern quota, the connect hook rate
//! and the WebSocket publish rate belong to the client's address (IPv4, or
//! IPv6 /64), shared by all its connections whatever their protocol, so
//! reconnecting or opening more connections does not escape them. Other
//! addresses (127.0.0.2: Linux answers all of 127/8) are unaffected,
//! password clients are not limited. The map's bounds are unit-tested in
//! `src/rate.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "client-limits-secret";
const OTHER: [u8; 4] = [127, 0, 0, 2];

fn token(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": unix_now() + 3600}), SECRET)
}

fn authed(c: &mut Raw, sub: &str) {
    assert_eq!(c.cmd(&[b"AUTH", token(sub).as_bytes()]), b"+OK\r\n");
}

fn subscribe(c: &mut Raw, name: &str) -> String {
    show(&c.cmd(&[b"SUBSCRIBE", name.as_bytes()]))
}

#[tokio::test]
async fn the_subscribe_rate_is_shared_by_an_address_across_connections_and_protocols() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "pw",
        "--subscribe-rate",
        "1",
        "--subscribe-burst",
        "5",
    ]);
    // Five connections of one address, one subscription each: the burst.
    let mut conns: Vec<Raw> = (0..5).map(|_| Raw::connect(h.resp)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        authed(c, &format!("u{i}"));
        assert!(subscribe(c, &format!("c{i}")).starts_with("*3"));
    }
    // A sixth connection, or a WebSocket, of the same address: spent.
    let mut sixth = Raw::connect(h.resp);
    authed(&mut sixth, "u6");
    let r = subscribe(&mut sixth, "c6");
    assert!(
        r.starts_with("-ERR subscribe rate limit exceeded (1 per second, 5 at once)"),
        "{r}"
    );
    let mut ws = ws_connect(h.http, Some(&token("w"))).await;
    let r = ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "w1"})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    // Another address has its own burst, on either protocol.
    let mut other = Raw::connect_from(h.resp, OTHER);
    authed(&mut other, "o");
    for i in 0..5 {
        assert!(subscribe(&mut other, &format!("o{i}")).starts_with("*3"));
    }
    let mut ws2 = ws_connect_from(h.http, Some(&token("w2")), [127, 0, 0, 3]).await;
    let r = ws_call(&mut ws2, 1, json!({"op": "subscribe", "channel": "w2"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    // The password client (a backend) is not limited, from the same address.
    let mut b = Raw::backend(h.resp, "pw");
    for i in 0..50 {
        assert!(subscribe(&mut b, &format!("b{i}")).starts_with("*3"));
    }
    // The rate refills the shared bucket: one a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(subscribe(&mut sixth, "c6").starts_with("*3"));
    let r = ws_call(&mut ws, 2, json!({"op": "subscribe", "channel": "w1"})).await;
    assert_eq!(r["error"]["code"], 107, "taken by the RESP connection: {r}");
}

/// Reconnecting is no way around the rate: one connection at a time, each
/// spending the burst, adds at most the burst plus the rate.
#[test]
fn reconnecting_does_not_refill_the_subscribe_bucket() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--subscribe-rate",
        "10",
        "--subscribe-burst",
        "20",
    ]);
    let started = Instant::now();
    let (mut added, mut conns) = (0u32, 0u32);
    while started.elapsed() < Duration::from_secs(1) {
        let mut c = Raw::connect(h.resp);
        authed(&mut c, "mallory");
        conns += 1;
        for _ in 0..20 {
            if subscribe(&mut c, "room").starts_with("*3") {
                added += 1;
            }
            c.cmd(&[b"UNSUBSCRIBE", b"room"]);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "reconnecting: {added} subscriptions in {secs:.2} s over {conns} connections ({:.0}/s)",
        f64::from(added) / secs
    );
    assert!(
        f64::from(added) <= 20.0 + 10.0 * secs + 2.0,
        "{added} in {secs:.1} s"
    );
}

fn psubscribe(c: &mut Raw, p: &str) -> String {
    show(&c.cmd(&[b"PSUBSCRIBE", p.as_bytes()]))
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_the_untrusted_pattern_quota() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "pw",
        "--max-untrusted-patterns",
        "10",
        "--max-untrusted-patterns-per-client",
        "3",
    ]);
    // Two RESP connections and a WebSocket of one address: three in all.
    let mut a = Raw::connect(h.resp);
    authed(&mut a, "a");
    let mut b = Raw::connect(h.resp);
    authed(&mut b, "b");
    assert!(psubscribe(&mut a, "a1*").starts_with("*3"));
    assert!(psubscribe(&mut b, "b1*").starts_with("*3"));
    let mut ws = ws_connect(h.http, Some(&token("w"))).await;
    let r = ws_call(&mut ws, 1, json!({"op": "psubscribe", "pattern": "w1*"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    let r = psubscribe(&mut a, "a2*");
    assert!(
        r.starts_with("-ERR max patterns per client address reached (3)"),
        "{r}"
    );
    let r = ws_call(&mut ws, 2, json!({"op": "psubscribe", "pattern": "w2*"})).await;
    assert_eq!(r["error"]["code"], 106, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per client address"),
        "{r}"
    );
    // A refused pattern took nothing: another address gets its whole share,
    // and the global quota (10) still has room for it.
    let mut other = Raw::connect_from(h.resp, OTHER);
    authed(&mut other, "o");
    for i in 0..3 {
        assert!(psubscribe(&mut other, &format!("o{i}*")).starts_with("*3"));
    }
    assert!(psubscribe(&mut other, "o3*").starts_with("-ERR max patterns per client address"));
    // The password client is not counted.
    let mut pw = Raw::backend(h.resp, "pw");
    for i in 0..20 {
        assert!(psubscribe(&mut pw, &format!("p{i}*")).starts_with("*3"));
    }
    // Leaving gives the share back: a's connection goes, b may take one.
    drop(a);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = psubscribe(&mut b, "b2*");
        if r.starts_with("*3") {
            break;
        }
        assert!(Instant::now() < deadline, "share not given back: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(psubscribe(&mut b, "b3*").starts_with("-ERR max patterns per client address"));
    // PUNSUBSCRIBE gives it back too.
    let r = ws_call(&mut ws, 3, json!({"op": "punsubscribe", "pattern": "w1*"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert!(psubscribe(&mut b, "b3*").starts_with("*3"));
}

/// A fake app whose connect hook accepts everyone as `u`, counting calls.
async fn counting_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    let c = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                    let body = br#"{"result":{"user":"u"}}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body).await;
                }
            });
        }
    });
    (app, calls)
}

/// `GET /sse` from `src`, with `extra` header lines: the status and head.
fn sse_status(http: SocketAddr, src: [u8; 4], extra: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = tcp_from(http, src);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(s, "GET /sse HTTP/1.0\r\nHost: {http}\r\n{extra}\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

#[tokio::test]
async fn the_connect_hook_rate_is_per_address_over_websocket_and_sse() {
    let (app, calls) = counting_app().await;
    let url = format!("http://{app}/connect");
    let h = Herald::start(&[
        "--proxy-connect-url",
        &url,
        "--proxy-connect-rate",
        "1",
        "--proxy-connect-burst",
        "3",
    ]);
    // Three WebSocket connects from one address reach the app.
    for i in 0..3 {
        let mut ws = ws_connect(h.http, None).await;
        let r = ws_call(&mut ws, i, json!({"op": "connect"})).await;
        assert_eq!(r["result"]["user"], "u", "{r}");
    }
    // The fourth: 107, then 3007 (reconnect later), and the app is not asked.
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 9, json!({"op": "connect"})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let (push, close) = ws_until_close(&mut ws).await;
    assert_eq!(close, Some(3007), "{push:?}");
    assert_eq!(push.map(|p| p["reconnect"].clone()), Some(json!(true)));
    // SSE from the same address shares the bucket: 429 with Retry-After.
    let (status, head) = sse_status(h.http, [127, 0, 0, 1], "");
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("retry-after: 1\r\n"), "{head}");
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    // Another address is unaffected, on either transport.
    let (status, head) = sse_status(h.http, OTHER, "");
    assert_eq!(status, 200, "{head}");
    let mut ws = ws_connect_from(h.http, None, OTHER).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect"})).await;
    assert_eq!(r["result"]["user"], "u", "{r}");
    // A token connects without the hook: not counted, not refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn trusted_proxies_name_the_client_and_others_cannot() {
    let (app, _) = counting_app().await;
    let url = format!("http://{app}/connect");
    let start = |trusted: Option<&str>| {
        let mut args = vec![
            "--proxy-connect-url",
            url.as_str(),
            "--proxy-connect-rate",
            "1",
            "--proxy-connect-burst",
            "1",
        ];
        if let Some(t) = trusted {
            args.extend(["--trusted-proxies", t]);
        }
        Herald::start(&args)
    };
    // Behind a trusted proxy (127.0.0.1), each forwarded client has its
    // own bucket, and a forged hop on the left changes nothing.
    let h = start(Some("10.0.0.0/8,127.0.0.1"));
    let xff = |ip: &str| format!("X-Forwarded-For: 6.6.6.6, {ip}, 10.1.2.3\r\n");
    assert_eq!(
        sse_status(h.http, [127, 0, 0, 1], &xff("203.0.113.1")).0,
        200
    );
    assert_eq!(
        sse_status(h.http, [127, 0, 0, 1], &xff("203.0.113.1")).0,
        429
    );
    assert_eq!(
        sse_status(h.http, [127, 0, 0, 1], &xff("203.0.113.2")).0,
        200
    );
    // A peer that is not trusted is its own client, whatever it says.
    assert_eq!(sse_status(h.http, OTHER, &xff("203.0.113.3")).0, 200);
    assert_eq!(sse_status(h.http, OTHER, &xff("203.0.113.4")).0, 429);
    // Without --trusted-proxies the header is ignored.
    let h = start(None);
    assert_eq!(
        sse_status(h.http, [127, 0, 0, 1], &xff("203.0.113.1")).0,
        200
    );
    assert_eq!(
        sse_status(h.http, [127, 0, 0, 1], &xff("203.0.113.2")).0,
        429
    );
}

#[tokio::test]
async fn the_websocket_publish_rate_is_shared_by_an_address() {
    let h = Herald::start(&["--ws-publish-rate", "5"]);
    let mut a = ws_connect(h.http, None).await;
    let mut b = ws_connect(h.http, None).await;
    let mut ok = 0;
    for i in 0..10u64 {
        let ws = if i % 2 == 0 { &mut a } else { &mut b };
        let r = ws_call(ws, i, json!({"op": "publish", "channel": "c", "data": i})).await;
        if r["result"] == json!({}) {
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], 107, "{r}");
        }
    }
    assert!(
        ok <= 6,
        "{ok} publishes of two sessions of one address, rate 5"
    );
    // A reconnect gets no fresh allowance; another address does.
    let mut c = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut c,
        1,
        json!({"op": "publish", "channel": "c", "data": 1}),
    )
    .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let mut d = ws_connect_from(h.http, None, OTHER).await;
    let r = ws_call(
        &mut d,
        1,
        json!({"op": "publish", "channel": "c", "data": 1}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
}

/// The status a WebSocket upgrade from `src` gets.
async fn upgrade_status(http: SocketAddr, src: [u8; 4], token: &str) -> u16 {
    let tcp = tcp_from(http, src);
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let url = format!("ws://{http}/ws?token={token}");
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn one_address_holds_at_most_its_sessions_when_capped() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--max-connections-per-client",
        "3",
    ]);
    let tok = token("u");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_connect(h.http, Some(&tok)).await);
    }
    assert_eq!(upgrade_status(h.http, [127, 0, 0, 1], &tok).await, 429);
    let (status, head) = sse_status(h.http, [127, 0, 0, 1], "");
    assert_eq!(status, 429, "{head}");
    // Another address is unaffected.
    assert_eq!(upgrade_status(h.http, OTHER, &tok).await, 101);
    // A session that ends gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + TIMEOUT;
    while upgrade_status(h.http, [127, 0, 0, 1], &tok).await != 101 {
        assert!(Instant::now() < deadline, "place not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An open server (no authentication: full access) is not capped.
    let open = Herald::start(&["--max-connections-per-client", "1"]);
    let _a = ws_connect(open.http, None).await;
    let _b = ws_connect(open.http, None).await;
}

/// A fake app that counts requests and never answers.
async fn silent_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    let c = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (app, calls)
}

/// All sessions together have at most 256 hook calls in flight; one
/// address may hold an eighth of them (32), so its many connections
/// waiting on a slow app cannot make every other client's call wait.
#[tokio::test]
async fn one_address_holds_only_a_share_of_the_hook_calls_in_flight() {
    let (app, calls) = silent_app().await;
    let url = format!("http://{app}/connect");
    let h = Herald::start(&["--proxy-connect-url", &url, "--proxy-timeout", "5s"]);
    let mut waiting = Vec::new();
    for i in 0..32u64 {
        let mut ws = ws_connect(h.http, None).await;
        ws_send(&mut ws, json!({"id": i, "op": "connect"})).await;
        waiting.push(ws);
    }
    let deadline = Instant::now() + TIMEOUT;
    while calls.load(Ordering::Relaxed) < 32 {
        assert!(
            Instant::now() < deadline,
            "calls: {}",
            calls.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The 33rd of this address: refused at once, the app not asked.
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect"})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    assert_eq!(ws_until_close(&mut ws).await.1, Some(3007));
    // Another address's call goes to the app.
    let mut other = ws_connect_from(h.http, None, OTHER).await;
    ws_send(&mut other, json!({"id": 1, "op": "connect"})).await;
    let deadline = Instant::now() + TIMEOUT;
    while calls.load(Ordering::Relaxed) < 33 {
        assert!(Instant::now() < deadline, "the other address was not asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(calls.load(Ordering::Relaxed), 33);
}
