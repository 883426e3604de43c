//! Binds every listener and runs the front ends until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::Hub;

/// Errors that stop Herald from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error(
        "refusing to start: {addr} is not a loopback address and no authentication is configured \
         (set --requirepass, --jwt-hmac-secret or --jwt-public-key-file, or pass --allow-anonymous)"
    )]
    Insecure { addr: SocketAddr },
    #[error("engine: {0}")]
    Engine(String),
}

/// A running Herald: its bound addresses and the handle to stop it.
pub struct Running {
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub hub: Arc<Hub>,
    shutdown: CancellationToken,
    tasks: JoinSet<std::io::Result<()>>,
}

impl Running {
    /// A token that stops every front end when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Tells the other nodes this one leaves (engine mode; at most 1 s),
    /// stops accepting, closes every connection (their presence entries
    /// leave with them) and waits for the front ends.
    pub async fn shutdown(mut self) {
        let leave = self.hub.leave_cluster();
        if tokio::time::timeout(std::time::Duration::from_secs(1), leave)
            .await
            .is_err()
        {
            tracing::warn!(
                "could not announce this node's leave; the others drop it when its heartbeats stop"
            );
        }
        self.shutdown.cancel();
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "front end stopped with an error");
            }
        }
    }

    /// Waits until the front ends stop (after the shutdown token fires).
    pub async fn wait(self) {
        self.shutdown().await
    }
}

/// Refuses anonymous access on non-loopback listeners unless allowed.
fn check_security(cfg: &Config) -> Result<(), StartError> {
    if cfg.has_auth() || cfg.allow_anonymous {
        return Ok(());
    }
    for addr in [cfg.resp_addr, cfg.http_addr] {
        if !addr.ip().is_loopback() {
            return Err(StartError::Insecure { addr });
        }
    }
    Ok(())
}

/// On an open server (no authentication at all) every client has full
/// access, so the subscribe and publish hooks are never asked: say so
/// rather than let a configuration look active that is not.
fn warn_inert_proxies(cfg: &Config) {
    let hooked = cfg.proxy_subscribe_url.is_some() || cfg.proxy_publish_url.is_some();
    if hooked && !cfg.has_auth() {
        tracing::warn!(
            "proxy_subscribe_url/proxy_publish_url are set but no authentication is configured: \
             every client has full access and the app is never asked \
             (configure proxy_connect_url or a JWT key)"
        );
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Binds the listeners (port 0 picks free ports) and starts the front ends.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    check_security(&cfg)?;
    raise_open_files_limit(&cfg);
    return_large_buffers();
    let auth = crate::auth::Authenticator::from_config(&cfg)?;
    let cfg = Arc::new(cfg);
    let resp = bind("RESP", cfg.resp_addr).await?;
    let http = bind("HTTP", cfg.http_addr).await?;
    let resp_addr = resp.local_addr().map_err(|source| StartError::Bind {
        what: "RESP",
        addr: cfg.resp_addr,
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Bind {
        what: "HTTP",
        addr: cfg.http_addr,
        source,
    })?;
    let hub = Arc::new(build_hub(&cfg).await?);
    let metrics = Arc::new(crate::metrics::Metrics::new(&hub));
    let shutdown = CancellationToken::new();
    let resp_server = crate::resp::RespServer::new(
        hub.clone(),
        cfg.clone(),
        auth.clone(),
        metrics.clone(),
        resp_addr,
    );
    let proxy = Arc::new(crate::proxy::Proxy::new(&cfg, metrics.proxy().clone()));
    warn_inert_proxies(&cfg);
    let state = crate::http::AppState {
        hub: hub.clone(),
        cfg: cfg.clone(),
        auth,
        ws: crate::ws::WsServer::new(&cfg, shutdown.clone(), proxy),
        resp: resp_server.clone(),
        metrics,
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(reclaim_expired(hub.clone(), shutdown.clone()));
    tasks.spawn(leaderboard_ticks(
        hub.clone(),
        cfg.clone(),
        shutdown.clone(),
    ));
    {
        let (hub, stop) = (hub.clone(), shutdown.clone());
        tasks.spawn(async move {
            hub.presence_refreshes(stop.cancelled_owned()).await;
            Ok(())
        });
    }
    tasks.spawn(crate::resp::run(resp, resp_server, shutdown.clone()));
    tasks.spawn(crate::http::run(http, state, shutdown.clone()));
    Ok(Running {
        resp_addr,
        http_addr,
        hub,
        shutdown,
        tasks,
    })
}

/// Reclaims expired keys every 100 ms, so memory goes back even for keys
/// nobody touches again.
async fn reclaim_expired(hub: Arc<Hub>, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                hub.reclaim_expired();
            }
        }
    }
}

