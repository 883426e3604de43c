//! TLS for engine tests: a throwaway CA and certificates made with the
//! `openssl` CLI (scripts/test installs it), and `redis-server` speaking
//! only TLS.

use std::path::PathBuf;
use std::process::Command;

use super::{free_port, Redis};

/// A CA and certificates it signed, in a temporary directory (removed on
/// drop): `server` (for 127.0.0.1), `client` (a client certificate) and
/// `elsewhere` (for another host name only).
pub struct TestCerts {
    pub dir: PathBuf,
}

fn openssl(dir: &PathBuf, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI not found: scripts/test installs it (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl TestCerts {
    pub fn make(tag: &str) -> TestCerts {
        let dir = std::env::temp_dir().join(format!("herald-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let subj = "/CN=herald-test-ca";
        let mut ca = vec![
            "req", "-x509", "-new", "-nodes", "-days", "2", "-subj", subj,
        ];
        ca.extend(EC);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&dir, &ca);
        for (name, san) in [
            ("server", "IP:127.0.0.1"),
            ("client", "DNS:herald-client"),
            ("elsewhere", "DNS:elsewhere.test"),
        ] {
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.join(&ext),
                format!(
                    "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                     extendedKeyUsage=serverAuth,clientAuth\n"
                ),
            )
            .unwrap();
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subj = format!("/CN={name}");
            let mut req = vec!["req", "-new", "-nodes", "-subj", &subj];
            req.extend(EC);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(&dir, &req);
            openssl(
                &dir,
                &[
                    "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
                    "-extfile", &ext, "-out", &pem,
                ],
            );
        }
        TestCerts { dir }
    }

    /// The path of one of the files (`ca.pem`, `server.key`, …).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis {
    /// A `redis-server` on 127.0.0.1 speaking only TLS, presenting
    /// `{cert}.pem`; `auth_clients`: `no`, `optional` or `yes` (client
    /// certificates signed by the test CA).
    pub fn start_tls(certs: &TestCerts, cert: &str, auth_clients: &str) -> Redis {
        let port = free_port();
        let p = port.to_string();
        let (pem, key, ca) = (
            certs.path(&format!("{cert}.pem")),
            certs.path(&format!("{cert}.key")),
            certs.path("ca.pem"),
        );
        Redis::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &p,
                "--tls-cert-file",
                &pem,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                auth_clients,
            ],
        )
    }
}
