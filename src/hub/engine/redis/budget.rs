//! `--history-max-memory` on Redis: one budget for the histories of every
//! node. Each node estimates the size of the histories it publishes to (a
//! channel's stream holds `min(top, history_size)` entries of, on average,
//! the payload plus [`ENTRY_OVERHEAD`] bytes) and, every housekeeping tick,
//! writes its estimates to three keys that share one hash slot:
//! `{prefix}:history-bytes:{%acct}` (channel → bytes),
//! `{prefix}:history-total:{%acct}` (their sum) and
//! `{prefix}:history-index:{%acct}` (channel → when last published). While
//! the sum is over the budget, the least recently published channels'
//! streams are deleted (their meta, and so their epoch and offsets, stay:
//! a client behind them gets `recovered: false`, as when the memory engine
//! trims). Estimates, not `MEMORY USAGE`: a stream of small entries costs
//! Redis about the payload plus 60–100 bytes each.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;

use super::RedisEngine;

/// Bytes counted per history entry besides its payload (id, field name,
/// listpack and radix-tree overhead of a stream of small entries).
pub(super) const ENTRY_OVERHEAD: f64 = 80.0;

/// Channels evicted per script call (the loop goes on while over budget).
const EVICT_STEP: usize = 64;

/// Writes one channel's estimate: KEYS bytes, total, index; ARGV channel,
/// bytes, now (ms). Returns the new total.
const ACCOUNT_SCRIPT: &str = r#"
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - old)
"#;

/// Takes the least recently published channels off the budget while it is
/// exceeded: KEYS bytes, total, index; ARGV cap, most to take. Returns the
/// channels whose streams are to go.
const EVICT_SCRIPT: &str = r#"
local out = {}
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
while total > tonumber(ARGV[1]) and #out < tonumber(ARGV[2]) do
  local oldest = redis.call('ZPOPMIN', KEYS[3])
  if #oldest == 0 then break end
  local b = tonumber(redis.call('HGET', KEYS[1], oldest[1]) or '0')
  redis.call('HDEL', KEYS[1], oldest[1])
  total = redis.call('DECRBY', KEYS[2], b)
  out[#out + 1] = oldest[1]
end
if total < 0 then redis.call('SET', KEYS[2], 0) end
return out
"#;

static ACCOUNT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACCOUNT_SCRIPT));
static EVICT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(EVICT_SCRIPT));

/// This node's estimates not yet written to Redis.
#[derive(Default)]
pub(super) struct Budget {
    /// channel → (entries kept, average entry bytes, when published).
    pending: Mutex<HashMap<Bytes, (u64, f64, u64)>>,
    /// Average entry bytes per channel, as last estimated here.
    averages: Mutex<HashMap<Bytes, f64>>,
}

impl RedisEngine {
    /// Notes a history publish of `payload_len` bytes that took offset
    /// `top` on a channel keeping `size` entries.
    pub(super) fn note_history(&self, channel: &Bytes, top: u64, size: u64, payload_len: usize) {
        if self.opts.history_max_memory == 0 {
            return;
        }
        let entry = payload_len as f64 + ENTRY_OVERHEAD;
        let avg = {
            let mut a = self
                .budget
                .averages
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if a.len() > 100_000 && !a.contains_key(channel) {
                a.clear();
            }
            let v = a.entry(channel.clone()).or_insert(entry);
            *v = *v * 0.9 + entry * 0.1;
            *v
        };
        self.budget
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), (top.min(size), avg, crate::hub::now_ms()));
    }

    fn acct_key(&self, kind: &str) -> Vec<u8> {
        self.key(kind, b"%acct")
    }

    /// Writes this node's estimates and, while the budget is exceeded,
    /// deletes the least recently published histories. Run by housekeeping.
    pub(super) async fn enforce_history_budget(&self) {
        let cap = self.opts.history_max_memory;
        if cap == 0 {
            return;
        }
        let pending: Vec<(Bytes, (u64, f64, u64))> = self
            .budget
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        let keys = [
            self.acct_key("history-bytes"),
            self.acct_key("history-total"),
            self.acct_key("history-index"),
        ];
        let mut total: i64 = 0;
        for (channel, (entries, avg, at)) in &pending {
            let bytes = (*entries as f64 * avg) as u64;
            match ACCOUNT
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&channel[..])
                .arg(bytes)
                .arg(*at)
                .invoke_async::<i64>(&mut self.conn())
                .await
            {
                Ok(t) => total = t,
                Err(e) => {
                    tracing::debug!(error = %e, "history budget: accounting failed");
                    return;
                }
            }
        }
        if pending.is_empty() || total <= cap as i64 {
            return;
        }
        loop {
            let gone: Vec<Vec<u8>> = match EVICT
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(cap)
                .arg(EVICT_STEP)
                .invoke_async(&mut self.conn())
                .await
            {
                Ok(g) => g,
                Err(e) => {
                    tracing::debug!(error = %e, "history budget: eviction failed");
                    return;
                }
            };
            for channel in &gone {
                let _: redis::RedisResult<i64> = redis::cmd("DEL")
                    .arg(self.key("history", channel))
                    .query_async(&mut self.conn())
                    .await;
            }
            if !gone.is_empty() {
                tracing::info!(
                    channels = gone.len(),
                    "history budget (--history-max-memory) exceeded: oldest histories deleted"
                );
            }
            if gone.len() < EVICT_STEP {
                return;
            }
        }
    }
}
