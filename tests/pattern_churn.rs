//! Pattern and channel churn against the registry, and adversarial glob
//! matching: the work one client can cause must stay proportional to what it
//! sent, and must not make later publishes slower once it has left.
//!
//! These drive `Registry` and `Glob` directly (no sockets), so they time the
//! hub's own work. Each test prints its timings (run with `--nocapture`, in
//! release to measure); the bounds asserted are generous, for the debug
//! build on a busy 2-core machine, and only catch a return of quadratic
//! work (the old code needed minutes here in a debug build).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald::hub::glob::Glob;
use herald::hub::{Delivery, Publication, Registry, Space, Subscriber};

#[derive(Default)]
struct Counter(AtomicUsize);

impl Subscriber for Counter {
    fn deliver(&self, _d: &Delivery<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const N: usize = 100_000;

fn publ(ch: &[u8]) -> Publication {
    Publication::new(Bytes::copy_from_slice(ch), Bytes::from_static(b"x"))
}

/// Mean time of one publish on `channel`, over `rounds` publishes.
fn publish_cost(r: &Registry, channel: &[u8], rounds: u32) -> Duration {
    let p = publ(channel);
    let t = Instant::now();
    for _ in 0..rounds {
        r.publish(&p);
    }
    t.elapsed() / rounds
}

fn check(what: &str, took: Duration, bound: Duration) {
    eprintln!("{what}: {took:?}");
    assert!(took < bound, "{what} took {took:?} (bound {bound:?})");
}

/// 100k patterns of one client in one trie node (they share their literal
/// prefix), then the client leaves: both ways must be linear, and the trie
/// must be empty afterwards so publishes cost what they did before.
#[test]
fn hundred_thousand_patterns_in_one_node() {
    let r = Registry::new();
    let sink = Arc::new(Counter::default());
    let other = Arc::new(Counter::default());
    r.subscribe(
        Space::Global,
        Bytes::from_static(b"room:1"),
        2,
        other.clone(),
    );
    let baseline = publish_cost(&r, b"room:1", 1000);
    eprintln!("publish cost, baseline: {baseline:?}");

    let patterns: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("room:*{i}"))).collect();
    let t = Instant::now();
    for p in &patterns {
        assert!(r.psubscribe(p.clone(), 1, sink.clone()));
    }
    check(
        "psubscribe 100k patterns",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.numpat(), N);
    eprintln!(
        "publish cost with 100k patterns tried: {:?}",
        publish_cost(&r, b"room:1", 3)
    );

    let t = Instant::now();
    for p in &patterns {
        assert!(r.punsubscribe(p, 1));
    }
    check(
        "punsubscribe 100k patterns",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.numpat(), 0);
    assert!(r.patterns().is_empty());

    let after = publish_cost(&r, b"room:1", 1000);
    eprintln!("publish cost after churn: {after:?}");
    // Dead nodes would make every later publish walk them.
    assert!(
        after < baseline * 20 + Duration::from_micros(50),
        "publish after churn {after:?}, baseline {baseline:?}"
    );
}

/// Patterns spread over many trie nodes (distinct prefixes), removed in the
/// order a connection's hash set yields them: the trie is pruned back to
/// nothing.
#[test]
fn hundred_thousand_prefixes_are_pruned() {
    let r = Registry::new();
    let sink = Arc::new(Counter::default());
    let patterns: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("{i}:*"))).collect();
    let t = Instant::now();
    for p in &patterns {
        r.psubscribe(p.clone(), 1, sink.clone());
    }
    check(
        "psubscribe 100k prefixes",
        t.elapsed(),
        Duration::from_secs(20),
    );
    let t = Instant::now();
    for p in patterns.iter().rev() {
        assert!(r.punsubscribe(p, 1));
    }
    check(
        "punsubscribe 100k prefixes",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.numpat(), 0);
    assert!(r.patterns().is_empty());
    r.psubscribe(Bytes::from_static(b"12345:*"), 2, sink.clone());
    assert_eq!(r.publish(&publ(b"12345:x")), 1);
}

/// One pattern with 100k subscribers (say, every app server on
/// `invalidate:*`), all leaving: each departure costs O(1), not a scan.
#[test]
fn hundred_thousand_subscribers_of_one_pattern_leave() {
    let r = Registry::new();
    let sink = Arc::new(Counter::default());
    let t = Instant::now();
    for id in 0..N as u64 {
        assert!(r.psubscribe(Bytes::from_static(b"invalidate:*"), id, sink.clone()));
    }
    check(
        "100k clients psubscribe one pattern",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.publish(&publ(b"invalidate:k")), N);
    let t = Instant::now();
    for id in 0..N as u64 {
        assert!(r.punsubscribe(b"invalidate:*", id));
    }
    check(
        "100k clients punsubscribe one pattern",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.numpat(), 0);
}

