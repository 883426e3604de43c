//! A connection's bounded, ordered queue of encoded output.
//!
//! Publishers push shared, already-encoded `Bytes` here; the connection's own
//! task pushes its replies here too, so one queue fixes the order of
//! everything the client sees. The task drains the queue in one batch per
//! write. Bytes count against the limits until they are written to the
//! socket, in the manner of Redis's `client-output-buffer-limit pubsub`: past
//! the hard limit, or above the soft limit for longer than its duration, the
//! outbox closes itself and the connection is cut off. Nothing is dropped
//! silently: a closed outbox refuses pushes and its owner disconnects.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Frames up to this size are copied into a byte-stream outbox's tail
/// buffer instead of queued as shared `Bytes` (see [`Outbox::push_ref`]).
const SMALL_FRAME: usize = 512;
/// Least allocation of the tail buffer.
const TAIL_START: usize = 2048;
/// Largest tail buffer kept for reuse while a connection is busy.
const TAIL_KEEP: usize = 64 * 1024;
/// An outbox's pending bytes count in its [`OutputBudget`] in steps of
/// this many (rounded down): the shared count is touched only when a
/// connection's queue crosses a step, not for every delivery, so the
/// fan-out of small messages to subscribers that keep up never writes the
/// shared cache line (each such write from another core costs a transfer
/// of that line). Below one step a connection counts nothing: its queue is
/// the ordinary working set of a fan-out, bounded by the connection count.
pub const BUDGET_STEP: usize = 16 * 1024;

thread_local! {
    static DEFERRED: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// Runs `f` with subscriber wake-ups held back until it returns. A
/// connection runs each batch of pipelined requests this way, so 16
/// pipelined PUBLISHes wake each subscriber once, not 16 times, and the
/// subscriber writes them in one go (as Redis writes in `beforeSleep`).
pub fn defer_wakes<R>(f: impl FnOnce() -> R) -> R {
    let nested = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_some() {
            return true;
        }
        *d = Some(Vec::new());
        false
    });
    if nested {
        return f();
    }
    // Wakes what was deferred when `f` returns, and also when it panics:
    // a list left behind would hold back every later wake-up on this thread.
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            let list = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
            for o in list {
                o.notify.notify_one();
            }
        }
    }
    let _flush = Flush;
    f()
}

/// Output buffer limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Cut off at once when pending output exceeds this many bytes (0: none).
    pub hard_bytes: usize,
    /// Cut off when pending output stays above this many bytes (0: none) ...
    pub soft_bytes: usize,
    /// ... for longer than this.
    pub soft_duration: Duration,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            hard_bytes: 32 << 20,
            soft_bytes: 8 << 20,
            soft_duration: Duration::from_secs(60),
        }
    }
}

/// `limits` as an `Arc` shared with the last outbox built with the same
/// ones. A server has one set of limits for all its connections: a pointer
/// to them instead of a 40-byte copy in each outbox saves 32 bytes of every
/// idle connection. Only the last value is kept, so nothing accumulates.
fn shared(limits: OutputLimits) -> Arc<OutputLimits> {
    static LAST: Mutex<Option<Arc<OutputLimits>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match last.as_ref() {
        Some(l) if **l == limits => l.clone(),
        _ => last.insert(Arc::new(limits)).clone(),
    }
}

/// Output pending in every outbox that shares it, and in HTTP answers
/// being sent: one server-wide count (`--output-buffer-global-limit`), so
/// that a front end can refuse a request whose large reply would push the
/// total past `limit` instead of queuing it (per-connection limits alone
/// let N connections hold N times the hard limit). Deliveries and replies
/// are counted alike, each outbox in steps of [`BUDGET_STEP`]; the front
/// ends decide what to refuse: a WebSocket's large reply is refused (109),
/// a RESP reply that does not fit closes its connection
/// ([`Outbox::push_reply`]), an HTTP answer gets 503 ([`OutputBudget::hold`]).
///
/// A budget may be a share of another ([`OutputBudget::share_of`]): one
/// client address's part of the global budget
/// (`--output-buffer-client-limit`), so that one address cannot fill the
/// whole budget and make every other client's large replies fail. Its
/// bytes count in both, and fit only where they fit both.
#[derive(Debug, Default)]
pub struct OutputBudget {
    used: AtomicUsize,
    /// 0: no limit.
    limit: usize,
    /// The budget this one is a share of.
    parent: Option<Arc<OutputBudget>>,
}

