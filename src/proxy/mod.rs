//! The app-backend hooks (`--proxy-connect-url`, `--proxy-subscribe-url`,
//! `--proxy-publish-url`): what Herald asks the app and how it reads the
//! answer. No I/O here; `client` makes the calls.
//!
//! A call is one HTTP POST of a JSON object; the app answers `200` with
//! exactly one of `{"result": …}`, `{"error": {"code", "message"}}` or
//! `{"disconnect": {"code", "reason"}}`. Anything else (another status, a
//! body over [`MAX_ANSWER`], not JSON, none or several of the three, wrong
//! types, a channel Herald would refuse) is a [`Failure`], and a failure
//! is always a refusal, never an allowance. docs/protocol.md holds the
//! contract.

mod client;

pub use client::{Proxy, MAX_IN_FLIGHT};

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The largest answer read from the app; a longer one is a failure.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Codes the app may give in `error`: passed to the client as they are.
/// Others become Herald's own refusal code for the hook.
pub const APP_ERROR_CODES: std::ops::RangeInclusive<u32> = 1000..=1999;

/// Codes the app may give in `disconnect`: 4000–4499 advise a reconnect,
/// 4500–4999 do not. Others become 3500 (unauthorized, terminal).
pub const APP_DISCONNECT_CODES: std::ops::RangeInclusive<u32> = 4000..=4999;

/// Longest disconnect reason: a WebSocket Close frame holds 123 bytes of it.
const MAX_REASON: usize = 123;

/// Longest `error.message` passed on to a client.
const MAX_MESSAGE: usize = 1024;

/// The three hooks; `name` labels metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect,
    Subscribe,
    Publish,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
        }
    }
}

/// Why a call did not give an answer Herald can use: the client is
/// refused (error 112), and the call is logged and counted with
/// [`Failure::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No hook URL is configured (a namespace asked for a hook that is
    /// not there; configuration checks prevent it).
    #[error("no URL configured for this hook")]
    NotConfigured,
    /// Connecting or sending failed (the app is down).
    #[error("app unreachable: {0}")]
    Unavailable(String),
    /// No whole answer within `--proxy-timeout`.
    #[error("no answer within the proxy timeout")]
    Timeout,
    /// The app answered another status than 200.
    #[error("app answered HTTP {0}")]
    Status(u16),
    /// The answer's body is larger than [`MAX_ANSWER`].
    #[error("answer larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// The answer is not what the contract allows.
    #[error("invalid answer: {0}")]
    Invalid(String),
}

impl Failure {
    /// A fixed label for metrics (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::NotConfigured => "not_configured",
            Failure::Unavailable(_) => "unavailable",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
            Failure::TooLarge => "too_large",
            Failure::Invalid(_) => "invalid",
        }
    }
}

/// What the app answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `result`: go ahead.
    Accept(Accepted),
    /// `error`: refuse this request, the connection stays (a refused
    /// `connect` still ends it).
    Refuse(AppError),
    /// `disconnect`: end the connection with this code.
    Disconnect(AppDisconnect),
}

/// An accepting `result`, read for its hook.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    Connect(ConnectResult),
    Subscribe,
    /// A publish, with the data to publish instead of the client's.
    Publish(Option<Value>),
}

/// The connect hook's `result`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectResult {
    /// The user id (required, not empty).
    pub user: String,
    /// Shown in presence, as a token's `info`.
    pub info: Option<Value>,
    /// Unix seconds at which the connection ends (3002), as a token's `exp`.
    pub expire_at: Option<u64>,
    /// Channels subscribed at once, without the subscribe hook (each
    /// once, in the app's order).
    pub channels: Vec<String>,
}

/// An `error` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// The app's code, when in [`APP_ERROR_CODES`].
    pub code: Option<u16>,
    pub message: String,
}

/// A `disconnect` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDisconnect {
    /// In [`APP_DISCONNECT_CODES`], or 3500.
    pub code: u16,
    /// At most 123 bytes (what a Close frame holds).
    pub reason: String,
}

impl AppDisconnect {
    /// 4000–4499 (and nothing else the app can give) advise a reconnect.
    pub fn reconnect(&self) -> bool {
        (4000..4500).contains(&self.code)
    }
}

