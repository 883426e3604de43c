//! Connection commands: PING, ECHO, QUIT, RESET, HELLO, AUTH, SELECT.

use bytes::Bytes;

use super::{int_arg, Command};
use crate::auth::Identity;
use crate::resp::connection::Conn;

pub const PING: Command = Command::new(
    "ping",
    -1,
    "connection",
    "Returns the server's liveliness response.",
    ping,
)
.pubsub_ok()
.flags(&["fast", "sentinel"])
.acl(&["@fast", "@connection"]);
pub const ECHO: Command = Command::new("echo", 2, "connection", "Returns the given string.", echo)
    .flags(&["fast"])
    .acl(&["@fast", "@connection"]);
pub const QUIT: Command = Command::new("quit", -1, "connection", "Closes the connection.", quit)
    .no_auth()
    .pubsub_ok()
    .flags(&[
        "allow_busy",
        "noscript",
        "loading",
        "stale",
        "fast",
        "no_auth",
    ])
    .acl(&["@fast", "@connection"]);
pub const RESET: Command = Command::new("reset", 1, "connection", "Resets the connection.", reset)
    .no_auth()
    .pubsub_ok()
    .flags(&[
        "noscript",
        "loading",
        "stale",
        "fast",
        "no_auth",
        "allow_busy",
    ])
    .acl(&["@fast", "@connection"]);
pub const HELLO: Command = Command::new(
    "hello",
    -1,
    "connection",
    "Handshakes with the Redis server.",
    hello,
)
.no_auth()
.flags(&[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "sentinel",
    "allow_busy",
])
.acl(&["@fast", "@connection"]);
pub const AUTH: Command = Command::new(
    "auth",
    -2,
    "connection",
    "Authenticates the connection.",
    auth,
)
.no_auth()
.flags(&[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "sentinel",
    "allow_busy",
])
.acl(&["@fast", "@connection"]);
pub const SELECT: Command = Command::new(
    "select",
    2,
    "connection",
    "Changes the selected database.",
    select,
)
.flags(&["loading", "stale", "fast"])
.acl(&["@fast", "@connection"]);

fn ping(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 2 {
        conn.reply()
            .error("ERR wrong number of arguments for 'ping' command");
        return;
    }
    if !conn.resp3 && conn.total_subscriptions() > 0 {
        let mut out = conn.reply();
        out.array(2);
        out.bulk(b"pong");
        out.bulk(args.get(1).map_or(&b""[..], |a| &a[..]));
        return;
    }
    match args.get(1) {
        Some(msg) => {
            let msg = msg.clone();
            conn.reply().bulk(&msg)
        }
        None => conn.reply().simple("PONG"),
    }
}

fn echo(conn: &mut Conn, args: &[Bytes]) {
    conn.reply().bulk(&args[1]);
}

fn quit(conn: &mut Conn, _args: &[Bytes]) {
    conn.reply().simple("OK");
    conn.close_after_reply();
}

fn reset(conn: &mut Conn, _args: &[Bytes]) {
    conn.drop_subscriptions();
    conn.end_multi();
    super::transactions::unwatch_all(conn);
    conn.set_resp3(false);
    {
        let mut m = conn.handle.meta();
        if let Some(l) = m.labels.as_mut() {
            l.name = None;
        }
        m.db = 0;
        m.user.clear();
    }
    if conn.server.auth.required() {
        // Unauthenticated again: the pre-AUTH limits and the time allowed
        // to authenticate apply from now.
        conn.set_identity(None);
    }
    conn.reply().simple("RESET");
}

fn auth_reply_err(conn: &mut Conn, e: crate::auth::AuthError) {
    crate::hub::Stats::add(&conn.server.hub.stats().auth_failures, 1);
    conn.reply().error(&e.to_string());
}

fn auth(conn: &mut Conn, args: &[Bytes]) {
    if args.len() > 3 {
        conn.reply().error("ERR syntax error");
        return;
    }
    let (user, secret) = if args.len() == 2 {
        (None, &args[1])
    } else {
        (Some(&args[1][..]), &args[2])
    };
    match limited_authenticate(conn, user, secret) {
        Some(Ok(id)) => {
            set_identity(conn, id, user);
            conn.reply().simple("OK");
        }
        Some(Err(e)) => auth_reply_err(conn, e),
        None => {}
    }
}

