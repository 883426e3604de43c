//! The hub's publish paths: every front end's publishes, pipelined
//! batches, shard publishes and the delivery of an XADD to a history
//! channel. Each has a `*_pending` form for callers that await (nothing
//! parks a runtime thread while a remote engine answers).

use bytes::Bytes;

use super::*;

impl Hub {
    /// Publishes `payload` on `channel` to exact and pattern subscribers on
    /// every node, appending it first to the channel's history where its
    /// namespace keeps one.
    pub fn publish(&self, channel: Bytes, payload: Bytes) -> Result<Published, EngineError> {
        self.publish_pending(channel, payload).wait()
    }

    /// [`Hub::publish`], for a caller that awaits (nothing parks a thread
    /// while a remote engine answers).
    pub fn publish_pending(
        &self,
        channel: Bytes,
        payload: Bytes,
    ) -> engine::Pending<'_, Result<Published, EngineError>> {
        let history = self.history_options(&channel);
        self.engine
            .broker
            .publish(channel, payload, history)
            .map(move |r| {
                if let Ok(p) = &r {
                    self.count(p.receivers);
                }
                r
            })
    }

    /// Whether [`Hub::publish_pipelined`] overlaps publishes to distinct
    /// channels (the engine's calls are round trips).
    pub fn publishes_pipeline(&self) -> bool {
        self.engine.broker.pipelines()
    }

    /// Publishes a client's pipelined `(channel, payload)`s: each channel's
    /// in order, one after another; distinct channels overlapping, so a
    /// remote engine is waited for about once, not once per publish.
    /// Returns each one's outcome, in the order given.
    pub fn publish_pipelined(
        &self,
        items: Vec<(Bytes, Bytes)>,
    ) -> Vec<Result<Published, EngineError>> {
        self.publish_pipelined_pending(items).wait()
    }

    /// [`Hub::publish_pipelined`], for a caller that awaits.
    pub fn publish_pipelined_pending(
        &self,
        items: Vec<(Bytes, Bytes)>,
    ) -> engine::Pending<'_, Vec<Result<Published, EngineError>>> {
        let items: Vec<(Bytes, Bytes, Option<engine::HistoryOptions>)> = items
            .into_iter()
            .map(|(c, p)| {
                let h = self.history_options(&c);
                (c, p, h)
            })
            .collect();
        let n = items.len();
        self.engine
            .broker
            .publish_mixed(items)
            .map(move |mut done| {
                // One outcome per publish, whatever the broker answered.
                done.resize_with(n, || Err(EngineError::Unavailable("publish lost".into())));
                for p in done.iter().flatten() {
                    self.count(p.receivers);
                }
                done
            })
    }

    /// Publishes `payloads` on `channel` in order, as one step (a client's
    /// pipelined PUBLISHes to one channel); returns each one's receivers.
    /// Channels with history go one by one (each takes its offset).
    pub fn publish_batch(
        &self,
        channel: Bytes,
        payloads: Vec<Bytes>,
    ) -> Result<Vec<usize>, EngineError> {
        if payloads.len() == 1 || self.history_options(&channel).is_some() {
            return payloads
                .into_iter()
                .map(|p| self.publish(channel.clone(), p).map(|p| p.receivers))
                .collect();
        }
        let counts = self.engine.broker.publish_batch(channel, payloads).wait()?;
        Stats::add(&self.stats.published, counts.len() as u64);
        Stats::add(&self.stats.delivered, counts.iter().sum::<usize>() as u64);
        Ok(counts)
    }

    /// Publishes on a shard channel.
    pub fn spublish(&self, channel: Bytes, payload: Bytes) -> Result<usize, EngineError> {
        self.spublish_pending(channel, payload).wait()
    }

    /// [`Hub::spublish`], for a caller that awaits.
    pub fn spublish_pending(
        &self,
        channel: Bytes,
        payload: Bytes,
    ) -> engine::Pending<'_, Result<usize, EngineError>> {
        self.engine.broker.spublish(channel, payload).map(move |r| {
            if let Ok(n) = r {
                self.count(n);
            }
            r
        })
    }

    /// After an XADD to `key`, under the keyspace lock: where `key` is a
    /// channel with history, the entry is delivered to its subscribers
    /// (payload: the `data` field, or a JSON object of all fields), after
    /// the stream is accounted for and kept within its bounds as publishes
    /// keep it.
    pub fn after_xadd(
        &self,
        db: &mut Db,
        key: &Bytes,
        id: StreamId,
        offset: u64,
        fields: &[(Bytes, Bytes)],
    ) -> usize {
        db.signal(key);
        let Some(opts) = self.history_options(key) else {
            return 0;
        };
        let epoch = engine::memory::MemoryHistory::after_append(
            db,
            key,
            id,
            opts,
            self.cfg.history_max_memory,
        );
        let p = Publication::with_offset(key.clone(), entry_payload(fields), offset, epoch);
        match self.engine.broker.deliver_appended(p).wait() {
            Ok(n) => {
                self.count(n);
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "engine delivery of an XADD failed");
                0
            }
        }
    }
}
