//! The Redis engine: several Herald nodes on one Redis behave as one hub.
//! One Redis, Sentinel's master, or a Redis Cluster: [`link::Link`] hides
//! which (docs/engine.md has the layout and the failure behaviour).
//!
//! - **Keys.** Every key of a channel carries the channel as its hash tag,
//!   `{prefix}:{kind}:{TAG}` (see `tag`), so on Cluster they share a slot.
//! - **Broker.** Every publication goes through Redis pub/sub: the classic
//!   channel `{prefix}:ch:{channel}` (client shard channels on
//!   `{prefix}:sh:{channel}`), or on Cluster the shard channel
//!   `{prefix}:ch:{TAG}` in the slot of the channel's keys (`cluster.rs`).
//!   A node subscribes a channel when its first local subscriber arrives
//!   and unsubscribes after the last leaves; a pattern is one `PSUBSCRIBE`
//!   of `{prefix}:ch:{pattern}` per node. Every node, the publishing one
//!   included, delivers what Redis sends it, so all subscribers see one
//!   order. The pub/sub connection reconnects by itself, resubscribes
//!   everything, and is replaced when its probes stop coming back.
//! - **History.** A channel's history is the stream `{prefix}:history:{TAG}`
//!   whose entry ids are `{offset}-0` and whose field `data` is the payload
//!   (`XRANGE` reads it); `{prefix}:meta:{TAG}` holds its `epoch`, the
//!   last `top` offset and the Redis `run` id it was written under. One
//!   script appends, takes the offset and publishes, atomically. A new
//!   history, or one found under another run id (Redis restarted, perhaps
//!   from an older snapshot; another master after a failover or a slot
//!   move), starts a new epoch on a fresh stream: an `(offset, epoch)` pair
//!   is never reused.
//! - **Presence.** `{prefix}:presence:{TAG}` maps `{node}:{client}` to
//!   the entry, `{prefix}:presence-users:{TAG}` counts each user's
//!   connections (tabs on several nodes count once), and
//!   `{prefix}:presence-exp:{TAG}` orders entries by expiry: each node
//!   refreshes its own every third of `--presence-ttl` (the hub calls
//!   `PresenceStore::refresh`), and entries past
//!   their expiry (a node that died) are removed, with their leave pushed.
//! - **Data commands** (strings, hashes, lists, sets, sorted sets, streams,
//!   key commands, transactions) are served from Redis too
//!   ([`RedisKeyspace`], `keyspace.rs`), so every node gives one answer.
//! - **Leaderboards** are read from sorted sets in Redis
//!   (`leaderboards.rs`): each node re-reads the boards its clients follow
//!   on every tick.

mod budget;
mod cluster;
mod control;
mod history;
mod keyspace;
mod leaderboards;
pub mod link;
mod presence;
mod pubsub;
mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use super::{BrokerHandler, EngineError};
use crate::hub::ClientId;
pub use keyspace::RedisKeyspace;
pub use tls::TlsFiles;

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`,
    /// `redis+sentinel://[password@]host:port[,host:port…]/MASTER_NAME` or
    /// `redis+cluster://[password@]host:port[,host:port…]`; `rediss…` for
    /// TLS.
    pub url: String,
    /// `--engine-tls-*` (only with a TLS URL).
    pub tls: TlsFiles,
    /// Namespaces Herald's keys and channels in Redis (no glob characters,
    /// no braces).
    pub prefix: String,
    /// This node's name (presence entries are keyed by it).
    pub node: String,
    /// How long a node's presence entries live without a refresh.
    pub presence_ttl: Duration,
    /// `--history-max-memory`: the budget of every node's histories in
    /// Redis together (0: none). See `budget.rs`.
    pub history_max_memory: usize,
}

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
    /// The way to Redis, whatever its topology: `link.shared()` for
    /// commands, `link.dedicated(key)` for a connection of one's own.
    pub link: link::Link,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// What this node wants from Redis pub/sub (resubscribed after a
    /// reconnect).
    wanted: Mutex<HashSet<Wanted>>,
    /// The live pub/sub connection's sink, if connected.
    sink: Mutex<Option<pubsub::Sink>>,
    /// Redis's run id as this node last saw it, per master (`""`: the one
    /// master when not a cluster).
    run_ids: Mutex<HashMap<String, String>>,
    /// A connection to Redis broke since the run ids were last read: Redis
    /// may have restarted (perhaps from an older snapshot), so the next
    /// history write reads them first ([`RedisEngine::verify_run`]).
    run_unverified: AtomicBool,
    /// This node's estimates of the histories it publishes to
    /// (`--history-max-memory`).
    budget: budget::Budget,
    /// Presence entries this node holds: channel → clients (refreshed,
    /// and put back when another node expired them meanwhile).
    joined: Mutex<HashMap<Bytes, HashMap<ClientId, crate::hub::presence::PresenceEntry>>>,
    healthy: AtomicBool,
    /// Cluster: every node's registered patterns, as last read.
    patterns: Mutex<Vec<Vec<u8>>>,
    /// Cluster: subscriptions to make again (master down, slot moved).
    retry: Mutex<HashSet<Wanted>>,
    retry_soon: tokio::sync::Notify,
    /// This node's probe channels, and when each last came back.
    probes: Mutex<HashMap<Vec<u8>, std::time::Instant>>,
    /// Asks the pub/sub loop to start a new connection.
    reconnect: tokio::sync::Notify,
    publish: redis::Script,
    plain: redis::Script,
    position: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    expired: redis::Script,
    /// Heartbeats and surveys between nodes (control.rs).
    control: control::Control,
}

