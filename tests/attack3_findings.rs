//! Hostile-client findings against SSE, the app-backend hooks and
//! subscription tokens (attack3). Each test states the attack; a test that
//! fails on HEAD documents a finding.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);
const ORIGIN: &str = "http://app.example";

/// A raw HTTP/1.0 exchange: status, head and body.
async fn request(http: SocketAddr, head: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(http).await.unwrap();
    let req = format!(
        "{head}\r\nHost: {http}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("no answer")
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, h.to_ascii_lowercase(), b.to_string())
}

/// Opens `GET /sse` and returns the stream after its response head.
async fn open_sse(http: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(http).await.unwrap();
    let req = format!("GET /sse HTTP/1.0\r\nHost: {http}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("no head")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// A fake app that answers every request with `answer` (raw HTTP bytes),
/// or never answers when `answer` is `None`.
async fn fake_app(answer: Option<&'static [u8]>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = s.write_all(a).await;
                        // Hold the connection open (a chunked body that never ends).
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    addr
}

/// Finding (low): `POST /sse/{session}` refusals (404 unknown session, 400
/// bad body) carried no `Access-Control-Allow-Origin`, so a page on an
/// allowed origin could not read why its POST failed (an opaque network
/// error instead of the 404 that says "open a new stream").
#[tokio::test]
async fn sse_post_errors_carry_cors_for_allowed_origins() {
    let h = Herald::start(&["--allowed-origins", ORIGIN]);
    let origin = format!("Origin: {ORIGIN}\r\nContent-Type: text/plain");
    for (path, body, want) in [
        (
            "/sse/00000000000000000000000000000000",
            r#"{"op":"ping"}"#,
            404,
        ),
        ("/sse/nope", "[[[[", 404),
    ] {
        let (status, head, _) =
            request(h.http, &format!("POST {path} HTTP/1.0\r\n{origin}"), body).await;
        assert_eq!(status, want, "{head}");
        assert!(
            head.contains(&format!("access-control-allow-origin: {ORIGIN}")),
            "no CORS on a {status}: {head}"
        );
    }
    // A real session's bad body (400) too.
    let (mut s, head) = open_sse(h.http, &format!("Origin: {ORIGIN}\r\n")).await;
    assert!(head.contains("200"), "{head}");
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&first[..n]).to_string();
    let v: serde_json::Value =
        serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    let key = v["result"]["session"].as_str().unwrap().to_string();
    let deep = "[".repeat(100_000);
    for body in [deep.as_str(), "42", "[]"] {
        let (status, head, _) = request(
            h.http,
            &format!("POST /sse/{key} HTTP/1.0\r\n{origin}"),
            body,
        )
        .await;
        assert!((400..500).contains(&status), "{status} {head}");
        assert!(
            head.contains("access-control-allow-origin"),
            "no CORS on a {status}: {head}"
        );
    }
    // A disallowed origin still gets nothing (and no CORS).
    let (status, head, _) = request(
        h.http,
        &format!(
            "POST /sse/{key} HTTP/1.0\r\nOrigin: http://evil.example\r\nContent-Type: text/plain"
        ),
        r#"{"op":"ping","id":1}"#,
    )
    .await;
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

/// Finding (low): `GET /sse` past `--max-connections` answered 503 without
/// CORS, so client-js on an allowed origin saw a network error, not "full".
#[tokio::test]
async fn sse_full_server_refusal_carries_cors() {
    let h = Herald::start(&["--allowed-origins", ORIGIN, "--max-connections", "1"]);
    let origin = format!("Origin: {ORIGIN}\r\n");
    let (_held, head) = open_sse(h.http, &origin).await;
    assert!(head.contains(" 200 "), "{head}");
    let (_s, head) = open_sse(h.http, &origin).await;
    assert!(head.contains(" 503 "), "{head}");
    assert!(
        head.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{head}"
    );
}

/// Attack: the app answers the connect hook with a redirect, a 200 of
/// garbage, or a chunked 200 that never ends. Each must refuse (112, then
/// disconnect), never allow.
#[tokio::test]
async fn connect_hook_failure_modes_never_allow() {
    let answers: [&'static [u8]; 4] = [
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"result\":{}}xx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"result\":{\"user",
        b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"result\":{\"user\":\"x\"}}",
    ];
    for answer in answers {
        let app = fake_app(Some(answer)).await;
        let url = format!("http://{app}/connect");
        let h = Herald::start(&[
            "--proxy-connect-url",
            &url,
            "--proxy-timeout",
            "500ms",
            "--jwt-hmac-secret",
            "s",
            "--requirepass",
            "pw",
        ]);
        let mut ws = ws_connect(h.http, None).await;
        let r = ws_call(&mut ws, 1, json!({"op": "connect"})).await;
        assert_eq!(
            r["error"]["code"],
            112,
            "{}: {r}",
            String::from_utf8_lossy(answer)
        );
    }
}

/// Finding (medium): a client that opens `GET /sse` (or a WebSocket) and
/// hangs up while the connect hook is pending leaves Herald waiting for the
/// app for the whole `--proxy-timeout`, holding a `--max-connections` slot
/// and an in-flight hook slot. A few cheap requests per timeout fill the
/// server: no client is connected, yet newcomers get 503.
#[tokio::test]
async fn abandoned_sse_streams_do_not_hold_slots_while_the_hook_is_pending() {
    let app = fake_app(None).await;
    let url = format!("http://{app}/connect");
    let h = Herald::start(&[
        "--proxy-connect-url",
        &url,
        "--proxy-timeout",
        "20s",
        "--max-connections",
        "4",
    ]);
    for _ in 0..4 {
        let (s, head) = open_sse(h.http, "").await;
        assert!(head.contains(" 200 "), "{head}");
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_s, head) = open_sse(h.http, "").await;
    assert!(
        head.contains(" 200 "),
        "four abandoned streams keep the server full: {head}"
    );
}

/// Finding (medium): the same over WebSocket. A client that upgrades,
/// sends `connect` (no token: the hook is asked) and hangs up held its
/// `--max-connections` slot until `--proxy-timeout`: the session loop did
/// not read the socket while it awaited the app, so it missed the EOF.
#[tokio::test]
async fn abandoned_websockets_do_not_hold_slots_while_the_hook_is_pending() {
    let app = fake_app(None).await;
    let url = format!("http://{app}/connect");
    let h = Herald::start(&[
        "--proxy-connect-url",
        &url,
        "--proxy-timeout",
        "20s",
        "--max-connections",
        "4",
    ]);
    for _ in 0..4 {
        use futures_util::SinkExt;
        let mut ws = ws_connect(h.http, None).await;
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"id": 1, "op": "connect"}).to_string().into(),
        ))
        .await
        .unwrap();
        drop(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_s, head) = open_sse(h.http, "").await;
    assert!(
        head.contains(" 200 "),
        "four abandoned WebSockets keep the server full: {head}"
    );
}

