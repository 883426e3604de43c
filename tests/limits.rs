//! Limits and bad input: slow consumers cut off by the output buffer limits
//! while others keep full speed, connection/bulk/subscription/channel limits
//! answered in Redis's form, the security default, and clean shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{encode, show, Herald, Raw, TIMEOUT};

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// One subscriber never reads while 256 MiB of 1 MiB messages are
/// published: it is cut off at the hard limit, the healthy subscribers get
/// every message, and Herald's memory stays far below the volume published.
#[test]
fn slow_consumer_is_cut_off_and_others_get_everything() {
    const MESSAGES: usize = 256;
    const SIZE: usize = 1 << 20;
    const HEALTHY: usize = 3;
    const WINDOW: usize = 8;
    let herald = Herald::start(&[]);
    let pid = herald.pid();

    let mut stalled = Raw::connect(herald.resp);
    assert!(show(&stalled.cmd(&[b"SUBSCRIBE", b"big"])).contains("subscribe"));

    let progress: Arc<Vec<AtomicUsize>> =
        Arc::new((0..HEALTHY).map(|_| AtomicUsize::new(0)).collect());
    let mut readers = Vec::new();
    for i in 0..HEALTHY {
        let mut c = Raw::connect(herald.resp);
        assert!(show(&c.cmd(&[b"SUBSCRIBE", b"big"])).contains("subscribe"));
        let progress = progress.clone();
        readers.push(std::thread::spawn(move || {
            for n in 0..MESSAGES {
                let f = c.frame();
                assert!(f.len() > SIZE, "short frame");
                assert!(
                    f.ends_with(format!("{:08}\r\n", n).as_bytes()),
                    "message {n} out of order or lost"
                );
                progress[i].store(n + 1, Ordering::Release);
            }
        }));
    }

    let base_rss = status_kib(pid, "VmRSS:");
    let mut publisher = Raw::connect(herald.resp);
    let mut payload = vec![b'x'; SIZE];
    for n in 0..MESSAGES {
        // Keep the healthy subscribers within a few messages of the
        // publisher, as a live consumer would be.
        let deadline = Instant::now() + TIMEOUT * 3;
        while progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap()
            + WINDOW
            < n
        {
            assert!(
                Instant::now() < deadline,
                "healthy subscribers stalled at {n}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        payload[SIZE - 8..].copy_from_slice(format!("{:08}", n).as_bytes());
        let reply = publisher.cmd(&[b"PUBLISH", b"big", &payload]);
        assert!(reply.starts_with(b":"), "{}", show(&reply));
    }
    for r in readers {
        r.join().expect("a healthy subscriber missed a message");
    }
    let peak = status_kib(pid, "VmHWM:");
    let growth_mib = peak.saturating_sub(base_rss) / 1024;
    eprintln!(
        "published {} MiB; herald RSS {} KiB -> peak {} KiB (+{} MiB)",
        MESSAGES, base_rss, peak, growth_mib
    );
    assert!(
        growth_mib < 96,
        "herald grew by {growth_mib} MiB while 256 MiB were published"
    );

    // The stalled client was cut off: after whatever the kernel buffered, EOF.
    assert!(
        stalled.closed(),
        "the stalled subscriber was not disconnected"
    );
    let info = show(&publisher.cmd(&[b"INFO", b"stats"]));
    assert!(
        info.contains("client_output_buffer_limit_disconnections:1"),
        "{info}"
    );
    let log = herald.drain_log().join("\n");
    assert!(
        log.contains("output buffer limits"),
        "no log line for the cut-off:\n{log}"
    );
}

#[test]
fn max_connections() {
    let herald = Herald::start(&["--max-connections", "2"]);
    let mut a = Raw::connect(herald.resp);
    let mut b = Raw::connect(herald.resp);
    assert_eq!(a.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(b.cmd(&[b"PING"]), b"+PONG\r\n");
    let mut c = Raw::connect(herald.resp);
    assert_eq!(c.frame(), b"-ERR max number of clients reached\r\n");
    assert!(c.closed());
    drop(a);
    // The freed slot is reusable.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut d = Raw::connect(herald.resp);
        d.send(&[b"PING"]);
        if d.frame() == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bulk_and_query_buffer_limits() {
    let herald = Herald::start(&["--max-bulk-len", "1kb", "--max-query-buffer", "4kb"]);
    let mut a = Raw::connect(herald.resp);
    a.send_raw(b"*2\r\n$4\r\nECHO\r\n$2000\r\n");
    assert_eq!(a.frame(), b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(a.closed());
    // Many bulks that never complete a request: closed at the query limit.
    let mut b = Raw::connect(herald.resp);
    let mut req = b"*100\r\n".to_vec();
    for _ in 0..10 {
        req.extend(b"$1000\r\n");
        req.extend(vec![b'a'; 1000]);
        req.extend(b"\r\n");
    }
    b.send_raw(&req);
    assert!(b.closed(), "query buffer limit not enforced");
    // Herald still serves others.
    let mut c = Raw::connect(herald.resp);
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn subscription_and_channel_limits() {
    let herald = Herald::start(&["--max-subscriptions", "2", "--max-channel-length", "8"]);
    let mut a = Raw::connect(herald.resp);
    a.send(&[b"SUBSCRIBE", b"a", b"b", b"c"]);
    assert!(show(&a.frame()).contains(":1"));
    assert!(show(&a.frame()).contains(":2"));
    assert_eq!(
        a.frame(),
        b"-ERR max subscriptions per connection reached (2)\r\n"
    );
    let mut b = Raw::connect(herald.resp);
    assert_eq!(
        b.cmd(&[b"PSUBSCRIBE", b"123456789"]),
        b"-ERR channel name or pattern longer than 8 bytes\r\n"
    );
    // The connection goes on.
    assert!(show(&b.cmd(&[b"PSUBSCRIBE", b"1234*"])).contains("psubscribe"));
}

#[test]
fn random_garbage_never_kills_the_server() {
    let herald = Herald::start(&[]);
    let mut seed: u64 = 0x9E3779B97F4A7C15;
    for _ in 0..200 {
        let mut c = Raw::connect(herald.resp);
        let mut junk = Vec::new();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(match seed % 8 {
                0 => b'*',
                1 => b'$',
                2 => b'\r',
                3 => b'\n',
                4 => b'-',
                5 => b'0' + (seed % 10) as u8,
                _ => (seed >> 8) as u8,
            });
        }
        c.send_raw(&junk);
    }
    let mut ok = Raw::connect(herald.resp);
    assert_eq!(ok.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn security_default_refuses_anonymous_on_public_addresses() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--resp-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-anonymous"), "{err}");
    // With a password, or explicitly allowed, it starts.
    let h = Herald::start(&["--resp-addr", "0.0.0.0:0", "--requirepass", "pw"]);
    let mut c = Raw::connect(format!("127.0.0.1:{}", h.resp.port()).parse().unwrap());
    assert_eq!(c.cmd(&[b"PING"]), b"-NOAUTH Authentication required.\r\n");
    let _h2 = Herald::start(&["--resp-addr", "0.0.0.0:0", "--allow-anonymous"]);
}

#[test]
fn config_file_env_and_flags() {
    let dir = std::env::temp_dir().join(format!("herald-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("herald.toml");
    std::fs::write(
        &file,
        "requirepass = \"from-file\"\nmax_subscriptions = 1\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    // File alone.
    let h = Herald::start(&["--config", f]);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", b"from-file"]), b"+OK\r\n");
    // Env over file, flag over env.
    let h = Herald::start_with_env(&["--config", f], &[("HERALD_REQUIREPASS", "from-env")]);
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", b"from-env"]), b"+OK\r\n");
    let h = Herald::start_with_env(
        &["--config", f, "--requirepass", "from-flag"],
        &[("HERALD_REQUIREPASS", "from-env")],
    );
    let mut c = Raw::connect(h.resp);
    assert_eq!(c.cmd(&[b"AUTH", b"from-flag"]), b"+OK\r\n");
    // An unknown key stops start-up and is named.
    std::fs::write(&file, "requirepas = \"typo\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--config",
            f,
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requirepas"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_every_option() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--resp-addr",
        "--http-addr",
        "--config",
        "--jwt-hmac-secret",
        "--jwt-public-key-file",
        "--api-key",
        "--requirepass",
        "--allow-anonymous",
        "--max-connections",
        "--output-buffer-hard-limit",
        "HERALD_RESP_ADDR",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn sigterm_closes_clients_and_exits_zero() {
    let mut herald = Herald::start(&[]);
    let mut sub = Raw::connect(herald.resp);
    assert!(show(&sub.cmd(&[b"SUBSCRIBE", b"x"])).contains("subscribe"));
    let status = herald.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(sub.closed());
    let _ = encode(&[b"unused"]);
}

/// QUIT while messages keep arriving: its `+OK` is the last thing the
/// client reads, and the connection closes (Redis sends nothing after it).
/// The same for a protocol error.
#[test]
fn nothing_follows_the_last_reply_under_a_steady_publisher() {
    let herald = Herald::start(&[]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (addr, stop) = (herald.resp, stop.clone());
        std::thread::spawn(move || {
            let mut p = Raw::connect(addr);
            let batch: Vec<u8> = (0..32)
                .flat_map(|_| common::encode(&[b"PUBLISH", b"steady", b"x"]))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                p.send_raw(&batch);
                for _ in 0..32 {
                    p.frame();
                }
            }
        })
    };
    for ending in [&b"QUIT\r\n"[..], b"*1\r\n$x\r\n"] {
        let mut s = Raw::connect(herald.resp);
        assert!(show(&s.cmd(&[b"SUBSCRIBE", b"steady"])).contains("subscribe"));
        // Let messages flow, then end the connection mid-stream.
        std::thread::sleep(Duration::from_millis(50));
        s.send_raw(ending);
        let mut last = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while let Some(f) = s.try_frame(Duration::from_secs(3)) {
            last = f;
            assert!(
                Instant::now() < until,
                "still open and receiving after 10 s"
            );
        }
        let last = show(&last);
        assert!(
            last.starts_with("+OK") || last.starts_with("-ERR Protocol error"),
            "last frame before the close: {last}"
        );
        assert!(s.closed(), "connection closed after its last reply");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
}
