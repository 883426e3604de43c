//! WebSocket scenarios: `ws-fanout` (deliveries to N WebSocket
//! subscribers, published over RESP or HTTP), `idle-conns` (server memory
//! per idle connection) and `recovery` (replay after missed messages).
//!
//! Herald pushes are recognised by their fixed prefix
//! (`{"push":"message"`) and the timestamp is read straight after
//! `"data":"`, so the hot path parses no JSON; replies to commands are
//! parsed with serde_json.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fanout::{drain, SubOutcome};
use crate::hist::Histogram;
use crate::publish::{self, Flow, Plan, Publishers, Target};
use crate::readbuf::Reader;
use crate::report::Report;
use crate::{resp, stamp, sys, wsraw, TIMEOUT};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How subscribers talk to the WebSocket endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Herald's JSON protocol: a `subscribe` command, `message` pushes.
    Herald,
    /// nchan style: the URL is the subscription, each frame is a payload.
    Nchan,
}

/// Opens a WebSocket with a timeout. `read_buffer` is the client's eager
/// read buffer (small for idle connections).
pub async fn connect(url: &str, read_buffer: usize) -> Result<Ws> {
    let cfg = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, Some(cfg), true),
    )
    .await
    .with_context(|| format!("WebSocket connect to {url} timed out"))?
    .with_context(|| format!("WebSocket connect to {url} failed"))?;
    Ok(ws)
}

async fn send_json(ws: &mut Ws, v: Value) -> Result<()> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .context("WebSocket send failed")
}

/// Sends a command with id 1 and returns its reply's `result` (pushes
/// before the reply are returned too, in order).
async fn call(ws: &mut Ws, cmd: Value) -> Result<(Value, Vec<Value>)> {
    send_json(ws, cmd).await?;
    let deadline = Instant::now() + TIMEOUT;
    let mut pushes = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .context("no WebSocket reply in time")?
            .ok_or_else(|| anyhow!("WebSocket closed before the reply"))?
            .context("WebSocket error")?;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(f) => bail!("WebSocket closed before the reply: {f:?}"),
            _ => continue,
        };
        let v: Value = serde_json::from_str(&text).context("reply is not JSON")?;
        if v.get("id") == Some(&json!(1)) {
            if let Some(e) = v.get("error") {
                bail!("server refused {}: {e}", v);
            }
            return Ok((v.get("result").cloned().unwrap_or(Value::Null), pushes));
        }
        pushes.push(v);
    }
}

/// What a Herald push frame is, as far as the benchmark cares.
enum Push<'a> {
    /// A `message`/`pmessage` push and its data text from after the quote.
    Message(Option<&'a [u8]>),
    Disconnect,
    Other,
}

fn classify(t: &[u8]) -> Push<'_> {
    if t.starts_with(br#"{"push":"message""#) || t.starts_with(br#"{"push":"pmessage""#) {
        let data = memmem::find(t, br#""data":""#).map(|i| &t[i + 8..]);
        Push::Message(data)
    } else if t.starts_with(br#"{"push":"disconnect""#) {
        Push::Disconnect
    } else {
        Push::Other
    }
}

