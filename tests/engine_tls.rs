//! The Redis engine over TLS (`rediss://`) against a real `redis-server`
//! that speaks only TLS, with certificates the test makes with `openssl`:
//! nodes trusting the CA (`--engine-tls-ca`, its env variable and TOML key)
//! share publishes, history and data; a client certificate
//! (`--engine-tls-cert`/`--engine-tls-key`) passes `tls-auth-clients yes`;
//! an unknown CA, a certificate for another name, a missing client
//! certificate and settings that cannot be honoured stop Herald at start
//! with a message, as an unreachable Redis does.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::{start_tls_cluster, tls_cli, TestCerts, TlsSentinel};
use common::*;
use serde_json::json;

const CONFIG: &str = "[namespaces.chat]\nhistory_size = 100\n";
const SECRET: &str = "engine-tls-secret";

fn node(url: &str, cfg: &str, extra: &[&str], env: &[(&str, &str)]) -> Herald {
    let mut args = vec![
        "--config",
        cfg,
        "--engine",
        url,
        "--requirepass",
        "pw",
        "--jwt-hmac-secret",
        SECRET,
    ];
    args.extend(extra);
    Herald::start_with_env(&args, env)
}

/// Runs Herald with `args`, which must stop it at start: its output.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{args:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `redis-cli` over TLS to `redis` (trusting the test CA).
fn redis_cli(certs: &TestCerts, redis: &Redis, args: &[&str]) -> String {
    tls_cli(certs, redis.addr.port(), args)
}

