//! Attack 5: the Redis engine's newest work as a hostile client (or a
//! hostile party on the Redis) would use it: the control channel between
//! nodes, leaderboards polled from Redis, pipelined publishes over several
//! channels. Each finding is a test; those not fixed are `#[ignore]`d with
//! the numbers measured.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const KEY: &str = "attack5-api-key";

fn start_nodes(redis: &Redis, n: usize) -> Vec<Herald> {
    let url = format!("redis://{}", redis.addr);
    (0..n)
        .map(|i| {
            Herald::start(&[
                "--engine",
                &url,
                "--node-name",
                &format!("node{i}"),
                "--requirepass",
                "pw",
                "--api-key",
                KEY,
            ])
        })
        .collect()
}

/// `GET path`: the status line and the JSON body.
fn get(addr: SocketAddr, path: &str) -> (String, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (format!("no HTTP answer: {text:?}"), Value::Null);
    };
    let status = head.lines().next().unwrap_or("").to_string();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn node_count(addr: SocketAddr) -> usize {
    get(addr, "/api/nodes").1["nodes"]
        .as_array()
        .map_or(0, |a| a.len())
}

fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The bulk strings of a RESP array frame (a pub/sub message).
fn bulks(frame: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < frame.len() {
        let end = i + frame[i..].windows(2).position(|w| w == b"\r\n").unwrap();
        let line = &frame[i..end];
        i = end + 2;
        if line.first() == Some(&b'$') {
            let n: usize = std::str::from_utf8(&line[1..]).unwrap().parse().unwrap();
            out.push(frame[i..i + n].to_vec());
            i += n + 2;
        }
    }
    out
}

/// A control frame: tag, then each field as a 4-byte length and bytes.
fn control_frame(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![tag];
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn control_fields(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let n = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        out.push(body[4..4 + n].to_vec());
        body = &body[4 + n..];
    }
    out
}

/// A made-up node on the Redis (anyone who can reach Redis can be one):
/// it heartbeats `heartbeat` and answers every survey claiming `count`
/// subscribers for each channel asked about (or for `claim` when asked
/// for the channel list).
struct FakeNode {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeNode {
    fn start(redis: SocketAddr, name: &str, heartbeat: String, count: u64, claim: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (name, claim, flag) = (name.to_string(), claim.to_string(), stop.clone());
        let mut sub = Raw::connect(redis);
        sub.cmd(&[b"SUBSCRIBE", b"herald:control"]);
        let thread = std::thread::spawn(move || {
            let mut publ = Raw::connect(redis);
            let mut beat = Instant::now() - Duration::from_secs(1);
            while !flag.load(Ordering::Relaxed) {
                if beat.elapsed() > Duration::from_millis(300) {
                    publ.cmd(&[b"PUBLISH", b"herald:control", heartbeat.as_bytes()]);
                    beat = Instant::now();
                }
                let Some(f) = sub.try_frame(Duration::from_millis(50)) else {
                    continue;
                };
                let b = bulks(&f);
                let Some(payload) = b.last() else { continue };
                if payload.first() != Some(&b'Q') {
                    continue;
                }
                let q = control_fields(&payload[1..]);
                let n = count.to_string();
                let mut fields: Vec<&[u8]> = vec![name.as_bytes(), &q[1], b""];
                match &q[2][..] {
                    b"numsub" | b"shardnumsub" => {
                        for c in &q[3..] {
                            fields.push(c);
                            fields.push(n.as_bytes());
                        }
                    }
                    b"patterns" => fields.extend([claim.as_bytes(), b"1"]),
                    _ => fields.extend([claim.as_bytes(), n.as_bytes()]),
                }
                let mut to = b"herald:control:".to_vec();
                to.extend_from_slice(&q[0]);
                publ.cmd(&[b"PUBLISH", &to, &control_frame(b'A', &fields)]);
            }
        });
        FakeNode {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Finding 1 (fixed): a heartbeat or a survey answer is summed into
/// `/stats`, `PUBSUB NUMSUB` and `PUBSUB CHANNELS` with plain `+=`. One
/// forged heartbeat carrying `u64::MAX` (18446744073709551615, valid JSON
/// for a `u64`) overflowed: a panic in debug builds (`/stats` answered
/// nothing, the connection dropped), silent wrap-around in release
/// (`/stats` said 0 messages published). A forged answer of `u64::MAX`
/// subscribers made `PUBSUB NUMSUB` panic the same way, or reply `:-1`
/// in release (`u64 as i64`). Now sums saturate, and RESP counts are
/// capped at `i64::MAX`.
#[test]
fn forged_huge_counts_saturate_instead_of_overflowing() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 1);
    let mut local = Raw::backend(nodes[0].resp, "pw");
    local.cmd(&[b"SUBSCRIBE", b"x"]);
    let max = u64::MAX;
    let hb = format!(
        "H{{\"name\":\"evil\",\"published\":{max},\"delivered\":{max},\"subscriptions\":{max},\
         \"channels\":{max},\"connections\":{{\"resp\":{max},\"ws\":{max},\"http\":{max}}}}}"
    );
    let _evil = FakeNode::start(redis.addr, "evil", hb, max, "x");
    until(Duration::from_secs(5), "evil listed", || {
        node_count(nodes[0].http) == 2
    });
    // The node published once itself: the sum is past u64::MAX.
    let mut p = Raw::backend(nodes[0].resp, "pw");
    p.cmd(&[b"PUBLISH", b"x", b"hello"]);
    let (status, v) = get(nodes[0].http, "/stats");
    assert!(status.contains("200"), "{status}");
    assert_eq!(v["messages_published"], serde_json::json!(max), "{v}");
    assert_eq!(v["connections"]["resp"], serde_json::json!(max), "{v}");
    let (status, v) = get(nodes[0].http, "/api/channels");
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        v["channels"][0]["subscribers"],
        serde_json::json!(max),
        "{v}"
    );
    // RESP integers are signed: the count is capped, never negative.
    assert_eq!(
        p.cmd(&[b"PUBSUB", b"NUMSUB", b"x"]),
        format!("*2\r\n$1\r\nx\r\n:{}\r\n", i64::MAX).into_bytes()
    );
    // The node is still whole.
    assert_eq!(p.cmd(&[b"PING"]), b"+PONG\r\n");
}
