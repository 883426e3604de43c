//! Key permissions from each command's own grammar: a token limited to
//! `chat:*` runs every command of the table against keys of another
//! namespace and gets `-NOPERM`, and the same command on its own keys is not
//! refused. Introspection (PUBSUB, DBSIZE) shows only what the token may see.

mod common;

use common::*;
use serde_json::json;

const SECRET: &str = "keys-secret";
const PASS: &str = "backend";
const KEY_NOPERM: &str =
    "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";

/// One sample invocation per command (and per subcommand with keys), with
/// `@` standing for the namespace under test: `secret` (foreign) or `chat`
/// (the token's own). Commands without keys are listed in `KEYLESS`.
const SAMPLES: &[&str] = &[
    "DEL @:s",
    "UNLINK @:s",
    "EXISTS @:s",
    "TYPE @:s",
    "EXPIRE @:s 100",
    "PEXPIRE @:s 100000",
    "EXPIREAT @:s 99999999999",
    "PEXPIREAT @:s 99999999999999",
    "TTL @:s",
    "PTTL @:s",
    "PERSIST @:s",
    "WATCH @:s",
    "XADD @:x * f v",
    "XRANGE @:x - +",
    "XREVRANGE @:x + -",
    "XLEN @:x",
    "XREAD COUNT 10 STREAMS @:x 0",
    "XREAD STREAMS @:x @:x2 0 0",
    "XDEL @:x 1-1",
    "XTRIM @:x MAXLEN 100",
    "XREADGROUP GROUP g c STREAMS @:x >",
    // A consumer named STREAMS: the keys are after the real STREAMS word.
    "XREADGROUP GROUP g STREAMS STREAMS @:x >",
    "XREADGROUP GROUP g c COUNT 1 NOACK STREAMS @:x >",
    "XACK @:x g 1-1",
    "XPENDING @:x g",
    "XCLAIM @:x g c 0 1-1",
    "XAUTOCLAIM @:x g c 0 0",
    "XINFO STREAM @:x",
    "XINFO GROUPS @:x",
    "XINFO CONSUMERS @:x g",
    "XGROUP CREATE @:x g2 $ MKSTREAM",
    "XGROUP DESTROY @:x g",
    "XGROUP CREATECONSUMER @:x g c2",
    "XGROUP DELCONSUMER @:x g c",
    "XGROUP SETID @:x g $",
    "SADD @:s m",
    "SREM @:s m",
    "SMEMBERS @:s",
    "SISMEMBER @:s m",
    "SMISMEMBER @:s m",
    "SCARD @:s",
    "SPOP @:s",
    "SRANDMEMBER @:s",
    "SMOVE @:s chat:dst m",
    "SMOVE chat:src @:s m",
    "SUNION chat:a @:s",
    "SINTER @:s chat:a",
    "SDIFF chat:a @:s",
    "SUNIONSTORE chat:leak @:s",
    "SINTERSTORE chat:leak @:s",
    "SDIFFSTORE chat:leak @:s",
    "SUNIONSTORE @:dst chat:a",
    "SINTERCARD 2 chat:a @:s",
    "SSCAN @:s 0",
    "ZADD @:z 1 m",
    "ZINCRBY @:z 1 m",
    "ZREM @:z m",
    "ZSCORE @:z m",
    "ZMSCORE @:z m",
    "ZRANK @:z m",
    "ZREVRANK @:z m",
    "ZCARD @:z",
    "ZCOUNT @:z -inf +inf",
    "ZLEXCOUNT @:z - +",
    "ZRANGE @:z 0 -1",
    "ZREVRANGE @:z 0 -1",
    "ZRANGEBYSCORE @:z -inf +inf",
    "ZREVRANGEBYSCORE @:z +inf -inf",
    "ZRANGEBYLEX @:z - +",
    "ZREVRANGEBYLEX @:z + -",
    "ZREMRANGEBYSCORE @:z -inf +inf",
    "ZREMRANGEBYRANK @:z 0 -1",
    "ZREMRANGEBYLEX @:z - +",
    "ZPOPMIN @:z",
    "ZPOPMAX @:z",
    "ZRANDMEMBER @:z",
    "ZSCAN @:z 0",
    "ZUNIONSTORE chat:zleak 1 @:z",
    "ZINTERSTORE chat:zleak 2 chat:a @:z",
    "ZUNIONSTORE @:dst 1 chat:z",
    "GET @:str",
    "SET @:str v",
    "SET @:str v GET",
    "SETEX @:str 10 v",
    "PSETEX @:str 10000 v",
    "SETNX @:new v",
    "GETDEL @:str",
    "GETEX @:str PERSIST",
    "GETSET @:str v",
    "MGET chat:a @:str",
    "MSET chat:a 1 @:str v",
    "MSETNX @:new v chat:b 1",
    "INCR @:n",
    "DECR @:n",
    "INCRBY @:n 2",
    "DECRBY @:n 2",
    "INCRBYFLOAT @:n 1.5",
    "APPEND @:str x",
    "STRLEN @:str",
    "GETRANGE @:str 0 -1",
    "SETRANGE @:str 0 x",
    "HSET @:h f v",
    "HMSET @:h f v",
    "HSETNX @:h g v",
    "HGET @:h f",
    "HMGET @:h f",
    "HGETALL @:h",
    "HDEL @:h f",
    "HEXISTS @:h f",
    "HLEN @:h",
    "HKEYS @:h",
    "HVALS @:h",
    "HSTRLEN @:h f",
    "HINCRBY @:h n 1",
    "HINCRBYFLOAT @:h n 1.5",
    "HRANDFIELD @:h",
    "HSCAN @:h 0",
    "LPUSH @:l v",
    "RPUSH @:l v",
    "LPUSHX @:l v",
    "RPUSHX @:l v",
    "LPOP @:l",
    "RPOP @:l 2",
    "LLEN @:l",
    "LRANGE @:l 0 -1",
    "LINDEX @:l 0",
    "LSET @:l 0 v",
    "LINSERT @:l BEFORE a v",
    "LREM @:l 0 a",
    "LTRIM @:l 0 0",
    "LPOS @:l a",
    "LMOVE @:l chat:dst LEFT RIGHT",
    "LMOVE chat:l @:l LEFT RIGHT",
    "RPOPLPUSH @:l chat:dst",
    "RPOPLPUSH chat:l @:l",
    "BLPOP @:l 1",
    "BRPOP chat:empty @:l 1",
    "BLMOVE @:l chat:dst RIGHT LEFT 1",
    "BLMOVE chat:l @:l RIGHT LEFT 1",
    "BRPOPLPUSH @:l chat:dst 1",
    "BRPOPLPUSH chat:l @:l 1",
    // Channels: refused with the channel form of NOPERM.
    "PUBLISH @:c m",
    "SPUBLISH @:c m",
    "SUBSCRIBE @:c",
    "SSUBSCRIBE @:c",
    "PSUBSCRIBE @:*",
];

