//! The Redis engine's history: streams whose entry ids are offsets.

use bytes::Bytes;

use super::RedisEngine;
use crate::hub::engine::{HistoryOptions, HistoryStore, Pending, Position, PositionThen};
use crate::hub::{HistoryError, HistoryPage, HistoryPosition};

/// The position of a channel, reserving an epoch for an empty one.
/// KEYS: stream, meta. ARGV: epoch to reserve, run id, reserve (1/0),
/// reservation ttl ms. Returns {top, epoch} (epoch "0": none).
pub(super) const POSITION_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local run = redis.call('HGET', KEYS[2], 'run')
if epoch and run == ARGV[2] then
  local top = redis.call('HGET', KEYS[2], 'top')
  return {tonumber(top), epoch}
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'run', ARGV[2], 'top', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {0, ARGV[1]}
end
return {0, '0'}
"#;

/// An entry as XRANGE returns it: id and field-value pairs.
type StreamRow = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// A history entry's payload: its `data` field, or (an entry a client
/// added with XADD and other fields) the JSON object of its fields, as
/// memory mode makes it (`hub::entry_payload`).
fn row_payload(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Bytes {
    let pairs: Vec<(Bytes, Bytes)> = fields
        .into_iter()
        .map(|(f, v)| (Bytes::from(f), Bytes::from(v)))
        .collect();
    crate::hub::entry_payload(&pairs)
}

impl RedisEngine {
    pub(super) async fn read_position(
        &self,
        channel: &[u8],
        reserve: bool,
    ) -> Result<Position, HistoryError> {
        self.verify_run()
            .await
            .map_err(|_| HistoryError::Unavailable)?;
        let (top, epoch): (u64, String) = self
            .position
            .key(self.key("history", channel))
            .key(self.key("meta", channel))
            .arg(Self::new_epoch())
            .arg(self.run_id(&self.key("history", channel)))
            .arg(if reserve { "1" } else { "0" })
            .arg(86_400_000u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|_| HistoryError::Unavailable)?;
        Ok(Position {
            offset: top,
            epoch: epoch.parse().unwrap_or(0),
        })
    }

    /// Entries after `after` (`limit` at most), oldest first, if none of
    /// them is lost.
    pub(super) async fn entries_after(
        &self,
        channel: &[u8],
        at: Position,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, HistoryError> {
        if after > at.offset {
            return Err(HistoryError::Unrecoverable);
        }
        if after == at.offset {
            return Ok(Vec::new());
        }
        let count = limit.min(1 << 20);
        let rows: Vec<StreamRow> = redis::cmd("XRANGE")
            .arg(self.key("history", channel))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn())
            .await
            .map_err(|_| HistoryError::Unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, fields) in rows {
            let offset: u64 = id
                .split('-')
                .next()
                .and_then(|o| o.parse().ok())
                .ok_or(HistoryError::Unrecoverable)?;
            out.push((offset, row_payload(fields)));
        }
        // The first entry must follow `after` directly, or some are gone.
        if out.first().is_none_or(|e| e.0 != after + 1) {
            return Err(HistoryError::Unrecoverable);
        }
        Ok(out)
    }
}

impl HistoryStore for RedisEngine {
    fn append(
        &self,
        channel: &Bytes,
        payload: Bytes,
        opts: HistoryOptions,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let channel = channel.clone();
        Pending::boxed(async move {
            let p = self
                .publish_one(channel, payload, Some(opts))
                .await
                .map_err(|_| HistoryError::Unavailable)?;
            p.position.ok_or(HistoryError::Unavailable)
        })
    }

    fn position(
        &self,
        channel: &[u8],
        _opts: HistoryOptions,
        reserve: bool,
    ) -> Pending<'_, Result<Position, HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move { self.read_position(&channel, reserve).await })
    }

    fn read(
        &self,
        channel: &[u8],
        _opts: HistoryOptions,
        since: Option<Position>,
        limit: usize,
        reverse: bool,
    ) -> Pending<'_, Result<HistoryPage, HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, false).await?;
            let entries = match since {
                Some(p) => {
                    if p.epoch != at.epoch {
                        return Err(HistoryError::Unrecoverable);
                    }
                    let mut e = self
                        .entries_after(&channel, at, p.offset, usize::MAX)
                        .await?;
                    if reverse {
                        e.reverse();
                    }
                    e.truncate(limit);
                    e
                }
                None => {
                    let count = limit.min(1 << 20);
                    let cmd = if reverse { "XREVRANGE" } else { "XRANGE" };
                    let (a, b) = if reverse { ("+", "-") } else { ("-", "+") };
                    let rows: Vec<StreamRow> = redis::cmd(cmd)
                        .arg(self.key("history", &channel))
                        .arg(a)
                        .arg(b)
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut self.conn())
                        .await
                        .map_err(|_| HistoryError::Unavailable)?;
                    rows.into_iter()
                        .filter_map(|(id, fields)| {
                            let o = id.split('-').next()?.parse().ok()?;
                            Some((o, row_payload(fields)))
                        })
                        .collect()
                }
            };
            Ok(HistoryPage {
                entries,
                top: at.offset,
                epoch: at.epoch,
            })
        })
    }

    fn position_then<'a>(
        &'a self,
        channel: &[u8],
        _opts: HistoryOptions,
        since: Option<Position>,
        cap: usize,
        then: PositionThen<'a>,
    ) -> Pending<'a, Result<(), HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, true).await?;
            let recoverable = match since {
                None => None,
                Some(p) if p.epoch != at.epoch || p.offset > at.offset => Some(false),
                Some(p) if at.offset - p.offset > cap as u64 => Some(false),
                Some(p) if p.offset == at.offset => Some(true),
                Some(p) => Some(self.entries_after(&channel, at, p.offset, 1).await.is_ok()),
            };
            then(HistoryPosition {
                top: at.offset,
                epoch: at.epoch,
                recoverable,
            });
            Ok(())
        })
    }

    fn chunk<'a>(
        &'a self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
        max_bytes: usize,
        at_end: &'a mut (dyn FnMut(u64) + Send),
    ) -> Pending<'a, Result<Vec<(u64, Bytes)>, HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, false).await?;
            if at.epoch != epoch {
                return Err(HistoryError::Unrecoverable);
            }
            let entries = self
                .entries_after(&channel, at, after, max_entries.max(1))
                .await?;
            let mut chunk = Vec::with_capacity(entries.len());
            let mut bytes = 0usize;
            for e in entries {
                if bytes >= max_bytes && !chunk.is_empty() {
                    break;
                }
                bytes = bytes.saturating_add(e.1.len());
                chunk.push(e);
            }
            if chunk.last().map_or(after, |e| e.0) == at.offset {
                at_end(at.offset);
            }
            Ok(chunk)
        })
    }

    fn size(
        &self,
        channel: &[u8],
        after: u64,
        epoch: u64,
        max_entries: usize,
    ) -> Pending<'_, Result<(usize, u64), HistoryError>> {
        let channel = channel.to_vec();
        Pending::boxed(async move {
            let at = self.read_position(&channel, false).await?;
            if at.epoch != epoch {
                return Err(HistoryError::Unrecoverable);
            }
            let entries = self.entries_after(&channel, at, after, max_entries).await?;
            Ok((
                entries.iter().map(|e| e.1.len()).sum(),
                entries.last().map_or(after, |e| e.0),
            ))
        })
    }
}
