//! The HTTP listener under hostile clients: connection cap (idle sockets
//! give way, busy ones and WebSockets do not), slowloris heads, idle
//! keep-alive, slow and huge bodies, descriptor exhaustion. Every test
//! starts the real binary on port 0 and speaks raw HTTP over blocking
//! sockets, each read with a timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Herald, Raw};

/// Sends one request on a new connection and reads until the server closes
/// or `TIMEOUT`: (status, whole response text). Status 0: no response.
fn request(addr: SocketAddr, req: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the server closes `s` (EOF or reset); the time it took, or
/// `None` if it stayed open for `limit`. Response bytes are skipped.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// Opens a WebSocket (raw upgrade) and returns the socket after the 101.
fn websocket(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "upgrade response cut short");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

#[test]
fn idle_flood_stays_under_the_cap_and_health_checks_get_through() {
    let h = Herald::start(&["--http-max-connections", "50"]);
    let before = open_fds(h.pid());
    // Idle sockets far past the cap: the longest-idle ones are closed to
    // make room, so the process's descriptors stay bounded...
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(h.http).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let during = open_fds(h.pid());
    assert!(
        during <= before + 50 + 5,
        "{during} descriptors open with the cap at 50 (was {before})"
    );
    // ...and a health check, an API call and RESP still answer.
    let (status, text) = get(h.http, "/healthz");
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(h.http, "/api/channels");
    assert_eq!(status, 200, "{text}");
    let mut resp = Raw::connect(h.resp);
    assert_eq!(resp.cmd(&[b"PING"]), b"+PONG\r\n");
    let (_, stats) = get(h.http, "/stats");
    let body = stats.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["connections"]["http"].as_u64().unwrap() <= 50, "{v}");
    assert!(
        v["connections"]["http_evicted"].as_u64().unwrap() >= 350,
        "{v}"
    );
    // The oldest idle sockets were the ones given up.
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).is_some());
}

#[test]
fn busy_connections_keep_their_slots_and_newcomers_get_503() {
    let h = Herald::start(&["--http-max-connections", "4", "--http-body-timeout", "30s"]);
    // Four requests in flight (bodies still arriving): none may be evicted.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(h.http).unwrap();
        write!(
            s,
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"chan"
        )
        .unwrap();
        busy.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, text) = get(h.http, "/healthz");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"code\":106"), "{text}");
    // A finished request frees its slot again.
    let mut s = busy.pop().unwrap();
    write!(s, "{}", " ".repeat(94)).unwrap();
    assert!(closed_within(&mut s, Duration::from_millis(200)).is_none());
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(h.http, "/healthz").0, 200);
}

