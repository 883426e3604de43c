//! Data commands in engine mode: three Herald nodes on one `redis-server`
//! serve strings, hashes, lists, sets, sorted sets, streams, key commands
//! and transactions from Redis, so every node gives one answer. The
//! differential scripts of the `*_differential.rs` tests run with their
//! commands spread round-robin over the three nodes and are compared byte
//! for byte with a reference `redis-server`, in RESP2 and RESP3; then
//! cross-node blocking, WATCH, MULTI with PUBLISH, the dedicated-connection
//! bound, history streams, permissions and Redis going away.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::diff::{normalise, script, sorted_frame, Step};
use common::*;

const CONFIG: &str = "[namespaces.chat]\nhistory_size = 100\nallow_anonymous = true\n";
const SECRET: &str = "engine-keyspace-secret";

/// `n` nodes on `redis`, with the given extra flags.
fn nodes(redis: &Redis, n: usize, extra: &[&str]) -> (std::path::PathBuf, Vec<Herald>) {
    let (dir, cfg) = temp_config("engine-ks", CONFIG);
    let url = format!("redis://{}", redis.addr);
    let nodes = (0..n)
        .map(|i| {
            let mut args = vec![
                "--config".to_string(),
                cfg.clone(),
                "--engine".into(),
                url.clone(),
                "--node-name".into(),
                format!("node{i}"),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Herald::start(&refs)
        })
        .collect();
    (dir, nodes)
}

/// Commands that tie a connection to its node from then on.
fn sticky(words: &[Vec<u8>]) -> bool {
    const STICKY: &[&str] = &[
        "HELLO",
        "MULTI",
        "WATCH",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "CLIENT",
        "AUTH",
        "RESET",
        "SELECT",
        "BLPOP",
        "BRPOP",
        "BLMOVE",
        "BRPOPLPUSH",
        "XREAD",
        "XREADGROUP",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "QUIT",
    ];
    words
        .first()
        .is_some_and(|w| STICKY.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(w)))
}

/// Runs a script with each logical connection's commands spread
/// round-robin over `addrs` (one physical connection per node), until the
/// connection does something stateful; FLUSHALL/FLUSHDB go to `flush`.
fn run_spread(addrs: &[SocketAddr], flush: SocketAddr, steps: &[Step]) -> Vec<String> {
    struct Logical {
        phys: Vec<Option<Raw>>,
        pinned: Option<usize>,
        last: usize,
    }
    let mut conns: Vec<Logical> = Vec::new();
    let mut log = Vec::new();
    let mut turn = 0usize;
    let mut flusher = Raw::connect(flush);
    for step in steps {
        let c = match step {
            Step::Cmd(c, ..)
            | Step::Sorted(c, _)
            | Step::Shape(c, _)
            | Step::Raw(c, ..)
            | Step::Read(c, _)
            | Step::Closed(c)
            | Step::Quiet(c) => *c,
            Step::Sleep(ms) => {
                std::thread::sleep(Duration::from_millis(*ms));
                continue;
            }
        };
        while conns.len() <= c {
            conns.push(Logical {
                phys: (0..addrs.len()).map(|_| None).collect(),
                pinned: None,
                last: 0,
            });
        }
        let words = match step {
            Step::Cmd(_, w, _) | Step::Sorted(_, w) | Step::Shape(_, w) => Some(w.clone()),
            _ => None,
        };
        if let Some(w) = &words {
            if w[0].eq_ignore_ascii_case(b"FLUSHALL") || w[0].eq_ignore_ascii_case(b"FLUSHDB") {
                let r = flusher.cmd(&[b"FLUSHALL"]);
                log.push(format!("{c} {}", show(&r)));
                continue;
            }
        }
        let l = &mut conns[c];
        let node = match (l.pinned, &words) {
            (Some(n), _) => n,
            (None, Some(w)) => {
                turn += 1;
                let n = turn % addrs.len();
                if sticky(w) {
                    l.pinned = Some(n);
                }
                n
            }
            (None, None) => {
                l.pinned = Some(l.last);
                l.last
            }
        };
        l.last = node;
        let conn = l.phys[node].get_or_insert_with(|| Raw::connect(addrs[node]));
        let n = match step {
            Step::Cmd(_, args, n) => {
                let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                conn.send(&refs);
                *n
            }
            Step::Raw(_, bytes, n) => {
                conn.send_raw(bytes);
                *n
            }
            Step::Read(_, n) => *n,
            Step::Sorted(_, args) | Step::Shape(_, args) => {
                let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                conn.send(&refs);
                let f = conn.try_frame(TIMEOUT).unwrap_or_default();
                let f = match step {
                    Step::Sorted(..) => sorted_frame(&f),
                    _ => {
                        let end = f.windows(2).position(|w| w == b"\r\n").map_or(0, |i| i + 2);
                        f[..end].to_vec()
                    }
                };
                log.push(format!("{c} {}", show(&normalise(&f))));
                0
            }
            Step::Closed(_) => {
                log.push(format!("{c} closed={}", conn.closed()));
                0
            }
            Step::Quiet(_) => {
                let got = conn.try_frame(Duration::from_millis(150));
                log.push(format!("{c} quiet: {:?}", got.map(|f| show(&f))));
                0
            }
            Step::Sleep(_) => 0,
        };
        for _ in 0..n {
            let f = conn.try_frame(TIMEOUT);
            log.push(format!(
                "{c} {}",
                f.map(|f| show(&normalise(&f)))
                    .unwrap_or_else(|| "<no reply>".into())
            ));
        }
    }
    log
}

