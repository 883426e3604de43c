//! Blocking list pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH) on the parked
//! connection: woken by another client, timing out (fractional seconds,
//! Redis's timeout errors), first come first served among several
//! waiters and across keys, served after EXEC, non-blocking inside MULTI,
//! released when the client disconnects, is killed or its token expires,
//! under concurrent load every element delivered exactly once, and a pop
//! on very many keys costs time linear in them.
//! Where Redis's behaviour is observable the scripts run against a real
//! `redis-server` too and the replies are compared byte for byte.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::diff::diff;
use common::{hs256, show, unix_now, Herald, Raw, Redis};
use serde_json::json;

/// The same script in RESP2, then with every connection in RESP3.
fn diff_both(text: &str) {
    let resp3: String = text
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split(' ').next())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|c| format!("{c} 1 HELLO 3\n"))
        .collect();
    diff(&format!(
        "0 1 FLUSHALL\n{text}\n0 1 FLUSHALL\n{resp3}{text}"
    ));
}

#[test]
fn a_push_from_another_client_wakes_the_waiter() {
    diff_both(
        "
        1 0 BLPOP q 0
        0 sleep 100
        0 1 RPUSH q a b
        1 read 1
        0 1 LRANGE q 0 -1
        1 0 BRPOP q other 0
        0 sleep 100
        0 1 RPUSH other x
        1 read 1
        1 0 BRPOPLPUSH src dst 0
        0 sleep 100
        0 1 RPUSH src a b
        1 read 1
        0 1 LRANGE dst 0 -1
        1 0 BLMOVE src2 dst LEFT RIGHT 0
        0 sleep 100
        0 1 LPUSH src2 c
        1 read 1
        0 1 LRANGE dst 0 -1
        0 1 EXISTS src2
        1 1 PING
        ",
    );
}

#[test]
fn waiters_are_served_first_come_first_served() {
    diff_both(
        "
        1 0 BLPOP q 0
        0 sleep 50
        2 0 BRPOP q 0
        0 sleep 50
        3 0 BLPOP other q 0
        0 sleep 50
        4 0 BLPOP q 0
        0 sleep 50
        0 1 RPUSH q a b c
        1 read 1
        2 read 1
        3 read 1
        4 quiet
        0 1 LLEN q
        0 1 LPUSH other x
        4 quiet
        0 1 LPOP other
        0 1 RPUSH q last
        4 read 1
        0 1 EXISTS q
        ",
    );
}

/// A waiter on several keys is served from the first that gets elements;
/// a move feeds the waiters of its destination; a destination of another
/// type fails its waiter and leaves the element to the next.
#[test]
fn several_keys_and_chained_moves() {
    diff_both(
        "
        1 0 BRPOP a b 0
        0 sleep 50
        2 0 BLPOP b a 0
        0 sleep 50
        0 1 MULTI
        0 1 LPUSH b x y
        0 1 LPUSH a z w v
        0 1 EXEC
        1 read 1
        2 read 1
        0 1 LRANGE a 0 -1
        0 1 SET s v
        3 0 BLMOVE q s LEFT RIGHT 0
        0 sleep 50
        4 0 BLMOVE q d RIGHT LEFT 0
        0 sleep 50
        5 0 BLPOP d 0
        0 sleep 50
        0 1 RPUSH q one two
        3 read 1
        4 read 1
        5 read 1
        0 1 LRANGE q 0 -1
        0 1 EXISTS d
        6 0 BLMOVE c c RIGHT LEFT 0
        0 sleep 50
        7 0 BLPOP c 0
        0 sleep 50
        0 1 RPUSH c only
        6 read 1
        7 read 1
        0 1 EXISTS c
        ",
    );
}

