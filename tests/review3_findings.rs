//! Regression tests for what the third hostile review found (the hub as
//! the one API, issue 13); each failed on the code it was written against,
//! or is ignored with the reason it is not fixed here.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use herald::hub::engine::HistoryOptions;
use herald::hub::presence::{PresenceEntry, PresenceEvent};
use herald::hub::{ChannelRules, Delivery, Hub, HubConfig, Space, Subscriber, Subscription};
use serde_json::json;

const SECRET: &str = "review3-secret";
const ROOMS: &str = "[namespaces.room]\npresence = true\njoin_leave = true\n";

fn token(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": unix_now() + 600}), SECRET)
}

fn start_rooms() -> (Herald, std::path::PathBuf) {
    let (dir, file) = temp_config("review3", ROOMS);
    let h = Herald::start(&[
        "--config",
        &file,
        "--jwt-hmac-secret",
        SECRET,
        "--requirepass",
        "pw",
    ]);
    (h, dir)
}

/// `MULTI`, `SUBSCRIBE room:1`, `UNSUBSCRIBE room:1`, `EXEC`: EXEC defers
/// the subscription's registration until after its reply, but the
/// UNSUBSCRIBE inside it already removed the channel from the connection,
/// so the deferred registration entered a subscription the connection no
/// longer knows of. It was never left: the closed connection stayed a
/// subscriber (PUBSUB NUMSUB 1, messages queued to it), and since the hub
/// now joins presence with the registration, the user stayed in the
/// channel's presence for good (no leave event, `SMEMBERS
/// __presence__:room:1` lists them forever). Any token holder can do it
/// for up to --max-subscriptions channels per connection, again and again.
///
/// Expected, as in Redis: the connection ends unsubscribed, nothing is
/// registered, and it leaves no trace once closed.
#[test]
fn subscribe_then_unsubscribe_inside_exec_leaves_no_ghost() {
    let (h, _dir) = start_rooms();
    let mut admin = Raw::backend(h.resp, "pw");
    let mut alice = Raw::connect(h.resp);
    let tok = token("alice");
    assert_eq!(alice.cmd(&[b"AUTH", b"alice", tok.as_bytes()]), b"+OK\r\n");
    assert_eq!(alice.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(alice.cmd(&[b"SUBSCRIBE", b"room:1"]), b"+QUEUED\r\n");
    assert_eq!(alice.cmd(&[b"UNSUBSCRIBE", b"room:1"]), b"+QUEUED\r\n");
    assert_eq!(
        show(&alice.cmd(&[b"EXEC"])),
        "*2\\r\\n*3\\r\\n$9\\r\\nsubscribe\\r\\n$6\\r\\nroom:1\\r\\n:1\\r\\n\
         *3\\r\\n$11\\r\\nunsubscribe\\r\\n$6\\r\\nroom:1\\r\\n:0\\r\\n"
    );
    // Not subscribed: a publish reaches nobody, and alice gets nothing.
    assert_eq!(admin.cmd(&[b"PUBLISH", b"room:1", b"hi"]), b":0\r\n");
    assert_eq!(alice.try_frame(Duration::from_millis(200)), None);
    assert_eq!(
        admin.cmd(&[b"SMEMBERS", b"__presence__:room:1"]),
        b"*0\r\n",
        "alice is not present"
    );
    // And nothing is left once she is gone.
    drop(alice);
    until(
        || admin.cmd(&[b"PUBSUB", b"NUMSUB", b"room:1"]) == b"*2\r\n$6\r\nroom:1\r\n:0\r\n",
        "no subscriber of room:1",
    );
    assert_eq!(admin.cmd(&[b"SMEMBERS", b"__presence__:room:1"]), b"*0\r\n");
}

/// The same through the other ways a connection drops what EXEC is about
/// to register: `UNSUBSCRIBE` with no channel, and patterns.
#[test]
fn unsubscribe_all_and_patterns_inside_exec_leave_no_ghost() {
    let h = Herald::start(&[]);
    let mut admin = Raw::connect(h.resp);
    let mut c = Raw::connect(h.resp);
    c.cmd(&[b"MULTI"]);
    // One reply per command: EXEC's array counts commands, and a
    // SUBSCRIBE of two channels would add two replies to it.
    c.cmd(&[b"SUBSCRIBE", b"a"]);
    c.cmd(&[b"PSUBSCRIBE", b"p*"]);
    c.cmd(&[b"UNSUBSCRIBE"]);
    c.cmd(&[b"PUNSUBSCRIBE", b"p*"]);
    let exec = c.cmd(&[b"EXEC"]);
    assert_eq!(
        show(&exec),
        "*4\\r\\n*3\\r\\n$9\\r\\nsubscribe\\r\\n$1\\r\\na\\r\\n:1\\r\\n\
         *3\\r\\n$10\\r\\npsubscribe\\r\\n$2\\r\\np*\\r\\n:2\\r\\n\
         *3\\r\\n$11\\r\\nunsubscribe\\r\\n$1\\r\\na\\r\\n:1\\r\\n\
         *3\\r\\n$12\\r\\npunsubscribe\\r\\n$2\\r\\np*\\r\\n:0\\r\\n"
    );
    assert_eq!(admin.cmd(&[b"PUBLISH", b"a", b"x"]), b":0\r\n");
    assert_eq!(admin.cmd(&[b"PUBLISH", b"pq", b"x"]), b":0\r\n");
    assert_eq!(admin.cmd(&[b"PUBSUB", b"NUMPAT"]), b":0\r\n");
    // A channel subscribed again after leaving it inside the same EXEC is
    // registered once, and left once.
    c.cmd(&[b"MULTI"]);
    c.cmd(&[b"SUBSCRIBE", b"a"]);
    c.cmd(&[b"UNSUBSCRIBE", b"a"]);
    c.cmd(&[b"SUBSCRIBE", b"a"]);
    assert!(show(&c.cmd(&[b"EXEC"])).starts_with("*3\\r\\n"));
    assert_eq!(admin.cmd(&[b"PUBLISH", b"a", b"x"]), b":1\r\n");
    drop(c);
    until(
        || admin.cmd(&[b"PUBLISH", b"a", b"x"]) == b":0\r\n",
        "the subscriber gone",
    );
}

/// Waits (up to `TIMEOUT`) for the server to notice a closed connection.
fn until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inside EXEC, Redis runs every queued command: the RESP2 "subscribed
/// context" is checked when a command arrives, not when EXEC runs it.
/// Herald refused the commands queued after a SUBSCRIBE with `-ERR Can't
/// execute 'sadd': only (P|S)SUBSCRIBE / ... are allowed in this context`.
#[test]
fn commands_after_subscribe_inside_exec_run_as_in_redis() {
    let redis = Redis::start(&[]);
    let h = Herald::start(&[]);
    let script: &[&[&[u8]]] = &[
        &[b"DEL", b"s"],
        &[b"MULTI"],
        &[b"SUBSCRIBE", b"c"],
        &[b"SADD", b"s", b"v"],
        &[b"SCARD", b"s"],
        &[b"PING"],
        &[b"EXEC"],
        // Subscribed now: refused, in both.
        &[b"SCARD", b"s"],
    ];
    let run = |addr| {
        let mut c = Raw::connect(addr);
        script.iter().map(|a| show(&c.cmd(a))).collect::<Vec<_>>()
    };
    assert_eq!(run(h.resp), run(redis.addr));
}

// ---- the hub itself ------------------------------------------------------

#[derive(Default)]
struct Recorder {
    payloads: Mutex<Vec<Bytes>>,
    events: AtomicUsize,
}

impl Subscriber for Recorder {
    fn deliver(&self, d: &Delivery<'_>) {
        self.payloads
            .lock()
            .unwrap()
            .push(d.publication.payload.clone());
    }

    fn presence(&self, _: &[u8], _: &PresenceEvent) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}

impl herald::hub::leaderboard::LeaderboardSink for Recorder {
    fn leaderboard(
        &self,
        _: &[u8],
        _: &[herald::hub::leaderboard::Entry],
        _: herald::hub::leaderboard::Own,
    ) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `hist:` keeps history and presence with join/leave, `room:` presence
/// with join/leave, and the presence events' own channels
/// (`__presence__:…`) keep history too: every presence event is then a
/// history append, under the gate and the keyspace lock.
fn stress_hub() -> Arc<Hub> {
    let history = Some(HistoryOptions {
        size: 50,
        ttl_ms: 0,
    });
    Arc::new(Hub::with_config(HubConfig {
        history_max_memory: 1 << 20,
        output_buffer_global_limit: 512 << 20,
        output_buffer_client_limit: 0,
        max_untrusted_patterns: 1000,
        client_addresses: 0,
        rules: Arc::new(move |ch: &[u8]| {
            let ns = ch.split(|c| *c == b':').next().unwrap_or(b"");
            match ns {
                b"hist" => ChannelRules {
                    history,
                    presence: true,
                    join_leave: true,
                },
                b"room" => ChannelRules {
                    history: None,
                    presence: true,
                    join_leave: true,
                },
                b"__presence__" => ChannelRules {
                    history,
                    ..Default::default()
                },
                _ => ChannelRules::default(),
            }
        }),
    }))
}

fn entry(client: u64, user: &str) -> PresenceEntry {
    PresenceEntry {
        client,
        user: user.into(),
        info: None,
        joined: 0,
    }
}

/// Every path that takes several of the hub's locks, at once, on threads
/// that share channels (and so stripes): a SUBSCRIBE inside EXEC whose
/// presence event appends to history, a WebSocket-style history subscribe
/// registering under the keyspace lock, history publishes, replay steps,
/// presence views read under the keyspace lock (EXISTS), sorted-set
/// writers against the leaderboard tick and its watchers, leaving. The
/// lock order in ARCHITECTURE.md says none of them can wait on another in
/// a cycle; this holds them to it (a deadlock fails the watchdog).
#[test]
fn the_hubs_lock_paths_do_not_deadlock_under_contention() {
    let hub = stress_hub();
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicUsize>> = Arc::new((0..6).map(|_| AtomicUsize::new(0)).collect());
    let mut threads = Vec::new();
    let spawn = |i: usize, f: Box<dyn Fn(u64) + Send>| {
        let (stop, progress) = (stop.clone(), progress.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f(n);
                n += 1;
                progress[i].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // EXEC with SUBSCRIBEs and UNSUBSCRIBEs inside (presence events publish
    // on __presence__:…, which keeps history).
    let h = hub.clone();
    threads.push(spawn(
        0,
        Box::new(move |n| {
            let sink = Arc::new(Recorder::default());
            h.exclusive(|| {
                for ch in ["room:1", "hist:1"] {
                    h.subscribe(Subscription {
                        space: Space::Global,
                        channel: b(ch),
                        client: 1_000_000 + n,
                        sink: sink.clone(),
                        presence: Some(entry(1_000_000 + n, "exec")),
                    })
                    .unwrap();
                    let _ = h.sadd(&b("set"), &[b("m")]);
                }
            });
            h.leave_all(1_000_000 + n, [&b"room:1"[..], b"hist:1"], [], [], []);
        }),
    ));
    // A WebSocket history subscribe: position and registration under the
    // keyspace lock, presence after; then a replay to the end.
    let h = hub.clone();
    threads.push(spawn(
        1,
        Box::new(move |n| {
            let client = 2_000_000 + n;
            let sink = Arc::new(Recorder::default());
            let at = h
                .with_history_position(b"hist:1", None, 100, |at| {
                    h.subscribe(Subscription {
                        space: Space::Global,
                        channel: b("hist:1"),
                        client,
                        sink: sink.clone(),
                        presence: None,
                    })
                    .unwrap();
                    at
                })
                .unwrap();
            h.presence_join(&b("hist:1"), entry(client, "ws"));
            let after = at.top.saturating_sub(3);
            let _ = h.history_chunk(b"hist:1", after, at.epoch, 10, 1 << 20, |_| {
                let _ = h.numsub(Space::Global, b"hist:1");
            });
            h.leave_all(client, [&b"hist:1"[..]], [], [], []);
        }),
    ));
    // Publishers: history channels, presence channels, plain ones.
    let h = hub.clone();
    threads.push(spawn(
        2,
        Box::new(move |n| {
            h.publish(b("hist:1"), Bytes::from(n.to_string())).unwrap();
            h.publish(b("room:1"), b("x")).unwrap();
            h.publish(b("__presence__:room:1"), b("forged")).unwrap();
        }),
    ));
    // Presence views read under the keyspace lock; set writes.
    let h = hub.clone();
    threads.push(spawn(
        3,
        Box::new(move |_| {
            let _ = h.exists(&[b("__presence__:room:1"), b("__presence__:hist:1")]);
            let _ = h.key_type(b"__presence__:hist:1");
            let _ = h.smembers(b"__presence__:room:1");
            let _ = h.del(&[b("__presence__:hist:1")]);
        }),
    ));
    // Sorted-set writers and leaderboard watchers…
    let h = hub.clone();
    threads.push(spawn(
        4,
        Box::new(move |n| {
            let _ = h.zadd(
                b"board",
                Default::default(),
                vec![(Bytes::from(format!("m{}", n % 50)), n as f64)],
            );
            let sink = Arc::new(Recorder::default());
            h.leaderboard_watch(
                b("board"),
                3_000_000 + n,
                sink,
                5,
                Some("m1".into()),
                vec![],
            );
            h.leaderboard_unwatch(b"board", 3_000_000 + n - n.min(3));
        }),
    ));
    // …against the tick (which publishes on __leaderboard__:board).
    let h = hub.clone();
    let listener = Arc::new(Recorder::default());
    hub.subscribe(Subscription {
        space: Space::Global,
        channel: b("__leaderboard__:board"),
        client: 9,
        sink: listener,
        presence: None,
    })
    .unwrap();
    threads.push(spawn(5, Box::new(move |_| h.leaderboard_tick(3))));

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last: Vec<usize> = vec![0; 6];
    let mut stalled_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        if now.iter().zip(&last).any(|(a, b)| a != b) {
            stalled_since = Instant::now();
        }
        assert!(
            stalled_since.elapsed() < Duration::from_secs(2),
            "no thread progressed for 2 s (deadlock?): {now:?}"
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a thread panicked");
    }
    assert!(last.iter().all(|n| *n > 0), "every path ran: {last:?}");
}

/// The engine contract (`hub::engine` module doc) says "two publishes to
/// one channel reach every subscriber on every node in one order". The
/// memory engine keeps that only where the channel has history (appends
/// and deliveries are serialized by the keyspace lock). On a channel
/// without history, concurrent publishers deliver to each subscriber in
/// turn, under a shared read guard, so two subscribers can see two
/// publishers' messages interleaved differently. (Redis, single-threaded,
/// gives every subscriber one order.) One publisher's order is kept.
#[test]
#[ignore = "by design: a total order across publishers would serialize every publish of a channel; \
            the contract is corrected to promise it only for channels with history"]
fn plain_channels_have_no_order_across_publishers() {
    let hub = Arc::new(Hub::default());
    let subs: Vec<Arc<Recorder>> = (0..8).map(|_| Arc::new(Recorder::default())).collect();
    for (i, s) in subs.iter().enumerate() {
        hub.subscribe(Subscription {
            space: Space::Global,
            channel: b("plain"),
            client: i as u64 + 1,
            sink: s.clone(),
            presence: None,
        })
        .unwrap();
    }
    std::thread::scope(|sc| {
        for p in 0..2 {
            let hub = &hub;
            sc.spawn(move || {
                for i in 0..20_000 {
                    hub.publish(b("plain"), Bytes::from(format!("{p}:{i}")))
                        .unwrap();
                }
            });
        }
    });
    let first = subs[0].payloads.lock().unwrap().clone();
    for s in &subs[1..] {
        assert_eq!(*s.payloads.lock().unwrap(), first, "one order for all");
    }
}

// ---- front ends over an engine that refuses --------------------------------

use herald::hub::engine::{
    Broker, BrokerHandler, Engine, EngineError, Interest, Pending, PresenceStore, Published,
};
use herald::hub::Publication;

/// The memory engine's broker, refusing everything while `refuse` is set
/// (a networked engine whose backend is down).
struct Refusing {
    inner: Arc<dyn Broker>,
    refuse: Arc<AtomicBool>,
}

impl Refusing {
    fn no<T>(&self) -> Option<Pending<'_, Result<T, EngineError>>> {
        self.refuse
            .load(Ordering::SeqCst)
            .then(|| Pending::ready(Err(EngineError::Unavailable("backend down".into()))))
    }
}

impl Broker for Refusing {
    fn start(&self, handler: Arc<dyn BrokerHandler>) {
        self.inner.start(handler)
    }
    fn publish(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Pending<'_, Result<Published, EngineError>> {
        self.no()
            .unwrap_or_else(|| self.inner.publish(channel, payload, history))
    }
    fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Pending<'_, Result<Vec<usize>, EngineError>> {
        self.no()
            .unwrap_or_else(|| self.inner.publish_batch(channel, payloads))
    }
    fn spublish(&self, channel: Bytes, payload: Bytes) -> Pending<'_, Result<usize, EngineError>> {
        self.no()
            .unwrap_or_else(|| self.inner.spublish(channel, payload))
    }
    fn deliver_appended(&self, p: Publication) -> Pending<'_, Result<usize, EngineError>> {
        self.no().unwrap_or_else(|| self.inner.deliver_appended(p))
    }
    fn publish_presence(
        &self,
        channel: Bytes,
        event: PresenceEvent,
    ) -> Pending<'_, Result<(), EngineError>> {
        self.no()
            .unwrap_or_else(|| self.inner.publish_presence(channel, event))
    }
    fn subscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        self.no().unwrap_or_else(|| self.inner.subscribed(interest))
    }
    fn unsubscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        self.inner.unsubscribed(interest)
    }
}

