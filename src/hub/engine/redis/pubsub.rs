//! The Redis engine's broker: publishing (one script for channels with
//! history), the pub/sub connection that delivers to this node, and its
//! liveness probe.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;

use super::presence::decode_event;
use super::{RedisEngine, Wanted, PROBE_SILENCE};
use crate::hub::engine::{
    Broker, BrokerHandler, EngineError, HistoryOptions, Interest, Pending, Position, Published,
};
use crate::hub::presence::PresenceEvent;
use crate::hub::publication::Publication;

/// A history script around its `XADD` step: the epoch check (a new
/// history, or one found under another Redis run id, starts over under
/// `ARGV[4]`), the next offset, then after the append the TTLs and the
/// publish of the entry's frame. `PUBLISH_SCRIPT` appends the payload as
/// `data`; the keyspace's `XADD_SCRIPT` appends the user's fields.
macro_rules! history_script {
    ($xadd:literal) => {
        concat!(
            r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local run = redis.call('HGET', KEYS[2], 'run')
if (not epoch) or (run ~= ARGV[5]) then
  redis.call('DEL', KEYS[1])
  epoch = ARGV[4]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'run', ARGV[5], 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[2], 'top', 1)
"#,
            $xadd,
            r#"local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[2])
end
local frame = 'h' .. top .. ':' .. epoch .. ':' .. ARGV[1]
redis.call(ARGV[7], ARGV[6], frame)
if ARGV[8] ~= '' then
  redis.call('PUBLISH', ARGV[8], frame)
end
return {top, epoch}
"#
        )
    };
}
pub(super) use history_script;

/// Appends to a channel's history, takes the offset and publishes, as one
/// step. KEYS: stream, meta. ARGV: payload, max length, ttl ms, epoch if a
/// new one is needed, this node's view of the Redis run id, the pub/sub
/// channel, the publish command (`PUBLISH`, or `SPUBLISH` on Cluster), and
/// a classic channel to `PUBLISH` to as well, or "" (on Cluster, for the
/// nodes holding a pattern that matches). Returns {offset, epoch}.
pub(super) const PUBLISH_SCRIPT: &str = history_script!(
    r#"redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], tostring(top) .. '-0', 'data', ARGV[1])
"#
);

/// The subscribing side of the live pub/sub connection.
#[derive(Clone)]
pub(super) enum Sink {
    /// Classic pub/sub on the one master.
    Single(PubSubSink),
    /// Sharded pub/sub on a Redis Cluster (patterns: classic, any node).
    Cluster(ClusterConnection),
}

/// A plain publish that a replica refuses (`#!lua` without `no-writes`
/// declares it a write): on Sentinel, a demoted master answers `-READONLY`
/// instead of acknowledging a publish only its own subscribers would see.
/// ARGV: channel, frame.
pub(super) const PLAIN_SCRIPT: &str = "#!lua\nreturn redis.call('PUBLISH', ARGV[1], ARGV[2])\n";

impl RedisEngine {
    /// Subscribes one of this node's own channels (probes).
    pub(super) async fn redis_subscribe_raw(
        &self,
        sink: &mut Sink,
        name: &[u8],
    ) -> redis::RedisResult<()> {
        match sink {
            Sink::Single(s) => s.subscribe(name).await,
            Sink::Cluster(c) => c.ssubscribe(name).await,
        }
    }

