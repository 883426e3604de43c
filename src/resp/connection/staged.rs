//! Staged PUBLISHes: a client's pipelined PUBLISHes delivered as one step
//! (one push per subscriber in memory mode; one Redis pipeline, awaited on
//! the connection, with a remote engine).

use bytes::Bytes;

use super::{Conn, Then};

/// Consecutive PUBLISHes of one channel, delivered as one step.
pub struct StagedPublish {
    /// The first channel; with a pipelining engine, later PUBLISHes may
    /// name others (`mixed`).
    pub channel: Bytes,
    pub payloads: Vec<Bytes>,
    /// Channels of `payloads` past the first channel's run, when mixed
    /// (`channels[i]` is the channel of `payloads[i]`; empty otherwise).
    channels: Vec<Bytes>,
    bytes: usize,
}

/// Most PUBLISHes (and payload bytes) delivered as one step.
const STAGE_MAX: usize = 64;
const STAGE_MAX_BYTES: usize = 64 * 1024;

impl Conn {
    /// Holds back a PUBLISH (already checked and allowed) so that the
    /// PUBLISHes a client pipelines to one channel reach each subscriber in
    /// one push: one lock and one wake-up per subscriber instead of one per
    /// message. Nothing else can run between them: any other command, any
    /// reply, and the end of the batch of requests deliver them first. Redis
    /// likewise runs a client's pipelined commands without interleaving
    /// other clients', so subscribers see the same messages in the same
    /// order, and each PUBLISH still gets its own reply, in place.
    ///
    /// With an engine whose publishes are round trips
    /// ([`crate::hub::Hub::publishes_pipeline`]), PUBLISHes to other
    /// channels join the batch too, so a pipelining client waits for the
    /// engine about once per batch instead of once per PUBLISH.
    pub fn stage_publish(&mut self, channel: Bytes, payload: Bytes) {
        let mix = self.server.hub.publishes_pipeline();
        if !mix && self.staged.as_ref().is_some_and(|s| s.channel != channel) {
            self.publish_staged();
        }
        let s = self.staged.get_or_insert_with(|| {
            Box::new(StagedPublish {
                channel: channel.clone(),
                payloads: Vec::new(),
                channels: Vec::new(),
                bytes: 0,
            })
        });
        if s.channels.is_empty() && channel != s.channel {
            s.channels = vec![s.channel.clone(); s.payloads.len()];
        }
        if !s.channels.is_empty() {
            s.channels.push(channel);
        }
        s.bytes += payload.len();
        s.payloads.push(payload);
        if s.payloads.len() >= STAGE_MAX || s.bytes >= STAGE_MAX_BYTES {
            self.publish_staged();
        }
    }

    /// Whether `args` is a PUBLISH that joins the staged ones.
    pub fn continues_staged(&self, args: &[Bytes]) -> bool {
        self.staged.as_ref().is_some_and(|s| {
            args.len() == 3
                && args[0].eq_ignore_ascii_case(b"publish")
                && (args[1] == s.channel || self.server.hub.publishes_pipeline())
        })
    }

    /// Delivers the staged PUBLISHes and writes their replies. With an
    /// engine whose publishes are round trips, the connection awaits them
    /// (no thread parks) and runs its next request once they are done.
    pub fn publish_staged(&mut self) {
        let Some(s) = self.staged.take() else {
            return;
        };
        let s = *s;
        let n = s.payloads.len();
        if self.server.hub.publishes_pipeline() {
            let items: Vec<(Bytes, Bytes)> = if s.channels.is_empty() {
                s.payloads
                    .into_iter()
                    .map(|p| (s.channel.clone(), p))
                    .collect()
            } else {
                s.channels.into_iter().zip(s.payloads).collect()
            };
            let hub = self.server.hub.clone();
            self.await_serial(async move {
                let done = hub.publish_pipelined_pending(items).await;
                Box::new(move |conn: &mut Conn| {
                    for r in done {
                        conn.publish_reply(r.map(|p| p.receivers));
                    }
                }) as Then
            });
            return;
        }
        match self.server.hub.publish_batch(s.channel, s.payloads) {
            Ok(counts) => {
                for n in counts {
                    self.reply().int(n as i64);
                }
            }
            Err(e) => {
                let msg = format!("ERR {e}");
                for _ in 0..n {
                    self.reply().error(&msg);
                }
            }
        }
    }

    /// A publish's reply: its receivers, or why the engine refused it.
    pub fn publish_reply(&mut self, r: Result<usize, crate::hub::engine::EngineError>) {
        match r {
            Ok(n) => self.reply().int(n as i64),
            Err(e) => self.reply().error(&format!("ERR {e}")),
        }
    }
}
