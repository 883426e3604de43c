//! RESP hardening regressions: anonymous clients get the pre-AUTH limits,
//! tokens expire on RESP as on WebSocket, connections that never
//! authenticate neither stay nor hold every slot, and client-supplied times
//! saturate as in Redis.

mod common;

use std::time::{Duration, Instant};

use common::diff::{differential, script};
use common::*;
use serde_json::json;

fn token(sub: &str, exp: u64) -> String {
    hs256(json!({"sub": sub, "exp": exp}), "s")
}

/// Reads frames until one satisfies `pred` (skipping others), or panics.
fn wait_frame(c: &mut Raw, within: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .try_frame(left)
            .unwrap_or_else(|| panic!("no matching frame within {within:?}"));
        let s = show(&f);
        if pred(&s) {
            return s;
        }
    }
}

#[test]
fn anonymous_clients_get_the_pre_auth_request_limits() {
    let h = Herald::start(&["--jwt-hmac-secret", "s"]);
    // A half-sent 100 MB bulk is refused at its header, not buffered.
    let mut c = Raw::connect(h.resp);
    c.send_raw(b"*2\r\n$4\r\nSADD\r\n$10000000\r\n");
    assert_eq!(
        show(&c.frame()),
        "-ERR Protocol error: unauthenticated bulk length\\r\\n"
    );
    assert!(c.closed());
    // So is a request with more arguments than AUTH or HELLO need.
    let mut c = Raw::connect(h.resp);
    let mut args: Vec<&[u8]> = vec![b"SADD", b"k"];
    args.extend(std::iter::repeat_n(&b"m"[..], 20));
    c.send(&args);
    assert_eq!(
        show(&c.frame()),
        "-ERR Protocol error: unauthenticated multibulk length\\r\\n"
    );
    assert!(c.closed());
    // After AUTH with a token the ordinary limits apply.
    let mut c = Raw::connect(h.resp);
    let t = token("u", unix_now() + 600);
    assert_eq!(c.cmd(&[b"AUTH", t.as_bytes()]), b"+OK\r\n");
    let big = vec![b'x'; 100_000];
    assert_eq!(c.cmd(&[b"ECHO", &big]).len(), 100_000 + 11);
}

#[test]
fn anonymous_clients_cannot_use_closed_namespaces() {
    let h = Herald::start(&["--jwt-hmac-secret", "s"]);
    let mut c = Raw::connect(h.resp);
    let noperm =
        "-NOPERM this user has no permissions to access one of the channels used as arguments\\r\\n";
    assert_eq!(show(&c.cmd(&[b"SUBSCRIBE", b"news:today"])), noperm);
    assert_eq!(show(&c.cmd(&[b"PUBLISH", b"news:today", b"x"])), noperm);
    assert_eq!(show(&c.cmd(&[b"PSUBSCRIBE", b"news:*"])), noperm);
    assert_eq!(show(&c.cmd(&[b"SUBSCRIBE", b"plain"])), noperm);
}

