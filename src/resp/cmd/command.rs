//! COMMAND: the table clients ask for on connect (COUNT, INFO, DOCS, LIST).

use bytes::Bytes;

use super::{help_reply, lookup, Command, COMMANDS};
use crate::resp::connection::Conn;
use crate::resp::encode::Out;

const SUBS: &[Command] = &[
    Command::new("count", 2, "server", "Returns a count of commands.", count)
        .flags(&["loading", "stale"])
        .acl(&["@slow", "@connection"]),
    Command::new(
        "docs",
        -2,
        "server",
        "Returns documentary information about one, multiple or all commands.",
        docs,
    )
    .flags(&["loading", "stale"])
    .acl(&["@slow", "@connection"]),
    Command::new(
        "info",
        -2,
        "server",
        "Returns information about one, multiple or all commands.",
        info,
    )
    .flags(&["loading", "stale"])
    .acl(&["@slow", "@connection"]),
    Command::new(
        "list",
        -2,
        "server",
        "Returns a list of command names.",
        list,
    )
    .flags(&["loading", "stale"])
    .acl(&["@slow", "@connection"]),
    Command::new(
        "help",
        2,
        "server",
        "Returns helpful text about the different subcommands.",
        help,
    )
    .flags(&["loading", "stale"])
    .acl(&["@slow", "@connection"]),
];

pub const COMMAND: Command = Command::new(
    "command",
    -1,
    "server",
    "Returns detailed information about all commands.",
    all,
)
.flags(&["loading", "stale"])
.acl(&["@slow", "@connection"])
.subs(SUBS);

fn write_info(out: &mut Out<'_>, c: &Command, prefix: Option<&str>) {
    out.array(10);
    match prefix {
        Some(p) => out.bulk(format!("{p}|{}", c.name).as_bytes()),
        None => out.bulk(c.name.as_bytes()),
    }
    out.int(c.arity as i64);
    out.set(c.flags.len());
    for f in c.flags {
        out.simple(f);
    }
    out.int(0);
    out.int(0);
    out.int(0);
    out.set(c.acl.len());
    for a in c.acl {
        out.simple(a);
    }
    out.set(0);
    out.array(0);
    out.array(c.subcommands.len());
    for s in c.subcommands {
        write_info(out, s, Some(c.name));
    }
}

fn write_docs(out: &mut Out<'_>, c: &Command, prefix: Option<&str>) {
    match prefix {
        Some(p) => out.bulk(format!("{p}|{}", c.name).as_bytes()),
        None => out.bulk(c.name.as_bytes()),
    }
    let has_subs = !c.subcommands.is_empty();
    out.map(3 + has_subs as usize);
    out.bulk(b"summary");
    out.bulk(c.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(b"1.0.0");
    out.bulk(b"group");
    out.bulk(c.group.as_bytes());
    if has_subs {
        out.bulk(b"subcommands");
        out.map(c.subcommands.len());
        for s in c.subcommands {
            write_docs(out, s, Some(c.name));
        }
    }
}

fn all(conn: &mut Conn, _args: &[Bytes]) {
    let mut out = conn.reply();
    out.array(COMMANDS.len());
    for c in COMMANDS {
        write_info(&mut out, c, None);
    }
}

fn count(conn: &mut Conn, _args: &[Bytes]) {
    conn.reply().int(COMMANDS.len() as i64);
}

fn info(conn: &mut Conn, args: &[Bytes]) {
    let mut out = conn.reply();
    if args.len() == 2 {
        out.array(COMMANDS.len());
        for c in COMMANDS {
            write_info(&mut out, c, None);
        }
        return;
    }
    out.array(args.len() - 2);
    for name in &args[2..] {
        match lookup(name) {
            Some(c) => write_info(&mut out, c, None),
            None => out.null_array(),
        }
    }
}

fn docs(conn: &mut Conn, args: &[Bytes]) {
    let found: Vec<&Command> = if args.len() == 2 {
        COMMANDS.iter().collect()
    } else {
        args[2..].iter().filter_map(|n| lookup(n)).collect()
    };
    let mut out = conn.reply();
    out.map(found.len());
    for c in found {
        write_docs(&mut out, c, None);
    }
}

fn list(conn: &mut Conn, _args: &[Bytes]) {
    conn.reply().bulks(COMMANDS.iter().map(|c| c.name));
}

fn help(conn: &mut Conn, _args: &[Bytes]) {
    help_reply(
        conn,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
        ],
    );
}
