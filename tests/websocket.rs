//! The WebSocket front end, JWT auth and the HTTP server API, against the
//! real binary: one registry shared with RESP, the payload mapping, and every
//! negative case answered with its documented code.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret";

fn token(sub: &str, extra: serde_json::Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": unix_now() + 600 });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            claims[k] = v;
        }
    }
    hs256(claims, SECRET)
}

#[tokio::test]
async fn ws_to_ws_pubsub_and_patterns() {
    let h = Herald::start(&[]);
    let mut a = ws_connect(h.http, None).await;
    let mut b = ws_connect(h.http, None).await;
    let r = ws_call(&mut a, 1, json!({"op": "connect"})).await;
    assert!(r["result"]["client"].is_string(), "{r}");
    assert_eq!(
        ws_call(&mut a, 2, json!({"op": "subscribe", "channel": "news"})).await["result"],
        json!({})
    );
    assert_eq!(
        ws_call(&mut a, 3, json!({"op": "psubscribe", "pattern": "n*"})).await["result"],
        json!({})
    );
    assert_eq!(
        ws_call(
            &mut b,
            1,
            json!({"op": "publish", "channel": "news", "data": {"x": 1}})
        )
        .await["result"],
        json!({})
    );
    let m = ws_recv(&mut a).await;
    assert_eq!(
        m,
        json!({"push": "message", "channel": "news", "data": {"x": 1}})
    );
    let p = ws_recv(&mut a).await;
    assert_eq!(
        p,
        json!({"push": "pmessage", "pattern": "n*", "channel": "news", "data": {"x": 1}})
    );
    assert_eq!(
        ws_call(&mut a, 4, json!({"op": "unsubscribe", "channel": "news"})).await["result"],
        json!({})
    );
    assert_eq!(
        ws_call(&mut a, 5, json!({"op": "punsubscribe", "pattern": "n*"})).await["result"],
        json!({})
    );
    ws_call(
        &mut b,
        2,
        json!({"op": "publish", "channel": "news", "data": 2}),
    )
    .await;
    let pong = ws_call(&mut a, 6, json!({"op": "ping"})).await;
    assert_eq!(
        pong["result"],
        json!({}),
        "nothing may arrive after unsubscribing: {pong}"
    );
}

