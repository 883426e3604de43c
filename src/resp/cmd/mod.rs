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
mod info;
mod keys;
mod pubsub;
mod sets;
mod streams;
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
        }
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
];

/// Finds a top-level command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
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
    Stats::add(&conn.server.hub.stats.commands, 1);
    let Some(top) = lookup(&args[0]) else {
        let msg = unknown_command(args);
        conn.reply().error_bytes(&msg);
        return;
    };
    let (cmd, fullname) = if top.subcommands.is_empty() || (args.len() == 1 && top.arity == -1) {
        (top, top.name.to_string())
    } else if args.len() < 2 {
        conn.reply().error(&format!(
            "ERR wrong number of arguments for '{}' command",
            top.name
        ));
        return;
    } else {
        match find_sub(top, &args[1]) {
            Some(sub) => (sub, format!("{}|{}", top.name, sub.name)),
            None => {
                let mut msg = b"ERR unknown subcommand '".to_vec();
                msg.extend_from_slice(&args[1][..args[1].len().min(128)]);
                msg.extend_from_slice(
                    format!("'. Try {} HELP.", top.name.to_ascii_uppercase()).as_bytes(),
                );
                conn.reply().error_bytes(&msg);
                return;
            }
        }
    };
    if !cmd.arity_ok(args.len()) {
        conn.reply().error(&format!(
            "ERR wrong number of arguments for '{fullname}' command"
        ));
        return;
    }
    if conn.identity.is_none() && !top.no_auth {
        conn.reply().error("NOAUTH Authentication required.");
        return;
    }
    if !conn.resp3 && conn.total_subscriptions() > 0 && !top.pubsub_ok {
        conn.reply().error(&format!(
            "ERR Can't execute '{fullname}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ));
        return;
    }
    let started = std::time::Instant::now();
    {
        let mut m = conn.handle.meta();
        m.last_cmd = fullname;
        m.last_active = Some(started);
    }
    (cmd.run)(conn, args);
    conn.server
        .metrics
        .observe_command("resp", top.name, started.elapsed());
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
