//! `resp-idle`: memory per idle RESP subscriber, Herald beside a real
//! `redis-server` in one run. Starts both (fresh processes on free ports),
//! opens N connections to each that SUBSCRIBE to one channel and then only
//! wait, lets them settle, and reports each server's resident memory per
//! connection (RSS after minus RSS before, over N) and Herald/Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::report::Report;
use crate::{sys, TIMEOUT};

pub struct RespIdleOpts {
    pub herald: PathBuf,
    pub redis_server: PathBuf,
    pub connections: usize,
    /// Time the subscribed connections settle before the measurement.
    pub hold: Duration,
    pub channel: String,
}

/// Opens `n` connections to `addr`, each subscribed to `channel`, and
/// returns them (still open) after `hold`, with the server's RSS before
/// and after.
async fn measure(addr: SocketAddr, pid: u32, o: &RespIdleOpts) -> Result<(u64, u64, usize)> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sys::rss_bytes(pid)?;
    let gate = std::sync::Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    let cmd = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
        o.channel.len(),
        o.channel
    );
    for _ in 0..o.connections {
        let gate = gate.clone();
        let cmd = cmd.clone();
        tasks.spawn(async move {
            let _p = gate.acquire().await;
            let mut s = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
                .await
                .context("connect timed out")??;
            s.write_all(cmd.as_bytes()).await?;
            // The confirmation: `*3\r\n$9\r\nsubscribe\r\n$N\r\n<ch>\r\n:1\r\n`.
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b":1\r\n") {
                let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
                    .await
                    .context("no subscribe confirmation")??;
                if n == 0 {
                    bail!("closed before confirming the subscription");
                }
                got.extend_from_slice(&buf[..n]);
            }
            anyhow::Ok(s)
        });
    }
    let mut socks = Vec::with_capacity(o.connections);
    while let Some(r) = tasks.join_next().await {
        socks.push(r.context("connect task panicked")??);
    }
    tokio::time::sleep(o.hold).await;
    let after = sys::rss_bytes(pid)?;
    let n = socks.len();
    drop(socks);
    Ok((before, after, n))
}

pub async fn run(o: &RespIdleOpts) -> Result<Report> {
    if let Some(limit) = sys::raise_nofile() {
        if (o.connections as u64) + 64 > limit {
            bail!(
                "{} connections need RLIMIT_NOFILE above {limit}",
                o.connections
            );
        }
    }
    let config =
        std::env::temp_dir().join(format!("herald-bench-idle-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("max_connections = {}\n", (o.connections + 1000).max(10_000)),
    )?;
    let started = Instant::now();
    let herald = crate::compare::start_herald(&o.herald, &config)?;
    let h = measure(herald.resp, herald.child.id(), o).await;
    drop(herald);
    let _ = std::fs::remove_file(&config);
    let (hb, ha, hn) = h?;
    let redis = crate::compare::start_redis(
        &o.redis_server,
        &["--maxclients", &(o.connections + 1000).to_string()],
    )?;
    let (rb, ra, rn) = measure(redis.resp, redis.child.id(), o).await?;
    drop(redis);
    let per = |b: u64, a: u64, n: usize| a.saturating_sub(b) / (n.max(1) as u64);
    let (hp, rp) = (per(hb, ha, hn), per(rb, ra, rn));
    let mut rep = Report::new("resp-idle");
    rep.set("connections", o.connections)
        .set_f("hold_s", o.hold.as_secs_f64())
        .set("herald_rss_before_bytes", hb)
        .set("herald_rss_after_bytes", ha)
        .set("herald_rss_per_conn_bytes", hp)
        .set("redis_rss_before_bytes", rb)
        .set("redis_rss_after_bytes", ra)
        .set("redis_rss_per_conn_bytes", rp)
        .set(
            "ratio_herald_to_redis",
            crate::report::round(hp as f64 / (rp.max(1) as f64), 2),
        )
        .set_f("elapsed_s", started.elapsed().as_secs_f64());
    Ok(rep)
}
