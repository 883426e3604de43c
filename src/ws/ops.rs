//! The ops of a WebSocket session: parse a command, check it, call the
//! hub, queue the reply.
//!
//! Replies count against the connection's output limits like deliveries,
//! and large ones (history, presence, recovery, leaderboards) are first
//! checked against the server-wide output budget. An op the app's backend
//! must decide ends its checks here with [`Step::Ask`]; `hooks` resumes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};

use super::protocol::{self as proto, Command, DisconnectCode, ErrorCode, Op};
use super::session::{expiry_instant, End, Session, Step};
use super::subtokens::TokenCheck;
use crate::auth::{Identity, Rule, TokenError};
use crate::hub::engine::EngineError;
use crate::hub::presence::PresenceEntry;
use crate::hub::{HistoryError, Space, Stats, Subscription, Ticket};

/// Smallest reply held to the global output budget: acknowledgements and
/// errors cost less than refusing them would.
const LARGE_REPLY: usize = 16 * 1024;

/// Why a large reply was not queued.
pub(super) enum Refusal {
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
    pub(super) fn send(&self, frame: Bytes) {
        self.sink.outbox.push(frame);
    }

    /// Whether a reply of about `len` bytes may be queued. Small replies
    /// always may; a large one must fit the connection's hard limit on its
    /// own and the server-wide budget (checked, not reserved: concurrent
    /// sessions may overshoot it by one reply each).
    pub(super) fn admit(&self, len: usize) -> Result<(), Refusal> {
        if len < LARGE_REPLY {
            return Ok(());
        }
        if len > super::max_reply(&self.st.cfg) {
            return Err(Refusal::TooLarge);
        }
        if !self.sink.outbox.budget_has_room(len) {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    pub(super) fn refuse(&self, id: &Value, why: Refusal, len: usize) {
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
                let msg = if self.st.hub.output().fits(len) {
                    "this address's share of the output budget is spent; read what is pending, or retry later"
                } else {
                    "server output budget exhausted; retry later"
                };
                self.error(id, ErrorCode::Busy, msg)
            }
        }
    }

    /// Queues a large reply built by `build` after checking its estimated
    /// size, then its real size.
    pub(super) fn send_large(&self, id: &Value, estimate: usize, build: impl FnOnce() -> Bytes) {
        if let Err(why) = self.admit(estimate) {
            return self.refuse(id, why, estimate);
        }
        let frame = build();
        match self.admit(frame.len()) {
            Ok(()) => self.send(frame),
            Err(why) => self.refuse(id, why, frame.len()),
        }
    }

    pub(super) fn error(&self, id: &Value, code: ErrorCode, msg: &str) {
        self.send(proto::error(id, code, msg));
    }