impl RedisEngine {
    /// Connects to Redis (failing fast when it is unreachable at start).
    pub async fn connect(opts: RedisOptions) -> Result<Arc<RedisEngine>, EngineError> {
        if opts.prefix.bytes().any(|b| b"*?[]\\{}".contains(&b)) {
            return Err(EngineError::Unavailable(
                "--engine-prefix must not contain glob characters or braces".into(),
            ));
        }
        let link = link::Link::connect(&opts.url, &opts.tls).await?;
        let engine = Arc::new(RedisEngine {
            opts,
            link,
            handler: OnceLock::new(),
            wanted: Mutex::new(HashSet::new()),
            sink: Mutex::new(None),
            run_ids: Mutex::new(HashMap::new()),
            run_unverified: AtomicBool::new(false),
            budget: budget::Budget::default(),
            joined: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            probes: Mutex::new(HashMap::new()),
            patterns: Mutex::new(Vec::new()),
            retry: Mutex::new(HashSet::new()),
            retry_soon: tokio::sync::Notify::new(),
            reconnect: tokio::sync::Notify::new(),
            publish: redis::Script::new(pubsub::PUBLISH_SCRIPT),
            plain: redis::Script::new(pubsub::PLAIN_SCRIPT),
            position: redis::Script::new(history::POSITION_SCRIPT),
            join: redis::Script::new(presence::JOIN_SCRIPT),
            leave: redis::Script::new(presence::LEAVE_SCRIPT),
            expired: redis::Script::new(presence::EXPIRED_SCRIPT),
            control: control::Control::new(),
        });
        engine.check_run_id().await?;
        Ok(engine)
    }

    /// The engine's parts; leaderboards read from sorted sets in Redis.
    pub fn engine(self: &Arc<Self>) -> super::Engine {
        let _ = self.control.me.set(Arc::downgrade(self));
        super::Engine {
            broker: self.clone(),
            history: self.clone(),
            presence: self.clone(),
            leaderboards: Arc::new(leaderboards::RedisLeaderboards {
                engine: self.clone(),
            }),
        }
    }

    /// Whether Redis answered the last time it was asked.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A key of `name`'s: `{prefix}:{kind}:{TAG}`, where all of one
    /// channel's keys share the hash tag (one Cluster slot). See [`tag`].
    fn key(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        key_of(&self.opts.prefix, kind, name)
    }

    /// A pub/sub channel of Herald's: on Cluster a shard channel in the
    /// slot of the channel's keys (`{prefix}:{kind}:{TAG}`); elsewhere the
    /// plain `{prefix}:{kind}:{name}`, which patterns can match.
    fn channel_name(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        if self.link.is_cluster() {
            return self.key(kind, name);
        }
        self.plain_name(kind, name)
    }

    /// `{prefix}:{kind}:{name}`: a classic pub/sub channel (or pattern).
    fn plain_name(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        plain_of(&self.opts.prefix, kind, name)
    }

    fn redis_name(&self, w: &Wanted) -> Vec<u8> {
        match w {
            Wanted::Channel(c) => self.channel_name("ch", c),
            Wanted::Pattern(c) => self.plain_name("ch", c),
            Wanted::Shard(c) => self.channel_name("sh", c),
        }
    }

    fn conn(&self) -> link::Shared {
        self.link.shared()
    }

    /// The run id of the master holding `key`, as this node last saw it.
    fn run_id(&self, key: &[u8]) -> String {
        let ids = self.run_ids.lock().unwrap_or_else(|e| e.into_inner());
        let master = if self.link.is_cluster() {
            self.link
                .master_for_slot(link::slot(key))
                .unwrap_or_default()
        } else {
            String::new()
        };
        ids.get(&master).cloned().unwrap_or_default()
    }

