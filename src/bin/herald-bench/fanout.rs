//! RESP scenarios: `fanout` (N subscribers, P pipelined publishers) and
//! `patterns` (publish cost with many idle patterns subscribed).
//!
//! Subscribers are raw sockets parsed with [`crate::resp`]; each keeps its
//! own count and histogram (merged at the end) and adds to one shared
//! counter once per read, which the publishers' flow control and the drain
//! watch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::hist::Histogram;
use crate::publish::{self, Flow, Plan, Publishers, Target};
use crate::readbuf::Reader;
use crate::report::Report;
use crate::resp::{self, Frame, Item};
use crate::{stamp, TIMEOUT};

/// Options of a fanout run (also used by `patterns`).
#[derive(Clone, Debug)]
pub struct FanoutOpts {
    /// Where publishers (and, unless `sub_addrs` is given, subscribers)
    /// connect.
    pub addr: SocketAddr,
    /// Subscribers spread round-robin over these (other nodes of one hub).
    pub sub_addrs: Vec<SocketAddr>,
    pub subscribers: usize,
    pub publishers: usize,
    pub payload: usize,
    pub duration: Duration,
    pub channels: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    /// Deliveries in flight allowed per subscriber before publishers pause
    /// (0: no limit).
    pub max_lag: u64,
    /// Patterns that never match, PSUBSCRIBEd on one extra connection.
    pub idle_patterns: usize,
    pub prefix: String,
}

/// What one subscriber saw.
#[derive(Default)]
pub struct SubOutcome {
    pub received: u64,
    pub hist: Histogram,
    pub last_ns: u64,
    pub closed: bool,
    pub error: Option<String>,
}

