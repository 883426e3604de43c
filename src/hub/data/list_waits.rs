//! Blocked list pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH), served as Redis
//! serves them: each waiter is queued on each of its keys in arrival
//! order; a command that pushes to a key with waiters marks it ready, and
//! once the command is over (an EXEC: once the whole transaction is) the
//! ready keys' waiters are served in order, one element each, while the
//! list has elements, under the same hold of the keyspace lock. The
//! element is popped (and, for a move, pushed) for the waiter right there,
//! not by the waiter's connection later: no other client can take it in
//! between, a push of three elements serves three waiters, and a waiter
//! blocked on several keys is served from the first that gets elements.
//!
//! The connection parks with a [`ListWaitGuard`] and waits for its
//! [signal](ListWaitGuard::signal); at its deadline it [cancels](ListWaitGuard::cancel)
//! (getting the element anyway if it was served meanwhile), and dropping
//! the guard (a client that leaves, is killed, or whose token expires)
//! takes it out of every queue.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::lists::{has_elements, list_mut, move_one, pop_one};
use super::DataError;
use crate::hub::list::End;
use crate::hub::{Db, Hub};

/// Where a blocked pop's element goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PopTo {
    /// BLPOP, BRPOP: to the client, with its key.
    Client,
    /// BLMOVE, BRPOPLPUSH: pushed at `to` of `dst` (and to the client).
    List { dst: Bytes, to: End },
}

/// An element a pop got, and the key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped {
    pub key: Bytes,
    pub value: Bytes,
}

/// What a blocking pop did at once.
pub enum BlockingPop {
    /// An element was there.
    Got(Popped),
    /// Nothing there, and blocking not allowed (inside MULTI): Redis
    /// answers as for a timeout.
    Empty,
    /// Queued: the caller parks with the guard.
    Parked(ListWaitGuard),
}

enum State {
    Waiting,
    Served(Result<Popped, DataError>),
    /// Cancelled, or its outcome taken.
    Over,
}

/// One blocked pop, queued on each of its keys.
pub struct ListWait {
    /// Arrival order: a key's queue is ordered by it.
    seq: u64,
    keys: Vec<Bytes>,
    from: End,
    to: PopTo,
    state: Mutex<State>,
    done: Notify,
}

impl ListWait {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, outcome: Result<Popped, DataError>) {
        *self.state() = State::Served(outcome);
        self.done.notify_waiters();
    }
}

/// The queues of blocked pops, kept with the keyspace (`Db::list_waits`).
#[derive(Default)]
pub struct ListWaits {
    /// Per key, its waiters by arrival.
    queues: HashMap<Bytes, BTreeMap<u64, Arc<ListWait>>>,
    /// Keys that got elements since their waiters were last served, in
    /// that order, each once (`ready_set`: which are there).
    ready: VecDeque<Bytes>,
    ready_set: HashSet<Bytes>,
    next_seq: u64,
}

impl ListWaits {
    /// Notes that the list at `key` got elements.
    pub(super) fn pushed(&mut self, key: &[u8]) {
        if self.queues.is_empty() || !self.queues.contains_key(key) || self.ready_set.contains(key)
        {
            return;
        }
        let key = Bytes::copy_from_slice(key);
        self.ready_set.insert(key.clone());
        self.ready.push_back(key);
    }

    fn next_ready(&mut self) -> Option<Bytes> {
        let key = self.ready.pop_front()?;
        self.ready_set.remove(&key);
        Some(key)
    }

    fn enqueue(&mut self, w: &Arc<ListWait>) {
        for k in &w.keys {
            self.queues
                .entry(k.clone())
                .or_default()
                .insert(w.seq, w.clone());
        }
    }

    fn unlink(&mut self, w: &ListWait) {
        for k in &w.keys {
            if let Some(q) = self.queues.get_mut(k) {
                q.remove(&w.seq);
                if q.is_empty() {
                    self.queues.remove(k);
                }
            }
        }
    }

    fn first(&self, key: &[u8]) -> Option<Arc<ListWait>> {
        self.queues.get(key)?.values().next().cloned()
    }

    /// Keys with blocked pops (for tests: nothing left behind).
    pub fn keys_waited_on(&self) -> usize {
        self.queues.len()
    }
}

thread_local! {
    /// Transactions running on this thread: their pushes are served when
    /// the outermost ends.
    static DEFERRING: Cell<u32> = const { Cell::new(0) };
}

/// Serves the ready keys' waiters, unless a transaction runs on this
/// thread (then its end does).
pub(super) fn serve_now(db: &mut Db) {
    if !db.list_waits.ready.is_empty() && DEFERRING.with(|d| d.get()) == 0 {
        serve_ready(db);
    }
}

