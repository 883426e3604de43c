//! A network partition between one Herald node and Redis, with network
//! namespaces (`ip netns` + veth, iproute2) as a second host: node A runs in
//! its own namespace and reaches Redis over a veth link; node B runs beside
//! Redis. A blackhole route in A's namespace cuts A off from Redis (packets
//! vanish, nothing answers: a real partition, not a refused connection)
//! while A's own clients still reach it.
//!
//! While cut off, A refuses publishes with an engine error (never an
//! acknowledgement that is then lost), `/healthz` drains it with 503, and
//! its subscribers stay connected; B carries on. Once healed, A resubscribes
//! and its history subscribers get what was published meanwhile, in order.
//!
//! Needs root (network namespaces); the test says so and stops if `ip netns`
//! is not permitted.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CONFIG: &str = "[namespaces.chat]\nhistory_size = 1000\n";
const SECRET: &str = "partition-secret";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A second host: a network namespace linked to this one by a veth pair
/// on `10.201.N.0/29`: `.1` (Redis's side) and `.3` (its clients' side) here,
/// `.2` in the namespace. Removed when dropped.
struct Host {
    ns: String,
    veth: String,
    net: u32,
}

impl Host {
    fn new() -> Option<Host> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + SEQ.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let ns = format!("hpart{n}");
        let veth = format!("hpv{n}");
        // Leftovers of an earlier run that was killed.
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &veth]).output();
        if !ip(&["netns", "add", &ns]) {
            return None;
        }
        let host = Host { ns, veth, net: n };
        let peer = format!("{}p", host.veth);
        let here = |a: &str| format!("10.201.{}.{a}/29", host.net);
        let ok = ip(&[
            "link", "add", &host.veth, "type", "veth", "peer", "name", &peer,
        ]) && ip(&["link", "set", &peer, "netns", &host.ns])
            && ip(&["addr", "add", &here("1"), "dev", &host.veth])
            && ip(&["addr", "add", &here("3"), "dev", &host.veth])
            && ip(&["link", "set", &host.veth, "up"])
            && host.exec(&["ip", "addr", "add", &here("2"), "dev", &peer])
            && host.exec(&["ip", "link", "set", &peer, "up"])
            && host.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(ok, "setting up the veth link failed");
        Some(host)
    }

    fn exec(&self, args: &[&str]) -> bool {
        let mut all = vec!["netns", "exec", &self.ns];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn addr(&self, last: u8) -> IpAddr {
        format!("10.201.{}.{last}", self.net).parse().unwrap()
    }

    fn octets(&self, last: u8) -> [u8; 4] {
        [10, 201, self.net as u8, last]
    }

    /// Cuts (or restores) the namespace's way to `.1`.
    fn partition(&self, cut: bool) {
        let dst = format!("10.201.{}.1/32", self.net);
        let verb = if cut { "add" } else { "del" };
        assert!(self.exec(&["ip", "route", verb, "blackhole", &dst]));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn healthz_from(http: SocketAddr, from: [u8; 4]) -> u16 {
    use std::io::{Read, Write};
    let mut r = Raw::connect_from(http, from);
    r.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    r.stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = r.stream.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_node_cut_off_from_redis_refuses_drains_and_recovers() {
    let Some(host) = Host::new() else {
        eprintln!("SKIPPED: `ip netns add` is not permitted here (needs root)");
        return;
    };
    let redis = Redis::start(&[
        "--bind",
        &format!("127.0.0.1 {}", host.addr(1)),
        "--protected-mode",
        "no",
    ]);
    let port = redis.addr.port();
    let (_dir, cfg) = temp_config("partition", CONFIG);
    let common = |url: String, name: &str| -> Vec<String> {
        [
            "--config",
            &cfg,
            "--engine",
            &url,
            "--node-name",
            name,
            "--jwt-hmac-secret",
            SECRET,
            "--requirepass",
            "pw",
            "--presence-ttl",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a_args = common(format!("redis://{}:{port}", host.addr(1)), "a");
    let b_args = common(format!("redis://127.0.0.1:{port}"), "b");
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(|s| s.as_str()).collect()
    }
    let a = Herald::start_in(
        &["ip", "netns", "exec", &host.ns],
        &format!("{}:0", host.addr(2)),
        &strs(&a_args),
        &[],
    );
    let b = Herald::start(&strs(&b_args));
    let client = host.octets(3);
    let auth = |r: &mut Raw| assert_eq!(r.cmd(&[b"AUTH", b"pw"]), b"+OK\r\n");

    let mut sub_a = Raw::connect_from(a.resp, client);
    auth(&mut sub_a);
    sub_a.cmd(&[b"SUBSCRIBE", b"news"]);
    let mut pub_a = Raw::connect_from(a.resp, client);
    auth(&mut pub_a);
    let mut pub_b = Raw::backend(b.resp, "pw");
    let mut sub_b = Raw::backend(b.resp, "pw");
    sub_b.cmd(&[b"SUBSCRIBE", b"news"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = hs256(json!({"sub": "u", "exp": unix_now() + 600}), SECRET);
        let mut ws = ws_connect_from(a.http, Some(&tok), client).await;
        let r = ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "chat:p"})).await;
        assert!(r["result"].is_object(), "{r}");

        // Connected: B's publishes reach A's subscribers.
        assert!(pub_b
            .cmd(&[b"PUBLISH", b"news", b"before"])
            .starts_with(b":"));
        assert!(sub_a.frame().ends_with(b"before\r\n"));
        assert!(sub_b.frame().ends_with(b"before\r\n"));
        pub_b.cmd(&[b"PUBLISH", b"chat:p", b"1"]);
        assert_eq!(ws_recv(&mut ws).await["offset"], 1);
        assert_eq!(healthz_from(a.http, client), 200);

        host.partition(true);
        let cut = Instant::now();

        // A refuses, never acknowledges: within its 5 s response timeout
        // (plus room for a loaded machine).
        let t = Instant::now();
        pub_a
            .stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let r = pub_a.cmd(&[b"PUBLISH", b"chat:p", b"during-a"]);
        assert!(r.starts_with(b"-ERR engine"), "{}", show(&r));
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "refusal took {:?}",
            t.elapsed()
        );

        // The balancer is told to drain A.
        let deadline = cut + Duration::from_secs(15);
        while healthz_from(a.http, client) != 503 {
            assert!(
                Instant::now() < deadline,
                "healthz stayed 200 while cut off"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let drained = cut.elapsed();

        // B carries on: its publishes are acknowledged and stored.
        for i in 2..=20 {
            let r = pub_b.cmd(&[b"PUBLISH", b"chat:p", i.to_string().as_bytes()]);
            assert!(r.starts_with(b":"), "{}", show(&r));
        }
        assert!(pub_b
            .cmd(&[b"PUBLISH", b"news", b"during"])
            .starts_with(b":"));
        assert!(sub_b.frame().ends_with(b"during\r\n"));

        // A's subscribers are still connected.
        sub_a.send(&[b"PING"]);
        let pong = sub_a.frame();
        assert!(show(&pong).contains("pong"), "{}", show(&pong));

        host.partition(false);
        let healed = Instant::now();

        // A recovers: healthy again, resubscribed, and the history
        // subscriber gets offsets 2..=20 once each, in order (the
        // publishes during the cut are replayed from the history).
        for want in 2..=20u64 {
            let m = tokio::time::timeout(Duration::from_secs(20), ws_recv(&mut ws))
                .await
                .unwrap_or_else(|_| panic!("offset {want} never came after the heal"));
            assert_eq!(m["offset"], want, "{m}");
        }
        let replayed = healed.elapsed();
        let deadline = healed + Duration::from_secs(20);
        loop {
            let r = pub_b.cmd(&[b"PUBLISH", b"news", b"after"]);
            assert!(r.starts_with(b":"), "{}", show(&r));
            sub_b.frame();
            if let Some(f) = sub_a.try_frame(Duration::from_millis(500)) {
                assert!(f.ends_with(b"after\r\n"), "{}", show(&f));
                break;
            }
            assert!(Instant::now() < deadline, "A never heard B again");
        }
        let deadline = healed + Duration::from_secs(20);
        while healthz_from(a.http, client) != 200 {
            assert!(
                Instant::now() < deadline,
                "healthz stayed 503 after the heal"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let r = pub_a.cmd(&[b"PUBLISH", b"chat:p", b"21"]);
        assert!(r.starts_with(b":"), "{}", show(&r));
        assert_eq!(ws_recv(&mut ws).await["offset"], 21);
        eprintln!(
            "partition: drained after {drained:?}; history replayed {replayed:?} after the heal"
        );
    });
    drop(a);
    drop(b);
    drop(redis);
}
