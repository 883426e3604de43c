//! Parked commands. XREAD and XREADGROUP with BLOCK are retried whenever
//! one of their keys is written (`Hub::wait_for_writes`); the blocking list
//! pops are queued in the hub, which serves them first come first served
//! (`hub::data::list_waits`), so the connection only waits to be told. Both
//! keep the connection's output flowing, notice a kill, a closed socket
//! and the token's `exp`, and answer a null array at their deadline.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{advance, cmd, deadline_passed, process, read_some, write_batch, Conn};
use crate::hub::data::{DataError, ListWaitGuard, Popped};

/// A command parked until one of its keys gets new data or it times out.
pub struct Blocked {
    /// The command to retry (with `$` already resolved to concrete ids).
    pub args: Vec<Bytes>,
    pub keys: Vec<Bytes>,
    timeout_ms: u64,
    deadline: Option<tokio::time::Instant>,
    /// A list pop queued in the hub (BLPOP …): served there, never
    /// retried.
    list: Option<ListPark>,
}

/// A blocked list pop: its place in the hub's queues, and its reply's
/// shape.
struct ListPark {
    guard: ListWaitGuard,
    /// BLPOP, BRPOP answer the key with the element; BLMOVE and
    /// BRPOPLPUSH the element alone.
    with_key: bool,
}

impl Blocked {
    /// `timeout_ms` 0 blocks without a deadline.
    pub fn new(args: Vec<Bytes>, keys: Vec<Bytes>, timeout_ms: u64) -> Blocked {
        Blocked {
            args,
            keys,
            timeout_ms,
            deadline: None,
            list: None,
        }
    }
}

impl Conn {
    /// Parks the current command; the connection retries it when one of its
    /// keys is written, and replies a null array at its deadline.
    pub fn block(&mut self, mut b: Blocked) {
        // A timeout past what an `Instant` can hold (BLOCK up to i64::MAX
        // ms is valid, as in Redis) waits without a deadline instead of
        // overflowing.
        let kept = self.extra.as_ref().and_then(|x| x.block_deadline);
        b.deadline = kept.or_else(|| {
            (b.timeout_ms > 0)
                .then(|| {
                    tokio::time::Instant::now()
                        .checked_add(std::time::Duration::from_millis(b.timeout_ms))
                })
                .flatten()
        });
        self.blocked = Some(Box::new(b));
    }

    /// Parks a list pop queued in the hub (`guard`): the connection replies
    /// when the hub serves it, or a null array at its deadline.
    pub fn park_list_pop(&mut self, guard: ListWaitGuard, with_key: bool, timeout_ms: u64) {
        let mut b = Blocked::new(Vec::new(), Vec::new(), timeout_ms);
        b.list = Some(ListPark { guard, with_key });
        self.block(b);
    }

    /// The reply to a served (or immediate) blocking pop: `[key, element]`
    /// (BLPOP, BRPOP) or the element (BLMOVE, BRPOPLPUSH).
    pub fn reply_popped(&mut self, popped: Result<Popped, DataError>, with_key: bool) {
        let mut out = self.reply();
        match popped {
            Err(e) => out.error(&e.to_string()),
            Ok(p) if with_key => {
                out.array(2);
                out.bulk(&p.key);
                out.bulk(&p.value);
            }
            Ok(p) => out.bulk(&p.value),
        }
    }
}

