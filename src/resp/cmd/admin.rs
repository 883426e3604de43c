//! Administrative commands that clients and tools send on connect or between
//! runs: FLUSHALL, FLUSHDB, DBSIZE, FUNCTION FLUSH, CONFIG, TIME. Herald has
//! one keyspace: FLUSHDB and FLUSHALL both empty it.

use bytes::Bytes;

use super::{help_reply, Command};
use crate::resp::connection::Conn;

pub const FLUSHALL: Command = Command::new(
    "flushall",
    -1,
    "server",
    "Removes all keys from all databases.",
    flush,
)
.flags(&["write"])
.acl(&["@keyspace", "@write", "@slow", "@dangerous"]);
pub const FLUSHDB: Command = Command::new(
    "flushdb",
    -1,
    "server",
    "Remove all keys from the current database.",
    flush,
)
.flags(&["write"])
.acl(&["@keyspace", "@write", "@slow", "@dangerous"]);
pub const DBSIZE: Command = Command::new(
    "dbsize",
    1,
    "server",
    "Returns the number of keys in the database.",
    dbsize,
)
.flags(&["readonly", "fast"])
.acl(&["@keyspace", "@read", "@fast"]);
pub const TIME: Command = Command::new("time", 1, "server", "Returns the server time.", time)
    .flags(&["loading", "stale", "fast"])
    .acl(&["@fast"]);

const FUNCTION_SUBS: &[Command] = &[
    Command::new(
        "flush",
        -2,
        "scripting",
        "Deletes all libraries and functions.",
        function_flush,
    )
    .flags(&["noscript", "write"])
    .acl(&["@write", "@slow", "@scripting"]),
    Command::new(
        "list",
        -2,
        "scripting",
        "Returns information about all libraries.",
        function_list,
    )
    .flags(&["noscript"])
    .acl(&["@slow", "@scripting"]),
];
pub const FUNCTION: Command = Command::new(
    "function",
    -2,
    "scripting",
    "A container for function commands.",
    ok,
)
.subs(FUNCTION_SUBS);

const CONFIG_SUBS: &[Command] = &[
    Command::new(
        "get",
        -3,
        "server",
        "Returns the effective values of configuration parameters.",
        config_get,
    )
    .flags(&["admin", "noscript", "loading", "stale"])
    .acl(&["@admin", "@slow", "@dangerous"]),
    Command::new(
        "set",
        -4,
        "server",
        "Sets configuration parameters in-flight.",
        config_set,
    )
    .flags(&["admin", "noscript", "loading", "stale"])
    .acl(&["@admin", "@slow", "@dangerous"]),
    Command::new(
        "resetstat",
        2,
        "server",
        "Resets the server's statistics.",
        ok,
    )
    .flags(&["admin", "noscript", "loading", "stale"])
    .acl(&["@admin", "@slow", "@dangerous"]),
    Command::new(
        "help",
        2,
        "server",
        "Returns helpful text about the different subcommands.",
        config_help,
    )
    .flags(&["loading", "stale"])
    .acl(&["@slow"]),
];
pub const CONFIG: Command = Command::new(
    "config",
    -2,
    "server",
    "A container for server configuration commands.",
    ok,
)
.subs(CONFIG_SUBS);

fn ok(conn: &mut Conn, _args: &[Bytes]) {
    conn.reply().simple("OK");
}

/// `[ASYNC|SYNC]` or a syntax error, as Redis's flush commands take.
fn flush_mode_ok(conn: &mut Conn, args: &[Bytes]) -> bool {
    let ok = match args {
        [] => true,
        [m] => m.eq_ignore_ascii_case(b"ASYNC") || m.eq_ignore_ascii_case(b"SYNC"),
        _ => false,
    };
    if !ok {
        conn.reply().error("ERR syntax error");
    }
    ok
}

fn flush(conn: &mut Conn, args: &[Bytes]) {
    if flush_mode_ok(conn, &args[1..]) {
        conn.server.hub.flush_keys();
        conn.reply().simple("OK");
    }
}

fn function_flush(conn: &mut Conn, args: &[Bytes]) {
    if flush_mode_ok(conn, &args[2..]) {
        conn.reply().simple("OK");
    }
}

fn function_list(conn: &mut Conn, _args: &[Bytes]) {
    conn.reply().array(0);
}

/// DBSIZE counts every key for password clients; other clients count only
/// the keys they may read, so a narrow token learns nothing of other
/// namespaces. Their count is taken from a snapshot of the key names, so
/// permission checks run after the hub has unlocked the keyspace.
fn dbsize(conn: &mut Conn, _args: &[Bytes]) {
    let n = match &conn.identity {
        Some(crate::auth::Identity::Password) | None => conn.server.hub.dbsize(),
        Some(id) => {
            // O(keys) for a token: off this runtime worker, so the other
            // connections it serves keep going.
            crate::hub::blocking(|| {
                let keys = conn.server.hub.keys_matching(None);
                let cfg = &conn.server.cfg;
                keys.iter()
                    .filter(|k| {
                        let target = crate::hub::presence::presence_channel(k).unwrap_or(k);
                        id.can_subscribe(target, cfg.namespace(target))
                    })
                    .count()
            })
        }
    };
    conn.reply().int(n as i64);
}

fn time(conn: &mut Conn, _args: &[Bytes]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = conn.reply();
    out.array(2);
    out.bulk(now.as_secs().to_string().as_bytes());
    out.bulk(now.subsec_micros().to_string().as_bytes());
}

/// The parameters CONFIG GET knows, with Herald's effective values.
fn parameters(conn: &Conn) -> Vec<(&'static str, String)> {
    let cfg = &conn.server.cfg;
    vec![
        ("maxclients", cfg.max_connections.to_string()),
        ("proto-max-bulk-len", cfg.max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            cfg.max_query_buffer.to_string(),
        ),
        (
            "client-output-buffer-limit",
            format!(
                "normal 0 0 0 slave 0 0 0 pubsub {} {} {}",
                cfg.output_limits.hard_bytes,
                cfg.output_limits.soft_bytes,
                cfg.output_limits.soft_duration.as_secs()
            ),
        ),
        ("databases", "16".into()),
        ("port", conn.server.local_addr.port().to_string()),
        ("bind", conn.server.local_addr.ip().to_string()),
        ("timeout", "0".into()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("maxmemory", "0".into()),
        ("notify-keyspace-events", String::new()),
    ]
}

fn config_get(conn: &mut Conn, args: &[Bytes]) {
    let params = parameters(conn);
    let mut found: Vec<(&str, String)> = Vec::new();
    for pat in &args[2..] {
        let glob = crate::hub::glob::Glob::new(&pat.to_ascii_lowercase());
        for (k, v) in &params {
            if glob.matches(k.as_bytes()) && !found.iter().any(|(f, _)| f == k) {
                found.push((k, v.clone()));
            }
        }
    }
    let mut out = conn.reply();
    out.map(found.len());
    for (k, v) in found {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
}

fn config_set(conn: &mut Conn, args: &[Bytes]) {
    // Herald's limits are set at start-up; accept harmless settings tools
    // send, refuse the rest plainly.
    let name = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
    if !args.len().is_multiple_of(2) {
        conn.reply().error(&format!(
            "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
        ));
        return;
    }
    match name.as_str() {
        "save" | "appendonly" | "notify-keyspace-events" | "timeout" => conn.reply().simple("OK"),
        _ => conn.reply().error(&format!(
            "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
        )),
    }
}

fn config_help(conn: &mut Conn, _args: &[Bytes]) {
    help_reply(
        conn,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
        ],
    );
}
