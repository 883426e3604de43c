//! `herald config`: the effective configuration as TOML, every default
//! applied, each value followed by where it came from. The output loads
//! back with `--config` to the same configuration, except for secrets:
//! they are masked and commented out, so a copy never sets a password to
//! the mask.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use toml::Value;

use crate::config::{Config, NamespaceOptions, Options};

/// Where an option's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    /// The environment variable's name.
    Env(String),
    /// The flag (`--name`).
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// Options whose values are never printed.
const SECRETS: [&str; 3] = ["requirepass", "jwt_hmac_secret", "api_key"];

/// True for an option whose value must not be printed: the known secrets,
/// and, for options this file does not know yet, any name that looks like
/// one.
fn is_secret(key: &str) -> bool {
    SECRETS.contains(&key)
        || ["secret", "pass", "token", "api_key"]
            .iter()
            .any(|w| key.contains(w))
}

/// The source of option `id` given the parsed command lines (subcommand
/// first, then the top level) and the `--config` file.
pub fn source_of(id: &str, layers: &[&ArgMatches], file: Option<&Path>) -> Source {
    let arg = Options::command()
        .get_arguments()
        .find(|a| a.get_id() == id)
        .map(|a| {
            (
                a.get_long().map(|l| format!("--{l}")).unwrap_or_default(),
                a.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        });
    let (flag, env) = arg.unwrap_or_default();
    let source = |wanted: ValueSource| {
        layers
            .iter()
            .any(|m| m.try_contains_id(id).unwrap_or(false) && m.value_source(id) == Some(wanted))
    };
    if source(ValueSource::CommandLine) {
        return Source::Flag(flag);
    }
    if source(ValueSource::EnvVariable) {
        return Source::Env(env);
    }
    if file.is_some_and(|f| file_keys(f).iter().any(|k| k == id)) {
        return Source::File;
    }
    Source::Default
}

/// The top-level keys of the TOML file (empty when it does not parse; the
/// configuration would not have resolved then).
fn file_keys(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// A duration as the config reads it back: the largest exact unit.
fn duration(d: Duration) -> Value {
    let ms = d.as_millis();
    let text = if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    };
    Value::String(text)
}

/// A byte size: `64mb` where exact, else the number of bytes.
fn size(n: usize) -> Value {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")];
    for (unit, name) in UNITS {
        if n > 0 && n.is_multiple_of(unit) {
            return Value::String(format!("{}{name}", n / unit));
        }
    }
    int(n)
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn string(s: impl std::fmt::Display) -> Value {
    Value::String(s.to_string())
}

/// The effective value of option `key`: `None` when this file does not
/// know the option, `Some(None)` when it is not set.
fn value_of(cfg: &Config, key: &str) -> Option<Option<Value>> {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| string(p.display()));
    let v = match key {
        "resp_addr" => string(cfg.resp_addr),
        "http_addr" => string(cfg.http_addr),
        "requirepass" => return Some(cfg.requirepass.as_ref().map(string)),
        "jwt_hmac_secret" => return Some(cfg.jwt_hmac_secret.as_ref().map(string)),
        "jwt_public_key_file" => return Some(path(&cfg.jwt_public_key_file)),
        "jwt_leeway" => duration(cfg.jwt_leeway),
        "api_key" => return Some(cfg.api_key.as_ref().map(string)),
        "allow_anonymous" => Value::Boolean(cfg.allow_anonymous),
        "allowed_origins" => Value::Array(cfg.allowed_origins.iter().map(string).collect()),
        "max_connections" => int(cfg.max_connections),
        "max_bulk_len" => size(cfg.max_bulk_len),
        "max_query_buffer" => size(cfg.max_query_buffer),
        "max_subscriptions" => int(cfg.max_subscriptions),
        "max_channel_length" => size(cfg.max_channel_length),
        "anonymous_max_subscriptions" => int(cfg.anonymous_max_subscriptions),
        "max_pattern_length" => size(cfg.max_pattern_length),
        "output_buffer_hard_limit" => size(cfg.output_limits.hard_bytes),
        "output_buffer_soft_limit" => size(cfg.output_limits.soft_bytes),
        "output_buffer_soft_seconds" => duration(cfg.output_limits.soft_duration),
        "ws_ping_interval" => duration(cfg.ws_ping_interval),
        "ws_pong_timeout" => duration(cfg.ws_pong_timeout),
        "ws_max_message_size" => size(cfg.ws_max_message_size),
        "ws_publish_rate" => int(cfg.ws_publish_rate),
        "history_max_memory" => size(cfg.history_max_memory),
        "recovery_max_messages" => int(cfg.recovery_max_messages),
        "leaderboard_interval" => duration(cfg.leaderboard_interval),
        "leaderboard_resp_top" => int(cfg.leaderboard_resp_top),
        "log" => string(&cfg.log),
        "output_buffer_global_limit" => size(cfg.output_buffer_global_limit),
        "auth_timeout" => duration(cfg.auth_timeout),
        "http_max_connections" => int(cfg.http_max_connections),
        "http_header_timeout" => duration(cfg.http_header_timeout),
        "http_body_timeout" => duration(cfg.http_body_timeout),
        "http_max_body_size" => size(cfg.http_max_body_size),
        "ready_file" => return Some(path(&cfg.ready_file)),
        "max_untrusted_patterns" => int(cfg.max_untrusted_patterns),
        "subscribe_rate" => int(cfg.subscribe_limit.rate),
        "subscribe_burst" => int(cfg.subscribe_limit.burst),
        "max_untrusted_patterns_per_client" => int(cfg.max_untrusted_patterns_per_client),
        "proxy_connect_rate" => int(cfg.proxy_connect_limit.rate),
        "proxy_connect_burst" => int(cfg.proxy_connect_limit.burst),
        "max_connections_per_client" => int(cfg.max_connections_per_client),
        "trusted_proxies" => Value::Array(cfg.trusted_proxies.iter().map(string).collect()),
        "auth_failure_rate" => int(cfg.auth_failure_limit.rate),
        "auth_failure_burst" => int(cfg.auth_failure_limit.burst),
        "read_rate" => int(cfg.read_limit.rate),
        "read_burst" => int(cfg.read_limit.burst),
        "output_buffer_client_limit" => size(cfg.output_buffer_client_limit),
        // A Redis URL may carry a password.
        "engine" => return Some(Some(string(mask_url(&cfg.engine)))),
        "engine_tls_ca" => return Some(path(&cfg.engine_tls_ca)),
        "engine_tls_cert" => return Some(path(&cfg.engine_tls_cert)),
        "engine_tls_key" => return Some(path(&cfg.engine_tls_key)),
        "node_name" => string(&cfg.node_name),
        "engine_prefix" => string(&cfg.engine_prefix),
        "presence_ttl" => duration(cfg.presence_ttl),
        "engine_dedicated_connections" => int(cfg.engine_dedicated_connections),
        // A hook's URL may carry a password too.
        "proxy_connect_url" => {
            return Some(
                cfg.proxy_connect_url
                    .as_deref()
                    .map(|u| string(mask_url(u))),
            )
        }
        "proxy_subscribe_url" => {
            return Some(
                cfg.proxy_subscribe_url
                    .as_deref()
                    .map(|u| string(mask_url(u))),
            )
        }
        "proxy_publish_url" => {
            return Some(
                cfg.proxy_publish_url
                    .as_deref()
                    .map(|u| string(mask_url(u))),
            )
        }
        "proxy_timeout" => duration(cfg.proxy_timeout),
        _ => return None,
    };
    Some(Some(v))
}

/// A URL with its password (if any) masked.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://********{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// The keys of every option that has a flag, in `--help` order (`config`,
/// the file itself, excluded).
pub(crate) fn option_keys() -> Vec<String> {
    Options::command()
        .get_arguments()
        .filter(|a| a.get_long().is_some() && a.get_id() != "config")
        .map(|a| a.get_id().to_string())
        .collect()
}

fn namespace_table(ns: &NamespaceOptions) -> Vec<(&'static str, Value)> {
    vec![
        ("history_size", int(ns.history_size)),
        ("history_ttl", duration(ns.history_ttl.0)),
        ("presence", Value::Boolean(ns.presence)),
        ("join_leave", Value::Boolean(ns.join_leave)),
        ("allow_publish", Value::Boolean(ns.allow_publish)),
        ("allow_anonymous", Value::Boolean(ns.allow_anonymous)),
        ("subscribe_proxy", Value::Boolean(ns.subscribe_proxy)),
        ("publish_proxy", Value::Boolean(ns.publish_proxy)),
    ]
}

/// A table name in TOML: bare where it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_owned()
    } else {
        Value::String(name.to_owned()).to_string()
    }
}