/// Commands that name no key (their own permission rules are tested
/// elsewhere): every command of the table is in SAMPLES or here.
const KEYLESS: &[&str] = &[
    "ping",
    "echo",
    "quit",
    "reset",
    "hello",
    "auth",
    "select",
    "client",
    "command",
    "info",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "pubsub",
    "flushall",
    "flushdb",
    "dbsize",
    "function",
    "config",
    "time",
    "keys",
    "scan",
    "multi",
    "exec",
    "discard",
    "unwatch",
    "xinfo",
    "xgroup",
];

fn words_for(sample: &str, ns: &str) -> Vec<Vec<u8>> {
    sample
        .split_whitespace()
        .map(|w| w.replace('@', ns).into_bytes())
        .collect()
}

fn run(c: &mut Raw, w: &[Vec<u8>]) -> Vec<u8> {
    let args: Vec<&[u8]> = w.iter().map(|a| &a[..]).collect();
    c.cmd(&args)
}

fn setup(admin: &mut Raw, ns: &str) {
    for line in [
        "SADD @:s m n",
        "SADD @:dst m",
        "ZADD @:z 1 m 2 n",
        "XADD @:x 1-1 f v",
        "XADD @:x2 1-1 f v",
        "XGROUP CREATE @:x g 0",
        "XREADGROUP GROUP g c STREAMS @:x >",
        "SET @:str v",
        "SET @:n 1",
        "HSET @:h f v n 1",
        "RPUSH @:l a b c",
    ] {
        let r = run(admin, &words_for(line, ns));
        assert!(!r.starts_with(b"-"), "{line}: {}", show(&r));
    }
}

