//! How a node reaches Redis, whatever the topology: one `redis://` server,
//! the master that Sentinel names (`redis+sentinel://`), or a Redis Cluster
//! (`redis+cluster://`). The rest of the engine asks the link for
//!
//! - [`Link::shared`]: the command connection every engine call shares
//!   (cheap to clone; on Cluster it routes each command by its key's slot);
//! - [`Link::dedicated`]: a connection of its own, for blocking reads and
//!   transactions (on Cluster, to the master that owns the given key);
//! - the pub/sub side: [`Link::pubsub`] (a `redis::aio::PubSub` to the one
//!   master) or, on Cluster, [`Link::cluster_pubsub`] (a RESP3 cluster
//!   connection whose pushes go to a channel: sharded pub/sub).
//!
//! On Sentinel the link follows the master: [`Link::watch`] asks the
//! sentinels (every second, at once when a sentinel announces a failover,
//! and after a failed call: [`Link::nudge`]) and, when they name another
//! master, replaces the shared connection, refuses publishes for a moment
//! ([`Link::fenced`]) and bumps [`Link::generation`], which tells the
//! pub/sub loop to reconnect.
//!
//! For code forwarding data commands: send through `link.shared()`
//! (`req_packed_command`; on Cluster a command routes by its first key, so
//! check `CROSSSLOT` first), and keep `WATCH`/`MULTI` and blocking reads on
//! `link.dedicated(Some(first_key))`. A dedicated connection stays on the
//! master it was opened to: after a slot move it answers `-MOVED`, after a
//! Sentinel failover `-READONLY` or a closed connection; open another.
//!
//! With TLS (`rediss://`, `rediss+sentinel://`, `rediss+cluster://`;
//! `tls.rs`) every connection the link opens speaks it, to the sentinels
//! and every cluster node too: clients are made by [`tls::open`] and
//! [`Link::cluster_builder`] only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value};

use super::tls::{self, TlsFiles};
use super::unavailable;
use crate::hub::engine::EngineError;

/// How long a connect may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// How long a command waits for Redis's answer: long enough to ride out a
/// short stall (a `CLIENT PAUSE`, a fork on a large dataset) rather than
/// turn it into "outcome unknown" errors.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long publishes are refused after a Sentinel master switch: nodes
/// look for a new master every second (and at once on the sentinels'
/// `+promoted-slave`), so by then all of them listen on the new one.
const SWITCH_FENCE: Duration = Duration::from_millis(1200);

/// The command connection all engine calls share. Implements
/// `redis::aio::ConnectionLike`, so `query_async(&mut link.shared())` and
/// `script.invoke_async(&mut link.shared())` work in every topology.
#[derive(Clone)]
pub enum Shared {
    /// Standalone or Sentinel's current master (reconnects by itself).
    Single(ConnectionManager),
    /// Redis Cluster: routes by slot, follows `MOVED`/`ASK`.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Shared::Single(c) => c.req_packed_command(cmd),
            Shared::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Shared::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Shared::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Shared::Single(c) => c.get_db(),
            Shared::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the masters are.
enum Topology {
    Standalone,
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        password: Option<String>,
    },
    Cluster {
        nodes: Vec<String>,
        password: Option<String>,
    },
}

/// One node's way to Redis. See the module documentation.
pub struct Link {
    topology: Topology,
    /// The shared command connection (replaced after a Sentinel failover).
    shared: Mutex<Shared>,
    /// The client of the one master (standalone, Sentinel); `None` on
    /// Cluster.
    client: Mutex<Option<redis::Client>>,
    /// The master's `host:port` (standalone, Sentinel).
    master: Mutex<String>,
    /// Bumped whenever the master changes.
    generation: AtomicU64,
    /// Cluster: slot ranges and the master serving each, from the last
    /// `CLUSTER SLOTS`.
    slots: Mutex<Vec<(u16, u16, String)>>,
    /// Until when publishes are refused after a master switch, so that
    /// every node's pub/sub is on the new master before anything is
    /// published there (no publish acknowledged by the new master while
    /// another node still listens on the old one).
    fence: Mutex<Option<std::time::Instant>>,
    /// Asks for a look at the sentinels now (an engine call failed: the
    /// master may be gone or demoted).
    nudge: tokio::sync::Notify,
    /// Serialises Sentinel lookups.
    watching: tokio::sync::Mutex<()>,
    /// The shared command connection speaking RESP3 (data commands of
    /// RESP3 clients), with the master generation it was made for.
    shared3: tokio::sync::Mutex<Option<(u64, Shared)>>,
    /// TLS certificates: every connection speaks TLS; `None`: plain TCP.
    tls: Option<TlsCertificates>,
}

