//! Configuration: command-line flags, `HERALD_*` environment variables and an
//! optional TOML file, with precedence flag > env > file > default.
//!
//! Every option is one field of [`Options`], which serves both as the clap
//! parser (flags and env) and as the TOML schema (`--config`); the two layers
//! are merged field by field and then resolved into a [`Config`] with every
//! default applied. Unknown TOML keys are an error that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::hub::OutputLimits;

mod proxy;
mod units;
pub use units::{ByteSize, Dur};

/// Options of one namespace (`[namespaces.NAME]`): the text before the first
/// `:` of a channel name selects it; other channels use `default`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "NamespaceFile")]
pub struct NamespaceOptions {
    /// Messages kept per channel; 0 = no history.
    pub history_size: usize,
    /// Age after which kept messages expire (0 = never).
    pub history_ttl: Dur,
    /// Track who is subscribed.
    pub presence: bool,
    /// Push join/leave events to subscribers.
    pub join_leave: bool,
    /// Clients may publish here (their token's `publish` claim still decides).
    pub allow_publish: bool,
    /// Clients without a token may subscribe here. Defaults to true only
    /// when no authentication is configured (see [`Options::resolve`]).
    pub allow_anonymous: bool,
    /// Subscribes that neither the token's `subscribe` claim nor the
    /// identity's own rules decide are asked of the app's backend
    /// (`--proxy-subscribe-url`); see `Identity::subscribe_rule`.
    pub subscribe_proxy: bool,
    /// Publishes of clients without the password that Herald's own rules
    /// allow are sent to the app's backend (`--proxy-publish-url`), which
    /// refuses them or may replace their data.
    pub publish_proxy: bool,
    /// Whether the file set `allow_anonymous` itself; if not, resolving
    /// decides it from whether any authentication is configured.
    pub(crate) allow_anonymous_set: bool,
}

/// The TOML form of [`NamespaceOptions`]: `allow_anonymous` may be absent,
/// and its default depends on the rest of the configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NamespaceFile {
    history_size: usize,
    history_ttl: Dur,
    presence: bool,
    join_leave: bool,
    allow_publish: bool,
    allow_anonymous: Option<bool>,
    subscribe_proxy: bool,
    publish_proxy: bool,
}

impl Default for NamespaceFile {
    fn default() -> Self {
        let d = NamespaceOptions::default();
        NamespaceFile {
            history_size: d.history_size,
            history_ttl: d.history_ttl,
            presence: d.presence,
            join_leave: d.join_leave,
            allow_publish: d.allow_publish,
            allow_anonymous: None,
            subscribe_proxy: d.subscribe_proxy,
            publish_proxy: d.publish_proxy,
        }
    }
}

impl From<NamespaceFile> for NamespaceOptions {
    fn from(f: NamespaceFile) -> Self {
        NamespaceOptions {
            history_size: f.history_size,
            history_ttl: f.history_ttl,
            presence: f.presence,
            join_leave: f.join_leave,
            allow_publish: f.allow_publish,
            allow_anonymous: f.allow_anonymous.unwrap_or(true),
            allow_anonymous_set: f.allow_anonymous.is_some(),
            subscribe_proxy: f.subscribe_proxy,
            publish_proxy: f.publish_proxy,
        }
    }
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            history_size: 0,
            history_ttl: Dur::default(),
            presence: false,
            join_leave: false,
            allow_publish: true,
            allow_anonymous: true,
            allow_anonymous_set: false,
            subscribe_proxy: false,
            publish_proxy: false,
        }
    }
}

