//! Engine mode: data commands served from the engine's store (Redis), so
//! every node gives the same answers. Dispatch makes its checks first
//! (existence, arity, auth, key permissions, MULTI queuing), then a data
//! command is forwarded here instead of running on the node's keyspace; the
//! connection waits for the answer without parking its thread
//! (`connection::awaiting`).
//!
//! - Ordinary commands go on the engine's shared connection; blocking ones
//!   (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, XREAD/XREADGROUP with BLOCK) and
//!   WATCH…EXEC on a dedicated one (bounded: `--engine-dedicated-connections`).
//! - `MULTI`…`EXEC` is queued here as in memory mode; EXEC sends the data
//!   commands, and the store commands each PUBLISH/SPUBLISH is, as one
//!   Redis transaction; other queued commands (PING, SUBSCRIBE, …) run on
//!   the node after it, their replies in their places.
//! - `__presence__:C` views stay the node's (from the engine's presence).
//! - The engine's own keys are refused to commands and hidden from KEYS,
//!   SCAN and DBSIZE; FLUSHALL and FLUSHDB are refused (they would delete
//!   the engine's histories and presence).
//! - A stream command on a channel with history acts on the channel's
//!   history stream in the engine; an XADD there goes through the engine's
//!   append-and-publish step, so it takes the next offset and reaches
//!   subscribers on every node.

use std::sync::Arc;

use bytes::Bytes;

use super::{find_sub, lookup, Access, Command};
use crate::hub::engine::{Dedicated, Frame, RemoteKeyspace};
use crate::resp::connection::{Conn, Then};

/// Whether dispatch forwards `cmd` (of `top`) in engine mode.
pub(super) fn forwarded(top: &Command, cmd: &Command) -> bool {
    (!cmd.keys.is_empty() && top.name != "watch")
        || matches!(
            top.name,
            "keys" | "scan" | "dbsize" | "flushall" | "flushdb"
        )
}

/// Whether `args` may be sent while this client's earlier forwarded
/// commands are under way: a plain data command on the shared connection
/// (not blocking, not transactional, not DBSIZE, not an XADD to a history
/// channel, no presence view), outside MULTI. Its checks may still refuse
/// it (an error answered in its place).
pub fn pipelinable(conn: &Conn, args: &[Bytes]) -> bool {
    let Some(remote) = conn.server.hub.remote_keyspace() else {
        return false;
    };
    if conn.queuing() || conn.in_exec || args.is_empty() {
        return false;
    }
    let Some((top, cmd)) = resolve(args) else {
        return false;
    };
    if !cmd.arity_ok(args.len())
        || !forwarded(top, cmd)
        || matches!(top.name, "dbsize" | "flushall" | "flushdb")
        || blocking(args)
    {
        return false;
    }
    let keys = super::command_keys(cmd, args);
    !keys.iter().any(|(k, _)| {
        crate::hub::presence::presence_channel(k).is_some()
            || remote.is_engine_key(k)
            || (top.name == "xadd" && conn.server.hub.rules(k).history.is_some())
    })
}

/// Whether the command waits for data (needs a dedicated connection).
fn blocking(args: &[Bytes]) -> bool {
    let name = &args[0];
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"blpop") || is(b"brpop") || is(b"blmove") || is(b"brpoplpush") {
        return true;
    }
    (is(b"xread") || is(b"xreadgroup"))
        && args[1..]
            .iter()
            .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
            .any(|a| a.eq_ignore_ascii_case(b"block"))
}

/// Redis Cluster's answer to a command whose keys are in several slots.
pub(super) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Whether a data command being queued in MULTI names keys in several
/// slots of a sharded store: refused as it is queued (EXEC then answers
/// EXECABORT), as a Redis Cluster master refuses it.
pub(super) fn spans_slots(
    top: &Command,
    cmd: &Command,
    keys: &[(&Bytes, Access)],
    remote: &dyn RemoteKeyspace,
) -> bool {
    forwarded(top, cmd)
        && !keys
            .iter()
            .any(|(k, _)| crate::hub::presence::presence_channel(k).is_some())
        && !remote.same_shard(&keys.iter().map(|(k, _)| &k[..]).collect::<Vec<_>>())
}

const ENGINE_KEY: &str =
    "ERR this key belongs to Herald's engine (--engine-prefix): not for data commands";

