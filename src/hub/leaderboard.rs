//! Live leaderboards: subscribers watch the top N of a sorted set and are
//! pushed the new top N when it changes, coalesced per tick (default every
//! 100 ms), so a flood of ZINCRBY costs each subscriber at most one push per
//! tick, and nothing when the top N stayed as it was.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::ClientId;

/// One top-N entry: member and score, best first.
pub type Entry = (Bytes, f64);

/// A watcher's own position, when its user id is a member.
pub type Own = Option<(usize, f64)>;

/// Where leaderboard updates go (a WebSocket session).
pub trait LeaderboardSink: Send + Sync + 'static {
    fn leaderboard(&self, key: &[u8], entries: &[Entry], own: Own);
}

struct Watcher {
    client: ClientId,
    sink: Arc<dyn LeaderboardSink>,
    top: usize,
    user: Option<String>,
    last: Vec<Entry>,
}

#[derive(Default)]
struct State {
    dirty: HashSet<Bytes>,
    watchers: HashMap<Bytes, Vec<Watcher>>,
    /// The top N last published on `__leaderboard__:K`.
    last_published: HashMap<Bytes, Vec<Entry>>,
    /// Polled sources: boards that had entries at their last read.
    hot: HashSet<Bytes>,
    /// Polled sources: where the next tick's share of the other boards
    /// starts.
    cold_cursor: usize,
}

/// Empty (or never read) boards a polled source re-reads per tick.
pub const COLD_PER_TICK: usize = 256;

/// Every live leaderboard.
#[derive(Default)]
pub struct Leaderboards {
    state: Mutex<State>,
}

/// The channel on which RESP clients follow leaderboard `key`.
pub fn leaderboard_channel(key: &[u8]) -> Bytes {
    let mut c = b"__leaderboard__:".to_vec();
    c.extend_from_slice(key);
    Bytes::from(c)
}

impl Leaderboards {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that the sorted set at `key` changed.
    pub fn mark(&self, key: &Bytes) {
        self.lock().dirty.insert(key.clone());
    }

    /// The keys watched now.
    pub fn watched(&self) -> Vec<Bytes> {
        self.lock().watchers.keys().cloned().collect()
    }

    /// Picks the boards a polled source re-reads this tick, from those
    /// `followed`, and marks them: every board that had entries at its
    /// last read, and at most [`COLD_PER_TICK`] of the empty or never-read
    /// ones, in turn. So boards made up by the thousand (a client may
    /// follow any name) cost a bounded number of reads per tick and never
    /// delay the real ones; a board that gets its first entries is seen
    /// within `cold / COLD_PER_TICK` ticks.
    pub fn mark_polled(&self, followed: Vec<Bytes>) {
        let mut st = self.lock();
        let followed: HashSet<Bytes> = followed.into_iter().collect();
        st.hot.retain(|k| followed.contains(k));
        let mut cold: Vec<Bytes> = followed
            .into_iter()
            .filter(|k| !st.hot.contains(k))
            .collect();
        cold.sort_unstable();
        let hot: Vec<Bytes> = st.hot.iter().cloned().collect();
        st.dirty.extend(hot);
        if !cold.is_empty() {
            let start = st.cold_cursor % cold.len();
            let take = cold.len().min(COLD_PER_TICK);
            for i in 0..take {
                let k = cold[(start + i) % cold.len()].clone();
                st.dirty.insert(k);
            }
            st.cold_cursor = (start + take) % cold.len();
        }
    }

    /// Notes what a polled read of `key` found (entries or none).
    pub fn note_read(&self, key: &Bytes, has_entries: bool) {
        let mut st = self.lock();
        if has_entries {
            st.hot.insert(key.clone());
        } else {
            st.hot.remove(key);
        }
    }

    /// Adds (or replaces) a watcher, remembering `initial` as what it has.
    pub fn watch(
        &self,
        key: Bytes,
        client: ClientId,
        sink: Arc<dyn LeaderboardSink>,
        top: usize,
        user: Option<String>,
        initial: Vec<Entry>,
    ) {
        let mut st = self.lock();
        let list = st.watchers.entry(key).or_default();
        list.retain(|w| w.client != client);
        list.push(Watcher {
            client,
            sink,
            top,
            user,
            last: initial,
        });
    }

    /// Removes a watcher; true if it was there.
    pub fn unwatch(&self, key: &[u8], client: ClientId) -> bool {
        let mut st = self.lock();
        let Some(list) = st.watchers.get_mut(key) else {
            return false;
        };
        let before = list.len();
        list.retain(|w| w.client != client);
        let removed = list.len() != before;
        if list.is_empty() {
            st.watchers.remove(key);
        }
        removed
    }

    /// Takes the keys changed since the last tick, with the largest top N
    /// their watchers want (0 when only RESP listeners may care).
    pub fn take_dirty(&self) -> Vec<(Bytes, usize)> {
        let mut st = self.lock();
        let dirty: Vec<Bytes> = st.dirty.drain().collect();
        dirty
            .into_iter()
            .map(|k| {
                let top = st
                    .watchers
                    .get(&k)
                    .map_or(0, |l| l.iter().map(|w| w.top).max().unwrap_or(0));
                (k, top)
            })
            .collect()
    }

    /// Delivers `entries` (the top, best first, at least as long as every
    /// watcher's N) to watchers whose view changed. `rank_of` gives a user's
    /// own position; it runs after this registry's lock is released, since
    /// it takes the keyspace lock (writers take the keyspace lock, then this
    /// one, in `mark`).
    pub fn deliver(&self, key: &[u8], entries: &[Entry], rank_of: impl Fn(&str) -> Own) {
        let mut due: Vec<(Arc<dyn LeaderboardSink>, usize, Option<String>)> = Vec::new();
        {
            let mut st = self.lock();
            let Some(list) = st.watchers.get_mut(key) else {
                return;
            };
            for w in list.iter_mut() {
                let n = w.top.min(entries.len());
                if entries[..n] != w.last[..] {
                    w.last = entries[..n].to_vec();
                    due.push((w.sink.clone(), n, w.user.clone()));
                }
            }
        }
        for (sink, n, user) in due {
            let own = user.as_deref().and_then(&rank_of);
            sink.leaderboard(key, &entries[..n], own);
        }
    }

    /// True (and remembered) when `entries` differ from what was last
    /// published on the RESP channel of `key`.
    pub fn changed_for_resp(&self, key: &Bytes, entries: &[Entry]) -> bool {
        let mut st = self.lock();
        match st.last_published.get(key) {
            Some(v) if v.as_slice() == entries => return false,
            // Never published and still empty: nothing to say.
            None if entries.is_empty() => return false,
            _ => {}
        }
        if entries.is_empty() {
            st.last_published.remove(key);
        } else {
            st.last_published.insert(key.clone(), entries.to_vec());
        }
        true
    }
}
