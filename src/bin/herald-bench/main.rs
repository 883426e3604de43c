//! `herald-bench`: a load generator for Herald and any RESP server or
//! WebSocket endpoint. Each scenario prints one JSON line on stdout with at
//! least `deliveries_per_sec`, `publishes_per_sec`, `p50_us`, `p99_us`,
//! `p999_us` and `lost`; `compare` runs the RESP scenarios against Herald
//! and a real `redis-server`, and the WebSocket scenarios against Herald
//! and nginx + nchan, interleaved, and prints a markdown table with
//! ratios. See `docs/benchmarks.md`.
//!
//! Modules:
//! - `hist`: log-linear latency histogram (bounded memory, mergeable).
//! - `stamp`: send timestamps inside payloads; the shared clock.
//! - `resp`, `http`: minimal client codecs; `readbuf`: a connection's read
//!   buffer handing out parsed frames.
//! - `publish`: pipelined, optionally rate-limited publishers (RESP or HTTP).
//! - `fanout`: the `fanout` and `patterns` scenarios (RESP subscribers).
//! - `ws`: `ws-fanout`, `idle-conns` and `recovery`; `wsraw`: the
//!   allocation-free WebSocket client of the `ws-fanout` subscribers.
//! - `resp_idle`: memory per idle RESP subscriber, Herald beside Redis.
//! - `zset`: ZINCRBY / ZREVRANK on a large sorted set.
//! - `engine`: nodes on one `redis-server` (the Redis engine) beside a
//!   single node: cross-node deliveries and latency, history publishes
//!   beside the engine's script run straight against Redis.
//! - `kv_memory`: memory per string key, per hash field and per list
//!   element, Herald beside Redis.
//! - `compare`: starts Herald, Redis and nginx + nchan, runs rounds,
//!   prints the table; `nchan`: the temporary nginx configuration.
//! - `sys`: open-files limit, signals and `/proc` readings (memory, CPU,
//!   children).
//! - `report`: the JSON result line.

mod compare;
mod engine;
mod fanout;
mod hist;
mod http;
mod kv_memory;
mod nchan;
mod publish;
mod readbuf;
mod report;
mod resp;
mod resp_idle;
mod stamp;
mod sys;
mod ws;
mod wsraw;
mod zset;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

/// Bound on every single wait (connect, reply, drain, shutdown).
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Load generator for Herald and other RESP / WebSocket pub/sub servers",
    long_about = "Load generator for Herald and other RESP / WebSocket pub/sub servers.\n\n\
        Every scenario prints one JSON line on stdout with at least deliveries_per_sec, \
        publishes_per_sec, p50_us, p99_us, p999_us and lost. Latency is publish-to-deliver, \
        measured from a timestamp inside each payload. `compare` runs the RESP scenarios \
        against Herald and redis-server, interleaved, and prints a markdown table."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N subscribers on C channels, P pipelined publishers (RESP).
    Fanout(FanoutArgs),
    /// Publish rate with many idle (never matching) patterns subscribed (RESP).
    Patterns(PatternsArgs),
    /// N WebSocket subscribers; messages published over RESP or HTTP.
    WsFanout(WsFanoutArgs),
    /// Server memory per idle WebSocket connection.
    IdleConns(IdleArgs),
    /// Memory per idle RESP subscriber: Herald and redis-server, one run.
    RespIdle(RespIdleArgs),
    /// Time to replay N missed messages after a reconnect (Herald history).
    Recovery(RecoveryArgs),
    /// ZINCRBY, then ZREVRANK, on random members of a large sorted set (RESP).
    Zset(ZsetArgs),
    /// Memory per string key, per hash field and per list element: Herald
    /// and redis-server, one run.
    KvMemory(KvMemoryArgs),
    /// Herald nodes on one redis-server (the Redis engine) beside one node:
    /// cross-node deliveries/s, p50/p99 at a fixed load, and history
    /// publishes/s beside the engine's script run straight on Redis.
    Engine(EngineArgs),
    /// Run every scenario against Herald and its peers (redis-server,
    /// nginx + nchan) and print a table of medians and ratios.
    Compare(compare::CompareArgs),
}

