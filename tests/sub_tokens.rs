//! Subscription tokens for private channels: a JWT with a `channel` claim
//! grants one channel to the connection of its `sub` (subscribe, history,
//! presence), is refreshed by `sub_refresh`, and unsubscribes the channel
//! with code 3006 when it runs out. RESP ignores them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "subtok-secret";
const CFG: &str =
    "[namespaces.private]\nhistory_size = 100\nhistory_ttl = \"10m\"\npresence = true\n";

fn start() -> (Herald, std::path::PathBuf) {
    let (dir, file) = temp_config("subtok", CFG);
    let h = Herald::start(&[
        "--config",
        &file,
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "backend",
    ]);
    (h, dir)
}

/// A connection token that may subscribe to `public:*` only.
fn conn_token(sub: &str) -> String {
    hs256(
        json!({"sub": sub, "exp": unix_now() + 600, "subscribe": ["public:*"]}),
        SECRET,
    )
}

fn sub_token(sub: &str, channel: &str, exp: u64) -> String {
    hs256(json!({"sub": sub, "channel": channel, "exp": exp}), SECRET)
}

async fn user(h: &Herald, sub: &str) -> Ws {
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut ws,
        1,
        json!({"op": "connect", "token": conn_token(sub)}),
    )
    .await;
    assert_eq!(r["result"]["user"], sub, "{r}");
    ws
}

fn code(r: &Value) -> u64 {
    r["error"]["code"].as_u64().unwrap_or(0)
}

/// Reads frames until a push named `name` arrives (or panics on timeout).
async fn until_push(ws: &mut Ws, name: &str) -> Value {
    loop {
        let v = ws_recv(ws).await;
        if v["push"] == name {
            return v;
        }
    }
}

fn publish(h: &Herald, channel: &str, data: &str) {
    let mut b = Raw::backend(h.resp, "backend");
    b.cmd(&[b"PUBLISH", channel.as_bytes(), data.as_bytes()]);
}

#[tokio::test]
async fn a_token_grants_one_channel_and_its_reads() {
    let (h, _dir) = start();
    let mut ws = user(&h, "alice").await;
    // Without a token the connection's claims refuse the channel.
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "subscribe", "channel": "private:a"}),
    )
    .await;
    assert_eq!(code(&r), 103, "{r}");
    let r = ws_call(&mut ws, 3, json!({"op": "history", "channel": "private:a"})).await;
    assert_eq!(code(&r), 103, "{r}");
    let t = sub_token("alice", "private:a", unix_now() + 600);
    let r = ws_call(
        &mut ws,
        4,
        json!({"op": "subscribe", "channel": "private:a", "token": t}),
    )
    .await;
    assert!(r["result"]["epoch"].is_string(), "{r}");
    publish(&h, "private:a", "hello");
    let m = until_push(&mut ws, "message").await;
    assert_eq!(
        (&m["channel"], &m["data"]),
        (&json!("private:a"), &json!("hello"))
    );
    // Its history and presence, with the grant.
    let r = ws_call(&mut ws, 5, json!({"op": "history", "channel": "private:a"})).await;
    assert_eq!(r["result"]["publications"][0]["data"], "hello", "{r}");
    let r = ws_call(
        &mut ws,
        6,
        json!({"op": "presence", "channel": "private:a"}),
    )
    .await;
    assert_eq!(r["result"]["clients"][0]["user"], "alice", "{r}");
    let r = ws_call(
        &mut ws,
        7,
        json!({"op": "presence_stats", "channel": "private:a"}),
    )
    .await;
    assert_eq!(r["result"]["users"], 1, "{r}");
    // The grant is for that channel only.
    let r = ws_call(&mut ws, 8, json!({"op": "history", "channel": "private:b"})).await;
    assert_eq!(code(&r), 103, "{r}");
    // Unsubscribing ends the grant: reads are refused again.
    let r = ws_call(
        &mut ws,
        9,
        json!({"op": "unsubscribe", "channel": "private:a"}),
    )
    .await;
    assert_eq!(r["result"], json!({}));
    let r = ws_call(
        &mut ws,
        10,
        json!({"op": "history", "channel": "private:a"}),
    )
    .await;
    assert_eq!(code(&r), 103, "{r}");
}

