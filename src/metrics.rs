//! Prometheus metrics: the hub's counters, gauges read at scrape time, and
//! per-command latency histograms for every front end, rendered in the
//! Prometheus text format by `prometheus-client`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::hub::Hub;

type CommandLabels = [(&'static str, &'static str); 2];

/// Values sampled at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    pub resp_connections: usize,
    pub ws_connections: usize,
    pub ws_subscriptions: usize,
    pub resp_subscriptions: usize,
}

type HookLabels = [(&'static str, &'static str); 1];
type HookErrorLabels = [(&'static str, &'static str); 2];

/// The app-backend hooks' calls, failures and latency, per hook
/// (`connect`, `subscribe`, `publish`); clones share the counts.
#[derive(Clone)]
pub struct ProxyMetrics {
    calls: Family<HookLabels, Counter>,
    errors: Family<HookErrorLabels, Counter>,
    seconds: Family<HookLabels, Histogram, fn() -> Histogram>,
}

fn hook_histogram() -> Histogram {
    // 100 µs .. ~6.5 s: an app's answer, up to past any sane timeout.
    Histogram::new(exponential_buckets(1e-4, 2.0, 17))
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            calls: Family::default(),
            errors: Family::default(),
            seconds: Family::new_with_constructor(hook_histogram),
        }
    }
}

impl ProxyMetrics {
    /// Counts one call of `hook` that took `took`, and its failure's
    /// `reason` (a fixed label: `Failure::reason`) if it failed.
    pub fn observe(&self, hook: &'static str, took: Duration, failure: Option<&'static str>) {
        self.calls.get_or_create(&[("hook", hook)]).inc();
        self.seconds
            .get_or_create(&[("hook", hook)])
            .observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.errors
                .get_or_create(&[("hook", hook), ("reason", reason)])
                .inc();
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "proxy_calls",
            "Calls of the app's backend hooks, by hook",
            self.calls.clone(),
        );
        registry.register(
            "proxy_errors",
            "Hook calls that failed (app down, slow or answering garbage: the request was refused), by hook and reason",
            self.errors.clone(),
        );
        registry.register(
            "proxy_duration_seconds",
            "Time of a hook call, answer read, by hook",
            self.seconds.clone(),
        );
    }
}

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    command_seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    connections: Family<[(&'static str, &'static str); 1], Gauge>,
    subscriptions: Family<[(&'static str, &'static str); 1], Gauge>,
    channels: Gauge,
    patterns: Gauge,
    engine_up: Gauge,
    rss: Gauge,
    resp_slots: std::collections::HashMap<&'static str, usize>,
    resp_handles: Vec<std::sync::OnceLock<Histogram>>,
    history_bytes: Gauge,
    history_max_bytes: Gauge,
    history_evicted: Gauge,
    keys: Gauge,
    proxy: ProxyMetrics,
}