/// Resolves `host:port` (a literal address or a name such as `localhost`).
fn addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {s}"))
}

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (seconds, e.g. 5 or 0.3)"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Args)]
struct FanoutArgs {
    /// RESP server address.
    #[arg(long, value_parser = addr, default_value = "127.0.0.1:6380")]
    resp: SocketAddr,
    /// Subscriber connections (spread round-robin over the channels).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Payload size in bytes (at least 17: `t` + 16 hex digits of timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds of publishing.
    #[arg(long, value_parser = secs, default_value = "5")]
    duration: Duration,
    /// Channels (publishers go round-robin over them).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// PUBLISH commands in flight per publisher connection.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Total publishes per second (open loop, paced per millisecond); the
    /// window is then at least 64. Omit to publish as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Deliveries in flight allowed per subscriber before publishers pause
    /// (0 = no flow control).
    #[arg(long, default_value_t = 1000)]
    max_lag: u64,
    /// Channel name prefix (channel i is PREFIX.i).
    #[arg(long, default_value = "bench.fanout")]
    prefix: String,
}

#[derive(Args)]
struct PatternsArgs {
    /// RESP server address.
    #[arg(long, value_parser = addr, default_value = "127.0.0.1:6380")]
    resp: SocketAddr,
    /// Idle patterns (`nomatch:PREFIX:{i}:*`) on one extra connection.
    #[arg(long, default_value_t = 10_000)]
    patterns: usize,
    /// Seconds of publishing.
    #[arg(long, value_parser = secs, default_value = "5")]
    duration: Duration,
    /// Publisher connections (publishing as fast as the window allows).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// PUBLISH commands in flight per publisher connection.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Deliveries in flight allowed before publishers pause (0 = no limit).
    #[arg(long, default_value_t = 1000)]
    max_lag: u64,
    /// The published channel is PREFIX.0; patterns are nomatch:PREFIX:{i}:*.
    #[arg(long, default_value = "bench.patterns")]
    prefix: String,
}

#[derive(Args)]
struct WsFanoutArgs {
    /// WebSocket URL (Herald: ws://HOST:PORT/ws; nchan: the subscribe URL).
    #[arg(long)]
    ws: String,
    /// WebSocket subscriber connections.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Seconds of publishing.
    #[arg(long, value_parser = secs, default_value = "5")]
    duration: Duration,
    /// Publish with RESP PUBLISH to this address.
    #[arg(long, value_parser = addr, conflicts_with = "http", required_unless_present = "http")]
    resp: Option<SocketAddr>,
    /// Publish with HTTP POST to this address (see --publish-path).
    #[arg(long, value_parser = addr)]
    http: Option<SocketAddr>,
    /// HTTP publish path; `{channel}` is replaced by the channel. Default:
    /// /api/publish (herald, JSON body) or /pub/{channel} (nchan, raw body).
    #[arg(long)]
    publish_path: Option<String>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Subscriber protocol.
    #[arg(long, value_enum, default_value = "herald")]
    protocol: ws::Protocol,
    /// Channel the subscribers join and the publishers publish to.
    #[arg(long, default_value = "bench.ws")]
    channel: String,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Publishes in flight per publisher connection (RESP or HTTP pipelining).
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Total publishes per second (omit: as fast as flow control allows).
    #[arg(long)]
    rate: Option<f64>,
    /// Deliveries in flight allowed per subscriber before publishers pause
    /// (0 = no flow control).
    #[arg(long, default_value_t = 1000)]
    max_lag: u64,
}

#[derive(Args)]
struct IdleArgs {
    /// WebSocket URL to open connections to.
    #[arg(long)]
    ws: String,
    /// Connections to open (RLIMIT_NOFILE is raised to its hard limit).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Server process(es) whose VmRSS (and Pss) is read before and after,
    /// summed: `--pid 1,2` or `--pid 1 --pid 2`.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Also sum the children of each --pid (nginx: the master's pid).
    #[arg(long)]
    with_children: bool,
    /// Seconds to hold the connections open before measuring.
    #[arg(long, value_parser = secs, default_value = "1")]
    hold: Duration,
    /// Herald protocol: each connection also subscribes to this channel
    /// (an nchan connection is already a subscription, by its URL).
    #[arg(long)]
    subscribe: Option<String>,
}

