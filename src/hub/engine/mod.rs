//! The engine seam: what a hub needs from whatever carries publications,
//! keeps history and presence, and reports leaderboard changes. The hub
//! calls these traits and nothing else for those jobs; front ends never see
//! them (they call the hub).
//!
//! The in-memory engine ([`memory`]) is the embedded default: it delivers
//! within this process and keeps everything in the node's keyspace. A
//! networked engine (several nodes on Redis) implements the same traits;
//! `tests/engine_contract.rs` runs one contract suite against the memory
//! engine and against a second engine whose nodes share a store through a
//! channel, to keep the seam honest.
//!
//! Every method returns [`Pending`]: the memory engine answers at once (no
//! allocation, nothing to await), an engine doing I/O returns a future.
//! The hub's own methods are synchronous, for every front end: they take
//! the value with [`Pending::wait`], which parks the calling thread (after
//! `block_in_place` hands its runtime worker's tasks on) while a future
//! runs. Publishes and subscribes have forms front ends await instead
//! (`hub/publish.rs`, `hub/subscribe.rs`).
//!
//! # Contracts
//!
//! **Broker.** [`Broker::publish`] is one step: where the channel keeps
//! history it appends the payload (taking the next offset of the channel's
//! current epoch), and it delivers the publication to the subscribers of
//! every node, this one included through its [`BrokerHandler`]. Two
//! publishes to one channel with history reach every subscriber on every
//! node in one order, the order of their offsets; one publisher's
//! publishes keep their order on any channel. On a channel without
//! history, concurrent publishers' messages may reach two subscribers
//! interleaved differently (the memory engine delivers them side by side,
//! under shared guards). A publish that returns `Ok` is delivered to every subscriber
//! whose node is connected to the engine; an `Err` means nothing was
//! appended or delivered (a client's publish is then refused, never
//! acknowledged and dropped). [`Broker::subscribed`] and
//! [`Broker::unsubscribed`] tell the broker when this node's first local
//! subscriber of a channel, shard channel or pattern arrives, and when the
//! last one leaves: a networked broker subscribes the node where
//! publications of other nodes arrive, and stops. Publications of other
//! nodes go to the handler, which delivers them locally.
//!
//! **History.** Positions are `(offset, epoch)`: offsets of a channel are
//! gapless and increase by one per publication within an epoch; the epoch
//! changes whenever continuity is lost (the history was deleted, or the
//! store lost data), and a pair is never reused. A read since a position
//! either returns every publication after it or fails with
//! [`HistoryError::Unrecoverable`]; never a gap. Reading never creates a
//! channel's history; a subscription may reserve the epoch its first
//! publication will have ([`HistoryStore::position`] with `reserve`).
//!
//! **Presence.** Clients join and leave per channel; [`PresenceStore::join`]
//! reports the user's first connection on the channel (across nodes) and
//! [`PresenceStore::leave`] the last, so several tabs of one user count
//! once. Entries of a node that stops refreshing go after a store-defined
//! time (the memory store has no other nodes, and keeps them until leave).
//!
//! **Leaderboards.** The top N of a sorted set, and the keys changed since
//! the last look, which the hub's tick turns into pushes.
//!
//! **Cluster** ([`Cluster`], reached through [`Broker::cluster`]). A node
//! is *live* while its heartbeats arrive: a networked engine sends this
//! node's [`NodeReport`] about once a second and forgets a node whose last
//! heartbeat is older than about three periods. [`Cluster::peers`] lists
//! the other live nodes with the age of their last heartbeat, and says
//! when it cannot hear them (`problem`). [`Cluster::survey`] asks every
//! live peer a [`Question`] about its own subscribers and returns, within
//! [`cluster::SURVEY_TIMEOUT`], the answers that arrived, the live nodes
//! that did not answer, and why nothing could be asked when that is so; it
//! never fails, it answers with less. A node's answer to another is
//! bounded ([`cluster::ANSWER_MAX_NAMES`], [`cluster::ANSWER_MAX_BYTES`],
//! marked `truncated` past them), and so is a question
//! ([`cluster::QUESTION_MAX_NAMES`], [`cluster::QUESTION_MAX_BYTES`]: the
//! hub never asks more). The hub adds its own node's answer. A single
//! node (the memory engine) has no peers and every survey comes back
//! empty at once ([`SingleNode`]).
//!
//! **Remote keyspace.** An engine whose store holds the data commands'
//! keys ([`RemoteKeyspace`]; the memory engine has none: the node's own
//! keyspace serves them) runs a command as the store does and answers the
//! store's reply byte for byte, encoded in the client's protocol (RESP2 or
//! RESP3), errors included; a store it cannot reach is an error reply
//! (`-ERR engine unavailable: …`), never a hang. Commands that block or
//! span several requests (a blocking pop, `WATCH`…`EXEC`) run on a
//! [`Dedicated`] connection, of which there are at most a configured
//! number: past it [`RemoteKeyspace::dedicated`] fails at once. Dropping a
//! dedicated connection closes it (the store forgets its WATCHes and stops
//! a blocked command); [`Dedicated::release`] hands a clean one back.
//! Key names of the engine's own (history, presence, meta) come from the
//! engine ([`RemoteKeyspace::history_key`], [`RemoteKeyspace::is_engine_key`]),
//! never built by front ends.

