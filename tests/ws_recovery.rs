//! Recovery of a large gap over WebSocket: it must not stall other clients
//! (the history is read in chunks, encoded outside the keyspace lock), and
//! with publishes racing it the recovering client must still see every
//! offset once, in order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The tests of this file run one at a time: the latency one measures
/// stalls, and the other one's load would be most of them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CHAT: &str = "[namespaces.chat]\nhistory_size = 100000\nhistory_ttl = \"10m\"\n";

/// Publishes `n` messages on `channel` (payload: their number, from
/// `first`), pipelined in batches.
fn publish_numbers(p: &mut Raw, channel: &str, first: u64, n: u64) {
    let mut i = first;
    while i < first + n {
        let end = (i + 1000).min(first + n);
        let mut pipe = Vec::new();
        for k in i..end {
            pipe.extend(encode(&[
                b"PUBLISH",
                channel.as_bytes(),
                k.to_string().as_bytes(),
            ]));
        }
        p.send_raw(&pipe);
        for _ in i..end {
            p.frame();
        }
        i = end;
    }
}

/// The epoch of `channel`'s history.
async fn epoch(ws: &mut Ws, channel: &str) -> Value {
    let r = ws_call(
        ws,
        1,
        json!({"op": "history", "channel": channel, "limit": 0}),
    )
    .await;
    r["result"]["epoch"].clone()
}

/// Receives pushes until the one with `offset == last`, checking that the
/// offsets run `from, from + 1, …, last` with no gap, no duplicate and no
/// reorder, and that each message's data is its number.
async fn expect_offsets(ws: &mut Ws, from: u64, last: u64) {
    let mut want = from;
    while want <= last {
        let m = tokio::time::timeout(Duration::from_secs(30), ws_recv(ws))
            .await
            .unwrap_or_else(|_| panic!("no message with offset {want} within 30 s"));
        assert_eq!(m["push"], "message", "{m}");
        let offset = m["offset"].as_u64().unwrap_or(0);
        assert_eq!(offset, want, "gap, duplicate or reorder: {m}");
        assert_eq!(m["data"].as_u64(), Some(offset), "{m}");
        want += 1;
    }
}

