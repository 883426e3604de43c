//! Authentication and permissions shared by every front end.
//!
//! Credentials become an [`Identity`]: a Redis-style password (full access),
//! a verified JWT (typed [`Claims`] whose `subscribe`/`publish` globs decide
//! where present), or anonymous. JWTs are verified with the one algorithm the
//! configured key fixes (HS256 for `--jwt-hmac-secret`, RS256 or ES256 for
//! the PEM in `--jwt-public-key-file`); the token's own `alg` header is never
//! trusted, so `none` and key-confusion tokens fail.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Config, NamespaceOptions};
use crate::hub::glob::Glob;

/// The claims Herald reads from a JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Shown in presence.
    #[serde(default)]
    pub info: Option<serde_json::Value>,
    /// Globs the holder may subscribe to; absent: the namespace decides.
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Globs the holder may publish to; absent: the namespace decides.
    #[serde(default)]
    pub publish: Option<Vec<String>>,
    /// Set only in a subscription token: the one channel it grants. A
    /// token that has it cannot authenticate a connection.
    #[serde(default)]
    pub channel: Option<String>,
    /// `subscribe` and `publish` compiled once, on first use: a permission
    /// check runs per key and per channel, and DBSIZE or PUBSUB CHANNELS
    /// run it for every key or channel.
    #[serde(skip)]
    compiled: std::sync::OnceLock<(Vec<Glob>, Vec<Glob>)>,
}

impl PartialEq for Claims {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.sub,
            self.exp,
            &self.info,
            &self.subscribe,
            &self.publish,
            &self.channel,
        ) == (&o.sub, o.exp, &o.info, &o.subscribe, &o.publish, &o.channel)
    }
}

impl Claims {
    /// Claims for tests and embedders.
    pub fn new(
        sub: impl Into<String>,
        exp: u64,
        subscribe: Option<Vec<String>>,
        publish: Option<Vec<String>>,
    ) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            info: None,
            subscribe,
            publish,
            channel: None,
            compiled: std::sync::OnceLock::new(),
        }
    }

    fn globs(&self) -> &(Vec<Glob>, Vec<Glob>) {
        self.compiled.get_or_init(|| {
            let compile = |g: &Option<Vec<String>>| {
                g.iter()
                    .flatten()
                    .map(|g| Glob::new(g.as_bytes()))
                    .collect::<Vec<_>>()
            };
            (compile(&self.subscribe), compile(&self.publish))
        })
    }
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// Authenticated with `requirepass`, or a trusted backend: full access.
    Password,
    /// A verified JWT.
    User(Arc<Claims>),
}

/// What the rules say about one action (subscribe or publish) on a
/// channel: yes, no, or "ask the app" (the namespace sends it to the app's
/// backend, and nothing else decided it). Front ends that cannot ask the
/// app (RESP) treat [`Rule::App`] as a refusal, never as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Allow,
    Deny,
    App,
}

/// Why credentials were refused, in the form RESP clients expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")]
    NoPasswordConfigured,
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("no JWT key is configured")]
    NotConfigured,
    /// The signature does not match the configured key (forged, tampered,
    /// or signed with another key).
    #[error("invalid token: bad signature")]
    BadSignature,
    /// The header names another algorithm than the one the key fixes
    /// (`none` included).
    #[error("invalid token: wrong algorithm")]
    WrongAlgorithm,
    /// Not three base64url parts of JSON, or claims of the wrong type.
    #[error("invalid token: malformed ({0})")]
    Malformed(String),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Errors loading the JWT key at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read JWT public key file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("JWT public key file {0} holds neither an RSA nor an EC (P-256) public key in PEM")]
    Format(std::path::PathBuf),
    #[error("configure only one of --jwt-hmac-secret and --jwt-public-key-file")]
    Both,
}

/// The largest JWT leeway applied (a year), whatever is configured.
const MAX_LEEWAY_SECS: u64 = 365 * 86_400;

struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

