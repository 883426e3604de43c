//! The HTTP listener: `/healthz`, `/metrics` (Prometheus text) and a
//! placeholder page at `/`. The WebSocket and server API routes join here.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::{Hub, Space, Stats};

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
}

/// Serves HTTP on an already-bound listener until `shutdown`.
pub async fn run(
    listener: TcpListener,
    hub: Arc<Hub>,
    _cfg: Arc<Config>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(AppState { hub });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Herald</title></head>\
         <body><h1>Herald</h1><p>The pub/sub hub is running. RESP clients connect to the \
         RESP port; <a href=\"/metrics\">/metrics</a> shows its counters.</p></body></html>",
    )
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let hub = &st.hub;
    let s = &hub.stats;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        );
    };
    counter(
        "herald_messages_published_total",
        "Messages published.",
        Stats::get(&s.published),
    );
    counter(
        "herald_messages_delivered_total",
        "Messages delivered to subscribers.",
        Stats::get(&s.delivered),
    );
    counter(
        "herald_connections_total",
        "Connections accepted.",
        Stats::get(&s.connections_total),
    );
    counter(
        "herald_slow_consumer_disconnects_total",
        "Clients cut off for exceeding output limits.",
        Stats::get(&s.slow_disconnects),
    );
    counter(
        "herald_auth_failures_total",
        "Failed authentications.",
        Stats::get(&s.auth_failures),
    );
    counter(
        "herald_commands_total",
        "RESP commands processed.",
        Stats::get(&s.commands),
    );
    let mut gauge = |name: &str, help: &str, v: usize| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        );
    };
    gauge(
        "herald_channels",
        "Channels with subscribers.",
        hub.registry.channels(Space::Global, None).len(),
    );
    gauge(
        "herald_patterns",
        "Distinct subscribed patterns.",
        hub.registry.numpat(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