/// The same for exact channels: 100k channels of one client, then 100k
/// clients of one channel.
#[test]
fn hundred_thousand_channels_churn() {
    let r = Registry::new();
    let sink = Arc::new(Counter::default());
    r.subscribe(
        Space::Global,
        Bytes::from_static(b"room:1"),
        2,
        sink.clone(),
    );
    let baseline = publish_cost(&r, b"room:1", 1000);
    eprintln!("publish cost, baseline: {baseline:?}");
    let names: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("ch:{i}"))).collect();
    let t = Instant::now();
    for c in &names {
        r.subscribe(Space::Global, c.clone(), 1, sink.clone());
    }
    check(
        "subscribe 100k channels",
        t.elapsed(),
        Duration::from_secs(20),
    );
    let t = Instant::now();
    for c in &names {
        assert!(r.unsubscribe(Space::Global, c, 1));
    }
    check(
        "unsubscribe 100k channels",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.channel_count(), 1);
    eprintln!(
        "publish cost after channel churn: {:?}",
        publish_cost(&r, b"room:1", 1000)
    );
    assert!(r.unsubscribe(Space::Global, b"room:1", 2));

    let t = Instant::now();
    for id in 0..N as u64 {
        r.subscribe(Space::Global, Bytes::from_static(b"news"), id, sink.clone());
    }
    check(
        "100k clients subscribe one channel",
        t.elapsed(),
        Duration::from_secs(20),
    );
    let t = Instant::now();
    for id in 0..N as u64 {
        assert!(r.unsubscribe(Space::Global, b"news", id));
    }
    check(
        "100k clients unsubscribe one channel",
        t.elapsed(),
        Duration::from_secs(20),
    );
    assert_eq!(r.channel_count(), 0);
}

/// A publisher running beside a client that leaves 100k patterns: no single
/// publish waits long for the pattern lock.
#[test]
fn leaving_does_not_stall_publishers() {
    let r = Arc::new(Registry::new());
    let sink = Arc::new(Counter::default());
    let patterns: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("room:*{i}"))).collect();
    for p in &patterns {
        r.psubscribe(p.clone(), 1, sink.clone());
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (r, done) = (r.clone(), done.clone());
        std::thread::spawn(move || {
            let p = publ(b"other:1");
            let mut worst = Duration::ZERO;
            let mut n = 0u32;
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                r.publish(&p);
                worst = worst.max(t.elapsed());
                n += 1;
                std::thread::yield_now();
            }
            (worst, n)
        })
    };
    let t = Instant::now();
    for p in &patterns {
        r.punsubscribe(p, 1);
    }
    let leave = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let (worst, n) = publisher.join().expect("publisher");
    eprintln!("leave-all of 100k patterns: {leave:?}; meanwhile {n} publishes, worst {worst:?}");
    check(
        "leave-all beside a publisher",
        leave,
        Duration::from_secs(20),
    );
    assert!(worst < Duration::from_secs(1), "a publish waited {worst:?}");
}

/// `*` + 32 KiB + `b` against a 64 KiB channel: the old matcher tried every
/// start position (0.83 s of CPU per publish in release).
#[test]
fn long_star_pattern_against_long_channel() {
    let mut pat = vec![b'*'];
    pat.extend(std::iter::repeat_n(b'a', 32 << 10));
    pat.push(b'b');
    let g = Glob::new(&pat);
    let channel = vec![b'a'; 64 << 10];
    let t = Instant::now();
    assert!(!g.matches(&channel));
    check("*a{32k}b vs a{64k}", t.elapsed(), Duration::from_secs(2));

    // Through the registry, as a password client would subscribe it.
    let r = Registry::new();
    let sink = Arc::new(Counter::default());
    r.psubscribe(Bytes::from(pat), 1, sink.clone());
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(r.publish(&publ(&channel)), 0);
    }
    check(
        "10 publishes on a{64k} with *a{32k}b subscribed",
        t.elapsed(),
        Duration::from_secs(5),
    );
}