/// RESP and HTTP listeners around a hub built on `engine`, in this
/// process (the server's own `start` always builds the memory engine).
async fn serve_on(
    config: &str,
    engine: impl FnOnce(Arc<herald::hub::Keyspace>, usize) -> Engine,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
) {
    use herald::config::{Config, Options};
    let (_dir, file) = temp_config("review3-engine", config);
    let opts = <Options as clap::Parser>::parse_from(["herald", "--config", &file]);
    let cfg = Config::from_options(opts).unwrap();
    let auth = herald::auth::Authenticator::from_config(&cfg).unwrap();
    let cfg = Arc::new(cfg);
    let max = cfg.history_max_memory;
    let hub = Arc::new(Hub::with_engine(cfg.hub_config(), |ks| engine(ks, max)));
    let metrics = Arc::new(herald::metrics::Metrics::new(&hub));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let resp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (resp_addr, http_addr) = (resp.local_addr().unwrap(), http.local_addr().unwrap());
    let resp_server = herald::resp::RespServer::new(
        hub.clone(),
        cfg.clone(),
        auth.clone(),
        metrics.clone(),
        resp_addr,
    );
    let state = herald::http::AppState {
        hub,
        cfg: cfg.clone(),
        auth,
        ws: herald::ws::WsServer::new(
            &cfg,
            shutdown.clone(),
            Arc::new(herald::proxy::Proxy::new(&cfg, metrics.proxy().clone())),
        ),
        resp: resp_server.clone(),
        metrics,
    };
    tokio::spawn(herald::resp::run(resp, resp_server, shutdown.clone()));
    tokio::spawn(herald::http::run(http, state, shutdown.clone()));
    (resp_addr, http_addr, shutdown)
}

