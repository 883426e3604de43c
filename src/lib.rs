//! Herald: a pub/sub real-time notification hub.
//!
//! One registry of channels and patterns, reached by three front ends:
//!
//! - [`hub`]: the core, with no I/O: the channel registry and its pattern
//!   index, Redis glob matching, publications encoded once per wire format,
//!   and each connection's bounded outbox.
//! - [`resp`]: the Redis protocol front end (RESP2/RESP3): framing, encoding,
//!   the connection task, and one file per command family.
//! - [`ws`]: the WebSocket front end: JSON protocol, sessions.
//! - [`http`]: the HTTP listener (bounded connections and timeouts in
//!   `http::listener`): `/ws`, the server API, `/metrics`, `/healthz` and
//!   the demo page.
//! - [`metrics`]: Prometheus counters, gauges and latency histograms.
//! - [`proxy`]: the app-backend hooks (connect, subscribe, publish): the
//!   contract, and the pooled HTTP client that calls them.
//! - [`auth`]: credentials into an identity, shared by the front ends.
//! - [`config`]: flags, `HERALD_*` env variables and the TOML file.
//! - [`rate`]: a per-connection token bucket in eight bytes.
//! - [`server`]: binds the listeners and runs them until shutdown.
//! - [`tools`]: the command line, and the tools beside the server
//!   (`herald token`, `check-token`, `config`).

pub mod auth;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod proxy;
pub mod rate;
pub mod resp;
pub mod server;
pub mod tools;
pub mod ws;

/// The Redis version Herald reports to clients (HELLO, INFO): the release
/// whose replies it reproduces.
pub const REDIS_VERSION: &str = "7.0.15";

/// Resident set size of this process, from `/proc/self/statm` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
