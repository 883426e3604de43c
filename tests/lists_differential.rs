//! List commands against a real `redis-server`: scripted edge cases
//! (errors and their order, negative and huge indexes, counts, LPOS's
//! options, moves onto the same list, wrong types, expiry, WATCH, binary
//! and large elements, lists past the packed size) and random operation
//! sequences in RESP2 and RESP3, replies compared byte for byte.
//! Blocking pops are in `tests/lists_blocking.rs`.

mod common;

use common::diff::{diff, differential, Step};

fn cmd(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// The same script in RESP2, then in RESP3 on a fresh keyspace.
fn diff_both(text: &str) {
    diff(&format!(
        "0 1 FLUSHALL\n{text}\n0 1 FLUSHALL\n0 1 HELLO 3\n{text}"
    ));
}

#[test]
fn scripted_pushes_and_pops() {
    diff_both(
        "
        0 1 LPUSH l a
        0 1 LPUSH l b c
        0 1 RPUSH l d e
        0 1 LRANGE l 0 -1
        0 1 LLEN l
        0 1 TYPE l
        0 1 LPUSHX nokey a
        0 1 RPUSHX nokey a
        0 1 EXISTS nokey
        0 1 LPUSHX l x y
        0 1 RPUSHX l z
        0 1 LRANGE l 0 -1
        0 1 LPOP l
        0 1 RPOP l
        0 1 LPOP l 2
        0 1 RPOP l 2
        0 1 LPOP l 0
        0 1 RPOP l 0
        0 1 LPOP l 100
        0 1 EXISTS l
        0 1 LPOP l
        0 1 LPOP l 1
        0 1 LPOP l 0
        0 1 RPOP l -1
        0 1 RPOP l x
        0 1 RPOP l 1 2
        0 1 LPOP
        0 1 LPUSH l
        0 1 RPUSH l a
        0 1 LPOP l -1
        0 1 LPOP l 9223372036854775807
        0 1 LLEN nokey
        0 1 SET s v
        0 1 LPUSH s a
        0 1 RPUSHX s a
        0 1 LPOP s
        0 1 LPOP s 0
        0 1 LPOP s x
        0 1 LLEN s
        0 1 HSET h f v
        0 1 RPUSH h a
        0 1 SADD set m
        0 1 LLEN set
        0 1 RPUSH n 1 2 3 -1 007 1.5 9223372036854775808
        0 1 LRANGE n 0 -1
        0 1 RPUSH e ''
        0 1 LLEN e
        ",
    );
}

#[test]
fn scripted_indexes_and_ranges() {
    diff_both(
        "
        0 1 RPUSH l a b c d e
        0 1 LRANGE l 0 0
        0 1 LRANGE l -1 -1
        0 1 LRANGE l -2 -1
        0 1 LRANGE l 1 -2
        0 1 LRANGE l 3 1
        0 1 LRANGE l 5 10
        0 1 LRANGE l -100 100
        0 1 LRANGE l -9223372036854775808 9223372036854775807
        0 1 LRANGE l 0 -6
        0 1 LRANGE l 0 -5
        0 1 LRANGE l x 1
        0 1 LRANGE l 0 y
        0 1 LRANGE nokey x 1
        0 1 LRANGE nokey 0 -1
        0 1 LINDEX l 0
        0 1 LINDEX l 4
        0 1 LINDEX l 5
        0 1 LINDEX l -1
        0 1 LINDEX l -5
        0 1 LINDEX l -6
        0 1 LINDEX l 9223372036854775807
        0 1 LINDEX l -9223372036854775808
        0 1 LINDEX l x
        0 1 LINDEX nokey x
        0 1 LINDEX nokey 0
        0 1 LSET l 0 A
        0 1 LSET l -1 E
        0 1 LSET l 2 a-much-longer-element-than-before
        0 1 LSET l 5 x
        0 1 LSET l -6 x
        0 1 LSET l x x
        0 1 LSET nokey x x
        0 1 LSET nokey 0 x
        0 1 LRANGE l 0 -1
        0 1 SET s v
        0 1 LRANGE s 0 -1
        0 1 LRANGE s x 0
        0 1 LINDEX s x
        0 1 LSET s x v
        0 1 LTRIM l 1 -2
        0 1 LRANGE l 0 -1
        0 1 LTRIM l -100 100
        0 1 LRANGE l 0 -1
        0 1 LTRIM l 0 0
        0 1 LRANGE l 0 -1
        0 1 LTRIM l 1 0
        0 1 EXISTS l
        0 1 LTRIM nokey 0 1
        0 1 LTRIM nokey x 1
        0 1 LTRIM s 0 1
        0 1 LTRIM s x 1
        0 1 RPUSH t a b c
        0 1 LTRIM t 5 10
        0 1 EXISTS t
        0 1 RPUSH t a b c
        0 1 LTRIM t -1 -2
        0 1 EXISTS t
        ",
    );
}

#[test]
fn scripted_insert_remove_and_search() {
    diff_both(
        "
        0 1 RPUSH l a b a c a
        0 1 LINSERT l BEFORE a x
        0 1 LINSERT l after a y
        0 1 LINSERT l AFTER c z
        0 1 LINSERT l BEFORE nothere q
        0 1 LINSERT l MIDDLE a q
        0 1 LINSERT nokey BEFORE a q
        0 1 LINSERT nokey MIDDLE a q
        0 1 LRANGE l 0 -1
        0 1 LREM l 1 a
        0 1 LRANGE l 0 -1
        0 1 LREM l -1 a
        0 1 LRANGE l 0 -1
        0 1 RPUSH l a a b a
        0 1 LREM l -2 a
        0 1 LRANGE l 0 -1
        0 1 LREM l 0 a
        0 1 LRANGE l 0 -1
        0 1 LREM l 0 nothere
        0 1 LREM l x a
        0 1 LREM nokey x a
        0 1 LREM nokey 0 a
        0 1 LREM l -9223372036854775808 b
        0 1 LRANGE l 0 -1
        0 1 RPUSH one v
        0 1 LREM one 0 v
        0 1 EXISTS one
        0 1 DEL l
        0 1 RPUSH l a b a c a
        0 1 LPOS l a
        0 1 LPOS l c
        0 1 LPOS l zz
        0 1 LPOS l a RANK 2
        0 1 LPOS l a RANK -1
        0 1 LPOS l a RANK -2
        0 1 LPOS l a RANK 4
        0 1 LPOS l a RANK 0
        0 1 LPOS l a RANK x
        0 1 LPOS l a RANK -9223372036854775808
        0 1 LPOS l a RANK -9223372036854775808 COUNT 2
        0 1 LPOS l a RANK 9223372036854775807 COUNT 2
        0 1 LPOS l a COUNT 0
        0 1 LPOS l a COUNT 2
        0 1 LPOS l a COUNT 2 RANK 2
        0 1 LPOS l a COUNT 0 RANK -1
        0 1 LPOS l a RANK 3 COUNT 0
        0 1 LPOS l a RANK 5 COUNT 0
        0 1 LPOS l zz COUNT 0
        0 1 LPOS l a COUNT -1
        0 1 LPOS l a COUNT x
        0 1 LPOS l a MAXLEN 1
        0 1 LPOS l a MAXLEN 2 RANK 2
        0 1 LPOS l a MAXLEN 1 RANK -1
        0 1 LPOS l a MAXLEN 3 COUNT 0
        0 1 LPOS l a MAXLEN -1
        0 1 LPOS l a MAXLEN x
        0 1 LPOS l a RANK
        0 1 LPOS l a FOO 1
        0 1 LPOS l a rank 1 count 1 maxlen 0
        0 1 LPOS nokey a
        0 1 LPOS nokey a COUNT 0
        0 1 LPOS nokey a RANK 0
        0 1 SET s v
        0 1 LPOS s a
        0 1 LPOS s a RANK 0
        0 1 LINSERT s BEFORE a b
        0 1 LREM s 0 a
        ",
    );
}

#[test]
fn scripted_moves() {
    diff_both(
        "
        0 1 RPUSH src a b c
        0 1 LMOVE src dst LEFT RIGHT
        0 1 LMOVE src dst RIGHT LEFT
        0 1 LMOVE src dst left left
        0 1 LRANGE dst 0 -1
        0 1 EXISTS src
        0 1 LMOVE src dst LEFT RIGHT
        0 1 LMOVE dst dst LEFT RIGHT
        0 1 LRANGE dst 0 -1
        0 1 LMOVE dst dst RIGHT RIGHT
        0 1 LMOVE dst dst UP RIGHT
        0 1 LMOVE dst dst LEFT DOWN
        0 1 LMOVE nokey dst UP RIGHT
        0 1 RPOPLPUSH dst other
        0 1 RPOPLPUSH nokey other
        0 1 LRANGE other 0 -1
        0 1 SET s v
        0 1 LMOVE s dst LEFT RIGHT
        0 1 LMOVE dst s LEFT RIGHT
        0 1 LMOVE nokey s LEFT RIGHT
        0 1 RPOPLPUSH dst s
        0 1 RPOPLPUSH s dst
        0 1 LRANGE dst 0 -1
        0 1 DEL dst other
        0 1 RPUSH solo x
        0 1 EXPIRE solo 1000
        0 1 LMOVE solo solo LEFT RIGHT
        0 1 TTL solo
        0 1 RPOPLPUSH solo solo
        0 1 TTL solo
        0 1 RPOPLPUSH solo elsewhere
        0 1 EXISTS solo
        0 1 TTL elsewhere
        ",
    );
}

#[test]
fn keys_commands_see_lists() {
    diff_both(
        "
        0 1 RPUSH l1 a
        0 1 SET s v
        0 1 HSET h f v
        0 1 SCAN 0 TYPE list COUNT 100
        0 1 RPUSH l2 a b
        0 1 TYPE l1
        0 1 EXPIRE l2 100
        0 1 TTL l2
        0 1 RPUSH l2 c
        0 1 TTL l2
        0 1 LPOP l2
        0 1 TTL l2
        0 1 PERSIST l2
        0 1 TTL l2
        0 1 PEXPIRE l1 50
        0 sleep 150
        0 1 LLEN l1
        0 1 EXISTS l1
        0 1 RPUSH l1 new
        0 1 TTL l1
        0 1 DEL l1 l2
        0 1 SET s2 v
        0 1 RPUSH s2 a
        ",
    );
    // SCAN's order differs by nature: the listing compared sorted.
    differential(
        &[
            Step::Cmd(0, cmd(&["FLUSHALL"]), 1),
            Step::Cmd(0, cmd(&["RPUSH", "l1", "a"]), 1),
            Step::Cmd(0, cmd(&["RPUSH", "l2", "a"]), 1),
            Step::Cmd(0, cmd(&["SET", "s", "v"]), 1),
            Step::Sorted(0, cmd(&["KEYS", "*"])),
        ],
        &[],
        &[],
    );
}

/// WATCH sees list writes, served blocked pops included, and expiry; a
/// list write inside MULTI sees the transaction's own writes.
#[test]
fn watch_and_transactions() {
    diff_both(
        "
        0 1 RPUSH w a
        0 1 WATCH w
        1 1 RPUSH w b
        0 1 MULTI
        0 1 LLEN w
        0 1 EXEC
        0 1 WATCH w
        1 1 LPOP w
        0 1 MULTI
        0 1 LRANGE w 0 -1
        0 1 EXEC
        0 1 WATCH w
        0 1 MULTI
        0 1 RPUSH w c
        0 1 LMOVE w w LEFT RIGHT
        0 1 LRANGE w 0 -1
        0 1 LPOP w 10
        0 1 LLEN w
        0 1 EXEC
        0 1 MULTI
        0 1 RPUSH w a
        0 1 LSET w 5 x
        0 1 INCR w
        0 1 LRANGE w 0 -1
        0 1 EXEC
        0 1 MULTI
        0 1 LPOP w 1 2
        0 1 EXEC
        ",
    );
}

#[test]
fn binary_and_large_elements() {
    let big = "x".repeat(20_000);
    let mid = "y".repeat(300);
    let mut steps = vec![Step::Cmd(0, cmd(&["FLUSHALL"]), 1)];
    for resp3 in [false, true] {
        if resp3 {
            steps.push(Step::Cmd(0, cmd(&["HELLO", "3"]), 1));
        }
        let bin: Vec<u8> = (0..=255u8).collect();
        steps.push(Step::Cmd(
            0,
            vec![
                b"RPUSH".to_vec(),
                b"b".to_vec(),
                bin.clone(),
                b"".to_vec(),
                b"\r\n".to_vec(),
            ],
            1,
        ));
        steps.push(Step::Cmd(0, cmd(&["LRANGE", "b", "0", "-1"]), 1));
        steps.push(Step::Cmd(
            0,
            vec![b"LPOS".to_vec(), b"b".to_vec(), bin.clone()],
            1,
        ));
        steps.push(Step::Cmd(
            0,
            vec![b"LREM".to_vec(), b"b".to_vec(), b"0".to_vec(), b"".to_vec()],
            1,
        ));
        steps.push(Step::Cmd(
            0,
            cmd(&["RPUSH", "big", &big, "small", &mid, &big]),
            1,
        ));
        steps.push(Step::Cmd(0, cmd(&["LINDEX", "big", "2"]), 1));
        steps.push(Step::Cmd(
            0,
            cmd(&["LINSERT", "big", "AFTER", "small", &big]),
            1,
        ));
        steps.push(Step::Cmd(0, cmd(&["LSET", "big", "0", "tiny"]), 1));
        steps.push(Step::Cmd(0, cmd(&["LRANGE", "big", "0", "-1"]), 1));
        steps.push(Step::Cmd(0, cmd(&["LREM", "big", "0", &big]), 1));
        steps.push(Step::Cmd(0, cmd(&["LRANGE", "big", "0", "-1"]), 1));
        steps.push(Step::Cmd(0, cmd(&["DEL", "b", "big"]), 1));
    }
    differential(&steps, &[], &[]);
}

/// A list that grows well past one node and shrinks again, read at every
/// scale: the packed form, nodes, and back.
#[test]
fn long_lists() {
    let mut steps = vec![Step::Cmd(0, cmd(&["FLUSHALL"]), 1)];
    for round in 0..4 {
        for i in 0..400 {
            let v = format!("element-{round}-{i:05}");
            let side = if i % 3 == 0 { "LPUSH" } else { "RPUSH" };
            steps.push(Step::Cmd(0, cmd(&[side, "q", &v]), 1));
        }
        for (s, e) in [("0", "9"), ("-10", "-1"), ("500", "520"), ("0", "-1")] {
            steps.push(Step::Cmd(0, cmd(&["LRANGE", "q", s, e]), 1));
        }
        for i in ["0", "1", "399", "400", "-1", "-401", "777", "-777"] {
            steps.push(Step::Cmd(0, cmd(&["LINDEX", "q", i]), 1));
        }
        let pivot = format!("element-{round}-00100");
        steps.push(Step::Cmd(
            0,
            cmd(&["LINSERT", "q", "BEFORE", &pivot, "ins"]),
            1,
        ));
        steps.push(Step::Cmd(
            0,
            cmd(&["LSET", "q", "250", "set-in-the-middle"]),
            1,
        ));
        steps.push(Step::Cmd(
            0,
            cmd(&["LPOS", "q", "ins", "RANK", "-1", "COUNT", "0"]),
            1,
        ));
        steps.push(Step::Cmd(0, cmd(&["LREM", "q", "0", "ins"]), 1));
        steps.push(Step::Cmd(0, cmd(&["RPOP", "q", "150"]), 1));
        steps.push(Step::Cmd(0, cmd(&["LTRIM", "q", "20", "-20"]), 1));
        steps.push(Step::Cmd(0, cmd(&["LLEN", "q"]), 1));
        steps.push(Step::Cmd(0, cmd(&["LRANGE", "q", "0", "-1"]), 1));
    }
    steps.push(Step::Cmd(0, cmd(&["LPOP", "q", "100000"]), 1));
    steps.push(Step::Cmd(0, cmd(&["EXISTS", "q"]), 1));
    differential(&steps, &[], &[]);
}

/// xorshift, for reproducible random sequences.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// Random list operations over a few keys (one holding a string, for
/// WRONGTYPE; one growing long enough for nodes), 2,000 a round, in RESP2
/// and RESP3.
#[test]
fn random_list_operations() {
    let mut r = Rng(0x1157_dead_beef_0042);
    let keys = ["l1", "l2", "l3", "long", "str"];
    let long_value = "v".repeat(120);
    let values = ["a", "b", "c", "", "1", "-2", "zz", long_value.as_str()];
    let idx = ["0", "1", "-1", "2", "-3", "5", "-100", "100", "x"];
    let counts = ["0", "1", "2", "-1", "-2", "3"];
    let ends = ["LEFT", "RIGHT"];
    for round in 0..4 {
        let mut steps = vec![
            Step::Cmd(0, cmd(&["FLUSHALL"]), 1),
            Step::Cmd(0, cmd(&["SET", "str", "v"]), 1),
        ];
        if round % 2 == 1 {
            steps.push(Step::Cmd(0, cmd(&["HELLO", "3"]), 1));
        }
        for _ in 0..2000 {
            let k = r.pick(&keys);
            let k2 = r.pick(&keys);
            let v = r.pick(&values);
            let v2 = r.pick(&values);
            let i = r.pick(&idx);
            let j = r.pick(&idx);
            let c = r.pick(&counts);
            let c: Vec<&str> = match r.below(26) {
                0..=3 => vec!["RPUSH", k, v, v2],
                4..=5 => vec!["LPUSH", k, v],
                6 => vec!["LPUSHX", k, v],
                7 => vec!["RPUSHX", k, v, v2],
                8 => vec!["LPOP", k],
                9 => vec!["RPOP", k, c.trim_start_matches('-')],
                10 => vec!["LLEN", k],
                11 => vec!["LRANGE", k, i, j],
                12 => vec!["LINDEX", k, i],
                13 => vec!["LSET", k, i, v],
                14 => vec!["LINSERT", k, r.pick(&["BEFORE", "AFTER"]), v, v2],
                15 => vec!["LREM", k, c, v],
                16 => vec!["LTRIM", k, i, j],
                17 => vec!["LPOS", k, v],
                18 => vec!["LPOS", k, v, "RANK", c, "COUNT", "0"],
                19 => vec![
                    "LPOS",
                    k,
                    v,
                    "COUNT",
                    c.trim_start_matches('-'),
                    "MAXLEN",
                    "3",
                ],
                20 => vec!["LMOVE", k, k2, r.pick(&ends), r.pick(&ends)],
                21 => vec!["RPOPLPUSH", k, k2],
                22 => vec!["BLPOP", k, k2, "0.01"],
                23 => vec!["BRPOPLPUSH", k, k2, "0.01"],
                24 => vec!["BLMOVE", k, k2, r.pick(&ends), r.pick(&ends), "0.01"],
                _ => vec!["DEL", k],
            };
            steps.push(Step::Cmd(0, cmd(&c), 1));
            // The long list keeps growing, past the packed size and a node.
            if r.below(2) == 0 {
                let n = format!("n{}", r.below(50));
                let c: Vec<&str> = match r.below(8) {
                    0..=4 => vec!["RPUSH", "long", &n, v],
                    5 => vec!["LPUSH", "long", &n],
                    6 => vec!["LREM", "long", "1", &n],
                    _ => vec!["LINDEX", "long", i],
                };
                steps.push(Step::Cmd(0, cmd(&c), 1));
            }
        }
        for k in keys {
            steps.push(Step::Cmd(0, cmd(&["LRANGE", k, "0", "-1"]), 1));
        }
        differential(&steps, &[], &[]);
    }
}
