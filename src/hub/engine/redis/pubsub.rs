//! The Redis engine's broker: publishing (one script for channels with
//! history), the pub/sub connection that delivers to this node, and its
//! liveness probe.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubSink;

use super::presence::decode_event;
use super::{RedisEngine, Wanted, PROBE_SILENCE};
use crate::hub::engine::{
    Broker, BrokerHandler, EngineError, HistoryOptions, Interest, Pending, Position, Published,
};
use crate::hub::presence::PresenceEvent;
use crate::hub::publication::Publication;

/// Appends to a channel's history, takes the offset and publishes, as one
/// step. KEYS: stream, meta. ARGV: payload, max length, ttl ms, epoch if a
/// new one is needed, this node's view of the Redis run id, the pub/sub
/// channel. Returns {offset, epoch}.
pub(super) const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local run = redis.call('HGET', KEYS[2], 'run')
if (not epoch) or (run ~= ARGV[5]) then
  redis.call('DEL', KEYS[1])
  epoch = ARGV[4]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'run', ARGV[5], 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[2], 'top', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], tostring(top) .. '-0', 'data', ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[2])
end
redis.call('PUBLISH', ARGV[6], 'h' .. top .. ':' .. epoch .. ':' .. ARGV[1])
return {top, epoch}
"#;