/// A client that resubscribes 99,000 messages back must not make an
/// unrelated keyspace command of another client wait: the replay is read
/// in chunks and encoded outside the keyspace lock.
#[tokio::test]
async fn a_large_recovery_does_not_stall_other_clients() {
    let _serial = SERIAL.lock().await;
    let (_d, cfg) = temp_config("recstall", CHAT);
    let h = Herald::start(&["--config", &cfg]);
    const MISSED: u64 = 99_000;
    let mut p = Raw::connect(h.resp);
    publish_numbers(&mut p, "chat:big", 1, MISSED + 1);
    p.cmd(&[b"XADD", b"other", b"*", b"f", b"v"]);
    let mut ws = ws_connect(h.http, None).await;
    let epoch = epoch(&mut ws, "chat:big").await;

    // Another client runs XLEN on an unrelated key in a loop and keeps its
    // worst latency, first without a recovery (the machine's own noise),
    // then during one.
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let resp = h.resp;
    let (stop2, measuring2) = (stop.clone(), measuring.clone());
    let prober = std::thread::spawn(move || {
        let mut c = Raw::connect(resp);
        let (mut idle_worst, mut busy_worst, mut busy_n) = (Duration::ZERO, Duration::ZERO, 0);
        while !stop2.load(Ordering::Relaxed) {
            let began_during = measuring2.load(Ordering::Relaxed);
            let t = Instant::now();
            assert_eq!(c.cmd(&[b"XLEN", b"other"]), b":1\r\n");
            let took = t.elapsed();
            // A call in flight when the recovery began counts as during it.
            let during = began_during || measuring2.load(Ordering::Relaxed);
            if during {
                busy_worst = busy_worst.max(took);
                busy_n += 1;
            } else {
                idle_worst = idle_worst.max(took);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (idle_worst, busy_worst, busy_n)
    });
    // As long as the recovery takes, or longer: the noise is sampled fairly.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let r = ws_call(
        &mut ws,
        2,
        json!({"op": "subscribe", "channel": "chat:big", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    assert_eq!(r["result"]["offset"], MISSED + 1, "{r}");
    expect_offsets(&mut ws, 2, MISSED + 1).await;
    let replay = started.elapsed();
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (idle_worst, busy_worst, busy_n) = prober.join().expect("prober");
    eprintln!(
        "recovery of {MISSED} messages took {replay:?}; unrelated XLEN worst {busy_worst:?} \
         during it ({busy_n} calls), {idle_worst:?} before it"
    );
    assert!(busy_n > 10, "only {busy_n} XLEN calls during the recovery");
    // Generous for a debug build on a shared two-core machine (233 ms here
    // when the replay was encoded under the keyspace lock; 32–94 ms in a
    // release build). Where the machine itself already stalls the prober
    // (other work on its two cores), twice that noise is allowed.
    let bound = Duration::from_millis(50).max(idle_worst * 2);
    assert!(
        busy_worst < bound,
        "XLEN waited {busy_worst:?} during the recovery ({idle_worst:?} before it)"
    );
}

/// A publisher keeps publishing while a client recovers a large gap: the
/// client sees the replay and the live messages as one sequence of
/// offsets, with no gap and no duplicate.
#[tokio::test]
async fn publishes_racing_a_recovery_leave_no_gap_and_no_duplicate() {
    let _serial = SERIAL.lock().await;
    let (_d, cfg) = temp_config("recrace", CHAT);
    let h = Herald::start(&["--config", &cfg]);
    const MISSED: u64 = 30_000;
    const LIVE: u64 = 20_000;
    let mut p = Raw::connect(h.resp);
    publish_numbers(&mut p, "chat:race", 1, MISSED + 1);
    for round in 0..3u64 {
        let mut ws = ws_connect(h.http, None).await;
        let epoch = epoch(&mut ws, "chat:race").await;
        // Resume from a little further back each round, so that the replay
        // and the live messages meet at different places.
        let since = 1 + round * 7;
        let first_live = MISSED + 2 + round * LIVE;
        let resp = h.resp;
        let publisher = std::thread::spawn(move || {
            let mut p = Raw::connect(resp);
            let mut i = first_live;
            while i < first_live + LIVE {
                let n = 1 + i % 97;
                let n = n.min(first_live + LIVE - i);
                publish_numbers(&mut p, "chat:race", i, n);
                i += n;
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        let r = ws_call(
            &mut ws,
            2,
            json!({"op": "subscribe", "channel": "chat:race", "since": {"offset": since, "epoch": epoch}}),
        )
        .await;
        assert_eq!(r["result"]["recovered"], true, "{r}");
        let top = r["result"]["offset"].as_u64().unwrap_or(0);
        assert!(top > since, "{r}");
        publisher.join().expect("publisher");
        expect_offsets(&mut ws, since + 1, first_live + LIVE - 1).await;
        // Nothing after the last one.
        let extra = tokio::time::timeout(Duration::from_millis(200), ws_recv(&mut ws)).await;
        assert!(extra.is_err(), "unexpected push {extra:?}");
    }
}

/// A slow reader of a busy channel goes behind (past the lag threshold),
/// is caught up from the history while the publisher goes on, and joins
/// the live stream again, many times over: its offsets still run without
/// a gap or a duplicate.
#[tokio::test]
async fn a_slow_reader_catches_up_while_publishes_go_on() {
    let _serial = SERIAL.lock().await;
    let (_d, cfg) = temp_config("recslow", CHAT);
    let h = Herald::start(&[
        "--config",
        &cfg,
        "--output-buffer-hard-limit",
        "64kb",
        "--output-buffer-soft-limit",
        "0",
    ]);
    const TOTAL: u64 = 10_000;
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(
        &mut ws,
        1,
        json!({"op": "subscribe", "channel": "chat:slow"}),
    )
    .await;
    assert_eq!(r["result"]["offset"], 0, "{r}");
    let resp = h.resp;
    let publisher = std::thread::spawn(move || {
        let mut p = Raw::connect(resp);
        let pad = "x".repeat(1000);
        let mut i = 1;
        while i <= TOTAL {
            let end = (i + 50).min(TOTAL + 1);
            let mut pipe = Vec::new();
            for k in i..end {
                // A JSON object, so the client sees the number in "n".
                let payload = format!("{{\"n\":{k},\"pad\":\"{pad}\"}}");
                pipe.extend(encode(&[b"PUBLISH", b"chat:slow", payload.as_bytes()]));
            }
            p.send_raw(&pipe);
            for _ in i..end {
                p.frame();
            }
            i = end;
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    for want in 1..=TOTAL {
        let m = tokio::time::timeout(Duration::from_secs(30), ws_recv(&mut ws))
            .await
            .unwrap_or_else(|_| panic!("no message {want} within 30 s"));
        assert_eq!(
            m["offset"].as_u64(),
            Some(want),
            "gap, duplicate or reorder: {m}"
        );
        assert_eq!(m["data"]["n"].as_u64(), Some(want), "{m}");
        if want % 1000 == 0 {
            // Stop reading now and then, long enough for the output to
            // pass the threshold (beyond what the sockets buffer).
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    publisher.join().expect("publisher");
    let extra = tokio::time::timeout(Duration::from_millis(200), ws_recv(&mut ws)).await;
    assert!(extra.is_err(), "unexpected push {extra:?}");
}