/// Undoes Rust string escapes of a script literal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(ch) = it.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some('\n') => {
                while it.peek().is_some_and(|c| c.is_whitespace()) {
                    it.next();
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => {}
        }
    }
    out
}

/// The scripts the differential tests pass to `diff`/`diff_both`, with
/// the name of the test they come from.
fn extracted_scripts() -> Vec<(String, String)> {
    let sources = [
        (
            "strings_hashes",
            include_str!("strings_hashes_differential.rs"),
        ),
        ("lists", include_str!("lists_differential.rs")),
        ("sets", include_str!("sets_differential.rs")),
        ("zsets", include_str!("zsets_differential.rs")),
        ("keys_streams", include_str!("keys_streams_differential.rs")),
    ];
    let re =
        regex::Regex::new(r#"(?s)\b(diff|diff_both|diff_limit)\(\s*"((?:[^"\\]|\\.)*)""#).unwrap();
    let mut out = Vec::new();
    for (file, src) in sources {
        for (i, cap) in re.captures_iter(src).enumerate() {
            let text = unescape(&cap[2]);
            let line_ok = |l: &str| {
                let l = l.trim();
                l.is_empty()
                    || l.starts_with('#')
                    || l.split(' ')
                        .next()
                        .is_some_and(|w| w.parse::<usize>().is_ok())
            };
            if !text.lines().all(line_ok) || cap[1] == *"diff_limit" {
                continue;
            }
            let text = if &cap[1] == "diff_both" {
                format!("0 1 FLUSHALL\n{text}\n0 1 FLUSHALL\n0 1 HELLO 3\n{text}")
            } else {
                text
            };
            out.push((format!("{file}#{i}"), text));
        }
    }
    out
}

fn compare(name: &str, want: &[String], got: &[String]) -> Option<String> {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w != g {
            return Some(format!(
                "{name}: step {i} differs\n redis:  {w}\n herald: {g}"
            ));
        }
    }
    (want.len() != got.len()).then(|| format!("{name}: transcript lengths differ"))
}