/// Checks credentials against the configured secrets.
pub struct Authenticator {
    requirepass: Option<String>,
    jwt: Option<JwtVerifier>,
    /// No password and no JWT key: every client is trusted (loopback only,
    /// unless `--allow-anonymous`).
    open: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("requirepass", &self.requirepass.is_some())
            .field(
                "jwt",
                &self.jwt.as_ref().map(|j| j.validation.algorithms.clone()),
            )
            .finish()
    }
}

impl Authenticator {
    /// Builds the authenticator; reads the PEM key file if configured.
    pub fn from_config(cfg: &Config) -> Result<Arc<Authenticator>, KeyError> {
        let jwt = match (&cfg.jwt_hmac_secret, &cfg.jwt_public_key_file) {
            (Some(_), Some(_)) => return Err(KeyError::Both),
            (Some(secret), None) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    Some((k, Algorithm::RS256))
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    Some((k, Algorithm::ES256))
                } else {
                    return Err(KeyError::Format(path.clone()));
                }
            }
            (None, None) => None,
        };
        let jwt = jwt.map(|(key, alg)| {
            let mut validation = Validation::new(alg);
            // jsonwebtoken computes `now - leeway` and `now + leeway` in
            // plain u64 arithmetic: an absurd configured leeway would
            // overflow there, so it is capped at a year.
            validation.leeway = cfg.jwt_leeway.as_secs().min(MAX_LEEWAY_SECS);
            validation.validate_nbf = true;
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub"]);
            JwtVerifier { key, validation }
        });
        Ok(Arc::new(Authenticator {
            // The connect hook is authentication too: without it, a client
            // with no token would have full access.
            open: cfg.requirepass.is_none() && jwt.is_none() && cfg.proxy_connect_url.is_none(),
            requirepass: cfg.requirepass.clone(),
            jwt,
        }))
    }

    /// An authenticator for tests and embedders: the config's password only.
    pub fn new(cfg: &Config) -> Arc<Authenticator> {
        Self::from_config(cfg).unwrap_or_else(|_| {
            Arc::new(Authenticator {
                open: cfg.requirepass.is_none() && cfg.proxy_connect_url.is_none(),
                requirepass: cfg.requirepass.clone(),
                jwt: None,
            })
        })
    }

    /// True when RESP clients must authenticate before most commands.
    pub fn required(&self) -> bool {
        self.requirepass.is_some()
    }

    /// True when JWTs are accepted.
    pub fn has_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// The identity of a client that presents nothing: full access when no
    /// authentication is configured at all, anonymous otherwise.
    pub fn unauthenticated(&self) -> Identity {
        if self.open {
            Identity::Password
        } else {
            Identity::Anonymous
        }
    }

    /// The one algorithm JWTs must be signed with, fixed by the key.
    pub fn jwt_algorithm(&self) -> Option<Algorithm> {
        self.jwt
            .as_ref()
            .and_then(|j| j.validation.algorithms.first().copied())
    }

    /// Verifies a connection's JWT into claims. A subscription token (one
    /// with a `channel` claim) is refused: it grants one channel, and must
    /// not open a connection with whatever the namespaces give a user.
    pub fn verify_token(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let claims = self.decode(token)?;
        if claims.channel.is_some() {
            return Err(TokenError::Invalid(
                "a subscription token (with a channel claim) cannot authenticate a connection"
                    .into(),
            ));
        }
        Ok(claims)
    }

    /// Verifies a subscription token for `channel`, presented by the
    /// connection of `user`: the same keys and checks as a connection's
    /// token, plus a `channel` claim equal to `channel` and a `sub` equal
    /// to `user`. Returns the token's claims (its `exp` bounds the grant).
    pub fn verify_subscription_token(
        &self,
        token: &str,
        channel: &str,
        user: &str,
    ) -> Result<Arc<Claims>, TokenError> {
        let claims = self.decode(token)?;
        match &claims.channel {
            None => Err(TokenError::Invalid("no channel claim".into())),
            Some(c) if c != channel => Err(TokenError::Invalid(
                "the token is for another channel".into(),
            )),
            Some(_) if claims.sub != user => {
                Err(TokenError::Invalid("the token is for another user".into()))
            }
            Some(_) => Ok(claims),
        }
    }

    /// Verifies a JWT's signature, algorithm and times into claims.
    fn decode(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let Some(jwt) = &self.jwt else {
            return Err(TokenError::NotConfigured);
        };
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation) {
            Ok(data) => Ok(Arc::new(data.claims)),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                // `alg: none` (or any name jsonwebtoken does not know)
                // fails as a header that does not parse: still the wrong
                // algorithm, not a malformed token.
                // (`Algorithm`'s Debug form is its JOSE name.)
                _ if self.jwt_algorithm().is_some_and(|alg| {
                    header_alg(token).is_some_and(|a| a != format!("{alg:?}"))
                }) =>
                {
                    TokenError::WrongAlgorithm
                }
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_)
                | ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed(e.to_string()),
                _ => TokenError::Invalid(e.to_string()),
            }),
        }
    }

    /// `AUTH [user] secret` over RESP: the password (user `default` or none),
    /// else a JWT when a key is configured.
    pub fn authenticate(&self, user: Option<&[u8]>, secret: &[u8]) -> Result<Identity, AuthError> {
        if let Some(pass) = &self.requirepass {
            if user.is_none_or(|u| u == b"default") && constant_time_eq(pass.as_bytes(), secret) {
                return Ok(Identity::Password);
            }
        }
        if self.jwt.is_some() {
            if let Ok(token) = std::str::from_utf8(secret) {
                if let Ok(claims) = self.verify_token(token) {
                    return Ok(Identity::User(claims));
                }
            }
            return Err(AuthError::WrongPass);
        }
        if self.requirepass.is_some() {
            return Err(AuthError::WrongPass);
        }
        match user {
            // With no password Redis's default user is `nopass`: any secret.
            Some(u) if u == b"default" => Ok(Identity::Password),
            Some(_) => Err(AuthError::WrongPass),
            None => Err(AuthError::NoPasswordConfigured),
        }
    }
}

