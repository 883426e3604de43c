//! Attack 5: the Redis engine's newest work as a hostile client (or a
//! hostile party on the Redis) would use it: the control channel between
//! nodes, leaderboards polled from Redis, pipelined publishes over several
//! channels. Each finding is a test; those not fixed are `#[ignore]`d with
//! the numbers measured.

mod attack5;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attack5::*;
use common::*;

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

/// How long a `ZADD` made straight on Redis takes to reach a RESP
/// subscriber of `__leaderboard__:game` (polled each tick).
fn leaderboard_latency(redis: &mut Raw, sub: &mut Raw, member: &str) -> Duration {
    let started = Instant::now();
    redis.cmd(&[b"ZADD", b"game", b"100", member.as_bytes()]);
    loop {
        let f = sub.frame();
        if String::from_utf8_lossy(&f).contains(member) {
            return started.elapsed();
        }
    }
}

/// Finding 2 (not fixed): a RESP client that subscribes
/// `__leaderboard__:K` for thousands of keys K (none of which need exist:
/// a client cannot create sorted sets in Redis, the keyspace commands run
/// on each node) makes its node read every one of them from Redis on every
/// tick, one round trip after another on the tick task. Measured (debug
/// build, loopback, default 100 ms tick), one backend client:
/// - alone: 10 `ZRANGE`/s, a `ZADD` made on Redis reached a subscriber of
///   `__leaderboard__:game` in 97 ms;
/// - 3,000 empty boards subscribed: 16,129 `ZRANGE`/s (a tick ≈ 190 ms);
/// - 15,000 empty boards, another run: 17,292 `ZRANGE`/s, the slowest of
///   three updates 1.40 s;
/// - 15,000 empty boards: 10,263 `ZRANGE`/s (a tick ≈ 1.5 s: the reads run
///   one after another), and the real board's update took 594 ms (up to
///   about 3 s: two ticks), against "within two ticks" (200 ms) in
///   docs/engine.md. Every board followed on the node goes stale the same.
///
/// `--max-subscriptions` (100,000 by default) bounds it per connection
/// only. A fix needs a choice (reads overlapped in one round trip per tick
/// raise Redis's load to 150,000 reads/s for the same client; a budget of
/// boards per tick keeps the load and leaves freshness to the budget;
/// re-reading empty boards less often is attacker-proof but delays a new
/// board): left to the engine's owner.
///
/// Fixed: boards that were empty at their last read are re-read at most
/// 256 per tick, in turn (`Leaderboards::mark_polled`); boards with
/// entries every tick.
#[test]
fn leaderboard_subscriptions_by_the_thousand_cost_reads_per_tick() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 1);
    let mut r = Raw::connect(redis.addr);
    let mut sub = Raw::backend(nodes[0].resp, "pw");
    sub.cmd(&[b"SUBSCRIBE", b"__leaderboard__:game"]);
    let alone = leaderboard_latency(&mut r, &mut sub, "alice");
    let before = redis_calls(&mut r, "zrange");
    std::thread::sleep(Duration::from_secs(1));
    let idle_rate = redis_calls(&mut r, "zrange") - before;

    let mut many = Raw::backend(nodes[0].resp, "pw");
    let n = 15000;
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("__leaderboard__:nothing{i}").into_bytes())
        .collect();
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(names.iter().map(|n| &n[..]));
    many.send(&args);
    for _ in 0..n {
        many.frame();
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = redis_calls(&mut r, "zrange");
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let rate = (redis_calls(&mut r, "zrange") - before) as f64 / t.elapsed().as_secs_f64();
    let loaded = (0..3)
        .map(|i| leaderboard_latency(&mut r, &mut sub, &format!("bob{i}")))
        .max()
        .unwrap();
    eprintln!(
        "leaderboards: alone {alone:?} ({idle_rate} ZRANGE/s); with {n} subscribed boards \
         {rate:.0} ZRANGE/s, the slowest of three updates took {loaded:?}"
    );
    assert!(
        loaded < Duration::from_millis(300),
        "{n} empty boards ({rate:.0} reads/s) held a real board's update {loaded:?}"
    );
}