impl RedisEngine {
    /// The pub/sub loop: connect, resubscribe everything wanted, deliver,
    /// and start again after a disconnection.
    pub(super) async fn pubsub_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            match self.client.get_async_pubsub().await {
                Ok(ps) => {
                    let (mut sink, mut stream) = ps.split();
                    let wanted: Vec<Wanted> = self
                        .wanted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .cloned()
                        .collect();
                    let mut ok = sink.subscribe(self.probe_channel()).await.is_ok();
                    for w in &wanted {
                        if !ok || self.redis_subscribe(&mut sink, w).await.is_err() {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
                        let _ = self.check_run_id().await;
                        self.probe_seen();
                        backoff = Duration::from_millis(50);
                        if !first {
                            // What was published while the link was down
                            // is in the histories: subscribers that can,
                            // replay it.
                            if let Some(h) = self.handler.get() {
                                for w in &wanted {
                                    if let Wanted::Channel(c) = w {
                                        h.on_gap(c);
                                    }
                                }
                            }
                            tracing::info!(channels = wanted.len(), "engine pub/sub resubscribed");
                        }
                        first = false;
                        loop {
                            tokio::select! {
                                msg = stream.next() => match msg {
                                    Some(msg) => self.on_message(&msg),
                                    None => break,
                                },
                                _ = self.reconnect.notified() => {
                                    tracing::warn!("engine pub/sub stopped delivering its probes; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!("engine pub/sub connection lost; reconnecting");
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "engine pub/sub connect failed");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The channel this node publishes its liveness probes on, and
    /// subscribes to: a pub/sub link that silently stopped delivering (seen
    /// after failovers) is noticed when the probes stop coming back.
    pub(super) fn probe_channel(&self) -> Vec<u8> {
        self.key("probe", self.opts.node.as_bytes())
    }

    pub(super) fn probe_seen(&self) {
        *self.probe_at.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Sends a probe; asks for a reconnect when none came back for a while.
    pub(super) async fn probe(&self) {
        let silent = self
            .probe_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        let connected = self
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if connected && silent > PROBE_SILENCE {
            self.reconnect.notify_one();
            self.probe_seen();
            return;
        }
        let _ = redis::cmd("PUBLISH")
            .arg(self.probe_channel())
            .arg("probe")
            .query_async::<i64>(&mut self.conn())
            .await;
    }

    pub(super) async fn redis_subscribe(
        &self,
        sink: &mut PubSubSink,
        w: &Wanted,
    ) -> redis::RedisResult<()> {
        let name = self.redis_name(w);
        match w {
            Wanted::Pattern(_) => sink.psubscribe(name).await,
            _ => sink.subscribe(name).await,
        }
    }

    pub(super) fn on_message(&self, msg: &redis::Msg) {
        let Some(handler) = self.handler.get() else {
            return;
        };
        let Ok(raw) = msg.get_channel::<Vec<u8>>() else {
            return;
        };
        if raw == self.probe_channel() {
            self.probe_seen();
            return;
        }
        let ch_prefix = self.key("ch", b"");
        let sh_prefix = self.key("sh", b"");
        let (channel, shard) = if let Some(c) = raw.strip_prefix(&ch_prefix[..]) {
            (Bytes::copy_from_slice(c), false)
        } else if let Some(c) = raw.strip_prefix(&sh_prefix[..]) {
            (Bytes::copy_from_slice(c), true)
        } else {
            return;
        };
        let payload = msg.get_payload_bytes();
        let Some((&tag, body)) = payload.split_first() else {
            return;
        };
        let publication = match tag {
            b'm' => Publication::new(channel.clone(), Bytes::copy_from_slice(body)),
            b'h' => match parse_history_frame(body) {
                Some((offset, epoch, data)) => Publication::with_offset(
                    channel.clone(),
                    Bytes::copy_from_slice(data),
                    offset,
                    epoch,
                ),
                None => return,
            },
            b'p' => {
                // Presence travels on the channel's own name: a node holding
                // a matching pattern gets it a second time as a pmessage.
                if msg.from_pattern() {
                    return;
                }
                if let Some(ev) = decode_event(body) {
                    handler.on_presence(&channel, &ev);
                }
                return;
            }
            _ => return,
        };
        if shard {
            handler.on_shard_publication(&publication);
        } else if msg.from_pattern() {
            if let Ok(p) = msg.get_pattern::<Vec<u8>>() {
                if let Some(pattern) = p.strip_prefix(&ch_prefix[..]) {
                    handler.on_pattern(pattern, &publication);
                }
            }
        } else {
            handler.on_exact(&publication);
        }
    }

    pub(super) async fn publish_plain(
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
            .map_err(|e| self.failed_write(e))
    }

    pub(super) async fn publish_one(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Result<Published, EngineError> {
        let handler = self.handler.get().cloned();
        let receivers = handler.as_ref().map_or(0, |h| h.receivers(&channel));
        let name = self.key("ch", &channel);
        let position = match history {
            None => {
                let mut frame = Vec::with_capacity(payload.len() + 1);
                frame.push(b'm');
                frame.extend_from_slice(&payload);
                self.publish_plain(name, frame).await?;
                None
            }
            Some(opts) => {
                let (top, epoch): (u64, String) = self
                    .publish
                    .key(self.key("history", &channel))
                    .key(self.key("meta", &channel))
                    .arg(&payload[..])
                    .arg(opts.size)
                    .arg(opts.ttl_ms)
                    .arg(Self::new_epoch())
                    .arg(self.run_id())
                    .arg(name)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(|e| self.failed_write(e))?;
                Some(Position {
                    offset: top,
                    epoch: epoch.parse().unwrap_or(0),
                })
            }
        };
        Ok(Published {
            receivers,
            position,
        })
    }
}

fn parse_history_frame(body: &[u8]) -> Option<(u64, u64, &[u8])> {
    let i = body.iter().position(|b| *b == b':')?;
    let offset = std::str::from_utf8(&body[..i]).ok()?.parse().ok()?;
    let rest = &body[i + 1..];
    let j = rest.iter().position(|b| *b == b':')?;
    let epoch = std::str::from_utf8(&rest[..j]).ok()?.parse().ok()?;
    Some((offset, epoch, &rest[j + 1..]))
}

impl Broker for RedisEngine {
    fn start(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn cluster(&self) -> &dyn crate::hub::engine::Cluster {
        self
    }

    fn healthy(&self) -> bool {
        RedisEngine::healthy(self)
            && self
                .sink
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    fn publish(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Pending<'_, Result<Published, EngineError>> {
        Pending::boxed(self.publish_one(channel, payload, history))
    }

    fn pipelines(&self) -> bool {
        true
    }

    fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Pending<'_, Result<Vec<usize>, EngineError>> {
        Pending::boxed(async move {
            // One pipeline, one round trip, in order.
            let receivers = self.handler.get().map_or(0, |h| h.receivers(&channel));
            let name = self.key("ch", &channel);
            let mut pipe = redis::pipe();
            for p in &payloads {
                let mut frame = Vec::with_capacity(p.len() + 1);
                frame.push(b'm');
                frame.extend_from_slice(p);
                pipe.cmd("PUBLISH").arg(&name).arg(frame).ignore();
            }
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| self.failed_write(e))?;
            Ok(vec![receivers; payloads.len()])
        })
    }

    fn spublish(&self, channel: Bytes, payload: Bytes) -> Pending<'_, Result<usize, EngineError>> {
        Pending::boxed(async move {
            let receivers = self
                .handler
                .get()
                .map_or(0, |h| h.shard_receivers(&channel));
            let mut frame = Vec::with_capacity(payload.len() + 1);
            frame.push(b'm');
            frame.extend_from_slice(&payload);
            self.publish_plain(self.key("sh", &channel), frame).await?;
            Ok(receivers)
        })
    }

    fn deliver_appended(
        &self,
        publication: Publication,
    ) -> Pending<'_, Result<usize, EngineError>> {
        // An XADD on this node's own keyspace: its history is local, so is
        // its delivery (keyspace commands are per node in this step).
        let n = self
            .handler
            .get()
            .map_or(0, |h| h.on_publication(&publication));
        Pending::ready(Ok(n))
    }

    fn publish_presence(
        &self,
        channel: Bytes,
        event: PresenceEvent,
    ) -> Pending<'_, Result<(), EngineError>> {
        Pending::boxed(self.send_event(channel, event))
    }

    fn subscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        let w = match interest {
            Interest::Channel(c) => Wanted::Channel(c.clone()),
            Interest::Shard(c) => Wanted::Shard(c.clone()),
            Interest::Pattern(p) => Wanted::Pattern(p.clone()),
        };
        Pending::boxed(async move {
            // Already wanted (a front end's `prepare_subscribe`, then the
            // hub's own call on registering): held in Redis, or resubscribed
            // by the reconnect. Asking again would only let a link that just
            // went down undo a subscription already confirmed to a client.
            if !self
                .wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(w.clone())
            {
                return Ok(());
            }
            let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let r = match sink {
                Some(mut sink) => self
                    .redis_subscribe(&mut sink, &w)
                    .await
                    .map_err(|e| self.failed(e)),
                None => Err(EngineError::Unavailable("pub/sub connection down".into())),
            };
            if r.is_err() {
                // The hub undoes the registration: nothing to resubscribe.
                self.wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&w);
            }
            r
        })
    }

    fn unsubscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        let w = match interest {
            Interest::Channel(c) => Wanted::Channel(c.clone()),
            Interest::Shard(c) => Wanted::Shard(c.clone()),
            Interest::Pattern(p) => Wanted::Pattern(p.clone()),
        };
        Pending::boxed(async move {
            self.wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&w);
            let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(mut sink) = sink {
                let name = self.redis_name(&w);
                let r = match w {
                    Wanted::Pattern(_) => sink.punsubscribe(name).await,
                    _ => sink.unsubscribe(name).await,
                };
                r.map_err(|e| self.failed(e))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_frames_parse() {
        assert_eq!(
            parse_history_frame(b"12:345:a:b"),
            Some((12, 345, &b"a:b"[..]))
        );
        assert_eq!(parse_history_frame(b"x:1:a"), None);
        assert_eq!(parse_history_frame(b"1"), None);
    }
}
