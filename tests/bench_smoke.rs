//! Smoke runs of every `herald-bench` scenario with tiny sizes, against a
//! Herald started here and a real `redis-server`. Only the shape of the
//! output is checked (one JSON line with the standard fields) and that
//! nothing is lost where delivery is reliable: no timing assertions.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Herald, Redis};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_herald-bench");
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const FIELDS: [&str; 6] = [
    "deliveries_per_sec",
    "publishes_per_sec",
    "p50_us",
    "p99_us",
    "p999_us",
    "lost",
];

/// Runs herald-bench with `args` (killed after `RUN_TIMEOUT`) and returns
/// its stdout; panics unless it exits successfully.
fn run(args: &[&str]) -> String {
    let mut child = Command::new(BENCH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start herald-bench");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald-bench {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(
        status.success(),
        "herald-bench {args:?} failed ({status}):\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// Checks that `v` is a report with every standard field, numeric.
fn check_fields(v: &Value, what: &str) {
    for f in FIELDS {
        assert!(
            v.get(f).is_some_and(Value::is_number),
            "{what}: field {f} missing or not a number in {v}"
        );
    }
    assert!(v.get("error").is_none(), "{what}: reported an error: {v}");
}

/// Runs one scenario that must print exactly one JSON line.
fn scenario(args: &[&str]) -> Value {
    let out = run(args);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?} printed {} lines:\n{out}",
        lines.len()
    );
    let v: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("{args:?} printed invalid JSON ({e}): {out}"));
    check_fields(&v, &format!("{args:?}"));
    v
}

fn lost(v: &Value) -> u64 {
    v["lost"].as_u64().expect("lost is an integer")
}

fn config_file(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "herald-bench-smoke-{tag}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, "[namespaces.bench]\nhistory_size = 100000\n").unwrap();
    path
}

