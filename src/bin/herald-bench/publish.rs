//! Publishers: connections that send stamped payloads round-robin over a
//! set of channels, pipelined up to a window, optionally paced to a total
//! rate, and count the acknowledgements per channel.
//!
//! Each publisher is two tasks over one socket: a writer that sends
//! batches while the window has room, and a reader that parses replies in
//! order (the k-th reply answers the k-th command, so it knows the
//! channel) and reopens the window. The same code publishes over RESP
//! (`PUBLISH`, reply `:N`) or HTTP (`POST`, any 2xx), so scenarios differ
//! only in their [`Target`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::readbuf::Reader;
use crate::{http, resp, stamp, TIMEOUT};

/// Where and how to publish.
#[derive(Clone, Debug)]
pub enum Target {
    /// RESP `PUBLISH channel payload`.
    Resp(SocketAddr),
    /// Herald's HTTP API: `POST path` with `{"channel", "data"}`.
    HeraldHttp { addr: SocketAddr, path: String },
    /// nchan style: `POST path` with the raw payload; `{channel}` in the
    /// path is replaced by the channel name.
    RawHttp { addr: SocketAddr, path: String },
}

impl Target {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Resp(a) => *a,
            Target::HeraldHttp { addr, .. } | Target::RawHttp { addr, .. } => *addr,
        }
    }

    /// The bytes before and after the payload of one publish on `channel`.
    fn frame(&self, channel: &[u8], payload_len: usize) -> (Vec<u8>, Vec<u8>) {
        match self {
            Target::Resp(_) => {
                let mut pre = Vec::new();
                pre.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
                pre.extend_from_slice(itoa::Buffer::new().format(channel.len()).as_bytes());
                pre.extend_from_slice(b"\r\n");
                pre.extend_from_slice(channel);
                pre.extend_from_slice(b"\r\n$");
                pre.extend_from_slice(itoa::Buffer::new().format(payload_len).as_bytes());
                pre.extend_from_slice(b"\r\n");
                (pre, b"\r\n".to_vec())
            }
            Target::HeraldHttp { addr, path } => {
                let chan = serde_json::to_string(&String::from_utf8_lossy(channel))
                    .unwrap_or_else(|_| "\"\"".into());
                let body_pre = format!("{{\"channel\":{chan},\"data\":\"");
                let body_post = b"\"}";
                let len = body_pre.len() + payload_len + body_post.len();
                let mut pre = http::post_head(&addr.to_string(), path, "application/json", len);
                pre.extend_from_slice(body_pre.as_bytes());
                (pre, body_post.to_vec())
            }
            Target::RawHttp { addr, path } => {
                let path = path.replace("{channel}", &String::from_utf8_lossy(channel));
                let pre = http::post_head(&addr.to_string(), &path, "text/plain", payload_len);
                (pre, Vec::new())
            }
        }
    }
}

/// Slows publishers down while too many deliveries are outstanding, so a
/// throughput run measures what subscribers can sustain instead of filling
/// the server's output buffers until it cuts subscribers off.
#[derive(Clone)]
pub struct Flow {
    /// Deliveries received so far by all subscribers.
    pub received: Arc<AtomicU64>,
    /// Deliveries each publish produces (subscribers per channel).
    pub per_publish: f64,
    /// Most deliveries allowed in flight (sent × per_publish − received).
    pub limit: u64,
}

/// What to publish.
#[derive(Clone)]
pub struct Plan {
    pub target: Target,
    pub publishers: usize,
    pub channels: Vec<Vec<u8>>,
    pub payload: usize,
    pub duration: Duration,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// Total publishes per second over all publishers (open loop); `None`
    /// publishes as fast as the window allows.
    pub rate: Option<f64>,
    pub flow: Option<Flow>,
}

/// Connected publishers, ready to start at the same instant.
pub struct Publishers {
    plan: Plan,
    conns: Vec<TcpStream>,
}

/// What the publishers achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    /// Replies never received within the timeout after the run.
    pub unanswered: u64,
    pub acked_per_channel: Vec<u64>,
    /// Sum of RESP `PUBLISH` replies (receivers the server counted).
    pub receivers_reported: u64,
    /// From the start to the last acknowledgement.
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn publishes_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.acked as f64 / s
        } else {
            0.0
        }
    }
}

