//! A hostile client against the day's changes (attack 7): per-address
//! limits, scoped surveys, CROSSSLOT transactions, publishes awaited on
//! the connection in engine mode. Real processes: `target/debug/herald`
//! and `redis-server` on free loopback ports.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SECRET: &str = "attack7-secret";

/// One Herald node on `redis` (password `pw`, JWT `SECRET`), with `extra`.
fn node(redis: &Redis, name: &str, extra: &[&str]) -> Herald {
    let url = format!("redis://{}", redis.addr);
    let mut args = vec![
        "--engine",
        &url,
        "--node-name",
        name,
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "pw",
    ];
    args.extend_from_slice(extra);
    Herald::start(&args)
}

fn token(claims: serde_json::Value) -> String {
    let mut c = claims;
    c["exp"] = json!(unix_now() + 600);
    hs256(c, SECRET)
}

/// Pauses `redis` (every client, writes included) for `ms`.
fn pause(redis: &Redis, ms: u64) {
    let mut admin = Raw::connect(redis.addr);
    let ms = ms.to_string();
    assert_eq!(
        admin.cmd(&[b"CLIENT", b"PAUSE", ms.as_bytes(), b"ALL"]),
        b"+OK\r\n"
    );
}

/// Reads every frame until `n` are in or `wait` passes.
fn frames(c: &mut Raw, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_frame(left) {
            Some(f) => out.push(f),
            None => break,
        }
    }
    out
}

/// `message` pushes' payloads on `channel`, from frames (RESP2 or RESP3).
fn payloads(frames: &[Vec<u8>], channel: &str) -> Vec<String> {
    let head2 = format!("*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n", channel.len());
    let head3 = head2.replacen('*', ">", 1);
    frames
        .iter()
        .filter_map(|f| {
            let s = String::from_utf8_lossy(f);
            let rest = s.strip_prefix(&head2).or_else(|| s.strip_prefix(&head3))?;
            let (_, body) = rest.split_once("\r\n")?;
            Some(body.trim_end_matches("\r\n").to_string())
        })
        .collect()
}

/// Held: a RESP3 client subscribed to `a` pipelines PUBLISHes to `a` and
/// `b`, SPUBLISH, SET/GET and PING in engine mode: every reply comes once,
/// in order, and its own messages reach it in order (the pushes may come
/// before or after the PUBLISH's reply; Redis sends them first).
#[test]
fn engine_pipeline_mixing_publishes_and_data_answers_in_order() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let mut c = Raw::backend(h.resp, "pw");
    assert!(c.cmd(&[b"HELLO", b"3"]).starts_with(b"%"));
    assert!(c.cmd(&[b"SUBSCRIBE", b"a"]).starts_with(b">3"));
    let mut pipe = Vec::new();
    let mut want: Vec<String> = Vec::new();
    for i in 0..200 {
        let p = i.to_string();
        match i % 7 {
            0 => {
                pipe.extend(encode(&[b"SET", b"k", p.as_bytes()]));
                want.push("+OK".into());
            }
            1 => {
                pipe.extend(encode(&[b"GET", b"k"]));
                let prev = (i - 1).to_string();
                want.push(format!("${}\r\n{prev}", prev.len()));
            }
            2 => {
                pipe.extend(encode(&[b"SPUBLISH", b"a", p.as_bytes()]));
                want.push(":0".into());
            }
            3 => {
                pipe.extend(encode(&[b"PUBLISH", b"b", p.as_bytes()]));
                want.push(":0".into());
            }
            4 => {
                pipe.extend(encode(&[b"PING"]));
                want.push("+PONG".into());
            }
            _ => {
                pipe.extend(encode(&[b"PUBLISH", b"a", p.as_bytes()]));
                want.push(":1".into());
            }
        }
    }
    c.send_raw(&pipe);
    let mine: Vec<String> = (0..200)
        .filter(|i| i % 7 >= 5)
        .map(|i| i.to_string())
        .collect();
    let got = frames(&mut c, want.len() + mine.len(), Duration::from_secs(15));
    let replies: Vec<String> = got
        .iter()
        .filter(|f| !f.starts_with(b">"))
        .map(|f| String::from_utf8_lossy(f).trim_end().to_string())
        .collect();
    assert_eq!(replies, want);
    assert_eq!(payloads(&got, "a"), mine);
    assert!(c.try_frame(Duration::from_millis(300)).is_none(), "extra");
}