pub mod cluster;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

pub use cluster::{
    Answer, Cluster, Connections, NodeLoad, NodeReport, NodeSource, Peer, Peers, Question,
    SingleNode, Survey,
};

use super::leaderboard::{Entry, Own};
use super::presence::{PresenceEntry, PresenceEvent};
use super::publication::Publication;
use super::{HistoryError, HistoryPage, HistoryPosition};

/// What an engine call returns: done already, or a future to await.
pub enum Pending<'a, T> {
    /// Done (taken out by the first poll).
    Ready(Option<T>),
    /// Under way.
    Boxed(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

// `Ready`'s value is only ever moved out whole, never pinned.
impl<T> Unpin for Pending<'_, T> {}

impl<'a, T> Pending<'a, T> {
    pub fn ready(value: T) -> Self {
        Pending::Ready(Some(value))
    }

    pub fn boxed(f: impl Future<Output = T> + Send + 'a) -> Self {
        Pending::Boxed(Box::pin(f))
    }

    /// The value, if it is there already.
    pub fn now(self) -> Result<T, Self> {
        match self {
            Pending::Ready(Some(v)) => Ok(v),
            other => Err(other),
        }
    }

    /// Applies `f` to the value: at once when it is ready, else once the
    /// future is done.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'a) -> Pending<'a, U>
    where
        T: Send + 'a,
    {
        match self.now() {
            Ok(v) => Pending::ready(f(v)),
            Err(fut) => Pending::boxed(async move { f(fut.await) }),
        }
    }

    /// The value, from synchronous code (a RESP command): at once when it
    /// is ready; otherwise this thread polls the future until it is done,
    /// parking in between, after handing its runtime worker's other tasks
    /// on (`hub::blocking`). Nested waits (an engine callback that calls
    /// back into the hub) work the same way. An engine doing I/O needs a
    /// multi-threaded runtime, whose other workers drive the I/O meanwhile
    /// (Herald's server runs one).
    pub fn wait(self) -> T {
        match self.now() {
            Ok(v) => v,
            Err(f) => super::blocking(|| park_on(f)),
        }
    }
}

impl<T> Future for Pending<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Pending::Ready(v) => Poll::Ready(v.take().expect("Pending polled after it completed")),
            Pending::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// Runs a future to completion on this thread, parking between polls
/// (outside any runtime).
fn park_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Why an engine could not do what was asked. Nothing was appended or
/// delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine's backend cannot be reached; try again later.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its answer never came (a timeout, or the
    /// connection broke after sending): it may or may not have been
    /// applied. A client that retries may duplicate it.
    #[error("engine outcome unknown (the write may have been applied): {0}")]
    Unknown(String),
}