/// Pushes inside MULTI serve the waiters after EXEC: the transaction's
/// own LLEN still counts them. A push that the transaction pops again
/// serves nobody.
#[test]
fn pushes_inside_multi_wake_waiters_after_exec() {
    diff_both(
        "
        1 0 BLPOP q 0
        0 sleep 100
        0 1 MULTI
        0 1 LPUSH q a b
        0 1 LLEN q
        0 1 EXEC
        1 read 1
        0 1 LRANGE q 0 -1
        0 1 DEL q
        1 0 BLPOP q 0
        0 sleep 100
        0 1 MULTI
        0 1 RPUSH q a
        0 1 RPOP q
        0 1 EXEC
        1 quiet
        0 1 RPUSH q b
        1 read 1
        ",
    );
}

#[test]
fn inside_multi_blocking_pops_do_not_block() {
    diff_both(
        "
        0 1 RPUSH full x
        0 1 MULTI
        0 1 BLPOP empty 0
        0 1 BRPOP empty 1
        0 1 BLMOVE empty d LEFT RIGHT 0
        0 1 BRPOPLPUSH empty d 0
        0 1 BLPOP empty full 0
        0 1 BLPOP empty x
        0 1 EXEC
        0 1 MULTI
        0 1 BLPOP empty notanumber
        0 1 EXEC
        ",
    );
}

#[test]
fn timeouts_and_their_errors() {
    diff_both(
        "
        0 1 BLPOP q 0.05
        0 1 BRPOP q .05
        0 1 BLMOVE q d LEFT RIGHT 0.05
        0 1 BRPOPLPUSH q d 0.05
        0 1 BLPOP q 1e-3
        0 1 BLPOP q 0x0.1p-6
        0 1 BLPOP q x
        0 1 BLPOP q 1x
        0 1 BLPOP q nan
        0 1 BLPOP q inf
        0 1 BLPOP q -inf
        0 1 BLPOP q -1
        0 1 BLPOP q 1e16
        0 1 BLPOP q 9223372036854776
        0 1 BRPOPLPUSH q d -1
        0 1 BLMOVE q d LEFT RIGHT -1
        0 1 BLMOVE q d UP RIGHT 0
        0 1 BLMOVE q d LEFT UP x
        0 1 BLPOP q
        0 1 SET s v
        0 1 BLPOP q s 0
        0 1 BLPOP s x
        0 1 BRPOPLPUSH s d 0
        0 1 RPUSH l a
        0 1 BLMOVE l s LEFT RIGHT 0
        0 1 BRPOPLPUSH l s 0
        0 1 BLPOP l s 0
        0 1 BLPOP s l 0
        ",
    );
}

/// A fractional timeout ends the wait after about that long.
#[test]
fn a_fractional_timeout_waits_that_long() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    let t = Instant::now();
    assert_eq!(c.cmd(&[b"BLPOP", b"q", b"0.3"]), b"*-1\r\n");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // 0.0001 s rounds up to 1 ms (it is not 0, which waits forever).
    assert_eq!(c.cmd(&[b"BRPOP", b"q", b"0.0001"]), b"*-1\r\n");
    assert_eq!(c.cmd(&[b"HELLO", b"3"])[..1], *b"%");
    assert_eq!(
        c.cmd(&[b"BLMOVE", b"q", b"d", b"LEFT", b"LEFT", b"0.01"]),
        b"_\r\n"
    );
}

/// The same scenario run on Redis and on Herald, its replies compared.
fn both(scenario: impl Fn(SocketAddr) -> Vec<String>) {
    let redis = Redis::start(&[]);
    let herald = Herald::start(&[]);
    let want = scenario(redis.addr);
    let got = scenario(herald.resp);
    assert_eq!(got, want);
}

