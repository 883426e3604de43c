//! One WebSocket session: the task that alone owns the socket.
//!
//! Commands are answered through the session's outbox, in order with the
//! messages publishers push there, exactly as on RESP: a `subscribe` reply
//! is queued before the subscription becomes visible, so it always precedes
//! the channel's first message. One `select!` serves the socket, the outbox,
//! liveness pings, token expiry and shutdown; while a batch is being
//! written the socket is read too, so a client's Close is answered at once.
//!
//! Replies count against the connection's output limits like deliveries,
//! and large ones (history, presence, recovery, leaderboards) are first
//! checked against the server-wide output budget.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant as TInstant;

use super::protocol::{self as proto, Command, DisconnectCode, ErrorCode};
use crate::auth::{Identity, TokenError};
use crate::http::AppState;
use crate::hub::presence::PresenceEntry;
use crate::hub::{
    ClientId, Delivery, DeliveryKind, HistoryError, Outbox, Publication, Space, Stats, Subscriber,
    WireFormat,
};

/// The subscriber side of a session.
///
/// Messages of channels with history are never dropped for a slow reader:
/// past `lag_bytes` of pending output, the sink stops queuing that channel
/// and records the last offset it queued; the session later catches up
/// from the history (or, if the history no longer reaches back that far,
/// disconnects with "insufficient state" so the client resubscribes).
pub struct WsSink {
    pub outbox: Arc<Outbox>,
    lag: Mutex<LagState>,
    lag_bytes: usize,
}

#[derive(Default)]
struct LagState {
    /// Last offset queued, per history channel.
    last: HashMap<Bytes, u64>,
    /// Channels being caught up, with the last offset queued before.
    lagged: HashMap<Bytes, u64>,
    /// The history epoch each channel was subscribed at.
    epochs: HashMap<Bytes, u64>,
    /// A channel's history was replaced under a live subscription: the
    /// client must resubscribe (insufficient state).
    broken: bool,
}

impl LagState {
    fn forget(&mut self, channel: &[u8]) {
        self.last.remove(channel);
        self.lagged.remove(channel);
        self.epochs.remove(channel);
    }
}

impl WsSink {
    fn lag(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::hub::leaderboard::LeaderboardSink for WsSink {
    fn leaderboard(&self, key: &[u8], entries: &[(Bytes, f64)], own: Option<(usize, f64)>) {
        let v = proto::leaderboard_json(key, entries, own, true);
        self.outbox.push(Bytes::from(v.to_string()));
    }
}

impl Subscriber for WsSink {
    fn deliver(&self, d: &Delivery<'_>) {
        let frame = d.encoded(WireFormat::Json, proto::encode_delivery);
        let p = d.publication;
        let (DeliveryKind::Message, Some(offset)) = (d.kind, p.offset) else {
            self.outbox.push(frame);
            return;
        };
        // History channels: runs under the keyspace lock, like catch-up.
        let mut lag = self.lag();
        if p.epoch.is_some()
            && lag
                .epochs
                .get(&p.channel)
                .is_some_and(|e| Some(*e) != p.epoch)
        {
            // The stream was recreated (deleted, expired, flushed): offsets
            // restarted, so the client's position means nothing any more.
            lag.broken = true;
            drop(lag);
            self.outbox.wake();
            return;
        }
        if lag.lagged.contains_key(&p.channel) {
            return;
        }
        if self.outbox.pending_bytes() > self.lag_bytes {
            let last = lag.last.get(&p.channel).copied().unwrap_or(offset - 1);
            lag.lagged.insert(p.channel.clone(), last);
            drop(lag);
            self.outbox.wake();
            return;
        }
        if self.outbox.push(frame) {
            lag.last.insert(p.channel.clone(), offset);
        }
    }
}

struct Session {
    st: AppState,
    id: ClientId,
    sink: Arc<WsSink>,
    identity: Identity,
    /// `connect` was sent (it may be sent once).
    connected: bool,
    channels: HashSet<String>,
    patterns: HashSet<String>,
    leaderboards: HashSet<String>,
    expires_at: Option<tokio::time::Instant>,
    publishes: VecDeque<Instant>,
}

/// How far ahead any deadline is set at most. Deadlines come from a
/// client's token (`exp`, up to `u64::MAX` seconds) and from the config;
/// `Instant + Duration` panics on overflow, and tokio's timer adds to the
/// deadline again, so they are capped well inside the clock's range.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `base + d`, capped at [`FAR_FUTURE`]: never panics.
fn later(base: TInstant, d: Duration) -> TInstant {
    base + d.min(FAR_FUTURE)
}

/// When a token with expiry `exp` (Unix seconds, from the client) runs out.
fn expiry_instant(exp: u64, leeway: Duration) -> TInstant {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp)
        .saturating_sub(now_unix)
        .saturating_add(leeway);
    later(TInstant::now(), left)
}

/// Smallest reply held to the global output budget: acknowledgements and
/// errors cost less than refusing them would.
const LARGE_REPLY: usize = 16 * 1024;

/// How long a closing handshake may take: the Close frame (after pending
/// replies) out, and the peer's Close or EOF in.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The socket is gone (EOF, reset, write error): nothing more to send.
    Gone,
    /// The client sent a Close frame: it is answered with a Close
    /// (RFC 6455 §5.5.1), then TCP is closed.
    ClosedByClient,
    /// A `disconnect` push, then a Close frame with the same code.
    Disconnect(DisconnectCode),
    /// A Close frame with a WebSocket protocol code (RFC 6455 §7.4.1) and
    /// no push: the client broke the framing itself (1007 invalid UTF-8,
    /// 1002 protocol error).
    Violation(u16, &'static str),
}

/// Why a large reply was not queued.
enum Refusal {
    /// The reply alone is larger than the connection's hard limit: error
    /// 106; the client may ask for less (a smaller `limit`).
    TooLarge,
    /// The global output budget is spent: error 109; retry later.
    Busy,
}

impl Session {
    /// Queues a reply. Replies count against the output limits as
    /// deliveries do: past the hard limit the outbox closes and the
    /// session ends with the slow-consumer code.
    fn send(&self, frame: Bytes) {
        self.sink.outbox.push(frame);
    }

