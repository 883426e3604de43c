//! The checks behind Herald's fuzz targets, one public function per target.
//!
//! Each function takes the fuzzer's bytes, drives one entry point of Herald
//! and panics when an invariant breaks (a panic inside Herald counts too).
//! `fuzz_targets/*.rs` are one-line wrappers; `tests/fuzz_regressions.rs`
//! includes this same file, so every crash replays under plain `cargo test`
//! on stable. Only Herald's own dependencies are used here for that reason.
//!
//! - [`resp_parse`]: `resp::parse` framing, with a re-encoding round trip.
//! - [`resp_dispatch`]: requests through a real in-process server on
//!   loopback (a `Conn` needs a socket), replies checked as RESP.
//! - [`ws_decode`]: the WebSocket JSON op decoder and the JSON encoding of
//!   deliveries.
//! - [`glob`]: `Glob` against a reference matcher, and the registry's
//!   pattern trie against `Glob`.
//! - [`jwt_claims`]: `Authenticator::verify_token` and the permission rules.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use herald::auth::{pattern_within, Authenticator, Claims, Identity, TokenError};
use herald::config::{Config, NamespaceOptions, Options};
use herald::hub::glob::{glob_match, Glob};
use herald::hub::{Delivery, DeliveryKind, Publication, Registry, Space, Subscriber};
use herald::resp::parse::{self, ParseLimits, Request};
use herald::ws::protocol as proto;

// ---------------------------------------------------------------------------
// resp_parse

/// The arguments of a parsed request, copied out.
fn request_args(buf: &[u8], r: &Request) -> Vec<Vec<u8>> {
    match &r.owned {
        Some(words) => words.clone(),
        None => r.args.iter().map(|&(a, b)| buf[a..b].to_vec()).collect(),
    }
}

fn encode_multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Redis's `string2ll` as a plain reference: decimal, optional `-`, no `+`,
/// no leading zeros, no `-0`, within i64.
fn reference_i64(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || text == "-0"
    {
        return None;
    }
    text.parse().ok()
}

/// Parses `data` as a pipeline, as `resp::connection::process` does, under
/// two sets of limits, and checks each request:
/// - progress: a complete request consumes at least one byte, within the buffer;
/// - argument ranges lie inside the request;
/// - the request parses the same from exactly its own bytes (no look-ahead);
/// - its arguments, re-encoded as a multibulk, parse back to themselves;
/// - a strict prefix of a request is never a different complete request.
///
/// Also `parse_i64` against [`reference_i64`] on the first line.
pub fn resp_parse(data: &[u8]) {
    let line = data.split(|&b| b == b'\r').next().unwrap_or(&[]);
    assert_eq!(
        parse::parse_i64(line),
        reference_i64(line),
        "parse_i64({line:?})"
    );
    for limits in [
        ParseLimits {
            max_bulk_len: 512 << 20,
            unauthenticated: false,
        },
        ParseLimits {
            max_bulk_len: 64,
            unauthenticated: true,
        },
    ] {
        let mut buf = data;
        while !buf.is_empty() {
            let req = match parse::parse(buf, limits) {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            assert!(
                req.consumed > 0 && req.consumed <= buf.len(),
                "consumed {} of {} bytes",
                req.consumed,
                buf.len()
            );
            for &(a, b) in &req.args {
                assert!(
                    a <= b && b <= req.consumed,
                    "argument {a}..{b} outside the request"
                );
            }
            assert!(
                req.owned.is_none() || req.args.is_empty(),
                "both owned and ranged arguments"
            );
            let own = &buf[..req.consumed];
            let alone = parse::parse(own, limits);
            assert_eq!(alone, Ok(Some(clone_request(&req))), "look-ahead");
            let args = request_args(buf, &req);
            if !args.is_empty() {
                let enc = encode_multibulk(&args);
                let big = ParseLimits {
                    max_bulk_len: usize::MAX,
                    unauthenticated: false,
                };
                let back = parse::parse(&enc, big)
                    .expect("re-encoded request is valid")
                    .expect("re-encoded request is complete");
                assert_eq!(back.consumed, enc.len());
                assert_eq!(request_args(&enc, &back), args, "round trip");
            }
            for cut in [1, req.consumed / 2, req.consumed.saturating_sub(1)] {
                if cut == 0 || cut >= req.consumed {
                    continue;
                }
                if let Ok(Some(r)) = parse::parse(&own[..cut], limits) {
                    // An inline line may end early only at its own `\n`,
                    // which the full request would have stopped at too.
                    panic!("prefix of {cut} bytes parsed as a request: {r:?}");
                }
            }
            buf = &buf[req.consumed..];
        }
    }
}

fn clone_request(r: &Request) -> Request {
    Request {
        consumed: r.consumed,
        args: r.args.clone(),
        owned: r.owned.clone(),
    }
}

// ---------------------------------------------------------------------------
// resp_dispatch

/// Set by the panic hook: a panic in a server task is swallowed by tokio,
/// so the check looks here after each input.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Chains a hook that records every panic (libFuzzer's hook still aborts).
fn watch_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only the server's tasks: a failing test elsewhere in the same
            // test binary must not fail the dispatch check.
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio-runtime-worker"))
            {
                PANICKED.store(true, Ordering::SeqCst);
            }
            prev(info);
        }));
    });
}