/// Serves waiters, first come first served per key, while their lists
/// have elements; a move may make its destination ready in turn.
fn serve_ready(db: &mut Db) {
    while let Some(key) = db.list_waits.next_ready() {
        while let Some(w) = db.list_waits.first(&key) {
            if !has_elements(db, &key) {
                break;
            }
            let got = match &w.to {
                PopTo::Client => pop_one(db, &key, w.from).map(Ok),
                // A destination of another type: the waiter gets WRONGTYPE
                // and the element stays (Redis 7.0).
                PopTo::List { dst, to } => match move_one(db, &key, dst, w.from, *to) {
                    Ok(v) => v.map(Ok),
                    Err(e) => Some(Err(e.into())),
                },
            };
            let Some(got) = got else {
                break;
            };
            db.list_waits.unlink(&w);
            w.finish(got.map(|value| Popped {
                key: key.clone(),
                value,
            }));
        }
    }
}

impl Hub {
    /// Runs `f` (an EXEC) with the blocked pops its pushes would serve
    /// held back until it returns, as Redis serves them after EXEC (a
    /// queued `LLEN` still sees what was pushed).
    pub(crate) fn deferring_list_service<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Depth;
        impl Drop for Depth {
            fn drop(&mut self) {
                DEFERRING.with(|d| d.set(d.get() - 1));
            }
        }
        DEFERRING.with(|d| d.set(d.get() + 1));
        let r = {
            let _depth = Depth;
            f()
        };
        serve_now(&mut self.keyspace.lock());
        r
    }

    /// BLPOP and BRPOP (`to`: [`PopTo::Client`]), BLMOVE and BRPOPLPUSH
    /// (one key, [`PopTo::List`]): pops at `from` of the first of `keys`
    /// with elements, as LPOP/RPOP/LMOVE would. Otherwise, with
    /// `may_block`, queues the pop behind any others on the same keys.
    /// WRONGTYPE for a key of another type met before one with elements
    /// (for a move, also for a destination of another type when the
    /// source has elements).
    pub fn blocking_pop(
        self: &Arc<Self>,
        keys: &[Bytes],
        from: End,
        to: PopTo,
        may_block: bool,
    ) -> Result<BlockingPop, DataError> {
        let mut db = self.keyspace.lock();
        for k in keys {
            if list_mut(&mut db, k)?.is_none_or(|l| l.is_empty()) {
                continue;
            }
            let value = match &to {
                PopTo::Client => pop_one(&mut db, k, from),
                PopTo::List { dst, to } => move_one(&mut db, k, dst, from, *to)?,
            };
            serve_now(&mut db);
            return Ok(match value {
                Some(value) => BlockingPop::Got(Popped {
                    key: k.clone(),
                    value,
                }),
                None => BlockingPop::Empty,
            });
        }
        if !may_block {
            return Ok(BlockingPop::Empty);
        }
        // A key named twice waits once (a set: a request may name many).
        let mut seen = HashSet::with_capacity(keys.len());
        let unique: Vec<Bytes> = keys
            .iter()
            .filter(|k| seen.insert(&k[..]))
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        let seq = db.list_waits.next_seq;
        db.list_waits.next_seq += 1;
        let wait = Arc::new(ListWait {
            seq,
            keys: unique,
            from,
            to,
            state: Mutex::new(State::Waiting),
            done: Notify::new(),
        });
        db.list_waits.enqueue(&wait);
        Ok(BlockingPop::Parked(ListWaitGuard {
            hub: self.clone(),
            wait,
        }))
    }
}

/// A queued blocked pop, held by the parked connection. Dropping it
/// withdraws the pop if it was not served.
pub struct ListWaitGuard {
    hub: Arc<Hub>,
    wait: Arc<ListWait>,
}

impl ListWaitGuard {
    /// A handle that tells when the pop was served (then
    /// [`ListWaitGuard::take`] has its outcome), without owning the pop.
    pub fn signal(&self) -> ListServed {
        ListServed(self.wait.clone())
    }

    /// The outcome of a pop that was served (once).
    pub fn take(&self) -> Option<Result<Popped, DataError>> {
        let mut s = self.wait.state();
        match std::mem::replace(&mut *s, State::Over) {
            State::Served(r) => Some(r),
            other => {
                *s = other;
                None
            }
        }
    }

    /// Withdraws the pop (its deadline passed); what it got if it was
    /// served meanwhile.
    pub fn cancel(self) -> Option<Result<Popped, DataError>> {
        self.withdraw();
        self.take()
    }

