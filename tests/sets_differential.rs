//! Set commands against a real `redis-server`: scripted edge cases and
//! random operation sequences, replies compared byte for byte (hash-ordered
//! replies sorted, random ones by shape).

mod common;

use common::diff::{diff, differential, Step};
use common::{words, Herald, Raw};

fn cmd(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn scripted_set_commands() {
    diff(
        "
        0 1 SADD ints 3 1 2 10 -5
        0 1 SMEMBERS ints
        0 1 SADD ints 2
        0 1 SCARD ints
        0 1 SISMEMBER ints 10
        0 1 SISMEMBER ints 11
        0 1 SMISMEMBER ints 1 7 3
        0 1 SREM ints 1 99
        0 1 SMEMBERS ints
        0 1 SRANDMEMBER ints 100
        0 1 SRANDMEMBER nokey
        0 1 SRANDMEMBER nokey 3
        0 1 SRANDMEMBER nokey -3
        0 1 SRANDMEMBER ints 0
        0 1 SRANDMEMBER ints x
        0 1 SRANDMEMBER ints 1 2
        0 1 SPOP nokey
        0 1 SPOP nokey 2
        0 1 SPOP ints -1
        0 1 SPOP ints 0
        0 1 SPOP ints 100
        0 1 EXISTS ints
        0 1 SADD a 1 2 3 4
        0 1 SADD b 3 4 5
        0 1 SADD c 4 5 6
        0 1 SINTER a b c
        0 1 SUNION a b c
        0 1 SDIFF a b c
        0 1 SDIFF a nokey
        0 1 SINTER a nokey
        0 1 SUNIONSTORE u a b c
        0 1 SMEMBERS u
        0 1 SINTERSTORE i a b
        0 1 SMEMBERS i
        0 1 SDIFFSTORE d a b
        0 1 SMEMBERS d
        0 1 SINTERSTORE i a nokey
        0 1 EXISTS i
        0 1 SINTERCARD 2 a b
        0 1 SINTERCARD 3 a b c LIMIT 1
        0 1 SINTERCARD 0 a
        0 1 SINTERCARD 3 a b
        0 1 SINTERCARD 2 a b LIMIT -1
        0 1 SINTERCARD 2 a b FOO
        0 1 SINTERCARD x a
        0 1 SMOVE a b 1
        0 1 SMOVE a b 1
        0 1 SMOVE a newset 2
        0 1 SMEMBERS newset
        0 1 SMOVE nokey a 1
        0 1 SSCAN a 0
        0 1 SSCAN a 0 MATCH 3
        0 1 SSCAN a x
        0 1 SSCAN a 0 COUNT 0
        0 1 SSCAN nokey 0
        0 1 SSCAN nokey 0 COUNT 0
        0 1 SSCAN nokey x
        0 1 SSCAN a -1
        0 1 SSCAN a -1 COUNT 0
        0 1 SSCAN a 18446744073709551616
        0 1 SRANDMEMBER a -9223372036854775808
        0 1 SPOP a -9223372036854775808
        0 1 XADD st 1-1 f v
        0 1 SADD st x
        0 1 SMEMBERS st
        0 1 SCARD st
        0 1 SUNION a st
        0 1 SMOVE a st 3
        0 1 SINTERCARD 1 st
        0 1 SADD
        0 1 SREM a
        0 1 HELLO 3
        0 1 SMEMBERS a
        0 1 SUNION a b
        0 1 SPOP b 10
        0 1 SMISMEMBER a 3 4
        0 1 SRANDMEMBER a 10
        0 1 SRANDMEMBER nokey 2
        0 1 SPOP nokey 2
        ",
    );
}

/// Random operation sequences over a few keys; members mix integers and
/// strings so sets move between Redis's encodings.
#[test]
fn random_set_operations() {
    let mut seed: u64 = 0xDEADBEEFCAFEF00D;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let keys = ["k1", "k2", "k3", "k4"];
    let members = ["1", "2", "3", "42", "-7", "a", "b", "zz", "100", "x:y"];
    for round in 0..4 {
        let mut steps = vec![Step::Cmd(0, cmd(&["FLUSHALL"]), 1)];
        for _ in 0..400 {
            let k = keys[next(4) as usize];
            let k2 = keys[next(4) as usize];
            let m = members[next(members.len() as u64) as usize];
            let m2 = members[next(members.len() as u64) as usize];
            // Keep some keys integer-only so intset order is exercised.
            let m = if k == "k1" {
                ["1", "2", "3", "42", "-7", "100"][next(6) as usize]
            } else {
                m
            };
            let step = match next(16) {
                0..=3 => Step::Cmd(0, cmd(&["SADD", k, m, m2]), 1),
                4 => Step::Cmd(0, cmd(&["SREM", k, m, m2]), 1),
                5 => Step::Cmd(0, cmd(&["SCARD", k]), 1),
                6 => Step::Cmd(0, cmd(&["SISMEMBER", k, m]), 1),
                7 => Step::Cmd(0, cmd(&["SMISMEMBER", k, m, m2]), 1),
                8 => Step::Sorted(0, cmd(&["SMEMBERS", k])),
                9 => Step::Sorted(0, cmd(&["SUNION", k, k2])),
                10 => Step::Sorted(0, cmd(&["SINTER", k, k2])),
                11 => Step::Sorted(0, cmd(&["SDIFF", k, k2])),
                12 => Step::Cmd(0, cmd(&["SMOVE", k, k2, m]), 1),
                13 => Step::Cmd(
                    0,
                    cmd(&[
                        ["SUNIONSTORE", "SINTERSTORE", "SDIFFSTORE"][next(3) as usize],
                        k2,
                        k,
                        "k4",
                    ]),
                    1,
                ),
                14 => Step::Cmd(0, cmd(&["SINTERCARD", "2", k, k2]), 1),
                _ => Step::Shape(0, cmd(&["SRANDMEMBER", k, "-3"])),
            };
            steps.push(step);
        }
        steps.push(Step::Sorted(0, cmd(&["SMEMBERS", "k1"])));
        if round % 2 == 1 {
            steps.insert(1, Step::Cmd(0, cmd(&["HELLO", "3"]), 1));
        }
        differential(&steps, &[], &[]);
    }
}

/// Integer-only sets keep Redis's intset order (ascending numbers).
#[test]
fn intset_order() {
    let mut steps = vec![];
    for i in [50, -3, 7, 1000, 0, 12] {
        steps.push(Step::Cmd(0, cmd(&["SADD", "n", &i.to_string()]), 1));
        steps.push(Step::Cmd(0, cmd(&["SMEMBERS", "n"]), 1));
    }
    steps.push(Step::Cmd(0, cmd(&["SUNION", "n", "n"]), 1));
    steps.push(Step::Cmd(0, cmd(&["SINTER", "n", "n"]), 1));
    steps.push(Step::Cmd(0, cmd(&["SSCAN", "n", "0"]), 1));
    differential(&steps, &[], &[]);
}

#[test]
fn heartbeat_pattern_sadd_expire() {
    diff(
        "
        0 1 SADD online:now alice bob
        0 1 EXPIRE online:now 1
        0 1 TTL online:now
        0 sleep 1200
        0 1 SCARD online:now
        0 1 EXISTS online:now
        ",
    );
}

/// SSCAN and SRANDMEMBER/SPOP on a large set: a full scan returns every
/// member once, distinct picks are distinct, pops remove what they return.
#[test]
fn large_set_scans_and_random_picks() {
    let h = Herald::start(&[]);
    let mut c = Raw::connect(h.resp);
    let members: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
    let mut args: Vec<&[u8]> = vec![b"SADD", b"big"];
    args.extend(members.iter().map(|m| m.as_bytes()));
    assert_eq!(c.cmd(&args), b":3000\r\n");
    let parse = |reply: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(reply)
            .split("\r\n")
            .filter(|l| l.starts_with('m'))
            .map(str::to_string)
            .collect()
    };
    let run = |c: &mut Raw, line: &str| {
        let w = words(line);
        let a: Vec<&[u8]> = w.iter().map(|x| &x[..]).collect();
        c.cmd(&a)
    };
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut cursor = b"0".to_vec();
    let mut pages = 0;
    loop {
        let r = c.cmd(&[&b"SSCAN"[..], b"big", &cursor, b"COUNT", b"100"]);
        let text = String::from_utf8_lossy(&r).to_string();
        let next = text.split("\r\n").nth(2).unwrap().to_string();
        for m in parse(&r) {
            *seen.entry(m).or_default() += 1;
        }
        pages += 1;
        if next == "0" {
            break;
        }
        cursor = next.into_bytes();
        assert!(pages < 1000);
    }
    assert_eq!(seen.len(), 3000);
    assert!(seen.values().all(|n| *n == 1), "a member came twice");
    assert!(pages >= 25, "{pages} pages");
    let picks = parse(&run(&mut c, "SRANDMEMBER big 500"));
    let distinct: std::collections::HashSet<&String> = picks.iter().collect();
    assert_eq!((picks.len(), distinct.len()), (500, 500));
    assert_eq!(parse(&run(&mut c, "SRANDMEMBER big -700")).len(), 700);
    let popped = parse(&run(&mut c, "SPOP big 1000"));
    assert_eq!(popped.len(), 1000);
    assert_eq!(run(&mut c, "SCARD big"), b":2000\r\n");
    for m in popped.iter().take(50) {
        assert_eq!(run(&mut c, &format!("SISMEMBER big {m}")), b":0\r\n");
    }
}