#[test]
fn websockets_count_toward_the_cap_and_are_never_evicted() {
    let h = Herald::start(&["--http-max-connections", "3", "--max-connections", "100"]);
    let mut sockets: Vec<TcpStream> = (0..3).map(|_| websocket(h.http)).collect();
    let (status, text) = get(h.http, "/healthz");
    assert_eq!(status, 503, "{text}");
    // The sessions are still alive: a ping frame gets its pong.
    let s = &mut sockets[0];
    s.write_all(&[0x89, 0x80, 1, 2, 3, 4]).unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(pong[0], 0x8A);
    // A session that ends gives its slot back.
    drop(sockets.pop());
    let deadline = Instant::now() + common::TIMEOUT;
    while get(h.http, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "slot not released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slowloris_heads_are_closed_at_the_header_timeout() {
    let h = Herald::start(&["--http-header-timeout", "2s"]);
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut conns: Vec<(TcpStream, Option<Duration>)> = (0..20)
        .map(|_| (TcpStream::connect(h.http).unwrap(), None))
        .collect();
    // A silent socket is closed by the same timeout.
    let mut silent = TcpStream::connect(h.http).unwrap();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(8) && conns.iter().any(|c| c.1.is_none()) {
        for (s, closed) in conns.iter_mut().filter(|c| c.1.is_none()) {
            let mut buf = [0u8; 512];
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let gone = s.write_all(&head[sent % head.len()..][..1]).is_err()
                || match s.read(&mut buf) {
                    Ok(_) => true, // EOF, or an error response before the close
                    Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                };
            if gone {
                *closed = Some(start.elapsed());
            }
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    for (_, closed) in &conns {
        let t = closed.expect("a slowloris connection outlived the header timeout");
        assert!(
            t >= Duration::from_millis(1500) && t <= Duration::from_millis(4500),
            "closed after {t:?} with a 2s header timeout"
        );
    }
    let t = closed_within(&mut silent, Duration::from_secs(3)).expect("silent socket open");
    assert!(start.elapsed() - t <= Duration::from_secs(5));
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let h = Herald::start(&["--http-header-timeout", "1s"]);
    let mut s = TcpStream::connect(h.http).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive for a next request that never comes.
    let t = closed_within(&mut s, Duration::from_secs(4)).expect("idle keep-alive stayed open");
    assert!(t >= Duration::from_millis(800), "closed after {t:?}");
}

#[test]
fn slow_request_bodies_get_408() {
    let h = Herald::start(&["--http-body-timeout", "1s"]);
    let mut s = TcpStream::connect(h.http).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let started = Instant::now();
    write!(
        s,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"channel\""
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn huge_bodies_are_refused_without_reading_them() {
    let h = Herald::start(&["--http-max-body-size", "1kb"]);
    let mut s = TcpStream::connect(h.http).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let started = Instant::now();
    write!(
        s,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n{{\"channel\":"
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Chunked bodies carry no length up front: stopped once past the limit.
    let data = "x".repeat(2000);
    let body = format!("{{\"channel\":\"c\",\"data\":\"{data}\"}}");
    let (status, text) = request(
        h.http,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    );
    assert_eq!(status, 413, "{text}");
    let body = "{\"channel\":\"c\",\"data\":\"small\"}";
    let (status, text) = request(
        h.http,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{text}");
}

#[cfg(target_os = "linux")]
#[test]
fn soft_open_files_limit_is_raised_to_the_hard_limit() {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_herald");
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -Sn 256 && exec {bin} --resp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0"
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once herald says it listens, the shell has exec'd it and start-up
    // (where the limit is raised) is over.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("herald did not start");
        if line.contains("herald listening") {
            break;
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_ne!(f[3], "256", "soft RLIMIT_NOFILE not raised: {line}");
    assert_eq!(f[3], f[4], "soft RLIMIT_NOFILE not raised: {line}");
}

/// CPU time (user + system, in clock ticks) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

#[cfg(target_os = "linux")]
#[test]
fn running_out_of_descriptors_neither_spins_nor_locks_out() {
    let bin = env!("CARGO_BIN_EXE_herald");
    let resp = common::free_port();
    let http = common::free_port();
    // 64 descriptors in all, a connection cap far above that: accept fails
    // with EMFILE while the backlog still holds connections.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 64 && exec {bin} --resp-addr 127.0.0.1:{resp} --http-addr 127.0.0.1:{http} \
                 --http-max-connections 1000 --http-header-timeout 30s"
            ),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let deadline = Instant::now() + common::TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "herald did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr) {
            idle.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let t0 = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.id()) - t0;
    // 200 ticks would be one core for 2 s; backing off costs almost none.
    let ok_cpu = used < 40;
    // Idle connections give way to new ones even without free descriptors.
    let started = Instant::now();
    let (status, _) = get(addr, "/healthz");
    let health_time = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ok_cpu,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );
    assert_eq!(status, 200, "no health check while out of descriptors");
    assert!(health_time < Duration::from_secs(8), "{health_time:?}");
}

#[test]
fn channel_list_patterns_are_bounded() {
    let h = Herald::start(&["--max-pattern-length", "64"]);
    let long = "a".repeat(65);
    let (status, text) = get(h.http, &format!("/api/channels?pattern={long}*"));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"code\":110"), "{text}");
    let (status, text) = get(h.http, "/api/channels?pattern=news*");
    assert_eq!(status, 200, "{text}");
}

#[test]
fn concurrent_scrapes_share_renders_but_never_answer_stale() {
    let h = Herald::start(&[]);
    let mut resp = Raw::connect(h.resp);
    let published = |text: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with("herald_messages_published_total "))
            .unwrap_or_else(|| panic!("no counter in {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    for round in 1..=5u64 {
        // Each publish completes before the scrapes are sent: every one of
        // them, shared render or not, must count it.
        assert_eq!(resp.cmd(&[b"PUBLISH", b"c", b"x"]), b":0\r\n");
        let scrapes: Vec<_> = (0..16)
            .map(|i| {
                let addr = h.http;
                std::thread::spawn(move || {
                    let path = if i % 2 == 0 { "/metrics" } else { "/stats" };
                    get(addr, path)
                })
            })
            .collect();
        for s in scrapes {
            let (status, text) = s.join().unwrap();
            assert_eq!(status, 200, "{text}");
            if text.contains("herald_messages_published_total") {
                assert!(published(&text) >= round, "stale /metrics: {text}");
            } else {
                assert!(
                    text.contains(&format!("\"messages_published\":{round}")),
                    "stale /stats: {text}"
                );
            }
        }
    }
}

#[test]
fn a_client_that_stops_reading_its_response_is_cut_off() {
    let dir = std::env::temp_dir().join(format!("herald-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("herald.toml");
    std::fs::write(&config, "[namespaces.big]\nhistory_size = 100\n").unwrap();
    let h = Herald::start(&[
        "--config",
        config.to_str().unwrap(),
        "--http-header-timeout",
        "1s",
        "--http-body-timeout",
        "1s",
    ]);
    // About 13 MiB of history as JSON: more than the socket buffers hold.
    let mut resp = Raw::connect(h.resp);
    let payload = vec![b'y'; 100 * 1024];
    for _ in 0..100 {
        resp.cmd(&[b"PUBLISH", b"big:1", &payload]);
    }
    let mut s = TcpStream::connect(h.http).unwrap();
    write!(s, "GET /api/history/big:1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Read the head only, then stop reading.
    let mut head = [0u8; 256];
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no length in {head}"));
    let before = open_fds(h.pid());
    std::thread::sleep(Duration::from_secs(4));
    // The connection is gone on the server, and what arrives is cut short.
    assert!(open_fds(h.pid()) < before, "stalled connection still open");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        n + rest.len() < length,
        "the whole {length}-byte response arrived"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn undecodable_paths_and_query_strings_get_json_errors() {
    let h = Herald::start(&[]);
    for path in [
        "/api/history/%FF",
        "/api/presence/%FF",
        "/api/history/x?limit=-1",
    ] {
        let (status, text) = get(h.http, path);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("{\"error\":{\"code\":100"), "{path}: {text}");
    }
}