fn refusing(refuse: Arc<AtomicBool>) -> impl FnOnce(Arc<herald::hub::Keyspace>, usize) -> Engine {
    move |ks, max| {
        let mem = herald::hub::engine::memory::engine(ks, max);
        Engine {
            broker: Arc::new(Refusing {
                inner: mem.broker.clone(),
                refuse,
            }),
            ..mem
        }
    }
}

const HIST: &str = "[namespaces.hist]\nhistory_size = 10\nallow_publish = true\n";

/// Every frame the socket sends within `wait`.
async fn frames_for(ws: &mut Ws, wait: Duration) -> Vec<serde_json::Value> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

/// An engine refusal reaches RESP and HTTP clients as an error and
/// nothing is published or registered (protocol.md: "nothing was
/// published or registered").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_refusals_reach_resp_and_http_clients_as_errors() {
    let refuse = Arc::new(AtomicBool::new(true));
    let (resp, http, stop) = serve_on(HIST, refusing(refuse.clone())).await;
    let (r, h) = tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(resp);
        let publish = show(&c.cmd(&[b"PUBLISH", b"x", b"y"]));
        let hist = show(&c.cmd(&[b"PUBLISH", b"hist:1", b"y"]));
        let xlen = show(&c.cmd(&[b"XLEN", b"hist:1"]));
        let mut h = std::net::TcpStream::connect(http).unwrap();
        use std::io::{Read, Write};
        let body = r#"{"channel":"hist:1","data":1}"#;
        write!(
            h,
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        h.read_to_string(&mut resp).unwrap();
        ((publish, hist, xlen), resp)
    })
    .await
    .unwrap();
    assert_eq!(r.0, "-ERR engine unavailable: backend down\\r\\n");
    assert_eq!(r.1, "-ERR engine unavailable: backend down\\r\\n");
    assert_eq!(r.2, ":0\\r\\n", "nothing appended");
    assert!(h.starts_with("HTTP/1.1 503"), "{h}");
    assert!(h.contains(r#""code":500"#), "{h}");
    stop.cancel();
}

/// A WebSocket `subscribe` the engine refuses gets a success reply and
/// then, with the same id, error 500: two answers to one command, the
/// first one false. On a history channel the success reply (with its
/// offset and epoch) is queued inside the position callback before the
/// registration is tried; on other channels it is queued first so that it
/// precedes the first message, and the registration can only fail after.
///
/// Expected (protocol.md: "a subscribe … refused by the engine: nothing
/// was … registered", and one reply per id): only the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscribe_the_engine_refuses_gets_one_reply() {
    let refuse = Arc::new(AtomicBool::new(true));
    let (_resp, http, stop) = serve_on(HIST, refusing(refuse)).await;
    let mut ws = ws_connect(http, None).await;
    for (id, channel) in [(1, "hist:1"), (2, "plain")] {
        ws_send(
            &mut ws,
            json!({"id": id, "op": "subscribe", "channel": channel}),
        )
        .await;
        let replies: Vec<_> = frames_for(&mut ws, Duration::from_millis(300))
            .await
            .into_iter()
            .filter(|f| f["id"] == json!(id))
            .collect();
        assert_eq!(replies.len(), 1, "{channel}: {replies:?}");
        assert_eq!(replies[0]["error"]["code"], 500, "{channel}: {replies:?}");
    }
    stop.cancel();
}