/// `redis[s]://[:password@]addr`, for one server at `addr` (`host:port`):
/// a Cluster node, a sentinel, Sentinel's master.
fn node_url(addr: &str, password: Option<&str>, tls: Option<&TlsCertificates>) -> String {
    let auth = password
        .map(|p| format!(":{}@", urlencode(p)))
        .unwrap_or_default();
    format!("{}://{auth}{addr}", tls::scheme(tls))
}

/// A client of one server at `addr` (`host:port`).
fn node_client(
    addr: &str,
    password: Option<&str>,
    tls: Option<&TlsCertificates>,
) -> RedisResult<redis::Client> {
    tls::open(&node_url(addr, password, tls), tls)
}

/// `client` speaking RESP3.
fn resp3_client(client: &redis::Client) -> RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// The parts of `redis+sentinel://[password@]host:port[,host:port…]/NAME`.
fn parse_sentinel(url: &str) -> Result<(Vec<String>, String, Option<String>), EngineError> {
    let bad = || {
        EngineError::Unavailable(
            "--engine redis+sentinel:// needs [password@]host:port[,host:port…]/MASTER_NAME".into(),
        )
    };
    let rest = url.strip_prefix("redis+sentinel://").ok_or_else(bad)?;
    let (hosts, name) = rest.split_once('/').ok_or_else(bad)?;
    let (password, hosts) = match hosts.rsplit_once('@') {
        Some((p, h)) => (Some(p.to_string()).filter(|p| !p.is_empty()), h),
        None => (None, hosts),
    };
    let name = name.trim_end_matches('/');
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if sentinels.is_empty() || name.is_empty() || name.contains(['/', '?', '#']) {
        return Err(bad());
    }
    Ok((sentinels, name.to_string(), password))
}

/// The node URLs of `redis+cluster://[password@]host:port[,host:port…]`
/// (`rediss://` ones when `tls`), and the password.
fn parse_cluster(
    url: &str,
    tls: Option<&TlsCertificates>,
) -> Result<(Vec<String>, Option<String>), EngineError> {
    let rest = url.strip_prefix("redis+cluster://").unwrap_or_default();
    let rest = rest.trim_end_matches('/');
    let (password, hosts) = match rest.rsplit_once('@') {
        Some((p, h)) => (Some(p.to_string()).filter(|p| !p.is_empty()), h),
        None => (None, rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| node_url(h, password.as_deref(), tls))
        .collect();
    if nodes.is_empty() || hosts.contains(['/', '?', '#']) {
        return Err(EngineError::Unavailable(
            "--engine redis+cluster:// needs [password@]host:port[,host:port…]".into(),
        ));
    }
    Ok((nodes, password))
}

async fn manager(client: &redis::Client) -> RedisResult<ConnectionManager> {
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1);
    client.get_connection_manager_with_config(cfg).await
}

