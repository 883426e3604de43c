//! `engine`: Herald nodes on one `redis-server` (the Redis engine), beside a
//! single node, on this machine, in one run:
//!
//! - **cross-node deliveries/s**: publishers on node 0, subscribers on the
//!   other nodes only, so every delivery crosses Redis; as fast as the
//!   subscribers keep up (the `fanout` flow control), then at a fixed
//!   offered load for p50/p99 publish-to-deliver. The same two runs on one
//!   node with the embedded memory engine.
//! - **history publishes/s**: pipelined `PUBLISH` to channels with history
//!   through node 0 (one script per publish: append, offset, publish),
//!   beside the same script run straight against `redis-server` by the same
//!   client loop (`EVALSHA`, same keys, arguments and pipeline depth).
//!   Target: Herald ≥ 0.8× of Redis.
//!
//! One JSON line per measurement, and a summary line with the ratios.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;

use crate::compare::{start_herald_with, start_redis, Server};
use crate::fanout::{self, FanoutOpts};
use crate::readbuf::Reader;
use crate::report::{self, Report};
use crate::resp::{self, Frame, Item};
use crate::{publish, TIMEOUT};

pub struct EngineOpts {
    pub herald: PathBuf,
    pub redis_server: PathBuf,
    pub nodes: usize,
    pub subscribers: usize,
    pub channels: usize,
    pub publishers: usize,
    pub payload: usize,
    pub duration: Duration,
    pub pipeline: usize,
    /// Offered publishes/s for the latency runs.
    pub rate: f64,
    /// History channels the history runs spread over.
    pub history_channels: usize,
}

/// Namespace `hist` keeps history; everything else is plain pub/sub.
const CONFIG: &str = "[namespaces.hist]\nhistory_size = 100\n";
const HISTORY_SIZE: u64 = 100;

fn fanout_opts(
    o: &EngineOpts,
    addr: SocketAddr,
    subs: Vec<SocketAddr>,
    rate: Option<f64>,
) -> FanoutOpts {
    FanoutOpts {
        addr,
        sub_addrs: subs,
        subscribers: o.subscribers,
        publishers: o.publishers,
        payload: o.payload,
        duration: o.duration,
        channels: o.channels,
        pipeline: o.pipeline,
        rate,
        max_lag: if rate.is_some() { 0 } else { 64 },
        idle_patterns: 0,
        prefix: format!("bench{}", std::process::id()),
    }
}

pub async fn run(o: &EngineOpts) -> Result<Vec<Report>> {
    if o.nodes < 2 {
        bail!("--nodes must be at least 2 (publishers on one, subscribers on the others)");
    }
    let config =
        std::env::temp_dir().join(format!("herald-bench-engine-{}.toml", std::process::id()));
    std::fs::write(&config, CONFIG)?;
    let out = run_with(o, &config).await;
    let _ = std::fs::remove_file(&config);
    out
}

async fn run_with(o: &EngineOpts, config: &std::path::Path) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    let redis = start_redis(&o.redis_server, &[])?;
    let url = format!("redis://{}", redis.resp);
    let nodes: Vec<Server> = (0..o.nodes)
        .map(|i| {
            start_herald_with(
                &o.herald,
                config,
                &["--engine", &url, "--node-name", &format!("bench{i}")],
            )
        })
        .collect::<Result<_>>()?;
    let others: Vec<SocketAddr> = nodes[1..].iter().map(|n| n.resp).collect();

    let mut cross = fanout::run(
        &fanout_opts(o, nodes[0].resp, others.clone(), None),
        "engine-fanout",
    )
    .await?;
    cross.set("nodes", o.nodes);
    let mut cross_lat = fanout::run(
        &fanout_opts(o, nodes[0].resp, others, Some(o.rate)),
        "engine-latency",
    )
    .await?;
    cross_lat.set("nodes", o.nodes);

    let herald_hist = history_run(o, nodes[0].resp, Via::Herald).await?;
    let redis_hist = history_run(o, redis.resp, Via::Redis).await?;
    drop(nodes);
    drop(redis);

    let single = start_herald_with(&o.herald, config, &[])?;
    let one = fanout::run(&fanout_opts(o, single.resp, vec![], None), "single-fanout").await?;
    let one_lat = fanout::run(
        &fanout_opts(o, single.resp, vec![], Some(o.rate)),
        "single-latency",
    )
    .await?;
    drop(single);

    let mut summary = Report::new("engine-summary");
    let ratio = |a: f64, b: f64| report::round(if b > 0.0 { a / b } else { 0.0 }, 2);
    summary
        .set("nodes", o.nodes)
        .set_f(
            "cross_node_deliveries_per_sec",
            cross.f64("deliveries_per_sec"),
        )
        .set_f(
            "single_node_deliveries_per_sec",
            one.f64("deliveries_per_sec"),
        )
        .set(
            "cross_to_single",
            ratio(
                cross.f64("deliveries_per_sec"),
                one.f64("deliveries_per_sec"),
            ),
        )
        .set_f("offered_per_sec", o.rate)
        .set_f("cross_p50_us", cross_lat.f64("p50_us"))
        .set_f("cross_p99_us", cross_lat.f64("p99_us"))
        .set_f("single_p50_us", one_lat.f64("p50_us"))
        .set_f("single_p99_us", one_lat.f64("p99_us"))
        .set_f(
            "herald_history_publishes_per_sec",
            herald_hist.f64("publishes_per_sec"),
        )
        .set_f(
            "redis_script_publishes_per_sec",
            redis_hist.f64("publishes_per_sec"),
        )
        .set(
            "history_ratio_herald_to_redis",
            ratio(
                herald_hist.f64("publishes_per_sec"),
                redis_hist.f64("publishes_per_sec"),
            ),
        );
    reports.extend([
        cross,
        cross_lat,
        herald_hist,
        redis_hist,
        one,
        one_lat,
        summary,
    ]);
    Ok(reports)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `PUBLISH hist.N payload` through a Herald node.
    Herald,
    /// The engine's script, `EVALSHA` straight against Redis.
    Redis,
}

