//! Cluster-wide introspection on a real `redis-server` and three Herald
//! nodes: `/api/nodes` lists the live nodes and drops a killed one;
//! `PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB`,
//! `/api/channels` and `/stats` give the same cluster-wide answer on every
//! node; a narrow token still sees only its channels; a node that lost
//! Redis answers with its own data and says the rest is missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::diff::sorted_frame;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "nodes-test-secret";
const KEY: &str = "nodes-api-key";

fn start_nodes(redis: &Redis, n: usize) -> Vec<Herald> {
    let url = format!("redis://{}", redis.addr);
    (0..n)
        .map(|i| {
            Herald::start(&[
                "--engine",
                &url,
                "--node-name",
                &format!("node{i}"),
                "--jwt-hmac-secret",
                SECRET,
                "--requirepass",
                "pw",
                "--api-key",
                KEY,
            ])
        })
        .collect()
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn names(v: &Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `f` until it holds; panics with `what` after `limit`.
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn api_nodes_lists_the_live_nodes_and_drops_a_killed_one() {
    let redis = Redis::start(&[]);
    let mut nodes = start_nodes(&redis, 3);
    for h in &nodes {
        until(Duration::from_secs(5), "three nodes listed", || {
            names(&get(h.http, "/api/nodes")).len() == 3
        });
    }
    let mut b = Raw::backend(nodes[1].resp, "pw");
    b.cmd(&[b"SUBSCRIBE", b"a", b"b"]);
    b.frame();
    until(Duration::from_secs(5), "node1's subscriptions seen", || {
        get(nodes[0].http, "/api/nodes")["nodes"][1]["subscriptions"] == json!(2)
    });
    let v = get(nodes[0].http, "/api/nodes");
    assert_eq!(names(&v), ["node0", "node1", "node2"], "{v}");
    assert_eq!(v["cluster"], json!({"nodes": 3, "partial": false}));
    let me = &v["nodes"][0];
    assert_eq!(me["this"], json!(true));
    assert_eq!(me["heartbeat_age_ms"], json!(0));
    let other = &v["nodes"][1];
    assert_eq!(other["this"], json!(false));
    assert!(other["heartbeat_age_ms"].as_u64().unwrap() < 2000, "{v}");
    assert_eq!(other["connections"]["resp"], json!(1), "{v}");
    assert_eq!(other["channels"], json!(2), "{v}");
    assert!(other["version"].is_string() && other["uptime_seconds"].is_u64());

    // kill -9: no goodbye; gone once about three heartbeats are missed.
    nodes[2].child.kill().unwrap();
    let took = until(Duration::from_secs(6), "node2 dropped", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 2
    });
    eprintln!("a killed node left /api/nodes after {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "{took:?}: too soon to be the heartbeat timeout"
    );
    assert_eq!(names(&get(nodes[1].http, "/api/nodes")), ["node1", "node0"]);
    // A survey does not wait for the dead node.
    let started = Instant::now();
    let v = get(nodes[0].http, "/api/channels");
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(v["cluster"], json!({"nodes": 2, "partial": false}), "{v}");
}

/// Subscribers spread over three nodes, as every node sees them.
#[test]
fn pubsub_channels_and_stats_cover_every_node() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 3);
    let mut held = Vec::new();
    let mut sub = |node: usize, cmd: &[&[u8]]| {
        let mut r = Raw::backend(nodes[node].resp, "pw");
        r.cmd(cmd);
        for _ in 2..cmd.len() {
            r.frame();
        }
        held.push(r);
    };
    sub(0, &[b"SUBSCRIBE", b"news", b"sports"]);
    sub(0, &[b"SUBSCRIBE", b"news"]);
    sub(1, &[b"SUBSCRIBE", b"news", b"local1"]);
    sub(2, &[b"PSUBSCRIBE", b"ne*", b"x*"]);
    sub(1, &[b"PSUBSCRIBE", b"ne*"]);
    sub(2, &[b"SSUBSCRIBE", b"s1"]);
    sub(0, &[b"SSUBSCRIBE", b"s1"]);

    for h in &nodes {
        until(Duration::from_secs(5), "every node live", || {
            names(&get(h.http, "/api/nodes")).len() == 3
        });
    }
    let mut stats = Vec::new();
    for (i, h) in nodes.iter().enumerate() {
        let mut r = Raw::backend(h.resp, "pw");
        let channels = sorted_frame(&r.cmd(&[b"PUBSUB", b"CHANNELS"]));
        assert_eq!(
            channels,
            sorted_frame(b"*3\r\n$6\r\nlocal1\r\n$4\r\nnews\r\n$6\r\nsports\r\n"),
            "node{i}: {}",
            show(&channels)
        );
        assert_eq!(
            r.cmd(&[b"PUBSUB", b"CHANNELS", b"n*"]),
            b"*1\r\n$4\r\nnews\r\n",
            "node{i}"
        );
        assert_eq!(
            r.cmd(&[b"PUBSUB", b"NUMSUB", b"news", b"sports", b"local1", b"nope"]),
            b"*8\r\n$4\r\nnews\r\n:3\r\n$6\r\nsports\r\n:1\r\n$6\r\nlocal1\r\n:1\r\n$4\r\nnope\r\n:0\r\n",
            "node{i}"
        );
        assert_eq!(
            r.cmd(&[b"PUBSUB", b"NUMPAT"]),
            b":2\r\n",
            "node{i}: distinct patterns"
        );
        assert_eq!(
            r.cmd(&[b"PUBSUB", b"SHARDCHANNELS"]),
            b"*1\r\n$2\r\ns1\r\n",
            "node{i}"
        );
        assert_eq!(
            r.cmd(&[b"PUBSUB", b"SHARDNUMSUB", b"s1"]),
            b"*2\r\n$2\r\ns1\r\n:2\r\n",
            "node{i}"
        );
        let v = get(h.http, "/api/channels");
        assert_eq!(
            v,
            json!({
                "channels": [
                    {"channel": "local1", "subscribers": 1},
                    {"channel": "news", "subscribers": 3},
                    {"channel": "sports", "subscribers": 1},
                ],
                "cluster": {"nodes": 3, "partial": false},
            }),
            "node{i}"
        );
        let v = get(h.http, "/api/channels?pattern=s*");
        assert_eq!(
            v["channels"],
            json!([{"channel": "sports", "subscribers": 1}])
        );
        // PUBLISH counts this node's receivers, as Redis Cluster does.
        let n = r.cmd(&[b"PUBLISH", b"news", b"hi"]);
        let local = [2, 2, 1][i];
        assert_eq!(n, format!(":{local}\r\n").as_bytes(), "node{i}");
        stats.push(r);
    }
    // /stats: heartbeats carry the counters; once the publishes above are
    // in every node's last heartbeat, every node gives the same totals.
    let wanted = |v: &Value| {
        v["messages_published"] == json!(3) && v["cluster"] == json!({"nodes": 3, "partial": false})
    };
    for h in &nodes {
        until(Duration::from_secs(5), "stats agree", || {
            wanted(&get(h.http, "/stats"))
        });
    }
    let all: Vec<Value> = nodes.iter().map(|h| get(h.http, "/stats")).collect();
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v["channels"], json!(3), "node{i}: {v}");
        assert_eq!(v["patterns"], json!(2), "node{i}: {v}");
        // 7 subscriber connections plus the 3 above.
        assert_eq!(v["connections"]["resp"], json!(10), "node{i}: {v}");
        assert_eq!(v["subscriptions"], json!(10), "node{i}: {v}");
        // Each publish counts its node's receivers: 2 + 2 + 1.
        assert_eq!(v["messages_delivered"], json!(5), "node{i}: {v}");
        assert_eq!(v["node"]["name"], json!(format!("node{i}")));
        assert_eq!(v["node"]["messages_published"], json!(1), "node{i}: {v}");
    }
    assert_eq!(all[0]["node"]["channels"], json!(2));
    assert_eq!(all[2]["node"]["patterns"], json!(2));
    // Inside EXEC (which holds the keyspace) PUBSUB answers for this node
    // alone, never waiting on the others.
    let mut m = Raw::backend(nodes[0].resp, "pw");
    assert_eq!(m.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(m.cmd(&[b"PUBSUB", b"NUMSUB", b"news"]), b"+QUEUED\r\n");
    assert_eq!(m.cmd(&[b"PUBSUB", b"NUMPAT"]), b"+QUEUED\r\n");
    assert_eq!(m.cmd(&[b"EXEC"]), b"*2\r\n*2\r\n$4\r\nnews\r\n:2\r\n:0\r\n");
}

