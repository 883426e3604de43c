//! The command table and dispatch: existence, arity, authentication and the
//! RESP2 subscribed-context rule are checked here, in Redis's order and with
//! Redis's error texts, before a command runs.
//!
//! One file per command family; each command is a plain function over the
//! connection state and its arguments.

mod admin;
mod client;
mod command;
mod connection;
mod hashes;
mod info;
mod keys;
mod lists;
mod pubsub;
mod remote;
mod sets;
mod streams;
mod strings;
mod transactions;
mod zsets;

use bytes::Bytes;

use super::connection::Conn;
use crate::hub::Stats;

/// A command or subcommand.
pub struct Command {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: exact when positive, minimum when negative (name included).
    pub arity: i32,
    /// Runs before authenticating (AUTH, HELLO, QUIT, RESET).
    pub no_auth: bool,
    /// Allowed in the RESP2 subscribed context.
    pub pubsub_ok: bool,
    pub flags: &'static [&'static str],
    pub acl: &'static [&'static str],
    pub group: &'static str,
    pub summary: &'static str,
    pub run: fn(&mut Conn, &[Bytes]),
    pub subcommands: &'static [Command],
    /// Where the command's keys are and what it does with each.
    pub keys: &'static [KeySpec],
}

/// What a command does with a key, for permissions: `read` when it returns
/// the key's contents (members, scores, entries) or its metadata (lengths,
/// TTLs, type), `write` when it changes the key. Stricter than Redis's ACL,
/// which lets a write-only user run commands that also return data (SPOP,
/// XAUTOCLAIM); like Redis, a write's own reply (a count, an id, WRONGTYPE)
/// is not counted as a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
}

/// Reads a key.
pub const RO: Access = Access {
    read: true,
    write: false,
};
/// Changes a key without returning its contents.
pub const WO: Access = Access {
    read: false,
    write: true,
};
/// Changes a key and returns (some of) its contents.
pub const RW: Access = Access {
    read: true,
    write: true,
};

/// Where a command's keys are in its arguments (name at 0; for a
/// subcommand, the subcommand's name at 1), after Redis's key specs.
#[derive(Debug, Clone, Copy)]
pub enum KeySpec {
    /// `args[first]`, `args[first + step]`, … up to `args.len() - from_end`
    /// (exclusive): `from_end = 0` runs to the last argument.
    Range {
        first: usize,
        step: usize,
        from_end: usize,
        access: Access,
    },
    /// One key at `at`.
    At { at: usize, access: Access },
    /// A count at `at`, then that many keys (SINTERCARD, ZUNIONSTORE).
    NumKeys { at: usize, access: Access },
    /// The keys of XREAD (`group: false`) or XREADGROUP, after STREAMS as
    /// the command's own grammar finds it (not the first STREAMS word).
    Streams { group: bool, access: Access },
}

/// One key at position 1: most commands.
pub(crate) const KEY1_RO: &[KeySpec] = &[KeySpec::At { at: 1, access: RO }];
pub(crate) const KEY1_WO: &[KeySpec] = &[KeySpec::At { at: 1, access: WO }];
pub(crate) const KEY1_RW: &[KeySpec] = &[KeySpec::At { at: 1, access: RW }];
/// Every argument from 1 on is a key.
pub(crate) const ALL_RO: &[KeySpec] = &[KeySpec::Range {
    first: 1,
    step: 1,
    from_end: 0,
    access: RO,
}];
pub(crate) const ALL_WO: &[KeySpec] = &[KeySpec::Range {
    first: 1,
    step: 1,
    from_end: 0,
    access: WO,
}];
/// A destination at 1, source keys from 2 on (SUNIONSTORE …).
pub(crate) const STORE: &[KeySpec] = &[
    KeySpec::At { at: 1, access: WO },
    KeySpec::Range {
        first: 2,
        step: 1,
        from_end: 0,
        access: RO,
    },
];
/// A key at 2, after a subcommand name (XGROUP CREATE key …).
pub(crate) const SUBKEY_RO: &[KeySpec] = &[KeySpec::At { at: 2, access: RO }];
pub(crate) const SUBKEY_WO: &[KeySpec] = &[KeySpec::At { at: 2, access: WO }];