/// The `alg` named in a token's header, read without any verification
/// (for messages only).
pub fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(v.get("alg")?.as_str()?.to_owned())
}

/// True when `pattern` can only match channels that some glob in `globs`
/// matches. Decided conservatively: equal to a glob, or inside a glob of the
/// form `literal*` (its literal prefix extends the glob's).
pub fn pattern_within(pattern: &[u8], globs: &[String]) -> bool {
    // Nothing compiled, the pattern's prefix read once and only for a glob
    // of the form `literal*`: a survey's answer tests every pattern of a
    // node against up to 64 globs (compiling each glob per pattern cost 28
    // times the unscoped answer).
    let mut prefix: Option<Vec<u8>> = None;
    globs.iter().any(|g| {
        let g = g.as_bytes();
        if g == pattern {
            return true;
        }
        match g.split_last() {
            // The empty pattern matches only the empty channel, which no `*` matches.
            // `head` must be plain literal text for the test to be exact:
            // no byte a glob reads specially.
            Some((b'*', head)) if !pattern.is_empty() => {
                !head.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
                    && prefix
                        .get_or_insert_with(|| literal_prefix(pattern))
                        .starts_with(head)
            }
            _ => false,
        }
    })
}

/// [`Glob::literal_prefix`] of `pattern`, without compiling it: the bytes
/// before its first `*`, `?` or `[`, a `\\` taking the next byte as it is
/// (a final `\\` is itself).
fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = pattern.get(i) {
        match b {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                out.push(pattern[i + 1]);
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn rule(allowed: bool) -> Rule {
    if allowed {
        Rule::Allow
    } else {
        Rule::Deny
    }
}

fn any_glob(globs: &[Glob], channel: &[u8]) -> bool {
    globs.iter().any(|g| g.matches(channel))
}

/// Whether a token whose `subscribe` globs are `globs` (compiled) may see
/// `channel` in introspection (`PUBSUB CHANNELS`): a glob matches it, or,
/// for `__presence__:C` and `__leaderboard__:K`, what it reports on. The
/// rule [`Identity::may_subscribe`] applies to such a token, so another
/// node can filter its answer with the globs alone.
pub fn scope_sees_channel(globs: &[Glob], channel: &[u8]) -> bool {
    any_glob(globs, governing(channel).unwrap_or(channel))
}

/// Whether a token whose `subscribe` globs are `globs` may see `pattern`
/// (`PUBSUB NUMPAT`): the globs contain it, or, for a reserved prefix,
/// what it reports on ([`Identity::may_psubscribe`] for such a token).
pub fn scope_sees_pattern(globs: &[String], pattern: &[u8]) -> bool {
    pattern_within(governing_pattern(pattern).unwrap_or(pattern), globs)
}

/// Herald's own channels: presence events of channel C on
/// `__presence__:C`, top-N changes of leaderboard K on `__leaderboard__:K`.
/// Only Herald (and password clients) publish there, and who may read one
/// is decided by the channel or key it reports on.
const RESERVED: [&[u8]; 2] = [b"__presence__:", b"__leaderboard__:"];

/// The channel or key whose permissions govern `channel`: itself, or what
/// a reserved channel reports on.
fn governing(channel: &[u8]) -> Option<&[u8]> {
    RESERVED.iter().find_map(|p| channel.strip_prefix(*p))
}

/// A pattern that can only match reserved channels of one prefix reports on
/// the channels its rest matches: `__presence__:chat:*` → `chat:*`.
fn governing_pattern(pattern: &[u8]) -> Option<&[u8]> {
    RESERVED.iter().find_map(|p| pattern.strip_prefix(*p))
}

impl Identity {
    /// May this identity subscribe to `channel`? The namespace is that of
    /// the channel, or, for `__presence__:C` and `__leaderboard__:K`, that
    /// of what they report on: a closed namespace's presence stays closed.
    pub fn may_subscribe(&self, channel: &[u8], cfg: &Config) -> bool {
        let target = governing(channel).unwrap_or(channel);
        self.can_subscribe(channel, cfg.namespace(target))
    }

    /// May this identity subscribe to `pattern`? Every namespace it can
    /// reach must allow it (for reserved prefixes, those the rest reaches).
    pub fn may_psubscribe(&self, pattern: &[u8], cfg: &Config) -> bool {
        match governing_pattern(pattern) {
            Some(rest) => {
                let reach = cfg.namespaces_for_pattern(rest);
                match self {
                    // The globs of a token are checked against what the
                    // pattern reports on.
                    Identity::User(_) => self.can_psubscribe(rest, &reach),
                    _ => self.can_psubscribe(pattern, &reach),
                }
            }
            None => self.can_psubscribe(pattern, &cfg.namespaces_for_pattern(pattern)),
        }
    }

    /// May this identity publish to `channel`?
    pub fn may_publish(&self, channel: &[u8], cfg: &Config) -> bool {
        self.can_publish(channel, cfg.namespace(channel))
    }

    /// What this identity may see of other nodes' channels and patterns,
    /// when its token's `subscribe` globs alone decide it (see
    /// [`scope_sees_channel`]): carried in a survey, so that other nodes
    /// answer only with that. `None` for the password (everything) and for
    /// identities the namespaces decide for (the asking node filters).
    pub fn survey_scope(&self) -> Option<&[String]> {
        match self {
            Identity::User(c) => c.subscribe.as_deref(),
            _ => None,
        }
    }

    /// The user id, for identified clients.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::User(c) => Some(&c.sub),
            _ => None,
        }
    }

    pub fn claims(&self) -> Option<&Arc<Claims>> {
        match self {
            Identity::User(c) => Some(c),
            _ => None,
        }
    }

    /// May this identity subscribe to `channel` in namespace `ns`? Where
    /// the namespace would ask the app ([`Rule::App`]), no.
    pub fn can_subscribe(&self, channel: &[u8], ns: &NamespaceOptions) -> bool {
        self.subscribe_rule(channel, ns) == Rule::Allow
    }

    /// Whether this identity may subscribe to `channel` in namespace `ns`:
    ///
    /// 1. The password (and every client of an open server) may, always.
    /// 2. A refusal of the identity's own rules is final: a token's
    ///    `subscribe` globs that do not match, an anonymous client where
    ///    the namespace does not allow anonymous access.
    /// 3. A token whose `subscribe` globs match decides: allowed, whatever
    ///    the namespace (the app signed the token).
    /// 4. Anything else (a token without a `subscribe` claim, a user the
    ///    connect hook accepted, an anonymous client where it is allowed)
    ///    is [`Rule::App`] where the namespace sets `subscribe_proxy`, and
    ///    allowed elsewhere.
    pub fn subscribe_rule(&self, channel: &[u8], ns: &NamespaceOptions) -> Rule {
        let undecided = match self {
            Identity::Password => return Rule::Allow,
            Identity::Anonymous => ns.allow_anonymous,
            Identity::User(c) => match &c.subscribe {
                Some(_) => return rule(scope_sees_channel(&c.globs().0, channel)),
                None => true,
            },
        };
        match (undecided, ns.subscribe_proxy) {
            (false, _) => Rule::Deny,
            (true, true) => Rule::App,
            (true, false) => Rule::Allow,
        }
    }

    /// [`Identity::subscribe_rule`] for `channel`, in the namespace that
    /// governs it (for `__presence__:C` and `__leaderboard__:K`, that of
    /// what they report on).
    pub fn subscribe_rule_for(&self, channel: &[u8], cfg: &Config) -> Rule {
        let target = governing(channel).unwrap_or(channel);
        self.subscribe_rule(channel, cfg.namespace(target))
    }

    /// May this identity subscribe to `pattern`? `namespaces` are the options
    /// of every namespace the pattern can reach. The app decides channel by
    /// channel, so a pattern that reaches a `subscribe_proxy` namespace is
    /// refused unless the token's globs contain it.
    pub fn can_psubscribe(&self, pattern: &[u8], namespaces: &[&NamespaceOptions]) -> bool {
        let proxied = || namespaces.iter().any(|n| n.subscribe_proxy);
        match self {
            Identity::Password => true,
            Identity::Anonymous => namespaces.iter().all(|n| n.allow_anonymous) && !proxied(),
            Identity::User(c) => match &c.subscribe {
                Some(globs) => pattern_within(pattern, globs),
                None => !proxied(),
            },
        }
    }

    /// May this identity publish to `channel` in namespace `ns`? Where the
    /// namespace would ask the app ([`Rule::App`]), no.
    pub fn can_publish(&self, channel: &[u8], ns: &NamespaceOptions) -> bool {
        self.publish_rule(channel, ns) == Rule::Allow
    }

    /// Whether this identity may publish to `channel` in namespace `ns`:
    /// the password may; the identity's own rules (a token's `publish`
    /// globs where present, else the namespace's `allow_publish`, and
    /// `allow_anonymous`) refuse finally; what they allow is
    /// [`Rule::App`] where the namespace sets `publish_proxy` (the app
    /// validates or rewrites every publish there, a token's included).
    pub fn publish_rule(&self, channel: &[u8], ns: &NamespaceOptions) -> Rule {
        if governing(channel).is_some() {
            // Forged join/leave or leaderboard events would mislead every
            // subscriber: these channels carry only what Herald publishes.
            return rule(*self == Identity::Password);
        }
        let allowed = match self {
            Identity::Password => return Rule::Allow,
            Identity::Anonymous => ns.allow_publish && ns.allow_anonymous,
            Identity::User(c) => match &c.publish {
                Some(_) => any_glob(&c.globs().1, channel),
                None => ns.allow_publish,
            },
        };
        match (allowed, ns.publish_proxy) {
            (false, _) => Rule::Deny,
            (true, true) => Rule::App,
            (true, false) => Rule::Allow,
        }
    }
}