#[tokio::test]
async fn cross_front_end_payload_mapping() {
    let h = Herald::start(&[]);
    let mut ws = ws_connect(h.http, None).await;
    ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "mix"})).await;
    let mut resp_sub = Raw::connect(h.resp);
    resp_sub.cmd(&[b"SUBSCRIBE", b"mix"]);
    let mut resp_pub = Raw::connect(h.resp);

    // RESP -> WebSocket: JSON, UTF-8 text, other bytes.
    assert_eq!(
        resp_pub.cmd(&[b"PUBLISH", b"mix", br#"{"a":[1,2]}"#]),
        b":2\r\n"
    );
    assert_eq!(ws_recv(&mut ws).await["data"], json!({"a": [1, 2]}));
    resp_pub.cmd(&[b"PUBLISH", b"mix", b"plain text"]);
    assert_eq!(ws_recv(&mut ws).await["data"], json!("plain text"));
    resp_pub.cmd(&[b"PUBLISH", b"mix", &[0xff, 0x00, 0x01]]);
    let m = ws_recv(&mut ws).await;
    assert_eq!(
        (m["data"].clone(), m["encoding"].clone()),
        (json!("/wAB"), json!("base64"))
    );
    for _ in 0..3 {
        resp_sub.frame();
    }

    // WebSocket -> RESP: the compact JSON text of data.
    ws_call(
        &mut ws,
        2,
        json!({"op": "publish", "channel": "mix", "data": {"k": "v", "n": [1, 2.5]}}),
    )
    .await;
    let f = resp_sub.frame();
    assert!(
        show(&f).ends_with(r#"$21\r\n{"k":"v","n":[1,2.5]}\r\n"#),
        "{}",
        show(&f)
    );
    // (ws_call skipped the socket's own copy, which precedes the reply.)
    ws_call(
        &mut ws,
        3,
        json!({"op": "publish", "channel": "mix", "data": "hi"}),
    )
    .await;
    assert!(show(&resp_sub.frame()).ends_with("$4\\r\\n\"hi\"\\r\\n"));

    // HTTP -> both.
    let body = json!({"channel": "mix", "data": [true, null]}).to_string();
    let r = http_post(h.http, "/api/publish", &body, None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.1).unwrap()["receivers"],
        2
    );
    assert_eq!(ws_recv(&mut ws).await["data"], json!([true, null]));
    assert!(show(&resp_sub.frame()).ends_with("[true,null]\\r\\n"));

    // PUBSUB counts WebSocket subscribers too.
    ws_call(&mut ws, 4, json!({"op": "psubscribe", "pattern": "m*"})).await;
    assert_eq!(
        resp_pub.cmd(&[b"PUBSUB", b"NUMSUB", b"mix"]),
        b"*2\r\n$3\r\nmix\r\n:2\r\n"
    );
    assert_eq!(resp_pub.cmd(&[b"PUBSUB", b"NUMPAT"]), b":1\r\n");
    assert_eq!(
        resp_pub.cmd(&[b"PUBSUB", b"CHANNELS"]),
        b"*1\r\n$3\r\nmix\r\n"
    );
}

async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    extra: &str,
) -> (u16, String) {
    let key = key
        .map(|k| format!("X-API-Key: {k}\r\n"))
        .unwrap_or_default();
    http_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{key}{extra}Connection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn http_api_keys_and_errors() {
    let h = Herald::start(&["--api-key", "k1", "--jwt-hmac-secret", SECRET]);
    let body = json!({"channel": "a", "data": 1}).to_string();
    let (st, b) = http_post(h.http, "/api/publish", &body, None).await;
    assert_eq!(st, 401, "{b}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["error"]["code"],
        102
    );
    assert_eq!(
        http_post(h.http, "/api/publish", &body, Some("wrong"))
            .await
            .0,
        401
    );
    assert_eq!(
        http_post(h.http, "/api/publish", &body, Some("k1")).await.0,
        200
    );
    let (st, b) = http_post(h.http, "/api/publish", "{not json", Some("k1")).await;
    assert_eq!(st, 400);
    assert!(b.contains("invalid request body"), "{b}");
    let (st, b) = http_post(
        h.http,
        "/api/publish",
        r#"{"channel":"","data":1}"#,
        Some("k1"),
    )
    .await;
    assert_eq!((st, b.contains("\"code\":110")), (400, true), "{b}");
    let (st, b) = http_post(
        h.http,
        "/api/broadcast",
        &json!({"channels": ["a", "b"], "data": "x"}).to_string(),
        Some("k1"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["results"][1]["channel"],
        "b"
    );
    let mut ws = ws_connect(h.http, Some(&token("u1", json!({})))).await;
    ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "room:1"})).await;
    let (st, b) = http_get(h.http, "/api/channels?pattern=room:*", Some("k1"), "").await;
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&b).unwrap(),
        json!({
            "channels": [{"channel": "room:1", "subscribers": 1}],
            "cluster": {"nodes": 1, "partial": false},
        })
    );
    let (st, b) = http_get(h.http, "/api/presence/room:1", Some("k1"), "").await;
    assert_eq!((st, b.contains("\"code\":108")), (501, true));
    assert_eq!(
        http_get(h.http, "/api/history/room:1", Some("k1"), "")
            .await
            .0,
        501
    );
    assert_eq!(http_get(h.http, "/healthz", None, "").await.0, 200);
    // Statistics need the key once authentication is configured.
    assert_eq!(http_get(h.http, "/metrics", None, "").await.0, 401);
    assert_eq!(http_get(h.http, "/stats", Some("wrong"), "").await.0, 401);
    assert_eq!(
        http_get(h.http, "/stats", None, "Authorization: Bearer k1\r\n")
            .await
            .0,
        200
    );
    let (st, m) = http_get(h.http, "/metrics", Some("k1"), "").await;
    assert_eq!(st, 200);
    for name in [
        "herald_connections{frontend=\"ws\"} 1",
        "herald_messages_published_total",
        "herald_slow_consumer_disconnects_total",
        "herald_auth_failures_total",
        "herald_command_duration_seconds_bucket",
        "herald_channels 1",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}");
    }
    // Without a key but with auth configured, the API is closed.
    let h2 = Herald::start(&["--jwt-hmac-secret", SECRET]);
    assert_eq!(http_post(h2.http, "/api/publish", &body, None).await.0, 403);
}

