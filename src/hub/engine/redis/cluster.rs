//! The Redis engine on a Redis Cluster: sharded pub/sub, and how Herald
//! patterns still get publications.
//!
//! - Every publication is an `SPUBLISH` to the shard channel
//!   `{prefix}:ch:{TAG}`, in the slot of the channel's keys, so it is
//!   handled by the one master that owns the channel. Nodes `SSUBSCRIBE` it
//!   there (redis-rs routes by slot and follows `MOVED`).
//! - When a slot moves, Redis ends the shard subscriptions it held with a
//!   `sunsubscribe` push; the node subscribes them again at once, where the
//!   slot now lives (a probe channel moving replaces the connection).
//! - Shard channels cannot be matched by patterns. A node holding a Herald
//!   pattern registers it in the sorted set `{prefix}:patterns:{%}` (score:
//!   its expiry, refreshed every 500 ms) and `PSUBSCRIBE`s the plain
//!   `{prefix}:ch:{pattern}` on any node. Every node reads the registered
//!   patterns every 500 ms, and a publish to a channel that one of them
//!   matches is also sent as a classic `PUBLISH` to `{prefix}:ch:{channel}`
//!   (inside the history script, so in the same order), which Redis Cluster
//!   broadcasts to every node over the cluster bus. A new pattern's
//!   subscribe is confirmed only after every node has had the time to read
//!   it (`PATTERN_SETTLE`).
//! - Each master carries one probe shard channel of this node's, so a shard
//!   connection that silently stopped delivering is noticed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{PushKind, Value};

use super::pubsub::Sink;
use super::{RedisEngine, Wanted};
use crate::hub::engine::EngineError;

/// How often each node refreshes its patterns and reads everyone's.
pub(super) const PATTERN_SYNC: Duration = Duration::from_millis(500);

/// How long a new pattern's subscribe waits for every node to have read
/// the pattern registry (three of their reads).
pub(super) const PATTERN_SETTLE: Duration = Duration::from_millis(1500);

/// How long a registered pattern lives without a refresh.
const PATTERN_TTL_MS: u64 = 10_000;

/// How many pushes may wait for the engine before the connection is
/// replaced (a gap, as after a disconnection).
const PUSH_QUEUE: usize = 1 << 16;

impl RedisEngine {
    /// The plain channel a publication to `channel` is also published to,
    /// when a registered pattern matches it (Cluster only).
    pub(super) fn pattern_copy(&self, channel: &[u8]) -> Option<Vec<u8>> {
        if !self.link.is_cluster() {
            return None;
        }
        let patterns = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        patterns
            .iter()
            .any(|p| crate::hub::glob::glob_match(p, channel))
            .then(|| self.plain_name("ch", channel))
    }