/// Runs a data command on the engine; false when it runs on this node
/// instead (a presence view).
pub(super) fn run(
    conn: &mut Conn,
    top: &Command,
    args: &[Bytes],
    keys: &[(&Bytes, Access)],
    remote: Arc<dyn RemoteKeyspace>,
) -> bool {
    if keys
        .iter()
        .any(|(k, _)| crate::hub::presence::presence_channel(k).is_some())
    {
        return false;
    }
    if keys.iter().any(|(k, _)| remote.is_engine_key(k)) {
        conn.reply().error(ENGINE_KEY);
        return true;
    }
    if !remote.same_shard(&keys.iter().map(|(k, _)| &k[..]).collect::<Vec<_>>()) {
        conn.reply().error(CROSSSLOT);
        return true;
    }
    match top.name {
        "flushall" | "flushdb" => {
            conn.reply().error(&format!(
                "ERR {} is not served on the Redis engine: it would delete Herald's own histories and presence; delete keys with DEL or UNLINK",
                top.name.to_ascii_uppercase()
            ));
            return true;
        }
        "dbsize" => {
            let filter = readable_filter(conn);
            await_observed(conn, top.name, false, remote.dbsize(filter));
            return true;
        }
        _ => {}
    }
    let resp3 = conn.resp3;
    let rewritten = history_keys(conn, top, args, keys, &*remote);
    if matches!(top.name, "xread" | "xreadgroup") && rewritten[..] != args[..] {
        // The reply names each stream: the channel, not the engine's key.
        let names: Vec<(Vec<u8>, Vec<u8>)> = rewritten
            .iter()
            .zip(args)
            .filter(|(r, a)| r != a)
            .map(|(r, a)| (bulk(r), bulk(a)))
            .collect();
        let fut = run_one(remote, rewritten, resp3, blocking(args));
        await_observed(conn, top.name, blocking(args), async move {
            let f = fut.await;
            names
                .iter()
                .fold(f, |f, (from, to)| replace_bytes(&f, from, to))
        });
        return true;
    }
    let args = rewritten;
    if let Some(channel) = history_xadd(conn, top, &args, keys) {
        if let Some(fut) = xadd_history(conn, &args, channel, &*remote) {
            await_observed(conn, top.name, false, fut);
        }
        return true;
    }
    let block = blocking(&args);
    await_observed(conn, top.name, block, run_one(remote, args, resp3, block));
    true
}

/// Waits for `frame`, replies it and counts the command's time (from
/// dispatch to the answer) in the command metrics.
fn await_observed(
    conn: &mut Conn,
    name: &'static str,
    block: bool,
    frame: impl std::future::Future<Output = Frame> + Send + 'static,
) {
    let started = std::time::Instant::now();
    conn.await_then(block, async move {
        let f = frame.await;
        Box::new(move |conn: &mut Conn| {
            conn.reply_frame(&f);
            conn.server
                .metrics
                .observe_command("resp", name, started.elapsed());
        }) as Then
    });
}

/// One command on the engine: on a dedicated connection when it blocks.
fn run_one(
    remote: Arc<dyn RemoteKeyspace>,
    args: Vec<Bytes>,
    resp3: bool,
    block: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Frame> + Send>> {
    if !block {
        return Box::pin(remote.command(args, resp3));
    }
    let key = first_key(&args);
    Box::pin(async move {
        match remote.dedicated(resp3, key).await {
            Err(f) => f,
            Ok(d) => {
                let f = d.command(args, false).await;
                d.release();
                f
            }
        }
    })
}

/// The first key of a command (where a sharded store serves it).
fn first_key(args: &[Bytes]) -> Option<Bytes> {
    let cmd = super::lookup(&args[0])?;
    super::command_keys(cmd, args)
        .first()
        .map(|(k, _)| (*k).clone())
}

/// A bulk string's encoding.
fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    Bytes::from(out)
}

/// DBSIZE of a client without the password counts only keys it may read.
#[allow(clippy::type_complexity)]
fn readable_filter(conn: &Conn) -> Option<Arc<dyn Fn(&[u8]) -> bool + Send + Sync>> {
    let id = match &conn.identity {
        Some(crate::auth::Identity::Password) | None => return None,
        Some(id) => id.clone(),
    };
    let cfg = conn.server.cfg.clone();
    Some(Arc::new(move |k: &[u8]| {
        let target = crate::hub::presence::presence_channel(k).unwrap_or(k);
        id.can_subscribe(target, cfg.namespace(target))
    }))
}

