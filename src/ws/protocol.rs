//! The WebSocket JSON protocol's wire types, with no I/O: commands in, replies
//! and pushes out, and the numbered error and disconnect codes.
//! `docs/protocol.md` is the reference; keep the two in step.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::hub::payload::write_json_data;
use crate::hub::{Delivery, DeliveryKind};

/// Errors in replies (`error: {code, message}`): the connection stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest = 100,
    UnknownOp = 101,
    Unauthorized = 102,
    PermissionDenied = 103,
    TokenExpired = 104,
    AlreadyConnected = 105,
    LimitExceeded = 106,
    RateLimited = 107,
    NotEnabled = 108,
    /// The server's output budget (`--output-buffer-global-limit`) is
    /// spent: a request with a large reply is refused, not queued. Retry
    /// later.
    Busy = 109,
    InvalidChannel = 110,
    UnrecoverablePosition = 111,
    /// An app-backend hook (`--proxy-*-url`) was down, too slow
    /// (`--proxy-timeout`) or answered something Herald cannot read: the
    /// request is refused, never allowed. Retry later.
    BackendUnavailable = 112,
    Internal = 500,
}

/// Disconnect codes, also used as the WebSocket close code. 3000–3499:
/// reconnect advised; 3500–3999: terminal, do not reconnect unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCode {
    Shutdown = 3000,
    Slow = 3001,
    TokenExpired = 3002,
    NoPong = 3003,
    InsufficientState = 3004,
    /// The connect hook failed (down, slow, garbage): refused, reconnect
    /// later.
    BackendUnavailable = 3005,
    /// Too many connect hook calls from this client address
    /// (`--proxy-connect-rate`): reconnect later.
    ConnectRateLimited = 3007,
    Unauthorized = 3500,
    BadRequest = 3501,
    MessageTooBig = 3502,
}

impl DisconnectCode {
    pub fn reconnect(self) -> bool {
        (self as u16) < 3500
    }

    pub fn reason(self) -> &'static str {
        match self {
            DisconnectCode::Shutdown => "server shutting down",
            DisconnectCode::Slow => "slow consumer: output buffer limit exceeded",
            DisconnectCode::TokenExpired => "token expired",
            DisconnectCode::NoPong => "no pong",
            DisconnectCode::InsufficientState => "insufficient state",
            DisconnectCode::BackendUnavailable => "backend unavailable",
            DisconnectCode::ConnectRateLimited => "too many connects from this address",
            DisconnectCode::Unauthorized => "unauthorized",
            DisconnectCode::BadRequest => "bad request",
            DisconnectCode::MessageTooBig => "message too big",
        }
    }

    /// The `disconnect` push sent before the close frame.
    pub fn push(self) -> String {
        disconnect_push(self as u16, self.reason(), self.reconnect())
    }
}

/// A `disconnect` push: Herald's codes, or one the app's backend gave.
pub fn disconnect_push(code: u16, reason: &str, reconnect: bool) -> String {
    json!({
        "push": "disconnect",
        "code": code,
        "reason": reason,
        "reconnect": reconnect,
    })
    .to_string()
}

/// A command as received: its id beside its op and the op's arguments.
#[derive(Debug)]
pub struct Command {
    pub id: Value,
    pub op: Op,
}

/// The ops, tagged by the command's `op` member; each carries its own
/// argument fields (unknown fields refused). `ping` takes none and ignores
/// any.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Connect(ConnectArgs),
    Refresh(TokenArgs),
    SubRefresh(SubRefreshArgs),
    Ping,
    Subscribe(SubscribeArgs),
    Psubscribe(PatternArgs),
    Unsubscribe(ChannelArgs),
    Punsubscribe(PatternArgs),
    Publish(PublishArgs),
    Presence(ChannelArgs),
    PresenceStats(ChannelArgs),
    History(HistoryArgs),
    LeaderboardSubscribe(LeaderboardArgs),
    LeaderboardUnsubscribe(KeyArgs),
    /// An `op` that names none of the above. [`parse_command`] answers it
    /// (error 101), so a [`Command`] never holds it.
    #[serde(other)]
    Unknown,
}

