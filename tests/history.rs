//! Stream-backed replay over WebSocket and HTTP: offsets and epochs,
//! gapless recovery under concurrent publishes, the unrecoverable cases,
//! lag catch-up, the memory cap, and redis-py's stream calls.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn config(text: &str) -> (std::path::PathBuf, String) {
    temp_config("hist", text)
}

const CHAT: &str = "[namespaces.chat]\nhistory_size = 100000\nhistory_ttl = \"10m\"\n";

#[tokio::test]
async fn offsets_epochs_and_history_reads() {
    let (_d, cfg) = config(CHAT);
    let h = Herald::start(&["--config", &cfg]);
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "chat:1"})).await;
    assert_eq!(r["result"]["offset"], 0, "{r}");
    let epoch = r["result"]["epoch"].as_str().unwrap().to_string();
    let mut p = Raw::connect(h.resp);
    for i in 1..=5 {
        p.cmd(&[b"PUBLISH", b"chat:1", format!("{{\"n\":{i}}}").as_bytes()]);
    }
    for i in 1..=5u64 {
        let m = ws_recv(&mut ws).await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some(i), Some(i))
        );
    }
    // The history is a Redis stream at the channel's key.
    assert_eq!(p.cmd(&[b"XLEN", b"chat:1"]), b":5\r\n");
    assert_eq!(p.cmd(&[b"TYPE", b"chat:1"]), b"+stream\r\n");
    let range = show(&p.cmd(&[b"XRANGE", b"chat:1", b"-", b"+", b"COUNT", b"1"]));
    assert!(
        range.contains("$4\\r\\ndata\\r\\n$7\\r\\n{\"n\":1}"),
        "{range}"
    );
    // An XADD to the channel's key is delivered too.
    p.cmd(&[b"XADD", b"chat:1", b"*", b"data", b"\"from xadd\""]);
    let m = ws_recv(&mut ws).await;
    assert_eq!(
        (m["offset"].as_u64(), m["data"].clone()),
        (Some(6), json!("from xadd"))
    );
    p.cmd(&[b"XADD", b"chat:1", b"*", b"user", b"ann", b"text", b"hi"]);
    assert_eq!(
        ws_recv(&mut ws).await["data"],
        json!({"user": "ann", "text": "hi"})
    );

    // The history op: since, limit, reverse.
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "history", "channel": "chat:1", "limit": 2}),
    )
    .await;
    assert_eq!(r["result"]["offset"], 7);
    assert_eq!(r["result"]["epoch"], epoch);
    let offs: Vec<u64> = r["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![1, 2]);
    let r = ws_call(&mut ws, 3, json!({"op": "history", "channel": "chat:1", "since": {"offset": 4, "epoch": epoch}, "reverse": true})).await;
    let offs: Vec<u64> = r["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![7, 6, 5]);
    let r = ws_call(
        &mut ws,
        4,
        json!({"op": "history", "channel": "chat:1", "since": {"offset": 4, "epoch": "123"}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 111);
    let r = ws_call(&mut ws, 5, json!({"op": "history", "channel": "nohistory"})).await;
    assert_eq!(r["error"]["code"], 108);

    // HTTP history and publish report offsets.
    let (st, body) = http(
        h.http,
        "GET",
        "/api/history/chat:1?limit=1&reverse=true",
        "",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["publications"][0]["offset"], 7);
    let (st, body) = http(
        h.http,
        "POST",
        "/api/publish",
        r#"{"channel":"chat:1","data":1}"#,
    )
    .await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["offset"].clone(), v["epoch"].clone()),
        (json!(8), json!(epoch))
    );
    let (st, _) = http(
        h.http,
        "GET",
        "/api/history/chat:1?since_offset=1&since_epoch=999",
        "",
    )
    .await;
    assert_eq!(st, 409);
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

/// A steady publisher and a reader that drops its connection at random
/// moments and resumes with `since`: its sequence must equal the published
/// one exactly, with no gap and no duplicate.
#[tokio::test]
async fn randomized_reconnects_see_every_message_once() {
    let (_d, cfg) = config(CHAT);
    let h = Herald::start(&["--config", &cfg]);
    const TOTAL: u64 = 3000;
    // Learn the epoch before anything is published, so that the first
    // connection too resumes from offset 0.
    let mut first = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut first,
        1,
        json!({"op": "subscribe", "channel": "chat:race"}),
    )
    .await;
    let mut pos: Option<(u64, String)> =
        Some((0, r["result"]["epoch"].as_str().unwrap().to_string()));
    drop(first);
    let resp = h.resp;
    let publisher = std::thread::spawn(move || {
        let mut p = Raw::connect(resp);
        for i in 1..=TOTAL {
            p.cmd(&[b"PUBLISH", b"chat:race", i.to_string().as_bytes()]);
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    let mut reconnects = 0;
    while seen.last().copied() != Some(TOTAL) {
        let mut ws = ws_connect(h.http, None).await;
        let mut cmd = json!({"op": "subscribe", "channel": "chat:race"});
        if let Some((o, e)) = &pos {
            cmd["since"] = json!({"offset": o, "epoch": e});
        }
        let r = ws_call(&mut ws, 1, cmd).await;
        assert_eq!(r["result"]["recovered"], true, "{r}");
        let epoch = r["result"]["epoch"].as_str().unwrap().to_string();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let take = 1 + seed % 200;
        for _ in 0..take {
            let m = match tokio::time::timeout(Duration::from_secs(5), ws_recv(&mut ws)).await {
                Ok(m) => m,
                Err(_) => break,
            };
            let n: u64 = m["data"].as_u64().unwrap();
            seen.push(n);
            pos = Some((m["offset"].as_u64().unwrap(), epoch.clone()));
            if n == TOTAL {
                break;
            }
        }
        reconnects += 1;
        drop(ws);
    }
    publisher.join().unwrap();
    assert!(reconnects >= 12, "only {reconnects} reconnects");
    let want: Vec<u64> = (1..=TOTAL).collect();
    if let Some(i) = (0..want.len()).find(|&i| seen.get(i) != Some(&want[i])) {
        panic!(
            "sequence differs at index {i}: got {:?}, want {}",
            seen.get(i),
            want[i]
        );
    }
    assert_eq!(seen.len(), want.len(), "duplicates at the end");
}

#[tokio::test]
async fn unrecoverable_positions_are_told_plainly() {
    let (_d, cfg) = config("[namespaces.small]\nhistory_size = 5\n");
    let h = Herald::start(&["--config", &cfg, "--recovery-max-messages", "3"]);
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "small:x"})).await;
    let epoch = r["result"]["epoch"].as_str().unwrap().to_string();
    let mut p = Raw::connect(h.resp);
    let publish = |p: &mut Raw, n: u32| {
        for i in 0..n {
            p.cmd(&[b"PUBLISH", b"small:x", i.to_string().as_bytes()]);
        }
    };
    publish(&mut p, 2);
    let sub = |since: Value| json!({"op": "subscribe", "channel": "small:x", "since": since});
    // Within the cap and the history: recovered, missed messages replayed.
    let mut b = ws_connect(h.http, None).await;
    let r = ws_call(&mut b, 1, sub(json!({"offset": 0, "epoch": epoch}))).await;
    assert_eq!(r["result"]["recovered"], true);
    assert_eq!(ws_recv(&mut b).await["offset"], 1);
    assert_eq!(ws_recv(&mut b).await["offset"], 2);
    // Wrong epoch.
    let mut c = ws_connect(h.http, None).await;
    let r = ws_call(&mut c, 1, sub(json!({"offset": 1, "epoch": "42"}))).await;
    assert_eq!(r["result"]["recovered"], false);
    // Gap larger than the cap (3).
    publish(&mut p, 2);
    let mut d = ws_connect(h.http, None).await;
    let r = ws_call(&mut d, 1, sub(json!({"offset": 0, "epoch": epoch}))).await;
    assert_eq!(r["result"]["recovered"], false, "4 missed > cap 3");
    // The offset left the history (size 5, 9 published).
    publish(&mut p, 5);
    let mut e = ws_connect(h.http, None).await;
    let r = ws_call(&mut e, 1, sub(json!({"offset": 3, "epoch": epoch}))).await;
    assert_eq!(r["result"]["recovered"], false, "offset 3 was trimmed");
    // A future offset.
    let r = ws_call(
        &mut e,
        2,
        json!({"op": "unsubscribe", "channel": "small:x"}),
    )
    .await;
    assert_eq!(r["result"], json!({}));
    let r = ws_call(&mut e, 3, sub(json!({"offset": 99, "epoch": epoch}))).await;
    assert_eq!(r["result"]["recovered"], false);
    // Continuity lost: the stream is deleted, then FLUSHALL.
    p.cmd(&[b"DEL", b"small:x"]);
    publish(&mut p, 1);
    let mut f = ws_connect(h.http, None).await;
    let r = ws_call(&mut f, 1, sub(json!({"offset": 9, "epoch": epoch}))).await;
    assert_eq!(r["result"]["recovered"], false);
    assert_ne!(
        r["result"]["epoch"],
        json!(epoch),
        "a new stream has a new epoch"
    );
    let epoch2 = r["result"]["epoch"].clone();
    p.cmd(&[b"FLUSHALL"]);
    let mut g = ws_connect(h.http, None).await;
    let r = ws_call(&mut g, 1, sub(json!({"offset": 1, "epoch": epoch2}))).await;
    assert_eq!(r["result"]["recovered"], false);
}

#[tokio::test]
async fn epoch_changes_when_the_whole_stream_expires() {
    let (_d, cfg) = config("[namespaces.brief]\nhistory_size = 10\nhistory_ttl = \"300ms\"\n");
    let h = Herald::start(&["--config", &cfg]);
    let mut p = Raw::connect(h.resp);
    p.cmd(&[b"PUBLISH", b"brief:x", b"1"]);
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "brief:x"})).await;
    let epoch = r["result"]["epoch"].clone();
    assert!(show(&p.cmd(&[b"PTTL", b"brief:x"])).starts_with(":"));
    drop(ws);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        p.cmd(&[b"EXISTS", b"brief:x"]),
        b":0\r\n",
        "reclaimed actively"
    );
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut ws,
        1,
        json!({"op": "subscribe", "channel": "brief:x", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(r["result"]["recovered"], false);
    assert_ne!(r["result"]["epoch"], epoch);
}

/// A subscriber that falls behind on a channel with history is caught up
/// from the history instead of being cut off; without enough history it is
/// told to resubscribe (insufficient state).
#[tokio::test]
async fn lagging_subscribers_catch_up_from_history() {
    let (_d, cfg) =
        config("[namespaces.chat]\nhistory_size = 100000\n\n[namespaces.tiny]\nhistory_size = 5\n");
    let h = Herald::start(&[
        "--config",
        &cfg,
        "--output-buffer-hard-limit",
        "64kb",
        "--output-buffer-soft-limit",
        "0",
    ]);
    let mut slow = ws_connect(h.http, None).await;
    ws_call(
        &mut slow,
        1,
        json!({"op": "subscribe", "channel": "chat:flood"}),
    )
    .await;
    let mut p = Raw::connect(h.resp);
    let payload = "x".repeat(1000);
    const N: u64 = 2000;
    let mut pipe = Vec::new();
    for i in 1..=N {
        pipe.extend(encode(&[
            b"PUBLISH",
            b"chat:flood",
            format!("\"{i}:{payload}\"").as_bytes(),
        ]));
    }
    p.send_raw(&pipe);
    for _ in 0..N {
        p.frame();
    }
    for i in 1..=N {
        let m = ws_recv(&mut slow).await;
        assert_eq!(m["offset"].as_u64(), Some(i), "gap or reorder at {i}: {m}");
    }
    // Too little history to catch up: insufficient state.
    let mut lost = ws_connect(h.http, None).await;
    ws_call(
        &mut lost,
        1,
        json!({"op": "subscribe", "channel": "tiny:flood"}),
    )
    .await;
    let mut pipe = Vec::new();
    for i in 1..=500 {
        pipe.extend(encode(&[
            b"PUBLISH",
            b"tiny:flood",
            format!("\"{i}:{payload}\"").as_bytes(),
        ]));
    }
    p.send_raw(&pipe);
    for _ in 0..500 {
        p.frame();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (push, code) = ws_until_close(&mut lost).await;
    assert_eq!(code, Some(3004), "{push:?}");
}

#[tokio::test]
async fn history_memory_is_capped() {
    let (_d, cfg) = config(CHAT);
    let h = Herald::start(&["--config", &cfg, "--history-max-memory", "200kb"]);
    let mut p = Raw::connect(h.resp);
    let payload = vec![b'y'; 1000];
    for ch in 0..4 {
        for _ in 0..200 {
            p.cmd(&[b"PUBLISH", format!("chat:{ch}").as_bytes(), &payload]);
        }
    }
    let (_, metrics) = http(h.http, "GET", "/metrics", "").await;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in metrics"))
    };
    assert!(value("herald_history_bytes") <= 200 * 1024);
    assert!(value("herald_history_evicted_entries") > 0);
    // Oldest first: channel 0's early entries went, channel 3's latest stay.
    assert_eq!(p.cmd(&[b"EXISTS", b"chat:0"]), b":1\r\n");
    assert_eq!(p.cmd(&[b"XLEN", b"chat:0"]), b":0\r\n");
    assert!(!show(&p.cmd(&[b"XLEN", b"chat:3"])).starts_with(":0"));
}

#[test]
fn redis_py_stream_calls() {
    let h = Herald::start(&[]);
    run_redis_py("redis_py_streams.py", &h);
}
