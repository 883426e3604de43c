//! The transaction gate: keyspace commands and history appends hold it
//! shared, EXEC holds it exclusive, so a transaction runs with no other
//! client's command or history append in between.

use super::acquire;

thread_local! {
    /// Whether this thread holds the transaction gate. The gate is held only
    /// in synchronous code (never across an `.await`), so a thread that
    /// holds it and publishes (a PUBLISH inside EXEC, a presence event of a
    /// SUBSCRIBE) must not take it again: a std `RwLock` read while a writer
    /// waits, or any lock while this thread writes, would deadlock.
    static GATE_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The transaction gate, held shared or exclusive by this thread until
/// dropped.
pub struct GateGuard<'a> {
    _guard: GateLock<'a>,
}

enum GateLock<'a> {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] std::sync::RwLockWriteGuard<'a, ()>),
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        GATE_HELD.with(|h| h.set(false));
    }
}

/// The gate itself (one per keyspace).
#[derive(Default)]
pub struct TxGate {
    lock: std::sync::RwLock<()>,
}

impl TxGate {
    /// Holds the gate shared (a keyspace command, a history append);
    /// `None` when this thread already holds it.
    pub fn shared(&self) -> Option<GateGuard<'_>> {
        // Behind an EXEC: wait without stalling this worker's other tasks.
        self.enter(|g| GateLock::Shared(acquire(|| g.try_read(), || g.read())))
    }

    /// Holds the gate exclusively (EXEC); `None` when this thread already
    /// holds it.
    pub fn exclusive(&self) -> Option<GateGuard<'_>> {
        self.enter(|g| GateLock::Exclusive(acquire(|| g.try_write(), || g.write())))
    }

    fn enter<'a>(
        &'a self,
        take: impl FnOnce(&'a std::sync::RwLock<()>) -> GateLock<'a>,
    ) -> Option<GateGuard<'a>> {
        if GATE_HELD.with(|h| h.get()) {
            return None;
        }
        let guard = take(&self.lock);
        GATE_HELD.with(|h| h.set(true));
        Some(GateGuard { _guard: guard })
    }
}