#[test]
fn a_narrow_token_sees_only_its_channels_on_every_node() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    let mut s0 = Raw::backend(nodes[0].resp, "pw");
    s0.cmd(&[b"SUBSCRIBE", b"chat:a", b"secret:a"]);
    s0.frame();
    let mut s1 = Raw::backend(nodes[1].resp, "pw");
    s1.cmd(&[b"SUBSCRIBE", b"chat:a", b"secret:b"]);
    s1.frame();
    s1.cmd(&[b"PSUBSCRIBE", b"chat:*", b"secret:*"]);
    s1.frame();
    until(Duration::from_secs(5), "both nodes live", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 2
    });
    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"]}),
        SECRET,
    );
    let mut c = Raw::connect(nodes[0].resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"PUBSUB", b"CHANNELS"]), b"*1\r\n$6\r\nchat:a\r\n");
    assert_eq!(c.cmd(&[b"PUBSUB", b"CHANNELS", b"secret:*"]), b"*0\r\n");
    assert_eq!(
        c.cmd(&[b"PUBSUB", b"NUMSUB", b"chat:a", b"secret:b", b"secret:a"]),
        b"*6\r\n$6\r\nchat:a\r\n:2\r\n$8\r\nsecret:b\r\n:0\r\n$8\r\nsecret:a\r\n:0\r\n"
    );
    assert_eq!(c.cmd(&[b"PUBSUB", b"NUMPAT"]), b":1\r\n");
    let mut admin = Raw::backend(nodes[0].resp, "pw");
    assert_eq!(admin.cmd(&[b"PUBSUB", b"NUMPAT"]), b":2\r\n");
    assert_eq!(
        admin.cmd(&[b"PUBSUB", b"NUMSUB", b"secret:b"]),
        b"*2\r\n$8\r\nsecret:b\r\n:1\r\n"
    );
    // A survey asks about at most 1000 channels: a bigger NUMSUB is
    // refused while there are other nodes, not split or cut.
    let many: Vec<Vec<u8>> = (0..1001).map(|i| format!("c{i}").into_bytes()).collect();
    let mut cmd: Vec<&[u8]> = vec![b"PUBSUB", b"NUMSUB"];
    cmd.extend(many.iter().map(|c| &c[..]));
    let r = admin.cmd(&cmd);
    assert!(r.starts_with(b"-ERR PUBSUB NUMSUB asks"), "{}", show(&r));
    cmd.truncate(1002);
    assert!(admin.cmd(&cmd).starts_with(b"*2000\r\n"));
}