/// A Herald running in this process, on loopback port 0.
struct Server {
    resp: SocketAddr,
    /// Kept alive for the life of the process (the server never stops).
    _running: herald::server::Running,
    _rt: tokio::runtime::Runtime,
}

/// The password of the authenticated server ([`resp_dispatch`] seeds use it).
pub const FUZZ_PASSWORD: &str = "fuzzpass";
/// The HS256 secret of the authenticated server and of [`jwt_claims`].
pub const FUZZ_JWT_SECRET: &str = "fuzz-jwt-secret";

fn start_server(auth: bool) -> Server {
    watch_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut ns = NamespaceOptions::default();
    ns.history_size = 8;
    ns.presence = true;
    ns.join_leave = true;
    let opts = Options {
        resp_addr: Some(loopback),
        http_addr: Some(loopback),
        requirepass: auth.then(|| FUZZ_PASSWORD.to_string()),
        jwt_hmac_secret: auth.then(|| FUZZ_JWT_SECRET.to_string()),
        namespaces: Some(BTreeMap::from([("h".to_string(), ns)])),
        ..Options::default()
    };
    let cfg = opts.resolve().expect("fuzz config");
    let running = rt
        .block_on(herald::server::start(cfg))
        .expect("start Herald");
    Server {
        resp: running.resp_addr,
        _running: running,
        _rt: rt,
    }
}

fn server(auth: bool) -> &'static Server {
    static OPEN: OnceLock<Server> = OnceLock::new();
    static AUTH: OnceLock<Server> = OnceLock::new();
    if auth {
        AUTH.get_or_init(|| start_server(true))
    } else {
        OPEN.get_or_init(|| start_server(false))
    }
}

/// How long a connection may take to close after the client's EOF. Far
/// above any honest case: hitting it is reported as a hang.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections one input drives.
const MAX_CONNS: usize = 3;
/// Separates the chunks of an input; chunk i goes to connection i % 3.
pub const CHUNK_SEPARATOR: &[u8] = b"\xff\xfe";

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the in-process Herald");
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(CLOSE_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// Reads until the server closes; panics on a hang.
fn read_to_close(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "{what}: no close within {CLOSE_TIMEOUT:?} after the client's EOF \
                     ({} bytes read)",
                    out.len()
                )
            }
            // A reset after the server closed with unread input: closed.
            Err(_) => return out,
        }
    }
}