#[tokio::test]
async fn wrong_channel_user_expired_forged_and_anonymous_are_refused() {
    let (h, _dir) = start();
    let mut ws = user(&h, "alice").await;
    let far = unix_now() + 600;
    let sub = |id: u64, token: String| json!({"id": id, "op": "subscribe", "channel": "private:a", "token": token});
    let cases: Vec<(String, u64, &str)> = vec![
        (sub_token("alice", "private:b", far), 102, "another channel"),
        (sub_token("bob", "private:a", far), 102, "another user"),
        (
            sub_token("alice", "private:a", unix_now() - 60),
            104,
            "expired",
        ),
        (
            hs256(
                json!({"sub": "alice", "channel": "private:a", "exp": far}),
                "not-the-secret",
            ),
            102,
            "bad signature",
        ),
        // A connection token (no channel claim) is no subscription token.
        (conn_token("alice"), 102, "no channel claim"),
        ("garbage".into(), 102, "malformed"),
    ];
    for (i, (token, want, msg)) in cases.into_iter().enumerate() {
        let r = ws_call(&mut ws, 10 + i as u64, sub(0, token)).await;
        assert_eq!(code(&r), want, "{msg}: {r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(msg),
            "{msg}: {r}"
        );
    }
    // Still not subscribed: nothing arrives.
    publish(&h, "private:a", "secret");
    let r = ws_call(&mut ws, 50, json!({"op": "ping"})).await;
    assert_eq!(r["result"], json!({}));
    // An anonymous connection cannot use one, even for a real token.
    let mut anon = ws_connect(h.http, None).await;
    let r = ws_call(&mut anon, 1, sub(0, sub_token("alice", "private:a", far))).await;
    assert_eq!(code(&r), 102, "{r}");
    // A subscription token cannot authenticate a connection.
    let mut ws2 = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut ws2,
        1,
        json!({"op": "connect", "token": sub_token("alice", "private:a", far)}),
    )
    .await;
    assert_eq!(code(&r), 102, "{r}");
    // Nor over RESP: its permissions come from AUTH, and AUTH refuses it.
    let mut r = Raw::connect(h.resp);
    let t = sub_token("alice", "private:a", far);
    let reply = r.cmd(&[b"AUTH", t.as_bytes()]);
    assert!(show(&reply).contains("WRONGPASS"), "{}", show(&reply));
    // Fields the op does not know are still refused.
    let r = ws_call(
        &mut ws,
        60,
        json!({"op": "psubscribe", "pattern": "private:*", "token": "x"}),
    )
    .await;
    assert_eq!(code(&r), 100, "{r}");
}

#[tokio::test]
async fn refresh_keeps_the_subscription() {
    let (h, _dir) = start();
    let mut ws = user(&h, "alice").await;
    let t = sub_token("alice", "private:r", unix_now() + 2);
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "subscribe", "channel": "private:r", "token": t}),
    )
    .await;
    assert!(r["result"].is_object(), "{r}");
    let p = until_push(&mut ws, "sub_refresh").await;
    assert_eq!(p["channel"], "private:r");
    // A refused refresh leaves the grant as it is.
    let r = ws_call(
        &mut ws,
        3,
        json!({"op": "sub_refresh", "channel": "private:r", "token": sub_token("bob", "private:r", unix_now() + 60)}),
    )
    .await;
    assert_eq!(code(&r), 102, "{r}");
    let r = ws_call(
        &mut ws,
        4,
        json!({"op": "sub_refresh", "channel": "private:nope", "token": sub_token("alice", "private:nope", unix_now() + 60)}),
    )
    .await;
    assert_eq!(code(&r), 100, "{r}");
    let exp = unix_now() + 60;
    let r = ws_call(
        &mut ws,
        5,
        json!({"op": "sub_refresh", "channel": "private:r", "token": sub_token("alice", "private:r", exp)}),
    )
    .await;
    assert_eq!(r["result"]["expires"], exp, "{r}");
    // Past the first token's end, still subscribed.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    publish(&h, "private:r", "still here");
    let m = ws_recv(&mut ws).await;
    assert_eq!(m["push"], "message", "{m}");
    assert_eq!(m["data"], "still here");
}

