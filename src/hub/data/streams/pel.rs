//! The rules of a consumer group's pending entries list (PEL), as methods
//! of [`Group`]: pure, given the stream and the time, so they are tested
//! here without a hub.
//!
//! The PEL maps an id to its owner, its last delivery time and its delivery
//! count; each consumer keeps the ids it owns. Every rule keeps the two in
//! step.

use bytes::Bytes;

use super::groups::{
    AutoClaim, AutoClaimed, Claim, ClaimOpts, Claimed, GroupFrom, PendingQuery, PendingRow,
    PendingSummary,
};
use super::ReadEntry;
use crate::hub::stream::{Consumer, Group, Pending, Stream, StreamId};

impl Group {
    /// The consumer `name`, created if new, seen now.
    pub fn consumer(&mut self, name: &Bytes, now: u64) -> &mut Consumer {
        let c = self.consumers.entry(name.clone()).or_default();
        c.seen_time = now;
        c
    }

    /// Drops `id` from the PEL and from its owner's list.
    fn unpend(&mut self, id: StreamId) -> Option<Pending> {
        let p = self.pel.remove(&id)?;
        if let Some(c) = self.consumers.get_mut(&p.consumer) {
            c.pel.remove(&id);
        }
        Some(p)
    }

    /// One stream of XREADGROUP. `New`: up to `count` (0: all) entries
    /// after the group's last id, which advances; each becomes pending for
    /// `consumer` (delivered once, now) unless `noack`, taken from any
    /// other owner. `Pending`: the consumer's own pending entries from the
    /// id on, each delivered once more; an entry deleted from the stream
    /// meanwhile comes as its id alone. The consumer is created either way.
    pub fn read(
        &mut self,
        s: &Stream,
        consumer: &Bytes,
        from: GroupFrom,
        count: usize,
        noack: bool,
        now: u64,
    ) -> Vec<ReadEntry> {
        self.consumer(consumer, now);
        let start = match from {
            GroupFrom::Pending(start) => start,
            GroupFrom::New => {
                let entries = s.after(self.last_id, count);
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    s.advance_group(self, e.id);
                    if !noack {
                        self.unpend(e.id);
                        self.pel.insert(
                            e.id,
                            Pending {
                                consumer: consumer.clone(),
                                delivery_time: now,
                                delivery_count: 1,
                            },
                        );
                        self.consumer(consumer, now).pel.insert(e.id);
                    }
                    out.push(ReadEntry::full(e));
                }
                return out;
            }
        };
        let ids: Vec<StreamId> = self
            .consumers
            .get(consumer)
            .map(|c| {
                c.pel
                    .range(start..)
                    .take(if count == 0 { usize::MAX } else { count })
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match s.get(id) {
                Some(e) => {
                    if let Some(p) = self.pel.get_mut(&id) {
                        p.delivery_time = now;
                        p.delivery_count += 1;
                    }
                    out.push(ReadEntry::full(e));
                }
                None => out.push(ReadEntry::Deleted(id)),
            }
        }
        out
    }

    /// XACK: how many of `ids` were pending (they no longer are).
    pub fn ack(&mut self, ids: &[StreamId]) -> usize {
        ids.iter().filter(|id| self.unpend(**id).is_some()).count()
    }

