//! `compare`: starts Herald and a real `redis-server` on free loopback
//! ports, runs the RESP scenarios against both in interleaved rounds
//! (Herald round 1, Redis round 1, Herald round 2, …), plus Herald-only
//! WebSocket rows, and prints every run's JSON line followed by a markdown
//! table of medians and Herald/Redis ratios (all on stdout).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::fanout::{self, FanoutOpts};
use crate::publish::Target;
use crate::report::{self, Report};
use crate::ws::{self, IdleOpts, Protocol, RecoveryOpts, WsFanoutOpts};
use crate::{sys, TIMEOUT};

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// herald binary [default: `herald` next to this executable].
    #[arg(long)]
    herald: Option<PathBuf>,
    /// Rounds per server (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per timed run [default: 5, 0.3 with --quick].
    #[arg(long, value_parser = crate::secs)]
    duration: Option<Duration>,
    /// Tiny sizes for a smoke test (2 subscribers, 20 patterns, …).
    #[arg(long)]
    quick: bool,
    /// Subscribers in the RESP fanout runs [default: 100].
    #[arg(long)]
    subscribers: Option<usize>,
    /// Publisher connections in the throughput runs.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// PUBLISH commands in flight per publisher in the throughput runs.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Idle patterns in the patterns run [default: 10000].
    #[arg(long)]
    patterns: Option<usize>,
    /// Offered publishes/s of the latency runs, comma-separated (one run
    /// per rate) [default: 5000,20000; 200 with --quick].
    #[arg(long, value_delimiter = ',')]
    latency_rate: Option<Vec<f64>>,
    /// WebSocket subscribers in the Herald-only ws-fanout row [default: 1000].
    #[arg(long)]
    ws_subscribers: Option<usize>,
    /// Idle WebSocket connections in the Herald-only memory row [default: 5000].
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Missed messages in the Herald-only recovery row [default: 10000].
    #[arg(long)]
    missed: Option<u64>,
    /// Deliveries in flight per subscriber before publishers pause.
    #[arg(long, default_value_t = 1000)]
    max_lag: u64,
    /// Skip the Redis runs (Herald rows only).
    #[arg(long)]
    no_redis: bool,
}

/// The sizes of one compare run, defaults and `--quick` applied.
#[derive(Clone, Debug)]
struct Sizes {
    duration: Duration,
    subscribers: usize,
    patterns: usize,
    latency_rates: Vec<f64>,
    ws_subscribers: usize,
    idle_conns: usize,
    missed: u64,
    hold: Duration,
}

impl Sizes {
    fn from(a: &CompareArgs) -> Sizes {
        let q = a.quick;
        Sizes {
            duration: a
                .duration
                .unwrap_or(Duration::from_millis(if q { 300 } else { 5000 })),
            subscribers: a.subscribers.unwrap_or(if q { 2 } else { 100 }),
            patterns: a.patterns.unwrap_or(if q { 20 } else { 10_000 }),
            latency_rates: a.latency_rate.clone().unwrap_or_else(|| {
                if q {
                    vec![200.0]
                } else {
                    vec![5_000.0, 20_000.0]
                }
            }),
            ws_subscribers: a.ws_subscribers.unwrap_or(if q { 3 } else { 1000 }),
            idle_conns: a.idle_conns.unwrap_or(if q { 5 } else { 5000 }),
            missed: a.missed.unwrap_or(if q { 50 } else { 10_000 }),
            hold: Duration::from_millis(if q { 200 } else { 2000 }),
        }
    }
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    resp: SocketAddr,
    http: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The value of `name=ADDR` in a log line.
fn log_field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn start_herald(bin: &Path, config: &Path) -> Result<Server> {
    // `herald=info` keeps the "herald listening" line (logged at info) while
    // everything else stays at warn.
    let mut child = Command::new(bin)
        .args([
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log",
            "warn,herald=info",
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let (tx, rx) = mpsc::channel();
    // Herald logs to stdout (stderr is scanned too, in case that changes);
    // its lines go to our stderr so they never mix with the JSON lines.
    let stdout = child.stdout.take().context("no herald stdout")?;
    let stderr = child.stderr.take().context("no herald stderr")?;
    fn forward(r: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if line.contains("herald listening") {
                    let _ = tx.send(line);
                } else {
                    eprintln!("[herald] {line}");
                }
            }
        });
    }
    forward(stdout, tx.clone());
    forward(stderr, tx);
    let mut server = Server {
        child,
        resp: "0.0.0.0:0".parse()?,
        http: None,
    };
    let line = rx.recv_timeout(TIMEOUT).map_err(|_| {
        anyhow!("herald did not log `herald listening resp=… http=…` within {TIMEOUT:?}")
    })?;
    server.resp = log_field(&line, "resp").context("no resp= in herald's listening line")?;
    server.http = Some(log_field(&line, "http").context("no http= in herald's listening line")?);
    Ok(server)
}

