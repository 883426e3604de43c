//! An app server with a local in-memory cache in front of a shared
//! "database" (one file per key in a directory), kept coherent with the other
//! app servers through Herald: every write publishes `invalidate:<key>` on
//! Herald's RESP port, and every app subscribed to `invalidate:*` evicts the
//! key when another app wrote it. The Python app (`../python_app.py`) speaks
//! the same protocol, so the two evict each other's entries.
//!
//! Driven one line at a time on stdin:
//!
//! ```text
//! get KEY            read through the cache
//! set KEY VALUE      write the database, refresh the own cache, invalidate the others
//! quit
//! ```
//!
//! and answers one line at a time on stdout:
//!
//! ```text
//! ready NAME                     subscribed to invalidate:*, commands welcome
//! value KEY VALUE (cache|db)     a read, and where it came from
//! missing KEY                    the database has no such key
//! stored KEY                     a write, published to the other apps
//! evicted KEY by ORIGIN          another app wrote KEY, cached here: the next read goes to the database
//! error MESSAGE
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

type Cache = Arc<Mutex<HashMap<String, String>>>;

struct Options {
    redis: String,
    db: PathBuf,
    name: String,
}

fn options() -> Result<Options, String> {
    let mut opts = Options {
        redis: "redis://127.0.0.1:6380/".into(),
        db: "cache-db".into(),
        name: "rust-app".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--redis" => opts.redis = value,
            "--db" => opts.db = value.into(),
            "--name" => opts.name = value,
            _ => return Err(format!("unknown option {flag} (use --redis URL, --db DIR, --name NAME)")),
        }
    }
    Ok(opts)
}

/// The database file of a key: its UTF-8 bytes in hex, so that any key
/// (`user:42`, `a/b`) is a plain file name. The Python app uses the same rule.
fn db_path(db: &Path, key: &str) -> PathBuf {
    let name: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    db.join(name)
}

fn db_read(db: &Path, key: &str) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(db_path(db, key)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes through a temporary file and a rename, so that a concurrent
/// reader in another process sees the old value or the new one, never half.
fn db_write(db: &Path, key: &str, value: &str) -> std::io::Result<()> {
    let path = db_path(db, key);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, value)?;
    std::fs::rename(tmp, path)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = options()?;
    std::fs::create_dir_all(&opts.db)?;
    let client = redis::Client::open(opts.redis.as_str())?;
    let cache: Cache = Arc::default();

    // Subscribed before `ready` is printed: a write made by another app
    // after that line is never missed.
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe("invalidate:*").await?;
    let mut publisher = client.get_multiplexed_async_connection().await?;

    let evictions = {
        let cache = cache.clone();
        let name = opts.name.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(key) = msg.get_channel_name().strip_prefix("invalidate:") else { continue };
                let origin = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                // Our own writes already refreshed our cache.
                if origin == name {
                    continue;
                }
                let evicted = cache.lock().unwrap().remove(key).is_some();
                if evicted {
                    println!("evicted {key} by {origin}");
                }
            }
            println!("error lost the connection to Herald");
        })
    };

    println!("ready {}", opts.name);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.trim().splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("get"), Some(key), None) => {
                let cached = cache.lock().unwrap().get(key).cloned();
                if let Some(value) = cached {
                    println!("value {key} {value} (cache)");
                    continue;
                }
                match db_read(&opts.db, key) {
                    Ok(Some(value)) => {
                        cache.lock().unwrap().insert(key.to_string(), value.clone());
                        println!("value {key} {value} (db)");
                    }
                    Ok(None) => println!("missing {key}"),
                    Err(e) => println!("error reading {key}: {e}"),
                }
            }
            (Some("set"), Some(key), Some(value)) => {
                if let Err(e) = db_write(&opts.db, key, value) {
                    println!("error writing {key}: {e}");
                    continue;
                }
                cache.lock().unwrap().insert(key.to_string(), value.to_string());
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(format!("invalidate:{key}"))
                    .arg(&opts.name)
                    .query_async(&mut publisher)
                    .await;
                match published {
                    Ok(_) => println!("stored {key}"),
                    Err(e) => println!("error publishing invalidate:{key}: {e}"),
                }
            }
            (Some("quit"), None, None) => break,
            (None | Some(""), ..) => {}
            _ => println!("error unknown command (get KEY | set KEY VALUE | quit)"),
        }
    }
    evictions.abort();
    Ok(())
}