#[derive(Args)]
struct RespIdleArgs {
    /// The herald binary to start (default: beside herald-bench).
    #[arg(long)]
    herald: Option<std::path::PathBuf>,
    /// The redis-server binary to start.
    #[arg(long, default_value = "redis-server")]
    redis_server: std::path::PathBuf,
    /// Subscribed connections per server.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Seconds the connections settle before memory is read.
    #[arg(long, value_parser = secs, default_value = "15")]
    hold: Duration,
    /// The channel every connection subscribes to.
    #[arg(long, default_value = "bench_idle")]
    channel: String,
}

#[derive(Args)]
struct ZsetArgs {
    /// RESP server address.
    #[arg(long, value_parser = addr, default_value = "127.0.0.1:6380")]
    resp: SocketAddr,
    /// The sorted set's key (deleted first, and afterwards unless --keep).
    #[arg(long, default_value = "bench.zset")]
    key: String,
    /// Members preloaded with pipelined ZADD.
    #[arg(long, default_value_t = 1_000_000)]
    members: u64,
    /// Members per ZADD command while preloading.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seconds of ZINCRBY, then the same of ZREVRANK.
    #[arg(long, value_parser = secs, default_value = "5")]
    duration: Duration,
    /// Connections per phase.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Commands in flight per connection.
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// Server process(es) for CPU per command and RSS per member.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Keep the key afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct KvMemoryArgs {
    /// The herald binary to start (default: beside herald-bench).
    #[arg(long)]
    herald: Option<std::path::PathBuf>,
    /// The redis-server binary to start.
    #[arg(long, default_value = "redis-server")]
    redis_server: std::path::PathBuf,
    /// String keys (SET k:<i> <16 bytes>).
    #[arg(long, default_value_t = 1_000_000)]
    strings: u64,
    /// Hashes (HSET h:<i> field:<j> <16 bytes> ...).
    #[arg(long, default_value_t = 100_000)]
    hashes: u64,
    /// Fields per hash.
    #[arg(long, default_value_t = 10)]
    fields: u64,
    /// Lists (RPUSH l:<i> <16 bytes> ...).
    #[arg(long, default_value_t = 100_000)]
    lists: u64,
    /// Elements per list.
    #[arg(long, default_value_t = 10)]
    elements: u64,
}

#[derive(Args)]
struct EngineArgs {
    /// The herald binary to start (default: beside herald-bench).
    #[arg(long)]
    herald: Option<std::path::PathBuf>,
    /// The redis-server binary to start.
    #[arg(long, default_value = "redis-server")]
    redis_server: std::path::PathBuf,
    /// Herald nodes on the one Redis (publishers on the first).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Subscriber connections, spread over the other nodes.
    #[arg(long, default_value_t = 200)]
    subscribers: usize,
    /// Channels the subscribers spread over.
    #[arg(long, default_value_t = 20)]
    channels: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds per measurement.
    #[arg(long, value_parser = secs, default_value = "5")]
    duration: Duration,
    /// Commands in flight per publisher.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Offered publishes/s for the latency runs.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Channels with history the history runs spread over.
    #[arg(long, default_value_t = 100)]
    history_channels: usize,
}

#[derive(Args)]
struct RecoveryArgs {
    /// Herald WebSocket URL (ws://HOST:PORT/ws).
    #[arg(long)]
    ws: String,
    /// Herald RESP address, used to publish the missed messages.
    #[arg(long, value_parser = addr)]
    resp: SocketAddr,
    /// A channel whose namespace keeps at least --missed messages.
    #[arg(long, default_value = "bench:recovery")]
    channel: String,
    /// Messages published while disconnected.
    #[arg(long, default_value_t = 10_000)]
    missed: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

impl FanoutArgs {
    fn opts(&self) -> fanout::FanoutOpts {
        fanout::FanoutOpts {
            addr: self.resp,
            sub_addrs: Vec::new(),
            subscribers: self.subscribers,
            publishers: self.publishers,
            payload: self.payload,
            duration: self.duration,
            channels: self.channels,
            pipeline: self.pipeline,
            rate: self.rate,
            max_lag: self.max_lag,
            idle_patterns: 0,
            prefix: self.prefix.clone(),
        }
    }
}

/// The herald binary to start: the one given, or the one beside
/// herald-bench.
fn herald_binary(given: Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("herald-bench has no directory")?
            .join("herald")),
    }
}