/// Finding 3 (fixed): survey amplification. A client whose token may
/// see only `chat:*` sends `PUBSUB CHANNELS` (no pattern; `PUBSUB CHANNELS
/// *` does the same) in a loop; every other node answered with all its
/// channels (up to 10,000 names, 1 MiB), which crossed Redis to the asking
/// node, only to be filtered out there: the client is shown nothing.
/// Measured (debug build, loopback; node1 holding 10,000 channels of
/// about 100 bytes; 4 such clients on node0 for 2 s): 118 requests, 3,540
/// bytes sent, made Redis send 132.2 MB (64.8 MB/s), 37,343 bytes per byte
/// of request, besides node1 building each 1 MiB answer.
///
/// Fixed: the question carries the token's subscribe globs (a scoped
/// question, `S`), and the other nodes answer with only what they let the
/// client see. Measured the same way (with `--read-rate` raised so that
/// the per-address survey budget, `surveys_from_one_address_are_rate_limited`,
/// does not stop the loop): 708 requests in 2 s, 21 KB sent, Redis sent
/// 0.2 MB: 8 bytes per request byte, 265 per survey (the question
/// delivered to both nodes, an empty answer, heartbeats).
#[test]
fn narrow_token_pubsub_channels_loop_amplification() {
    let redis = Redis::start(&[]);
    let url = format!("redis://{}", redis.addr);
    let nodes: Vec<Herald> = (0..2)
        .map(|i| {
            Herald::start(&[
                "--engine",
                &url,
                "--node-name",
                &format!("node{i}"),
                "--requirepass",
                "pw",
                "--jwt-hmac-secret",
                SECRET,
                "--read-rate",
                "100000",
                "--read-burst",
                "100000",
            ])
        })
        .collect();
    let _held = many_channels(nodes[1].resp, "secret:", 10_000);
    let mut chat = Raw::backend(nodes[1].resp, "pw");
    chat.cmd(&[b"SUBSCRIBE", b"chat:1"]);
    until(Duration::from_secs(5), "both nodes live", || {
        let mut a = Raw::backend(nodes[0].resp, "pw");
        a.cmd(&[b"PUBSUB", b"NUMSUB", b"chat:1"]) == b"*2\r\n$6\r\nchat:1\r\n:1\r\n"
    });
    let tok = hs256(
        serde_json::json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"]}),
        SECRET,
    );
    // The scoped answer still holds what the token may see.
    let mut c = Raw::connect(nodes[0].resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"PUBSUB", b"CHANNELS"]), b"*1\r\n$6\r\nchat:1\r\n");
    drop(chat);
    until(Duration::from_secs(5), "chat:1 gone", || {
        c.cmd(&[b"PUBSUB", b"CHANNELS"]) == b"*0\r\n"
    });
    let mut r = Raw::connect(redis.addr);
    let clients = 4;
    let before = redis_stat(&mut r, "total_net_output_bytes");
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, tok) = (nodes[0].resp, tok.clone());
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
                let mut n = 0u64;
                let mut sent = 0u64;
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(2) {
                    let req = encode(&[b"PUBSUB", b"CHANNELS"]);
                    sent += req.len() as u64;
                    assert_eq!(c.cmd(&[b"PUBSUB", b"CHANNELS"]), b"*0\r\n");
                    n += 1;
                }
                (n, sent)
            })
        })
        .collect();
    let (mut surveys, mut sent) = (0, 0);
    for t in threads {
        let (n, s) = t.join().unwrap();
        surveys += n;
        sent += s;
    }
    let secs = started.elapsed().as_secs_f64();
    let out = redis_stat(&mut r, "total_net_output_bytes") - before;
    eprintln!(
        "survey amplification: {clients} narrow-token clients, {surveys} PUBSUB CHANNELS in {secs:.1} s \
         ({sent} bytes sent, nothing shown): Redis sent {:.1} MB ({:.1} MB/s), {} bytes per request byte, \
         {} per survey",
        out as f64 / 1e6,
        out as f64 / 1e6 / secs,
        out / sent.max(1),
        out / surveys.max(1)
    );
    assert!(surveys >= 20, "only {surveys} surveys in 2 s");
    // Before the fix: 37,000 bytes per request byte (1 MiB per survey).
    assert!(
        out / sent.max(1) < 100 && out / surveys.max(1) < 4096,
        "{sent} request bytes ({surveys} surveys) made Redis send {out} bytes"
    );
}

/// Pipelined PUBLISHes over four channels (two with history) while Redis
/// flushes its scripts (`SCRIPT FLUSH`: the history script's next call
/// gets NOSCRIPT) and kills the engine's connections (`CLIENT KILL TYPE
/// normal`) every 100 ms: every reply comes back, in order; what was
/// acknowledged reached the subscriber on the other node and, on history
/// channels, is stored; each channel's messages arrive and are stored in
/// the order sent. Holds (a passing test documenting the attack).
#[test]
fn pipelined_publishes_through_script_flush_and_client_kill() {
    pipelined_chaos();
}