/// A waiter that disconnects leaves its queue: the element goes to the
/// next waiter, or stays.
#[test]
fn a_client_that_disconnects_releases_its_wait() {
    both(|addr| {
        let mut log = Vec::new();
        let mut c = Raw::connect(addr);
        let mut gone = Raw::connect(addr);
        gone.send(&[b"BLPOP", b"q", b"0"]);
        std::thread::sleep(Duration::from_millis(50));
        let mut next = Raw::connect(addr);
        next.send(&[b"BLPOP", b"q", b"0"]);
        std::thread::sleep(Duration::from_millis(50));
        drop(gone);
        std::thread::sleep(Duration::from_millis(100));
        log.push(show(&c.cmd(&[b"RPUSH", b"q", b"a", b"b"])));
        log.push(show(&next.frame()));
        log.push(show(&c.cmd(&[b"LRANGE", b"q", b"0", b"-1"])));
        // Alone, and gone: the element stays.
        let mut alone = Raw::connect(addr);
        alone.send(&[b"BRPOPLPUSH", b"empty", b"dst", b"0"]);
        std::thread::sleep(Duration::from_millis(50));
        drop(alone);
        std::thread::sleep(Duration::from_millis(100));
        log.push(show(&c.cmd(&[b"RPUSH", b"empty", b"x"])));
        log.push(show(&c.cmd(&[b"LLEN", b"empty"])));
        log.push(show(&c.cmd(&[b"EXISTS", b"dst"])));
        log
    });
}

#[test]
fn a_killed_client_releases_its_wait() {
    let h = Herald::start(&[]);
    let mut admin = Raw::connect(h.resp);
    let mut w = Raw::connect(h.resp);
    let id = show(&w.cmd(&[b"CLIENT", b"ID"]));
    let id = id
        .trim_start_matches(':')
        .trim_end_matches("\\r\\n")
        .to_string();
    w.send(&[b"BLPOP", b"q", b"0"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        admin.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]),
        b":1\r\n"
    );
    assert!(w.closed());
    assert_eq!(admin.cmd(&[b"RPUSH", b"q", b"x"]), b":1\r\n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(admin.cmd(&[b"LLEN", b"q"]), b":1\r\n");
}