/// How a channel keeps history: its namespace's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Most publications kept (at least 1).
    pub size: u64,
    /// Age past which publications go, in milliseconds (0: no limit).
    pub ttl_ms: u64,
}

/// A channel's history position: its newest offset and its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: u64,
}

/// What a subscription is to: a broker keeps one interest per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest<'a> {
    Channel(&'a Bytes),
    Shard(&'a Bytes),
    Pattern(&'a Bytes),
}

/// The result of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// This node's local deliveries (subscribers plus matching
    /// subscriber-pattern pairs), as PUBLISH replies.
    pub receivers: usize,
    /// The message's history position, where the channel keeps history.
    pub position: Option<Position>,
}

/// Where a broker delivers: this node's subscribers. The hub's registry
/// implements it.
pub trait BrokerHandler: Send + Sync + 'static {
    /// Delivers a publication (of this node or another) to local
    /// subscribers; returns the local deliveries. Must not block.
    fn on_publication(&self, publication: &Publication) -> usize;

    /// Delivers consecutive publications of one channel in order; returns
    /// each one's local deliveries.
    fn on_publications(&self, publications: &[Publication]) -> Vec<usize> {
        publications
            .iter()
            .map(|p| self.on_publication(p))
            .collect()
    }

    /// Delivers a shard-channel publication (SPUBLISH).
    fn on_shard_publication(&self, publication: &Publication) -> usize;

    /// Delivers a presence event to the channel's local subscribers.
    fn on_presence(&self, channel: &[u8], event: &PresenceEvent);

    /// Delivers a publication to the exact subscribers of its channel only
    /// (a broker that receives pattern matches apart, as Redis sends
    /// `message` and `pmessage`).
    fn on_exact(&self, publication: &Publication) -> usize;

    /// Delivers a publication to the subscribers of one pattern only.
    fn on_pattern(&self, pattern: &[u8], publication: &Publication) -> usize;

    /// The local deliveries a publication on `channel` would make now.
    fn receivers(&self, channel: &[u8]) -> usize;

    /// The local subscribers of a shard channel.
    fn shard_receivers(&self, channel: &[u8]) -> usize;

    /// Publications of `channel` may have been missed on this node (its
    /// link to the engine was down): subscribers that can recover them
    /// from the history do.
    fn on_gap(&self, channel: &[u8]);
}