/// The hub says every publish path goes through the engine, and the
/// contract that the broker owns offsets and epochs. An XADD to a channel
/// with history does not: `Hub::after_xadd` trims and accounts it with the
/// memory engine's own `MemoryHistory::after_append` on the node's
/// keyspace, whatever the engine, and delivers it with the offset and
/// epoch of the node's local stream. On any engine whose history is not
/// the node's keyspace (here: the memory engine over a keyspace of its
/// own, as a shared store would be), subscribers get offset 1 twice and
/// the engine's history never has the entry. Under two epochs a WebSocket
/// subscriber is disconnected (3004); under one (here both keyspaces drew
/// the same epoch, see `two_keyspaces_draw_different_epochs`) the sink
/// drops the XADD's entry as already queued (`offset <= last`), silently.
#[test]
#[ignore = "not fixed here: XADD to a history channel must append through HistoryStore (with its \
            fields) and deliver what the engine returns; a seam change, not a small fix"]
fn xadd_to_a_history_channel_goes_through_the_engine() {
    let external = Arc::new(herald::hub::Keyspace::default());
    let hub = Hub::with_engine(stress_hub_config(), |_node_keyspace| {
        herald::hub::engine::memory::engine(external, 1 << 20)
    });
    let r = Arc::new(OffsetRecorder::default());
    hub.subscribe(Subscription {
        space: Space::Global,
        channel: b("hist:x"),
        client: 1,
        sink: r.clone(),
        presence: None,
    })
    .unwrap();
    let first = hub.publish(b("hist:x"), b("published")).unwrap();
    let add = herald::hub::data::XAdd {
        id: herald::hub::NewId::Auto,
        trim: None,
        nomkstream: false,
    };
    hub.xadd(&b("hist:x"), &add, vec![(b("data"), b("added"))])
        .unwrap();
    let seen = r.0.lock().unwrap().clone();
    let epoch = first.position.unwrap().epoch;
    assert_eq!(
        seen,
        vec![(1, epoch), (2, epoch)],
        "one sequence, one epoch"
    );
    let page = hub.history(b"hist:x", None, usize::MAX, false).unwrap();
    assert_eq!(page.entries.len(), 2, "the engine's history has both");
}

