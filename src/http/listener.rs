//! Accepting HTTP connections, bounded: every TCP connection on the HTTP
//! listener, plain or upgraded to a WebSocket, holds one slot of
//! `--http-max-connections` until its socket closes; a request head must
//! arrive within `--http-header-timeout` (the same limit closes idle
//! keep-alive connections) and a body within `--http-body-timeout`; a
//! connection on which no byte moves either way for about twice the longer
//! of the two (a client that stopped reading its response) is closed.
//!
//! At the cap the connection that has been idle longest (no request in
//! flight, not upgraded: a keep-alive client, an idle socket, a slowloris
//! head) is closed to make room, as nginx reuses its keep-alive connections
//! when it runs short. A flood of idle sockets therefore cannot lock out a
//! health check or an API call; only when every slot is busy does a newcomer
//! get a 503, written without spawning anything.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::Config;
use crate::hub::{Hub, Stats};

/// Largest request head (and read buffer) per connection. hyper's default
/// (~400 KiB) times the connection cap would let slow heads hold gigabytes;
/// 64 KiB is twice what nginx accepts by default and fits any JWT.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long shutdown waits for a connection's request in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The open connections of the HTTP listener and the order in which idle
/// ones are given up. One mutex: each operation is a few map updates, done
/// once per connection and twice per request.
pub struct ConnTable {
    cap: usize,
    inner: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Every counted connection by id, except upgraded ones.
    conns: HashMap<u64, Slot>,
    /// Upgraded connections: only counted, so that an idle WebSocket costs
    /// no entry here (they are never evicted).
    upgraded: usize,
    /// Idle connections by the sequence number of the moment they went
    /// idle: the first entry is the one idle longest.
    idle: BTreeMap<u64, u64>,
    seq: u64,
    evicted: u64,
}

struct Slot {
    /// Key in `idle` while no request is in flight.
    idle_since: Option<u64>,
    /// Closes the connection's task (eviction).
    close: CancellationToken,
}

/// What `ConnTable::admit` decided.
enum Admit {
    Admitted(Arc<Conn>),
    Full,
}

