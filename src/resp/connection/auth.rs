//! Who a connection is and the deadlines that follow from it: the pre-AUTH
//! limits, the time allowed to authenticate (`--auth-timeout`), and a JWT's
//! `exp`, at which the connection leaves everything and closes.

use super::*;

impl Conn {
    /// Before authentication: no identity yet (`--requirepass`), or
    /// anonymous where authentication is configured (a JWT key). Such a
    /// client gets Redis's pre-AUTH request limits and the anonymous
    /// subscription limit, whatever the kind of authentication.
    pub fn pre_auth(&self) -> bool {
        matches!(self.identity, None | Some(Identity::Anonymous))
    }

    /// Most subscriptions (channels, patterns, shard channels) this client
    /// may hold: anonymous clients get `--anonymous-max-subscriptions`.
    pub fn max_subscriptions(&self) -> usize {
        let cfg = &self.server.cfg;
        match self.identity {
            Some(Identity::Password) => cfg.max_subscriptions,
            Some(Identity::Anonymous) | None => {
                cfg.max_subscriptions.min(cfg.anonymous_max_subscriptions)
            }
            Some(Identity::User(_)) => cfg.max_subscriptions,
        }
    }

    /// Longest channel name (or, with `pattern`, pattern) this client may
    /// subscribe to: patterns of clients without the password are held to
    /// `--max-pattern-length`, since matching cost grows with them.
    /// The longest channel name or pattern this client may use: clients
    /// without the password get `--max-pattern-length` for both, since the
    /// cost of matching patterns grows with the channel's length and they
    /// choose both.
    pub fn max_name_len(&self, _pattern: bool) -> usize {
        let cfg = &self.server.cfg;
        if !matches!(self.identity, Some(Identity::Password)) {
            cfg.max_channel_length.min(cfg.max_pattern_length)
        } else {
            cfg.max_channel_length
        }
    }

    /// Sets who the client is (AUTH, HELLO AUTH, RESET) and what follows
    /// from it: a JWT's `exp` becomes the connection's deadline (a later
    /// AUTH with a fresh token moves it), the password clears it, and a
    /// client back to unauthenticated gets `--auth-timeout` again.
    pub fn set_identity(&mut self, identity: Option<Identity>) {
        let exp = match &identity {
            Some(Identity::User(c)) => Some(c.exp),
            _ => None,
        };
        self.identity = identity;
        if matches!(self.identity, Some(Identity::Password)) {
            // The operator's backends: not counted per address (see
            // `resp::address_slot`), and not again after a RESET.
            self.uncount();
        }
        self.handle
            .pre_auth
            .store(self.pre_auth(), std::sync::atomic::Ordering::Relaxed);
        // Password clients (backends) count only in the global output
        // budget; the rest in their address's share of it.
        let hub = &self.server.hub;
        let budget = match self.identity {
            Some(Identity::Password) => hub.output().clone(),
            _ => hub.client_output(&self.client),
        };
        self.handle.sink.outbox.set_budget(budget);
        // A client still within its time to authenticate keeps that
        // deadline: a RESET must not restart the clock, or a client that
        // never authenticates would hold its slot forever.
        let running_auth = match self.take_deadline() {
            Some((Deadline::Auth, sleep)) if exp.is_none() => Some(sleep),
            _ => None,
        };
        match exp {
            Some(exp) => {
                let left = token_left(
                    exp,
                    self.server.cfg.jwt_leeway,
                    std::time::SystemTime::now(),
                );
                // Past any plausible uptime: no timer at all (and no
                // `Instant` overflow for an `exp` near u64::MAX).
                if let Some(at) = tokio::time::Instant::now().checked_add(left) {
                    if left < Duration::from_secs(100 * 365 * 86400) {
                        self.set_deadline(Deadline::Token, Box::pin(tokio::time::sleep_until(at)));
                    }
                }
            }
            None => match running_auth {
                Some(sleep) if self.pre_auth() => self.set_deadline(Deadline::Auth, sleep),
                _ => self.arm_auth_deadline(),
            },
        }
    }

    /// Gives back the connection's place among its address's, if it holds
    /// one.
    pub(super) fn uncount(&mut self) {
        if self
            .handle
            .counted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.server.hub.close_session(self.handle.addr.ip());
        }
    }

    /// The deadline and what it ends, leaving none.
    fn take_deadline(&mut self) -> Option<(Deadline, Pin<Box<Sleep>>)> {
        self.deadline.take().map(|s| (self.deadline_kind, s))
    }

    fn set_deadline(&mut self, kind: Deadline, sleep: Pin<Box<Sleep>>) {
        self.deadline_kind = kind;
        self.deadline = Some(sleep);
    }

    /// Starts the time allowed to authenticate, where it applies.
    pub(super) fn arm_auth_deadline(&mut self) {
        let t = self.server.cfg.auth_timeout;
        if self.pre_auth() && self.server.cfg.has_auth() && !t.is_zero() {
            if let Some(at) = tokio::time::Instant::now().checked_add(t) {
                self.set_deadline(Deadline::Auth, Box::pin(tokio::time::sleep_until(at)));
            }
        }
    }

    /// True once the client's token has expired (checked before each
    /// command, so none runs after `exp` even within one read batch).
    pub(super) fn token_expired(&self) -> bool {
        self.deadline_kind == Deadline::Token
            && matches!(&self.deadline, Some(s) if s.deadline() <= tokio::time::Instant::now())
    }

    /// Ends a client whose token expired: it leaves every channel, pattern
    /// and presence set now, a parked command is dropped, and the
    /// connection closes after one `-NOPERM token expired` frame (the
    /// answer to a command in flight, if any). The same as a WebSocket
    /// session's 3002 disconnect.
    pub(super) fn expire(&mut self) {
        self.deadline = None;
        self.blocked = None;
        self.end_multi();
        // `reply` first delivers PUBLISHes staged before `exp` (they ran
        // while the token was valid) and writes their replies.
        self.reply().error(TOKEN_EXPIRED);
        self.close_after_reply();
        tracing::debug!(client = self.handle.id, "token expired, closing");
    }

    /// The deadline fired.
    pub(super) fn on_deadline(&mut self) {
        match self.deadline.as_ref().map(|_| self.deadline_kind) {
            Some(Deadline::Token) => self.expire(),
            Some(Deadline::Auth) => {
                self.deadline = None;
                // A subscribed anonymous client uses access a namespace
                // opened to it: it stays (bounded by the anonymous
                // subscription limit, and first to go when the server is
                // full, see `resp::run`).
                if self.pre_auth() && self.total_subscriptions() == 0 {
                    Stats::add(&self.server.hub.stats().auth_failures, 1);
                    tracing::debug!(client = self.handle.id, "authentication timeout, closing");
                    self.reply().error(AUTH_TIMEOUT);
                    self.close_after_reply();
                }
            }
            None => {}
        }
    }
}

/// How long a token with `exp` (seconds since the epoch) stays valid after
/// `now`, leeway included; saturating, so any `exp` is safe.
pub fn token_left(exp: u64, leeway: Duration, now: std::time::SystemTime) -> Duration {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(exp)
        .saturating_sub(now)
        .saturating_add(leeway)
}