/// Held: MULTI with PUBLISHes in engine mode answers EXEC with every
/// reply once, and a PUBLISH pipelined after EXEC comes after it.
#[test]
fn engine_multi_with_publish_then_pipelined_publish() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let mut sub = Raw::backend(h.resp, "pw");
    sub.cmd(&[b"SUBSCRIBE", b"t"]);
    let mut c = Raw::backend(h.resp, "pw");
    let mut pipe = Vec::new();
    for cmd in [
        &[&b"PUBLISH"[..], b"t", b"1"][..],
        &[b"MULTI"],
        &[b"PUBLISH", b"t", b"2"],
        &[b"SET", b"x", b"y"],
        &[b"PUBLISH", b"t", b"3"],
        &[b"EXEC"],
        &[b"PUBLISH", b"t", b"4"],
    ] {
        pipe.extend(encode(cmd));
    }
    c.send_raw(&pipe);
    let got: Vec<String> = frames(&mut c, 6, TIMEOUT).iter().map(|f| show(f)).collect();
    assert_eq!(
        got,
        [
            ":1\\r\\n",
            "+OK\\r\\n",
            "+QUEUED\\r\\n",
            "+QUEUED\\r\\n",
            "+QUEUED\\r\\n",
            "*3\\r\\n:1\\r\\n+OK\\r\\n:1\\r\\n",
            ":1\\r\\n"
        ][..6]
    );
    assert_eq!(show(&c.frame()), ":1\\r\\n");
    assert_eq!(
        payloads(&frames(&mut sub, 4, TIMEOUT), "t"),
        ["1", "2", "3", "4"]
    );
}

/// A publisher and a subscriber (both with the password) on one node.
fn pub_sub(h: &Herald, channel: &[u8]) -> (Raw, Raw) {
    let mut sub = Raw::backend(h.resp, "pw");
    sub.cmd(&[b"SUBSCRIBE", channel]);
    (Raw::backend(h.resp, "pw"), sub)
}

fn publishes(channel: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| encode(&[b"PUBLISH", channel.as_bytes(), i.to_string().as_bytes()]))
        .collect()
}

/// Held: 100 PUBLISHes pipelined while Redis is paused (1.5 s), then QUIT,
/// or then the client's side closed: every PUBLISH is answered once, in
/// order, then QUIT's `+OK` and the close; the subscriber gets all 100 in
/// order.
#[test]
fn engine_publish_batch_through_a_pause_then_quit_or_eof() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    for quit in [true, false] {
        let (mut c, mut sub) = pub_sub(&h, b"p");
        pause(&redis, 1500);
        let mut pipe = publishes("p", 100);
        if quit {
            pipe.extend(encode(&[b"QUIT"]));
        }
        c.send_raw(&pipe);
        if !quit {
            c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let got = frames(&mut c, 102, Duration::from_secs(8));
        let mut want = vec![":1\r\n".to_string(); 100];
        if quit {
            want.push("+OK\r\n".into());
        }
        let got: Vec<String> = got
            .iter()
            .map(|f| String::from_utf8_lossy(f).into())
            .collect();
        assert_eq!(got, want, "quit {quit}");
        assert!(c.closed());
        let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(payloads(&frames(&mut sub, 101, TIMEOUT), "p"), want);
    }
}

/// Held: CLIENT KILL of a publisher whose batch awaits a paused Redis
/// closes it at once (nothing answered after), and no message it sent is
/// lost or duplicated for the subscriber: Redis runs what it was sent.
#[test]
fn engine_publish_batch_killed_while_redis_is_paused() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let (mut c, mut sub) = pub_sub(&h, b"k");
    let id = String::from_utf8_lossy(&c.cmd(&[b"CLIENT", b"ID"]))
        .trim_start_matches(':')
        .trim()
        .to_string();
    pause(&redis, 1500);
    c.send_raw(&publishes("k", 50));
    std::thread::sleep(Duration::from_millis(200));
    let mut admin = Raw::backend(h.resp, "pw");
    let kill = admin.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
    assert_eq!(show(&kill), ":1\\r\\n");
    let t = Instant::now();
    assert!(c.closed());
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    let got = payloads(&frames(&mut sub, 51, Duration::from_secs(4)), "k");
    let want: Vec<String> = (0..got.len()).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "a prefix, in order, once");
    assert_eq!(admin.cmd(&[b"PING"]), b"+PONG\r\n");
}