/// Every option, as a flag, an env variable and a TOML key (`snake_case`).
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "herald",
    args_override_self = true,
    version,
    about = "Herald: a pub/sub real-time notification hub (RESP, WebSocket, HTTP)",
    long_about = "Herald: a pub/sub real-time notification hub.\n\n\
        Redis clients publish and subscribe over RESP, browsers over WebSocket, \
        backends over HTTP, all on one channel registry.\n\n\
        Each option is a flag, an environment variable HERALD_<NAME> and a key \
        of the TOML file given with --config (snake_case); precedence is \
        flag > env > file > default. Sizes accept b/kb/mb/gb suffixes, durations \
        ms/s/m/h."
)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// TOML configuration file (options and [namespaces.NAME] tables).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the RESP (Redis protocol) listener. Port 0 picks a free port.
    /// [default: 127.0.0.1:6380]
    #[arg(long, env = "HERALD_RESP_ADDR", value_name = "ADDR")]
    pub resp_addr: Option<SocketAddr>,

    /// Address of the HTTP listener (WebSocket /ws, API /api/, /metrics,
    /// /healthz, demo page /). [default: 127.0.0.1:8080]
    #[arg(long, env = "HERALD_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Password for RESP clients, as Redis's requirepass (full access).
    #[arg(long, env = "HERALD_REQUIREPASS", value_name = "PASSWORD")]
    pub requirepass: Option<String>,

    /// HMAC secret for HS256 JWTs.
    #[arg(long, env = "HERALD_JWT_HMAC_SECRET", value_name = "SECRET")]
    pub jwt_hmac_secret: Option<String>,

    /// PEM public key file for RS256 or ES256 JWTs (the key fixes the algorithm).
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY_FILE", value_name = "FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Leeway for JWT exp/nbf checks. [default: 0s]
    #[arg(long, env = "HERALD_JWT_LEEWAY", value_name = "DURATION")]
    pub jwt_leeway: Option<Dur>,

    /// API key for the HTTP server API (X-API-Key header).
    #[arg(long, env = "HERALD_API_KEY", value_name = "KEY")]
    pub api_key: Option<String>,

    /// Allow anonymous clients even on non-loopback listeners.
    #[arg(long, env = "HERALD_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,

    /// Origins allowed to open WebSocket connections (comma-separated; empty
    /// allows same-host and non-browser clients only).
    #[arg(
        long,
        env = "HERALD_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub allowed_origins: Option<Vec<String>>,

    /// Maximum simultaneous connections per front end. [default: 10000]
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Maximum RESP bulk string length. [default: 64mb]
    #[arg(long, env = "HERALD_MAX_BULK_LEN", value_name = "SIZE")]
    pub max_bulk_len: Option<ByteSize>,

    /// Maximum unparsed input buffered per RESP connection. [default: 128mb]
    #[arg(long, env = "HERALD_MAX_QUERY_BUFFER", value_name = "SIZE")]
    pub max_query_buffer: Option<ByteSize>,

    /// Maximum subscriptions (channels + patterns) per connection. [default: 100000]
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Maximum length of a channel name or pattern. [default: 64kb]
    #[arg(long, env = "HERALD_MAX_CHANNEL_LENGTH", value_name = "SIZE")]
    pub max_channel_length: Option<ByteSize>,

    /// Maximum subscriptions (channels + patterns) per anonymous connection
    /// (no token, where a namespace allows anonymous access). [default: 1000]
    #[arg(long, env = "HERALD_ANONYMOUS_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub anonymous_max_subscriptions: Option<usize>,

    /// Maximum pattern length for clients without the password (WebSocket,
    /// JWT and anonymous RESP clients). [default: 1kb]
    #[arg(long, env = "HERALD_MAX_PATTERN_LENGTH", value_name = "SIZE")]
    pub max_pattern_length: Option<ByteSize>,

    /// Patterns that clients without the password (WebSocket, JWT and
    /// anonymous RESP clients) may hold, all connections together; past it
    /// PSUBSCRIBE is refused (RESP `-ERR`, WebSocket error 106). Each is
    /// tried on every publish its literal prefix fits (0 = unlimited).
    /// [default: 1000]
    #[arg(long, env = "HERALD_MAX_UNTRUSTED_PATTERNS", value_name = "N")]
    pub max_untrusted_patterns: Option<usize>,

    /// The share of `--max-untrusted-patterns` one client address (an
    /// IPv4 address or an IPv6 /64) may hold, all its connections
    /// together (0 = no share). [default: 100]
    #[arg(
        long,
        env = "HERALD_MAX_UNTRUSTED_PATTERNS_PER_CLIENT",
        value_name = "N"
    )]
    pub max_untrusted_patterns_per_client: Option<u32>,

    /// Pending output past which a subscriber is cut off at once. [default: 32mb]
    #[arg(long, env = "HERALD_OUTPUT_BUFFER_HARD_LIMIT", value_name = "SIZE")]
    pub output_buffer_hard_limit: Option<ByteSize>,

    /// Pending output that cuts a subscriber off when sustained. [default: 8mb]
    #[arg(long, env = "HERALD_OUTPUT_BUFFER_SOFT_LIMIT", value_name = "SIZE")]
    pub output_buffer_soft_limit: Option<ByteSize>,

    /// How long the soft limit may be exceeded. [default: 60s]
    #[arg(
        long,
        env = "HERALD_OUTPUT_BUFFER_SOFT_SECONDS",
        value_name = "DURATION"
    )]
    pub output_buffer_soft_seconds: Option<Dur>,

    /// Interval between server pings on WebSocket connections. [default: 25s]
    #[arg(long, env = "HERALD_WS_PING_INTERVAL", value_name = "DURATION")]
    pub ws_ping_interval: Option<Dur>,

    /// Close a WebSocket connection whose pong is this late. [default: 10s]
    #[arg(long, env = "HERALD_WS_PONG_TIMEOUT", value_name = "DURATION")]
    pub ws_pong_timeout: Option<Dur>,

    /// Largest WebSocket message accepted. [default: 1mb]
    #[arg(long, env = "HERALD_WS_MAX_MESSAGE_SIZE", value_name = "SIZE")]
    pub ws_max_message_size: Option<ByteSize>,

    /// Publishes clients without the password (WebSocket and SSE
    /// sessions, RESP clients with a JWT or anonymous) may make per
    /// second, per client address (all its connections together; at most
    /// as many at once; 0 = unlimited). [default: 100]
    #[arg(long, env = "HERALD_WS_PUBLISH_RATE", value_name = "N")]
    pub ws_publish_rate: Option<u32>,

    /// Subscriptions clients without the password (JWT or anonymous,
    /// RESP, WebSocket or SSE) may add per second per client address (all
    /// its connections together), each channel or pattern counting one;
    /// leaving is never limited. Past it a subscribe is refused (RESP
    /// `-ERR`, WebSocket error 107). 0 = unlimited. [default: 100]
    #[arg(long, env = "HERALD_SUBSCRIBE_RATE", value_name = "N")]
    pub subscribe_rate: Option<u32>,

    /// Subscriptions such a client may add at once before
    /// `--subscribe-rate` applies (a reconnecting client resubscribing to
    /// everything it held). [default: 1000]
    #[arg(long, env = "HERALD_SUBSCRIBE_BURST", value_name = "N")]
    pub subscribe_burst: Option<u32>,

    /// Calls of the connect hook (`GET /sse`, or a WebSocket `connect`,
    /// without a token) one client address may cause per second; past it
    /// SSE gets 429 with Retry-After, WebSocket error 107 then 3007.
    /// 0 = unlimited. [default: 10]
    #[arg(long, env = "HERALD_PROXY_CONNECT_RATE", value_name = "N")]
    pub proxy_connect_rate: Option<u32>,

    /// Connect hook calls one client address may cause at once before
    /// `--proxy-connect-rate` applies. [default: 100]
    #[arg(long, env = "HERALD_PROXY_CONNECT_BURST", value_name = "N")]
    pub proxy_connect_burst: Option<u32>,

    /// Connections one client address may have open at once (WebSocket,
    /// SSE, RESP without the password), once authentication is configured;
    /// past it 429 (code 106), RESP `-ERR max number of clients reached`.
    /// Password clients and trusted proxies' RESP peers are not counted.
    /// 0 = unlimited. [default: 1000 with `--trusted-proxies`, else 0]
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub max_connections_per_client: Option<u32>,

    /// Reverse proxies (IP addresses or CIDR networks, comma-separated)
    /// whose `X-Forwarded-For` names the client of an HTTP request: its
    /// last address that is not one of them. Without them every client
    /// behind a proxy shares the proxy's address and its limits. [default:
    /// none]
    #[arg(
        long,
        env = "HERALD_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub trusted_proxies: Option<Vec<String>>,

    /// Failed authentications (a wrong password or API key, a refused
    /// JWT) one client address may make per second, over RESP, WebSocket,
    /// SSE and the HTTP API together. Past its burst an attempt is refused
    /// at once, unchecked (RESP `-ERR`, WebSocket 107 then 3007, HTTP
    /// 429); a successful one costs nothing. 0 = unlimited. [default: 1]
    #[arg(long, env = "HERALD_AUTH_FAILURE_RATE", value_name = "N")]
    pub auth_failure_rate: Option<u32>,

    /// Failed authentications one client address may make at once before
    /// `--auth-failure-rate` applies. [default: 10]
    #[arg(long, env = "HERALD_AUTH_FAILURE_BURST", value_name = "N")]
    pub auth_failure_burst: Option<u32>,

    /// Reads (`history`, `presence`, `presence_stats`, `ping` and
    /// `refresh` of WebSocket and SSE sessions; `/api/history` and
    /// `/api/presence` without an API key) one client address may make
    /// per second; past it WebSocket error 107, HTTP 429. 0 = unlimited.
    /// [default: 100]
    #[arg(long, env = "HERALD_READ_RATE", value_name = "N")]
    pub read_rate: Option<u32>,

    /// Reads one client address may make at once before `--read-rate`
    /// applies. [default: 200]
    #[arg(long, env = "HERALD_READ_BURST", value_name = "N")]
    pub read_burst: Option<u32>,

    /// The share of `--output-buffer-global-limit` one client address's
    /// connections may hold together (password RESP clients count only in
    /// the global limit). Past it the address's large WebSocket replies
    /// get 109, and a delivery or RESP reply that does not fit closes its
    /// connection. 0 = no share. [default: a quarter of the global limit,
    /// at least --output-buffer-hard-limit]
    #[arg(long, env = "HERALD_OUTPUT_BUFFER_CLIENT_LIMIT", value_name = "SIZE")]
    pub output_buffer_client_limit: Option<ByteSize>,

    /// Global cap on history memory; past it the oldest history entries
    /// across all channels are evicted first. [default: 256mb]
    #[arg(long, env = "HERALD_HISTORY_MAX_MEMORY", value_name = "SIZE")]
    pub history_max_memory: Option<ByteSize>,

    /// Most missed messages a subscribe may recover; a larger gap answers
    /// recovered: false. [default: 100000]
    #[arg(long, env = "HERALD_RECOVERY_MAX_MESSAGES", value_name = "N")]
    pub recovery_max_messages: Option<usize>,

    /// How often changed leaderboards are pushed (coalescing interval).
    /// [default: 100ms]
    #[arg(long, env = "HERALD_LEADERBOARD_INTERVAL", value_name = "DURATION")]
    pub leaderboard_interval: Option<Dur>,

    /// Entries published on __leaderboard__:K for RESP subscribers. [default: 10]
    #[arg(long, env = "HERALD_LEADERBOARD_RESP_TOP", value_name = "N")]
    pub leaderboard_resp_top: Option<usize>,

    /// Log filter (tracing syntax, e.g. info or herald=debug). [default: info]
    #[arg(long, env = "HERALD_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Namespaces (TOML only): [namespaces.NAME] tables.
    #[arg(skip)]
    pub namespaces: Option<BTreeMap<String, NamespaceOptions>>,

    /// Output pending across all connections (RESP and WebSocket) and HTTP
    /// history answers. Past it, WebSocket requests with large replies
    /// (history, presence, recovery, leaderboards) are refused with error
    /// 109, a RESP reply closes its connection as the hard limit does, and
    /// /api/history answers 503 (0 = no limit). [default: 512mb]
    #[arg(long, env = "HERALD_OUTPUT_BUFFER_GLOBAL_LIMIT", value_name = "SIZE")]
    pub output_buffer_global_limit: Option<ByteSize>,
    /// Where publications, history and presence live: `memory` (this
    /// process), or Redis to run several nodes as one hub:
    /// `redis://[user:password@]host:port[/db]`,
    /// `redis+sentinel://[password@]host:port[,host:port…]/MASTER_NAME` or
    /// `redis+cluster://[password@]host:port[,host:port…]`; `rediss://`,
    /// `rediss+sentinel://`, `rediss+cluster://` speak TLS. [default: memory]
    #[arg(long, env = "HERALD_ENGINE", value_name = "URL")]
    pub engine: Option<String>,
    /// PEM CA certificate(s) the engine's Redis must present a certificate
    /// of (TLS URLs only). [default: the system's roots]
    #[arg(long, env = "HERALD_ENGINE_TLS_CA", value_name = "FILE")]
    pub engine_tls_ca: Option<PathBuf>,
    /// PEM client certificate for TLS to Redis (`tls-auth-clients`), with
    /// --engine-tls-key.
    #[arg(long, env = "HERALD_ENGINE_TLS_CERT", value_name = "FILE")]
    pub engine_tls_cert: Option<PathBuf>,
    /// PEM private key of --engine-tls-cert.
    #[arg(long, env = "HERALD_ENGINE_TLS_KEY", value_name = "FILE")]
    pub engine_tls_key: Option<PathBuf>,
    /// This node's name in the engine (presence entries are keyed by it).
    /// [default: host name plus a random suffix]
    #[arg(long, env = "HERALD_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Prefix of Herald's keys and channels in the engine's Redis (no glob
    /// characters, no braces). [default: herald]
    #[arg(long, env = "HERALD_ENGINE_PREFIX", value_name = "PREFIX")]
    pub engine_prefix: Option<String>,
    /// How long a node's presence entries live in the engine without a
    /// refresh (a node that dies leaves within it). [default: 60s]
    #[arg(long, env = "HERALD_PRESENCE_TTL", value_name = "DURATION")]
    pub presence_ttl: Option<Dur>,
    /// Connections of their own to the engine's Redis that blocking
    /// commands (BLPOP, XREAD BLOCK, …) and WATCH/MULTI may hold at once;
    /// past it such a command is answered an error at once. [default: 256]
    #[arg(long, env = "HERALD_ENGINE_DEDICATED_CONNECTIONS", value_name = "N")]
    pub engine_dedicated_connections: Option<usize>,
    /// Close RESP connections that have not authenticated this long after
    /// connecting (when a password or JWT key is configured; an anonymous
    /// client holding subscriptions a namespace allows stays; 0 = never).
    /// [default: 10s]
    #[arg(long, env = "HERALD_AUTH_TIMEOUT", value_name = "DURATION")]
    pub auth_timeout: Option<Dur>,
    /// Maximum TCP connections on the HTTP listener, upgraded WebSockets
    /// included; at the cap the longest-idle connection is closed to make
    /// room, else the newcomer gets 503. [default: max_connections + 1024]
    #[arg(long, env = "HERALD_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,

    /// Time a client has to send a complete request head (at most 30s);
    /// also how long an idle keep-alive connection waits for its next
    /// request. [default: 10s]
    #[arg(long, env = "HERALD_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    pub http_header_timeout: Option<Dur>,

    /// Time a client has to send a request body once its head arrived (at
    /// most 60s); slower requests get 408 and are closed. [default: 10s]
    #[arg(long, env = "HERALD_HTTP_BODY_TIMEOUT", value_name = "DURATION")]
    pub http_body_timeout: Option<Dur>,

    /// Largest HTTP request body (the server API's JSON); a larger
    /// Content-Length is refused with 413 before any of it is read.
    /// [default: 2mb]
    // 2mb: axum's own limit, which applied before this was an option.
    #[arg(long, env = "HERALD_HTTP_MAX_BODY_SIZE", value_name = "SIZE")]
    pub http_max_body_size: Option<ByteSize>,

    /// Once listening, write the bound addresses and the process id as one
    /// JSON object to this file (written whole, then renamed into place),
    /// for tools and tests that start Herald on port 0.
    #[arg(long, env = "HERALD_READY_FILE", value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// The app's connect hook: a WebSocket `connect` without a token is
    /// POSTed here as JSON (the upgrade's Cookie, Authorization and Origin
    /// headers, the client's `data`); the answer accepts it as a user,
    /// refuses it or disconnects it (docs/protocol.md). Setting it counts
    /// as configuring authentication. http:// only.
    #[arg(long, env = "HERALD_PROXY_CONNECT_URL", value_name = "URL")]
    pub proxy_connect_url: Option<String>,

    /// The app's subscribe hook, for namespaces with `subscribe_proxy =
    /// true`: subscribes the token and the namespace do not decide are
    /// POSTed here, and the answer allows or refuses them. http:// only.
    #[arg(long, env = "HERALD_PROXY_SUBSCRIBE_URL", value_name = "URL")]
    pub proxy_subscribe_url: Option<String>,

    /// The app's publish hook, for namespaces with `publish_proxy = true`:
    /// WebSocket publishes are POSTed here, and the answer allows them
    /// (optionally replacing their data) or refuses them. http:// only.
    #[arg(long, env = "HERALD_PROXY_PUBLISH_URL", value_name = "URL")]
    pub proxy_publish_url: Option<String>,

    /// How long a hook call may take (waiting for a free connection, the
    /// request and the whole answer); past it the call is refused with
    /// error 112. [default: 1s]
    #[arg(long, env = "HERALD_PROXY_TIMEOUT", value_name = "DURATION")]
    pub proxy_timeout: Option<Dur>,
}

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The resolved configuration, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub requirepass: Option<String>,
    pub jwt_hmac_secret: Option<String>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub jwt_leeway: Duration,
    pub api_key: Option<String>,
    pub allow_anonymous: bool,
    pub allowed_origins: Vec<String>,
    pub max_connections: usize,
    pub max_bulk_len: usize,
    pub max_query_buffer: usize,
    pub max_subscriptions: usize,
    pub max_channel_length: usize,
    pub anonymous_max_subscriptions: usize,
    pub max_pattern_length: usize,
    pub max_untrusted_patterns: usize,
    /// `--max-untrusted-patterns-per-client` (0: no share).
    pub max_untrusted_patterns_per_client: u32,
    pub output_limits: OutputLimits,
    pub ws_ping_interval: Duration,
    pub ws_pong_timeout: Duration,
    pub ws_max_message_size: usize,
    pub ws_publish_rate: u32,
    /// Subscriptions per second (and at once) for clients without the
    /// password (`--subscribe-rate`, `--subscribe-burst`).
    pub subscribe_limit: crate::rate::RateLimit,
    /// Connect hook calls per client address (`--proxy-connect-rate`,
    /// `--proxy-connect-burst`).
    pub proxy_connect_limit: crate::rate::RateLimit,
    /// `--max-connections-per-client` (0: no limit).
    pub max_connections_per_client: u32,
    /// `--trusted-proxies`.
    pub trusted_proxies: Vec<crate::rate::Cidr>,
    /// Failed authentications per client address (`--auth-failure-rate`,
    /// `--auth-failure-burst`).
    pub auth_failure_limit: crate::rate::RateLimit,
    /// Reads per client address (`--read-rate`, `--read-burst`).
    pub read_limit: crate::rate::RateLimit,
    /// One address's share of the global output budget (0: none).
    pub output_buffer_client_limit: usize,
    pub history_max_memory: usize,
    pub recovery_max_messages: usize,
    pub leaderboard_interval: Duration,
    pub leaderboard_resp_top: usize,
    pub log: String,
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    /// The options of channels outside every configured namespace:
    /// `[namespaces.default]`, or the defaults.
    default_namespace: NamespaceOptions,
    /// Output pending across all connections and HTTP answers past which
    /// large replies are refused (0: no limit).
    pub output_buffer_global_limit: usize,
    /// Time a RESP client has to authenticate (zero: unlimited).
    pub auth_timeout: Duration,
    /// `memory`, or a Redis URL.
    pub engine: String,
    pub engine_tls_ca: Option<PathBuf>,
    pub engine_tls_cert: Option<PathBuf>,
    pub engine_tls_key: Option<PathBuf>,
    pub node_name: String,
    pub engine_prefix: String,
    pub presence_ttl: Duration,
    /// Dedicated engine connections (blocking commands, WATCH/MULTI).
    pub engine_dedicated_connections: usize,
    pub http_max_connections: usize,
    pub http_header_timeout: Duration,
    pub http_body_timeout: Duration,
    pub http_max_body_size: usize,
    pub ready_file: Option<PathBuf>,
    /// The app's hooks (`--proxy-*-url`), checked to be http:// URLs.
    pub proxy_connect_url: Option<String>,
    pub proxy_subscribe_url: Option<String>,
    pub proxy_publish_url: Option<String>,
    pub proxy_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Options::default()
            .resolve()
            .expect("the embedded defaults are valid")
    }
}

