//! Leaderboards from sorted sets kept in Redis: written through any node,
//! or straight to Redis by other applications. Redis does not say what
//! changed (keyspace notifications are optional and off by default), so
//! the source is `polled`: on every tick each node re-reads the boards its
//! own clients follow, one pipelined round trip per board, and pushes only
//! the views that changed. A write is therefore seen everywhere within two
//! ticks (the tick it lands in, and the next read).

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use super::RedisEngine;
use crate::hub::engine::{LeaderboardSource, Pending};
use crate::hub::leaderboard::{Entry, Own};

/// The Redis engine's leaderboard source.
pub struct RedisLeaderboards {
    pub(super) engine: Arc<RedisEngine>,
}

impl LeaderboardSource for RedisLeaderboards {
    fn top(&self, key: &[u8], n: usize, user: Option<&str>) -> Pending<'_, (Vec<Entry>, Own)> {
        let key = key.to_vec();
        let user = user.map(str::to_owned);
        Pending::boxed(async move {
            let mut pipe = redis::pipe();
            if n > 0 {
                pipe.cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(n.min(i64::MAX as usize) as i64 - 1)
                    .arg("REV")
                    .arg("WITHSCORES");
            }
            if let Some(u) = &user {
                pipe.cmd("ZREVRANK").arg(&key).arg(u);
                pipe.cmd("ZSCORE").arg(&key).arg(u);
            }
            if n == 0 && user.is_none() {
                return (Vec::new(), None);
            }
            let replies: Vec<Value> = match pipe.query_async(&mut self.engine.conn()).await {
                Ok(v) => v,
                Err(e) => {
                    // A key of another type, or Redis away: an empty board,
                    // as the memory source answers for a missing one.
                    tracing::debug!(error = %e, "leaderboard read from redis failed");
                    return (Vec::new(), None);
                }
            };
            let mut replies = replies.into_iter();
            let entries = if n > 0 {
                replies.next().map(entries_of).unwrap_or_default()
            } else {
                Vec::new()
            };
            let own = match (replies.next(), replies.next()) {
                (Some(Value::Int(rank)), Some(score)) => {
                    score_of(&score).map(|s| (rank.max(0) as usize, s))
                }
                _ => None,
            };
            (entries, own)
        })
    }

    fn take_changed(&self) -> Vec<Bytes> {
        Vec::new()
    }

    fn polled(&self) -> bool {
        true
    }
}

/// `ZRANGE … WITHSCORES` in either protocol: a flat member/score array
/// (RESP2) or an array of pairs (RESP3).
fn entries_of(v: Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let Some(item) = it.next() {
        let (member, score) = match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let s = pair.pop();
                (pair.pop(), s)
            }
            other => (Some(other), it.next()),
        };
        if let (Some(Value::BulkString(m)), Some(s)) = (member, score) {
            if let Some(s) = score_of(&s) {
                out.push((Bytes::from(m), s));
            }
        }
    }
    out
}

fn score_of(v: &Value) -> Option<f64> {
    match v {
        Value::Double(d) => Some(*d),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_both_protocols() {
        let flat = Value::Array(vec![bulk("a"), bulk("3"), bulk("b"), bulk("-inf")]);
        let pairs = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(3.0)]),
            Value::Array(vec![bulk("b"), Value::Double(f64::NEG_INFINITY)]),
        ]);
        let want = vec![
            (Bytes::from_static(b"a"), 3.0),
            (Bytes::from_static(b"b"), f64::NEG_INFINITY),
        ];
        assert_eq!(entries_of(flat), want);
        assert_eq!(entries_of(pairs), want);
        assert!(entries_of(Value::Nil).is_empty());
        // A malformed reply is skipped, never a panic.
        assert!(entries_of(Value::Array(vec![bulk("a"), bulk("x"), bulk("b")])).is_empty());
    }
}
