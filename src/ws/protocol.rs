//! The WebSocket JSON protocol's wire types, with no I/O: commands in, replies
//! and pushes out, and the numbered error and disconnect codes.
//! `docs/protocol.md` is the reference; keep the two in step.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

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
            DisconnectCode::Unauthorized => "unauthorized",
            DisconnectCode::BadRequest => "bad request",
            DisconnectCode::MessageTooBig => "message too big",
        }
    }

    /// The `disconnect` push sent before the close frame.
    pub fn push(self) -> String {
        json!({
            "push": "disconnect",
            "code": self as u16,
            "reason": self.reason(),
            "reconnect": self.reconnect(),
        })
        .to_string()
    }
}

/// A command as received: its id, op and the remaining fields.
#[derive(Debug)]
pub struct Command {
    pub id: Value,
    pub op: String,
    pub args: Map<String, Value>,
}

/// A command that cannot be read at all.
#[derive(Debug, PartialEq, Eq)]
pub struct BadCommand {
    pub id: Value,
    pub message: String,
}

/// Parses one text frame into a command.
pub fn parse_command(text: &str) -> Result<Command, BadCommand> {
    let bad = |id: Value, message: String| BadCommand { id, message };
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
    let op = match obj.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err(bad(id, "op must be a string".into())),
        None => return Err(bad(id, "missing op".into())),
    };
    Ok(Command { id, op, args: obj })
}

/// Decodes a command's fields into its argument type.
pub fn args<T: for<'de> Deserialize<'de>>(cmd: &Command) -> Result<T, String> {
    serde_json::from_value(Value::Object(cmd.args.clone()))
        .map_err(|e| format!("invalid arguments: {e}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectArgs {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
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
    Bytes::from(
        json!({ "id": id, "error": { "code": code as u16, "message": message } }).to_string(),
    )
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(s));
}

/// Encodes a delivery as a `message` or `pmessage` push. Channel names that
/// are not UTF-8 (possible from RESP) are shown lossily.
pub fn encode_delivery(d: &Delivery<'_>) -> Bytes {
    let p = d.publication;
    if matches!(d.kind, DeliveryKind::Join | DeliveryKind::Leave) {
        // The payload is the hub's JSON event: {event, user, client, info}.
        let ev: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
        return Bytes::from(
            json!({
                "push": ev["event"],
                "channel": String::from_utf8_lossy(&p.channel),
                "user": ev["user"],
                "client": ev["client"],
                "info": ev["info"],
            })
            .to_string(),
        );
    }
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
pub fn presence_json(hub: &crate::hub::Hub, channel: &[u8]) -> Value {
    let clients: Vec<Value> = hub
        .presence
        .clients(channel)
        .into_iter()
        .map(|e| json!({ "client": e.client.to_string(), "user": e.user, "info": e.info, "joined": e.joined }))
        .collect();
    json!({ "clients": clients, "users": hub.presence.users(channel) })
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
        assert_eq!((c.id.as_u64(), c.op.as_str()), (Some(1), "subscribe"));
        let a: SubscribeArgs = args(&c).unwrap();
        assert_eq!(a.channel, "a");
        assert!(parse_command("{nope").is_err());
        assert!(parse_command("[1]").is_err());
        assert_eq!(parse_command(r#"{"id":2}"#).unwrap_err().id, json!(2));
        let c = parse_command(r#"{"id":1,"op":"subscribe","chanel":"a"}"#).unwrap();
        assert!(args::<SubscribeArgs>(&c).is_err());
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