impl Op {
    /// The op's wire name: a fixed set, so it may label metrics (a
    /// client's own string never does).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Connect(_) => "connect",
            Op::Refresh(_) => "refresh",
            Op::SubRefresh(_) => "sub_refresh",
            Op::Ping => "ping",
            Op::Subscribe(_) => "subscribe",
            Op::Psubscribe(_) => "psubscribe",
            Op::Unsubscribe(_) => "unsubscribe",
            Op::Punsubscribe(_) => "punsubscribe",
            Op::Publish(_) => "publish",
            Op::Presence(_) => "presence",
            Op::PresenceStats(_) => "presence_stats",
            Op::History(_) => "history",
            Op::LeaderboardSubscribe(_) => "leaderboard_subscribe",
            Op::LeaderboardUnsubscribe(_) => "leaderboard_unsubscribe",
            Op::Unknown => "unknown",
        }
    }
}

/// A command that cannot be read at all (error 100), or whose op is
/// unknown (101).
#[derive(Debug, PartialEq, Eq)]
pub struct BadCommand {
    pub id: Value,
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one text frame into a command.
pub fn parse_command(text: &str) -> Result<Command, BadCommand> {
    let bad = |id: Value, message: String| BadCommand {
        id,
        code: ErrorCode::BadRequest,
        message,
    };
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(bad(Value::Null, "a command must be a JSON object".into())),
        Err(e) => return Err(bad(Value::Null, format!("malformed JSON: {e}"))),
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    if !(id.is_null() || id.is_u64() || id.is_string()) {
        return Err(bad(
            Value::Null,
            "id must be a non-negative integer or a string".into(),
        ));
    }
    match obj.get("op") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(bad(id, "op must be a string".into())),
        None => return Err(bad(id, "missing op".into())),
    }
    // Borrowed, so the op's name is still there to quote if it is unknown.
    let obj = Value::Object(obj);
    match Op::deserialize(&obj) {
        Ok(Op::Unknown) => Err(BadCommand {
            message: format!("unknown op '{}'", obj["op"].as_str().unwrap_or_default()),
            id,
            code: ErrorCode::UnknownOp,
        }),
        Ok(op) => Ok(Command { id, op }),
        Err(e) => Err(bad(id, format!("invalid arguments: {e}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectArgs {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Passed to the connect hook, when one is asked.
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenArgs {
    pub token: String,
}

/// A position in a channel's history.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeArgs {
    pub channel: String,
    #[serde(default)]
    pub since: Option<StreamPosition>,
    /// Passed to the subscribe hook, when one is asked.
    #[serde(default)]
    pub data: Option<Value>,
    /// A subscription token granting this channel (`ws::subtokens`).
    #[serde(default)]
    pub token: Option<String>,
}

/// `sub_refresh`: a new subscription token for a channel subscribed with one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubRefreshArgs {
    pub channel: String,
    pub token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    pub channel: String,
    #[serde(default)]
    pub since: Option<StreamPosition>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub reverse: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelArgs {
    pub channel: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternArgs {
    pub pattern: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardArgs {
    pub key: String,
    #[serde(default = "default_top")]
    pub top: usize,
}

fn default_top() -> usize {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishArgs {
    pub channel: String,
    pub data: Value,
}

/// A successful reply.
pub fn reply(id: &Value, result: Value) -> Bytes {
    Bytes::from(json!({ "id": id, "result": result }).to_string())
}

/// An error reply.
pub fn error(id: &Value, code: ErrorCode, message: &str) -> Bytes {
    error_code(id, code as u16, message)
}

/// An error reply with a numeric code: Herald's, or one the app's backend
/// gave (1000–1999).
pub fn error_code(id: &Value, code: u16, message: &str) -> Bytes {
    Bytes::from(json!({ "id": id, "error": { "code": code, "message": message } }).to_string())
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(s));
}

/// Encodes a presence event as a `join` or `leave` push.
pub fn encode_presence(channel: &[u8], ev: &crate::hub::presence::PresenceEvent) -> Bytes {
    Bytes::from(
        json!({
            "push": ev.name(),
            "channel": String::from_utf8_lossy(channel),
            "user": ev.user,
            "client": ev.client.to_string(),
            "info": ev.info,
        })
        .to_string(),
    )
}

/// Encodes a delivery as a `message` or `pmessage` push. Channel names that
/// are not UTF-8 (possible from RESP) are shown lossily.
pub fn encode_delivery(d: &Delivery<'_>) -> Bytes {
    let p = d.publication;
    let mut out = Vec::with_capacity(p.payload.len() + p.channel.len() + 64);
    match (d.kind, d.pattern) {
        (DeliveryKind::PMessage, Some(pattern)) => {
            out.extend_from_slice(br#"{"push":"pmessage","pattern":"#);
            push_str(&mut out, pattern);
            out.extend_from_slice(br#","channel":"#);
        }
        _ => out.extend_from_slice(br#"{"push":"message","channel":"#),
    }
    push_str(&mut out, &p.channel);
    out.extend_from_slice(br#","data":"#);
    if write_json_data(&mut out, &p.payload) {
        out.extend_from_slice(br#","encoding":"base64""#);
    }
    if let Some(offset) = p.offset {
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    }
    out.push(b'}');
    Bytes::from(out)
}

/// What a `history` reply of `entries` will about cost, before encoding
/// it: the payloads and a little framing each (base64 adds a third).
pub fn history_estimate(entries: &[(u64, Bytes)]) -> usize {
    entries
        .iter()
        .fold(64, |n, (_, p)| n.saturating_add(p.len()).saturating_add(32))
}

/// A `history` reply: `{"id", "result": {"publications": [{offset, data[,
/// encoding]}], "offset", "epoch"}}`, written straight to bytes (a page may
/// hold thousands of entries, so no JSON tree in between).
pub fn history_reply(id: &Value, entries: &[(u64, Bytes)], top: u64, epoch: u64) -> Bytes {
    let mut out = Vec::with_capacity(history_estimate(entries));
    out.extend_from_slice(br#"{"id":"#);
    // An id is null, a number or a string: writing it cannot fail.
    let _ = serde_json::to_writer(&mut out, id);
    out.extend_from_slice(br#","result":"#);
    write_history(&mut out, entries, top, epoch);
    out.push(b'}');
    Bytes::from(out)
}

/// A history page, `{"publications": [{offset, data[, encoding]}],
/// "offset", "epoch"}`, appended to `out` (the WebSocket reply's `result`,
/// the HTTP API's answer).
pub fn write_history(out: &mut Vec<u8>, entries: &[(u64, Bytes)], top: u64, epoch: u64) {
    out.extend_from_slice(br#"{"publications":["#);
    let mut num = itoa::Buffer::new();
    for (i, (offset, payload)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"offset":"#);
        out.extend_from_slice(num.format(*offset).as_bytes());
        out.extend_from_slice(br#","data":"#);
        if write_json_data(out, payload) {
            out.extend_from_slice(br#","encoding":"base64""#);
        }
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"offset":"#);
    out.extend_from_slice(num.format(top).as_bytes());
    out.extend_from_slice(br#","epoch":""#);
    out.extend_from_slice(num.format(epoch).as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// A history entry as JSON: `{"offset", "data"[, "encoding"]}`.
pub fn publication_json(offset: u64, payload: &[u8]) -> Value {
    let mut data = Vec::new();
    let b64 = write_json_data(&mut data, payload);
    let data: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
    if b64 {
        json!({ "offset": offset, "data": data, "encoding": "base64" })
    } else {
        json!({ "offset": offset, "data": data })
    }
}

/// A channel's presence: `{"clients": [{client, user, info, joined}], "users": [...]}`.
pub fn presence_json(
    hub: &crate::hub::Hub,
    channel: &[u8],
) -> Result<Value, crate::hub::EngineError> {
    Ok(presence_value(
        hub.presence_clients(channel)?,
        hub.presence_users(channel)?,
    ))
}

/// [`presence_json`], awaiting the engine (nothing parks a thread).
pub async fn presence_json_awaited(
    hub: &crate::hub::Hub,
    channel: &[u8],
) -> Result<Value, crate::hub::EngineError> {
    let clients = hub.presence_clients_pending(channel).await?;
    let users = hub.presence_users_pending(channel).await?;
    Ok(presence_value(clients, users))
}

fn presence_value(clients: Vec<crate::hub::presence::PresenceEntry>, users: Vec<String>) -> Value {
    let clients: Vec<Value> = clients
        .into_iter()
        .map(|e| json!({ "client": e.client.to_string(), "user": e.user, "info": e.info, "joined": e.joined }))
        .collect();
    json!({ "clients": clients, "users": users })
}

/// Leaderboard entries as JSON: `[{member, score}]` best first.
pub fn entries_json(entries: &[(Bytes, f64)]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(m, s)| json!({ "member": String::from_utf8_lossy(m), "score": s }))
            .collect(),
    )
}

/// A `leaderboard` push (or subscribe result), with the client's own rank
/// and score when its user is a member.
pub fn leaderboard_json(
    key: &[u8],
    entries: &[(Bytes, f64)],
    own: Option<(usize, f64)>,
    push: bool,
) -> Value {
    let mut v = json!({ "key": String::from_utf8_lossy(key), "entries": entries_json(entries) });
    if push {
        v["push"] = json!("leaderboard");
    }
    if let Some((rank, score)) = own {
        v["rank"] = json!(rank);
        v["score"] = json!(score);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Publication;

    #[test]
    fn parse_commands() {
        let c = parse_command(r#"{"id":1,"op":"subscribe","channel":"a"}"#).unwrap();
        assert_eq!(c.id.as_u64(), Some(1));
        let Op::Subscribe(a) = c.op else {
            panic!("{c:?}")
        };
        assert_eq!((a.channel.as_str(), a.since, a.token), ("a", None, None));
        let c = parse_command(r#"{"op":"sub_refresh","channel":"a","token":"t"}"#).unwrap();
        let Op::SubRefresh(a) = c.op else {
            panic!("{c:?}")
        };
        assert_eq!((a.channel.as_str(), a.token.as_str()), ("a", "t"));
        // `ping` takes no fields and ignores any.
        let c = parse_command(r#"{"id":"p","op":"ping","x":[1]}"#).unwrap();
        assert!(matches!(c.op, Op::Ping));
        let bad = |text: &str| {
            let b = parse_command(text).unwrap_err();
            (b.id, b.code, b.message)
        };
        use ErrorCode::{BadRequest, UnknownOp};
        let (null, two) = (Value::Null, json!(2));
        assert_eq!(bad("{nope").1, BadRequest);
        assert_eq!(bad("{nope").0, null);
        assert_eq!(
            bad("[1]"),
            (
                null.clone(),
                BadRequest,
                "a command must be a JSON object".into()
            )
        );
        assert_eq!(
            bad(r#"{"id":-1,"op":"ping"}"#),
            (
                null.clone(),
                BadRequest,
                "id must be a non-negative integer or a string".into()
            )
        );
        assert_eq!(
            bad(r#"{"id":2}"#),
            (two.clone(), BadRequest, "missing op".into())
        );
        assert_eq!(
            bad(r#"{"id":2,"op":7}"#),
            (two.clone(), BadRequest, "op must be a string".into())
        );
        // An unknown op is 101 whatever its fields; names are exact.
        for op in ["frobnicate", "Subscribe", "", "unknown"] {
            let text = json!({"id": 2, "op": op, "channel": 5}).to_string();
            assert_eq!(
                bad(&text),
                (two.clone(), UnknownOp, format!("unknown op '{op}'"))
            );
        }
        // A known op's missing, unknown or wrongly typed fields: 100.
        for (text, why) in [
            (r#"{"id":2,"op":"subscribe"}"#, "missing field `channel`"),
            (
                r#"{"id":2,"op":"subscribe","chanel":"a"}"#,
                "unknown field `chanel`, expected one of `channel`, `since`, `data`, `token`",
            ),
            (
                r#"{"id":2,"op":"subscribe","channel":5}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"id":2,"op":"history","channel":"h","limit":-1}"#,
                "invalid value: integer `-1`, expected usize",
            ),
            (
                r#"{"id":2,"op":"subscribe","channel":"a","since":{"offset":1}}"#,
                "missing field `epoch`",
            ),
        ] {
            assert_eq!(
                bad(text),
                (two.clone(), BadRequest, format!("invalid arguments: {why}"))
            );
        }
    }

    #[test]
    fn op_names_are_the_wire_names() {
        for (text, name) in [
            (r#"{"op":"connect"}"#, "connect"),
            (r#"{"op":"refresh","token":"t"}"#, "refresh"),
            (r#"{"op":"ping"}"#, "ping"),
            (r#"{"op":"subscribe","channel":"c"}"#, "subscribe"),
            (r#"{"op":"psubscribe","pattern":"p"}"#, "psubscribe"),
            (r#"{"op":"unsubscribe","channel":"c"}"#, "unsubscribe"),
            (r#"{"op":"punsubscribe","pattern":"p"}"#, "punsubscribe"),
            (r#"{"op":"publish","channel":"c","data":1}"#, "publish"),
            (r#"{"op":"presence","channel":"c"}"#, "presence"),
            (r#"{"op":"presence_stats","channel":"c"}"#, "presence_stats"),
            (r#"{"op":"history","channel":"c"}"#, "history"),
            (
                r#"{"op":"leaderboard_subscribe","key":"k"}"#,
                "leaderboard_subscribe",
            ),
            (
                r#"{"op":"leaderboard_unsubscribe","key":"k"}"#,
                "leaderboard_unsubscribe",
            ),
        ] {
            assert_eq!(parse_command(text).unwrap().op.name(), name);
        }
    }

    #[test]
    fn encodes_pushes() {
        let p = Publication::new("news".into(), r#"{"a":1}"#.into());
        let d = Delivery::direct(&p, DeliveryKind::Message);
        assert_eq!(
            &encode_delivery(&d)[..],
            br#"{"push":"message","channel":"news","data":{"a":1}}"#
        );
        let p = Publication::new("news".into(), Bytes::from_static(&[0xff]));
        let d = Delivery::direct(&p, DeliveryKind::Message);
        let v: Value = serde_json::from_slice(&encode_delivery(&d)).unwrap();
        assert_eq!(v["encoding"], "base64");
        assert!(DisconnectCode::Slow.reconnect());
        assert!(!DisconnectCode::Unauthorized.reconnect());
    }

    #[test]
    fn history_reply_is_the_json_of_its_entries() {
        let entries = vec![
            (7, Bytes::from_static(br#"{"a": [1, 2]}"#)),
            (8, Bytes::from_static(b"plain \"text\"")),
            (9, Bytes::from_static(&[0xff, 0x00])),
        ];
        let r = history_reply(&json!("q1"), &entries, 9, 42);
        let v: Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(
            v,
            json!({"id": "q1", "result": {
                "publications": [
                    {"offset": 7, "data": {"a": [1, 2]}},
                    {"offset": 8, "data": "plain \"text\""},
                    {"offset": 9, "data": "/wA=", "encoding": "base64"},
                ],
                "offset": 9, "epoch": "42"}})
        );
        let empty: Value = serde_json::from_slice(&history_reply(&json!(null), &[], 0, 1)).unwrap();
        assert_eq!(empty["result"]["publications"], json!([]));
        assert!(history_estimate(&entries) >= 64 + 3 * 32);
    }
}
