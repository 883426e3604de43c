//! The last gaps of the hardening issue: subscribe/unsubscribe churn, the
//! global bound on untrusted patterns, the global output budget beyond
//! WebSocket replies, and the memory of large WebSocket frames. Each test
//! fails on the code before its fix.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SECRET: &str = "hardening3-secret";

fn token(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": unix_now() + 600}), SECRET)
}

fn code(v: &serde_json::Value) -> serde_json::Value {
    v["error"]["code"].clone()
}

/// Counts the replies of `frames` RESP frames that are errors.
fn errors_among(c: &mut Raw, frames: usize) -> (usize, String) {
    let mut errors = 0;
    let mut last = String::new();
    for _ in 0..frames {
        let f = c.frame();
        if f.starts_with(b"-") {
            errors += 1;
            last = show(&f);
        }
    }
    (errors, last)
}

// ---- subscribe/unsubscribe churn -------------------------------------------

/// A token client toggling a subscription on a presence channel with
/// join/leave makes the hub push a join and a leave to every subscriber per
/// toggle: the toggles are held to `--subscribe-rate` after a burst.
#[tokio::test]
async fn subscription_churn_is_rate_limited_over_websocket() {
    let (dir, cfg) = temp_config(
        "churn",
        "[namespaces.room]\npresence = true\njoin_leave = true\n",
    );
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--config",
        &cfg,
        "--subscribe-rate",
        "10",
        "--subscribe-burst",
        "20",
    ]);
    let mut watcher = ws_connect(h.http, Some(&token("watcher"))).await;
    let r = ws_call(
        &mut watcher,
        1,
        json!({"op": "subscribe", "channel": "room:1"}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let mut churn = ws_connect(h.http, Some(&token("churner"))).await;
    let started = Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    for i in 0..100u64 {
        let r = ws_call(
            &mut churn,
            2 * i,
            json!({"op": "subscribe", "channel": "room:1"}),
        )
        .await;
        if r["result"] == json!({}) {
            ok += 1;
        } else {
            assert_eq!(code(&r), 107, "{r}");
            assert!(
                r["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("10 subscriptions per second"),
                "{r}"
            );
            limited += 1;
        }
        // Leaving is never refused.
        let r = ws_call(
            &mut churn,
            2 * i + 1,
            json!({"op": "unsubscribe", "channel": "room:1"}),
        )
        .await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    let secs = started.elapsed().as_secs_f64();
    let bound = 20 + (10.0 * secs).ceil() as u32 + 1;
    assert!(ok <= bound, "{ok} subscribes passed in {secs:.1} s");
    assert!(ok >= 20, "the burst passes: {ok}");
    assert!(limited > 0);
    // The watcher got a join and a leave per subscribe that passed, no more.
    let mut events = 0;
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let Ok(v) = tokio::time::timeout(Duration::from_millis(200), ws_recv(&mut watcher)).await
        else {
            break;
        };
        if (v["push"] == "join" || v["push"] == "leave") && v.to_string().contains("churner") {
            events += 1;
        }
    }
    assert_eq!(events, 2 * ok, "{ok} subscribes passed");
    // The bucket refills: after a pause the client subscribes again, and a
    // channel already held costs nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = ws_call(
        &mut churn,
        1000,
        json!({"op": "subscribe", "channel": "room:2"}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    for i in 0..30 {
        let r = ws_call(
            &mut churn,
            1001 + i,
            json!({"op": "subscribe", "channel": "room:2"}),
        )
        .await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    // Patterns and leaderboards count too.
    let mut hits = 0;
    for i in 0..40u64 {
        let op = if i % 2 == 0 {
            json!({"op": "psubscribe", "pattern": format!("p{i}:*")})
        } else {
            json!({"op": "leaderboard_subscribe", "key": format!("lb{i}")})
        };
        if code(&ws_call(&mut churn, 2000 + i, op).await) == 107 {
            hits += 1;
        }
    }
    assert!(hits > 0, "psubscribe and leaderboard_subscribe are limited");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn subscription_churn_is_rate_limited_over_resp_by_default() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", "pw"]);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", token("u").as_bytes()]), b"+OK\r\n");
    // 1,500 toggles pipelined: the default burst (1,000) and rate
    // (100 a second) let about 1,000 subscribes through, not 1,500.
    let mut pipe = Vec::new();
    for _ in 0..1500 {
        pipe.extend(encode(&[b"SUBSCRIBE", b"t"]));
        pipe.extend(encode(&[b"UNSUBSCRIBE", b"t"]));
    }
    c.send_raw(&pipe);
    let (errors, last) = errors_among(&mut c, 3000);
    assert!(
        (200..=500).contains(&errors),
        "{errors} subscribes refused of 1,500"
    );
    assert!(
        last.starts_with("-ERR subscribe rate limit exceeded (100 per second, 1000 at once)"),
        "{last}"
    );
    // The password client (the backend) is not limited.
    let mut b = Raw::backend(h.resp, "pw");
    b.send_raw(&pipe);
    let (errors, last) = errors_among(&mut b, 3000);
    assert_eq!(errors, 0, "{last}");
}

#[test]
fn a_resp_subscribe_is_refused_whole_and_a_large_one_passes_on_a_full_bucket() {
    let (dir, cfg) = temp_config("churnresp", "[namespaces.pub]\nallow_anonymous = true\n");
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--config",
        &cfg,
        "--subscribe-rate",
        "5",
        "--subscribe-burst",
        "4",
    ]);
    // Anonymous clients are limited too.
    let mut anon = Raw::connect(h.resp);
    let r = anon.cmd(&[b"SUBSCRIBE", b"pub:1", b"pub:2", b"pub:3"]);
    assert!(r.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"), "{}", show(&r));
    anon.frame();
    anon.frame();
    // One token left: a command adding two is refused whole.
    let r = anon.cmd(&[b"SUBSCRIBE", b"pub:4", b"pub:5"]);
    assert!(
        r.starts_with(b"-ERR subscribe rate limit exceeded"),
        "{}",
        show(&r)
    );
    anon.send(&[b"PING"]);
    assert_eq!(anon.frame(), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    // A channel held costs nothing, and the one token left passes.
    let r = anon.cmd(&[b"SUBSCRIBE", b"pub:1", b"pub:4"]);
    assert!(r.starts_with(b"*3\r\n"), "{}", show(&r));
    anon.frame();
    // A token client with a full bucket may subscribe to more names in one
    // command than the burst holds (a reconnecting client), then waits.
    let mut user = Raw::connect(h.resp);
    assert_eq!(user.cmd(&[b"AUTH", token("u").as_bytes()]), b"+OK\r\n");
    let names: Vec<Vec<u8>> = (0..10).map(|i| format!("c{i}").into_bytes()).collect();
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(names.iter().map(|n| &n[..]));
    user.send(&args);
    for _ in 0..10 {
        assert!(user.frame().starts_with(b"*3\r\n"));
    }
    let r = user.cmd(&[b"PSUBSCRIBE", b"x*"]);
    assert!(
        r.starts_with(b"-ERR subscribe rate limit exceeded"),
        "{}",
        show(&r)
    );
    let _ = std::fs::remove_dir_all(dir);
}