fn new_histogram() -> Histogram {
    // 1 µs .. ~1 s.
    Histogram::new(exponential_buckets(1e-6, 2.0, 21))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(hub: &Hub) -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let s = hub.stats();
        registry.register(
            "messages_published",
            "Messages published",
            s.published.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages delivered to subscribers (local receivers)",
            s.delivered.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted, all front ends",
            s.connections_total.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections refused at the connection limit",
            s.rejected_connections.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Clients cut off for exceeding their output buffer limits",
            s.slow_disconnects.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused credentials and permission checks",
            s.auth_failures.clone(),
        );
        let command_seconds =
            Family::<CommandLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                new_histogram,
            );
        registry.register(
            "command_duration_seconds",
            "Time to execute one command, by front end and command",
            command_seconds.clone(),
        );
        let connections = Family::default();
        registry.register(
            "connections",
            "Open connections by front end",
            connections.clone(),
        );
        let subscriptions = Family::default();
        registry.register(
            "subscriptions",
            "Channel and pattern subscriptions by front end",
            subscriptions.clone(),
        );
        let channels = Gauge::default();
        registry.register(
            "channels",
            "Channels with at least one subscriber",
            channels.clone(),
        );
        let patterns = Gauge::default();
        registry.register("patterns", "Distinct subscribed patterns", patterns.clone());
        let engine_up = Gauge::default();
        registry.register(
            "engine_up",
            "1 while the engine can publish and deliver (always 1 in memory)",
            engine_up.clone(),
        );
        let rss = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "Resident set size of the process",
            rss.clone(),
        );
        let history_bytes = Gauge::default();
        registry.register(
            "history_bytes",
            "Memory held by channel histories (approximate)",
            history_bytes.clone(),
        );
        let history_max_bytes = Gauge::default();
        registry.register(
            "history_max_bytes",
            "The global cap on history memory",
            history_max_bytes.clone(),
        );
        let history_evicted = Gauge::default();
        registry.register(
            "history_evicted_entries",
            "History entries evicted by the memory cap, ever",
            history_evicted.clone(),
        );
        let keys = Gauge::default();
        registry.register("keys", "Keys in the keyspace", keys.clone());
        let proxy = ProxyMetrics::default();
        proxy.register(&mut registry);
        let commands = crate::resp::cmd::COMMANDS;
        let resp_slots = commands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name, i))
            .collect();
        let resp_handles = commands
            .iter()
            .map(|_| std::sync::OnceLock::new())
            .collect();
        Metrics {
            resp_slots,
            resp_handles,
            history_bytes,
            history_max_bytes,
            history_evicted,
            keys,
            proxy,
            registry,
            command_seconds,
            connections,
            subscriptions,
            channels,
            patterns,
            engine_up,
            rss,
        }
    }

    /// The hooks' counters (handed to `proxy::Proxy`).
    pub fn proxy(&self) -> &ProxyMetrics {
        &self.proxy
    }

    /// Records one command's execution time. `command` is a name from a
    /// fixed set (the RESP command table, `ws::protocol::Op::name`, the
    /// HTTP routes), never a client's string: label values stay bounded.
    pub fn observe_command(&self, frontend: &'static str, command: &'static str, took: Duration) {
        // Hot path: RESP commands keep their histogram handle once made,
        // so steady traffic takes no lock here.
        if frontend == "resp" {
            if let Some(slot) = self
                .resp_slots
                .get(command)
                .and_then(|&i| self.resp_handles.get(i))
            {
                let h = slot.get_or_init(|| {
                    self.command_seconds
                        .get_or_create_owned(&[("frontend", "resp"), ("command", command)])
                });
                h.observe(took.as_secs_f64());
                return;
            }
        }
        self.command_seconds
            .get_or_create(&[("frontend", frontend), ("command", command)])
            .observe(took.as_secs_f64());
    }

    /// Renders the text exposition, sampling gauges first.
    pub fn render(&self, hub: &Hub, sample: Sample) -> String {
        let set = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(
            &self.connections.get_or_create(&[("frontend", "resp")]),
            sample.resp_connections,
        );
        set(
            &self.connections.get_or_create(&[("frontend", "ws")]),
            sample.ws_connections,
        );
        set(
            &self.subscriptions.get_or_create(&[("frontend", "resp")]),
            sample.resp_subscriptions,
        );
        set(
            &self.subscriptions.get_or_create(&[("frontend", "ws")]),
            sample.ws_subscriptions,
        );
        set(&self.channels, hub.channel_count());
        set(&self.patterns, hub.numpat());
        set(&self.engine_up, usize::from(hub.engine_healthy()));
        set(&self.rss, crate::rss_bytes().unwrap_or(0) as usize);
        let ks = hub.keyspace_stats();
        set(&self.history_bytes, ks.history_bytes);
        set(&self.history_evicted, ks.history_evicted as usize);
        set(&self.keys, ks.keys);
        set(&self.history_max_bytes, hub.history_max_memory());
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
