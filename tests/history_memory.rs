//! History accounting counts what history really costs: after many small
//! publishes, `history_bytes` (which the global cap enforces) is not far
//! below the process's RSS growth.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

fn history_bytes(h: &Herald) -> u64 {
    let body = http_get(h.http, "/stats");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["history_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"))
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

#[test]
fn history_bytes_track_real_memory() {
    let (_dir, file) = temp_config("histmem", "[namespaces.h]\nhistory_size = 1000000\n");
    let h = Herald::start(&["--config", &file]);
    let mut c = Raw::connect(h.resp);
    // Warm up allocator and buffers, then measure.
    let payload = vec![b'x'; 100];
    let publish = |c: &mut Raw, n: usize, channel: &[u8]| {
        let mut batch = Vec::new();
        for i in 0..n {
            batch.extend_from_slice(&encode(&[b"PUBLISH", channel, &payload]));
            if i % 1000 == 999 {
                c.send_raw(&batch);
                batch.clear();
                for _ in 0..1000 {
                    c.frame();
                }
            }
        }
    };
    publish(&mut c, 10_000, b"h:warm");
    std::thread::sleep(Duration::from_millis(200));
    let (rss0, hist0) = (rss(h.pid()), history_bytes(&h));
    const N: usize = 200_000;
    for ch in [&b"h:a"[..], b"h:b"] {
        publish(&mut c, N / 2, ch);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (rss1, hist1) = (rss(h.pid()), history_bytes(&h));
    let grew = rss1.saturating_sub(rss0) as f64;
    let counted = hist1.saturating_sub(hist0) as f64;
    eprintln!(
        "{N} entries of 100 B: RSS grew {:.0} B/entry, history_bytes counted {:.0} B/entry",
        grew / N as f64,
        counted / N as f64
    );
    assert!(
        counted >= 0.8 * grew,
        "history_bytes undercounts: counted {counted} for {grew} bytes of RSS growth"
    );
    assert!(
        counted <= 1.6 * grew,
        "history_bytes overcounts: counted {counted} for {grew} bytes of RSS growth"
    );
}
