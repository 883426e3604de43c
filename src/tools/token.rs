//! `herald token` and `herald check-token`: minting an HS256 JWT with the
//! configured secret, and explaining whether a token would be accepted.
//! Both verify with the server's own [`Authenticator`]: there is no second
//! implementation of the checks here, only of the messages.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::ToolError;
use crate::auth::{header_alg, Authenticator, TokenError};
use crate::config::Config;

/// What `herald token` puts in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    /// Must be a JSON object (shown in presence).
    pub info: Option<Value>,
    pub subscribe: Option<Vec<String>>,
    pub publish: Option<Vec<String>>,
    /// A subscription token for this channel (claim `channel`).
    pub channel: Option<String>,
    pub ttl: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JWT for `req`, signed HS256 with the configured secret, and checked
/// with the server's own verification before it is handed out.
pub fn mint_token(cfg: &Config, req: &TokenRequest) -> Result<String, ToolError> {
    let secret = match (&cfg.jwt_hmac_secret, &cfg.jwt_public_key_file) {
        (Some(s), None) => s,
        (None, Some(_)) => return Err(ToolError::PublicKeyOnly),
        (Some(_), Some(_)) => return Err(crate::auth::KeyError::Both.into()),
        (None, None) => return Err(ToolError::NoHmacSecret),
    };
    if req.sub.is_empty() {
        return Err(ToolError::Invalid("--sub must not be empty".into()));
    }
    if req.info.as_ref().is_some_and(|i| !i.is_object()) {
        return Err(ToolError::Invalid(
            "--info must be a JSON object, e.g. '{\"name\":\"Alice\"}'".into(),
        ));
    }
    if req.ttl < Duration::from_secs(1) {
        return Err(ToolError::Invalid("--ttl must be at least 1s".into()));
    }
    let now = now_secs();
    let mut claims = json!({
        "sub": req.sub,
        "iat": now,
        "exp": now.saturating_add(req.ttl.as_secs()),
    });
    if let Some(info) = &req.info {
        claims["info"] = info.clone();
    }
    if let Some(globs) = &req.subscribe {
        claims["subscribe"] = json!(globs);
    }
    if let Some(globs) = &req.publish {
        claims["publish"] = json!(globs);
    }
    if let Some(channel) = &req.channel {
        if channel.is_empty() {
            return Err(ToolError::Invalid("--channel must not be empty".into()));
        }
        claims["channel"] = json!(channel);
    }
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| ToolError::Invalid(format!("cannot sign the token: {e}")))?;
    let auth = Authenticator::from_config(cfg)?;
    match &req.channel {
        Some(ch) => auth.verify_subscription_token(&token, ch, &req.sub),
        None => auth.verify_token(&token),
    }
    .map_err(|e| ToolError::Invalid(format!("the minted token is refused: {e}")))?;
    Ok(token)
}