/// Finding 6 (not fixed; docs/engine.md corrected): "engine unavailable"
/// is documented as "not applied, retry freely", with one narrow exception
/// (a publish in flight at the instant the connection broke). In the run
/// above, connections killed 23 times in 2 s: 8 of 32, 8 of 41, 4 of 30
/// and 13 of 47 publishes answered `-ERR engine unavailable: broken pipe` had been
/// applied and delivered (13 to 28 %): every publish queued on a
/// multiplexed connection when it drops is in that case, and the error
/// (`broken pipe`) is the same for those Redis ran and those it never
/// saw, so the engine cannot tell them apart; reporting all of them as
/// "outcome unknown" would also relabel publishes refused because Redis
/// had already gone (tests/engine_redis.rs expects "unavailable" there).
///
/// Fixed: a write that met a broken connection is answered "outcome
/// unknown" (only a refused connection or an error reply from Redis is
/// "unavailable").
#[test]
fn a_refused_publish_was_not_applied() {
    assert_eq!(pipelined_chaos(), 0, "publishes refused yet delivered");
}

/// Runs the attack; returns how many publishes refused as "unavailable"
/// were delivered all the same.
fn pipelined_chaos() -> usize {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config("attack5", "[namespaces.chat]\nhistory_size = 100000\n");
    let url = format!("redis://{}", redis.addr);
    let nodes: Vec<Herald> = (0..2)
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
        .collect();
    let channels: [&str; 4] = ["chat:h1", "plain:a", "chat:h2", "plain:b"];
    let mut sub = Raw::backend(nodes[1].resp, "pw");
    for c in channels {
        sub.cmd(&[b"SUBSCRIBE", c.as_bytes()]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (stop, addr) = (stop.clone(), redis.addr);
        std::thread::spawn(move || {
            let mut admin = Raw::connect(addr);
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                admin.cmd(&[b"SCRIPT", b"FLUSH"]);
                std::thread::sleep(Duration::from_millis(50));
                let f = admin.cmd(&[b"CLIENT", b"KILL", b"TYPE", b"normal"]);
                kills += String::from_utf8_lossy(&f[1..f.len() - 2])
                    .parse::<u64>()
                    .unwrap_or(0);
            }
            kills
        })
    };
    let mut p = Raw::backend(nodes[0].resp, "pw");
    let mut next = [0u64; 4];
    let mut acked: Vec<Vec<u64>> = vec![Vec::new(); 4];
    let mut refused: Vec<Vec<(u64, String)>> = vec![Vec::new(); 4];
    let (mut ok, mut unavailable, mut unknown) = (0, 0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(3));
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for i in 0..64 {
            let k = (i * 7 + i / 5) % 4;
            let payload = format!("{}:{}", channels[k], next[k]);
            batch.extend(encode(&[
                b"PUBLISH",
                channels[k].as_bytes(),
                payload.as_bytes(),
            ]));
            sent.push((k, next[k]));
            next[k] += 1;
        }
        p.send_raw(&batch);
        for (k, seq) in sent {
            let f = p.frame();
            if f.starts_with(b":") {
                ok += 1;
                acked[k].push(seq);
            } else if show(&f).contains("outcome unknown") {
                unknown += 1;
            } else {
                assert!(show(&f).contains("engine unavailable"), "{}", show(&f));
                unavailable += 1;
                refused[k].push((seq, show(&f)));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let kills = chaos.join().unwrap();
    // Delivered: each channel in order, every acknowledged one present.
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); 4];
    while let Some(f) = sub.try_frame(Duration::from_millis(1500)) {
        let b = bulks(&f);
        let text = String::from_utf8_lossy(b.last().unwrap()).to_string();
        let (c, seq) = text.rsplit_once(':').unwrap();
        let k = channels.iter().position(|x| *x == c).unwrap();
        got[k].push(seq.parse().unwrap());
    }
    let mut r = Raw::connect(redis.addr);
    for k in 0..4 {
        assert!(
            got[k].windows(2).all(|w| w[0] < w[1]),
            "{}: delivered out of order: {:?}",
            channels[k],
            got[k]
        );
        let lost: Vec<_> = acked[k].iter().filter(|s| !got[k].contains(s)).collect();
        assert!(
            lost.is_empty(),
            "{}: acknowledged, not delivered: {lost:?}",
            channels[k]
        );
        if channels[k].starts_with("chat:") {
            let key = format!("herald:history:{{{}}}", channels[k]);
            let stored = r.cmd(&[b"XRANGE", key.as_bytes(), b"-", b"+"]);
            let prefix = format!("{}:", channels[k]);
            let seqs: Vec<u64> = bulks(&stored)
                .iter()
                .filter_map(|b| {
                    std::str::from_utf8(b)
                        .ok()?
                        .strip_prefix(&prefix)?
                        .parse()
                        .ok()
                })
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{}: stored out of order",
                channels[k]
            );
            let lost: Vec<_> = acked[k].iter().filter(|s| !seqs.contains(s)).collect();
            assert!(
                lost.is_empty(),
                "{}: acknowledged, not stored: {lost:?}",
                channels[k]
            );
        }
    }
    // "unavailable" says "not applied, retry freely"; count those that ran.
    let mut ran = Vec::new();
    for k in 0..4 {
        for (seq, e) in &refused[k] {
            if got[k].contains(seq) {
                ran.push(format!("{}:{seq} {e}", channels[k]));
            }
        }
    }
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, e) in refused.iter().flatten() {
        *kinds.entry(e.as_str()).or_default() += 1;
    }
    eprintln!(
        "refused {kinds:?}; of them delivered: {} {:?}",
        ran.len(),
        ran.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "pipelined chaos: {ok} acknowledged, {unavailable} unavailable, {unknown} unknown, \
         {kills} connections killed; delivered {:?}",
        got.iter().map(|g| g.len()).collect::<Vec<_>>()
    );
    assert!(
        ok > 100 && kills > 0,
        "the attack ran: {ok} ok, {kills} kills"
    );
    ran.len()
}

