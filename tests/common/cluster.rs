//! A three-master Redis Cluster on free loopback ports (below 55535, since
//! the bus port is port + 10000), stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, show, Raw, TIMEOUT};

pub struct Master {
    pub child: Child,
    pub addr: std::net::SocketAddr,
}

/// Three cluster masters (stopped on drop) and their scratch directory.
pub struct Cluster {
    pub masters: Vec<Master>,
    pub dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.masters {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (+10000) is valid too.
pub fn low_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55535 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

pub fn start_cluster() -> Cluster {
    start_cluster_with(None)
}

/// A cluster whose masters require `password` (when given).
pub fn start_cluster_with(password: Option<&str>) -> Cluster {
    let dir = std::env::temp_dir().join(format!(
        "herald-cluster-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut masters = Vec::new();
    for _ in 0..3 {
        let port = low_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ])
            .args(password.map_or(Vec::new(), |p| vec!["--requirepass", p, "--masterauth", p]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        masters.push(Master { child, addr });
    }
    let cluster = Cluster { masters, dir };
    let mut create = Command::new("redis-cli");
    if let Some(p) = password {
        create.args(["-a", p, "--no-auth-warning"]);
    }
    create.arg("--cluster").arg("create");
    for m in &cluster.masters {
        create.arg(m.addr.to_string());
    }
    let out = create
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
        loop {
            let mut r = Raw::connect(m.addr);
            if let Some(p) = password {
                r.cmd(&[b"AUTH", p.as_bytes()]);
            }
            let info = r.cmd(&[b"CLUSTER", b"INFO"]);
            if show(&info).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster not ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster
}