/// One part of a JWT (0: header, 1: claims) decoded without verification,
/// for display.
fn part(token: &str, i: usize) -> Option<Value> {
    let text = token.split('.').nth(i)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `seconds` since the epoch as an RFC 3339 UTC time.
pub(crate) fn utc(seconds: u64) -> String {
    // Days to civil date: Howard Hinnant's algorithm, in unsigned form.
    let days = seconds / 86_400;
    let rem = seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A span of seconds, coarsely: `59m 58s`, `3d 2h`.
pub(crate) fn span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A claim holding seconds since the epoch, with how far from now.
fn when(claims: &Value, name: &str, now: u64) -> Option<String> {
    let t = claims.get(name)?.as_u64()?;
    // Far past any calendar: say so instead of printing year 584 billion.
    if t > 253_402_300_799 {
        return Some(format!("{t} (beyond year 9999)"));
    }
    let rel = if t == now {
        "now".to_owned()
    } else if t > now {
        format!("in {}", span(t - now))
    } else {
        format!("{} ago", span(now - t))
    };
    Some(format!("{t} = {} ({rel})", utc(t)))
}

/// Prints what `token` holds and whether this configuration accepts it.
/// `Ok(true)` when accepted.
pub fn check_token(cfg: &Config, token: &str, out: &mut dyn Write) -> Result<bool, ToolError> {
    let token = token.trim();
    let auth = Authenticator::from_config(cfg)?;
    let now = now_secs();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match part(token, 0) {
        Some(h) => writeln!(out, "header: {h}")?,
        None => writeln!(out, "header: (not base64url JSON)")?,
    }
    let claims = part(token, 1);
    match &claims {
        Some(c) => {
            writeln!(out, "claims: {}", pretty(c))?;
            for name in ["exp", "nbf", "iat"] {
                if let Some(w) = when(c, name, now) {
                    writeln!(out, "{name}: {w}")?;
                }
            }
        }
        None => writeln!(out, "claims: (not base64url JSON)")?,
    }
    // A subscription token is checked as one: for its own channel and user.
    let claim = |name: &str| claims.as_ref().and_then(|c| c.get(name)?.as_str());
    let verdict = match (claim("channel"), claim("sub")) {
        (Some(ch), Some(sub)) => auth.verify_subscription_token(token, ch, sub),
        _ => auth.verify_token(token),
    };
    let reason = match &verdict {
        Ok(c) => {
            let until = if c.exp > 253_402_300_799 {
                "no practical expiry".to_owned()
            } else {
                format!("until {}", utc(c.exp))
            };
            match &c.channel {
                Some(ch) => writeln!(
                    out,
                    "accepted: yes (subscription token for channel {ch:?}, user {:?}, {until})",
                    c.sub
                )?,
                None => writeln!(out, "accepted: yes (user {:?}, {until})", c.sub)?,
            }
            return Ok(true);
        }
        Err(TokenError::Expired) => {
            let exp = claims.as_ref().and_then(|c| when(c, "exp", now));
            format!(
                "expired (exp {}; --jwt-leeway {}s)",
                exp.unwrap_or_else(|| "?".into()),
                cfg.jwt_leeway.as_secs()
            )
        }
        Err(TokenError::NotYetValid) => {
            let nbf = claims.as_ref().and_then(|c| when(c, "nbf", now));
            format!("not valid yet (nbf {})", nbf.unwrap_or_else(|| "?".into()))
        }
        Err(TokenError::NotConfigured) => "no JWT key is configured: this server accepts no \
             token (set --jwt-hmac-secret or --jwt-public-key-file)"
            .to_owned(),
        Err(TokenError::BadSignature) => "bad signature: not signed with this server's key \
             (forged, tampered with, or signed with another secret)"
            .to_owned(),
        Err(TokenError::WrongAlgorithm) => format!(
            "wrong algorithm: the token says {}, this server's key accepts only {}",
            header_alg(token).unwrap_or_else(|| "?".into()),
            auth.jwt_algorithm()
                .map_or_else(|| "?".into(), |a| format!("{a:?}"))
        ),
        Err(TokenError::Malformed(m)) => format!("malformed: {m}"),
        Err(e) => e.to_string(),
    };
    writeln!(out, "accepted: no: {reason}")?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secret: Option<&str>) -> Config {
        crate::config::Options {
            jwt_hmac_secret: secret.map(Into::into),
            ..Default::default()
        }
        .resolve()
        .unwrap()
    }

    fn req() -> TokenRequest {
        TokenRequest {
            sub: "alice".into(),
            info: Some(json!({"name": "Alice"})),
            subscribe: Some(vec!["chat:*".into()]),
            publish: None,
            channel: None,
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn subscription_tokens_are_minted_and_checked_as_such() {
        let c = cfg(Some("s3cret"));
        let t = mint_token(
            &c,
            &TokenRequest {
                channel: Some("private:1".into()),
                ..req()
            },
        )
        .unwrap();
        let a = Authenticator::from_config(&c).unwrap();
        assert!(a
            .verify_subscription_token(&t, "private:1", "alice")
            .is_ok());
        assert!(a.verify_token(&t).is_err());
        let (ok, text) = check(&c, &t);
        assert!(ok, "{text}");
        assert!(
            text.contains("subscription token for channel \"private:1\""),
            "{text}"
        );
    }

    fn check(cfg: &Config, token: &str) -> (bool, String) {
        let mut out = Vec::new();
        let ok = check_token(cfg, token, &mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    #[test]
    fn minted_tokens_carry_the_claims_and_are_accepted() {
        let c = cfg(Some("s3cret"));
        let t = mint_token(&c, &req()).unwrap();
        let claims = Authenticator::from_config(&c)
            .unwrap()
            .verify_token(&t)
            .unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.info, Some(json!({"name": "Alice"})));
        assert_eq!(
            claims.subscribe.as_deref(),
            Some(&["chat:*".to_owned()][..])
        );
        assert_eq!(claims.publish, None);
        let left = claims.exp - now_secs();
        assert!((3590..=3600).contains(&left), "{left}");
        let (ok, text) = check(&c, &t);
        assert!(ok, "{text}");
        assert!(text.contains("accepted: yes (user \"alice\""), "{text}");
        let (ok, text) = check(&cfg(Some("other")), &t);
        assert!(!ok);
        assert!(text.contains("accepted: no: bad signature"), "{text}");
        let (ok, text) = check(&cfg(None), &t);
        assert!(!ok);
        assert!(text.contains("no JWT key is configured"), "{text}");
        assert!(
            text.contains("\"sub\": \"alice\""),
            "claims shown even when refused: {text}"
        );
    }

    #[test]
    fn mint_refuses_what_it_cannot_sign() {
        assert!(matches!(
            mint_token(&cfg(None), &req()),
            Err(ToolError::NoHmacSecret)
        ));
        let c = cfg(Some("s"));
        let bad_info = TokenRequest {
            info: Some(json!([1])),
            ..req()
        };
        assert!(matches!(
            mint_token(&c, &bad_info),
            Err(ToolError::Invalid(_))
        ));
        let no_ttl = TokenRequest {
            ttl: Duration::from_millis(500),
            ..req()
        };
        assert!(matches!(
            mint_token(&c, &no_ttl),
            Err(ToolError::Invalid(_))
        ));
        let no_sub = TokenRequest {
            sub: String::new(),
            ..req()
        };
        assert!(matches!(
            mint_token(&c, &no_sub),
            Err(ToolError::Invalid(_))
        ));
        let huge = TokenRequest {
            ttl: Duration::from_secs(u64::MAX),
            ..req()
        };
        assert!(mint_token(&c, &huge).is_ok(), "exp saturates at u64::MAX");
    }

    #[test]
    fn refusals_say_why() {
        let c = cfg(Some("s3cret"));
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &json!({"sub": "bob", "exp": now_secs() - 120}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let (ok, text) = check(&c, &expired);
        assert!(!ok);
        assert!(text.contains("accepted: no: expired (exp "), "{text}");
        assert!(text.contains("ago"), "{text}");
        let (ok, text) = check(&c, "not a token");
        assert!(!ok);
        assert!(text.contains("header: (not base64url JSON)"), "{text}");
        assert!(text.contains("accepted: no: malformed"), "{text}");
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&format!(r#"{{"sub":"x","exp":{}}}"#, now_secs() + 60))
        );
        let (ok, text) = check(&c, &none);
        assert!(!ok);
        assert!(
            text.contains(
                "wrong algorithm: the token says none, this server's key accepts only HS256"
            ),
            "{text}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(span(3599), "59m 59s");
        assert_eq!(span(90_061), "1d 1h");
    }
}