/// Carries publications to subscribers, on this node and beyond (see the
/// module's contract).
pub trait Broker: Send + Sync + 'static {
    /// Where this broker delivers. The hub calls it once, before anything
    /// else.
    fn start(&self, handler: Arc<dyn BrokerHandler>);

    /// Publishes `payload` on `channel`, appending it to the channel's
    /// history first where `history` is given. `Ok(None)` position with
    /// `history` given: the channel's key holds another type, the message
    /// went out without history.
    fn publish(
        &self,
        channel: Bytes,
        payload: Bytes,
        history: Option<HistoryOptions>,
    ) -> Pending<'_, Result<Published, EngineError>>;

    /// Publishes consecutive payloads on a channel without history, in
    /// order; returns each one's local deliveries.
    fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Pending<'_, Result<Vec<usize>, EngineError>>;

    /// Publishes a client's pipelined `(channel, payload, history)`s and
    /// returns each one's outcome in the order given: each channel's in
    /// order, one after another, distinct channels overlapping. A broker
    /// over a network may send them all together (one round trip).
    fn publish_mixed(
        &self,
        items: Vec<(Bytes, Bytes, Option<HistoryOptions>)>,
    ) -> Pending<'_, Vec<Result<Published, EngineError>>> {
        Pending::boxed(async move {
            let n = items.len();
            // Group by channel, keeping each channel's order.
            type Group = (Bytes, Option<HistoryOptions>, Vec<(usize, Bytes)>);
            let mut groups: Vec<Group> = Vec::new();
            for (i, (channel, payload, history)) in items.into_iter().enumerate() {
                match groups.iter_mut().find(|(c, _, _)| *c == channel) {
                    Some((_, _, g)) => g.push((i, payload)),
                    None => groups.push((channel, history, vec![(i, payload)])),
                }
            }
            let chains = groups
                .into_iter()
                .map(|(channel, history, group)| async move {
                    let mut done = Vec::with_capacity(group.len());
                    for (i, payload) in group {
                        done.push((i, self.publish(channel.clone(), payload, history).await));
                    }
                    done
                });
            let mut out: Vec<Option<Result<Published, EngineError>>> =
                (0..n).map(|_| None).collect();
            for (i, r) in futures_util::future::join_all(chains)
                .await
                .into_iter()
                .flatten()
            {
                out[i] = Some(r);
            }
            out.into_iter()
                .map(|r| r.unwrap_or_else(|| Err(EngineError::Unavailable("publish lost".into()))))
                .collect()
        })
    }

    /// True when publishes to distinct channels may be in flight together
    /// (a broker over a network, whose calls are round trips): the hub then
    /// overlaps a client's pipelined publishes to several channels instead
    /// of waiting for each in turn. Publishes to one channel still go one
    /// after another, in order.
    fn pipelines(&self) -> bool {
        false
    }

    /// Publishes on a shard channel (SPUBLISH): no history, no patterns.
    fn spublish(&self, channel: Bytes, payload: Bytes) -> Pending<'_, Result<usize, EngineError>>;

    /// Delivers an entry a data command already appended to a channel's
    /// history (XADD), as [`Broker::publish`] would have delivered it. The
    /// entry was appended to this node's keyspace, not through
    /// [`HistoryStore::append`], and carries the offset and epoch of the
    /// node's own stream: right for the memory engine only (an engine with
    /// its own history would see the two sequences collide).
    fn deliver_appended(&self, publication: Publication)
        -> Pending<'_, Result<usize, EngineError>>;

    /// Carries a presence event to the channel's subscribers on every node.
    fn publish_presence(
        &self,
        channel: Bytes,
        event: PresenceEvent,
    ) -> Pending<'_, Result<(), EngineError>>;

    /// Whether [`Broker::subscribed`] is a round trip (a networked
    /// broker): the hub then lets front ends await it, and tells the
    /// broker of departures on a task of their own.
    fn subscribes_await(&self) -> bool {
        false
    }

    /// This node's first local subscriber of `interest` arrived.
    fn subscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>>;

    /// This node's last local subscriber of `interest` left.
    fn unsubscribed(&self, interest: Interest<'_>) -> Pending<'_, Result<(), EngineError>>;

    /// Whether the broker can publish and deliver right now (`/healthz`).
    fn healthy(&self) -> bool {
        true
    }

    /// The nodes this broker connects, for cluster-wide questions: by
    /// default this node alone.
    fn cluster(&self) -> &dyn Cluster {
        &SingleNode
    }
}

/// Runs with the history position (and whether the position asked about is
/// recoverable), at a moment no publication of the channel can come
/// between the answer and what the callback does (registering a
/// subscription).
pub type PositionThen<'a> = &'a mut (dyn FnMut(HistoryPosition) + Send);