impl KeySpec {
    /// Appends the keys this spec finds in `args` with their access.
    fn collect<'a>(&self, args: &'a [Bytes], out: &mut Vec<(&'a Bytes, Access)>) {
        match *self {
            KeySpec::At { at, access } => out.extend(args.get(at).map(|k| (k, access))),
            KeySpec::Range {
                first,
                step,
                from_end,
                access,
            } => {
                let end = args.len().saturating_sub(from_end);
                if first < end {
                    out.extend(
                        args[first..end]
                            .iter()
                            .step_by(step.max(1))
                            .map(|k| (k, access)),
                    );
                }
            }
            KeySpec::NumKeys { at, access } => {
                let n = args
                    .get(at)
                    .and_then(|a| super::parse::parse_i64(a))
                    .unwrap_or(0)
                    .max(0) as usize;
                let first = at + 1;
                let end = first.saturating_add(n).min(args.len());
                if first < end {
                    out.extend(args[first..end].iter().map(|k| (k, access)));
                }
            }
            KeySpec::Streams { group, access } => {
                let range = streams::read_key_positions(args, group);
                out.extend(args[range].iter().map(|k| (k, access)));
            }
        }
    }
}

impl Command {
    const fn new(
        name: &'static str,
        arity: i32,
        group: &'static str,
        summary: &'static str,
        run: fn(&mut Conn, &[Bytes]),
    ) -> Command {
        Command {
            name,
            arity,
            no_auth: false,
            pubsub_ok: false,
            flags: &[],
            acl: &[],
            group,
            summary,
            run,
            subcommands: &[],
            keys: &[],
        }
    }
    const fn keys(mut self, k: &'static [KeySpec]) -> Self {
        self.keys = k;
        self
    }
    const fn no_auth(mut self) -> Self {
        self.no_auth = true;
        self
    }
    const fn pubsub_ok(mut self) -> Self {
        self.pubsub_ok = true;
        self
    }
    const fn flags(mut self, f: &'static [&'static str]) -> Self {
        self.flags = f;
        self
    }
    const fn acl(mut self, a: &'static [&'static str]) -> Self {
        self.acl = a;
        self
    }
    const fn subs(mut self, s: &'static [Command]) -> Self {
        self.subcommands = s;
        self
    }

    fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        (a > 0 && argc as i32 == a) || (a < 0 && argc as i32 >= -a)
    }
}

