//! The Redis engine: several Herald nodes on one Redis behave as one hub.
//!
//! - **Broker.** Every publication goes through Redis pub/sub on
//!   `{prefix}:ch:{channel}` (shard channels on `{prefix}:sh:{channel}`).
//!   A node subscribes a channel when its first local subscriber arrives
//!   and unsubscribes after the last leaves; a pattern is one `PSUBSCRIBE`
//!   of `{prefix}:ch:{pattern}` per node. Every node, the publishing one
//!   included, delivers what Redis sends it, so all subscribers see one
//!   order. The pub/sub connection reconnects by itself and resubscribes
//!   everything.
//! - **History.** A channel's history is the stream `{prefix}:history:{channel}`
//!   whose entry ids are `{offset}-0` and whose field `data` is the payload
//!   (`XRANGE` reads it); `{prefix}:meta:{channel}` holds its `epoch`, the
//!   last `top` offset and the Redis `run` id it was written under. One
//!   script appends, takes the offset and publishes, atomically. A new
//!   history, or one found under another Redis run id (Redis restarted,
//!   perhaps from an older snapshot), starts a new epoch on a fresh stream:
//!   an `(offset, epoch)` pair is never reused.
//! - **Presence.** `{prefix}:presence:{channel}` maps `{node}:{client}` to
//!   the entry, `{prefix}:presence-users:{channel}` counts each user's
//!   connections (tabs on several nodes count once), and
//!   `{prefix}:presence-exp:{channel}` orders entries by expiry: each node
//!   refreshes its own every third of `--presence-ttl`, and entries past
//!   their expiry (a node that died) are removed, with their leave pushed.
//! - **Leaderboards** stay on each node's keyspace in this step.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink};

