//! The ops that ask the app's backend (`crate::proxy`): `connect` without a
//! token where a connect hook is configured, `subscribe` and `publish`
//! where the namespace sends them to the app. The op's own checks run
//! first (`ops`) and end in a [`Pending`]; the session awaits the call
//! (only this session waits: the others run on) and resumes the op here
//! with the answer. A failed call refuses, with error 112. In engine mode
//! the session awaits the same way (a hookless [`Pending`]) a publish, and
//! a subscribe of a name the node does not carry yet.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::protocol::{self as proto, DisconnectCode, ErrorCode, StreamPosition};
use super::reads::Read;
use super::session::{End, Session};
use crate::auth::Claims;
use crate::hub::engine::{EngineError, Pending as EnginePending};
use crate::hub::{Space, Stats, Ticket};
use crate::proxy::{self, Accepted, Answer, ConnectResult, Failure, Hook};

/// Hook calls one client address may have in flight: an eighth of all.
pub(super) const CALLS_PER_CLIENT: u32 = (crate::proxy::MAX_IN_FLIGHT / 8) as u32;

/// An op waiting for the app's answer.
pub(super) struct Pending {
    id: Value,
    /// `None`: nothing to ask, the engine's publish to await (an engine
    /// whose publishes are round trips parks no thread on them).
    hook: Option<Hook>,
    /// The request's JSON.
    body: Vec<u8>,
    then: Then,
}

/// What the op does once the app allows it.
enum Then {
    Connect,
    Subscribe {
        channel: String,
        since: Option<StreamPosition>,
    },
    Publish {
        channel: String,
        data: Value,
    },
    /// A read op (its checks passed) waiting for the engine.
    Read(Read),
    /// A subscribe (every check before the pattern bounds passed) waiting
    /// for the engine to carry its name to this node.
    Enter {
        channel: String,
        pattern: bool,
        since: Option<StreamPosition>,
        grant: Option<tokio::time::Instant>,
        prepared: EnginePending<'static, Result<Ticket, EngineError>>,
    },
}

impl Session {
    /// Takes one connect hook call from the client address's
    /// `--proxy-connect-rate` bucket; else how long until one passes. An
    /// SSE session's call was taken with its `GET /sse` (refused there
    /// with 429).
    pub(super) fn take_connect_call(&self) -> Result<(), std::time::Duration> {
        if self
            .handshake
            .as_ref()
            .is_some_and(|h| h.transport == Some("sse"))
        {
            return Ok(());
        }
        self.client.take_connect(self.st.cfg.proxy_connect_limit)
    }

    /// `connect` without a token: the upgrade's headers and the client's
    /// `data` go to the connect hook.
    pub(super) fn connect_pending(&mut self, id: &Value, data: Option<Value>) -> Box<Pending> {
        let headers = self.handshake.take().unwrap_or_default();
        Box::new(Pending {
            id: id.clone(),
            hook: Some(Hook::Connect),
            body: proxy::connect_request(
                &self.id.to_string(),
                headers.transport.unwrap_or("websocket"),
                &headers,
                data.as_ref(),
            ),
            then: Then::Connect,
        })
    }

    /// A `subscribe` the namespace's app decides.
    pub(super) fn subscribe_pending(
        &self,
        id: &Value,
        channel: String,
        since: Option<StreamPosition>,
        data: Option<Value>,
    ) -> Box<Pending> {
        let body = proxy::channel_request(
            &self.id.to_string(),
            self.identity.user(),
            &channel,
            data.as_ref(),
        );
        Box::new(Pending {
            id: id.clone(),
            hook: Some(Hook::Subscribe),
            body,
            then: Then::Subscribe { channel, since },
        })
    }

    /// A `publish` the namespace's app validates (and may rewrite).
    pub(super) fn publish_pending(&self, id: &Value, channel: String, data: Value) -> Box<Pending> {
        let body = proxy::channel_request(
            &self.id.to_string(),
            self.identity.user(),
            &channel,
            Some(&data),
        );
        Box::new(Pending {
            id: id.clone(),
            hook: Some(Hook::Publish),
            body,
            then: Then::Publish { channel, data },
        })
    }