/// Every top-level command Herald serves.
pub static COMMANDS: &[Command] = &[
    connection::PING,
    connection::ECHO,
    connection::QUIT,
    connection::RESET,
    connection::HELLO,
    connection::AUTH,
    connection::SELECT,
    client::CLIENT,
    command::COMMAND,
    info::INFO,
    pubsub::PUBLISH,
    pubsub::SPUBLISH,
    pubsub::SUBSCRIBE,
    pubsub::UNSUBSCRIBE,
    pubsub::PSUBSCRIBE,
    pubsub::PUNSUBSCRIBE,
    pubsub::SSUBSCRIBE,
    pubsub::SUNSUBSCRIBE,
    pubsub::PUBSUB,
    admin::FLUSHALL,
    admin::FLUSHDB,
    admin::DBSIZE,
    admin::FUNCTION,
    admin::CONFIG,
    admin::TIME,
    keys::DEL,
    keys::UNLINK,
    keys::EXISTS,
    keys::TYPE,
    keys::EXPIRE,
    keys::PEXPIRE,
    keys::EXPIREAT,
    keys::PEXPIREAT,
    keys::TTL,
    keys::PTTL,
    keys::PERSIST,
    keys::KEYS,
    keys::SCAN,
    transactions::MULTI,
    transactions::EXEC,
    transactions::DISCARD,
    transactions::WATCH,
    transactions::UNWATCH,
    streams::XADD,
    streams::XRANGE,
    streams::XREVRANGE,
    streams::XLEN,
    streams::XREAD,
    streams::XDEL,
    streams::XTRIM,
    streams::XINFO,
    streams::XGROUP,
    streams::XREADGROUP,
    streams::XACK,
    streams::XPENDING,
    streams::XCLAIM,
    streams::XAUTOCLAIM,
    sets::SADD,
    sets::SREM,
    sets::SMEMBERS,
    sets::SISMEMBER,
    sets::SMISMEMBER,
    sets::SCARD,
    sets::SPOP,
    sets::SRANDMEMBER,
    sets::SMOVE,
    sets::SUNION,
    sets::SINTER,
    sets::SDIFF,
    sets::SUNIONSTORE,
    sets::SINTERSTORE,
    sets::SDIFFSTORE,
    sets::SINTERCARD,
    sets::SSCAN,
    zsets::ZADD,
    zsets::ZINCRBY,
    zsets::ZREM,
    zsets::ZSCORE,
    zsets::ZMSCORE,
    zsets::ZRANK,
    zsets::ZREVRANK,
    zsets::ZCARD,
    zsets::ZCOUNT,
    zsets::ZLEXCOUNT,
    zsets::ZRANGE,
    zsets::ZREVRANGE,
    zsets::ZRANGEBYSCORE,
    zsets::ZREVRANGEBYSCORE,
    zsets::ZRANGEBYLEX,
    zsets::ZREVRANGEBYLEX,
    zsets::ZREMRANGEBYSCORE,
    zsets::ZREMRANGEBYRANK,
    zsets::ZREMRANGEBYLEX,
    zsets::ZPOPMIN,
    zsets::ZPOPMAX,
    zsets::ZRANDMEMBER,
    zsets::ZSCAN,
    zsets::ZUNIONSTORE,
    zsets::ZINTERSTORE,
    strings::GET,
    strings::SET,
    strings::SETEX,
    strings::PSETEX,
    strings::SETNX,
    strings::GETDEL,
    strings::GETEX,
    strings::GETSET,
    strings::MGET,
    strings::MSET,
    strings::MSETNX,
    strings::INCR,
    strings::DECR,
    strings::INCRBY,
    strings::DECRBY,
    strings::INCRBYFLOAT,
    strings::APPEND,
    strings::STRLEN,
    strings::GETRANGE,
    strings::SETRANGE,
    hashes::HSET,
    hashes::HMSET,
    hashes::HSETNX,
    hashes::HGET,
    hashes::HMGET,
    hashes::HGETALL,
    hashes::HDEL,
    hashes::HEXISTS,
    hashes::HLEN,
    hashes::HKEYS,
    hashes::HVALS,
    hashes::HSTRLEN,
    hashes::HINCRBY,
    hashes::HINCRBYFLOAT,
    hashes::HRANDFIELD,
    hashes::HSCAN,
    lists::LPUSH,
    lists::RPUSH,
    lists::LPUSHX,
    lists::RPUSHX,
    lists::LPOP,
    lists::RPOP,
    lists::LLEN,
    lists::LRANGE,
    lists::LINDEX,
    lists::LSET,
    lists::LINSERT,
    lists::LREM,
    lists::LTRIM,
    lists::LPOS,
    lists::LMOVE,
    lists::RPOPLPUSH,
    lists::BLPOP,
    lists::BRPOP,
    lists::BLMOVE,
    lists::BRPOPLPUSH,
];

pub use remote::pipelinable;

/// Finds a top-level command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static [u8], &'static Command>> =
        std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| COMMANDS.iter().map(|c| (c.name.as_bytes(), c)).collect());
    let mut lower = [0u8; 32];
    let lower = lower.get_mut(..name.len())?;
    for (l, b) in lower.iter_mut().zip(name) {
        *l = b.to_ascii_lowercase();
    }
    index.get(&*lower).copied()
}