/// Finding 4 (fixed): a node that stalls longer than `--presence-ttl` (a VM
/// pause, swapping, `SIGSTOP`; here 3.5 s against a 2 s TTL) while another
/// node keeps refreshing the same channel: the other node expires the
/// stalled node's entries and pushes their leaves (right: it looked
/// dead). But once the stalled node runs again, its clients are still
/// connected and subscribed, and its refresh (`ZADD XX`: update only)
/// never put them back: they stayed absent from presence for as long as
/// they stayed connected (measured: `SMEMBERS __presence__:room:1` gave
/// only `bob` 3 s, six refresh rounds, after the stall). Fixed: the
/// refresh uses `ZADD XX CH`, and an entry found gone whose client is still
/// joined here is put back with the join script (a join is pushed when it
/// is the user's first connection again).
#[test]
fn presence_after_a_stall_longer_than_the_ttl() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config(
        "attack5p",
        "[namespaces.room]\npresence = true\njoin_leave = true\n",
    );
    let url = format!("redis://{}", redis.addr);
    let nodes: Vec<Herald> = (0..2)
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
                "--jwt-hmac-secret",
                SECRET,
                "--presence-ttl",
                "2s",
            ])
        })
        .collect();
    let tok = |u: &str| {
        hs256(
            serde_json::json!({"sub": u, "exp": unix_now() + 600}),
            SECRET,
        )
    };
    let mut ann = Raw::connect(nodes[0].resp);
    assert_eq!(ann.cmd(&[b"AUTH", tok("ann").as_bytes()]), b"+OK\r\n");
    ann.cmd(&[b"SUBSCRIBE", b"room:1"]);
    let mut bob = Raw::connect(nodes[1].resp);
    assert_eq!(bob.cmd(&[b"AUTH", tok("bob").as_bytes()]), b"+OK\r\n");
    bob.cmd(&[b"SUBSCRIBE", b"room:1"]);
    let mut admin = Raw::backend(nodes[1].resp, "pw");
    let users = |admin: &mut Raw| show(&admin.cmd(&[b"SMEMBERS", b"__presence__:room:1"]));
    until(Duration::from_secs(3), "both present", || {
        let u = users(&mut admin);
        u.contains("ann") && u.contains("bob")
    });
    signal(&nodes[0], "-STOP");
    std::thread::sleep(Duration::from_millis(3500));
    let during = users(&mut admin);
    signal(&nodes[0], "-CONT");
    // Several refresh rounds later ann is still connected and subscribed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(ann.cmd(&[b"PING"]).starts_with(b"*2\r\n$4\r\npong"));
    let after = users(&mut admin);
    eprintln!("presence during the stall: {during}; 3 s after: {after}");
    assert!(
        after.contains("ann"),
        "ann is connected but absent: {after}"
    );
}

