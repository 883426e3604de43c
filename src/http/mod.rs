//! The HTTP listener: `/ws` (WebSocket), `/api/…` (server API, described by
//! `/api/openapi.json`), `/metrics`, `/healthz` and the page at `/`, on one
//! axum router.

pub mod api;
mod error;
pub mod listener;

pub use error::ApiError;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{Metrics, Sample};
use crate::resp::RespServer;
use crate::ws::WsServer;

/// What every HTTP handler and WebSocket session shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub cfg: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub ws: Arc<WsServer>,
    pub resp: Arc<RespServer>,
    pub metrics: Arc<Metrics>,
}

/// The routes; `conns` is the HTTP listener's connection table (for
/// `/stats`).
pub fn router(st: AppState, conns: Arc<listener::ConnTable>) -> Router {
    let stats_once = Arc::new(Coalesced::default());
    let metrics_once = Arc::new(Coalesced::default());
    // An open server gives every client full access, and is allowed on
    // loopback only; a web page whose host name its attacker then points
    // at 127.0.0.1 (DNS rebinding) would be same-origin with it.
    let local_hosts_only = !st.cfg.has_auth() && st.cfg.http_addr.ip().is_loopback();
    let router = Router::new()
        .route("/", get(index))
        .route("/client/herald.js", get(client_js))
        .route("/client/herald.min.js", get(client_min_js))
        .route(
            "/stats",
            get(
                move |State(st): State<AppState>,
                      peer: Option<axum::Extension<listener::PeerAddr>>,
                      headers: header::HeaderMap| async move {
                    if let Err(refused) = api::authorize_stats(&st, &peer, &headers) {
                        return refused.into_response();
                    }
                    let body = stats_once.get(|| stats(&st, &conns)).await;
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                },
            ),
        )
        .route(
            "/healthz",
            // 503 while the engine cannot publish (Redis unreachable): a
            // balancer drains this node meanwhile.
            get(|State(st): State<AppState>| async move {
                if st.hub.engine_healthy() {
                    (axum::http::StatusCode::OK, "ok\n")
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "engine unavailable\n",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(
                move |State(st): State<AppState>,
                      peer: Option<axum::Extension<listener::PeerAddr>>,
                      headers: header::HeaderMap| async move {
                    if let Err(refused) = api::authorize_stats(&st, &peer, &headers) {
                        return refused.into_response();
                    }
                    let body = metrics_once.get(|| metrics(&st)).await;
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                },
            ),
        )
        .route("/ws", get(crate::ws::upgrade))
        .route("/sse", get(crate::ws::sse::open))
        .route("/sse/{session}", post(crate::ws::sse::post))
        .route("/api/publish", post(api::publish))
        .route("/api/broadcast", post(api::broadcast))
        .route("/api/channels", get(api::channels))
        .route("/api/nodes", get(api::nodes))
        .route("/api/presence/{channel}", get(api::presence))
        .route("/api/history/{channel}", get(api::history))
        .route("/api/openapi.json", get(openapi))
        .fallback(|| async { ApiError::NotFound })
        // Bodies without a Content-Length stop here once past the limit.
        .layer(axum::extract::DefaultBodyLimit::max(
            st.cfg.http_max_body_size,
        ))
        .with_state(st);
    if local_hosts_only {
        router.layer(axum::middleware::from_fn(refuse_rebound_hosts))
    } else {
        router
    }
}

/// Answers 403 to a request whose Host header names a host that an
/// attacker's DNS could point here: only IP addresses, names without a dot
/// (`localhost`, a machine's own name: no public zone answers for them)
/// and `*.localhost` (which browsers resolve to loopback themselves) pass.
/// Requests without a Host (HTTP/1.0 tools) pass too: browsers always send
/// one.
async fn refuse_rebound_hosts(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let local = req
        .headers()
        .get(header::HOST)
        .is_none_or(|h| h.to_str().is_ok_and(host_is_local));
    if !local {
        tracing::info!(host = ?req.headers().get(header::HOST), "open server: request for a host name refused");
        return ApiError::HostNotAllowed.into_response();
    }
    next.run(req).await
}

/// True for a Host (with or without a port) that no DNS answer decides.
fn host_is_local(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    !name.is_empty()
        && (name.parse::<std::net::Ipv4Addr>().is_ok()
            || !name.contains('.')
            || name.ends_with(".localhost"))
}

/// Serves HTTP on an already-bound listener until `shutdown`, then waits for
/// the WebSocket sessions (the connection tasks end before their upgraded
/// sockets do).
pub async fn run(
    listener: TcpListener,
    st: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ws = st.ws.clone();
    let hub = st.hub.clone();
    let cfg = st.cfg.clone();
    let table = listener::ConnTable::new(cfg.http_max_connections);
    start_cluster(&st, &table);
    let app = router(st, table.clone());
    listener::serve(listener, app, &cfg, table, hub, shutdown).await;
    ws.drain().await;
    Ok(())
}

/// Starts the engine's heartbeats with this node's load as `/stats`
/// counts it (in memory mode nothing is sent).
fn start_cluster(st: &AppState, table: &Arc<listener::ConnTable>) {
    let (resp, ws, table) = (st.resp.clone(), st.ws.clone(), table.clone());
    st.hub.start_cluster(
        st.cfg.node_name.clone(),
        Arc::new(move || crate::hub::engine::NodeLoad {
            connections: crate::hub::engine::Connections {
                resp: resp.clients.len() as u64,
                ws: ws.open_sessions() as u64,
                http: table.open() as u64,
            },
            subscriptions: subscriptions(&resp, &ws) as u64,
        }),
    );
}

/// Every client's subscriptions (channels, patterns, shard channels).
fn subscriptions(resp: &RespServer, ws: &WsServer) -> usize {
    let resp_subs: usize = resp
        .clients
        .iter()
        .map(|h| {
            let m = h.meta();
            m.sub + m.psub + m.ssub
        })
        .sum();
    resp_subs + ws.subscriptions.load(std::sync::atomic::Ordering::Relaxed)
}

/// The demo page, embedded at build time.
async fn index() -> Html<&'static str> {
    Html(include_str!("../../static/index.html"))
}

/// The browser build of client-js, embedded at build time from its source.
async fn client_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // A public, static script: pages on other origins may import it.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("../../client-js/src/herald.js"),
    )
}

