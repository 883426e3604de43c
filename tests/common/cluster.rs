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
    start_cluster_opts(password, None)
}

/// A cluster; with `first = Some((port, announced))` the first master
/// listens on `port` but tells clients and peers it is at `announced`
/// (and its bus at `announced + 10000`): a [`Proxy`] sits there.
pub fn start_cluster_opts(password: Option<&str>, first: Option<(u16, u16)>) -> Cluster {
    let dir = std::env::temp_dir().join(format!(
        "herald-cluster-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut masters = Vec::new();
    for i in 0..3 {
        let (port, announced) = match (i, first) {
            (0, Some((p, a))) => (p, Some(a)),
            _ => (low_port(), None),
        };
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
            .args(announced.map_or(Vec::new(), |a| {
                vec![
                    "--cluster-announce-port".to_string(),
                    a.to_string(),
                    "--cluster-announce-bus-port".to_string(),
                    (a + 10000).to_string(),
                ]
            }))
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
        // Clients (and redis-cli) reach it where it says it is.
        let addr = match announced {
            Some(a) => format!("127.0.0.1:{a}").parse().unwrap(),
            None => addr,
        };
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

/// A TCP proxy on loopback that can make the connections that subscribed
/// (sent `SSUBSCRIBE`) silent: they stay open, but what the server sends
/// them is dropped.
pub struct Proxy {
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<ProxyConn>>>>,
}

pub struct ProxyConn {
    subscribed: std::sync::atomic::AtomicBool,
    silent: std::sync::atomic::AtomicBool,
}

impl Proxy {
    /// Forwards `listen` to `upstream` (both loopback ports), until the
    /// test process ends.
    pub fn start(listen: u16, upstream: u16) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let l = std::net::TcpListener::bind(("127.0.0.1", listen)).expect("proxy bind");
        let conns: Arc<std::sync::Mutex<Vec<Arc<ProxyConn>>>> = Arc::default();
        let registry = conns.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let state = Arc::new(ProxyConn {
                    subscribed: false.into(),
                    silent: false.into(),
                });
                registry.lock().unwrap().push(state.clone());
                let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                let st = state.clone();
                std::thread::spawn(move || {
                    let (mut c, mut s) = (c, s);
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if buf[..n]
                            .windows(10)
                            .any(|w| w.eq_ignore_ascii_case(b"SSUBSCRIBE"))
                        {
                            st.subscribed.store(true, Ordering::Relaxed);
                        }
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    let _ = c.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match s2.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if state.silent.load(Ordering::Relaxed) {
                            continue;
                        }
                        if c2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                    let _ = s2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { conns }
    }

    /// Silences every connection that has subscribed so far; returns how
    /// many.
    pub fn silence_subscribers(&self) -> usize {
        use std::sync::atomic::Ordering;
        let conns = self.conns.lock().unwrap();
        let mut n = 0;
        for c in conns.iter() {
            if c.subscribed.load(Ordering::Relaxed) {
                c.silent.store(true, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }
}