fn addr_of(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

impl Link {
    /// Connects to the URL's topology (failing fast when unreachable),
    /// over TLS when the URL's scheme says so (`tls.rs`).
    pub async fn connect(url: &str, files: &TlsFiles) -> Result<Link, EngineError> {
        let tls = tls::certificates(url, files)?;
        let plain = tls::plain(url);
        if plain.starts_with("redis+sentinel://") {
            let (sentinels, master, password) = parse_sentinel(&plain)?;
            let topology = Topology::Sentinel {
                sentinels,
                master,
                password,
            };
            let client = Self::discover(&topology, tls.as_ref(), "")
                .await?
                .ok_or_else(|| unavailable("no master"))?;
            let conn = manager(&client).await.map_err(unavailable)?;
            return Ok(Link::new(topology, Shared::Single(conn), Some(client), tls));
        }
        if plain.starts_with("redis+cluster://") {
            let (nodes, password) = parse_cluster(&plain, tls.as_ref())?;
            let client = Self::cluster_builder(&nodes, tls.as_ref())
                .build()
                .map_err(unavailable)?;
            let conn = tokio::time::timeout(TIMEOUT * 2, client.get_async_connection())
                .await
                .map_err(|_| unavailable("timed out connecting to the cluster"))?
                .map_err(unavailable)?;
            let link = Link::new(
                Topology::Cluster { nodes, password },
                Shared::Cluster(conn),
                None,
                tls,
            );
            link.refresh_slots().await?;
            return Ok(link);
        }
        let client = tls::open(url, tls.as_ref()).map_err(unavailable)?;
        let conn = manager(&client).await.map_err(unavailable)?;
        Ok(Link::new(
            Topology::Standalone,
            Shared::Single(conn),
            Some(client),
            tls,
        ))
    }

    fn new(
        topology: Topology,
        shared: Shared,
        client: Option<redis::Client>,
        tls: Option<TlsCertificates>,
    ) -> Link {
        Link {
            topology,
            shared: Mutex::new(shared),
            master: Mutex::new(client.as_ref().map(addr_of).unwrap_or_default()),
            client: Mutex::new(client),
            generation: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            fence: Mutex::new(None),
            nudge: tokio::sync::Notify::new(),
            watching: tokio::sync::Mutex::new(()),
            shared3: tokio::sync::Mutex::new(None),
            tls,
        }
    }

    /// A Cluster client of `nodes` (`rediss://` ones with `tls`'s
    /// certificates: the nodes found in the slot map get TLS too).
    fn cluster_builder(
        nodes: &[String],
        tls: Option<&TlsCertificates>,
    ) -> redis::cluster::ClusterClientBuilder {
        let b = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .overall_response_timeout(Some(RESPONSE_TIMEOUT + TIMEOUT))
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(400);
        match tls {
            Some(certs) => b.certs(certs.clone()),
            None => b,
        }
    }

    /// Whether this is a Redis Cluster (sharded pub/sub, per-master run ids).
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// Whether the master is found through Sentinel.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.topology, Topology::Sentinel { .. })
    }

    /// The shared command connection.
    pub fn shared(&self) -> Shared {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The shared command connection speaking RESP3 (for RESP3 clients'
    /// data commands, so Redis shapes their replies), made on first use
    /// and again after the master changed.
    pub async fn shared3(&self) -> RedisResult<Shared> {
        let generation = self.generation();
        let mut cached = self.shared3.lock().await;
        if let Some((g, s)) = cached.as_ref() {
            if *g == generation {
                return Ok(s.clone());
            }
        }
        let conn = match &self.topology {
            Topology::Cluster { nodes, .. } => {
                let client = Self::cluster_builder(nodes, self.tls.as_ref())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .build()?;
                let c = tokio::time::timeout(TIMEOUT * 2, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Io, "cluster connect timed out"))
                    })??;
                Shared::Cluster(c)
            }
            _ => {
                let client = self.client().ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no master known"))
                })?;
                Shared::Single(manager(&resp3_client(&client)?).await?)
            }
        };
        *cached = Some((generation, conn.clone()));
        Ok(conn)
    }

    /// A connection of its own (no response timeout: blocking reads and
    /// `WATCH`/`MULTI` may use it), to the one master, or on Cluster to the
    /// master owning `key`'s slot (any master without a key).
    pub async fn dedicated(&self, key: Option<&[u8]>) -> RedisResult<MultiplexedConnection> {
        self.dedicated_in(key, false).await
    }

    /// [`Link::dedicated`], speaking RESP3 when `resp3`.
    pub async fn dedicated_in(
        &self,
        key: Option<&[u8]>,
        resp3: bool,
    ) -> RedisResult<MultiplexedConnection> {
        let client = match &self.topology {
            Topology::Cluster { password, .. } => {
                let addr = match key {
                    Some(k) => self.master_for_slot(slot(k)),
                    None => self.masters().into_iter().next(),
                };
                let addr = addr.ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no master serves this key's slot",
                    ))
                })?;
                node_client(&addr, password.as_deref(), self.tls.as_ref())?
            }
            _ => self.client().ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no master known"))
            })?,
        };
        let client = if resp3 {
            resp3_client(&client)?
        } else {
            client
        };
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// The one master's client (standalone, Sentinel).
    pub fn client(&self) -> Option<redis::Client> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A pub/sub connection to the one master (standalone, Sentinel).
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let client = self
            .client()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no master known")))?;
        tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))
            })?
    }

    /// A classic pub/sub connection to some master: the one master, or on
    /// Cluster any master (classic pub/sub reaches every node there).
    pub async fn any_pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let Topology::Cluster { password, .. } = &self.topology else {
            return self.pubsub().await;
        };
        let addr =
            self.masters().into_iter().next().ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no master known"))
            })?;
        let client = node_client(&addr, password.as_deref(), self.tls.as_ref())?;
        tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))
            })?
    }

    /// A RESP3 cluster connection for sharded pub/sub: its pushes (messages,
    /// and `sunsubscribe` when a slot moves away) go to `pushes`.
    pub async fn cluster_pubsub(
        &self,
        pushes: impl redis::aio::AsyncPushSender,
    ) -> RedisResult<ClusterConnection> {
        let Topology::Cluster { nodes, .. } = &self.topology else {
            return Err((redis::ErrorKind::Client, "not a cluster").into());
        };
        let client = Self::cluster_builder(nodes, self.tls.as_ref())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?;
        tokio::time::timeout(TIMEOUT * 2, client.get_async_connection())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "cluster connect timed out"))
            })?
    }

    /// After a failed call on Sentinel (a connection error, `-READONLY`
    /// from a demoted master): look for the master now.
    pub fn nudge(&self) {
        if self.is_sentinel() {
            self.nudge.notify_one();
        }
    }

    /// Waits for a [`Link::nudge`].
    pub async fn nudged(&self) {
        self.nudge.notified().await
    }

    /// Refuses while the master is switching (see `fence`).
    pub fn fenced(&self) -> Result<(), EngineError> {
        match *self.fence.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(t) if std::time::Instant::now() < t => Err(EngineError::Unavailable(
                "Redis master switching (Sentinel failover); try again".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Bumped whenever the master changed (the pub/sub loop reconnects).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Follows the topology: on Sentinel, asks the sentinels for the master
    /// and switches to it when it changed; on Cluster, reloads the slot map.
    /// Returns whether something changed.
    pub async fn watch(&self) -> bool {
        match &self.topology {
            Topology::Standalone => false,
            Topology::Cluster { .. } => {
                let before = self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let _ = self.refresh_slots().await;
                *self.slots.lock().unwrap_or_else(|e| e.into_inner()) != before
            }
            Topology::Sentinel { .. } => {
                let _guard = self.watching.lock().await;
                let known = self.master();
                let Ok(Some(client)) =
                    Self::discover(&self.topology, self.tls.as_ref(), &known).await
                else {
                    return false;
                };
                let addr = addr_of(&client);
                let Ok(conn) = manager(&client).await else {
                    return false;
                };
                tracing::warn!(master = %addr, "engine: Sentinel names a new master; switching");
                *self.fence.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::time::Instant::now() + SWITCH_FENCE);
                *self.master.lock().unwrap_or_else(|e| e.into_inner()) = addr;
                *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
                *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Shared::Single(conn);
                self.generation.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Waits for a sentinel to announce a failover (`+promoted-slave`,
    /// `+switch-master`), so that every node switches at once rather than
    /// at its next look. Returns when one was seen, or when no sentinel
    /// can be followed (the caller waits a little and calls again).
    pub async fn failover_announced(&self) {
        use futures_util::StreamExt;
        let Topology::Sentinel { sentinels, .. } = &self.topology else {
            return std::future::pending().await;
        };
        for s in sentinels {
            let Ok(client) = node_client(s, None, self.tls.as_ref()) else {
                continue;
            };
            let Ok(Ok(mut ps)) = tokio::time::timeout(TIMEOUT, client.get_async_pubsub()).await
            else {
                continue;
            };
            if ps
                .subscribe(&["+promoted-slave", "+switch-master"])
                .await
                .is_err()
            {
                continue;
            }
            let mut stream = ps.into_on_message();
            if stream.next().await.is_some() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// Asks each sentinel in turn for the master, and checks that it says
    /// it is one (`ROLE`): a demoted master is not taken.
    /// `None` when the sentinel names the `known` master again.
    async fn discover(
        topology: &Topology,
        tls: Option<&TlsCertificates>,
        known: &str,
    ) -> Result<Option<redis::Client>, EngineError> {
        let Topology::Sentinel {
            sentinels,
            master,
            password,
        } = topology
        else {
            return Err(unavailable("not a Sentinel link"));
        };
        let mut last = String::from("no sentinel answered");
        for s in sentinels {
            match Self::ask_sentinel(s, master, password.as_deref(), tls, known).await {
                Ok(c) => return Ok(c),
                Err(e) => last = format!("sentinel {s}: {e}"),
            }
        }
        Err(unavailable(last))
    }

    async fn ask_sentinel(
        sentinel: &str,
        master: &str,
        password: Option<&str>,
        tls: Option<&TlsCertificates>,
        known: &str,
    ) -> RedisResult<Option<redis::Client>> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT / 2))
            .set_response_timeout(Some(TIMEOUT / 2));
        let s = node_client(sentinel, None, tls)?;
        let mut c = s.get_multiplexed_async_connection_with_config(&cfg).await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async(&mut c)
            .await?;
        let (host, port) = addr.ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "master name unknown"))
        })?;
        let client = node_client(&format!("{host}:{port}"), password, tls)?;
        if addr_of(&client) == known {
            // Unchanged: no need to ask the master again.
            return Ok(None);
        }
        let mut m = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut m).await?;
        match role.first() {
            Some(Value::BulkString(r)) if r == b"master" => Ok(Some(client)),
            _ => Err((
                redis::ErrorKind::Client,
                "named master is not a master (yet)",
            )
                .into()),
        }
    }

    /// Reloads the cluster's slot map (`CLUSTER SLOTS`).
    async fn refresh_slots(&self) -> Result<(), EngineError> {
        let rows: Vec<Vec<Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.shared())
            .await
            .map_err(unavailable)?;
        let mut slots = Vec::with_capacity(rows.len());
        for row in rows {
            let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(node))) =
                (row.first(), row.get(1), row.get(2))
            else {
                continue;
            };
            let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
                (node.first(), node.get(1))
            else {
                continue;
            };
            let host = String::from_utf8_lossy(host);
            slots.push((*a as u16, *b as u16, format!("{host}:{port}")));
        }
        slots.sort();
        *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = slots;
        Ok(())
    }

    /// The cluster's masters (`host:port`), as of the last slot map.
    pub fn masters(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.2.clone())
            .collect();
        m.sort();
        m.dedup();
        m
    }

    /// The master serving `slot`, as of the last slot map.
    pub fn master_for_slot(&self, slot: u16) -> Option<String> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.0 <= slot && slot <= s.1)
            .map(|s| s.2.clone())
    }

    /// The one master's `host:port` (empty on Cluster).
    pub fn master(&self) -> String {
        self.master
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `INFO server` on every master and returns each one's run id
    /// (`host:port` → id); the one master's under `""` when not a cluster.
    pub async fn run_ids(&self) -> Result<HashMap<String, String>, EngineError> {
        let mut out = HashMap::new();
        if !self.is_cluster() {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut self.shared())
                .await
                .map_err(unavailable)?;
            out.insert(String::new(), run_id_of(&info));
            return Ok(out);
        }
        let Shared::Cluster(mut c) = self.shared() else {
            return Ok(out);
        };
        for addr in self.masters() {
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse() else { continue };
            let route = redis::cluster_routing::RoutingInfo::SingleNode(
                redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                    host: host.to_string(),
                    port,
                },
            );
            let mut cmd = redis::cmd("INFO");
            cmd.arg("server");
            if let Ok(v) = c.route_command(cmd, route).await {
                if let Ok(info) = redis::from_redis_value::<String>(v) {
                    out.insert(addr, run_id_of(&info));
                }
            }
        }
        if out.is_empty() {
            return Err(unavailable("no cluster master answered"));
        }
        Ok(out)
    }
}

