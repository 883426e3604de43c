//! Shared test helpers: start Herald (the real binary) and a real
//! `redis-server` on free loopback ports, and speak raw RESP to either.
//! Every read has a timeout, so a failure fails instead of hanging.
#![allow(dead_code)]

pub mod cluster;
pub mod diff;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A running Herald process.
pub struct Herald {
    pub child: Child,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub log: mpsc::Receiver<String>,
}

impl Herald {
    pub fn start(extra: &[&str]) -> Herald {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Herald {
        Self::start_in(&[], "127.0.0.1:0", extra, env)
    }

    /// Starts Herald through `wrapper` (e.g. `ip netns exec NS`: another
    /// host's network), listening on `ip` (`IP:0`).
    pub fn start_in(
        wrapper: &[&str],
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Herald {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let ready = std::env::temp_dir().join(format!(
            "herald-ready-{}-{}.json",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&ready);
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_herald"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_herald")),
        };
        cmd.args(["--resp-addr", listen, "--http-addr", listen])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Waited for in `Drop for Herald` (or below when start-up fails).
        #[allow(clippy::zombie_processes)]
        let mut child = cmd.spawn().expect("cannot start herald");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        // The machine-readable ready signal, not the log's wording.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let _ = std::fs::remove_file(&ready);
                let v: serde_json::Value = serde_json::from_str(&text).expect("ready file");
                let addr =
                    |k: &str| -> SocketAddr { v[k].as_str().expect(k).parse().expect("address") };
                return Herald {
                    resp: addr("resp"),
                    http: addr("http"),
                    child,
                    log: rx,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log: Vec<String> = rx.try_iter().collect();
                panic!("herald exited at start ({status}): {}", log.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "herald did not report its addresses in time"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines printed so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `redis-server`, for differential tests.
pub struct Redis {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        // A free port may be handed to two tests at once: the server that
        // loses the bind exits, and the one that won answers for both
        // (until its test stops it). So the server must be ours.
        for _ in 0..4 {
            if let Some(r) = Self::try_start(free_port(), extra) {
                return r;
            }
        }
        Self::start_with(free_port(), extra)
    }

    /// A `redis-server` on a given port (a restart on the same address).
    pub fn start_on(port: u16) -> Redis {
        Self::start_with(port, &[])
    }

    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        Self::try_start(port, extra)
            .unwrap_or_else(|| panic!("port {port}: another redis-server answers there"))
    }

    /// A `redis-server` on `port`; `None` when the server answering there
    /// is not the one started here (it lost the bind to another).
    fn try_start(port: u16, extra: &[&str]) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: .ci/run installs it (apt-get install redis-server)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("redis-server exited: {st}");
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut r = Redis { child, addr };
        r.answers_itself().then_some(r)
    }

    /// Whether the server at `addr` is this child: its `INFO` names the
    /// child's pid (without access to `INFO`, the child still running a
    /// moment later).
    fn answers_itself(&mut self) -> bool {
        let pid = self.child.id();
        let info = (|| {
            let mut s = TcpStream::connect(self.addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"INFO server\r\n").ok()?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(2).any(|w| w == b"\r\n")
                || !String::from_utf8_lossy(&buf).contains("run_id:")
            {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.starts_with(b"-") {
                    break;
                }
            }
            Some(String::from_utf8_lossy(&buf).into_owned())
        })()
        .unwrap_or_default();
        match info.lines().find_map(|l| l.strip_prefix("process_id:")) {
            Some(p) => p.trim() == pid.to_string(),
            None => {
                std::thread::sleep(Duration::from_millis(200));
                matches!(self.child.try_wait(), Ok(None))
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Length of the first complete RESP2/RESP3 reply frame in `buf`, if any.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    fn line(buf: &[u8], at: usize) -> Option<(usize, &[u8])> {
        let rel = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((at + rel + 2, &buf[at + 1..at + rel]))
    }
    fn elem(buf: &[u8], at: usize) -> Option<usize> {
        let kind = *buf.get(at)?;
        let (next, head) = line(buf, at)?;
        let n = || std::str::from_utf8(head).ok()?.parse::<i64>().ok();
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
            b'$' | b'=' | b'!' => {
                let len = n()?;
                if len < 0 {
                    return Some(next);
                }
                let end = next + len as usize + 2;
                (buf.len() >= end).then_some(end)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let len = n()?;
                if len < 0 {
                    return Some(next);
                }
                let count = if kind == b'%' || kind == b'|' {
                    len * 2
                } else {
                    len
                };
                let mut at = next;
                for _ in 0..count {
                    at = elem(buf, at)?;
                }
                if kind == b'|' {
                    // An attribute precedes the real reply.
                    return elem(buf, at);
                }
                Some(at)
            }
            _ => panic!(
                "not a RESP frame: {:?}",
                String::from_utf8_lossy(&buf[at..])
            ),
        }
    }
    elem(buf, 0)
}

/// Encodes a command as a RESP multibulk array.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A raw RESP connection that returns replies as the exact bytes received.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects from the loopback address `src` (`127.0.0.2`, …: Linux
    /// answers all of 127/8), so the server sees another client address.
    pub fn connect_from(addr: SocketAddr, src: [u8; 4]) -> Raw {
        let stream = tcp_from(addr, src);
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and authenticates with `--requirepass` (a trusted backend).
    pub fn backend(addr: SocketAddr, password: &str) -> Raw {
        let mut r = Raw::connect(addr);
        assert_eq!(r.cmd(&[b"AUTH", password.as_bytes()]), b"+OK\r\n");
        r
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args));
    }

    /// Reads one complete frame, waiting up to `TIMEOUT`.
    pub fn frame(&mut self) -> Vec<u8> {
        self.try_frame(TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no reply in time; have {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    pub fn try_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(n) = frame_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends a command and returns its one reply frame.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.frame()
    }

    /// True when the server closed the connection (after any pending data).
    pub fn closed(&mut self) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
    }
}

/// Words of a command line, split on spaces (test convenience).
pub fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\\r\\n")
}

// ---- WebSocket and JWT helpers ------------------------------------------

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to Herald's `/ws` (with `?token=` when given).
pub async fn ws_connect(http: SocketAddr, token: Option<&str>) -> Ws {
    let url = match token {
        Some(t) => format!("ws://{http}/ws?token={t}"),
        None => format!("ws://{http}/ws"),
    };
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("ws connect timed out")
        .expect("ws connect failed");
    ws
}

/// A TCP connection to `addr` from the loopback address `src`.
pub fn tcp_from(addr: SocketAddr, src: [u8; 4]) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((src, 0)).into())
        .expect("bind source");
    s.connect(&addr.into()).expect("connect");
    s.into()
}

