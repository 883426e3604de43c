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
//!   refreshes its own every third of `--presence-ttl` (the hub calls
//!   `PresenceStore::refresh`), and entries past
//!   their expiry (a node that died) are removed, with their leave pushed.
//! - **Leaderboards** are read from sorted sets in Redis
//!   (`leaderboards.rs`): each node re-reads the boards its clients follow
//!   on every tick.

mod control;
mod history;
mod leaderboards;
mod presence;
mod pubsub;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, PubSubSink};

use super::{BrokerHandler, EngineError};
use crate::hub::ClientId;

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

/// How long a command waits for Redis's answer: long enough to ride out a
/// short stall (a `CLIENT PAUSE`, a fork on a large dataset) rather than
/// turn it into "outcome unknown" errors.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Presence entries this node holds: channel → clients (refreshed,
    /// and put back when another node expired them meanwhile).
    joined: Mutex<HashMap<Bytes, HashMap<ClientId, crate::hub::presence::PresenceEntry>>>,
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
    /// Heartbeats and surveys between nodes (control.rs).
    control: control::Control,
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
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
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
            publish: redis::Script::new(pubsub::PUBLISH_SCRIPT),
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

    fn key(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        key_of(&self.opts.prefix, kind, name)
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

    /// A failed write: unknown when it was sent and no answer came in
    /// time (Redis may still run it); refused otherwise (no connection, the
    /// write itself failed, or Redis answered with an error). A write in
    /// flight at the very moment the connection broke is reported refused
    /// too, though Redis may have run it just before (docs/engine.md).
    fn failed_write(&self, e: redis::RedisError) -> EngineError {
        self.healthy.store(false, Ordering::Relaxed);
        if e.is_timeout() {
            EngineError::Unknown(e.to_string())
        } else {
            unavailable(e)
        }
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
            if self.check_run_id().await.is_err() {
                continue;
            }
            self.probe().await;
        }
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

/// Herald's key (or pub/sub channel) of `kind` for `name`.
fn key_of(prefix: &str, kind: &str, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + kind.len() + name.len() + 2);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b':');
    k.extend_from_slice(kind.as_bytes());
    k.push(b':');
    k.extend_from_slice(name);
    k
}

/// One history publish as this engine sends it to Redis: `SCRIPT LOAD`'s
/// argument and the `EVALSHA` arguments after the digest, for `herald-bench
/// engine`, which runs the same script straight against Redis beside
/// Herald. `run` stands for the Redis run id (any constant keeps one
/// epoch).
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
        key_of(prefix, "ch", channel),
    ];
    (pubsub::PUBLISH_SCRIPT, args)
}