impl OutputBudget {
    pub fn new(limit: usize) -> Arc<OutputBudget> {
        Arc::new(OutputBudget {
            used: AtomicUsize::new(0),
            limit,
            parent: None,
        })
    }

    /// A budget of `limit` bytes within `parent`.
    pub fn share_of(parent: &Arc<OutputBudget>, limit: usize) -> Arc<OutputBudget> {
        Arc::new(OutputBudget {
            used: AtomicUsize::new(0),
            limit,
            parent: Some(parent.clone()),
        })
    }

    /// The budget this one is a share of, or itself.
    pub fn global(self: &Arc<Self>) -> &Arc<OutputBudget> {
        match &self.parent {
            Some(p) => p.global(),
            None => self,
        }
    }

    /// Bytes pending across the outboxes sharing this budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True when `len` more bytes stay within the limit. A check, not a
    /// reservation: requests checked at the same moment on other threads
    /// may each pass, so the total can overshoot by one reply per thread.
    pub fn fits(&self, len: usize) -> bool {
        (self.limit == 0 || self.used().saturating_add(len) <= self.limit)
            && self.parent.as_ref().is_none_or(|p| p.fits(len))
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.add(n);
        }
    }

    fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.sub(n);
        }
    }

    /// Counts `len` bytes until the returned hold is dropped, if they fit
    /// under the limit (see [`OutputBudget::fits`]); `None` otherwise.
    pub fn hold(self: &Arc<Self>, len: usize) -> Option<BudgetHold> {
        if !self.fits(len) {
            return None;
        }
        self.add(len);
        Some(BudgetHold {
            budget: self.clone(),
            len,
        })
    }
}

/// Bytes counted in an [`OutputBudget`] until this is dropped: an HTTP
/// answer holds one inside its body's buffer (`Bytes::from_owner`), so
/// the bytes count until hyper has written them and let go.
#[derive(Debug)]
pub struct BudgetHold {
    budget: Arc<OutputBudget>,
    len: usize,
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        self.budget.sub(self.len);
    }
}

/// Why an outbox closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Hard,
    Soft,
    /// A reply or delivery would have pushed the server-wide output past
    /// `--output-buffer-global-limit`.
    Global,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// Small frames copied in after everything in `queue` (byte streams
    /// only); moved into `queue` before anything else is queued.
    tail: BytesMut,
    /// Queued plus taken-but-unwritten bytes.
    pending: usize,
    /// The part of `pending` counted in the budget: `pending` rounded
    /// down to a [`BUDGET_STEP`] (0 without a budget).
    budgeted: usize,
    soft_since: Option<Instant>,
    overflow: Option<Overflow>,
    closed: bool,
    /// The budget this outbox's pending bytes belong to, if any (under
    /// the lock: [`Outbox::set_budget`] moves them to another).
    budget: Option<Arc<OutputBudget>>,
}

/// See the module docs.
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Shared by every outbox with the same limits (see [`shared`]).
    limits: Arc<OutputLimits>,
    /// The owner writes a byte stream (RESP), so small frames may be
    /// copied together; a WebSocket owner needs each frame on its own.
    stream: bool,
}

impl State {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tail.is_empty()
    }

    /// Moves the tail buffer into the queue, keeping order.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            // A buffer up to TAIL_KEEP is split, keeping its spare capacity:
            // the whole allocation comes back once the writer drops the
            // frozen part, so a busy subscriber does not allocate (and free
            // on another thread) a buffer per write: 5 % of the fan-out
            // benchmark's CPU. A larger one, grown by a burst, is let go;
            // [`Outbox::trim`] lets go of what idle connections keep.
            let t = if self.tail.capacity() <= TAIL_KEEP {
                self.tail.split()
            } else {
                std::mem::take(&mut self.tail)
            };
            self.queue.push_back(t.freeze());
        }
    }
}

impl Outbox {
    /// An outbox of separate frames (WebSocket messages).
    pub fn new(limits: OutputLimits) -> Outbox {
        Outbox::build(limits, false, None)
    }