fn find_sub(cmd: &'static Command, name: &[u8]) -> Option<&'static Command> {
    cmd.subcommands
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Redis's unknown-command text, quoting up to 128 bytes of arguments.
fn unknown_command(args: &[Bytes]) -> Vec<u8> {
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(&args[0][..args[0].len().min(128)]);
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut quoted: Vec<u8> = Vec::new();
    for a in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        // printf's %.*s also stops at a NUL byte.
        let a = &a[..a.iter().position(|b| *b == 0).unwrap_or(a.len())];
        quoted.push(b'\'');
        quoted.extend_from_slice(&a[..a.len().min(room)]);
        quoted.extend_from_slice(b"' ");
    }
    msg.extend_from_slice(&quoted);
    msg
}

/// Runs one request, or replies with the error that stops it.
pub fn dispatch(conn: &mut Conn, args: &[Bytes]) {
    Stats::add(&conn.server.hub.stats().commands, 1);
    if !conn.continues_staged(args) {
        conn.publish_staged();
    }
    if args[0].eq_ignore_ascii_case(b"post") || args[0].eq_ignore_ascii_case(b"host:") {
        // An HTTP request (a web page's POST or GET to this port): its body
        // lines would run as inline commands. Closed without a reply, as
        // Redis does since its cross-protocol scripting fix.
        tracing::warn!(
            client = conn.handle.id,
            addr = %conn.handle.addr,
            "possible security attack: an HTTP request on the RESP port (POST or Host:); connection closed"
        );
        conn.close_after_reply();
        return;
    }
    let Some(top) = lookup(&args[0]) else {
        let msg = unknown_command(args);
        conn.doom_multi();
        conn.reply().error_bytes(&msg);
        return;
    };
    let (cmd, fullname) = if top.subcommands.is_empty() || (args.len() == 1 && top.arity == -1) {
        (top, top.name.to_string())
    } else if args.len() < 2 {
        let msg = format!("ERR wrong number of arguments for '{}' command", top.name);
        return reject(conn, top, &msg);
    } else {
        match find_sub(top, &args[1]) {
            Some(sub) => (sub, format!("{}|{}", top.name, sub.name)),
            None => {
                let mut msg = b"ERR unknown subcommand '".to_vec();
                msg.extend_from_slice(&args[1][..args[1].len().min(128)]);
                msg.extend_from_slice(
                    format!("'. Try {} HELP.", top.name.to_ascii_uppercase()).as_bytes(),
                );
                conn.doom_multi();
                conn.reply().error_bytes(&msg);
                return;
            }
        }
    };
    if !cmd.arity_ok(args.len()) {
        let msg = format!("ERR wrong number of arguments for '{fullname}' command");
        return reject(conn, top, &msg);
    }
    if conn.identity.is_none() && !top.no_auth {
        return reject(conn, top, "NOAUTH Authentication required.");
    }
    // Checked as a command arrives, not as EXEC runs it (a SUBSCRIBE
    // earlier in the transaction does not stop the rest), as in Redis.
    if !conn.resp3 && !conn.in_exec && conn.total_subscriptions() > 0 && !top.pubsub_ok {
        let msg = format!(
            "ERR Can't execute '{fullname}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        );
        return reject(conn, top, &msg);
    }
    // Server-wide commands (flushing, listing every key or client, killing
    // clients, changing configuration) are for password holders only, not
    // for JWT or anonymous clients.
    let dangerous = |c: &Command| c.acl.iter().any(|a| *a == "@dangerous" || *a == "@admin");
    if (dangerous(cmd) || (std::ptr::eq(cmd, top) && dangerous(top)) || top.name == "scan")
        && !matches!(conn.identity, Some(crate::auth::Identity::Password))
    {
        crate::hub::Stats::add(&conn.server.hub.stats().auth_failures, 1);
        let msg = format!("NOPERM this user has no permissions to run the '{fullname}' command");
        return reject(conn, top, &msg);
    }
    let keys = command_keys(cmd, args);
    let write = cmd.flags.contains(&"write") || top.flags.contains(&"write");
    if !keys_allowed(conn, &keys) {
        crate::hub::Stats::add(&conn.server.hub.stats().auth_failures, 1);
        return reject(
            conn,
            top,
            "NOPERM this user has no permissions to access one of the keys used as arguments",
        );
    }
    // Presence views are Herald's: no command of any client writes them
    // (a stream or sorted set there would shadow the view's TYPE).
    if keys
        .iter()
        .any(|(k, a)| a.write && crate::hub::presence::presence_channel(k).is_some())
    {
        return reject(
            conn,
            top,
            "ERR __presence__ keys are read-only: Herald maintains them from subscriptions",
        );
    }
    if conn.queuing()
        && !matches!(
            top.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        )
    {
        // Engine on Redis Cluster: keys in several slots are refused now.
        if let Some(remote) = conn.server.hub.remote_keyspace() {
            if remote::spans_slots(top, cmd, &keys, &**remote) {
                return reject(conn, top, remote::CROSSSLOT);
            }
        }
        // Each queued command holds its arguments until EXEC: bounded like
        // unparsed input, so MULTI cannot grow a connection without limit.
        let cost = args.iter().map(|a| a.len() + 32).sum::<usize>() + 24;
        let max = conn.server.cfg.max_query_buffer;
        let x = conn.extra();
        if x.multi_bytes.saturating_add(cost) > max {
            x.multi_dirty = true;
            conn.reply()
                .error("ERR MULTI queue too large: transaction discarded at EXEC");
            return;
        }
        x.multi_bytes += cost;
        if let Some(queue) = x.multi.as_mut() {
            queue.push(args.to_vec());
        }
        conn.reply().simple("QUEUED");
        return;
    }
    // Engine mode: data commands are served from the engine's store.
    if let Some(remote) = conn.server.hub.remote_keyspace() {
        if !conn.in_exec && remote::forwarded(top, cmd) {
            let remote = remote.clone();
            {
                let mut m = conn.handle.meta();
                m.last_cmd = (top.name, (!std::ptr::eq(cmd, top)).then_some(cmd.name));
                m.last_active = Some(std::time::Instant::now());
            }
            if remote::run(conn, top, args, &keys, remote) {
                return;
            }
        }
    }
    let started = std::time::Instant::now();
    {
        let mut m = conn.handle.meta();
        m.last_cmd = (top.name, (!std::ptr::eq(cmd, top)).then_some(cmd.name));
        m.last_active = Some(started);
    }
    // Keyspace commands run in the hub's command scope, so an EXEC never
    // sees another client's command mid-way, and the keys a write names
    // count as modified for WATCH.
    let gated = !conn.in_exec
        && (!keys.is_empty()
            || matches!(
                top.name,
                "keys" | "scan" | "dbsize" | "flushall" | "flushdb"
            ));
    let written = keys
        .iter()
        .filter(|(_, access)| write && access.write)
        .map(|(k, _)| *k);
    let hub = conn.server.hub.clone();
    let scope = hub.command_scope(gated, written);
    (cmd.run)(conn, args);
    drop(scope);
    conn.server
        .metrics
        .observe_command("resp", top.name, started.elapsed());
}

/// Replies an error that stops a command; inside MULTI it also dooms the
/// transaction (EXEC then answers EXECABORT), as in Redis.
fn reject(conn: &mut Conn, top: &Command, msg: &str) {
    if conn.queuing() {
        if top.name == "exec" {
            conn.end_multi();
            transactions::unwatch_all(conn);
            let reason = msg.strip_prefix("ERR ").unwrap_or(msg);
            conn.reply().error(&format!(
                "EXECABORT Transaction discarded because of: {reason}"
            ));
            return;
        }
        conn.doom_multi();
    }
    conn.reply().error(msg);
}

/// The keys a command names and what it does with each, from the command's
/// own key specs: for permissions, WATCH and the transaction gate.
pub fn command_keys<'a>(cmd: &Command, args: &'a [Bytes]) -> Vec<(&'a Bytes, Access)> {
    let mut keys = Vec::new();
    for spec in cmd.keys {
        spec.collect(args, &mut keys);
    }
    keys
}

/// Keys are open to password (and no-auth) clients. JWT and anonymous
/// clients read keys they may subscribe to and change keys they may publish
/// to; a command that does both needs both (a presence view is governed by
/// its channel).
pub(super) fn keys_allowed(conn: &Conn, keys: &[(&Bytes, Access)]) -> bool {
    let Some(id) = &conn.identity else {
        return true;
    };
    if *id == crate::auth::Identity::Password {
        return true;
    }
    let cfg = &conn.server.cfg;
    keys.iter().all(|(k, access)| {
        let target = crate::hub::presence::presence_channel(k).unwrap_or(k);
        let ns = cfg.namespace(target);
        (!access.read || id.can_subscribe(target, ns))
            && (!access.write || id.can_publish(target, ns))
    })
}

/// Replies to `X HELP` with Redis's layout: a heading, then lines.
pub(crate) fn help_reply(conn: &mut Conn, name: &str, lines: &[&str]) {
    let mut out = conn.reply();
    out.array(lines.len() + 3);
    out.simple(&format!(
        "{} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        name
    ));
    for l in lines {
        out.simple(l);
    }
    out.simple("HELP");
    out.simple("    Prints this help.");
}

/// Parses an integer argument as Redis does, or replies its error.
pub(crate) fn int_arg(conn: &mut Conn, arg: &[u8]) -> Option<i64> {
    let v = super::parse::parse_i64(arg);
    if v.is_none() {
        conn.reply()
            .error("ERR value is not an integer or out of range");
    }
    v
}

/// Parses a SCAN-family cursor as Redis does (`strtoul`: an optional sign,
/// a negative number wraps), or replies `ERR invalid cursor`.
pub(crate) fn scan_cursor(conn: &mut Conn, arg: &[u8]) -> Option<u64> {
    let (neg, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, arg),
    };
    let v = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
        .flatten()
        .map(|v| if neg { v.wrapping_neg() } else { v });
    if v.is_none() {
        conn.reply().error("ERR invalid cursor");
    }
    v
}

