//! The app-backend hooks (`--proxy-connect-url`, `--proxy-subscribe-url`,
//! `--proxy-publish-url`) against a real HTTP backend started here: an
//! axum app with cookie sessions that accepts, refuses, disconnects,
//! rewrites, stalls and answers garbage, and records what it was sent.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "proxy-test-secret";
const API_KEY: &str = "proxy-test-key";

/// The app's backend: what it was asked, by hook.
#[derive(Clone, Default)]
struct Backend {
    seen: Arc<Mutex<Vec<(&'static str, Value)>>>,
}

impl Backend {
    /// Serves the three hooks on a free port.
    async fn start() -> (Backend, SocketAddr) {
        let backend = Backend::default();
        let app = Router::new()
            .route("/connect", post(connect))
            .route("/subscribe", post(subscribe))
            .route("/publish", post(publish))
            .with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (backend, addr)
    }

    fn seen(&self, hook: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(h, _)| *h == hook)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn record(&self, hook: &'static str, req: &Value) {
        self.seen.lock().unwrap().push((hook, req.clone()));
    }
}

fn garbage() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html")],
        "<html>oops</html>",
    )
        .into_response()
}

/// Sessions by cookie: `session=NAME`.
async fn connect(State(b): State<Backend>, Json(req): Json<Value>) -> Response {
    b.record("connect", &req);
    let cookie = req["headers"]["Cookie"].as_str().unwrap_or("");
    let session = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("session="));
    let answer = match session {
        Some("alice") => json!({"result": {
            "user": "alice",
            "info": {"name": "Alice"},
            "expire_at": unix_now() + 600,
            "channels": ["priv:alice", "news:alice"],
        }}),
        Some("bob") => json!({"result": {"user": "bob"}}),
        Some("short") => json!({"result": {"user": "sam", "expire_at": unix_now() + 1}}),
        Some("expired") => json!({"result": {"user": "carol", "expire_at": unix_now() - 60}}),
        Some("banned") => json!({"disconnect": {"code": 4501, "reason": "banned"}}),
        Some("slow") => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json!({"result": {"user": "slowpoke"}})
        }
        Some("garbage") => return garbage(),
        Some("status") => return (axum::http::StatusCode::BAD_GATEWAY, "{}").into_response(),
        Some("huge") => {
            return Json(json!({"result": {"user": "big", "info": "x".repeat(100_000)}}))
                .into_response()
        }
        _ => json!({"error": {"code": 1001, "message": "not logged in"}}),
    };
    Json(answer).into_response()
}

/// `priv:USER…` is the user's own; `priv:kick`, `priv:slow`, `priv:garbage`
/// misbehave.
async fn subscribe(State(b): State<Backend>, Json(req): Json<Value>) -> Response {
    b.record("subscribe", &req);
    let channel = req["channel"].as_str().unwrap_or("");
    let user = req["user"].as_str().unwrap_or("-");
    let answer = match channel {
        "priv:kick" => json!({"disconnect": {"code": 4000, "reason": "kicked"}}),
        "priv:slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json!({"result": {}})
        }
        "priv:garbage" => return garbage(),
        c if c.starts_with(&format!("priv:{user}")) => json!({"result": {}}),
        _ => json!({"error": {"code": 1403, "message": "not yours"}}),
    };
    Json(answer).into_response()
}

/// Spam is refused; `mod:raw` passes as it is; the rest is signed.
async fn publish(State(b): State<Backend>, Json(req): Json<Value>) -> Response {
    b.record("publish", &req);
    let data = &req["data"];
    let text = data["text"].as_str().unwrap_or("");
    let answer = if text.contains("spam") {
        json!({"error": {"code": 1004, "message": "no spam"}})
    } else if data == "garbage" {
        return garbage();
    } else if req["channel"] == "mod:raw" {
        json!({"result": {}})
    } else {
        json!({"result": {"data": {"text": text, "by": req["user"]}}})
    };
    Json(answer).into_response()
}

const NAMESPACES: &str =
    "[namespaces.priv]\nsubscribe_proxy = true\npresence = true\nhistory_size = 10\n\
                          [namespaces.mod]\npublish_proxy = true\n";