    /// Whether a reply of about `len` bytes may be queued. Small replies
    /// always may; a large one must fit the connection's hard limit on its
    /// own and the server-wide budget (checked, not reserved: concurrent
    /// sessions may overshoot it by one reply each).
    fn admit(&self, len: usize) -> Result<(), Refusal> {
        if len < LARGE_REPLY {
            return Ok(());
        }
        if len > super::max_reply(&self.st.cfg) {
            return Err(Refusal::TooLarge);
        }
        if !self.st.ws.output.fits(len) {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    fn refuse(&self, id: &Value, why: Refusal, len: usize) {
        match why {
            Refusal::TooLarge => self.error(
                id,
                ErrorCode::LimitExceeded,
                &format!(
                    "reply of {len} bytes exceeds the output limit ({} bytes); ask for less",
                    super::max_reply(&self.st.cfg)
                ),
            ),
            Refusal::Busy => {
                tracing::debug!(
                    client = self.id,
                    len,
                    "large reply refused: output budget spent"
                );
                self.error(
                    id,
                    ErrorCode::Busy,
                    "server output budget exhausted; retry later",
                )
            }
        }
    }

    /// Queues a large reply built by `build` after checking its estimated
    /// size, then its real size.
    fn send_large(&self, id: &Value, estimate: usize, build: impl FnOnce() -> Bytes) {
        if let Err(why) = self.admit(estimate) {
            return self.refuse(id, why, estimate);
        }
        let frame = build();
        match self.admit(frame.len()) {
            Ok(()) => self.send(frame),
            Err(why) => self.refuse(id, why, frame.len()),
        }
    }

    fn error(&self, id: &Value, code: ErrorCode, msg: &str) {
        self.send(proto::error(id, code, msg));
    }

    fn total_subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.leaderboards.len()
    }

    /// Answers `LimitExceeded` (and returns false) when one more
    /// subscription would pass this connection's limit: the lower
    /// `--anonymous-max-subscriptions` for clients without a token.
    fn check_subscription_limit(&self, id: &Value) -> bool {
        let cfg = &self.st.cfg;
        let (max, who) = match self.identity {
            Identity::Anonymous => (
                cfg.max_subscriptions.min(cfg.anonymous_max_subscriptions),
                "anonymous connection",
            ),
            _ => (cfg.max_subscriptions, "connection"),
        };
        if self.total_subscriptions() >= max {
            self.error(
                id,
                ErrorCode::LimitExceeded,
                &format!("max subscriptions per {who} reached ({max})"),
            );
            return false;
        }
        true
    }

    fn set_identity(&mut self, claims: Option<Arc<crate::auth::Claims>>) {
        match claims {
            Some(c) => {
                self.expires_at = Some(expiry_instant(c.exp, self.st.cfg.jwt_leeway));
                self.identity = Identity::User(c);
            }
            None => {
                self.expires_at = None;
                self.identity = self.st.auth.unauthenticated();
            }
        }
    }

    fn token_error(&self, id: &Value, e: &TokenError) {
        Stats::add(&self.st.hub.stats.auth_failures, 1);
        let code = match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        };
        self.error(id, code, &e.to_string());
    }

    /// Handles one text frame. `Some(code)` ends the session with that
    /// disconnect (after the replies already queued).
    fn handle(&mut self, text: &str) -> Option<DisconnectCode> {
        let cmd = match proto::parse_command(text) {
            Ok(c) => c,
            Err(bad) => {
                self.error(&bad.id, ErrorCode::BadRequest, &bad.message);
                return None;
            }
        };
        let started = Instant::now();
        let end = self.dispatch(&cmd);
        self.st
            .metrics
            .observe_command("ws", &cmd.op, started.elapsed());
        end
    }

