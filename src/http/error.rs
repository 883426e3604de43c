//! The HTTP front end's errors: one type that knows its status, its code
//! and its message, and renders itself as `{"error": {"code", "message"}}`.
//! The codes are the WebSocket protocol's (`docs/protocol.md`), plus 404.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::hub::HistoryError;

/// An error answered to an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401, code 102.
    #[error("missing or wrong X-API-Key")]
    WrongKey,
    /// 403, code 103: authentication is configured but no API key.
    #[error("the server API is disabled: configure --api-key")]
    ApiDisabled,
    /// 403, code 103: `/stats` and `/metrics` once authentication is
    /// configured without an API key.
    #[error("statistics need --api-key once authentication is configured")]
    StatsNeedKey,
    /// 403, code 103: a WebSocket upgrade from an origin not allowed.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// 403, code 103: an open server on loopback asked for by a host name
    /// that DNS could point elsewhere (DNS rebinding).
    #[error("an open server answers only IP addresses, localhost and names without a dot; configure authentication to serve other host names")]
    HostNotAllowed,
    /// 503, code 106: a WebSocket upgrade past `--max-connections`.
    #[error("max number of clients reached")]
    TooManyClients,
    /// The body could not be read (past the body limit while streaming:
    /// 413): the rejection's status, code 100.
    #[error("{}", .0.body_text())]
    Body(BytesRejection),
    /// 413, code 100: a Content-Length past the body limit, refused before
    /// reading.
    #[error("request body too large")]
    BodyTooLarge,
    /// 408, code 100: the body did not arrive within `--http-body-timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// 400, code 100: a body that is not the request's JSON.
    #[error("invalid request body: {0}")]
    InvalidBody(serde_json::Error),
    /// 400, code 100: a query string that does not decode.
    #[error("{}", .0.body_text())]
    Query(QueryRejection),
    /// 400, code 100: a path segment that does not decode.
    #[error("{}", .0.body_text())]
    Path(PathRejection),
    /// 400, code 100: a broadcast to no channel.
    #[error("channels must not be empty")]
    NoChannels,
    /// 400, code 100: half a history position.
    #[error("since_offset and since_epoch go together")]
    HalfPosition,
    /// 400, code 110: an empty or too long channel name.
    #[error("channel must be 1 to {max} bytes")]
    ChannelLength { max: usize },
    /// 400, code 110: a pattern longer than `--max-pattern-length`.
    #[error("pattern must be at most {max} bytes")]
    PatternLength { max: usize },
    /// 501, code 108.
    #[error("presence is not enabled for this channel's namespace")]
    PresenceNotEnabled,
    /// 409, code 111 for a position no longer in the history; 501, code
    /// 108 otherwise (no history in the namespace, or another key type).
    #[error(transparent)]
    History(#[from] HistoryError),
    /// 429, code 107, with `Retry-After`: too many of `what` from this
    /// client address: connect hook calls (`--proxy-connect-rate`), failed
    /// authentications (`--auth-failure-rate`), reads (`--read-rate`).
    #[error("too many {what} from this address; retry in {retry_after} s")]
    RateLimited {
        what: &'static str,
        retry_after: u64,
    },
    /// 429, code 106: a WebSocket upgrade or `GET /sse` past
    /// `--max-connections-per-client`.
    #[error("max connections per client address reached ({max})")]
    TooManyFromAddress { max: u32 },
    /// 503, code 109: the global output budget is spent; retry later.
    #[error("server output budget exhausted; retry later")]
    Busy,
    /// A WebSocket upgrade request that is not one (RFC 6455 §4.2.1): its
    /// status, code 100.
    #[error("{msg}")]
    Handshake {
        status: StatusCode,
        msg: &'static str,
    },
    /// 404, code 404: no such route.
    #[error("not found")]
    NotFound,
    /// 503, code 500: the engine could not do it; nothing was published.
    #[error(transparent)]
    Engine(#[from] crate::hub::EngineError),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::WrongKey => StatusCode::UNAUTHORIZED,
            ApiError::ApiDisabled
            | ApiError::StatsNeedKey
            | ApiError::OriginNotAllowed
            | ApiError::HostNotAllowed => StatusCode::FORBIDDEN,
            ApiError::Handshake { status, .. } => *status,
            ApiError::TooManyClients | ApiError::Busy | ApiError::Engine(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Body(r) => r.status(),
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::InvalidBody(_)
            | ApiError::Query(_)
            | ApiError::Path(_)
            | ApiError::NoChannels
            | ApiError::HalfPosition
            | ApiError::ChannelLength { .. }
            | ApiError::PatternLength { .. } => StatusCode::BAD_REQUEST,
            ApiError::PresenceNotEnabled => StatusCode::NOT_IMPLEMENTED,
            ApiError::History(HistoryError::Unrecoverable) => StatusCode::CONFLICT,
            ApiError::History(HistoryError::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::History(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } | ApiError::TooManyFromAddress { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// The `error.code` of the body.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::WrongKey => 102,
            ApiError::ApiDisabled
            | ApiError::StatsNeedKey
            | ApiError::OriginNotAllowed
            | ApiError::HostNotAllowed => 103,
            ApiError::TooManyClients | ApiError::TooManyFromAddress { .. } => 106,
            ApiError::Body(_)
            | ApiError::BodyTooLarge
            | ApiError::BodyTimeout
            | ApiError::InvalidBody(_)
            | ApiError::Query(_)
            | ApiError::Path(_)
            | ApiError::NoChannels
            | ApiError::HalfPosition
            | ApiError::Handshake { .. } => 100,
            ApiError::ChannelLength { .. } | ApiError::PatternLength { .. } => 110,
            ApiError::PresenceNotEnabled => 108,
            ApiError::History(HistoryError::Unrecoverable) => 111,
            ApiError::History(HistoryError::Unavailable) => 500,
            ApiError::History(_) => 108,
            ApiError::Busy => 109,
            ApiError::RateLimited { .. } => 107,
            ApiError::NotFound => 404,
            ApiError::Engine(_) => 500,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut r = (self.status(), Json(body)).into_response();
        if let ApiError::RateLimited { retry_after, .. } = self {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after.into());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rendered(e: ApiError) -> (u16, serde_json::Value) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn renders_status_code_and_message() {
        let cases = [
            (ApiError::WrongKey, 401, 102, "missing or wrong X-API-Key"),
            (
                ApiError::ChannelLength { max: 16 },
                400,
                110,
                "channel must be 1 to 16 bytes",
            ),
            (
                ApiError::PatternLength { max: 8 },
                400,
                110,
                "pattern must be at most 8 bytes",
            ),
            (
                ApiError::History(HistoryError::Unrecoverable),
                409,
                111,
                "the position is no longer in the history (epoch changed or entries gone)",
            ),
            (
                HistoryError::NotEnabled.into(),
                501,
                108,
                "history is not enabled for this channel's namespace",
            ),
            (
                ApiError::TooManyClients,
                503,
                106,
                "max number of clients reached",
            ),
            (
                ApiError::BodyTimeout,
                408,
                100,
                "request body not received in time",
            ),
            (ApiError::NotFound, 404, 404, "not found"),
        ];
        for (e, status, code, message) in cases {
            assert_eq!(
                rendered(e).await,
                (status, json!({"error": {"code": code, "message": message}}))
            );
        }
        let e = serde_json::from_str::<u8>("x").unwrap_err();
        let (status, body) = rendered(ApiError::InvalidBody(e)).await;
        assert_eq!((status, &body["error"]["code"]), (400, &json!(100)));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid request body: "), "{message}");
    }
}