#[test]
fn differential_scripts_agree_across_three_nodes() {
    let reference = Redis::start(&[]);
    let engine = Redis::start(&[]);
    let (_d, nodes) = nodes(&engine, 3, &[]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|h| h.resp).collect();
    let scripts = extracted_scripts();
    assert!(scripts.len() >= 15, "found {} scripts", scripts.len());
    let mut failures = Vec::new();
    for (name, text) in &scripts {
        let steps = script(text);
        Raw::connect(reference.addr).cmd(&[b"FLUSHALL"]);
        Raw::connect(engine.addr).cmd(&[b"FLUSHALL"]);
        let want = run_spread(&[reference.addr; 3], reference.addr, &steps);
        let got = run_spread(&addrs, engine.addr, &steps);
        if let Some(f) = compare(name, &want, &got) {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scripts differ:\n{}",
        failures.len(),
        scripts.len(),
        failures.join("\n\n")
    );
}

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The engine's key of `kind` for `channel`, as found in Redis (its exact
/// form, hash tags included, is the engine's business).
fn engine_key(redis: &Redis, kind: &str, channel: &str) -> String {
    let pattern = format!("herald:{kind}:*");
    let r = Raw::connect(redis.addr).cmd(&[b"KEYS", pattern.as_bytes()]);
    let text = String::from_utf8_lossy(&r).into_owned();
    text.split("\r\n")
        .find(|l| l.starts_with("herald:") && l.contains(channel))
        .unwrap_or_else(|| panic!("no {kind} key of {channel} in {text:?}"))
        .to_string()
}

/// `INFO clients`' `blocked_clients` of a Redis.
fn blocked_clients(redis: &Redis) -> u64 {
    let info = Raw::connect(redis.addr).cmd(&[b"INFO", b"clients"]);
    let text = String::from_utf8_lossy(&info).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn blocking_commands_are_woken_from_other_nodes() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 3, &[]);
    let mut a = Raw::connect(n[0].resp);
    let mut b = Raw::connect(n[1].resp);
    // A worker on node 0 waits; a producer on node 1 pushes. A PING
    // pipelined behind the BRPOP is answered after it, in order.
    let mut pipeline = encode(&[b"BRPOP", b"jobs", b"5"]);
    pipeline.extend(encode(&[b"PING"]));
    a.send_raw(&pipeline);
    sleep(150);
    assert_eq!(b.cmd(&[b"LPUSH", b"jobs", b"j1"]), b":1\r\n");
    assert_eq!(a.frame(), b"*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n");
    assert_eq!(a.frame(), b"+PONG\r\n");
    // A timeout is a null array (RESP2), a null (RESP3).
    let t = Instant::now();
    assert_eq!(a.cmd(&[b"BRPOP", b"jobs", b"0.2"]), b"*-1\r\n");
    assert!(t.elapsed() >= Duration::from_millis(180));
    assert_eq!(
        a.cmd(&[b"BLMOVE", b"jobs", b"x", b"LEFT", b"RIGHT", b"0.1"]),
        b"*-1\r\n"
    );
    let mut c3 = Raw::connect(n[2].resp);
    c3.cmd(&[b"HELLO", b"3"]);
    assert_eq!(c3.cmd(&[b"BLPOP", b"jobs", b"0.1"]), b"_\r\n");
    // XREAD BLOCK on node 2, woken by an XADD on node 0.
    c3.send(&[b"XREAD", b"BLOCK", b"5000", b"STREAMS", b"events", b"$"]);
    sleep(150);
    assert_eq!(
        a.cmd(&[b"XADD", b"events", b"1-1", b"f", b"v"]),
        b"$3\r\n1-1\r\n"
    );
    assert_eq!(
        c3.frame(),
        b"%1\r\n$6\r\nevents\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    // Inside MULTI a blocking pop does not block (Redis answers at once).
    a.cmd(&[b"MULTI"]);
    a.cmd(&[b"BLPOP", b"empty", b"0"]);
    a.cmd(&[b"BLMOVE", b"empty", b"x", b"LEFT", b"RIGHT", b"0"]);
    assert_eq!(a.cmd(&[b"EXEC"]), b"*2\r\n*-1\r\n$-1\r\n");
}

#[test]
fn the_lock_pattern_works_across_nodes() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 3, &[]);
    let mut a = Raw::connect(n[0].resp);
    let mut b = Raw::connect(n[1].resp);
    let mut c = Raw::connect(n[2].resp);
    assert_eq!(
        a.cmd(&[b"SET", b"lock", b"t1", b"NX", b"EX", b"10"]),
        b"+OK\r\n"
    );
    assert_eq!(
        b.cmd(&[b"SET", b"lock", b"t2", b"NX", b"EX", b"10"]),
        b"$-1\r\n"
    );
    // Release: WATCH, GET, MULTI, DEL, EXEC.
    assert_eq!(a.cmd(&[b"WATCH", b"lock"]), b"+OK\r\n");
    assert_eq!(a.cmd(&[b"GET", b"lock"]), b"$2\r\nt1\r\n");
    assert_eq!(a.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.cmd(&[b"DEL", b"lock"]), b"+QUEUED\r\n");
    assert_eq!(a.cmd(&[b"EXEC"]), b"*1\r\n:1\r\n");
    assert_eq!(
        c.cmd(&[b"SET", b"lock", b"t3", b"NX", b"EX", b"10"]),
        b"+OK\r\n"
    );
    // A write on another node between WATCH and EXEC aborts the release.
    assert_eq!(a.cmd(&[b"WATCH", b"lock"]), b"+OK\r\n");
    assert_eq!(
        b.cmd(&[b"SET", b"lock", b"t4", b"XX", b"KEEPTTL"]),
        b"+OK\r\n"
    );
    a.cmd(&[b"MULTI"]);
    a.cmd(&[b"DEL", b"lock"]);
    assert_eq!(a.cmd(&[b"EXEC"]), b"*-1\r\n");
    assert_eq!(c.cmd(&[b"GET", b"lock"]), b"$2\r\nt4\r\n");
    // UNWATCH lets the watch go: a later write does not abort.
    a.cmd(&[b"WATCH", b"lock"]);
    a.cmd(&[b"UNWATCH"]);
    b.cmd(&[b"SET", b"lock", b"t5"]);
    a.cmd(&[b"MULTI"]);
    a.cmd(&[b"GET", b"lock"]);
    a.cmd(&[b"PING"]);
    assert_eq!(a.cmd(&[b"EXEC"]), b"*2\r\n$2\r\nt5\r\n+PONG\r\n");
    // Errors inside EXEC stay in their places.
    a.cmd(&[b"MULTI"]);
    a.cmd(&[b"SET", b"s", b"x"]);
    a.cmd(&[b"INCR", b"s"]);
    a.cmd(&[b"ECHO", b"hi"]);
    assert_eq!(
        a.cmd(&[b"EXEC"]),
        b"*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n$2\r\nhi\r\n"
    );
}

