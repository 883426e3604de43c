//! `kv-memory`: memory per entry of strings, hashes and lists, Herald beside a
//! real `redis-server` in one run. For each server and each shape a fresh
//! process is started (free ports), its RSS read, then loaded over one
//! pipelined connection:
//!
//! - strings: `SET k:<i> <16-byte value>` for N keys;
//! - strings with a deadline: the same with `EX 3600` (the cache-aside
//!   pattern), for the cost of the deadline index;
//! - hashes: `HSET h:<i> field:0 <16 bytes> … field:<F-1> <16 bytes>` for
//!   H hashes of F fields (small hashes: Redis keeps them as listpacks);
//! - lists: `RPUSH l:<i> <16 bytes> …` for L lists of E elements (a queue
//!   or a recent-items list: Redis keeps each in one quicklist node);
//!
//! then, once the server settled, its RSS again. Reported: (RSS after − RSS
//! before) per key (strings), per field (hashes) and per element (lists),
//! for each server, and
//! Herald/Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::io::AsyncWriteExt;

use crate::readbuf::Reader;
use crate::report::{self, Report};
use crate::resp::{self, Frame, Item};
use crate::{publish, sys, TIMEOUT};

pub struct KvMemoryOpts {
    pub herald: PathBuf,
    pub redis_server: PathBuf,
    /// String keys.
    pub strings: u64,
    /// Hashes, and fields in each.
    pub hashes: u64,
    pub fields: u64,
    /// Lists, and elements in each.
    pub lists: u64,
    pub elements: u64,
}

/// What is loaded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Strings,
    StringsWithTtl,
    Hashes,
    Lists,
}

/// A 16-byte value for entry `i`.
fn value(i: u64) -> String {
    format!("v:{i:014}")
}

/// Writes command `i` of `shape` to `out`.
fn command(out: &mut Vec<u8>, shape: Shape, i: u64, fields: u64) {
    match shape {
        Shape::Strings => {
            let (k, v) = (format!("k:{i}"), value(i));
            resp::encode(out, &[b"SET", k.as_bytes(), v.as_bytes()]);
        }
        Shape::StringsWithTtl => {
            let (k, v) = (format!("k:{i}"), value(i));
            resp::encode(out, &[b"SET", k.as_bytes(), v.as_bytes(), b"EX", b"3600"]);
        }
        Shape::Hashes => {
            let k = format!("h:{i}");
            let pairs: Vec<(String, String)> = (0..fields)
                .map(|j| (format!("field:{j}"), value(i * fields + j)))
                .collect();
            let mut args: Vec<&[u8]> = vec![b"HSET", k.as_bytes()];
            for (f, v) in &pairs {
                args.push(f.as_bytes());
                args.push(v.as_bytes());
            }
            resp::encode(out, &args);
        }
        Shape::Lists => {
            let k = format!("l:{i}");
            let values: Vec<String> = (0..fields).map(|j| value(i * fields + j)).collect();
            let mut args: Vec<&[u8]> = vec![b"RPUSH", k.as_bytes()];
            args.extend(values.iter().map(|v| v.as_bytes()));
            resp::encode(out, &args);
        }
    }
}

/// Sends `n` commands of `shape`, 1,000 a batch, each batch's replies read
/// before the next goes; any error reply fails the run.
async fn load(addr: SocketAddr, shape: Shape, n: u64, fields: u64) -> Result<()> {
    let mut s = publish::connect(addr).await?;
    let mut buf = Reader::new();
    let mut out = Vec::with_capacity(1 << 20);
    let mut next = 0;
    while next < n {
        let end = (next + 1000).min(n);
        out.clear();
        for i in next..end {
            command(&mut out, shape, i, fields);
        }
        s.write_all(&out).await?;
        let mut pending = end - next;
        while pending > 0 {
            while let Some(f) = buf.next_resp()? {
                pending = pending.saturating_sub(1);
                if let Frame::Item(Item::Error(e)) = f {
                    bail!("load failed: {}", String::from_utf8_lossy(e));
                }
            }
            if pending == 0 {
                break;
            }
            match tokio::time::timeout(TIMEOUT, buf.fill(&mut s)).await {
                Err(_) => bail!("no reply within {TIMEOUT:?} while loading"),
                Ok(Ok(0)) => bail!("server closed the connection while loading"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
        next = end;
    }
    Ok(())
}

/// RSS before and after loading `shape` into a fresh server.
async fn measure(
    addr: SocketAddr,
    pid: u32,
    shape: Shape,
    n: u64,
    fields: u64,
) -> Result<(u64, u64, f64)> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sys::rss_bytes(pid)?;
    let t = Instant::now();
    load(addr, shape, n, fields).await?;
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    Ok((before, sys::rss_bytes(pid)?, secs))
}

pub async fn run(o: &KvMemoryOpts) -> Result<Report> {
    let config = std::env::temp_dir().join(format!("herald-bench-kv-{}.toml", std::process::id()));
    std::fs::write(&config, "# herald-bench kv-memory: defaults\n")?;
    let started = Instant::now();
    let mut rep = Report::new("kv-memory");
    rep.set("strings", o.strings)
        .set("hashes", o.hashes)
        .set("fields_per_hash", o.fields)
        .set("lists", o.lists)
        .set("elements_per_list", o.elements)
        .set("value_bytes", 16);
    for (shape, name, n, entries) in [
        (Shape::Strings, "string_key", o.strings, o.strings),
        (
            Shape::StringsWithTtl,
            "string_key_ttl",
            o.strings,
            o.strings,
        ),
        (Shape::Hashes, "hash_field", o.hashes, o.hashes * o.fields),
        (Shape::Lists, "list_element", o.lists, o.lists * o.elements),
    ] {
        // Per item: fields of a hash, elements of a list.
        let per_item = if shape == Shape::Lists {
            o.elements
        } else {
            o.fields
        };
        if n == 0 {
            continue;
        }
        let herald = crate::compare::start_herald(&o.herald, &config)?;
        let h = measure(herald.resp, herald.child.id(), shape, n, per_item).await;
        drop(herald);
        let (hb, ha, hs) = h?;
        let redis = crate::compare::start_redis(&o.redis_server, &[])?;
        let (rb, ra, rs) = measure(redis.resp, redis.child.id(), shape, n, per_item).await?;
        drop(redis);
        let per = |b: u64, a: u64| report::round(a.saturating_sub(b) as f64 / entries as f64, 1);
        let (hp, rp) = (per(hb, ha), per(rb, ra));
        rep.set(&format!("herald_rss_per_{name}_bytes"), hp)
            .set(&format!("redis_rss_per_{name}_bytes"), rp)
            .set(
                &format!("{name}_ratio_herald_to_redis"),
                report::round(hp / rp.max(0.1), 2),
            )
            .set(&format!("herald_{name}_load_secs"), report::round(hs, 2))
            .set(&format!("redis_{name}_load_secs"), report::round(rs, 2));
    }
    let _ = std::fs::remove_file(&config);
    rep.set_f("elapsed_s", started.elapsed().as_secs_f64());
    Ok(rep)
}