    /// An outbox whose owner writes one byte stream: small frames pushed
    /// with [`Outbox::push_ref`] are copied into one buffer.
    pub fn stream(limits: OutputLimits) -> Outbox {
        Outbox::build(limits, true, None)
    }

    /// An outbox of separate frames whose pending bytes also count in the
    /// shared `budget`.
    pub fn with_budget(limits: OutputLimits, budget: Arc<OutputBudget>) -> Outbox {
        Outbox::build(limits, false, Some(budget))
    }

    /// A byte-stream outbox whose pending bytes count in the shared
    /// `budget`, and whose owner's replies must fit it (see
    /// [`Outbox::push_reply`]).
    pub fn stream_with_budget(limits: OutputLimits, budget: Arc<OutputBudget>) -> Outbox {
        Outbox::build(limits, true, Some(budget))
    }

    fn build(limits: OutputLimits, stream: bool, budget: Option<Arc<OutputBudget>>) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                budget,
                ..State::default()
            }),
            notify: Notify::new(),
            limits: shared(limits),
            stream,
        }
    }

    /// Moves this outbox's pending bytes to `budget` (a RESP client that
    /// authenticates with the password leaves its address's share for
    /// the global budget, and goes back on RESET).
    pub fn set_budget(&self, budget: Arc<OutputBudget>) {
        let mut st = self.lock();
        if st.budget.as_ref().is_some_and(|b| Arc::ptr_eq(b, &budget)) {
            return;
        }
        if let Some(old) = &st.budget {
            old.sub(st.budgeted);
        }
        budget.add(st.budgeted);
        st.budget = Some(budget);
    }

    /// Whether `len` more bytes fit this outbox's budget (and the budgets
    /// it is a share of); without one, anything fits.
    pub fn budget_has_room(&self, len: usize) -> bool {
        self.lock().budget.as_ref().is_none_or(|b| b.fits(len))
    }

    /// Brings the budgeted part of `pending` to its step after `pending`
    /// changed. Touches the shared count only when a step was crossed.
    fn rebudget(&self, st: &mut State) {
        let Some(b) = &st.budget else {
            return;
        };
        let target = st.pending - st.pending % BUDGET_STEP;
        if target > st.budgeted {
            b.add(target - st.budgeted);
        } else if target < st.budgeted {
            b.sub(st.budgeted - target);
        }
        st.budgeted = target;
    }

    /// Whether `len` more pending bytes still fit the budget: the step
    /// they would add to it must (without a budget, anything fits).
    fn budget_fits(&self, st: &State, len: usize) -> bool {
        let Some(b) = &st.budget else {
            return true;
        };
        let pending = st.pending.saturating_add(len);
        let target = pending - pending % BUDGET_STEP;
        target <= st.budgeted || b.fits(target - st.budgeted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a few field updates), so poisoning is
        // ignored rather than propagated into every publisher.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `bytes` for the client. Returns false when the outbox is closed
    /// (the client is gone or was cut off for overflowing); the bytes are then
    /// not queued, and the owner is already on its way to disconnecting.
    pub fn push(self: &Arc<Self>, bytes: Bytes) -> bool {
        self.push_with(bytes.len(), |st| {
            st.seal_tail();
            st.queue.push_back(bytes);
        })
    }

    /// Like [`Outbox::push`] for a frame shared with other subscribers. A
    /// byte-stream outbox copies a small frame into its tail buffer rather
    /// than taking a reference: a copy of a hundred bytes costs less than a
    /// reference count that every subscriber's core increments and drops,
    /// and the writer then finds the frames already side by side.
    pub fn push_ref(self: &Arc<Self>, bytes: &Bytes) -> bool {
        self.push_refs(std::iter::once(bytes))
    }

    /// [`Outbox::push_ref`] for several frames at once, in order: one lock
    /// and at most one wake-up. All or nothing under the limits.
    pub fn push_refs<'b>(
        self: &Arc<Self>,
        frames: impl Iterator<Item = &'b Bytes> + Clone,
    ) -> bool {
        let copied = |n: usize| self.stream && n <= SMALL_FRAME;
        let len = frames.clone().map(Bytes::len).sum();
        let small: usize = frames.clone().map(Bytes::len).filter(|&n| copied(n)).sum();
        self.push_with(len, |st| {
            for f in frames {
                if copied(f.len()) {
                    if st.tail.capacity() - st.tail.len() < f.len() {
                        st.tail.reserve(TAIL_START.max(small));
                    }
                    st.tail.extend_from_slice(f);
                } else {
                    st.seal_tail();
                    st.queue.push_back(f.clone());
                }
            }
        })
    }

    /// Admits `len` more bytes under the limits, then queues them with
    /// `enqueue` and wakes the owner if it had nothing queued. Past the
    /// global budget the outbox closes as past the hard limit: without
    /// that, N subscribers of one channel that read nothing held N times
    /// what its publisher sent, under each one's soft limit.
    fn push_with(self: &Arc<Self>, len: usize, enqueue: impl FnOnce(&mut State)) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.pending += len;
        let lim = &self.limits;
        if lim.hard_bytes > 0 && st.pending > lim.hard_bytes {
            st.pending -= len;
            return self.overflow(st, Overflow::Hard);
        }
        if lim.soft_bytes > 0 && st.pending > lim.soft_bytes {
            let now = Instant::now();
            match st.soft_since {
                None => st.soft_since = Some(now),
                Some(t) if now.duration_since(t) > lim.soft_duration => {
                    st.pending -= len;
                    return self.overflow(st, Overflow::Soft);
                }
                Some(_) => {}
            }
        } else {
            st.soft_since = None;
        }
        if !self.budget_fits(&st, 0) {
            st.pending -= len;
            return self.overflow(st, Overflow::Global);
        }
        let was_empty = st.is_empty();
        enqueue(&mut st);
        // Under the lock: a `written` racing ahead would otherwise take the
        // bytes out of the budget before they were put in.
        self.rebudget(&mut st);
        drop(st);
        if was_empty {
            self.notify_or_defer();
        }
        true
    }

    /// Wakes the owner now, or at the end of the current `defer_wakes`
    /// scope on this thread.
    fn notify_or_defer(self: &Arc<Self>) {
        let deferred = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
            Some(list) => {
                list.push(self.clone());
                true
            }
            None => false,
        });
        if !deferred {
            self.notify.notify_one();
        }
    }

    /// Queues the owner's own reply. Replies count as pending output but are
    /// not held to the connection's limits (the owner stops taking requests
    /// while its output is large, which bounds them). They are held to the
    /// shared budget: a reply that would push the server's output past it
    /// closes the outbox ([`Overflow::Global`]) instead of being queued, as
    /// the hard limit does for deliveries, so N clients that each ask for a
    /// large reply and never read cannot hold N times the memory. Returns
    /// false when the outbox is (now) closed.
    pub fn push_reply(&self, bytes: Bytes) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        let len = bytes.len();
        if !self.budget_fits(&st, len) {
            return self.overflow(st, Overflow::Global);
        }
        st.pending += len;
        let was_empty = st.is_empty();
        st.seal_tail();
        st.queue.push_back(bytes);
        self.rebudget(&mut st);
        drop(st);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Closes the outbox for overflowing.
    fn overflow(&self, mut st: std::sync::MutexGuard<'_, State>, why: Overflow) -> bool {
        st.overflow = Some(why);
        self.shut(&mut st);
        drop(st);
        self.notify.notify_one();
        false
    }

    /// Moves everything queued into `into` (in order). The bytes stay counted
    /// as pending until [`Outbox::written`] reports them sent.
    pub fn take(&self, into: &mut VecDeque<Bytes>) {
        let mut st = self.lock();
        st.seal_tail();
        if into.is_empty() {
            std::mem::swap(&mut st.queue, into);
        } else {
            into.extend(st.queue.drain(..));
        }
    }

    /// Reports `n` bytes written to the socket.
    pub fn written(&self, n: usize) {
        let mut st = self.lock();
        st.pending = st.pending.saturating_sub(n);
        // A closed outbox gave its bytes back to the budget already.
        if !st.closed {
            self.rebudget(&mut st);
        }
        if st.pending <= self.limits.soft_bytes {
            st.soft_since = None;
        }
    }

    /// Waits until something is queued or the outbox closes. Cancel-safe.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Wakes the owner without queuing anything.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// The overflow that closed this outbox, if any.
    pub fn overflowed(&self) -> Option<Overflow> {
        self.lock().overflow
    }

    /// Closes the outbox: later pushes are refused.
    pub fn close(&self) {
        let mut st = self.lock();
        self.shut(&mut st);
    }

    /// Closes and empties the queue; the pending bytes leave the budget,
    /// since whatever the owner still holds is dropped with the connection.
    fn shut(&self, st: &mut State) {
        if let Some(b) = &st.budget {
            b.sub(std::mem::take(&mut st.budgeted));
        }
        st.closed = true;
        st.queue.clear();
        st.tail = BytesMut::new();
    }

    /// Lets go of the tail buffer's and queue's memory when nothing is pending (the
    /// RESP front end calls this for every connection once a second, so an
    /// idle subscriber keeps no buffer for long).
    pub fn trim(&self) {
        let mut st = self.lock();
        if st.pending == 0 && st.tail.capacity() > 0 {
            st.tail = BytesMut::new();
        }
        // The queue's ring keeps its capacity when drained; an idle
        // subscriber (5,000 of them in herald-bench resp-idle) needs none.
        if st.queue.is_empty() && st.queue.capacity() > 0 {
            st.queue = VecDeque::new();
        }
    }

    /// Pending output in bytes (queued and not yet written).
    pub fn pending_bytes(&self) -> usize {
        self.lock().pending
    }

    /// Number of queued chunks.
    pub fn queued_len(&self) -> usize {
        let st = self.lock();
        st.queue.len() + usize::from(!st.tail.is_empty())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // An outbox dropped without `close` still gives its bytes back.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = &st.budget {
            b.sub(st.budgeted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn hard_limit_closes() {
        let o = Arc::new(Outbox::new(OutputLimits {
            hard_bytes: 100,
            soft_bytes: 0,
            soft_duration: Duration::ZERO,
        }));
        assert!(o.push(b(60)));
        assert!(!o.push(b(60)));
        assert_eq!(o.overflowed(), Some(Overflow::Hard));
        assert!(!o.push(b(1)), "a closed outbox refuses everything");
    }

    #[test]
    fn written_bytes_free_room() {
        let o = Arc::new(Outbox::new(OutputLimits {
            hard_bytes: 100,
            soft_bytes: 0,
            soft_duration: Duration::ZERO,
        }));
        let mut q = VecDeque::new();
        assert!(o.push(b(60)));
        o.take(&mut q);
        assert_eq!(q.len(), 1);
        assert!(!o.push(b(60)), "taken but unwritten bytes still count");
        let o = Arc::new(Outbox::new(OutputLimits {
            hard_bytes: 100,
            soft_bytes: 0,
            soft_duration: Duration::ZERO,
        }));
        assert!(o.push(b(60)));
        o.take(&mut q);
        o.written(60);
        assert!(o.push(b(60)));
    }

    #[test]
    fn stream_outbox_copies_small_frames_in_order() {
        let o = Arc::new(Outbox::stream(OutputLimits::default()));
        let small = Bytes::from_static(b"ab");
        let large = b(SMALL_FRAME + 1);
        assert!(o.push_ref(&small));
        assert!(o.push_refs([&small, &small].into_iter()));
        assert!(o.push_ref(&large));
        assert!(o.push_reply(Bytes::from_static(b"R")));
        assert!(o.push_ref(&small));
        assert_eq!(o.queued_len(), 4);
        assert_eq!(o.pending_bytes(), 2 * 4 + large.len() + 1);
        let mut q = VecDeque::new();
        o.take(&mut q);
        let got: Vec<&[u8]> = q.iter().map(|c| &c[..]).collect();
        assert_eq!(got, vec![&b"ababab"[..], &large[..], b"R", b"ab"]);
        // A frame outbox keeps frames apart.
        let o = Arc::new(Outbox::new(OutputLimits::default()));
        assert!(o.push_refs([&small, &small].into_iter()));
        o.take(&mut q);
        assert_eq!(q.len(), 6);
    }

    #[test]
    fn idle_outbox_lets_its_buffer_go() {
        let o = Arc::new(Outbox::stream(OutputLimits::default()));
        assert!(o.push_ref(&Bytes::from_static(b"hello")));
        let mut q = VecDeque::new();
        o.take(&mut q);
        o.trim();
        assert!(o.lock().tail.capacity() > 0, "bytes still pending: kept");
        o.written(5);
        q.clear();
        o.trim();
        assert_eq!(o.lock().tail.capacity(), 0);
    }

    #[test]
    fn deferred_wakes_survive_a_panic() {
        let o = Arc::new(Outbox::stream(OutputLimits::default()));
        let r = std::panic::catch_unwind(|| {
            defer_wakes(|| {
                o.push_ref(&Bytes::from_static(b"x"));
                panic!("command failed");
            })
        });
        assert!(r.is_err());
        assert!(DEFERRED.with(|d| d.borrow().is_none()), "scope closed");
        // The wake-up was delivered: `ready` completes at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(100), o.ready())
                .await
                .expect("woken");
        });
    }

    #[test]
    fn ready_keeps_a_wake_up_until_it_is_awaited() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let o = Arc::new(Outbox::stream(OutputLimits::default()));
        let wait = |o: &Arc<Outbox>, ms| {
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(ms), o.ready()).await })
                .is_ok()
        };
        assert!(!wait(&o, 10), "nothing happened yet");
        o.wake();
        assert!(wait(&o, 100), "a wake-up before the wait is kept");
        assert!(!wait(&o, 10), "and consumed once");
        // A push from another thread wakes a waiting owner.
        let o2 = o.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            o2.push(b(3));
        });
        assert!(wait(&o, 5_000));
        t.join().unwrap();
    }

    #[test]
    fn batch_is_refused_whole_past_the_hard_limit() {
        let o = Arc::new(Outbox::stream(OutputLimits {
            hard_bytes: 10,
            soft_bytes: 0,
            soft_duration: Duration::ZERO,
        }));
        let f = b(4);
        assert!(!o.push_refs([&f, &f, &f].into_iter()));
        assert_eq!(o.overflowed(), Some(Overflow::Hard));
        assert_eq!(o.queued_len(), 0);
    }

    #[test]
    fn soft_limit_needs_duration() {
        let o = Arc::new(Outbox::new(OutputLimits {
            hard_bytes: 0,
            soft_bytes: 10,
            soft_duration: Duration::from_millis(20),
        }));
        assert!(o.push(b(20)));
        assert!(o.push(b(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!o.push(b(1)));
        assert_eq!(o.overflowed(), Some(Overflow::Soft));
    }

    #[test]
    fn budget_counts_pending_bytes_of_all_its_outboxes_in_steps() {
        const S: usize = BUDGET_STEP;
        let budget = OutputBudget::new(10 * S);
        let limits = OutputLimits {
            hard_bytes: 8 * S,
            soft_bytes: 0,
            soft_duration: Duration::ZERO,
        };
        let x = Arc::new(Outbox::with_budget(limits, budget.clone()));
        let y = Arc::new(Outbox::with_budget(limits, budget.clone()));
        // Below a step nothing is counted: small deliveries never touch
        // the shared count.
        assert!(x.push(b(S - 1)));
        assert_eq!(budget.used(), 0);
        assert!(x.push(b(1)));
        assert_eq!(budget.used(), S, "a step crossed");
        assert!(x.push_reply(b(2 * S + 10)));
        assert!(y.push(b(5 * S)));
        assert_eq!(budget.used(), 8 * S);
        assert!(budget.fits(2 * S) && !budget.fits(2 * S + 1));
        // Written bytes leave the budget, step by step.
        let mut q = VecDeque::new();
        x.take(&mut q);
        x.written(S);
        assert_eq!(budget.used(), 7 * S);
        x.written(10);
        assert_eq!(budget.used(), 7 * S, "still 2 steps and 0 bytes pending");
        // An overflow gives back what was queued, not what it refused.
        assert!(!y.push(b(4 * S)));
        assert_eq!(y.overflowed(), Some(Overflow::Hard));
        assert_eq!(budget.used(), 2 * S);
        y.written(5 * S);
        assert_eq!(budget.used(), 2 * S, "a closed outbox already gave back");
        // Closing gives back taken-but-unwritten bytes too.
        x.close();
        assert_eq!(budget.used(), 0);
        let c = Arc::new(Outbox::with_budget(limits, budget.clone()));
        assert!(c.push(b(3 * S)));
        assert_eq!(budget.used(), 3 * S);
        drop(c);
        assert_eq!(budget.used(), 0, "dropping gives back");
        assert!(OutputBudget::new(0).fits(usize::MAX), "0: no limit");
    }

    #[test]
    fn an_address_share_holds_its_outboxes_and_password_clients_leave_it() {
        const S: usize = BUDGET_STEP;
        let limits = OutputLimits {
            hard_bytes: 0,
            soft_bytes: 0,
            soft_duration: Duration::ZERO,
        };
        let global = OutputBudget::new(8 * S);
        let here = OutputBudget::share_of(&global, 2 * S);
        let there = OutputBudget::share_of(&global, 2 * S);
        assert!(Arc::ptr_eq(here.global(), &global));
        let x = Arc::new(Outbox::with_budget(limits, here.clone()));
        let y = Arc::new(Outbox::with_budget(limits, here.clone()));
        assert!(x.push(b(S)) && y.push(b(S)));
        assert_eq!((here.used(), global.used()), (2 * S, 2 * S));
        assert!(!x.budget_has_room(S) && global.fits(S));
        // Past the address's share (the global budget has room): closed
        // as past the global budget, and its bytes given back.
        assert!(!y.push(b(S)));
        assert_eq!(y.overflowed(), Some(Overflow::Global));
        assert_eq!((here.used(), global.used()), (S, S));
        // Another address is unaffected.
        let z = Arc::new(Outbox::with_budget(limits, there.clone()));
        assert!(z.push(b(2 * S)));
        assert_eq!((there.used(), global.used()), (2 * S, 3 * S));
        // A client that authenticates with the password moves its bytes
        // to the global budget alone, and may then go past the share.
        z.set_budget(global.clone());
        assert_eq!((there.used(), global.used()), (0, 3 * S));
        assert!(z.push(b(3 * S)));
        assert_eq!((there.used(), global.used()), (0, 6 * S));
        z.written(5 * S);
        z.set_budget(there.clone());
        assert_eq!((there.used(), global.used()), (0, S));
        drop((x, z));
        assert_eq!((here.used(), there.used(), global.used()), (0, 0, 0));
    }

    #[test]
    fn a_reply_past_the_budget_closes_a_stream_outbox() {
        const S: usize = BUDGET_STEP;
        let budget = OutputBudget::new(4 * S);
        let limits = OutputLimits::default();
        let other = Arc::new(Outbox::stream_with_budget(limits, budget.clone()));
        assert!(other.push_reply(b(3 * S)));
        let o = Arc::new(Outbox::stream_with_budget(limits, budget.clone()));
        // Small replies (within a step) always go.
        assert!(o.push_reply(b(S - 1)));
        // One that would push the total past the limit closes the outbox.
        assert!(!o.push_reply(b(2 * S)));
        assert_eq!(o.overflowed(), Some(Overflow::Global));
        assert!(!o.push_ref(&b(1)), "closed");
        assert_eq!(budget.used(), 3 * S);
        // Deliveries too: one past the budget closes its subscriber, as
        // the hard limit does; within a step they always go.
        let s = Arc::new(Outbox::stream_with_budget(limits, budget.clone()));
        assert!(s.push_ref(&b(S - 1)));
        assert!(!s.push_ref(&b(2 * S)));
        assert_eq!(s.overflowed(), Some(Overflow::Global));
        assert_eq!(budget.used(), 3 * S);
        let s = Arc::new(Outbox::with_budget(limits, budget.clone()));
        assert!(s.push(b(S)));
        assert_eq!(budget.used(), 4 * S);
        assert!(!s.push(b(S)));
        assert_eq!(budget.used(), 3 * S);
        drop(other);
        drop(s);
        assert_eq!(budget.used(), 0);
        // An HTTP answer holds its bytes until dropped, if they fit.
        let h = budget.hold(4 * S).expect("fits");
        assert!(budget.hold(1).is_none());
        drop(h);
        assert_eq!(budget.used(), 0);
    }
}
