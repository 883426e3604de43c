//! The HTTP server API for backends: publish, broadcast, channels, presence
//! and history.
//! Authenticated with `X-API-Key`; errors are [`ApiError`]s, rendered as
//! `{"error": {"code", "message"}}`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::auth::constant_time_eq;
use crate::hub::payload::from_json_value;
use crate::hub::{HistoryError, Space, Stats};

/// The peer of a request, as the listener records it.
type Peer = Option<axum::Extension<crate::http::listener::PeerAddr>>;

/// Checks `X-API-Key`. Without a configured key the API is open only when
/// no authentication is configured at all: it publishes anywhere, so
/// `--allow-anonymous` (which opens namespaces to clients without a token)
/// must not open it beside a JWT key or a password. `Ok(true)` when the
/// key was given, `Ok(false)` for an open API.
fn authorize(st: &AppState, peer: &Peer, headers: &HeaderMap) -> Result<bool, ApiError> {
    match &st.cfg.api_key {
        Some(key) => {
            let given = headers.get("x-api-key").map(|v| v.as_bytes());
            check_key(st, peer, headers, given, key)?;
            Ok(true)
        }
        None if !st.cfg.has_auth() => Ok(false),
        None => Err(ApiError::ApiDisabled),
    }
}

/// Compares a given API key with `key`, within the caller's address's
/// budget of failed authentications (`--auth-failure-rate`): past it the
/// key is not compared at all and the answer is 429.
fn check_key(
    st: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    given: Option<&[u8]>,
    key: &str,
) -> Result<(), ApiError> {
    let client = crate::ws::client_of(st, peer.as_deref(), headers);
    // The key is a secret to guess even on a server whose clients need
    // no authentication: its budget applies whenever a key is set.
    let limit = st.cfg.auth_failure_limit;
    let checked = client.authenticate(limit, || {
        if given.is_some_and(|g| constant_time_eq(g, key.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::WrongKey)
        }
    });
    let r = checked.unwrap_or_else(|wait| {
        Err(ApiError::RateLimited {
            what: "failed authentications",
            retry_after: crate::rate::retry_secs(wait),
        })
    });
    if r.is_err() {
        Stats::add(&st.hub.stats().auth_failures, 1);
    }
    r
}

/// Takes one read from the caller's `--read-rate` bucket, for the open
/// API (no key configured, no authentication: `--allow-anonymous` may put
/// it on a public address); callers with the API key are backends, and
/// not limited.
fn take_read(st: &AppState, peer: &Peer, headers: &HeaderMap, keyed: bool) -> Result<(), ApiError> {
    let limit = st.cfg.read_limit;
    if keyed || limit.rate == 0 {
        return Ok(());
    }
    let client = crate::ws::client_of(st, peer.as_deref(), headers);
    if client.take_read(limit) {
        Ok(())
    } else {
        Err(ApiError::RateLimited {
            what: "reads",
            retry_after: crate::rate::retry_secs(std::time::Duration::from_secs(1) / limit.rate),
        })
    }
}

/// `/stats` and `/metrics` count every key, channel and client: once any
/// authentication is configured they need the API key too (as `X-API-Key`
/// or `Authorization: Bearer`, which Prometheus sends), or they would undo
/// what DBSIZE and PUBSUB hide from tokens. Open otherwise.
pub(crate) fn authorize_stats(
    st: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if !st.cfg.has_auth() {
        return Ok(());
    }
    let Some(key) = &st.cfg.api_key else {
        return Err(ApiError::StatsNeedKey);
    };
    let given = headers.get("x-api-key").map(|v| v.as_bytes()).or_else(|| {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    });
    check_key(st, peer, headers, given, key)
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(ApiError::Body)?;
    serde_json::from_slice(&body).map_err(ApiError::InvalidBody)
}

/// The request's JSON body, once the API key checked out.
fn authorized_body<T: for<'de> Deserialize<'de>>(
    st: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    authorize(st, peer, headers)?;
    parse_body(body)
}

fn check_channel(st: &AppState, channel: &str) -> Result<(), ApiError> {
    if channel.is_empty() || channel.len() > st.cfg.max_channel_length {
        return Err(ApiError::ChannelLength {
            max: st.cfg.max_channel_length,
        });
    }
    Ok(())
}