/// Empties the keyspace (and the auth server's state) before an input, so
/// inputs do not depend on each other.
fn reset(addr: SocketAddr, auth: bool) {
    let mut s = connect(addr);
    let mut req = Vec::new();
    if auth {
        req.extend_from_slice(format!("AUTH {FUZZ_PASSWORD}\r\n").as_bytes());
    }
    req.extend_from_slice(b"FLUSHALL\r\nQUIT\r\n");
    s.write_all(&req).expect("reset request");
    read_to_close(&mut s, "reset connection");
}

/// Feeds `data` to a real Herald over up to three loopback connections.
///
/// The first byte picks the server: even, no authentication configured;
/// odd, `requirepass` [`FUZZ_PASSWORD`] and JWTs signed with
/// [`FUZZ_JWT_SECRET`]. The rest is split at [`CHUNK_SEPARATOR`]; chunk `i`
/// is written to connection `i % 3`, in order. Then every connection sends
/// EOF and must be closed by the server within [`CLOSE_TIMEOUT`], and what
/// each received must be whole, well-formed RESP2/RESP3 frames. A panic in
/// any server task fails the input. `Conn` cannot be built without a socket
/// (its fields are private to `resp::connection`), hence the loopback.
pub fn resp_dispatch(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let auth = first & 1 == 1;
    let addr = server(auth).resp;
    reset(addr, auth);
    let mut conns: Vec<Option<TcpStream>> = (0..MAX_CONNS).map(|_| None).collect();
    for (i, chunk) in split_chunks(rest).into_iter().enumerate() {
        let c = conns[i % MAX_CONNS].get_or_insert_with(|| connect(addr));
        // A write that times out: the server stopped reading (backpressure
        // while we do not read its replies); the rest of the chunk is moot.
        let _ = c.write_all(chunk);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let Some(c) = c else { continue };
        let _ = c.shutdown(Shutdown::Write);
        let out = read_to_close(c, &format!("connection {i}"));
        if let Err(e) = check_resp_stream(&out) {
            panic!(
                "connection {i}: malformed reply stream: {e}\n{}",
                String::from_utf8_lossy(&out[..out.len().min(4096)])
            );
        }
    }
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "a Herald task panicked (message above)"
    );
}

fn split_chunks(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest
        .windows(CHUNK_SEPARATOR.len())
        .position(|w| w == CHUNK_SEPARATOR)
    {
        out.push(&rest[..i]);
        rest = &rest[i + CHUNK_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// Checks that `out` is a sequence of complete RESP2/RESP3 frames.
pub fn check_resp_stream(out: &[u8]) -> Result<(), String> {
    let mut pos = 0;
    while pos < out.len() {
        pos = resp_frame(out, pos, 0)?;
    }
    Ok(())
}

/// One `\r\n`-terminated line from `pos`: its content and the next position.
/// A bare `\r` or `\n` inside is an error (it would let text forge frames).
fn resp_line(out: &[u8], pos: usize) -> Result<(&[u8], usize), String> {
    let rest = &out[pos..];
    let Some(i) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Err(format!("unterminated line at byte {pos}"));
    };
    let line = &rest[..i];
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(format!("CR or LF inside the line at byte {pos}: {line:?}"));
    }
    Ok((line, pos + i + 2))
}

fn resp_len(line: &[u8], pos: usize) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("bad length {line:?} at byte {pos}"))
}