#[test]
fn resp_scenarios_against_herald_and_redis() {
    let cfg = config_file("resp");
    let herald = Herald::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--log",
        "warn,herald=info",
    ]);
    let redis = Redis::start(&[]);
    for (name, addr) in [("herald", herald.resp), ("redis", redis.addr)] {
        let addr = addr.to_string();
        let v = scenario(&[
            "fanout",
            "--resp",
            &addr,
            "--subscribers",
            "2",
            "--publishers",
            "1",
            "--payload",
            "32",
            "--duration",
            "0.3",
        ]);
        assert_eq!(lost(&v), 0, "{name} fanout lost messages: {v}");
        assert!(v["published"].as_u64().unwrap() > 0, "{name}: {v}");
        assert_eq!(v["received"], v["expected"], "{name}: {v}");

        // Several channels, rate-limited, no pipelining.
        let v = scenario(&[
            "fanout",
            "--resp",
            &addr,
            "--subscribers",
            "3",
            "--publishers",
            "2",
            "--channels",
            "2",
            "--pipeline",
            "1",
            "--rate",
            "500",
            "--duration",
            "0.3",
        ]);
        assert_eq!(lost(&v), 0, "{name} rate-limited fanout lost messages: {v}");

        let v = scenario(&[
            "patterns",
            "--resp",
            &addr,
            "--patterns",
            "20",
            "--duration",
            "0.3",
            "--publishers",
            "1",
        ]);
        assert_eq!(lost(&v), 0, "{name} patterns lost messages: {v}");
        assert_eq!(v["patterns"], 20, "{v}");

        let v = scenario(&[
            "zset",
            "--resp",
            &addr,
            "--members",
            "1000",
            "--batch",
            "300",
            "--duration",
            "0.2",
        ]);
        assert_eq!(lost(&v), 0, "{name} zset: members not found: {v}");
        assert_eq!(v["errors"], 0, "{name} zset errors: {v}");
        assert_eq!(v["members"], 1000, "{v}");
        assert!(v["zincrby_ops"].as_u64().unwrap() > 0, "{name}: {v}");
        assert!(v["zrevrank_ops"].as_u64().unwrap() > 0, "{name}: {v}");
        assert!(v["zincrby_per_sec"].is_number(), "{v}");
        assert!(v["zrevrank_p99_us"].is_number(), "{v}");
    }
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn websocket_scenarios_against_herald() {
    let cfg = config_file("ws");
    let herald = Herald::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--log",
        "warn,herald=info",
    ]);
    let url = format!("ws://{}/ws", herald.http);
    let resp = herald.resp.to_string();
    let http = herald.http.to_string();

    for via in [["--resp", resp.as_str()], ["--http", http.as_str()]] {
        let v = scenario(&[
            "ws-fanout",
            "--ws",
            &url,
            "--subscribers",
            "3",
            "--duration",
            "0.3",
            via[0],
            via[1],
        ]);
        assert_eq!(lost(&v), 0, "ws-fanout via {via:?} lost messages: {v}");
        assert!(v["received"].as_u64().unwrap() > 0, "{v}");
    }

    let pid = herald.pid().to_string();
    let v = scenario(&[
        "idle-conns",
        "--ws",
        &url,
        "--connections",
        "5",
        "--pid",
        &pid,
        "--hold",
        "0.2",
    ]);
    assert_eq!(v["connections"], 5, "{v}");
    assert!(v["rss_per_conn_bytes"].is_number(), "{v}");

    // Subscribed idle connections; several pids are summed.
    let both = format!("{pid},{pid}");
    let v = scenario(&[
        "idle-conns",
        "--ws",
        &url,
        "--connections",
        "4",
        "--pid",
        &both,
        "--hold",
        "0.1",
        "--subscribe",
        "bench.idle",
    ]);
    assert_eq!(v["connections"], 4, "{v}");
    assert_eq!(v["subscribed_to"], "bench.idle", "{v}");
    assert!(v["rss_per_conn_bytes"].is_number(), "{v}");

    let v = scenario(&[
        "recovery",
        "--ws",
        &url,
        "--resp",
        &resp,
        "--channel",
        "bench:recovery",
        "--missed",
        "50",
    ]);
    assert_eq!(lost(&v), 0, "recovery lost messages: {v}");
    assert_eq!(v["recovered"], 50, "{v}");
    assert_eq!(v["recovered_flag"], true, "{v}");
    assert!(v["recover_ms"].is_number(), "{v}");
    let _ = std::fs::remove_file(cfg);
}

/// Whether nginx and its nchan module are installed where `compare`
/// looks by default (the nchan rows are skipped otherwise).
fn nchan_installed() -> bool {
    std::path::Path::new("/usr/sbin/nginx").is_file()
        && std::path::Path::new("/usr/lib/nginx/modules/ngx_nchan_module.so").is_file()
}

#[test]
fn compare_quick() {
    let out = run(&[
        "compare",
        "--quick",
        "--rounds",
        "1",
        "--herald",
        env!("CARGO_BIN_EXE_herald"),
        "--redis-server",
        "/usr/bin/redis-server",
    ]);
    let reports: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON line ({e}): {l}")))
        .collect();
    let mut seen = Vec::new();
    for v in &reports {
        let label = v["label"].as_str().expect("label").to_owned();
        let server = v["server_name"].as_str().expect("server_name").to_owned();
        check_fields(v, &format!("compare {label} on {server}"));
        if label != "idle-conns" {
            assert_eq!(lost(v), 0, "compare {label} on {server} lost messages: {v}");
        }
        seen.push(format!("{label}/{server}"));
    }
    seen.sort();
    let mut want = vec![
        "fanout/herald",
        "fanout/redis",
        "idle-conns-sub/herald",
        "idle-conns/herald",
        "latency@200/herald",
        "latency@200/redis",
        "patterns/herald",
        "patterns/redis",
        "recovery/herald",
        "ws-fanout/herald",
        "zset/herald",
        "zset/redis",
    ];
    if nchan_installed() {
        want.extend(["idle-conns/nchan", "ws-fanout/nchan"]);
    } else {
        assert!(out.contains("nchan: **not run**"), "{out}");
    }
    want.sort();
    assert_eq!(seen, want, "{out}");
    assert!(
        out.contains("| scenario | Herald | Redis | Herald/Redis | better | target | met |"),
        "{out}"
    );
    assert!(
        out.contains("| scenario | Herald | nchan | Herald/nchan | better | target | met |"),
        "{out}"
    );
    assert!(out.contains("### Herald only"), "{out}");
}