    /// A `publish` (every check passed) through an engine whose publishes
    /// are round trips: the session awaits it as it awaits the app.
    pub(super) fn engine_publish(&self, id: &Value, channel: String, data: Value) -> Box<Pending> {
        Box::new(Pending {
            id: id.clone(),
            hook: None,
            body: Vec::new(),
            then: Then::Publish { channel, data },
        })
    }

    /// [`Session::enter`], awaiting the engine first where the node does
    /// not carry the name yet (engine mode).
    pub(super) async fn enter_awaited(
        &mut self,
        id: Option<&Value>,
        name: String,
        pattern: bool,
        since: Option<StreamPosition>,
    ) {
        let mut prepared = None;
        if self.st.hub.subscribes_await() {
            let key = Bytes::copy_from_slice(name.as_bytes());
            let space = (!pattern).then_some(Space::Global);
            prepared = Some(self.st.hub.prepare_subscribe_pending(space, &key).await);
        }
        self.enter(id, name, pattern, since, prepared);
    }

    /// A `subscribe`/`psubscribe` whose name the engine must subscribe
    /// first: the session awaits it as it awaits the app.
    pub(super) fn engine_subscribe(
        &self,
        id: &Value,
        channel: String,
        pattern: bool,
        since: Option<StreamPosition>,
        grant: Option<tokio::time::Instant>,
        prepared: EnginePending<'static, Result<Ticket, EngineError>>,
    ) -> Box<Pending> {
        Box::new(Pending {
            id: id.clone(),
            hook: None,
            body: Vec::new(),
            then: Then::Enter {
                channel,
                pattern,
                since,
                grant,
                prepared,
            },
        })
    }

    /// A read op (its checks passed) through an engine whose reads are
    /// round trips: the session awaits it as it awaits the app.
    pub(super) fn engine_read(&self, id: &Value, read: Read) -> Box<Pending> {
        Box::new(Pending {
            id: id.clone(),
            hook: None,
            body: Vec::new(),
            then: Then::Read(read),
        })
    }