/// Sends `cmd` and reads frames until `n` replies whose first element is
/// `kind` arrived (an error reply fails).
async fn expect_confirms(
    s: &mut TcpStream,
    buf: &mut Reader,
    cmd: &[u8],
    kind: &[u8],
    n: usize,
    wait: Duration,
) -> Result<()> {
    s.write_all(cmd).await?;
    let deadline = Instant::now() + wait;
    let mut got = 0;
    while got < n {
        while let Some(f) = buf.next_resp()? {
            match f {
                Frame::Aggregate { items, .. } if items[0] == Item::Bulk(kind) => got += 1,
                Frame::Item(Item::Error(e)) => {
                    bail!(
                        "{} failed: {}",
                        String::from_utf8_lossy(kind),
                        String::from_utf8_lossy(e)
                    )
                }
                _ => {}
            }
        }
        if got >= n {
            break;
        }
        match tokio::time::timeout_at(deadline.into(), buf.fill(s)).await {
            Err(_) => bail!(
                "only {got} of {n} {} replies within {wait:?}",
                String::from_utf8_lossy(kind)
            ),
            Ok(Ok(0)) => bail!(
                "server closed the connection during {}",
                String::from_utf8_lossy(kind)
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Connects and SUBSCRIBEs to `channel`, returning once confirmed.
pub async fn subscriber(addr: SocketAddr, channel: &[u8]) -> Result<(TcpStream, Reader)> {
    let mut s = publish::connect(addr).await?;
    let mut buf = Reader::new();
    let mut cmd = Vec::new();
    resp::encode(&mut cmd, &[b"SUBSCRIBE", channel]);
    expect_confirms(&mut s, &mut buf, &cmd, b"subscribe", 1, TIMEOUT).await?;
    Ok((s, buf))
}

/// Reads deliveries until `stop` fires or the server closes.
pub async fn sub_loop(
    mut s: TcpStream,
    mut buf: Reader,
    total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut out = SubOutcome::default();
    'outer: loop {
        tokio::select! {
            r = buf.fill(&mut s) => match r {
                Ok(0) => { out.closed = true; break; }
                Ok(_) => {}
                Err(e) => { out.closed = true; out.error = Some(e.to_string()); break; }
            },
            _ = stop.changed() => break,
        }
        // One clock read per socket read: every message in it arrived now.
        let now = stamp::now_ns();
        let mut n = 0u64;
        loop {
            match buf.next_message() {
                Ok(Some(Ok(p))) => {
                    n += 1;
                    if let Some(ts) = stamp::read(p) {
                        out.hist.record(now.saturating_sub(ts));
                    }
                }
                Ok(Some(Err(_other))) => {}
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(format!("{e:#}"));
                    break 'outer;
                }
            }
        }
        if n > 0 {
            out.received += n;
            out.last_ns = now;
            total.fetch_add(n, Ordering::Relaxed);
        }
    }
    out
}

/// PSUBSCRIBEs `n` patterns that never match on one new connection.
async fn idle_patterns(addr: SocketAddr, n: usize, prefix: &str) -> Result<TcpStream> {
    let mut s = publish::connect(addr).await?;
    let mut buf = Reader::new();
    let mut cmd = Vec::new();
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("nomatch:{prefix}:{i}:*").into_bytes())
        .collect();
    for chunk in names.chunks(1000) {
        let mut args: Vec<&[u8]> = vec![b"PSUBSCRIBE"];
        args.extend(chunk.iter().map(|p| p.as_slice()));
        resp::encode(&mut cmd, &args);
    }
    let wait = TIMEOUT + Duration::from_millis(n as u64 / 10);
    expect_confirms(&mut s, &mut buf, &cmd, b"psubscribe", n, wait).await?;
    // Nothing arrives on this connection; it only has to stay open.
    Ok(s)
}

/// Waits until `total` reaches `expected`, or stops changing for `quiet`,
/// or `max` passes.
pub async fn drain(total: &AtomicU64, expected: u64, quiet: Duration, max: Duration) {
    let start = Instant::now();
    let mut last = total.load(Ordering::Relaxed);
    let mut last_change = start;
    loop {
        let now = Instant::now();
        let r = total.load(Ordering::Relaxed);
        if r >= expected || now - start > max {
            return;
        }
        if r != last {
            last = r;
            last_change = now;
        } else if now - last_change > quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a fanout (or, with `idle_patterns`, a patterns) scenario.
pub async fn run(opts: &FanoutOpts, scenario: &str) -> Result<Report> {
    if opts.subscribers == 0 || opts.channels == 0 {
        bail!("need at least one subscriber and one channel");
    }
    stamp::epoch();
    let channels: Vec<Vec<u8>> = (0..opts.channels)
        .map(|i| format!("{}.{i}", opts.prefix).into_bytes())
        .collect();
    let mut subs_on = vec![0u64; opts.channels];
    for i in 0..opts.subscribers {
        subs_on[i % opts.channels] += 1;
    }

    let _patterns = if opts.idle_patterns > 0 {
        Some(idle_patterns(opts.addr, opts.idle_patterns, &opts.prefix).await?)
    } else {
        None
    };

    // Subscribers connect concurrently (bounded) and are all confirmed
    // before the first publish.
    let gate = Arc::new(Semaphore::new(64));
    let mut connecting = JoinSet::new();
    for i in 0..opts.subscribers {
        let gate = gate.clone();
        let ch = channels[i % opts.channels].clone();
        let addr = match opts.sub_addrs.len() {
            0 => opts.addr,
            n => opts.sub_addrs[i % n],
        };
        connecting.spawn(async move {
            let _p = gate.acquire().await;
            subscriber(addr, &ch).await
        });
    }
    let mut subs = Vec::with_capacity(opts.subscribers);
    while let Some(r) = connecting.join_next().await {
        subs.push(r.context("subscriber task panicked")??);
    }

    let total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    for (s, buf) in subs {
        readers.spawn(sub_loop(s, buf, total.clone(), stop_rx.clone()));
    }

    let per_publish = opts.subscribers as f64 / opts.channels as f64;
    let plan = Plan {
        target: Target::Resp(opts.addr),
        publishers: opts.publishers,
        channels,
        payload: opts.payload,
        duration: opts.duration,
        pipeline: opts.pipeline,
        rate: opts.rate,
        flow: (opts.max_lag > 0).then(|| Flow {
            received: total.clone(),
            per_publish,
            limit: opts.max_lag.saturating_mul(opts.subscribers as u64),
        }),
    };
    let pubs = Publishers::connect(plan).await?;
    let start_ns = stamp::now_ns();
    let outcome = pubs.run().await?;

    let expected: u64 = outcome
        .acked_per_channel
        .iter()
        .zip(&subs_on)
        .map(|(a, s)| a * s)
        .sum();
    drain(&total, expected, Duration::from_millis(500), TIMEOUT).await;
    let _ = stop_tx.send(true);

    let mut hist = Histogram::default();
    let mut received = 0;
    let mut last_ns = start_ns;
    let mut disconnects = 0;
    let mut sub_error = None;
    while let Some(r) = tokio::time::timeout(TIMEOUT, readers.join_next())
        .await
        .context("subscribers did not stop in time")?
    {
        let o = r.context("subscriber task panicked")?;
        received += o.received;
        hist.merge(&o.hist);
        last_ns = last_ns.max(o.last_ns);
        disconnects += o.closed as u64;
        if sub_error.is_none() {
            sub_error = o.error;
        }
    }

    let deliver_secs = (last_ns.saturating_sub(start_ns)) as f64 / 1e9;
    let mut rep = Report::new(scenario);
    rep.set("server", opts.addr.to_string())
        .set_f(
            "deliveries_per_sec",
            if deliver_secs > 0.0 {
                received as f64 / deliver_secs
            } else {
                0.0
            },
        )
        .set_f("publishes_per_sec", outcome.publishes_per_sec())
        .latency(&hist)
        .set("lost", expected.saturating_sub(received))
        .set("expected", expected)
        .set("received", received)
        .set("extra", received.saturating_sub(expected))
        .set("published", outcome.acked)
        .set("publish_errors", outcome.errors)
        .set("unanswered", outcome.unanswered)
        .set("receivers_reported", outcome.receivers_reported)
        .set("subscriber_disconnects", disconnects)
        .set("subscribers", opts.subscribers)
        .set("publishers", opts.publishers)
        .set("channels", opts.channels)
        .set("payload", opts.payload.max(stamp::MIN_PAYLOAD))
        .set("pipeline", opts.pipeline)
        .set("rate_target", opts.rate.unwrap_or(0.0))
        .set("max_lag", opts.max_lag)
        .set_f("duration_s", opts.duration.as_secs_f64());
    if opts.idle_patterns > 0 {
        rep.set("patterns", opts.idle_patterns);
    }
    if let Some(e) = outcome.first_error.or(sub_error) {
        rep.set("error", e);
    }
    Ok(rep)
}