    /// Reads the masters' run ids; a change means a master restarted (or,
    /// on Sentinel, another one took over).
    async fn check_run_id(&self) -> Result<(), EngineError> {
        let ids = self.link.run_ids().await.map_err(|e| self.failed(e))?;
        let known = self
            .run_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if known != ids {
            // A Redis this node has not seen (or one restarted) holds no
            // scripts: load the history script before any publish needs
            // it. A pipelined batch whose script Redis lacks is sent again
            // after its other publishes, so a publisher's order across
            // channels would hold only per channel. (A `SCRIPT FLUSH`
            // still costs that reordering once.)
            let load: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(pubsub::PUBLISH_SCRIPT)
                .query_async(&mut self.conn())
                .await;
            if let Err(e) = load {
                tracing::debug!(error = %e, "engine: loading the history script failed");
            }
        }
        *self.run_ids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn failed(&self, e: impl std::fmt::Display) -> EngineError {
        self.mark_failed();
        unavailable(e)
    }

    /// A call to Redis failed: the node may be unhealthy (not on Cluster,
    /// where one dead shard must not drain the node: health is whether any
    /// master answers, `check_run_id`), and on Sentinel the master may
    /// have changed.
    fn mark_failed(&self) {
        if !self.link.is_cluster() {
            self.healthy.store(false, Ordering::Relaxed);
        }
        self.run_unverified.store(true, Ordering::Relaxed);
        self.link.nudge();
    }

    /// Reads the run ids again when a connection broke since they were
    /// last read, before a history write passes them to its script: a
    /// Redis that restarted from an older snapshot is then noticed by the
    /// very first write, which starts a new epoch instead of reusing the
    /// lost publications' offsets.
    async fn verify_run(&self) -> Result<(), EngineError> {
        if self.run_unverified.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.check_run_id().await {
                self.run_unverified.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A failed write: refused (certainly not applied) when no connection
    /// could be made or Redis answered with an error; "outcome unknown"
    /// otherwise: a timeout, or a connection that broke (a write queued on
    /// a multiplexed connection when it drops may have run or not, and the
    /// error is the same either way; tests/attack5_findings.rs measured 13
    /// to 28 % of such publishes applied).
    fn failed_write(&self, e: redis::RedisError) -> EngineError {
        self.mark_failed();
        let refused = e.is_connection_refusal() || matches!(e.kind(), redis::ErrorKind::Server(_));
        if !refused && (e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) {
            EngineError::Unknown(e.to_string())
        } else {
            unavailable(e)
        }
    }

    /// On Cluster, names the master that failed `channel`'s call (an
    /// "outcome unknown" stays one).
    fn failed_on(&self, channel: &[u8], e: EngineError) -> EngineError {
        if !self.link.is_cluster() || matches!(e, EngineError::Unknown(_)) {
            return e;
        }
        let slot = link::slot(&self.key("ch", channel));
        let master = self
            .link
            .master_for_slot(slot)
            .unwrap_or_else(|| "none".into());
        let e = e.to_string();
        let e = e.strip_prefix("engine unavailable: ").unwrap_or(&e);
        unavailable(format!(
            "Redis Cluster slot {slot} (master {master}) unreachable: {e}"
        ))
    }

    fn new_epoch() -> u64 {
        // Below 2^53, so Lua's numbers carry it exactly; never 0.
        let r = std::collections::hash_map::RandomState::new();
        use std::hash::BuildHasher;
        (r.hash_one(crate::hub::now_ms()) >> 11).max(1)
    }

    /// Runs the Redis run-id check and the pub/sub probe for as long as the
    /// engine lives (the hub drives the presence refresh).
    async fn housekeeping(self: Arc<Self>) {
        let every = (self.opts.presence_ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
        loop {
            tick.tick().await;
            if self.link.watch().await && !self.link.is_cluster() {
                // Another master (Sentinel): the pub/sub loop reconnects.
                self.reconnect.notify_one();
            }
            if self.link.is_cluster() {
                self.retry_subscriptions().await;
            }
            if self.check_run_id().await.is_err() {
                continue;
            }
            self.probe().await;
            self.enforce_history_budget().await;
        }
    }
}

/// Writes a channel name as a hash tag: `{name}`, so that Redis hashes
/// the name alone and all of a channel's keys land in one Cluster slot. A
/// name that is empty, holds a `}` or starts with `%` would not survive as
/// a tag (Redis ends the tag at the first `}`, and an empty tag hashes the
/// whole key), so it is written `{%HEX}` (its bytes in hex) instead: the
/// mapping stays one-to-one.
fn tag(name: &[u8], out: &mut Vec<u8>) {
    out.push(b'{');
    if name.is_empty() || name[0] == b'%' || name.contains(&b'}') {
        out.push(b'%');
        for b in name {
            out.extend_from_slice(format!("{b:02x}").as_bytes());
        }
    } else {
        out.extend_from_slice(name);
    }
    out.push(b'}');
}

/// The name a [`tag`] was written from.
fn untag(t: &[u8]) -> Option<Vec<u8>> {
    let inner = t.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let Some(hex) = inner.strip_prefix(b"%") else {
        return Some(inner.to_vec());
    };
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// Starts the engine's background work (pub/sub and housekeeping) once the
/// hub is built, and waits (up to `wait`) for the pub/sub connection, so
/// the first subscribers find it.
pub async fn spawn_background(engine: &Arc<RedisEngine>, wait: Duration) {
    if engine.link.is_cluster() {
        tokio::spawn(engine.clone().cluster_loop());
        // Its own loop, so a slow housekeeping round (a dead shard's
        // timeouts) never delays it past `cluster::PATTERN_SETTLE`.
        let e = engine.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cluster::PATTERN_SYNC);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                e.sync_patterns().await;
            }
        });
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                e.retry_soon.notified().await;
                e.retry_subscriptions().await;
            }
        });
    } else {
        tokio::spawn(engine.clone().pubsub_loop());
    }
    if engine.link.is_sentinel() {
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                e.link.nudged().await;
                if e.link.watch().await {
                    e.reconnect.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                e.link.failover_announced().await;
                if e.link.watch().await {
                    e.reconnect.notify_one();
                }
            }
        });
    }
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