/// What is checked of the channels a connect hook names: Herald's own
/// limits for names and subscriptions.
#[derive(Debug, Clone, Copy)]
pub struct ChannelLimits {
    pub max_len: usize,
    pub max_count: usize,
}

/// The request headers a connect hook receives, from the WebSocket
/// upgrade: kept only until the `connect` op (or the end of a session that
/// never sends one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectHeaders {
    pub cookie: Option<String>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    /// The connect hook's `transport`: `None` for `websocket`.
    pub transport: Option<&'static str>,
}

impl ConnectHeaders {
    /// The headers the hook receives, read from a request (several Cookie
    /// headers joined with `; `, bytes that are not UTF-8 replaced).
    pub fn from_request(headers: &hyper::HeaderMap) -> ConnectHeaders {
        let text =
            |v: &hyper::header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let cookies: Vec<String> = headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .map(text)
            .collect();
        ConnectHeaders {
            cookie: (!cookies.is_empty()).then(|| cookies.join("; ")),
            authorization: headers.get(hyper::header::AUTHORIZATION).map(text),
            origin: headers.get(hyper::header::ORIGIN).map(text),
            transport: None,
        }
    }
}

/// The connect hook's request: `{client, transport, headers, data?}`.
pub fn connect_request(
    client: &str,
    transport: &str,
    headers: &ConnectHeaders,
    data: Option<&Value>,
) -> Vec<u8> {
    let mut h = Map::new();
    for (name, value) in [
        ("Cookie", &headers.cookie),
        ("Authorization", &headers.authorization),
        ("Origin", &headers.origin),
    ] {
        if let Some(v) = value {
            h.insert(name.into(), Value::String(v.clone()));
        }
    }
    let mut v = json!({ "client": client, "transport": transport, "headers": h });
    if let Some(d) = data {
        v["data"] = d.clone();
    }
    v.to_string().into_bytes()
}

/// The subscribe and publish hooks' request: `{client, user, channel,
/// data?}` (`user` null for anonymous clients).
pub fn channel_request(
    client: &str,
    user: Option<&str>,
    channel: &str,
    data: Option<&Value>,
) -> Vec<u8> {
    let mut v = json!({ "client": client, "user": user, "channel": channel });
    if let Some(d) = data {
        v["data"] = d.clone();
    }
    v.to_string().into_bytes()
}

/// The three possible members of an answer.
#[derive(Deserialize)]
struct RawAnswer {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    disconnect: Option<Value>,
}

#[derive(Deserialize)]
struct RawConnect {
    user: String,
    #[serde(default)]
    info: Option<Value>,
    #[serde(default)]
    expire_at: Option<u64>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawDisconnect {
    code: u64,
    #[serde(default)]
    reason: Option<String>,
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn invalid(why: impl std::fmt::Display) -> Failure {
    Failure::Invalid(why.to_string())
}

/// Reads the app's answer to `hook`. Unknown members of `result` are
/// ignored (the app may send more than Herald reads); everything Herald
/// reads must have its documented type.
pub fn parse_answer(hook: Hook, body: &[u8], limits: ChannelLimits) -> Result<Answer, Failure> {
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "not a JSON object with result, error or disconnect ({e})"
        ))
    })?;
    match (raw.result, raw.error, raw.disconnect) {
        (Some(r), None, None) => parse_result(hook, r, limits).map(Answer::Accept),
        (None, Some(e), None) => {
            let e: RawError =
                serde_json::from_value(e).map_err(|e| invalid(format!("error: {e}")))?;
            let code = e
                .code
                .and_then(|c| u32::try_from(c).ok())
                .filter(|c| APP_ERROR_CODES.contains(c))
                .map(|c| c as u16);
            let message = truncate(e.message.unwrap_or_default(), MAX_MESSAGE);
            Ok(Answer::Refuse(AppError { code, message }))
        }
        (None, None, Some(d)) => {
            let d: RawDisconnect =
                serde_json::from_value(d).map_err(|e| invalid(format!("disconnect: {e}")))?;
            let code = u32::try_from(d.code)
                .ok()
                .filter(|c| APP_DISCONNECT_CODES.contains(c))
                .map_or(3500, |c| c as u16);
            let reason = truncate(d.reason.unwrap_or_default(), MAX_REASON);
            Ok(Answer::Disconnect(AppDisconnect { code, reason }))
        }
        _ => Err(invalid(
            "exactly one of result, error and disconnect must be given",
        )),
    }
}

