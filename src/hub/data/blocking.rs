//! Blocked readers (XREAD and XREADGROUP with BLOCK): a front end parks
//! the command, arms wake-ups on its keys here, retries it, and waits for
//! one to fire (or its deadline) before retrying again. Any write that
//! could give the reader something (an XADD, a history publish, a change
//! of a sorted set, a deletion or expiry) signals the key under the
//! keyspace lock (`Db::signal`).

use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::futures::OwnedNotified;

use crate::hub::Hub;

/// Wake-ups armed on a parked command's keys.
pub struct KeyWakeups {
    armed: Vec<Pin<Box<OwnedNotified>>>,
}

impl KeyWakeups {
    /// Completes once one of the keys was written after the wake-ups were
    /// armed (never, for no keys).
    pub async fn changed(&mut self) {
        if self.armed.is_empty() {
            return std::future::pending().await;
        }
        futures_util::future::select_all(self.armed.iter_mut()).await;
    }
}

impl Hub {
    /// Arms wake-ups on `keys`: a write to any of them from now on
    /// completes [`KeyWakeups::changed`]. Arm before retrying the parked
    /// command, so that no write between the retry and the wait is missed.
    pub fn wait_for_writes(&self, keys: &[Bytes]) -> KeyWakeups {
        let mut armed: Vec<_> = {
            let mut db = self.keyspace.lock();
            keys.iter()
                .map(|k| Box::pin(db.waiter(k).notified_owned()))
                .collect()
        };
        for w in armed.iter_mut() {
            w.as_mut().enable();
        }
        KeyWakeups { armed }
    }

    /// Ends a wait on `keys` (served, timed out, abandoned): drops the
    /// wake-ups, then the keys' notifiers nobody else waits on.
    pub fn stop_waiting(&self, wakeups: KeyWakeups, keys: &[Bytes]) {
        drop(wakeups);
        self.release_waits(keys);
    }

    /// Drops the notifiers of `keys` nobody waits on any more (a reader
    /// that left without its wake-ups, such as a closed connection).
    pub fn release_waits(&self, keys: &[Bytes]) {
        self.keyspace.lock().release_waiters(keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    async fn fires(w: &mut KeyWakeups) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_write_to_a_key_wakes_its_waiters_and_nothing_is_left_behind() {
        let h = Hub::default();
        let keys = [b("a"), b("b")];
        let mut w = h.wait_for_writes(&keys);
        assert_eq!(h.keyspace.lock().waiter_count(), 2);
        // A write to another key: no wake-up.
        h.zadd(b"other", Default::default(), vec![(b("m"), 1.0)])
            .unwrap();
        assert!(!fires(&mut w).await);
        // A write between arming and waiting is not missed.
        h.zadd(b"b", Default::default(), vec![(b("m"), 1.0)])
            .unwrap();
        assert!(fires(&mut w).await);
        h.stop_waiting(w, &keys);
        assert_eq!(h.keyspace.lock().waiter_count(), 0);
    }

    #[tokio::test]
    async fn release_keeps_notifiers_others_wait_on() {
        let h = Hub::default();
        let keys = [b("s")];
        let mut first = h.wait_for_writes(&keys);
        let second = h.wait_for_writes(&keys);
        // The second reader leaves; the first still waits.
        h.stop_waiting(second, &keys);
        assert_eq!(h.keyspace.lock().waiter_count(), 1);
        let add = crate::hub::data::XAdd {
            id: crate::hub::NewId::Auto,
            trim: None,
            nomkstream: false,
        };
        h.xadd(&b("s"), &add, vec![(b("f"), b("v"))]).unwrap();
        assert!(fires(&mut first).await);
        // A connection that closes drops its wake-ups, then releases.
        drop(first);
        h.release_waits(&keys);
        assert_eq!(h.keyspace.lock().waiter_count(), 0);
        // No keys: never fires.
        let mut none = h.wait_for_writes(&[]);
        assert!(!fires(&mut none).await);
    }
}