use super::{
    Broker, BrokerHandler, EngineError, HistoryOptions, HistoryStore, Interest, Pending, Position,
    PositionThen, PresenceStore, Published,
};
use crate::hub::presence::{PresenceEntry, PresenceEvent, PresenceEventKind};
use crate::hub::publication::Publication;
use crate::hub::{ClientId, HistoryError, HistoryPage, HistoryPosition};

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`.
    pub url: String,
    /// Namespaces Herald's keys and channels in Redis (no glob characters).
    pub prefix: String,
    /// This node's name (presence entries are keyed by it).
    pub node: String,
    /// How long a node's presence entries live without a refresh.
    pub presence_ttl: Duration,
}

/// Appends to a channel's history, takes the offset and publishes, as one
/// step. KEYS: stream, meta. ARGV: payload, max length, ttl ms, epoch if a
/// new one is needed, this node's view of the Redis run id, the pub/sub
/// channel. Returns {offset, epoch}.
const PUBLISH_SCRIPT: &str = r#"
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

/// The position of a channel, reserving an epoch for an empty one.
/// KEYS: stream, meta. ARGV: epoch to reserve, run id, reserve (1/0),
/// reservation ttl ms. Returns {top, epoch} (epoch "0": none).
const POSITION_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local run = redis.call('HGET', KEYS[2], 'run')
if epoch and run == ARGV[2] then
  local top = redis.call('HGET', KEYS[2], 'top')
  return {tonumber(top), epoch}
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'run', ARGV[2], 'top', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {0, ARGV[1]}
end
return {0, '0'}
"#;

/// Joins a client. KEYS: entries, users, expiry. ARGV: member, entry JSON,
/// user, expiry ms (absolute), key ttl ms. Returns 1 when the user's
/// first connection, 0 otherwise, -1 when already present.
const JOIN_SCRIPT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ARGV[5]) end
if n == 1 then return 1 end
return 0
"#;

/// Removes clients. KEYS: entries, users, expiry. ARGV: members. Returns a
/// flat list of {entry JSON, last (1/0)} for those that were present.
const LEAVE_SCRIPT: &str = r#"
local out = {}
for _, m in ipairs(ARGV) do
  local e = redis.call('HGET', KEYS[1], m)
  if e then
    redis.call('HDEL', KEYS[1], m)
    redis.call('ZREM', KEYS[3], m)
    local user = cjson.decode(e)['user']
    local n = redis.call('HINCRBY', KEYS[2], user, -1)
    local last = 0
    if n <= 0 then redis.call('HDEL', KEYS[2], user); last = 1 end
    table.insert(out, e)
    table.insert(out, last)
  end
end
return out
"#;

/// Expired members of a channel. KEYS: expiry. ARGV: now ms.
const EXPIRED_SCRIPT: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
"#;

/// An entry as XRANGE returns it: id and field-value pairs.
type StreamRow = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// How long a node's own probes may stay unanswered before its pub/sub
/// connection is replaced.
const PROBE_SILENCE: Duration = Duration::from_secs(3);

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

/// A subscription this node holds in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Wanted {
    Channel(Bytes),
    Shard(Bytes),
    Pattern(Bytes),
}

/// One node's connection to Redis: all four engine parts but leaderboards.
pub struct RedisEngine {
    opts: RedisOptions,
    client: redis::Client,
    conn: ConnectionManager,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// What this node wants from Redis pub/sub (resubscribed after a
    /// reconnect).
    wanted: Mutex<HashSet<Wanted>>,
    /// The live pub/sub connection's sink, if connected.
    sink: Mutex<Option<PubSubSink>>,
    /// Redis's run id as this node last saw it.
    run_id: Mutex<String>,
    /// Presence entries this node holds: channel → clients (refreshed).
    joined: Mutex<HashMap<Bytes, HashSet<ClientId>>>,
    healthy: AtomicBool,
    /// When this node last saw its own probe come back.
    probe_at: Mutex<std::time::Instant>,
    /// Asks the pub/sub loop to start a new connection.
    reconnect: tokio::sync::Notify,
    publish: redis::Script,
    position: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    expired: redis::Script,
}

impl RedisEngine {
    /// Connects to Redis (failing fast when it is unreachable at start).
    pub async fn connect(opts: RedisOptions) -> Result<Arc<RedisEngine>, EngineError> {
        if opts.prefix.bytes().any(|b| b"*?[]\\".contains(&b)) {
            return Err(EngineError::Unavailable(
                "--engine-prefix must not contain glob characters".into(),
            ));
        }
        let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let conn = client
            .get_connection_manager_with_config(cfg)
            .await
            .map_err(unavailable)?;
        let engine = Arc::new(RedisEngine {
            opts,
            client,
            conn,
            handler: OnceLock::new(),
            wanted: Mutex::new(HashSet::new()),
            sink: Mutex::new(None),
            run_id: Mutex::new(String::new()),
            joined: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            probe_at: Mutex::new(std::time::Instant::now()),
            reconnect: tokio::sync::Notify::new(),
            publish: redis::Script::new(PUBLISH_SCRIPT),
            position: redis::Script::new(POSITION_SCRIPT),
            join: redis::Script::new(JOIN_SCRIPT),
            leave: redis::Script::new(LEAVE_SCRIPT),
            expired: redis::Script::new(EXPIRED_SCRIPT),
        });
        engine.check_run_id().await?;
        Ok(engine)
    }

    /// The engine's parts; leaderboards from the node's own keyspace.
    pub fn engine(
        self: &Arc<Self>,
        keyspace: Arc<crate::hub::Keyspace>,
        max: usize,
    ) -> super::Engine {
        let memory = super::memory::engine(keyspace, max);
        super::Engine {
            broker: self.clone(),
            history: self.clone(),
            presence: self.clone(),
            leaderboards: memory.leaderboards,
        }
    }

    /// Whether Redis answered the last time it was asked.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.opts.prefix.len() + kind.len() + name.len() + 2);
        k.extend_from_slice(self.opts.prefix.as_bytes());
        k.push(b':');
        k.extend_from_slice(kind.as_bytes());
        k.push(b':');
        k.extend_from_slice(name);
        k
    }

    fn redis_name(&self, w: &Wanted) -> Vec<u8> {
        match w {
            Wanted::Channel(c) | Wanted::Pattern(c) => self.key("ch", c),
            Wanted::Shard(c) => self.key("sh", c),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn run_id(&self) -> String {
        self.run_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads Redis's run id; a change means Redis restarted.
    async fn check_run_id(&self) -> Result<(), EngineError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        *self.run_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn failed(&self, e: impl std::fmt::Display) -> EngineError {
        self.healthy.store(false, Ordering::Relaxed);
        unavailable(e)
    }

    fn new_epoch() -> u64 {
        // Below 2^53, so Lua's numbers carry it exactly; never 0.
        let r = std::collections::hash_map::RandomState::new();
        use std::hash::BuildHasher;
        (r.hash_one(crate::hub::now_ms()) >> 11).max(1)
    }

    /// The pub/sub loop: connect, resubscribe everything wanted, deliver,
    /// and start again after a disconnection.
    async fn pubsub_loop(self: Arc<Self>) {
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
    fn probe_channel(&self) -> Vec<u8> {
        self.key("probe", self.opts.node.as_bytes())
    }

    fn probe_seen(&self) {
        *self.probe_at.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Sends a probe; asks for a reconnect when none came back for a while.
    async fn probe(&self) {
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

    async fn redis_subscribe(&self, sink: &mut PubSubSink, w: &Wanted) -> redis::RedisResult<()> {
        let name = self.redis_name(w);
        match w {
            Wanted::Pattern(_) => sink.psubscribe(name).await,
            _ => sink.subscribe(name).await,
        }
    }

    fn on_message(&self, msg: &redis::Msg) {
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

    async fn publish_plain(&self, name: Vec<u8>, frame: Vec<u8>) -> Result<(), EngineError> {
        redis::cmd("PUBLISH")
            .arg(name)
            .arg(frame)
            .query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    async fn publish_one(
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
                    .map_err(|e| self.failed(e))?;
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

    fn presence_keys(&self, channel: &[u8]) -> [Vec<u8>; 3] {
        [
            self.key("presence", channel),
            self.key("presence-users", channel),
            self.key("presence-exp", channel),
        ]
    }

    fn member(&self, client: ClientId) -> String {
        format!("{}:{client}", self.opts.node)
    }

    /// Keeps this node's presence entries alive and removes entries whose
    /// node stopped refreshing them, pushing their leaves.
    async fn refresh_presence(&self) -> Result<(), EngineError> {
        let joined: Vec<(Bytes, Vec<ClientId>)> = self
            .joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, set)| (c.clone(), set.iter().copied().collect()))
            .collect();
        let now = crate::hub::now_ms();
        let ttl = self.opts.presence_ttl.as_millis() as u64;
        for (channel, clients) in joined {
            let keys = self.presence_keys(&channel);
            let mut pipe = redis::pipe();
            for c in &clients {
                pipe.cmd("ZADD")
                    .arg(&keys[2])
                    .arg("XX")
                    .arg(now + ttl)
                    .arg(self.member(*c))
                    .ignore();
            }
            for k in &keys {
                pipe.cmd("PEXPIRE").arg(k).arg(ttl).ignore();
            }
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            let expired: Vec<String> = self
                .expired
                .key(&keys[2])
                .arg(now)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            if !expired.is_empty() {
                let left = self.leave_members(&channel, &expired).await?;
                for (entry, last) in left {
                    if last {
                        let ev = PresenceEvent {
                            kind: PresenceEventKind::Leave,
                            user: entry.user,
                            client: entry.client,
                            info: entry.info,
                        };
                        self.send_event(channel.clone(), ev).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn leave_members(
        &self,
        channel: &[u8],
        members: &[String],
    ) -> Result<Vec<(PresenceEntry, bool)>, EngineError> {
        let keys = self.presence_keys(channel);
        let mut inv = self.leave.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        for m in members {
            inv.arg(m);
        }
        let flat: Vec<redis::Value> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        let mut out = Vec::new();
        for pair in flat.chunks(2) {
            if let [redis::Value::BulkString(e), redis::Value::Int(last)] = pair {
                if let Some(entry) = decode_entry(e) {
                    out.push((entry, *last == 1));
                }
            }
        }
        Ok(out)
    }

    async fn send_event(&self, channel: Bytes, ev: PresenceEvent) -> Result<(), EngineError> {
        let mut frame = vec![b'p'];
        frame.extend_from_slice(encode_event(&ev).as_bytes());
        self.publish_plain(self.key("ch", &channel), frame).await
    }

    /// Runs the presence refresh and the Redis run-id check for as long as
    /// the engine lives.
    async fn housekeeping(self: Arc<Self>) {
        let every = (self.opts.presence_ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
        let mut since_refresh = Duration::ZERO;
        loop {
            tick.tick().await;
            if self.check_run_id().await.is_err() {
                continue;
            }
            self.probe().await;
            since_refresh += every.min(Duration::from_secs(1));
            if since_refresh >= every {
                since_refresh = Duration::ZERO;
                if let Err(e) = self.refresh_presence().await {
                    tracing::warn!(error = %e, "engine presence refresh failed");
                }
            }
        }
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

fn encode_entry(e: &PresenceEntry) -> String {
    serde_json::json!({
        "client": e.client, "user": e.user, "info": e.info, "joined": e.joined,
    })
    .to_string()
}

fn decode_entry(b: &[u8]) -> Option<PresenceEntry> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    Some(PresenceEntry {
        client: v["client"].as_u64()?,
        user: v["user"].as_str()?.to_string(),
        info: match &v["info"] {
            serde_json::Value::Null => None,
            i => Some(i.clone()),
        },
        joined: v["joined"].as_u64().unwrap_or(0),
    })
}

fn encode_event(ev: &PresenceEvent) -> String {
    serde_json::json!({
        "kind": ev.name(), "user": ev.user, "client": ev.client, "info": ev.info,
    })
    .to_string()
}

fn decode_event(b: &[u8]) -> Option<PresenceEvent> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    Some(PresenceEvent {
        kind: match v["kind"].as_str()? {
            "join" => PresenceEventKind::Join,
            "leave" => PresenceEventKind::Leave,
            _ => return None,
        },
        user: v["user"].as_str()?.to_string(),
        client: v["client"].as_u64()?,
        info: match &v["info"] {
            serde_json::Value::Null => None,
            i => Some(i.clone()),
        },
    })
}

impl Broker for RedisEngine {
    fn start(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
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
                .map_err(|e| self.failed(e))?;
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
            self.wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(w.clone());
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

impl RedisEngine {
    async fn read_position(&self, channel: &[u8], reserve: bool) -> Result<Position, HistoryError> {
        let (top, epoch): (u64, String) = self
            .position
            .key(self.key("history", channel))
            .key(self.key("meta", channel))
            .arg(Self::new_epoch())
            .arg(self.run_id())
            .arg(if reserve { "1" } else { "0" })
            .arg(86_400_000u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|_| HistoryError::Unavailable)?;
        Ok(Position {
            offset: top,
            epoch: epoch.parse().unwrap_or(0),
        })
    }

    /// Entries after `after` (`limit` at most), oldest first, if none of
    /// them is lost.
    async fn entries_after(
        &self,
        channel: &[u8],
        at: Position,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, HistoryError> {
        if after > at.offset {
            return Err(HistoryError::Unrecoverable);
        }
        if after == at.offset {
            return Ok(Vec::new());
        }
        let count = limit.min(1 << 20);
        let rows: Vec<StreamRow> = redis::cmd("XRANGE")
            .arg(self.key("history", channel))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn())
            .await
            .map_err(|_| HistoryError::Unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, fields) in rows {
            let offset: u64 = id
                .split('-')
                .next()
                .and_then(|o| o.parse().ok())
                .ok_or(HistoryError::Unrecoverable)?;
            let data = fields
                .into_iter()
                .find(|(f, _)| f == b"data")
                .map(|(_, v)| Bytes::from(v))
                .unwrap_or_default();
            out.push((offset, data));
        }
        // The first entry must follow `after` directly, or some are gone.
        if out.first().is_none_or(|e| e.0 != after + 1) {
            return Err(HistoryError::Unrecoverable);
        }
        Ok(out)
    }
}

impl HistoryStore for RedisEngine {
    fn append(
        &self,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let channel = channel.clone();
        Pending::boxed(async move {
            let p = self
                .publish_one(channel, payload, Some(opts))
                .await
                .map_err(|_| HistoryError::Unavailable)?;
            p.position.ok_or(HistoryError::Unavailable)
        })
    }

    fn position(
        &self,
        channel: &[u8],
        _opts: HistoryOptions,
        reserve: bool,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move { self.read_position(&channel, reserve).await })
    }

    fn read(
        &self,
        channel: &[u8],
        _opts: HistoryOptions,
        since: Option<Position>,
        limit: usize,
        reverse: bool,
    ) -> Pending<'_, Result<HistoryPage, HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, false).await?;
            let entries = match since {
                Some(p) => {
                    if p.epoch != at.epoch {
                        return Err(HistoryError::Unrecoverable);
                    }
                    let mut e = self
                        .entries_after(&channel, at, p.offset, usize::MAX)
                        .await?;
                    if reverse {
                        e.reverse();
                    }
                    e.truncate(limit);
                    e
                }
                None => {
                    let count = limit.min(1 << 20);
                    let cmd = if reverse { "XREVRANGE" } else { "XRANGE" };
                    let (a, b) = if reverse { ("+", "-") } else { ("-", "+") };
                    let rows: Vec<StreamRow> = redis::cmd(cmd)
                        .arg(self.key("history", &channel))
                        .arg(a)
                        .arg(b)
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut self.conn())
                        .await
                        .map_err(|_| HistoryError::Unavailable)?;
                    rows.into_iter()
                        .filter_map(|(id, fields)| {
                            let o = id.split('-').next()?.parse().ok()?;
                            let d = fields.into_iter().find(|(f, _)| f == b"data")?.1;
                            Some((o, Bytes::from(d)))
                        })
                        .collect()
                }
            };
            Ok(HistoryPage {
                entries,
                top: at.offset,
                epoch: at.epoch,
            })
        })
    }

    fn position_then<'a>(
        &'a self,
        channel: &[u8],
        _opts: HistoryOptions,
        since: Option<Position>,
        cap: usize,
        then: PositionThen<'a>,
    ) -> Pending<'a, Result<(), HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, true).await?;
            let recoverable = match since {
                None => None,
                Some(p) if p.epoch != at.epoch || p.offset > at.offset => Some(false),
                Some(p) if at.offset - p.offset > cap as u64 => Some(false),
                Some(p) if p.offset == at.offset => Some(true),
                Some(p) => Some(self.entries_after(&channel, at, p.offset, 1).await.is_ok()),
            };
            then(HistoryPosition {
                top: at.offset,
                epoch: at.epoch,
                recoverable,
            });
            Ok(())
        })
    }

    fn chunk<'a>(
        &'a self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
        max_bytes: usize,
        at_end: &'a mut (dyn FnMut(u64) + Send),
    ) -> Pending<'a, Result<Vec<(u64, Bytes)>, HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, false).await?;
            if at.epoch != epoch {
                return Err(HistoryError::Unrecoverable);
            }
            let entries = self
                .entries_after(&channel, at, after, max_entries.max(1))
                .await?;
            let mut chunk = Vec::with_capacity(entries.len());
            let mut bytes = 0usize;
            for e in entries {
                if bytes >= max_bytes && !chunk.is_empty() {
                    break;
                }
                bytes = bytes.saturating_add(e.1.len());
                chunk.push(e);
            }
            if chunk.last().map_or(after, |e| e.0) == at.offset {
                at_end(at.offset);
            }
            Ok(chunk)
        })
    }

    fn size(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
    ) -> Pending<'_, Result<(usize, u64), HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, false).await?;
            if at.epoch != epoch {
                return Err(HistoryError::Unrecoverable);
            }
            let entries = self.entries_after(&channel, at, after, max_entries).await?;
            Ok((
                entries.iter().map(|e| e.1.len()).sum(),
                entries.last().map_or(after, |e| e.0),
            ))
        })
    }
}

impl PresenceStore for RedisEngine {
    fn join(
        &self,
        channel: &Bytes,
        entry: PresenceEntry,
    ) -> Pending<'_, Result<bool, EngineError>> {
        let channel = channel.clone();
        Pending::boxed(async move {
            let keys = self.presence_keys(&channel);
            let ttl = self.opts.presence_ttl.as_millis() as u64;
            let client = entry.client;
            let r: i64 = self
                .join
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(self.member(client))
                .arg(encode_entry(&entry))
                .arg(&entry.user)
                .arg(crate::hub::now_ms() + ttl)
                .arg(ttl)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            self.joined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(channel)
                .or_default()
                .insert(client);
            Ok(r == 1)
        })
    }

    fn leave(
        &self,
        channel: &[u8],
        client: ClientId,
    ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>> {
        let channel = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            {
                let mut joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(set) = joined.get_mut(&channel) {
                    set.remove(&client);
                    if set.is_empty() {
                        joined.remove(&channel);
                    }
                }
            }
            let left = self.leave_members(&channel, &[self.member(client)]).await?;
            Ok(left.into_iter().next())
        })
    }

    fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>> {
        let key = self.key("presence", channel);
        Pending::boxed(async move {
            let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            let mut v: Vec<PresenceEntry> =
                all.iter().filter_map(|(_, e)| decode_entry(e)).collect();
            v.sort_by_key(|e| (e.joined, e.client));
            Ok(v)
        })
    }

    fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>> {
        let key = self.key("presence-users", channel);
        Pending::boxed(async move {
            let mut users: Vec<String> = redis::cmd("HKEYS")
                .arg(key)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            users.sort();
            Ok(users)
        })
    }

    fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>> {
        let keys = self.presence_keys(channel);
        Pending::boxed(async move {
            let (c, u): (usize, usize) = redis::pipe()
                .cmd("HLEN")
                .arg(&keys[0])
                .cmd("HLEN")
                .arg(&keys[1])
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            Ok((c, u))
        })
    }

    fn refresh(&self) -> Pending<'_, Result<(), EngineError>> {
        Pending::boxed(self.refresh_presence())
    }
}

/// Starts the engine's background work (pub/sub and housekeeping) once the
/// hub is built, and waits (up to `wait`) for the pub/sub connection, so
/// the first subscribers find it.
pub async fn spawn_background(engine: &Arc<RedisEngine>, wait: Duration) {
    tokio::spawn(engine.clone().pubsub_loop());
    tokio::spawn(engine.clone().housekeeping());
    let deadline = tokio::time::Instant::now() + wait;
    while engine
        .sink
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
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

    #[test]
    fn events_round_trip() {
        let ev = PresenceEvent {
            kind: PresenceEventKind::Leave,
            user: "ann".into(),
            client: 7,
            info: Some(serde_json::json!({"a": 1})),
        };
        assert_eq!(decode_event(encode_event(&ev).as_bytes()), Some(ev));
    }
}