/// A refused `connect` ends the connection: its error reply, then the
/// `disconnect` push and a Close frame with the disconnect code. It never
/// falls back to an anonymous session.
#[tokio::test]
async fn jwt_negative_cases_end_the_connection() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET]);
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let good = token("u1", json!({}));
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        (
            "expired",
            hs256(json!({"sub": "u1", "exp": unix_now() - 100}), SECRET),
            104,
            3002,
        ),
        (
            "not yet valid",
            hs256(
                json!({"sub": "u1", "exp": unix_now() + 600, "nbf": unix_now() + 300}),
                SECRET,
            ),
            102,
            3500,
        ),
        (
            "wrong key",
            hs256(json!({"sub": "u1", "exp": unix_now() + 600}), "other"),
            102,
            3500,
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&format!(r#"{{"sub":"u1","exp":{}}}"#, unix_now() + 600))
            ),
            102,
            3500,
        ),
        (
            "tampered",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&format!(r#"{{"sub":"admin","exp":{}}}"#, unix_now() + 600)),
                parts[2]
            ),
            102,
            3500,
        ),
        (
            "missing sub",
            hs256(json!({"exp": unix_now() + 600}), SECRET),
            102,
            3500,
        ),
        ("garbage", "not.a.jwt".to_string(), 102, 3500),
    ];
    for (i, (name, tok, code, close)) in cases.iter().enumerate() {
        let mut ws = ws_connect(h.http, None).await;
        let r = ws_call(&mut ws, i as u64, json!({"op": "connect", "token": tok})).await;
        assert_eq!(r["error"]["code"], *code, "{name}: {r}");
        let (push, got) = ws_until_close(&mut ws).await;
        assert_eq!(got, Some(*close), "{name}");
        assert_eq!(push.expect("disconnect push")["code"], *close, "{name}");
    }
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 50, json!({"op": "connect", "token": good})).await;
    assert_eq!(r["result"]["user"], "u1");
    assert_eq!(
        ws_call(&mut ws, 51, json!({"op": "connect", "token": good})).await["error"]["code"],
        105
    );

    // A bad token on the URL: a terminal disconnect.
    let mut bad = ws_connect(h.http, Some("not.a.jwt")).await;
    let (push, code) = ws_until_close(&mut bad).await;
    assert_eq!(code, Some(3500));
    assert_eq!(push.unwrap()["reconnect"], false);
}

