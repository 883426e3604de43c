//! `compare`: starts Herald, a real `redis-server` and (where installed)
//! nginx with the nchan module on free loopback ports, runs the RESP
//! scenarios against Herald and Redis and the WebSocket scenarios against
//! Herald and nchan in interleaved rounds (Herald round 1, peer round 1,
//! Herald round 2, …), plus Herald-only rows, and prints every run's JSON
//! line followed by markdown tables of medians, Herald/peer ratios and the
//! targets (all on stdout). Every round starts fresh server processes
//! (Herald again before its WebSocket runs), so no run inherits state
//! from an earlier one.

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
use crate::nchan::{NchanConfig, Nginx};
use crate::publish::Target;
use crate::report::{self, Report};
use crate::ws::{self, IdleOpts, Protocol, RecoveryOpts, WsFanoutOpts};
use crate::zset::{self, ZsetOpts};
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
    /// Seconds per timed run (and per zset phase) [default: 5, 0.3 with --quick].
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
    /// Members of the sorted set of the zset runs [default: 1000000; 1000
    /// with --quick].
    #[arg(long)]
    zset_members: Option<u64>,
    /// Connections of the zset runs.
    #[arg(long, default_value_t = 2)]
    zset_connections: usize,
    /// Commands in flight per connection in the zset runs.
    #[arg(long, default_value_t = 32)]
    zset_pipeline: usize,
    /// WebSocket subscribers in the ws-fanout runs [default: 10000].
    #[arg(long)]
    ws_subscribers: Option<usize>,
    /// Deliveries in flight per WebSocket subscriber before the publisher
    /// pauses, in the ws-fanout runs.
    #[arg(long, default_value_t = 100)]
    ws_max_lag: u64,
    /// Idle WebSocket connections in the memory runs [default: 10000].
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Missed messages in the Herald-only recovery row [default: 10000].
    #[arg(long)]
    missed: Option<u64>,
    /// Deliveries in flight per subscriber before publishers pause (RESP).
    #[arg(long, default_value_t = 1000)]
    max_lag: u64,
    /// Skip the Redis runs.
    #[arg(long)]
    no_redis: bool,
    /// nginx binary, run with the nchan module as the WebSocket peer.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// The nchan module (`load_module` in the generated nginx.conf).
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_nchan_module.so")]
    nchan_module: PathBuf,
    /// nginx worker processes [default: one per core].
    #[arg(long)]
    nchan_workers: Option<usize>,
    /// Skip the nchan runs (they are skipped anyway when nginx or the
    /// module is missing).
    #[arg(long)]
    no_nchan: bool,
    /// Run only these scenarios, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Scenario>,
}

/// The scenarios of `compare`, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Fanout,
    Patterns,
    Latency,
    Zset,
    WsFanout,
    Idle,
    Recovery,
}

impl CompareArgs {
    fn runs(&self, sc: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&sc)
    }
}

/// The sizes of one compare run, defaults and `--quick` applied.
#[derive(Clone, Debug)]
struct Sizes {
    duration: Duration,
    subscribers: usize,
    patterns: usize,
    latency_rates: Vec<f64>,
    zset_members: u64,
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
            zset_members: a.zset_members.unwrap_or(if q { 1000 } else { 1_000_000 }),
            ws_subscribers: a.ws_subscribers.unwrap_or(if q { 3 } else { 10_000 }),
            idle_conns: a.idle_conns.unwrap_or(if q { 5 } else { 10_000 }),
            missed: a.missed.unwrap_or(if q { 50 } else { 10_000 }),
            hold: Duration::from_millis(if q { 200 } else { 2000 }),
        }
    }
}

/// A server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub resp: SocketAddr,
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

pub fn start_herald(bin: &Path, config: &Path) -> Result<Server> {
    start_herald_with(bin, config, &[])
}

