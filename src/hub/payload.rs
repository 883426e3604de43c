//! The payload mapping between front ends.
//!
//! RESP payloads are bytes; WebSocket `data` is any JSON value. Bytes that
//! parse as JSON travel as that value; other UTF-8 as a JSON string; anything
//! else as a base64 string flagged `"encoding":"base64"`. In the other
//! direction, a JSON value becomes its compact text.

use base64::Engine;
use bytes::Bytes;

/// How a byte payload is represented in JSON.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonData<'a> {
    /// The bytes are JSON text: embed them as they are.
    Json(&'a [u8]),
    /// UTF-8 that is not JSON: a JSON string.
    Text(&'a str),
    /// Other bytes: base64 in a JSON string.
    Base64(String),
}

impl JsonData<'_> {
    pub fn is_base64(&self) -> bool {
        matches!(self, JsonData::Base64(_))
    }
}

/// Classifies `payload` for a JSON front end.
pub fn to_json_data(payload: &[u8]) -> JsonData<'_> {
    // UTF-8 first: serde_json skips over string contents without checking
    // them, and raw JSON embedded in a text frame must be valid UTF-8.
    let Ok(text) = std::str::from_utf8(payload) else {
        return JsonData::Base64(base64::engine::general_purpose::STANDARD.encode(payload));
    };
    if serde_json::from_str::<Strict>(text).is_ok() {
        JsonData::Json(payload)
    } else {
        JsonData::Text(text)
    }
}

/// Validates JSON text as fully as a client's parser will, building
/// nothing: serde_json's `IgnoredAny` skips numbers and strings without
/// checking them, so `1e2510` or a broken `\u` escape passed as JSON and
/// reached WebSocket clients as a push they could not parse.
struct Strict;

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// Appends `payload` as a JSON value to `out` (the `data` member's value).
/// Returns true when it was base64-encoded.
pub fn write_json_data(out: &mut Vec<u8>, payload: &[u8]) -> bool {
    match to_json_data(payload) {
        JsonData::Json(raw) => {
            out.extend_from_slice(raw);
            false
        }
        JsonData::Text(s) => {
            // Writing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
            false
        }
        JsonData::Base64(b) => {
            let _ = serde_json::to_writer(&mut *out, &b);
            true
        }
    }
}

/// The payload bytes for a JSON value published from a JSON front end: its
/// compact text.
pub fn from_json_value(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(p: &[u8]) -> String {
        let mut v = Vec::new();
        write_json_data(&mut v, p);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn mapping() {
        assert_eq!(json(br#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(json(b"42"), "42");
        assert_eq!(json(b"hello"), r#""hello""#);
        assert_eq!(json(b"say \"hi\""), r#""say \"hi\"""#);
        assert_eq!(json(&[0xff, 0x00]), r#""/wA=""#);
        assert!(to_json_data(&[0xff]).is_base64());
        // A JSON string holding invalid UTF-8 is not JSON text.
        assert!(to_json_data(b"\"\xff\"").is_base64());
        // Text a JSON parser refuses is not JSON: out-of-range numbers,
        // broken escapes, lone surrogates.
        for t in [
            "1e2510\t",
            "\"\\ud8888@\"",
            "[1, -1e999]",
            "{\"a\": \"\\uZZZZ\"}",
        ] {
            assert_eq!(to_json_data(t.as_bytes()), JsonData::Text(t), "{t}");
        }
        assert_eq!(
            json(br#"{"a":[1,2.5,"x",null,true]}"#),
            r#"{"a":[1,2.5,"x",null,true]}"#
        );
        let v: serde_json::Value = serde_json::json!({"x": [1, "two"]});
        assert_eq!(&from_json_value(&v)[..], br#"{"x":[1,"two"]}"#);
    }
}