/// Compares without an early exit, so timing does not leak the prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs_auth() -> Arc<Authenticator> {
        let cfg = crate::config::Options {
            jwt_hmac_secret: Some("s3cret".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        Authenticator::from_config(&cfg).unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens() {
        let a = hs_auth();
        let ok = token(
            serde_json::json!({"sub": "u1", "exp": now() + 60, "subscribe": ["chat:*"]}),
            "s3cret",
        );
        let c = a.verify_token(&ok).unwrap();
        assert_eq!(c.sub, "u1");
        let expired = token(
            serde_json::json!({"sub": "u1", "exp": now() - 60}),
            "s3cret",
        );
        assert_eq!(a.verify_token(&expired), Err(TokenError::Expired));
        let future = token(
            serde_json::json!({"sub": "u1", "exp": now() + 600, "nbf": now() + 300}),
            "s3cret",
        );
        assert_eq!(a.verify_token(&future), Err(TokenError::NotYetValid));
        let wrong = token(serde_json::json!({"sub": "u1", "exp": now() + 60}), "other");
        assert_eq!(a.verify_token(&wrong), Err(TokenError::BadSignature));
        let nosub = token(serde_json::json!({"exp": now() + 60}), "s3cret");
        assert!(matches!(
            a.verify_token(&nosub),
            Err(TokenError::Malformed(m)) if m.contains("sub")
        ));
        // alg: none, hand-made.
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"u1","exp":{}}}"#, now() + 60))
        );
        assert_eq!(a.verify_token(&none), Err(TokenError::WrongAlgorithm));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "u1", "exp": now() + 60}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(a.verify_token(&hs512), Err(TokenError::WrongAlgorithm));
        for garbage in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.%%%.x"] {
            assert!(
                matches!(a.verify_token(garbage), Err(TokenError::Malformed(_))),
                "{garbage:?}: {:?}",
                a.verify_token(garbage)
            );
        }
        // Tampered payload keeps the old signature.
        let parts: Vec<&str> = ok.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&format!(r#"{{"sub":"admin","exp":{}}}"#, now() + 60)),
            parts[2]
        );
        assert_eq!(a.verify_token(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn subscription_tokens() {
        let a = hs_auth();
        let t = token(
            serde_json::json!({"sub": "u1", "channel": "c", "exp": now() + 60}),
            "s3cret",
        );
        assert_eq!(
            a.verify_subscription_token(&t, "c", "u1").unwrap().channel,
            Some("c".into())
        );
        let invalid = |ch, user| match a.verify_subscription_token(&t, ch, user) {
            Err(TokenError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(invalid("d", "u1").contains("another channel"));
        assert!(invalid("c", "u2").contains("another user"));
        // Never a connection's token, and a connection's token never grants.
        assert!(matches!(a.verify_token(&t), Err(TokenError::Invalid(_))));
        let conn = token(
            serde_json::json!({"sub": "u1", "exp": now() + 60}),
            "s3cret",
        );
        assert!(matches!(
            a.verify_subscription_token(&conn, "c", "u1"),
            Err(TokenError::Invalid(m)) if m.contains("no channel")
        ));
        let old = token(
            serde_json::json!({"sub": "u1", "channel": "c", "exp": now() - 60}),
            "s3cret",
        );
        assert_eq!(
            a.verify_subscription_token(&old, "c", "u1"),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn absurd_leeway_and_expiry_do_not_overflow() {
        let cfg = crate::config::Options {
            jwt_hmac_secret: Some("s3cret".into()),
            jwt_leeway: Some(crate::config::Dur(std::time::Duration::from_secs(u64::MAX))),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let a = Authenticator::from_config(&cfg).unwrap();
        let t = token(serde_json::json!({"sub": "u1", "exp": u64::MAX}), "s3cret");
        assert_eq!(a.verify_token(&t).unwrap().exp, u64::MAX);
        let t = token(
            serde_json::json!({"sub": "u1", "exp": u64::MAX, "nbf": u64::MAX}),
            "s3cret",
        );
        assert_eq!(a.verify_token(&t), Err(TokenError::NotYetValid));
    }

    #[test]
    fn permissions() {
        let ns = NamespaceOptions::default();
        let user = Identity::User(Arc::new(Claims::new(
            "u",
            0,
            Some(vec!["chat:*".into(), "news".into()]),
            Some(vec!["chat:room1".into()]),
        )));
        assert!(user.can_subscribe(b"chat:x", &ns));
        assert!(!user.can_subscribe(b"admin", &ns));
        assert!(user.can_psubscribe(b"chat:room*", &[&ns]));
        assert!(user.can_psubscribe(b"news", &[&ns]));
        assert!(!user.can_psubscribe(b"*", &[&ns]));
        assert!(!user.can_psubscribe(b"ch*", &[&ns]));
        assert!(user.can_publish(b"chat:room1", &ns));
        assert!(!user.can_publish(b"chat:room2", &ns));
        let closed = NamespaceOptions {
            allow_anonymous: false,
            allow_publish: false,
            ..NamespaceOptions::default()
        };
        assert!(!Identity::Anonymous.can_subscribe(b"x", &closed));
        assert!(Identity::Password.can_publish(b"x", &closed));
        let plain = Identity::User(Arc::new(Claims::new("u", 0, None, None)));
        assert!(
            plain.can_subscribe(b"x", &closed),
            "identified clients subscribe by default"
        );
        assert!(!plain.can_publish(b"x", &closed));
        // Herald's own channels: nobody but the password publishes there,
        // and reading them follows the channel or key they report on.
        let open = NamespaceOptions::default();
        assert!(!plain.can_publish(b"__presence__:chat:x", &open));
        assert!(!user.can_publish(b"__leaderboard__:chat:room1", &open));
        assert!(!Identity::Anonymous.can_publish(b"__presence__:x", &open));
        assert!(Identity::Password.can_publish(b"__presence__:x", &open));
        assert!(user.can_subscribe(b"__presence__:chat:x", &open));
        assert!(!user.can_subscribe(b"__presence__:secret:x", &open));
        assert!(!user.can_subscribe(b"__leaderboard__:secret", &open));
    }

    /// A token's globs alone decide what it sees, whatever the namespaces:
    /// the rule another node applies to a survey's answer is the asker's.
    #[test]
    fn a_scope_sees_what_its_token_may_subscribe() {
        let cfg = crate::config::Options::default().resolve().unwrap();
        let claims = Claims::new("u", 0, Some(vec!["chat:*".into(), "news".into()]), None);
        let globs: Vec<Glob> = ["chat:*", "news"].map(|g| Glob::new(g.as_bytes())).into();
        let scope = claims.subscribe.clone().unwrap();
        let user = Identity::User(Arc::new(claims));
        assert_eq!(user.survey_scope(), Some(&scope[..]));
        assert_eq!(Identity::Password.survey_scope(), None);
        let plain = Identity::User(Arc::new(Claims::new("u", 0, None, None)));
        assert_eq!(plain.survey_scope(), None);
        for c in [
            &b"chat:a"[..],
            b"news",
            b"newsx",
            b"secret",
            b"__presence__:chat:a",
            b"__presence__:secret",
            b"__leaderboard__:news",
            b"__leaderboard__:x",
            b"",
        ] {
            assert_eq!(
                scope_sees_channel(&globs, c),
                user.may_subscribe(c, &cfg),
                "{c:?}"
            );
        }
        for p in [
            &b"chat:*"[..],
            b"chat:a*",
            b"*",
            b"news",
            b"new?",
            b"__presence__:chat:*",
            b"__presence__:*",
            b"__leaderboard__:news",
        ] {
            assert_eq!(
                scope_sees_pattern(&scope, p),
                user.may_psubscribe(p, &cfg),
                "{p:?}"
            );
        }
        assert!(scope_sees_channel(&globs, b"__presence__:chat:a"));
        assert!(!scope_sees_pattern(&scope, b"*"));
    }

    /// `pattern_within` as it was (compiling each glob's head), for
    /// comparison over every short pattern and glob of a small alphabet.
    #[test]
    fn pattern_within_answers_as_when_it_compiled_each_head() {
        fn before(pattern: &[u8], globs: &[String]) -> bool {
            let prefix = Glob::new(pattern);
            let prefix = prefix.literal_prefix();
            globs.iter().any(|g| {
                let g = g.as_bytes();
                g == pattern
                    || match g.split_last() {
                        Some((b'*', head)) if !pattern.is_empty() => {
                            Glob::new(head).literal_prefix().len() == head.len()
                                && !head.contains(&b'\\')
                                && prefix.starts_with(head)
                        }
                        _ => false,
                    }
            })
        }
        let alphabet = [b'a', b'*', b'?', b'[', b']', b'\\', b'^'];
        let mut all: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=3 {
            let mut next = Vec::new();
            for w in all.iter().filter(|w| w.len() == len - 1) {
                for b in alphabet {
                    let mut x = w.clone();
                    x.push(b);
                    next.push(x);
                }
            }
            all.extend(next);
        }
        for g in &all {
            let globs = vec![String::from_utf8(g.clone()).unwrap()];
            assert_eq!(literal_prefix(g), Glob::new(g).literal_prefix(), "{g:?}");
            for p in &all {
                assert_eq!(pattern_within(p, &globs), before(p, &globs), "{p:?} {g:?}");
            }
        }
    }

    #[test]
    fn proxied_namespaces_ask_the_app_only_where_nothing_else_decides() {
        let proxied = NamespaceOptions {
            subscribe_proxy: true,
            publish_proxy: true,
            allow_anonymous: true,
            ..NamespaceOptions::default()
        };
        let globs = Identity::User(Arc::new(Claims::new(
            "u",
            0,
            Some(vec!["p:mine".into()]),
            Some(vec!["p:mine".into()]),
        )));
        let plain = Identity::User(Arc::new(Claims::new("u", 0, None, None)));
        // Subscribe: the token's globs decide both ways; the rest asks.
        assert_eq!(globs.subscribe_rule(b"p:mine", &proxied), Rule::Allow);
        assert_eq!(globs.subscribe_rule(b"p:other", &proxied), Rule::Deny);
        assert_eq!(plain.subscribe_rule(b"p:x", &proxied), Rule::App);
        assert_eq!(
            Identity::Anonymous.subscribe_rule(b"p:x", &proxied),
            Rule::App
        );
        assert_eq!(
            Identity::Password.subscribe_rule(b"p:x", &proxied),
            Rule::Allow
        );
        let closed = NamespaceOptions {
            allow_anonymous: false,
            ..proxied.clone()
        };
        assert_eq!(
            Identity::Anonymous.subscribe_rule(b"p:x", &closed),
            Rule::Deny
        );
        // Front ends that cannot ask refuse.
        assert!(!plain.can_subscribe(b"p:x", &proxied));
        assert!(globs.can_subscribe(b"p:mine", &proxied));
        // Patterns reaching a proxied namespace: only inside the globs.
        assert!(!plain.can_psubscribe(b"p:*", &[&proxied]));
        assert!(!Identity::Anonymous.can_psubscribe(b"p:*", &[&proxied]));
        assert!(globs.can_psubscribe(b"p:mine", &[&proxied]));
        assert!(Identity::Password.can_psubscribe(b"*", &[&proxied]));
        // Publish: what the rules allow goes to the app, tokens' included.
        assert_eq!(globs.publish_rule(b"p:mine", &proxied), Rule::App);
        assert_eq!(globs.publish_rule(b"p:other", &proxied), Rule::Deny);
        assert_eq!(plain.publish_rule(b"p:x", &proxied), Rule::App);
        assert_eq!(
            Identity::Password.publish_rule(b"p:x", &proxied),
            Rule::Allow
        );
        let no_publish = NamespaceOptions {
            allow_publish: false,
            ..proxied.clone()
        };
        assert_eq!(plain.publish_rule(b"p:x", &no_publish), Rule::Deny);
        assert_eq!(
            plain.publish_rule(b"__presence__:p:x", &proxied),
            Rule::Deny
        );
        assert!(!plain.can_publish(b"p:x", &proxied));
    }
}
