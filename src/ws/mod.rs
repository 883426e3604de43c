//! The WebSocket front end: the `/ws` upgrade (handshake, origin check,
//! connection limit, buffer sizes, `?token=`) and the per-connection
//! session task.
//!
//! The upgrade is done here rather than by axum's `WebSocketUpgrade`, so
//! that the session owns tokio-tungstenite's stream itself: axum's wrapper
//! sends whole messages only, and tungstenite copies a whole message into a
//! write buffer that keeps its size for the life of the connection (a
//! 10 MB history reply left 10 MB behind). The session sends large
//! messages as fragments instead (see `session::FRAGMENT`).
//!
//! - `protocol`: wire types and codes, no I/O.
//! - `session`: the task that owns one socket, its loop and closing handshake.
//! - `ops`: the ops a session answers (subscribe, publish, history, …).
//! - `recovery`: the subscriber side, lag catch-up and recovery from history.
//! - `subtokens`: subscription tokens' grants, refresh and expiry.
//! - `sse`: the same sessions over `GET /sse` (events) and `POST /sse/{id}`
//!   (ops), for networks that block WebSocket.

mod hooks;
mod ops;
pub mod protocol;
mod reads;
mod recovery;
pub mod session;
pub mod sse;
mod subtokens;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{ApiError, AppState};
use crate::hub::Stats;

/// State shared by WebSocket sessions.
pub struct WsServer {
    pub limit: Arc<Semaphore>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Open sessions (a gauge for `/metrics`).
    pub open: AtomicUsize,
    pub subscriptions: AtomicUsize,
    /// The app's backend hooks (`--proxy-*-url`; inert when none is set).
    /// Here rather than in `AppState`, which every session keeps twice.
    pub proxy: Arc<crate::proxy::Proxy>,
    /// Open SSE sessions, where their POSTed ops go.
    pub sse: sse::Registry,
}

impl WsServer {
    pub fn new(
        cfg: &Config,
        shutdown: CancellationToken,
        proxy: Arc<crate::proxy::Proxy>,
    ) -> Arc<WsServer> {
        Arc::new(WsServer {
            limit: Arc::new(Semaphore::new(cfg.max_connections)),
            tracker: TaskTracker::new(),
            shutdown,
            open: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            proxy,
            sse: sse::Registry::default(),
        })
    }

    pub fn open_sessions(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits for every session to end (after the shutdown token fired).
    pub async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// tungstenite's limit on its write buffer: a frame larger than this (plus
/// what is buffered) cannot be sent at all. Room for a reply as large as the
/// output hard limit, or twice the largest message, whichever is more.
pub fn write_buffer_limit(cfg: &Config) -> usize {
    let max_message = cfg.ws_max_message_size.saturating_add(64 * 1024);
    cfg.output_limits
        .hard_bytes
        .max(max_message.saturating_mul(2))
        .saturating_add(64 * 1024)
}

/// The largest reply a session queues: the output hard limit (a larger
/// one would cut the client off), else what the write buffer can take.
pub fn max_reply(cfg: &Config) -> usize {
    match cfg.output_limits.hard_bytes {
        0 => write_buffer_limit(cfg) - 64 * 1024,
        hard => hard,
    }
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// True when a browser `Origin` may open a socket: listed in
/// `--allowed-origins` (or `*`), or the same host the request was sent to.
/// Requests without an `Origin` (non-browser clients) are allowed.
pub fn origin_allowed(headers: &HeaderMap, cfg: &Config) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if cfg
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| !host.is_empty() && host.eq_ignore_ascii_case(authority))
}

/// Checks an HTTP/1.1 upgrade request as RFC 6455 §4.2.1 asks (and as
/// axum's `WebSocketUpgrade` did); the `Sec-WebSocket-Key` it answers.
#[allow(clippy::result_large_err)] // axum's Response, as its extractors return
fn handshake_key(req: &Request) -> Result<axum::http::HeaderValue, Response> {
    let bad = |status, msg: &'static str| Err(ApiError::Handshake { status, msg }.into_response());
    let headers = req.headers();
    // A list header may come as several lines (RFC 9110 §5.3).
    let has = |name: header::HeaderName, word: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(word)))
        })
    };
    if req.version() > Version::HTTP_11 {
        return bad(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "WebSocket needs HTTP/1.1",
        );
    }
    if req.method() != Method::GET {
        return bad(StatusCode::METHOD_NOT_ALLOWED, "request method must be GET");
    }
    if !has(header::CONNECTION, "upgrade") {
        return bad(
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'",
        );
    }
    if !has(header::UPGRADE, "websocket") {
        return bad(
            StatusCode::BAD_REQUEST,
            "Upgrade header did not include 'websocket'",
        );
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        // §4.2.2: 426 and the version this server speaks, so that a client
        // may retry with it.
        let mut r = ApiError::Handshake {
            status: StatusCode::UPGRADE_REQUIRED,
            msg: "Sec-WebSocket-Version header did not include '13'",
        }
        .into_response();
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            axum::http::HeaderValue::from_static("13"),
        );
        return Err(r);
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match keys.next() {
        Some(_) if keys.next().is_some() => bad(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key header sent twice",
        ),
        Some(key) if key_ok(key.as_bytes()) => Ok(key.clone()),
        Some(_) => bad(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ),
        None => bad(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key header missing"),
    }
}