/// Stream commands on a channel with history act on the channel's history
/// stream in the engine: its key, from the engine, replaces the channel's
/// name.
fn history_keys(
    conn: &Conn,
    top: &Command,
    args: &[Bytes],
    keys: &[(&Bytes, Access)],
    remote: &dyn RemoteKeyspace,
) -> Vec<Bytes> {
    let mut out = args.to_vec();
    if !top.name.starts_with('x') {
        return out;
    }
    let hub = &conn.server.hub;
    for (k, _) in keys {
        if hub.rules(k).history.is_none() {
            continue;
        }
        // The key's own argument (keys borrow from `args`).
        if let Some(i) = args.iter().position(|a| std::ptr::eq(a, *k)) {
            out[i] = Bytes::from(remote.history_key(k));
        }
    }
    out
}

/// The channel an XADD to a channel with history appends to.
fn history_xadd(
    conn: &Conn,
    top: &Command,
    _args: &[Bytes],
    keys: &[(&Bytes, Access)],
) -> Option<Bytes> {
    if top.name != "xadd" {
        return None;
    }
    let (k, _) = keys.first()?;
    conn.server
        .hub
        .rules(k)
        .history
        .is_some()
        .then(|| (*k).clone())
}

/// An XADD to a channel with history: only `XADD key * field value …` (or
/// the id `*` after the options a history keeps itself: none). The engine
/// appends the fields as given under the next offset and publishes the
/// entry's payload, as memory mode does.
fn xadd_history(
    conn: &mut Conn,
    args: &[Bytes],
    channel: Bytes,
    remote: &dyn RemoteKeyspace,
) -> Option<crate::hub::engine::Pending<'static, Frame>> {
    match xadd_parts(conn, args, &channel) {
        Ok((fields, payload, opts)) => {
            Some(remote.append_entry(channel, fields, payload, opts, conn.resp3))
        }
        Err(msg) => {
            conn.reply().error(msg);
            None
        }
    }
}

/// An XADD to a history channel's fields, payload and bounds, or why it
/// is refused.
fn xadd_parts(
    conn: &Conn,
    args: &[Bytes],
    channel: &[u8],
) -> Result<(Vec<Bytes>, Bytes, crate::hub::engine::HistoryOptions), &'static str> {
    if args[2][..] != b"*"[..] {
        return Err("ERR on the Redis engine, XADD to a channel with history takes the id * only (the channel's offsets number its entries): XADD key * field value [field value ...]");
    }
    let fields = &args[3..];
    if fields.is_empty() || !fields.len().is_multiple_of(2) {
        return Err("ERR wrong number of arguments for 'xadd' command");
    }
    let pairs: Vec<(Bytes, Bytes)> = fields
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let payload = crate::hub::entry_payload(&pairs);
    let opts = conn
        .server
        .hub
        .rules(channel)
        .history
        .ok_or("ERR not a channel with history")?;
    Ok((fields.to_vec(), payload, opts))
}

/// WATCH on the engine: the client's dedicated connection (taken on its
/// first WATCH) watches the keys in Redis.
pub(super) fn watch(conn: &mut Conn, args: &[Bytes], remote: Arc<dyn RemoteKeyspace>) {
    if args[1..].iter().any(|k| remote.is_engine_key(k)) {
        conn.reply().error(ENGINE_KEY);
        return;
    }
    let resp3 = conn.resp3;
    let held = conn.extra.as_mut().and_then(|x| x.remote_tx.take());
    // A channel with history is its history stream, as in memory mode: a
    // publish to it touches the watched key.
    let hub = conn.server.hub.clone();
    let args: Vec<Bytes> = args
        .iter()
        .enumerate()
        .map(|(i, k)| match i > 0 && hub.rules(k).history.is_some() {
            true => Bytes::from(remote.history_key(k)),
            false => k.clone(),
        })
        .collect();
    let key = args.get(1).cloned();
    conn.await_then(false, async move {
        let d = match held {
            Some(d) => d,
            None => match remote.dedicated(resp3, key).await {
                Ok(d) => d,
                Err(f) => return Box::new(move |conn: &mut Conn| conn.reply_frame(&f)) as Then,
            },
        };
        let f = d.command(args, false).await;
        Box::new(move |conn: &mut Conn| {
            conn.extra().remote_tx = Some(d);
            conn.reply_frame(&f);
        }) as Then
    });
}

/// One queued command of a transaction on the engine.
enum Item {
    /// Its reply is Redis's next one.
    Remote,
    /// A publish: `n` store commands, answered with this node's receivers.
    Publish {
        n: usize,
        channel: Bytes,
        shard: bool,
    },
    /// Runs on this node after the transaction (PING, SUBSCRIBE, …).
    Local(Vec<Bytes>),
    /// Refused before the transaction (a publish without permission).
    Refused(Bytes),
    /// An XADD to a history channel: the engine's append step, answered
    /// with the entry's id (`{offset}-0`).
    HistoryAdd,
    /// A (P|S)SUBSCRIBE whose engine subscribes the transaction awaits:
    /// the next of the subscribes done.
    Subscribe,
}

