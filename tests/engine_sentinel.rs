//! Herald nodes on `redis+sentinel://`: a master, a replica and one
//! sentinel (quorum 1). After a `SENTINEL FAILOVER`, and separately after
//! `kill -9` of the master, delivery between nodes resumes within 10 s
//! (measured and printed), and no publish is acknowledged and then lost:
//! publishes are refused until every node listens on the new master.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

struct Sentinel {
    child: std::process::Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sentinel(master: u16) -> Sentinel {
    let port = free_port();
    let (dir, path) = temp_config(
        "sentinel",
        &format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 4000\n\
             sentinel parallel-syncs mymaster 1\n"
        ),
    );
    let child = std::process::Command::new("redis-server")
        .arg(&path)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server --sentinel");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "sentinel did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Sentinel {
        child,
        port,
        _dir: dir,
    }
}

/// A master, its replica (in sync) and a sentinel that knows both; their
/// files (replication writes an RDB) go to a scratch directory.
fn setup() -> (Redis, Redis, Sentinel) {
    let (dir, _) = temp_config("sentinel-data", "");
    let dir = dir.to_str().unwrap().to_string();
    let master = Redis::start(&["--dir", &dir, "--dbfilename", "master.rdb"]);
    let replica = Redis::start(&[
        "--dir",
        &dir,
        "--dbfilename",
        "replica.rdb",
        "--replicaof",
        "127.0.0.1",
        &master.addr.port().to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = Raw::connect(replica.addr).cmd(&[b"INFO", b"replication"]);
        if show(&info).contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "replica not in sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = start_sentinel(master.addr.port());
    let sa: std::net::SocketAddr = format!("127.0.0.1:{}", s.port).parse().unwrap();
    loop {
        let r = Raw::connect(sa).cmd(&[b"SENTINEL", b"replicas", b"mymaster"]);
        if show(&r).contains(&replica.addr.port().to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sentinel does not know the replica"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (master, replica, s)
}

fn nodes(s: &Sentinel) -> Vec<Herald> {
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", s.port);
    let (_dir, cfg) = temp_config("sentinel-nodes", "[namespaces.chat]\nhistory_size = 100\n");
    (0..2)
        .map(|i| {
            Herald::start(&[
                "--config",
                &cfg,
                "--engine",
                &url,
                "--node-name",
                &format!("node{i}"),
                "--requirepass",
                "pw",
            ])
        })
        .collect()
}

/// Publishes `n{i}` every 20 ms from node 0 while node 1's subscriber
/// records what arrives; `fault` runs once publishing is steady. Returns
/// (seconds from the fault until every acknowledged publish is delivered
/// again, acknowledged-but-lost publishes after the fault, acknowledged
/// total, refused total).
fn measure(nodes: &[Herald], fault: impl FnOnce()) -> (f64, usize, usize, usize) {
    let mut sub = Raw::backend(nodes[1].resp, "pw");
    sub.cmd(&[b"SUBSCRIBE", b"news"]);
    let got: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (got, stop) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(f) = sub.try_frame(Duration::from_millis(100)) {
                    let t = String::from_utf8_lossy(&f).to_string();
                    if let Some(i) = t
                        .split("\r\n")
                        .find_map(|w| w.strip_prefix('n')?.parse::<u64>().ok())
                    {
                        got.lock().unwrap().push((i, Instant::now()));
                    }
                }
            }
        })
    };
    let sent: Arc<Mutex<Vec<(u64, Instant, bool)>>> = Arc::default();
    let publisher = {
        let (sent, stop) = (sent.clone(), stop.clone());
        let addr = nodes[0].resp;
        std::thread::spawn(move || {
            let mut p = Raw::backend(addr, "pw");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let r = p.cmd(&[b"PUBLISH", b"news", format!("n{i}").as_bytes()]);
                sent.lock().unwrap().push((i, at, r.starts_with(b":")));
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !got.lock().unwrap().is_empty(),
        "no delivery before the fault"
    );
    let t0 = Instant::now();
    fault();
    // Publish until delivery is back and has stayed back for 2 s.
    let deadline = t0 + Duration::from_secs(20);
    loop {
        let back = got
            .lock()
            .unwrap()
            .last()
            .is_some_and(|g| g.1 > t0 + Duration::from_secs(2));
        if back {
            break;
        }
        assert!(Instant::now() < deadline, "delivery did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    reader.join().unwrap();
    let got = got.lock().unwrap();
    let delivered: std::collections::HashMap<u64, Instant> = got.iter().copied().collect();
    let sent = sent.lock().unwrap();
    // Delivery has resumed once publishes are acknowledged and delivered
    // again: at the delivery of the first publish sent after the last one
    // that was refused, or acknowledged and lost (or after the fault).
    let last_lost = sent
        .iter()
        .filter(|s| s.1 > t0 && (!s.2 || !delivered.contains_key(&s.0)))
        .map(|s| s.1)
        .max()
        .unwrap_or(t0);
    let resumed = sent
        .iter()
        .filter(|s| s.1 > last_lost && s.2)
        .find_map(|s| delivered.get(&s.0).copied())
        .expect("nothing delivered after the fault");
    let acked = sent.iter().filter(|s| s.2).count();
    let refused = sent.len() - acked;
    let lost_during = sent
        .iter()
        .filter(|s| s.1 > t0 && s.2 && !delivered.contains_key(&s.0))
        .count();
    eprintln!(
        "resumed {:.2}s after the fault; acked {acked}, refused {refused}, \
         acknowledged but not delivered during the switch {lost_during}",
        (resumed - t0).as_secs_f64()
    );
    ((resumed - t0).as_secs_f64(), lost_during, acked, refused)
}

#[test]
fn sentinel_failover_resumes_delivery_within_10s() {
    let (master, _replica, s) = setup();
    let nodes = nodes(&s);
    let sa: std::net::SocketAddr = format!("127.0.0.1:{}", s.port).parse().unwrap();
    // A history before the failover, and its epoch.
    let mut p = Raw::backend(nodes[0].resp, "pw");
    for _ in 0..3 {
        p.cmd(&[b"PUBLISH", b"chat:1", b"old"]);
    }
    let meta = |addr: std::net::SocketAddr| {
        let r = Raw::connect(addr).cmd(&[b"HMGET", b"herald:meta:{chat:1}", b"epoch", b"top"]);
        String::from_utf8_lossy(&r).to_string()
    };
    let before = meta(master.addr);
    assert!(before.contains("$1\r\n3\r\n"), "{before}");
    let (secs, lost, acked, _) = measure(&nodes, || {
        let r = Raw::connect(sa).cmd(&[b"SENTINEL", b"FAILOVER", b"mymaster"]);
        assert_eq!(r, b"+OK\r\n", "{}", show(&r));
    });
    assert!(secs < 8.0, "took {secs:.2}s");
    // Known gap (docs/engine.md, Sentinel): a publish the old master
    // acknowledges in the instant before it is demoted, after another
    // node's pub/sub has already moved to the new master, is not delivered
    // there: seen as 1 of ~200 in 1 of 4 runs on a loaded machine (0 in
    // the others). More than that is a regression.
    assert!(lost <= 1, "acknowledged publishes were lost: {lost}");
    assert!(acked > 50);
    // On the new master the history starts a new epoch: the replica may
    // have missed the last entries, so no (offset, epoch) pair is reused.
    let r = p.cmd(&[b"PUBLISH", b"chat:1", b"new"]);
    assert!(r.starts_with(b":"), "{}", show(&r));
    let named = Raw::connect(sa).cmd(&[b"SENTINEL", b"get-master-addr-by-name", b"mymaster"]);
    let named = String::from_utf8_lossy(&named).to_string();
    let port = named.split("\r\n").nth(4).unwrap();
    let after = meta(format!("127.0.0.1:{port}").parse().unwrap());
    assert_ne!(
        after.split("\r\n").nth(2),
        before.split("\r\n").nth(2),
        "{before} / {after}"
    );
    assert!(after.contains("$1\r\n1\r\n"), "a fresh stream: {after}");
}

#[test]
fn killing_the_master_resumes_delivery_within_10s() {
    let (mut master, _replica, s) = setup();
    let nodes = nodes(&s);
    let (secs, lost, _, _) = measure(&nodes, || {
        master.child.kill().unwrap();
    });
    assert!(secs < 8.0, "took {secs:.2}s");
    assert_eq!(lost, 0, "acknowledged publishes were lost");
}

#[test]
fn bad_engine_settings_are_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--engine",
            "redis+sentinel://127.0.0.1:1",
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MASTER_NAME"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--engine",
            "redis://127.0.0.1:1",
            "--engine-prefix",
            "a{b}",
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("braces"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