async fn run(cmd: Cmd) -> Result<()> {
    let rep = match cmd {
        Cmd::Fanout(a) => fanout::run(&a.opts(), "fanout").await?,
        Cmd::Patterns(a) => {
            let o = fanout::FanoutOpts {
                addr: a.resp,
                sub_addrs: Vec::new(),
                subscribers: 1,
                publishers: a.publishers,
                payload: a.payload,
                duration: a.duration,
                channels: 1,
                pipeline: a.pipeline,
                rate: None,
                max_lag: a.max_lag,
                idle_patterns: a.patterns,
                prefix: a.prefix,
            };
            fanout::run(&o, "patterns").await?
        }
        Cmd::WsFanout(a) => {
            let target = match (a.resp, a.http) {
                (Some(r), _) => publish::Target::Resp(r),
                (None, Some(h)) => match a.protocol {
                    ws::Protocol::Herald => publish::Target::HeraldHttp {
                        addr: h,
                        path: a.publish_path.unwrap_or_else(|| "/api/publish".into()),
                    },
                    ws::Protocol::Nchan => publish::Target::RawHttp {
                        addr: h,
                        path: a.publish_path.unwrap_or_else(|| "/pub/{channel}".into()),
                    },
                },
                (None, None) => bail!("give --resp or --http to publish"),
            };
            let o = ws::WsFanoutOpts {
                url: a.ws,
                subscribers: a.subscribers,
                duration: a.duration,
                target,
                payload: a.payload,
                protocol: a.protocol,
                channel: a.channel,
                publishers: a.publishers,
                pipeline: a.pipeline,
                rate: a.rate,
                max_lag: a.max_lag,
            };
            ws::fanout(&o).await?
        }
        Cmd::IdleConns(a) => {
            ws::idle(&ws::IdleOpts {
                url: a.ws,
                connections: a.connections,
                pids: a.pid,
                with_children: a.with_children,
                hold: a.hold,
                subscribe: a.subscribe,
            })
            .await?
        }
        Cmd::RespIdle(a) => {
            let herald = herald_binary(a.herald)?;
            resp_idle::run(&resp_idle::RespIdleOpts {
                herald,
                redis_server: a.redis_server,
                connections: a.connections,
                hold: a.hold,
                channel: a.channel,
            })
            .await?
        }
        Cmd::Recovery(a) => {
            ws::recovery(&ws::RecoveryOpts {
                url: a.ws,
                resp: a.resp,
                channel: a.channel,
                missed: a.missed,
                payload: a.payload,
            })
            .await?
        }
        Cmd::Zset(a) => {
            zset::run(&zset::ZsetOpts {
                addr: a.resp,
                key: a.key,
                members: a.members,
                batch: a.batch,
                duration: a.duration,
                connections: a.connections,
                pipeline: a.pipeline,
                pids: a.pid,
                keep: a.keep,
            })
            .await?
        }
        Cmd::KvMemory(a) => {
            let herald = herald_binary(a.herald)?;
            kv_memory::run(&kv_memory::KvMemoryOpts {
                herald,
                redis_server: a.redis_server,
                strings: a.strings,
                hashes: a.hashes,
                fields: a.fields,
                lists: a.lists,
                elements: a.elements,
            })
            .await?
        }
        Cmd::Engine(a) => {
            let herald = herald_binary(a.herald)?;
            let reps = engine::run(&engine::EngineOpts {
                herald,
                redis_server: a.redis_server,
                nodes: a.nodes,
                subscribers: a.subscribers,
                channels: a.channels,
                publishers: a.publishers,
                payload: a.payload,
                duration: a.duration,
                pipeline: a.pipeline,
                rate: a.rate,
                history_channels: a.history_channels,
            })
            .await?;
            let (last, rest) = reps.split_last().context("no reports")?;
            for r in rest {
                println!("{}", r.line());
            }
            last.clone()
        }
        Cmd::Compare(a) => {
            // Dropping the future on Ctrl-C stops the servers it started.
            return tokio::select! {
                r = compare::run(a) => r,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            };
        }
    };
    println!("{}", rep.line());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    run(cli.cmd).await
}