/// Herald with all three hooks at `app`, a JWT secret, a password and an
/// API key (for /metrics).
fn herald(app: SocketAddr, timeout: &str) -> (Herald, std::path::PathBuf) {
    let (dir, path) = temp_config("proxy", NAMESPACES);
    let urls = ["connect", "subscribe", "publish"].map(|h| format!("http://{app}/{h}"));
    let h = Herald::start(&[
        "--config",
        &path,
        "--proxy-connect-url",
        &urls[0],
        "--proxy-subscribe-url",
        &urls[1],
        "--proxy-publish-url",
        &urls[2],
        "--proxy-timeout",
        timeout,
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "pw",
        "--api-key",
        API_KEY,
    ]);
    (h, dir)
}

/// A browser's WebSocket: its cookie and its page's origin on the upgrade.
async fn browser(http: SocketAddr, cookie: Option<&str>) -> Ws {
    let mut req = format!("ws://{http}/ws").into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("Cookie", c.parse().unwrap());
    }
    req.headers_mut()
        .insert("Origin", format!("http://{http}").parse().unwrap());
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("ws connect timed out")
        .expect("ws connect failed");
    ws
}

fn token(claims: Value) -> String {
    let mut c = json!({"exp": unix_now() + 600});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    hs256(c, SECRET)
}