#[test]
fn set_and_publish_in_one_multi_reach_another_node() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 3, &[]);
    let mut sub = Raw::connect(n[2].resp);
    sub.cmd(&[b"SUBSCRIBE", b"invalidations"]);
    let mut w = Raw::connect(n[0].resp);
    w.cmd(&[b"SETEX", b"user:1", b"3600", b"ann"]);
    w.cmd(&[b"MULTI"]);
    w.cmd(&[b"SETEX", b"user:1", b"3600", b"bob"]);
    w.cmd(&[b"PUBLISH", b"invalidations", b"user:1"]);
    // This node has no subscriber: PUBLISH counts this node's receivers.
    assert_eq!(w.cmd(&[b"EXEC"]), b"*2\r\n+OK\r\n:0\r\n");
    assert_eq!(
        sub.frame(),
        b"*3\r\n$7\r\nmessage\r\n$13\r\ninvalidations\r\n$6\r\nuser:1\r\n"
    );
    assert_eq!(
        Raw::connect(n[1].resp).cmd(&[b"GET", b"user:1"]),
        b"$3\r\nbob\r\n"
    );
    // On a history channel the publish appends inside the transaction too.
    w.cmd(&[b"MULTI"]);
    w.cmd(&[b"DEL", b"user:1"]);
    w.cmd(&[b"PUBLISH", b"chat:inv", b"user:1"]);
    assert_eq!(w.cmd(&[b"EXEC"]), b"*2\r\n:1\r\n:0\r\n");
    let r = Raw::connect(n[1].resp).cmd(&[b"XRANGE", b"chat:inv", b"-", b"+"]);
    assert_eq!(
        r,
        b"*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\ndata\r\n$6\r\nuser:1\r\n"
    );
    // WATCH of a history channel watches its history: a publish on
    // another node aborts the transaction, as in memory mode.
    assert_eq!(w.cmd(&[b"WATCH", b"chat:inv"]), b"+OK\r\n");
    Raw::connect(n[2].resp).cmd(&[b"PUBLISH", b"chat:inv", b"again"]);
    w.cmd(&[b"MULTI"]);
    w.cmd(&[b"GET", b"user:1"]);
    assert_eq!(w.cmd(&[b"EXEC"]), b"*-1\r\n");
}

#[test]
fn dedicated_connections_are_bounded_and_released_on_disconnect() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 1, &["--engine-dedicated-connections", "2"]);
    let mut w1 = Raw::connect(n[0].resp);
    let mut w2 = Raw::connect(n[0].resp);
    w1.send(&[b"BLPOP", b"q", b"0"]);
    w2.send(&[b"BLPOP", b"q", b"0"]);
    sleep(200);
    assert_eq!(blocked_clients(&engine), 2);
    let mut w3 = Raw::connect(n[0].resp);
    let r = w3.cmd(&[b"BLPOP", b"q", b"0"]);
    assert!(r.starts_with(b"-ERR engine busy"), "{}", show(&r));
    let r = w3.cmd(&[b"WATCH", b"q"]);
    assert!(r.starts_with(b"-ERR engine busy"), "{}", show(&r));
    // Non-blocking commands still run on the shared connection.
    assert_eq!(w3.cmd(&[b"LLEN", b"q"]), b":0\r\n");
    // A blocked client that leaves drops its connection: Redis unblocks
    // it, and an element pushed afterwards is not lost to it.
    drop(w1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked_clients(&engine) != 1 {
        assert!(
            Instant::now() < deadline,
            "the left client is still blocked in Redis"
        );
        sleep(20);
    }
    assert_eq!(w3.cmd(&[b"BLPOP", b"q", b"0.1"]), b"*-1\r\n");
    assert_eq!(w3.cmd(&[b"RPUSH", b"q", b"a", b"b"]), b":2\r\n");
    assert_eq!(w2.frame(), b"*2\r\n$1\r\nq\r\n$1\r\na\r\n");
    assert_eq!(
        w3.cmd(&[b"LRANGE", b"q", b"0", b"-1"]),
        b"*1\r\n$1\r\nb\r\n"
    );
}