/// Starts Herald with `extra` arguments (an engine, a node name).
pub fn start_herald_with(bin: &Path, config: &Path, extra: &[&str]) -> Result<Server> {
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
        .args(extra)
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

pub fn start_redis(bin: &Path, extra: &[&str]) -> Result<Server> {
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
        .args(extra)
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

type Results = BTreeMap<(String, String), Vec<Report>>;

/// Runs one scenario, prints its JSON line (tagged with label, server and
/// round) and keeps it; a failure is printed as a JSON line with `error`.
/// `pids` are the server's processes, whose CPU time is summed.
async fn record(
    results: &mut Results,
    label: &str,
    server: &str,
    round: usize,
    pids: &[u32],
    fut: impl std::future::Future<Output = Result<Report>>,
) {
    let server_cpu = || {
        if pids.is_empty() {
            None
        } else {
            sys::cpu_seconds_of(pids)
        }
    };
    let server_cpu0 = server_cpu();
    let bench_cpu0 = sys::cpu_seconds("self").ok();
    let result = fut.await;
    let server_cpu1 = server_cpu();
    let bench_cpu1 = sys::cpu_seconds("self").ok();
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
        sub_addrs: Vec::new(),
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

/// Runs the RESP scenarios of one round against one server: fanout,
/// latency, zset, then patterns.
async fn resp_round(
    results: &mut Results,
    a: &CompareArgs,
    s: &Sizes,
    name: &str,
    srv: &Server,
    round: usize,
) {
    let addr = srv.resp;
    let pids = [srv.child.id()];
    if a.runs(Scenario::Fanout) {
        let o = fanout_opts(a, s, addr, &format!("bench.fanout.r{round}"));
        record(
            results,
            "fanout",
            name,
            round,
            &pids,
            fanout::run(&o, "fanout"),
        )
        .await;
    }

    let rates = if a.runs(Scenario::Latency) {
        s.latency_rates.as_slice()
    } else {
        &[]
    };
    for &rate in rates {
        let o = FanoutOpts {
            rate: Some(rate),
            publishers: 1,
            pipeline: 1,
            prefix: format!("bench.latency.r{round}"),
            ..fanout_opts(a, s, addr, "")
        };
        let label = latency_label(rate);
        record(
            results,
            &label,
            name,
            round,
            &pids,
            fanout::run(&o, "fanout"),
        )
        .await;
    }

    if a.runs(Scenario::Zset) {
        let o = ZsetOpts {
            addr,
            key: format!("bench.zset.r{round}"),
            members: s.zset_members,
            batch: 1000,
            duration: s.duration,
            connections: a.zset_connections,
            pipeline: a.zset_pipeline,
            pids: pids.to_vec(),
            keep: false,
        };
        record(results, "zset", name, round, &pids, zset::run(&o)).await;
    }

    // Last: patterns leave state behind (see `run`).
    if a.runs(Scenario::Patterns) {
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
            &pids,
            fanout::run(&o, "patterns"),
        )
        .await;
    }
}

/// What the WebSocket rounds need.
struct WsEnv<'a> {
    herald: &'a Server,
    herald_bin: &'a Path,
    config: &'a Path,
    /// The long-running nchan for ws-fanout, and its configuration (fresh
    /// instances are started for the memory runs).
    nchan: Option<(&'a Nginx, &'a NchanConfig)>,
}

/// After a run with thousands of connections: time for both sides to
/// close them before the next run.
async fn settle(conns: usize) {
    tokio::time::sleep(Duration::from_millis((conns as u64 / 10).min(1500))).await;
}

/// Runs the WebSocket scenarios of one round: ws-fanout against Herald and
/// nchan, idle connections against fresh instances of both, and Herald's
/// recovery.
async fn ws_round(
    results: &mut Results,
    a: &CompareArgs,
    s: &Sizes,
    env: &WsEnv<'_>,
    round: usize,
) {
    let herald = env.herald;
    let http = herald.http.unwrap_or(herald.resp);
    let pids = [herald.child.id()];
    // One channel name valid for both (nchan ids here are \w+).
    let channel = format!("bench_ws_r{round}");
    let base = WsFanoutOpts {
        url: format!("ws://{http}/ws"),
        subscribers: s.ws_subscribers,
        duration: s.duration,
        target: Target::HeraldHttp {
            addr: http,
            path: "/api/publish".into(),
        },
        payload: a.payload,
        protocol: Protocol::Herald,
        channel: channel.clone(),
        publishers: 1,
        pipeline: a.pipeline,
        rate: None,
        max_lag: a.ws_max_lag,
    };
    if a.runs(Scenario::WsFanout) {
        record(
            results,
            "ws-fanout",
            "herald",
            round,
            &pids,
            ws::fanout(&base),
        )
        .await;
        settle(s.ws_subscribers).await;
    }
    if let (Some((nginx, _)), true) = (env.nchan, a.runs(Scenario::WsFanout)) {
        let o = WsFanoutOpts {
            url: nginx.sub_url(&channel),
            target: Target::RawHttp {
                addr: nginx.addr,
                path: Nginx::pub_path(),
            },
            protocol: Protocol::Nchan,
            ..base.clone()
        };
        let seen = nginx.error_log_problems().len();
        let pids = nginx.pids();
        let fut = async {
            let mut r = ws::fanout(&o).await?;
            let problems = nginx.error_log_problems();
            if problems.len() > seen {
                r.set("nginx_alerts", problems.len() - seen)
                    .set("nginx_alert", problems[seen].clone());
            }
            Ok(r)
        };
        record(results, "ws-fanout", "nchan", round, &pids, fut).await;
        settle(s.ws_subscribers).await;
    }

    // Idle connections are measured on a fresh process, so memory freed by
    // earlier runs and kept by the allocator does not hide their cost.
    let idle_runs = if a.runs(Scenario::Idle) {
        vec![
            ("idle-conns", None),
            ("idle-conns-sub", Some("bench_idle".to_owned())),
        ]
    } else {
        Vec::new()
    };
    for (label, subscribe) in idle_runs {
        let idle = async {
            let fresh = tokio::task::block_in_place(|| start_herald(env.herald_bin, env.config))?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let o = IdleOpts {
                url: format!("ws://{}/ws", fresh.http.unwrap_or(fresh.resp)),
                connections: s.idle_conns,
                pids: vec![fresh.child.id()],
                with_children: false,
                hold: s.hold,
                subscribe,
            };
            let r = ws::idle(&o).await;
            drop(fresh);
            r
        };
        record(results, label, "herald", round, &[], idle).await;
        settle(s.idle_conns).await;
    }
    if let (Some((_, cfg)), true) = (env.nchan, a.runs(Scenario::Idle)) {
        let idle = async {
            let fresh = tokio::task::block_in_place(|| Nginx::start(cfg))?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let o = IdleOpts {
                url: fresh.sub_url("bench_idle"),
                connections: s.idle_conns,
                pids: fresh.pids(),
                with_children: false,
                hold: s.hold,
                subscribe: None,
            };
            let mut r = ws::idle(&o).await?;
            let problems = fresh.error_log_problems();
            if let Some(p) = problems.first() {
                r.set("nginx_alerts", problems.len())
                    .set("nginx_alert", p.clone());
            }
            drop(fresh);
            Ok(r)
        };
        record(results, "idle-conns", "nchan", round, &[], idle).await;
        settle(s.idle_conns).await;
    }

    if !a.runs(Scenario::Recovery) {
        return;
    }
    let o = RecoveryOpts {
        url: format!("ws://{http}/ws"),
        resp: herald.resp,
        channel: format!("bench:recovery:r{round}"),
        missed: s.missed,
        payload: a.payload,
    };
    record(
        results,
        "recovery",
        "herald",
        round,
        &pids,
        ws::recovery(&o),
    )
    .await;
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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
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

/// A target of the issue, checked against the medians.
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// Herald/peer at least this.
    RatioMin(f64),
    /// Herald/peer at most this.
    RatioMax(f64),
    /// Herald's own median at most this (in the row's unit).
    AtMost(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::RatioMin(r) => format!("≥ {r}×"),
            Goal::RatioMax(r) => format!("≤ {r}×"),
            Goal::AtMost(v) => format!("Herald ≤ {}", fmt_num(v)),
        }
    }

    fn met(self, herald: Option<f64>, ratio: Option<f64>) -> &'static str {
        let ok = match self {
            Goal::RatioMin(r) => ratio.map(|x| x >= r),
            Goal::RatioMax(r) => ratio.map(|x| x <= r),
            Goal::AtMost(v) => herald.map(|x| x <= v),
        };
        match ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        }
    }
}