    /// Assigns `id` to `consumer`; false if the entry is gone from the
    /// stream (it is then dropped from the PEL, as Redis 7 does). The
    /// delivery time becomes now, or `now - idle`, or `time`; the count
    /// becomes RETRYCOUNT, or grows by one unless JUSTID.
    pub fn claim_one(
        &mut self,
        s: &Stream,
        id: StreamId,
        consumer: &Bytes,
        now: u64,
        o: &ClaimOpts,
    ) -> bool {
        if s.get(id).is_none() {
            self.unpend(id);
            return false;
        }
        let prev = self.pel.get(&id).map(|p| p.consumer.clone());
        if let Some(prev) = &prev {
            if let Some(c) = self.consumers.get_mut(prev) {
                c.pel.remove(&id);
            }
        }
        let p = self.pel.entry(id).or_insert(Pending {
            consumer: consumer.clone(),
            delivery_time: now,
            delivery_count: 0,
        });
        p.consumer = consumer.clone();
        p.delivery_time = match (o.idle, o.time) {
            (Some(idle), _) => now.saturating_sub(idle),
            (None, Some(t)) => t,
            _ => now,
        };
        if let Some(rc) = o.retrycount {
            p.delivery_count = rc;
        } else if !o.justid {
            p.delivery_count += 1;
        }
        self.consumer(consumer, now).pel.insert(id);
        true
    }

    /// XCLAIM: each id pending for at least `min_idle` ms (or, with FORCE,
    /// not pending but still in the stream) goes to `consumer`.
    pub fn claim(&mut self, s: &Stream, consumer: &Bytes, c: &Claim, now: u64) -> Claimed {
        if let Some(l) = c.lastid {
            if l > self.last_id {
                self.last_id = l;
            }
        }
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        for id in &c.ids {
            let idle_ok = match self.pel.get(id) {
                Some(p) => now.saturating_sub(p.delivery_time) >= c.min_idle,
                None => c.opts.force && s.get(*id).is_some(),
            };
            if !idle_ok || !self.claim_one(s, *id, consumer, now, &c.opts) {
                continue;
            }
            if c.opts.justid {
                ids.push(*id);
            } else if let Some(e) = s.get(*id) {
                entries.push(ReadEntry::full(e));
            }
        }
        if c.opts.justid {
            Claimed::Ids(ids)
        } else {
            Claimed::Entries(entries)
        }
    }

    /// XAUTOCLAIM: walks the PEL from `start`, claiming entries idle for
    /// at least `min_idle` ms until `count` are done (claimed, or found
    /// deleted and dropped), looking at no more than `count * 10` pending
    /// ids, as Redis; `next` is the first id not looked at.
    pub fn autoclaim(
        &mut self,
        s: &Stream,
        consumer: &Bytes,
        a: &AutoClaim,
        now: u64,
    ) -> AutoClaimed {
        let o = ClaimOpts {
            justid: a.justid,
            ..ClaimOpts::default()
        };
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        let mut deleted = Vec::new();
        let mut next = StreamId::MIN;
        let mut budget = a.count.saturating_mul(10);
        let candidates: Vec<StreamId> = self.pel.range(a.start..).map(|(id, _)| *id).collect();
        let mut it = candidates.into_iter();
        let mut done = 0;
        loop {
            if done >= a.count || budget == 0 {
                if let Some(id) = it.next() {
                    next = id;
                }
                break;
            }
            let Some(id) = it.next() else { break };
            budget -= 1;
            let idle = self
                .pel
                .get(&id)
                .map_or(0, |p| now.saturating_sub(p.delivery_time));
            if idle < a.min_idle {
                continue;
            }
            if self.claim_one(s, id, consumer, now, &o) {
                if a.justid {
                    ids.push(id);
                } else if let Some(e) = s.get(id) {
                    entries.push(ReadEntry::full(e));
                }
            } else {
                deleted.push(id);
            }
            done += 1;
        }
        AutoClaimed {
            next,
            claimed: if a.justid {
                Claimed::Ids(ids)
            } else {
                Claimed::Entries(entries)
            },
            deleted,
        }
    }

    /// XPENDING without a range.
    pub fn pending_summary(&self) -> PendingSummary {
        let bounds = self
            .pel
            .keys()
            .next()
            .zip(self.pel.keys().next_back())
            .map(|(a, b)| (*a, *b));
        PendingSummary {
            count: self.pel.len(),
            bounds,
            consumers: self
                .consumers
                .iter()
                .filter(|(_, c)| !c.pel.is_empty())
                .map(|(n, c)| (n.clone(), c.pel.len()))
                .collect(),
        }
    }