fn resolve(args: &[Bytes]) -> Option<(&'static Command, &'static Command)> {
    let top = lookup(&args[0])?;
    if top.subcommands.is_empty() || (args.len() == 1 && top.arity == -1) {
        return Some((top, top));
    }
    find_sub(top, args.get(1)?).map(|s| (top, s))
}

/// EXEC on the engine: the data commands and publishes as one Redis
/// transaction (on the connection holding the client's WATCHes, or a
/// dedicated one), the rest on this node, each reply in its place. On a
/// sharded store (Redis Cluster) everything the transaction touches there
/// (the queued commands' keys, the slots of the channels it publishes or
/// appends to) must be in one slot: otherwise EXEC answers CROSSSLOT and
/// nothing runs, as a Cluster master answers a transaction whose keys span
/// slots.
pub(super) fn exec(conn: &mut Conn, queue: Vec<Vec<Bytes>>, remote: Arc<dyn RemoteKeyspace>) {
    let mut items = Vec::with_capacity(queue.len());
    let mut cmds: Vec<Vec<Bytes>> = Vec::new();
    // A key in the slot of each store command (a channel's history key
    // for its publishes and appends: the channel's keys share its slot).
    let mut slot_keys: Vec<Bytes> = Vec::new();
    let mut subscribes = Vec::new();
    for args in queue {
        let Some((top, cmd)) = resolve(&args) else {
            items.push(Item::Local(args));
            continue;
        };
        let args = match super::pubsub::exec_subscribe(conn, top.name, args) {
            Ok(s) => {
                subscribes.push(s);
                items.push(Item::Subscribe);
                continue;
            }
            Err(args) => args,
        };
        if matches!(top.name, "publish" | "spublish") {
            let shard = top.name == "spublish";
            let saved = std::mem::take(&mut conn.out);
            let ok = super::pubsub::publish_allowed(conn, &args, shard);
            let err = std::mem::replace(&mut conn.out, saved);
            if !ok {
                items.push(Item::Refused(err.freeze()));
                continue;
            }
            let history = if shard {
                None
            } else {
                conn.server.hub.rules(&args[1]).history
            };
            let publish = remote.publish_commands(&args[1], &args[2], history, shard);
            slot_keys.push(Bytes::from(remote.history_key(&args[1])));
            items.push(Item::Publish {
                n: publish.len(),
                channel: args[1].clone(),
                shard,
            });
            cmds.extend(publish);
            continue;
        }
        let keys = super::command_keys(cmd, &args);
        if let Some(channel) = history_xadd(conn, top, &args, &keys) {
            match xadd_parts(conn, &args, &channel) {
                Ok((fields, payload, opts)) => {
                    cmds.extend(remote.append_commands(&channel, &fields, &payload, opts));
                    slot_keys.push(Bytes::from(remote.history_key(&channel)));
                    items.push(Item::HistoryAdd);
                }
                Err(msg) => items.push(Item::Refused(Bytes::from(format!("-{msg}\r\n")))),
            }
            continue;
        }
        if matches!(top.name, "dbsize" | "flushall" | "flushdb") {
            items.push(Item::Refused(Bytes::from(format!(
                "-ERR {} inside MULTI is not served on the Redis engine\r\n",
                top.name.to_ascii_uppercase()
            ))));
            continue;
        }
        let local = !forwarded(top, cmd)
            || keys
                .iter()
                .any(|(k, _)| crate::hub::presence::presence_channel(k).is_some());
        if local {
            items.push(Item::Local(args));
            continue;
        }
        if keys.iter().any(|(k, _)| remote.is_engine_key(k)) {
            items.push(Item::Refused(Bytes::from(format!("-{ENGINE_KEY}\r\n"))));
            continue;
        }
        if !remote.same_shard(&keys.iter().map(|(k, _)| &k[..]).collect::<Vec<_>>()) {
            items.push(Item::Refused(Bytes::from(format!("-{CROSSSLOT}\r\n"))));
            continue;
        }
        let rewritten = history_keys(conn, top, &args, &keys, &*remote);
        drop(keys);
        slot_keys.extend(
            super::command_keys(cmd, &rewritten)
                .into_iter()
                .map(|(k, _)| k.clone()),
        );
        cmds.push(rewritten);
        items.push(Item::Remote);
    }
    let held = conn.extra.as_mut().and_then(|x| x.remote_tx.take());
    super::transactions::unwatch_all(conn);
    if !remote.same_shard(&slot_keys.iter().map(|k| &k[..]).collect::<Vec<_>>()) {
        // Discarded, WATCHes dropped (with `held`), as Redis does.
        return conn.reply().error(CROSSSLOT);
    }
    let ready = subscribes.iter().all(|s| s.ready());
    if cmds.is_empty() && held.is_none() && ready {
        let subscribed = subscribes.into_iter().map(|s| s.prepared_now()).collect();
        return finish_exec(conn, items, Ok(Some(Vec::new())), subscribed);
    }
    let resp3 = conn.resp3;
    let key = cmds.iter().find_map(|c| first_key(c));
    conn.await_then(false, async move {
        // The engine subscribes first: a subscribe it refuses is an error
        // in EXEC's reply, as outside.
        let mut subscribed = Vec::with_capacity(subscribes.len());
        for s in subscribes {
            subscribed.push(s.prepared().await);
        }
        if cmds.is_empty() && held.is_none() {
            return Box::new(move |conn: &mut Conn| {
                finish_exec(conn, items, Ok(Some(Vec::new())), subscribed)
            }) as Then;
        }
        let d = match held {
            Some(d) => d,
            None => match remote.dedicated(resp3, key).await {
                Ok(d) => d,
                Err(f) => return Box::new(move |conn: &mut Conn| conn.reply_frame(&f)) as Then,
            },
        };
        let out = d.transaction(cmds).await;
        d.release();
        Box::new(move |conn: &mut Conn| finish_exec(conn, items, out, subscribed)) as Then
    });
}

