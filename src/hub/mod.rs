//! The core: channel registry, fan-out and counters. No sockets, no wire
//! formats beyond the encode cache the front ends fill.

mod cluster;
pub mod data;
pub mod engine;
mod gate;
pub mod glob;
pub mod hash;
pub mod keymap;
pub mod keyspace;
pub mod leaderboard;
pub mod list;
pub mod outbox;
pub mod payload;
pub mod presence;
pub mod publication;
mod publish;
pub mod registry;
pub mod stream;
mod subscribe;
pub mod tx;
pub mod zset;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

pub use cluster::{ClusterStats, ClusterView, NodeInfo, TooManyNames};
pub use gate::GateGuard;
pub use keyspace::{now_ms, Db, Keyspace};
pub use outbox::{Outbox, OutputLimits, Overflow};
pub use publication::{Delivery, DeliveryKind, Publication, Subscriber, WireFormat};
pub use registry::{ClientId, PatternQuota, Registry, Space};
pub use stream::{NewId, Stream, StreamId, Trim};
pub use subscribe::Ticket;

/// Counters every front end updates; read by INFO and exported by
/// `/metrics` (the counters are shared with the Prometheus registry).
#[derive(Default)]
pub struct Stats {
    pub published: Counter,
    pub delivered: Counter,
    pub connections_total: Counter,
    pub rejected_connections: Counter,
    pub slow_disconnects: Counter,
    pub auth_failures: Counter,
    pub commands: Counter,
}

impl Stats {
    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }
}

/// Why a history read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("history is not enabled for this channel's namespace")]
    NotEnabled,
    #[error("the channel's key holds another type")]
    WrongType,
    #[error("the position is no longer in the history (epoch changed or entries gone)")]
    Unrecoverable,
    #[error("the engine's history store is unavailable")]
    Unavailable,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// `(offset, payload)` in the order asked for.
    pub entries: Vec<(u64, Bytes)>,
    /// The newest offset of the stream.
    pub top: u64,
    pub epoch: u64,
}

/// A channel's history position, as a subscription sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPosition {
    /// The newest offset of the stream.
    pub top: u64,
    pub epoch: u64,
    /// Whether the position asked about can be recovered (`None`: none
    /// was asked about).
    pub recoverable: Option<bool>,
}

pub use engine::{EngineError, Position, Published};

/// Runs `f`, which may block this thread (waiting for a lock a long
/// command holds, or a long computation), without stalling the runtime: on
/// a multi-threaded tokio runtime the worker's other tasks move to another
/// thread first (`block_in_place`); elsewhere `f` just runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Takes a std lock without stalling the runtime: `try_lock` first, and
/// only when the lock is held, `lock` inside [`blocking`]. A poisoned lock
/// is taken anyway (its data stays consistent: no guard is held across a
/// panic point that could leave it half-written).
pub(crate) fn acquire<G>(
    try_lock: impl FnOnce() -> std::sync::TryLockResult<G>,
    lock: impl FnOnce() -> std::sync::LockResult<G>,
) -> G {
    match try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            blocking(|| lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

/// The hub all front ends share: one registry, one keyspace, one engine,
/// one id space, one set of counters. Front ends parse, authorize, call
/// the hub and encode; the hub owns a client's subscriptions, presence and
/// leaderboard watches from arrival to `leave_all`, and every publish path.
pub struct Hub {
    registry: Arc<Registry>,
    engine: engine::Engine,
    /// Where data commands run when not in this node's keyspace (the Redis
    /// engine); `None` in memory mode.
    remote: Option<Arc<dyn engine::RemoteKeyspace>>,
    /// The keyspace's own commands (sets, sorted sets, streams) go through
    /// `hub::data`.
    keyspace: Arc<Keyspace>,
    watchers: leaderboard::Leaderboards,
    /// Output pending across all connections and HTTP answers
    /// (`--output-buffer-global-limit`).
    output: Arc<outbox::OutputBudget>,
    /// Patterns held by clients without the password, all front ends
    /// together (`--max-untrusted-patterns`).
    untrusted_patterns: PatternQuota,
    /// What each client address has used of its limits, all front ends
    /// together (`crate::rate::Clients`).
    clients: crate::rate::Clients,
    /// Which names the engine carries to this node (`subscribe.rs`).
    interests: Arc<subscribe::Interests>,
    stats: Stats,
    cfg: HubConfig,
    next_client_id: AtomicU64,
    started: Instant,
    /// This node as the engine reports it (`Hub::start_cluster`).
    node: std::sync::OnceLock<Arc<dyn engine::NodeSource>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::with_config(HubConfig::default())
    }
}

/// What the hub needs to know of a channel: its namespace's rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelRules {
    /// Where the channel keeps history, its bounds.
    pub history: Option<engine::HistoryOptions>,
    /// Whether subscriptions enter the channel's presence.
    pub presence: bool,
    /// Whether arrivals and departures are pushed to subscribers.
    pub join_leave: bool,
}

