//! Live leaderboards: the top N pushed when it changes, not when it does
//! not, coalesced under a flood; own rank; the RESP channel; permissions.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "lb-secret";

async fn next_lb(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws_recv(ws)).await {
            Err(_) => return None,
            Ok(v) if v["push"] == "leaderboard" => return Some(v),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn top_n_pushes_on_change_only_and_coalesces() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", "backend"]);
    let mut r = Raw::backend(h.resp, "backend");
    r.cmd(&[
        b"ZADD", b"game", b"100", b"alice", b"85", b"bob", b"120", b"carol", b"10", b"dave",
    ]);
    let tok = hs256(json!({"sub": "dave", "exp": unix_now() + 600}), SECRET);
    let mut ws = ws_connect(h.http, Some(&tok)).await;
    let reply = ws_call(
        &mut ws,
        1,
        json!({"op": "leaderboard_subscribe", "key": "game", "top": 3}),
    )
    .await;
    assert_eq!(
        reply["result"]["entries"],
        json!([{"member": "carol", "score": 120.0}, {"member": "alice", "score": 100.0}, {"member": "bob", "score": 85.0}])
    );
    assert_eq!(
        (
            reply["result"]["rank"].clone(),
            reply["result"]["score"].clone()
        ),
        (json!(3), json!(10.0))
    );

    // A change inside the top 3 is pushed, with the watcher's own rank.
    r.cmd(&[b"ZINCRBY", b"game", b"50", b"bob"]);
    let p = next_lb(&mut ws, Duration::from_secs(2))
        .await
        .expect("no push after a top-3 change");
    assert_eq!(p["key"], "game");
    assert_eq!(p["entries"][0], json!({"member": "bob", "score": 135.0}));
    assert_eq!(p["rank"], 3);

    // A change below the top 3 is not.
    r.cmd(&[b"ZINCRBY", b"game", b"1", b"dave"]);
    assert!(
        next_lb(&mut ws, Duration::from_millis(400)).await.is_none(),
        "pushed although the top 3 stayed"
    );

    // A flood is coalesced: at most about one push per 100 ms tick.
    let started = Instant::now();
    let mut pipe = Vec::new();
    for i in 0..3000 {
        pipe.extend(encode(&[
            b"ZINCRBY",
            b"game",
            b"1",
            format!("p{}", i % 7).as_bytes(),
        ]));
    }
    r.send_raw(&pipe);
    for _ in 0..3000 {
        r.frame();
    }
    let flood_time = started.elapsed();
    let mut pushes = 0;
    while next_lb(&mut ws, Duration::from_millis(400)).await.is_some() {
        pushes += 1;
    }
    let bound = (flood_time.as_millis() / 100) as usize + 3;
    assert!(
        pushes >= 1 && pushes <= bound,
        "{pushes} pushes for a {flood_time:?} flood (bound {bound})"
    );

    // Unsubscribed: nothing more.
    ws_call(
        &mut ws,
        2,
        json!({"op": "leaderboard_unsubscribe", "key": "game"}),
    )
    .await;
    r.cmd(&[b"ZADD", b"game", b"10000", b"zed"]);
    assert!(next_lb(&mut ws, Duration::from_millis(400)).await.is_none());
}

#[tokio::test]
async fn resp_subscribers_follow_the_leaderboard_channel() {
    let h = Herald::start(&["--leaderboard-resp-top", "2"]);
    let mut sub = Raw::connect(h.resp);
    sub.cmd(&[b"SUBSCRIBE", b"__leaderboard__:board"]);
    let mut r = Raw::connect(h.resp);
    r.cmd(&[b"ZADD", b"board", b"1", b"a", b"2", b"b", b"3", b"c"]);
    let m = show(&sub.frame());
    assert!(m.contains(r#"{\"entries\":[{\"member\":\"c\",\"score\":3.0},{\"member\":\"b\",\"score\":2.0}],\"key\":\"board\"}"#)
        || m.contains(r#""entries":[{"member":"c","score":3.0},{"member":"b","score":2.0}]"#), "{m}");
    // No change in the top 2: nothing published.
    r.cmd(&[b"ZADD", b"board", b"0", b"z"]);
    assert!(sub.try_frame(Duration::from_millis(400)).is_none());
}

#[tokio::test]
async fn permissions_for_watching_and_writing() {
    let h = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", "backend"]);
    let tok = hs256(
        json!({"sub": "u", "exp": unix_now() + 600, "subscribe": ["game:*"], "publish": ["game:mine"]}),
        SECRET,
    );
    let mut ws = ws_connect(h.http, Some(&tok)).await;
    assert_eq!(
        ws_call(
            &mut ws,
            1,
            json!({"op": "leaderboard_subscribe", "key": "other", "top": 3})
        )
        .await["error"]["code"],
        103
    );
    assert!(ws_call(
        &mut ws,
        2,
        json!({"op": "leaderboard_subscribe", "key": "game:1", "top": 3})
    )
    .await["result"]["entries"]
        .is_array());
    assert_eq!(
        ws_call(
            &mut ws,
            3,
            json!({"op": "leaderboard_subscribe", "key": "game:1", "top": 0})
        )
        .await["error"]["code"],
        100
    );
    let mut r = Raw::backend(h.resp, "backend");
    assert_eq!(r.cmd(&[b"AUTH", tok.as_bytes()]), b"+OK\r\n");
    assert_eq!(r.cmd(&[b"ZADD", b"game:mine", b"1", b"a"]), b":1\r\n");
    let noperm =
        b"-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";
    assert_eq!(r.cmd(&[b"ZADD", b"game:1", b"1", b"a"]), noperm);
    assert_eq!(r.cmd(&[b"ZINCRBY", b"other", b"1", b"a"]), noperm);
    assert_eq!(
        r.cmd(&[b"ZSCORE", b"game:mine", b"a"]),
        b"$1\r\n1\r\n",
        "reads follow subscribe globs"
    );
    assert_eq!(r.cmd(&[b"ZSCORE", b"secret", b"a"]), noperm);
    // A password keeps full access.
    let h2 = Herald::start(&["--jwt-hmac-secret", SECRET, "--requirepass", "pw"]);
    let mut admin = Raw::connect(h2.resp);
    admin.cmd(&[b"AUTH", b"pw"]);
    assert_eq!(admin.cmd(&[b"ZADD", b"anything", b"1", b"a"]), b":1\r\n");
}