#[derive(Default)]
struct OffsetRecorder(Mutex<Vec<(u64, u64)>>);

impl Subscriber for OffsetRecorder {
    fn deliver(&self, d: &Delivery<'_>) {
        let p = d.publication;
        if let (Some(o), Some(e)) = (p.offset, p.epoch) {
            self.0.lock().unwrap().push((o, e));
        }
    }
}

fn stress_hub_config() -> HubConfig {
    HubConfig {
        history_max_memory: 1 << 20,
        output_buffer_global_limit: 512 << 20,
        output_buffer_client_limit: 0,
        max_untrusted_patterns: 1000,
        client_addresses: 0,
        rules: Arc::new(|ch: &[u8]| ChannelRules {
            history: ch.starts_with(b"hist:").then_some(HistoryOptions {
                size: 50,
                ttl_ms: 0,
            }),
            presence: ch.starts_with(b"hist:") || ch.starts_with(b"room:"),
            join_leave: true,
        }),
    }
}

/// The presence contract: "Entries of a node that stops refreshing go
/// after a store-defined time", and `PresenceStore::refresh` says "the
/// hub calls it periodically". Nothing called it: neither the hub nor the
/// server's ticks. A networked presence store relying on it would drop
/// every live client of the node. Now the store names its cadence
/// (`refresh_every`) and `Hub::presence_refreshes` (run by the server)
/// keeps to it.
#[test]
fn the_hub_refreshes_presence() {
    #[derive(Default)]
    struct Counting {
        inner: herald::hub::presence::Presence,
        refreshed: AtomicUsize,
    }
    impl PresenceStore for Counting {
        fn join(
            &self,
            channel: &Bytes,
            entry: PresenceEntry,
        ) -> Pending<'_, Result<bool, EngineError>> {
            PresenceStore::join(&self.inner, channel, entry)
        }
        fn leave(
            &self,
            channel: &[u8],
            client: u64,
        ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>> {
            PresenceStore::leave(&self.inner, channel, client)
        }
        fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>> {
            PresenceStore::clients(&self.inner, channel)
        }
        fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>> {
            PresenceStore::users(&self.inner, channel)
        }
        fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>> {
            PresenceStore::stats(&self.inner, channel)
        }
        fn refresh(&self) -> Pending<'_, Result<(), EngineError>> {
            self.refreshed.fetch_add(1, Ordering::SeqCst);
            Pending::ready(Ok(()))
        }
        fn refresh_every(&self) -> Option<Duration> {
            Some(Duration::from_millis(10))
        }
    }
    let store = Arc::new(Counting::default());
    let s = store.clone();
    let hub = Hub::with_engine(stress_hub_config(), move |ks| Engine {
        presence: s,
        ..herald::hub::engine::memory::engine(ks, 1 << 20)
    });
    hub.subscribe(Subscription {
        space: Space::Global,
        channel: b("room:1"),
        client: 1,
        sink: Arc::new(Recorder::default()),
        presence: Some(entry(1, "ann")),
    })
    .unwrap();
    // What the server runs, for half a second.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async {
            hub.presence_refreshes(tokio::time::sleep(Duration::from_millis(500)))
                .await
        });
    let n = store.refreshed.load(Ordering::SeqCst);
    assert!(
        (10..=60).contains(&n),
        "refreshed {n} times in 500 ms at 10 ms"
    );
}