/// Writes the configuration as TOML with each value's source as a comment.
pub fn render_config(
    cfg: &Config,
    file: Option<&Path>,
    source: &dyn Fn(&str) -> Source,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "# Herald's effective configuration (`herald config`).")?;
    writeln!(
        out,
        "# Each value is followed by its source: default, file, env HERALD_<NAME> or"
    )?;
    writeln!(
        out,
        "# flag --name (precedence flag > env > file > default). Secrets are masked"
    )?;
    writeln!(
        out,
        "# and commented out, as are options that are not set; the rest loads back"
    )?;
    writeln!(out, "# as it is with --config.")?;
    match file {
        Some(f) => writeln!(
            out,
            "# config file: {}  # {}",
            f.display(),
            source("config")
        )?,
        None => writeln!(out, "# config file: none")?,
    }
    writeln!(out)?;
    for key in option_keys() {
        let from = source(&key);
        match value_of(cfg, &key) {
            Some(Some(_)) if is_secret(&key) => {
                writeln!(out, "# {key} = \"********\"  # {from}; masked")?
            }
            Some(Some(v)) => writeln!(out, "{key} = {v}  # {from}")?,
            Some(None) => writeln!(out, "# {key} is not set  # {from}")?,
            // An option this printer does not know yet: its source is
            // still right, its value is the one `herald --help` describes.
            None => writeln!(out, "# {key}: see `herald --help`  # {from}")?,
        }
    }
    for (name, ns) in &cfg.namespaces {
        writeln!(out)?;
        writeln!(out, "[namespaces.{}]  # file", toml_key(name))?;
        for (k, v) in namespace_table(ns) {
            writeln!(out, "{k} = {v}")?;
        }
    }
    if !cfg.namespaces.contains_key("default") {
        writeln!(out)?;
        writeln!(
            out,
            "# Channels outside every namespace above use these options."
        )?;
        writeln!(out, "[namespaces.default]  # default")?;
        for (k, v) in namespace_table(cfg.namespace(b"")) {
            writeln!(out, "{k} = {v}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(cfg: &Config) -> String {
        let mut out = Vec::new();
        render_config(cfg, None, &|_| Source::Default, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_option_is_printed_with_its_value() {
        let cfg = Config::default();
        for key in option_keys() {
            assert!(
                value_of(&cfg, &key).is_some(),
                "`herald config` does not know option {key}: add it to value_of in src/tools/effective.rs"
            );
        }
    }

    #[test]
    fn output_loads_back_to_the_same_configuration() {
        let file: Options = toml::from_str(
            "max_bulk_len = \"1mb\"\nws_ping_interval = \"1500ms\"\nallowed_origins = [\"https://a\"]\n\
             [namespaces.chat]\nhistory_size = 10\nhistory_ttl = \"10m\"\npresence = true\n\
             [namespaces.\"odd name\"]\nallow_anonymous = false\n",
        )
        .unwrap();
        let cfg = file.resolve().unwrap();
        let first = render(&cfg);
        let again: Options = toml::from_str(&first).expect(&first);
        let second = render(&again.resolve().unwrap());
        let values = |s: &str| s.parse::<toml::Table>().unwrap();
        assert_eq!(values(&first), values(&second));
        assert!(first.contains("max_bulk_len = \"1mb\""), "{first}");
        assert!(first.contains("ws_ping_interval = \"1500ms\""), "{first}");
        assert!(first.contains("history_ttl = \"10m\""), "{first}");
        assert!(first.contains("[namespaces.\"odd name\"]"), "{first}");
    }

    #[test]
    fn secrets_are_masked_and_commented_out() {
        let cfg = Options {
            requirepass: Some("hunter2".into()),
            jwt_hmac_secret: Some("s3cret-value".into()),
            api_key: Some("k3y-value".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let text = render(&cfg);
        for secret in ["hunter2", "s3cret-value", "k3y-value"] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains("# requirepass = \"********\"  # default; masked"));
        let table = text.parse::<toml::Table>().unwrap();
        assert!(!table.contains_key("requirepass"));
        assert!(is_secret("proxy_token") && !is_secret("jwt_public_key_file"));
    }

    #[test]
    fn units() {
        assert_eq!(duration(Duration::from_secs(7200)), string("2h"));
        assert_eq!(duration(Duration::from_secs(90)), string("90s"));
        assert_eq!(duration(Duration::ZERO), string("0s"));
        assert_eq!(duration(Duration::from_millis(100)), string("100ms"));
        assert_eq!(size(64 << 20), string("64mb"));
        assert_eq!(size(1536), int(1536));
        assert_eq!(size(0), int(0));
    }
}
