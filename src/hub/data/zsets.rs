//! Keyspace operations: sorted sets. Each method takes the keyspace lock,
//! applies one command's rules and returns typed data for the front end to
//! encode. Every write goes through [`Db::with_zset_mut`] or
//! [`Db::store_zset`], which notice the change themselves (WATCH versions,
//! blocked readers, the leaderboard tick), so no writer can forget to.
//!
//! Ranges return owned `(member, score)` pairs: members are reference
//! counted, so the copy under the lock is a count increment per member, and
//! the reply is encoded after the lock is released.

mod aggregate;
mod bounds;

pub use aggregate::{combine as zstore_combine, Aggregate, ZStoreOp};
pub use bounds::{pick, rank_span, LexBound, ScoreBound, ZSpan};

use bytes::Bytes;

use super::{random_picks, DataError, RandomPick};
use crate::hub::keyspace::{Db, Value};
use crate::hub::zset::ZSet;
use crate::hub::Hub;

/// Redis's error when an increment makes a score NaN (`inf + -inf`).
pub const NAN_SCORE: &str = "ERR resulting score is not a number (NaN)";

/// ZADD's flags (their mutual exclusions are the parser's to check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZAddFlags {
    /// Only add new members.
    pub nx: bool,
    /// Only update existing members; never creates the key.
    pub xx: bool,
    /// Only update when the new score is greater.
    pub gt: bool,
    /// Only update when the new score is less.
    pub lt: bool,
    /// Add the score to the current one (one pair only).
    pub incr: bool,
}

/// What a ZADD did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ZAdded {
    /// Members added.
    pub added: usize,
    /// Existing members whose score changed.
    pub changed: usize,
    /// With INCR: the member's new score, `None` when the flags skipped it.
    pub score: Option<f64>,
}

/// ZRANGE's query: which members, in which direction, after LIMIT.
#[derive(Debug, Clone, PartialEq)]
pub struct ZRange {
    pub span: ZSpan,
    /// Descending. For ranks, ranks then count from the highest score.
    pub rev: bool,
    /// `(offset, count)`; scores and lex only.
    pub limit: Option<(i64, i64)>,
}

/// The sorted set at `key` to read (`None` when absent), as `Db::zset`.
fn zread<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a ZSet>, DataError> {
    Ok(db.zset(key)?)
}

impl Hub {
    /// ZADD: sets the scores of `items` (member, score) under `flags`.
    /// With INCR, a result that is NaN is an error and changes nothing.
    pub fn zadd(
        &self,
        key: &[u8],
        flags: ZAddFlags,
        items: Vec<(Bytes, f64)>,
    ) -> Result<ZAdded, DataError> {
        let mut db = self.keyspace.lock();
        let mut r = ZAdded::default();
        let mut nan = false;
        let ZAddFlags {
            nx,
            xx,
            gt,
            lt,
            incr,
        } = flags;
        // XX never creates the key.
        db.with_zset_mut(key, !xx, |z| {
            for (m, s) in items {
                let cur = z.score(&m);
                let target = if incr {
                    let v = cur.unwrap_or(0.0) + s;
                    if v.is_nan() {
                        nan = true;
                        break;
                    }
                    v
                } else {
                    s
                };
                match cur {
                    Some(old) => {
                        if nx || (gt && target <= old) || (lt && target >= old) {
                            continue;
                        }
                        r.score = Some(target);
                        if target != old {
                            z.insert(m, target);
                            r.changed += 1;
                        }
                    }
                    None => {
                        if xx {
                            continue;
                        }
                        z.insert(m, target);
                        r.added += 1;
                        r.score = Some(target);
                    }
                }
            }
        })?;
        if nan {
            return Err(DataError::Other(NAN_SCORE.into()));
        }
        Ok(r)
    }

    /// ZINCRBY: the member's new score (created at `by`).
    pub fn zincrby(&self, key: &[u8], by: f64, member: Bytes) -> Result<f64, DataError> {
        let mut db = self.keyspace.lock();
        match db.with_zset_mut(key, true, |z| z.incr(member, by))? {
            Some(Some(v)) => Ok(v),
            _ => Err(DataError::Other(NAN_SCORE.into())),
        }
    }

    /// ZREM: how many of `members` were removed.
    pub fn zrem(&self, key: &[u8], members: &[Bytes]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let n = db.with_zset_mut(key, false, |z| {
            members.iter().filter(|m| z.remove(m).is_some()).count()
        })?;
        Ok(n.unwrap_or(0))
    }

