//! The HTTP server API for backends: publish, broadcast, channels, presence
//! and history.
//! Authenticated with `X-API-Key`; errors are `{"error": {"code", "message"}}`.

// Handlers return `Result<_, Response>`, axum's idiom for early error
// replies; the size of `Response` is axum's.
#![allow(clippy::result_large_err)]

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{api_error, AppState};
use crate::auth::constant_time_eq;
use crate::hub::payload::from_json_value;
use crate::hub::{HistoryError, Space, Stats};

/// Checks `X-API-Key`. Without a configured key the API is open only when
/// no authentication is configured at all: it publishes anywhere, so
/// `--allow-anonymous` (which opens namespaces to clients without a token)
/// must not open it beside a JWT key or a password.
fn authorize(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    match &st.cfg.api_key {
        Some(key) => {
            let given = headers.get("x-api-key").map(|v| v.as_bytes());
            if given.is_some_and(|g| constant_time_eq(g, key.as_bytes())) {
                Ok(())
            } else {
                Stats::add(&st.hub.stats.auth_failures, 1);
                Err(
                    api_error(StatusCode::UNAUTHORIZED, 102, "missing or wrong X-API-Key")
                        .into_response(),
                )
            }
        }
        None if !st.cfg.has_auth() => Ok(()),
        None => Err(api_error(
            StatusCode::FORBIDDEN,
            103,
            "the server API is disabled: configure --api-key",
        )
        .into_response()),
    }
}

/// A 400 in the API's JSON error form (axum's own rejections are plain
/// text), for a query string or path segment that does not decode.
fn bad_request(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, 100, message).into_response()
}

/// `/stats` and `/metrics` count every key, channel and client: once any
/// authentication is configured they need the API key too (as `X-API-Key`
/// or `Authorization: Bearer`, which Prometheus sends), or they would undo
/// what DBSIZE and PUBSUB hide from tokens. Open otherwise.
pub(crate) fn authorize_stats(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    if !st.cfg.has_auth() {
        return Ok(());
    }
    let Some(key) = &st.cfg.api_key else {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            103,
            "statistics need --api-key once authentication is configured",
        )
        .into_response());
    };
    let given = headers.get("x-api-key").map(|v| v.as_bytes()).or_else(|| {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    });
    if given.is_some_and(|g| constant_time_eq(g, key.as_bytes())) {
        Ok(())
    } else {
        Stats::add(&st.hub.stats.auth_failures, 1);
        Err(api_error(StatusCode::UNAUTHORIZED, 102, "missing or wrong X-API-Key").into_response())
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Response> {
    let body = body.map_err(|r| {
        let status = r.status();
        api_error(status, 100, &r.body_text()).into_response()
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            100,
            &format!("invalid request body: {e}"),
        )
        .into_response()
    })
}

/// The request's JSON body, once the API key checked out.
fn authorized_body<T: for<'de> Deserialize<'de>>(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Response> {
    authorize(st, headers)?;
    parse_body(body)
}

fn check_channel(st: &AppState, channel: &str) -> Result<(), Response> {
    if channel.is_empty() || channel.len() > st.cfg.max_channel_length {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            110,
            &format!("channel must be 1 to {} bytes", st.cfg.max_channel_length),
        )
        .into_response());
    }
    Ok(())
}