#[tokio::test]
async fn rs256_and_es256_keys_fix_the_algorithm() {
    for (public, private, alg) in [
        (
            "rsa_public.pem",
            "rsa_private.pem",
            jsonwebtoken::Algorithm::RS256,
        ),
        (
            "ec_public.pem",
            "ec_private.pem",
            jsonwebtoken::Algorithm::ES256,
        ),
    ] {
        let h = Herald::start(&["--jwt-public-key-file", &fixture(public)]);
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => {
                jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap()
            }
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let claims = json!({"sub": "u1", "exp": unix_now() + 600});
        let good = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
        // Key confusion: HS256 signed with the public key as the secret.
        let public_pem = std::fs::read(fixture(public)).unwrap();
        let confused = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        let mut ws = ws_connect(h.http, None).await;
        assert_eq!(
            ws_call(&mut ws, 1, json!({"op": "connect", "token": confused})).await["error"]["code"],
            102,
            "{alg:?}"
        );
        assert_eq!(ws_until_close(&mut ws).await.1, Some(3500), "{alg:?}");
        let mut ws = ws_connect(h.http, None).await;
        assert_eq!(
            ws_call(&mut ws, 2, json!({"op": "connect", "token": good})).await["result"]["user"],
            "u1",
            "{alg:?}"
        );
        // RESP accepts the same token.
        let mut r = Raw::connect(h.resp);
        assert_eq!(r.cmd(&[b"AUTH", good.as_bytes()]), b"+OK\r\n");
        assert_eq!(
            r.cmd(&[b"AUTH", b"u1", confused.as_bytes()]),
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
    }
}

#[tokio::test]
async fn channel_permissions_from_claims_and_namespaces() {
    let dir = std::env::temp_dir().join(format!("herald-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("herald.toml");
    std::fs::write(
        &cfg,
        "[namespaces.default]\nallow_anonymous = false\nallow_publish = false\n\n[namespaces.public]\nallow_anonymous = true\nallow_publish = true\n",
    )
    .unwrap();
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let limited = token(
        "u1",
        json!({"subscribe": ["chat:*"], "publish": ["chat:room1"]}),
    );
    let mut ws = ws_connect(h.http, Some(&limited)).await;
    let code = |v: serde_json::Value| v["error"]["code"].clone();
    assert_eq!(
        ws_call(
            &mut ws,
            1,
            json!({"op": "subscribe", "channel": "chat:room2"})
        )
        .await["result"],
        json!({})
    );
    assert_eq!(
        code(ws_call(&mut ws, 2, json!({"op": "subscribe", "channel": "admin"})).await),
        103
    );
    assert_eq!(
        ws_call(
            &mut ws,
            3,
            json!({"op": "psubscribe", "pattern": "chat:room*"})
        )
        .await["result"],
        json!({})
    );
    assert_eq!(
        code(ws_call(&mut ws, 4, json!({"op": "psubscribe", "pattern": "*"})).await),
        103
    );
    assert_eq!(
        ws_call(
            &mut ws,
            5,
            json!({"op": "publish", "channel": "chat:room1", "data": 1})
        )
        .await["result"],
        json!({})
    );
    assert_eq!(
        code(
            ws_call(
                &mut ws,
                6,
                json!({"op": "publish", "channel": "chat:room2", "data": 1})
            )
            .await
        ),
        103
    );

    // No claims: identified clients subscribe by default; publishing follows
    // the namespace.
    let plain = token("u2", json!({}));
    let mut ws2 = ws_connect(h.http, Some(&plain)).await;
    assert_eq!(
        ws_call(
            &mut ws2,
            1,
            json!({"op": "subscribe", "channel": "anything"})
        )
        .await["result"],
        json!({})
    );
    assert_eq!(
        code(
            ws_call(
                &mut ws2,
                2,
                json!({"op": "publish", "channel": "anything", "data": 1})
            )
            .await
        ),
        103
    );
    assert_eq!(
        ws_call(
            &mut ws2,
            3,
            json!({"op": "publish", "channel": "public:x", "data": 1})
        )
        .await["result"],
        json!({})
    );

    // Anonymous: only where allow_anonymous.
    let mut anon = ws_connect(h.http, None).await;
    assert_eq!(
        code(ws_call(&mut anon, 1, json!({"op": "subscribe", "channel": "news"})).await),
        103
    );
    assert_eq!(
        ws_call(
            &mut anon,
            2,
            json!({"op": "subscribe", "channel": "public:news"})
        )
        .await["result"],
        json!({})
    );

    // RESP with a JWT: -NOPERM in Redis's wording.
    let mut r = Raw::connect(h.resp);
    assert_eq!(
        r.cmd(&[b"HELLO", b"3", b"AUTH", b"u1", limited.as_bytes()])[0],
        b'%'
    );
    let noperm =
        b"-NOPERM this user has no permissions to access one of the channels used as arguments\r\n";
    assert_eq!(r.cmd(&[b"SUBSCRIBE", b"admin"]), noperm);
    assert_eq!(r.cmd(&[b"PUBLISH", b"chat:room2", b"x"]), noperm);
    assert_eq!(r.cmd(&[b"PSUBSCRIBE", b"*"]), noperm);
    // Delivered to u1's pattern subscription.
    assert_eq!(r.cmd(&[b"PUBLISH", b"chat:room1", b"x"]), b":1\r\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn malformed_input_gets_documented_codes() {
    let h = Herald::start(&["--ws-max-message-size", "1kb"]);
    let mut ws = ws_connect(h.http, None).await;
    ws.send(Message::Text("{nope".into())).await.unwrap();
    let r = ws_recv(&mut ws).await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(null), json!(100))
    );
    let r = ws_call(&mut ws, 1, json!({"op": "frobnicate"})).await;
    assert_eq!(r["error"]["code"], 101);
    let r = ws_call(&mut ws, 2, json!({"op": "subscribe"})).await;
    assert_eq!(r["error"]["code"], 100);
    let r = ws_call(&mut ws, 3, json!({"op": "history", "channel": "x"})).await;
    assert_eq!(r["error"]["code"], 108);
    // A binary frame: terminal bad request.
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let (push, code) = ws_until_close(&mut ws).await;
    assert_eq!(code, Some(3501));
    assert_eq!(push.unwrap()["code"], 3501);
    // An oversized message.
    let mut big = ws_connect(h.http, None).await;
    let _ = big.send(Message::Text("x".repeat(4096).into())).await;
    let (_, code) = ws_until_close(&mut big).await;
    assert_eq!(code, Some(3502));
    // The server serves the next client.
    let mut next = ws_connect(h.http, None).await;
    assert_eq!(
        ws_call(&mut next, 1, json!({"op": "ping"})).await["result"],
        json!({})
    );
    // Ops label the command metrics by their own names; a client's unknown
    // op string never becomes a label.
    let (st, m) = http_get(h.http, "/metrics", None, "").await;
    assert_eq!(st, 200);
    assert!(
        m.contains(r#"frontend="ws",command="ping""#)
            || m.contains(r#"command="ping",frontend="ws""#),
        "{m}"
    );
    assert!(!m.contains("frobnicate"), "{m}");
}

#[tokio::test]
async fn origin_allow_list() {
    let h = Herald::start(&["--allowed-origins", "https://app.example"]);
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let get = |origin: String| {
        let addr = h.http;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{upgrade}{origin}\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = [0u8; 12];
            tokio::time::timeout(TIMEOUT, s.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8_lossy(&buf[9..12]).to_string()
        }
    };
    assert_eq!(get("Origin: https://evil.example\r\n".into()).await, "403");
    assert_eq!(get("Origin: https://app.example\r\n".into()).await, "101");
    assert_eq!(
        get(format!("Origin: http://{}\r\n", h.http)).await,
        "101",
        "same host"
    );
    assert_eq!(
        get(String::new()).await,
        "101",
        "non-browser clients send no Origin"
    );
}

#[tokio::test]
async fn token_expiry_and_refresh() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET]);
    let short = |sub: &str| hs256(json!({"sub": sub, "exp": unix_now() + 2}), SECRET);
    // Refreshed in time: still connected after the first token's expiry.
    let mut a = ws_connect(h.http, None).await;
    ws_call(&mut a, 1, json!({"op": "connect", "token": short("u1")})).await;
    let r = ws_call(
        &mut a,
        2,
        json!({"op": "refresh", "token": token("u1", json!({}))}),
    )
    .await;
    assert!(r["result"]["expires"].is_u64(), "{r}");
    assert_eq!(
        ws_call(
            &mut a,
            3,
            json!({"op": "refresh", "token": token("u2", json!({}))})
        )
        .await["error"]["code"],
        102
    );
    // Not refreshed: disconnected with the reconnect-advised expiry code.
    let mut b = ws_connect(h.http, None).await;
    ws_call(&mut b, 1, json!({"op": "connect", "token": short("u1")})).await;
    let (push, code) = ws_until_close(&mut b).await;
    assert_eq!(code, Some(3002));
    assert_eq!(push.unwrap()["reconnect"], true);
    assert_eq!(
        ws_call(&mut a, 4, json!({"op": "ping"})).await["result"],
        json!({})
    );
}

#[tokio::test]
async fn liveness_pings_close_silent_clients() {
    let h = Herald::start(&["--ws-ping-interval", "200ms", "--ws-pong-timeout", "300ms"]);
    let mut ws = ws_connect(h.http, None).await;
    // Not reading means tungstenite never answers the server's pings.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (push, code) = ws_until_close(&mut ws).await;
    assert_eq!(code, Some(3003), "{push:?}");
    // A client that reads (and so answers pings) stays.
    let mut live = ws_connect(h.http, None).await;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            ws_call(&mut live, i, json!({"op": "ping"})).await["result"],
            json!({})
        );
    }
}