impl Config {
    /// Parses flags and env from the process, reads `--config` if given.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_options(Options::parse())
    }

    /// Merges `cli` (flags and env) over the file it names, then resolves.
    pub fn from_options(cli: Options) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => Self::read_file(path)?,
            None => Options::default(),
        };
        cli.merge_over(file).resolve()
    }

    fn read_file(path: &PathBuf) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    /// What the hub needs of this configuration: the channel rules of
    /// each namespace and the history memory cap.
    pub fn hub_config(self: &Arc<Self>) -> crate::hub::HubConfig {
        let cfg = self.clone();
        crate::hub::HubConfig {
            history_max_memory: self.history_max_memory,
            output_buffer_global_limit: self.output_buffer_global_limit,
            output_buffer_client_limit: self.output_buffer_client_limit,
            max_untrusted_patterns: self.max_untrusted_patterns,
            // Room for every connection the server admits, and more.
            client_addresses: self
                .max_connections
                .saturating_mul(2)
                .saturating_add(self.http_max_connections),
            rules: Arc::new(move |channel| {
                let ns = cfg.namespace(channel);
                crate::hub::ChannelRules {
                    history: (ns.history_size > 0).then_some(crate::hub::engine::HistoryOptions {
                        size: ns.history_size as u64,
                        ttl_ms: ns.history_ttl.0.as_millis() as u64,
                    }),
                    presence: ns.presence,
                    join_leave: ns.join_leave,
                }
            }),
        }
    }

    /// The options of the namespace of `channel` (text before the first `:`).
    pub fn namespace(&self, channel: &[u8]) -> &NamespaceOptions {
        let name = channel
            .iter()
            .position(|b| *b == b':')
            .and_then(|i| std::str::from_utf8(&channel[..i]).ok());
        name.and_then(|n| self.namespaces.get(n))
            .unwrap_or(&self.default_namespace)
    }

    /// The options of every namespace a pattern can reach: the one its
    /// literal prefix names, or all of them when the prefix has no `:`.
    pub fn namespaces_for_pattern(&self, pattern: &[u8]) -> Vec<&NamespaceOptions> {
        let glob = crate::hub::glob::Glob::new(pattern);
        let prefix = glob.literal_prefix();
        if prefix.contains(&b':') {
            return vec![self.namespace(prefix)];
        }
        let mut all: Vec<&NamespaceOptions> = self.namespaces.values().collect();
        all.push(self.namespace(b""));
        all
    }

    /// True when some authentication is configured. The connect hook is
    /// one: clients without a token are who the app says, or anonymous.
    pub fn has_auth(&self) -> bool {
        self.requirepass.is_some()
            || self.jwt_hmac_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.proxy_connect_url.is_some()
    }

    /// The budget of failed authentications per client address: none on
    /// an open server, which has no secret to guess.
    pub fn auth_budget(&self) -> crate::rate::RateLimit {
        match self.has_auth() {
            true => self.auth_failure_limit,
            false => crate::rate::RateLimit { rate: 0, burst: 0 },
        }
    }
}