/// A publish on `a` reaches a subscriber on `b`, on channels of several
/// slots; a key written through `a` is read through `b`; a blocking read
/// (a dedicated connection) on `a` is woken by a push through `b`.
fn share(a: &Herald, b: &Herald) {
    let chans: [&[u8]; 4] = [b"news", b"sport", b"weather", b"x"];
    let mut sub = Raw::backend(b.resp, "pw");
    for c in chans {
        sub.cmd(&[b"SUBSCRIBE", c]);
    }
    let mut p = Raw::backend(a.resp, "pw");
    for c in chans {
        let r = p.cmd(&[b"PUBLISH", c, b"hello"]);
        assert_eq!(r, b":0\r\n", "{}", show(&r));
        let f = sub.frame();
        assert!(f.ends_with(b"hello\r\n"), "{}", show(&f));
    }
    let mut d = Raw::backend(b.resp, "pw");
    for c in chans {
        assert_eq!(p.cmd(&[b"SET", c, c]), b"+OK\r\n");
        let r = d.cmd(&[b"GET", c]);
        assert!(r.ends_with(&[c, b"\r\n"].concat()), "{}", show(&r));
    }
    p.send(&[b"BLPOP", b"list", b"5"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.cmd(&[b"RPUSH", b"list", b"x"]), b":1\r\n");
    let r = p.frame();
    assert_eq!(r, b"*2\r\n$4\r\nlist\r\n$1\r\nx\r\n", "{}", show(&r));
}

#[test]
fn nodes_on_tls_redis_share_publishes_history_and_data() {
    let certs = TestCerts::make("share");
    let redis = Redis::start_tls(&certs, "server", "no");
    let url = format!("rediss://{}", redis.addr);
    let ca = certs.path("ca.pem");
    // The CA by flag on one node, by the TOML key on the other.
    let (_d1, cfg) = temp_config("tls-a", CONFIG);
    let (_d2, cfg_b) = temp_config("tls-b", &format!("engine_tls_ca = {ca:?}\n{CONFIG}"));
    let a = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    let b = node(&url, &cfg_b, &[], &[]);
    assert!(
        a.drain_log()
            .iter()
            .any(|l| l.contains("engine: TLS to Redis")),
        "the log says TLS"
    );

    let mut sub = Raw::backend(b.resp, "pw");
    sub.cmd(&[b"SUBSCRIBE", b"news"]);
    let mut p = Raw::backend(a.resp, "pw");
    for i in 0..20 {
        // The reply counts this node's receivers: none.
        let r = p.cmd(&[b"PUBLISH", b"news", format!("m{i}").as_bytes()]);
        assert_eq!(r, b":0\r\n", "{}", show(&r));
    }
    for i in 0..20 {
        let f = sub.frame();
        assert!(f.ends_with(format!("m{i}\r\n").as_bytes()), "{}", show(&f));
    }

    // History: one sequence in Redis, read from the other node.
    let mut pb = Raw::backend(b.resp, "pw");
    for i in 0..3 {
        let c = if i % 2 == 0 { &mut p } else { &mut pb };
        c.cmd(&[b"PUBLISH", b"chat:1", format!("{i}").as_bytes()]);
    }
    assert_eq!(
        redis_cli(&certs, &redis, &["XLEN", "herald:history:{chat:1}"]),
        "3"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tok = hs256(json!({"sub": "u", "exp": unix_now() + 600}), SECRET);
        let mut ws = ws_connect(b.http, Some(&tok)).await;
        let r = ws_call(&mut ws, 1, json!({"op": "history", "channel": "chat:1"})).await;
        let pubs = r["result"]["publications"]
            .as_array()
            .expect("pubs")
            .clone();
        let offsets: Vec<u64> = pubs.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, vec![1, 2, 3], "{r}");
    });

    // Data commands: shared, RESP3 and dedicated (blocking) connections.
    let mut c = Raw::backend(a.resp, "pw");
    assert_eq!(c.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let mut d = Raw::backend(b.resp, "pw");
    assert_eq!(d.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert_eq!(redis_cli(&certs, &redis, &["GET", "k"]), "v");
    let r = d.cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"pw"]);
    assert!(r.starts_with(b"%"), "{}", show(&r));
    assert_eq!(d.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let r = c.cmd(&[b"BLPOP", b"nothing", b"0.1"]);
    assert!(r == b"*-1\r\n" || r == b"_\r\n", "{}", show(&r));
    c.send(&[b"BLPOP", b"list", b"5"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.cmd(&[b"RPUSH", b"list", b"x"]), b":1\r\n");
    let r = c.frame();
    assert_eq!(r, b"*2\r\n$4\r\nlist\r\n$1\r\nx\r\n", "{}", show(&r));
}

#[test]
fn a_client_certificate_passes_tls_auth_clients() {
    let certs = TestCerts::make("mtls");
    let redis = Redis::start_tls(&certs, "server", "yes");
    let url = format!("rediss://{}", redis.addr);
    let (_d, cfg) = temp_config("tls-mtls", CONFIG);
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("client.pem"),
        certs.path("client.key"),
    );
    // By env variables this time.
    let h = node(
        &url,
        &cfg,
        &[],
        &[
            ("HERALD_ENGINE_TLS_CA", &ca),
            ("HERALD_ENGINE_TLS_CERT", &cert),
            ("HERALD_ENGINE_TLS_KEY", &key),
        ],
    );
    let mut s = Raw::backend(h.resp, "pw");
    s.cmd(&[b"SUBSCRIBE", b"x"]);
    let mut p = Raw::backend(h.resp, "pw");
    assert_eq!(p.cmd(&[b"PUBLISH", b"x", b"hi"]), b":1\r\n");
    assert!(s.frame().ends_with(b"hi\r\n"));
    assert_eq!(p.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");

    // Without the client certificate Redis ends the handshake.
    let out = refused(&["--engine", &url, "--engine-tls-ca", &ca], &[]);
    assert!(out.contains("engine"), "{out}");
    // A key that is not one.
    let out = refused(
        &[
            "--engine",
            &url,
            "--engine-tls-ca",
            &ca,
            "--engine-tls-cert",
            &cert,
            "--engine-tls-key",
            &ca,
        ],
        &[],
    );
    assert!(out.contains("private key"), "{out}");
}

#[test]
fn a_server_certificate_of_an_unknown_ca_or_another_name_is_refused() {
    let certs = TestCerts::make("refuse");
    let redis = Redis::start_tls(&certs, "server", "no");
    let url = format!("rediss://{}", redis.addr);
    // The system's roots do not know the test CA: Herald stops at start,
    // as with an unreachable Redis.
    let out = refused(&["--engine", &url], &[]);
    assert!(out.contains("UnknownIssuer"), "{out}");
    let elsewhere = Redis::start_tls(&certs, "elsewhere", "no");
    let out = refused(
        &[
            "--engine",
            &format!("rediss://{}", elsewhere.addr),
            "--engine-tls-ca",
            &certs.path("ca.pem"),
        ],
        &[],
    );
    assert!(out.contains("not valid for name"), "{out}");
    // A plain client on the TLS port gets nowhere either.
    let out = refused(&["--engine", &format!("redis://{}", redis.addr)], &[]);
    assert!(out.contains("engine"), "{out}");
}

#[test]
fn tls_settings_that_cannot_be_honoured_are_refused_at_start() {
    let certs = TestCerts::make("settings");
    let ca = certs.path("ca.pem");
    let port = free_port().to_string();
    let tls = format!("rediss://127.0.0.1:{port}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--engine".into(),
                format!("redis://127.0.0.1:{port}"),
                "--engine-tls-ca".into(),
                ca.clone(),
            ],
            "need a TLS engine URL",
        ),
        (
            vec!["--engine-tls-ca".into(), ca.clone()],
            "need a TLS engine URL",
        ),
        (
            vec!["--engine".into(), format!("{tls}/#insecure")],
            "insecure",
        ),
        (
            vec![
                "--engine".into(),
                tls.clone(),
                "--engine-tls-cert".into(),
                certs.path("client.pem"),
            ],
            "go together",
        ),
        (
            vec![
                "--engine".into(),
                tls.clone(),
                "--engine-tls-ca".into(),
                certs.path("nope.pem"),
            ],
            "nope.pem",
        ),
        (
            vec![
                "--engine".into(),
                tls.clone(),
                "--engine-tls-ca".into(),
                certs.path("ca.key"),
            ],
            "no PEM certificate",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = refused(&args, &[]);
        assert!(out.contains(want), "{args:?}: {out}");
    }
}

