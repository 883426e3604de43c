//! The tools of the `herald` binary, run as a user runs them: `herald
//! token` mints a JWT that a real Herald accepts over WebSocket and RESP,
//! `herald check-token` agrees with the live server on good, expired,
//! forged and garbage tokens, and `herald config` shows each value with
//! its source (default, file, env, flag).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::json;

/// Runs `herald ARGS` with only the given `HERALD_*` variables set.
fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    herald_stdin(args, env, None)
}

fn herald_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("cannot run herald");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    // The tools exit at once; a hang fails the test run's own timeout.
    child.wait_with_output().expect("herald output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `herald token ARGS`: the token alone on stdout.
fn mint(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let o = herald(&all, env);
    assert!(o.status.success(), "herald token failed: {}", stderr(&o));
    let text = stdout(&o);
    let token = text.trim();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {text:?}");
    assert_eq!(text.lines().count(), 1, "only the token on stdout");
    token.to_owned()
}

/// `connect` with `token` over a fresh WebSocket: the reply.
async fn ws_connect_with(h: &Herald, token: &str) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(h.http, None).await;
    let r = ws_call(&mut ws, 1, json!({"op": "connect", "token": token})).await;
    (ws, r)
}

#[tokio::test]
async fn minted_tokens_are_accepted_over_websocket_and_resp() {
    let (dir, path) = temp_config(
        "tooling-token",
        "jwt_hmac_secret = \"file-secret\"\n[namespaces.chat]\npresence = true\n",
    );
    let h = Herald::start(&["--config", &path]);
    // The secret comes from the same file as the server's.
    let token = mint(
        &[
            "--config",
            &path,
            "--sub",
            "alice",
            "--info",
            r#"{"name":"Alice"}"#,
            "--subscribe",
            "chat:*",
            "--publish",
            "chat:room1",
            "--ttl",
            "10m",
        ],
        &[],
    );

    // WebSocket: the token on the URL, as in the README's snippet.
    let mut ws = ws_connect(h.http, Some(&token)).await;
    let r = ws_call(
        &mut ws,
        1,
        json!({"op": "subscribe", "channel": "chat:room1"}),
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let r = ws_call(&mut ws, 2, json!({"op": "subscribe", "channel": "news"})).await;
    assert_eq!(r["error"]["code"], 103, "outside the token's globs: {r}");
    let r = ws_call(
        &mut ws,
        3,
        json!({"op": "presence", "channel": "chat:room1"}),
    )
    .await;
    assert_eq!(r["result"]["clients"][0]["user"], "alice", "{r}");
    assert_eq!(
        r["result"]["clients"][0]["info"],
        json!({"name": "Alice"}),
        "{r}"
    );
    let r = ws_call(
        &mut ws,
        4,
        json!({"op": "publish", "channel": "chat:room1", "data": 1}),
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let r = ws_call(
        &mut ws,
        5,
        json!({"op": "publish", "channel": "chat:room2", "data": 1}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "outside the publish glob: {r}");
    // In `connect`, with the expiry the ttl asked for.
    let (_ws2, r) = ws_connect_with(&h, &token).await;
    assert_eq!(r["result"]["user"], "alice", "{r}");

    // RESP: AUTH <jwt>, then the token's globs decide.
    let mut resp = Raw::connect(h.resp);
    assert_eq!(show(&resp.cmd(&[b"AUTH", token.as_bytes()])), "+OK\\r\\n");
    let reply = show(&resp.cmd(&[b"SUBSCRIBE", b"chat:room1"]));
    assert!(reply.starts_with("*3\\r\\n$9\\r\\nsubscribe"), "{reply}");
    let mut resp = Raw::connect(h.resp);
    assert_eq!(
        show(&resp.cmd(&[b"AUTH", b"alice", token.as_bytes()])),
        "+OK\\r\\n"
    );
    let reply = show(&resp.cmd(&[b"SUBSCRIBE", b"news"]));
    assert!(reply.starts_with("-NOPERM"), "{reply}");

    // The secret from the environment works the same way.
    let token = mint(
        &["--sub", "bob"],
        &[("HERALD_JWT_HMAC_SECRET", "file-secret")],
    );
    let (_ws3, r) = ws_connect_with(&h, &token).await;
    assert_eq!(r["result"]["user"], "bob", "{r}");
    // A flag beats the file: signed with another secret, refused.
    let token = mint(
        &[
            "--config",
            &path,
            "--jwt-hmac-secret",
            "other",
            "--sub",
            "eve",
        ],
        &[],
    );
    let mut resp = Raw::connect(h.resp);
    let reply = show(&resp.cmd(&[b"AUTH", token.as_bytes()]));
    assert!(reply.starts_with("-WRONGPASS"), "{reply}");
    let (mut ws4, r) = ws_connect_with(&h, &token).await;
    assert_eq!(r["error"]["code"], 102, "{r}");
    let (_, code) = ws_until_close(&mut ws4).await;
    assert_eq!(code, Some(3500));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn token_without_an_hmac_secret_is_a_clear_error() {
    let o = herald(&["token", "--sub", "alice"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("no HMAC secret configured")
            && stderr(&o).contains("--jwt-hmac-secret"),
        "{}",
        stderr(&o)
    );
    let o = herald(
        &[
            "token",
            "--sub",
            "alice",
            "--jwt-public-key-file",
            &fixture("rsa_public.pem"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("public key"), "{}", stderr(&o));
    let o = herald(
        &[
            "token",
            "--sub",
            "a",
            "--info",
            "[1]",
            "--jwt-hmac-secret",
            "s",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--info must be a JSON object"),
        "{}",
        stderr(&o)
    );
    let o = herald(
        &[
            "token",
            "--sub",
            "a",
            "--info",
            "{oops",
            "--jwt-hmac-secret",
            "s",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--info is not JSON"), "{}", stderr(&o));
}

#[tokio::test]
async fn check_token_agrees_with_the_live_server() {
    let secret = "check-secret";
    let h = Herald::start(&["--jwt-hmac-secret", secret]);
    let good = mint(&["--sub", "alice", "--jwt-hmac-secret", secret], &[]);
    let expired = hs256(json!({"sub": "alice", "exp": unix_now() - 120}), secret);
    let other_key = hs256(json!({"sub": "alice", "exp": unix_now() + 600}), "not-it");
    // The claims of `good` swapped for an admin's, its signature kept.
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&format!(r#"{{"sub":"admin","exp":{}}}"#, unix_now() + 600)),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"admin","exp":{}}}"#, unix_now() + 600))
    );
    let cases: [(&str, &str, &str); 6] = [
        (&good, "accepted: yes (user \"alice\"", "good"),
        (&expired, "accepted: no: expired (exp ", "expired"),
        (&other_key, "accepted: no: bad signature", "another key"),
        (&forged, "accepted: no: bad signature", "forged"),
        (
            &alg_none,
            "accepted: no: wrong algorithm: the token says none",
            "alg none",
        ),
        ("garbage", "accepted: no: malformed", "garbage"),
    ];
    for (token, verdict, what) in cases {
        let o = herald(&["check-token", token, "--jwt-hmac-secret", secret], &[]);
        let text = stdout(&o);
        assert!(text.contains(verdict), "{what}: {text}{}", stderr(&o));
        let accepted = o.status.success();
        assert_eq!(
            o.status.code(),
            Some(if accepted { 0 } else { 1 }),
            "{what}: {text}"
        );
        // The live server decides the same way.
        let (_ws, r) = ws_connect_with(&h, token).await;
        assert_eq!(r["error"].is_null(), accepted, "{what}: server said {r}");
        let mut resp = Raw::connect(h.resp);
        let reply = show(&resp.cmd(&[b"AUTH", token.as_bytes()]));
        assert_eq!(reply == "+OK\\r\\n", accepted, "{what}: RESP said {reply}");
    }
    // The claims are shown even when the token is refused.
    let o = herald(&["check-token", &forged, "--jwt-hmac-secret", secret], &[]);
    assert!(stdout(&o).contains("\"sub\": \"admin\""), "{}", stdout(&o));
    let o = herald(&["check-token", &expired, "--jwt-hmac-secret", secret], &[]);
    assert!(stdout(&o).contains(" ago)"), "{}", stdout(&o));
    // From standard input, and with the secret from the environment.
    let o = herald_stdin(
        &["check-token", "-"],
        &[("HERALD_JWT_HMAC_SECRET", secret)],
        Some(&format!("{good}\n")),
    );
    assert!(o.status.success(), "{}", stdout(&o));
    // No key configured: nothing is accepted, and the output says why.
    let o = herald(&["check-token", &good], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("accepted: no: no JWT key is configured"),
        "{}",
        stdout(&o)
    );
    // A key that cannot be read: the check itself fails.
    let o = herald(
        &[
            "check-token",
            &good,
            "--jwt-public-key-file",
            "/nonexistent/key.pem",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("/nonexistent/key.pem"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_shows_each_value_with_its_source() {
    let (dir, path) = temp_config(
        "tooling-config",
        "max_subscriptions = 77\nws_publish_rate = 3\napi_key = \"file-api-key\"\n\
         [namespaces.chat]\nhistory_size = 20\nhistory_ttl = \"5m\"\n",
    );
    let o = herald(
        &["config", "--config", &path, "--max-connections", "55"],
        &[
            ("HERALD_MAX_CONNECTIONS", "1"),
            ("HERALD_WS_PUBLISH_RATE", "9"),
            ("HERALD_JWT_HMAC_SECRET", "env-jwt-secret"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for line in [
        "max_connections = 55  # flag --max-connections",
        "ws_publish_rate = 9  # env HERALD_WS_PUBLISH_RATE",
        "max_subscriptions = 77  # file",
        "resp_addr = \"127.0.0.1:6380\"  # default",
        "max_bulk_len = \"64mb\"  # default",
        "http_max_connections = 1079  # default",
        "# api_key = \"********\"  # file; masked",
        "# jwt_hmac_secret = \"********\"  # env HERALD_JWT_HMAC_SECRET; masked",
        "# requirepass is not set  # default",
        "[namespaces.chat]  # file",
        "history_ttl = \"5m\"",
        "[namespaces.default]  # default",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains(&format!("# config file: {path}  # flag --config")));
    for secret in ["file-api-key", "env-jwt-secret"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    // A subcommand's flags may also come before its name.
    let o = herald(&["--max-connections", "56", "config"], &[]);
    assert!(stdout(&o).contains("max_connections = 56  # flag --max-connections"));

    // The output is a configuration file: Herald starts from it, and it
    // prints the same values back (now all from the file).
    let (dir2, copy) = temp_config("tooling-config-copy", &text);
    let again = stdout(&herald(&["config", "--config", &copy], &[]));
    let values = |t: &str| t.parse::<toml::Table>().expect("TOML");
    assert_eq!(values(&text), values(&again));
    assert!(again.contains("max_connections = 55  # file"), "{again}");
    let mut h = Herald::start(&["--config", &copy]);
    assert!(h.terminate().success());

    // A bad file: the key is named, and the exit status says it failed.
    let (dir3, bad) = temp_config("tooling-config-bad", "max_subscriptons = 1\n");
    let o = herald(&["config", "--config", &bad], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("max_subscriptons"), "{}", stderr(&o));
    for d in [dir, dir2, dir3] {
        let _ = std::fs::remove_dir_all(d);
    }
}