#[test]
fn every_command_checks_the_keys_its_grammar_names() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", PASS]);
    let mut admin = Raw::backend(h.resp, PASS);

    // Every command of the table is covered.
    let listed = run(&mut admin, &words("COMMAND LIST"));
    let listed = String::from_utf8(listed).unwrap().to_lowercase();
    let listed: Vec<&str> = listed
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    let covered: Vec<String> = SAMPLES
        .iter()
        .map(|s| s.split_whitespace().next().unwrap().to_lowercase())
        .chain(KEYLESS.iter().map(|s| s.to_string()))
        .collect();
    assert!(listed.len() > 50, "{listed:?}");
    for name in listed {
        assert!(
            covered.iter().any(|c| c == name),
            "command {name} has no sample in tests/key_permissions.rs"
        );
    }

    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"], "publish": ["chat:*"]}),
        SECRET,
    );
    for sample in SAMPLES {
        // Fresh data for every command, so a command that leaks would have
        // something to leak.
        run(&mut admin, &words("FLUSHALL"));
        setup(&mut admin, "secret");
        setup(&mut admin, "chat");
        let mut c = Raw::connect(h.resp);
        assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
        let foreign = run(&mut c, &words_for(sample, "secret"));
        let text = show(&foreign);
        assert!(
            text.starts_with("-NOPERM"),
            "{sample} on foreign keys was not refused: {text}"
        );
        if !sample.contains("@:c") && !sample.contains("@:*") {
            assert_eq!(foreign, KEY_NOPERM.as_bytes(), "{sample}");
        }
        // Nothing changed in the foreign namespace.
        for (k, want) in [
            ("SCARD secret:s", ":2"),
            ("ZCARD secret:z", ":2"),
            ("XLEN secret:x", ":1"),
            (
                "MGET secret:str secret:n secret:new",
                "*3\r\n$1\r\nv\r\n$1\r\n1\r\n$-1",
            ),
            (
                "HGETALL secret:h",
                "*4\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\nn\r\n$1\r\n1",
            ),
            (
                "LRANGE secret:l 0 -1",
                "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc",
            ),
            ("EXISTS secret:leak chat:leak", ":0"),
        ] {
            let got = run(&mut admin, &words(k));
            if k.starts_with("EXISTS") {
                // chat:leak may exist after a permitted store; secret:leak never.
                let got = run(&mut admin, &words("EXISTS secret:leak"));
                assert_eq!(got, format!("{want}\r\n").into_bytes(), "{sample}: {k}");
                continue;
            }
            assert_eq!(got, format!("{want}\r\n").into_bytes(), "{sample}: {k}");
        }
        let pending = run(&mut admin, &words("XPENDING secret:x g"));
        assert!(
            pending.starts_with(b"*4\r\n:1\r\n"),
            "{sample}: {}",
            show(&pending)
        );

        // The same command on the token's own keys is not refused.
        let own = run(&mut c, &words_for(sample, "chat"));
        assert!(
            !show(&own).starts_with("-NOPERM"),
            "{sample} on the token's own keys was refused: {}",
            show(&own)
        );
    }
}