/// [`ws_connect`] from the loopback address `src` (another client address).
pub async fn ws_connect_from(http: SocketAddr, token: Option<&str>, src: [u8; 4]) -> Ws {
    let url = match token {
        Some(t) => format!("ws://{http}/ws?token={t}"),
        None => format!("ws://{http}/ws"),
    };
    let tcp = tcp_from(http, src);
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("ws connect timed out")
        .expect("ws connect failed");
    ws
}

pub async fn ws_send(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("ws send");
}

/// The next text frame as JSON; panics on timeout or close.
pub async fn ws_recv(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no WebSocket frame in time")
            .expect("WebSocket closed")
            .expect("WebSocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("frame is JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Sends a command with `id` and returns the reply with that id, skipping
/// pushes (returned separately in order).
pub async fn ws_call(ws: &mut Ws, id: u64, mut cmd: serde_json::Value) -> serde_json::Value {
    cmd["id"] = serde_json::json!(id);
    ws_send(ws, cmd).await;
    loop {
        let v = ws_recv(ws).await;
        if v["id"] == serde_json::json!(id) {
            return v;
        }
    }
}

/// Reads until the server closes; returns the disconnect push (if any) and
/// the close code.
pub async fn ws_until_close(ws: &mut Ws) -> (Option<serde_json::Value>, Option<u16>) {
    let mut push = None;
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no close in time")
        {
            None => return (push, None),
            Some(Err(_)) => return (push, None),
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["push"] == "disconnect" {
                    push = Some(v);
                }
            }
            Some(Ok(Message::Close(frame))) => return (push, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `claims`.
pub fn hs256(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/py/<script>` against Herald's RESP port; it must print `ok`.
pub fn run_redis_py(script: &str, herald: &Herald) {
    let path = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .arg(herald.resp.port().to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{script} failed (is redis-py installed? scripts/test installs it)\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// Writes `text` as a fresh TOML config file; returns its folder (remove it
/// when done) and its path.
pub fn temp_config(tag: &str, text: &str) -> (std::path::PathBuf, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("herald-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("herald.toml");
    std::fs::write(&file, text).expect("config file");
    let path = file.to_str().expect("utf-8 path").to_string();
    (dir, path)
}

/// A minimal HTTP/1.1 client: returns (status, body).
pub async fn http_request(addr: std::net::SocketAddr, req: String) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

pub async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, String) {
    let key = key
        .map(|k| format!("X-API-Key: {k}\r\n"))
        .unwrap_or_default();
    http_request(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{key}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}