    fn withdraw(&self) {
        if !matches!(*self.wait.state(), State::Waiting) {
            return;
        }
        let mut db = self.hub.keyspace.lock();
        // Served while the lock was awaited: keep the outcome.
        let mut s = self.wait.state();
        if matches!(*s, State::Waiting) {
            *s = State::Over;
            db.list_waits.unlink(&self.wait);
        }
    }
}

/// See [`ListWaitGuard::signal`].
pub struct ListServed(Arc<ListWait>);

impl ListServed {
    /// Completes once the pop was served (or withdrawn).
    pub async fn served(&self) {
        loop {
            let notified = self.0.done.notified();
            tokio::pin!(notified);
            // Registered before the check, so a service in between is
            // not missed.
            notified.as_mut().enable();
            if !matches!(*self.0.state(), State::Waiting) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ListWaitGuard {
    fn drop(&mut self) {
        self.withdraw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn park(h: &Arc<Hub>, keys: &[&str], to: PopTo) -> ListWaitGuard {
        let keys: Vec<Bytes> = keys.iter().map(|k| b(k)).collect();
        match h.blocking_pop(&keys, End::Left, to, true) {
            Ok(BlockingPop::Parked(g)) => g,
            _ => panic!("not parked"),
        }
    }

    fn got(g: &ListWaitGuard) -> Option<(Bytes, Bytes)> {
        g.take()
            .map(|r| r.map(|p| (p.key, p.value)).expect("served"))
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order_one_element_each() {
        let h = Arc::new(Hub::default());
        let first = park(&h, &["q"], PopTo::Client);
        let second = park(&h, &["other", "q"], PopTo::Client);
        let third = park(&h, &["q"], PopTo::Client);
        assert_eq!(
            h.list_push(&b("q"), End::Right, &[b("a"), b("b")], false),
            Ok(2)
        );
        tokio::time::timeout(Duration::from_secs(1), first.signal().served())
            .await
            .unwrap();
        assert_eq!(got(&first), Some((b("q"), b("a"))));
        assert_eq!(got(&second), Some((b("q"), b("b"))));
        assert_eq!(got(&third), None);
        // The list is gone; the second's other key waits no more.
        assert_eq!(h.key_type(b"q"), "none");
        assert_eq!(h.keyspace.lock().list_waits.keys_waited_on(), 1);
        drop(third);
        assert_eq!(h.keyspace.lock().list_waits.keys_waited_on(), 0);
    }

    #[test]
    fn a_transaction_serves_at_its_end() {
        let h = Arc::new(Hub::default());
        let w = park(&h, &["q"], PopTo::Client);
        let len = h.deferring_list_service(|| {
            h.list_push(&b("q"), End::Left, &[b("x")], false).unwrap();
            h.llen(b"q").unwrap()
        });
        assert_eq!(len, 1);
        assert_eq!(got(&w), Some((b("q"), b("x"))));
        assert_eq!(h.llen(b"q"), Ok(0));
    }

    #[test]
    fn moves_chain_and_a_wrong_destination_fails_the_waiter() {
        let h = Arc::new(Hub::default());
        h.set(&b("s"), b"v", Default::default()).unwrap();
        let bad = park(
            &h,
            &["q"],
            PopTo::List {
                dst: b("s"),
                to: End::Left,
            },
        );
        let mover = park(
            &h,
            &["q"],
            PopTo::List {
                dst: b("d"),
                to: End::Left,
            },
        );
        let popper = park(&h, &["d"], PopTo::Client);
        h.list_push(&b("q"), End::Left, &[b("x")], false).unwrap();
        assert_eq!(bad.take(), Some(Err(DataError::WrongType)));
        assert_eq!(got(&mover), Some((b("q"), b("x"))));
        assert_eq!(got(&popper), Some((b("d"), b("x"))));
        assert_eq!(h.key_type(b"d"), "none");
    }

    #[test]
    fn a_cancelled_wait_keeps_what_it_was_given() {
        let h = Arc::new(Hub::default());
        let w = park(&h, &["q"], PopTo::Client);
        h.list_push(&b("q"), End::Left, &[b("x")], false).unwrap();
        assert_eq!(
            w.cancel(),
            Some(Ok(Popped {
                key: b("q"),
                value: b("x")
            }))
        );
        let w = park(&h, &["q"], PopTo::Client);
        assert_eq!(w.cancel(), None);
        assert_eq!(h.keyspace.lock().list_waits.keys_waited_on(), 0);
        h.list_push(&b("q"), End::Left, &[b("y")], false).unwrap();
        assert_eq!(h.llen(b"q"), Ok(1));
    }
}