/// Pipelined history publishes over `o.publishers` connections for
/// `o.duration`: each connection writes `o.pipeline` commands, reads their
/// replies, and again.
async fn history_run(o: &EngineOpts, addr: SocketAddr, via: Via) -> Result<Report> {
    let payload = vec![b'x'; o.payload.max(1)];
    let channels: Vec<Vec<u8>> = (0..o.history_channels.max(1))
        .map(|i| format!("hist:{i}").into_bytes())
        .collect();
    let sha = match via {
        Via::Herald => None,
        Via::Redis => {
            let (script, _) = herald::hub::engine::redis::history_publish_command(
                "herald", b"x", b"", 1, "bench",
            );
            let mut s = publish::connect(addr).await?;
            let mut buf = Reader::new();
            let mut cmd = Vec::new();
            resp::encode(&mut cmd, &[b"SCRIPT", b"LOAD", script.as_bytes()]);
            s.write_all(&cmd).await?;
            Some(loop {
                if let Some(f) = buf.next_resp()? {
                    match f {
                        Frame::Item(Item::Bulk(d)) => break d.to_vec(),
                        other => bail!("SCRIPT LOAD: {other:?}"),
                    }
                }
                if buf.fill(&mut s).await? == 0 {
                    bail!("redis closed during SCRIPT LOAD");
                }
            })
        }
    };
    // Each connection's commands, prepared once.
    let command = |i: usize| -> Vec<u8> {
        let ch = &channels[i % channels.len()];
        let mut out = Vec::new();
        match &sha {
            None => resp::encode(&mut out, &[b"PUBLISH", ch, &payload]),
            Some(sha) => {
                let (_, args) = herald::hub::engine::redis::history_publish_command(
                    "herald",
                    ch,
                    &payload,
                    HISTORY_SIZE,
                    "bench",
                );
                let mut all: Vec<&[u8]> = vec![b"EVALSHA", sha];
                all.extend(args.iter().map(|a| a.as_slice()));
                resp::encode(&mut out, &all);
            }
        }
        out
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..o.publishers.max(1) {
        let mut batch = Vec::new();
        for k in 0..o.pipeline.max(1) {
            batch.extend(command(p * 7919 + k));
        }
        let mut s = publish::connect(addr).await?;
        let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
        let n = o.pipeline.max(1);
        tasks.push(tokio::spawn(async move {
            let mut buf = Reader::new();
            while !stop.load(Ordering::Relaxed) {
                s.write_all(&batch).await?;
                let mut got = 0;
                while got < n {
                    while got < n {
                        match buf.next_resp()? {
                            Some(f) => {
                                got += 1;
                                if f.error().is_some() {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    acked.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            None => break,
                        }
                    }
                    if got < n && tokio::time::timeout(TIMEOUT, buf.fill(&mut s)).await?? == 0 {
                        bail!("server closed a publisher");
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(o.duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("publisher panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut rep = Report::new(match via {
        Via::Herald => "engine-history-herald",
        Via::Redis => "engine-history-redis-script",
    });
    let ok = acked.load(Ordering::Relaxed);
    rep.set("server", addr.to_string())
        .set_f("publishes_per_sec", ok as f64 / secs)
        .set_f("deliveries_per_sec", 0.0)
        .set("published", ok)
        .set("publish_errors", errors.load(Ordering::Relaxed))
        .set("lost", 0)
        .set("publishers", o.publishers)
        .set("pipeline", o.pipeline)
        .set("channels", channels.len())
        .set("payload", payload.len())
        .set_f("duration_s", secs);
    Ok(rep)
}