    /// What this node wants carried now (a resubscribe's list).
    pub(super) fn wanted_now(&self) -> Vec<Wanted> {
        self.wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// After a resubscribe: what was published while the link was down is
    /// in the histories, so subscribers of `wanted`'s channels that can
    /// replay it.
    pub(super) fn replay_gaps(&self, wanted: &[Wanted]) {
        if let Some(h) = self.handler.get() {
            for w in wanted {
                if let Wanted::Channel(c) = w {
                    h.on_gap(c);
                }
            }
        }
    }

    /// The pub/sub loop: connect, resubscribe everything wanted, deliver,
    /// and start again after a disconnection.
    pub(super) async fn pubsub_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let generation = self.link.generation();
            match self.link.pubsub().await {
                Ok(ps) => {
                    let (sink, mut stream) = ps.split();
                    let mut sink = Sink::Single(sink);
                    let probes = self.probe_channels();
                    let wanted = self.wanted_now();
                    let mut ok = true;
                    for p in &probes {
                        ok = ok && self.redis_subscribe_raw(&mut sink, p).await.is_ok();
                    }
                    for w in &wanted {
                        if !ok || self.redis_subscribe(&mut sink, w).await.is_err() {
                            ok = false;
                            break;
                        }
                    }
                    if ok && generation != self.link.generation() {
                        // The master changed meanwhile: start over on it.
                        ok = false;
                    }
                    if ok {
                        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
                        let _ = self.check_run_id().await;
                        self.probes_reset(&probes);
                        backoff = Duration::from_millis(50);
                        if !first {
                            self.replay_gaps(&wanted);
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
                    self.run_unverified.store(true, Ordering::Relaxed);
                    tracing::warn!("engine pub/sub connection lost; reconnecting");
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "engine pub/sub connect failed");
                    // Perhaps the master is gone (Sentinel): look again.
                    if self.link.watch().await {
                        backoff = Duration::from_millis(50);
                        continue;
                    }
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

    /// The channels this node publishes its liveness probes on, and
    /// subscribes to: a pub/sub link that silently stopped delivering (seen
    /// after failovers) is noticed when the probes stop coming back. One
    /// channel, or on Cluster one shard channel per master (each in a slot
    /// that master serves), so every shard connection is probed.
    pub(super) fn probe_channels(&self) -> Vec<Vec<u8>> {
        if !self.link.is_cluster() {
            return vec![self.plain_name("probe", self.opts.node.as_bytes())];
        }
        let mut out = Vec::new();
        for master in self.link.masters() {
            for n in 0..100_000u32 {
                let name = self.key("probe", format!("{}-{n}", self.opts.node).as_bytes());
                if self
                    .link
                    .master_for_slot(super::link::slot(&name))
                    .as_deref()
                    == Some(master.as_str())
                {
                    out.push(name);
                    break;
                }
            }
        }
        out
    }

    /// Starts probing `channels` afresh (a new pub/sub connection).
    pub(super) fn probes_reset(&self, channels: &[Vec<u8>]) {
        let now = std::time::Instant::now();
        *self.probes.lock().unwrap_or_else(|e| e.into_inner()) =
            channels.iter().map(|c| (c.clone(), now)).collect();
    }

    pub(super) fn is_probe(&self, raw: &[u8]) -> bool {
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(raw)
    }

    pub(super) fn probe_seen_on(&self, raw: &[u8]) {
        if let Some(t) = self
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(raw)
        {
            *t = std::time::Instant::now();
        }
    }

    /// The command that publishes to Herald's channels.
    pub(super) fn publish_cmd(&self) -> &'static str {
        if self.link.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Sends the probes; asks for a reconnect when one of them did not
    /// come back for a while.
    pub(super) async fn probe(&self) {
        let connected = self
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let (silent, channels) = {
            let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            let silent = probes.values().any(|t| t.elapsed() > PROBE_SILENCE);
            (silent, probes.keys().cloned().collect::<Vec<_>>())
        };
        if connected && silent {
            self.reconnect.notify_one();
            self.probes_reset(&channels);
            return;
        }
        for c in channels {
            let sent = redis::cmd(self.publish_cmd())
                .arg(&c)
                .arg("probe")
                .query_async::<i64>(&mut self.conn())
                .await;
            if sent.is_err() {
                // Its master is unreachable (a dead shard): that is not the
                // pub/sub connection going silent.
                self.probe_seen_on(&c);
            }
        }
    }

    pub(super) async fn redis_subscribe(
        &self,
        sink: &mut Sink,
        w: &Wanted,
    ) -> redis::RedisResult<()> {
        let name = self.redis_name(w);
        match (sink, w) {
            (Sink::Single(s), Wanted::Pattern(_)) => s.psubscribe(name).await,
            (Sink::Single(s), _) => s.subscribe(name).await,
            (Sink::Cluster(c), Wanted::Pattern(_)) => c.psubscribe(name).await,
            (Sink::Cluster(c), _) => c.ssubscribe(name).await,
        }
    }

    pub(super) async fn redis_unsubscribe(
        &self,
        sink: &mut Sink,
        w: &Wanted,
    ) -> redis::RedisResult<()> {
        let name = self.redis_name(w);
        match (sink, w) {
            (Sink::Single(s), Wanted::Pattern(_)) => s.punsubscribe(name).await,
            (Sink::Single(s), _) => s.unsubscribe(name).await,
            (Sink::Cluster(c), Wanted::Pattern(_)) => c.punsubscribe(name).await,
            (Sink::Cluster(c), _) => c.sunsubscribe(name).await,
        }
    }

    /// A message from the classic pub/sub connection.
    pub(super) fn on_message(&self, msg: &redis::Msg) {
        let Ok(raw) = msg.get_channel::<Vec<u8>>() else {
            return;
        };
        let pattern = if msg.from_pattern() {
            match msg.get_pattern::<Vec<u8>>() {
                Ok(p) => Some(p),
                Err(_) => return,
            }
        } else {
            None
        };
        self.on_delivery(&raw, msg.get_payload_bytes(), pattern.as_deref(), false);
    }

    /// One delivery from Redis: `raw` is the Redis channel, `pattern` the
    /// Redis pattern when it came through one, `sharded` whether it came
    /// through sharded pub/sub (names written as hash tags).
    pub(super) fn on_delivery(
        &self,
        raw: &[u8],
        payload: &[u8],
        pattern: Option<&[u8]>,
        sharded: bool,
    ) {
        let Some(handler) = self.handler.get() else {
            return;
        };
        if self.is_probe(raw) {
            self.probe_seen_on(raw);
            return;
        }
        let ch_prefix = self.plain_name("ch", b"");
        let sh_prefix = self.plain_name("sh", b"");
        let name = |rest: &[u8]| -> Option<Bytes> {
            if sharded {
                super::untag(rest).map(Bytes::from)
            } else {
                Some(Bytes::copy_from_slice(rest))
            }
        };
        let (channel, shard) = if let Some(c) = raw.strip_prefix(&ch_prefix[..]) {
            match name(c) {
                Some(c) => (c, false),
                None => return,
            }
        } else if let Some(c) = raw.strip_prefix(&sh_prefix[..]) {
            match name(c) {
                Some(c) => (c, true),
                None => return,
            }
        } else {
            return;
        };
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
                if pattern.is_some() {
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
        } else if let Some(p) = pattern {
            if let Some(pattern) = p.strip_prefix(&ch_prefix[..]) {
                handler.on_pattern(pattern, &publication);
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
        self.link.fenced()?;
        if self.link.is_sentinel() {
            return self
                .plain
                .arg(name)
                .arg(frame)
                .invoke_async::<i64>(&mut self.conn())
                .await
                .map(drop)
                .map_err(|e| self.failed_write(e));
        }
        redis::cmd(self.publish_cmd())
            .arg(name)
            .arg(frame)
            .query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(|e| self.failed_write(e))
    }

    /// The history script's keys and arguments for one publish (after
    /// the key count): stream, meta; payload, max length, ttl ms, a new
    /// epoch, the run id, the pub/sub channel, the publish command, the
    /// pattern copy's channel or "" (see [`PUBLISH_SCRIPT`]).
    pub(super) fn history_script_args(
        &self,
        channel: &[u8],
        payload: &[u8],
        opts: HistoryOptions,
    ) -> [Vec<u8>; 10] {
        let stream = self.key("history", channel);
        let run = self.run_id(&stream);
        [
            stream,
            self.key("meta", channel),
            payload.to_vec(),
            opts.size.to_string().into_bytes(),
            opts.ttl_ms.to_string().into_bytes(),
            Self::new_epoch().to_string().into_bytes(),
            run.into_bytes(),
            self.channel_name("ch", channel),
            self.publish_cmd().as_bytes().to_vec(),
            self.pattern_copy(channel).unwrap_or_default(),
        ]
    }

    pub(super) async fn publish_one(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Result<Published, EngineError> {
        self.link.fenced()?;
        let handler = self.handler.get().cloned();
        let receivers = handler.as_ref().map_or(0, |h| h.receivers(&channel));
        let name = self.channel_name("ch", &channel);
        let position = match history {
            None => {
                let mut frame = Vec::with_capacity(payload.len() + 1);
                frame.push(b'm');
                frame.extend_from_slice(&payload);
                self.publish_plain(name, frame.clone())
                    .await
                    .map_err(|e| self.failed_on(&channel, e))?;
                if let Some(plain) = self.pattern_copy(&channel) {
                    self.publish_classic(plain, frame).await?;
                }
                None
            }
            Some(opts) => {
                self.verify_run().await?;
                let [stream, meta, args @ ..] = self.history_script_args(&channel, &payload, opts);
                let mut inv = self.publish.key(stream);
                inv.key(meta);
                for a in args {
                    inv.arg(a);
                }
                let (top, epoch): (u64, String) = inv
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(|e| self.failed_on(&channel, self.failed_write(e)))?;
                self.note_history(&channel, top, opts.size, payload.len());
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

impl RedisEngine {
    /// A client's pipelined publishes, to any channels, as one Redis
    /// pipeline in the order given (one write, one round trip: Redis runs
    /// them in that order, so each channel's order holds): the history
    /// script for channels with history, a publish (and, on Cluster, a
    /// pattern copy) for the others. Scripts Redis lost (`NOSCRIPT`: those
    /// did not run) are loaded and those publishes sent again, in order.
    async fn publish_pipeline(
        &self,
        items: Vec<(Bytes, Bytes, Option<HistoryOptions>)>,
    ) -> Vec<Result<Published, EngineError>> {
        let n = items.len();
        let fail = |e: EngineError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        if self.link.is_sentinel() {
            // Plain publishes go through a script there (a demoted master
            // refuses it): one by one, as publish_one does.
            let mut out = Vec::with_capacity(n);
            for (c, p, h) in items {
                out.push(self.publish_one(c, p, h).await);
            }
            return out;
        }
        if let Err(e) = self.link.fenced() {
            return fail(e);
        }
        if items.iter().any(|(_, _, h)| h.is_some()) {
            if let Err(e) = self.verify_run().await {
                return fail(e);
            }
        }
        let handler = self.handler.get().cloned();
        // Per item: its first reply's index, and whether it is a script.
        let mut at: Vec<(usize, bool)> = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut replies = 0usize;
        let script_args = |pipe: &mut redis::Pipeline, c: &Bytes, p: &Bytes, o: &HistoryOptions| {
            pipe.cmd("EVALSHA")
                .arg(self.publish.get_hash())
                .arg(2)
                .arg(&self.history_script_args(c, p, *o)[..]);
        };
        for (c, p, h) in &items {
            receivers.push(handler.as_ref().map_or(0, |h| h.receivers(c)));
            at.push((replies, h.is_some()));
            match h {
                Some(o) => {
                    script_args(&mut pipe, c, p, o);
                    replies += 1;
                }
                None => {
                    let mut frame = Vec::with_capacity(p.len() + 1);
                    frame.push(b'm');
                    frame.extend_from_slice(p);
                    if let Some(plain) = self.pattern_copy(c) {
                        pipe.cmd("PUBLISH").arg(plain).arg(&frame[..]).ignore();
                    }
                    pipe.cmd(self.publish_cmd())
                        .arg(self.channel_name("ch", c))
                        .arg(frame);
                    replies += 1;
                }
            }
        }
        let r: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
            pipe.query_async(&mut self.conn()).await;
        let mut results = match r {
            Ok(v) => v,
            Err(e) => return fail(self.failed_write(e)),
        };
        let noscript = |r: &redis::RedisResult<redis::Value>| matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
        let lost: Vec<usize> = (0..n)
            .filter(|&i| at[i].1 && results.get(at[i].0).is_some_and(noscript))
            .collect();
        if !lost.is_empty() {
            // Redis lost its scripts (a restart, SCRIPT FLUSH): load, then
            // send those publishes again, in order.
            let load: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(PUBLISH_SCRIPT)
                .query_async(&mut self.conn())
                .await;
            if let Err(e) = load {
                let e = self.failed_write(e);
                for &i in &lost {
                    results[at[i].0] = Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "script reload failed",
                        e.to_string(),
                    )));
                }
            } else {
                let mut again = redis::pipe();
                again.ignore_errors();
                for &i in &lost {
                    let (c, p, h) = &items[i];
                    if let Some(o) = h {
                        script_args(&mut again, c, p, o);
                    }
                }
                let r: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
                    again.query_async(&mut self.conn()).await;
                match r {
                    Ok(v) => {
                        for (&i, r) in lost.iter().zip(v) {
                            results[at[i].0] = r;
                        }
                    }
                    Err(e) => return fail(self.failed_write(e)),
                }
            }
        }
        (0..n)
            .map(|i| {
                let (c, p, h) = &items[i];
                let r = results
                    .get_mut(at[i].0)
                    .map(|r| std::mem::replace(r, Ok(redis::Value::Nil)))
                    .unwrap_or(Ok(redis::Value::Nil));
                match r {
                    Err(e) => Err(self.failed_on(c, self.failed_write(e))),
                    Ok(v) if h.is_some() => match redis::from_redis_value::<(u64, String)>(v) {
                        Ok((top, epoch)) => {
                            if let Some(o) = h {
                                self.note_history(c, top, o.size, p.len());
                            }
                            Ok(Published {
                                receivers: receivers[i],
                                position: Some(Position {
                                    offset: top,
                                    epoch: epoch.parse().unwrap_or(0),
                                }),
                            })
                        }
                        Err(e) => Err(EngineError::Unknown(e.to_string())),
                    },
                    Ok(_) => Ok(Published {
                        receivers: receivers[i],
                        position: None,
                    }),
                }
            })
            .collect()
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

    fn publish_mixed(
        &self,
        items: Vec<(Bytes, Bytes, Option<HistoryOptions>)>,
    ) -> Pending<'_, Vec<Result<Published, EngineError>>> {
        Pending::boxed(self.publish_pipeline(items))
    }

    fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Pending<'_, Result<Vec<usize>, EngineError>> {
        Pending::boxed(async move {
            // One pipeline, one round trip, in order.
            self.link.fenced()?;
            let receivers = self.handler.get().map_or(0, |h| h.receivers(&channel));
            let name = self.channel_name("ch", &channel);
            let plain = self.pattern_copy(&channel);
            let mut pipe = redis::pipe();
            for p in &payloads {
                let mut frame = Vec::with_capacity(p.len() + 1);
                frame.push(b'm');
                frame.extend_from_slice(p);
                if self.link.is_sentinel() {
                    pipe.cmd("EVAL")
                        .arg(PLAIN_SCRIPT)
                        .arg(0)
                        .arg(&name)
                        .arg(&frame)
                        .ignore();
                } else {
                    pipe.cmd(self.publish_cmd()).arg(&name).arg(&frame).ignore();
                }
            }
            if let Some(plain) = &plain {
                // On Cluster the pattern copies are classic publishes, sent
                // to another node: a pipeline of their own, after.
                let mut copies = redis::pipe();
                for p in &payloads {
                    let mut frame = Vec::with_capacity(p.len() + 1);
                    frame.push(b'm');
                    frame.extend_from_slice(p);
                    copies.cmd("PUBLISH").arg(plain).arg(frame).ignore();
                }
                pipe.query_async::<()>(&mut self.conn())
                    .await
                    .map_err(|e| self.failed(e))?;
                pipe = copies;
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
            self.publish_plain(self.channel_name("sh", &channel), frame)
                .await?;
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

    fn subscribes_await(&self) -> bool {
        true
    }

    fn subscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        let w = match interest {
            Interest::Channel(c) => Wanted::Channel(c.clone()),
            Interest::Shard(c) => Wanted::Shard(c.clone()),
            Interest::Pattern(p) => Wanted::Pattern(p.clone()),
        };
        Pending::boxed(async move {
            // Already wanted (the hub asks once per name it does not carry,
            // `hub/subscribe.rs`; this guards any second ask): held in
            // Redis, or resubscribed by the reconnect. Asking again would
            // only let a link that just went down undo a subscription
            // already confirmed to a client.
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
                Some(mut sink) => {
                    let mut r = Ok(());
                    if let (Wanted::Pattern(p), true) = (&w, self.link.is_cluster()) {
                        // Publishers learn of the pattern within a second.
                        r = self.register_patterns(&[p.to_vec()]).await;
                    }
                    if r.is_ok() {
                        r = self
                            .redis_subscribe(&mut sink, &w)
                            .await
                            .map_err(|e| self.failed(e));
                    }
                    if r.is_ok() && matches!(w, Wanted::Pattern(_)) && self.link.is_cluster() {
                        tokio::time::sleep(super::cluster::PATTERN_SETTLE).await;
                    }
                    r
                }
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
                self.redis_unsubscribe(&mut sink, &w)
                    .await
                    .map_err(|e| self.failed(e))?;
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