/// `{"receivers", "offset", "epoch"}`; the last two only where the channel
/// keeps history.
fn position_json(p: crate::hub::Published) -> Value {
    match p.position {
        Some((offset, epoch)) => {
            json!({ "receivers": p.receivers, "offset": offset, "epoch": epoch.to_string() })
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let b: PublishBody = match authorized_body(&st, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = check_channel(&st, &b.channel) {
        return r;
    }
    let n = st
        .hub
        .publish(b.channel.into_bytes().into(), from_json_value(&b.data));
    st.metrics
        .observe_command("http", "publish", started.elapsed());
    Json(position_json(n)).into_response()
}

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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let b: BroadcastBody = match authorized_body(&st, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.channels.is_empty() {
        return api_error(StatusCode::BAD_REQUEST, 100, "channels must not be empty")
            .into_response();
    }
    for c in &b.channels {
        if let Err(r) = check_channel(&st, c) {
            return r;
        }
    }
    let payload = from_json_value(&b.data);
    let results: Vec<Value> = b
        .channels
        .into_iter()
        .map(|c| {
            let n = st
                .hub
                .publish(c.clone().into_bytes().into(), payload.clone());
            let mut v = position_json(n);
            v["channel"] = json!(c);
            v
        })
        .collect();
    st.metrics
        .observe_command("http", "broadcast", started.elapsed());
    Json(json!({ "results": results })).into_response()
}

#[derive(Deserialize)]
pub struct ChannelsQuery {
    pattern: Option<String>,
}

/// `GET /api/channels[?pattern=glob]` →
/// `{"channels": [{"channel", "subscribers"}]}`, sorted by name.
pub async fn channels(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ChannelsQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(&e.body_text()),
    };
    // Matching costs pattern length times channel length for every
    // channel: the pattern is bounded as for clients without the password.
    if q.pattern
        .as_ref()
        .is_some_and(|p| p.len() > st.cfg.max_pattern_length)
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            110,
            &format!(
                "pattern must be at most {} bytes",
                st.cfg.max_pattern_length
            ),
        )
        .into_response();
    }
    let reg = &st.hub.registry;
    let mut names = reg.channels(Space::Global, q.pattern.as_deref().map(str::as_bytes));
    names.sort();
    let list: Vec<Value> = names
        .iter()
        .map(|c| {
            json!({
                "channel": String::from_utf8_lossy(c),
                "subscribers": reg.numsub(Space::Global, c),
            })
        })
        .collect();
    Json(json!({ "channels": list })).into_response()
}

/// `GET /api/presence/{channel}` → `{"clients": [{client, user, info,
/// joined}], "users": [...]}`; 501 where the namespace tracks no presence.
pub async fn presence(
    State(st): State<AppState>,
    headers: HeaderMap,
    channel: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    let channel = match channel {
        Ok(Path(c)) => c,
        Err(e) => return bad_request(&e.body_text()),
    };
    if !st.cfg.namespace(channel.as_bytes()).presence {
        return api_error(
            StatusCode::NOT_IMPLEMENTED,
            108,
            "presence is not enabled for this channel's namespace",
        )
        .into_response();
    }
    Json(crate::ws::protocol::presence_json(
        &st.hub,
        channel.as_bytes(),
    ))
    .into_response()
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
    let mut r = api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        109,
        "server output budget exhausted; retry later",
    )
    .into_response();
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
    let budget = &st.hub.output;
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
    headers: HeaderMap,
    channel: Result<Path<String>, PathRejection>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    let channel = match channel {
        Ok(Path(c)) => c,
        Err(e) => return bad_request(&e.body_text()),
    };
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, 100, &e.body_text()).into_response(),
    };
    let since = match (q.since_offset, q.since_epoch) {
        (None, None) => None,
        (Some(o), Some(e)) => match e.parse::<u64>() {
            Ok(e) => Some((o, e)),
            Err(_) => {
                return api_error(
                    StatusCode::CONFLICT,
                    111,
                    &HistoryError::Unrecoverable.to_string(),
                )
                .into_response()
            }
        },
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                100,
                "since_offset and since_epoch go together",
            )
            .into_response()
        }
    };
    match st.hub.history(
        channel.as_bytes(),
        since,
        q.limit.unwrap_or(usize::MAX),
        q.reverse,
    ) {
        Ok(page) => history_answer(&st, &page.entries, page.top, page.epoch),
        Err(HistoryError::Unrecoverable) => api_error(
            StatusCode::CONFLICT,
            111,
            &HistoryError::Unrecoverable.to_string(),
        )
        .into_response(),
        Err(e) => api_error(StatusCode::NOT_IMPLEMENTED, 108, &e.to_string()).into_response(),
    }
}
