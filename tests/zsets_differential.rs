//! Sorted-set commands against a real `redis-server`: scripted edge cases
//! and thousands of random operations, replies compared byte for byte in
//! RESP2 and RESP3.

mod common;

use common::diff::{diff, differential, Step};

fn cmd(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn scripted_zset_commands() {
    diff(
        "
        0 1 ZADD z 1 a 2 b 3 c
        0 1 ZADD z NX 10 a 4 d
        0 1 ZADD z XX CH 5 a 9 zz
        0 1 ZADD z GT CH 1 a 6 b
        0 1 ZADD z LT CH 1 a 100 c
        0 1 ZADD z INCR 2.5 a
        0 1 ZADD z NX INCR 1 a
        0 1 ZADD z XX INCR 1 nope
        0 1 ZADD z NX XX 1 a
        0 1 ZADD z GT LT 1 a
        0 1 ZADD z NX GT 1 a
        0 1 ZADD z INCR 1 a 2 b
        0 1 ZADD z 1 a 2
        0 1 ZADD z abc a
        0 1 ZADD z 1e309 a
        0 1 ZADD z -1e309 a
        0 1 ZADD z 1e-400 a
        0 1 ZINCRBY z 1e400 a
        0 1 ZADD z 1e-310 tiny
        0 1 ZADD z nan a
        0 1 ZADD z
        0 1 ZADD z inf f -inf g 1.1 h 1e20 i 0.0001 j
        0 1 ZINCRBY z -inf f
        0 1 ZINCRBY z 0.1 h
        0 1 ZINCRBY z x h
        0 1 ZINCRBY newz 5 m
        0 1 ZSCORE z h
        0 1 ZSCORE z nope
        0 1 ZMSCORE z a nope h
        0 1 ZRANK z a
        0 1 ZREVRANK z a
        0 1 ZRANK z nope
        0 1 ZCARD z
        0 1 ZCARD nokey
        0 1 ZRANGE z 0 -1
        0 1 ZRANGE z 0 -1 WITHSCORES
        0 1 ZRANGE z -3 -1 WITHSCORES
        0 1 ZRANGE z 5 1
        0 1 ZRANGE z 100 200
        0 1 ZRANGE z a b
        0 1 ZRANGE z 0 -1 REV WITHSCORES
        0 1 ZRANGE z (1 +inf BYSCORE WITHSCORES
        0 1 ZRANGE z +inf (1 BYSCORE REV LIMIT 1 2
        0 1 ZRANGE z 0 10 BYSCORE LIMIT 1 -1
        0 1 ZRANGE z 0 10 BYSCORE LIMIT -1 2
        0 1 ZRANGE z 0 -1 LIMIT 1 2
        0 1 ZRANGE z - + BYLEX WITHSCORES
        0 1 ZRANGE z x y BYSCORE
        0 1 ZRANGE z 0 1 FOO
        0 1 ZREVRANGE z 0 2 WITHSCORES
        0 1 ZREVRANGE z 0 2 FOO
        0 1 ZRANGEBYSCORE z -inf +inf WITHSCORES LIMIT 2 3
        0 1 ZRANGEBYSCORE z (2 5
        0 1 ZRANGEBYSCORE z 5 (2
        0 1 ZREVRANGEBYSCORE z +inf -inf LIMIT 0 3
        0 1 ZREVRANGEBYSCORE z 5 (2 WITHSCORES
        0 1 ZCOUNT z -inf +inf
        0 1 ZCOUNT z (1 3
        0 1 ZCOUNT z x 3
        0 1 ZADD lex 0 a 0 b 0 c 0 d 0 e 0 f
        0 1 ZRANGEBYLEX lex - +
        0 1 ZRANGEBYLEX lex [b (e
        0 1 ZRANGEBYLEX lex (b [e LIMIT 1 2
        0 1 ZREVRANGEBYLEX lex + - LIMIT 0 2
        0 1 ZREVRANGEBYLEX lex [e (b
        0 1 ZRANGEBYLEX lex b e
        0 1 ZLEXCOUNT lex [b [d
        0 1 ZLEXCOUNT lex - +
        0 1 ZRANGE lex [c + BYLEX REV
        0 1 ZRANGE lex + [c BYLEX REV
        0 1 ZREMRANGEBYLEX lex [a (c
        0 1 ZREMRANGEBYRANK lex 0 0
        0 1 ZREMRANGEBYRANK lex -1 -1
        0 1 ZRANGE lex 0 -1
        0 1 ZREMRANGEBYSCORE z (1 3
        0 1 ZREMRANGEBYSCORE z x 3
        0 1 ZRANGE z 0 -1 WITHSCORES
        0 1 ZPOPMIN z
        0 1 ZPOPMAX z 2
        0 1 ZPOPMIN z -1
        0 1 ZPOPMIN nokey
        0 1 ZPOPMIN nokey 3
        0 1 ZRANDMEMBER nokey
        0 1 ZRANDMEMBER nokey 3
        0 1 ZRANDMEMBER z x
        0 1 ZREM z a nope
        0 1 ZREM nokey a
        0 1 ZADD z1 1 a 2 b 3 c
        0 1 ZADD z2 10 b 20 c 30 d
        0 1 SADD s1 a d
        0 1 ZUNIONSTORE out 2 z1 z2
        0 1 ZRANGE out 0 -1 WITHSCORES
        0 1 ZUNIONSTORE out 2 z1 z2 WEIGHTS 2 0.5 AGGREGATE MAX
        0 1 ZRANGE out 0 -1 WITHSCORES
        0 1 ZINTERSTORE out 2 z1 z2 AGGREGATE MIN
        0 1 ZRANGE out 0 -1 WITHSCORES
        0 1 ZINTERSTORE out 3 z1 z2 s1
        0 1 EXISTS out
        0 1 ZUNIONSTORE out 3 z1 z2 s1 WEIGHTS 1 1 5
        0 1 ZRANGE out 0 -1 WITHSCORES
        0 1 ZUNIONSTORE out 0 z1
        0 1 ZUNIONSTORE out 5 z1
        0 1 ZUNIONSTORE out 2 z1 z2 WEIGHTS 1 x
        0 1 ZUNIONSTORE out 2 z1 z2 AGGREGATE FOO
        0 1 ZSCAN z1 0
        0 1 ZSCAN nokey 0 COUNT 0
        0 1 ZSCAN nokey 0 FOO
        0 1 ZSCAN z1 -1
        0 1 ZSCAN z1 0 COUNT 0
        0 1 ZRANDMEMBER z1 -9223372036854775808
        0 1 ZSCAN z1 0 MATCH a
        0 1 XADD st 1-1 f v
        0 1 ZADD st 1 a
        0 1 ZRANGE st 0 -1
        0 1 ZSCORE st a
        0 1 ZUNIONSTORE out 1 st
        0 1 HELLO 3
        0 1 ZSCORE z1 a
        0 1 ZMSCORE z1 a nope
        0 1 ZRANGE z1 0 -1 WITHSCORES
        0 1 ZINCRBY z1 1.5 a
        0 1 ZADD z1 INCR 1 a
        0 1 ZPOPMIN z1
        0 1 ZPOPMAX z1 1
        0 1 ZRANK z2 d
        ",
    );
}

/// Thousands of random operations over a few keys, RESP2 then RESP3.
#[test]
fn random_zset_operations() {
    let mut seed: u64 = 0x1234_5678_9ABC_DEF1;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let keys = ["z1", "z2", "z3"];
    let members = [
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
        "g",
        "h",
        "longer-member",
        "42",
    ];
    let scores = [
        "0", "1", "-1", "2.5", "1.1", "100", "-3.75", "1e10", "inf", "-inf", "0.1", "7",
    ];
    let bounds = [
        "-inf", "+inf", "0", "(0", "1", "(1", "2.5", "(100", "-1", "1e10",
    ];
    let ranks = ["0", "1", "-1", "2", "-3", "5", "100", "-100"];
    for round in 0..4 {
        let mut steps = vec![Step::Cmd(0, cmd(&["FLUSHALL"]), 1)];
        if round % 2 == 1 {
            steps.push(Step::Cmd(0, cmd(&["HELLO", "3"]), 1));
        }
        for _ in 0..700 {
            let k = keys[next(3) as usize];
            let k2 = keys[next(3) as usize];
            let m = members[next(members.len() as u64) as usize];
            let m2 = members[next(members.len() as u64) as usize];
            let s = scores[next(scores.len() as u64) as usize];
            let s2 = scores[next(scores.len() as u64) as usize];
            let b1 = bounds[next(bounds.len() as u64) as usize];
            let b2 = bounds[next(bounds.len() as u64) as usize];
            let r1 = ranks[next(ranks.len() as u64) as usize];
            let r2 = ranks[next(ranks.len() as u64) as usize];
            let flag = ["", "NX", "XX", "GT", "LT", "CH", "XX CH", "GT CH"][next(8) as usize];
            let mut words: Vec<&str> = match next(20) {
                0..=3 => {
                    let mut w = vec!["ZADD", k];
                    w.extend(flag.split(' ').filter(|x| !x.is_empty()));
                    w.extend([s, m, s2, m2]);
                    w
                }
                4 => vec!["ZINCRBY", k, s, m],
                5 => vec!["ZREM", k, m, m2],
                6 => vec!["ZSCORE", k, m],
                7 => vec!["ZMSCORE", k, m, m2],
                8 => vec![["ZRANK", "ZREVRANK"][next(2) as usize], k, m],
                9 => vec!["ZCARD", k],
                10 => vec!["ZCOUNT", k, b1, b2],
                11 => vec!["ZRANGE", k, r1, r2, "WITHSCORES"],
                12 => vec!["ZREVRANGE", k, r1, r2],
                13 => vec![
                    "ZRANGEBYSCORE",
                    k,
                    b1,
                    b2,
                    "WITHSCORES",
                    "LIMIT",
                    ["0", "1", "2"][next(3) as usize],
                    ["-1", "1", "3"][next(3) as usize],
                ],
                14 => vec!["ZREVRANGEBYSCORE", k, b2, b1],
                15 => vec!["ZRANGE", k, b1, b2, "BYSCORE", "REV", "WITHSCORES"],
                16 => vec![
                    ["ZREMRANGEBYSCORE", "ZREMRANGEBYRANK"][next(2) as usize],
                    k,
                    if next(2) == 0 { b1 } else { r1 },
                    if next(2) == 0 { b2 } else { r2 },
                ],
                17 => vec![
                    ["ZPOPMIN", "ZPOPMAX"][next(2) as usize],
                    k,
                    ["1", "2", "5"][next(3) as usize],
                ],
                18 => vec![
                    "ZUNIONSTORE",
                    k2,
                    "2",
                    k,
                    "z3",
                    "WEIGHTS",
                    s,
                    "1",
                    "AGGREGATE",
                    ["SUM", "MIN", "MAX"][next(3) as usize],
                ],
                _ => vec!["ZINTERSTORE", k2, "2", k, k2],
            };
            if words[0] == "ZREMRANGEBYRANK" {
                words[2] = r1;
                words[3] = r2;
            }
            steps.push(Step::Cmd(
                0,
                words.iter().map(|w| w.as_bytes().to_vec()).collect(),
                1,
            ));
        }
        for k in keys {
            steps.push(Step::Cmd(
                0,
                cmd(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
                1,
            ));
        }
        differential(&steps, &[], &[]);
    }
}

/// Lex commands on sets whose scores are all equal (the only case Redis
/// defines).
#[test]
fn random_lex_operations() {
    let mut seed: u64 = 0xABCDEF;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let members = ["a", "aa", "ab", "b", "ba", "c", "cab", "d", "e", "zz"];
    let bounds = ["-", "+", "[a", "(a", "[b", "(ba", "[c", "(d", "[zz", "(e"];
    let mut steps = vec![];
    for _ in 0..500 {
        let m = members[next(10) as usize];
        let b1 = bounds[next(10) as usize];
        let b2 = bounds[next(10) as usize];
        let words = match next(6) {
            0 | 1 => vec!["ZADD", "lx", "0", m],
            2 => vec![
                "ZRANGEBYLEX",
                "lx",
                b1,
                b2,
                "LIMIT",
                "0",
                ["1", "-1", "3"][next(3) as usize],
            ],
            3 => vec!["ZREVRANGEBYLEX", "lx", b2, b1],
            4 => vec!["ZLEXCOUNT", "lx", b1, b2],
            _ => vec!["ZREMRANGEBYLEX", "lx", b1, b2],
        };
        steps.push(Step::Cmd(0, cmd(&words), 1));
    }
    differential(&steps, &[], &[]);
}