impl ConnTable {
    pub fn new(cap: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            cap,
            inner: Mutex::new(Slots::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every critical section leaves the maps consistent, so a panic
        // elsewhere while holding the lock cannot corrupt them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections, upgraded ones included.
    pub fn open(&self) -> usize {
        let s = self.lock();
        s.conns.len() + s.upgraded
    }

    /// Connections closed to make room so far.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// Counts a new connection, closing the longest-idle one if the table
    /// is full; `Full` when every slot has a request in flight or is
    /// upgraded.
    fn admit(self: &Arc<Self>, close: CancellationToken) -> Admit {
        let mut s = self.lock();
        if s.conns.len() + s.upgraded >= self.cap && !s.evict_one() {
            return Admit::Full;
        }
        s.seq += 1;
        let id = s.seq;
        s.seq += 1;
        let since = s.seq;
        s.idle.insert(since, id);
        s.conns.insert(
            id,
            Slot {
                idle_since: Some(since),
                close,
            },
        );
        Admit::Admitted(Arc::new(Conn {
            table: self.clone(),
            id,
            progress: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            ending: AtomicBool::new(false),
        }))
    }

    /// Closes the longest-idle connection (file descriptors ran out).
    fn evict_idle(&self) -> bool {
        self.lock().evict_one()
    }

    /// A request arrived on connection `id`: not idle any more.
    fn busy(&self, id: u64) {
        let mut s = self.lock();
        if let Some(since) = s.conns.get_mut(&id).and_then(|c| c.idle_since.take()) {
            s.idle.remove(&since);
        }
    }

    /// Connection `id` answered its request and waits for the next one.
    fn idle(&self, id: u64) {
        let mut s = self.lock();
        s.seq += 1;
        let since = s.seq;
        let Some(c) = s.conns.get_mut(&id) else {
            return; // evicted meanwhile: its task is ending
        };
        if let Some(old) = c.idle_since.replace(since) {
            s.idle.remove(&old);
        }
        s.idle.insert(since, id);
    }

    /// The connection became a WebSocket: it keeps its slot until the
    /// session drops the socket, and is never evicted.
    fn upgraded(&self, conn: &Conn) {
        let mut s = self.lock();
        if let Some(slot) = s.conns.remove(&conn.id) {
            if let Some(since) = slot.idle_since {
                s.idle.remove(&since);
            }
            s.upgraded += 1;
            // Under the table lock, so `Conn::drop` sees flag and count
            // change together.
            conn.upgraded.store(true, Ordering::Relaxed);
        }
    }
}

impl Slots {
    fn evict_one(&mut self) -> bool {
        while let Some((_, id)) = self.idle.pop_first() {
            if let Some(slot) = self.conns.remove(&id) {
                slot.close.cancel();
                self.evicted += 1;
                return true;
            }
        }
        false
    }
}

/// One connection's slot and progress counter, shared by its socket and
/// its task; the slot is released when the socket is dropped (by the task,
/// or by the WebSocket session after an upgrade).
struct Conn {
    table: Arc<ConnTable>,
    id: u64,
    /// Reads and writes that moved bytes, for the stall check.
    progress: AtomicU64,
    /// Set (under the table lock) when the slot moved to the upgraded count.
    upgraded: AtomicBool,
    /// The response's body has been handed to hyper: the connection goes
    /// idle (evictable) at the next flush, once all of it reached the
    /// socket, not while a large response is still being written.
    ending: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut s = self.table.lock();
        if self.upgraded.load(Ordering::Relaxed) {
            s.upgraded = s.upgraded.saturating_sub(1);
        } else if let Some(slot) = s.conns.remove(&self.id) {
            if let Some(since) = slot.idle_since {
                s.idle.remove(&since);
            }
        }
    }
}

/// A TCP stream that holds its connection slot: hyper hands the stream
/// itself to the WebSocket session on upgrade, so the slot goes with it.
struct CountedStream {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl CountedStream {
    fn moved<T>(&self, r: &Poll<io::Result<T>>) {
        if matches!(r, Poll::Ready(Ok(_))) {
            self.conn.progress.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        self.moved(&r);
        r
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.moved(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.moved(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_flush(cx);
        // hyper flushes the socket only after its own buffer is written.
        if matches!(r, Poll::Ready(Ok(()))) && self.conn.ending.swap(false, Ordering::Relaxed) {
            self.conn.table.idle(self.conn.id);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The 503 for a connection over the cap: written in one non-blocking call
/// (a fresh socket's send buffer is empty), no task, no read.
const FULL_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nconnection: close\r\ncontent-length: 64\r\n\r\n\
{\"error\":{\"code\":106,\"message\":\"max number of clients reached\"}}";

fn refuse(tcp: TcpStream) {
    // Whatever request already arrived is read first: closing a socket with
    // unread input sends a reset, which can destroy the 503 before the
    // client reads it.
    // At most 16 KiB, so a client streaming at us cannot keep the accept
    // loop here.
    let mut sink = [0u8; 2048];
    for _ in 0..8 {
        match tcp.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = tcp.try_write(FULL_RESPONSE);
}

/// True for accept errors that mean "out of file descriptors or memory":
/// the listener stays readable, so retrying at once would spin.
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves `router` on an already-bound listener until `shutdown`, then lets
/// requests in flight finish (up to a few seconds) and returns. WebSocket
/// sessions are not waited for here: `WsServer::drain` does that.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: &Config,
    table: Arc<ConnTable>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.http_header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let body_timeout = cfg.http_body_timeout;
    let max_body = cfg.http_max_body_size as u64;
    let stall_check = cfg.http_header_timeout.max(body_timeout);
    let tracker = TaskTracker::new();
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok((tcp, peer)) => {
                if failing {
                    tracing::info!("http accept works again");
                    failing = false;
                }
                (tcp, peer)
            }
            Err(e) => {
                // A reset before accept is the peer's business, not ours.
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    continue;
                }
                if !failing {
                    tracing::warn!(error = %e, "http accept failed; backing off");
                    failing = true;
                }
                // Out of descriptors: give up the longest-idle connection so
                // the next accept can succeed, and wait a little either way
                // instead of spinning on a listener that stays readable.
                if is_resource_error(&e) {
                    table.evict_idle();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let close = CancellationToken::new();
        let slot = match table.admit(close.clone()) {
            Admit::Admitted(slot) => slot,
            Admit::Full => {
                Stats::add(&hub.stats().rejected_connections, 1);
                refuse(tcp);
                continue;
            }
        };
        // Small WebSocket frames must not wait for delayed ACKs (Nagle): a
        // 40 ms stall per round trip otherwise.
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(CountedStream {
            tcp,
            conn: slot.clone(),
        });
        let service = RequestService {
            router: router.clone(),
            conn: slot.clone(),
            peer: PeerAddr(peer),
            body_timeout,
            max_body,
        };
        let conn = http.serve_connection(io, service).with_upgrades();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // A client that stops reading a response (or sending a request)
            // would hold the socket and the unsent response for good: no
            // hyper timeout covers a stalled write. Two checks in a row with
            // no byte moved either way close it. Idle keep-alive connections
            // are closed by the header timeout before this fires, and an
            // upgraded connection's task has ended.
            let mut check =
                tokio::time::interval_at(tokio::time::Instant::now() + stall_check, stall_check);
            let mut seen = u64::MAX;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "http connection ended");
                        }
                        break;
                    }
                    // Evicted: dropping the connection closes the socket.
                    _ = close.cancelled() => break,
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                        break;
                    }
                    _ = check.tick() => {
                        let now = slot.progress.load(Ordering::Relaxed);
                        if now == seen {
                            tracing::debug!("closing a stalled http connection");
                            break;
                        }
                        seen = now;
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// The TCP peer of a request (a request extension): the client, or the
/// reverse proxy in front of it (see `--trusted-proxies`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// One connection's service: marks the connection busy while a request is
/// in flight and bounds the time to receive its body.
#[derive(Clone)]
struct RequestService {
    router: Router,
    conn: Arc<Conn>,
    peer: PeerAddr,
    body_timeout: Duration,
    max_body: u64,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        let mut router = self.router.clone();
        let conn = self.conn.clone();
        let body_timeout = self.body_timeout;
        let too_large = content_length(&req).is_some_and(|n| n > self.max_body);
        Box::pin(async move {
            if too_large {
                // Refused before reading: a client that announces a
                // gigabyte does not get to send it (the router's body limit
                // still stops chunked bodies that grow past it).
                return Ok(closing(super::ApiError::BodyTooLarge));
            }
            conn.table.busy(conn.id);
            // Handlers read the body before anything else and do no slow
            // work, so this deadline is in effect the body's; a WebSocket
            // upgrade answers at once and its session runs elsewhere.
            let resp = match tokio::time::timeout(body_timeout, router.call(req)).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => closing(super::ApiError::BodyTimeout),
            };
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                conn.table.upgraded(&conn);
                return Ok(resp);
            }
            // Idle once the body is out, not now: an unread response is a
            // request still in flight and must not be evicted mid-way.
            Ok(resp.map(|body| {
                Body::new(EndSignal {
                    body,
                    conn: Some(conn),
                })
            }))
        })
    }
}

/// A response body that marks its connection `ending` when it is done
/// (or dropped): the next flush then makes the connection idle.
struct EndSignal {
    body: Body,
    conn: Option<Arc<Conn>>,
}

impl EndSignal {
    fn done(&mut self) {
        if let Some(c) = self.conn.take() {
            c.ending.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.done();
    }
}

impl hyper::body::Body for EndSignal {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            self.done();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An error response that closes the connection: the rest of the request
/// body may still be on its way, and nobody will read it.
fn closing(err: impl axum::response::IntoResponse) -> Response<Body> {
    let mut resp = err.into_response();
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}
