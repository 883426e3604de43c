//! The SSE transport against the real binary: `GET /sse` streams what a
//! WebSocket would receive, `POST /sse/{session}` takes the same ops, with
//! the same auth, limits, recovery and slow-consumer cut-off.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SECRET: &str = "sse-secret";
const WAIT: Duration = Duration::from_secs(10);

/// An open `/sse` stream (HTTP/1.0: the body is the raw event stream,
/// ended by the server closing the connection).
struct Sse {
    r: BufReader<TcpStream>,
    status: u16,
    head: String,
}

impl Sse {
    async fn open(http: SocketAddr, query: &str) -> Sse {
        Self::open_with(http, query, "").await
    }

    async fn open_with(http: SocketAddr, query: &str, headers: &str) -> Sse {
        let mut s = TcpStream::connect(http).await.unwrap();
        let req = format!("GET /sse{query} HTTP/1.0\r\nHost: {http}\r\n{headers}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, r.read_line(&mut line))
                .await
                .expect("no response head")
                .unwrap();
            if n == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Sse { r, status, head }
    }

    /// The next line of the body; `None` at its end.
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.r.read_line(&mut line))
            .await
            .expect("stream silent")
            .ok()?;
        (n > 0).then(|| line.trim_end_matches('\n').to_string())
    }

    /// The next event's JSON (heartbeat comments skipped); `None` at the
    /// end of the stream.
    async fn event(&mut self) -> Option<Value> {
        loop {
            let line = self.line().await?;
            if let Some(data) = line.strip_prefix("data: ") {
                let v = serde_json::from_str(data).expect("event data is JSON");
                let blank = self.line().await;
                assert_eq!(
                    blank.as_deref(),
                    Some(""),
                    "an event ends with a blank line"
                );
                return Some(v);
            }
            assert!(
                line.is_empty() || line.starts_with(':'),
                "unexpected line {line:?}"
            );
        }
    }

    /// The `connect` reply that opens the stream: the session id.
    async fn connected(&mut self) -> (String, Value) {
        let v = self.event().await.expect("no connect event");
        assert_eq!(v["id"], 0, "{v}");
        let session = v["result"]["session"]
            .as_str()
            .expect("session id")
            .to_string();
        (session, v)
    }

    /// Events until the one with this reply `id`, pushes collected.
    async fn reply(&mut self, id: u64) -> (Value, Vec<Value>) {
        let mut pushes = Vec::new();
        loop {
            let v = self.event().await.expect("stream ended before the reply");
            if v["id"] == id {
                return (v, pushes);
            }
            pushes.push(v);
        }
    }
}

/// A raw HTTP/1.0 request: status and body.
async fn request(
    http: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(http).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {http}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("no answer")
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

async fn post(http: SocketAddr, session: &str, ops: Value) -> (u16, String) {
    request(
        http,
        "POST",
        &format!("/sse/{session}"),
        "Content-Type: text/plain\r\n",
        &ops.to_string(),
    )
    .await
}

#[tokio::test]
async fn stream_replies_and_pushes_as_websocket_frames() {
    let h = Herald::start(&[]);
    let mut sse = Sse::open(h.http, "").await;
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert!(
        sse.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        sse.head
    );
    let (session, hello) = sse.connected().await;
    assert_eq!(session.len(), 32, "{hello}");
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()), "{hello}");
    assert!(hello["result"]["client"].is_string(), "{hello}");
    assert!(hello["result"]["ping_interval"].is_number(), "{hello}");

    // One op, then an array of them; replies carry their ids.
    let (status, _) = post(
        h.http,
        &session,
        json!({"id": 1, "op": "subscribe", "channel": "news"}),
    )
    .await;
    assert_eq!(status, 202);
    let (r, _) = sse.reply(1).await;
    assert_eq!(r["result"], json!({}), "{r}");
    let (status, _) = post(
        h.http,
        &session,
        json!([
            {"id": 2, "op": "publish", "channel": "news", "data": {"n": 1}},
            {"id": 3, "op": "ping"}
        ]),
    )
    .await;
    assert_eq!(status, 202);
    let (r, pushes) = sse.reply(2).await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0]["push"], "message");
    assert_eq!(pushes[0]["data"], json!({"n": 1}));
    let (r, _) = sse.reply(3).await;
    assert_eq!(r["result"], json!({}), "{r}");

    // A WebSocket client and RESP publish to the SSE subscriber.
    let mut ws = ws_connect(h.http, None).await;
    ws_call(
        &mut ws,
        1,
        json!({"op": "publish", "channel": "news", "data": "from ws"}),
    )
    .await;
    let m = sse.event().await.unwrap();
    assert_eq!(
        (m["push"].as_str(), m["data"].as_str()),
        (Some("message"), Some("from ws")),
        "{m}"
    );
    let mut p = Raw::connect(h.resp);
    p.cmd(&[b"PUBLISH", b"news", b"from resp"]);
    let m = sse.event().await.unwrap();
    assert_eq!(m["data"], "from resp", "{m}");

    // Bad ops are answered on the stream, as on WebSocket.
    post(h.http, &session, json!({"id": 4, "op": "nope"})).await;
    let (r, _) = sse.reply(4).await;
    assert_eq!(r["error"]["code"], 101, "{r}");

    // Presence: joins and leaves reach the stream.
    let (status, _) = post(
        h.http,
        &session,
        json!({"id": 5, "op": "presence_stats", "channel": "news"}),
    )
    .await;
    assert_eq!(status, 202);
    let (r, _) = sse.reply(5).await;
    assert!(r.get("result").is_some() || r.get("error").is_some(), "{r}");
}