fn parse_result(hook: Hook, r: Value, limits: ChannelLimits) -> Result<Accepted, Failure> {
    let Value::Object(mut obj) = r else {
        return Err(invalid("result must be an object"));
    };
    match hook {
        Hook::Connect => {
            let c: RawConnect = serde_json::from_value(Value::Object(obj))
                .map_err(|e| invalid(format!("result: {e}")))?;
            if c.user.is_empty() {
                return Err(invalid("result.user must not be empty"));
            }
            let mut channels = Vec::new();
            for ch in c.channels.unwrap_or_default() {
                if ch.is_empty() || ch.len() > limits.max_len {
                    return Err(invalid(format!(
                        "result.channels: names must be 1 to {} bytes",
                        limits.max_len
                    )));
                }
                if !channels.contains(&ch) {
                    channels.push(ch);
                }
                if channels.len() > limits.max_count {
                    return Err(invalid(format!(
                        "result.channels: more than {} channels",
                        limits.max_count
                    )));
                }
            }
            Ok(Accepted::Connect(ConnectResult {
                user: c.user,
                info: c.info,
                expire_at: c.expire_at,
                channels,
            }))
        }
        Hook::Subscribe => Ok(Accepted::Subscribe),
        Hook::Publish => Ok(Accepted::Publish(obj.remove("data"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChannelLimits = ChannelLimits {
        max_len: 16,
        max_count: 3,
    };

    fn parse(hook: Hook, v: Value) -> Result<Answer, Failure> {
        parse_answer(hook, v.to_string().as_bytes(), LIMITS)
    }

    #[test]
    fn connect_answers() {
        let a = parse(
            Hook::Connect,
            json!({"result": {"user": "alice", "info": {"n": 1}, "expire_at": 99, "channels": ["a", "b", "a"], "extra": true}}),
        );
        assert_eq!(
            a,
            Ok(Answer::Accept(Accepted::Connect(ConnectResult {
                user: "alice".into(),
                info: Some(json!({"n": 1})),
                expire_at: Some(99),
                channels: vec!["a".into(), "b".into()],
            })))
        );
        let minimal = parse(Hook::Connect, json!({"result": {"user": "u"}})).unwrap();
        assert!(
            matches!(minimal, Answer::Accept(Accepted::Connect(c)) if c.channels.is_empty() && c.expire_at.is_none())
        );
        for bad in [
            json!({"result": {}}),
            json!({"result": {"user": ""}}),
            json!({"result": {"user": 5}}),
            json!({"result": {"user": "u", "expire_at": -1}}),
            json!({"result": {"user": "u", "expire_at": "soon"}}),
            json!({"result": {"user": "u", "channels": "a"}}),
            json!({"result": {"user": "u", "channels": [""]}}),
            json!({"result": {"user": "u", "channels": ["x".repeat(17)]}}),
            json!({"result": {"user": "u", "channels": ["a", "b", "c", "d"]}}),
            json!({"result": "yes"}),
        ] {
            assert!(
                matches!(parse(Hook::Connect, bad.clone()), Err(Failure::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_disconnects_and_garbage() {
        assert_eq!(
            parse(
                Hook::Subscribe,
                json!({"error": {"code": 1403, "message": "no"}})
            ),
            Ok(Answer::Refuse(AppError {
                code: Some(1403),
                message: "no".into()
            }))
        );
        // Codes outside the app's range are not passed on.
        for code in [json!(403), json!(100), json!(70000), json!(null)] {
            assert_eq!(
                parse(Hook::Publish, json!({"error": {"code": code}})),
                Ok(Answer::Refuse(AppError {
                    code: None,
                    message: String::new()
                }))
            );
        }
        let d = parse(
            Hook::Connect,
            json!({"disconnect": {"code": 4501, "reason": "banned"}}),
        )
        .unwrap();
        assert_eq!(
            d,
            Answer::Disconnect(AppDisconnect {
                code: 4501,
                reason: "banned".into()
            })
        );
        let Answer::Disconnect(d) = parse(
            Hook::Subscribe,
            json!({"disconnect": {"code": 4000, "reason": "é".repeat(100)}}),
        )
        .unwrap() else {
            panic!()
        };
        assert!(d.reconnect() && d.reason.len() <= 123 && d.reason.chars().all(|c| c == 'é'));
        let Answer::Disconnect(d) =
            parse(Hook::Publish, json!({"disconnect": {"code": 1000}})).unwrap()
        else {
            panic!()
        };
        assert_eq!((d.code, d.reconnect()), (3500, false));
        for garbage in [
            &b"<html>oops</html>"[..],
            b"",
            b"[]",
            b"null",
            b"{}",
            br#"{"result": {}, "error": {}}"#,
            br#"{"error": "no"}"#,
            br#"{"disconnect": {"reason": "x"}}"#,
            br#"{"result": null}"#,
        ] {
            assert!(
                matches!(
                    parse_answer(Hook::Subscribe, garbage, LIMITS),
                    Err(Failure::Invalid(_))
                ),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn publish_data_replacement() {
        assert_eq!(
            parse(Hook::Publish, json!({"result": {"data": {"x": 1}}})),
            Ok(Answer::Accept(Accepted::Publish(Some(json!({"x": 1})))))
        );
        assert_eq!(
            parse(Hook::Publish, json!({"result": {}})),
            Ok(Answer::Accept(Accepted::Publish(None)))
        );
        assert_eq!(
            parse(Hook::Subscribe, json!({"result": {"data": 1}})),
            Ok(Answer::Accept(Accepted::Subscribe))
        );
    }

    /// The hooks' options (in `config`, checked at start-up).
    #[test]
    fn proxy_options_are_checked() {
        let ok = |toml: &str| {
            toml::from_str::<crate::config::Options>(toml)
                .unwrap()
                .resolve()
        };
        let cfg = ok("proxy_connect_url = \"http://127.0.0.1:3000/connect\"\n\
                      proxy_subscribe_url = \"http://app/sub\"\nproxy_timeout = \"250ms\"\n\
                      [namespaces.priv]\nsubscribe_proxy = true\n")
        .unwrap();
        assert!(cfg.has_auth(), "the connect hook is authentication");
        assert_eq!(cfg.proxy_timeout, std::time::Duration::from_millis(250));
        assert!(cfg.namespace(b"priv:x").subscribe_proxy);
        assert!(!cfg.namespace(b"priv:x").allow_anonymous);
        assert_eq!(
            crate::config::Config::default().proxy_timeout,
            std::time::Duration::from_secs(1)
        );
        for (toml, why) in [
            ("proxy_connect_url = \"https://app/c\"", "http://"),
            ("proxy_connect_url = \"app/c\"", "not a URL"),
            ("proxy_connect_url = \"ftp://app/c\"", "http://"),
            ("proxy_publish_url = \"http:///c\"", "proxy_publish_url"),
            ("proxy_timeout = \"0s\"", "proxy_timeout"),
            (
                "[namespaces.priv]\nsubscribe_proxy = true",
                "proxy_subscribe_url is not set",
            ),
            (
                "[namespaces.default]\npublish_proxy = true",
                "namespace default",
            ),
        ] {
            let err = ok(toml).unwrap_err().to_string();
            assert!(err.contains(why), "{toml}: {err}");
        }
    }

    #[test]
    fn requests() {
        let h = ConnectHeaders {
            cookie: Some("session=a".into()),
            authorization: None,
            origin: Some("https://app".into()),
            transport: None,
        };
        let v: Value = serde_json::from_slice(&connect_request(
            "7",
            "websocket",
            &h,
            Some(&json!({"v": 1})),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"client": "7", "transport": "websocket", "headers": {"Cookie": "session=a", "Origin": "https://app"}, "data": {"v": 1}})
        );
        let v: Value = serde_json::from_slice(&channel_request("7", None, "c", None)).unwrap();
        assert_eq!(v, json!({"client": "7", "user": null, "channel": "c"}));
        let mut hm = hyper::HeaderMap::new();
        hm.append(hyper::header::COOKIE, "a=1".parse().unwrap());
        hm.append(hyper::header::COOKIE, "b=2".parse().unwrap());
        hm.append(
            hyper::header::AUTHORIZATION,
            hyper::header::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        let h = ConnectHeaders::from_request(&hm);
        assert_eq!(h.cookie.as_deref(), Some("a=1; b=2"));
        assert_eq!(h.authorization.as_deref(), Some("Bearer \u{fffd}"));
        assert_eq!(h.origin, None);
    }
}