/// Serves a parked command: retries it once its wake-ups are armed (so no
/// write in between is missed), then waits for a key to change, the
/// deadline, or the client to go. Keeps writing queued output meanwhile.
/// Returns false when the connection must end.
#[allow(clippy::too_many_arguments)] // the connection loop's own state, lent
pub(super) async fn serve_blocked(
    conn: &mut Conn,
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    rbuf: &mut BytesMut,
    batch: &mut VecDeque<Bytes>,
    front_off: &mut usize,
    scratch: &mut Vec<u8>,
) -> std::io::Result<bool> {
    // A parked command is not retried (nor its pop left queued) after
    // the token's `exp`; an element already served to it is answered.
    if conn.token_expired() {
        withdraw(conn);
        conn.expire();
        conn.flush_replies();
        return Ok(true);
    }
    if conn.blocked.as_ref().is_some_and(|b| b.list.is_some()) {
        return serve_list_pop(conn, rd, wr, rbuf, batch, front_off, scratch).await;
    }
    let Some(b) = conn.blocked.take() else {
        return Ok(true);
    };
    let hub = conn.server.hub.clone();
    let handle = conn.handle.clone();
    let mut wakeups = hub.wait_for_writes(&b.keys);
    conn.extra().wait_keys = b.keys.clone();
    conn.extra().block_deadline = b.deadline;
    cmd::dispatch(conn, &b.args);
    conn.extra().block_deadline = None;
    let Some(still) = conn.blocked.as_ref() else {
        hub.stop_waiting(wakeups, &b.keys);
        conn.extra().wait_keys = Vec::new();
        finish(conn, rbuf);
        return Ok(true);
    };
    let deadline = still.deadline;
    conn.flush_replies();
    if batch.is_empty() {
        handle.sink.outbox.take(batch);
    }
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86400 * 365);
    let max_query = conn.server.cfg.max_query_buffer;
    tokio::select! {
        biased;
        _ = wakeups.changed() => {}
        // Pushes (RESP3 pub/sub) keep flowing, and an overflow or a kill
        // is noticed, while a command is parked.
        _ = handle.sink.outbox.ready() => {
            if handle.is_killed() {
                return Ok(false);
            }
        }
        _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
            conn.blocked = None;
            hub.stop_waiting(wakeups, &b.keys);
            conn.extra().wait_keys = Vec::new();
            conn.reply().null_array();
            finish(conn, rbuf);
        }
        // The token expired (or, unlikely here, the time to authenticate
        // ended) while the command waited: it ends with the error.
        _ = deadline_passed(&mut conn.deadline) => {
            conn.blocked = None;
            hub.stop_waiting(wakeups, &b.keys);
            conn.extra().wait_keys = Vec::new();
            conn.on_deadline();
            conn.flush_replies();
        }
        r = write_batch(wr, batch, *front_off, scratch), if !batch.is_empty() => {
            let n = r?;
            handle.sink.outbox.written(n);
            advance(batch, front_off, n);
        }
        r = read_some(rd.as_ref(), rbuf), if rbuf.len() < max_query => {
            // Requests pile up behind the blocked one; EOF ends it all.
            if r? == 0 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Ends the parked command; for a list pop, withdraws its place and
/// answers the element if the hub served it meanwhile (true then), so an
/// element popped for this client is never dropped.
fn withdraw(conn: &mut Conn) -> bool {
    let Some(park) = conn.blocked.take().and_then(|b| b.list) else {
        return false;
    };
    let with_key = park.with_key;
    match park.guard.cancel() {
        Some(p) => {
            conn.reply_popped(p, with_key);
            true
        }
        None => false,
    }
}

/// Replies queued while a command was parked, then the requests that piled
/// up behind it.
fn finish(conn: &mut Conn, rbuf: &mut BytesMut) {
    conn.flush_replies();
    process(conn, rbuf);
    conn.flush_replies();
}

/// Serves a parked list pop: nothing is retried; the hub pops for it and
/// says so. Waits for that, the deadline (a pop served meanwhile still
/// answers), or the client to go (dropping the park withdraws the pop).
/// Keeps writing queued output meanwhile. Returns false when the
/// connection must end.
#[allow(clippy::too_many_arguments)] // the connection loop's own state, lent
async fn serve_list_pop(
    conn: &mut Conn,
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    rbuf: &mut BytesMut,
    batch: &mut VecDeque<Bytes>,
    front_off: &mut usize,
    scratch: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Some((signal, deadline)) = conn.blocked.as_ref().and_then(|b| {
        let park = b.list.as_ref()?;
        Some((park.guard.signal(), b.deadline))
    }) else {
        return Ok(true);
    };
    let handle = conn.handle.clone();
    conn.flush_replies();
    if batch.is_empty() {
        handle.sink.outbox.take(batch);
    }
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86400 * 365);
    let max_query = conn.server.cfg.max_query_buffer;
    tokio::select! {
        biased;
        _ = signal.served() => {
            if !withdraw(conn) {
                conn.reply().null_array();
            }
            finish(conn, rbuf);
        }
        _ = handle.sink.outbox.ready() => {
            if handle.is_killed() {
                return Ok(false);
            }
        }
        _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
            if !withdraw(conn) {
                conn.reply().null_array();
            }
            finish(conn, rbuf);
        }
        _ = deadline_passed(&mut conn.deadline) => {
            withdraw(conn);
            conn.on_deadline();
            conn.flush_replies();
        }
        r = write_batch(wr, batch, *front_off, scratch), if !batch.is_empty() => {
            let n = r?;
            handle.sink.outbox.written(n);
            advance(batch, front_off, n);
        }
        r = read_some(rd.as_ref(), rbuf), if rbuf.len() < max_query => {
            if r? == 0 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