/// Epochs are "a per-stream random number" (ARCHITECTURE.md), so a
/// position from one history never passes for another. They were drawn
/// from a seed hashed with fixed keys from the time in milliseconds and the
/// process id: predictable, and the same for every keyspace made in one
/// millisecond of one process (two hubs, or a hub and an engine's store,
/// as the engine seam now allows) — their streams then share epochs.
#[test]
fn two_keyspaces_draw_different_epochs() {
    for _ in 0..100 {
        let a = herald::hub::Keyspace::default();
        let b = herald::hub::Keyspace::default();
        let (ea, eb) = (a.lock().new_epoch(), b.lock().new_epoch());
        assert_ne!(ea, eb);
    }
}

/// Engine calls may do I/O, so the hub makes none while it holds the
/// node's keyspace lock (every keyspace command of every client waits on
/// it). `EXISTS __presence__:C` asked the engine's presence store with the
/// lock held.
#[test]
fn exists_reads_presence_outside_the_keyspace_lock() {
    struct Probe {
        inner: herald::hub::presence::Presence,
        keyspace: Arc<herald::hub::Keyspace>,
        under_lock: AtomicUsize,
    }
    impl Probe {
        /// Whether another thread can take the keyspace lock now.
        fn check(&self) {
            let ks = self.keyspace.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(ks.lock());
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_millis(500)).is_err() {
                self.under_lock.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    impl PresenceStore for Probe {
        fn join(
            &self,
            channel: &Bytes,
            entry: PresenceEntry,
        ) -> Pending<'_, Result<bool, EngineError>> {
            PresenceStore::join(&self.inner, channel, entry)
        }
        fn leave(
            &self,
            channel: &[u8],
            client: u64,
        ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>> {
            PresenceStore::leave(&self.inner, channel, client)
        }
        fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>> {
            self.check();
            PresenceStore::clients(&self.inner, channel)
        }
        fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>> {
            self.check();
            PresenceStore::users(&self.inner, channel)
        }
        fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>> {
            self.check();
            PresenceStore::stats(&self.inner, channel)
        }
    }
    let probe: Arc<std::sync::OnceLock<Arc<Probe>>> = Default::default();
    let p = probe.clone();
    let hub = Hub::with_engine(stress_hub_config(), move |ks| {
        let store = Arc::new(Probe {
            inner: Default::default(),
            keyspace: ks.clone(),
            under_lock: AtomicUsize::new(0),
        });
        let _ = p.set(store.clone());
        Engine {
            presence: store,
            ..herald::hub::engine::memory::engine(ks, 1 << 20)
        }
    });
    hub.presence_join(&b("room:1"), entry(1, "ann"));
    let key = b("__presence__:room:1");
    assert_eq!(hub.exists(&[key.clone(), b("nope")]), 1);
    assert_eq!(hub.key_type(&key), "set");
    assert_eq!(hub.scard(&key), Ok(1));
    let probe = probe.get().unwrap();
    assert_eq!(probe.under_lock.load(Ordering::SeqCst), 0);
}

/// In Redis a SUBSCRIBE inside EXEC is in force for the transaction's
/// next commands: `MULTI`, `SUBSCRIBE c`, `PUBLISH c hi`, `EXEC` from a
/// RESP3 client answers the PUBLISH with 1 and pushes the message (inside
/// EXEC's array). Herald registers EXEC's subscriptions after its reply,
/// so the PUBLISH reaches nobody (0) and the message is never seen.
#[test]
#[ignore = "deliberate (since before this refactor): registering after EXEC's reply keeps pushes \
            out of its array; matching Redis would put them inside it"]
fn a_subscribe_inside_exec_is_in_force_for_the_rest_of_it() {
    let redis = Redis::start(&[]);
    let h = Herald::start(&[]);
    let run = |addr| {
        let mut c = Raw::connect(addr);
        c.cmd(&[b"HELLO", b"3"]);
        c.cmd(&[b"MULTI"]);
        c.cmd(&[b"SUBSCRIBE", b"c"]);
        c.cmd(&[b"PUBLISH", b"c", b"hi"]);
        c.send(&[b"EXEC"]);
        let mut out = show(&c.frame());
        while let Some(f) = c.try_frame(Duration::from_millis(300)) {
            out.push_str(&show(&f));
        }
        out
    };
    assert_eq!(run(h.resp), run(redis.addr));
}
