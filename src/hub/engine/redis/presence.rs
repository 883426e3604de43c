//! The Redis engine's presence: entries per node and client, connections
//! per user, and an expiry index refreshed by each node.

use bytes::Bytes;

use super::RedisEngine;
use crate::hub::engine::{EngineError, Pending, PresenceStore};
use crate::hub::presence::{PresenceEntry, PresenceEvent, PresenceEventKind};
use crate::hub::ClientId;

/// Joins a client. KEYS: entries, users, expiry. ARGV: member, entry JSON,
/// user, expiry ms (absolute), key ttl ms. Returns 1 when the user's
/// first connection, 0 otherwise, -1 when already present.
pub(super) const JOIN_SCRIPT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ARGV[5]) end
if n == 1 then return 1 end
return 0
"#;

/// Removes clients. KEYS: entries, users, expiry. ARGV: members. Returns a
/// flat list of {entry JSON, last (1/0)} for those that were present.
pub(super) const LEAVE_SCRIPT: &str = r#"
local out = {}
for _, m in ipairs(ARGV) do
  local e = redis.call('HGET', KEYS[1], m)
  if e then
    redis.call('HDEL', KEYS[1], m)
    redis.call('ZREM', KEYS[3], m)
    local user = cjson.decode(e)['user']
    local n = redis.call('HINCRBY', KEYS[2], user, -1)
    local last = 0
    if n <= 0 then redis.call('HDEL', KEYS[2], user); last = 1 end
    table.insert(out, e)
    table.insert(out, last)
  end
end
return out
"#;

/// Expired members of a channel. KEYS: expiry. ARGV: now ms.
pub(super) const EXPIRED_SCRIPT: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
"#;

impl RedisEngine {
    fn presence_keys(&self, channel: &[u8]) -> [Vec<u8>; 3] {
        [
            self.key("presence", channel),
            self.key("presence-users", channel),
            self.key("presence-exp", channel),
        ]
    }

    pub(super) fn member(&self, client: ClientId) -> String {
        format!("{}:{client}", self.opts.node)
    }