    /// Asks the app and resumes the op with its answer. Shutdown does not
    /// wait for the app. `Some(end)` ends the session.
    pub(super) async fn ask(
        &mut self,
        pending: Box<Pending>,
        shutdown: &CancellationToken,
    ) -> Option<End> {
        let Pending {
            id,
            hook,
            body,
            then,
        } = *pending;
        let Some(hook) = hook else {
            // Shutdown does not wait for the engine either (a paused or
            // unreachable Redis held the node's exit up to its timeout):
            // the publish's outcome is then unknown, as for a RESP client.
            match then {
                Then::Publish { channel, data } => {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return Some(End::Disconnect(DisconnectCode::Shutdown)),
                        () = self.publish_awaited(&id, &channel, &data) => {}
                    }
                }
                Then::Enter {
                    channel,
                    pattern,
                    since,
                    grant,
                    prepared,
                } => {
                    let t = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return Some(End::Disconnect(DisconnectCode::Shutdown)),
                        t = prepared => t,
                    };
                    self.subscribe_prepared(&id, channel, pattern, since, grant, Some(t));
                }
                Then::Read(read) => {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return Some(End::Disconnect(DisconnectCode::Shutdown)),
                        () = self.read_awaited(&id, read) => {}
                    }
                }
                _ => {}
            }
            return None;
        };
        // One address may hold only a share of the calls in flight (all
        // sessions together hold at most proxy::MAX_IN_FLIGHT, 256):
        // its many connections, each waiting on a slow app, would
        // otherwise take every slot, and every other client's call would
        // time out waiting.
        let Some(_call) = self.client.start_call(CALLS_PER_CLIENT) else {
            self.error(
                &id,
                ErrorCode::RateLimited,
                &format!(
                    "{CALLS_PER_CLIENT} calls to the app in flight from this address; retry later"
                ),
            );
            return matches!(then, Then::Connect)
                .then_some(End::Disconnect(DisconnectCode::ConnectRateLimited));
        };
        let proxy = self.st.ws.proxy.clone();
        let answer = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Some(End::Disconnect(DisconnectCode::Shutdown)),
            answer = proxy.call(hook, body) => answer,
        };
        // What the answer leads to may await the engine (a publish, a
        // subscribe of a name the node does not carry yet): shutdown does
        // not wait for it.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Some(End::Disconnect(DisconnectCode::Shutdown)),
            end = self.resume(&id, then, answer) => end,
        }
    }

    async fn resume(
        &mut self,
        id: &Value,
        then: Then,
        answer: Result<Answer, Failure>,
    ) -> Option<End> {
        let connect = matches!(then, Then::Connect);
        let accepted = match answer {
            Err(failure) => {
                // Never allowed: refused with its own code, so clients and
                // operators tell "the app is down" from "the app said no".
                self.error(
                    id,
                    ErrorCode::BackendUnavailable,
                    &format!(
                        "the app's backend could not decide ({}); retry later",
                        failure.reason()
                    ),
                );
                return connect.then_some(End::Disconnect(DisconnectCode::BackendUnavailable));
            }
            Ok(Answer::Disconnect(d)) => return Some(End::App(Box::new(d))),
            Ok(Answer::Refuse(e)) => {
                Stats::add(&self.st.hub.stats().auth_failures, 1);
                let (code, end) = if connect {
                    // As a refused token: the connection ends.
                    (
                        ErrorCode::Unauthorized,
                        Some(End::Disconnect(DisconnectCode::Unauthorized)),
                    )
                } else {
                    (ErrorCode::PermissionDenied, None)
                };
                let message = match e.message.is_empty() {
                    true => "refused by the app",
                    false => e.message.as_str(),
                };
                self.send(proto::error_code(
                    id,
                    e.code.unwrap_or(code as u16),
                    message,
                ));
                return end;
            }
            Ok(Answer::Accept(a)) => a,
        };
        match (then, accepted) {
            (Then::Connect, Accepted::Connect(r)) => return self.accept_connect(id, r).await,
            (Then::Subscribe { channel, since }, Accepted::Subscribe) => {
                self.enter_awaited(Some(id), channel, false, since).await;
            }
            (Then::Publish { channel, data }, Accepted::Publish(replaced)) => {
                self.publish_awaited(id, &channel, replaced.as_ref().unwrap_or(&data))
                    .await;
            }
            // The answer is read for the hook that was called.
            _ => self.error(id, ErrorCode::Internal, "answer for another hook"),
        }
        None
    }

    /// The connect hook accepted: the session becomes its user (as a token
    /// without `subscribe`/`publish` claims would make it), replies, then
    /// enters the channels the app named, with presence, before reading on.
    async fn accept_connect(&mut self, id: &Value, r: ConnectResult) -> Option<End> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let leeway = self.st.cfg.jwt_leeway;
        if r.expire_at
            .is_some_and(|e| std::time::Duration::from_secs(e).saturating_add(leeway) <= now)
        {
            Stats::add(&self.st.hub.stats().auth_failures, 1);
            self.error(
                id,
                ErrorCode::TokenExpired,
                "the app's session has expired (expire_at)",
            );
            return Some(End::Disconnect(DisconnectCode::TokenExpired));
        }
        let mut claims = Claims::new(r.user, r.expire_at.unwrap_or(u64::MAX), None, None);
        claims.info = r.info;
        self.set_identity(Some(Arc::new(claims)));
        self.connected = true;
        self.send(proto::reply(
            id,
            json!({
                "client": self.id.to_string(),
                "user": self.identity.user(),
                "expires": r.expire_at,
                "ping_interval": self.st.cfg.ws_ping_interval.as_secs_f64(),
                "version": env!("CARGO_PKG_VERSION"),
                "channels": r.channels,
            }),
        ));
        let max = self.st.cfg.max_subscriptions;
        for channel in r.channels {
            if self.channels.contains(&channel) {
                continue;
            }
            if self.total_subscriptions() >= max {
                tracing::warn!(client = self.id, max, "connect hook named more channels than the subscription limit; the rest are skipped");
                break;
            }
            self.enter_awaited(None, channel, false, None).await;
        }
        None
    }
}
