//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH with Redis's
//! semantics: commands queue (+QUEUED) after MULTI, an error while queuing
//! makes EXEC answer EXECABORT, a WATCHed key modified before EXEC makes it
//! answer a null array, and EXEC runs the queue with no other client's
//! command in between (`Hub::exclusive`).

use bytes::Bytes;

use super::{Command, ALL_RO};
use crate::resp::connection::Conn;

const T: &[&str] = &["@fast", "@transaction"];

pub const MULTI: Command = Command::new("multi", 1, "transactions", "Starts a transaction.", multi)
    .flags(&["noscript", "loading", "stale", "fast", "allow_busy"])
    .acl(T);
pub const EXEC: Command = Command::new(
    "exec",
    1,
    "transactions",
    "Executes all commands in a transaction.",
    exec,
)
.flags(&["noscript", "loading", "stale", "skip_slowlog"])
.acl(&["@slow", "@transaction"]);
pub const DISCARD: Command = Command::new(
    "discard",
    1,
    "transactions",
    "Discards a transaction.",
    discard,
)
.flags(&["noscript", "loading", "stale", "fast", "allow_busy"])
.acl(T);
pub const WATCH: Command = Command::new(
    "watch",
    -2,
    "transactions",
    "Monitors changes to keys to determine the execution of a transaction.",
    watch,
)
.flags(&["noscript", "loading", "stale", "fast", "allow_busy"])
.acl(T)
.keys(ALL_RO);
pub const UNWATCH: Command = Command::new(
    "unwatch",
    1,
    "transactions",
    "Forgets about watched keys of a transaction.",
    unwatch,
)
.flags(&["noscript", "loading", "stale", "fast", "allow_busy"])
.acl(T);

fn multi(conn: &mut Conn, _args: &[Bytes]) {
    if conn.queuing() {
        return conn.reply().error("ERR MULTI calls can not be nested");
    }
    let x = conn.extra();
    x.multi = Some(Vec::new());
    x.multi_dirty = false;
    x.multi_bytes = 0;
    conn.reply().simple("OK");
}

fn discard(conn: &mut Conn, _args: &[Bytes]) {
    if conn.end_multi().is_none() {
        return conn.reply().error("ERR DISCARD without MULTI");
    }
    unwatch_all(conn);
    conn.reply().simple("OK");
}

fn watch(conn: &mut Conn, args: &[Bytes]) {
    if conn.queuing() {
        return conn.reply().error("ERR WATCH inside MULTI is not allowed");
    }
    if let Some(remote) = conn.server.hub.remote_keyspace().cloned() {
        return super::remote::watch(conn, args, remote);
    }
    let hub = conn.server.hub.clone();
    let mut seen: std::collections::HashSet<&Bytes> =
        conn.watched().iter().map(|(k, _)| k).collect();
    let fresh: Vec<Bytes> = args[1..]
        .iter()
        .filter(|k| seen.insert(k))
        .cloned()
        .collect();
    let versions = hub.watch_keys(fresh);
    conn.extra().watched.extend(versions);
    conn.reply().simple("OK");
}

fn unwatch(conn: &mut Conn, _args: &[Bytes]) {
    unwatch_all(conn);
    conn.reply().simple("OK");
}

/// Forgets every WATCH of this client.
pub fn unwatch_all(conn: &mut Conn) {
    super::remote::drop_watches(conn);
    if conn.watched().is_empty() {
        return;
    }
    let watched = std::mem::take(&mut conn.extra().watched);
    conn.server.hub.unwatch_keys(watched.iter().map(|(k, _)| k));
}

fn exec(conn: &mut Conn, _args: &[Bytes]) {
    let dirty = conn.extra.as_ref().is_some_and(|x| x.multi_dirty);
    let Some(queue) = conn.end_multi() else {
        return conn.reply().error("ERR EXEC without MULTI");
    };
    if dirty {
        unwatch_all(conn);
        return conn
            .reply()
            .error("EXECABORT Transaction discarded because of previous errors.");
    }
    if let Some(remote) = conn.server.hub.remote_keyspace().cloned() {
        return super::remote::exec(conn, queue, remote);
    }
    let hub = conn.server.hub.clone();
    // No other client's command between the WATCH check and the last
    // queued command (nor the subscriptions they registered).
    hub.exclusive(|| {
        let touched = hub.watched_changed(conn.watched());
        unwatch_all(conn);
        if touched {
            return conn.reply().null_array();
        }
        conn.reply().array(queue.len());
        conn.in_exec = true;
        for args in &queue {
            super::dispatch(conn, args);
        }
        conn.in_exec = false;
        conn.register_deferred();
    });
}