const SUB_SECRET: &str = "attack3-secret";

/// Attack: subscription-token edges. `exp` = u64::MAX (no overflow, no
/// panic), `exp` just past within `--jwt-leeway` (granted), past the
/// leeway (104); a grant does not outlive its unsubscribe (history is
/// refused again), and a token for one channel reads no other.
#[tokio::test]
async fn sub_token_expiry_edges_and_replay() {
    let (_dir, file) = temp_config(
        "attack3",
        "[namespaces.private]\nhistory_size = 10\nhistory_ttl = \"10m\"\npresence = true\n",
    );
    let h = Herald::start(&[
        "--config",
        &file,
        "--jwt-hmac-secret",
        SUB_SECRET,
        "--jwt-leeway",
        "30s",
        "--requirepass",
        "pw",
    ]);
    let conn = hs256(
        json!({"sub": "alice", "exp": unix_now() + 600, "subscribe": ["public:*"]}),
        SUB_SECRET,
    );
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect", "token": conn})).await;
    assert_eq!(r["result"]["user"], "alice", "{r}");
    let tok = |ch: &str, exp: u64| {
        hs256(
            json!({"sub": "alice", "channel": ch, "exp": exp}),
            SUB_SECRET,
        )
    };
    let code = |r: &serde_json::Value| r["error"]["code"].as_u64().unwrap_or(0);
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "subscribe", "channel": "private:max", "token": tok("private:max", u64::MAX)}),
    )
    .await;
    assert!(r["result"]["epoch"].is_string(), "{r}");
    let r = ws_call(
        &mut ws,
        3,
        json!({"op": "subscribe", "channel": "private:lee", "token": tok("private:lee", unix_now() - 10)}),
    )
    .await;
    assert!(r["result"]["epoch"].is_string(), "{r}");
    let r = ws_call(
        &mut ws,
        4,
        json!({"op": "subscribe", "channel": "private:old", "token": tok("private:old", unix_now() - 120)}),
    )
    .await;
    assert_eq!(code(&r), 104, "{r}");
    // A grant of private:max reads nothing else.
    for op in ["history", "presence"] {
        let r = ws_call(&mut ws, 5, json!({"op": op, "channel": "private:other"})).await;
        assert_eq!(code(&r), 103, "{op}: {r}");
    }
    // After unsubscribe, the grant is gone: no reads without the token.
    let r = ws_call(
        &mut ws,
        6,
        json!({"op": "history", "channel": "private:max"}),
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let r = ws_call(
        &mut ws,
        7,
        json!({"op": "unsubscribe", "channel": "private:max"}),
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let r = ws_call(
        &mut ws,
        8,
        json!({"op": "history", "channel": "private:max"}),
    )
    .await;
    assert_eq!(code(&r), 103, "{r}");
    // sub_refresh for a channel not subscribed is refused.
    let r = ws_call(
        &mut ws,
        9,
        json!({"op": "sub_refresh", "channel": "private:max", "token": tok("private:max", u64::MAX)}),
    )
    .await;
    assert_eq!(code(&r), 100, "{r}");
    // The session is alive.
    let r = ws_call(&mut ws, 10, json!({"op": "ping"})).await;
    assert!(r["error"].is_null(), "{r}");
}

/// Attack: a subscription token (with a `channel` claim) as the connection
/// token of an SSE stream (`?token=`): refused like on `connect`.
#[tokio::test]
async fn sub_token_does_not_open_an_sse_session() {
    let h = Herald::start(&["--jwt-hmac-secret", SUB_SECRET, "--requirepass", "pw"]);
    let t = hs256(
        json!({"sub": "alice", "channel": "private:a", "exp": unix_now() + 600}),
        SUB_SECRET,
    );
    let mut sock = TcpStream::connect(h.http).await.unwrap();
    let req = format!("GET /sse?token={t} HTTP/1.0\r\nHost: {}\r\n\r\n", h.http);
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, sock.read_to_string(&mut out))
        .await
        .expect("the stream of a refused token must end")
        .unwrap();
    assert!(
        out.contains("\"code\":102") || out.contains("\"code\":3500"),
        "{out}"
    );
    assert!(!out.contains("\"user\":\"alice\""), "{out}");
}

