//! The app hooks' settings (`--proxy-*-url`, `--proxy-timeout`), checked
//! when the configuration is resolved.

use std::time::Duration;

use super::{Config, ConfigError};

impl Config {
    /// The hooks' URLs are plain http:// URLs with a host, the timeout is
    /// usable, and every namespace that sends its subscribes or publishes
    /// to the app has the hook's URL: a namespace whose hook is missing
    /// would otherwise refuse everything in silence.
    pub(super) fn check_proxies(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("proxy_connect_url", &self.proxy_connect_url),
            ("proxy_subscribe_url", &self.proxy_subscribe_url),
            ("proxy_publish_url", &self.proxy_publish_url),
        ] {
            if let Some(url) = url {
                check_hook_url(key, url)?;
            }
        }
        if self.proxy_timeout.is_zero() || self.proxy_timeout > Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "proxy_timeout must be above zero and at most 60s".into(),
            ));
        }
        let namespaces = self
            .namespaces
            .iter()
            .map(|(n, o)| (n.as_str(), o))
            .chain(std::iter::once(("default", &self.default_namespace)));
        for (name, ns) in namespaces {
            if ns.subscribe_proxy && self.proxy_subscribe_url.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "namespace {name} sets subscribe_proxy but proxy_subscribe_url is not set"
                )));
            }
            if ns.publish_proxy && self.proxy_publish_url.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "namespace {name} sets publish_proxy but proxy_publish_url is not set"
                )));
            }
        }
        Ok(())
    }
}

/// An app hook's URL: `http://host[:port]/path` (Herald speaks plain
/// HTTP/1.1 to the app, which is expected on a private network).
fn check_hook_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError::Invalid(format!("{key} {url:?}: {why}")));
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return bad("not a URL");
    };
    if uri.scheme_str() != Some("http") {
        return bad(
            "must be an http:// URL (https is not supported: keep the hook on a private network)",
        );
    }
    if uri.host().is_none_or(str::is_empty) {
        return bad("has no host");
    }
    Ok(())
}