/// Held: a token that expires while its publishes await a paused Redis
/// ends the connection at its `exp`; nothing is answered after the end.
#[test]
fn engine_token_expiring_while_a_publish_batch_awaits() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let (_, mut sub) = pub_sub(&h, b"e");
    let exp = unix_now() + 2;
    let tok = hs256(json!({"sub": "u", "exp": exp}), SECRET);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    pause(&redis, 4000);
    c.send_raw(&publishes("e", 20));
    let t = Instant::now();
    let got = frames(&mut c, 21, Duration::from_secs(6));
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        got.iter().all(|f| !f.starts_with(b":")),
        "acknowledged after exp: {:?}",
        got.iter().map(|f| show(f)).collect::<Vec<_>>()
    );
    assert!(c.closed());
    let got = payloads(&frames(&mut sub, 21, Duration::from_secs(5)), "e");
    let want: Vec<String> = (0..got.len()).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

/// Redis killed while a batch of 1,000 PUBLISHes is under way: each gets
/// one reply, a count or an engine error, in order; the node lives on.
#[test]
fn engine_publish_batch_when_redis_dies() {
    let mut redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let (mut c, _sub) = pub_sub(&h, b"d");
    c.send_raw(&publishes("d", 1000));
    let first = c.frame();
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let mut got = vec![first];
    got.extend(frames(&mut c, 999, Duration::from_secs(15)));
    assert_eq!(got.len(), 1000);
    let bad: Vec<String> = got
        .iter()
        .filter(|f| !f.starts_with(b":") && !f.starts_with(b"-ERR engine"))
        .map(|f| show(f))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    let errs = got.iter().position(|f| f.starts_with(b"-")).unwrap_or(1000);
    assert!(got[errs..].iter().all(|f| f.starts_with(b"-")), "{errs}");
    assert!(c.try_frame(Duration::from_millis(300)).is_none());
    let mut admin = Raw::backend(h.resp, "pw");
    assert_eq!(admin.cmd(&[b"PING"]), b"+PONG\r\n");
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn threads(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Held (measured): 20 WebSocket sessions of 20 addresses each write
/// 2,000 publishes of 4 KiB (160 MB in all) while Redis is paused for 3 s:
/// each session parks one publish and reads no further, so the node grows
/// by little (measured below 40 MiB) and keeps its threads; after the
/// pause the replies come, a rate limit's refusals included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ws_publish_flood_while_redis_is_paused_is_bounded() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let tok = token(json!({"sub": "u", "publish": ["f"]}));
    let mut sessions = Vec::new();
    for i in 0..20u8 {
        let mut ws = ws_connect_from(h.http, Some(&tok), [127, 0, 1, 10 + i]).await;
        let pong = ws_call(&mut ws, 999_999, json!({"op": "ping"})).await;
        assert!(pong.get("error").is_none(), "{pong}");
        sessions.push(ws);
    }
    let (rss0, th0) = (rss_kib(h.pid()), threads(h.pid()));
    pause(&redis, 3000);
    let data = "x".repeat(4096);
    let mut tasks = Vec::new();
    for mut ws in sessions {
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            for id in 0..2000u64 {
                let m = json!({"id": id, "op": "publish", "channel": "f", "data": data});
                let send = ws.send(Message::Text(m.to_string().into()));
                if tokio::time::timeout(Duration::from_millis(50), send)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            ws
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (rss1, th1) = (rss_kib(h.pid()), threads(h.pid()));
    eprintln!("paused: RSS {rss0} -> {rss1} KiB, threads {th0} -> {th1}");
    assert!(rss1 < rss0 + 40 * 1024, "{rss0} -> {rss1} KiB");
    assert!(th1 <= th0 + 4, "{th0} -> {th1}");
    let mut ws = tasks.pop().unwrap().await.unwrap();
    for t in tasks {
        drop(t.await.unwrap());
    }
    let first = ws_recv(&mut ws).await;
    assert_eq!(first["id"], json!(0), "{first}");
}

/// SIGTERM while a WebSocket session or a RESP connection awaits a
/// publish on a paused Redis (20 s): how long the node takes to exit.
async fn exit_time(ws_park: bool, resp_park: bool) -> Duration {
    let redis = Redis::start(&[]);
    let mut h = node(&redis, "n0", &[]);
    let tok = token(json!({"sub": "u", "publish": ["s"]}));
    let mut ws = ws_connect(h.http, Some(&tok)).await;
    ws_call(&mut ws, 1, json!({"op": "ping"})).await;
    let mut c = Raw::backend(h.resp, "pw");
    pause(&redis, 20_000);
    if ws_park {
        ws_send(
            &mut ws,
            json!({"id": 2, "op": "publish", "channel": "s", "data": 1}),
        )
        .await;
    }
    if resp_park {
        c.send(&[b"PUBLISH", b"s", b"x"]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let (st, _h) = tokio::task::spawn_blocking(move || (h.terminate(), h))
        .await
        .unwrap();
    assert!(st.success());
    t.elapsed()
}

/// Finding: a WebSocket session awaiting its publish on the engine did not
/// watch for shutdown (an app hook's call did), so SIGTERM while Redis was
/// paused took 5.7 s to exit (the engine's timeout) instead of 2.0 s (the
/// leave's 1 s and the rest, as with nothing parked or a RESP connection
/// parked). Fixed in `ws/hooks.rs`: 2.0 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_publishes_await_a_paused_redis() {
    let none = exit_time(false, false).await;
    let ws = exit_time(true, false).await;
    let resp = exit_time(false, true).await;
    eprintln!("exit after: nothing parked {none:?}, WebSocket {ws:?}, RESP {resp:?}");
    assert!(ws.max(resp) < Duration::from_secs(3), "{ws:?} {resp:?}");
}

const REFUSED: &[u8] = b"-ERR max number of clients reached\r\n";

/// A RESP connection from `src`: what it gets for `cmd` (refused ones get
/// the refusal whatever they send).
fn resp_try(h: &Herald, src: [u8; 4], cmd: &[&[u8]]) -> (Raw, Vec<u8>) {
    let mut c = Raw::connect_from(h.resp, src);
    let _ = std::io::Write::write_all(&mut c.stream, &encode(cmd));
    let r = c.try_frame(TIMEOUT).unwrap_or_default();
    (c, r)
}

/// Status of a WebSocket upgrade from `src`.
async fn ws_status(http: std::net::SocketAddr, src: [u8; 4], token: &str) -> u16 {
    let tcp = tcp_from(http, src);
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let url = format!("ws://{http}/ws?token={token}");
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok((ws, _)) => {
            std::mem::forget(ws); // held open until the test ends
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

/// Held: one address at `--max-connections-per-client` 3 mixing RESP
/// (JWT, `HELLO 3 AUTH` with a JWT, anonymous) and WebSocket gets 3 in
/// all; `HELLO AUTH` with the password stops counting, a JWT `AUTH` after
/// a JWT changes nothing, and a RESET after the password does not count
/// the connection again (it needs the password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_and_websocket_share_one_count_per_address() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "pw",
        "--max-connections-per-client",
        "3",
    ]);
    let tok = token(json!({"sub": "u"}));
    let src = [127, 0, 2, 1];
    let (_a, r) = resp_try(&h, src, &[b"AUTH", tok.as_bytes()]);
    assert_eq!(r, b"+OK\r\n");
    let (mut b, r) = resp_try(&h, src, &[b"HELLO", b"3", b"AUTH", b"u", tok.as_bytes()]);
    assert!(r.starts_with(b"%"), "{}", show(&r));
    assert_eq!(b.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    assert_eq!(ws_status(h.http, src, &tok).await, 101);
    assert_eq!(ws_status(h.http, src, &tok).await, 429);
    let (_d, r) = resp_try(&h, src, &[b"PING"]);
    assert_eq!(r, REFUSED);
    // Password connections: not counted, even after RESET.
    drop(b);
    let mut backends = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while backends.len() < 10 {
        let (mut c, r) = resp_try(&h, src, &[b"HELLO", b"3", b"AUTH", b"default", b"pw"]);
        if r == REFUSED {
            assert!(Instant::now() < deadline, "place not given back");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        assert!(r.starts_with(b"%"), "{}", show(&r));
        assert_eq!(c.cmd(&[b"RESET"]), b"+RESET\r\n");
        backends.push(c);
    }
    assert_eq!(ws_status(h.http, src, &tok).await, 101);
    assert_eq!(ws_status(h.http, src, &tok).await, 429);
}

/// CPU time (user + system) of a process, in ms.
fn cpu_ms(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks * 10
}

/// PSUBSCRIBEs (or SUBSCRIBEs) `n` names `x:{i}:*` (`x:{i}`) on `c`.
fn hold_names(c: &mut Raw, cmd: &[u8], n: usize, suffix: &str) {
    for start in (0..n).step_by(1000) {
        let names: Vec<String> = (start..n.min(start + 1000))
            .map(|i| format!("x:{i}{suffix}"))
            .collect();
        let mut args: Vec<&[u8]> = vec![cmd];
        args.extend(names.iter().map(|s| s.as_bytes()));
        c.send(&args);
        for _ in 0..names.len() {
            c.frame();
        }
    }
}

/// Node B's CPU for `rounds` of `cmd` asked on node A by `asker`, and
/// the slowest answer.
fn answer_cost(asker: &mut Raw, b: &Herald, cmd: &[&[u8]], rounds: usize) -> (u64, Duration) {
    let cpu0 = cpu_ms(b.pid());
    let mut slow = Duration::ZERO;
    for _ in 0..rounds {
        let t = Instant::now();
        let r = asker.cmd(cmd);
        slow = slow.max(t.elapsed());
        assert!(!r.starts_with(b"-"), "{}", show(&r));
        // PUBSUB: 10 a second from an address without the password.
        std::thread::sleep(Duration::from_millis(105));
    }
    (cpu_ms(b.pid()) - cpu0, slow)
}

/// Finding: a token with 64 `room:{i}:*` subscribe globs (a user in 64
/// rooms) asking PUBSUB NUMPAT on node A, at its 10 a second, while node B
/// holds 20,000 patterns: B tested each pattern against the scope by
/// compiling every glob's head again (`auth::pattern_within`), 459 ms of
/// CPU a question (debug build; the unscoped `Q`: 16 ms), on its
/// control loop, so its answers missed the 500 ms survey timeout and the
/// backlog delayed its answers to others' questions too (PUBSUB CHANNELS
/// by the password then also timed out: 508 ms). Fixed (nothing compiled
/// per glob, the pattern's literal prefix read once): 61 ms a question,
/// answered in 85 ms at worst; CHANNELS unaffected.
#[test]
fn scoped_survey_cost_on_the_answering_node() {
    let redis = Redis::start(&[]);
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut holder = Raw::backend(b.resp, "pw");
    hold_names(&mut holder, b"PSUBSCRIBE", 20_000, ":*");
    hold_names(&mut holder, b"SUBSCRIBE", 20_000, "");
    let globs: Vec<String> = (0..64).map(|i| format!("room:{i}:*")).collect();
    let tok = token(json!({"sub": "u", "subscribe": globs}));
    let mut user = Raw::connect(a.resp);
    assert_eq!(user.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let mut admin = Raw::backend(a.resp, "pw");
    // Both nodes see each other (heartbeats carry `control`).
    std::thread::sleep(Duration::from_millis(2500));
    // (Answers carry at most 10,000 names.)
    assert_eq!(show(&admin.cmd(&[b"PUBSUB", b"NUMPAT"])), ":10000\\r\\n");
    let rounds = 12;
    let numpat: &[&[u8]] = &[b"PUBSUB", b"NUMPAT"];
    let channels: &[&[u8]] = &[b"PUBSUB", b"CHANNELS"];
    let (q_pat, _) = answer_cost(&mut admin, &b, numpat, rounds);
    let (s_pat, t_pat) = answer_cost(&mut user, &b, numpat, rounds);
    let (q_ch, _) = answer_cost(&mut admin, &b, channels, rounds);
    let (s_ch, t_ch) = answer_cost(&mut user, &b, channels, rounds);
    eprintln!(
        "node B CPU for {rounds} questions: NUMPAT Q {q_pat} ms, S {s_pat} ms ({t_pat:?}); \
         CHANNELS Q {q_ch} ms, S {s_ch} ms ({t_ch:?})"
    );
    assert!(t_pat < Duration::from_millis(480), "B's answers time out");
    assert!(t_ch < Duration::from_millis(480), "B's answers time out");
}

/// Finding (fixed): during a flood of addresses that fills the
/// address map (65,536 entries kept busy: here 70,000 loopback addresses
/// with 10 wrong passwords each, as an IPv6 attacker does with the /64s
/// of one /48), a fresh address is kept by its /24, and the /24 shares
/// one `--max-connections-per-client` count, not just spent budgets: at
/// limit 2, of 3 fresh addresses of 127.201.0.0/24 opening one JWT
/// connection each, only 2 get in (the third: `-ERR max number of
/// clients reached`), and one address of that /24 holding 2 connections
/// locks every fresh address of its /24 out while the flood lasts (a
/// carrier's /24 pool, a cloud provider's /24). docs/security.md
/// mentions shared budgets only. Connection counts are exact and held
/// only while connections are open (nothing to gain by cycling
/// addresses): they now live in a map of their own by address (IPv6
/// /64), one entry per address with connections open, that never falls
/// back to networks; the budgets stay where they were. Now 3 of 3, each
/// still held to its own 2.
#[test]
fn a_flood_makes_fresh_addresses_of_a_24_share_one_connection_count() {
    let h = Herald::start(&[
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        SECRET,
        "--max-connections-per-client",
        "2",
    ]);
    let wrong: Vec<u8> = (0..10).flat_map(|_| encode(&[b"AUTH", b"wrong"])).collect();
    let started = Instant::now();
    for n in 0u32..70_000 {
        let a = n + 256;
        let src = [127, 1 + (a >> 16) as u8, (a >> 8) as u8, a as u8];
        let mut c = Raw::connect_from(h.resp, src);
        c.send_raw(&wrong);
        for _ in 0..10 {
            c.frame();
        }
    }
    eprintln!("flood: {:?}", started.elapsed());
    let tok = token(json!({"sub": "u"}));
    let mut admitted = Vec::new();
    for i in 1..=3u8 {
        let (c, r) = resp_try(&h, [127, 201, 0, i], &[b"AUTH", tok.as_bytes()]);
        if r == b"+OK\r\n" {
            admitted.push(c);
        }
    }
    assert_eq!(admitted.len(), 3, "fresh addresses of one /24 let in");
    // Each is still held to its own limit.
    let (_c, r) = resp_try(&h, [127, 201, 0, 1], &[b"AUTH", tok.as_bytes()]);
    assert_eq!(r, b"+OK\r\n");
    let (_d, r) = resp_try(&h, [127, 201, 0, 1], &[b"AUTH", tok.as_bytes()]);
    assert_eq!(r, REFUSED);
}

fn hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Finding: `POST /api/broadcast` (API key) in engine mode built one
/// Redis pipeline of every channel's publish, each with its own copy of
/// the payload: a 100 KB payload to 1,000 channels grew the node by
/// 287 MiB at once (a 2 MB body can name ~10,000 channels for a payload
/// near 2 MB: tens of GiB). Fixed: steps of at most 1 MiB of payloads
/// (1,024 publishes), one round trip each: +3 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_of_a_large_payload_to_many_channels_is_bounded() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &["--api-key", "k"]);
    let channels: Vec<String> = (0..1000).map(|i| format!("b{i}")).collect();
    let body = json!({"channels": channels, "data": "x".repeat(100_000)}).to_string();
    let before = hwm_kib(h.pid());
    let (status, reply) = http_post(h.http, "/api/broadcast", &body, Some("k")).await;
    assert_eq!(status, 200, "{}", &reply[..reply.len().min(300)]);
    let grown = hwm_kib(h.pid()).saturating_sub(before);
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert_eq!(results[0]["channel"], "b0");
    assert_eq!(results[999]["channel"], "b999");
    assert!(results.iter().all(|r| r.get("error").is_none()));
    eprintln!(
        "broadcast of 100 KB to 1,000 channels: peak +{} MiB",
        grown / 1024
    );
    assert!(grown < 64 * 1024, "peak +{grown} KiB");
}

/// Held: PUBLISHes then a protocol error in one write, while Redis is
/// paused: every PUBLISH is answered, in order, then the protocol error,
/// then the close; nothing is answered twice.
#[test]
fn engine_publishes_then_a_protocol_error_while_redis_is_paused() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let (mut c, mut sub) = pub_sub(&h, b"x");
    pause(&redis, 1000);
    let mut pipe = publishes("x", 70);
    pipe.extend(encode(&[b"SET", b"k", b"v"]));
    pipe.extend(publishes("x", 3));
    pipe.extend_from_slice(b"*1\r\n$-7\r\n");
    c.send_raw(&pipe);
    let got: Vec<String> = frames(&mut c, 80, Duration::from_secs(6))
        .iter()
        .map(|f| show(f))
        .collect();
    assert_eq!(got.len(), 75, "{:?}", &got[got.len().saturating_sub(3)..]);
    assert!(got[..70].iter().all(|r| r == ":1\\r\\n"));
    assert_eq!(got[70], "+OK\\r\\n");
    assert!(got[71..74].iter().all(|r| r == ":1\\r\\n"));
    assert!(got[74].starts_with("-ERR Protocol error"), "{}", got[74]);
    assert!(c.closed());
    assert_eq!(payloads(&frames(&mut sub, 73, TIMEOUT), "x").len(), 73);
}

/// Finding: while a RESP connection awaited the engine it read on to
/// `--max-query-buffer` (128 MiB): 4 JWT clients of 4 addresses, each
/// writing 24 MB of pipelined PUBLISHes behind one awaiting a paused
/// Redis, grew the node by 95 MiB (before publishes were awaited on the
/// connection, its thread parked and the kernel held the rest). Fixed:
/// at most 1 MiB read ahead while awaiting (a blocking command still
/// reads on, to notice its client leaving): +5 MiB, and every PUBLISH is
/// answered once Redis is back.
#[test]
fn input_buffered_behind_an_awaited_publish_is_bounded() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let tok = token(json!({"sub": "u", "publish": ["q"]}));
    let mut conns: Vec<Raw> = (0..4u8)
        .map(|i| {
            let mut c = Raw::connect_from(h.resp, [127, 0, 3, 1 + i]);
            assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
            c
        })
        .collect();
    let rss0 = rss_kib(h.pid());
    pause(&redis, 4000);
    let chunk = publishes("q", 1);
    let big = {
        let payload = vec![b'z'; 16 * 1024];
        encode(&[b"PUBLISH", b"q", &payload]).repeat(64)
    };
    let writers: Vec<_> = conns
        .iter_mut()
        .map(|c| {
            c.send_raw(&chunk);
            let mut s = c.stream.try_clone().unwrap();
            let big = big.clone();
            std::thread::spawn(move || {
                for _ in 0..24 {
                    std::io::Write::write_all(&mut s, &big).unwrap();
                }
                24 * big.len()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let rss1 = rss_kib(h.pid());
    eprintln!("24 MB written to each while paused; node RSS {rss0} -> {rss1} KiB");
    assert!(rss1 < rss0 + 16 * 1024, "{rss0} -> {rss1} KiB");
    let sent: Vec<usize> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // Once Redis is back every PUBLISH is answered (most refused by the
    // publish rate), then a PING.
    let per = big.len() / 64;
    for (c, sent) in conns.iter_mut().zip(sent) {
        c.send(&[b"PING"]);
        let n = 1 + sent / per + 1;
        let got = frames(c, n, Duration::from_secs(10));
        assert_eq!(got.len(), n);
        assert_eq!(got[n - 1], b"+PONG\r\n");
    }
}

/// Held: what a narrow token sees of another node's channels and
/// patterns through PUBSUB, scoped (`S`, 1 glob), past the scope's bounds
/// (65 globs: `Q`, filtered by the asker) and empty (nobody asked): only
/// what its globs let it subscribe to.
#[test]
fn scoped_surveys_show_a_token_only_its_own() {
    let redis = Redis::start(&[]);
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut holder = Raw::backend(b.resp, "pw");
    for c in [
        "chat:x",
        "secret",
        "__presence__:secret",
        "__presence__:chat:y",
    ] {
        holder.cmd(&[b"SUBSCRIBE", c.as_bytes()]);
    }
    for p in ["chat:*", "*", "chat:x*", "sec*"] {
        holder.cmd(&[b"PSUBSCRIBE", p.as_bytes()]);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let many: Vec<String> = std::iter::once("chat:*".to_string())
        .chain((0..64).map(|i| format!("room:{i}")))
        .collect();
    for globs in [json!(["chat:*"]), json!(many), json!([])] {
        let tok = token(json!({"sub": "u", "subscribe": globs}));
        let mut u = Raw::connect(a.resp);
        assert_eq!(u.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
        let mut list = show(&u.cmd(&[b"PUBSUB", b"CHANNELS"]));
        std::thread::sleep(Duration::from_millis(120));
        let numpat = show(&u.cmd(&[b"PUBSUB", b"NUMPAT"]));
        if globs == json!([]) {
            assert_eq!(list, "*0\\r\\n");
            assert_eq!(numpat, ":0\\r\\n");
            continue;
        }
        assert!(!list.contains("secret"), "{list}");
        list = list.replace("__presence__:chat:y", "");
        assert!(list.contains("chat:x"), "{list}");
        // chat:* and chat:x* lie within chat:*; * and sec* do not.
        assert_eq!(numpat, ":2\\r\\n", "{globs}");
    }
}

/// Finding (documented, not fixed): docs/protocol.md said a WebSocket
/// publisher subscribed to the channel gets its own message before the
/// publish's reply; in engine mode the message comes through Redis's
/// pub/sub on another connection than the publish's reply, and 17 to 30
/// of 50 replies came first (a RESP3 client's: 32 of 50). A fix needs a barrier
/// (say, a PING on the node's subscription connection once the publish is
/// answered: its PONG comes after every message Redis queued before it),
/// a round trip more per publish of a subscribed publisher; the docs now
/// say so instead (docs/engine.md, consistency contract).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "engine mode: 17-30 of 50 WebSocket (RESP3: 32 of 50) publish replies come before the publisher's own message"]
async fn ws_own_message_comes_before_the_reply_in_engine_mode() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let tok = token(json!({"sub": "u", "publish": ["own"], "subscribe": ["own"]}));
    let mut ws = ws_connect(h.http, Some(&tok)).await;
    let r = ws_call(&mut ws, 1, json!({"op": "subscribe", "channel": "own"})).await;
    assert!(r.get("error").is_none(), "{r}");
    let mut reply_first = 0;
    for i in 0..50u64 {
        ws_send(
            &mut ws,
            json!({"id": 100 + i, "op": "publish", "channel": "own", "data": i}),
        )
        .await;
        let first = ws_recv(&mut ws).await;
        let second = ws_recv(&mut ws).await;
        if first["id"] == json!(100 + i) {
            reply_first += 1;
            assert_eq!(second["data"], json!(i), "{second}");
        } else {
            assert_eq!(first["data"], json!(i), "{first}");
            assert_eq!(second["id"], json!(100 + i), "{second}");
        }
    }
    // RESP3, one PUBLISH at a time.
    let mut c = Raw::backend(h.resp, "pw");
    c.cmd(&[b"HELLO", b"3"]);
    c.cmd(&[b"SUBSCRIBE", b"own"]);
    let mut resp_first = 0;
    for i in 0..50 {
        c.send(&[b"PUBLISH", b"own", i.to_string().as_bytes()]);
        resp_first += usize::from(c.frame().starts_with(b":"));
        c.frame();
    }
    eprintln!(
        "reply before the own message: WebSocket {reply_first} of 50, RESP3 {resp_first} of 50"
    );
    assert_eq!(reply_first + resp_first, 0);
}

/// Held: RESP connections refused by the global `--max-connections`
/// (full of another address's authenticated connections, none to evict)
/// give their address's count back: with 2 a front end and 2 an address,
/// 3 refused from one address, and once the other's close it gets in.
#[test]
fn connections_refused_by_the_global_cap_give_their_count_back() {
    let h = Herald::start(&[
        "--jwt-hmac-secret",
        SECRET,
        "--max-connections",
        "2",
        "--max-connections-per-client",
        "2",
    ]);
    let tok = token(json!({"sub": "u"}));
    let auth: &[&[u8]] = &[b"AUTH", tok.as_bytes()];
    let held: Vec<Raw> = (0..2)
        .map(|_| {
            let (c, r) = resp_try(&h, [127, 0, 4, 1], auth);
            assert_eq!(r, b"+OK\r\n");
            c
        })
        .collect();
    let other = [127, 0, 4, 2];
    for _ in 0..3 {
        let (_c, r) = resp_try(&h, other, auth);
        assert_eq!(r, REFUSED);
    }
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    let mut admitted = Vec::new();
    while admitted.len() < 2 {
        let (c, r) = resp_try(&h, other, auth);
        if r == b"+OK\r\n" {
            admitted.push(c);
            continue;
        }
        assert_eq!(r, REFUSED);
        assert!(Instant::now() < deadline, "the address's count leaked");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finding: a JWT client pipelining PUBLISHes in engine mode, one of them
/// to a channel its token may not publish to (or past its publish rate),
/// got that one's `-NOPERM` before the replies of the PUBLISHes staged
/// ahead of it (the refusal sent them on as an awaited step, then wrote
/// its error at once): a client reading replies in order took the error
/// for its first PUBLISH. Fixed in `resp/connection` (`run_requests`):
/// the error goes behind the step.
#[test]
fn engine_refused_publish_inside_a_staged_batch_answers_in_place() {
    let redis = Redis::start(&[]);
    let h = node(&redis, "n0", &[]);
    let tok = token(json!({"sub": "u", "publish": ["ok"]}));
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let mut pipe = Vec::new();
    for ch in ["ok", "ok", "no", "ok"] {
        pipe.extend(encode(&[b"PUBLISH", ch.as_bytes(), b"m"]));
    }
    c.send_raw(&pipe);
    let got: Vec<String> = frames(&mut c, 4, TIMEOUT).iter().map(|f| show(f)).collect();
    assert_eq!(got.len(), 4);
    assert_eq!(&got[..2], [":0\\r\\n", ":0\\r\\n"], "{got:?}");
    assert!(got[2].starts_with('-'), "{got:?}");
    assert_eq!(got[3], ":0\\r\\n", "{got:?}");
    // Past the publish rate (100 at once): 96 more pass, then refusals.
    c.send_raw(&publishes("ok", 105));
    let got: Vec<String> = frames(&mut c, 105, TIMEOUT)
        .iter()
        .map(|f| show(f))
        .collect();
    let ok = got.iter().take_while(|r| *r == ":0\\r\\n").count();
    assert!((96..=97).contains(&ok), "{ok}: {:?}", &got[90..]);
    assert!(
        got[ok..].iter().all(|r| r.contains("rate limit")),
        "{:?}",
        &got[ok..]
    );
}
