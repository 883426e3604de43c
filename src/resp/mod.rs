//! The RESP (Redis protocol) front end: RESP2 and RESP3, pub/sub and the
//! connection-level commands Redis clients send, on the shared hub.
//!
//! - `parse`: request framing (multibulk and inline), no I/O.
//! - `encode`: reply encoding for both protocol versions, no I/O.
//! - `connection`: the per-connection task that alone owns the socket.
//! - `cmd`: one file per command family, dispatched through one table.

pub mod cmd;
pub mod connection;
pub mod encode;
pub mod names;
pub mod parse;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::{ClientId, Delivery, Hub, Outbox, Stats, Subscriber, WireFormat};

/// What every RESP connection shares.
pub struct RespServer {
    pub hub: Arc<Hub>,
    pub cfg: Arc<Config>,
    pub auth: Arc<Authenticator>,
    /// Live clients, for CLIENT LIST / KILL and INFO.
    pub clients: DashMap<ClientId, Arc<ClientHandle>>,
    pub local_addr: SocketAddr,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The subscriber side of a RESP connection: its outbox and protocol.
pub struct RespSink {
    pub outbox: Arc<Outbox>,
    resp3: AtomicBool,
}

impl RespSink {
    pub fn set_resp3(&self, on: bool) {
        self.resp3.store(on, Ordering::Relaxed);
    }

    fn format(&self) -> WireFormat {
        if self.resp3.load(Ordering::Relaxed) {
            WireFormat::Resp3
        } else {
            WireFormat::Resp2
        }
    }
}

impl Subscriber for RespSink {
    fn deliver(&self, d: &Delivery<'_>) {
        let fmt = self.format();
        // A refused push means the outbox overflowed or closed; the
        // connection task sees that and disconnects the client.
        self.outbox
            .push_ref(d.encoded_ref(fmt, |d| encode::encode_delivery(d, fmt)));
    }

    fn deliver_batch(&self, ds: &[Delivery<'_>]) {
        let fmt = self.format();
        self.outbox.push_refs(
            ds.iter()
                .map(|d| d.encoded_ref(fmt, |d| encode::encode_delivery(d, fmt))),
        );
    }
}

impl Subscriber for ClientHandle {
    fn deliver(&self, d: &Delivery<'_>) {
        self.sink.deliver(d)
    }

    fn deliver_batch(&self, ds: &[Delivery<'_>]) {
        self.sink.deliver_batch(ds)
    }
}

/// Mutable facts about a client shown by CLIENT LIST / INFO.
#[derive(Debug, Default, Clone)]
pub struct ClientMeta {
    /// CLIENT SETNAME and SETINFO: boxed, as most clients set none and
    /// every connection carries a `ClientMeta`.
    pub labels: Option<Box<ClientLabels>>,
    pub db: i64,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    pub resp: u8,
    /// The last command and subcommand (`client|list`), as CLIENT LIST shows.
    pub last_cmd: (&'static str, Option<&'static str>),
    pub last_active: Option<Instant>,
    pub user: String,
}

/// The names a client gives itself.
#[derive(Debug, Default, Clone)]
pub struct ClientLabels {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
}

impl ClientMeta {
    /// The client's labels, allocated on first use.
    pub fn labels_mut(&mut self) -> &mut ClientLabels {
        self.labels.get_or_insert_with(Box::default)
    }

    /// The CLIENT SETNAME name.
    pub fn name(&self) -> Option<&Bytes> {
        self.labels.as_ref().and_then(|l| l.name.as_ref())
    }
}

/// A live client as the rest of the server sees it.
pub struct ClientHandle {
    pub id: ClientId,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    /// Inline, not an `Arc` of its own: the handle is what the registry
    /// holds (see `impl Subscriber for ClientHandle`), which saves every
    /// connection an allocation.
    pub sink: RespSink,
    /// Set by [`ClientHandle::kill`]; the connection task checks it each
    /// time it wakes.
    killed: AtomicBool,
    /// Not authenticated yet (see [`connection::Conn::pre_auth`]): the
    /// first to be closed when the server is full.
    pub pre_auth: AtomicBool,
    /// Counted among its address's open connections
    /// (`--max-connections-per-client`) until the connection ends or
    /// authenticates with the password. Only its connection task uses it:
    /// here, not in `Conn`, whose bytes are all taken.
    pub counted: AtomicBool,
    pub meta: Mutex<ClientMeta>,
}

impl ClientHandle {
    /// Asks the connection to close (CLIENT KILL, eviction, shutdown). It
    /// is woken through its outbox, which it waits on anyway: a
    /// cancellation token per connection (112 bytes, and a waiter in every
    /// idle task) would cost more than the rest of its handle.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.sink.outbox.wake();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub fn meta(&self) -> std::sync::MutexGuard<'_, ClientMeta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One CLIENT LIST line (without the newline), Redis 7 field order.
    pub fn info_line(&self) -> String {
        let m = self.meta().clone();
        let now = Instant::now();
        let age = now.duration_since(self.created).as_secs();
        let idle = m
            .last_active
            .map_or(age, |t| now.duration_since(t).as_secs());
        let flags = if m.sub + m.psub + m.ssub > 0 {
            "P"
        } else {
            "N"
        };
        let omem = self.sink.outbox.pending_bytes();
        let oll = self.sink.outbox.queued_len();
        let labels = m.labels.as_deref().cloned().unwrap_or_default();
        let text = |b: &Option<Bytes>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let (name, lib_name, lib_ver) = (
            text(&labels.name),
            text(&labels.lib_name),
            text(&labels.lib_ver),
        );
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll={} omem={} tot-mem={} events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
            self.id, self.addr, self.laddr, name, age, idle, flags, m.db, m.sub, m.psub, m.ssub,
            oll, omem, omem, match m.last_cmd {
                ("", _) => "NULL".to_string(),
                (c, None) => c.to_string(),
                (c, Some(sub)) => format!("{c}|{sub}"),
            },
            if m.user.is_empty() { "default".into() } else { printable(&m.user) }, m.resp.max(2), lib_name, lib_ver
        )
    }
}

/// A field of a CLIENT LIST line as text that cannot break the line: a
/// JWT `sub` is the token issuer's choice, and one with a newline or a
/// space would forge fields or whole clients in an operator's listing.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(|c| c.is_ascii_graphic()) {
        return s.into();
    }
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect::<String>()
        .into()
}