/// Channels' histories (see the module's contract).
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends a publication; its position. Brokers call it; the hub
    /// appends only through its broker.
    fn append(
        &self,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
    ) -> Pending<'_, Result<Position, HistoryError>>;

    /// The channel's newest offset and epoch. With nothing published yet:
    /// offset 0 and, when `reserve`, the epoch the first publication will
    /// have (kept for a store-defined time), else that epoch if one was
    /// reserved, or 0. Never creates the history.
    fn position(
        &self,
        channel: &[u8],
        opts: HistoryOptions,
        reserve: bool,
    ) -> Pending<'_, Result<Position, HistoryError>>;

    /// Publications after `since` (which must be recoverable), at most
    /// `limit` (`usize::MAX`: all kept), newest first when `reverse`.
    fn read(
        &self,
        channel: &[u8],
        opts: HistoryOptions,
        since: Option<Position>,
        limit: usize,
        reverse: bool,
    ) -> Pending<'_, Result<HistoryPage, HistoryError>>;

    /// Reserves the channel's position and runs `then` with it and whether
    /// `since` can be recovered (same epoch, not ahead, at most `cap`
    /// behind, nothing after it lost), with no publication of the channel
    /// delivered on this node in between.
    fn position_then<'a>(
        &'a self,
        channel: &[u8],
        opts: HistoryOptions,
        since: Option<Position>,
        cap: usize,
        then: PositionThen<'a>,
    ) -> Pending<'a, Result<(), HistoryError>>;

    /// One step of a replay: publications after offset `after` of epoch
    /// `epoch`, at most `max_entries` and (past the first) `max_bytes` of
    /// payload. When the step reaches the newest publication, `at_end(top)`
    /// runs before any later publication of the channel is delivered on
    /// this node.
    fn chunk<'a>(
        &'a self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
        max_bytes: usize,
        at_end: &'a mut (dyn FnMut(u64) + Send),
    ) -> Pending<'a, Result<Vec<(u64, Bytes)>, HistoryError>>;

    /// The payload bytes of up to `max_entries` publications after `after`
    /// (sizing a replay before it starts), and the last offset counted.
    fn size(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
    ) -> Pending<'_, Result<(usize, u64), HistoryError>>;
}

/// Who is subscribed where (see the module's contract).
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds a client; true when it is its user's first connection on the
    /// channel.
    fn join(&self, channel: &Bytes, entry: PresenceEntry)
        -> Pending<'_, Result<bool, EngineError>>;

    /// Removes a client; its entry and whether it was its user's last
    /// connection on the channel (`None`: it was not there).
    fn leave(
        &self,
        channel: &[u8],
        client: super::ClientId,
    ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>>;

    /// Every client, oldest first.
    fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>>;

    /// The distinct user ids, sorted.
    fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>>;

    /// (clients, distinct users).
    fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>>;

    /// Keeps this node's entries alive where entries expire. The server
    /// calls it every [`PresenceStore::refresh_every`] (through
    /// [`crate::hub::Hub::presence_refreshes`]) for as long as the hub
    /// runs; a node that stops calling it loses its entries after a
    /// store-defined time.
    fn refresh(&self) -> Pending<'_, Result<(), EngineError>> {
        Pending::ready(Ok(()))
    }

    /// How often `refresh` must run; `None` (the memory store, whose
    /// entries never expire): never.
    fn refresh_every(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Sorted sets seen as leaderboards.
pub trait LeaderboardSource: Send + Sync + 'static {
    /// The top `n` of the sorted set at `key`, best first, and `user`'s own
    /// rank (0 = best) and score.
    fn top(&self, key: &[u8], n: usize, user: Option<&str>) -> Pending<'_, (Vec<Entry>, Own)>;

    /// The keys whose sorted set was written or removed since the last
    /// call.
    fn take_changed(&self) -> Vec<Bytes>;

    /// True for a source that cannot tell what changed (sorted sets kept
    /// elsewhere, written by other nodes or other applications): the hub
    /// then re-reads every board this node follows on each tick (those
    /// watched over WebSocket and those with a RESP subscriber on
    /// `__leaderboard__:K`) and pushes only views that changed.
    fn polled(&self) -> bool {
        false
    }
}

/// One reply frame, encoded in the client's protocol.
pub type Frame = Bytes;

