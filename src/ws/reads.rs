//! The read ops' answers (`history`, `presence`, `presence_stats`), made
//! at once with the memory engine, or awaited on the session's task with
//! an engine whose reads are round trips (a hookless `Step::Ask`, as
//! publishes and subscribes are): no thread parks while Redis answers.

use serde_json::{json, Value};

use super::protocol::{self as proto, ErrorCode};
use super::session::Session;
use crate::hub::engine::Pending;
use crate::hub::{EngineError, HistoryError, HistoryPage};

/// A read op past its checks.
pub(super) enum Read {
    History(HistoryRead),
    /// Every client and user (`full`), or only their counts.
    Presence {
        channel: String,
        full: bool,
    },
}

/// A `history` op's arguments.
pub(super) struct HistoryRead {
    pub channel: String,
    pub since: Option<(u64, u64)>,
    pub limit: usize,
    pub reverse: bool,
}

impl HistoryRead {
    fn page<'h>(&self, hub: &'h crate::hub::Hub) -> Pending<'h, Result<HistoryPage, HistoryError>> {
        hub.history_pending(
            self.channel.as_bytes(),
            self.since,
            self.limit,
            self.reverse,
        )
    }
}

impl Session {
    /// Whether read ops await the engine (else they are answered at once).
    pub(super) fn reads_await(&self) -> bool {
        self.st.hub.subscribes_await()
    }

    /// Answers `read` now (the memory engine answers at once).
    pub(super) fn read_now(&self, id: &Value, read: Read) {
        let hub = &self.st.hub;
        match read {
            Read::History(h) => self.history_answer(id, h.page(hub).wait()),
            Read::Presence { channel, full } => {
                let ch = channel.as_bytes();
                match hub.presence_stats(ch) {
                    Ok(stats) if full => self.send_large(id, stats.0.saturating_mul(64), || {
                        presence_reply(id, proto::presence_json(hub, ch))
                    }),
                    r => self.stats_answer(id, r),
                }
            }
        }
    }

    /// Answers `read` once the engine has (nothing parks a thread).
    pub(super) async fn read_awaited(&self, id: &Value, read: Read) {
        let hub = &self.st.hub;
        match read {
            Read::History(h) => {
                let r = h.page(hub).await;
                self.history_answer(id, r);
            }
            Read::Presence { channel, full } => {
                let ch = channel.as_bytes();
                match hub.presence_stats_pending(ch).await {
                    Ok(stats) if full => {
                        // A crowded channel's presence is a large reply:
                        // about 64 bytes a client before the user ids and
                        // infos.
                        let v = proto::presence_json_awaited(hub, ch).await;
                        self.send_large(id, stats.0.saturating_mul(64), || presence_reply(id, v))
                    }
                    r => self.stats_answer(id, r),
                }
            }
        }
    }

    fn history_answer(&self, id: &Value, r: Result<HistoryPage, HistoryError>) {
        match r {
            Ok(page) => {
                let estimate = proto::history_estimate(&page.entries);
                self.send_large(id, estimate, || {
                    proto::history_reply(id, &page.entries, page.top, page.epoch)
                });
            }
            Err(HistoryError::Unavailable) => self.error(
                id,
                ErrorCode::Internal,
                &HistoryError::Unavailable.to_string(),
            ),
            Err(HistoryError::Unrecoverable) => self.error(
                id,
                ErrorCode::UnrecoverablePosition,
                &HistoryError::Unrecoverable.to_string(),
            ),
            Err(e) => self.error(id, ErrorCode::NotEnabled, &e.to_string()),
        }
    }

    fn stats_answer(&self, id: &Value, r: Result<(usize, usize), EngineError>) {
        match r {
            Ok((clients, users)) => self.send(proto::reply(
                id,
                json!({ "clients": clients, "users": users }),
            )),
            Err(e) => self.error(id, ErrorCode::Internal, &e.to_string()),
        }
    }
}

fn presence_reply(id: &Value, v: Result<Value, EngineError>) -> bytes::Bytes {
    match v {
        Ok(v) => proto::reply(id, v),
        Err(e) => proto::error(id, ErrorCode::Internal, &e.to_string()),
    }
}