impl RespServer {
    pub fn new(
        hub: Arc<Hub>,
        cfg: Arc<Config>,
        auth: Arc<Authenticator>,
        metrics: Arc<crate::metrics::Metrics>,
        local_addr: SocketAddr,
    ) -> Arc<RespServer> {
        Arc::new(RespServer {
            auth,
            metrics,
            hub,
            cfg,
            clients: DashMap::new(),
            local_addr,
        })
    }

    fn new_sink(&self) -> RespSink {
        RespSink {
            outbox: Arc::new(Outbox::stream_with_budget(
                self.cfg.output_limits,
                self.hub.output().clone(),
            )),
            resp3: AtomicBool::new(false),
        }
    }
}

/// Closes the oldest connection that has not authenticated (and is not
/// closing already); false when there is none. Only where authentication
/// is configured: otherwise every client is as good as authenticated.
fn evict_pre_auth(server: &RespServer) -> bool {
    if !server.cfg.has_auth() {
        return false;
    }
    let victim = server
        .clients
        .iter()
        .filter(|h| h.pre_auth.load(Ordering::Relaxed) && !h.is_killed())
        .min_by_key(|h| h.created)
        .map(|h| h.value().clone());
    match victim {
        Some(h) => {
            tracing::debug!(client = h.id, addr = %h.addr, "server full: closing a client that has not authenticated");
            h.kill();
            true
        }
        None => false,
    }
}

/// A new connection's place among its address's
/// `--max-connections-per-client` (RESP connections, WebSocket and SSE
/// sessions together): its count (`None`: not counted), or `None`:
/// refused, the address has as many open.
/// Counted only once authentication is configured (an open server's
/// clients all have full access), and not for a peer in
/// `--trusted-proxies` (a proxy's connections are many clients'). A
/// connection that authenticates with the password stops counting (see
/// `Conn::set_identity`): backends open pools of connections from one
/// host, and the password is the operator's.
fn address_slot(server: &RespServer, ip: std::net::IpAddr) -> Option<Option<crate::rate::Session>> {
    let cfg = &server.cfg;
    let max = cfg.max_connections_per_client;
    if max == 0 || !cfg.has_auth() || cfg.trusted_proxies.iter().any(|c| c.contains(ip)) {
        return Some(None);
    }
    server.hub.open_session(ip, max).map(Some)
}

/// Accepts RESP connections on an already-bound listener until `shutdown`,
/// then waits for every connection task to finish.
pub async fn run(
    listener: TcpListener,
    server: Arc<RespServer>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let cfg = server.cfg.clone();
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let tracker = TaskTracker::new();
    let mut trim = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
            _ = trim.tick() => {
                for h in server.clients.iter() {
                    h.sink.outbox.trim();
                }
                continue;
            }
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "resp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // The address's own limit first: an address at it must not close
        // another's connection to make room below.
        let Some(slot) = address_slot(&server, addr.ip()) else {
            Stats::add(&server.hub.stats().rejected_connections, 1);
            tracing::debug!(%addr, "address at --max-connections-per-client: refused");
            tracker.spawn(connection::refuse(stream));
            continue;
        };
        let admission = match limit.clone().try_acquire_owned() {
            Ok(p) => connection::Admission::Permit(p),
            // Full: room for a client that may authenticate is made by
            // closing the oldest one that has not, so connections that
            // never authenticate cannot hold every slot. The newcomer
            // waits for that slot.
            Err(_) if evict_pre_auth(&server) => {
                connection::Admission::AfterEviction(limit.clone())
            }
            Err(_) => {
                Stats::add(&server.hub.stats().rejected_connections, 1);
                tracker.spawn(connection::refuse(stream));
                continue;
            }
        };
        // Admitted: the connection keeps the count from here (as a flag:
        // its task's bytes are all taken) and gives it back as it ends.
        let counted = slot.map(crate::rate::Session::keep).is_some();
        let _ = stream.set_nodelay(true);
        // Dead peers (cable pulled, host gone) must leave presence and free
        // their subscriptions: probe idle connections, as Redis's
        // tcp-keepalive does.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(60))
            .with_interval(std::time::Duration::from_secs(10))
            .with_retries(3);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        tracker.spawn(connection::serve(
            stream,
            addr,
            server.clone(),
            shutdown.clone(),
            admission,
            counted,
        ));
    }
    // Connections wait on their outboxes, not on `shutdown`: wake each.
    // One accepted just now sees `shutdown` itself once it is listed (see
    // `connection::serve`).
    for h in server.clients.iter() {
        h.kill();
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}