fn resp_frame(out: &[u8], pos: usize, depth: usize) -> Result<usize, String> {
    if depth > 64 {
        return Err("frames nested deeper than 64".into());
    }
    let kind = out[pos];
    let (line, next) = resp_line(out, pos + 1)?;
    match kind {
        b'+' | b'-' | b'_' | b',' | b'#' => Ok(next),
        b':' | b'(' => {
            let ok = std::str::from_utf8(line).is_ok_and(|s| {
                let d = s.strip_prefix('-').unwrap_or(s);
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
            });
            if ok {
                Ok(next)
            } else {
                Err(format!("bad integer {line:?} at byte {pos}"))
            }
        }
        b'$' | b'=' | b'!' => {
            let n = resp_len(line, pos)?;
            if n == -1 && kind == b'$' {
                return Ok(next);
            }
            let n = usize::try_from(n).map_err(|_| format!("bad bulk length at byte {pos}"))?;
            let end = next + n;
            if out.len() < end + 2 {
                return Err(format!("bulk at byte {pos} cut short"));
            }
            if &out[end..end + 2] != b"\r\n" {
                return Err(format!("bulk at byte {pos} not followed by CRLF"));
            }
            Ok(end + 2)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = resp_len(line, pos)?;
            if n == -1 && kind == b'*' {
                return Ok(next);
            }
            let n =
                usize::try_from(n).map_err(|_| format!("bad aggregate length at byte {pos}"))?;
            let items = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut p = next;
            for _ in 0..items {
                if p >= out.len() {
                    return Err(format!("aggregate at byte {pos} cut short"));
                }
                p = resp_frame(out, p, depth + 1)?;
            }
            // An attribute precedes the frame it describes.
            if kind == b'|' {
                if p >= out.len() {
                    return Err(format!("attribute at byte {pos} without its frame"));
                }
                p = resp_frame(out, p, depth + 1)?;
            }
            Ok(p)
        }
        other => Err(format!(
            "unknown frame type {:?} at byte {pos}",
            other as char
        )),
    }
}

// ---------------------------------------------------------------------------
// ws_decode

/// A subscriber that encodes each delivery as the WebSocket front end does
/// and keeps the text.
#[derive(Default)]
struct JsonSink {
    got: Mutex<Vec<(DeliveryKind, Bytes)>>,
}

impl Subscriber for JsonSink {
    fn deliver(&self, d: &Delivery<'_>) {
        let enc = proto::encode_delivery(d);
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((d.kind, enc));
    }
}

/// serde_json's own nesting limit (128): deeper JSON is not ours to judge.
fn too_deep(e: &serde_json::Error) -> bool {
    e.to_string().contains("recursion limit")
}

/// Issue ws-1 (docs/fuzzing.md, fixed): a payload that serde_json skipped
/// over as `IgnoredAny` but could not parse (`1e2510`, a lone surrogate
/// escape) was embedded as is. Strict by default now that it is fixed;
/// clearing this tolerates those errors again (to fuzz past a regression).
pub static STRICT_PAYLOAD_JSON: AtomicBool = AtomicBool::new(true);

/// The serde_json errors of known issue ws-1.
fn ws_1(e: &serde_json::Error) -> bool {
    let m = e.to_string();
    ["number out of range", "hex escape", "surrogate"]
        .iter()
        .any(|k| m.contains(k))
}

