//! The WebSocket front end: the `/ws` upgrade (origin check, connection
//! limit, buffer sizes, `?token=`) and the per-connection session task.
//!
//! - `protocol`: wire types and codes, no I/O.
//! - `session`: the task that owns one socket, its loop and closing handshake.
//! - `ops`: the ops a session answers (subscribe, publish, history, …).
//! - `recovery`: the subscriber side, lag catch-up and recovery from history.

mod ops;
pub mod protocol;
mod recovery;
pub mod session;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{api_error, AppState};
use crate::hub::Stats;

/// State shared by WebSocket sessions.
pub struct WsServer {
    pub limit: Arc<Semaphore>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Open sessions (a gauge for `/metrics`).
    pub open: AtomicUsize,
    pub subscriptions: AtomicUsize,
}

impl WsServer {
    pub fn new(cfg: &Config, shutdown: CancellationToken) -> Arc<WsServer> {
        Arc::new(WsServer {
            limit: Arc::new(Semaphore::new(cfg.max_connections)),
            tracker: TaskTracker::new(),
            shutdown,
            open: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
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

/// `GET /ws`: upgrades to a WebSocket session.
pub async fn upgrade(
    State(st): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &st.cfg) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "websocket origin refused");
        return api_error(StatusCode::FORBIDDEN, 103, "origin not allowed").into_response();
    }
    let Ok(permit) = st.ws.limit.clone().try_acquire_owned() else {
        Stats::add(&st.hub.stats.rejected_connections, 1);
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            106,
            "max number of clients reached",
        )
        .into_response();
    };
    // tungstenite's own limit sits a little above ours: a message just over
    // the limit is read whole and refused with a clean close (3502), where
    // an error mid-frame would leave unread bytes and reset the connection.
    let max = st.cfg.ws_max_message_size.saturating_add(64 * 1024);
    let tracker = st.ws.tracker.clone();
    ws
        // Small buffers: most connections are idle (tungstenite's defaults
        // are 128 KiB each way).
        .read_buffer_size(256)
        // Frames are fed then flushed per batch: an 8 KiB buffer turns a
        // burst of small messages into few segments (0 wrote one syscall
        // per message), and idle sessions never allocate it.
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(write_buffer_limit(&st.cfg))
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                session::run(socket, st, q.token).await;
                drop(permit);
            })
        })
}