/// A JWT client's parked pop ends at the token's `exp`, and its place in
/// the queue goes with it.
#[test]
fn a_token_that_expires_ends_the_wait() {
    let h = Herald::start(&["--jwt-hmac-secret", "s", "--requirepass", "p"]);
    let mut admin = Raw::backend(h.resp, "p");
    let tok = hs256(
        json!({"sub": "w", "exp": unix_now() + 2, "subscribe": ["jobs:*"], "publish": ["jobs:*"]}),
        "s",
    );
    let mut w = Raw::connect(h.resp);
    assert_eq!(w.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    w.send(&[b"BRPOP", b"jobs:q", b"0"]);
    let f = w
        .try_frame(Duration::from_secs(5))
        .expect("no reply at exp");
    assert_eq!(f, b"-NOPERM token expired\r\n");
    assert!(w.closed());
    assert_eq!(admin.cmd(&[b"LPUSH", b"jobs:q", b"j"]), b":1\r\n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(admin.cmd(&[b"LLEN", b"jobs:q"]), b":1\r\n");
}

/// Requests a client pipelines behind its blocked pop run once it is
/// served, in order.
#[test]
fn requests_behind_a_blocked_pop_wait_for_it() {
    both(|addr| {
        let mut c = Raw::connect(addr);
        let mut w = Raw::connect(addr);
        let mut pipeline = common::encode(&[b"BLPOP", b"q", b"0"]);
        pipeline.extend(common::encode(&[b"LLEN", b"q"]));
        pipeline.extend(common::encode(&[b"ECHO", b"after"]));
        w.send_raw(&pipeline);
        std::thread::sleep(Duration::from_millis(100));
        let mut log = vec![format!("{:?}", w.try_frame(Duration::from_millis(100)))];
        log.push(show(&c.cmd(&[b"RPUSH", b"q", b"a", b"b"])));
        for _ in 0..3 {
            log.push(show(&w.frame()));
        }
        log
    });
}

/// Many workers and producers at once: every element is delivered once,
/// none is lost, and nothing is left queued.
#[test]
fn concurrent_workers_get_every_element_once() {
    let h = Herald::start(&[]);
    let addr = h.resp;
    const WORKERS: usize = 12;
    const PER_PRODUCER: usize = 300;
    const PRODUCERS: usize = 3;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut got = Vec::new();
                loop {
                    let f = c.cmd(&[b"BRPOP", b"jobs", b"jobs2", b"0.5"]);
                    if f == b"*-1\r\n" {
                        // Timed out: finished once the producers are.
                        if done.load(std::sync::atomic::Ordering::SeqCst) {
                            return got;
                        }
                        continue;
                    }
                    let text = String::from_utf8(f).unwrap();
                    let job = text.trim_end().rsplit("\r\n").next().unwrap().to_string();
                    got.push(job);
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                for i in 0..PER_PRODUCER {
                    let job = format!("job-{p}-{i}");
                    let key: &[u8] = if i % 2 == 0 { b"jobs" } else { b"jobs2" };
                    let r = c.cmd(&[b"LPUSH", key, job.as_bytes()]);
                    assert!(r.starts_with(b":"), "{}", show(&r));
                    if i % 50 == 0 {
                        // Now and then inside a transaction.
                        c.cmd(&[b"MULTI"]);
                        c.cmd(&[b"LPUSH", b"jobs", format!("tx-{p}-{i}").as_bytes()]);
                        c.cmd(&[b"EXEC"]);
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut all: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an element was delivered twice");
    let expected = PRODUCERS * PER_PRODUCER + PRODUCERS * PER_PRODUCER.div_ceil(50);
    assert_eq!(n, expected, "elements lost");
    let mut c = Raw::connect(addr);
    assert_eq!(c.cmd(&[b"EXISTS", b"jobs", b"jobs2"]), b":0\r\n");
}

/// A pop on many keys (and one key named many times), fed by a
/// transaction that pushes to all of them: queued, served and withdrawn
/// in time linear in the keys, not quadratic.
#[test]
fn many_keys_and_waiters_stay_cheap() {
    const KEYS: usize = 50_000;
    let h = Herald::start(&[]);
    let names: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("k{i}").into_bytes()).collect();
    let mut w = Raw::connect(h.resp);
    let mut args: Vec<&[u8]> = vec![b"BLPOP"];
    args.extend(names.iter().map(|n| &n[..]));
    args.extend(std::iter::repeat_n(&b"k0"[..], KEYS));
    args.push(b"0");
    let t = Instant::now();
    w.send(&args);
    // Many more waiters on the same keys.
    let mut others: Vec<Raw> = (0..20).map(|_| Raw::connect(h.resp)).collect();
    for o in &mut others {
        o.send(&args);
    }
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    let mut tx = common::encode(&[b"MULTI"]);
    for n in names.iter().rev() {
        tx.extend(common::encode(&[b"RPUSH", n, b"v"]));
    }
    tx.extend(common::encode(&[b"EXEC"]));
    c.send_raw(&tx);
    for _ in 0..KEYS + 1 {
        c.frame();
    }
    let exec = c.frame();
    assert!(exec.starts_with(format!("*{KEYS}\r\n").as_bytes()));
    // The first to wait is served from the first key pushed (the
    // transaction pushed from the last name down); each other waiter from
    // the next.
    let first = format!("k{}", KEYS - 1);
    let want = format!("*2\r\n${}\r\n{first}\r\n$1\r\nv\r\n", first.len());
    assert_eq!(w.frame(), want.as_bytes());
    for o in &mut others {
        assert!(show(&o.frame()).ends_with("$1\\r\\nv\\r\\n"));
    }
    assert_eq!(
        c.cmd(&[b"DBSIZE"]),
        format!(":{}\r\n", KEYS - 21).into_bytes()
    );
    drop(others);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
}