    /// A classic `PUBLISH` (on Cluster: broadcast to every node).
    pub(super) async fn publish_classic(
        &self,
        name: Vec<u8>,
        frame: Vec<u8>,
    ) -> Result<(), EngineError> {
        redis::cmd("PUBLISH")
            .arg(name)
            .arg(frame)
            .query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    fn patterns_key(&self) -> Vec<u8> {
        self.key("patterns", b"")
    }

    /// Registers patterns this node holds (refreshing their expiry).
    pub(super) async fn register_patterns(&self, patterns: &[Vec<u8>]) -> Result<(), EngineError> {
        if patterns.is_empty() {
            return Ok(());
        }
        let at = crate::hub::now_ms() + PATTERN_TTL_MS;
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.patterns_key()).arg("GT");
        for p in patterns {
            cmd.arg(at).arg(&p[..]);
        }
        cmd.query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    /// Refreshes this node's patterns and reads everyone's (Cluster).
    pub(super) async fn sync_patterns(&self) {
        let mine: Vec<Vec<u8>> = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|w| match w {
                Wanted::Pattern(p) => Some(p.to_vec()),
                _ => None,
            })
            .collect();
        let _ = self.register_patterns(&mine).await;
        let now = crate::hub::now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.patterns_key())
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGE")
            .arg(self.patterns_key())
            .arg(0)
            .arg(-1);
        if let Ok((all,)) = pipe.query_async::<(Vec<Vec<u8>>,)>(&mut self.conn()).await {
            *self.patterns.lock().unwrap_or_else(|e| e.into_inner()) = all;
        }
    }

    /// The pub/sub loop on a Redis Cluster: one RESP3 cluster connection
    /// whose pushes come through a bounded queue; replaced when it drops,
    /// when a probe goes silent, or when the slot map changed.
    pub(super) async fn cluster_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<redis::PushInfo>(PUSH_QUEUE);
            let overflow = Arc::new(AtomicBool::new(false));
            let flag = overflow.clone();
            let sender = move |p: redis::PushInfo| -> Result<(), ()> {
                if tx.try_send(p).is_err() {
                    flag.store(true, Ordering::Relaxed);
                }
                Ok(())
            };
            match self.link.cluster_pubsub(sender).await {
                Ok(conn) => {
                    let mut sink = Sink::Cluster(conn);
                    let _ = self.link.watch().await;
                    let probes = self.probe_channels();
                    let wanted = self.wanted_now();
                    for p in &probes {
                        if let Err(e) = self.redis_subscribe_raw(&mut sink, p).await {
                            tracing::warn!(error = %e, "engine probe subscribe failed");
                        }
                    }
                    // A shard whose master is down does not hold the others
                    // back: its channels are tried again every second.
                    for w in &wanted {
                        if self.redis_subscribe(&mut sink, w).await.is_err() {
                            self.retry_later(w.clone());
                        }
                    }
                    *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink.clone());
                    let _ = self.check_run_id().await;
                    self.probes_reset(&probes);
                    backoff = Duration::from_millis(50);
                    if !first {
                        self.replay_gaps(&wanted);
                        tracing::info!(
                            channels = wanted.len(),
                            "engine shard pub/sub resubscribed"
                        );
                    }
                    first = false;
                    loop {
                        tokio::select! {
                            push = rx.recv() => match push {
                                Some(p) => self.on_push(p),
                                None => break,
                            },
                            _ = self.reconnect.notified() => {
                                tracing::warn!("engine shard pub/sub replaced (silent probe or slot map change)");
                                break;
                            }
                        }
                        if overflow.load(Ordering::Relaxed) {
                            tracing::warn!("engine shard pub/sub fell behind; reconnecting");
                            break;
                        }
                    }
                    *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "engine cluster pub/sub connect failed");
                }
            }
            // A new master (Sentinel) or a silent probe cuts the wait short.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.reconnect.notified() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn retry_later(&self, w: Wanted) {
        self.retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w);
    }

    /// Subscribes again what could not be (its master was down, or its
    /// slot moved away).
    pub(super) async fn retry_subscriptions(&self) {
        let pending: Vec<Wanted> = self
            .retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        if pending.is_empty() {
            return;
        }
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(mut sink) = sink else {
            return;
        };
        for w in pending {
            let still = self
                .wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&w);
            if !still {
                continue;
            }
            match self.redis_subscribe(&mut sink, &w).await {
                Ok(()) => {
                    if let (Wanted::Channel(c), Some(h)) = (&w, self.handler.get()) {
                        h.on_gap(c);
                    }
                }
                Err(_) => self.retry_later(w),
            }
        }
    }

    /// One push from the cluster pub/sub connection.
    fn on_push(&self, p: redis::PushInfo) {
        let bytes = |v: &Value| match v {
            Value::BulkString(b) => Some(b.clone()),
            Value::SimpleString(s) => Some(s.clone().into_bytes()),
            _ => None,
        };
        match p.kind {
            PushKind::SMessage | PushKind::Message => {
                if let (Some(ch), Some(payload)) = (
                    p.data.first().and_then(bytes),
                    p.data.get(1).and_then(bytes),
                ) {
                    self.on_delivery(&ch, &payload, None, p.kind == PushKind::SMessage);
                }
            }
            PushKind::PMessage => {
                if let (Some(pat), Some(ch), Some(payload)) = (
                    p.data.first().and_then(bytes),
                    p.data.get(1).and_then(bytes),
                    p.data.get(2).and_then(bytes),
                ) {
                    self.on_delivery(&ch, &payload, Some(&pat), false);
                }
            }
            PushKind::SUnsubscribe => {
                // Our own unsubscribes are no longer wanted; anything else
                // is Redis moving a slot away: subscribe it where it lives.
                let Some(ch) = p.data.first().and_then(bytes) else {
                    return;
                };
                if self.is_probe(&ch) {
                    self.reconnect.notify_one();
                    return;
                }
                let w = if let Some(t) = ch.strip_prefix(&self.plain_name("ch", b"")[..]) {
                    super::untag(t).map(|c| Wanted::Channel(c.into()))
                } else if let Some(t) = ch.strip_prefix(&self.plain_name("sh", b"")[..]) {
                    super::untag(t).map(|c| Wanted::Shard(c.into()))
                } else {
                    None
                };
                let Some(w) = w else { return };
                let still = self
                    .wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&w);
                if still {
                    tracing::info!("engine shard subscription moved; resubscribing");
                    self.retry_later(w);
                }
                self.retry_soon.notify_one();
            }
            _ => {}
        }
    }
}