/// The `offset` of a Herald push, read without a JSON parse.
fn push_offset(t: &[u8]) -> Option<u64> {
    let i = memmem::rfind(t, br#""offset":"#)? + 9;
    let digits = t[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&t[i..i + digits]).ok()?.parse().ok()
}

/// What a data frame of `protocol` is: `None` when not a delivery (a
/// reply, another push), else the delivery's send stamp if it carries one.
/// A Herald `disconnect` push is kept in `error`.
#[inline]
fn delivery(protocol: Protocol, p: &[u8], error: &mut Option<String>) -> Option<Option<u64>> {
    match protocol {
        Protocol::Nchan => Some(stamp::read(p)),
        Protocol::Herald => match classify(p) {
            Push::Message(data) => Some(data.and_then(stamp::read)),
            Push::Disconnect => {
                error.get_or_insert_with(|| String::from_utf8_lossy(p).into_owned());
                None
            }
            Push::Other => None,
        },
    }
}

/// Reads deliveries from a raw WebSocket until `stop` fires or the
/// connection ends. Frames are parsed in place ([`wsraw`]); the clock is
/// read once per socket read, as for RESP subscribers.
async fn ws_sub_loop(
    mut s: TcpStream,
    mut buf: Reader,
    protocol: Protocol,
    total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut out = SubOutcome::default();
    // The stamp of a fragmented data message, counted at its last fragment.
    let mut fragment: Option<Option<Option<u64>>> = None;
    let mut pong: Option<Vec<u8>> = None;
    loop {
        let now = stamp::now_ns();
        let mut n = 0u64;
        let mut end = false;
        loop {
            let f = match buf.next_ws() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.error.get_or_insert_with(|| format!("{e:#}"));
                    out.closed = true;
                    end = true;
                    break;
                }
            };
            let d = match f.opcode {
                wsraw::OP_TEXT | wsraw::OP_BINARY => {
                    let d = delivery(protocol, f.payload, &mut out.error);
                    if !f.fin {
                        fragment = Some(d);
                        continue;
                    }
                    d
                }
                wsraw::OP_CONT => match (f.fin, fragment.take()) {
                    (true, Some(d)) => d,
                    (false, d) => {
                        fragment = d;
                        continue;
                    }
                    (true, None) => continue,
                },
                wsraw::OP_PING => {
                    pong = Some(f.payload.to_vec());
                    continue;
                }
                wsraw::OP_CLOSE => {
                    out.closed = true;
                    out.error.get_or_insert_with(|| {
                        format!(
                            "server closed: {}",
                            String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default())
                        )
                    });
                    end = true;
                    break;
                }
                _ => continue,
            };
            if let Some(ts) = d {
                n += 1;
                if let Some(ts) = ts {
                    out.hist.record(now.saturating_sub(ts));
                }
            }
        }
        if n > 0 {
            out.received += n;
            out.last_ns = now;
            total.fetch_add(n, Ordering::Relaxed);
        }
        if end {
            break;
        }
        if let Some(p) = pong.take() {
            let mut frame = Vec::new();
            wsraw::encode(&mut frame, wsraw::OP_PONG, &p);
            if let Err(e) = s.write_all(&frame).await {
                out.closed = true;
                out.error = Some(e.to_string());
                break;
            }
        }
        tokio::select! {
            r = buf.fill(&mut s) => match r {
                Ok(0) => { out.closed = true; break; }
                Ok(_) => {}
                Err(e) => { out.closed = true; out.error = Some(e.to_string()); break; }
            },
            _ = stop.changed() => break,
        }
    }
    out
}

/// Opens a raw WebSocket subscriber: for Herald, also subscribes to
/// `channel` and waits for the reply; nchan subscribes on upgrade.
async fn raw_subscriber(
    url: &wsraw::Url,
    protocol: Protocol,
    channel: &str,
) -> Result<(TcpStream, Reader)> {
    let (mut s, mut r) = wsraw::connect(url, 16 * 1024).await?;
    if protocol == Protocol::Herald {
        let cmd = json!({"id": 1, "op": "subscribe", "channel": channel}).to_string();
        wsraw::send_text(&mut s, &cmd).await?;
        wsraw::wait_text(&mut s, &mut r, |t| {
            if t.starts_with(br#"{"push""#) {
                return Ok(false);
            }
            let v: Value = serde_json::from_slice(t).context("reply is not JSON")?;
            if v.get("id") != Some(&json!(1)) {
                return Ok(false);
            }
            if let Some(e) = v.get("error") {
                bail!("server refused subscribe: {e}");
            }
            Ok(true)
        })
        .await?;
    }
    Ok((s, r))
}

/// Options of a `ws-fanout` run.
#[derive(Clone, Debug)]
pub struct WsFanoutOpts {
    pub url: String,
    pub subscribers: usize,
    pub duration: Duration,
    pub target: Target,
    pub payload: usize,
    pub protocol: Protocol,
    pub channel: String,
    pub publishers: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub max_lag: u64,
}