/// Survey pressure: a made-up node that heartbeats and never answers
/// (anyone on the Redis can be one) makes every survey wait its full
/// 500 ms; 64 HTTP clients then ask `/stats` (two surveys each) as fast as
/// they can on one node for 3 s. Measured here: what the node's other
/// clients feel (a RESP `PING`, a publish reaching a subscriber,
/// `/healthz`) and how many threads the parked requests take. Holds:
/// `/stats`: 176 served in 3.3 s, worst PING 0.4 ms, publish→delivery
/// 0.9 ms, `/healthz` 1.2 ms, threads 3 → 5. RESP `PUBSUB NUMSUB` from 64
/// connections: worst 2-22 ms; threads 3 → 75 before the queue bound
/// (finding 5), 3 → 27 after.
#[test]
fn stats_flood_with_a_silent_node() {
    survey_flood_with_a_silent_node(false, 64);
}

/// The same over RESP: 64 connections sending `PUBSUB NUMSUB` in a loop
/// (a RESP survey parks its connection's thread, `block_in_place`).
#[test]
fn numsub_flood_with_a_silent_node() {
    survey_flood_with_a_silent_node(true, 64);
}

fn survey_flood_with_a_silent_node(resp: bool, clients: usize) {
    let _one = heavy();
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    let _ghost = {
        let mut r = Raw::connect(redis.addr);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let t = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                r.cmd(&[b"PUBLISH", b"herald:control", br#"H{"name":"ghost"}"#]);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        FakeNode {
            stop,
            thread: Some(t),
        }
    };
    until(Duration::from_secs(5), "three nodes", || {
        node_count(nodes[0].http) == 3
    });
    let threads_before = threads_of(&nodes[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, http, resp_addr) = (stop.clone(), nodes[0].http, nodes[0].resp);
            std::thread::spawn(move || {
                let mut n = 0;
                let mut c = resp.then(|| Raw::backend(resp_addr, "pw"));
                while !stop.load(Ordering::Relaxed) {
                    match &mut c {
                        Some(c) => {
                            let r = c.cmd(&[b"PUBSUB", b"NUMSUB", b"a", b"b"]);
                            assert!(r.starts_with(b"*4"), "{}", show(&r));
                        }
                        None => {
                            let (status, _) = get(http, "/stats");
                            assert!(status.contains("200"), "{status}");
                        }
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = Raw::backend(nodes[0].resp, "pw");
    sub.cmd(&[b"SUBSCRIBE", b"probe"]);
    let mut p = Raw::backend(nodes[0].resp, "pw");
    let (mut worst_ping, mut worst_pub, mut worst_health) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut max_threads = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let s = Instant::now();
        assert_eq!(p.cmd(&[b"PING"]), b"+PONG\r\n");
        worst_ping = worst_ping.max(s.elapsed());
        let s = Instant::now();
        p.cmd(&[b"PUBLISH", b"probe", b"x"]);
        sub.frame();
        worst_pub = worst_pub.max(s.elapsed());
        let s = Instant::now();
        let mut h = TcpStream::connect(nodes[0].http).unwrap();
        h.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            h,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let _ = h.read_to_end(&mut buf);
        assert!(
            buf.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        worst_health = worst_health.max(s.elapsed());
        max_threads = max_threads.max(threads_of(&nodes[0]));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let served: u64 = flood.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "{clients} clients' {} flood with a silent node: {served} served in ~3.3 s; worst PING {worst_ping:?}, \
         publish→delivery {worst_pub:?}, /healthz {worst_health:?}; threads {threads_before} → {max_threads}",
        if resp { "PUBSUB NUMSUB" } else { "/stats" }
    );
    assert!(
        worst_ping < Duration::from_millis(250),
        "PING took {worst_ping:?}"
    );
    assert!(
        worst_pub < Duration::from_millis(250),
        "publish took {worst_pub:?}"
    );
    assert!(
        worst_health < Duration::from_millis(250),
        "/healthz took {worst_health:?}"
    );
}

/// Finding 5 (fixed): a node deadlocked for good once more than about
/// 512 client connections were parked on engine calls at once. A RESP
/// command that waits for the engine parks its connection's thread
/// (`Pending::wait`, `block_in_place`); past tokio's default 512 blocking
/// threads, a parked call strands its worker's core, and with every core
/// stranded nothing drives the I/O and timers the parked calls wait on.
/// Measured before the fix (debug build, 2 nodes on one Redis):
/// - 600 backend connections sending `PUBSUB NUMSUB a` in a loop (no
///   silent node needed; a token client may send it too): 766 answered in
///   the first moments, then nothing; a fresh connection's `PING` had no
///   answer 21 s after the flood stopped. 400 connections: fine.
/// - 600 connections publishing once each through a `CLIENT PAUSE 3000
///   WRITE` (a short Redis stall, no attacker at all): 0 of 600
///   answered within 8 s, and the node never answered again. 400: all
///   answered.
///
/// Fixed: the runtime allows `--max-connections` plus
/// `--http-max-connections` plus 64 blocking threads (src/main.rs), and at
/// most 16 surveys wait for a slot (the rest are answered at once from
/// this node alone). After: 600 of 600 publishes answered; with the
/// threads alone 3,879 surveys were answered in 3 s, with the queue bound
/// too 178,772 (most from this node alone: the 4 slots were busy); `PING`
/// answered within 1 ms after both.
///
/// Since, publishes (RESP, WebSocket, HTTP) await the engine on their
/// connection's task: during the stall the node runs a handful of
/// threads, not one per waiting publish.
fn parked_flood(redis: &Redis, node: &Herald, clients: usize, publish: bool) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, addr) = (stop.clone(), node.resp);
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                c.send(&[b"AUTH", b"pw"]);
                if c.try_frame(Duration::from_secs(5)).is_none() {
                    return 0;
                }
                if publish {
                    std::thread::sleep(Duration::from_millis(1500));
                    c.send(&[b"PUBLISH", b"a", b"x"]);
                    return c
                        .try_frame(Duration::from_secs(8))
                        .map_or(0, |f| u64::from(f.starts_with(b":")));
                }
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    c.send(&[b"PUBSUB", b"NUMSUB", b"a"]);
                    if c.try_frame(Duration::from_secs(3)).is_none() {
                        return k;
                    }
                    k += 1;
                }
                k
            })
        })
        .collect();
    // Mid-flood (for publishes: inside the pause), count the node's
    // threads while the calls wait.
    if publish {
        std::thread::sleep(Duration::from_millis(1000));
        Raw::connect(redis.addr).cmd(&[b"CLIENT", b"PAUSE", b"3000", b"WRITE"]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let threads = thread_count(node.pid());
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let served: u64 = flood.into_iter().map(|t| t.join().unwrap()).sum();
    let t = Instant::now();
    let mut p = Raw::connect(node.resp);
    p.send(&[b"PING"]);
    let r = p.try_frame(Duration::from_secs(5));
    eprintln!(
        "{clients} connections {}: {served} answered; PING after: {:?} in {:?}",
        if publish {
            "publishing through a 3 s Redis stall"
        } else {
            "sending PUBSUB NUMSUB"
        },
        r.as_ref().map(|f| show(f)),
        t.elapsed()
    );
    assert!(r.is_some(), "the node no longer answers");
    eprintln!("threads during the flood: {threads}");
    // Publishes and surveys await the engine on their connections' tasks
    // (no thread parks on one): measured 3 threads both ways, against 537
    // when each waiting publish parked its thread, and 24 for surveys
    // (at most 16 wait for a slot; the rest are answered at once).
    assert!(threads < 12, "{threads} threads while the calls waited");
    served
}

/// The number of threads of process `pid`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn six_hundred_connections_surveying_do_not_deadlock_the_node() {
    let _one = heavy();
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    until(Duration::from_secs(5), "two nodes", || {
        node_count(nodes[0].http) == 2
    });
    let served = parked_flood(&redis, &nodes[0], 600, false);
    assert!(served > 1000, "{served} surveys answered in 3 s");
}