fn parse_json(bytes: &[u8], what: &str) -> Option<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Some(v),
        Err(e) if too_deep(&e) => None,
        Err(e) if !STRICT_PAYLOAD_JSON.load(Ordering::Relaxed) && ws_1(&e) => None,
        Err(e) => panic!(
            "{what} is not valid JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// The ops' wire names, each tried on every command whatever its own op.
const OPS: &str = "connect refresh ping subscribe psubscribe unsubscribe punsubscribe publish \
                   presence presence_stats history leaderboard_subscribe leaderboard_unsubscribe";

/// Decodes a text frame as the session does (`parse_command`: the op and
/// its typed arguments), then its fields as every other op's, and checks
/// that replies and errors built from it are JSON with the same `id`. When
/// the bytes are not UTF-8 or not a command, they are used as a payload
/// instead. Payloads (a `publish`'s `data`, or the raw bytes) are published
/// through a `Registry` to a subscriber that encodes them with
/// `encode_delivery`: the push must be JSON whose `data` gives the payload
/// back (as JSON, text, or base64).
pub fn ws_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return check_delivery(b"ws:bin", data, None);
    };
    let cmd = match proto::parse_command(text) {
        Ok(c) => c,
        Err(bad) => {
            // Unknown ops (101) quote the client's op name in the message.
            let e = proto::error(&bad.id, bad.code, &bad.message);
            let v = parse_json(&e, "error reply").unwrap_or_default();
            assert_eq!(v["id"], bad.id);
            assert!(!v.is_object() || v["error"]["message"] == bad.message.as_str());
            return check_delivery(b"ws:text", data, None);
        }
    };
    let id_ok = cmd.id.is_null() || cmd.id.is_u64() || cmd.id.is_string();
    assert!(id_ok && !matches!(cmd.op, proto::Op::Unknown), "{cmd:?}");
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text) else {
        panic!("parse_command accepted a command that is not a JSON object");
    };
    fields.remove("id");
    let r = proto::reply(&cmd.id, Value::Object(fields.clone()));
    assert!(parse_json(&r, "reply").is_none_or(|v| v["id"] == cmd.id));
    // Every op's arguments from these fields: decoding must not panic.
    for op in OPS.split_whitespace() {
        fields.insert("op".into(), Value::String(op.into()));
        match serde_json::from_value::<proto::Op>(Value::Object(fields.clone())) {
            Ok(proto::Op::Publish(p)) => {
                let payload = herald::hub::payload::from_json_value(&p.data);
                check_delivery(p.channel.as_bytes(), &payload, Some(&p.data));
            }
            Ok(o) => assert_eq!(o.name(), op),
            Err(_) => {}
        }
    }
}

/// Equal JSON values, numbers within one ulp.
pub fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= 1)
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

