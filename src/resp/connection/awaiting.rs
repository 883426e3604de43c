//! A command waiting for the engine (a data command forwarded to Redis in
//! engine mode, or a batch of publishes). The connection task holds the command's future, boxed,
//! in the connection's lazily allocated `Extra` (an idle connection
//! carries nothing for it): no runtime worker is parked. While it waits the connection parses no further request, so
//! replies stay in order, but keeps writing queued output (pushes, earlier
//! replies), reads what arrives (at most 1 MiB, or the query buffer limit
//! for a blocking command), and
//! notices a kill, a closed socket and the token's `exp`. When the future
//! is done its continuation runs on the connection (the reply, a WATCH's
//! dedicated connection kept), then the requests that piled up behind it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};

use super::{advance, deadline_passed, process, read_some, write_batch, Conn};

/// What to do on the connection once the engine answered.
pub type Then = Box<dyn FnOnce(&mut Conn) + Send>;

/// Most forwarded commands of one connection under way at once.
const PIPELINE_MAX: usize = 64;

/// Most unparsed input read while waiting for the engine (unless
/// `--max-query-buffer` is less): a step handles at most 64 commands, so
/// this is hundreds of round trips ahead, and what a client pipelines past
/// it waits in the kernel's buffers, as before publishes were awaited here
/// (4 clients pipelining 24 MB of PUBLISHes each behind one awaiting a
/// paused Redis grew the node by 95 MiB; each may hold `--max-query-buffer`,
/// 128 MiB). A blocking command (alone) reads on to
/// `--max-query-buffer`, to notice the client leaving.
const AWAIT_READ_MAX: usize = 1 << 20;

type Step = Pin<Box<dyn Future<Output = Then> + Send>>;

/// Forwarded commands under way, answered in order (all polled at once,
/// so pipelined commands reach Redis back to back).
pub struct Awaiting {
    queue: FuturesOrdered<Step>,
    /// A blocking command (alone in the queue): the client leaving ends it
    /// (dropping the future drops its dedicated connection, and Redis
    /// unblocks it).
    blocking: bool,
    /// A command nothing may pipeline behind (a batch of PUBLISHes: what
    /// follows it starts once Redis has it, so a client's own order holds
    /// across its commands).
    serial: bool,
    /// The client closed its side: answer, then close.
    eof: bool,
}

impl Conn {
    /// Parks the connection on `fut`: no further request runs until it is
    /// done and its continuation has run.
    /// Behind any command already under way (pipelined), answered after
    /// it.
    pub fn await_then(&mut self, blocking: bool, fut: impl Future<Output = Then> + Send + 'static) {
        self.await_step(blocking, false, Box::pin(fut));
    }

    /// Parks the connection on `fut`, behind what is under way, and lets
    /// nothing pipeline behind it: the next request runs once it is done.
    pub fn await_serial(&mut self, fut: impl Future<Output = Then> + Send + 'static) {
        self.await_step(false, true, Box::pin(fut));
    }

    fn await_step(&mut self, blocking: bool, serial: bool, fut: Step) {
        let x = self.extra();
        let aw = x.awaiting.get_or_insert_with(|| Awaiting {
            queue: FuturesOrdered::new(),
            blocking: false,
            serial: false,
            eof: false,
        });
        aw.blocking |= blocking;
        aw.serial |= serial;
        aw.queue.push_back(fut);
    }

    /// Queues a reply made at once, behind the commands under way.
    pub fn await_ready(&mut self, frame: Bytes) {
        self.await_then(false, async move {
            Box::new(move |conn: &mut Conn| conn.reply_frame(&frame)) as Then
        });
    }

    /// Closes the connection once the commands under way are answered
    /// (reading nothing more meanwhile).
    pub fn close_when_answered(&mut self) {
        if let Some(aw) = self.extra.as_mut().and_then(|x| x.awaiting.as_mut()) {
            aw.eof = true;
        }
    }

    /// Whether another forwarded command may join those under way.
    pub fn may_pipeline(&self) -> bool {
        self.extra
            .as_ref()
            .and_then(|x| x.awaiting.as_ref())
            .is_some_and(|a| !a.blocking && !a.serial && a.queue.len() < PIPELINE_MAX)
    }

    /// Parks the connection until `frame` (an engine reply, already
    /// encoded in this client's protocol) is there, then replies it.
    pub fn await_reply(
        &mut self,
        blocking: bool,
        frame: impl Future<Output = Bytes> + Send + 'static,
    ) {
        self.await_then(blocking, async move {
            let f = frame.await;
            Box::new(move |conn: &mut Conn| conn.reply_frame(&f)) as Then
        });
    }

    /// Appends an encoded reply frame.
    pub fn reply_frame(&mut self, frame: &[u8]) {
        self.reply().buf.extend_from_slice(frame);
    }
}

/// Serves a connection waiting for the engine. Returns false when the
/// connection must end.
#[allow(clippy::too_many_arguments)] // the connection loop's own state, lent
pub(super) async fn serve_awaiting(
    conn: &mut Conn,
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    rbuf: &mut BytesMut,
    batch: &mut VecDeque<Bytes>,
    front_off: &mut usize,
    scratch: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Some(mut aw) = conn.extra.as_mut().and_then(|x| x.awaiting.take()) else {
        return Ok(true);
    };
    let handle = conn.handle.clone();
    conn.flush_replies();
    if batch.is_empty() {
        handle.sink.outbox.take(batch);
    }
    let mut max_query = conn.server.cfg.max_query_buffer;
    if !aw.blocking {
        max_query = max_query.min(AWAIT_READ_MAX);
    }
    tokio::select! {
        biased;
        then = aw.queue.next(), if !aw.queue.is_empty() => {
            if let Some(then) = then {
                then(conn);
            }
            if !aw.queue.is_empty() {
                // More under way: this answer goes out meanwhile.
                conn.flush_replies();
                conn.extra().awaiting = Some(aw);
                return Ok(true);
            }
            let eof = aw.eof;
            drop(aw);
            conn.flush_replies();
            crate::hub::outbox::defer_wakes(|| {
                process(conn, rbuf);
                conn.flush_replies();
            });
            if eof {
                match conn.extra.as_mut().and_then(|x| x.awaiting.as_mut()) {
                    Some(next) => next.eof = true,
                    None => conn.close_after_reply(),
                }
            }
            return Ok(true);
        }
        _ = handle.sink.outbox.ready() => {
            if handle.is_killed() {
                return Ok(false);
            }
        }
        // The token expired (or the time to authenticate ended): when that
        // ends the connection, the commands under way are abandoned (a
        // dedicated connection closed, so Redis unblocks it).
        _ = deadline_passed(&mut conn.deadline) => {
            conn.on_deadline();
            conn.flush_replies();
            if conn.closing {
                drop(aw);
                return Ok(true);
            }
        }
        r = write_batch(wr, batch, *front_off, scratch), if !batch.is_empty() => {
            let n = r?;
            handle.sink.outbox.written(n);
            advance(batch, front_off, n);
        }
        r = read_some(rd.as_ref(), rbuf), if !aw.eof && rbuf.len() < max_query => {
            if r? == 0 {
                if aw.blocking {
                    return Ok(false);
                }
                // A client that sent its command and closed its side
                // still gets the answer, as from Redis.
                aw.eof = true;
            }
        }
    }
    conn.extra().awaiting = Some(aw);
    Ok(true)
}
