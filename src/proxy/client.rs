//! The HTTP side of the hooks: one pooled hyper client, a bound on calls in
//! flight, the timeout over the whole exchange, the answer read up to
//! [`MAX_ANSWER`] bytes, and every call counted, timed and (when it fails)
//! logged.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use super::{parse_answer, Answer, ChannelLimits, Failure, Hook, MAX_ANSWER};
use crate::config::Config;
use crate::metrics::ProxyMetrics;

/// Calls in flight to the app at most, all hooks together: a crowd of
/// reconnecting browsers must not open thousands of connections to the
/// app. A call waits for a slot within its timeout.
pub const MAX_IN_FLIGHT: usize = 256;

/// Idle connections kept open to the app per host, for reuse.
const MAX_IDLE: usize = 32;

/// How long an idle connection to the app is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The app's hooks, as configured (any of them may be absent).
pub struct Proxy {
    connect: Option<Uri>,
    subscribe: Option<Uri>,
    publish: Option<Uri>,
    timeout: Duration,
    limits: ChannelLimits,
    client: Client<HttpConnector, Full<Bytes>>,
    slots: Semaphore,
    metrics: ProxyMetrics,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("connect", &self.connect.is_some())
            .field("subscribe", &self.subscribe.is_some())
            .field("publish", &self.publish.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Proxy {
    /// The hooks of `cfg` (whose URLs the configuration checked), counted
    /// in `metrics`. Needs a Tokio runtime (the pool's timer).
    pub fn new(cfg: &Config, metrics: ProxyMetrics) -> Proxy {
        let uri = |u: &Option<String>| u.as_deref().and_then(|u| u.parse::<Uri>().ok());
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Proxy {
            connect: uri(&cfg.proxy_connect_url),
            subscribe: uri(&cfg.proxy_subscribe_url),
            publish: uri(&cfg.proxy_publish_url),
            timeout: cfg.proxy_timeout,
            limits: ChannelLimits {
                max_len: cfg.max_channel_length.min(cfg.max_pattern_length),
                max_count: cfg.max_subscriptions,
            },
            client,
            slots: Semaphore::new(MAX_IN_FLIGHT),
            metrics,
        }
    }

    /// True when WebSocket connections without a token are sent to the app.
    pub fn connects(&self) -> bool {
        self.connect.is_some()
    }

    fn url(&self, hook: Hook) -> Option<&Uri> {
        match hook {
            Hook::Connect => self.connect.as_ref(),
            Hook::Subscribe => self.subscribe.as_ref(),
            Hook::Publish => self.publish.as_ref(),
        }
    }

    /// POSTs `body` (a JSON object) to `hook` and reads the answer. Every
    /// call is counted and timed; a failed one is counted by its reason
    /// and logged. A failure means: refuse.
    pub async fn call(&self, hook: Hook, body: Vec<u8>) -> Result<Answer, Failure> {
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.timeout, self.exchange(hook, body)).await {
            Ok(Ok(bytes)) => parse_answer(hook, &bytes, self.limits),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure::Timeout),
        };
        self.metrics.observe(
            hook.name(),
            started.elapsed(),
            answer.as_ref().err().map(Failure::reason),
        );
        if let Err(f) = &answer {
            tracing::warn!(hook = hook.name(), reason = f.reason(), error = %f, "proxy call failed; the request is refused");
        }
        answer
    }

    /// One exchange: a slot, the request, the status, the bounded body.
    async fn exchange(&self, hook: Hook, body: Vec<u8>) -> Result<Bytes, Failure> {
        let uri = self.url(hook).ok_or(Failure::NotConfigured)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Failure::Unavailable("closed".into()))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| Failure::Unavailable(error_chain(&e)))?;
        if res.status() != StatusCode::OK {
            return Err(Failure::Status(res.status().as_u16()));
        }
        let declared = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(Failure::TooLarge);
        }
        match Limited::new(res.into_body(), MAX_ANSWER).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::TooLarge),
            Err(e) => Err(Failure::Unavailable(e.to_string())),
        }
    }
}

/// An error and its causes on one line (hyper's own message is often just
/// "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