#[tokio::test]
async fn no_refresh_unsubscribes_with_3006() {
    let (h, _dir) = start();
    let mut ws = user(&h, "alice").await;
    let t = sub_token("alice", "private:x", unix_now() + 2);
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "subscribe", "channel": "private:x", "token": t}),
    )
    .await;
    assert!(r["result"].is_object(), "{r}");
    let p = until_push(&mut ws, "sub_refresh").await;
    assert_eq!(p["channel"], "private:x");
    let u = until_push(&mut ws, "unsubscribe").await;
    assert_eq!(
        u,
        json!({"push": "unsubscribe", "channel": "private:x", "code": 3006,
               "reason": "subscription token expired"})
    );
    // Gone: no message, reads refused, and the connection stays.
    publish(&h, "private:x", "late");
    ws_send(
        &mut ws,
        json!({"id": 3, "op": "history", "channel": "private:x"}),
    )
    .await;
    let r = ws_recv(&mut ws).await;
    assert_eq!((r["id"].clone(), code(&r)), (json!(3), 103), "{r}");
    let r = ws_call(
        &mut ws,
        4,
        json!({"op": "presence_stats", "channel": "private:x"}),
    )
    .await;
    assert_eq!(code(&r), 103, "{r}");
    // Public channels of the connection's own claims stay subscribed.
    let r = ws_call(
        &mut ws,
        5,
        json!({"op": "subscribe", "channel": "public:1"}),
    )
    .await;
    assert_eq!(r["result"], json!({}));
}

#[tokio::test]
async fn a_grant_is_not_sent_to_the_subscribe_hook() {
    // The hook's URL answers nothing: a subscribe sent there is refused
    // with 112; one with a subscription token is granted without asking.
    let (dir, file) = temp_config(
        "subtok-hook",
        "[namespaces.hooked]\nsubscribe_proxy = true\n",
    );
    let dead = format!("http://127.0.0.1:{}/subscribe", free_port());
    let h = Herald::start(&[
        "--config",
        &file,
        "--jwt-hmac-secret",
        SECRET,
        "--proxy-subscribe-url",
        &dead,
        "--proxy-timeout",
        "500ms",
    ]);
    let mut ws = ws_connect(h.http, None).await;
    let plain = hs256(json!({"sub": "alice", "exp": unix_now() + 600}), SECRET);
    let r = ws_call(&mut ws, 1, json!({"op": "connect", "token": plain})).await;
    assert_eq!(r["result"]["user"], "alice", "{r}");
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "subscribe", "channel": "hooked:1"}),
    )
    .await;
    assert_eq!(code(&r), 112, "{r}");
    let t = sub_token("alice", "hooked:1", unix_now() + 600);
    let r = ws_call(
        &mut ws,
        3,
        json!({"op": "subscribe", "channel": "hooked:1", "token": t}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_open_server_needs_no_token_and_checks_none() {
    // No authentication configured: every client has full access, and a
    // token given with subscribe is not checked (there is no key to).
    let h = Herald::start(&[]);
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut ws,
        1,
        json!({"op": "subscribe", "channel": "private:o", "token": "anything"}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "sub_refresh", "channel": "private:o", "token": "anything"}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
}