#[test]
fn xadd_to_a_history_channel_goes_through_the_engine() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 3, &[]);
    let mut sub = Raw::connect(n[2].resp);
    sub.cmd(&[b"SUBSCRIBE", b"chat:room"]);
    let mut a = Raw::connect(n[0].resp);
    assert_eq!(a.cmd(&[b"PUBLISH", b"chat:room", b"first"]), b":0\r\n");
    assert_eq!(
        a.cmd(&[b"XADD", b"chat:room", b"*", b"data", b"second"]),
        b"$3\r\n2-0\r\n"
    );
    assert_eq!(
        a.cmd(&[b"XADD", b"chat:room", b"*", b"user", b"ann", b"text", b"hi"]),
        b"$3\r\n3-0\r\n"
    );
    for want in [&b"first"[..], b"second", br#"{"text":"hi","user":"ann"}"#] {
        let f = sub.frame();
        assert!(f.ends_with(&[want, b"\r\n"].concat()), "{}", show(&f));
    }
    // Visible on another node as the stream of the channel's name.
    let mut b = Raw::connect(n[1].resp);
    assert_eq!(b.cmd(&[b"XLEN", b"chat:room"]), b":3\r\n");
    let r = b.cmd(&[b"XRANGE", b"chat:room", b"3-0", b"+"]);
    assert_eq!(
        r,
        b"*1\r\n*2\r\n$3\r\n3-0\r\n*4\r\n$4\r\nuser\r\n$3\r\nann\r\n$4\r\ntext\r\n$2\r\nhi\r\n"
    );
    // XREAD answers with the channel's name, not the engine's key.
    let r = b.cmd(&[b"XREAD", b"COUNT", b"1", b"STREAMS", b"chat:room", b"2-0"]);
    assert!(
        r.starts_with(b"*1\r\n*2\r\n$9\r\nchat:room\r\n"),
        "{}",
        show(&r)
    );
    // Inside MULTI too, in the transaction's order.
    a.cmd(&[b"MULTI"]);
    a.cmd(&[b"XADD", b"chat:room", b"*", b"data", b"fourth"]);
    a.cmd(&[b"XLEN", b"chat:room"]);
    a.cmd(&[b"XADD", b"chat:room", b"7-0", b"data", b"x"]);
    let r = a.cmd(&[b"EXEC"]);
    assert!(
        r.starts_with(b"*3\r\n$3\r\n4-0\r\n:4\r\n-ERR on the Redis engine, XADD"),
        "{}",
        show(&r)
    );
    let f = sub.frame();
    assert!(f.ends_with(b"fourth\r\n"), "{}", show(&f));
    assert_eq!(a.cmd(&[b"XDEL", b"chat:room", b"4-0"]), b":1\r\n");
    // Explicit ids are refused: the channel's offsets number its entries.
    let r = a.cmd(&[b"XADD", b"chat:room", b"9-0", b"f", b"v"]);
    assert!(
        r.starts_with(b"-ERR on the Redis engine, XADD"),
        "{}",
        show(&r)
    );
    // History (and so recovery) on any node turns an entry's fields into
    // its payload as memory mode does: `data`, else a JSON object.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = n[1].http;
    let datas = rt.block_on(async move {
        let mut ws = ws_connect(http, None).await;
        let r = ws_call(
            &mut ws,
            1,
            serde_json::json!({"op": "history", "channel": "chat:room"}),
        )
        .await;
        r["result"]["publications"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|p| p["data"].to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(datas.len(), 3, "{datas:?}");
    assert_eq!(&datas[..2], &["\"first\"", "\"second\""], "{datas:?}");
    assert!(
        datas[2].contains("ann") && datas[2].contains("hi"),
        "{datas:?}"
    );
    // A plain Redis client sees the same stream under the engine's key.
    // (The key's name is the engine's: found, not built here.)
    let key = engine_key(&engine, "history", "chat:room");
    let r = Raw::connect(engine.addr).cmd(&[b"XLEN", key.as_bytes()]);
    assert_eq!(r, b":3\r\n");
}

#[test]
fn engine_keys_are_hidden_and_tokens_count_their_own_keys() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(
        &engine,
        2,
        &["--requirepass", "pw", "--jwt-hmac-secret", SECRET],
    );
    let mut admin = Raw::backend(n[0].resp, "pw");
    admin.cmd(&[b"PUBLISH", b"chat:1", b"x"]);
    admin.cmd(&[b"SET", b"chat:a", b"1"]);
    admin.cmd(&[b"SET", b"secret:b", b"2"]);
    admin.cmd(&[b"HSET", b"chat:h", b"f", b"v"]);
    // The engine's history and meta keys exist in Redis …
    let all = Raw::connect(engine.addr).cmd(&[b"DBSIZE"]);
    assert_eq!(all, b":5\r\n", "{}", show(&all));
    // … but no client sees them.
    let mut other = Raw::backend(n[1].resp, "pw");
    assert_eq!(other.cmd(&[b"DBSIZE"]), b":3\r\n");
    let keys = other.cmd(&[b"KEYS", b"*"]);
    assert!(!show(&keys).contains("herald:"), "{}", show(&keys));
    assert!(keys.starts_with(b"*3\r\n"), "{}", show(&keys));
    let scan = other.cmd(&[b"SCAN", b"0", b"COUNT", b"1000"]);
    assert!(!show(&scan).contains("herald:"), "{}", show(&scan));
    let meta = engine_key(&engine, "meta", "chat:1");
    let r = other.cmd(&[b"GET", meta.as_bytes()]);
    assert!(
        r.starts_with(b"-ERR this key belongs to Herald's engine"),
        "{}",
        show(&r)
    );
    let history = engine_key(&engine, "history", "chat:1");
    let r = other.cmd(&[b"DEL", history.as_bytes()]);
    assert!(r.starts_with(b"-ERR this key belongs"), "{}", show(&r));
    let r = other.cmd(&[b"FLUSHALL"]);
    assert!(
        r.starts_with(b"-ERR FLUSHALL is not served"),
        "{}",
        show(&r)
    );
    // A narrow token counts only the keys it may read, and its key
    // permissions are checked before anything reaches Redis.
    let tok = hs256(
        serde_json::json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["chat:*"], "publish": ["chat:*"]}),
        SECRET,
    );
    let mut t = Raw::connect(n[1].resp);
    assert_eq!(t.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    // chat:a and chat:h (the history of chat:1 is the engine's).
    assert_eq!(t.cmd(&[b"DBSIZE"]), b":2\r\n");
    assert_eq!(t.cmd(&[b"GET", b"chat:a"]), b"$1\r\n1\r\n");
    let r = t.cmd(&[b"GET", b"secret:b"]);
    assert!(r.starts_with(b"-NOPERM"), "{}", show(&r));
    let r = t.cmd(&[b"KEYS", b"*"]);
    assert!(r.starts_with(b"-NOPERM"), "{}", show(&r));
}

