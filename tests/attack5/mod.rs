//! Helpers of tests/attack5_findings.rs: nodes on one Redis, HTTP and
//! Redis probes, and a made-up node on the control channel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

pub const KEY: &str = "attack5-api-key";
/// The heavy tests (hundreds of connections, tens of made-up nodes) run
/// one at a time: their timings are part of what they check.
pub static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
pub const SECRET: &str = "attack5-secret";

pub fn start_nodes(redis: &Redis, n: usize) -> Vec<Herald> {
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
                "--jwt-hmac-secret",
                SECRET,
            ])
        })
        .collect()
}

/// `GET path`: the status line and the JSON body.
pub fn get(addr: SocketAddr, path: &str) -> (String, Value) {
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

pub fn node_count(addr: SocketAddr) -> usize {
    get(addr, "/api/nodes").1["nodes"]
        .as_array()
        .map_or(0, |a| a.len())
}

pub fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The bulk strings of a RESP array frame (a pub/sub message).
pub fn bulks(frame: &[u8]) -> Vec<Vec<u8>> {
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
pub fn control_frame(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![tag];
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

pub fn control_fields(mut body: &[u8]) -> Vec<Vec<u8>> {
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
pub struct FakeNode {
    pub stop: Arc<AtomicBool>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeNode {
    pub fn start(
        redis: SocketAddr,
        name: &str,
        heartbeat: String,
        count: u64,
        claim: &str,
    ) -> Self {
        Self::start_listing(redis, name, heartbeat, count, claim, 1)
    }

    /// As `start`, answering the channel list with `names` names
    /// (`claim` then a 100-digit number).
    pub fn start_listing(
        redis: SocketAddr,
        name: &str,
        heartbeat: String,
        count: u64,
        claim: &str,
        names: usize,
    ) -> Self {
        let listing: Vec<Vec<u8>> = if names == 1 {
            vec![claim.as_bytes().to_vec()]
        } else {
            (0..names)
                .map(|i| format!("{claim}{i:0100}").into_bytes())
                .collect()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (name, claim, flag) = (name.to_string(), claim.to_string(), stop.clone());
        let mut sub = Raw::connect(redis);
        sub.cmd(&[b"SUBSCRIBE", b"herald:control"]);
        let thread = std::thread::spawn(move || {
            let mut publ = Raw::connect(redis);
            let mut beat = Instant::now() - Duration::from_secs(1);
            // The big answer, encoded once, before any question.
            let mut big: Option<Vec<u8>> = (listing.len() > 1).then(|| {
                let n = count.to_string();
                let mut f: Vec<&[u8]> = vec![b""];
                for c in &listing {
                    f.push(c);
                    f.push(n.as_bytes());
                }
                control_frame(b'A', &f)[1..].to_vec()
            });
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
                if q[2] == b"channels" && listing.len() > 1 {
                    let rest = big.get_or_insert_with(|| {
                        let mut f: Vec<&[u8]> = vec![b""];
                        for c in &listing {
                            f.push(c);
                            f.push(n.as_bytes());
                        }
                        control_frame(b'A', &f)[1..].to_vec()
                    });
                    let mut frame = control_frame(b'A', &[name.as_bytes(), &q[1]]);
                    frame.extend_from_slice(rest);
                    let mut to = b"herald:control:".to_vec();
                    to.extend_from_slice(&q[0]);
                    publ.cmd(&[b"PUBLISH", &to, &frame]);
                    continue;
                }
                let mut fields: Vec<&[u8]> = vec![name.as_bytes(), &q[1], b""];
                match &q[2][..] {
                    b"numsub" | b"shardnumsub" => {
                        for c in &q[3..] {
                            fields.push(c);
                            fields.push(n.as_bytes());
                        }
                    }
                    b"patterns" => fields.extend([claim.as_bytes(), b"1"]),
                    _ => {
                        for c in &listing {
                            fields.push(c);
                            fields.push(n.as_bytes());
                        }
                    }
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

/// `calls=N` of one command in Redis's `INFO commandstats`.
pub fn redis_calls(r: &mut Raw, cmd: &str) -> u64 {
    let info = r.cmd(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&info);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A figure of Redis's `INFO stats`.
pub fn redis_stat(r: &mut Raw, name: &str) -> u64 {
    let info = r.cmd(&[b"INFO", b"stats"]);
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Subscribes `n` channels of about 100 bytes each on `node` (one
/// connection, one SUBSCRIBE); returns the connection.
pub fn many_channels(node: SocketAddr, prefix: &str, n: usize) -> Raw {
    let mut s = Raw::backend(node, "pw");
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{prefix}{}{i:06}", "x".repeat(90)).into_bytes())
        .collect();
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(names.iter().map(|n| &n[..]));
    s.send(&args);
    for _ in 0..n {
        s.frame();
    }
    s
}

pub fn signal(h: &Herald, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &h.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn threads_of(h: &Herald) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", h.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

pub fn rss_kib(h: &Herald) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", h.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|n| n.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