/// [`authenticate`] within the address's budget of failures
/// (`--auth-failure-rate`): past it the attempt is refused unchecked, with
/// its own error (answered here; `None`). Redis checks every AUTH at full
/// speed, which suits a port only backends reach; Herald's RESP port also
/// takes JWT clients, so a password or key guessed over it must cost time.
fn limited_authenticate(
    conn: &mut Conn,
    user: Option<&[u8]>,
    secret: &[u8],
) -> Option<Result<Identity, crate::auth::AuthError>> {
    // An open server has no secret to guess: a client that sends AUTH to
    // it anyway gets Redis's answer every time.
    let limit = conn.server.cfg.auth_budget();
    let client = conn.client.clone();
    match client.authenticate(limit, || authenticate(conn, user, secret)) {
        Ok(r) => Some(r),
        Err(wait) => {
            crate::hub::Stats::add(&conn.server.hub.stats().auth_failures, 1);
            conn.reply().error(&format!(
                "ERR too many failed authentications from this address; retry in {} s",
                crate::rate::retry_secs(wait)
            ));
            None
        }
    }
}

/// Checks credentials. A token in its last second (`exp` is whole seconds,
/// and the JWT check passes while `exp` equals the current second) is
/// refused like an expired one: the connection would end at once.
fn authenticate(
    conn: &Conn,
    user: Option<&[u8]>,
    secret: &[u8],
) -> Result<Identity, crate::auth::AuthError> {
    let id = conn.server.auth.authenticate(user, secret)?;
    if let Identity::User(c) = &id {
        let left = crate::resp::connection::token_left(
            c.exp,
            conn.server.cfg.jwt_leeway,
            std::time::SystemTime::now(),
        );
        if left.is_zero() {
            return Err(crate::auth::AuthError::WrongPass);
        }
    }
    Ok(id)
}

fn set_identity(conn: &mut Conn, id: Identity, user: Option<&[u8]>) {
    let name = match id.user() {
        Some(sub) => sub.to_string(),
        None => user
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default(),
    };
    conn.set_identity(Some(id));
    conn.handle.meta().user = name;
}

fn hello(conn: &mut Conn, args: &[Bytes]) {
    let mut ver = None;
    if args.len() >= 2 {
        match crate::resp::parse::parse_i64(&args[1]) {
            None => {
                conn.reply()
                    .error("ERR Protocol version is not an integer or out of range");
                return;
            }
            Some(v) if !(2..=3).contains(&v) => {
                conn.reply().error("NOPROTO unsupported protocol version");
                return;
            }
            Some(v) => ver = Some(v),
        }
    }
    let mut creds = None;
    let mut name = None;
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let opt = &args[j];
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            creds = Some((args[j + 1].clone(), args[j + 2].clone()));
            j += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            name = Some(args[j + 1].clone());
            j += 2;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(opt);
            msg.push(b'\'');
            conn.reply().error_bytes(&msg);
            return;
        }
    }
    if let Some((user, pass)) = creds {
        match limited_authenticate(conn, Some(&user), &pass) {
            Some(Ok(id)) => set_identity(conn, id, Some(&user)),
            Some(Err(e)) => return auth_reply_err(conn, e),
            None => return,
        }
    }
    if conn.identity.is_none() {
        conn.reply().error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return;
    }
    if let Some(name) = name {
        if !super::client::set_name(conn, name) {
            return;
        }
    }
    if let Some(v) = ver {
        conn.set_resp3(v == 3);
    }
    let id = conn.handle.id as i64;
    let proto = if conn.resp3 { 3 } else { 2 };
    let mut out = conn.reply();
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(crate::REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(proto);
    out.bulk(b"id");
    out.int(id);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

fn select(conn: &mut Conn, args: &[Bytes]) {
    let Some(db) = int_arg(conn, &args[1]) else {
        return;
    };
    if !(0..16).contains(&db) {
        conn.reply().error("ERR DB index is out of range");
        return;
    }
    conn.handle.meta().db = db;
    conn.reply().simple("OK");
}
