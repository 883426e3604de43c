//! `zset`: sorted-set throughput on a large leaderboard. The key is
//! preloaded with N members over pipelined `ZADD` (`--batch` members per
//! command), then `ZINCRBY key 1 <random member>` runs for `--duration`,
//! then `ZREVRANK key <random member>` for `--duration`, each from
//! `--connections` connections with `--pipeline` commands in flight
//! (closed loop: a reply lets the next command go). Latency is per command,
//! from the write of its batch to the read that completed its reply.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::hist::Histogram;
use crate::readbuf::Reader;
use crate::report::{self, Report};
use crate::resp::{self, Frame, Item};
use crate::{publish, stamp, sys, TIMEOUT};

/// Options of a `zset` run.
#[derive(Clone, Debug)]
pub struct ZsetOpts {
    pub addr: SocketAddr,
    pub key: String,
    pub members: u64,
    /// Members per `ZADD` while preloading.
    pub batch: usize,
    /// Seconds of each measured phase.
    pub duration: Duration,
    pub connections: usize,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// Server processes whose CPU time and memory are read (may be empty).
    pub pids: Vec<u32>,
    /// Leave the key in place afterwards (it is deleted by default).
    pub keep: bool,
}

/// splitmix64: a small, fast, well-mixed generator (no dependency).
struct Rng(u64);