#[test]
fn read_only_tokens_cannot_write_and_write_only_tokens_cannot_read() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", PASS]);
    let mut admin = Raw::backend(h.resp, PASS);
    setup(&mut admin, "chat");
    let reader = hs256(
        json!({"sub": "r", "exp": unix_now() + 600, "subscribe": ["chat:*"], "publish": []}),
        SECRET,
    );
    let writer = hs256(
        json!({"sub": "w", "exp": unix_now() + 600, "subscribe": [], "publish": ["chat:*"]}),
        SECRET,
    );
    let mut r = Raw::connect(h.resp);
    assert_eq!(r.cmd(&[b"AUTH", reader.as_bytes()]), b"+OK\r\n");
    let mut w = Raw::connect(h.resp);
    assert_eq!(w.cmd(&[b"AUTH", writer.as_bytes()]), b"+OK\r\n");
    let noperm = KEY_NOPERM.as_bytes();
    assert_eq!(r.cmd(&[b"SCARD", b"chat:s"]), b":2\r\n");
    assert_eq!(r.cmd(&[b"SADD", b"chat:s", b"x"]), noperm);
    assert_eq!(r.cmd(&[b"SPOP", b"chat:s"]), noperm, "SPOP writes");
    assert_eq!(w.cmd(&[b"SADD", b"chat:s", b"x"]), b":1\r\n");
    assert_eq!(w.cmd(&[b"SPOP", b"chat:s"]), noperm, "SPOP reads");
    assert_eq!(w.cmd(&[b"SMEMBERS", b"chat:s"]), noperm);
    assert_eq!(
        w.cmd(&[b"ZINCRBY", b"chat:z", b"1", b"m"]),
        noperm,
        "ZINCRBY returns the score"
    );
    assert_eq!(
        w.cmd(&[b"XAUTOCLAIM", b"chat:x", b"g", b"c", b"0", b"0"]),
        noperm
    );
    assert_eq!(w.cmd(&[b"DEL", b"chat:dst"]), b":1\r\n");
    // Strings: SET writes; its GET option and the counters also read.
    assert_eq!(w.cmd(&[b"SET", b"chat:str", b"v"]), b"+OK\r\n");
    assert_eq!(w.cmd(&[b"SET", b"chat:str", b"v", b"GET"]), noperm);
    assert_eq!(
        w.cmd(&[b"INCR", b"chat:n"]),
        noperm,
        "INCR returns the value"
    );
    assert_eq!(w.cmd(&[b"APPEND", b"chat:str", b"w"]), b":2\r\n");
    assert_eq!(w.cmd(&[b"HSET", b"chat:h", b"g", b"v"]), b":1\r\n");
    assert_eq!(w.cmd(&[b"HINCRBY", b"chat:h", b"n", b"1"]), noperm);
    assert_eq!(w.cmd(&[b"GET", b"chat:str"]), noperm);
    assert_eq!(r.cmd(&[b"GET", b"chat:str"]), b"$2\r\nvw\r\n");
    assert_eq!(r.cmd(&[b"HGET", b"chat:h", b"f"]), b"$1\r\nv\r\n");
    assert_eq!(r.cmd(&[b"SET", b"chat:str", b"v", b"GET"]), noperm);
    assert_eq!(r.cmd(&[b"GETDEL", b"chat:str"]), noperm, "GETDEL writes");
    // Lists: pushes only write; pops and moves also read.
    assert_eq!(w.cmd(&[b"RPUSH", b"chat:l", b"d"]), b":4\r\n");
    assert_eq!(w.cmd(&[b"LPOP", b"chat:l"]), noperm, "LPOP reads");
    assert_eq!(w.cmd(&[b"BRPOP", b"chat:l", b"1"]), noperm, "BRPOP reads");
    assert_eq!(w.cmd(&[b"LRANGE", b"chat:l", b"0", b"0"]), noperm);
    assert_eq!(
        r.cmd(&[b"LRANGE", b"chat:l", b"0", b"0"]),
        b"*1\r\n$1\r\na\r\n"
    );
    assert_eq!(r.cmd(&[b"RPUSH", b"chat:l", b"e"]), noperm);
    assert_eq!(r.cmd(&[b"BLPOP", b"chat:l", b"1"]), noperm, "BLPOP writes");
    assert_eq!(
        r.cmd(&[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"STREAMS",
            b"chat:x",
            b">"
        ]),
        noperm,
        "XREADGROUP moves the group"
    );
}