fn check_delivery(channel: &[u8], payload: &[u8], published: Option<&Value>) {
    let reg = Registry::new();
    let sink = Arc::new(JsonSink::default());
    let channel = Bytes::copy_from_slice(channel);
    reg.subscribe(Space::Global, channel.clone(), 1, sink.clone());
    reg.psubscribe(Bytes::from_static(b"*"), 2, sink.clone());
    let p = Publication::with_offset(channel.clone(), Bytes::copy_from_slice(payload), 7, 1);
    let n = reg.publish(&p);
    let got = std::mem::take(&mut *sink.got.lock().unwrap_or_else(|e| e.into_inner()));
    // `*` matches every channel but the empty one (Redis's rule).
    let want = if channel.is_empty() { 1 } else { 2 };
    assert_eq!((n, got.len()), (want, want), "deliveries");
    for (kind, enc) in got {
        let Some(v) = parse_json(&enc, "push") else {
            continue;
        };
        let push = if kind == DeliveryKind::PMessage {
            assert_eq!(v["pattern"], "*");
            "pmessage"
        } else {
            "message"
        };
        assert_eq!(v["push"], push);
        assert_eq!(
            v["channel"],
            Value::String(String::from_utf8_lossy(&channel).into())
        );
        assert_eq!(v["offset"], 7);
        let back = &v["data"];
        if v["encoding"] == "base64" {
            let s = back.as_str().expect("base64 data is a string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("valid base64");
            assert_eq!(bytes, payload, "base64 round trip");
            assert!(
                std::str::from_utf8(payload).is_err(),
                "UTF-8 sent as base64"
            );
        } else if let Ok(raw) = serde_json::from_slice::<Value>(payload) {
            assert_eq!(back, &raw, "JSON payload round trip");
            if let Some(published) = published {
                // The publisher's value, as its compact text reads back:
                // exactly, floats included (issue ws-2, fixed by serde_json's
                // float_roundtrip feature).
                assert!(
                    back == published,
                    "published JSON round trip: {published} became {back}"
                );
            }
        } else {
            let s = std::str::from_utf8(payload).expect("text payload is UTF-8");
            assert_eq!(back.as_str(), Some(s), "text payload round trip");
        }
    }
}

// ---------------------------------------------------------------------------
// glob

/// Redis 7.0's `stringmatchlen`, ported plainly (recursion on `*`, bytes
/// compared unsigned, reads past the end yielding 0 as the C string's NUL),
/// memoized on (pattern position, subject position) so that adversarial
/// patterns stay polynomial. Written here independently of the unit tests'
/// port in `hub::glob`.
pub fn reference_match(pat: &[u8], s: &[u8]) -> bool {
    let mut memo = vec![None; (pat.len() + 1) * (s.len() + 1)];
    rec(pat, 0, s, 0, &mut memo)
}

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn rec(pat: &[u8], mut p: usize, s: &[u8], mut si: usize, memo: &mut [Option<bool>]) -> bool {
    let key = p * (s.len() + 1) + si;
    if let Some(r) = memo[key] {
        return r;
    }
    let start = key;
    let mut plen = pat.len() - p;
    let mut slen = s.len() - si;
    let result = 'outer: {
        while plen > 0 && slen > 0 {
            match pat[p] {
                b'*' => {
                    while plen > 1 && pat[p + 1] == b'*' {
                        p += 1;
                        plen -= 1;
                    }
                    if plen == 1 {
                        break 'outer true;
                    }
                    while slen > 0 {
                        if rec(pat, p + 1, s, si, memo) {
                            break 'outer true;
                        }
                        si += 1;
                        slen -= 1;
                    }
                    break 'outer false;
                }
                b'?' => {
                    si += 1;
                    slen -= 1;
                }
                b'[' => {
                    p += 1;
                    plen -= 1;
                    let not = at(pat, p) == b'^' && plen > 0;
                    if not {
                        p += 1;
                        plen -= 1;
                    }
                    let c = s[si];
                    let mut hit = false;
                    loop {
                        if plen >= 2 && pat[p] == b'\\' {
                            p += 1;
                            plen -= 1;
                            hit |= pat[p] == c;
                        } else if plen == 0 {
                            p -= 1;
                            plen += 1;
                            break;
                        } else if pat[p] == b']' {
                            break;
                        } else if plen >= 3 && pat[p + 1] == b'-' {
                            // Signed, as Redis's `char` on x86-64.
                            let (a, b) = (pat[p] as i8, pat[p + 2] as i8);
                            let (lo, hi) = (a.min(b), a.max(b));
                            p += 2;
                            plen -= 2;
                            hit |= lo <= c as i8 && c as i8 <= hi;
                        } else {
                            hit |= pat[p] == c;
                        }
                        p += 1;
                        plen -= 1;
                    }
                    if hit == not {
                        break 'outer false;
                    }
                    si += 1;
                    slen -= 1;
                }
                b => {
                    let lit = if b == b'\\' && plen >= 2 {
                        p += 1;
                        plen -= 1;
                        pat[p]
                    } else {
                        b
                    };
                    if lit != s[si] {
                        break 'outer false;
                    }
                    si += 1;
                    slen -= 1;
                }
            }
            p += 1;
            plen -= 1;
            if slen == 0 {
                while plen > 0 && pat[p] == b'*' {
                    p += 1;
                    plen -= 1;
                }
                break;
            }
        }
        plen == 0 && slen == 0
    };
    memo[start] = Some(result);
    result
}

/// Counts the deliveries each pattern subscription receives.
#[derive(Default)]
struct CountSink(AtomicUsize);

