//! The differential test harness: the same script runs against a real
//! `redis-server` and against Herald; transcripts must match byte for byte
//! after normalising what differs by nature (client ids, time-based stream
//! ids, idle times).

use std::net::SocketAddr;
use std::time::Duration;

use super::{show, Herald, Raw, Redis};

#[derive(Clone)]
pub enum Step {
    /// Send a command on connection `c`, then read `n` frames.
    Cmd(usize, Vec<Vec<u8>>, usize),
    /// Send raw bytes on connection `c`, then read `n` frames.
    Raw(usize, Vec<u8>, usize),
    /// Read `n` frames on connection `c`.
    Read(usize, usize),
    /// Connection `c` must be closed by the server.
    Closed(usize),
    /// Nothing more arrives on `c` for a short while.
    Quiet(usize),
    /// Pause (to let a blocking command reach the server first).
    Sleep(u64),
    /// A command whose reply's elements come in no defined order (hash
    /// sets): compared sorted.
    Sorted(usize, Vec<Vec<u8>>),
    /// A command whose reply is random (SRANDMEMBER -n): only its type and
    /// length are compared.
    Shape(usize, Vec<Vec<u8>>),
}

/// The elements of an aggregate reply, sorted, behind the same header.
pub fn sorted_frame(frame: &[u8]) -> Vec<u8> {
    let head_end = frame
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(frame.len(), |i| i + 2);
    if !matches!(frame.first(), Some(b'*' | b'~' | b'%')) {
        return frame.to_vec();
    }
    let mut elems = Vec::new();
    let mut at = head_end;
    while at < frame.len() {
        let n = super::frame_len(&frame[at..]).expect("complete frame");
        elems.push(frame[at..at + n].to_vec());
        at += n;
    }
    elems.sort();
    let mut out = frame[..head_end].to_vec();
    for e in elems {
        out.extend(e);
    }
    out
}

/// A script: lines of `<conn> <frames> <command words...>`, or
/// `<conn> read <n>`, `<conn> closed`, `<conn> quiet`.
pub fn script(text: &str) -> Vec<Step> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let c: usize = it.next().unwrap().parse().unwrap();
            let second = it.next().unwrap();
            match second {
                "read" => Step::Read(c, it.next().unwrap().parse().unwrap()),
                "closed" => Step::Closed(c),
                "quiet" => Step::Quiet(c),
                "sleep" => Step::Sleep(it.next().unwrap().parse().unwrap()),
                "raw" => {
                    let rest = it.next().unwrap();
                    let (n, bytes) = rest.split_once(' ').unwrap();
                    let bytes = bytes.replace("\\r", "\r").replace("\\n", "\n");
                    Step::Raw(c, bytes.into_bytes(), n.parse().unwrap())
                }
                n => {
                    let words = it
                        .next()
                        .unwrap()
                        .split(' ')
                        .map(|w| w.as_bytes().to_vec())
                        .collect();
                    Step::Cmd(c, words, n.parse().unwrap())
                }
            }
        })
        .collect()
}

/// Replaces what differs by nature between two servers: client ids in
/// HELLO, time-based stream ids (13-digit milliseconds), and idle times
/// (XINFO CONSUMERS, XPENDING rows).
pub fn normalise(frame: &[u8]) -> Vec<u8> {
    use std::sync::OnceLock;
    static RES: OnceLock<Vec<(regex::Regex, &'static str)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        vec![
            (
                regex::Regex::new(r"\$2\r\nid\r\n:\d+").unwrap(),
                "$$2\r\nid\r\n:<id>",
            ),
            (
                regex::Regex::new(r"\$\d+\r\n\d{13}-\d+\r\n").unwrap(),
                "<tsid>\r\n",
            ),
            (
                regex::Regex::new(r"\$4\r\nidle\r\n:\d+").unwrap(),
                "$$4\r\nidle\r\n:<idle>",
            ),
            (
                regex::Regex::new(
                    r"(\*4\r\n\$\d+\r\n[0-9]+-[0-9]+\r\n\$\d+\r\n[^\r]*\r\n):\d+\r\n",
                )
                .unwrap(),
                "${1}:<idle>\r\n",
            ),
        ]
    });
    let mut s = String::from_utf8_lossy(frame).into_owned();
    for (re, rep) in res {
        s = re.replace_all(&s, *rep).into_owned();
    }
    s.into_bytes()
}

/// Runs a script against one server and returns its transcript.
pub fn run_script(addr: SocketAddr, steps: &[Step]) -> Vec<String> {
    let mut conns: Vec<Raw> = Vec::new();
    let mut log = Vec::new();
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
            conns.push(Raw::connect(addr));
        }
        let conn = &mut conns[c];
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
            Step::Sleep(_) => 0,
            Step::Sorted(_, args) | Step::Shape(_, args) => {
                let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                conn.send(&refs);
                let f = conn.try_frame(super::TIMEOUT).unwrap_or_default();
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
        };
        for _ in 0..n {
            let f = conn.try_frame(super::TIMEOUT);
            log.push(format!(
                "{c} {}",
                f.map(|f| show(&normalise(&f)))
                    .unwrap_or_else(|| "<no reply>".into())
            ));
        }
    }
    log
}

pub fn differential(steps: &[Step], redis_args: &[&str], herald_args: &[&str]) {
    let redis = Redis::start(redis_args);
    let herald = Herald::start(herald_args);
    let want = run_script(redis.addr, steps);
    let got = run_script(herald.resp, steps);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            g,
            w,
            "step {i} differs\n redis:  {w}\n herald: {g}\nfull redis transcript:\n{}",
            want.join("\n")
        );
    }
    assert_eq!(got.len(), want.len());
}

pub fn diff(text: &str) {
    differential(&script(text), &[], &[]);
}
