//! The last per-address limits of issue 12: failed authentications (RESP
//! AUTH and HELLO AUTH, JWTs over RESP, WebSocket and SSE, the HTTP API's
//! key), publishes of RESP clients without the password, reads
//! (`history`, `presence`, `ping`, `refresh`, `/api/history`,
//! `/api/presence`) and each address's share of the global output budget.
//! One address is held back; another address (127.0.0.2: Linux answers
//! all of 127/8) and password clients are not.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SECRET: &str = "address-limits-secret";
const HERE: [u8; 4] = [127, 0, 0, 1];
const OTHER: [u8; 4] = [127, 0, 0, 2];

fn token(sub: &str) -> String {
    hs256(
        json!({"sub": sub, "exp": unix_now() + 3600, "subscribe": ["*"], "publish": ["*"]}),
        SECRET,
    )
}

fn forged(sub: &str) -> String {
    hs256(
        json!({"sub": sub, "exp": unix_now() + 3600}),
        "not-the-secret",
    )
}

fn expired(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": unix_now() - 60}), SECRET)
}

const REFUSED: &str = "-ERR too many failed authentications from this address";

/// An HTTP/1.0 request from `src`: the status and the whole answer.
fn http(addr: SocketAddr, src: [u8; 4], path: &str, headers: &str) -> (u16, String) {
    let mut s = tcp_from(addr, src);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn failed_resp_authentications_are_limited_per_address_and_successes_cost_nothing() {
    let h = Herald::start(&[
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        SECRET,
        "--auth-failure-rate",
        "1",
        "--auth-failure-burst",
        "5",
    ]);
    let mut c = Raw::connect(h.resp);
    // Successes take nothing from the budget: a backend that knows the
    // password is never held back by its own reconnects.
    for _ in 0..50 {
        assert_eq!(c.cmd(&[b"AUTH", b"pw"]), b"+OK\r\n");
        assert_eq!(c.cmd(&[b"AUTH", token("u").as_bytes()]), b"+OK\r\n");
    }
    // Five failures of every kind: each checked, each WRONGPASS.
    let fails: [Vec<&[u8]>; 5] = [
        vec![b"AUTH", b"wrong"],
        vec![b"AUTH", b"default", b"wrong"],
        vec![b"AUTH", forged("u").leak().as_bytes()],
        vec![b"AUTH", expired("u").leak().as_bytes()],
        vec![b"HELLO", b"3", b"AUTH", b"default", b"wrong"],
    ];
    for args in &fails {
        let r = show(&c.cmd(args));
        assert!(r.starts_with("-WRONGPASS"), "{r}");
    }
    // Spent: refused unchecked, the right password too, on any connection
    // of the address.
    let r = show(&c.cmd(&[b"AUTH", b"pw"]));
    assert!(r.starts_with(REFUSED), "{r}");
    let mut c2 = Raw::connect(h.resp);
    let r = show(&c2.cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"pw"]));
    assert!(r.starts_with(REFUSED), "{r}");
    // Another address has its own budget.
    let mut o = Raw::connect_from(h.resp, OTHER);
    assert!(show(&o.cmd(&[b"AUTH", b"wrong"])).starts_with("-WRONGPASS"));
    assert_eq!(o.cmd(&[b"AUTH", b"pw"]), b"+OK\r\n");
    // One more attempt a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(c2.cmd(&[b"AUTH", b"pw"]), b"+OK\r\n");
    // An open server has no secret to guess: Redis's answer every time.
    let open = Herald::start(&[]);
    let mut c = Raw::connect(open.resp);
    for _ in 0..20 {
        let r = show(&c.cmd(&[b"AUTH", b"x"]));
        assert!(r.starts_with("-ERR AUTH <password> called without"), "{r}");
    }
}

