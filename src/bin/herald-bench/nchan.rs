//! nginx with the nchan module, as `compare`'s WebSocket peer: a temporary
//! directory holding an `nginx.conf` (a WebSocket subscriber location and
//! an HTTP publisher location on a free loopback port), the error log and
//! the pid file; nginx runs in the foreground with a master process and
//! one worker per core, and is stopped (SIGTERM, then SIGKILL) and its
//! directory removed when the [`Nginx`] value is dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{sys, TIMEOUT};

/// Where nginx and the module are, and how to run them.
#[derive(Clone, Debug)]
pub struct NchanConfig {
    pub nginx: PathBuf,
    pub module: PathBuf,
    /// `worker_processes`.
    pub workers: usize,
    /// Connections the server must hold (sizes `worker_connections` and
    /// `worker_rlimit_nofile`).
    pub connections: usize,
    /// The open-files limit nginx inherits: `worker_rlimit_nofile` stays
    /// within it (raising it needs CAP_SYS_RESOURCE, which a container's
    /// root may lack).
    pub nofile_limit: Option<u64>,
}

impl NchanConfig {
    /// Why nginx + nchan cannot run here, if so.
    pub fn missing(&self) -> Option<String> {
        for (what, p) in [("nginx", &self.nginx), ("the nchan module", &self.module)] {
            if !p.is_file() {
                return Some(format!("{what} not found at {}", p.display()));
            }
        }
        None
    }

    /// `nginx -v` (it prints to stderr) and the Debian package version of
    /// the module, when known.
    pub fn version(&self) -> String {
        let nginx = Command::new(&self.nginx)
            .arg("-v")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "nginx (version unknown)".into());
        let nchan = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "libnginx-mod-nchan"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty());
        match nchan {
            Some(v) => format!("{nginx}, nchan module (Debian libnginx-mod-nchan {v})"),
            None => format!("{nginx}, nchan module {}", self.module.display()),
        }
    }
}

/// The configuration file's text.
fn conf(cfg: &NchanConfig, dir: &Path, port: u16) -> String {
    let d = dir.display();
    let conns = cfg.connections + 1024;
    // Every connection may land on one worker (plus its listening and
    // inter-worker sockets, log files, …).
    let mut nofile = (2 * conns + 1024) as u64;
    if let Some(limit) = cfg.nofile_limit {
        nofile = nofile.min(limit);
    }
    format!(
        "# Written by herald-bench compare; removed when the run ends.
load_module {module};
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
error_log {d}/error.log warn;
pid {d}/nginx.pid;

events {{
    worker_connections {conns};
}}

http {{
    access_log off;
    # Publishers pipeline POSTs on keep-alive connections (nginx closes
    # one after 1,000 requests by default).
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # No per-channel message buffer: the Herald channels of the same runs
    # keep no history either (nchan's default keeps the last 10 messages,
    # which costs it about 10 % of its fan-out rate here).
    nchan_message_buffer_length 0;

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ /sub/(\\w+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            # Only messages published after subscribing, as with Herald.
            nchan_subscriber_first_message newest;
        }}
        location ~ /pub/(\\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
    }}
}}
",
        module = cfg.module.display(),
        workers = cfg.workers.max(1),
    )
}

/// A running nginx + nchan.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub workers: Vec<u32>,
}

static STARTS: AtomicU64 = AtomicU64::new(0);

impl Nginx {
    /// Writes the configuration into a new temporary directory, starts
    /// nginx and waits until it accepts connections and its workers run.
    pub fn start(cfg: &NchanConfig) -> Result<Nginx> {
        let dir = std::env::temp_dir().join(format!(
            "herald-bench-nchan-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf(cfg, &dir, port))
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let mut child = Command::new(&cfg.nginx)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", cfg.nginx.display()))?;
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("[nginx] {line}");
                }
            });
        }
        let mut n = Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            workers: Vec::new(),
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = n.child.try_wait()? {
                bail!(
                    "nginx exited at start ({st}); its error log: {}",
                    n.error_log_tail()
                );
            }
            n.workers = sys::children(n.child.id());
            if n.workers.len() >= cfg.workers.max(1) && TcpStream::connect(n.addr).is_ok() {
                return Ok(n);
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not accept connections with {} workers within {TIMEOUT:?}; \
                     its error log: {}",
                    cfg.workers,
                    n.error_log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master and worker pids (for memory and CPU sums).
    pub fn pids(&self) -> Vec<u32> {
        let mut p = vec![self.child.id()];
        p.extend(&self.workers);
        p
    }

    pub fn sub_url(&self, channel: &str) -> String {
        format!("ws://{}/sub/{channel}", self.addr)
    }

    /// The publish path, `{channel}` standing for the channel.
    pub fn pub_path() -> String {
        "/pub/{channel}".into()
    }

    /// The last lines of the error log (for failures).
    pub fn error_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }

    /// Lines of the error log at level `[alert]`, `[crit]` or `[emerg]`
    /// (e.g. "worker_connections are not enough").
    pub fn error_log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[alert]") || l.contains("[crit]") || l.contains("[emerg]"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL on the master alone would leave its workers running.
        let master = self.child.id();
        sys::signal(master, sys::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        for &w in &self.workers {
            // The master waits for its workers on SIGTERM; a worker still
            // there (the master was killed) is stopped too.
            let comm = std::fs::read_to_string(format!("/proc/{w}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                sys::signal(w, sys::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
