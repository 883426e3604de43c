//! The data commands' keyspace in Redis ([`RemoteKeyspace`]): every node
//! forwards strings, hashes, lists, sets, sorted sets, streams, key
//! commands and transactions to the engine's Redis, so all nodes agree.
//!
//! - **Connections.** Ordinary commands share two multiplexed connections
//!   (`ConnectionManager`s), one speaking RESP2 and one RESP3: a client's
//!   command goes on the one of its own protocol, so Redis shapes the reply
//!   for that protocol itself (a RESP3 `ZRANGE … WITHSCORES` nests pairs, a
//!   RESP2 one is flat) and only its re-encoding is left here. Blocking
//!   commands and `WATCH`…`EXEC` take a dedicated connection from a pool of
//!   at most `--engine-dedicated-connections`; past it the command is
//!   answered an error at once. A dedicated connection handed back clean is
//!   kept for the next (up to [`IDLE_KEPT`] per protocol); one dropped
//!   mid-command (the client left while blocked) is closed, so Redis
//!   unblocks it and forgets its WATCHes.
//! - **Replies.** `redis::Value` is encoded back in the client's protocol.
//!   It loses one thing: RESP2's null array (`*-1`) and null bulk (`$-1`)
//!   both parse as `Nil`, so [`Nulls`] says, per command, where Redis
//!   answers a null array (blocking pops' and XREAD's timeouts, `LPOP key
//!   COUNT` of a missing key, `XRANGE … COUNT 0`, XREADGROUP's deleted
//!   entries, XPENDING's empty summary). Doubles (RESP3) print as Redis 7.0 prints them
//!   (`%.17g`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::{ConnectionLike, MultiplexedConnection};

use super::link::Shared;
use redis::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RedisEngine;
use crate::hub::engine::{Dedicated, Frame, HistoryOptions, Pending, RemoteKeyspace, TxOutcome};

/// DBSIZE visits at most this many keys (SCAN steps of [`DBSIZE_STEP`]).
const DBSIZE_MAX_KEYS: usize = 1_000_000;
const DBSIZE_STEP: usize = 1000;

/// Clean dedicated connections kept for reuse, per protocol.
const IDLE_KEPT: usize = 32;
/// How long a non-blocking command on a dedicated connection (WATCH, a
/// transaction) may wait for Redis.
const DEDICATED_TIMEOUT: Duration = Duration::from_secs(5);

/// Appends a stream entry (the user's fields, as given) to a channel's
/// history, takes the offset and publishes, as one step: PUBLISH_SCRIPT's
/// XADD form. KEYS: stream, meta. ARGV: as PUBLISH_SCRIPT's, then the
/// fields and values (from `ARGV[9]`). Returns {offset, epoch}.
const XADD_SCRIPT: &str = super::pubsub::history_script!(
    r#"local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], tostring(top) .. '-0', unpack(fields))
"#
);

type Idle = (MultiplexedConnection, OwnedSemaphorePermit, String);

/// The Redis engine's keyspace part.
#[derive(Clone)]
pub struct RedisKeyspace {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<RedisEngine>,
    permits: Arc<Semaphore>,
    max: usize,
    /// Clean connections for reuse, with the Redis run id they were made
    /// under (a restarted Redis closed them).
    idle: Mutex<[Vec<Idle>; 2]>,
    xadd: redis::Script,
}

impl RedisKeyspace {
    /// Opens the shared RESP3 connection beside the engine's RESP2 one;
    /// `dedicated` bounds the dedicated connections.
    pub async fn connect(
        engine: Arc<RedisEngine>,
        dedicated: usize,
    ) -> Result<RedisKeyspace, crate::hub::EngineError> {
        engine.link.shared3().await.map_err(super::unavailable)?;
        Ok(RedisKeyspace {
            inner: Arc::new(Inner {
                engine,
                permits: Arc::new(Semaphore::new(dedicated)),
                max: dedicated,
                idle: Mutex::new([Vec::new(), Vec::new()]),
                xadd: redis::Script::new(XADD_SCRIPT),
            }),
        })
    }
}

fn packed(args: &[Bytes]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(&a[..]);
    }
    c
}

/// The error frame for a failed call: Redis's own error as it sent it, or
/// the engine being unreachable.
fn error_frame(e: redis::RedisError) -> (Frame, bool) {
    let broken = e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
    if let Some(errs) = e.clone().into_server_errors() {
        if let [(_, se)] = &errs[..] {
            let mut out = BytesMut::new();
            server_error(se, &mut out);
            return (out.freeze(), false);
        }
    }
    let mut out = BytesMut::new();
    out.put_u8(b'-');
    let msg = format!("ERR engine unavailable: {e}");
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    (out.freeze(), broken)
}