/// Looks up a channel's rules.
pub type RulesFn = Arc<dyn Fn(&[u8]) -> ChannelRules + Send + Sync>;

/// The hub's own configuration: the server builds it from its options
/// (`Config::hub_config`), so the hub depends on no front-end settings.
#[derive(Clone)]
pub struct HubConfig {
    /// Memory all history may take (oldest entries go first past it).
    pub history_max_memory: usize,
    /// Output pending across all connections past which large replies are
    /// refused (0: no limit).
    pub output_buffer_global_limit: usize,
    /// One client address's share of it (0: none).
    pub output_buffer_client_limit: usize,
    /// Patterns clients without the password may hold, all together.
    pub max_untrusted_patterns: usize,
    /// Client addresses whose limits are kept apart (see
    /// `crate::rate::Clients`).
    pub client_addresses: usize,
    /// The rules of a channel (its namespace's).
    pub rules: RulesFn,
}

impl Default for HubConfig {
    /// No history, no presence, 256 MiB of history memory.
    fn default() -> Self {
        HubConfig {
            history_max_memory: 256 << 20,
            output_buffer_global_limit: 512 << 20,
            output_buffer_client_limit: 128 << 20,
            max_untrusted_patterns: 1000,
            client_addresses: crate::rate::MIN_ADDRESSES,
            rules: Arc::new(|_| ChannelRules::default()),
        }
    }
}

/// A subscription to enter: who, where, and (for an identified client on a
/// channel) its presence entry.
pub struct Subscription {
    pub space: Space,
    pub channel: Bytes,
    pub client: ClientId,
    pub sink: Arc<dyn Subscriber>,
    pub presence: Option<presence::PresenceEntry>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// A hub on the in-memory engine (the embedded default).
    pub fn with_config(cfg: HubConfig) -> Hub {
        let max = cfg.history_max_memory;
        Hub::with_engine(cfg, |keyspace| engine::memory::engine(keyspace, max))
    }

    /// A hub on the engine `build` makes over the node's keyspace.
    pub fn with_engine(cfg: HubConfig, build: impl FnOnce(Arc<Keyspace>) -> engine::Engine) -> Hub {
        let keyspace = Arc::new(Keyspace::default());
        let registry = Arc::new(Registry::new());
        let engine = build(keyspace.clone());
        engine.broker.start(registry.clone());
        let interests = subscribe::Interests::new(registry.clone(), engine.broker.clone());
        Hub {
            registry,
            engine,
            remote: None,
            keyspace,
            watchers: leaderboard::Leaderboards::default(),
            output: outbox::OutputBudget::new(cfg.output_buffer_global_limit),
            untrusted_patterns: PatternQuota::new(cfg.max_untrusted_patterns),
            clients: crate::rate::Clients::new(cfg.client_addresses),
            interests,
            stats: Stats::default(),
            cfg,
            next_client_id: AtomicU64::new(1),
            started: Instant::now(),
            node: std::sync::OnceLock::new(),
        }
    }