#[test]
fn six_hundred_connections_publishing_through_a_redis_stall_do_not_deadlock_the_node() {
    let _one = heavy();
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 1);
    let served = parked_flood(&redis, &nodes[0], 600, true);
    assert_eq!(served, 600, "publishes acknowledged");
}

/// Churn through the engine: one connection subscribes 10,000 channels and
/// unsubscribes them, five times. Each round subscribes and unsubscribes
/// every channel in Redis; the node's memory must not grow round after
/// round, and Redis must hold none of them at the end. Holds. Measured
/// with 20,000 channels: 5 rounds in 11.4 s (debug), RSS after each round
/// 28.6, 35.5, 37.2, 37.3, 37.3 MB (the allocator's pools, then flat);
/// no channel left in Redis. Since subscribes await Redis (a command's
/// new channels in rounds of 128) and unsubscribes are told to Redis by
/// tasks (a round ends when Redis holds none), the work is spread over
/// the runtime's threads, and glibc's per-thread arenas add their own
/// growth: 16 rounds of 10,000 channels went from 30 to 50 MB, flat from
/// about the 13th (25 rounds: 56 MB); with `MALLOC_ARENA_MAX=1`, 28.7 to
/// 30.4 MB over 16 rounds in 5.4 s. The node here runs with one arena, so
/// what is measured is the node's own memory.
#[test]
fn subscribe_churn_through_the_engine_does_not_grow() {
    let redis = Redis::start(&[]);
    let url = format!("redis://{}", redis.addr);
    let nodes = [Herald::start_with_env(
        &["--engine", &url, "--requirepass", "pw"],
        &[("MALLOC_ARENA_MAX", "1")],
    )];
    let mut c = Raw::backend(nodes[0].resp, "pw");
    let n = 10_000;
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("churn:{i:08}").into_bytes())
        .collect();
    let mut sub: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    sub.extend(names.iter().map(|n| &n[..]));
    let mut unsub: Vec<&[u8]> = vec![b"UNSUBSCRIBE"];
    unsub.extend(names.iter().map(|n| &n[..]));
    let mut r = Raw::connect(redis.addr);
    let mut rss = Vec::new();
    let started = Instant::now();
    for _ in 0..5 {
        c.send(&sub);
        for _ in 0..n {
            c.frame();
        }
        c.send(&unsub);
        for _ in 0..n {
            c.frame();
        }
        // Unsubscribes do not wait for Redis (a task tells it): the round
        // ends when Redis has let go.
        until(
            Duration::from_secs(10),
            "churn channels left in Redis",
            || bulks(&r.cmd(&[b"PUBSUB", b"CHANNELS", b"herald:ch:*"])).is_empty(),
        );
        rss.push(rss_kib(&nodes[0]));
    }
    let left = r.cmd(&[b"PUBSUB", b"NUMSUB", b"herald:ch:churn:00000000"]);
    let channels = bulks(&r.cmd(&[b"PUBSUB", b"CHANNELS", b"herald:ch:*"])).len();
    eprintln!(
        "churn: 5 rounds of {n} channels in {:?}; RSS per round (KiB) {rss:?}; \
         channels left in Redis {channels}",
        started.elapsed()
    );
    assert!(show(&left).ends_with(":0\\r\\n"), "{}", show(&left));
    assert_eq!(channels, 0);
    // The first rounds grow the allocator's pools; after that, flat (12
    // rounds: 24.0, 25.4, 27.3, 26.9, 26.1, 27.4, 26.2, 25.7 … 26.0 MB);
    // room for the allocator's noise on a loaded machine.
    assert!(
        rss[4] < rss[1] + 8 * 1024,
        "RSS grew from {} KiB to {} KiB",
        rss[1],
        rss[4]
    );
}