/// `{"receivers", "offset", "epoch"}`; the last two only where the channel
/// keeps history.
fn position_json(p: crate::hub::Published) -> Value {
    match p.position {
        Some(at) => {
            json!({ "receivers": p.receivers, "offset": at.offset, "epoch": at.epoch.to_string() })
        }
        None => json!({ "receivers": p.receivers }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    channel: String,
    data: Value,
}

/// `POST /api/publish {"channel", "data"}` → `{"receivers": n}`.
pub async fn publish(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let b: PublishBody = authorized_body(&st, &peer, &headers, body)?;
    check_channel(&st, &b.channel)?;
    let n = st
        .hub
        .publish_pending(b.channel.into_bytes().into(), from_json_value(&b.data))
        .await;
    st.metrics
        .observe_command("http", "publish", started.elapsed());
    Ok(Json(position_json(n?)).into_response())
}

/// Most payload bytes (and publishes) of one step of a broadcast.
const BROADCAST_STEP_BYTES: usize = 1 << 20;
const BROADCAST_STEP_MAX: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastBody {
    channels: Vec<String>,
    data: Value,
}

/// `POST /api/broadcast {"channels": [...], "data"}` →
/// `{"results": [{"channel", "receivers"}]}`.
pub async fn broadcast(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let b: BroadcastBody = authorized_body(&st, &peer, &headers, body)?;
    if b.channels.is_empty() {
        return Err(ApiError::NoChannels);
    }
    for c in &b.channels {
        check_channel(&st, c)?;
    }
    let payload = from_json_value(&b.data);
    // In steps of at most BROADCAST_STEP_BYTES of payloads: a remote
    // engine gets each step in one round trip, and copies the payload into
    // each publish of a step (all at once, a 100 KB payload to 1,000
    // channels grew the node by 287 MiB; 2 MB bodies hold much worse).
    let per_step = (BROADCAST_STEP_BYTES / payload.len().max(1)).clamp(1, BROADCAST_STEP_MAX);
    let mut done = Vec::with_capacity(b.channels.len());
    for step in b.channels.chunks(per_step) {
        let items = step
            .iter()
            .map(|c| (Bytes::copy_from_slice(c.as_bytes()), payload.clone()))
            .collect();
        done.extend(st.hub.publish_pipelined_pending(items).await);
    }
    let results: Vec<Value> = b
        .channels
        .into_iter()
        .zip(done)
        .map(|(c, n)| {
            let mut v = match n {
                Ok(n) => position_json(n),
                Err(e) => json!({ "error": { "code": 500, "message": e.to_string() } }),
            };
            v["channel"] = json!(c);
            v
        })
        .collect();
    st.metrics
        .observe_command("http", "broadcast", started.elapsed());
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Deserialize)]
pub struct ChannelsQuery {
    pattern: Option<String>,
}

/// `GET /api/channels[?pattern=glob]` →
/// `{"channels": [{"channel", "subscribers"}]}`, sorted by name.
pub async fn channels(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    q: Result<Query<ChannelsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let keyed = authorize(&st, &peer, &headers)?;
    // A survey of every node: open callers pay it from their read budget.
    if !keyed && st.hub.cluster_peers() > 0 {
        let limit = st.cfg.read_limit;
        let client = crate::ws::client_of(&st, peer.as_deref(), &headers);
        if !client.take_survey(limit) {
            return Err(ApiError::RateLimited {
                what: "reads",
                retry_after: crate::rate::retry_secs(
                    std::time::Duration::from_secs(1) * crate::rate::SURVEY_READS
                        / limit.rate.max(1),
                ),
            });
        }
    }
    let Query(q) = q.map_err(ApiError::Query)?;
    // Matching costs pattern length times channel length for every
    // channel: the pattern is bounded as for clients without the password.
    if q.pattern
        .as_ref()
        .is_some_and(|p| p.len() > st.cfg.max_pattern_length)
    {
        return Err(ApiError::PatternLength {
            max: st.cfg.max_pattern_length,
        });
    }
    // Every node's channels (a survey, see docs/engine.md), with their
    // subscribers summed; `cluster` says whether some node did not answer.
    let view = st
        .hub
        .cluster_channels_pending(
            Space::Global,
            q.pattern.as_deref().map(str::as_bytes),
            None,
            true,
        )
        .await;
    let mut counts = view.value.clone();
    counts.sort();
    let list: Vec<Value> = counts
        .iter()
        .map(|(c, n)| {
            json!({
                "channel": String::from_utf8_lossy(c),
                "subscribers": n,
            })
        })
        .collect();
    Ok(Json(json!({ "channels": list, "cluster": view.status_json() })).into_response())
}

/// `GET /api/nodes` → `{"nodes": [{"name", "version", "this",
/// "uptime_seconds", "heartbeat_age_ms", "connections": {"resp", "ws",
/// "http"}, "subscriptions", "channels", "patterns"}], "cluster"}`: the live
/// nodes, this one first. In memory mode, this node alone.
pub async fn nodes(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&st, &peer, &headers)?;
    let view = st.hub.nodes();
    let list: Vec<Value> = view
        .value
        .iter()
        .map(|n| {
            let r = &n.report;
            let age = n.age.as_millis() as u64;
            json!({
                "name": r.name,
                "version": r.version,
                "this": n.this,
                "uptime_seconds": (r.uptime_ms + age) / 1000,
                "heartbeat_age_ms": age,
                "connections": r.connections,
                "subscriptions": r.subscriptions,
                "channels": r.channels,
                "patterns": r.patterns,
            })
        })
        .collect();
    Ok(Json(json!({ "nodes": list, "cluster": view.status_json() })).into_response())
}