#[tokio::test]
async fn bad_posts_are_refused_with_their_codes() {
    let h = Herald::start(&["--ws-max-message-size", "1kb"]);
    let (status, body) = post(
        h.http,
        "00000000000000000000000000000000",
        json!({"id": 1, "op": "ping"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], 404, "{v}");

    let mut sse = Sse::open(h.http, "").await;
    let (session, _) = sse.connected().await;
    for bad in ["not json", "42", "[]", "\"ping\""] {
        let (status, body) = request(h.http, "POST", &format!("/sse/{session}"), "", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], 100, "{v}");
    }
    let many: Vec<Value> = (0..101).map(|i| json!({"id": i, "op": "ping"})).collect();
    let (status, _) = post(h.http, &session, Value::Array(many)).await;
    assert_eq!(status, 400);
    let big = json!({"id": 1, "op": "publish", "channel": "c", "data": "x".repeat(2000)});
    let (status, _) = post(h.http, &session, big).await;
    assert_eq!(status, 413);
    // The session is unharmed.
    post(h.http, &session, json!({"id": 9, "op": "ping"})).await;
    let (r, _) = sse.reply(9).await;
    assert_eq!(r["result"], json!({}), "{r}");

    // Foreign origins are refused, on both requests.
    let foreign = Sse::open_with(h.http, "", "Origin: http://evil.example\r\n").await;
    assert_eq!(foreign.status, 403, "{}", foreign.head);
    let (status, _) = request(
        h.http,
        "POST",
        &format!("/sse/{session}"),
        "Origin: http://evil.example\r\n",
        r#"{"id":1,"op":"ping"}"#,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn tokens_and_permissions_apply() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET]);
    let exp = unix_now() + 3600;
    let good = hs256(
        json!({"sub": "alice", "exp": exp, "subscribe": ["room:*"]}),
        SECRET,
    );
    let mut sse = Sse::open(h.http, &format!("?token={good}")).await;
    let (session, hello) = sse.connected().await;
    assert_eq!(hello["result"]["user"], "alice", "{hello}");
    post(
        h.http,
        &session,
        json!([
            {"id": 1, "op": "subscribe", "channel": "room:1"},
            {"id": 2, "op": "subscribe", "channel": "admin"}
        ]),
    )
    .await;
    let (r, _) = sse.reply(1).await;
    assert_eq!(r["result"], json!({}), "{r}");
    let (r, _) = sse.reply(2).await;
    assert_eq!(r["error"]["code"], 103, "{r}");

    // A forged token: the disconnect event (3500), then the end.
    let forged = hs256(json!({"sub": "mallory", "exp": exp}), "wrong");
    let mut bad = Sse::open(h.http, &format!("?token={forged}")).await;
    let d = bad.event().await.expect("a disconnect event");
    assert_eq!(
        (d["push"].as_str(), d["code"].as_u64()),
        (Some("disconnect"), Some(3500)),
        "{d}"
    );
    assert_eq!(bad.event().await, None);
    // An expired one: 3002.
    let old = hs256(json!({"sub": "bob", "exp": unix_now() - 3600}), SECRET);
    let mut expired = Sse::open(h.http, &format!("?token={old}")).await;
    let d = expired.event().await.unwrap();
    assert_eq!(d["code"], 3002, "{d}");
}

#[tokio::test]
async fn recovery_across_a_new_stream() {
    let (_d, cfg) = temp_config(
        "sserecover",
        "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"10m\"\n",
    );
    let h = Herald::start(&["--config", &cfg]);
    let mut sse = Sse::open(h.http, "").await;
    let (session, _) = sse.connected().await;
    post(
        h.http,
        &session,
        json!({"id": 1, "op": "subscribe", "channel": "chat:r"}),
    )
    .await;
    let (r, _) = sse.reply(1).await;
    let epoch = r["result"]["epoch"].clone();
    let mut p = Raw::connect(h.resp);
    p.cmd(&[b"PUBLISH", b"chat:r", b"1"]);
    let m = sse.event().await.unwrap();
    let seen = m["offset"].as_u64().expect("offset");
    drop(sse);
    // The session ends with its stream: its id is refused then.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, _) = post(h.http, &session, json!({"id": 2, "op": "ping"})).await;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.cmd(&[b"PUBLISH", b"chat:r", b"2"]);
    p.cmd(&[b"PUBLISH", b"chat:r", b"3"]);

    let mut sse = Sse::open(h.http, "").await;
    let (session, _) = sse.connected().await;
    post(
        h.http,
        &session,
        json!({"id": 1, "op": "subscribe", "channel": "chat:r", "since": {"offset": seen, "epoch": epoch}}),
    )
    .await;
    let (r, _) = sse.reply(1).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    let a = sse.event().await.unwrap();
    let b = sse.event().await.unwrap();
    assert_eq!(
        (a["data"].clone(), b["data"].clone()),
        (json!(2), json!(3)),
        "{a} {b}"
    );
    assert_eq!(a["offset"].as_u64(), Some(seen + 1));
}

#[tokio::test]
async fn limits_and_heartbeats_apply() {
    let h = Herald::start(&["--max-subscriptions", "2", "--ws-ping-interval", "1s"]);
    let mut sse = Sse::open(h.http, "").await;
    let (session, _) = sse.connected().await;
    let ops: Vec<Value> = (1..=3)
        .map(|i| json!({"id": i, "op": "subscribe", "channel": format!("c{i}")}))
        .collect();
    post(h.http, &session, Value::Array(ops)).await;
    let (r, _) = sse.reply(3).await;
    assert_eq!(r["error"]["code"], 106, "{r}");
    // A heartbeat comment within the interval (and a bit).
    let mut beat = false;
    for _ in 0..3 {
        if sse.line().await.is_some_and(|l| l.starts_with(':')) {
            beat = true;
            break;
        }
    }
    assert!(beat, "no heartbeat comment");
}

#[tokio::test]
async fn slow_sse_consumer_is_cut_off() {
    let h = Herald::start(&[
        "--output-buffer-hard-limit",
        "256kb",
        "--output-buffer-soft-limit",
        "0",
    ]);
    let mut slow = Sse::open(h.http, "").await;
    let (session, _) = slow.connected().await;
    post(
        h.http,
        &session,
        json!({"id": 1, "op": "subscribe", "channel": "flood"}),
    )
    .await;
    slow.reply(1).await;
    let mut p = Raw::connect(h.resp);
    let payload = vec![b'z'; 64 * 1024];
    let deadline = std::time::Instant::now() + WAIT * 3;
    loop {
        p.cmd(&[b"PUBLISH", b"flood", &payload]);
        let info = show(&p.cmd(&[b"INFO", b"stats"]));
        if info.contains("client_output_buffer_limit_disconnections:1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow sse client not cut off: {info}"
        );
    }
    // Its session is gone, and its stream ends.
    let (status, _) = post(h.http, &session, json!({"id": 2, "op": "ping"})).await;
    assert_eq!(status, 404);
    while slow.event().await.is_some() {}
}

/// An idle stream outlives the HTTP listener's stall check (no byte moved
/// through two checks closes a connection): heartbeats come often enough,
/// even with the default 25 s ping interval.
#[tokio::test]
async fn an_idle_stream_outlives_the_http_stall_check() {
    let h = Herald::start(&["--http-header-timeout", "1s", "--http-body-timeout", "1s"]);
    let mut sse = Sse::open(h.http, "").await;
    let (session, _) = sse.connected().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    post(h.http, &session, json!({"id": 1, "op": "ping"})).await;
    let (r, _) = sse.reply(1).await;
    assert_eq!(r["result"], json!({}), "{r}");
}