#[test]
fn a_node_without_redis_answers_with_its_own_data_and_says_so() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    let mut s0 = Raw::backend(nodes[0].resp, "pw");
    s0.cmd(&[b"SUBSCRIBE", b"mine"]);
    let mut s1 = Raw::backend(nodes[1].resp, "pw");
    s1.cmd(&[b"SUBSCRIBE", b"theirs"]);
    until(Duration::from_secs(5), "both nodes live", || {
        get(nodes[0].http, "/api/channels")["channels"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    });
    drop(redis);
    until(Duration::from_secs(5), "the lost link noticed", || {
        get(nodes[0].http, "/api/nodes")["cluster"]["problem"].is_string()
    });
    let v = get(nodes[0].http, "/api/channels");
    assert_eq!(
        v["channels"],
        json!([{"channel": "mine", "subscribers": 1}]),
        "{v}"
    );
    assert_eq!(v["cluster"]["partial"], json!(true), "{v}");
    assert_eq!(v["cluster"]["nodes"], json!(1), "{v}");
    assert!(
        v["cluster"]["problem"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{v}"
    );
    let v = get(nodes[0].http, "/stats");
    assert_eq!(v["channels"], json!(1), "{v}");
    assert_eq!(v["cluster"]["partial"], json!(true), "{v}");
    // RESP has no room for the indication: it answers with what it has.
    let mut r = Raw::backend(nodes[0].resp, "pw");
    let started = Instant::now();
    assert_eq!(
        r.cmd(&[b"PUBSUB", b"NUMSUB", b"mine", b"theirs"]),
        b"*4\r\n$4\r\nmine\r\n:1\r\n$6\r\ntheirs\r\n:0\r\n"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // The peer ages out like a dead one; the node lists itself.
    until(Duration::from_secs(6), "peer aged out", || {
        names(&get(nodes[0].http, "/api/nodes")) == ["node0"]
    });
}

#[test]
fn memory_mode_lists_this_node_alone() {
    let h = Herald::start(&[
        "--node-name",
        "solo",
        "--api-key",
        KEY,
        "--requirepass",
        "pw",
    ]);
    let mut r = Raw::backend(h.resp, "pw");
    r.cmd(&[b"SUBSCRIBE", b"x"]);
    let v = get(h.http, "/api/nodes");
    assert_eq!(names(&v), ["solo"]);
    assert_eq!(v["cluster"], json!({"nodes": 1, "partial": false}));
    assert_eq!(v["nodes"][0]["subscriptions"], json!(1));
    let v = get(h.http, "/stats");
    assert_eq!(v["channels"], json!(1));
    assert_eq!(v["node"]["name"], json!("solo"));
    assert_eq!(v["connections"]["resp"], json!(1));
}

/// Whatever else publishes on the control channels (any Redis client can)
/// is read within bounds: malformed and oversized frames are dropped, at
/// most 1,024 other nodes are tracked, answers nobody asked for are
/// ignored, and a node that heartbeats but never answers costs a survey
/// 500 ms and is named in `missing`.
#[test]
fn hostile_control_frames_are_bounded() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    let mut s1 = Raw::backend(nodes[1].resp, "pw");
    s1.cmd(&[b"SUBSCRIBE", b"theirs"]);
    until(Duration::from_secs(5), "both nodes live", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 2
    });
    let mut r = Raw::connect(redis.addr);
    let huge_name = "n".repeat(300);
    let big = format!("H{{\"name\":\"big\",\"version\":\"{}\"}}", "v".repeat(9000));
    for frame in [
        b"".to_vec(),
        b"H".to_vec(),
        b"Hnot json".to_vec(),
        format!("H{{\"name\":\"{huge_name}\"}}").into_bytes(),
        big.into_bytes(),
        b"Q\x00\x00\x00\xffshort".to_vec(),
        b"Q\x00\x00\x00\x01x".to_vec(),
        b"A\x00\x00\x00\x05node1\x00\x00\x00\x0299\x00\x00\x00\x00".to_vec(),
        b"Zwhat".to_vec(),
    ] {
        r.cmd(&[b"PUBLISH", b"herald:control", &frame]);
        r.cmd(&[b"PUBLISH", b"herald:control:node0", &frame]);
    }
    // A heartbeat of a node that never answers.
    r.cmd(&[
        b"PUBLISH",
        b"herald:control",
        br#"H{"name":"ghost","connections":{"resp":7}}"#,
    ]);
    until(Duration::from_secs(2), "ghost listed", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 3
    });
    let v = get(nodes[0].http, "/api/nodes");
    assert_eq!(names(&v), ["node0", "ghost", "node1"], "{v}");
    assert_eq!(v["nodes"][1]["connections"]["resp"], json!(7));
    let started = Instant::now();
    let v = get(nodes[0].http, "/api/channels");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(
        v["channels"],
        json!([{"channel": "theirs", "subscribers": 1}]),
        "{v}"
    );
    assert_eq!(
        v["cluster"],
        json!({"nodes": 2, "partial": true, "missing": ["ghost"]}),
        "{v}"
    );
    // Two thousand made-up nodes: 1,024 are tracked.
    let mut pipe = Vec::new();
    for i in 0..2000 {
        let hb = format!("H{{\"name\":\"fake{i}\"}}");
        pipe.extend(encode(&[b"PUBLISH", b"herald:control", hb.as_bytes()]));
    }
    r.send_raw(&pipe);
    for _ in 0..2000 {
        r.frame();
    }
    until(Duration::from_secs(3), "fakes tracked", || {
        names(&get(nodes[0].http, "/api/nodes")).len() > 1024
    });
    std::thread::sleep(Duration::from_millis(200));
    let v = get(nodes[0].http, "/api/nodes");
    let n = v["nodes"].as_array().unwrap().len();
    assert_eq!(n, 1 + 1024, "this node and 1,024 others");
    assert!(names(&v).contains(&"node1".to_string()));
    // The node still answers its clients.
    let mut c = Raw::backend(nodes[0].resp, "pw");
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    // Once the made-up nodes age out, surveys are whole again.
    until(Duration::from_secs(6), "fakes aged out", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 2
    });
    let v = get(nodes[0].http, "/api/channels");
    assert_eq!(v["cluster"], json!({"nodes": 2, "partial": false}), "{v}");
}