fn server_error(se: &redis::ServerError, out: &mut BytesMut) {
    out.put_u8(b'-');
    out.extend_from_slice(se.code().as_bytes());
    if let Some(d) = se.details() {
        out.put_u8(b' ');
        out.extend_from_slice(d.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn unavailable_frame(why: &str) -> Frame {
    Bytes::from(format!("-ERR engine unavailable: {why}\r\n"))
}

/// Where a command's RESP2 nils are null arrays (`*-1`) rather than null
/// bulk strings (`$-1`); RESP3 has one null.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nulls {
    /// The reply itself (a timeout, a count pop of a missing key).
    top: bool,
    /// Any nil inside the reply (XREADGROUP's deleted entries).
    nested: bool,
    /// The fourth element of XPENDING's summary (no consumers).
    pending_summary: bool,
}

impl Nulls {
    /// The rule for `args` (run alone, or inside EXEC when `in_exec`).
    pub fn of(args: &[Bytes], in_exec: bool) -> Nulls {
        let mut name = [0u8; 16];
        let Some(lower) = args
            .first()
            .and_then(|a| name.get_mut(..a.len()).map(|n| (n, a)))
            .map(|(n, a)| {
                n.copy_from_slice(a);
                n.make_ascii_lowercase();
                &*n
            })
        else {
            return Nulls::default();
        };
        let top = |top| Nulls {
            top,
            ..Nulls::default()
        };
        match lower {
            // XRANGE … COUNT 0 answers a null array.
            b"blpop" | b"brpop" | b"bzpopmin" | b"bzpopmax" | b"xrange" | b"xrevrange" => top(true),
            // Inside EXEC they do not block and answer a null bulk.
            b"blmove" | b"brpoplpush" => top(!in_exec),
            b"xread" | b"xreadgroup" => Nulls {
                top: true,
                nested: true,
                pending_summary: false,
            },
            b"lpop" | b"rpop" => top(args.len() >= 3),
            b"xpending" => Nulls {
                pending_summary: args.len() == 3,
                ..Nulls::default()
            },
            _ => Nulls::default(),
        }
    }
}

fn put_len(out: &mut BytesMut, prefix: u8, n: usize) {
    out.put_u8(prefix);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_len(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Encodes a reply as Redis wrote it, in the client's protocol.
pub fn encode(v: &Value, resp3: bool, nulls: Nulls, out: &mut BytesMut) {
    encode_at(v, resp3, nulls, 0, 0, out)
}

fn encode_at(v: &Value, resp3: bool, nulls: Nulls, depth: usize, index: usize, out: &mut BytesMut) {
    let inner =
        |v: &Value, i: usize, out: &mut BytesMut| encode_at(v, resp3, nulls, depth + 1, i, out);
    match v {
        Value::Nil => {
            let array = (depth == 0 && nulls.top)
                || (depth > 0 && nulls.nested)
                || (depth == 1 && index == 3 && nulls.pending_summary);
            out.extend_from_slice(match (resp3, array) {
                (true, _) => b"_\r\n",
                (false, true) => b"*-1\r\n",
                (false, false) => b"$-1\r\n",
            });
        }
        Value::Int(n) => {
            out.put_u8(b':');
            out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::BulkString(b) => put_bulk(out, b),
        Value::Array(items) => {
            put_len(out, b'*', items.len());
            for (i, x) in items.iter().enumerate() {
                inner(x, i, out);
            }
        }
        Value::SimpleString(s) => {
            out.put_u8(b'+');
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Map(pairs) => {
            if resp3 {
                put_len(out, b'%', pairs.len());
            } else {
                put_len(out, b'*', pairs.len() * 2);
            }
            for (i, (k, v)) in pairs.iter().enumerate() {
                inner(k, 2 * i, out);
                inner(v, 2 * i + 1, out);
            }
        }
        Value::Attribute { data, .. } => encode_at(data, resp3, nulls, depth, index, out),
        Value::Set(items) => {
            put_len(out, if resp3 { b'~' } else { b'*' }, items.len());
            for (i, x) in items.iter().enumerate() {
                inner(x, i, out);
            }
        }
        Value::Double(d) => {
            let text = if d.is_nan() {
                "nan".to_string()
            } else {
                crate::hub::zset::format_score(*d)
            };
            if resp3 {
                out.put_u8(b',');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            } else {
                put_bulk(out, text.as_bytes());
            }
        }
        Value::Boolean(b) => out.extend_from_slice(match (resp3, b) {
            (true, true) => b"#t\r\n",
            (true, false) => b"#f\r\n",
            (false, true) => b":1\r\n",
            (false, false) => b":0\r\n",
        }),
        Value::VerbatimString { format, text } => {
            if resp3 {
                let f = match format {
                    redis::VerbatimFormat::Markdown => "mkd".to_string(),
                    redis::VerbatimFormat::Text => "txt".to_string(),
                    redis::VerbatimFormat::Unknown(f) => f.clone(),
                    _ => "txt".to_string(),
                };
                put_len(out, b'=', f.len() + 1 + text.len());
                out.extend_from_slice(f.as_bytes());
                out.put_u8(b':');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            } else {
                put_bulk(out, text.as_bytes());
            }
        }
        Value::BigNumber(n) => {
            let digits: &[u8] = n;
            if resp3 {
                out.put_u8(b'(');
                out.extend_from_slice(digits);
                out.extend_from_slice(b"\r\n");
            } else {
                put_bulk(out, digits);
            }
        }
        Value::Push { data, .. } => {
            put_len(out, if resp3 { b'>' } else { b'*' }, data.len());
            for (i, x) in data.iter().enumerate() {
                inner(x, i, out);
            }
        }
        Value::ServerError(se) => server_error(se, out),
        // `Value` is non-exhaustive: nothing else is sent by Redis 7.
        #[allow(unreachable_patterns)]
        _ => out.extend_from_slice(b"-ERR engine: unsupported reply type\r\n"),
    }
}

fn frame_of(r: redis::RedisResult<Value>, resp3: bool, nulls: Nulls) -> (Frame, bool) {
    match r {
        Ok(v) => {
            let mut out = BytesMut::new();
            encode(&v, resp3, nulls, &mut out);
            (out.freeze(), false)
        }
        Err(e) => error_frame(e),
    }
}

impl Inner {
    /// The shared connection of a protocol (the link's: it follows a
    /// Sentinel failover, and routes by slot on Cluster).
    async fn shared(&self, resp3: bool) -> Result<Shared, Frame> {
        if !resp3 {
            return Ok(self.engine.link.shared());
        }
        self.engine.link.shared3().await.map_err(|e| {
            self.engine.mark_failed();
            unavailable_frame(&e.to_string())
        })
    }

    fn take_idle(&self, resp3: bool) -> Option<(MultiplexedConnection, OwnedSemaphorePermit)> {
        let run = self.engine.run_id(b"");
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut idle[resp3 as usize];
        // Connections made before Redis restarted are closed: let them go.
        list.retain(|(_, _, r)| *r == run);
        list.pop().map(|(c, p, _)| (c, p))
    }

    /// A permit for a new dedicated connection: a free one, or one an
    /// idle connection of the other protocol held.
    fn permit(&self, resp3: bool) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        let other = self.idle.lock().unwrap_or_else(|e| e.into_inner())[!resp3 as usize].pop();
        other.map(|(_conn, p, _)| p)
    }
}

/// One dedicated connection: closed when dropped, unless released.
struct DedicatedConn {
    inner: Arc<Inner>,
    /// Replaced once when a reused connection turns out dead.
    conn: Arc<Mutex<MultiplexedConnection>>,
    permit: Option<OwnedSemaphorePermit>,
    resp3: bool,
    /// An I/O error or timeout happened: never reused.
    broken: Arc<AtomicBool>,
    /// Taken from the idle pool and not used yet: Redis may have closed
    /// it meanwhile (a restart, a `CLIENT KILL`), so a first command that
    /// finds it gone runs again on a fresh connection.
    reused: Arc<AtomicBool>,
}

impl Inner {
    async fn connect_dedicated(&self, resp3: bool) -> redis::RedisResult<MultiplexedConnection> {
        self.engine.link.dedicated_in(None, resp3).await
    }
}

impl Dedicated for DedicatedConn {
    fn command(&self, args: Vec<Bytes>, in_exec: bool) -> Pending<'static, Frame> {
        let slot = self.conn.clone();
        let resp3 = self.resp3;
        let broken = self.broken.clone();
        let reused = self.reused.clone();
        let inner = self.inner.clone();
        Pending::boxed(async move {
            let nulls = Nulls::of(&args, in_exec);
            let cmd = packed(&args);
            let mut conn = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut r = conn.send_packed_command(&cmd).await;
            let gone = |r: &redis::RedisResult<Value>| matches!(r, Err(e) if e.is_connection_dropped() || e.is_io_error());
            if reused.swap(false, Ordering::Relaxed) && gone(&r) {
                if let Ok(fresh) = inner.connect_dedicated(resp3).await {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                    conn = fresh;
                    r = conn.send_packed_command(&cmd).await;
                }
            }
            let (f, bad) = frame_of(r, resp3, nulls);
            if bad {
                broken.store(true, Ordering::Relaxed);
                inner.engine.mark_failed();
            }
            f
        })
    }

    fn transaction(&self, cmds: Vec<Vec<Bytes>>) -> Pending<'static, TxOutcome> {
        self.reused.store(false, Ordering::Relaxed);
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let resp3 = self.resp3;
        let broken = self.broken.clone();
        Pending::boxed(async move {
            let run = async {
                // MULTI, each command, EXEC: sent back to back (one round
                // trip), answered in order.
                let mut calls = Vec::with_capacity(cmds.len() + 2);
                let multi = vec![Bytes::from_static(b"MULTI")];
                let exec = vec![Bytes::from_static(b"EXEC")];
                for args in std::iter::once(&multi)
                    .chain(&cmds)
                    .chain(std::iter::once(&exec))
                {
                    let mut c = conn.clone();
                    let cmd = packed(args);
                    calls.push(async move { c.send_packed_command(&cmd).await });
                }
                futures_util::future::join_all(calls).await
            };
            let mut replies = match tokio::time::timeout(DEDICATED_TIMEOUT, run).await {
                Ok(r) => r,
                Err(_) => {
                    broken.store(true, Ordering::Relaxed);
                    return Err(unavailable_frame("timed out"));
                }
            };
            let exec = replies.pop().unwrap_or(Ok(Value::Nil));
            // A command Redis refused while queuing fails EXEC as a whole.
            for r in &replies {
                if let Err(e) = r {
                    if e.clone().into_server_errors().is_none_or(|s| s.len() != 1) {
                        broken.store(true, Ordering::Relaxed);
                    }
                }
            }
            match exec {
                Ok(Value::Nil) => Ok(None),
                Ok(Value::Array(items)) => Ok(Some(
                    items
                        .iter()
                        .zip(&cmds)
                        .map(|(v, args)| {
                            let mut out = BytesMut::new();
                            encode(v, resp3, Nulls::of(args, true), &mut out);
                            out.freeze()
                        })
                        .collect(),
                )),
                Ok(other) => {
                    let mut out = BytesMut::new();
                    encode(&other, resp3, Nulls::default(), &mut out);
                    Err(out.freeze())
                }
                Err(e) => {
                    let (f, bad) = error_frame(e);
                    if bad {
                        broken.store(true, Ordering::Relaxed);
                    }
                    Err(f)
                }
            }
        })
    }

    fn release(mut self: Box<Self>) {
        if self.broken.load(Ordering::Relaxed) || self.inner.engine.link.is_cluster() {
            return;
        }
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut idle[self.resp3 as usize];
        if list.len() < IDLE_KEPT {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
            list.push((conn, permit, self.inner.engine.run_id(b"")));
        }
    }
}

impl RedisKeyspace {
    /// Drops the engine's own keys from a KEYS or SCAN reply.
    fn hide_engine_keys(&self, v: &mut Value, scan: bool) {
        let list = match (v, scan) {
            (Value::Array(items), false) => items,
            (Value::Array(pair), true) => match pair.get_mut(1) {
                Some(Value::Array(items)) => items,
                _ => return,
            },
            _ => return,
        };
        list.retain(|k| !matches!(k, Value::BulkString(b) if self.is_engine_key(b)));
    }
}

impl RemoteKeyspace for RedisKeyspace {
    fn command(&self, args: Vec<Bytes>, resp3: bool) -> Pending<'static, Frame> {
        let this = self.clone();
        Pending::boxed(async move {
            let inner = &this.inner;
            let mut conn = match inner.shared(resp3).await {
                Ok(c) => c,
                Err(f) => return f,
            };
            let nulls = Nulls::of(&args, false);
            let mut r = conn.req_packed_command(&packed(&args)).await;
            let (keys, scan) = (
                args[0].eq_ignore_ascii_case(b"keys"),
                args[0].eq_ignore_ascii_case(b"scan"),
            );
            if let (Ok(v), true) = (r.as_mut(), keys || scan) {
                this.hide_engine_keys(v, scan);
            }
            let (f, bad) = frame_of(r, resp3, nulls);
            if bad {
                inner.engine.mark_failed();
            }
            f
        })
    }

    fn dedicated(
        &self,
        resp3: bool,
        key: Option<Bytes>,
    ) -> Pending<'static, Result<Box<dyn Dedicated>, Frame>> {
        let inner = self.inner.clone();
        Pending::boxed(async move {
            // On Cluster a connection belongs to one master: none is reused.
            let cluster = inner.engine.link.is_cluster();
            let idle = if cluster {
                None
            } else {
                inner.take_idle(resp3)
            };
            let reused = idle.is_some();
            let (conn, permit) = match idle {
                Some(idle) => idle,
                None => {
                    let Some(permit) = inner.permit(resp3) else {
                        return Err(Bytes::from(format!(
                            "-ERR engine busy: all {} dedicated connections (--engine-dedicated-connections) are in use by blocking commands and WATCH/MULTI; try again later\r\n",
                            inner.max
                        )));
                    };
                    match inner.engine.link.dedicated_in(key.as_deref(), resp3).await {
                        Ok(c) => (c, permit),
                        Err(e) => {
                            inner.engine.mark_failed();
                            return Err(unavailable_frame(&e.to_string()));
                        }
                    }
                }
            };
            Ok(Box::new(DedicatedConn {
                inner,
                conn: Arc::new(Mutex::new(conn)),
                permit: Some(permit),
                resp3,
                broken: Arc::new(AtomicBool::new(false)),
                reused: Arc::new(AtomicBool::new(reused)),
            }) as Box<dyn Dedicated>)
        })
    }

    fn dbsize(
        &self,
        readable: Option<Arc<dyn Fn(&[u8]) -> bool + Send + Sync>>,
    ) -> Pending<'static, Frame> {
        let this = self.clone();
        Pending::boxed(async move {
            let mut conn = this.inner.engine.link.shared();
            let (mut cursor, mut seen, mut n) = (0u64, 0usize, 0i64);
            loop {
                let r: redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(DBSIZE_STEP)
                    .query_async(&mut conn)
                    .await;
                let (next, keys) = match r {
                    Ok(x) => x,
                    Err(e) => return error_frame(e).0,
                };
                seen += keys.len();
                n += keys
                    .iter()
                    .filter(|k| !this.is_engine_key(k) && readable.as_ref().is_none_or(|f| f(k)))
                    .count() as i64;
                if next == 0 {
                    break;
                }
                if seen > DBSIZE_MAX_KEYS {
                    return Bytes::from(format!(
                        "-ERR DBSIZE on the Redis engine counts at most {DBSIZE_MAX_KEYS} keys\r\n"
                    ));
                }
                cursor = next;
            }
            Bytes::from(format!(":{n}\r\n"))
        })
    }

    fn same_shard(&self, keys: &[&[u8]]) -> bool {
        if !self.inner.engine.link.is_cluster() {
            return true;
        }
        let mut slots = keys.iter().map(|k| super::link::slot(k));
        let first = slots.next();
        slots.all(|s| Some(s) == first)
    }

    fn is_engine_key(&self, key: &[u8]) -> bool {
        let p = self.inner.engine.opts.prefix.as_bytes();
        key.len() > p.len() && key.starts_with(p) && key[p.len()] == b':'
    }

    fn history_key(&self, channel: &[u8]) -> Vec<u8> {
        self.inner.engine.key("history", channel)
    }

    fn publish_commands(
        &self,
        channel: &[u8],
        payload: &[u8],
        history: Option<HistoryOptions>,
        shard: bool,
    ) -> Vec<Vec<Bytes>> {
        let e = &self.inner.engine;
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(b'm');
        frame.extend_from_slice(payload);
        let b = |v: Vec<u8>| Bytes::from(v);
        let copy = if shard { None } else { e.pattern_copy(channel) };
        match (shard, history) {
            (true, _) | (false, None) => {
                let mut cmds = vec![vec![
                    Bytes::from_static(e.publish_cmd().as_bytes()),
                    b(e.channel_name(if shard { "sh" } else { "ch" }, channel)),
                    b(frame.clone()),
                ]];
                if let Some(plain) = copy {
                    cmds.push(vec![Bytes::from_static(b"PUBLISH"), b(plain), b(frame)]);
                }
                cmds
            }
            (false, Some(opts)) => {
                let mut cmd = vec![
                    Bytes::from_static(b"EVAL"),
                    Bytes::from_static(super::pubsub::PUBLISH_SCRIPT.as_bytes()),
                    Bytes::from_static(b"2"),
                ];
                cmd.extend(e.history_script_args(channel, payload, opts).map(b));
                vec![cmd]
            }
        }
    }

    fn append_commands(
        &self,
        channel: &[u8],
        fields: &[Bytes],
        payload: &[u8],
        opts: HistoryOptions,
    ) -> Vec<Vec<Bytes>> {
        let e = &self.inner.engine;
        let b = |v: Vec<u8>| Bytes::from(v);
        let mut cmd = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from_static(XADD_SCRIPT.as_bytes()),
            Bytes::from_static(b"2"),
            b(e.key("history", channel)),
            b(e.key("meta", channel)),
            Bytes::copy_from_slice(payload),
            b(opts.size.to_string().into_bytes()),
            b(opts.ttl_ms.to_string().into_bytes()),
            b(RedisEngine::new_epoch().to_string().into_bytes()),
            b(e.run_id(&e.key("history", channel)).into_bytes()),
            b(e.channel_name("ch", channel)),
            Bytes::from_static(e.publish_cmd().as_bytes()),
            b(e.pattern_copy(channel).unwrap_or_default()),
        ];
        cmd.extend(fields.iter().cloned());
        vec![cmd]
    }

    fn append_entry(
        &self,
        channel: Bytes,
        fields: Vec<Bytes>,
        payload: Bytes,
        opts: HistoryOptions,
        resp3: bool,
    ) -> Pending<'static, Frame> {
        let inner = self.inner.clone();
        Pending::boxed(async move {
            let e = &inner.engine;
            if let Err(err) = e.verify_run().await {
                return unavailable_frame(&err.to_string());
            }
            // The publish script's keys and arguments, then the fields.
            let [stream, meta, args @ ..] = e.history_script_args(&channel, &payload, opts);
            let mut inv = inner.xadd.key(stream);
            inv.key(meta);
            for a in args {
                inv.arg(a);
            }
            for f in &fields {
                inv.arg(&f[..]);
            }
            let mut conn = match inner.shared(resp3).await {
                Ok(c) => c,
                Err(f) => return f,
            };
            match inv.invoke_async::<(u64, String)>(&mut conn).await {
                Ok((top, _epoch)) => {
                    e.note_history(&channel, top, opts.size, payload.len());
                    let mut out = BytesMut::new();
                    put_bulk(&mut out, format!("{top}-0").as_bytes());
                    out.freeze()
                }
                Err(err) => {
                    let (f, bad) = error_frame(err);
                    if bad {
                        e.mark_failed();
                    }
                    f
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: Value, resp3: bool, args: &[&str]) -> String {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        let mut out = BytesMut::new();
        encode(&v, resp3, Nulls::of(&args, false), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn nulls_follow_the_command() {
        assert_eq!(enc(Value::Nil, false, &["GET", "k"]), "$-1\r\n");
        assert_eq!(enc(Value::Nil, false, &["BLPOP", "k", "1"]), "*-1\r\n");
        assert_eq!(enc(Value::Nil, false, &["lpop", "k", "2"]), "*-1\r\n");
        assert_eq!(enc(Value::Nil, false, &["lpop", "k"]), "$-1\r\n");
        assert_eq!(enc(Value::Nil, true, &["BLPOP", "k", "1"]), "_\r\n");
        let summary = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(
            enc(summary, false, &["XPENDING", "s", "g"]),
            "*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"
        );
    }

    #[test]
    fn resp3_types_keep_their_form() {
        assert_eq!(enc(Value::Double(1.5), true, &["ZSCORE"]), ",1.5\r\n");
        assert_eq!(
            enc(Value::Double(f64::INFINITY), true, &["ZSCORE"]),
            ",inf\r\n"
        );
        let m = Value::Map(vec![(Value::BulkString(b"a".to_vec()), Value::Int(1))]);
        assert_eq!(enc(m.clone(), true, &["X"]), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(m, false, &["X"]), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(Value::Set(vec![]), true, &["X"]), "~0\r\n");
        assert_eq!(enc(Value::Boolean(true), true, &["X"]), "#t\r\n");
    }
}