    /// Holds the transaction gate shared (a keyspace command, a history
    /// append); `None` when this thread already holds it.
    fn gate_shared(&self) -> Option<GateGuard<'_>> {
        self.keyspace.gate().shared()
    }

    /// Holds the transaction gate exclusively (EXEC); `None` when this
    /// thread already holds it.
    fn gate_exclusive(&self) -> Option<GateGuard<'_>> {
        self.keyspace.gate().exclusive()
    }

    /// The output budget all connections share.
    pub fn output(&self) -> &Arc<outbox::OutputBudget> {
        &self.output
    }

    /// The patterns clients without the password hold, all together.
    pub fn untrusted_patterns(&self) -> &PatternQuota {
        &self.untrusted_patterns
    }

    /// The limits' state of the client at `ip` (see `crate::rate::Clients`).
    pub fn client(&self, ip: std::net::IpAddr) -> Arc<crate::rate::Client> {
        self.clients.get(ip)
    }

    /// Counts one more open connection of `ip`, unless it has `max` open
    /// (see `crate::rate::Clients::open_session`).
    pub fn open_session(&self, ip: std::net::IpAddr, max: u32) -> Option<crate::rate::Session> {
        self.clients.open_session(ip, max)
    }

    /// Gives back a connection of `ip` whose count its holder kept.
    pub fn close_session(&self, ip: std::net::IpAddr) {
        self.clients.close_session(ip)
    }

    /// The output budget of connections of `client` without the
    /// password: its address's share of the global one.
    pub fn client_output(&self, client: &crate::rate::Client) -> Arc<outbox::OutputBudget> {
        client.output_budget(&self.output, self.cfg.output_buffer_client_limit)
    }

    /// Client addresses whose limits are kept now.
    pub fn client_addresses(&self) -> usize {
        self.clients.len()
    }

    /// Serves data commands from `remote` (an engine's store) instead of
    /// this node's keyspace.
    pub fn with_remote_keyspace(mut self, remote: Arc<dyn engine::RemoteKeyspace>) -> Hub {
        self.remote = Some(remote);
        self
    }

    /// The engine's store for data commands; `None` in memory mode, where
    /// this node's keyspace serves them.
    pub fn remote_keyspace(&self) -> Option<&Arc<dyn engine::RemoteKeyspace>> {
        self.remote.as_ref()
    }

    /// This node's receivers of a publish on `channel` (a shard channel
    /// when `shard`), as PUBLISH answers them.
    pub fn local_receivers(&self, channel: &[u8], shard: bool) -> usize {
        if shard {
            self.registry.numsub(Space::Shard, channel)
        } else {
            self.registry.receivers(channel)
        }
    }

    /// Whether the engine can publish and deliver right now.
    pub fn engine_healthy(&self) -> bool {
        self.engine.broker.healthy()
    }

    /// The counters every front end updates.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Time since the hub was built.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// A fresh client id, unique across front ends.
    pub fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        Stats::add(&self.stats.published, 1);
        Stats::add(&self.stats.delivered, n as u64);
    }

    /// The rules of `channel` (its namespace's).
    pub fn rules(&self, channel: &[u8]) -> ChannelRules {
        (self.cfg.rules)(channel)
    }

    /// The memory all history may take.
    pub fn history_max_memory(&self) -> usize {
        self.cfg.history_max_memory
    }

    /// The history bounds of `channel`'s namespace; `None` without history.
    fn history_options(&self, channel: &[u8]) -> Option<engine::HistoryOptions> {
        self.rules(channel).history
    }

    // ---- presence ----------------------------------------------------------

    /// Enters a subscription into the channel's presence where its
    /// namespace tracks presence; announces the user's arrival (first
    /// connection) where it pushes join/leave.
    pub fn presence_join(&self, channel: &Bytes, entry: presence::PresenceEntry) {
        let ns = self.rules(channel);
        if !ns.presence {
            return;
        }
        let event = presence::PresenceEvent {
            kind: presence::PresenceEventKind::Join,
            user: entry.user.clone(),
            client: entry.client,
            info: entry.info.clone(),
        };
        match self.engine.presence.join(channel, entry).wait() {
            Ok(true) if ns.join_leave => self.presence_event(channel, event),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "engine presence join failed"),
        }
    }

    /// Removes a subscription from the channel's presence; announces the
    /// user's departure when it was their last connection.
    fn presence_leave(&self, channel: &[u8], client: ClientId) {
        let ns = self.rules(channel);
        if !ns.presence {
            return;
        }
        match self.engine.presence.leave(channel, client).wait() {
            Ok(Some((entry, true))) if ns.join_leave => self.presence_event(
                channel,
                presence::PresenceEvent {
                    kind: presence::PresenceEventKind::Leave,
                    user: entry.user,
                    client,
                    info: entry.info,
                },
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "engine presence leave failed"),
        }
    }

    /// Pushes a `join`/`leave` to the channel's subscribers that follow
    /// presence (WebSocket), and publishes it as JSON on `__presence__:C`
    /// for RESP subscribers.
    fn presence_event(&self, channel: &[u8], event: presence::PresenceEvent) {
        let json = Bytes::from(event.json());
        let channel = Bytes::copy_from_slice(channel);
        if let Err(e) = self
            .engine
            .broker
            .publish_presence(channel.clone(), event)
            .wait()
        {
            tracing::warn!(error = %e, "engine presence event failed");
        }
        let mut key = presence::PRESENCE_PREFIX.to_vec();
        key.extend_from_slice(&channel);
        if let Err(e) = self.publish(Bytes::from(key), json) {
            tracing::warn!(error = %e, "engine presence publish failed");
        }
    }

    /// A channel's presence: every client, oldest first.
    pub fn presence_clients(
        &self,
        channel: &[u8],
    ) -> Result<Vec<presence::PresenceEntry>, EngineError> {
        self.presence_clients_pending(channel).wait()
    }

    /// [`Hub::presence_clients`], for a caller that awaits (nothing parks
    /// a thread while a remote engine answers).
    pub fn presence_clients_pending(
        &self,
        channel: &[u8],
    ) -> engine::Pending<'_, Result<Vec<presence::PresenceEntry>, EngineError>> {
        self.engine.presence.clients(channel)
    }

    /// A channel's distinct users, sorted.
    pub fn presence_users(&self, channel: &[u8]) -> Result<Vec<String>, EngineError> {
        self.presence_users_pending(channel).wait()
    }

    /// [`Hub::presence_users`], for a caller that awaits.
    pub fn presence_users_pending(
        &self,
        channel: &[u8],
    ) -> engine::Pending<'_, Result<Vec<String>, EngineError>> {
        self.engine.presence.users(channel)
    }

    /// A channel's (clients, distinct users).
    pub fn presence_stats(&self, channel: &[u8]) -> Result<(usize, usize), EngineError> {
        self.presence_stats_pending(channel).wait()
    }

    /// [`Hub::presence_stats`], for a caller that awaits.
    pub fn presence_stats_pending(
        &self,
        channel: &[u8],
    ) -> engine::Pending<'_, Result<(usize, usize), EngineError>> {
        self.engine.presence.stats(channel)
    }

    /// Keeps this node's presence entries alive, at the store's own cadence
    /// ([`engine::PresenceStore::refresh_every`]), until `stop` resolves.
    /// Returns at once for a store whose entries never expire.
    pub async fn presence_refreshes(&self, stop: impl std::future::Future<Output = ()>) {
        let Some(every) = self.engine.presence.refresh_every() else {
            return;
        };
        let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    if let Err(e) = self.engine.presence.refresh().await {
                        tracing::warn!(error = %e, "presence refresh failed");
                    }
                }
            }
        }
    }

    // ---- history -----------------------------------------------------------

    /// Reserves the history position of `channel` for a subscription and
    /// runs `f` with it and, when `since` (offset, epoch) is given, whether
    /// it is recoverable: same epoch, not in the future, at most `cap`
    /// publications behind, and every publication after it still kept. No
    /// publish to the channel is delivered on this node between the check
    /// and `f` (which registers the subscription); `f` must be short and
    /// must not call into the hub's keyspace.
    pub fn with_history_position<R>(
        &self,
        channel: &[u8],
        since: Option<(u64, u64)>,
        cap: usize,
        f: impl FnOnce(HistoryPosition) -> R + Send,
    ) -> Result<R, HistoryError>
    where
        R: Send,
    {
        let opts = self
            .history_options(channel)
            .ok_or(HistoryError::NotEnabled)?;
        let since = since.map(|(offset, epoch)| Position { offset, epoch });
        let mut f = Some(f);
        let mut out = None;
        let mut then = |at: HistoryPosition| {
            if let Some(f) = f.take() {
                out = Some(f(at));
            }
        };
        self.engine
            .history
            .position_then(channel, opts, since, cap, &mut then)
            .wait()?;
        out.ok_or(HistoryError::Unrecoverable)
    }

    /// One step of a replay: the publications of `channel` after offset
    /// `after`, at most `max_entries` and (past the first) `max_bytes` of
    /// payload, if the history still has epoch `epoch` and keeps every one
    /// of them; `Err(Unrecoverable)` otherwise. Encoding them is the
    /// caller's, outside any lock, so a large replay taken step by step
    /// never makes other clients wait long.
    ///
    /// When the step reaches the newest entry, `at_end(top)` runs before
    /// any later publication of the channel is delivered on this node (the
    /// caller switches its subscriber from replay to live there).
    pub fn history_chunk(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
        max_bytes: usize,
        mut at_end: impl FnMut(u64) + Send,
    ) -> Result<Vec<(u64, Bytes)>, HistoryError> {
        self.engine
            .history
            .chunk(channel, after, epoch, max_entries, max_bytes, &mut at_end)
            .wait()
    }

    /// The payload bytes of up to `max_entries` publications of `channel`
    /// after offset `after`, and the last offset counted, if the history
    /// still has epoch `epoch` and keeps every one of them (sizing a replay
    /// before it starts, without copying anything).
    pub fn history_bytes(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
    ) -> Result<(usize, u64), HistoryError> {
        self.engine
            .history
            .size(channel, after, epoch, max_entries)
            .wait()
    }

    /// A page of a channel's history: entries after `since` (when given,
    /// which must still be recoverable), at most `limit`, newest first when
    /// `reverse`.
    pub fn history(
        &self,
        channel: &[u8],
        since: Option<(u64, u64)>,
        limit: usize,
        reverse: bool,
    ) -> Result<HistoryPage, HistoryError> {
        self.history_pending(channel, since, limit, reverse).wait()
    }

    /// [`Hub::history`], for a caller that awaits.
    pub fn history_pending(
        &self,
        channel: &[u8],
        since: Option<(u64, u64)>,
        limit: usize,
        reverse: bool,
    ) -> engine::Pending<'_, Result<HistoryPage, HistoryError>> {
        let Some(opts) = self.history_options(channel) else {
            return engine::Pending::ready(Err(HistoryError::NotEnabled));
        };
        let since = since.map(|(offset, epoch)| Position { offset, epoch });
        self.engine
            .history
            .read(channel, opts, since, limit, reverse)
    }

    // ---- leaderboards ------------------------------------------------------

    /// The top `n` of the sorted set at `key`, best first, and a user's own
    /// rank (0 = best) and score.
    pub fn leaderboard_top(
        &self,
        key: &[u8],
        n: usize,
        user: Option<&str>,
    ) -> (Vec<leaderboard::Entry>, leaderboard::Own) {
        self.engine.leaderboards.top(key, n, user).wait()
    }

    /// Starts pushing the top `top` of `key` to `sink` (its first view goes
    /// at the next tick).
    pub fn leaderboard_watch(
        &self,
        key: Bytes,
        client: ClientId,
        sink: Arc<dyn leaderboard::LeaderboardSink>,
        top: usize,
        user: Option<String>,
        first: Vec<leaderboard::Entry>,
    ) {
        self.watchers
            .watch(key.clone(), client, sink, top, user, first);
        self.watchers.mark(&key);
    }

    /// Stops pushing `key` to `client`; false when it did not watch it.
    pub fn leaderboard_unwatch(&self, key: &[u8], client: ClientId) -> bool {
        self.watchers.unwatch(key, client)
    }

    /// One leaderboard tick: for every sorted set changed since the last
    /// tick, pushes the new top N to watchers whose view changed, and
    /// publishes the top `resp_top` on `__leaderboard__:K` when it changed.
    pub fn leaderboard_tick(&self, resp_top: usize) {
        for key in self.engine.leaderboards.take_changed() {
            self.watchers.mark(&key);
        }
        let polled = self.engine.leaderboards.polled();
        if polled {
            let prefix = leaderboard::leaderboard_channel(b"").len();
            let mut followed = self.watchers.watched();
            followed.extend(
                self.registry
                    .channels(Space::Global, Some(b"__leaderboard__:*"))
                    .into_iter()
                    .map(|c| c.slice(prefix..)),
            );
            self.watchers.mark_polled(followed);
        }
        for (key, watch_top) in self.watchers.take_dirty() {
            let channel = leaderboard::leaderboard_channel(&key);
            let resp_listeners =
                self.registry.numsub(Space::Global, &channel) > 0 || self.registry.numpat() > 0;
            let n = watch_top.max(if resp_listeners { resp_top } else { 0 });
            if n == 0 {
                continue;
            }
            let (entries, _) = self.leaderboard_top(&key, n, None);
            if polled {
                self.watchers.note_read(&key, !entries.is_empty());
            }
            if watch_top > 0 {
                self.watchers.deliver(&key, &entries, |user| {
                    self.leaderboard_top(&key, 0, Some(user)).1
                });
            }
            let resp_view = &entries[..resp_top.min(entries.len())];
            if resp_listeners && self.watchers.changed_for_resp(&key, resp_view) {
                let json = serde_json::json!({
                    "key": String::from_utf8_lossy(&key),
                    "entries": resp_view
                        .iter()
                        .map(|(m, s)| serde_json::json!({"member": String::from_utf8_lossy(m), "score": s}))
                        .collect::<Vec<_>>(),
                });
                let payload = Bytes::from(json.to_string());
                if polled {
                    // Every node reads the board and publishes its top
                    // itself: to this node's subscribers only.
                    let n = self.registry.publish(&Publication::new(channel, payload));
                    self.count(n);
                } else if let Err(e) = self.publish(channel, payload) {
                    tracing::warn!(error = %e, "leaderboard publish failed");
                }
            }
        }
    }

    // ---- introspection -----------------------------------------------------

    /// Active channels of a space, optionally filtered by a glob. Unordered.
    pub fn channels(&self, space: Space, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.registry.channels(space, pattern)
    }

    /// Number of channels with subscribers.
    pub fn channel_count(&self) -> usize {
        self.registry.channel_count()
    }

    /// Local subscribers of a channel.
    pub fn numsub(&self, space: Space, channel: &[u8]) -> usize {
        self.registry.numsub(space, channel)
    }

    /// Distinct subscribed patterns.
    pub fn numpat(&self) -> usize {
        self.registry.numpat()
    }

    /// Every subscribed pattern. Unordered.
    pub fn patterns(&self) -> Vec<Bytes> {
        self.registry.patterns()
    }
}

/// The message payload of a stream entry: its `data` field, or a JSON
/// object of all its fields when it has none (entries added with XADD).
pub fn entry_payload(fields: &[(Bytes, Bytes)]) -> Bytes {
    if let Some((_, v)) = fields.iter().find(|(f, _)| &f[..] == b"data") {
        return v.clone();
    }
    let obj: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(f, v)| {
            (
                String::from_utf8_lossy(f).into_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    Bytes::from(serde_json::Value::Object(obj).to_string())
}