/// `/metrics` as text.
async fn metrics(http: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// The value of the sample named `series` (name and labels), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Sends a command without waiting for its reply.
async fn send(ws: &mut Ws, id: u64, mut cmd: Value) {
    cmd["id"] = json!(id);
    ws_send(ws, cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_accepts_with_channels_presence_and_pipelined_ops() {
    let (app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    let mut alice = browser(h.http, Some("theme=dark; session=alice")).await;
    // Pipelined: the subscribe is handled after the connect's answer, as
    // alice.
    send(&mut alice, 1, json!({"op": "connect", "data": {"v": 1}})).await;
    send(
        &mut alice,
        2,
        json!({"op": "subscribe", "channel": "priv:alice:x", "data": {"why": "test"}}),
    )
    .await;
    let r = ws_recv(&mut alice).await;
    assert_eq!(r["id"], 1, "{r}");
    let res = &r["result"];
    assert_eq!(res["user"], "alice", "{r}");
    assert_eq!(res["channels"], json!(["priv:alice", "news:alice"]));
    assert!(res["expires"].as_u64().unwrap() > unix_now());
    let sub = ws_recv(&mut alice).await;
    assert_eq!(
        (sub["id"].clone(), sub["result"]["offset"].clone()),
        (json!(2), json!(0)),
        "{sub}"
    );
    assert!(sub["result"]["epoch"].is_string(), "{sub}");

    let seen = app.seen("connect");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["transport"], "websocket");
    assert_eq!(seen[0]["headers"]["Cookie"], "theme=dark; session=alice");
    assert_eq!(seen[0]["headers"]["Origin"], format!("http://{}", h.http));
    assert_eq!(seen[0]["data"], json!({"v": 1}));
    assert_eq!(seen[0]["client"], r["result"]["client"]);
    let sub = app.seen("subscribe");
    assert_eq!(
        sub.len(),
        1,
        "the connect hook's channels are not asked again"
    );
    assert_eq!(sub[0]["user"], "alice");
    assert_eq!(sub[0]["channel"], "priv:alice:x");
    assert_eq!(sub[0]["data"], json!({"why": "test"}));

    // Subscribed at once to the app's channels, with presence.
    let mut backend = Raw::backend(h.resp, "pw");
    backend.cmd(&[b"PUBLISH", b"news:alice", b"\"hello\""]);
    let m = ws_recv(&mut alice).await;
    assert_eq!(
        (m["channel"].clone(), m["data"].clone()),
        (json!("news:alice"), json!("hello"))
    );
    let p = ws_call(
        &mut alice,
        3,
        json!({"op": "presence", "channel": "priv:alice"}),
    )
    .await;
    assert_eq!(p["result"]["users"], json!(["alice"]), "{p}");
    assert_eq!(p["result"]["clients"][0]["info"], json!({"name": "Alice"}));
    // Already subscribed: no call.
    let again = ws_call(
        &mut alice,
        4,
        json!({"op": "subscribe", "channel": "priv:alice"}),
    )
    .await;
    assert_eq!(again["result"], json!({}));
    assert_eq!(app.seen("subscribe").len(), 1);
    // A second connect is refused as ever, without a call.
    let twice = ws_call(&mut alice, 5, json!({"op": "connect"})).await;
    assert_eq!(twice["error"]["code"], 105);
    assert_eq!(app.seen("connect").len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refusals_and_disconnects() {
    let (app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    // No session cookie: the app's error, then the terminal 3500.
    let mut anon = browser(h.http, None).await;
    let r = ws_call(&mut anon, 1, json!({"op": "connect"})).await;
    assert_eq!(
        r["error"],
        json!({"code": 1001, "message": "not logged in"})
    );
    let (push, code) = ws_until_close(&mut anon).await;
    assert_eq!(
        (push.unwrap()["code"].clone(), code),
        (json!(3500), Some(3500))
    );
    assert!(app.seen("connect")[0]["headers"].get("Cookie").is_none());

    // The app's disconnect: its code and reason, terminal (4500–4999).
    let mut banned = browser(h.http, Some("session=banned")).await;
    send(&mut banned, 1, json!({"op": "connect"})).await;
    let (push, code) = ws_until_close(&mut banned).await;
    assert_eq!(
        push.unwrap(),
        json!({"push": "disconnect", "code": 4501, "reason": "banned", "reconnect": false})
    );
    assert_eq!(code, Some(4501));

    // A session the app says has expired: 104, then 3002.
    let mut expired = browser(h.http, Some("session=expired")).await;
    let r = ws_call(&mut expired, 1, json!({"op": "connect"})).await;
    assert_eq!(r["error"]["code"], 104, "{r}");
    assert_eq!(ws_until_close(&mut expired).await.1, Some(3002));

    // An `expire_at` ends the connection as a token's `exp` does.
    let mut short = browser(h.http, Some("session=short")).await;
    let started = Instant::now();
    let r = ws_call(&mut short, 1, json!({"op": "connect"})).await;
    assert_eq!(r["result"]["user"], "sam", "{r}");
    let (push, code) = ws_until_close(&mut short).await;
    assert_eq!(
        (push.unwrap()["code"].clone(), code),
        (json!(3002), Some(3002))
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A token skips the hook; so does one on the URL.
    let calls = app.seen("connect").len();
    let mut jwt = browser(h.http, None).await;
    let r = ws_call(
        &mut jwt,
        1,
        json!({"op": "connect", "token": token(json!({"sub": "dave"}))}),
    )
    .await;
    assert_eq!(r["result"]["user"], "dave");
    let mut url = ws_connect(h.http, Some(&token(json!({"sub": "erin"})))).await;
    let r = ws_call(&mut url, 1, json!({"op": "connect"})).await;
    assert_eq!(r["result"]["user"], "erin");
    assert_eq!(app.seen("connect").len(), calls);

    // Without `connect` a session is anonymous: closed namespaces stay
    // closed (the hook counts as authentication).
    let mut silent = browser(h.http, Some("session=alice")).await;
    let r = ws_call(
        &mut silent,
        1,
        json!({"op": "subscribe", "channel": "news:x"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_hook_decides_what_tokens_and_namespaces_leave_open() {
    let (app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    let mut bob = browser(h.http, Some("session=bob")).await;
    ws_call(&mut bob, 1, json!({"op": "connect"})).await;
    let ok = ws_call(
        &mut bob,
        2,
        json!({"op": "subscribe", "channel": "priv:bob:inbox"}),
    )
    .await;
    assert!(ok.get("result").is_some(), "{ok}");
    let no = ws_call(
        &mut bob,
        3,
        json!({"op": "subscribe", "channel": "priv:alice"}),
    )
    .await;
    assert_eq!(no["error"], json!({"code": 1403, "message": "not yours"}));
    // Reading follows subscribing: only where the app let it subscribe.
    let h1 = ws_call(
        &mut bob,
        4,
        json!({"op": "history", "channel": "priv:alice"}),
    )
    .await;
    assert_eq!(h1["error"]["code"], 103, "{h1}");
    let h2 = ws_call(
        &mut bob,
        5,
        json!({"op": "history", "channel": "priv:bob:inbox"}),
    )
    .await;
    assert!(h2["result"]["publications"].is_array(), "{h2}");
    let p = ws_call(
        &mut bob,
        6,
        json!({"op": "presence", "channel": "priv:alice"}),
    )
    .await;
    assert_eq!(p["error"]["code"], 103, "{p}");
    // Patterns cannot be decided channel by channel: refused, not asked.
    let calls = app.seen("subscribe").len();
    let pat = ws_call(
        &mut bob,
        7,
        json!({"op": "psubscribe", "pattern": "priv:*"}),
    )
    .await;
    assert_eq!(pat["error"]["code"], 103);
    assert_eq!(app.seen("subscribe").len(), calls);
    // Other namespaces are not the app's: no call.
    let news = ws_call(&mut bob, 8, json!({"op": "subscribe", "channel": "news:x"})).await;
    assert_eq!(news["result"], json!({}));
    assert_eq!(app.seen("subscribe").len(), calls);

    // A token's `subscribe` globs decide both ways without the app; a
    // token without them is asked about as its `sub`.
    let mut narrow = ws_connect(
        h.http,
        Some(&token(json!({"sub": "t", "subscribe": ["priv:granted"]}))),
    )
    .await;
    let r = ws_call(
        &mut narrow,
        1,
        json!({"op": "subscribe", "channel": "priv:granted"}),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let r = ws_call(
        &mut narrow,
        2,
        json!({"op": "subscribe", "channel": "priv:t"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103);
    assert_eq!(app.seen("subscribe").len(), calls);
    let mut plain = ws_connect(h.http, Some(&token(json!({"sub": "zed"})))).await;
    let r = ws_call(
        &mut plain,
        1,
        json!({"op": "subscribe", "channel": "priv:zed"}),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let last = app.seen("subscribe").pop().unwrap();
    assert_eq!(
        (last["user"].clone(), last["channel"].clone()),
        (json!("zed"), json!("priv:zed"))
    );
    assert!(last.get("data").is_none());

    // The app may end the session from a subscribe (4000: reconnect).
    let r = {
        send(
            &mut plain,
            2,
            json!({"op": "subscribe", "channel": "priv:kick"}),
        )
        .await;
        ws_until_close(&mut plain).await
    };
    assert_eq!(r.0.unwrap()["reconnect"], true);
    assert_eq!(r.1, Some(4000));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_hook_validates_and_rewrites() {
    let (app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    let mut bob = browser(h.http, Some("session=bob")).await;
    ws_call(&mut bob, 1, json!({"op": "connect"})).await;
    for (i, ch) in ["mod:chat", "mod:raw"].iter().enumerate() {
        let r = ws_call(
            &mut bob,
            2 + i as u64,
            json!({"op": "subscribe", "channel": ch}),
        )
        .await;
        assert_eq!(r["result"], json!({}));
    }
    let mut alice = browser(h.http, Some("session=alice")).await;
    ws_call(&mut alice, 1, json!({"op": "connect"})).await;

    // Allowed with its data replaced by the app's.
    let r = ws_call(
        &mut alice,
        2,
        json!({"op": "publish", "channel": "mod:chat", "data": {"text": "hi"}}),
    )
    .await;
    assert_eq!(r["result"], json!({}));
    let m = ws_recv(&mut bob).await;
    assert_eq!(m["data"], json!({"text": "hi", "by": "alice"}));
    let seen = app.seen("publish");
    assert_eq!(
        seen[0],
        json!({"client": seen[0]["client"], "user": "alice", "channel": "mod:chat", "data": {"text": "hi"}})
    );
    // Refused: the app's code, and nothing published.
    let r = ws_call(
        &mut alice,
        3,
        json!({"op": "publish", "channel": "mod:chat", "data": {"text": "buy spam"}}),
    )
    .await;
    assert_eq!(r["error"], json!({"code": 1004, "message": "no spam"}));
    // Allowed as it is.
    ws_call(
        &mut alice,
        4,
        json!({"op": "publish", "channel": "mod:raw", "data": [1, 2]}),
    )
    .await;
    let m = ws_recv(&mut bob).await;
    assert_eq!(
        (m["channel"].clone(), m["data"].clone()),
        (json!("mod:raw"), json!([1, 2])),
        "the refused publish never arrived"
    );
    // A token's `publish` globs still go through the app here.
    let mut t = ws_connect(
        h.http,
        Some(&token(json!({"sub": "t", "publish": ["mod:*"]}))),
    )
    .await;
    let r = ws_call(
        &mut t,
        1,
        json!({"op": "publish", "channel": "mod:chat", "data": {"text": "spam"}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 1004);
    // Garbage from the app: refused with 112.
    let r = ws_call(
        &mut alice,
        5,
        json!({"op": "publish", "channel": "mod:chat", "data": "garbage"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 112, "{r}");
    let ping = ws_call(&mut bob, 9, json!({"op": "ping"})).await;
    assert_eq!(
        ping["result"],
        json!({}),
        "nothing else was delivered: {ping}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_app_refuses_counts_and_blocks_only_its_session() {
    let (_app, addr) = Backend::start().await;
    // The timeout is long enough that the other session's work fits well
    // inside it on a loaded machine.
    let (h, dir) = herald(addr, "1500ms");
    // Slow: refused once the timeout passes; meanwhile other sessions
    // are served at once.
    let mut slow = browser(h.http, Some("session=slow")).await;
    let mut other = browser(h.http, Some("session=bob")).await;
    let started = Instant::now();
    send(&mut slow, 1, json!({"op": "connect"})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = ws_call(&mut other, 1, json!({"op": "connect"})).await;
    assert_eq!(r["result"]["user"], "bob");
    let pong = ws_call(&mut other, 2, json!({"op": "ping"})).await;
    assert_eq!(pong["result"], json!({}));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "another session waited: {:?}",
        started.elapsed()
    );
    let r = ws_recv(&mut slow).await;
    let waited = started.elapsed();
    assert_eq!(r["error"]["code"], 112, "{r}");
    assert!(
        waited >= Duration::from_millis(1450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(ws_until_close(&mut slow).await.1, Some(3005));

    // Garbage, another status, an answer past 64 KiB: refused, 3005.
    for cookie in ["session=garbage", "session=status", "session=huge"] {
        let mut ws = browser(h.http, Some(cookie)).await;
        let r = ws_call(&mut ws, 1, json!({"op": "connect"})).await;
        assert_eq!(r["error"]["code"], 112, "{cookie}: {r}");
        let (push, code) = ws_until_close(&mut ws).await;
        assert_eq!(push.unwrap()["reconnect"], true);
        assert_eq!(code, Some(3005), "{cookie}");
    }
    // A slow or garbled subscribe answer refuses that subscribe only.
    for ch in ["priv:slow", "priv:garbage"] {
        let r = ws_call(&mut other, 3, json!({"op": "subscribe", "channel": ch})).await;
        assert_eq!(r["error"]["code"], 112, "{ch}: {r}");
    }
    let r = ws_call(
        &mut other,
        4,
        json!({"op": "subscribe", "channel": "priv:bob"}),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");

    let m = metrics(h.http).await;
    let s = |series: &str| sample(&m, series);
    assert_eq!(s("herald_proxy_calls_total{hook=\"connect\"}"), 5.0, "{m}");
    assert_eq!(s("herald_proxy_calls_total{hook=\"subscribe\"}"), 3.0);
    assert_eq!(
        s("herald_proxy_errors_total{hook=\"connect\",reason=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        s("herald_proxy_errors_total{hook=\"connect\",reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        s("herald_proxy_errors_total{hook=\"connect\",reason=\"status\"}"),
        1.0
    );
    assert_eq!(
        s("herald_proxy_errors_total{hook=\"connect\",reason=\"too_large\"}"),
        1.0
    );
    assert_eq!(
        s("herald_proxy_errors_total{hook=\"subscribe\",reason=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        s("herald_proxy_errors_total{hook=\"subscribe\",reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        s("herald_proxy_duration_seconds_count{hook=\"connect\"}"),
        5.0
    );
    assert!(s("herald_proxy_duration_seconds_sum{hook=\"connect\"}") >= 1.4);
    let log = h.drain_log().join("\n");
    assert!(
        log.contains("proxy call failed") && log.contains("timeout"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_means_refused() {
    let down = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (h, dir) = herald(down, "1s");
    let mut ws = browser(h.http, Some("session=alice")).await;
    let started = Instant::now();
    let r = ws_call(&mut ws, 1, json!({"op": "connect"})).await;
    assert_eq!(r["error"]["code"], 112, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a refused connection fails fast"
    );
    assert_eq!(ws_until_close(&mut ws).await.1, Some(3005));
    // With a token the connect hook is not needed; the others still are.
    let mut t = ws_connect(h.http, Some(&token(json!({"sub": "t"})))).await;
    let r = ws_call(&mut t, 1, json!({"op": "subscribe", "channel": "priv:t"})).await;
    assert_eq!(r["error"]["code"], 112);
    let r = ws_call(
        &mut t,
        2,
        json!({"op": "publish", "channel": "mod:x", "data": 1}),
    )
    .await;
    assert_eq!(r["error"]["code"], 112);
    let r = ws_call(&mut t, 3, json!({"op": "subscribe", "channel": "news:x"})).await;
    assert_eq!(r["result"], json!({}), "namespaces without hooks work on");
    let m = metrics(h.http).await;
    for hook in ["connect", "subscribe", "publish"] {
        let series = format!("herald_proxy_errors_total{{hook=\"{hook}\",reason=\"unavailable\"}}");
        assert_eq!(sample(&m, &series), 1.0, "{series}\n{m}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_clients_are_refused_rather_than_let_past_the_app() {
    let (app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    let noperm =
        "-NOPERM this user has no permissions to access one of the channels used as arguments\r\n";
    let mut jwt = Raw::connect(h.resp);
    assert_eq!(
        jwt.cmd(&[b"AUTH", token(json!({"sub": "r"})).as_bytes()]),
        b"+OK\r\n"
    );
    assert_eq!(
        show(&jwt.cmd(&[b"SUBSCRIBE", b"priv:r"])),
        show(noperm.as_bytes())
    );
    assert_eq!(
        show(&jwt.cmd(&[b"PSUBSCRIBE", b"priv:*"])),
        show(noperm.as_bytes())
    );
    assert_eq!(
        show(&jwt.cmd(&[b"PUBLISH", b"mod:x", b"1"])),
        show(noperm.as_bytes())
    );
    assert_eq!(jwt.cmd(&[b"PUBLISH", b"news:x", b"1"]), b":0\r\n");
    // Where the token's globs decide, RESP follows them.
    let mut globs = Raw::connect(h.resp);
    let t = token(json!({"sub": "g", "subscribe": ["priv:g"]}));
    globs.cmd(&[b"AUTH", t.as_bytes()]);
    assert!(show(&globs.cmd(&[b"SUBSCRIBE", b"priv:g"])).contains("subscribe"));
    // The password is the trusted backend: never refused, never asked.
    let mut backend = Raw::backend(h.resp, "pw");
    assert_eq!(backend.cmd(&[b"PUBLISH", b"mod:x", b"1"]), b":0\r\n");
    assert!(show(&backend.cmd(&[b"SUBSCRIBE", b"priv:x"])).contains("subscribe"));
    assert!(app.seen("subscribe").is_empty() && app.seen("publish").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// What a hook call adds to a subscribe's round trip: 500 subscribes
/// through the subscribe hook against 500 in a namespace without one
/// (`cargo test --test proxy -- --ignored --nocapture hook_latency`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn hook_latency() {
    async fn round_trips(ws: &mut Ws, prefix: &str) -> (Duration, Duration) {
        let mut took = Vec::new();
        for i in 0..500u64 {
            let started = Instant::now();
            let channel = format!("{prefix}{i}");
            let r = ws_call(ws, i, json!({"op": "subscribe", "channel": channel})).await;
            took.push(started.elapsed());
            assert!(r.get("result").is_some(), "{r}");
        }
        took.sort();
        (took[took.len() / 2], took[took.len() * 99 / 100])
    }
    let (_app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    let mut ws = ws_connect(h.http, Some(&token(json!({"sub": "u"})))).await;
    let plain = round_trips(&mut ws, "news:").await;
    let hooked = round_trips(&mut ws, "priv:u").await;
    eprintln!("subscribe round trip p50/p99: without hook {plain:?}, through the hook {hooked:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// An SSE stream authenticates through the connect hook with its cookie:
/// the stream opens with the accepted `connect` reply (and the hook's
/// channels); a refused cookie gets the error, then the end of the stream.
#[tokio::test]
async fn sse_connects_through_the_hook() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    async fn events(http: SocketAddr, cookie: &str) -> Vec<Value> {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        let req = format!("GET /sse HTTP/1.0\r\nHost: {http}\r\nCookie: {cookie}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        let mut out = Vec::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(TIMEOUT, lines.next_line()).await {
            if let Some(data) = line.strip_prefix("data: ") {
                out.push(serde_json::from_str::<Value>(data).unwrap());
                // The connect reply is enough for an accepted session.
                if out.len() == 1 && out[0]["result"].is_object() {
                    break;
                }
            }
        }
        out
    }
    let ok = events(h.http, "session=alice").await;
    assert_eq!(ok[0]["result"]["user"], "alice", "{ok:?}");
    assert_eq!(
        ok[0]["result"]["channels"],
        json!(["priv:alice", "news:alice"])
    );
    assert_eq!(ok[0]["result"]["session"].as_str().map(str::len), Some(32));
    let seen = app.seen("connect");
    assert_eq!(seen[0]["transport"], "sse");
    assert_eq!(seen[0]["headers"]["Cookie"], "session=alice");

    let refused = events(h.http, "session=nobody").await;
    assert_eq!(refused[0]["error"]["code"], 1001, "{refused:?}");
    assert_eq!(refused[1]["push"], "disconnect", "{refused:?}");
    assert_eq!(refused.len(), 2, "{refused:?}");
    drop(dir);
}

/// While an SSE session waits for the app (a slow subscribe hook), its
/// POSTs queue, bounded: past 16 unread ones a POST gets 503 (109); the
/// queued ones run, in order, once the app answers (here: times out).
#[tokio::test]
async fn sse_posts_queue_bounded_while_the_app_decides() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (_app, addr) = Backend::start().await;
    let (h, dir) = herald(addr, "1s");
    let http = h.http;
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let req = format!("GET /sse HTTP/1.0\r\nHost: {http}\r\nCookie: session=alice\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(s).lines();
    type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>;
    async fn next(lines: &mut Lines) -> Value {
        loop {
            let line = tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .expect("stream silent")
                .unwrap()
                .expect("stream ended");
            if let Some(d) = line.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(d).unwrap();
            }
        }
    }
    let hello = next(&mut lines).await;
    let session = hello["result"]["session"].as_str().unwrap().to_string();
    let post = |body: String| async move {
        let mut c = tokio::net::TcpStream::connect(http).await.unwrap();
        let req = format!(
            "POST /sse/{session} HTTP/1.0\r\nHost: {http}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    let slow = json!({"id": 1, "op": "subscribe", "channel": "priv:slow"});
    assert_eq!(post.clone()(slow.to_string()).await, "202");
    // Let the session take that POST and start asking the app.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(post.clone()(json!({"id": 100 + i, "op": "ping"}).to_string()).await);
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "202").count(),
        16,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "503").count(),
        4,
        "{statuses:?}"
    );
    let r = next(&mut lines).await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(1), json!(112)),
        "{r}"
    );
    for i in 0..16 {
        let r = next(&mut lines).await;
        assert_eq!(r["id"], 100 + i, "{r}");
    }
    drop(dir);
}