impl Subscriber for CountSink {
    fn deliver(&self, _: &Delivery<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Longest pattern and subject the reference check takes (it is O(p·s)).
const GLOB_MAX: usize = 512;

/// `data`: up to four patterns separated by NUL bytes, then a `\x01`, then
/// the subject (without `\x01`, the subject is the first pattern's bytes).
/// For each pattern: `Glob::matches` equals [`reference_match`] and
/// `glob_match`; a match starts with `literal_prefix`; and a registry with
/// all the patterns subscribed delivers the subject's publication to exactly
/// the matching ones (the trie walk agrees with `Glob`).
pub fn glob(data: &[u8]) {
    let (pats, subject) = match data.iter().position(|&b| b == 1) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    if pats.len() > GLOB_MAX || subject.len() > GLOB_MAX {
        return;
    }
    let patterns: Vec<&[u8]> = pats.split(|&b| b == 0).take(4).collect();
    let reg = Registry::new();
    let mut sinks = Vec::new();
    let mut want = Vec::new();
    for (i, &pat) in patterns.iter().enumerate() {
        let g = Glob::new(pat);
        let m = g.matches(subject);
        assert_eq!(
            m,
            reference_match(pat, subject),
            "Glob::new({pat:?}).matches({subject:?})"
        );
        assert_eq!(m, glob_match(pat, subject));
        if m && !subject.is_empty() {
            assert!(
                subject.starts_with(g.literal_prefix()),
                "{subject:?} matches {pat:?} but lacks its literal prefix {:?}",
                g.literal_prefix()
            );
        }
        let sink = Arc::new(CountSink::default());
        let fresh = reg.psubscribe(Bytes::copy_from_slice(pat), i as u64 + 1, sink.clone());
        assert!(fresh, "a new subscriber of {pat:?} was refused");
        sinks.push(sink);
        want.push(m);
    }
    let n = reg.publish(&Publication::new(
        Bytes::copy_from_slice(subject),
        Bytes::from_static(b"x"),
    ));
    let mut total = 0;
    for ((sink, want), pat) in sinks.iter().zip(&want).zip(&patterns) {
        let got = sink.0.load(Ordering::Relaxed);
        assert_eq!(got, *want as usize, "deliveries for {pat:?} on {subject:?}");
        total += got;
    }
    assert_eq!(n, total, "publish count");
    for (i, pat) in patterns.iter().enumerate() {
        assert!(reg.punsubscribe(pat, i as u64 + 1), "punsubscribe {pat:?}");
    }
    assert_eq!(reg.numpat(), 0, "patterns left after unsubscribing all");
}

// ---------------------------------------------------------------------------
// jwt_claims

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Configurations for the permission checks: one namespace open to
/// anonymous clients, one closed, and the default.
fn perm_config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut open = NamespaceOptions::default();
        open.allow_anonymous = true;
        let mut closed = NamespaceOptions::default();
        closed.allow_anonymous = false;
        closed.allow_publish = false;
        Options {
            jwt_hmac_secret: Some(FUZZ_JWT_SECRET.into()),
            namespaces: Some(BTreeMap::from([
                ("pub".to_string(), open),
                ("priv".to_string(), closed),
            ])),
            ..Options::default()
        }
        .resolve()
        .expect("fuzz config")
    })
}

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Arc<Authenticator>> = OnceLock::new();
    AUTH.get_or_init(|| Authenticator::from_config(perm_config()).expect("HS256 authenticator"))
}