/// The outcome of a transaction: each command's reply, or `None` where a
/// WATCHed key changed (nothing ran); `Err` is an error frame for EXEC.
pub type TxOutcome = Result<Option<Vec<Frame>>, Frame>;

/// Data commands served from the engine's store (see the module's
/// contract).
pub trait RemoteKeyspace: Send + Sync + 'static {
    /// Runs one (non-blocking) command on the shared connection.
    fn command(&self, args: Vec<Bytes>, resp3: bool) -> Pending<'static, Frame>;

    /// A dedicated connection from the bounded pool, where `key` lives (a
    /// sharded store puts it on the key's shard); `Err` (an error frame)
    /// when every one is in use or the store is unreachable.
    fn dedicated(
        &self,
        resp3: bool,
        key: Option<Bytes>,
    ) -> Pending<'static, Result<Box<dyn Dedicated>, Frame>>;

    /// Whether one command may name all of `keys` (a sharded store, such
    /// as a Redis Cluster, serves a command's keys from one shard only).
    fn same_shard(&self, keys: &[&[u8]]) -> bool {
        let _ = keys;
        true
    }

    /// DBSIZE without the engine's own keys, counting only the keys
    /// `readable` allows where given; an error frame past a bound on the
    /// keys it will visit.
    #[allow(clippy::type_complexity)]
    fn dbsize(
        &self,
        readable: Option<Arc<dyn Fn(&[u8]) -> bool + Send + Sync>>,
    ) -> Pending<'static, Frame>;

    /// Whether `key` is one of the engine's own keys (hidden from clients,
    /// refused to their commands).
    fn is_engine_key(&self, key: &[u8]) -> bool;

    /// The key of the stream holding `channel`'s history.
    fn history_key(&self, channel: &[u8]) -> Vec<u8>;

    /// The store commands a publish is, for a transaction: run inside it,
    /// they publish (and, with `history`, append) as [`Broker::publish`]
    /// does. `shard` for SPUBLISH.
    fn publish_commands(
        &self,
        channel: &[u8],
        payload: &[u8],
        history: Option<HistoryOptions>,
        shard: bool,
    ) -> Vec<Vec<Bytes>>;

    /// The store commands [`RemoteKeyspace::append_entry`] is, for a
    /// transaction; their reply is `[offset, epoch]`.
    fn append_commands(
        &self,
        channel: &[u8],
        fields: &[Bytes],
        payload: &[u8],
        opts: HistoryOptions,
    ) -> Vec<Vec<Bytes>>;

    /// Appends a stream entry with the given fields to `channel`'s history
    /// and publishes it (`entry_payload` of the fields), as one step: an
    /// XADD to a channel with history. The reply is the new entry's id
    /// (`{offset}-0`) as a bulk string frame.
    fn append_entry(
        &self,
        channel: Bytes,
        fields: Vec<Bytes>,
        payload: Bytes,
        opts: HistoryOptions,
        resp3: bool,
    ) -> Pending<'static, Frame>;
}

/// A connection of its own to the engine's store (see the module's
/// contract).
pub trait Dedicated: Send + Sync {
    /// Runs one command (a blocking one may wait as long as it says).
    fn command(&self, args: Vec<Bytes>, in_exec: bool) -> Pending<'static, Frame>;

    /// `MULTI`, the commands, `EXEC`.
    fn transaction(&self, cmds: Vec<Vec<Bytes>>) -> Pending<'static, TxOutcome>;

    /// Hands the connection back for reuse (after EXEC or a completed
    /// command: nothing watched, nothing queued).
    fn release(self: Box<Self>);
}

/// One engine: the four parts a hub runs on.
#[derive(Clone)]
pub struct Engine {
    pub broker: Arc<dyn Broker>,
    pub history: Arc<dyn HistoryStore>,
    pub presence: Arc<dyn PresenceStore>,
    pub leaderboards: Arc<dyn LeaderboardSource>,
}
