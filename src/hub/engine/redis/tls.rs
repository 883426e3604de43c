//! TLS to Redis: `rediss://` (one server), `rediss+sentinel://` (the
//! sentinels and the masters they name) and `rediss+cluster://` (every
//! cluster node). redis-rs speaks it with rustls, on the ring crypto
//! provider; a link is TLS or plain TCP as a whole, never a mix.
//!
//! The server's certificate is checked against the host name (or IP) of
//! the URL, the one Sentinel names, or the one `CLUSTER SLOTS` announces,
//! and against `--engine-tls-ca` when given (then only that CA), else the
//! system's roots (managed Redis with a public CA). `--engine-tls-cert` and
//! `--engine-tls-key` present a client certificate (Redis's
//! `tls-auth-clients yes`). Skipping the check (`#insecure`) is refused.

use std::path::{Path, PathBuf};

use redis::{ClientTlsConfig, RedisResult, TlsCertificates};

use crate::hub::engine::EngineError;

/// `--engine-tls-ca`, `--engine-tls-cert`, `--engine-tls-key`: PEM files.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA (or CAs) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// A client certificate chain, with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// The engine URL schemes that speak TLS.
const TLS_SCHEMES: [&str; 3] = ["rediss://", "rediss+sentinel://", "rediss+cluster://"];

/// Whether `url` asks for TLS.
pub fn wanted(url: &str) -> bool {
    TLS_SCHEMES.iter().any(|s| url.starts_with(s))
}

/// `url` with its TLS scheme replaced by the plain one (the topology
/// parsers read the plain form): `rediss+cluster://…` → `redis+cluster://…`.
pub fn plain(url: &str) -> String {
    match url.strip_prefix("rediss") {
        Some(rest) if wanted(url) => format!("redis{rest}"),
        _ => url.to_string(),
    }
}

fn refuse(msg: impl Into<String>) -> EngineError {
    EngineError::Unavailable(msg.into())
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, EngineError> {
    std::fs::read(path).map_err(|e| refuse(format!("{flag} {}: {e}", path.display())))
}

/// The certificates of the link `url` asks for: `None` for plain TCP.
/// Refuses TLS files with a plain URL (they would be ignored in silence),
/// `#insecure`, a certificate without its key, and files that hold no PEM
/// certificate.
pub fn certificates(url: &str, files: &TlsFiles) -> Result<Option<TlsCertificates>, EngineError> {
    if !wanted(url) {
        if files.ca.is_some() || files.cert.is_some() || files.key.is_some() {
            return Err(refuse(
                "--engine-tls-ca/--engine-tls-cert/--engine-tls-key need a TLS engine URL \
                 (rediss://, rediss+sentinel:// or rediss+cluster://)",
            ));
        }
        return Ok(None);
    }
    if url.rsplit_once('#').is_some_and(|(_, f)| f == "insecure") {
        return Err(refuse(
            "--engine rediss://…#insecure (no certificate check) is refused: trust a private \
             CA with --engine-tls-ca",
        ));
    }
    // Explicit, so that a second provider compiled in later cannot make
    // rustls's choice ambiguous (it would then refuse to pick one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem_certs = |flag: &str, bytes: Vec<u8>, path: &Path| {
        if memchr::memmem::find(&bytes, b"-----BEGIN CERTIFICATE-----").is_none() {
            return Err(refuse(format!(
                "{flag} {}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(bytes)
    };
    let root_cert = match &files.ca {
        Some(p) => Some(pem_certs(
            "--engine-tls-ca",
            read("--engine-tls-ca", p)?,
            p,
        )?),
        None => None,
    };
    let client_tls = match (&files.cert, &files.key) {
        (Some(c), Some(k)) => Some(ClientTlsConfig {
            client_cert: pem_certs("--engine-tls-cert", read("--engine-tls-cert", c)?, c)?,
            client_key: read("--engine-tls-key", k)?,
        }),
        (None, None) => None,
        _ => {
            return Err(refuse(
                "--engine-tls-cert and --engine-tls-key go together (the client certificate \
                 and its key)",
            ))
        }
    };
    let certs = TlsCertificates {
        client_tls,
        root_cert,
    };
    // Parses the PEM now, so that a bad key is reported at start.
    open("rediss://localhost", Some(&certs)).map_err(|e| refuse(format!("engine TLS: {e}")))?;
    tracing::info!(
        ca = %files.ca.as_ref().map_or("system roots".into(), |p| p.display().to_string()),
        client_certificate = certs.client_tls.is_some(),
        "engine: TLS to Redis"
    );
    Ok(Some(certs))
}

/// The scheme of one server's URL: `rediss` when `tls`.
pub fn scheme(tls: Option<&TlsCertificates>) -> &'static str {
    if tls.is_some() {
        "rediss"
    } else {
        "redis"
    }
}

/// A client of one server's `url` (`redis://` or `rediss://`, the latter
/// with `tls`'s certificates).
pub fn open(url: &str, tls: Option<&TlsCertificates>) -> RedisResult<redis::Client> {
    match tls {
        Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
        None => redis::Client::open(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(wanted("rediss://h:1"));
        assert!(wanted("rediss+cluster://h:1"));
        assert!(!wanted("redis://h:1"));
        assert_eq!(plain("rediss+sentinel://a:1/m"), "redis+sentinel://a:1/m");
        assert_eq!(plain("rediss://a:1"), "redis://a:1");
        assert_eq!(plain("redis://a:1"), "redis://a:1");
    }

    #[test]
    fn refusals() {
        let ca = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let err = |url: &str, f: &TlsFiles| certificates(url, f).err().unwrap().to_string();
        assert!(err("redis://h:1", &ca).contains("need a TLS engine URL"));
        assert!(err("rediss://h:1/#insecure", &TlsFiles::default()).contains("insecure"));
        assert!(err("rediss://h:1", &ca).contains("/nonexistent/ca.pem"));
        let half = TlsFiles {
            cert: Some("/x".into()),
            ..TlsFiles::default()
        };
        assert!(err("rediss://h:1", &half).contains("go together"));
        assert!(certificates("redis://h:1", &TlsFiles::default())
            .unwrap()
            .is_none());
        let system = certificates("rediss://h:1", &TlsFiles::default()).unwrap();
        assert!(system.is_some_and(|c| c.root_cert.is_none()));
    }
}
