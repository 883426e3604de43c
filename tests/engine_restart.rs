//! Redis restarting from an older snapshot: the histories it loads are
//! behind what clients saw. Herald notices (the Redis run id the history
//! was written under is not the running one) and starts a new epoch, so an
//! `(offset, epoch)` pair is never reused: a client that saw offset 10
//! resumes with `recovered: false`, never with someone else's offsets 6..10.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CONFIG: &str = "[namespaces.chat]\nhistory_size = 1000\n";
const SECRET: &str = "restart-secret";

#[test]
fn a_redis_restarted_from_an_older_snapshot_rotates_the_epoch() {
    let dir = std::env::temp_dir().join(format!("herald-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap().to_string();
    let persist = ["--dir", dir_s.as_str(), "--dbfilename", "snap.rdb"];
    let port = free_port();
    let mut redis = Redis::start_with(port, &persist);
    let (_d, cfg) = temp_config("restart", CONFIG);
    let url = format!("redis://127.0.0.1:{port}");
    let nodes: Vec<Herald> = (0..2)
        .map(|i| {
            Herald::start(&[
                "--config",
                &cfg,
                "--engine",
                &url,
                "--node-name",
                &format!("n{i}"),
                "--jwt-hmac-secret",
                SECRET,
                "--requirepass",
                "pw",
            ])
        })
        .collect();
    let mut p = Raw::backend(nodes[0].resp, "pw");
    for i in 1..=5 {
        assert!(p
            .cmd(&[b"PUBLISH", b"chat:s", format!("{i}").as_bytes()])
            .starts_with(b":"));
    }
    let mut admin = Raw::connect(redis.addr);
    admin
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(admin.cmd(&[b"SAVE"]), b"+OK\r\n");
    for i in 6..=10 {
        assert!(p
            .cmd(&[b"PUBLISH", b"chat:s", format!("{i}").as_bytes()])
            .starts_with(b":"));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tok = hs256(json!({"sub": "u", "exp": unix_now() + 600}), SECRET);
    let (top, epoch) = rt.block_on(async {
        let mut ws = ws_connect(nodes[1].http, Some(&tok)).await;
        let r = ws_call(&mut ws, 1, json!({"op": "history", "channel": "chat:s"})).await;
        let pubs = r["result"]["publications"]
            .as_array()
            .expect("publications")
            .clone();
        (
            pubs.last().unwrap()["offset"].as_u64().unwrap(),
            r["result"]["epoch"].as_str().unwrap().to_string(),
        )
    });
    assert_eq!(top, 10);

    // Redis dies and comes back from the snapshot taken at offset 5.
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let _back = Redis::start_with(port, &persist);

    // Publishing resumes (the nodes reconnect) under a new epoch.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = p.cmd(&[b"PUBLISH", b"chat:s", b"after"]);
        if r.starts_with(b":") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing never resumed: {}",
            show(&r)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.block_on(async {
        for h in &nodes {
            let mut ws = ws_connect(h.http, Some(&tok)).await;
            let r = ws_call(
                &mut ws,
                1,
                json!({"op": "subscribe", "channel": "chat:s", "since": {"offset": top, "epoch": epoch}}),
            )
            .await;
            assert_eq!(r["result"]["recovered"], false, "{r}");
            assert_ne!(r["result"]["epoch"].as_str(), Some(epoch.as_str()), "{r}");
            let r = ws_call(&mut ws, 2, json!({"op": "history", "channel": "chat:s"})).await;
            let offsets: Vec<u64> = r["result"]["publications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["offset"].as_u64().unwrap())
                .collect();
            // The new epoch starts afresh; the snapshot's 1..=5 are not
            // passed off as the current history.
            assert_eq!(offsets, vec![1], "{r}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