    /// A frame read from the socket (or its end). `Some(end)` ends the
    /// session.
    fn receive(&mut self, msg: Option<Result<Message, axum::Error>>) -> Option<End> {
        match msg {
            None => Some(End::Gone),
            Some(Ok(Message::Close(_))) => Some(End::ClosedByClient),
            Some(Err(e)) => {
                tracing::debug!(client = self.id, error = %e, "websocket read error");
                Some(read_error(&e))
            }
            Some(Ok(Message::Text(t))) => {
                if t.len() > self.st.cfg.ws_max_message_size {
                    return Some(End::Disconnect(DisconnectCode::MessageTooBig));
                }
                self.handle(t.as_str()).map(End::Disconnect)
            }
            Some(Ok(Message::Binary(_))) => Some(End::Disconnect(DisconnectCode::BadRequest)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
        }
    }

    fn dispatch(&mut self, cmd: &Command) -> Option<DisconnectCode> {
        let id = &cmd.id;
        macro_rules! parse {
            ($t:ty) => {
                match proto::args::<$t>(cmd) {
                    Ok(a) => a,
                    Err(m) => {
                        self.error(id, ErrorCode::BadRequest, &m);
                        return None;
                    }
                }
            };
        }
        match cmd.op.as_str() {
            "connect" => {
                let a = parse!(proto::ConnectArgs);
                if self.connected {
                    self.error(id, ErrorCode::AlreadyConnected, "already connected");
                    return None;
                }
                if let Some(token) = &a.token {
                    // A refused token ends the connection: staying open as
                    // anonymous would let a forged or expired token through
                    // to whatever anonymous clients may use, and would hide
                    // the failure from clients that do not read the reply.
                    match self.st.auth.verify_token(token) {
                        Ok(c) if self.identity.user().is_some_and(|u| u != c.sub) => {
                            Stats::add(&self.st.hub.stats.auth_failures, 1);
                            self.error(
                                id,
                                ErrorCode::Unauthorized,
                                "token is for another user than the URL's token",
                            );
                            return Some(DisconnectCode::Unauthorized);
                        }
                        Ok(c) => self.set_identity(Some(c)),
                        Err(e) => {
                            self.token_error(id, &e);
                            return Some(match e {
                                TokenError::Expired => DisconnectCode::TokenExpired,
                                _ => DisconnectCode::Unauthorized,
                            });
                        }
                    }
                }
                self.connected = true;
                let claims = self.identity.claims();
                self.send(proto::reply(
                    id,
                    json!({
                        "client": self.id.to_string(),
                        "user": self.identity.user(),
                        "expires": claims.map(|c| c.exp),
                        "ping_interval": self.st.cfg.ws_ping_interval.as_secs_f64(),
                        "version": env!("CARGO_PKG_VERSION"),
                    }),
                ));
            }
            "refresh" => {
                let a = parse!(proto::TokenArgs);
                match self.st.auth.verify_token(&a.token) {
                    Ok(c) => {
                        if let Some(old) = self.identity.user() {
                            if old != c.sub {
                                self.error(
                                    id,
                                    ErrorCode::Unauthorized,
                                    "refresh token is for another user",
                                );
                                return None;
                            }
                        }
                        let exp = c.exp;
                        self.set_identity(Some(c));
                        self.send(proto::reply(id, json!({ "expires": exp })));
                    }
                    // The current token stays in force until it expires.
                    Err(e) => self.token_error(id, &e),
                }
            }
            "ping" => self.send(proto::reply(id, json!({}))),
            "subscribe" => {
                let a = parse!(proto::SubscribeArgs);
                self.subscribe(id, a.channel, false, a.since);
            }
            "psubscribe" => {
                let a = parse!(proto::PatternArgs);
                self.subscribe(id, a.pattern, true, None);
            }
            "unsubscribe" => {
                let a = parse!(proto::ChannelArgs);
                if self.channels.remove(&a.channel) {
                    let hub = &self.st.hub;
                    hub.registry
                        .unsubscribe(Space::Global, a.channel.as_bytes(), self.id);
                    hub.presence_leave(a.channel.as_bytes(), self.id);
                    self.sink.lag().forget(a.channel.as_bytes());
                    self.st.ws.subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
                self.send(proto::reply(id, json!({})));
            }
            "punsubscribe" => {
                let a = parse!(proto::PatternArgs);
                if self.patterns.remove(&a.pattern) {
                    self.st
                        .hub
                        .registry
                        .punsubscribe(a.pattern.as_bytes(), self.id);
                    self.st.ws.subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
                self.send(proto::reply(id, json!({})));
            }
            "publish" => {
                let a = parse!(proto::PublishArgs);
                self.publish(id, a);
            }
            "presence" | "presence_stats" => {
                let a = parse!(proto::ChannelArgs);
                let ch = a.channel.as_bytes();
                let ns = self.st.cfg.namespace(ch);
                if !self.identity.can_subscribe(ch, ns) {
                    Stats::add(&self.st.hub.stats.auth_failures, 1);
                    self.error(id, ErrorCode::PermissionDenied, "permission denied");
                } else if !ns.presence {
                    self.error(
                        id,
                        ErrorCode::NotEnabled,
                        "presence is not enabled for this channel's namespace",
                    );
                } else if cmd.op == "presence" {
                    // A crowded channel's presence is a large reply: about
                    // 64 bytes a client before the user ids and infos.
                    let (clients, _) = self.st.hub.presence.stats(ch);
                    self.send_large(id, clients.saturating_mul(64), || {
                        proto::reply(id, proto::presence_json(&self.st.hub, ch))
                    });
                } else {
                    let (clients, users) = self.st.hub.presence.stats(ch);
                    self.send(proto::reply(
                        id,
                        json!({ "clients": clients, "users": users }),
                    ));
                }
            }
            "history" => {
                let a = parse!(proto::HistoryArgs);
                self.history(id, a);
            }
            "leaderboard_subscribe" => {
                let a = parse!(proto::LeaderboardArgs);
                self.leaderboard_subscribe(id, a);
            }
            "leaderboard_unsubscribe" => {
                let a = parse!(proto::KeyArgs);
                if self.leaderboards.remove(&a.key) {
                    self.st.hub.leaderboards.unwatch(a.key.as_bytes(), self.id);
                }
                self.send(proto::reply(id, json!({})));
            }
            other => self.error(id, ErrorCode::UnknownOp, &format!("unknown op '{other}'")),
        }
        None
    }

    fn check_name(&self, id: &Value, name: &str) -> bool {
        if name.is_empty() || name.len() > self.st.cfg.max_channel_length {
            self.error(
                id,
                ErrorCode::InvalidChannel,
                &format!(
                    "channel names and patterns must be 1 to {} bytes",
                    self.st.cfg.max_channel_length
                ),
            );
            return false;
        }
        true
    }

    fn subscribe(
        &mut self,
        id: &Value,
        name: String,
        pattern: bool,
        since: Option<proto::StreamPosition>,
    ) {
        if !self.check_name(id, &name) {
            return;
        }
        let cfg = &self.st.cfg;
        if pattern && name.len() > cfg.max_pattern_length {
            // A pattern's matching cost grows with its length on every
            // publish it is checked against.
            self.error(
                id,
                ErrorCode::InvalidChannel,
                &format!("patterns must be at most {} bytes", cfg.max_pattern_length),
            );
            return;
        }
        let allowed = if pattern {
            self.identity.can_psubscribe(
                name.as_bytes(),
                &cfg.namespaces_for_pattern(name.as_bytes()),
            )
        } else {
            self.identity
                .can_subscribe(name.as_bytes(), cfg.namespace(name.as_bytes()))
        };
        if !allowed {
            Stats::add(&self.st.hub.stats.auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return;
        }
        let set = if pattern {
            &self.patterns
        } else {
            &self.channels
        };
        if set.contains(&name) {
            self.send(proto::reply(id, json!({})));
            return;
        }
        if !self.check_subscription_limit(id) {
            return;
        }
        let key = Bytes::copy_from_slice(name.as_bytes());
        if !pattern && cfg.namespace(name.as_bytes()).history_size > 0 {
            let hub = self.st.hub.clone();
            let mut db = hub.keyspace.lock();
            if let Ok((top, epoch)) = hub.history_position(&mut db, &key) {
                // Under the keyspace lock no publish to this channel can
                // slip between the history read and the registration: the
                // replay and the live messages meet with no gap and no
                // duplicate.
                let mut result = json!({ "offset": top, "epoch": epoch.to_string() });
                let mut frames = Vec::new();
                if let Some(since) = since {
                    let pos = since.epoch.parse::<u64>().ok().map(|e| (since.offset, e));
                    let cap = cfg.recovery_max_messages;
                    let missed = pos.and_then(|p| hub.missed_since(&mut db, &key, p, cap));
                    match missed.map(|m| self.replay_frames(&key, epoch, m)) {
                        Some(Ok(f)) => {
                            result["recovered"] = json!(true);
                            frames = f;
                        }
                        // More than the connection could ever hold: as for
                        // a gap past --recovery-max-messages, the client
                        // refetches its state instead.
                        Some(Err(Refusal::TooLarge)) | None => result["recovered"] = json!(false),
                        Some(Err(Refusal::Busy)) => {
                            drop(db);
                            return self.refuse(id, Refusal::Busy, 0);
                        }
                    }
                }
                self.send(proto::reply(id, result));
                for frame in frames {
                    self.send(frame);
                }
                {
                    let mut lag = self.sink.lag();
                    lag.forget(&key);
                    lag.last.insert(key.clone(), top);
                    lag.epochs.insert(key.clone(), epoch);
                }
                hub.registry
                    .subscribe(Space::Global, key.clone(), self.id, self.sink.clone());
                drop(db);
                self.enter_presence(&key);
                self.channels.insert(name);
                self.st.ws.subscriptions.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // Reply first: it must precede the first message.
        self.send(proto::reply(id, json!({})));
        let reg = &self.st.hub.registry;
        if pattern {
            reg.psubscribe(key, self.id, self.sink.clone());
            self.patterns.insert(name);
        } else {
            reg.subscribe(Space::Global, key.clone(), self.id, self.sink.clone());
            self.enter_presence(&key);
            self.channels.insert(name);
        }
        self.st.ws.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// The `message` pushes replaying `missed` publications of `channel`,
    /// if their size is admitted (estimated first, so a refused replay is
    /// never encoded).
    fn replay_frames(
        &self,
        channel: &Bytes,
        epoch: u64,
        missed: Vec<(u64, Bytes)>,
    ) -> Result<Vec<Bytes>, Refusal> {
        let per_frame = channel.len() + 64;
        let estimate = missed
            .iter()
            .fold(0usize, |n, (_, p)| n.saturating_add(p.len() + per_frame));
        self.admit(estimate)?;
        let frames: Vec<Bytes> = missed
            .into_iter()
            .map(|(offset, payload)| {
                let p = Publication::with_offset(channel.clone(), payload, offset, epoch);
                proto::encode_delivery(&Delivery::direct(&p, DeliveryKind::Message))
            })
            .collect();
        self.admit(frames.iter().map(Bytes::len).sum())?;
        Ok(frames)
    }

    fn leaderboard_subscribe(&mut self, id: &Value, a: proto::LeaderboardArgs) {
        if !self.check_name(id, &a.key) {
            return;
        }
        if a.top == 0 || a.top > 100 {
            self.error(id, ErrorCode::BadRequest, "top must be 1 to 100");
            return;
        }
        if !self.leaderboards.contains(&a.key) && !self.check_subscription_limit(id) {
            return;
        }
        let key = a.key.as_bytes();
        if !self.identity.can_subscribe(key, self.st.cfg.namespace(key)) {
            Stats::add(&self.st.hub.stats.auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return;
        }
        let hub = self.st.hub.clone();
        let user = self.identity.user().map(str::to_string);
        let (entries, own) = hub.leaderboard_top(key, a.top, user.as_deref());
        // Members are any bytes a RESP client wrote: a top 100 can be large.
        let reply = proto::reply(id, proto::leaderboard_json(key, &entries, own, false));
        if let Err(why) = self.admit(reply.len()) {
            return self.refuse(id, why, reply.len());
        }
        hub.leaderboards.watch(
            Bytes::copy_from_slice(key),
            self.id,
            self.sink.clone(),
            a.top,
            user,
            entries,
        );
        // A tick between the read and the registration would be missed:
        // mark the key so the next tick compares once more.
        hub.leaderboards.mark(&Bytes::copy_from_slice(key));
        self.leaderboards.insert(a.key.clone());
        self.send(reply);
    }

    /// Identified clients enter the presence of channels that track it.
    fn enter_presence(&self, channel: &Bytes) {
        if let Identity::User(c) = &self.identity {
            self.st.hub.presence_join(
                channel,
                PresenceEntry {
                    client: self.id,
                    user: c.sub.clone(),
                    info: c.info.clone(),
                    joined: crate::hub::now_ms() / 1000,
                },
            );
        }
    }

    fn history(&mut self, id: &Value, a: proto::HistoryArgs) {
        if !self.check_name(id, &a.channel) {
            return;
        }
        let ch = a.channel.as_bytes();
        if !self.identity.can_subscribe(ch, self.st.cfg.namespace(ch)) {
            Stats::add(&self.st.hub.stats.auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return;
        }
        let since = match a.since {
            Some(p) => match p.epoch.parse::<u64>() {
                Ok(e) => Some((p.offset, e)),
                Err(_) => {
                    self.error(
                        id,
                        ErrorCode::UnrecoverablePosition,
                        &HistoryError::Unrecoverable.to_string(),
                    );
                    return;
                }
            },
            None => None,
        };
        // No cap on `limit` of its own: the reply's size is what is
        // bounded (the connection's hard limit, the global budget).
        let limit = a.limit.unwrap_or(usize::MAX);
        match self.st.hub.history(ch, since, limit, a.reverse) {
            Ok(page) => {
                let estimate = proto::history_estimate(&page.entries);
                self.send_large(id, estimate, || {
                    proto::history_reply(id, &page.entries, page.top, page.epoch)
                });
            }
            Err(HistoryError::Unrecoverable) => self.error(
                id,
                ErrorCode::UnrecoverablePosition,
                &HistoryError::Unrecoverable.to_string(),
            ),
            Err(e) => self.error(id, ErrorCode::NotEnabled, &e.to_string()),
        }
    }

    /// Catches lagged history channels up from their history, within a
    /// budget of output. `Err` when a channel's history no longer reaches
    /// back to where its subscriber fell behind.
    fn catch_up(&mut self) -> Result<(), DisconnectCode> {
        let hub = self.st.hub.clone();
        let mut db = hub.keyspace.lock();
        let mut lag = self.sink.lag();
        let budget = self.sink.lag_bytes / 2;
        let channels: Vec<(Bytes, u64)> = lag.lagged.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (ch, last) in channels {
            let Ok(Some(s)) = db.stream(&ch) else {
                return Err(DisconnectCode::InsufficientState);
            };
            if lag.epochs.get(&ch) != Some(&s.epoch) {
                return Err(DisconnectCode::InsufficientState);
            }
            let Some(entries) = s.since_offset(last, usize::MAX) else {
                return Err(DisconnectCode::InsufficientState);
            };
            let mut upto = last;
            for e in entries {
                if self.sink.outbox.pending_bytes() > budget {
                    break;
                }
                let p = Publication::with_offset(
                    ch.clone(),
                    crate::hub::entry_payload(&e.fields),
                    e.offset,
                    s.epoch,
                );
                self.sink
                    .outbox
                    .push(proto::encode_delivery(&Delivery::direct(
                        &p,
                        DeliveryKind::Message,
                    )));
                upto = e.offset;
            }
            if upto == s.top_offset() {
                lag.lagged.remove(&ch);
            } else {
                lag.lagged.insert(ch.clone(), upto);
            }
            lag.last.insert(ch, upto);
        }
        Ok(())
    }

    fn publish(&mut self, id: &Value, a: proto::PublishArgs) {
        if !self.check_name(id, &a.channel) {
            return;
        }
        let ns = self.st.cfg.namespace(a.channel.as_bytes());
        if !self.identity.can_publish(a.channel.as_bytes(), ns) {
            Stats::add(&self.st.hub.stats.auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return;
        }
        let rate = self.st.cfg.ws_publish_rate as usize;
        if rate > 0 {
            let now = Instant::now();
            while self
                .publishes
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                self.publishes.pop_front();
            }
            if self.publishes.len() >= rate {
                self.error(
                    id,
                    ErrorCode::RateLimited,
                    &format!("rate limit: {rate} publishes per second"),
                );
                return;
            }
            self.publishes.push_back(now);
        }
        let payload = crate::hub::payload::from_json_value(&a.data);
        self.st
            .hub
            .publish(Bytes::copy_from_slice(a.channel.as_bytes()), payload);
        self.send(proto::reply(id, json!({})));
    }

    /// Leaves every channel, pattern, presence and leaderboard. Idempotent:
    /// `Drop` runs it again, so a panic cannot leave ghosts behind.
    fn cleanup(&mut self) {
        self.sink.outbox.close();
        let reg = &self.st.hub.registry;
        let n = self.channels.len() + self.patterns.len();
        for c in self.channels.drain() {
            reg.unsubscribe(Space::Global, c.as_bytes(), self.id);
            self.st.hub.presence_leave(c.as_bytes(), self.id);
        }
        for p in self.patterns.drain() {
            reg.punsubscribe(p.as_bytes(), self.id);
        }
        self.st.ws.subscriptions.fetch_sub(n, Ordering::Relaxed);
        for k in self.leaderboards.drain() {
            self.st.hub.leaderboards.unwatch(k.as_bytes(), self.id);
        }
    }
}

/// Pending output past which history channels switch to catch-up: half the
/// hard limit, so a lagging reader never reaches it through them.
fn lag_threshold(l: &crate::hub::OutputLimits) -> usize {
    match (l.hard_bytes, l.soft_bytes) {
        (0, 0) => 16 << 20,
        (0, soft) => soft,
        (hard, 0) => hard / 2,
        (hard, soft) => (hard / 2).min(soft),
    }
}

/// The end a read error calls for: the client's own protocol faults are
/// answered with their WebSocket close codes, anything else means the
/// socket is gone.
fn read_error(e: &axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>());
    match inner {
        // RFC 6455 §8.1: a text message that is not UTF-8 fails the
        // connection with 1007.
        Some(WsError::Utf8(_)) => End::Violation(1007, "invalid UTF-8 in a text frame"),
        Some(WsError::Capacity(_)) => End::Disconnect(DisconnectCode::MessageTooBig),
        Some(WsError::Protocol(_)) => End::Violation(1002, "protocol error"),
        _ => End::Gone,
    }
}

/// Ends the session on the wire, briefly: a client that does not read is
/// not waited for longer than [`CLOSE_WAIT`].
///
/// `pending` (replies queued before the end, such as a refused
/// `connect`'s error) goes out before the `disconnect` push. After our
/// Close frame the peer's is awaited: closing TCP with unread input would
/// reset the connection, and the client could lose the Close frame.
async fn finish(socket: &mut WebSocket, end: End, pending: VecDeque<Bytes>) {
    let (code, reason, push) = match end {
        End::Gone => return,
        End::ClosedByClient => {
            // tungstenite queued the answering Close when it read the
            // client's; flushing sends it (after any frame begun before).
            let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
            return;
        }
        End::Disconnect(code) => (code as u16, code.reason(), Some(code.push())),
        End::Violation(code, reason) => (code, reason, None),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        for frame in pending {
            if let Ok(text) = Utf8Bytes::try_from(frame) {
                socket.feed(Message::Text(text)).await?;
            }
        }
        if let Some(push) = push {
            socket.feed(Message::Text(Utf8Bytes::from(push))).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await?;
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    })
    .await;
}

/// Runs one session to its end.
///
/// A plain function returning an `async move` block, not an `async fn`: an
/// async fn keeps its arguments twice in its future (as captured and as
/// locals, rust-lang/rust#62958), and this future is most of what an idle
/// connection costs.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub fn run(
    mut socket: WebSocket,
    st: AppState,
    url_token: Option<String>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let id = st.hub.next_client_id();
        Stats::add(&st.hub.stats.connections_total, 1);
        st.ws.open.fetch_add(1, Ordering::Relaxed);
        let mut s = Session {
            id,
            sink: Arc::new(WsSink {
                outbox: Arc::new(Outbox::with_budget(
                    st.cfg.output_limits,
                    st.ws.output.clone(),
                )),
                lag: Mutex::new(LagState::default()),
                lag_bytes: lag_threshold(&st.cfg.output_limits),
            }),
            identity: st.auth.unauthenticated(),
            connected: false,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            leaderboards: HashSet::new(),
            expires_at: None,
            publishes: VecDeque::new(),
            st,
        };
        let refused = match url_token.map(|t| s.st.auth.verify_token(&t)) {
            Some(Err(e)) => {
                Stats::add(&s.st.hub.stats.auth_failures, 1);
                tracing::debug!(client = id, error = %e, "websocket token refused");
                Some(match e {
                    TokenError::Expired => DisconnectCode::TokenExpired,
                    _ => DisconnectCode::Unauthorized,
                })
            }
            Some(Ok(claims)) => {
                s.set_identity(Some(claims));
                None
            }
            None => None,
        };
        // Frames taken from the outbox and not yet written.
        let mut batch = VecDeque::new();
        // One await of the session loop (each await point is space in this
        // future, which every idle connection keeps).
        let end = match refused {
            Some(code) => End::Disconnect(code),
            None => serve(&mut socket, &mut s, &mut batch).await,
        };
        match end {
            // Replies still queued go out before the disconnect, in order
            // (a refused `connect` has its error reply there), except to a
            // client that is not reading anyway.
            End::Disconnect(code)
                if !matches!(code, DisconnectCode::Slow | DisconnectCode::NoPong) =>
            {
                s.sink.outbox.take(&mut batch);
            }
            _ => batch.clear(),
        }
        s.cleanup();
        if end == End::Disconnect(DisconnectCode::Slow) {
            Stats::add(&s.st.hub.stats.slow_disconnects, 1);
            tracing::warn!(
                client = id,
                "websocket client closed for overcoming of output buffer limits"
            );
        }
        // Boxed: the closing handshake takes space only while it runs.
        Box::pin(finish(&mut socket, end, batch)).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cleanup();
        self.st.ws.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The session loop. Returns how the session ends.
async fn serve(socket: &mut WebSocket, s: &mut Session, batch: &mut VecDeque<Bytes>) -> End {
    let sink = s.sink.clone();
    let outbox = &sink.outbox;
    let shutdown = s.st.ws.shutdown.clone();
    let cfg = s.st.cfg.clone();
    // A socket that accepts nothing for this long belongs to a client that
    // stopped reading.
    let stall = cfg.ws_ping_interval.saturating_add(cfg.ws_pong_timeout);
    // One timer for every deadline (next ping, pong due, token expiry): most
    // sessions are idle, and each timer is memory they keep.
    let mut next_ping = later(TInstant::now(), cfg.ws_ping_interval);
    let mut awaiting_pong: Option<TInstant> = None;
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    let mut armed = next_ping;
    // Bytes handed to tungstenite and not yet flushed to the socket. They
    // stay counted as pending output (and in the global budget) until the
    // flush: tungstenite copies each frame into its own write buffer, so a
    // large reply handed over is still memory held for this client.
    let mut unflushed = 0usize;
    let mut stall_deadline: Option<TInstant> = None;
    loop {
        if sink.lag().broken {
            return End::Disconnect(DisconnectCode::InsufficientState);
        }
        if outbox.pending_bytes() < sink.lag_bytes / 2 && !sink.lag().lagged.is_empty() {
            if let Err(code) = s.catch_up() {
                return End::Disconnect(code);
            }
        }
        outbox.take(batch);
        if outbox.overflowed().is_some() {
            return End::Disconnect(DisconnectCode::Slow);
        }
        // A phase cut short by an incoming frame may have fed everything
        // but not flushed it yet: finishing that is a write phase too.
        if !batch.is_empty() || unflushed > 0 {
            // Boxed: the write path's futures live on the heap only while a
            // write is in flight, keeping idle sessions small.
            // The stall deadline runs from the start of the batch, not of
            // each phase: a client that keeps sending (each frame ends a
            // phase early) but reads nothing is still cut off.
            let deadline = *stall_deadline.get_or_insert_with(|| later(TInstant::now(), stall));
            let write = write_phase(socket, batch, &mut unflushed, outbox, &shutdown, deadline);
            match Box::pin(write).await {
                Written::Done => stall_deadline = None,
                Written::Incoming(msg) => {
                    awaiting_pong = None;
                    if let Some(end) = s.receive(msg) {
                        return end;
                    }
                }
                Written::End(end) => return end,
            }
            continue;
        }
        let ping_due = awaiting_pong.map_or(next_ping, |t| later(t, cfg.ws_pong_timeout));
        let deadline = s.expires_at.map_or(ping_due, |e| e.min(ping_due));
        if deadline != armed {
            timer.as_mut().reset(deadline);
            armed = deadline;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Disconnect(DisconnectCode::Shutdown),
            _ = outbox.ready() => {}
            msg = socket.recv() => {
                awaiting_pong = None;
                if let Some(end) = s.receive(msg) {
                    return end;
                }
            }
            _ = &mut timer => {
                let now = TInstant::now();
                if s.expires_at.is_some_and(|e| now >= e) {
                    return End::Disconnect(DisconnectCode::TokenExpired);
                }
                match awaiting_pong {
                    Some(t) if now >= later(t, cfg.ws_pong_timeout) => {
                        return End::Disconnect(DisconnectCode::NoPong)
                    }
                    Some(_) => {}
                    None if now >= next_ping => {
                        awaiting_pong = Some(now);
                        next_ping = later(now, cfg.ws_ping_interval);
                        // Boxed: the send and its timer take space only
                        // while a ping is on its way.
                        let sent = Box::pin(tokio::time::timeout(
                            cfg.ws_pong_timeout,
                            socket.send(Message::Ping(Bytes::new())),
                        ))
                        .await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return End::Gone,
                            Err(_) => return End::Disconnect(DisconnectCode::NoPong),
                        }
                    }
                    None => {}
                }
                // Fired: re-arm on the next loop even if the deadline is equal.
                armed = now;
            }
        }
    }
}

/// What a write phase ended with.
enum Written {
    /// The batch is written and flushed.
    Done,
    /// A frame (or the end of the stream) arrived while writing: the loop
    /// handles it, then goes on with what is left of the batch.
    Incoming(Option<Result<Message, axum::Error>>),
    /// The session is over.
    End(End),
}

/// Writes the batch, watching for shutdown, overflow, a stalled socket and
/// the client's own frames.
async fn write_phase(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Bytes>,
    unflushed: &mut usize,
    outbox: &Outbox,
    shutdown: &tokio_util::sync::CancellationToken,
    stall: TInstant,
) -> Written {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Written::End(End::Disconnect(DisconnectCode::Shutdown)),
        _ = wait_overflow(outbox) => Written::End(End::Disconnect(DisconnectCode::Slow)),
        _ = tokio::time::sleep_until(stall) => Written::End(End::Disconnect(DisconnectCode::Slow)),
        w = write_or_read(socket, batch, unflushed, outbox) => w,
    }
}

/// Feeds the batch to the socket and flushes it, reporting the bytes to the
/// outbox once flushed, and returns early when a frame arrives. Reading while
/// writing is what lets a client's Close be answered at once under a flood
/// of messages (without it the Close waits behind every queued message,
/// and a client that has stopped reading never gets an answer); one poll
/// serves both directions, so the socket needs no split (a lock and an
/// allocation per connection).
fn write_or_read<'a>(
    socket: &'a mut WebSocket,
    batch: &'a mut VecDeque<Bytes>,
    unflushed: &'a mut usize,
    outbox: &'a Outbox,
) -> impl std::future::Future<Output = Written> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(msg) = socket.poll_next_unpin(cx) {
            return Poll::Ready(Written::Incoming(msg));
        }
        loop {
            match socket.poll_ready_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Written::End(End::Gone)),
                Poll::Ready(Ok(())) => {}
            }
            let Some(frame) = batch.pop_front() else {
                break;
            };
            let n = frame.len();
            // Our frames are serde_json output: valid UTF-8 by construction.
            let Ok(text) = Utf8Bytes::try_from(frame) else {
                tracing::error!("websocket frame is not UTF-8; closing the session");
                return Poll::Ready(Written::End(End::Gone));
            };
            if socket.start_send_unpin(Message::Text(text)).is_err() {
                return Poll::Ready(Written::End(End::Gone));
            }
            *unflushed += n;
        }
        match socket.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => {
                outbox.written(std::mem::take(unflushed));
                Poll::Ready(Written::Done)
            }
            Poll::Ready(Err(_)) => Poll::Ready(Written::End(End::Gone)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Resolves when the outbox overflows (used while a write is in flight).
async fn wait_overflow(outbox: &Outbox) {
    loop {
        if outbox.overflowed().is_some() {
            return;
        }
        outbox.ready().await;
    }
}