/// A channel that `pat` matches, built from it with `fill` for `*`, `?` and
/// classes; `None` when the walk gives up (the caller checks the result).
fn instantiate(pat: &[u8], fill: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut f = fill.iter().copied().cycle();
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'*' => {
                let n = f.next().unwrap_or(0) % 4;
                for _ in 0..n {
                    out.push(f.next().unwrap_or(b'x'));
                }
                i += 1;
            }
            b'?' => {
                out.push(f.next().unwrap_or(b'x'));
                i += 1;
            }
            b'[' => {
                // Take the class's first byte (right for non-negated ones).
                let j = i + 1 + usize::from(pat.get(i + 1) == Some(&b'^'));
                let b = match pat.get(j) {
                    Some(b'\\') => pat.get(j + 1).copied(),
                    b => b.copied(),
                };
                out.push(b.unwrap_or(b'x'));
                i = pat[j.min(pat.len())..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(pat.len(), |k| j + k + 1);
            }
            b'\\' if i + 1 < pat.len() => {
                out.push(pat[i + 1]);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Splits `data` at NUL bytes into UTF-8 strings (lossy).
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// The first byte picks a mode:
/// - 0: the rest is a token: `verify_token` must refuse it (it cannot hold
///   a valid signature) and an authenticator without a key says so.
/// - 1: the rest is a JWT payload (and, before a `\n`, a header) signed
///   with the right HS256 key: accepted claims must have `sub`, an `exp`
///   not in the past, and a header naming HS256; otherwise a clean error.
/// - 2..: permissions. Fields split at NUL: a pattern, a channel filler,
///   then the claims' `subscribe` globs. If `can_psubscribe` lets a user or
///   an anonymous client take the pattern, it must let it `can_subscribe`
///   every channel the pattern matches (tried: one built from the pattern,
///   and the filler itself). `pattern_within` must agree with equality.
pub fn jwt_claims(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let auth = authenticator();
    match mode {
        0 => {
            let token = String::from_utf8_lossy(rest);
            let r = auth.verify_token(&token);
            assert!(r.is_err(), "unsigned token accepted: {token:?} -> {r:?}");
            static NONE: OnceLock<Arc<Authenticator>> = OnceLock::new();
            let none = NONE.get_or_init(|| Authenticator::new(&Config::default()));
            assert_eq!(none.verify_token(&token), Err(TokenError::NotConfigured));
        }
        1 => {
            let (header, payload) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
            };
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let message = format!("{}.{}", b64(header), b64(payload));
            let key = jsonwebtoken::EncodingKey::from_secret(FUZZ_JWT_SECRET.as_bytes());
            let sig = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &key,
                jsonwebtoken::Algorithm::HS256,
            )
            .expect("HS256 signs anything");
            let token = format!("{message}.{sig}");
            if let Ok(claims) = auth.verify_token(&token) {
                let h: Value = serde_json::from_slice(header).expect("accepted header is JSON");
                assert_eq!(h["alg"], "HS256", "accepted a token whose header says {h}");
                let leeway = perm_config().jwt_leeway.as_secs();
                assert!(
                    claims.exp + leeway >= now_secs(),
                    "accepted expired claims {claims:?}"
                );
                check_permissions(&Identity::User(claims), b"", b"x");
            }
        }
        _ => {
            let f = fields(rest);
            let pattern = f.first().cloned().unwrap_or_default();
            let filler = f.get(1).cloned().unwrap_or_default();
            let globs: Vec<String> = f.iter().skip(2).take(8).cloned().collect();
            let user = Identity::User(Arc::new(Claims::new(
                "u",
                0,
                (mode & 2 == 2).then_some(globs.clone()),
                (mode & 4 == 4).then_some(globs.clone()),
            )));
            for id in [&user, &Identity::Anonymous, &Identity::Password] {
                check_permissions(id, pattern.as_bytes(), filler.as_bytes());
            }
            if globs.iter().any(|g| g.as_bytes() == pattern.as_bytes()) {
                assert!(pattern_within(pattern.as_bytes(), &globs));
            }
        }
    }
}

/// A pattern an identity may take must only reach channels it may take.
fn check_permissions(id: &Identity, pattern: &[u8], filler: &[u8]) {
    let cfg = perm_config();
    let reach = cfg.namespaces_for_pattern(pattern);
    if !id.can_psubscribe(pattern, &reach) {
        return;
    }
    let glob = Glob::new(pattern);
    for channel in [instantiate(pattern, filler), filler.to_vec()] {
        if !glob.matches(&channel) {
            continue;
        }
        let ns = cfg.namespace(&channel);
        assert!(
            reach.iter().any(|r| std::ptr::eq(*r, ns)),
            "{channel:?} matches {pattern:?} but its namespace is not among the pattern's"
        );
        assert!(
            id.can_subscribe(&channel, ns),
            "{id:?} may PSUBSCRIBE {pattern:?} but not SUBSCRIBE {channel:?}, which it matches"
        );
        let _ = id.can_publish(&channel, ns);
    }
}