    pub(super) fn total_subscriptions(&self) -> usize {
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

    /// Takes one subscription from the `--subscribe-rate` bucket, or
    /// answers 107 and returns false (see `resp::cmd::pubsub` for why).
    /// Clients of an open server (no authentication configured) have full
    /// access and no limit.
    fn check_subscribe_rate(&mut self, id: &Value) -> bool {
        if self.identity == Identity::Password {
            return true;
        }
        let limit = self.st.cfg.subscribe_limit;
        if self.client.take_subscribes(limit, 1) {
            return true;
        }
        self.error(
            id,
            ErrorCode::RateLimited,
            &format!(
                "rate limit: {} subscriptions per second ({} at once)",
                limit.rate, limit.burst
            ),
        );
        false
    }

    /// Gives `n` patterns back to the untrusted-pattern quota (a session's
    /// identity is trusted or not for its whole life: only an open server's
    /// sessions have full access, and they always do).
    pub(super) fn give_patterns(&self, n: usize) {
        if self.identity != Identity::Password {
            self.st.hub.untrusted_patterns().give(n);
            self.client
                .give_patterns(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    /// Takes one pattern from the address's share and the global quota,
    /// or answers 106 and returns false.
    fn take_pattern(&mut self, id: &Value) -> bool {
        let share = self.st.cfg.max_untrusted_patterns_per_client;
        if !self.client.take_pattern(share) {
            self.error(
                id,
                ErrorCode::LimitExceeded,
                &format!("max patterns per client address reached ({share}); retry later"),
            );
            return false;
        }
        if self.st.hub.untrusted_patterns().take() {
            return true;
        }
        self.client.give_patterns(1);
        let max = self.st.hub.untrusted_patterns().limit();
        self.error(
            id,
            ErrorCode::LimitExceeded,
            &format!("max patterns of clients without the password reached ({max}); retry later"),
        );
        false
    }

    /// Takes one read (`history`, `presence`, `presence_stats`, `ping`,
    /// `refresh`) from the address's `--read-rate` bucket, or answers 107
    /// and returns false. Every session counts, an open server's too: the
    /// default is far above what a client needs.
    fn take_read(&self, id: &Value) -> bool {
        let limit = self.st.cfg.read_limit;
        if self.client.take_read(limit) {
            return true;
        }
        self.error(
            id,
            ErrorCode::RateLimited,
            &format!(
                "rate limit: {} reads per second from this address ({} at once)",
                limit.rate, limit.burst
            ),
        );
        false
    }

    /// Answers 107 to a token not checked: the address spent its budget
    /// of failed authentications (`--auth-failure-rate`).
    pub(super) fn auth_rate_error(&self, id: &Value, wait: std::time::Duration) {
        Stats::add(&self.st.hub.stats().auth_failures, 1);
        self.error(
            id,
            ErrorCode::RateLimited,
            &format!(
                "too many failed authentications from this address; retry in {} s",
                crate::rate::retry_secs(wait)
            ),
        );
    }

    pub(super) fn set_identity(&mut self, claims: Option<Arc<crate::auth::Claims>>) {
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

    pub(super) fn token_error(&self, id: &Value, e: &TokenError) {
        Stats::add(&self.st.hub.stats().auth_failures, 1);
        let code = match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        };
        self.error(id, code, &e.to_string());
    }

    /// Handles one text frame: a `Step::End` ends the session (after the
    /// replies already queued), a `Step::Ask` waits for the app's backend.
    pub(super) fn handle(&mut self, text: &str) -> Step {
        let cmd = match proto::parse_command(text) {
            Ok(c) => c,
            Err(bad) => {
                self.error(&bad.id, bad.code, &bad.message);
                return Step::Read;
            }
        };
        let started = Instant::now();
        let name = cmd.op.name();
        let end = self.dispatch(cmd);
        self.st
            .metrics
            .observe_command("ws", name, started.elapsed());
        end
    }

    fn dispatch(&mut self, cmd: Command) -> Step {
        let id = &cmd.id;
        let end = |code| Step::End(End::Disconnect(code));
        match cmd.op {
            Op::Connect(a) => {
                if self.connected {
                    self.error(id, ErrorCode::AlreadyConnected, "already connected");
                    return Step::Read;
                }
                // No token anywhere: the app's connect hook says who this is.
                if a.token.is_none()
                    && self.identity == Identity::Anonymous
                    && self.st.ws.proxy.connects()
                {
                    if let Err(wait) = self.take_connect_call() {
                        self.error(
                            id,
                            ErrorCode::RateLimited,
                            &format!(
                                "too many connects from this address; retry in {} s",
                                crate::rate::retry_secs(wait)
                            ),
                        );
                        return end(DisconnectCode::ConnectRateLimited);
                    }
                    return Step::Ask(self.connect_pending(id, a.data));
                }
                if let Some(token) = &a.token {
                    // A refused token ends the connection: staying open as
                    // anonymous would let a forged or expired token through
                    // to whatever anonymous clients may use, and would hide
                    // the failure from clients that do not read the reply.
                    let limit = self.st.cfg.auth_budget();
                    let checked = self
                        .client
                        .authenticate(limit, || self.st.auth.verify_token(token));
                    let checked = match checked {
                        Ok(r) => r,
                        Err(wait) => {
                            self.auth_rate_error(id, wait);
                            return end(DisconnectCode::ConnectRateLimited);
                        }
                    };
                    match checked {
                        Ok(c) if self.identity.user().is_some_and(|u| u != c.sub) => {
                            Stats::add(&self.st.hub.stats().auth_failures, 1);
                            self.error(
                                id,
                                ErrorCode::Unauthorized,
                                "token is for another user than the URL's token",
                            );
                            return end(DisconnectCode::Unauthorized);
                        }
                        Ok(c) => self.set_identity(Some(c)),
                        Err(e) => {
                            self.token_error(id, &e);
                            return end(match e {
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
            Op::Refresh(a) => {
                if !self.take_read(id) {
                    return Step::Read;
                }
                let limit = self.st.cfg.auth_budget();
                let checked = self
                    .client
                    .authenticate(limit, || self.st.auth.verify_token(&a.token));
                let checked = match checked {
                    Ok(r) => r,
                    Err(wait) => {
                        // The current token stays in force until it expires.
                        self.auth_rate_error(id, wait);
                        return Step::Read;
                    }
                };
                match checked {
                    Ok(c) => {
                        if let Some(old) = self.identity.user() {
                            if old != c.sub {
                                self.error(
                                    id,
                                    ErrorCode::Unauthorized,
                                    "refresh token is for another user",
                                );
                                return Step::Read;
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
            Op::Ping => {
                if self.take_read(id) {
                    self.send(proto::reply(id, json!({})));
                }
            }
            Op::SubRefresh(a) => self.sub_refresh(id, a),
            Op::Subscribe(a) => {
                let (since, data, token) = (a.since, a.data, a.token);
                return self.subscribe(id, a.channel, false, since, data, token);
            }
            Op::Psubscribe(a) => {
                return self.subscribe(id, a.pattern, true, None, None, None);
            }
            Op::Unsubscribe(a) => {
                self.forget_grant(&a.channel);
                self.leave_channel(&a.channel);
                self.send(proto::reply(id, json!({})));
            }
            Op::Punsubscribe(a) => {
                if self.patterns.remove(&a.pattern) {
                    self.st.hub.punsubscribe(a.pattern.as_bytes(), self.id);
                    self.give_patterns(1);
                    self.st.ws.subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
                self.send(proto::reply(id, json!({})));
            }
            Op::Publish(a) => {
                return self.publish(id, a);
            }
            Op::Presence(ref a) | Op::PresenceStats(ref a) => {
                let ch = a.channel.as_bytes();
                let ns = self.st.cfg.namespace(ch);
                if !self.take_read(id) {
                    // Answered 107.
                } else if !self.may_read(&a.channel) {
                    Stats::add(&self.st.hub.stats().auth_failures, 1);
                    self.error(id, ErrorCode::PermissionDenied, "permission denied");
                } else if !ns.presence {
                    self.error(
                        id,
                        ErrorCode::NotEnabled,
                        "presence is not enabled for this channel's namespace",
                    );
                } else {
                    let read = super::reads::Read::Presence {
                        channel: a.channel.clone(),
                        full: matches!(cmd.op, Op::Presence(_)),
                    };
                    if self.reads_await() {
                        return Step::Ask(self.engine_read(id, read));
                    }
                    self.read_now(id, read);
                }
            }
            Op::History(a) => {
                if self.take_read(id) {
                    return self.history(id, a);
                }
            }
            Op::LeaderboardSubscribe(a) => {
                self.leaderboard_subscribe(id, a);
            }
            Op::LeaderboardUnsubscribe(a) => {
                if self.leaderboards.remove(&a.key) {
                    self.st.hub.leaderboard_unwatch(a.key.as_bytes(), self.id);
                }
                self.send(proto::reply(id, json!({})));
            }
            // parse_command answers an unknown op itself (it quotes the name).
            Op::Unknown => self.error(id, ErrorCode::UnknownOp, "unknown op"),
        }
        Step::Read
    }

    /// Leaves `channel` if subscribed; true if it was.
    pub(super) fn leave_channel(&mut self, channel: &str) -> bool {
        if !self.channels.remove(channel) {
            return false;
        }
        self.st
            .hub
            .unsubscribe(Space::Global, channel.as_bytes(), self.id);
        self.sink.lag().forget(channel.as_bytes());
        self.st.ws.subscriptions.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// May this session read `channel` (its presence, history, or the
    /// leaderboard of that key)? Where the namespace asks the app about
    /// subscribes, only once the app let it subscribe (or the connect
    /// hook subscribed it): reading needs what subscribing needs. A
    /// subscription token's grant allows it.
    fn may_read(&self, channel: &str) -> bool {
        if self.granted(channel) {
            return true;
        }
        let ch = channel.as_bytes();
        match self.identity.subscribe_rule(ch, self.st.cfg.namespace(ch)) {
            Rule::Allow => true,
            Rule::App => self.channels.contains(channel),
            Rule::Deny => false,
        }
    }

    /// WebSocket clients never hold the password: channel names, like
    /// patterns, are bounded by `--max-pattern-length`, since they choose
    /// both and matching costs grow with each.
    fn check_name(&self, id: &Value, name: &str) -> bool {
        let max = self
            .st
            .cfg
            .max_channel_length
            .min(self.st.cfg.max_pattern_length);
        if name.is_empty() || name.len() > max {
            self.error(
                id,
                ErrorCode::InvalidChannel,
                &format!("channel names and patterns must be 1 to {max} bytes"),
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
        data: Option<Value>,
        token: Option<String>,
    ) -> Step {
        if !self.check_name(id, &name) {
            return Step::Read;
        }
        // A subscription token grants the channel whatever the rules below
        // say, and the app's subscribe hook is not asked (the app signed it).
        let mut grant = None;
        if let Some(token) = token {
            match self.check_sub_token(id, &name, &token) {
                TokenCheck::Refused => return Step::Read,
                TokenCheck::Ignored => {}
                TokenCheck::Granted(at, _) => grant = Some(at),
            }
        }
        let cfg = self.st.cfg.clone();
        let cfg = &*cfg;
        if pattern && name.len() > cfg.max_pattern_length {
            // A pattern's matching cost grows with its length on every
            // publish it is checked against.
            self.error(
                id,
                ErrorCode::InvalidChannel,
                &format!("patterns must be at most {} bytes", cfg.max_pattern_length),
            );
            return Step::Read;
        }
        // Herald's own channels (__presence__:C, __leaderboard__:K) are
        // decided by what they report on.
        let rule = if grant.is_some() {
            Rule::Allow
        } else if pattern {
            match self.identity.may_psubscribe(name.as_bytes(), cfg) {
                true => Rule::Allow,
                false => Rule::Deny,
            }
        } else {
            self.identity.subscribe_rule_for(name.as_bytes(), cfg)
        };
        if rule == Rule::Deny {
            Stats::add(&self.st.hub.stats().auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return Step::Read;
        }
        let set = if pattern {
            &self.patterns
        } else {
            &self.channels
        };
        if set.contains(&name) {
            if let Some(at) = grant {
                self.grant(name, at);
            }
            self.send(proto::reply(id, json!({})));
            return Step::Read;
        }
        // The limits and the rate come before the app is asked: they bound
        // the calls a client makes it receive too.
        if !self.check_subscription_limit(id) || !self.check_subscribe_rate(id) {
            return Step::Read;
        }
        if rule == Rule::App {
            return Step::Ask(self.subscribe_pending(id, name, since, data));
        }
        // Engine mode: a name this node does not carry yet is subscribed in
        // the engine first; the session awaits it (no thread parks), then
        // goes on below (before any pattern quota is taken: a session gone
        // meanwhile holds none).
        let prepared = match self.st.hub.subscribes_await() {
            false => None,
            true => {
                let key = Bytes::copy_from_slice(name.as_bytes());
                let p = self
                    .st
                    .hub
                    .prepare_subscribe_pending((!pattern).then_some(Space::Global), &key);
                match p.now() {
                    Ok(t) => Some(t),
                    Err(p) => {
                        return Step::Ask(self.engine_subscribe(id, name, pattern, since, grant, p))
                    }
                }
            }
        };
        self.subscribe_prepared(id, name, pattern, since, grant, prepared);
        Step::Read
    }

    /// The rest of a `subscribe`/`psubscribe` op: the pattern bounds,
    /// then the subscription, with the engine's answer when it was
    /// awaited (`prepared`).
    pub(super) fn subscribe_prepared(
        &mut self,
        id: &Value,
        name: String,
        pattern: bool,
        since: Option<proto::StreamPosition>,
        grant: Option<tokio::time::Instant>,
        prepared: Option<Result<Ticket, EngineError>>,
    ) {
        let cfg = self.st.cfg.clone();
        let cfg = &*cfg;
        if pattern {
            // The patterns a connection holds bound the matching work it
            // adds to every publish (as on RESP for clients without the
            // password): 64 × --max-pattern-length bytes in all.
            let budget = cfg.max_pattern_length.saturating_mul(64);
            let held: usize = self.patterns.iter().map(String::len).sum();
            if held + name.len() > budget {
                self.error(
                    id,
                    ErrorCode::LimitExceeded,
                    &format!("patterns of this connection would exceed {budget} bytes"),
                );
                return;
            }
            // And all connections without the password together hold at
            // most --max-untrusted-patterns, each client address at most
            // its share of them (given back as they leave).
            if self.identity != Identity::Password && !self.take_pattern(id) {
                return;
            }
        }
        match grant {
            Some(at) => {
                self.enter(Some(id), name.clone(), pattern, since, prepared);
                if self.channels.contains(&name) {
                    self.grant(name, at);
                }
            }
            None => self.enter(Some(id), name, pattern, since, prepared),
        }
    }

    /// Registers a subscription that passed every check, and queues its
    /// reply (before its first message). Without an `id` (a channel the
    /// connect hook named) nothing is replied: a failure is logged.
    /// `prepared`: the engine's answer, when it was awaited already (else
    /// this thread asks it, which the memory engine answers at once).
    pub(super) fn enter(
        &mut self,
        id: Option<&Value>,
        name: String,
        pattern: bool,
        since: Option<proto::StreamPosition>,
        mut prepared: Option<Result<Ticket, EngineError>>,
    ) {
        let cfg = self.st.cfg.clone();
        let cfg = &*cfg;
        let key = Bytes::copy_from_slice(name.as_bytes());
        if !pattern && cfg.namespace(name.as_bytes()).history_size > 0 {
            // An unreadable epoch is a position that cannot be recovered.
            let since = since.map(|p| (p.offset, p.epoch.parse::<u64>().ok()));
            let pos = since.and_then(|(offset, epoch)| Some((offset, epoch?)));
            // The replay is sized (not encoded) before anything is
            // registered, and held to the limits of a large reply: past
            // the hard limit it is not replayed (as past
            // --recovery-max-messages), past the global budget the
            // subscribe is refused whole.
            let mut replayable = true;
            if let Some(p) = pos {
                let limit = super::max_reply(cfg);
                match self.replay_size(&key, p, limit).map(|n| self.admit(n)) {
                    Some(Err(Refusal::Busy)) => {
                        if let Some(id) = id {
                            self.refuse(id, Refusal::Busy, 0);
                        }
                        return;
                    }
                    Some(Err(Refusal::TooLarge)) => replayable = false,
                    Some(Ok(())) | None => {}
                }
            }
            let ticket = match prepared.take() {
                Some(t) => t,
                None => self.st.hub.prepare_subscribe(Some(Space::Global), &key),
            };
            // Taken by the registration; still here if the history could
            // not be read (the plain path below uses it then).
            let mut ticket = match ticket {
                Ok(t) => Some(t),
                Err(e) => return self.error_or_log(id, ErrorCode::Internal, &e.to_string()),
            };
            let hub = self.st.hub.clone();
            let cap = cfg.recovery_max_messages;
            let registered = hub.with_history_position(&key, pos, cap, |at| {
                // Under the keyspace lock, so no publish to the channel
                // falls between the position and the registration. A
                // recovering subscriber starts behind, at `since`: live
                // deliveries are dropped until the session's catch-up has
                // replayed the history up to the newest entry, then the
                // two meet with no gap and no duplicate (recovery.rs).
                let mut result = json!({ "offset": at.top, "epoch": at.epoch.to_string() });
                let mut last = at.top;
                if since.is_some() {
                    let recovered = replayable && at.recoverable == Some(true);
                    result["recovered"] = json!(recovered);
                    if let (true, Some((offset, _))) = (recovered, pos) {
                        last = offset;
                    }
                }
                // The reply precedes the replay and the live messages.
                if let Some(id) = id {
                    self.send(proto::reply(id, result));
                }
                self.sink
                    .lag()
                    .track(key.clone(), at.epoch, last, last < at.top);
                let sub = self.subscription(&key, false);
                match ticket.take() {
                    Some(t) => hub.subscribe_with(sub, t),
                    None => hub.subscribe(sub),
                }
            });
            if let Ok(entered) = &registered {
                if let Err(e) = entered {
                    self.sink.lag().forget(&key);
                    return self.error_or_log(id, ErrorCode::Internal, &e.to_string());
                }
                if let Some(entry) = self.presence_entry() {
                    hub.presence_join(&key, entry);
                }
                self.channels.insert(name);
                self.st.ws.subscriptions.fetch_add(1, Ordering::Relaxed);
                return;
            }
            prepared = ticket.map(Ok);
            if let Err(HistoryError::Unavailable) = registered {
                return self.error_or_log(
                    id,
                    ErrorCode::Internal,
                    &HistoryError::Unavailable.to_string(),
                );
            }
        }
        // The engine before the reply: a refusal is the only answer.
        let space = (!pattern).then_some(Space::Global);
        let ticket = match prepared {
            Some(t) => t,
            None => self.st.hub.prepare_subscribe(space, &key),
        };
        let ticket = match ticket {
            Ok(t) => t,
            Err(e) => {
                if pattern {
                    self.give_patterns(1);
                }
                return self.error_or_log(id, ErrorCode::Internal, &e.to_string());
            }
        };
        // Reply first: it must precede the first message.
        if let Some(id) = id {
            self.send(proto::reply(id, json!({})));
        }
        let hub = &self.st.hub;
        let entered = if pattern {
            hub.psubscribe_with(key, self.id, self.sink.clone(), ticket)
        } else {
            hub.subscribe_with(self.subscription(&key, true), ticket)
        };
        if let Err(e) = entered {
            if pattern {
                self.give_patterns(1);
            }
            return self.error_or_log(id, ErrorCode::Internal, &e.to_string());
        }
        if pattern {
            self.patterns.insert(name);
        } else {
            self.channels.insert(name);
        }
        self.st.ws.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// An error reply, or, for a subscription nobody asked for (the
    /// connect hook's channels), a log line.
    fn error_or_log(&self, id: Option<&Value>, code: ErrorCode, msg: &str) {
        match id {
            Some(id) => self.error(id, code, msg),
            None => tracing::warn!(
                client = self.id,
                code = code as u16,
                error = msg,
                "subscription the app asked for failed"
            ),
        }
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
        if !self.may_read(&a.key) {
            Stats::add(&self.st.hub.stats().auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return;
        }
        if !self.leaderboards.contains(&a.key) && !self.check_subscribe_rate(id) {
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
        // A tick between the read and the registration would be missed:
        // the watch marks the key so the next tick compares once more.
        hub.leaderboard_watch(
            Bytes::copy_from_slice(key),
            self.id,
            self.sink.clone(),
            a.top,
            user,
            entries,
        );
        self.leaderboards.insert(a.key.clone());
        self.send(reply);
    }

    /// Identified clients enter the presence of the channels they
    /// subscribe to (where their namespace tracks it).
    fn presence_entry(&self) -> Option<PresenceEntry> {
        match &self.identity {
            Identity::User(c) => Some(PresenceEntry {
                client: self.id,
                user: c.sub.clone(),
                info: c.info.clone(),
                joined: crate::hub::now_ms() / 1000,
            }),
            _ => None,
        }
    }

    /// This session's subscription to `channel`, with its presence entry
    /// when `presence`.
    fn subscription(&self, channel: &Bytes, presence: bool) -> Subscription {
        Subscription {
            space: Space::Global,
            channel: channel.clone(),
            client: self.id,
            sink: self.sink.clone(),
            presence: presence.then(|| self.presence_entry()).flatten(),
        }
    }

    fn history(&mut self, id: &Value, a: proto::HistoryArgs) -> Step {
        if !self.check_name(id, &a.channel) {
            return Step::Read;
        }
        if !self.may_read(&a.channel) {
            Stats::add(&self.st.hub.stats().auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return Step::Read;
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
                    return Step::Read;
                }
            },
            None => None,
        };
        // No cap on `limit` of its own: the reply's size is what is
        // bounded (the connection's hard limit, the global budget).
        let read = super::reads::Read::History(super::reads::HistoryRead {
            channel: a.channel,
            since,
            limit: a.limit.unwrap_or(usize::MAX),
            reverse: a.reverse,
        });
        if self.reads_await() {
            return Step::Ask(self.engine_read(id, read));
        }
        self.read_now(id, read);
        Step::Read
    }

    fn publish(&mut self, id: &Value, a: proto::PublishArgs) -> Step {
        if !self.check_name(id, &a.channel) {
            return Step::Read;
        }
        let ns = self.st.cfg.namespace(a.channel.as_bytes());
        let rule = self.identity.publish_rule(a.channel.as_bytes(), ns);
        if rule == Rule::Deny {
            Stats::add(&self.st.hub.stats().auth_failures, 1);
            self.error(id, ErrorCode::PermissionDenied, "permission denied");
            return Step::Read;
        }
        // Per client address, all its sessions together: a reconnect or a
        // second session gets no fresh second's worth.
        let rate = self.st.cfg.ws_publish_rate;
        let limit = crate::rate::RateLimit { rate, burst: rate };
        if !self.client.take_publish(limit) {
            self.error(
                id,
                ErrorCode::RateLimited,
                &format!("rate limit: {rate} publishes per second"),
            );
            return Step::Read;
        }
        if rule == Rule::App {
            return Step::Ask(self.publish_pending(id, a.channel, a.data));
        }
        if self.st.hub.publishes_pipeline() {
            return Step::Ask(self.engine_publish(id, a.channel, a.data));
        }
        self.publish_now(id, &a.channel, &a.data);
        Step::Read
    }

    /// Publishes `data` to `channel` (every check passed) and replies.
    fn publish_now(&self, id: &Value, channel: &str, data: &Value) {
        let payload = crate::hub::payload::from_json_value(data);
        let r = self
            .st
            .hub
            .publish(Bytes::copy_from_slice(channel.as_bytes()), payload);
        self.published(id, r);
    }

    /// [`Session::publish_now`], awaiting the engine.
    pub(super) async fn publish_awaited(&self, id: &Value, channel: &str, data: &Value) {
        let payload = crate::hub::payload::from_json_value(data);
        let r = self
            .st
            .hub
            .publish_pending(Bytes::copy_from_slice(channel.as_bytes()), payload)
            .await;
        self.published(id, r);
    }

    fn published(
        &self,
        id: &Value,
        r: Result<crate::hub::Published, crate::hub::engine::EngineError>,
    ) {
        match r {
            Ok(_) => self.send(proto::reply(id, json!({}))),
            Err(e) => self.error(id, ErrorCode::Internal, &e.to_string()),
        }
    }
}