/// Opens a TCP connection with a timeout, Nagle off.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Publishers {
    pub async fn connect(plan: Plan) -> Result<Publishers> {
        if plan.channels.is_empty() || plan.publishers == 0 {
            bail!("need at least one channel and one publisher");
        }
        let mut conns = Vec::with_capacity(plan.publishers);
        for _ in 0..plan.publishers {
            conns.push(connect(plan.target.addr()).await?);
        }
        Ok(Publishers { plan, conns })
    }

    /// Publishes for the plan's duration from now, then waits (bounded) for
    /// the outstanding replies.
    pub async fn run(self) -> Result<Outcome> {
        let plan = Arc::new(self.plan);
        let start = Instant::now();
        let sent_total = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (j, conn) in self.conns.into_iter().enumerate() {
            let (r, w) = conn.into_split();
            let window_size = if plan.rate.is_some() {
                plan.pipeline.max(64)
            } else {
                plan.pipeline.max(1)
            };
            let state = Arc::new(State {
                window: Semaphore::new(window_size),
                window_size,
                sent: AtomicU64::new(0),
                done: AtomicBool::new(false),
            });
            let writer = tokio::spawn(writer(
                w,
                plan.clone(),
                j,
                start,
                state.clone(),
                sent_total.clone(),
            ));
            let reader = tokio::spawn(reader(r, plan.clone(), j, state));
            tasks.push((writer, reader));
        }
        let mut out = Outcome {
            acked_per_channel: vec![0; plan.channels.len()],
            ..Outcome::default()
        };
        let mut last_ack = start;
        for (writer, reader) in tasks {
            let (write_half, w) = writer.await.context("publisher writer panicked")?;
            let r = reader.await.context("publisher reader panicked")?;
            drop(write_half);
            if let Err(e) = &w {
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            match r {
                Ok(r) => {
                    out.sent += r.sent;
                    out.acked += r.acked;
                    out.errors += r.errors;
                    out.unanswered += r.sent.saturating_sub(r.acked + r.errors);
                    out.receivers_reported += r.receivers;
                    for (a, b) in out.acked_per_channel.iter_mut().zip(&r.per_channel) {
                        *a += b;
                    }
                    if let Some(e) = r.first_error {
                        out.first_error.get_or_insert(e);
                    }
                    last_ack = last_ack.max(r.last_ack);
                }
                Err(e) => {
                    out.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        out.elapsed = last_ack - start;
        Ok(out)
    }
}

struct State {
    window: Semaphore,
    window_size: usize,
    /// Commands written so far (final once `done`).
    sent: AtomicU64,
    done: AtomicBool,
}

/// Marks the writer done however it ends, so the reader can finish.
struct DoneGuard(Arc<State>);
impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
    }
}

/// Runs the writer and hands the write half back: dropping it would send
/// FIN, and an HTTP server may then drop the replies still owed.
async fn writer(
    mut w: OwnedWriteHalf,
    plan: Arc<Plan>,
    j: usize,
    start: Instant,
    state: Arc<State>,
    sent_total: Arc<AtomicU64>,
) -> (OwnedWriteHalf, Result<()>) {
    let r = write_loop(&mut w, plan, j, start, state, sent_total).await;
    (w, r)
}

async fn write_loop(
    w: &mut OwnedWriteHalf,
    plan: Arc<Plan>,
    j: usize,
    start: Instant,
    state: Arc<State>,
    sent_total: Arc<AtomicU64>,
) -> Result<()> {
    let _guard = DoneGuard(state.clone());
    let deadline = start + plan.duration;
    let mut payload = stamp::payload(plan.payload);
    let frames: Vec<(Vec<u8>, Vec<u8>)> = plan
        .channels
        .iter()
        .map(|c| plan.target.frame(c, payload.len()))
        .collect();
    let per_pub_rate = plan.rate.map(|r| (r / plan.publishers as f64).max(1e-3));
    let nchan = plan.channels.len();
    let mut seq: u64 = 0;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut want = state.window_size;
        if let Some(r) = per_pub_rate {
            let due = ((now - start).as_secs_f64() * r) as u64;
            if due <= seq {
                let next = start + Duration::from_secs_f64((seq + 1) as f64 / r);
                tokio::time::sleep_until(next.min(deadline).into()).await;
                continue;
            }
            want = want.min((due - seq) as usize);
        }
        if let Some(flow) = &plan.flow {
            let expected = sent_total.load(Ordering::Relaxed) as f64 * flow.per_publish;
            let received = flow.received.load(Ordering::Relaxed) as f64;
            if expected - received > flow.limit as f64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        match tokio::time::timeout_at(deadline.into(), state.window.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            _ => break,
        }
        let mut got = 1;
        while got < want {
            match state.window.try_acquire() {
                Ok(p) => {
                    p.forget();
                    got += 1;
                }
                Err(_) => break,
            }
        }
        out.clear();
        stamp::stamp(&mut payload, stamp::now_ns());
        for _ in 0..got {
            let (pre, post) = &frames[(j + seq as usize) % nchan];
            out.extend_from_slice(pre);
            out.extend_from_slice(&payload);
            out.extend_from_slice(post);
            seq += 1;
        }
        w.write_all(&out).await.context("publish write failed")?;
        state.sent.store(seq, Ordering::Release);
        sent_total.fetch_add(got as u64, Ordering::Relaxed);
    }
    Ok(())
}

struct ReaderOutcome {
    sent: u64,
    acked: u64,
    errors: u64,
    receivers: u64,
    per_channel: Vec<u64>,
    last_ack: Instant,
    first_error: Option<String>,
}

async fn reader(
    mut r: OwnedReadHalf,
    plan: Arc<Plan>,
    j: usize,
    state: Arc<State>,
) -> Result<ReaderOutcome> {
    let is_resp = matches!(plan.target, Target::Resp(_));
    let nchan = plan.channels.len();
    let mut buf = Reader::new();
    let mut out = ReaderOutcome {
        sent: 0,
        acked: 0,
        errors: 0,
        receivers: 0,
        per_channel: vec![0; nchan],
        last_ack: Instant::now(),
        first_error: None,
    };
    let mut replies: u64 = 0;
    let mut done_at: Option<Instant> = None;
    loop {
        if state.done.load(Ordering::Acquire) {
            let sent = state.sent.load(Ordering::Acquire);
            if replies >= sent {
                break;
            }
            let t = *done_at.get_or_insert_with(Instant::now);
            if t.elapsed() > TIMEOUT {
                out.first_error.get_or_insert_with(|| {
                    format!(
                        "{} replies missing {TIMEOUT:?} after the run",
                        sent - replies
                    )
                });
                break;
            }
        }
        match tokio::time::timeout(Duration::from_millis(50), buf.fill(&mut r)).await {
            Err(_) => continue,
            Ok(Ok(0)) => {
                out.first_error
                    .get_or_insert_with(|| "server closed a publisher connection".into());
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                out.first_error
                    .get_or_insert_with(|| format!("publisher read failed: {e}"));
                break;
            }
        }
        let mut got = 0usize;
        loop {
            let ok = if is_resp {
                match buf.next_resp()? {
                    None => break,
                    Some(resp::Frame::Item(resp::Item::Int(n))) => {
                        out.receivers += n.max(0) as u64;
                        true
                    }
                    Some(f) => {
                        if out.first_error.is_none() {
                            out.first_error = Some(match f.error() {
                                Some(e) => String::from_utf8_lossy(e).into_owned(),
                                None => format!("unexpected PUBLISH reply {f:?}"),
                            });
                        }
                        false
                    }
                }
            } else {
                match buf.next_http()? {
                    None => break,
                    Some(status) if (200..300).contains(&status) => true,
                    Some(status) => {
                        out.first_error
                            .get_or_insert_with(|| format!("HTTP publish answered {status}"));
                        false
                    }
                }
            };
            if ok {
                out.acked += 1;
                out.per_channel[(j + replies as usize) % nchan] += 1;
            } else {
                out.errors += 1;
            }
            replies += 1;
            got += 1;
        }
        if got > 0 {
            out.last_ack = Instant::now();
            state.window.add_permits(got);
        }
    }
    out.sent = state.sent.load(Ordering::Acquire);
    Ok(out)
}