#[test]
fn rediss_cluster_reaches_every_master_over_tls() {
    let certs = TestCerts::make("cluster");
    let cluster = start_tls_cluster(&certs);
    let hosts: Vec<String> = cluster.masters.iter().map(|m| m.addr.to_string()).collect();
    let url = format!("rediss+cluster://{}", hosts.join(","));
    let (_d, cfg) = temp_config("tls-cluster", CONFIG);
    let ca = certs.path("ca.pem");
    let a = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    let b = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    share(&a, &b);
    let mut p = Raw::backend(a.resp, "pw");
    for i in 0..3 {
        p.cmd(&[b"PUBLISH", b"chat:1", format!("{i}").as_bytes()]);
    }
    let port = cluster.masters[0].addr.port();
    let len = tls_cli(&certs, port, &["-c", "XLEN", "herald:history:{chat:1}"]);
    assert_eq!(len, "3");
    // Plain TCP to the TLS ports gets nowhere.
    let out = refused(&["--engine", &format!("redis+cluster://{}", hosts[0])], &[]);
    assert!(out.contains("engine"), "{out}");
}

#[test]
fn rediss_sentinel_asks_the_sentinel_and_reaches_the_master_over_tls() {
    let certs = TestCerts::make("sentinel");
    let master = Redis::start_tls(&certs, "server", "no");
    let sentinel = TlsSentinel::start(&certs, master.addr.port());
    let url = format!("rediss+sentinel://{}/mymaster", sentinel.redis.addr);
    let (_d, cfg) = temp_config("tls-sentinel", CONFIG);
    let ca = certs.path("ca.pem");
    let a = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    let b = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    share(&a, &b);
    assert_eq!(redis_cli(&certs, &master, &["GET", "news"]), "news");
}

/// `GET /healthz` on a node: its status code.
fn healthz(h: &Herald) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(h.http).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn wait_healthz(h: &Herald, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(h) != want {
        assert!(Instant::now() < deadline, "healthz never became {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn after_a_tls_redis_restart_the_node_reconnects_over_tls() {
    let certs = TestCerts::make("restart");
    let mut redis = Redis::start_tls(&certs, "server", "no");
    let port = redis.addr.port();
    let url = format!("rediss://{}", redis.addr);
    let (_d, cfg) = temp_config("tls-restart", CONFIG);
    let ca = certs.path("ca.pem");
    let a = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    let b = node(&url, &cfg, &["--engine-tls-ca", &ca], &[]);
    wait_healthz(&a, 200);
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    wait_healthz(&a, 503);
    let _back = Redis::start_tls_on(port, &certs, "server", "no");
    wait_healthz(&a, 200);
    wait_healthz(&b, 200);
    share(&a, &b);
}

/// What a new engine connection costs over TLS (redis-rs also re-reads the
/// system's roots for each one): 200 connects and a PING each, TLS with
/// the CA against plain TCP. Prints the numbers; run with `--ignored`.
#[test]
#[ignore]
fn measure_connect_cost() {
    let certs = TestCerts::make("measure");
    let tls = Redis::start_tls(&certs, "server", "no");
    let plain = Redis::start(&[]);
    let ca = std::fs::read(certs.path("ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_client = redis::Client::build_with_tls(
            format!("rediss://{}", tls.addr),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )
        .unwrap();
        let plain_client = redis::Client::open(format!("redis://{}", plain.addr)).unwrap();
        for (name, client) in [("plain", &plain_client), ("tls", &tls_client)] {
            let t = Instant::now();
            for _ in 0..200 {
                let mut c = client.get_multiplexed_async_connection().await.unwrap();
                let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
            }
            println!("{name}: {:?} per connect + PING", t.elapsed() / 200);
        }
    });
}