#[test]
fn redis_down_is_an_error_never_a_hang() {
    let mut engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 1, &[]);
    let mut c = Raw::connect(n[0].resp);
    assert_eq!(c.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // Dedicated connections in the pool, closed by the restart below.
    assert_eq!(c.cmd(&[b"BLPOP", b"q", b"0.05"]), b"*-1\r\n");
    c.cmd(&[b"MULTI"]);
    c.cmd(&[b"GET", b"k"]);
    assert_eq!(c.cmd(&[b"EXEC"]), b"*1\r\n$1\r\nv\r\n");
    let port = engine.addr.port();
    let _ = engine.child.kill();
    let _ = engine.child.wait();
    for cmd in [
        &[&b"GET"[..], b"k"][..],
        &[b"BLPOP", b"q", b"1"],
        &[b"WATCH", b"k"],
        &[b"DBSIZE"],
    ] {
        let t = Instant::now();
        let r = c.cmd(cmd);
        assert!(
            r.starts_with(b"-ERR engine unavailable") || r.starts_with(b"-TRYAGAIN"),
            "{}: {}",
            show(&encode(cmd)),
            show(&r)
        );
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "took {:?}",
            t.elapsed()
        );
    }
    c.cmd(&[b"MULTI"]);
    c.cmd(&[b"SET", b"k", b"v"]);
    let r = c.cmd(&[b"EXEC"]);
    assert!(r.starts_with(b"-ERR engine unavailable"), "{}", show(&r));
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    // Redis back (empty): data commands, blocking ones and transactions
    // work again, on fresh connections.
    let _engine = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.cmd(&[b"SET", b"k", b"w"]) != b"+OK\r\n" {
        assert!(Instant::now() < deadline, "SET never worked again");
        sleep(100);
    }
    // At once (before the node noticed the new run id, the pooled
    // connections are found closed and replaced), then after it did.
    for _ in 0..2 {
        assert_eq!(c.cmd(&[b"BLPOP", b"q", b"0.05"]), b"*-1\r\n");
        sleep(1500);
    }
    assert_eq!(c.cmd(&[b"WATCH", b"k"]), b"+OK\r\n");
    c.cmd(&[b"MULTI"]);
    c.cmd(&[b"GET", b"k"]);
    assert_eq!(c.cmd(&[b"EXEC"]), b"*1\r\n$1\r\nw\r\n");
}