/// A control frame: `tag`, then each field as a 4-byte big-endian length
/// and its bytes.
fn control_frame(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![tag];
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The bulk strings of a RESP array frame.
fn bulks(frame: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < frame.len() {
        let end = i + frame[i..].windows(2).position(|w| w == b"\r\n").unwrap();
        let line = &frame[i..end];
        i = end + 2;
        if line.first() == Some(&b'$') {
            let n: usize = std::str::from_utf8(&line[1..]).unwrap().parse().unwrap();
            out.push(frame[i..i + n].to_vec());
            i += n + 2;
        }
    }
    out
}

/// The fields of a control frame's body (after its tag).
fn control_fields(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        out.push(body[4..4 + len].to_vec());
        body = &body[4 + len..];
    }
    out
}

/// The answers `spy` (subscribed to `herald:control:spy`) gets within
/// `wait`: each node's name and its names, sorted.
fn answers(spy: &mut Raw, wait: Duration) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    while let Some(f) = spy.try_frame(wait) {
        let payload = bulks(&f).pop().unwrap();
        assert_eq!(payload[0], b'A', "{}", show(&payload));
        let fields = control_fields(&payload[1..]);
        let mut names: Vec<String> = fields[3..]
            .chunks(2)
            .map(|p| String::from_utf8_lossy(&p[0]).into_owned())
            .collect();
        names.sort();
        out.push((String::from_utf8_lossy(&fields[0]).into_owned(), names));
    }
    out.sort();
    out
}