macro_rules! merge_fields {
    ($hi:ident, $lo:ident, $($f:ident),*) => {
        Options { $($f: $hi.$f.or($lo.$f)),* }
    };
}

impl Options {
    /// `self` where set, else `lower`.
    pub fn merge_over(self, lower: Options) -> Options {
        let hi = self;
        let lo = lower;
        merge_fields!(
            hi,
            lo,
            config,
            resp_addr,
            http_addr,
            requirepass,
            jwt_hmac_secret,
            jwt_public_key_file,
            jwt_leeway,
            api_key,
            allow_anonymous,
            allowed_origins,
            max_connections,
            max_bulk_len,
            max_query_buffer,
            max_subscriptions,
            max_channel_length,
            anonymous_max_subscriptions,
            max_pattern_length,
            max_untrusted_patterns,
            max_untrusted_patterns_per_client,
            output_buffer_hard_limit,
            output_buffer_soft_limit,
            output_buffer_soft_seconds,
            ws_ping_interval,
            ws_pong_timeout,
            ws_max_message_size,
            ws_publish_rate,
            subscribe_rate,
            subscribe_burst,
            proxy_connect_rate,
            proxy_connect_burst,
            max_connections_per_client,
            trusted_proxies,
            auth_failure_rate,
            auth_failure_burst,
            read_rate,
            read_burst,
            output_buffer_client_limit,
            history_max_memory,
            recovery_max_messages,
            leaderboard_interval,
            leaderboard_resp_top,
            log,
            namespaces,
            output_buffer_global_limit,
            auth_timeout,
            http_max_connections,
            http_header_timeout,
            http_body_timeout,
            http_max_body_size,
            ready_file,
            proxy_connect_url,
            proxy_subscribe_url,
            proxy_publish_url,
            proxy_timeout,
            engine,
            engine_tls_ca,
            engine_tls_cert,
            engine_tls_key,
            node_name,
            engine_prefix,
            presence_ttl,
            engine_dedicated_connections
        )
    }

