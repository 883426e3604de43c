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
        Self::start_tls_on(free_port(), certs, cert, auth_clients)
    }

    /// [`Redis::start_tls`] on a given port (a restart on the same address).
    pub fn start_tls_on(port: u16, certs: &TestCerts, cert: &str, auth_clients: &str) -> Redis {
        let args = server_tls_args(certs, cert, auth_clients, port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Redis::start_with(port, &args)
    }
}

/// The settings of a `redis-server` speaking only TLS on `port`,
/// presenting `{cert}.pem`.
fn server_tls_args(certs: &TestCerts, cert: &str, auth_clients: &str, port: u16) -> Vec<String> {
    [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &certs.path(&format!("{cert}.pem")),
        "--tls-key-file",
        &certs.path(&format!("{cert}.key")),
        "--tls-ca-cert-file",
        &certs.path("ca.pem"),
        "--tls-auth-clients",
        auth_clients,
    ]
    .map(String::from)
    .to_vec()
}

/// `redis-cli` over TLS to 127.0.0.1:`port`: its output.
pub fn tls_cli(certs: &TestCerts, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &certs.path("ca.pem"),
            "-h",
            "127.0.0.1",
        ])
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A three-master Redis Cluster speaking only TLS, its bus too
/// (`tls-cluster yes`): it announces its TLS ports.
pub fn start_tls_cluster(certs: &TestCerts) -> super::cluster::Cluster {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = certs.dir.join(format!("cluster-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut masters = Vec::new();
    for _ in 0..3 {
        let port = super::cluster::low_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap(), "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "1000", "--tls-cluster", "yes"])
            .args(server_tls_args(certs, "server", "no", port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + super::TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        masters.push(super::cluster::Master { child, addr });
    }
    let cluster = super::cluster::Cluster { masters, dir };
    let out = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &certs.path("ca.pem"),
            "--cluster",
            "create",
        ])
        .args(cluster.masters.iter().map(|m| m.addr.to_string()))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for m in &cluster.masters {
        while !tls_cli(certs, m.addr.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(Instant::now() < deadline, "cluster not ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster
}

/// A sentinel speaking only TLS, watching the TLS master at `master`
/// (`mymaster`) over TLS; stopped on drop.
pub struct TlsSentinel {
    pub redis: Redis,
}

impl TlsSentinel {
    pub fn start(certs: &TestCerts, master: u16) -> TlsSentinel {
        let port = free_port();
        let conf = certs.dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\ntls-replication yes\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n"
            ),
        )
        .unwrap();
        let mut args = vec![conf.display().to_string(), "--sentinel".into()];
        args.extend(server_tls_args(certs, "server", "no", port));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + super::TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sentinel did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        TlsSentinel {
            redis: Redis { child, addr },
        }
    }
}
