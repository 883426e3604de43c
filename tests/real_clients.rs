//! Real Redis clients against Herald, unchanged: the `redis` crate (RESP2
//! and RESP3), `redis-cli` and redis-py (the seed article's cache, session,
//! lock and job-queue snippets included).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_redis_py, Herald, TIMEOUT};
use futures_util::StreamExt;
use redis::AsyncCommands;

#[tokio::test]
async fn redis_crate_resp2_pubsub() {
    let herald = Herald::start(&[]);
    let client = redis::Client::open(format!("redis://{}/", herald.resp)).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("news").await.unwrap();
    pubsub.psubscribe("n*").await.unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let n: i64 = con.publish("news", "hello").await.unwrap();
    assert_eq!(n, 2);
    let mut stream = pubsub.on_message();
    let first = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.get_channel_name(), "news");
    assert!(!first.from_pattern());
    assert_eq!(first.get_payload::<String>().unwrap(), "hello");
    let second = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(second.from_pattern());
    assert_eq!(second.get_pattern::<String>().unwrap(), "n*");
    let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(numsub, vec![("news".to_string(), 1)]);
}

#[tokio::test]
async fn redis_crate_resp3_push() {
    let herald = Herald::start(&[]);
    let client = redis::Client::open(format!("redis://{}/?protocol=resp3", herald.resp)).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cfg = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut sub = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .unwrap();
    sub.subscribe("news").await.unwrap();
    // RESP3 lets the subscribed connection run ordinary commands too.
    let pong: String = redis::cmd("PING").query_async(&mut sub).await.unwrap();
    assert_eq!(pong, "PONG");
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let n: i64 = con.publish("news", "hello3").await.unwrap();
    assert_eq!(n, 1);
    loop {
        let push = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if push.kind == redis::PushKind::Message {
            let payload: String = redis::from_redis_value(push.data[1].clone()).unwrap();
            assert_eq!(payload, "hello3");
            break;
        }
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli not found: .ci/run installs it (apt-get install redis-tools)");
    assert!(out.status.success(), "redis-cli failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli_subscribe_roundtrip(resp3: bool) {
    let herald = Herald::start(&[]);
    let port = herald.resp.port();
    let mut args = vec![
        "-h".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
    ];
    if resp3 {
        args.push("-3".into());
    }
    args.extend(["SUBSCRIBE".into(), "alerts".into()]);
    let mut sub = Command::new("redis-cli")
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    let stdout = sub.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait until the subscription is registered, then publish with redis-cli.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let n = redis_cli(port, &["PUBSUB", "NUMSUB", "alerts"]);
        if n.lines().nth(1) == Some("1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-cli never subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        redis_cli(port, &["PUBLISH", "alerts", "disk full"]).trim(),
        "1"
    );
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l == "disk full") {
        lines.push(rx.recv_timeout(TIMEOUT).expect("no message from redis-cli"));
    }
    let _ = sub.kill();
    let _ = sub.wait();
    assert!(lines.contains(&"message".to_string()), "{lines:?}");
    assert!(lines.contains(&"alerts".to_string()), "{lines:?}");
}

#[test]
fn redis_cli_resp2() {
    cli_subscribe_roundtrip(false);
}

#[test]
fn redis_cli_resp3() {
    cli_subscribe_roundtrip(true);
}

#[test]
fn redis_cli_commands() {
    let herald = Herald::start(&[]);
    let port = herald.resp.port();
    assert_eq!(redis_cli(port, &["PING"]).trim(), "PONG");
    assert_eq!(redis_cli(port, &["PUBLISH", "nobody", "x"]).trim(), "0");
    assert!(redis_cli(port, &["INFO", "server"]).contains("redis_version:7.0.15"));
    assert!(redis_cli(port, &["CLIENT", "LIST"]).contains("cmd=client|list"));
}

#[test]
fn redis_py_resp2_and_resp3() {
    let herald = Herald::start(&[]);
    run_redis_py("redis_py_check.py", &herald);
}

#[test]
fn redis_py_article_cache_session_and_lock() {
    let herald = Herald::start(&[]);
    run_redis_py("redis_py_strings_hashes.py", &herald);
}

#[test]
fn redis_py_article_job_queue() {
    let herald = Herald::start(&[]);
    run_redis_py("redis_py_job_queue.py", &herald);
}
