//! One contract suite for every engine, run through the hub's API as the
//! front ends use it: the in-memory default, and a second engine ("bus")
//! whose nodes share one store through a channel. The bus is different
//! where it matters: its calls are futures answered by another thread, its
//! history and presence live outside the nodes' keyspaces, and its nodes
//! only receive what they registered interest in (`Broker::subscribed`).
//! Two hubs on one bus behave as one: a publish on either reaches
//! subscribers on both, offsets are one sequence, tabs of one user on two
//! nodes count once.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald::config::{Config, Options};
use herald::hub::engine::{
    Broker, BrokerHandler, Engine, EngineError, HistoryOptions, HistoryStore, Interest, Pending,
    Position, PositionThen, PresenceStore, Published,
};
use herald::hub::glob::Glob;
use herald::hub::presence::{PresenceEntry, PresenceEvent, PresenceEventKind};
use herald::hub::{
    ClientId, Delivery, HistoryError, HistoryPage, HistoryPosition, Hub, Publication, Space,
    Subscriber, Subscription,
};
use tokio::sync::{mpsc, oneshot};

// ---- a recording subscriber ------------------------------------------------

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<(Bytes, Bytes, Option<u64>)>>,
    events: Mutex<Vec<(Bytes, PresenceEventKind, String)>>,
}

impl Subscriber for Recorder {
    fn deliver(&self, d: &Delivery<'_>) {
        let p = d.publication;
        self.messages
            .lock()
            .unwrap()
            .push((p.channel.clone(), p.payload.clone(), p.offset));
    }

    fn presence(&self, channel: &[u8], event: &PresenceEvent) {
        self.events.lock().unwrap().push((
            Bytes::copy_from_slice(channel),
            event.kind,
            event.user.clone(),
        ));
    }
}

impl Recorder {
    fn payloads(&self) -> Vec<Bytes> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.1.clone())
            .collect()
    }

    fn offsets(&self) -> Vec<u64> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.2)
            .collect()
    }
}

/// Waits up to two seconds for `f` to hold (the bus delivers on its own
/// threads).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn config() -> Arc<Config> {
    let dir = std::env::temp_dir().join(format!("herald-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", rand_suffix()));
    std::fs::write(
        &path,
        "[namespaces.hist]\nhistory_size = 5\n\n[namespaces.room]\npresence = true\njoin_leave = true\n",
    )
    .unwrap();
    let opts =
        <Options as clap::Parser>::parse_from(["herald", "--config", path.to_str().unwrap()]);
    Arc::new(Config::from_options(opts).unwrap())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

fn sub(channel: &str, client: ClientId, sink: Arc<Recorder>, user: Option<&str>) -> Subscription {
    Subscription {
        space: Space::Global,
        channel: Bytes::copy_from_slice(channel.as_bytes()),
        client,
        sink,
        presence: user.map(|u| PresenceEntry {
            client,
            user: u.into(),
            info: None,
            joined: 0,
        }),
    }
}

const ALL: usize = usize::MAX;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// ---- the contract, for any engine --------------------------------------