struct Table<'a> {
    results: &'a Results,
}

impl Table<'_> {
    fn reports(&self, label: &str, server: &str) -> &[Report] {
        self.results
            .get(&(label.to_owned(), server.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn values(&self, label: &str, server: &str, field: &str) -> Vec<f64> {
        self.reports(label, server)
            .iter()
            .filter(|r| !r.0.contains_key("run_failed"))
            .filter_map(|r| r.0.get(field).and_then(Value::as_f64))
            .collect()
    }

    /// The median of `field` over the successful runs.
    fn med(&self, label: &str, server: &str, field: &str) -> Option<f64> {
        median(self.values(label, server, field))
    }

    /// `min – max` of `field` over the successful runs.
    fn range(&self, label: &str, server: &str, field: &str) -> String {
        let v = self.values(label, server, field);
        let min = v.iter().copied().reduce(f64::min);
        let max = v.iter().copied().reduce(f64::max);
        match (min, max) {
            (Some(a), Some(b)) => format!("{} – {}", fmt_num(a), fmt_num(b)),
            _ => self.cell(label, server, field),
        }
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

    /// A Herald vs `peer` row: medians, the Herald/peer ratio and the goal.
    /// `herald_label` lets Herald's figure come from another run (e.g. the
    /// subscribed idle connections).
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        what: &str,
        herald_label: &str,
        label: &str,
        peer: &str,
        field: &str,
        higher_better: bool,
        goal: Option<Goal>,
    ) -> String {
        let h = self.med(herald_label, "herald", field);
        let r = self.med(label, peer, field);
        let ratio = match (h, r) {
            (Some(h), Some(r)) if r > 0.0 => Some(h / r),
            _ => None,
        };
        format!(
            "| {what} | {} | {} | {} | {} | {} | {} |",
            self.cell(herald_label, "herald", field),
            self.cell(label, peer, field),
            ratio.map_or("–".into(), |x| format!("{x:.2}×")),
            if higher_better { "higher" } else { "lower" },
            goal.map_or("–".into(), Goal::text),
            goal.map_or("–", |g| g.met(h, ratio)),
        )
    }
}

/// What the table header says about each peer.
struct Versions {
    herald: String,
    redis: String,
    nchan: String,
}

fn print_table(a: &CompareArgs, s: &Sizes, results: &Results, v: &Versions, load: (&str, &str)) {
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
    line(format!("Herald: `{}`.", v.herald));
    line(format!(
        "Redis: `{}` (default config, persistence off).",
        v.redis
    ));
    line(format!("nchan: {}.", v.nchan));
    line(String::new());
    line(format!(
        "Load average (1, 5, 15 min) at start: {}; at end: {}.",
        load.0, load.1
    ));
    line(String::new());
    line(
        "Targets are the issue's, stated for the default sizes (100 subscribers, 10,000 \
         patterns, 10,000 WebSocket connections, 10,000 missed messages); `met` compares \
         the medians with them, so it is only indicative with other sizes or few rounds."
            .into(),
    );
    line(String::new());
    line("### RESP: Herald vs redis-server".into());
    line(String::new());
    line("| scenario | Herald | Redis | Herald/Redis | better | target | met |".into());
    line("| --- | ---: | ---: | ---: | --- | --- | --- |".into());
    let redis_row = |what: String, label: &str, field: &str, hb: bool, goal: Option<Goal>| {
        t.row(&what, label, label, "redis", field, hb, goal)
    };
    let fan = format!(
        "fanout {} subs, {} B, {} pubs × pipeline {}",
        s.subscribers, a.payload, a.publishers, a.pipeline
    );
    line(redis_row(
        format!("{fan}: deliveries/s"),
        "fanout",
        "deliveries_per_sec",
        true,
        Some(Goal::RatioMin(1.5)),
    ));
    line(redis_row(
        format!("{fan}: server CPU µs per 1,000 deliveries"),
        "fanout",
        "server_cpu_us_per_1k_deliveries",
        false,
        None,
    ));
    line(redis_row(
        format!("{fan}: p99 µs (saturated, queueing)"),
        "fanout",
        "p99_us",
        false,
        None,
    ));
    let pat = format!("publish with {} idle patterns", fmt_num(s.patterns as f64));
    line(redis_row(
        format!("{pat}: publishes/s"),
        "patterns",
        "publishes_per_sec",
        true,
        Some(Goal::RatioMin(20.0)),
    ));
    line(redis_row(
        format!("{pat}: server CPU µs per publish"),
        "patterns",
        "server_cpu_us_per_publish",
        false,
        None,
    ));
    let mut resp_labels = vec!["fanout".to_owned(), "patterns".to_owned()];
    for &rate in &s.latency_rates {
        let label = latency_label(rate);
        let lat = format!(
            "{} pub/s offered × {} subs (1 pub, no pipeline)",
            fmt_num(rate),
            s.subscribers
        );
        line(redis_row(
            format!("{lat}: achieved publishes/s"),
            &label,
            "publishes_per_sec",
            true,
            None,
        ));
        line(redis_row(
            format!("{lat}: p50 µs"),
            &label,
            "p50_us",
            false,
            None,
        ));
        line(redis_row(
            format!("{lat}: p99 µs"),
            &label,
            "p99_us",
            false,
            Some(Goal::RatioMax(1.0)),
        ));
        line(redis_row(
            format!("{lat}: p99.9 µs"),
            &label,
            "p999_us",
            false,
            None,
        ));
        resp_labels.push(label);
    }
    let zs = format!(
        "sorted set of {} members, {} conns × pipeline {}",
        fmt_num(s.zset_members as f64),
        a.zset_connections,
        a.zset_pipeline
    );
    for (op, name) in [("zincrby", "ZINCRBY"), ("zrevrank", "ZREVRANK")] {
        line(redis_row(
            format!("{zs}: {name}/s"),
            "zset",
            &format!("{op}_per_sec"),
            true,
            None,
        ));
        line(redis_row(
            format!("{zs}: {name} p50 µs"),
            "zset",
            &format!("{op}_p50_us"),
            false,
            None,
        ));
        line(redis_row(
            format!("{zs}: {name} p99 µs"),
            "zset",
            &format!("{op}_p99_us"),
            false,
            None,
        ));
        line(redis_row(
            format!("{zs}: server CPU µs per {name}"),
            "zset",
            &format!("server_cpu_us_per_{op}"),
            false,
            None,
        ));
    }
    line(redis_row(
        format!("{zs}: preload, members/s (ZADD × 1,000)"),
        "zset",
        "preload_members_per_sec",
        true,
        None,
    ));
    line(redis_row(
        format!("{zs}: RSS per member (bytes)"),
        "zset",
        "rss_per_member_bytes",
        false,
        None,
    ));
    resp_labels.push("zset".into());
    let lost = |srv: &str| -> f64 { resp_labels.iter().map(|l| t.sum(l, srv, "lost")).sum() };
    line(format!(
        "| lost deliveries (zset: members not found), all RESP runs (sum) | {} | {} | – | lower | – | – |",
        fmt_num(lost("herald")),
        fmt_num(lost("redis"))
    ));

    line(String::new());
    line("### WebSocket: Herald vs nginx + nchan".into());
    line(String::new());
    line("| scenario | Herald | nchan | Herald/nchan | better | target | met |".into());
    line("| --- | ---: | ---: | ---: | --- | --- | --- |".into());
    let wsf = format!(
        "ws-fanout {} subs, {} B, HTTP publish × pipeline {}, max lag {}",
        fmt_num(s.ws_subscribers as f64),
        a.payload,
        a.pipeline,
        a.ws_max_lag
    );
    let nchan_row = |what: String, hl: &str, label: &str, field: &str, hb: bool, goal| {
        t.row(&what, hl, label, "nchan", field, hb, goal)
    };
    line(nchan_row(
        format!("{wsf}: deliveries/s"),
        "ws-fanout",
        "ws-fanout",
        "deliveries_per_sec",
        true,
        Some(Goal::RatioMin(3.0)),
    ));
    line(nchan_row(
        format!("{wsf}: server CPU µs per 1,000 deliveries"),
        "ws-fanout",
        "ws-fanout",
        "server_cpu_us_per_1k_deliveries",
        false,
        None,
    ));
    line(nchan_row(
        format!("{wsf}: p50 µs (saturated, queueing)"),
        "ws-fanout",
        "ws-fanout",
        "p50_us",
        false,
        None,
    ));
    line(format!(
        "| {wsf}: lost (sum) | {} | {} | – | lower | – | – |",
        fmt_num(t.sum("ws-fanout", "herald", "lost")),
        fmt_num(t.sum("ws-fanout", "nchan", "lost"))
    ));
    let idle = format!(
        "{} idle WebSocket connections",
        fmt_num(s.idle_conns as f64)
    );
    line(nchan_row(
        format!("{idle}: RSS per connection (bytes); Herald: handshake only"),
        "idle-conns",
        "idle-conns",
        "rss_per_conn_bytes",
        false,
        Some(Goal::AtMost(4096.0)),
    ));
    line(nchan_row(
        format!("{idle}: RSS per connection (bytes); Herald: each subscribed to one channel"),
        "idle-conns-sub",
        "idle-conns",
        "rss_per_conn_bytes",
        false,
        None,
    ));
    line(nchan_row(
        format!("{idle}: PSS per connection (bytes); Herald: each subscribed"),
        "idle-conns-sub",
        "idle-conns",
        "pss_per_conn_bytes",
        false,
        None,
    ));

    line(String::new());
    line("### Herald only".into());
    line(String::new());
    line("| scenario | metric | median | target | met |".into());
    line("| --- | --- | ---: | --- | --- |".into());
    let rec = format!(
        "recovery after {} missed messages",
        fmt_num(s.missed as f64)
    );
    let goal = Goal::AtMost(20.0);
    line(format!(
        "| {rec} | time to last replayed message (ms) | {} | {} ms | {} |",
        t.cell("recovery", "herald", "recover_ms"),
        goal.text(),
        goal.met(t.med("recovery", "herald", "recover_ms"), None)
    ));
    line(format!(
        "| {rec} | first replayed message (ms) | {} | – | – |",
        t.cell("recovery", "herald", "first_message_ms"),
    ));
    line(format!(
        "| {rec} | longest pause between replayed messages (ms) | {} | – | – |",
        t.cell("recovery", "herald", "max_gap_ms")
    ));
    line(format!(
        "| {rec} | lost (sum) | {} | – | – |",
        fmt_num(t.sum("recovery", "herald", "lost"))
    ));

    line(String::new());
    line("### Ranges over the rounds (min – max)".into());
    line(String::new());
    line("| run | Herald | peer |".into());
    line("| --- | --- | --- |".into());
    let mut ranges: Vec<(String, &str, String, &str, &str)> = vec![
        (
            "fanout deliveries/s".into(),
            "fanout",
            "fanout".into(),
            "redis",
            "deliveries_per_sec",
        ),
        (
            "patterns publishes/s".into(),
            "patterns",
            "patterns".into(),
            "redis",
            "publishes_per_sec",
        ),
    ];
    for &rate in &s.latency_rates {
        ranges.push((
            format!("latency @{}/s p99 µs", fmt_num(rate)),
            "",
            latency_label(rate),
            "redis",
            "p99_us",
        ));
    }
    for (f, what) in [
        ("zincrby_per_sec", "ZINCRBY/s"),
        ("zrevrank_per_sec", "ZREVRANK/s"),
    ] {
        ranges.push((what.into(), "zset", "zset".into(), "redis", f));
    }
    ranges.push((
        "ws-fanout deliveries/s".into(),
        "ws-fanout",
        "ws-fanout".into(),
        "nchan",
        "deliveries_per_sec",
    ));
    ranges.push((
        "idle RSS bytes/conn (Herald handshake only)".into(),
        "idle-conns",
        "idle-conns".into(),
        "nchan",
        "rss_per_conn_bytes",
    ));
    ranges.push((
        "idle RSS bytes/conn (Herald subscribed)".into(),
        "idle-conns-sub",
        "idle-conns".into(),
        "nchan",
        "rss_per_conn_bytes",
    ));
    ranges.push((
        "recovery ms".into(),
        "recovery",
        String::new(),
        "",
        "recover_ms",
    ));
    for (what, hl, label, peer, field) in &ranges {
        let hl = if hl.is_empty() { label.as_str() } else { hl };
        let peer_cell = if peer.is_empty() {
            "–".to_owned()
        } else {
            format!("{peer}: {}", t.range(label, peer, field))
        };
        line(format!(
            "| {what} | {} | {peer_cell} |",
            t.range(hl, "herald", field)
        ));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

pub async fn run(a: CompareArgs) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let s = Sizes::from(&a);
    let most_conns = s.idle_conns.max(s.ws_subscribers);
    let nofile = sys::raise_nofile();
    if let Some(n) = nofile {
        if (most_conns as u64) + 256 > n {
            bail!("RLIMIT_NOFILE is {n}: too low for {most_conns} connections; raise `ulimit -n`");
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
            (most_conns + 1000).max(10_000),
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

    let nchan_cfg = NchanConfig {
        nginx: a.nginx.clone(),
        module: a.nchan_module.clone(),
        workers: a
            .nchan_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        connections: most_conns,
        nofile_limit: nofile,
    };
    let nchan_skip = if a.no_nchan {
        Some("--no-nchan".to_owned())
    } else {
        nchan_cfg.missing()
    };
    let versions = Versions {
        herald: version(&herald_bin),
        redis: if a.no_redis {
            "not run".into()
        } else {
            version(&a.redis_server)
        },
        nchan: match &nchan_skip {
            Some(why) => format!("**not run** ({why}); the nchan columns are empty"),
            None => format!(
                "`{}`, {} worker processes",
                nchan_cfg.version(),
                nchan_cfg.workers
            ),
        },
    };
    if let Some(why) = &nchan_skip {
        eprintln!("herald-bench compare: skipping the nchan runs: {why}");
    }
    let load_start = loadavg();
    let mut results = Results::new();
    for round in 1..=a.rounds {
        // Fresh servers every round: a run leaves state behind that skews
        // later ones (after the patterns run, Redis 7.0 still iterates its
        // now empty pattern dictionary on every PUBLISH, and its fan-out
        // rate drops by about 40 %; see docs/benchmarks.md).
        let herald = tokio::task::block_in_place(|| start_herald(&herald_bin, &config))?;
        let redis = if a.no_redis {
            None
        } else {
            Some(tokio::task::block_in_place(|| {
                start_redis(&a.redis_server, &[])
            })?)
        };
        let nginx = match nchan_skip {
            None => Some(tokio::task::block_in_place(|| Nginx::start(&nchan_cfg))?),
            Some(_) => None,
        };
        eprintln!(
            "herald-bench compare: round {round}/{}: herald resp={} http={:?}, redis {:?}, nchan {:?}",
            a.rounds,
            herald.resp,
            herald.http,
            redis.as_ref().map(|r| r.resp),
            nginx.as_ref().map(|n| n.addr),
        );
        resp_round(&mut results, &a, &s, "herald", &herald, round).await;
        if let Some(r) = &redis {
            resp_round(&mut results, &a, &s, "redis", r, round).await;
        }
        drop(redis);
        // And a fresh Herald for the WebSocket runs, as nchan's is.
        drop(herald);
        let herald = tokio::task::block_in_place(|| start_herald(&herald_bin, &config))?;
        let env = WsEnv {
            herald: &herald,
            herald_bin: &herald_bin,
            config: &config,
            nchan: nginx.as_ref().map(|n| (n, &nchan_cfg)),
        };
        ws_round(&mut results, &a, &s, &env, round).await;
        drop(nginx);
        drop(herald);
    }
    print_table(&a, &s, &results, &versions, (&load_start, &loadavg()));
    Ok(())
}
