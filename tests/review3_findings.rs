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
