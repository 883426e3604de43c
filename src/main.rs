//! The `herald` binary: configuration, logging, signals; and the tools
//! (`herald token`, `check-token`, `config`), which exit without serving.

use anyhow::Context;
use herald::tools::Invocation;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let invocation = Invocation::from_env();
    if invocation.cli.command.is_some() {
        let mut out = std::io::stdout().lock();
        let code = match invocation.run_tool(&mut out) {
            Ok(Some(true) | None) => 0,
            Ok(Some(false)) => 1,
            Err(e) => {
                eprintln!("herald: {e}");
                2
            }
        };
        drop(out);
        std::process::exit(code);
    }
    let cfg = invocation.server_config()?;
    // Every client connection may park a thread on an engine call
    // (`Pending::wait` uses `block_in_place`). A call parked past tokio's
    // blocking-thread cap (512 by default) strands its worker's core until
    // a thread frees, and once every core is stranded nothing drives the
    // I/O and timers the parked calls wait on: the node deadlocked for good
    // (600 RESP connections publishing through a 3 s Redis stall, or
    // sending PUBSUB NUMSUB in a loop; tests/attack5_findings.rs). Room for
    // one per connection; threads are made only when needed and leave
    // after 10 s idle.
    let parked = cfg.max_connections + cfg.http_max_connections + 64;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(parked)
        .build()
        .context("cannot start the runtime")?
        .block_on(serve(cfg))
}

async fn serve(cfg: herald::config::Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cfg.log).context("invalid --log filter")?)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    // Signal handlers first: a SIGTERM that arrives right after the ready
    // line must shut down cleanly, not kill the process.
    let signal = wait_for_signal();
    let ready_file = cfg.ready_file.clone();
    let running = herald::server::start(cfg).await?;
    tracing::info!(resp = %running.resp_addr, http = %running.http_addr, "herald listening");
    if let Some(path) = ready_file {
        write_ready_file(&path, &running)
            .with_context(|| format!("cannot write --ready-file {}", path.display()))?;
    }
    signal.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    tracing::info!("bye");
    Ok(())
}

/// `{"resp": ADDR, "http": ADDR, "pid": N}`, written to a temporary file
/// beside `path` and renamed, so a reader never sees half of it.
fn write_ready_file(
    path: &std::path::Path,
    running: &herald::server::Running,
) -> std::io::Result<()> {
    let json = serde_json::json!({
        "resp": running.resp_addr.to_string(),
        "http": running.http_addr.to_string(),
        "pid": std::process::id(),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{json}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, before the returned future is first polled.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}