/// `nodes` are hubs of one engine (one for the memory engine); every check
/// publishes on one node and observes on the others, too.
async fn contract(nodes: &[Arc<Hub>]) {
    let last = nodes.last().unwrap();
    let first = &nodes[0];

    // Publish without history: delivered, no position, receivers counted
    // on the publishing node.
    let r = Arc::new(Recorder::default());
    assert!(last.subscribe(sub("plain:a", 1, r.clone(), None)).unwrap());
    assert!(
        !last.subscribe(sub("plain:a", 1, r.clone(), None)).unwrap(),
        "twice"
    );
    let p = first.publish(b("plain:a"), b("one")).unwrap();
    assert_eq!(p.position, None);
    eventually("plain delivery", || r.payloads() == vec![b("one")]).await;

    // Patterns.
    let rp = Arc::new(Recorder::default());
    assert!(last.psubscribe(b("pat:*"), 2, rp.clone()).unwrap());
    first.publish(b("pat:x"), b("px")).unwrap();
    first.publish(b("other:x"), b("no")).unwrap();
    eventually("pattern delivery", || rp.payloads() == vec![b("px")]).await;

    // History: offsets gapless from 1 in one epoch, in publish order on
    // every subscriber, whichever node published.
    let rh = Arc::new(Recorder::default());
    last.subscribe(sub("hist:c", 3, rh.clone(), None)).unwrap();
    let mut positions = Vec::new();
    for i in 0..4 {
        let node = &nodes[i % nodes.len()];
        let p = node
            .publish(b("hist:c"), Bytes::from(format!("m{i}")))
            .unwrap();
        positions.push(p.position.expect("history channel has positions"));
    }
    let epoch = positions[0].epoch;
    assert!(positions.iter().all(|p| p.epoch == epoch), "{positions:?}");
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4]);
    eventually("history deliveries", || rh.offsets() == vec![1, 2, 3, 4]).await;
    assert_eq!(rh.payloads(), vec![b("m0"), b("m1"), b("m2"), b("m3")]);

    // Reads, on any node.
    for node in nodes {
        let page = node.history(b"hist:c", None, ALL, false).unwrap();
        assert_eq!((page.top, page.epoch), (4, epoch));
        assert_eq!(page.entries.len(), 4);
        let page = node
            .history(b"hist:c", Some((2, epoch)), ALL, false)
            .unwrap();
        let got: Vec<u64> = page.entries.iter().map(|e| e.0).collect();
        assert_eq!(got, vec![3, 4]);
        let page = node.history(b"hist:c", None, 2, true).unwrap();
        let got: Vec<u64> = page.entries.iter().map(|e| e.0).collect();
        assert_eq!(got, vec![4, 3], "newest first");
        assert_eq!(
            node.history(b"hist:c", Some((2, epoch + 1)), ALL, false)
                .unwrap_err(),
            HistoryError::Unrecoverable,
            "another epoch"
        );
        assert_eq!(
            node.history(b"hist:c", Some((9, epoch)), ALL, false)
                .unwrap_err(),
            HistoryError::Unrecoverable,
            "a future offset"
        );
        assert_eq!(
            node.history(b"plain:a", None, ALL, false).unwrap_err(),
            HistoryError::NotEnabled
        );
    }

    // The size bound: six more publications, five kept; a position before
    // the kept ones is lost, never a gap.
    for i in 4..10 {
        first
            .publish(b("hist:c"), Bytes::from(format!("m{i}")))
            .unwrap();
    }
    let page = last.history(b"hist:c", None, ALL, false).unwrap();
    let got: Vec<u64> = page.entries.iter().map(|e| e.0).collect();
    assert_eq!(got, vec![6, 7, 8, 9, 10]);
    assert_eq!(
        last.history(b"hist:c", Some((3, epoch)), ALL, false)
            .unwrap_err(),
        HistoryError::Unrecoverable
    );
    assert!(last
        .history(b"hist:c", Some((5, epoch)), ALL, false)
        .is_ok());

    // A subscription's position and recovery check, then a replay in steps
    // that ends at the newest publication.
    let seen = last
        .with_history_position(b"hist:c", Some((7, epoch)), 100, |at| at)
        .unwrap();
    assert_eq!(
        seen,
        HistoryPosition {
            top: 10,
            epoch,
            recoverable: Some(true)
        }
    );
    let seen = last
        .with_history_position(b"hist:c", Some((7, epoch)), 2, |at| at.recoverable)
        .unwrap();
    assert_eq!(seen, Some(false), "more than `cap` behind");
    let mut at_end = None;
    let chunk = last
        .history_chunk(b"hist:c", 7, epoch, 2, usize::MAX, |top| at_end = Some(top))
        .unwrap();
    assert_eq!(chunk.iter().map(|e| e.0).collect::<Vec<_>>(), vec![8, 9]);
    assert_eq!(at_end, None, "not at the end yet");
    let chunk = last
        .history_chunk(b"hist:c", 9, epoch, 2, usize::MAX, |top| at_end = Some(top))
        .unwrap();
    assert_eq!(chunk.iter().map(|e| e.0).collect::<Vec<_>>(), vec![10]);
    assert_eq!(at_end, Some(10));
    let (bytes, last_counted) = last.history_bytes(b"hist:c", 7, epoch, 100).unwrap();
    assert_eq!((bytes, last_counted), (6, 10), "m7 m8 m9 payload bytes");

    // A channel nobody published on: offset 0 and a reserved epoch that
    // the first publication then has.
    let reserved = last
        .with_history_position(b"hist:new", None, 10, |at| at)
        .unwrap();
    assert_eq!(reserved.top, 0);
    let p = first
        .publish(b("hist:new"), b("x"))
        .unwrap()
        .position
        .unwrap();
    assert_eq!(
        p,
        Position {
            offset: 1,
            epoch: reserved.epoch
        }
    );

    // Presence: tabs of one user count once, across nodes; join and leave
    // are pushed to subscribers of the channel on every node.
    let watcher = Arc::new(Recorder::default());
    first
        .subscribe(sub("room:1", 10, watcher.clone(), Some("watcher")))
        .unwrap();
    last.subscribe(sub(
        "room:1",
        11,
        Arc::new(Recorder::default()),
        Some("ann"),
    ))
    .unwrap();
    last.subscribe(sub(
        "room:1",
        12,
        Arc::new(Recorder::default()),
        Some("ann"),
    ))
    .unwrap();
    for node in nodes {
        assert_eq!(node.presence_stats(b"room:1").unwrap(), (3, 2));
        assert_eq!(
            node.presence_users(b"room:1").unwrap(),
            vec!["ann".to_string(), "watcher".to_string()]
        );
        assert_eq!(node.presence_clients(b"room:1").unwrap().len(), 3);
    }
    let joins = |r: &Recorder, kind| {
        r.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.1 == kind && e.2 == "ann")
            .count()
    };
    eventually("one join for two tabs", || {
        joins(&watcher, PresenceEventKind::Join) == 1
    })
    .await;
    assert!(last.unsubscribe(Space::Global, b"room:1", 11));
    assert!(!last.unsubscribe(Space::Global, b"room:1", 11), "twice");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        joins(&watcher, PresenceEventKind::Leave),
        0,
        "a tab is left"
    );
    last.leave_all(12, [&b"room:1"[..]], [], [], []);
    eventually("the user's leave", || {
        joins(&watcher, PresenceEventKind::Leave) == 1
    })
    .await;
    for node in nodes {
        assert_eq!(node.presence_stats(b"room:1").unwrap(), (1, 1));
    }

    // Leaving: no more deliveries.
    assert!(last.unsubscribe(Space::Global, b"plain:a", 1));
    assert!(last.punsubscribe(b"pat:*", 2));
    first.publish(b("plain:a"), b("two")).unwrap();
    first.publish(b("pat:y"), b("py")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(r.payloads(), vec![b("one")]);
    assert_eq!(rp.payloads(), vec![b("px")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_keeps_the_contract() {
    let hub = Arc::new(Hub::with_config(config().hub_config()));
    contract(&[hub]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_keeps_the_contract_on_a_cluster() {
    use herald::hub::engine::redis::{spawn_background, RedisEngine, RedisOptions};
    let cluster = tokio::task::spawn_blocking(common::cluster::start_cluster)
        .await
        .unwrap();
    let hosts: Vec<String> = cluster.masters.iter().map(|m| m.addr.to_string()).collect();
    let cfg = config();
    let mut hubs = Vec::new();
    for node in ["a", "b"] {
        let engine = RedisEngine::connect(RedisOptions {
            url: format!("redis+cluster://{}", hosts.join(",")),
            prefix: "contract".into(),
            node: node.into(),
            presence_ttl: Duration::from_secs(60),
            history_max_memory: 0,
            tls: Default::default(),
        })
        .await
        .expect("redis cluster");
        // The link's connections: a dedicated one reaches the master of
        // its key's slot, the shared one routes there too.
        for k in ["{a}x", "{b}y", "{c}z", "plain"] {
            let mut d = engine.link.dedicated(Some(k.as_bytes())).await.unwrap();
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg(node)
                .query_async(&mut d)
                .await
                .unwrap();
            let v: String = redis::cmd("GET")
                .arg(k)
                .query_async(&mut engine.link.shared())
                .await
                .unwrap();
            assert_eq!(v, node);
        }
        let hub = Hub::with_engine(cfg.hub_config(), |_| engine.engine());
        spawn_background(&engine, Duration::from_secs(2)).await;
        hubs.push(Arc::new(hub));
    }
    contract(&hubs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_keeps_the_contract_across_two_nodes() {
    use herald::hub::engine::redis::{spawn_background, RedisEngine, RedisOptions};
    let redis = common::Redis::start(&[]);
    let cfg = config();
    let mut hubs = Vec::new();
    for node in ["a", "b"] {
        let engine = RedisEngine::connect(RedisOptions {
            url: format!("redis://{}", redis.addr),
            prefix: "contract".into(),
            node: node.into(),
            presence_ttl: Duration::from_secs(60),
            history_max_memory: 0,
            tls: Default::default(),
        })
        .await
        .expect("redis");
        let hub = Hub::with_engine(cfg.hub_config(), |_| engine.engine());
        spawn_background(&engine, Duration::from_secs(2)).await;
        hubs.push(Arc::new(hub));
    }
    contract(&hubs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_engine_keeps_the_contract_across_two_nodes() {
    let bus = Bus::start();
    let cfg = config();
    let a = Arc::new(Hub::with_engine(cfg.hub_config(), |ks| bus.node(ks, &cfg)));
    let b_ = Arc::new(Hub::with_engine(cfg.hub_config(), |ks| bus.node(ks, &cfg)));
    contract(&[a.clone(), b_.clone()]).await;
    // The seam is really used: the bus knows which node wants what.
    assert!(bus.interests_of(1).contains(&Owned::Channel(b("hist:c"))));
    assert!(
        !bus.interests_of(1).contains(&Owned::Channel(b("plain:a"))),
        "left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_nodes_get_only_what_they_subscribed() {
    let bus = Bus::start();
    let cfg = config();
    let a = Arc::new(Hub::with_engine(cfg.hub_config(), |ks| bus.node(ks, &cfg)));
    let b_ = Arc::new(Hub::with_engine(cfg.hub_config(), |ks| bus.node(ks, &cfg)));
    let r = Arc::new(Recorder::default());
    b_.subscribe(sub("x:1", 1, r.clone(), None)).unwrap();
    // The receivers a publish reports are the publishing node's own.
    let p = a.publish(b("x:1"), b("hi")).unwrap();
    assert_eq!(p.receivers, 0);
    eventually("cross-node delivery", || r.payloads() == vec![b("hi")]).await;
    assert_eq!(b_.publish(b("x:1"), b("local")).unwrap().receivers, 1);
    assert_eq!(bus.deliveries_to(0), 0, "node a subscribed to nothing");
}

// ---- the bus engine ------------------------------------------------------

/// An interest, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owned {
    Channel(Bytes),
    Shard(Bytes),
    Pattern(Bytes),
}

impl From<Interest<'_>> for Owned {
    fn from(i: Interest<'_>) -> Owned {
        match i {
            Interest::Channel(c) => Owned::Channel(c.clone()),
            Interest::Shard(c) => Owned::Shard(c.clone()),
            Interest::Pattern(p) => Owned::Pattern(p.clone()),
        }
    }
}

/// What the bus sends a node: delivered in order by the node's pump.
enum Inbound {
    /// A publication; the publishing node's copy carries where to report
    /// its local deliveries.
    Publication(Publication, bool, Option<oneshot::Sender<usize>>),
    Presence(Bytes, PresenceEvent),
}

struct NodeLink {
    inbox: mpsc::UnboundedSender<Inbound>,
    interests: HashSet<Owned>,
    deliveries: usize,
}

struct ChannelHistory {
    epoch: u64,
    top: u64,
    entries: VecDeque<(u64, Bytes)>,
}

/// A channel's presence on the bus: node-qualified clients, and
/// connections per user.
type ChannelPresence = (
    HashMap<(usize, ClientId), PresenceEntry>,
    HashMap<String, usize>,
);

#[derive(Default)]
struct Store {
    nodes: Vec<NodeLink>,
    history: HashMap<Bytes, ChannelHistory>,
    reserved: HashMap<Bytes, u64>,
    next_epoch: u64,
    /// channel → node-qualified client → entry; user → connections.
    presence: HashMap<Bytes, ChannelPresence>,
}

impl Store {
    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        1000 + self.next_epoch
    }

    /// Sends a publication to every node that wants it; `origin` learns
    /// its own node's local deliveries (0 when it wants none).
    fn route(
        &mut self,
        channel: &Bytes,
        shard: bool,
        make: impl Fn() -> Publication,
        origin: Option<(usize, oneshot::Sender<usize>)>,
    ) {
        let (origin, mut reply) = match origin {
            Some((o, r)) => (Some(o), Some(r)),
            None => (None, None),
        };
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if n.wants(channel, shard) {
                n.deliveries += 1;
                let r = if origin == Some(i) {
                    reply.take()
                } else {
                    None
                };
                let _ = n.inbox.send(Inbound::Publication(make(), shard, r));
            }
        }
        if let Some(r) = reply {
            let _ = r.send(0);
        }
    }

    /// Sends a presence event to every node with subscribers of `channel`.
    fn route_presence(&mut self, channel: &Bytes, event: &PresenceEvent) {
        for n in &mut self.nodes {
            if n.interests.contains(&Owned::Channel(channel.clone())) {
                let _ = n
                    .inbox
                    .send(Inbound::Presence(channel.clone(), event.clone()));
            }
        }
    }
}

impl NodeLink {
    fn wants(&self, channel: &Bytes, shard: bool) -> bool {
        if shard {
            return self.interests.contains(&Owned::Shard(channel.clone()));
        }
        self.interests.contains(&Owned::Channel(channel.clone()))
            || self.interests.iter().any(|i| match i {
                Owned::Pattern(p) => Glob::new(p).matches(channel),
                _ => false,
            })
    }
}

impl Store {
    fn position(&mut self, channel: &Bytes, reserve: bool) -> Position {
        match self.history.get(channel) {
            Some(h) => Position {
                offset: h.top,
                epoch: h.epoch,
            },
            None if reserve => {
                let e = match self.reserved.get(channel) {
                    Some(e) => *e,
                    None => {
                        let e = self.epoch();
                        self.reserved.insert(channel.clone(), e);
                        e
                    }
                };
                Position {
                    offset: 0,
                    epoch: e,
                }
            }
            None => Position {
                offset: 0,
                epoch: self.reserved.get(channel).copied().unwrap_or(0),
            },
        }
    }

    fn append(&mut self, channel: &Bytes, payload: Bytes, opts: HistoryOptions) -> Position {
        if !self.history.contains_key(channel) {
            let epoch = match self.reserved.remove(channel) {
                Some(e) => e,
                None => self.epoch(),
            };
            self.history.insert(
                channel.clone(),
                ChannelHistory {
                    epoch,
                    top: 0,
                    entries: VecDeque::new(),
                },
            );
        }
        let h = self.history.get_mut(channel).unwrap();
        h.top += 1;
        h.entries.push_back((h.top, payload));
        while h.entries.len() as u64 > opts.size {
            h.entries.pop_front();
        }
        Position {
            offset: h.top,
            epoch: h.epoch,
        }
    }

    /// Entries after `after` if none of them is lost.
    fn since(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
    ) -> Result<Vec<(u64, Bytes)>, HistoryError> {
        let Some(h) = self.history.get(channel) else {
            return if after == 0 {
                Ok(Vec::new())
            } else {
                Err(HistoryError::Unrecoverable)
            };
        };
        let oldest = h.entries.front().map_or(h.top + 1, |e| e.0);
        if h.epoch != epoch || after > h.top || after + 1 < oldest {
            return Err(HistoryError::Unrecoverable);
        }
        Ok(h.entries.iter().filter(|e| e.0 > after).cloned().collect())
    }
}

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// The shared store, owned by one thread that runs requests in arrival
/// order: the one order of publications across nodes.
#[derive(Clone)]
struct Bus {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Bus {
    fn start() -> Bus {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut store = Store::default();
            while let Ok(job) = rx.recv() {
                job(&mut store);
            }
        });
        Bus { jobs: tx }
    }

    /// Runs `f` on the bus; its answer, asynchronously.
    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = T> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Box::new(move |s| {
            let _ = tx.send(f(s));
        }));
        async move { rx.await.expect("the bus runs for the whole test") }
    }

    fn interests_of(&self, node: usize) -> HashSet<Owned> {
        Pending::boxed(self.ask(move |s| s.nodes[node].interests.clone())).wait()
    }

    fn deliveries_to(&self, node: usize) -> usize {
        Pending::boxed(self.ask(move |s| s.nodes[node].deliveries)).wait()
    }

    /// A node's engine: broker, history and presence on the bus;
    /// leaderboards from its own keyspace (the memory engine's).
    fn node(&self, keyspace: Arc<herald::hub::Keyspace>, cfg: &Config) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = Pending::boxed(self.ask(move |s| {
            s.nodes.push(NodeLink {
                inbox: tx,
                interests: HashSet::new(),
                deliveries: 0,
            });
            s.nodes.len() - 1
        }))
        .wait();
        let node = Arc::new(BusNode {
            bus: self.clone(),
            id,
            handler: Mutex::new(None),
            gate: Arc::new(tokio::sync::Mutex::new(())),
            inbox: Mutex::new(Some(rx)),
        });
        let memory = herald::hub::engine::memory::engine(keyspace, cfg.history_max_memory);
        Engine {
            broker: node.clone(),
            history: node.clone(),
            presence: node,
            leaderboards: memory.leaderboards,
        }
    }
}

struct BusNode {
    bus: Bus,
    id: usize,
    handler: Mutex<Option<Arc<dyn BrokerHandler>>>,
    /// Held by the pump while it delivers, and by a position or replay
    /// step while it reads and calls back: nothing is delivered on this
    /// node in between.
    gate: Arc<tokio::sync::Mutex<()>>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Inbound>>>,
}

impl BusNode {
    fn handler(&self) -> Arc<dyn BrokerHandler> {
        self.handler.lock().unwrap().clone().expect("started")
    }
}

impl Broker for BusNode {
    fn start(&self, handler: Arc<dyn BrokerHandler>) {
        *self.handler.lock().unwrap() = Some(handler.clone());
        let mut inbox = self.inbox.lock().unwrap().take().expect("started once");
        let gate = self.gate.clone();
        tokio::spawn(async move {
            while let Some(m) = inbox.recv().await {
                let _held = gate.lock().await;
                match m {
                    Inbound::Publication(p, shard, reply) => {
                        let n = if shard {
                            handler.on_shard_publication(&p)
                        } else {
                            handler.on_publication(&p)
                        };
                        if let Some(r) = reply {
                            let _ = r.send(n);
                        }
                    }
                    Inbound::Presence(channel, ev) => handler.on_presence(&channel, &ev),
                }
            }
        });
    }

    fn publish(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Pending<'_, Result<Published, EngineError>> {
        let (tx, rx) = oneshot::channel();
        let origin = self.id;
        let done = self.bus.ask(move |s| {
            let pos = history.map(|o| s.append(&channel, payload.clone(), o));
            let make = || match pos {
                Some(p) => {
                    Publication::with_offset(channel.clone(), payload.clone(), p.offset, p.epoch)
                }
                None => Publication::new(channel.clone(), payload.clone()),
            };
            s.route(&channel, false, make, Some((origin, tx)));
            pos
        });
        Pending::boxed(async move {
            let position = done.await;
            // This node's own deliveries, as PUBLISH reports on a cluster.
            let receivers = rx.await.unwrap_or(0);
            Ok(Published {
                receivers,
                position,
            })
        })
    }

    fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Pending<'_, Result<Vec<usize>, EngineError>> {
        Pending::boxed(async move {
            let mut out = Vec::new();
            for p in payloads {
                out.push(self.publish(channel.clone(), p, None).await?.receivers);
            }
            Ok(out)
        })
    }

    fn spublish(&self, channel: Bytes, payload: Bytes) -> Pending<'_, Result<usize, EngineError>> {
        let (tx, rx) = oneshot::channel();
        let origin = self.id;
        let done = self.bus.ask(move |s| {
            let make = || Publication::new(channel.clone(), payload.clone());
            s.route(&channel, true, make, Some((origin, tx)));
        });
        Pending::boxed(async move {
            done.await;
            Ok(rx.await.unwrap_or(0))
        })
    }

    fn deliver_appended(
        &self,
        publication: Publication,
    ) -> Pending<'_, Result<usize, EngineError>> {
        Pending::ready(Ok(self.handler().on_publication(&publication)))
    }

    fn publish_presence(
        &self,
        channel: Bytes,
        event: PresenceEvent,
    ) -> Pending<'_, Result<(), EngineError>> {
        let done = self.bus.ask(move |s| s.route_presence(&channel, &event));
        Pending::boxed(async move {
            done.await;
            Ok(())
        })
    }

    fn subscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        let (id, i) = (self.id, Owned::from(interest));
        Pending::boxed(async move {
            self.bus
                .ask(move |s| {
                    s.nodes[id].interests.insert(i);
                })
                .await;
            Ok(())
        })
    }

    fn unsubscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>> {
        let (id, i) = (self.id, Owned::from(interest));
        Pending::boxed(async move {
            self.bus
                .ask(move |s| {
                    s.nodes[id].interests.remove(&i);
                })
                .await;
            Ok(())
        })
    }
}