    /// Applies defaults and checks values.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let size = |v: Option<ByteSize>, d: u64| -> Result<usize, ConfigError> {
            usize::try_from(v.map_or(d, |b| b.0))
                .map_err(|_| ConfigError::Invalid("size too large for this machine".into()))
        };
        let empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let max_connections = self.max_connections.unwrap_or(10_000);
        let trusted_proxies: Vec<crate::rate::Cidr> = self
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| ConfigError::Invalid(format!("trusted_proxies: {e}")))?;
        let output_buffer_global_limit = size(self.output_buffer_global_limit, 512 << 20)?;
        let hard_bytes = size(self.output_buffer_hard_limit, 32 << 20)?;
        let mut cfg = Config {
            resp_addr: self
                .resp_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6380))),
            http_addr: self
                .http_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            requirepass: empty(self.requirepass),
            jwt_hmac_secret: empty(self.jwt_hmac_secret),
            jwt_public_key_file: self.jwt_public_key_file,
            jwt_leeway: self.jwt_leeway.unwrap_or_default().0,
            api_key: empty(self.api_key),
            allow_anonymous: self.allow_anonymous.unwrap_or(false),
            allowed_origins: self.allowed_origins.unwrap_or_default(),
            max_connections,
            max_bulk_len: size(self.max_bulk_len, 64 << 20)?,
            max_query_buffer: size(self.max_query_buffer, 128 << 20)?,
            max_subscriptions: self.max_subscriptions.unwrap_or(100_000),
            max_channel_length: size(self.max_channel_length, 64 << 10)?,
            anonymous_max_subscriptions: self.anonymous_max_subscriptions.unwrap_or(1000),
            max_pattern_length: size(self.max_pattern_length, 1 << 10)?,
            max_untrusted_patterns: self.max_untrusted_patterns.unwrap_or(1000),
            max_untrusted_patterns_per_client: self
                .max_untrusted_patterns_per_client
                .unwrap_or(100),
            output_limits: OutputLimits {
                hard_bytes,
                soft_bytes: size(self.output_buffer_soft_limit, 8 << 20)?,
                soft_duration: self
                    .output_buffer_soft_seconds
                    .map_or(Duration::from_secs(60), |d| d.0),
            },
            ws_ping_interval: self
                .ws_ping_interval
                .map_or(Duration::from_secs(25), |d| d.0),
            ws_pong_timeout: self
                .ws_pong_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            ws_max_message_size: size(self.ws_max_message_size, 1 << 20)?,
            ws_publish_rate: self.ws_publish_rate.unwrap_or(100),
            subscribe_limit: crate::rate::RateLimit {
                rate: self.subscribe_rate.unwrap_or(100),
                burst: self.subscribe_burst.unwrap_or(1000),
            },
            proxy_connect_limit: crate::rate::RateLimit {
                rate: self.proxy_connect_rate.unwrap_or(10),
                burst: self.proxy_connect_burst.unwrap_or(100),
            },
            // Only where addresses are the clients' own (see
            // docs/security.md): without `--trusted-proxies`, every client
            // behind a reverse proxy shares one address.
            max_connections_per_client: self
                .max_connections_per_client
                .unwrap_or(if trusted_proxies.is_empty() { 0 } else { 1000 }),
            trusted_proxies,
            auth_failure_limit: crate::rate::RateLimit {
                rate: self.auth_failure_rate.unwrap_or(1),
                burst: self.auth_failure_burst.unwrap_or(10),
            },
            read_limit: crate::rate::RateLimit {
                rate: self.read_rate.unwrap_or(100),
                burst: self.read_burst.unwrap_or(200),
            },
            output_buffer_client_limit: match self.output_buffer_client_limit {
                Some(b) => size(Some(b), 0)?,
                // A quarter, but room for one connection's own hard limit:
                // a client alone on an idle server gets its reply.
                None if output_buffer_global_limit == 0 => 0,
                None => (output_buffer_global_limit / 4)
                    .max(hard_bytes)
                    .min(output_buffer_global_limit),
            },
            history_max_memory: size(self.history_max_memory, 256 << 20)?,
            recovery_max_messages: self.recovery_max_messages.unwrap_or(100_000),
            leaderboard_interval: self
                .leaderboard_interval
                .map_or(Duration::from_millis(100), |d| d.0),
            leaderboard_resp_top: self.leaderboard_resp_top.unwrap_or(10),
            log: self.log.unwrap_or_else(|| "info".into()),
            namespaces: self.namespaces.unwrap_or_default(),
            default_namespace: NamespaceOptions::default(),
            output_buffer_global_limit,
            auth_timeout: self.auth_timeout.map_or(Duration::from_secs(10), |d| d.0),
            engine: self.engine.unwrap_or_else(|| "memory".into()),
            engine_tls_ca: self.engine_tls_ca,
            engine_tls_cert: self.engine_tls_cert,
            engine_tls_key: self.engine_tls_key,
            node_name: self.node_name.unwrap_or_else(default_node_name),
            engine_prefix: self.engine_prefix.unwrap_or_else(|| "herald".into()),
            presence_ttl: self.presence_ttl.map_or(Duration::from_secs(60), |d| d.0),
            engine_dedicated_connections: self.engine_dedicated_connections.unwrap_or(256),
            // Room for API calls and health checks beside a full house of
            // WebSockets (`max_connections` caps those on their own).
            http_max_connections: self
                .http_max_connections
                .unwrap_or_else(|| max_connections.saturating_add(1024)),
            http_header_timeout: self
                .http_header_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            http_body_timeout: self
                .http_body_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            http_max_body_size: size(self.http_max_body_size, 2 << 20)?,
            ready_file: self.ready_file,
            proxy_connect_url: empty(self.proxy_connect_url),
            proxy_subscribe_url: empty(self.proxy_subscribe_url),
            proxy_publish_url: empty(self.proxy_publish_url),
            proxy_timeout: self.proxy_timeout.map_or(Duration::from_secs(1), |d| d.0),
        };
        // Once any authentication is configured, clients without a valid
        // token get nothing, except where a namespace opens itself with an
        // explicit `allow_anonymous = true`.
        let anonymous_default = !cfg.has_auth();
        for ns in cfg.namespaces.values_mut() {
            if !ns.allow_anonymous_set {
                ns.allow_anonymous = anonymous_default;
            }
        }
        cfg.default_namespace =
            cfg.namespaces
                .get("default")
                .cloned()
                .unwrap_or_else(|| NamespaceOptions {
                    allow_anonymous: anonymous_default,
                    ..NamespaceOptions::default()
                });
        if cfg.max_query_buffer < cfg.max_bulk_len {
            return Err(ConfigError::Invalid(
                "max_query_buffer must be at least max_bulk_len".into(),
            ));
        }
        if cfg.ws_ping_interval.is_zero() || cfg.ws_pong_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ws_ping_interval and ws_pong_timeout must be above zero".into(),
            ));
        }
        if cfg.leaderboard_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "leaderboard_interval must be above zero".into(),
            ));
        }
        if cfg.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be at least 1".into(),
            ));
        }
        if cfg.http_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "http_max_connections must be at least 1".into(),
            ));
        }
        // A longer head timeout is what slowloris needs: the cap keeps one
        // client from holding a connection slot for minutes.
        if cfg.http_header_timeout.is_zero() || cfg.http_header_timeout > Duration::from_secs(30) {
            return Err(ConfigError::Invalid(
                "http_header_timeout must be above zero and at most 30s".into(),
            ));
        }
        if cfg.http_body_timeout.is_zero() || cfg.http_body_timeout > Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "http_body_timeout must be above zero and at most 60s".into(),
            ));
        }
        cfg.check_proxies()?;
        Ok(cfg)
    }
}

/// The host name plus a random suffix: unique per process.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "herald".into());
    let r = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id())
    };
    format!("{host}-{:06x}", r & 0xff_ffff)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