/// Wrong passwords checked per second from one address, pipelined 100 at
/// a time for `secs`.
fn brute_force(h: &Herald, secs: f64) -> (f64, usize) {
    let mut c = Raw::connect(h.resp);
    let batch: Vec<u8> = (0..100)
        .flat_map(|i| encode(&[b"AUTH", format!("guess{i}").as_bytes()]))
        .collect();
    let (mut checked, mut refused) = (0usize, 0usize);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        c.send_raw(&batch);
        for _ in 0..100 {
            let r = c.frame();
            if r.starts_with(b"-WRONGPASS") {
                checked += 1;
            } else {
                assert!(show(&r).starts_with(REFUSED), "{}", show(&r));
                refused += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (checked as f64 / secs, checked + refused)
}

#[test]
fn a_password_brute_force_over_resp_runs_at_the_failure_rate() {
    let open = Herald::start(&["--requirepass", "pw", "--auth-failure-rate", "0"]);
    let (before, _) = brute_force(&open, 1.0);
    let h = Herald::start(&["--requirepass", "pw"]);
    let (after, tried) = brute_force(&h, 2.0);
    eprintln!(
        "one address, wrong passwords checked: {before:.0}/s unlimited, \
         {after:.1}/s by default ({tried} tried)"
    );
    // The default: a burst of 10, then one a second.
    assert!(after * 2.0 <= 10.0 + 2.0 * 1.5 + 1.0, "{after}/s");
    assert!(before > 1000.0, "{before}/s");
}

#[tokio::test]
async fn websocket_sse_and_api_failures_share_the_budget_of_their_address() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--api-key",
        "KEY",
        "--auth-failure-rate",
        "1",
        "--auth-failure-burst",
        "3",
    ]);
    // A forged token on the URL, an expired one in `connect`, a wrong API
    // key: three failures, all checked.
    let mut ws = ws_connect(h.http, Some(&forged("m"))).await;
    assert_eq!(ws_until_close(&mut ws).await.1, Some(3500));
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect", "token": expired("m")})).await;
    assert_eq!(r["error"]["code"], 104, "{r}");
    assert_eq!(
        http(h.http, HERE, "/api/channels", "X-API-Key: nope\r\n").0,
        401
    );
    // Spent: a valid token or the right key is not even checked.
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect", "token": token("u")})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    assert_eq!(ws_until_close(&mut ws).await.1, Some(3007));
    let mut ws = ws_connect(h.http, Some(&token("u"))).await;
    assert_eq!(ws_until_close(&mut ws).await.1, Some(3007));
    let (status, text) = http(h.http, HERE, "/api/channels", "X-API-Key: KEY\r\n");
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("retry-after: "), "{text}");
    assert!(text.contains("too many failed authentications"), "{text}");
    let (_, text) = http(h.http, HERE, &format!("/sse?token={}", token("u")), "");
    assert!(text.contains("3007"), "{text}");
    // Another address: its own budget.
    let mut ws = ws_connect_from(h.http, None, OTHER).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect", "token": token("u")})).await;
    assert_eq!(r["result"]["user"], "u", "{r}");
    assert_eq!(
        http(h.http, OTHER, "/api/channels", "X-API-Key: KEY\r\n").0,
        200
    );
    // `refresh` with a forged token counts too; past the budget the
    // session stays, under its current token.
    let mut ws = ws_connect_from(h.http, Some(&token("r")), [127, 0, 0, 3]).await;
    for i in 0..3 {
        let r = ws_call(&mut ws, i, json!({"op": "refresh", "token": forged("r")})).await;
        assert_eq!(r["error"]["code"], 102, "{r}");
    }
    let r = ws_call(&mut ws, 9, json!({"op": "refresh", "token": token("r")})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = ws_call(&mut ws, 10, json!({"op": "ping"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    // So does a forged subscription token.
    let mut ws = ws_connect_from(h.http, Some(&token("s")), [127, 0, 0, 4]).await;
    let sub =
        |id: u64, t: String| json!({"id": id, "op": "subscribe", "channel": "p:1", "token": t});
    let good = hs256(
        json!({"sub": "s", "channel": "p:1", "exp": unix_now() + 600}),
        SECRET,
    );
    for i in 0..3 {
        let forged = hs256(
            json!({"sub": "s", "channel": "p:1", "exp": unix_now() + 600}),
            "x",
        );
        let r = ws_call(&mut ws, i, sub(i, forged)).await;
        assert_eq!(r["error"]["code"], 102, "{r}");
    }
    let r = ws_call(&mut ws, 5, sub(5, good)).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
}

fn publish(c: &mut Raw, ch: &str) -> String {
    show(&c.cmd(&[b"PUBLISH", ch.as_bytes(), b"x"]))
}

#[tokio::test]
async fn resp_clients_without_the_password_publish_at_the_address_rate() {
    let h = Herald::start(&[
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        SECRET,
        "--ws-publish-rate",
        "5",
    ]);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", token("u").as_bytes()]), b"+OK\r\n");
    let mut ok = 0;
    for _ in 0..10 {
        let r = publish(&mut c, "news");
        if r.starts_with(':') {
            ok += 1;
        } else {
            assert!(
                r.starts_with("-ERR publish rate limit exceeded (5 per second from this address)"),
                "{r}"
            );
        }
    }
    assert!((5..=6).contains(&ok), "{ok} of 10 at 5 a second");
    let r = show(&c.cmd(&[b"SPUBLISH", b"news", b"x"]));
    assert!(r.starts_with("-ERR publish rate limit"), "{r}");
    // One bucket for every protocol of the address.
    let mut ws = ws_connect(h.http, Some(&token("w"))).await;
    let r = ws_call(
        &mut ws,
        1,
        json!({"op": "publish", "channel": "news", "data": 1}),
    )
    .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    // The password client of the same address, and another address, are
    // not held back.
    let mut b = Raw::backend(h.resp, "pw");
    for _ in 0..100 {
        assert!(publish(&mut b, "news").starts_with(':'));
    }
    let mut o = Raw::connect_from(h.resp, OTHER);
    assert_eq!(o.cmd(&[b"AUTH", token("o").as_bytes()]), b"+OK\r\n");
    assert!(publish(&mut o, "news").starts_with(':'));
}

#[tokio::test]
async fn reads_are_rate_limited_per_address_over_websocket_and_the_open_api() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--read-rate",
        "1",
        "--read-burst",
        "5",
    ]);
    let mut a = ws_connect(h.http, Some(&token("a"))).await;
    let mut b = ws_connect(h.http, Some(&token("b"))).await;
    for i in 0..3 {
        let r = ws_call(&mut a, i, json!({"op": "ping"})).await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    for i in 0..2 {
        let r = ws_call(&mut b, i, json!({"op": "presence_stats", "channel": "x"})).await;
        assert_ne!(r["error"]["code"], 107, "{r}");
    }
    // The address's five are spent, whatever the session or the op.
    for (i, op) in [
        json!({"op": "ping"}),
        json!({"op": "history", "channel": "x"}),
        json!({"op": "presence", "channel": "x"}),
        json!({"op": "presence_stats", "channel": "x"}),
        json!({"op": "refresh", "token": token("b")}),
    ]
    .into_iter()
    .enumerate()
    {
        let r = ws_call(&mut b, 10 + i as u64, op).await;
        assert_eq!(r["error"]["code"], 107, "{r}");
    }
    // Publishing and subscribing are not reads.
    let r = ws_call(&mut a, 20, json!({"op": "subscribe", "channel": "x"})).await;
    assert!(r.get("error").is_none(), "{r}");
    let mut o = ws_connect_from(h.http, Some(&token("o")), OTHER).await;
    let r = ws_call(&mut o, 1, json!({"op": "ping"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = ws_call(&mut a, 30, json!({"op": "ping"})).await;
    assert_eq!(r["result"], json!({}), "{r}");

    // The open API (no authentication configured): per address too.
    let open = Herald::start(&["--read-rate", "1", "--read-burst", "3"]);
    for _ in 0..3 {
        assert_ne!(http(open.http, HERE, "/api/presence/x", "").0, 429);
    }
    let (status, text) = http(open.http, HERE, "/api/history/x", "");
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("\"code\":107"), "{text}");
    assert!(text.contains("too many reads"), "{text}");
    assert_ne!(http(open.http, OTHER, "/api/history/x", "").0, 429);
    // Callers with the API key are backends: not limited.
    let keyed = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--api-key",
        "KEY",
        "--read-rate",
        "1",
        "--read-burst",
        "1",
    ]);
    for _ in 0..20 {
        let (status, text) = http(keyed.http, HERE, "/api/history/x", "X-API-Key: KEY\r\n");
        assert_ne!(status, 429, "{text}");
    }
}

/// A RESP connection from `src` with a small receive buffer, so that what
/// it does not read stays in Herald's outbox rather than in the kernel.
fn slow_reader(addr: SocketAddr, src: [u8; 4]) -> Raw {
    let c = Raw::connect_from(addr, src);
    socket2::SockRef::from(&c.stream)
        .set_recv_buffer_size(4096)
        .unwrap();
    c
}

/// Six subscribers of 127.0.0.1 that never read and one of 127.0.0.2
/// that reads everything; a backend publishes 200 messages of 64 KiB.
/// Returns what the reader got and how many of the six were cut off.
fn hogs_and_a_reader(share: &str) -> (usize, usize) {
    const N: usize = 200;
    let h = Herald::start(&[
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        SECRET,
        "--output-buffer-global-limit",
        "8mb",
        "--output-buffer-client-limit",
        share,
    ]);
    let mut hogs: Vec<Raw> = (0..6).map(|_| slow_reader(h.resp, HERE)).collect();
    for c in &mut hogs {
        assert_eq!(c.cmd(&[b"AUTH", token("hog").as_bytes()]), b"+OK\r\n");
        assert!(show(&c.cmd(&[b"SUBSCRIBE", b"big"])).starts_with("*3"));
    }
    let mut reader = Raw::connect_from(h.resp, OTHER);
    assert_eq!(reader.cmd(&[b"AUTH", token("r").as_bytes()]), b"+OK\r\n");
    assert!(show(&reader.cmd(&[b"SUBSCRIBE", b"big"])).starts_with("*3"));
    let payload = vec![b'x'; 64 * 1024];
    // Every message, read raw as fast as it comes.
    let frame = 4 + (4 + 7 + 2) + (4 + 3 + 2) + (8 + payload.len() + 2);
    let got = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 1 << 20];
        let mut total = 0;
        while total < N * frame {
            match reader.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        (total / frame, reader)
    });
    let mut b = Raw::backend(h.resp, "pw");
    for _ in 0..N {
        assert!(show(&b.cmd(&[b"PUBLISH", b"big", &payload])).starts_with(':'));
    }
    let (got, _reader) = got.join().unwrap();
    // The hogs that were cut off left the channel (their sockets may
    // still trickle out what the kernel holds).
    let r = show(&b.cmd(&[b"PUBSUB", b"NUMSUB", b"big"]));
    let subscribers: usize = r
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("\\r\\n")
        .parse()
        .unwrap();
    drop(hogs);
    let cut = 6 + usize::from(got == N) - subscribers.min(7);
    (got, cut)
}

/// One address whose subscribers never read fills at most its share of
/// `--output-buffer-global-limit`: its connections are cut off there, and
/// another address's subscriber gets every message. Without the share they
/// could hold the whole budget, and other clients' deliveries failed.
#[test]
fn one_address_fills_only_its_share_of_the_global_output_budget() {
    let (got, cut) = hogs_and_a_reader("2mb");
    eprintln!("share 2 MiB of 8: the reader got {got} of 200, {cut} of 6 hogs cut off");
    assert_eq!(got, 200, "the other address's subscriber");
    assert_eq!(cut, 6);
    let (got, cut) = hogs_and_a_reader("0");
    eprintln!("no share: the reader got {got} of 200, {cut} of 6 hogs cut off");
}