impl HistoryStore for BusNode {
    fn append(
        &self,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let ch = channel.clone();
        Pending::boxed(async move { Ok(self.bus.ask(move |s| s.append(&ch, payload, opts)).await) })
    }

    fn position(
        &self,
        channel: &[u8],
        _opts: HistoryOptions,
        reserve: bool,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move { Ok(self.bus.ask(move |s| s.position(&ch, reserve)).await) })
    }

    fn read(
        &self,
        channel: &[u8],
        _opts: HistoryOptions,
        since: Option<Position>,
        limit: usize,
        reverse: bool,
    ) -> Pending<'_, Result<HistoryPage, HistoryError>> {
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            self.bus
                .ask(move |s| {
                    let top = s.position(&ch, false);
                    let mut entries = match since {
                        Some(p) => s.since(&ch, p.offset, p.epoch)?,
                        None => s
                            .history
                            .get(&ch)
                            .map(|h| h.entries.iter().cloned().collect())
                            .unwrap_or_default(),
                    };
                    if reverse {
                        entries.reverse();
                    }
                    entries.truncate(limit);
                    Ok(HistoryPage {
                        entries,
                        top: top.offset,
                        epoch: top.epoch,
                    })
                })
                .await
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
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            // Deliveries on this node wait; publications the bus orders
            // after this request reach the node after `then`.
            let _held = self.gate.lock().await;
            let (top, recoverable) = self
                .bus
                .ask(move |s| {
                    let top = s.position(&ch, true);
                    let ok = since.map(|p| {
                        top.offset.saturating_sub(p.offset) <= cap as u64
                            && s.since(&ch, p.offset, p.epoch).is_ok()
                    });
                    (top, ok)
                })
                .await;
            then(HistoryPosition {
                top: top.offset,
                epoch: top.epoch,
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
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            let _held = self.gate.lock().await;
            let (entries, top) = self
                .bus
                .ask(move |s| {
                    let top = s.position(&ch, false).offset;
                    s.since(&ch, after, epoch).map(|e| (e, top))
                })
                .await?;
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for e in entries.into_iter().take(max_entries.max(1)) {
                if bytes >= max_bytes && !chunk.is_empty() {
                    break;
                }
                bytes += e.1.len();
                chunk.push(e);
            }
            if chunk.last().map_or(after, |e| e.0) == top {
                at_end(top);
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
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            let entries = self.bus.ask(move |s| s.since(&ch, after, epoch)).await?;
            let counted: Vec<_> = entries.into_iter().take(max_entries).collect();
            Ok((
                counted.iter().map(|e| e.1.len()).sum(),
                counted.last().map_or(after, |e| e.0),
            ))
        })
    }
}