    /// Keeps this node's presence entries alive and removes entries whose
    /// node stopped refreshing them, pushing their leaves. An entry of this
    /// node that another node expired meanwhile (this one stalled or was cut
    /// off from Redis for longer than the TTL) is put back, with a join
    /// when it is the user's first connection again: its client is still
    /// connected here.
    pub(super) async fn refresh_presence(&self) -> Result<(), EngineError> {
        let joined: Vec<(Bytes, Vec<PresenceEntry>)> = self
            .joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, set)| (c.clone(), set.values().cloned().collect()))
            .collect();
        let now = crate::hub::now_ms();
        let ttl = self.opts.presence_ttl.as_millis() as u64;
        // A channel whose master is unreachable (a dead Cluster shard) does
        // not keep the others from being refreshed.
        let mut first_err = None;
        for (channel, entries) in joined {
            if let Err(e) = self.refresh_channel(&channel, &entries, now, ttl).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn refresh_channel(
        &self,
        channel: &Bytes,
        entries: &[PresenceEntry],
        now: u64,
        ttl: u64,
    ) -> Result<(), EngineError> {
        let keys = self.presence_keys(channel);
        let mut pipe = redis::pipe();
        for e in entries {
            // CH: 0 when the member is gone (XX adds nothing).
            pipe.cmd("ZADD")
                .arg(&keys[2])
                .arg("XX")
                .arg("CH")
                .arg(now + ttl)
                .arg(self.member(e.client));
        }
        for k in &keys {
            pipe.cmd("PEXPIRE").arg(k).arg(ttl).ignore();
        }
        let changed: Vec<i64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        for (e, n) in entries.iter().zip(&changed) {
            let still = || {
                self.joined
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(channel)
                    .is_some_and(|m| m.contains_key(&e.client))
            };
            if *n == 0 && still() && self.join_entry(channel, e).await? == 1 {
                let ev = PresenceEvent {
                    kind: PresenceEventKind::Join,
                    user: e.user.clone(),
                    client: e.client,
                    info: e.info.clone(),
                };
                self.send_event(channel.clone(), ev).await?;
            }
        }
        let expired: Vec<String> = self
            .expired
            .key(&keys[2])
            .arg(now)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        if !expired.is_empty() {
            let left = self.leave_members(channel, &expired).await?;
            for (entry, last) in left {
                if last {
                    let ev = PresenceEvent {
                        kind: PresenceEventKind::Leave,
                        user: entry.user,
                        client: entry.client,
                        info: entry.info,
                    };
                    self.send_event(channel.clone(), ev).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs the join script for `entry`: 1 when the user's first
    /// connection, 0 otherwise, -1 when already present.
    async fn join_entry(&self, channel: &[u8], entry: &PresenceEntry) -> Result<i64, EngineError> {
        let keys = self.presence_keys(channel);
        let ttl = self.opts.presence_ttl.as_millis() as u64;
        self.join
            .key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .arg(self.member(entry.client))
            .arg(encode_entry(entry))
            .arg(&entry.user)
            .arg(crate::hub::now_ms() + ttl)
            .arg(ttl)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))
    }

    pub(super) async fn leave_members(
        &self,
        channel: &[u8],
        members: &[String],
    ) -> Result<Vec<(PresenceEntry, bool)>, EngineError> {
        let keys = self.presence_keys(channel);
        let mut inv = self.leave.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        for m in members {
            inv.arg(m);
        }
        let flat: Vec<redis::Value> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        let mut out = Vec::new();
        for pair in flat.chunks(2) {
            if let [redis::Value::BulkString(e), redis::Value::Int(last)] = pair {
                if let Some(entry) = decode_entry(e) {
                    out.push((entry, *last == 1));
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn send_event(
        &self,
        channel: Bytes,
        ev: PresenceEvent,
    ) -> Result<(), EngineError> {
        let mut frame = vec![b'p'];
        frame.extend_from_slice(encode_event(&ev).as_bytes());
        self.publish_plain(self.channel_name("ch", &channel), frame)
            .await
    }
}

pub(super) fn encode_entry(e: &PresenceEntry) -> String {
    serde_json::json!({
        "client": e.client, "user": e.user, "info": e.info, "joined": e.joined,
    })
    .to_string()
}

pub(super) fn decode_entry(b: &[u8]) -> Option<PresenceEntry> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    Some(PresenceEntry {
        client: v["client"].as_u64()?,
        user: v["user"].as_str()?.to_string(),
        info: match &v["info"] {
            serde_json::Value::Null => None,
            i => Some(i.clone()),
        },
        joined: v["joined"].as_u64().unwrap_or(0),
    })
}

pub(super) fn encode_event(ev: &PresenceEvent) -> String {
    serde_json::json!({
        "kind": ev.name(), "user": ev.user, "client": ev.client, "info": ev.info,
    })
    .to_string()
}

pub(super) fn decode_event(b: &[u8]) -> Option<PresenceEvent> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    Some(PresenceEvent {
        kind: match v["kind"].as_str()? {
            "join" => PresenceEventKind::Join,
            "leave" => PresenceEventKind::Leave,
            _ => return None,
        },
        user: v["user"].as_str()?.to_string(),
        client: v["client"].as_u64()?,
        info: match &v["info"] {
            serde_json::Value::Null => None,
            i => Some(i.clone()),
        },
    })
}

impl PresenceStore for RedisEngine {
    fn join(
        &self,
        channel: &Bytes,
        entry: PresenceEntry,
    ) -> Pending<'_, Result<bool, EngineError>> {
        let channel = channel.clone();
        Pending::boxed(async move {
            let r = self.join_entry(&channel, &entry).await?;
            self.joined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(channel)
                .or_default()
                .insert(entry.client, entry);
            Ok(r == 1)
        })
    }

    fn leave(
        &self,
        channel: &[u8],
        client: ClientId,
    ) -> Pending<'_, Result<Option<(PresenceEntry, bool)>, EngineError>> {
        let channel = Bytes::copy_from_slice(channel);
        Pending::boxed(async move {
            {
                let mut joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(set) = joined.get_mut(&channel) {
                    set.remove(&client);
                    if set.is_empty() {
                        joined.remove(&channel);
                    }
                }
            }
            let left = self.leave_members(&channel, &[self.member(client)]).await?;
            Ok(left.into_iter().next())
        })
    }

    fn clients(&self, channel: &[u8]) -> Pending<'_, Result<Vec<PresenceEntry>, EngineError>> {
        let key = self.key("presence", channel);
        Pending::boxed(async move {
            let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            let mut v: Vec<PresenceEntry> =
                all.iter().filter_map(|(_, e)| decode_entry(e)).collect();
            v.sort_by_key(|e| (e.joined, e.client));
            Ok(v)
        })
    }

    fn users(&self, channel: &[u8]) -> Pending<'_, Result<Vec<String>, EngineError>> {
        let key = self.key("presence-users", channel);
        Pending::boxed(async move {
            let mut users: Vec<String> = redis::cmd("HKEYS")
                .arg(key)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            users.sort();
            Ok(users)
        })
    }

    fn stats(&self, channel: &[u8]) -> Pending<'_, Result<(usize, usize), EngineError>> {
        let keys = self.presence_keys(channel);
        Pending::boxed(async move {
            let (c, u): (usize, usize) = redis::pipe()
                .cmd("HLEN")
                .arg(&keys[0])
                .cmd("HLEN")
                .arg(&keys[1])
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.failed(e))?;
            Ok((c, u))
        })
    }

    fn refresh(&self) -> Pending<'_, Result<(), EngineError>> {
        Pending::boxed(self.refresh_presence())
    }

    fn refresh_every(&self) -> Option<std::time::Duration> {
        Some((self.opts.presence_ttl / 3).max(std::time::Duration::from_millis(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let ev = PresenceEvent {
            kind: PresenceEventKind::Leave,
            user: "ann".into(),
            client: 7,
            info: Some(serde_json::json!({"a": 1})),
        };
        assert_eq!(decode_event(encode_event(&ev).as_bytes()), Some(ev));
    }
}