/// Finding (medium): nothing bounded the rate of connect hook calls one
/// client causes. Each `GET /sse` (or WebSocket `connect` without a token)
/// is one call to the app; a client that opened and dropped streams in a
/// loop made Herald call its app as fast as it could send requests
/// (measured: about 2,500 calls a second). Now each client address has a
/// `--proxy-connect-rate` bucket: past it `GET /sse` gets 429 with
/// `Retry-After` and the app is not called.
#[tokio::test]
async fn one_client_drives_unbounded_connect_hook_calls() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
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
                    let body = br#"{"error":{"code":1001,"message":"no"}}"#;
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
    let url = format!("http://{app}/connect");
    let h = Herald::start(&[
        "--proxy-connect-url",
        &url,
        "--max-connections",
        "8",
        "--proxy-connect-rate",
        "5",
        "--proxy-connect-burst",
        "20",
    ]);
    let started = std::time::Instant::now();
    let (mut opened, mut refused) = (0, 0);
    while started.elapsed() < Duration::from_secs(2) {
        let (s, head) = open_sse(h.http, "").await;
        if head.starts_with("http/1.0 429") || head.starts_with("http/1.1 429") {
            assert!(head.contains("retry-after: "), "{head}");
            refused += 1;
        }
        drop(s);
        opened += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = calls.load(Ordering::Relaxed);
    eprintln!("one client, {secs:.1} s: {opened} streams opened, {refused} refused (429), {n} connect hook calls");
    assert!(refused > 0);
    assert!(
        (n as f64) <= 20.0 + 5.0 * (secs + 0.5),
        "{n} connect hook calls in {secs:.1} s from one client (rate 5, burst 20)"
    );
}
