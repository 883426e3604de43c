//! Differential tests: the same command scripts go to a real `redis-server`
//! and to Herald, and the replies must be identical byte for byte (RESP2 and
//! RESP3), except fields that differ by nature (client ids) which are
//! normalised.

mod common;

use common::diff::{diff, differential, script, Step};

#[test]
fn connection_commands() {
    diff(
        "
        0 1 PING
        0 1 PING hello
        0 1 PING a b
        0 1 ping
        0 1 ECHO hi
        0 1 ECHO
        0 1 ECHO a b
        0 1 SELECT 0
        0 1 SELECT 15
        0 1 SELECT 16
        0 1 SELECT x
        0 1 SELECT -1
        0 1 NOSUCH a b c
        0 1 NOSUCH
        0 1 CLIENT
        0 1 CLIENT FOO bar
        0 1 CLIENT SETNAME herald-test
        0 1 CLIENT GETNAME
        0 1 CLIENT SETNAME
        0 1 CLIENT GETNAME x
        0 1 CLIENT NO-EVICT on
        0 1 PUBSUB
        0 1 PUBSUB NOPE
        0 1 COMMAND NOPE
        0 1 FLUSHALL
        0 1 FLUSHALL ASYNC
        0 1 FLUSHALL x
        0 1 FLUSHDB SYNC
        0 1 FUNCTION FLUSH
        0 1 CONFIG GET nosuchparam
        0 1 CONFIG GET maxclients
        0 1 CONFIG GET
        0 1 DBSIZE
        0 1 AUTH x
        0 1 AUTH default anything
        0 1 AUTH someone x
        0 1 AUTH a b c
        0 1 HELLO 4
        0 1 HELLO x
        0 1 HELLO 2 FOO
        0 1 HELLO 3 SETNAME bad\tname
        0 1 HELLO 3 AUTH default x SETNAME n1
        0 1 PING
        0 1 CLIENT GETNAME
        0 1 HELLO 2
        0 1 QUIT
        0 closed
        ",
    );
}

#[test]
fn inline_and_pipelining() {
    diff(
        "
        0 raw 1 PING\\r\\n
        0 raw 1 ECHO \"a b\\x41\\t\"\\r\\n
        0 raw 1 ECHO 'it\\'s'\\r\\n
        0 raw 3 PING\\r\\nPING x\\r\\nECHO y\\r\\n
        0 raw 2 *1\\r\\n$4\\r\\nPING\\r\\n*0\\r\\n*2\\r\\n$4\\r\\nECHO\\r\\n$3\\r\\nabc\\r\\n
        0 raw 1 \\r\\n\\r\\nPING\\r\\n
        0 raw 1 *2\\r\\n$4\\r\\nECHO\\r\\n$3\\r\\nfooXX*1\\r\\n$4\\r\\nPING\\r\\n
        0 1 PING
        ",
    );
}

#[test]
fn protocol_errors_close_the_connection() {
    for bad in [
        "*x\\r\\n",
        "*1\\r\\n+PING\\r\\n",
        "*1\\r\\n$-5\\r\\n",
        "*1\\r\\n$abc\\r\\n",
        "*2147483648\\r\\n",
        "ECHO \"unbalanced\\r\\n",
        "ECHO \"a\"b\\r\\n",
    ] {
        diff(&format!("0 1 PING\n0 raw 1 {bad}\n0 closed"));
    }
}

#[test]
fn pubsub_resp2() {
    diff(
        "
        0 1 SUBSCRIBE news
        0 1 SUBSCRIBE news
        0 1 PSUBSCRIBE n*
        1 1 PUBLISH news hello
        0 read 2
        1 1 PUBLISH nothing x
        0 read 1
        1 1 PUBLISH zzz x
        0 quiet
        0 1 PING
        0 1 PING hi
        0 1 ECHO x
        0 1 PUBLISH x y
        0 1 CLIENT ID
        0 1 NOSUCH
        0 1 PING a b
        0 1 UNSUBSCRIBE news
        0 1 UNSUBSCRIBE news
        0 1 PUNSUBSCRIBE
        0 1 UNSUBSCRIBE
        0 1 PUNSUBSCRIBE
        0 1 SUNSUBSCRIBE
        0 1 PING
        0 1 SUBSCRIBE a
        0 1 QUIT
        0 closed
        1 1 PUBSUB NUMSUB a news
        ",
    );
}