/// A narrow token's survey carries its subscribe globs (`S`): every node
/// answers with only what they let it see (presence channels by what they
/// report on), intersected with the question's pattern; questions whose
/// scope is past the bounds (64 globs, 4 KiB), or malformed, go
/// unanswered. While a live node does not say it reads `S` (an older
/// version), the survey is a plain `Q`, answered in full and filtered by
/// the asker, as before.
#[test]
fn scoped_surveys_are_answered_at_the_source() {
    let redis = Redis::start(&[]);
    let nodes = start_nodes(&redis, 2);
    let mut s1 = Raw::backend(nodes[1].resp, "pw");
    s1.cmd(&[
        b"SUBSCRIBE",
        b"chat:a",
        b"secret:b",
        b"__presence__:chat:a",
        b"__presence__:secret:b",
    ]);
    for _ in 0..3 {
        s1.frame();
    }
    s1.cmd(&[
        b"PSUBSCRIBE",
        b"chat:*",
        b"secret:*",
        b"__presence__:chat:*",
    ]);
    s1.frame();
    s1.frame();
    until(Duration::from_secs(5), "both nodes live", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 2
    });
    let mut spy = Raw::connect(redis.addr);
    spy.cmd(&[b"SUBSCRIBE", b"herald:control:spy"]);
    let mut r = Raw::connect(redis.addr);
    let ask = |r: &mut Raw, tag: u8, fields: &[&[u8]]| {
        let mut all: Vec<&[u8]> = vec![b"spy", b"1"];
        all.extend_from_slice(fields);
        r.cmd(&[b"PUBLISH", b"herald:control", &control_frame(tag, &all)]);
    };
    let wait = Duration::from_millis(500);
    ask(&mut r, b'S', &[b"channels", b"1", b"chat:*"]);
    assert_eq!(
        answers(&mut spy, wait),
        [
            ("node0".to_string(), vec![]),
            (
                "node1".to_string(),
                vec!["__presence__:chat:a".into(), "chat:a".into()]
            )
        ]
    );
    // The question's own pattern too.
    ask(&mut r, b'S', &[b"channels", b"1", b"chat:*", b"chat:*"]);
    let a = answers(&mut spy, wait);
    assert_eq!(a[1], ("node1".to_string(), vec!["chat:a".to_string()]));
    ask(&mut r, b'S', &[b"patterns", b"2", b"chat:*", b"nothing"]);
    let a = answers(&mut spy, wait);
    assert_eq!(
        a[1].1,
        ["__presence__:chat:*", "chat:*"],
        "secret:* is not within the globs"
    );
    // No globs: nothing.
    ask(&mut r, b'S', &[b"channels", b"0"]);
    assert_eq!(answers(&mut spy, wait)[1].1, Vec::<String>::new());
    // A plain question is answered in full.
    ask(&mut r, b'Q', &[b"channels"]);
    assert_eq!(answers(&mut spy, wait)[1].1.len(), 4);
    // Hostile scopes: past the bounds, lying counts, no scope for NUMSUB.
    let many: Vec<Vec<u8>> = (0..65).map(|i| format!("g{i}").into_bytes()).collect();
    let mut f: Vec<&[u8]> = vec![b"channels", b"65"];
    f.extend(many.iter().map(|g| &g[..]));
    ask(&mut r, b'S', &f);
    let big = vec![b'*'; 4097];
    ask(&mut r, b'S', &[b"channels", b"1", &big]);
    ask(&mut r, b'S', &[b"channels", b"3", b"a"]);
    ask(&mut r, b'S', &[b"channels", b"99999999999999999999999"]);
    ask(&mut r, b'S', &[b"numsub", b"1", b"chat:*", b"chat:a"]);
    assert_eq!(answers(&mut spy, wait), []);
    // At the bounds: answered.
    let mut f: Vec<&[u8]> = vec![b"channels", b"64"];
    f.extend(many[..63].iter().map(|g| &g[..]));
    let last = vec![b'*'; 4096 - many[..63].iter().map(Vec::len).sum::<usize>()];
    f.push(&last);
    ask(&mut r, b'S', &f);
    assert_eq!(answers(&mut spy, wait)[1].1.len(), 4);

    // What node0 sends for a narrow token: `S` while every node reads it.
    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"]}),
        SECRET,
    );
    let mut c = Raw::connect(nodes[0].resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    let mut watch = Raw::connect(redis.addr);
    watch.cmd(&[b"SUBSCRIBE", b"herald:control"]);
    let question = |watch: &mut Raw| loop {
        let p = bulks(&watch.frame()).pop().unwrap();
        if p[0] != b'H' {
            return p;
        }
    };
    let want = b"*2\r\n$19\r\n__presence__:chat:a\r\n$6\r\nchat:a\r\n";
    assert_eq!(sorted_frame(&c.cmd(&[b"PUBSUB", b"CHANNELS"])), want);
    let q = question(&mut watch);
    assert_eq!(q[0], b'S', "{}", show(&q));
    assert_eq!(
        control_fields(&q[1..])[2..],
        [b"channels".to_vec(), b"1".to_vec(), b"chat:*".to_vec()]
    );
    assert_eq!(c.cmd(&[b"PUBSUB", b"NUMPAT"]), b":2\r\n");
    assert_eq!(question(&mut watch)[0], b'S');
    // A node of an older version (its heartbeat says nothing of `control`):
    // plain questions, answered in full and filtered here.
    r.cmd(&[b"PUBLISH", b"herald:control", br#"H{"name":"old"}"#]);
    until(Duration::from_secs(2), "old node listed", || {
        names(&get(nodes[0].http, "/api/nodes")).len() == 3
    });
    assert_eq!(sorted_frame(&c.cmd(&[b"PUBSUB", b"CHANNELS"])), want);
    let q = question(&mut watch);
    assert_eq!(q[0], b'Q', "{}", show(&q));
    assert_eq!(control_fields(&q[1..]).len(), 3, "no scope: {}", show(&q));
}

/// A node stopped cleanly (SIGTERM) announces its leave (`L` on the
/// control channel): the others drop it from `/api/nodes` at once, not
/// when its heartbeats age out (3.5 s; `kill -9` still takes that long,
/// `api_nodes_lists_the_live_nodes_and_drops_a_killed_one`). Its clients'
/// presence entries leave with their connections, with the leave pushed.
/// Started again under the same name, it is listed again.
#[test]
fn a_node_stopped_cleanly_leaves_at_once() {
    let redis = Redis::start(&[]);
    let (_dir, cfg) = temp_config(
        "nodes-leave",
        "[namespaces.room]\npresence = true\njoin_leave = true\n",
    );
    let url = format!("redis://{}", redis.addr);
    let start = |name: &str| {
        Herald::start(&[
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
            "--api-key",
            KEY,
        ])
    };
    let node0 = start("node0");
    let mut node1 = start("node1");
    until(Duration::from_secs(5), "both nodes live", || {
        names(&get(node0.http, "/api/nodes")).len() == 2
    });
    let mut watcher = Raw::backend(node0.resp, "pw");
    watcher.cmd(&[b"SUBSCRIBE", b"__presence__:room:1"]);
    let tok = hs256(json!({"sub": "ann", "exp": unix_now() + 600}), SECRET);
    let mut ann = Raw::connect(node1.resp);
    assert_eq!(ann.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    ann.cmd(&[b"SUBSCRIBE", b"room:1"]);
    let join = show(&watcher.frame());
    assert!(join.contains("join") && join.contains("ann"), "{join}");
    let mut admin = Raw::backend(node0.resp, "pw");
    let members = admin.cmd(&[b"SMEMBERS", b"__presence__:room:1"]);
    assert!(show(&members).contains("ann"), "{}", show(&members));

    let sent = Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &node1.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let took = until(Duration::from_secs(3), "node1 dropped", || {
        names(&get(node0.http, "/api/nodes")) == ["node0"]
    });
    eprintln!("a node stopped cleanly left /api/nodes after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let leave = show(&watcher.try_frame(Duration::from_secs(2)).expect("leave"));
    assert!(leave.contains("leave") && leave.contains("ann"), "{leave}");
    assert_eq!(admin.cmd(&[b"SMEMBERS", b"__presence__:room:1"]), b"*0\r\n");
    eprintln!("its client's presence left after {:?}", sent.elapsed());
    assert!(node1.terminate().success());
    // Not dropped for good: the same name comes back with its heartbeats.
    let _node1 = start("node1");
    until(Duration::from_secs(3), "node1 back", || {
        names(&get(node0.http, "/api/nodes")).len() == 2
    });
}