    /// ZREMRANGEBYRANK, ZREMRANGEBYSCORE, ZREMRANGEBYLEX: how many members
    /// of `span` were removed.
    pub fn zremrange(&self, key: &[u8], span: &ZSpan) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let n = db.with_zset_mut(key, false, |z| match span.ranks(z) {
            None => 0,
            Some((a, b)) => {
                let gone = z.range_by_rank(a, b);
                for (m, _) in &gone {
                    z.remove(m);
                }
                gone.len()
            }
        })?;
        Ok(n.unwrap_or(0))
    }

    /// ZPOPMIN (`max` false) and ZPOPMAX: up to `count` members, lowest
    /// (highest) first; none when the key is absent.
    pub fn zpop(
        &self,
        key: &[u8],
        count: usize,
        max: bool,
    ) -> Result<Vec<(Bytes, f64)>, DataError> {
        let mut db = self.keyspace.lock();
        let popped = db.with_zset_mut(key, false, |z| {
            let n = count.min(z.len());
            let mut v = if max {
                let mut v = z.range_by_rank(z.len() - n, z.len());
                v.reverse();
                v
            } else {
                z.range_by_rank(0, n)
            };
            for (m, _) in &v {
                z.remove(m);
            }
            v.truncate(n);
            v
        })?;
        Ok(popped.unwrap_or_default())
    }

    /// ZSCORE.
    pub fn zscore(&self, key: &[u8], member: &[u8]) -> Result<Option<f64>, DataError> {
        let mut db = self.keyspace.lock();
        Ok(zread(&mut db, key)?.and_then(|z| z.score(member)))
    }

    /// ZMSCORE: one score (or none) per member.
    pub fn zmscore(&self, key: &[u8], members: &[Bytes]) -> Result<Vec<Option<f64>>, DataError> {
        let mut db = self.keyspace.lock();
        let z = zread(&mut db, key)?;
        Ok(members.iter().map(|m| z.and_then(|z| z.score(m))).collect())
    }

    /// ZRANK (`rev` false) and ZREVRANK: the member's rank and score.
    pub fn zrank(
        &self,
        key: &[u8],
        member: &[u8],
        rev: bool,
    ) -> Result<Option<(usize, f64)>, DataError> {
        let mut db = self.keyspace.lock();
        Ok(zread(&mut db, key)?.and_then(|z| {
            let r = z.rank(member)?;
            let s = z.score(member)?;
            Some((if rev { z.len() - 1 - r } else { r }, s))
        }))
    }

    /// ZCARD (0 when absent: an existing sorted set is never empty).
    pub fn zcard(&self, key: &[u8]) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        Ok(zread(&mut db, key)?.map_or(0, |z| z.len()))
    }

    /// ZCOUNT, ZLEXCOUNT: how many members `span` covers.
    pub fn zcount(&self, key: &[u8], span: &ZSpan) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        Ok(zread(&mut db, key)?.map_or(0, |z| span.count(z)))
    }

    /// ZRANGE and its older forms: the members `q` names, in its order.
    pub fn zrange(&self, key: &[u8], q: &ZRange) -> Result<Vec<(Bytes, f64)>, DataError> {
        let mut db = self.keyspace.lock();
        let Some(z) = zread(&mut db, key)? else {
            return Ok(Vec::new());
        };
        Ok(match &q.span {
            ZSpan::Rank(s, e) => match rank_span(z.len(), *s, *e) {
                None => Vec::new(),
                // For REV, ranks count from the top.
                Some((a, b)) if q.rev => {
                    let mut v = z.range_by_rank(z.len() - b, z.len() - a);
                    v.reverse();
                    v
                }
                Some((a, b)) => z.range_by_rank(a, b),
            },
            span => match span.ranks(z) {
                None => Vec::new(),
                Some(r) => pick(z, r, q.rev, q.limit),
            },
        })
    }

    /// ZRANDMEMBER: `None` when the key is absent. Without `count`, one
    /// member; a positive `count`, that many distinct members (all of them
    /// when the set is smaller); a negative one, `|count|` picks that may
    /// repeat (the caller bounds it). Picks by rank, O(log n) each: never a
    /// copy of the whole set under the keyspace lock.
    pub fn zrandmember(
        &self,
        key: &[u8],
        count: Option<i64>,
    ) -> Result<Option<Vec<(Bytes, f64)>>, DataError> {
        let mut db = self.keyspace.lock();
        let Some(z) = zread(&mut db, key)?.filter(|z| !z.is_empty()) else {
            return Ok(None);
        };
        let len = z.len();
        let pick = match count {
            None => RandomPick::One,
            Some(n) if n < 0 => RandomPick::Repeats(n.unsigned_abs()),
            Some(n) => RandomPick::Distinct(n as usize),
        };
        Ok(Some(random_picks(
            len,
            pick,
            |r| z.range_by_rank(r, r + 1).pop(),
            || z.range_by_rank(0, len),
        )))
    }

    /// One ZSCAN page and the next cursor (0: done). Small sets (Redis's
    /// listpack encoding, up to 128 members) come whole, in score order;
    /// larger ones page by node slot (see `ZSet::scan`), O(count) a page,
    /// every member present throughout returned once.
    pub fn zscan(
        &self,
        key: &[u8],
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(Bytes, f64)>), DataError> {
        let mut db = self.keyspace.lock();
        Ok(match zread(&mut db, key)? {
            None => (0, Vec::new()),
            Some(z) if z.len() <= 128 => (0, z.range_by_rank(0, z.len())),
            Some(z) => z.scan(cursor, count),
        })
    }

    /// ZUNIONSTORE and ZINTERSTORE: combines the sorted sets (or plain
    /// sets, scored 1) at `sources` (see [`zstore_combine`]) and replaces
    /// `dest` with the result (deleted when empty); returns its size.
    /// WRONGTYPE for any other type among the sources, before any change.
    pub fn zstore(
        &self,
        dest: Bytes,
        sources: &[Bytes],
        weights: &[f64],
        agg: Aggregate,
        op: ZStoreOp,
    ) -> Result<usize, DataError> {
        let mut db = self.keyspace.lock();
        let mut inputs: Vec<Option<Vec<(Bytes, f64)>>> = Vec::with_capacity(sources.len());
        for k in sources {
            inputs.push(match db.get(k).map(|e| &e.value) {
                None => None,
                Some(Value::ZSet(z)) => Some(z.all()),
                Some(Value::Set(s)) => Some(s.iter().map(|m| (m.clone(), 1.0)).collect()),
                Some(_) => return Err(DataError::WrongType),
            });
        }
        let z = zstore_combine(&inputs, weights, agg, op);
        let n = z.len();
        db.store_zset(dest, z);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn hub() -> Hub {
        Hub::default()
    }

    fn written(h: &Hub) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = h.keyspace.lock().zsets_written.drain().collect();
        v.sort();
        v
    }

    #[test]
    fn zadd_flags_follow_redis() {
        let h = hub();
        let add = |flags: ZAddFlags, m: &'static str, s: f64| {
            h.zadd(b"z", flags, vec![(b(m), s)]).unwrap()
        };
        let plain = ZAddFlags::default();
        assert_eq!(add(plain, "a", 1.0).added, 1);
        // XX: only existing members, never creates.
        let xx = ZAddFlags { xx: true, ..plain };
        assert_eq!(add(xx, "b", 1.0), ZAdded::default());
        assert_eq!(h.zadd(b"nokey", xx, vec![(b("m"), 1.0)]).unwrap().added, 0);
        assert_eq!(h.zcard(b"nokey").unwrap(), 0);
        // NX: only new members.
        let nx = ZAddFlags { nx: true, ..plain };
        assert_eq!(add(nx, "a", 5.0).changed, 0);
        assert_eq!(h.zscore(b"z", b"a").unwrap(), Some(1.0));
        // GT / LT: only moves in their direction.
        let gt = ZAddFlags { gt: true, ..plain };
        assert_eq!(add(gt, "a", 0.5).changed, 0);
        assert_eq!(add(gt, "a", 2.0).changed, 1);
        let lt = ZAddFlags { lt: true, ..plain };
        assert_eq!(add(lt, "a", 3.0).changed, 0);
        // INCR returns the new score, or none when the flags skip it.
        let incr = ZAddFlags {
            incr: true,
            ..plain
        };
        assert_eq!(add(incr, "a", 1.5).score, Some(3.5));
        let incr_nx = ZAddFlags { nx: true, ..incr };
        assert_eq!(add(incr_nx, "a", 1.0).score, None);
    }

    #[test]
    fn nan_increments_are_refused_and_change_nothing() {
        let h = hub();
        let incr = ZAddFlags {
            incr: true,
            ..Default::default()
        };
        h.zadd(b"z", incr, vec![(b("a"), f64::INFINITY)]).unwrap();
        written(&h);
        let e = h.zadd(b"z", incr, vec![(b("a"), f64::NEG_INFINITY)]);
        assert_eq!(e, Err(DataError::Other(NAN_SCORE.into())));
        let e = h.zincrby(b"z", f64::NEG_INFINITY, b("a"));
        assert_eq!(e, Err(DataError::Other(NAN_SCORE.into())));
        assert_eq!(h.zscore(b"z", b"a").unwrap(), Some(f64::INFINITY));
        assert!(written(&h).is_empty());
    }

    #[test]
    fn every_write_notices_the_leaderboard() {
        let h = hub();
        h.zadd(
            b"z",
            ZAddFlags::default(),
            vec![(b("a"), 1.0), (b("b"), 2.0)],
        )
        .unwrap();
        assert_eq!(written(&h), [b("z")]);
        h.zincrby(b"z", 1.0, b("a")).unwrap();
        assert_eq!(written(&h), [b("z")]);
        assert_eq!(h.zpop(b"z", 1, true).unwrap(), [(b("b"), 2.0)]);
        assert_eq!(written(&h), [b("z")]);
        // Nothing removed: no notice.
        assert_eq!(h.zrem(b"z", &[b("x")]).unwrap(), 0);
        assert!(written(&h).is_empty());
        let all = ZSpan::Rank(0, -1);
        assert_eq!(h.zremrange(b"z", &all).unwrap(), 1);
        assert_eq!(written(&h), [b("z")]);
        assert_eq!(h.zcard(b"z").unwrap(), 0, "an emptied set is deleted");
        h.zadd(b"src", ZAddFlags::default(), vec![(b("m"), 1.0)])
            .unwrap();
        written(&h);
        let n = h
            .zstore(
                b("dst"),
                &[b("src")],
                &[2.0],
                Aggregate::Sum,
                ZStoreOp::Union,
            )
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(h.zscore(b"dst", b"m").unwrap(), Some(2.0));
        assert_eq!(written(&h), [b("dst")]);
    }

    #[test]
    fn wrong_types_are_refused_before_any_change() {
        let h = hub();
        h.keyspace
            .lock()
            .insert(b("s"), Value::Stream(Box::new(crate::hub::Stream::new(1))));
        let wt = Err(DataError::WrongType);
        let r = h.zadd(b"s", ZAddFlags::default(), vec![(b("a"), 1.0)]);
        assert_eq!(r.map(|r| r.added), wt);
        assert_eq!(h.zcard(b"s"), wt);
        let all = ZRange {
            span: ZSpan::Rank(0, -1),
            rev: false,
            limit: None,
        };
        assert_eq!(h.zrange(b"s", &all).map(|v| v.len()), wt);
        let r = h.zstore(b("d"), &[b("s")], &[1.0], Aggregate::Sum, ZStoreOp::Union);
        assert_eq!(r, wt);
        assert!(!h.keyspace.lock().exists(b"d"));
    }

    #[test]
    fn ranges_and_random_members() {
        let h = hub();
        let items = (0..10)
            .map(|i| (Bytes::from(format!("m{i}")), i as f64))
            .collect();
        h.zadd(b"z", ZAddFlags::default(), items).unwrap();
        let q = |span, rev, limit| h.zrange(b"z", &ZRange { span, rev, limit }).unwrap();
        let top = q(ZSpan::Rank(0, 1), true, None);
        assert_eq!(top, [(b("m9"), 9.0), (b("m8"), 8.0)]);
        let lo = ScoreBound::parse(b"(2").unwrap();
        let hi = ScoreBound::parse(b"5").unwrap();
        let r = q(ZSpan::Score(lo, hi), false, Some((1, 2)));
        assert_eq!(r, [(b("m4"), 4.0), (b("m5"), 5.0)]);
        assert_eq!(h.zrank(b"z", b"m3", true).unwrap(), Some((6, 3.0)));
        // Distinct picks never repeat; negative counts may.
        let picks = h.zrandmember(b"z", Some(5)).unwrap().unwrap();
        let distinct: std::collections::HashSet<_> = picks.iter().map(|(m, _)| m).collect();
        assert_eq!((picks.len(), distinct.len()), (5, 5));
        assert_eq!(h.zrandmember(b"z", Some(-30)).unwrap().unwrap().len(), 30);
        assert_eq!(h.zrandmember(b"z", Some(50)).unwrap().unwrap().len(), 10);
        assert_eq!(h.zrandmember(b"nokey", None).unwrap(), None);
        let (cursor, page) = h.zscan(b"z", 0, 3).unwrap();
        assert_eq!((cursor, page.len()), (0, 10), "small sets come whole");
    }
}