/// Pipelined PUBLISHes to one channel are delivered as one step; replies,
/// other commands in between, other channels, a pattern subscriber of the
/// same channel (message before pmessage, per publish) and MULTI must look
/// exactly as in Redis.
#[test]
fn pipelined_publishes() {
    diff(
        "
        0 1 SUBSCRIBE news
        2 1 HELLO 3
        2 1 SUBSCRIBE news
        1 raw 9 PUBLISH news a\\r\\nPUBLISH news b\\r\\nPING\\r\\nPUBLISH news c\\r\\nPUBLISH other d\\r\\nPUBLISH news e\\r\\nNOSUCH\\r\\nPUBLISH news f\\r\\nPUBLISH news g\\r\\n
        0 read 6
        2 read 6
        3 1 PSUBSCRIBE n*
        1 raw 3 PUBLISH news h\\r\\nPUBLISH news i\\r\\nPUBLISH news j\\r\\n
        0 read 3
        3 read 3
        0 1 PSUBSCRIBE n*
        1 raw 2 PUBLISH news k\\r\\nPUBLISH news l\\r\\n
        0 read 4
        1 raw 5 MULTI\\r\\nPUBLISH news m\\r\\nPUBLISH news n\\r\\nEXEC\\r\\nPUBLISH news o\\r\\n
        0 read 4
        2 read 6
        3 read 3
        1 raw 3 PUBLISH news p\\r\\nSUBSCRIBE x\\r\\nPUBLISH news q\\r\\n
        0 read 2
        0 quiet
        2 quiet
        # A RESP3 subscriber publishing to itself, pipelined: each reply
        # and push in Redis's order.
        2 raw 8 PING\\r\\nPUBLISH news r\\r\\nPUBLISH news s\\r\\nECHO t\\r\\nPUBLISH news u\\r\\n
        0 read 3
        ",
    );
}

#[test]
fn pubsub_resp3() {
    diff(
        "
        0 1 HELLO 3
        0 1 SUBSCRIBE news
        0 1 PSUBSCRIBE n*
        1 1 PUBLISH news hello
        0 read 2
        0 1 PING
        0 1 ECHO still-works
        0 1 PUBLISH news self
        0 read 2
        0 1 UNSUBSCRIBE news
        0 1 PUNSUBSCRIBE n*
        0 1 UNSUBSCRIBE
        0 1 PUNSUBSCRIBE
        0 1 SSUBSCRIBE s1
        1 1 SPUBLISH s1 shard-msg
        0 read 1
        1 1 PUBLISH s1 not-shard
        0 quiet
        0 1 SUNSUBSCRIBE
        0 1 SUNSUBSCRIBE
        0 1 HELLO 2
        0 1 SUBSCRIBE x
        0 1 RESET
        0 1 PING
        1 1 PUBLISH x after-reset
        0 quiet
        ",
    );
}