/// `GET /api/openapi.json`: the server API's OpenAPI 3.1 document
/// (`docs/openapi.json`, embedded at build time), open without the API key:
/// it describes the API, it grants nothing.
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../docs/openapi.json"),
    )
        .into_response()
}

/// The same client as a minified classic script (the global `Herald`), for
/// a plain `<script>` tag; built by client-js/scripts/build.mjs.
async fn client_min_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("../../client-js/dist/herald.min.js"),
    )
}

/// `GET /stats`: a JSON snapshot of Herald's own state for dashboards (the
/// demo page polls it): connections, channels, patterns, counters. The
/// counts cover every live node (their heartbeats, and a survey for the
/// distinct channels and patterns); `node` holds this node's own, and
/// `cluster` says how many nodes answered and whether some did not.
/// `keys`, `history_bytes`, `rss_bytes` and `uptime_seconds` are this
/// node's.
fn stats(st: &AppState, conns: &listener::ConnTable) -> Bytes {
    use crate::hub::Stats;
    let hub = &st.hub;
    let s = hub.stats();
    let ks = hub.keyspace_stats();
    let cluster = hub.cluster_stats();
    let t = &cluster.value.total;
    let this = hub.this_node();
    let snapshot = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": hub.uptime().as_secs(),
        // `http`: every TCP connection on the HTTP listener, WebSockets
        // included; `http_evicted`: idle ones closed to make room (this
        // node's).
        "connections": {
            "resp": t.connections.resp,
            "ws": t.connections.ws,
            "http": t.connections.http,
            "http_evicted": conns.evicted(),
        },
        "channels": cluster.value.channels,
        "patterns": cluster.value.patterns,
        "subscriptions": t.subscriptions,
        "keys": ks.keys,
        "history_bytes": ks.history_bytes,
        "messages_published": t.published,
        "messages_delivered": t.delivered,
        "slow_consumer_disconnects": t.slow_disconnects,
        "rss_bytes": crate::rss_bytes().unwrap_or(0),
        "node": {
            "name": st.cfg.node_name,
            "connections": {
                "resp": st.resp.clients.len(),
                "ws": st.ws.open_sessions(),
                "http": conns.open(),
            },
            "subscriptions": this.subscriptions,
            "channels": hub.channel_count(),
            "patterns": hub.numpat(),
            "messages_published": Stats::get(&s.published),
            "messages_delivered": Stats::get(&s.delivered),
            "slow_consumer_disconnects": Stats::get(&s.slow_disconnects),
        },
        "cluster": cluster.status_json(),
    });
    Bytes::from(snapshot.to_string())
}

/// `GET /metrics`: Prometheus text; its cost grows with the number of RESP
/// connections (their subscriptions are summed).
fn metrics(st: &AppState) -> Bytes {
    let resp_subs = st
        .resp
        .clients
        .iter()
        .map(|h| {
            let m = h.meta();
            m.sub + m.psub + m.ssub
        })
        .sum();
    let sample = Sample {
        resp_connections: st.resp.clients.len(),
        ws_connections: st.ws.open_sessions(),
        ws_subscriptions: st
            .ws
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed),
        resp_subscriptions: resp_subs,
    };
    Bytes::from(st.metrics.render(&st.hub, sample))
}

/// One render at a time of an endpoint that walks every connection or locks
/// the keyspace (`/metrics`, `/stats`): requests that arrive while a
/// render runs wait for the next one and share it, so a flood of scrapes
/// costs one render at a time, not one per request. A shared render always
/// started after the request arrived, so no answer is older than its request.
#[derive(Default)]
struct Coalesced {
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Coalesced {
    async fn get(&self, render: impl FnOnce() -> Bytes) -> Bytes {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, body)) = last.as_ref() {
            if *started >= arrived {
                return body.clone();
            }
        }
        let started = Instant::now();
        let body = render();
        *last = Some((started, body.clone()));
        body
    }
}

#[cfg(test)]
mod tests {
    use super::host_is_local;

    #[test]
    fn hosts_no_dns_answer_decides() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "10.1.2.3:80",
            "[::1]:8080",
            "[::1]",
            "localhost",
            "LOCALHOST:8080",
            "localhost.:8080",
            "app.localhost:3000",
            "x",
            "herald:8080",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "[evil]:80",
            "",
            ":8080",
            "127.0.0.1.nip.io:8080",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }
}
