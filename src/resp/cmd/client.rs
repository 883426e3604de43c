//! CLIENT: ID, SETNAME, GETNAME, SETINFO, INFO, LIST, KILL, NO-EVICT,
//! NO-TOUCH, HELP.

use bytes::Bytes;

use super::{help_reply, int_arg, Command};
use crate::resp::connection::Conn;

const C: &[&str] = &["@slow", "@connection"];

const SUBS: &[Command] = &[
    Command::new(
        "id",
        2,
        "connection",
        "Returns the unique client ID of the connection.",
        id,
    )
    .flags(&["noscript", "loading", "stale"])
    .acl(C),
    Command::new(
        "setname",
        3,
        "connection",
        "Sets the connection name.",
        setname,
    )
    .flags(&["noscript", "loading", "stale"])
    .acl(C),
    Command::new(
        "getname",
        2,
        "connection",
        "Returns the name of the connection.",
        getname,
    )
    .flags(&["noscript", "loading", "stale"])
    .acl(C),
    Command::new(
        "setinfo",
        4,
        "connection",
        "Sets information specific to the client or connection.",
        setinfo,
    )
    .flags(&["noscript", "loading", "stale"])
    .acl(C),
    Command::new(
        "info",
        2,
        "connection",
        "Returns information about the connection.",
        info,
    )
    .flags(&["noscript", "loading", "stale"])
    .acl(C),
    Command::new("list", -2, "connection", "Lists open connections.", list)
        .flags(&["admin", "noscript", "loading", "stale"])
        .acl(&["@admin", "@slow", "@dangerous", "@connection"]),
    Command::new(
        "kill",
        -3,
        "connection",
        "Terminates open connections.",
        kill,
    )
    .flags(&["admin", "noscript", "loading", "stale"])
    .acl(&["@admin", "@slow", "@dangerous", "@connection"]),
    Command::new(
        "no-evict",
        3,
        "connection",
        "Sets the client eviction mode of the connection.",
        ok,
    )
    .flags(&["admin", "noscript", "loading", "stale"])
    .acl(&["@admin", "@slow", "@dangerous", "@connection"]),
    Command::new(
        "no-touch",
        3,
        "connection",
        "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        ok,
    )
    .flags(&["noscript", "loading", "stale"])
    .acl(C),
    Command::new(
        "help",
        2,
        "connection",
        "Returns helpful text about the different subcommands.",
        help,
    )
    .flags(&["loading", "stale"])
    .acl(C),
];

pub const CLIENT: Command = Command::new(
    "client",
    -2,
    "connection",
    "A container for client connection commands.",
    help,
)
.subs(SUBS);

fn id(conn: &mut Conn, _args: &[Bytes]) {
    let id = conn.handle.id as i64;
    conn.reply().int(id);
}

/// Sets the client name (empty clears it). Replies with Redis's error and
/// returns false for names with spaces or control characters.
pub(super) fn set_name(conn: &mut Conn, name: Bytes) -> bool {
    if name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
        conn.reply()
            .error("ERR Client names cannot contain spaces, newlines or special characters.");
        return false;
    }
    let name = if name.is_empty() { None } else { Some(name) };
    let mut m = conn.handle.meta();
    if name.is_some() || m.labels.is_some() {
        m.labels_mut().name = name;
    }
    true
}

fn setname(conn: &mut Conn, args: &[Bytes]) {
    if set_name(conn, args[2].clone()) {
        conn.reply().simple("OK");
    }
}

fn getname(conn: &mut Conn, _args: &[Bytes]) {
    let name = conn.handle.meta().name().cloned();
    match name {
        Some(n) => conn.reply().bulk(&n),
        None => conn.reply().null(),
    }
}

fn setinfo(conn: &mut Conn, args: &[Bytes]) {
    let value = args[3].clone();
    if value.iter().any(|b| !(b'!'..=b'~').contains(b)) {
        conn.reply().error(&format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(&args[2])
        ));
        return;
    }
    let attr = &args[2];
    if attr.eq_ignore_ascii_case(b"lib-name") {
        conn.handle.meta().labels_mut().lib_name = Some(value);
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        conn.handle.meta().labels_mut().lib_ver = Some(value);
    } else {
        let mut msg = b"ERR Unrecognized option '".to_vec();
        msg.extend_from_slice(attr);
        msg.push(b'\'');
        conn.reply().error_bytes(&msg);
        return;
    }
    conn.reply().simple("OK");
}

fn info(conn: &mut Conn, _args: &[Bytes]) {
    let mut line = conn.handle.info_line();
    line.push('\n');
    conn.reply().verbatim(line.as_bytes());
}