#[tokio::test]
async fn limits_rate_and_subscriptions() {
    let h = Herald::start(&["--ws-publish-rate", "3", "--max-subscriptions", "2"]);
    let mut ws = ws_connect(h.http, None).await;
    for i in 0..3 {
        assert_eq!(
            ws_call(
                &mut ws,
                i,
                json!({"op": "publish", "channel": "c", "data": i})
            )
            .await["result"],
            json!({})
        );
    }
    assert_eq!(
        ws_call(
            &mut ws,
            9,
            json!({"op": "publish", "channel": "c", "data": 0})
        )
        .await["error"]["code"],
        107
    );
    ws_call(&mut ws, 10, json!({"op": "subscribe", "channel": "a"})).await;
    ws_call(&mut ws, 11, json!({"op": "psubscribe", "pattern": "b*"})).await;
    assert_eq!(
        ws_call(&mut ws, 12, json!({"op": "subscribe", "channel": "c"})).await["error"]["code"],
        106
    );
}

#[tokio::test]
async fn slow_websocket_consumer_is_cut_off() {
    let h = Herald::start(&[
        "--output-buffer-hard-limit",
        "256kb",
        "--output-buffer-soft-limit",
        "0",
    ]);
    let mut slow = ws_connect(h.http, None).await;
    ws_call(&mut slow, 1, json!({"op": "subscribe", "channel": "flood"})).await;
    let mut fast = ws_connect(h.http, None).await;
    ws_call(&mut fast, 1, json!({"op": "subscribe", "channel": "flood"})).await;
    let mut p = Raw::connect(h.resp);
    let payload = vec![b'z'; 64 * 1024];
    for i in 0..200 {
        p.cmd(&[b"PUBLISH", b"flood", &payload]);
        let m = ws_recv(&mut fast).await;
        assert_eq!(m["channel"], "flood", "fast subscriber lost message {i}");
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let info = show(&p.cmd(&[b"INFO", b"stats"]));
        if info.contains("client_output_buffer_limit_disconnections:1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow ws client not cut off: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(slow);
}

#[test]
fn sigterm_sends_shutdown_disconnect() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut h = Herald::start(&[]);
    let mut ws = rt.block_on(ws_connect(h.http, None));
    rt.block_on(ws_call(
        &mut ws,
        1,
        json!({"op": "subscribe", "channel": "x"}),
    ));
    let status = h.terminate();
    assert!(status.success());
    let (push, code) = rt.block_on(ws_until_close(&mut ws));
    assert_eq!(code, Some(3000));
    assert_eq!(push.unwrap()["reconnect"], true);
}