impl Rng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Member `i`'s name: `m` and the decimal index.
#[inline]
fn member(out: &mut Vec<u8>, i: u64) {
    out.clear();
    out.push(b'm');
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Reads one reply on a fresh connection (bounded by [`TIMEOUT`]).
async fn one_reply(s: &mut TcpStream, buf: &mut Reader, cmd: &[&[u8]]) -> Result<()> {
    let mut out = Vec::new();
    resp::encode(&mut out, cmd);
    s.write_all(&out).await?;
    let deadline = Instant::now() + TIMEOUT * 3;
    loop {
        if let Some(f) = buf.next_resp()? {
            if let Some(e) = f.error() {
                bail!(
                    "{} failed: {}",
                    String::from_utf8_lossy(cmd[0]),
                    String::from_utf8_lossy(e)
                );
            }
            return Ok(());
        }
        match tokio::time::timeout_at(deadline.into(), buf.fill(s)).await {
            Err(_) => bail!("no reply to {} in time", String::from_utf8_lossy(cmd[0])),
            Ok(Ok(0)) => bail!("server closed the connection"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Deletes the key, then adds `members` members with pseudo-random
/// integer scores, `batch` per `ZADD`, 8 commands in flight. Returns the
/// members the server reported as added.
async fn preload(opts: &ZsetOpts) -> Result<u64> {
    let mut s = publish::connect(opts.addr).await?;
    let mut buf = Reader::new();
    let key = opts.key.as_bytes();
    one_reply(&mut s, &mut buf, &[b"DEL", key]).await?;
    let batch = opts.batch.max(1) as u64;
    let mut rng = Rng(0x5eed);
    let (mut next, mut inflight, mut added) = (0u64, 0usize, 0u64);
    let mut out = Vec::with_capacity(batch as usize * 24 + 64);
    let mut m = Vec::with_capacity(24);
    // Stalls are bounded per read; the whole preload by its size.
    let deadline = Instant::now() + TIMEOUT * 6;
    while next < opts.members || inflight > 0 {
        if inflight < 8 && next < opts.members {
            out.clear();
            while inflight < 8 && next < opts.members {
                let end = (next + batch).min(opts.members);
                let n = (end - next) as usize;
                // Header of `ZADD key score member ...` (2 + 2n arguments).
                out.push(b'*');
                out.extend_from_slice(itoa::Buffer::new().format(2 + 2 * n).as_bytes());
                out.extend_from_slice(b"\r\n");
                for a in [&b"ZADD"[..], key] {
                    bulk(&mut out, a);
                }
                for i in next..end {
                    let score = rng.next_u64() % 1_000_000;
                    bulk(&mut out, itoa::Buffer::new().format(score).as_bytes());
                    member(&mut m, i);
                    bulk(&mut out, &m);
                }
                next = end;
                inflight += 1;
            }
            s.write_all(&out).await.context("ZADD write failed")?;
        }
        match tokio::time::timeout_at(deadline.into(), buf.fill(&mut s)).await {
            Err(_) => bail!("preload of {} members did not finish in time", opts.members),
            Ok(Ok(0)) => bail!("server closed the preload connection"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
        while let Some(f) = buf.next_resp()? {
            inflight = inflight.saturating_sub(1);
            match f {
                Frame::Item(Item::Int(n)) => added += n.max(0) as u64,
                Frame::Item(Item::Error(e)) => {
                    bail!("ZADD failed: {}", String::from_utf8_lossy(e))
                }
                other => bail!("unexpected ZADD reply {other:?}"),
            }
        }
    }
    Ok(added)
}

fn bulk(out: &mut Vec<u8>, a: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

/// Which command a phase runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Zincrby,
    Zrevrank,
}

/// What one phase achieved over all its connections.
#[derive(Default)]
struct PhaseOutcome {
    replies: u64,
    errors: u64,
    nils: u64,
    hist: Histogram,
    secs: f64,
    first_error: Option<String>,
}

/// One connection of a phase: closed-loop pipelining until `deadline`,
/// then the outstanding replies.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut s: TcpStream,
    key: Vec<u8>,
    members: u64,
    op: Op,
    start: Instant,
    deadline: Instant,
    pipeline: usize,
    seed: u64,
) -> Result<(PhaseOutcome, Instant)> {
    let mut buf = Reader::new();
    let mut out = Vec::with_capacity(pipeline * 48);
    let mut m = Vec::with_capacity(24);
    let mut sent_at: VecDeque<u64> = VecDeque::with_capacity(pipeline);
    let mut rng = Rng(seed);
    let mut o = PhaseOutcome::default();
    let mut last_reply = start;
    loop {
        if Instant::now() < deadline {
            let room = pipeline.max(1) - sent_at.len();
            if room > 0 {
                out.clear();
                for _ in 0..room {
                    member(&mut m, rng.next_u64() % members.max(1));
                    match op {
                        Op::Zincrby => resp::encode(&mut out, &[b"ZINCRBY", &key, b"1", &m]),
                        Op::Zrevrank => resp::encode(&mut out, &[b"ZREVRANK", &key, &m]),
                    }
                }
                let t = stamp::now_ns();
                s.write_all(&out).await.context("write failed")?;
                sent_at.extend(std::iter::repeat_n(t, room));
            }
        } else if sent_at.is_empty() {
            break;
        }
        match tokio::time::timeout_at((deadline + TIMEOUT).into(), buf.fill(&mut s)).await {
            Err(_) => bail!(
                "{} replies missing {TIMEOUT:?} after the run",
                sent_at.len()
            ),
            Ok(Ok(0)) => bail!("server closed the connection"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
        let now = stamp::now_ns();
        let mut got = false;
        while let Some(f) = buf.next_resp()? {
            let Some(t) = sent_at.pop_front() else {
                bail!("a reply to no command: {f:?}");
            };
            o.hist.record(now.saturating_sub(t));
            o.replies += 1;
            got = true;
            match f {
                Frame::Item(Item::Error(e)) => {
                    o.errors += 1;
                    o.first_error
                        .get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
                }
                Frame::Item(Item::Nil) => o.nils += 1,
                _ => {}
            }
        }
        if got {
            last_reply = Instant::now();
        }
    }
    Ok((o, last_reply))
}

async fn phase(opts: &ZsetOpts, op: Op) -> Result<PhaseOutcome> {
    let mut conns = Vec::new();
    for _ in 0..opts.connections.max(1) {
        conns.push(publish::connect(opts.addr).await?);
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = Vec::new();
    for (i, s) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(drive(
            s,
            opts.key.clone().into_bytes(),
            opts.members,
            op,
            start,
            deadline,
            opts.pipeline,
            0x1234_5678 + i as u64 * 7919 + op as u64,
        )));
    }
    let mut total = PhaseOutcome::default();
    let mut last = start;
    for t in tasks {
        let (o, l) = t.await.context("zset task panicked")??;
        total.replies += o.replies;
        total.errors += o.errors;
        total.nils += o.nils;
        total.hist.merge(&o.hist);
        if total.first_error.is_none() {
            total.first_error = o.first_error;
        }
        last = last.max(l);
    }
    total.secs = (last - start).as_secs_f64();
    Ok(total)
}

/// Runs `zset`.
pub async fn run(opts: &ZsetOpts) -> Result<Report> {
    if opts.members == 0 {
        bail!("need at least one member");
    }
    stamp::epoch();
    let mem0 = if opts.pids.is_empty() {
        None
    } else {
        Some(sys::memory(&opts.pids)?.0)
    };
    let t = Instant::now();
    let added = preload(opts).await?;
    let preload_secs = t.elapsed().as_secs_f64();
    if added != opts.members {
        bail!(
            "ZADD reported {added} new members, expected {}",
            opts.members
        );
    }
    let mem1 = if opts.pids.is_empty() {
        None
    } else {
        Some(sys::memory(&opts.pids)?.0)
    };

    let cpu = || sys::cpu_seconds_of(&opts.pids).filter(|_| !opts.pids.is_empty());
    let c0 = cpu();
    let incr = phase(opts, Op::Zincrby).await?;
    let c1 = cpu();
    let rank = phase(opts, Op::Zrevrank).await?;
    let c2 = cpu();

    if !opts.keep {
        let mut s = publish::connect(opts.addr).await?;
        let mut buf = Reader::new();
        one_reply(&mut s, &mut buf, &[b"DEL", opts.key.as_bytes()]).await?;
    }

    let rate = |o: &PhaseOutcome| {
        if o.secs > 0.0 {
            o.replies as f64 / o.secs
        } else {
            0.0
        }
    };
    let mut rep = Report::new("zset");
    rep.set("server", opts.addr.to_string())
        .set("key", opts.key.clone())
        .set("members", opts.members)
        .set("preload_secs", report::round(preload_secs, 3))
        .set_f(
            "preload_members_per_sec",
            opts.members as f64 / preload_secs.max(1e-9),
        )
        .set_f("zincrby_per_sec", rate(&incr))
        .set_f("zincrby_p50_us", incr.hist.quantile_us(0.50))
        .set_f("zincrby_p99_us", incr.hist.quantile_us(0.99))
        .set_f("zincrby_p999_us", incr.hist.quantile_us(0.999))
        .set("zincrby_ops", incr.replies)
        .set_f("zrevrank_per_sec", rate(&rank))
        .set_f("zrevrank_p50_us", rank.hist.quantile_us(0.50))
        .set_f("zrevrank_p99_us", rank.hist.quantile_us(0.99))
        .set_f("zrevrank_p999_us", rank.hist.quantile_us(0.999))
        .set("zrevrank_ops", rank.replies)
        // A ZREVRANK of a preloaded member that answers nil: the member
        // was lost.
        .set("lost", rank.nils)
        .set("errors", incr.errors + rank.errors)
        .set("zincrby_nil_replies", incr.nils)
        .set("connections", opts.connections)
        .set("pipeline", opts.pipeline)
        .set("batch", opts.batch)
        .set_f("duration_s", opts.duration.as_secs_f64());
    if let (Some(a), Some(b)) = (mem0, mem1) {
        rep.set(
            "rss_per_member_bytes",
            report::round(b.saturating_sub(a) as f64 / opts.members as f64, 1),
        );
    }
    if let (Some(c0), Some(c1), Some(c2)) = (c0, c1, c2) {
        let per = |c: f64, n: u64| report::round(c * 1e6 / (n.max(1) as f64), 3);
        rep.set("server_cpu_us_per_zincrby", per(c1 - c0, incr.replies))
            .set("server_cpu_us_per_zrevrank", per(c2 - c1, rank.replies));
    }
    if let Some(e) = incr.first_error.or(rank.first_error) {
        rep.set("error", e);
    }
    Ok(rep)
}
