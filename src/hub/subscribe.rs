//! The hub's subscription paths: entering and leaving channels, shard
//! channels and patterns, and telling the engine when this node's first
//! subscriber of a name arrives and its last one leaves.
//!
//! With an engine whose subscribes are round trips (Redis), a front end
//! first *reserves* the name ([`Hub::prepare_subscribe_pending`]): the
//! reservation makes the node want the name as a subscriber would, and the
//! future it returns is done once the engine carries the name to this node
//! (at once when it does already). The front end awaits it on its
//! connection's task (no thread parks), confirms, and registers with the
//! reservation ([`Hub::subscribe_with`]), which hands the want on to the
//! registered subscriber. Whether the engine should carry a name is
//! level-triggered: a reservation of a name the engine does not carry
//! starts a task, and any change that may end the want (a last
//! unsubscribe, a reservation dropped unused, a client gone while it
//! waited) hands the name to its stripe's settling task (one per stripe,
//! started when needed); each compares what the node wants (a registered
//! subscriber or a reservation) with what the engine carries and
//! subscribes or unsubscribes accordingly. They hold an async per-stripe
//! lock across their round trip, so the engine hears of one name's
//! arrivals and departures one at a time, in order; the registry and the
//! reservation counts change together under a std lock never held across
//! an await.
//! Two clients reserving one new name make one engine subscribe; a
//! subscribe racing a last unsubscribe ends subscribed; a client leaving
//! while its subscribe waits leaves nothing behind (its reservation goes
//! with its future, and the task that follows unsubscribes the name if
//! nobody else wants it). Unsubscribing never waits.
//!
//! With the memory engine (subscribes answered at once) everything stays
//! synchronous, as it always was: the std stripe lock is held across the
//! engine's (immediate) answer, and reservations are empty.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;

use super::registry::{Change, ClientId, Registry, Space};
use super::*;

/// Stripes of the interest locks.
const STRIPES: usize = 64;

/// A name the engine may carry to this node.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Channel(Bytes),
    Shard(Bytes),
    Pattern(Bytes),
}

impl Key {
    fn new(space: Option<Space>, name: Bytes) -> Key {
        match space {
            Some(Space::Global) => Key::Channel(name),
            Some(Space::Shard) => Key::Shard(name),
            None => Key::Pattern(name),
        }
    }

    fn name(&self) -> &Bytes {
        match self {
            Key::Channel(n) | Key::Shard(n) | Key::Pattern(n) => n,
        }
    }

    /// The key on a copy of its name: a name is often a slice of a whole
    /// request, which a kept key would keep alive.
    fn owned(&self) -> Key {
        let copy = |n: &Bytes| Bytes::copy_from_slice(n);
        match self {
            Key::Channel(n) => Key::Channel(copy(n)),
            Key::Shard(n) => Key::Shard(copy(n)),
            Key::Pattern(n) => Key::Pattern(copy(n)),
        }
    }

    fn interest(&self) -> engine::Interest<'_> {
        match self {
            Key::Channel(n) => engine::Interest::Channel(n),
            Key::Shard(n) => engine::Interest::Shard(n),
            Key::Pattern(n) => engine::Interest::Pattern(n),
        }
    }
}

