//! Transactions, as the hub keeps them: the scope of one keyspace command
//! (the transaction gate held shared, WATCH versions bumped for the keys it
//! wrote), EXEC's exclusive hold of the gate, and WATCH itself.
//!
//! A front end says which keys a command writes and whether it touches the
//! keyspace at all; it never sees the gate or the keyspace lock.

use bytes::Bytes;

use super::{GateGuard, Hub};

/// One command's hold on the hub, from [`Hub::command_scope`]: the
/// transaction gate shared while it runs; when dropped, the keys it wrote
/// are marked modified for clients that WATCH them, then the gate is
/// released (in that order, so an EXEC waiting for the gate sees the
/// marks).
pub struct CommandScope<'a, I>
where
    I: Iterator,
    I::Item: AsRef<[u8]>,
{
    hub: &'a Hub,
    written: Option<I>,
    /// Declared last: dropped after [`Drop::drop`] has marked the keys.
    _gate: Option<GateGuard<'a>>,
}

impl<I> Drop for CommandScope<'_, I>
where
    I: Iterator,
    I::Item: AsRef<[u8]>,
{
    fn drop(&mut self) {
        let Some(written) = self.written.take() else {
            return;
        };
        // Nobody watches (the common case): no second hold of the lock.
        if !self.hub.keyspace.any_watched() {
            return;
        }
        let mut written = written.peekable();
        if written.peek().is_none() {
            return;
        }
        let mut db = self.hub.keyspace.lock();
        for k in written {
            db.touch(k.as_ref());
        }
    }
}

impl Hub {
    /// Opens the scope of one command. With `gated` (a command on the
    /// keyspace), the transaction gate is held shared until the scope is
    /// dropped, so an EXEC never sees another client's command half-way;
    /// a thread that already holds the gate (a command inside EXEC) does
    /// not take it again. When the scope is dropped, each of `written` (the
    /// keys the command may have changed) counts as modified for WATCH,
    /// whether or not the command changed it, as Redis counts them.
    pub fn command_scope<I>(&self, gated: bool, written: I) -> CommandScope<'_, I::IntoIter>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        CommandScope {
            hub: self,
            written: Some(written.into_iter()),
            _gate: if gated { self.gate_shared() } else { None },
        }
    }

    /// Runs `f` (EXEC: the WATCH check and the queued commands) with the
    /// transaction gate held exclusively: no other client's keyspace
    /// command or history append (a publish to a channel with history, on
    /// any front end) runs until `f` returns. `f` must not wait on another
    /// client. Commands and publishes `f` makes itself do not take the gate
    /// again. Blocked list pops its pushes serve are served when it
    /// returns, still exclusively, as Redis serves them after EXEC.
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        let _gate = self.gate_exclusive();
        self.deferring_list_service(f)
    }

    /// WATCH: starts watching each of `keys`; returns each key with its
    /// version, for [`Hub::watched_changed`] to compare at EXEC. Each call
    /// must be matched by an [`Hub::unwatch_keys`] of the same keys.
    pub fn watch_keys(&self, keys: impl IntoIterator<Item = Bytes>) -> Vec<(Bytes, u64)> {
        let mut db = self.keyspace.lock();
        keys.into_iter()
            .map(|k| {
                let v = db.watch(&k);
                (k, v)
            })
            .collect()
    }

    /// Stops one client's watch of each of `keys` (UNWATCH, EXEC, DISCARD,
    /// a departing client).
    pub fn unwatch_keys<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) {
        let mut db = self.keyspace.lock();
        for k in keys {
            db.unwatch(k.as_ref());
        }
    }

    /// Whether any of `watched` (keys and the versions [`Hub::watch_keys`]
    /// returned) was modified or expired since. Called inside
    /// [`Hub::exclusive`], nothing can modify them between the check and
    /// the transaction.
    pub fn watched_changed(&self, watched: &[(Bytes, u64)]) -> bool {
        let mut db = self.keyspace.lock();
        watched.iter().any(|(k, v)| db.watch_version(k) != *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_scope_marks_written_keys_for_watchers() {
        let hub = Hub::default();
        let watched = hub.watch_keys([b("k"), b("other")]);
        assert!(!hub.watched_changed(&watched));
        // A read-only scope changes nothing.
        drop(hub.command_scope(true, std::iter::empty::<&[u8]>()));
        assert!(!hub.watched_changed(&watched));
        // A write to an unwatched key changes nothing either.
        drop(hub.command_scope(true, [b("x")]));
        assert!(!hub.watched_changed(&watched));
        drop(hub.command_scope(true, [b("k")]));
        assert!(hub.watched_changed(&watched));
        hub.unwatch_keys(watched.iter().map(|(k, _)| k));
        assert!(!hub.keyspace.any_watched());
    }

    #[test]
    fn a_data_write_inside_a_scope_is_seen_at_once() {
        let hub = Hub::default();
        let watched = hub.watch_keys([b("s")]);
        {
            let _scope = hub.command_scope(true, [b("s")]);
            hub.sadd(&b("s"), &[b("m")]).unwrap();
        }
        assert!(hub.watched_changed(&watched));
        hub.unwatch_keys([b("s")]);
    }

    #[test]
    fn the_gate_is_taken_once_per_thread() {
        let hub = Hub::default();
        // Inside EXEC, commands and publishes do not take the gate again
        // (a std RwLock would deadlock).
        let n = hub.exclusive(|| {
            let _scope = hub.command_scope(true, [b("k")]);
            hub.exclusive(|| 7)
        });
        assert_eq!(n, 7);
        // Released afterwards: another thread can take it.
        std::thread::scope(|s| {
            s.spawn(|| drop(hub.command_scope(true, std::iter::empty::<&[u8]>())))
                .join()
                .unwrap();
        });
    }

    #[test]
    fn exec_excludes_other_commands() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let hub = Hub::default();
        let inside = AtomicBool::new(false);
        std::thread::scope(|s| {
            hub.exclusive(|| {
                inside.store(true, Ordering::SeqCst);
                let other = s.spawn(|| {
                    let _scope = hub.command_scope(true, std::iter::empty::<&[u8]>());
                    // Only once EXEC is over.
                    assert!(!inside.load(Ordering::SeqCst));
                });
                std::thread::sleep(std::time::Duration::from_millis(50));
                inside.store(false, Ordering::SeqCst);
                other
            })
            .join()
            .unwrap();
        });
    }
}