/// `compare` without nginx (as on a machine where it is not installed):
/// the nchan rows are skipped with a note, everything else runs.
#[test]
fn compare_quick_without_nchan() {
    let out = run(&[
        "compare",
        "--quick",
        "--rounds",
        "1",
        "--only",
        "ws-fanout,idle",
        "--herald",
        env!("CARGO_BIN_EXE_herald"),
        "--redis-server",
        "/usr/bin/redis-server",
        "--nginx",
        "/nonexistent/nginx",
    ]);
    let mut seen: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            check_fields(&v, l);
            format!(
                "{}/{}",
                v["label"].as_str().unwrap(),
                v["server_name"].as_str().unwrap()
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "idle-conns-sub/herald",
            "idle-conns/herald",
            "ws-fanout/herald"
        ],
        "{out}"
    );
    assert!(out.contains("nchan: **not run** (nginx not found"), "{out}");
}

#[test]
fn kv_memory_reports_per_entry_costs() {
    let v = scenario(&[
        "kv-memory",
        "--strings",
        "20000",
        "--hashes",
        "2000",
        "--fields",
        "10",
        "--lists",
        "2000",
        "--elements",
        "10",
        "--herald",
        env!("CARGO_BIN_EXE_herald"),
        "--redis-server",
        "/usr/bin/redis-server",
    ]);
    for f in [
        "herald_rss_per_string_key_bytes",
        "redis_rss_per_string_key_bytes",
        "herald_rss_per_string_key_ttl_bytes",
        "redis_rss_per_string_key_ttl_bytes",
        "herald_rss_per_hash_field_bytes",
        "redis_rss_per_hash_field_bytes",
        "string_key_ratio_herald_to_redis",
        "hash_field_ratio_herald_to_redis",
        "herald_rss_per_list_element_bytes",
        "redis_rss_per_list_element_bytes",
        "list_element_ratio_herald_to_redis",
    ] {
        assert!(v[f].is_number(), "{f} missing in {v}");
    }
    // Small counts: the figures are rough, but the loads must have landed.
    assert!(
        v["herald_rss_per_string_key_bytes"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}

/// `herald-bench engine` runs end to end: three nodes on one Redis beside
/// one node, every measurement reported, nothing lost (short runs: the
/// figures themselves are for docs/benchmarks.md).
#[test]
fn engine_scenario_runs_three_nodes_on_redis() {
    let out = run(&[
        "engine",
        "--duration",
        "0.5",
        "--subscribers",
        "20",
        "--channels",
        "4",
        "--publishers",
        "2",
        "--rate",
        "500",
        "--herald",
        env!("CARGO_BIN_EXE_herald"),
        "--redis-server",
        "/usr/bin/redis-server",
    ]);
    let reports: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON ({e}): {l}")))
        .collect();
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "engine-fanout",
            "engine-latency",
            "engine-history-herald",
            "engine-history-redis-script",
            "single-fanout",
            "single-latency",
            "engine-summary"
        ],
        "{out}"
    );
    for r in &reports[..6] {
        check_fields(r, r["scenario"].as_str().unwrap_or(""));
        assert_eq!(lost(r), 0, "{r}");
        assert_eq!(r["publish_errors"], 0, "{r}");
    }
    let s = &reports[6];
    for f in [
        "cross_node_deliveries_per_sec",
        "single_node_deliveries_per_sec",
        "herald_history_publishes_per_sec",
        "redis_script_publishes_per_sec",
        "history_ratio_herald_to_redis",
    ] {
        assert!(s[f].as_f64().is_some_and(|v| v > 0.0), "{f} in {s}");
    }
}