/// A `Sec-WebSocket-Key` as §4.2.1 (5) asks: 16 bytes, base64-encoded.
fn key_ok(key: &[u8]) -> bool {
    use base64::Engine;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// The stream settings of every session.
fn socket_config(cfg: &Config) -> WebSocketConfig {
    // tungstenite's own limit sits a little above ours: a message just over
    // the limit is read whole and refused with a clean close (3502), where
    // an error mid-frame would leave unread bytes and reset the connection.
    let max = cfg.ws_max_message_size.saturating_add(64 * 1024);
    WebSocketConfig::default()
        // Small buffers: most connections are idle (tungstenite's defaults
        // are 128 KiB each way).
        .read_buffer_size(256)
        // Frames are fed then flushed per batch: an 8 KiB buffer turns a
        // burst of small messages into few segments (0 wrote one syscall
        // per message), and idle sessions never allocate it. Large
        // messages go as fragments, so the buffer never grows past a few
        // times this.
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(write_buffer_limit(cfg))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// What a session's opening request authenticates with. The connect hook
/// sees the request's cookies: kept only when it will be asked (no token
/// on the URL).
fn credentials(q: WsQuery, headers: &HeaderMap, st: &AppState) -> session::Credentials {
    match q.token {
        Some(t) => session::Credentials::Token(t),
        None if st.ws.proxy.connects() => session::Credentials::Headers(Box::new(
            crate::proxy::ConnectHeaders::from_request(headers),
        )),
        None => session::Credentials::None,
    }
}

/// The limits' state of a request's client (`crate::rate::Clients`): its
/// TCP peer's address, or the one `--trusted-proxies` vouch for in
/// `X-Forwarded-For` when the peer is one of them.
pub fn client_of(
    st: &AppState,
    peer: Option<&crate::http::listener::PeerAddr>,
    headers: &HeaderMap,
) -> Arc<crate::rate::Client> {
    st.hub.client(client_ip(st, peer, headers))
}

/// The address [`client_of`] keeps a request's client by.
pub fn client_ip(
    st: &AppState,
    peer: Option<&crate::http::listener::PeerAddr>,
    headers: &HeaderMap,
) -> std::net::IpAddr {
    let peer = peer.map_or(std::net::Ipv6Addr::UNSPECIFIED.into(), |p| p.0.ip());
    // Read lossily, not skipped: a line with a byte that is not visible
    // ASCII still holds the hop a proxy appended to it, and skipping it
    // would hand the walk to the lines before, which the client wrote.
    let forwarded: Vec<std::borrow::Cow<'_, str>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    crate::rate::client_ip(
        peer,
        forwarded.iter().map(|l| l.as_ref()),
        &st.cfg.trusted_proxies,
    )
}

/// A session's place among its address's `--max-connections-per-client`
/// (once authentication is configured: an open server's clients have full
/// access); else the refusal, 429.
#[allow(clippy::result_large_err)] // axum's Response, as its extractors return
pub fn session_slot(
    st: &AppState,
    ip: std::net::IpAddr,
) -> Result<Option<crate::rate::Session>, Response> {
    let max = st.cfg.max_connections_per_client;
    if max == 0 || !st.cfg.has_auth() {
        return Ok(None);
    }
    match st.hub.open_session(ip, max) {
        Some(slot) => Ok(Some(slot)),
        None => {
            Stats::add(&st.hub.stats().rejected_connections, 1);
            Err(ApiError::TooManyFromAddress { max }.into_response())
        }
    }
}

/// `GET /ws`: upgrades to a WebSocket session.
pub async fn upgrade(
    State(st): State<AppState>,
    Query(q): Query<WsQuery>,
    mut req: Request,
) -> Response {
    let key = match handshake_key(&req) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if !origin_allowed(req.headers(), &st.cfg) {
        tracing::info!(origin = ?req.headers().get(header::ORIGIN), "websocket origin refused");
        return ApiError::OriginNotAllowed.into_response();
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::Handshake {
            status: StatusCode::UPGRADE_REQUIRED,
            msg: "this connection cannot be upgraded",
        }
        .into_response();
    };
    let ip = client_ip(&st, req.extensions().get(), req.headers());
    let client = st.hub.client(ip);
    let slot = match session_slot(&st, ip) {
        Ok(slot) => slot,
        Err(refused) => return refused,
    };
    let Ok(permit) = st.ws.limit.clone().try_acquire_owned() else {
        Stats::add(&st.hub.stats().rejected_connections, 1);
        return ApiError::TooManyClients.into_response();
    };
    let credentials = credentials(q, req.headers(), &st);
    let config = socket_config(&st.cfg);
    let tracker = st.ws.tracker.clone();
    tokio::spawn(tracker.track_future(async move {
        // Fails when the client goes before the 101 is written.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let socket =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                .await;
        session::run(socket, st, credentials, client).await;
        drop(permit);
        drop(slot);
    }));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