/// Redis's reply to SSCAN/ZSCAN of a missing key: cursor 0, no elements.
/// The options of SSCAN, HSCAN and ZSCAN (`COUNT n`, `MATCH pattern`,
/// from `args[3]` on): `None` when an error was replied, in Redis's words.
pub(crate) fn member_scan_options<'a>(
    conn: &mut Conn,
    args: &'a [Bytes],
) -> Option<(usize, Option<&'a [u8]>)> {
    let (mut count, mut pattern) = (10usize, None);
    let mut i = 3;
    while i < args.len() {
        if i + 1 >= args.len() {
            conn.reply().error("ERR syntax error");
            return None;
        }
        if args[i].eq_ignore_ascii_case(b"COUNT") {
            match int_arg(conn, &args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => {
                    conn.reply().error("ERR syntax error");
                    return None;
                }
                None => return None,
            }
        } else if args[i].eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(&args[i + 1][..]);
        } else {
            conn.reply().error("ERR syntax error");
            return None;
        }
        i += 2;
    }
    Some((count, pattern))
}

pub(crate) fn empty_scan(conn: &mut Conn) {
    let mut out = conn.reply();
    out.array(2);
    out.bulk(b"0");
    out.array(0);
}

/// Releases a departing client's WATCHes.
pub fn release_watches(conn: &mut Conn) {
    transactions::unwatch_all(conn);
}