/// Adversarial shapes beyond plain stars: `?` and classes inside long
/// segments, many short segments, a suffix that almost matches everywhere.
#[test]
fn adversarial_shapes_stay_bounded() {
    let channel = vec![b'a'; 64 << 10];
    let mut long_q = vec![b'*'];
    long_q.extend(std::iter::repeat_n(b'a', 16 << 10));
    long_q.push(b'?');
    long_q.extend(std::iter::repeat_n(b'a', 16 << 10));
    long_q.push(b'b');
    let mut long_class = vec![b'*'];
    for _ in 0..(8 << 10) {
        long_class.extend_from_slice(b"[ab]");
    }
    long_class.extend_from_slice(b"c*");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("*a{16k}?a{16k}b", long_q),
        ("*[ab]{8k}c*", long_class),
        ("(*a?)x900 b*", {
            let mut p = b"*a?".repeat(900);
            p.extend_from_slice(b"b*");
            p
        }),
        ("*a*a*...*b* (1000 stars)", {
            let mut p = b"*a".repeat(999);
            p.extend_from_slice(b"*b*");
            p
        }),
        (
            "*[ab]{60}x* (one shift-and word, almost matching everywhere)",
            {
                let mut p = b"*".to_vec();
                p.extend(b"[ab]".repeat(60));
                p.extend_from_slice(b"x*");
                p
            },
        ),
        // Past Redis's nesting limit these match nothing, at once.
        ("(*a?)x4000 b", {
            let mut p = b"*a?".repeat(4000);
            p.push(b'b');
            p
        }),
        ("*a*a*...*b (20k stars)", {
            let mut p = b"*a".repeat(20_000);
            p.extend_from_slice(b"*b");
            p
        }),
    ];
    for (name, pat) in cases {
        let g = Glob::new(&pat);
        let t = Instant::now();
        assert!(!g.matches(&channel), "{name}");
        check(name, t.elapsed(), Duration::from_secs(5));
    }
}

/// Splits a RESP2 array of bulk strings (a `pmessage` push) into its items.
fn bulks(frame: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = match frame.iter().position(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => return out,
    };
    while at < frame.len() {
        let Some(nl) = frame[at..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let len: usize = std::str::from_utf8(&frame[at + 1..at + nl - 1])
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let start = at + nl + 1;
        out.push(frame[start..start + len].to_vec());
        at = start + len + 2;
    }
    out
}

/// Tricky patterns against a real redis-server's PSUBSCRIBE: which
/// (pattern, channel) pairs it delivers must be exactly those `Glob`
/// matches. Segments long enough for the shift-and path are included.
#[test]
fn psubscribe_matching_agrees_with_redis() {
    let long_q = format!("*{}?{}b*", "a".repeat(40), "a".repeat(40));
    let long_class = format!("*{}c*", "[ab]".repeat(70));
    let long_ch_q = format!("x{}b{}y", "a".repeat(81), "a".repeat(10));
    let long_ch_class = format!("{}c", "ab".repeat(40));
    let long_ch_miss = format!("{}c", "ab".repeat(30));
    // Redis's nesting limit: more than 1000 stars that recurse match nothing.
    let deep = "*a".repeat(1001);
    let deep_final_star = "*a".repeat(1000) + "*";
    let a1001 = "a".repeat(1001);
    let a1005 = "a".repeat(1005);
    let patterns: Vec<&str> = vec![
        "*",
        "?",
        "a*",
        "*a",
        "a*b*c",
        "*a?c*",
        "ab*ba",
        "h[ae]llo",
        "h[^e]llo",
        "h[b-a]llo",
        "h\\*llo",
        "[\\]]",
        "a[",
        "a[^",
        "[a-",
        "\\",
        "x\\",
        "[]]*",
        "[^]]*",
        "**x**",
        "*[!]*",
        "?*?",
        "a*?*a",
        &long_q,
        &long_class,
        &deep,
        &deep_final_star,
    ];
    let channels: Vec<&str> = vec![
        "a",
        "b",
        "ab",
        "abc",
        "aXbYc",
        "ac",
        "aba",
        "abba",
        "hello",
        "hallo",
        "hillo",
        "h*llo",
        "]",
        "a[",
        "ab[",
        "-",
        "[a-",
        "\\",
        "x\\",
        "x",
        "axa",
        "!",
        "^",
        "aa",
        &long_ch_q,
        &long_ch_class,
        &long_ch_miss,
        &a1001,
        &a1005,
    ];
    let redis = common::Redis::start(&[]);
    let mut sub = common::Raw::connect(redis.addr);
    for p in &patterns {
        sub.cmd(&[b"PSUBSCRIBE", p.as_bytes()]);
    }
    let mut publisher = common::Raw::connect(redis.addr);
    let mut got = BTreeSet::new();
    for c in &channels {
        let reply = publisher.cmd(&[b"PUBLISH", c.as_bytes(), b"m"]);
        let n: usize = std::str::from_utf8(&reply[1..reply.len() - 2])
            .ok()
            .and_then(|n| n.parse().ok())
            .expect("integer reply");
        for _ in 0..n {
            let items = bulks(&sub.frame());
            assert_eq!(items.first().map(Vec::as_slice), Some(&b"pmessage"[..]));
            got.insert((items[1].clone(), items[2].clone()));
        }
    }
    let mut want = BTreeSet::new();
    for p in &patterns {
        let g = Glob::new(p.as_bytes());
        for c in &channels {
            if g.matches(c.as_bytes()) {
                want.insert((p.as_bytes().to_vec(), c.as_bytes().to_vec()));
            }
        }
    }
    let show = |s: &BTreeSet<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        s.iter()
            .map(|(p, c)| {
                format!(
                    "{} ~ {}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(c)
                )
            })
            .collect()
    };
    assert_eq!(show(&got), show(&want));
}