/// xorshift, for reproducible random sequences.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// One random operation over a few keys of every type (wrong types
/// included), as a step on connection `c`.
fn random_step(r: &mut Rng, c: usize) -> Step {
    let k = r.pick(&["k0", "k1", "k2", "k3", "k4"]).to_string();
    let k2 = r.pick(&["k0", "k1", "k2", "k3", "k4"]).to_string();
    let v = r.pick(&["a", "b", "c", "10", "-3", "2.5", ""]).to_string();
    let n = (r.below(7) as i64 - 2).to_string();
    let id = format!("{}-{}", r.below(5) + 1, r.below(3));
    let words: Vec<String> = match r.below(44) {
        0 => vec!["SET".into(), k, v],
        1 => vec!["GET".into(), k],
        2 => vec!["APPEND".into(), k, v],
        3 => vec!["INCRBY".into(), k, n],
        4 => vec!["GETRANGE".into(), k, n.clone(), "-1".into()],
        5 => vec!["MGET".into(), k, k2],
        6 => vec!["LPUSH".into(), k, v.clone(), v],
        7 => vec!["RPUSH".into(), k, v],
        8 => vec!["LPOP".into(), k],
        9 => vec!["RPOP".into(), k, n],
        10 => vec!["LRANGE".into(), k, n, "-1".into()],
        11 => vec!["LREM".into(), k, n, v],
        12 => vec!["LINSERT".into(), k, "BEFORE".into(), v.clone(), v],
        13 => vec!["LPOS".into(), k, v],
        14 => vec!["HSET".into(), k, v.clone(), n],
        15 => vec!["HGET".into(), k, v],
        16 => vec!["HINCRBY".into(), k, v, n],
        17 => return Step::Sorted(c, vec![b"HGETALL".to_vec(), k.into_bytes()]),
        18 => vec!["HDEL".into(), k, v],
        19 => vec!["SADD".into(), k, v.clone(), n],
        20 => vec!["SREM".into(), k, v],
        21 => return Step::Sorted(c, vec![b"SMEMBERS".to_vec(), k.into_bytes()]),
        22 => vec!["SISMEMBER".into(), k, v],
        23 => vec!["SINTERSTORE".into(), k, k2, "k1".into()],
        24 => vec!["ZADD".into(), k, n, v],
        25 => vec!["ZINCRBY".into(), k, "1.5".into(), v],
        26 => vec![
            "ZRANGE".into(),
            k,
            "0".into(),
            "-1".into(),
            "WITHSCORES".into(),
        ],
        27 => vec!["ZSCORE".into(), k, v],
        28 => vec!["ZPOPMIN".into(), k, n],
        29 => vec![
            "ZRANGEBYSCORE".into(),
            k,
            "-inf".into(),
            "+inf".into(),
            "WITHSCORES".into(),
        ],
        30 => vec!["ZRANK".into(), k, v],
        31 => vec!["XADD".into(), k, id, "f".into(), v],
        32 => vec!["XRANGE".into(), k, "-".into(), "+".into()],
        33 => vec!["XDEL".into(), k, id],
        34 => vec!["XTRIM".into(), k, "MAXLEN".into(), n],
        35 => vec!["XLEN".into(), k],
        36 => vec!["DEL".into(), k],
        37 => vec!["EXISTS".into(), k, k2],
        38 => vec!["TYPE".into(), k],
        39 => vec!["EXPIRE".into(), k, "100".into()],
        40 => vec!["TTL".into(), k],
        41 => vec!["PERSIST".into(), k],
        42 => vec!["INCRBYFLOAT".into(), k, "0.1".into()],
        _ => vec!["ZREVRANGE".into(), k, "0".into(), n, "WITHSCORES".into()],
    };
    Step::Cmd(c, words.into_iter().map(String::into_bytes).collect(), 1)
}

