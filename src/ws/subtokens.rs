//! Subscription tokens (as Centrifugo's): a JWT with a `channel` claim,
//! signed with the connection tokens' key, whose `sub` is the connection's
//! user, grants that one channel (subscribe, and its history and presence
//! reads) whatever the connection's own claims and the namespace say.
//!
//! A grant lasts until the token's `exp`. Before that the session pushes
//! `sub_refresh`; a `sub_refresh` op with a new token extends it; a grant
//! that runs out unsubscribes the channel with an `unsubscribe` push, code
//! [`UNSUBSCRIBE_EXPIRED`]. The state lives in one boxed map that only
//! sessions holding grants allocate (an idle session pays one pointer), and
//! its earliest deadline is cached for the session loop's one timer.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::Instant as TInstant;

use super::protocol::{self as proto, ErrorCode, SubRefreshArgs};
use super::session::{expiry_instant, Session};
use crate::auth::Identity;
use crate::hub::Stats;

/// The `code` of the `unsubscribe` push sent when a subscription token
/// expires without a `sub_refresh`: resubscribe with a new token.
pub const UNSUBSCRIBE_EXPIRED: u16 = 3006;

/// How long before a grant's end `sub_refresh` is pushed at most (at most
/// half of what is left of the token when it is granted).
const REFRESH_AHEAD: Duration = Duration::from_secs(30);

/// One channel's grant.
struct Grant {
    expires: TInstant,
    /// When to push `sub_refresh`; `None` once pushed.
    refresh_at: Option<TInstant>,
}

impl Grant {
    fn due(&self) -> TInstant {
        self.refresh_at.unwrap_or(self.expires)
    }
}

/// A session's grants, by channel.
#[derive(Default)]
pub(super) struct SubTokens {
    grants: HashMap<String, Grant>,
    /// The earliest deadline of all grants (cached: the session loop asks
    /// for it on every turn).
    next: Option<TInstant>,
}

impl SubTokens {
    fn recompute(&mut self) {
        self.next = self.grants.values().map(Grant::due).min();
    }
}

/// What a subscription token presented with an op comes to.
pub(super) enum TokenCheck {
    /// Refused: the error reply is queued.
    Refused,
    /// Not needed: the connection has full access (an open server).
    Ignored,
    /// Granted until this instant; the token's `exp`.
    Granted(TInstant, u64),
}

impl Session {
    /// Checks a subscription token for `channel`, answering the refusal:
    /// 102 for a connection without a user (anonymous), a token for another
    /// channel or user, or an invalid one; 104 for an expired one; 107
    /// unchecked once the address spent its budget of failures.
    pub(super) fn check_sub_token(&self, id: &Value, channel: &str, token: &str) -> TokenCheck {
        let user = match &self.identity {
            Identity::Password => return TokenCheck::Ignored,
            Identity::Anonymous => {
                Stats::add(&self.st.hub.stats().auth_failures, 1);
                self.error(
                    id,
                    ErrorCode::Unauthorized,
                    "subscription tokens need a connection with a user (connect with a token)",
                );
                return TokenCheck::Refused;
            }
            Identity::User(c) => c.sub.as_str(),
        };
        // Within the address's budget of failed authentications, as a
        // connection token.
        let limit = self.st.cfg.auth_budget();
        let checked = self.client.authenticate(limit, || {
            self.st.auth.verify_subscription_token(token, channel, user)
        });
        let checked = match checked {
            Ok(r) => r,
            Err(wait) => {
                self.auth_rate_error(id, wait);
                return TokenCheck::Refused;
            }
        };
        match checked {
            Ok(c) => TokenCheck::Granted(expiry_instant(c.exp, self.st.cfg.jwt_leeway), c.exp),
            Err(e) => {
                self.token_error(id, &e);
                TokenCheck::Refused
            }
        }
    }

    /// Records (or replaces) the grant of `channel` until `expires`.
    pub(super) fn grant(&mut self, channel: String, expires: TInstant) {
        let now = TInstant::now();
        let ahead = REFRESH_AHEAD.min(expires.saturating_duration_since(now) / 2);
        let grant = Grant {
            expires,
            refresh_at: expires.checked_sub(ahead),
        };
        let tokens = self.sub_tokens.get_or_insert_with(Box::default);
        tokens.grants.insert(channel, grant);
        tokens.recompute();
    }

    /// True when a subscription token grants `channel`.
    pub(super) fn granted(&self, channel: &str) -> bool {
        self.sub_tokens
            .as_ref()
            .is_some_and(|t| t.grants.contains_key(channel))
    }

    /// Drops the grant of a channel left; frees the map with the last one.
    pub(super) fn forget_grant(&mut self, channel: &str) {
        if let Some(t) = &mut self.sub_tokens {
            if t.grants.remove(channel).is_some() {
                t.recompute();
            }
            if t.grants.is_empty() {
                self.sub_tokens = None;
            }
        }
    }

    /// The earliest grant deadline (a `sub_refresh` push or an expiry).
    pub(super) fn sub_deadline(&self) -> Option<TInstant> {
        self.sub_tokens.as_ref().and_then(|t| t.next)
    }

    /// Runs the grant deadlines that are due: pushes `sub_refresh`, or
    /// unsubscribes a channel whose token ran out.
    pub(super) fn sub_tokens_due(&mut self, now: TInstant) {
        let Some(tokens) = &mut self.sub_tokens else {
            return;
        };
        if tokens.next.is_none_or(|n| n > now) {
            return;
        }
        let mut expired = Vec::new();
        let mut refresh = Vec::new();
        for (channel, g) in tokens.grants.iter_mut() {
            if g.expires <= now {
                expired.push(channel.clone());
            } else if g.refresh_at.is_some_and(|r| r <= now) {
                g.refresh_at = None;
                refresh.push(channel.clone());
            }
        }
        tokens.recompute();
        for channel in refresh {
            self.send(push("sub_refresh", &channel, None));
        }
        for channel in expired {
            self.forget_grant(&channel);
            if self.leave_channel(&channel) {
                self.send(push(
                    "unsubscribe",
                    &channel,
                    Some((UNSUBSCRIBE_EXPIRED, "subscription token expired")),
                ));
            }
        }
    }

    /// `sub_refresh`: a new token for a channel this session is subscribed
    /// to. A refused token leaves the current grant in force until it ends.
    pub(super) fn sub_refresh(&mut self, id: &Value, a: SubRefreshArgs) {
        if !self.channels.contains(&a.channel) {
            self.error(id, ErrorCode::BadRequest, "not subscribed to this channel");
            return;
        }
        match self.check_sub_token(id, &a.channel, &a.token) {
            TokenCheck::Refused => {}
            TokenCheck::Ignored => self.send(proto::reply(id, json!({}))),
            TokenCheck::Granted(at, exp) => {
                self.grant(a.channel, at);
                self.send(proto::reply(id, json!({ "expires": exp })));
            }
        }
    }
}

/// A `sub_refresh` or `unsubscribe` push.
fn push(name: &str, channel: &str, code: Option<(u16, &str)>) -> Bytes {
    let mut v = json!({ "push": name, "channel": channel });
    if let Some((code, reason)) = code {
        v["code"] = json!(code);
        v["reason"] = json!(reason);
    }
    Bytes::from(v.to_string())
}
