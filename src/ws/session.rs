//! One WebSocket session: the task that alone owns the socket.
//!
//! Commands are answered through the session's outbox, in order with the
//! messages publishers push there, exactly as on RESP: a `subscribe` reply
//! is queued before the subscription becomes visible, so it always precedes
//! the channel's first message. One `select!` serves the socket, the outbox,
//! liveness pings, token expiry and shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::{json, Value};

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

fn expiry_instant(exp: u64, leeway: Duration) -> tokio::time::Instant {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now_unix) + leeway;
    tokio::time::Instant::now() + left
}

impl Session {
    fn send(&self, frame: Bytes) {
        self.sink.outbox.push_reply(frame);
    }

    fn error(&self, id: &Value, code: ErrorCode, msg: &str) {
        self.send(proto::error(id, code, msg));
    }

    fn total_subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.leaderboards.len()
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

    fn token_error(&self, id: &Value, e: TokenError) {
        Stats::add(&self.st.hub.stats.auth_failures, 1);
        let code = match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        };
        self.error(id, code, &e.to_string());
    }

    fn handle(&mut self, text: &str) {
        let cmd = match proto::parse_command(text) {
            Ok(c) => c,
            Err(bad) => {
                self.error(&bad.id, ErrorCode::BadRequest, &bad.message);
                return;
            }
        };
        let started = Instant::now();
        self.dispatch(&cmd);
        self.st
            .metrics
            .observe_command("ws", &cmd.op, started.elapsed());
    }

    fn dispatch(&mut self, cmd: &Command) {
        let id = &cmd.id;
        macro_rules! parse {
            ($t:ty) => {
                match proto::args::<$t>(cmd) {
                    Ok(a) => a,
                    Err(m) => {
                        self.error(id, ErrorCode::BadRequest, &m);
                        return;
                    }
                }
            };
        }
        match cmd.op.as_str() {
            "connect" => {
                let a = parse!(proto::ConnectArgs);
                if self.connected {
                    self.error(id, ErrorCode::AlreadyConnected, "already connected");
                    return;
                }
                if let Some(token) = &a.token {
                    match self.st.auth.verify_token(token) {
                        Ok(c) => self.set_identity(Some(c)),
                        Err(e) => {
                            self.token_error(id, e);
                            return;
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
                                return;
                            }
                        }
                        let exp = c.exp;
                        self.set_identity(Some(c));
                        self.send(proto::reply(id, json!({ "expires": exp })));
                    }
                    Err(e) => self.token_error(id, e),
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
                    self.send(proto::reply(id, proto::presence_json(&self.st.hub, ch)));
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
        if self.total_subscriptions() >= cfg.max_subscriptions {
            self.error(
                id,
                ErrorCode::LimitExceeded,
                &format!(
                    "max subscriptions per connection reached ({})",
                    cfg.max_subscriptions
                ),
            );
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
                let mut replay = Vec::new();
                if let Some(since) = since {
                    let pos = since.epoch.parse::<u64>().ok().map(|e| (since.offset, e));
                    let cap = cfg.recovery_max_messages;
                    match pos.and_then(|p| hub.missed_since(&mut db, &key, p, cap)) {
                        Some(missed) => {
                            result["recovered"] = json!(true);
                            replay = missed;
                        }
                        None => result["recovered"] = json!(false),
                    }
                }
                self.send(proto::reply(id, result));
                for (offset, payload) in replay {
                    let p = Publication::with_offset(key.clone(), payload, offset, epoch);
                    self.send(proto::encode_delivery(&Delivery::direct(
                        &p,
                        DeliveryKind::Message,
                    )));
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

    fn leaderboard_subscribe(&mut self, id: &Value, a: proto::LeaderboardArgs) {
        if !self.check_name(id, &a.key) {
            return;
        }
        if a.top == 0 || a.top > 100 {
            self.error(id, ErrorCode::BadRequest, "top must be 1 to 100");
            return;
        }
        let max = self.st.cfg.max_subscriptions;
        if !self.leaderboards.contains(&a.key) && self.total_subscriptions() >= max {
            self.error(
                id,
                ErrorCode::LimitExceeded,
                &format!("max subscriptions per connection reached ({max})"),
            );
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
        // Register before reading, under the keyspace's order of writes: a
        // change after the read is pushed at the next tick.
        let (entries, own) = {
            let (entries, own) = hub.leaderboard_top(key, a.top, user.as_deref());
            hub.leaderboards.watch(
                Bytes::copy_from_slice(key),
                self.id,
                self.sink.clone(),
                a.top,
                user,
                entries.clone(),
            );
            // A tick between the read and the registration would be missed:
            // mark the key so the next tick compares once more.
            hub.leaderboards.mark(&Bytes::copy_from_slice(key));
            (entries, own)
        };
        self.leaderboards.insert(a.key.clone());
        self.send(proto::reply(
            id,
            proto::leaderboard_json(key, &entries, own, false),
        ));
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
        let limit = a.limit.unwrap_or(usize::MAX);
        match self.st.hub.history(ch, since, limit, a.reverse) {
            Ok(page) => {
                let pubs: Vec<Value> = page
                    .entries
                    .iter()
                    .map(|(o, p)| proto::publication_json(*o, p))
                    .collect();
                self.send(proto::reply(
                    id,
                    json!({ "publications": pubs, "offset": page.top, "epoch": page.epoch.to_string() }),
                ));
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

/// Sends a `disconnect` push and the matching close frame, briefly: a
/// client that does not read is not waited for.
async fn disconnect(socket: &mut WebSocket, code: DisconnectCode) {
    let push = Message::Text(Utf8Bytes::from(code.push()));
    let close = Message::Close(Some(CloseFrame {
        code: code as u16,
        reason: Utf8Bytes::from_static(code.reason()),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket.feed(push).await?;
        socket.send(close).await
    })
    .await;
}

/// Writes the batch, reporting written bytes to the outbox.
async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Bytes>,
    outbox: &Outbox,
) -> Result<(), axum::Error> {
    while let Some(frame) = batch.pop_front() {
        let n = frame.len();
        // Our frames are serde_json output: valid UTF-8 by construction.
        let text = Utf8Bytes::try_from(frame).map_err(axum::Error::new)?;
        socket.feed(Message::Text(text)).await?;
        outbox.written(n);
    }
    socket.flush().await
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
                outbox: Arc::new(Outbox::new(st.cfg.output_limits)),
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
        // One await of the session loop (each await point is space in this
        // future, which every idle connection keeps).
        let code = match refused {
            Some(code) => Some(code),
            None => serve(&mut socket, &mut s).await,
        };
        s.cleanup();
        if let Some(code) = code {
            if code == DisconnectCode::Slow {
                Stats::add(&s.st.hub.stats.slow_disconnects, 1);
                tracing::warn!(
                    client = id,
                    "websocket client closed for overcoming of output buffer limits"
                );
            }
            Box::pin(disconnect(&mut socket, code)).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cleanup();
        self.st.ws.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The session loop. Returns the disconnect to send, if any.
async fn serve(socket: &mut WebSocket, s: &mut Session) -> Option<DisconnectCode> {
    use tokio::time::Instant as TInstant;
    let sink = s.sink.clone();
    let outbox = &sink.outbox;
    let shutdown = s.st.ws.shutdown.clone();
    let cfg = s.st.cfg.clone();
    // One timer for every deadline (next ping, pong due, token expiry): most
    // sessions are idle, and each timer is memory they keep.
    let mut next_ping = TInstant::now() + cfg.ws_ping_interval;
    let mut awaiting_pong: Option<TInstant> = None;
    let timer = tokio::time::sleep(cfg.ws_ping_interval);
    tokio::pin!(timer);
    let mut armed = next_ping;
    let mut batch = VecDeque::new();
    loop {
        if sink.lag().broken {
            return Some(DisconnectCode::InsufficientState);
        }
        if outbox.pending_bytes() < sink.lag_bytes / 2 && !sink.lag().lagged.is_empty() {
            if let Err(code) = s.catch_up() {
                return Some(code);
            }
        }
        outbox.take(&mut batch);
        if outbox.overflowed().is_some() {
            return Some(DisconnectCode::Slow);
        }
        if !batch.is_empty() {
            // Boxed: the write path's futures live on the heap only while a
            // write is in flight, keeping idle sessions small.
            let flow = Box::pin(write_phase(socket, &mut batch, outbox, &shutdown, &cfg)).await;
            if let Some(end) = flow {
                return end;
            }
            continue;
        }
        let ping_due = awaiting_pong.map_or(next_ping, |t| t + cfg.ws_pong_timeout);
        let deadline = s.expires_at.map_or(ping_due, |e| e.min(ping_due));
        if deadline != armed {
            timer.as_mut().reset(deadline);
            armed = deadline;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Some(DisconnectCode::Shutdown),
            _ = outbox.ready() => {}
            msg = socket.recv() => {
                awaiting_pong = None;
                match msg {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Err(e)) => {
                        tracing::debug!(client = s.id, error = %e, "websocket read error");
                        if e.to_string().contains("Space limit exceeded") {
                            return Some(DisconnectCode::MessageTooBig);
                        }
                        return None;
                    }
                    Some(Ok(Message::Text(t))) => {
                        if t.len() > cfg.ws_max_message_size {
                            return Some(DisconnectCode::MessageTooBig);
                        }
                        s.handle(t.as_str())
                    }
                    Some(Ok(Message::Binary(_))) => return Some(DisconnectCode::BadRequest),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
            _ = &mut timer => {
                let now = TInstant::now();
                if s.expires_at.is_some_and(|e| now >= e) {
                    return Some(DisconnectCode::TokenExpired);
                }
                match awaiting_pong {
                    Some(t) if now >= t + cfg.ws_pong_timeout => return Some(DisconnectCode::NoPong),
                    Some(_) => {}
                    None if now >= next_ping => {
                        awaiting_pong = Some(now);
                        next_ping = now + cfg.ws_ping_interval;
                        // Boxed: the send and its timer take space only
                        // while a ping is on its way.
                        let sent = Box::pin(tokio::time::timeout(
                            cfg.ws_pong_timeout,
                            socket.send(Message::Ping(Bytes::new())),
                        ))
                        .await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return None,
                            Err(_) => return Some(DisconnectCode::NoPong),
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

/// Writes the batch, watching for shutdown, overflow and a stalled socket.
/// `Some(end)` ends the session (with `end` as its disconnect).
async fn write_phase(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Bytes>,
    outbox: &Outbox,
    shutdown: &tokio_util::sync::CancellationToken,
    cfg: &crate::config::Config,
) -> Option<Option<DisconnectCode>> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Some(Some(DisconnectCode::Shutdown)),
        _ = wait_overflow(outbox) => Some(Some(DisconnectCode::Slow)),
        // A socket that accepts nothing for this long belongs to a client
        // that stopped reading.
        _ = tokio::time::sleep(cfg.ws_ping_interval + cfg.ws_pong_timeout) => Some(Some(DisconnectCode::Slow)),
        r = write_batch(socket, batch, outbox) => match r {
            Ok(()) => None,
            Err(_) => Some(None),
        },
    }
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
