//! Authentication shared by the front ends: Redis-style passwords now, JWTs
//! (typed claims and channel permissions) behind the same `Identity`.

use std::sync::Arc;

use crate::config::Config;

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials; allowed where the configuration allows anonymous use.
    Anonymous,
    /// Authenticated with `requirepass`: full access, as Redis's default user.
    Password,
}

/// Why credentials were refused, in the form RESP clients expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")]
    NoPasswordConfigured,
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
}

/// Checks credentials against the configured secrets.
#[derive(Debug)]
pub struct Authenticator {
    requirepass: Option<String>,
}

impl Authenticator {
    pub fn new(cfg: &Config) -> Arc<Authenticator> {
        Arc::new(Authenticator {
            requirepass: cfg.requirepass.clone(),
        })
    }

    /// True when RESP clients must authenticate before most commands.
    pub fn required(&self) -> bool {
        self.requirepass.is_some()
    }

    /// `AUTH [user] secret`. The user, when given, must be `default` for a
    /// password, as in Redis.
    pub fn authenticate(&self, user: Option<&[u8]>, secret: &[u8]) -> Result<Identity, AuthError> {
        let Some(pass) = &self.requirepass else {
            return match user {
                // `AUTH default <anything>` with no password: Redis accepts
                // only what the nopass default user matches, which is anything.
                Some(u) if u == b"default" => Ok(Identity::Anonymous),
                Some(_) => Err(AuthError::WrongPass),
                None => Err(AuthError::NoPasswordConfigured),
            };
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok && constant_time_eq(pass.as_bytes(), secret) {
            Ok(Identity::Password)
        } else {
            Err(AuthError::WrongPass)
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