#[test]
fn random_operations_agree_across_three_nodes() {
    let reference = Redis::start(&[]);
    let engine = Redis::start(&[]);
    let (_d, nodes) = nodes(&engine, 3, &[]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|h| h.resp).collect();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut steps = vec![Step::Cmd(0, vec![b"FLUSHALL".to_vec()], 1)];
    // RESP2: one connection whose commands go round-robin over the nodes.
    for _ in 0..1500 {
        steps.push(random_step(&mut r, 0));
    }
    steps.push(Step::Cmd(0, vec![b"FLUSHALL".to_vec()], 1));
    // RESP3: three connections (one per node after HELLO), in turn.
    for c in 1..=3 {
        steps.push(Step::Cmd(c, vec![b"HELLO".to_vec(), b"3".to_vec()], 1));
    }
    for i in 0..1500 {
        steps.push(random_step(&mut r, 1 + i % 3));
    }
    let want = run_spread(&[reference.addr; 3], reference.addr, &steps);
    let got = run_spread(&addrs, engine.addr, &steps);
    assert!(
        want.len() > 3000 && want.iter().filter(|l| l.contains("WRONGTYPE")).count() > 10,
        "{:?}",
        &want[..20]
    );
    if let Some(f) = compare("random", &want, &got) {
        panic!("{f}");
    }
}

/// A pipeline of data commands goes to Redis back to back and is
/// answered in order; an error of Herald's own checks and a command the
/// node runs itself keep their places.
#[test]
fn pipelined_commands_keep_their_order() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(&engine, 2, &[]);
    let mut c = Raw::connect(n[0].resp);
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        bytes.extend(encode(&[b"RPUSH", b"l", i.to_string().as_bytes()]));
        want.extend(format!(":{}\r\n", i + 1).into_bytes());
        if i % 50 == 7 {
            bytes.extend(encode(&[b"GET"]));
            want.extend(b"-ERR wrong number of arguments for 'get' command\r\n");
            bytes.extend(encode(&[b"PING"]));
            want.extend(b"+PONG\r\n");
            bytes.extend(encode(&[b"LLEN", b"l"]));
            want.extend(format!(":{}\r\n", i + 1).into_bytes());
        }
    }
    c.send_raw(&bytes);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want.len() && Instant::now() < deadline {
        if let Some(f) = c.try_frame(Duration::from_millis(200)) {
            got.extend(f);
        }
    }
    assert_eq!(show(&got), show(&want));
    let r = Raw::connect(n[1].resp).cmd(&[b"LINDEX", b"l", b"499"]);
    assert_eq!(r, b"$3\r\n499\r\n");
}

/// A token that expires while its client is blocked ends the wait: the
/// client gets `-NOPERM token expired`, and Redis no longer holds it.
#[test]
fn a_token_expiring_while_blocked_releases_the_wait() {
    let engine = Redis::start(&[]);
    let (_d, n) = nodes(
        &engine,
        1,
        &[
            "--requirepass",
            "pw",
            "--jwt-hmac-secret",
            SECRET,
            "--jwt-leeway",
            "0s",
        ],
    );
    let tok = hs256(
        serde_json::json!({"sub": "u", "exp": unix_now() + 2, "subscribe": ["chat:*"], "publish": ["chat:*"]}),
        SECRET,
    );
    let mut c = Raw::connect(n[0].resp);
    assert_eq!(c.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    c.send(&[b"BLPOP", b"chat:q", b"0"]);
    sleep(300);
    assert_eq!(blocked_clients(&engine), 1);
    let f = c
        .try_frame(Duration::from_secs(5))
        .expect("an answer at exp");
    assert_eq!(f, b"-NOPERM token expired\r\n");
    assert!(c.closed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked_clients(&engine) != 0 {
        assert!(Instant::now() < deadline, "still blocked in Redis");
        sleep(20);
    }
}