fn run_id_of(info: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Redis Cluster hash slot of a key: CRC16 (XMODEM) of its hash tag
/// (the part between the first `{` and the next `}`, when not empty), or
/// of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let mut k = key;
    if let Some(open) = key.iter().position(|b| *b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|b| *b == b'}') {
            if len > 0 {
                k = &key[open + 1..open + 1 + len];
            }
        }
    }
    crc16(k) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn urls_parse() {
        let (s, m, p) = parse_sentinel("redis+sentinel://pw@a:1,b:2/mymaster").unwrap();
        assert_eq!(s, vec!["a:1", "b:2"]);
        assert_eq!(m, "mymaster");
        assert_eq!(p.as_deref(), Some("pw"));
        let (_, _, p) = parse_sentinel("redis+sentinel://a:1/m").unwrap();
        assert_eq!(p, None);
        assert!(parse_sentinel("redis+sentinel://a:1").is_err());
        assert!(parse_sentinel("redis+sentinel:///m").is_err());
        assert_eq!(
            parse_cluster("redis+cluster://a:1,b:2", None).unwrap(),
            (
                vec!["redis://a:1".to_string(), "redis://b:2".to_string()],
                None
            )
        );
        assert_eq!(
            parse_cluster("redis+cluster://p@ss@a:1", None).unwrap(),
            (
                vec!["redis://:p%40ss@a:1".to_string()],
                Some("p@ss".to_string())
            )
        );
        assert!(parse_cluster("redis+cluster://", None).is_err());
        let tls = TlsCertificates {
            client_tls: None,
            root_cert: None,
        };
        assert_eq!(
            parse_cluster("redis+cluster://a:1", Some(&tls)).unwrap().0,
            vec!["rediss://a:1".to_string()]
        );
    }
}