fn list(conn: &mut Conn, args: &[Bytes]) {
    let mut only_pubsub = None;
    let mut ids: Option<Vec<u64>> = None;
    if args.len() > 2 {
        if args[2].eq_ignore_ascii_case(b"TYPE") && args.len() == 4 {
            let t = args[3].to_ascii_lowercase();
            only_pubsub = match &t[..] {
                b"normal" => Some(false),
                b"pubsub" => Some(true),
                b"master" | b"replica" | b"slave" => {
                    conn.reply().verbatim(b"");
                    return;
                }
                _ => {
                    let mut msg = b"ERR Unknown client type '".to_vec();
                    msg.extend_from_slice(&args[3]);
                    msg.push(b'\'');
                    conn.reply().error_bytes(&msg);
                    return;
                }
            };
        } else if args[2].eq_ignore_ascii_case(b"ID") && args.len() >= 4 {
            let mut v = Vec::new();
            for a in &args[3..] {
                match crate::resp::parse::parse_i64(a) {
                    Some(n) if n > 0 => v.push(n as u64),
                    _ => {
                        conn.reply().error("ERR Invalid client ID");
                        return;
                    }
                }
            }
            ids = Some(v);
        } else {
            conn.reply().error("ERR syntax error");
            return;
        }
    }
    let mut handles: Vec<_> = conn
        .server
        .clients
        .iter()
        .map(|e| e.value().clone())
        .collect();
    handles.sort_by_key(|h| h.id);
    let mut text = String::new();
    for h in handles {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&h.id)) {
            continue;
        }
        if let Some(p) = only_pubsub {
            let m = h.meta();
            if (m.sub + m.psub + m.ssub > 0) != p {
                continue;
            }
        }
        text.push_str(&h.info_line());
        text.push('\n');
    }
    conn.reply().verbatim(text.as_bytes());
}

fn kill(conn: &mut Conn, args: &[Bytes]) {
    let me = conn.handle.id;
    if args.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let target = String::from_utf8_lossy(&args[2]).into_owned();
        let found = conn
            .server
            .clients
            .iter()
            .find(|h| h.addr.to_string() == target)
            .map(|h| h.value().clone());
        match found {
            Some(h) => {
                if h.id == me {
                    conn.close_after_reply();
                } else {
                    h.kill();
                }
                conn.reply().simple("OK");
            }
            None => conn.reply().error("ERR No such client"),
        }
        return;
    }
    let (mut id, mut addr, mut laddr, mut typ, mut user) = (None, None, None, None, None);
    let mut skipme = true;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            conn.reply().error("ERR syntax error");
            return;
        }
        let (opt, val) = (&args[i], &args[i + 1]);
        if opt.eq_ignore_ascii_case(b"ID") {
            match int_arg(conn, val) {
                Some(n) if n > 0 => id = Some(n as u64),
                Some(_) => {
                    conn.reply().error("ERR client-id should be greater than 0");
                    return;
                }
                None => return,
            }
        } else if opt.eq_ignore_ascii_case(b"ADDR") {
            addr = Some(String::from_utf8_lossy(val).into_owned());
        } else if opt.eq_ignore_ascii_case(b"LADDR") {
            laddr = Some(String::from_utf8_lossy(val).into_owned());
        } else if opt.eq_ignore_ascii_case(b"USER") {
            user = Some(String::from_utf8_lossy(val).into_owned());
        } else if opt.eq_ignore_ascii_case(b"TYPE") {
            let t = val.to_ascii_lowercase();
            typ = match &t[..] {
                b"normal" => Some(false),
                b"pubsub" => Some(true),
                b"master" | b"replica" | b"slave" => Some(false),
                _ => {
                    let mut msg = b"ERR Unknown client type '".to_vec();
                    msg.extend_from_slice(val);
                    msg.push(b'\'');
                    conn.reply().error_bytes(&msg);
                    return;
                }
            };
        } else if opt.eq_ignore_ascii_case(b"SKIPME") {
            if val.eq_ignore_ascii_case(b"yes") {
                skipme = true;
            } else if val.eq_ignore_ascii_case(b"no") {
                skipme = false;
            } else {
                conn.reply().error("ERR syntax error");
                return;
            }
        } else {
            conn.reply().error("ERR syntax error");
            return;
        }
        i += 2;
    }
    let mut killed = 0;
    let handles: Vec<_> = conn
        .server
        .clients
        .iter()
        .map(|e| e.value().clone())
        .collect();
    for h in handles {
        if id.is_some_and(|id| id != h.id)
            || addr.as_ref().is_some_and(|a| *a != h.addr.to_string())
            || laddr.as_ref().is_some_and(|a| *a != h.laddr.to_string())
            || (skipme && h.id == me)
        {
            continue;
        }
        {
            let m = h.meta();
            let u = if m.user.is_empty() {
                "default"
            } else {
                &m.user
            };
            if user.as_ref().is_some_and(|want| want != u) {
                continue;
            }
            if typ.is_some_and(|p| (m.sub + m.psub + m.ssub > 0) != p) {
                continue;
            }
        }
        if h.id == me {
            conn.close_after_reply();
        } else {
            h.kill();
        }
        killed += 1;
    }
    conn.reply().int(killed);
}

fn ok(conn: &mut Conn, _args: &[Bytes]) {
    conn.reply().simple("OK");
}

fn help(conn: &mut Conn, _args: &[Bytes]) {
    help_reply(
        conn,
        "CLIENT",
        &[
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are:",
            "    * LIB-NAME: the client lib name.",
            "    * LIB-VER: the client lib version.",
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
        ],
    );
}