#[test]
fn pubsub_introspection() {
    diff(
        "
        0 1 SUBSCRIBE chan:1
        1 1 SUBSCRIBE chan:1
        2 1 PSUBSCRIBE chan:*
        3 1 PSUBSCRIBE chan:*
        4 1 SSUBSCRIBE shard:1
        5 1 PUBSUB CHANNELS
        5 1 PUBSUB CHANNELS chan:*
        5 1 PUBSUB CHANNELS nomatch*
        5 1 PUBSUB CHANNELS a b
        5 1 PUBSUB NUMSUB chan:1 chan:2
        5 1 PUBSUB NUMSUB
        5 1 PUBSUB NUMPAT
        5 1 PUBSUB NUMPAT x
        5 1 PUBSUB SHARDCHANNELS
        5 1 PUBSUB SHARDNUMSUB shard:1 shard:2
        5 1 PUBSUB HELP
        5 1 PUBLISH chan:1 m
        5 1 SPUBLISH shard:1 m
        0 read 1
        2 read 1
        4 read 1
        0 1 UNSUBSCRIBE
        1 1 UNSUBSCRIBE
        2 1 PUNSUBSCRIBE
        5 1 PUBSUB CHANNELS
        5 1 PUBSUB NUMPAT
        ",
    );
}

#[test]
fn pattern_semantics() {
    let patterns = [
        "h?llo",
        "h*llo",
        "h[ae]llo",
        "h[^e]llo",
        "h[a-b]llo",
        "h[b-a]llo",
        "h\\*llo",
        "*",
        "a[",
        "a[^",
        "[]]x",
        "*a*a*b",
        "x\\",
        "[\\]]",
    ];
    let channels = [
        "hello", "hallo", "hillo", "hbllo", "h*llo", "heeeello", "a", "ab", "a[", "]x", "aab",
        "aaab", "x\\", "]", "",
    ];
    let mut text = String::new();
    for (i, p) in patterns.iter().enumerate() {
        text.push_str(&format!("{} 1 PSUBSCRIBE {p}\n", i + 1));
    }
    for c in channels {
        text.push_str(&format!("0 1 PUBLISH {c} m\n"));
    }
    let mut steps = script(&text);
    // Empty channel name: the script splits on spaces, so build it here.
    steps.push(Step::Cmd(
        0,
        vec![b"PUBLISH".to_vec(), vec![], b"m".to_vec()],
        1,
    ));
    differential(&steps, &[], &[]);
}

#[test]
fn binary_safe_names_and_payloads() {
    let bin_chan: Vec<u8> = vec![0, 1, 0xff, b'\r', b'\n', b' ', b'*'];
    let payload: Vec<u8> = (0..=255u8).collect();
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let steps = vec![
        Step::Cmd(0, vec![b"SUBSCRIBE".to_vec(), bin_chan.clone()], 1),
        Step::Cmd(0, vec![b"PSUBSCRIBE".to_vec(), vec![0, b'*']], 1),
        Step::Cmd(
            1,
            vec![b"PUBLISH".to_vec(), bin_chan.clone(), payload.clone()],
            1,
        ),
        Step::Read(0, 2),
        Step::Cmd(
            1,
            vec![b"PUBLISH".to_vec(), bin_chan.clone(), big.clone()],
            1,
        ),
        Step::Read(0, 2),
        Step::Cmd(
            1,
            vec![b"PUBSUB".to_vec(), b"NUMSUB".to_vec(), bin_chan.clone()],
            1,
        ),
        Step::Cmd(1, vec![b"ECHO".to_vec(), big], 1),
        Step::Cmd(1, vec![b"NOSUCH\r\n".to_vec(), vec![0xff, 0, b'a']], 1),
    ];
    differential(&steps, &[], &[]);
}

#[test]
fn requirepass() {
    let steps = script(
        "
        0 1 PING
        0 1 SUBSCRIBE x
        0 1 NOSUCH
        0 1 ECHO
        0 1 HELLO 3
        0 1 AUTH wrong
        0 1 AUTH default wrong
        0 1 AUTH secret
        0 1 PING
        1 1 HELLO 3 AUTH default wrong
        1 1 HELLO 3 AUTH default secret
        1 1 PING
        2 1 AUTH other secret
        2 1 AUTH default secret
        2 1 RESET
        2 1 PING
        3 raw 1 *11\\r\\n
        3 closed
        ",
    );
    differential(
        &steps,
        &["--requirepass", "secret"],
        &["--requirepass", "secret"],
    );
}