fn finish_exec(
    conn: &mut Conn,
    items: Vec<Item>,
    out: crate::hub::engine::TxOutcome,
    subscribed: Vec<super::pubsub::ExecSubscribed>,
) {
    let mut subscribed = subscribed.into_iter();
    let replies = match out {
        Err(f) => return conn.reply_frame(&f),
        Ok(None) => return conn.reply().null_array(),
        Ok(Some(r)) => r,
    };
    let mut replies = replies.into_iter();
    conn.reply().array(items.len());
    for item in items {
        match item {
            Item::Remote => match replies.next() {
                Some(f) => conn.reply_frame(&f),
                None => conn.reply().error("ERR engine: missing reply in EXEC"),
            },
            Item::Publish { n, channel, shard } => {
                let errors: Vec<Frame> = replies
                    .by_ref()
                    .take(n)
                    .filter(|f| f.first() == Some(&b'-'))
                    .collect();
                match errors.first() {
                    Some(e) => conn.reply_frame(e),
                    None => {
                        let n = conn.server.hub.local_receivers(&channel, shard);
                        conn.reply().int(n as i64);
                    }
                }
            }
            Item::Local(args) => {
                conn.in_exec = true;
                super::dispatch(conn, &args);
                conn.in_exec = false;
            }
            Item::Refused(f) => conn.reply_frame(&f),
            Item::Subscribe => match subscribed.next() {
                Some(s) => {
                    conn.in_exec = true;
                    s.run(conn);
                    conn.in_exec = false;
                }
                None => conn.reply().error("ERR engine: missing subscribe in EXEC"),
            },
            Item::HistoryAdd => match replies.next() {
                Some(f) if f.first() == Some(&b'-') => conn.reply_frame(&f),
                // The script's reply: `[offset, epoch]`.
                Some(f) => match appended_offset(&f) {
                    Some(top) => conn.reply().bulk(format!("{top}-0").as_bytes()),
                    None => conn.reply().error("ERR engine: unexpected append reply"),
                },
                None => conn.reply().error("ERR engine: missing reply in EXEC"),
            },
        }
    }
    conn.register_deferred();
}

/// The offset in the append script's encoded reply (`*2\r\n:N\r\n…`).
fn appended_offset(frame: &[u8]) -> Option<u64> {
    let rest = frame.strip_prefix(b"*2\r\n:")?;
    let end = rest.iter().position(|b| *b == b'\r')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Drops the client's dedicated connection (its WATCHes go with it).
pub(super) fn drop_watches(conn: &mut Conn) {
    if let Some(x) = conn.extra.as_mut() {
        let d: Option<Box<dyn Dedicated>> = x.remote_tx.take();
        drop(d);
    }
}