#[test]
fn anonymous_subscription_and_pattern_limits() {
    let (dir, cfg) = temp_config("anon", "[namespaces.pub]\nallow_anonymous = true\n");
    let h = Herald::start(&[
        "--config",
        &cfg,
        "--jwt-hmac-secret",
        "s",
        "--requirepass",
        "p",
        "--anonymous-max-subscriptions",
        "3",
        "--max-pattern-length",
        "16",
    ]);
    // With a password configured a client has no identity before AUTH;
    // anonymous clients exist where only a JWT key is configured.
    let h2 = Herald::start(&[
        "--config",
        &cfg,
        "--jwt-hmac-secret",
        "s",
        "--anonymous-max-subscriptions",
        "3",
        "--max-pattern-length",
        "16",
    ]);
    let mut anon = Raw::connect(h2.resp);
    anon.send(&[b"SUBSCRIBE", b"pub:1", b"pub:2", b"pub:3", b"pub:4"]);
    for n in 1..=3 {
        assert!(show(&anon.frame()).contains(&format!("pub:{n}")));
    }
    assert_eq!(
        show(&anon.frame()),
        "-ERR max subscriptions per connection reached (3)\\r\\n"
    );
    // Patterns of clients without the password are held to 16 bytes.
    let t = token("u", unix_now() + 600);
    let mut user = Raw::connect(h2.resp);
    assert_eq!(user.cmd(&[b"AUTH", t.as_bytes()]), b"+OK\r\n");
    assert_eq!(
        show(&user.cmd(&[b"PSUBSCRIBE", b"pub:aaaaaaaaaaaaaaaa*"])),
        "-ERR channel name or pattern longer than 16 bytes\\r\\n"
    );
    assert!(show(&user.cmd(&[b"PSUBSCRIBE", b"pub:a*"])).contains("psubscribe"));
    // The password holder is not.
    let mut admin = Raw::backend(h.resp, "p");
    assert!(show(&admin.cmd(&[b"PSUBSCRIBE", b"pub:aaaaaaaaaaaaaaaa*"])).contains("psubscribe"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_expired_token_ends_the_connection() {
    let (dir, cfg) = temp_config("exp", "[namespaces.chat]\npresence = true\n");
    let h = Herald::start(&[
        "--config",
        &cfg,
        "--jwt-hmac-secret",
        "s",
        "--requirepass",
        "p",
    ]);
    let mut admin = Raw::backend(h.resp, "p");
    let soon = token("alice", unix_now() + 2);

    // A subscriber: present and receiving until exp, then told and closed.
    let mut sub = Raw::connect(h.resp);
    assert_eq!(sub.cmd(&[b"AUTH", soon.as_bytes()]), b"+OK\r\n");
    assert!(show(&sub.cmd(&[b"SUBSCRIBE", b"chat:room"])).contains("subscribe"));
    assert_eq!(admin.cmd(&[b"PUBLISH", b"chat:room", b"hi"]), b":1\r\n");
    assert!(show(&sub.frame()).contains("hi"));
    assert_eq!(admin.cmd(&[b"SCARD", b"__presence__:chat:room"]), b":1\r\n");

    // A publisher whose next command comes after exp.
    let mut publ = Raw::connect(h.resp);
    assert_eq!(publ.cmd(&[b"AUTH", soon.as_bytes()]), b"+OK\r\n");
    // A reader parked in XREAD BLOCK 0 at exp.
    let mut reader = Raw::connect(h.resp);
    assert_eq!(reader.cmd(&[b"AUTH", soon.as_bytes()]), b"+OK\r\n");
    reader.send(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"chat:room", b"$"]);
    // A client that refreshes its token before exp stays.
    let mut fresh = Raw::connect(h.resp);
    assert_eq!(fresh.cmd(&[b"AUTH", soon.as_bytes()]), b"+OK\r\n");
    let later = token("alice", unix_now() + 600);
    assert_eq!(fresh.cmd(&[b"AUTH", later.as_bytes()]), b"+OK\r\n");

    let expired = "-NOPERM token expired\\r\\n";
    assert_eq!(
        wait_frame(&mut sub, Duration::from_secs(5), |_| true),
        expired
    );
    assert!(sub.closed(), "expired subscriber still connected");
    assert_eq!(show(&reader.frame()), expired);
    assert!(reader.closed());
    assert_eq!(show(&publ.frame()), expired);
    assert!(publ.closed());
    assert_eq!(admin.cmd(&[b"PUBLISH", b"chat:room", b"x"]), b":0\r\n");
    assert_eq!(admin.cmd(&[b"SCARD", b"__presence__:chat:room"]), b":0\r\n");
    assert_eq!(fresh.cmd(&[b"PING"]), b"+PONG\r\n");
    // An expired token is refused at AUTH, as before.
    let mut again = Raw::connect(h.resp);
    assert!(show(&again.cmd(&[b"AUTH", soon.as_bytes()])).starts_with("-WRONGPASS"));

    // exp near u64::MAX: accepted, no timer overflow, no panic.
    let forever = hs256(json!({"sub": "bob", "exp": u64::MAX - 1}), "s");
    let mut f = Raw::connect(h.resp);
    assert_eq!(f.cmd(&[b"AUTH", forever.as_bytes()]), b"+OK\r\n");
    assert_eq!(f.cmd(&[b"PING"]), b"+PONG\r\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn connections_that_never_authenticate_are_closed() {
    let h = Herald::start(&["--requirepass", "p", "--auth-timeout", "1s"]);
    let mut idle = Raw::connect(h.resp);
    let mut authed = Raw::backend(h.resp, "p");
    assert_eq!(
        show(
            &idle
                .try_frame(Duration::from_secs(4))
                .expect("no close notice")
        ),
        "-ERR authentication timeout\\r\\n"
    );
    assert!(idle.closed());
    assert_eq!(authed.cmd(&[b"PING"]), b"+PONG\r\n");
    // RESET puts the client back before AUTH, and the clock restarts.
    assert_eq!(authed.cmd(&[b"RESET"]), b"+RESET\r\n");
    assert!(authed.try_frame(Duration::from_secs(4)).is_some());
    assert!(authed.closed());
}

#[test]
fn unauthenticated_connections_cannot_hold_every_slot() {
    let h = Herald::start(&[
        "--requirepass",
        "p",
        "--max-connections",
        "3",
        "--auth-timeout",
        "60s",
    ]);
    // One after the other, so their age is their order.
    let mut squatters: Vec<Raw> = Vec::new();
    for _ in 0..3 {
        let mut s = Raw::connect(h.resp);
        assert!(show(&s.cmd(&[b"PING"])).starts_with("-NOAUTH"));
        squatters.push(s);
    }
    for _ in 0..2 {
        let mut backend = Raw::connect(h.resp);
        assert_eq!(backend.cmd(&[b"AUTH", b"p"]), b"+OK\r\n");
        squatters.push(backend);
    }
    // The two oldest squatters made room; the authenticated stay.
    assert!(squatters[0].closed());
    assert!(squatters[1].closed());
    assert_eq!(squatters[3].cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(squatters[4].cmd(&[b"PING"]), b"+PONG\r\n");
    // Full of authenticated clients (and one squatter left): a newcomer
    // evicts the squatter, the next one is refused as in Redis.
    let mut third = Raw::connect(h.resp);
    assert_eq!(third.cmd(&[b"AUTH", b"p"]), b"+OK\r\n");
    let mut fourth = Raw::connect(h.resp);
    assert_eq!(
        show(&fourth.frame()),
        "-ERR max number of clients reached\\r\\n"
    );
}

#[test]
fn client_supplied_times_saturate_like_redis() {
    let steps = script(
        "0 1 SADD k v
         0 1 EXPIRE k 9223372036854775807
         0 1 PEXPIRE k 9223372036854775807
         0 1 EXPIREAT k 9223372036854775807
         0 1 EXPIRE k 9223372036854775
         0 1 EXPIRE k 9223372036854774
         0 1 PEXPIRE k 9223372036854775000
         0 1 EXPIRE k -9223372036854775808
         0 1 TTL k
         0 1 PEXPIREAT k 9223372036854775807
         0 1 EXISTS k
         0 1 EXPIREAT k 9223372036854775
         0 1 EXISTS k
         0 1 PEXPIRE k -9223372036854775808
         0 1 EXISTS k
         0 1 XREAD BLOCK -1 STREAMS s 0
         0 1 XREAD BLOCK 9223372036854775808 STREAMS s 0
         0 1 XADD s 1-1 a 1
         0 1 XREAD BLOCK 9223372036854775807 STREAMS s 0
         1 0 XREAD BLOCK 9223372036854775807 STREAMS s $
         0 sleep 100
         0 1 XADD s 2-1 b 2
         1 read 1
         0 1 XGROUP CREATE s g $
         1 0 XREADGROUP GROUP g c BLOCK 9223372036854775807 STREAMS s >
         0 sleep 100
         0 1 XADD s 3-1 c 3
         1 read 1
         0 1 PING",
    );
    differential(&steps, &[], &[]);
}

/// A kill reaches a connection through its outbox (there is no
/// cancellation token per connection): an idle subscriber, a parked
/// XREAD BLOCK and a plain idle client all close, and SIGTERM still ends
/// a server whose clients stay connected.
#[test]
fn kill_and_shutdown_reach_idle_and_blocked_connections() {
    let mut h = Herald::start(&[]);
    let id_of = |c: &mut Raw| {
        let r = show(&c.cmd(&[b"CLIENT", b"ID"]));
        r.trim_start_matches(':')
            .trim_end_matches("\\r\\n")
            .to_string()
    };
    let mut sub = Raw::connect(h.resp);
    let sub_id = id_of(&mut sub);
    assert!(show(&sub.cmd(&[b"SUBSCRIBE", b"news"])).contains("subscribe"));
    let mut blocked = Raw::connect(h.resp);
    let blocked_id = id_of(&mut blocked);
    blocked.send(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$"]);
    let mut admin = Raw::connect(h.resp);
    // Let the XREAD park.
    std::thread::sleep(Duration::from_millis(100));
    for id in [&sub_id, &blocked_id] {
        assert_eq!(
            admin.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]),
            b":1\r\n"
        );
    }
    assert!(sub.closed(), "killed subscriber still open");
    assert!(blocked.closed(), "killed blocked reader still open");
    // Idle clients do not hold up shutdown.
    let _idle = Raw::connect(h.resp);
    let mut sub2 = Raw::connect(h.resp);
    assert!(show(&sub2.cmd(&[b"SUBSCRIBE", b"news"])).contains("subscribe"));
    assert_eq!(admin.cmd(&[b"PING"]), b"+PONG\r\n");
    let st = h.terminate();
    assert!(st.success(), "exit status {st:?}");
    assert!(sub2.closed());
}