/// Runs `ws-fanout`.
pub async fn fanout(opts: &WsFanoutOpts) -> Result<Report> {
    if opts.subscribers == 0 {
        bail!("need at least one subscriber");
    }
    stamp::epoch();
    sys::raise_nofile();
    if let Some(limit) = sys::raise_nofile() {
        if (opts.subscribers as u64) + 64 > limit {
            bail!(
                "{} subscribers need more open files than RLIMIT_NOFILE ({limit}); raise `ulimit -n`",
                opts.subscribers
            );
        }
    }
    let url = Arc::new(wsraw::Url::parse(&opts.url)?);
    let gate = Arc::new(Semaphore::new(64));
    let mut connecting = JoinSet::new();
    for _ in 0..opts.subscribers {
        let gate = gate.clone();
        let url = url.clone();
        let channel = opts.channel.clone();
        let protocol = opts.protocol;
        connecting.spawn(async move {
            let _p = gate.acquire().await;
            raw_subscriber(&url, protocol, &channel).await
        });
    }
    let mut socks = Vec::with_capacity(opts.subscribers);
    while let Some(r) = connecting.join_next().await {
        socks.push(r.context("subscriber task panicked")??);
    }
    if opts.protocol == Protocol::Nchan {
        // nchan subscribes on upgrade; give it a moment to register.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    for (sock, buf) in socks {
        readers.spawn(ws_sub_loop(
            sock,
            buf,
            opts.protocol,
            total.clone(),
            stop_rx.clone(),
        ));
    }

    let plan = Plan {
        target: opts.target.clone(),
        publishers: opts.publishers,
        channels: vec![opts.channel.clone().into_bytes()],
        payload: opts.payload,
        duration: opts.duration,
        pipeline: opts.pipeline,
        rate: opts.rate,
        flow: (opts.max_lag > 0).then(|| Flow {
            received: total.clone(),
            per_publish: opts.subscribers as f64,
            limit: opts.max_lag.saturating_mul(opts.subscribers as u64),
        }),
    };
    let pubs = Publishers::connect(plan).await?;
    let start_ns = stamp::now_ns();
    let outcome = pubs.run().await?;
    let expected = outcome.acked * opts.subscribers as u64;
    drain(&total, expected, Duration::from_millis(500), TIMEOUT).await;
    let _ = stop_tx.send(true);

    let mut hist = Histogram::default();
    let (mut received, mut last_ns, mut disconnects) = (0, start_ns, 0);
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
    let secs = last_ns.saturating_sub(start_ns) as f64 / 1e9;
    let mut rep = Report::new("ws-fanout");
    rep.set("url", opts.url.clone())
        .set_f(
            "deliveries_per_sec",
            if secs > 0.0 {
                received as f64 / secs
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
        .set("subscriber_disconnects", disconnects)
        .set("subscribers", opts.subscribers)
        .set("publishers", opts.publishers)
        .set("payload", opts.payload.max(stamp::MIN_PAYLOAD))
        .set("pipeline", opts.pipeline)
        .set("rate_target", opts.rate.unwrap_or(0.0))
        .set("max_lag", opts.max_lag)
        .set(
            "publish_via",
            match &opts.target {
                Target::Resp(a) => format!("resp {a}"),
                Target::HeraldHttp { addr, path } | Target::RawHttp { addr, path } => {
                    format!("http {addr}{path}")
                }
            },
        )
        .set(
            "protocol",
            match opts.protocol {
                Protocol::Herald => "herald",
                Protocol::Nchan => "nchan",
            },
        )
        .set_f("duration_s", opts.duration.as_secs_f64());
    if let Some(e) = outcome.first_error.or(sub_error) {
        rep.set("error", e);
    }
    Ok(rep)
}

/// Options of an `idle-conns` run.
#[derive(Clone, Debug)]
pub struct IdleOpts {
    pub url: String,
    pub connections: usize,
    /// Server processes whose memory is summed (empty: not measured).
    pub pids: Vec<u32>,
    /// Also sum the children of `pids` (e.g. nginx's workers).
    pub with_children: bool,
    pub hold: Duration,
    /// Herald protocol: each connection also subscribes to this channel
    /// (an nchan connection is a subscription by its URL).
    pub subscribe: Option<String>,
}

/// Runs `idle-conns`: opens N WebSocket connections that only complete the
/// handshake (and, with `subscribe`, one subscription) and measures the
/// server's resident memory before and after (summed over its processes).
pub async fn idle(opts: &IdleOpts) -> Result<Report> {
    let nofile = sys::raise_nofile();
    if let Some(limit) = nofile {
        if (opts.connections as u64) + 64 > limit {
            bail!(
                "{} connections need more open files than RLIMIT_NOFILE ({limit}); raise `ulimit -n`",
                opts.connections
            );
        }
    }
    let pids = sys::expand(&opts.pids, opts.with_children);
    let before = if pids.is_empty() {
        None
    } else {
        Some(sys::memory(&pids)?)
    };
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let mut connecting = JoinSet::new();
    for _ in 0..opts.connections {
        let gate = gate.clone();
        let url = opts.url.clone();
        let channel = opts.subscribe.clone();
        connecting.spawn(async move {
            let _p = gate.acquire().await;
            let mut ws = connect(&url, 4096).await?;
            if let Some(channel) = channel {
                call(
                    &mut ws,
                    json!({"id": 1, "op": "subscribe", "channel": channel}),
                )
                .await?;
            }
            anyhow::Ok(ws)
        });
    }
    let mut socks = Vec::with_capacity(opts.connections);
    let mut failed = 0u64;
    let mut first_error = None;
    while let Some(r) = connecting.join_next().await {
        match r.context("connect task panicked")? {
            Ok(ws) => socks.push(ws),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let opened = socks.len();

    // Each connection is polled so that it answers server pings and so a
    // close by the server is noticed.
    let closed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = JoinSet::new();
    for mut ws in socks {
        let closed = closed.clone();
        let mut stop = stop_rx.clone();
        holders.spawn(async move {
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                    _ = stop.changed() => return,
                }
            }
        });
    }
    tokio::time::sleep(opts.hold).await;
    let after = if pids.is_empty() {
        None
    } else {
        Some(sys::memory(&pids)?)
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(TIMEOUT, async {
        while holders.join_next().await.is_some() {}
    })
    .await;

    let mut rep = Report::new("idle-conns");
    rep.set("url", opts.url.clone())
        .set("connections", opened)
        .set("connect_failures", failed)
        .set("closed_during_hold", closed.load(Ordering::Relaxed))
        .set_f("connect_secs", connect_secs)
        .set_f(
            "connects_per_sec",
            if connect_secs > 0.0 {
                opened as f64 / connect_secs
            } else {
                0.0
            },
        )
        .set_f("hold_s", opts.hold.as_secs_f64());
    if let Some(n) = nofile {
        rep.set("nofile_limit", n);
    }
    let per_conn = |b: u64, a: u64| {
        if opened > 0 {
            a.saturating_sub(b) / opened as u64
        } else {
            0
        }
    };
    match (before, after) {
        (Some((rb, pb)), Some((ra, pa))) => {
            rep.set("pids", pids.clone())
                .set("rss_before_bytes", rb)
                .set("rss_after_bytes", ra)
                .set("rss_per_conn_bytes", per_conn(rb, ra));
            if pids.len() == 1 {
                rep.set("pid", pids[0]);
            }
            if let (Some(pb), Some(pa)) = (pb, pa) {
                rep.set("pss_before_bytes", pb)
                    .set("pss_after_bytes", pa)
                    .set("pss_per_conn_bytes", per_conn(pb, pa));
            }
        }
        _ => {
            rep.set("rss_per_conn_bytes", Value::Null);
        }
    }
    if let Some(c) = &opts.subscribe {
        rep.set("subscribed_to", c.clone());
    }
    if let Some(e) = first_error {
        rep.set("error", e);
    }
    Ok(rep)
}

/// Options of a `recovery` run.
#[derive(Clone, Debug)]
pub struct RecoveryOpts {
    pub url: String,
    pub resp: std::net::SocketAddr,
    pub channel: String,
    pub missed: u64,
    pub payload: usize,
}

/// Publishes `n` messages on `channel` over one pipelined RESP connection
/// (up to 1,000 in flight) and returns how many were acknowledged.
async fn publish_count(
    addr: std::net::SocketAddr,
    channel: &[u8],
    n: u64,
    payload: usize,
) -> Result<u64> {
    let mut s = publish::connect(addr).await?;
    let mut buf = Reader::new();
    let mut p = stamp::payload(payload);
    let mut out = Vec::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    let deadline = Instant::now() + TIMEOUT * 6;
    while acked < n {
        if sent - acked < 1000 && sent < n {
            out.clear();
            let batch = (1000 - (sent - acked)).min(n - sent);
            stamp::stamp(&mut p, stamp::now_ns());
            for _ in 0..batch {
                resp::encode(&mut out, &[b"PUBLISH", channel, &p]);
            }
            s.write_all(&out).await?;
            sent += batch;
        }
        match tokio::time::timeout_at(deadline.into(), buf.fill(&mut s)).await {
            Err(_) => bail!("only {acked} of {n} publishes acknowledged in time"),
            Ok(Ok(0)) => bail!("server closed the publishing connection"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
        while let Some(f) = buf.next_resp()? {
            if let Some(e) = f.error() {
                bail!("PUBLISH failed: {}", String::from_utf8_lossy(e));
            }
            acked += 1;
        }
    }
    Ok(acked)
}

/// Runs `recovery`.
pub async fn recovery(opts: &RecoveryOpts) -> Result<Report> {
    let mut ws = connect(&opts.url, 64 * 1024).await?;
    let (res, _) = call(
        &mut ws,
        json!({"id": 1, "op": "subscribe", "channel": opts.channel}),
    )
    .await?;
    let (Some(offset), Some(epoch)) = (
        res.get("offset").and_then(Value::as_u64),
        res.get("epoch").cloned(),
    ) else {
        bail!(
            "channel {} keeps no history (subscribe replied {res}); configure its namespace, \
             e.g. [namespaces.bench] history_size = 100000",
            opts.channel
        );
    };
    let _ = ws.close(None).await;
    drop(ws);

    let t_pub = Instant::now();
    let acked = publish_count(
        opts.resp,
        opts.channel.as_bytes(),
        opts.missed,
        opts.payload,
    )
    .await?;
    let pub_secs = t_pub.elapsed().as_secs_f64();

    // The replay is read with the raw client (frames parsed in place), so
    // the client's cost per message stays small next to the server's.
    let url = wsraw::Url::parse(&opts.url)?;
    let (mut sock, mut rd) = wsraw::connect(&url, 256 * 1024).await?;
    let t0 = Instant::now();
    let cmd = json!({"id": 1, "op": "subscribe", "channel": opts.channel,
                     "since": {"offset": offset, "epoch": epoch}});
    wsraw::send_text(&mut sock, &cmd.to_string()).await?;
    let deadline = t0 + TIMEOUT * 3;
    let mut reply: Option<Value> = None;
    let mut reply_at = None;
    let mut recovered = 0u64;
    let mut last_at: Option<Instant> = None;
    let mut first_at: Option<Instant> = None;
    // The longest pause between two reads that brought replayed messages:
    // stalls (for example Nagle's algorithm against delayed ACKs) show up
    // here.
    let mut max_gap = Duration::ZERO;
    let mut error = None;
    let mut reads = 0u64;
    let want = acked;
    'outer: loop {
        // One clock reading per socket read: its messages all arrived now.
        let now = Instant::now();
        loop {
            let f = match rd.next_ws() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break 'outer;
                }
            };
            match f.opcode {
                wsraw::OP_TEXT if f.fin => {}
                wsraw::OP_CLOSE => {
                    error = Some(format!("connection closed after {recovered} replayed"));
                    break 'outer;
                }
                // (Herald pings every 25 s by default; a replay is shorter.)
                _ => continue,
            }
            let b = f.payload;
            match classify(b) {
                Push::Message(_) => {
                    if push_offset(b).is_some_and(|o| o > offset && o <= offset + want) {
                        recovered += 1;
                        first_at.get_or_insert(now);
                        if let Some(prev) = last_at {
                            max_gap = max_gap.max(now - prev);
                        }
                        last_at = Some(now);
                    }
                }
                Push::Disconnect => {
                    error = Some(String::from_utf8_lossy(b).into_owned());
                    break 'outer;
                }
                Push::Other => {
                    let v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
                    if v.get("id") == Some(&json!(1)) {
                        reply_at = Some(now);
                        if let Some(e) = v.get("error") {
                            error = Some(format!("subscribe failed: {e}"));
                            break 'outer;
                        }
                        let r = v.get("result").cloned().unwrap_or(Value::Null);
                        let ok = r.get("recovered").and_then(Value::as_bool) == Some(true);
                        reply = Some(r);
                        if !ok {
                            error = Some("server answered recovered: false".into());
                            break 'outer;
                        }
                    }
                }
            }
        }
        if recovered >= want {
            break;
        }
        match tokio::time::timeout_at(deadline.into(), rd.fill(&mut sock)).await {
            Err(_) => {
                error = Some(format!("only {recovered} of {want} replayed in time"));
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                error = Some(format!("connection closed after {recovered} replayed"));
                break;
            }
            Ok(Ok(_)) => reads += 1,
        }
    }
    let recover_secs = last_at.map(|t| (t - t0).as_secs_f64()).unwrap_or(0.0);
    let mut rep = Report::new("recovery");
    rep.set("url", opts.url.clone())
        .set("channel", opts.channel.clone())
        .set("missed", opts.missed)
        .set("published", acked)
        .set("recovered", recovered)
        .set(
            "recovered_flag",
            reply
                .as_ref()
                .and_then(|r| r.get("recovered"))
                .cloned()
                .unwrap_or(Value::Null),
        )
        .set("lost", opts.missed.saturating_sub(recovered))
        .set_f("recover_ms", recover_secs * 1000.0)
        .set_f(
            "reply_ms",
            reply_at
                .map(|t| (t - t0).as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
        )
        .set_f(
            "deliveries_per_sec",
            if recover_secs > 0.0 {
                recovered as f64 / recover_secs
            } else {
                0.0
            },
        )
        .set_f(
            "publishes_per_sec",
            if pub_secs > 0.0 {
                acked as f64 / pub_secs
            } else {
                0.0
            },
        )
        .set_f(
            "first_message_ms",
            first_at
                .map(|t| (t - t0).as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
        )
        .set_f("max_gap_ms", max_gap.as_secs_f64() * 1000.0)
        .set("socket_reads", reads)
        .set("since_offset", offset);
    if let Some(e) = error {
        rep.set("error", e);
    }
    Ok(rep)
}