/// One stripe: the names hashing to it.
struct Stripe {
    /// Held across an engine subscribe or unsubscribe of one of the
    /// stripe's names (engine mode), so they reach the engine in order.
    engine: tokio::sync::Mutex<()>,
    /// Reservations and what the engine carries; with the memory engine,
    /// the lock serializing a name's edges. Never held across an await.
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Subscribers on their way (awaiting the engine, or between the
    /// engine's answer and their registration), per name.
    reserved: HashMap<Key, usize>,
    /// Names the engine carries to this node (engine mode).
    carried: HashSet<Key>,
    /// Names whose want may have ended, for the stripe's settling task.
    unsettled: HashSet<Key>,
    /// The stripe's settling task is running.
    settling: bool,
}

/// What decides, per name, whether the engine carries it to this node.
pub(super) struct Interests {
    stripes: Box<[Stripe]>,
    hasher: std::collections::hash_map::RandomState,
    registry: Arc<Registry>,
    broker: Arc<dyn engine::Broker>,
    /// The engine's subscribes are round trips: reservations and tasks
    /// (else the synchronous path).
    awaits: bool,
}

impl Interests {
    pub(super) fn new(registry: Arc<Registry>, broker: Arc<dyn engine::Broker>) -> Arc<Self> {
        let awaits = broker.subscribes_await();
        Arc::new(Interests {
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    engine: tokio::sync::Mutex::new(()),
                    state: std::sync::Mutex::new(State::default()),
                })
                .collect(),
            hasher: Default::default(),
            registry,
            broker,
            awaits,
        })
    }

    fn stripe(&self, name: &[u8]) -> &Stripe {
        &self.stripes[self.stripe_of(name)]
    }

    fn stripe_of(&self, name: &[u8]) -> usize {
        self.hasher.hash_one(name) as usize % STRIPES
    }

    /// Serializes the registry changes of one name (striped) with the
    /// reservations (and, with the memory engine, its engine calls):
    /// without it, a departure's `unsubscribed` could overtake the next
    /// arrival's `subscribed`, and the node would stop receiving a channel
    /// it has a subscriber of.
    fn lock(&self, name: &[u8]) -> MutexGuard<'_, State> {
        let m = &self.stripe(name).state;
        acquire(|| m.try_lock(), || m.lock())
    }

    /// Whether a registered subscriber holds `key` on this node.
    fn held(&self, key: &Key) -> bool {
        match key {
            Key::Channel(n) => self.registry.numsub(Space::Global, n) > 0,
            Key::Shard(n) => self.registry.numsub(Space::Shard, n) > 0,
            Key::Pattern(n) => self.registry.has_pattern(n),
        }
    }

    /// Whether this node wants `key` (under its stripe's lock).
    fn wanted(&self, state: &State, key: &Key) -> bool {
        state.reserved.get(key).is_some_and(|n| *n > 0) || self.held(key)
    }

    /// Takes one reservation off `key` (under its stripe's lock); true
    /// when nothing wants it any more. (The engine may be subscribing it
    /// right now for this very reservation, so it is settled whether or
    /// not it is carried yet: the settling task runs after that subscribe.)
    fn unreserve(&self, state: &mut State, key: &Key) -> bool {
        if let Some(n) = state.reserved.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                state.reserved.remove(key);
            }
        }
        !self.wanted(state, key)
    }

    /// Brings the engine in line with what the node wants of `key`: one
    /// subscribe or unsubscribe round trip at most, under the stripe's
    /// engine lock. `Err` only when the engine refused a subscribe.
    async fn reconcile(self: Arc<Self>, key: Key) -> Result<(), EngineError> {
        let stripe = self.stripe(key.name());
        let _order = stripe.engine.lock().await;
        let (want, carried) = {
            let s = self.lock(key.name());
            (self.wanted(&s, &key), s.carried.contains(&key))
        };
        match (want, carried) {
            (true, false) => {
                self.broker.subscribed(key.interest()).await?;
                self.lock(key.name()).carried.insert(key);
                Ok(())
            }
            (false, true) => {
                self.lock(key.name()).carried.remove(&key);
                // A failure only means the node may still receive what
                // nobody here wants: logged, not a client's concern.
                if let Err(e) = self.broker.unsubscribed(key.interest()).await {
                    tracing::warn!(error = %e, "engine unsubscribe failed");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Has [`Interests::reconcile`] run for `key` (a departure, or a
    /// reservation let go; under its stripe's lock) by the stripe's
    /// settling task, started if it is not running: one task per stripe,
    /// however many names leave at once, and nobody waits for it.
    fn settle(self: &Arc<Self>, state: &mut State, key: Key) {
        state.unsettled.insert(key.owned());
        if state.settling {
            return;
        }
        let stripe = self.stripe_of(key.name());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                state.settling = true;
                rt.spawn(self.clone().settle_stripe(stripe));
            }
            // Outside a runtime (never in engine mode): the next settle
            // in one takes it along.
            Err(_) => tracing::warn!("engine unsubscribe deferred: no runtime"),
        }
    }

    /// The settling task of stripe `i`: reconciles its unsettled names
    /// one by one until none is left.
    async fn settle_stripe(self: Arc<Self>, i: usize) {
        loop {
            let key = {
                let m = &self.stripes[i].state;
                let mut s = acquire(|| m.try_lock(), || m.lock());
                let Some(key) = s.unsettled.iter().next().cloned() else {
                    s.settling = false;
                    s.unsettled.shrink_to(64);
                    return;
                };
                s.unsettled.remove(&key);
                key
            };
            // A subscribe it makes (a reservation arrived meanwhile) is
            // that reservation's to report; its own task asks again.
            let _ = self.clone().reconcile(key).await;
        }
    }
}

/// A subscriber on its way: the node wants its name while it is held, so
/// the engine keeps carrying it (see the module's notes). Dropped unused,
/// it lets go (and the engine stops carrying the name if nobody else
/// wants it). Empty with the memory engine.
#[must_use]
pub struct Ticket(Option<Reservation>);

struct Reservation {
    interests: Arc<Interests>,
    key: Key,
    /// Handed on to a registered subscriber.
    spent: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.spent {
            return;
        }
        let i = &self.interests;
        let mut state = i.lock(self.key.name());
        if i.unreserve(&mut state, &self.key) {
            i.settle(&mut state, self.key.clone());
        }
    }
}

impl Ticket {
    /// Hands the want on to the registry (under the stripe's lock, after
    /// the registration): nothing is left to settle.
    fn spend(self, state: &mut State) {
        if let Some(mut r) = self.0 {
            r.interests.unreserve(state, &r.key);
            r.spent = true;
        }
    }
}

impl Hub {
    /// Whether subscribing a name this node does not carry yet waits for
    /// the engine (front ends then await [`Hub::prepare_subscribe_pending`]).
    pub fn subscribes_await(&self) -> bool {
        self.interests.awaits
    }

    /// Enters a subscription: the registry first (the caller has queued its
    /// confirmation already, so it precedes the first message), then the
    /// engine when it is this node's first subscriber of the channel, then
    /// presence. False when the client was subscribed already. On an engine
    /// error nothing stays registered. With an engine whose subscribes are
    /// round trips, this thread waits for it where the name is new: front
    /// ends that can await use [`Hub::prepare_subscribe_pending`] and
    /// [`Hub::subscribe_with`].
    pub fn subscribe(&self, sub: Subscription) -> Result<bool, EngineError> {
        let ticket = self.prepare_subscribe_pending(Some(sub.space), &sub.channel);
        self.subscribe_with(sub, ticket.wait()?)
    }

    /// [`Hub::subscribe`] with the ticket of a prepared subscribe (which
    /// the engine carries already): nothing waits.
    pub fn subscribe_with(&self, sub: Subscription, ticket: Ticket) -> Result<bool, EngineError> {
        let i = &self.interests;
        let mut state = i.lock(&sub.channel);
        let change =
            self.registry
                .subscribe_edge(sub.space, sub.channel.clone(), sub.client, sub.sink);
        if i.awaits {
            ticket.spend(&mut state);
        } else {
            drop(ticket);
            self.entered(sub.space, &sub.channel, sub.client, change)?;
        }
        drop(state);
        if let (true, Some(entry)) = (change.changed(), sub.presence) {
            self.presence_join(&sub.channel, entry);
        }
        Ok(change.changed())
    }

    /// Tells the memory engine about a first subscriber (under the
    /// stripe's lock); undoes the registration when it refuses.
    fn entered(
        &self,
        space: Space,
        channel: &Bytes,
        client: ClientId,
        change: Change,
    ) -> Result<(), EngineError> {
        if change != Change::Edge {
            return Ok(());
        }
        let key = Key::new(Some(space), channel.clone());
        if let Err(e) = self.engine.broker.subscribed(key.interest()).wait() {
            self.registry.unsubscribe(space, channel, client);
            return Err(e);
        }
        Ok(())
    }

    /// Makes sure the engine carries `name` (a channel of `space`, or a
    /// pattern when `space` is `None`) to this node before a front end
    /// confirms a subscription to it: an engine that cannot is refused
    /// here, before anything is confirmed or registered. This thread
    /// waits; see [`Hub::prepare_subscribe_pending`].
    pub fn prepare_subscribe(
        &self,
        space: Option<Space>,
        name: &Bytes,
    ) -> Result<Ticket, EngineError> {
        self.prepare_subscribe_pending(space, name).wait()
    }

    /// [`Hub::prepare_subscribe`] for a caller that awaits: ready at once
    /// with the memory engine, or where this node carries the name
    /// already; else done when the engine has subscribed it (the work goes
    /// on, on its own task, if the caller stops waiting: what it started
    /// is undone then, not left half done). The ticket goes to
    /// [`Hub::subscribe_with`] / [`Hub::psubscribe_with`].
    pub fn prepare_subscribe_pending(
        &self,
        space: Option<Space>,
        name: &Bytes,
    ) -> engine::Pending<'static, Result<Ticket, EngineError>> {
        let i = &self.interests;
        let key = Key::new(space, name.clone());
        if !i.awaits {
            let state = i.lock(name);
            let r = if i.held(&key) {
                Ok(())
            } else {
                self.engine.broker.subscribed(key.interest()).wait()
            };
            drop(state);
            return engine::Pending::ready(r.map(|()| Ticket(None)));
        }
        let carried = {
            let mut s = i.lock(name);
            match s.reserved.get_mut(&key) {
                Some(n) => *n += 1,
                None => {
                    s.reserved.insert(key.owned(), 1);
                }
            }
            s.carried.contains(&key)
        };
        let ticket = Ticket(Some(Reservation {
            interests: i.clone(),
            key: key.clone(),
            spent: false,
        }));
        if carried {
            // Nothing stops carrying it while the ticket wants it.
            return engine::Pending::ready(Ok(ticket));
        }
        let fut = i.clone().reconcile(key.owned());
        let task = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt.spawn(fut),
            Err(_) => {
                return engine::Pending::ready(engine::Pending::boxed(fut).wait().map(|()| ticket))
            }
        };
        engine::Pending::boxed(async move {
            match task.await {
                // Dropped on an error: let go.
                Ok(r) => r.map(|()| ticket),
                Err(_) => Err(EngineError::Unavailable("subscribe lost".into())),
            }
        })
    }

    /// Enters a pattern subscription; false when it was there already.
    pub fn psubscribe(
        &self,
        pattern: Bytes,
        client: ClientId,
        sink: Arc<dyn Subscriber>,
    ) -> Result<bool, EngineError> {
        let ticket = self.prepare_subscribe_pending(None, &pattern).wait()?;
        self.psubscribe_with(pattern, client, sink, ticket)
    }

    /// [`Hub::psubscribe`] with a prepared subscribe's ticket.
    pub fn psubscribe_with(
        &self,
        pattern: Bytes,
        client: ClientId,
        sink: Arc<dyn Subscriber>,
        ticket: Ticket,
    ) -> Result<bool, EngineError> {
        let i = &self.interests;
        let mut state = i.lock(&pattern);
        let change = self.registry.psubscribe_edge(pattern.clone(), client, sink);
        if i.awaits {
            ticket.spend(&mut state);
        } else if change == Change::Edge {
            drop(ticket);
            let r = self
                .engine
                .broker
                .subscribed(engine::Interest::Pattern(&pattern))
                .wait();
            if let Err(e) = r {
                self.registry.punsubscribe(&pattern, client);
                return Err(e);
            }
        }
        Ok(change.changed())
    }

    /// Leaves a channel (and its presence); false when not subscribed.
    /// Never waits for the engine.
    pub fn unsubscribe(&self, space: Space, channel: &[u8], client: ClientId) -> bool {
        let i = &self.interests;
        let mut state = i.lock(channel);
        let change = self.registry.unsubscribe_edge(space, channel, client);
        if change == Change::Edge {
            let key = Key::new(Some(space), Bytes::copy_from_slice(channel));
            self.departed(&mut state, key);
        }
        drop(state);
        // Presence is entered only with a registered subscription: a client
        // that was not subscribed has no entry to remove (and an engine
        // doing I/O is not asked).
        if space == Space::Global && change.changed() {
            self.presence_leave(channel, client);
        }
        change.changed()
    }

    /// Leaves a pattern; false when not subscribed.
    pub fn punsubscribe(&self, pattern: &[u8], client: ClientId) -> bool {
        let i = &self.interests;
        let mut state = i.lock(pattern);
        let change = self.registry.punsubscribe_edge(pattern, client);
        if change == Change::Edge {
            self.departed(&mut state, Key::Pattern(Bytes::copy_from_slice(pattern)));
        }
        change.changed()
    }

    /// This node's last registered subscriber of `key` left (under the
    /// stripe's lock): with the memory engine, it is told at once; else,
    /// where no reservation wants the name, a task unsubscribes it.
    fn departed(&self, state: &mut State, key: Key) {
        let i = &self.interests;
        if !i.awaits {
            // A failure only means the node may still receive what
            // nobody here wants: logged, not the client's concern.
            if let Err(e) = self.engine.broker.unsubscribed(key.interest()).wait() {
                tracing::warn!(error = %e, "engine unsubscribe failed");
            }
            return;
        }
        if !i.wanted(state, &key) {
            i.settle(state, key);
        }
    }

    /// Leaves everything a client holds (disconnect, RESET): channels with
    /// their presence, shard channels, patterns, leaderboard watches.
    pub fn leave_all<'a>(
        &self,
        client: ClientId,
        channels: impl IntoIterator<Item = &'a [u8]>,
        shard_channels: impl IntoIterator<Item = &'a [u8]>,
        patterns: impl IntoIterator<Item = &'a [u8]>,
        leaderboards: impl IntoIterator<Item = &'a [u8]>,
    ) {
        for c in channels {
            self.unsubscribe(Space::Global, c, client);
        }
        for c in shard_channels {
            self.unsubscribe(Space::Shard, c, client);
        }
        for p in patterns {
            self.punsubscribe(p, client);
        }
        for k in leaderboards {
            self.watchers.unwatch(k, client);
        }
    }
}