/// The hub on the configured engine: in memory, or on Redis (then the
/// engine's pub/sub and housekeeping tasks start with it).
async fn build_hub(cfg: &Arc<Config>) -> Result<Hub, StartError> {
    let engine = cfg.engine.as_str();
    let tls = crate::hub::engine::redis::TlsFiles {
        ca: cfg.engine_tls_ca.clone(),
        cert: cfg.engine_tls_cert.clone(),
        key: cfg.engine_tls_key.clone(),
    };
    if engine == "memory" {
        if tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some() {
            return Err(StartError::Engine(
                "--engine-tls-* need a TLS engine URL (rediss://…)".into(),
            ));
        }
        return Ok(Hub::with_config(cfg.hub_config()));
    }
    let schemes = [
        "redis://",
        "rediss://",
        "redis+sentinel://",
        "redis+cluster://",
        "rediss+sentinel://",
        "rediss+cluster://",
    ];
    if !schemes.iter().any(|s| engine.starts_with(s)) {
        return Err(StartError::Engine(format!(
            "unsupported --engine {engine:?}: use memory, redis://host:port, \
             redis+sentinel://host:port[,…]/MASTER or redis+cluster://host:port[,…] \
             (rediss… for TLS)"
        )));
    }
    let redis =
        crate::hub::engine::redis::RedisEngine::connect(crate::hub::engine::redis::RedisOptions {
            url: engine.to_string(),
            tls,
            prefix: cfg.engine_prefix.clone(),
            node: cfg.node_name.clone(),
            presence_ttl: cfg.presence_ttl,
            history_max_memory: cfg.history_max_memory,
        })
        .await
        .map_err(|e| StartError::Engine(e.to_string()))?;
    let remote = crate::hub::engine::redis::RedisKeyspace::connect(
        redis.clone(),
        cfg.engine_dedicated_connections,
    )
    .await
    .map_err(|e| StartError::Engine(e.to_string()))?;
    let hub = Hub::with_engine(cfg.hub_config(), |_| redis.engine())
        .with_remote_keyspace(Arc::new(remote));
    crate::hub::engine::redis::spawn_background(&redis, std::time::Duration::from_secs(2)).await;
    tracing::info!(node = %cfg.node_name, "engine: redis");
    Ok(hub)
}

/// Pushes changed leaderboards once per interval (the coalescing window).
async fn leaderboard_ticks(
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(cfg.leaderboard_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => hub.leaderboard_tick(cfg.leaderboard_resp_top),
        }
    }
}

/// Makes glibc give large buffers back to the system when they are freed.
/// By default it serves every allocation of up to 32 MiB from its heaps
/// once a buffer that large has been freed (the dynamic mmap threshold),
/// and heap memory is seldom returned: after 25 large RESP replies were
/// built and dropped by the global output budget, RSS stayed about 150 MiB
/// higher than with a fixed threshold (tests/hardening3.rs). Allocations of
/// 1 MiB and more (large replies and messages, the buffers that grow for
/// them) are mapped and unmapped instead; the small ones a fan-out makes
/// are not affected. `MALLOC_MMAP_THRESHOLD_` in the environment wins.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets one of glibc's allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx, Redis and
/// most servers do: the soft default (often 1024) is far below what the
/// connection caps allow, and running out of descriptors stops every
/// listener at once. Warns when even the hard limit is below the caps.
fn raise_open_files_limit(cfg: &Config) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `struct rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid `struct rlimit` that outlives the call.
        // Where the kernel refuses (macOS caps at OPEN_MAX), the old soft
        // limit stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let wanted = cfg
        .max_connections
        .saturating_add(cfg.http_max_connections)
        .saturating_add(64);
    if (lim.rlim_cur as u128) < wanted as u128 {
        tracing::warn!(
            open_files = lim.rlim_cur,
            wanted,
            "RLIMIT_NOFILE is below --max-connections + --http-max-connections; \
             raise `ulimit -n` or lower the caps"
        );
    }
}