impl PresenceStore for BusNode {
    fn join(
        &self,
        channel: &Bytes,
        entry: PresenceEntry,
    ) -> Pending<'_, Result<bool, EngineError>> {
        let (ch, node) = (channel.clone(), self.id);
        Pending::boxed(async move {
            Ok(self
                .bus
                .ask(move |s| {
                    let (clients, users) = s.presence.entry(ch).or_default();
                    if clients.contains_key(&(node, entry.client)) {
                        return false;
                    }
                    let n = users.entry(entry.user.clone()).or_insert(0);
                    *n += 1;
                    let first = *n == 1;
                    clients.insert((node, entry.client), entry);
                    first
                })
                .await)
        })
    }

    fn leave(
        &self,
        channel: &[u8],
        client: ClientId,
    ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>> {
        let (ch, node) = (Bytes::copy_from_slice(channel), self.id);
        Pending::boxed(async move {
            Ok(self
                .bus
                .ask(move |s| {
                    let (clients, users) = s.presence.get_mut(&ch)?;
                    let entry = clients.remove(&(node, client))?;
                    let n = users.get_mut(&entry.user)?;
                    *n -= 1;
                    let last = *n == 0;
                    if last {
                        users.remove(&entry.user);
                    }
                    Some((entry, last))
                })
                .await)
        })
    }

    fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>> {
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            Ok(self
                .bus
                .ask(move |s| {
                    s.presence
                        .get(&ch)
                        .map(|p| p.0.values().cloned().collect())
                        .unwrap_or_default()
                })
                .await)
        })
    }

    fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>> {
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            let mut users: Vec<String> = self
                .bus
                .ask(move |s| {
                    s.presence
                        .get(&ch)
                        .map(|p| p.1.keys().cloned().collect())
                        .unwrap_or_default()
                })
                .await;
            users.sort();
            Ok(users)
        })
    }

    fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>> {
        let ch = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            Ok(self
                .bus
                .ask(move |s| {
                    s.presence
                        .get(&ch)
                        .map_or((0, 0), |p| (p.0.len(), p.1.len()))
                })
                .await)
        })
    }
}