#[test]
fn introspection_shows_only_what_the_token_may_subscribe_to() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", PASS]);
    let mut admin = Raw::backend(h.resp, PASS);
    setup(&mut admin, "chat");
    setup(&mut admin, "secret");
    let mut subs = Raw::backend(h.resp, PASS);
    subs.cmd(&[b"SUBSCRIBE", b"chat:room", b"secret:room"]);
    subs.frame();
    let mut psubs = Raw::backend(h.resp, PASS);
    psubs.cmd(&[b"PSUBSCRIBE", b"chat:r*", b"secret:*"]);
    psubs.frame();
    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"]}),
        SECRET,
    );
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    assert_eq!(
        c.cmd(&[b"PUBSUB", b"CHANNELS"]),
        b"*1\r\n$9\r\nchat:room\r\n"
    );
    assert_eq!(
        c.cmd(&[b"PUBSUB", b"NUMSUB", b"chat:room", b"secret:room"]),
        b"*4\r\n$9\r\nchat:room\r\n:1\r\n$11\r\nsecret:room\r\n:0\r\n"
    );
    assert_eq!(c.cmd(&[b"PUBSUB", b"NUMPAT"]), b":1\r\n");
    // chat: s, dst, z, x, x2, str, n, h, l — the secret keys are not counted.
    assert_eq!(c.cmd(&[b"DBSIZE"]), b":9\r\n");
    assert_eq!(admin.cmd(&[b"DBSIZE"]), b":18\r\n");
    assert_eq!(admin.cmd(&[b"PUBSUB", b"NUMPAT"]), b":2\r\n");
}

#[test]
fn only_herald_publishes_presence_and_leaderboard_events() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", PASS]);
    let tok = hs256(json!({"sub": "u", "exp": unix_now() + 600}), SECRET);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let noperm =
        b"-NOPERM this user has no permissions to access one of the channels used as arguments\r\n";
    assert_eq!(
        c.cmd(&[
            b"PUBLISH",
            b"__presence__:room:1",
            br#"{"event":"join","user":"admin"}"#
        ]),
        noperm
    );
    assert_eq!(c.cmd(&[b"PUBLISH", b"__leaderboard__:game", b"[]"]), noperm);
    assert_eq!(c.cmd(&[b"PUBLISH", b"room:1", b"hi"]), b":0\r\n");
}

#[test]
fn allow_anonymous_does_not_open_the_server_api_beside_a_jwt_key() {
    use std::io::{Read, Write};
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--allow-anonymous"]);
    let mut s = std::net::TcpStream::connect(h.http).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let body = r#"{"channel":"news:today","data":"forged"}"#;
    write!(
        s,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
}

#[test]
fn presence_keys_are_read_only_for_every_command() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", PASS]);
    let mut admin = Raw::backend(h.resp, PASS);
    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"], "publish": ["chat:*"]}),
        SECRET,
    );
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let ro = b"-ERR __presence__ keys are read-only: Herald maintains them from subscriptions\r\n";
    for client in [&mut admin, &mut c] {
        for line in [
            "XADD __presence__:chat:p * f v",
            "ZADD __presence__:chat:p 1 m",
            "SADD __presence__:chat:p m",
            "RPUSH __presence__:chat:p m",
            "BLPOP __presence__:chat:p 1",
            "LMOVE chat:l __presence__:chat:p LEFT LEFT",
            "ZUNIONSTORE __presence__:chat:p 1 chat:z",
            "EXPIRE __presence__:chat:p 10",
            "DEL __presence__:chat:p",
        ] {
            let w = words(line);
            let a: Vec<&[u8]> = w.iter().map(|x| &x[..]).collect();
            assert_eq!(client.cmd(&a), ro.to_vec(), "{line}");
        }
    }
    assert_eq!(admin.cmd(&[b"TYPE", b"__presence__:chat:p"]), b"+none\r\n");
}

#[test]
fn a_token_subject_cannot_forge_client_list_lines() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", PASS]);
    let tok = hs256(
        json!({"sub": "x\nid=1 addr=1.2.3.4:5 name=backup-admin user=default", "exp": unix_now() + 600}),
        SECRET,
    );
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let mut admin = Raw::backend(h.resp, PASS);
    let list = admin.cmd(&[b"CLIENT", b"LIST"]);
    let text = String::from_utf8_lossy(&list).to_string();
    let body = text.split_once("\r\n").unwrap().1.trim_end();
    assert_eq!(body.lines().count(), 2, "{body}");
    assert!(
        body.contains("user=x?id=1?addr=1.2.3.4:5?name=backup-admin?user=default"),
        "{body}"
    );
}