    /// XPENDING with a range.
    pub fn pending_range(&self, q: &PendingQuery, now: u64) -> Vec<PendingRow> {
        if q.start > q.end {
            return Vec::new();
        }
        self.pel
            .range(q.start..=q.end)
            .filter(|(_, p)| q.consumer.as_ref().is_none_or(|c| p.consumer == c))
            .filter(|(_, p)| {
                q.min_idle
                    .is_none_or(|m| now.saturating_sub(p.delivery_time) >= m)
            })
            .take(q.count)
            .map(|(id, p)| PendingRow {
                id: *id,
                consumer: p.consumer.clone(),
                idle: now.saturating_sub(p.delivery_time),
                deliveries: p.delivery_count,
            })
            .collect()
    }

    /// XGROUP DELCONSUMER: how many pending entries the consumer had (they
    /// are dropped); `None` when there was no such consumer.
    pub fn delete_consumer(&mut self, name: &[u8]) -> Option<usize> {
        let c = self.consumers.remove(name)?;
        for id in &c.pel {
            self.pel.remove(id);
        }
        Some(c.pel.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::stream::NewId;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn id(ms: u64) -> StreamId {
        StreamId::new(ms, 0)
    }

    /// A stream with entries 1..=n and an empty group at 0-0.
    fn setup(n: u64) -> (Stream, Group) {
        let mut s = Stream::new(1);
        for ms in 1..=n {
            s.add(NewId::Explicit(id(ms)), vec![(b("f"), b("v"))], 0)
                .unwrap();
        }
        let g = Group {
            last_id: StreamId::MIN,
            entries_read: None,
            pel: Default::default(),
            consumers: Default::default(),
        };
        (s, g)
    }

    fn ids(v: &[ReadEntry]) -> Vec<u64> {
        v.iter()
            .map(|e| match e {
                ReadEntry::Full(id, _) | ReadEntry::Deleted(id) => id.ms,
            })
            .collect()
    }

    fn pending_of(g: &Group, c: &'static str) -> Vec<u64> {
        g.consumers[&b(c)].pel.iter().map(|id| id.ms).collect()
    }

    #[test]
    fn new_reads_advance_the_group_and_pend_unless_noack() {
        let (s, mut g) = setup(5);
        let got = g.read(&s, &b("c1"), GroupFrom::New, 2, false, 100);
        assert_eq!(ids(&got), [1, 2]);
        assert_eq!(g.last_id, id(2));
        assert_eq!(g.entries_read, Some(2));
        assert_eq!(pending_of(&g, "c1"), [1, 2]);
        assert_eq!(g.pel[&id(1)].delivery_count, 1);
        // NOACK: delivered and advanced, never pending.
        let got = g.read(&s, &b("c2"), GroupFrom::New, 1, true, 100);
        assert_eq!(ids(&got), [3]);
        assert_eq!(g.last_id, id(3));
        assert!(pending_of(&g, "c2").is_empty());
        assert!(!g.pel.contains_key(&id(3)));
        // Nothing new: empty, and the consumer still exists.
        let (s1, mut g1) = setup(0);
        assert!(g1
            .read(&s1, &b("c"), GroupFrom::New, 0, false, 1)
            .is_empty());
        assert!(g1.consumers.contains_key(&b("c")));
    }

    #[test]
    fn history_reads_redeliver_and_report_deleted_entries() {
        let (mut s, mut g) = setup(3);
        g.read(&s, &b("c"), GroupFrom::New, 0, false, 100);
        s.delete(&[id(2)]);
        let got = g.read(
            &s,
            &b("c"),
            GroupFrom::Pending(StreamId::MIN),
            0,
            false,
            200,
        );
        assert_eq!(got[1], ReadEntry::Deleted(id(2)));
        assert_eq!(ids(&got), [1, 2, 3]);
        assert_eq!(g.pel[&id(1)].delivery_count, 2);
        assert_eq!(g.pel[&id(1)].delivery_time, 200);
        // From an id on, at most COUNT.
        let got = g.read(&s, &b("c"), GroupFrom::Pending(id(2)), 1, false, 300);
        assert_eq!(ids(&got), [2]);
        // Another consumer's history is its own (empty).
        assert!(g
            .read(&s, &b("d"), GroupFrom::Pending(StreamId::MIN), 0, false, 1)
            .is_empty());
    }

    #[test]
    fn ack_and_delconsumer_keep_pel_and_consumers_in_step() {
        let (s, mut g) = setup(4);
        g.read(&s, &b("a"), GroupFrom::New, 2, false, 1);
        g.read(&s, &b("b"), GroupFrom::New, 2, false, 1);
        assert_eq!(g.ack(&[id(1), id(1), id(9)]), 1);
        assert_eq!(pending_of(&g, "a"), [2]);
        assert_eq!(g.delete_consumer(b"b"), Some(2));
        assert_eq!(g.pel.keys().map(|i| i.ms).collect::<Vec<_>>(), [2]);
        assert_eq!(g.delete_consumer(b"b"), None);
        let sum = g.pending_summary();
        assert_eq!(sum.count, 1);
        assert_eq!(sum.bounds, Some((id(2), id(2))));
        assert_eq!(sum.consumers, [(b("a"), 1)]);
    }

    #[test]
    fn claim_respects_idle_and_sets_times_and_counts() {
        let (s, mut g) = setup(3);
        g.read(&s, &b("a"), GroupFrom::New, 0, false, 1_000);
        let claim = |min_idle, ids: &[u64], opts| Claim {
            min_idle,
            ids: ids.iter().map(|ms| id(*ms)).collect(),
            lastid: None,
            opts,
        };
        // Not idle long enough: nothing moves.
        let c = claim(500, &[1], ClaimOpts::default());
        assert_eq!(g.claim(&s, &b("b"), &c, 1_100), Claimed::Entries(vec![]));
        // Idle enough: moves, delivery count grows, time is now.
        let c = claim(500, &[1], ClaimOpts::default());
        let got = g.claim(&s, &b("b"), &c, 1_600);
        assert!(matches!(got, Claimed::Entries(ref e) if ids(e) == [1]));
        assert_eq!(pending_of(&g, "a"), [2, 3]);
        assert_eq!(pending_of(&g, "b"), [1]);
        assert_eq!(g.pel[&id(1)].delivery_count, 2);
        assert_eq!(g.pel[&id(1)].delivery_time, 1_600);
        // IDLE sets the time back, RETRYCOUNT the count; JUSTID replies
        // ids and leaves the count alone.
        let o = ClaimOpts {
            idle: Some(50),
            retrycount: Some(7),
            ..ClaimOpts::default()
        };
        g.claim(&s, &b("b"), &claim(0, &[2], o), 2_000);
        assert_eq!(g.pel[&id(2)].delivery_time, 1_950);
        assert_eq!(g.pel[&id(2)].delivery_count, 7);
        let o = ClaimOpts {
            time: Some(123),
            justid: true,
            ..ClaimOpts::default()
        };
        let got = g.claim(&s, &b("b"), &claim(0, &[3], o), 2_000);
        assert_eq!(got, Claimed::Ids(vec![id(3)]));
        assert_eq!(g.pel[&id(3)].delivery_time, 123);
        assert_eq!(g.pel[&id(3)].delivery_count, 1);
        // FORCE claims an entry nobody had pending, if it exists.
        g.ack(&[id(3)]);
        let force = ClaimOpts {
            force: true,
            ..ClaimOpts::default()
        };
        let got = g.claim(&s, &b("c"), &claim(0, &[3, 99], force), 3_000);
        assert!(matches!(got, Claimed::Entries(ref e) if ids(e) == [3]));
        assert_eq!(g.pel[&id(3)].delivery_count, 1);
        assert!(!g.pel.contains_key(&id(99)));
        // LASTID only moves the group forward.
        let mut c = claim(0, &[], ClaimOpts::default());
        c.lastid = Some(id(2));
        g.claim(&s, &b("c"), &c, 3_000);
        assert_eq!(g.last_id, id(3));
    }

    #[test]
    fn autoclaim_pages_with_a_cursor_and_drops_deleted_entries() {
        let (mut s, mut g) = setup(5);
        g.read(&s, &b("a"), GroupFrom::New, 0, false, 0);
        s.delete(&[id(2)]);
        let a = AutoClaim {
            min_idle: 10,
            start: StreamId::MIN,
            count: 2,
            justid: false,
        };
        let r = g.autoclaim(&s, &b("b"), &a, 100);
        // 1 claimed, 2 found deleted (dropped from the PEL): two done.
        assert!(matches!(r.claimed, Claimed::Entries(ref e) if ids(e) == [1]));
        assert_eq!(r.deleted, [id(2)]);
        assert_eq!(r.next, id(3));
        assert!(!g.pel.contains_key(&id(2)));
        assert_eq!(pending_of(&g, "a"), [3, 4, 5]);
        // The rest, from the cursor; the scan then ends at 0-0.
        let r = g.autoclaim(
            &s,
            &b("b"),
            &AutoClaim {
                start: r.next,
                count: 10,
                justid: true,
                ..a
            },
            100,
        );
        assert_eq!(r.claimed, Claimed::Ids(vec![id(3), id(4), id(5)]));
        assert_eq!(r.next, StreamId::MIN);
        // JUSTID left the delivery counts alone.
        assert_eq!(g.pel[&id(3)].delivery_count, 1);
        // Entries not idle long enough are looked at but not claimed.
        let r = g.autoclaim(
            &s,
            &b("c"),
            &AutoClaim {
                min_idle: 1_000,
                ..a
            },
            100,
        );
        assert_eq!(r.claimed, Claimed::Entries(vec![]));
        assert_eq!(r.next, StreamId::MIN);
        // The budget is count * 10 ids looked at.
        let (s, mut g) = setup(30);
        g.read(&s, &b("a"), GroupFrom::New, 0, false, 100);
        let r = g.autoclaim(&s, &b("b"), &AutoClaim { count: 1, ..a }, 100);
        assert_eq!(r.claimed, Claimed::Entries(vec![]));
        assert_eq!(r.next, id(11));
    }

    #[test]
    fn pending_ranges_filter_by_consumer_and_idle() {
        let (s, mut g) = setup(4);
        g.read(&s, &b("a"), GroupFrom::New, 2, false, 100);
        g.read(&s, &b("b"), GroupFrom::New, 2, false, 500);
        let q = PendingQuery {
            start: StreamId::MIN,
            end: StreamId::MAX,
            count: 10,
            consumer: None,
            min_idle: None,
        };
        let rows = g.pending_range(&q, 1_000);
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[0].idle, rows[0].deliveries), (900, 1));
        let q2 = PendingQuery {
            consumer: Some(b("b")),
            ..q.clone()
        };
        assert_eq!(g.pending_range(&q2, 1_000).len(), 2);
        let q3 = PendingQuery {
            min_idle: Some(600),
            ..q.clone()
        };
        assert_eq!(g.pending_range(&q3, 1_000).len(), 2);
        let q4 = PendingQuery {
            start: id(3),
            end: id(2),
            ..q.clone()
        };
        assert!(g.pending_range(&q4, 1_000).is_empty());
        assert_eq!(
            g.pending_range(&PendingQuery { count: 1, ..q }, 1_000)
                .len(),
            1
        );
    }
}