/// Finding 7 (fixed): `examples/cluster/run.sh` with its Redis port
/// already taken (another Redis, perhaps one that matters): its own
/// redis-server failed to bind, yet `wait_port` found the port answering,
/// so the three nodes started on the other Redis and wrote into it
/// (heartbeats, and whatever the chat pages did) until the script noticed
/// its Redis had exited, after printing the pages' URLs. Measured: the
/// URLs printed, then "a process of the example exited (status 1)"; the
/// foreign Redis got the nodes' `PUBLISH`es. Now the script refuses a
/// taken port at once.
#[test]
fn cluster_example_never_uses_a_redis_it_did_not_start() {
    let foreign = Redis::start(&[]);
    let mut cmd = std::process::Command::new("examples/cluster/run.sh");
    cmd.env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("REDIS_PORT", foreign.addr.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for n in 1..=3 {
        for kind in ["RESP", "HTTP", "WEB"] {
            cmd.env(format!("{kind}_PORT_{n}"), free_port().to_string());
        }
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let mut r = Raw::connect(foreign.addr);
    let publishes = redis_calls(&mut r, "publish");
    assert_eq!(
        publishes, 0,
        "the example's nodes used the foreign Redis: {err}"
    );
    assert!(
        status.is_some_and(|s| !s.success()) && err.contains("taken"),
        "{status:?}: {err}"
    );
}

/// Finding 8: what a survey may gather. Each other node's answer is
/// bounded (10,000 names, 1 MiB) and at most 1,024 other nodes are
/// tracked, but nothing bounded their sum: anyone on the Redis can
/// heartbeat as 1,024 made-up nodes and answer every survey with 1 MiB
/// each, so one `PUBSUB CHANNELS` gathered up to 1.3 GiB on the asking
/// node (4 surveys in flight: 5 GiB) and replied up to 10 million names.
/// Measured here (debug build) with 40 made-up nodes: one `/api/channels`
/// took 4.4 s, listed 400,000 channels (42.8 MB of names), and the node's
/// RSS went from 16 MB to 699 MB (about 16 bytes of memory per byte of
/// answer; 1,024 such nodes: some 17 GB). Fixed: a survey keeps at most
/// 8 MiB of answers over all nodes; later ones count as answered with
/// nothing, truncated (`cluster.truncated`). After: 0.77 s, 70,000
/// channels (7.5 MB of names), RSS 16 MB to 146 MB (the 40 MB of answers
/// still pass through the control connection's buffers). With 12 made-up
/// nodes and no budget: 120,000 channels (12.8 MB), RSS 16 MB to 435 MB
/// over two surveys.
#[test]
fn a_survey_gathers_a_bounded_total() {
    // 12 MB of answers: past the budget, and few enough made-up nodes to
    // answer within 500 ms on a loaded machine (40 measured above).
    const FAKES: usize = 12;
    let _one = heavy();
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 1);
    let fakes: Vec<FakeNode> = (0..FAKES)
        .map(|i| {
            let name = format!("fake{i:02}");
            let hb = format!("H{{\"name\":\"{name}\"}}");
            FakeNode::start_listing(redis.addr, &name, hb, 1, &format!("{name}:"), 10_000)
        })
        .collect();
    until(Duration::from_secs(5), "fakes listed", || {
        node_count(nodes[0].http) == FAKES + 1
    });
    let rss_before = rss_kib(&nodes[0]);
    // The first survey warms the made-up nodes up; the second is measured.
    get(nodes[0].http, "/api/channels");
    let started = Instant::now();
    let (status, v) = get(nodes[0].http, "/api/channels");
    let took = started.elapsed();
    assert!(status.contains("200"), "{status}");
    let listed = v["channels"].as_array().map_or(0, |a| a.len());
    let bytes: usize = v["channels"].as_array().map_or(0, |a| {
        a.iter().map(|c| c["channel"].as_str().unwrap().len()).sum()
    });
    let mut r = Raw::connect(redis.addr);
    let cut = redis_stat(&mut r, "client_output_buffer_limit_disconnections");
    eprintln!(
        "{FAKES} made-up nodes answering 1 MB each ({cut} Redis output-buffer disconnections): /api/channels took {took:?}, listed {listed} \
         channels ({bytes} bytes of names); cluster {}; RSS {rss_before} KiB → {} KiB",
        v["cluster"],
        rss_kib(&nodes[0])
    );
    drop(fakes);
    assert!(
        bytes <= 8 << 20,
        "{bytes} bytes of names gathered by one survey"
    );
    assert_eq!(
        v["cluster"]["truncated"],
        serde_json::json!(true),
        "{}",
        v["cluster"]
    );
}

/// Surveys of the other nodes cost clients without the password 10 reads
/// of their address's `--read-rate` bucket (default 100/s, burst 200):
/// one address looping `PUBSUB CHANNELS` gets about 20 answers, then the
/// rate-limit error, at about 10 a second; a password backend is never
/// held back.
#[test]
fn surveys_from_one_address_are_rate_limited() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    until(Duration::from_secs(5), "both nodes live", || {
        node_count(nodes[0].http) == 2
    });
    let tok = hs256(
        serde_json::json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"]}),
        SECRET,
    );
    let mut c = Raw::connect(nodes[0].resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let (mut ok, mut limited) = (0, 0);
    let t = Instant::now();
    for _ in 0..60 {
        let r = c.cmd(&[b"PUBSUB", b"CHANNELS"]);
        if r.starts_with(b"*") {
            ok += 1;
        } else {
            assert!(show(&r).contains("rate limit"), "{}", show(&r));
            limited += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(
        (ok as f64) <= 21.0 + 10.0 * secs,
        "{ok} surveys answered in {secs:.1} s ({limited} limited)"
    );
    assert!(limited > 0);
    let mut backend = Raw::backend(nodes[0].resp, "pw");
    for _ in 0..60 {
        assert!(backend.cmd(&[b"PUBSUB", b"CHANNELS"]).starts_with(b"*"));
    }
}