fn start_redis(bin: &Path) -> Result<Server> {
    let port = free_port()?;
    let child = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut server = Server {
        child,
        resp: SocketAddr::from(([127, 0, 0, 1], port)),
        http: None,
    };
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(mut s) = TcpStream::connect(server.resp) {
            s.set_read_timeout(Some(TIMEOUT))?;
            s.write_all(b"PING\r\n")?;
            let mut b = [0u8; 7];
            if s.read_exact(&mut b).is_ok() && &b == b"+PONG\r\n" {
                return Ok(server);
            }
        }
        if let Some(st) = server.child.try_wait()? {
            bail!("redis-server exited at start: {st}");
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer PING within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first three fields of `/proc/loadavg` (other work on the machine
/// skews every number, so the table shows it).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

/// First line of `bin --version`.
fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs one scenario, prints its JSON line (tagged with label, server and
/// round) and keeps it; a failure is printed as a JSON line with `error`.
async fn record(
    results: &mut BTreeMap<(String, String), Vec<Report>>,
    label: &str,
    server: &str,
    round: usize,
    pid: Option<u32>,
    fut: impl std::future::Future<Output = Result<Report>>,
) {
    let cpu = |p: &str| sys::cpu_seconds(p).ok();
    let server_cpu0 = pid.and_then(|p| cpu(&p.to_string()));
    let bench_cpu0 = cpu("self");
    let result = fut.await;
    let server_cpu1 = pid.and_then(|p| cpu(&p.to_string()));
    let bench_cpu1 = cpu("self");
    let mut rep = match result {
        Ok(r) => r,
        Err(e) => {
            let mut r = Report::new(label);
            r.set("error", format!("{e:#}"));
            r.set("run_failed", true);
            r
        }
    };
    if let (Some(a), Some(b)) = (server_cpu0, server_cpu1) {
        let ms = (b - a) * 1000.0;
        rep.set_f("server_cpu_ms", ms);
        // Server CPU per unit of work: comparable even when the client or
        // the machine, not the server, limits the rates.
        let received = rep.f64("received");
        if received > 0.0 {
            rep.set(
                "server_cpu_us_per_1k_deliveries",
                report::round(ms * 1e6 / received, 2),
            );
        }
        let published = rep.f64("published");
        if published > 0.0 {
            rep.set(
                "server_cpu_us_per_publish",
                report::round(ms * 1e3 / published, 3),
            );
        }
    }
    if let (Some(a), Some(b)) = (bench_cpu0, bench_cpu1) {
        rep.set_f("bench_cpu_ms", (b - a) * 1000.0);
    }
    rep.set("label", label)
        .set("server_name", server)
        .set("round", round);
    println!("{}", rep.line());
    let _ = std::io::stdout().flush();
    results
        .entry((label.to_owned(), server.to_owned()))
        .or_default()
        .push(rep);
    // Let sockets of the finished run close before the next one starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn fanout_opts(a: &CompareArgs, s: &Sizes, addr: SocketAddr, prefix: &str) -> FanoutOpts {
    FanoutOpts {
        addr,
        subscribers: s.subscribers,
        publishers: a.publishers,
        payload: a.payload,
        duration: s.duration,
        channels: 1,
        pipeline: a.pipeline,
        rate: None,
        max_lag: a.max_lag,
        idle_patterns: 0,
        prefix: prefix.into(),
    }
}

/// Runs the RESP scenarios of one round against one server.
async fn resp_round(
    results: &mut BTreeMap<(String, String), Vec<Report>>,
    a: &CompareArgs,
    s: &Sizes,
    name: &str,
    srv: &Server,
    round: usize,
) {
    let addr = srv.resp;
    let pid = Some(srv.child.id());
    let o = fanout_opts(a, s, addr, &format!("bench.fanout.r{round}"));
    record(
        results,
        "fanout",
        name,
        round,
        pid,
        fanout::run(&o, "fanout"),
    )
    .await;

    let o = FanoutOpts {
        subscribers: 1,
        idle_patterns: s.patterns,
        prefix: format!("bench.patterns.r{round}"),
        ..fanout_opts(a, s, addr, "")
    };
    record(
        results,
        "patterns",
        name,
        round,
        pid,
        fanout::run(&o, "patterns"),
    )
    .await;

    for &rate in &s.latency_rates {
        let o = FanoutOpts {
            rate: Some(rate),
            publishers: 1,
            pipeline: 1,
            prefix: format!("bench.latency.r{round}"),
            ..fanout_opts(a, s, addr, "")
        };
        let label = latency_label(rate);
        record(results, &label, name, round, pid, fanout::run(&o, "fanout")).await;
    }
}

/// Runs the Herald-only WebSocket scenarios of one round.
async fn herald_round(
    results: &mut BTreeMap<(String, String), Vec<Report>>,
    a: &CompareArgs,
    s: &Sizes,
    herald: &Server,
    bin: &Path,
    config: &Path,
    round: usize,
) {
    let http = herald.http.unwrap_or(herald.resp);
    let pid = Some(herald.child.id());
    let url = format!("ws://{http}/ws");
    let o = WsFanoutOpts {
        url: url.clone(),
        subscribers: s.ws_subscribers,
        duration: s.duration,
        target: Target::Resp(herald.resp),
        payload: a.payload,
        protocol: Protocol::Herald,
        channel: format!("bench.ws.r{round}"),
        publishers: 1,
        pipeline: a.pipeline,
        rate: None,
        max_lag: a.max_lag,
    };
    record(results, "ws-fanout", "herald", round, pid, ws::fanout(&o)).await;

    let o = RecoveryOpts {
        url,
        resp: herald.resp,
        channel: format!("bench:recovery:r{round}"),
        missed: s.missed,
        payload: a.payload,
    };
    record(results, "recovery", "herald", round, pid, ws::recovery(&o)).await;

    // Idle connections are measured on a fresh process, so memory freed by
    // earlier runs and kept by the allocator does not hide their cost.
    let idle = async {
        let fresh = tokio::task::block_in_place(|| start_herald(bin, config))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let o = IdleOpts {
            url: format!("ws://{}/ws", fresh.http.unwrap_or(fresh.resp)),
            connections: s.idle_conns,
            pid: Some(fresh.child.id()),
            hold: s.hold,
        };
        let r = ws::idle(&o).await;
        drop(fresh);
        r
    };
    record(results, "idle-conns", "herald", round, None, idle).await;
}

/// The result label of a latency run at `rate` publishes/s.
fn latency_label(rate: f64) -> String {
    format!("latency@{rate}")
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `1234567.8` → `1,234,568`; small values keep one decimal.
fn fmt_num(v: f64) -> String {
    if v.abs() < 100.0 && v.fract() != 0.0 {
        return format!("{v:.1}");
    }
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

struct Table<'a> {
    results: &'a BTreeMap<(String, String), Vec<Report>>,
}

impl Table<'_> {
    fn reports(&self, label: &str, server: &str) -> &[Report] {
        self.results
            .get(&(label.to_owned(), server.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The median of `field` over the successful runs.
    fn med(&self, label: &str, server: &str, field: &str) -> Option<f64> {
        median(
            self.reports(label, server)
                .iter()
                .filter(|r| !r.0.contains_key("run_failed"))
                .filter_map(|r| r.0.get(field).and_then(Value::as_f64))
                .collect(),
        )
    }

    fn sum(&self, label: &str, server: &str, field: &str) -> f64 {
        self.reports(label, server)
            .iter()
            .map(|r| r.f64(field))
            .sum()
    }

    fn failures(&self, label: &str, server: &str) -> usize {
        self.reports(label, server)
            .iter()
            .filter(|r| r.0.contains_key("run_failed"))
            .count()
    }

    fn cell(&self, label: &str, server: &str, field: &str) -> String {
        match self.med(label, server, field) {
            Some(v) => fmt_num(v),
            None if self.failures(label, server) > 0 => "failed".into(),
            None => "–".into(),
        }
    }

    /// A Herald vs Redis row: medians and the Herald/Redis ratio.
    fn row(&self, what: &str, label: &str, field: &str, higher_better: bool) -> String {
        let h = self.med(label, "herald", field);
        let r = self.med(label, "redis", field);
        let ratio = match (h, r) {
            (Some(h), Some(r)) if r > 0.0 => format!("{:.2}×", h / r),
            _ => "–".into(),
        };
        format!(
            "| {what} | {} | {} | {ratio} | {} |",
            self.cell(label, "herald", field),
            self.cell(label, "redis", field),
            if higher_better { "higher" } else { "lower" }
        )
    }
}

fn print_table(
    a: &CompareArgs,
    s: &Sizes,
    results: &BTreeMap<(String, String), Vec<Report>>,
    herald_version: &str,
    redis_version: &str,
    load: (&str, &str),
) {
    let t = Table { results };
    let secs = s.duration.as_secs_f64();
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(String::new());
    line(format!(
        "## herald-bench compare: {} round(s), {secs} s per timed run, medians",
        a.rounds
    ));
    line(String::new());
    line(format!(
        "Herald: `{herald_version}`; Redis: `{redis_version}` (default config, persistence off)."
    ));
    line(String::new());
    line(format!(
        "Load average (1, 5, 15 min) at start: {}; at end: {}.",
        load.0, load.1
    ));
    line(String::new());
    line("| scenario | Herald | Redis | Herald/Redis | better |".into());
    line("| --- | ---: | ---: | ---: | --- |".into());
    let fan = format!(
        "fanout {} subs, {} B, {} pubs × pipeline {}",
        s.subscribers, a.payload, a.publishers, a.pipeline
    );
    line(t.row(
        &format!("{fan}: deliveries/s"),
        "fanout",
        "deliveries_per_sec",
        true,
    ));
    line(t.row(
        &format!("{fan}: publishes/s"),
        "fanout",
        "publishes_per_sec",
        true,
    ));
    line(t.row(
        &format!("{fan}: server CPU µs per 1,000 deliveries"),
        "fanout",
        "server_cpu_us_per_1k_deliveries",
        false,
    ));
    line(t.row(
        &format!("{fan}: p99 µs (saturated)"),
        "fanout",
        "p99_us",
        false,
    ));
    let pat = format!("publish with {} idle patterns", fmt_num(s.patterns as f64));
    line(t.row(
        &format!("{pat}: publishes/s"),
        "patterns",
        "publishes_per_sec",
        true,
    ));
    line(t.row(
        &format!("{pat}: server CPU µs per publish"),
        "patterns",
        "server_cpu_us_per_publish",
        false,
    ));
    let mut resp_labels = vec!["fanout".to_owned(), "patterns".to_owned()];
    for &rate in &s.latency_rates {
        let label = latency_label(rate);
        let lat = format!(
            "{} pub/s offered × {} subs (1 pub, no pipeline)",
            fmt_num(rate),
            s.subscribers
        );
        line(t.row(
            &format!("{lat}: achieved publishes/s"),
            &label,
            "publishes_per_sec",
            true,
        ));
        line(t.row(&format!("{lat}: p50 µs"), &label, "p50_us", false));
        line(t.row(&format!("{lat}: p99 µs"), &label, "p99_us", false));
        line(t.row(&format!("{lat}: p99.9 µs"), &label, "p999_us", false));
        resp_labels.push(label);
    }
    let lost = |srv: &str| -> f64 { resp_labels.iter().map(|l| t.sum(l, srv, "lost")).sum() };
    line(format!(
        "| lost deliveries, all RESP runs (sum) | {} | {} | – | lower |",
        fmt_num(lost("herald")),
        fmt_num(lost("redis"))
    ));
    line(String::new());
    line("Herald only:".into());
    line(String::new());
    line("| scenario | metric | median |".into());
    line("| --- | --- | ---: |".into());
    let wsf = format!(
        "ws-fanout {} WebSocket subs, {} B, RESP publish",
        s.ws_subscribers, a.payload
    );
    line(format!(
        "| {wsf} | deliveries/s | {} |",
        t.cell("ws-fanout", "herald", "deliveries_per_sec")
    ));
    line(format!(
        "| {wsf} | p99 µs | {} |",
        t.cell("ws-fanout", "herald", "p99_us")
    ));
    line(format!(
        "| {wsf} | lost (sum) | {} |",
        fmt_num(t.sum("ws-fanout", "herald", "lost"))
    ));
    let idle = format!("idle-conns {} WebSocket connections", s.idle_conns);
    line(format!(
        "| {idle} | RSS per connection (bytes) | {} |",
        t.cell("idle-conns", "herald", "rss_per_conn_bytes")
    ));
    let rec = format!(
        "recovery after {} missed messages",
        fmt_num(s.missed as f64)
    );
    line(format!(
        "| {rec} | time to last replayed message (ms) | {} |",
        t.cell("recovery", "herald", "recover_ms")
    ));
    line(format!(
        "| {rec} | longest pause between replayed messages (ms) | {} |",
        t.cell("recovery", "herald", "max_gap_ms")
    ));
    line(format!(
        "| {rec} | lost (sum) | {} |",
        fmt_num(t.sum("recovery", "herald", "lost"))
    ));
    print!("{out}");
    let _ = std::io::stdout().flush();
}

pub async fn run(a: CompareArgs) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let s = Sizes::from(&a);
    let nofile = sys::raise_nofile();
    if let Some(n) = nofile {
        if (s.idle_conns.max(s.ws_subscribers) as u64) + 256 > n {
            bail!(
                "RLIMIT_NOFILE is {n}: too low for {} connections; raise `ulimit -n`",
                s.idle_conns.max(s.ws_subscribers)
            );
        }
    }
    let herald_bin = match &a.herald {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for the current executable")?
            .join("herald"),
    };
    if !herald_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --herald",
            herald_bin.display()
        );
    }
    let config = std::env::temp_dir().join(format!("herald-bench-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "max_connections = {}\n\n[namespaces.bench]\nhistory_size = {}\n",
            (s.idle_conns.max(s.ws_subscribers) + 1000).max(10_000),
            s.missed.max(100_000)
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(config.clone());

    let herald_version = version(&herald_bin);
    let redis_version = if a.no_redis {
        "not run".into()
    } else {
        version(&a.redis_server)
    };
    let herald = tokio::task::block_in_place(|| start_herald(&herald_bin, &config))?;
    let redis = if a.no_redis {
        None
    } else {
        Some(tokio::task::block_in_place(|| {
            start_redis(&a.redis_server)
        })?)
    };
    eprintln!(
        "herald-bench compare: herald resp={} http={:?}, redis {:?}, {} round(s)",
        herald.resp,
        herald.http,
        redis.as_ref().map(|r| r.resp),
        a.rounds
    );

    let load_start = loadavg();
    let mut results = BTreeMap::new();
    for round in 1..=a.rounds {
        resp_round(&mut results, &a, &s, "herald", &herald, round).await;
        if let Some(r) = &redis {
            resp_round(&mut results, &a, &s, "redis", r, round).await;
        }
        herald_round(&mut results, &a, &s, &herald, &herald_bin, &config, round).await;
    }
    drop(redis);
    drop(herald);
    print_table(
        &a,
        &s,
        &results,
        &herald_version,
        &redis_version,
        (&load_start, &loadavg()),
    );
    Ok(())
}