/// A read awaiting the engine, given up at shutdown (503, code 500): a
/// paused Redis must not hold the node's exit for the listener's whole
/// grace (5 s), as WebSocket and SSE reads do not.
async fn until_shutdown<T>(
    st: &AppState,
    read: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::select! {
        biased;
        () = st.ws.shutdown.cancelled() => Err(crate::hub::EngineError::Unavailable(
            "server shutting down".to_string(),
        )
        .into()),
        r = read => r,
    }
}

/// `GET /api/presence/{channel}` → `{"clients": [{client, user, info,
/// joined}], "users": [...]}`; 501 where the namespace tracks no presence.
pub async fn presence(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    channel: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let keyed = authorize(&st, &peer, &headers)?;
    take_read(&st, &peer, &headers, keyed)?;
    let Path(channel) = channel.map_err(ApiError::Path)?;
    if !st.cfg.namespace(channel.as_bytes()).presence {
        return Err(ApiError::PresenceNotEnabled);
    }
    let v = until_shutdown(&st, async {
        Ok(crate::ws::protocol::presence_json_awaited(&st.hub, channel.as_bytes()).await?)
    })
    .await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
    since_offset: Option<u64>,
    since_epoch: Option<String>,
    #[serde(default)]
    reverse: bool,
}

/// The bytes of an HTTP answer and what they hold of the output budget,
/// released with the last reference to them (once hyper has written them).
struct HeldBody {
    data: Vec<u8>,
    _hold: crate::hub::outbox::BudgetHold,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// 503 for an answer that does not fit the global output budget.
fn busy() -> Response {
    let mut r = ApiError::Busy.into_response();
    r.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, "1".parse().expect("valid"));
    r
}

/// A history page as JSON, counted in the global output budget
/// (`--output-buffer-global-limit`) until it is written: a large page
/// that does not fit gets 503 (109), as WebSocket clients get 109, so
/// callers that never read cannot hold the server's memory between them.
/// The size is estimated before anything is encoded.
fn history_answer(st: &AppState, entries: &[(u64, Bytes)], top: u64, epoch: u64) -> Response {
    use crate::hub::outbox::BUDGET_STEP;
    let budget = &st.hub.output();
    let estimate = crate::ws::protocol::history_estimate(entries);
    if estimate >= BUDGET_STEP && !budget.fits(estimate) {
        return busy();
    }
    let mut data = Vec::with_capacity(estimate);
    crate::ws::protocol::write_history(&mut data, entries, top, epoch);
    let body = if data.len() < BUDGET_STEP {
        Bytes::from(data)
    } else {
        match budget.hold(data.len()) {
            Some(hold) => Bytes::from_owner(HeldBody { data, _hold: hold }),
            None => return busy(),
        }
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `GET /api/history/{channel}[?limit=&since_offset=&since_epoch=&reverse=true]`
/// → `{"publications": [{"offset", "data"}], "offset", "epoch"}`.
pub async fn history(
    State(st): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    channel: Result<Path<String>, PathRejection>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let keyed = authorize(&st, &peer, &headers)?;
    take_read(&st, &peer, &headers, keyed)?;
    let Path(channel) = channel.map_err(ApiError::Path)?;
    let Query(q) = q.map_err(ApiError::Query)?;
    let since = match (q.since_offset, q.since_epoch) {
        (None, None) => None,
        // An epoch that does not parse is one that is not the history's.
        (Some(o), Some(e)) => match e.parse::<u64>() {
            Ok(e) => Some((o, e)),
            Err(_) => return Err(HistoryError::Unrecoverable.into()),
        },
        _ => return Err(ApiError::HalfPosition),
    };
    let page = until_shutdown(&st, async {
        Ok(st
            .hub
            .history_pending(
                channel.as_bytes(),
                since,
                q.limit.unwrap_or(usize::MAX),
                q.reverse,
            )
            .await?)
    })
    .await?;
    Ok(history_answer(&st, &page.entries, page.top, page.epoch))
}