/// Herald's key of `kind` for `name`: `{prefix}:{kind}:{TAG}` (see [`tag`]).
fn key_of(prefix: &str, kind: &str, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + kind.len() + 2 * name.len() + 5);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b':');
    k.extend_from_slice(kind.as_bytes());
    k.push(b':');
    tag(name, &mut k);
    k
}

/// `{prefix}:{kind}:{name}`: a classic pub/sub channel (or pattern).
fn plain_of(prefix: &str, kind: &str, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + kind.len() + name.len() + 2);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b':');
    k.extend_from_slice(kind.as_bytes());
    k.push(b':');
    k.extend_from_slice(name);
    k
}

/// One history publish as this engine sends it to a standalone Redis:
/// `SCRIPT LOAD`'s argument and the `EVALSHA` arguments after the digest,
/// for `herald-bench engine`, which runs the same script straight against
/// Redis beside Herald. `run` stands for the Redis run id (any constant
/// keeps one epoch).
pub fn history_publish_command(
    prefix: &str,
    channel: &[u8],
    payload: &[u8],
    size: u64,
    run: &str,
) -> (&'static str, Vec<Vec<u8>>) {
    let args = vec![
        b"2".to_vec(),
        key_of(prefix, "history", channel),
        key_of(prefix, "meta", channel),
        payload.to_vec(),
        size.to_string().into_bytes(),
        b"0".to_vec(),
        RedisEngine::new_epoch().to_string().into_bytes(),
        run.as_bytes().to_vec(),
        plain_of(prefix, "ch", channel),
        b"PUBLISH".to_vec(),
        Vec::new(),
    ];
    (pubsub::PUBLISH_SCRIPT, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_share_a_slot() {
        for name in [
            &b"news"[..],
            b"",
            b"}",
            b"a}b",
            b"{x}",
            b"%41",
            b"%",
            b"chat:1",
            b"{",
        ] {
            let mut t = Vec::new();
            tag(name, &mut t);
            assert_eq!(untag(&t).as_deref(), Some(name), "{t:?}");
            let mut a = b"herald:history:".to_vec();
            tag(name, &mut a);
            let mut b = b"herald:presence-users:".to_vec();
            tag(name, &mut b);
            assert_eq!(link::slot(&a), link::slot(&b), "{name:?}");
            assert_eq!(link::slot(&a), link::slot(&t));
        }
        let mut t = Vec::new();
        tag(b"news", &mut t);
        assert_eq!(t, b"{news}");
        // Distinct names, distinct tags.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        tag(b"}", &mut a);
        tag(b"%7d", &mut b);
        assert_ne!(a, b);
        assert_eq!(untag(b"{%zz}"), None);
        assert_eq!(untag(b"{%a}"), None);
    }
}
