//! Replays fuzzing inputs under plain `cargo test` (stable): the committed
//! seeds of every target, and each input that once made a target fail,
//! through the same checks the fuzz targets run (`fuzz/src/lib.rs`,
//! included below). See docs/fuzzing.md.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every committed seed of `target`.
fn replay_seeds(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let data = std::fs::read(&path).expect("seed file");
        eprintln!("{target}/{name}");
        check(&data);
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn seeds_resp_parse() {
    replay_seeds("resp_parse", checks::resp_parse);
}

#[test]
fn seeds_resp_dispatch() {
    replay_seeds("resp_dispatch", checks::resp_dispatch);
}

#[test]
fn seeds_ws_decode() {
    replay_seeds("ws_decode", checks::ws_decode);
}

#[test]
fn seeds_glob() {
    replay_seeds("glob", checks::glob);
}

#[test]
fn seeds_jwt_claims() {
    replay_seeds("jwt_claims", checks::jwt_claims);
}

// ---------------------------------------------------------------------------
// Inputs that made a target fail, oldest first. Each names its crash id in
// docs/fuzzing.md.

/// jwt-1 (fixed in auth.rs): a token whose `subscribe` claim holds `*` could
/// PSUBSCRIBE the empty pattern, whose only channel is the empty one, which
/// `*` does not match (Redis's rule), so SUBSCRIBE to it was refused.
/// First found as the 55-byte input below; the second is the minimal form
/// (mode 2, pattern "", filler "", globs ["*"]).
#[test]
fn jwt_1_empty_pattern_within_star() {
    checks::jwt_claims(
        b"\x06\x00:ub:*\x00zz\x00:*\x00zz\x00pub:z\x00pub:\x00*\x00\xff*\xff\x00*\x00\xff*\
          \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00=\xe2",
    );
    checks::jwt_claims(b"\x02\x00\x00*");
    assert!(!herald::auth::pattern_within(b"", &["*".to_string()]));
    assert!(herald::auth::pattern_within(b"", &["".to_string()]));
    assert!(herald::auth::pattern_within(
        b"chat:a*",
        &["chat:*".to_string()]
    ));
}

/// ws-1 (fixed in hub/payload.rs): `to_json_data` takes a payload for JSON
/// when it parses into `IgnoredAny`, which neither converts numbers nor
/// checks `\u` escapes, and then embeds it raw. So a RESP PUBLISH of
/// `1e2510` gives WebSocket subscribers `{"push":"message",...,"data":1e2510,...}`
/// ("number out of range" in serde_json; Infinity in JSON.parse), and one of
/// `"\ud8888@"` (a lone surrogate) gives a push serde_json refuses
/// ("unexpected end of hex escape"). The whole push is lost to such clients.
#[test]
fn ws_1_unparsable_json_payloads() {
    checks::STRICT_PAYLOAD_JSON.store(true, std::sync::atomic::Ordering::Relaxed);
    checks::ws_decode(b"1e2510\t");
    checks::ws_decode(b"\"\\ud8888@\"");
}

/// ws-2 (fixed in Cargo.toml): serde_json without its `float_roundtrip`
/// feature parses some decimal numbers one ulp off, so a WebSocket
/// `publish` of `5.555555555555556e110` reaches subscribers as
/// `5.5555555555555564e+110`, another double. Found by ws_decode's round-trip check, which
/// now allows one ulp.
#[test]
fn ws_2_float_published_exactly() {
    let v: serde_json::Value = serde_json::from_str("5.555555555555556e110").unwrap();
    let payload = herald::hub::payload::from_json_value(&v);
    // Rust's own float parsing is exactly rounded.
    let sent: f64 = std::str::from_utf8(&payload).unwrap().parse().unwrap();
    assert_eq!(sent, 5.555555555555556e110, "payload {payload:?}");
}

/// glob-1 (fixed in hub/glob.rs): Redis 7.0.15 on x86-64 compares class
/// ranges as signed `char`, so `[a-\xff]` is the range -1..=97 there and
/// matches neither `b` nor `\x80` (checked with KEYS against redis-server
/// 7.0.15); Herald compared unsigned and matched both. Found while writing
/// the glob target's reference (now signed too).
#[test]
fn glob_1_high_byte_ranges_as_redis_x86() {
    use herald::hub::glob::glob_match;
    assert!(!glob_match(b"[a-\xff]", b"b"));
    assert!(!glob_match(b"[a-\xff]", b"\x80"));
    assert!(glob_match(b"[\x80-\xff]", b"\x80"));
    assert!(glob_match(b"[^a-\xff]", b"b"));
}
